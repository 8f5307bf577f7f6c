#include "fq_backoff.h"

int64_t fq_backoff_ms(int64_t base_ms, int64_t max_ms, int attempt, int64_t retry_after_ms,
                      double unit)
{
    if (base_ms < 0)
        base_ms = 0;
    if (max_ms < 0)
        max_ms = 0;
    if (attempt < 1)
        attempt = 1;
    if (!(unit >= 0.0)) /* also catches NaN */
        unit = 0.0;
    if (unit >= 1.0)
        unit = 0.999999;

    /* Doubling in floating point cannot overflow; the cap below bounds the result anyway. */
    double delay = (double)base_ms;
    for (int i = 1; i < attempt && delay < (double)max_ms * 2.0; i++)
        delay *= 2.0;
    delay *= 1.0 - FQ_BACKOFF_JITTER + 2.0 * FQ_BACKOFF_JITTER * unit;
    if (delay > (double)max_ms)
        delay = (double)max_ms;
    int64_t ms = (int64_t)(delay + 0.5);
    if (ms > max_ms)
        ms = max_ms;

    /* The source knows best when it will be back; a bogus value is bounded. */
    if (retry_after_ms > FQ_BACKOFF_RETRY_AFTER_MAX)
        retry_after_ms = FQ_BACKOFF_RETRY_AFTER_MAX;
    if (retry_after_ms > ms)
        ms = retry_after_ms;
    return ms;
}

double fq_backoff_random(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (double)(x >> 11) / 9007199254740992.0; /* 2^53 */
}
