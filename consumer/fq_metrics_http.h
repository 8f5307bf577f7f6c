/* Between the metrics registry (metrics.c) and its HTTP server (metrics_http.c, on
 * libmicrohttpd). Not for other callers: they use fq_metrics.h. */
#ifndef FQ_METRICS_HTTP_H
#define FQ_METRICS_HTTP_H

#include "fq_metrics.h"

#include <stdbool.h>
#include <stddef.h>

#include "fq_config.h"

/** Connections served at once; further ones wait in the listen backlog. */
#define FQ_METRICS_HTTP_MAX_CONNS 32
/** A connection idle (nothing received or sent) this long is closed. */
#define FQ_METRICS_HTTP_TIMEOUT_S 3

typedef struct fq_metrics_http fq_metrics_http_t;

/** @brief Serves metrics on addr ("host:port", "[v6]:port"; empty host or "*" = every interface)
 *  from its own thread. NULL with errstr ("METRICS_ADDR: ...") on failure. */
fq_metrics_http_t *fq_metrics_http_start(fq_metrics_t *metrics, const char *addr, char *errstr,
                                         size_t errstr_size) FQ_WARN_UNUSED;

/** @brief The port bound; 0 for NULL. */
int fq_metrics_http_port(const fq_metrics_http_t *http);

/** @brief Closes every connection, joins the thread, frees; NULL-safe. */
void fq_metrics_http_stop(fq_metrics_http_t *http);

/** @brief /healthz: true when a heartbeat came within its stale_ms; body "ok\n" or "stale\n". */
bool fq_metrics_healthz(fq_metrics_t *metrics, char *body, size_t size);

/** @brief /readyz: true when ready; body "ready\n" or the reason and "\n". */
bool fq_metrics_readyz(fq_metrics_t *metrics, char *body, size_t size);

#endif
