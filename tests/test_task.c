// test_task.c — tests of the built-in task (lib/task.h): determinism and the prefix property,
// disjoint splits, held-out names and templates, longer test-long items, the oracle teacher's
// correctness (checked by an independent solver), teacher noise, and the step checker.
// Built from sirt.c itself (the task is lib/task.h). Writes only in a scratch directory of its
// own. Prints one line per check and ends with "N passed, M failed".
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"

#define N_ITEMS 2000
static const char *const family_names[2] = {"math", "choice"};

static char *read_file(const char *path, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = xmalloc((size_t)size + 1);
    *bytes = fread(data, 1, (size_t)size, f);
    data[*bytes] = '\0';
    fclose(f);
    return data;
}

// `./sirt data` with these flags, writing into the scratch directory dir; the file's text.
static char *run_data(const char *dir, const char *task, const char *split, const char *n,
                      const char *seed, const char *noise, size_t *bytes) {
    char path[4096];
    scratch_path(path, sizeof path, dir, "data.jsonl");
    char *argv[] = {"--task", (char *)task, "--split", (char *)split, "--n", (char *)n,
                    "--seed", (char *)seed, "--noise", (char *)noise, "--out", path};
    cmd_data(12, argv);
    char *data = read_file(path, bytes);
    remove(path);
    return data;
}

// The lines of a text (a copy, split in place); returns the count.
static int split_lines(char *text, char **lines, int max) {
    int n = 0;
    for (char *p = text; p && n < max;) {
        lines[n++] = p;
        p = strchr(p, '\n');
        if (p) *p++ = '\0';
    }
    return n;
}

static int words_of(char *text, char **words, int max) {
    int n = 0;
    for (char *w = strtok(text, " "); w && n < max; w = strtok(NULL, " ")) words[n++] = w;
    return n;
}

static int name_lookup(const char *word) { // the name at the start of word ("Ann," -> Ann)
    for (int i = 0; i < TASK_COUNT(task_names); i++) {
        size_t len = strlen(task_names[i].name);
        if (!strncmp(word, task_names[i].name, len) && !(word[len] >= 'a' && word[len] <= 'z'))
            return i;
    }
    return -1;
}

// --- An independent solver for choice questions: reads the facts, the question and the options
// from the text alone. Returns the answer letter; fills the order (top first) and the asked rank.
static int solve_choice(const TaskItem *it, int *order, int *n_out, int *rank_out, int *n_options) {
    const TaskRelation *r = &task_relations[it->template_id];
    char *copy = strdup(it->question), *w[128];
    int nw = words_of(copy, w, 128);
    int below[TASK_COUNT(task_names)], seen[TASK_COUNT(task_names)], n = 0, rank = -1, opt[8], no = 0;
    for (int i = 0; i < TASK_COUNT(task_names); i++) below[i] = -1, seen[i] = 0;
    for (int i = 0; i + 4 < nw; i++)
        if (!strcmp(w[i + 1], "is") && !strcmp(w[i + 3], "than")) {
            int x = name_lookup(w[i]), y = name_lookup(w[i + 4]);
            int more = !strcmp(w[i + 2], r->more), less = !strcmp(w[i + 2], r->less);
            if (x < 0 || y < 0 || more == less) return 0;
            if (more) below[x] = y;
            else below[y] = x;
            n += !seen[x] + !seen[y];
            seen[x] = seen[y] = 1;
        }
    int top = -1;
    for (int i = 0; i < TASK_COUNT(task_names); i++) {
        int has_above = 0;
        for (int j = 0; j < TASK_COUNT(task_names); j++) has_above |= below[j] == i;
        if (seen[i] && !has_above) top = i;
    }
    for (int k = 0, p = top; k < n; k++, p = below[p]) order[k] = p;
    for (int i = 0; i + 3 < nw; i++)
        if (!strcmp(w[i], "Who") && !strcmp(w[i + 2], "the")) {
            int second = !strcmp(w[i + 3], "second");
            char *sup = w[i + 3 + second];
            sup[strlen(sup) - 1] = '\0'; // '?'
            int most = !strcmp(sup, r->most);
            rank = most ? (second ? 1 : 0) : (second ? n - 2 : n - 1);
        }
    for (int i = 0; i + 1 < nw; i++)
        if (strlen(w[i]) == 2 && w[i][1] == ')' && w[i][0] == 'A' + no) opt[no++] = name_lookup(w[i + 1]);
    int letter = 0;
    for (int o = 0; o < no; o++)
        if (rank >= 0 && opt[o] == order[rank]) letter = 'A' + o;
    free(copy);
    *n_out = n;
    *rank_out = rank;
    *n_options = no;
    return letter;
}

