/* Captures stderr into a temporary file (see fq_test_capture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include "fq_test_capture.h"

void fq_test_capture_start(fq_test_capture_t *c)
{
    fflush(stderr);
    c->file = tmpfile();
    assert_non_null(c->file);
    c->saved_fd = dup(STDERR_FILENO);
    assert_true(c->saved_fd >= 0);
    assert_true(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

char *fq_test_capture_text(const fq_test_capture_t *c)
{
    /* fq_log writes with write(2), behind stdio's back: ask the kernel for the size. */
    off_t end = lseek(fileno(c->file), 0, SEEK_END);
    assert_true(end >= 0);
    char *text = calloc(1, (size_t)end + 1);
    assert_non_null(text);
    assert_int_equal(pread(fileno(c->file), text, (size_t)end, 0), end);
    return text;
}

char *fq_test_capture_end(fq_test_capture_t *c)
{
    fflush(stderr);
    assert_true(dup2(c->saved_fd, STDERR_FILENO) >= 0);
    close(c->saved_fd);
    char *text = fq_test_capture_text(c);
    fclose(c->file);
    c->file = NULL;
    return text;
}
