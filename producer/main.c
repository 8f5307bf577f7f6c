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
#include <getopt.h>
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

enum {
    OPT_HELP = 1000,
    OPT_VERSION,
    OPT_PRINT_CONFIG,
    OPT_SKIP_INVALID,
    OPT_ALLOW_DUPLICATES,
    OPT_DRY_RUN,
    OPT_TIMEOUT,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_GROUP,
    OPT_REASON,
    OPT_STAGE,
    OPT_CLASS,
    OPT_PLATFORM,
    OPT_FAILED_AFTER,
    OPT_FAILED_BEFORE,
    OPT_LIMIT,
    OPT_RATE,
    OPT_TO,
    OPT_MAX_REDRIVES,
    OPT_INCLUDE_MALFORMED,
    OPT_NO_DB,
    OPT_PARTITIONS,
    OPT_RETRY_PARTITIONS,
    OPT_DLQ_PARTITIONS,
    OPT_REPLICATION_FACTOR,
    OPT_RETENTION_MS,
    OPT_DLQ_RETENTION_MS,
};

static const struct option long_options[] = {
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
    {"skip-invalid", no_argument, NULL, OPT_SKIP_INVALID},
    {"allow-duplicates", no_argument, NULL, OPT_ALLOW_DUPLICATES},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
    {"group", required_argument, NULL, OPT_GROUP},
    {"reason", required_argument, NULL, OPT_REASON},
    {"stage", required_argument, NULL, OPT_STAGE},
    {"class", required_argument, NULL, OPT_CLASS},
    {"platform", required_argument, NULL, OPT_PLATFORM},
    {"failed-after", required_argument, NULL, OPT_FAILED_AFTER},
    {"failed-before", required_argument, NULL, OPT_FAILED_BEFORE},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"rate", required_argument, NULL, OPT_RATE},
    {"to", required_argument, NULL, OPT_TO},
    {"max-redrives", required_argument, NULL, OPT_MAX_REDRIVES},
    {"include-malformed", no_argument, NULL, OPT_INCLUDE_MALFORMED},
    {"no-db", no_argument, NULL, OPT_NO_DB},
    {"partitions", required_argument, NULL, OPT_PARTITIONS},
    {"retry-partitions", required_argument, NULL, OPT_RETRY_PARTITIONS},
    {"dlq-partitions", required_argument, NULL, OPT_DLQ_PARTITIONS},
    {"replication-factor", required_argument, NULL, OPT_REPLICATION_FACTOR},
    {"retention-ms", required_argument, NULL, OPT_RETENTION_MS},
    {"dlq-retention-ms", required_argument, NULL, OPT_DLQ_RETENTION_MS},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: producer [OPTIONS] [enqueue] [FILE|-]\n"
        "       producer [OPTIONS] redrive\n"
        "       producer [OPTIONS] dlq list\n"
        "       producer [OPTIONS] topics create\n"
        "\n"
        "enqueue (default): reads a JSON array or NDJSON of items ({\"platform\",\"code\"[,\n"
        "\"video_url\"]}) from FILE, '-' (stdin) or JOB_INPUT, validates ALL of it, then "
        "publishes\n"
        "batch messages of BATCH_SIZE items to KAFKA_TOPIC (idempotent producer, acks=all).\n"
        "  --skip-invalid         publish the valid items even if some are invalid\n"
        "  --allow-duplicates     send repeated platform:code items (default: sent once)\n"
        "  --dry-run              validate and print the batch messages, one per line; no Kafka\n"
        "  --timeout MS           bound for delivery / Kafka operations (default 30000)\n"
        "  --progress / --no-progress  force the progress line on / off (default: stderr tty)\n"
        "\n"
        "redrive: moves dead items from KAFKA_DLQ_TOPIC back, transactionally with the offsets\n"
        "of its own consumer group, so every dead message is redriven once across runs.\n"
        "  --to main|retry        main (default): a fresh one-item batch on KAFKA_TOPIC;\n"
        "                         retry: the item on KAFKA_RETRY_TOPIC, frameq-attempt=0,\n"
        "                         frameq-not-before=now (runs as attempt 1 right away)\n"
        "  --group G              consumer group (default <KAFKA_GROUP_ID>.redrive); its position\n"
        "                         advances over every message read, matching or not\n"
        "  --reason R  --stage S  --class C  --platform P   filters (exact match)\n"
        "  --failed-after T  --failed-before T   RFC 3339 or an age (90s, 30m, 2h, 7d)\n"
        "  --limit N              stop after N redriven messages\n"
        "  --rate N               at most N messages per second\n"
        "  --max-redrives N       loop guard: skip items redriven N times already (default 3)\n"
        "  --include-malformed    redrive undecodable entries as they are (default: skip)\n"
        "  --no-db                do not set redriven items to 'queued' in DATABASE_URL\n"
        "  --dry-run              print what would be redriven; produce and commit nothing\n"
        "Every redriven message carries frameq-redrive-count = previous + 1.\n"
        "\n"
        "dlq list: prints every DLQ message (key, reason, stage, class, attempts, failed-at,\n"
        "error) from the beginning, then counts by reason and by stage; commits nothing.\n"
        "\n"
        "topics create: creates KAFKA_TOPIC, KAFKA_RETRY_TOPIC and KAFKA_DLQ_TOPIC; existing\n"
        "topics are reported as \"exists\".\n"
        "  --partitions N (6)  --retry-partitions N (= partitions)  --dlq-partitions N (1)\n"
        "  --replication-factor N (1; -1 = broker default)\n"
        "  --retention-ms MS (7 days, main and retry)  --dlq-retention-ms MS (30 days)\n"
        "\n"
        "Common: --help, --version, --print-config, --config FILE, -X prop=val\n"
        "Exit: 0 success, 1 not delivered / Kafka failure, 2 usage or input error.\n"
        "\n");
    fq_config_print_help(out);
}

