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
//   math    GSM8K-like word problems about people and their things. 2 people start with
//           2..12 things each; then events, one a sentence: a person gains things, loses them,
//           or gives some to another (2..9 at a time; every count stays in 0..20, so each step's
//           arithmetic is a small sum or difference that a small student can learn exactly).
//           The question asks how many the first person introduced has at the end (README:
//           with a random one of them, the 1M-parameter student failed to tie the start count
//           to the name half the time, a reading failure no feedback could fix). 2-4 events
//           involve that person, 1-2 do not (distractors): the difficulty is in the
//           composition — whose count moves, which way, and carrying it from step to step.
//           The oracle teacher writes the asked person's start, then a line per event in the
//           question's own words: with the arithmetic when it moves the asked person's count
//           ("Tom gives 3 apples to Ann: 5 - 3 = 2."), else that the count stays ("Ann finds 4
//           more apples: Tom still has 2."); then "#### 2". The arithmetic always closes a line
//           as "A OP B = C." so task_check_step can judge any step line (the teacher's or a
//           student's), and each item also records its true steps (TaskItem.truth; the JSONL's
//           "truth"), against which a student's steps are judged one by one (lib/answer.h).
//           16 kinds of things, 40 names, 3 in-domain phrasings of each kind of event.
//   choice  CSQA/OBQA-like multiple choice: 3-4 people and the facts of a chain of comparisons
//           ("Bob is shorter than Ann."), told in a shuffled but connected order (each fact after
//           the first shares a person with those before it); the question asks for the first,
//           last, second or second-to-last in the order, and the options name the people, each
//           after its letter ("A Ann, B Bob or C Mia"). The teacher walks the facts in the
//           question's order, one a line, placing each new person above or below the one already
//           known ("..., so from tallest to shortest: Ann, Bob."), then names the person asked and
//           compares each option with that person in turn, until one is that person ("So the
//           shortest is Bob; A Ann is Bob? no; B Bob is Bob? yes.", "#### B"): each yes or no
//           compares the two names just before it, one word apart, and the letter is the last
//           one read. (Looking the name up among the options, or reading them up to the person's
//           name, asks for a comparison across the whole line, which this small student did not
//           learn: README.) No parenthesis stands between a letter and its name, so the name of
//           letter B is the token that follows "B" wherever the options were read before: with
//           "(B) Bob" it is the token after the ")" that follows "B", a lookup two tokens deep that
//           this student learned slowly and seldom (README). 6 relations (taller, older, ...).
//
// Splits. Every item i of a split comes from its own random stream, keyed by (seed, family,
// split, i): item i depends on nothing else, so `--n 100` is a prefix of `--n 1000`, and the
// same arguments give the same bytes.
//   train, valid, test  the in-domain phrasings; math: 2-4 steps, choice: 3-4 people.
//   test-ood            held-out phrasings, made of words the training text uses: math events
//                       such as "Ann buys 3 apples from Tom." (in training, "buys" only adds
//                       things) and the question "How many apples does Ann end with?"; choice
//                       facts in the form "Ann: taller than Bob." (the colon is the teacher's,
//                       "so from tallest to shortest: Ann, Bob."). Same names.
//   test-long           in-domain phrasings, more steps than any training item: math 5-6 steps,
//                       choice 5 people.
// No question text appears in two splits, by construction. train, valid and test share one
// generator, so a fixed hash of the question text (no seed in it) names the one of them that
// owns it (buckets of 32: 28 train, 2 valid, 2 test) and a split keeps only the questions it
// owns, drawing again otherwise; this holds across any seeds and sizes. test-ood and test-long
// cannot meet any other split: every test-ood question has a held-out phrasing that no other
// split's text contains, and only test-long questions have 5-6 steps (5 people). Each split can
// hold millions of distinct questions.
//
// Teacher noise (--noise P, default 0): with probability P (an independent stream, so the
// question does not change with P) the teacher makes one wrong step. Math: one result is off
// by 1-3 (never below 0 later on) and the wrong value carries through the later, correctly
// computed steps to a wrong final answer. Choice: one step puts
// the new person on the wrong side of the other, the order carries the swap, and the letter
// named at the end is wrong (in the rare item where no slip would change the letter, the
// teacher stays right, so the noisy fraction is a little under P). The item
// records noisy, wrong_step, and the true answer (gold).
//
// JSONL: {"question": ..., "answer": ..., "gold": ..., "truth": ..., "noisy": ..., "template":
// ...}; the first two are GSM8K's; gold is the true answer (it differs from the answer's "####"
// when noisy); truth (math only) the true steps, one "A OP B = C" a line; template the things
// (math) or the relation (choice).
// =============================================================================================

typedef enum { TASK_MATH, TASK_CHOICE } TaskFamily;
typedef enum {
    TASK_SPLIT_TRAIN, TASK_SPLIT_VALID, TASK_SPLIT_TEST, TASK_SPLIT_TEST_OOD, TASK_SPLIT_TEST_LONG,
    TASK_NUM_SPLITS
} TaskSplit;
static const char *const task_split_names[TASK_NUM_SPLITS] = {"train", "valid", "test",
                                                              "test-ood", "test-long"};
static const char *const task_family_names[2] = {"math", "choice"};

