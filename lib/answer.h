// lib/answer.h — answer checking: the final answer of a completion, whether it is right,
// and which step went wrong.
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_ANSWER_H
#define SIRT_LIB_ANSWER_H

// =============================================================================================
//
// Every result of the project is an accuracy, so this is the one place that decides what a
// model's completion answered. The rules, and why:
//
// The final answer (answer_extract).
//   - A completion ends at its first "<|endoftext|>", if it has one: text that a sampler let
//     through after the end-of-text token is not part of the answer.
//   - Preferred: the LAST "the answer is" (any case, as whole words: "So the answer is" counts,
//     "the answer isn't" does not), then an optional ':', an optional "option " or "choice ", and
//     an answer (below). The student is trained to end with "The answer is N."; the last one wins
//     because a model that corrects itself ("... Wait, the answer is 9.") commits to its last word.
//   - Otherwise the last "####" followed by an answer: GSM8K's own form (and the teacher's).
//   - An occurrence not followed by an answer ("The answer is therefore 3", "the answer is
//     <<8=8>>8": both are in GSM8K's train set) is passed over for the one before it.
//   - No answer found: the completion is wrong.
//
// What an answer is: a number or a choice letter, written in canonical form.
//   number  [sign] [$] [sign], digits with optional thousands separators (groups of three, as
//           gsm8k_normalize_number of lib/templates.h checks them) and optional decimals; ".5" reads as
//           0.5. A '.' or ',' not followed by a digit ends the sentence, not the number, and
//           units or '%' may follow ("The answer is 18 dollars."). A number glued to a letter or
//           digit ("3x", "12th", "1.2.3") or followed by an operator or '=' ("3 + 5 = 8", "2/3")
//           is not an answer. Canonical: no separators, '+' or '$', no leading zeros, no trailing
//           decimal zeros, no "-0": "$1,080.50" -> "1080.5", "-3.00" -> "-3", ".5" -> "0.5".
//           Two decimal numbers are equal exactly when their canonical texts are: this compares
//           them as exact rationals, with none of the rounding of doubles.
//   letter  A-E, alone ("B"), in parentheses ("(B)") or closed by one ("B)"), in either case;
//           canonical: the capital. Mid-text, a bare letter followed by a word is a word ("a
//           lot", "A person"), not an answer.
//
// Comparing (answer_equal): both sides are read as whole answers (then a lone "b" is B).
// Two answers are equal when their canonical forms are, so a number never equals a letter; two
// texts that are not answers (a gold such as "yes") must be the same once trimmed.
//
// Steps (answer_check_steps). The steps are the non-empty lines (trimmed) before the final
// answer's marker; a completion without an answer is all steps. Each is judged twice:
//   arithmetic_ok  task_check_step: is its closing "A OP B = C" right? (1, 0, or -1: none)
//   on_path        against the true steps (the built-in math task writes them in each item's
//                  "truth" field, one "A OP B = C" a line): is the k-th arithmetic line the k-th
//                  true step, the same operation on the same numbers with the same result (a sum
//                  or product may swap its operands)? (1, 0, or -1: no arithmetic, or no truth.)
//                  Lines without arithmetic are not counted, so chatter does not shift the steps;
//                  a step past the true path's end is off it, and since each true step starts
//                  from the last one's result, every step after a wrong one is off the path too.
//   first_error    the first step with arithmetic_ok 0 or on_path 0 (-1: none).
// Over the whole completion: the arithmetic lines, per operation how many compute right; with
// true steps, how many of those lie in the task's world (task_step_in_world) and compute right;
// and true_path: the arithmetic lines are exactly the true steps. A completion whose final answer is
// right and whose path is true is *verified*; a right answer on another path is right by luck.
// The choice family has no step truth: its steps are orders, not arithmetic.
// =============================================================================================

#define ANSWER_MAX 64       // the longest canonical answer, its NUL included; longer is no answer
#define ANSWER_MAX_STEPS 16 // steps judged one by one (GSM8K has at most 11); later ones are counted

#define ANSWER_OPS "+-*/"  // the operations of "A OP B = C", in the order of op_right/op_total

