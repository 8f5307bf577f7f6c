/* The offsets of a transaction, sent on a thread of their own.
 *
 * librdkafka 2.14.2 does not bound rd_kafka_send_offsets_to_transaction() by its timeout while
 * the group coordinator is away: the coordinator request's timeout is never checked (upstream
 * issue 5456, open), so the call returns only when a coordinator answers. Seen in the
 * kafka-restart chaos scenario: a worker's loop held 48 s inside the call, past its group session
 * timeout, serving no rebalance and no SIGTERM until the broker was back. The call therefore
 * runs on a thread, and the loop waits for it a slice at a time as it does for the commit
 * (fq_w_txn_resume). The producer is not destroyed while the call runs: a renewal waits for it,
 * and a worker that exits meanwhile leaves the producer (and its open transaction) to the
 * coordinator. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "fq_log.h"
#include "worker_int.h"

struct fq_txn_offsets {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    rd_kafka_t *rkp;
    rd_kafka_topic_partition_list_t *offsets;
    rd_kafka_consumer_group_metadata_t *cgmd;
    rd_kafka_error_t *error; /* the call's result, once done */
};

static void *offsets_thread(void *opaque)
{
    fq_txn_offsets_t *c = opaque;
    rd_kafka_error_t *error =
        rd_kafka_send_offsets_to_transaction(c->rkp, c->offsets, c->cgmd, COMMIT_WAIT_MS);
    pthread_mutex_lock(&c->lock);
    c->error = error;
    c->done = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void offsets_free(fq_txn_offsets_t *c)
{
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    rd_kafka_consumer_group_metadata_destroy(c->cgmd);
    rd_kafka_topic_partition_list_destroy(c->offsets);
    if (c->error)
        rd_kafka_error_destroy(c->error);
    free(c);
}

rd_kafka_error_t *fq_w_txn_offsets_start(fq_worker_t *w,
                                         const rd_kafka_topic_partition_list_t *offsets)
{
    fq_txn_offsets_t *c = calloc(1, sizeof(*c));
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(w->rk);
    if (!c || !cgmd) {
        free(c);
        if (cgmd)
            rd_kafka_consumer_group_metadata_destroy(cgmd);
        return rd_kafka_error_new(RD_KAFKA_RESP_ERR__STATE, "send offsets: out of memory");
    }
    c->rkp = w->rkp;
    c->offsets = rd_kafka_topic_partition_list_copy(offsets);
    c->cgmd = cgmd;
    pthread_mutex_init(&c->lock, NULL);
    if (fq_cond_init_mono(&c->cond) != 0 ||
        pthread_create(&c->thread, NULL, offsets_thread, c) != 0) {
        /* no thread: the call on the loop's, as before */
        rd_kafka_error_t *error =
            rd_kafka_send_offsets_to_transaction(w->rkp, c->offsets, c->cgmd, COMMIT_WAIT_MS);
        offsets_free(c);
        return error;
    }
    w->txn_offsets_call = c;
    return NULL;
}

bool fq_w_txn_offsets_wait(fq_worker_t *w, int timeout_ms, rd_kafka_error_t **error)
{
    fq_txn_offsets_t *c = w->txn_offsets_call;
    *error = NULL;
    if (!c)
        return true;
    struct timespec until = fq_time_mono_deadline(timeout_ms);
    pthread_mutex_lock(&c->lock);
    while (!c->done)
        if (pthread_cond_timedwait(&c->cond, &c->lock, &until) == ETIMEDOUT)
            break;
    bool done = c->done;
    pthread_mutex_unlock(&c->lock);
    if (!done)
        return false;
    pthread_join(c->thread, NULL);
    *error = c->error;
    c->error = NULL;
    offsets_free(c);
    w->txn_offsets_call = NULL;
    return true;
}

bool fq_w_txn_offsets_busy(fq_worker_t *w)
{
    fq_txn_offsets_t *c = w->txn_offsets_call;
    if (!c)
        return false;
    pthread_mutex_lock(&c->lock);
    bool done = c->done;
    pthread_mutex_unlock(&c->lock);
    return !done;
}

void fq_w_txn_offsets_end(fq_worker_t *w)
{
    rd_kafka_error_t *error = NULL;
    if (fq_w_txn_offsets_wait(w, 0, &error) && error)
        rd_kafka_error_destroy(error); /* its transaction is over */
}

bool fq_w_txn_offsets_abandon(fq_worker_t *w, int wait_ms)
{
    rd_kafka_error_t *error = NULL;
    if (fq_w_txn_offsets_wait(w, wait_ms, &error)) {
        if (error)
            rd_kafka_error_destroy(error);
        return false;
    }
    FQ_WARN(NULL, "sending the transaction's offsets is still waiting for Kafka: the producer "
                  "and its open transaction are left to the coordinator");
    pthread_detach(w->txn_offsets_call->thread);
    w->txn_offsets_call = NULL; /* the thread's now; the process is on its way out */
    return true;
}
