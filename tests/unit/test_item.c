/* Unit tests for the item/batch codec (pipeline/item.c): strict validation with messages that
 * name field, index and offset; bounded decoding of hostile input; encode/decode round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fq_item.h"

/* One item-decoding case: input JSON, expected class (-1 = valid) and a substring the error
 * message must contain. */
typedef struct item_case {
    const char *name;
    const char *json;
    size_t len; /* 0 = strlen(json) */
    int klass;  /* -1 valid, else fq_class_t */
    const char *msg;
} item_case_t;

static const item_case_t item_cases[] = {
    {"minimal", "{\"platform\":\"instagram\",\"code\":\"ABC123\"}", 0, -1, NULL},
    {"all chars", "{\"platform\":\"a-z_0-9\",\"code\":\"AZaz09_-\"}", 0, -1, NULL},
    {"video_url", "{\"platform\":\"tiktok\",\"code\":\"x\",\"video_url\":\"https://h/v.mp4\"}", 0,
     -1, NULL},
    {"unknown field ignored", "{\"platform\":\"p\",\"code\":\"c\",\"extra\":[1,{\"a\":2}]}", 0, -1,
     NULL},
    {"missing platform", "{\"code\":\"c\"}", 0, FQ_CLASS_PERMANENT, "missing \"platform\""},
    {"missing code", "{\"platform\":\"p\"}", 0, FQ_CLASS_PERMANENT, "missing \"code\""},
    {"platform number", "{\"platform\":7,\"code\":\"c\"}", 0, FQ_CLASS_PERMANENT,
     "platform: expected a string, got number"},
    {"code null", "{\"platform\":\"p\",\"code\":null}", 0, FQ_CLASS_PERMANENT,
     "code: expected a string, got null"},
    {"code object", "{\"platform\":\"p\",\"code\":{}}", 0, FQ_CLASS_PERMANENT,
     "code: expected a string, got object"},
    {"empty platform", "{\"platform\":\"\",\"code\":\"c\"}", 0, FQ_CLASS_PERMANENT,
     "platform: empty"},
    {"empty code", "{\"platform\":\"p\",\"code\":\"\"}", 0, FQ_CLASS_PERMANENT, "code: empty"},
    {"uppercase platform", "{\"platform\":\"Instagram\",\"code\":\"c\"}", 0, FQ_CLASS_PERMANENT,
     "platform: character 'I' at offset 0 is not allowed ([a-z0-9_-])"},
    {"slash", "{\"platform\":\"p\",\"code\":\"ab/c\"}", 0, FQ_CLASS_PERMANENT,
     "code: character '/' at offset 2 is not allowed ([A-Za-z0-9_-])"},
    {"dot dot slash", "{\"platform\":\"p\",\"code\":\"../etc\"}", 0, FQ_CLASS_PERMANENT,
     "code: character '.' at offset 0"},
    {"percent-encoded dot", "{\"platform\":\"p\",\"code\":\"%2e%2e\"}", 0, FQ_CLASS_PERMANENT,
     "code: character '%' at offset 0"},
    {"NUL inside", "{\"platform\":\"p\",\"code\":\"ab\\u0000cd\"}", 0, FQ_CLASS_PERMANENT,
     "code: character 0x00 at offset 2"},
    {"SQL", "{\"platform\":\"p\",\"code\":\"x'; DROP TABLE extraction_items;--\"}", 0,
     FQ_CLASS_PERMANENT, "code: character '\\'' at offset 1"},
    {"space", "{\"platform\":\"p\",\"code\":\"a b\"}", 0, FQ_CLASS_PERMANENT,
     "code: character ' ' at offset 1"},
    {"non-ASCII", "{\"platform\":\"p\",\"code\":\"caf\xc3\xa9\"}", 0, FQ_CLASS_PERMANENT,
     "code: character 0xc3 at offset 3"},
    {"platform 33 chars", "{\"platform\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"code\":\"c\"}", 0,
     FQ_CLASS_PERMANENT, "platform: 33 characters, at most 32"},
    {"video_url with space", "{\"platform\":\"p\",\"code\":\"c\",\"video_url\":\"http://h/a b\"}",
     0, FQ_CLASS_PERMANENT, "video_url: character ' ' at offset 10"},
    {"video_url number", "{\"platform\":\"p\",\"code\":\"c\",\"video_url\":1}", 0,
     FQ_CLASS_PERMANENT, "video_url: expected a string"},
    {"not JSON", "hello", 0, FQ_CLASS_MALFORMED, "not valid JSON"},
    {"array", "[1,2]", 0, FQ_CLASS_MALFORMED, "expected a JSON object, got array"},
    {"empty input", "", 0, FQ_CLASS_MALFORMED, "empty"},
    {"duplicate key", "{\"platform\":\"p\",\"code\":\"c\",\"code\":\"d\"}", 0, FQ_CLASS_MALFORMED,
     "duplicate"},
    {"raw NUL byte", "{\"platform\":\"p\",\0\"code\":\"c\"}",
     sizeof("{\"platform\":\"p\",\0\"code\":\"c\"}") - 1, FQ_CLASS_MALFORMED, "not valid JSON"},
};

