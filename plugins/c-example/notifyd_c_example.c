/*
 * notifyd_c_example.c: a complete notifyd provider plugin in plain C11, for the
 * "Example HTTP SMS gateway" of plugins/c-example/README.md. It needs nothing
 * but the C standard library and include/notifyd_plugin.h.
 *
 * A plugin translates; the host does all I/O. `send` is called twice:
 *   1. with the input: the plugin answers the HTTP request to perform;
 *   2. with the same input plus the exchange (the `state` the plugin gave and
 *      the gateway's response): the plugin answers one result per recipient.
 * With ABI 1.1 the host also does the encoding: the request gives its body as
 * `form` pairs and its credentials as `basic_auth`, so this file has no
 * percent-encoder and no base64 (docs/plugin-authors.md, "What ABI 1.1 adds").
 *
 * Read it top to bottom:
 *   1. output: a growable buffer, a JSON string writer, error documents;
 *   2. input: a small JSON reader (validate the whole document once, then
 *      look up the fields you need);
 *   3. describe and the instance (settings in, an immutable struct out);
 *   4. send: the request, then the classification of the answer;
 *   5. the function table behind the library's one exported symbol.
 *
 * The rules of docs/plugin-authors.md ("Write a plugin in C"): an input is
 * pointer and length; outputs are malloc'ed and released by `free_buf`; an
 * instance never changes after `instance_new` (many threads share it);
 * nothing aborts: bad input gets NOTIFYD_ERROR, a full memory NOTIFYD_PANIC.
 *
 * Build: cc -std=c11 -O2 -fPIC -shared -I include -o libnotifyd_c_example.so \
 *            plugins/c-example/notifyd_c_example.c
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifyd_plugin.h"

#define PLUGIN_NAME "c-example"
#define PLUGIN_VERSION "0.1.0"
#define MAX_RECIPIENTS 50 /* per send call: the host splits larger batches */
#define DEFAULT_BASE_URL "http://127.0.0.1:8080"
#define SEND_PATH "/api/send"
#define MAX_NUMBER_DIGITS 32 /* the host sends 8 to 15 */
#define MAX_DEPTH 64         /* the deepest JSON nesting the reader accepts */
#define SNIPPET_MAX 64       /* bytes of a gateway's answer quoted in a message */
#define NO_RETRY_AFTER UINT64_MAX

#define STR(x) #x
#define XSTR(x) STR(x)

/* ---- 1. Output -------------------------------------------------------------- */

/* A growable byte buffer. A failed allocation sets `oom` and later writes are
 * ignored, so a writer checks once, when it hands the buffer over. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void put(buf *b, const char *s, size_t n) {
    size_t cap = b->cap ? b->cap : 256;
    char *p = b->p;
    if (b->oom || n == 0) return;
    while (cap < b->len + n && cap <= SIZE_MAX / 4) cap *= 2;
    if (n > SIZE_MAX / 4 || cap < b->len + n || (cap > b->cap && (p = realloc(b->p, cap)) == NULL)) {
        b->oom = 1;
        return;
    }
    memcpy(p + b->len, s, n);
    b->p = p, b->cap = cap, b->len += n;
}

static void put_str(buf *b, const char *s) { put(b, s, strlen(s)); }

/* `s` as a JSON string: quoted, with `"`, `\` and control characters escaped.
 * Other bytes are copied: all this plugin writes is UTF-8 from the host's
 * documents or its own. */
static void put_json(buf *b, const char *s, size_t n) {
    size_t i;
    put(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char escaped[8];
        if (c == '"' || c == '\\') {
            escaped[0] = '\\', escaped[1] = (char)c;
            put(b, escaped, 2);
        } else if (c < 0x20) {
            snprintf(escaped, sizeof escaped, "\\u%04x", c);
            put(b, escaped, 6);
        } else {
            put(b, s + i, 1);
        }
    }
    put(b, "\"", 1);
}

/* Hands `b` to the host as the answer; the host gives it back to free_buf.
 * Out of memory, the answer is NOTIFYD_PANIC with an empty buffer: the one
 * answer that needs no allocation. */
static int32_t give(buf *b, int32_t rc, notifyd_buf *out) {
    if (b->oom) {
        free(b->p);
        return NOTIFYD_PANIC;
    }
    out->ptr = (uint8_t *)b->p;
    out->len = b->len;
    return rc;
}

/* NOTIFYD_ERROR with an error document: for input the plugin cannot accept
 * (settings, a malformed document), never for a gateway's answer, which is
 * classified into a result. The message is `msg`, which is released. */
