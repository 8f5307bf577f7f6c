/* Integration tests for pipeline/fetch.c against real servers: tests/tools/fault_server.py
 * (started here) for every HTTP fault, and the stack's S3 (versitygw) for s3:// sources.
 *
 * Needs FQ_SOURCE_DIR (set by CTest) and the stack's S3_ENDPOINT, S3_REGION,
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (`deploy/local/up && . .stack/env`): without them
 * the test fails, it does not skip. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "fq_fetch.h"
#include "fq_http.h"
#include "fq_test_env.h"
#include "fq_test_fault.h"
#include "fq_test_error.h"

#define SMALL_BYTES (200 * 1000)  /* served as v.mp4 */
#define LARGE_BYTES (1536 * 1024) /* served as large.mp4: over the limit */
#define LIMIT_BYTES (1024 * 1024) /* MAX_VIDEO_BYTES in these tests */

static struct {
    fq_test_site_t site;
    char tmpdir[192];
    unsigned char *small;
} g;

/* ---- helpers ------------------------------------------------------------------------- */

static void fill_pattern(unsigned char *buf, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (unsigned char)(x >> 24);
    }
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0)
        fail_msg("cannot write %s: %s", path, strerror(errno));
}

static int count_open_fds(void)
{
    return fq_test_count_dir_entries("/proc/self/fd") - 1; /* the DIR's own fd */
}

static fq_config_t test_config(void)
{
    fq_config_t cfg = {
        .allowed_source_schemes = "http,https,s3",
        .allowed_source_hosts = "127.0.0.1",
        .max_video_bytes = LIMIT_BYTES,
        .http_timeout_ms = 3000,
    };
    fq_test_s3_settings(&cfg);
    return cfg;
}

static fq_fetch_t *new_fetch(const fq_config_t *cfg)
{
    char errstr[256];
    fq_fetch_t *fetch = fq_fetch_new(cfg, errstr, sizeof(errstr));
    if (!fetch)
        fail_msg("fq_fetch_new: %s", errstr);
    return fetch;
}

static fq_error_t *fetch_url(fq_fetch_t *fetch, const char *url, fq_source_t *src)
{
    fq_item_t item = {.platform = "test", .code = "item1", .video_url = (char *)url};
    return fq_fetch_open(fetch, &item, src);
}

static void assert_source_is(fq_source_t *src, const unsigned char *want, size_t n)
{
    assert_true(src->fd >= 0);
    assert_int_equal(src->size, (int64_t)n);
    unsigned char *got = malloc(n);
    assert_non_null(got);
    assert_int_equal(pread(src->fd, got, n, 0), (ssize_t)n);
    assert_memory_equal(got, want, n);
    free(got);
}

/* ---- setup --------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (fq_test_site_start(&g.site, "fetch") != 0)
        return -1;
    snprintf(g.tmpdir, sizeof(g.tmpdir), "%s/tmp", g.site.dir);
    if (mkdir(g.tmpdir, 0700) != 0)
        return -1;
    g.small = malloc(SMALL_BYTES);
    unsigned char *large = malloc(LARGE_BYTES);
    if (!g.small || !large)
        return -1;
    fill_pattern(g.small, SMALL_BYTES, 1);
    fill_pattern(large, LARGE_BYTES, 2);
    char path[256];
    snprintf(path, sizeof(path), "%s/v.mp4", g.site.www);
    write_file(path, g.small, SMALL_BYTES);
    snprintf(path, sizeof(path), "%s/large.mp4", g.site.www);
    write_file(path, large, LARGE_BYTES);
    free(large);
    /* Downloads land in a private TMPDIR, so leftovers can be counted. */
    setenv("TMPDIR", g.tmpdir, 1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fq_test_site_stop(&g.site);
    free(g.small);
    curl_global_cleanup();
    return 0;
}

/* ---- HTTP faults --------------------------------------------------------------------- */

typedef struct fault_case {
    const char *path;
    int ok; /* 1: the bytes of v.mp4 */
    fq_stage_t stage;
    fq_class_t klass;
    fq_error_domain_t domain;     /* of code: FQ_ERROR_DOMAIN_HTTP or _CURL */
    int code;                     /* HTTP status or curl code; 0 = do not check */
    int64_t retry_min, retry_max; /* Retry-After window in ms (0/0 = none expected) */
    const char *msg;
} fault_case_t;

