/* frameq items and batches: strict validation and the JSON codec (DESIGN §2).
 *
 * Everything here reads bytes that anybody with access to the topic can write, so decoding
 * is bounded before jansson sees the input: size (FQ_BATCH_MAX_BYTES), nesting depth and the
 * number of JSON values are checked by a single pre-scan, so neither the parser's recursion
 * nor its allocations can be driven without bound. Batches (the envelope, the encoder, batch
 * ids) are in batch.c.
 */
#include "fq_item.h"
#include "item_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* A batch is an object holding an array of objects: depth 3. Unknown item fields may nest a
 * little (forward compatibility) but nothing legitimate comes near 32. */
#define ITEM_MAX_DEPTH 32
/* BATCH_SIZE is at most 10000 items of a few values each; this bounds jansson's allocations
 * for hostile input of many tiny values ("[1,1,1,...]") to a few tens of MiB. */
#define ITEM_MAX_VALUES (256 * 1024)

#define PLATFORM_CHARSET "[a-z0-9_-]"
#define CODE_CHARSET     "[A-Za-z0-9_-]"

static int platform_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static int code_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static int url_char_ok(unsigned char c)
{
    /* Printable ASCII without space: a URL needs no more, and control bytes or spaces could
     * split a header or a log line. */
    return c > 0x20 && c < 0x7f;
}

/* Describes one byte for an error message: 'x' for printable ASCII, 0xNN otherwise (a NUL,
 * a control byte or part of a UTF-8 sequence would be unreadable or invisible). */
static void describe_char(unsigned char c, char *buf, size_t buf_size)
{
    if (c == '\'' || c == '\\')
        snprintf(buf, buf_size, "'\\%c'", c);
    else if (c >= 0x20 && c < 0x7f)
        snprintf(buf, buf_size, "'%c'", c);
    else
        snprintf(buf, buf_size, "0x%02x", c);
}

/* Checks one string field of len bytes (may contain NUL when decoded with JSON_ALLOW_NUL).
 * prefix is "" or "items[3]."; the message names the field, the offset and the character. */
static fq_error_t *check_field(const char *prefix, const char *field, const char *s, size_t len,
                               size_t max, int (*ok)(unsigned char), const char *charset)
{
    if (len == 0)
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                            "%s%s: empty, must be 1-%zu characters of %s", prefix, field, max,
                            charset);
    if (len > max)
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                            "%s%s: %zu characters, at most %zu", prefix, field, len, max);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!ok(c)) {
            char desc[16];
            describe_char(c, desc, sizeof(desc));
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                                "%s%s: character %s at offset %zu is not allowed (%s)", prefix,
                                field, desc, i, charset);
        }
    }
    return NULL;
}

/* Whether s is 1..max characters, each accepted by ok. */
static bool chars_valid(const char *s, size_t max, int (*ok)(unsigned char))
{
    if (!s)
        return false;
    size_t len = strnlen(s, max + 1);
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!ok((unsigned char)s[i]))
            return false;
    return true;
}

bool fq_item_platform_valid(const char *platform)
{
    return chars_valid(platform, FQ_PLATFORM_MAX, platform_char_ok);
}

bool fq_item_code_valid(const char *code)
{
    return chars_valid(code, FQ_CODE_MAX, code_char_ok);
}

const char *fq_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* Pre-scan: bounds depth and the number of values before the parser runs. Strings are skipped
 * (with their escapes) so brackets inside them do not count. A truncated or otherwise broken
 * document passes here and is rejected by jansson with its line and column. */
static fq_error_t *prescan(const unsigned char *p, size_t len)
{
    int depth = 0;
    size_t values = 0;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        switch (c) {
        case '"':
            in_string = 1;
            break;
        case '[':
        case '{':
            if (++depth > ITEM_MAX_DEPTH)
                return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED,
                                    "nested deeper than %d levels at byte %zu", ITEM_MAX_DEPTH, i);
            values++;
            break;
        case ']':
        case '}':
            depth--;
            break;
        case ',':
            values++;
            break;
        default:
            break;
        }
        if (values > ITEM_MAX_VALUES)
            return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED, "more than %d JSON values",
                                ITEM_MAX_VALUES);
    }
    return NULL;
}

/* Bounded parse shared by item and batch decoding. NUL inside strings is let through the
 * parser on purpose so validation can name the field and offset instead of a parse error. */
fq_error_t *item_parse_bounded(const void *buf, size_t len, fq_stage_t stage, json_t **out)
{
    *out = NULL;
    if (!buf && len)
        return fq_error_new(stage, FQ_CLASS_MALFORMED, "no data");
    if (len > FQ_BATCH_MAX_BYTES)
        return fq_error_new(stage, FQ_CLASS_MALFORMED, "message of %zu bytes, at most %d", len,
                            FQ_BATCH_MAX_BYTES);
    if (len == 0)
        return fq_error_new(stage, FQ_CLASS_MALFORMED, "empty message");
    fq_error_t *err = prescan(buf, len);
    if (err) {
        /* prescan reports stage message; keep the caller's stage. */
        fq_error_t *e2 = fq_error_new(stage, FQ_CLASS_MALFORMED, "%s", fq_error_message(err));
        fq_error_destroy(err);
        return e2;
    }
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return fq_error_new(stage, FQ_CLASS_MALFORMED, "not valid JSON: %s at line %d column %d",
                            jerr.text, jerr.line, jerr.column);
    *out = root;
    return NULL;
}