static int32_t refuse_msg(notifyd_buf *out, const char *code, buf *msg) {
    buf b = {0};
    put_str(&b, "{\"v\":1,\"error\":{\"code\":\"");
    put_str(&b, code);
    put_str(&b, "\",\"message\":");
    put_json(&b, msg->p, msg->len);
    put_str(&b, "}}");
    b.oom |= msg->oom;
    free(msg->p);
    return give(&b, NOTIFYD_ERROR, out);
}

static int32_t refuse(notifyd_buf *out, const char *code, const char *message) {
    buf msg = {0};
    put_str(&msg, message);
    return refuse_msg(out, code, &msg);
}

/* The host's document is not what the ABI says: `plugin_error`. */
static int32_t malformed(notifyd_buf *out, const char *what) {
    buf msg = {0};
    put_str(&msg, "the host's input document is malformed: ");
    put_str(&msg, what);
    return refuse_msg(out, "plugin_error", &msg);
}

/* ---- 2. Input: a small JSON reader ---------------------------------------------
 *
 * json_parse checks the whole document once. After that a value is a pointer
 * to its first byte, and looking a field up walks the text again: nothing is
 * copied until asked for. Key order is free, keys the plugin does not know are
 * skipped (a later ABI minor may add some), and `null` reads as absent. */

typedef struct {
    const char *p;   /* the value's first byte */
    const char *end; /* the end of the document */
} json;

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* The four hex digits of a \u escape. */
static int hex4(const char *p, const char *end, unsigned *out) {
    int i;
    if (end - p < 4) return 0;
    for (*out = 0, i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16;
        if (d == 16) return 0;
        *out = *out << 4 | d;
    }
    return 1;
}

/* Writes code point `cp` as UTF-8 into `out`; returns its length (1 to 4). */
static size_t utf8_put(unsigned cp, char *out) {
    static const unsigned char lead[] = {0, 0, 0xC0, 0xE0, 0xF0};
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4, i;
    for (i = n - 1; i > 0; i--, cp >>= 6) out[i] = (char)(0x80 | (cp & 0x3F));
    out[0] = (char)(lead[n] | cp);
    return n;
}

/* Reads the string whose opening quote is at `p`. Returns the byte after its
 * closing quote, or NULL when it is malformed (a raw control character, a bad
 * escape, a lone surrogate, no closing quote). When `dst` is not NULL the
 * decoded text goes there; it is never longer than the string as written.
 * `*n` gets the decoded length. Other bytes are taken as they are: the ABI's
 * documents are UTF-8. */
static const char *scan_string(const char *p, const char *end, char *dst, size_t *n) {
    *n = 0;
    if (p >= end || *p++ != '"') return NULL;
    while (p < end && *p != '"') {
        char decoded[4];
        const char *from = decoded;
        size_t k = 1;
        unsigned cp, low;
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p != '\\') {
            from = p++;
        } else if (end - p >= 2 && p[1] != 'u') { /* \n and the like */
            switch (p[1]) {
            case '"': case '\\': case '/': decoded[0] = p[1]; break;
            case 'b': decoded[0] = '\b'; break;
            case 'f': decoded[0] = '\f'; break;
            case 'n': decoded[0] = '\n'; break;
            case 'r': decoded[0] = '\r'; break;
            case 't': decoded[0] = '\t'; break;
            default: return NULL;
            }
            p += 2;
        } else if (hex4(p + 2, end, &cp) && !(cp >= 0xDC00 && cp <= 0xDFFF)) { /* \u00fc */
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* the first half of a pair: \ud83d\ude00 */
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &low) ||
                    low < 0xDC00 || low > 0xDFFF) {
                    return NULL;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
            k = utf8_put(cp, decoded);
        } else {
            return NULL;
        }
        if (dst != NULL) memcpy(dst + *n, from, k);
        *n += k;
    }
    return p < end ? p + 1 : NULL;
}

