/* producer enqueue: reads all input (fq_input: validated, deduplicated, spooled), then
 * publishes batch messages of BATCH_SIZE items to KAFKA_TOPIC with an idempotent acks=all
 * producer, with a progress line on a terminal and a bounded final flush. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "fq_cli.h"
#include "fq_config.h"
#include "fq_fetch.h"
#include "fq_input.h"
#include "fq_item.h"
#include "fq_kafka.h"
#include "fq_log.h"
#include "fq_producer.h"

#define MAX_FAILURES_SHOWN 20

/* Every command polls it (fq_cli.h); enqueue is the default command. */
volatile sig_atomic_t fq_cli_stop;

typedef struct batch_meta {
    char batch_id[37];
    char first[FQ_ITEM_KEY_MAX];
    size_t count;
} batch_meta_t;

typedef struct enqueue_state {
    const fq_config_t *cfg;
    fq_kafka_events_t events; /* the producer's opaque; its last_error is the transport-level
                               * reason, .user this state */
    uint64_t items_ok, batches_ok, items_failed, batches_failed;
    char first_dr_error[256];
    fq_progress_t line; /* its t0: the start of the pass (validating, then sending) */
    uint64_t total_items;
    uint64_t input_size; /* bytes of a regular input file; 0 when unknown */
} enqueue_state_t;

static void report_invalid(void *opaque, const char *where, const char *why)
{
    (void)opaque;
    fq_cli_say("invalid item at %s: %s", where, why);
}

static void enqueue_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    enqueue_state_t *st = ((fq_kafka_events_t *)opaque)->user;
    batch_meta_t *meta = rkm->_private;
    if (!rkm->err) {
        st->items_ok += meta ? meta->count : 0;
        st->batches_ok++;
    } else {
        st->items_failed += meta ? meta->count : 0;
        if (st->batches_failed < MAX_FAILURES_SHOWN && meta)
            fq_cli_say("batch %s (%zu items, first %s) not delivered: %s", meta->batch_id,
                       meta->count, meta->first, rd_kafka_err2str(rkm->err));
        if (!st->batches_failed)
            snprintf(st->first_dr_error, sizeof(st->first_dr_error), "%s",
                     rd_kafka_err2str(rkm->err));
        st->batches_failed++;
    }
    free(meta);
}

static void progress_line(enqueue_state_t *st, uint64_t sent, bool final)
{
    char eta[32];
    int64_t elapsed = fq_time_mono_ms() - st->line.t0;
    fq_progress_fmt_duration(fq_progress_eta_ms(st->items_ok, st->total_items, elapsed), eta,
                             sizeof(eta));
    fq_progress_draw(&st->line, final,
                     "%" PRIu64 "/%" PRIu64 " items sent, %" PRIu64 " delivered in %" PRIu64
                     " batches, %.0f items/s, ETA %s",
                     sent, st->total_items, st->items_ok, st->batches_ok,
                     fq_progress_rate(st->items_ok, elapsed), eta);
}

static void read_progress(void *opaque, const fq_input_stats_t *stats)
{
    enqueue_state_t *st = opaque;
    if (st->input_size == 0) {
        fq_progress_draw(&st->line, false,
                         "validating: %zu items read, %zu invalid, %zu duplicates", stats->records,
                         stats->invalid, stats->duplicates);
        return;
    }
    /* a regular file: its size gives a fraction and an ETA for this pass */
    char eta[32];
    int64_t elapsed = fq_time_mono_ms() - st->line.t0;
    fq_progress_fmt_duration(fq_progress_eta_ms(stats->bytes, st->input_size, elapsed), eta,
                             sizeof(eta));
    fq_progress_draw(&st->line, false,
                     "validating: %.0f%%, %zu items read, %zu invalid, %zu duplicates, "
                     "%.0f items/s, ETA %s",
                     100.0 * (double)stats->bytes / (double)st->input_size, stats->records,
                     stats->invalid, stats->duplicates, fq_progress_rate(stats->records, elapsed),
                     eta);
}

