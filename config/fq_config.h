/* frameq configuration (DESIGN §5).
 *
 * One table of settings, loaded in layers: defaults -> optional file (--config FILE,
 * KEY=VALUE lines, '#' comments) -> environment -> command-line flags (--name-with-dashes VALUE
 * or --name-with-dashes=VALUE, and -X kafka.prop=val). Every later layer overrides the earlier
 * ones. After loading, the fields below are read-only and safe to share between threads.
 *
 * Errors fill the caller's errstr as "WHERE: WHY", where WHERE is the variable name, a flag,
 * or FILE:LINE. Programs exit 2 on any configuration error.
 */
#ifndef FQ_CONFIG_H
#define FQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fq_base.h"

typedef enum fq_frame_mode {
    FQ_FRAME_MODE_FPS = 0,
    FQ_FRAME_MODE_KEYFRAMES,
    FQ_FRAME_MODE_SCENE,
} fq_frame_mode_t;

/** Where a setting's effective value came from (shown by --print-config). */
typedef enum fq_config_origin {
    FQ_ORIGIN_DEFAULT = 0,
    FQ_ORIGIN_DERIVED, /**< computed from another setting (retry topic, worker id, ...) */
    FQ_ORIGIN_FILE,
    FQ_ORIGIN_ENV,
    FQ_ORIGIN_FLAG,
} fq_config_origin_t;

/** A librdkafka property given by KAFKA_CONFIG_<PROP> or -X prop=val. */
typedef struct fq_kafka_prop {
    char *name; /**< librdkafka name, e.g. "security.protocol" */
    char *value;
    fq_config_origin_t origin;
} fq_kafka_prop_t;

/** The effective configuration. Strings are owned by the struct; never NULL unless noted. */
typedef struct fq_config {
    /* Kafka */
    char *kafka_brokers;          /**< KAFKA_BROKERS, "localhost:9092" */
    char *kafka_group_id;         /**< KAFKA_GROUP_ID, "frameq" */
    char *group_protocol;         /**< GROUP_PROTOCOL, classic|consumer (KIP-848) */
    char *kafka_topic;            /**< KAFKA_TOPIC, "extraction.jobs" */
    char *kafka_retry_topic;      /**< KAFKA_RETRY_TOPIC, "<topic>.retry" */
    char *kafka_dlq_topic;        /**< KAFKA_DLQ_TOPIC, "<topic>.dlq" */
    fq_kafka_prop_t *kafka_props; /**< KAFKA_CONFIG_* and -X, in the order given */
    size_t kafka_props_count;

    /* Work shape */
    int max_retries; /**< MAX_RETRIES, 3 (0..100) */
    int batch_size;  /**< BATCH_SIZE, 10 (1..10000) */
    char *job_input; /**< JOB_INPUT, producer input as a JSON array; NULL when unset */

    /* PostgreSQL */
    char *database_url; /**< DATABASE_URL, "postgresql:///frameq" (secret inside is masked) */

    /* Retry backoff */
    int64_t retry_backoff_ms;     /**< RETRY_BACKOFF_MS, 1000 */
    int64_t retry_backoff_max_ms; /**< RETRY_BACKOFF_MAX_MS, 60000 (>= RETRY_BACKOFF_MS) */

    /* Sources and frame store */
    char *source_url_template;   /**< SOURCE_URL_TEMPLATE; NULL when unset */
    char *frames_url_template;   /**< FRAMES_URL_TEMPLATE,
                                    "file://./frames/{platform}/{code}/{index}.jpg" */
    char *s3_endpoint;           /**< S3_ENDPOINT; NULL = AWS (https://s3.<region>.amazonaws.com) */
    char *s3_region;             /**< S3_REGION, "us-east-1" */
    char *aws_access_key_id;     /**< AWS_ACCESS_KEY_ID; NULL when unset */
    char *aws_secret_access_key; /**< AWS_SECRET_ACCESS_KEY; NULL when unset; secret */
    char
        *allowed_source_hosts; /**< ALLOWED_SOURCE_HOSTS, comma list; default the template's host */
    char *allowed_source_schemes; /**< ALLOWED_SOURCE_SCHEMES, "https,http,s3" */

    /* Frame selection and output */
    fq_frame_mode_t frame_mode; /**< FRAME_MODE, fps|keyframes|scene */
    double frame_fps;           /**< FRAME_FPS, 1 (0 < x <= 120) */
    int frame_max_dim;          /**< FRAME_MAX_DIM, 512 (16..8192) */
    int jpeg_quality;           /**< JPEG_QUALITY, 3 (mjpeg qscale 2..31, lower is better) */
    double scene_threshold;     /**< SCENE_THRESHOLD, 0.3 (0 < x <= 1) */

    /* Limits (exceeding one is a permanent failure) */
    int64_t max_video_bytes;    /**< MAX_VIDEO_BYTES, 512 MiB; accepts suffixes K, M, G (KiB...) */
    int64_t max_video_seconds;  /**< MAX_VIDEO_SECONDS, 900 */
    int max_frames;             /**< MAX_FRAMES, 1000 */
    char *allowed_containers;   /**< ALLOWED_CONTAINERS, demuxer names, "mov,mp4,matroska,webm" */
    char *allowed_codecs;       /**< ALLOWED_CODECS, "h264,hevc,vp8,vp9,av1,mpeg4" */
    int64_t max_frame_pixels;   /**< MAX_FRAME_PIXELS, 67108864 (8192x8192) */
    int64_t max_decode_seconds; /**< MAX_DECODE_SECONDS, 300 (wall time of one extraction) */
    int max_packets_without_frame; /**< MAX_PACKETS_WITHOUT_FRAME, 1000 */
    int64_t http_timeout_ms;       /**< HTTP_TIMEOUT_MS, 30000 */

    /* Operation */
    char *metrics_addr;         /**< METRICS_ADDR, "0.0.0.0:9400"; "" or "off" disables */
    char *log_format;           /**< LOG_FORMAT, json|text */
    char *log_level;            /**< LOG_LEVEL, debug|info|warn|error */
    char *worker_id;            /**< WORKER_ID, default the hostname */
    int worker_concurrency;     /**< WORKER_CONCURRENCY, default worker_cores */
    int worker_cores;           /**< WORKER_CORES, default the CPUs of the process's affinity */
    int max_inflight_items;     /**< MAX_INFLIGHT_ITEMS, default 4 x worker_concurrency */
    int64_t max_inflight_bytes; /**< MAX_INFLIGHT_BYTES, 64 MiB */
    int64_t shutdown_grace_ms;  /**< SHUTDOWN_GRACE_MS, 25000 */

    struct fq_config_state *state; /**< private: origins, file name, ... */
} fq_config_t;

