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

// An ordering fact, "Ann is taller than Bob, so from tallest to shortest: Ann, Bob.", parsed and
// judged on its own: the relation whose <more> or <less> word it uses and whose <most> and
// <least> open the header, and the two names in the header in the rule's order (<more>: subject
// first; <less>: object first). Returns an index unique to (subject, object, relation, wording),
// or -1 when the line breaks the form or the rule.
static int parse_order_fact(const char *line) {
    char s[32], w[32], o[32], most[32], least[32], first[32], second[32];
    int end = 0;
    if (sscanf(line, "%31s is %31s than %31[^,], so from %31s to %31[^:]: %31[^,], %31[^.].%n", s, w, o, most,
               least, first, second, &end) != 7 || line[end] != '\0')
        return -1;
    int si = name_lookup(s), oi = name_lookup(o);
    if (si < 0 || oi < 0 || si == oi || strcmp(s, task_names[si].name) || strcmp(o, task_names[oi].name))
        return -1;
    for (int r = 0; r < TASK_COUNT(task_relations); r++) {
        const TaskRelation *rel = &task_relations[r];
        int less = !strcmp(w, rel->less);
        if ((!less && strcmp(w, rel->more)) || strcmp(most, rel->most) || strcmp(least, rel->least)) continue;
        if (strcmp(first, less ? o : s) || strcmp(second, less ? s : o)) return -1;
        return ((si * TASK_COUNT(task_names) + oi) * TASK_COUNT(task_relations) + r) * 2 + less;
    }
    return -1;
}

// The options of a choice question, "A Carl, B Zoe or C Lucy": opt[k] is the name id of letter
// 'A' + k (each option a space, its letter, a space, then a name). Returns their count.
static int choice_options(const char *question, int *opt) {
    int no = 0;
    const char *q = strchr(question, '?');
    for (const char *p = q; p && (p = strchr(p, ' ')) != NULL; p++)
        if (p[1] == 'A' + no && p[2] == ' ') opt[no++] = name_lookup(p + 3);
    return no;
}

// A line that finds a person's letter, "... is NAME; A Ann is NAME? no; B NAME is NAME? yes.":
// the person's name id when the line names one person, then compares the question's options
// with that person in the question's order, each "no" but the person's own "yes", and stops
// there (a person no option names: every option "no"); else -1.
static int choice_find_line(const char *question, const char *line) {
    const char *is = strstr(line, " is "), *semi = is ? strchr(is, ';') : NULL;
    if (!is || !semi) return -1;
    char name[32], want[512];
    snprintf(name, sizeof name, "%.*s", (int)(semi - is - 4), is + 4);
    int id = name_lookup(name), opt[8], no = choice_options(question, opt), n = 0;
    if (id < 0 || strcmp(task_names[id].name, name)) return -1;
    for (int k = 0; k < no && opt[k] >= 0; k++) {
        n += snprintf(want + n, sizeof want - (size_t)n, "%s %c %s is %s? %s", k ? ";" : "", 'A' + k,
                      task_names[opt[k]].name, name, opt[k] == id ? "yes" : "no");
        if (opt[k] == id) break;
    }
    snprintf(want + n, sizeof want - (size_t)n, ".");
    return strcmp(semi + 1, want) ? -1 : id;
}