static void test_item_decode_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(item_cases) / sizeof(item_cases[0]); i++) {
        const item_case_t *c = &item_cases[i];
        size_t len = c->len ? c->len : strlen(c->json);
        fq_item_t item;
        fq_error_t *err = fq_item_decode(c->json, len, &item);
        if (c->klass < 0) {
            if (err)
                fail_msg("%s: unexpected error: %s", c->name, fq_error_message(err));
            assert_non_null(item.json);
            fq_item_clear(&item);
            continue;
        }
        if (!err)
            fail_msg("%s: accepted, expected an error containing \"%s\"", c->name, c->msg);
        if ((int)fq_error_class(err) != c->klass || !strstr(fq_error_message(err), c->msg))
            fail_msg("%s: got %s \"%s\", expected %s containing \"%s\"", c->name,
                     fq_class_name(fq_error_class(err)), fq_error_message(err),
                     fq_class_name((fq_class_t)c->klass), c->msg);
        assert_int_equal(fq_error_stage(err), FQ_STAGE_VALIDATE);
        /* On error nothing is owned by the caller. */
        assert_null(item.json);
        assert_null(item.video_url);
        fq_error_destroy(err);
    }
}

static void test_item_fields_and_json(void **state)
{
    (void)state;
    const char *in =
        "{\"code\":\"X_1\",\"zzz\":true,\"platform\":\"ig\",\"video_url\":\"s3://b/k\"}";
    fq_item_t item;
    fq_error_t *err = fq_item_decode(in, strlen(in), &item);
    assert_null(err);
    assert_string_equal(item.platform, "ig");
    assert_string_equal(item.code, "X_1");
    assert_string_equal(item.video_url, "s3://b/k");
    /* As received: key order kept, unknown field kept, compact. */
    assert_string_equal(item.json, in);
    char key[FQ_ITEM_KEY_MAX];
    fq_item_key(&item, key, sizeof(key));
    assert_string_equal(key, "ig:X_1");

    fq_item_t copy;
    assert_int_equal(fq_item_copy(&copy, &item), 0);
    assert_string_equal(copy.json, item.json);
    assert_ptr_not_equal(copy.json, item.json);
    assert_string_equal(copy.video_url, "s3://b/k");
    fq_item_clear(&item);
    assert_null(item.json);
    fq_item_clear(&copy);
    fq_item_clear(NULL);
}

