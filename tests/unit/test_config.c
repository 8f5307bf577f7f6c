/* Unit tests of config/: defaults, layers, validation messages, argv compaction, Kafka
 * properties, derived values, masking and printing. No services needed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "fq_config.h"

extern char **environ;

/* Every name of DESIGN §5, and the decoder limits the README adds to it: the contract the
 * table must cover. */
static const char *const design_names[] = {
    "KAFKA_BROKERS",
    "KAFKA_GROUP_ID",
    "GROUP_PROTOCOL",
    "KAFKA_TOPIC",
    "KAFKA_RETRY_TOPIC",
    "KAFKA_DLQ_TOPIC",
    "MAX_RETRIES",
    "BATCH_SIZE",
    "JOB_INPUT",
    "DATABASE_URL",
    "RETRY_BACKOFF_MS",
    "RETRY_BACKOFF_MAX_MS",
    "SOURCE_URL_TEMPLATE",
    "FRAMES_URL_TEMPLATE",
    "S3_ENDPOINT",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "ALLOWED_SOURCE_HOSTS",
    "ALLOWED_SOURCE_SCHEMES",
    "FRAME_MODE",
    "FRAME_FPS",
    "FRAME_MAX_DIM",
    "JPEG_QUALITY",
    "SCENE_THRESHOLD",
    "MAX_VIDEO_BYTES",
    "MAX_VIDEO_SECONDS",
    "MAX_FRAMES",
    "ALLOWED_CONTAINERS",
    "ALLOWED_CODECS",
    "MAX_FRAME_PIXELS",
    "MAX_DECODE_SECONDS",
    "MAX_PACKETS_WITHOUT_FRAME",
    "HTTP_TIMEOUT_MS",
    "METRICS_ADDR",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "WORKER_ID",
    "WORKER_CONCURRENCY",
    "WORKER_CORES",
    "MAX_INFLIGHT_ITEMS",
    "MAX_INFLIGHT_BYTES",
    "SHUTDOWN_GRACE_MS",
};
#define N_DESIGN (sizeof(design_names) / sizeof(design_names[0]))

static char tmpdir[256];

/* Removes every table name and every KAFKA_CONFIG_* so each case starts from a clean slate. */
static void clear_env(void)
{
    for (size_t i = 0; i < N_DESIGN; i++)
        unsetenv(design_names[i]);
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "KAFKA_CONFIG_", 13) == 0) {
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof(name), "%.*s", (int)n, *e);
                break;
            }
        if (!name[0])
            break;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* Writes text to <tmpdir>/<name> and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads with argv given as a NULL-terminated list; returns fq_config_load's result. */
static int load_argv(fq_config_t *cfg, const char *const *args, int *argc_out, char **argv_out,
                     char *errstr, size_t errstr_size)
{
    int argc = 0;
    for (; args[argc]; argc++)
        argv_out[argc] = (char *)args[argc];
    argv_out[argc] = NULL;
    int rc = fq_config_load(cfg, &argc, argv_out, errstr, errstr_size);
    if (argc_out)
        *argc_out = argc;
    return rc;
}

static int load_simple(fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    const char *args[] = {"prog", NULL};
    char *argv[2];
    return load_argv(cfg, args, NULL, argv, errstr, errstr_size);
}

static char *print_to_string(const fq_config_t *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fq_config_print(cfg, f);
    fclose(f);
    return text;
}