static const char *literal(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* Skips the value at `p` (after blanks); returns the byte after it, or NULL
 * when it is malformed or nested deeper than MAX_DEPTH. Numbers are only
 * skipped here; json_uint reads the few this plugin needs, strictly. */
static const char *skip_value(const char *p, const char *end, int depth) {
    size_t n;
    const char *start;
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') return scan_string(p, end, NULL, &n);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        if (depth >= MAX_DEPTH) return NULL;
        p = skip_ws(p + 1, end);
        if (p < end && *p == close) return p + 1;
        for (;;) {
            if (close == '}') { /* "key": */
                if ((p = scan_string(p, end, NULL, &n)) == NULL) return NULL;
                p = skip_ws(p, end);
                if (p >= end || *p++ != ':') return NULL;
            }
            if ((p = skip_value(p, end, depth + 1)) == NULL) return NULL;
            p = skip_ws(p, end);
            if (p < end && *p == close) return p + 1;
            if (p >= end || *p != ',') return NULL;
            p = skip_ws(p + 1, end);
        }
    }
    if (*p == 't') return literal(p, end, "true");
    if (*p == 'f') return literal(p, end, "false");
    if (*p == 'n') return literal(p, end, "null");
    for (start = p; p < end && *p != '\0' && strchr("+-.0123456789eE", *p) != NULL; p++) {
    }
    return p > start ? p : NULL; /* a number */
}

/* Validates the document: exactly one JSON value, blanks around it allowed. */
static int json_parse(const uint8_t *doc, size_t len, json *root) {
    const char *p = (const char *)doc, *after;
    if (doc == NULL) return 0;
    root->end = p + len;
    root->p = skip_ws(p, root->end);
    after = skip_value(p, root->end, 0);
    return after != NULL && skip_ws(after, root->end) == root->end;
}

/* Whether `v` is an object ('{'), an array ('['), a string ('"'), null ('n'). */
static int json_is(json v, char first) { return v.p < v.end && *v.p == first; }

/* Walks the members of an object or the items of an array, in document order:
 * json_enter, then json_next until it returns 0 (`key` NULL for an array). The
 * iterator is a json whose `p` moves along. */
static int json_enter(json v, char open, json *it) {
    it->p = v.p + 1;
    it->end = v.end;
    return json_is(v, open);
}

static int json_next(json *it, json *key, json *value) {
    size_t n;
    const char *p = skip_ws(it->p, it->end);
    if (p >= it->end || *p == '}' || *p == ']') return 0;
    if (*p == ',') p = skip_ws(p + 1, it->end);
    if (key != NULL) {
        key->p = p, key->end = it->end;
        p = skip_ws(scan_string(p, it->end, NULL, &n), it->end) + 1; /* past the ':' */
    }
    value->p = skip_ws(p, it->end), value->end = it->end;
    it->p = skip_value(p, it->end, 0);
    return 1;
}

/* Decodes the string `v` into `dst` of `cap` bytes: 0 when `v` is not a
 * string or does not fit. */
static int json_text(json v, char *dst, size_t cap, size_t *n) {
    const char *after = json_is(v, '"') ? scan_string(v.p, v.end, NULL, n) : NULL;
    if (after == NULL || (size_t)(after - v.p) > cap) return 0;
    scan_string(v.p, v.end, dst, n);
    return 1;
}

/* A malloc'ed, NUL-terminated copy of the string `v`, decoded; NULL when `v`
 * is not a string, or (with *oom set) when memory ran out. */
static char *json_strdup(json v, size_t *n, int *oom) {
    const char *after = json_is(v, '"') ? scan_string(v.p, v.end, NULL, n) : NULL;
    char *s = after != NULL ? malloc((size_t)(after - v.p)) : NULL;
    if (s == NULL) {
        *oom |= after != NULL;
        return NULL;
    }
    scan_string(v.p, v.end, s, n);
    s[*n] = '\0'; /* the decoded text is shorter than the string with its quotes */
    return s;
}

/* The member `name` of the object `obj`: 0 when `obj` is not an object, has no
 * such member, or it is null. */
static int json_get(json obj, const char *name, json *out) {
    json it;
    json key, value;
    char text[128];
    size_t n;
    if (!json_enter(obj, '{', &it)) return 0;
    while (json_next(&it, &key, &value)) {
        if (json_text(key, text, sizeof text, &n) && n == strlen(name) && !memcmp(text, name, n)) {
            *out = value;
            return !json_is(value, 'n');
        }
    }
    return 0;
}

/* `v` when it is an unsigned integer written without fraction or exponent, as
 * the host writes integers. */
static int json_uint(json v, uint64_t *out) {
    const char *p = v.p;
    if (p >= v.end || *p < '0' || *p > '9') return 0;
    for (*out = 0; p < v.end && *p >= '0' && *p <= '9'; p++) {
        if (*out > (UINT64_MAX - 9) / 10) return 0;
        *out = *out * 10 + (uint64_t)(*p - '0');
    }
    return p == v.end || (*p != '.' && *p != 'e' && *p != 'E');
}

/* Copies the string `v` into the answer as it was written: a string of a
 * validated document is valid JSON as it stands, escapes and all. */
