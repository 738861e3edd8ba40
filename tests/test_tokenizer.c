/*
 * tests/test_tokenizer.c - checks for tokenizer.c (byte-level BPE).
 *   cc -O2 -std=c11 -Wall -Wextra tests/test_tokenizer.c -o tests/test_tokenizer -lm
 *   ./tests/test_tokenizer [DATA_DIR]      (DATA_DIR defaults to ../shared/data)
 * Prints one line per check and ends with "N passed, M failed"; exits non-zero on any failure.
 * The GPT-2 checks need DATA_DIR/gpt2/{encoder.json,vocab.bpe} and DATA_DIR/gsm8k/test.jsonl;
 * without them they are reported as skipped. Its files go in a scratch directory of its own.
 * Expected GPT-2 ids were produced by OpenAI's encoder.py algorithm (python3-regex 2022.10.31)
 * and are baked in below; the test itself needs no Python.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp and opendir, for check.h's scratch directory */
/* tokenizer.c on its own, with the parts of lib/util.h, lib/flags.h and lib/jsonl.h it includes;
   the helpers there that only the rest of sirt uses are not warned about. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../tokenizer.c"
#pragma GCC diagnostic pop

#include "check.h"

static void skip(const char *what, const char *why) {
    printf("skip - %s (%s)\n", what, why);
}

/* xorshift64*: a small deterministic random generator; the state lives in the caller. */
static uint64_t rnd_next(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}
static size_t rnd_below(uint64_t *s, size_t n) { return (size_t)(rnd_next(s) % n); }

/* A random byte string that mixes raw bytes (invalid UTF-8, NULs), words, valid multi-byte
   characters, white space, contractions and pieces of "<|endoftext|>". */
static void random_text(uint64_t *s, TokBytes *out) {
    static const char *const parts[] = {
        "the", " cat", "'s", "'ll", "'t", "'", " ", "  ", "\n", "\n\n", "\t", "\r\n", "<|endoftext|>",
        "<|endo", "ftext|>", "<|", "|>", "12", "3.5", ",", "!!", "\xc3\xa9", "\xe4\xb8\xad",
        "\xf0\x9f\x98\x80", "\xe3\x80\x80", "\xc2\xa0", "\xc2\x85", "\xcc\x81", "\x00", "\xff", "\xc3",
        "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe0\x80\xaf", "\x80\x80", "A", "Z9",
    };
    size_t n = rnd_below(s, 40);
    out->len = 0;
    for (size_t i = 0; i < n; i++) {
        if (rnd_below(s, 4) == 0) {
            unsigned char b = (unsigned char)rnd_next(s);
            tok_bytes_append(out, &b, 1);
        } else {
            const char *p = parts[rnd_below(s, sizeof parts / sizeof parts[0])];
            tok_bytes_append(out, p, p[0] == '\0' ? 1 : strlen(p));
        }
    }
}

static int same_ids(const TokIds *a, const TokIds *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len * sizeof(int)) == 0);
}

/* Encodes then decodes `count` random strings; returns how many did not come back exactly. */
static int roundtrip_failures(Tokenizer *tok, uint64_t seed, int count) {
    TokBytes text = {0}, back = {0};
    TokIds ids = {0};
    int failures = 0;
    for (int i = 0; i < count; i++) {
        random_text(&seed, &text);
        ids.len = back.len = 0;
        if (tok_encode(tok, text.data ? text.data : "", text.len, &ids) != 0 ||
            tok_decode(tok, ids.data, ids.len, &back) != 0 || back.len != text.len ||
            (text.len > 0 && memcmp(back.data, text.data, text.len) != 0)) failures++;
    }
    tok_bytes_free(&text);
    tok_bytes_free(&back);
    tok_ids_free(&ids);
    return failures;
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return 0;
    fclose(f);
    return 1;
}

static int write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) return -1;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* A training text: English-like sentences made from a small word list, with numbers. */
static void training_text(TokBytes *out) {
    static const char *const words[] = {
        "the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to", "school", "she", "sold",
        "clips", "in", "May", "April", "how", "many", "did", "Natalia", "sell", "altogether",
        "it's", "they'll", "don't", "caf\xc3\xa9", "na\xc3\xafve", "\xe4\xb8\xad\xe6\x96\x87",
    };
    uint64_t seed = 42;
    char num[32];
    for (int i = 0; i < 4000; i++) {
        const char *w = words[rnd_below(&seed, sizeof words / sizeof words[0])];
        tok_bytes_append(out, i % 12 == 0 ? "\n" : " ", 1);
        tok_bytes_append(out, w, strlen(w));
        if (i % 7 == 0) {
            snprintf(num, sizeof num, " %d", (int)rnd_below(&seed, 1000));
            tok_bytes_append(out, num, strlen(num));
        }
        if (i % 29 == 0) tok_bytes_append(out, ".", 1);
        if (i % 500 == 499) tok_bytes_append(out, TOK_EOT_TEXT, TOK_EOT_TEXT_LEN);
    }
}

/* The expected ids below were computed once, outside this project, with OpenAI's encoder.py
   algorithm (python3-regex 2022.10.31) on GPT-2's own files, each <|endoftext|> as id 50256. */
