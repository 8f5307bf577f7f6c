/* Unit tests for pipeline/http.c: URL parsing and redaction, the allow-list matrix, S3 URL
 * building and key encoding, S3 error codes, curl/HTTP error mapping, SHA-256. No network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fq_http.h"

/* ---- allow-list ---------------------------------------------------------------------- */

typedef struct allow_case {
    const char *name;
    const char *schemes; /* NULL = default */
    const char *hosts;
    const char *url;
    bool allowed;
    const char *msg; /* substring of the refusal */
} allow_case_t;

static const allow_case_t allow_cases[] = {
    {"listed https host", NULL, "cdn.example.com", "https://cdn.example.com/v.mp4", true, NULL},
    {"bare host: any port", NULL, "cdn.example.com", "http://cdn.example.com:8080/v.mp4", true,
     NULL},
    {"uppercase host", NULL, "cdn.example.com", "https://CDN.Example.COM/v.mp4", true, NULL},
    {"uppercase list entry", NULL, "CDN.example.com", "https://cdn.example.com/v", true, NULL},
    {"unlisted host", NULL, "cdn.example.com", "https://evil.example.net/v.mp4", false,
     "video_url host evil.example.net:443 is not in ALLOWED_SOURCE_HOSTS"},
    {"suffix is not a match", NULL, "example.com", "https://evilexample.com/v", false,
     "host evilexample.com:443"},
    {"wildcard subdomain", NULL, "*.example.com", "https://a.b.example.com/v", true, NULL},
    {"wildcard not apex", NULL, "*.example.com", "https://example.com/v", false,
     "host example.com:443"},
    {"metadata IP", NULL, "cdn.example.com", "http://169.254.169.254/latest/meta-data", false,
     "video_url host 169.254.169.254:80 is not in ALLOWED_SOURCE_HOSTS"},
    {"loopback unlisted", NULL, "cdn.example.com", "http://127.0.0.1:8080/v", false,
     "host 127.0.0.1:8080"},
    {"loopback listed", NULL, "127.0.0.1", "http://127.0.0.1:8080/v", true, NULL},
    /* host:port entries (the derived default for an S3 endpoint): that port only. */
    {"host:port entry, same port", NULL, "127.0.0.1:17070", "http://127.0.0.1:17070/b/k", true,
     NULL},
    {"host:port entry, other port", NULL, "127.0.0.1:17070", "http://127.0.0.1:22/", false,
     "host 127.0.0.1:22 is not in ALLOWED_SOURCE_HOSTS"},
    {"host:port entry, default port", NULL, "cdn.example.com:443", "https://cdn.example.com/v",
     true, NULL},
    {"host:port entry, other scheme's default", NULL, "cdn.example.com:443",
     "http://cdn.example.com/v", false, "host cdn.example.com:80"},
    {"IPv6 host:port entry", NULL, "[::1]:9000", "http://[::1]:9000/v", true, NULL},
    {"IPv6 host:port entry, other port", NULL, "[::1]:9000", "http://[::1]:9001/v", false,
     "host [::1]:9001"},
    {"entry in a short IPv4 form", NULL, "127.1:8080", "http://127.0.0.1:8080/v", true, NULL},
    /* Numeric forms resolvers accept are read as libcurl reads (and would connect to) them. */
    {"short IPv4 form", NULL, "cdn.example.com", "http://127.1/v", false, "host 127.0.0.1:80"},
    {"hex IPv4 form", NULL, "cdn.example.com", "http://0x7f.1/v", false, "host 127.0.0.1:80"},
    {"decimal IPv4 form", NULL, "cdn.example.com", "http://2130706433/v", false,
     "host 127.0.0.1:80"},
    {"percent-encoded host", NULL, "cdn.example.com", "http://%31%32%37.0.0.1/v", false,
     "host 127.0.0.1:80"},
    {"IPv6 literal", NULL, "cdn.example.com", "http://[::1]/v", false, "host [::1]:80"},
    {"fragment hiding a host", NULL, "cdn.example.com", "https://cdn.example.com#@evil.net/", true,
     NULL},
    {"fragment hiding a host, other way", NULL, "cdn.example.com",
     "https://evil.net#@cdn.example.com/", false, "host evil.net:443"},
    {"userinfo", NULL, "cdn.example.com", "https://user:pw@cdn.example.com/v", false,
     "must not carry credentials"},
    {"userinfo hiding host", NULL, "cdn.example.com", "https://cdn.example.com@evil.net/v", false,
     "must not carry credentials"},
    {"file not listed", NULL, "cdn.example.com", "file:///etc/passwd", false,
     "scheme file is not in ALLOWED_SOURCE_SCHEMES"},
    {"file listed", "https,file", "", "file:///tmp/v.mp4", true, NULL},
    {"file relative", "file", "", "file://./v/a.mp4", true, NULL},
    {"file remote host", "file", "", "file://evil.net/etc/passwd", false, "not a valid URL"},
    {"ftp", "https,http,s3", "cdn.example.com", "ftp://cdn.example.com/v", false,
     "scheme ftp is not in ALLOWED_SOURCE_SCHEMES"},
    {"gopher", NULL, "cdn.example.com", "gopher://cdn.example.com/v", false, "scheme gopher"},
    {"http not listed", "https", "cdn.example.com", "http://cdn.example.com/v", false,
     "scheme http"},
    {"s3 listed bucket", NULL, "frameq-videos", "s3://frameq-videos/p/c.mp4", true, NULL},
    {"s3 bucket and a host:port entry", NULL, "frameq-videos,127.0.0.1:17070",
     "s3://frameq-videos/p/c.mp4", true, NULL},
    {"s3 unlisted bucket", NULL, "frameq-videos", "s3://other-bucket/p/c.mp4", false,
     "host other-bucket is not"},
    {"s3 not listed", "https", "frameq-videos", "s3://frameq-videos/p/c.mp4", false, "scheme s3"},
    {"s3 no key", NULL, "frameq-videos", "s3://frameq-videos/", false, "no object key"},
    {"s3 bad bucket", NULL, "Bad_Bucket", "s3://Bad_Bucket/k", false, "not a valid S3 bucket"},
    {"space", NULL, "cdn.example.com", "https://cdn.example.com/a b", false, "not a valid URL"},
    {"newline", NULL, "cdn.example.com", "https://cdn.example.com/a\r\nX: y", false,
     "not a valid URL"},
    {"backslash", NULL, "cdn.example.com", "https://evil.net\\@cdn.example.com/", false,
     "not a valid URL"},
    {"no scheme", NULL, "cdn.example.com", "cdn.example.com/v", false, "not a valid URL"},
    {"bad port", NULL, "cdn.example.com", "https://cdn.example.com:99999/v", false,
     "not a valid URL"},
    {"port 0", NULL, "cdn.example.com", "https://cdn.example.com:0/v", false, "not a valid URL"},
    {"two @", NULL, "cdn.example.com", "http://a@cdn.example.com@evil.net/", false,
     "not a valid URL"},
    /* libcurl reads "https:///v" as host "v": judged as it would be fetched. */
    {"empty authority", NULL, "cdn.example.com", "https:///v", false, "host v:443"},
};

