/* frameq configuration: the layers (DESIGN §5). Defaults -> files (--config) -> environment ->
 * flags, each through the settings table (config_table.c) and its value parser
 * (config_value.c); then the derived defaults (config_derive.c) and cross-field rules; and the
 * librdkafka configuration built from KAFKA_CONFIG_* / -X. */
#include "config_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* A copy of s without surrounding whitespace. */
static char *trimmed_dup(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return strndup(s, n);
}

/* Kafka property name from a KAFKA_CONFIG_<PROP> suffix: lowercased, '_' -> '.'. */
static char *kafka_prop_name(const char *suffix)
{
    char *name = strdup(suffix);
    if (!name)
        return NULL;
    for (char *c = name; *c; c++)
        *c = *c == '_' ? '.' : (char)tolower((unsigned char)*c);
    return name;
}

/* Adds or replaces a Kafka property; a later layer keeps the position of the first. */
static int kafka_prop_set(fq_config_t *cfg, const char *name, const char *value,
                          fq_config_origin_t origin, const char *where, char *errstr,
                          size_t errstr_size)
{
    struct fq_config_state *st = cfg->state;
    if (*name == '\0')
        return cfg_fail(errstr, errstr_size, "%s: empty Kafka property name", where);
    char *v = strdup(value), *w = strdup(where);
    if (!v || !w) {
        free(v);
        free(w);
        return cfg_fail(errstr, errstr_size, "%s: out of memory", where);
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        if (strcmp(kp->name, name) == 0) {
            free(kp->value);
            free(st->prop_where[i]);
            kp->value = v;
            kp->origin = origin;
            st->prop_where[i] = w;
            return 0;
        }
    }
    size_t n = cfg->kafka_props_count + 1;
    fq_kafka_prop_t *props = realloc(cfg->kafka_props, n * sizeof(*props));
    if (props)
        cfg->kafka_props = props;
    char **wheres = realloc(st->prop_where, n * sizeof(*wheres));
    if (wheres)
        st->prop_where = wheres;
    char *nm = strdup(name);
    if (!props || !wheres || !nm) {
        free(v);
        free(w);
        free(nm);
        return cfg_fail(errstr, errstr_size, "%s: out of memory", where);
    }
    props[n - 1] = (fq_kafka_prop_t){.name = nm, .value = v, .origin = origin};
    wheres[n - 1] = w;
    cfg->kafka_props_count = n;
    return 0;
}

/* Sets a table setting or KAFKA_CONFIG_* name. label is what an error names: the variable, a
 * flag, or "file:line: NAME"; at is where --print-config says the value came from (may be NULL). */
static int set_named(fq_config_t *cfg, const param_t *p, const char *name, const char *value,
                     fq_config_origin_t origin, const char *label, const char *at, char *errstr,
                     size_t errstr_size)
{
    if (!p) {
        char *prop = kafka_prop_name(name + strlen(KAFKA_ENV_PREFIX));
        if (!prop)
            return cfg_fail(errstr, errstr_size, "%s: out of memory", label);
        int rc = kafka_prop_set(cfg, prop, value, origin, at ? at : name, errstr, errstr_size);
        free(prop);
        return rc;
    }
    size_t ix = cfg_param_index(p);
    struct fq_config_state *st = cfg->state;
    char why[512];
    char *trimmed = NULL;
    /* Numbers tolerate surrounding blanks ("10 " from a hand-edited file); strings keep them. */
    if (p->type != P_STRING) {
        trimmed = trimmed_dup(value);
        if (!trimmed)
            return cfg_fail(errstr, errstr_size, "%s: out of memory", label);
        value = trimmed;
    }
    int rc;
    if (*value == '\0' && (p->flags & (F_NULLABLE | F_DERIVED))) {
        /* Empty unsets: a nullable setting becomes NULL, a derived one is derived again. */
        if (p->type == P_STRING) {
            free(*str_field(cfg, p));
            *str_field(cfg, p) = NULL;
        }
        origin = FQ_ORIGIN_DEFAULT;
        at = NULL;
        rc = 0;
    } else {
        rc = cfg_apply_value(cfg, p, value, why, sizeof(why));
        if (rc < 0)
            cfg_fail(errstr, errstr_size, "%s: %s", label, why);
    }
    free(trimmed);
    if (rc < 0)
        return -1;
    st->origin[ix] = origin;
    free(st->where[ix]);
    st->where[ix] = at ? strdup(at) : NULL;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Public API                                                                                    */

fq_config_t *fq_config_new(void)
{
    fq_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    cfg->state = calloc(1, sizeof(*cfg->state));
    if (!cfg->state)
        goto fail;
    cfg->state->origin = calloc(cfg_n_params, sizeof(*cfg->state->origin));
    cfg->state->where = calloc(cfg_n_params, sizeof(*cfg->state->where));
    if (!cfg->state->origin || !cfg->state->where)
        goto fail;
    for (size_t i = 0; i < cfg_n_params; i++) {
        const param_t *p = &cfg_params[i];
        char why[256];
        if (!p->def)
            continue;
        /* Defaults go through the same parser as user values, so they obey the same rules. */
        if (cfg_apply_value(cfg, p, p->def, why, sizeof(why)) < 0) {
            fprintf(stderr, "frameq: bad built-in default %s: %s\n", p->name, why);
            abort();
        }
    }
    if (cfg_derive(cfg) < 0)
        goto fail;
    return cfg;
fail:
    fq_config_destroy(cfg);
    return NULL;
}

void fq_config_destroy(fq_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg_n_params; i++)
        if (cfg_params[i].type == P_STRING)
            free(*str_field(cfg, &cfg_params[i]));
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        free(cfg->kafka_props[i].name);
        free(cfg->kafka_props[i].value);
        if (cfg->state)
            free(cfg->state->prop_where[i]);
    }
    free(cfg->kafka_props);
    if (cfg->state) {
        for (size_t i = 0; cfg->state->where && i < cfg_n_params; i++)
            free(cfg->state->where[i]);
        free(cfg->state->where);
        free(cfg->state->origin);
        free(cfg->state->prop_where);
        free(cfg->state);
    }
    free(cfg);
}

