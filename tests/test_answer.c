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

static void test_steps(void) {
    // the true path: 3 + 5 = 8, 8 * 2 = 16, 16 / 4 = 4
    const TaskStep truth[] = {{3, 5, 8, '+'}, {8, 2, 16, '*'}, {16, 4, 4, '/'}};
    TaskStep parsed[4];
    check(task_parse_truth("3 + 5 = 8\n8 * 2 = 16\n16 / 4 = 4", parsed, 4) == 3 &&
              parsed[1].a == 8 && parsed[1].op == '*' && parsed[1].b == 2 && parsed[1].c == 16 && task_parse_truth("3 + 5 = 8\nhello", parsed, 4) == -1 &&
              task_parse_truth("1 + 1 = 2\n1 + 1 = 2", parsed, 1) == -1 && task_parse_truth("", parsed, 4) == 0,
          "task_parse_truth: 3 steps read back; a line that is not a step, or too many, is -1; empty is 0");
    StepReport r;

    answer_check_steps("Tom buys 5: 3 + 5 = 8.\n8 * 2 = 16.\n\n  16 / 4 = 4.\nThe answer is 4.", truth, 3, &r);
    check(r.num_steps == 3 && r.first_error == -1 && r.arithmetic_ok[0] == 1 && r.arithmetic_ok[2] == 1 &&
              r.on_path[0] == 1 && r.on_path[1] == 1 && r.on_path[2] == 1 && r.true_path && r.arithmetic_steps == 3,
          "steps: a right path (3 steps, blank line skipped, answer line excluded): true_path");

    answer_check_steps("5 + 3 = 8.\n2 x 8 = 16.\n16 / 4 = 4.\nThe answer is 4.", truth, 3, &r);
    check(r.first_error == -1 && r.on_path[0] == 1 && r.on_path[1] == 1 && r.true_path,
          "steps: a sum or product with its operands swapped is the true step");

    answer_check_steps("3 + 5 = 8.\n8 * 2 = 16.\n4 * 4 = 16.\n16 / 4 = 4.\nThe answer is 4.", truth, 3, &r);
    check(r.first_error == 2 && r.on_path[2] == 0 && !r.true_path,
          "steps: a right equation that is not the true step is off the path");

    answer_check_steps("3 + 5 = 9.\n9 * 2 = 18.\n18 / 4 = 4.\nThe answer is 4.", truth, 3, &r);
    check(r.first_error == 0 && r.arithmetic_ok[0] == 0 && r.on_path[0] == 0 && r.arithmetic_ok[1] == 1 &&
              r.on_path[1] == 0 && r.arithmetic_ok[2] == 0 && !r.true_path,
          "steps: a slip at step 0 carries: later steps right in arithmetic but off the path");

    answer_check_steps("3 + 5 = 8.\n8 + 2 = 10.\n10 / 4 = 2.\nThe answer is 2.", truth, 3, &r);
    check(r.first_error == 1 && r.arithmetic_ok[1] == 1 && r.on_path[1] == 0,
          "steps: right arithmetic, wrong operation: off the path (first_error 1)");

    answer_check_steps("Let me think.\n3 + 5 = 8.\nSo far so good.\n8 * 2 = 16.\n16 / 4 = 4. The answer is 4.",
                       truth, 3, &r);
    check(r.num_steps == 5 && r.first_error == -1 && r.arithmetic_ok[0] == -1 && r.on_path[0] == -1 &&
              r.on_path[1] == 1 && r.on_path[3] == 1 && r.on_path[4] == 1 && r.true_path,
          "steps: chatter lines have no arithmetic and do not shift the path; text before the marker is a step");

    answer_check_steps("3 + 5 = 8.\n8 * 2 = 16.\n16 / 4 = 4.\n4 + 0 = 4.\nThe answer is 4.", truth, 3, &r);
    check(r.first_error == 3 && r.on_path[3] == 0 && !r.true_path, "steps: a step past the path's end is off it");

    answer_check_steps("3 + 5 = 8.\n8 * 2 = 16.\nThe answer is 4.", truth, 3, &r);
    check(r.first_error == -1 && !r.true_path, "steps: a path that stops short is not the true path");

    answer_check_steps("3 + 5 = 8.\n8 * 2 = 16.", truth, 3, &r);
    check(r.num_steps == 2 && r.first_error == -1, "steps: no answer: every line is a step");

    answer_check_steps("3 + 5 = 9.\n9 * 2 = 18.\n18 - 4 = 14.\n14 / 2 = 7.\nThe answer is 7.", NULL, 0, &r);
    check(r.first_error == 0 && r.on_path[0] == -1 && r.on_path[1] == -1 && r.arithmetic_ok[1] == 1 && !r.true_path &&
              r.op_total[0] == 1 && r.op_right[0] == 0 && r.op_total[1] == 1 && r.op_right[1] == 1 &&
              r.op_total[2] == 1 && r.op_right[2] == 1 && r.op_total[3] == 1 && r.op_right[3] == 1,
          "steps: without true steps, arithmetic only, counted per operation (+ 0/1, - 1/1, * 1/1, / 1/1)");

    // the task's world holds counts 0..TASK_MATH_MAX_VALUE (20): a step with a negative or larger
    // operand or right result is off every true path, whatever it computes
    const TaskStep world_truth[] = {{7, 3, 10, '+'}, {10, 4, 6, '-'}};
    answer_check_steps("7 + 3 = 10.\n10 - 4 = 6.\n6 - 9 = 3.\n19 + 3 = 20.\n12 + 8 = 21.\n20 - 20 = 0.\n"
                       "The answer is 0.", world_truth, 2, &r);
    check(r.world_total == 4 && r.world_right == 3 && r.op_total[0] == 3 && r.op_right[0] == 1 && r.op_total[1] == 3 &&
              r.op_right[1] == 2,
          "steps: in the world: 7+3, 10-4, 12+8 (wrong), 20-20 (4 steps, 3 right); 6-9 and 19+3 are outside it");
    check(task_step_in_world(20, '-', 0) && !task_step_in_world(21, '-', 1) && !task_step_in_world(3, '-', 8) &&
              task_step_in_world(12, '/', 4) && !task_step_in_world(12, '/', 5) && !task_step_in_world(5, '*', 5),
          "steps: task_step_in_world at the range's edges, and for * and /");
    answer_check_steps("7 + 3 = 10.\n6 - 9 = 3.\n", NULL, 0, &r);
    check(r.world_total == 0 && r.op_total[0] == 1, "steps: without true steps nothing is counted in the world");

    answer_check_steps("3 + 5 = 8.\nThe answer is 8.<|endoftext|>1 + 1 = 3.", truth, 3, &r);
    check(r.num_steps == 1 && r.first_error == -1, "steps: nothing after end-of-text counts");

    answer_check_steps("", truth, 3, &r);
    check(r.num_steps == 0 && r.first_error == -1 && !r.true_path, "steps: an empty completion has none");

    char many[1024] = "";
    for (int i = 0; i < 20; i++) strcat(many, i == 18 ? "1 + 1 = 3.\n" : "Hmm.\n");
    strcat(many, "The answer is 4.");
    answer_check_steps(many, truth, 3, &r);
    check(r.num_steps == 20 && r.first_error == 18, "steps: 20 steps counted (16 reported), first_error 18 beyond them");
}

