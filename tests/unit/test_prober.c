/* consumer/prober.c: the verdicts the loop reads, and the log lines an operator reads — a
 * failure once, a new reason while it goes on failing once, the return once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "fq_log.h"
#include "fq_prober.h"
#include "fq_test_capture.h"

/* What the probe answers, call after call; NULL passes. After the script it passes. */
static const char *const script[] = {NULL,      "db down", "db down", "db down",
                                     "s3 down", "s3 down", NULL,      NULL};
#define N_SCRIPT (sizeof(script) / sizeof(script[0]))
static atomic_int calls;

static fq_error_t *scripted_probe(void *ctx)
{
    (void)ctx;
    int i = atomic_fetch_add(&calls, 1);
    if ((size_t)i < N_SCRIPT && script[i])
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_OUTAGE, "%s", script[i]);
    return NULL;
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void test_each_change_logged_once(void **state)
{
    (void)state;
    assert_int_equal(fq_log_init("test_prober", "t", "json", "info"), 0);
    fq_test_capture_t cap;
    fq_test_capture_start(&cap);
    fq_prober_t *p = fq_prober_start(scripted_probe, NULL, 1, 1);
    assert_non_null(p);
    fq_probe_result_t r = {0};
    /* until the script is over: a condition, polled */
    for (int i = 0; i < 20000 && (size_t)atomic_load(&calls) <= N_SCRIPT; i++) {
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
    fq_prober_result(p, &r);
    fq_prober_stop(p);
    char *log = fq_test_capture_end(&cap);
    assert_true((size_t)atomic_load(&calls) > N_SCRIPT);
    assert_true(r.ok);
    assert_true(r.seq > N_SCRIPT);
    if (count(log, "\"msg\":\"dependency probe failed: db down\"") != 1 ||
        count(log, "\"msg\":\"dependency probe still failing, now: s3 down\"") != 1 ||
        count(log, "\"msg\":\"dependency probe passed again\"") != 1 ||
        count(log, "dependency probe") != 3)
        fail_msg("the prober's log:\n%s", log);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_change_logged_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
