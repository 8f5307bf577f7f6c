/* frameq partition table: what the consume loop knows of each partition assigned to it — where
 * it wants to read next, whether a rewind is still on its way, how far it may commit, and what
 * the group coordinator has confirmed. The offsets rules live here so the loop reads as policy:
 *
 *  - a message is taken only at the offset the loop wants (after a rewind: exactly that offset;
 *    otherwise never one it already took), so a seek that lands late never replays or skips;
 *  - every message taken stays "in flight" until it settles (its outcome is durable), in any
 *    order: several messages of one partition run at once and finish out of order;
 *  - the offset to commit ("want") only grows, and only to the lowest offset still in flight
 *    (the contiguous settled prefix, as Confluent's Parallel Consumer commits); at the end of a
 *    partition it moves past transaction markers to the end offset, so `end − committed` reads 0
 *    for a drained partition (DESIGN §3). */
#ifndef FQ_PARTS_H
#define FQ_PARTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fq_config.h"

typedef struct fq_part {
    char *topic;
    int32_t partition;
    bool paused;        /**< as last applied to librdkafka */
    int64_t due_ms;     /**< retry topic: paused until this epoch ms; 0 = not waiting */
    int64_t next;       /**< offset wanted next (after the last one taken); -1 = none taken */
    int64_t expect;     /**< a rewind to this offset is on its way; -1 = none */
    int64_t seek_mono;  /**< when that rewind was (re)issued */
    int64_t eof_at;     /**< end offset reported with nothing taken since; -1 = unknown */
    int64_t want;       /**< highest offset that may be committed; -1 = none */
    int64_t committed;  /**< highest offset the coordinator confirmed from us; -1 = none */
    int pending;        /**< asynchronous commits not answered yet */
    bool in_txn;        /**< its offset rides in the open transaction (no plain commit) */
    int64_t retry_mono; /**< a failed commit is retried from then on */
    int64_t pace_mono;  /**< after a confirmed commit, the next is not sent before then */
    int64_t *inflight;  /**< offsets taken and not settled, ascending */
    size_t ninflight, capinflight;
} fq_part_t;

typedef struct fq_parts {
    fq_part_t *v;
    size_t n, cap;
} fq_parts_t;

/** What to do with a message the consumer delivered. */
typedef enum fq_take {
    FQ_TAKE = 0,    /**< the offset the loop wants: run it */
    FQ_TAKE_STALE,  /**< delivered before a rewind landed: drop it */
    FQ_TAKE_REPEAT, /**< already taken (a seek re-delivered it): drop it */
    FQ_TAKE_NOMEM,  /**< the offset could not be tracked: rewind to it */
} fq_take_t;

fq_part_t *fq_parts_find(fq_parts_t *t, const char *topic, int32_t partition);
/** @brief Adds the partition (fresh state) unless present; NULL when out of memory. */
fq_part_t *fq_parts_add(fq_parts_t *t, const char *topic, int32_t partition) FQ_WARN_UNUSED;
void fq_parts_remove(fq_parts_t *t, const char *topic, int32_t partition);
void fq_parts_clear(fq_parts_t *t);

/** @brief Judges a delivered message at offset; on FQ_TAKE the partition moves past it and
 *  the offset is in flight until fq_part_settle. */
fq_take_t fq_part_take(fq_part_t *p, int64_t offset);

/** @brief A rewind: the next message must be the one at offset; the offsets in flight from
 *  there on are forgotten (they will be taken again). A rewind above one already on its way
 *  changes nothing: the lower one replays it too. */
void fq_part_rewind(fq_part_t *p, int64_t offset, int64_t now_mono);

/** @brief The message at offset has a durable outcome: "want" moves up to the lowest offset
 *  still in flight (or past everything taken). Unknown offsets are ignored. */
void fq_part_settle(fq_part_t *p, int64_t offset);

/** @brief The offset to commit once every in-flight offset up to and including upto settles:
 *  the next one in flight above it, else the one after the last taken; the end offset when the
 *  partition would then be idle and read to its end (skips transaction markers). */
int64_t fq_part_target_after(const fq_part_t *p, int64_t upto, bool idle);

/** @brief The consumer reached the end of the partition at offset (ignored while a rewind
 *  is on its way: that report may predate it). */
void fq_part_eof(fq_part_t *p, int64_t offset);

/**
 * @brief The offset to commit now, or -1 when nothing is owed. A known end offset is committed
 * (it only skips transaction markers and aborted records) when nothing taken from the partition
 * is in flight and the caller says it is idle (no message of it running, even abandoned).
 * One commit per partition at a time, and at most one every FQ_COMMIT_PACE_MS: a worker
 * settling a hundred one-item retry messages a second would otherwise send as many commits,
 * and the broker's work for them costs more than the items (a crash replays at most that
 * much more; replayed items that are done are skipped).
 */
int64_t fq_part_commit_target(const fq_part_t *p, bool idle, int64_t now_mono);
#define FQ_COMMIT_PACE_MS 100

/** @brief As fq_part_commit_target, for a partition about to be handed over: whatever is owed,
 *  without waiting for pending answers or a retry delay (an unanswered commit may be refused).
 *  Neither sends anything while the partition's offset rides in the open transaction: Kafka
 *  keeps the offset commit it appended last, and a plain commit of the lower settled prefix
 *  appended after the transaction's would replace it when the transaction commits. */
int64_t fq_part_final_target(const fq_part_t *p, bool idle);

/** @brief The coordinator answered a commit of offset (ok or not). */
void fq_part_committed(fq_part_t *p, int64_t offset, bool ok, int64_t now_mono);

#endif
