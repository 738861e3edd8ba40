// lib/reproduce.h — `./sirt reproduce`, and `./sirt` with no arguments: the whole method on the
// built-in task, run as a user would run it, one command after the other.
// Part of sirt (one translation unit): sirt.c includes this file after the commands it runs
// (section 11). It reaches the model only through those commands and score_file (section 7).

#ifndef SIRT_LIB_REPRODUCE_H
#define SIRT_LIB_REPRODUCE_H

// =============================================================================================
// The whole method on the built-in task, from nothing: generate the data → train the tokenizer →
// phase 1 (SFT on the teacher's demonstrations) → evaluate → phase 2 (refine) → evaluate. It
// writes runs/NAME/ (data, tokenizer, checkpoints, logs, pairs, results.json, results.svg) and
// prints the table of the paper: rows teacher, SFT, SFT + self-refine; columns the in-domain
// test, test-ood and test-long splits of each task family, with 95% intervals.
// Every step is one of sirt.c's commands, run with the arguments it would get on a terminal.
// With --seeds S the whole pipeline runs S times (seeds s, s+1, ...: new data, new tokenizer,
// new models) and the summary gives mean ± sd over seeds and, for every refined row, the gain
// over its SFT row with a paired bootstrap 95% interval. --ablations adds the rows of the
// paper's analyses: the other pair rule, DPO with the NLL term (RPO), and phase 1 on 50% and
// 25% of the demonstrations, each with and without phase 2. --task math|choice runs one family.
// --arch llama makes the student Llama-shaped; --init MODEL --tokenizer TOK starts phase 1 from a
// pretrained checkpoint and its tokenizer instead of phase 0's base (phase 0 is then skipped).
// --resume keeps each row that an earlier run of the same directory finished with the same
// arguments (its KEY.done stamp, run_row_command), so a run cut off, or --ablations after the
// main rows, trains only what is missing; the evaluation always runs again.
// --method sipf|all puts SIPF's loop (`./sirt sipf`, section 10) and its outcome-only variant
// beside (all) or instead of (sipf) SIRT's phase-2 rows, with their diagnostics: the step labels
// against the true steps by k, the last PRM on valid, best-of-K by it (--method sirt, the
// default, is the rows above alone).
// =============================================================================================

typedef int (*CommandFn)(int argc, char **argv);

// Collects the NULL-terminated arguments that follow `first` into args (at most 64); returns
// how many.
static int collect_args(char **args, const char *first, va_list ap) {
    int n = 0;
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        if (n == 64) die("too many arguments");
        args[n++] = (char *)a;
    }
    return n;
}

// Runs a command with a NULL-terminated list of arguments (after the command's name).
static void run_command(CommandFn fn, const char *first, ...) {
    char *args[64];
    va_list ap;
    va_start(ap, first);
    int n = collect_args(args, first, ap);
    va_end(ap);
    if (fn(n, args) != 0) die("a step of the reproduction failed");
}

// A row's command (its phase 1 or phase 2), run as run_command does, leaving a stamp once it
// has succeeded: the file `stamp` (DIR/KEY.done) holds the thread count and the command's
// arguments, one a line, then, for a row built on another (a phase-2 row on its SFT row), that
// row's stamp, `after` (so a row whose SFT model was trained again is never kept). With --resume
// (resume = 1) a row whose stamp holds exactly what it would hold now is not run again: its
// files are that run's, since every command gives the same bits for the same arguments and
// thread count (--resume trusts that the program is the same build). The stamp is removed
// before the command runs, so that a run cut off halfway never leaves an earlier stamp beside
// half-rewritten files.
static void run_row_command(const char *stamp, const char *after, int resume, CommandFn fn,
                            const char *first, ...) {
    char *args[64];
    va_list ap;
    va_start(ap, first);
    int n = collect_args(args, first, ap);
    va_end(ap);
    size_t after_bytes = 0;
    char *after_text = after ? (char *)read_whole_file(after, &after_bytes) : NULL;
    if (after && !after_text) die("%s: not there, though its row has run", after);
    size_t cap = 64 + strlen(after ? after : "") + after_bytes;
    for (int i = 0; i < n; i++) cap += strlen(args[i]) + 1;
    char *text = xmalloc(cap);
    size_t len = (size_t)snprintf(text, cap, "threads %d\n", num_threads());
    for (int i = 0; i < n; i++) len += (size_t)snprintf(text + len, cap - len, "%s\n", args[i]);
    if (after) {
        len += (size_t)snprintf(text + len, cap - len, "after %s:\n", after);
        memcpy(text + len, after_text, after_bytes);
        len += after_bytes;
        free(after_text);
    }
    if (resume) {
        size_t bytes;
        char *kept = (char *)read_whole_file(stamp, &bytes);
        int same = kept && bytes == len && !memcmp(kept, text, len);
        free(kept);
        if (same) {
            printf("kept from an earlier run: %s records these arguments (--resume)\n", stamp);
            free(text);
            return;
        }
        printf("%s: %s; running it\n", stamp, kept ? "other arguments" : "not there");
    }
    if (remove(stamp) != 0 && errno != ENOENT) die("cannot remove %s: %s", stamp, strerror(errno));
    if (fn(n, args) != 0) die("a step of the reproduction failed");
    SafeFile sf;
    safe_open(&sf, stamp);
    safe_write(&sf, text, len);
    safe_commit(&sf);
    free(text);
}

// The byte offset of the start of line `line` (from 0) of data, or bytes when it has fewer lines.
static size_t line_offset(const char *data, size_t bytes, long line) {
    size_t at = 0;
    for (long k = 0; at < bytes && k < line; k++) {
        const char *nl = memchr(data + at, '\n', bytes - at);
        at = nl ? (size_t)(nl - data) + 1 : bytes;
    }
    return at;
}

// Writes lines skip .. skip+lines-1 of each of n files (to the end of a file when lines < 0)
// into out.
static void join_heads(const char *out, const char *const *paths, int n, long skip, long lines) {
    SafeFile sf;
    safe_open(&sf, out);
    for (int i = 0; i < n; i++) {
        size_t bytes;
        char *data = (char *)read_whole_file(paths[i], &bytes);
        if (!data) die("cannot open %s", paths[i]);
        size_t begin = line_offset(data, bytes, skip);
        size_t end = lines < 0 ? bytes : begin + line_offset(data + begin, bytes - begin, lines);
        safe_write(&sf, data + begin, end - begin);
        free(data);
    }
    safe_commit(&sf);
}

// The tokenizer's training text: every training item as the student will see it, rendered with
// the chain-of-thought and the plain templates, so the templates' words become single tokens;
// then, when stories is not NULL, phase 0's stories.
static void write_rendered_text(const char *out, const char *data, const char *stories) {
    SafeFile sf;
    safe_open(&sf, out);
    // passes: the data with the cot template, with the plain one, then the stories ({"text"}
    // lines, which no template changes)
    for (int kind = TEMPLATE_COT; kind <= TEMPLATE_PLAIN + (stories != NULL); kind++) {
        TemplateOptions template = {(TemplateKind)kind, 0, 0};
        Example *items;
        int n;
        examples_load(kind <= TEMPLATE_PLAIN ? data : stories, &template, &items, &n);
        for (int i = 0; i < n; i++) fprintf(sf.file, "%s%s\n", items[i].prompt, items[i].completion);
        examples_free(items, n);
    }
    safe_commit(&sf);
}

// Everything the reproduction's flags choose. The defaults were chosen on `valid` (README).
typedef struct {
    const char *name;
    long seed;
    int seeds, quick, ablations;
    int resume;           // --resume: rows whose stamp matches are kept (run_row_command)
    const char *task;     // math, choice or both: the families trained on and evaluated
    int n_train;          // demonstrations per family
    int epochs;           // phase-1 epochs
    const char *config;   // the student: L,NH,C,maxT,V
    const char *vocab;    // BPE tokens
    const char *sft_lr;   // phase 1's learning rate from the base
    const char *scratch_lr; // ... and from random weights (--base-stories 0)
    int n_refine;         // questions per family the student answers in each round of phase 2
    const char *samples, *refine_lr, *beta, *refine_epochs, *pairs, *rpo_alpha;
    int rounds;           // phase 2's rounds (and the control's)
    const char *ref;      // phase 2's reference: initial (phase 1's model) or previous (the last round's)
    const char *max_pairs; // pairs per question and rule
    const char *rft_lr;   // the control's (refine --rft) learning rate
    const char *rft_epochs; // ... and its passes over a round's examples
    int n_valid, n_test;  // items per family: valid; each test split
    const char *max_new;  // generation budget for sampling and evaluation
    int diagnose_k;       // samples per valid item for the diagnosis (pass@k, maj@k, ...)
    const char *plain_share; // phase 1: the share of demonstrations with the plain template
    int n_base;           // phase 0: stories per family (0: no phase 0, phase 1 from random weights)
    int base_epochs;
    const char *base_lr;
    long base_seed;       // the base's data and weights: one base for every seed of the run
    int base_candidates;  // phase 0: bases tried (seeds base_seed ...), the lowest valid loss kept
    int base_trial_steps; // ... after this many steps each
    int arch;             // the student's shape: ARCH_GPT2 or ARCH_LLAMA (ARCH_NAMES)
    const char *init, *tokenizer; // --init: phase 1 from this checkpoint and tokenizer, no phase 0
    int method;           // the phase-2 rows: REPRO_SIRT, REPRO_SIPF or REPRO_ALL (REPRO_METHOD_NAMES)
    int n_sipf;           // questions per family that the SIPF rows answer in each round
    const char *sipf_k;   // SIPF's continuations per step: a list, the largest simulated (sipf -k)
    const char *sipf_prm_lr; // SIPF's PRM learning rate
    int sipf_prm_epochs;     // SIPF's PRM passes over D(r) (sipf --prm-epochs)
    int sipf_reward_min;     // SIPF's path reward, for its pairs and best-of-K: 0 mean, 1 min (RERANK_NAMES)
} ReproSettings;

// --method: today's SIRT rows (SFT, self-refine, RFT), SIPF's (SIPF, SIPF outcome-only), or both.
enum { REPRO_SIRT, REPRO_SIPF, REPRO_ALL };
static const char *const REPRO_METHOD_NAMES[] = {"sirt", "sipf", "all", NULL};

static const ReproSettings REPRO_DEFAULTS = {
    .name = "default", .seed = 1, .seeds = 1, .task = "math", .n_train = 6000, .epochs = 2,
    .config = "4,4,128,256,1024", .vocab = "1024", .sft_lr = "1e-3", .scratch_lr = "3e-3", .n_refine = 400,
    .samples = "8", .refine_lr = "1e-5", .beta = "0.1", .refine_epochs = "1",
    .pairs = "correct-vs-incorrect", .rpo_alpha = "1", .rounds = 3, .ref = "previous", .max_pairs = "8",
    .rft_lr = "1e-4", .rft_epochs = "2", .n_valid = 200, .n_test = 1000,
    .max_new = "160", .diagnose_k = 16, .plain_share = "0.25", .n_base = 24000, .base_epochs = 2,
    .base_lr = "3e-3", .base_seed = 1000, .base_candidates = 1, .base_trial_steps = 600, .arch = ARCH_GPT2, .method = REPRO_SIRT, .n_sipf = 100,
    .sipf_k = "1,2,4", .sipf_prm_lr = "3e-4",
    .sipf_prm_epochs = 16, .sipf_reward_min = 1};

