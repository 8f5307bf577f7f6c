/* producer: the frameq CLI (DESIGN §2, §5, §6).
 *
 *   producer [enqueue] [FILE|-]   validate all input, then publish batch messages
 *   producer redrive              DLQ -> main or retry topic, transactional and resumable
 *   producer dlq list             the whole DLQ as a table, then counts
 *   producer topics create        the three topics through the admin API
 *
 * Redrive contract (what the consumer relies on):
 *  - --to main: the item becomes a fresh one-item batch message (new batch_id as key) with a
 *    header frameq-redrive-count = previous + 1. Items stay simple: the count lives only in the
 *    header, and the consumer copies the source message's headers onto retry/DLQ messages, so
 *    it survives the trip through the main topic.
 *  - --to retry: the DLQ value (the item as received) with the DLQ headers carried over,
 *    frameq-dlq-reason removed, frameq-attempt=0 (no failure since the redrive: the consumer
 *    runs it as attempt 1), frameq-not-before=now, frameq-redrive-count = previous + 1.
 *  - Loop guard: entries with frameq-redrive-count >= --max-redrives are skipped and reported.
 *  - The produced messages and the group's DLQ offsets commit in one transaction
 *    (transactional.id "frameq-redrive-<group>"), in chunks of <= 500 messages / 1 s; a crash
 *    loses at most the open chunk, which the next run redrives, never twice. The partitions
 *    are assign()ed from the group's committed offsets (no rebalance wait; the end of the DLQ
 *    is known exactly) and the group's position advances over every message read, matching
 *    the filters or not: a different filter set later needs another --group.
 *
 * Exit codes: 0 success, 1 something was not delivered / a Kafka operation failed, 2 usage or
 * input error. Human output goes to stdout (results) and stderr (diagnostics, "producer: ...");
 * logs are JSON lines on stderr through fq_log.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "fq_config.h"
#include "fq_fetch.h"
#include "fq_headers.h"
#include "fq_input.h"
#include "fq_item.h"
#include "fq_log.h"
#include "fq_producer.h"
#include "fq_store.h"

#define EXIT_DELIVERY      1
#define EXIT_USAGE         2
#define MAX_FAILURES_SHOWN 20

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

typedef enum command {
    CMD_ENQUEUE = 0,
    CMD_REDRIVE,
    CMD_DLQ_LIST,
    CMD_TOPICS_CREATE,
} command_t;

/* Every flag of every subcommand; parsing checks which ones apply. */
typedef struct opts {
    command_t cmd;
    const char *input;
    bool skip_invalid, allow_duplicates, dry_run, progress_forced, no_progress;
    int64_t timeout_ms;
    /* redrive */
    const char *group, *to;
    fq_dlq_filter_t filter;
    int64_t limit; /* -1 none */
    double rate;   /* 0 none */
    int64_t max_redrives;
    bool include_malformed, no_db;
    /* topics create */
    int partitions, retry_partitions, dlq_partitions, replication_factor;
    int64_t retention_ms, dlq_retention_ms;
} opts_t;

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
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || end == s || *end || v < min || v > max) {
        fprintf(stderr, "producer: %s: '%s' is not a number in %" PRId64 "..%" PRId64 "\n", flag, s,
                min, max);
        return -1;
    }
    *out = v;
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

/* Parses program flags (config flags were already removed). Returns -1 to exit 2, 1 to exit 0
 * (help/version/print-config done), 0 to run. */
static int parse_args(int argc, char **argv, const fq_config_t *cfg, opts_t *o)
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
    int want_print_config = 0;
    int64_t now = fq_time_now_ms();

    /* getopt permutes: flags may come before or after the command and the file. */
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
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
        case OPT_SKIP_INVALID:
            o->skip_invalid = true;
            break;
        case OPT_ALLOW_DUPLICATES:
            o->allow_duplicates = true;
            break;
        case OPT_DRY_RUN:
            o->dry_run = true;
            break;
        case OPT_TIMEOUT:
            if (parse_i64("--timeout", optarg, 1, 3600000, &o->timeout_ms) != 0)
                return -1;
            break;
        case OPT_PROGRESS:
            o->progress_forced = true;
            break;
        case OPT_NO_PROGRESS:
            o->no_progress = true;
            break;
        case OPT_GROUP:
            o->group = optarg;
            break;
        case OPT_REASON:
            o->filter.reason = optarg;
            break;
        case OPT_STAGE: {
            fq_stage_t st;
            if (fq_stage_parse(optarg, &st) != 0) {
                fprintf(stderr, "producer: --stage: unknown stage '%s'\n", optarg);
                return -1;
            }
            o->filter.stage = optarg;
            break;
        }
        case OPT_CLASS: {
            fq_class_t k;
            if (fq_class_parse(optarg, &k) != 0) {
                fprintf(stderr, "producer: --class: unknown class '%s'\n", optarg);
                return -1;
            }
            o->filter.klass = optarg;
            break;
        }
        case OPT_PLATFORM:
            o->filter.platform = optarg;
            break;
        case OPT_FAILED_AFTER:
        case OPT_FAILED_BEFORE: {
            int64_t *dst =
                c == OPT_FAILED_AFTER ? &o->filter.failed_after_ms : &o->filter.failed_before_ms;
            if (fq_time_arg_parse(optarg, now, dst) != 0) {
                fprintf(stderr,
                        "producer: %s: '%s' is neither RFC 3339 nor an age like 30m, 2h, 7d\n",
                        c == OPT_FAILED_AFTER ? "--failed-after" : "--failed-before", optarg);
                return -1;
            }
            break;
        }
        case OPT_LIMIT:
            if (parse_i64("--limit", optarg, 0, INT64_MAX, &o->limit) != 0)
                return -1;
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
        case OPT_MAX_REDRIVES:
            if (parse_i64("--max-redrives", optarg, 0, 1000000, &o->max_redrives) != 0)
                return -1;
            break;
        case OPT_INCLUDE_MALFORMED:
            o->include_malformed = true;
            break;
        case OPT_NO_DB:
            o->no_db = true;
            break;
        case OPT_PARTITIONS:
            if (parse_int("--partitions", optarg, 1, 100000, &o->partitions) != 0)
                return -1;
            break;
        case OPT_RETRY_PARTITIONS:
            if (parse_int("--retry-partitions", optarg, 1, 100000, &o->retry_partitions) != 0)
                return -1;
            break;
        case OPT_DLQ_PARTITIONS:
            if (parse_int("--dlq-partitions", optarg, 1, 100000, &o->dlq_partitions) != 0)
                return -1;
            break;
        case OPT_REPLICATION_FACTOR:
            if (parse_int("--replication-factor", optarg, -1, 1000, &o->replication_factor) != 0 ||
                o->replication_factor == 0) {
                if (o->replication_factor == 0)
                    fprintf(stderr, "producer: --replication-factor: 0 is not allowed\n");
                return -1;
            }
            break;
        case OPT_RETENTION_MS:
            if (parse_i64("--retention-ms", optarg, -1, INT64_MAX, &o->retention_ms) != 0)
                return -1;
            break;
        case OPT_DLQ_RETENTION_MS:
            if (parse_i64("--dlq-retention-ms", optarg, -1, INT64_MAX, &o->dlq_retention_ms) != 0)
                return -1;
            break;
        case ':':
            fprintf(stderr, "producer: %s: needs a value\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "producer: %s: unknown option (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }

    /* Positional arguments: [enqueue] [FILE|-] | redrive | dlq list | topics create. */
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
        o->cmd = CMD_REDRIVE;
        i = 1;
    } else if (npos && strcmp(pos[0], "dlq") == 0) {
        if (npos < 2 || strcmp(pos[1], "list") != 0) {
            fprintf(stderr, "producer: dlq: expected 'dlq list'\n");
            return -1;
        }
        o->cmd = CMD_DLQ_LIST;
        i = 2;
    } else if (npos && strcmp(pos[0], "topics") == 0) {
        if (npos < 2 || strcmp(pos[1], "create") != 0) {
            fprintf(stderr, "producer: topics: expected 'topics create'\n");
            return -1;
        }
        o->cmd = CMD_TOPICS_CREATE;
        i = 2;
    } else {
        o->cmd = CMD_ENQUEUE;
        if (npos && strcmp(pos[0], "enqueue") == 0)
            i = 1;
        if (i < npos)
            o->input = pos[i++];
    }
    if (i < npos) {
        fprintf(stderr, "producer: %s: unexpected argument\n", pos[i]);
        return -1;
    }
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

