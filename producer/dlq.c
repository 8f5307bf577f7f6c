/* The DLQ reader and producer dlq list.
 *
 * Reading: assign() every partition of the DLQ, from the group's committed offsets (redrive)
 * or from the beginning (dlq list), read_committed, until EOF on every partition. assign()
 * rather than subscribe(): no rebalance to wait for, and the end is known exactly. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "fq_cli.h"
#include "fq_config.h"
#include "fq_kafka.h"
#include "fq_log.h"
#include "fq_producer.h"

void fq_dlq_close(fq_dlq_reader_t *r)
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
    free(r->from);
    free(r->pos);
    free(r->end);
    memset(r, 0, sizeof(*r));
}

int fq_dlq_open(const fq_config_t *cfg, const char *group, bool from_committed, int64_t timeout_ms,
                fq_dlq_reader_t *r)
{
    memset(r, 0, sizeof(*r));
    char errstr[512];
    rd_kafka_conf_t *conf = fq_kafka_conf(cfg, errstr, sizeof(errstr));
    if (!conf || fq_kafka_force(conf, "group.id", group, errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "enable.auto.offset.store", "false", errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "isolation.level", "read_committed", errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "enable.partition.eof", "true", errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr))) {
        fq_cli_say("%s", errstr);
        if (conf)
            rd_kafka_conf_destroy(conf);
        return FQ_EXIT_USAGE;
    }
    r->rk = fq_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!r->rk) {
        fq_cli_say("%s", errstr);
        return FQ_EXIT_USAGE;
    }
    rd_kafka_poll_set_consumer(r->rk);

    const struct rd_kafka_metadata *md;
    if (fq_kafka_topic_metadata(r->rk, cfg->kafka_dlq_topic, (int)timeout_ms, &md, errstr,
                                sizeof(errstr))) {
        fq_cli_say("could not read the DLQ at KAFKA_BROKERS=%s: %s", cfg->kafka_brokers, errstr);
        fq_dlq_close(r);
        return FQ_EXIT_DELIVERY;
    }
    r->nparts = md->topics[0].partition_cnt;
    r->parts = rd_kafka_topic_partition_list_new(r->nparts);
    for (int i = 0; i < r->nparts; i++)
        rd_kafka_topic_partition_list_add(r->parts, cfg->kafka_dlq_topic,
                                          md->topics[0].partitions[i].id);
    rd_kafka_metadata_destroy(md);
    size_t n = (size_t)r->nparts + 1;
    r->eof = calloc(n, sizeof(*r->eof));
    r->next = calloc(n, sizeof(*r->next));
    r->from = calloc(n, sizeof(*r->from));
    r->pos = calloc(n, sizeof(*r->pos));
    r->end = calloc(n, sizeof(*r->end));
    if (!r->eof || !r->next || !r->from || !r->pos || !r->end) {
        fq_dlq_close(r);
        return FQ_EXIT_DELIVERY;
    }
    for (int i = 0; i < r->nparts; i++) {
        r->next[i] = -1;
        r->parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_resp_err_t err;
    if (from_committed) {
        err = rd_kafka_committed(r->rk, r->parts, (int)timeout_ms);
        if (err) {
            fq_cli_say("could not read the offsets of group %s: %s", group, rd_kafka_err2str(err));
            fq_dlq_close(r);
            return FQ_EXIT_DELIVERY;
        }
        for (int i = 0; i < r->nparts; i++)
            if (r->parts->elems[i].offset < 0)
                r->parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    err = rd_kafka_assign(r->rk, r->parts);
    if (err) {
        fq_cli_say("assign %s: %s", cfg->kafka_dlq_topic, rd_kafka_err2str(err));
        fq_dlq_close(r);
        return FQ_EXIT_DELIVERY;
    }
    return 0;
}

int fq_dlq_measure(fq_dlq_reader_t *r, int64_t timeout_ms)
{
    for (int i = 0; i < r->nparts; i++) {
        const rd_kafka_topic_partition_t *tp = &r->parts->elems[i];
        int64_t low = 0, high = 0;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(r->rk, tp->topic, tp->partition,
                                                                   &low, &high, (int)timeout_ms);
        if (err) {
            FQ_DEBUG(NULL, "dlq: no progress figures: partition %" PRId32 ": %s", tp->partition,
                     rd_kafka_err2str(err));
            return -1;
        }
        r->from[i] = r->pos[i] = tp->offset >= low ? tp->offset : low;
        r->end[i] = high > r->from[i] ? high : r->from[i];
    }
    r->measured = true;
    return 0;
}

/* The reader reached offset `at` of partition index i (the next to read). */
static void reached(fq_dlq_reader_t *r, int i, int64_t at)
{
    if (i < 0 || !r->measured || at <= r->pos[i])
        return;
    r->pos[i] = at;
    if (at > r->end[i])
        r->end[i] = at;
}