static void test_code_length_limits(void **state)
{
    (void)state;
    char code[FQ_CODE_MAX + 2];
    char json[512];
    for (size_t n = FQ_CODE_MAX; n <= FQ_CODE_MAX + 1; n++) {
        memset(code, 'a', n);
        code[n] = '\0';
        snprintf(json, sizeof(json), "{\"platform\":\"p\",\"code\":\"%s\"}", code);
        fq_item_t item;
        fq_error_t *err = fq_item_decode(json, strlen(json), &item);
        if (n == FQ_CODE_MAX) {
            assert_null(err);
            assert_int_equal(strlen(item.code), FQ_CODE_MAX);
            fq_item_clear(&item);
        } else {
            assert_non_null(err);
            assert_string_equal(fq_error_message(err), "code: 129 characters, at most 128");
            fq_error_destroy(err);
        }
        assert_int_equal(fq_item_code_valid(code), n == FQ_CODE_MAX);
    }
}

static void test_valid_predicates(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int platform, code;
    } cases[] = {
        {"instagram", 1, 1}, {"Instagram", 0, 1}, {"a-b_c9", 1, 1}, {"", 0, 0},
        {"a/b", 0, 0},       {"..", 0, 0},        {"a b", 0, 0},    {"%2e", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(fq_item_platform_valid(cases[i].s), cases[i].platform);
        assert_int_equal(fq_item_code_valid(cases[i].s), cases[i].code);
    }
    assert_int_equal(fq_item_platform_valid(NULL), 0);
    assert_int_equal(fq_item_platform_valid("abcdefghijklmnopqrstuvwxyz012345"), 1); /* 32 */
    assert_int_equal(fq_item_platform_valid("abcdefghijklmnopqrstuvwxyz0123456"), 0);
}

static void test_item_validate_and_encode(void **state)
{
    (void)state;
    fq_item_t item;
    memset(&item, 0, sizeof(item));
    strcpy(item.platform, "yt");
    strcpy(item.code, "abc");
    assert_null(fq_item_validate(&item));
    item.video_url = strdup("https://h/x?a=\"b\"");
    assert_null(fq_item_validate(&item));
    assert_int_equal(fq_item_encode(&item), 0);
    assert_string_equal(
        item.json,
        "{\"platform\":\"yt\",\"code\":\"abc\",\"video_url\":\"https://h/x?a=\\\"b\\\"\"}");
    fq_item_t back;
    assert_null(fq_item_decode(item.json, strlen(item.json), &back));
    assert_string_equal(back.video_url, item.video_url);
    fq_item_clear(&back);

    strcpy(item.code, "a/b");
    fq_error_t *err = fq_item_validate(&item);
    assert_non_null(err);
    assert_non_null(strstr(fq_error_message(err), "code: character '/' at offset 1"));
    assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
    fq_error_destroy(err);
    item.code[0] = '\0';
    err = fq_item_validate(&item);
    assert_non_null(err);
    fq_error_destroy(err);
    fq_item_clear(&item);
}

/* Batch-level cases: whole-message verdicts. */
typedef struct batch_case {
    const char *name;
    const char *json;
    int malformed;   /* 1 = fq_batch_decode must fail malformed */
    const char *msg; /* substring of the error */
    size_t count;    /* entries when decoded */
    size_t invalid;  /* entries with err */
} batch_case_t;

#define UUID1 "6f1c0c8e-6a53-4f0e-9a38-1b2d3c4d5e6f"
#define B(items)                                                                                   \
    "{\"schema\":\"frameq.batch.v1\",\"batch_id\":\"" UUID1 "\",\"enqueued_at\":"                  \
    "\"2026-01-01T00:00:00Z\",\"items\":" items "}"
#define ONE          "[{\"platform\":\"p\",\"code\":\"a\"}]"
#define HEAD(fields) "{\"schema\":\"frameq.batch.v1\"," fields ",\"items\":" ONE "}"

