/* Integration tests for pipeline/upload.c: frames + manifest.json to file:// (a temp dir),
 * to http PUT (tests/tools/fault_server.py) and to the stack's S3 (read back and compared),
 * and the failure classes: 5xx retriable (after quick retries), 4xx permanent, store down
 * outage, wrong S3 secret an authentication error (an outage too).
 *
 * Needs FQ_SOURCE_DIR (set by CTest) and the stack's S3_ENDPOINT, AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY (`deploy/local/up && . .stack/env`); fails without them. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "fq_http.h"
#include "fq_upload.h"
#include "fq_test_env.h"
#include "fq_test_fault.h"
#include "fq_test_error.h"

#define MAX_FRAMES 16

static struct {
    fq_test_site_t site;
    uint8_t *jpeg[MAX_FRAMES];
    size_t size[MAX_FRAMES];
} g;

/* ---- helpers ------------------------------------------------------------------------- */

static void make_frames(void)
{
    uint32_t x = 12345;
    for (int i = 0; i < MAX_FRAMES; i++) {
        g.size[i] = 3000 + (size_t)i * 517;
        g.jpeg[i] = malloc(g.size[i]);
        assert_non_null(g.jpeg[i]);
        for (size_t j = 0; j < g.size[i]; j++) {
            x = x * 1664525u + 1013904223u;
            g.jpeg[i][j] = (uint8_t)(x >> 24);
        }
        /* JPEG start and end markers, so the bytes look like what frames hands over. */
        g.jpeg[i][0] = 0xff;
        g.jpeg[i][1] = 0xd8;
        g.jpeg[i][g.size[i] - 2] = 0xff;
        g.jpeg[i][g.size[i] - 1] = 0xd9;
    }
}

static fq_config_t test_config(const char *tmpl)
{
    fq_config_t cfg = {
        .frames_url_template = (char *)tmpl,
        .http_timeout_ms = 5000,
    };
    fq_test_s3_settings(&cfg);
    return cfg;
}

/* A configuration whose frames go to http://127.0.0.1:PORT followed by path; tmpl holds the
 * template and outlives the configuration. */
static fq_config_t http_config(char tmpl[256], int port, const char *path)
{
    snprintf(tmpl, 256, "http://127.0.0.1:%d%s", port, path);
    return test_config(tmpl);
}

static const fq_media_info_t test_info = {
    .duration_ms = 6000, .width = 1280, .height = 720, .rotation = 90, .codec = "h264"};

/* Runs one item of n frames through a fresh uploader: begin, frames, finish. Returns the
 * uploader (caller destroys) and the first error in *errp. */
static fq_upload_t *run_item(const fq_config_t *cfg, const char *code, int n, fq_error_t **errp)
{
    char errstr[256];
    fq_upload_t *up = fq_upload_new(cfg, errstr, sizeof(errstr));
    if (!up)
        fail_msg("fq_upload_new: %s", errstr);
    fq_item_t item = {.platform = "itest"};
    snprintf(item.code, sizeof(item.code), "%s", code);
    fq_error_t *err = fq_upload_begin(up, &item);
    for (int i = 0; i < n && !err; i++) {
        fq_frame_t frame = {.index = i,
                            .pts_ms = i * 1000,
                            .width = 512,
                            .height = 288,
                            .jpeg = g.jpeg[i],
                            .size = g.size[i]};
        err = fq_upload_frame(up, &frame);
    }
    if (!err)
        err = fq_upload_finish(up, &test_info);
    *errp = err;
    return up;
}