static void put_raw_string(buf *b, json v) {
    size_t n;
    put(b, v.p, (size_t)(scan_string(v.p, v.end, NULL, &n) - v.p));
}

/* ---- 3. describe and the instance ------------------------------------------- */

static void cex_free_buf(notifyd_buf buf) { free(buf.ptr); }

static int32_t cex_describe(notifyd_buf *out) {
    buf b = {0};
    if (out == NULL) return NOTIFYD_ERROR;
    put_str(&b, "{\"v\":1,\"name\":\"" PLUGIN_NAME "\",\"version\":\"" PLUGIN_VERSION
                "\",\"max_recipients\":" XSTR(MAX_RECIPIENTS) ",\"max_status_refs\":0,"
                "\"alphabet\":\"unicode\",\"default_base_url\":\"" DEFAULT_BASE_URL "\"}");
    return give(&b, NOTIFYD_OK, out);
}

/* Everything `send` needs, copied out of the settings document. It never
 * changes after instance_new, so many threads may use it at once. */
struct notifyd_instance {
    char *send_url; /* base_url without a trailing '/', then SEND_PATH */
    char *username; /* for basic_auth, and to blank out of quoted answers */
    char *password;
    size_t username_len, password_len;
};

static void cex_instance_free(notifyd_instance *inst) {
    size_t i;
    if (inst == NULL) return;
    for (i = 0; inst->password != NULL && i < inst->password_len; i++) {
        ((volatile char *)inst->password)[i] = 0; /* no password left in freed memory */
    }
    free(inst->send_url);
    free(inst->username);
    free(inst->password);
    free(inst);
}

/* An absolute http(s) URL with a host, and no blank, control character, query
 * or fragment. */
static int valid_base_url(const char *s, size_t n) {
    size_t i = n >= 7 && !memcmp(s, "http://", 7) ? 7 : n >= 8 && !memcmp(s, "https://", 8) ? 8 : 0;
    if (i == 0 || i == n || s[i] == '/') return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7F || c == '?' || c == '#') return 0;
    }
    return 1;
}

/* Refuses the settings naming a key, never its value: "<before><key><after>". */
static int32_t refuse_setting(notifyd_buf *out, const char *before, json key, const char *after) {
    buf msg = {0};
    char name[128];
    size_t n = 0;
    put_str(&msg, before);
    if (json_text(key, name, sizeof name, &n)) put(&msg, name, n);
    put_str(&msg, after);
    return refuse_msg(out, "invalid_settings", &msg);
}

/* {"v":1,"name":...,"base_url":...|null,"settings":{"username":...,"password":...}}.
 * Unknown, missing and malformed settings are refused with `invalid_settings`. */
