// lib/jsonl.h — JSON lines: the reader (JsonObject, jsonl_read) and the string writer.
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_JSONL_H
#define SIRT_LIB_JSONL_H

// =============================================================================================
// Every data file is JSON lines: one JSON object a line (the Hugging Face / TRL convention).
// The reader is written by hand; it needs only die, xmalloc, read_whole_file, utf8_encode and
// utf8_decode from lib/util.h, and <stdio.h> <stdlib.h> <string.h> <stdarg.h> <errno.h>.
// It also reads one whole JSON object that is too large to keep as a JsonObject, member by member
// (json_parse_object_each): tokenizer.c reads GPT-2's encoder.json with it.
//
// What the reader accepts, and what it decided where JSON leaves a choice:
//   - Each non-empty line must be one JSON object. Lines that are empty or only spaces/tabs/CR are
//     skipped; CRLF line endings and a UTF-8 byte-order mark at the start of the file are accepted.
//   - Strings: all JSON escapes, \uXXXX decoded to UTF-8, surrogate pairs joined. A lone surrogate
//     is an ERROR (not U+FFFD): it means the file was damaged, and training on it would hide that.
//     \u0000 is an error too: strings are handed on as C strings. Raw bytes >= 0x80 are copied
//     as they are (not validated): the byte-level tokenizer accepts any bytes.
//   - Numbers follow JSON's grammar exactly (no 01, 1., .5, +1); the field keeps the text as
//     written and its value as a double (strtod, "C" locale).
//   - Nested objects/arrays are validated (depth at most JSON_MAX_DEPTH, so a hostile line cannot
//     exhaust the stack) and kept only as their raw source text.
//   - Duplicate keys: the last one wins (as in Python's json module).
//   - Errors read `FILE:LINE: what is wrong`; syntax errors add the byte column at the end.
// =============================================================================================

#define JSON_MAX_DEPTH 64

typedef enum { JSON_STRING, JSON_NUMBER, JSON_TRUE, JSON_FALSE, JSON_NULL, JSON_OBJECT, JSON_ARRAY } JsonType;

// One key/value pair of a line's object. text is NUL-terminated and never NULL: the decoded
// string (JSON_STRING), or the value's source text (numbers, literals, nested objects/arrays).
typedef struct { char *key; JsonType type; char *text; size_t len; double number; } JsonField;
typedef struct { JsonField *fields; int count; } JsonObject;

// A growable byte buffer, always NUL-terminated once something was put in it.
typedef struct { char *data; size_t len, cap; } JsonBuf;

static void json_buf_put(JsonBuf *b, const void *bytes, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->len + n + 1 > cap) cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data) die("out of memory allocating %zu bytes", cap);
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static void json_buf_puts(JsonBuf *b, const char *s) { json_buf_put(b, s, strlen(s)); }

