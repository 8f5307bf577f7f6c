/* Unit tests for pipeline/error.c: a code always travels with its domain, so a reader tells an
 * errno from a CURLcode or an HTTP status without guessing from the number. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fq_error.h"

static void test_new_has_no_code(void **state)
{
    (void)state;
    fq_error_t *err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "x %d", 1);
    assert_int_equal(fq_error_domain(err), FQ_ERROR_DOMAIN_NONE);
    assert_int_equal(fq_error_code(err), 0);
    assert_string_equal(fq_error_message(err), "x 1");
    fq_error_destroy(err);
}

static void test_code_keeps_its_domain(void **state)
{
    (void)state;
    static const struct {
        fq_error_domain_t domain;
        int code;
        const char *name;
    } cases[] = {
        {FQ_ERROR_DOMAIN_ERRNO, 13, "errno"},          {FQ_ERROR_DOMAIN_CURL, 7, "curl"},
        {FQ_ERROR_DOMAIN_HTTP, 404, "http"},           {FQ_ERROR_DOMAIN_AV, -1094995529, "av"},
        {FQ_ERROR_DOMAIN_SQLSTATE, 12345, "sqlstate"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_error_t *err = fq_error_new(FQ_STAGE_STORE, FQ_CLASS_PERMANENT, "e");
        fq_error_set_code(err, cases[i].domain, cases[i].code);
        assert_int_equal(fq_error_domain(err), cases[i].domain);
        assert_int_equal(fq_error_code(err), cases[i].code);
        assert_string_equal(fq_error_domain_name(fq_error_domain(err)), cases[i].name);
        fq_error_destroy(err);
    }
}

static void test_none_or_bad_domain_clears_code(void **state)
{
    (void)state;
    fq_error_t *err = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "e");
    fq_error_set_code(err, FQ_ERROR_DOMAIN_HTTP, 500);
    fq_error_set_code(err, FQ_ERROR_DOMAIN_NONE, 7);
    assert_int_equal(fq_error_domain(err), FQ_ERROR_DOMAIN_NONE);
    assert_int_equal(fq_error_code(err), 0);
    fq_error_set_code(err, (fq_error_domain_t)99, 7);
    assert_int_equal(fq_error_domain(err), FQ_ERROR_DOMAIN_NONE);
    assert_int_equal(fq_error_code(err), 0);
    assert_string_equal(fq_error_domain_name((fq_error_domain_t)99), "");
    fq_error_destroy(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_has_no_code),
        cmocka_unit_test(test_code_keeps_its_domain),
        cmocka_unit_test(test_none_or_bad_domain_clears_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