static int32_t cex_instance_new(const uint8_t *doc, size_t len, notifyd_instance **instance,
                                notifyd_buf *out) {
    json root, v, base_url, key, value;
    json settings = {NULL, NULL}, user = {NULL, NULL}, pass = {NULL, NULL};
    json it = {NULL, NULL};
    uint64_t version;
    char *base = NULL;
    size_t base_len = 0;
    int oom = 0;
    buf url = {0};
    notifyd_instance *inst;

    if (out == NULL) return NOTIFYD_ERROR; /* nowhere to answer; the host never does that */
    if (instance == NULL) return refuse(out, "invalid_settings", "instance_new got no instance pointer");
    if (!json_parse(doc, len, &root) || !json_is(root, '{')) {
        return refuse(out, "invalid_settings", "the settings document is not a JSON object");
    }
    if (!json_get(root, "v", &v) || !json_uint(v, &version) || version != 1) {
        return refuse(out, "invalid_settings", "unsupported settings document version (expected \"v\": 1)");
    }
    if (json_get(root, "settings", &settings) && !json_enter(settings, '{', &it)) {
        return refuse(out, "invalid_settings", "`settings` must be a table (JSON object)");
    }
    while (json_is(settings, '{') && json_next(&it, &key, &value)) {
        json *slot = NULL;
        char name[16];
        size_t n;
        if (json_text(key, name, sizeof name, &n) && n == 8) {
            slot = !memcmp(name, "username", 8) ? &user : !memcmp(name, "password", 8) ? &pass : NULL;
        }
        if (slot == NULL) return refuse_setting(out, "unknown setting `", key, "` (known: username, password)");
        if (slot->p != NULL) return refuse_setting(out, "setting `", key, "` is given twice");
        *slot = value;
    }
    if (user.p == NULL) {
        return refuse(out, "invalid_settings", "missing setting `username` (required: username, password)");
    }
    if (pass.p == NULL) {
        return refuse(out, "invalid_settings", "missing setting `password` (required: username, password)");
    }
    /* The host encodes `form` and `basic_auth` (ABI 1.1): a 1.0 host would send the request
     * without them. It says its minor from 1.1 on; refuse to start on one that does not. */
    if (!json_get(root, "abi_minor", &v) || !json_uint(v, &version) || version < 1) {
        return refuse(out, "invalid_settings", "this plugin needs notifyd with plugin ABI 1.1 or later");
    }
    if (json_get(root, "base_url", &base_url)) { /* absent or null: the default */
        base = json_strdup(base_url, &base_len, &oom);
        if (base == NULL && !oom) return refuse(out, "invalid_settings", "`base_url` must be a string or null");
        if (base != NULL && !valid_base_url(base, base_len)) {
            free(base);
            return refuse(out, "invalid_settings",
                          "`base_url` must be an absolute http:// or https:// URL "
                          "(a path prefix is allowed; no query, fragment or spaces)");
        }
        while (base_len > 0 && base[base_len - 1] == '/') base_len--;
    }
    put(&url, base != NULL ? base : DEFAULT_BASE_URL, base != NULL ? base_len : strlen(DEFAULT_BASE_URL));
    put_str(&url, SEND_PATH);
    put(&url, "", 1); /* the terminating NUL */
    free(base);

    if (oom || url.oom || (inst = calloc(1, sizeof *inst)) == NULL) {
        free(url.p);
        return NOTIFYD_PANIC;
    }
    inst->send_url = url.p;
    inst->username = json_strdup(user, &inst->username_len, &oom);
    inst->password = json_strdup(pass, &inst->password_len, &oom);
    if (oom) {
        cex_instance_free(inst);
        return NOTIFYD_PANIC;
    }
    if (inst->username == NULL || inst->username_len == 0 || memchr(inst->username, ':', inst->username_len)) {
        cex_instance_free(inst);
        return refuse(out, "invalid_settings",
                      "setting `username` must be a non-empty string without `:` (HTTP basic auth)");
    }
    if (inst->password == NULL || inst->password_len == 0) {
        cex_instance_free(inst);
        return refuse(out, "invalid_settings", "setting `password` must be a non-empty string");
    }
    *instance = inst; /* written only on success */
    return NOTIFYD_OK;
}

/* ---- 4. send ------------------------------------------------------------------ */

/* A recipient in normal form: 1 to MAX_NUMBER_DIGITS ASCII digits. */
static int valid_number(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
    }
    return n > 0 && n <= MAX_NUMBER_DIGITS;
}

/* The first call: the request to perform, with ABI 1.1's helpers. The host
 * encodes `form` as the body (application/x-www-form-urlencoded, also the
 * Content-Type) and `basic_auth` as the Authorization header. The `state`
 * comes back in the second call: the recipients, to check it belongs there. */
static int32_t first_step(const notifyd_instance *inst, const buf *recipients, json text,
                          const json *from, notifyd_buf *out) {
    buf b = {0};
    put_str(&b, "{\"v\":1,\"http\":{\"method\":\"POST\",\"url\":");
    put_json(&b, inst->send_url, strlen(inst->send_url));
    put_str(&b, ",\"basic_auth\":{\"user\":");
    put_json(&b, inst->username, inst->username_len);
    put_str(&b, ",\"password\":");
    put_json(&b, inst->password, inst->password_len);
    put_str(&b, "},\"form\":[[\"to\",");
    put_json(&b, recipients->p, recipients->len);
    put_str(&b, "],[\"text\",");
    put_raw_string(&b, text);
    if (from != NULL && from->p[1] != '"') { /* no sender, or "": the gateway's default */
        put_str(&b, "],[\"from\",");
        put_raw_string(&b, *from);
    }
    put_str(&b, "]]},\"state\":");
    put_json(&b, recipients->p, recipients->len);
    put_str(&b, "}");
    return give(&b, NOTIFYD_OK, out);
}

/* An error object (docs/plugin-authors.md, "Errors"); `provider_code` may be
 * NULL, `retry_after_ms` NO_RETRY_AFTER. */