/* True when the user set this librdkafka property (KAFKA_CONFIG_* or -X): ours yield. */
static bool user_set(const fq_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->kafka_props_count; i++)
        if (strcmp(cfg->kafka_props[i].name, name) == 0)
            return true;
    return false;
}

static int conf_set(rd_kafka_conf_t *conf, const fq_config_t *cfg, bool force, const char *name,
                    const char *value)
{
    char errstr[256];
    if (!force && user_set(cfg, name))
        return 0;
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "producer: %s=%s: %s\n", name, value, errstr);
        return -1;
    }
    return 0;
}

/* librdkafka's own log lines become JSON log lines like every other diagnostic. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    fq_log(level <= 4   ? FQ_LOG_WARN
           : level <= 6 ? FQ_LOG_INFO
                        : FQ_LOG_DEBUG,
           NULL, "kafka %s: %s", fac, buf);
}

static rd_kafka_conf_t *kafka_conf(const fq_config_t *cfg)
{
    char errstr[512];
    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, errstr, sizeof(errstr));
    if (!conf) {
        fprintf(stderr, "producer: %s\n", errstr);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    return conf;
}

/* ------------------------------------------------------------------------------------------ */
/* enqueue */

typedef struct batch_meta {
    char batch_id[37];
    char first[FQ_ITEM_KEY_MAX];
    size_t count;
} batch_meta_t;

typedef struct enqueue_state {
    const fq_config_t *cfg;
    uint64_t items_ok, batches_ok, items_failed, batches_failed;
    char last_error[512]; /* from error_cb: the transport-level reason */
    char first_dr_error[256];
    bool progress;
    int64_t t0;
    uint64_t total_items;
    int64_t last_progress;
    uint64_t input_size; /* bytes of a regular input file; 0 when unknown */
} enqueue_state_t;

static void report_invalid(void *opaque, const char *where, const char *why)
{
    (void)opaque;
    fprintf(stderr, "producer: invalid item at %s: %s\n", where, why);
}

static void enqueue_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    enqueue_state_t *st = opaque;
    batch_meta_t *meta = msg->_private;
    if (!msg->err) {
        st->items_ok += meta ? meta->count : 0;
        st->batches_ok++;
    } else {
        st->items_failed += meta ? meta->count : 0;
        if (st->batches_failed < MAX_FAILURES_SHOWN && meta)
            fprintf(stderr, "producer: batch %s (%zu items, first %s) not delivered: %s\n",
                    meta->batch_id, meta->count, meta->first, rd_kafka_err2str(msg->err));
        if (!st->batches_failed)
            snprintf(st->first_dr_error, sizeof(st->first_dr_error), "%s",
                     rd_kafka_err2str(msg->err));
        st->batches_failed++;
    }
    free(meta);
}

static void enqueue_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    enqueue_state_t *st = opaque;
    snprintf(st->last_error, sizeof(st->last_error), "%s", reason);
    FQ_DEBUG(NULL, "kafka: %s: %s", rd_kafka_err2name(err), reason);
}

static void progress_line(enqueue_state_t *st, uint64_t sent, bool final)
{
    if (!st->progress)
        return;
    int64_t now = fq_time_mono_ms();
    if (!final && now - st->last_progress < 200)
        return;
    st->last_progress = now;
    char eta[32];
    int64_t elapsed = now - st->t0;
    fq_progress_fmt_duration(fq_progress_eta_ms(st->items_ok, st->total_items, elapsed), eta,
                             sizeof(eta));
    fprintf(stderr,
            "\r\033[K%" PRIu64 "/%" PRIu64 " items sent, %" PRIu64 " delivered in %" PRIu64
            " batches, %.0f items/s, ETA %s%s",
            sent, st->total_items, st->items_ok, st->batches_ok,
            fq_progress_rate(st->items_ok, elapsed), eta, final ? "\n" : "");
}

static void read_progress(void *opaque, const fq_input_stats_t *stats)
{
    enqueue_state_t *st = opaque;
    if (!st->progress)
        return;
    int64_t now = fq_time_mono_ms();
    if (now - st->last_progress < 200)
        return;
    st->last_progress = now;
    if (st->input_size > 0) {
        /* a regular file: its size gives a fraction and an ETA for this pass */
        char eta[32];
        int64_t elapsed = now - st->t0;
        fq_progress_fmt_duration(fq_progress_eta_ms(stats->bytes, st->input_size, elapsed), eta,
                                 sizeof(eta));
        fprintf(stderr,
                "\r\033[Kvalidating: %.0f%%, %zu items read, %zu invalid, %zu duplicates, "
                "%.0f items/s, ETA %s",
                100.0 * (double)stats->bytes / (double)st->input_size, stats->records,
                stats->invalid, stats->duplicates, fq_progress_rate(stats->records, elapsed), eta);
    } else {
        fprintf(stderr, "\r\033[Kvalidating: %zu items read, %zu invalid, %zu duplicates",
                stats->records, stats->invalid, stats->duplicates);
    }
}

