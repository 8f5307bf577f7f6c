/* producer: the frameq CLI (DESIGN §2, §5, §6): argument parsing and dispatch.
 *
 *   producer [enqueue] [FILE|-]   validate all input, then publish batch messages (enqueue.c)
 *   producer redrive              DLQ -> main or retry topic, transactional and resumable
 *                                 (redrive.c, which states the redrive contract)
 *   producer dlq list             the whole DLQ as a table, then counts (dlq.c)
 *   producer topics create        the three topics through the admin API (topics.c)
 *
 * Exit codes: 0 success, 1 something was not delivered / a Kafka operation failed, 2 usage or
 * input error. Human output goes to stdout (results) and stderr (diagnostics, "producer: ...");
 * logs are JSON lines on stderr through fq_log.
 */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "fq_cli.h"
#include "fq_config.h"
#include "fq_item.h"
#include "fq_log.h"
#include "fq_producer.h"

static void on_signal(int sig)
{
    (void)sig;
    fq_cli_stop = 1;
}

/* Checked values of the DLQ filters and of redrive and topics create. */

/* Stores value at field when ok, else says why: "'value' is not what". */
static int keep_if(bool ok, const char *value, void *field, char *why, size_t why_size,
                   const char *what)
{
    if (!ok) {
        snprintf(why, why_size, "'%s' is not %s", value, what);
        return -1;
    }
    *(const char **)field = value;
    return 0;
}

static int parse_stage(const char *value, void *field, char *why, size_t why_size)
{
    fq_stage_t st;
    return keep_if(fq_stage_parse(value, &st) == 0, value, field, why, why_size, "a stage");
}

static int parse_class(const char *value, void *field, char *why, size_t why_size)
{
    fq_class_t k;
    return keep_if(fq_class_parse(value, &k) == 0, value, field, why, why_size, "an error class");
}

static int parse_to(const char *value, void *field, char *why, size_t why_size)
{
    return keep_if(strcmp(value, "main") == 0 || strcmp(value, "retry") == 0, value, field, why,
                   why_size, "main or retry");
}

static int parse_when(const char *value, void *field, char *why, size_t why_size)
{
    if (fq_time_arg_parse(value, fq_time_now_ms(), field) == 0)
        return 0;
    snprintf(why, why_size, "'%s' is neither RFC 3339 nor an age like 30m, 2h, 7d", value);
    return -1;
}

static int parse_rate(const char *value, void *field, char *why, size_t why_size)
{
    char *end = NULL;
    double rate = strtod(value, &end);
    if (end == value || *end || !(rate > 0)) {
        snprintf(why, why_size, "'%s' is not a positive number", value);
        return -1;
    }
    *(double *)field = rate;
    return 0;
}

static int parse_replication(const char *value, void *field, char *why, size_t why_size)
{
    int64_t v;
    if (fq_config_parse_int64(value, -1, 1000, &v, why, why_size) != 0)
        return -1;
    if (v == 0) {
        snprintf(why, why_size, "0 is not allowed");
        return -1;
    }
    *(int *)field = (int)v;
    return 0;
}

#define O(f) offsetof(fq_cli_opts_t, f)
#define SWITCH(n, f, g, h)                                                                         \
    {                                                                                              \
        .name = n, .kind = FQ_ARG_SWITCH, .offset = O(f), .help = h, .group = g                    \
    }
#define NUMBER(n, k, f, lo, hi, v, g, h)                                                           \
    {                                                                                              \
        .name = n, .kind = k, .offset = O(f), .min = lo, .max = hi, .value = v, .help = h,         \
        .group = g                                                                                 \
    }
#define CHECKED(n, fn, f, v, g, h)                                                                 \
    {                                                                                              \
        .name = n, .kind = FQ_ARG_CHECKED, .offset = O(f), .parse = fn, .value = v, .help = h,     \
        .group = g                                                                                 \
    }
