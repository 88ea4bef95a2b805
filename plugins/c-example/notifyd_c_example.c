/*
 * notifyd_c_example.c: a notifyd provider plugin written in plain C11 against
 * include/notifyd_plugin.h, for the "Example HTTP SMS gateway" described in
 * plugins/c-example/README.md.
 *
 * Build:
 *   cc -std=c11 -O2 -fPIC -shared -I include -o libnotifyd_c_example.so \
 *      plugins/c-example/notifyd_c_example.c
 *
 * The plugin is sans-IO like every notifyd plugin: `send` first answers with
 * the HTTP request to perform, and the host calls `send` again with the HTTP
 * response, which the plugin classifies into a per-recipient result.
 *
 * It needs nothing but the C standard library: it carries its own small JSON
 * reader (recursive descent, bounded depth, strict UTF-8) and JSON writer.
 * Every output buffer is allocated with malloc and released by `free_buf`. An
 * instance is immutable after `instance_new`, so many threads may use it at
 * once. Nothing here aborts on bad input: malformed documents are answered
 * with NOTIFYD_ERROR and an error document.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "notifyd_plugin.h"

#define PLUGIN_NAME "c-example"
#define PLUGIN_VERSION "0.1.0"
#define MAX_RECIPIENTS 50
#define MAX_NUMBER_DIGITS 32
#define DEFAULT_BASE_URL "http://127.0.0.1:8080"
#define SEND_PATH "/api/send"
#define JSON_MAX_DEPTH 64
#define SNIPPET_MAX 64

/* ======================================================================== */
/* String builder                                                            */
/* ======================================================================== */

/* A growable, always NUL-terminated byte string. `oom` sticks once set. */
typedef struct {
    char *p;
    size_t len;
    size_t cap;
    int oom;
} sb;

static void sb_reserve(sb *b, size_t extra) {
    size_t need, cap;
    char *p;
    if (b->oom) {
        return;
    }
    if (extra > SIZE_MAX - b->len - 1) {
        b->oom = 1;
        return;
    }
    need = b->len + extra + 1;
    if (need <= b->cap) {
        return;
    }
    cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_put(sb *b, const void *s, size_t n) {
    sb_reserve(b, n);
    if (b->oom) {
        return;
    }
    if (n > 0) {
        memcpy(b->p + b->len, s, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sb *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_putc(sb *b, char c) { sb_put(b, &c, 1); }

static void sb_u64(sb *b, uint64_t v) {
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v != 0);
    sb_put(b, tmp + i, sizeof tmp - i);
}

static void sb_free(sb *b) {
    free(b->p);
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Writes `s` (n bytes of UTF-8) as a JSON string: quotes and backslashes are
 * escaped, every control character becomes \u00XX. */
static void sb_json_str(sb *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    sb_putc(b, '"');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c < 0x20) {
            sb_put(b, s + run, i - run);
            run = i + 1;
            if (c == '"') {
                sb_put(b, "\\\"", 2);
            } else if (c == '\\') {
                sb_put(b, "\\\\", 2);
            } else {
                char e[6];
                e[0] = '\\';
                e[1] = 'u';
                e[2] = '0';
                e[3] = '0';
                e[4] = hex[c >> 4];
                e[5] = hex[c & 15];
                sb_put(b, e, sizeof e);
            }
        }
    }
    sb_put(b, s + run, n - run);
    sb_putc(b, '"');
}

static void sb_json_cstr(sb *b, const char *s) { sb_json_str(b, s, strlen(s)); }

/* ======================================================================== */
/* Encoders                                                                  */
/* ======================================================================== */

/* Standard base64 (RFC 4648, section 4) with padding. */
static void sb_base64(sb *b, const unsigned char *s, size_t n) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    char q[4];
    while (n - i >= 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | (uint32_t)s[i + 2];
        q[0] = alphabet[(v >> 18) & 63];
        q[1] = alphabet[(v >> 12) & 63];
        q[2] = alphabet[(v >> 6) & 63];
        q[3] = alphabet[v & 63];
        sb_put(b, q, 4);
        i += 3;
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        q[0] = alphabet[(v >> 18) & 63];
        q[1] = alphabet[(v >> 12) & 63];
        q[2] = '=';
        q[3] = '=';
        sb_put(b, q, 4);
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        q[0] = alphabet[(v >> 18) & 63];
        q[1] = alphabet[(v >> 12) & 63];
        q[2] = alphabet[(v >> 6) & 63];
        q[3] = '=';
        sb_put(b, q, 4);
    }
}

static int is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

/* Percent-encodes every byte except RFC 3986 unreserved characters. */
static void sb_percent(sb *b, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            sb_putc(b, (char)c);
        } else {
            char e[3];
            e[0] = '%';
            e[1] = hex[c >> 4];
            e[2] = hex[c & 15];
            sb_put(b, e, 3);
        }
    }
}

/* ======================================================================== */
/* JSON reader                                                               */
/* ======================================================================== */

typedef enum { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } jtype;

typedef struct jval jval;
typedef struct jmember jmember;

struct jval {
    jtype type;
    int boolean;    /* J_BOOL */
    int is_int;     /* J_NUMBER: an integer without fraction/exponent that fits int64 */
    int64_t integer;
    char *str;      /* J_STRING: decoded UTF-8, NUL-terminated (may hold \u0000) */
    size_t len;     /* J_STRING: byte length without the terminator */
    size_t count;   /* J_ARRAY, J_OBJECT */
    jval *items;    /* J_ARRAY */
    jmember *members; /* J_OBJECT, in document order */
};

struct jmember {
    char *key;
    size_t key_len;
    jval value;
};

typedef struct {
    const unsigned char *start;
    const unsigned char *p;
    const unsigned char *end;
    int depth;
    int oom;
    const char *err; /* first error, a static string */
    size_t err_at;   /* byte offset of the first error */
} jparser;