static const batch_case_t batch_cases[] = {
    {"two valid", B("[{\"platform\":\"p\",\"code\":\"a\"},{\"platform\":\"p\",\"code\":\"b\"}]"), 0,
     NULL, 2, 0},
    {"zero items", B("[]"), 1, "\"items\" holds 0 items, expected 1 to 10000", 0, 0},
    {"no batch_id nor enqueued_at (other producers)",
     "{\"schema\":\"frameq.batch.v1\",\"items\":" ONE "}", 0, NULL, 1, 0},
    {"upper-case UUID, offset time",
     HEAD("\"batch_id\":\"6F1C0C8E-6A53-4F0E-9A38-1B2D3C4D5E6F\","
          "\"enqueued_at\":\"2024-02-29t23:59:60.5+05:30\""),
     0, NULL, 1, 0},
    {"batch_id not a UUID", HEAD("\"batch_id\":\"x\""), 1, "\"batch_id\" is not a UUID", 0, 0},
    {"batch_id UUID with a tail", HEAD("\"batch_id\":\"" UUID1 "x\""), 1, "not a UUID", 0, 0},
    {"batch_id UUID with NUL", HEAD("\"batch_id\":\"6f1c0c8e-6a53-4f0e-9a38-1b2d3c4d5e6\\u0000\""),
     1, "not a UUID", 0, 0},
    {"batch_id number", HEAD("\"batch_id\":7"), 1, "\"batch_id\" is number", 0, 0},
    {"batch_id null", HEAD("\"batch_id\":null"), 1, "\"batch_id\" is null", 0, 0},
    {"enqueued_at not a time", HEAD("\"enqueued_at\":\"t\""), 1,
     "\"enqueued_at\" is not an RFC 3339 time", 0, 0},
    {"enqueued_at without zone", HEAD("\"enqueued_at\":\"2026-01-01T00:00:00\""), 1, "RFC 3339", 0,
     0},
    {"enqueued_at 30 February", HEAD("\"enqueued_at\":\"2026-02-30T00:00:00Z\""), 1, "RFC 3339", 0,
     0},
    {"enqueued_at 29 February of a common year", HEAD("\"enqueued_at\":\"2025-02-29T00:00:00Z\""),
     1, "RFC 3339", 0, 0},
    {"enqueued_at hour 24", HEAD("\"enqueued_at\":\"2026-01-01T24:00:00Z\""), 1, "RFC 3339", 0, 0},
    {"enqueued_at empty fraction", HEAD("\"enqueued_at\":\"2026-01-01T00:00:00.Z\""), 1, "RFC 3339",
     0, 0},
    {"enqueued_at trailing text", HEAD("\"enqueued_at\":\"2026-01-01T00:00:00Z \""), 1, "RFC 3339",
     0, 0},
    {"enqueued_at bad offset", HEAD("\"enqueued_at\":\"2026-01-01T00:00:00+5:30\""), 1, "RFC 3339",
     0, 0},
    {"enqueued_at number", HEAD("\"enqueued_at\":1700000000"), 1, "\"enqueued_at\" is number", 0,
     0},
    {"mixed",
     B("[{\"platform\":\"p\",\"code\":\"a\"},{\"platform\":\"p\",\"code\":\"a/"
       "b\"},3,{\"code\":\"x\"}]"),
     0, NULL, 4, 3},
    {"not JSON", "not json", 1, "not valid JSON", 0, 0},
    {"truncated", "{\"schema\":\"frameq.batch.v1\",\"items\":[{\"platform\":\"p\",", 1,
     "not valid JSON", 0, 0},
    {"array", "[{\"platform\":\"p\",\"code\":\"a\"}]", 1, "expected a JSON object, got array", 0,
     0},
    {"wrong schema", "{\"schema\":\"frameq.batch.v2\",\"items\":[]}", 1, "\"schema\"", 0, 0},
    {"no schema", "{\"items\":[]}", 1, "\"schema\" is missing", 0, 0},
    {"schema number", "{\"schema\":1,\"items\":[]}", 1, "\"schema\" is not a string", 0, 0},
    {"items object", "{\"schema\":\"frameq.batch.v1\",\"items\":{}}", 1,
     "\"items\" is object, expected an array", 0, 0},
    {"items missing", "{\"schema\":\"frameq.batch.v1\"}", 1, "\"items\" is missing", 0, 0},
    {"duplicate keys", "{\"schema\":\"frameq.batch.v1\",\"items\":[],\"items\":[]}", 1, "duplicate",
     0, 0},
    {"empty", "", 1, "empty", 0, 0},
    {"brackets inside strings do not count",
     B("[{\"platform\":\"p\",\"code\":\"a\",\"x\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[["
       "\"}]"),
     0, NULL, 1, 0},
};