// Counts the choice steps that are locally wrong: a step must extend the previous order by its
// fact (the new person right below or above the known one); the last line must name the person
// at the asked rank of the last order, with that person's letter. Sets *first_wrong.
static int choice_wrong_steps(const TaskItem *it, int rank, int *first_wrong) {
    const TaskRelation *r = &task_relations[it->template_id];
    char *copy = strdup(it->answer), *lines[16], *w[64];
    int nl = split_lines(copy, lines, 16), list[8], len = 0, wrong = 0;
    *first_wrong = -1;
    for (int l = 0; l < nl - 1; l++) {
        int nw = words_of(lines[l], w, 64), ok = 1;
        if (l == nl - 2) { // "So the [second] X is NAME, which is option L."
            int name = name_lookup(w[nw - 5]);
            char letter = w[nw - 1][0];
            int o = -1;
            char *q = strchr(it->question, '?'); // options after the question mark
            for (char *p = q; p && (p = strstr(p, ") ")); p += 2)
                if (name_lookup(p + 2) == name) o = p[-1];
            ok = rank < len && list[rank] == name && letter == o;
        } else {
            int x = name_lookup(w[0]), y = name_lookup(w[4]);
            int upper = !strcmp(w[2], r->more) ? x : y, lower = upper == x ? y : x;
            int expect[8], ne = 0, in_u = 0, in_l = 0;
            for (int i = 0; i < len; i++) in_u |= list[i] == upper, in_l |= list[i] == lower;
            if (len == 0) expect[ne++] = upper, expect[ne++] = lower;
            else if (in_u != in_l)
                for (int i = 0; i < len; i++) {
                    if (in_l && list[i] == lower) expect[ne++] = upper;
                    expect[ne++] = list[i];
                    if (in_u && list[i] == upper) expect[ne++] = lower;
                }
            len = 0;
            for (int i = 10; i < nw; i++) list[len++] = name_lookup(w[i]);
            ok = ne == len && !memcmp(expect, list, sizeof(int) * (size_t)len);
        }
        if (!ok && *first_wrong < 0) *first_wrong = l;
        wrong += !ok;
    }
    free(copy);
    return wrong;
}

