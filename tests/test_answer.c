// test_answer.c — tests of lib/answer.h (answer checking): extracting the final answer
// from completions, comparing answers, GSM8K's real answer lines, and step-level truth on the
// built-in task. Built from the program's own translation unit (sirt.c without its main). Run:
//   test_answer [GSM8K_DIR]   (default ../shared/data/gsm8k; skipped with a message if absent)
// Prints one line per check and ends with "N passed, M failed"; exits non-zero on a failure.
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"

// ---- extraction from hand-written completions ---------------------------------------------

static void test_extract(void) {
    static const struct { const char *completion, *want; } cases[] = { // want NULL: no answer
        {"3 + 5 = 8.\nThe answer is 8.", "8"},
        {"the answer is: -3", "-3"},
        {"THE ANSWER IS:   7", "7"},
        {"The answer is 1,080.", "1080"},
        {"The answer is $12.50.", "12.5"},
        {"The answer is -$4.", "-4"},
        {"The answer is +7.", "7"},
        {"The answer is .5.", "0.5"},
        {"The answer is 0042.", "42"},
        {"The answer is -0.", "0"},
        {"The answer is 1,234,567.25 dollars.", "1234567.25"},
        {"So the answer is 7. Wait, the answer is 9.", "9"},
        {"The answer is 9.\nHmm, the answer is 7.", "7"},
        {"The answer is 5.", "5"},
        {"The answer is 5.5.", "5.5"},
        {"The answer is 5.50", "5.5"},
        {"The answer is 18 dollars.", "18"},
        {"The answer is 50%.", "50"},
        {"The answer is 5, because 2 + 3 = 5.", "5"},
        {"The answer is 1,080, as computed.", "1080"},
        {"Natalia sold 48/2 = 24 clips.\n#### 42", "42"},
        {"#### 1,080\n", "1080"},
        {"##### 12", "12"},
        {"The answer is 3.\n#### 4", "3"}, // "the answer is" is preferred to "####"
        {"The answer is therefore 3.\n#### 3", "3"},
        {"The answer is <<8=8>>8.\n#### 8", "8"},
        {"Tom has 3 apples. He buys 5 more.", NULL},
        {"", NULL},
        {"The answer is", NULL},
        {"The answer is unknown.", NULL},
        {"The answer is 3x.", NULL},
        {"The answer is 12th.", NULL},
        {"The answer is 1.2.3", NULL},
        {"The answer is 3 + 5 = 8", NULL},
        {"The answer is 2/3.", NULL},
        {"The answer is 1,23.", NULL},
        {"The answer isn't 5.", NULL},
        {"The answer is B.", "B"},
        {"The answer is (C).", "C"},
        {"The answer is (c).", "C"},
        {"The answer is D) Ann.", "D"},
        {"The answer is option E.", "E"},
        {"the answer is b", "B"},
        {"The answer is a lot of apples.", NULL},
        {"The answer is F.", NULL},
        {"The answer is Ann.", NULL},
        {"The answer is 8.<|endoftext|>", "8"},
        {"The answer is 8.<|endoftext|>The answer is 9.", "8"},
        {"The answer is 8.\n\n\nSome more text after it, with 12 and 3 + 4 = 7.", "8"},
        {"The answer is 8.\n####", "8"},
        {"The answer is 8. !!@@##$$ %%% garbage ]]]", "8"},
        {"Answer: The answer is 6.", "6"},
    };
    for (int i = 0; i < TASK_COUNT(cases); i++) {
        char got[ANSWER_MAX] = "?";
        int found = answer_extract(cases[i].completion, got, sizeof got);
        int ok = cases[i].want ? found && strcmp(got, cases[i].want) == 0 : !found && got[0] == '\0';
        char shown[80];
        snprintf(shown, sizeof shown, "%s", cases[i].completion);
        for (char *p = shown; *p; p++) if (*p == '\n') *p = '|';
        check(ok, "extract \"%s\" -> %s (got %s)", shown, cases[i].want ? cases[i].want : "no answer",
              found ? got : "no answer");
    }
    char small[3];
    check(answer_extract("The answer is 12.", small, sizeof small) == 1 && !strcmp(small, "12"),
          "extract into a buffer of exactly the answer's size");
}

