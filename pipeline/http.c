/* Shared libcurl / S3 helpers: see fq_http.h. */
#include "fq_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void set_err(char *errstr, size_t errstr_size, const char *fmt, ...) FQ_PRINTF(3, 4);

static void set_err(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (!errstr || errstr_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}

static bool is_ip_literal(const char *host)
{
    /* curl_url() has already rewritten the numeric IPv4 forms resolvers accept ("127.1",
     * "0x7f.1", "2130706433") to dotted quads, so inet_pton sees every IP literal. */
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Copies a part of h into out (lowercased when lower). 0 when present, 1 when absent (a "no
 * such part" answer), -1 when it does not fit or another error. */
static int url_part(CURLU *h, CURLUPart what, unsigned flags, char *out, size_t out_size,
                    bool lower)
{
    char *v = NULL;
    CURLUcode uc = curl_url_get(h, what, &v, flags);
    if (uc == CURLUE_NO_HOST || uc == CURLUE_NO_PORT || uc == CURLUE_NO_USER ||
        uc == CURLUE_NO_PASSWORD || uc == CURLUE_NO_OPTIONS || uc == CURLUE_NO_QUERY ||
        uc == CURLUE_NO_FRAGMENT) {
        if (out_size)
            out[0] = '\0';
        return 1;
    }
    if (uc != CURLUE_OK)
        return -1;
    size_t n = strlen(v);
    int rc = -1;
    if (n < out_size) {
        for (size_t i = 0; i <= n; i++)
            out[i] = lower ? (char)tolower((unsigned char)v[i]) : v[i];
        rc = 0;
    }
    curl_free(v);
    return rc;
}

int fq_url_parse(const char *url, fq_url_parts_t *parts, char *errstr, size_t errstr_size)
{
    memset(parts, 0, sizeof(*parts));
    parts->port = -1;
    for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            set_err(errstr, errstr_size, "URL contains a control, space or non-ASCII byte");
            return -1;
        }
        if (*p == '\\') {
            set_err(errstr, errstr_size, "URL contains a backslash");
            return -1;
        }
    }
    const char *sep = strstr(url, "://");
    if (!sep || sep == url) {
        set_err(errstr, errstr_size, "URL has no scheme://");
        return -1;
    }
    /* file://./rel is ours (relative to the working directory; never fetched by libcurl, which
     * refuses it): judged as file:///rel, written back with its "./". */
    bool relative = strncasecmp(url, "file://./", 9) == 0;
    char local[FQ_URL_MAX + 1];
    if (relative) {
        if (snprintf(local, sizeof(local), "file:///%s", url + 9) >= (int)sizeof(local)) {
            set_err(errstr, errstr_size, "URL is longer than %d bytes", FQ_URL_MAX);
            return -1;
        }
        url = local;
    }
    /* The one URL parser: libcurl's own (curl_url), so what is judged here is exactly what
     * libcurl would connect to. Schemes it does not fetch (s3) are parsed the same way. */
    CURLU *h = curl_url();
    if (!h) {
        set_err(errstr, errstr_size, "out of memory");
        return -1;
    }
    int rc = -1;
    char port[8];
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc != CURLUE_OK) {
        set_err(errstr, errstr_size, "%s", curl_url_strerror(uc));
        goto done;
    }
    if (url_part(h, CURLUPART_SCHEME, 0, parts->scheme, sizeof(parts->scheme), true) != 0) {
        set_err(errstr, errstr_size, "URL scheme is not valid");
        goto done;
    }
    char host[FQ_URL_HOST_MAX + 3];
    int hrc = url_part(h, CURLUPART_HOST, 0, host, sizeof(host), true);
    if (hrc < 0) {
        set_err(errstr, errstr_size, "URL host is too long");
        goto done;
    }
    size_t hlen = strlen(host);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memcpy(parts->host, host + 1, hlen - 2); /* IPv6 without its brackets */
        parts->host[hlen - 2] = '\0';
    } else if (hlen <= FQ_URL_HOST_MAX) {
        memcpy(parts->host, host, hlen + 1);
    } else {
        set_err(errstr, errstr_size, "URL host is too long");
        goto done;
    }
    int prc = url_part(h, CURLUPART_PORT, 0, port, sizeof(port), false);
    if (prc == 0) {
        parts->port = atoi(port);
        if (parts->port < 1 || parts->port > 65535) {
            set_err(errstr, errstr_size, "URL port is not valid");
            goto done;
        }
    }
    char scratch[8];
    parts->has_userinfo = url_part(h, CURLUPART_USER, 0, scratch, 0, false) != 1 ||
                          url_part(h, CURLUPART_PASSWORD, 0, scratch, 0, false) != 1 ||
                          url_part(h, CURLUPART_OPTIONS, 0, scratch, 0, false) != 1;
    char *full = NULL;
    if (curl_url_get(h, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        set_err(errstr, errstr_size, "URL cannot be written back");
        goto done;
    }
    const char *auth = strstr(full, "://");
    const char *path = auth ? strchr(auth + 3, '/') : NULL;
    int n = !path      ? -1
            : relative ? snprintf(parts->url, sizeof(parts->url), "file://.%s", path)
                       : snprintf(parts->url, sizeof(parts->url), "%s", full);
    if (n < 0 || (size_t)n >= sizeof(parts->url)) {
        set_err(errstr, errstr_size, "URL is longer than %d bytes", FQ_URL_MAX);
        curl_free(full);
        goto done;
    }
    parts->path_offset = relative ? strlen("file://.") : (size_t)(path - full);
    curl_free(full);
    if (relative)
        snprintf(parts->host, sizeof(parts->host), ".");
    parts->host_is_ip = parts->host[0] && is_ip_literal(parts->host);
    rc = 0;
done:
    curl_url_cleanup(h);
    return rc;
}

