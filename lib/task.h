// lib/task.h — the built-in task: generated word problems, the oracle teacher, the step truth,
// and `./sirt data`.
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_TASK_H
#define SIRT_LIB_TASK_H

// =============================================================================================
//
// The program's own data, generated from a seed, so that every experiment can run without a
// download and so that the truth of every step is known. Two families, as the paper has math
// and commonsense:
//
//   math    GSM8K-like word problems. A start value (2..20) and a chain of 2-4 operations
//           (+ and - with operands 2..20, * and exact / with operands 2..9). Every intermediate
//           result stays in 1..999: no negative or zero values, no remainders. 30 templates
//           (scenarios; 24 in-domain, 6 held out) phrase each operation their own way, with
//           40 in-domain and 12 held-out names; the oracle teacher writes one
//           step per line, "Tom buys 5 more marbles: 3 + 5 = 8.", and ends with "#### 8".
//           The arithmetic always closes a line as "A OP B = C." so task_check_step can tell
//           whether any step line (the teacher's or a student's) computes right.
//   choice  CSQA/OBQA-like multiple choice: 3-5 people and a shuffled chain of comparison facts
//           ("Bob is shorter than Ann."), the question asks for the first, last, second or
//           second-to-last in the order, and the options A) .. E) name the people. The teacher
//           walks the chain from the top, one fact per line ("..., so from tallest to shortest:
//           Ann, Bob."), then names the letter: "#### B". 6 in-domain relations (taller,
//           older, ...), 3 held out.
//
// Splits. Every item i of a split comes from its own random stream, keyed by (seed, family,
// split, i): item i depends on nothing else, so `--n 100` is a prefix of `--n 1000`, and the
// same arguments give the same bytes.
//   train, valid, test  the in-domain templates and names; 2-4 operations (3-5 people).
//   test-ood            held-out templates and held-out names that no other split ever uses.
//   test-long           in-domain templates and names, one step more than any training item:
//                       5 operations (6 people, of whom 5 are options).
// No question text appears in two splits, by construction. train, valid and test share one
// generator, so a fixed hash of the question text (no seed in it) names the one of them that
// owns it (buckets of 32: 28 train, 2 valid, 2 test) and a split keeps only the questions it
// owns, drawing again otherwise; this holds across any seeds and sizes. test-ood and test-long
// cannot meet any other split: every test-ood question names a held-out person that no other
// split's text contains, and only test-long questions have 5 operations (6 people). Each test
// split can hold millions of distinct questions.
//
// Teacher noise (--noise P, default 0): with probability P (an independent stream, so the
// question does not change with P) the teacher makes one wrong step. Math: one result is off
// by a small amount (chosen so that later divisions stay exact) and the wrong value carries
// through the later, correctly computed steps to a wrong final answer. Choice: one step puts
// the new person on the wrong side of the other, the order carries the swap, and the letter
// named at the end is wrong (in the rare item where no slip would change the letter, the
// teacher stays right, so the noisy fraction is a little under P: 0.29 for 0.3). The item
// records noisy, wrong_step, and the true answer (gold).
//
// JSONL: {"question": ..., "answer": ..., "gold": ..., "noisy": ..., "template": ...}; the first
// two are GSM8K's; gold is the true answer (it differs from the answer's "####" when noisy).
// =============================================================================================

typedef enum { TASK_MATH, TASK_CHOICE } TaskFamily;
typedef enum {
    TASK_SPLIT_TRAIN, TASK_SPLIT_VALID, TASK_SPLIT_TEST, TASK_SPLIT_TEST_OOD, TASK_SPLIT_TEST_LONG,
    TASK_NUM_SPLITS
} TaskSplit;
static const char *const task_split_names[TASK_NUM_SPLITS] = {"train", "valid", "test",
                                                              "test-ood", "test-long"};
static const char *const task_family_names[2] = {"math", "choice"};

#define TASK_MAX_OPS 5      // test-long; the other splits use 2-4
#define TASK_MAX_PEOPLE 6   // test-long; the other splits use 3-5
#define TASK_MAX_OPTIONS 5
#define TASK_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct {
    char *question;     // the problem, one line
    char *answer;       // the teacher's demonstration: step lines, then "#### <final>"
    char gold[8];       // the true final answer (a number, or a letter)
    int num_steps;      // lines before "####"
    int noisy;          // 1 when the teacher made one wrong step (then the final is wrong)
    int wrong_step;     // its line index (0-based), or -1
    int template_id;    // math: task_math_templates; choice: task_relations (ids < *_IN: in-domain)
    int name_id;        // the protagonist (math) or the first person of the order (choice)
    TaskFamily family;
    TaskSplit split;
    // math only: the problem as an expression, value = start, then value = value ops[k] operands[k]
    int start, num_ops;
    char ops[TASK_MAX_OPS];
    int operands[TASK_MAX_OPS];
} TaskItem;

