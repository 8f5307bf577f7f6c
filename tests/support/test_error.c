/* Checks on fq_error_t results; see fq_test_error.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "fq_test_error.h"

void fq_test_assert_ok_at(fq_error_t *err, const char *what, const char *file, int line)
{
    if (!err)
        return;
    char msg[1200];
    snprintf(msg, sizeof(msg), "%s", fq_error_message(err));
    fq_error_destroy(err);
    print_error("ERROR: %s: unexpected error: %s\n", what, msg);
    _fail(file, line);
}

void fq_test_assert_error_at(const fq_error_t *err, int stage, fq_class_t klass, int domain,
                             int code, const char *file, int line)
{
    if (!err) {
        print_error("ERROR: expected a %s error, got success\n", fq_class_name(klass));
        _fail(file, line);
        return;
    }
    if ((stage == FQ_TEST_ANY || fq_error_stage(err) == (fq_stage_t)stage) &&
        fq_error_class(err) == klass &&
        (domain == FQ_TEST_ANY || fq_error_domain(err) == (fq_error_domain_t)domain) &&
        (code == FQ_TEST_ANY || fq_error_code(err) == code))
        return;
    char want_code[48] = "any";
    if (domain != FQ_TEST_ANY || code != FQ_TEST_ANY)
        snprintf(want_code, sizeof(want_code), "%s %d",
                 domain == FQ_TEST_ANY ? "any" : fq_error_domain_name((fq_error_domain_t)domain),
                 code);
    print_error(
        "ERROR: expected a %s error at stage %s with code %s; got %s at %s, code %s %d: "
        "%s\n",
        fq_class_name(klass), stage == FQ_TEST_ANY ? "any" : fq_stage_name((fq_stage_t)stage),
        want_code, fq_class_name(fq_error_class(err)), fq_stage_name(fq_error_stage(err)),
        fq_error_domain_name(fq_error_domain(err)), fq_error_code(err), fq_error_message(err));
    _fail(file, line);
}