// The diagnosis of a set of completions, against counts made by hand.
static void test_diagnosis(void) {
    const TaskStep truth[] = {{3, 5, 8, '+'}, {8, 2, 6, '-'}};
    const char *right = "3 + 5 = 8.\n8 - 2 = 6.\nThe answer is 6.";
    const char *lucky = "3 + 5 = 7.\n7 - 1 = 6.\nThe answer is 6.";   // right answer, wrong steps
    const char *wrong = "3 + 5 = 8.\n8 - 3 = 5.\nThe answer is 5.";
    const char *none = "I do not know.";
    Diagnosis d;
    diagnosis_init(&d, 4);
    check(d.num_levels == 3 && d.levels[0] == 1 && d.levels[1] == 2 && d.levels[2] == 4,
          "diagnosis: with K = 4, pass@k and maj@k at k = 1, 2, 4");
    // item 1: greedy right; samples wrong, right, right, none -> pass@1 0, pass@2 1, maj@2 tie -> first (5): 0,
    //         maj@4: 6 has 2 votes -> right
    char *s1[] = {(char *)wrong, (char *)right, (char *)lucky, (char *)none};
    // item 2: greedy lucky; samples none x4 -> nothing right, no majority
    char *s2[] = {(char *)none, (char *)none, (char *)none, (char *)none};
    // item 3 (no true steps): greedy wrong; samples right x4
    char *s3[] = {(char *)right, (char *)right, (char *)right, (char *)right};
    ItemVerdict v1, v2, v3;
    diagnosis_add(&d, "6", truth, 2, right, s1, &v1);
    diagnosis_add(&d, "6", truth, 2, lucky, s2, &v2);
    diagnosis_add(&d, "6", NULL, 0, wrong, s3, &v3);
    check(d.n == 3 && d.with_truth == 2 && d.greedy == 2 && d.verified == 1 && diagnosis_luck(&d) == 50.0,
          "diagnosis: 3 items, 2 with true steps; greedy 2 right, 1 verified: 50%% of the right ones by luck");
    check(d.pass[0] == 1 && d.pass[1] == 2 && d.pass[2] == 2 && d.majority[0] == 1 && d.majority[1] == 1 &&
              d.majority[2] == 2,
          "diagnosis: pass@1,2,4 = 1, 2, 2 and maj@1,2,4 = 1, 1, 2 (ties go to the first answer seen)");
    check(d.samples == 12 && d.sample_right == 6 && d.sample_verified == 1,
          "diagnosis: 12 samples, 6 right, 1 of them on the true path (item 3 has no true steps)");
    // samples' arithmetic: wrong (+ ok, - ok), right x5 (+, -), lucky (+ wrong, - ok); "none" has none
    check(d.op_total[0] == 7 && d.op_right[0] == 6 && d.op_total[1] == 7 && d.op_right[1] == 7,
          "diagnosis: the samples' arithmetic per operation (+ 6/7, - 7/7)");
    // items 1 and 2 have true steps: their samples (wrong, right, lucky, none x5) hold 6 steps, all
    // in the world (lucky's 3 + 5 = 7 computed wrong); item 3's 8 steps are not counted
    check(d.truth_steps == 6 && d.world_total == 6 && d.world_right == 5,
          "diagnosis: the arithmetic in the task's world counts items with true steps only (5 of 6 right)");
    check(v1.correct && v1.verified && !v1.pass == 0 && v1.majority_correct && !v2.verified && v2.correct &&
              !v2.pass && !v3.correct && v3.pass && !strcmp(v3.majority, "6"),
          "diagnosis: the per-item verdicts");
    Diagnosis none_given;
    diagnosis_init(&none_given, 0);
    diagnosis_add(&none_given, "6", truth, 2, lucky, NULL, NULL);
    check(none_given.num_levels == 0 && none_given.samples == 1 && none_given.op_total[0] == 1 &&
              none_given.op_right[0] == 0 && none_given.greedy == 1 && none_given.verified == 0,
          "diagnosis: without samples, the greedy completion is the student's own sample");
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
            TemplateOptions opt = {variant == 2 ? TEMPLATE_PLAIN : TEMPLATE_COT, variant == 1, 0};
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
    TemplateOptions opt = {TEMPLATE_COT, 0, 0};
    Example ex;
    char err[256];
    if (example_from_question(it->question, it->answer, &opt, &ex, err, sizeof err) != 0) die("%s", err);
    return ex;
}

