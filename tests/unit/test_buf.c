/* Unit tests for config/buf.c: the growable buffer keeps every byte across growth, stays
 * NUL-terminated, and hands its text over once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fq_buf.h"

static void test_grows_and_keeps_bytes(void **state)
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

static void test_empty_take_is_empty_string(void **state)
{
    (void)state;
    fq_buf_t b = {0};
    size_t len = 7;
    char *text = fq_buf_take(&b, &len);
    assert_non_null(text);
    assert_string_equal(text, "");
    assert_int_equal(len, 0);
    free(text);
}

static void test_oom_take_is_null(void **state)
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
        cmocka_unit_test(test_grows_and_keeps_bytes),
        cmocka_unit_test(test_empty_take_is_empty_string),
        cmocka_unit_test(test_oom_take_is_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
