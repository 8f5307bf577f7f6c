/* libFuzzer target: the KEY=VALUE configuration file parser on arbitrary bytes. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fq_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-config", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    fq_config_t *cfg = fq_config_new();
    char errstr[512] = "";
    if (fq_config_load_file(cfg, path, errstr, sizeof(errstr)) != 0 && errstr[0] == '\0')
        abort(); /* every failure must say where and why */
    fq_config_destroy(cfg);
    close(fd);
    return 0;
}
