/* Unit tests of the store's pure logic: SQLSTATE classification, error codes, message
 * cleaning (one line, no password), the frames JSON, version formatting, argument checks.
 * No server is needed: the helpers are declared in fq_store_internal.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "fq_store_internal.h"

static void test_kind_for(void **state)
{
    (void)state;
    static const struct {
        const char *sqlstate;
        bool conn_ok;
        fq_store_kind_t want;
    } cases[] = {
        {NULL, false, FQ_STORE_BROKEN},      /* connection dropped, no SQLSTATE */
        {"", false, FQ_STORE_BROKEN},        /* same */
        {"23505", false, FQ_STORE_BROKEN},   /* whatever the state, a dead connection is broken */
        {NULL, true, FQ_STORE_FAILED},       /* client-side failure on a healthy connection */
        {"", true, FQ_STORE_FAILED},         /* same */
        {"2350", true, FQ_STORE_FAILED},     /* malformed SQLSTATE */
        {"08006", true, FQ_STORE_BROKEN},    /* connection_failure */
        {"08001", true, FQ_STORE_BROKEN},    /* unable to connect */
        {"57P01", true, FQ_STORE_BROKEN},    /* admin_shutdown (pg_terminate_backend) */
        {"57P02", true, FQ_STORE_BROKEN},    /* crash_shutdown */
        {"57P03", true, FQ_STORE_BROKEN},    /* cannot_connect_now */
        {"25006", true, FQ_STORE_BROKEN},    /* read-only: standby after failover */
        {"26000", true, FQ_STORE_BROKEN},    /* prepared statement vanished */
        {"40001", true, FQ_STORE_TRANSIENT}, /* serialization_failure */
        {"40P01", true, FQ_STORE_TRANSIENT}, /* deadlock_detected */
        {"53100", true, FQ_STORE_OUTAGE},    /* disk_full */
        {"53300", true, FQ_STORE_OUTAGE},    /* too_many_connections */
        {"58030", true, FQ_STORE_OUTAGE},    /* io_error */
        {"57P04", true, FQ_STORE_OUTAGE},    /* database_dropped */
        {"57014", true, FQ_STORE_FAILED},    /* query_canceled: statement timeout, this item */
        {"23505", true, FQ_STORE_FAILED},    /* unique_violation */
        {"23503", true, FQ_STORE_FAILED},    /* foreign_key_violation */
        {"23514", true, FQ_STORE_FAILED},    /* check_violation */
        {"22P02", true, FQ_STORE_FAILED},    /* invalid_text_representation */
        {"42P01", true, FQ_STORE_OUTAGE},    /* undefined_table: schema not migrated */
        {"42703", true, FQ_STORE_OUTAGE},    /* undefined_column: schema older than the code */
        {"42501", true, FQ_STORE_OUTAGE},    /* insufficient_privilege: grants */
        {"28P01", true, FQ_STORE_OUTAGE},    /* invalid_password */
        {"3D000", true, FQ_STORE_OUTAGE},    /* invalid_catalog_name: no such database */
        {"22001", true, FQ_STORE_FAILED},    /* string_data_right_truncation: a value */
        {"23502", true, FQ_STORE_FAILED},    /* not_null_violation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_store_kind_t got = fq_store_kind_for(cases[i].sqlstate, cases[i].conn_ok);
        if (got != cases[i].want)
            fail_msg("case %zu (%s, conn_ok=%d): got %d, want %d", i,
                     cases[i].sqlstate ? cases[i].sqlstate : "NULL", cases[i].conn_ok, got,
                     cases[i].want);
    }
}

static void test_sqlstate_code(void **state)
{
    (void)state;
    /* PostgreSQL's MAKE_SQLSTATE: sum of ((c - '0') & 0x3F) << (6 * position). */
    static const struct {
        const char *sqlstate;
        int want;
    } cases[] = {
        {"00000", 0},
        {"23505", 2 + (3 << 6) + (5 << 12) + (0 << 18) + (5 << 24)},
        {"23503", 2 + (3 << 6) + (5 << 12) + (0 << 18) + (3 << 24)},
        {"57P01", 5 + (7 << 6) + ((('P' - '0') & 0x3F) << 12) + (0 << 18) + (1 << 24)},
        {NULL, 0},
        {"", 0},
        {"123", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(fq_store_sqlstate_code(cases[i].sqlstate), cases[i].want);
    assert_int_not_equal(fq_store_sqlstate_code("23505"), fq_store_sqlstate_code("23503"));
}

static void test_clean_message(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *password;
        const char *password_raw;
        const char *want;
    } cases[] = {
        {"connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the "
         "server running on that host and accepting TCP/IP connections?\n",
         NULL, NULL,
         "connection to server at \"127.0.0.1\", port 1 failed: Connection refused Is the server "
         "running on that host and accepting TCP/IP connections?"},
        {"FATAL: password authentication failed for user \"frameq\"\n", "s3cret", NULL,
         "FATAL: password authentication failed for user \"frameq\""},
        {"echo s3cret and s3cret again", "s3cret", NULL, "echo *** and *** again"},
        {"raw p%40ss decoded p@ss", "p@ss", "p%40ss", "raw *** decoded ***"},
        {"short xy password", "xy", NULL, "short ** password"},
        {"trailing spaces   \n\n", NULL, NULL, "trailing spaces"},
        {"", "secret", NULL, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", cases[i].in);
        fq_store_clean_message(buf, cases[i].password, cases[i].password_raw);
        assert_string_equal(buf, cases[i].want);
    }
}

static void test_uri_password(void **state)
{
    (void)state;
    static const struct {
        const char *conninfo;
        const char *want; /* NULL: none */
    } cases[] = {
        {"postgresql://frameq:frameq-local@127.0.0.1:55432/frameq", "frameq-local"},
        {"postgres://u:p%40ss@h/db", "p%40ss"},
        {"postgresql://u:a:b@h/db", "a:b"},
        {"postgresql://u@h/db", NULL},
        {"postgresql://u:@h/db", NULL},
        {"postgresql://h/db?user=x", NULL},
        {"postgresql:///frameq", NULL},
        {"postgresql://h/db?x=a@b:c", NULL}, /* '@' after the path is not userinfo */
        {"host=h password=secret", NULL},    /* key=value: PQconninfoParse handles it */
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = fq_store_uri_password(cases[i].conninfo);
        if (cases[i].want)
            assert_non_null(got), assert_string_equal(got, cases[i].want);
        else if (got)
            fail_msg("case %zu (%s): got '%s', want none", i, cases[i].conninfo, got);
        free(got);
    }
}

/* The frames JSON read back by jansson: values and awkward URLs arrive intact. */
static void test_frames_json(void **state)
{
    (void)state;
    char url0[] = "s3://frameq-frames/ig/ABC/0.jpg";
    char url1[] = "a,b{c}d e \"quote\" back\\slash NULL caf\xc3\xa9";
    const fq_stored_frame_t frames[] = {
        {.index = 0, .pts_ms = 0, .width = 320, .height = 180, .bytes = 1000, .url = url0},
        {.index = 7,
         .pts_ms = 9007199254740993LL,
         .width = 1,
         .height = 2,
         .bytes = 3,
         .url = url1},
        {.index = 8, .pts_ms = -1, .width = 0, .height = 0, .bytes = 0, .url = NULL},
    };
    char why[128] = "";
    char *text = fq_store_frames_json(frames, 3, why, sizeof(why));
    assert_non_null(text);
    json_error_t jerr;
    json_t *arr = json_loads(text, 0, &jerr);
    assert_non_null(arr);
    assert_int_equal(json_array_size(arr), 3);
    for (size_t i = 0; i < 3; i++) {
        json_int_t idx, pts_ms, width, height, bytes;
        json_t *url = NULL;
        assert_int_equal(json_unpack(json_array_get(arr, i), "{s:I, s:I, s:o, s:I, s:I, s:I !}",
                                     "idx", &idx, "pts_ms", &pts_ms, "url", &url, "width", &width,
                                     "height", &height, "bytes", &bytes),
                         0);
        assert_int_equal(idx, frames[i].index);
        assert_int_equal(pts_ms, frames[i].pts_ms);
        assert_int_equal(width, frames[i].width);
        assert_int_equal(height, frames[i].height);
        assert_int_equal(bytes, frames[i].bytes);
        if (frames[i].url)
            assert_string_equal(json_string_value(url), frames[i].url);
        else
            assert_true(json_is_null(url));
    }
    json_decref(arr);
    free(text);

    text = fq_store_frames_json(NULL, 0, why, sizeof(why));
    assert_string_equal(text, "[]");
    free(text);

    /* A URL that is not UTF-8 cannot travel as JSON: refused, and the error says which. */
    char bad[] = "file:///x/\xff.jpg";
    const fq_stored_frame_t one = {.index = 4, .url = bad};
    assert_null(fq_store_frames_json(&one, 1, why, sizeof(why)));
    assert_string_equal(why, "frame 4: url is not valid UTF-8");
}

static void test_utf8_clean(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"plain ascii", "plain ascii"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"bytes \xff\xfe here", "bytes ?? here"},
        {"cut at 1 KiB \xe2\x82", "cut at 1 KiB ??"}, /* a character cut in half */
        {"\xf0\x9f\x98", "???"},                      /* same, 4-byte */
        {"overlong \xc0\xaf", "overlong ??"},         /* '/' encoded in 2 bytes */
        {"overlong \xe0\x80\xaf", "overlong ???"},
        {"surrogate \xed\xa0\x80", "surrogate ???"},
        {"too big \xf4\x90\x80\x80", "too big ????"}, /* above U+10FFFF */
        {"lone \x80 continuation", "lone ? continuation"},
        {"\xc3", "?"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = fq_store_utf8_clean(cases[i].in);
        assert_non_null(got);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
    assert_null(fq_store_utf8_clean(NULL));
}

static void test_format_version(void **state)
{
    (void)state;
    static const struct {
        int v;
        const char *want;
    } cases[] = {
        {150004, "15.4"}, {150020, "15.20"}, {170000, "17.0"}, {90605, "9.6.5"}, {100001, "10.1"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[32];
        fq_store_format_version(cases[i].v, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].want);
    }
    char want[32];
    fq_store_format_version(PQlibVersion(), want, sizeof(want));
    assert_string_equal(fq_store_libpq_version(), want);
}

static void test_new_reads_password(void **state)
{
    (void)state;
    static const struct {
        const char *conninfo;
        const char *password;
        bool bad;
    } cases[] = {
        {"host=127.0.0.1 port=1 user=u password=hunter22 dbname=d", "hunter22", false},
        {"postgresql://u:p%40ss@127.0.0.1:1/d", "p@ss", false},
        {"postgresql:///frameq", NULL, false},
        {"host=x password=hunter22 oops", NULL, true}, /* no '=' after oops */
        {"postgresql://u:pw@h:1/d?nosuchoption=1", NULL, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_store_t *store = fq_store_new(cases[i].conninfo);
        assert_non_null(store);
        assert_false(fq_store_connected(store)); /* lazy: nothing connects before the first call */
        assert_int_equal(fq_store_conninfo_bad(store), cases[i].bad);
        if (cases[i].password) {
            assert_non_null(fq_store_password(store));
            assert_string_equal(fq_store_password(store), cases[i].password);
        } else {
            assert_null(fq_store_password(store));
        }
        fq_store_destroy(store);
    }
    fq_store_destroy(NULL);
}

/* A conninfo libpq cannot parse gives an outage whose message quotes none of it. */
static void test_bad_conninfo_is_outage_without_secret(void **state)
{
    (void)state;
    fq_store_t *store = fq_store_new("host=127.0.0.1 password=hunter22 oops");
    assert_non_null(store);
    fq_error_t *err = fq_store_ping(store);
    assert_non_null(err);
    assert_int_equal(fq_error_class(err), FQ_CLASS_OUTAGE);
    assert_int_equal(fq_error_stage(err), FQ_STAGE_STORE);
    assert_non_null(strstr(fq_error_message(err), "PostgreSQL unreachable: "));
    assert_null(strstr(fq_error_message(err), "hunter22"));
    fq_error_destroy(err);
    fq_store_destroy(store);
}

/* Wrong statuses are refused before any connection is attempted (the conninfo points
 * nowhere, so reaching the server would give an outage instead). */
static void test_status_checked_before_connecting(void **state)
{
    (void)state;
    fq_store_t *store = fq_store_new("host=127.0.0.1 port=1 connect_timeout=1");
    fq_item_t item = {.platform = "test", .code = "C1"};
    static const char *const bad_error_status[] = {"done", "queued", "processing", "bogus", ""};
    for (size_t i = 0; i < sizeof(bad_error_status) / sizeof(bad_error_status[0]); i++) {
        fq_error_t *err = fq_store_record_error(store, &item, 1, NULL, bad_error_status[i], NULL);
        assert_non_null(err);
        assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
        assert_int_equal(fq_error_stage(err), FQ_STAGE_STORE);
        fq_error_destroy(err);
    }
    fq_error_t *err = fq_store_record_error(store, &item, 1, NULL, NULL, NULL);
    assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
    fq_error_destroy(err);
    static const char *const bad_status[] = {"bogus", "DONE", "", "queued "};
    for (size_t i = 0; i < sizeof(bad_status) / sizeof(bad_status[0]); i++) {
        err = fq_store_set_status(store, "test", "C1", bad_status[i]);
        assert_non_null(err);
        assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
        fq_error_destroy(err);
    }
    assert_false(fq_store_connected(store));
    fq_store_destroy(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_for),
        cmocka_unit_test(test_sqlstate_code),
        cmocka_unit_test(test_clean_message),
        cmocka_unit_test(test_uri_password),
        cmocka_unit_test(test_frames_json),
        cmocka_unit_test(test_utf8_clean),
        cmocka_unit_test(test_format_version),
        cmocka_unit_test(test_new_reads_password),
        cmocka_unit_test(test_bad_conninfo_is_outage_without_secret),
        cmocka_unit_test(test_status_checked_before_connecting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