static void jfree(jval *v) {
    size_t i;
    if (v == NULL) {
        return;
    }
    switch (v->type) {
    case J_STRING:
        free(v->str);
        break;
    case J_ARRAY:
        for (i = 0; i < v->count; i++) {
            jfree(&v->items[i]);
        }
        free(v->items);
        break;
    case J_OBJECT:
        for (i = 0; i < v->count; i++) {
            free(v->members[i].key);
            jfree(&v->members[i].value);
        }
        free(v->members);
        break;
    default:
        break;
    }
    memset(v, 0, sizeof *v);
}

static int jfail(jparser *ps, const char *msg) {
    if (ps->err == NULL) {
        ps->err = msg;
        ps->err_at = (size_t)(ps->p - ps->start);
    }
    return 0;
}

static int joom(jparser *ps) {
    ps->oom = 1;
    return jfail(ps, "out of memory");
}

static void jskip_ws(jparser *ps) {
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
        ps->p++;
    }
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Reads the 4 hex digits after "\u" (ps->p on the first digit). */
static int jread_hex4(jparser *ps, uint32_t *out) {
    uint32_t v = 0;
    int i;
    if (ps->end - ps->p < 4) {
        ps->p = ps->end;
        return jfail(ps, "unterminated \\u escape");
    }
    for (i = 0; i < 4; i++) {
        int h = hexval(ps->p[i]);
        if (h < 0) {
            return jfail(ps, "invalid \\u escape: expected 4 hex digits");
        }
        v = (v << 4) | (uint32_t)h;
    }
    ps->p += 4;
    *out = v;
    return 1;
}

static void sb_utf8(sb *b, uint32_t cp) {
    char u[4];
    if (cp < 0x80) {
        u[0] = (char)cp;
        sb_put(b, u, 1);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, u, 4);
    }
}

/* Length of the well-formed UTF-8 sequence at p (< end), or 0 when invalid
 * (bad lead byte, truncated, overlong, surrogate, beyond U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    size_t n, i;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) {
            lo = 0xA0;
        } else if (c == 0xED) {
            hi = 0x9F;
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) {
            lo = 0x90;
        } else if (c == 0xF4) {
            hi = 0x8F;
        }
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n) {
        return 0;
    }
    if (p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (i = 2; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return n;
}

/* Parses a string (ps->p on the opening quote) into a malloc'ed buffer. */
static int jparse_string(jparser *ps, char **out, size_t *out_len) {
    sb b = {0};
    ps->p++; /* opening quote */
    for (;;) {
        unsigned char c;
        if (ps->p >= ps->end) {
            sb_free(&b);
            return jfail(ps, "unterminated string");
        }
        c = *ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20) {
            sb_free(&b);
            return jfail(ps, "unescaped control character in string");
        }
        if (c == '\\') {
            unsigned char e;
            ps->p++;
            if (ps->p >= ps->end) {
                sb_free(&b);
                return jfail(ps, "unterminated escape in string");
            }
            e = *ps->p++;
            switch (e) {
            case '"': sb_putc(&b, '"'); break;
            case '\\': sb_putc(&b, '\\'); break;
            case '/': sb_putc(&b, '/'); break;
            case 'b': sb_putc(&b, '\b'); break;
            case 'f': sb_putc(&b, '\f'); break;
            case 'n': sb_putc(&b, '\n'); break;
            case 'r': sb_putc(&b, '\r'); break;
            case 't': sb_putc(&b, '\t'); break;
            case 'u': {
                uint32_t cp, lo;
                if (!jread_hex4(ps, &cp)) {
                    sb_free(&b);
                    return 0;
                }
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    sb_free(&b);
                    return jfail(ps, "lone low surrogate in \\u escape");
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                        sb_free(&b);
                        return jfail(ps, "high surrogate not followed by a \\u low surrogate");
                    }
                    ps->p += 2;
                    if (!jread_hex4(ps, &lo)) {
                        sb_free(&b);
                        return 0;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        sb_free(&b);
                        return jfail(ps, "high surrogate not followed by a low surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                sb_utf8(&b, cp);
                break;
            }
            default:
                ps->p--;
                sb_free(&b);
                return jfail(ps, "invalid escape in string");
            }
            continue;
        }
        {
            size_t n = utf8_seq_len(ps->p, ps->end);
            if (n == 0) {
                sb_free(&b);
                return jfail(ps, "invalid UTF-8 in string");
            }
            sb_put(&b, ps->p, n);
            ps->p += n;
        }
    }
    if (b.oom) {
        sb_free(&b);
        return joom(ps);
    }
    if (b.p == NULL) { /* empty string: still hand out a real, terminated buffer */
        b.p = malloc(1);
        if (b.p == NULL) {
            return joom(ps);
        }
        b.p[0] = '\0';
    }
    *out = b.p;
    *out_len = b.len;
    return 1;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int jparse_number(jparser *ps, jval *out) {
    int neg = 0, is_int = 1;
    uint64_t mag = 0;
    out->type = J_NUMBER;
    if (*ps->p == '-') {
        neg = 1;
        ps->p++;
    }
    if (ps->p >= ps->end || !is_digit(*ps->p)) {
        return jfail(ps, "invalid number");
    }
    if (*ps->p == '0') {
        ps->p++;
    } else {
        while (ps->p < ps->end && is_digit(*ps->p)) {
            unsigned d = (unsigned)(*ps->p - '0');
            if (mag > (UINT64_MAX - d) / 10) {
                is_int = 0; /* too large: still a valid number, not an integer we use */
            } else {
                mag = mag * 10 + d;
            }
            ps->p++;
        }
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (ps->p >= ps->end || !is_digit(*ps->p)) {
            return jfail(ps, "invalid number: expected a digit after `.`");
        }
        while (ps->p < ps->end && is_digit(*ps->p)) {
            ps->p++;
        }
        is_int = 0;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) {
            ps->p++;
        }
        if (ps->p >= ps->end || !is_digit(*ps->p)) {
            return jfail(ps, "invalid number: expected a digit in the exponent");
        }
        while (ps->p < ps->end && is_digit(*ps->p)) {
            ps->p++;
        }
        is_int = 0;
    }
    if (is_int && mag > (uint64_t)INT64_MAX) {
        is_int = 0;
    }
    out->is_int = is_int;
    if (is_int) {
        out->integer = neg ? -(int64_t)mag : (int64_t)mag;
    }
    return 1;
}