static const char *const gpt2_known_text[] = {
    "Hello world, I'm here",
    "They'll say it's 1,234,567.89 dollars\342\200\224isn't it\077 We've 3 o'clock, you'd agree I'M sure",
    "na\303\257ve caf\303\251 \303\234n\303\257c\303\266d\303\251 Gr\303\266\303\237e \303\247a",
    "\344\270\255\346\226\207\346\265\213\350\257\225 \346\227\245\346\234\254\350\252\236\343\201\256\343\203\206\343\202\255\343\202\271\343\203\210 \355\225\234\352\265\255\354\226\264",
    "emoji \360\237\230\200\360\237\216\211\360\237\221\215\360\237\217\275 ok \342\235\244\357\270\217",
    "multiple     spaces   here ",
    "line one\012line two\012\012line three\012",
    "\011tab\011separated\011values\011\011",
    "  \012\012  ",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\012#### 72",
    "<|endoftext|>Hi there<|endoftext|>",
    "Roman \342\205\253, superscript x\302\262, Arabic \331\243\331\244 and \340\245\250\340\245\251",
    "a\343\200\200b\302\240c\342\200\250d \302\205e\034f",
    "  leading and trailing  \011",
};
static const int gpt2_known_ids[][64] = {
    {6, 15496, 995, 11, 314, 1101, 994},
    {34, 2990, 1183, 910, 340, 338, 352, 11, 24409, 11, 20, 3134, 13, 4531, 5054, 960, 271, 77, 470, 340, 30, 775, 1053, 513, 267, 6, 15750, 11, 345, 1549, 4236, 314, 6, 44, 1654},
    {17, 2616, 38776, 40304, 49363, 77, 26884, 66, 9101, 67, 2634, 1902, 9101, 39683, 68, 6184, 100, 64},
    {27, 40792, 23877, 229, 38184, 233, 46237, 243, 10545, 245, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 220, 47991, 250, 166, 113, 255, 168, 244, 112},
    {16, 368, 31370, 30325, 222, 8582, 236, 231, 41840, 235, 8582, 237, 121, 12876, 43074, 97, 37929},
    {10, 48101, 220, 220, 220, 220, 9029, 220, 220, 994, 220},
    {10, 1370, 530, 198, 1370, 734, 198, 198, 1370, 1115, 198},
    {9, 197, 8658, 197, 25512, 515, 197, 27160, 197, 197},
    {5, 220, 220, 628, 220, 220},
    {22, 47849, 9752, 2702, 4764, 14, 17, 796, 9959, 2780, 14, 17, 28, 1731, 4211, 1731, 19166, 287, 1737, 13, 198, 4242, 7724},
    {4, 50256, 17250, 612, 50256},
    {21, 32454, 2343, 227, 104, 11, 22754, 6519, 2124, 31185, 11, 17526, 18923, 96, 149, 97, 290, 220, 24231, 101, 24231, 102},
    {15, 64, 5099, 222, 65, 1849, 66, 447, 101, 67, 220, 126, 227, 68, 216, 69},
    {7, 220, 3756, 290, 25462, 220, 220, 197},
};
static const char *const piece_text[] = {
    "Hello world, I'm here",
    "don't  'sam '' x's 're're!'ll",
    "a  \012\012  b   c\011\011d ",
    "x1,000.5y \303\251\303\251 \344\270\255\344\270\2552",
    "  \012\012  ",
    "\077\077  !!\342\200\224 \302\262\302\263x",
};
/* byte lengths of the pieces of regex.findall(pattern, text), 0-terminated */
static const int piece_lens[][32] = {
    {5, 6, 1, 2, 2, 5, 0},
    {3, 2, 1, 2, 3, 3, 2, 2, 2, 2, 3, 2, 2, 0},
    {1, 5, 2, 2, 2, 1, 1, 1, 1, 0},
    {1, 1, 1, 3, 1, 1, 1, 5, 7, 1, 0},
    {6, 0},
    {2, 1, 6, 5, 1, 0},
};

/* ---------------------------------------------------------------------------------------------
 * Unicode classes, UTF-8, the pre-tokenizer
 * --------------------------------------------------------------------------------------------- */
static int class_of_utf8(const char *s) {
    int cls;
    tok_next_char((const unsigned char *)s, strlen(s), 0, &cls);
    return cls;
}