#define TASK_MAX_STEPS 6            // test-long's steps (math: 5-6 events of the asked person)
#define TASK_MATH_MIN_RELEVANT 2    // the events that involve the asked person: the answer's steps
#define TASK_MATH_MAX_RELEVANT 4    //   (test-long: TASK_MATH_MAX_RELEVANT + 1 .. TASK_MAX_STEPS)
#define TASK_MATH_MIN_DISTRACTORS 1 // the events that do not
#define TASK_MATH_MAX_DISTRACTORS 2
#define TASK_MATH_MAX_EVENTS (TASK_MAX_STEPS + TASK_MATH_MAX_DISTRACTORS)
#define TASK_MATH_MAX_PEOPLE 2      // 2 people in every split (the generator takes 2..this many)
#define TASK_MATH_MIN_START 2       // each person's count at the start
#define TASK_MATH_MAX_START 12
#define TASK_MATH_MAX_VALUE 20      // every count stays in 0..20
#define TASK_MATH_MIN_AMOUNT 2      // an event moves 2..9 things ("1 apples" would read badly)
#define TASK_MATH_MAX_AMOUNT 9
#define TASK_MAX_PEOPLE 5           // choice: test-long; the other splits use 3-4
#define TASK_MAX_OPTIONS 5
#define TASK_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef enum { TASK_EVENT_GAIN, TASK_EVENT_LOSS, TASK_EVENT_GIVE } TaskEventKind;
// x gains or loses `amount`, or gives it to y; phrase: its index in task_phrasings[kind]
typedef struct { int kind, x, y, amount, phrase; } TaskEvent;
// One step of arithmetic, "a op b = c".
typedef struct { long a, b, c; char op; } TaskStep;

typedef struct {
    char *question;     // the problem, one line
    char *answer;       // the teacher's demonstration: step lines, then "#### <final>"
    char *story;        // the same problem told as a story with every count or order stated
                        // (phase 0's text: the task's language, not its questions)
    char gold[8];       // the true final answer (a number, or a letter)
    int num_steps;      // lines before "####"
    int noisy;          // 1 when the teacher made one wrong step (then the final is wrong)
    int wrong_step;     // its line index (0-based), or -1
    int template_id;    // math: the things (task_objects); choice: the relation (task_relations)
    int name_id;        // the asked person (math) or the first person of the order (choice)
    TaskFamily family;
    TaskSplit split;
    // math only: the people (name ids) and their counts at the start, the events in order, and
    // the true steps: truth[k] is the asked person's arithmetic at event step_event[k]
    int num_people, asked, num_events, num_truth;
    int people[TASK_MATH_MAX_PEOPLE], counts[TASK_MATH_MAX_PEOPLE];
    TaskEvent events[TASK_MATH_MAX_EVENTS];
    TaskStep truth[TASK_MAX_STEPS];
    int step_event[TASK_MAX_STEPS];
} TaskItem;

// --- Tables: names, things, phrasings, comparison relations.

typedef struct { const char *name; int female; } TaskName;
static const TaskName task_names[] = {
    {"Tom", 0},  {"Ann", 1},  {"Ben", 0},  {"Lucy", 1}, {"Sam", 0},  {"Mia", 1},  {"Jack", 0},
    {"Emma", 1}, {"Leo", 0},  {"Zoe", 1},  {"Max", 0},  {"Lily", 1}, {"Omar", 0}, {"Nina", 1},
    {"Ravi", 0}, {"Sara", 1}, {"Ivan", 0}, {"Rosa", 1}, {"Hugo", 0}, {"Maya", 1}, {"Carl", 0},
    {"Beth", 1}, {"Dev", 0},  {"Kate", 1}, {"Finn", 0}, {"Jade", 1}, {"Luis", 0}, {"Tara", 1},
    {"Noah", 0}, {"Ella", 1}, {"Kai", 0},  {"Iris", 1}, {"Owen", 0}, {"Ruth", 1}, {"Paul", 0},
    {"Vera", 1}, {"Eric", 0}, {"Dora", 1}, {"Adam", 0}, {"Gina", 1},
};

static const char *const task_objects[] = {
    "apples", "marbles", "stickers", "coins", "cards", "pencils", "eggs", "books",
    "candies", "shells", "stamps", "beads", "balloons", "crayons", "cookies", "flowers",
};

// The phrasings of each kind of event: {X} gains, loses or gives, {Y} receives, {b} the amount,
// {o} the things. The first `in_domain` of each list are used by train, valid, test and
// test-long; the rest only by test-ood. A held-out phrasing is a new sentence made of words the
// in-domain phrasings and the teacher's answers use ("buys ... from" moves things between two
// people where "buys ... more" adds them), so test-ood measures reading, not unseen tokens.
static const char *const task_gain_phrases[] = {
    "{X} finds {b} more {o}.", "{X} buys {b} more {o}.", "{X} gets {b} more {o}.",
    "{X} takes {b} more {o}."};
static const char *const task_loss_phrases[] = {
    "{X} loses {b} {o}.", "{X} uses up {b} {o}.", "{X} gives away {b} {o}.",
    "{X} gives {b} {o} away."};
static const char *const task_give_phrases[] = {
    "{X} gives {b} {o} to {Y}.", "{Y} takes {b} {o} from {X}.", "{X} hands {b} {o} to {Y}.",
    "{X} gives {Y} {b} {o}.", "{Y} gets {b} {o} from {X}.", "{Y} buys {b} {o} from {X}."};
