/* libFuzzer target: header values of any bytes are read safely, and setting a header twice
 * replaces it (headers must not grow across attempts). Input: NAME \0 VALUE \0 VALUE2. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fq_headers.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t header_count(rd_kafka_headers_t *hdrs, const char *name)
{
    size_t n = 0;
    const void *v;
    size_t len;
    while (rd_kafka_header_get(hdrs, n, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR)
        n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s[3];
    char *buf = fuzz_three_strings(data, size, s);
    if (!buf)
        return 0;
    const char *name = s[0], *value = s[1], *value2 = s[2];
    if (!*name)
        name = FQ_HDR_ATTEMPT;

    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
    /* Raw bytes as a foreign producer might send them (binary, not NUL-terminated). */
    rd_kafka_header_add(hdrs, name, -1, data, (ssize_t)size);
    char out[64];
    (void)fq_headers_get(hdrs, name, out, sizeof(out));
    if (strlen(out) >= sizeof(out))
        abort();
    int64_t n = fq_headers_get_int(hdrs, name, -7);
    if (n < 0 && n != -7)
        abort();
    if (fq_headers_set(hdrs, name, value) || fq_headers_set(hdrs, name, value2))
        abort();
    if (header_count(hdrs, name) != 1)
        abort();
    if (!fq_headers_get(hdrs, name, out, sizeof(out)) || strncmp(out, value2, sizeof(out) - 1))
        abort();
    rd_kafka_headers_destroy(hdrs);
    free(buf);
    return 0;
}