static void test_unicode(void) {
    check(class_of_utf8("A") == TOK_LETTER && class_of_utf8("\xc3\xa9") == TOK_LETTER &&
          class_of_utf8("\xe4\xb8\xad") == TOK_LETTER && class_of_utf8("\xd0\x96") == TOK_LETTER,
          "letters: A, e-acute, CJK, Cyrillic are \\p{L}");
    check(class_of_utf8("7") == TOK_NUMBER && class_of_utf8("\xd9\xa3") == TOK_NUMBER &&
          class_of_utf8("\xe2\x85\xab") == TOK_NUMBER && class_of_utf8("\xc2\xb2") == TOK_NUMBER,
          "numbers: 7, Arabic-Indic 3, Roman XII, superscript 2 are \\p{N}");
    check(class_of_utf8(" ") == TOK_SPACE && class_of_utf8("\x0b") == TOK_SPACE &&
          class_of_utf8("\xc2\x85") == TOK_SPACE && class_of_utf8("\xe3\x80\x80") == TOK_SPACE &&
          class_of_utf8("\xe2\x80\xa8") == TOK_SPACE,
          "white space: space, VT, NEL, ideographic space, line separator are \\s");
    check(class_of_utf8("\x1c") == TOK_OTHER && class_of_utf8("\xcc\x81") == TOK_OTHER &&
          class_of_utf8("\xf0\x9f\x98\x80") == TOK_OTHER && class_of_utf8("'") == TOK_OTHER,
          "others: U+001C (not \\s in regex), combining accent, emoji, apostrophe");
    uint32_t cp;
    const unsigned char overlong[] = {0xC0, 0xAF}, surrogate[] = {0xED, 0xA0, 0x80},
                        too_big[] = {0xF4, 0x90, 0x80, 0x80}, cut[] = {0xE4, 0xB8},
                        max[] = {0xF4, 0x8F, 0xBF, 0xBF};
    check(utf8_decode(overlong, 2, &cp) == 0 && utf8_decode(surrogate, 3, &cp) == 0 &&
          utf8_decode(too_big, 4, &cp) == 0 && utf8_decode(cut, 2, &cp) == 0,
          "UTF-8: overlong, surrogate, above U+10FFFF and cut-off sequences are invalid");
    check(utf8_decode(max, 4, &cp) == 4 && cp == 0x10FFFF, "UTF-8: U+10FFFF decodes");
}

static void test_pretokenizer(void) {
    for (size_t t = 0; t < sizeof piece_text / sizeof piece_text[0]; t++) {
        const unsigned char *s = (const unsigned char *)piece_text[t];
        size_t len = strlen(piece_text[t]), pos = 0, k = 0;
        int ok = 1;
        while (pos < len && ok) {
            size_t end = tok_piece_end(s, len, pos);
            ok = piece_lens[t][k] != 0 && end - pos == (size_t)piece_lens[t][k];
            pos = end;
            k++;
        }
        ok = ok && piece_lens[t][k] == 0;
        char what[160];
        snprintf(what, sizeof what, "pre-tokenizer splits text %zu like regex.findall", t + 1);
        check(ok, what);
    }
    /* invalid bytes are single "other" characters: they join punctuation runs, not letters */
    const unsigned char bad[] = {'a', 'b', 0xFF, '!', 0xC3, 'c'};
    check(tok_piece_end(bad, 6, 0) == 2 && tok_piece_end(bad, 6, 2) == 5 && tok_piece_end(bad, 6, 5) == 6,
          "pre-tokenizer: invalid bytes count as punctuation (\"ab\", \"\\xff!\\xc3\", \"c\")");
}

/* ---------------------------------------------------------------------------------------------
 * Our trained tokenizers
 * --------------------------------------------------------------------------------------------- */
