// tests/fuzz/fuzz_state.c — fuzzes the reader of training-state files, OUT.state (state_parse,
// sirt.c section 3: what state_load checks before --resume uses the state). A state belongs with
// one checkpoint (its parameter count and weight hash), so the input holds both: a checkpoint
// file, the marker "\nSIRT-STATE\n", then the state file. The checkpoint is read as
// fuzz_checkpoint.c reads it; when it is rejected, so is the input. An accepted state's moments
// are loaded into the model as state_load loads them.
#include "fuzz.h"

#define STATE_MARKER "\nSIRT-STATE\n"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *marker = fuzz_find(data, size, STATE_MARKER);
    if (!marker) {
        fuzz_rejected("(harness) no \\nSIRT-STATE\\n marker between the checkpoint and the state");
        return 0;
    }
    size_t model_bytes = (size_t)(marker - data), header_bytes = HEADER_INTS * sizeof(int32_t);
    const uint8_t *state = marker + strlen(STATE_MARKER);
    size_t state_bytes = size - model_bytes - strlen(STATE_MARKER);
    Config cfg;
    char err[512];
    if (model_read_header(data, model_bytes < header_bytes ? model_bytes : header_bytes, model_bytes,
                          "model", &cfg, err, sizeof err) != 0) {
        fuzz_rejected(err);
        return 0;
    }
    Model model;
    model_build(&model, cfg);
    dev_to_device(model.params_memory, data + header_bytes, model.num_parameters * sizeof(float));
    TrainState st = {0};
    const unsigned char *moments = NULL;
    if (state_parse(&model, state, state_bytes, "model.state", "model", &st, &moments, err, sizeof err) != 0) {
        fuzz_rejected(err);
    } else {
        fuzz_require(st.step >= 0 && !isnan(st.best_valid_loss));
        fuzz_require(moments + 2 * model.num_parameters * sizeof(float) == state + state_bytes);
        model.m_memory = dev_alloc(model.num_parameters);
        model.v_memory = dev_alloc(model.num_parameters);
        size_t moment_bytes = model.num_parameters * sizeof(float);
        dev_to_device(model.m_memory, moments, moment_bytes);
        dev_to_device(model.v_memory, moments + moment_bytes, moment_bytes);
        fuzz_accepted("step %d, B=%d T=%d shuffle=%d seed=%llu", st.step, st.B, st.T, st.shuffle,
                      (unsigned long long)st.seed);
    }
    model_free(&model);
    return 0;
}