static const fq_arg_t options[] = {
    SWITCH("skip-invalid", skip_invalid, "enqueue",
           "publish the valid items even if some are invalid"),
    SWITCH("allow-duplicates", allow_duplicates, "enqueue",
           "send repeated platform:code items (default: sent once)"),
    SWITCH("dry-run", dry_run, "enqueue",
           "validate and print the batch messages, one per line; no\nKafka. redrive: print what "
           "would be redriven; produce and\ncommit nothing"),
    NUMBER("timeout", FQ_ARG_I64, timeout_ms, 1, 3600000, "MS", "enqueue",
           "bound for delivery / Kafka operations (default 30000)"),
    SWITCH("progress", progress_forced, NULL,
           "force the progress line of enqueue, redrive and dlq list\non (default: when stderr is "
           "a terminal, and stdout is\nnot one where rows go to it)"),
    SWITCH("no-progress", no_progress, NULL, "force the progress line off"),

    CHECKED("to", parse_to, to, "main|retry", "redrive",
            "main (default): a fresh one-item batch on KAFKA_TOPIC;\nretry: the item on "
            "KAFKA_RETRY_TOPIC, frameq-attempt=0,\nframeq-not-before=now (runs as attempt 1 "
            "right away)"),
    {.name = "group",
     .kind = FQ_ARG_STRING,
     .offset = O(group),
     .value = "G",
     .group = "redrive",
     .help = "consumer group (default <KAFKA_GROUP_ID>.redrive); its\nposition advances over "
             "every message read, matching or not"},
    {.name = "reason",
     .kind = FQ_ARG_STRING,
     .offset = O(filter.reason),
     .value = "R",
     .group = "redrive",
     .help = "only this dead-letter reason (exact match)"},
    CHECKED("stage", parse_stage, filter.stage, "S", "redrive", "only this failed stage"),
    CHECKED("class", parse_class, filter.klass, "C", "redrive", "only this error class"),
    {.name = "platform",
     .kind = FQ_ARG_STRING,
     .offset = O(filter.platform),
     .value = "P",
     .group = "redrive",
     .help = "only this platform"},
    CHECKED("failed-after", parse_when, filter.failed_after_ms, "T", "redrive",
            "only items that failed after T: RFC 3339 or an age\n(90s, 30m, 2h, 7d)"),
    CHECKED("failed-before", parse_when, filter.failed_before_ms, "T", "redrive",
            "only items that failed before T"),
    NUMBER("limit", FQ_ARG_I64, limit, 0, INT64_MAX, "N", "redrive",
           "stop after N redriven messages"),
    CHECKED("rate", parse_rate, rate, "N", "redrive", "at most N messages per second"),
    NUMBER("max-redrives", FQ_ARG_I64, max_redrives, 0, 1000000, "N", "redrive",
           "loop guard: skip items redriven N times already\n(default 3)"),
    SWITCH("include-malformed", include_malformed, "redrive",
           "redrive undecodable entries as they are (default: skip)"),
    SWITCH("no-db", no_db, "redrive", "do not set redriven items to 'queued' in DATABASE_URL"),

    NUMBER("partitions", FQ_ARG_INT, partitions, 1, 100000, "N", "topics",
           "partitions of the main topic (6)"),
    NUMBER("retry-partitions", FQ_ARG_INT, retry_partitions, 1, 100000, "N", "topics",
           "of the retry topic (= partitions)"),
    NUMBER("dlq-partitions", FQ_ARG_INT, dlq_partitions, 1, 100000, "N", "topics",
           "of the DLQ (1)"),
    CHECKED("replication-factor", parse_replication, replication_factor, "N", "topics",
            "of the three topics (1; -1 = the broker's default)"),
    NUMBER("retention-ms", FQ_ARG_I64, retention_ms, -1, INT64_MAX, "MS", "topics",
           "main and retry topics (7 days)"),
    NUMBER("dlq-retention-ms", FQ_ARG_I64, dlq_retention_ms, -1, INT64_MAX, "MS", "topics",
           "the DLQ (30 days)"),

    {.name = "help", .letter = 'h', .kind = FQ_ARG_SWITCH, .offset = O(help), .help = "this text"},
    SWITCH("version", version, NULL, "print versions and exit"),
    SWITCH("print-config", print_config, NULL, "print the effective configuration and exit"),
    {.name = "config", .kind = FQ_ARG_LISTED, .value = "FILE", .help = "KEY=VALUE settings file"},
    {.name = "-X", .kind = FQ_ARG_LISTED, .value = "prop=val", .help = "any librdkafka property"},
};
#undef O
#undef SWITCH
#undef NUMBER
#undef CHECKED
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: producer [OPTIONS] [enqueue] [FILE|-]\n"
            "       producer [OPTIONS] redrive\n"
            "       producer [OPTIONS] dlq list\n"
            "       producer [OPTIONS] topics create\n"
            "\n"
            "enqueue (default): reads a JSON array or NDJSON of items ({\"platform\",\"code\"[,\n"
            "\"video_url\"]}) from FILE, '-' (stdin) or JOB_INPUT, validates ALL of it, then "
            "publishes\n"
            "batch messages of BATCH_SIZE items to KAFKA_TOPIC (idempotent producer, "
            "acks=all).\n");
    fq_args_print(out, options, N_OPTIONS, "enqueue");
    fprintf(out, "\n"
                 "redrive: moves dead items from KAFKA_DLQ_TOPIC back, transactionally with the "
                 "offsets\n"
                 "of its own consumer group, so every dead message is redriven once across runs.\n"
                 "Every redriven message carries frameq-redrive-count = previous + 1.\n");
    fq_args_print(out, options, N_OPTIONS, "redrive");
    fprintf(out, "\n"
                 "dlq list: prints every DLQ message (key, reason, stage, class, attempts, "
                 "failed-at,\n"
                 "error) from the beginning, then counts by reason and by stage; commits nothing.\n"
                 "\n"
                 "topics create: creates KAFKA_TOPIC, KAFKA_RETRY_TOPIC and KAFKA_DLQ_TOPIC; "
                 "existing\n"
                 "topics are reported as \"exists\".\n");
    fq_args_print(out, options, N_OPTIONS, "topics");
    fprintf(out, "\nCommon:\n");
    fq_args_print(out, options, N_OPTIONS, NULL);
    fprintf(out,
            "\nExit: %d success, %d not delivered / Kafka failure, %d usage or input error.\n\n",
            FQ_EXIT_OK, FQ_EXIT_DELIVERY, FQ_EXIT_USAGE);
    fq_config_print_help(out);
}

