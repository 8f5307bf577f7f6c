/* Printing the configuration (--print-config) with secrets masked, and --help. */
#include "config_int.h"

#include <ctype.h>
#include <string.h>

static const char *const origin_names[] = {"default", "derived", "file", "env", "flag"};

/* ------------------------------------------------------------------------------------------ */
/* Masking and printing                                                                          */

static void buf_put(char *buf, size_t size, size_t *len, const char *s, size_t n)
{
    if (*len + 1 >= size)
        return;
    if (n > size - 1 - *len)
        n = size - 1 - *len;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

/* Copies the n bytes at p into buf (as buf_put) and returns the position after them. */
static const char *put_span(char *buf, size_t size, size_t *len, const char *p, size_t n)
{
    buf_put(buf, size, len, p, n);
    return p + n;
}

/* Is the key before '=' at key..key+n a password-like conninfo/query key? */
static bool secret_key(const char *key, size_t n)
{
    static const char *const words[] = {"password", "secret", "passwd", "token", NULL};
    for (int i = 0; words[i]; i++) {
        size_t wl = strlen(words[i]);
        for (size_t j = 0; j + wl <= n; j++)
            if (strncasecmp(key + j, words[i], wl) == 0)
                return true;
    }
    return false;
}

bool fq_config_url_password(const char *url, const char **pw, size_t *len)
{
    const char *sep = strstr(url, "://");
    if (!sep)
        return false;
    const char *auth = sep + 3;
    /* the last '@' of the authority: a password may contain '@' in the wild */
    const char *at = memrchr(auth, '@', strcspn(auth, "/?#"));
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon)
        return false;
    *pw = colon + 1;
    *len = (size_t)(at - colon - 1);
    return true;
}

/* URI: scheme://user:password@host/path?password=...; auth is past the "://". */
static void mask_uri(const char *s, const char *auth, char *buf, size_t buf_size)
{
    size_t len = 0;
    const char *p = auth, *pw;
    size_t pw_len;
    if (fq_config_url_password(s, &pw, &pw_len)) {
        buf_put(buf, buf_size, &len, s, (size_t)(pw - s));
        buf_put(buf, buf_size, &len, "****", 4);
        p = pw + pw_len;
    } else {
        buf_put(buf, buf_size, &len, s, (size_t)(auth - s));
    }
    /* Query parameters: mask password=... values, keep everything else. */
    while (*p) {
        p = put_span(buf, buf_size, &len, p, strcspn(p, "?&"));
        if (!*p)
            break;
        p = put_span(buf, buf_size, &len, p, 1);
        const char *eq = strchr(p, '=');
        size_t klen = strcspn(p, "=&#");
        if (eq && (size_t)(eq - p) == klen && secret_key(p, klen)) {
            buf_put(buf, buf_size, &len, p, klen + 1);
            buf_put(buf, buf_size, &len, "****", 4);
            p = eq + 1 + strcspn(eq + 1, "&#");
        }
    }
}

static void mask_conninfo(const char *s, char *buf, size_t buf_size)
{
    size_t len = 0;
    const char *p = s;
    /* key = value pairs, values optionally single-quoted with \' escapes. */
    while (*p) {
        p = put_span(buf, buf_size, &len, p, strspn(p, " \t\r\n"));
        if (!*p)
            break;
        size_t klen = strcspn(p, "= \t");
        const char *k = p;
        p = put_span(buf, buf_size, &len, p, klen);
        p = put_span(buf, buf_size, &len, p, strspn(p, " \t"));
        if (*p != '=')
            continue;
        p = put_span(buf, buf_size, &len, p, 1);
        p = put_span(buf, buf_size, &len, p, strspn(p, " \t"));
        const char *v = p;
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p == '\'')
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        if (secret_key(k, klen))
            buf_put(buf, buf_size, &len, "****", 4);
        else
            buf_put(buf, buf_size, &len, v, (size_t)(p - v));
    }
}

const char *fq_config_mask_secret_url(const char *s, char *buf, size_t buf_size)
{
    if (!buf || buf_size == 0)
        return "";
    buf[0] = '\0';
    if (!s)
        return buf;
    const char *sep = strstr(s, "://");
    bool uri = sep && sep > s;
    for (const char *c = s; uri && c < sep; c++)
        uri = isalnum((unsigned char)*c) || *c == '+' || *c == '.' || *c == '-';
    if (uri)
        mask_uri(s, sep + 3, buf, buf_size);
    else
        mask_conninfo(s, buf, buf_size);
    return buf;
}

bool cfg_kafka_prop_secret(const char *name)
{
    if (strstr(name, "password") || strstr(name, "secret") || strstr(name, "jaas") ||
        strcmp(name, "sasl.oauthbearer.config") == 0)
        return true;
    /* ssl.key.pem and friends hold key material; *.location only names a file. */
    bool tls = strncmp(name, "ssl.", 4) == 0 || strncmp(name, "ssl_", 4) == 0 ||
               strncmp(name, "sasl.", 5) == 0;
    size_t n = strlen(name);
    bool location = n >= 9 && strcmp(name + n - 9, ".location") == 0;
    return tls && strstr(name, "key") && !location;
}

