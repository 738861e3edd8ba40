// tests/fuzz/fuzz_tokenizer.c — fuzzes our tokenizer file format (tok_from_memory, tokenizer.c
// section 8). The input is a whole tokenizer file. Properties of an accepted file:
//   - saving it again (tok_serialize) gives back exactly the input bytes: the format has one way
//     to write each tokenizer;
//   - it encodes and decodes the input bytes themselves (any bytes are text to a byte-level
//     BPE) back to the same bytes, with and without the special token, using only ids below
//     the vocabulary size.
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    Tokenizer *tok = tok_from_memory(data, size, "input", err, sizeof err);
    if (!tok) {
        fuzz_rejected(err);
        return 0;
    }
    TokBytes saved = {0};
    fuzz_require(tok_serialize(tok, &saved, err, sizeof err) == 0);
    fuzz_require(saved.len == size && memcmp(saved.data, data, size) == 0);
    tok_bytes_free(&saved);
    fuzz_tokenizer_round_trip(tok, data, size, 1);
    fuzz_tokenizer_round_trip(tok, data, size, 0);
    fuzz_accepted("%d tokens (%d merges)", tok_vocab_size(tok), tok_vocab_size(tok) - 257);
    tok_free(tok);
    return 0;
}