typedef struct {
    int num_steps;                       // every step line, those beyond ANSWER_MAX_STEPS included
    int arithmetic_steps;                // the lines with "A OP B = C"
    int op_right[4], op_total[4];        // of those, per operation (ANSWER_OPS): right, all
    int world_right, world_total;        // of those, with true steps: task_step_in_world's, right, all
    int true_path;                       // 1: the arithmetic steps are the true steps, all of them
    int arithmetic_ok[ANSWER_MAX_STEPS]; // 1 right, 0 wrong, -1 no "A OP B = C" in the line
    int on_path[ANSWER_MAX_STEPS];       // 1 on the item's true path, 0 off it, -1 unknown
    int first_error;                     // index of the first wrong step (any index), or -1
    TaskStep equations[ANSWER_MAX_STEPS]; // the arithmetic steps as written, the first ones
} StepReport;

// Do two judged paths write the same equations (the same "A OP B = C" lines in the same order)?
// Rejection-sampling fine-tuning (Yuan et al. 2023) counts such paths as one reasoning path.
static int answer_same_equations(const StepReport *x, const StepReport *y) {
    if (x->arithmetic_steps != y->arithmetic_steps) return 0;
    int n = x->arithmetic_steps < ANSWER_MAX_STEPS ? x->arithmetic_steps : ANSWER_MAX_STEPS;
    for (int i = 0; i < n; i++)
        if (x->equations[i].a != y->equations[i].a || x->equations[i].op != y->equations[i].op ||
            x->equations[i].b != y->equations[i].b || x->equations[i].c != y->equations[i].c)
            return 0;
    return 1;
}