/* Prints v so that fq_config_load_file reads it back: quoted when blanks or '#' would be lost. */
static void print_value(FILE *out, const char *v, int *width)
{
    bool quote = *v && (strpbrk(v, "#\"'") || isspace((unsigned char)v[0]) ||
                        isspace((unsigned char)v[strlen(v) - 1]));
    char q = strchr(v, '"') ? '\'' : '"';
    int n = quote ? fprintf(out, "%c%s%c", q, v, q) : fprintf(out, "%s", v);
    *width = n < 0 ? 0 : n;
}

static void format_value(const fq_config_t *cfg, const param_t *p, char *buf, size_t size)
{
    const void *field = (const char *)cfg + p->offset;
    switch (p->type) {
    case P_STRING: {
        const char *v = *(char *const *)field;
        if (!v)
            snprintf(buf, size, "%s", "");
        else if (p->flags & F_SECRET)
            snprintf(buf, size, "%s", "****");
        else if (strpbrk(v, "\r\n"))
            /* One setting, one line: a multi-line value (JOB_INPUT) is summarised. */
            snprintf(buf, size, "<%zu bytes, multi-line>", strlen(v));
        else if (p->flags & F_URL)
            fq_config_mask_secret_url(v, buf, size);
        else
            snprintf(buf, size, "%s", v);
        break;
    }
    case P_INT:
        snprintf(buf, size, "%d", *(const int *)field);
        break;
    case P_INT64:
    case P_DURATION:
        snprintf(buf, size, "%lld", (long long)*(const int64_t *)field);
        break;
    case P_BYTES: {
        /* The largest binary unit that divides the value: 512M, not 536870912. */
        long long v = *(const int64_t *)field;
        static const struct {
            int shift;
            const char *suffix;
        } units[] = {{30, "G"}, {20, "M"}, {10, "K"}, {0, ""}};
        size_t u = 0;
        while (units[u].shift && !(v > 0 && v % (1LL << units[u].shift) == 0))
            u++;
        snprintf(buf, size, "%lld%s", v >> units[u].shift, units[u].suffix);
        break;
    }
    case P_DOUBLE:
        snprintf(buf, size, "%g", *(const double *)field);
        break;
    case P_ENUM:
        snprintf(buf, size, "%s", p->choices[*(const fq_frame_mode_t *)field]);
        break;
    }
}

void fq_config_print(const fq_config_t *cfg, FILE *out)
{
    const struct fq_config_state *st = cfg->state;
    char value[4096];
    int col = 0;
    /* Align the comments: find the longest NAME=value first. */
    for (size_t i = 0; i < cfg_n_params; i++) {
        format_value(cfg, &cfg_params[i], value, sizeof(value));
        int w = (int)(strlen(cfg_params[i].name) + 1 + strlen(value));
        if (w > col && w < 72)
            col = w;
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        int w = (int)(3 + strlen(kp->name) + 1 + strlen(kp->value));
        if (w > col && w < 72)
            col = w;
    }
    col += 2;
    for (size_t i = 0; i < cfg_n_params; i++) {
        const param_t *p = &cfg_params[i];
        format_value(cfg, p, value, sizeof(value));
        int w = 0;
        fprintf(out, "%s=", p->name);
        print_value(out, value, &w);
        w += (int)strlen(p->name) + 1;
        fprintf(out, "%*s# %s", col > w ? col - w : 2, "", origin_names[st->origin[i]]);
        if (st->where[i])
            fprintf(out, " %s", st->where[i]);
        if (p->type == P_STRING && !str_value(cfg, p))
            fprintf(out, " (unset)");
        fputc('\n', out);
    }
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const fq_kafka_prop_t *kp = &cfg->kafka_props[i];
        const char *v = cfg_kafka_prop_secret(kp->name) ? "****" : kp->value;
        int w = 0;
        fprintf(out, "-X %s=", kp->name);
        print_value(out, v, &w);
        w += (int)strlen(kp->name) + 4;
        fprintf(out, "%*s# %s %s\n", col > w ? col - w : 2, "", origin_names[kp->origin],
                st->prop_where[i]);
    }
}

void fq_config_print_help(FILE *out)
{
    int wflag = 0, wname = 0;
    for (size_t i = 0; i < cfg_n_params; i++) {
        int f = (int)strlen(cfg_params[i].flag), n = (int)strlen(cfg_params[i].name);
        wflag = f > wflag ? f : wflag;
        wname = n > wname ? n : wname;
    }
    fprintf(out, "Settings: flag (--flag VALUE or --flag=VALUE), environment variable, default.\n"
                 "Layers: defaults < --config FILE (KEY=VALUE lines) < environment < flags.\n\n");
    fprintf(out, "  %-*s  %-*s  %s\n", wflag, "FLAG", wname, "VARIABLE", "DEFAULT");
    for (size_t i = 0; i < cfg_n_params; i++) {
        const param_t *p = &cfg_params[i];
        const char *def = p->def ? p->def : (p->flags & F_DERIVED) ? "(derived)" : "(unset)";
        fprintf(out, "  %-*s  %-*s  %s\n  %-*s  %s\n", wflag, p->flag, wname, p->name, def, wflag,
                "", p->help);
    }
    fprintf(out, "\n  %-*s  %s\n  %-*s  %s\n", wflag, "-X prop=value", "KAFKA_CONFIG_<PROP>", wflag,
            "", "any librdkafka property (KAFKA_CONFIG_SECURITY_PROTOCOL -> security.protocol)");
    fprintf(out, "  %s\n  %-*s  %s\n", "--config FILE", wflag, "",
            "read settings from a KEY=VALUE file ('#' comments, export prefix allowed)");
}
