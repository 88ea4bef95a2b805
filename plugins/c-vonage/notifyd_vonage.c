/*
 * notifyd provider plugin for the Vonage SMS API (POST {base}/sms/json), written in C11 against
 * include/notifyd_plugin.h, ABI 1.1: the host encodes the form, parses the JSON answer and hands
 * transport errors back. Vonage takes one recipient per request, so a call sends its recipients one
 * exchange at a time and reports those already sent (`results`) before the next one.
 *
 * The state is the JSON array of the recipient results so far, as they go into `done`.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifyd_plugin.h"

#define DEFAULT_BASE_URL "https://rest.nexmo.com"
#define MAX_RECIPIENTS 10 /* one exchange each: well under the host's 16 per operation */
#define MAX_DEPTH 64

/* ------------------------------------------------------------------ JSON reader */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
    jtype type;
    bool b;
    char *s;            /* J_STR: decoded, NUL-terminated; J_NUM: the number's text */
    size_t len;
    char *key;          /* set on an object member */
    struct jval *child; /* J_ARR, J_OBJ: first element */
    struct jval *next;  /* next sibling */
    struct jval *all;   /* every node of one document, for jfree */
} jval;

typedef struct {
    const char *p, *end;
    jval *all;
    bool oom;
} jparser;

static void jfree(jval *all) {
    while (all) {
        jval *next = all->all;
        free(all->s);
        free(all->key);
        free(all);
        all = next;
    }
}

static void ws(jparser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v = v * 16 + (c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1000000);
    }
    return v < 0 ? -1 : v;
}

/* Reads a string at ps->p (on the opening quote) into a malloc'ed, NUL-terminated buffer. */
static char *jstring(jparser *ps, size_t *len) {
    const char *p = ++ps->p, *q = p;
    while (q < ps->end && *q != '"') q += *q == '\\' && q + 1 < ps->end ? 2 : 1;
    char *out = malloc((size_t)(q - p) + 1); /* decoding never makes a string longer */
    size_t n = 0;
    if (!out) { ps->oom = true; return NULL; }
    while (p < ps->end && *p != '"') {
        unsigned char c = (unsigned char)*p++;
        if (c < 0x20) goto bad;
        if (c != '\\') { out[n++] = (char)c; continue; }
        if (p >= ps->end) goto bad;
        c = (unsigned char)*p++;
        switch (c) {
        case '"': case '\\': case '/': out[n++] = (char)c; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            long cp = ps->end - p >= 4 ? hex4(p) : -1;
            if (cp < 0) goto bad;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && ps->end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                int lo = hex4(p + 2);
                if (lo >= 0xDC00 && lo <= 0xDFFF) { cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00); p += 6; }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate */
            if (cp < 0x80) out[n++] = (char)cp;
            else if (cp < 0x800) { out[n++] = (char)(0xC0 | cp >> 6); out[n++] = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) {
                out[n++] = (char)(0xE0 | cp >> 12); out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | cp >> 18); out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: goto bad;
        }
    }
    if (p >= ps->end) goto bad;
    ps->p = p + 1;
    out[n] = '\0';
    *len = n;
    return out;
bad:
    free(out);
    return NULL;
}

