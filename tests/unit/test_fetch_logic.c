/* Unit tests for pipeline/fetch.c that need no network: URL templates, Retry-After parsing,
 * configuration checks of fq_fetch_new, refusals before any connection, and file:// sources
 * (opened in place: size limit, symlinks, non-regular files). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fq_fetch.h"

/* ---- fq_url_expand ------------------------------------------------------------------- */

typedef struct expand_case {
    const char *name;
    const char *tmpl;
    int index;
    size_t out_size;
    const char *want; /* NULL = must fail */
    const char *msg;  /* substring of errstr on failure */
} expand_case_t;

static const expand_case_t expand_cases[] = {
    {"all placeholders", "s3://v/{platform}/{code}/{index}.jpg", 7, 256,
     "s3://v/instagram/ABC_12-x/7.jpg", NULL},
    {"zero padded", "file://./f/{code}/{index:05}.jpg", 42, 256, "file://./f/ABC_12-x/00042.jpg",
     NULL},
    {"padding narrower than value", "{index:02}", 12345, 64, "12345", NULL},
    {"two-digit width", "{index:012}", 3, 64, "000000000003", NULL},
    {"repeated", "{platform}{platform}-{code}", 0, 64, "instagraminstagram-ABC_12-x", NULL},
    {"no placeholders", "https://cdn/x.mp4", 0, 64, "https://cdn/x.mp4", NULL},
    {"lone closing brace", "https://cdn/}x", 0, 64, "https://cdn/}x", NULL},
    {"exact fit", "{code}", 0, sizeof("ABC_12-x"), "ABC_12-x", NULL},
    {"unknown placeholder", "https://cdn/{user}/{code}", 0, 256, NULL,
     "unknown placeholder {user}"},
    {"wrong case", "{Platform}", 0, 256, NULL, "unknown placeholder {Platform}"},
    {"bad format", "{index:5}", 0, 256, NULL, "unknown placeholder {index:5}"},
    {"unterminated", "https://cdn/{code", 0, 256, NULL, "unterminated placeholder at offset 12"},
    {"overflow literal", "https://a-very-long-host/", 0, 10, NULL, "longer than 9 bytes"},
    {"overflow by one", "{code}", 0, sizeof("ABC_12-x") - 1, NULL, "longer than"},
};

static void test_url_expand(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(expand_cases) / sizeof(expand_cases[0]); i++) {
        const expand_case_t *c = &expand_cases[i];
        char out[256];
        char errstr[128] = "";
        assert_true(c->out_size <= sizeof(out));
        int rc = fq_url_expand(c->tmpl, "instagram", "ABC_12-x", c->index, out, c->out_size, errstr,
                               sizeof(errstr));
        if (c->want) {
            if (rc != 0)
                fail_msg("case '%s': failed with '%s'", c->name, errstr);
            assert_string_equal(out, c->want);
        } else {
            if (rc != -1)
                fail_msg("case '%s': expanded to '%s' instead of failing", c->name, out);
            if (!strstr(errstr, c->msg))
                fail_msg("case '%s': errstr '%s' lacks '%s'", c->name, errstr, c->msg);
        }
    }
}

/* ---- Retry-After --------------------------------------------------------------------- */