static void test_batch_decode_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(batch_cases) / sizeof(batch_cases[0]); i++) {
        const batch_case_t *c = &batch_cases[i];
        fq_batch_t *batch = (fq_batch_t *)0x1;
        fq_error_t *err = fq_batch_decode(c->json, strlen(c->json), &batch);
        if (c->malformed) {
            if (!err)
                fail_msg("%s: accepted, expected malformed \"%s\"", c->name, c->msg);
            if (fq_error_class(err) != FQ_CLASS_MALFORMED ||
                fq_error_stage(err) != FQ_STAGE_MESSAGE || !strstr(fq_error_message(err), c->msg))
                fail_msg("%s: got %s/%s \"%s\", expected message/malformed with \"%s\"", c->name,
                         fq_stage_name(fq_error_stage(err)), fq_class_name(fq_error_class(err)),
                         fq_error_message(err), c->msg);
            assert_null(batch);
            fq_error_destroy(err);
            continue;
        }
        if (err)
            fail_msg("%s: unexpected error %s", c->name, fq_error_message(err));
        assert_int_equal(batch->count, c->count);
        size_t invalid = 0;
        for (size_t j = 0; j < batch->count; j++) {
            assert_non_null(batch->entries[j].item.json);
            if (batch->entries[j].err) {
                invalid++;
                assert_int_equal(fq_error_class(batch->entries[j].err), FQ_CLASS_PERMANENT);
                assert_int_equal(fq_error_stage(batch->entries[j].err), FQ_STAGE_VALIDATE);
            }
        }
        assert_int_equal(invalid, c->invalid);
        fq_batch_destroy(batch);
    }
}

static void test_batch_entry_messages(void **state)
{
    (void)state;
    const char *in =
        B("[{\"platform\":\"p\",\"code\":\"ok\"},{\"platform\":\"p\",\"code\":\"a/b\"},"
          "3,{\"code\":\"x\"},{\"platform\":\"p\",\"code\":\"ab/\"}]");
    fq_batch_t *batch = NULL;
    assert_null(fq_batch_decode(in, strlen(in), &batch));
    assert_string_equal(batch->batch_id, UUID1);
    assert_string_equal(batch->enqueued_at, "2026-01-01T00:00:00Z");
    assert_int_equal(batch->count, 5);
    assert_null(batch->entries[0].err);
    assert_string_equal(batch->entries[0].item.code, "ok");
    assert_string_equal(fq_error_message(batch->entries[1].err),
                        "items[1].code: character '/' at offset 1 is not allowed ([A-Za-z0-9_-])");
    /* the valid field of an invalid item is kept; the invalid one is not */
    assert_string_equal(batch->entries[1].item.platform, "p");
    assert_string_equal(batch->entries[1].item.code, "");
    assert_string_equal(batch->entries[1].item.json, "{\"platform\":\"p\",\"code\":\"a/b\"}");
    assert_string_equal(fq_error_message(batch->entries[2].err),
                        "items[2]: expected an object, got number");
    assert_string_equal(batch->entries[2].item.json, "3");
    assert_string_equal(fq_error_message(batch->entries[3].err), "items[3]: missing \"platform\"");
    assert_string_equal(fq_error_message(batch->entries[4].err),
                        "items[4].code: character '/' at offset 2 is not allowed ([A-Za-z0-9_-])");
    fq_batch_destroy(batch);
    fq_batch_destroy(NULL);
}