static jval *jvalue(jparser *ps, int depth) {
    ws(ps);
    if (ps->p >= ps->end || depth > MAX_DEPTH) return NULL;
    jval *v = calloc(1, sizeof *v);
    if (!v) { ps->oom = true; return NULL; }
    v->all = ps->all;
    ps->all = v;
    char c = *ps->p;
    if (c == '"') {
        v->type = J_STR;
        return (v->s = jstring(ps, &v->len)) ? v : NULL;
    }
    if (c == '[' || c == '{') {
        v->type = c == '[' ? J_ARR : J_OBJ;
        jval **tail = &v->child;
        ps->p++;
        ws(ps);
        if (ps->p < ps->end && *ps->p == (c == '[' ? ']' : '}')) { ps->p++; return v; }
        for (;;) {
            char *key = NULL;
            size_t klen;
            if (c == '{') {
                ws(ps);
                if (ps->p >= ps->end || *ps->p != '"' || !(key = jstring(ps, &klen))) return NULL;
                ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') { free(key); return NULL; }
                ps->p++;
            }
            jval *item = jvalue(ps, depth + 1);
            if (!item) { free(key); return NULL; }
            item->key = key;
            *tail = item;
            tail = &item->next;
            ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == (c == '[' ? ']' : '}')) { ps->p++; return v; }
            return NULL;
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i], n) == 0) {
            ps->p += n;
            v->type = i == 2 ? J_NULL : J_BOOL;
            v->b = i == 0;
            return v;
        }
    }
    /* A number, checked against JSON's grammar; its text is kept (balance copies it). */
    const char *s = ps->p, *p = s;
    if (p < ps->end && *p == '-') p++;
    if (p < ps->end && *p == '0') p++;
    else if (p < ps->end && *p >= '1' && *p <= '9') while (p < ps->end && *p >= '0' && *p <= '9') p++;
    else return NULL;
    if (p < ps->end && *p == '.') {
        if (++p >= ps->end || *p < '0' || *p > '9') return NULL;
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        if (++p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || *p < '0' || *p > '9') return NULL;
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    v->type = J_NUM;
    v->len = (size_t)(p - s);
    if (!(v->s = malloc(v->len + 1))) { ps->oom = true; return NULL; }
    memcpy(v->s, s, v->len);
    v->s[v->len] = '\0';
    ps->p = p;
    return v;
}

/* Parses a whole document: NULL when malformed (or out of memory: *oom). Every node goes into *all,
 * for jfree, whatever the outcome. */
static jval *jparse(const char *text, size_t len, jval **all, bool *oom) {
    jparser ps = {text, text + len, NULL, false};
    jval *v = jvalue(&ps, 0);
    ws(&ps);
    if (v && ps.p != ps.end) v = NULL;
    *all = ps.all;
    *oom = ps.oom;
    return v;
}

static const jval *jget(const jval *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (const jval *m = obj->child; m; m = m->next)
        if (strcmp(m->key, key) == 0) return m;
    return NULL;
}

static const jval *jtyped(const jval *obj, const char *key, jtype type) {
    const jval *v = jget(obj, key);
    return v && v->type == type ? v : NULL;
}

static const char *jstr(const jval *obj, const char *key) {
    const jval *v = jtyped(obj, key, J_STR);
    return v ? v->s : NULL;
}

/* ------------------------------------------------------------------ JSON writer */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap : 256);
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string, escaped; s is UTF-8 (all our strings come from valid JSON or from us). */
static void putq(sbuf *b, const char *s, size_t n) {
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; put(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); put(b, esc, 6); }
        else put(b, s + i, 1);
    }
    put(b, "\"", 1);
}

static void putqs(sbuf *b, const char *s) { putq(b, s, strlen(s)); }

/* Hands the buffer to the host: NOTIFYD_PANIC with nothing when memory ran out. */
static int32_t finish(sbuf *b, notifyd_buf *out, int32_t rc) {
    if (b->oom) { free(b->p); return NOTIFYD_PANIC; }
    out->ptr = (uint8_t *)b->p;
    out->len = b->len;
    return rc;
}

static int32_t error_doc(notifyd_buf *out, const char *code, const char *message) {
    sbuf b = {0};
    puts_(&b, "{\"v\":1,\"error\":{\"code\":");
    putqs(&b, code);
    puts_(&b, ",\"message\":");
    putqs(&b, message);
    puts_(&b, "}}");
    return finish(&b, out, NOTIFYD_ERROR);
}

/* ------------------------------------------------------------------ the plugin */

struct notifyd_instance {
    char *base; /* base URL without a trailing '/' */
    char *api_key, *api_secret;
};

/* A classified error of ours (not a copied transport error). */
typedef struct {
    const char *code;
    bool retryable;
    bool whole_call; /* about the account or the service: the call's other recipients too */
    char provider_code[24];
    long retry_after_ms; /* -1: none */
    char message[256];
} verror;