static int jliteral(jparser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        return jfail(ps, "invalid literal (expected true, false or null)");
    }
    ps->p += n;
    return 1;
}

/* Parses one value into *out. On failure *out is left in a state jfree accepts. */
static int jparse_value(jparser *ps, jval *out) {
    memset(out, 0, sizeof *out);
    jskip_ws(ps);
    if (ps->p >= ps->end) {
        return jfail(ps, "unexpected end of input");
    }
    switch (*ps->p) {
    case '{': {
        size_t cap = 0;
        if (++ps->depth > JSON_MAX_DEPTH) {
            return jfail(ps, "nesting too deep");
        }
        out->type = J_OBJECT;
        ps->p++;
        jskip_ws(ps);
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            ps->depth--;
            return 1;
        }
        for (;;) {
            jmember *m;
            jskip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') {
                return jfail(ps, "expected a string key");
            }
            if (out->count == cap) {
                jmember *grown;
                size_t ncap = cap ? cap * 2 : 8;
                if (ncap > SIZE_MAX / sizeof(jmember)) {
                    return joom(ps);
                }
                grown = realloc(out->members, ncap * sizeof(jmember));
                if (grown == NULL) {
                    return joom(ps);
                }
                out->members = grown;
                cap = ncap;
            }
            m = &out->members[out->count];
            memset(m, 0, sizeof *m);
            if (!jparse_string(ps, &m->key, &m->key_len)) {
                return 0;
            }
            out->count++; /* from here on jfree owns the member */
            jskip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                return jfail(ps, "expected `:` after an object key");
            }
            ps->p++;
            if (!jparse_value(ps, &m->value)) {
                return 0;
            }
            jskip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == '}') {
                ps->p++;
                break;
            }
            return jfail(ps, "expected `,` or `}` in an object");
        }
        ps->depth--;
        return 1;
    }
    case '[': {
        size_t cap = 0;
        if (++ps->depth > JSON_MAX_DEPTH) {
            return jfail(ps, "nesting too deep");
        }
        out->type = J_ARRAY;
        ps->p++;
        jskip_ws(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            ps->depth--;
            return 1;
        }
        for (;;) {
            jval *item;
            if (out->count == cap) {
                jval *grown;
                size_t ncap = cap ? cap * 2 : 8;
                if (ncap > SIZE_MAX / sizeof(jval)) {
                    return joom(ps);
                }
                grown = realloc(out->items, ncap * sizeof(jval));
                if (grown == NULL) {
                    return joom(ps);
                }
                out->items = grown;
                cap = ncap;
            }
            item = &out->items[out->count];
            memset(item, 0, sizeof *item);
            out->count++;
            if (!jparse_value(ps, item)) {
                return 0;
            }
            jskip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                break;
            }
            return jfail(ps, "expected `,` or `]` in an array");
        }
        ps->depth--;
        return 1;
    }
    case '"':
        out->type = J_STRING;
        return jparse_string(ps, &out->str, &out->len);
    case 't':
        out->type = J_BOOL;
        out->boolean = 1;
        return jliteral(ps, "true");
    case 'f':
        out->type = J_BOOL;
        return jliteral(ps, "false");
    case 'n':
        out->type = J_NULL;
        return jliteral(ps, "null");
    default:
        if (*ps->p == '-' || is_digit(*ps->p)) {
            return jparse_number(ps, out);
        }
        return jfail(ps, "unexpected character");
    }
}

/*
 * Parses a whole document. On failure returns 0, leaves *root empty, sets
 * *oom when memory ran out, and writes "<what> at byte <n>" into err.
 */
static int jparse(const uint8_t *buf, size_t len, jval *root, sb *err, int *oom) {
    jparser ps;
    memset(root, 0, sizeof *root);
    *oom = 0;
    if (buf == NULL || len == 0) {
        sb_puts(err, "the document is empty");
        return 0;
    }
    memset(&ps, 0, sizeof ps);
    ps.start = buf;
    ps.p = buf;
    ps.end = buf + len;
    if (jparse_value(&ps, root)) {
        jskip_ws(&ps);
        if (ps.p != ps.end) {
            jfail(&ps, "unexpected data after the document");
        }
    }
    if (ps.err != NULL) {
        jfree(root);
        *oom = ps.oom;
        sb_puts(err, ps.err);
        sb_puts(err, " at byte ");
        sb_u64(err, (uint64_t)ps.err_at);
        return 0;
    }
    return 1;
}

/* The member `key` of object `o`, or NULL (also when `o` is not an object). */
static const jval *jget(const jval *o, const char *key) {
    size_t i, n = strlen(key);
    if (o == NULL || o->type != J_OBJECT) {
        return NULL;
    }
    for (i = 0; i < o->count; i++) {
        if (o->members[i].key_len == n && memcmp(o->members[i].key, key, n) == 0) {
            return &o->members[i].value;
        }
    }
    return NULL;
}

/* Follows a path of keys ended by a null pointer:
 * jpath(root, "exchange", "response", (const char *)NULL). */
static const jval *jpath(const jval *v, ...) {
    va_list ap;
    const char *key;
    va_start(ap, v);
    while (v != NULL && (key = va_arg(ap, const char *)) != NULL) {
        v = jget(v, key);
    }
    va_end(ap);
    return v;
}

/* A member that is absent or null counts as absent. */
static const jval *jopt(const jval *v) { return (v == NULL || v->type == J_NULL) ? NULL : v; }

/* ======================================================================== */
/* Outputs                                                                   */
/* ======================================================================== */

/* Out of memory: nothing sensible can be written; the host treats it as a crash
 * of this call (plugin_error), never of the daemon. */
