/* fq_lag — a consumer group's lag per partition, computed the way KEDA's Kafka scaler does:
 * the partition's end offset minus the group's committed offset.
 *
 *   fq_lag [-b BROKERS] [-g GROUP] TOPIC...
 *
 * BROKERS and GROUP default to KAFKA_BROKERS and KAFKA_GROUP_ID. The end offset is the last
 * stable offset (the handle reads with isolation.level=read_committed), so an open transaction
 * does not count; a finished one's control record does (DESIGN §3: a drained partition's
 * committed offset is past it). A partition without a committed offset counts from its low
 * watermark (the consumers start at the earliest offset), shown as committed "-".
 *
 * stdout: one line per partition, "topic partition end committed lag".
 * Exit 0 when every lag is 0, 1 when some partition lags, 2 on usage or Kafka errors.
 * The tool never joins the group: it only reads the group's committed offsets. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define TIMEOUT_MS 10000

static int usage(void)
{
    fprintf(stderr, "usage: fq_lag [-b BROKERS] [-g GROUP] TOPIC...\n"
                    "  (defaults: KAFKA_BROKERS, KAFKA_GROUP_ID)\n");
    return 2;
}

/* Adds every partition of TOPIC to LIST; returns the number added or -1. */
static int add_partitions(rd_kafka_t *rk, const char *topic, rd_kafka_topic_partition_list_t *list)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) {
        fprintf(stderr, "fq_lag: topic %s: %s\n", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, TIMEOUT_MS);
    if (err) {
        fprintf(stderr, "fq_lag: metadata of %s: %s\n", topic, rd_kafka_err2str(err));
        goto done;
    }
    if (md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "fq_lag: metadata of %s: %s\n", topic,
                md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err) : "topic missing");
        goto done;
    }
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(list, topic, md->topics[0].partitions[i].id);
    n = md->topics[0].partition_cnt;
done:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

int main(int argc, char **argv)
{
    const char *brokers = getenv("KAFKA_BROKERS");
    const char *group = getenv("KAFKA_GROUP_ID");
    int opt;
    while ((opt = getopt(argc, argv, "b:g:h")) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        default:
            return usage();
        }
    }
    if (!brokers || !*brokers || !group || !*group || optind >= argc)
        return usage();

    char errstr[512];
    int rc = 2;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *list = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr))) {
        fprintf(stderr, "fq_lag: configuration: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto done;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "fq_lag: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto done;
    }
    conf = NULL; /* now owned by rk */

    list = rd_kafka_topic_partition_list_new(16);
    for (int i = optind; i < argc; i++)
        if (add_partitions(rk, argv[i], list) < 0)
            goto done;

    rd_kafka_resp_err_t err = rd_kafka_committed(rk, list, TIMEOUT_MS);
    if (err) {
        fprintf(stderr, "fq_lag: committed offsets of group %s: %s\n", group,
                rd_kafka_err2str(err));
        goto done;
    }
    int lagging = 0;
    for (int i = 0; i < list->cnt; i++) {
        rd_kafka_topic_partition_t *p = &list->elems[i];
        if (p->err) {
            fprintf(stderr, "fq_lag: committed offset of %s [%" PRId32 "]: %s\n", p->topic,
                    p->partition, rd_kafka_err2str(p->err));
            goto done;
        }
        int64_t lo = 0, hi = 0;
        err = rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi, TIMEOUT_MS);
        if (err) {
            fprintf(stderr, "fq_lag: end offset of %s [%" PRId32 "]: %s\n", p->topic, p->partition,
                    rd_kafka_err2str(err));
            goto done;
        }
        char committed[32] = "-";
        int64_t from = lo;
        if (p->offset >= 0) {
            snprintf(committed, sizeof(committed), "%" PRId64, p->offset);
            from = p->offset;
        }
        int64_t lag = hi - from;
        if (lag != 0)
            lagging++;
        printf("%s %" PRId32 " %" PRId64 " %s %" PRId64 "\n", p->topic, p->partition, hi, committed,
               lag);
    }
    rc = lagging ? 1 : 0;
    if (lagging)
        fprintf(stderr, "fq_lag: group %s lags on %d of %d partition(s)\n", group, lagging,
                list->cnt);
done:
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}