/** @brief A configuration holding every default. NULL only on out-of-memory. */
fq_config_t *fq_config_new(void);

/** @brief Frees everything; NULL-safe. */
void fq_config_destroy(fq_config_t *cfg);

/**
 * @brief Loads every layer: the file named by --config (if any), the environment, then the
 * flags in argv. Flags it understands (--config, -X, --<setting>) are removed from argv and
 * *argc is updated; the rest (program flags, positional arguments) stay in order.
 * Then derives the unset defaults (retry/DLQ topic names, allowed hosts, worker id,
 * concurrency) and checks cross-field rules.
 * @return 0 on success, -1 with errstr filled ("WHERE: WHY").
 */
int fq_config_load(fq_config_t *cfg, int *argc, char **argv, char *errstr,
                   size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Loads one KEY=VALUE file (a layer above defaults). 0 or -1 with "FILE:LINE: why". */
int fq_config_load_file(fq_config_t *cfg, const char *path, char *errstr,
                        size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Sets one setting by its variable name (e.g. "MAX_RETRIES") from the given origin.
 *  KAFKA_CONFIG_<PROP> names are accepted too. 0 or -1 with errstr. */
int fq_config_set(fq_config_t *cfg, const char *name, const char *value, fq_config_origin_t origin,
                  char *errstr, size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Where the setting called name (e.g. "DATABASE_URL") got its effective value;
 *  FQ_ORIGIN_DEFAULT for a name that is no setting. */
fq_config_origin_t fq_config_origin(const fq_config_t *cfg, const char *name);

/** @brief Prints every setting as NAME=VALUE  # origin, secrets masked, to out. */
void fq_config_print(const fq_config_t *cfg, FILE *out);

/** @brief Help text for every setting (name, flag, default, meaning), for --help. */
void fq_config_print_help(FILE *out);

/** librdkafka's rd_kafka_conf_t, by its tag: this header includes no librdkafka (a module that
 *  does not link kafka/ cannot reach Kafka through the configuration). */
struct rd_kafka_conf_s;

/**
 * @brief A librdkafka configuration with bootstrap servers and every KAFKA_CONFIG_* / -X
 * property applied. An unknown or invalid property fails with "KAFKA_CONFIG_X: why" or
 * "-X prop: why". Returns NULL on error. Clients are built with fq_kafka_conf (kafka/), which
 * adds the callbacks.
 */
struct rd_kafka_conf_s *fq_config_kafka_conf(const fq_config_t *cfg, char *errstr,
                                             size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Copies s into buf with any password/secret in a URL or conninfo replaced by "****". */
const char *fq_config_mask_secret_url(const char *s, char *buf, size_t buf_size);

/** The placeholders of a URL template (SOURCE_URL_TEMPLATE, FRAMES_URL_TEMPLATE). */
typedef enum fq_url_placeholder {
    FQ_URL_PH_UNKNOWN = -1,
    FQ_URL_PH_PLATFORM = 0,
    FQ_URL_PH_CODE,
    FQ_URL_PH_INDEX, /**< {index}, or {index:0N}: zero-padded to N digits (N = 1..99) */
} fq_url_placeholder_t;

/** The placeholders, as error messages list them. */
#define FQ_URL_PLACEHOLDERS "{platform} {code} {index} {index:0N}"

/** @brief The placeholder named by name[0..n) (between '{' and '}'); *width receives N of
 *  {index:0N}, 0 otherwise. The one reader of the grammar: config checks and fetch expands
 *  with it. */
fq_url_placeholder_t fq_url_template_placeholder(const char *name, size_t n, int *width);

/** @brief Checks a URL template: a known scheme (s3, http, https, file), an s3 bucket and key
 *  or an http host, known placeholders only; {index} required when frames, refused otherwise.
 *  0, or -1 with why (the template quoted with any password masked). */
int fq_url_template_check(const char *tpl, bool frames, char *why, size_t why_size) FQ_WARN_UNUSED;

/** @brief Parses a whole number in min..max as every setting does (no blanks, no suffix);
 *  0, or -1 with why ("\"x\" is not a whole number", "5 is out of range 1..3"). For the
 *  programs' own integer flags. */
int fq_config_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out, char *why,
                          size_t why_size) FQ_WARN_UNUSED;

/** @brief Finds the password in a URI's user:password@ (the last '@' of the authority ends
 *  it): *pw points into url, *len its length (0 for "user:@"). false when there is none. */
bool fq_config_url_password(const char *url, const char **pw, size_t *len);

/** @brief The name of a frame mode ("fps", "keyframes", "scene"). */
const char *fq_frame_mode_name(fq_frame_mode_t mode);

#endif
