/* The input of the fuzz targets that read three strings: A \0 B \0 C. */
#ifndef FUZZ_INPUT_H
#define FUZZ_INPUT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Copies data with three NULs appended and points s[0], s[1] and s[2] at its first three
 * NUL-terminated strings (each strlen stops inside the copy; the ones the input lacks are
 * empty). Returns the copy, to be freed; NULL when out of memory. */
static inline char *fuzz_three_strings(const uint8_t *data, size_t size, const char *s[3])
{
    char *buf = malloc(size + 3);
    if (!buf)
        return NULL;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = '\0';
    s[0] = buf;
    s[1] = s[0] + strlen(s[0]) + 1;
    s[2] = s[1] + strlen(s[1]) + 1;
    return buf;
}

#endif