/* Builds n copies of open followed by n copies of close (a deep but well-formed document). */
static char *repeat2(char open, char close, size_t n, size_t *len)
{
    char *s = malloc(2 * n + 1);
    assert_non_null(s);
    memset(s, open, n);
    memset(s + n, close, n);
    s[2 * n] = '\0';
    *len = 2 * n;
    return s;
}

static void test_batch_hostile(void **state)
{
    (void)state;
    size_t len;
    fq_batch_t *batch = NULL;

    /* 10k nested arrays: rejected by the pre-scan, not by recursion. */
    char *deep = repeat2('[', ']', 10000, &len);
    fq_error_t *err = fq_batch_decode(deep, len, &batch);
    assert_non_null(err);
    assert_non_null(strstr(fq_error_message(err), "nested deeper than"));
    assert_int_equal(fq_error_class(err), FQ_CLASS_MALFORMED);
    fq_error_destroy(err);
    fq_item_t item;
    err = fq_item_decode(deep, len, &item);
    assert_non_null(err);
    assert_int_equal(fq_error_class(err), FQ_CLASS_MALFORMED);
    fq_error_destroy(err);
    free(deep);

    /* Deep nesting inside an item's unknown field is also bounded. */
    char *nested = malloc(64 * 8 + 256);
    assert_non_null(nested);
    strcpy(nested,
           "{\"schema\":\"frameq.batch.v1\",\"items\":[{\"platform\":\"p\",\"code\":\"c\",\"x\":");
    for (int i = 0; i < 40; i++)
        strcat(nested, "[");
    for (int i = 0; i < 40; i++)
        strcat(nested, "]");
    strcat(nested, "}]}");
    err = fq_batch_decode(nested, strlen(nested), &batch);
    assert_non_null(err);
    assert_int_equal(fq_error_class(err), FQ_CLASS_MALFORMED);
    fq_error_destroy(err);
    free(nested);

    /* 9 MB message: rejected before parsing (content irrelevant, so spaces). */
    size_t big = 9u * 1024 * 1024;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    err = fq_batch_decode(huge, big, &batch);
    assert_non_null(err);
    assert_non_null(strstr(fq_error_message(err), "bytes, at most 8388608"));
    assert_null(batch);
    fq_error_destroy(err);
    free(huge);

    /* 10000 items is a batch, 10001 is not (DESIGN §2: 1 to 10,000 items). */
    for (size_t count = 10000; count <= 10001; count++) {
        char *items = malloc(count * 32 + 64);
        assert_non_null(items);
        size_t w = (size_t)sprintf(items, "{\"schema\":\"frameq.batch.v1\",\"items\":[");
        for (size_t i = 0; i < count; i++)
            w += (size_t)sprintf(items + w, "%s{\"platform\":\"p\",\"code\":\"c%zu\"}",
                                 i ? "," : "", i);
        w += (size_t)sprintf(items + w, "]}");
        err = fq_batch_decode(items, w, &batch);
        if (count == 10000) {
            assert_null(err);
            assert_int_equal(batch->count, 10000);
            fq_batch_destroy(batch);
        } else {
            assert_non_null(err);
            assert_non_null(
                strstr(fq_error_message(err), "holds 10001 items, expected 1 to 10000"));
            assert_int_equal(fq_error_class(err), FQ_CLASS_MALFORMED);
            fq_error_destroy(err);
        }
        batch = NULL;
        free(items);
    }

    /* Many tiny values within the size limit: bounded too. */
    size_t n = 300 * 1024;
    char *many = malloc(2 * n + 64);
    assert_non_null(many);
    size_t o = (size_t)sprintf(many, "{\"schema\":\"frameq.batch.v1\",\"items\":[");
    for (size_t i = 0; i < n; i++) {
        many[o++] = '1';
        many[o++] = ',';
    }
    o--;
    o += (size_t)sprintf(many + o, "]}");
    err = fq_batch_decode(many, o, &batch);
    assert_non_null(err);
    assert_non_null(strstr(fq_error_message(err), "JSON values"));
    fq_error_destroy(err);
    free(many);

    /* A NULL pointer with a length never crashes. */
    err = fq_batch_decode(NULL, 5, &batch);
    assert_non_null(err);
    fq_error_destroy(err);
}

