// tests/fuzz/fuzz_shard.c — fuzzes the reader of llm.c token shards (shard_parse, lib/tokens.h:
// what shard_load checks), for a model with a vocabulary of 1000 tokens. The input is
// a whole shard file. An accepted shard then feeds the batch loader as `./sirt train --shuffle
// --batch 2 --seq 3` would (when it holds a batch): across two epochs, every batch must hold
// tokens of the vocabulary, with each row's targets its inputs shifted by one.
#include "fuzz.h"

enum { VOCAB = 1000, B = 2, T = 3 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Shard shard;
    char err[512];
    if (shard_parse(&shard, data, size, "input", VOCAB, err, sizeof err) != 0) {
        fuzz_rejected(err);
        return 0;
    }
    size_t windows = 0;
    if (shard.num_tokens > (size_t)B * T) { // loader_index_windows dies on data without a batch
        DataLoader dl = {0};
        dl.shards = xmalloc(sizeof(Shard));
        dl.shards[0] = shard;
        dl.num_shards = 1;
        dl.B = B;
        dl.T = T;
        dl.shuffle = 1;
        dl.seed = size;
        dl.order_epoch = -1;
        loader_index_windows(&dl);
        windows = dl.num_windows;
        int inputs[B * T], targets[B * T];
        for (size_t index = 0; index < 2 * dl.num_windows && index < 64; index++) {
            loader_batch(&dl, index, inputs, targets);
            for (int i = 0; i < B * T; i++) {
                fuzz_require(inputs[i] >= 0 && inputs[i] < VOCAB && targets[i] >= 0 && targets[i] < VOCAB);
                if (i % T < T - 1) fuzz_require(targets[i] == inputs[i + 1]);
            }
        }
        loader_free(&dl); // frees the shard's tokens too
    } else {
        free(shard.tokens);
    }
    fuzz_accepted("%zu tokens, %zu windows of %d", shard.num_tokens, windows, B * T + 1);
    return 0;
}