static int32_t out_oom(notifyd_buf *out) {
    out->ptr = NULL;
    out->len = 0;
    return NOTIFYD_PANIC;
}

/* Hands the builder's buffer to the host (or reports running out of memory). */
static int32_t out_give(sb *b, int32_t rc, notifyd_buf *out) {
    if (b->oom || b->p == NULL) {
        sb_free(b);
        return out_oom(out);
    }
    out->ptr = (uint8_t *)b->p;
    out->len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return rc;
}

/* A classified provider error (wire::ProviderError). */
typedef struct {
    const char *code;
    const char *message;
    size_t message_len;
    const char *provider_code; /* NULL: absent */
    size_t provider_code_len;
    int retryable;
    int has_retry_after;
    uint64_t retry_after_ms;
} perr;

static void sb_perr(sb *b, const perr *e) {
    sb_puts(b, "{\"code\":");
    sb_json_cstr(b, e->code);
    sb_puts(b, ",\"message\":");
    sb_json_str(b, e->message, e->message_len);
    if (e->provider_code != NULL) {
        sb_puts(b, ",\"provider_code\":");
        sb_json_str(b, e->provider_code, e->provider_code_len);
    }
    sb_puts(b, e->retryable ? ",\"retryable\":true" : ",\"retryable\":false");
    if (e->has_retry_after) {
        sb_puts(b, ",\"retry_after_ms\":");
        sb_u64(b, e->retry_after_ms);
    }
    sb_putc(b, '}');
}

/* Answers NOTIFYD_ERROR with {"v":1,"error":{"code":...,"message":...}}. */
static int32_t out_error(notifyd_buf *out, const char *code, const char *message, size_t len) {
    sb b = {0};
    perr e;
    memset(&e, 0, sizeof e);
    e.code = code;
    e.message = message;
    e.message_len = len;
    sb_puts(&b, "{\"v\":1,\"error\":");
    sb_perr(&b, &e);
    sb_putc(&b, '}');
    return out_give(&b, NOTIFYD_ERROR, out);
}

static int32_t out_error_c(notifyd_buf *out, const char *code, const char *message) {
    return out_error(out, code, message, strlen(message));
}

/* Like out_error, with the message built in `msg` (which is released). */
static int32_t out_error_sb(notifyd_buf *out, const char *code, sb *msg) {
    int32_t rc;
    if (msg->oom) {
        sb_free(msg);
        return out_oom(out);
    }
    rc = out_error(out, code, msg->p ? msg->p : "", msg->len);
    sb_free(msg);
    return rc;
}

/* ======================================================================== */
/* The plugin                                                                */
/* ======================================================================== */

/* Immutable after instance_new: safe to share between threads. */
struct notifyd_instance {
    char *send_url; /* base_url (without trailing '/') + SEND_PATH */
    size_t send_url_len;
    char *authorization; /* "Basic " + base64(username ":" password) */
    size_t authorization_len;
    /* Kept only to blank them out of quoted provider answers. */
    char *username;
    size_t username_len;
    char *password;
    size_t password_len;
};

static void instance_destroy(notifyd_instance *inst) {
    if (inst == NULL) {
        return;
    }
    free(inst->send_url);
    free(inst->authorization);
    if (inst->password != NULL) {
        volatile char *p = inst->password;
        size_t i;
        for (i = 0; i < inst->password_len; i++) {
            p[i] = 0;
        }
    }
    free(inst->username);
    free(inst->password);
    free(inst);
}

static char *dup_bytes(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static void cex_free_buf(notifyd_buf buf) { free(buf.ptr); }

static int32_t cex_describe(notifyd_buf *out) {
    sb b = {0};
    if (out == NULL) {
        return NOTIFYD_ERROR;
    }
    sb_puts(&b, "{\"v\":1,\"name\":\"" PLUGIN_NAME "\",\"version\":\"" PLUGIN_VERSION
                "\",\"max_recipients\":");
    sb_u64(&b, MAX_RECIPIENTS);
    sb_puts(&b, ",\"max_status_refs\":0,\"alphabet\":\"unicode\",\"default_base_url\":");
    sb_json_cstr(&b, DEFAULT_BASE_URL);
    sb_putc(&b, '}');
    return out_give(&b, NOTIFYD_OK, out);
}

/* An absolute http(s) URL with a host part and no whitespace or control characters. */
static int valid_base_url(const char *s, size_t n) {
    size_t i, scheme;
    if (n >= 7 && memcmp(s, "http://", 7) == 0) {
        scheme = 7;
    } else if (n >= 8 && memcmp(s, "https://", 8) == 0) {
        scheme = 8;
    } else {
        return 0;
    }
    if (n == scheme || s[scheme] == '/') {
        return 0;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7F || c == '?' || c == '#') {
            return 0;
        }
    }
    return 1;
}

