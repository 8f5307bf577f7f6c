/* UTF-8 validation (fq_utf8.h). */
#include "fq_utf8.h"

/* The well-formed multi-byte sequences of Unicode's table 3-7 (RFC 3629): by lead byte, the
 * length and the range of the second byte (later bytes are always 80..BF). The narrowed
 * ranges exclude overlong forms (E0, F0), surrogates (ED) and code points above U+10FFFF
 * (F4). */
static const struct {
    unsigned char lead_lo, lead_hi, len, second_lo, second_hi;
} sequences[] = {
    {0xC2, 0xDF, 2, 0x80, 0xBF}, {0xE0, 0xE0, 3, 0xA0, 0xBF}, {0xE1, 0xEC, 3, 0x80, 0xBF},
    {0xED, 0xED, 3, 0x80, 0x9F}, {0xEE, 0xEF, 3, 0x80, 0xBF}, {0xF0, 0xF0, 4, 0x90, 0xBF},
    {0xF1, 0xF3, 4, 0x80, 0xBF}, {0xF4, 0xF4, 4, 0x80, 0x8F},
};

size_t fq_utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    for (size_t s = 0; s < sizeof(sequences) / sizeof(sequences[0]); s++) {
        if (p[0] < sequences[s].lead_lo || p[0] > sequences[s].lead_hi)
            continue;
        if (p[1] < sequences[s].second_lo || p[1] > sequences[s].second_hi)
            return 0;
        for (size_t i = 2; i < sequences[s].len; i++)
            if (p[i] < 0x80 || p[i] > 0xBF) /* also stops at the terminating NUL */
                return 0;
        return sequences[s].len;
    }
    return 0;
}
