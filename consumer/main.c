/* consumer: the frameq worker program (DESIGN §6). */
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <librdkafka/rdkafka.h>

#include "fq_args.h"
#include "fq_buf.h"
#include "fq_config.h"
#include "fq_item.h"
#include "fq_log.h"
#include "fq_metrics.h"
#include "fq_migrations.h"
#include "fq_pipeline.h"
#include "fq_pool.h"
#include "fq_store.h"
#include "fq_worker.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* What the command line asks for, beyond the settings (fq_config_load took those). */
typedef struct cli {
    fq_role_t role;
    bool once, migrate, no_db, print_config, help, version;
    const char *process, *process_file;
} cli_t;

static int parse_role(const char *value, void *field, char *why, size_t why_size)
{
    if (fq_role_parse(value, field) == 0)
        return 0;
    snprintf(why, why_size, "'%s' is not main, retry or all", value);
    return -1;
}

#define CLI(f) offsetof(cli_t, f)
static const fq_arg_t options[] = {
    {.name = "role",
     .kind = FQ_ARG_CHECKED,
     .offset = CLI(role),
     .parse = parse_role,
     .value = "main|retry|all",
     .help = "topics to consume (default all)"},
    {.name = "once",
     .kind = FQ_ARG_SWITCH,
     .offset = CLI(once),
     .help = "drain: exit when no due work is left; exit 1 if anything\nwent to the DLQ during "
             "the run"},
    {.name = "migrate",
     .kind = FQ_ARG_SWITCH,
     .offset = CLI(migrate),
     .help = "apply the database schema and exit"},
    {.name = "process",
     .kind = FQ_ARG_STRING,
     .offset = CLI(process),
     .value = "ITEM_JSON",
     .help = "run one item through the pipeline (attempt 1) without\nKafka, print the outcome "
             "as JSON; exit 0 done, 1 failed,\n2 bad item"},
    {.name = "process-file",
     .kind = FQ_ARG_STRING,
     .offset = CLI(process_file),
     .value = "FILE",
     .help = "run every item of FILE (one item JSON per line, '-' for\nstdin) on "
             "WORKER_CONCURRENCY threads without Kafka; prints\na JSON summary (for "
             "benchmarks); exit 0 all done, 1 not"},
    {.name = "no-db",
     .kind = FQ_ARG_SWITCH,
     .offset = CLI(no_db),
     .help = "with --process/--process-file: no database"},
    {.name = "print-config",
     .kind = FQ_ARG_SWITCH,
     .offset = CLI(print_config),
     .help = "print the effective configuration and exit"},
    {.name = "version",
     .kind = FQ_ARG_SWITCH,
     .offset = CLI(version),
     .help = "print versions and exit"},
    {.name = "help",
     .letter = 'h',
     .kind = FQ_ARG_SWITCH,
     .offset = CLI(help),
     .help = "this text"},
    {.name = "config", .kind = FQ_ARG_LISTED, .value = "FILE", .help = "KEY=VALUE settings file"},
    {.name = "-X", .kind = FQ_ARG_LISTED, .value = "prop=val", .help = "any librdkafka property"},
};
#undef CLI
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static void print_usage(FILE *out)
{
    fprintf(out, "usage: consumer [OPTIONS]\n"
                 "\n"
                 "Consumes frameq batches from KAFKA_TOPIC and items from KAFKA_RETRY_TOPIC, "
                 "extracts\n"
                 "frames, records results in PostgreSQL, routes failures to the retry topic or "
                 "DLQ.\n"
                 "\n"
                 "Program options:\n");
    fq_args_print(out, options, N_OPTIONS, NULL);
    fprintf(out,
            "\n"
            "Exit codes: %d ok, %d something went to the DLQ (--once) or failed, %d usage or\n"
            "configuration error, %d fatal Kafka error (restart the process).\n"
            "\n"
            "Settings (environment variable, flag, default):\n",
            FQ_EXIT_OK, FQ_EXIT_DLQ, FQ_EXIT_USAGE, FQ_EXIT_FATAL);
    fq_config_print_help(out);
}

static void print_version(FILE *out)
{
    unsigned avf = avformat_version(), avc = avcodec_version();
    fprintf(out,
            "consumer (frameq) %s\n"
            "librdkafka %s\nlibpq %s\nlibavformat %u.%u.%u\nlibavcodec %u.%u.%u\n",
            FQ_VERSION, rd_kafka_version_str(), fq_store_libpq_version(), avf >> 16,
            (avf >> 8) & 0xff, avf & 0xff, avc >> 16, (avc >> 8) & 0xff, avc & 0xff);
}

static int run_migrate(const fq_config_t *cfg)
{
    fq_store_t *store = fq_store_new(cfg->database_url);
    int applied = 0, rc = FQ_EXIT_FAILED;
    if (!store) {
        fprintf(stderr, "consumer: --migrate: cannot create a store\n");
        return FQ_EXIT_FAILED;
    }
    fq_error_t *err = fq_store_migrate(store, &applied);
    if (err) {
        fprintf(stderr, "consumer: --migrate: %s\n", fq_error_message(err));
        fq_error_destroy(err);
        goto done;
    }
    int version = fq_migrations_count ? fq_migrations[fq_migrations_count - 1].version : 0;
    printf("schema at version %d (applied %d)\n", version, applied);
    rc = FQ_EXIT_OK;
done:
    fq_store_destroy(store);
    return rc;
}