typedef struct { const char *const *phrases; int count, in_domain; } TaskPhrasing;
static const TaskPhrasing task_phrasings[3] = { // indexed by TaskEventKind
    {task_gain_phrases, TASK_COUNT(task_gain_phrases), 3},
    {task_loss_phrases, TASK_COUNT(task_loss_phrases), 3},
    {task_give_phrases, TASK_COUNT(task_give_phrases), 3}};
#define TASK_QUESTIONS_IN 2
static const char *const task_questions[] = {
    "How many {o} does {X} have now?", "How many {o} does {X} have at the end?",
    "How many {o} does {X} end with?"}; // held out: "end" and "with" are in the others and the answers

// A comparison: "X is <more> than Y", "Y is <less> than X"; "Who is the <most>?".
typedef struct { const char *more, *less, *most, *least, *scene; } TaskRelation;
static const TaskRelation task_relations[] = {
    {"taller", "shorter", "tallest", "shortest", "compare their heights"},
    {"older", "younger", "oldest", "youngest", "compare their ages"},
    {"faster", "slower", "fastest", "slowest", "run a race"},
    {"heavier", "lighter", "heaviest", "lightest", "step on a scale"},
    {"stronger", "weaker", "strongest", "weakest", "test their strength"},
    {"richer", "poorer", "richest", "poorest", "compare their savings"},
};

static const char *const task_counts[] = {"", "", "", "Three", "Four", "Five"};

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

// Expands a phrase: {X} the person who gains, loses or gives, {Y} who receives, {b} the
// amount, {o} the things.
static void task_expand(TaskText *t, const char *phrase, const char *x, const char *y, int b,
                        const char *things) {
    for (const char *p = phrase; *p; p++) {
        if (p[0] == '{' && p[1] && p[2] == '}') {
            switch (p[1]) {
            case 'X': task_puts(t, x); break;
            case 'Y': task_puts(t, y); break;
            case 'b': task_putf(t, "%d", b); break;
            case 'o': task_puts(t, things); break;
            default: die("task: bad placeholder in '%s'", phrase);
            }
            p += 2;
        } else {
            task_put(t, p, 1);
        }
    }
}

// The largest amount event kind `kind` can move, from x (to y), keeping every count in
// 0..TASK_MATH_MAX_VALUE; 0 when it cannot move TASK_MATH_MIN_AMOUNT.
static int task_event_room(const int *counts, int kind, int x, int y) {
    int room = kind == TASK_EVENT_GAIN ? TASK_MATH_MAX_VALUE - counts[x] : counts[x];
    if (kind == TASK_EVENT_GIVE && TASK_MATH_MAX_VALUE - counts[y] < room)
        room = TASK_MATH_MAX_VALUE - counts[y];
    if (room < TASK_MATH_MIN_AMOUNT) return 0;
    return room < TASK_MATH_MAX_AMOUNT ? room : TASK_MATH_MAX_AMOUNT;
}

