// lib/templates.h — prompt templates and training examples: GSM8K-style items rendered as
// prompt/completion pairs (Example, examples_load).
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_TEMPLATES_H
#define SIRT_LIB_TEMPLATES_H

// =============================================================================================
// Training examples: one = a prompt and a completion (the loss is on the completion only).
//
// The data formats, detected from the fields a line has (checked in this order):
//   {"prompt": P, "completion": C}  ->  prompt P, completion C, verbatim.
//   {"text": T}                     ->  prompt "", completion T (the loss is on every token).
//   {"question": Q, "answer": A}    ->  a reasoning item in GSM8K's form, rendered as below;
//                                       an optional string "gold" is its true final answer,
//                                       scored against in place of the `#### N` of a teacher
//                                       that may be wrong (the completion still ends with N);
//                                       an optional string "truth" holds its true steps.
// Other fields (such as "options") are ignored. `./sirt data` writes the third form (lib/task.h).
//
// The prompt template (SIPF's format), with one instruction slot:
//
//     ### Instruction:
//     {instruction}
//
//     ### Question:
//     {question}
//
//     ### Answer:
//
// (the prompt ends with the newline after "### Answer:"; the question is trimmed of surrounding
// white space). Instructions:
//     cot    "Let's think step by step to answer the following question."
//     plain  "Answer the following question."
//     none   no template: the prompt is the question, verbatim.
//
// The answer rule. A GSM8K answer is step lines and then a final line `#### N`. The completion is
// the step lines (each trimmed; empty lines dropped), then the final line rewritten as
// `The answer is N.`; with the plain instruction the completion is that last line alone. N is
// normalized: a number loses its thousands separators and a leading '+' (`#### 1,080` -> `The
// answer is 1080.`), keeping its sign and decimals (`-3`, `0.5`); anything else (a choice letter
// like `B`) is kept as written. The gold answer used for scoring is that same N. Calculator
// notes such as `<<48/2=24>>` are kept, or removed with strip_calculator_notes.
// =============================================================================================

typedef enum { TEMPLATE_COT, TEMPLATE_PLAIN, TEMPLATE_NONE } TemplateKind;
// plain_share: the share of question/answer items rendered with the plain template whatever
// `kind` says (phase 1 teaches both forms); an item is one of them when a fixed hash of its
// question text says so, so the choice does not depend on the file's order or on a seed.
typedef struct { TemplateKind kind; int strip_calculator_notes; float plain_share; } TemplateOptions;
// gold: the final answer ("1080", "-3", "B"); from the item's "gold" field when it has one, else
// from the answer's "#### N" line; NULL for prompt/completion and text items.
// truth: the true steps of the built-in task's items ("A OP B = C" lines; lib/task.h), NULL
// when the line has no "truth" field.
typedef struct { char *prompt; char *completion; char *gold; char *truth; } Example;

static const char *template_instruction(TemplateKind kind) {
    return kind == TEMPLATE_COT ? "Let's think step by step to answer the following question."
                                : "Answer the following question.";
}

// Copies s[0..n) without the white space at either end.
static char *json_trimmed(const char *s, size_t n) {
    while (n && json_is_space(*s)) s++, n--;
    while (n && json_is_space(s[n - 1])) n--;
    return json_strndup(s, n);
}

// The rendered prompt for a question (malloc'd).
static char *template_prompt(TemplateKind kind, const char *question) {
    if (kind == TEMPLATE_NONE) return json_strndup(question, strlen(question));
    JsonBuf b = {0};
    char *q = json_trimmed(question, strlen(question));
    json_buf_puts(&b, "### Instruction:\n");
    json_buf_puts(&b, template_instruction(kind));
    json_buf_puts(&b, "\n\n### Question:\n");
    json_buf_puts(&b, q);
    json_buf_puts(&b, "\n\n### Answer:\n");
    free(q);
    return json_buf_take(&b);
}

// A copy of s without its calculator notes "<<...>>" (a note never spans lines; an unclosed
// "<<" is kept as text).
static char *gsm8k_strip_calculator_notes(const char *s) {
    JsonBuf b = {0};
    while (*s) {
        const char *close = NULL;
        if (s[0] == '<' && s[1] == '<') {
            close = strstr(s + 2, ">>");
            const char *nl = strchr(s + 2, '\n');
            if (close && nl && nl < close) close = NULL;
        }
        if (close) s = close + 2;
        else json_buf_put(&b, s++, 1);
    }
    return json_buf_take(&b);
}