static void test_allow_matrix(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(allow_cases) / sizeof(allow_cases[0]); i++) {
        const allow_case_t *c = &allow_cases[i];
        char errstr[256];
        fq_allow_t *allow = fq_allow_new(c->schemes, c->hosts, errstr, sizeof(errstr));
        assert_non_null(allow);
        fq_error_t *err = fq_allow_check(allow, c->url, "video_url", NULL);
        if (c->allowed != (err == NULL))
            fail_msg("case '%s': expected %s, got %s", c->name, c->allowed ? "allowed" : "refused",
                     err ? fq_error_message(err) : "allowed");
        if (err) {
            assert_int_equal(fq_error_stage(err), FQ_STAGE_VALIDATE);
            assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
            if (!strstr(fq_error_message(err), c->msg))
                fail_msg("case '%s': message '%s' lacks '%s'", c->name, fq_error_message(err),
                         c->msg);
        }
        fq_error_destroy(err);
        fq_allow_destroy(allow);
    }
}

static void test_allow_bad_scheme_config(void **state)
{
    (void)state;
    char errstr[256] = "";
    assert_null(fq_allow_new("https,gopher", "h", errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "ALLOWED_SOURCE_SCHEMES"));
    assert_null(fq_allow_new(NULL, "a.com,user@b.com", errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "ALLOWED_SOURCE_HOSTS: an entry is not host, host:port"));
    fq_allow_t *allow = fq_allow_new(" https , file ", " a.com ,, b.com ", errstr, sizeof(errstr));
    assert_non_null(allow);
    assert_true(fq_allow_scheme(allow, "file"));
    assert_false(fq_allow_scheme(allow, "s3"));
    fq_error_t *err = fq_allow_check(allow, "https://b.com/x", "video_url", NULL);
    assert_null(err);
    assert_int_equal(fq_allow_add_host(allow, "C.com"), 0);
    assert_int_equal(fq_allow_add_host(allow, "http://c.com/"), -2);
    assert_int_equal(fq_allow_add_host(allow, "c.com/x"), -2);
    assert_int_equal(fq_allow_add_host(allow, "c.com:99999"), -2);
    assert_int_equal(fq_allow_add_host(allow, "*.127.0.0.1"), -2);
    err = fq_allow_check(allow, "https://c.COM/x", "video_url", NULL);
    assert_null(err);
    fq_allow_destroy(allow);
}