// Draws the problem and writes the question: the people and their counts, then the events in
// order, then the question about the first person. `relevant` events involve the asked person (they
// are the steps of the answer), the others are distractors.
static void task_math_question(Rng *rng, TaskSplit split, TaskItem *it, TaskText *q) {
    int ood = split == TASK_SPLIT_TEST_OOD;
    it->template_id = task_below(rng, TASK_COUNT(task_objects));
    it->num_people = 2 + task_below(rng, TASK_MATH_MAX_PEOPLE - 1);
    int pool[TASK_COUNT(task_names)];
    for (int i = 0; i < TASK_COUNT(task_names); i++) pool[i] = i;
    rng_shuffle(rng, pool, TASK_COUNT(task_names));
    int counts[TASK_MATH_MAX_PEOPLE];
    for (int p = 0; p < it->num_people; p++) {
        it->people[p] = pool[p];
        counts[p] = it->counts[p] = TASK_MATH_MIN_START + task_below(rng, TASK_MATH_MAX_START - TASK_MATH_MIN_START + 1);
    }
    int asked = it->asked = 0; // the first one introduced (the others are drawn in random order)
    it->name_id = it->people[asked];
    int relevant = split == TASK_SPLIT_TEST_LONG
                       ? TASK_MATH_MAX_RELEVANT + 1 + task_below(rng, TASK_MAX_STEPS - TASK_MATH_MAX_RELEVANT)
                       : TASK_MATH_MIN_RELEVANT + task_below(rng, TASK_MATH_MAX_RELEVANT - TASK_MATH_MIN_RELEVANT + 1);
    int distractors = split == TASK_SPLIT_TEST_LONG
                          ? TASK_MATH_MAX_DISTRACTORS // so that it has more lines than any other item, too
                          : TASK_MATH_MIN_DISTRACTORS +
                                task_below(rng, TASK_MATH_MAX_DISTRACTORS - TASK_MATH_MIN_DISTRACTORS + 1);
    it->num_events = relevant + distractors;
    int is_relevant[TASK_MATH_MAX_EVENTS];
    for (int e = 0; e < it->num_events; e++) is_relevant[e] = e < relevant;
    rng_shuffle(rng, is_relevant, it->num_events);
    it->num_truth = 0;
    for (int e = 0; e < it->num_events; e++) {
        TaskEvent *ev = &it->events[e];
        int other = (asked + 1 + task_below(rng, it->num_people - 1)) % it->num_people, third = -1;
        if (it->num_people > 2)
            while (third < 0 || third == other || third == asked) third = task_below(rng, it->num_people);
        // the possible events, then one of them: a relevant event moves the asked person's
        // count (gain, loss, giving to or receiving from another person), a distractor another's
        TaskEvent options[4];
        int n = 0;
        int who = is_relevant[e] ? asked : other;
        for (int kind = TASK_EVENT_GAIN; kind <= TASK_EVENT_LOSS; kind++)
            if (task_event_room(counts, kind, who, -1)) options[n++] = (TaskEvent){kind, who, -1, 0, 0};
        if (is_relevant[e]) {
            if (task_event_room(counts, TASK_EVENT_GIVE, asked, other))
                options[n++] = (TaskEvent){TASK_EVENT_GIVE, asked, other, 0, 0};
            if (task_event_room(counts, TASK_EVENT_GIVE, other, asked))
                options[n++] = (TaskEvent){TASK_EVENT_GIVE, other, asked, 0, 0};
        } else if (third >= 0 && task_event_room(counts, TASK_EVENT_GIVE, other, third)) {
            options[n++] = (TaskEvent){TASK_EVENT_GIVE, other, third, 0, 0};
        }
        *ev = options[task_below(rng, n)]; // n >= 1: a count in 0..20 can grow or shrink by 2
        ev->amount = TASK_MATH_MIN_AMOUNT +
                     task_below(rng, task_event_room(counts, ev->kind, ev->x, ev->y) - TASK_MATH_MIN_AMOUNT + 1);
        const TaskPhrasing *ph = &task_phrasings[ev->kind];
        ev->phrase = ood ? ph->in_domain + task_below(rng, ph->count - ph->in_domain)
                         : task_below(rng, ph->in_domain);
        int before = counts[asked];
        counts[ev->x] += ev->kind == TASK_EVENT_GAIN ? ev->amount : -ev->amount;
        if (ev->kind == TASK_EVENT_GIVE) counts[ev->y] += ev->amount;
        if (is_relevant[e]) {
            TaskStep *s = &it->truth[it->num_truth];
            it->step_event[it->num_truth++] = e;
            *s = (TaskStep){before, ev->amount, counts[asked], counts[asked] > before ? '+' : '-'};
        }
    }
    const char *things = task_objects[it->template_id];
    for (int p = 0; p < it->num_people; p++)
        task_putf(q, "%s%s has %d %s.", p ? " " : "", task_names[it->people[p]].name, it->counts[p], things);
    for (int e = 0; e < it->num_events; e++) {
        const TaskEvent *ev = &it->events[e];
        task_puts(q, " ");
        task_expand(q, task_phrasings[ev->kind].phrases[ev->phrase], task_names[it->people[ev->x]].name,
                    ev->y >= 0 ? task_names[it->people[ev->y]].name : "", ev->amount, things);
    }
    task_puts(q, " ");
    int ask = ood ? TASK_QUESTIONS_IN + task_below(rng, TASK_COUNT(task_questions) - TASK_QUESTIONS_IN)
                  : task_below(rng, TASK_QUESTIONS_IN);
    task_expand(q, task_questions[ask], task_names[it->name_id].name, "", 0, things);
    snprintf(it->gold, sizeof it->gold, "%d", counts[asked]);
}

// The teacher's demonstration: the asked person's start, then a line per event, in order: the
// event's sentence as the question says it, then, when it involves the asked person, the
// arithmetic of their count ("Tom takes 3 apples from Ann: 8 - 3 = 5."), and when it does not,
// that the count stays ("Ben finds 4 more apples: Ann still has 5."). Step wrong_step (an index
// into the truth, or -1 for none) is off by delta, and the wrong value carries through the rest.
static void task_math_answer(const TaskItem *it, int wrong_step, long delta, TaskText *a) {
    const char *things = task_objects[it->template_id], *who = task_names[it->name_id].name;
    long value = it->counts[it->asked];
    task_putf(a, "%s starts with %ld %s.\n", who, value, things);
    for (int e = 0, k = 0; e < it->num_events; e++) {
        const TaskEvent *ev = &it->events[e];
        task_expand(a, task_phrasings[ev->kind].phrases[ev->phrase], task_names[it->people[ev->x]].name,
                    ev->y >= 0 ? task_names[it->people[ev->y]].name : "", ev->amount, things);
        a->len--; // the sentence's period becomes a colon
        if (k < it->num_truth && it->step_event[k] == e) {
            const TaskStep *s = &it->truth[k];
            long result = task_apply(s->op, value, s->b) + (k == wrong_step ? delta : 0);
            task_putf(a, ": %ld %c %ld = %ld.\n", value, s->op, s->b, result);
            value = result;
            k++;
        } else {
            task_putf(a, ": %s still has %ld.\n", who, value);
        }
    }
    task_putf(a, "#### %ld", value);
}

