/* Unit tests of config/log.c: every line is one valid JSON object with the agreed fields,
 * escaping is right, levels gate, long or hostile messages never break a line. stderr is
 * redirected into a temporary file and parsed back with jansson. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fq_log.h"
#include "fq_test_capture.h"

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

/* Parses the only line of text as JSON; fails the test when it is not exactly one object. */
static json_t *only_line(const char *text)
{
    assert_int_equal(count_lines(text), 1);
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    json_error_t jerr;
    json_t *obj = json_loadb(text, len - 1, 0, &jerr);
    if (!obj)
        fail_msg("not JSON (%s): %s", jerr.text, text);
    assert_true(json_is_object(obj));
    return obj;
}

static json_t *log_one(const fq_log_ctx_t *ctx, const char *msg)
{
    fq_test_capture_t c;
    fq_test_capture_start(&c);
    fq_log(FQ_LOG_ERROR, ctx, "%s", msg);
    char *text = fq_test_capture_end(&c);
    json_t *obj = only_line(text);
    free(text);
    return obj;
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(fq_log_init("test", "w-1", "json", "debug"), 0);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

static void test_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want; /* want: the message after a JSON round trip */
    } cases[] = {
        {"plain", "plain"},
        {"say \"hi\"", "say \"hi\""},
        {"back\\slash", "back\\slash"},
        {"two\nlines\r\n", "two\nlines\r\n"},
        {"tab\there", "tab\there"},
        {"ctl \x01\x1f\x7f end", "ctl \x01\x1f\x7f end"},
        {"utf8 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa5",
         "utf8 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa5"},
        {"bad \xff byte", "bad \xef\xbf\xbd byte"},       /* invalid -> U+FFFD */
        {"cut \xe2\x82", "cut \xef\xbf\xbd\xef\xbf\xbd"}, /* truncated sequence */
        {"overlong \xc0\xaf", "overlong \xef\xbf\xbd\xef\xbf\xbd"},
        {"surrogate \xed\xa0\x80", "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"{\"json\":[1,2]}", "{\"json\":[1,2]}"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *obj = log_one(NULL, cases[i].in);
        const char *got = json_string_value(json_object_get(obj, "msg"));
        assert_non_null(got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu: msg round trip differs", i);
        json_decref(obj);
    }
}

static void test_fields(void **state)
{
    (void)state;
    fq_log_ctx_t ctx = {.item = "instagram:ABC\"123",
                        .attempt = 2,
                        .stage = "fetch",
                        .outcome = "retry",
                        .error_class = "retriable",
                        .duration_ms = 12.5,
                        .topic = "extraction.jobs",
                        .partition = 1,
                        .offset = 42};
    json_t *obj = log_one(&ctx, "fetched");
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(obj, "program")), "test");
    assert_string_equal(json_string_value(json_object_get(obj, "worker")), "w-1");
    assert_string_equal(json_string_value(json_object_get(obj, "item")), "instagram:ABC\"123");
    assert_int_equal(json_integer_value(json_object_get(obj, "attempt")), 2);
    assert_string_equal(json_string_value(json_object_get(obj, "stage")), "fetch");
    assert_string_equal(json_string_value(json_object_get(obj, "outcome")), "retry");
    assert_string_equal(json_string_value(json_object_get(obj, "error_class")), "retriable");
    assert_true(json_real_value(json_object_get(obj, "duration_ms")) == 12.5);
    assert_string_equal(json_string_value(json_object_get(obj, "topic")), "extraction.jobs");
    assert_int_equal(json_integer_value(json_object_get(obj, "partition")), 1);
    assert_int_equal(json_integer_value(json_object_get(obj, "offset")), 42);
    assert_string_equal(json_string_value(json_object_get(obj, "msg")), "fetched");

    /* ts is RFC 3339 UTC with milliseconds: 2026-11-28T15:04:05.123Z */
    const char *ts = json_string_value(json_object_get(obj, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < 24; i++)
        if (shape[i] == 'd' ? (ts[i] < '0' || ts[i] > '9') : ts[i] != shape[i])
            fail_msg("ts \"%s\" is not RFC 3339 with ms", ts);
    json_decref(obj);

    /* Unset context fields are omitted, not written as empty. */
    fq_log_ctx_t empty = {0};
    obj = log_one(&empty, "x");
    static const char *const absent[] = {"item",    "attempt",     "stage",
                                         "outcome", "error_class", "duration_ms",
                                         "topic",   "partition",   "offset"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        if (json_object_get(obj, absent[i]))
            fail_msg("field %s present although unset", absent[i]);
    json_decref(obj);
}

static void test_level_gating(void **state)
{
    (void)state;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int threshold = 0; threshold < 4; threshold++) {
        assert_int_equal(fq_log_init("test", "w-1", "json", names[threshold]), 0);
        fq_test_capture_t c;
        fq_test_capture_start(&c);
        for (int level = 0; level < 4; level++)
            fq_log((fq_log_level_t)level, NULL, "at %s", names[level]);
        char *text = fq_test_capture_end(&c);
        /* Exactly the levels at or above the threshold, in order. */
        assert_int_equal(count_lines(text), (size_t)(4 - threshold));
        const char *line = text;
        for (int level = threshold; level < 4; level++) {
            size_t n = strcspn(line, "\n");
            json_t *obj = json_loadb(line, n, 0, NULL);
            assert_non_null(obj);
            assert_string_equal(json_string_value(json_object_get(obj, "level")), names[level]);
            json_decref(obj);
            line += n + 1;
        }
        for (int level = 0; level < 4; level++)
            assert_int_equal(fq_log_enabled((fq_log_level_t)level), level >= threshold);
        free(text);
    }
    assert_int_equal(fq_log_init("test", "w-1", "json", "warning"), 0); /* alias */
    assert_false(fq_log_enabled(FQ_LOG_INFO));
    assert_true(fq_log_enabled(FQ_LOG_WARN));
    assert_int_equal(fq_log_init("test", "w-1", "json", "verbose"), -1);
    assert_int_equal(fq_log_init("test", "w-1", "xml", "info"), -1);
    assert_int_equal(fq_log_init("test", "w-1", "json", "debug"), 0);
}

/* A message that escapes to more than a line holds is cut, and the line stays valid JSON. */
static void test_long_message(void **state)
{
    (void)state;
    static const char fills[] = {'\x01', '"', 'a'};
    char item[3000];
    memset(item, '\\', sizeof(item) - 1);
    item[sizeof(item) - 1] = '\0';
    fq_log_ctx_t ctx = {.item = item, .stage = "fetch"};
    for (size_t f = 0; f < sizeof(fills); f++) {
        char msg[2100];
        memset(msg, fills[f], sizeof(msg) - 1);
        msg[sizeof(msg) - 1] = '\0';
        json_t *obj = log_one(&ctx, msg);
        const char *got = json_string_value(json_object_get(obj, "msg"));
        assert_non_null(got);
        assert_true(strlen(got) > 0);
        for (const char *p = got; *p && *p != '.'; p++)
            assert_int_equal(*p, fills[f]);
        /* the long item is cut and marked, and the fields after it are still there */
        const char *it = json_string_value(json_object_get(obj, "item"));
        assert_non_null(it);
        assert_true(strlen(it) < strlen(item));
        assert_non_null(strstr(it, "..."));
        assert_string_equal(json_string_value(json_object_get(obj, "stage")), "fetch");
        json_decref(obj);
    }
}

static void test_text_format(void **state)
{
    (void)state;
    assert_int_equal(fq_log_init("consumer", "w-2", "text", "info"), 0);
    fq_log_ctx_t ctx = {.item = "tiktok:X1", .attempt = 3, .stage = "upload"};
    fq_test_capture_t c;
    fq_test_capture_start(&c);
    FQ_INFO(&ctx, "first\nsecond");
    FQ_DEBUG(&ctx, "hidden");
    char *text = fq_test_capture_end(&c);
    assert_int_equal(count_lines(text), 1); /* the newline in the message is escaped */
    assert_non_null(strstr(text, " info  consumer"));
    assert_non_null(strstr(text, "item=tiktok:X1"));
    assert_non_null(strstr(text, "attempt=3"));
    assert_non_null(strstr(text, "stage=upload"));
    assert_non_null(strstr(text, ": first\\nsecond\n"));
    assert_null(strstr(text, "hidden"));
    free(text);
    assert_int_equal(fq_log_init("test", "w-1", "json", "debug"), 0);
}

static void test_time(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1234567890123, "2009-02-13T23:31:30.123Z"},
        {1795878245007, "2026-11-28T15:04:05.007Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[40];
        fq_time_rfc3339(cases[i].ms, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].want);
    }
    /* The clocks move forward (or stand still), never back. */
    int64_t a = fq_time_mono_ms(), b = fq_time_mono_ms();
    assert_true(b >= a);
    assert_true(fq_time_now_ms() > 1600000000000LL); /* after 2020: the clock is epoch ms */
}

