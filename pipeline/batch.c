/* frameq batches (DESIGN §2): the batch envelope decoded strictly (items through
 * item_from_json), the producer's encoder, batch ids (libuuid). */
#include "fq_item.h"
#include "item_int.h"

#include "fq_buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uuid/uuid.h>

/* A UUID string as libuuid reads it: 36 characters, 8-4-4-4-12 hex digits. */
static bool batch_id_valid(const json_t *id)
{
    uuid_t uu;
    return json_is_string(id) && json_string_length(id) == 36 &&
           strlen(json_string_value(id)) == 36 && uuid_parse(json_string_value(id), uu) == 0;
}

/* n digits at s into *out; false when any is not a digit. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool fq_rfc3339_valid(const char *s)
{
    /* date-time = full-date "T" partial-time time-offset (RFC 3339 section 5.6);
     * "T" and "Z" may be lower case (section 5.6 NOTE). */
    int y, mo, d, h, mi, sec;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
        s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return false;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || sec > 60)
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        const char *frac = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == frac)
            return false;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return true;
    int oh, om;
    return (*p == '+' || *p == '-') && digits(p + 1, 2, &oh) && p[3] == ':' &&
           digits(p + 4, 2, &om) && p[6] == '\0' && oh <= 23 && om <= 59;
}

/* Checks the envelope DESIGN §2 gives a batch: schema, an items array of 1 to
 * FQ_BATCH_MAX_ITEMS, and batch_id / enqueued_at well formed when present. */
static fq_error_t *check_envelope(const json_t *root, json_t **items_out)
{
    if (!json_is_object(root)) {
        return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED,
                            "not a batch: expected a JSON object, got %s", fq_json_type_name(root));
    }
    json_t *schema = json_object_get(root, "schema");
    if (!json_is_string(schema) || strcmp(json_string_value(schema), FQ_BATCH_SCHEMA) != 0 ||
        json_string_length(schema) != strlen(FQ_BATCH_SCHEMA)) {
        return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED,
                            "not a batch: \"schema\" is %s, expected \"%s\"",
                            !schema                  ? "missing"
                            : json_is_string(schema) ? "another version"
                                                     : "not a string",
                            FQ_BATCH_SCHEMA);
    }
    json_t *items = json_object_get(root, "items");
    if (!json_is_array(items)) {
        return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED,
                            "not a batch: \"items\" is %s, expected an array",
                            items ? fq_json_type_name(items) : "missing");
    }

    *items_out = items;
    size_t n = json_array_size(items);
    if (n == 0 || n > FQ_BATCH_MAX_ITEMS) {
        return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED,
                            "not a batch: \"items\" holds %zu items, expected 1 to %d", n,
                            FQ_BATCH_MAX_ITEMS);
    }
    /* batch_id and enqueued_at may be absent (other producers); present, they must be what
     * DESIGN §2 says, or the message is not one of ours. */
    json_t *id = json_object_get(root, "batch_id");
    if (id && !batch_id_valid(id)) {
        return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED,
                            "not a batch: \"batch_id\" is %s, expected a UUID",
                            json_is_string(id) ? "not a UUID" : fq_json_type_name(id));
    }
    json_t *at = json_object_get(root, "enqueued_at");
    if (at && !(json_is_string(at) && fq_rfc3339_valid(json_string_value(at)) &&
                strlen(json_string_value(at)) == json_string_length(at))) {
        return fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_MALFORMED,
                            "not a batch: \"enqueued_at\" is %s, expected an RFC 3339 time",
                            json_is_string(at) ? "not an RFC 3339 time" : fq_json_type_name(at));
    }

    return NULL;
}

