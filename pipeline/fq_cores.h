/* frameq core budget: the cores of a process shared by all its pipelines.
 *
 * Every item running its CPU-bound stage holds one core (fq_cores_acquire). A running item may
 * borrow the cores nobody holds for more decoder threads (fq_cores_borrow), and gives them
 * back when another item waits for one (fq_cores_wanted). The sum of held and borrowed cores
 * never exceeds the total, so the pool never oversubscribes the machine.
 *
 * A NULL budget is no budget: acquire succeeds at once, borrow lends nothing, so tools and
 * tests without one behave as before. Thread-safe.
 */
#ifndef FQ_CORES_H
#define FQ_CORES_H

#include <stdatomic.h>
#include <stdbool.h>

#include "fq_base.h"

typedef struct fq_cores fq_cores_t;

/** @brief A budget of total cores (at least 1). NULL on OOM. */
fq_cores_t *fq_cores_new(int total);
/** @brief NULL-safe. No core may be held any more. */
void fq_cores_destroy(fq_cores_t *c);

/** @brief One core for an item's CPU stage: blocks until one is free (lenders are asked to
 *  give theirs back meanwhile). 0, or -1 when *cancel became non-zero while waiting (polled
 *  every FQ_CORES_POLL_MS). cancel may be NULL. */
int fq_cores_acquire(fq_cores_t *c, const atomic_int *cancel) FQ_WARN_UNUSED;
#define FQ_CORES_POLL_MS 50

/** @brief Gives back n cores (acquired or borrowed). */
void fq_cores_release(fq_cores_t *c, int n);

/** @brief Extra cores for a running item: up to max free ones, without blocking, and none
 *  while someone waits in acquire. Returns how many were lent (give them back with
 *  fq_cores_release). */
int fq_cores_borrow(fq_cores_t *c, int max) FQ_WARN_UNUSED;

/** @brief True when someone waits in acquire: borrowers should give their extra cores back. */
bool fq_cores_wanted(fq_cores_t *c);

/** @brief The budget's size; 1 for NULL. */
int fq_cores_total(const fq_cores_t *c);

/** @brief Cores held or lent right now (for tests and metrics); 0 for NULL. */
int fq_cores_in_use(fq_cores_t *c);

#endif