/* The line of --print-config output that starts with prefix (copied), or NULL. */
static char *print_line(const char *text, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (const char *l = text; *l; l = strchr(l, '\n') + 1) {
        size_t n = strcspn(l, "\n");
        if (strncmp(l, prefix, pl) == 0)
            return strndup(l, n);
        if (!l[n])
            break;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */

static void check_defaults(const fq_config_t *cfg)
{
    char host[256] = "";
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    assert_string_equal(cfg->kafka_brokers, "localhost:9092");
    assert_string_equal(cfg->kafka_group_id, "frameq");
    assert_string_equal(cfg->kafka_topic, "extraction.jobs");
    assert_string_equal(cfg->kafka_retry_topic, "extraction.jobs.retry");
    assert_string_equal(cfg->kafka_dlq_topic, "extraction.jobs.dlq");
    assert_int_equal(cfg->kafka_props_count, 0);
    assert_int_equal(cfg->max_retries, 3);
    assert_int_equal(cfg->batch_size, 10);
    assert_null(cfg->job_input);
    assert_string_equal(cfg->database_url, "postgresql:///frameq");
    assert_int_equal(cfg->retry_backoff_ms, 1000);
    assert_int_equal(cfg->retry_backoff_max_ms, 60000);
    assert_null(cfg->source_url_template);
    assert_string_equal(cfg->frames_url_template, "file://./frames/{platform}/{code}/{index}.jpg");
    assert_null(cfg->s3_endpoint);
    assert_string_equal(cfg->s3_region, "us-east-1");
    assert_null(cfg->aws_access_key_id);
    assert_null(cfg->aws_secret_access_key);
    assert_string_equal(cfg->allowed_source_hosts, ""); /* no source template, no host */
    assert_string_equal(cfg->allowed_source_schemes, "https,http,s3");
    assert_int_equal(cfg->frame_mode, FQ_FRAME_MODE_FPS);
    assert_true(cfg->frame_fps == 1.0);
    assert_int_equal(cfg->frame_max_dim, 512);
    assert_int_equal(cfg->jpeg_quality, 3);
    assert_true(cfg->scene_threshold == 0.3);
    assert_int_equal(cfg->max_video_bytes, 512LL * 1024 * 1024);
    assert_int_equal(cfg->max_video_seconds, 900);
    assert_int_equal(cfg->max_frames, 1000);
    assert_int_equal(cfg->http_timeout_ms, 30000);
    assert_string_equal(cfg->metrics_addr, "0.0.0.0:9400");
    assert_string_equal(cfg->group_protocol, "classic");
    assert_string_equal(cfg->log_format, "json");
    assert_string_equal(cfg->log_level, "info");
    assert_string_equal(cfg->worker_id, host);
    assert_int_equal(cfg->worker_concurrency, cores < 1 ? 1 : cores);
    assert_int_equal(cfg->shutdown_grace_ms, 25000);
}

static void test_defaults(void **state)
{
    (void)state;
    fq_config_t *cfg = fq_config_new();
    assert_non_null(cfg);
    check_defaults(cfg);

    /* Loading with nothing set changes nothing. */
    char err[512] = "";
    assert_int_equal(load_simple(cfg, err, sizeof(err)), 0);
    check_defaults(cfg);

    char *text = print_to_string(cfg);
    char *line = print_line(text, "BATCH_SIZE=10 ");
    assert_non_null(line);
    assert_non_null(strstr(line, "# default"));
    free(line);
    line = print_line(text, "KAFKA_RETRY_TOPIC=extraction.jobs.retry ");
    assert_non_null(line);
    assert_non_null(strstr(line, "# derived"));
    free(line);
    line = print_line(text, "MAX_VIDEO_BYTES=512M ");
    assert_non_null(line);
    free(line);
    free(text);
    fq_config_destroy(cfg);
}

/* Every DESIGN §5 name is a setting: settable, printed, and in --help with its flag. */
static void test_every_name_in_table(void **state)
{
    (void)state;
    fq_config_t *cfg = fq_config_new();
    char *text = print_to_string(cfg);
    char *help = NULL;
    size_t help_len = 0;
    FILE *f = open_memstream(&help, &help_len);
    fq_config_print_help(f);
    fclose(f);
    for (size_t i = 0; i < N_DESIGN; i++) {
        char prefix[64], flag[64];
        snprintf(prefix, sizeof(prefix), "%s=", design_names[i]);
        char *line = print_line(text, prefix);
        if (!line)
            fail_msg("%s missing from fq_config_print", design_names[i]);
        free(line);
        /* The flag is the name in lower case with dashes. */
        snprintf(flag, sizeof(flag), "--");
        for (const char *c = design_names[i]; *c; c++) {
            char ch = *c == '_' ? '-' : (char)(*c - 'A' + 'a');
            if (*c >= '0' && *c <= '9')
                ch = *c;
            strncat(flag, &ch, 1);
        }
        if (!strstr(help, flag) || !strstr(help, design_names[i]))
            fail_msg("%s / %s missing from help", design_names[i], flag);
    }
    assert_non_null(strstr(help, "KAFKA_CONFIG_<PROP>"));
    assert_non_null(strstr(help, "-X prop=value"));
    free(help);
    free(text);
    fq_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------------ */
/* Layers: defaults < file < env < flags                                                          */

typedef enum { K_STR, K_INT, K_I64, K_DBL, K_MODE } kind_t;

typedef struct layer_case {
    const char *name, *flag;
    kind_t kind;
    size_t offset;
    const char *in_file, *in_env, *in_flag;       /* what each layer sets */
    const char *want_file, *want_env, *want_flag; /* the field after each layer */
} layer_case_t;

#define FIELD(f) offsetof(fq_config_t, f)

static const layer_case_t layer_cases[] = {
    {"MAX_RETRIES", "--max-retries", K_INT, FIELD(max_retries), "5", "6", "7", "5", "6", "7"},
    {"KAFKA_BROKERS", "--kafka-brokers", K_STR, FIELD(kafka_brokers), "f:1", "e:2", "x:3", "f:1",
     "e:2", "x:3"},
    {"FRAME_FPS", "--frame-fps", K_DBL, FIELD(frame_fps), "2.5", "0.5", "30", "2.5", "0.5", "30"},
    {"RETRY_BACKOFF_MS", "--retry-backoff-ms", K_I64, FIELD(retry_backoff_ms), "2s", "1500", "1m",
     "2000", "1500", "60000"},
    {"MAX_VIDEO_BYTES", "--max-video-bytes", K_I64, FIELD(max_video_bytes), "1K", "2M", "3G",
     "1024", "2097152", "3221225472"},
    {"FRAME_MODE", "--frame-mode", K_MODE, FIELD(frame_mode), "scene", "keyframes", "fps", "2", "1",
     "0"},
    {"LOG_LEVEL", "--log-level", K_STR, FIELD(log_level), "debug", "warn", "error", "debug", "warn",
     "error"},
    {"WORKER_ID", "--worker-id", K_STR, FIELD(worker_id), "w-file", "w-env", "w-flag", "w-file",
     "w-env", "w-flag"},
};

static void check_field(const fq_config_t *cfg, const layer_case_t *c, const char *want,
                        const char *layer)
{
    const char *base = (const char *)cfg + c->offset;
    char got[256];
    switch (c->kind) {
    case K_STR:
        snprintf(got, sizeof(got), "%s", *(char *const *)base);
        break;
    case K_INT:
        snprintf(got, sizeof(got), "%d", *(const int *)base);
        break;
    case K_I64:
        snprintf(got, sizeof(got), "%lld", (long long)*(const int64_t *)base);
        break;
    case K_DBL:
        snprintf(got, sizeof(got), "%g", *(const double *)base);
        break;
    case K_MODE:
        snprintf(got, sizeof(got), "%d", (int)*(const fq_frame_mode_t *)base);
        break;
    }
    if (strcmp(got, want) != 0)
        fail_msg("%s after %s layer: got \"%s\", want \"%s\"", c->name, layer, got, want);
}

static void test_layers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(layer_cases) / sizeof(layer_cases[0]); i++) {
        const layer_case_t *c = &layer_cases[i];
        char text[256], err[512] = "";
        snprintf(text, sizeof(text), "# layer test\n%s=%s\n", c->name, c->in_file);
        const char *path = write_file("layers.conf", text);
        char path_copy[512];
        snprintf(path_copy, sizeof(path_copy), "%s", path);
        char *argv[8];

        for (int layer = 0; layer < 3; layer++) {
            clear_env();
            if (layer >= 1)
                setenv(c->name, c->in_env, 1);
            const char *with_flag[] = {"prog", "--config", path_copy, c->flag, c->in_flag, NULL};
            const char *without[] = {"prog", "--config", path_copy, NULL};
            fq_config_t *cfg = fq_config_new();
            int rc = load_argv(cfg, layer == 2 ? with_flag : without, NULL, argv, err, sizeof(err));
            if (rc != 0)
                fail_msg("%s layer %d: %s", c->name, layer, err);
            const char *want = layer == 0 ? c->want_file : layer == 1 ? c->want_env : c->want_flag;
            check_field(cfg, c, want, layer == 0 ? "file" : layer == 1 ? "env" : "flag");

            /* --print-config names the layer the value came from. */
            char *out = print_to_string(cfg);
            char prefix[64];
            snprintf(prefix, sizeof(prefix), "%s=", c->name);
            char *line = print_line(out, prefix);
            assert_non_null(line);
            const char *origin = layer == 0 ? "# file " : layer == 1 ? "# env" : "# flag --";
            if (!strstr(line, origin))
                fail_msg("print line \"%s\" lacks \"%s\"", line, origin);
            free(line);
            free(out);
            fq_config_destroy(cfg);
        }
    }
}

/* --flag=VALUE works like --flag VALUE, and a later flag wins over an earlier one. */
static void test_flag_forms(void **state)
{
    (void)state;
    const char *args[] = {"prog", "--batch-size=20",  "--batch-size",
                          "30",   "--s3-region=eu-1", NULL};
    char *argv[8], err[256] = "";
    fq_config_t *cfg = fq_config_new();
    int argc;
    assert_int_equal(load_argv(cfg, args, &argc, argv, err, sizeof(err)), 0);
    assert_int_equal(cfg->batch_size, 30);
    assert_string_equal(cfg->s3_region, "eu-1");
    assert_int_equal(argc, 1);
    fq_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------------ */
/* Bad values: WHERE and WHY                                                                      */

typedef enum { VIA_ENV, VIA_FLAG, VIA_ARGS, VIA_FILE } via_t;

typedef struct bad_case {
    via_t via;
    const char *name;           /* env name, flag, or file name */
    const char *value;          /* value, or file contents; VIA_ARGS: space-separated argv */
    const char *name2, *value2; /* an optional second env setting */
    const char *where;          /* errstr prefix; for VIA_FILE the part after the path (":3") */
    const char *why;            /* substring of the rest */
} bad_case_t;

static const bad_case_t bad_cases[] = {
    {VIA_ENV, "MAX_RETRIES", "abc", NULL, NULL, "MAX_RETRIES: ", "\"abc\" is not a whole number"},
    {VIA_ENV, "MAX_RETRIES", "10x", NULL, NULL, "MAX_RETRIES: ", "\"10x\" is not a whole number"},
    {VIA_ENV, "MAX_RETRIES", "-1", NULL, NULL, "MAX_RETRIES: ", "-1 is out of range 0..100"},
    {VIA_ENV, "MAX_RETRIES", "101", NULL, NULL, "MAX_RETRIES: ", "101 is out of range 0..100"},
    {VIA_ENV, "MAX_RETRIES", "99999999999999999999", NULL, NULL, "MAX_RETRIES: ", "too large"},
    {VIA_ENV, "MAX_RETRIES", "", NULL, NULL, "MAX_RETRIES: ", "must not be empty"},
    {VIA_ENV, "BATCH_SIZE", "0", NULL, NULL, "BATCH_SIZE: ", "0 is out of range 1..10000"},
    {VIA_ENV, "BATCH_SIZE", "4294967297", NULL, NULL, "BATCH_SIZE: ", "out of range 1..10000"},
    {VIA_ENV, "BATCH_SIZE", "1.5", NULL, NULL, "BATCH_SIZE: ", "is not a whole number"},
    {VIA_FLAG, "--frame-fps", "abc", NULL, NULL, "--frame-fps: ", "\"abc\" is not a number"},
    {VIA_FLAG, "--frame-fps", "0", NULL, NULL, "--frame-fps: ", "out of range"},
    {VIA_FLAG, "--frame-fps", "121", NULL, NULL, "--frame-fps: ", "out of range"},
    {VIA_ENV, "FRAME_FPS", "nan", NULL, NULL, "FRAME_FPS: ", "not a finite number"},
    {VIA_ENV, "FRAME_FPS", "1e999", NULL, NULL, "FRAME_FPS: ", "not a finite number"},
    {VIA_ENV, "SCENE_THRESHOLD", "1.5", NULL, NULL, "SCENE_THRESHOLD: ", "out of range"},
    {VIA_ENV, "FRAME_MAX_DIM", "15", NULL, NULL, "FRAME_MAX_DIM: ", "out of range 16..8192"},
    {VIA_ENV, "JPEG_QUALITY", "1", NULL, NULL, "JPEG_QUALITY: ", "out of range 2..31"},
    {VIA_ENV, "WORKER_CONCURRENCY", "0", NULL, NULL, "WORKER_CONCURRENCY: ", "out of range"},
    {VIA_ENV, "KAFKA_BROKERS", "", NULL, NULL, "KAFKA_BROKERS: ", "must not be empty"},
    {VIA_ENV, "DATABASE_URL", "", NULL, NULL, "DATABASE_URL: ", "must not be empty"},
    {VIA_ENV, "KAFKA_GROUP_ID", "  ", NULL, NULL, "KAFKA_GROUP_ID: ", "must not be empty"},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "https://u:pw-leak@cdn/{id}", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "\"https://u:****@cdn/{id}\": unknown placeholder"},
    {VIA_ENV, "FRAME_MODE", "fast", NULL, NULL,
     "FRAME_MODE: ", "\"fast\" is not one of fps, keyframes, scene"},
    {VIA_ENV, "LOG_LEVEL", "verbose", NULL, NULL,
     "LOG_LEVEL: ", "is not one of debug, info, warn, error"},
    {VIA_FLAG, "--log-format", "xml", NULL, NULL, "--log-format: ", "is not one of json, text"},
    {VIA_ENV, "MAX_VIDEO_BYTES", "12Q", NULL, NULL, "MAX_VIDEO_BYTES: ", "\"12Q\" is not a size"},
    {VIA_ENV, "MAX_VIDEO_BYTES", "-5", NULL, NULL, "MAX_VIDEO_BYTES: ", "out of range"},
    {VIA_ENV, "MAX_VIDEO_BYTES", "99999999999G", NULL, NULL, "MAX_VIDEO_BYTES: ", "too large"},
    {VIA_ENV, "HTTP_TIMEOUT_MS", "5x", NULL, NULL, "HTTP_TIMEOUT_MS: ", "is not a duration"},
    {VIA_ENV, "HTTP_TIMEOUT_MS", "0", NULL, NULL, "HTTP_TIMEOUT_MS: ", "out of range"},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "ftp://host/{code}", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "scheme \"ftp\""},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "videos/{code}.mp4", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "is not a URL template"},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "https://cdn/{platform}/{id}.mp4", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "unknown placeholder {id}"},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "s3:///{code}.mp4", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "needs a bucket"},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "s3://bucket", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "needs a bucket and a key"},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "https://cdn/{code", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "'{' without '}'"},
    {VIA_ENV, "SOURCE_URL_TEMPLATE", "https:///{code}", NULL, NULL,
     "SOURCE_URL_TEMPLATE: ", "has no host"},
    {VIA_ENV, "FRAMES_URL_TEMPLATE", "file://./frames/{code}.jpg", NULL, NULL,
     "FRAMES_URL_TEMPLATE: ", "must contain {index}"},
    {VIA_ENV, "FRAMES_URL_TEMPLATE", "file://./f/{index:abc}.jpg", NULL, NULL,
     "FRAMES_URL_TEMPLATE: ", "unknown placeholder {index:abc}"},
    {VIA_ENV, "FRAMES_URL_TEMPLATE", "file://./f/{index:6}.jpg", NULL, NULL,
     "FRAMES_URL_TEMPLATE: ", "unknown placeholder {index:6}"},
    {VIA_FLAG, "--frames-url-template", "gs://b/{index}", NULL, NULL,
     "--frames-url-template: ", "scheme \"gs\""},
    {VIA_ENV, "RETRY_BACKOFF_MS", "5000", "RETRY_BACKOFF_MAX_MS", "1000",
     "RETRY_BACKOFF_MAX_MS: ", "1000 is below RETRY_BACKOFF_MS (5000)"},
    {VIA_ENV, "ALLOWED_SOURCE_SCHEMES", "https,ftp", NULL, NULL,
     "ALLOWED_SOURCE_SCHEMES: ", "\"ftp\" is not one of https, http, s3, file"},
    {VIA_ENV, "ALLOWED_SOURCE_SCHEMES", "https,,http", NULL, NULL,
     "ALLOWED_SOURCE_SCHEMES: ", "empty"},
    {VIA_ENV, "ALLOWED_CONTAINERS", "mov,hls;concat", NULL, NULL,
     "ALLOWED_CONTAINERS: ", "';' is not part of a name"},
    {VIA_ENV, "ALLOWED_CODECS", "h264,,vp9", NULL, NULL, "ALLOWED_CODECS: ", "empty"},
    {VIA_ENV, "MAX_FRAME_PIXELS", "100", NULL, NULL, "MAX_FRAME_PIXELS: ", "out of range"},
    {VIA_ENV, "MAX_DECODE_SECONDS", "0", NULL, NULL, "MAX_DECODE_SECONDS: ", "out of range"},
    {VIA_ENV, "MAX_PACKETS_WITHOUT_FRAME", "x", NULL, NULL,
     "MAX_PACKETS_WITHOUT_FRAME: ", "not a whole number"},
    {VIA_ENV, "GROUP_PROTOCOL", "cooperative", NULL, NULL,
     "GROUP_PROTOCOL: ", "\"cooperative\" is not one of classic, consumer"},
    {VIA_FLAG, "--group-protocol", "Consumer", NULL, NULL,
     "--group-protocol: ", "\"Consumer\" is not one of classic, consumer"},
    {VIA_ENV, "METRICS_ADDR", "9400", NULL, NULL, "METRICS_ADDR: ", "is not host:port"},
    {VIA_ENV, "METRICS_ADDR", "localhost:99999", NULL, NULL, "METRICS_ADDR: ", "port"},
    {VIA_ENV, "METRICS_ADDR", "localhost:http", NULL, NULL, "METRICS_ADDR: ", "port"},
    {VIA_ENV, "KAFKA_TOPIC", "jobs", "KAFKA_RETRY_TOPIC", "jobs",
     "KAFKA_DLQ_TOPIC: ", "must differ"},
    {VIA_ENV, "KAFKA_CONFIG_FOO_BAR", "1", NULL, NULL,
     "KAFKA_CONFIG_FOO_BAR: ", "No such configuration property: \"foo.bar\""},
    {VIA_ARGS, NULL, "-X foo.bar=1", NULL, NULL,
     "-X foo.bar: ", "No such configuration property: \"foo.bar\""},
    {VIA_ARGS, NULL, "-Xacks=maybe", NULL, NULL, "-X acks: ", "maybe"},
    {VIA_ARGS, NULL, "-X nonsense", NULL, NULL, "-X nonsense: ", "expected prop=value"},
    {VIA_ARGS, NULL, "-X", NULL, NULL, "-X: ", "missing prop=value"},
    {VIA_ARGS, NULL, "--once --batch-size", NULL, NULL, "--batch-size: ", "missing value"},
    {VIA_ARGS, NULL, "--config", NULL, NULL, "--config: ", "missing FILE"},
    {VIA_ARGS, NULL, "--config=/nonexistent-frameq/x.conf", NULL, NULL,
     "/nonexistent-frameq/x.conf: ", "No such file"},
    {VIA_FILE, "frameq.conf", "# settings\n\nMAX_RETRIES=3\nMAX_RETRIS=3\n", NULL, NULL,
     ":4: ", "unknown setting \"MAX_RETRIS\" (did you mean MAX_RETRIES?)"},
    {VIA_FILE, "frameq.conf", "BATCH_SIZE=5\n\ngarbage here\n", NULL, NULL,
     ":3: ", "expected KEY=VALUE"},
    {VIA_FILE, "frameq.conf", "=5\n", NULL, NULL, ":1: ", "expected KEY=VALUE"},
    {VIA_FILE, "frameq.conf", "# c\nMAX_RETRIES=abc\n", NULL, NULL,
     ":2: ", "MAX_RETRIES: \"abc\" is not a whole number"},
    {VIA_FILE, "frameq.conf", "KAFKA_TOPIC=\"unterminated\n", NULL, NULL,
     ":1: ", "missing closing quote"},
    {VIA_FILE, "frameq.conf", "KAFKA_TOPIC=\"a\" b\n", NULL, NULL,
     ":1: ", "after the closing quote"},
    {VIA_FILE, "frameq.conf", "COMPLETELY_UNRELATED_THING=1\n", NULL, NULL,
     ":1: ", "unknown setting \"COMPLETELY_UNRELATED_THING\""},
    {VIA_FILE, "frameq.conf", "KAFKA_CONFIG_NO_SUCH_PROP=1\n", NULL, NULL,
     ":1: ", "No such configuration property: \"no.such.prop\""},
};

