#include "fq_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fq_error {
    fq_stage_t stage;
    fq_class_t klass;
    fq_error_domain_t domain;
    int code;
    int64_t retry_after_ms;
    bool is_static;
    char message[FQ_ERROR_MESSAGE_MAX + 1];
};

/* Returned when malloc fails, so callers never have to handle a NULL error. */
static fq_error_t oom_error = {.stage = FQ_STAGE_VALIDATE,
                               .klass = FQ_CLASS_OUTAGE,
                               .is_static = true,
                               .message = "out of memory"};

static const char *const stage_names[FQ_STAGE__COUNT] = {"validate", "fetch", "decode", "encode",
                                                         "upload",   "store", "message"};
static const char *const domain_names[FQ_ERROR_DOMAIN__COUNT] = {"",     "errno", "curl",
                                                                 "http", "av",    "sqlstate"};
static const char *const class_names[FQ_CLASS__COUNT] = {"retriable", "permanent", "malformed",
                                                         "outage"};

fq_error_t *fq_error_new(fq_stage_t stage, fq_class_t klass, const char *fmt, ...)
{
    fq_error_t *err = calloc(1, sizeof(*err));
    if (!err)
        return &oom_error;
    err->stage = stage;
    err->klass = klass;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return err;
}

void fq_error_destroy(fq_error_t *err)
{
    if (err && !err->is_static)
        free(err);
}

fq_stage_t fq_error_stage(const fq_error_t *err)
{
    return err->stage;
}

fq_class_t fq_error_class(const fq_error_t *err)
{
    return err->klass;
}

const char *fq_error_message(const fq_error_t *err)
{
    return err->message;
}

fq_error_domain_t fq_error_domain(const fq_error_t *err)
{
    return err->domain;
}

int fq_error_code(const fq_error_t *err)
{
    return err->code;
}

void fq_error_set_code(fq_error_t *err, fq_error_domain_t domain, int code)
{
    if (err->is_static)
        return;
    if ((unsigned)domain >= FQ_ERROR_DOMAIN__COUNT || domain == FQ_ERROR_DOMAIN_NONE) {
        domain = FQ_ERROR_DOMAIN_NONE;
        code = 0;
    }
    err->domain = domain;
    err->code = code;
}

const char *fq_error_domain_name(fq_error_domain_t domain)
{
    return (unsigned)domain < FQ_ERROR_DOMAIN__COUNT ? domain_names[domain] : "";
}

int64_t fq_error_retry_after_ms(const fq_error_t *err)
{
    return err->retry_after_ms;
}

void fq_error_set_retry_after_ms(fq_error_t *err, int64_t ms)
{
    if (!err->is_static)
        err->retry_after_ms = ms < 0 ? 0 : ms;
}

const char *fq_stage_name(fq_stage_t stage)
{
    return (unsigned)stage < FQ_STAGE__COUNT ? stage_names[stage] : "unknown";
}

const char *fq_class_name(fq_class_t klass)
{
    return (unsigned)klass < FQ_CLASS__COUNT ? class_names[klass] : "unknown";
}

int fq_stage_parse(const char *name, fq_stage_t *stage)
{
    for (int i = 0; i < FQ_STAGE__COUNT; i++) {
        if (strcmp(name, stage_names[i]) == 0) {
            *stage = (fq_stage_t)i;
            return 0;
        }
    }
    return -1;
}

int fq_class_parse(const char *name, fq_class_t *klass)
{
    for (int i = 0; i < FQ_CLASS__COUNT; i++) {
        if (strcmp(name, class_names[i]) == 0) {
            *klass = (fq_class_t)i;
            return 0;
        }
    }
    return -1;
}

fq_class_t fq_error_class_for_http_status(long status)
{
    if (status == 408 || status == 425 || status == 429 || status >= 500)
        return FQ_CLASS_RETRIABLE;
    return FQ_CLASS_PERMANENT;
}