/* ---- URL parsing and redaction ------------------------------------------------------- */

static void test_url_parse(void **state)
{
    (void)state;
    fq_url_parts_t p;
    char errstr[128];
    assert_int_equal(fq_url_parse("HTTPS://Host.Example:8443/a/b?q=1", &p, errstr, sizeof(errstr)),
                     0);
    assert_string_equal(p.scheme, "https");
    assert_string_equal(p.host, "host.example");
    assert_int_equal(p.port, 8443);
    assert_false(p.has_userinfo);
    assert_false(p.host_is_ip);
    assert_string_equal(p.url + p.path_offset, "/a/b?q=1");

    assert_int_equal(fq_url_parse("http://[fe80::1]:80/", &p, errstr, sizeof(errstr)), 0);
    assert_string_equal(p.host, "fe80::1");
    assert_true(p.host_is_ip);
    assert_int_equal(p.port, 80);

    assert_int_equal(fq_url_parse("file:///etc/passwd", &p, errstr, sizeof(errstr)), 0);
    assert_string_equal(p.host, "");
    assert_string_equal(p.url + p.path_offset, "/etc/passwd");

    assert_int_equal(fq_url_parse("file://./frames/a.jpg", &p, errstr, sizeof(errstr)), 0);
    assert_string_equal(p.host, ".");
    assert_string_equal(p.url, "file://./frames/a.jpg");
    assert_string_equal(p.url + p.path_offset, "/frames/a.jpg");

    assert_int_equal(fq_url_parse("http://u:p@h/x", &p, errstr, sizeof(errstr)), 0);
    assert_true(p.has_userinfo);
    assert_string_equal(p.host, "h");

    /* What libcurl would fetch: numeric IPv4 forms and dot segments normalised. */
    assert_int_equal(fq_url_parse("http://0x7f.1:8080/a/../b", &p, errstr, sizeof(errstr)), 0);
    assert_string_equal(p.host, "127.0.0.1");
    assert_true(p.host_is_ip);
    assert_string_equal(p.url, "http://127.0.0.1:8080/b");

    assert_int_equal(fq_url_parse("s3://bucket/p/c.mp4", &p, errstr, sizeof(errstr)), 0);
    assert_string_equal(p.scheme, "s3");
    assert_string_equal(p.host, "bucket");
    assert_string_equal(p.url + p.path_offset, "/p/c.mp4");

    assert_int_equal(fq_url_parse("http://h:0/", &p, errstr, sizeof(errstr)), -1);
    assert_int_equal(fq_url_parse("http://h:12ab/", &p, errstr, sizeof(errstr)), -1);
    assert_int_equal(fq_url_parse("http://[::1/", &p, errstr, sizeof(errstr)), -1);
    assert_int_equal(fq_url_parse("://h/", &p, errstr, sizeof(errstr)), -1);
    assert_int_equal(fq_url_parse("http://h/\x7f", &p, errstr, sizeof(errstr)), -1);
}