static FILE *open_input(const fq_config_t *cfg, const fq_cli_opts_t *o, const char **name)
{
    if (o->input && strcmp(o->input, "-") != 0) {
        *name = o->input;
        FILE *in = fopen(o->input, "r");
        if (!in)
            fq_cli_say("%s: %s", o->input, strerror(errno));
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
            fq_cli_say("JOB_INPUT: %s", strerror(errno));
        return in;
    }
    fq_cli_say("no input: give FILE, '-' for stdin, or set JOB_INPUT");
    return NULL;
}

/* Reads, validates and spools all input, printing what was wrong with it; the workers'
 * allow-list, built from the same settings, refuses here a video_url they would refuse, before
 * anything is published (DESIGN §2, §6). The spool, or NULL for exit code 2 (also when items
 * were invalid without --skip-invalid). */
static fq_spool_t *read_input(const fq_config_t *cfg, const fq_cli_opts_t *o, enqueue_state_t *st,
                              fq_input_stats_t *stats)
{
    const char *name = NULL;
    char errstr[512];
    FILE *in = open_input(cfg, o, &name);
    if (!in)
        return NULL;
    struct stat sb;
    if (fstat(fileno(in), &sb) == 0 && S_ISREG(sb.st_mode))
        st->input_size = (uint64_t)sb.st_size;
    fq_allow_t *allow = fq_allow_from_config(cfg, errstr, sizeof(errstr));
    if (!allow) {
        fq_cli_say("%s", errstr);
        if (in != stdin)
            fclose(in);
        return NULL;
    }
    fq_input_opts_t iopts = {.allow_duplicates = o->allow_duplicates,
                             .report = report_invalid,
                             .opaque = st,
                             .allow = allow,
                             .progress = read_progress};
    fq_spool_t *spool = fq_input_read(in, &iopts, stats, errstr, sizeof(errstr));
    fq_allow_destroy(allow);
    if (in != stdin)
        fclose(in);
    fq_progress_erase(&st->line);
    if (!spool) {
        fq_cli_say("%s: %s", name, errstr);
        return NULL;
    }
    if (stats->invalid)
        fq_cli_say("%zu invalid item%s in %s%s", stats->invalid, stats->invalid == 1 ? "" : "s",
                   name,
                   o->skip_invalid ? " skipped (--skip-invalid)"
                                   : "; nothing sent (--skip-invalid sends the valid ones)");
    if (stats->refused_urls)
        fq_cli_say("video_url allow-list: ALLOWED_SOURCE_SCHEMES=%s ALLOWED_SOURCE_HOSTS=%s%s "
                   "(the workers' settings; see --print-config)",
                   cfg->allowed_source_schemes, cfg->allowed_source_hosts,
                   cfg->source_url_template && *cfg->source_url_template
                       ? " plus SOURCE_URL_TEMPLATE's host"
                       : "");
    if (stats->invalid && !o->skip_invalid) {
        fq_spool_destroy(spool);
        return NULL;
    }
    if (stats->duplicates)
        fq_cli_say("%zu duplicate item%s dropped (--allow-duplicates keeps them)",
                   stats->duplicates, stats->duplicates == 1 ? "" : "s");
    return spool;
}

/* The batch producer, its reports counted in st; NULL after printing why. Idempotence and
 * acks=all are the contract: not overridable. Batching favours throughput (the whole run is
 * one burst); the queue bound keeps RSS flat however many items there are: producev waits on
 * QUEUE_FULL. */
static rd_kafka_t *enqueue_producer(const fq_config_t *cfg, const fq_cli_opts_t *o,
                                    enqueue_state_t *st)
{
    char errstr[512], tmo[32];
    snprintf(tmo, sizeof(tmo), "%" PRId64, o->timeout_ms);
    rd_kafka_conf_t *conf = fq_kafka_conf(cfg, errstr, sizeof(errstr));
    if (!conf || fq_kafka_force(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "acks", "all", errstr, sizeof(errstr)) ||
        fq_kafka_default(conf, cfg, "message.timeout.ms", tmo, errstr, sizeof(errstr)) ||
        fq_kafka_default(conf, cfg, "linger.ms", "20", errstr, sizeof(errstr)) ||
        fq_kafka_default(conf, cfg, "batch.size", "1000000", errstr, sizeof(errstr)) ||
        fq_kafka_default(conf, cfg, "queue.buffering.max.kbytes", "32768", errstr,
                         sizeof(errstr)) ||
        fq_kafka_default(conf, cfg, "compression.type", "lz4", errstr, sizeof(errstr))) {
        fq_cli_say("%s", errstr);
        if (conf)
            rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, enqueue_dr_cb);
    st->events.user = st;
    fq_kafka_set_callbacks(conf, &st->events);
    rd_kafka_t *rk = fq_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        fq_cli_say("%s", errstr);
    return rk;
}