// ---- comparing answers ----------------------------------------------------------------------

static void test_equal(void) {
    static const struct { const char *a, *b; int want; } cases[] = {
        {"1080", "1,080", 1}, {"1080", "1080.0", 1}, {"1,080", "1080.00", 1}, {"-3", "-3.00", 1},
        {"0.5", ".5", 1}, {"+7", "7", 1}, {"$12.50", "12.5", 1}, {"-0", "0", 1}, {"007", "7", 1},
        {"8.", "8", 1}, {" 8 ", "8", 1}, {"B", "b", 1}, {"(B)", "B", 1}, {"B)", "b", 1},
        {"12", "120", 0}, {"1080", "108", 0}, {"-3", "3", 0}, {"0.1", "0.10000000000000001", 0},
        {"12345678901234567", "12345678901234568", 0}, {"B", "C", 0}, {"1", "A", 0}, {"A", "1", 0},
        {"yes", "yes", 1}, {"yes", " yes ", 1}, {"yes", "Yes", 0}, {"", "", 0}, {"5", "", 0},
        {"5 apples", "5", 0}, {"1,2", "12", 0},
    };
    for (int i = 0; i < TASK_COUNT(cases); i++)
        check(answer_equal(cases[i].a, cases[i].b) == cases[i].want &&
                  answer_equal(cases[i].b, cases[i].a) == cases[i].want,
              "equal(\"%s\", \"%s\") = %d, both ways", cases[i].a, cases[i].b, cases[i].want);
    check(answer_is_correct("2 * 4 = 8.\nThe answer is 8.", "8"), "is_correct: right answer");
    check(!answer_is_correct("2 * 4 = 8.\nThe answer is 9.", "8"), "is_correct: wrong answer");
    check(!answer_is_correct("2 * 4 = 8.", "8"), "is_correct: no answer is wrong (the 8 of a step does not count)");
    check(answer_is_correct("The answer is 1,080.", "1080"), "is_correct: separators");
    check(answer_is_correct("The answer is (b).", "B"), "is_correct: letters");
    // the longest answers: a canonical form always reads back as itself (found by fuzzing: ".7…7"
    // was an answer but its "0.7…7", one character longer, was not)
    char longest[ANSWER_MAX + 8], got[ANSWER_MAX], again[ANSWER_MAX];
    int all_fixed = 1, accepted = 0;
    for (int len = ANSWER_MAX - 6; len <= ANSWER_MAX; len++)
        for (int point = 0; point < 2; point++) {
            memset(longest, '7', (size_t)len);
            if (point) longest[0] = '.';
            longest[len] = '\0';
            if (!answer_normalize(longest, got, sizeof got)) continue;
            accepted++;
            all_fixed &= answer_normalize(got, again, sizeof again) && !strcmp(got, again) &&
                         answer_equal(got, longest);
        }
    check(accepted > 0 && all_fixed, "the longest numbers (%d accepted): each canonical form is its "
          "own canonical form and equals the original", accepted);
}

// ---- steps ----------------------------------------------------------------------------------

static TaskItem math_item(int start, const char *ops, const int *operands) {
    TaskItem it;
    memset(&it, 0, sizeof it);
    it.family = TASK_MATH;
    it.wrong_step = -1;
    it.start = start;
    it.num_ops = (int)strlen(ops);
    for (int k = 0; k < it.num_ops; k++) {
        it.ops[k] = ops[k];
        it.operands[k] = operands[k];
    }
    return it;
}

