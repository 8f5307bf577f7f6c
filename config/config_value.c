/* Parsing and checking one setting's value: numbers with units and ranges, enumerations,
 * comma lists, URL templates, host:port. */
#include "config_int.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

FQ_PRINTF(3, 4) int cfg_fail(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Value parsers: each fills why on failure                                                      */

static int parse_integer(const char *s, long long *out, char *why, size_t why_size);

int fq_config_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out, char *why,
                          size_t why_size)
{
    long long v = 0; /* set by parse_integer; 0 keeps -O3 from seeing a path without it */
    if (parse_integer(s, &v, why, why_size) < 0)
        return -1;
    if (v < min || v > max)
        return cfg_fail(why, why_size, "%lld is out of range %lld..%lld", v, (long long)min,
                        (long long)max);
    *out = v;
    return 0;
}

static int parse_integer(const char *s, long long *out, char *why, size_t why_size)
{
    if (*s == '\0')
        return cfg_fail(why, why_size, "must not be empty");
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || isspace((unsigned char)*s))
        return cfg_fail(why, why_size, "\"%s\" is not a whole number", s);
    if (errno == ERANGE)
        return cfg_fail(why, why_size, "\"%s\" is too large", s);
    *out = v;
    return 0;
}

/* A whole number with an optional unit; mult_of maps a suffix to a multiplier (0 = unknown). */
static int parse_scaled(const char *s, long long (*mult_of)(const char *), const char *kind,
                        long long *out, char *why, size_t why_size)
{
    if (*s == '\0')
        return cfg_fail(why, why_size, "must not be empty");
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || isspace((unsigned char)*s))
        return cfg_fail(why, why_size, "\"%s\" is not %s", s, kind);
    if (errno == ERANGE)
        return cfg_fail(why, why_size, "\"%s\" is too large", s);
    long long mult = mult_of(end);
    if (mult == 0)
        return cfg_fail(why, why_size, "\"%s\" is not %s", s, kind);
    if (v != 0 && (v > LLONG_MAX / mult || v < LLONG_MIN / mult))
        return cfg_fail(why, why_size, "\"%s\" is too large", s);
    *out = v * mult;
    return 0;
}

static long long bytes_mult(const char *suffix)
{
    static const struct {
        const char *s;
        long long mult;
    } units[] = {{"", 1},           {"B", 1},           {"K", 1LL << 10},
                 {"KB", 1LL << 10}, {"KiB", 1LL << 10}, {"M", 1LL << 20},
                 {"MB", 1LL << 20}, {"MiB", 1LL << 20}, {"G", 1LL << 30},
                 {"GB", 1LL << 30}, {"GiB", 1LL << 30}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcasecmp(suffix, units[i].s) == 0)
            return units[i].mult;
    return 0;
}

static long long duration_mult(const char *suffix)
{
    static const struct {
        const char *s;
        long long mult;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(suffix, units[i].s) == 0)
            return units[i].mult;
    return 0;
}

static int parse_double(const char *s, double *out, char *why, size_t why_size)
{
    if (*s == '\0')
        return cfg_fail(why, why_size, "must not be empty");
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || isspace((unsigned char)*s))
        return cfg_fail(why, why_size, "\"%s\" is not a number", s);
    if (errno == ERANGE || !isfinite(v))
        return cfg_fail(why, why_size, "\"%s\" is not a finite number", s);
    *out = v;
    return 0;
}

static int check_int_range(const param_t *p, long long v, char *why, size_t why_size)
{
    if ((double)v < p->min || (double)v > p->max)
        return cfg_fail(why, why_size, "%lld is out of range %lld..%lld", v, (long long)p->min,
                        (long long)p->max);
    return 0;
}

static int choice_index(const char *const *choices, const char *v)
{
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], v) == 0)
            return i;
    return -1;
}

static int fail_choices(const char *const *choices, const char *v, char *why, size_t why_size)
{
    char list[128] = "";
    size_t len = 0;
    for (int i = 0; choices[i]; i++) {
        int n = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", choices[i]);
        if (n < 0 || (size_t)n >= sizeof(list) - len)
            break;
        len += (size_t)n;
    }
    return cfg_fail(why, why_size, "\"%s\" is not one of %s", v, list);
}

/* ------------------------------------------------------------------------------------------ */
/* Checks of string settings                                                                     */

fq_url_placeholder_t fq_url_template_placeholder(const char *name, size_t n, int *width)
{
    *width = 0;
    if (n == 8 && strncmp(name, "platform", 8) == 0)
        return FQ_URL_PH_PLATFORM;
    if (n == 4 && strncmp(name, "code", 4) == 0)
        return FQ_URL_PH_CODE;
    if (n == 5 && strncmp(name, "index", 5) == 0)
        return FQ_URL_PH_INDEX;
    if ((n == 8 || n == 9) && strncmp(name, "index:0", 7) == 0 && isdigit((unsigned char)name[7]) &&
        (n == 8 || isdigit((unsigned char)name[8]))) {
        *width = n == 8 ? name[7] - '0' : (name[7] - '0') * 10 + (name[8] - '0');
        return FQ_URL_PH_INDEX;
    }
    return FQ_URL_PH_UNKNOWN;
}