static void test_bad_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const bad_case_t *c = &bad_cases[i];
        clear_env();
        const char *args[16] = {"prog"};
        int n = 1;
        char words[256], where[600];
        snprintf(where, sizeof(where), "%s", c->where);
        switch (c->via) {
        case VIA_ENV:
            setenv(c->name, c->value, 1);
            break;
        case VIA_FLAG:
            args[n++] = c->name;
            args[n++] = c->value;
            break;
        case VIA_ARGS: {
            snprintf(words, sizeof(words), "%s", c->value);
            char *save = NULL;
            for (char *w = strtok_r(words, " ", &save); w && n < 15; w = strtok_r(NULL, " ", &save))
                args[n++] = w;
            break;
        }
        case VIA_FILE: {
            const char *path = write_file(c->name, c->value);
            snprintf(where, sizeof(where), "%s%s", path, c->where);
            args[n++] = "--config";
            args[n++] = path;
            break;
        }
        }
        args[n] = NULL;
        if (c->name2)
            setenv(c->name2, c->value2, 1);
        char *argv[16], err[512] = "";
        fq_config_t *cfg = fq_config_new();
        int rc = load_argv(cfg, args, NULL, argv, err, sizeof(err));
        fq_config_destroy(cfg);
        if (rc != -1)
            fail_msg("case %zu (%s=%s): accepted, want an error", i, c->name ? c->name : "argv",
                     c->value);
        if (strncmp(err, where, strlen(where)) != 0 || !strstr(err + strlen(where), c->why))
            fail_msg("case %zu: got \"%s\", want \"%s...%s...\"", i, err, where, c->why);
    }
}

