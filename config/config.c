/* frameq configuration: one table of settings, loaded in layers (DESIGN §5).
 *
 * Every setting lives in params[] below (name, flag, type, field, default, range, secret, help),
 * in the spirit of pgbouncer's bouncer_params[]. Parsing, printing, help and the tests all walk
 * that one table, so a new setting is one line here plus one field in fq_config.h.
 */
#include "fq_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

extern char **environ;

/* CMakeLists.txt checks the version of the library it links; this checks the header compiled
 * against (Debian 12's /usr/include holds 2.0.2). GROUP_PROTOCOL=consumer needs 2.12. */
#if RD_KAFKA_VERSION < 0x020c0000
#error "librdkafka >= 2.12 required: build it with deploy/local/librdkafka (README)"
#endif

#define KAFKA_ENV_PREFIX "KAFKA_CONFIG_"

typedef enum param_type {
    P_STRING = 0,
    P_INT,      /* int field */
    P_INT64,    /* int64_t field */
    P_DOUBLE,   /* double field */
    P_BYTES,    /* int64_t field; plain bytes or K/M/G (binary) suffix */
    P_ENUM,     /* int-sized enum field; value is the index in choices */
    P_DURATION, /* int64_t milliseconds; plain ms or ms/s/m/h suffix */
} param_type_t;

enum {
    F_SECRET = 1 << 0,     /* never printed */
    F_NULLABLE = 1 << 1,   /* NULL when unset; an empty value unsets it */
    F_DERIVED = 1 << 2,    /* unset means computed from other settings; empty value unsets it */
    F_URL = 1 << 3,        /* may embed user:password@, masked when printed */
    F_MIN_OPEN = 1 << 4,   /* P_DOUBLE: the minimum itself is excluded (x > min) */
    F_EMPTY_OK = 1 << 5,   /* P_STRING: "" is a meaningful value */
    F_SRC_TPL = 1 << 6,    /* checked as SOURCE_URL_TEMPLATE */
    F_FRAMES_TPL = 1 << 7, /* checked as FRAMES_URL_TEMPLATE */
    F_SCHEMES = 1 << 8,    /* comma list of allowed source schemes */
    F_HOSTS = 1 << 9,      /* comma list of host names */
    F_ADDR = 1 << 10,      /* host:port, "" or "off" */
    F_NAMES = 1 << 11,     /* comma list of FFmpeg names ([a-z0-9_-]), lowercased */
};

typedef struct param {
    const char *name; /* environment variable and file key */
    const char *flag; /* command-line flag */
    param_type_t type;
    size_t offset;   /* of the field in fq_config_t */
    const char *def; /* default as text, parsed like any other value; NULL = unset/derived */
    double min, max; /* numeric range (doubles hold every int64 range used here exactly) */
    unsigned flags;
    const char *const *choices; /* P_ENUM and enumerated P_STRING: NULL-terminated */
    const char *help;
} param_t;