// The true steps as text, one "A OP B = C" a line: the "truth" field of the JSONL.
static void task_truth_text(const TaskItem *it, TaskText *t) {
    for (int k = 0; k < it->num_truth; k++)
        task_putf(t, "%s%ld %c %ld = %ld", k ? "\n" : "", it->truth[k].a, it->truth[k].op,
                  it->truth[k].b, it->truth[k].c);
}

// The problem as a story, as a worked example in a textbook: the question as it is asked; every
// person's start; then each event again, in the question's words, followed by the arithmetic of
// every count it moves (the giver's, then the receiver's); then every final count. (Telling the
// events twice teaches the copying that the teacher's answers need: a line per event, in the
// question's words. Between the two tellings stand the question sentence and the start line, as
// the prompt template and the start line stand between them in phase 1: a copy that has learned
// to find the sentence, not its distance, carries over.)
static void task_math_story(const TaskItem *it, const char *question, TaskText *t) {
    const char *things = task_objects[it->template_id];
    int counts[TASK_MATH_MAX_PEOPLE];
    task_puts(t, question);
    task_puts(t, "\n");
    for (int p = 0; p < it->num_people; p++) {
        counts[p] = it->counts[p];
        task_putf(t, "%s%s starts with %d %s", p == 0 ? "" : p + 1 < it->num_people ? ", " : " and ",
                  task_names[it->people[p]].name, counts[p], things);
    }
    task_puts(t, ".");
    for (int e = 0; e < it->num_events; e++) {
        const TaskEvent *ev = &it->events[e];
        const char *x = task_names[it->people[ev->x]].name, *y = ev->y >= 0 ? task_names[it->people[ev->y]].name : "";
        task_puts(t, "\n");
        task_expand(t, task_phrasings[ev->kind].phrases[ev->phrase], x, y, ev->amount, things);
        t->len--; // the phrase's period becomes a colon
        int before = counts[ev->x];
        counts[ev->x] += ev->kind == TASK_EVENT_GAIN ? ev->amount : -ev->amount;
        task_putf(t, ": %s has %d %c %d = %d", x, before, ev->kind == TASK_EVENT_GAIN ? '+' : '-', ev->amount,
                  counts[ev->x]);
        if (ev->kind == TASK_EVENT_GIVE) {
            before = counts[ev->y];
            counts[ev->y] += ev->amount;
            task_putf(t, " and %s has %d + %d = %d", y, before, ev->amount, counts[ev->y]);
        }
        task_puts(t, ".");
    }
    task_puts(t, "\nAt the end,");
    for (int p = 0; p < it->num_people; p++)
        task_putf(t, "%s %s has %d %s", p == 0 ? "" : p + 1 < it->num_people ? "," : " and",
                  task_names[it->people[p]].name, counts[p], things);
    task_puts(t, ".");
}

// --- Multiple choice.

typedef struct {
    int n;                          // people
    int order[TASK_MAX_PEOPLE];     // name ids, from most to least (tallest first)
    int stated_less[TASK_MAX_PEOPLE - 1]; // fact k (order[k] vs order[k+1]) said with <less>
    int told[TASK_MAX_PEOPLE - 1];  // the facts in the question's order: told[f] is fact k; each
                                    // after the first shares a person with those before it
    int query;                      // 0 the most, 1 the least, 2 the second most, 3 the second least
    int rank;                       // the position asked for, 0 = the most
    int num_options;
    int options[TASK_MAX_OPTIONS];  // name ids, option A first
} TaskChoice;

// The position in the order that a query asks for (0 = the most): the most, the least, the
// second most, the second least.
static int task_choice_rank(int n, int query) {
    return query == 0 ? 0 : query == 1 ? n - 1 : query == 2 ? 1 : n - 2;
}

// The letter of a person among the options, or 0 when no option names them.
static int task_choice_letter(const TaskChoice *c, int name_id) {
    for (int o = 0; o < c->num_options; o++)
        if (c->options[o] == name_id) return 'A' + o;
    return 0;
}

// The question's options, each letter just before its name: " A Carl, B Zoe or C Lucy".
static void task_choice_options(TaskText *t, const TaskChoice *c) {
    for (int o = 0; o < c->num_options; o++)
        task_putf(t, "%s %c %s", o == 0 ? "" : o + 1 < c->num_options ? "," : " or", 'A' + o,
                  task_names[c->options[o]].name);
}

