/* Unit tests of the producer's broker-free logic: input parsing and validation (NDJSON and
 * array, with positions), dedupe and spool, batch arithmetic, DLQ filters, time parsing,
 * progress arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fq_headers.h"
#include "fq_input.h"
#include "fq_producer.h"

/* Collected reports of one fq_input_read. */
typedef struct reports {
    size_t n;
    char lines[16][256];
} reports_t;

static void collect(void *opaque, const char *where, const char *why)
{
    reports_t *r = opaque;
    if (r->n < 16)
        snprintf(r->lines[r->n], sizeof(r->lines[0]), "%s: %s", where, why);
    r->n++;
}

/* Reads text through fq_input_read; returns the spool (or NULL) and fills stats/reports. */
static fq_spool_t *read_text(const char *text, size_t len, bool allow_dup, fq_input_stats_t *st,
                             reports_t *rep, char *errstr, size_t errstr_size)
{
    memset(rep, 0, sizeof(*rep));
    FILE *in = len ? fmemopen((void *)text, len, "r") : fopen("/dev/null", "r");
    assert_non_null(in);
    fq_input_opts_t opts = {.allow_duplicates = allow_dup, .report = collect, .opaque = rep};
    fq_spool_t *spool = fq_input_read(in, &opts, st, errstr, errstr_size);
    fclose(in);
    return spool;
}

typedef struct input_case {
    const char *name;
    const char *text;
    int fatal; /* 1: fq_input_read returns NULL */
    const char *fatal_msg;
    fq_input_format_t format;
    size_t valid, invalid, duplicates;
    const char *report0; /* substring of the first report */
    const char *report1;
} input_case_t;

static const input_case_t input_cases[] = {
    {"ndjson valid", "{\"platform\":\"ig\",\"code\":\"A\"}\n{\"platform\":\"ig\",\"code\":\"B\"}\n",
     0, NULL, FQ_INPUT_NDJSON, 2, 0, 0, NULL, NULL},
    {"ndjson no final newline, blank lines, CRLF",
     "\n\n  {\"platform\":\"ig\",\"code\":\"A\"}\r\n\r\n{\"platform\":\"ig\",\"code\":\"B\"}", 0,
     NULL, FQ_INPUT_NDJSON, 2, 0, 0, NULL, NULL},
    {"ndjson broken JSON: line and column",
     "{\"platform\":\"ig\",\"code\":\"A\"}\n{\"platform\":\"ig\",\"code\":\"B\"}\n"
     "{\"platform\":\"ig\" \"code\":\"C\"}\n",
     0, NULL, FQ_INPUT_NDJSON, 2, 1, 0, "line 3, column 23: ", NULL},
    {"ndjson wrong type and missing field",
     "{\"platform\":\"ig\",\"code\":7}\n{\"code\":\"x\"}\n[1]\n", 0, NULL, FQ_INPUT_NDJSON, 0, 3, 0,
     "line 1: code: expected a string, got number", "line 2: missing \"platform\""},
    /* The plain fast path and the jansson path must agree: these leave the fast path. */
    {"escape, other order, extra field, null video_url",
     "{\"platform\":\"ig\",\"code\":\"A\\u0042\"}\n{\"code\":\"C\",\"x\":[1],\"platform\":\"ig\"}\n"
     "{\"platform\":\"ig\",\"code\":\"D\",\"video_url\":null}\n",
     0, NULL, FQ_INPUT_NDJSON, 3, 0, 0, NULL, NULL},
    {"duplicate key, trailing comma, escaped slash, raw control byte",
     "{\"platform\":\"ig\",\"code\":\"A\",\"code\":\"B\"}\n{\"platform\":\"ig\",\"code\":\"A\",}\n"
     "{\"platform\":\"ig\",\"code\":\"a\\/b\"}\n{\"platform\":\"ig\",\"code\":\"a\tb\"}\n",
     0, NULL, FQ_INPUT_NDJSON, 0, 4, 0, "line 1, column", "line 2, column"},
    {"array valid over lines",
     "[\n {\"platform\":\"ig\",\"code\":\"A\"},\n {\"platform\":\"ig\",\"code\":\"B\"}\n]\n", 0,
     NULL, FQ_INPUT_ARRAY, 2, 0, 0, NULL, NULL},
    {"array empty", "  [ ]  ", 0, NULL, FQ_INPUT_ARRAY, 0, 0, 0, NULL, NULL},
    {"array invalid items by index",
     "[{\"platform\":\"ig\",\"code\":\"A\"},\n {\"platform\":\"ig\",\"code\":\"a b\"},\n \"str\"]",
     0, NULL, FQ_INPUT_ARRAY, 1, 2, 0,
     "items[1] (line 2, column 2): code: character ' ' at offset 1",
     "items[2] (line 3, column 2): expected an object, got string"},
    {"array broken element keeps position",
     "[{\"platform\":\"ig\",\"code\":\"A\"},\n  {\"platform\" \"ig\"}]", 0, NULL, FQ_INPUT_ARRAY, 1,
     1, 0, "items[1] (line 2, column 18): ", NULL},
    {"array brackets inside strings",
     "[{\"platform\":\"ig\",\"code\":\"A\",\"note\":\"],[{\\\"\"}]", 0, NULL, FQ_INPUT_ARRAY, 1, 0,
     0, NULL, NULL},
    {"array not closed", "[{\"platform\":\"ig\",\"code\":\"A\"},", 1, "the array is not closed",
     FQ_INPUT_ARRAY, 0, 0, 0, NULL, NULL},
    {"array trailing comma", "[{\"platform\":\"ig\",\"code\":\"A\"},]", 1,
     "expected an item after ','", FQ_INPUT_ARRAY, 0, 0, 0, NULL, NULL},
    {"array data after", "[{\"platform\":\"ig\",\"code\":\"A\"}] x", 1, "unexpected data after",
     FQ_INPUT_ARRAY, 0, 0, 0, NULL, NULL},
    {"UTF-8 byte order mark", "\xef\xbb\xbf{\"platform\":\"ig\",\"code\":\"A\"}\n", 0, NULL,
     FQ_INPUT_NDJSON, 1, 0, 0, NULL, NULL},
    {"empty input", "", 1, "empty input", FQ_INPUT_UNKNOWN, 0, 0, 0, NULL, NULL},
    {"only whitespace", " \n\t\n", 1, "empty input", FQ_INPUT_UNKNOWN, 0, 0, 0, NULL, NULL},
    {"duplicates dropped",
     "{\"platform\":\"ig\",\"code\":\"A\"}\n{\"platform\":\"ig\",\"code\":\"A\"}\n"
     "{\"platform\":\"tt\",\"code\":\"A\"}\n{\"platform\":\"ig\",\"code\":\"A\",\"video_url\":"
     "\"http://x/y\"}\n",
     0, NULL, FQ_INPUT_NDJSON, 2, 0, 2, NULL, NULL},
};