static const fault_case_t fault_cases[] = {
    {"/ok/v.mp4", 1, 0, 0, FQ_ERROR_DOMAIN_NONE, 0, 0, 0, NULL},
    {"/404/v.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_HTTP, 404, 0, 0,
     "HTTP 404"},
    {"/500/v.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_HTTP, 500, 0, 0,
     "HTTP 500"},
    {"/429/7/v.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_HTTP, 429, 7000, 7000,
     "HTTP 429"},
    /* The date is 120 s ahead with 1 s resolution; the clock may move while we run. */
    {"/429date/v.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_HTTP, 429, 1000,
     121000, "HTTP 429"},
    {"/stall/v.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_CURL,
     CURLE_OPERATION_TIMEDOUT, 0, 0, "timed out"},
    {"/short/v.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_CURL,
     CURLE_PARTIAL_FILE, 0, 0, NULL},
    {"/big/v.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_NONE, 0, 0, 0,
     "video is larger than MAX_VIDEO_BYTES (1048576 bytes)"},
    {"/ok/large.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_NONE, 0, 0, 0,
     "video is larger than MAX_VIDEO_BYTES"},
    /* No Content-Length: the limit is enforced while streaming. */
    {"/chunked/large.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_NONE, 0, 0, 0,
     "video is larger than MAX_VIDEO_BYTES"},
    {"/chunked/v.mp4", 1, 0, 0, FQ_ERROR_DOMAIN_NONE, 0, 0, 0, NULL},
    {"/redirect/1/v.mp4", 1, 0, 0, FQ_ERROR_DOMAIN_NONE, 0, 0, 0, NULL},
    {"/redirect/3/v.mp4", 1, 0, 0, FQ_ERROR_DOMAIN_NONE, 0, 0, 0, NULL},
    {"/redirect/4/v4.mp4", 0, FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_HTTP, 302, 0, 0,
     "too many redirects"},
    {"/redirect-loop/x", 0, FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_HTTP, 302, 0, 0,
     "too many redirects"},
    {"/redirect-to/file%3A%2F%2F%2Fetc%2Fpasswd", 0, FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
     FQ_ERROR_DOMAIN_NONE, 0, 0, 0, "redirect scheme file is not in ALLOWED_SOURCE_SCHEMES"},
    {"/redirect-to/http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F", 0, FQ_STAGE_VALIDATE,
     FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_NONE, 0, 0, 0,
     "redirect host 169.254.169.254:80 is not in ALLOWED_SOURCE_HOSTS"},
};

static void test_fault_paths(void **state)
{
    (void)state;
    fq_config_t cfg = test_config();
    int fds_before = count_open_fds();
    fq_fetch_t *fetch = new_fetch(&cfg);
    for (size_t i = 0; i < sizeof(fault_cases) / sizeof(fault_cases[0]); i++) {
        const fault_case_t *c = &fault_cases[i];
        char url[512];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", g.site.port, c->path);
        fq_source_t src;
        fq_error_t *err = fetch_url(fetch, url, &src);
        if (c->ok) {
            if (err)
                fail_msg("%s: %s", c->path, fq_error_message(err));
            assert_source_is(&src, g.small, SMALL_BYTES);
            assert_int_equal(src.http_status, 200);
            fq_fetch_source_close(&src);
            continue;
        }
        if (!err)
            fail_msg("%s: fetched %lld bytes instead of failing", c->path, (long long)src.size);
        fprintf(stderr, "  %-40s -> %s/%s: %s\n", c->path, fq_stage_name(fq_error_stage(err)),
                fq_class_name(fq_error_class(err)), fq_error_message(err));
        assert_int_equal(src.fd, -1);
        if (fq_error_stage(err) != c->stage || fq_error_class(err) != c->klass)
            fail_msg("%s: got %s/%s, want %s/%s", c->path, fq_stage_name(fq_error_stage(err)),
                     fq_class_name(fq_error_class(err)), fq_stage_name(c->stage),
                     fq_class_name(c->klass));
        if (c->code) {
            assert_int_equal(fq_error_domain(err), c->domain);
            assert_int_equal(fq_error_code(err), c->code);
        }
        int64_t ra = fq_error_retry_after_ms(err);
        if (ra < c->retry_min || ra > c->retry_max)
            fail_msg("%s: Retry-After %lld ms, want %lld..%lld", c->path, (long long)ra,
                     (long long)c->retry_min, (long long)c->retry_max);
        if (c->msg && !strstr(fq_error_message(err), c->msg))
            fail_msg("%s: message '%s' lacks '%s'", c->path, fq_error_message(err), c->msg);
        fq_error_destroy(err);
    }
    /* A chain of 4 redirects: 3 are followed, the 4th target is never requested. */
    assert_int_equal(fq_test_fault_count(g.site.port, "/redirect/4/v4.mp4"), 1);
    assert_int_equal(fq_test_fault_count(g.site.port, "/redirect/1/v4.mp4"), 1);
    assert_int_equal(fq_test_fault_count(g.site.port, "/ok/v4.mp4"), 0);
    fq_fetch_destroy(fetch);
    assert_int_equal(fq_test_count_dir_entries(g.tmpdir), 0);
    assert_int_equal(count_open_fds(), fds_before);
}

