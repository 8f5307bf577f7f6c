/* Unit tests for the partition table's offset rules (consumer/parts.c): which delivered offsets
 * the loop takes after a rewind or a re-delivery, and which offset it may commit — never past a
 * message without a durable outcome, past transaction markers only when nothing of the
 * partition is in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
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
    /* Both still run: nothing owed, the end is not reachable. */
    assert_int_equal(fq_part_commit_target(p, false, 0), -1);
    fq_part_settle(p, 0); /* message 0 done */
    assert_int_equal(fq_part_commit_target(p, false, 0), 1);
    fq_part_settle(p, 1); /* message 1 done, the partition idle: past the markers */
    assert_int_equal(fq_part_commit_target(p, true, 0), 4);
    assert_int_equal(fq_part_commit_target(p, false, 0), 2);
    /* Settling again changes nothing; "want" never goes back. */
    fq_part_settle(p, 0);
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
    fq_part_settle(p, 0);
    assert_int_equal(fq_part_commit_target(p, true, 0), 1);
    fq_parts_clear(&t);
}

/* Several messages of one partition in flight finish out of order: the committed offset is the
 * lowest one still in flight, gaps (transaction markers) included. */
static void test_out_of_order_settles_commit_the_prefix(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    const int64_t taken[] = {10, 11, 13, 14, 17}; /* 12, 15, 16: markers */
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(fq_part_take(p, taken[i]), FQ_TAKE);
    assert_int_equal(p->ninflight, 5);
    fq_part_settle(p, 13);
    fq_part_settle(p, 17);
    assert_int_equal(fq_part_commit_target(p, false, 0), 10); /* 10 still runs */
    fq_part_settle(p, 10);
    assert_int_equal(fq_part_commit_target(p, false, 0), 11);
    fq_part_settle(p, 11);
    assert_int_equal(fq_part_commit_target(p, false, 0), 14); /* past the marker at 12 */
    /* What a transaction covering 14 would commit: past everything taken. */
    assert_int_equal(fq_part_target_after(p, 14, false), 18);
    fq_part_eof(p, 19);
    assert_int_equal(fq_part_target_after(p, 14, true), 19);
    assert_int_equal(fq_part_target_after(p, 13, true), 14); /* 14 itself not covered */
    fq_part_settle(p, 14);
    assert_int_equal(fq_part_commit_target(p, true, 0), 19);
    fq_parts_clear(&t);
}

/* A rewind in the middle of the window (an outage or an aborted transaction at offset 3): what
 * was taken from there on is forgotten and read again; what is below stays in flight. */
static void test_rewind_in_the_middle(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    for (int64_t o = 0; o < 6; o++)
        assert_int_equal(fq_part_take(p, o), FQ_TAKE);
    fq_part_settle(p, 0);
    fq_part_settle(p, 2);
    fq_part_settle(p, 4); /* settled above the rewind: read again all the same */
    fq_part_rewind(p, 3, 0);
    assert_int_equal(p->ninflight, 1); /* 1 */
    assert_int_equal(p->want, 1);
    /* A second rewind above the first changes nothing: the lower one replays it. */
    fq_part_rewind(p, 5, 0);
    assert_int_equal(p->expect, 3);
    assert_int_equal(fq_part_take(p, 5), FQ_TAKE_STALE);
    assert_int_equal(fq_part_take(p, 3), FQ_TAKE);
    fq_part_settle(p, 1);
    assert_int_equal(p->want, 3); /* 2 settled, 3 in flight again */
    fq_parts_clear(&t);
}

/* Property: whatever the order of takes, settles, rewinds and hand-overs, the offset committed
 * never passes a message that is not durable, never goes back, and a partition consumed to the
 * end with everything settled commits its end. The group is simulated: on a hand-over the new
 * owner starts at the committed offset. */
#define SIM_N 60

typedef struct sim {
    bool marker[SIM_N + 1]; /* a transaction marker: never delivered */
    bool durable[SIM_N + 1];
    int64_t committed; /* the group's committed offset */
    int64_t pos;       /* the consumer's fetch position */
    unsigned seed;
    unsigned first; /* the seed the run started from */
} sim_t;

static unsigned sim_rand(sim_t *s)
{
    s->seed = s->seed * 1103515245u + 12345u;
    return (s->seed >> 16) & 0x7fff;
}

static void sim_check(const sim_t *s, const fq_part_t *p)
{
    /* The offsets in flight: ascending, at or above what may be committed, below the next. */
    for (size_t i = 0; i < p->ninflight; i++)
        if ((i && p->inflight[i] <= p->inflight[i - 1]) || p->inflight[i] < p->want ||
            p->inflight[i] >= p->next)
            fail_msg("seed %u: in-flight offsets out of order at %zu (want %lld, next %lld)",
                     s->first, i, (long long)p->want, (long long)p->next);
    int64_t target = fq_part_final_target(p, true);
    int64_t c = target > s->committed ? target : s->committed;
    for (int64_t o = 0; o < c && o < SIM_N; o++)
        if (!s->marker[o] && !s->durable[o])
            fail_msg("seed %u: commit at %lld passes message %lld, not durable", s->first,
                     (long long)c, (long long)o);
}