/* URL templates: a known scheme, an s3 bucket or http host, and only the known placeholders. */
int fq_url_template_check(const char *raw, bool frames, char *why, size_t why_size)
{
    /* Messages quote the template; a password in it must not reach a log. */
    char masked[1024];
    const char *v = fq_config_mask_secret_url(raw, masked, sizeof(masked));
    if (strlen(raw) >= sizeof(masked))
        return cfg_fail(why, why_size, "template is too long (%zu bytes)", strlen(raw));
    const char *sep = strstr(v, "://");
    if (!sep || sep == v)
        return cfg_fail(
            why, why_size,
            "\"%s\" is not a URL template (expected s3://, http://, https:// or file://)", v);
    size_t slen = (size_t)(sep - v);
    char scheme[16];
    if (slen >= sizeof(scheme))
        return cfg_fail(why, why_size,
                        "\"%s\" has an unknown scheme; expected s3, http, https or file", v);
    memcpy(scheme, v, slen);
    scheme[slen] = '\0';
    if (strcmp(scheme, "s3") != 0 && strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0 &&
        strcmp(scheme, "file") != 0)
        return cfg_fail(why, why_size,
                        "\"%s\" has scheme \"%s\"; expected one of s3, http, https, file", v,
                        scheme);
    const char *rest = sep + 3;
    size_t authority = strcspn(rest, "/");
    if (strcmp(scheme, "s3") == 0 &&
        (authority == 0 || rest[authority] != '/' || rest[authority + 1] == '\0'))
        return cfg_fail(why, why_size, "\"%s\" needs a bucket and a key: s3://BUCKET/KEY", v);
    if (strcmp(scheme, "file") != 0 && strcmp(scheme, "s3") != 0 && authority == 0)
        return cfg_fail(why, why_size, "\"%s\" has no host", v);
    if (strcmp(scheme, "file") == 0 && *rest == '\0')
        return cfg_fail(why, why_size, "\"%s\" has no path", v);

    bool has_index = false;
    for (const char *p = v; *p; p++) {
        if (*p == '}')
            return cfg_fail(why, why_size, "\"%s\": '}' without '{'", v);
        if (*p != '{')
            continue;
        const char *close = strchr(p, '}');
        if (!close)
            return cfg_fail(why, why_size, "\"%s\": '{' without '}'", v);
        size_t n = (size_t)(close - p - 1);
        const char *name = p + 1;
        int width = 0;
        fq_url_placeholder_t ph = fq_url_template_placeholder(name, n, &width);
        if (ph == FQ_URL_PH_UNKNOWN)
            return cfg_fail(why, why_size, "\"%s\": unknown placeholder {%.*s}; known: %s", v,
                            (int)n, name, FQ_URL_PLACEHOLDERS);
        has_index |= ph == FQ_URL_PH_INDEX;
        p = close;
    }
    if (frames && !has_index)
        return cfg_fail(why, why_size,
                        "\"%s\" must contain {index} (or {index:0N}), or every frame overwrites "
                        "the same object",
                        v);
    if (!frames && has_index)
        return cfg_fail(why, why_size, "\"%s\": {index} is only for FRAMES_URL_TEMPLATE", v);
    return 0;
}

/* A comma list: each element trimmed (and lowercased); empty elements rejected; the checked
 * element must pass `ok` when given. Returns the normalised list in *out. */
static int normalise_list(const char *v, const char *const *allowed, char **out, char *why,
                          size_t why_size)
{
    char *copy = strdup(v);
    char *norm = calloc(1, strlen(v) + 1);
    int rc = -1;
    if (!copy || !norm) {
        cfg_fail(why, why_size, "out of memory");
        goto done;
    }
    size_t len = 0;
    char *save = NULL;
    for (char *tok = copy;; tok = NULL) {
        char *elem = strtok_r(tok, ",", &save);
        if (!elem)
            break;
        while (isspace((unsigned char)*elem))
            elem++;
        size_t n = strlen(elem);
        while (n > 0 && isspace((unsigned char)elem[n - 1]))
            n--;
        elem[n] = '\0';
        for (size_t i = 0; i < n; i++)
            elem[i] = (char)tolower((unsigned char)elem[i]);
        if (n == 0 || strchr(elem, ' ')) {
            cfg_fail(why, why_size, "\"%s\" has an empty or blank element", v);
            goto done;
        }
        if (allowed && choice_index(allowed, elem) < 0) {
            fail_choices(allowed, elem, why, why_size);
            goto done;
        }
        len += (size_t)sprintf(norm + len, "%s%s", len ? "," : "", elem);
    }
    /* strtok_r skips empty fields ("a,,b", ",a"), so compare the counts of commas. */
    size_t commas_in = 0, commas_out = 0;
    for (const char *p = v; *p; p++)
        commas_in += *p == ',';
    for (const char *p = norm; *p; p++)
        commas_out += *p == ',';
    if (commas_in != commas_out || (len == 0 && *v)) {
        cfg_fail(why, why_size, "\"%s\" has an empty element", v);
        goto done;
    }
    *out = norm;
    norm = NULL;
    rc = 0;
done:
    free(copy);
    free(norm);
    return rc;
}

