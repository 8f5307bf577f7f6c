/* Integration test of our S3 layer (pipeline/http.c) against the stack's real S3 server,
 * which checks SigV4 signatures: PUT, HEAD, GET, DELETE of an object; a binary payload and a
 * key that needs percent-encoding; x-amz-content-sha256 that does not match the body is
 * refused (so the header is really signed and checked); a wrong secret or key id gives a 403
 * reported as an authentication error of class outage (DESIGN §3: the configured endpoint
 * refusing our credentials is not the item's fault); fq_s3_probe accepts the right
 * credentials and reports the wrong ones and an unreachable endpoint as outages.
 *
 * Needs S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (`deploy/local/up &&
 * . .stack/env`); fails without them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "fq_http.h"
#include "fq_test_env.h"
#include "fq_test_error.h"

#define BUCKET "frameq-frames"

static fq_config_t stack_config(void)
{
    fq_test_s3_require();
    fq_config_t cfg = {.http_timeout_ms = 10000};
    fq_test_s3_settings(&cfg);
    return cfg;
}

static void unique_key(char *key, size_t size, const char *name)
{
    snprintf(key, size, "itest/s3-%ld-%ld/%s", (long)getpid(), (long)time(NULL), name);
}

static void test_put_head_get_delete(void **state)
{
    (void)state;
    fq_config_t cfg = stack_config();
    /* Binary bytes including NULs, larger than one TCP segment. */
    size_t n = 100000;
    unsigned char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)((i * 7919) >> 3);
    static const char *const names[] = {"plain.bin", "with space+plus=eq~tilde.bin"};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        char key[256];
        unique_key(key, sizeof(key), names[k]);
        long status = 0;
        fq_error_t *err = fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "PUT", BUCKET, key, data, n, &status,
                                        NULL, NULL, 0);
        if (err)
            fail_msg("PUT %s: %s", key, fq_error_message(err));
        assert_int_equal(status, 200);

        err = fq_s3_request(&cfg, FQ_STAGE_FETCH, "HEAD", BUCKET, key, NULL, 0, &status, NULL, NULL,
                            0);
        if (err)
            fail_msg("HEAD %s: %s", key, fq_error_message(err));
        assert_int_equal(status, 200);

        char *body = NULL;
        size_t len = 0;
        err = fq_s3_request(&cfg, FQ_STAGE_FETCH, "GET", BUCKET, key, NULL, 0, &status, &body, &len,
                            1 << 20);
        if (err)
            fail_msg("GET %s: %s", key, fq_error_message(err));
        assert_int_equal(len, n);
        assert_memory_equal(body, data, n);
        free(body);

        err = fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "DELETE", BUCKET, key, NULL, 0, &status, NULL,
                            NULL, 0);
        if (err)
            fail_msg("DELETE %s: %s", key, fq_error_message(err));
        err = fq_s3_request(&cfg, FQ_STAGE_FETCH, "HEAD", BUCKET, key, NULL, 0, &status, NULL, NULL,
                            0);
        assert_non_null(err);
        assert_int_equal(status, 404);
        assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
        fq_error_destroy(err);
    }
    free(data);
}

static void test_empty_object(void **state)
{
    (void)state;
    fq_config_t cfg = stack_config();
    char key[256];
    unique_key(key, sizeof(key), "empty");
    fq_error_t *err =
        fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "PUT", BUCKET, key, NULL, 0, NULL, NULL, NULL, 0);
    if (err)
        fail_msg("PUT empty: %s", fq_error_message(err));
    char *body = NULL;
    size_t len = 99;
    err = fq_s3_request(&cfg, FQ_STAGE_FETCH, "GET", BUCKET, key, NULL, 0, NULL, &body, &len, 0);
    if (err)
        fail_msg("GET empty: %s", fq_error_message(err));
    assert_int_equal(len, 0);
    free(body);
    fq_error_destroy(
        fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "DELETE", BUCKET, key, NULL, 0, NULL, NULL, NULL, 0));
}

/* A PUT whose x-amz-content-sha256 does not match the body must be refused: proves the
 * server checks the header we set and that our correct requests are not passing by luck. */