int fq_url_default_port(const char *scheme)
{
    if (strcmp(scheme, "http") == 0)
        return 80;
    if (strcmp(scheme, "https") == 0)
        return 443;
    return -1;
}

void fq_url_redact(const char *url, char *out, size_t out_size)
{
    if (out_size == 0)
        return;
    out[0] = '\0';
    const char *sep = strstr(url, "://");
    const char *copy_from = url;
    size_t head = 0;
    if (sep) {
        const char *auth = sep + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = memchr(auth, '@', alen);
        if (at) {
            head = (size_t)(auth - url);
            copy_from = at + 1;
        }
    }
    size_t q = strcspn(copy_from, "?#");
    snprintf(out, out_size, "%.*s%.*s%s", (int)head, url, (int)q, copy_from,
             copy_from[q] == '?' ? "?..." : "");
}

/* ---- allow-list ---------------------------------------------------------------------- */

/* One ALLOWED_SOURCE_HOSTS entry: a host (lowercased, IPv6 without brackets, "*.suffix" for
 * subdomains) and a port, -1 when the entry is a bare host (any port). */
typedef struct allow_host {
    char host[FQ_URL_HOST_MAX + 1];
    int port;
} allow_host_t;

struct fq_allow {
    bool http, https, s3, file;
    allow_host_t *hosts;
    size_t nhosts;
};

void fq_allow_destroy(fq_allow_t *allow)
{
    if (!allow)
        return;
    free(allow->hosts);
    free(allow);
}

/* Reads an entry through the same parser as the URLs it will be compared with, so "127.1",
 * "LOCALHOST" or "[::1]:9000" mean what they mean to libcurl. 0, -1 not a host[:port]. */
