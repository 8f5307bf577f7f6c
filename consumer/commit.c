/* Committing what is settled. Per partition, the decided messages at the bottom of the offsets
 * in flight form the prefix that may be committed (Confluent's Parallel Consumer commits the same
 * contiguous prefix). Clean messages — every item done or skipped, durable in PostgreSQL — settle
 * at once and their offset goes out with the next asynchronous commit. A prefix with retry or DLQ
 * messages to publish is committed in one transaction with them (all such partitions together), so
 * a crash can never publish them without the offset that covers them, nor the reverse. */
#include <stdlib.h>
#include <string.h>

#include "fq_log.h"
#include "worker_int.h"

/* Settles the clean messages at the bottom of the partition's offsets in flight. */
static void settle_clean(fq_worker_t *w, fq_part_t *p)
{
    while (p->ninflight > 0) {
        msg_t *m = fq_w_find(w, p->topic, p->partition, p->inflight[0]);
        if (!m || m->state != MSG_DECIDED || m->nrouted)
            return;
        fq_part_settle(p, m->offset);
        m->settled = true;
        fq_w_report(w, m);
    }
}

/* The decided messages at the bottom of the partition's offsets in flight (the first one has
 * something to publish); returns how many, appending them to tx. */
static size_t routed_prefix(fq_worker_t *w, const fq_part_t *p, msg_t **tx, size_t ntx)
{
    size_t k = 0;
    while (k < p->ninflight) {
        msg_t *m = fq_w_find(w, p->topic, p->partition, p->inflight[k]);
        if (!m || m->state != MSG_DECIDED)
            break;
        tx[ntx + k++] = m;
    }
    return k;
}

/* Nothing of the partition but these k messages is in the window or held. */
static bool only_these(const fq_worker_t *w, const fq_part_t *p, size_t k)
{
    size_t n = 0;
    for (size_t i = 0; i < w->nwin; i++)
        n += w->win[i]->partition == p->partition && strcmp(w->win[i]->topic, p->topic) == 0;
    return n == k && !fq_w_held_in(w, p->topic, p->partition);
}

static void txn_done(fq_worker_t *w, msg_t **tx, size_t ntx,
                     const rd_kafka_topic_partition_list_t *offsets, fin_rc_t rc)
{
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        fq_part_t *p = fq_w_part(w, tp->topic, tp->partition);
        if (rc == FIN_OK) {
            for (size_t j = 0; j < ntx; j++)
                if (p && tx[j]->partition == tp->partition && strcmp(tx[j]->topic, tp->topic) == 0)
                    fq_part_settle(p, tx[j]->offset);
            if (p)
                fq_part_committed(p, tp->offset, true, fq_time_mono_ms());
            continue;
        }
        /* Not committed: the prefix is read again (lowest first in tx for each partition). */
        for (size_t j = 0; j < ntx; j++)
            if (tx[j]->partition == tp->partition && strcmp(tx[j]->topic, tp->topic) == 0) {
                fq_w_rewind(w, tp->topic, tp->partition, tx[j]->offset);
                break;
            }
    }
    if (rc == FIN_OK) {
        for (size_t j = 0; j < ntx; j++) {
            tx[j]->settled = true;
            fq_w_report(w, tx[j]);
        }
    } else if (rc == FIN_OUTAGE) {
        fq_w_enter_outage(w, OUTAGE_PROBED, "kafka: publishing or committing failed");
    }
}

void fq_w_commit_settled(fq_worker_t *w, bool transactions)
{
    msg_t **tx = NULL;
    size_t ntx = 0;
    rd_kafka_topic_partition_list_t *offsets = NULL;
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        settle_clean(w, p);
        if (!transactions || !p->ninflight)
            continue;
        const msg_t *head = fq_w_find(w, p->topic, p->partition, p->inflight[0]);
        if (!head || head->state != MSG_DECIDED)
            continue; /* nothing to publish yet: no allocation on the loop's every turn */
        if (!tx) {
            tx = calloc(w->nwin ? w->nwin : 1, sizeof(*tx));
            if (!tx)
                return; /* tried again on the next turn */
        }
        size_t k = routed_prefix(w, p, tx, ntx);
        if (!k)
            continue;
        int64_t target = fq_part_target_after(p, tx[ntx + k - 1]->offset, only_these(w, p, k));
        ntx += k;
        if (!offsets)
            offsets = rd_kafka_topic_partition_list_new(4);
        rd_kafka_topic_partition_list_add(offsets, p->topic, p->partition)->offset = target;
    }
    if (ntx) {
        int64_t t0 = fq_time_mono_ms();
        fin_rc_t rc = fq_w_txn_commit(w, tx, ntx, offsets);
        FQ_DEBUG(NULL, "transaction of %zu message(s) over %d partition(s): %s, %d ms", ntx,
                 offsets->cnt, rc == FIN_OK ? "committed" : "not committed",
                 (int)(fq_time_mono_ms() - t0));
        txn_done(w, tx, ntx, offsets, rc);
    }
    if (offsets)
        rd_kafka_topic_partition_list_destroy(offsets);
    free(tx);
}
