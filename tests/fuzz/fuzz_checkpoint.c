// tests/fuzz/fuzz_checkpoint.c — fuzzes the reader of llm.c model checkpoints
// (model_read_header, sirt.c section 3: what model_load checks before it allocates). The input
// is a whole checkpoint file. An accepted one is loaded as model_load loads it, and must then
// work as a model: a forward and a backward pass over a few tokens (whatever the weights hold,
// NaN included) must run without a memory error or undefined behaviour.
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Config cfg;
    char err[512];
    size_t header_bytes = size < HEADER_INTS * sizeof(int32_t) ? size : HEADER_INTS * sizeof(int32_t);
    if (model_read_header(data, header_bytes, size, "input", &cfg, err, sizeof err) != 0) {
        fuzz_rejected(err);
        return 0;
    }
    Model model;
    model_build(&model, cfg);
    fuzz_require(header_bytes + model.num_parameters * sizeof(float) == size);
    dev_to_device(model.params_memory, data + header_bytes, model.num_parameters * sizeof(float));

    enum { B = 2, MAX_T = 3 };
    int T = cfg.maxT < MAX_T ? cfg.maxT : MAX_T, inputs[B * MAX_T], targets[B * MAX_T];
    float coefs[B * MAX_T];
    for (int i = 0; i < B * T; i++) {
        inputs[i] = i % cfg.V;
        targets[i] = i == 0 ? -1 : (i * 7) % cfg.V; // -1: a position without a target
        coefs[i] = 1.0f / (B * T);
    }
    model_forward(&model, inputs, targets, NULL, B, T); // NULL: one example per row
    model_backward(&model, coefs);
    fuzz_accepted("L=%d NH=%d C=%d maxT=%d V=%d Vp=%d, %zu parameters", cfg.L, cfg.NH, cfg.C,
                  cfg.maxT, cfg.V, cfg.Vp, model.num_parameters);
    model_free(&model);
    return 0;
}