static int allow_entry(const char *entry, allow_host_t *out)
{
    bool wildcard = strncmp(entry, "*.", 2) == 0;
    char url[FQ_URL_HOST_MAX + 32];
    if (snprintf(url, sizeof(url), "http://%s/", wildcard ? entry + 2 : entry) >=
            (int)sizeof(url) ||
        strpbrk(entry + (wildcard ? 2 : 0), "/?#@*"))
        return -1;
    fq_url_parts_t parts;
    if (fq_url_parse(url, &parts, NULL, 0) != 0 || !parts.host[0] || (wildcard && parts.host_is_ip))
        return -1;
    if (strlen(parts.host) + (wildcard ? 2 : 0) >= sizeof(out->host))
        return -1;
    snprintf(out->host, sizeof(out->host), "%s%.*s", wildcard ? "*." : "",
             FQ_URL_HOST_MAX - (wildcard ? 2 : 0), parts.host);
    out->port = parts.port;
    return 0;
}

int fq_allow_add_host(fq_allow_t *allow, const char *host)
{
    if (!host || !*host)
        return 0;
    allow_host_t entry;
    if (allow_entry(host, &entry) != 0)
        return -2;
    allow_host_t *hosts = realloc(allow->hosts, (allow->nhosts + 1) * sizeof(*hosts));
    if (!hosts)
        return -1;
    allow->hosts = hosts;
    allow->hosts[allow->nhosts++] = entry;
    return 0;
}