fq_config_origin_t fq_config_origin(const fq_config_t *cfg, const char *name)
{
    const param_t *p = cfg_param_by_name(name);
    return p ? cfg->state->origin[cfg_param_index(p)] : FQ_ORIGIN_DEFAULT;
}

int fq_config_set(fq_config_t *cfg, const char *name, const char *value, fq_config_origin_t origin,
                  char *errstr, size_t errstr_size)
{
    const param_t *p = cfg_param_by_name(name);
    if (!p && strncmp(name, KAFKA_ENV_PREFIX, strlen(KAFKA_ENV_PREFIX)) != 0) {
        const char *guess = cfg_closest_name(name);
        if (guess)
            return cfg_fail(errstr, errstr_size, "unknown setting \"%s\" (did you mean %s?)", name,
                            guess);
        return cfg_fail(errstr, errstr_size, "unknown setting \"%s\"", name);
    }
    if (set_named(cfg, p, name, value ? value : "", origin, name, NULL, errstr, errstr_size) < 0)
        return -1;
    if (cfg_derive(cfg) < 0)
        return cfg_fail(errstr, errstr_size, "%s: out of memory", name);
    return 0;
}

/* One line of a KEY=VALUE file: "export " tolerated, value optionally quoted, " #" starts a
 * comment after an unquoted value. Fills key/value (pointers into line) or returns -1. */
static int split_line(char *line, bool dotted, char **key, char **value, const char **why)
{
    char *s = line;
    while (isspace((unsigned char)*s))
        s++;
    if (strncmp(s, "export", 6) == 0 && isspace((unsigned char)s[6]))
        for (s += 6; isspace((unsigned char)*s);)
            s++;
    char *eq = strchr(s, '=');
    if (!eq) {
        *why = "expected KEY=VALUE";
        return -1;
    }
    char *kend = eq;
    while (kend > s && isspace((unsigned char)kend[-1]))
        kend--;
    *kend = '\0';
    if (*s == '\0') {
        *why = "expected KEY=VALUE";
        return -1;
    }
    for (char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && !(dotted && (*c == '.' || *c == '-'))) {
            *why = "expected KEY=VALUE (KEY is letters, digits and _)";
            return -1;
        }
    *key = s;
    char *v = eq + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v == '"' || *v == '\'') {
        char *close = strchr(v + 1, *v);
        if (!close) {
            *why = "missing closing quote";
            return -1;
        }
        char *after = close + 1;
        while (isspace((unsigned char)*after))
            after++;
        if (*after != '\0' && *after != '#') {
            *why = "unexpected text after the closing quote";
            return -1;
        }
        *close = '\0';
        *value = v + 1;
        return 0;
    }
    for (char *c = v; *c; c++)
        if (*c == '#' && (c == v || isspace((unsigned char)c[-1]))) {
            *c = '\0';
            break;
        }
    size_t n = strlen(v);
    while (n > 0 && isspace((unsigned char)v[n - 1]))
        v[--n] = '\0';
    *value = v;
    return 0;
}