// --- An independent solver for choice questions: reads the facts, the question and the options
// from the text alone. Returns the answer letter; fills the order (top first) and the asked rank.
static int solve_choice(const TaskItem *it, int *order, int *n_out, int *rank_out, int *n_options) {
    const TaskRelation *r = &task_relations[it->template_id];
    char *copy = strdup(it->question), *w[128];
    int nw = words_of(copy, w, 128);
    int below[TASK_COUNT(task_names)], seen[TASK_COUNT(task_names)], n = 0, rank = -1, opt[8], no = 0;
    for (int i = 0; i < TASK_COUNT(task_names); i++) below[i] = -1, seen[i] = 0;
    for (int i = 0; i + 4 < nw; i++) {
        int x, y;
        char word[32];
        if (!strcmp(w[i + 1], "is") && !strcmp(w[i + 3], "than")) { // "X is taller than Y."
            x = name_lookup(w[i]), y = name_lookup(w[i + 4]);
            snprintf(word, sizeof word, "%s", w[i + 2]);
        } else if (w[i][strlen(w[i]) - 1] == ':' && !strcmp(w[i + 2], "than")) { // "X: taller than Y."
            x = name_lookup(w[i]), y = name_lookup(w[i + 3]);
            snprintf(word, sizeof word, "%s", w[i + 1]);
        } else {
            continue;
        }
        {
            int more = !strcmp(word, r->more), less = !strcmp(word, r->less);
            if (x < 0 || y < 0 || more == less) return 0;
            if (more) below[x] = y;
            else below[y] = x;
            n += !seen[x] + !seen[y];
            seen[x] = seen[y] = 1;
        }
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
    no = choice_options(it->question, opt);
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
// fact (the new person right below or above the known one); the line "So the ..." must name the
// person at the asked rank of the last order and compare the options with that person up to
// their letter.
// Sets *first_wrong.
static int choice_wrong_steps(const TaskItem *it, int rank, int *first_wrong) {
    const TaskRelation *r = &task_relations[it->template_id];
    char *copy = strdup(it->answer), *lines[16], *w[64];
    int nl = split_lines(copy, lines, 16), list[8], len = 0, wrong = 0;
    *first_wrong = -1;
    for (int l = 0; l < nl; l++) {
        if (!strncmp(lines[l], "####", 4)) continue; // the final answer, checked by the callers
        int last = !strncmp(lines[l], "So the ", 7); // before words_of cuts the line into words
        int found = last ? choice_find_line(it->question, lines[l]) : -1;
        int nw = words_of(lines[l], w, 64), ok = 1;
        if (last) { // "So the [second] X is NAME; A Ann is NAME? no; ... L NAME is NAME? yes."
            ok = rank < len && list[rank] == found;
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

// --- An independent solver for math questions: reads the question text alone, sentence by
// sentence, matching each against the phrasings of lib/task.h's tables, simulates every
// person's count, and gives the asked person's steps. The simulation here, not the generator's,
// decides what is true.
typedef struct {
    int people, events, steps, asked, held_out_phrases, in_domain_phrases, range_ok;
    long final;          // the asked person's count at the end
    int kinds_seen[4];   // gain, loss, giving away, receiving (of the asked person)
    TaskStep step[16];
} MathSolution;

// Does the sentence (words w[0..nw)) read as `phrase`? Fills the names and the amount.
static int match_phrase(const char *phrase, char **w, int nw, const char *things, int *x, int *y,
                        int *b) {
    char copy[128], *pw[16];
    snprintf(copy, sizeof copy, "%s", phrase);
    int np = words_of(copy, pw, 16);
    if (np != nw) return 0;
    for (int i = 0; i < np; i++) {
        size_t len = strlen(pw[i]);
        if (len && (pw[i][len - 1] == '.' || pw[i][len - 1] == '?')) pw[i][len - 1] = '\0';
        if (!strcmp(pw[i], "{X}")) { if ((*x = name_lookup(w[i])) < 0) return 0; }
        else if (!strcmp(pw[i], "{Y}")) { if ((*y = name_lookup(w[i])) < 0) return 0; }
        else if (!strcmp(pw[i], "{b}")) { char *end; *b = (int)strtol(w[i], &end, 10); if (*end) return 0; }
        else if (!strcmp(pw[i], "{o}")) { if (strcmp(w[i], things)) return 0; }
        else if (strcmp(pw[i], w[i])) return 0;
    }
    return 1;
}

// Returns 0 and fills s, or -1 when a sentence is not understood.
static int solve_math(const char *question, MathSolution *s) {
    memset(s, 0, sizeof *s);
    s->range_ok = 1;
    s->asked = -1;
    enum { MAX_EVENTS = 16 };
    int ex[MAX_EVENTS], ey[MAX_EVENTS], eb[MAX_EVENTS], ekind[MAX_EVENTS];
    int start[TASK_COUNT(task_names)], count[TASK_COUNT(task_names)], has[TASK_COUNT(task_names)] = {0};
    char *copy = strdup(question), *sentences[32], things[32] = "";
    int ns = 0, rc = 0;
    for (char *p = copy; *p && ns < 32;) { // split after every '.' and '?'
        sentences[ns++] = p;
        char *end = p;
        while (*end && *end != '.' && *end != '?') end++;
        if (!*end) break;
        *end = '\0';
        p = end + 1;
        while (*p == ' ') p++;
    }
    for (int k = 0; k < ns && rc == 0; k++) {
        char *w[16];
        int nw = words_of(sentences[k], w, 16), x = -1, y = -1, b = -1, matched = 0;
        if (nw == 4 && !strcmp(w[1], "has") && (x = name_lookup(w[0])) >= 0 && !s->events) {
            snprintf(things, sizeof things, "%s", w[3]); // "Ann has 7 apples"
            start[x] = count[x] = atoi(w[2]);
            has[x] = 1;
            s->people++;
            s->range_ok &= count[x] >= 2 && count[x] <= 12;
            continue;
        }
        for (int q = 0; q < TASK_COUNT(task_questions) && !matched; q++)
            if (match_phrase(task_questions[q], w, nw, things, &x, &y, &b)) {
                matched = 1;
                s->asked = x;
                *(q < TASK_QUESTIONS_IN ? &s->in_domain_phrases : &s->held_out_phrases) += 1;
            }
        for (int kind = 0; kind < 3 && !matched; kind++)
            for (int p = 0; p < task_phrasings[kind].count && !matched; p++) {
                if (!match_phrase(task_phrasings[kind].phrases[p], w, nw, things, &x, &y, &b)) continue;
                matched = 1;
                *(p < task_phrasings[kind].in_domain ? &s->in_domain_phrases : &s->held_out_phrases) += 1;
                if (s->events == MAX_EVENTS || !has[x] || (kind == TASK_EVENT_GIVE && (!has[y] || x == y))) {
                    rc = -1;
                    break;
                }
                s->range_ok &= b >= 2 && b <= 9;
                count[x] += kind == TASK_EVENT_GAIN ? b : -b;
                if (kind == TASK_EVENT_GIVE) count[y] += b;
                s->range_ok &= count[x] >= 0 && count[x] <= 20 && (y < 0 || (count[y] >= 0 && count[y] <= 20));
                ex[s->events] = x, ey[s->events] = kind == TASK_EVENT_GIVE ? y : -1;
                eb[s->events] = b, ekind[s->events] = kind;
                s->events++;
            }
        if (!matched) rc = -1;
    }
    free(copy);
    if (rc != 0 || s->events == 0 || s->asked < 0 || !has[s->asked]) return -1;
    long value = start[s->asked]; // replay the events that move the asked person's count
    for (int e = 0; e < s->events; e++) {
        if (ex[e] != s->asked && ey[e] != s->asked) continue;
        int receives = ey[e] == s->asked;
        char op = ekind[e] == TASK_EVENT_GAIN || receives ? '+' : '-';
        s->kinds_seen[ekind[e] == TASK_EVENT_GIVE ? 2 + receives : ekind[e]]++;
        if (s->steps == 16) return -1;
        s->step[s->steps++] = (TaskStep){value, eb[e], op == '+' ? value + eb[e] : value - eb[e], op};
        value = s->step[s->steps - 1].c;
    }
    s->final = value;
    return 0;
}

// Checks a math item's demonstration against a solution: line 0 the asked person's start, then a
// line per event: the solution's next step (its arithmetic parsed from the line's end), or, for
// an event that does not involve the asked person, "still has" the running count. Counts the
// lines whose arithmetic is wrong (by task_check_step), sets *first_wrong (the line) and
// *chained (each step starts from the running count, with the solution's operation and amount;
// the final is the last result). Returns -1 when the demonstration's shape is wrong.
static int math_item_wrong_steps(const TaskItem *it, const MathSolution *sol, int *first_wrong,
                                 int *chained) {
    char *copy = strdup(it->answer), *lines[32];
    int nl = split_lines(copy, lines, 32), wrong = 0, k = 0;
    *first_wrong = -1;
    *chained = nl == sol->events + 2 && !strncmp(lines[0], task_names[sol->asked].name,
                                                  strlen(task_names[sol->asked].name));
    long prev = sol->steps ? sol->step[0].a : -1;
    for (int l = 1; l < nl - 1; l++) {
        long a, b, c;
        char op;
        const char *line = lines[l];
        if (!task_parse_step(line, strlen(line), &a, &op, &b, &c)) {
            char still[64];
            snprintf(still, sizeof still, " still has %ld.", prev);
            *chained &= strlen(line) > strlen(still) && !strcmp(line + strlen(line) - strlen(still), still);
            continue;
        }
        if (k == sol->steps) { wrong = -1000; break; }
        int ok = task_check_step(line, strlen(line));
        *chained &= a == prev && op == sol->step[k].op && b == sol->step[k].b;
        if (!ok && *first_wrong < 0) *first_wrong = l;
        wrong += !ok;
        prev = c;
        k++;
    }
    *chained &= k == sol->steps;
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

    // --- names are separable by text
    int names_ok = 1;
    for (int i = 0; i < TASK_COUNT(task_names); i++)
        for (int j = 0; j < TASK_COUNT(task_names); j++)
            if (i != j && strstr(task_names[i].name, task_names[j].name)) names_ok = 0;
    check(names_ok, "no name contains another");

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

    // --- out of domain: every word of a test-ood question occurs in the training text (questions
    // and the teacher's answers), and the test-ood text is new: math, every sentence a held-out
    // phrasing (checked below); choice, every fact in the inverted order, which no other split has
    for (int f = 0; f < 2; f++) {
        static char *vocab[1 << 16];
        int nv = 0, unseen = 0, inverted_elsewhere = 0, inverted_ood = 1;
        for (int i = 0; i < N_ITEMS; i++) {
            const char *texts[2] = {items[f][TASK_SPLIT_TRAIN][i].question, items[f][TASK_SPLIT_TRAIN][i].answer};
            for (int t = 0; t < 2; t++) {
                char *copy = strdup(texts[t]), *w[256];
                for (char *c = copy; *c; c++)
                    if (strchr(".,?:\n", *c)) *c = ' ';
                int nw = words_of(copy, w, 256);
                for (int k = 0; k < nw && nv < (1 << 16); k++) {
                    int known = 0;
                    for (int v = 0; v < nv && !known; v++) known = !strcmp(vocab[v], w[k]);
                    if (!known) vocab[nv++] = strdup(w[k]);
                }
                free(copy);
            }
        }
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            for (int i = 0; i < N_ITEMS; i++) {
                const char *q = items[f][s][i].question;
                if (f == TASK_CHOICE) {
                    int inverted = strstr(q, ": ") != NULL; // "Ann: taller than Bob."
                    if (s == TASK_SPLIT_TEST_OOD) inverted_ood &= inverted;
                    else inverted_elsewhere += inverted;
                }
                if (s != TASK_SPLIT_TEST_OOD) continue;
                char *copy = strdup(q), *w[256];
                for (char *c = copy; *c; c++)
                    if (strchr(".,?:\n", *c)) *c = ' ';
                int nw = words_of(copy, w, 256);
                for (int k = 0; k < nw; k++) {
                    int known = !strcmp(w[k], "A)") || !strcmp(w[k], "B)") || !strcmp(w[k], "C)") ||
                                !strcmp(w[k], "D)") || !strcmp(w[k], "E)");
                    for (int v = 0; v < nv && !known; v++) known = !strcmp(vocab[v], w[k]);
                    if (!known && unseen++ < 3) printf("  unseen word '%s' in %s\n", w[k], q);
                }
                free(copy);
            }
        check(unseen == 0, "%s: every word of %d test-ood questions occurs in %d training items (%d distinct words)",
              family_names[f], N_ITEMS, N_ITEMS, nv);
        if (f == TASK_CHOICE)
            check(inverted_ood && inverted_elsewhere == 0,
                  "choice: every test-ood fact has the held-out form \"Ann: taller than Bob.\", no other split has it");
        for (int v = 0; v < nv; v++) free(vocab[v]);
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

    // --- the oracle teacher, math: the independent solver agrees with the gold answer, the true
    // steps and every line of the demonstration; the ranges and the split's phrasings hold
    {
        int bad = 0, used[TASK_COUNT(task_objects)] = {0}, kinds[4] = {0}, range_ok = 1, phrasing_ok = 1,
            shape_ok = 1;
        for (int s = 0; s < TASK_NUM_SPLITS; s++)
            for (int i = 0; i < N_ITEMS; i++) {
                const TaskItem *it = &items[TASK_MATH][s][i];
                MathSolution sol;
                char gold[16], final[16];
                int solved = solve_math(it->question, &sol) == 0, first = -1, chained = 0, wrong = -1;
                int truth_ok = solved && sol.steps == it->num_truth;
                for (int k = 0; truth_ok && k < sol.steps; k++)
                    truth_ok = it->truth[k].a == sol.step[k].a && it->truth[k].op == sol.step[k].op &&
                               it->truth[k].b == sol.step[k].b && it->truth[k].c == sol.step[k].c;
                if (solved) {
                    snprintf(gold, sizeof gold, "%ld", sol.final);
                    wrong = math_item_wrong_steps(it, &sol, &first, &chained);
                }
                if (!solved || !truth_ok || wrong != 0 || !chained || strcmp(gold, it->gold) || it->noisy ||
                    !task_final_answer(it->answer, final, sizeof final) || strcmp(final, gold)) {
                    if (bad++ < 3) printf("  bad: %s\n  %s\n", it->question, it->answer);
                    continue;
                }
                range_ok &= sol.range_ok && sol.people == 2 && sol.asked == it->people[0];
                int ood = s == TASK_SPLIT_TEST_OOD, lng = s == TASK_SPLIT_TEST_LONG;
                phrasing_ok &= ood ? sol.in_domain_phrases == 0 : sol.held_out_phrases == 0;
                int distractors = sol.events - sol.steps;
                shape_ok &= distractors >= 1 && distractors <= 2 &&
                            (lng ? sol.steps >= 5 && sol.steps <= 6 : sol.steps >= 2 && sol.steps <= 4);
                for (int k = 0; k < 4; k++) kinds[k] += sol.kinds_seen[k];
                if (s == TASK_SPLIT_TRAIN) used[it->template_id]++;
            }
        check(bad == 0, "math, noise 0: %d items: an independent solver of the question text gives the gold "
              "answer and the true steps; every line of the demonstration is its step, right and chained (%d bad)",
              TASK_NUM_SPLITS * N_ITEMS, bad);
        check(range_ok, "math: 2 people, the first one asked about; starts 2..12, amounts 2..9, every count of every person in 0..20");
        check(shape_ok, "math: 1-2 distractor events; 2-4 steps (test-long 5-6)");
        check(phrasing_ok, "math: test-ood uses only held-out phrasings, the other splits only in-domain ones");
        check(kinds[0] && kinds[1] && kinds[2] && kinds[3],
              "math: the asked person gains (%d), loses (%d), gives (%d) and receives (%d)", kinds[0], kinds[1],
              kinds[2], kinds[3]);
        int distinct = 0;
        for (int t = 0; t < TASK_COUNT(used); t++) distinct += used[t] > 0;
        check(distinct == TASK_COUNT(task_objects), "math: all %d kinds of things used in %d train items", distinct, N_ITEMS);
    }

    // --- phase 0's stories: every count stated and computed right, the same final counts as the
    // solver's; no question and no answer in the teacher's format
    {
        int bad = 0;
        for (int f = 0; f < 2; f++)
            for (int i = 0; i < N_ITEMS; i++) {
                const TaskItem *it = &items[f][TASK_SPLIT_TRAIN][i];
                const char *story = it->story;
                // a story opens with its question, word for word, then tells its worked solution
                size_t qlen = strlen(it->question);
                int asks = story && !strncmp(story, it->question, qlen) && story[qlen] == '\n';
                const char *told = story && asks ? story + qlen : story;
                int ok = story && asks && !strstr(told, "How many") && !strstr(told, "Who is") &&
                         !strstr(story, "####") && !strstr(story, "The answer") && !strstr(told, "So the ");
                if (ok && f == TASK_CHOICE) { // the teacher's walk, then a line finding every rank's letter
                    TaskItem walk = *it;
                    char *copy = strdup(told + 1), *lines[16];
                    int nl = split_lines(copy, lines, 16), nwalk = nl - 4;
                    int order[8], n, rank, no, first;
                    solve_choice(it, order, &n, &rank, &no);
                    walk.answer = strdup(told + 1);
                    if (nwalk > 0) walk.answer[lines[nwalk] - 1 - copy] = '\0'; // the walk's lines alone
                    ok &= nwalk == n - 1 && choice_wrong_steps(&walk, rank, &first) == 0 && first == -1;
                    free(walk.answer);
                    const TaskRelation *r = &task_relations[it->template_id];
                    const int ranks_asked[4] = {0, 1, n - 2, n - 1};
                    for (int q = 0; ok && q < 4; q++) {
                        char opening[64];
                        int olen = snprintf(opening, sizeof opening, "The %s%s is ", q == 1 || q == 2 ? "second " : "",
                                            q < 2 ? r->most : r->least);
                        ok &= !strncmp(lines[nwalk + q], opening, (size_t)olen) &&
                              choice_find_line(it->question, lines[nwalk + q]) == order[ranks_asked[q]];
                    }
                    free(copy);
                }
                if (ok && f == TASK_MATH) {
                    MathSolution sol;
                    char *copy = strdup(story), *lines[16];
                    int nl = split_lines(copy, lines, 16), equations = 0;
                    char starts[64]; // every person's start count, the first person's first
                    snprintf(starts, sizeof starts, "%s starts with %d %s", task_names[it->people[0]].name,
                             it->counts[0], task_objects[it->template_id]);
                    ok &= nl > 1 && !strncmp(lines[1], starts, strlen(starts));
                    for (int l = 2; l < nl - 1; l++) // an event: one or two "A OP B = C", each right
                        for (char *p = lines[l]; (p = strstr(p, " = ")) != NULL; p += 3) {
                            char *start = p;
                            while (start > lines[l] && start[-1] != ':' && strncmp(start - 5, " and ", 5)) start--;
                            char *end = p + 3;
                            while (*end >= '0' && *end <= '9') end++;
                            ok &= task_check_step(start, (size_t)(end - start)) == 1;
                            equations++;
                        }
                    ok &= solve_math(it->question, &sol) == 0 && nl == sol.events + 3 && equations >= sol.events;
                    char final[64];
                    snprintf(final, sizeof final, " %s has %ld %s", task_names[it->name_id].name, sol.final,
                             task_objects[it->template_id]);
                    ok &= nl > 0 && !strncmp(lines[nl - 1], "At the end,", 11) && strstr(lines[nl - 1], final) != NULL;
                    free(copy);
                }
                if (!ok && bad++ < 2) printf("  bad story: %s\n", story ? story : "(none)");
            }
        check(bad == 0, "stories (phase 0's text), both families, %d train items each: the question word for word, "
              "then no answer format and no question; math: every start, a line per event whose arithmetic is right, "
              "the asked person's final count the solver's; choice: the teacher's walk, every line right, then a line "
              "for the most, second most, second least and least person of the solver's order, comparing the options "
              "with that person in turn up to their letter",
              N_ITEMS);
    }

    // --- arithmetic drills: every fact right, and N drills cover every fact of a round
    {
        TaskStep facts[TASK_ARITHMETIC_FACTS];
        int n = task_arithmetic_facts(facts), wrong = 0, seen[TASK_ARITHMETIC_FACTS] = {0}, in_range = 1, pairs = 0;
        long drills = (n + task_drill_per_line[TASK_MATH] - 1) / task_drill_per_line[TASK_MATH];
        for (int k = 0; k < n; k++)
            in_range &= facts[k].a >= -9 && facts[k].a <= 29 && facts[k].b >= 2 && facts[k].b <= 9;
        // every (A, B) of that range appears with both operations: a reasoning error's steps too
        for (int a = -9; a <= 29; a++)
            for (int b = 2; b <= 9; b++)
                for (int k = 0, plus = 0, minus = 0; k < n; k++) {
                    plus += facts[k].a == a && facts[k].b == b && facts[k].op == '+';
                    minus += facts[k].a == a && facts[k].b == b && facts[k].op == '-';
                    if (k == n - 1) pairs += plus == 1 && minus == 1;
                }
        for (long i = 0; i < drills; i++) {
            TaskText t = {0};
            task_drill(TASK_MATH, 3, i, &t);
            char *p = t.data;
            for (char *dot; (dot = strchr(p, '.')) != NULL; p = dot + 1) {
                wrong += task_check_step(p, (size_t)(dot - p + 1)) != 1;
                long a, b, c;
                char op;
                if (task_parse_step(p, (size_t)(dot - p + 1), &a, &op, &b, &c))
                    for (int k = 0; k < n; k++)
                        seen[k] |= facts[k].a == a && facts[k].op == op && facts[k].b == b && facts[k].c == c;
            }
            free(t.data);
        }
        int covered = 0;
        for (int k = 0; k < n; k++) covered += seen[k];
        check(n == 624 && pairs == 39 * 8 && in_range && wrong == 0 && covered == n,
              "drills: %d facts (+ and - of each A in -9..29 and B in 2..9, such as 3 - 8 = -5), every one right, all "
              "covered by the first %ld drills",
              n, drills);
    }

    // --- ordering drills (choice): every fact follows the rule (a <more> fact puts its subject
    // first, a <less> fact its object), the first ceil(F / 8) drills hold each of the F facts
    // once, and the teacher's first walk line of every train item is one of them
    {
        enum { NAMES = TASK_COUNT(task_names), RELS = TASK_COUNT(task_relations) };
        static unsigned char seen[NAMES * NAMES * RELS * 2];
        memset(seen, 0, sizeof seen);
        const long facts = (long)NAMES * (NAMES - 1) * RELS * 2;
        long drills = (facts + task_drill_per_line[TASK_CHOICE] - 1) / task_drill_per_line[TASK_CHOICE];
        long wrong = 0, lines_seen = 0, duplicates = 0, distinct = 0;
        for (long i = 0; i < drills + 3; i++) { // 3 more: lines of the next round
            TaskText t = {0};
            task_drill(TASK_CHOICE, 5, i, &t);
            char *lines[16];
            int nl = split_lines(t.data, lines, 16);
            wrong += nl != task_drill_per_line[TASK_CHOICE];
            for (int l = 0; l < nl; l++) {
                int code = parse_order_fact(lines[l]);
                if (code < 0) {
                    if (wrong++ < 2) printf("  bad drill line: %s\n", lines[l]);
                    continue;
                }
                if (i < drills && lines_seen++ < facts) {
                    duplicates += seen[code];
                    distinct += !seen[code];
                    seen[code] = 1;
                }
            }
            free(t.data);
        }
        long teacher_missing = 0;
        for (int i = 0; i < N_ITEMS; i++) {
            char line[256];
            const char *a = items[TASK_CHOICE][TASK_SPLIT_TRAIN][i].answer;
            size_t len = strcspn(a, "\n");
            snprintf(line, sizeof line, "%.*s", (int)len, a);
            int code = parse_order_fact(line);
            teacher_missing += code < 0 || !seen[code];
        }
        check(wrong == 0 && duplicates == 0 && distinct == facts && teacher_missing == 0,
              "ordering drills: %ld facts (40 names x 39 x 6 relations x 2 wordings), 8 a line, every one ordered by "
              "the rule, each once in the first %ld drills; the teacher's first walk line of %d train items is one of "
              "them", facts, drills, N_ITEMS);
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
        check(distinct == TASK_COUNT(task_relations), "choice: all %d relations used in train", distinct);
    }

    // --- teacher noise 0.3
    for (int f = 0; f < 2; f++) {
        int noisy = 0, consistent = 1, same_question = 1;
        for (int i = 0; i < N_ITEMS; i++) {
            const TaskItem *it = &noisy_items[f][i];
            same_question &= !strcmp(it->question, items[f][TASK_SPLIT_TRAIN][i].question) &&
                             !strcmp(it->gold, items[f][TASK_SPLIT_TRAIN][i].gold);
            int first, chained = 1, wrong = -1, order[8], n, rank, no;
            MathSolution sol;
            if (f == TASK_MATH) {
                if (solve_math(it->question, &sol) == 0) wrong = math_item_wrong_steps(it, &sol, &first, &chained);
            } else {
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
        it.num_truth = 2;
        it.truth[0] = (TaskStep){3, 4, 7, '+'};
        it.truth[1] = (TaskStep){7, 4, 3, '-'};
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
                            "\"gold\": \"3\", \"truth\": \"3 + 4 = 7\\n7 - 4 = 3\", \"noisy\": false, "
                            "\"template\": 0}\n"),
              "JSON line escapes quotes, backslashes and newlines; a math item's true steps, a line each");
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
