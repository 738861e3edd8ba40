// tests/fuzz/fuzz_answer.c — fuzzes the answer checker (lib/answer.h: answer_extract,
// answer_normalize, answer_equal, answer_is_correct, answer_check_steps, and the step parser
// task_check_step of lib/task.h under it) and GSM8K's answer handling of lib/templates.h
// (gsm8k_parse_answer, gsm8k_normalize_number, gsm8k_strip_calculator_notes). The input is a completion, as a model
// might write it. Properties:
//   - an extracted answer is canonical: answer_normalize gives it back unchanged, it equals
//     itself, and the completion is correct against it as gold;
//   - the step report counts within its bounds, with or without true steps to follow (a math
//     item's, or the text's own read by task_parse_truth);
//   - a GSM8K answer that parses has a non-empty final answer, and a normalized number
//     normalizes to itself.
// "accepted" means the completion has an answer; "rejected", that it has none.
#include "fuzz.h"

static void check_steps(const char *text, const TaskStep *truth, int num_truth) {
    StepReport report;
    answer_check_steps(text, truth, num_truth, &report);
    fuzz_require(report.num_steps >= 0 && report.arithmetic_steps >= 0 && report.arithmetic_steps <= report.num_steps);
    fuzz_require(!report.true_path || (num_truth > 0 && report.arithmetic_steps == num_truth));
    fuzz_require(report.first_error >= -1 && report.first_error < report.num_steps);
    for (int j = 0; j < report.num_steps && j < ANSWER_MAX_STEPS; j++) {
        fuzz_require(report.arithmetic_ok[j] >= -1 && report.arithmetic_ok[j] <= 1);
        fuzz_require(report.on_path[j] >= -1 && report.on_path[j] <= 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);

    char got[ANSWER_MAX], again[ANSWER_MAX];
    int found = answer_extract(text, got, sizeof got);
    if (found) {
        fuzz_require(answer_normalize(got, again, sizeof again) && strcmp(got, again) == 0);
        fuzz_require(answer_equal(got, got));
        fuzz_require(answer_is_correct(text, got));
    } else {
        fuzz_require(got[0] == '\0' && !answer_is_correct(text, "8"));
    }
    answer_equal(text, "8"); // the whole text as a prediction (it is rarely one answer)
    if (answer_normalize(text, again, sizeof again)) fuzz_require(answer_equal(text, again));

    check_steps(text, NULL, 0);
    TaskItem item; // a math item from the built-in task, its true steps to compare the steps with
    task_make_item(TASK_MATH, TASK_SPLIT_TRAIN, size ? data[0] : 0, 0.0f, 0, &item);
    check_steps(text, item.truth, item.num_truth);
    TaskStep parsed[TASK_MAX_STEPS]; // the text read as a "truth" field
    int n = task_parse_truth(text, parsed, TASK_MAX_STEPS);
    fuzz_require(n >= -1 && n <= TASK_MAX_STEPS);
    if (n > 0) check_steps(text, parsed, n);
    task_item_free(&item);
    char final[32];
    task_final_answer(text, final, sizeof final);

    char *steps, *final_answer, err[256];
    if (gsm8k_parse_answer(text, &steps, &final_answer, err, sizeof err) == 0) {
        fuzz_require(final_answer[0] != '\0');
        free(steps);
        free(final_answer);
    }
    char *number = gsm8k_normalize_number(text);
    if (number) {
        char *twice = gsm8k_normalize_number(number);
        fuzz_require(twice && strcmp(twice, number) == 0);
        free(twice);
        free(number);
    }
    free(gsm8k_strip_calculator_notes(text));

    if (found) fuzz_accepted("answer %s", got);
    else fuzz_rejected("no answer");
    free(text);
    return 0;
}