static void version(FILE *out)
{
    fprintf(out, "producer (frameq) %s\nlibrdkafka %s\n", FQ_VERSION, rd_kafka_version_str());
}

/* The commands, by their words; enqueue's word may be left out. */
static const struct {
    const char *word, *sub; /* "dlq" "list"; sub NULL for a one-word command */
    fq_cli_command_t cmd;
} commands[] = {
    {"redrive", NULL, FQ_CMD_REDRIVE},
    {"dlq", "list", FQ_CMD_DLQ_LIST},
    {"topics", "create", FQ_CMD_TOPICS_CREATE},
    {"enqueue", NULL, FQ_CMD_ENQUEUE},
};

/* The positional arguments left after getopt: [enqueue] [FILE|-] | redrive | dlq list |
 * topics create. 0, or -1 after printing why. */
static int parse_command(int argc, char **argv, int first, fq_cli_opts_t *o)
{
    char *const *pos = argv + first;
    int npos = argc - first;
    int i = 0;
    o->cmd = FQ_CMD_ENQUEUE;
    for (size_t c = 0; npos && c < sizeof(commands) / sizeof(commands[0]); c++) {
        if (strcmp(pos[0], commands[c].word) != 0)
            continue;
        i = 1;
        if (commands[c].sub) {
            if (npos < 2 || strcmp(pos[1], commands[c].sub) != 0) {
                fprintf(stderr, "producer: %s: expected '%s %s'\n", commands[c].word,
                        commands[c].word, commands[c].sub);
                return -1;
            }
            i = 2;
        }
        o->cmd = commands[c].cmd;
        break;
    }
    if (o->cmd == FQ_CMD_ENQUEUE && i < npos)
        o->input = pos[i++];
    if (i < npos) {
        fprintf(stderr, "producer: %s: unexpected argument (see --help)\n", pos[i]);
        return -1;
    }
    return 0;
}

/* The defaults of the program flags. */
static void opts_defaults(fq_cli_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->timeout_ms = 30000;
    o->limit = -1;
    o->max_redrives = 3;
    o->filter.failed_after_ms = o->filter.failed_before_ms = -1;
    o->partitions = 6;
    o->retry_partitions = -2; /* = partitions */
    o->dlq_partitions = 1;
    o->replication_factor = 1;
    o->retention_ms = 7LL * 86400 * 1000;
    o->dlq_retention_ms = 30LL * 86400 * 1000;
}

/* Parses program flags (config flags were already removed). Returns -1 to exit 2, 1 to exit 0
 * (help/version/print-config done), 0 to run. */
static int parse_args(int argc, char **argv, const fq_config_t *cfg, fq_cli_opts_t *o)
{
    opts_defaults(o);
    int first;
    if (fq_args_parse("producer", options, N_OPTIONS, argc, argv, o, &first) != 0)
        return -1;
    /* --help and --version were answered before the settings; here when abbreviated */
    if (o->help || o->version) {
        (o->help ? usage : version)(stdout);
        return 1;
    }
    if (parse_command(argc, argv, first, o) != 0)
        return -1;
    if (o->retry_partitions == -2)
        o->retry_partitions = o->partitions;
    if (!o->to)
        o->to = "main";
    if (o->print_config) {
        fq_config_print(cfg, stdout);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int rc = FQ_EXIT_USAGE;
    char errstr[512];
    fq_cli_opts_t o;
    /* --help and --version answer whatever the environment holds */
    const char *early = fq_args_early(argc, argv);
    if (early) {
        (strcmp(early, "help") == 0 ? usage : version)(stdout);
        return FQ_EXIT_OK;
    }
    fq_config_t *cfg = fq_config_new();
    if (!cfg) {
        fprintf(stderr, "producer: out of memory\n");
        return FQ_EXIT_USAGE;
    }
    if (fq_config_load(cfg, &argc, argv, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "producer: %s\n", errstr);
        goto done;
    }
    int prc = parse_args(argc, argv, cfg, &o);
    if (prc != 0) {
        rc = prc > 0 ? 0 : FQ_EXIT_USAGE;
        goto done;
    }
    if (fq_log_init("producer", cfg->worker_id, cfg->log_format, cfg->log_level) != 0) {
        fprintf(stderr, "producer: LOG_FORMAT/LOG_LEVEL: unknown value\n");
        goto done;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    switch (o.cmd) {
    case FQ_CMD_ENQUEUE:
        rc = fq_cli_enqueue(cfg, &o);
        break;
    case FQ_CMD_REDRIVE:
        rc = fq_cli_redrive(cfg, &o);
        break;
    case FQ_CMD_DLQ_LIST:
        rc = fq_cli_dlq_list(cfg, &o);
        break;
    case FQ_CMD_TOPICS_CREATE:
        rc = fq_cli_topics_create(cfg, &o);
        break;
    }
done:
    fq_config_destroy(cfg);
    return rc;
}