// Hands the (NUL-terminated) contents over to the caller.
static char *json_buf_take(JsonBuf *b) {
    if (!b->data) json_buf_put(b, "", 0);
    char *s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

static char *json_strndup(const char *s, size_t n) {
    char *copy = xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

// ---- the parser: a cursor over one line ---------------------------------------------------

typedef struct { const char *s; size_t len, pos; char *err; size_t errlen; } JsonParser;

// Records "what (column N)" and returns -1, so that callers can write `return json_fail(...)`.
// (In text of several lines, a whole file's object, it records "what (line L, column N)".)
static int json_fail(JsonParser *p, const char *fmt, ...) {
    char what[160];
    va_list args;
    va_start(args, fmt);
    vsnprintf(what, sizeof what, fmt, args);
    va_end(args);
    size_t line = 1, column = p->pos + 1;
    for (size_t i = 0; i < p->pos; i++)
        if (p->s[i] == '\n') line++, column = p->pos - i;
    if (line > 1) snprintf(p->err, p->errlen, "%s (line %zu, column %zu)", what, line, column);
    else snprintf(p->err, p->errlen, "%s (column %zu)", what, column);
    return -1;
}

static int json_peek(const JsonParser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }

static int json_is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void json_skip_space(JsonParser *p) {
    while (p->pos < p->len && json_is_space(p->s[p->pos])) p->pos++;
}

// Reads the four hex digits of a \u escape (the cursor is just past the 'u').
static int json_hex4(JsonParser *p, unsigned long *value) {
    *value = 0;
    for (int i = 0; i < 4; i++) {
        int c = json_peek(p);
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return json_fail(p, "\\u escape needs four hex digits");
        *value = *value * 16 + (unsigned long)digit;
        p->pos++;
    }
    return 0;
}

// A \u escape, joined with a following \uDC00-\uDFFF when it is a high surrogate.
static int json_unicode_escape(JsonParser *p, unsigned long *cp) {
    if (json_hex4(p, cp) != 0) return -1;
    if (*cp == 0) return json_fail(p, "\\u0000 is not allowed (strings are C strings)");
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) return json_fail(p, "lone low surrogate \\u%04lx", *cp);
    if (*cp < 0xD800 || *cp > 0xDBFF) return 0;
    unsigned long low;
    if (p->pos + 2 > p->len || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
        return json_fail(p, "lone high surrogate \\u%04lx (no low surrogate follows)", *cp);
    p->pos += 2;
    if (json_hex4(p, &low) != 0) return -1;
    if (low < 0xDC00 || low > 0xDFFF)
        return json_fail(p, "high surrogate \\u%04lx followed by \\u%04lx, not a low surrogate", *cp, low);
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
    return 0;
}

// Parses a string literal (the cursor is on its opening quote). Decodes into out, or only
// validates when out is NULL.
static int json_parse_string(JsonParser *p, JsonBuf *out) {
    p->pos++; // the opening quote
    for (;;) {
        size_t start = p->pos; // copy runs of plain bytes in one go
        while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' &&
               (unsigned char)p->s[p->pos] >= 0x20)
            p->pos++;
        if (out) json_buf_put(out, p->s + start, p->pos - start);
        int c = json_peek(p);
        if (c < 0) return json_fail(p, "unterminated string");
        if (c == '"') { p->pos++; return 0; }
        if (c < 0x20) return json_fail(p, "control character 0x%02X inside a string (it must be escaped)", c);
        p->pos++; // the backslash
        c = json_peek(p);
        if (c < 0) return json_fail(p, "unterminated string");
        p->pos++;
        const char *simple = strchr("\"\\/bfnrt", c), *decoded = "\"\\/\b\f\n\r\t";
        if (simple && c) {
            if (out) json_buf_put(out, decoded + (simple - "\"\\/bfnrt"), 1);
        } else if (c == 'u') {
            unsigned long cp;
            unsigned char utf8[4];
            if (json_unicode_escape(p, &cp) != 0) return -1;
            if (out) json_buf_put(out, utf8, utf8_encode((uint32_t)cp, utf8));
        } else {
            p->pos--;
            return json_fail(p, c >= 0x20 && c < 0x7F ? "invalid escape \\%c" : "invalid escape (byte 0x%02X)", c);
        }
    }
}

static int json_is_digit(int c) { return c >= '0' && c <= '9'; }

// Checks JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
static int json_scan_number(JsonParser *p) {
    if (json_peek(p) == '-') p->pos++;
    if (!json_is_digit(json_peek(p))) return json_fail(p, "a number needs digits after '-'");
    if (json_peek(p) == '0' && (p->pos++, json_is_digit(json_peek(p))))
        return json_fail(p, "numbers cannot have leading zeros");
    while (json_is_digit(json_peek(p))) p->pos++;
    if (json_peek(p) == '.') {
        p->pos++;
        if (!json_is_digit(json_peek(p))) return json_fail(p, "a number needs digits after '.'");
        while (json_is_digit(json_peek(p))) p->pos++;
    }
    if (json_peek(p) == 'e' || json_peek(p) == 'E') {
        p->pos++;
        if (json_peek(p) == '+' || json_peek(p) == '-') p->pos++;
        if (!json_is_digit(json_peek(p))) return json_fail(p, "a number needs digits in its exponent");
        while (json_is_digit(json_peek(p))) p->pos++;
    }
    return 0;
}

static int json_scan_literal(JsonParser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return json_fail(p, "invalid literal (expected a value: string, number, true, false, null, object or array)");
    p->pos += n;
    return 0;
}

static int json_skip_value(JsonParser *p, int depth);

// Skips (but validates) an object or array; the cursor is on its '{' or '['.
static int json_skip_container(JsonParser *p, int depth) {
    if (depth > JSON_MAX_DEPTH) return json_fail(p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    char close = p->s[p->pos] == '{' ? '}' : ']';
    p->pos++;
    json_skip_space(p);
    if (json_peek(p) == close) { p->pos++; return 0; }
    for (;;) {
        if (close == '}') { // a member: "key": value
            if (json_peek(p) != '"') return json_fail(p, "expected a string key");
            if (json_parse_string(p, NULL) != 0) return -1;
            json_skip_space(p);
            if (json_peek(p) != ':') return json_fail(p, "expected ':' after key");
            p->pos++;
        }
        if (json_skip_value(p, depth + 1) != 0) return -1;
        json_skip_space(p);
        int c = json_peek(p);
        if (c == close) { p->pos++; return 0; }
        if (c != ',') return json_fail(p, "expected ',' or '%c' after a value", close);
        p->pos++;
        json_skip_space(p);
    }
}

// Skips one value of any type (leading white space included). depth = nesting of the value.
static int json_skip_value(JsonParser *p, int depth) {
    json_skip_space(p);
    int c = json_peek(p);
    if (c == '"') return json_parse_string(p, NULL);
    if (c == '-' || json_is_digit(c)) return json_scan_number(p);
    if (c == '{' || c == '[') return json_skip_container(p, depth);
    if (c == 't') return json_scan_literal(p, "true");
    if (c == 'f') return json_scan_literal(p, "false");
    if (c == 'n') return json_scan_literal(p, "null");
    return json_fail(p, c < 0 ? "expected a value, found the end of the line" : "expected a value");
}

// Parses the value of a top-level member into f (the key is already set).
static int json_parse_member_value(JsonParser *p, JsonField *f) {
    json_skip_space(p);
    int c = json_peek(p);
    if (c == '"') {
        JsonBuf b = {0};
        int rc = json_parse_string(p, &b);
        f->type = JSON_STRING;
        f->len = b.len;
        f->text = json_buf_take(&b);
        return rc;
    }
    size_t start = p->pos;
    if (json_skip_value(p, 2) != 0) return -1; // the line's object is depth 1
    f->type = c == '{' ? JSON_OBJECT : c == '[' ? JSON_ARRAY : c == 't' ? JSON_TRUE
            : c == 'f' ? JSON_FALSE : c == 'n' ? JSON_NULL : JSON_NUMBER;
    f->len = p->pos - start;
    f->text = json_strndup(p->s + start, f->len);
    if (f->type == JSON_NUMBER) f->number = strtod(f->text, NULL);
    if (f->type == JSON_TRUE) f->number = 1;
    return 0;
}

static void json_field_free(JsonField *f) {
    free(f->key);
    free(f->text);
}

// Adds a field; a key seen before is replaced (the last duplicate wins).
static void json_object_add(JsonObject *obj, JsonField *f) {
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->fields[i].key, f->key) == 0) {
            json_field_free(&obj->fields[i]);
            obj->fields[i] = *f;
            return;
        }
    if ((obj->count & (obj->count - 1)) == 0) { // grow at counts 0, 1, 2, 4, 8, ...
        obj->fields = realloc(obj->fields, (size_t)(obj->count ? 2 * obj->count : 1) * sizeof(JsonField));
        if (!obj->fields) die("out of memory growing a JSON object");
    }
    obj->fields[obj->count++] = *f;
}

