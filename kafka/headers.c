#include "fq_headers.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

rd_kafka_resp_err_t fq_headers_set(rd_kafka_headers_t *hdrs, const char *name, const char *value)
{
    /* Remove first: headers are replaced, never appended, so they cannot grow across attempts. */
    rd_kafka_resp_err_t err = rd_kafka_header_remove(hdrs, name);
    if (err && err != RD_KAFKA_RESP_ERR__NOENT)
        return err;
    if (!value)
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    return rd_kafka_header_add(hdrs, name, -1, value, -1);
}

rd_kafka_resp_err_t fq_headers_set_int(rd_kafka_headers_t *hdrs, const char *name, int64_t value)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRId64, value);
    return fq_headers_set(hdrs, name, buf);
}

bool fq_headers_get(const rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t buf_size)
{
    const void *value = NULL;
    size_t size = 0;
    if (buf_size)
        buf[0] = '\0';
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    if (!buf_size)
        return true;
    if (!value)
        size = 0;
    if (size >= buf_size)
        size = buf_size - 1;
    memcpy(buf, value, size);
    buf[size] = '\0';
    return true;
}

int64_t fq_headers_get_int(const rd_kafka_headers_t *hdrs, const char *name, int64_t def)
{
    char buf[32];
    if (!fq_headers_get(hdrs, name, buf, sizeof(buf)) || buf[0] < '0' || buf[0] > '9')
        return def;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end != '\0' || v < 0)
        return def;
    return (int64_t)v;
}