static void test_url_redact(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"https://user:secret@h.com/a/b", "https://h.com/a/b"},
        {"https://h.com/a?X-Amz-Signature=abc", "https://h.com/a?..."},
        {"https://u:p@h.com/a?sig=1#frag", "https://h.com/a?..."},
        {"s3://bucket/key.mp4", "s3://bucket/key.mp4"},
        {"file:///tmp/x", "file:///tmp/x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256];
        fq_url_redact(cases[i].in, out, sizeof(out));
        assert_string_equal(out, cases[i].out);
        assert_null(strstr(out, "secret"));
    }
    char small[8];
    fq_url_redact("https://h.com/long/path", small, sizeof(small));
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

/* ---- S3 ------------------------------------------------------------------------------ */

static void test_s3_object_url(void **state)
{
    (void)state;
    static const struct {
        const char *endpoint, *region, *bucket, *key, *want;
    } cases[] = {
        {"http://127.0.0.1:17070", "us-east-1", "frameq-videos", "instagram/ABC.mp4",
         "http://127.0.0.1:17070/frameq-videos/instagram/ABC.mp4"},
        {"http://127.0.0.1:17070/", "us-east-1", "b1b", "a/b/c",
         "http://127.0.0.1:17070/b1b/a/b/c"},
        {NULL, "eu-west-1", "bkt", "k.jpg", "https://s3.eu-west-1.amazonaws.com/bkt/k.jpg"},
        {"", NULL, "bkt", "k", "https://s3.us-east-1.amazonaws.com/bkt/k"},
        {"http://s3", "r", "bkt", "a b/c+d=e~f_g-h.i", "http://s3/bkt/a%20b/c%2Bd%3De~f_g-h.i"},
        {"http://s3", "r", "bkt", "caf\xc3\xa9/%", "http://s3/bkt/caf%C3%A9/%25"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256];
        assert_int_equal(fq_s3_object_url(cases[i].endpoint, cases[i].region, cases[i].bucket,
                                          cases[i].key, out, sizeof(out)),
                         0);
        assert_string_equal(out, cases[i].want);
    }
    char tiny[24];
    assert_int_equal(
        fq_s3_object_url("http://s3", "r", "bkt", "a/very/long/key/indeed", tiny, sizeof(tiny)),
        -1);
    assert_int_equal(fq_s3_object_url("http://s3", "r", "bkt", "k   ", tiny, 18), -1);
}

static void test_s3_split(void **state)
{
    (void)state;
    char bucket[64], key[256];
    assert_int_equal(
        fq_s3_split("s3://frameq-videos/p/c.mp4", bucket, sizeof(bucket), key, sizeof(key)), 0);
    assert_string_equal(bucket, "frameq-videos");
    assert_string_equal(key, "p/c.mp4");
    assert_int_equal(fq_s3_split("s3://frameq-videos/", bucket, sizeof(bucket), key, sizeof(key)),
                     -1);
    assert_int_equal(fq_s3_split("https://b/k", bucket, sizeof(bucket), key, sizeof(key)), -1);
    assert_int_equal(fq_s3_split("s3://ab/k", bucket, sizeof(bucket), key, sizeof(key)), -1);
    assert_int_equal(fq_s3_split("s3://u@bkt/k", bucket, sizeof(bucket), key, sizeof(key)), -1);
    assert_int_equal(fq_s3_split("s3://bkt/k?x=1", bucket, sizeof(bucket), key, sizeof(key)), -1);
}

static void test_s3_error_code(void **state)
{
    (void)state;
    const char *xml = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>"
                      "<Message>nope</Message></Error>";
    char code[64];
    assert_int_equal(fq_s3_error_code(xml, strlen(xml), code, sizeof(code)), 0);
    assert_string_equal(code, "SignatureDoesNotMatch");
    assert_int_equal(fq_s3_error_code("<Error></Error>", 15, code, sizeof(code)), -1);
    assert_int_equal(fq_s3_error_code("<Code></Code>", 13, code, sizeof(code)), -1);
    assert_int_equal(fq_s3_error_code("<Code>abc", 9, code, sizeof(code)), -1);
    /* Only the captured length counts, and odd bytes do not pass into messages. */
    assert_int_equal(fq_s3_error_code(xml, 30, code, sizeof(code)), -1);
    const char *odd = "<Code>A\"b<c</Code>";
    assert_int_equal(fq_s3_error_code(odd, strlen(odd), code, sizeof(code)), 0);
    assert_string_equal(code, "A?b?c");
}

