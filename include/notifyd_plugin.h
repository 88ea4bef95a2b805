/*
 * notifyd provider plugin ABI, version 1.
 *
 * This header is the source of truth for the ABI. The Rust mirror lives in
 * crates/notifyd-plugin/src/abi.rs and a test fails when the two drift.
 *
 * A plugin is a shared library (libnotifyd_<name>.so) that exports one symbol,
 * `notifyd_plugin_v1`, returning a pointer to a static function table. The
 * plugin translates, the host does all I/O ("sans-IO"): each operation takes a
 * JSON document and answers with a JSON document that is either
 *   - an HTTP exchange for the host to perform, plus an opaque `state` string
 *     that the host hands back, together with the HTTP response, in the next
 *     call of the same operation (from ABI 1.1, a plugin that asks for it gets
 *     the transport error instead when there is no response); or
 *   - the operation's result.
 * Plugins never block, never open sockets, never spawn threads, and keep no
 * per-message state.
 *
 * Documents: every input and output is UTF-8 JSON carrying "v": 1. They are
 * defined, one JSON Schema (draft 2020-12) definition each, in
 * include/notifyd_plugin.schema.json beside this header (validate a document
 * against #/$defs/<name>: settings, send_call, send_answer, describe,
 * error_document, ...), and explained in docs/plugin-authors.md. In short:
 *   - key order is free, both ways; write each key once;
 *   - the host leaves an optional field out, it never writes null for it: the
 *     first call of an operation has no "exchange" key, and "from",
 *     "from_given" and "send_at" are absent when unset (the one null is the
 *     settings document's "base_url"); the schema says for every optional
 *     field what its absence means;
 *   - the host ignores keys it does not know in an answer; a plugin must
 *     ignore keys it does not know too (a later 1.x may add some);
 *   - integers are written as integers (1, not 1.0), codes and provider codes
 *     as strings;
 *   - "from" is the sender in notifyd's normal form (a leading "+" removed);
 *     from ABI 1.1, "from_given" is the sender as given when that differs;
 *   - limits: a response body is cut at 1 MiB, a callback body is at most
 *     64 KiB, at most 16 HTTP exchanges per operation; `state` has no limit
 *     (it is held in memory for one operation only: keep it small);
 *   - fields of a later minor version are marked in the schema ("ABI 1.1").
 *
 * Memory: inputs are owned by the host and valid for the duration of the call
 * only. Outputs (`notifyd_buf`) are allocated by the plugin and released by the
 * host through the table's `free_buf`, never by the host's allocator.
 *
 * Threads: one instance may be called from many threads at once.
 *
 * Compatibility: the table is append-only. Fields are added at its end in later
 * minor versions and `struct_size` tells the host how much of the table a
 * plugin provides; a field beyond `struct_size` is treated as absent. The
 * fields up to and including `send` are required. A different major version
 * is refused by the host.
 */
#ifndef NOTIFYD_PLUGIN_H
#define NOTIFYD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NOTIFYD_ABI_MAJOR 1
/* Minor 1 (ABI 1.1) adds no table field; it adds document fields a plugin opts into:
 * `exchange_errors` and `response_json` in `describe`, `results` beside an `http` step,
 * `query`, `form`, `json` and `basic_auth` in an HTTP request, `from_given` in the send input.
 * The host honours the `describe` flags only from a plugin whose table says minor 1 or later.
 * A plugin that uses them needs a host that speaks 1.1: a 1.0 host ignores them.
 * See include/notifyd_plugin.schema.json and docs/plugin-authors.md ("What ABI 1.1
 * adds", "Partial sends"). */
#define NOTIFYD_ABI_MINOR 1

/* The one exported symbol; the major version is part of its name. */
#define NOTIFYD_ENTRY_SYMBOL "notifyd_plugin_v1"

/* Capability bits (notifyd_plugin_vtable.capabilities). */
#define NOTIFYD_CAP_SEND     (UINT64_C(1) << 0) /* send: always set */
#define NOTIFYD_CAP_STATUS   (UINT64_C(1) << 1) /* status: delivery status polling */
#define NOTIFYD_CAP_BALANCE  (UINT64_C(1) << 2) /* balance: account balance query */
#define NOTIFYD_CAP_CALLBACK (UINT64_C(1) << 3) /* callback: parses pushed delivery reports */
#define NOTIFYD_CAP_SCHEDULE (UINT64_C(1) << 4) /* send honours "send_at" natively */

/* Return codes of every operation. */
#define NOTIFYD_OK          0 /* `out` holds the JSON answer */
#define NOTIFYD_ERROR       1 /* `out` holds {"v":1,"error":{"code":...,"message":...}}:
                                 code "invalid_settings" from instance_new, "plugin_error"
                                 from an operation ("invalid_request" for a callback report
                                 it cannot read); the host uses only the message */
#define NOTIFYD_PANIC       2 /* the plugin caught a panic/abort; `out` may be empty */
#define NOTIFYD_UNSUPPORTED 3 /* the operation is not implemented */

/* A byte buffer allocated by the plugin; the host frees it with `free_buf`. */
typedef struct notifyd_buf {
    uint8_t *ptr;
    size_t len;
} notifyd_buf;

/* An instance of a provider, created from its settings. Opaque to the host. */
typedef struct notifyd_instance notifyd_instance;

/*
 * One operation (send, status, balance, callback). `input` is a UTF-8 JSON
 * document owned by the host; the answer goes into `*out`.
 */
typedef int32_t (*notifyd_op_fn)(const notifyd_instance *instance,
                                 const uint8_t *input, size_t input_len,
                                 notifyd_buf *out);

typedef struct notifyd_plugin_vtable {
    /* --- header: present in every version --- */
    uint32_t struct_size;  /* sizeof(notifyd_plugin_vtable) as the plugin was built */
    uint16_t abi_major;    /* NOTIFYD_ABI_MAJOR */
    uint16_t abi_minor;    /* NOTIFYD_ABI_MINOR */
    uint64_t capabilities; /* NOTIFYD_CAP_* bits */

    /* --- v1.0, required --- */
    /* Releases a buffer this plugin returned. Safe to call with ptr == NULL. */
    void (*free_buf)(notifyd_buf buf);
    /* Writes the description document: name, version, limits. */
    int32_t (*describe)(notifyd_buf *out);
    /*
     * Creates an instance from {"v":1,"name":...,"base_url":...|null,"settings":{...}}.
     * On NOTIFYD_ERROR `*out` holds the error document and `*instance` is
     * untouched. Refuse unknown keys inside "settings" (an operator's typo must
     * not pass silently); ignore unknown keys of the document itself. On NOTIFYD_OK `*out` may be empty.
     */
    int32_t (*instance_new)(const uint8_t *settings, size_t settings_len,
                            notifyd_instance **instance, notifyd_buf *out);
    /* Destroys an instance created by instance_new. */
    void (*instance_free)(notifyd_instance *instance);
    /* Sends one text to one or more recipients. */
    notifyd_op_fn send;

    /* --- v1.0, optional (NULL, or beyond struct_size: absent) --- */
    /* Queries the delivery status of a batch of tracking references. */
    notifyd_op_fn status;
    /* Queries the account balance. */
    notifyd_op_fn balance;
    /* Turns a pushed delivery report (an HTTP request) into status updates. */
    notifyd_op_fn callback;
} notifyd_plugin_vtable;

/* The entry point every plugin exports. Returns a pointer to a static table. */
const notifyd_plugin_vtable *notifyd_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* NOTIFYD_PLUGIN_H */
