#include "fq_route.h"

#include <stdio.h>
#include <string.h>

#include "fq_headers.h"
#include "fq_log.h"

fq_route_t fq_route_decide(const fq_error_t *err, int attempt, int max_retries)
{
    fq_route_t route = {FQ_ROUTE_NONE, NULL, NULL};
    if (!err)
        return route;
    switch (fq_error_class(err)) {
    case FQ_CLASS_OUTAGE:
        route.kind = FQ_ROUTE_OUTAGE;
        return route;
    case FQ_CLASS_MALFORMED:
        route.kind = FQ_ROUTE_DLQ;
        route.dlq_reason = "malformed";
        break;
    case FQ_CLASS_PERMANENT:
        route.kind = FQ_ROUTE_DLQ;
        route.dlq_reason = "permanent";
        break;
    case FQ_CLASS_RETRIABLE:
    default:
        /* attempt counts failures so far: MAX_RETRIES retries follow the first failure. */
        if (attempt <= max_retries) {
            route.kind = FQ_ROUTE_RETRY;
            route.status = "retrying";
            return route;
        }
        route.kind = FQ_ROUTE_DLQ;
        route.dlq_reason = "max-retries";
        break;
    }
    route.status = "dead";
    return route;
}

/* Sets name only when the incoming headers did not carry it. */
static rd_kafka_resp_err_t set_if_absent(rd_kafka_headers_t *hdrs, const char *name,
                                         const char *value)
{
    char buf[8];
    if (fq_headers_get(hdrs, name, buf, sizeof(buf)))
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    return fq_headers_set(hdrs, name, value);
}

rd_kafka_headers_t *fq_route_headers(const rd_kafka_headers_t *incoming,
                                     const fq_route_info_t *info)
{
    rd_kafka_headers_t *hdrs =
        incoming ? rd_kafka_headers_copy(incoming) : rd_kafka_headers_new(16);
    if (!hdrs)
        return NULL;

    char now[40], num[32];
    fq_time_rfc3339(info->now_ms, now, sizeof(now));
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    const fq_error_t *e = info->err;

    err |= fq_headers_set_int(hdrs, FQ_HDR_ATTEMPT, info->attempt < 1 ? 1 : info->attempt);
    if (info->dlq_reason) {
        /* A DLQ message waits for a person, not a clock. */
        err |= fq_headers_set(hdrs, FQ_HDR_NOT_BEFORE, NULL);
        err |= fq_headers_set(hdrs, FQ_HDR_DLQ_REASON, info->dlq_reason);
    } else {
        err |= fq_headers_set_int(hdrs, FQ_HDR_NOT_BEFORE, info->not_before_ms);
        /* A redriven item still carries its old DLQ reason: it is no longer dead. */
        err |= fq_headers_set(hdrs, FQ_HDR_DLQ_REASON, NULL);
    }
    err |=
        fq_headers_set(hdrs, FQ_HDR_ERROR_STAGE, e ? fq_stage_name(fq_error_stage(e)) : "message");
    err |= fq_headers_set(hdrs, FQ_HDR_ERROR_CLASS,
                          e ? fq_class_name(fq_error_class(e)) : "malformed");
    /* fq_error messages are already at most 1 KiB. */
    err |= fq_headers_set(hdrs, FQ_HDR_ERROR, e ? fq_error_message(e) : "");

    /* Origin: the three headers travel together, so test the topic only. */
    char have[8];
    if (info->topic && !fq_headers_get(hdrs, FQ_HDR_ORIGIN_TOPIC, have, sizeof(have))) {
        err |= fq_headers_set(hdrs, FQ_HDR_ORIGIN_TOPIC, info->topic);
        snprintf(num, sizeof(num), "%d", (int)info->partition);
        err |= fq_headers_set(hdrs, FQ_HDR_ORIGIN_PARTITION, num);
        err |= fq_headers_set_int(hdrs, FQ_HDR_ORIGIN_OFFSET, info->offset);
    }
    err |= set_if_absent(hdrs, FQ_HDR_FIRST_FAILED_AT, now);
    err |= fq_headers_set(hdrs, FQ_HDR_FAILED_AT, now);
    err |= fq_headers_set(hdrs, FQ_HDR_WORKER, info->worker ? info->worker : "");

    if (err) {
        rd_kafka_headers_destroy(hdrs);
        return NULL;
    }
    return hdrs;
}

void fq_breaker_init(fq_breaker_t *b, int k, int64_t window_ms)
{
    memset(b, 0, sizeof(*b));
    b->k = k < 1 ? 1 : k > FQ_BREAKER_MAX_K ? FQ_BREAKER_MAX_K : k;
    b->window_ms = window_ms;
    b->max_open_ms = FQ_BREAKER_MAX_OPEN_MS;
}

void fq_breaker_close(fq_breaker_t *b)
{
    b->open = false;
    b->count = 0;
}

bool fq_breaker_feed(fq_breaker_t *b, const char *key, const fq_error_t *err, int64_t now_ms)
{
    if (!err) {
        /* One item getting through proves the dependency works. */
        b->count = 0;
        b->open = false;
        return false;
    }
    if (fq_error_class(err) != FQ_CLASS_RETRIABLE)
        return false; /* the item's own fault: routed as usual */
    fq_stage_t stage = fq_error_stage(err);
    if (b->open && stage == b->open_stage)
        return now_ms - b->opened_ms <= b->max_open_ms;
    if (b->count == 0 || stage != b->stage || now_ms - b->first_ms > b->window_ms) {
        b->stage = stage;
        b->count = 0;
        b->first_ms = now_ms;
    }
    for (int i = 0; i < b->count; i++)
        if (strcmp(b->keys[i], key ? key : "") == 0)
            return false; /* the same item failing again says nothing about the dependency */
    snprintf(b->keys[b->count], sizeof(b->keys[0]), "%s", key ? key : "");
    if (++b->count < b->k)
        return false;
    b->open = true;
    b->open_stage = stage;
    b->opened_ms = now_ms;
    b->count = 0;
    return true;
}