static FILE *open_input(const fq_config_t *cfg, const opts_t *o, const char **name)
{
    if (o->input && strcmp(o->input, "-") != 0) {
        *name = o->input;
        FILE *in = fopen(o->input, "r");
        if (!in)
            fprintf(stderr, "producer: %s: %s\n", o->input, strerror(errno));
        return in;
    }
    if (o->input || (!cfg->job_input && !isatty(STDIN_FILENO))) {
        *name = "stdin";
        return stdin;
    }
    if (cfg->job_input) {
        *name = "JOB_INPUT";
        FILE *in = fmemopen(cfg->job_input, strlen(cfg->job_input), "r");
        if (!in)
            fprintf(stderr, "producer: JOB_INPUT: %s\n", strerror(errno));
        return in;
    }
    fprintf(stderr, "producer: no input: give FILE, '-' for stdin, or set JOB_INPUT\n");
    return NULL;
}

static int cmd_enqueue(const fq_config_t *cfg, const opts_t *o)
{
    int rc = EXIT_USAGE;
    const char *name = NULL;
    rd_kafka_t *rk = NULL;
    fq_spool_t *spool = NULL;
    fq_allow_t *allow = NULL;
    fq_item_t *items = NULL;
    size_t bsize = (size_t)cfg->batch_size;
    enqueue_state_t st = {.cfg = cfg};
    st.progress = !o->no_progress && (o->progress_forced || isatty(STDERR_FILENO));
    st.t0 = st.last_progress = fq_time_mono_ms();

    FILE *in = open_input(cfg, o, &name);
    if (!in)
        goto done;
    struct stat sb;
    if (fstat(fileno(in), &sb) == 0 && S_ISREG(sb.st_mode))
        st.input_size = (uint64_t)sb.st_size;
    char errstr[512];
    /* The workers' allow-list, built from the same settings: a video_url they would refuse is
     * refused here, before anything is published (DESIGN §2, §6). */
    allow = fq_allow_from_config(cfg, errstr, sizeof(errstr));
    if (!allow) {
        fprintf(stderr, "producer: %s\n", errstr);
        goto done;
    }
    fq_input_opts_t iopts = {.allow_duplicates = o->allow_duplicates,
                             .report = report_invalid,
                             .opaque = &st,
                             .allow = allow,
                             .progress = read_progress};
    fq_input_stats_t stats;
    spool = fq_input_read(in, &iopts, &stats, errstr, sizeof(errstr));
    if (in != stdin)
        fclose(in);
    if (st.progress)
        fprintf(stderr, "\r\033[K");
    if (!spool) {
        fprintf(stderr, "producer: %s: %s\n", name, errstr);
        goto done;
    }
    if (stats.invalid)
        fprintf(stderr, "producer: %zu invalid item%s in %s%s\n", stats.invalid,
                stats.invalid == 1 ? "" : "s", name,
                o->skip_invalid ? " skipped (--skip-invalid)"
                                : "; nothing sent (--skip-invalid sends the valid ones)");
    if (stats.refused_urls)
        fprintf(
            stderr,
            "producer: video_url allow-list: ALLOWED_SOURCE_SCHEMES=%s ALLOWED_SOURCE_HOSTS=%s%s "
            "(the workers' settings; see --print-config)\n",
            cfg->allowed_source_schemes, cfg->allowed_source_hosts,
            cfg->source_url_template && *cfg->source_url_template
                ? " plus SOURCE_URL_TEMPLATE's host"
                : "");
    if (stats.invalid && !o->skip_invalid)
        goto done;
    if (stats.duplicates)
        fprintf(stderr, "producer: %zu duplicate item%s dropped (--allow-duplicates keeps them)\n",
                stats.duplicates, stats.duplicates == 1 ? "" : "s");

    size_t total = fq_spool_count(spool);
    size_t nbatches = fq_batch_count(total, bsize);
    st.total_items = total;
    items = calloc(bsize, sizeof(*items));
    if (!items) {
        fprintf(stderr, "producer: out of memory\n");
        goto done;
    }

    if (!o->dry_run) {
        rd_kafka_conf_t *conf = kafka_conf(cfg);
        if (!conf)
            goto done;
        char tmo[32];
        snprintf(tmo, sizeof(tmo), "%" PRId64, o->timeout_ms);
        /* Idempotence and acks=all are the contract: not overridable. Batching favours
         * throughput (the whole run is one burst); the queue bound keeps RSS flat however
         * many items there are: producev waits on QUEUE_FULL. */
        if (conf_set(conf, cfg, true, "enable.idempotence", "true") ||
            conf_set(conf, cfg, true, "acks", "all") ||
            conf_set(conf, cfg, false, "message.timeout.ms", tmo) ||
            conf_set(conf, cfg, false, "linger.ms", "20") ||
            conf_set(conf, cfg, false, "batch.size", "1000000") ||
            conf_set(conf, cfg, false, "queue.buffering.max.kbytes", "32768") ||
            conf_set(conf, cfg, false, "compression.type", "lz4")) {
            rd_kafka_conf_destroy(conf);
            goto done;
        }
        rd_kafka_conf_set_dr_msg_cb(conf, enqueue_dr_cb);
        rd_kafka_conf_set_error_cb(conf, enqueue_error_cb);
        rd_kafka_conf_set_opaque(conf, &st);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
            rd_kafka_conf_destroy(conf);
            fprintf(stderr, "producer: kafka: %s\n", errstr);
            goto done;
        }
        conf = NULL; /* now owned by rk */
        FQ_INFO(NULL, "enqueue: %zu items in %zu batches to %s (librdkafka %s)", total, nbatches,
                cfg->kafka_topic, rd_kafka_version_str());
    }

    st.t0 = fq_time_mono_ms();
    uint64_t sent = 0;
    rc = 0;
    for (size_t b = 0; b < nbatches && !stop_requested; b++) {
        size_t n = fq_batch_len(total, bsize, b);
        for (size_t i = 0; i < n; i++) {
            fq_item_clear(&items[i]);
            if (fq_spool_next(spool, &items[i]) != 1) {
                fprintf(stderr, "producer: temporary spool file: read error\n");
                rc = EXIT_DELIVERY;
                goto flush;
            }
        }
        batch_meta_t *meta = calloc(1, sizeof(*meta));
        char at[40];
        if (!meta) {
            rc = EXIT_DELIVERY;
            goto flush;
        }
        fq_uuid4(meta->batch_id);
        fq_item_key(&items[0], meta->first, sizeof(meta->first));
        meta->count = n;
        fq_time_rfc3339(fq_time_now_ms(), at, sizeof(at));
        size_t len = 0;
        char *msg = fq_batch_encode(meta->batch_id, at, items, n, &len);
        if (!msg) {
            free(meta);
            rc = EXIT_DELIVERY;
            goto flush;
        }
        if (o->dry_run) {
            fwrite(msg, 1, len, stdout);
            putchar('\n');
            free(msg);
            free(meta);
            st.items_ok += n;
            st.batches_ok++;
            continue;
        }
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(cfg->kafka_topic), RD_KAFKA_V_KEY(meta->batch_id, 36),
                RD_KAFKA_V_VALUE(msg, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                RD_KAFKA_V_OPAQUE(meta), RD_KAFKA_V_END);
            if (!err)
                break;
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !stop_requested) {
                rd_kafka_poll(rk, 50);
                progress_line(&st, sent, false);
                continue;
            }
            fprintf(stderr, "producer: batch %s (%zu items, first %s) not sent: %s\n",
                    meta->batch_id, n, meta->first, rd_kafka_err2str(err));
            st.batches_failed++;
            st.items_failed += n;
            free(msg);
            free(meta);
            break;
        }
        sent += n;
        rd_kafka_poll(rk, 0);
        progress_line(&st, sent, false);
    }

