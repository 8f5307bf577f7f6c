/* UTF-8 as RFC 3629 defines it: no overlong forms, no surrogates, nothing above U+10FFFF. */
#ifndef FQ_UTF8_H
#define FQ_UTF8_H

#include <stddef.h>

/** @brief Length (1..4) of the valid UTF-8 sequence at p, or 0 when the bytes there are not
 *  one. Reads no further than a NUL (which is not a continuation byte). */
size_t fq_utf8_len(const unsigned char *p);

#endif