static void test_input_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(input_cases) / sizeof(input_cases[0]); i++) {
        const input_case_t *c = &input_cases[i];
        fq_input_stats_t st;
        reports_t rep;
        char errstr[256] = "";
        fq_spool_t *spool =
            read_text(c->text, strlen(c->text), false, &st, &rep, errstr, sizeof(errstr));
        if (c->fatal) {
            if (spool)
                fail_msg("%s: accepted, expected fatal \"%s\"", c->name, c->fatal_msg);
            if (!strstr(errstr, c->fatal_msg))
                fail_msg("%s: fatal \"%s\", expected \"%s\"", c->name, errstr, c->fatal_msg);
            continue;
        }
        if (!spool)
            fail_msg("%s: unexpected fatal error: %s", c->name, errstr);
        if (st.format != c->format || st.valid != c->valid || st.invalid != c->invalid ||
            st.duplicates != c->duplicates || rep.n != c->invalid)
            fail_msg("%s: format %d valid %zu invalid %zu dup %zu reports %zu; expected %d %zu "
                     "%zu %zu",
                     c->name, st.format, st.valid, st.invalid, st.duplicates, rep.n, c->format,
                     c->valid, c->invalid, c->duplicates);
        if (c->report0 && !strstr(rep.lines[0], c->report0))
            fail_msg("%s: report 0 \"%s\", expected \"%s\"", c->name, rep.lines[0], c->report0);
        if (c->report1 && !strstr(rep.lines[1], c->report1))
            fail_msg("%s: report 1 \"%s\", expected \"%s\"", c->name, rep.lines[1], c->report1);
        assert_int_equal(fq_spool_count(spool), c->valid);
        assert_int_equal(st.records, c->valid + c->invalid + c->duplicates);
        fq_spool_destroy(spool);
    }
}

/* video_urls the workers' allow-list refuses are invalid items, named by index or line, both
 * on the fast path (plain items) and through the codec (escapes). */