static void sim_run(unsigned seed)
{
    sim_t s = {.seed = seed, .first = seed};
    for (int o = 0; o < SIM_N; o++)
        s.marker[o] = sim_rand(&s) % 5 == 0;
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    for (int step = 0; step < 5000; step++) {
        unsigned r = sim_rand(&s) % 100;
        if (r < 45) { /* the consumer delivers the next message, or reports the end */
            while (s.pos < SIM_N && s.marker[s.pos])
                s.pos++;
            if (s.pos >= SIM_N) {
                fq_part_eof(p, SIM_N);
                continue;
            }
            fq_take_t k = fq_part_take(p, s.pos);
            assert_true(k == FQ_TAKE || k == FQ_TAKE_STALE || k == FQ_TAKE_REPEAT);
            s.pos++;
        } else if (r < 85 && p->ninflight) { /* one in flight finishes, any of them */
            int64_t o = p->inflight[sim_rand(&s) % p->ninflight];
            s.durable[o] = true;
            fq_part_settle(p, o);
        } else if (r < 90 && p->ninflight) { /* an outage / abort: rewind to one in flight */
            int64_t o = p->inflight[sim_rand(&s) % p->ninflight];
            fq_part_rewind(p, o, 0);
            s.pos = p->expect; /* the seek lands */
        } else if (r < 95) {   /* a commit answered (a step is 10 ms: some are paced) */
            int64_t c = fq_part_commit_target(p, p->ninflight == 0, step * 10);
            if (c >= 0) {
                assert_true(c >= s.committed);
                s.committed = c;
                p->pending++;
                fq_part_committed(p, c, true, step * 10);
            }
        } else { /* hand-over: final commit, then a new owner from the committed offset */
            int64_t c = fq_part_final_target(p, p->ninflight == 0);
            if (c > s.committed)
                s.committed = c;
            fq_parts_remove(&t, "jobs", 3);
            p = fresh(&t);
            s.pos = s.committed;
        }
        sim_check(&s, p);
    }
    /* Drain: deliver and settle everything left, then the end is committed. */
    for (int guard = 0; guard < 4 * SIM_N; guard++) {
        while (s.pos < SIM_N && s.marker[s.pos])
            s.pos++;
        if (p->expect >= 0)
            s.pos = p->expect;
        if (s.pos < SIM_N && fq_part_take(p, s.pos++) == FQ_TAKE) {
            s.durable[s.pos - 1] = true;
            fq_part_settle(p, s.pos - 1);
        }
        sim_check(&s, p);
    }
    fq_part_eof(p, SIM_N);
    int64_t end = fq_part_final_target(p, true);
    if (end != SIM_N && !(end == -1 && s.committed == SIM_N))
        fail_msg("seed %u: drained partition commits %lld, not its end %d", seed, (long long)end,
                 SIM_N);
    for (int o = 0; o < SIM_N; o++)
        if (!s.marker[o] && !s.durable[o])
            fail_msg("seed %u: message %d never durable", seed, o);
    fq_parts_clear(&t);
}

static void test_random_orders(void **state)
{
    for (unsigned seed = 1; seed <= 300; seed++)
        sim_run(seed);
}

static void test_commit_answers(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    for (int64_t o = 0; o < 5; o++) {
        assert_int_equal(fq_part_take(p, o), FQ_TAKE);
        fq_part_settle(p, o);
    }
    assert_int_equal(fq_part_commit_target(p, false, 0), 5);
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
    /* Paced: after a confirmed commit the next waits FQ_COMMIT_PACE_MS; a hand-over does not. */
    assert_int_equal(fq_part_take(p, 5), FQ_TAKE);
    fq_part_settle(p, 5);
    assert_int_equal(fq_part_commit_target(p, false, 1200 + FQ_COMMIT_PACE_MS - 1), -1);
    assert_int_equal(fq_part_final_target(p, false), 6);
    assert_int_equal(fq_part_commit_target(p, false, 1200 + FQ_COMMIT_PACE_MS), 6);
    fq_parts_clear(&t);
}

/* The kafka-restart chaos run that sent an item to the DLQ twice: message 24 settled clean in the
 * turn a transaction began for 26 and 28 with offset 30; the plain commit of 26 that followed
 * reached the coordinator after the transaction's 30 and replaced it when the transaction
 * committed. While the partition's offset rides in the open transaction, no plain commit goes
 * out, not even at a hand-over; after it, only one above what the transaction committed. */
static void test_no_plain_commit_under_an_open_transaction(void **state)
{
    fq_parts_t t = {0};
    fq_part_t *p = fresh(&t);
    for (int64_t o = 24; o <= 28; o += 2)
        assert_int_equal(fq_part_take(p, o), FQ_TAKE);
    fq_part_settle(p, 24); /* clean: 26 is owed */
    p->in_txn = true;      /* 26 and 28 in a transaction, with offset 30 */
    assert_int_equal(fq_part_commit_target(p, true, 0), -1);
    assert_int_equal(fq_part_final_target(p, true), -1);
    fq_part_settle(p, 26); /* the transaction committed */
    fq_part_settle(p, 28);
    fq_part_committed(p, 30, true, 0);
    p->in_txn = false;
    assert_int_equal(fq_part_commit_target(p, false, FQ_COMMIT_PACE_MS), -1); /* nothing below */
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
        cmocka_unit_test(test_out_of_order_settles_commit_the_prefix),
        cmocka_unit_test(test_rewind_in_the_middle),
        cmocka_unit_test(test_random_orders),
        cmocka_unit_test(test_commit_answers),
        cmocka_unit_test(test_no_plain_commit_under_an_open_transaction),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