static void json_object_free(JsonObject *obj) {
    for (int i = 0; i < obj->count; i++) json_field_free(&obj->fields[i]);
    free(obj->fields);
    obj->fields = NULL;
    obj->count = 0;
}

// What json_parse_object_each hands each member to. It takes the field over (keeps or frees it)
// and returns 0, or -1 with what is wrong in `what` (the reader adds the member's column).
typedef int (*JsonMemberFn)(void *ctx, JsonField *f, char *what, size_t whatlen);

static int json_parse_members(JsonParser *p, JsonMemberFn each, void *ctx) {
    p->pos++; // '{'
    json_skip_space(p);
    if (json_peek(p) == '}') { p->pos++; return 0; }
    for (;;) {
        if (json_peek(p) != '"') return json_fail(p, "expected a string key");
        size_t start = p->pos;
        JsonBuf key = {0};
        JsonField f = {0};
        int rc = json_parse_string(p, &key);
        f.key = json_buf_take(&key);
        if (rc == 0) json_skip_space(p);
        if (rc == 0 && json_peek(p) != ':') rc = json_fail(p, "expected ':' after key");
        if (rc == 0) { p->pos++; rc = json_parse_member_value(p, &f); }
        if (rc != 0) { json_field_free(&f); return -1; }
        char what[160];
        if (each(ctx, &f, what, sizeof what) != 0) {
            p->pos = start;
            return json_fail(p, "%s", what);
        }
        json_skip_space(p);
        int c = json_peek(p);
        if (c == '}') { p->pos++; return 0; }
        if (c != ',') return json_fail(p, c < 0 ? "unterminated object (missing '}')" : "expected ',' or '}' after a value");
        p->pos++;
        json_skip_space(p);
    }
}