flush:
    if (rk) {
        /* Bounded: message.timeout.ms fails whatever the broker did not take in time. */
        int64_t deadline = fq_time_mono_ms() + o->timeout_ms + 10000;
        while (rd_kafka_outq_len(rk) > 0 && fq_time_mono_ms() < deadline) {
            rd_kafka_flush(rk, 100);
            progress_line(&st, sent, false);
            if (stop_requested && fq_time_mono_ms() + 5000 < deadline)
                deadline = fq_time_mono_ms() + 5000;
        }
        progress_line(&st, sent, true);
        if (rd_kafka_outq_len(rk) > 0) {
            fprintf(stderr, "producer: %d messages still queued at the deadline\n",
                    rd_kafka_outq_len(rk));
            /* Purged messages get their delivery reports (counted as failed, meta freed). */
            rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(rk, 1000);
        }
        char fatal[256];
        if (rd_kafka_fatal_error(rk, fatal, sizeof(fatal)))
            fprintf(stderr, "producer: fatal producer error: %s\n", fatal);
    }
    if (o->dry_run) {
        fprintf(stderr, "producer: %" PRIu64 " items in %" PRIu64 " batches (dry run, not sent)\n",
                st.items_ok, st.batches_ok);
        rc = rc ? rc : 0;
        goto done;
    }
    FQ_INFO(NULL,
            "enqueue done: %" PRIu64 " items in %" PRIu64 " batches delivered, %" PRIu64
            " batches failed, %zu invalid, %zu duplicates, %.0f items/s",
            st.items_ok, st.batches_ok, st.batches_failed, stats.invalid, stats.duplicates,
            fq_progress_rate(st.items_ok, fq_time_mono_ms() - st.t0));
    printf("%" PRIu64 " items in %" PRIu64 " batches delivered to %s\n", st.items_ok, st.batches_ok,
           cfg->kafka_topic);
    if (stats.invalid || stats.duplicates)
        fprintf(stderr, "producer: %zu invalid skipped, %zu duplicates dropped\n", stats.invalid,
                stats.duplicates);
    if (st.batches_failed || st.items_ok < total) {
        if (st.batches_failed > MAX_FAILURES_SHOWN)
            fprintf(stderr, "producer: ... and %" PRIu64 " more failed batches\n",
                    st.batches_failed - MAX_FAILURES_SHOWN);
        fprintf(stderr,
                "producer: could not deliver to KAFKA_BROKERS=%s: %s (%" PRIu64
                " of %zu items in %" PRIu64 " batches not delivered)\n",
                cfg->kafka_brokers,
                st.last_error[0] ? st.last_error
                                 : (st.first_dr_error[0] ? st.first_dr_error : "interrupted"),
                (uint64_t)total - st.items_ok, total, (uint64_t)nbatches - st.batches_ok);
        rc = EXIT_DELIVERY;
    }
    if (stop_requested && !rc)
        rc = EXIT_DELIVERY;

done:
    if (items) {
        for (size_t i = 0; i < bsize; i++)
            fq_item_clear(&items[i]);
        free(items);
    }
    if (rk)
        rd_kafka_destroy(rk);
    fq_spool_destroy(spool);
    fq_allow_destroy(allow);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* topics create */