/* Credential and clock refusals of the configured endpoint are outages; the rest by status. */
static void test_s3_status_classes(void **state)
{
    (void)state;
    static const struct {
        long status;
        const char *code; /* NULL: no XML body */
        fq_class_t klass;
    } cases[] = {
        {403, "SignatureDoesNotMatch", FQ_CLASS_OUTAGE},
        {403, "InvalidAccessKeyId", FQ_CLASS_OUTAGE},
        {400, "ExpiredToken", FQ_CLASS_OUTAGE},
        {403, "RequestTimeTooSkewed", FQ_CLASS_OUTAGE},
        {400, "AuthorizationHeaderMalformed", FQ_CLASS_OUTAGE},
        {404, "XAdminUserNotFound", FQ_CLASS_OUTAGE},
        {403, "AccessDenied", FQ_CLASS_PERMANENT},
        {404, "NoSuchKey", FQ_CLASS_PERMANENT},
        {403, NULL, FQ_CLASS_PERMANENT},
        {503, "SlowDown", FQ_CLASS_RETRIABLE},
        {500, "SignatureDoesNotMatch", FQ_CLASS_RETRIABLE}, /* not a 4xx: not about us */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char xml[256] = "";
        if (cases[i].code)
            snprintf(xml, sizeof(xml), "<Error><Code>%s</Code></Error>", cases[i].code);
        fq_error_t *err =
            fq_s3_status_error(FQ_STAGE_FETCH, cases[i].status, "s3://b/k", xml, strlen(xml));
        if (fq_error_class(err) != cases[i].klass)
            fail_msg("%ld %s: class %s, want %s", cases[i].status,
                     cases[i].code ? cases[i].code : "(no body)",
                     fq_class_name(fq_error_class(err)), fq_class_name(cases[i].klass));
        assert_int_equal(fq_error_domain(err), FQ_ERROR_DOMAIN_HTTP);
        assert_int_equal(fq_error_code(err), (int)cases[i].status);
        fq_error_destroy(err);
    }
    /* The same answer from an item's own http(s) video_url is the item's business. */
    const char *xml = "<Error><Code>SignatureDoesNotMatch</Code></Error>";
    fq_error_t *err = fq_http_status_error(FQ_STAGE_FETCH, fq_error_class_for_http_status(403), 403,
                                           "https://h/v", xml, strlen(xml));
    assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
    fq_error_destroy(err);
}

/* ---- error mapping ------------------------------------------------------------------- */

