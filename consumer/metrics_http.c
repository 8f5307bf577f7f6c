/* The metrics registry served over HTTP by libmicrohttpd (see fq_metrics_http.h).
 *
 * One internal polling thread answers every connection; a connection limit and an idle
 * timeout keep a client that connects and sends nothing from holding more than its own slot.
 * Endpoints: /metrics (exposition format 0.0.4), /healthz, /readyz; GET and HEAD only.
 */
#include "fq_metrics_http.h"

#include "fq_log.h"

#include <microhttpd.h>

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Request line and headers; probes and scrapers send well under 1 KiB. */
#define REQUEST_MEMORY_LIMIT (16 * 1024)
#define TEXT_PLAIN           "text/plain; charset=utf-8"
#define EXPOSITION_TYPE      "text/plain; version=0.0.4; charset=utf-8"

struct fq_metrics_http {
    fq_metrics_t *metrics;
    struct MHD_Daemon *daemon;
    int port;
    /* While starting, libmicrohttpd's messages (a failed bind, say) go to the caller's
     * errstr; once started they are logged. */
    atomic_bool started;
    const char *addr;
    char *errstr;
    size_t errstr_size;
};

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    fq_metrics_http_t *http = cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\r\n")] = '\0';
    if (atomic_load(&http->started))
        FQ_WARN(NULL, "metrics: %s", msg);
    else
        snprintf(http->errstr, http->errstr_size, "METRICS_ADDR: %s: %s", http->addr, msg);
}

/* Queues one answer; body is copied unless free_body says it is malloc'd and ours to free. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status,
                             const char *content_type, char *body, bool free_body)
{
    struct MHD_Response *resp =
        free_body ? MHD_create_response_from_buffer_with_free_callback(strlen(body), body, free)
                  : MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        if (free_body)
            free(body);
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    }
    enum MHD_Result ok = MHD_NO;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) == MHD_YES &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES &&
        (status != MHD_HTTP_METHOD_NOT_ALLOWED ||
         MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") == MHD_YES))
        ok = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    static int headers_seen; /* its address marks a request whose headers were seen */
    fq_metrics_t *metrics = cls;
    char body[320];

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        /* Answered before any body is read, so libmicrohttpd closes the connection. */
        snprintf(body, sizeof(body), "method not allowed\n");
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT_PLAIN, body, false);
    }
    /* The first call brings the headers, later ones the body (ignored); answering once the
     * whole request is read keeps the connection open for the scraper's next request. */
    if (!*req_cls) {
        *req_cls = &headers_seen;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* url comes without the query string. */
    if (strcmp(url, "/metrics") == 0) {
        char *text = fq_metrics_render(metrics);
        if (!text) {
            snprintf(body, sizeof(body), "out of memory\n");
            return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, TEXT_PLAIN, body, false);
        }
        return reply(conn, MHD_HTTP_OK, EXPOSITION_TYPE, text, true);
    }
    if (strcmp(url, "/healthz") == 0) {
        bool ok = fq_metrics_healthz(metrics, body, sizeof(body));
        return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, TEXT_PLAIN, body,
                     false);
    }
    if (strcmp(url, "/readyz") == 0) {
        bool ok = fq_metrics_readyz(metrics, body, sizeof(body));
        return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, TEXT_PLAIN, body,
                     false);
    }
    snprintf(body, sizeof(body), "not found\n");
    return reply(conn, MHD_HTTP_NOT_FOUND, TEXT_PLAIN, body, false);
}

/* Splits "host:port" / "[v6]:port"; an empty host or "*" means every interface. */
static int parse_addr(const char *addr, char *host, size_t host_size, char *port, size_t port_size)
{
    const char *colon;
    const char *h = addr;
    size_t hlen;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -1;
        h = addr + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - addr);
    }
    if (hlen >= host_size)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        snprintf(host, host_size, "0.0.0.0");
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end || errno || p < 0 || p > 65535)
        return -1;
    snprintf(port, port_size, "%ld", p);
    return 0;
}

static struct MHD_Daemon *start_daemon(fq_metrics_http_t *http, const struct addrinfo *ai)
{
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Signals belong to the main thread (it sets the shutdown flag); the server thread
     * inherits a fully blocked mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct MHD_Daemon *daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, http->metrics,
        /* first, so that no message goes to libmicrohttpd's own stderr logger */
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, http, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)FQ_METRICS_HTTP_MAX_CONNS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)FQ_METRICS_HTTP_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)REQUEST_MEMORY_LIMIT, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return daemon;
}

fq_metrics_http_t *fq_metrics_http_start(fq_metrics_t *metrics, const char *addr, char *errstr,
                                         size_t errstr_size)
{
    char host[256], port[16];
    struct addrinfo hints = {0}, *res = NULL;
    fq_metrics_http_t *http = NULL;

    if (parse_addr(addr, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: \"%s\" is not host:port (port 0..65535)",
                 addr);
        goto fail;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: %s: %s", addr, gai_strerror(gai));
        goto fail;
    }
    http = calloc(1, sizeof(*http));
    if (!http) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: out of memory");
        goto fail;
    }
    http->metrics = metrics;
    http->addr = addr;
    http->errstr = errstr;
    http->errstr_size = errstr_size;
    snprintf(errstr, errstr_size, "METRICS_ADDR: %s: cannot listen", addr);
    for (const struct addrinfo *ai = res; ai && !http->daemon; ai = ai->ai_next)
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            http->daemon = start_daemon(http, ai);
    if (!http->daemon)
        goto fail;
    atomic_store(&http->started, true);
    http->errstr = NULL;
    http->addr = NULL;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? info->port : 0;
    freeaddrinfo(res);
    FQ_INFO(NULL, "metrics: serving /metrics /healthz /readyz on %s (port %d)", addr, http->port);
    return http;
fail:
    if (res)
        freeaddrinfo(res);
    free(http);
    return NULL;
}

int fq_metrics_http_port(const fq_metrics_http_t *http)
{
    return http ? http->port : 0;
}

void fq_metrics_http_stop(fq_metrics_http_t *http)
{
    if (!http)
        return;
    MHD_stop_daemon(http->daemon);
    free(http);
}
