/* Internal to config/: the settings table and the pieces that walk it, shared by
 * config_table.c (the table and lookups), config_value.c (parsing and checking one value),
 * config.c (layers: defaults, files, environment, flags; Kafka properties), config_derive.c
 * (derived defaults) and config_print.c (--print-config, --help, secret masking). Not for
 * other modules: they use fq_config.h. */
#ifndef FQ_CONFIG_INT_H
#define FQ_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "fq_config.h"

/* CMakeLists.txt checks the version of the library it links; this checks the header compiled
 * against (Debian 12's /usr/include holds 2.0.2). GROUP_PROTOCOL=consumer needs 2.12. */
#if RD_KAFKA_VERSION < 0x020c0000
#error "librdkafka >= 2.12 required: build it with deploy/local/librdkafka (README)"
#endif

#define KAFKA_ENV_PREFIX "KAFKA_CONFIG_"

typedef enum param_type {
    P_STRING = 0,
    P_INT,      /* int field */
    P_INT64,    /* int64_t field */
    P_DOUBLE,   /* double field */
    P_BYTES,    /* int64_t field; plain bytes or K/M/G (binary) suffix */
    P_ENUM,     /* int-sized enum field; value is the index in choices */
    P_DURATION, /* int64_t milliseconds; plain ms or ms/s/m/h suffix */
} param_type_t;

enum {
    F_SECRET = 1 << 0,     /* never printed */
    F_NULLABLE = 1 << 1,   /* NULL when unset; an empty value unsets it */
    F_DERIVED = 1 << 2,    /* unset means computed from other settings; empty value unsets it */
    F_URL = 1 << 3,        /* may embed user:password@, masked when printed */
    F_MIN_OPEN = 1 << 4,   /* P_DOUBLE: the minimum itself is excluded (x > min) */
    F_EMPTY_OK = 1 << 5,   /* P_STRING: "" is a meaningful value */
    F_SRC_TPL = 1 << 6,    /* checked as SOURCE_URL_TEMPLATE */
    F_FRAMES_TPL = 1 << 7, /* checked as FRAMES_URL_TEMPLATE */
    F_SCHEMES = 1 << 8,    /* comma list of allowed source schemes */
    F_HOSTS = 1 << 9,      /* comma list of host names */
    F_ADDR = 1 << 10,      /* host:port, "" or "off" */
    F_NAMES = 1 << 11,     /* comma list of FFmpeg names ([a-z0-9_-]), lowercased */
};

typedef struct param {
    const char *name; /* environment variable and file key */
    const char *flag; /* command-line flag */
    param_type_t type;
    size_t offset;   /* of the field in fq_config_t */
    const char *def; /* default as text, parsed like any other value; NULL = unset/derived */
    double min, max; /* numeric range (doubles hold every int64 range used here exactly) */
    unsigned flags;
    const char *const *choices; /* P_ENUM and enumerated P_STRING: NULL-terminated */
    const char *help;
} param_t;

/** The settings, in --help and --print-config order (config_table.c). */
extern const param_t cfg_params[];
extern const size_t cfg_n_params;
/** ALLOWED_SOURCE_SCHEMES' choices. */
extern const char *const cfg_source_schemes[];

struct fq_config_state {
    fq_config_origin_t *origin; /* cfg_n_params entries */
    char **where;               /* cfg_n_params entries: file:line or flag that set it; NULL for
                                   default/derived/env */
    char **prop_where;          /* parallel to kafka_props: "KAFKA_CONFIG_X", "-X x", "f.conf:3" */
};

static inline char **str_field(fq_config_t *cfg, const param_t *p)
{
    return (char **)((char *)cfg + p->offset);
}

static inline const char *str_value(const fq_config_t *cfg, const param_t *p)
{
    return *(char *const *)((const char *)cfg + p->offset);
}

/* config_table.c */
const param_t *cfg_param_by_name(const char *name);
const param_t *cfg_param_by_flag(const char *flag, size_t len);
size_t cfg_param_index(const param_t *p);
/** The setting name within 3 edits of name (a typo), or NULL. */
const char *cfg_closest_name(const char *name);

/* config_value.c */
/** Formats into errstr (when given) and returns -1. */
int cfg_fail(char *errstr, size_t errstr_size, const char *fmt, ...) FQ_PRINTF(3, 4);
/** Parses value for p and stores it in cfg. Fills why (without WHERE) on error. */
int cfg_apply_value(fq_config_t *cfg, const param_t *p, const char *value, char *why,
                    size_t why_size) FQ_WARN_UNUSED;

/* config_derive.c */
/** Computes every unset derived setting from the others; -1 on out-of-memory. */
int cfg_derive(fq_config_t *cfg) FQ_WARN_UNUSED;

/* config_print.c */
/** Does this librdkafka property hold a secret (masked when printed or quoted)? */
bool cfg_kafka_prop_secret(const char *name);

#endif /* FQ_CONFIG_INT_H */
