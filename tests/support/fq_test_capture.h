/**
 * @file fq_test_capture.h
 * @brief Captures what the process writes to stderr (frameq's log lines), for tests that assert
 *        on a log line or wait for one.
 */
#ifndef FQ_TEST_CAPTURE_H
#define FQ_TEST_CAPTURE_H

#include <stdio.h>

typedef struct fq_test_capture {
    FILE *file;
    int saved_fd;
} fq_test_capture_t;

/** @brief From now on stderr goes to a temporary file; fails the test when it cannot. */
void fq_test_capture_start(fq_test_capture_t *c);

/** @brief What was written so far (NUL-terminated; the caller frees); capturing goes on. */
char *fq_test_capture_text(const fq_test_capture_t *c);

/** @brief Restores stderr and returns everything that was written (the caller frees). */
char *fq_test_capture_end(fq_test_capture_t *c);

#endif /* FQ_TEST_CAPTURE_H */