static void test_input_allow_list(void **state)
{
    (void)state;
    char errstr[256];
    fq_allow_t *allow = fq_allow_new(NULL, "frameq-videos,127.0.0.1:17070", errstr, sizeof(errstr));
    assert_non_null(allow);
    const char *text =
        "[{\"platform\":\"p\",\"code\":\"a\",\"video_url\":\"s3://frameq-videos/p/a.mp4\"},\n"
        " {\"platform\":\"p\",\"code\":\"b\",\"video_url\":\"http://169.254.169.254/x\"},\n"
        " {\"platform\":\"p\",\"code\":\"c\",\"video_url\":\"http:\\/\\/127.0.0.1:22\\/\"},\n"
        " {\"platform\":\"p\",\"code\":\"d\",\"video_url\":\"http://127.0.0.1:17070/b/k\"},\n"
        " {\"platform\":\"p\",\"code\":\"e\"}]";
    reports_t rep;
    memset(&rep, 0, sizeof(rep));
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(in);
    fq_input_opts_t opts = {.report = collect, .opaque = &rep, .allow = allow};
    fq_input_stats_t st;
    fq_spool_t *spool = fq_input_read(in, &opts, &st, errstr, sizeof(errstr));
    fclose(in);
    assert_non_null(spool);
    assert_int_equal(st.valid, 3);
    assert_int_equal(st.invalid, 2);
    assert_int_equal(st.refused_urls, 2);
    assert_int_equal(rep.n, 2);
    if (!strstr(rep.lines[0], "items[1] (line 2, column 2): video_url host 169.254.169.254:80 is "
                              "not in ALLOWED_SOURCE_HOSTS"))
        fail_msg("report 0: %s", rep.lines[0]);
    if (!strstr(rep.lines[1], "items[2] (line 3, column 2): video_url host 127.0.0.1:22 is not in "
                              "ALLOWED_SOURCE_HOSTS"))
        fail_msg("report 1: %s", rep.lines[1]);
    fq_spool_destroy(spool);
    fq_allow_destroy(allow);
}

static void test_spool_contents_and_rewind(void **state)
{
    (void)state;
    const char *text = "[{\"platform\":\"ig\",\"code\":\"A\",\"video_url\":\"https://h/a.mp4\"},"
                       "{\"platform\":\"tt\",\"code\":\"B\",\"extra\":1}]";
    fq_input_stats_t st;
    reports_t rep;
    char errstr[256];
    fq_spool_t *spool = read_text(text, strlen(text), false, &st, &rep, errstr, sizeof(errstr));
    assert_non_null(spool);
    for (int pass = 0; pass < 2; pass++) {
        fq_item_t item;
        assert_int_equal(fq_spool_next(spool, &item), 1);
        assert_string_equal(item.platform, "ig");
        assert_string_equal(item.code, "A");
        assert_string_equal(item.video_url, "https://h/a.mp4");
        fq_item_clear(&item);
        assert_int_equal(fq_spool_next(spool, &item), 1);
        assert_string_equal(item.platform, "tt");
        assert_string_equal(item.code, "B");
        assert_null(item.video_url);
        fq_item_clear(&item);
        assert_int_equal(fq_spool_next(spool, &item), 0);
        assert_int_equal(fq_spool_rewind(spool), 0);
    }
    fq_spool_destroy(spool);
    fq_spool_destroy(NULL);
}

/* Many items with a duplicate of every third: exercises the dedupe set's growth (it re-reads
 * the spool to rehash) and its exact comparison. */
static void test_dedupe_many(void **state)
{
    (void)state;
    const size_t n = 60000;
    size_t cap = n * 48, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t expect_dups = 0;
    for (size_t i = 0; i < n; i++) {
        size_t code = i;
        if (i % 3 == 2) {
            code = i / 2; /* an earlier code */
            expect_dups++;
        }
        len += (size_t)snprintf(text + len, cap - len, "{\"platform\":\"p\",\"code\":\"c%zu\"}\n",
                                code);
    }
    /* i/2 for i%3==2 may itself be a code that was replaced (not emitted): count exactly. */
    char *seen = calloc(n, 1);
    assert_non_null(seen);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        size_t code = i % 3 == 2 ? i / 2 : i;
        if (!seen[code]) {
            seen[code] = 1;
            distinct++;
        }
    }
    free(seen);
    (void)expect_dups;
    fq_input_stats_t st;
    reports_t rep;
    char errstr[256];
    fq_spool_t *spool = read_text(text, len, false, &st, &rep, errstr, sizeof(errstr));
    assert_non_null(spool);
    assert_int_equal(st.valid, distinct);
    assert_int_equal(st.duplicates, n - distinct);
    assert_int_equal(fq_spool_count(spool), distinct);
    fq_spool_destroy(spool);

    spool = read_text(text, len, true, &st, &rep, errstr, sizeof(errstr));
    assert_non_null(spool);
    assert_int_equal(st.valid, n);
    assert_int_equal(st.duplicates, 0);
    fq_spool_destroy(spool);
    free(text);
}

