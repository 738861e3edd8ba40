// tests/test_text.c — tests of lib/jsonl.h and lib/templates.h: JSON lines, templates, training
// examples. Built from the program's own translation unit (sirt.c without its main); writes only
// in a scratch directory of its own. Run:
//   tests/test_text [GSM8K_DIR]   (default ../shared/data/gsm8k; skipped with a message if absent)
// Prints one line per check and ends with "N passed, M failed"; exits non-zero on a failure.
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"
#include <sys/wait.h>


// ---- the check harness -----------------------------------------------------------------------
// Runs a statement that should call die() in a child process: sets died when the child exits
// with status 1, and die_message holds the error line it printed (without "sirt: error: ").
static int died;
static char die_message[1024];
#define EXPECT_DIE(stmt) do { \
        int fds[2]; \
        died = 0; die_message[0] = 0; \
        fflush(stdout); \
        if (pipe(fds) != 0) break; \
        pid_t pid = fork(); \
        if (pid == 0) { dup2(fds[1], 2); close(fds[0]); stmt; _exit(0); } \
        close(fds[1]); \
        size_t got = 0; ssize_t n; /* read to EOF: the message may come in several writes */ \
        while ((n = read(fds[0], die_message + got, sizeof die_message - 1 - got)) > 0) got += n; \
        close(fds[0]); \
        int status = 0; waitpid(pid, &status, 0); \
        die_message[got] = 0; \
        char *nl = strchr(die_message, '\n'); if (nl) *nl = 0; \
        if (!strncmp(die_message, "sirt: error: ", 13)) \
            memmove(die_message, die_message + 13, strlen(die_message + 13) + 1); \
        died = WIFEXITED(status) && WEXITSTATUS(status) == 1; \
    } while (0)

// Whether the child died with the message "PATH" followed by rest.
static int died_with(const char *path, const char *rest) {
    size_t n = strlen(path);
    return died && strncmp(die_message, path, n) == 0 && strcmp(die_message + n, rest) == 0;
}

// Writes text to path; a file that cannot be written ends the program (exit 1).
static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    if (fclose(f) != 0) die("cannot write %s: %s", path, strerror(errno));
}

// s with newlines shown as \n, so that each check prints on one line.
static const char *shown(const char *s) {
    static char buf[512];
    size_t n = 0;
    for (; *s && n + 3 < sizeof buf; s++) {
        if (*s == '\n') buf[n++] = '\\', buf[n++] = 'n';
        else if (*s == '\r') buf[n++] = '\\', buf[n++] = 'r';
        else buf[n++] = *s;
    }
    buf[n] = 0;
    return buf;
}

// Parses one line; returns the value of key as a string ("" if absent), errors to err.
static int parse(const char *line, JsonObject *obj, char *err) {
    return json_parse_object(line, strlen(line), obj, err, 256);
}

static void expect_string(const char *line, const char *key, const char *want, size_t want_len, const char *what) {
    JsonObject obj;
    char err[256] = "";
    int rc = parse(line, &obj, err);
    const JsonField *f = rc == 0 ? json_get(&obj, key) : NULL;
    check(f && f->type == JSON_STRING && f->len == want_len && memcmp(f->text, want, want_len) == 0,
          "%s%s%s", what, rc ? ": " : "", rc ? err : "");
    if (rc == 0) json_object_free(&obj);
}

static void expect_error(const char *line, const char *want, const char *what) {
    JsonObject obj;
    char err[256] = "";
    int rc = parse(line, &obj, err);
    check(rc != 0 && strstr(err, want) != NULL, "%s -> error \"%s\"", what, err);
    if (rc == 0) json_object_free(&obj);
}

static void expect_number(const char *text, double want) {
    char line[128], err[256] = "";
    snprintf(line, sizeof line, "{\"n\": %s}", text);
    JsonObject obj;
    int rc = parse(line, &obj, err);
    const JsonField *f = rc == 0 ? json_get(&obj, "n") : NULL;
    check(f && f->type == JSON_NUMBER && f->number == want && strcmp(f->text, text) == 0,
          "number %s = %g", text, want);
    if (rc == 0) json_object_free(&obj);
}

// ---- tests -----------------------------------------------------------------------------------