/* Calls fn for each trimmed, non-empty entry of a comma list; stops at the first non-zero. */
static int for_each_entry(const char *list, int (*fn)(void *, const char *), void *opaque)
{
    const char *p = list;
    while (p && *p) {
        size_t len = strcspn(p, ",");
        const char *start = p;
        const char *end = p + len;
        while (start < end && isspace((unsigned char)*start))
            start++;
        while (end > start && isspace((unsigned char)end[-1]))
            end--;
        if (end > start) {
            char entry[FQ_URL_HOST_MAX + 1];
            if ((size_t)(end - start) >= sizeof(entry))
                return -3;
            memcpy(entry, start, (size_t)(end - start));
            entry[end - start] = '\0';
            int rc = fn(opaque, entry);
            if (rc)
                return rc;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

static int add_scheme(void *opaque, const char *scheme)
{
    fq_allow_t *allow = opaque;
    if (strcasecmp(scheme, "http") == 0)
        allow->http = true;
    else if (strcasecmp(scheme, "https") == 0)
        allow->https = true;
    else if (strcasecmp(scheme, "s3") == 0)
        allow->s3 = true;
    else if (strcasecmp(scheme, "file") == 0)
        allow->file = true;
    else
        return 1;
    return 0;
}

static int add_host(void *opaque, const char *host)
{
    return fq_allow_add_host(opaque, host);
}

fq_allow_t *fq_allow_new(const char *schemes, const char *hosts, char *errstr, size_t errstr_size)
{
    fq_allow_t *allow = calloc(1, sizeof(*allow));
    if (!allow) {
        set_err(errstr, errstr_size, "out of memory");
        return NULL;
    }
    int rc = for_each_entry(schemes ? schemes : "https,http,s3", add_scheme, allow);
    if (rc) {
        set_err(errstr, errstr_size,
                "ALLOWED_SOURCE_SCHEMES: only http, https, s3 and file are supported");
        goto fail;
    }
    rc = for_each_entry(hosts, add_host, allow);
    if (rc) {
        set_err(errstr, errstr_size, "ALLOWED_SOURCE_HOSTS: %s",
                rc == -3   ? "a host is too long"
                : rc == -2 ? "an entry is not host, host:port, [IPv6]:port or *.domain"
                           : "out of memory");
        goto fail;
    }
    return allow;
fail:
    fq_allow_destroy(allow);
    return NULL;
}

bool fq_allow_scheme(const fq_allow_t *allow, const char *scheme)
{
    if (strcmp(scheme, "http") == 0)
        return allow->http;
    if (strcmp(scheme, "https") == 0)
        return allow->https;
    if (strcmp(scheme, "s3") == 0)
        return allow->s3;
    if (strcmp(scheme, "file") == 0)
        return allow->file;
    return false;
}

/* port is the URL's effective port (explicit or the scheme's default), -1 for s3 buckets. */
static bool host_allowed(const fq_allow_t *allow, const char *host, int port, bool is_ip)
{
    for (size_t i = 0; i < allow->nhosts; i++) {
        const allow_host_t *e = &allow->hosts[i];
        if (e->port != -1 && e->port != port)
            continue; /* host:port entries match that port only; a bare host any port */
        if (strcmp(e->host, host) == 0)
            return true;
        /* "*.example.com" matches a.example.com and a.b.example.com, never an IP literal. */
        if (!is_ip && e->host[0] == '*' && e->host[1] == '.') {
            size_t elen = strlen(e->host + 1), hlen = strlen(host);
            if (hlen > elen && strcmp(host + hlen - elen, e->host + 1) == 0)
                return true;
        }
    }
    return false;
}

static bool bucket_valid(const char *bucket)
{
    size_t len = strlen(bucket);
    if (len < 3 || len > 63)
        return false;
    for (const char *p = bucket; *p; p++) {
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-' && *p != '.')
            return false;
    }
    return true;
}

fq_error_t *fq_allow_check(const fq_allow_t *allow, const char *url, const char *what,
                           fq_url_parts_t *parts)
{
    fq_url_parts_t local;
    fq_url_parts_t *pp = parts ? parts : &local;
    char why[128];
    if (fq_url_parse(url, pp, why, sizeof(why)) != 0)
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "%s is not a valid URL: %s",
                            what, why);
    if (pp->has_userinfo)
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                            "%s must not carry credentials (user@host)", what);
    const char *scheme = pp->scheme;
    bool known = strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0 ||
                 strcmp(scheme, "s3") == 0 || strcmp(scheme, "file") == 0;
    if (!known || !fq_allow_scheme(allow, scheme))
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                            "%s scheme %s is not in ALLOWED_SOURCE_SCHEMES", what, scheme);
    if (strcmp(scheme, "file") == 0) {
        /* file://localhost/x, file:///x and file://./x (relative) have no remote host. */
        if (pp->host[0] && strcmp(pp->host, "localhost") != 0 && strcmp(pp->host, ".") != 0)
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                                "%s file URL names a remote host %s", what, pp->host);
        return NULL;
    }
    if (!pp->host[0])
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "%s has no host", what);
    if (strcmp(scheme, "s3") == 0) {
        if (!bucket_valid(pp->host) || pp->port != -1)
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                                "%s bucket %s is not a valid S3 bucket name", what, pp->host);
        const char *key = pp->url + pp->path_offset;
        if (key[0] != '/' || key[1] == '\0')
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "%s has no object key",
                                what);
    }
    bool is_s3 = strcmp(scheme, "s3") == 0;
    int port = is_s3 ? -1 : pp->port != -1 ? pp->port : fq_url_default_port(scheme);
    if (!host_allowed(allow, pp->host, port, pp->host_is_ip)) {
        /* Named as an entry would be written: host:port (bucket names have no port). */
        bool v6 = strchr(pp->host, ':') != NULL;
        char hp[FQ_URL_HOST_MAX + 16];
        if (is_s3)
            snprintf(hp, sizeof(hp), "%s", pp->host);
        else
            snprintf(hp, sizeof(hp), "%s%s%s:%d", v6 ? "[" : "", pp->host, v6 ? "]" : "", port);
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                            "%s host %s is not in ALLOWED_SOURCE_HOSTS", what, hp);
    }
    return NULL;
}

/* ---- S3 ------------------------------------------------------------------------------ */

int fq_s3_split(const char *url, char *bucket, size_t bucket_size, char *key, size_t key_size)
{
    fq_url_parts_t parts;
    if (fq_url_parse(url, &parts, NULL, 0) != 0 || strcmp(parts.scheme, "s3") != 0 ||
        parts.has_userinfo || parts.port != -1 || !bucket_valid(parts.host))
        return -1;
    const char *path = parts.url + parts.path_offset;
    if (path[0] != '/' || path[1] == '\0' || strpbrk(path, "?#"))
        return -1;
    if (strlen(parts.host) >= bucket_size || strlen(path + 1) >= key_size)
        return -1;
    strcpy(bucket, parts.host);
    strcpy(key, path + 1);
    return 0;
}

