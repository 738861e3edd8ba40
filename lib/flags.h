// lib/flags.h — command-line flags: a command describes its flags in tables (Flag), and the same
// tables read its argv (flags_parse) and print its --help (flags_usage).
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_FLAGS_H
#define SIRT_LIB_FLAGS_H

// =============================================================================================
// A flag is one row of a table: its name, the kind and the range of its value, where the value
// goes, and one line of help. A table is an array of rows that ends with an empty row ({0}).
//
// Where the value goes: a table of one command's own variables points at them
// (.value = &epochs); a table that several commands share is const data and gives offsets
// (.offset = offsetof(TrainArgs, B)) into a struct that each command passes with it
// (FlagTable.base). A variable holds its default before parsing, and --help shows that value.
// =============================================================================================

typedef enum {
    FLAG_SWITCH, // no value: sets an int to 1
    FLAG_INT,    // an integer in [lo, hi], into an int
    FLAG_LONG,   // an integer in [lo, hi], into a long
    FLAG_U64,    // an integer in [lo, hi], into a uint64_t (the seeds)
    FLAG_FLOAT,  // a finite number in [lo, hi] (-INFINITY, INFINITY: any), into a float
    FLAG_STRING, // the text itself, into a const char * (it points into argv)
    FLAG_CHOICE, // one of the names in `choices`, into an int: the name's index
} FlagKind;

typedef struct {
    const char *name; // "--batch"
    const char *arg;  // what --help calls the value: "B" (a choice without one shows its names)
    FlagKind kind;
    union {
        void *value;   // the variable (in a table of one command's variables)
        size_t offset; // its offset in the struct passed with the table (in a shared table)
    };
    const char *help;           // one line
    double lo, hi;              // the range of a number, both ends included
    const char *const *choices; // FLAG_CHOICE: the names, then NULL
    int *given;                 // when not NULL: set to 1 if the flag is on the command line
} Flag;

typedef struct {
    const char *title; // the heading of the table's part of --help (NULL: none)
    const Flag *flags;
    void *base; // the struct that the rows' offsets are in (NULL: the rows point at variables)
} FlagTable; // a command's tables are an array too, ending with {0}

// ---------------------------------------------------------------------------------------------
// Values: these die with a message that names the flag when a value is missing or malformed
// (the reproduction also checks its pass-through values with them before it starts).
static const char *flag_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    return argv[++*i];
}

static long parse_long(const char *flag, const char *text, long lo, long hi) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end) die("%s: '%s' is not an integer", flag, text);
    if (value < lo || value > hi) die("%s: %ld is outside [%ld, %ld]", flag, value, lo, hi);
    return value;
}

static float parse_float(const char *flag, const char *text) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(value))
        die("%s: '%s' is not a number", flag, text);
    return (float)value;
}

// "a, b or c" (sep ", ", last " or "), or "a|b|c" (both "|"), into out.
static const char *flag_choices_text(const char *const *names, const char *sep, const char *last,
                                     char *out, size_t size) {
    size_t n = 0;
    out[0] = '\0';
    for (int k = 0; names[k] && n < size; k++)
        n += snprintf(out + n, size - n, "%s%s", k == 0 ? "" : names[k + 1] ? sep : last,
                      names[k]);
    return out;
}

// The row named `name` in the tables, and in *place where its value goes; NULL if none is.
static const Flag *flags_find(const FlagTable *tables, const char *name, void **place) {
    for (const FlagTable *t = tables; t->flags; t++)
        for (const Flag *f = t->flags; f->name; f++)
            if (!strcmp(f->name, name)) {
                *place = t->base ? (char *)t->base + f->offset : f->value;
                return f;
            }
    return NULL;
}