static void test_strings(void) {
    expect_string("{\"s\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"}", "s", "\" \\ / \b \f \n \r \t", 15, "simple escapes");
    expect_string("{\"s\":\"\\u00e9\\u20AC\"}", "s", "\xC3\xA9\xE2\x82\xAC", 5, "\\u00e9 \\u20AC -> e-acute euro");
    expect_string("{\"s\":\"\\ud83d\\ude00\"}", "s", "\xF0\x9F\x98\x80", 4, "surrogate pair -> U+1F600 (F0 9F 98 80)");
    expect_string("{\"s\":\"caf\xC3\xA9 \xE2\x80\x9Cq\xE2\x80\x9D\"}", "s", "caf\xC3\xA9 \xE2\x80\x9Cq\xE2\x80\x9D", 13, "raw UTF-8 passes through");
    expect_string("{\"k\\u00e9y\":\"v\"}", "k\xC3\xA9y", "v", 1, "escapes in keys are decoded");
    expect_string("{\"s\":\"\"}", "s", "", 0, "empty string");
    expect_error("{\"s\":\"\\ud83d\"}", "lone high surrogate", "lone high surrogate");
    expect_error("{\"s\":\"\\ud83dx\"}", "lone high surrogate", "high surrogate then a plain char");
    expect_error("{\"s\":\"\\ude00\"}", "lone low surrogate", "lone low surrogate");
    expect_error("{\"s\":\"\\ud83d\\u0041\"}", "not a low surrogate", "high surrogate then \\u0041");
    expect_error("{\"s\":\"\\u12\"}", "four hex digits", "short \\u escape");
    expect_error("{\"s\":\"\\u0000\"}", "\\u0000 is not allowed", "\\u0000 rejected");
    expect_error("{\"s\":\"\\x\"}", "invalid escape \\x", "invalid escape \\x");
    expect_error("{\"s\":\"\\'\"}", "invalid escape \\'", "invalid escape \\'");
    expect_error("{\"s\":\"a\tb\"}", "control character 0x09", "raw tab inside a string");
    expect_error("{\"s\":\"a\x01\"}", "control character 0x01", "raw 0x01 inside a string");
    expect_error("{\"s\":\"abc", "unterminated string", "unterminated string");
    expect_error("{\"s\":\"abc\\", "unterminated string", "unterminated string after a backslash");
    expect_error("{\"s", "unterminated string", "unterminated key");
}

static void test_syntax(void) {
    expect_error("{\"a\" 1}", "expected ':' after key", "missing colon");
    expect_error("{\"a\":1 \"b\":2}", "expected ',' or '}' after a value", "missing comma");
    expect_error("{\"a\":1} x", "trailing characters after the object", "trailing garbage");
    expect_error("{\"a\":1}{}", "trailing characters after the object", "two objects on a line");
    expect_error("{\"a\":1,}", "expected a string key", "trailing comma");
    expect_error("{a:1}", "expected a string key", "unquoted key");
    expect_error("[1,2]", "expected '{'", "an array is not an object");
    expect_error("{\"a\":}", "expected a value", "missing value");
    expect_error("{\"a\":tru}", "invalid literal", "bad literal");
    expect_error("{\"a\":1", "unterminated object", "unterminated object");
    expect_error("{\"a\":[1,]}", "expected a value", "nested trailing comma");
    expect_error("{\"a\":[1 2]}", "expected ',' or ']'", "nested missing comma");
    expect_error("{\"a\":{\"b\" 1}}", "expected ':' after key", "nested missing colon");
    expect_error("{\"a\":\"x\"} x", "(column 11)", "errors give the byte column");

    JsonObject obj;
    char err[256] = "";
    int rc = parse(" { \"a\" : [1,{\"b\":[]}] , \"question\":\"q\",\"answer\":\"x\\n#### 3\", \"t\":true,"
                   "\"f\":false,\"z\":null,\"o\":{ } } ", &obj, err);
    const JsonField *a = rc == 0 ? json_get(&obj, "a") : NULL;
    check(a && a->type == JSON_ARRAY && strcmp(a->text, "[1,{\"b\":[]}]") == 0 && obj.count == 7,
          "nested values skipped, kept as source text %s", err);
    check(rc == 0 && json_get(&obj, "t")->type == JSON_TRUE && json_get(&obj, "f")->type == JSON_FALSE &&
          json_get(&obj, "z")->type == JSON_NULL && json_get(&obj, "o")->type == JSON_OBJECT,
          "true/false/null/object types");
    check(rc == 0 && strcmp(json_get(&obj, "answer")->text, "x\n#### 3") == 0 && !json_get(&obj, "b"),
          "fields after a nested value; nested keys are not fields");
    if (rc == 0) json_object_free(&obj);

    rc = parse("{\"a\":\"1\",\"b\":2,\"a\":\"last\"}", &obj, err);
    check(rc == 0 && obj.count == 2 && strcmp(json_get(&obj, "a")->text, "last") == 0, "duplicate keys: last wins");
    if (rc == 0) json_object_free(&obj);
    rc = parse("{}", &obj, err);
    check(rc == 0 && obj.count == 0, "empty object");
    if (rc == 0) json_object_free(&obj);
}