static void test_training(const char *tmpdir) {
    char err[512], path[4096], llmc_path[4096];
    TokBytes text = {0}, file1 = {0}, file2 = {0}, saved = {0};
    TokIds a = {0}, b = {0};
    training_text(&text);
    const char *texts[1] = {text.data};
    size_t lens[1] = {text.len};

    Tokenizer *t1 = tok_train(texts, lens, 1, 500, 0, err, sizeof err);
    Tokenizer *t2 = tok_train(texts, lens, 1, 500, 0, err, sizeof err);
    check(t1 != NULL && t2 != NULL, "training to 500 tokens succeeds");
    if (t1 == NULL || t2 == NULL) { tok_free(t1); tok_free(t2); tok_bytes_free(&text); return; }
    check(tok_vocab_size(t1) == 500 && tok_eot(t1) == 499, "trained vocabulary has 500 tokens, end-of-text id 499");
    check(tok_serialize(t1, &file1, err, sizeof err) == 0 && tok_serialize(t2, &file2, err, sizeof err) == 0 &&
          file1.len == file2.len && memcmp(file1.data, file2.data, file1.len) == 0,
          "training is deterministic: two runs give identical files");
    check(file1.len == 20 + 8 * 243 && tok_get_u32((const unsigned char *)file1.data) == TOK_FILE_MAGIC,
          "saved file: magic and size 20 + 8 * merges");

    /* the first merges of this text: ' ' + 't' style pairs; at least check a sensible one */
    size_t len = 0;
    const unsigned char *first = tok_token_bytes(t1, 256, &len);
    check(first != NULL && len == 2, "merge 0 makes a two-byte token");

    scratch_path(path, sizeof path, tmpdir, "sirt_test_tok.bin");
    scratch_path(llmc_path, sizeof llmc_path, tmpdir, "sirt_test_tok_llmc.bin");
    Tokenizer *loaded = NULL;
    if (tok_save(t1, path, err, sizeof err) == 0) loaded = tok_load(path, err, sizeof err);
    check(loaded != NULL, "save then load");
    if (loaded != NULL) {
        check(tok_serialize(loaded, &saved, err, sizeof err) == 0 && saved.len == file1.len &&
              memcmp(saved.data, file1.data, saved.len) == 0, "loaded tokenizer saves the identical file");
        uint64_t seed = 7;
        TokBytes sample = {0};
        int same = 1;
        for (int i = 0; i < 2000 && same; i++) {
            random_text(&seed, &sample);
            a.len = b.len = 0;
            tok_encode(t1, sample.data ? sample.data : "", sample.len, &a);
            tok_encode(loaded, sample.data ? sample.data : "", sample.len, &b);
            same = same_ids(&a, &b);
        }
        a.len = b.len = 0;
        tok_encode(t1, text.data, text.len, &a);
        tok_encode(loaded, text.data, text.len, &b);
        same = same && same_ids(&a, &b);
        check(same, "trained and reloaded tokenizers encode 2000 random strings and the corpus identically");
        check(a.len * 3 < text.len, "trained tokenizer compresses its training text (< 1 token per 3 bytes)");
        tok_bytes_free(&sample);
    }
    check(roundtrip_failures(t1, 1, 5000) == 0, "trained: decode(encode(x)) == x for 5000 random byte strings");

    /* the special token: its text becomes one id, and comes back */
    a.len = 0;
    const char *with_eot = "the cat<|endoftext|>the dog";
    tok_encode(t1, with_eot, strlen(with_eot), &a);
    int n_eot = 0;
    for (size_t i = 0; i < a.len; i++) n_eot += a.data[i] == tok_eot(t1);
    check(n_eot == 1, "\"<|endoftext|>\" in the text encodes as the end-of-text id");
    a.len = 0;
    tok_encode_ordinary(t1, with_eot, strlen(with_eot), &a);
    n_eot = 0;
    for (size_t i = 0; i < a.len; i++) n_eot += a.data[i] == tok_eot(t1);
    check(n_eot == 0, "tok_encode_ordinary spells \"<|endoftext|>\" out");

    /* empty input, bad ids */
    a.len = 0;
    check(tok_encode(t1, "", 0, &a) == 0 && a.len == 0, "empty text encodes to no tokens");
    int bad_ids[2] = {5, 500};
    saved.len = 0;
    check(tok_decode(t1, bad_ids, 2, &saved) == -1 && tok_decode(t1, bad_ids + 1, 0, &saved) == 0,
          "decoding an id outside the vocabulary fails cleanly");

    /* a very long piece (1 MB of one letter) must not take quadratic time */
    TokBytes longtext = {0};
    for (int i = 0; i < (1 << 20); i++) tok_bytes_push(&longtext, 'a');
    TokBytes back = {0};
    a.len = 0;
    check(tok_encode(t1, longtext.data, longtext.len, &a) == 0 && tok_decode(t1, a.data, a.len, &back) == 0 &&
          back.len == longtext.len && memcmp(back.data, longtext.data, back.len) == 0,
          "a 1 MB single-letter piece encodes and round-trips");
    tok_bytes_free(&back);
    tok_bytes_free(&longtext);

    /* llm.c decode table */
    char *llmc = NULL;
    size_t llmc_len = 0;
    int llmc_ok = tok_save_llmc(t1, llmc_path, err, sizeof err) == 0 &&
                  tok_read_file(llmc_path, 1 << 24, &llmc, &llmc_len, err, sizeof err) == 0;
    if (llmc_ok) {
        const unsigned char *u = (const unsigned char *)llmc;
        llmc_ok = llmc_len > 1024 && tok_get_u32(u) == 20240328 && tok_get_u32(u + 4) == 2 &&
                  tok_get_u32(u + 8) == 500 && tok_get_u32(u + 12) == 499;
        size_t at = 1024;
        for (int id = 0; id < 500 && llmc_ok; id++) {
            const unsigned char *tb = tok_token_bytes(t1, id, &len);
            llmc_ok = at < llmc_len && u[at] == len && at + 1 + len <= llmc_len && memcmp(u + at + 1, tb, len) == 0;
            at += 1 + len;
        }
        llmc_ok = llmc_ok && at == llmc_len;
    }
    check(llmc_ok, "llm.c decode table: header 20240328/2/500/499 and every token's bytes");
    free(llmc);

    /* a tiny text runs out of pairs: the vocabulary is smaller than asked */
    const char *tiny[1] = {"ab ab abc"};
    size_t tiny_len[1] = {9};
    Tokenizer *small = tok_train(tiny, tiny_len, 1, 1000, 0, err, sizeof err);
    check(small != NULL && tok_vocab_size(small) == 260, "training stops when no pair is left (3 merges)");
    tok_free(small);
    check(tok_train(texts, lens, 1, 256, 0, err, sizeof err) == NULL && strstr(err, "257") != NULL,
          "vocabulary size below 257 is refused with a message");

    remove(path);
    remove(llmc_path);
    tok_free(loaded);
    tok_free(t1);
    tok_free(t2);
    tok_bytes_free(&text);
    tok_bytes_free(&file1);
    tok_bytes_free(&file2);
    tok_bytes_free(&saved);
    tok_ids_free(&a);
    tok_ids_free(&b);
}

/* ---------------------------------------------------------------------------------------------
 * Error cases: every bad input gives a message, never a crash
 * --------------------------------------------------------------------------------------------- */