fq_error_t *fq_batch_decode(const void *buf, size_t len, fq_batch_t **batch)
{
    *batch = NULL;
    fq_batch_t *b = NULL;
    json_t *root = NULL;
    fq_error_t *err = item_parse_bounded(buf, len, FQ_STAGE_MESSAGE, &root);
    if (err)
        goto done;
    json_t *items = NULL;
    err = check_envelope(root, &items);
    if (err)
        goto done;
    size_t n = json_array_size(items);
    json_t *id = json_object_get(root, "batch_id"), *at = json_object_get(root, "enqueued_at");

    b = calloc(1, sizeof(*b));
    if (!b)
        goto oom;
    if (id)
        snprintf(b->batch_id, sizeof(b->batch_id), "%s", json_string_value(id));
    if (at && json_string_length(at) < sizeof(b->enqueued_at))
        snprintf(b->enqueued_at, sizeof(b->enqueued_at), "%s", json_string_value(at));
    b->entries = calloc(n, sizeof(*b->entries));
    if (!b->entries)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        char prefix[40];
        snprintf(prefix, sizeof(prefix), "items[%zu].", i);
        b->entries[i].err = item_from_json(json_array_get(items, i), prefix, &b->entries[i].item);
        b->count = i + 1;
        if (b->entries[i].err && fq_error_class(b->entries[i].err) == FQ_CLASS_OUTAGE)
            goto oom;
    }
    *batch = b;
    b = NULL;
    goto done;
oom:
    err = fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_OUTAGE, "out of memory decoding a batch");
done:
    fq_batch_destroy(b);
    json_decref(root);
    return err;
}

void fq_batch_destroy(fq_batch_t *batch)
{
    if (!batch)
        return;
    for (size_t i = 0; i < batch->count; i++) {
        fq_item_clear(&batch->entries[i].item);
        fq_error_destroy(batch->entries[i].err);
    }
    free(batch->entries);
    free(batch);
}

/* The encoder is written by hand (the producer encodes ~100k batches per million items;
 * building jansson trees for them would dominate its profile). */

/* A JSON string literal: quotes, backslashes and control bytes escaped; other bytes as given
 * (validated items hold ASCII only). */
static void put_json_string(fq_buf_t *sb, const char *s)
{
    fq_buf_put(sb, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        fq_buf_put(sb, run, (size_t)(s - run));
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof(esc), "\\%c", c);
        else
            snprintf(esc, sizeof(esc), "\\u%04x", c);
        fq_buf_puts(sb, esc);
        run = s + 1;
    }
    fq_buf_put(sb, run, (size_t)(s - run));
    fq_buf_put(sb, "\"", 1);
}

char *fq_batch_encode(const char *batch_id, const char *enqueued_at, const fq_item_t *items,
                      size_t count, size_t *len)
{
    fq_buf_t sb = {0};
    fq_buf_reserve(&sb, 96 + count * 48);
    fq_buf_puts(&sb, "{\"schema\":\"" FQ_BATCH_SCHEMA "\",\"batch_id\":");
    put_json_string(&sb, batch_id ? batch_id : "");
    fq_buf_puts(&sb, ",\"enqueued_at\":");
    put_json_string(&sb, enqueued_at ? enqueued_at : "");
    fq_buf_puts(&sb, ",\"items\":[");
    for (size_t i = 0; i < count; i++) {
        fq_buf_puts(&sb, i ? ",{\"platform\":" : "{\"platform\":");
        put_json_string(&sb, items[i].platform);
        fq_buf_puts(&sb, ",\"code\":");
        put_json_string(&sb, items[i].code);
        if (items[i].video_url) {
            fq_buf_puts(&sb, ",\"video_url\":");
            put_json_string(&sb, items[i].video_url);
        }
        fq_buf_put(&sb, "}", 1);
    }
    fq_buf_puts(&sb, "]}");
    return fq_buf_take(&sb, len);
}

void fq_uuid4(char out[37])
{
    uuid_t uu;
    uuid_generate_random(uu); /* libuuid: getrandom(2), or /dev/urandom without it */
    uuid_unparse_lower(uu, out);
}