// A value nested `levels` deep inside the line's object: {"a":[[...]]}.
static void test_depth(int levels, int want_ok) {
    size_t n = (size_t)levels;
    char *line = xmalloc(2 * n + 16);
    strcpy(line, "{\"a\":");
    memset(line + 5, '[', n);
    memset(line + 5 + n, ']', n);
    strcpy(line + 5 + 2 * n, "}");
    JsonObject obj;
    char err[256] = "";
    int rc = parse(line, &obj, err);
    check(want_ok ? rc == 0 : rc != 0 && strstr(err, "nesting deeper than 64"),
          "%d nested arrays inside the object (total depth %d): %s", levels, levels + 1, rc ? err : "ok");
    if (rc == 0) json_object_free(&obj);
    free(line);
}

static void test_numbers(void) {
    expect_number("-0.5e3", -500);
    expect_number("0", 0);
    expect_number("-0", 0);
    expect_number("1E-2", 0.01);
    expect_number("12.25e+1", 122.5);
    expect_number("7473", 7473);
    expect_error("{\"n\":01}", "leading zeros", "number 01");
    expect_error("{\"n\":1.}", "digits after '.'", "number 1.");
    expect_error("{\"n\":-}", "digits after '-'", "number -");
    expect_error("{\"n\":.5}", "expected a value", "number .5");
    expect_error("{\"n\":+1}", "expected a value", "number +1");
    expect_error("{\"n\":1e}", "exponent", "number 1e");
    expect_error("{\"n\":1x}", "expected ',' or '}'", "number 1x");
}

static void test_files(void) {
    const char data[] = "\xEF\xBB\xBF{\"a\":\"1\"}\r\n\n   \t\r\n{\"a\":\"2\"}\n\r\n{\"a\":\"3\"}";
    JsonlFile f;
    char err[512] = "";
    int rc = jsonl_parse_buffer("t.jsonl", data, sizeof data - 1, &f, err, sizeof err);
    check(rc == 0 && f.count == 3, "BOM, CRLF, empty and blank lines, no final newline: 3 objects %s", err);
    check(rc == 0 && f.line_numbers[0] == 1 && f.line_numbers[1] == 4 && f.line_numbers[2] == 6,
          "line numbers count skipped lines (1, 4, 6)");
    check(rc == 0 && strcmp(jsonl_string(&f, 2, "a"), "3") == 0, "last line without newline is read");
    if (rc == 0) jsonl_free(&f);

    const char empty[] = "\n  \n";
    rc = jsonl_parse_buffer("e.jsonl", empty, sizeof empty - 1, &f, err, sizeof err);
    check(rc == 0 && f.count == 0, "a file of blank lines has no objects");
    if (rc == 0) jsonl_free(&f);

    const char bad[] = "{\"a\":\"1\"}\n\n{\"a\":\"unterminated}\n{\"a\":2}\n";
    rc = jsonl_parse_buffer("train.jsonl", bad, sizeof bad - 1, &f, err, sizeof err);
    check(rc != 0 && strncmp(err, "train.jsonl:3: unterminated string", 34) == 0, "malformed line -> \"%s\"", err);

    // Through the file reader, whose failures die(); the files are in a scratch directory.
    char dir[4096], path[4096];
    scratch_make(dir, sizeof dir, "test_text");
    scratch_path(path, sizeof path, dir, "items.jsonl");
    write_text(path, "{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"prompt\":\"p\" \"completion\":\"c\"}\n");
    EXPECT_DIE(jsonl_read(path, &f));
    check(died_with(path, ":2: expected ',' or '}' after a value (column 15)"),
          "jsonl_read dies with \"%s\"", die_message);
    EXPECT_DIE(jsonl_read("/nonexistent/x.jsonl", &f));
    check(died && strstr(die_message, "cannot open /nonexistent/x.jsonl"),
          "missing file dies with \"%s\"", die_message);

    write_text(path, "{\"question\":\"q\",\"answer\":\"#### 1\"}\n\n{\"prompt\":\"p\"}\n{\"question\":\"q\",\"answer\":3}\n");
    jsonl_read(path, &f);
    EXPECT_DIE(jsonl_string(&f, 1, "completion"));
    check(died_with(path, ":3: missing field \"completion\""), "missing field dies with \"%s\"", die_message);
    EXPECT_DIE(jsonl_string(&f, 2, "answer"));
    check(died_with(path, ":4: \"answer\" must be a string"), "wrong type dies with \"%s\"", die_message);
    jsonl_free(&f);
    TemplateOptions opt = {TEMPLATE_COT, 0, 0};
    Example *ex;
    int count;
    EXPECT_DIE(examples_load(path, &opt, &ex, &count));
    check(died_with(path, ":3: missing field \"completion\""), "examples_load dies with \"%s\"", die_message);
    write_text(path, "{\"question\":\"q\",\"answer\":\"4\"}\n");
    EXPECT_DIE(examples_load(path, &opt, &ex, &count));
    check(died_with(path, ":1: the answer has no final '#### N' line"),
          "examples_load dies with \"%s\"", die_message);
    write_text(path, "{\"text\":\"hello\"}\r\n{\"prompt\":\"p\",\"completion\":\"c\",\"extra\":[1]}");
    examples_load(path, &opt, &ex, &count);
    check(count == 2 && strcmp(ex[0].completion, "hello") == 0 && strcmp(ex[1].prompt, "p") == 0,
          "examples_load reads text and prompt/completion items");
    examples_free(ex, count);
    scratch_remove(dir);
}

