/* consumer: the frameq worker program (DESIGN §6). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <librdkafka/rdkafka.h>

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

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: consumer [OPTIONS]\n"
            "\n"
            "Consumes frameq batches from KAFKA_TOPIC and items from KAFKA_RETRY_TOPIC, extracts\n"
            "frames, records results in PostgreSQL, routes failures to the retry topic or DLQ.\n"
            "\n"
            "Program options:\n"
            "  --role main|retry|all   topics to consume (default all)\n"
            "  --once                  drain: exit when no due work is left; exit 1 if anything\n"
            "                          went to the DLQ during the run\n"
            "  --migrate               apply the database schema and exit\n"
            "  --process ITEM_JSON     run one item through the pipeline (attempt 1) without\n"
            "                          Kafka, print the outcome as JSON; exit 0 done, 1 failed,\n"
            "                          2 bad item\n"
            "  --process-file FILE     run every item of FILE (one item JSON per line, '-' for\n"
            "                          stdin) on WORKER_CONCURRENCY threads without Kafka; prints\n"
            "                          a JSON summary (for benchmarks); exit 0 all done, 1 not\n"
            "  --no-db                 with --process/--process-file: no database\n"
            "  --print-config          print the effective configuration and exit\n"
            "  --version               print versions and exit\n"
            "  --help                  this text\n"
            "  --config FILE           KEY=VALUE settings file\n"
            "  -X prop=val             any librdkafka property\n"
            "\n"
            "Exit codes: 0 ok, 1 something went to the DLQ (--once) or failed, 2 usage or\n"
            "configuration error, 3 fatal Kafka error (restart the process).\n"
            "\n"
            "Settings (environment variable, flag, default):\n");
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
    int applied = 0, rc = 1;
    if (!store) {
        fprintf(stderr, "consumer: --migrate: cannot create a store\n");
        return 1;
    }
    fq_error_t *err = fq_store_migrate(store, &applied);
    if (err) {
        fprintf(stderr, "consumer: --migrate: %s\n", fq_error_message(err));
        fq_error_destroy(err);
        goto done;
    }
    int version = fq_migrations_count ? fq_migrations[fq_migrations_count - 1].version : 0;
    printf("schema at version %d (applied %d)\n", version, applied);
    rc = 0;
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
    int rc = 2;
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
    static const volatile int no_cancel = 0;
    err = fq_pipeline_process(pl, &item, 1, &no_cancel, &out);
    char *js = fq_outcome_to_json(&item, &out, err);
    if (js)
        printf("%s\n", js);
    free(js);
    rc = err ? 1 : 0;
    fq_error_destroy(err);
done:
    fq_pipeline_destroy(pl);
    fq_item_clear(&item);
    return rc;
}

/* Benchmark mode: the pipeline alone, on the same pool the worker uses. */
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
    int rc = 2;
    if (!in) {
        fprintf(stderr, "consumer: --process-file %s: %s\n", path, strerror(errno));
        return 2;
    }
    ssize_t len;
    while ((len = getline(&line, &line_cap, in)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            fq_item_t *grown = realloc(items, cap * sizeof(*items));
            if (!grown)
                goto done;
            items = grown;
        }
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
    static const volatile int no_cancel = 0;
    fq_pool_submit(pool, jobs, n, &no_cancel);
    while (!fq_pool_wait(pool, 1000))
        ;
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
    rc = failed ? 1 : 0;
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

int main(int argc, char **argv)
{
    fq_config_t *cfg = NULL;
    fq_metrics_t *metrics = NULL;
    fq_worker_t *worker = NULL;
    char errstr[1024];
    int rc = FQ_EXIT_USAGE;

    /* --help and --version work whatever the environment holds. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            print_version(stdout);
            return 0;
        }
    }

    cfg = fq_config_new();
    if (!cfg) {
        fprintf(stderr, "consumer: out of memory\n");
        return FQ_EXIT_USAGE;
    }
    if (fq_config_load(cfg, &argc, argv, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "consumer: %s\n", errstr);
        goto done;
    }

    fq_role_t role = FQ_ROLE_ALL;
    bool once = false, migrate = false, no_db = false, print_config = false;
    const char *process = NULL, *process_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (strncmp(a, "--role=", 7) == 0) {
            val = a + 7;
        } else if (strcmp(a, "--role") == 0 && i + 1 < argc) {
            val = argv[++i];
        } else if (strcmp(a, "--once") == 0) {
            once = true;
            continue;
        } else if (strcmp(a, "--migrate") == 0) {
            migrate = true;
            continue;
        } else if (strcmp(a, "--no-db") == 0) {
            no_db = true;
            continue;
        } else if (strcmp(a, "--print-config") == 0) {
            print_config = true;
            continue;
        } else if (strcmp(a, "--process") == 0 && i + 1 < argc) {
            process = argv[++i];
            continue;
        } else if (strncmp(a, "--process=", 10) == 0) {
            process = a + 10;
            continue;
        } else if (strcmp(a, "--process-file") == 0 && i + 1 < argc) {
            process_file = argv[++i];
            continue;
        } else {
            fprintf(stderr, "consumer: %s: unknown option or missing value (see --help)\n", a);
            goto done;
        }
        if (fq_role_parse(val, &role) != 0) {
            fprintf(stderr, "consumer: --role: '%s' is not main, retry or all\n", val);
            goto done;
        }
    }

    if (fq_log_init("consumer", cfg->worker_id, cfg->log_format, cfg->log_level) != 0) {
        fprintf(stderr, "consumer: LOG_FORMAT/LOG_LEVEL: unknown value\n");
        goto done;
    }
    if (print_config) {
        fq_config_print(cfg, stdout);
        rc = 0;
        goto done;
    }
    if (migrate) {
        rc = run_migrate(cfg);
        goto done;
    }
    if (process) {
        rc = run_process(cfg, process, !no_db);
        goto done;
    }
    if (process_file) {
        rc = run_process_file(cfg, process_file, !no_db);
        goto done;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    metrics = fq_metrics_new();
    if (!metrics) {
        fprintf(stderr, "consumer: out of memory\n");
        rc = FQ_EXIT_DLQ;
        goto done;
    }
    fq_worker_declare_metrics(metrics);
    if (fq_metrics_serve(metrics, cfg->metrics_addr, errstr, sizeof(errstr)) != 0) {
        FQ_ERROR(NULL, "METRICS_ADDR: %s", errstr);
        rc = FQ_EXIT_USAGE;
        goto done;
    }
    fq_worker_opts_t opts = {.role = role, .once = once, .stop = &g_stop, .metrics = metrics};
    worker = fq_worker_new(cfg, &opts, errstr, sizeof(errstr));
    if (!worker) {
        FQ_ERROR(NULL, "%s", errstr);
        rc = FQ_EXIT_USAGE;
        goto done;
    }
    unsigned avf = avformat_version(), avc = avcodec_version();
    FQ_INFO(NULL,
            "started: frameq %s, librdkafka %s, libpq %s, libavformat %u.%u.%u, libavcodec "
            "%u.%u.%u; role %s, topics %s%s%s, dlq %s, group %s, concurrency %d%s",
            FQ_VERSION, rd_kafka_version_str(), fq_store_libpq_version(), avf >> 16,
            (avf >> 8) & 0xff, avf & 0xff, avc >> 16, (avc >> 8) & 0xff, avc & 0xff,
            fq_role_name(role), role == FQ_ROLE_RETRY ? "" : cfg->kafka_topic,
            role == FQ_ROLE_ALL ? "," : "", role == FQ_ROLE_MAIN ? "" : cfg->kafka_retry_topic,
            cfg->kafka_dlq_topic, cfg->kafka_group_id, cfg->worker_concurrency,
            once ? ", once" : "");
    rc = fq_worker_run(worker);
    FQ_INFO(NULL, "exiting with %d", rc);

done:
    fq_worker_destroy(worker);
    fq_metrics_destroy(metrics);
    fq_config_destroy(cfg);
    return rc;
}