/* Lines from several threads never interleave. */
#define N_THREADS 4
#define N_LINES   200

static void *log_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    char item[32];
    snprintf(item, sizeof(item), "p:t%d", id);
    fq_log_ctx_t ctx = {.item = item, .attempt = id + 1};
    for (int i = 0; i < N_LINES; i++)
        FQ_INFO(&ctx, "thread %d line %d %s", id, i, "padding padding padding padding");
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    fq_test_capture_t c;
    fq_test_capture_start(&c);
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    char *text = fq_test_capture_end(&c);
    assert_int_equal(count_lines(text), N_THREADS * N_LINES);
    int per_thread[N_THREADS] = {0};
    for (const char *line = text; *line;) {
        size_t n = strcspn(line, "\n");
        json_t *obj = json_loadb(line, n, 0, NULL);
        if (!obj)
            fail_msg("broken line: %.*s", (int)n, line);
        int attempt = (int)json_integer_value(json_object_get(obj, "attempt"));
        assert_true(attempt >= 1 && attempt <= N_THREADS);
        per_thread[attempt - 1]++;
        json_decref(obj);
        line += n + 1;
    }
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(per_thread[i], N_LINES);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_escaping, setup),
        cmocka_unit_test_setup(test_fields, setup),
        cmocka_unit_test_setup(test_level_gating, setup),
        cmocka_unit_test_setup(test_long_message, setup),
        cmocka_unit_test_setup(test_text_format, setup),
        cmocka_unit_test_setup(test_time, setup),
        cmocka_unit_test_setup(test_threads, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