static int32_t cex_instance_new(const uint8_t *settings, size_t settings_len,
                                notifyd_instance **instance, notifyd_buf *out) {
    jval root;
    sb err = {0};
    int oom = 0;
    const jval *v, *base_url, *set, *name;
    const jval *username = NULL, *password = NULL;
    const char *base;
    size_t base_len, i;
    notifyd_instance *inst;
    sb url = {0}, auth = {0}, cred = {0};
    int cred_oom;

    if (out == NULL) {
        return NOTIFYD_ERROR;
    }
    out->ptr = NULL;
    out->len = 0;
    if (instance == NULL) {
        return out_error_c(out, "plugin_error", "instance_new called without an instance pointer");
    }
    if (!jparse(settings, settings_len, &root, &err, &oom)) {
        sb msg = {0};
        if (oom) {
            sb_free(&err);
            return out_oom(out);
        }
        sb_puts(&msg, "the settings document is malformed: ");
        sb_put(&msg, err.p ? err.p : "", err.len);
        sb_free(&err);
        return out_error_sb(out, "invalid_settings", &msg);
    }
    sb_free(&err);

    if (root.type != J_OBJECT) {
        jfree(&root);
        return out_error_c(out, "invalid_settings", "the settings document is not a JSON object");
    }
    v = jget(&root, "v");
    if (v == NULL || v->type != J_NUMBER || !v->is_int || v->integer != 1) {
        jfree(&root);
        return out_error_c(out, "invalid_settings",
                           "unsupported settings document version (expected \"v\": 1)");
    }
    name = jget(&root, "name");
    if (name == NULL || name->type != J_STRING) {
        jfree(&root);
        return out_error_c(out, "invalid_settings",
                           "the settings document has no instance `name` string");
    }
    base_url = jopt(jget(&root, "base_url"));
    if (base_url != NULL && base_url->type != J_STRING) {
        jfree(&root);
        return out_error_c(out, "invalid_settings", "`base_url` must be a string or null");
    }
    if (base_url != NULL && !valid_base_url(base_url->str, base_url->len)) {
        jfree(&root);
        return out_error_c(out, "invalid_settings",
                           "`base_url` must be an absolute http:// or https:// URL "
                           "(a path prefix is allowed; no query, fragment or spaces)");
    }
    set = jopt(jget(&root, "settings"));
    if (set != NULL && set->type != J_OBJECT) {
        jfree(&root);
        return out_error_c(out, "invalid_settings", "`settings` must be a table (JSON object)");
    }

    for (i = 0; set != NULL && i < set->count; i++) {
        const jmember *m = &set->members[i];
        const jval **slot = NULL;
        if (m->key_len == 8 && memcmp(m->key, "username", 8) == 0) {
            slot = &username;
        } else if (m->key_len == 8 && memcmp(m->key, "password", 8) == 0) {
            slot = &password;
        } else {
            sb msg = {0};
            sb_puts(&msg, "unknown setting `");
            sb_put(&msg, m->key, m->key_len);
            sb_puts(&msg, "` (known: username, password)");
            jfree(&root);
            return out_error_sb(out, "invalid_settings", &msg);
        }
        if (*slot != NULL) {
            sb msg = {0};
            sb_puts(&msg, "setting `");
            sb_put(&msg, m->key, m->key_len);
            sb_puts(&msg, "` is given twice");
            jfree(&root);
            return out_error_sb(out, "invalid_settings", &msg);
        }
        *slot = &m->value;
    }
    if (username == NULL || password == NULL) {
        const char *which = username == NULL ? "username" : "password";
        sb msg = {0};
        sb_puts(&msg, "missing setting `");
        sb_puts(&msg, which);
        sb_puts(&msg, "` (required: username, password)");
        jfree(&root);
        return out_error_sb(out, "invalid_settings", &msg);
    }
    if (username->type != J_STRING || username->len == 0) {
        jfree(&root);
        return out_error_c(out, "invalid_settings", "setting `username` must be a non-empty string");
    }
    if (password->type != J_STRING || password->len == 0) {
        jfree(&root);
        return out_error_c(out, "invalid_settings", "setting `password` must be a non-empty string");
    }
    if (memchr(username->str, ':', username->len) != NULL) {
        jfree(&root);
        return out_error_c(out, "invalid_settings",
                           "setting `username` must not contain `:` (HTTP basic auth)");
    }

    if (base_url != NULL) {
        base = base_url->str;
        base_len = base_url->len;
    } else {
        base = DEFAULT_BASE_URL;
        base_len = strlen(DEFAULT_BASE_URL);
    }
    while (base_len > 0 && base[base_len - 1] == '/') {
        base_len--;
    }
    sb_put(&url, base, base_len);
    sb_puts(&url, SEND_PATH);

    sb_put(&cred, username->str, username->len);
    sb_putc(&cred, ':');
    sb_put(&cred, password->str, password->len);
    sb_puts(&auth, "Basic ");
    if (!cred.oom) {
        sb_base64(&auth, (const unsigned char *)cred.p, cred.len);
    }
    cred_oom = cred.oom;
    if (cred.p != NULL) {
        memset(cred.p, 0, cred.len);
    }
    sb_free(&cred);

    inst = calloc(1, sizeof *inst);
    if (inst == NULL || url.oom || auth.oom || cred_oom) {
        free(inst);
        sb_free(&url);
        sb_free(&auth);
        jfree(&root);
        return out_oom(out);
    }
    inst->send_url = url.p;
    inst->send_url_len = url.len;
    inst->authorization = auth.p;
    inst->authorization_len = auth.len;
    inst->username = dup_bytes(username->str, username->len);
    inst->username_len = username->len;
    inst->password = dup_bytes(password->str, password->len);
    inst->password_len = password->len;
    memset(password->str, 0, password->len);
    jfree(&root);
    if (inst->username == NULL || inst->password == NULL) {
        instance_destroy(inst);
        return out_oom(out);
    }
    *instance = inst;
    return NOTIFYD_OK;
}

static void cex_instance_free(notifyd_instance *instance) { instance_destroy(instance); }

/* --- send ---------------------------------------------------------------- */