// If s is a number written with optional sign, thousands separators (groups of exactly three
// digits) and decimals, returns it without the separators and without a '+'; otherwise NULL.
static char *gsm8k_normalize_number(const char *s) {
    JsonBuf b = {0};
    if (*s == '+' || *s == '-') { if (*s == '-') json_buf_put(&b, s, 1); s++; }
    int digits = 0, group = -1; // group: digits since the last comma (-1: no comma yet)
    for (; json_is_digit(*s) || *s == ','; s++) {
        if (*s == ',') {
            if (digits == 0 || (group >= 0 && group != 3) || (group < 0 && digits > 3)) break;
            group = 0;
            continue;
        }
        json_buf_put(&b, s, 1);
        digits++;
        if (group >= 0) group++;
    }
    int ok = digits > 0 && *s != ',' && (group < 0 || group == 3);
    if (ok && *s == '.' && json_is_digit(s[1]))
        for (json_buf_put(&b, s++, 1); json_is_digit(*s); s++) json_buf_put(&b, s, 1);
    if (!ok || *s) { free(b.data); return NULL; }
    return json_buf_take(&b);
}

// Splits a GSM8K answer into its steps (the lines before "####", each trimmed, empty ones
// dropped, joined with '\n') and its final answer (normalized as described above).
static int gsm8k_parse_answer(const char *answer, char **steps, char **final_answer, char *err, size_t errlen) {
    *steps = *final_answer = NULL;
    const char *mark = NULL; // the last "####" (of a longer run of '#', its last four)
    for (const char *m = strstr(answer, "####"); m; m = strstr(m + 1, "####")) mark = m;
    if (!mark) { snprintf(err, errlen, "the answer has no final '#### N' line"); return -1; }
    char *final_text = json_trimmed(mark + 4, strlen(mark + 4));
    while (mark > answer && mark[-1] == '#') mark--; // the steps end where the run begins
    if (!*final_text || strchr(final_text, '\n')) {
        snprintf(err, errlen, *final_text ? "the text after '####' spans several lines" : "nothing after '####'");
        free(final_text);
        return -1;
    }
    char *number = gsm8k_normalize_number(final_text);
    *final_answer = number ? number : json_strndup(final_text, strlen(final_text));
    free(final_text);
    JsonBuf b = {0};
    for (const char *line = answer; line < mark;) {
        const char *nl = memchr(line, '\n', (size_t)(mark - line));
        const char *end = nl ? nl : mark;
        char *t = json_trimmed(line, (size_t)(end - line));
        if (*t) {
            if (b.len) json_buf_puts(&b, "\n");
            json_buf_puts(&b, t);
        }
        free(t);
        line = end + 1;
    }
    *steps = json_buf_take(&b);
    return 0;
}

// The completion: steps (unless plain) and then "The answer is N."
static char *template_completion(TemplateKind kind, const char *steps, const char *final_answer) {
    JsonBuf b = {0};
    if (kind != TEMPLATE_PLAIN && *steps) {
        json_buf_puts(&b, steps);
        json_buf_puts(&b, "\n");
    }
    json_buf_puts(&b, "The answer is ");
    json_buf_puts(&b, final_answer);
    json_buf_puts(&b, ".");
    return json_buf_take(&b);
}

static void example_free(Example *ex) {
    free(ex->prompt);
    free(ex->completion);
    free(ex->gold);
    free(ex->truth);
    ex->prompt = ex->completion = ex->gold = ex->truth = NULL;
}

static int example_from_question(const char *question, const char *answer, const TemplateOptions *opt,
                                 Example *out, char *err, size_t errlen) {
    char *stripped = opt->strip_calculator_notes ? gsm8k_strip_calculator_notes(answer) : NULL;
    char *steps, *final_answer;
    int rc = gsm8k_parse_answer(stripped ? stripped : answer, &steps, &final_answer, err, errlen);
    free(stripped);
    if (rc != 0) return -1;
    TemplateKind kind = opt->kind;
    if (opt->plain_share > 0 && (double)(hash_text(question) >> 11) * 0x1p-53 < opt->plain_share)
        kind = TEMPLATE_PLAIN;
    out->prompt = template_prompt(kind, question);
    out->completion = template_completion(kind, steps, final_answer);
    out->gold = final_answer;
    out->truth = NULL;
    free(steps);
    return 0;
}