static void test_steps(void) {
    int operands[] = {5, 2, 4};
    TaskItem it = math_item(3, "+*/", operands); // 3 + 5 = 8, 8 * 2 = 16, 16 / 4 = 4
    StepReport r;

    answer_check_steps("Tom buys 5: 3 + 5 = 8.\n8 * 2 = 16.\n\n  16 / 4 = 4.\nThe answer is 4.", &it, &r);
    check(r.num_steps == 3 && r.first_error == -1 && r.arithmetic_ok[0] == 1 && r.arithmetic_ok[2] == 1 &&
              r.on_path[0] == 1 && r.on_path[1] == 1 && r.on_path[2] == 1,
          "steps: a right path (3 steps, blank line skipped, answer line excluded)");

    answer_check_steps("3 + 5 = 8.\n2 x 8 = 16.\n16 / 4 = 4.\nThe answer is 4.", &it, &r);
    check(r.first_error == -1 && r.on_path[1] == 1, "steps: a reordered operation with the true result is on the path");

    answer_check_steps("3 + 5 = 9.\n9 * 2 = 18.\n18 / 4 = 4.\nThe answer is 4.", &it, &r);
    check(r.first_error == 0 && r.arithmetic_ok[0] == 0 && r.on_path[0] == 0 && r.arithmetic_ok[1] == 1 &&
              r.on_path[1] == 0 && r.arithmetic_ok[2] == 0,
          "steps: a slip at step 0 carries: later steps right in arithmetic but off the path");

    answer_check_steps("3 + 5 = 8.\n8 + 2 = 10.\n10 / 4 = 2.\nThe answer is 2.", &it, &r);
    check(r.first_error == 1 && r.arithmetic_ok[1] == 1 && r.on_path[1] == 0,
          "steps: right arithmetic, wrong operation: off the path (first_error 1)");

    answer_check_steps("Let me think.\n3 + 5 = 8.\nSo far so good.\n8 * 2 = 16.\n16 / 4 = 4. The answer is 4.",
                       &it, &r);
    check(r.num_steps == 5 && r.first_error == -1 && r.arithmetic_ok[0] == -1 && r.on_path[0] == -1 &&
              r.on_path[1] == 1 && r.on_path[3] == 1 && r.on_path[4] == 1,
          "steps: chatter lines have no arithmetic and do not shift the path; text before the marker is a step");

    answer_check_steps("3 + 5 = 8.\n8 * 2 = 16.\n16 / 4 = 4.\n4 + 0 = 4.\nThe answer is 4.", &it, &r);
    check(r.first_error == 3 && r.on_path[3] == 0, "steps: a step past the path's end is off it");

    answer_check_steps("3 + 5 = 8.\n8 * 2 = 16.", &it, &r);
    check(r.num_steps == 2 && r.first_error == -1, "steps: no answer: every line is a step");

    answer_check_steps("3 + 5 = 9.\n9 * 2 = 18.\nThe answer is 18.", NULL, &r);
    check(r.first_error == 0 && r.on_path[0] == -1 && r.on_path[1] == -1 && r.arithmetic_ok[1] == 1,
          "steps: without an item, arithmetic only");

    // refine's count of correct samples that are right for the right reason
    char late_error[512] = "";
    for (int j = 0; j < ANSWER_MAX_STEPS + 2; j++) strcat(late_error, "2 + 2 = 4.\n");
    strcat(late_error, "4 + 4 = 9.\nThe answer is 9.");
    check(arithmetic_steps_right("Tom buys 5: 3 + 5 = 8.\n8 * 2 = 16.\nThe answer is 16.") == 1 &&
              arithmetic_steps_right("14 / 2 = 3.\n3 * 7 = 21.\nThe answer is 21.") == 0 &&
              arithmetic_steps_right(late_error) == 0 &&
              arithmetic_steps_right("Ann is taller than Bob, so from tallest to shortest: Ann, Bob.\n"
                                     "The answer is B.") == -1,
          "arithmetic_steps_right: all right 1, a wrong step 0 (also past step %d), no arithmetic -1",
          ANSWER_MAX_STEPS);

    answer_check_steps("3 + 5 = 8.\nThe answer is 8.<|endoftext|>1 + 1 = 3.", &it, &r);
    check(r.num_steps == 1 && r.first_error == -1, "steps: nothing after end-of-text counts");

    answer_check_steps("", &it, &r);
    check(r.num_steps == 0 && r.first_error == -1, "steps: an empty completion has none");

    char many[1024] = "";
    for (int i = 0; i < 20; i++) strcat(many, i == 18 ? "1 + 1 = 3.\n" : "Hmm.\n");
    strcat(many, "The answer is 4.");
    answer_check_steps(many, &it, &r);
    check(r.num_steps == 20 && r.first_error == 18, "steps: 20 steps counted (16 reported), first_error 18 beyond them");
}