static void put_error(buf *b, const char *code, const char *message, size_t message_len,
                      const char *provider_code, size_t provider_code_len, int retryable,
                      uint64_t retry_after_ms) {
    char ms[48];
    put_str(b, "{\"code\":\"");
    put_str(b, code);
    put_str(b, "\",\"message\":");
    put_json(b, message, message_len);
    if (provider_code != NULL) {
        put_str(b, ",\"provider_code\":");
        put_json(b, provider_code, provider_code_len);
    }
    put_str(b, retryable ? ",\"retryable\":true" : ",\"retryable\":false");
    if (retry_after_ms != NO_RETRY_AFTER) {
        snprintf(ms, sizeof ms, ",\"retry_after_ms\":%" PRIu64, retry_after_ms);
        put_str(b, ms);
    }
    put_str(b, "}");
}

/* A short excerpt of the gateway's answer, for a message: at most SNIPPET_MAX
 * bytes cut on a UTF-8 boundary, control characters as spaces, the username
 * and password replaced by "***" (a message never carries a secret), and
 * "..." when cut. */
static void put_snippet(buf *b, const char *body, size_t n, const notifyd_instance *inst) {
    buf r = {0};
    size_t i = 0, cut;
    if (n == 0) {
        put_str(b, "(empty body)");
        return;
    }
    while (i < n && r.len <= SNIPPET_MAX) {
        if (n - i >= inst->password_len && !memcmp(body + i, inst->password, inst->password_len)) {
            put_str(&r, "***");
            i += inst->password_len;
        } else if (n - i >= inst->username_len && !memcmp(body + i, inst->username, inst->username_len)) {
            put_str(&r, "***");
            i += inst->username_len;
        } else {
            put(&r, (unsigned char)body[i] < 0x20 || body[i] == 0x7F ? " " : body + i, 1);
            i++;
        }
    }
    cut = r.len > SNIPPET_MAX ? SNIPPET_MAX : r.len;
    while (cut < r.len && cut > 0 && ((unsigned char)r.p[cut] & 0xC0) == 0x80) cut--; /* whole characters */
    put_str(b, "`");
    put(b, r.p, cut);
    put_str(b, cut < r.len ? "`..." : "`");
    b->oom |= r.oom;
    free(r.p);
}

/* The whole call failed: {"v":1,"done":{"error":...}}. The message is `what`,
 * then " (HTTP <status>)" (the status is also the provider_code), then a
 * snippet of `body` when given. */
static int32_t done_error(notifyd_buf *out, const notifyd_instance *inst, const char *code,
                          const char *what, const char *status, const char *body, size_t body_len,
                          int retryable, uint64_t retry_after_ms) {
    buf msg = {0}, b = {0};
    put_str(&msg, what);
    if (status != NULL) {
        put_str(&msg, " (HTTP ");
        put_str(&msg, status);
        put_str(&msg, ")");
    }
    if (body != NULL) {
        put_str(&msg, ": ");
        put_snippet(&msg, body, body_len, inst);
    }
    put_str(&b, "{\"v\":1,\"done\":{\"error\":");
    put_error(&b, code, msg.p, msg.len, status, status != NULL ? 3 : 0, retryable, retry_after_ms);
    put_str(&b, "}}");
    b.oom |= msg.oom;
    free(msg.p);
    return give(&b, NOTIFYD_OK, out);
}

/* The Retry-After header in seconds, as milliseconds (an HTTP date is ignored).
 * The host hands header names over in lower case. */
static uint64_t retry_after_ms(json response) {
    json headers, value;
    char text[32];
    size_t n, i = 0;
    uint64_t seconds = 0;
    if (!json_get(response, "headers", &headers) || !json_get(headers, "retry-after", &value) ||
        !json_text(value, text, sizeof text, &n)) {
        return NO_RETRY_AFTER;
    }
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t')) n--;
    while (i < n && (text[i] == ' ' || text[i] == '\t')) i++;
    if (i == n || n - i > 12) return NO_RETRY_AFTER; /* 12 digits of seconds: some 31,000 years */
    for (; i < n; i++) {
        if (text[i] < '0' || text[i] > '9') return NO_RETRY_AFTER;
        seconds = seconds * 10 + (uint64_t)(text[i] - '0');
    }
    return seconds * 1000;
}

/* Finds the line of `number` (any well-formed line when NULL) in a 200 answer:
 * `<number> OK <message id>` or `<number> ERR <reason>`, fields separated by
 * blanks, lines by \n or \r\n, the number maybe with a leading '+'. A line
 * that is not well-formed (one cut short at the end, say) is skipped. */