static int answer_is_alnum(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
static int answer_upper(int c) { return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c; }

// Does s start with word, ignoring ASCII case?
static int answer_starts_with(const char *s, const char *word) {
    for (; *word; s++, word++)
        if (answer_upper((unsigned char)*s) != answer_upper((unsigned char)*word)) return 0;
    return 1;
}

// Reads a number at s into out (canonical). Returns the end of its text, or NULL.
static const char *answer_scan_number(const char *s, char out[ANSWER_MAX]) {
    const char *p = s;
    int negative = 0, signs = 0; // one sign, before or after a '$': "-5", "-$5", "$-5"
    for (int i = 0; i < 2; i++) {
        if (!signs && (*p == '+' || *p == '-')) {
            negative = *p++ == '-';
            signs = 1;
        }
        if (i == 0 && *p == '$') p++;
    }
    const char *begin = p;
    while (json_is_digit(*p) || (*p == ',' && json_is_digit(p[1]))) p++;
    if (*p == '.' && json_is_digit(p[1]))
        for (p++; json_is_digit(*p); p++) {}
    size_t n = (size_t)(p - begin), bare_point = *begin == '.'; // ".5" is written "0.5"
    // no digits, or too long to be an answer. The "0" that a bare point gains counts, so that
    // a canonical answer always reads back as itself (found by fuzzing: ".7…7" of 61 characters
    // was an answer, its canonical form "0.7…7" of 62 was not).
    if (n == 0 || n + bare_point > ANSWER_MAX - 3) return NULL;
    // glued to a letter or digit, or the start of an expression: not an answer
    if (answer_is_alnum((unsigned char)*p) || *p == '_' || (*p == '.' && json_is_digit(p[1]))) return NULL;
    const char *after = p;
    while (*after == ' ') after++;
    if (*after && strchr("+-*/=^", *after)) return NULL;

    char text[ANSWER_MAX];
    snprintf(text, sizeof text, "%s%.*s", *begin == '.' ? "0" : "", (int)n, begin);
    char *plain = gsm8k_normalize_number(text); // separators checked and removed, as in lib/templates.h
    if (!plain) return NULL;
    const char *digits = plain;
    while (digits[0] == '0' && json_is_digit(digits[1])) digits++; // leading zeros
    size_t len = strlen(digits);
    if (strchr(digits, '.')) { // trailing decimal zeros, and the point when nothing is left
        while (digits[len - 1] == '0') len--;
        if (digits[len - 1] == '.') len--;
    }
    int zero = len == 1 && digits[0] == '0';
    snprintf(out, ANSWER_MAX, "%s%.*s", negative && !zero ? "-" : "", (int)len, digits);
    free(plain);
    return p;
}

// Reads a choice letter at s into out ("B"). whole: s is the entire answer, so a bare letter
// needs no check against a following word. Returns the end of its text, or NULL.
static const char *answer_scan_letter(const char *s, char out[ANSWER_MAX], int whole) {
    const char *p = s;
    int open = *p == '(';
    if (open) p++;
    int letter = answer_upper((unsigned char)*p);
    if (letter < 'A' || letter > 'E' || answer_is_alnum((unsigned char)p[1])) return NULL;
    p++;
    int closed = *p == ')';
    if (open && !closed) return NULL;
    if (closed) p++;
    if (!closed && !whole) { // "The answer is a lot of ..." names no option
        const char *q = p;
        while (*q == ' ') q++;
        if (answer_is_alnum((unsigned char)*q)) return NULL;
    }
    out[0] = (char)letter;
    out[1] = '\0';
    return p;
}

static const char *answer_scan(const char *s, char out[ANSWER_MAX], int whole) {
    const char *end = answer_scan_number(s, out);
    return end ? end : answer_scan_letter(s, out, whole);
}

// The completion up to its first end-of-text marker (a malloc'd copy).
static char *answer_cut(const char *completion) {
    const char *eot = strstr(completion, "<|endoftext|>");
    return json_strndup(completion, eot ? (size_t)(eot - completion) : strlen(completion));
}

// Finds the final answer of text (canonical, into out). Returns the offset where its marker
// ("the answer is", or the run of '#') begins, or -1 when the text has no answer.
static long answer_find(const char *text, char out[ANSWER_MAX]) {
    char got[ANSWER_MAX];
    long found = -1;
    for (const char *p = text; *p; p++) {
        if (!answer_starts_with(p, "the answer is")) continue;
        if ((p > text && answer_is_alnum((unsigned char)p[-1])) || answer_is_alnum((unsigned char)p[13]))
            continue; // not whole words: "bathe answer is", "the answer isn't"
        const char *q = p + 13;
        while (*q == ' ' || *q == '\t') q++;
        if (*q == ':') q++;
        while (*q == ' ' || *q == '\t') q++;
        if (answer_starts_with(q, "option ") || answer_starts_with(q, "choice ")) q += 7;
        if (answer_scan(q, got, 0)) {
            found = (long)(p - text);
            memcpy(out, got, sizeof got);
        }
    }
    if (found >= 0) return found;
    for (const char *p = strstr(text, "####"); p; p = strstr(p + 1, "####")) {
        const char *q = p + 4;
        while (*q == ' ' || *q == '\t') q++;
        if (answer_scan(q, got, 0)) {
            const char *run = p;
            while (run > text && run[-1] == '#') run--;
            found = (long)(run - text);
            memcpy(out, got, sizeof got);
        }
    }
    return found;
}

static void answer_copy_out(const char *answer, char *out, size_t cap) {
    size_t n = strlen(answer);
    if (n >= cap) die("answer: a buffer of %zu bytes cannot hold the answer '%s'", cap, answer);
    memcpy(out, answer, n + 1);
}

// The final answer of a completion, canonical, into out (ANSWER_MAX bytes always suffice).
// Returns 1, or 0 (and out = "") when the completion has none.
int answer_extract(const char *completion, char *out, size_t cap) {
    char *text = answer_cut(completion), got[ANSWER_MAX];
    long at = answer_find(text, got);
    free(text);
    if (at < 0) {
        if (cap) out[0] = '\0';
        return 0;
    }
    answer_copy_out(got, out, cap);
    return 1;
}

// The canonical form of a text that is one answer and nothing else ("1,080", " -3.00 ", "(b)",
// "7."). Returns 1, or 0 when the text is not an answer.
int answer_normalize(const char *text, char *out, size_t cap) {
    char got[ANSWER_MAX];
    while (json_is_space(*text)) text++;
    const char *end = answer_scan(text, got, 1);
    if (!end) return 0;
    if (*end == '.') end++;
    while (json_is_space(*end)) end++;
    if (*end) return 0;
    answer_copy_out(got, out, cap);
    return 1;
}

// Numbers as numbers, letters as letters; see the rules at the top of the section.
int answer_equal(const char *predicted, const char *gold) {
    char a[ANSWER_MAX], b[ANSWER_MAX];
    int is_a = answer_normalize(predicted, a, sizeof a), is_b = answer_normalize(gold, b, sizeof b);
    if (is_a || is_b) return is_a && is_b && strcmp(a, b) == 0;
    char *x = json_trimmed(predicted, strlen(predicted)), *y = json_trimmed(gold, strlen(gold));
    int same = *x && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

// Is the completion's final answer the gold one? 0 when it has no answer.
int answer_is_correct(const char *completion, const char *gold) {
    char got[ANSWER_MAX];
    return answer_extract(completion, got, sizeof got) && answer_equal(got, gold);
}

// Is a parsed step the true one: the same operation on the same numbers with the same result
// (a + b may be written b + a, a * b as b * a)?
static int answer_step_is(long a, char op, long b, long c, const TaskStep *truth) {
    if (op != truth->op || c != truth->c) return 0;
    if (a == truth->a && b == truth->b) return 1;
    return (op == '+' || op == '*') && a == truth->b && b == truth->a;
}

// The steps of a completion, as answer_check_steps sees them: its non-empty lines (trimmed)
// before the final answer's marker (all of its lines when it has no answer), up to its first
// end-of-text marker. Returns their number; *steps gets them (malloc'd copies, in a malloc'd
// array; free with answer_free_steps).
static int answer_split_steps(const char *completion, char ***steps) {
    char *text = answer_cut(completion), got[ANSWER_MAX];
    long at = answer_find(text, got);
    size_t end = at >= 0 ? (size_t)at : strlen(text), pos = 0;
    int count = 0, cap = 0;
    char **out = NULL;
    while (pos < end) {
        const char *line = text + pos, *nl = memchr(line, '\n', end - pos);
        size_t len = nl ? (size_t)(nl - line) : end - pos;
        pos += len + 1;
        while (len && json_is_space(*line)) line++, len--;
        while (len && json_is_space(line[len - 1])) len--;
        if (len == 0) continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 8;
            out = realloc(out, (size_t)cap * sizeof(char *));
            if (!out) die("out of memory");
        }
        out[count++] = json_strndup(line, len);
    }
    free(text);
    *steps = out;
    return count;
}

static void answer_free_steps(char **steps, int count) {
    for (int i = 0; i < count; i++) free(steps[i]);
    free(steps);
}

// Judges steps given as lines (each trimmed here) against the true steps (truth NULL or
// num_truth 0: arithmetic only).
static void answer_check_step_lines(char *const *steps, int count, const TaskStep *truth,
                                    int num_truth, StepReport *out) {
    memset(out, 0, sizeof *out);
    out->first_error = -1;
    for (int s = 0; s < count; s++) {
        const char *line = steps[s];
        size_t len = strlen(line);
        while (len && json_is_space(*line)) line++, len--;
        while (len && json_is_space(line[len - 1])) len--;
        int j = out->num_steps++, ok = task_check_step(line, len), on = -1;
        if (ok >= 0) {
            long a, b, c;
            char op;
            task_parse_step(line, len, &a, &op, &b, &c);
            if (num_truth > 0)
                on = out->arithmetic_steps < num_truth &&
                     answer_step_is(a, op, b, c, &truth[out->arithmetic_steps]);
            int o = (int)(strchr(ANSWER_OPS, op) - ANSWER_OPS);
            out->op_right[o] += ok;
            out->op_total[o]++;
            if (num_truth > 0 && task_step_in_world(a, op, b)) out->world_right += ok, out->world_total++;
            if (out->arithmetic_steps < ANSWER_MAX_STEPS)
                out->equations[out->arithmetic_steps] = (TaskStep){a, b, c, op};
            out->arithmetic_steps++;
        }
        if (j < ANSWER_MAX_STEPS) {
            out->arithmetic_ok[j] = ok;
            out->on_path[j] = on;
        }
        if (out->first_error < 0 && (ok == 0 || on == 0)) out->first_error = j;
    }
    // every true step taken, in order, and nothing else: the path is the true one
    out->true_path = num_truth > 0 && out->first_error < 0 && out->arithmetic_steps == num_truth;
}

// Judges the steps of a completion (answer_split_steps) against the true steps (truth NULL or
// num_truth 0: arithmetic only).
void answer_check_steps(const char *completion, const TaskStep *truth, int num_truth,
                        StepReport *out) {
    char **steps;
    int count = answer_split_steps(completion, &steps);
    answer_check_step_lines(steps, count, truth, num_truth, out);
    answer_free_steps(steps, count);
}

// The true correctness of step j (from 0) of steps judged by answer_check_steps(_lines): the
// path up to and including it follows the true steps, i.e. no step up to j is wrong (an
// arithmetic line that computes wrong or is not the next true step). A line without
// arithmetic is correct when every step before it is.
static int answer_step_truly_correct(const StepReport *r, int j) {
    return r->first_error < 0 || j < r->first_error;
}

// The majority answer among k completions (no-answer samples do not vote; a tie goes to the
// answer seen first). Returns 0 when no sample has an answer.
static int majority_answer(char *const *completions, int k, char *out, size_t cap) {
    char (*answers)[ANSWER_MAX] = xmalloc((size_t)k * ANSWER_MAX);
    int *found = xmalloc(k * sizeof(int)), best = -1, best_votes = 0;
    for (int j = 0; j < k; j++) found[j] = answer_extract(completions[j], answers[j], ANSWER_MAX);
    for (int j = 0; j < k; j++) {
        if (!found[j]) continue;
        int votes = 0;
        for (int m = 0; m < k; m++) votes += found[m] && answer_equal(answers[m], answers[j]);
        if (votes > best_votes) best_votes = votes, best = j;
    }
    if (best >= 0) snprintf(out, cap, "%s", answers[best]);
    free(answers);
    free(found);
    return best >= 0;
}

// ---------------------------------------------------------------------------------------------
// Diagnosis: what a set of completions says about the student, beyond greedy accuracy. Per item,
// its greedy completion and optionally K samples; accumulated over the items:
//   greedy      greedy accuracy;
//   verified    greedy right *and* on the true path (every step the true one: answer_check_steps)
//               — only items with true steps can be verified; right - verified is right by luck;
//   pass@k, maj@k   for k = 1, 2, 4, ... below K and K itself: any of the first k samples right;
//               the majority answer of the first k samples right (majority_answer);
//   arithmetic  of the "A OP B = C" lines in the student's own samples (the greedy completions
//               when K = 0), how many compute right, per operation; and on items with true
//               steps, of the steps in the task's world (operands and right result counts it
//               holds), how many compute right: the arithmetic the task asks for, apart from
//               the out-of-range steps that only follow a reasoning error;
//   samples     how many samples are right, and right on the true path.
#define DIAGNOSIS_MAX_LEVELS 24

typedef struct {
    long n, with_truth;              // items; items with true steps
    long greedy, verified;           // greedy completions right; right on the true path
    long greedy_with_truth;          // greedy right among the items with true steps
    int k, num_levels;               // samples per item; the k of pass@k and maj@k
    int levels[DIAGNOSIS_MAX_LEVELS];
    long pass[DIAGNOSIS_MAX_LEVELS], majority[DIAGNOSIS_MAX_LEVELS];
    long op_right[4], op_total[4];   // arithmetic lines of the samples, per ANSWER_OPS
    long truth_steps;                // of those, on items with true steps
    long world_right, world_total;   // of those, the steps in the task's world: right, all
    long sample_right, sample_verified, samples;
    const char *rerank_by;           // best-of-k by a reward model: "mean" or "min"; NULL: none
    long reranked_right;             // items whose best-of-k sample is right (the caller counts)
} Diagnosis;

static void diagnosis_init(Diagnosis *d, int k) {
    memset(d, 0, sizeof *d);
    d->k = k;
    for (int level = 1; level < k && d->num_levels < DIAGNOSIS_MAX_LEVELS - 1; level *= 2)
        d->levels[d->num_levels++] = level;
    if (k > 0) d->levels[d->num_levels++] = k;
}

// One item's verdict, for eval's per-item output.
typedef struct { int found, correct, verified, majority_correct, pass; char predicted[ANSWER_MAX],
                 majority[ANSWER_MAX]; } ItemVerdict;

// Adds one item: its gold answer, its true steps (num_truth 0: none), its greedy completion
// (NULL: none, then the greedy figures stay 0) and its k samples (samples NULL when k = 0); v,
// when not NULL, gets the item's verdict.
static void diagnosis_add(Diagnosis *d, const char *gold, const TaskStep *truth, int num_truth,
                          const char *greedy, char *const *samples, ItemVerdict *v) {
    ItemVerdict unused;
    if (!v) v = &unused;
    memset(v, 0, sizeof *v);
    StepReport steps;
    d->n++;
    d->with_truth += num_truth > 0;
    if (greedy) {
        v->found = answer_extract(greedy, v->predicted, sizeof v->predicted);
        v->correct = v->found && answer_equal(v->predicted, gold);
        answer_check_steps(greedy, truth, num_truth, &steps);
        v->verified = v->correct && steps.true_path;
        d->greedy += v->correct;
        d->greedy_with_truth += num_truth > 0 && v->correct;
        d->verified += v->verified;
    }
    for (int l = 0; l < d->num_levels; l++) {
        int any = 0;
        for (int j = 0; j < d->levels[l]; j++) any |= answer_is_correct(samples[j], gold);
        char majority[ANSWER_MAX];
        int voted = majority_answer(samples, d->levels[l], majority, sizeof majority);
        d->pass[l] += any;
        d->majority[l] += voted && answer_equal(majority, gold);
        if (d->levels[l] == d->k) {
            v->pass = any;
            v->majority_correct = voted && answer_equal(majority, gold);
            if (voted) snprintf(v->majority, sizeof v->majority, "%s", majority);
        }
    }
    int own = d->k > 0 ? d->k : 1; // the student's own samples: the greedy one when k = 0
    for (int j = 0; j < own; j++) {
        const char *text = d->k > 0 ? samples[j] : greedy;
        if (d->k > 0) answer_check_steps(text, truth, num_truth, &steps);
        int right = answer_is_correct(text, gold);
        d->samples++;
        d->sample_right += right;
        d->sample_verified += right && steps.true_path;
        for (int o = 0; o < 4; o++) {
            d->op_right[o] += steps.op_right[o];
            d->op_total[o] += steps.op_total[o];
        }
        if (num_truth > 0) d->truth_steps += steps.arithmetic_steps;
        d->world_right += steps.world_right;
        d->world_total += steps.world_total;
    }
}

// The share a/b in percent, or -1 when b is 0 (printed as "n/a", stored as null).
static double diagnosis_percent(long a, long b) { return b > 0 ? 100.0 * a / b : -1; }

// Right by luck: of the right greedy answers on items with true steps, the share off the true path.
static double diagnosis_luck(const Diagnosis *d) {
    return diagnosis_percent(d->greedy_with_truth - d->verified, d->greedy_with_truth);
}

// The diagnosis as one JSON object.
static void diagnosis_write_json(FILE *f, const Diagnosis *d) {
    double values[3] = {diagnosis_percent(d->greedy, d->n),
                        diagnosis_percent(d->verified, d->with_truth), diagnosis_luck(d)};
    const char *names[3] = {"greedy", "verified", "right_by_luck"};
    fprintf(f, "{\"items\": %ld, \"samples_per_item\": %d", d->n, d->k);
    for (int i = 0; i < 3; i++) {
        if (values[i] < 0) fprintf(f, ", \"%s\": null", names[i]);
        else fprintf(f, ", \"%s\": %.2f", names[i], values[i]);
    }
    for (int l = 0; l < d->num_levels; l++)
        fprintf(f, ", \"pass@%d\": %.2f, \"maj@%d\": %.2f", d->levels[l],
                diagnosis_percent(d->pass[l], d->n), d->levels[l], diagnosis_percent(d->majority[l], d->n));
    if (d->rerank_by)
        fprintf(f, ", \"best_of_%d\": %.2f, \"best_of_k_by\": \"%s\"", d->k,
                diagnosis_percent(d->reranked_right, d->n), d->rerank_by);
    fputs(", \"arithmetic\": {", f);
    for (int o = 0, first = 1; o < 4; o++) {
        if (!d->op_total[o]) continue;
        fprintf(f, "%s\"%c\": {\"right\": %ld, \"steps\": %ld}", first ? "" : ", ", ANSWER_OPS[o],
                d->op_right[o], d->op_total[o]);
        first = 0;
    }
    fputs("}", f);
    if (d->world_total)
        fprintf(f, ", \"arithmetic_in_world\": {\"right\": %ld, \"steps\": %ld, \"of_steps\": %ld}",
                d->world_right, d->world_total, d->truth_steps);
    fputs("}", f);
}

#endif // SIRT_LIB_ANSWER_H
