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

#include "fq_lag.h"

#define TIMEOUT_MS 10000

static int usage(void)
{
    fprintf(stderr, "usage: fq_lag [-b BROKERS] [-g GROUP] TOPIC...\n"
                    "  (defaults: KAFKA_BROKERS, KAFKA_GROUP_ID)\n");
    return 2;
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
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr))) {
        fprintf(stderr, "fq_lag: configuration: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "fq_lag: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    /* The worker's --once reads the same numbers through the same function. */
    fq_lag_t lag;
    if (fq_lag_read(rk, (const char *const *)&argv[optind], (size_t)(argc - optind), TIMEOUT_MS,
                    &lag, errstr, sizeof(errstr))) {
        fprintf(stderr, "fq_lag: group %s: %s\n", group, errstr);
        rd_kafka_destroy(rk);
        return 2;
    }
    int lagging = 0;
    for (size_t i = 0; i < lag.count; i++) {
        const fq_lag_part_t *p = &lag.parts[i];
        char committed[32] = "-";
        if (p->committed >= 0)
            snprintf(committed, sizeof(committed), "%" PRId64, p->committed);
        lagging += p->lag != 0;
        printf("%s %" PRId32 " %" PRId64 " %s %" PRId64 "\n", p->topic, p->partition, p->end,
               committed, p->lag);
    }
    if (lagging)
        fprintf(stderr, "fq_lag: group %s lags on %d of %zu partition(s)\n", group, lagging,
                lag.count);
    fq_lag_clear(&lag);
    rd_kafka_destroy(rk);
    return lagging ? 1 : 0;
}
