/* The programs' flags: getopt_long over a table (fq_args.h). */
#include "fq_args.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fq_config.h"

#define MAX_ARGS 64

/* Stores the value of flag a in opts: 0, or -1 with why. */
static int store(const fq_arg_t *a, const char *value, void *opts, char *why, size_t why_size)
{
    void *field = (char *)opts + a->offset;
    int64_t v;
    switch (a->kind) {
    case FQ_ARG_SWITCH:
        *(bool *)field = true;
        return 0;
    case FQ_ARG_STRING:
        *(const char **)field = value;
        return 0;
    case FQ_ARG_INT:
    case FQ_ARG_I64:
        if (fq_config_parse_int64(value, a->min, a->max, &v, why, why_size) != 0)
            return -1;
        if (a->kind == FQ_ARG_INT)
            *(int *)field = (int)v; /* min..max is within int */
        else
            *(int64_t *)field = v;
        return 0;
    case FQ_ARG_CHECKED:
        return a->parse(value, field, why, why_size);
    case FQ_ARG_LISTED:
        break;
    }
    snprintf(why, why_size, "not a flag of this program");
    return -1;
}

int fq_args_parse(const char *prog, const fq_arg_t *args, size_t n, int argc, char **argv,
                  void *opts, int *first_operand)
{
    struct option longopts[MAX_ARGS + 1];
    char shortopts[2 * MAX_ARGS + 2] = ":"; /* ':' first: a missing value is told apart */
    size_t nlong = 0, nshort = 1;
    if (n > MAX_ARGS) {
        fprintf(stderr, "%s: %zu flags, the table holds at most %d\n", prog, n, MAX_ARGS);
        return FQ_EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++) {
        if (args[i].kind == FQ_ARG_LISTED)
            continue;
        int has_arg = args[i].kind == FQ_ARG_SWITCH ? no_argument : required_argument;
        longopts[nlong++] = (struct option){args[i].name, has_arg, NULL, (int)(256 + i)};
        if (args[i].letter) {
            shortopts[nshort++] = args[i].letter;
            if (has_arg == required_argument)
                shortopts[nshort++] = ':';
        }
    }
    longopts[nlong] = (struct option){0};
    shortopts[nshort] = '\0';

    opterr = 0; /* our messages, not getopt's */
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (c == ':') {
            fprintf(stderr, "%s: %s: needs a value (see --help)\n", prog, argv[optind - 1]);
            return FQ_EXIT_USAGE;
        }
        const fq_arg_t *a = NULL;
        if (c >= 256 && (size_t)(c - 256) < n)
            a = &args[c - 256];
        for (size_t i = 0; !a && c != '?' && i < n; i++)
            if (args[i].letter == c && args[i].kind != FQ_ARG_LISTED)
                a = &args[i];
        if (c == '?' && optopt >= 256 && (size_t)(optopt - 256) < n) { /* "--switch=x" */
            fprintf(stderr, "%s: --%s: takes no value (see --help)\n", prog,
                    args[optopt - 256].name);
            return FQ_EXIT_USAGE;
        }
        if (!a) { /* named without any "=value" */
            const char *word = argv[optind - 1];
            fprintf(stderr, "%s: %.*s: unknown option (see --help)\n", prog,
                    (int)strcspn(word, "="), word);
            return FQ_EXIT_USAGE;
        }
        char why[256];
        if (store(a, optarg, opts, why, sizeof(why)) != 0) {
            fprintf(stderr, "%s: --%s: %s\n", prog, a->name, why);
            return FQ_EXIT_USAGE;
        }
    }
    *first_operand = optind;
    return 0;
}

static bool same_group(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

void fq_args_print(FILE *out, const fq_arg_t *args, size_t n, const char *group)
{
    for (size_t i = 0; i < n; i++) {
        const fq_arg_t *a = &args[i];
        if (!same_group(a->group, group))
            continue;
        char flag[64];
        snprintf(flag, sizeof(flag), "%s%s%s%s", a->name[0] == '-' ? "" : "--", a->name,
                 a->value ? " " : "", a->value ? a->value : "");
        fprintf(out, "  %-23s", flag);
        if (strlen(flag) > 23) /* a long flag takes its own line */
            fprintf(out, "\n%25s", "");
        for (const char *line = a->help; line;) {
            const char *nl = strchr(line, '\n');
            fprintf(out, " %.*s\n", nl ? (int)(nl - line) : (int)strlen(line), line);
            line = nl ? nl + 1 : NULL;
            if (line)
                fprintf(out, "%25s", "");
        }
    }
}

const char *fq_args_early(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return "help";
        if (strcmp(argv[i], "--version") == 0)
            return "version";
    }
    return NULL;
}
