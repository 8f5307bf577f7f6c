/* frameq partition table: what the consume loop knows of each partition assigned to it — where
 * it wants to read next, whether a rewind is still on its way, how far it may commit, and what
 * the group coordinator has confirmed. The offsets rules live here so the loop reads as policy:
 *
 *  - a message is taken only at the offset the loop wants (after a rewind: exactly that offset;
 *    otherwise never one it already took), so a seek that lands late never replays or skips;
 *  - the offset to commit ("want") only grows, and only to offsets below which everything is
 *    durable; at the end of a partition it moves past transaction markers to the end offset,
 *    so `end − committed` reads 0 for a drained partition (DESIGN §3). */
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
    int64_t retry_mono; /**< a failed commit is retried from then on */
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
} fq_take_t;

fq_part_t *fq_parts_find(fq_parts_t *t, const char *topic, int32_t partition);
/** @brief Adds the partition (fresh state) unless present; NULL when out of memory. */
fq_part_t *fq_parts_add(fq_parts_t *t, const char *topic, int32_t partition) FQ_WARN_UNUSED;
void fq_parts_remove(fq_parts_t *t, const char *topic, int32_t partition);
void fq_parts_clear(fq_parts_t *t);

/** @brief Judges a delivered message at offset; on FQ_TAKE the partition moves past it. */
fq_take_t fq_part_take(fq_part_t *p, int64_t offset);

/** @brief A rewind: the next message must be the one at offset. */
void fq_part_rewind(fq_part_t *p, int64_t offset, int64_t now_mono);

/** @brief The consumer reached the end of the partition at offset (ignored while a rewind
 *  is on its way: that report may predate it). */
void fq_part_eof(fq_part_t *p, int64_t offset);

/** @brief Everything below offset is durable: may be committed. */
void fq_part_durable(fq_part_t *p, int64_t offset);

/**
 * @brief The offset to commit now, or -1 when nothing is owed. A known end offset is committed
 * (it only skips transaction markers and aborted records) when the partition is idle (no message
 * of it in flight or held) and every message taken from it is durable.
 */
int64_t fq_part_commit_target(const fq_part_t *p, bool idle, int64_t now_mono);

/** @brief As fq_part_commit_target, for a partition about to be handed over: whatever is owed,
 *  without waiting for pending answers or a retry delay (an unanswered commit may be refused). */
int64_t fq_part_final_target(const fq_part_t *p, bool idle);

/** @brief The coordinator answered a commit of offset (ok or not). */
void fq_part_committed(fq_part_t *p, int64_t offset, bool ok, int64_t now_mono);

#endif
