/**
 * @file fq_test_error.h
 * @brief Checks on fq_error_t results shared by the tests; a failure names the caller's file and
 *        line and quotes the error's message.
 */
#ifndef FQ_TEST_ERROR_H
#define FQ_TEST_ERROR_H

#include <limits.h>

#include "fq_error.h"

/** Matches any stage, domain or code in fq_test_assert_error. */
#define FQ_TEST_ANY INT_MIN

/** @brief Fails the current test when err (an expression, quoted in the failure) is an error. */
#define fq_test_assert_ok(err) fq_test_assert_ok_at((err), #err, __FILE__, __LINE__)

/** @brief Fails the current test unless err is an error of this stage, class, code domain and
 *         code (FQ_TEST_ANY for any but the class); err stays the caller's to destroy. */
#define fq_test_assert_error(err, stage, klass, domain, code)                                      \
    fq_test_assert_error_at((err), (stage), (klass), (domain), (code), __FILE__, __LINE__)

/** @brief See fq_test_assert_ok; destroys err. */
void fq_test_assert_ok_at(fq_error_t *err, const char *what, const char *file, int line);

/** @brief See fq_test_assert_error. */
void fq_test_assert_error_at(const fq_error_t *err, int stage, fq_class_t klass, int domain,
                             int code, const char *file, int line);

#endif /* FQ_TEST_ERROR_H */