static void test_batch_round_trip(void **state)
{
    (void)state;
    fq_item_t items[3];
    memset(items, 0, sizeof(items));
    strcpy(items[0].platform, "instagram");
    strcpy(items[0].code, "ABC123");
    strcpy(items[1].platform, "tiktok");
    strcpy(items[1].code, "x-y_z");
    items[1].video_url = strdup("https://cdn.example/a\\b\"c.mp4");
    strcpy(items[2].platform, "yt");
    strcpy(items[2].code, "Q");
    char id[37];
    fq_uuid4(id);
    size_t len = 0;
    char *msg = fq_batch_encode(id, "2026-11-28T15:04:05.123Z", items, 3, &len);
    assert_non_null(msg);
    assert_int_equal(len, strlen(msg));
    assert_non_null(strstr(msg, "{\"schema\":\"frameq.batch.v1\",\"batch_id\":\""));
    fq_batch_t *batch = NULL;
    assert_null(fq_batch_decode(msg, len, &batch));
    assert_string_equal(batch->batch_id, id);
    assert_string_equal(batch->enqueued_at, "2026-11-28T15:04:05.123Z");
    assert_int_equal(batch->count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_null(batch->entries[i].err);
        assert_string_equal(batch->entries[i].item.platform, items[i].platform);
        assert_string_equal(batch->entries[i].item.code, items[i].code);
        if (items[i].video_url)
            assert_string_equal(batch->entries[i].item.video_url, items[i].video_url);
        else
            assert_null(batch->entries[i].item.video_url);
        /* Each entry's json decodes back to the same item (the retry/DLQ value). */
        fq_item_t back;
        const char *j = batch->entries[i].item.json;
        assert_null(fq_item_decode(j, strlen(j), &back));
        assert_string_equal(back.code, items[i].code);
        fq_item_clear(&back);
    }
    fq_batch_destroy(batch);
    free(msg);

    /* The encoder writes what it is given; the decoder says an empty batch is none. */
    msg = fq_batch_encode(id, "2026-11-28T15:04:05Z", items, 0, &len);
    assert_non_null(msg);
    fq_error_t *err = fq_batch_decode(msg, len, &batch);
    assert_non_null(err);
    assert_int_equal(fq_error_class(err), FQ_CLASS_MALFORMED);
    assert_null(batch);
    fq_error_destroy(err);
    free(msg);
    for (size_t i = 0; i < 3; i++)
        fq_item_clear(&items[i]);
}

static void test_uuid4(void **state)
{
    (void)state;
    char a[37], b[37];
    fq_uuid4(a);
    fq_uuid4(b);
    assert_int_equal(strlen(a), 36);
    assert_string_not_equal(a, b);
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(a[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", a[i]));
    }
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_item_decode_table),
        cmocka_unit_test(test_item_fields_and_json),
        cmocka_unit_test(test_code_length_limits),
        cmocka_unit_test(test_valid_predicates),
        cmocka_unit_test(test_item_validate_and_encode),
        cmocka_unit_test(test_batch_decode_table),
        cmocka_unit_test(test_batch_entry_messages),
        cmocka_unit_test(test_batch_hostile),
        cmocka_unit_test(test_batch_round_trip),
        cmocka_unit_test(test_uuid4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