#define REPRO_FAMILIES 2
#define REPRO_SPLITS 3
#define REPRO_COLUMNS (REPRO_FAMILIES * REPRO_SPLITS)
#define REPRO_MAX_ROWS 12
static const char *const REPRO_SPLIT_NAMES[REPRO_SPLITS] = {"test", "test-ood", "test-long"};

// The families of --task: how many, and the k-th (columns are family-major: column c is split
// c % REPRO_SPLITS of family c / REPRO_SPLITS).
static int repro_num_families(const ReproSettings *rs) { return strcmp(rs->task, "both") ? 1 : 2; }
static const char *repro_family(const ReproSettings *rs, int k) {
    return strcmp(rs->task, "both") ? rs->task : task_family_names[k];
}
static int repro_columns(const ReproSettings *rs) { return repro_num_families(rs) * REPRO_SPLITS; }

// Items skip .. skip+lines-1 (to the end: lines = -1) of split `split` of every family, into out.
static void join_families(const ReproSettings *rs, const char *dir, const char *split,
                          const char *out, long skip, long lines) {
    char paths[REPRO_FAMILIES][1200];
    const char *list[REPRO_FAMILIES];
    for (int k = 0; k < repro_num_families(rs); k++) {
        snprintf(paths[k], sizeof paths[k], "%s/%s_%s.jsonl", dir, repro_family(rs, k), split);
        list[k] = paths[k];
    }
    join_heads(out, list, repro_num_families(rs), skip, lines);
}

// A row of the table. Every row but the teacher's is a student: phase 1 on a share of the
// demonstrations and, for a phase-2 row, one `refine` with a pair rule and an RPO weight.
typedef struct {
    char label[64];
    char key[32];          // the row's files in the run directory: KEY.bin, KEY_metrics.jsonl
    int demos_percent;     // share of the demonstrations phase 1 trains on (0: the teacher)
    const char *pairs;     // phase 2's pair rule, "rft" for the control, "sipf" or "sipf-outcome" for
                           // SIPF's loop (repro_is_sipf); NULL for the teacher and SFT rows
    const char *rpo_alpha;
    int baseline;          // the SFT row a refined row is compared with (-1: none)
} ReproRow;

static int repro_add_row(ReproRow *rows, int n, const char *label, const char *key, int percent,
                         const char *pairs, const char *rpo_alpha, int baseline) {
    ReproRow *r = &rows[n];
    snprintf(r->label, sizeof r->label, "%s", label);
    snprintf(r->key, sizeof r->key, "%s", key);
    r->demos_percent = percent;
    r->pairs = pairs;
    r->rpo_alpha = rpo_alpha;
    r->baseline = baseline;
    return n + 1;
}

// Whether a row is one of SIPF's (its phase 2 is `./sirt sipf`).
static int repro_is_sipf(const ReproRow *row) { return row->pairs && !strncmp(row->pairs, "sipf", 4); }

// The rows: teacher, SFT, then by --method SFT + self-refine and SFT + RFT (sirt), SFT + SIPF
// and its outcome-only variant (sipf), or all four (all); with --ablations (sirt or all) also
// the other pair rule, the other loss (DPO ↔ DPO+NLL), and phase 1 on 50% and 25% of the
// demonstrations.
static int repro_rows(const ReproSettings *rs, ReproRow *rows) {
    int n = 0;
    n = repro_add_row(rows, n, "teacher", "teacher", 0, NULL, NULL, -1);
    n = repro_add_row(rows, n, "SFT", "sft", 100, NULL, NULL, -1);
    if (rs->method != REPRO_SIPF) {
        n = repro_add_row(rows, n, "SFT + self-refine", "refined", 100, rs->pairs, rs->rpo_alpha, 1);
        n = repro_add_row(rows, n, "SFT + RFT (control)", "rft", 100, "rft", NULL, 1);
    }
    if (rs->method != REPRO_SIRT) {
        n = repro_add_row(rows, n, "SFT + SIPF", "sipf", 100, "sipf", NULL, 1);
        n = repro_add_row(rows, n, "SFT + SIPF, outcome-only", "sipf_outcome", 100, "sipf-outcome", NULL, 1);
    }
    if (!rs->ablations) return n;
    int cvp = !strcmp(rs->pairs, "cot-vs-plain"), rpo = strcmp(rs->rpo_alpha, "0") != 0;
    const char *other = cvp ? "correct-vs-incorrect" : "cot-vs-plain";
    char label[64];
    snprintf(label, sizeof label, "  refine, %s", other);
    n = repro_add_row(rows, n, label, cvp ? "refined_cvi" : "refined_cvp", 100, other, rs->rpo_alpha, 1);
    n = repro_add_row(rows, n, rpo ? "  refine, DPO (no NLL)" : "  refine, DPO+NLL (RPO)",
                      rpo ? "refined_dpo" : "refined_rpo", 100, rs->pairs, rpo ? "0" : "1", 1);
    int percents[2] = {50, 25};
    for (int p = 0; p < 2; p++) {
        char key[32];
        snprintf(label, sizeof label, "SFT, %d%% of demos", percents[p]);
        snprintf(key, sizeof key, "sft_d%d", percents[p]);
        int sft_row = n;
        n = repro_add_row(rows, n, label, key, percents[p], NULL, NULL, -1);
        snprintf(label, sizeof label, "  + self-refine (%d%% of demos)", percents[p]);
        snprintf(key, sizeof key, "refined_d%d", percents[p]);
        n = repro_add_row(rows, n, label, key, percents[p], rs->pairs, rs->rpo_alpha, sft_row);
    }
    return n;
}

// Phase 0: the base student, our stand-in for the paper's pretrained model. The paper starts from
// models that already read and compute; ours would start from random weights, and a few thousand
// demonstrations do not teach a random network to compute (README). So phase 0 trains the student
// as a language model (loss on every token) on stories of the task's world — each problem told
// with every count or order stated ("Tom gives 3 apples to Ann: Tom has 7 - 3 = 4 and Ann has
// 5 + 3 = 8."; lib/task.h), never a question, never the teacher's answer format — and on each family's
// drills, half as many as its stories (lib/task.h): math's every sum and difference it needs,
// choice's ordering rule on every pair of names ("Ann is shorter than Bob, so from tallest to
// shortest: Bob, Ann."), which stories alone taught some bases and not others. The tokenizer is
// trained on that text and the rendered demonstrations. One base serves every seed (as the
// paper's seeds share one pretrained model): its data come from --base-seed, not --seed, and it
// is kept in runs/base/KEY/ (KEY: a hash of every setting that shapes it) and reused when
// settings.txt, written last, is there: a later run with the same settings starts at phase 1.
// The stories are train-owned problems (lib/task.h), so no valid or test question is among them.
// The version of phase 0's text and training: change it whenever lib/task.h changes the
// stories, the drills or the demonstrations, or sft the way it trains (such as packed rows), so
// that no base built another way is reused.
#define REPRO_BASE_DATA "task v2: stories open with the question, then starts and events told again; drills of 16 over A in -9..29; packed rows"
// ... and of the choice family's, added to the settings only when phase 0 reads choice stories
// (so that a math base keeps its key when only the choice family changes)
#define REPRO_BASE_CHOICE_DATA "choice v6: facts told in a connected order, walked in the question's order; options written letter then name (A Carl); each rank's letter found by comparing each option with its person in turn; stories open with the question and end with that line for every rank; ordering drills, 8 a line\n"

// Phase 0's training run: sft on the stories (and drills) from random weights, as a language model.
// With valid (candidates, below) it also measures the loss on valid every trial steps, and with
// stop_after it stops there (to be continued with --resume: the same bits as a run never stopped).
static void run_base_sft(const ReproSettings *rs, const char *tokfile, const char *stories, const char *eptxt,
                         long seed, const char *valid, int trial, int resume, const char *log, const char *out) {
    char seedtxt[32], trialtxt[32];
    snprintf(seedtxt, sizeof seedtxt, "%ld", seed);
    snprintf(trialtxt, sizeof trialtxt, "%d", trial);
    char *args[40] = {"--config", (char *)rs->config, "--arch", (char *)ARCH_NAMES[rs->arch], "--tokenizer",
                      (char *)tokfile, "--data", (char *)stories, "--epochs", (char *)eptxt, "--batch", "16",
                      "--seq", "256", "--lr", (char *)rs->base_lr, "--warmup", "20", "--seed", seedtxt,
                      "--log", (char *)log, "--out", (char *)out};
    int n = 24;
    if (valid) {
        args[n++] = "--valid", args[n++] = (char *)valid, args[n++] = "--eval-every", args[n++] = trialtxt;
        if (resume) args[n++] = "--resume";
        else args[n++] = "--stop-after", args[n++] = trialtxt;
    }
    if (cmd_sft(n, args) != 0) die("a step of the reproduction failed");
}