/* A recipient in normal form: 1..MAX_NUMBER_DIGITS ASCII digits. */
static int valid_number(const char *s, size_t n) {
    size_t i;
    if (n == 0 || n > MAX_NUMBER_DIGITS) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!is_digit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/* The recipients joined with ',' (the `to` field and the exchange state). */
static void sb_recipients(sb *b, const jval *to) {
    size_t i;
    for (i = 0; i < to->count; i++) {
        if (i > 0) {
            sb_putc(b, ',');
        }
        sb_put(b, to->items[i].str, to->items[i].len);
    }
}

/* Appends body[0..n) with every occurrence of a secret replaced by "***",
 * stopping once more than `limit` bytes were written. */
static void sb_redacted(sb *b, const char *body, size_t n, const notifyd_instance *inst,
                        size_t limit) {
    const char *secrets[4];
    size_t lens[4], k, i = 0;
    /* The base64 token without its "Basic " prefix. */
    secrets[0] = inst->authorization + 6;
    lens[0] = inst->authorization_len - 6;
    secrets[1] = inst->password;
    lens[1] = inst->password_len;
    secrets[2] = inst->username;
    lens[2] = inst->username_len;
    secrets[3] = inst->authorization;
    lens[3] = inst->authorization_len;
    while (i < n && b->len <= limit && !b->oom) {
        int hit = 0;
        for (k = 0; k < 4; k++) {
            if (lens[k] > 0 && n - i >= lens[k] && memcmp(body + i, secrets[k], lens[k]) == 0) {
                sb_puts(b, "***");
                i += lens[k];
                hit = 1;
                break;
            }
        }
        if (!hit) {
            sb_putc(b, body[i]);
            i++;
        }
    }
}

/* A short single-line excerpt of a provider answer: at most SNIPPET_MAX bytes,
 * cut on a UTF-8 boundary, control characters as spaces, credentials blanked,
 * "..." appended when cut. */
static void sb_snippet(sb *b, const char *body, size_t n, const notifyd_instance *inst) {
    sb r = {0};
    size_t cut, i;
    int truncated;
    if (n == 0) {
        sb_puts(b, "(empty body)");
        return;
    }
    sb_redacted(&r, body, n, inst, SNIPPET_MAX);
    if (r.oom) {
        sb_free(&r);
        b->oom = 1;
        return;
    }
    truncated = r.len > SNIPPET_MAX;
    cut = truncated ? SNIPPET_MAX : r.len;
    while (truncated && cut > 0 && ((unsigned char)r.p[cut] & 0xC0) == 0x80) {
        cut--;
    }
    sb_putc(b, '`');
    for (i = 0; i < cut; i++) {
        unsigned char c = (unsigned char)r.p[i];
        sb_putc(b, (c < 0x20 || c == 0x7F) ? ' ' : (char)c);
    }
    sb_putc(b, '`');
    if (truncated) {
        sb_puts(b, "...");
    }
    sb_free(&r);
}

/* The Retry-After header in seconds, as milliseconds (HTTP dates are ignored). */
static int retry_after_ms(const jval *headers, uint64_t *ms) {
    size_t i, j;
    if (headers == NULL || headers->type != J_OBJECT) {
        return 0;
    }
    for (i = 0; i < headers->count; i++) {
        const jmember *m = &headers->members[i];
        static const char name[] = "retry-after";
        int same = m->key_len == sizeof name - 1;
        const char *s;
        size_t n;
        uint64_t secs = 0;
        for (j = 0; same && j < m->key_len; j++) {
            char c = m->key[j];
            if (c >= 'A' && c <= 'Z') {
                c = (char)(c - 'A' + 'a');
            }
            same = c == name[j];
        }
        if (!same || m->value.type != J_STRING) {
            continue;
        }
        s = m->value.str;
        n = m->value.len;
        while (n > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
            n--;
        }
        if (n == 0 || n > 12) { /* 12 digits of seconds: about 31,000 years */
            return 0;
        }
        for (j = 0; j < n; j++) {
            if (!is_digit((unsigned char)s[j])) {
                return 0;
            }
            secs = secs * 10 + (uint64_t)(s[j] - '0');
        }
        *ms = secs * 1000;
        return 1;
    }
    return 0;
}

/* One well-formed line of a 200 answer. */
typedef struct {
    const char *number;
    size_t number_len;
    int ok;
    const char *word; /* message id (OK) or reason word (ERR) */
    size_t word_len;
} answer_line;

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Splits a line into at most 4 whitespace-separated tokens; returns how many. */
static size_t tokenize(const char *s, size_t n, const char *tok[4], size_t tok_len[4]) {
    size_t i = 0, count = 0;
    while (i < n) {
        size_t start;
        while (i < n && is_blank(s[i])) {
            i++;
        }
        if (i >= n) {
            break;
        }
        start = i;
        while (i < n && !is_blank(s[i])) {
            i++;
        }
        if (count == 4) {
            return 5; /* too many */
        }
        tok[count] = s + start;
        tok_len[count] = i - start;
        count++;
    }
    return count;
}

/* Parses the `<number> OK <id>` / `<number> ERR <reason>` lines of a 200 body.
 * Malformed lines (e.g. a line cut short at the end) are skipped; the caller
 * treats a body without any well-formed line as unparseable. Returns the
 * number of lines written to *lines (malloc'ed), or (size_t)-1 when out of memory. */
static size_t parse_answer(const char *body, size_t n, answer_line **lines) {
    size_t i = 0, count = 0, cap = 0;
    *lines = NULL;
    while (i < n) {
        const char *line = body + i;
        const char *nl = memchr(line, '\n', n - i);
        size_t len = nl ? (size_t)(nl - line) : n - i;
        const char *tok[4];
        size_t tok_len[4];
        i += len + (nl ? 1 : 0);
        if (len > 0 && line[len - 1] == '\r') {
            len--;
        }
        if (tokenize(line, len, tok, tok_len) != 3) {
            continue;
        }
        if (tok_len[0] > 0 && tok[0][0] == '+') { /* tolerate "+4915..." */
            tok[0]++;
            tok_len[0]--;
        }
        if (!valid_number(tok[0], tok_len[0])) {
            continue;
        }
        if (!((tok_len[1] == 2 && memcmp(tok[1], "OK", 2) == 0) ||
              (tok_len[1] == 3 && memcmp(tok[1], "ERR", 3) == 0))) {
            continue;
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            answer_line *grown;
            if (ncap > SIZE_MAX / sizeof(answer_line)) {
                free(*lines);
                *lines = NULL;
                return (size_t)-1;
            }
            grown = realloc(*lines, ncap * sizeof(answer_line));
            if (grown == NULL) {
                free(*lines);
                *lines = NULL;
                return (size_t)-1;
            }
            *lines = grown;
            cap = ncap;
        }
        (*lines)[count].number = tok[0];
        (*lines)[count].number_len = tok_len[0];
        (*lines)[count].ok = tok_len[1] == 2;
        (*lines)[count].word = tok[2];
        (*lines)[count].word_len = tok_len[2];
        count++;
    }
    return count;
}

/* Writes {"v":1,"done":{"error":{...}}}. */
static int32_t out_done_error(notifyd_buf *out, const perr *e) {
    sb b = {0};
    sb_puts(&b, "{\"v\":1,\"done\":{\"error\":");
    sb_perr(&b, e);
    sb_puts(&b, "}}");
    return out_give(&b, NOTIFYD_OK, out);
}

/* A whole-request error: "<what> (HTTP <status>)", then ": `<snippet>`" when a
 * body is given. The HTTP status is also the provider_code. */
static int32_t out_done_error_http(notifyd_buf *out, const char *code, const char *what,
                                   const char *status, const jval *body,
                                   const notifyd_instance *inst, int retryable, int has_retry,
                                   uint64_t retry_ms) {
    sb msg = {0};
    perr e;
    int32_t rc;
    sb_puts(&msg, what);
    if (status != NULL) {
        sb_puts(&msg, " (HTTP ");
        sb_puts(&msg, status);
        sb_putc(&msg, ')');
    }
    if (body != NULL) {
        sb_puts(&msg, ": ");
        sb_snippet(&msg, body->str, body->len, inst);
    }
    if (msg.oom) {
        sb_free(&msg);
        return out_oom(out);
    }
    memset(&e, 0, sizeof e);
    e.code = code;
    e.message = msg.p;
    e.message_len = msg.len;
    e.provider_code = status;
    e.provider_code_len = status ? strlen(status) : 0;
    e.retryable = retryable;
    e.has_retry_after = has_retry;
    e.retry_after_ms = retry_ms;
    rc = out_done_error(out, &e);
    sb_free(&msg);
    return rc;
}

/* Classifies the gateway's answer into a SendResult. */
static int32_t send_result(const notifyd_instance *inst, const jval *to, const jval *response,
                           notifyd_buf *out) {
    const jval *status = jget(response, "status");
    const jval *headers = jopt(jget(response, "headers"));
    const jval *body = jopt(jget(response, "body"));
    int64_t code;
    char code_str[8];
    uint64_t ms = 0;
    int has_retry;
    answer_line *lines = NULL;
    size_t nlines, i, j;
    sb b = {0};

    if (status == NULL || status->type != J_NUMBER || !status->is_int || status->integer < 100 ||
        status->integer > 999) {
        return out_error_c(out, "plugin_error",
                           "the host's input document is malformed: "
                           "`exchange.response.status` is not an HTTP status code");
    }
    if (headers != NULL && headers->type != J_OBJECT) {
        return out_error_c(out, "plugin_error",
                           "the host's input document is malformed: "
                           "`exchange.response.headers` is not an object");
    }
    if (body != NULL && body->type != J_STRING) {
        return out_error_c(out, "plugin_error",
                           "the host's input document is malformed: "
                           "`exchange.response.body` is not a string");
    }
    code = status->integer;
    code_str[0] = (char)('0' + (int)(code / 100));
    code_str[1] = (char)('0' + (int)(code / 10 % 10));
    code_str[2] = (char)('0' + (int)(code % 10));
    code_str[3] = '\0';
    has_retry = retry_after_ms(headers, &ms);

    if (code == 401) {
        return out_done_error_http(out, "auth", "the gateway refused the credentials", code_str,
                                   NULL, inst, 0, 0, 0);
    }
    if (code == 402) {
        return out_done_error_http(out, "insufficient_funds",
                                   "the gateway account has no funds left", code_str, NULL, inst,
                                   0, 0, 0);
    }
    if (code == 429) {
        return out_done_error_http(out, "throttled", "the gateway is throttling requests",
                                   code_str, NULL, inst, 1, has_retry, ms);
    }
    if (code >= 500 && code <= 599) {
        return out_done_error_http(out, "unavailable", "the gateway is unavailable", code_str,
                                   body, inst, 1, has_retry, ms);
    }
    if (code != 200) {
        return out_done_error_http(out, "plugin_error", "unexpected answer from the gateway",
                                   code_str, body, inst, 0, 0, 0);
    }

    nlines = body ? parse_answer(body->str, body->len, &lines) : 0;
    if (nlines == (size_t)-1) {
        return out_oom(out);
    }
    if (nlines == 0) {
        free(lines);
        return out_done_error_http(out, "plugin_error", "the gateway's answer cannot be understood",
                                   NULL, body, inst, 0, 0, 0);
    }

    sb_puts(&b, "{\"v\":1,\"done\":{\"recipients\":[");
    for (i = 0; i < to->count; i++) {
        const jval *r = &to->items[i];
        const answer_line *hit = NULL;
        perr e;
        for (j = 0; j < nlines && hit == NULL; j++) {
            if (lines[j].number_len == r->len && memcmp(lines[j].number, r->str, r->len) == 0) {
                hit = &lines[j];
            }
        }
        if (i > 0) {
            sb_putc(&b, ',');
        }
        sb_puts(&b, "{\"to\":");
        sb_json_str(&b, r->str, r->len);
        if (hit != NULL && hit->ok) {
            sb_puts(&b, ",\"provider_message_id\":");
            sb_json_str(&b, hit->word, hit->word_len);
            sb_putc(&b, '}');
            continue;
        }
        memset(&e, 0, sizeof e);
        if (hit == NULL) {
            e.code = "plugin_error";
            e.message = "the gateway's answer does not mention this recipient";
        } else {
            e.provider_code = hit->word;
            e.provider_code_len = hit->word_len;
            if (hit->word_len == 14 && memcmp(hit->word, "INVALID_NUMBER", 14) == 0) {
                e.code = "invalid_recipient";
                e.message = "the gateway rejected the number as invalid";
            } else if (hit->word_len == 7 && memcmp(hit->word, "BLOCKED", 7) == 0) {
                e.code = "blocked_recipient";
                e.message = "the gateway has blocked this number";
            } else {
                e.code = "plugin_error";
                e.message = "the gateway refused this recipient with an unknown reason";
            }
        }
        e.message_len = strlen(e.message);
        sb_puts(&b, ",\"error\":");
        sb_perr(&b, &e);
        sb_putc(&b, '}');
    }
    sb_puts(&b, "]}}");
    free(lines);
    return out_give(&b, NOTIFYD_OK, out);
}

static int32_t cex_send(const notifyd_instance *inst, const uint8_t *input, size_t input_len,
                        notifyd_buf *out) {
    jval root;
    sb err = {0};
    int oom = 0;
    const jval *v, *in, *to, *text, *from, *exchange;
    size_t i;
    int32_t rc;

    if (out == NULL) {
        return NOTIFYD_ERROR;
    }
    out->ptr = NULL;
    out->len = 0;
    if (inst == NULL) {
        return out_error_c(out, "plugin_error", "send called without an instance");
    }
    if (!jparse(input, input_len, &root, &err, &oom)) {
        sb msg = {0};
        if (oom) {
            sb_free(&err);
            return out_oom(out);
        }
        sb_puts(&msg, "the host's input document is malformed: ");
        sb_put(&msg, err.p ? err.p : "", err.len);
        sb_free(&err);
        return out_error_sb(out, "plugin_error", &msg);
    }
    sb_free(&err);

#define BAD_INPUT(what)                                                                  \
    do {                                                                                 \
        jfree(&root);                                                                    \
        return out_error_c(out, "plugin_error", "the host's input document is malformed: " what); \
    } while (0)

    if (root.type != J_OBJECT) {
        BAD_INPUT("not a JSON object");
    }
    v = jget(&root, "v");
    if (v == NULL || v->type != J_NUMBER || !v->is_int || v->integer != 1) {
        BAD_INPUT("unsupported document version (expected \"v\": 1)");
    }
    in = jget(&root, "input");
    if (in == NULL || in->type != J_OBJECT) {
        BAD_INPUT("`input` is not an object");
    }
    to = jpath(&root, "input", "to", (const char *)NULL);
    if (to == NULL || to->type != J_ARRAY || to->count == 0) {
        BAD_INPUT("`input.to` is not a non-empty array");
    }
    if (to->count > MAX_RECIPIENTS) {
        BAD_INPUT("`input.to` has more recipients than max_recipients (50)");
    }
    for (i = 0; i < to->count; i++) {
        const jval *r = &to->items[i];
        if (r->type != J_STRING || !valid_number(r->str, r->len)) {
            BAD_INPUT("a recipient in `input.to` is not in normal form (digits only)");
        }
    }
    text = jpath(&root, "input", "text", (const char *)NULL);
    if (text == NULL || text->type != J_STRING) {
        BAD_INPUT("`input.text` is not a string");
    }
    from = jopt(jpath(&root, "input", "from", (const char *)NULL));
    if (from != NULL && from->type != J_STRING) {
        BAD_INPUT("`input.from` is not a string");
    }
    exchange = jopt(jget(&root, "exchange"));
    if (exchange != NULL && exchange->type != J_OBJECT) {
        BAD_INPUT("`exchange` is not an object");
    }

    if (exchange == NULL) {
        /* First call: the request to perform. */
        sb body = {0}, b = {0};
        sb_puts(&body, "to=");
        sb_recipients(&body, to);
        sb_puts(&body, "&text=");
        sb_percent(&body, text->str, text->len);
        if (from != NULL && from->len > 0) {
            sb_puts(&body, "&from=");
            sb_percent(&body, from->str, from->len);
        }
        sb_puts(&b, "{\"v\":1,\"http\":{\"method\":\"POST\",\"url\":");
        sb_json_str(&b, inst->send_url, inst->send_url_len);
        sb_puts(&b, ",\"headers\":[[\"content-type\",\"application/x-www-form-urlencoded\"],"
                    "[\"authorization\",");
        sb_json_str(&b, inst->authorization, inst->authorization_len);
        sb_puts(&b, "]],\"body\":");
        sb_json_str(&b, body.p ? body.p : "", body.len);
        sb_puts(&b, "},\"state\":\"");
        sb_recipients(&b, to); /* digits and commas only: no escaping needed */
        sb_puts(&b, "\"}");
        if (body.oom) {
            b.oom = 1;
        }
        sb_free(&body);
        jfree(&root);
        return out_give(&b, NOTIFYD_OK, out);
    } else {
        /* Second call: classify the response. */
        const jval *state = jpath(&root, "exchange", "state", (const char *)NULL);
        const jval *response = jpath(&root, "exchange", "response", (const char *)NULL);
        sb expect = {0};
        int same;
        if (state == NULL || state->type != J_STRING) {
            BAD_INPUT("`exchange.state` is not a string");
        }
        if (response == NULL || response->type != J_OBJECT) {
            BAD_INPUT("`exchange.response` is not an object");
        }
        sb_recipients(&expect, to);
        if (expect.oom) {
            sb_free(&expect);
            jfree(&root);
            return out_oom(out);
        }
        same = state->len == expect.len && memcmp(state->str, expect.p, expect.len) == 0;
        sb_free(&expect);
        if (!same) {
            BAD_INPUT("`exchange.state` does not belong to this input");
        }
        rc = send_result(inst, to, response, out);
        jfree(&root);
        return rc;
    }
#undef BAD_INPUT
}

/* ======================================================================== */
/* Entry point                                                               */
/* ======================================================================== */

static const notifyd_plugin_vtable TABLE = {
    .struct_size = (uint32_t)sizeof(notifyd_plugin_vtable),
    .abi_major = NOTIFYD_ABI_MAJOR,
    .abi_minor = NOTIFYD_ABI_MINOR,
    .capabilities = NOTIFYD_CAP_SEND,
    .free_buf = cex_free_buf,
    .describe = cex_describe,
    .instance_new = cex_instance_new,
    .instance_free = cex_instance_free,
    .send = cex_send,
    .status = NULL,
    .balance = NULL,
    .callback = NULL,
};

const notifyd_plugin_vtable *notifyd_plugin_v1(void) { return &TABLE; }
