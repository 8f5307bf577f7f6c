/* libFuzzer target: URLs. Input: TEMPLATE \0 PLATFORM \0 CODE.
 *  1. URL template expansion, with only validated platform/code values, as in production.
 *  2. The allow-list, judged with libcurl's parser (fq_url_parse = curl_url): whatever it
 *     allows must, read again by a fresh curl_url() handle the way curl_easy_perform reads
 *     CURLOPT_URL, name an allowed host and port. A parser differential would abort here. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fq_fetch.h"
#include "fq_http.h"
#include "fq_item.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The allow-list of the check: a host on any port and a host on one port. */
#define ALLOWED_HOSTS "cdn.example.com,127.0.0.1:8080"

static void check_allowed_as_fetched(const fq_url_parts_t *parts)
{
    if (strcmp(parts->scheme, "http") != 0 && strcmp(parts->scheme, "https") != 0)
        return; /* s3 goes to S3_ENDPOINT, file:// is opened in place */
    CURLU *h = curl_url();
    char *host = NULL, *port = NULL;
    if (!h)
        return;
    if (curl_url_set(h, CURLUPART_URL, parts->url, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        abort(); /* allowed, yet libcurl could not read it */
    for (char *c = host; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    bool ok = strcmp(host, "cdn.example.com") == 0 ||
              (strcmp(host, "127.0.0.1") == 0 && strcmp(port, "8080") == 0);
    if (!ok) {
        fprintf(stderr, "allowed %s but libcurl reads host %s port %s\n", parts->url, host, port);
        abort();
    }
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fq_allow_t *allow;
    if (!allow) {
        char why[256];
        allow = fq_allow_new("http,https,s3,file", ALLOWED_HOSTS, why, sizeof(why));
        if (!allow)
            abort();
    }
    const char *s[3];
    char *buf = fuzz_three_strings(data, size, s);
    if (!buf)
        return 0;
    const char *tmpl = s[0], *platform = s[1], *code = s[2];
    if (!fq_item_platform_valid(platform))
        platform = "instagram";
    if (!fq_item_code_valid(code))
        code = "ABC123";
    char out[256];
    char errstr[256] = "";
    int index = size > 0 ? data[0] : 0;
    if (fq_url_expand(tmpl, platform, code, index, out, sizeof(out), errstr, sizeof(errstr)) == 0) {
        if (strlen(out) >= sizeof(out))
            abort();
    } else if (errstr[0] == '\0') {
        abort();
    }

    fq_url_parts_t *parts = malloc(sizeof(*parts));
    if (parts) {
        fq_error_t *err = fq_allow_check(allow, tmpl, "video_url", parts);
        if (!err)
            check_allowed_as_fetched(parts);
        fq_error_destroy(err);
        free(parts);
    }
    free(buf);
    return 0;
}
