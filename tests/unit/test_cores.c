/* Unit tests for the core budget (pipeline/cores.c): acquire / release / borrow / wanted, a
 * cancel while waiting, and several threads acquiring and borrowing at random that together
 * never hold more than the budget. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "fq_cores.h"

/* Polls until fq_cores_wanted() equals want; false after about 10 s (a hung test, not a
 * threshold on speed). */
static bool wait_wanted(fq_cores_t *c, bool want)
{
    for (int i = 0; i < 10000; i++) {
        if (fq_cores_wanted(c) == want) {
            return true;
        }
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    return false;
}

static void test_null_budget(void **state)
{
    (void)state;
    assert_int_equal(fq_cores_acquire(NULL, NULL), 0);
    assert_int_equal(fq_cores_borrow(NULL, 8), 0);
    assert_false(fq_cores_wanted(NULL));
    assert_int_equal(fq_cores_total(NULL), 1);
    assert_int_equal(fq_cores_in_use(NULL), 0);
    fq_cores_release(NULL, 1);
    fq_cores_destroy(NULL);
}

static void test_acquire_borrow_release(void **state)
{
    (void)state;
    fq_cores_t *c = fq_cores_new(3);
    assert_non_null(c);
    assert_int_equal(fq_cores_total(c), 3);
    assert_int_equal(fq_cores_acquire(c, NULL), 0);
    assert_int_equal(fq_cores_in_use(c), 1);
    assert_int_equal(fq_cores_borrow(c, 1), 1); /* no more than asked */
    assert_int_equal(fq_cores_borrow(c, 8), 1); /* no more than free */
    assert_int_equal(fq_cores_borrow(c, 8), 0);
    assert_int_equal(fq_cores_in_use(c), 3);
    assert_false(fq_cores_wanted(c)); /* nobody waits */
    fq_cores_release(c, 2);
    assert_int_equal(fq_cores_in_use(c), 1);
    assert_int_equal(fq_cores_acquire(c, NULL), 0); /* free: at once */
    assert_int_equal(fq_cores_borrow(c, 0), 0);
    fq_cores_release(c, 2);
    assert_int_equal(fq_cores_in_use(c), 0);
    fq_cores_destroy(c);

    c = fq_cores_new(0); /* at least one core */
    assert_int_equal(fq_cores_total(c), 1);
    fq_cores_destroy(c);
}

typedef struct waiter {
    fq_cores_t *c;
    atomic_int cancel;
    atomic_int done;
    int rc;
} waiter_t;

static void *waiter_thread(void *opaque)
{
    waiter_t *w = opaque;
    w->rc = fq_cores_acquire(w->c, &w->cancel);
    atomic_store(&w->done, 1);
    return NULL;
}

/* A waiter makes the budget wanted: borrowing stops, and a lender's release lets it in. */
static void test_waiter_gets_lent_core_back(void **state)
{
    (void)state;
    waiter_t w = {.c = fq_cores_new(2)};
    assert_non_null(w.c);
    assert_int_equal(fq_cores_acquire(w.c, NULL), 0); /* the running item */
    assert_int_equal(fq_cores_borrow(w.c, 4), 1);     /* its decoder takes the idle core */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &w), 0);
    assert_true(wait_wanted(w.c, true));
    assert_int_equal(atomic_load(&w.done), 0); /* blocked: both cores are taken */
    fq_cores_release(w.c, 1);                  /* the borrower gives its extra core back */
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, 0);
    assert_false(fq_cores_wanted(w.c));
    assert_int_equal(fq_cores_in_use(w.c), 2);
    assert_int_equal(fq_cores_borrow(w.c, 4), 0);
    fq_cores_release(w.c, 2);
    fq_cores_destroy(w.c);
}

/* While someone waits, a freed core goes to the waiter, not to a borrower nor to a newcomer
 * (whether or not the waiter has woken up yet). */