int fq_s3_object_url(const char *endpoint, const char *region, const char *bucket, const char *key,
                     char *out, size_t out_size)
{
    static const char hex[] = "0123456789ABCDEF";
    int n;
    if (endpoint && *endpoint) {
        size_t elen = strlen(endpoint);
        while (elen > 0 && endpoint[elen - 1] == '/')
            elen--;
        n = snprintf(out, out_size, "%.*s/%s/", (int)elen, endpoint, bucket);
    } else {
        n = snprintf(out, out_size, "https://s3.%s.amazonaws.com/%s/",
                     region && *region ? region : "us-east-1", bucket);
    }
    if (n < 0 || (size_t)n >= out_size)
        return -1;
    size_t pos = (size_t)n;
    /* SigV4 canonical URIs encode everything but unreserved characters, per segment. */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        bool keep = isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' || *p == '/';
        size_t need = keep ? 1 : 3;
        if (pos + need >= out_size)
            return -1;
        if (keep) {
            out[pos++] = (char)*p;
        } else {
            out[pos++] = '%';
            out[pos++] = hex[*p >> 4];
            out[pos++] = hex[*p & 15];
        }
    }
    out[pos] = '\0';
    return 0;
}

struct curl_slist *fq_s3_prepare(CURL *curl, const fq_config_t *cfg, const char *payload_sha256,
                                 struct curl_slist *headers)
{
    char sigv4[96];
    char hdr[128];
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3",
             cfg->s3_region && *cfg->s3_region ? cfg->s3_region : "us-east-1");
    curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4);
    /* Username and password set apart, so a ':' in the secret cannot split them wrongly. */
    curl_easy_setopt(curl, CURLOPT_USERNAME, cfg->aws_access_key_id ? cfg->aws_access_key_id : "");
    curl_easy_setopt(curl, CURLOPT_PASSWORD,
                     cfg->aws_secret_access_key ? cfg->aws_secret_access_key : "");
    snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: %s",
             payload_sha256 ? payload_sha256 : EMPTY_SHA256);
    struct curl_slist *list = curl_slist_append(headers, hdr);
    if (!list) {
        curl_slist_free_all(headers);
        return NULL;
    }
    return list;
}

int fq_s3_error_code(const char *body, size_t len, char *out, size_t out_size)
{
    if (!body || len == 0 || out_size == 0)
        return -1;
    const char *open = memmem(body, len, "<Code>", 6);
    if (!open)
        return -1;
    open += 6;
    const char *end = body + len;
    const char *close = memmem(open, (size_t)(end - open), "</Code>", 7);
    if (!close || close == open)
        return -1;
    size_t n = (size_t)(close - open);
    if (n >= out_size)
        n = out_size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)open[i];
        out[i] = (isalnum(c) || c == '.' || c == '-' || c == '_') ? (char)c : '?';
    }
    out[n] = '\0';
    return 0;
}

/* ---- error mapping ------------------------------------------------------------------- */

bool fq_http_curl_unreachable(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_COULDNT_RESOLVE_PROXY;
}

fq_class_t fq_http_class_for_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_LOGIN_DENIED:
    case CURLE_REMOTE_ACCESS_DENIED:
    case CURLE_REMOTE_FILE_NOT_FOUND:
        return FQ_CLASS_PERMANENT;
    default:
        return FQ_CLASS_RETRIABLE;
    }
}