static int load_fails_with(const char *path, const char *expect) {
    char err[512] = "";
    Tokenizer *tok = tok_load(path, err, sizeof err);
    int ok = tok == NULL && strstr(err, expect) != NULL && strchr(err, '\n') == NULL;
    printf("       (%s)\n", err);
    tok_free(tok);
    return ok;
}

static int memory_fails_with(const void *data, size_t len, const char *expect) {
    char err[512] = "";
    Tokenizer *tok = tok_from_memory(data, len, "mem.bin", err, sizeof err);
    int ok = tok == NULL && strstr(err, expect) != NULL;
    printf("       (%s)\n", err);
    tok_free(tok);
    return ok;
}

static int gpt2_fails_with(const char *json, const char *bpe, const char *expect) {
    char err[512] = "";
    Tokenizer *tok = tok_from_gpt2_memory((const unsigned char *)json, strlen(json),
                                          (const unsigned char *)bpe, strlen(bpe), err, sizeof err);
    int ok = tok == NULL && strstr(err, expect) != NULL;
    printf("       (%s)\n", err);
    tok_free(tok);
    return ok;
}

/* A small valid encoder.json: the 256 byte tokens in GPT-2's order, "he", "hel", eot. */
static void tiny_encoder_json(TokBytes *out, int with_eot) {
    int unicode_to_byte[TOK_GPT2_MAP_SIZE], id = 0;
    char buf[64];
    tok_gpt2_byte_map(unicode_to_byte);
    tok_bytes_append(out, "{", 1);
    for (int c = 0; c < TOK_GPT2_MAP_SIZE; c++) {
        if (unicode_to_byte[c] < 0) continue;
        unsigned char utf8[4];
        size_t n = utf8_encode((uint32_t)c, utf8);
        tok_bytes_append(out, "\"", 1);
        if (c == '"' || c == '\\') tok_bytes_append(out, "\\", 1);
        tok_bytes_append(out, utf8, n);
        snprintf(buf, sizeof buf, "\": %d, ", id++);
        tok_bytes_append(out, buf, strlen(buf));
    }
    snprintf(buf, sizeof buf, "\"he\": %d, \"hel\": %d", id, id + 1);
    tok_bytes_append(out, buf, strlen(buf));
    if (with_eot) {
        snprintf(buf, sizeof buf, ", \"<|endoftext|>\": %d", id + 2);
        tok_bytes_append(out, buf, strlen(buf));
    }
    tok_bytes_append(out, "}", 1);
}