static int find_line(const char *body, size_t n, const char *number, size_t number_len, int *ok,
                     const char **word, size_t *word_len) {
    const char *p = body, *end = body + n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol != NULL ? eol : end, *q = p, *tok[4];
        size_t len[4], count = 0;
        if (line_end > p && line_end[-1] == '\r') line_end--;
        p = eol != NULL ? eol + 1 : end;
        while (count < 4) { /* split into blank-separated tokens: 3 wanted */
            while (q < line_end && (*q == ' ' || *q == '\t')) q++;
            if (q == line_end) break;
            for (tok[count] = q; q < line_end && *q != ' ' && *q != '\t'; q++) {
            }
            len[count] = (size_t)(q - tok[count]);
            count++;
        }
        if (count != 3) continue;
        if (tok[0][0] == '+') tok[0]++, len[0]--;
        *ok = len[1] == 2 && !memcmp(tok[1], "OK", 2);
        if (!valid_number(tok[0], len[0]) || !(*ok || (len[1] == 3 && !memcmp(tok[1], "ERR", 3)))) continue;
        if (number != NULL && (len[0] != number_len || memcmp(tok[0], number, number_len) != 0)) continue;
        *word = tok[2];
        *word_len = len[2];
        return 1;
    }
    return 0;
}

/* One result per recipient of `to`, in its order, from the lines of a 200
 * (the mapping table of the README). */
static int32_t recipient_results(json to, const char *body, size_t body_len, notifyd_buf *out) {
    buf b = {0};
    json it;
    json item;
    int ok, first = 1;
    const char *word;
    size_t word_len;
    put_str(&b, "{\"v\":1,\"done\":{\"recipients\":[");
    json_enter(to, '[', &it);
    while (json_next(&it, NULL, &item)) {
        const char *code = "plugin_error", *m = "the gateway refused this recipient with an unknown reason";
        char number[MAX_NUMBER_DIGITS + 2];
        size_t n;
        json_text(item, number, sizeof number, &n); /* checked by cex_send */
        put_str(&b, first ? "{\"to\":" : ",{\"to\":");
        first = 0;
        put_json(&b, number, n);
        if (!find_line(body, body_len, number, n, &ok, &word, &word_len)) {
            m = "the gateway's answer does not mention this recipient";
            word = NULL, word_len = 0;
        } else if (ok) {
            put_str(&b, ",\"provider_message_id\":");
            put_json(&b, word, word_len);
            put_str(&b, "}");
            continue;
        } else if (word_len == 14 && !memcmp(word, "INVALID_NUMBER", 14)) {
            code = "invalid_recipient", m = "the gateway rejected the number as invalid";
        } else if (word_len == 7 && !memcmp(word, "BLOCKED", 7)) {
            code = "blocked_recipient", m = "the gateway has blocked this number";
        }
        put_str(&b, ",\"error\":");
        put_error(&b, code, m, strlen(m), word, word_len, 0, NO_RETRY_AFTER);
        put_str(&b, "}");
    }
    put_str(&b, "]}}");
    return give(&b, NOTIFYD_OK, out);
}

/* The second call: classify the gateway's response (the README's table). A bad
 * answer is never NOTIFYD_ERROR: it is a result with an error, so the host can
 * retry, fail over or give up. */
static int32_t classify(const notifyd_instance *inst, json to, json response, notifyd_buf *out) {
    json status_v, body_v;
    uint64_t status, none = NO_RETRY_AFTER;
    char code[8], *body = NULL;
    size_t body_len = 0, ignored_len;
    int oom = 0, ignored_ok;
    const char *ignored;
    int32_t rc;

    if (!json_get(response, "status", &status_v) || !json_uint(status_v, &status) || status < 100 ||
        status > 999) {
        return malformed(out, "`exchange.response.status` is not an HTTP status code");
    }
    if (json_get(response, "body", &body_v) && (body = json_strdup(body_v, &body_len, &oom)) == NULL) {
        return oom ? NOTIFYD_PANIC : malformed(out, "`exchange.response.body` is not a string");
    }
    snprintf(code, sizeof code, "%u", (unsigned)status);
    if (status == 401) {
        rc = done_error(out, inst, "auth", "the gateway refused the credentials", code, NULL, 0, 0, none);
    } else if (status == 402) {
        rc = done_error(out, inst, "insufficient_funds", "the gateway account has no funds left", code, NULL,
                        0, 0, none);
    } else if (status == 429) {
        rc = done_error(out, inst, "throttled", "the gateway is throttling requests", code, NULL, 0, 1,
                        retry_after_ms(response));
    } else if (status >= 500 && status <= 599) {
        rc = done_error(out, inst, "unavailable", "the gateway is unavailable", code, body, body_len, 1,
                        retry_after_ms(response));
    } else if (status != 200) {
        rc = done_error(out, inst, "plugin_error", "unexpected answer from the gateway", code, body, body_len,
                        0, none);
    } else if (body == NULL || !find_line(body, body_len, NULL, 0, &ignored_ok, &ignored, &ignored_len)) {
        rc = done_error(out, inst, "plugin_error", "the gateway's answer cannot be understood", NULL, body,
                        body_len, 0, none);
    } else {
        rc = recipient_results(to, body, body_len, out);
    }
    free(body);
    return rc;
}