static void test_huge_line(void **state)
{
    (void)state;
    size_t big = FQ_INPUT_RECORD_MAX + 100;
    char *text = malloc(big + 200);
    assert_non_null(text);
    size_t len = (size_t)sprintf(text, "{\"platform\":\"ig\",\"code\":\"A\",\"pad\":\"");
    memset(text + len, 'x', big);
    len += big;
    len += (size_t)sprintf(text + len, "\"}\n{\"platform\":\"ig\",\"code\":\"B\"}\n");
    fq_input_stats_t st;
    reports_t rep;
    char errstr[256];
    fq_spool_t *spool = read_text(text, len, false, &st, &rep, errstr, sizeof(errstr));
    assert_non_null(spool);
    assert_int_equal(st.invalid, 1);
    assert_int_equal(st.valid, 1);
    assert_string_equal(rep.lines[0], "line 1: item longer than 1048576 bytes");
    fq_spool_destroy(spool);

    /* the same inside an array: reported by index, and the next item is still read */
    len = (size_t)sprintf(text, "[{\"pad\":\"");
    memset(text + len, 'x', big);
    len += big;
    len += (size_t)sprintf(text + len, "\"},{\"platform\":\"ig\",\"code\":\"B\"}]");
    spool = read_text(text, len, false, &st, &rep, errstr, sizeof(errstr));
    assert_non_null(spool);
    assert_int_equal(st.invalid, 1);
    assert_int_equal(st.valid, 1);
    assert_non_null(strstr(rep.lines[0], "items[0] (line 1, column 2): item longer than"));
    fq_spool_destroy(spool);
    free(text);
}

static void test_batch_arithmetic(void **state)
{
    (void)state;
    static const struct {
        size_t n, b, count;
        size_t sizes[4];
    } cases[] = {
        {25, 10, 3, {10, 10, 5, 0}}, {0, 10, 0, {0}},         {10, 10, 1, {10, 0}},
        {1, 10, 1, {1, 0}},          {3, 1, 3, {1, 1, 1, 0}}, {20, 10, 2, {10, 10, 0}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(fq_batch_count(cases[i].n, cases[i].b), cases[i].count);
        size_t sum = 0;
        for (size_t j = 0; j < 4; j++) {
            assert_int_equal(fq_batch_len(cases[i].n, cases[i].b, j), cases[i].sizes[j]);
            sum += cases[i].sizes[j];
        }
        assert_int_equal(sum, cases[i].n);
    }
    assert_int_equal(fq_batch_count(5, 0), 0);
    assert_int_equal(fq_batch_count(1000000, 10), 100000);
}

static void test_time_parsing(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int ok;
        int64_t ms;
    } cases[] = {
        {"1970-01-01T00:00:00Z", 1, 0},
        {"2026-11-28T15:04:05Z", 1, INT64_C(1795878245000)},
        {"2026-11-28T15:04:05.123Z", 1, INT64_C(1795878245123)},
        {"2026-11-28T15:04:05.1Z", 1, INT64_C(1795878245100)},
        {"2026-11-28T17:04:05+02:00", 1, INT64_C(1795878245000)},
        {"2026-11-28T14:04:05-01:00", 1, INT64_C(1795878245000)},
        {"2026-11-28 15:04:05Z", 1, INT64_C(1795878245000)},
        {"2026-11-28T15:04:05", 0, 0},
        {"2026-02-31T00:00:00Z", 0, 0},
        {"2026-13-01T00:00:00Z", 0, 0},
        {"2026-11-28T15:04:05.Z", 0, 0},
        {"2026-11-28T15:04:05Zx", 0, 0},
        {"yesterday", 0, 0},
        {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -1;
        int rc = fq_time_parse_rfc3339(cases[i].s, &ms);
        if ((rc == 0) != cases[i].ok)
            fail_msg("\"%s\": rc %d, expected ok=%d", cases[i].s, rc, cases[i].ok);
        if (cases[i].ok && ms != cases[i].ms)
            fail_msg("\"%s\": %lld, expected %lld", cases[i].s, (long long)ms,
                     (long long)cases[i].ms);
    }

    static const struct {
        const char *s;
        int ok;
        int64_t ms;
    } ages[] = {
        {"90s", 1, 90000},    {"30m", 1, 1800000},  {"2h", 1, 7200000},
        {"7d", 1, 604800000}, {"1w", 1, 604800000}, {"0s", 1, 0},
        {"2", 0, 0},          {"h", 0, 0},          {"-2h", 0, 0},
        {"2hours", 0, 0},     {"", 0, 0},           {"99999999999999999999d", 0, 0},
    };
    for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++) {
        int64_t ms = -1;
        int rc = fq_age_parse(ages[i].s, &ms);
        if ((rc == 0) != ages[i].ok || (ages[i].ok && ms != ages[i].ms))
            fail_msg("age \"%s\": rc %d ms %lld", ages[i].s, rc, (long long)ms);
    }
    int64_t t;
    assert_int_equal(fq_time_arg_parse("2h", 10000000, &t), 0);
    assert_int_equal(t, 10000000 - 7200000);
    assert_int_equal(fq_time_arg_parse("1970-01-01T00:00:01Z", 10000000, &t), 0);
    assert_int_equal(t, 1000);
    assert_int_not_equal(fq_time_arg_parse("soon", 0, &t), 0);
}