static void task_choice_question(Rng *rng, TaskSplit split, TaskItem *it, TaskChoice *c,
                                 TaskText *q) {
    int ood = split == TASK_SPLIT_TEST_OOD;
    it->template_id = task_below(rng, TASK_COUNT(task_relations));
    c->n = split == TASK_SPLIT_TEST_LONG ? TASK_MAX_PEOPLE : 3 + task_below(rng, TASK_MAX_PEOPLE - 3);
    int pool[TASK_COUNT(task_names)]; // every name, shuffled; take the first n
    for (int i = 0; i < TASK_COUNT(task_names); i++) pool[i] = i;
    rng_shuffle(rng, pool, TASK_COUNT(task_names));
    memcpy(c->order, pool, (size_t)c->n * sizeof(int));
    it->name_id = c->order[0];
    for (int k = 0; k < c->n - 1; k++) c->stated_less[k] = task_below(rng, 2);
    // the facts' order: any fact first, then each next one extends the known stretch of the
    // chain upwards or downwards (at random where both are left), so the teacher can place each
    // new person beside one already known
    int top = task_below(rng, c->n - 1), bottom = top;
    c->told[0] = top;
    for (int f = 1; f < c->n - 1; f++) {
        int up = top > 0 && (bottom == c->n - 2 || task_below(rng, 2));
        c->told[f] = up ? --top : ++bottom;
    }
    int query = c->query = task_below(rng, 4);
    c->rank = task_choice_rank(c->n, query);
    int answer = c->order[c->rank];
    // options: everyone (at most TASK_MAX_OPTIONS people)
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
        int k = c->told[f];
        const char *hi = task_names[c->order[k]].name, *lo = task_names[c->order[k + 1]].name;
        const char *word = c->stated_less[k] ? r->less : r->more;
        const char *subject = c->stated_less[k] ? lo : hi, *object = c->stated_less[k] ? hi : lo;
        if (ood) // a held-out form made of the training text's words and signs: "Ann: taller than Bob."
            task_putf(q, " %s: %s than %s.", subject, word, object);
        else
            task_putf(q, " %s is %s than %s.", subject, word, object);
    }
    task_putf(q, " Who is the %s%s?", query >= 2 ? "second " : "", query % 2 ? r->least : r->most);
    task_choice_options(q, c);
    snprintf(it->gold, sizeof it->gold, "%c", task_choice_letter(c, answer));
}

// Walks the facts in the question's order, steps 0..steps-1 of them: the first gives its two
// people in order, and each later one puts its new person just above or just below the one it
// already knows, except that the wrong step puts its person on the other side (the first: its
// two people swapped). Fills list[0..steps+1), the order so far from the most, and returns the
// name id at the asked rank (after every step: steps = n - 1).
static int task_choice_walk(const TaskChoice *c, int steps, int wrong_step, int *list) {
    int k = c->told[0], len = 2;
    list[0] = c->order[k + (wrong_step == 0)];
    list[1] = c->order[k + (wrong_step != 0)];
    for (int f = 1; f < steps; f++) {
        k = c->told[f];
        int upper_known = 0; // whether the list has the fact's upper person, order[k] (else order[k+1])
        for (int i = 0; i < len; i++) upper_known |= list[i] == c->order[k];
        int known = c->order[upper_known ? k : k + 1], fresh = c->order[upper_known ? k + 1 : k];
        int pos = 0;
        while (list[pos] != known) pos++;
        int below = upper_known; // the new person is the fact's lower one: it goes below the known
        if (f == wrong_step) below = !below;
        pos += below;
        memmove(list + pos + 1, list + pos, (size_t)(len - pos) * sizeof(int));
        list[pos] = fresh;
        len++;
    }
    return list[c->rank < len ? c->rank : 0];
}

// The line that finds a person's letter: the rank and its person, then each option in the
// question's order compared with that person, until one is: "So the shortest is Bob; A Ann is
// Bob? no; B Carl is Bob? no; C Bob is Bob? yes." Every yes or no compares the two names just
// before it, and the letter is the last one read: never a name looked up among the options, nor
// a name compared with one far back in the line. (A person no option names gets "no" throughout.)
static void task_choice_find(TaskText *t, const char *opening, const TaskRelation *r, int query,
                             const TaskChoice *c, int person) {
    const char *name = task_names[person].name;
    task_putf(t, "%s %s%s is %s;", opening, query >= 2 ? "second " : "", query % 2 ? r->least : r->most,
              name);
    for (int o = 0; o < c->num_options; o++) {
        int same = c->options[o] == person;
        task_putf(t, "%s %c %s is %s? %s", o ? ";" : "", 'A' + o, task_names[c->options[o]].name, name,
                  same ? "yes" : "no");
        if (same) break;
    }
    task_puts(t, ".");
}

static void task_choice_answer(const TaskItem *it, const TaskChoice *c, int wrong_step,
                               TaskText *a) {
    const TaskRelation *r = &task_relations[it->template_id];
    int list[TASK_MAX_PEOPLE];
    for (int f = 0; f < c->n - 1; f++) {
        int k = c->told[f];
        const char *hi = task_names[c->order[k]].name, *lo = task_names[c->order[k + 1]].name;
        if (c->stated_less[k]) task_putf(a, "%s is %s than %s", lo, r->less, hi);
        else task_putf(a, "%s is %s than %s", hi, r->more, lo);
        task_putf(a, ", so from %s to %s: ", r->most, r->least);
        task_choice_walk(c, f + 1, wrong_step, list);
        for (int i = 0; i < f + 2; i++) task_putf(a, "%s%s", i ? ", " : "", task_names[list[i]].name);
        task_puts(a, ".\n");
    }
    int named = task_choice_walk(c, c->n - 1, wrong_step, list);
    task_choice_find(a, "So the", r, c->query, c, named);
    task_putf(a, "\n#### %c", task_choice_letter(c, named));
}