static int check_addr(const char *v, char *why, size_t why_size)
{
    if (*v == '\0' || strcmp(v, "off") == 0)
        return 0;
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v)
        return cfg_fail(why, why_size, "\"%s\" is not host:port (or \"off\")", v);
    if (v[0] == '[' && colon[-1] != ']')
        return cfg_fail(why, why_size, "\"%s\" is not host:port (or \"off\")", v);
    if (v[0] != '[' && memchr(v, ':', (size_t)(colon - v)))
        return cfg_fail(why, why_size, "\"%s\" is not host:port; write IPv6 as [addr]:port", v);
    long long port;
    char sub[64];
    if (parse_integer(colon + 1, &port, sub, sizeof(sub)) < 0 || port < 0 || port > 65535)
        return cfg_fail(why, why_size, "\"%s\" has no valid port (0..65535)", v);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Setting one value                                                                             */

/* A string setting: not blank (unless F_EMPTY_OK), one of its choices, and the checks its
 * flags ask for; comma lists are stored normalised. */
static int apply_string(fq_config_t *cfg, const param_t *p, const char *value, char *why,
                        size_t why_size)
{
    char *copy = NULL;
    if (value[strspn(value, " \t\r\n")] == '\0' && !(p->flags & F_EMPTY_OK))
        return cfg_fail(why, why_size, "must not be empty");
    if (p->choices && choice_index(p->choices, value) < 0)
        return fail_choices(p->choices, value, why, why_size);
    if ((p->flags & (F_SRC_TPL | F_FRAMES_TPL)) &&
        fq_url_template_check(value, p->flags & F_FRAMES_TPL, why, why_size) < 0)
        return -1;
    if ((p->flags & F_ADDR) && check_addr(value, why, why_size) < 0)
        return -1;
    if (p->flags & F_NAMES) {
        size_t bad = strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789_-, ");
        if (value[bad])
            return cfg_fail(why, why_size, "\"%s\": '%c' is not part of a name (a,b,c)", value,
                            value[bad]);
    }
    if (p->flags & (F_SCHEMES | F_HOSTS | F_NAMES)) {
        if (normalise_list(value, (p->flags & F_SCHEMES) ? cfg_source_schemes : NULL, &copy, why,
                           why_size) < 0)
            return -1;
    } else {
        copy = strdup(value);
    }
    if (!copy)
        return cfg_fail(why, why_size, "out of memory");
    free(*str_field(cfg, p));
    *str_field(cfg, p) = copy;
    return 0;
}

/* Parses value for p and stores it. Fills why (without WHERE) on error. */
int cfg_apply_value(fq_config_t *cfg, const param_t *p, const char *value, char *why,
                    size_t why_size)
{
    void *field = (char *)cfg + p->offset;
    switch (p->type) {
    case P_STRING:
        return apply_string(cfg, p, value, why, why_size);
    case P_INT:
    case P_INT64: {
        long long v = 0;
        if (parse_integer(value, &v, why, why_size) < 0 || check_int_range(p, v, why, why_size) < 0)
            return -1;
        if (p->type == P_INT)
            *(int *)field = (int)v; /* the range check keeps it within int */
        else
            *(int64_t *)field = v;
        return 0;
    }
    case P_BYTES:
    case P_DURATION: {
        long long v = 0;
        int rc = p->type == P_BYTES
                     ? parse_scaled(value, bytes_mult, "a size (bytes, or a number with K, M or G)",
                                    &v, why, why_size)
                     : parse_scaled(value, duration_mult,
                                    "a duration (milliseconds, or a number with ms, s, m or h)", &v,
                                    why, why_size);
        if (rc < 0 || check_int_range(p, v, why, why_size) < 0)
            return -1;
        *(int64_t *)field = v;
        return 0;
    }
    case P_DOUBLE: {
        double v = 0;
        if (parse_double(value, &v, why, why_size) < 0)
            return -1;
        bool low = (p->flags & F_MIN_OPEN) ? v <= p->min : v < p->min;
        if (low || v > p->max)
            return cfg_fail(why, why_size, "%s is out of range: must be %s %g and <= %g", value,
                            (p->flags & F_MIN_OPEN) ? ">" : ">=", p->min, p->max);
        *(double *)field = v;
        return 0;
    }
    case P_ENUM: {
        int ix = choice_index(p->choices, value);
        if (ix < 0)
            return fail_choices(p->choices, value, why, why_size);
        *(fq_frame_mode_t *)field = (fq_frame_mode_t)ix;
        return 0;
    }
    }
    return cfg_fail(why, why_size, "internal: unknown type");
}
