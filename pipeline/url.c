/* URLs: templates expanded for an item (fq_fetch.h), URLs as libcurl reads them (curl_url):
 * parsing, redaction, and the source allow-list (ALLOWED_SOURCE_SCHEMES /
 * ALLOWED_SOURCE_HOSTS). See fq_http.h. */
#include "fq_fetch.h"
#include "fq_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- URL templates ------------------------------------------------------------------- */

int fq_url_expand(const char *tmpl, const char *platform, const char *code, int index, char *out,
                  size_t out_size, char *errstr, size_t errstr_size)
{
    size_t pos = 0;
    const char *p = tmpl;
    if (out_size == 0)
        goto overflow;
    while (*p) {
        char value[160];
        const char *piece;
        size_t plen;
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (!close) {
                snprintf(errstr, errstr_size, "unterminated placeholder at offset %zu",
                         (size_t)(p - tmpl));
                return -1;
            }
            size_t nlen = (size_t)(close - p - 1);
            const char *name = p + 1;
            int width = 0;
            switch (fq_url_template_placeholder(name, nlen, &width)) {
            case FQ_URL_PH_PLATFORM:
                piece = platform;
                break;
            case FQ_URL_PH_CODE:
                piece = code;
                break;
            case FQ_URL_PH_INDEX:
                snprintf(value, sizeof(value), "%0*d", width, index);
                piece = value;
                break;
            default:
                snprintf(errstr, errstr_size, "unknown placeholder {%.*s}; known: %s",
                         (int)(nlen > 40 ? 40 : nlen), name, FQ_URL_PLACEHOLDERS);
                return -1;
            }
            plen = strlen(piece);
            p = close + 1;
        } else {
            piece = p;
            plen = strcspn(p, "{");
            p += plen;
        }
        if (pos + plen >= out_size)
            goto overflow;
        memcpy(out + pos, piece, plen);
        pos += plen;
    }
    out[pos] = '\0';
    return 0;
overflow:
    snprintf(errstr, errstr_size, "expanded URL is longer than %zu bytes",
             out_size ? out_size - 1 : 0);
    return -1;
}

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

/* The host (lowercased; IPv6 without brackets) and port (-1 when none) of h into parts. */
static int url_host_port(CURLU *h, fq_url_parts_t *parts, char *errstr, size_t errstr_size)
{
    char host[FQ_URL_HOST_MAX + 3], port[8];
    if (url_part(h, CURLUPART_HOST, 0, host, sizeof(host), true) < 0) {
        set_err(errstr, errstr_size, "URL host is too long");
        return -1;
    }
    size_t hlen = strlen(host);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memcpy(parts->host, host + 1, hlen - 2); /* IPv6 without its brackets */
        parts->host[hlen - 2] = '\0';
    } else if (hlen <= FQ_URL_HOST_MAX) {
        memcpy(parts->host, host, hlen + 1);
    } else {
        set_err(errstr, errstr_size, "URL host is too long");
        return -1;
    }
    if (url_part(h, CURLUPART_PORT, 0, port, sizeof(port), false) == 0) {
        parts->port = atoi(port);
        if (parts->port < 1 || parts->port > 65535) {
            set_err(errstr, errstr_size, "URL port is not valid");
            return -1;
        }
    }
    return 0;
}

/* The URL as libcurl writes it back (normalised) into parts->url, with the path's offset;
 * a relative file://./ URL keeps its "./". */
static int url_write_back(CURLU *h, bool relative, fq_url_parts_t *parts, char *errstr,
                          size_t errstr_size)
{
    char *full = NULL;
    if (curl_url_get(h, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        set_err(errstr, errstr_size, "URL cannot be written back");
        return -1;
    }
    const char *auth = strstr(full, "://");
    const char *path = auth ? strchr(auth + 3, '/') : NULL;
    int n = !path      ? -1
            : relative ? snprintf(parts->url, sizeof(parts->url), "file://.%s", path)
                       : snprintf(parts->url, sizeof(parts->url), "%s", full);
    if (n < 0 || (size_t)n >= sizeof(parts->url)) {
        set_err(errstr, errstr_size, "URL is longer than %d bytes", FQ_URL_MAX);
        curl_free(full);
        return -1;
    }
    parts->path_offset = relative ? strlen("file://.") : (size_t)(path - full);
    curl_free(full);
    return 0;
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
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc != CURLUE_OK) {
        set_err(errstr, errstr_size, "%s", curl_url_strerror(uc));
        goto done;
    }
    if (url_part(h, CURLUPART_SCHEME, 0, parts->scheme, sizeof(parts->scheme), true) != 0) {
        set_err(errstr, errstr_size, "URL scheme is not valid");
        goto done;
    }
    if (url_host_port(h, parts, errstr, errstr_size) < 0)
        goto done;
    char scratch[8];
    parts->has_userinfo = url_part(h, CURLUPART_USER, 0, scratch, 0, false) != 1 ||
                          url_part(h, CURLUPART_PASSWORD, 0, scratch, 0, false) != 1 ||
                          url_part(h, CURLUPART_OPTIONS, 0, scratch, 0, false) != 1;
    if (url_write_back(h, relative, parts, errstr, errstr_size) < 0)
        goto done;
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

bool fq_s3_bucket_valid(const char *bucket)
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
        if (!fq_s3_bucket_valid(pp->host) || pp->port != -1)
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