// The story (phase 0's text): the question word for word, the true walk (the clean teacher's
// lines but the last), then a line for every rank the questions ask for, finding its person's
// letter as the teacher does: "The tallest is Dev; A Carl is Dev? no; B Dev is Dev? yes."
static void task_choice_story(const TaskItem *it, const TaskChoice *c, const char *question,
                              TaskText *story) {
    const TaskRelation *r = &task_relations[it->template_id];
    task_puts(story, question);
    task_puts(story, "\n");
    TaskText walk = {0};
    task_choice_answer(it, c, -1, &walk);
    task_put(story, walk.data, (size_t)(strstr(walk.data, "\nSo the ") - walk.data) + 1);
    free(walk.data);
    static const int queries[4] = {0, 2, 3, 1}; // the most, second most, second least, least
    for (int q = 0; q < 4; q++) {
        if (q) task_puts(story, "\n");
        task_choice_find(story, "The", r, queries[q], c, c->order[task_choice_rank(c->n, queries[q])]);
    }
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
    TaskText q = {0}, a = {0}, story = {0};
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
        int wrong = -1;
        if (noisy) { // a small error at a random step: the asked person's count is off by 1-3
            wrong = task_below(&noise_rng, it->num_truth);
            long lowest = it->truth[wrong].c; // the smallest count it carries to
            for (int k = wrong + 1; k < it->num_truth; k++)
                if (it->truth[k].c < lowest) lowest = it->truth[k].c;
            long small[6];
            int ns = 0;
            for (long d = -3; d <= 3; d++)
                if (d != 0 && lowest + d >= 0) small[ns++] = d;
            delta = small[task_below(&noise_rng, ns)];
            it->wrong_step = 1 + it->step_event[wrong]; // line 0 is the start, then a line per event
        }
        task_math_answer(it, wrong, delta, &a);
        task_math_story(it, q.data, &story);
        it->num_steps = it->num_events + 1;
    } else {
        if (noisy) { // the first step, in a random order, whose slip changes the letter named
            int steps[TASK_MAX_PEOPLE - 1], list[TASK_MAX_PEOPLE];
            for (int k = 0; k < choice.n - 1; k++) steps[k] = k;
            rng_shuffle(&noise_rng, steps, choice.n - 1);
            for (int s = 0; s < choice.n - 1 && it->wrong_step < 0; s++) {
                int named = task_choice_walk(&choice, choice.n - 1, steps[s], list);
                if (named != choice.order[choice.rank] && task_choice_letter(&choice, named))
                    it->wrong_step = steps[s];
            }
        }
        task_choice_answer(it, &choice, it->wrong_step, &a);
        task_choice_story(it, &choice, q.data, &story);
        it->num_steps = choice.n;
    }
    it->noisy = it->wrong_step >= 0;
    it->question = q.data;
    it->answer = a.data;
    it->story = story.data;
}

