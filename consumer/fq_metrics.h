/* frameq metrics and health endpoint (METRICS_ADDR): /metrics in Prometheus text format,
 * /healthz (the consume loop is alive), /readyz (assigned, dependencies reachable, circuit
 * closed), served by libmicrohttpd (GET and HEAD). All functions are thread-safe. Metric and label
 * names are fixed strings chosen by the caller; label values are escaped here. */
#ifndef FQ_METRICS_H
#define FQ_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fq_config.h"

typedef struct fq_metrics fq_metrics_t;

typedef enum fq_metric_type {
    FQ_METRIC_COUNTER = 0,
    FQ_METRIC_GAUGE,
    FQ_METRIC_HISTOGRAM, /**< seconds; default buckets 5ms .. 5min */
} fq_metric_type_t;

/** @brief An empty registry; no server yet. */
fq_metrics_t *fq_metrics_new(void) FQ_WARN_UNUSED;

/** @brief Stops the server thread (if any) and frees everything; NULL-safe. */
void fq_metrics_destroy(fq_metrics_t *metrics);

/** @brief Declares a metric family (name, type, help). Must precede its use; declaring the
 *  same name twice is a no-op. Returns -1 on a bad name or OOM. */
int fq_metrics_declare(fq_metrics_t *metrics, const char *name, fq_metric_type_t type,
                       const char *help);

/**
 * @brief Starts the HTTP server thread on addr ("host:port", "0.0.0.0:9400", "127.0.0.1:0"
 * picks a free port). "" or "off" starts nothing and returns 0. -1 with errstr on failure.
 */
int fq_metrics_serve(fq_metrics_t *metrics, const char *addr, char *errstr,
                     size_t errstr_size) FQ_WARN_UNUSED;

/** @brief The port actually bound (useful with port 0); 0 when not serving. */
int fq_metrics_port(const fq_metrics_t *metrics);

/** @brief Adds v to a counter (or gauge). labels is NULL or pairs "k1","v1","k2","v2",NULL. */
void fq_metrics_add(fq_metrics_t *metrics, const char *name, double v, ...) FQ_SENTINEL;
/** @brief Sets a gauge. labels as for fq_metrics_add, NULL-terminated. */
void fq_metrics_set(fq_metrics_t *metrics, const char *name, double v, ...) FQ_SENTINEL;
/** @brief Records one observation in a histogram (seconds). labels NULL-terminated. */
void fq_metrics_observe(fq_metrics_t *metrics, const char *name, double seconds, ...) FQ_SENTINEL;

/** @brief Removes a gauge's series (e.g. the lag of a partition no longer assigned); labels as
 *  for fq_metrics_add, NULL-terminated. */
void fq_metrics_remove(fq_metrics_t *metrics, const char *name, ...) FQ_SENTINEL;

/** @brief Marks the loop alive now; /healthz fails when no heartbeat came for stale_ms. */
void fq_metrics_heartbeat(fq_metrics_t *metrics, int64_t stale_ms);

/** @brief Sets readiness; /readyz answers 200 "ready" or 503 with the reason. */
void fq_metrics_set_ready(fq_metrics_t *metrics, bool ready, const char *reason);

/** @brief Writes the whole exposition text into a malloc'd string (what /metrics serves). */
char *fq_metrics_render(fq_metrics_t *metrics);

#endif