/* Vonage's `status` values → notifyd's codes (the README's table). */
static const struct rule {
    int status;
    const char *code;
    bool retryable, whole_call;
    const char *message;
} RULES[] = {
    {1, "throttled", true, true, "Vonage is throttling the account"},
    {2, "invalid_request", false, false, "Vonage says a parameter is missing"},
    {3, "invalid_request", false, false, "Vonage says a parameter is invalid"},
    {4, "auth", false, true, "Vonage refused the API key and secret"},
    {5, "unavailable", true, true, "Vonage had an internal error"},
    {6, "invalid_recipient", false, false, "Vonage could not route the number"},
    {7, "blocked_recipient", false, false, "Vonage says the number is barred"},
    {8, "auth", false, true, "the Vonage account is barred"},
    {9, "insufficient_funds", false, true, "the Vonage account is out of credit"},
    {10, "throttled", true, true, "Vonage has too many binds for the account"},
    {11, "auth", false, true, "the Vonage account is not enabled for HTTP"},
    {12, "content_rejected", false, false, "Vonage says the message is too long"},
    {14, "auth", false, true, "Vonage refused the signature"},
    {15, "invalid_sender", false, false, "Vonage refused the sender address"},
    {22, "route_closed", false, false, "Vonage has no route: invalid network code"},
    {23, "invalid_request", false, false, "Vonage refused the callback URL"},
    {29, "route_closed", false, false, "the destination is not whitelisted for the account"},
    {32, "auth", false, true, "Vonage disallows signature and API secret together"},
    {33, "invalid_recipient", false, false, "Vonage says the number is de-activated"},
};

/* Up to 64 bytes of a provider's text for a message: one line, cut on a UTF-8 boundary, and
 * nothing at all if it quotes a credential. */