// ---- GSM8K's real answer lines --------------------------------------------------------------

static void test_gsm8k_file(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *probe = fopen(path, "rb");
    if (!probe) { printf("skip %s: not found\n", path); return; }
    fclose(probe);
    JsonlFile f;
    jsonl_read(path, &f);
    int n = f.count, cot = 0, cot_exact = 0, stripped = 0, plain = 0, raw = 0, raw_stripped = 0, itself = 0;
    for (int i = 0; i < n; i++) {
        char err[256], got[ANSWER_MAX];
        Example ex;
        for (int variant = 0; variant < 3; variant++) { // cot, cot without calculator notes, plain
            TemplateOptions opt = {variant == 2 ? TEMPLATE_PLAIN : TEMPLATE_COT, variant == 1};
            if (example_from_json(&f.objects[i], &opt, &ex, err, sizeof err) != 0) die("%s: %s", path, err);
            int ok = answer_extract(ex.completion, got, sizeof got) && answer_equal(got, ex.gold);
            if (variant == 0) {
                cot += ok;
                cot_exact += ok && strcmp(got, ex.gold) == 0; // golds are integers: already canonical
                char norm[ANSWER_MAX];
                itself += answer_normalize(ex.gold, norm, sizeof norm) && !strcmp(norm, ex.gold);
            } else if (variant == 1) {
                stripped += ok;
            } else {
                plain += ok;
            }
            if (variant == 0) { // the original answer text, "#### N" and all
                const char *answer = jsonl_string(&f, i, "answer");
                raw += answer_extract(answer, got, sizeof got) && answer_equal(got, ex.gold);
                char *notes_gone = gsm8k_strip_calculator_notes(answer);
                raw_stripped += answer_extract(notes_gone, got, sizeof got) && answer_equal(got, ex.gold);
                free(notes_gone);
            }
            example_free(&ex);
        }
    }
    check(cot == n, "%s: %d/%d cot completions extract to their gold answer", name, cot, n);
    check(cot_exact == n, "%s: %d/%d of them as the very same text", name, cot_exact, n);
    check(stripped == n, "%s: %d/%d cot completions without calculator notes", name, stripped, n);
    check(plain == n, "%s: %d/%d plain completions (the answer line alone)", name, plain, n);
    check(raw == n, "%s: %d/%d original answers with '#### N' extract to the gold", name, raw, n);
    check(raw_stripped == n, "%s: %d/%d original answers without calculator notes", name, raw_stripped, n);
    check(itself == n, "%s: %d/%d gold answers normalize to themselves", name, itself, n);
    jsonl_free(&f);
}

// ---- the built-in task ----------------------------------------------------------------------

#define N_ITEMS 2000

// The teacher's completion for an item, rendered through lib/templates.h's cot template.
static Example task_example(const TaskItem *it) {
    TemplateOptions opt = {TEMPLATE_COT, 0};
    Example ex;
    char err[256];
    if (example_from_question(it->question, it->answer, &opt, &ex, err, sizeof err) != 0) die("%s", err);
    return ex;
}