static void test_errors(const char *tmpdir) {
    char path[4096], err[512];
    scratch_path(path, sizeof path, tmpdir, "sirt_test_no_such_file.bin");
    check(load_fails_with(path, "cannot open"), "missing file: clear error naming the file");

    unsigned char header[20];
    uint32_t fields[5] = {TOK_FILE_MAGIC, 1, 259, 258, 2};
    for (int i = 0; i < 5; i++) tok_put_u32(header + 4 * i, fields[i]);
    unsigned char good[36];
    memcpy(good, header, 20);
    uint32_t merges[4] = {'a', 'b', 256, 'c'};
    for (int i = 0; i < 4; i++) tok_put_u32(good + 20 + 4 * i, merges[i]);
    Tokenizer *tok = tok_from_memory(good, sizeof good, "mem.bin", err, sizeof err);
    size_t len;
    const unsigned char *abc = tok ? tok_token_bytes(tok, 257, &len) : NULL;
    check(abc != NULL && len == 3 && memcmp(abc, "abc", 3) == 0, "a hand-made valid file loads (merge 1 = \"abc\")");
    tok_free(tok);

    scratch_path(path, sizeof path, tmpdir, "sirt_test_bad_magic.bin");
    unsigned char bad[36];
    memcpy(bad, good, sizeof bad);
    bad[0] ^= 0xFF;
    check(write_bytes(path, bad, sizeof bad) == 0 && load_fails_with(path, "bad magic"), "bad magic: clear error");
    remove(path);
    scratch_path(path, sizeof path, tmpdir, "sirt_test_truncated.bin");
    check(write_bytes(path, good, 30) == 0 && load_fails_with(path, "truncated"), "truncated merges: clear error");
    check(write_bytes(path, good, 10) == 0 && load_fails_with(path, "truncated"), "truncated header: clear error");
    remove(path);
    check(memory_fails_with(good, 0, "truncated"), "empty file: clear error");
    unsigned char longer[40] = {0};
    memcpy(longer, good, sizeof good);
    check(memory_fails_with(longer, sizeof longer, "unexpected data"), "trailing bytes: clear error");
    memcpy(bad, good, sizeof bad);
    tok_put_u32(bad + 4, 9);
    check(memory_fails_with(bad, sizeof bad, "version"), "unknown version: clear error");
    memcpy(bad, good, sizeof bad);
    tok_put_u32(bad + 16, 0xFFFFFFFFu);
    check(memory_fails_with(bad, sizeof bad, "merges"), "absurd merge count: refused before allocating");
    memcpy(bad, good, sizeof bad);
    tok_put_u32(bad + 20, 300);
    check(memory_fails_with(bad, sizeof bad, "not made before"), "merge using a later token: clear error");
    memcpy(bad, good, sizeof bad);
    tok_put_u32(bad + 28, 'a');
    tok_put_u32(bad + 32, 'b');
    check(memory_fails_with(bad, sizeof bad, "repeats merge"), "duplicate merge: clear error");
    unsigned char llmc[1024] = {0};
    tok_put_u32(llmc, 20240328);
    check(memory_fails_with(llmc, sizeof llmc, "llm.c decode table"), "llm.c decode table given as tokenizer: explained");
    check(load_fails_with(tmpdir, "directory with encoder.json"), "directory without encoder.json: clear error");

    /* GPT-2 files, in memory: first a valid tiny pair, then broken variants */
    TokBytes json = {0}, json_no_eot = {0};
    tiny_encoder_json(&json, 1);
    tiny_encoder_json(&json_no_eot, 0);
    const char *bpe = "#version: 0.2\nh e\nhe l\n";
    tok = tok_from_gpt2_memory((const unsigned char *)json.data, json.len, (const unsigned char *)bpe,
                               strlen(bpe), err, sizeof err);
    TokIds ids = {0};
    if (tok != NULL) tok_encode(tok, "hello", 5, &ids);
    check(tok != NULL && ids.len == 3 && ids.data[0] == 257 && tok_eot(tok) == 258,
          "tiny GPT-2 style vocabulary loads and merges \"hel\"");
    tok_ids_free(&ids);
    tok_free(tok);
    TokBytes cut = {0};
    tok_bytes_append(&cut, json.data, json.len / 2);
    check(gpt2_fails_with(cut.data, bpe, "malformed JSON"), "encoder.json cut in half: malformed JSON error");
    check(gpt2_fails_with("", bpe, "expected '{'"), "empty encoder.json: clear error");
    check(gpt2_fails_with("{\"a\": 1, \"b\" 2}", bpe, "expected ':'"), "encoder.json missing ':': clear error");
    check(gpt2_fails_with("{\"\\q\": 1}", bpe, "invalid escape"), "encoder.json bad escape: clear error");
    check(gpt2_fails_with("{\"\\ud800x\": 1}", bpe, "surrogate"), "encoder.json lone surrogate: clear error");
    check(gpt2_fails_with("{\"a\": 1.5}", bpe, "integer"), "encoder.json non-integer id: clear error");
    check(gpt2_fails_with("{\"a\": -1}", bpe, "non-negative"), "encoder.json negative id: clear error");
    check(gpt2_fails_with("{\"a\": 1, \"a\": 2}", bpe, "twice"), "encoder.json duplicate token: clear error");
    check(gpt2_fails_with("{\"\\u4e2d\": 1}", bpe, "byte characters"), "encoder.json token outside GPT-2's byte map: clear error");
    check(gpt2_fails_with("{\"a\": 1} x", bpe, "after the object"), "encoder.json trailing garbage: clear error");
    check(gpt2_fails_with(json_no_eot.data, bpe, "no <|endoftext|>"), "encoder.json without <|endoftext|>: clear error");
    check(gpt2_fails_with(json.data, "#version: 0.2\nh q z\n", "line 2"), "vocab.bpe line with three tokens: clear error");
    check(gpt2_fails_with(json.data, "#version: 0.2\nh e\nhe x\n", "not in encoder.json"),
          "vocab.bpe merge whose result is unknown: clear error");
    check(gpt2_fails_with(json.data, "#version: 0.2\nhe l\nh e\n", "no earlier merge"),
          "vocab.bpe merge that uses a token before it is made: clear error");
    tok_bytes_free(&json);
    tok_bytes_free(&json_no_eot);
    tok_bytes_free(&cut);

    tok = tok_from_gpt2_memory((const unsigned char *)"{}", 2, (const unsigned char *)"", 0, err, sizeof err);
    check(tok == NULL && strstr(err, "no tokens") != NULL, "encoder.json with no tokens: clear error");
}

/* ---------------------------------------------------------------------------------------------
 * GPT-2's tokenizer (needs the data directory)
 * --------------------------------------------------------------------------------------------- */

/* Appends every "question" string of a GSM8K .jsonl file to questions, NUL-separated. */
static int read_questions(const char *path, TokBytes *questions, int *count) {
    char err[512];
    size_t len;
    unsigned char *data = read_whole_file(path, &len);
    JsonlFile f;
    *count = 0;
    if (data == NULL) return -1;
    int rc = jsonl_parse_buffer(path, (const char *)data, len, &f, err, sizeof err);
    free(data);
    if (rc != 0) {
        printf("       (%s)\n", err);
        return -1;
    }
    for (int i = 0; rc == 0 && i < f.count; i++) {
        const char *q = json_require_string(&f.objects[i], "question", err, sizeof err);
        if (q == NULL) {
            printf("       (%s:%d: %s)\n", path, f.line_numbers[i], err);
            rc = -1;
        } else if (tok_bytes_append(questions, q, strlen(q) + 1) == 0) {
            (*count)++;  /* the question and its NUL */
        }
    }
    jsonl_free(&f);
    return rc;
}