static void test_redirect_to_disallowed_host_is_never_contacted(void **state)
{
    (void)state;
    fq_config_t cfg = test_config();
    fq_fetch_t *fetch = new_fetch(&cfg);
    /* "localhost" reaches the same server, but only 127.0.0.1 is listed. */
    char url[512];
    snprintf(url, sizeof(url),
             "http://127.0.0.1:%d/redirect-to/http%%3A%%2F%%2Flocalhost%%3A%d%%2Fok%%2Fnever.mp4",
             g.site.port, g.site.port);
    fq_source_t src;
    fq_error_t *err = fetch_url(fetch, url, &src);
    fq_test_assert_error(err, FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, FQ_TEST_ANY, FQ_TEST_ANY);
    assert_non_null(strstr(fq_error_message(err), "redirect host localhost:"));
    fq_error_destroy(err);
    assert_int_equal(fq_test_fault_count(g.site.port, "/ok/never.mp4"), 0);
    /* The same target is fetched once it is allowed: the refusal above was the allow-list. */
    cfg.allowed_source_hosts = "127.0.0.1,localhost";
    fq_fetch_t *open_fetch = new_fetch(&cfg);
    err = fetch_url(open_fetch, url, &src);
    assert_non_null(err); /* never.mp4 does not exist: 404 from the server itself */
    assert_int_equal(fq_error_code(err), 404);
    fq_error_destroy(err);
    assert_int_equal(fq_test_fault_count(g.site.port, "/ok/never.mp4"), 1);
    fq_fetch_destroy(open_fetch);
    fq_fetch_destroy(fetch);
}

static void test_flaky_then_works(void **state)
{
    (void)state;
    fq_config_t cfg = test_config();
    fq_fetch_t *fetch = new_fetch(&cfg);
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/flaky/2/fetch-flaky/v.mp4", g.site.port);
    fq_source_t src;
    for (int attempt = 1; attempt <= 2; attempt++) {
        fq_error_t *err = fetch_url(fetch, url, &src);
        fq_test_assert_error(err, FQ_TEST_ANY, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_HTTP, 500);
        fq_error_destroy(err);
    }
    fq_error_t *err = fetch_url(fetch, url, &src);
    if (err)
        fail_msg("third attempt: %s", fq_error_message(err));
    assert_source_is(&src, g.small, SMALL_BYTES);
    fq_fetch_source_close(&src);
    fq_fetch_destroy(fetch);
}

static void test_connection_refused_is_retriable(void **state)
{
    (void)state;
    int port = fq_test_closed_port();
    fq_config_t cfg = test_config();
    fq_fetch_t *fetch = new_fetch(&cfg);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v.mp4", port);
    fq_source_t src;
    fq_error_t *err = fetch_url(fetch, url, &src);
    fq_test_assert_error(err, FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_CURL,
                         CURLE_COULDNT_CONNECT);
    fq_error_destroy(err);
    fq_fetch_destroy(fetch);
}

/* The configured source serves every item: when its host cannot be reached at all, that is an
 * outage (no attempt burned); the same failure through an item's video_url stays retriable. */
static void test_unreachable_template_source_is_outage(void **state)
{
    (void)state;
    int port = fq_test_closed_port();
    fq_config_t cfg = test_config();
    char tmpl[256];
    snprintf(tmpl, sizeof(tmpl), "http://127.0.0.1:%d/{code}.mp4", port);
    cfg.source_url_template = tmpl;
    fq_fetch_t *fetch = new_fetch(&cfg);
    fq_item_t item = {.platform = "test", .code = "v"};
    fq_source_t src;
    fq_error_t *err = fq_fetch_open(fetch, &item, &src);
    fq_test_assert_error(err, FQ_STAGE_FETCH, FQ_CLASS_OUTAGE, FQ_ERROR_DOMAIN_CURL,
                         CURLE_COULDNT_CONNECT);
    fq_error_destroy(err);

    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v.mp4", port);
    err = fetch_url(fetch, url, &src);
    assert_non_null(err);
    assert_int_equal(fq_error_class(err), FQ_CLASS_RETRIABLE);
    fq_error_destroy(err);
    fq_fetch_destroy(fetch);
}

static void test_template_source(void **state)
{
    (void)state;
    fq_config_t cfg = test_config();
    char tmpl[256];
    snprintf(tmpl, sizeof(tmpl), "http://127.0.0.1:%d/ok/{code}.mp4", g.site.port);
    cfg.source_url_template = tmpl;
    cfg.allowed_source_hosts = ""; /* the template's host needs no listing */
    fq_fetch_t *fetch = new_fetch(&cfg);
    fq_item_t item = {.platform = "test", .code = "v"};
    fq_source_t src;
    fq_error_t *err = fq_fetch_open(fetch, &item, &src);
    if (err)
        fail_msg("template fetch: %s", fq_error_message(err));
    assert_source_is(&src, g.small, SMALL_BYTES);
    fq_fetch_source_close(&src);
    fq_fetch_destroy(fetch);
}