static int run_process(const fq_config_t *cfg, const char *json, bool with_db)
{
    fq_item_t item = {0};
    char errstr[512];
    fq_pipeline_t *pl = NULL;
    fq_outcome_t out = {0};
    int rc = FQ_EXIT_USAGE; /* a bad item */
    fq_error_t *err = fq_item_decode(json, strlen(json), &item);
    if (err) {
        fprintf(stderr, "consumer: --process: %s\n", fq_error_message(err));
        fq_error_destroy(err);
        goto done;
    }
    pl = fq_pipeline_new(cfg, with_db, errstr, sizeof(errstr));
    if (!pl) {
        fprintf(stderr, "consumer: %s\n", errstr);
        goto done;
    }
    static const atomic_int no_cancel = 0;
    err = fq_pipeline_process(pl, &item, 1, &no_cancel, &out);
    char *js = fq_outcome_to_json(&item, &out, err);
    if (js)
        printf("%s\n", js);
    free(js);
    rc = err ? FQ_EXIT_FAILED : FQ_EXIT_OK;
    fq_error_destroy(err);
done:
    fq_pipeline_destroy(pl);
    fq_item_clear(&item);
    return rc;
}

/* Benchmark mode: the pipeline alone, on the same pool the worker uses. */
/* Waits until every job finished; progress on a terminal. */
static void wait_for_jobs(fq_pool_t *pool, const fq_pool_job_t *jobs, size_t n)
{
    bool tty = isatty(STDERR_FILENO);
    while (fq_pool_pending(pool) > 0) {
        if (!fq_pool_wait(pool, 1000) || !tty)
            continue;
        size_t finished = 0;
        for (size_t i = 0; i < n; i++)
            finished += atomic_load(&jobs[i].finished);
        fprintf(stderr, "\rconsumer: %zu/%zu item(s) finished", finished, n);
    }
    if (tty)
        fputc('\n', stderr);
}

static int run_process_file(const fq_config_t *cfg, const char *path, bool with_db)
{
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    fq_item_t *items = NULL;
    fq_pool_job_t *jobs = NULL;
    size_t n = 0, cap = 0, done = 0, failed = 0;
    char *line = NULL;
    size_t line_cap = 0;
    fq_pool_t *pool = NULL;
    char errstr[512];
    int rc = FQ_EXIT_USAGE; /* unreadable file or a bad item */
    if (!in) {
        fprintf(stderr, "consumer: --process-file %s: %s\n", path, strerror(errno));
        return FQ_EXIT_USAGE;
    }
    ssize_t len;
    while ((len = getline(&line, &line_cap, in)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        fq_item_t *grown = fq_grow(items, &cap, n, sizeof(*items), 256);
        if (!grown)
            goto done;
        items = grown;
        memset(&items[n], 0, sizeof(items[n]));
        fq_error_t *err = fq_item_decode(line, (size_t)len, &items[n]);
        if (err) {
            fprintf(stderr, "consumer: %s: item %zu: %s\n", path, n + 1, fq_error_message(err));
            fq_error_destroy(err);
            fq_item_clear(&items[n]);
            goto done;
        }
        n++;
    }
    jobs = calloc(n ? n : 1, sizeof(*jobs));
    if (!jobs)
        goto done;
    for (size_t i = 0; i < n; i++) {
        jobs[i].item = &items[i];
        jobs[i].attempt = 1;
    }
    pool = fq_pool_new(cfg, cfg->worker_concurrency, with_db, errstr, sizeof(errstr));
    if (!pool) {
        fprintf(stderr, "consumer: %s\n", errstr);
        goto done;
    }
    int64_t t0 = fq_time_mono_ms();
    static const atomic_int no_cancel = 0;
    fq_pool_submit(pool, jobs, n, &no_cancel);
    wait_for_jobs(pool, jobs, n);
    double secs = (double)(fq_time_mono_ms() - t0) / 1000.0;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].err)
            failed++;
        else
            done++;
    }
    printf("{\"items\":%zu,\"done\":%zu,\"failed\":%zu,\"seconds\":%.3f,\"items_per_s\":%.2f,"
           "\"concurrency\":%d}\n",
           n, done, failed, secs, secs > 0 ? (double)n / secs : 0.0, cfg->worker_concurrency);
    rc = failed ? FQ_EXIT_FAILED : FQ_EXIT_OK;
done:
    fq_pool_destroy(pool);
    for (size_t i = 0; jobs && i < n; i++)
        fq_error_destroy(jobs[i].err);
    free(jobs);
    for (size_t i = 0; i < n; i++)
        fq_item_clear(&items[i]);
    free(items);
    free(line);
    if (in != stdin)
        fclose(in);
    return rc;
}

