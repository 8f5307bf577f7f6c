/* The programs' own flags (DESIGN §6): one table per program, read by getopt_long and printed
 * by --help from the same rows. The settings (environment, --config FILE, -X prop=val and each
 * setting's own flag) are fq_config_load's, which takes them out of argv first. The exit codes
 * of both programs are here too: one definition. */
#ifndef FQ_ARGS_H
#define FQ_ARGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fq_base.h"

/* Exit codes (DESIGN §6). FAILED is "something went to the DLQ" (consumer --once) and
 * "something was not delivered" (producer). */
#define FQ_EXIT_OK     0
#define FQ_EXIT_FAILED 1
#define FQ_EXIT_USAGE  2
#define FQ_EXIT_FATAL  3 /**< consumer: a fatal Kafka error; restart the process */

typedef enum fq_arg_kind {
    FQ_ARG_SWITCH,  /**< no value; sets a bool field */
    FQ_ARG_STRING,  /**< a const char * field points at the value */
    FQ_ARG_INT,     /**< an int field, a whole number in min..max */
    FQ_ARG_I64,     /**< an int64_t field, a whole number in min..max */
    FQ_ARG_CHECKED, /**< parse checks the value and stores it in the field */
    FQ_ARG_LISTED,  /**< read by fq_config_load before the table: a --help row only */
} fq_arg_kind_t;

/** Checks value and stores it at field: 0, or -1 with why (without the flag's name). */
typedef int (*fq_arg_parse_fn)(const char *value, void *field, char *why, size_t why_size);

/** One flag. */
typedef struct fq_arg {
    const char *name; /**< long name without "--"; LISTED rows spell their flag out ("-X") */
    char letter;      /**< a short form ('h'), or 0 */
    fq_arg_kind_t kind;
    size_t offset;         /**< of the field in the program's options */
    int64_t min, max;      /**< INT, I64 */
    fq_arg_parse_fn parse; /**< CHECKED */
    const char *value;     /**< the value's name in --help; NULL: the flag takes none */
    const char *help;      /**< "\n" continues on an indented line */
    const char *group;     /**< rows printed together (fq_args_print); NULL for most */
} fq_arg_t;

/** @brief Reads the flags of argv into opts. getopt_long permutes argv, so flags and operands
 *  may come in any order; the operands end up at argv[*first_operand..argc). 0, or
 *  FQ_EXIT_USAGE after printing "prog: FLAG: why (see --help)" on stderr (unknown flag, value
 *  missing, value refused). */
int fq_args_parse(const char *prog, const fq_arg_t *args, size_t n, int argc, char **argv,
                  void *opts, int *first_operand) FQ_WARN_UNUSED;

/** @brief Prints the --help row of every flag of group (NULL: the rows without one): the flag
 *  and its value's name in a column, then the help text. */
void fq_args_print(FILE *out, const fq_arg_t *args, size_t n, const char *group);

/** @brief "help" or "version" when argv asks for one (--help, -h, --version; not after "--"),
 *  else NULL. The programs look before they read the settings, so that both answer whatever
 *  the environment holds. */
const char *fq_args_early(int argc, char **argv);

#endif