// --- Tables: names, math templates, comparison relations. The first *_IN entries are in-domain
// (train, valid, test, test-long); the rest are held out for test-ood.

typedef struct { const char *name; int female; } TaskName;
#define TASK_NAMES_IN 40
static const TaskName task_names[] = {
    {"Tom", 0},  {"Ann", 1},  {"Ben", 0},  {"Lucy", 1}, {"Sam", 0},  {"Mia", 1},  {"Jack", 0},
    {"Emma", 1}, {"Leo", 0},  {"Zoe", 1},  {"Max", 0},  {"Lily", 1}, {"Omar", 0}, {"Nina", 1},
    {"Ravi", 0}, {"Sara", 1}, {"Ivan", 0}, {"Rosa", 1}, {"Hugo", 0}, {"Maya", 1}, {"Carl", 0},
    {"Beth", 1}, {"Dev", 0},  {"Kate", 1}, {"Finn", 0}, {"Jade", 1}, {"Luis", 0}, {"Tara", 1},
    {"Noah", 0}, {"Ella", 1}, {"Kai", 0},  {"Iris", 1}, {"Owen", 0}, {"Ruth", 1}, {"Paul", 0},
    {"Vera", 1}, {"Eric", 0}, {"Dora", 1}, {"Adam", 0}, {"Gina", 1},
    // held out
    {"Yusuf", 0}, {"Ingrid", 1}, {"Quentin", 0}, {"Freya", 1}, {"Bjorn", 0}, {"Priya", 1},
    {"Tobias", 0}, {"Greta", 1}, {"Wendell", 0}, {"Xena", 1}, {"Ezra", 0}, {"Olga", 1},
};