/* Reads the options left after the settings. -1 = go on; else the exit code. */
static int parse_options(int argc, char **argv, cli_t *cli)
{
    int first;
    if (fq_args_parse("consumer", options, N_OPTIONS, argc, argv, cli, &first) != 0)
        return FQ_EXIT_USAGE;
    if (first < argc) {
        fprintf(stderr, "consumer: %s: unexpected argument (see --help)\n", argv[first]);
        return FQ_EXIT_USAGE;
    }
    /* --help and --version were answered before the settings; here when abbreviated */
    if (cli->help)
        print_usage(stdout);
    else if (cli->version)
        print_version(stdout);
    return cli->help || cli->version ? FQ_EXIT_OK : -1;
}

/* The one-shot modes (--migrate, --process, --process-file); -1 when none is asked for. */
static int run_one_shot(const fq_config_t *cfg, const cli_t *cli)
{
    if (!cli->migrate && !cli->process && !cli->process_file)
        return -1;
    /* A signal stops them the ordinary way. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    if (g_stop)
        return FQ_EXIT_OK; /* asked to stop before any work began */
    if (cli->migrate)
        return run_migrate(cfg);
    if (cli->process)
        return run_process(cfg, cli->process, !cli->no_db);
    return run_process_file(cfg, cli->process_file, !cli->no_db);
}

/* The long-running worker: metrics endpoint, worker, loop. */
static int run_worker(const fq_config_t *cfg, const cli_t *cli)
{
    char errstr[1024];
    fq_worker_t *worker = NULL;
    int rc = FQ_EXIT_USAGE;
    fq_metrics_t *metrics = fq_metrics_new();
    if (!metrics) {
        fprintf(stderr, "consumer: out of memory\n");
        return FQ_EXIT_FAILED;
    }
    fq_worker_declare_metrics(metrics);
    if (fq_metrics_serve(metrics, cfg->metrics_addr, errstr, sizeof(errstr)) != 0) {
        FQ_ERROR(NULL, "METRICS_ADDR: %s", errstr);
        goto done;
    }
    fq_worker_opts_t opts = {
        .role = cli->role, .once = cli->once, .stop = &g_stop, .metrics = metrics};
    worker = fq_worker_new(cfg, &opts, errstr, sizeof(errstr));
    if (!worker) {
        FQ_ERROR(NULL, "%s", errstr);
        goto done;
    }
    unsigned avf = avformat_version(), avc = avcodec_version();
    fq_role_t role = cli->role;
    FQ_INFO(NULL,
            "started: frameq %s, librdkafka %s, libpq %s, libavformat %u.%u.%u, libavcodec "
            "%u.%u.%u; role %s, topics %s%s%s, dlq %s, group %s, concurrency %d%s",
            FQ_VERSION, rd_kafka_version_str(), fq_store_libpq_version(), avf >> 16,
            (avf >> 8) & 0xff, avf & 0xff, avc >> 16, (avc >> 8) & 0xff, avc & 0xff,
            fq_role_name(role), role == FQ_ROLE_RETRY ? "" : cfg->kafka_topic,
            role == FQ_ROLE_ALL ? "," : "", role == FQ_ROLE_MAIN ? "" : cfg->kafka_retry_topic,
            cfg->kafka_dlq_topic, cfg->kafka_group_id, cfg->worker_concurrency,
            cli->once ? ", once" : "");
    rc = fq_worker_run(worker);
    FQ_INFO(NULL, "exiting with %d", rc);
done:
    fq_worker_destroy(worker);
    fq_metrics_destroy(metrics);
    return rc;
}

int main(int argc, char **argv)
{
    char errstr[1024];

    /* First of all: a SIGTERM that comes while the process starts (a pod stopped right after
     * it was scheduled) is a request to stop cleanly, not a kill by the default action. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* --help and --version work whatever the environment holds. */
    const char *early = fq_args_early(argc, argv);
    if (early) {
        if (strcmp(early, "help") == 0)
            print_usage(stdout);
        else
            print_version(stdout);
        return FQ_EXIT_OK;
    }

    fq_config_t *cfg = fq_config_new();
    if (!cfg) {
        fprintf(stderr, "consumer: out of memory\n");
        return FQ_EXIT_USAGE;
    }
    int rc = FQ_EXIT_USAGE;
    cli_t cli = {.role = FQ_ROLE_ALL};
    if (fq_config_load(cfg, &argc, argv, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "consumer: %s\n", errstr);
        goto done;
    }
    if ((rc = parse_options(argc, argv, &cli)) >= 0)
        goto done;
    rc = FQ_EXIT_USAGE;
    if (fq_log_init("consumer", cfg->worker_id, cfg->log_format, cfg->log_level) != 0) {
        fprintf(stderr, "consumer: LOG_FORMAT/LOG_LEVEL: unknown value\n");
        goto done;
    }
    if (cli.print_config) {
        fq_config_print(cfg, stdout);
        rc = FQ_EXIT_OK;
        goto done;
    }
    if ((rc = run_one_shot(cfg, &cli)) < 0)
        rc = run_worker(cfg, &cli);
done:
    fq_config_destroy(cfg);
    return rc;
}
