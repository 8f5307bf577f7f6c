/* Unit tests for the partition table's offset rules (consumer/parts.c): which delivered offsets
 * the loop takes after a rewind or a re-delivery, and which offset it may commit — never past a
 * message without a durable outcome, past transaction markers only when nothing of the
 * partition is in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fq_parts.h"

static fq_part_t *fresh(fq_parts_t *t)
{
    fq_part_t *p = fq_parts_add(t, "jobs", 3);
    assert_non_null(p);
    return p;
}

static void test_take_in_order_and_repeats(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    assert_int_equal(fq_part_take(p, 10), FQ_TAKE); /* first one: wherever the group starts */
    assert_int_equal(fq_part_take(p, 11), FQ_TAKE);
    assert_int_equal(fq_part_take(p, 13), FQ_TAKE); /* 12 was a transaction marker */
    /* A wake-up seek re-delivers what was taken: never run twice. */
    assert_int_equal(fq_part_take(p, 11), FQ_TAKE_REPEAT);
    assert_int_equal(fq_part_take(p, 13), FQ_TAKE_REPEAT);
    assert_int_equal(fq_part_take(p, 14), FQ_TAKE);
    assert_int_equal(p->next, 15);
    fq_parts_clear(&t);
}

static void test_rewind_drops_stale_until_it_lands(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    for (int64_t o = 0; o < 6; o++)
        assert_int_equal(fq_part_take(p, o), FQ_TAKE);
    fq_part_rewind(p, 2, 1000);
    /* Fetched before the seek landed: dropped, whatever their offsets. */
    assert_int_equal(fq_part_take(p, 6), FQ_TAKE_STALE);
    assert_int_equal(fq_part_take(p, 7), FQ_TAKE_STALE);
    assert_int_equal(fq_part_take(p, 3), FQ_TAKE_STALE);
    /* An end-of-partition report from before the rewind must not count. */
    fq_part_eof(p, 8);
    assert_int_equal(p->eof_at, -1);
    assert_int_equal(fq_part_take(p, 2), FQ_TAKE);
    assert_int_equal(fq_part_take(p, 3), FQ_TAKE); /* replayed in order after it */
    fq_parts_clear(&t);
}

static void test_commit_never_passes_the_durable_offset(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    assert_int_equal(fq_part_take(p, 0), FQ_TAKE);
    assert_int_equal(fq_part_take(p, 1), FQ_TAKE);
    fq_part_eof(p, 4); /* 2 and 3: markers */
    /* Message 1 still runs: nothing owed, the end is not reachable. */
    assert_int_equal(fq_part_commit_target(p, false, 0), -1);
    fq_part_durable(p, 1); /* message 0 done */
    assert_int_equal(fq_part_commit_target(p, false, 0), 1);
    fq_part_durable(p, 2); /* message 1 done, the partition idle: past the markers */
    assert_int_equal(fq_part_commit_target(p, true, 0), 4);
    assert_int_equal(fq_part_commit_target(p, false, 0), 2);
    /* The durable offset never goes back. */
    fq_part_durable(p, 1);
    assert_int_equal(p->want, 2);
    fq_parts_clear(&t);
}

/* Seen in a demo run: a message abandoned when its partition was revoked, then the end of the
 * partition reported; committing that end would have skipped the message for its new owner. */
static void test_end_not_committed_past_an_unfinished_message(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    assert_int_equal(fq_part_take(p, 0), FQ_TAKE); /* runs, then is abandoned: never durable */
    fq_part_eof(p, 1);
    assert_int_equal(p->eof_at, 1);
    /* Even if the caller thinks the partition idle: message 0 is not durable. */
    assert_int_equal(fq_part_commit_target(p, true, 0), -1);
    fq_part_durable(p, 1);
    assert_int_equal(fq_part_commit_target(p, true, 0), 1);
    fq_parts_clear(&t);
}

static void test_commit_answers(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    fq_part_durable(p, 5);
    assert_int_equal(fq_part_commit_target(p, true, 0), 5);
    p->pending++;
    /* One commit at a time per partition: later ones follow in order. */
    assert_int_equal(fq_part_commit_target(p, true, 0), -1);
    /* Unless it is handed over: then what is owed goes at once. */
    assert_int_equal(fq_part_final_target(p, true), 5);
    fq_part_committed(p, 5, false, 100); /* refused (a rebalance): again after a delay */
    assert_int_equal(p->pending, 0);
    assert_int_equal(fq_part_commit_target(p, true, 500), -1);
    assert_int_equal(fq_part_commit_target(p, true, 1100), 5);
    p->pending++;
    fq_part_committed(p, 5, true, 1200);
    assert_int_equal(p->committed, 5);
    assert_int_equal(fq_part_commit_target(p, true, 1300), -1); /* nothing owed */
    fq_parts_clear(&t);
}

static void test_table(void **state)
{
    fq_parts_t t = {0};
    for (int i = 0; i < 40; i++)
        assert_non_null(fq_parts_add(&t, i % 2 ? "a" : "b", i));
    assert_int_equal(t.n, 40);
    assert_ptr_equal(fq_parts_add(&t, "a", 1), fq_parts_find(&t, "a", 1));
    assert_null(fq_parts_find(&t, "a", 2));
    fq_parts_remove(&t, "a", 1);
    assert_null(fq_parts_find(&t, "a", 1));
    assert_non_null(fq_parts_find(&t, "b", 38));
    assert_int_equal(t.n, 39);
    fq_parts_clear(&t);
    assert_int_equal(t.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_in_order_and_repeats),
        cmocka_unit_test(test_rewind_drops_stale_until_it_lands),
        cmocka_unit_test(test_commit_never_passes_the_durable_offset),
        cmocka_unit_test(test_end_not_committed_past_an_unfinished_message),
        cmocka_unit_test(test_commit_answers),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
