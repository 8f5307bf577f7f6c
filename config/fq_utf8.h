/* UTF-8 validation shared by the log writer and the store: one reading of RFC 3629. */
#ifndef FQ_UTF8_H
#define FQ_UTF8_H

#include <stddef.h>

/** @brief Length (1..4) of the valid UTF-8 sequence at p, or 0 when the bytes there are not
 *  one (overlong forms, surrogates, code points above U+10FFFF, a cut sequence: the
 *  terminating NUL is never a continuation byte). */
size_t fq_utf8_len(const unsigned char *p);

#endif /* FQ_UTF8_H */