/* Fills item from a JSON value, validating every field. prefix is "" or "items[3].";
 * item->json is always set when memory allows. On error the valid fields are filled. */
fq_error_t *item_from_json(const json_t *obj, const char *prefix, fq_item_t *item)
{
    memset(item, 0, sizeof(*item));
    item->json = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!item->json)
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_OUTAGE, "out of memory");

    /* "items[3]." -> "items[3]" for whole-item messages. */
    char where[48];
    size_t plen = strlen(prefix);
    snprintf(where, sizeof(where), "%.*s", plen ? (int)(plen - 1) : 0, prefix);

    if (!json_is_object(obj))
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "%s%sexpected an object, got %s",
                            where, plen ? ": " : "", fq_json_type_name(obj));

    static const char *const required[] = {"platform", "code"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        json_t *v = json_object_get(obj, required[i]);
        if (!v)
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "%s%smissing \"%s\"", where,
                                plen ? ": " : "", required[i]);
        if (!json_is_string(v))
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                                "%s%s: expected a string, got %s", prefix, required[i],
                                fq_json_type_name(v));
    }

    json_t *platform = json_object_get(obj, "platform");
    fq_error_t *err =
        check_field(prefix, "platform", json_string_value(platform), json_string_length(platform),
                    FQ_PLATFORM_MAX, platform_char_ok, PLATFORM_CHARSET);
    if (err)
        return err;
    memcpy(item->platform, json_string_value(platform), json_string_length(platform) + 1);

    json_t *code = json_object_get(obj, "code");
    err = check_field(prefix, "code", json_string_value(code), json_string_length(code),
                      FQ_CODE_MAX, code_char_ok, CODE_CHARSET);
    if (err)
        return err;
    memcpy(item->code, json_string_value(code), json_string_length(code) + 1);

    json_t *url = json_object_get(obj, "video_url");
    if (url && !json_is_null(url)) {
        if (!json_is_string(url))
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                                "%svideo_url: expected a string, got %s", prefix,
                                fq_json_type_name(url));
        err = check_field(prefix, "video_url", json_string_value(url), json_string_length(url),
                          FQ_VIDEO_URL_MAX, url_char_ok, "printable ASCII, no spaces");
        if (err)
            return err;
        item->video_url = strdup(json_string_value(url));
        if (!item->video_url)
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_OUTAGE, "out of memory");
    }
    return NULL;
}

fq_error_t *fq_item_decode(const void *buf, size_t len, fq_item_t *item)
{
    memset(item, 0, sizeof(*item));
    json_t *root = NULL;
    fq_error_t *err = item_parse_bounded(buf, len, FQ_STAGE_VALIDATE, &root);
    if (err)
        goto done;
    if (!json_is_object(root)) {
        err = fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_MALFORMED, "expected a JSON object, got %s",
                           fq_json_type_name(root));
        goto done;
    }
    err = item_from_json(root, "", item);
done:
    /* On error the caller owns nothing: it routes the raw bytes it already has. */
    if (err)
        fq_item_clear(item);
    json_decref(root);
    return err;
}

fq_error_t *fq_item_validate(const fq_item_t *item)
{
    fq_error_t *err =
        check_field("", "platform", item->platform, strnlen(item->platform, sizeof(item->platform)),
                    FQ_PLATFORM_MAX, platform_char_ok, PLATFORM_CHARSET);
    if (err)
        return err;
    err = check_field("", "code", item->code, strnlen(item->code, sizeof(item->code)), FQ_CODE_MAX,
                      code_char_ok, CODE_CHARSET);
    if (err)
        return err;
    if (item->video_url)
        err = check_field("", "video_url", item->video_url,
                          strnlen(item->video_url, FQ_VIDEO_URL_MAX + 1), FQ_VIDEO_URL_MAX,
                          url_char_ok, "printable ASCII, no spaces");
    return err;
}

int fq_item_encode(fq_item_t *item)
{
    json_t *obj = json_object();
    int rc = -1;
    if (!obj)
        goto done;
    if (json_object_set_new(obj, "platform", json_string_nocheck(item->platform)) ||
        json_object_set_new(obj, "code", json_string_nocheck(item->code)))
        goto done;
    if (item->video_url && json_object_set_new(obj, "video_url", json_string(item->video_url)))
        goto done;
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s)
        goto done;
    free(item->json);
    item->json = s;
    rc = 0;
done:
    json_decref(obj);
    return rc;
}

void fq_item_key(const fq_item_t *item, char *key, size_t key_size)
{
    snprintf(key, key_size, "%s:%s", item->platform, item->code);
}

int fq_item_copy(fq_item_t *dst, const fq_item_t *src)
{
    fq_item_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    memcpy(tmp.platform, src->platform, sizeof(tmp.platform));
    memcpy(tmp.code, src->code, sizeof(tmp.code));
    if (src->video_url && !(tmp.video_url = strdup(src->video_url)))
        goto fail;
    if (src->json && !(tmp.json = strdup(src->json)))
        goto fail;
    *dst = tmp;
    return 0;
fail:
    fq_item_clear(&tmp);
    return -1;
}

void fq_item_clear(fq_item_t *item)
{
    if (!item)
        return;
    free(item->video_url);
    free(item->json);
    memset(item, 0, sizeof(*item));
}