// Parses one JSON object from s[0..len), handing each member in order to each(ctx, ...) as soon
// as it is read. whole names s in a message ("each line", "the file"). Returns 0, or -1 with a
// message in err (no file/line).
static int json_parse_object_each(const char *s, size_t len, const char *whole, JsonMemberFn each,
                                  void *ctx, char *err, size_t errlen) {
    JsonParser p = {s, len, 0, err, errlen};
    json_skip_space(&p);
    if (json_peek(&p) != '{') return json_fail(&p, "expected '{' (%s must be one JSON object)", whole);
    int rc = json_parse_members(&p, each, ctx);
    if (rc == 0) {
        json_skip_space(&p);
        if (p.pos < p.len) rc = json_fail(&p, "trailing characters after the object");
    }
    return rc;
}

static int json_object_add_member(void *obj, JsonField *f, char *what, size_t whatlen) {
    (void)what, (void)whatlen;
    json_object_add(obj, f);
    return 0;
}

// Parses one line holding one JSON object. Returns 0, or -1 with a message in err (no file/line).
static int json_parse_object(const char *line, size_t len, JsonObject *out, char *err, size_t errlen) {
    out->fields = NULL;
    out->count = 0;
    int rc = json_parse_object_each(line, len, "each line", json_object_add_member, out, err, errlen);
    if (rc != 0) json_object_free(out);
    return rc;
}

static const JsonField *json_get(const JsonObject *obj, const char *key) {
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->fields[i].key, key) == 0) return &obj->fields[i];
    return NULL;
}

// The string value of a required field, or NULL with `missing field "key"` / `"key" must be a string`.
static const char *json_require_string(const JsonObject *obj, const char *key, char *err, size_t errlen) {
    const JsonField *f = json_get(obj, key);
    if (!f) snprintf(err, errlen, "missing field \"%s\"", key);
    else if (f->type != JSON_STRING) snprintf(err, errlen, "\"%s\" must be a string", key);
    return f && f->type == JSON_STRING ? f->text : NULL;
}

// The elements of an array field (its source text, already validated when the line was read):
// each one a JsonField without a key, as a member's value is kept (strings decoded, numbers with
// their value, nested values as source text). Returns the number of elements and sets *items
// (malloc'd; free with json_items_free), or -1 when the field is not an array.
static int json_array_items(const JsonField *f, JsonField **items) {
    *items = NULL;
    if (f->type != JSON_ARRAY) return -1;
    char err[200];
    JsonParser p = {f->text, f->len, 1, err, sizeof err}; // just past the '['
    int count = 0, cap = 0;
    json_skip_space(&p);
    if (json_peek(&p) == ']') return 0;
    for (;;) {
        if (count == cap) {
            cap = cap ? 2 * cap : 8;
            *items = realloc(*items, (size_t)cap * sizeof(JsonField));
            if (!*items) die("out of memory");
        }
        JsonField *item = &(*items)[count++];
        memset(item, 0, sizeof *item);
        if (json_parse_member_value(&p, item) != 0) die("json_array_items: %s", err); // validated
        json_skip_space(&p);
        if (json_peek(&p) == ']') return count;
        p.pos++; // the ','
    }
}

