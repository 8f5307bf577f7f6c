/* The producer's spool: accepted items in a temporary file, deduplicated by a hash set of
 * their keys whose entries point back into the file (see fq_input.h for the memory budget). */
#include "spool_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPOOL_LINE_MAX (FQ_PLATFORM_MAX + FQ_CODE_MAX + FQ_VIDEO_URL_MAX + 8)
#define SET_MIN_BITS   14

/* One entry of the dedupe set: the key's 64-bit hash and where its record is in the spool. */
typedef struct set_slot {
    uint64_t hash;
    uint64_t offset1; /* offset + 1; 0 = empty */
} set_slot_t;

struct fq_spool {
    FILE *fp;
    size_t count;
    uint64_t end;    /* bytes written */
    set_slot_t *set; /* dedupe: open addressing, linear probing */
    size_t set_cap;  /* 2^set_bits */
    unsigned set_bits;
    size_t set_used;
    char line[SPOOL_LINE_MAX];
};

fq_spool_t *spool_new(void)
{
    fq_spool_t *spool = calloc(1, sizeof(*spool));
    if (!spool)
        return NULL;
    spool->fp = tmpfile();
    if (!spool->fp) {
        int e = errno;
        free(spool);
        errno = e;
        return NULL;
    }
    return spool;
}

uint64_t spool_key_hash(const char *platform, const char *code)
{
    /* FNV-1a over "platform\tcode", then a final mix so low and high bits both vary. */
    uint64_t h = UINT64_C(1469598103934665603);
    for (const char *p = platform; *p; p++)
        h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
    h = (h ^ '\t') * UINT64_C(1099511628211);
    for (const char *p = code; *p; p++)
        h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    return h;
}

/* Reads the spool record at offset into spool->line (pread: the write position is untouched). */
static int spool_read_at(fq_spool_t *spool, uint64_t offset)
{
    if (fflush(spool->fp) != 0)
        return -1;
    ssize_t n = pread(fileno(spool->fp), spool->line, sizeof(spool->line) - 1, (off_t)offset);
    if (n <= 0)
        return -1;
    spool->line[n] = '\0';
    return 0;
}

/* Home slot: the top bits of the hash, so doubling the table splits each run in order. */
static size_t set_home(uint64_t hash, unsigned bits)
{
    return (size_t)(hash >> (64 - bits));
}

static void set_put(set_slot_t *set, unsigned bits, uint64_t hash, uint64_t offset)
{
    size_t mask = ((size_t)1 << bits) - 1;
    for (size_t i = set_home(hash, bits);; i = (i + 1) & mask) {
        if (!set[i].offset1) {
            set[i].hash = hash;
            set[i].offset1 = offset + 1;
            return;
        }
    }
}

/* Doubles the set; the full hashes are kept, so nothing is re-read. */
static int set_grow(fq_spool_t *spool)
{
    unsigned bits = spool->set_cap ? spool->set_bits + 1 : SET_MIN_BITS;
    size_t cap = (size_t)1 << bits;
    set_slot_t *set = calloc(cap, sizeof(*set));
    if (!set)
        return -1;
    for (size_t i = 0; i < spool->set_cap; i++)
        if (spool->set[i].offset1)
            set_put(set, bits, spool->set[i].hash, spool->set[i].offset1 - 1);
    free(spool->set);
    spool->set = set;
    spool->set_cap = cap;
    spool->set_bits = bits;
    return 0;
}

/* 1 when platform:code is already spooled, 0 when it was added, -1 on error. */
static int set_check_add(fq_spool_t *spool, const fq_item_t *item, uint64_t hash, uint64_t offset)
{
    if ((spool->set_used + 1) * 4 > spool->set_cap * 3 && set_grow(spool) != 0)
        return -1;
    size_t plen = strlen(item->platform), clen = strlen(item->code);
    size_t mask = spool->set_cap - 1;
    for (size_t i = set_home(hash, spool->set_bits);; i = (i + 1) & mask) {
        const set_slot_t *slot = &spool->set[i];
        if (!slot->offset1)
            break;
        if (slot->hash != hash)
            continue;
        /* Same 64-bit hash: compare the real key in the spool, so a collision never drops an
         * item. Real duplicates are the only frequent case here. */
        if (spool_read_at(spool, slot->offset1 - 1) != 0)
            return -1;
        const char *l = spool->line;
        if (strncmp(l, item->platform, plen) == 0 && l[plen] == '\t' &&
            strncmp(l + plen + 1, item->code, clen) == 0 && l[plen + 1 + clen] == '\t')
            return 1;
    }
    set_put(spool->set, spool->set_bits, hash, offset);
    spool->set_used++;
    return 0;
}

int spool_add(fq_spool_t *spool, const fq_item_t *item, uint64_t hash, bool dedupe)
{
    if (dedupe) {
        int dup = set_check_add(spool, item, hash, spool->end);
        if (dup != 0)
            return dup;
    }
    FILE *fp = spool->fp;
    size_t plen = strlen(item->platform), clen = strlen(item->code);
    size_t ulen = item->video_url ? strlen(item->video_url) : 0;
    if (fwrite(item->platform, 1, plen, fp) != plen || putc_unlocked('\t', fp) == EOF ||
        fwrite(item->code, 1, clen, fp) != clen || putc_unlocked('\t', fp) == EOF ||
        (ulen && fwrite(item->video_url, 1, ulen, fp) != ulen) || putc_unlocked('\n', fp) == EOF)
        return -1;
    spool->end += plen + clen + ulen + 3;
    spool->count++;
    return 0;
}

void spool_prefetch(const fq_spool_t *spool, uint64_t hash)
{
    if (spool->set)
        __builtin_prefetch(&spool->set[set_home(hash, spool->set_bits)]);
}

void spool_drop_set(fq_spool_t *spool)
{
    free(spool->set);
    spool->set = NULL;
    spool->set_cap = spool->set_used = 0;
}

int fq_spool_next(fq_spool_t *spool, fq_item_t *item)
{
    memset(item, 0, sizeof(*item));
    if (!fgets(spool->line, sizeof(spool->line), spool->fp))
        return ferror(spool->fp) ? -1 : 0;
    char *nl = strchr(spool->line, '\n');
    char *tab1 = strchr(spool->line, '\t');
    char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
    if (!nl || !tab2)
        return -1;
    *nl = *tab1 = *tab2 = '\0';
    size_t plen = (size_t)(tab1 - spool->line), clen = (size_t)(tab2 - tab1 - 1);
    if (plen > FQ_PLATFORM_MAX || clen > FQ_CODE_MAX)
        return -1;
    memcpy(item->platform, spool->line, plen + 1);
    memcpy(item->code, tab1 + 1, clen + 1);
    if (tab2[1] && !(item->video_url = strdup(tab2 + 1)))
        return -1;
    return 1;
}

int fq_spool_rewind(fq_spool_t *spool)
{
    if (fflush(spool->fp) != 0)
        return -1;
    return fseeko(spool->fp, 0, SEEK_SET);
}

size_t fq_spool_count(const fq_spool_t *spool)
{
    return spool->count;
}

void fq_spool_destroy(fq_spool_t *spool)
{
    if (!spool)
        return;
    if (spool->fp)
        fclose(spool->fp);
    free(spool->set);
    free(spool);
}
