/* config/base: UTF-8 sequence lengths (RFC 3629's edges, and the C library's decoder), the growable
 * buffer and fq_grow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <locale.h>
#include <string.h>
#include <wchar.h>

#include <cmocka.h>

#include "fq_buf.h"
#include "fq_utf8.h"

static void test_utf8_len(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t want;
    } cases[] = {
        {"a", 1},
        {"\xc3\xa9", 2},         /* é */
        {"\xe2\x82\xac", 3},     /* € */
        {"\xf0\x9f\x98\x80", 4}, /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF, the last code point */
        {"\xed\x9f\xbf", 3},     /* U+D7FF, just below the surrogates */
        {"\xc0\x80", 0},         /* overlong NUL */
        {"\xc1\xbf", 0},         /* overlong */
        {"\xe0\x80\x80", 0},     /* overlong 3-byte */
        {"\xf0\x80\x80\x80", 0}, /* overlong 4-byte */
        {"\xed\xa0\x80", 0},     /* U+D800, a surrogate */
        {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0}, /* no such lead byte */
        {"\x80", 0},             /* a continuation byte alone */
        {"\xe2\x82", 0},         /* cut before its end (the NUL stops it) */
        {"\xe2\x82\x41", 0},     /* ASCII where a continuation belongs */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = fq_utf8_len((const unsigned char *)cases[i].bytes);
        if (got != cases[i].want)
            fail_msg("case %zu: got %zu, want %zu", i, got, cases[i].want);
    }
}

/* Every sequence of a lead byte, any second byte and two later bytes from each side of the
 * continuation range, against the C library's own UTF-8 decoder (mbrtowc in C.UTF-8) held to
 * RFC 3629's last code point: glibc also decodes 4-byte forms above U+10FFFF, which RFC 3629
 * §3 excludes. */
static void test_utf8_len_agrees_with_libc(void **state)
{
    (void)state;
    if (!setlocale(LC_CTYPE, "C.UTF-8"))
        fail_msg("the C.UTF-8 locale is missing");
    static const unsigned char later[] = {0x00, 0x7f, 0x80, 0xbf, 0xc0, 0xff};
    size_t nlater = sizeof(later), compared = 0;
    for (unsigned a = 0x01; a <= 0xff; a++) {
        for (unsigned b = 0x00; b <= 0xff; b++) {
            for (size_t k = 0; k < nlater * nlater; k++) {
                const unsigned char s[5] = {(unsigned char)a, (unsigned char)b, later[k / nlater],
                                            later[k % nlater], 0};
                mbstate_t st;
                memset(&st, 0, sizeof(st));
                wchar_t wc;
                size_t r = mbrtowc(&wc, (const char *)s, 4, &st);
                size_t want = r == (size_t)-1 || r == (size_t)-2 || wc > 0x10ffff ? 0 : r;
                size_t got = fq_utf8_len(s);
                if (got != want)
                    fail_msg("%02x %02x %02x %02x: got %zu, want %zu", s[0], s[1], s[2], s[3], got,
                             want);
                compared++;
            }
        }
    }
    assert_int_equal(compared, 255u * 256u * nlater * nlater);
    setlocale(LC_CTYPE, "C");
}

static void test_buf_grows_and_hands_over(void **state)
{
    (void)state;
    fq_buf_t buf = {0};
    char want[5000];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        char part[8];
        int len = snprintf(part, sizeof(part), "%d,", i % 100);
        fq_buf_put(&buf, part, (size_t)len);
        memcpy(want + n, part, (size_t)len);
        n += (size_t)len;
    }
    want[n] = '\0';
    fq_buf_puts(&buf, "end");
    strcat(want, "end");
    assert_false(buf.oom);
    assert_true(buf.cap > buf.len);
    size_t len = 0;
    char *text = fq_buf_take(&buf, &len);
    assert_non_null(text);
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    free(text);
    /* taken: empty again, and an empty buffer hands over "" */
    assert_null(buf.data);
    assert_int_equal(buf.len, 0);
    len = 7;
    text = fq_buf_take(&buf, &len);
    assert_non_null(text);
    assert_string_equal(text, "");
    assert_int_equal(len, 0);
    free(text);
}

/* Embedded NUL bytes go in as given; the length counts them. */
static void test_buf_binary(void **state)
{
    (void)state;
    fq_buf_t buf = {0};
    fq_buf_put(&buf, "a\0b", 3);
    assert_int_equal(buf.len, 3);
    assert_memory_equal(buf.data, "a\0b", 4);
    free(buf.data);
}

static void test_buf_keeps_bytes_across_growth(void **state)
{
    (void)state;
    fq_buf_t b = {0};
    char want[5000];
    for (size_t i = 0; i < sizeof(want) - 1; i++) {
        want[i] = (char)('a' + i % 26);
        fq_buf_put(&b, &want[i], 1);
    }
    want[sizeof(want) - 1] = '\0';
    fq_buf_puts(&b, "");
    assert_false(b.oom);
    assert_int_equal(b.len, sizeof(want) - 1);
    size_t len = 0;
    char *text = fq_buf_take(&b, &len);
    assert_string_equal(text, want);
    assert_int_equal(len, sizeof(want) - 1);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(text);
}

/* fq_grow: the same array while there is room, then twice the capacity, the elements kept;
 * an impossible size leaves the array and its capacity as they were. */
static void test_grow(void **state)
{
    (void)state;
    int *v = NULL;
    size_t cap = 0, n = 0, grew = 0;
    for (int i = 0; i < 1000; i++) {
        size_t had = cap;
        int *g = fq_grow(v, &cap, n, sizeof(*v), 4);
        assert_non_null(g);
        if (had == n) { /* full: a new capacity, 4 first, then doubled */
            assert_int_equal(cap, had ? 2 * had : 4);
            grew++;
        } else {
            assert_ptr_equal(g, v);
            assert_int_equal(cap, had);
        }
        v = g;
        v[n++] = i;
    }
    assert_int_equal(grew, 9); /* 4, 8, ..., 1024 */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(v[i], i);
    size_t cap_before = cap;
    assert_null(fq_grow(v, &cap, cap, SIZE_MAX / 4, 4)); /* twice cap elements would overflow */
    assert_int_equal(cap, cap_before);
    free(v);
    char *c = NULL;
    size_t ccap = 0;
    c = fq_grow(c, &ccap, 0, 1, 0); /* first 0: one element */
    assert_non_null(c);
    assert_int_equal(ccap, 1);
    free(c);
}

static void test_buf_oom_take(void **state)
{
    (void)state;
    fq_buf_t b = {0};
    fq_buf_puts(&b, "kept");
    b.oom = true; /* as after a failed realloc */
    fq_buf_puts(&b, " ignored");
    assert_int_equal(b.len, 4);
    assert_null(fq_buf_take(&b, NULL));
    assert_null(b.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_len),
        cmocka_unit_test(test_utf8_len_agrees_with_libc),
        cmocka_unit_test(test_buf_grows_and_hands_over),
        cmocka_unit_test(test_buf_binary),
        cmocka_unit_test(test_buf_keeps_bytes_across_growth),
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_buf_oom_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