static int cmd_topics_create(const fq_config_t *cfg, const opts_t *o)
{
    int rc = EXIT_DELIVERY;
    char errstr[512];
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *aopts = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_NewTopic_t *nt[3] = {NULL, NULL, NULL};
    const char *names[3] = {cfg->kafka_topic, cfg->kafka_retry_topic, cfg->kafka_dlq_topic};
    int parts[3] = {o->partitions, o->retry_partitions, o->dlq_partitions};
    int64_t retention[3] = {o->retention_ms, o->retention_ms, o->dlq_retention_ms};

    rd_kafka_conf_t *conf = kafka_conf(cfg);
    if (!conf)
        return EXIT_USAGE;
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "producer: kafka: %s\n", errstr);
        return EXIT_USAGE;
    }
    for (int i = 0; i < 3; i++) {
        nt[i] = rd_kafka_NewTopic_new(names[i], parts[i], o->replication_factor, errstr,
                                      sizeof(errstr));
        if (!nt[i]) {
            fprintf(stderr, "producer: %s: %s\n", names[i], errstr);
            rc = EXIT_USAGE;
            goto done;
        }
        char ret[32];
        snprintf(ret, sizeof(ret), "%" PRId64, retention[i]);
        if (rd_kafka_NewTopic_set_config(nt[i], "retention.ms", ret)) {
            fprintf(stderr, "producer: %s: cannot set retention.ms\n", names[i]);
            goto done;
        }
    }
    q = rd_kafka_queue_new(rk);
    aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(aopts, (int)o->timeout_ms, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_operation_timeout(aopts, (int)o->timeout_ms, errstr, sizeof(errstr));
    /* The same topic named twice (e.g. KAFKA_RETRY_TOPIC = KAFKA_TOPIC) would fail the call. */
    size_t n = 3;
    if (!strcmp(names[2], names[1]) || !strcmp(names[2], names[0]))
        n--;
    if (!strcmp(names[1], names[0])) {
        rd_kafka_NewTopic_t *t = nt[1];
        nt[1] = nt[2];
        nt[2] = t;
        n = n == 3 ? 2 : 1;
    }
    rd_kafka_CreateTopics(rk, nt, n, aopts, q);
    ev = rd_kafka_queue_poll(q, (int)o->timeout_ms + 5000);
    if (!ev) {
        fprintf(stderr,
                "producer: could not create topics at KAFKA_BROKERS=%s: no answer in %" PRId64
                " ms\n",
                cfg->kafka_brokers, o->timeout_ms);
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "producer: could not create topics at KAFKA_BROKERS=%s: %s\n",
                cfg->kafka_brokers, rd_kafka_event_error_string(ev));
        goto done;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    rc = 0;
    for (size_t i = 0; i < cnt; i++) {
        const char *tname = rd_kafka_topic_result_name(res[i]);
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
        int p = 0;
        for (int j = 0; j < 3; j++)
            if (!strcmp(names[j], tname))
                p = parts[j];
        if (!err) {
            char rf[32];
            if (o->replication_factor < 0)
                snprintf(rf, sizeof(rf), "the broker's default");
            else
                snprintf(rf, sizeof(rf), "%d", o->replication_factor);
            printf("%s: created (%d partitions, replication factor %s)\n", tname, p, rf);
        } else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            printf("%s: exists\n", tname);
        } else {
            printf("%s: failed: %s\n", tname,
                   rd_kafka_topic_result_error_string(res[i])
                       ? rd_kafka_topic_result_error_string(res[i])
                       : rd_kafka_err2str(err));
            rc = EXIT_DELIVERY;
        }
    }
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (aopts)
        rd_kafka_AdminOptions_destroy(aopts);
    for (int i = 0; i < 3; i++)
        if (nt[i])
            rd_kafka_NewTopic_destroy(nt[i]);
    if (q)
        rd_kafka_queue_destroy(q);
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* DLQ reading: assign() every partition of the DLQ, from the group's committed offsets (redrive)
 * or from the beginning (dlq list), read_committed, until EOF on every partition. assign()
 * rather than subscribe(): no rebalance to wait for, and the end is known exactly. */

typedef struct dlq_reader {
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts;
    int nparts;
    bool *eof;
    int64_t *next; /* next offset to commit per partition; -1 = untouched */
} dlq_reader_t;