// Checks one math item against its own expression and its question text. Returns the number
// of steps whose arithmetic is wrong (by task_check_step), or -1 if the item is malformed.
static int math_item_wrong_steps(const TaskItem *it, int *first_wrong, int *chained) {
    // the numbers of the question, in order, are the start and the operands
    const char *p = it->question;
    int nums[16], nn = 0;
    while (*p) {
        if (*p >= '0' && *p <= '9') {
            nums[nn++] = (int)strtol(p, (char **)&p, 10);
            if (nn == 16) return -1;
        } else p++;
    }
    if (nn != it->num_ops + 1 || nums[0] != it->start) return -1;
    for (int k = 0; k < it->num_ops; k++)
        if (nums[k + 1] != it->operands[k]) return -1;
    char *copy = strdup(it->answer), *lines[16];
    int nl = split_lines(copy, lines, 16), wrong = 0;
    *first_wrong = -1;
    *chained = nl == it->num_ops + 1;
    long prev = it->start;
    for (int k = 0; k < nl - 1 && k < it->num_ops; k++) {
        long a, b, c;
        char op;
        int ok = task_check_step(lines[k], strlen(lines[k]));
        if (!task_parse_step(lines[k], strlen(lines[k]), &a, &op, &b, &c)) ok = -1;
        if (ok < 0) wrong = -1000;
        else {
            *chained &= a == prev && op == it->ops[k] && b == it->operands[k];
            if (!ok && *first_wrong < 0) *first_wrong = k;
            wrong += !ok;
            prev = c;
        }
    }
    char final[16];
    *chained &= task_final_answer(it->answer, final, sizeof final) && atol(final) == prev;
    free(copy);
    return wrong < 0 ? -1 : wrong;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    char dir[4096];
    scratch_make(dir, sizeof dir, "test_task");
    // --- the step checker
    struct { const char *line; int want; } steps[] = {
        {"Tom buys 5 more marbles: 3 + 5 = 8.", 1}, {"Tom buys 5 more marbles: 3 + 5 = 9.", 0},
        {"x: 8 - 2 = 6.", 1}, {"x: 4 * 6 = 24", 1}, {"x: 4 x 6 = 25.", 0}, {"x: 12 / 4 = 3.", 1},
        {"x: 13 / 4 = 3.", 0}, {"x: 7 / 0 = 0.", 0}, {"x: 3 - 5 = -2.", 1}, {"x: 8-2=6.\n", 1},
        {"Tom is happy.", -1}, {"#### 8", -1}, {"abc12 + 3 = 15.", -1}, {"x: 3 + = 8.", -1},
        {"x: 1234567890 + 1 = 1234567891.", -1}, {"", -1},
    };
    int step_ok = 1;
    for (int i = 0; i < TASK_COUNT(steps); i++) {
        int got = task_check_step(steps[i].line, strlen(steps[i].line));
        if (got != steps[i].want) printf("  '%s': got %d want %d\n", steps[i].line, got, steps[i].want);
        step_ok &= got == steps[i].want;
    }
    check(step_ok, "task_check_step on %d hand-written lines (right, wrong, unparseable)", TASK_COUNT(steps));
    char fin[16];
    check(task_final_answer("a\nb\n#### 42", fin, sizeof fin) && !strcmp(fin, "42") &&
              task_final_answer("#### 1\n#### B \n", fin, sizeof fin) && !strcmp(fin, "B") &&
              !task_final_answer("The answer is 4", fin, sizeof fin),
          "task_final_answer takes the text after the last ####");

    // --- names and templates are separable by text
    int names_ok = 1;
    for (int i = 0; i < TASK_COUNT(task_names); i++)
        for (int j = 0; j < TASK_COUNT(task_names); j++)
            if (i != j && strstr(task_names[i].name, task_names[j].name)) names_ok = 0;
    for (int i = TASK_NAMES_IN; i < TASK_COUNT(task_names); i++)
        for (int t = 0; t < TASK_MATH_IN; t++) {
            const TaskMathTemplate *m = &task_math_templates[t];
            const char *parts[] = {m->start, m->add, m->sub, m->mul, m->div, m->ask};
            for (int k = 0; k < 6; k++) names_ok &= !strstr(parts[k], task_names[i].name);
        }
    check(names_ok, "no name contains another; no held-out name inside an in-domain template");

    // --- determinism and the prefix property, through ./sirt data
    for (int f = 0; f < 2; f++)
        for (int s = 0; s < TASK_NUM_SPLITS; s++) {
            size_t b1, b2, b3, b4;
            char *a = run_data(dir, family_names[f], task_split_names[s], "1000", "7", "0.3", &b1);
            char *b = run_data(dir, family_names[f], task_split_names[s], "1000", "7", "0.3", &b2);
            char *c = run_data(dir, family_names[f], task_split_names[s], "100", "7", "0.3", &b3);
            char *d = run_data(dir, family_names[f], task_split_names[s], "1000", "8", "0.3", &b4);
            int lines = 0;
            for (size_t i = 0; i < b1; i++) lines += a[i] == '\n';
            check(b1 == b2 && !memcmp(a, b, b1) && lines == 1000 && b3 < b1 && !memcmp(a, c, b3) &&
                      a[b3 - 1] == '\n' && (b1 != b4 || memcmp(a, d, b1)),
                  "%s %s: same seed -> identical file (%zu bytes), --n 100 is a prefix, seed 8 differs",
                  family_names[f], task_split_names[s], b1);
            free(a), free(b), free(c), free(d);
        }

    // --- generate 2,000 items of every split of both families
    static TaskItem items[2][TASK_NUM_SPLITS][N_ITEMS], noisy_items[2][N_ITEMS];
    for (int f = 0; f < 2; f++) {
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            task_generate((TaskFamily)f, (TaskSplit)s, N_ITEMS, 1, 0.0f, items[f][s]);
        task_generate((TaskFamily)f, TASK_SPLIT_TRAIN, N_ITEMS, 1, 0.3f, noisy_items[f]);
    }

    // --- disjoint splits; every question in the split its text hashes to
    for (int f = 0; f < 2; f++) {
        static char *entries[TASK_NUM_SPLITS * N_ITEMS];
        int ne = 0, owned = 1, cross = 0, within = 0, repeats[TASK_NUM_SPLITS] = {0};
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            for (int i = 0; i < N_ITEMS; i++) {
                owned &= s > TASK_SPLIT_TEST || task_owner(items[f][s][i].question) == (TaskSplit)s;
                entries[ne++] = items[f][s][i].question;
            }
        qsort(entries, (size_t)ne, sizeof(char *), cmp_entry);
        for (int i = 1; i < ne; i++)
            if (!strcmp(entries[i - 1], entries[i])) {
                int sa = -1, sb = -1; // find the splits of the two copies
                for (int s = 0; s < TASK_NUM_SPLITS; s++)
                    for (int k = 0; k < N_ITEMS; k++) {
                        if (items[f][s][k].question == entries[i - 1]) sa = s;
                        if (items[f][s][k].question == entries[i]) sb = s;
                    }
                if (sa != sb) cross++;
                else within++, repeats[sa]++;
            }
        check(owned && cross == 0,
              "%s: 5 splits x %d items: no question text in two splits; train/valid/test each own theirs (repeats within a split: %d)",
              family_names[f], N_ITEMS, within);
        check(repeats[TASK_SPLIT_TEST] + repeats[TASK_SPLIT_TEST_OOD] + repeats[TASK_SPLIT_TEST_LONG] <= N_ITEMS / 100,
              "%s: test, test-ood, test-long: %d, %d, %d repeated questions in %d each (<= 1%% in all)",
              family_names[f], repeats[TASK_SPLIT_TEST], repeats[TASK_SPLIT_TEST_OOD],
              repeats[TASK_SPLIT_TEST_LONG], N_ITEMS);
    }

    // --- out of domain: held-out names and templates
    for (int f = 0; f < 2; f++) {
        int in_ids = f == TASK_MATH ? TASK_MATH_IN : TASK_RELATIONS_IN, leak = 0, ids_ok = 1, ood_ok = 1;
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            for (int i = 0; i < N_ITEMS; i++) {
                const TaskItem *it = &items[f][s][i];
                int ood = s == TASK_SPLIT_TEST_OOD, has_held_out = 0;
                for (int k = TASK_NAMES_IN; k < TASK_COUNT(task_names); k++) {
                    int found = strstr(it->question, task_names[k].name) || strstr(it->answer, task_names[k].name);
                    has_held_out |= found;
                    if (!ood && found) leak++;
                }
                for (int k = 0; k < TASK_NAMES_IN && ood; k++)
                    ood_ok &= !strstr(it->question, task_names[k].name);
                if (ood) ood_ok &= has_held_out && it->template_id >= in_ids && it->name_id >= TASK_NAMES_IN;
                else ids_ok &= it->template_id < in_ids && it->name_id < TASK_NAMES_IN;
            }
        check(leak == 0 && ids_ok, "%s: no held-out name in train/valid/test/test-long text; their templates are in-domain",
              family_names[f]);
        check(ood_ok, "%s: test-ood uses only held-out templates (id >= %d) and held-out names",
              family_names[f], in_ids);
    }

    // --- test-long is longer than anything in train
    for (int f = 0; f < 2; f++) {
        int max_train = 0, min_long = 1 << 30;
        for (int i = 0; i < N_ITEMS; i++) {
            if (items[f][TASK_SPLIT_TRAIN][i].num_steps > max_train) max_train = items[f][TASK_SPLIT_TRAIN][i].num_steps;
            if (items[f][TASK_SPLIT_TEST_LONG][i].num_steps < min_long) min_long = items[f][TASK_SPLIT_TEST_LONG][i].num_steps;
        }
        check(min_long > max_train, "%s: test-long has >= %d steps, train at most %d", family_names[f],
              min_long, max_train);
    }

    // --- the oracle teacher, math: every step right, final answer = the expression's value
    {
        int bad = 0, used[TASK_COUNT(task_math_templates)] = {0}, ops_seen[4] = {0}, range_ok = 1;
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            for (int i = 0; i < N_ITEMS; i++) {
                const TaskItem *it = &items[TASK_MATH][s][i];
                long v = it->start;
                range_ok &= v >= 2 && v <= 20;
                for (int k = 0; k < it->num_ops; k++) {
                    char op = it->ops[k];
                    long b = it->operands[k];
                    if (op == '/') range_ok &= v % b == 0;
                    v = op == '+' ? v + b : op == '-' ? v - b : op == '*' ? v * b : v / b;
                    range_ok &= v >= 1 && v <= 999 && (op == '+' || op == '-' ? b >= 2 && b <= 20 : b >= 2 && b <= 9);
                    ops_seen[op == '+' ? 0 : op == '-' ? 1 : op == '*' ? 2 : 3]++;
                }
                char gold[16], final[16];
                snprintf(gold, sizeof gold, "%ld", v);
                int first, chained, wrong = math_item_wrong_steps(it, &first, &chained);
                if (wrong != 0 || !chained || strcmp(gold, it->gold) || it->noisy ||
                    !task_final_answer(it->answer, final, sizeof final) || strcmp(final, gold)) {
                    if (bad++ < 3) printf("  bad: %s\n  %s\n", it->question, it->answer);
                }
                if (s == TASK_SPLIT_TRAIN) used[it->template_id]++;
            }
        check(bad == 0, "math, noise 0: %d items: question numbers = the expression, every step "
              "right by task_check_step and chained, final = recomputed gold (%d bad)",
              TASK_NUM_SPLITS * N_ITEMS, bad);
        check(range_ok, "math: start 2..20, +/- operands 2..20, * and / operands 2..9, every value in 1..999, divisions exact");
        check(ops_seen[0] && ops_seen[1] && ops_seen[2] && ops_seen[3],
              "math: all four operations occur (+ %d, - %d, * %d, / %d)", ops_seen[0], ops_seen[1],
              ops_seen[2], ops_seen[3]);
        int distinct = 0;
        for (int t = 0; t < TASK_COUNT(used); t++) distinct += used[t] > 0;
        check(distinct >= 20, "math: %d distinct templates used in %d train items", distinct, N_ITEMS);
    }

    // --- the oracle teacher, choice: an independent solver agrees; steps follow the facts
    {
        int bad = 0, options_ok = 1, used[TASK_COUNT(task_relations)] = {0};
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            for (int i = 0; i < N_ITEMS; i++) {
                const TaskItem *it = &items[TASK_CHOICE][s][i];
                int order[8], n, rank, no, first;
                int letter = solve_choice(it, order, &n, &rank, &no);
                char final[16];
                int wrong = choice_wrong_steps(it, rank, &first);
                options_ok &= no >= 3 && no <= 5 && letter >= 'A' && letter < 'A' + no &&
                              it->gold[0] >= 'A' && it->gold[0] < 'A' + no && it->gold[1] == '\0';
                if (!letter || it->gold[0] != letter || wrong != 0 || it->noisy || it->num_steps != n ||
                    !task_final_answer(it->answer, final, sizeof final) || strcmp(final, it->gold)) {
                    if (bad++ < 3) printf("  bad: %s\n  %s\n", it->question, it->answer);
                }
                if (s == TASK_SPLIT_TRAIN) used[it->template_id]++;
            }
        check(bad == 0, "choice, noise 0: %d items: independent solver's letter = gold = final; every step follows its fact",
              TASK_NUM_SPLITS * N_ITEMS);
        check(options_ok, "choice: 3-5 options, the answer letter within them");
        int distinct = 0;
        for (int t = 0; t < TASK_COUNT(used); t++) distinct += used[t] > 0;
        check(distinct == TASK_RELATIONS_IN, "choice: all %d in-domain relations used in train", distinct);
    }

    // --- teacher noise 0.3
    for (int f = 0; f < 2; f++) {
        int noisy = 0, consistent = 1, same_question = 1;
        for (int i = 0; i < N_ITEMS; i++) {
            const TaskItem *it = &noisy_items[f][i];
            same_question &= !strcmp(it->question, items[f][TASK_SPLIT_TRAIN][i].question) &&
                             !strcmp(it->gold, items[f][TASK_SPLIT_TRAIN][i].gold);
            int first, chained = 1, wrong, order[8], n, rank, no;
            if (f == TASK_MATH) wrong = math_item_wrong_steps(it, &first, &chained);
            else {
                solve_choice(it, order, &n, &rank, &no);
                wrong = choice_wrong_steps(it, rank, &first);
            }
            char final[16];
            task_final_answer(it->answer, final, sizeof final);
            int final_wrong = strcmp(final, it->gold) != 0;
            int ok = it->noisy ? wrong == 1 && first == it->wrong_step && final_wrong && chained
                               : wrong == 0 && !final_wrong && it->wrong_step == -1;
            if (!ok && consistent) printf("  inconsistent: %s\n  %s\n  gold %s\n", it->question, it->answer, it->gold);
            consistent &= ok;
            noisy += it->noisy;
        }
        double frac = (double)noisy / N_ITEMS;
        check(consistent, "%s, noise 0.3: noisy items have exactly one wrong step (the recorded one), "
              "later steps carry it, and a wrong final answer; the others are clean", family_names[f]);
        check(frac > 0.26 && frac < 0.34, "%s, noise 0.3: %.3f of items noisy", family_names[f], frac);
        check(same_question, "%s: the noise changes the answers only (same questions and gold)", family_names[f]);
    }

    // --- JSON output escapes
    {
        TaskItem it = {0};
        it.question = "a \"b\" \\ c\n";
        it.answer = "x\ny\n#### 3";
        strcpy(it.gold, "3");
        char path[4096];
        scratch_path(path, sizeof path, dir, "json.txt");
        FILE *f = fopen(path, "w");
        if (!f) die("cannot write %s: %s", path, strerror(errno));
        task_write_json(f, &it);
        if (fclose(f) != 0) die("cannot write %s: %s", path, strerror(errno));
        size_t bytes;
        char *text = read_file(path, &bytes);
        remove(path);
        check(!strcmp(text, "{\"question\": \"a \\\"b\\\" \\\\ c\\n\", \"answer\": \"x\\ny\\n#### 3\", "
                            "\"gold\": \"3\", \"noisy\": false, \"template\": 0}\n"),
              "JSON line escapes quotes, backslashes and newlines");
        free(text);
    }

    for (int f = 0; f < 2; f++) {
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            for (int i = 0; i < N_ITEMS; i++) task_item_free(&items[f][s][i]);
        for (int i = 0; i < N_ITEMS; i++) task_item_free(&noisy_items[f][i]);
    }
    scratch_remove(dir);
    return checks_finish();
}
