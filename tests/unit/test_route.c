/* Unit tests for routing (consumer/route.c): the retry/DLQ decision by class and attempt, and
 * the headers of routed messages (text, replaced never appended, origin kept). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fq_headers.h"
#include "fq_route.h"

typedef struct decide_case {
    const char *name;
    int klass; /* -1: no error */
    int attempt, max_retries;
    fq_route_kind_t kind;
    const char *reason;
    const char *status;
} decide_case_t;

static const decide_case_t decide_cases[] = {
    {"success", -1, 1, 3, FQ_ROUTE_NONE, NULL, NULL},
    {"retriable first", FQ_CLASS_RETRIABLE, 1, 3, FQ_ROUTE_RETRY, NULL, "retrying"},
    {"retriable last retry", FQ_CLASS_RETRIABLE, 3, 3, FQ_ROUTE_RETRY, NULL, "retrying"},
    {"retriable exhausted", FQ_CLASS_RETRIABLE, 4, 3, FQ_ROUTE_DLQ, "max-retries", "dead"},
    {"no retries at all", FQ_CLASS_RETRIABLE, 1, 0, FQ_ROUTE_DLQ, "max-retries", "dead"},
    {"permanent first", FQ_CLASS_PERMANENT, 1, 3, FQ_ROUTE_DLQ, "permanent", "dead"},
    {"permanent on retry", FQ_CLASS_PERMANENT, 2, 3, FQ_ROUTE_DLQ, "permanent", "dead"},
    {"malformed", FQ_CLASS_MALFORMED, 1, 3, FQ_ROUTE_DLQ, "malformed", "dead"},
    {"outage never routed", FQ_CLASS_OUTAGE, 1, 3, FQ_ROUTE_OUTAGE, NULL, NULL},
    {"outage past max", FQ_CLASS_OUTAGE, 9, 3, FQ_ROUTE_OUTAGE, NULL, NULL},
};

static void test_decide(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]); i++) {
        const decide_case_t *c = &decide_cases[i];
        fq_error_t *err =
            c->klass < 0 ? NULL : fq_error_new(FQ_STAGE_FETCH, (fq_class_t)c->klass, "boom");
        fq_route_t r = fq_route_decide(err, c->attempt, c->max_retries);
        if (r.kind != c->kind)
            fail_msg("%s: kind %d, want %d", c->name, r.kind, c->kind);
        if ((r.dlq_reason == NULL) != (c->reason == NULL) ||
            (r.dlq_reason && strcmp(r.dlq_reason, c->reason) != 0))
            fail_msg("%s: reason %s, want %s", c->name, r.dlq_reason ? r.dlq_reason : "(null)",
                     c->reason ? c->reason : "(null)");
        if ((r.status == NULL) != (c->status == NULL) ||
            (r.status && strcmp(r.status, c->status) != 0))
            fail_msg("%s: status %s", c->name, r.status ? r.status : "(null)");
        fq_error_destroy(err);
    }
}

static int count_headers(const rd_kafka_headers_t *hdrs, const char *name)
{
    int n = 0;
    const void *v;
    size_t sz;
    while (rd_kafka_header_get(hdrs, (size_t)n, name, &v, &sz) == RD_KAFKA_RESP_ERR_NO_ERROR)
        n++;
    return n;
}

static void expect(const rd_kafka_headers_t *hdrs, const char *name, const char *want)
{
    char buf[2048];
    bool have = fq_headers_get(hdrs, name, buf, sizeof(buf));
    if (!want) {
        if (have)
            fail_msg("%s: present (%s), want absent", name, buf);
        return;
    }
    if (!have)
        fail_msg("%s: absent, want %s", name, want);
    if (strcmp(buf, want) != 0)
        fail_msg("%s: %s, want %s", name, buf, want);
    if (count_headers(hdrs, name) != 1)
        fail_msg("%s: %d copies", name, count_headers(hdrs, name));
}

/* One expected header: its value, or NULL for absent. */
typedef struct want {
    const char *name, *value;
} want_t;

static void expect_all(const rd_kafka_headers_t *hdrs, const want_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        expect(hdrs, want[i].name, want[i].value);
}

/* 2026-11-28T15:00:00.000Z */
#define T0 1795878000000LL

static void test_headers_first_retry(void **state)
{
    (void)state;
    fq_error_t *err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "HTTP 503 from source");
    fq_route_info_t info = {.attempt = 1,
                            .err = err,
                            .not_before_ms = T0 + 1000,
                            .now_ms = T0,
                            .topic = "jobs",
                            .partition = 2,
                            .offset = 41,
                            .worker = "w-1"};
    rd_kafka_headers_t *h = fq_route_headers(NULL, &info);
    assert_non_null(h);
    char nb[32];
    snprintf(nb, sizeof(nb), "%lld", T0 + 1000);
    const want_t want[] = {
        {FQ_HDR_ATTEMPT, "1"},
        {FQ_HDR_NOT_BEFORE, nb},
        {FQ_HDR_ERROR_STAGE, "fetch"},
        {FQ_HDR_ERROR_CLASS, "retriable"},
        {FQ_HDR_ERROR, "HTTP 503 from source"},
        {FQ_HDR_ORIGIN_TOPIC, "jobs"},
        {FQ_HDR_ORIGIN_PARTITION, "2"},
        {FQ_HDR_ORIGIN_OFFSET, "41"},
        {FQ_HDR_FIRST_FAILED_AT, "2026-11-28T15:00:00.000Z"},
        {FQ_HDR_FAILED_AT, "2026-11-28T15:00:00.000Z"},
        {FQ_HDR_WORKER, "w-1"},
        {FQ_HDR_DLQ_REASON, NULL},
    };
    expect_all(h, want, sizeof(want) / sizeof(want[0]));
    rd_kafka_headers_destroy(h);
    fq_error_destroy(err);
}