static void dlq_close(dlq_reader_t *r)
{
    if (r->rk) {
        rd_kafka_assign(r->rk, NULL);
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    if (r->parts)
        rd_kafka_topic_partition_list_destroy(r->parts);
    free(r->eof);
    free(r->next);
    memset(r, 0, sizeof(*r));
}

static int dlq_open(const fq_config_t *cfg, const char *group, bool from_committed,
                    int64_t timeout_ms, dlq_reader_t *r)
{
    char errstr[512];
    memset(r, 0, sizeof(*r));
    rd_kafka_conf_t *conf = kafka_conf(cfg);
    if (!conf)
        return EXIT_USAGE;
    if (conf_set(conf, cfg, true, "group.id", group) ||
        conf_set(conf, cfg, true, "enable.auto.commit", "false") ||
        conf_set(conf, cfg, true, "enable.auto.offset.store", "false") ||
        conf_set(conf, cfg, true, "isolation.level", "read_committed") ||
        conf_set(conf, cfg, true, "enable.partition.eof", "true") ||
        conf_set(conf, cfg, true, "auto.offset.reset", "earliest")) {
        rd_kafka_conf_destroy(conf);
        return EXIT_USAGE;
    }
    r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!r->rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "producer: kafka: %s\n", errstr);
        return EXIT_USAGE;
    }
    rd_kafka_poll_set_consumer(r->rk);

    rd_kafka_topic_t *rkt = rd_kafka_topic_new(r->rk, cfg->kafka_dlq_topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(r->rk, 0, rkt, &md, (int)timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "producer: could not read %s at KAFKA_BROKERS=%s: %s\n",
                cfg->kafka_dlq_topic, cfg->kafka_brokers,
                rd_kafka_err2str(err             ? err
                                 : md->topic_cnt ? md->topics[0].err
                                                 : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        if (md)
            rd_kafka_metadata_destroy(md);
        dlq_close(r);
        return EXIT_DELIVERY;
    }
    r->nparts = md->topics[0].partition_cnt;
    r->parts = rd_kafka_topic_partition_list_new(r->nparts);
    for (int i = 0; i < r->nparts; i++)
        rd_kafka_topic_partition_list_add(r->parts, cfg->kafka_dlq_topic,
                                          md->topics[0].partitions[i].id);
    rd_kafka_metadata_destroy(md);
    r->eof = calloc((size_t)r->nparts + 1, sizeof(*r->eof));
    r->next = calloc((size_t)r->nparts + 1, sizeof(*r->next));
    if (!r->eof || !r->next) {
        dlq_close(r);
        return EXIT_DELIVERY;
    }
    for (int i = 0; i < r->nparts; i++) {
        r->next[i] = -1;
        r->parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    if (from_committed) {
        err = rd_kafka_committed(r->rk, r->parts, (int)timeout_ms);
        if (err) {
            fprintf(stderr, "producer: could not read the offsets of group %s: %s\n", group,
                    rd_kafka_err2str(err));
            dlq_close(r);
            return EXIT_DELIVERY;
        }
        for (int i = 0; i < r->nparts; i++)
            if (r->parts->elems[i].offset < 0)
                r->parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    err = rd_kafka_assign(r->rk, r->parts);
    if (err) {
        fprintf(stderr, "producer: assign %s: %s\n", cfg->kafka_dlq_topic, rd_kafka_err2str(err));
        dlq_close(r);
        return EXIT_DELIVERY;
    }
    return 0;
}

static int part_index(const dlq_reader_t *r, int32_t partition)
{
    for (int i = 0; i < r->nparts; i++)
        if (r->parts->elems[i].partition == partition)
            return i;
    return -1;
}

static bool all_eof(const dlq_reader_t *r)
{
    for (int i = 0; i < r->nparts; i++)
        if (!r->eof[i])
            return false;
    return true;
}

/* Next DLQ message, or NULL at the end of every partition (*failed set on error/timeout). */
static rd_kafka_message_t *dlq_next(dlq_reader_t *r, int64_t timeout_ms, bool *failed)
{
    int64_t deadline = fq_time_mono_ms() + timeout_ms;
    *failed = false;
    while (!all_eof(r) && !stop_requested) {
        if (fq_time_mono_ms() > deadline) {
            fprintf(stderr, "producer: no progress reading the DLQ for %" PRId64 " ms\n",
                    timeout_ms);
            *failed = true;
            return NULL;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 200);
        if (!m)
            continue;
        int i = part_index(r, m->partition);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (i >= 0)
                r->eof[i] = true;
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            fprintf(stderr, "producer: reading the DLQ: %s\n", rd_kafka_message_errstr(m));
            bool fatal = m->err != RD_KAFKA_RESP_ERR__TRANSPORT &&
                         m->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
            rd_kafka_message_destroy(m);
            if (fatal) {
                *failed = true;
                return NULL;
            }
            continue;
        }
        if (i >= 0)
            r->eof[i] = false;
        return m;
    }
    if (stop_requested)
        *failed = true;
    return NULL;
}

static void table_header(void)
{
    printf("%-40s %-11s %-9s %-10s %4s %-24s %s\n", "KEY", "REASON", "STAGE", "CLASS", "ATT",
           "FAILED-AT", "ERROR");
}

static void table_row(const fq_dlq_entry_t *e)
{
    char err[61];
    /* one line per entry: newlines in the error would break the table */
    snprintf(err, sizeof(err), "%.60s", e->error);
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    char att[24];
    if (e->attempt >= 0)
        snprintf(att, sizeof(att), "%" PRId64, e->attempt);
    else
        snprintf(att, sizeof(att), "-");
    printf("%-40.40s %-11.11s %-9.9s %-10.10s %4s %-24.24s %s%s\n", e->key[0] ? e->key : "-",
           e->reason[0] ? e->reason : "-", e->stage[0] ? e->stage : "-",
           e->klass[0] ? e->klass : "-", att, e->failed_at[0] ? e->failed_at : "-", err,
           strlen(e->error) > 60 ? "..." : "");
}

/* Small fixed tables of counts by name ("by reason", "by stage"). */
typedef struct tally {
    char name[32];
    uint64_t n;
} tally_t;

static void tally_add(tally_t *t, size_t cap, const char *name)
{
    const char *n = name[0] ? name : "-";
    for (size_t i = 0; i < cap; i++) {
        if (!t[i].name[0]) {
            snprintf(t[i].name, sizeof(t[i].name), "%s", n);
            t[i].n = 1;
            return;
        }
        if (!strcmp(t[i].name, n)) {
            t[i].n++;
            return;
        }
    }
    t[cap - 1].n++; /* overflow lands in the last slot */
}

static int cmd_dlq_list(const fq_config_t *cfg, const opts_t *o)
{
    char group[128];
    snprintf(group, sizeof(group), "%s.dlq-list.%d", cfg->kafka_group_id, (int)getpid());
    dlq_reader_t r;
    int rc = dlq_open(cfg, group, false, o->timeout_ms, &r);
    if (rc)
        return rc;
    tally_t by_reason[16], by_stage[16];
    memset(by_reason, 0, sizeof(by_reason));
    memset(by_stage, 0, sizeof(by_stage));
    uint64_t total = 0;
    bool failed = false;
    table_header();
    rd_kafka_message_t *m;
    while ((m = dlq_next(&r, o->timeout_ms, &failed))) {
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_message_headers(m, &hdrs);
        fq_dlq_entry_t e;
        fq_dlq_entry_from(&e, m->key, m->key_len, hdrs);
        if (fq_dlq_filter_match(&o->filter, &e)) {
            table_row(&e);
            tally_add(by_reason, 16, e.reason);
            tally_add(by_stage, 16, e.stage);
            total++;
        }
        rd_kafka_message_destroy(m);
    }
    printf("\n%" PRIu64 " dead messages in %s\n", total, cfg->kafka_dlq_topic);
    printf("by reason:");
    for (size_t i = 0; i < 16 && by_reason[i].name[0]; i++)
        printf(" %s=%" PRIu64, by_reason[i].name, by_reason[i].n);
    printf("\nby stage:");
    for (size_t i = 0; i < 16 && by_stage[i].name[0]; i++)
        printf(" %s=%" PRIu64, by_stage[i].name, by_stage[i].n);
    printf("\n");
    dlq_close(&r);
    return failed ? EXIT_DELIVERY : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* redrive */

typedef struct redrive_stats {
    uint64_t read, redriven, not_matching, loop_guard, malformed, db_errors;
} redrive_stats_t;

/* Commits the open transaction with the offsets reached so far. 0 or -1 (aborted). */
static int txn_commit(rd_kafka_t *producer, dlq_reader_t *r, int64_t timeout_ms)
{
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(r->nparts);
    for (int i = 0; i < r->nparts; i++)
        if (r->next[i] >= 0)
            rd_kafka_topic_partition_list_add(offsets, r->parts->elems[i].topic,
                                              r->parts->elems[i].partition)
                ->offset = r->next[i];
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(r->rk);
    rd_kafka_error_t *error = NULL;
    if (offsets->cnt)
        error = rd_kafka_send_offsets_to_transaction(producer, offsets, cgmd, (int)timeout_ms);
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    rd_kafka_topic_partition_list_destroy(offsets);
    if (!error)
        error = rd_kafka_commit_transaction(producer, (int)timeout_ms);
    if (!error)
        return 0;
    fprintf(stderr, "producer: transaction failed, nothing of it is visible: %s\n",
            rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    error = rd_kafka_abort_transaction(producer, (int)timeout_ms);
    if (error) {
        fprintf(stderr, "producer: abort failed: %s\n", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    return -1;
}

/* Builds and produces the redrive message for one DLQ message. 0, or -1. */
static int redrive_one(rd_kafka_t *producer, const fq_config_t *cfg, const opts_t *o,
                       const rd_kafka_message_t *m, const fq_item_t *item, const fq_dlq_entry_t *e)
{
    bool to_retry = !strcmp(o->to, "retry");
    rd_kafka_headers_t *hdrs = NULL;
    const rd_kafka_headers_t *src = NULL;
    char *value = NULL;
    size_t len = 0;
    char batch_id[37];
    const void *key = m->key;
    size_t key_len = m->key_len;

    if (to_retry) {
        /* The DLQ value is the item as received: the retry topic takes it unchanged, with the
         * history headers carried over and a fresh attempt counter. */
        if (rd_kafka_message_headers(m, (rd_kafka_headers_t **)&src) == 0 && src)
            hdrs = rd_kafka_headers_copy(src);
        else
            hdrs = rd_kafka_headers_new(8);
        fq_headers_set(hdrs, FQ_HDR_DLQ_REASON, NULL);
        fq_headers_set_int(hdrs, FQ_HDR_ATTEMPT, 0);
        fq_headers_set_int(hdrs, FQ_HDR_NOT_BEFORE, fq_time_now_ms());
        value = malloc(m->len ? m->len : 1);
        if (!value)
            goto fail;
        if (m->len)
            memcpy(value, m->payload, m->len);
        len = m->len;
    } else {
        hdrs = rd_kafka_headers_new(2);
        fq_uuid4(batch_id);
        key = batch_id;
        key_len = 36;
        if (item) {
            char at[40];
            fq_time_rfc3339(fq_time_now_ms(), at, sizeof(at));
            value = fq_batch_encode(batch_id, at, item, 1, &len);
        } else {
            /* --include-malformed: the raw bytes as they were */
            value = malloc(m->len ? m->len : 1);
            if (value && m->len)
                memcpy(value, m->payload, m->len);
            len = m->len;
        }
        if (!value)
            goto fail;
    }
    fq_headers_set_int(hdrs, FQ_HDR_REDRIVE_COUNT, e->redrive_count + 1);
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC(to_retry ? cfg->kafka_retry_topic : cfg->kafka_topic),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(value, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (!err)
            return 0; /* value and hdrs now owned by librdkafka */
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            char fatal[256] = "";
            if (err == RD_KAFKA_RESP_ERR__FATAL)
                rd_kafka_fatal_error(producer, fatal, sizeof(fatal));
            /* Fenced: a newer redrive of the same group took over; its offsets exclude our
             * open transaction, which the broker aborts, so nothing is lost or doubled. */
            fprintf(stderr, "producer: redrive %s: %s%s%s\n", e->key, rd_kafka_err2str(err),
                    fatal[0] ? ": " : "", fatal);
            goto fail;
        }
        rd_kafka_poll(producer, 50);
    }
fail:
    free(value);
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    return -1;
}

/* The database URL is used only when set explicitly (env, file or flag), not by default. */
static bool db_configured(const fq_config_t *cfg)
{
    const char *env = getenv("DATABASE_URL");
    return (env && *env) || strcmp(cfg->database_url, "postgresql:///frameq") != 0;
}

static int cmd_redrive(const fq_config_t *cfg, const opts_t *o)
{
    int rc = EXIT_DELIVERY;
    char group[256], errstr[512];
    rd_kafka_t *producer = NULL;
    fq_store_t *store = NULL;
    bool in_txn = false;
    redrive_stats_t rs = {0};
    dlq_reader_t r = {0};
    /* platform/code of the items of the open transaction, set 'queued' after it commits */
    size_t pending_cap = 128, pending_n = 0;
    fq_item_t *pending = calloc(pending_cap, sizeof(*pending));
    if (!pending)
        return EXIT_DELIVERY;

    if (o->group)
        snprintf(group, sizeof(group), "%s", o->group);
    else
        snprintf(group, sizeof(group), "%s.redrive", cfg->kafka_group_id);

    /* The producer's transactions are initialised BEFORE the group's offsets are read:
     * init_transactions fences (and aborts) an older redrive of the same group, so the
     * offsets read afterwards include everything that one committed. */
    if (!o->dry_run) {
        rd_kafka_conf_t *conf = kafka_conf(cfg);
        if (!conf)
            goto done;
        char txid[300], tmo[32];
        /* One transactional id per group: a second redrive of the same group fences the
         * first instead of both redriving the same messages. */
        snprintf(txid, sizeof(txid), "frameq-redrive-%s", group);
        snprintf(tmo, sizeof(tmo), "%" PRId64, o->timeout_ms);
        if (conf_set(conf, cfg, true, "transactional.id", txid) ||
            conf_set(conf, cfg, true, "enable.idempotence", "true") ||
            conf_set(conf, cfg, true, "acks", "all") ||
            conf_set(conf, cfg, false, "message.timeout.ms", tmo)) {
            rd_kafka_conf_destroy(conf);
            goto done;
        }
        producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!producer) {
            rd_kafka_conf_destroy(conf);
            fprintf(stderr, "producer: kafka: %s\n", errstr);
            goto done;
        }
        rd_kafka_error_t *error = rd_kafka_init_transactions(producer, (int)o->timeout_ms);
        if (error) {
            fprintf(stderr, "producer: could not init transactions at KAFKA_BROKERS=%s: %s\n",
                    cfg->kafka_brokers, rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            goto done;
        }
        if (!o->no_db && db_configured(cfg))
            store = fq_store_new(cfg->database_url);
        FQ_INFO(NULL, "redrive: %s -> %s, group %s, database %s (librdkafka %s)",
                cfg->kafka_dlq_topic,
                !strcmp(o->to, "retry") ? cfg->kafka_retry_topic : cfg->kafka_topic, group,
                store ? "on" : "off", rd_kafka_version_str());
    }
    int orc = dlq_open(cfg, group, true, o->timeout_ms, &r);
    if (orc) {
        rc = orc;
        goto done;
    }
    if (o->dry_run)
        table_header();

    int64_t t0 = fq_time_mono_ms(), txn_started = 0;
    bool failed = false;
    rd_kafka_message_t *m = NULL;
    while ((o->limit < 0 || (int64_t)rs.redriven < o->limit) &&
           (m = dlq_next(&r, o->timeout_ms, &failed))) {
        rs.read++;
        int pi = part_index(&r, m->partition);
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_message_headers(m, &hdrs);
        fq_dlq_entry_t e;
        fq_dlq_entry_from(&e, m->key, m->key_len, hdrs);
        fq_item_t item;
        bool decoded = false;
        fq_error_t *derr = fq_item_decode(m->payload, m->len, &item);
        if (!derr)
            decoded = true;
        fq_error_destroy(derr);
        if (decoded && !e.platform[0])
            snprintf(e.platform, sizeof(e.platform), "%s", item.platform);
        if (decoded && !e.key[0])
            fq_item_key(&item, e.key, sizeof(e.key));

        bool take = false;
        switch (fq_redrive_decide(&o->filter, &e, decoded, o->max_redrives, o->include_malformed)) {
        case FQ_REDRIVE_NOT_MATCHING:
            rs.not_matching++;
            break;
        case FQ_REDRIVE_LOOP_GUARD:
            rs.loop_guard++;
            fprintf(stderr,
                    "producer: skipped %s (partition %" PRId32 ", offset %" PRId64
                    "): redriven %" PRId64 " times already (--max-redrives %" PRId64 ")\n",
                    e.key[0] ? e.key : "-", m->partition, m->offset, e.redrive_count,
                    o->max_redrives);
            break;
        case FQ_REDRIVE_MALFORMED:
            rs.malformed++;
            fprintf(stderr,
                    "producer: skipped malformed entry (partition %" PRId32 ", offset %" PRId64
                    ", %zu bytes; --include-malformed redrives it as is)\n",
                    m->partition, m->offset, m->len);
            break;
        case FQ_REDRIVE_TAKE:
            take = true;
            break;
        }

        if (take && o->dry_run) {
            table_row(&e);
            rs.redriven++;
        } else if (take) {
            if (!in_txn) {
                rd_kafka_error_t *error = rd_kafka_begin_transaction(producer);
                if (error) {
                    fprintf(stderr, "producer: begin transaction: %s\n",
                            rd_kafka_error_string(error));
                    rd_kafka_error_destroy(error);
                    if (decoded)
                        fq_item_clear(&item);
                    rd_kafka_message_destroy(m);
                    goto done;
                }
                in_txn = true;
                txn_started = fq_time_mono_ms();
            }
            if (o->rate > 0) {
                int64_t due = t0 + (int64_t)((double)rs.redriven * 1000.0 / o->rate);
                while (fq_time_mono_ms() < due && !stop_requested) {
                    rd_kafka_poll(producer, 10);
                }
            }
            if (redrive_one(producer, cfg, o, m, decoded ? &item : NULL, &e) != 0) {
                if (decoded)
                    fq_item_clear(&item);
                rd_kafka_message_destroy(m);
                goto done;
            }
            rs.redriven++;
            if (decoded && store) {
                if (pending_n == pending_cap) {
                    fq_item_t *p = realloc(pending, 2 * pending_cap * sizeof(*p));
                    if (p) {
                        pending = p;
                        pending_cap *= 2;
                    }
                }
                if (pending_n < pending_cap && fq_item_copy(&pending[pending_n], &item) == 0)
                    pending_n++;
            }
        }
        if (pi >= 0)
            r.next[pi] = m->offset + 1;
        if (decoded)
            fq_item_clear(&item);
        rd_kafka_message_destroy(m);
        m = NULL;

        /* Short transactions: a crash loses at most one chunk of work, never duplicates. */
        if (!o->dry_run && in_txn &&
            (fq_time_mono_ms() - txn_started > 1000 || pending_n >= 500 ||
             (rs.redriven % 500) == 0)) {
            if (txn_commit(producer, &r, o->timeout_ms) != 0)
                goto done;
            in_txn = false;
            for (size_t i = 0; i < pending_n; i++) {
                fq_error_t *err =
                    fq_store_set_status(store, pending[i].platform, pending[i].code, "queued");
                if (err) {
                    rs.db_errors++;
                    FQ_WARN(NULL, "redrive: could not set %s:%s queued: %s", pending[i].platform,
                            pending[i].code, fq_error_message(err));
                    fq_error_destroy(err);
                }
                fq_item_clear(&pending[i]);
            }
            pending_n = 0;
        }
    }
    if (failed && !stop_requested)
        goto done;

    if (!o->dry_run) {
        /* Also commits the position over skipped messages when nothing was redriven. */
        bool any = false;
        for (int i = 0; i < r.nparts; i++)
            any |= r.next[i] >= 0;
        if (!in_txn && any) {
            rd_kafka_error_t *error = rd_kafka_begin_transaction(producer);
            if (error) {
                fprintf(stderr, "producer: begin transaction: %s\n", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
                goto done;
            }
            in_txn = true;
        }
        if (in_txn) {
            if (txn_commit(producer, &r, o->timeout_ms) != 0)
                goto done;
            in_txn = false;
        }
        for (size_t i = 0; i < pending_n; i++) {
            fq_error_t *err =
                fq_store_set_status(store, pending[i].platform, pending[i].code, "queued");
            if (err) {
                rs.db_errors++;
                FQ_WARN(NULL, "redrive: could not set %s:%s queued: %s", pending[i].platform,
                        pending[i].code, fq_error_message(err));
                fq_error_destroy(err);
            }
        }
    }
    rc = stop_requested ? EXIT_DELIVERY : 0;
    printf("%" PRIu64 " redriven%s to %s (%" PRIu64 " read; skipped: %" PRIu64
           " not matching, %" PRIu64 " loop guard, %" PRIu64 " malformed)\n",
           rs.redriven, o->dry_run ? " (dry run: nothing sent or committed)" : "",
           !strcmp(o->to, "retry") ? cfg->kafka_retry_topic : cfg->kafka_topic, rs.read,
           rs.not_matching, rs.loop_guard, rs.malformed);
    if (rs.db_errors)
        fprintf(stderr, "producer: %" PRIu64 " items could not be set 'queued' in the database\n",
                rs.db_errors);

done:
    if (producer && in_txn) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(producer, (int)o->timeout_ms);
        if (error)
            rd_kafka_error_destroy(error);
    }
    for (size_t i = 0; i < pending_cap && pending; i++)
        fq_item_clear(&pending[i]);
    free(pending);
    fq_store_destroy(store);
    if (producer) {
        rd_kafka_flush(producer, (int)o->timeout_ms);
        rd_kafka_destroy(producer);
    }
    dlq_close(&r);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = EXIT_USAGE;
    char errstr[512];
    opts_t o;
    fq_config_t *cfg = fq_config_new();
    if (!cfg) {
        fprintf(stderr, "producer: out of memory\n");
        return EXIT_USAGE;
    }
    if (fq_config_load(cfg, &argc, argv, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "producer: %s\n", errstr);
        goto done;
    }
    int prc = parse_args(argc, argv, cfg, &o);
    if (prc != 0) {
        rc = prc > 0 ? 0 : EXIT_USAGE;
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
    case CMD_ENQUEUE:
        rc = cmd_enqueue(cfg, &o);
        break;
    case CMD_REDRIVE:
        rc = cmd_redrive(cfg, &o);
        break;
    case CMD_DLQ_LIST:
        rc = cmd_dlq_list(cfg, &o);
        break;
    case CMD_TOPICS_CREATE:
        rc = cmd_topics_create(cfg, &o);
        break;
    }
done:
    fq_config_destroy(cfg);
    return rc;
}