static bool s3_auth_code(const char *code)
{
    static const char *const codes[] = {
        "SignatureDoesNotMatch",     "InvalidAccessKeyId",   "AuthorizationHeaderMalformed",
        "InvalidSignatureException", "RequestTimeTooSkewed", "XAmzContentSHA256Mismatch",
        "MissingSecurityHeader",     "ExpiredToken",         "InvalidToken",
        "XAdminUserNotFound" /* versitygw's answer (404) to an unknown key id */
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (strcmp(code, codes[i]) == 0)
            return true;
    }
    return false;
}

bool fq_s3_credential_error(long status, const char *body, size_t len)
{
    /* The answers to our key, our signature or our clock, not to the object: with them every
     * signed request fails alike (a rotated key, a skewed clock, a wrong S3_REGION). */
    static const char *const codes[] = {"InvalidAccessKeyId",
                                        "SignatureDoesNotMatch",
                                        "ExpiredToken",
                                        "InvalidToken",
                                        "TokenRefreshRequired",
                                        "RequestTimeTooSkewed",
                                        "RequestExpired",
                                        "AuthorizationHeaderMalformed",
                                        "InvalidSignatureException",
                                        "MissingSecurityHeader",
                                        "XAdminUserNotFound"};
    char code[64];
    if (status < 400 || status >= 500 || fq_s3_error_code(body, len, code, sizeof(code)) != 0)
        return false;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (strcmp(code, codes[i]) == 0)
            return true;
    }
    return false;
}

fq_error_t *fq_s3_status_error(fq_stage_t stage, long status, const char *safe_url,
                               const char *body, size_t len)
{
    bool credentials = fq_s3_credential_error(status, body, len);
    return fq_http_status_error(
        stage, credentials ? FQ_CLASS_OUTAGE : fq_error_class_for_http_status(status), status,
        safe_url, body, len);
}

fq_error_t *fq_http_status_error(fq_stage_t stage, fq_class_t klass, long status,
                                 const char *safe_url, const char *body, size_t len)
{
    char code[64];
    bool has_code = fq_s3_error_code(body, len, code, sizeof(code)) == 0;
    fq_error_t *err;
    if (has_code && status >= 400 && status < 500 && s3_auth_code(code))
        err = fq_error_new(stage, klass,
                           "S3 authentication failed (HTTP %ld %s) for %s: check "
                           "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and S3_REGION",
                           status, code, safe_url);
    else if (has_code)
        err = fq_error_new(stage, klass, "HTTP %ld %s from %s", status, code, safe_url);
    else
        err = fq_error_new(stage, klass, "HTTP %ld from %s", status, safe_url);
    fq_error_set_code(err, FQ_ERROR_DOMAIN_HTTP, (int)status);
    return err;
}

/* ---- one-shot S3 requests ------------------------------------------------------------ */

typedef struct reply_buf {
    char *data;
    size_t len, max;
} reply_buf_t;

static size_t on_reply_data(char *buf, size_t size, size_t nmemb, void *opaque)
{
    reply_buf_t *r = opaque;
    size_t n = size * nmemb;
    size_t take = r->len + n > r->max ? r->max - r->len : n;
    if (take > 0) {
        char *grown = realloc(r->data, r->len + take + 1);
        if (!grown)
            return 0;
        r->data = grown;
        memcpy(r->data + r->len, buf, take);
        r->len += take;
        r->data[r->len] = '\0';
    }
    return n;
}

