#include "fq_utf8.h"

/* RFC 3629 §4, row by row: the lead bytes of a multi-byte sequence, its length, and the range
 * of its second byte, which carries every rule (E0 and F0 exclude overlong forms, ED the
 * surrogates, F4 what lies above U+10FFFF). Every later byte is 80..BF. */
static const struct {
    unsigned char first, last, len, lo, hi;
} leads[] = {
    {0xC2, 0xDF, 2, 0x80, 0xBF}, {0xE0, 0xE0, 3, 0xA0, 0xBF}, {0xE1, 0xEC, 3, 0x80, 0xBF},
    {0xED, 0xED, 3, 0x80, 0x9F}, {0xEE, 0xEF, 3, 0x80, 0xBF}, {0xF0, 0xF0, 4, 0x90, 0xBF},
    {0xF1, 0xF3, 4, 0x80, 0xBF}, {0xF4, 0xF4, 4, 0x80, 0x8F},
};

size_t fq_utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    for (size_t k = 0; k < sizeof(leads) / sizeof(leads[0]); k++) {
        if (p[0] < leads[k].first || p[0] > leads[k].last)
            continue;
        if (p[1] < leads[k].lo || p[1] > leads[k].hi)
            return 0;
        for (size_t i = 2; i < leads[k].len; i++)
            if (p[i] < 0x80 || p[i] > 0xBF)
                return 0;
        return leads[k].len;
    }
    return 0; /* 80..C1 and F5..FF lead nothing */
}