static void test_gpt2(const char *data_dir, const char *tmpdir) {
    char path[4096], json_path[1024], err[512];
    snprintf(path, sizeof path, "%s/gpt2", data_dir);
    snprintf(json_path, sizeof json_path, "%s/gpt2/encoder.json", data_dir);
    if (!file_exists(json_path)) {
        skip("GPT-2 tokenizer checks", "no gpt2/encoder.json under the data directory; pass it as argv[1]");
        return;
    }
    Tokenizer *tok = tok_load(path, err, sizeof err);
    check(tok != NULL, "GPT-2 loads from its directory (encoder.json + vocab.bpe)");
    if (tok == NULL) { printf("       (%s)\n", err); return; }
    check(tok_vocab_size(tok) == 50257 && tok_eot(tok) == 50256 && tok->n_merges == 50000,
          "GPT-2: 50257 tokens, 50000 merges, end-of-text 50256");
    snprintf(path, sizeof path, "%s/gpt2/", data_dir);
    Tokenizer *again = tok_load(path, err, sizeof err);
    check(again != NULL, "GPT-2 loads with a trailing slash in the path");
    tok_free(again);

    TokIds ids = {0};
    for (size_t t = 0; t < sizeof gpt2_known_text / sizeof gpt2_known_text[0]; t++) {
        ids.len = 0;
        tok_encode(tok, gpt2_known_text[t], strlen(gpt2_known_text[t]), &ids);
        int ok = ids.len == (size_t)gpt2_known_ids[t][0];
        for (size_t i = 0; ok && i < ids.len; i++) ok = ids.data[i] == gpt2_known_ids[t][i + 1];
        char what[200];
        snprintf(what, sizeof what, "GPT-2 encodes known string %zu exactly like OpenAI's encoder.py", t + 1);
        check(ok, what);
    }
    check(roundtrip_failures(tok, 99, 5000) == 0, "GPT-2: decode(encode(x)) == x for 5000 random byte strings");

    scratch_path(path, sizeof path, tmpdir, "sirt_test_gpt2_llmc.bin");
    char *llmc = NULL;
    size_t llmc_len = 0;
    int ok = tok_save_llmc(tok, path, err, sizeof err) == 0 &&
             tok_read_file(path, 1 << 24, &llmc, &llmc_len, err, sizeof err) == 0 && llmc_len > 1024 + 50257 &&
             tok_get_u32((unsigned char *)llmc + 8) == 50257 && tok_get_u32((unsigned char *)llmc + 12) == 50256 &&
             (unsigned char)llmc[1024] == 1 && llmc[1025] == '!';
    check(ok, "GPT-2 exports to llm.c's decode table (token 0 is \"!\")");
    free(llmc);
    remove(path);
    TokBytes out = {0};
    check(tok_serialize(tok, &out, err, sizeof err) != 0, "GPT-2 cannot be saved in sirt's format (clear error)");
    tok_bytes_free(&out);

    snprintf(path, sizeof path, "%s/gsm8k/test.jsonl", data_dir);
    TokBytes questions = {0}, back = {0};
    int count = 0;
    if (!file_exists(path)) {
        skip("GSM8K round trip", "no gsm8k/test.jsonl under the data directory");
    } else if (read_questions(path, &questions, &count) != 0 || count == 0) {
        check(0, "read the GSM8K test questions");
    } else {
        int failures = 0;
        size_t tokens = 0;
        for (size_t at = 0; at < questions.len;) {
            size_t n = strlen(questions.data + at);
            ids.len = back.len = 0;
            if (tok_encode(tok, questions.data + at, n, &ids) != 0 || tok_decode(tok, ids.data, ids.len, &back) != 0 ||
                back.len != n || memcmp(back.data, questions.data + at, n) != 0) failures++;
            tokens += ids.len;
            at += n + 1;
        }
        char what[200];
        snprintf(what, sizeof what, "all %d GSM8K test questions round-trip through GPT-2 (%zu tokens)", count, tokens);
        check(failures == 0 && count == 1319, what);
    }
    tok_bytes_free(&questions);
    tok_bytes_free(&back);
    tok_ids_free(&ids);
    tok_free(tok);
}

/* llama2.c's tokenizer.bin (tokenizer.c section 9b), on a hand-made file: <unk>, <s>, </s>, the
   256 byte fallbacks, then scored pieces. The expected ids follow run.c's encode() by hand. */
static void put_piece(TokBytes *f, float score, const char *piece) {
    int32_t n = (int32_t)strlen(piece);
    tok_bytes_append(f, &score, 4);
    tok_bytes_append(f, &n, 4);
    tok_bytes_append(f, piece, (size_t)n);
}

static int llama_encodes(Tokenizer *tok, const char *text, const int *expected, size_t n) {
    TokIds ids = {0};
    int ok = tok_encode_ordinary(tok, text, strlen(text), &ids) == 0 && ids.len == n &&
             (n == 0 || memcmp(ids.data, expected, n * sizeof(int)) == 0);
    printf("       (%s ->", text);
    for (size_t i = 0; i < ids.len; i++) printf(" %d", ids.data[i]);
    printf(")\n");
    tok_ids_free(&ids);
    return ok;
}