// Phase 0's candidates (--base-candidates N > 1; off by default). A restart rule for unlucky
// initialisations: on the choice family it keeps a base that learned to copy the question's facts,
// but not the rarer kind that also orders them (README, session 17). Phase 0 trains N bases, seeds
// base-seed, base-seed + 1, ..., for their first
// --base-trial-steps steps, measures each one's loss on the stories of valid questions (settings
// are chosen on valid), and continues the lowest to the end with sft --resume. candidates.txt keeps
// every candidate's loss; the others' checkpoints are deleted, their metrics kept.
static void repro_base_candidates(const ReproSettings *rs, const char *dir, const char *tokfile,
                                  const char *stories, const char *eptxt, const char *metrics,
                                  const char *base_model) {
    char valid[1200], ntxt[32], seedtxt[32], paths[REPRO_FAMILIES][1200];
    const char *files[REPRO_FAMILIES];
    snprintf(ntxt, sizeof ntxt, "%d", rs->n_valid);
    snprintf(seedtxt, sizeof seedtxt, "%ld", rs->base_seed);
    for (int f = 0; f < repro_num_families(rs); f++) {
        snprintf(paths[f], sizeof paths[f], "%s/%s_valid_stories.jsonl", dir, repro_family(rs, f));
        run_command(cmd_data, "--task", repro_family(rs, f), "--split", "valid", "--n", ntxt, "--seed", seedtxt,
                    "--stories", "--out", paths[f], NULL);
        files[f] = paths[f];
    }
    snprintf(valid, sizeof valid, "%s/valid_stories.jsonl", dir);
    join_heads(valid, files, repro_num_families(rs), 0, -1);
    char out[1200], log[1200], state[1300], line[160], report[64 * 160] = "";
    int chosen = 0;
    float chosen_loss = INFINITY;
    for (int c = 0; c < rs->base_candidates; c++) {
        snprintf(out, sizeof out, "%s/candidate%d.bin", dir, c);
        snprintf(log, sizeof log, "%s/candidate%d_metrics.jsonl", dir, c);
        printf("phase 0: candidate %d of %d (seed %ld), its first %d steps\n", c + 1, rs->base_candidates,
               rs->base_seed + c, rs->base_trial_steps);
        run_base_sft(rs, tokfile, stories, eptxt, rs->base_seed + c, valid, rs->base_trial_steps, 0, log, out);
        float loss = checkpoint_best_valid_loss(out);
        snprintf(line, sizeof line, "candidate %d seed %ld: validation loss %.4f at step %d\n", c, rs->base_seed + c,
                 loss, rs->base_trial_steps);
        strcat(report, line);
        if (loss < chosen_loss) chosen_loss = loss, chosen = c;
    }
    snprintf(line, sizeof line, "kept candidate %d (seed %ld), the lowest\n", chosen, rs->base_seed + chosen);
    strcat(report, line);
    printf("phase 0 candidates (loss on %s):\n%s", valid, report);
    snprintf(out, sizeof out, "%s/candidates.txt", dir);
    SafeFile sf;
    safe_open(&sf, out);
    fputs(report, sf.file);
    safe_commit(&sf);
    for (int c = 0; c < rs->base_candidates; c++) {
        snprintf(out, sizeof out, "%s/candidate%d.bin", dir, c);
        snprintf(state, sizeof state, "%s.state", out);
        if (c == chosen) continue;
        remove(out), remove(state);
        snprintf(state, sizeof state, "%s/candidate%d.best.bin", dir, c);
        remove(state);
    }
    snprintf(out, sizeof out, "%s/candidate%d.bin", dir, chosen);
    snprintf(log, sizeof log, "%s/candidate%d_metrics.jsonl", dir, chosen);
    run_base_sft(rs, tokfile, stories, eptxt, rs->base_seed + chosen, valid, rs->base_trial_steps, 1, log, out);
    // the chosen candidate becomes the base: its weights, state and metrics take phase 0's names
    snprintf(state, sizeof state, "%s.state", out);
    char base_state[1300];
    snprintf(base_state, sizeof base_state, "%s.state", base_model);
    if (rename(out, base_model) || rename(state, base_state) || rename(log, metrics))
        die("phase 0: cannot rename candidate %d's files to the base's: %s", chosen, strerror(errno));
    snprintf(state, sizeof state, "%s/candidate%d.best.bin", dir, chosen);
    remove(state);
}

static void repro_base(const ReproSettings *rs, char *tokfile, char *base_model, size_t cap) {
    char settings[1024], dir[64], path[1200], ntxt[32], seedtxt[32], eptxt[32], candidates[160] = "";
    if (rs->base_candidates > 1) // (a base of one candidate is trained as before candidates existed: same key)
        snprintf(candidates, sizeof candidates, "candidates %d, each %d steps, the lowest loss on %d valid stories per family\n",
                 rs->base_candidates, rs->base_trial_steps, rs->n_valid);
    snprintf(settings, sizeof settings, "data %s\n%stask %s\narch %s\nconfig %s\nvocab %s\nstories per family %d\n"
             "demonstrations per family (tokenizer) %d\nepochs %d\nlr %s\nseed %ld\n%s",
             REPRO_BASE_DATA, strcmp(rs->task, "math") ? REPRO_BASE_CHOICE_DATA : "", rs->task,
             ARCH_NAMES[rs->arch], rs->config, rs->vocab, rs->n_base, rs->n_train, rs->base_epochs, rs->base_lr, rs->base_seed,
             candidates);
    snprintf(dir, sizeof dir, "runs/base/%016llx", (unsigned long long)hash_text(settings));
    snprintf(tokfile, cap, "%s/tokenizer.bin", dir);
    snprintf(base_model, cap, "%s/base.bin", dir);
    snprintf(path, sizeof path, "%s/settings.txt", dir);
    size_t bytes;
    char *kept = (char *)read_whole_file(path, &bytes);
    if (kept && bytes == strlen(settings) && !memcmp(kept, settings, bytes)) {
        printf("== 0. phase 0: the base student, kept in %s/ (its settings.txt says how it was made)\n", dir);
        free(kept);
        return;
    }
    free(kept);
    double start = now_seconds();
    printf("== 0. phase 0: the base student in %s/ (built once for these settings, then reused)\n", dir);
    mkdir_p(dir);
    snprintf(seedtxt, sizeof seedtxt, "%ld", rs->base_seed);
    char stories[1200], demos[1200], text[1200];
    const char *story_files[2 * REPRO_FAMILIES], *demo_files[REPRO_FAMILIES];
    char story_paths[REPRO_FAMILIES][1200], demo_paths[REPRO_FAMILIES][1200];
    for (int f = 0; f < repro_num_families(rs); f++) {
        snprintf(story_paths[f], sizeof story_paths[f], "%s/%s_stories.jsonl", dir, repro_family(rs, f));
        snprintf(demo_paths[f], sizeof demo_paths[f], "%s/%s_train.jsonl", dir, repro_family(rs, f));
        snprintf(ntxt, sizeof ntxt, "%d", rs->n_base);
        run_command(cmd_data, "--task", repro_family(rs, f), "--split", "train", "--n", ntxt, "--seed", seedtxt,
                    "--stories", "--out", story_paths[f], NULL);
        snprintf(ntxt, sizeof ntxt, "%d", rs->n_train);
        run_command(cmd_data, "--task", repro_family(rs, f), "--split", "train", "--n", ntxt, "--seed", seedtxt,
                    "--out", demo_paths[f], NULL);
        story_files[f] = story_paths[f];
        demo_files[f] = demo_paths[f];
    }
    int n_files = repro_num_families(rs);
    char drill_paths[REPRO_FAMILIES][1200];
    for (int f = 0; f < repro_num_families(rs); f++) { // each family's drills, half as many as its stories
        snprintf(drill_paths[f], sizeof drill_paths[f], "%s/%s_drills.jsonl", dir, repro_family(rs, f));
        snprintf(ntxt, sizeof ntxt, "%d", rs->n_base / 2);
        run_command(cmd_data, "--task", repro_family(rs, f), "--drills", "--n", ntxt, "--seed", seedtxt, "--out",
                    drill_paths[f], NULL);
        story_files[n_files++] = drill_paths[f];
    }
    snprintf(stories, sizeof stories, "%s/stories.jsonl", dir);
    join_heads(stories, story_files, n_files, 0, -1);
    snprintf(demos, sizeof demos, "%s/train.jsonl", dir);
    join_heads(demos, demo_files, repro_num_families(rs), 0, -1);
    // the tokenizer's text: the demonstrations rendered with both templates, and the stories
    snprintf(text, sizeof text, "%s/tokenizer_text.txt", dir);
    write_rendered_text(text, demos, stories);
    run_command(cmd_tokenizer, "--train", text, "--vocab", rs->vocab, "--split-digits", "--out", tokfile, NULL);
    snprintf(eptxt, sizeof eptxt, "%d", rs->base_epochs);
    char metrics[1200];
    snprintf(metrics, sizeof metrics, "%s/base_metrics.jsonl", dir);
    if (rs->base_candidates == 1) run_base_sft(rs, tokfile, stories, eptxt, rs->base_seed, NULL, 0, 0, metrics, base_model);
    else repro_base_candidates(rs, dir, tokfile, stories, eptxt, metrics, base_model);
    SafeFile sf;
    snprintf(path, sizeof path, "%s/settings.txt", dir);
    safe_open(&sf, path);
    fputs(settings, sf.file);
    safe_commit(&sf);
    printf("phase 0 done in %.0fs\n", now_seconds() - start);
}