void task_item_free(TaskItem *it) {
    free(it->question);
    free(it->answer);
    free(it->story);
    it->question = it->answer = it->story = NULL;
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

// Can step "A OP B = C" come up on a true path of the math family: are A, B and the right
// result all counts its world holds (0..TASK_MATH_MAX_VALUE)? A step outside that range
// ("3 - 8 = ...", "19 + 3 = ...") follows an earlier reasoning error, such as a transfer taken
// the wrong way: no demonstration or story holds one (the drills do, so that the student can learn
// it; README, session 20, measures how often it computes one right). The diagnosis counts the
// steps inside the world apart.
int task_step_in_world(long a, char op, long b) {
    if (op == '/' && (b == 0 || a % b)) return 0;
    long right = op == '/' ? a / b : task_apply(op, a, b);
    return a >= 0 && a <= TASK_MATH_MAX_VALUE && b >= 0 && b <= TASK_MATH_MAX_VALUE && right >= 0 &&
           right <= TASK_MATH_MAX_VALUE;
}

// Reads the true steps of a "truth" field, one "A OP B = C" a line, into out[0..max). Returns
// how many, or -1 when a line is not such a step or there are more than max.
int task_parse_truth(const char *text, TaskStep *out, int max) {
    int n = 0;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (n == max || !task_parse_step(line, len, &out[n].a, &out[n].op, &out[n].b, &out[n].c))
            return -1;
        n++;
        line += len + (nl != NULL);
    }
    return n;
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

// --- Drills: phase 0's other text. The facts behind a family's steps, each stated alone, in rounds: each round lists
// every fact once, in an order drawn from (seed, round), and drill i is facts f*i .. f*i + f-1 of
// that endless list (f facts a line, task_drill_per_line), so N drills cover every fact about f*N /
// (the number of facts) times.
//   math    "A + B = C." and "A - B = C." with B in 2..9 and A in -9..29 (every result, -18..38:
//           624 facts), 16 a line. The task's world holds A and C in 0..20 only; the wider range
//           covers the steps a reasoning error leads to (a transfer taken the wrong way turns
//           "3 + 8" into "3 - 8", which is -5), so that the student can compute those too and its
//           errors be reasoning errors (README, session 20: how far that came true).
//   choice  the first line of the teacher's walk, "X is taller than Y, so from tallest to
//           shortest: X, Y." (or "Y is shorter than X, so ...: X, Y."), for every ordered pair of
//           names, relation and wording (40 x 39 x 6 x 2 = 18,720 facts), 8 a line. The header
//           always runs from the <most> end, so a <more> fact puts its subject first and a <less>
//           fact its object: the ordering rule that stories alone taught some bases and not
//           others (README, session 17).
static const int task_drill_per_line[2] = {16, 8}; // facts a line, by TaskFamily

#define TASK_DRILL_MIN_A (-TASK_MATH_MAX_AMOUNT)
#define TASK_DRILL_MAX_A (TASK_MATH_MAX_VALUE + TASK_MATH_MAX_AMOUNT)
#define TASK_ARITHMETIC_FACTS \
    (2 * (TASK_DRILL_MAX_A - TASK_DRILL_MIN_A + 1) * (TASK_MATH_MAX_AMOUNT - TASK_MATH_MIN_AMOUNT + 1))

static int task_arithmetic_facts(TaskStep *facts) { // all of them, in a fixed order; returns how many
    int n = 0;
    for (int a = TASK_DRILL_MIN_A; a <= TASK_DRILL_MAX_A; a++)
        for (int b = TASK_MATH_MIN_AMOUNT; b <= TASK_MATH_MAX_AMOUNT; b++) {
            facts[n++] = (TaskStep){a, b, a + b, '+'};
            facts[n++] = (TaskStep){a, b, a - b, '-'};
        }
    return n;
}

#define TASK_NUM_NAMES TASK_COUNT(task_names)
#define TASK_NUM_RELATIONS TASK_COUNT(task_relations)
#define TASK_ORDER_FACTS (TASK_NUM_NAMES * (TASK_NUM_NAMES - 1) * TASK_NUM_RELATIONS * 2)

// Ordering fact k of TASK_ORDER_FACTS: its relation, wording, then the ordered pair of names.
static void task_order_fact(int k, TaskText *t) {
    const TaskRelation *r = &task_relations[k % TASK_NUM_RELATIONS];
    k /= TASK_NUM_RELATIONS;
    int less = k % 2, pair = k / 2;
    int subject = pair / (TASK_NUM_NAMES - 1), object = pair % (TASK_NUM_NAMES - 1);
    object += object >= subject;
    const char *s = task_names[subject].name, *o = task_names[object].name;
    task_putf(t, "%s is %s than %s, so from %s to %s: %s, %s.", s, less ? r->less : r->more, o, r->most,
              r->least, less ? o : s, less ? s : o);
}

static void task_drill(TaskFamily family, uint64_t seed, long index, TaskText *t) {
    TaskStep facts[TASK_ARITHMETIC_FACTS];
    int n = family == TASK_MATH ? task_arithmetic_facts(facts) : TASK_ORDER_FACTS;
    int *order = xmalloc((size_t)n * sizeof(int));
    long per_line = task_drill_per_line[family], first = index * per_line, round = -1;
    for (long j = first; j < first + per_line; j++) {
        if (j / n != round) { // the order of this round
            round = j / n;
            Rng rng = rng_seeded(task_mix64(seed ^ 0x4452494C4C53ull) + (uint64_t)round); // "DRILLS"
            for (int k = 0; k < n; k++) order[k] = k;
            rng_shuffle(&rng, order, n);
        }
        if (family == TASK_MATH) {
            const TaskStep *f = &facts[order[j % n]];
            task_putf(t, "%s%ld %c %ld = %ld.", j > first ? " " : "", f->a, f->op, f->b, f->c);
        } else {
            if (j > first) task_puts(t, "\n");
            task_order_fact(order[j % n], t);
        }
    }
    free(order);
}

// --- `./sirt data`.

void task_write_json(FILE *f, const TaskItem *it) {
    fputs("{\"question\": ", f);
    json_write_string(f, it->question, strlen(it->question));
    fputs(", \"answer\": ", f);
    json_write_string(f, it->answer, strlen(it->answer));
    fputs(", \"gold\": ", f);
    json_write_string(f, it->gold, strlen(it->gold));
    if (it->family == TASK_MATH) { // the true steps, for judging a student's (lib/answer.h)
        TaskText truth = {0};
        task_truth_text(it, &truth);
        fputs(", \"truth\": ", f);
        json_write_string(f, truth.data, truth.len);
        free(truth.data);
    }
    fprintf(f, ", \"noisy\": %s, \"template\": %d}\n", it->noisy ? "true" : "false",
            it->template_id);
}

int cmd_data(int argc, char **argv) {
    int family = TASK_MATH, split = TASK_SPLIT_TRAIN;
    long n = 1000;
    uint64_t seed = 1;
    float noise = 0.0f;
    int stories = 0, drills = 0;
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
        {"--stories", NULL, FLAG_SWITCH, .value = &stories,
         "write each problem as a story, {\"text\": ...}: phase 0's text"},
        {"--drills", NULL, FLAG_SWITCH, .value = &drills,
         "write N drills of --task's facts instead, {\"text\": ...} (--split is ignored)"},
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
        if (drills) {
            TaskText t = {0};
            task_drill(family, seed, i, &t);
            fputs("{\"text\": ", f);
            json_write_string(f, t.data, t.len);
            fputs("}\n", f);
            free(t.data);
            continue;
        }
        TaskItem it;
        task_make_item(family, split, seed, noise, i, &it);
        if (stories) {
            fputs("{\"text\": ", f);
            json_write_string(f, it.story, strlen(it.story));
            fputs("}\n", f);
        } else {
            task_write_json(f, &it);
        }
        task_item_free(&it);
    }
    if (out_path) safe_commit(&sf);
    else if (fflush(stdout) != 0) die("writing to stdout failed");
    return 0;
}


#endif // SIRT_LIB_TASK_H