/* Encodes items[0..n) as one batch message and sends it (rk), or prints it (--dry-run, rk
 * NULL). A batch the producer refuses is reported and counted failed. 0, or -1 when the batch
 * could not even be built. */
static int publish_batch(rd_kafka_t *rk, const fq_config_t *cfg, enqueue_state_t *st,
                         const fq_item_t *items, size_t n, uint64_t sent)
{
    batch_meta_t *meta = calloc(1, sizeof(*meta));
    char at[40];
    if (!meta)
        return -1;
    fq_uuid4(meta->batch_id);
    fq_item_key(&items[0], meta->first, sizeof(meta->first));
    meta->count = n;
    fq_time_rfc3339(fq_time_now_ms(), at, sizeof(at));
    size_t len = 0;
    char *value = fq_batch_encode(meta->batch_id, at, items, n, &len);
    if (!value) {
        free(meta);
        return -1;
    }
    if (!rk) {
        fwrite(value, 1, len, stdout);
        putchar('\n');
        free(value);
        free(meta);
        st->items_ok += n;
        st->batches_ok++;
        return 0;
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(cfg->kafka_topic), RD_KAFKA_V_KEY(meta->batch_id, 36),
            RD_KAFKA_V_VALUE(value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
            RD_KAFKA_V_OPAQUE(meta), RD_KAFKA_V_END);
        if (!err)
            return 0; /* value and meta now owned by rk (meta freed by the delivery report) */
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !fq_cli_stop) {
            rd_kafka_poll(rk, 50);
            progress_line(st, sent, false);
            continue;
        }
        fq_cli_say("batch %s (%zu items, first %s) not sent: %s", meta->batch_id, n, meta->first,
                   rd_kafka_err2str(err));
        st->batches_failed++;
        st->items_failed += n;
        free(value);
        free(meta);
        return 0;
    }
}

/* Waits for every delivery report, bounded: message.timeout.ms fails whatever the broker did
 * not take in time; what is left at the deadline is purged (and counted failed). */
static void flush_all(rd_kafka_t *rk, const fq_cli_opts_t *o, enqueue_state_t *st, uint64_t sent)
{
    int64_t deadline = fq_time_mono_ms() + o->timeout_ms + 10000;
    while (rd_kafka_outq_len(rk) > 0 && fq_time_mono_ms() < deadline) {
        rd_kafka_flush(rk, 100);
        progress_line(st, sent, false);
        if (fq_cli_stop && fq_time_mono_ms() + 5000 < deadline)
            deadline = fq_time_mono_ms() + 5000;
    }
    progress_line(st, sent, true);
    if (rd_kafka_outq_len(rk) > 0) {
        fq_cli_say("%d messages still queued at the deadline", rd_kafka_outq_len(rk));
        /* Purged messages get their delivery reports (counted as failed, meta freed). */
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(rk, 1000);
    }
    char fatal[256];
    if (rd_kafka_fatal_error(rk, fatal, sizeof(fatal)))
        fq_cli_say("fatal producer error: %s", fatal);
}

/* The run's summary (stdout) and what was not delivered (stderr). The exit code given rc, the
 * publishing loop's. */