// A scenario. {N} the name, {H} his/her, {a} the start value, {b} the operand. The operation
// phrases are verb phrases: the question says "He buys 5 more marbles.", the step says
// "Tom buys 5 more marbles: 3 + 5 = 8."
typedef struct { const char *start, *add, *sub, *mul, *div, *ask; } TaskMathTemplate;
#define TASK_MATH_IN 24
static const TaskMathTemplate task_math_templates[] = {
    {"{N} has {a} marbles.", "buys {b} more marbles", "loses {b} marbles",
     "trades them for {b} times as many marbles",
     "splits the marbles into {b} equal bags and keeps one bag", "How many marbles does {N} have now?"},
    {"{N} picks {a} apples.", "picks {b} more apples", "eats {b} of the apples",
     "ends up with {b} times as many apples",
     "shares the apples equally among {b} baskets and keeps one basket",
     "How many apples does {N} have at the end?"},
    {"{N} owns {a} stickers.", "gets {b} new stickers", "gives {b} stickers to a friend",
     "collects until {H} album holds {b} times as many stickers",
     "sorts the stickers into {b} equal stacks and keeps one stack", "How many stickers does {N} own now?"},
    {"{N} bakes {a} cookies.", "bakes {b} more cookies", "sells {b} cookies",
     "bakes until there are {b} times as many cookies",
     "packs the cookies into {b} equal boxes and keeps one box", "How many cookies does {N} keep?"},
    {"{N} saves {a} coins.", "saves {b} more coins", "spends {b} coins",
     "sees {H} savings grow to {b} times as many coins",
     "puts the coins into {b} equal jars and keeps one jar", "How many coins does {N} have left?"},
    {"{N} has {a} pencils in a case.", "adds {b} pencils to the case", "lends {b} pencils to classmates",
     "refills the case with {b} times as many pencils",
     "divides the pencils equally among {b} cases and keeps one case",
     "How many pencils are in {N}'s case now?"},
    {"{N} collects {a} trading cards.", "wins {b} more cards", "trades away {b} cards",
     "grows the collection to {b} times as many cards",
     "deals the cards into {b} equal hands and keeps one hand", "How many cards does {N} have now?"},
    {"{N} gathers {a} eggs.", "finds {b} more eggs", "breaks {b} eggs",
     "gathers until there are {b} times as many eggs",
     "puts the eggs into {b} equal cartons and keeps one carton", "How many eggs does {N} have?"},
    {"{N} grows {a} flowers.", "plants {b} more flowers", "picks {b} flowers for a vase",
     "sees the garden grow to {b} times as many flowers",
     "divides the flowers into {b} equal beds and keeps one bed",
     "How many flowers does {N} have in the end?"},
    {"{N} finds {a} shells on the beach.", "finds {b} more shells", "drops {b} shells",
     "ends the day with {b} times as many shells",
     "splits the shells into {b} equal buckets and keeps one bucket",
     "How many shells does {N} take home?"},
    {"{N} has {a} stamps.", "buys {b} more stamps", "uses {b} stamps on letters",
     "gets {b} times as many stamps as before",
     "sorts the stamps into {b} equal albums and keeps one album", "How many stamps does {N} have now?"},
    {"{N} gets {a} candies.", "gets {b} more candies", "eats {b} candies",
     "swaps them for {b} times as many candies",
     "splits the candies into {b} equal bags and keeps one bag", "How many candies does {N} have left?"},
    {"{N} owns {a} toy cars.", "gets {b} more toy cars for {H} birthday", "gives {b} toy cars to a cousin",
     "grows the fleet to {b} times as many cars",
     "parks the cars in {b} equal rows and keeps one row", "How many toy cars does {N} have?"},
    {"{N} has {a} books on a shelf.", "puts {b} more books on the shelf", "takes {b} books off the shelf",
     "fills the shelf with {b} times as many books",
     "spreads the books evenly over {b} shelves and keeps one shelf",
     "How many books does {N} have on the shelf?"},
    {"{N} catches {a} fish.", "catches {b} more fish", "lets {b} fish go",
     "keeps fishing until {H} catch is {b} times as many fish",
     "shares the fish equally among {b} coolers and keeps one cooler", "How many fish does {N} have now?"},
    {"{N} has {a} beads.", "buys {b} more beads", "loses {b} beads",
     "ends up with {b} times as many beads",
     "threads the beads onto {b} equal strings and keeps one string", "How many beads does {N} have now?"},
    {"{N} blows up {a} balloons.", "blows up {b} more balloons", "pops {b} balloons",
     "ends up with {b} times as many balloons",
     "ties the balloons into {b} equal bunches and keeps one bunch", "How many balloons does {N} have?"},
    {"{N} has {a} crayons.", "finds {b} more crayons", "breaks {b} crayons and throws them away",
     "gets {b} times as many crayons as before",
     "sorts the crayons into {b} equal boxes and keeps one box", "How many crayons does {N} have now?"},
    {"{N} scores {a} points in a game.", "scores {b} more points", "loses {b} points",
     "has {H} score multiplied by {b} in a bonus round",
     "has {H} score divided by {b} as a penalty", "What is {N}'s score at the end?"},
    {"{N} has {a} dollars.", "earns {b} more dollars", "spends {b} dollars",
     "invests and ends up with {b} times as many dollars",
     "splits the dollars equally among {b} envelopes and keeps one envelope",
     "How many dollars does {N} have now?"},
    {"{N} makes {a} cupcakes.", "makes {b} more cupcakes", "gives {b} cupcakes to the neighbours",
     "makes enough to have {b} times as many cupcakes",
     "puts the cupcakes on {b} equal trays and keeps one tray", "How many cupcakes does {N} have left?"},
    {"{N} has {a} seeds.", "buys a packet of {b} more seeds", "plants {b} seeds",
     "harvests {b} times as many seeds as {H} had",
     "divides the seeds into {b} equal pots and keeps one pot", "How many seeds does {N} have now?"},
    {"{N} takes {a} photos.", "takes {b} more photos", "deletes {b} photos",
     "copies them until there are {b} times as many photos",
     "sorts the photos into {b} equal albums and keeps one album", "How many photos does {N} have now?"},
    {"{N} stacks {a} blocks.", "adds {b} more blocks", "removes {b} blocks",
     "builds until there are {b} times as many blocks",
     "splits the blocks into {b} equal towers and keeps one tower", "How many blocks does {N} have?"},
    // held out
    {"{N} keeps {a} sheep on a farm.", "buys {b} more sheep", "sells {b} sheep at the market",
     "breeds the flock up to {b} times as many sheep",
     "divides the flock into {b} equal fields and keeps one field", "How many sheep does {N} keep now?"},
    {"{N} holds {a} raffle tickets.", "wins {b} extra tickets", "hands in {b} tickets",
     "trades up to {b} times as many tickets",
     "splits the tickets into {b} equal rolls and keeps one roll", "How many tickets does {N} hold?"},
    {"{N} orders {a} bricks for a wall.", "orders {b} more bricks", "returns {b} cracked bricks",
     "reorders until there are {b} times as many bricks",
     "spreads the bricks evenly over {b} pallets and keeps one pallet",
     "How many bricks does {N} have for the wall?"},
    {"{N} receives {a} emails in the morning.", "receives {b} more emails", "deletes {b} emails",
     "sees the inbox grow to {b} times as many emails",
     "files the emails into {b} equal folders and keeps one folder in the inbox",
     "How many emails are in {N}'s inbox?"},
    {"{N} folds {a} paper stars.", "folds {b} more stars", "gives {b} stars to {H} teacher",
     "multiplies the pile to {b} times as many stars",
     "hangs the stars on {b} equal strings and keeps one string", "How many paper stars does {N} have?"},
    {"{N} fills {a} jars of jam.", "fills {b} more jars", "gives away {b} jars",
     "stocks up to {b} times as many jars",
     "splits the jars into {b} equal crates and keeps one crate", "How many jars of jam does {N} have?"},
};