static int parse_i64(const char *flag, const char *s, int64_t min, int64_t max, int64_t *out)
{
    char why[160];
    if (fq_config_parse_int64(s, min, max, out, why, sizeof(why)) != 0) {
        fprintf(stderr, "producer: %s: %s\n", flag, why);
        return -1;
    }
    return 0;
}

static int parse_int(const char *flag, const char *s, int min, int max, int *out)
{
    int64_t v;
    if (parse_i64(flag, s, min, max, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

/* The positional arguments left after getopt: [enqueue] [FILE|-] | redrive | dlq list |
 * topics create. 0, or -1 after printing why. */
static int parse_command(int argc, char **argv, fq_cli_opts_t *o)
{
    const char *pos[4];
    int npos = 0;
    while (optind < argc) {
        if (npos == 4) {
            fprintf(stderr, "producer: %s: unexpected argument\n", argv[optind]);
            return -1;
        }
        pos[npos++] = argv[optind++];
    }

    int i = 0;
    if (npos && strcmp(pos[0], "redrive") == 0) {
        o->cmd = FQ_CMD_REDRIVE;
        i = 1;
    } else if (npos && strcmp(pos[0], "dlq") == 0) {
        if (npos < 2 || strcmp(pos[1], "list") != 0) {
            fprintf(stderr, "producer: dlq: expected 'dlq list'\n");
            return -1;
        }
        o->cmd = FQ_CMD_DLQ_LIST;
        i = 2;
    } else if (npos && strcmp(pos[0], "topics") == 0) {
        if (npos < 2 || strcmp(pos[1], "create") != 0) {
            fprintf(stderr, "producer: topics: expected 'topics create'\n");
            return -1;
        }
        o->cmd = FQ_CMD_TOPICS_CREATE;
        i = 2;
    } else {
        o->cmd = FQ_CMD_ENQUEUE;
        if (npos && strcmp(pos[0], "enqueue") == 0)
            i = 1;
        if (i < npos)
            o->input = pos[i++];
    }
    if (i < npos) {
        fprintf(stderr, "producer: %s: unexpected argument\n", pos[i]);
        return -1;
    }
    return 0;
}

/* Flags that only set a field of fq_cli_opts_t: a switch (FF_BOOL, no value) or a whole number
 * in min..max. One row each; parse_args keeps a case for the flags with their own rules. */
typedef struct flag_field {
    int opt;
    enum { FF_BOOL, FF_INT, FF_I64 } kind;
    size_t offset;
    int64_t min, max;
} flag_field_t;

#define FIELD(f) offsetof(fq_cli_opts_t, f)
static const flag_field_t flag_fields[] = {
    {OPT_SKIP_INVALID, FF_BOOL, FIELD(skip_invalid), 0, 0},
    {OPT_ALLOW_DUPLICATES, FF_BOOL, FIELD(allow_duplicates), 0, 0},
    {OPT_DRY_RUN, FF_BOOL, FIELD(dry_run), 0, 0},
    {OPT_PROGRESS, FF_BOOL, FIELD(progress_forced), 0, 0},
    {OPT_NO_PROGRESS, FF_BOOL, FIELD(no_progress), 0, 0},
    {OPT_INCLUDE_MALFORMED, FF_BOOL, FIELD(include_malformed), 0, 0},
    {OPT_NO_DB, FF_BOOL, FIELD(no_db), 0, 0},
    {OPT_TIMEOUT, FF_I64, FIELD(timeout_ms), 1, 3600000},
    {OPT_LIMIT, FF_I64, FIELD(limit), 0, INT64_MAX},
    {OPT_MAX_REDRIVES, FF_I64, FIELD(max_redrives), 0, 1000000},
    {OPT_PARTITIONS, FF_INT, FIELD(partitions), 1, 100000},
    {OPT_RETRY_PARTITIONS, FF_INT, FIELD(retry_partitions), 1, 100000},
    {OPT_DLQ_PARTITIONS, FF_INT, FIELD(dlq_partitions), 1, 100000},
    {OPT_RETENTION_MS, FF_I64, FIELD(retention_ms), -1, INT64_MAX},
    {OPT_DLQ_RETENTION_MS, FF_I64, FIELD(dlq_retention_ms), -1, INT64_MAX},
};
#undef FIELD

/* "--name" of a getopt value, for messages. */
static void opt_flag(int opt, char *buf, size_t size)
{
    for (const struct option *lo = long_options; lo->name; lo++)
        if (lo->val == opt) {
            snprintf(buf, size, "--%s", lo->name);
            return;
        }
    snprintf(buf, size, "option %d", opt);
}

/* Sets the field of opt when flag_fields has it: 1 done, 0 not a field flag, -1 after printing
 * why the value is refused. */
static int set_flag_field(fq_cli_opts_t *o, int opt, const char *arg)
{
    for (size_t i = 0; i < sizeof(flag_fields) / sizeof(flag_fields[0]); i++) {
        const flag_field_t *f = &flag_fields[i];
        if (f->opt != opt)
            continue;
        char *field = (char *)o + f->offset;
        if (f->kind == FF_BOOL) {
            *(bool *)field = true;
            return 1;
        }
        char flag[40];
        int64_t v;
        opt_flag(opt, flag, sizeof(flag));
        if (parse_i64(flag, arg, f->min, f->max, &v) != 0)
            return -1;
        if (f->kind == FF_INT)
            *(int *)field = (int)v; /* min..max is within int */
        else
            *(int64_t *)field = v;
        return 1;
    }
    return 0;
}

/* The DLQ filter flags (--reason, --stage, --class, --platform, --failed-after/-before):
 * 1 set, 0 not one of them, -1 after printing why the value is refused. */
static int set_filter_flag(fq_cli_opts_t *o, int c, const char *arg, int64_t now)
{
    switch (c) {
    case OPT_REASON:
        o->filter.reason = arg;
        return 1;
    case OPT_STAGE: {
        fq_stage_t st;
        if (fq_stage_parse(arg, &st) != 0) {
            fprintf(stderr, "producer: --stage: unknown stage '%s'\n", arg);
            return -1;
        }
        o->filter.stage = arg;
        return 1;
    }
    case OPT_CLASS: {
        fq_class_t k;
        if (fq_class_parse(arg, &k) != 0) {
            fprintf(stderr, "producer: --class: unknown class '%s'\n", arg);
            return -1;
        }
        o->filter.klass = arg;
        return 1;
    }
    case OPT_PLATFORM:
        o->filter.platform = arg;
        return 1;
    case OPT_FAILED_AFTER:
    case OPT_FAILED_BEFORE: {
        int64_t *dst =
            c == OPT_FAILED_AFTER ? &o->filter.failed_after_ms : &o->filter.failed_before_ms;
        if (fq_time_arg_parse(arg, now, dst) != 0) {
            fprintf(stderr, "producer: %s: '%s' is neither RFC 3339 nor an age like 30m, 2h, 7d\n",
                    c == OPT_FAILED_AFTER ? "--failed-after" : "--failed-before", arg);
            return -1;
        }
        return 1;
    }
    default:
        return 0;
    }
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
    int want_print_config = 0;
    int64_t now = fq_time_now_ms();

    /* getopt permutes: flags may come before or after the command and the file. */
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
        int set = set_flag_field(o, c, optarg);
        if (set == 0)
            set = set_filter_flag(o, c, optarg, now);
        if (set < 0)
            return -1;
        if (set > 0)
            continue;
        switch (c) {
        case OPT_HELP:
            usage(stdout);
            return 1;
        case OPT_VERSION:
            printf("producer (frameq) %s\nlibrdkafka %s\n", FQ_VERSION, rd_kafka_version_str());
            return 1;
        case OPT_PRINT_CONFIG:
            want_print_config = 1;
            break;
        case OPT_GROUP:
            o->group = optarg;
            break;
        case OPT_RATE: {
            char *end = NULL;
            o->rate = strtod(optarg, &end);
            if (!end || *end || !(o->rate > 0)) {
                fprintf(stderr, "producer: --rate: '%s' is not a positive number\n", optarg);
                return -1;
            }
            break;
        }
        case OPT_TO:
            if (strcmp(optarg, "main") != 0 && strcmp(optarg, "retry") != 0) {
                fprintf(stderr, "producer: --to: '%s' must be main or retry\n", optarg);
                return -1;
            }
            o->to = optarg;
            break;
        case OPT_REPLICATION_FACTOR:
            if (parse_int("--replication-factor", optarg, -1, 1000, &o->replication_factor) != 0 ||
                o->replication_factor == 0) {
                if (o->replication_factor == 0)
                    fprintf(stderr, "producer: --replication-factor: 0 is not allowed\n");
                return -1;
            }
            break;
        case ':':
            fprintf(stderr, "producer: %s: needs a value\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "producer: %s: unknown option (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }

    if (parse_command(argc, argv, o) != 0)
        return -1;
    if (o->retry_partitions == -2)
        o->retry_partitions = o->partitions;
    if (!o->to)
        o->to = "main";
    if (want_print_config) {
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