static int report(const fq_config_t *cfg, const enqueue_state_t *st, const fq_input_stats_t *stats,
                  size_t nbatches, int rc)
{
    FQ_INFO(NULL,
            "enqueue done: %" PRIu64 " items in %" PRIu64 " batches delivered, %" PRIu64
            " batches failed, %zu invalid, %zu duplicates, %.0f items/s",
            st->items_ok, st->batches_ok, st->batches_failed, stats->invalid, stats->duplicates,
            fq_progress_rate(st->items_ok, fq_time_mono_ms() - st->line.t0));
    printf("%" PRIu64 " items in %" PRIu64 " batches delivered to %s\n", st->items_ok,
           st->batches_ok, cfg->kafka_topic);
    if (stats->invalid || stats->duplicates)
        fq_cli_say("%zu invalid skipped, %zu duplicates dropped", stats->invalid,
                   stats->duplicates);
    if (st->batches_failed || st->items_ok < st->total_items) {
        if (st->batches_failed > MAX_FAILURES_SHOWN)
            fq_cli_say("... and %" PRIu64 " more failed batches",
                       st->batches_failed - MAX_FAILURES_SHOWN);
        fq_cli_say(
            "could not deliver to KAFKA_BROKERS=%s: %s (%" PRIu64 " of %" PRIu64
            " items in %" PRIu64 " batches not delivered)",
            cfg->kafka_brokers,
            st->events.last_error[0] ? st->events.last_error
                                     : (st->first_dr_error[0] ? st->first_dr_error : "interrupted"),
            st->total_items - st->items_ok, st->total_items, (uint64_t)nbatches - st->batches_ok);
        rc = FQ_EXIT_DELIVERY;
    }
    if (fq_cli_stop && !rc)
        rc = FQ_EXIT_DELIVERY;
    return rc;
}

int fq_cli_enqueue(const fq_config_t *cfg, const fq_cli_opts_t *o)
{
    int rc = FQ_EXIT_USAGE;
    rd_kafka_t *rk = NULL;
    fq_item_t *items = NULL;
    size_t bsize = (size_t)cfg->batch_size;
    enqueue_state_t st = {.cfg = cfg};
    bool line = fq_progress_wanted(o, o->dry_run); /* a dry run prints its batches */
    fq_progress_start(&st.line, line);

    fq_input_stats_t stats;
    fq_spool_t *spool = read_input(cfg, o, &st, &stats);
    if (!spool)
        goto done;
    size_t total = fq_spool_count(spool);
    size_t nbatches = fq_batch_count(total, bsize);
    st.total_items = total;
    items = calloc(bsize, sizeof(*items));
    if (!items) {
        fq_cli_say("out of memory");
        goto done;
    }
    if (!o->dry_run) {
        rk = enqueue_producer(cfg, o, &st);
        if (!rk)
            goto done;
        if (fq_cli_topic_missing(rk, cfg->kafka_topic, o)) {
            rc = FQ_EXIT_DELIVERY;
            goto done;
        }
        FQ_INFO(NULL, "enqueue: %zu items in %zu batches to %s (librdkafka %s)", total, nbatches,
                cfg->kafka_topic, rd_kafka_version_str());
    }

    fq_progress_start(&st.line, line);
    uint64_t sent = 0;
    rc = 0;
    for (size_t b = 0; b < nbatches && !fq_cli_stop && !rc; b++) {
        size_t n = fq_batch_len(total, bsize, b);
        for (size_t i = 0; i < n && !rc; i++) {
            fq_item_clear(&items[i]);
            if (fq_spool_next(spool, &items[i]) != 1) {
                fq_cli_say("temporary spool file: read error");
                rc = FQ_EXIT_DELIVERY;
            }
        }
        if (!rc && publish_batch(rk, cfg, &st, items, n, sent) != 0)
            rc = FQ_EXIT_DELIVERY;
        if (!rc && rk) {
            sent += n;
            rd_kafka_poll(rk, 0);
            progress_line(&st, sent, false);
        }
    }
    if (rk)
        flush_all(rk, o, &st, sent);
    if (o->dry_run)
        fq_cli_say("%" PRIu64 " items in %" PRIu64 " batches (dry run, not sent)", st.items_ok,
                   st.batches_ok);
    else
        rc = report(cfg, &st, &stats, nbatches, rc);

done:
    fq_progress_end(&st.line);
    if (items) {
        for (size_t i = 0; i < bsize; i++)
            fq_item_clear(&items[i]);
        free(items);
    }
    if (rk)
        rd_kafka_destroy(rk);
    fq_spool_destroy(spool);
    return rc;
}
