/* The worker's assignment: rebalances, pause/resume, seeks and the asynchronous offset commits
 * of settled messages. The offset rules themselves are in parts.c; this file applies them to
 * librdkafka. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fq_kafka.h"
#include "fq_log.h"
#include "worker_int.h"

fq_part_t *fq_w_part(fq_worker_t *w, const char *topic, int32_t partition)
{
    return fq_parts_find(&w->parts, topic, partition);
}

bool fq_w_part_busy(const fq_worker_t *w, const char *topic, int32_t partition)
{
    if (fq_w_held_in(w, topic, partition))
        return true;
    for (size_t i = 0; i < w->nwin; i++)
        if (w->win[i]->partition == partition && strcmp(w->win[i]->topic, topic) == 0)
            return true;
    return false;
}

/* Issues a seek without waiting for it: the partition table drops whatever the consumer still
 * delivers from before it (fq_part_take), so a seek that lands late cannot rewind or skip, and
 * a rebalance cannot block the loop in a seek. */
void fq_w_seek(fq_worker_t *w, const char *topic, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
    rd_kafka_error_t *error = rd_kafka_seek_partitions(w->rk, list, 0);
    if (error) {
        FQ_WARN(NULL, "seek %s [%d] to %" PRId64 ": %s", topic, (int)partition, offset,
                rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    rd_kafka_topic_partition_list_destroy(list);
}

/* Makes the partition deliver offset next: every message of it from there on is abandoned
 * (left to finish, never committed) and read again. Nothing happens for a partition that is no
 * longer ours: its new owner starts at the committed offset, at or before this one. */
void fq_w_rewind(fq_worker_t *w, const char *topic, int32_t partition, int64_t offset)
{
    fq_w_abandon(w, topic, partition, offset, NULL);
    fq_part_t *p = fq_w_part(w, topic, partition);
    if (!p)
        return;
    fq_part_rewind(p, offset, fq_time_mono_ms());
    fq_w_seek(w, topic, partition, p->expect); /* a lower rewind on its way wins */
}

/* librdkafka does not wake the broker thread on resume (2.0.2 and 2.14.2 measured): a resumed
 * partition waits for the thread's next timed wake-up (up to 1 s) before it is fetched again, which
 * would add up to a second per message and to every retry's start. A seek to the offset the loop
 * wants next wakes it; anything delivered twice because of it is dropped as a repeat. */
static void wake_fetcher(fq_worker_t *w, const rd_kafka_topic_partition_list_t *resumed)
{
    for (int i = 0; i < resumed->cnt; i++) {
        const fq_part_t *p = fq_w_part(w, resumed->elems[i].topic, resumed->elems[i].partition);
        if (p && p->next >= 0)
            fq_w_seek(w, p->topic, p->partition, p->expect >= 0 ? p->expect : p->next);
    }
}

/* Pauses or resumes every assigned partition to match what the loop needs now: all paused while
 * HELD_MAX messages are held for want of room (so nothing more is buffered, and the fetch of them
 * overlapped the work), during an outage, at shutdown and while a fatal error is handled;
 * otherwise only partitions holding too many retries that are not due yet, until one is. */
void fq_w_apply_pause(fq_worker_t *w)
{
    int64_t now = fq_time_now_ms();
    bool all = w->nheld >= HELD_MAX || w->outage || w->stopping || w->fatal;
    rd_kafka_topic_partition_list_t *pause = NULL, *resume = NULL;
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        if (p->due_ms && p->due_ms <= now) {
            FQ_DEBUG(NULL, "retry partition %s [%d] due", p->topic, (int)p->partition);
            p->due_ms = 0;
        }
        bool want = all || p->due_ms != 0;
        if (want == p->paused)
            continue;
        rd_kafka_topic_partition_list_t **list = want ? &pause : &resume;
        if (!*list)
            *list = rd_kafka_topic_partition_list_new((int)w->parts.n);
        rd_kafka_topic_partition_list_add(*list, p->topic, p->partition);
        p->paused = want;
    }
    if (pause) {
        rd_kafka_pause_partitions(w->rk, pause);
        rd_kafka_topic_partition_list_destroy(pause);
    }
    if (resume) {
        rd_kafka_resume_partitions(w->rk, resume);
        wake_fetcher(w, resume);
        rd_kafka_topic_partition_list_destroy(resume);
    }
}

/* Answers of offset commits (asynchronous ones on commitq, and the synchronous commit of
 * revoked partitions). */
void fq_w_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                    rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    fq_worker_t *w = opaque;
    int64_t now = fq_time_mono_ms();
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        rd_kafka_resp_err_t e = err ? err : tp->err;
        fq_part_t *p = fq_w_part(w, tp->topic, tp->partition);
        if (e)
            FQ_WARN(NULL, "commit %s [%d] @%" PRId64 ": %s%s", tp->topic, (int)tp->partition,
                    tp->offset, rd_kafka_err2str(e), p ? ": will commit again" : "");
        if (p)
            fq_part_committed(p, tp->offset, !e, now);
    }
}

