// tests/fuzz/fuzz_gpt2.c — fuzzes the reader of GPT-2's tokenizer files, encoder.json and
// vocab.bpe (tok_from_gpt2_memory, tokenizer.c section 9). The input holds both: encoder.json,
// a NUL byte, then vocab.bpe (JSON text cannot hold a raw NUL, so the first one splits them;
// without one, vocab.bpe is empty). Property of an accepted pair: the input bytes, taken as
// text, encode (with and without the special token) to ids within the vocabulary and decode
// back to the same bytes.
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    size_t json_len = nul ? (size_t)(nul - data) : size;
    const uint8_t *bpe = nul ? nul + 1 : data + size;
    size_t bpe_len = nul ? size - json_len - 1 : 0;
    char err[512];
    Tokenizer *tok = tok_from_gpt2_memory(data, json_len, bpe, bpe_len, err, sizeof err);
    if (!tok) {
        fuzz_rejected(err);
        return 0;
    }
    fuzz_tokenizer_round_trip(tok, data, size, 1);
    fuzz_tokenizer_round_trip(tok, data, size, 0);
    fuzz_accepted("%d tokens, end of text %d", tok_vocab_size(tok), tok_eot(tok));
    tok_free(tok);
    return 0;
}