static void check_manifest(const char *text, const char *code, int n, const char *url_prefix)
{
    json_error_t jerr;
    json_t *m = json_loads(text, 0, &jerr);
    if (!m)
        fail_msg("manifest is not JSON: %s", jerr.text);
    assert_string_equal(json_string_value(json_object_get(m, "platform")), "itest");
    assert_string_equal(json_string_value(json_object_get(m, "code")), code);
    json_t *frames = json_object_get(m, "frames");
    assert_int_equal(json_array_size(frames), (size_t)n);
    for (int i = 0; i < n; i++) {
        json_t *f = json_array_get(frames, (size_t)i);
        assert_int_equal(json_integer_value(json_object_get(f, "index")), i);
        assert_int_equal(json_integer_value(json_object_get(f, "pts_ms")), i * 1000);
        assert_int_equal(json_integer_value(json_object_get(f, "width")), 512);
        assert_int_equal(json_integer_value(json_object_get(f, "height")), 288);
        assert_int_equal(json_integer_value(json_object_get(f, "bytes")), (json_int_t)g.size[i]);
        const char *url = json_string_value(json_object_get(f, "url"));
        assert_non_null(url);
        assert_int_equal(strncmp(url, url_prefix, strlen(url_prefix)), 0);
    }
    json_t *src = json_object_get(m, "source");
    assert_int_equal(json_integer_value(json_object_get(src, "duration_ms")), 6000);
    assert_int_equal(json_integer_value(json_object_get(src, "width")), 1280);
    assert_int_equal(json_integer_value(json_object_get(src, "height")), 720);
    assert_int_equal(json_integer_value(json_object_get(src, "rotation")), 90);
    assert_string_equal(json_string_value(json_object_get(src, "codec")), "h264");
    assert_non_null(json_string_value(json_object_get(m, "created_at")));
    json_decref(m);
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* dir/00000.jpg .. hold exactly the n frames handed over. */
static void check_frame_files(const char *dir, int n)
{
    for (int i = 0; i < n; i++) {
        char path[600];
        snprintf(path, sizeof(path), "%s/%05d.jpg", dir, i);
        size_t len;
        char *data = read_whole(path, &len);
        assert_int_equal(len, g.size[i]);
        assert_memory_equal(data, g.jpeg[i], len);
        free(data);
    }
}

static void check_local_frames(const char *dir, int n)
{
    check_frame_files(dir, n);
    char path[512];
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    size_t len;
    char *text = read_whole(path, &len);
    check_manifest(text, "abs", n, "file://");
    free(text);
    /* n frames + the manifest, and no temporary files left behind. */
    assert_int_equal(fq_test_count_dir_entries(dir), n + 1);
}

/* ---- setup --------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (fq_test_site_start(&g.site, "upload") != 0)
        return -1;
    make_frames();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fq_test_site_stop(&g.site);
    for (int i = 0; i < MAX_FRAMES; i++)
        free(g.jpeg[i]);
    curl_global_cleanup();
    return 0;
}

/* ---- file:// ------------------------------------------------------------------------- */

static void test_file_absolute(void **state)
{
    (void)state;
    char tmpl[256], dir[256];
    snprintf(tmpl, sizeof(tmpl), "file://%s/frames/{platform}/{code}/{index:05}.jpg", g.site.dir);
    snprintf(dir, sizeof(dir), "%s/frames/itest/abs", g.site.dir);
    fq_config_t cfg = test_config(tmpl);
    fq_error_t *err;
    fq_upload_t *up = run_item(&cfg, "abs", 7, &err);
    if (err)
        fail_msg("file upload: %s", fq_error_message(err));
    check_local_frames(dir, 7);
    size_t count;
    const fq_stored_frame_t *frames = fq_upload_frames(up, &count);
    assert_int_equal(count, 7);
    char want[512];
    snprintf(want, sizeof(want), "file://%s/00003.jpg", dir);
    assert_string_equal(frames[3].url, want);
    assert_int_equal(frames[3].bytes, (int)g.size[3]);
    snprintf(want, sizeof(want), "file://%s/manifest.json", dir);
    assert_string_equal(fq_upload_manifest_url(up), want);

    /* Re-running the item overwrites the same files. */
    fq_item_t item = {.platform = "itest", .code = "abs"};
    err = fq_upload_begin(up, &item);
    assert_null(err);
    fq_frame_t frame = {
        .index = 0, .width = 512, .height = 288, .jpeg = g.jpeg[0], .size = g.size[0]};
    err = fq_upload_frame(up, &frame);
    assert_null(err);
    err = fq_upload_finish(up, &test_info);
    assert_null(err);
    assert_int_equal(fq_test_count_dir_entries(dir), 7 + 1);
    fq_upload_destroy(up);
}

static void test_file_relative(void **state)
{
    (void)state;
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(g.site.dir), 0);
    fq_config_t cfg = test_config("file://./rel/{platform}/{code}/{index}.jpg");
    fq_error_t *err;
    fq_upload_t *up = run_item(&cfg, "rel", 3, &err);
    assert_int_equal(chdir(cwd), 0);
    if (err)
        fail_msg("relative file upload: %s", fq_error_message(err));
    char path[512];
    snprintf(path, sizeof(path), "%s/rel/itest/rel/2.jpg", g.site.dir);
    size_t len;
    char *data = read_whole(path, &len);
    assert_int_equal(len, g.size[2]);
    free(data);
    assert_string_equal(fq_upload_manifest_url(up), "file://./rel/itest/rel/manifest.json");
    fq_upload_destroy(up);
}