static void expect_answer(const char *answer, const char *want_steps, const char *want_final) {
    char *steps, *final, err[256] = "";
    int rc = gsm8k_parse_answer(answer, &steps, &final, err, sizeof err);
    check(rc == 0 && strcmp(steps, want_steps) == 0 && strcmp(final, want_final) == 0,
          "answer \"%s\" -> final \"%s\" %s", shown(answer), rc == 0 ? final : "", err);
    if (rc == 0) { free(steps); free(final); }
}

static void expect_example(const char *line, TemplateKind kind, int strip, const char *prompt,
                           const char *completion, const char *gold, const char *what) {
    JsonObject obj;
    char err[256] = "";
    Example ex = {0};
    TemplateOptions opt = {kind, strip, 0};
    int rc = parse(line, &obj, err);
    if (rc == 0) rc = example_from_json(&obj, &opt, &ex, err, sizeof err);
    int ok = rc == 0 && strcmp(ex.prompt, prompt) == 0 && strcmp(ex.completion, completion) == 0 &&
             (gold ? ex.gold && strcmp(ex.gold, gold) == 0 : ex.gold == NULL);
    check(ok, "%s %s", what, err);
    if (!ok && rc == 0) printf("     got prompt [%s]\n     completion [%s]\n", ex.prompt, ex.completion);
    json_object_free(&obj);
    example_free(&ex);
}

static void expect_example_error(const char *line, const char *want) {
    JsonObject obj;
    char err[256] = "";
    Example ex;
    TemplateOptions opt = {TEMPLATE_COT, 0, 0};
    int rc = parse(line, &obj, err);
    check(rc == 0 && example_from_json(&obj, &opt, &ex, err, sizeof err) != 0 && strcmp(err, want) == 0,
          "example error \"%s\"", err);
    json_object_free(&obj);
}

