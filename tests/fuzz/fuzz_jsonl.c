// tests/fuzz/fuzz_jsonl.c — fuzzes the JSON-lines reader (lib/jsonl.h: jsonl_parse_buffer) and
// the example loader (lib/templates.h: examples_from_jsonl: prompt/completion, text,
// question/answer in GSM8K's form with "#### N", the "gold" field), with every template.
// The input is a whole JSONL file. Properties of an accepted file:
//   - each object, written back with json_write_fields (as sample/eval write their output),
//     parses again; when its keys are valid UTF-8, with the same keys in the same order, and
//     the same values (strings: wherever they are valid UTF-8);
//   - every example has a prompt and a completion, and a gold answer exactly for question items;
//   - json_require_string gives a field's text exactly when it is a string, else names the key;
//   - json_array_items splits exactly the array fields, into elements that are values.
#include "fuzz.h"

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!len) return 0;
        i += len;
    }
    return 1;
}

// Writes obj back as one line and parses it again.
static void check_round_trip(const JsonObject *obj) {
    char *line = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&line, &len);
    fuzz_require(out != NULL);
    json_write_fields(out, obj);
    fputc('}', out);
    fclose(out);
    if (obj->count == 0) { // json_write_fields writes "{" and the fields; none here: "{}"
        free(line);
        return;
    }
    JsonObject again;
    char err[256];
    int rc = json_parse_object(line, len, &again, err, sizeof err);
    if (rc != 0) fprintf(stderr, "written back: %s\nre-parse: %s\n", line, err);
    fuzz_require(rc == 0);
    // keys of invalid UTF-8 are written with U+FFFD for each bad byte: two of them can become
    // one key, and then the last one wins when the line is read again (as documented)
    int keys_valid = 1;
    for (int i = 0; i < obj->count; i++) keys_valid &= valid_utf8(obj->fields[i].key, strlen(obj->fields[i].key));
    if (!keys_valid) {
        json_object_free(&again);
        free(line);
        return;
    }
    fuzz_require(again.count == obj->count);
    for (int i = 0; i < obj->count; i++) {
        const JsonField *a = &obj->fields[i], *b = &again.fields[i];
        fuzz_require(strcmp(a->key, b->key) == 0);
        fuzz_require(a->type == b->type);
        if (a->type != JSON_STRING || valid_utf8(a->text, a->len))
            fuzz_require(a->len == b->len && memcmp(a->text, b->text, a->len) == 0);
    }
    json_object_free(&again);
    free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    JsonlFile file;
    char err[512];
    if (jsonl_parse_buffer("input", (const char *)data, size, &file, err, sizeof err) != 0) {
        fuzz_rejected(err);
        return 0;
    }
    for (int i = 0; i < file.count; i++) {
        check_round_trip(&file.objects[i]);
        // every array (label-steps' "samples", the stepwise "completions", "labels", "soft")
        // splits into its elements, each kept as a member's value is; only arrays split
        for (int j = 0; j < file.objects[i].count; j++) {
            const JsonField *f = &file.objects[i].fields[j];
            JsonField *items;
            int n = json_array_items(f, &items);
            fuzz_require((n >= 0) == (f->type == JSON_ARRAY));
            for (int e = 0; e < n; e++)
                fuzz_require(items[e].text && (items[e].type != JSON_STRING || strlen(items[e].text) <= items[e].len));
            if (n > 0) json_items_free(items, n);
        }
        // the required string fields of every reader (jsonl_string dies with this message)
        static const char *keys[] = {"prompt", "completion", "question", "answer", "chosen", "rejected"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            const JsonField *f = json_get(&file.objects[i], keys[k]);
            const char *value = json_require_string(&file.objects[i], keys[k], err, sizeof err);
            fuzz_require(!value == !(f && f->type == JSON_STRING));
            fuzz_require(value || strstr(err, keys[k]));
        }
    }
    // the loader with each template, with and without calculator notes, and with half the
    // questions in the plain template; the result reported is the first one's (the
    // chain-of-thought template, as SFT reads its data)
    static const TemplateOptions options[] = {
        {TEMPLATE_COT, 0, 0}, {TEMPLATE_PLAIN, 1, 0}, {TEMPLATE_NONE, 0, 0}, {TEMPLATE_COT, 1, 0},
        {TEMPLATE_COT, 0, 0.5f}};
    for (size_t t = 0; t < sizeof options / sizeof options[0]; t++) {
        Example *examples = NULL;
        int count = 0;
        int rc = examples_from_jsonl(&file, &options[t], &examples, &count, err, sizeof err);
        if (rc == 0) {
            fuzz_require(count == file.count);
            for (int i = 0; i < count; i++) {
                fuzz_require(examples[i].prompt && examples[i].completion);
                int question = json_get(&file.objects[i], "prompt") == NULL &&
                               json_get(&file.objects[i], "text") == NULL;
                fuzz_require(!examples[i].gold == !question);
            }
            examples_free(examples, count);
        }
        if (t == 0) {
            if (rc == 0) fuzz_accepted("%d objects, %d examples", file.count, count);
            else fuzz_rejected(err);
        }
    }
    jsonl_free(&file);
    return 0;
}