static const char *const frame_modes[] = {"fps", "keyframes", "scene", NULL};
static const char *const log_formats[] = {"json", "text", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const source_schemes[] = {"https", "http", "s3", "file", NULL};
static const char *const group_protocols[] = {"classic", "consumer", NULL};

#define OFF(field) offsetof(fq_config_t, field)
#define DAY_MS     86400000.0
#define HOUR_MS    3600000.0

/* clang-format off */
static const param_t params[] = {
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
/* clang-format on */

#define N_PARAMS (sizeof(params) / sizeof(params[0]))

struct fq_config_state {
    fq_config_origin_t origin[N_PARAMS];
    char *where[N_PARAMS]; /* file:line or flag that set it; NULL for default/derived/env */
    char **prop_where;     /* parallel to kafka_props: "KAFKA_CONFIG_X", "-X x", "f.conf:3" */
};

static bool kafka_prop_secret(const char *name);

static const char *const origin_names[] = {"default", "derived", "file", "env", "flag"};

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                                */

FQ_PRINTF(3, 4) static int fail(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static char **str_field(fq_config_t *cfg, const param_t *p)
{
    return (char **)((char *)cfg + p->offset);
}

static const char *str_value(const fq_config_t *cfg, const param_t *p)
{
    return *(char *const *)((const char *)cfg + p->offset);
}

static const param_t *param_by_name(const char *name)
{
    for (size_t i = 0; i < N_PARAMS; i++)
        if (strcmp(params[i].name, name) == 0)
            return &params[i];
    return NULL;
}

static const param_t *param_by_flag(const char *flag, size_t len)
{
    for (size_t i = 0; i < N_PARAMS; i++)
        if (strlen(params[i].flag) == len && strncmp(params[i].flag, flag, len) == 0)
            return &params[i];
    return NULL;
}

static size_t param_index(const param_t *p)
{
    return (size_t)(p - params);
}

/* A copy of s without surrounding whitespace. */
static char *trimmed_dup(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return strndup(s, n);
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

static const char *closest_name(const char *name)
{
    const char *best = NULL;
    size_t best_d = 4; /* farther than 3 edits is not a typo */
    for (size_t i = 0; i < N_PARAMS; i++) {
        size_t d = edit_distance(name, params[i].name);
        if (d < best_d) {
            best_d = d;
            best = params[i].name;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------------------------ */
/* Value parsers: each fills why on failure                                                      */

static int parse_integer(const char *s, long long *out, char *why, size_t why_size)
{
    if (*s == '\0')
        return fail(why, why_size, "must not be empty");
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || isspace((unsigned char)*s))
        return fail(why, why_size, "\"%s\" is not a whole number", s);
    if (errno == ERANGE)
        return fail(why, why_size, "\"%s\" is too large", s);
    *out = v;
    return 0;
}

/* A whole number with an optional unit; mult_of maps a suffix to a multiplier (0 = unknown). */
static int parse_scaled(const char *s, long long (*mult_of)(const char *), const char *kind,
                        long long *out, char *why, size_t why_size)
{
    if (*s == '\0')
        return fail(why, why_size, "must not be empty");
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || isspace((unsigned char)*s))
        return fail(why, why_size, "\"%s\" is not %s", s, kind);
    if (errno == ERANGE)
        return fail(why, why_size, "\"%s\" is too large", s);
    long long mult = mult_of(end);
    if (mult == 0)
        return fail(why, why_size, "\"%s\" is not %s", s, kind);
    if (v != 0 && (v > LLONG_MAX / mult || v < LLONG_MIN / mult))
        return fail(why, why_size, "\"%s\" is too large", s);
    *out = v * mult;
    return 0;
}

static long long bytes_mult(const char *suffix)
{
    static const struct {
        const char *s;
        long long mult;
    } units[] = {{"", 1},           {"B", 1},           {"K", 1LL << 10},
                 {"KB", 1LL << 10}, {"KiB", 1LL << 10}, {"M", 1LL << 20},
                 {"MB", 1LL << 20}, {"MiB", 1LL << 20}, {"G", 1LL << 30},
                 {"GB", 1LL << 30}, {"GiB", 1LL << 30}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcasecmp(suffix, units[i].s) == 0)
            return units[i].mult;
    return 0;
}

static long long duration_mult(const char *suffix)
{
    static const struct {
        const char *s;
        long long mult;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(suffix, units[i].s) == 0)
            return units[i].mult;
    return 0;
}

static int parse_double(const char *s, double *out, char *why, size_t why_size)
{
    if (*s == '\0')
        return fail(why, why_size, "must not be empty");
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || isspace((unsigned char)*s))
        return fail(why, why_size, "\"%s\" is not a number", s);
    if (errno == ERANGE || !isfinite(v))
        return fail(why, why_size, "\"%s\" is not a finite number", s);
    *out = v;
    return 0;
}

static int check_int_range(const param_t *p, long long v, char *why, size_t why_size)
{
    if ((double)v < p->min || (double)v > p->max)
        return fail(why, why_size, "%lld is out of range %lld..%lld", v, (long long)p->min,
                    (long long)p->max);
    return 0;
}

static int choice_index(const char *const *choices, const char *v)
{
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], v) == 0)
            return i;
    return -1;
}

static int fail_choices(const char *const *choices, const char *v, char *why, size_t why_size)
{
    char list[128] = "";
    size_t len = 0;
    for (int i = 0; choices[i]; i++) {
        int n = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", choices[i]);
        if (n < 0 || (size_t)n >= sizeof(list) - len)
            break;
        len += (size_t)n;
    }
    return fail(why, why_size, "\"%s\" is not one of %s", v, list);
}

/* ------------------------------------------------------------------------------------------ */
/* Checks of string settings                                                                     */

/* URL templates: a known scheme, an s3 bucket or http host, and only the known placeholders. */
static int check_template(const char *raw, bool frames, char *why, size_t why_size)
{
    /* Messages quote the template; a password in it must not reach a log. */
    char masked[1024];
    const char *v = fq_config_mask_secret_url(raw, masked, sizeof(masked));
    if (strlen(raw) >= sizeof(masked))
        return fail(why, why_size, "template is too long (%zu bytes)", strlen(raw));
    const char *sep = strstr(v, "://");
    if (!sep || sep == v)
        return fail(why, why_size,
                    "\"%s\" is not a URL template (expected s3://, http://, https:// or file://)",
                    v);
    size_t slen = (size_t)(sep - v);
    char scheme[16];
    if (slen >= sizeof(scheme))
        return fail(why, why_size, "\"%s\" has an unknown scheme; expected s3, http, https or file",
                    v);
    memcpy(scheme, v, slen);
    scheme[slen] = '\0';
    if (strcmp(scheme, "s3") != 0 && strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0 &&
        strcmp(scheme, "file") != 0)
        return fail(why, why_size,
                    "\"%s\" has scheme \"%s\"; expected one of s3, http, https, file", v, scheme);
    const char *rest = sep + 3;
    size_t authority = strcspn(rest, "/");
    if (strcmp(scheme, "s3") == 0 &&
        (authority == 0 || rest[authority] != '/' || rest[authority + 1] == '\0'))
        return fail(why, why_size, "\"%s\" needs a bucket and a key: s3://BUCKET/KEY", v);
    if (strcmp(scheme, "file") != 0 && strcmp(scheme, "s3") != 0 && authority == 0)
        return fail(why, why_size, "\"%s\" has no host", v);
    if (strcmp(scheme, "file") == 0 && *rest == '\0')
        return fail(why, why_size, "\"%s\" has no path", v);

    bool has_index = false;
    for (const char *p = v; *p; p++) {
        if (*p == '}')
            return fail(why, why_size, "\"%s\": '}' without '{'", v);
        if (*p != '{')
            continue;
        const char *close = strchr(p, '}');
        if (!close)
            return fail(why, why_size, "\"%s\": '{' without '}'", v);
        size_t n = (size_t)(close - p - 1);
        const char *name = p + 1;
        bool ok = false;
        if ((n == 8 && strncmp(name, "platform", 8) == 0) ||
            (n == 4 && strncmp(name, "code", 4) == 0))
            ok = true;
        else if (n == 5 && strncmp(name, "index", 5) == 0)
            ok = has_index = true;
        else if ((n == 8 || n == 9) && strncmp(name, "index:0", 7) == 0 &&
                 isdigit((unsigned char)name[7]) && (n == 8 || isdigit((unsigned char)name[8])))
            ok = has_index = true; /* {index:0N}: zero-padded to N digits, as fetch.c expands */
        if (!ok)
            return fail(why, why_size,
                        "\"%s\": unknown placeholder {%.*s}; known: {platform} {code} {index} "
                        "{index:0N}",
                        v, (int)n, name);
        p = close;
    }
    if (frames && !has_index)
        return fail(why, why_size, "\"%s\" must contain {index} (or {index:0N})", v);
    if (!frames && has_index)
        return fail(why, why_size, "\"%s\": {index} is only for FRAMES_URL_TEMPLATE", v);
    return 0;
}

/* A comma list: each element trimmed (and lowercased); empty elements rejected; the checked
 * element must pass `ok` when given. Returns the normalised list in *out. */
static int normalise_list(const char *v, const char *const *allowed, char **out, char *why,
                          size_t why_size)
{
    char *copy = strdup(v);
    char *norm = calloc(1, strlen(v) + 1);
    int rc = -1;
    if (!copy || !norm) {
        fail(why, why_size, "out of memory");
        goto done;
    }
    size_t len = 0;
    char *save = NULL;
    for (char *tok = copy;; tok = NULL) {
        char *elem = strtok_r(tok, ",", &save);
        if (!elem)
            break;
        while (isspace((unsigned char)*elem))
            elem++;
        size_t n = strlen(elem);
        while (n > 0 && isspace((unsigned char)elem[n - 1]))
            n--;
        elem[n] = '\0';
        for (size_t i = 0; i < n; i++)
            elem[i] = (char)tolower((unsigned char)elem[i]);
        if (n == 0 || strchr(elem, ' ')) {
            fail(why, why_size, "\"%s\" has an empty or blank element", v);
            goto done;
        }
        if (allowed && choice_index(allowed, elem) < 0) {
            fail_choices(allowed, elem, why, why_size);
            goto done;
        }
        len += (size_t)sprintf(norm + len, "%s%s", len ? "," : "", elem);
    }
    /* strtok_r skips empty fields ("a,,b", ",a"), so compare the counts of commas. */
    size_t commas_in = 0, commas_out = 0;
    for (const char *p = v; *p; p++)
        commas_in += *p == ',';
    for (const char *p = norm; *p; p++)
        commas_out += *p == ',';
    if (commas_in != commas_out || (len == 0 && *v)) {
        fail(why, why_size, "\"%s\" has an empty element", v);
        goto done;
    }
    *out = norm;
    norm = NULL;
    rc = 0;
done:
    free(copy);
    free(norm);
    return rc;
}

static int check_addr(const char *v, char *why, size_t why_size)
{
    if (*v == '\0' || strcmp(v, "off") == 0)
        return 0;
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v)
        return fail(why, why_size, "\"%s\" is not host:port (or \"off\")", v);
    if (v[0] == '[' && colon[-1] != ']')
        return fail(why, why_size, "\"%s\" is not host:port (or \"off\")", v);
    if (v[0] != '[' && memchr(v, ':', (size_t)(colon - v)))
        return fail(why, why_size, "\"%s\" is not host:port; write IPv6 as [addr]:port", v);
    long long port;
    char sub[64];
    if (parse_integer(colon + 1, &port, sub, sizeof(sub)) < 0 || port < 0 || port > 65535)
        return fail(why, why_size, "\"%s\" has no valid port (0..65535)", v);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Setting one value                                                                             */

/* Parses value for p and stores it. Fills why (without WHERE) on error. */
static int apply_value(fq_config_t *cfg, const param_t *p, const char *value, char *why,
                       size_t why_size)
{
    void *field = (char *)cfg + p->offset;
    switch (p->type) {
    case P_STRING: {
        char *copy = NULL;
        if (value[strspn(value, " \t\r\n")] == '\0' && !(p->flags & F_EMPTY_OK))
            return fail(why, why_size, "must not be empty");
        if (p->choices && choice_index(p->choices, value) < 0)
            return fail_choices(p->choices, value, why, why_size);
        if ((p->flags & (F_SRC_TPL | F_FRAMES_TPL)) &&
            check_template(value, p->flags & F_FRAMES_TPL, why, why_size) < 0)
            return -1;
        if ((p->flags & F_ADDR) && check_addr(value, why, why_size) < 0)
            return -1;
        if (p->flags & F_NAMES) {
            size_t bad = strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789_-, ");
            if (value[bad])
                return fail(why, why_size, "\"%s\": '%c' is not part of a name (a,b,c)", value,
                            value[bad]);
        }
        if (p->flags & (F_SCHEMES | F_HOSTS | F_NAMES)) {
            if (normalise_list(value, (p->flags & F_SCHEMES) ? source_schemes : NULL, &copy, why,
                               why_size) < 0)
                return -1;
        } else {
            copy = strdup(value);
        }
        if (!copy)
            return fail(why, why_size, "out of memory");
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case P_INT:
    case P_INT64: {
        long long v = 0;
        if (parse_integer(value, &v, why, why_size) < 0 || check_int_range(p, v, why, why_size) < 0)
            return -1;
        if (p->type == P_INT)
            *(int *)field = (int)v; /* the range check keeps it within int */
        else
            *(int64_t *)field = v;
        return 0;
    }
    case P_BYTES:
    case P_DURATION: {
        long long v = 0;
        int rc = p->type == P_BYTES
                     ? parse_scaled(value, bytes_mult, "a size (bytes, or a number with K, M or G)",
                                    &v, why, why_size)
                     : parse_scaled(value, duration_mult,
                                    "a duration (milliseconds, or a number with ms, s, m or h)", &v,
                                    why, why_size);
        if (rc < 0 || check_int_range(p, v, why, why_size) < 0)
            return -1;
        *(int64_t *)field = v;
        return 0;
    }
    case P_DOUBLE: {
        double v = 0;
        if (parse_double(value, &v, why, why_size) < 0)
            return -1;
        bool low = (p->flags & F_MIN_OPEN) ? v <= p->min : v < p->min;
        if (low || v > p->max)
            return fail(why, why_size, "%s is out of range: must be %s %g and <= %g", value,
                        (p->flags & F_MIN_OPEN) ? ">" : ">=", p->min, p->max);
        *(double *)field = v;
        return 0;
    }
    case P_ENUM: {
        int ix = choice_index(p->choices, value);
        if (ix < 0)
            return fail_choices(p->choices, value, why, why_size);
        *(fq_frame_mode_t *)field = (fq_frame_mode_t)ix;
        return 0;
    }
    }
    return fail(why, why_size, "internal: unknown type");
}

/* Kafka property name from a KAFKA_CONFIG_<PROP> suffix: lowercased, '_' -> '.'. */
static char *kafka_prop_name(const char *suffix)
{
    char *name = strdup(suffix);
    if (!name)
        return NULL;
    for (char *c = name; *c; c++)
        *c = *c == '_' ? '.' : (char)tolower((unsigned char)*c);
    return name;
}

/* Adds or replaces a Kafka property; a later layer keeps the position of the first. */
static int kafka_prop_set(fq_config_t *cfg, const char *name, const char *value,
                          fq_config_origin_t origin, const char *where, char *errstr,
                          size_t errstr_size)
{
    struct fq_config_state *st = cfg->state;
    if (*name == '\0')
        return fail(errstr, errstr_size, "%s: empty Kafka property name", where);
    char *v = strdup(value), *w = strdup(where);
    if (!v || !w) {
        free(v);
        free(w);
        return fail(errstr, errstr_size, "%s: out of memory", where);
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        if (strcmp(kp->name, name) == 0) {
            free(kp->value);
            free(st->prop_where[i]);
            kp->value = v;
            kp->origin = origin;
            st->prop_where[i] = w;
            return 0;
        }
    }
    size_t n = cfg->kafka_props_count + 1;
    fq_kafka_prop_t *props = realloc(cfg->kafka_props, n * sizeof(*props));
    if (props)
        cfg->kafka_props = props;
    char **wheres = realloc(st->prop_where, n * sizeof(*wheres));
    if (wheres)
        st->prop_where = wheres;
    char *nm = strdup(name);
    if (!props || !wheres || !nm) {
        free(v);
        free(w);
        free(nm);
        return fail(errstr, errstr_size, "%s: out of memory", where);
    }
    props[n - 1] = (fq_kafka_prop_t){.name = nm, .value = v, .origin = origin};
    wheres[n - 1] = w;
    cfg->kafka_props_count = n;
    return 0;
}

/* Sets a table setting or KAFKA_CONFIG_* name. label is what an error names: the variable, a
 * flag, or "file:line: NAME"; at is where --print-config says the value came from (may be NULL). */
static int set_named(fq_config_t *cfg, const param_t *p, const char *name, const char *value,
                     fq_config_origin_t origin, const char *label, const char *at, char *errstr,
                     size_t errstr_size)
{
    if (!p) {
        char *prop = kafka_prop_name(name + strlen(KAFKA_ENV_PREFIX));
        if (!prop)
            return fail(errstr, errstr_size, "%s: out of memory", label);
        int rc = kafka_prop_set(cfg, prop, value, origin, at ? at : name, errstr, errstr_size);
        free(prop);
        return rc;
    }
    size_t ix = param_index(p);
    struct fq_config_state *st = cfg->state;
    char why[512];
    char *trimmed = NULL;
    /* Numbers tolerate surrounding blanks ("10 " from a hand-edited file); strings keep them. */
    if (p->type != P_STRING) {
        trimmed = trimmed_dup(value);
        if (!trimmed)
            return fail(errstr, errstr_size, "%s: out of memory", label);
        value = trimmed;
    }
    int rc;
    if (*value == '\0' && (p->flags & (F_NULLABLE | F_DERIVED))) {
        /* Empty unsets: a nullable setting becomes NULL, a derived one is derived again. */
        if (p->type == P_STRING) {
            free(*str_field(cfg, p));
            *str_field(cfg, p) = NULL;
        }
        origin = FQ_ORIGIN_DEFAULT;
        at = NULL;
        rc = 0;
    } else {
        rc = apply_value(cfg, p, value, why, sizeof(why));
        if (rc < 0)
            fail(errstr, errstr_size, "%s: %s", label, why);
    }
    free(trimmed);
    if (rc < 0)
        return -1;
    st->origin[ix] = origin;
    free(st->where[ix]);
    st->where[ix] = at ? strdup(at) : NULL;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Derived defaults                                                                              */

static bool is_unset(const fq_config_t *cfg, size_t ix)
{
    fq_config_origin_t o = cfg->state->origin[ix];
    return o == FQ_ORIGIN_DEFAULT || o == FQ_ORIGIN_DERIVED;
}

static int set_derived(fq_config_t *cfg, size_t ix, char *value)
{
    if (!value)
        return -1;
    char **field = str_field(cfg, &params[ix]);
    free(*field);
    *field = value;
    cfg->state->origin[ix] = FQ_ORIGIN_DERIVED;
    return 0;
}

/* Appends an ALLOWED_SOURCE_HOSTS entry for url to a comma list, read by libcurl's parser
 * (curl_url, as fetch reads URLs): the host alone for an s3:// bucket, else host:port with
 * the scheme's default port when none is written, so only that service is trusted, not every
 * port of its host. A host that depends on the item ({...}) adds nothing. */
static void append_host(char *list, size_t size, const char *url)
{
    const char *sep = url ? strstr(url, "://") : NULL;
    if (!sep)
        return;
    /* Only scheme://authority: a template's path holds placeholders. */
    char origin[512];
    size_t n = (size_t)(sep + 3 - url) + strcspn(sep + 3, "/?#");
    if (n + 2 > sizeof(origin) || memchr(url, '{', n))
        return;
    snprintf(origin, sizeof(origin), "%.*s/", (int)n, url);
    CURLU *h = curl_url();
    char *host = NULL, *port = NULL;
    bool bucket = strncmp(url, "s3://", 5) == 0;
    if (!h || curl_url_set(h, CURLUPART_URL, origin, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        (!bucket && curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK))
        goto done;
    size_t len = strlen(list);
    int w = snprintf(list + len, size - len, "%s%s%s%s", len ? "," : "", host, port ? ":" : "",
                     port ? port : "");
    if (w < 0 || (size_t)w >= size - len) {
        list[len] = '\0'; /* does not fit: nothing rather than half an entry */
        goto done;
    }
    for (char *c = list + len; *c; c++)
        *c = (char)tolower((unsigned char)*c);
done:
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(h);
}

static size_t ix_of(const char *name)
{
    return param_index(param_by_name(name));
}

static int derive(fq_config_t *cfg)
{
    /* Looked up by name so reordering the table cannot break the derivations. */
    const size_t ix_retry = ix_of("KAFKA_RETRY_TOPIC"), ix_dlq = ix_of("KAFKA_DLQ_TOPIC"),
                 ix_hosts = ix_of("ALLOWED_SOURCE_HOSTS"), ix_worker = ix_of("WORKER_ID"),
                 ix_conc = ix_of("WORKER_CONCURRENCY"), ix_cores = ix_of("WORKER_CORES"),
                 ix_items = ix_of("MAX_INFLIGHT_ITEMS");
    char buf[1024];
    if (is_unset(cfg, ix_retry)) {
        snprintf(buf, sizeof(buf), "%s.retry", cfg->kafka_topic);
        if (set_derived(cfg, ix_retry, strdup(buf)) < 0)
            return -1;
    }
    if (is_unset(cfg, ix_dlq)) {
        snprintf(buf, sizeof(buf), "%s.dlq", cfg->kafka_topic);
        if (set_derived(cfg, ix_dlq, strdup(buf)) < 0)
            return -1;
    }
    if (is_unset(cfg, ix_hosts)) {
        buf[0] = '\0';
        const char *tpl = cfg->source_url_template;
        if (tpl && strncmp(tpl, "s3://", 5) == 0) {
            /* The fetch goes to the S3 endpoint; the bucket name is listed too so a video_url
             * written as s3://bucket/key passes the same check. */
            append_host(buf, sizeof(buf), tpl);
            if (cfg->s3_endpoint) {
                append_host(buf, sizeof(buf), cfg->s3_endpoint);
            } else {
                char aws[256];
                snprintf(aws, sizeof(aws), "https://s3.%s.amazonaws.com", cfg->s3_region);
                append_host(buf, sizeof(buf), aws);
            }
        } else if (tpl && strncmp(tpl, "file://", 7) != 0) {
            append_host(buf, sizeof(buf), tpl);
        }
        if (set_derived(cfg, ix_hosts, strdup(buf)) < 0)
            return -1;
        /* --print-config says what the allow-list was derived from. */
        const char *from = !tpl || !*buf ? NULL
                           : strncmp(tpl, "s3://", 5) == 0
                               ? "from SOURCE_URL_TEMPLATE and S3_ENDPOINT"
                               : "from SOURCE_URL_TEMPLATE";
        free(cfg->state->where[ix_hosts]);
        cfg->state->where[ix_hosts] = from ? strdup(from) : NULL;
    }
    if (is_unset(cfg, ix_worker)) {
        char host[256];
        if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "frameq-%ld", (long)getpid());
        host[sizeof(host) - 1] = '\0';
        if (set_derived(cfg, ix_worker, strdup(host)) < 0)
            return -1;
    }
    if (is_unset(cfg, ix_cores)) {
        /* The CPUs this process may run on (a container's cpuset), not the machine's. */
        cpu_set_t set;
        long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                              : sysconf(_SC_NPROCESSORS_ONLN);
        cfg->worker_cores = n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
        cfg->state->origin[ix_cores] = FQ_ORIGIN_DERIVED;
    }
    if (is_unset(cfg, ix_conc)) {
        cfg->worker_concurrency = cfg->worker_cores;
        cfg->state->origin[ix_conc] = FQ_ORIGIN_DERIVED;
    }
    if (is_unset(cfg, ix_items)) {
        cfg->max_inflight_items = cfg->worker_concurrency * 4;
        cfg->state->origin[ix_items] = FQ_ORIGIN_DERIVED;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Public API                                                                                    */

fq_config_t *fq_config_new(void)
{
    fq_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    cfg->state = calloc(1, sizeof(*cfg->state));
    if (!cfg->state)
        goto fail;
    for (size_t i = 0; i < N_PARAMS; i++) {
        const param_t *p = &params[i];
        char why[256];
        if (!p->def)
            continue;
        /* Defaults go through the same parser as user values, so they obey the same rules. */
        if (apply_value(cfg, p, p->def, why, sizeof(why)) < 0) {
            fprintf(stderr, "frameq: bad built-in default %s: %s\n", p->name, why);
            abort();
        }
    }
    if (derive(cfg) < 0)
        goto fail;
    return cfg;
fail:
    fq_config_destroy(cfg);
    return NULL;
}

void fq_config_destroy(fq_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_PARAMS; i++)
        if (params[i].type == P_STRING)
            free(*str_field(cfg, &params[i]));
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        free(cfg->kafka_props[i].name);
        free(cfg->kafka_props[i].value);
        if (cfg->state)
            free(cfg->state->prop_where[i]);
    }
    free(cfg->kafka_props);
    if (cfg->state) {
        for (size_t i = 0; i < N_PARAMS; i++)
            free(cfg->state->where[i]);
        free(cfg->state->prop_where);
        free(cfg->state);
    }
    free(cfg);
}

fq_config_origin_t fq_config_origin(const fq_config_t *cfg, const char *name)
{
    const param_t *p = param_by_name(name);
    return p ? cfg->state->origin[param_index(p)] : FQ_ORIGIN_DEFAULT;
}

int fq_config_set(fq_config_t *cfg, const char *name, const char *value, fq_config_origin_t origin,
                  char *errstr, size_t errstr_size)
{
    const param_t *p = param_by_name(name);
    if (!p && strncmp(name, KAFKA_ENV_PREFIX, strlen(KAFKA_ENV_PREFIX)) != 0) {
        const char *guess = closest_name(name);
        if (guess)
            return fail(errstr, errstr_size, "unknown setting \"%s\" (did you mean %s?)", name,
                        guess);
        return fail(errstr, errstr_size, "unknown setting \"%s\"", name);
    }
    if (set_named(cfg, p, name, value ? value : "", origin, name, NULL, errstr, errstr_size) < 0)
        return -1;
    if (derive(cfg) < 0)
        return fail(errstr, errstr_size, "%s: out of memory", name);
    return 0;
}

/* One line of a KEY=VALUE file: "export " tolerated, value optionally quoted, " #" starts a
 * comment after an unquoted value. Fills key/value (pointers into line) or returns -1. */
static int split_line(char *line, bool dotted, char **key, char **value, const char **why)
{
    char *s = line;
    while (isspace((unsigned char)*s))
        s++;
    if (strncmp(s, "export", 6) == 0 && isspace((unsigned char)s[6]))
        for (s += 6; isspace((unsigned char)*s);)
            s++;
    char *eq = strchr(s, '=');
    if (!eq) {
        *why = "expected KEY=VALUE";
        return -1;
    }
    char *kend = eq;
    while (kend > s && isspace((unsigned char)kend[-1]))
        kend--;
    *kend = '\0';
    if (*s == '\0') {
        *why = "expected KEY=VALUE";
        return -1;
    }
    for (char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && !(dotted && (*c == '.' || *c == '-'))) {
            *why = "expected KEY=VALUE (KEY is letters, digits and _)";
            return -1;
        }
    *key = s;
    char *v = eq + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v == '"' || *v == '\'') {
        char *close = strchr(v + 1, *v);
        if (!close) {
            *why = "missing closing quote";
            return -1;
        }
        char *after = close + 1;
        while (isspace((unsigned char)*after))
            after++;
        if (*after != '\0' && *after != '#') {
            *why = "unexpected text after the closing quote";
            return -1;
        }
        *close = '\0';
        *value = v + 1;
        return 0;
    }
    for (char *c = v; *c; c++)
        if (*c == '#' && (c == v || isspace((unsigned char)c[-1]))) {
            *c = '\0';
            break;
        }
    size_t n = strlen(v);
    while (n > 0 && isspace((unsigned char)v[n - 1]))
        v[--n] = '\0';
    *value = v;
    return 0;
}

int fq_config_load_file(fq_config_t *cfg, const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(errstr, errstr_size, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = -1;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        const char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        char at[512];
        snprintf(at, sizeof(at), "%s:%d", path, lineno);
        char *key = NULL, *value = NULL;
        const char *why = NULL;
        if (strncmp(s, "-X", 2) == 0 && (s[2] == ' ' || s[2] == '\t')) {
            /* --print-config writes Kafka properties as "-X name=value"; read them back. */
            char *prop = line + (s - line) + 3;
            while (isspace((unsigned char)*prop))
                prop++;
            if (split_line(prop, true, &key, &value, &why) < 0) {
                fail(errstr, errstr_size, "%s: %s", at, why);
                goto done;
            }
            if (kafka_prop_set(cfg, key, value, FQ_ORIGIN_FILE, at, errstr, errstr_size) < 0)
                goto done;
            continue;
        }
        if (split_line(line, false, &key, &value, &why) < 0) {
            fail(errstr, errstr_size, "%s: %s", at, why);
            goto done;
        }
        const param_t *p = param_by_name(key);
        if (!p && strncmp(key, KAFKA_ENV_PREFIX, strlen(KAFKA_ENV_PREFIX)) != 0) {
            const char *guess = closest_name(key);
            if (guess)
                fail(errstr, errstr_size, "%s: unknown setting \"%s\" (did you mean %s?)", at, key,
                     guess);
            else
                fail(errstr, errstr_size, "%s: unknown setting \"%s\"", at, key);
            goto done;
        }
        char label[600];
        snprintf(label, sizeof(label), "%s: %s", at, key);
        if (set_named(cfg, p, key, value, FQ_ORIGIN_FILE, label, at, errstr, errstr_size) < 0)
            goto done;
    }
    if (ferror(f)) {
        fail(errstr, errstr_size, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (derive(cfg) < 0) {
        fail(errstr, errstr_size, "%s: out of memory", path);
        goto done;
    }
    rc = 0;
done:
    free(line);
    fclose(f);
    return rc;
}

static int load_env(fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < N_PARAMS; i++) {
        const char *v = getenv(params[i].name);
        if (v && set_named(cfg, &params[i], params[i].name, v, FQ_ORIGIN_ENV, params[i].name, NULL,
                           errstr, errstr_size) < 0)
            return -1;
    }
    size_t plen = strlen(KAFKA_ENV_PREFIX);
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, KAFKA_ENV_PREFIX, plen) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char *name = strndup(*e, (size_t)(eq - *e));
        if (!name)
            return fail(errstr, errstr_size, "%s: out of memory", *e);
        int rc = set_named(cfg, NULL, name, eq + 1, FQ_ORIGIN_ENV, name, NULL, errstr, errstr_size);
        free(name);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* "-X prop=val" from the command line. */
static int set_kafka_flag(fq_config_t *cfg, const char *arg, char *errstr, size_t errstr_size)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return fail(errstr, errstr_size, "-X %s: expected prop=value", arg);
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name)
        return fail(errstr, errstr_size, "-X %s: out of memory", arg);
    char where[300];
    snprintf(where, sizeof(where), "-X %s", name);
    int rc = kafka_prop_set(cfg, name, eq + 1, FQ_ORIGIN_FLAG, where, errstr, errstr_size);
    free(name);
    return rc;
}

static int check_kafka_props(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, errstr, errstr_size);
    if (!conf)
        return -1;
    rd_kafka_conf_destroy(conf);
    return 0;
}