static void test_bad_templates(void **state)
{
    (void)state;
    static const struct {
        const char *tmpl, *msg;
    } cases[] = {
        {"file://./f/{platform}/{code}.jpg", "must contain {index}"},
        {"ftp://h/{index}.jpg", "has scheme \"ftp\""},
        {"s3://x/{index}.jpg", "not an s3://bucket/key URL"},
        {"https://u:p@h/{index}.jpg", "must not carry credentials"},
        {"file://./{index}/{nope}.jpg", "unknown placeholder {nope}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_config_t cfg = test_config(cases[i].tmpl);
        char errstr[256] = "";
        fq_upload_t *up = fq_upload_new(&cfg, errstr, sizeof(errstr));
        if (up)
            fail_msg("template '%s' was accepted", cases[i].tmpl);
        if (!strstr(errstr, cases[i].msg))
            fail_msg("'%s': errstr '%s' lacks '%s'", cases[i].tmpl, errstr, cases[i].msg);
    }
}

/* ---- http PUT ------------------------------------------------------------------------ */

static void test_http_put(void **state)
{
    (void)state;
    char tmpl[256];
    fq_config_t cfg = http_config(tmpl, g.site.port, "/upload/{platform}/{code}/{index:05}.jpg");
    fq_error_t *err;
    /* More frames than the window of transfers in flight. */
    fq_upload_t *up = run_item(&cfg, "put", MAX_FRAMES, &err);
    if (err)
        fail_msg("http upload: %s", fq_error_message(err));
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/uploads/itest/put", g.site.www);
    check_frame_files(dir, MAX_FRAMES);
    char path[600], prefix[128];
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    snprintf(prefix, sizeof(prefix), "http://127.0.0.1:%d/upload/itest/put/", g.site.port);
    size_t len;
    char *text = read_whole(path, &len);
    check_manifest(text, "put", MAX_FRAMES, prefix);
    free(text);
    size_t count;
    fq_upload_frames(up, &count);
    assert_int_equal(count, MAX_FRAMES);
    fq_upload_destroy(up);
}

static void test_http_failures(void **state)
{
    (void)state;
    char tmpl[256];
    /* 500: retried quickly inside the call, then retriable. */
    fq_config_t cfg = http_config(tmpl, g.site.port, "/put500/{platform}/{code}/{index}.jpg");
    fq_error_t *err;
    fq_upload_t *up = run_item(&cfg, "e500", 1, &err);
    assert_non_null(err);
    fprintf(stderr, "  500 -> %s: %s\n", fq_class_name(fq_error_class(err)), fq_error_message(err));
    fq_test_assert_error(err, FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_HTTP, 500);
    assert_int_equal(fq_test_fault_count(g.site.port, "/put500/itest/e500/0.jpg"), 3);
    size_t count;
    fq_upload_frames(up, &count);
    assert_int_equal(count, 0); /* nothing counts as stored after a failure */
    assert_null(fq_upload_manifest_url(up));
    fq_error_destroy(err);
    fq_upload_destroy(up);

    /* 403: a misconfiguration, permanent, not retried. */
    cfg = http_config(tmpl, g.site.port, "/put403/{platform}/{code}/{index}.jpg");
    up = run_item(&cfg, "e403", 1, &err);
    assert_non_null(err);
    fprintf(stderr, "  403 -> %s: %s\n", fq_class_name(fq_error_class(err)), fq_error_message(err));
    fq_test_assert_error(err, FQ_TEST_ANY, FQ_CLASS_PERMANENT, FQ_ERROR_DOMAIN_HTTP, 403);
    assert_non_null(strstr(fq_error_message(err), "REFUSED"));
    assert_int_equal(fq_test_fault_count(g.site.port, "/put403/itest/e403/0.jpg"), 1);
    fq_error_destroy(err);
    fq_upload_destroy(up);

    /* Nobody listening: the store is down, an outage. */
    cfg = http_config(tmpl, fq_test_closed_port(), "/upload/{platform}/{code}/{index}.jpg");
    up = run_item(&cfg, "down", 4, &err);
    assert_non_null(err);
    fprintf(stderr, "  down -> %s: %s\n", fq_class_name(fq_error_class(err)),
            fq_error_message(err));
    fq_test_assert_error(err, FQ_STAGE_UPLOAD, FQ_CLASS_OUTAGE, FQ_ERROR_DOMAIN_CURL,
                         CURLE_COULDNT_CONNECT);
    fq_error_destroy(err);
    fq_upload_destroy(up);
}

/* ---- S3 ------------------------------------------------------------------------------ */

static void test_s3_roundtrip(void **state)
{
    (void)state;
    fq_test_s3_require();
    char tmpl[256], code[64];
    snprintf(code, sizeof(code), "s3-%ld-%ld", (long)getpid(), (long)time(NULL));
    snprintf(tmpl, sizeof(tmpl), "s3://frameq-frames/itest/{platform}/{code}/{index:05}.jpg");
    fq_config_t cfg = test_config(tmpl);
    fq_error_t *err;
    fq_upload_t *up = run_item(&cfg, code, 10, &err);
    if (err)
        fail_msg("s3 upload: %s", fq_error_message(err));
    size_t count;
    const fq_stored_frame_t *frames = fq_upload_frames(up, &count);
    assert_int_equal(count, 10);
    for (int i = 0; i < 10; i++) {
        char want[320], key[256];
        snprintf(key, sizeof(key), "itest/itest/%s/%05d.jpg", code, i);
        snprintf(want, sizeof(want), "s3://frameq-frames/%s", key);
        assert_string_equal(frames[i].url, want);
        char *body = NULL;
        size_t len = 0;
        long status = 0;
        err = fq_s3_request(&cfg, FQ_STAGE_FETCH, "GET", "frameq-frames", key, NULL, 0, &status,
                            &body, &len, 1 << 20);
        if (err)
            fail_msg("GET %s: %s", want, fq_error_message(err));
        assert_int_equal(status, 200);
        assert_int_equal(len, g.size[i]);
        assert_memory_equal(body, g.jpeg[i], len);
        free(body);
    }
    char key[256], want[320];
    snprintf(key, sizeof(key), "itest/itest/%s/manifest.json", code);
    snprintf(want, sizeof(want), "s3://frameq-frames/%s", key);
    assert_string_equal(fq_upload_manifest_url(up), want);
    char *body = NULL;
    size_t len = 0;
    err = fq_s3_request(&cfg, FQ_STAGE_FETCH, "GET", "frameq-frames", key, NULL, 0, NULL, &body,
                        &len, 1 << 20);
    if (err)
        fail_msg("GET manifest: %s", fq_error_message(err));
    check_manifest(body, code, 10, "s3://frameq-frames/itest/itest/");
    free(body);
    fq_upload_destroy(up);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "itest/itest/%s/%05d.jpg", code, i);
        fq_error_destroy(fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "DELETE", "frameq-frames", key, NULL,
                                       0, NULL, NULL, NULL, 0));
    }
    snprintf(key, sizeof(key), "itest/itest/%s/manifest.json", code);
    fq_error_destroy(fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "DELETE", "frameq-frames", key, NULL, 0,
                                   NULL, NULL, NULL, 0));
}