static void test_templates(void) {
    expect_answer("a <<1+1=2>>2\nb\n#### 1,080", "a <<1+1=2>>2\nb", "1080");
    expect_answer("x  \n\n  y\r\n#### -3  ", "x\ny", "-3");
    expect_answer("half\n#### 0.5", "half", "0.5");
    expect_answer("#### B", "", "B");
    expect_answer("s\n#### +12,345,678.25", "s", "12345678.25");
    expect_answer("s\n#### 1,08", "s", "1,08");
    expect_answer("s\n#### 1234,567", "s", "1234,567");
    expect_answer("so 5 #### 5", "so 5", "5");
    expect_answer("s\n##### 7", "s", "7");
    char *stripped = gsm8k_strip_calculator_notes("48/2 = <<48/2=24>>24 and <<2+2=4>>4, x << y\n>> z");
    check(strcmp(stripped, "48/2 = 24 and 4, x << y\n>> z") == 0, "calculator notes stripped: [%s]", shown(stripped));
    free(stripped);

    const char *item = "{\"question\":\"Natalia sold clips to 48 friends. How many?\",\"answer\":"
                       "\"Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\nIn all 48+24 = <<48+24=72>>72.\\n#### 72\"}";
    const char *cot_prompt = "### Instruction:\nLet's think step by step to answer the following question.\n\n"
                             "### Question:\nNatalia sold clips to 48 friends. How many?\n\n### Answer:\n";
    expect_example(item, TEMPLATE_COT, 0, cot_prompt,
                   "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nIn all 48+24 = <<48+24=72>>72.\nThe answer is 72.",
                   "72", "cot template, notes kept");
    expect_example(item, TEMPLATE_COT, 1, cot_prompt,
                   "Natalia sold 48/2 = 24 clips in May.\nIn all 48+24 = 72.\nThe answer is 72.", "72",
                   "cot template, notes stripped");
    expect_example(item, TEMPLATE_PLAIN, 1,
                   "### Instruction:\nAnswer the following question.\n\n"
                   "### Question:\nNatalia sold clips to 48 friends. How many?\n\n### Answer:\n",
                   "The answer is 72.", "72", "plain template: the answer line only");
    expect_example(item, TEMPLATE_NONE, 1, "Natalia sold clips to 48 friends. How many?",
                   "Natalia sold 48/2 = 24 clips in May.\nIn all 48+24 = 72.\nThe answer is 72.", "72",
                   "no template: the question verbatim");
    expect_example("{\"question\":\"  Q \\u201cx\\u201d?  \",\"answer\":\"a \\n#### 1,080 \",\"options\":[\"A\"]}",
                   TEMPLATE_COT, 0,
                   "### Instruction:\nLet's think step by step to answer the following question.\n\n"
                   "### Question:\nQ \xE2\x80\x9Cx\xE2\x80\x9D?\n\n### Answer:\n",
                   "a\nThe answer is 1080.", "1080", "thousands separator, curly quotes, spaces, options ignored");
    expect_example("{\"question\":\"Which?\",\"answer\":\"#### B\"}", TEMPLATE_COT, 0,
                   "### Instruction:\nLet's think step by step to answer the following question.\n\n"
                   "### Question:\nWhich?\n\n### Answer:\n", "The answer is B.", "B", "multiple choice letter");
    expect_example("{\"prompt\":\"P \",\"completion\":\" C\\n\",\"question\":\"ignored\"}", TEMPLATE_COT, 1,
                   "P ", " C\n", NULL, "prompt/completion verbatim (takes precedence)");
    expect_example("{\"text\":\"all of it\"}", TEMPLATE_PLAIN, 0, "", "all of it", NULL, "text item");
    expect_example_error("{\"prompt\":\"p\"}", "missing field \"completion\"");
    expect_example_error("{\"prompt\":\"p\",\"completion\":null}", "\"completion\" must be a string");
    expect_example_error("{\"question\":\"q\",\"answer\":42}", "\"answer\" must be a string");
    expect_example_error("{\"question\":\"q\"}", "missing field \"answer\"");
    expect_example_error("{\"question\":\"q\",\"answer\":\"x\\n#### \"}", "nothing after '####'");
    expect_example_error("{\"question\":\"q\",\"answer\":\"x\\n#### 3\\nmore\"}", "the text after '####' spans several lines");
    expect_example_error("{\"input\":\"q\"}",
                         "no known fields (expected \"prompt\" and \"completion\", \"text\", or \"question\" and \"answer\")");
}

// ---- writing and round trips -----------------------------------------------------------------

static char *write_to_string(const char *s, size_t len, size_t *out_len) {
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    if (!f) die("open_memstream: %s", strerror(errno));
    fputs("{\"k\":", f);
    json_write_string(f, s, len);
    fputs("}", f);
    if (fclose(f) != 0) die("open_memstream: cannot write");
    *out_len = text_len;
    return text; // NUL-terminated by open_memstream
}

