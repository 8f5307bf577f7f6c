/* Derived defaults: settings whose unset value is computed from others (retry and DLQ topic
 * names, the source allow-list, worker id, cores, concurrency, in-flight items). */
#include "config_int.h"

#include <ctype.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

static bool is_unset(const fq_config_t *cfg, size_t ix)
{
    fq_config_origin_t o = cfg->state->origin[ix];
    return o == FQ_ORIGIN_DEFAULT || o == FQ_ORIGIN_DERIVED;
}

static int set_derived(fq_config_t *cfg, size_t ix, char *value)
{
    if (!value)
        return -1;
    char **field = str_field(cfg, &cfg_params[ix]);
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
    return cfg_param_index(cfg_param_by_name(name));
}

int cfg_derive(fq_config_t *cfg)
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