/* A later attempt read from the retry topic: origin and first failure carry over, every other
 * frameq header is replaced (one copy each), foreign headers survive. */
static void test_headers_carry_over_to_dlq(void **state)
{
    (void)state;
    rd_kafka_headers_t *in = rd_kafka_headers_new(8);
    static const char *const earlier[][2] = {
        {FQ_HDR_ATTEMPT, "3"},
        {FQ_HDR_NOT_BEFORE, "123"},
        {FQ_HDR_ORIGIN_TOPIC, "jobs"},
        {FQ_HDR_ORIGIN_PARTITION, "0"},
        {FQ_HDR_ORIGIN_OFFSET, "7"},
        {FQ_HDR_FIRST_FAILED_AT, "2026-01-01T00:00:00.000Z"},
        {FQ_HDR_FAILED_AT, "2026-01-01T00:00:09.000Z"},
        {FQ_HDR_REDRIVE_COUNT, "2"},
        {FQ_HDR_ERROR, "old"},
    };
    for (size_t i = 0; i < sizeof(earlier) / sizeof(earlier[0]); i++)
        assert_int_equal(fq_headers_set(in, earlier[i][0], earlier[i][1]), 0);
    rd_kafka_header_add(in, "traceparent", -1, "00-abc", -1);

    fq_error_t *err = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "PUT: 500");
    fq_route_info_t info = {.attempt = 4,
                            .err = err,
                            .dlq_reason = "max-retries",
                            .now_ms = T0,
                            .topic = "jobs.retry",
                            .partition = 1,
                            .offset = 99,
                            .worker = "w-2"};
    rd_kafka_headers_t *h = fq_route_headers(in, &info);
    assert_non_null(h);
    static const want_t want[] = {
        {FQ_HDR_ATTEMPT, "4"},
        {FQ_HDR_NOT_BEFORE, NULL},
        {FQ_HDR_DLQ_REASON, "max-retries"},
        {FQ_HDR_ERROR_STAGE, "upload"},
        {FQ_HDR_ERROR_CLASS, "retriable"},
        {FQ_HDR_ERROR, "PUT: 500"},
        {FQ_HDR_ORIGIN_TOPIC, "jobs"},
        {FQ_HDR_ORIGIN_PARTITION, "0"},
        {FQ_HDR_ORIGIN_OFFSET, "7"},
        {FQ_HDR_FIRST_FAILED_AT, "2026-01-01T00:00:00.000Z"},
        {FQ_HDR_FAILED_AT, "2026-11-28T15:00:00.000Z"},
        {FQ_HDR_WORKER, "w-2"},
        {FQ_HDR_REDRIVE_COUNT, "2"},
        {"traceparent", "00-abc"},
    };
    expect_all(h, want, sizeof(want) / sizeof(want[0]));
    /* The input is untouched (it belongs to the consumed message). */
    char buf[16];
    assert_true(fq_headers_get(in, FQ_HDR_ATTEMPT, buf, sizeof(buf)));
    assert_string_equal(buf, "3");
    rd_kafka_headers_destroy(h);
    rd_kafka_headers_destroy(in);
    fq_error_destroy(err);
}

/* Routing the same message many times never grows it. */
static void test_headers_do_not_grow(void **state)
{
    (void)state;
    fq_error_t *err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "timeout");
    rd_kafka_headers_t *h = NULL;
    size_t first = 0;
    for (int a = 1; a <= 50; a++) {
        fq_route_info_t info = {.attempt = a,
                                .err = err,
                                .not_before_ms = T0 + a,
                                .now_ms = T0 + a,
                                .topic = "t",
                                .partition = 0,
                                .offset = a,
                                .worker = "w"};
        rd_kafka_headers_t *next = fq_route_headers(h, &info);
        assert_non_null(next);
        if (h)
            rd_kafka_headers_destroy(h);
        h = next;
        if (a == 1)
            first = rd_kafka_header_cnt(h);
        assert_int_equal(rd_kafka_header_cnt(h), first);
    }
    expect(h, FQ_HDR_ATTEMPT, "50");
    expect(h, FQ_HDR_ORIGIN_OFFSET, "1");
    rd_kafka_headers_destroy(h);
    fq_error_destroy(err);
}

/* A redriven item that fails again goes to the retry topic without its old DLQ reason. */
static void test_headers_redriven_retry_drops_reason(void **state)
{
    (void)state;
    rd_kafka_headers_t *in = rd_kafka_headers_new(4);
    assert_int_equal(fq_headers_set(in, FQ_HDR_DLQ_REASON, "max-retries"), 0);
    fq_error_t *err = fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "x");
    fq_route_info_t info = {
        .attempt = 1, .err = err, .not_before_ms = 5, .now_ms = T0, .topic = "t", .worker = "w"};
    rd_kafka_headers_t *h = fq_route_headers(in, &info);
    assert_non_null(h);
    expect(h, FQ_HDR_DLQ_REASON, NULL);
    expect(h, FQ_HDR_NOT_BEFORE, "5");
    expect(h, FQ_HDR_ERROR_STAGE, "store");
    rd_kafka_headers_destroy(h);
    rd_kafka_headers_destroy(in);
    fq_error_destroy(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_headers_first_retry),
        cmocka_unit_test(test_headers_carry_over_to_dlq),
        cmocka_unit_test(test_headers_do_not_grow),
        cmocka_unit_test(test_headers_redriven_retry_drops_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
