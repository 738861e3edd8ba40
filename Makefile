# sirt — build with `make`; `make NO_OMP=1` builds without OpenMP; `make test` runs the tests;
# `make asan` the sanitizer builds, `make fuzz` the fuzzers (clang), `make replay` their replays.
CC ?= cc
CFLAGS ?= -O3
# -ffp-contract=fast lets a*b+c become one fused multiply-add (ISO C mode forbids it otherwise);
# the matrix product's inner loop needs it for full speed.
# -fno-math-errno lets sqrtf and friends vectorize (the program never reads errno after math).
CFLAGS += -std=c11 -Wall -Wextra -ffp-contract=fast -fno-math-errno
LDLIBS = -lm

# -march=native when the compiler accepts it
ifeq ($(shell $(CC) -march=native -x c -c -o /dev/null /dev/null 2>/dev/null && echo yes),yes)
  CFLAGS += -march=native
endif

# OpenMP when available, unless NO_OMP=1
ifndef NO_OMP
  ifeq ($(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c -o /dev/null - 2>/dev/null && echo yes),yes)
    CFLAGS += -fopenmp
  else
    CFLAGS += -Wno-unknown-pragmas
  endif
else
  CFLAGS += -Wno-unknown-pragmas
endif

BIN ?= sirt
SOURCES = sirt.c model.h tokenizer.c $(wildcard lib/*.h)
TESTS = tests/test_core tests/test_tokenizer tests/test_text tests/test_sft tests/test_task tests/test_generate tests/test_answer tests/test_dpo tests/test_prm tests/test_repro
# the parsers with a fuzz harness tests/fuzz/fuzz_NAME.c, and its replay program (see below)
FUZZERS = jsonl tokenizer gpt2 checkpoint shard state answer
REPLAYS = $(FUZZERS:%=tests/fuzz/bin/replay_%)

all: $(BIN)

$(BIN): $(SOURCES)
	$(CC) $(CFLAGS) -o $@ sirt.c $(LDLIBS)

# each test program is one C file that includes sirt.c (or tokenizer.c) itself
tests/%: tests/%.c tests/check.h tests/gradcheck.h $(SOURCES)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# The GPU build: the same program with kernels.cu in place of the CPU kernels. CUDA_ARCH is the
# GPU's compute capability (90 for H100/H200), found with nvidia-smi when a GPU is present.
NVCC ?= nvcc
CUDA_ARCH ?= $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
ifeq ($(CUDA_ARCH),)
  CUDA_ARCH = 90
endif
CUDA_LIBS = -lcublas $(if $(findstring -fopenmp,$(CFLAGS)),-lgomp,)

cuda: sirt_cuda

kernels.o: kernels.cu model.h
	$(NVCC) -O3 -std=c++17 -arch=sm_$(CUDA_ARCH) -Xcompiler -Wall -c kernels.cu -o $@

sirt_cuda.o: $(SOURCES)
	$(CC) $(CFLAGS) -DSIRT_CUDA -c sirt.c -o $@

sirt_cuda: sirt_cuda.o kernels.o
	$(NVCC) -arch=sm_$(CUDA_ARCH) $^ $(CUDA_LIBS) -o $@

# `make gpu-check` builds tests/gpu_kernels: every kernel of model.h on the GPU against its CPU
# version. The CPU kernels come from sirt.c compiled with each model.h function renamed cpu_NAME;
# objcopy then makes every other symbol of that object local, so that it links beside kernels.o.
# tests/gpu.sh runs it on a GPU machine (with the training, sampling and timing checks).
MODEL_FUNCS = dev_alloc dev_free dev_zero dev_to_device dev_to_host dev_alloc_int \
  dev_memory_bytes encoder_forward encoder_backward layernorm_forward layernorm_backward \
  matmul_forward matmul_pack matmul_forward_packed matmul_backward attention_forward attention_backward gelu_forward \
  gelu_backward residual_forward value_head_forward value_head_backward classifier_forward classifier_backward \
  attention_decode dev_count_nonfinite sum_squares adamw_update \
  rmsnorm_forward rmsnorm_backward rope_forward rope_backward swiglu_forward swiglu_backward

tests/cpu_kernels.o: $(SOURCES)
	$(CC) $(CFLAGS) -DSIRT_NO_MAIN $(foreach f,$(MODEL_FUNCS),-D$(f)=cpu_$(f)) -c sirt.c -o $@.tmp.o
	objcopy -w --keep-global-symbol='cpu_*' $@.tmp.o $@
	rm -f $@.tmp.o

tests/gpu_kernels: tests/gpu_kernels.c tests/cpu_kernels.o kernels.o model.h
	$(CC) $(CFLAGS) -c tests/gpu_kernels.c -o tests/gpu_kernels.o
	$(NVCC) -arch=sm_$(CUDA_ARCH) tests/gpu_kernels.o tests/cpu_kernels.o kernels.o $(CUDA_LIBS) -lm -o $@

gpu-check: sirt_cuda tests/gpu_kernels
	tests/gpu.sh

tests: $(TESTS) $(REPLAYS)

test: all tests
	./test.sh

# Sanitizer builds: `make asan` builds the program as ./sirt_asan and every test program as
# tests/asan/NAME with AddressSanitizer (out-of-bounds, use-after-free, leaks) and
# UndefinedBehaviorSanitizer (overflow, bad shifts, misaligned or null pointers...), which stop
# at the first finding (-fno-sanitize-recover). -O1 after $(CFLAGS) overrides its -O3.
# test.sh runs them when the compiler supports the flags.
SAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1
ASAN_TESTS = $(patsubst tests/%,tests/asan/%,$(TESTS))
ASAN_REPLAYS = $(FUZZERS:%=tests/asan/replay_%)

asan: sirt_asan $(ASAN_TESTS) $(ASAN_REPLAYS)

sirt_asan: $(SOURCES)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ sirt.c $(LDLIBS)

tests/asan/%: tests/%.c tests/check.h tests/gradcheck.h $(SOURCES)
	@mkdir -p tests/asan
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $< $(LDLIBS)

# Fuzzing (tests/fuzz/README.md). Each parser has a harness tests/fuzz/fuzz_NAME.c defining
# LLVMFuzzerTestOneInput. `make fuzz` builds them with clang's libFuzzer and runs each for
# FUZZ_SECONDS (default 60), one after the other, single process; crashes land in
# tests/fuzz/crashes/NAME/. `make replay` (part of `make tests`) builds the same harnesses with
# $(CC) around tests/fuzz/replay.c, a main that feeds them files (no clang needed): test.sh
# replays every corpus and crash file with them. Replays need no speed: -O1 compiles faster.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS = -std=c11 -Wall -Wextra -g -O1 -fsanitize=fuzzer,address,undefined \
             -fno-sanitize-recover=undefined
FUZZ_RUN_FLAGS = -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -max_total_time=$(FUZZ_SECONDS)
FUZZ_DEPS = tests/fuzz/fuzz.h $(SOURCES)

replay: $(REPLAYS)

tests/fuzz/bin/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(FUZZ_DEPS)
	@mkdir -p tests/fuzz/bin
	$(CC) $(CFLAGS) -O1 -o $@ $< tests/fuzz/replay.c $(LDLIBS)

tests/asan/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(FUZZ_DEPS)
	@mkdir -p tests/asan
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $< tests/fuzz/replay.c $(LDLIBS)

tests/fuzz/bin/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DEPS)
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang with libFuzzer (FUZZ_CC=$(FUZZ_CC))"; exit 1; }
	@mkdir -p tests/fuzz/bin
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< -lm

fuzz: $(FUZZERS:%=tests/fuzz/bin/fuzz_%)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUN_FLAGS="$(FUZZ_RUN_FLAGS)" tests/fuzz/run.sh $(FUZZERS)

clean:
	rm -f sirt sirt_cuda sirt_asan *.o $(TESTS) tests/gpu_kernels tests/*.o
	rm -rf tests/asan tests/fuzz/bin tests/fuzz/work

# the objects of the GPU build are intermediate: make removes them once ./sirt_cuda is linked
.INTERMEDIATE: kernels.o sirt_cuda.o

.PHONY: all tests test clean cuda asan fuzz replay gpu-check
