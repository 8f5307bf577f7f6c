/* Committing what is settled. Per partition, the decided messages at the bottom of the offsets
 * in flight form the prefix that may be committed (Confluent's Parallel Consumer commits the same
 * contiguous prefix). Clean messages — every item done or skipped, durable in PostgreSQL — settle
 * at once and their offset goes out with the next asynchronous commit. A prefix with retry or DLQ
 * messages to publish is committed in one transaction with them (all such partitions together), so
 * a crash can never publish them without the offset that covers them, nor the reverse. */
#include <inttypes.h>
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

/* Marks the partitions whose offsets ride in the transaction: no plain commit of theirs goes
 * out until it ends (fq_part_final_target). Seen in the kafka-restart chaos scenario: a clean
 * prefix settled in the turn a transaction began on the same partition; its plain commit (26)
 * reached the coordinator after the transaction's offset (30) and replaced it when the
 * transaction committed, so after the broker's restart the partition was read again from 26 and
 * an item went to the DLQ twice. */
static void set_in_txn(fq_worker_t *w, const rd_kafka_topic_partition_list_t *offsets, bool on)
{
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        fq_part_t *p = fq_w_part(w, offsets->elems[i].topic, offsets->elems[i].partition);
        if (p)
            p->in_txn = on;
    }
}

/* The transaction on its way ended with rc: its prefixes settle (FIN_OK) or are read again.
 * A message whose partition was revoked meanwhile is its new owner's business either way (the
 * new owner's offset fetch waits for the transaction's outcome), so only the outcome is
 * reported for it. */
void fq_w_txn_end(fq_worker_t *w, fin_rc_t rc)
{
    msg_t **tx = w->txn_msgs;
    size_t ntx = w->ntxn;
    const rd_kafka_topic_partition_list_t *offsets = w->txn_offsets;
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        msg_t *lowest = NULL; /* lowest first in tx for each partition */
        for (size_t j = 0; j < ntx && !lowest; j++)
            if (tx[j]->partition == tp->partition && strcmp(tx[j]->topic, tp->topic) == 0)
                lowest = tx[j];
        fq_part_t *p = fq_w_part(w, tp->topic, tp->partition);
        if (!lowest || lowest->abandoned || !p)
            continue;
        if (rc != FIN_OK) {
            fq_w_rewind(w, tp->topic, tp->partition, lowest->offset);
            continue;
        }
        for (size_t j = 0; j < ntx; j++)
            if (tx[j]->partition == tp->partition && strcmp(tx[j]->topic, tp->topic) == 0)
                fq_part_settle(p, tx[j]->offset);
        fq_part_committed(p, tp->offset, true, fq_time_mono_ms());
    }
    if (rc == FIN_OK) {
        for (size_t j = 0; j < ntx; j++) {
            tx[j]->settled = true;
            fq_w_report(w, tx[j]);
        }
    } else if (rc == FIN_OUTAGE) {
        fq_w_enter_outage(w, OUTAGE_PROBED, "kafka: publishing or committing failed");
    }
    FQ_DEBUG(NULL, "transaction of %zu message(s) over %d partition(s): %s, %" PRId64 " ms", ntx,
             offsets ? offsets->cnt : 0, rc == FIN_OK ? "committed" : "not committed",
             fq_time_mono_ms() - w->txn_since);
    fq_w_txn_forget(w);
}

void fq_w_txn_forget(fq_worker_t *w)
{
    set_in_txn(w, w->txn_offsets, false);
    fq_w_txn_offsets_end(w); /* offsets still on their way stay with the producer */
    for (size_t j = 0; j < w->ntxn; j++)
        w->txn_msgs[j]->in_txn = false;
    free(w->txn_msgs);
    w->txn_msgs = NULL;
    w->ntxn = 0;
    if (w->txn_offsets)
        rd_kafka_topic_partition_list_destroy(w->txn_offsets);
    w->txn_offsets = NULL;
    w->txn_slow = false;
}

/* The commit on its way: one more slice. One that outlives COMMIT_WAIT_MS is an outage (the
 * worker pauses and turns not-ready) while the commit goes on. One still unanswered when the
 * coordinator must have ended the transaction (transaction.timeout.ms, and COMMIT_WAIT_MS more)
 * will not end by itself: seen after a broker restart, where for ten minutes it held the worker
 * idle and the last stable offset of the partitions it wrote to, so the whole group stalled on
 * them. A new producer under the same transactional.id settles it (init_transactions makes the
 * coordinator finish or abort it) and the messages are read again (fq_w_renew_producer). */
static void txn_resume(fq_worker_t *w)
{
    fin_rc_t rc = fq_w_txn_resume(w);
    if (rc != FIN_PENDING) {
        fq_w_txn_end(w, rc);
        return;
    }
    int64_t waited = fq_time_mono_ms() - w->txn_since;
    if (!w->fatal && waited > (int64_t)w->txn_timeout_ms + COMMIT_WAIT_MS) {
        FQ_ERROR(NULL,
                 "commit transaction: no answer for %" PRId64 " ms, past transaction.timeout.ms "
                 "(%d): the transaction is settled by a new producer",
                 waited, w->txn_timeout_ms);
        w->renew_why = "its transaction's commit was never answered";
        w->fatal = true; /* the loop renews the producer once no item runs */
        return;
    }
    if (!w->txn_slow && waited > COMMIT_WAIT_MS) {
        w->txn_slow = true;
        FQ_WARN(NULL,
                "commit transaction: no answer within %d ms: pausing; the commit goes on in "
                "the background",
                COMMIT_WAIT_MS);
        fq_w_enter_outage(w, OUTAGE_PROBED, "kafka: a transaction's commit is not answered");
    }
}

void fq_w_commit_settled(fq_worker_t *w, bool transactions)
{
    if (transactions && w->ntxn) {
        txn_resume(w); /* one transaction at a time: the next waits for this one */
        if (w->ntxn)
            transactions = false;
    }
    msg_t **tx = NULL;
    size_t ntx = 0;
    rd_kafka_topic_partition_list_t *offsets = NULL;
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        settle_clean(w, p);
        if (!transactions || w->ntxn || !p->ninflight)
            continue;
        const msg_t *head = fq_w_find(w, p->topic, p->partition, p->inflight[0]);
        if (!head || head->state != MSG_DECIDED)
            continue; /* nothing to publish yet: no allocation on the loop's every turn */
        if (p->pending)
            continue; /* its asynchronous commits are answered first: the coordinator keeps
                         whichever commit it appends last (a later turn, never a wait here) */
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
        w->txn_msgs = tx;
        w->ntxn = ntx;
        w->txn_offsets = offsets;
        set_in_txn(w, offsets, true);
        w->txn_since = fq_time_mono_ms();
        for (size_t j = 0; j < ntx; j++)
            tx[j]->in_txn = true;
        fin_rc_t rc = fq_w_txn_commit(w, tx, ntx, offsets);
        if (rc != FIN_PENDING)
            fq_w_txn_end(w, rc);
        return; /* tx and offsets are the transaction's now */
    }
    if (offsets)
        rd_kafka_topic_partition_list_destroy(offsets);
    free(tx);
}