/* Collects the offsets owed to the group for the partitions in only (NULL: every one); NULL
 * when none. final: the partitions are being handed over (fq_part_final_target). */
static rd_kafka_topic_partition_list_t *
owed_offsets(fq_worker_t *w, const rd_kafka_topic_partition_list_t *only, bool final)
{
    int64_t now = fq_time_mono_ms();
    rd_kafka_topic_partition_list_t *list = NULL;
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        if (only && !rd_kafka_topic_partition_list_find(only, p->topic, p->partition))
            continue;
        bool idle = !fq_w_part_busy(w, p->topic, p->partition);
        int64_t target =
            final ? fq_part_final_target(p, idle) : fq_part_commit_target(p, idle, now);
        if (target < 0)
            continue;
        if (!list)
            list = rd_kafka_topic_partition_list_new(4);
        rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset = target;
        p->pending++;
    }
    return list;
}

/* Sends what is owed without waiting: settled prefixes, and end offsets past transaction
 * markers for partitions read to their end. */
void fq_w_commit_owed(fq_worker_t *w)
{
    rd_kafka_queue_poll_callback(w->commitq, 0);
    rd_kafka_topic_partition_list_t *list = owed_offsets(w, NULL, false);
    if (!list)
        return;
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(w->rk, list, w->commitq, fq_w_commit_cb, w);
    if (err) /* not sent: answer it ourselves so the partitions try again */
        fq_w_commit_cb(w->rk, err, list, w);
    rd_kafka_topic_partition_list_destroy(list);
}

static void wait_commits(fq_worker_t *w, int64_t until)
{
    for (size_t i = 0; i < w->parts.n && fq_time_mono_ms() < until; i++)
        while (w->parts.v[i].pending && fq_time_mono_ms() < until)
            rd_kafka_queue_poll_callback(w->commitq, 50);
}

void fq_w_commit_last(fq_worker_t *w, int wait_ms)
{
    int64_t until = fq_time_mono_ms() + wait_ms;
    wait_commits(w, until);
    for (size_t i = 0; i < w->parts.n; i++)
        w->parts.v[i].pace_mono = 0;
    fq_w_commit_owed(w);
    wait_commits(w, until);
}

/* Issues again a rewind that has not landed after RESEEK_MS: an asynchronous seek can be lost
 * (a broker restart, a rebalance), and a partition at its end would then deliver nothing that
 * could show it (the stale-message check when taking covers the other case). */
void fq_w_reseek_lost(fq_worker_t *w)
{
    int64_t now = fq_time_mono_ms();
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        if (p->expect < 0 || p->paused || now - p->seek_mono < RESEEK_MS)
            continue;
        FQ_DEBUG(NULL, "%s [%d]: rewind to %" PRId64 " not landed yet: seeking again", p->topic,
                 (int)p->partition, p->expect);
        p->seek_mono = now;
        fq_w_seek(w, p->topic, p->partition, p->expect);
    }
}

/* Gives librdkafka the partitions (add) or takes them back, as the group's protocol wants:
 * incrementally (cooperative), or the whole assignment at once (eager). */