static void test_retry_after(void **state)
{
    (void)state;
    /* 2023-11-14T22:13:20Z */
    const int64_t now = 1700000000000LL;
    static const struct {
        const char *value;
        int64_t want;
    } cases[] = {
        {"120", 120000},
        {"0", 0},
        {"  7 ", 7000},
        {"Tue, 14 Nov 2023 22:15:20 GMT", 120000},  /* future HTTP-date */
        {"Tuesday, 14-Nov-23 22:13:50 GMT", 30000}, /* RFC 850 form */
        {"Tue Nov 14 22:13:25 2023", 5000},         /* asctime form */
        {"Tue, 14 Nov 2023 22:13:20 GMT", 0},       /* now */
        {"Mon, 13 Nov 2023 10:00:00 GMT", 0},       /* past: no wait, never negative */
        {"", -1},
        {"soon", -1},
        {"-5", -1},
        {"99999999999999999999999", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = fq_fetch_parse_retry_after(cases[i].value, now);
        if (got != cases[i].want)
            fail_msg("Retry-After '%s': got %lld, want %lld", cases[i].value, (long long)got,
                     (long long)cases[i].want);
    }
    assert_int_equal(fq_fetch_parse_retry_after(NULL, now), -1);
}

/* ---- fetcher without network --------------------------------------------------------- */

static fq_config_t base_config(void)
{
    fq_config_t cfg = {
        .allowed_source_schemes = "https,http,s3",
        .allowed_source_hosts = "cdn.example.com",
        .max_video_bytes = 1024 * 1024,
        .http_timeout_ms = 2000,
        .s3_region = "us-east-1",
    };
    return cfg;
}

static void test_fetch_new_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *tmpl, *schemes, *msg;
    } cases[] = {
        {"https://cdn/{user}.mp4", "https", "SOURCE_URL_TEMPLATE: unknown placeholder {user}"},
        {"file:///v/{code}.mp4", "https,s3", "SOURCE_URL_TEMPLATE: scheme file is not in"},
        {"cdn/{code}.mp4", "https", "SOURCE_URL_TEMPLATE: URL has no scheme"},
        {"https://cdn/{code}.mp4", "https,ftp", "ALLOWED_SOURCE_SCHEMES"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_config_t cfg = base_config();
        cfg.source_url_template = (char *)cases[i].tmpl;
        cfg.allowed_source_schemes = (char *)cases[i].schemes;
        char errstr[256] = "";
        fq_fetch_t *fetch = fq_fetch_new(&cfg, errstr, sizeof(errstr));
        if (fetch)
            fail_msg("template '%s' was accepted", cases[i].tmpl);
        if (!strstr(errstr, cases[i].msg))
            fail_msg("errstr '%s' lacks '%s'", errstr, cases[i].msg);
    }
}

static fq_error_t *open_item(const fq_config_t *cfg, const char *video_url, fq_source_t *src)
{
    char errstr[256];
    fq_fetch_t *fetch = fq_fetch_new(cfg, errstr, sizeof(errstr));
    if (!fetch)
        fail_msg("fq_fetch_new: %s", errstr);
    fq_item_t item = {.platform = "instagram", .code = "ABC123", .video_url = (char *)video_url};
    fq_error_t *err = fq_fetch_open(fetch, &item, src);
    fq_fetch_destroy(fetch);
    return err;
}

static void expect_refusal(fq_error_t *err, fq_stage_t stage, fq_class_t klass, const char *msg)
{
    if (!err)
        fail_msg("expected an error containing '%s'", msg);
    assert_int_equal(fq_error_stage(err), stage);
    assert_int_equal(fq_error_class(err), klass);
    if (!strstr(fq_error_message(err), msg))
        fail_msg("message '%s' lacks '%s'", fq_error_message(err), msg);
    fq_error_destroy(err);
}