/* {"v":1,"input":{"to":[...],"text":...,"from":...,...},"exchange":{...}}: the
 * input is the same in both calls; `exchange` comes with the second only. */
static int32_t cex_send(const notifyd_instance *inst, const uint8_t *doc, size_t len, notifyd_buf *out) {
    json root, v, input, to, text, from, exchange, state, response, item;
    json it;
    uint64_t version;
    size_t count = 0, n;
    buf recipients = {0}; /* joined by ',': the form's `to`, and the state */
    char *given;
    const char *bad = NULL;
    int oom = 0;
    int32_t rc;

    if (out == NULL) return NOTIFYD_ERROR; /* nowhere to answer; the host never does that */
    if (inst == NULL) return refuse(out, "plugin_error", "send called without an instance");
    if (!json_parse(doc, len, &root) || !json_is(root, '{')) return malformed(out, "not a JSON object");
    if (!json_get(root, "v", &v) || !json_uint(v, &version) || version != 1) {
        return malformed(out, "unsupported document version (expected \"v\": 1)");
    }
    if (!json_get(root, "input", &input) || !json_is(input, '{')) return malformed(out, "`input` is not an object");
    if (!json_get(input, "to", &to) || !json_enter(to, '[', &it)) {
        return malformed(out, "`input.to` is not a non-empty array");
    }
    while (bad == NULL && json_next(&it, NULL, &item)) {
        char number[MAX_NUMBER_DIGITS + 2];
        if (!json_text(item, number, sizeof number, &n) || !valid_number(number, n)) {
            bad = "a recipient in `input.to` is not in normal form (digits only)";
        } else if (++count > MAX_RECIPIENTS) {
            bad = "`input.to` has more recipients than max_recipients (" XSTR(MAX_RECIPIENTS) ")";
        } else {
            if (count > 1) put(&recipients, ",", 1);
            put(&recipients, number, n);
        }
    }
    if (bad != NULL || count == 0 || recipients.oom) {
        free(recipients.p);
        return recipients.oom ? NOTIFYD_PANIC : malformed(out, bad ? bad : "`input.to` is not a non-empty array");
    }

    if (!json_get(root, "exchange", &exchange)) { /* the first call */
        int has_from = json_get(input, "from", &from);
        if (!json_get(input, "text", &text) || !json_is(text, '"')) {
            rc = malformed(out, "`input.text` is not a string");
        } else if (has_from && !json_is(from, '"')) {
            rc = malformed(out, "`input.from` is not a string");
        } else {
            rc = first_step(inst, &recipients, text, has_from ? &from : NULL, out);
        }
    } else if (!json_get(exchange, "state", &state) || (given = json_strdup(state, &n, &oom)) == NULL) {
        rc = oom ? NOTIFYD_PANIC : malformed(out, "`exchange.state` is not a string");
    } else {
        if (n != recipients.len || memcmp(given, recipients.p, n) != 0) {
            rc = malformed(out, "`exchange.state` does not belong to this input");
        } else if (!json_get(exchange, "response", &response) || !json_is(response, '{')) {
            rc = malformed(out, "`exchange.response` is not an object");
        } else {
            rc = classify(inst, to, response, out);
        }
        free(given);
    }
    free(recipients.p);
    return rc;
}

/* ---- 5. The function table ------------------------------------------------------ */

static const notifyd_plugin_vtable TABLE = {
    .struct_size = (uint32_t)sizeof(notifyd_plugin_vtable),
    .abi_major = NOTIFYD_ABI_MAJOR,
    .abi_minor = NOTIFYD_ABI_MINOR,   /* 1: `form` and `basic_auth` need a 1.1 host */
    .capabilities = NOTIFYD_CAP_SEND, /* the bits match the non-NULL entries below */
    .free_buf = cex_free_buf,
    .describe = cex_describe,
    .instance_new = cex_instance_new,
    .instance_free = cex_instance_free,
    .send = cex_send,
    .status = NULL,
    .balance = NULL,
    .callback = NULL,
};

/* The one exported symbol. */
const notifyd_plugin_vtable *notifyd_plugin_v1(void) { return &TABLE; }