static void test_freed_core_reserved_for_waiter(void **state)
{
    (void)state;
    waiter_t w = {.c = fq_cores_new(2)};
    assert_int_equal(fq_cores_acquire(w.c, NULL), 0);
    assert_int_equal(fq_cores_borrow(w.c, 1), 1);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &w), 0);
    assert_true(wait_wanted(w.c, true));
    fq_cores_release(w.c, 1);
    assert_int_equal(fq_cores_borrow(w.c, 1), 0);
    assert_int_equal(fq_cores_in_use(w.c), 2);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, 0);
    assert_int_equal(fq_cores_in_use(w.c), 2);
    fq_cores_release(w.c, 2);
    assert_int_equal(fq_cores_in_use(w.c), 0);
    fq_cores_destroy(w.c);
}

static void test_cancel_while_waiting(void **state)
{
    (void)state;
    waiter_t w = {.c = fq_cores_new(1)};
    assert_int_equal(fq_cores_acquire(w.c, NULL), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &w), 0);
    assert_true(wait_wanted(w.c, true));
    atomic_store(&w.cancel, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, -1);
    assert_false(fq_cores_wanted(w.c)); /* it left */
    assert_int_equal(fq_cores_in_use(w.c), 1);
    fq_cores_release(w.c, 1);
    fq_cores_destroy(w.c);
}

/* Property: workers acquiring, borrowing at random and giving back when wanted never hold
 * more cores than the budget between them, and every core comes back. */
#define P_TOTAL   3
#define P_THREADS 7
#define P_ROUNDS  3000

typedef struct shared {
    fq_cores_t *c;
    atomic_int held;
    atomic_int max_held;
    atomic_int borrowed_total;
    atomic_int gave_back;
} shared_t;

typedef struct worker {
    shared_t *s;
    unsigned seed;
} worker_t;

static void note_held(shared_t *s, int delta)
{
    int now = atomic_fetch_add(&s->held, delta) + delta;
    int max = atomic_load(&s->max_held);
    while (now > max && !atomic_compare_exchange_weak(&s->max_held, &max, now)) {
    }
}

static void *property_worker(void *opaque)
{
    worker_t *w = opaque;
    shared_t *s = w->s;
    for (int i = 0; i < P_ROUNDS; i++) {
        if (fq_cores_acquire(s->c, NULL) != 0) {
            continue;
        }
        note_held(s, 1);
        int extra = fq_cores_borrow(s->c, rand_r(&w->seed) % P_TOTAL);
        note_held(s, extra);
        atomic_fetch_add(&s->borrowed_total, extra);
        for (int k = rand_r(&w->seed) % 4; k > 0; k--) {
            if (extra > 0 && fq_cores_wanted(s->c)) {
                atomic_fetch_add(&s->gave_back, 1);
                note_held(s, -extra); /* counted out before they are free for others */
                fq_cores_release(s->c, extra);
                extra = 0;
            }
            sched_yield();
        }
        note_held(s, -(extra + 1));
        fq_cores_release(s->c, extra + 1);
    }
    return NULL;
}

static void test_never_more_than_total(void **state)
{
    (void)state;
    shared_t s = {.c = fq_cores_new(P_TOTAL)};
    assert_non_null(s.c);
    pthread_t t[P_THREADS];
    worker_t w[P_THREADS];
    for (int i = 0; i < P_THREADS; i++) {
        w[i] = (worker_t){.s = &s, .seed = 1234u + (unsigned)i};
        assert_int_equal(pthread_create(&t[i], NULL, property_worker, &w[i]), 0);
    }
    for (int i = 0; i < P_THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
    }
    assert_true(atomic_load(&s.max_held) <= P_TOTAL);
    assert_true(atomic_load(&s.max_held) >= 1);
    assert_int_equal(atomic_load(&s.held), 0);
    assert_int_equal(fq_cores_in_use(s.c), 0);
    assert_false(fq_cores_wanted(s.c));
    fq_cores_destroy(s.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_budget),
        cmocka_unit_test(test_acquire_borrow_release),
        cmocka_unit_test(test_waiter_gets_lent_core_back),
        cmocka_unit_test(test_freed_core_reserved_for_waiter),
        cmocka_unit_test(test_cancel_while_waiting),
        cmocka_unit_test(test_never_more_than_total),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