static void test_task_clean(TaskFamily family) {
    int correct = 0, steps_ok = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        TaskItem it;
        task_make_item(family, TASK_SPLIT_TRAIN, 1, 0.0f, i, &it);
        Example ex = task_example(&it);
        correct += answer_is_correct(ex.completion, it.gold);
        StepReport r;
        answer_check_steps(ex.completion, &it, &r);
        int ok = r.num_steps == it.num_steps && r.first_error == -1;
        for (int j = 0; j < r.num_steps && j < ANSWER_MAX_STEPS; j++) {
            int want = family == TASK_MATH ? 1 : -1; // the choice family has no arithmetic, no path
            ok = ok && r.arithmetic_ok[j] == want && r.on_path[j] == want;
        }
        steps_ok += ok;
        example_free(&ex);
        task_item_free(&it);
    }
    const char *name = task_family_names[family];
    check(correct == N_ITEMS, "%s, noise 0: %d/%d teacher completions judged correct", name, correct, N_ITEMS);
    check(steps_ok == N_ITEMS, "%s, noise 0: %d/%d with every step %s and no first_error", name, steps_ok,
          N_ITEMS, family == TASK_MATH ? "arithmetic_ok and on_path" : "without arithmetic (-1)");
}

static void test_task_noisy(TaskFamily family) {
    int agree = 0, noisy = 0, first_error_ok = 0, carried = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        TaskItem it;
        task_make_item(family, TASK_SPLIT_TRAIN, 1, 0.3f, i, &it);
        Example ex = task_example(&it);
        int wrong = !answer_is_correct(ex.completion, it.gold);
        agree += wrong == it.noisy;
        noisy += it.noisy;
        StepReport r;
        answer_check_steps(ex.completion, &it, &r);
        if (family == TASK_MATH) {
            first_error_ok += r.first_error == it.wrong_step; // -1 == -1 for clean items
            int off = 1; // every step from the slip on is off the path; all before it on it
            for (int j = 0; j < r.num_steps; j++)
                off = off && r.on_path[j] == (it.noisy && j >= it.wrong_step ? 0 : 1);
            carried += off;
        }
        example_free(&ex);
        task_item_free(&it);
    }
    const char *name = task_family_names[family];
    check(agree == N_ITEMS && noisy > N_ITEMS / 5,
          "%s, noise 0.3: judged wrong exactly when noisy (%d/%d agree, %d noisy)", name, agree, N_ITEMS, noisy);
    if (family == TASK_MATH) {
        check(first_error_ok == N_ITEMS, "%s, noise 0.3: first_error = the recorded wrong step in %d/%d",
              name, first_error_ok, N_ITEMS);
        check(carried == N_ITEMS, "%s, noise 0.3: on the path before the slip, off it from there on, %d/%d",
              name, carried, N_ITEMS);
    }
}

// The item of a sample, regenerated from (family, split, seed, index): the path does not depend
// on the noise, so a noisy item judges a student's steps against the same truth.
static void test_task_regenerate(void) {
    int same = 0;
    for (int i = 0; i < 200; i++) {
        TaskItem clean, noisy;
        task_make_item(TASK_MATH, TASK_SPLIT_TEST, 7, 0.0f, i, &clean);
        task_make_item(TASK_MATH, TASK_SPLIT_TEST, 7, 0.9f, i, &noisy);
        Example ex = task_example(&clean);
        StepReport r;
        answer_check_steps(ex.completion, &noisy, &r);
        same += r.first_error == -1 && !strcmp(clean.gold, noisy.gold);
        example_free(&ex);
        task_item_free(&clean);
        task_item_free(&noisy);
    }
    check(same == 200, "regenerated items: the true path does not depend on the noise (%d/200)", same);
}

int main(int argc, char **argv) {
    const char *gsm8k_dir = argc > 1 ? argv[1] : "../shared/data/gsm8k";
    test_extract();
    test_equal();
    test_steps();
    test_gsm8k_file(gsm8k_dir, "train.jsonl");
    test_gsm8k_file(gsm8k_dir, "test.jsonl");
    for (int f = 0; f < 2; f++) {
        test_task_clean((TaskFamily)f);
        test_task_noisy((TaskFamily)f);
    }
    test_task_regenerate();
    return checks_finish();
}