static uint64_t rng_next(uint64_t *state) { // xorshift64*
    *state ^= *state >> 12, *state ^= *state << 25, *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

static void test_writing(void) {
    size_t n;
    const char raw[] = "a\"b\\c/\n\x01\x7f\xC3\xA9\xFF\xED\xA0\x80z";
    char *w = write_to_string(raw, sizeof raw - 1, &n);
    check(strcmp(w, "{\"k\":\"a\\\"b\\\\c/\\n\\u0001\x7f\xC3\xA9\\ufffd\\ufffd\\ufffd\\ufffdz\"}") == 0,
          "escapes written; invalid UTF-8 bytes (FF, encoded surrogate) -> \\ufffd: %s", shown(w));
    free(w);

    uint64_t state = 0x9E3779B97F4A7C15ULL;
    int round_trips = 0, trials = 2000;
    for (int t = 0; t < trials; t++) {
        JsonBuf b = {0};
        int chars = (int)(rng_next(&state) % 40);
        for (int i = 0; i < chars; i++) { // random code points: ASCII incl. controls, then 2-, 3-, 4-byte
            uint64_t r = rng_next(&state), kind = r % 4;
            unsigned long cp = kind == 0 ? 1 + (r >> 8) % 0x7F : kind == 1 ? 0x80 + (r >> 8) % 0x780
                             : kind == 2 ? 0x800 + (r >> 8) % 0xF800 : 0x10000 + (r >> 8) % 0x100000;
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; // surrogates are not characters
            unsigned char utf8[4];
            json_buf_put(&b, utf8, utf8_encode((uint32_t)cp, utf8));
        }
        json_buf_put(&b, "", 0);
        char *text = write_to_string(b.data, b.len, &n);
        JsonObject obj;
        char err[256];
        if (json_parse_object(text, n, &obj, err, sizeof err) == 0) {
            const JsonField *f = json_get(&obj, "k");
            round_trips += f && f->len == b.len && memcmp(f->text, b.data, b.len) == 0;
            json_object_free(&obj);
        }
        free(text);
        free(b.data);
    }
    check(round_trips == trials, "json_write_string -> json_parse_object round-trips %d/%d random UTF-8 strings",
          round_trips, trials);
}

// ---- GSM8K -----------------------------------------------------------------------------------

static void test_gsm8k_file(const char *dir, const char *name, int want_count) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *probe = fopen(path, "rb");
    if (!probe) { printf("skip %s: not found\n", path); return; }
    fclose(probe);

    JsonlFile f;
    jsonl_read(path, &f);
    int separators = 0, negatives = 0, decimals = 0, notes = 0, letters = 0;
    for (int i = 0; i < f.count; i++) {
        const char *answer = jsonl_string(&f, i, "answer");
        const char *fin = strstr(answer, "####");
        separators += fin && strchr(fin, ',') != NULL;
        negatives += fin && strchr(fin, '-') != NULL;
        decimals += fin && strchr(fin, '.') != NULL;
        notes += strstr(answer, "<<") != NULL;
    }
    jsonl_free(&f);

    TemplateOptions opt = {TEMPLATE_COT, 1, 0};
    Example *ex;
    int count, plain_numbers = 0, clean = 0;
    examples_load(path, &opt, &ex, &count);
    for (int i = 0; i < count; i++) {
        char *norm = gsm8k_normalize_number(ex[i].gold);
        plain_numbers += norm && strcmp(norm, ex[i].gold) == 0 && !strchr(norm, ',');
        letters += !norm;
        free(norm);
        clean += !strstr(ex[i].completion, "<<") && !strstr(ex[i].completion, ">>");
    }
    check(count == want_count, "%s: %d items (want %d)", path, count, want_count);
    check(plain_numbers == count, "%s: every final answer parsed to a plain number (%d/%d)", name, plain_numbers, count);
    check(clean == count, "%s: no << or >> left after stripping calculator notes (%d/%d)", name, clean, count);
    printf("     %s: %d with thousands separators, %d negative, %d decimal, %d with calculator notes, %d non-numeric\n",
           name, separators, negatives, decimals, notes, letters);
    if (strcmp(name, "train.jsonl") == 0 && count > 0)
        check(strcmp(ex[0].completion, "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips "
                                       "altogether in April and May.\nThe answer is 72.") == 0,
              "train.jsonl line 1 renders as expected");
    examples_free(ex, count);

    opt.strip_calculator_notes = 0;
    opt.kind = TEMPLATE_PLAIN;
    examples_load(path, &opt, &ex, &count);
    int answer_only = 0;
    for (int i = 0; i < count; i++) answer_only += strncmp(ex[i].completion, "The answer is ", 14) == 0;
    check(answer_only == count, "%s: plain template completions are the answer line only", name);
    examples_free(ex, count);
}

int main(int argc, char **argv) {
    const char *gsm8k_dir = argc > 1 ? argv[1] : "../shared/data/gsm8k";
    test_strings();
    test_syntax();
    test_depth(63, 1);
    test_depth(64, 0);
    test_depth(1000000, 0);
    test_numbers();
    test_files();
    test_templates();
    test_writing();
    test_gsm8k_file(gsm8k_dir, "train.jsonl", 7473);
    test_gsm8k_file(gsm8k_dir, "test.jsonl", 1319);
    return checks_finish();
}