// Does line j of a math item's demonstration have arithmetic? Line 0 is the start and line 1 + e
// tells event e, with arithmetic when the event moves the asked person's count.
static int math_line_has_step(const TaskItem *it, int j) {
    for (int k = 0; k < it->num_truth; k++)
        if (it->step_event[k] + 1 == j) return 1;
    return 0;
}

static void test_task_clean(TaskFamily family) {
    int correct = 0, steps_ok = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        TaskItem it;
        task_make_item(family, TASK_SPLIT_TRAIN, 1, 0.0f, i, &it);
        Example ex = task_example(&it);
        correct += answer_is_correct(ex.completion, it.gold);
        StepReport r;
        answer_check_steps(ex.completion, it.truth, it.num_truth, &r);
        int ok = r.num_steps == it.num_steps && r.first_error == -1 && r.true_path == (family == TASK_MATH);
        for (int j = 0; j < r.num_steps && j < ANSWER_MAX_STEPS; j++) {
            // math: the lines of the asked person's events have arithmetic (line 0 is the start,
            // line 1 + e event e); the choice family has none at all
            int want = family == TASK_MATH && math_line_has_step(&it, j) ? 1 : -1;
            ok = ok && r.arithmetic_ok[j] == want && r.on_path[j] == want;
        }
        steps_ok += ok;
        example_free(&ex);
        task_item_free(&it);
    }
    const char *name = task_family_names[family];
    check(correct == N_ITEMS, "%s, noise 0: %d/%d teacher completions judged correct", name, correct, N_ITEMS);
    check(steps_ok == N_ITEMS, "%s, noise 0: %d/%d with every step %s and no first_error", name, steps_ok,
          N_ITEMS, family == TASK_MATH ? "but the start arithmetic_ok and on_path, the true path" : "without arithmetic (-1)");
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
        answer_check_steps(ex.completion, it.truth, it.num_truth, &r);
        if (family == TASK_MATH) {
            first_error_ok += r.first_error == it.wrong_step; // -1 == -1 for clean items
            int off = r.true_path == !it.noisy; // from the slip on off the path; before it on it
            for (int j = 0; j < r.num_steps; j++)
                off = off && r.on_path[j] == (!math_line_has_step(&it, j) ? -1 : it.noisy && j >= it.wrong_step ? 0 : 1);
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

// --plain-share: a share of the questions gets the plain template and an answer-only completion,
// decided by the question text alone (the same items in every pass), none at 0, all at 1.
static void test_plain_share(void) {
    float shares[3] = {0.0f, 0.25f, 1.0f};
    int plain[3] = {0}, answer_only = 1, same = 1;
    for (int i = 0; i < N_ITEMS; i++) {
        TaskItem it;
        task_make_item(TASK_MATH, TASK_SPLIT_TRAIN, 1, 0.0f, i, &it);
        for (int k = 0; k < 3; k++) {
            int first = -1;
            for (int pass = 0; pass < 2; pass++) { // the same item twice: the same choice
                TemplateOptions opt = {TEMPLATE_COT, 0, shares[k]};
                Example ex;
                char err[256];
                if (example_from_question(it.question, it.answer, &opt, &ex, err, sizeof err) != 0) die("%s", err);
                int is_plain = strstr(ex.prompt, "Answer the following question.") != NULL;
                if (is_plain) answer_only &= !strncmp(ex.completion, "The answer is ", 14) && !strchr(ex.completion, '\n');
                if (pass == 0) plain[k] += first = is_plain;
                else same &= is_plain == first;
                example_free(&ex);
            }
        }
        task_item_free(&it);
    }
    check(plain[0] == 0 && plain[2] == N_ITEMS && plain[1] > N_ITEMS / 5 && plain[1] < N_ITEMS * 3 / 10 && answer_only && same,
          "--plain-share 0, 0.25, 1: %d, %d, %d of %d items plain, each with an answer-only completion, the "
          "same ones when loaded again", plain[0], plain[1], plain[2], N_ITEMS);
}

// The true steps do not depend on the noise, so a noisy item judges a student's steps against the
// same truth; and they survive the JSONL: task_truth_text, then task_parse_truth.
static void test_task_truth(void) {
    int same = 0;
    for (int i = 0; i < 200; i++) {
        TaskItem clean, noisy;
        task_make_item(TASK_MATH, TASK_SPLIT_TEST, 7, 0.0f, i, &clean);
        task_make_item(TASK_MATH, TASK_SPLIT_TEST, 7, 0.9f, i, &noisy);
        Example ex = task_example(&clean);
        TaskText text = {0};
        task_truth_text(&noisy, &text);
        TaskStep back[TASK_MAX_STEPS];
        int n = task_parse_truth(text.data, back, TASK_MAX_STEPS);
        StepReport r;
        answer_check_steps(ex.completion, back, n, &r);
        same += r.first_error == -1 && r.true_path && n == clean.num_truth && !strcmp(clean.gold, noisy.gold);
        free(text.data);
        example_free(&ex);
        task_item_free(&clean);
        task_item_free(&noisy);
    }
    check(same == 200, "true steps: written and read back, the same for a noisy item, the clean teacher on them (%d/200)", same);
}

int main(int argc, char **argv) {
    const char *gsm8k_dir = argc > 1 ? argv[1] : "../shared/data/gsm8k";
    test_extract();
    test_equal();
    test_steps();
    test_diagnosis();
    test_gsm8k_file(gsm8k_dir, "train.jsonl");
    test_gsm8k_file(gsm8k_dir, "test.jsonl");
    for (int f = 0; f < 2; f++) {
        test_task_clean((TaskFamily)f);
        test_task_noisy((TaskFamily)f);
    }
    test_task_truth();
    test_plain_share();
    return checks_finish();
}
