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
TESTS = tests/test_core tests/test_tokenizer tests/test_text tests/test_sft tests/test_task tests/test_generate tests/test_answer tests/test_dpo

all: $(BIN)

$(BIN): $(SOURCES)
	$(CC) $(CFLAGS) -o $@ sirt.c $(LDLIBS)

# each test program is one C file that includes sirt.c (or tokenizer.c) itself
tests/%: tests/%.c tests/check.h tests/gradcheck.h $(SOURCES)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

tests: $(TESTS)

test: all tests
	./test.sh

clean:
	rm -f sirt $(TESTS)

.PHONY: all tests test clean