static void test_fetch_refusals(void **state)
{
    (void)state;
    fq_config_t cfg = base_config();
    fq_source_t src;
    /* Neither a video_url nor a template. */
    expect_refusal(open_item(&cfg, NULL, &src), FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                   "no video_url and SOURCE_URL_TEMPLATE is not set");
    assert_int_equal(src.fd, -1);
    /* Refused before any connection: an address nobody listens on would otherwise give a
     * fetch-stage error, not a validate-stage one. */
    expect_refusal(open_item(&cfg, "http://169.254.169.254/latest/meta-data/", &src),
                   FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                   "video_url host 169.254.169.254:80 is not in ALLOWED_SOURCE_HOSTS");
    expect_refusal(open_item(&cfg, "file:///etc/passwd", &src), FQ_STAGE_VALIDATE,
                   FQ_CLASS_PERMANENT, "video_url scheme file is not in ALLOWED_SOURCE_SCHEMES");
    expect_refusal(open_item(&cfg, "https://u:secret@cdn.example.com/v.mp4", &src),
                   FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "must not carry credentials");
    /* The template's own host is allowed even when the list does not name it. */
    cfg.source_url_template = "https://videos.internal/{platform}/{code}.mp4";
    cfg.allowed_source_hosts = "";
    expect_refusal(open_item(&cfg, "https://cdn.example.com/v.mp4", &src), FQ_STAGE_VALIDATE,
                   FQ_CLASS_PERMANENT, "host cdn.example.com:443 is not in ALLOWED_SOURCE_HOSTS");
    /* ... on its own port only: another port of that host is not the operator's source. */
    expect_refusal(open_item(&cfg, "http://videos.internal:22/", &src), FQ_STAGE_VALIDATE,
                   FQ_CLASS_PERMANENT, "host videos.internal:22 is not in ALLOWED_SOURCE_HOSTS");
    cfg.source_url_template = "http://127.0.0.1:17070/{platform}/{code}.mp4";
    expect_refusal(open_item(&cfg, "http://127.0.0.1:22/", &src), FQ_STAGE_VALIDATE,
                   FQ_CLASS_PERMANENT, "host 127.0.0.1:22 is not in ALLOWED_SOURCE_HOSTS");
}

static void test_fetch_file_sources(void **state)
{
    (void)state;
    char dir[] = "/tmp/fq-test-fetch-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], link[256], url[300];
    snprintf(path, sizeof(path), "%s/v.mp4", dir);
    snprintf(link, sizeof(link), "%s/link.mp4", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 3000; i++)
        fputc(i & 0xff, f);
    fclose(f);
    assert_int_equal(symlink(path, link), 0);

    fq_config_t cfg = base_config();
    cfg.allowed_source_schemes = "https,file";
    fq_source_t src;

    snprintf(url, sizeof(url), "file://%s", path);
    fq_error_t *err = open_item(&cfg, url, &src);
    if (err)
        fail_msg("file source: %s", fq_error_message(err));
    assert_true(src.fd >= 0);
    assert_int_equal(src.size, 3000);
    assert_int_equal(src.http_status, 0);
    assert_string_equal(src.url, url);
    unsigned char buf[4];
    assert_int_equal(pread(src.fd, buf, 4, 256), 4);
    assert_int_equal(buf[0], 0);
    assert_int_equal(buf[3], 3);
    fq_fetch_source_close(&src);
    assert_int_equal(src.fd, -1);
    fq_fetch_source_close(&src); /* idempotent */
    fq_fetch_source_close(NULL);

    /* Through the template, too. */
    char tmpl[300];
    snprintf(tmpl, sizeof(tmpl), "file://%s/{code}.mp4", dir);
    cfg.source_url_template = tmpl;
    snprintf(path, sizeof(path), "%s/ABC123.mp4", dir);
    assert_int_equal(rename(link, path), 0); /* a symlink named like the item */
    expect_refusal(open_item(&cfg, NULL, &src), FQ_STAGE_FETCH, FQ_CLASS_PERMANENT,
                   "is a symbolic link");
    assert_int_equal(unlink(path), 0);
    expect_refusal(open_item(&cfg, NULL, &src), FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, "No such file");
    snprintf(url, sizeof(url), "file://%s", dir);
    expect_refusal(open_item(&cfg, url, &src), FQ_STAGE_FETCH, FQ_CLASS_PERMANENT,
                   "is not a regular file");

    snprintf(url, sizeof(url), "file://%s/v.mp4", dir);
    cfg.max_video_bytes = 2999;
    expect_refusal(open_item(&cfg, url, &src), FQ_STAGE_FETCH, FQ_CLASS_PERMANENT,
                   "video is larger than MAX_VIDEO_BYTES (2999 bytes)");

    snprintf(path, sizeof(path), "%s/v.mp4", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_expand),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_fetch_new_config_errors),
        cmocka_unit_test(test_fetch_refusals),
        cmocka_unit_test(test_fetch_file_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