static void test_status_mapping(void **state)
{
    (void)state;
    static const struct {
        long status;
        fq_class_t klass;
    } cases[] = {
        {400, FQ_CLASS_PERMANENT}, {401, FQ_CLASS_PERMANENT}, {403, FQ_CLASS_PERMANENT},
        {404, FQ_CLASS_PERMANENT}, {410, FQ_CLASS_PERMANENT}, {418, FQ_CLASS_PERMANENT},
        {408, FQ_CLASS_RETRIABLE}, {429, FQ_CLASS_RETRIABLE}, {500, FQ_CLASS_RETRIABLE},
        {502, FQ_CLASS_RETRIABLE}, {503, FQ_CLASS_RETRIABLE}, {504, FQ_CLASS_RETRIABLE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_class_t klass = fq_error_class_for_http_status(cases[i].status);
        fq_error_t *err =
            fq_http_status_error(FQ_STAGE_FETCH, klass, cases[i].status, "https://h/v", "", 0);
        assert_int_equal(fq_error_class(err), cases[i].klass);
        assert_int_equal(fq_error_stage(err), FQ_STAGE_FETCH);
        assert_int_equal(fq_error_domain(err), FQ_ERROR_DOMAIN_HTTP);
        assert_int_equal(fq_error_code(err), (int)cases[i].status);
        char want[32];
        snprintf(want, sizeof(want), "HTTP %ld", cases[i].status);
        assert_non_null(strstr(fq_error_message(err), want));
        fq_error_destroy(err);
    }
    const char *xml = "<Error><Code>InvalidAccessKeyId</Code></Error>";
    fq_error_t *err =
        fq_http_status_error(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, 403, "s3://b/k", xml, strlen(xml));
    assert_non_null(
        strstr(fq_error_message(err), "S3 authentication failed (HTTP 403 InvalidAccessKeyId)"));
    fq_error_destroy(err);
    xml = "<Error><Code>NoSuchKey</Code></Error>";
    err =
        fq_http_status_error(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, 404, "s3://b/k", xml, strlen(xml));
    assert_non_null(strstr(fq_error_message(err), "HTTP 404 NoSuchKey"));
    assert_null(strstr(fq_error_message(err), "authentication"));
    fq_error_destroy(err);
}

static void test_curl_mapping(void **state)
{
    (void)state;
    static const struct {
        CURLcode rc;
        fq_class_t klass;
        bool unreachable;
    } cases[] = {
        {CURLE_COULDNT_CONNECT, FQ_CLASS_RETRIABLE, true},
        {CURLE_COULDNT_RESOLVE_HOST, FQ_CLASS_RETRIABLE, true},
        {CURLE_OPERATION_TIMEDOUT, FQ_CLASS_RETRIABLE, false},
        {CURLE_PARTIAL_FILE, FQ_CLASS_RETRIABLE, false},
        {CURLE_RECV_ERROR, FQ_CLASS_RETRIABLE, false},
        {CURLE_SEND_ERROR, FQ_CLASS_RETRIABLE, false},
        {CURLE_GOT_NOTHING, FQ_CLASS_RETRIABLE, false},
        {CURLE_SSL_CONNECT_ERROR, FQ_CLASS_RETRIABLE, false},
        {CURLE_FILESIZE_EXCEEDED, FQ_CLASS_PERMANENT, false},
        {CURLE_TOO_MANY_REDIRECTS, FQ_CLASS_PERMANENT, false},
        {CURLE_UNSUPPORTED_PROTOCOL, FQ_CLASS_PERMANENT, false},
        {CURLE_URL_MALFORMAT, FQ_CLASS_PERMANENT, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(fq_http_class_for_curl(cases[i].rc), cases[i].klass);
        assert_int_equal(fq_http_curl_unreachable(cases[i].rc), cases[i].unreachable);
    }
}

/* ---- SigV4 preparation and SHA-256 --------------------------------------------------- */

static void test_s3_prepare_header(void **state)
{
    (void)state;
    fq_config_t cfg = {.s3_region = "eu-central-1",
                       .aws_access_key_id = "AKID",
                       .aws_secret_access_key = "se:cret"};
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    struct curl_slist *h = fq_s3_prepare(curl, &cfg, "abc123", NULL);
    assert_non_null(h);
    assert_string_equal(h->data, "x-amz-content-sha256: abc123");
    assert_null(h->next);
    curl_slist_free_all(h);
    h = fq_s3_prepare(curl, &cfg, NULL, curl_slist_append(NULL, "Content-Type: a/b"));
    assert_string_equal(h->next->data,
                        "x-amz-content-sha256: "
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    curl_slist_free_all(h);
    curl_easy_cleanup(curl);
}

static void test_sha256(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *hex;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char out[65];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_sha256_hex(cases[i].in, strlen(cases[i].in), out);
        assert_string_equal(out, cases[i].hex);
    }
    /* One million 'a': crosses many block boundaries (FIPS 180-2 test vector). */
    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    fq_sha256_hex(a, 1000000, out);
    assert_string_equal(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* Lengths around the padding boundary, where one or two final blocks are needed. */
    static const struct {
        size_t n;
        const char *hex;
    } edges[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
    };
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        fq_sha256_hex(a, edges[i].n, out);
        assert_string_equal(out, edges[i].hex);
    }
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_matrix),      cmocka_unit_test(test_allow_bad_scheme_config),
        cmocka_unit_test(test_url_parse),         cmocka_unit_test(test_url_redact),
        cmocka_unit_test(test_s3_object_url),     cmocka_unit_test(test_s3_split),
        cmocka_unit_test(test_s3_error_code),     cmocka_unit_test(test_s3_status_classes),
        cmocka_unit_test(test_status_mapping),    cmocka_unit_test(test_curl_mapping),
        cmocka_unit_test(test_s3_prepare_header), cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