static void json_items_free(JsonField *items, int count) {
    for (int i = 0; i < count; i++) free(items[i].text);
    free(items);
}

// ---- whole files ----------------------------------------------------------------------------

typedef struct { JsonObject *objects; int *line_numbers; int count; char *path; } JsonlFile;

static void jsonl_free(JsonlFile *f) {
    for (int i = 0; i < f->count; i++) json_object_free(&f->objects[i]);
    free(f->objects);
    free(f->line_numbers);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int jsonl_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

// Parses a whole file's bytes; name is only used in messages. Returns 0, or -1 with
// "NAME:LINE: what is wrong" in err (and nothing left allocated).
static int jsonl_parse_buffer(const char *name, const char *data, size_t n, JsonlFile *out,
                              char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->path = json_strndup(name, strlen(name));
    size_t pos = n >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0; // a UTF-8 BOM
    size_t cap = 0;
    for (int line = 1; pos < n; line++) {
        const char *nl = memchr(data + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - data) : n, len = end - pos;
        if (len && data[end - 1] == '\r') len--; // CRLF
        if (!jsonl_blank(data + pos, len)) {
            if ((size_t)out->count == cap) {
                cap = cap ? 2 * cap : 256;
                out->objects = realloc(out->objects, cap * sizeof(JsonObject));
                out->line_numbers = realloc(out->line_numbers, cap * sizeof(int));
                if (!out->objects || !out->line_numbers) die("out of memory reading %s", name);
            }
            char what[200];
            if (json_parse_object(data + pos, len, &out->objects[out->count], what, sizeof what) != 0) {
                snprintf(err, errlen, "%s:%d: %s", name, line, what);
                jsonl_free(out);
                return -1;
            }
            out->line_numbers[out->count++] = line;
        }
        pos = end + 1;
    }
    return 0;
}

// Reads a JSONL file; dies with FILE:LINE on the first bad line.
static void jsonl_read(const char *path, JsonlFile *out) {
    size_t n;
    unsigned char *data = read_whole_file(path, &n);
    if (!data) die("cannot open %s: %s", path, strerror(errno));
    char err[512];
    int rc = jsonl_parse_buffer(path, (const char *)data, n, out, err, sizeof err);
    free(data);
    if (rc != 0) die("%s", err);
}

// The string field key of object i; dies with FILE:LINE when it is missing or not a string.
const char *jsonl_string(const JsonlFile *f, int i, const char *key) {
    char err[256];
    const char *s = json_require_string(&f->objects[i], key, err, sizeof err);
    if (!s) die("%s:%d: %s", f->path, f->line_numbers[i], err);
    return s;
}

// ---- writing --------------------------------------------------------------------------------

// Writes s[0..len) as a JSON string literal: " and \ escaped, control characters as \n \r \t
// \b \f or \u00XX, valid UTF-8 kept as it is, and each byte of invalid UTF-8 as \ufffd
// (so the output is always valid JSON; such bytes do not survive a round trip).
static void json_write_string(FILE *out, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        const char *named = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        uint32_t cp;
        size_t n = utf8_decode(u + i, len - i, &cp); // 0: not valid UTF-8 there
        if (named) fputs(named, out);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else if (n == 0) fputs("\\ufffd", out);
        else fwrite(u + i, 1, n, out);
        i += n ? n : 1;
    }
    fputc('"', out);
}

// Writes the fields of obj as the start of a JSON object: `{"k": v, ...` (no closing brace), so
// that a command can keep every input field and add its own.
static void json_write_fields(FILE *out, const JsonObject *obj) {
    fputc('{', out);
    for (int i = 0; i < obj->count; i++) {
        const JsonField *f = &obj->fields[i];
        if (i) fputs(", ", out);
        json_write_string(out, f->key, strlen(f->key));
        fputs(": ", out);
        if (f->type == JSON_STRING) json_write_string(out, f->text, f->len);
        else fwrite(f->text, 1, f->len, out); // numbers, literals, nested values: as written
    }
}

#endif // SIRT_LIB_JSONL_H
