#include "fq_lag.h"

#include "fq_kafka.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds every partition of topic (from the cluster's metadata) to list. 0, FQ_LAG_NO_TOPIC or
 * -1. */
static int add_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms,
                          rd_kafka_topic_partition_list_t *list, char *errstr, size_t errstr_size)
{
    const struct rd_kafka_metadata *md;
    char why[512];
    int rc = fq_kafka_topic_metadata(rk, topic, timeout_ms, &md, why, sizeof(why));
    if (rc) {
        snprintf(errstr, errstr_size, "metadata of %s", why);
        return rc == FQ_KAFKA_NO_TOPIC ? FQ_LAG_NO_TOPIC : -1;
    }
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(list, topic, md->topics[0].partitions[i].id);
    rd_kafka_metadata_destroy(md);
    return 0;
}

int fq_lag_read(rd_kafka_t *rk, const char *const *topics, size_t ntopics, int timeout_ms,
                fq_lag_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    int rc = -1;
    for (size_t t = 0; t < ntopics; t++) {
        int arc = add_partitions(rk, topics[t], timeout_ms, list, errstr, errstr_size);
        if (arc) {
            rc = arc;
            goto done;
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_committed(rk, list, timeout_ms);
    if (err) {
        snprintf(errstr, errstr_size, "committed offsets: %s", rd_kafka_err2str(err));
        goto done;
    }
    out->parts = calloc((size_t)(list->cnt ? list->cnt : 1), sizeof(*out->parts));
    if (!out->parts) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &list->elems[i];
        if (tp->err) {
            snprintf(errstr, errstr_size, "committed offset of %s [%d]: %s", tp->topic,
                     (int)tp->partition, rd_kafka_err2str(tp->err));
            goto done;
        }
        fq_lag_part_t *lp = &out->parts[out->count];
        for (size_t t = 0; t < ntopics; t++)
            if (strcmp(topics[t], tp->topic) == 0)
                lp->topic = topics[t];
        lp->partition = tp->partition;
        err = rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lp->low, &lp->end,
                                               timeout_ms);
        if (err) {
            snprintf(errstr, errstr_size, "end offset of %s [%d]: %s", tp->topic,
                     (int)tp->partition, rd_kafka_err2str(err));
            goto done;
        }
        lp->committed = tp->offset >= 0 ? tp->offset : -1;
        lp->lag = lp->end - (lp->committed >= 0 ? lp->committed : lp->low);
        if (lp->lag < 0)
            lp->lag = 0;
        out->total += lp->lag;
        out->count++;
    }
    rc = 0;
done:
    rd_kafka_topic_partition_list_destroy(list);
    if (rc)
        fq_lag_clear(out);
    return rc;
}

void fq_lag_clear(fq_lag_t *lag)
{
    if (!lag)
        return;
    free(lag->parts);
    memset(lag, 0, sizeof(*lag));
}
