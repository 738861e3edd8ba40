# sirt — build with `make`; `make NO_OMP=1` builds without OpenMP; `make test` runs the tests.
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
SOURCES = sirt.c model.h tokenizer.c
TESTS = tests/test_core tests/test_tokenizer tests/test_text tests/test_sft tests/test_task tests/test_generate tests/test_answer tests/test_dpo tests/test_repro

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

tests: $(TESTS)

test: all tests
	./test.sh

clean:
	rm -f sirt sirt_cuda *.o $(TESTS)

# the objects of the GPU build are intermediate: make removes them once ./sirt_cuda is linked
.INTERMEDIATE: kernels.o sirt_cuda.o

.PHONY: all tests test clean cuda