static void test_wrong_payload_hash_is_refused(void **state)
{
    (void)state;
    fq_config_t cfg = stack_config();
    char key[256], url[1024];
    unique_key(key, sizeof(key), "badhash");
    assert_int_equal(
        fq_s3_object_url(cfg.s3_endpoint, cfg.s3_region, BUCKET, key, url, sizeof(url)), 0);
    const char *body = "the real body";
    char wrong[65];
    fq_sha256_hex("another body", 12, wrong);
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    struct curl_slist *headers = fq_s3_prepare(curl, &cfg, wrong, NULL);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    FILE *sink = fopen("/dev/null", "w");
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    fprintf(stderr, "  PUT with a wrong payload hash -> HTTP %ld\n", status);
    assert_true(status >= 400 && status < 500);
    fclose(sink);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    /* Nothing was stored. */
    fq_error_t *err =
        fq_s3_request(&cfg, FQ_STAGE_FETCH, "HEAD", BUCKET, key, NULL, 0, &status, NULL, NULL, 0);
    assert_non_null(err);
    assert_int_equal(status, 404);
    fq_error_destroy(err);
}

static void test_bad_credentials(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        bool wrong_id;
    } cases[] = {{"wrong secret", false}, {"unknown key id", true}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_config_t cfg = stack_config();
        if (cases[i].wrong_id)
            cfg.aws_access_key_id = "NOSUCHKEYID";
        else
            cfg.aws_secret_access_key = "definitely-wrong-secret";
        char key[256];
        unique_key(key, sizeof(key), "auth");
        long status = 0;
        fq_error_t *err = fq_s3_request(&cfg, FQ_STAGE_UPLOAD, "PUT", BUCKET, key, "x", 1, &status,
                                        NULL, NULL, 0);
        assert_non_null(err);
        fprintf(stderr, "  %s -> %s: %s\n", cases[i].what, fq_class_name(fq_error_class(err)),
                fq_error_message(err));
        /* AWS answers 403 to both; versitygw answers an unknown key id with 404
         * XAdminUserNotFound. Either way the message must say what is wrong. */
        if (cases[i].wrong_id)
            assert_true(status == 403 || status == 404);
        else
            assert_int_equal(status, 403);
        fq_test_assert_error(err, FQ_STAGE_UPLOAD, FQ_CLASS_OUTAGE, FQ_ERROR_DOMAIN_HTTP,
                             (int)status);
        assert_non_null(strstr(fq_error_message(err), "S3 authentication failed (HTTP 40"));
        assert_null(strstr(fq_error_message(err), "definitely-wrong-secret"));
        fq_error_destroy(err);
    }
}

static void test_probe(void **state)
{
    (void)state;
    fq_config_t cfg = stack_config();
    cfg.frames_url_template = "s3://frameq-frames/{platform}/{code}/{index}.jpg";
    cfg.source_url_template = "s3://frameq-videos/{platform}/{code}.mp4";
    fq_error_t *err = fq_s3_probe(&cfg);
    if (err)
        fail_msg("probe with the stack's credentials: %s", fq_error_message(err));
    /* A bucket that does not exist still proves the credentials. */
    cfg.source_url_template = "s3://frameq-no-such-bucket/{code}.mp4";
    err = fq_s3_probe(&cfg);
    if (err)
        fail_msg("probe of a missing bucket: %s", fq_error_message(err));

    cfg.aws_secret_access_key = "definitely-wrong-secret";
    err = fq_s3_probe(&cfg);
    assert_non_null(err);
    fprintf(stderr, "  probe, wrong secret -> %s\n", fq_error_message(err));
    assert_int_equal(fq_error_class(err), FQ_CLASS_OUTAGE);
    assert_non_null(strstr(fq_error_message(err), "SignatureDoesNotMatch"));
    assert_null(strstr(fq_error_message(err), "definitely-wrong-secret"));
    fq_error_destroy(err);

    cfg = stack_config();
    cfg.frames_url_template = "s3://frameq-frames/{platform}/{code}/{index}.jpg";
    cfg.s3_endpoint = "http://127.0.0.1:1"; /* nothing listens there */
    err = fq_s3_probe(&cfg);
    assert_non_null(err);
    fprintf(stderr, "  probe, closed port -> %s\n", fq_error_message(err));
    assert_int_equal(fq_error_class(err), FQ_CLASS_OUTAGE);
    fq_error_destroy(err);

    /* No s3:// template: nothing to probe. */
    cfg.frames_url_template = "file:///tmp/frames/{index}.jpg";
    cfg.source_url_template = NULL;
    assert_null(fq_s3_probe(&cfg));
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_head_get_delete),
        cmocka_unit_test(test_empty_object),
        cmocka_unit_test(test_wrong_payload_hash_is_refused),
        cmocka_unit_test(test_bad_credentials),
        cmocka_unit_test(test_probe),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