void fq_dlq_progress(const fq_dlq_reader_t *r, fq_progress_t *p, bool final, const char *what,
                     const char *extra)
{
    if (!p->on)
        return;
    uint64_t done = 0, total = 0;
    for (int i = 0; r->measured && i < r->nparts; i++) {
        done += (uint64_t)(r->pos[i] - r->from[i]);
        total += (uint64_t)(r->end[i] - r->from[i]);
    }
    int64_t elapsed = fq_time_mono_ms() - p->t0;
    char eta[32], pct[48] = "";
    fq_progress_fmt_duration(fq_progress_eta_ms(done, total, elapsed), eta, sizeof(eta));
    if (r->measured)
        snprintf(pct, sizeof(pct), "%.0f%% of the DLQ read, ",
                 total ? 100.0 * (double)done / (double)total : 100.0);
    fq_progress_draw(p, final, "%s: %s%" PRIu64 " messages, %.0f messages/s%s%s%s%s", what, pct,
                     r->nread, fq_progress_rate(r->nread, elapsed), r->measured ? ", ETA " : "",
                     r->measured ? eta : "", extra ? ", " : "", extra ? extra : "");
}

int fq_dlq_part_index(const fq_dlq_reader_t *r, int32_t partition)
{
    for (int i = 0; i < r->nparts; i++)
        if (r->parts->elems[i].partition == partition)
            return i;
    return -1;
}

static bool all_eof(const fq_dlq_reader_t *r)
{
    for (int i = 0; i < r->nparts; i++)
        if (!r->eof[i])
            return false;
    return true;
}

/* Next DLQ message, or NULL at the end of every partition (*failed set on error/timeout). */
rd_kafka_message_t *fq_dlq_next(fq_dlq_reader_t *r, int64_t timeout_ms, bool *failed)
{
    int64_t deadline = fq_time_mono_ms() + timeout_ms;
    *failed = false;
    while (!all_eof(r) && !fq_cli_stop) {
        if (fq_time_mono_ms() > deadline) {
            fq_cli_say("no progress reading the DLQ for %" PRId64 " ms", timeout_ms);
            *failed = true;
            return NULL;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(r->rk, 200);
        if (!rkm)
            continue;
        int i = fq_dlq_part_index(r, rkm->partition);
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (i >= 0)
                r->eof[i] = true;
            reached(r, i, rkm->offset);
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (rkm->err) {
            fq_cli_say("reading the DLQ: %s", rd_kafka_message_errstr(rkm));
            bool fatal = rkm->err != RD_KAFKA_RESP_ERR__TRANSPORT &&
                         rkm->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
            rd_kafka_message_destroy(rkm);
            if (fatal) {
                *failed = true;
                return NULL;
            }
            continue;
        }
        if (i >= 0)
            r->eof[i] = false;
        reached(r, i, rkm->offset + 1);
        r->nread++;
        return rkm;
    }
    if (fq_cli_stop)
        *failed = true;
    return NULL;
}

void fq_dlq_table_header(void)
{
    printf("%-40s %-11s %-9s %-10s %4s %-24s %s\n", "KEY", "REASON", "STAGE", "CLASS", "ATT",
           "FAILED-AT", "ERROR");
}

void fq_dlq_table_row(const fq_dlq_entry_t *e)
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

int fq_cli_dlq_list(const fq_config_t *cfg, const fq_cli_opts_t *o)
{
    char group[128];
    snprintf(group, sizeof(group), "%s.dlq-list.%d", cfg->kafka_group_id, (int)getpid());
    fq_dlq_reader_t r;
    int rc = fq_dlq_open(cfg, group, false, o->timeout_ms, &r);
    if (rc)
        return rc;
    tally_t by_reason[16], by_stage[16];
    memset(by_reason, 0, sizeof(by_reason));
    memset(by_stage, 0, sizeof(by_stage));
    uint64_t total = 0;
    bool failed = false;
    fq_progress_t line;
    fq_progress_start(&line, fq_progress_wanted(o, true));
    if (line.on)
        (void)fq_dlq_measure(&r, o->timeout_ms); /* without it: counts, no percentage */
    fq_dlq_table_header();
    rd_kafka_message_t *rkm;
    while ((rkm = fq_dlq_next(&r, o->timeout_ms, &failed))) {
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_message_headers(rkm, &hdrs);
        fq_dlq_entry_t e;
        fq_dlq_entry_from(&e, rkm->key, rkm->key_len, hdrs);
        if (fq_dlq_filter_match(&o->filter, &e)) {
            fq_dlq_table_row(&e);
            tally_add(by_reason, 16, e.reason);
            tally_add(by_stage, 16, e.stage);
            total++;
        }
        rd_kafka_message_destroy(rkm);
        fq_dlq_progress(&r, &line, false, "dlq list", NULL);
    }
    if (!failed)
        fq_dlq_progress(&r, &line, true, "dlq list", NULL);
    fq_progress_end(&line);
    printf("\n%" PRIu64 " dead messages in %s\n", total, cfg->kafka_dlq_topic);
    printf("by reason:");
    for (size_t i = 0; i < 16 && by_reason[i].name[0]; i++)
        printf(" %s=%" PRIu64, by_reason[i].name, by_reason[i].n);
    printf("\nby stage:");
    for (size_t i = 0; i < 16 && by_stage[i].name[0]; i++)
        printf(" %s=%" PRIu64, by_stage[i].name, by_stage[i].n);
    printf("\n");
    fq_dlq_close(&r);
    return failed ? FQ_EXIT_DELIVERY : 0;
}
