/* Helpers for integration tests; see fq_test_env.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "fq_test_env.h"

const char *fq_test_env_require(const char *name)
{
    const char *value = getenv(name);
    if (value != NULL && value[0] != '\0')
        return value;
    /* fail_msg() ends the running test; outside a test it ends the process with an error. */
    fail_msg("environment variable %s is not set: integration tests need the local stack "
             "(run deploy/local/up, then `. .stack/env`, or use tests/run.sh)",
             name);
    return NULL;
}

char *fq_test_unique_name(const char *prefix, char *buf, size_t size)
{
    static atomic_uint counter;
    uint32_t rnd = 0;
    struct timespec now;

    /* getrandom avoids two processes started in the same nanosecond colliding. */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)rand();
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(buf, size, "%s-%d-%lld%03ld-%u-%08x", prefix, (int)getpid(), (long long)now.tv_sec,
             now.tv_nsec / 1000000L, atomic_fetch_add(&counter, 1u) + 1u, rnd);
    return buf;
}

int fq_test_count_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    }
    closedir(d);
    return n;
}

void fq_test_s3_require(void)
{
    fq_test_env_require("S3_ENDPOINT");
    fq_test_env_require("AWS_ACCESS_KEY_ID");
    fq_test_env_require("AWS_SECRET_ACCESS_KEY");
}

void fq_test_s3_settings(fq_config_t *cfg)
{
    cfg->s3_endpoint = getenv("S3_ENDPOINT");
    cfg->s3_region = getenv("S3_REGION") ? getenv("S3_REGION") : "us-east-1";
    cfg->aws_access_key_id = getenv("AWS_ACCESS_KEY_ID");
    cfg->aws_secret_access_key = getenv("AWS_SECRET_ACCESS_KEY");
}
