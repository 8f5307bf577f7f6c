/* frameq group lag: what an autoscaler sees. For every partition of the given topics, the end
 * offset (high watermark, past transaction markers) against the group's committed offset, read
 * from the group coordinator, so it covers partitions held by other workers or by nobody.
 * `consumer --once` exits when this is zero everywhere (DESIGN §6); KEDA scales on the same sum. */
#ifndef FQ_LAG_H
#define FQ_LAG_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "fq_config.h"

/** fq_lag_read: one of the topics does not exist. */
#define FQ_LAG_NO_TOPIC (-2)

typedef struct fq_lag_part {
    const char *topic; /**< points into the caller's topic names */
    int32_t partition;
    int64_t low, end;  /**< watermarks */
    int64_t committed; /**< the group's committed offset; -1 when it never committed */
    int64_t lag;       /**< end − committed (end − low without a commit) */
} fq_lag_part_t;

typedef struct fq_lag {
    fq_lag_part_t *parts;
    size_t count;
    int64_t total;
} fq_lag_t;

/**
 * @brief Reads the lag of rk's consumer group (its group.id) over topics[0..ntopics).
 * rk is a consumer handle; it need not be subscribed. Blocks up to about timeout_ms per
 * request. 0 and *out filled (free with fq_lag_clear); FQ_LAG_NO_TOPIC when the cluster does
 * not know one of the topics, or -1, each with errstr.
 */
int fq_lag_read(rd_kafka_t *rk, const char *const *topics, size_t ntopics, int timeout_ms,
                fq_lag_t *out, char *errstr, size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Frees what fq_lag_read filled; NULL-safe. */
void fq_lag_clear(fq_lag_t *lag);

#endif