/* Values that look odd but are fine. */
static void test_good_edge_values(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } ok[] = {
        {"MAX_RETRIES", "0"},
        {"MAX_RETRIES", " 7 "},
        {"METRICS_ADDR", "off"},
        {"METRICS_ADDR", ""},
        {"METRICS_ADDR", "[::1]:9400"},
        {"METRICS_ADDR", "127.0.0.1:0"},
        {"SOURCE_URL_TEMPLATE", "s3://videos/{platform}/{code}.mp4"},
        {"SOURCE_URL_TEMPLATE", "file:///srv/videos/{code}.mp4"},
        {"FRAMES_URL_TEMPLATE", "https://store:8080/f/{platform}/{code}/{index:06}.jpg"},
        {"FRAMES_URL_TEMPLATE", "file://./f/{code}/{index:012}.jpg"},
        {"MAX_VIDEO_BYTES", "1GiB"},
        {"SHUTDOWN_GRACE_MS", "0"},
        {"ALLOWED_SOURCE_SCHEMES", "file"},
        {"GROUP_PROTOCOL", "consumer"},
        {"JOB_INPUT", "[{\"platform\":\"x\",\"code\":\"y\"}]"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        clear_env();
        setenv(ok[i].name, ok[i].value, 1);
        char err[512] = "";
        fq_config_t *cfg = fq_config_new();
        int rc = load_simple(cfg, err, sizeof(err));
        fq_config_destroy(cfg);
        if (rc != 0)
            fail_msg("%s=\"%s\" rejected: %s", ok[i].name, ok[i].value, err);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* File syntax */

static void test_file_syntax(void **state)
{
    (void)state;
    const char *path = write_file("syntax.conf", "# frameq settings\n"
                                                 "\n"
                                                 "   # indented comment\n"
                                                 "export KAFKA_TOPIC=jobs\n"
                                                 "KAFKA_GROUP_ID = workers  # trailing comment\n"
                                                 "S3_REGION=\"eu west 1\"\n"
                                                 "WORKER_ID='w#1'\n"
                                                 "LOG_LEVEL=debug\r\n"
                                                 "DATABASE_URL=host=db password=x#y\n"
                                                 "KAFKA_CONFIG_CLIENT_ID=frameq-test\n"
                                                 "-X linger.ms=7\n"
                                                 "JOB_INPUT=\n");
    char err[512] = "";
    fq_config_t *cfg = fq_config_new();
    if (fq_config_load_file(cfg, path, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg->kafka_topic, "jobs");
    assert_string_equal(cfg->kafka_retry_topic, "jobs.retry"); /* derived after the file */
    assert_string_equal(cfg->kafka_group_id, "workers");
    assert_string_equal(cfg->s3_region, "eu west 1");
    assert_string_equal(cfg->worker_id, "w#1");
    assert_string_equal(cfg->log_level, "debug");
    assert_string_equal(cfg->database_url, "host=db password=x#y"); /* '#' inside a word stays */
    assert_null(cfg->job_input);                                    /* empty unsets */
    assert_int_equal(cfg->kafka_props_count, 2);
    assert_string_equal(cfg->kafka_props[0].name, "client.id");
    assert_string_equal(cfg->kafka_props[0].value, "frameq-test");
    assert_int_equal(cfg->kafka_props[0].origin, FQ_ORIGIN_FILE);
    assert_string_equal(cfg->kafka_props[1].name, "linger.ms");
    assert_string_equal(cfg->kafka_props[1].value, "7");
    fq_config_destroy(cfg);
}

/* What --print-config writes, a file reads back to the same values. */
static void test_print_roundtrip(void **state)
{
    (void)state;
    setenv("KAFKA_TOPIC", "rt.jobs", 1);
    setenv("S3_REGION", "eu west", 1); /* needs quoting */
    setenv("SOURCE_URL_TEMPLATE", "https://cdn.example/{platform}/{code}.mp4", 1);
    setenv("MAX_VIDEO_BYTES", "3000", 1);
    setenv("FRAME_MODE", "scene", 1);
    setenv("SCENE_THRESHOLD", "0.45", 1);
    setenv("KAFKA_CONFIG_CLIENT_ID", "rt", 1);
    char err[512] = "";
    fq_config_t *a = fq_config_new();
    assert_int_equal(load_simple(a, err, sizeof(err)), 0);
    char *text_a = print_to_string(a);
    clear_env();

    const char *path = write_file("roundtrip.conf", text_a);
    fq_config_t *b = fq_config_new();
    if (fq_config_load_file(b, path, err, sizeof(err)) != 0)
        fail_msg("reading back --print-config: %s", err);
    char *text_b = print_to_string(b);

    /* Same values line by line; only the origin comments differ. */
    const char *pa = text_a, *pb = text_b;
    while (*pa && *pb) {
        size_t la = strcspn(pa, "#"), lb = strcspn(pb, "#");
        while (la > 0 && pa[la - 1] == ' ')
            la--;
        while (lb > 0 && pb[lb - 1] == ' ')
            lb--;
        /* A quoted value may hold '#': compare up to the first '#' outside quotes is enough
         * here since no value of this case holds one. */
        if (la != lb || strncmp(pa, pb, la) != 0)
            fail_msg("roundtrip differs: \"%.*s\" vs \"%.*s\"", (int)la, pa, (int)lb, pb);
        pa = strchr(pa, '\n');
        pb = strchr(pb, '\n');
        if (!pa || !pb)
            break;
        pa++;
        pb++;
    }
    assert_true((pa == NULL) == (pb == NULL));
    assert_string_equal(b->s3_region, "eu west");
    assert_true(b->scene_threshold == 0.45);
    free(text_a);
    free(text_b);
    fq_config_destroy(a);
    fq_config_destroy(b);
}

/* ------------------------------------------------------------------------------------------ */
/* argv compaction */

static void test_argv_compaction(void **state)
{
    (void)state;
    const char *path = write_file("argv.conf", "MAX_FRAMES=77\n");
    char conf_eq[600];
    snprintf(conf_eq, sizeof(conf_eq), "--config=%s", path);
    const char *args[] = {"consumer",     "--once",
                          "--batch-size", "5",
                          "input.json",   "-X",
                          "acks=all",     "--role",
                          "main",         "-Xlinger.ms=5",
                          conf_eq,        "--max-retries=4",
                          "--unknown",    "--",
                          "--batch-size", "9",
                          "-Xnot.parsed", NULL};
    const char *want[] = {"consumer", "--once",       "input.json", "--role",
                          "main",     "--unknown",    "--",         "--batch-size",
                          "9",        "-Xnot.parsed", NULL};
    char *argv[32], err[512] = "";
    int argc = 0;
    fq_config_t *cfg = fq_config_new();
    if (load_argv(cfg, args, &argc, argv, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    int nwant = 0;
    while (want[nwant])
        nwant++;
    assert_int_equal(argc, nwant);
    for (int i = 0; i < nwant; i++)
        assert_string_equal(argv[i], want[i]);
    assert_null(argv[argc]);
    assert_int_equal(cfg->batch_size, 5);
    assert_int_equal(cfg->max_retries, 4);
    assert_int_equal(cfg->max_frames, 77);
    assert_int_equal(cfg->kafka_props_count, 2);
    assert_string_equal(cfg->kafka_props[0].name, "acks");
    assert_string_equal(cfg->kafka_props[0].value, "all");
    assert_int_equal(cfg->kafka_props[0].origin, FQ_ORIGIN_FLAG);
    assert_string_equal(cfg->kafka_props[1].name, "linger.ms");
    assert_string_equal(cfg->kafka_props[1].value, "5");
    fq_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------------ */
/* Kafka properties */

static void test_kafka_props(void **state)
{
    (void)state;
    setenv("KAFKA_BROKERS", "127.0.0.1:19092", 1);
    setenv("KAFKA_CONFIG_SECURITY_PROTOCOL", "plaintext", 1);
    setenv("KAFKA_CONFIG_CLIENT_ID", "from-env", 1);
    setenv("KAFKA_CONFIG_MESSAGE_MAX_BYTES", "2000000", 1);
    const char *args[] = {"prog", "-X", "client.id=from-flag", NULL};
    char *argv[4], err[512] = "";
    fq_config_t *cfg = fq_config_new();
    if (load_argv(cfg, args, NULL, argv, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg->kafka_props_count, 3);
    const char *want_names[] = {"security.protocol", "client.id", "message.max.bytes"};
    for (size_t i = 0; i < 3; i++) {
        bool found = false;
        for (size_t j = 0; j < cfg->kafka_props_count; j++)
            found |= strcmp(cfg->kafka_props[j].name, want_names[i]) == 0;
        if (!found)
            fail_msg("property %s missing", want_names[i]);
    }

    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, err, sizeof(err));
    if (!conf)
        fail_msg("%s", err);
    static const struct {
        const char *name, *value;
    } want[] = {{"bootstrap.servers", "127.0.0.1:19092"},
                {"security.protocol", "plaintext"},
                {"client.id", "from-flag"}, /* the flag layer wins over the environment */
                {"message.max.bytes", "2000000"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char value[256];
        size_t size = sizeof(value);
        assert_int_equal(rd_kafka_conf_get(conf, want[i].name, value, &size), RD_KAFKA_CONF_OK);
        assert_string_equal(value, want[i].value);
    }
    rd_kafka_conf_destroy(conf);

    char *text = print_to_string(cfg);
    char *line = print_line(text, "-X security.protocol=plaintext ");
    assert_non_null(line);
    assert_non_null(strstr(line, "# env KAFKA_CONFIG_SECURITY_PROTOCOL"));
    free(line);
    line = print_line(text, "-X client.id=from-flag ");
    assert_non_null(line);
    assert_non_null(strstr(line, "# flag -X client.id"));
    free(line);
    free(text);
    fq_config_destroy(cfg);
}

/* fq_config_kafka_conf names the property when a value set after load is bad. */
static void test_kafka_conf_error(void **state)
{
    (void)state;
    fq_config_t *cfg = fq_config_new();
    char err[512] = "";
    assert_int_equal(
        fq_config_set(cfg, "KAFKA_CONFIG_FOO_BAR", "1", FQ_ORIGIN_ENV, err, sizeof(err)), 0);
    assert_null(fq_config_kafka_conf(cfg, err, sizeof(err)));
    assert_string_equal(err, "KAFKA_CONFIG_FOO_BAR: No such configuration property: \"foo.bar\"");
    fq_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------------ */
/* Derived values */

static void test_derived(void **state)
{
    (void)state;
    static const struct {
        const char *env[3][2]; /* up to three settings */
        const char *retry, *dlq, *hosts;
    } cases[] = {
        {{{"KAFKA_TOPIC", "jobs"}}, "jobs.retry", "jobs.dlq", ""},
        {{{"KAFKA_TOPIC", "jobs"}, {"KAFKA_RETRY_TOPIC", "r"}}, "r", "jobs.dlq", ""},
        {{{"KAFKA_DLQ_TOPIC", "dead"}}, "extraction.jobs.retry", "dead", ""},
        {{{"SOURCE_URL_TEMPLATE", "https://user@CDN.Example.com:8443/{platform}/{code}.mp4"}},
         "extraction.jobs.retry",
         "extraction.jobs.dlq",
         "cdn.example.com:8443"},
        {{{"SOURCE_URL_TEMPLATE", "http://[::1]/{code}.mp4"}},
         "extraction.jobs.retry",
         "extraction.jobs.dlq",
         "[::1]:80"},
        {{{"SOURCE_URL_TEMPLATE", "https://{platform}.cdn/{code}.mp4"}},
         "extraction.jobs.retry",
         "extraction.jobs.dlq",
         ""},
        {{{"SOURCE_URL_TEMPLATE", "s3://videos/{platform}/{code}.mp4"},
          {"S3_ENDPOINT", "http://127.0.0.1:17070"}},
         "extraction.jobs.retry",
         "extraction.jobs.dlq",
         "videos,127.0.0.1:17070"},
        {{{"SOURCE_URL_TEMPLATE", "s3://videos/{code}.mp4"}, {"S3_REGION", "eu-west-1"}},
         "extraction.jobs.retry",
         "extraction.jobs.dlq",
         "videos,s3.eu-west-1.amazonaws.com:443"},
        {{{"SOURCE_URL_TEMPLATE", "file:///srv/{code}.mp4"}},
         "extraction.jobs.retry",
         "extraction.jobs.dlq",
         ""},
        {{{"SOURCE_URL_TEMPLATE", "https://cdn.example.com/{code}"},
          {"ALLOWED_SOURCE_HOSTS", " A.example , b.example"}},
         "extraction.jobs.retry",
         "extraction.jobs.dlq",
         "a.example,b.example"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        clear_env();
        for (int k = 0; k < 3 && cases[i].env[k][0]; k++)
            setenv(cases[i].env[k][0], cases[i].env[k][1], 1);
        char err[512] = "";
        fq_config_t *cfg = fq_config_new();
        if (load_simple(cfg, err, sizeof(err)) != 0)
            fail_msg("case %zu: %s", i, err);
        assert_string_equal(cfg->kafka_retry_topic, cases[i].retry);
        assert_string_equal(cfg->kafka_dlq_topic, cases[i].dlq);
        if (strcmp(cfg->allowed_source_hosts, cases[i].hosts) != 0)
            fail_msg("case %zu: hosts \"%s\", want \"%s\"", i, cfg->allowed_source_hosts,
                     cases[i].hosts);
        fq_config_destroy(cfg);
    }

    /* An empty value means "derive it" for derived settings. */
    clear_env();
    setenv("KAFKA_RETRY_TOPIC", "", 1);
    setenv("WORKER_CONCURRENCY", "", 1);
    setenv("WORKER_ID", "", 1);
    char err[512] = "", host[256] = "";
    gethostname(host, sizeof(host));
    fq_config_t *cfg = fq_config_new();
    if (load_simple(cfg, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg->kafka_retry_topic, "extraction.jobs.retry");
    assert_string_equal(cfg->worker_id, host);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg->worker_concurrency, cores < 1 ? 1 : cores);
    char *text = print_to_string(cfg);
    char *line = print_line(text, "WORKER_ID=");
    assert_non_null(strstr(line, "# derived"));
    free(line);
    free(text);
    fq_config_destroy(cfg);

    /* Explicit values are kept. */
    clear_env();
    setenv("WORKER_ID", "pod-7", 1);
    setenv("WORKER_CONCURRENCY", "3", 1);
    cfg = fq_config_new();
    assert_int_equal(load_simple(cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->worker_id, "pod-7");
    assert_int_equal(cfg->worker_concurrency, 3);
    fq_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------------ */
/* Secrets */

static void test_print_masks_secrets(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value, *secret;
    } set[] = {
        {"AWS_SECRET_ACCESS_KEY", "aws-topsecret-1", "aws-topsecret-1"},
        {"DATABASE_URL", "postgresql://frameq:pg-secret-2@db:5432/frameq", "pg-secret-2"},
        {"S3_ENDPOINT", "http://user:s3-secret-3@127.0.0.1:17070", "s3-secret-3"},
        {"KAFKA_CONFIG_SASL_PASSWORD", "sasl-secret-4", "sasl-secret-4"},
        {"KAFKA_CONFIG_SSL_KEY_PASSWORD", "ssl-secret-5", "ssl-secret-5"},
        {"KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_SECRET", "oauth-secret-6", "oauth-secret-6"},
        {"KAFKA_CONFIG_SSL_KEY_PEM", "pem-secret-7", "pem-secret-7"},
        {"KAFKA_CONFIG_SSL_KEYSTORE_PASSWORD", "ks-secret-8", "ks-secret-8"},
        {"KAFKA_CONFIG_SASL_USERNAME", "visible-user", NULL},
        {"KAFKA_CONFIG_SSL_KEY_LOCATION", "/etc/visible.key", NULL},
        {"AWS_ACCESS_KEY_ID", "visible-key-id", NULL},
        {"JOB_INPUT", "[\n {\"platform\":\"a\",\"code\":\"b\"}\n]", NULL},
    };
    fq_config_t *cfg = fq_config_new();
    char err[512] = "";
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
        if (fq_config_set(cfg, set[i].name, set[i].value, FQ_ORIGIN_ENV, err, sizeof(err)) != 0)
            fail_msg("%s", err);
    char *text = print_to_string(cfg);
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
        if (set[i].secret && strstr(text, set[i].secret))
            fail_msg("secret of %s printed:\n%s", set[i].name, text);
        if (!set[i].secret && !strchr(set[i].value, '\n') && !strstr(text, set[i].value))
            fail_msg("%s should be visible:\n%s", set[i].name, text);
    }
    /* Every line of the output is a setting: nothing spills onto extra lines. */
    size_t lines = 0;
    for (const char *c = text; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, N_DESIGN + cfg->kafka_props_count);
    char *line = print_line(text, "AWS_SECRET_ACCESS_KEY=****");
    assert_non_null(line);
    free(line);
    line = print_line(text, "DATABASE_URL=postgresql://frameq:****@db:5432/frameq ");
    assert_non_null(line);
    free(line);
    line = print_line(text, "-X sasl.password=****");
    assert_non_null(line);
    free(line);
    free(text);

    /* An unset secret prints empty, not a mask that suggests it is set. */
    fq_config_t *empty = fq_config_new();
    text = print_to_string(empty);
    line = print_line(text, "AWS_SECRET_ACCESS_KEY=");
    assert_non_null(line);
    assert_null(strstr(line, "****"));
    free(line);
    free(text);
    fq_config_destroy(empty);
    fq_config_destroy(cfg);
}

static void test_mask_secret_url(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"postgresql://frameq:frameq-local@127.0.0.1:55432/frameq",
         "postgresql://frameq:****@127.0.0.1:55432/frameq"},
        {"postgres://u:p@ss@h/db", "postgres://u:****@h/db"},
        {"postgresql://u@h/db", "postgresql://u@h/db"},
        {"postgresql:///frameq", "postgresql:///frameq"},
        {"postgresql://h/db?user=u&password=pw&sslmode=require",
         "postgresql://h/db?user=u&password=****&sslmode=require"},
        {"postgresql://h/db?sslpassword=pw", "postgresql://h/db?sslpassword=****"},
        {"host=h user=u password=secret dbname=d", "host=h user=u password=**** dbname=d"},
        {"host=h password = 'se cret\\'x' dbname=d", "host=h password = **** dbname=d"},
        {"password=only", "password=****"},
        {"host=h dbname=d", "host=h dbname=d"},
        {"https://ak:sk@s3.local:9000/bucket", "https://ak:****@s3.local:9000/bucket"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[256];
        const char *got = fq_config_mask_secret_url(cases[i].in, buf, sizeof(buf));
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("mask(\"%s\") = \"%s\", want \"%s\"", cases[i].in, got, cases[i].want);
    }
    /* A short buffer truncates but stays a C string, and leaks no secret. */
    char small[12];
    const char *got =
        fq_config_mask_secret_url("postgresql://u:pw-secret@h/db", small, sizeof(small));
    assert_true(strlen(got) < sizeof(small));
    assert_null(strstr(got, "pw-secret"));
    char buf[8];
    assert_string_equal(fq_config_mask_secret_url(NULL, buf, sizeof(buf)), "");
}

/* ------------------------------------------------------------------------------------------ */
/* fq_config_set and small helpers */

static void test_set_api(void **state)
{
    (void)state;
    fq_config_t *cfg = fq_config_new();
    char err[512] = "";
    assert_int_equal(fq_config_set(cfg, "BATCH_SIZ", "5", FQ_ORIGIN_ENV, err, sizeof(err)), -1);
    assert_string_equal(err, "unknown setting \"BATCH_SIZ\" (did you mean BATCH_SIZE?)");
    assert_int_equal(fq_config_set(cfg, "BATCH_SIZE", "x", FQ_ORIGIN_ENV, err, sizeof(err)), -1);
    assert_string_equal(err, "BATCH_SIZE: \"x\" is not a whole number");
    assert_int_equal(cfg->batch_size, 10); /* a failed set leaves the old value */

    assert_int_equal(
        fq_config_set(cfg, "S3_ENDPOINT", "http://s3:1", FQ_ORIGIN_ENV, err, sizeof(err)), 0);
    assert_string_equal(cfg->s3_endpoint, "http://s3:1");
    assert_int_equal(fq_config_set(cfg, "S3_ENDPOINT", "", FQ_ORIGIN_ENV, err, sizeof(err)), 0);
    assert_null(cfg->s3_endpoint); /* empty unsets a nullable setting */

    assert_int_equal(fq_config_set(cfg, "KAFKA_TOPIC", "t2", FQ_ORIGIN_FLAG, err, sizeof(err)), 0);
    assert_string_equal(cfg->kafka_dlq_topic, "t2.dlq"); /* derived follows */

    assert_int_equal(fq_config_set(cfg, "ALLOWED_SOURCE_SCHEMES", " HTTPS , file ", FQ_ORIGIN_ENV,
                                   err, sizeof(err)),
                     0);
    assert_string_equal(cfg->allowed_source_schemes, "https,file");

    /* fq_config_origin: where a setting's value came from, even when it equals the default */
    assert_int_equal(fq_config_origin(cfg, "DATABASE_URL"), FQ_ORIGIN_DEFAULT);
    assert_int_equal(fq_config_set(cfg, "DATABASE_URL", "postgresql:///frameq", FQ_ORIGIN_FILE, err,
                                   sizeof(err)),
                     0);
    assert_int_equal(fq_config_origin(cfg, "DATABASE_URL"), FQ_ORIGIN_FILE);
    assert_int_equal(fq_config_origin(cfg, "KAFKA_TOPIC"), FQ_ORIGIN_FLAG);
    assert_int_equal(fq_config_origin(cfg, "NO_SUCH_SETTING"), FQ_ORIGIN_DEFAULT);

    assert_string_equal(fq_frame_mode_name(FQ_FRAME_MODE_FPS), "fps");
    assert_string_equal(fq_frame_mode_name(FQ_FRAME_MODE_KEYFRAMES), "keyframes");
    assert_string_equal(fq_frame_mode_name(FQ_FRAME_MODE_SCENE), "scene");
    fq_config_destroy(cfg);
    fq_config_destroy(NULL);
}

/* ---- shared readers: integers, URL passwords, template placeholders -------------------- */

static void test_parse_int64(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t min, max;
        int rc;
        int64_t want;
        const char *why;
    } cases[] = {
        {"42", 1, 100, 0, 42, NULL},
        {"-1", -1, 1000, 0, -1, NULL},
        {"0", 1, 100000, -1, 0, "0 is out of range 1..100000"},
        {"12x", 0, 100, -1, 0, "\"12x\" is not a whole number"},
        {" 5", 0, 100, -1, 0, "is not a whole number"},
        {"", 0, 100, -1, 0, "must not be empty"},
        {"99999999999999999999", 0, INT64_MAX, -1, 0, "is too large"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = 0;
        char why[128] = "";
        int rc =
            fq_config_parse_int64(cases[i].in, cases[i].min, cases[i].max, &v, why, sizeof(why));
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0)
            assert_int_equal(v, cases[i].want);
        else if (!strstr(why, cases[i].why))
            fail_msg("'%s': why '%s' lacks '%s'", cases[i].in, why, cases[i].why);
    }
}

static void test_url_password(void **state)
{
    (void)state;
    static const struct {
        const char *url, *want; /* want NULL: no password */
    } cases[] = {
        {"postgresql://u:s3cret@h/db", "s3cret"},
        {"postgres://u:p@ss@h:5432/db?sslmode=require", "p@ss"}, /* the last '@' ends it */
        {"postgresql://u:@h/db", ""},
        {"postgresql://u@h/db", NULL},
        {"postgresql://h/db?password=x", NULL}, /* a query parameter is not userinfo */
        {"host=h password=x", NULL},
        {"s3://k:v@bucket/key", "v"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *pw = NULL;
        size_t len = 0;
        bool found = fq_config_url_password(cases[i].url, &pw, &len);
        if (!cases[i].want) {
            assert_false(found);
            continue;
        }
        assert_true(found);
        assert_int_equal(len, strlen(cases[i].want));
        assert_memory_equal(pw, cases[i].want, len);
    }
}

static void test_template_placeholders(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        fq_url_placeholder_t want;
        int width;
    } cases[] = {
        {"platform", FQ_URL_PH_PLATFORM, 0}, {"code", FQ_URL_PH_CODE, 0},
        {"index", FQ_URL_PH_INDEX, 0},       {"index:05", FQ_URL_PH_INDEX, 5},
        {"index:012", FQ_URL_PH_INDEX, 12},  {"index:5", FQ_URL_PH_UNKNOWN, 0},
        {"index:0", FQ_URL_PH_UNKNOWN, 0},   {"index:0123", FQ_URL_PH_UNKNOWN, 0},
        {"Platform", FQ_URL_PH_UNKNOWN, 0},  {"", FQ_URL_PH_UNKNOWN, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int width = -1;
        fq_url_placeholder_t got =
            fq_url_template_placeholder(cases[i].name, strlen(cases[i].name), &width);
        if (got != cases[i].want || width != cases[i].width)
            fail_msg("{%s}: got %d width %d, want %d width %d", cases[i].name, (int)got, width,
                     (int)cases[i].want, cases[i].width);
    }
    char why[256];
    assert_int_equal(fq_url_template_check("file://./f/{code}.jpg", true, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "must contain {index} (or {index:0N})"));
    assert_int_equal(fq_url_template_check("s3://b/{nope}", false, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "unknown placeholder {nope}; known: " FQ_URL_PLACEHOLDERS));
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/fq-config-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_name_in_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_edge_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_argv_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_props, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_conf_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_derived, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_masks_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mask_secret_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_api, setup, teardown),
        cmocka_unit_test(test_parse_int64),
        cmocka_unit_test(test_url_password),
        cmocka_unit_test(test_template_placeholders),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Remove the scratch files. */
    const char *names[] = {"layers.conf", "frameq.conf", "syntax.conf", "roundtrip.conf",
                           "argv.conf"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    return failed;
}