static void set_assignment(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts, bool cooperative,
                           bool add)
{
    const char *what = add ? "assign" : "unassign";
    if (!cooperative) {
        rd_kafka_resp_err_t err = rd_kafka_assign(rk, add ? parts : NULL);
        if (err)
            FQ_ERROR(NULL, "%s: %s", what, rd_kafka_err2str(err));
        return;
    }
    rd_kafka_error_t *error =
        add ? rd_kafka_incremental_assign(rk, parts) : rd_kafka_incremental_unassign(rk, parts);
    if (error) {
        FQ_ERROR(NULL, "incremental %s: %s", what, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

static void assign(fq_worker_t *w, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                   bool cooperative)
{
    for (int i = 0; i < parts->cnt; i++)
        if (!fq_parts_add(&w->parts, parts->elems[i].topic, parts->elems[i].partition))
            FQ_ERROR(NULL, "out of memory tracking partition %s [%d]", parts->elems[i].topic,
                     (int)parts->elems[i].partition);
    set_assignment(rk, parts, cooperative, true);
    /* A partition we paused, lost and got back may still carry librdkafka's pause flag: start
     * every new one from "not paused", then pause what needs it. */
    rd_kafka_resume_partitions(rk, parts);
    FQ_INFO(NULL, "assigned %d partition(s), %zu in total", parts->cnt, w->parts.n);
    fq_w_apply_pause(w);
}

void fq_w_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                       rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    fq_worker_t *w = ((fq_kafka_events_t *)opaque)->user;
    /* NULL once the group is shutting down (the revoke of a close): the last one known. */
    const char *protocol = rd_kafka_rebalance_protocol(rk);
    if (protocol)
        w->cooperative = strcmp(protocol, "COOPERATIVE") == 0;
    bool cooperative = w->cooperative;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assign(w, rk, parts, cooperative);
        return;
    }

    /* Revoked or lost: the messages of such a partition in the window are abandoned and
     * cancelled; the new owner replays them (idempotent: done items are skipped). What is
     * settled is committed first, so the new owner starts after it (not when lost: the
     * generation is gone and the commit would be refused). Decided messages whose retry/DLQ
     * messages are not published yet are replayed too: publishing them now would need a
     * transaction inside the rebalance. */
    bool lost = rd_kafka_assignment_lost(rk);
    if (!lost)
        fq_w_commit_settled(w, false);
    for (int i = 0; i < parts->cnt; i++) {
        const char *topic = parts->elems[i].topic;
        int32_t partition = parts->elems[i].partition;
        size_t before = w->nwin;
        fq_w_abandon(w, topic, partition, 0,
                     lost ? "with its lost partition" : "with its revoked partition");
        fq_w_drop_held_of(w, topic, partition, 0); /* never started: the new owner reads them */
        if (before)
            FQ_DEBUG(NULL, "partition %s [%d] revoked: its messages in the window abandoned", topic,
                     (int)partition);
    }
    if (!lost) {
        rd_kafka_queue_poll_callback(w->commitq, 0);
        rd_kafka_topic_partition_list_t *owed = owed_offsets(w, parts, true);
        if (owed) {
            rd_kafka_resp_err_t cerr = rd_kafka_commit_queue(rk, owed, NULL, fq_w_commit_cb, w);
            if (cerr)
                FQ_WARN(NULL, "commit of revoked partitions: %s", rd_kafka_err2str(cerr));
            rd_kafka_topic_partition_list_destroy(owed);
        }
    }
    for (int i = 0; i < parts->cnt; i++) {
        fq_parts_remove(&w->parts, parts->elems[i].topic, parts->elems[i].partition);
        /* Its lag is its new owner's to report: a stale value here would outlive it. */
        char num[16];
        snprintf(num, sizeof(num), "%d", (int)parts->elems[i].partition);
        if (w->metrics)
            fq_metrics_remove(w->metrics, "frameq_consumer_lag", "topic", parts->elems[i].topic,
                              "partition", num, NULL);
    }
    set_assignment(rk, parts, cooperative, false);
    FQ_INFO(NULL, "revoked %d partition(s)%s, %zu left", parts->cnt, lost ? " (lost)" : "",
            w->parts.n);
    fq_w_apply_pause(w); /* held messages may be gone */
}