// A comparison: "X is <more> than Y", "Y is <less> than X"; "Who is the <most>?".
typedef struct { const char *more, *less, *most, *least, *scene; } TaskRelation;
#define TASK_RELATIONS_IN 6
static const TaskRelation task_relations[] = {
    {"taller", "shorter", "tallest", "shortest", "compare their heights"},
    {"older", "younger", "oldest", "youngest", "compare their ages"},
    {"faster", "slower", "fastest", "slowest", "run a race"},
    {"heavier", "lighter", "heaviest", "lightest", "step on a scale"},
    {"stronger", "weaker", "strongest", "weakest", "test their strength"},
    {"richer", "poorer", "richest", "poorest", "compare their savings"},
    // held out
    {"louder", "quieter", "loudest", "quietest", "sing in a choir"},
    {"happier", "sadder", "happiest", "saddest", "talk about their week"},
    {"luckier", "unluckier", "luckiest", "unluckiest", "play a board game"},
};

static const char *const task_connectors[] = {"Then", "After that,", "Next,", "Later,"};
static const char *const task_counts[] = {"", "", "", "Three", "Four", "Five", "Six"};

// --- Small helpers: a growing string, random picks, hashes.

typedef struct { char *data; size_t len, cap; } TaskText;

static void task_put(TaskText *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (t->len + n + 1 > cap) cap *= 2;
        char *grown = xmalloc(cap);
        if (t->len) memcpy(grown, t->data, t->len);
        free(t->data);
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void task_puts(TaskText *t, const char *s) { task_put(t, s, strlen(s)); }

static void task_putf(TaskText *t, const char *fmt, ...) {
    char buf[256];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    if (n < 0 || n >= (int)sizeof buf) die("task: formatted text too long");
    task_put(t, buf, (size_t)n);
}

// Expands a template's placeholders: {N} name, {H} his/her, {a} start value, {b} operand.
static void task_expand(TaskText *t, const char *tmpl, const TaskName *who, int a, int b) {
    for (const char *p = tmpl; *p; p++) {
        if (p[0] == '{' && p[1] && p[2] == '}') {
            switch (p[1]) {
            case 'N': task_puts(t, who->name); break;
            case 'H': task_puts(t, who->female ? "her" : "his"); break;
            case 'a': task_putf(t, "%d", a); break;
            case 'b': task_putf(t, "%d", b); break;
            default: die("task: bad placeholder in '%s'", tmpl);
            }
            p += 2;
        } else {
            task_put(t, p, 1);
        }
    }
}

static int task_below(Rng *rng, int n) { return (int)(rng_u32(rng) % (uint32_t)n); }

static uint64_t task_mix64(uint64_t z) { // the splitmix64 finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The random stream of one item: (seed, family, split, index), and stream 0 (the question) or
// 1 (the teacher's noise), so that the question does not depend on --noise.
static uint64_t task_item_key(uint64_t seed, TaskFamily family, TaskSplit split, long index,
                              int stream) {
    uint64_t h = task_mix64(seed ^ 0x5349525444415441ull); // "SIRTDATA"
    h = task_mix64(h ^ ((uint64_t)family << 16 | (uint64_t)split << 8 | (uint64_t)stream));
    return task_mix64(h + (uint64_t)index);
}

// Which of train, valid and test owns a question: a fixed function of its text alone (no seed),
// so one text can only ever belong to one of them. Buckets of 32: valid 0-1, test 2-3, train 4-31.
static TaskSplit task_owner(const char *text) {
    int bucket = (int)(task_mix64(hash_text(text)) % 32);
    return bucket < 2 ? TASK_SPLIT_VALID : bucket < 4 ? TASK_SPLIT_TEST : TASK_SPLIT_TRAIN;
}

// --- Math.

static long task_apply(char op, long a, long b) {
    switch (op) {
    case '+': return a + b;
    case '-': return a - b;
    case '*': return a * b;
    default: return a / b;
    }
}

static const char *task_op_phrase(const TaskMathTemplate *t, char op) {
    return op == '+' ? t->add : op == '-' ? t->sub : op == '*' ? t->mul : t->div;
}

// Draws the problem (template, name, start, operations) and writes the question.
static void task_math_question(Rng *rng, TaskSplit split, TaskItem *it, TaskText *q) {
    int ood = split == TASK_SPLIT_TEST_OOD;
    int num_templates = TASK_COUNT(task_math_templates) - TASK_MATH_IN;
    it->template_id = ood ? TASK_MATH_IN + task_below(rng, num_templates) : task_below(rng, TASK_MATH_IN);
    it->name_id = ood ? TASK_NAMES_IN + task_below(rng, TASK_COUNT(task_names) - TASK_NAMES_IN)
                      : task_below(rng, TASK_NAMES_IN);
    it->num_ops = split == TASK_SPLIT_TEST_LONG ? 5 : 2 + task_below(rng, 3);
    it->start = 2 + task_below(rng, 19);
    int v = it->start;
    for (int k = 0; k < it->num_ops; k++) {
        // the operations that keep the value in 1..999 and exact, then a valid operand for one
        char feasible[4];
        int nf = 0, divisors[8], nd = 0;
        for (int d = 2; d <= 9; d++)
            if (v % d == 0) divisors[nd++] = d;
        if (v <= 997) feasible[nf++] = '+';
        if (v >= 3) feasible[nf++] = '-';
        if (v <= 499) feasible[nf++] = '*';
        if (nd > 0) feasible[nf++] = '/';
        char op = feasible[task_below(rng, nf)];
        int cap = op == '+' || op == '-' ? 20 : 9;
        int hi = op == '+' ? 999 - v : op == '-' ? v - 1 : 999 / v; // the largest operand allowed
        if (hi > cap) hi = cap;
        int b = op == '/' ? divisors[task_below(rng, nd)] : 2 + task_below(rng, hi - 1);
        it->ops[k] = op;
        it->operands[k] = b;
        v = (int)task_apply(op, v, b);
    }
    const TaskMathTemplate *t = &task_math_templates[it->template_id];
    const TaskName *who = &task_names[it->name_id];
    const char *pronoun = who->female ? "she" : "he";
    task_expand(q, t->start, who, it->start, 0);
    for (int k = 0; k < it->num_ops; k++) {
        if (k == 0) task_putf(q, " %s ", who->female ? "She" : "He");
        else task_putf(q, " %s %s ", task_connectors[task_below(rng, TASK_COUNT(task_connectors))], pronoun);
        task_expand(q, task_op_phrase(t, it->ops[k]), who, 0, it->operands[k]);
        task_puts(q, ".");
    }
    task_puts(q, " ");
    task_expand(q, t->ask, who, it->start, 0);
    snprintf(it->gold, sizeof it->gold, "%d", v);
}

// Replays the problem with `delta` added to the result of step j: is every later division still
// exact and every value still non-negative?
static int task_math_delta_ok(const TaskItem *it, int j, long delta) {
    long v = it->start;
    for (int k = 0; k < it->num_ops; k++) {
        if (it->ops[k] == '/' && v % it->operands[k] != 0) return 0;
        v = task_apply(it->ops[k], v, it->operands[k]) + (k == j ? delta : 0);
        if (v < 0) return 0;
    }
    return 1;
}

// The teacher's demonstration; step wrong_step (or none, -1) is off by delta.
static void task_math_answer(const TaskItem *it, int wrong_step, long delta, TaskText *a) {
    const TaskMathTemplate *t = &task_math_templates[it->template_id];
    const TaskName *who = &task_names[it->name_id];
    long left = it->start;
    for (int k = 0; k < it->num_ops; k++) {
        long right = it->operands[k];
        long result = task_apply(it->ops[k], left, right) + (k == wrong_step ? delta : 0);
        task_puts(a, who->name);
        task_puts(a, " ");
        task_expand(a, task_op_phrase(t, it->ops[k]), who, 0, it->operands[k]);
        task_putf(a, ": %ld %c %ld = %ld.\n", left, it->ops[k], right, result);
        left = result;
    }
    task_putf(a, "#### %ld", left);
}

// --- Multiple choice.

typedef struct {
    int n;                          // people
    int order[TASK_MAX_PEOPLE];     // name ids, from most to least (tallest first)
    int stated_less[TASK_MAX_PEOPLE - 1]; // fact k (order[k] vs order[k+1]) said with <less>
    int query;                      // 0 the most, 1 the least, 2 the second most, 3 the second least
    int rank;                       // the position asked for, 0 = the most
    int num_options;
    int options[TASK_MAX_OPTIONS];  // name ids, option A first
} TaskChoice;

static void task_choice_question(Rng *rng, TaskSplit split, TaskItem *it, TaskChoice *c,
                                 TaskText *q) {
    int ood = split == TASK_SPLIT_TEST_OOD;
    int num_relations = TASK_COUNT(task_relations) - TASK_RELATIONS_IN;
    it->template_id = ood ? TASK_RELATIONS_IN + task_below(rng, num_relations)
                          : task_below(rng, TASK_RELATIONS_IN);
    c->n = split == TASK_SPLIT_TEST_LONG ? 6 : 3 + task_below(rng, 3);
    int pool[TASK_COUNT(task_names)], pool_n = 0; // the split's names, shuffled; take the first n
    for (int i = ood ? TASK_NAMES_IN : 0; i < (ood ? TASK_COUNT(task_names) : TASK_NAMES_IN); i++)
        pool[pool_n++] = i;
    rng_shuffle(rng, pool, pool_n);
    memcpy(c->order, pool, (size_t)c->n * sizeof(int));
    it->name_id = c->order[0];
    int facts[TASK_MAX_PEOPLE - 1];
    for (int k = 0; k < c->n - 1; k++) {
        c->stated_less[k] = task_below(rng, 2);
        facts[k] = k;
    }
    rng_shuffle(rng, facts, c->n - 1);
    int query = c->query = task_below(rng, 4);
    c->rank = query == 0 ? 0 : query == 1 ? c->n - 1 : query == 2 ? 1 : c->n - 2;
    int answer = c->order[c->rank];
    // options: everyone (3-5 people), or the answer and four others (6 people)
    c->num_options = c->n < TASK_MAX_OPTIONS ? c->n : TASK_MAX_OPTIONS;
    int others[TASK_MAX_PEOPLE], no = 0;
    for (int k = 0; k < c->n; k++)
        if (k != c->rank) others[no++] = c->order[k];
    rng_shuffle(rng, others, no);
    c->options[0] = answer;
    memcpy(c->options + 1, others, (size_t)(c->num_options - 1) * sizeof(int));
    rng_shuffle(rng, c->options, c->num_options);

    const TaskRelation *r = &task_relations[it->template_id];
    task_putf(q, "%s friends %s.", task_counts[c->n], r->scene);
    for (int f = 0; f < c->n - 1; f++) {
        int k = facts[f];
        const char *hi = task_names[c->order[k]].name, *lo = task_names[c->order[k + 1]].name;
        if (c->stated_less[k]) task_putf(q, " %s is %s than %s.", lo, r->less, hi);
        else task_putf(q, " %s is %s than %s.", hi, r->more, lo);
    }
    task_putf(q, " Who is the %s%s?", query >= 2 ? "second " : "", query % 2 ? r->least : r->most);
    for (int o = 0; o < c->num_options; o++)
        task_putf(q, " %c) %s", 'A' + o, task_names[c->options[o]].name);
    for (int o = 0; o < c->num_options; o++)
        if (c->options[o] == answer) snprintf(it->gold, sizeof it->gold, "%c", 'A' + o);
}

// Walks the chain from the top: step k places order[k+1] just below order[k], except that the
// wrong step places it just above. Fills list[0..n) and returns the name id at the asked rank.
static int task_choice_walk(const TaskChoice *c, int wrong_step, int *list) {
    list[0] = c->order[0];
    for (int k = 0; k < c->n - 1; k++) {
        int pos = 0;
        while (list[pos] != c->order[k]) pos++;
        if (k != wrong_step) pos++;
        memmove(list + pos + 1, list + pos, (size_t)(k + 1 - pos) * sizeof(int));
        list[pos] = c->order[k + 1];
    }
    return list[c->rank];
}

static int task_choice_letter(const TaskChoice *c, int name_id) {
    for (int o = 0; o < c->num_options; o++)
        if (c->options[o] == name_id) return 'A' + o;
    return 0;
}

static void task_choice_answer(const TaskItem *it, const TaskChoice *c, int wrong_step,
                               TaskText *a) {
    const TaskRelation *r = &task_relations[it->template_id];
    int list[TASK_MAX_PEOPLE];
    TaskChoice upto = *c; // the walk after k+1 steps is the walk of the first k+2 people
    for (int k = 0; k < c->n - 1; k++) {
        const char *hi = task_names[c->order[k]].name, *lo = task_names[c->order[k + 1]].name;
        if (c->stated_less[k]) task_putf(a, "%s is %s than %s", lo, r->less, hi);
        else task_putf(a, "%s is %s than %s", hi, r->more, lo);
        task_putf(a, ", so from %s to %s: ", r->most, r->least);
        upto.n = k + 2;
        upto.rank = 0;
        task_choice_walk(&upto, wrong_step, list);
        for (int i = 0; i < k + 2; i++) task_putf(a, "%s%s", i ? ", " : "", task_names[list[i]].name);
        task_puts(a, ".\n");
    }
    int named = task_choice_walk(c, wrong_step, list);
    int letter = task_choice_letter(c, named);
    task_putf(a, "So the %s%s is %s, which is option %c.\n#### %c", c->query >= 2 ? "second " : "",
              c->query % 2 ? r->least : r->most, task_names[named].name, letter, letter);
}

// --- Items.

// Item `index` of a split: depends only on (family, split, seed, index); noise in [0, 1].
void task_make_item(TaskFamily family, TaskSplit split, uint64_t seed, float noise, long index,
                    TaskItem *it) {
    memset(it, 0, sizeof *it);
    it->family = family;
    it->split = split;
    it->wrong_step = -1;
    Rng rng = rng_seeded(task_item_key(seed, family, split, index, 0));
    TaskText q = {0}, a = {0};
    TaskChoice choice = {0};
    int shared = split == TASK_SPLIT_TRAIN || split == TASK_SPLIT_VALID || split == TASK_SPLIT_TEST;
    for (int tries = 0;; tries++) { // draw until the question belongs to this split
        if (tries == 100000) die("task: cannot draw a %s question", task_split_names[split]);
        q.len = 0;
        if (family == TASK_MATH) task_math_question(&rng, split, it, &q);
        else task_choice_question(&rng, split, it, &choice, &q);
        if (!shared || task_owner(q.data) == split) break;
    }
    Rng noise_rng = rng_seeded(task_item_key(seed, family, split, index, 1));
    int noisy = noise > 0 && rng_uniform(&noise_rng) < noise;
    if (family == TASK_MATH) {
        long delta = 0;
        if (noisy) { // a small error at a random step, among those that keep later steps exact
            it->wrong_step = task_below(&noise_rng, it->num_ops);
            long small[20];
            int ns = 0;
            for (long d = -10; d <= 10; d++)
                if (d != 0 && task_math_delta_ok(it, it->wrong_step, d)) small[ns++] = d;
            if (ns > 0) delta = small[task_below(&noise_rng, ns)];
            else
                for (delta = 11; !task_math_delta_ok(it, it->wrong_step, delta); delta++) {}
        }
        task_math_answer(it, it->wrong_step, delta, &a);
        it->num_steps = it->num_ops;
    } else {
        if (noisy) { // the first step, in a random order, whose slip changes the letter named
            int steps[TASK_MAX_PEOPLE - 1], list[TASK_MAX_PEOPLE];
            for (int k = 0; k < choice.n - 1; k++) steps[k] = k;
            rng_shuffle(&noise_rng, steps, choice.n - 1);
            for (int s = 0; s < choice.n - 1 && it->wrong_step < 0; s++) {
                int named = task_choice_walk(&choice, steps[s], list);
                if (named != choice.order[choice.rank] && task_choice_letter(&choice, named))
                    it->wrong_step = steps[s];
            }
        }
        task_choice_answer(it, &choice, it->wrong_step, &a);
        it->num_steps = choice.n;
    }
    it->noisy = it->wrong_step >= 0;
    it->question = q.data;
    it->answer = a.data;
}

void task_item_free(TaskItem *it) {
    free(it->question);
    free(it->answer);
    it->question = it->answer = NULL;
}

// Items 0..n-1 of a split into out[0..n); free each with task_item_free.
void task_generate(TaskFamily family, TaskSplit split, int n, uint64_t seed, float noise,
                   TaskItem *out) {
    for (int i = 0; i < n; i++) task_make_item(family, split, seed, noise, i, &out[i]);
}

// --- Step-level truth.

// Reads an integer that ends just before `end` (scanning back from it, not past `begin`);
// a '-' right before the digits is a sign unless a digit precedes it ("8-2" is a subtraction).
static const char *task_int_before(const char *begin, const char *end, long *value) {
    const char *p = end;
    while (p > begin && p[-1] >= '0' && p[-1] <= '9' && end - p < 9) p--;
    if (p == end || (p > begin && p[-1] >= '0' && p[-1] <= '9')) return NULL;
    *value = strtol(p, NULL, 10);
    if (p > begin && p[-1] == '-' && !(p - 1 > begin && p[-2] >= '0' && p[-2] <= '9')) {
        *value = -*value;
        p--;
    }
    return p;
}

static const char *task_skip_spaces_back(const char *begin, const char *p) {
    while (p > begin && p[-1] == ' ') p--;
    return p;
}

// Parses the arithmetic that ends a step line: "... A OP B = C." (OP one of + - * /; 'x' is read
// as *; the final period is optional). Returns 1 and the parts, or 0 when the line has none.
int task_parse_step(const char *line, size_t len, long *a, char *op, long *b, long *c) {
    const char *begin = line, *p = line + len;
    while (p > begin && (p[-1] == '\n' || p[-1] == '\r' || p[-1] == ' ')) p--;
    if (p > begin && p[-1] == '.') p--;
    p = task_skip_spaces_back(begin, p);
    if (!(p = task_int_before(begin, p, c))) return 0;
    p = task_skip_spaces_back(begin, p);
    if (p == begin || p[-1] != '=') return 0;
    p = task_skip_spaces_back(begin, p - 1);
    if (!(p = task_int_before(begin, p, b))) return 0;
    p = task_skip_spaces_back(begin, p);
    if (p == begin || !strchr("+-*/x", p[-1])) return 0;
    *op = p[-1] == 'x' ? '*' : p[-1];
    p = task_skip_spaces_back(begin, p - 1);
    if (!(p = task_int_before(begin, p, a))) return 0;
    // A must be a whole token: "abc12 + 3 = 15." has no arithmetic
    return p == begin || !((p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z'));
}

// Is the arithmetic of one step line right? 1 right, 0 wrong, -1 no "A OP B = C" in the line.
// Division is right only when exact. (It judges the arithmetic alone, not the choice of numbers.)
int task_check_step(const char *line, size_t len) {
    long a, b, c;
    char op;
    if (!task_parse_step(line, len, &a, &op, &b, &c)) return -1;
    if (op == '/') return b != 0 && b * c == a;
    return task_apply(op, a, b) == c;
}

// The final answer of a demonstration or completion: the text after its last "####", trimmed.
// Returns 1 and copies it to out (truncated to cap-1 bytes), or 0 when there is no "####".
int task_final_answer(const char *answer, char *out, size_t cap) {
    const char *found = NULL;
    for (const char *p = strstr(answer, "####"); p; p = strstr(p + 1, "####")) found = p;
    if (!found || cap == 0) return 0;
    const char *s = found + 4, *e;
    while (*s == ' ') s++;
    for (e = s; *e && *e != '\n' && *e != '\r'; e++) {}
    while (e > s && e[-1] == ' ') e--;
    size_t n = (size_t)(e - s) < cap - 1 ? (size_t)(e - s) : cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 1;
}

// --- `./sirt data`.

void task_write_json(FILE *f, const TaskItem *it) {
    fputs("{\"question\": ", f);
    json_write_string(f, it->question, strlen(it->question));
    fputs(", \"answer\": ", f);
    json_write_string(f, it->answer, strlen(it->answer));
    fputs(", \"gold\": ", f);
    json_write_string(f, it->gold, strlen(it->gold));
    fprintf(f, ", \"noisy\": %s, \"template\": %d}\n", it->noisy ? "true" : "false",
            it->template_id);
}

int cmd_data(int argc, char **argv) {
    int family = TASK_MATH, split = TASK_SPLIT_TRAIN;
    long n = 1000;
    uint64_t seed = 1;
    float noise = 0.0f;
    const char *out_path = NULL;
    // the names of the TaskFamily and TaskSplit values, in their order, then NULL
    static const char *const families[] = {"math", "choice", NULL};
    static const char *const splits[] = {"train", "valid", "test", "test-ood", "test-long", NULL};
    const Flag flags[] = {
        {"--task", NULL, FLAG_CHOICE, .value = &family, "the family of problems",
         .choices = families},
        {"--split", NULL, FLAG_CHOICE, .value = &split,
         "test-ood: held-out phrasings; test-long: one step more", .choices = splits},
        {"--n", "N", FLAG_LONG, .value = &n, "problems", 0, 100000000},
        {"--seed", "S", FLAG_U64, .value = &seed,
         "item i depends only on (S, split, i): --n 100 is a prefix", 0, 0x7fffffffL},
        {"--noise", "P", FLAG_FLOAT, .value = &noise,
         "a share P of the answers gets a wrong step and final answer", 0, 1},
        {"--out", "FILE", FLAG_STRING, .value = &out_path, "the JSONL (default: stdout)"},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {0}};
    if (flags_parse(argc, argv, "data", "data [flags below]\n"
                    "Writes N generated problems as GSM8K-style JSONL, with the oracle teacher's\n"
                    "step-by-step answers. \"gold\" always holds the true answer, and \"noisy\" "
                    "marks the items\nwhose answer --noise made wrong.", tables))
        return 0;
    SafeFile sf;
    if (out_path) safe_open(&sf, out_path);
    FILE *f = out_path ? sf.file : stdout;
    for (long i = 0; i < n; i++) {
        TaskItem it;
        task_make_item(family, split, seed, noise, i, &it);
        task_write_json(f, &it);
        task_item_free(&it);
    }
    if (out_path) safe_commit(&sf);
    else if (fflush(stdout) != 0) die("writing to stdout failed");
    return 0;
}


#endif // SIRT_LIB_TASK_H