static void test_llama2c(const char *tmpdir) {
    TokBytes f = {0};
    uint32_t max_len = 6;
    tok_bytes_append(&f, &max_len, 4);
    put_piece(&f, 0, "<unk>");
    put_piece(&f, 0, "\n<s>\n");
    put_piece(&f, 0, "\n</s>\n");
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        put_piece(&f, 0, name);
    }
    /* ids 259..: " " 259, "a" 260, "b" 261, "ab" 262 (score 5), "ba" 263 (9), " a" 264 (1),
       "\xc3\xa9" (é) 265 */
    const char *pieces[] = {" ", "a", "b", "ab", "ba", " a", "\xc3\xa9"};
    float scores[] = {-1, -2, -3, 5, 9, 1, -4};
    for (int i = 0; i < 7; i++) put_piece(&f, scores[i], pieces[i]);
    char path[4096];
    scratch_path(path, sizeof path, tmpdir, "llama_tok.bin");
    char err[512] = "";
    Tokenizer *tok = write_bytes(path, f.data, f.len) == 0 ? tok_load(path, err, sizeof err) : NULL;
    check(tok && tok_vocab_size(tok) == 266 && tok_bos(tok) == 1 && tok_eot(tok) == 2,
          "llama2.c tokenizer.bin loads: 266 tokens, BOS 1, EOS 2 (its end-of-text) %s", err);
    if (!tok) {
        tok_bytes_free(&f);
        return;
    }
    static const int aba[] = {264, 263}, ab[] = {259, 262}, abab[] = {264, 263, 261};
    static const int bytes[] = {259, 3 + 1, 265, 3 + 0xC3, 3 + 0xBC};
    check(llama_encodes(tok, "", NULL, 0), "llama2.c encode: empty text -> no ids (no dummy prefix)");
    check(llama_encodes(tok, "aba", aba, 2), "llama2.c encode: dummy prefix \" \", then the best "
          "score first: \"ba\" (9), then \" a\" (1)");
    check(llama_encodes(tok, "ab", ab, 2), "llama2.c encode: \"ab\" (5) beats \" a\" (1)");
    check(llama_encodes(tok, "abab", abab, 3), "llama2.c encode: the best-scored pair anywhere "
          "merges first (\"ba\" before the two \"ab\"); a merged piece merges again only into a piece");
    check(llama_encodes(tok, "\x01\xc3\xa9\xc3\xbc", bytes, 5), "llama2.c encode: a character "
          "that is a piece (é) is one id; one that is not (ü, \\x01) is its bytes' fallbacks (byte + 3)");
    TokIds cont = {0};
    int cont_ok = tok_encode_continuation(tok, "aba", 3, &cont) == 0 && cont.len == 2 &&
                  cont.data[0] == 260 && cont.data[1] == 263;
    tok_ids_free(&cont);
    check(cont_ok, "llama2.c encode of a continuation (a completion): no dummy prefix, \"aba\" -> "
          "\"a\" \"ba\"");
    int seq[] = {1, 264, 3 + 'A', 2};
    TokBytes text = {0};
    size_t len;
    const unsigned char *after_bos = tok_decode_next(tok, 1, 264, &len);
    int decode_ok = tok_decode(tok, seq, 4, &text) == 0 && text.len == 1 + 1 + 6 &&
                    memcmp(text.data, "aA\n</s>\n", 8) == 0 && after_bos && len == 1 &&
                    after_bos[0] == 'a' && tok_decode_next(tok, 264, 264, &len) && len == 2;
    const unsigned char *space = tok_decode_next(tok, 1, 3 + ' ', &len); /* <0x20> after BOS */
    decode_ok &= space && len == 1 && space[0] == ' ';
    check(decode_ok, "llama2.c decode: BOS has no text, the piece after it loses its leading space "
          "(not elsewhere, nor the byte fallback <0x20>, as in run.c), a byte fallback is its byte");
    tok_bytes_free(&text);
    tok_free(tok);
    /* a file whose byte fallbacks are not <0x00>..<0xFF> in order is refused with the reason */
    f.data[4 + 8 + 5 + 8 + 5 + 8 + 6 + 8 + 4] = '9'; /* "<0x00>" -> "<0x90>" (its "0" after 'x') */
    check(write_bytes(path, f.data, f.len) == 0 && load_fails_with(path, "expected the byte fallback"),
          "llama2.c tokenizer.bin with a wrong byte fallback: clear error");
    check(write_bytes(path, f.data, f.len - 3) == 0 && load_fails_with(path, "truncated in token 265"),
          "truncated llama2.c tokenizer.bin: clear error");
    tok_bytes_free(&f);
}

int main(int argc, char **argv) {
    const char *data_dir = argc > 1 ? argv[1] : "../shared/data";
    char tmpdir[4096]; /* the files written go in a scratch directory of the test's own */
    scratch_make(tmpdir, sizeof tmpdir, "test_tokenizer");
    test_unicode();
    test_pretokenizer();
    test_training(tmpdir);
    test_errors(tmpdir);
    test_gpt2(data_dir, tmpdir);
    test_llama2c(tmpdir);
    scratch_remove(tmpdir);
    return checks_finish();
}