// Builds one example from a line's object; the format is detected from the fields present.
static int example_from_json(const JsonObject *obj, const TemplateOptions *opt, Example *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const char *prompt, *completion, *text, *question, *answer;
    if (json_get(obj, "prompt")) {
        if (!(prompt = json_require_string(obj, "prompt", err, errlen))) return -1;
        if (!(completion = json_require_string(obj, "completion", err, errlen))) return -1;
        out->prompt = json_strndup(prompt, strlen(prompt));
        out->completion = json_strndup(completion, strlen(completion));
        return 0;
    }
    if (json_get(obj, "text")) {
        if (!(text = json_require_string(obj, "text", err, errlen))) return -1;
        out->prompt = json_strndup("", 0);
        out->completion = json_strndup(text, strlen(text));
        return 0;
    }
    if (json_get(obj, "question")) {
        if (!(question = json_require_string(obj, "question", err, errlen))) return -1;
        if (!(answer = json_require_string(obj, "answer", err, errlen))) return -1;
        if (example_from_question(question, answer, opt, out, err, errlen) != 0) return -1;
        // a "gold" field (the built-in task writes one) is the true answer even when the
        // demonstration is wrong (teacher noise)
        const JsonField *gold = json_get(obj, "gold");
        if (gold && gold->type == JSON_STRING) {
            char *normal = gsm8k_normalize_number(gold->text);
            free(out->gold);
            out->gold = normal ? normal : json_strndup(gold->text, gold->len);
        }
        const JsonField *truth = json_get(obj, "truth");
        if (truth && truth->type == JSON_STRING) out->truth = json_strndup(truth->text, truth->len);
        return 0;
    }
    snprintf(err, errlen, "no known fields (expected \"prompt\" and \"completion\", \"text\", or "
                          "\"question\" and \"answer\")");
    return -1;
}

static void examples_free(Example *examples, int count) {
    for (int i = 0; i < count; i++) example_free(&examples[i]);
    free(examples);
}

// The examples of a parsed JSONL file. Returns 0, or -1 with "FILE:LINE: what is wrong" in err
// (also when the file has no examples), leaving nothing allocated.
static int examples_from_jsonl(const JsonlFile *f, const TemplateOptions *opt, Example **out,
                               int *count, char *err, size_t errlen) {
    if (f->count == 0) {
        snprintf(err, errlen, "%s: no examples in the file", f->path);
        return -1;
    }
    Example *examples = xcalloc((size_t)f->count, sizeof(Example));
    for (int i = 0; i < f->count; i++) {
        char what[256];
        if (example_from_json(&f->objects[i], opt, &examples[i], what, sizeof what) != 0) {
            snprintf(err, errlen, "%s:%d: %s", f->path, f->line_numbers[i], what);
            examples_free(examples, i + 1);
            return -1;
        }
    }
    *out = examples;
    *count = f->count;
    return 0;
}

// Loads a whole file of examples; dies with FILE:LINE on any problem, or when it has none.
static void examples_load(const char *path, const TemplateOptions *opt, Example **out, int *count) {
    JsonlFile f;
    jsonl_read(path, &f);
    char err[4400];
    int rc = examples_from_jsonl(&f, opt, out, count, err, sizeof err);
    jsonl_free(&f);
    if (rc != 0) die("%s", err);
}


// The prompt of a JSONL item: "prompt" verbatim, or "question" through the template, or "text".
static char *prompt_of_item(const JsonlFile *f, int i, TemplateKind kind) {
    const JsonObject *obj = &f->objects[i];
    const JsonField *field;
    if ((field = json_get(obj, "prompt")) || (field = json_get(obj, "text"))) {
        if (field->type != JSON_STRING)
            die("%s:%d: \"%s\" must be a string", f->path, f->line_numbers[i], field->key);
        return json_strndup(field->text, field->len);
    }
    return template_prompt(kind, jsonl_string(f, i, "question"));
}

#endif // SIRT_LIB_TEMPLATES_H