static void test_file_source_only_when_allowed(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof(url), "file://%s/v.mp4", g.site.www);
    fq_config_t cfg = test_config();
    fq_fetch_t *fetch = new_fetch(&cfg);
    fq_source_t src;
    fq_error_t *err = fetch_url(fetch, url, &src);
    assert_non_null(err);
    assert_int_equal(fq_error_stage(err), FQ_STAGE_VALIDATE);
    assert_non_null(strstr(fq_error_message(err), "scheme file is not in ALLOWED_SOURCE_SCHEMES"));
    fq_error_destroy(err);
    fq_fetch_destroy(fetch);

    cfg.allowed_source_schemes = "http,file";
    fetch = new_fetch(&cfg);
    err = fetch_url(fetch, url, &src);
    if (err)
        fail_msg("file source: %s", fq_error_message(err));
    assert_source_is(&src, g.small, SMALL_BYTES);
    fq_fetch_source_close(&src);
    fq_fetch_destroy(fetch);
}

/* ---- S3 ------------------------------------------------------------------------------ */

static void test_s3_source(void **state)
{
    (void)state;
    fq_test_s3_require();
    fq_config_t cfg = test_config();
    cfg.allowed_source_hosts = "frameq-videos";
    char key[128];
    snprintf(key, sizeof(key), "itest/fetch-%ld-%ld.mp4", (long)getpid(), (long)time(NULL));
    fq_error_t *err = fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "PUT", "frameq-videos", key, g.small,
                                    SMALL_BYTES, NULL, NULL, NULL, 0);
    if (err)
        fail_msg("PUT s3://frameq-videos/%s: %s", key, fq_error_message(err));

    int fds_before = count_open_fds();
    fq_fetch_t *fetch = new_fetch(&cfg);
    char url[256];
    snprintf(url, sizeof(url), "s3://frameq-videos/%s", key);
    fq_source_t src;
    err = fetch_url(fetch, url, &src);
    if (err)
        fail_msg("fetch %s: %s", url, fq_error_message(err));
    assert_source_is(&src, g.small, SMALL_BYTES);
    assert_string_equal(src.url, url);
    fq_fetch_source_close(&src);

    /* Through the template too, and a missing key is a permanent 404 (NoSuchKey). */
    snprintf(url, sizeof(url), "s3://frameq-videos/itest/missing-%ld.mp4", (long)getpid());
    err = fetch_url(fetch, url, &src);
    fq_test_assert_error(err, FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_HTTP, 404);
    fprintf(stderr, "  missing key -> %s\n", fq_error_message(err));
    fq_error_destroy(err);
    fq_fetch_destroy(fetch);

    /* A wrong secret: an outage of the configured endpoint (DESIGN §3, nothing burned), says
     * authentication, and never shows the secret. */
    cfg.aws_secret_access_key = "definitely-wrong-secret";
    fetch = new_fetch(&cfg);
    snprintf(url, sizeof(url), "s3://frameq-videos/%s", key);
    err = fetch_url(fetch, url, &src);
    assert_non_null(err);
    fprintf(stderr, "  wrong secret -> %s\n", fq_error_message(err));
    fq_test_assert_error(err, FQ_TEST_ANY, FQ_CLASS_OUTAGE, FQ_ERROR_DOMAIN_HTTP, 403);
    assert_non_null(strstr(fq_error_message(err), "S3 authentication failed (HTTP 403"));
    assert_null(strstr(fq_error_message(err), "definitely-wrong-secret"));
    fq_error_destroy(err);
    fq_fetch_destroy(fetch);

    cfg = test_config();
    err = fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "DELETE", "frameq-videos", key, NULL, 0, NULL, NULL,
                        NULL, 0);
    fq_error_destroy(err);
    assert_int_equal(fq_test_count_dir_entries(g.tmpdir), 0);
    assert_int_equal(count_open_fds(), fds_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_paths),
        cmocka_unit_test(test_redirect_to_disallowed_host_is_never_contacted),
        cmocka_unit_test(test_flaky_then_works),
        cmocka_unit_test(test_connection_refused_is_retriable),
        cmocka_unit_test(test_unreachable_template_source_is_outage),
        cmocka_unit_test(test_template_source),
        cmocka_unit_test(test_file_source_only_when_allowed),
        cmocka_unit_test(test_s3_source),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