fq_error_t *fq_s3_request(const fq_config_t *cfg, fq_stage_t stage, const char *method,
                          const char *bucket, const char *key, const void *body, size_t len,
                          long *status, char **reply, size_t *reply_len, size_t max_reply)
{
    char url[4096 + 256], safe[512], hash[65], errbuf[CURL_ERROR_SIZE] = "";
    fq_error_t *err = NULL;
    struct curl_slist *headers = NULL;
    reply_buf_t r = {.max = max_reply ? max_reply : 64 * 1024};
    long code = 0;
    bool is_put = strcmp(method, "PUT") == 0;
    snprintf(safe, sizeof(safe), "s3://%s/%s", bucket, key);
    if (fq_s3_object_url(cfg->s3_endpoint, cfg->s3_region, bucket, key, url, sizeof(url)) != 0)
        return fq_error_new(stage, FQ_CLASS_PERMANENT, "S3 URL for %s is too long", safe);
    CURL *curl = curl_easy_init();
    if (!curl)
        return fq_error_new(stage, FQ_CLASS_RETRIABLE, "curl_easy_init failed");
    int64_t timeout = cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout < 10000 ? timeout : 10000));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_reply_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (is_put) {
        /* The body as POSTFIELDS: libcurl's SigV4 hashes exactly what is sent. */
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, len ? body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        headers = curl_slist_append(NULL, "Content-Type: application/octet-stream");
        if (headers)
            headers = curl_slist_append(headers, "Expect:");
        if (!headers) {
            err = fq_error_new(stage, FQ_CLASS_RETRIABLE, "out of memory");
            goto done;
        }
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    fq_sha256_hex(is_put ? body : NULL, is_put ? len : 0, hash);
    headers = fq_s3_prepare(curl, cfg, hash, headers);
    if (!headers) {
        err = fq_error_new(stage, FQ_CLASS_RETRIABLE, "out of memory");
        goto done;
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK) {
        err = fq_error_new(
            stage, fq_http_curl_unreachable(rc) ? FQ_CLASS_OUTAGE : fq_http_class_for_curl(rc),
            "S3 %s %s failed: %s (curl %d)", method, safe,
            errbuf[0] ? errbuf : curl_easy_strerror(rc), (int)rc);
        fq_error_set_code(err, FQ_ERROR_DOMAIN_CURL, (int)rc);
    } else if (code < 200 || code >= 300) {
        err = fq_s3_status_error(stage, code, safe, r.data, r.len);
    }
done:
    if (status)
        *status = code;
    if (reply) {
        *reply = r.data;
        r.data = NULL;
    }
    if (reply_len)
        *reply_len = r.len;
    free(r.data);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return err;
}

fq_error_t *fq_s3_probe(const fq_config_t *cfg)
{
    /* One signed GET per s3:// bucket the configuration uses, of a key nobody writes: 404
     * NoSuchKey (or 2xx) proves the endpoint answers and accepts key, signature and clock. */
    const char *templates[2] = {cfg->frames_url_template, cfg->source_url_template};
    char probed[64] = "";
    for (int i = 0; i < 2; i++) {
        char bucket[64], key[8], sample[128];
        if (!templates[i] || strncmp(templates[i], "s3://", 5) != 0)
            continue;
        /* The bucket never holds a placeholder (config checks it): any key will do. */
        snprintf(sample, sizeof(sample), "s3://%.*s/x", (int)strcspn(templates[i] + 5, "/"),
                 templates[i] + 5);
        if (fq_s3_split(sample, bucket, sizeof(bucket), key, sizeof(key)) != 0 ||
            strcmp(bucket, probed) == 0)
            continue;
        snprintf(probed, sizeof(probed), "%s", bucket);
        long status = 0;
        fq_error_t *err = fq_s3_request(cfg, FQ_STAGE_UPLOAD, "GET", bucket, ".frameq-probe", NULL,
                                        0, &status, NULL, NULL, 4096);
        if (!err || status == 404 || fq_error_class(err) == FQ_CLASS_PERMANENT) {
            /* Answered, signature accepted. A 4xx not about credentials (AccessDenied on the
             * probe key) is for the items to report: the endpoint knows us. */
            fq_error_destroy(err);
            continue;
        }
        if (fq_error_class(err) == FQ_CLASS_OUTAGE)
            return err; /* unreachable, or refused our credentials or clock */
        /* 5xx, 408, 429, a reset or a timeout: not serving. */
        fq_error_t *outage = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_OUTAGE,
                                          "S3 endpoint not serving: %s", fq_error_message(err));
        fq_error_set_code(outage, fq_error_domain(err), fq_error_code(err));
        fq_error_destroy(err);
        return outage;
    }
    return NULL;
}
