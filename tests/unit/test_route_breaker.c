/* Unit tests for the circuit breaker (consumer/route.c): K consecutive different items failing
 * retriably at the same stage within the window trip it; successes, other stages, repeats of
 * one item, permanent failures and old failures do not. Table-driven sequences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fq_route.h"

/* One fed result: key, class (-1 = success), stage, time, and whether it must be an outage. */
typedef struct step {
    const char *key;
    int klass;
    fq_stage_t stage;
    int64_t at;
    bool outage;
} step_t;

typedef struct seq {
    const char *name;
    step_t steps[12];
} seq_t;

#define R  FQ_CLASS_RETRIABLE
#define P  FQ_CLASS_PERMANENT
#define OK -1
#define F  FQ_STAGE_FETCH
#define U  FQ_STAGE_UPLOAD

/* K = 3, window 1000 ms in every sequence. */
static const seq_t seqs[] = {
    {"three different items trip it",
     {{"a", R, F, 0, false}, {"b", R, F, 10, false}, {"c", R, F, 20, true}, {NULL}}},
    {"open: the same stage stays an outage, a success closes it",
     {{"a", R, F, 0, false},
      {"b", R, F, 1, false},
      {"c", R, F, 2, true},
      {"d", R, F, 3, true},
      {"a", R, F, 4, true},
      {"e", OK, F, 5, false},
      {"f", R, F, 6, false},
      {NULL}}},
    {"repeats of one item do not count",
     {{"a", R, F, 0, false},
      {"a", R, F, 1, false},
      {"a", R, F, 2, false},
      {"a", R, F, 3, false},
      {"b", R, F, 4, false},
      {"c", R, F, 5, true},
      {NULL}}},
    {"a success in between resets",
     {{"a", R, F, 0, false},
      {"b", R, F, 1, false},
      {"x", OK, F, 2, false},
      {"c", R, F, 3, false},
      {"d", R, F, 4, false},
      {"e", R, F, 5, true},
      {NULL}}},
    {"another stage restarts the streak",
     {{"a", R, F, 0, false},
      {"b", R, F, 1, false},
      {"c", R, U, 2, false},
      {"d", R, U, 3, false},
      {"e", R, U, 4, true},
      {NULL}}},
    {"permanent failures are the item's fault",
     {{"a", P, F, 0, false},
      {"b", P, F, 1, false},
      {"c", P, F, 2, false},
      {"d", P, F, 3, false},
      {NULL}}},
    {"permanent failures while open are routed, not outages",
     {{"a", R, F, 0, false},
      {"b", R, F, 1, false},
      {"c", R, F, 2, true},
      {"d", P, F, 3, false},
      {"e", R, F, 4, true},
      {NULL}}},
    {"a streak older than the window starts over",
     {{"a", R, F, 0, false},
      {"b", R, F, 500, false},
      {"c", R, F, 1500, false},
      {"d", R, F, 1600, false},
      {"e", R, F, 1700, true},
      {NULL}}},
    {"open for fetch: an upload failure is not an outage by itself",
     {{"a", R, F, 0, false},
      {"b", R, F, 1, false},
      {"c", R, F, 2, true},
      {"d", R, U, 3, false},
      {"e", R, F, 4, true},
      {NULL}}},
};

static void test_sequences(void **state)
{
    (void)state;
    for (size_t s = 0; s < sizeof(seqs) / sizeof(seqs[0]); s++) {
        fq_breaker_t b;
        fq_breaker_init(&b, 3, 1000);
        for (size_t i = 0; seqs[s].steps[i].key; i++) {
            const step_t *st = &seqs[s].steps[i];
            fq_error_t *err =
                st->klass == OK ? NULL : fq_error_new(st->stage, (fq_class_t)st->klass, "x");
            bool got = fq_breaker_feed(&b, st->key, err, st->at);
            fq_error_destroy(err);
            if (got != st->outage)
                fail_msg("%s: step %zu (%s): outage %d, want %d", seqs[s].name, i, st->key, got,
                         st->outage);
        }
    }
}

static void test_close_forgets(void **state)
{
    (void)state;
    fq_breaker_t b;
    fq_breaker_init(&b, 2, 1000);
    fq_error_t *err = fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "x");
    assert_false(fq_breaker_feed(&b, "a", err, 0));
    assert_true(fq_breaker_feed(&b, "b", err, 1));
    assert_true(b.open);
    fq_breaker_close(&b);
    assert_false(b.open);
    assert_false(fq_breaker_feed(&b, "c", err, 2));
    assert_true(fq_breaker_feed(&b, "d", err, 3));
    fq_error_destroy(err);
}

/* A breaker that stays open past max_open_ms lets failures be routed again, so items that
 * always fail at one stage cannot hold a worker forever; a success closes it as before. */
static void test_open_is_bounded(void **state)
{
    (void)state;
    fq_breaker_t b;
    fq_breaker_init(&b, 2, 1000);
    assert_int_equal(b.max_open_ms, FQ_BREAKER_MAX_OPEN_MS);
    b.max_open_ms = 5000;
    fq_error_t *err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "x");
    assert_false(fq_breaker_feed(&b, "a", err, 0));
    assert_true(fq_breaker_feed(&b, "b", err, 1));     /* trips at t=1 */
    assert_true(fq_breaker_feed(&b, "c", err, 4000));  /* still an outage */
    assert_true(fq_breaker_feed(&b, "a", err, 5001));  /* exactly at the bound */
    assert_false(fq_breaker_feed(&b, "d", err, 5002)); /* past it: routed */
    assert_true(b.open);
    assert_false(fq_breaker_feed(&b, "e", NULL, 5003)); /* a success closes it */
    assert_false(b.open);
    fq_error_destroy(err);
}

static void test_k_bounds(void **state)
{
    (void)state;
    fq_breaker_t b;
    fq_breaker_init(&b, 0, 1000); /* k < 1 behaves as 1 */
    fq_error_t *err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "x");
    assert_true(fq_breaker_feed(&b, "a", err, 0));
    fq_breaker_init(&b, 1000, 1000); /* capped at FQ_BREAKER_MAX_K */
    assert_int_equal(b.k, FQ_BREAKER_MAX_K);
    char key[8];
    for (int i = 0; i < FQ_BREAKER_MAX_K - 1; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_false(fq_breaker_feed(&b, key, err, i));
    }
    assert_true(fq_breaker_feed(&b, "last", err, 100));
    fq_error_destroy(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_close_forgets),
        cmocka_unit_test(test_open_is_bounded),
        cmocka_unit_test(test_k_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