int fq_config_load_file(fq_config_t *cfg, const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return cfg_fail(errstr, errstr_size, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = -1;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        const char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        char at[512];
        snprintf(at, sizeof(at), "%s:%d", path, lineno);
        char *key = NULL, *value = NULL;
        const char *why = NULL;
        if (strncmp(s, "-X", 2) == 0 && (s[2] == ' ' || s[2] == '\t')) {
            /* --print-config writes Kafka properties as "-X name=value"; read them back. */
            char *prop = line + (s - line) + 3;
            while (isspace((unsigned char)*prop))
                prop++;
            if (split_line(prop, true, &key, &value, &why) < 0) {
                cfg_fail(errstr, errstr_size, "%s: %s", at, why);
                goto done;
            }
            if (kafka_prop_set(cfg, key, value, FQ_ORIGIN_FILE, at, errstr, errstr_size) < 0)
                goto done;
            continue;
        }
        if (split_line(line, false, &key, &value, &why) < 0) {
            cfg_fail(errstr, errstr_size, "%s: %s", at, why);
            goto done;
        }
        const param_t *p = cfg_param_by_name(key);
        if (!p && strncmp(key, KAFKA_ENV_PREFIX, strlen(KAFKA_ENV_PREFIX)) != 0) {
            const char *guess = cfg_closest_name(key);
            if (guess)
                cfg_fail(errstr, errstr_size, "%s: unknown setting \"%s\" (did you mean %s?)", at,
                         key, guess);
            else
                cfg_fail(errstr, errstr_size, "%s: unknown setting \"%s\"", at, key);
            goto done;
        }
        char label[600];
        snprintf(label, sizeof(label), "%s: %s", at, key);
        if (set_named(cfg, p, key, value, FQ_ORIGIN_FILE, label, at, errstr, errstr_size) < 0)
            goto done;
    }
    if (ferror(f)) {
        cfg_fail(errstr, errstr_size, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (cfg_derive(cfg) < 0) {
        cfg_fail(errstr, errstr_size, "%s: out of memory", path);
        goto done;
    }
    rc = 0;
done:
    free(line);
    fclose(f);
    return rc;
}

static int load_env(fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < cfg_n_params; i++) {
        const char *v = getenv(cfg_params[i].name);
        if (v && set_named(cfg, &cfg_params[i], cfg_params[i].name, v, FQ_ORIGIN_ENV,
                           cfg_params[i].name, NULL, errstr, errstr_size) < 0)
            return -1;
    }
    size_t plen = strlen(KAFKA_ENV_PREFIX);
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, KAFKA_ENV_PREFIX, plen) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char *name = strndup(*e, (size_t)(eq - *e));
        if (!name)
            return cfg_fail(errstr, errstr_size, "%s: out of memory", *e);
        int rc = set_named(cfg, NULL, name, eq + 1, FQ_ORIGIN_ENV, name, NULL, errstr, errstr_size);
        free(name);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* "-X prop=val" from the command line. */
static int set_kafka_flag(fq_config_t *cfg, const char *arg, char *errstr, size_t errstr_size)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return cfg_fail(errstr, errstr_size, "-X %s: expected prop=value", arg);
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name)
        return cfg_fail(errstr, errstr_size, "-X %s: out of memory", arg);
    char where[300];
    snprintf(where, sizeof(where), "-X %s", name);
    int rc = kafka_prop_set(cfg, name, eq + 1, FQ_ORIGIN_FLAG, where, errstr, errstr_size);
    free(name);
    return rc;
}

static int check_kafka_props(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, errstr, errstr_size);
    if (!conf)
        return -1;
    rd_kafka_conf_destroy(conf);
    return 0;
}

