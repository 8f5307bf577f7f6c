/* The settings table (config_int.h) and lookups by name and flag.
 *
 * Every setting lives in cfg_params[] below (name, flag, type, field, default, range, secret,
 * help), in the spirit of pgbouncer's bouncer_params[]. Parsing, printing, help and the tests
 * all walk that one table, so a new setting is one line here plus one field in fq_config.h.
 */
#include "config_int.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

static const char *const frame_modes[] = {"fps", "keyframes", "scene", NULL};
static const char *const log_formats[] = {"json", "text", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
const char *const cfg_source_schemes[] = {"https", "http", "s3", "file", NULL};
static const char *const group_protocols[] = {"classic", "consumer", NULL};

#define OFF(field) offsetof(fq_config_t, field)
#define DAY_MS     86400000.0
#define HOUR_MS    3600000.0

/* clang-format off */
const param_t cfg_params[] = {
    {"KAFKA_BROKERS", "--kafka-brokers", P_STRING, OFF(kafka_brokers), "localhost:9092", 0, 0, 0, NULL,
     "Kafka bootstrap servers (host:port,...)"},
    {"KAFKA_GROUP_ID", "--kafka-group-id", P_STRING, OFF(kafka_group_id), "frameq", 0, 0, 0, NULL,
     "consumer group of the workers"},
    {"GROUP_PROTOCOL", "--group-protocol", P_STRING, OFF(group_protocol), "classic", 0, 0, 0,
     group_protocols, "consumer group protocol: classic, or consumer (KIP-848, Kafka >= 4.0)"},
    {"KAFKA_TOPIC", "--kafka-topic", P_STRING, OFF(kafka_topic), "extraction.jobs", 0, 0, 0, NULL,
     "main topic (batch messages)"},
    {"KAFKA_RETRY_TOPIC", "--kafka-retry-topic", P_STRING, OFF(kafka_retry_topic), NULL, 0, 0,
     F_DERIVED, NULL, "retry topic (one item per message); default <KAFKA_TOPIC>.retry"},
    {"KAFKA_DLQ_TOPIC", "--kafka-dlq-topic", P_STRING, OFF(kafka_dlq_topic), NULL, 0, 0,
     F_DERIVED, NULL, "dead-letter topic; default <KAFKA_TOPIC>.dlq"},
    {"MAX_RETRIES", "--max-retries", P_INT, OFF(max_retries), "3", 0, 100, 0, NULL,
     "retries after the first failure before the DLQ"},
    {"BATCH_SIZE", "--batch-size", P_INT, OFF(batch_size), "10", 1, 10000, 0, NULL,
     "items per batch message"},
    {"JOB_INPUT", "--job-input", P_STRING, OFF(job_input), NULL, 0, 0, F_NULLABLE, NULL,
     "producer input as a JSON array (when no FILE is given)"},
    {"DATABASE_URL", "--database-url", P_STRING, OFF(database_url), "postgresql:///frameq", 0, 0,
     F_URL, NULL, "PostgreSQL conninfo or URI"},
    {"RETRY_BACKOFF_MS", "--retry-backoff-ms", P_DURATION, OFF(retry_backoff_ms), "1000", 0,
     DAY_MS, 0, NULL, "first retry delay, doubled per attempt (ms, or with s/m/h)"},
    {"RETRY_BACKOFF_MAX_MS", "--retry-backoff-max-ms", P_DURATION, OFF(retry_backoff_max_ms),
     "60000", 0, DAY_MS, 0, NULL, "retry delay cap, >= RETRY_BACKOFF_MS"},
    {"SOURCE_URL_TEMPLATE", "--source-url-template", P_STRING, OFF(source_url_template), NULL, 0,
     0, F_NULLABLE | F_URL | F_SRC_TPL, NULL,
     "where videos are fetched, e.g. s3://videos/{platform}/{code}.mp4"},
    {"FRAMES_URL_TEMPLATE", "--frames-url-template", P_STRING, OFF(frames_url_template),
     "file://./frames/{platform}/{code}/{index}.jpg", 0, 0, F_URL | F_FRAMES_TPL, NULL,
     "where frames go: s3://, http(s):// (PUT) or file://; needs {index}"},
    {"S3_ENDPOINT", "--s3-endpoint", P_STRING, OFF(s3_endpoint), NULL, 0, 0, F_NULLABLE | F_URL,
     NULL, "S3 endpoint URL; unset = AWS (https://s3.<region>.amazonaws.com)"},
    {"S3_REGION", "--s3-region", P_STRING, OFF(s3_region), "us-east-1", 0, 0, 0, NULL,
     "S3 region used in SigV4 signatures"},
    {"AWS_ACCESS_KEY_ID", "--aws-access-key-id", P_STRING, OFF(aws_access_key_id), NULL, 0, 0,
     F_NULLABLE, NULL, "S3 access key id"},
    {"AWS_SECRET_ACCESS_KEY", "--aws-secret-access-key", P_STRING, OFF(aws_secret_access_key),
     NULL, 0, 0, F_NULLABLE | F_SECRET, NULL, "S3 secret key (masked when printed)"},
    {"ALLOWED_SOURCE_HOSTS", "--allowed-source-hosts", P_STRING, OFF(allowed_source_hosts), NULL,
     0, 0, F_DERIVED | F_HOSTS, NULL,
     "hosts a video_url or redirect may reach; default the source template's host"},
    {"ALLOWED_SOURCE_SCHEMES", "--allowed-source-schemes", P_STRING, OFF(allowed_source_schemes),
     "https,http,s3", 0, 0, F_SCHEMES, NULL, "schemes a source may use (https, http, s3, file)"},
    {"FRAME_MODE", "--frame-mode", P_ENUM, OFF(frame_mode), "fps", 0, 0, 0, frame_modes,
     "frame selection: fps, keyframes or scene"},
    {"FRAME_FPS", "--frame-fps", P_DOUBLE, OFF(frame_fps), "1", 0, 120, F_MIN_OPEN, NULL,
     "frames per second in fps mode"},
    {"FRAME_MAX_DIM", "--frame-max-dim", P_INT, OFF(frame_max_dim), "512", 16, 8192, 0, NULL,
     "longest side of a frame in pixels"},
    {"JPEG_QUALITY", "--jpeg-quality", P_INT, OFF(jpeg_quality), "3", 2, 31, 0, NULL,
     "JPEG qscale, 2 (best) .. 31"},
    {"SCENE_THRESHOLD", "--scene-threshold", P_DOUBLE, OFF(scene_threshold), "0.3", 0, 1,
     F_MIN_OPEN, NULL, "scene-change score that selects a frame in scene mode"},
    {"MAX_VIDEO_BYTES", "--max-video-bytes", P_BYTES, OFF(max_video_bytes), "512M", 1,
     1099511627776.0, 0, NULL, "largest video accepted (bytes, or with K/M/G)"},
    {"MAX_VIDEO_SECONDS", "--max-video-seconds", P_INT64, OFF(max_video_seconds), "900", 1,
     86400, 0, NULL, "longest video accepted, seconds"},
    {"MAX_FRAMES", "--max-frames", P_INT, OFF(max_frames), "1000", 1, 1000000, 0, NULL,
     "most frames extracted from one video"},
    {"ALLOWED_CONTAINERS", "--allowed-containers", P_STRING, OFF(allowed_containers),
     "mov,mp4,matroska,webm", 0, 0, F_NAMES, NULL,
     "FFmpeg demuxers a video may use; others are refused (permanent decode error)"},
    {"ALLOWED_CODECS", "--allowed-codecs", P_STRING, OFF(allowed_codecs),
     "h264,hevc,vp8,vp9,av1,mpeg4", 0, 0, F_NAMES, NULL,
     "video codecs that are decoded; others are refused (permanent decode error)"},
    {"MAX_FRAME_PIXELS", "--max-frame-pixels", P_INT64, OFF(max_frame_pixels), "67108864", 4096,
     1073741824.0, 0, NULL, "largest frame decoded, width x height (default 8192x8192)"},
    {"MAX_DECODE_SECONDS", "--max-decode-seconds", P_INT64, OFF(max_decode_seconds), "300", 1,
     86400, 0, NULL, "wall time one video may take to decode"},
    {"MAX_PACKETS_WITHOUT_FRAME", "--max-packets-without-frame", P_INT,
     OFF(max_packets_without_frame), "1000", 16, 1000000, 0, NULL,
     "video packets in a row that may decode to no frame"},
    {"HTTP_TIMEOUT_MS", "--http-timeout-ms", P_DURATION, OFF(http_timeout_ms), "30000", 1,
     HOUR_MS, 0, NULL, "timeout of one HTTP request (ms, or with s/m/h)"},
    {"METRICS_ADDR", "--metrics-addr", P_STRING, OFF(metrics_addr), "0.0.0.0:9400", 0, 0,
     F_EMPTY_OK | F_ADDR, NULL, "host:port of /metrics, /healthz, /readyz; \"off\" disables"},
    {"LOG_FORMAT", "--log-format", P_STRING, OFF(log_format), "json", 0, 0, 0, log_formats,
     "json or text"},
    {"LOG_LEVEL", "--log-level", P_STRING, OFF(log_level), "info", 0, 0, 0, log_levels,
     "debug, info, warn or error"},
    {"WORKER_ID", "--worker-id", P_STRING, OFF(worker_id), NULL, 0, 0, F_DERIVED, NULL,
     "name of this worker in logs and headers; default the hostname"},
    {"WORKER_CONCURRENCY", "--worker-concurrency", P_INT, OFF(worker_concurrency), NULL, 1, 1024,
     F_DERIVED, NULL, "items processed at once; default WORKER_CORES"},
    {"WORKER_CORES", "--worker-cores", P_INT, OFF(worker_cores), NULL, 1, 1024, F_DERIVED, NULL,
     "cores the decoders share; default the CPUs this process may run on"},
    {"MAX_INFLIGHT_ITEMS", "--max-inflight-items", P_INT, OFF(max_inflight_items), NULL, 1,
     1000000, F_DERIVED, NULL,
     "unfinished items of started messages before no new one starts; default 4 x concurrency"},
    {"MAX_INFLIGHT_BYTES", "--max-inflight-bytes", P_BYTES, OFF(max_inflight_bytes), "64M", 1,
     1099511627776.0, 0, NULL, "bytes of messages held in flight (K/M/G suffixes)"},
    {"SHUTDOWN_GRACE_MS", "--shutdown-grace-ms", P_DURATION, OFF(shutdown_grace_ms), "25000", 0,
     HOUR_MS, 0, NULL, "time to finish the current item on SIGTERM (ms, or with s/m/h)"},
};

const size_t cfg_n_params = sizeof(cfg_params) / sizeof(cfg_params[0]);

const param_t *cfg_param_by_name(const char *name)
{
    for (size_t i = 0; i < cfg_n_params; i++)
        if (strcmp(cfg_params[i].name, name) == 0)
            return &cfg_params[i];
    return NULL;
}

const param_t *cfg_param_by_flag(const char *flag, size_t len)
{
    for (size_t i = 0; i < cfg_n_params; i++)
        if (strlen(cfg_params[i].flag) == len && strncmp(cfg_params[i].flag, flag, len) == 0)
            return &cfg_params[i];
    return NULL;
}

size_t cfg_param_index(const param_t *p)
{
    return (size_t)(p - cfg_params);
}

/* Levenshtein distance, for "did you mean". Names are short, so a row on the stack is fine. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (lb >= 64)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost =
                toupper((unsigned char)a[i - 1]) == toupper((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *cfg_closest_name(const char *name)
{
    const char *best = NULL;
    size_t best_d = 4; /* farther than 3 edits is not a typo */
    for (size_t i = 0; i < cfg_n_params; i++) {
        size_t d = edit_distance(name, cfg_params[i].name);
        if (d < best_d) {
            best_d = d;
            best = cfg_params[i].name;
        }
    }
    return best;
}

const char *fq_frame_mode_name(fq_frame_mode_t mode)
{
    if ((int)mode < 0 || (size_t)mode >= sizeof(frame_modes) / sizeof(frame_modes[0]) - 1)
        return "unknown";
    return frame_modes[mode];
}