static void snippet(const struct notifyd_instance *in, const char *s, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    if (!s || strstr(s, in->api_key) || strstr(s, in->api_secret)) return;
    for (; s[n] && n < 64 && n + 1 < cap; n++) out[n] = (s[n] == '\n' || s[n] == '\r' || s[n] == '\t') ? ' ' : s[n];
    while (n > 0 && s[n] && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* do not split a character */
    out[n] = '\0';
}

static void set_error(verror *e, const char *code, bool retryable, bool whole_call, const char *message) {
    e->code = code;
    e->retryable = retryable;
    e->whole_call = whole_call;
    e->provider_code[0] = '\0';
    e->retry_after_ms = -1;
    snprintf(e->message, sizeof e->message, "%s", message);
}

/* Any HTTP status but 200 is the service's trouble: true, with *e. */
static bool http_error(const jval *resp, verror *e) {
    const jval *status = jtyped(resp, "status", J_NUM);
    long http = status ? strtol(status->s, NULL, 10) : 0;
    if (http == 200) return false;
    if (http == 401 || http == 403) set_error(e, "auth", false, true, "Vonage refused the credentials");
    else if (http == 429) set_error(e, "throttled", true, true, "Vonage is throttling requests");
    else if (http >= 500) set_error(e, "unavailable", true, true, "Vonage is in trouble");
    else set_error(e, "unavailable", false, true, "Vonage answered an unexpected HTTP status");
    snprintf(e->provider_code, sizeof e->provider_code, "%ld", http);
    snprintf(e->message + strlen(e->message), sizeof e->message - strlen(e->message), " (HTTP %ld)", http);
    const char *after = jstr(jget(resp, "headers"), "retry-after");
    if (http == 429 && after && *after && strspn(after, "0123456789") == strlen(after) && strlen(after) < 9)
        e->retry_after_ms = atol(after) * 1000;
    return true;
}

static void unreadable(const struct notifyd_instance *in, const jval *resp, verror *e) {
    char text[80];
    snippet(in, jstr(resp, "body"), text, sizeof text);
    set_error(e, "plugin_error", false, false, "unreadable answer from Vonage");
    if (*text) snprintf(e->message + strlen(e->message), sizeof e->message - strlen(e->message), ": \"%s\"", text);
}

/* Classifies the response to one POST /sms/json: true with *id when sent, else *e. */
static bool classify(const struct notifyd_instance *in, const jval *resp, const char **id, verror *e) {
    char text[80];
    if (http_error(resp, e)) return false;
    const jval *msgs = jtyped(jget(resp, "json"), "messages", J_ARR);
    if (!msgs || !msgs->child) {
        unreadable(in, resp, e);
        return false;
    }
    /* One entry per part of a long text: sent when every part is. */
    const jval *failed = NULL;
    *id = NULL;
    for (const jval *m = msgs->child; m; m = m->next) {
        const jval *sv = jget(m, "status");
        if (sv && (sv->type == J_STR || sv->type == J_NUM) && strcmp(sv->s, "0") == 0) {
            if (!*id) *id = jstr(m, "message-id");
        } else if (!failed) failed = m;
    }
    if (failed) {
        const jval *sv = jget(failed, "status");
        const char *st = sv && (sv->type == J_STR || sv->type == J_NUM) ? sv->s : "";
        const char *why = jstr(failed, "error-text");
        long code = *st && strspn(st, "0123456789") == strlen(st) && strlen(st) < 6 ? atol(st) : -1;
        const struct rule *r = NULL;
        for (size_t i = 0; i < sizeof RULES / sizeof RULES[0]; i++)
            if (RULES[i].status == code) r = &RULES[i];
        if (r) set_error(e, r->code, r->retryable, r->whole_call, r->message);
        else set_error(e, "plugin_error", false, false, "Vonage answered an unknown status");
        /* Status 3 names the parameter: an invalid `to` is the number's fault, not the request's. */
        if (code == 3 && why && (strstr(why, "number") || strstr(why, "Number"))) e->code = "invalid_recipient";
        if (*id) { /* some parts went out: resending would repeat them */
            set_error(e, "plugin_error", false, false, "Vonage sent only some parts of the text");
        }
        snprintf(e->provider_code, sizeof e->provider_code, "%.15s", st);
        snippet(in, why, text, sizeof text);
        if (*text) snprintf(e->message + strlen(e->message), sizeof e->message - strlen(e->message), ": %s", text);
        return false;
    }
    if (!*id || !**id) {
        set_error(e, "plugin_error", false, false, "Vonage accepted the message but gave no message-id");
        return false;
    }
    return true;
}

static void put_error(sbuf *b, const verror *e) {
    puts_(b, "{\"code\":");
    putqs(b, e->code);
    puts_(b, ",\"message\":");
    putqs(b, e->message);
    if (e->provider_code[0]) { puts_(b, ",\"provider_code\":"); putqs(b, e->provider_code); }
    puts_(b, e->retryable ? ",\"retryable\":true" : ",\"retryable\":false");
    if (e->retry_after_ms >= 0) {
        char n[48];
        snprintf(n, sizeof n, ",\"retry_after_ms\":%ld", e->retry_after_ms);
        puts_(b, n);
    }
    puts_(b, "}");
}

static void put_result(sbuf *b, const jval *to, const char *id, const verror *e) {
    puts_(b, "{\"to\":");
    putq(b, to->s, to->len);
    if (id) { puts_(b, ",\"provider_message_id\":"); putqs(b, id); }
    else { puts_(b, ",\"error\":"); put_error(b, e); }
    puts_(b, "}");
}

static char *dup(const char *s) {
    char *d = malloc(strlen(s) + 1);
    return d ? strcpy(d, s) : NULL;
}

static const char *const SETTINGS[] = {"api_key", "api_secret"};

static int32_t vonage_instance_new(const uint8_t *settings, size_t len, notifyd_instance **instance,
                                   notifyd_buf *out) {
    if (!settings || !instance || !out) return NOTIFYD_PANIC;
    jval *all;
    bool oom;
    const jval *doc = jparse((const char *)settings, len, &all, &oom);
    const jval *set = jtyped(doc, "settings", J_OBJ), *base = jget(doc, "base_url");
    const char *vals[2] = {NULL, NULL};
    char msg[256];
    int32_t rc = NOTIFYD_OK;
    if (oom) { jfree(all); return NOTIFYD_PANIC; }
    if (!set || !jtyped(doc, "v", J_NUM) || strcmp(jget(doc, "v")->s, "1") != 0 ||
        (base && base->type != J_STR && base->type != J_NULL)) {
        jfree(all);
        return error_doc(out, "invalid_settings", "the settings document is malformed");
    }
    /* It needs the host to encode `form` and to hand it transport errors (ABI 1.1); a 1.0 host,
     * which does not say its minor, would ignore both. */
    if (!jtyped(doc, "abi_minor", J_NUM) || strcmp(jget(doc, "abi_minor")->s, "0") == 0) {
        jfree(all);
        return error_doc(out, "invalid_settings", "this plugin needs notifyd with plugin ABI 1.1 or later");
    }
    for (const jval *m = set->child; m && rc == NOTIFYD_OK; m = m->next) {
        int k = strcmp(m->key, SETTINGS[0]) == 0 ? 0 : strcmp(m->key, SETTINGS[1]) == 0 ? 1 : -1;
        if (k < 0) {
            snprintf(msg, sizeof msg, "unknown setting `%.100s` (known: api_key, api_secret)", m->key);
            rc = error_doc(out, "invalid_settings", msg);
        } else if (m->type != J_STR || m->len == 0 || strlen(m->s) != m->len) {
            snprintf(msg, sizeof msg, "setting `%s` must be a non-empty string", m->key);
            rc = error_doc(out, "invalid_settings", msg);
        } else vals[k] = m->s;
    }
    for (int k = 0; k < 2 && rc == NOTIFYD_OK; k++)
        if (!vals[k]) {
            snprintf(msg, sizeof msg, "missing setting `%s` (a string)", SETTINGS[k]);
            rc = error_doc(out, "invalid_settings", msg);
        }
    if (rc == NOTIFYD_OK) {
        struct notifyd_instance *in = calloc(1, sizeof *in);
        const char *b = base && base->type == J_STR ? base->s : DEFAULT_BASE_URL;
        size_t blen = strlen(b);
        while (blen > 0 && b[blen - 1] == '/') blen--;
        if (in && (in->base = malloc(blen + 1)) && (in->api_key = dup(vals[0])) &&
            (in->api_secret = dup(vals[1]))) {
            memcpy(in->base, b, blen);
            in->base[blen] = '\0';
            *instance = in;
        } else {
            if (in) { free(in->base); free(in->api_key); free(in); }
            rc = NOTIFYD_PANIC;
        }
    }
    jfree(all);
    return rc;
}

static void vonage_instance_free(notifyd_instance *in) {
    if (!in) return;
    free(in->base);
    free(in->api_key);
    free(in->api_secret);
    free(in);
}

static void put_url(sbuf *b, const struct notifyd_instance *in, const char *path) {
    sbuf url = {0};
    puts_(&url, in->base);
    puts_(&url, path);
    putqs(b, url.oom ? "" : url.p);
    b->oom |= url.oom;
    free(url.p);
}

static void put_pair(sbuf *b, const char *name, const char *value, size_t len) {
    puts_(b, "[");
    putqs(b, name);
    puts_(b, ",");
    putq(b, value, len);
    puts_(b, "]");
}

/* Counts UTF-8 characters. */
static size_t chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* The HTTP step for recipient `to`, with `state` (the results so far, a JSON array) and the
 * recipients already sent as `results`. */
static int32_t send_step(const struct notifyd_instance *in, const jval *input, const jval *to,
                         const jval *results, const char *state, size_t state_len, notifyd_buf *out) {
    const jval *id = jtyped(input, "id", J_STR), *text = jtyped(input, "text", J_STR);
    const jval *from = jtyped(input, "from", J_STR);
    const char *enc = jstr(input, "encoding");
    sbuf b = {0};
    puts_(&b, "{\"v\":1,\"http\":{\"method\":\"POST\",\"url\":");
    put_url(&b, in, "/sms/json");
    puts_(&b, ",\"form\":[");
    put_pair(&b, "api_key", in->api_key, strlen(in->api_key));
    puts_(&b, ",");
    put_pair(&b, "api_secret", in->api_secret, strlen(in->api_secret));
    puts_(&b, ",");
    put_pair(&b, "to", to->s, to->len);
    if (from) { puts_(&b, ","); put_pair(&b, "from", from->s, from->len); }
    puts_(&b, ",");
    put_pair(&b, "text", text->s, text->len);
    if (enc && strcmp(enc, "ucs2") == 0) { puts_(&b, ","); put_pair(&b, "type", "unicode", 7); }
    if (chars(id->s, id->len) <= 100) { puts_(&b, ","); put_pair(&b, "client-ref", id->s, id->len); }
    puts_(&b, "]},\"state\":");
    putq(&b, state, state_len);
    puts_(&b, ",\"results\":[");
    bool first = true;
    for (const jval *r = results ? results->child : NULL; r; r = r->next) {
        const jval *mid = jtyped(r, "provider_message_id", J_STR);
        if (!mid || !jstr(r, "to") || jget(r, "error")) continue;
        puts_(&b, first ? "{\"to\":" : ",{\"to\":");
        first = false;
        putqs(&b, jstr(r, "to"));
        puts_(&b, ",\"provider_message_id\":");
        putq(&b, mid->s, mid->len);
        puts_(&b, "}");
    }
    puts_(&b, "]}");
    return finish(&b, out, NOTIFYD_OK);
}

static int32_t vonage_send(const notifyd_instance *in, const uint8_t *input, size_t input_len, notifyd_buf *out) {
    if (!in || !out || (!input && input_len)) return NOTIFYD_PANIC;
    jval *all, *sall = NULL;
    bool oom, soom = false;
    const jval *doc = jparse((const char *)input, input_len, &all, &oom);
    const jval *in_ = jtyped(doc, "input", J_OBJ), *ex = jtyped(doc, "exchange", J_OBJ);
    const jval *tos = jtyped(in_, "to", J_ARR), *from = jget(in_, "from");
    bool ok = jtyped(doc, "v", J_NUM) && strcmp(jget(doc, "v")->s, "1") == 0 && tos && tos->child &&
              jtyped(in_, "id", J_STR) && jtyped(in_, "text", J_STR) && jstr(in_, "encoding") &&
              (!from || from->type == J_STR);
    for (const jval *t = tos ? tos->child : NULL; t; t = t->next) ok = ok && t->type == J_STR;
    if (oom) { jfree(all); return NOTIFYD_PANIC; }
    if (!ok) { jfree(all); return error_doc(out, "plugin_error", "the host's input document is malformed"); }

    /* The first call: the first recipient, no results yet. */
    if (!ex) {
        int32_t rc = send_step(in, in_, tos->child, NULL, "[]", 2, out);
        jfree(all);
        return rc;
    }

    /* A later call: the state holds one result per recipient already tried, in the order of `to`. */
    const jval *st = jtyped(ex, "state", J_STR);
    const jval *done = st ? jparse(st->s, st->len, &sall, &soom) : NULL;
    const jval *to = tos->child;
    size_t tried = 0;
    ok = done && done->type == J_ARR && st->len >= 2 && st->s[st->len - 1] == ']';
    for (const jval *r = ok ? done->child : NULL; r && ok; r = r->next, to = to->next, tried++) {
        const char *rto = jstr(r, "to");
        ok = to && rto && strcmp(rto, to->s) == 0;
    }
    const jval *resp = jtyped(ex, "response", J_OBJ), *terr = jtyped(ex, "error", J_OBJ);
    if (oom || soom) { jfree(all); jfree(sall); return NOTIFYD_PANIC; }
    if (!ok || !to || (!resp && !terr)) {
        jfree(all);
        jfree(sall);
        return error_doc(out, "plugin_error", "the exchange's state does not belong to this input");
    }

    /* `done` so far: the state without its closing bracket. */
    sbuf b = {0};
    put(&b, st->s, st->len - 1);
    const char *sep = tried ? "," : "";
    if (terr) {
        /* A transport error: copy it unchanged for this recipient, leave out those not tried. */
        puts_(&b, sep);
        puts_(&b, "{\"to\":");
        putq(&b, to->s, to->len);
        puts_(&b, ",\"error\":{\"code\":");
        putqs(&b, jstr(terr, "code") ? jstr(terr, "code") : "unavailable");
        puts_(&b, ",\"message\":");
        putqs(&b, jstr(terr, "message") ? jstr(terr, "message") : "transport error");
        puts_(&b, ",\"retryable\":true}}");
    } else {
        const char *id = NULL;
        verror e;
        bool sent = classify(in, resp, &id, &e);
        puts_(&b, sep);
        put_result(&b, to, sent ? id : NULL, &e);
        if (!sent && e.whole_call) /* the account or the service: the same for those not tried */
            for (const jval *t = to->next; t; t = t->next) { puts_(&b, ","); put_result(&b, t, NULL, &e); }
        else if (to->next) {
            /* Go on with the next recipient; the new state is `done` so far. */
            puts_(&b, "]");
            jval *nall;
            bool noom;
            const jval *results = b.oom ? NULL : jparse(b.p, b.len, &nall, &noom);
            int32_t rc = b.oom || noom ? NOTIFYD_PANIC
                         : results     ? send_step(in, in_, to->next, results, b.p, b.len, out)
                                       : error_doc(out, "plugin_error", "the vonage plugin wrote a bad state");
            if (!b.oom) jfree(nall);
            free(b.p);
            jfree(all);
            jfree(sall);
            return rc;
        }
    }
    jfree(all);
    jfree(sall);
    sbuf d = {0};
    puts_(&d, "{\"v\":1,\"done\":{\"recipients\":");
    put(&d, b.p ? b.p : "", b.len);
    puts_(&d, "]}}");
    d.oom |= b.oom;
    free(b.p);
    return finish(&d, out, NOTIFYD_OK);
}

/* GET {base}/account/get-balance → {"value":10.28,"autoReload":false}, in EUR. */
static int32_t vonage_balance(const notifyd_instance *in, const uint8_t *input, size_t input_len, notifyd_buf *out) {
    if (!in || !out || (!input && input_len)) return NOTIFYD_PANIC;
    jval *all;
    bool oom;
    const jval *doc = jparse((const char *)input, input_len, &all, &oom);
    const jval *ex = jtyped(doc, "exchange", J_OBJ);
    sbuf b = {0};
    if (oom) { jfree(all); return NOTIFYD_PANIC; }
    if (!jtyped(doc, "input", J_OBJ)) {
        jfree(all);
        return error_doc(out, "plugin_error", "the host's input document is malformed");
    }
    if (!ex) {
        puts_(&b, "{\"v\":1,\"http\":{\"method\":\"GET\",\"url\":");
        put_url(&b, in, "/account/get-balance");
        puts_(&b, ",\"query\":[");
        put_pair(&b, "api_key", in->api_key, strlen(in->api_key));
        puts_(&b, ",");
        put_pair(&b, "api_secret", in->api_secret, strlen(in->api_secret));
        puts_(&b, "]},\"state\":\"balance\"}");
    } else {
        const jval *resp = jtyped(ex, "response", J_OBJ), *terr = jtyped(ex, "error", J_OBJ);
        const jval *value = jtyped(jget(resp, "json"), "value", J_NUM);
        verror e = {0};
        if (terr) { /* a transport error, copied */
            set_error(&e, jstr(terr, "code") ? jstr(terr, "code") : "unavailable", true, true, "");
            snprintf(e.message, sizeof e.message, "%s", jstr(terr, "message") ? jstr(terr, "message") : "");
        } else if (!http_error(resp, &e) && !value) {
            unreadable(in, resp, &e);
        }
        if (!terr && e.code == NULL) {
            puts_(&b, "{\"v\":1,\"done\":{\"amount\":");
            puts_(&b, value->s);
            puts_(&b, ",\"currency\":\"EUR\"}}");
        } else {
            puts_(&b, "{\"v\":1,\"done\":{\"error\":");
            put_error(&b, &e);
            puts_(&b, "}}");
        }
    }
    jfree(all);
    return finish(&b, out, NOTIFYD_OK);
}

static int32_t vonage_describe(notifyd_buf *out) {
    if (!out) return NOTIFYD_PANIC;
    sbuf b = {0};
    char head[64];
    snprintf(head, sizeof head, "{\"v\":1,\"name\":\"vonage\",\"version\":\"0.1.0\",\"max_recipients\":%d,",
             MAX_RECIPIENTS);
    puts_(&b, head);
    puts_(&b, "\"alphabet\":\"unicode\",\"default_base_url\":\"" DEFAULT_BASE_URL "\","
              "\"exchange_errors\":true,\"response_json\":true}");
    return finish(&b, out, NOTIFYD_OK);
}

static void vonage_free_buf(notifyd_buf buf) { free(buf.ptr); }

static const notifyd_plugin_vtable TABLE = {
    .struct_size = (uint32_t)sizeof(notifyd_plugin_vtable),
    .abi_major = NOTIFYD_ABI_MAJOR,
    .abi_minor = NOTIFYD_ABI_MINOR,
    .capabilities = NOTIFYD_CAP_SEND | NOTIFYD_CAP_BALANCE,
    .free_buf = vonage_free_buf,
    .describe = vonage_describe,
    .instance_new = vonage_instance_new,
    .instance_free = vonage_instance_free,
    .send = vonage_send,
    .status = NULL,
    .balance = vonage_balance,
    .callback = NULL,
};

const notifyd_plugin_vtable *notifyd_plugin_v1(void) { return &TABLE; }