static void test_s3_failures(void **state)
{
    (void)state;
    fq_test_s3_require();
    fq_config_t cfg = test_config("s3://frameq-frames/itest/{platform}/{code}/{index}.jpg");
    cfg.aws_secret_access_key = "definitely-wrong-secret";
    fq_error_t *err;
    fq_upload_t *up = run_item(&cfg, "badsecret", 2, &err);
    assert_non_null(err);
    fprintf(stderr, "  wrong secret -> %s: %s\n", fq_class_name(fq_error_class(err)),
            fq_error_message(err));
    fq_test_assert_error(err, FQ_STAGE_UPLOAD, FQ_CLASS_OUTAGE, FQ_ERROR_DOMAIN_HTTP,
                         403); /* DESIGN §3: nothing burned */
    assert_non_null(strstr(fq_error_message(err), "S3 authentication failed"));
    assert_null(strstr(fq_error_message(err), "definitely-wrong-secret"));
    fq_error_destroy(err);
    fq_upload_destroy(up);

    cfg = test_config("s3://no-such-bucket-frameq/{platform}/{code}/{index}.jpg");
    up = run_item(&cfg, "nobucket", 1, &err);
    assert_non_null(err);
    fprintf(stderr, "  no bucket -> %s: %s\n", fq_class_name(fq_error_class(err)),
            fq_error_message(err));
    assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
    assert_non_null(strstr(fq_error_message(err), "REFUSED"));
    fq_error_destroy(err);
    fq_upload_destroy(up);

    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", fq_test_closed_port());
    cfg = test_config("s3://frameq-frames/itest/{platform}/{code}/{index}.jpg");
    cfg.s3_endpoint = endpoint;
    up = run_item(&cfg, "s3down", 3, &err);
    assert_non_null(err);
    assert_int_equal(fq_error_class(err), FQ_CLASS_OUTAGE);
    fq_error_destroy(err);
    fq_upload_destroy(up);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_absolute), cmocka_unit_test(test_file_relative),
        cmocka_unit_test(test_bad_templates), cmocka_unit_test(test_http_put),
        cmocka_unit_test(test_http_failures), cmocka_unit_test(test_s3_roundtrip),
        cmocka_unit_test(test_s3_failures),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
