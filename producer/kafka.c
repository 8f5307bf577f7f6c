/* The producer's Kafka configuration: the user's settings first (fq_config), then each
 * command's own properties, which yield to a property the user set unless forced. */
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "fq_cli.h"
#include "fq_log.h"

volatile sig_atomic_t fq_cli_stop;

/* True when the user set this librdkafka property (KAFKA_CONFIG_* or -X): ours yield. */
static bool user_set(const fq_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->kafka_props_count; i++)
        if (strcmp(cfg->kafka_props[i].name, name) == 0)
            return true;
    return false;
}

int fq_cli_conf_set(rd_kafka_conf_t *conf, const fq_config_t *cfg, bool force, const char *name,
                    const char *value)
{
    char errstr[256];
    if (!force && user_set(cfg, name))
        return 0;
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "producer: %s=%s: %s\n", name, value, errstr);
        return -1;
    }
    return 0;
}

/* librdkafka's own log lines become JSON log lines like every other diagnostic. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    fq_log(level <= 4   ? FQ_LOG_WARN
           : level <= 6 ? FQ_LOG_INFO
                        : FQ_LOG_DEBUG,
           NULL, "kafka %s: %s", fac, buf);
}

rd_kafka_conf_t *fq_cli_kafka_conf(const fq_config_t *cfg)
{
    char errstr[512];
    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, errstr, sizeof(errstr));
    if (!conf) {
        fprintf(stderr, "producer: %s\n", errstr);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    return conf;
}

rd_kafka_t *fq_cli_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf)
{
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "producer: kafka: %s\n", errstr);
    }
    return rk;
}