int fq_config_load(fq_config_t *cfg, int *argc, char **argv, char *errstr, size_t errstr_size)
{
    int n = argc ? *argc : 0;

    /* Layer 2: files named by --config, in the order given. */
    for (int i = 1; i < n; i++) {
        const char *path = NULL;
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= n)
                return fail(errstr, errstr_size, "--config: missing FILE");
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        }
        if (path && fq_config_load_file(cfg, path, errstr, errstr_size) < 0)
            return -1;
    }

    /* Layer 3: the environment. */
    if (load_env(cfg, errstr, errstr_size) < 0)
        return -1;

    /* Layer 4: flags; what we consume is dropped, the rest keeps its order. */
    int out = n > 0 ? 1 : 0;
    bool stopped = false;
    for (int i = 1; i < n; i++) {
        char *arg = argv[i];
        if (stopped || strcmp(arg, "--") == 0) {
            stopped = true;
            argv[out++] = arg;
            continue;
        }
        if (strcmp(arg, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0)
            continue;
        if (strcmp(arg, "-X") == 0) {
            if (i + 1 >= n)
                return fail(errstr, errstr_size, "-X: missing prop=value");
            if (set_kafka_flag(cfg, argv[++i], errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        if (strncmp(arg, "-X", 2) == 0) {
            if (set_kafka_flag(cfg, arg + 2, errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        const param_t *p = NULL;
        const char *value = NULL;
        if (strncmp(arg, "--", 2) == 0) {
            const char *eq = strchr(arg, '=');
            p = param_by_flag(arg, eq ? (size_t)(eq - arg) : strlen(arg));
            if (p && eq) {
                value = eq + 1;
            } else if (p) {
                if (i + 1 >= n)
                    return fail(errstr, errstr_size, "%s: missing value", p->flag);
                value = argv[++i];
            }
        }
        if (!p) {
            argv[out++] = arg; /* a program flag or a positional argument */
            continue;
        }
        if (set_named(cfg, p, p->name, value, FQ_ORIGIN_FLAG, p->flag, p->flag, errstr,
                      errstr_size) < 0)
            return -1;
    }
    if (argc) {
        *argc = out;
        if (argv)
            argv[out] = NULL;
    }

    if (derive(cfg) < 0)
        return fail(errstr, errstr_size, "configuration: out of memory");

    /* Cross-field rules. */
    if (cfg->retry_backoff_max_ms < cfg->retry_backoff_ms)
        return fail(errstr, errstr_size,
                    "RETRY_BACKOFF_MAX_MS: %lld is below RETRY_BACKOFF_MS (%lld)",
                    (long long)cfg->retry_backoff_max_ms, (long long)cfg->retry_backoff_ms);
    if (strcmp(cfg->kafka_retry_topic, cfg->kafka_topic) == 0 ||
        strcmp(cfg->kafka_dlq_topic, cfg->kafka_topic) == 0 ||
        strcmp(cfg->kafka_dlq_topic, cfg->kafka_retry_topic) == 0)
        return fail(errstr, errstr_size,
                    "KAFKA_DLQ_TOPIC: the main, retry and DLQ topics must differ (%s, %s, %s)",
                    cfg->kafka_topic, cfg->kafka_retry_topic, cfg->kafka_dlq_topic);

    /* A typo in a Kafka property is a start-up error, not a surprise at first connect. */
    return check_kafka_props(cfg, errstr, errstr_size);
}

rd_kafka_conf_t *fq_config_kafka_conf(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char why[512];
    if (!conf) {
        fail(errstr, errstr_size, "KAFKA_BROKERS: out of memory");
        return NULL;
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka_brokers, why, sizeof(why)) !=
        RD_KAFKA_CONF_OK) {
        fail(errstr, errstr_size, "KAFKA_BROKERS: %s", why);
        goto fail;
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, kp->name, kp->value, why, sizeof(why));
        if (res != RD_KAFKA_CONF_OK) {
            const char *where = cfg->state->prop_where[i];
            /* librdkafka does not always repeat the rejected value; say it unless secret. */
            if (res == RD_KAFKA_CONF_INVALID && !kafka_prop_secret(kp->name) &&
                !strstr(why, kp->value))
                fail(errstr, errstr_size, "%s: %s (got \"%s\")", where, why, kp->value);
            else
                fail(errstr, errstr_size, "%s: %s", where, why);
            goto fail;
        }
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Masking and printing                                                                          */

static void buf_put(char *buf, size_t size, size_t *len, const char *s, size_t n)
{
    if (*len + 1 >= size)
        return;
    if (n > size - 1 - *len)
        n = size - 1 - *len;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

/* Is the key before '=' at key..key+n a password-like conninfo/query key? */
static bool secret_key(const char *key, size_t n)
{
    static const char *const words[] = {"password", "secret", "passwd", "token", NULL};
    for (int i = 0; words[i]; i++) {
        size_t wl = strlen(words[i]);
        for (size_t j = 0; j + wl <= n; j++)
            if (strncasecmp(key + j, words[i], wl) == 0)
                return true;
    }
    return false;
}

const char *fq_config_mask_secret_url(const char *s, char *buf, size_t buf_size)
{
    if (!buf || buf_size == 0)
        return "";
    buf[0] = '\0';
    if (!s)
        return buf;
    size_t len = 0;
    const char *p = s;
    const char *sep = strstr(s, "://");
    bool uri = sep && sep > s;
    for (const char *c = s; uri && c < sep; c++)
        uri = isalnum((unsigned char)*c) || *c == '+' || *c == '.' || *c == '-';
    if (uri) {
        /* URI: scheme://user:password@host/path?password=... */
        const char *auth = sep + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                at = auth + i; /* the last '@': a password may contain '@' in the wild */
        buf_put(buf, buf_size, &len, s, (size_t)(auth - s));
        if (at) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon) {
                buf_put(buf, buf_size, &len, auth, (size_t)(colon + 1 - auth));
                buf_put(buf, buf_size, &len, "****", 4);
                buf_put(buf, buf_size, &len, at, 1);
            } else {
                buf_put(buf, buf_size, &len, auth, (size_t)(at + 1 - auth));
            }
            p = at + 1;
        } else {
            p = auth;
        }
        /* Query parameters: mask password=... values, keep everything else. */
        while (*p) {
            size_t n = strcspn(p, "?&");
            buf_put(buf, buf_size, &len, p, n);
            p += n;
            if (!*p)
                break;
            buf_put(buf, buf_size, &len, p, 1);
            p++;
            const char *eq = strchr(p, '=');
            size_t klen = strcspn(p, "=&#");
            if (eq && (size_t)(eq - p) == klen && secret_key(p, klen)) {
                buf_put(buf, buf_size, &len, p, klen + 1);
                buf_put(buf, buf_size, &len, "****", 4);
                p = eq + 1 + strcspn(eq + 1, "&#");
            }
        }
        return buf;
    }
    /* conninfo: key = value pairs, values optionally single-quoted with \' escapes. */
    while (*p) {
        size_t ws = strspn(p, " \t\r\n");
        buf_put(buf, buf_size, &len, p, ws);
        p += ws;
        if (!*p)
            break;
        size_t klen = strcspn(p, "= \t");
        const char *k = p;
        buf_put(buf, buf_size, &len, p, klen);
        p += klen;
        ws = strspn(p, " \t");
        buf_put(buf, buf_size, &len, p, ws);
        p += ws;
        if (*p != '=')
            continue;
        buf_put(buf, buf_size, &len, p, 1);
        p++;
        ws = strspn(p, " \t");
        buf_put(buf, buf_size, &len, p, ws);
        p += ws;
        const char *v = p;
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p == '\'')
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        if (secret_key(k, klen))
            buf_put(buf, buf_size, &len, "****", 4);
        else
            buf_put(buf, buf_size, &len, v, (size_t)(p - v));
    }
    return buf;
}

static bool kafka_prop_secret(const char *name)
{
    if (strstr(name, "password") || strstr(name, "secret") || strstr(name, "jaas") ||
        strcmp(name, "sasl.oauthbearer.config") == 0)
        return true;
    /* ssl.key.pem and friends hold key material; *.location only names a file. */
    bool tls = strncmp(name, "ssl.", 4) == 0 || strncmp(name, "ssl_", 4) == 0 ||
               strncmp(name, "sasl.", 5) == 0;
    size_t n = strlen(name);
    bool location = n >= 9 && strcmp(name + n - 9, ".location") == 0;
    return tls && strstr(name, "key") && !location;
}

/* Prints v so that fq_config_load_file reads it back: quoted when blanks or '#' would be lost. */
static void print_value(FILE *out, const char *v, int *width)
{
    bool quote = *v && (strpbrk(v, "#\"'") || isspace((unsigned char)v[0]) ||
                        isspace((unsigned char)v[strlen(v) - 1]));
    char q = strchr(v, '"') ? '\'' : '"';
    int n = quote ? fprintf(out, "%c%s%c", q, v, q) : fprintf(out, "%s", v);
    *width = n < 0 ? 0 : n;
}

static void format_value(const fq_config_t *cfg, const param_t *p, char *buf, size_t size)
{
    const void *field = (const char *)cfg + p->offset;
    switch (p->type) {
    case P_STRING: {
        const char *v = *(char *const *)field;
        if (!v)
            snprintf(buf, size, "%s", "");
        else if (p->flags & F_SECRET)
            snprintf(buf, size, "%s", "****");
        else if (strpbrk(v, "\r\n"))
            /* One setting, one line: a multi-line value (JOB_INPUT) is summarised. */
            snprintf(buf, size, "<%zu bytes, multi-line>", strlen(v));
        else if (p->flags & F_URL)
            fq_config_mask_secret_url(v, buf, size);
        else
            snprintf(buf, size, "%s", v);
        break;
    }
    case P_INT:
        snprintf(buf, size, "%d", *(const int *)field);
        break;
    case P_INT64:
    case P_DURATION:
        snprintf(buf, size, "%lld", (long long)*(const int64_t *)field);
        break;
    case P_BYTES: {
        long long v = *(const int64_t *)field;
        if (v > 0 && v % (1LL << 30) == 0)
            snprintf(buf, size, "%lldG", v >> 30);
        else if (v > 0 && v % (1LL << 20) == 0)
            snprintf(buf, size, "%lldM", v >> 20);
        else if (v > 0 && v % (1LL << 10) == 0)
            snprintf(buf, size, "%lldK", v >> 10);
        else
            snprintf(buf, size, "%lld", v);
        break;
    }
    case P_DOUBLE:
        snprintf(buf, size, "%g", *(const double *)field);
        break;
    case P_ENUM:
        snprintf(buf, size, "%s", p->choices[*(const fq_frame_mode_t *)field]);
        break;
    }
}

void fq_config_print(const fq_config_t *cfg, FILE *out)
{
    const struct fq_config_state *st = cfg->state;
    char value[4096];
    int col = 0;
    /* Align the comments: find the longest NAME=value first. */
    for (size_t i = 0; i < N_PARAMS; i++) {
        format_value(cfg, &params[i], value, sizeof(value));
        int w = (int)(strlen(params[i].name) + 1 + strlen(value));
        if (w > col && w < 72)
            col = w;
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        int w = (int)(3 + strlen(kp->name) + 1 + strlen(kp->value));
        if (w > col && w < 72)
            col = w;
    }
    col += 2;
    for (size_t i = 0; i < N_PARAMS; i++) {
        const param_t *p = &params[i];
        format_value(cfg, p, value, sizeof(value));
        int w = 0;
        fprintf(out, "%s=", p->name);
        print_value(out, value, &w);
        w += (int)strlen(p->name) + 1;
        fprintf(out, "%*s# %s", col > w ? col - w : 2, "", origin_names[st->origin[i]]);
        if (st->where[i])
            fprintf(out, " %s", st->where[i]);
        if (p->type == P_STRING && !str_value(cfg, p))
            fprintf(out, " (unset)");
        fputc('\n', out);
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        const char *v = kafka_prop_secret(kp->name) ? "****" : kp->value;
        int w = 0;
        fprintf(out, "-X %s=", kp->name);
        print_value(out, v, &w);
        w += (int)strlen(kp->name) + 4;
        fprintf(out, "%*s# %s %s\n", col > w ? col - w : 2, "", origin_names[kp->origin],
                st->prop_where[i]);
    }
}

void fq_config_print_help(FILE *out)
{
    int wflag = 0, wname = 0;
    for (size_t i = 0; i < N_PARAMS; i++) {
        int f = (int)strlen(params[i].flag), n = (int)strlen(params[i].name);
        wflag = f > wflag ? f : wflag;
        wname = n > wname ? n : wname;
    }
    fprintf(out, "Settings: flag (--flag VALUE or --flag=VALUE), environment variable, default.\n"
                 "Layers: defaults < --config FILE (KEY=VALUE lines) < environment < flags.\n\n");
    fprintf(out, "  %-*s  %-*s  %s\n", wflag, "FLAG", wname, "VARIABLE", "DEFAULT");
    for (size_t i = 0; i < N_PARAMS; i++) {
        const param_t *p = &params[i];
        const char *def = p->def ? p->def : (p->flags & F_DERIVED) ? "(derived)" : "(unset)";
        fprintf(out, "  %-*s  %-*s  %s\n  %-*s  %s\n", wflag, p->flag, wname, p->name, def, wflag,
                "", p->help);
    }
    fprintf(out, "\n  %-*s  %s\n  %-*s  %s\n", wflag, "-X prop=value", "KAFKA_CONFIG_<PROP>", wflag,
            "", "any librdkafka property (KAFKA_CONFIG_SECURITY_PROTOCOL -> security.protocol)");
    fprintf(out, "  %s\n  %-*s  %s\n", "--config FILE", wflag, "",
            "read settings from a KEY=VALUE file ('#' comments, export prefix allowed)");
}

const char *fq_frame_mode_name(fq_frame_mode_t mode)
{
    if ((int)mode < 0 || (size_t)mode >= sizeof(frame_modes) / sizeof(frame_modes[0]) - 1)
        return "unknown";
    return frame_modes[mode];
}
