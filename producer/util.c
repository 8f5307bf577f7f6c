/* producer helpers without a broker: time parsing, DLQ filters, batch and progress arithmetic. */
#include "fq_producer.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fq_headers.h"

static int parse_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int fq_time_parse_rfc3339(const char *s, int64_t *epoch_ms)
{
    int Y, M, D, h, m, sec;
    const char *p = s;
    if (!s || parse_digits(&p, 4, &Y) || *p++ != '-' || parse_digits(&p, 2, &M) || *p++ != '-' ||
        parse_digits(&p, 2, &D))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (parse_digits(&p, 2, &h) || *p++ != ':' || parse_digits(&p, 2, &m) || *p++ != ':' ||
        parse_digits(&p, 2, &sec))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return -1;
    int ms = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (!digits)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (parse_digits(&p, 2, &oh) || *p++ != ':' || parse_digits(&p, 2, &om) || oh > 23 ||
            om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p)
        return -1;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    /* timegm normalises 31 February into March; a round trip catches it. */
    if (tm.tm_mday != D || tm.tm_mon != M - 1)
        return -1;
    *epoch_ms = ((int64_t)t - (int64_t)offset_min * 60) * 1000 + ms;
    return 0;
}

int fq_age_parse(const char *s, int64_t *ms)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    int64_t unit;
    if (!end || !end[0] || end[1])
        return -1;
    switch (*end) {
    case 's':
        unit = 1000;
        break;
    case 'm':
        unit = 60 * 1000;
        break;
    case 'h':
        unit = 3600 * 1000;
        break;
    case 'd':
        unit = 86400 * 1000;
        break;
    case 'w':
        unit = 7 * 86400 * (int64_t)1000;
        break;
    default:
        return -1;
    }
    if (v > (unsigned long long)(INT64_MAX / unit))
        return -1;
    *ms = (int64_t)v * unit;
    return 0;
}

int fq_time_arg_parse(const char *s, int64_t now_ms, int64_t *epoch_ms)
{
    int64_t age;
    if (fq_age_parse(s, &age) == 0) {
        *epoch_ms = now_ms - age;
        return 0;
    }
    return fq_time_parse_rfc3339(s, epoch_ms);
}

void fq_dlq_entry_from(fq_dlq_entry_t *entry, const void *key, size_t key_len,
                       const rd_kafka_headers_t *hdrs)
{
    memset(entry, 0, sizeof(*entry));
    if (key && key_len) {
        size_t n = key_len < sizeof(entry->key) - 1 ? key_len : sizeof(entry->key) - 1;
        memcpy(entry->key, key, n);
        entry->key[n] = '\0';
        const char *colon = memchr(entry->key, ':', n);
        if (colon && (size_t)(colon - entry->key) < sizeof(entry->platform))
            snprintf(entry->platform, sizeof(entry->platform), "%.*s", (int)(colon - entry->key),
                     entry->key);
    }
    fq_headers_get(hdrs, FQ_HDR_DLQ_REASON, entry->reason, sizeof(entry->reason));
    fq_headers_get(hdrs, FQ_HDR_ERROR_STAGE, entry->stage, sizeof(entry->stage));
    fq_headers_get(hdrs, FQ_HDR_ERROR_CLASS, entry->klass, sizeof(entry->klass));
    fq_headers_get(hdrs, FQ_HDR_FAILED_AT, entry->failed_at, sizeof(entry->failed_at));
    fq_headers_get(hdrs, FQ_HDR_ERROR, entry->error, sizeof(entry->error));
    if (fq_time_parse_rfc3339(entry->failed_at, &entry->failed_at_ms) != 0)
        entry->failed_at_ms = -1;
    entry->attempt = fq_headers_get_int(hdrs, FQ_HDR_ATTEMPT, -1);
    entry->redrive_count = fq_headers_get_int(hdrs, FQ_HDR_REDRIVE_COUNT, 0);
}

bool fq_dlq_filter_match(const fq_dlq_filter_t *filter, const fq_dlq_entry_t *entry)
{
    if (filter->reason && strcmp(filter->reason, entry->reason) != 0)
        return false;
    if (filter->stage && strcmp(filter->stage, entry->stage) != 0)
        return false;
    if (filter->klass && strcmp(filter->klass, entry->klass) != 0)
        return false;
    if (filter->platform && strcmp(filter->platform, entry->platform) != 0)
        return false;
    if (filter->failed_after_ms >= 0 &&
        (entry->failed_at_ms < 0 || entry->failed_at_ms < filter->failed_after_ms))
        return false;
    if (filter->failed_before_ms >= 0 &&
        (entry->failed_at_ms < 0 || entry->failed_at_ms >= filter->failed_before_ms))
        return false;
    return true;
}

fq_redrive_action_t fq_redrive_decide(const fq_dlq_filter_t *filter, const fq_dlq_entry_t *entry,
                                      bool decoded, int64_t max_redrives, bool include_malformed)
{
    if (!fq_dlq_filter_match(filter, entry))
        return FQ_REDRIVE_NOT_MATCHING;
    /* The loop guard comes before everything else that could send it: an item that keeps
     * dying must stop coming back, malformed or not. */
    if (entry->redrive_count >= max_redrives)
        return FQ_REDRIVE_LOOP_GUARD;
    if ((!decoded || strcmp(entry->reason, "malformed") == 0) && !include_malformed)
        return FQ_REDRIVE_MALFORMED;
    return FQ_REDRIVE_TAKE;
}

size_t fq_batch_count(size_t n, size_t batch_size)
{
    if (!batch_size)
        return 0;
    return n / batch_size + (n % batch_size ? 1 : 0);
}

size_t fq_batch_len(size_t n, size_t batch_size, size_t i)
{
    if (!batch_size || i >= fq_batch_count(n, batch_size))
        return 0;
    size_t start = i * batch_size;
    return n - start < batch_size ? n - start : batch_size;
}

double fq_progress_rate(uint64_t done, int64_t elapsed_ms)
{
    if (elapsed_ms <= 0)
        return 0;
    return (double)done * 1000.0 / (double)elapsed_ms;
}

int64_t fq_progress_eta_ms(uint64_t done, uint64_t total, int64_t elapsed_ms)
{
    if (!total || !done || elapsed_ms <= 0)
        return -1;
    if (done >= total)
        return 0;
    /* remaining at the average rate so far: elapsed * (total - done) / done */
    return (int64_t)((double)elapsed_ms * (double)(total - done) / (double)done);
}

const char *fq_progress_fmt_duration(int64_t ms, char *buf, size_t buf_size)
{
    if (ms < 0) {
        snprintf(buf, buf_size, "?");
        return buf;
    }
    int64_t s = (ms + 999) / 1000;
    if (s >= 3600)
        snprintf(buf, buf_size, "%" PRId64 "h%02" PRId64 "m", s / 3600, (s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, buf_size, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else
        snprintf(buf, buf_size, "%" PRId64 "s", s);
    return buf;
}