static void test_dlq_entry_and_filters(void **state)
{
    (void)state;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    static const char *const dlq_headers[][2] = {
        {FQ_HDR_DLQ_REASON, "max-retries"},
        {FQ_HDR_ERROR_STAGE, "upload"},
        {FQ_HDR_ERROR_CLASS, "retriable"},
        {FQ_HDR_FAILED_AT, "2026-11-28T10:00:00.000Z"},
        {FQ_HDR_ATTEMPT, "4"},
        {FQ_HDR_REDRIVE_COUNT, "2"},
        {FQ_HDR_ERROR, "HTTP 503"},
    };
    for (size_t i = 0; i < sizeof(dlq_headers) / sizeof(dlq_headers[0]); i++)
        assert_int_equal(fq_headers_set(hdrs, dlq_headers[i][0], dlq_headers[i][1]), 0);
    fq_dlq_entry_t e;
    fq_dlq_entry_from(&e, "ig:ABC", 6, hdrs);
    assert_string_equal(e.key, "ig:ABC");
    assert_string_equal(e.platform, "ig");
    assert_string_equal(e.reason, "max-retries");
    assert_int_equal(e.attempt, 4);
    assert_int_equal(e.redrive_count, 2);
    int64_t at;
    assert_int_equal(fq_time_parse_rfc3339("2026-11-28T10:00:00Z", &at), 0);
    assert_int_equal(e.failed_at_ms, at);

    const int64_t H = 3600 * 1000;
    static const char *none = NULL;
    struct {
        const char *name;
        fq_dlq_filter_t f;
        bool match;
    } cases[] = {
        {"no filter", {none, none, none, none, -1, -1}, true},
        {"reason match", {"max-retries", none, none, none, -1, -1}, true},
        {"reason other", {"permanent", none, none, none, -1, -1}, false},
        {"stage", {none, "upload", none, none, -1, -1}, true},
        {"stage other", {none, "fetch", none, none, -1, -1}, false},
        {"class", {none, none, "retriable", none, -1, -1}, true},
        {"class other", {none, none, "permanent", none, -1, -1}, false},
        {"platform", {none, none, none, "ig", -1, -1}, true},
        {"platform prefix is not a match", {none, none, none, "i", -1, -1}, false},
        {"after, inside", {none, none, none, none, at - H, -1}, true},
        {"after, equal", {none, none, none, none, at, -1}, true},
        {"after, outside", {none, none, none, none, at + 1, -1}, false},
        {"before, inside", {none, none, none, none, -1, at + 1}, true},
        {"before, equal is outside", {none, none, none, none, -1, at}, false},
        {"window", {"max-retries", "upload", "retriable", "ig", at - H, at + H}, true},
        {"window, one mismatch",
         {"max-retries", "upload", "retriable", "tt", at - H, at + H},
         false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (fq_dlq_filter_match(&cases[i].f, &e) != cases[i].match)
            fail_msg("%s: expected %d", cases[i].name, cases[i].match);

    /* No failed-at header: never passes a time filter, passes the others. */
    assert_int_equal(fq_headers_set(hdrs, FQ_HDR_FAILED_AT, NULL), 0);
    fq_dlq_entry_from(&e, "ig:ABC", 6, hdrs);
    assert_int_equal(e.failed_at_ms, -1);
    fq_dlq_filter_t f = {none, none, none, "ig", 0, -1};
    assert_false(fq_dlq_filter_match(&f, &e));
    f.failed_after_ms = -1;
    assert_true(fq_dlq_filter_match(&f, &e));
    rd_kafka_headers_destroy(hdrs);

    /* No headers, hostile key: defaults, truncated key, no crash. */
    char longkey[600];
    memset(longkey, 'k', sizeof(longkey));
    fq_dlq_entry_from(&e, longkey, sizeof(longkey), NULL);
    assert_int_equal(strlen(e.key), sizeof(e.key) - 1);
    assert_string_equal(e.platform, "");
    assert_int_equal(e.attempt, -1);
    assert_int_equal(e.redrive_count, 0);
}

static void test_redrive_decide(void **state)
{
    (void)state;
    fq_dlq_entry_t e;
    memset(&e, 0, sizeof(e));
    e.failed_at_ms = -1;
    static const struct {
        const char *name;
        const char *reason, *platform_filter;
        int64_t redrive_count;
        bool decoded, include_malformed;
        fq_redrive_action_t want;
    } cases[] = {
        {"plain", "permanent", NULL, 0, true, false, FQ_REDRIVE_TAKE},
        {"below the guard", "max-retries", NULL, 2, true, false, FQ_REDRIVE_TAKE},
        {"at the guard", "max-retries", NULL, 3, true, false, FQ_REDRIVE_LOOP_GUARD},
        {"over the guard", "max-retries", NULL, 9, true, true, FQ_REDRIVE_LOOP_GUARD},
        {"undecodable", "permanent", NULL, 0, false, false, FQ_REDRIVE_MALFORMED},
        {"reason malformed", "malformed", NULL, 0, true, false, FQ_REDRIVE_MALFORMED},
        {"malformed included", "malformed", NULL, 0, false, true, FQ_REDRIVE_TAKE},
        {"filter first", "malformed", "tt", 5, false, false, FQ_REDRIVE_NOT_MATCHING},
        {"filter passes", "permanent", "ig", 0, true, false, FQ_REDRIVE_TAKE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(e.reason, sizeof(e.reason), "%s", cases[i].reason);
        snprintf(e.platform, sizeof(e.platform), "ig");
        e.redrive_count = cases[i].redrive_count;
        fq_dlq_filter_t f = {NULL, NULL, NULL, cases[i].platform_filter, -1, -1};
        fq_redrive_action_t got =
            fq_redrive_decide(&f, &e, cases[i].decoded, 3, cases[i].include_malformed);
        if (got != cases[i].want)
            fail_msg("%s: action %d, expected %d", cases[i].name, got, cases[i].want);
    }
}

static void test_progress(void **state)
{
    (void)state;
    assert_true(fq_progress_rate(1000, 2000) == 500.0);
    assert_true(fq_progress_rate(1000, 0) == 0.0);
    assert_int_equal(fq_progress_eta_ms(250, 1000, 1000), 3000);
    assert_int_equal(fq_progress_eta_ms(1000, 1000, 1000), 0);
    assert_int_equal(fq_progress_eta_ms(0, 1000, 1000), -1);
    assert_int_equal(fq_progress_eta_ms(10, 0, 1000), -1);
    char buf[32];
    assert_string_equal(fq_progress_fmt_duration(-1, buf, sizeof(buf)), "?");
    assert_string_equal(fq_progress_fmt_duration(12000, buf, sizeof(buf)), "12s");
    assert_string_equal(fq_progress_fmt_duration(185000, buf, sizeof(buf)), "3m05s");
    assert_string_equal(fq_progress_fmt_duration(3720000, buf, sizeof(buf)), "1h02m");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_table),
        cmocka_unit_test(test_input_allow_list),
        cmocka_unit_test(test_spool_contents_and_rewind),
        cmocka_unit_test(test_dedupe_many),
        cmocka_unit_test(test_huge_line),
        cmocka_unit_test(test_batch_arithmetic),
        cmocka_unit_test(test_time_parsing),
        cmocka_unit_test(test_dlq_entry_and_filters),
        cmocka_unit_test(test_redrive_decide),
        cmocka_unit_test(test_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