/* Layer 2: files named by --config, in the order given. */
static int load_config_files(fq_config_t *cfg, int n, char **argv, char *errstr, size_t errstr_size)
{
    for (int i = 1; i < n; i++) {
        const char *path = NULL;
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= n)
                return cfg_fail(errstr, errstr_size, "--config: missing FILE");
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        }
        if (path && fq_config_load_file(cfg, path, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

/* Layer 4: flags; what we consume is dropped, the rest keeps its order in argv[1..*out). */
static int load_flags(fq_config_t *cfg, int n, char **argv, int *out, char *errstr,
                      size_t errstr_size)
{
    *out = n > 0 ? 1 : 0;
    bool stopped = false;
    for (int i = 1; i < n; i++) {
        char *arg = argv[i];
        if (stopped || strcmp(arg, "--") == 0) {
            stopped = true;
            argv[(*out)++] = arg;
            continue;
        }
        if (strcmp(arg, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0)
            continue;
        if (strcmp(arg, "-X") == 0) {
            if (i + 1 >= n)
                return cfg_fail(errstr, errstr_size, "-X: missing prop=value");
            if (set_kafka_flag(cfg, argv[++i], errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        if (strncmp(arg, "-X", 2) == 0) {
            if (set_kafka_flag(cfg, arg + 2, errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        const param_t *p = NULL;
        const char *value = NULL;
        if (strncmp(arg, "--", 2) == 0) {
            const char *eq = strchr(arg, '=');
            p = cfg_param_by_flag(arg, eq ? (size_t)(eq - arg) : strlen(arg));
            if (p && eq) {
                value = eq + 1;
            } else if (p) {
                if (i + 1 >= n)
                    return cfg_fail(errstr, errstr_size, "%s: missing value", p->flag);
                value = argv[++i];
            }
        }
        if (!p) {
            argv[(*out)++] = arg; /* a program flag or a positional argument */
            continue;
        }
        if (set_named(cfg, p, p->name, value, FQ_ORIGIN_FLAG, p->flag, p->flag, errstr,
                      errstr_size) < 0)
            return -1;
    }
    return 0;
}

/* Rules between settings, checked once every layer is in. */
static int check_cross_fields(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    if (cfg->retry_backoff_max_ms < cfg->retry_backoff_ms)
        return cfg_fail(errstr, errstr_size,
                        "RETRY_BACKOFF_MAX_MS: %lld is below RETRY_BACKOFF_MS (%lld)",
                        (long long)cfg->retry_backoff_max_ms, (long long)cfg->retry_backoff_ms);
    if (strcmp(cfg->kafka_retry_topic, cfg->kafka_topic) == 0 ||
        strcmp(cfg->kafka_dlq_topic, cfg->kafka_topic) == 0 ||
        strcmp(cfg->kafka_dlq_topic, cfg->kafka_retry_topic) == 0)
        return cfg_fail(errstr, errstr_size,
                        "KAFKA_DLQ_TOPIC: the main, retry and DLQ topics must differ (%s, %s, %s)",
                        cfg->kafka_topic, cfg->kafka_retry_topic, cfg->kafka_dlq_topic);
    /* A typo in a Kafka property is a start-up error, not a surprise at first connect. */
    return check_kafka_props(cfg, errstr, errstr_size);
}

int fq_config_load(fq_config_t *cfg, int *argc, char **argv, char *errstr, size_t errstr_size)
{
    int n = argc ? *argc : 0, out = 0;
    if (load_config_files(cfg, n, argv, errstr, errstr_size) < 0 ||
        load_env(cfg, errstr, errstr_size) < 0 ||
        load_flags(cfg, n, argv, &out, errstr, errstr_size) < 0)
        return -1;
    if (argc) {
        *argc = out;
        if (argv)
            argv[out] = NULL;
    }
    if (cfg_derive(cfg) < 0)
        return cfg_fail(errstr, errstr_size, "configuration: out of memory");
    return check_cross_fields(cfg, errstr, errstr_size);
}

rd_kafka_conf_t *fq_config_kafka_conf(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char why[512];
    if (!conf) {
        cfg_fail(errstr, errstr_size, "KAFKA_BROKERS: out of memory");
        return NULL;
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka_brokers, why, sizeof(why)) !=
        RD_KAFKA_CONF_OK) {
        cfg_fail(errstr, errstr_size, "KAFKA_BROKERS: %s", why);
        goto fail;
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, kp->name, kp->value, why, sizeof(why));
        if (res != RD_KAFKA_CONF_OK) {
            const char *where = cfg->state->prop_where[i];
            /* librdkafka does not always repeat the rejected value; say it unless secret. */
            if (res == RD_KAFKA_CONF_INVALID && !cfg_kafka_prop_secret(kp->name) &&
                !strstr(why, kp->value))
                cfg_fail(errstr, errstr_size, "%s: %s (got \"%s\")", where, why, kp->value);
            else
                cfg_fail(errstr, errstr_size, "%s: %s", where, why);
            goto fail;
        }
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}
