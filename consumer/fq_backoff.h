/* frameq retry backoff (DESIGN §3): RETRY_BACKOFF_MS * 2^(attempt-1), +-20 % jitter, capped at
 * RETRY_BACKOFF_MAX_MS, raised to the source's Retry-After when that is larger. Pure arithmetic
 * so the bounds can be unit-tested; the randomness is passed in. */
#ifndef FQ_BACKOFF_H
#define FQ_BACKOFF_H

#include <stdint.h>

#define FQ_BACKOFF_JITTER          0.2                /**< +-20 % */
#define FQ_BACKOFF_RETRY_AFTER_MAX (60LL * 60 * 1000) /**< a Retry-After is trusted up to 1 h */

/**
 * @brief The delay before attempt+1 after a failure at attempt (1 = first try).
 * @param base_ms RETRY_BACKOFF_MS (<= 0 gives 0 before Retry-After)
 * @param max_ms RETRY_BACKOFF_MAX_MS
 * @param attempt failed attempts so far, >= 1 (smaller values count as 1)
 * @param retry_after_ms the source's Retry-After in ms, 0 when none
 * @param unit a uniform random number in [0, 1): 0 -> -20 %, 0.5 -> exact, ->1 -> +20 %
 */
int64_t fq_backoff_ms(int64_t base_ms, int64_t max_ms, int attempt, int64_t retry_after_ms,
                      double unit);

/** @brief A uniform number in [0, 1) from a caller-owned xorshift state (seed it non-zero). */
double fq_backoff_random(uint64_t *state);

#endif
