/* config/args.c: the programs' flag tables — each kind of flag, flags and operands in any
 * order, every refusal naming the flag, --help rows, and --help/--version found early. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fq_args.h"
#include "fq_test_capture.h"

typedef struct opts {
    bool verbose, help;
    const char *name;
    int count;
    int64_t bytes;
    int parity; /* set by parse_parity: 0 even, 1 odd */
} opts_t;

static int parse_parity(const char *value, void *field, char *why, size_t why_size)
{
    if (strcmp(value, "even") == 0 || strcmp(value, "odd") == 0) {
        *(int *)field = value[0] == 'o';
        return 0;
    }
    snprintf(why, why_size, "'%s' is neither even nor odd", value);
    return -1;
}

#define O(f) offsetof(opts_t, f)
static const fq_arg_t table[] = {
    {.name = "verbose", .kind = FQ_ARG_SWITCH, .offset = O(verbose), .help = "say more"},
    {.name = "name",
     .kind = FQ_ARG_STRING,
     .offset = O(name),
     .value = "NAME",
     .help = "what to call it\nsecond line"},
    {.name = "count",
     .kind = FQ_ARG_INT,
     .offset = O(count),
     .min = 1,
     .max = 9,
     .value = "N",
     .help = "how many",
     .group = "numbers"},
    {.name = "bytes",
     .kind = FQ_ARG_I64,
     .offset = O(bytes),
     .min = 0,
     .max = INT64_MAX,
     .value = "B",
     .help = "how much",
     .group = "numbers"},
    {.name = "parity",
     .kind = FQ_ARG_CHECKED,
     .offset = O(parity),
     .parse = parse_parity,
     .value = "even|odd",
     .help = "which"},
    {.name = "help", .letter = 'h', .kind = FQ_ARG_SWITCH, .offset = O(help), .help = "this"},
    {.name = "-X", .kind = FQ_ARG_LISTED, .value = "prop=val", .help = "read elsewhere"},
};
#undef O
#define N_TABLE (sizeof(table) / sizeof(table[0]))

/* Parses the NULL-terminated words after "prog"; returns fq_args_parse's result, the operands
 * joined by spaces in ops and what it printed on stderr in *err (the caller frees). */
static int parse(opts_t *o, char *ops, size_t ops_size, char **err, ...)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *w; (w = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = w;
    va_end(ap);
    memset(o, 0, sizeof(*o));
    fq_test_capture_t cap;
    fq_test_capture_start(&cap);
    int first = -1;
    int rc = fq_args_parse("prog", table, N_TABLE, argc, argv, o, &first);
    *err = fq_test_capture_end(&cap);
    ops[0] = '\0';
    for (int i = first; rc == 0 && i < argc; i++) {
        strncat(ops, argv[i], ops_size - strlen(ops) - 2);
        if (i + 1 < argc)
            strcat(ops, " ");
    }
    return rc;
}

static void test_every_kind_and_operands_anywhere(void **state)
{
    (void)state;
    opts_t o;
    char ops[128], *err;
    assert_int_equal(parse(&o, ops, sizeof(ops), &err, "first", "--verbose", "--name", "n1",
                           "second", "--count=7", "--bytes", "9000000000", "--parity", "odd", "-h",
                           "--", "--count", NULL),
                     0);
    assert_true(o.verbose);
    assert_true(o.help);
    assert_string_equal(o.name, "n1");
    assert_int_equal(o.count, 7);
    assert_int_equal(o.bytes, 9000000000LL);
    assert_int_equal(o.parity, 1);
    /* operands keep their order; after "--" even a flag's name is one */
    assert_string_equal(ops, "first second --count");
    assert_string_equal(err, "");
    free(err);
}

static void test_refusals_name_the_flag(void **state)
{
    (void)state;
    static const struct {
        const char *word, *value, *said;
    } cases[] = {
        {"--count", "0", "prog: --count: 0 is out of range 1..9\n"},
        {"--count", "3x", "prog: --count: \"3x\" is not a whole number\n"},
        {"--bytes", "-1", "prog: --bytes: -1 is out of range 0..9223372036854775807\n"},
        {"--parity", "both", "prog: --parity: 'both' is neither even nor odd\n"},
        {"--frobnicate", NULL, "prog: --frobnicate: unknown option (see --help)\n"},
        {"--frobnicate=1", NULL, "prog: --frobnicate: unknown option (see --help)\n"},
        {"-z", NULL, "prog: -z: unknown option (see --help)\n"},
        {"--verbose=yes", NULL, "prog: --verbose: takes no value (see --help)\n"},
        {"--name", NULL, "prog: --name: needs a value (see --help)\n"},
        {"-X", "a=b", "prog: -X: unknown option (see --help)\n"}, /* LISTED: not ours */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        opts_t o;
        char ops[64], *err;
        int rc =
            parse(&o, ops, sizeof(ops), &err, (char *)cases[i].word, (char *)cases[i].value, NULL);
        if (rc != FQ_EXIT_USAGE || strcmp(err, cases[i].said) != 0)
            fail_msg("%s %s: rc %d, said \"%s\", want \"%s\"", cases[i].word,
                     cases[i].value ? cases[i].value : "", rc, err, cases[i].said);
        free(err);
    }
}

static void test_help_rows(void **state)
{
    (void)state;
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_non_null(out);
    fq_args_print(out, table, N_TABLE, NULL);
    fputs("--\n", out);
    fq_args_print(out, table, N_TABLE, "numbers");
    fclose(out);
    assert_string_equal(text, "  --verbose               say more\n"
                              "  --name NAME             what to call it\n"
                              "                          second line\n"
                              "  --parity even|odd       which\n"
                              "  --help                  this\n"
                              "  -X prop=val             read elsewhere\n"
                              "--\n"
                              "  --count N               how many\n"
                              "  --bytes B               how much\n");
    free(text);
}

static void test_help_and_version_found_early(void **state)
{
    (void)state;
    char *a[] = {"prog", "--role", "x", "--version", NULL};
    assert_string_equal(fq_args_early(4, a), "version");
    char *b[] = {"prog", "-h", NULL};
    assert_string_equal(fq_args_early(2, b), "help");
    char *c[] = {"prog", "--", "--help", NULL};
    assert_null(fq_args_early(3, c));
    char *d[] = {"prog", "--helpful", "--versions", NULL};
    assert_null(fq_args_early(3, d));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_kind_and_operands_anywhere),
        cmocka_unit_test(test_refusals_name_the_flag),
        cmocka_unit_test(test_help_rows),
        cmocka_unit_test(test_help_and_version_found_early),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