// Whether two files hold the same bytes (a round's checkpoint and the one refine kept).
static int same_file_bytes(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = read_whole_file(a, &na), *y = read_whole_file(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

// What the reproduction measures of a SIPF row beyond accuracy, for one seed: its hard step
// labels against the true steps, summed over the rounds that labelled steps (sipf --keep's
// rounds.jsonl: each k of --sipf-k, or the outcome labels, k = 0), and the last round's PRM on
// valid: its step predictions (probability >= 0.5) on the kept model's samples against the true
// steps. Best-of-K by that PRM is in the row's Diagnosis (score_file).
typedef struct {
    int rounds;                              // rounds whose labels are counted
    int num_levels, k[MAX_K_LEVELS];         // the k of each level; k = 0: the outcome labels
    LabelCounts labels[MAX_K_LEVELS];        // hard labels vs the true steps, per level
    int prm_round;                           // the PRM's round (0: no PRM was trained)
    LabelCounts prm_vs_truth[REPRO_FAMILIES]; // its steps on valid vs the true steps, per family
} ReproSipf;

// The counts {"tp", "fp", "fn", "tn", ...} of a JSON object field (line `line` of path).
static LabelCounts repro_json_counts(const JsonField *f, const char *path, int line) {
    JsonObject obj;
    char err[256];
    LabelCounts c = {0};
    if (!f || f->type != JSON_OBJECT || json_parse_object(f->text, f->len, &obj, err, sizeof err) != 0)
        die("%s:%d: the label counts must be an object {\"tp\", \"fp\", \"fn\", \"tn\"}", path, line);
    const char *names[4] = {"tp", "fp", "fn", "tn"};
    long *values[4] = {&c.tp, &c.fp, &c.fn, &c.tn};
    for (int i = 0; i < 4; i++) {
        const JsonField *v = json_get(&obj, names[i]);
        if (!v || v->type != JSON_NUMBER || v->number < 0 || v->number != floor(v->number))
            die("%s:%d: \"%s\" must be a count", path, line, names[i]);
        *values[i] = (long)v->number;
    }
    json_object_free(&obj);
    return c;
}

// Adds the label counts of every round of a sipf rounds.jsonl (its lines with "hard") to out:
// per k of "by_k" (simulated labels; every line the same k), else "hard" as the outcome labels.
static void repro_read_sipf_rounds(const char *path, ReproSipf *out) {
    JsonlFile f;
    jsonl_read(path, &f);
    for (int i = 0; i < f.count; i++) {
        int line = f.line_numbers[i];
        const JsonField *hard = json_get(&f.objects[i], "hard"), *by_k = json_get(&f.objects[i], "by_k");
        if (!hard) continue; // round 0: no labels
        JsonField *items = NULL;
        int n = by_k ? json_array_items(by_k, &items) : 1;
        if (n < 1 || n > MAX_K_LEVELS) die("%s:%d: \"by_k\" must be an array of 1 to %d objects", path, line, MAX_K_LEVELS);
        if (out->rounds && out->num_levels != n) die("%s:%d: the rounds have different k", path, line);
        for (int l = 0; l < n; l++) {
            int k = 0;
            LabelCounts c;
            if (by_k) {
                JsonObject level;
                char err[256];
                if (items[l].type != JSON_OBJECT || json_parse_object(items[l].text, items[l].len, &level, err, sizeof err))
                    die("%s:%d: \"by_k\" must hold objects {\"k\", \"hard\"}", path, line);
                const JsonField *kf = json_get(&level, "k");
                if (!kf || kf->type != JSON_NUMBER || kf->number < 1 || kf->number > 65536)
                    die("%s:%d: \"by_k\": \"k\" must be in 1..65536", path, line);
                k = (int)kf->number;
                c = repro_json_counts(json_get(&level, "hard"), path, line);
                json_object_free(&level);
            } else c = repro_json_counts(hard, path, line);
            if (out->rounds && out->k[l] != k) die("%s:%d: the rounds have different k", path, line);
            out->k[l] = k;
            out->labels[l].tp += c.tp, out->labels[l].fp += c.fp, out->labels[l].fn += c.fn, out->labels[l].tn += c.tn;
        }
        json_items_free(items, by_k ? n : 0);
        out->num_levels = n;
        out->rounds++;
    }
    jsonl_free(&f);
}

// Where a seed's time goes, in seconds: the stages of repro_one_seed.
enum { TIME_DATA, TIME_PHASE1, TIME_PHASE2, TIME_EVALUATION, TIME_STAGES };
static const char *const REPRO_STAGE_NAMES[TIME_STAGES] = {"data", "phase 1", "phase 2", "evaluation"};

// Runs the whole pipeline for one seed in dir and fills scores[row * repro_columns(rs) + column],
// for every student row diagnoses[row * REPRO_FAMILIES + family] (on valid), for every phase-2
// row by_round[row * (rounds + 1) + r], the first family's test accuracy after round r (round 0:
// the row's SFT model; the round refine kept: the row's own score; n = 0 for a round that did not
// run), for every SIPF row sipf[row], and seconds[stage].
static void repro_one_seed(const ReproSettings *rs, long seed, const char *dir, const ReproRow *rows,
                           int n_rows, const char *base_model, const char *base_tokenizer, Score *scores,
                           Diagnosis *diagnoses, Score *by_round, ReproSipf *sipf, double *seconds) {
    char path[1200], seedtxt[32], ntxt[32];
    char train[1200], valid[1200], tokfile[1200], questions[1200];
    snprintf(seedtxt, sizeof seedtxt, "%ld", seed);
    mkdir_p(dir);
    double start = now_seconds(), stage_start = start;

    printf("== 1. data: the built-in task, seed %ld, in %s/\n", seed, dir);
    for (int fam = 0; fam < repro_num_families(rs); fam++)
        for (int sp = 0; sp < TASK_NUM_SPLITS; sp++) {
            const char *split = task_split_names[sp];
            snprintf(path, sizeof path, "%s/%s_%s.jsonl", dir, repro_family(rs, fam), split);
            snprintf(ntxt, sizeof ntxt, "%d", sp == TASK_SPLIT_TRAIN ? rs->n_train
                                              : sp == TASK_SPLIT_VALID ? rs->n_valid : rs->n_test);
            run_command(cmd_data, "--task", repro_family(rs, fam), "--split", split, "--n", ntxt,
                        "--seed", seedtxt, "--out", path, NULL);
        }
    snprintf(train, sizeof train, "%s/train.jsonl", dir);
    join_families(rs, dir, "train", train, 0, -1);
    snprintf(questions, sizeof questions, "%s/refine_train.jsonl", dir); // phase 2's questions
    join_families(rs, dir, "train", questions, 0, rs->n_refine);
    snprintf(valid, sizeof valid, "%s/valid.jsonl", dir);
    join_families(rs, dir, "valid", valid, 0, -1);

    if (base_model) { // the base's tokenizer
        snprintf(tokfile, sizeof tokfile, "%s", base_tokenizer);
    } else {
        printf("== 2. tokenizer (%.0fs)\n", now_seconds() - start);
        snprintf(tokfile, sizeof tokfile, "%s/tokenizer.bin", dir);
        snprintf(path, sizeof path, "%s/tokenizer_text.txt", dir);
        write_rendered_text(path, train, NULL);
        run_command(cmd_tokenizer, "--train", path, "--vocab", rs->vocab, "--split-digits", "--out",
                    tokfile, NULL);
    }

    seconds[TIME_DATA] = now_seconds() - stage_start;
    // the models: each row's checkpoint, trained in row order (an SFT row before its refined rows)
    char model_paths[REPRO_MAX_ROWS][1200];
    char rounds_txt[32];
    snprintf(rounds_txt, sizeof rounds_txt, "%d", rs->rounds);
    for (int r = 0; r < n_rows; r++) {
        const ReproRow *row = &rows[r];
        char out[1200], log[1200], stamp[1200];
        snprintf(out, sizeof out, "%s/%s.bin", dir, row->key);
        snprintf(log, sizeof log, "%s/%s_metrics.jsonl", dir, row->key);
        snprintf(stamp, sizeof stamp, "%s/%s.done", dir, row->key);
        char after[1200] = ""; // a phase-2 row's SFT row's stamp
        if (row->baseline >= 0) snprintf(after, sizeof after, "%s/%s.done", dir, rows[row->baseline].key);
        if (row->demos_percent == 0) { model_paths[r][0] = 0; continue; } // the teacher
        stage_start = now_seconds();
        if (!row->pairs) {
            printf("== 3. phase 1: SFT on %d%% of the teacher's demonstrations (%.0fs)\n",
                   row->demos_percent, now_seconds() - start);
            const char *demos = train;
            if (row->demos_percent < 100) {
                snprintf(path, sizeof path, "%s/%s_train.jsonl", dir, row->key);
                join_families(rs, dir, "train", path, 0, (long)rs->n_train * row->demos_percent / 100);
                demos = path;
            }
            char eptxt[32];
            snprintf(eptxt, sizeof eptxt, "%d", rs->epochs);
            run_row_command(stamp, NULL, rs->resume, cmd_sft, base_model ? "--init" : "--config",
                        base_model ? base_model : rs->config,
                        "--tokenizer", tokfile, "--data", demos,
                        "--valid", valid, "--epochs", eptxt, "--batch", "16", "--seq", "256", "--lr",
                        base_model ? rs->sft_lr : rs->scratch_lr, "--warmup", "20", "--plain-share",
                        rs->plain_share, "--seed", seedtxt,
                        "--log", log, "--out", out,
                        // --arch only with --config: a checkpoint says its own shape
                        base_model ? NULL : "--arch", ARCH_NAMES[rs->arch], NULL);
            best_path(model_paths[r], sizeof model_paths[r], out); // the lowest validation loss
            seconds[TIME_PHASE1] += now_seconds() - stage_start;
        } else if (repro_is_sipf(row)) { // SIPF's loop, or its outcome-only variant
            int outcome = !strcmp(row->pairs, "sipf-outcome");
            printf("== 4. phase 2 with process feedback: SIPF%s of %s (%.0fs)\n",
                   outcome ? ", outcome-only labels" : "", rows[row->baseline].label, now_seconds() - start);
            // the first --sipf-questions train questions of each family (refine asks the first
            // --refine-questions: the same, or the first of them); each round's steps, PRM,
            // pairs and rounds.jsonl in KEY_rounds/; the kept model is the best of rounds 1..N
            // on valid (--exclude-initial), as for refine
            char sipf_questions[1200], keep_dir[1200], prm_epochs[16];
            snprintf(prm_epochs, sizeof prm_epochs, "%d", rs->sipf_prm_epochs);
            snprintf(sipf_questions, sizeof sipf_questions, "%s/sipf_train.jsonl", dir);
            join_families(rs, dir, "train", sipf_questions, 0, rs->n_sipf);
            snprintf(keep_dir, sizeof keep_dir, "%s/%s_rounds", dir, row->key);
            run_row_command(stamp, after, rs->resume, cmd_sipf, "--model", model_paths[row->baseline], "--tokenizer",
                        tokfile, "--data",
                        sipf_questions, "--valid", valid, "--exclude-initial", "--rounds", rounds_txt,
                        "--samples", rs->samples, "-k", rs->sipf_k, "--max-new", rs->max_new, "--max-pairs",
                        rs->max_pairs, "--epochs", rs->refine_epochs, "--batch", "8", "--seq", "256", "--lr",
                        rs->refine_lr, "--prm-lr", rs->sipf_prm_lr, "--prm-epochs", prm_epochs, "--reward",
                        RERANK_NAMES[rs->sipf_reward_min], "--seed", seedtxt, "--keep", keep_dir,
                        "--log", log, "--out", out, outcome ? "--outcome" : NULL, NULL);
            snprintf(model_paths[r], sizeof model_paths[r], "%s", out);
            double took = now_seconds() - stage_start;
            seconds[TIME_PHASE2] += took;
            printf("%s: SIPF (at most %d rounds) in %.0fs\n", row->label, rs->rounds, took);
        } else {
            if (!strcmp(row->pairs, "rft"))
                printf("== 4. phase 2's control: RFT of %s (%.0fs)\n", rows[row->baseline].label,
                       now_seconds() - start);
            else
                printf("== 4. phase 2: self-refinement (%s, rpo-alpha %s) of %s (%.0fs)\n", row->pairs,
                       row->rpo_alpha, rows[row->baseline].label, now_seconds() - start);
            char pairs_dir[1200];
            snprintf(pairs_dir, sizeof pairs_dir, "%s/%s_pairs", dir, row->key);
            mkdir_p(pairs_dir);
            // the questions: the first --refine-questions of each family; in the low-resource
            // setting (phase 1 on a share of the demonstrations) those after the ones phase 1
            // saw, so that phase 2 answers questions it knows by their gold answer only
            const char *asked = questions;
            if (rows[row->baseline].demos_percent < 100) {
                snprintf(path, sizeof path, "%s/%s_questions.jsonl", dir, row->key);
                join_families(rs, dir, "train", path, (long)rs->n_train * rows[row->baseline].demos_percent / 100,
                              rs->n_refine);
                asked = path;
            }
            // the kept model is the best round on valid among rounds 1..N (--exclude-initial), so
            // that the row shows what phase 2 did even when it did not help
            if (!strcmp(row->pairs, "rft")) // the control: the same samples, SFT on the verified ones
                run_row_command(stamp, after, rs->resume, cmd_refine, "--model", model_paths[row->baseline],
                            "--tokenizer", tokfile,
                            "--data", asked, "--valid", valid, "--exclude-initial", "--rft", "--samples",
                            rs->samples, "--max-new", rs->max_new, "--rounds", rounds_txt, "--epochs",
                            rs->rft_epochs, "--batch", "8", "--seq", "256", "--lr", rs->rft_lr, "--seed",
                            seedtxt, "--keep-pairs", pairs_dir, "--log", log, "--out", out, NULL);
            else run_row_command(stamp, after, rs->resume, cmd_refine, "--model", model_paths[row->baseline],
                        "--tokenizer", tokfile,
                        "--data", asked, "--valid", valid, "--exclude-initial", "--pairs", row->pairs,
                        "--samples", rs->samples, "--max-pairs", rs->max_pairs, "--max-new", rs->max_new,
                        "--rounds", rounds_txt, "--ref", rs->ref, "--epochs", rs->refine_epochs, "--batch",
                        "8", "--seq", "256", "--lr", rs->refine_lr, "--beta", rs->beta, "--rpo-alpha",
                        row->rpo_alpha, "--seed", seedtxt, "--keep-pairs", pairs_dir, "--log", log, "--out",
                        out, NULL);
            snprintf(model_paths[r], sizeof model_paths[r], "%s", out);
            seconds[TIME_PHASE2] += now_seconds() - stage_start;
        }
    }

    printf("== 5. evaluation (%.0fs)\n", now_seconds() - start);
    stage_start = now_seconds();
    Tokenizer *tok = load_tokenizer(tokfile);
    GenerateSettings g = GENERATE_DEFAULTS;
    g.max_new = (int)parse_long("--max-new", rs->max_new, 1, 1 << 20);
    for (int r = 0; r < n_rows; r++) { // the diagnosis of every student, on valid
        char prm[1200] = ""; // a SIPF row's: its labels, and its last round's PRM for best-of-K
        if (repro_is_sipf(&rows[r])) {
            snprintf(path, sizeof path, "%s/%s_rounds/rounds.jsonl", dir, rows[r].key);
            repro_read_sipf_rounds(path, &sipf[r]);
            for (int k = 1; k <= rs->rounds; k++) {
                snprintf(path, sizeof path, "%s/%s_rounds/round%d_prm.bin", dir, rows[r].key, k);
                if (access(path, F_OK) == 0) sipf[r].prm_round = k, snprintf(prm, sizeof prm, "%s", path);
            }
        }
        for (int f = 0; f < repro_num_families(rs) && model_paths[r][0]; f++) {
            snprintf(path, sizeof path, "%s/%s_valid.jsonl", dir, repro_family(rs, f));
            printf("diagnosis of %s on %s (%d samples per item%s%s%s)\n", rows[r].label, path, rs->diagnose_k,
                   prm[0] ? "; best-of-K by " : "", prm, prm[0] ? (rs->sipf_reward_min ? ", lowest step" : ", mean step") : "");
            Score s = score_file(model_paths[r], tok, path, &g, rs->diagnose_k, &diagnoses[r * REPRO_FAMILIES + f],
                                 prm[0] ? prm : NULL, rs->sipf_reward_min, &sipf[r].prm_vs_truth[f]);
            free(s.hit);
        }
    }
    for (int r = 0; r < n_rows; r++)
        for (int c = 0; c < repro_columns(rs); c++) {
            snprintf(path, sizeof path, "%s/%s_%s.jsonl", dir, repro_family(rs, c / REPRO_SPLITS),
                     REPRO_SPLIT_NAMES[c % REPRO_SPLITS]);
            scores[r * repro_columns(rs) + c] =
                score_file(model_paths[r][0] ? model_paths[r] : NULL, tok, path, &g, 0, NULL, NULL, 0, NULL);
        }
    // every round of every phase-2 row on the first family's test split (refine keeps each
    // round's model as KEY.roundN.bin), for the table and chart of accuracy by round
    snprintf(path, sizeof path, "%s/%s_test.jsonl", dir, repro_family(rs, 0));
    for (int r = 0; r < n_rows; r++) {
        if (!rows[r].pairs) continue;
        Score *line = by_round + (size_t)r * (rs->rounds + 1);
        const Score *sft = &scores[rows[r].baseline * repro_columns(rs)];
        line[0] = (Score){sft->correct, sft->n, NULL};
        for (int k = 1; k <= rs->rounds; k++) {
            char tag[32], model_path[1200], key_path[1200];
            snprintf(tag, sizeof tag, "round%d", k);
            snprintf(key_path, sizeof key_path, "%s/%s.bin", dir, rows[r].key);
            path_tagged(model_path, sizeof model_path, key_path, tag, ".bin");
            if (access(model_path, F_OK) != 0) break; // refine stopped early: no pairs or examples
            if (same_file_bytes(model_path, key_path)) { // the kept round: already evaluated
                const Score *kept = &scores[r * repro_columns(rs)];
                line[k] = (Score){kept->correct, kept->n, NULL};
                continue;
            }
            Score s = score_file(model_path, tok, path, &g, 0, NULL, NULL, 0, NULL);
            free(s.hit);
            line[k] = (Score){s.correct, s.n, NULL};
        }
    }
    tok_free(tok);
    seconds[TIME_EVALUATION] = now_seconds() - stage_start;
    printf("seed %ld done in %.0fs:", seed, now_seconds() - start);
    for (int t = 0; t < TIME_STAGES; t++) printf(" %s %.0fs%s", REPRO_STAGE_NAMES[t], seconds[t], t + 1 < TIME_STAGES ? "," : "\n");
}

// The diagnoses on valid, a line per student row and family, as the mean over seeds.
static void repro_print_diagnoses(const ReproSettings *rs, const ReproRow *rows, int n_rows,
                                  const Diagnosis *diagnoses) {
    printf("\nDiagnosis on valid (%d items per family, greedy and %d samples at temperature 0.8; "
           "mean over %d seed%s):\n", rs->n_valid, rs->diagnose_k, rs->seeds, rs->seeds > 1 ? "s" : "");
    printf("%-34s %-7s %7s %9s %8s %7s %8s %10s %8s\n", "row", "family", "greedy", "verified", "by luck",
           "maj@K", "pass@K", "arithmetic", "in world");
    for (int r = 0; r < n_rows; r++)
        for (int f = 0; f < repro_num_families(rs) && rows[r].demos_percent; f++) {
            double sum[7] = {0};
            int counted[7] = {0};
            for (int s = 0; s < rs->seeds; s++) {
                const Diagnosis *d = &diagnoses[((size_t)s * n_rows + r) * REPRO_FAMILIES + f];
                long right = 0, all = 0;
                for (int o = 0; o < 4; o++) right += d->op_right[o], all += d->op_total[o];
                double v[7] = {diagnosis_percent(d->greedy, d->n), diagnosis_percent(d->verified, d->with_truth),
                               diagnosis_luck(d), diagnosis_percent(d->majority[d->num_levels - 1], d->n),
                               diagnosis_percent(d->pass[d->num_levels - 1], d->n), diagnosis_percent(right, all),
                               diagnosis_percent(d->world_right, d->world_total)};
                for (int i = 0; i < 7; i++)
                    if (v[i] >= 0) sum[i] += v[i], counted[i]++;
            }
            printf("%-34s %-7s", rows[r].label, repro_family(rs, f));
            for (int i = 0; i < 7; i++) {
                int width = i == 1 ? 9 : i == 2 || i == 4 || i == 6 ? 8 : i == 5 ? 10 : 7;
                if (counted[i]) printf(" %*.1f", width, sum[i] / counted[i]);
                else printf(" %*s", width, "n/a");
            }
            printf("\n");
        }
    printf("(verified: right with every step the true one; by luck: the share of right greedy answers "
           "that are not verified; arithmetic: the samples' \"A OP B = C\" lines computed right; in world: of\n"
           "those whose operands and right result are counts the task holds (0..%d), the share right, apart from\n"
           "the steps a reasoning error took out of range; K = %d)\n",
           TASK_MATH_MAX_VALUE, rs->diagnose_k);
}

// The accuracy by round of every phase-2 row on the first family's test split, mean over seeds:
// printed, and drawn in DIR/results_rounds.svg with the SFT model as a dashed line.
static void repro_print_rounds(const ReproSettings *rs, const char *dir, const ReproRow *rows, int n_rows,
                               const Score *by_round) {
    int points = rs->rounds + 1, n_lines = 0;
    const char *labels[REPRO_MAX_ROWS];
    double *values = xcalloc((size_t)n_rows * points, sizeof(double)), sft = -1;
    printf("\naccuracy by round on %s test (%%, mean over %d seed%s; round 0: the SFT model)\n%-32s",
           repro_family(rs, 0), rs->seeds, rs->seeds > 1 ? "s" : "", "row");
    for (int k = 0; k < points; k++) {
        char name[32];
        snprintf(name, sizeof name, "round %d", k);
        printf(" %9s", name);
    }
    printf("\n");
    for (int r = 0; r < n_rows; r++) {
        if (!rows[r].pairs) continue;
        printf("%-32s", rows[r].label);
        for (int k = 0; k < points; k++) {
            long correct = 0, n = 0, seeds_run = 0;
            for (int s = 0; s < rs->seeds; s++) {
                const Score *x = &by_round[((size_t)s * n_rows + r) * points + k];
                correct += x->correct, n += x->n, seeds_run += x->n > 0;
            }
            // a mean over seeds only where every seed ran the round
            double v = seeds_run == rs->seeds ? 100.0 * correct / n : -1.0;
            values[n_lines * points + k] = v;
            if (v >= 0) printf(" %9.1f", v);
            else printf(" %9s", "-");
        }
        printf("\n");
        if (rows[rows[r].baseline].demos_percent == 100 && sft < 0) sft = values[n_lines * points];
        labels[n_lines++] = rows[r].label;
    }
    printf("(-: a round that did not run in every seed: refine stops when a round has no pairs or examples)\n");
    char path[1200], title[200];
    snprintf(path, sizeof path, "%s/results_rounds.svg", dir);
    snprintf(title, sizeof title, "Accuracy on %s test by round of phase 2, %d seed%s", repro_family(rs, 0),
             rs->seeds, rs->seeds > 1 ? "s" : "");
    report_write_lines_svg(path, title, labels, n_lines, points, values, sft, "SFT");
    free(values);
}

// The smallest gain over SFT, in points, that the reproduction calls real (written in README
// before the 3-seed measurement): with its paired-bootstrap 95% interval above zero and every
// seed's own gain positive, on both the in-domain test and test-ood of the first family.
#define REPRO_REAL_GAIN_POINTS 3.0

// One line of the finding: row a's gain over row b on the first family's test and test-ood
// (gain[0], gain[1], over the seeds' items), and whether it meets the bar above.
static void repro_print_verdict(const ReproSettings *rs, const ReproRow *rows, int n_rows, const Score *scores,
                                int a, int b, const Gain *gain) {
    int columns = repro_columns(rs), real = 1;
    printf("- %s over %s:", rows[a].label[0] == ' ' ? rows[a].label + 2 : rows[a].label, rows[b].label);
    for (int c = 0; c < 2; c++) { // test, test-ood
        Gain gn = gain[c];
        int every_seed = 1;
        for (int s = 0; s < rs->seeds; s++) {
            const Score *x = &scores[((size_t)s * n_rows + a) * columns + c];
            const Score *y = &scores[((size_t)s * n_rows + b) * columns + c];
            every_seed &= x->correct > y->correct;
        }
        real &= 100 * gn.gain >= REPRO_REAL_GAIN_POINTS && gn.low > 0 && every_seed;
        printf(" %s %+.1f points [%+.1f, %+.1f]%s", REPRO_SPLIT_NAMES[c], 100 * gn.gain, 100 * gn.low,
               100 * gn.high, c == 0 ? ";" : "");
    }
    int zero_inside = 1;
    for (int c = 0; c < 2; c++) zero_inside &= gain[c].low <= 0 && gain[c].high >= 0;
    printf(" — %s.\n", real ? "a real gain by the bar" : zero_inside ? "no difference the intervals can tell"
                                                               : "not a real gain by the bar");
}

// The comparisons of the paper's claims about SIPF (--method sipf or all), row a over row b:
// SIPF over its outcome-only variant, and (all) SIPF over SIRT's refined row. Returns how many
// were written to a[], b[].
static int repro_comparisons(const ReproSettings *rs, const ReproRow *rows, int n_rows, int *a, int *b) {
    int sipf = -1, outcome = -1, refined = -1, n = 0;
    for (int r = 0; r < n_rows; r++) {
        if (!strcmp(rows[r].key, "sipf")) sipf = r;
        if (!strcmp(rows[r].key, "sipf_outcome")) outcome = r;
        if (!strcmp(rows[r].key, "refined")) refined = r;
    }
    if (rs->method == REPRO_SIRT || sipf < 0) return 0;
    if (outcome >= 0) a[n] = sipf, b[n++] = outcome;
    if (refined >= 0) a[n] = sipf, b[n++] = refined;
    return n;
}

// The gain of row a over row b in every column: the paired bootstrap over every seed's items.
static void repro_gain_between(const ReproSettings *rs, int n_rows, const Score *scores, int a, int b, Gain *out) {
    int columns = repro_columns(rs);
    for (int c = 0; c < columns; c++)
        out[c] = paired_bootstrap(&scores[a * columns + c], &scores[b * columns + c], rs->seeds, n_rows * columns);
}

// The mean over seeds of a row's first-family test accuracy after round k (%), from by_round;
// −1 when a seed did not run that round.
static double repro_round_mean(const ReproSettings *rs, int n_rows, const Score *by_round, int r, int k) {
    long correct = 0, n = 0;
    for (int s = 0; s < rs->seeds; s++) {
        const Score *x = &by_round[((size_t)s * n_rows + r) * (rs->rounds + 1) + k];
        if (!x->n) return -1.0;
        correct += x->correct, n += x->n;
    }
    return 100.0 * correct / n;
}

// The finding under the tables, in words: each phase-2 row's gain over its SFT row on the first
// family's test and test-ood, and whether it meets the bar above; with SIPF's rows also SIPF
// over outcome-only feedback and over SIRT, by the same bar, and both SIPF rows' accuracy by round.
static void repro_print_finding(const ReproSettings *rs, const ReproRow *rows, int n_rows, const Score *scores,
                                const Gain *gains, const Score *by_round) {
    int columns = repro_columns(rs);
    printf("\nFinding (%s, %d seed%s; a gain is real when it is at least %.0f points, its 95%% interval "
           "is above zero and every seed gains, on test and test-ood):\n",
           repro_family(rs, 0), rs->seeds, rs->seeds > 1 ? "s" : "", REPRO_REAL_GAIN_POINTS);
    for (int r = 0; r < n_rows; r++)
        if (rows[r].pairs) repro_print_verdict(rs, rows, n_rows, scores, r, rows[r].baseline, gains + r * columns);
    int a[2], b[2], n = repro_comparisons(rs, rows, n_rows, a, b);
    for (int i = 0; i < n; i++) {
        Gain gain[REPRO_COLUMNS];
        repro_gain_between(rs, n_rows, scores, a[i], b[i], gain);
        repro_print_verdict(rs, rows, n_rows, scores, a[i], b[i], gain);
    }
    for (int r = 0, first = 1; r < n_rows && n; r++) { // SIPF's rows by round: a description, no test
        if (!repro_is_sipf(&rows[r])) continue;
        if (first) printf("- by round on %s test (round 0: SFT; a description, not a test):", repro_family(rs, 0));
        printf("%s %s", first ? "" : ";", rows[r].label);
        double v1 = repro_round_mean(rs, n_rows, by_round, r, 1), last = -1;
        int last_round = 0;
        for (int k = 0; k <= rs->rounds; k++) {
            double v = repro_round_mean(rs, n_rows, by_round, r, k);
            if (v < 0) break;
            printf(" %s%.1f", k ? "→ " : "", v);
            last = v, last_round = k;
        }
        if (last_round >= 2) printf(" (round %d minus round 1: %+.1f points)", last_round, last - v1);
        else printf(" (fewer than 2 rounds ran in every seed)");
        first = 0;
    }
    if (n) printf(".\n");
}

// The mean of the defined values among n (NaN where none is defined).
static double repro_mean_defined(const double *values, int n) {
    double sum = 0;
    int counted = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(values[i])) sum += values[i], counted++;
    return counted ? sum / counted : NAN;
}

// Prints " %*.3f" or " n/a".
static void repro_print_value(double v, int width) {
    if (isnan(v)) printf(" %*s", width, "n/a");
    else printf(" %*.3f", width, v);
}

// The precision, recall and F1 of counts[s] for each of the seeds with counted[s], each printed as
// the mean over the seeds where it is defined.
static void repro_print_prf(const LabelCounts *counts, int seeds, const int *counted) {
    double (*fn[3])(const LabelCounts *) = {label_precision, label_recall, label_f1};
    double *v = xmalloc((size_t)seeds * sizeof(double));
    for (int i = 0; i < 3; i++) {
        for (int s = 0; s < seeds; s++) v[s] = counted[s] ? fn[i](&counts[s]) : NAN;
        repro_print_value(repro_mean_defined(v, seeds), 9);
    }
    free(v);
}

// SIPF's diagnostics under the table (--method sipf or all), each a mean over seeds: the step
// labels of every round against the true steps, by k; the last round's PRM on valid (its steps
// on the kept model's samples against the true steps), and best-of-K by it beside maj@K, pass@K.
static void repro_print_sipf(const ReproSettings *rs, const ReproRow *rows, int n_rows, const ReproSipf *sipf,
                             const Diagnosis *diagnoses) {
    if (rs->method == REPRO_SIRT) return;
    int levels[MAX_K_LEVELS], num_levels = parse_k_list(rs->sipf_k, levels), K = rs->diagnose_k;
    int *counted = xmalloc((size_t)rs->seeds * sizeof(int));
    LabelCounts *counts = xmalloc((size_t)rs->seeds * sizeof(LabelCounts));
    printf("\nSIPF's step labels against the true steps (the hard labels of every round; positive = a correct "
           "step; mean over %d seed%s):\n%-34s %-12s %9s %9s %9s %7s\n", rs->seeds, rs->seeds > 1 ? "s" : "",
           "row", "labels", "precision", "recall", "F1", "rounds");
    for (int r = 0; r < n_rows; r++) {
        if (!repro_is_sipf(&rows[r])) continue;
        int outcome = !strcmp(rows[r].pairs, "sipf-outcome");
        for (int l = 0; l < (outcome ? 1 : num_levels); l++) {
            int k = outcome ? 0 : levels[l];
            double rounds = 0;
            for (int s = 0; s < rs->seeds; s++) { // the seed's level with this k, if it labelled
                const ReproSipf *x = &sipf[(size_t)s * n_rows + r];
                counted[s] = 0;
                for (int m = 0; m < x->num_levels && x->rounds; m++)
                    if (x->k[m] == k) counts[s] = x->labels[m], counted[s] = 1;
                rounds += (double)x->rounds / rs->seeds;
            }
            char name[32];
            if (outcome) snprintf(name, sizeof name, "outcome");
            else snprintf(name, sizeof name, "k = %d of %d", k, levels[num_levels - 1]);
            printf("%-34s %-12s", rows[r].label, name);
            repro_print_prf(counts, rs->seeds, counted);
            printf(" %7.1f\n", rounds);
        }
    }
    printf("\nThe last round's PRM on valid (held out): its steps on the kept model's %d samples per item against "
           "the true steps, and best-of-%d by it (%s step probability; %%) beside maj@%d and pass@%d:\n"
           "%-34s %-7s %9s %9s %9s %9s %9s %7s %7s\n", K, K, rs->sipf_reward_min ? "lowest" : "mean", K, K,
           "row", "family", "precision", "recall",
           "F1", "PRM round", "best-of-K", "maj@K", "pass@K");
    for (int r = 0; r < n_rows; r++)
        for (int f = 0; f < repro_num_families(rs) && repro_is_sipf(&rows[r]); f++) {
            double *v[3], prm_round = 0;
            for (int i = 0; i < 3; i++) v[i] = xmalloc((size_t)rs->seeds * sizeof(double));
            for (int s = 0; s < rs->seeds; s++) {
                const ReproSipf *x = &sipf[(size_t)s * n_rows + r];
                const Diagnosis *d = &diagnoses[((size_t)s * n_rows + r) * REPRO_FAMILIES + f];
                counts[s] = x->prm_vs_truth[f];
                counted[s] = x->prm_round > 0;
                prm_round += (double)x->prm_round / rs->seeds;
                v[0][s] = d->rerank_by ? diagnosis_percent(d->reranked_right, d->n) : NAN;
                v[1][s] = diagnosis_percent(d->majority[d->num_levels - 1], d->n);
                v[2][s] = diagnosis_percent(d->pass[d->num_levels - 1], d->n);
                for (int i = 0; i < 3; i++)
                    if (v[i][s] < 0) v[i][s] = NAN;
            }
            printf("%-34s %-7s", rows[r].label, repro_family(rs, f));
            repro_print_prf(counts, rs->seeds, counted);
            printf(" %9.1f", prm_round);
            for (int i = 0; i < 3; i++) {
                double m = repro_mean_defined(v[i], rs->seeds);
                if (isnan(m)) printf(" %*s", i ? 7 : 9, "n/a");
                else printf(" %*.1f", i ? 7 : 9, m);
                free(v[i]);
            }
            printf("\n");
        }
    printf("(PRM round: the round whose PRM is used, 0 where none was trained, mean over seeds; n/a: nothing to "
           "count, such as no step with a true step to compare or no PRM)\n");
    free(counted);
    free(counts);
}

// results.json's SIPF part (--method sipf or all): the settings of the SIPF rows; per seed and
// SIPF row the label counts by k, the PRM's round and its counts on valid per family (best-of-K
// is in "diagnoses_on_valid"); and the comparisons of the finding (SIPF over outcome-only, over
// SIRT) with their paired-bootstrap intervals.
static void repro_json_sipf(const ReproSettings *rs, const ReproRow *rows, int n_rows, const Score *scores,
                            const ReproSipf *sipf, FILE *f) {
    fprintf(f, "\"method\": \"%s\", \"sipf_questions\": %d, \"sipf_k\": \"%s\", \"sipf_prm_lr\": %s, "
            "\"sipf_prm_epochs\": %d, \"sipf_reward\": \"%s\",\n", REPRO_METHOD_NAMES[rs->method], rs->n_sipf,
            rs->sipf_k, rs->sipf_prm_lr, rs->sipf_prm_epochs, RERANK_NAMES[rs->sipf_reward_min]);
    fputs("\"sipf_diagnostics\": [", f);
    for (int s = 0, first = 1; s < rs->seeds; s++)
        for (int r = 0; r < n_rows; r++) {
            if (!repro_is_sipf(&rows[r])) continue;
            const ReproSipf *x = &sipf[(size_t)s * n_rows + r];
            fprintf(f, "%s\n  {\"seed\": %ld, \"row\": \"%s\", \"rounds\": %d, \"labels_vs_truth\": [",
                    first ? "" : ",", rs->seed + s, rows[r].key, x->rounds);
            for (int l = 0; l < x->num_levels; l++) {
                if (x->k[l]) fprintf(f, "%s{\"k\": %d, \"hard\": ", l ? ", " : "", x->k[l]);
                else fprintf(f, "%s{\"k\": null, \"hard\": ", l ? ", " : ""); // the outcome labels
                label_counts_json(f, &x->labels[l]);
                fputs("}", f);
            }
            fprintf(f, "], \"prm_round\": %d, \"prm_on_valid\": [", x->prm_round);
            for (int fam = 0; fam < repro_num_families(rs); fam++) {
                fprintf(f, "%s{\"family\": \"%s\", \"steps_vs_truth\": ", fam ? ", " : "", repro_family(rs, fam));
                label_counts_json(f, &x->prm_vs_truth[fam]);
                fputs("}", f);
            }
            fputs("]}", f);
            first = 0;
        }
    fputs("],\n\"comparisons\": [", f);
    int a[2], b[2], n = repro_comparisons(rs, rows, n_rows, a, b), columns = repro_columns(rs);
    for (int i = 0, first = 1; i < n; i++) {
        Gain gain[REPRO_COLUMNS];
        repro_gain_between(rs, n_rows, scores, a[i], b[i], gain);
        for (int c = 0; c < columns; c++) {
            fprintf(f, "%s\n  {\"model\": \"%s\", \"over\": \"%s\", \"family\": \"%s\", \"split\": \"%s\", "
                       "\"gain\": %.6f, \"ci95\": [%.6f, %.6f]}", first ? "" : ",", rows[a[i]].key, rows[b[i]].key,
                    repro_family(rs, c / REPRO_SPLITS), REPRO_SPLIT_NAMES[c % REPRO_SPLITS], gain[c].gain,
                    gain[c].low, gain[c].high);
            first = 0;
        }
    }
    fputs("],\n", f);
}

// The report (lib/report.h): the table's rows, its columns (each family's test splits) and the
// scores, printed, written into DIR/results.json with the run's settings, the diagnoses, the
// accuracy by round and the time of each stage, and drawn in results.svg and results_rounds.svg.
static void repro_report(const ReproSettings *rs, const char *dir, const ReproRow *rows, int n_rows,
                         const Score *scores, const Diagnosis *diagnoses, const Score *by_round,
                         const ReproSipf *sipf, const double *seconds) {
    ReportRow report_rows[REPRO_MAX_ROWS];
    ReportColumn columns[REPRO_COLUMNS];
    for (int r = 0; r < n_rows; r++) report_rows[r] = (ReportRow){rows[r].label, rows[r].key, rows[r].baseline};
    for (int c = 0; c < repro_columns(rs); c++)
        columns[c] = (ReportColumn){repro_family(rs, c / REPRO_SPLITS), REPRO_SPLIT_NAMES[c % REPRO_SPLITS]};
    ReportTable table = {report_rows, n_rows, columns, repro_columns(rs), rs->seeds, rs->seed, scores};
    report_print_accuracy(&table);
    report_print_mean_sd(&table);
    Gain *gains = report_gains(&table); // each refined row over its SFT row
    report_print_gains(&table, gains, "gain over SFT (points)");
    repro_print_rounds(rs, dir, rows, n_rows, by_round);
    repro_print_diagnoses(rs, rows, n_rows, diagnoses);
    repro_print_sipf(rs, rows, n_rows, sipf, diagnoses);
    repro_print_finding(rs, rows, n_rows, scores, gains, by_round);

    char path[1200];
    snprintf(path, sizeof path, "%s/results.json", dir);
    SafeFile sf;
    safe_open(&sf, path);
    report_json_begin(&table, sf.file);
    fprintf(sf.file, "\"task\": \"%s\", \"train_items_per_family\": %d, \"sft_epochs\": %d, "
                     "\"config\": \"%s\", \"pairs\": \"%s\", \"rpo_alpha\": %s, \"rft_lr\": %s, \"rft_epochs\": %s, "
                     "\"refine_lr\": %s, \"refine_epochs\": %s, "
                     "\"refine_questions\": %d, \"samples\": %s, \"max_pairs\": %s, \"rounds\": %d, "
                     "\"ref\": \"%s\",\n",
            rs->task, rs->n_train, rs->epochs, rs->config, rs->pairs, rs->rpo_alpha, rs->rft_lr, rs->rft_epochs,
            rs->refine_lr, rs->refine_epochs, rs->n_refine,
            rs->samples, rs->max_pairs, rs->rounds, rs->ref);
    // each phase-2 row's first-family test accuracy by round (round 0: its SFT model), and the
    // seconds each seed spent in each stage
    fputs("\"by_round\": [", sf.file);
    for (int s = 0, first = 1; s < rs->seeds; s++)
        for (int r = 0; r < n_rows; r++)
            for (int k = 0; rows[r].pairs && k <= rs->rounds; k++) {
                const Score *x = &by_round[((size_t)s * n_rows + r) * (rs->rounds + 1) + k];
                if (!x->n) continue;
                fprintf(sf.file, "%s\n  {\"seed\": %ld, \"model\": \"%s\", \"family\": \"%s\", \"split\": "
                                 "\"test\", \"round\": %d, \"correct\": %ld, \"n\": %ld}",
                        first ? "" : ",", rs->seed + s, rows[r].key, repro_family(rs, 0), k, x->correct, x->n);
                first = 0;
            }
    fputs("],\n\"seconds\": [", sf.file);
    for (int s = 0; s < rs->seeds; s++) {
        fprintf(sf.file, "%s{\"seed\": %ld", s ? ", " : "", rs->seed + s);
        for (int t = 0; t < TIME_STAGES; t++)
            fprintf(sf.file, ", \"%s\": %.1f", REPRO_STAGE_NAMES[t], seconds[s * TIME_STAGES + t]);
        fputs("}", sf.file);
    }
    fputs("],\n", sf.file);
    fprintf(sf.file, "\"arch\": \"%s\", \"init\": ", ARCH_NAMES[rs->arch]); // the student's shape and start
    if (rs->init) json_write_string(sf.file, rs->init, strlen(rs->init));
    else fputs("null", sf.file);
    fputs(",\n", sf.file);
    fputs("\"diagnoses_on_valid\": [", sf.file);
    for (int s = 0, first = 1; s < rs->seeds; s++)
        for (int r = 0; r < n_rows; r++)
            for (int f = 0; f < repro_num_families(rs) && rows[r].demos_percent; f++) {
                fprintf(sf.file, "%s\n  {\"seed\": %ld, \"row\": \"%s\", \"family\": \"%s\", \"diagnosis\": ",
                        first ? "" : ",", rs->seed + s, rows[r].key, repro_family(rs, f));
                diagnosis_write_json(sf.file, &diagnoses[((size_t)s * n_rows + r) * REPRO_FAMILIES + f]);
                fputs("}", sf.file);
                first = 0;
            }
    fputs("],\n", sf.file);
    if (rs->method != REPRO_SIRT) repro_json_sipf(rs, rows, n_rows, scores, sipf, sf.file);
    report_json_finish(&table, gains, sf.file);
    safe_commit(&sf);
    snprintf(path, sizeof path, "%s/results.svg", dir);
    report_write_svg(&table, path, "Accuracy on the built-in task");
    free(gains);
}

int cmd_reproduce(int argc, char **argv) {
    ReproSettings rs = REPRO_DEFAULTS;
    int name_given = 0, train_given = 0, epochs_given = 0, config_given = 0, base_given = 0, rounds_given = 0, trial_given = 0;
    int arch_given = 0;
    // --pairs, --rpo-alpha, --refine-lr, --refine-epochs, --rft-lr, --rft-epochs, --beta and
    // --samples go to refine as text; they are checked below, before any work
    const Flag flags[] = {
        {"--name", "NAME", FLAG_STRING, .value = &rs.name, "the run's directory is runs/NAME",
         .given = &name_given},
        {"--seed", "S", FLAG_LONG, .value = &rs.seed, "the seed of the data and the models", 0,
         0x7fffffffL - 1000},
        {"--seeds", "N", FLAG_INT, .value = &rs.seeds,
         "the whole pipeline for seeds S .. S+N-1, in runs/NAME/seedK", 1, 100},
        {"--task", "math|both|choice", FLAG_STRING, .value = &rs.task,
         "the families trained on and evaluated (the default, math, is the measured one: README)"},
        {"--config", "L,NH,C,maxT,V", FLAG_STRING, .value = &rs.config,
         "the student (maxT >= 256); with --arch llama: L,NH,C,maxT,V[,KVH[,hidden]]",
         .given = &config_given},
        {"--arch", NULL, FLAG_CHOICE, .value = &rs.arch,
         "the student's shape (phase 0's base is trained from random weights)", .choices = ARCH_NAMES,
         .given = &arch_given},
        {"--init", "MODEL", FLAG_STRING, .value = &rs.init,
         "phase 1 starts from this checkpoint (ours, llm.c's, llama2.c's or a Hugging Face directory; "
         "maxT >= 256) with --tokenizer: no phase 0, the file's shape (no --arch, --config, --base-stories)"},
        {"--tokenizer", "TOK", FLAG_STRING, .value = &rs.tokenizer,
         "--init's tokenizer (at most the model's V tokens)"},
        {"--train", "N", FLAG_INT, .value = &rs.n_train, "demonstrations per family", 10, 10000000,
         .given = &train_given},
        {"--epochs", "E", FLAG_INT, .value = &rs.epochs, "phase 1's epochs", 1, 1000,
         .given = &epochs_given},
        {"--pairs", "correct-vs-incorrect|cot-vs-plain|both", FLAG_STRING, .value = &rs.pairs,
         "phase 2's pair rule"},
        {"--rpo-alpha", "A", FLAG_STRING, .value = &rs.rpo_alpha, "phase 2's NLL term"},
        {"--rounds", "N", FLAG_INT, .value = &rs.rounds, "phase 2's rounds (and the control's)", 1, 100,
         .given = &rounds_given},
        {"--ref", "initial|previous", FLAG_STRING, .value = &rs.ref,
         "phase 2's reference: phase 1's model, or the last round's"},
        {"--max-pairs", "N", FLAG_STRING, .value = &rs.max_pairs, "phase 2's pairs per question"},
        {"--refine-lr", "LR", FLAG_STRING, .value = &rs.refine_lr, "phase 2's learning rate"},
        {"--rft-lr", "LR", FLAG_STRING, .value = &rs.rft_lr, "the learning rate of the control, RFT"},
        {"--rft-epochs", "E", FLAG_STRING, .value = &rs.rft_epochs, "the control's epochs over its examples"},
        {"--refine-epochs", "E", FLAG_STRING, .value = &rs.refine_epochs,
         "phase 2's epochs over the pairs"},
        {"--beta", "B", FLAG_STRING, .value = &rs.beta, "phase 2's DPO beta"},
        {"--samples", "K", FLAG_STRING, .value = &rs.samples, "phase 2's samples per question"},
        {"--refine-questions", "N", FLAG_INT, .value = &rs.n_refine,
         "questions per family that phase 2 answers", 1, 10000000},
        {"--base-stories", "N", FLAG_INT, .value = &rs.n_base,
         "phase 0: stories per family for the base student; 0: no phase 0", 0, 100000000,
         .given = &base_given},
        {"--base-epochs", "E", FLAG_INT, .value = &rs.base_epochs, "phase 0's epochs", 1, 1000},
        {"--base-seed", "S", FLAG_LONG, .value = &rs.base_seed, "phase 0's data and weights", 0,
         0x7fffffffL},
        {"--base-candidates", "N", FLAG_INT, .value = &rs.base_candidates,
         "phase 0 trains N bases (seeds S, S+1, ...) for --base-trial-steps and continues the one with "
         "the lowest loss on valid questions' stories", 1, 16},
        {"--base-trial-steps", "K", FLAG_INT, .value = &rs.base_trial_steps,
         "the steps each candidate base trains before they are compared", 1, 1000000, .given = &trial_given},
        {"--method", NULL, FLAG_CHOICE, .value = &rs.method,
         "phase 2's rows: SIRT's (self-refine, RFT), SIPF's (SIPF, outcome-only), or all four",
         .choices = REPRO_METHOD_NAMES},
        {"--sipf-questions", "N", FLAG_INT, .value = &rs.n_sipf,
         "questions per family that the SIPF rows answer (the first of phase 2's)", 1, 10000000},
        {"--sipf-k", "K[,K...]", FLAG_STRING, .value = &rs.sipf_k,
         "SIPF's continuations per step: the largest simulated, the labels of each k scored"},
        {"--sipf-prm-lr", "LR", FLAG_STRING, .value = &rs.sipf_prm_lr, "SIPF's PRM learning rate"},
        {"--sipf-prm-epochs", "E", FLAG_INT, .value = &rs.sipf_prm_epochs,
         "SIPF's PRM passes over all the labelled paths of the rounds so far", 1, 100000},
        {"--sipf-reward", NULL, FLAG_CHOICE, .value = &rs.sipf_reward_min,
         "SIPF's path reward for its pairs and best-of-K: the mean or the lowest step probability",
         .choices = RERANK_NAMES},
        {"--ablations", NULL, FLAG_SWITCH, .value = &rs.ablations,
         "adds the rows of the paper's analyses (with --method sirt or all)"},
        {"--resume", NULL, FLAG_SWITCH, .value = &rs.resume,
         "keep every row whose KEY.done records the arguments it would run now (a run cut off, or "
         "--ablations after the main rows)"},
        {"--quick", NULL, FLAG_SWITCH, .value = &rs.quick,
         "the same pipeline at tiny sizes (the tests run it)"},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {0}};
    if (flags_parse(argc, argv, "reproduce", "reproduce [flags below]\n"
                    "(./sirt with no arguments runs it with the defaults)", tables))
        return 0;
    if (strcmp(rs.task, "math") && strcmp(rs.task, "choice") && strcmp(rs.task, "both"))
        die("--task must be math, choice or both, got '%s'", rs.task);
    Config student = parse_config_arch(rs.config, rs.arch); // fail now, not after the data
    if (student.maxT < 256) die("--config: the reproduction needs maxT >= 256 (its --seq), got %d", student.maxT);
    if (strcmp(rs.pairs, "cot-vs-plain") && strcmp(rs.pairs, "correct-vs-incorrect") && strcmp(rs.pairs, "both"))
        die("--pairs must be cot-vs-plain, correct-vs-incorrect or both, got '%s'", rs.pairs);
    parse_float("--rpo-alpha", rs.rpo_alpha); // fail now, not after phase 1
    parse_float("--refine-lr", rs.refine_lr);
    parse_float("--rft-lr", rs.rft_lr);
    parse_float("--beta", rs.beta);
    parse_long("--samples", rs.samples, 1, 1024);
    parse_long("--refine-epochs", rs.refine_epochs, 1, 1000);
    parse_long("--rft-epochs", rs.rft_epochs, 1, 1000);
    parse_long("--max-pairs", rs.max_pairs, 1, 1024);
    if (strcmp(rs.ref, "initial") && strcmp(rs.ref, "previous"))
        die("--ref must be initial or previous, got '%s'", rs.ref);
    int sipf_levels[MAX_K_LEVELS];
    parse_k_list(rs.sipf_k, sipf_levels);
    parse_float("--sipf-prm-lr", rs.sipf_prm_lr);
    if (rs.ablations && rs.method == REPRO_SIPF)
        die("reproduce: --ablations adds SIRT's rows; use --method sirt or all");
    if (rs.quick) { // tiny sizes: the whole pipeline in seconds (the tests run it)
        if (!train_given) rs.n_train = 60;
        if (!epochs_given) rs.epochs = 1;
        if (!name_given) rs.name = "quick";
        if (!config_given) rs.config = "2,2,32,256,1024";
        rs.n_refine = 20, rs.n_valid = 20, rs.n_test = 30;
        rs.samples = "2", rs.max_new = "100", rs.diagnose_k = 4;
        rs.n_sipf = 20, rs.sipf_k = "1,2";
        if (!rounds_given) rs.rounds = 2;
        if (!base_given) rs.n_base = 60;
        if (!trial_given) rs.base_trial_steps = 1;
    }
    char init_config[128]; // --init: the checkpoint's shape, as --config would give it
    if (rs.init) { // the user's pretrained student: checked now, before any work
        if (!rs.tokenizer) die("reproduce: --init needs --tokenizer, the model's tokenizer");
        if (arch_given || config_given || base_given)
            die("reproduce: --init replaces phase 0 and sets the student's shape; drop --%s",
                arch_given ? "arch" : config_given ? "config" : "base-stories");
        Model pretrained;
        model_load(&pretrained, rs.init);
        if (pretrained.config.maxT < 256)
            die("reproduce: %s has context maxT=%d, shorter than the reproduction's --seq 256", rs.init,
                pretrained.config.maxT);
        Tokenizer *tok = load_tokenizer(rs.tokenizer);
        check_tokenizer_fits(tok, pretrained.config.V);
        const Config *c = &pretrained.config;
        rs.arch = c->arch;
        if (c->arch == ARCH_LLAMA)
            snprintf(init_config, sizeof init_config, "%d,%d,%d,%d,%d,%d,%d", c->L, c->NH, c->C, c->maxT, c->V,
                     c->KVH, c->hidden);
        else snprintf(init_config, sizeof init_config, "%d,%d,%d,%d,%d", c->L, c->NH, c->C, c->maxT, c->V);
        rs.config = init_config;
        tok_free(tok);
        model_free(&pretrained);
    } else if (rs.tokenizer) die("reproduce: --tokenizer is --init's tokenizer; give --init MODEL too");
    char dir[1024], seed_dir[1100];
    snprintf(dir, sizeof dir, "runs/%s", rs.name);
    mkdir_p(dir);
    ReproRow rows[REPRO_MAX_ROWS];
    int n_rows = repro_rows(&rs, rows);
    size_t per_seed = (size_t)n_rows * repro_columns(&rs); // scores are [seed][row][column]
    Score *scores = xcalloc(rs.seeds * per_seed, sizeof(Score));
    Diagnosis *diagnoses = xcalloc((size_t)rs.seeds * n_rows * REPRO_FAMILIES, sizeof(Diagnosis));
    Score *by_round = xcalloc((size_t)rs.seeds * n_rows * (rs.rounds + 1), sizeof(Score));
    ReproSipf *sipf = xcalloc((size_t)rs.seeds * n_rows, sizeof(ReproSipf));
    double *seconds = xcalloc((size_t)rs.seeds * TIME_STAGES, sizeof(double));
    double start = now_seconds();
    char base_model[1200], base_tokenizer[1200];
    if (rs.init) { // phase 1 from the user's checkpoint, with its tokenizer
        printf("== 0. phase 0 skipped: phase 1 starts from %s (--init) with its tokenizer %s\n", rs.init,
               rs.tokenizer);
        snprintf(base_model, sizeof base_model, "%s", rs.init);
        snprintf(base_tokenizer, sizeof base_tokenizer, "%s", rs.tokenizer);
    } else if (rs.n_base > 0) repro_base(&rs, base_tokenizer, base_model, sizeof base_model);
    for (int s = 0; s < rs.seeds; s++) {
        if (rs.seeds > 1) snprintf(seed_dir, sizeof seed_dir, "%s/seed%ld", dir, rs.seed + s);
        else snprintf(seed_dir, sizeof seed_dir, "%s", dir);
        repro_one_seed(&rs, rs.seed + s, seed_dir, rows, n_rows, rs.init || rs.n_base > 0 ? base_model : NULL,
                       base_tokenizer, scores + s * per_seed, diagnoses + (size_t)s * n_rows * REPRO_FAMILIES,
                       by_round + (size_t)s * n_rows * (rs.rounds + 1), sipf + (size_t)s * n_rows,
                       seconds + (size_t)s * TIME_STAGES);
    }
    repro_report(&rs, dir, rows, n_rows, scores, diagnoses, by_round, sipf, seconds);
    printf("\nwrote %s/results.json and results.svg in %.0fs\n", dir, now_seconds() - start);
    for (size_t i = 0; i < rs.seeds * per_seed; i++) free(scores[i].hit);
    free(scores);
    free(diagnoses);
    free(by_round);
    free(sipf);
    free(seconds);
    return 0;
}

#endif // SIRT_LIB_REPRODUCE_H