// Stores the flag's value, read from text (NULL for a switch), at place.
static void flag_read(const Flag *f, void *place, const char *text) {
    long lo = (long)f->lo, hi = (long)f->hi;
    switch (f->kind) {
    case FLAG_SWITCH: *(int *)place = 1; break;
    case FLAG_INT: *(int *)place = (int)parse_long(f->name, text, lo, hi); break;
    case FLAG_LONG: *(long *)place = parse_long(f->name, text, lo, hi); break;
    case FLAG_U64: *(uint64_t *)place = (uint64_t)parse_long(f->name, text, lo, hi); break;
    case FLAG_FLOAT: {
        float x = parse_float(f->name, text);
        if (x < f->lo || x > f->hi) die("%s: %s is outside [%g, %g]", f->name, text, f->lo, f->hi);
        *(float *)place = x;
        break;
    }
    case FLAG_STRING: *(const char **)place = text; break;
    case FLAG_CHOICE: {
        int k = 0;
        while (f->choices[k] && strcmp(f->choices[k], text)) k++;
        char names[512];
        if (!f->choices[k])
            die("%s must be %s, got '%s'", f->name,
                flag_choices_text(f->choices, ", ", " or ", names, sizeof names), text);
        *(int *)place = k;
        break;
    }
    }
}

// ---------------------------------------------------------------------------------------------
// --help: "usage: ./sirt " and the usage text (the command's required flags), then one line per
// flag: its name and value, its help, and the value that its variable holds — the default, since
// --help is answered before any value is read.

// That value as text; "" when there is none to show: a switch, a NULL string, or a number outside
// its range (such as --lr's -1 in a command that needs --lr given).
static const char *flag_default(const Flag *f, const void *place, char *out, size_t size) {
    double x = 0.0; // a number's value
    out[0] = '\0';
    switch (f->kind) {
    case FLAG_SWITCH: return out;
    case FLAG_INT: x = *(const int *)place; break;
    case FLAG_LONG: x = *(const long *)place; break;
    case FLAG_U64: x = (double)*(const uint64_t *)place; break;
    case FLAG_FLOAT: x = *(const float *)place; break;
    case FLAG_STRING:
        if (*(const char *const *)place) snprintf(out, size, "%s", *(const char *const *)place);
        return out;
    case FLAG_CHOICE: snprintf(out, size, "%s", f->choices[*(const int *)place]); return out;
    }
    if (x >= f->lo && x <= f->hi) snprintf(out, size, f->kind == FLAG_FLOAT ? "%g" : "%.0f", x);
    return out;
}

static void flags_usage(const char *usage, const FlagTable *tables) {
    printf("usage: ./sirt %s\n", usage);
    for (const FlagTable *t = tables; t->flags; t++) {
        printf("\n");
        if (t->title) printf("%s:\n", t->title);
        for (const Flag *f = t->flags; f->name; f++) {
            const void *place = t->base ? (char *)t->base + f->offset : f->value;
            char names[512], shown[600], def[512];
            const char *arg = f->arg;
            if (!arg && f->kind == FLAG_CHOICE)
                arg = flag_choices_text(f->choices, "|", "|", names, sizeof names);
            snprintf(shown, sizeof shown, "%s%s%s", f->name, arg ? " " : "", arg ? arg : "");
            // the name and value in a column, the help beside them (below, when they are longer)
            if (strlen(shown) <= 25) printf("  %-25s %s", shown, f->help);
            else printf("  %s\n%28s%s", shown, "", f->help);
            flag_default(f, place, def, sizeof def);
            printf(def[0] ? " (default %s)\n" : "\n", def);
        }
    }
}

// Reads the words after the command into the tables' variables. Returns 1 when it printed the
// help instead (for -h or --help), and the command then returns 0. The names come first: an
// unknown flag or a missing value stops the program, and -h or --help is answered, before any
// value is read (so the help shows the defaults); then the values, left to right (the last of a
// repeated flag wins). `command` names the command in the error for an unknown flag.
static int flags_parse(int argc, char **argv, const char *command, const char *usage,
                       const FlagTable *tables) {
    void *place;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            flags_usage(usage, tables);
            return 1;
        }
        const Flag *f = flags_find(tables, argv[i], &place);
        if (!f) die("%s: unknown flag '%s' (see ./sirt %s --help)", command, argv[i], command);
        if (f->kind != FLAG_SWITCH) flag_value(argc, argv, &i);
    }
    for (int i = 0; i < argc; i++) {
        const Flag *f = flags_find(tables, argv[i], &place);
        flag_read(f, place, f->kind == FLAG_SWITCH ? NULL : argv[++i]);
        if (f->given) *f->given = 1;
    }
    return 0;
}

#endif // SIRT_LIB_FLAGS_H
