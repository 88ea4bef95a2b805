//! `include/notifyd_plugin.schema.json` is valid JSON Schema (draft 2020-12), and it tells the
//! truth: the documents the host writes with its wire types validate against it, what the host
//! refuses to read in a plugin's answer it refuses too (with the few differences listed here), and
//! the field tables of docs/plugin-authors.md list the same fields with the same required flags.
//! tests/plugin_answers.rs checks every plugin of the repository against it.

mod support;

use notifyd_plugin::wire::{
    BalanceResult, CallDocument, CallbackInput, CallbackResult, Describe, ErrorCode, ErrorDoc, Exchange,
    HttpResponse, InstanceInit, OpOutput, ProviderError, SendInput, SendResult, StatusInput, StatusResult,
    WIRE_VERSION,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use support::{Validator, schema_json};

// ---- the schema itself ------------------------------------------------------------------------

/// Validates `doc` against boon's copy of the draft 2020-12 metaschema.
fn against_metaschema(doc: &Value) -> Result<(), String> {
    let mut compiler = boon::Compiler::new();
    let mut schemas = boon::Schemas::new();
    let meta = compiler
        .compile("https://json-schema.org/draft/2020-12/schema", &mut schemas)
        .map_err(|e| format!("{e:#}"))?;
    schemas.validate(doc, meta).map_err(|e| format!("{e}"))
}

#[test]
fn the_schema_is_valid_json_schema_2020_12() {
    let schema = schema_json();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(against_metaschema(&schema), Ok(()));
    // Every definition compiles (so every `$ref` resolves and every pattern is a valid regex).
    let validator = Validator::new(schema).expect("every definition compiles");
    assert!(validator.check("v", &json!(1)).is_ok());
    // The check can fail: a broken schema is refused.
    assert!(against_metaschema(&json!({"$defs": {"x": {"type": 5}}})).is_err());
    assert!(Validator::new(json!({"$defs": {"x": {"pattern": "(unclosed"}}})).is_err());
}

#[test]
fn every_document_that_crosses_the_abi_has_a_definition() {
    let defs: BTreeSet<String> = support::definitions().into_iter().collect();
    let documents = [
        // host to plugin
        "settings",
        "send_call",
        "status_call",
        "balance_call",
        "callback_call",
        "send_input",
        "status_input",
        "balance_input",
        "callback_input",
        "exchange",
        "http_response",
        // plugin to host
        "describe",
        "send_answer",
        "status_answer",
        "balance_answer",
        "callback_answer",
        "http_request",
        "send_result",
        "recipient_result",
        "status_result",
        "status_update",
        "balance_result",
        "callback_result",
        "provider_error",
        "error_document",
    ];
    for name in documents {
        assert!(defs.contains(name), "no $defs/{name}");
    }
}

// ---- (a) what the host sends ------------------------------------------------------------------

fn check(def: &str, bytes: &[u8]) -> Value {
    Validator::get().check_bytes(def, bytes).unwrap_or_else(|e| {
        panic!("$defs/{def} refuses what the host writes:\n{}\n{e}", String::from_utf8_lossy(bytes))
    })
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        body: body.to_owned(),
        json: None,
    }
}

/// Responses as the host's HTTP client hands them over.
fn responses() -> Vec<HttpResponse> {
    vec![
        response(200, &[], ""),
        response(200, &[("content-type", "application/json")], r#"{"id":9}"#),
        response(502, &[("content-type", "text/html"), ("retry-after", "7")], "<html>Bad Gateway</html>"),
        response(302, &[("location", "https://elsewhere.example/")], ""),
        // Cut at the host's limit, with U+FFFD where a sequence was cut in two.
        response(200, &[], &format!("{}\u{FFFD}", "é".repeat((1 << 19) - 1))),
    ]
}

/// Checks the first call's document for `input`, then the document after each exchange.
fn check_calls<I: serde::Serialize>(def: &str, input: &I) {
    let mut doc = CallDocument::new(input).unwrap();
    let first = check(def, doc.as_bytes());
    assert!(first.get("exchange").is_none(), "the first call has no `exchange` key: {first}");
    for (state, response) in ["", "step-1", "{\"opaque\":[1,2]}"].iter().cycle().zip(responses()) {
        doc.set_exchange(&Exchange::answered((*state).to_owned(), response)).unwrap();
        let later = check(def, doc.as_bytes());
        assert_eq!(later["exchange"]["state"], *state);
        assert_eq!(later["input"], first["input"], "every call repeats the input");
    }
}

fn send_input() -> SendInput {
    SendInput {
        id: "order-1234-otp".into(),
        to: vec!["4915171112233".into(), "4915171112234".into()],
        text: "Your code is 1234".into(),
        from: None,
        from_given: None,
        encoding: "gsm7".into(),
        segments: 1,
        send_at: None,
    }
}

#[test]
fn the_settings_documents_the_host_writes_are_valid() {
    let mut settings = serde_json::Map::new();
    settings.insert("username".into(), json!("acme"));
    settings.insert("password".into(), json!("s3cret"));
    settings.insert("port".into(), json!(8443));
    settings.insert("routes".into(), json!(["a", "b"]));
    let inits = [
        // As a 1.0 host wrote it (no `abi_minor`), and as this host writes it.
        InstanceInit {
            v: WIRE_VERSION,
            name: "sms-a".into(),
            base_url: None,
            settings: Default::default(),
            abi_minor: None,
        },
        InstanceInit::new("acme_main-2", Some("https://proxy.example/smsc/".into()), settings),
    ];
    for init in inits {
        // As `PluginLibrary::instantiate` writes it.
        let doc = check("settings", &serde_json::to_vec(&init).unwrap());
        assert!(doc.as_object().unwrap().contains_key("base_url"), "always present, null or not: {doc}");
        assert!(doc["settings"].is_object(), "{doc}");
    }
}

#[test]
fn the_send_documents_the_host_writes_are_valid() {
    check_calls("send_call", &send_input());
    check_calls(
        "send_call",
        &SendInput {
            id: "js-1763800000000-42".into(),
            to: vec!["491517111223344".into()],
            text: "Grüße, €100 — ok? ".repeat(20),
            from: Some("My Shop.ge".into()),
            from_given: None,
            encoding: "ucs2".into(),
            segments: 6,
            send_at: Some("2026-11-22T09:00:00.000Z".into()),
        },
    );
    check_calls("send_call", &SendInput { from: Some("4915171112233".into()), ..send_input() });
    check_calls("send_call", &SendInput { id: "x".repeat(128), from: Some("2FA".into()), ..send_input() });
}

/// ABI 1.1: a transport error handed over instead of a response (as `Provider::drive` builds it
/// from the host's `OpError::to_provider_error`), a response with `json`, `from_given`.
#[test]
fn the_documents_of_abi_1_1_the_host_writes_are_valid() {
    let input = SendInput {
        from: Some("4915171112233".into()),
        from_given: Some("+4915171112233".into()),
        ..send_input()
    };
    let mut doc = CallDocument::new(&input).unwrap();
    let first = check("send_call", doc.as_bytes());
    assert_eq!(first["input"]["from_given"], "+4915171112233");
    let failures = [
        ProviderError::retryable(ErrorCode::Timeout, "the provider did not answer within 10s"),
        ProviderError::retryable(
            ErrorCode::Unavailable,
            "could not connect to the provider: error sending request: connection refused",
        ),
        ProviderError::retryable(ErrorCode::Unavailable, "the connection to the provider broke: reset"),
    ];
    for error in failures {
        doc.set_exchange(&Exchange::failed("step-2", error.clone())).unwrap();
        let later = check("send_call", doc.as_bytes());
        assert!(later["exchange"].get("response").is_none(), "{later}");
        assert_eq!(later["exchange"]["error"]["code"], error.code.as_str());
        assert_eq!(later["exchange"]["error"]["retryable"], true);
    }
    // `response_json`: whatever the body parsed to, `null` included.
    for (body, json) in [
        (r#"{"id":9,"ok":[true,null]}"#, json!({"id": 9, "ok": [true, null]})),
        ("null", Value::Null),
        ("7", json!(7)),
    ] {
        let response = HttpResponse {
            json: Some(json.clone()),
            ..response(200, &[("content-type", "application/json")], body)
        };
        doc.set_exchange(&Exchange::answered("s", response)).unwrap();
        let later = check("send_call", doc.as_bytes());
        assert_eq!(later["exchange"]["response"]["json"], json, "{later}");
        assert_eq!(later["exchange"]["response"]["body"], body);
    }
    // And through every operation's envelope.
    doc = CallDocument::new(&StatusInput { refs: vec!["r".into()] }).unwrap();
    doc.set_exchange(&Exchange::failed("", ProviderError::retryable(ErrorCode::Timeout, "t"))).unwrap();
    check("status_call", doc.as_bytes());
}

#[test]
fn the_status_balance_and_callback_documents_the_host_writes_are_valid() {
    check_calls("status_call", &StatusInput { refs: vec!["38421:4915171112233".into()] });
    // Two recipients under one provider message id, without `tracking`: the reference repeats.
    check_calls("status_call", &StatusInput { refs: vec!["7f3a".into(), "7f3a".into(), "".into()] });
    // `balance.rs` passes `serde_json::json!({})`.
    check_calls("balance_call", &json!({}));
    let report = CallbackInput {
        method: "POST".into(),
        path: String::new(),
        query: "id=38421&status=1".into(),
        headers: [("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned())].into(),
        body: "msgid=38421&status=4".into(),
    };
    check_calls("callback_call", &report);
    let bare = CallbackInput {
        method: "GET".into(),
        path: String::new(),
        query: String::new(),
        headers: BTreeMap::new(),
        body: "\u{FFFD}".repeat(1 << 16),
    };
    check_calls("callback_call", &bare);
}

#[test]
fn the_schema_refuses_what_the_host_never_writes() {
    let v = Validator::get();
    let input = serde_json::to_value(send_input()).unwrap();
    let with = |key: &str, value: Value| {
        let mut input = input.clone();
        input[key] = value;
        json!({"v": 1, "input": input})
    };
    let refused = [
        ("send_call", json!({"v": 1, "input": input, "exchange": null})),
        ("send_call", json!({"v": 1, "input": input, "extra": true})),
        ("send_call", json!({"v": 2, "input": input})),
        ("send_call", with("from", json!("+4915171112233"))),
        ("send_call", with("from", json!(" MyShop"))),
        ("send_call", with("from", json!("MyShopOnline"))),
        ("send_call", with("from", json!("12-34"))),
        ("send_call", with("to", json!(["+4915171112233"]))),
        ("send_call", with("to", json!(["4915171112233", "4915171112233"]))),
        ("send_call", with("to", json!([]))),
        ("send_call", with("text", json!(""))),
        ("send_call", with("encoding", json!("utf8"))),
        ("send_call", with("segments", json!(0))),
        ("send_call", with("send_at", json!("2026-11-22T09:00:00Z"))),
        ("send_call", with("id", json!("a\nb"))),
        ("send_call", with("id", json!("x".repeat(129)))),
        ("settings", json!({"v": 1, "name": "a", "settings": {}})),
        ("settings", json!({"v": 1, "name": "a b", "base_url": null, "settings": {}})),
        ("callback_input", json!({"method": "POST", "path": "/x", "query": "", "headers": {}, "body": ""})),
        ("http_response", json!({"status": 200, "headers": {"Content-Type": "x"}, "body": ""})),
        ("http_response", json!({"status": 200, "body": ""})),
        ("exchange", json!({"state": null, "response": {"status": 200, "headers": {}, "body": ""}})),
        ("balance_input", json!({"currency": "EUR"})),
        // ABI 1.1: a response or an error, never both, never neither; the error is a retryable
        // `timeout` or `unavailable` with no other fields; `from_given` is a `+` number.
        (
            "exchange",
            json!({"state": "s", "response": {"status": 200, "headers": {}, "body": ""},
                   "error": {"code": "timeout", "message": "m", "retryable": true}}),
        ),
        ("exchange", json!({"state": "s"})),
        ("exchange", json!({"state": "s", "error": {"code": "auth", "message": "m", "retryable": true}})),
        ("exchange", json!({"state": "s", "error": {"code": "timeout", "message": "m"}})),
        ("exchange", json!({"state": "s", "error": {"code": "timeout", "message": "m", "retryable": false}})),
        (
            "exchange",
            json!({"state": "s", "error": {"code": "timeout", "message": "m", "retryable": true, "provider_code": "x"}}),
        ),
        ("exchange", json!({"state": "s", "error": null})),
        ("send_call", with("from_given", json!("4915171112233"))),
        ("send_call", with("from_given", json!("+MyShop"))),
    ];
    for (def, doc) in refused {
        assert!(v.check(def, &doc).is_err(), "$defs/{def} accepts {doc}");
    }
    // The cases above differ from valid ones in the one field they name.
    for exchange in [
        json!({"state": "s", "response": {"status": 200, "headers": {}, "body": ""}}),
        json!({"state": "s", "error": {"code": "timeout", "message": "m", "retryable": true}}),
        json!({"state": "s", "error": {"code": "unavailable", "message": "m", "retryable": true}}),
    ] {
        assert_eq!(v.check("exchange", &exchange), Ok(()), "{exchange}");
    }
    assert_eq!(v.check("send_call", &with("from_given", json!("+4915171112233"))), Ok(()));
}

// ---- what the host reads from a plugin ---------------------------------------------------------

/// Whether the host takes `doc` as a valid `def` answer: it decodes into the host's wire type and
/// passes the checks the loader and `Provider::call` make (`v`; describe's name and
/// max_recipients).
fn host_reads(def: &str, doc: &str) -> bool {
    fn op<R: serde::de::DeserializeOwned>(doc: &str) -> bool {
        serde_json::from_str::<OpOutput<R>>(doc).is_ok_and(|o| o.v == WIRE_VERSION)
    }
    match def {
        "describe" => serde_json::from_str::<Describe>(doc)
            .is_ok_and(|d| d.v == WIRE_VERSION && !d.name.is_empty() && d.max_recipients > 0),
        "send_answer" => op::<SendResult>(doc),
        "status_answer" => op::<StatusResult>(doc),
        "balance_answer" => op::<BalanceResult>(doc),
        "callback_answer" => op::<CallbackResult>(doc),
        "error_document" => serde_json::from_str::<ErrorDoc>(doc).is_ok(),
        other => panic!("no host reader for {other}"),
    }
}

#[test]
fn the_schema_accepts_what_the_host_reads_and_refuses_what_it_cannot() {
    const HTTP: &str = r#""http":{"method":"POST","url":"https://gw.example/api/send","headers":[["content-type","text/plain"]],"body":"a"}"#;
    // (definition, answer, whether both accept it)
    let agree: &[(&str, String, bool)] = &[
        ("send_answer", format!(r#"{{"v":1,{HTTP},"state":"s"}}"#), true),
        // Key order is free.
        ("send_answer", format!(r#"{{"state":"","v":1,{HTTP}}}"#), true),
        ("send_answer", r#"{"v":1,"http":{"url":"https://gw.example/","method":"GET"},"state":"s"}"#.into(), true),
        ("send_answer", r#"{"v":1,"done":{"recipients":[{"to":"49151","provider_message_id":"7"}]}}"#.into(), true),
        // `null` is absent where the host's field is an `Option`.
        (
            "send_answer",
            r#"{"v":1,"http":null,"state":null,"done":{"recipients":[{"to":"49151","provider_message_id":"7","tracking":null,"error":null}],"error":null}}"#.into(),
            true,
        ),
        (
            "send_answer",
            r#"{"v":1,"done":{"error":{"code":"throttled","message":"slow down","provider_code":"429","retryable":true,"retry_after_ms":7000}}}"#.into(),
            true,
        ),
        // Keys the host does not know are ignored.
        (
            "send_answer",
            r#"{"v":1,"done":{"error":{"code":"auth","message":"no","provider_code":null,"retry_after_ms":null,"hint":1}},"extra":[]}"#.into(),
            true,
        ),
        // An answer with both steps is read as the `http` step.
        (
            "send_answer",
            format!(r#"{{"v":1,{HTTP},"state":"s","done":{{"recipients":[]}}}}"#),
            true,
        ),
        ("send_answer", r#"{"v":1}"#.into(), false),
        ("send_answer", r#"{"v":2,"done":{"recipients":[]}}"#.into(), false),
        ("send_answer", r#"{"done":{"recipients":[]}}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"}}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":7}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","headers":null},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","body":null},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","headers":[["a","b","c"]]},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","headers":{"a":"b"}},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"recipients":7}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"recipients":null,"error":null}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"recipients":[{"provider_message_id":"7"}]}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no","provider_code":429}}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no","retryable":null}}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no","retry_after_ms":-1}}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth"}}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"error":{"code":7,"message":"m"}}}"#.into(), false),
        ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"a","message":"b"}}}"#.into(), false),
        ("describe", r#"{"v":1,"name":"c-example","version":"0.1.0","max_recipients":50,"max_status_refs":0,"alphabet":"unicode","default_base_url":"http://127.0.0.1:8080"}"#.into(), true),
        ("describe", r#"{"max_recipients":1,"version":"1","name":"x","v":1,"default_base_url":null}"#.into(), true),
        ("describe", r#"{"v":1,"name":"","version":"1","max_recipients":1}"#.into(), false),
        ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":0}"#.into(), false),
        ("describe", r#"{"v":1,"name":"x","max_recipients":1}"#.into(), false),
        ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"alphabet":null}"#.into(), false),
        ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"max_status_refs":null}"#.into(), false),
        ("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r","status":"delivered","to":null,"error":null}]}}"#.into(), true),
        ("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r","status":"accepted"}]}}"#.into(), true),
        ("status_answer", r#"{"v":1,"done":{"error":{"code":"unavailable","message":"down","retryable":true}}}"#.into(), true),
        ("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r"}]}}"#.into(), false),
        ("status_answer", r#"{"v":1,"done":{"recipients":[]}}"#.into(), false),
        ("balance_answer", r#"{"v":1,"done":{"amount":1000,"currency":"credits"}}"#.into(), true),
        ("balance_answer", r#"{"v":1,"done":{"currency":"EUR","amount":-2.5}}"#.into(), true),
        ("balance_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no"}}}"#.into(), true),
        ("balance_answer", r#"{"v":1,"done":{"amount":"1000","currency":"EUR"}}"#.into(), false),
        ("balance_answer", r#"{"v":1,"done":{"amount":1.5}}"#.into(), false),
        ("balance_answer", r#"{"v":1,"done":{"error":null}}"#.into(), false),
        ("callback_answer", r#"{"v":1,"done":{"updates":[]}}"#.into(), true),
        ("callback_answer", r#"{"v":1,"done":{"updates":[{"ref":"38421","to":"4915171112233","status":"delivered"}],"response_status":200,"response_body":"OK"}}"#.into(), true),
        ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_status":null}}"#.into(), false),
        ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_body":null}}"#.into(), false),
        ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_status":70000}}"#.into(), false),
        ("callback_answer", r#"{"v":1,"done":{"response_status":200}}"#.into(), false),
        ("error_document", r#"{"v":1,"error":{"code":"invalid_settings","message":"unknown setting `foo`","retryable":false}}"#.into(), true),
        ("error_document", r#"{"error":{"message":"the host's input document is malformed","code":"plugin_error"},"v":1}"#.into(), true),
        ("error_document", r#"{"v":1,"error":{"message":"m"}}"#.into(), false),
        ("error_document", r#"{"error":{"code":"plugin_error","message":"m"}}"#.into(), false),
        // ABI 1.1.
        ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"exchange_errors":true,"response_json":false}"#.into(), true),
        ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"exchange_errors":null}"#.into(), false),
        ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"response_json":"yes"}"#.into(), false),
        // Recipients already sent, beside the next request.
        (
            "send_answer",
            r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/send","form":[["to","4915171112234"],["text","a b&c"]]},"state":"2","results":[{"to":"4915171112233","provider_message_id":"m-1"},{"to":"4915171112235","error":{"code":"invalid_recipient","message":"no"}}]}"#.into(),
            true,
        ),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":"s","results":[]}"#.into(), true),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":"s","results":null}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":"s","results":[{"provider_message_id":"m"}]}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":"s","results":{"to":"1"}}"#.into(), false),
        // The request helpers.
        (
            "send_answer",
            r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/api?fixed=1","query":[["to","+49 151"],["text","ü&="]],"basic_auth":{"user":"acme","password":"s3cret"}},"state":"s"}"#.into(),
            true,
        ),
        (
            "send_answer",
            r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/api","headers":[["content-type","application/vnd.gw+json"]],"json":{"to":["4915171112233"],"text":"hi","flash":false}},"state":"s"}"#.into(),
            true,
        ),
        // Absent, `""`, `[]` and `null` are "none", so these are not two bodies.
        ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","body":"","form":[["a","b"]],"json":null},"state":"s"}"#.into(), true),
        ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","body":"x","form":[],"basic_auth":null},"state":"s"}"#.into(), true),
        ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","json":[1,"two"]},"state":"s"}"#.into(), true),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","query":null},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","query":[["a"]]},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","form":[["a",1]]},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","form":{"a":"b"}},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","basic_auth":{"user":"acme"}},"state":"s"}"#.into(), false),
        ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","basic_auth":"acme:s3cret"},"state":"s"}"#.into(), false),
    ];
    let v = Validator::get();
    for (def, doc, accepted) in agree {
        let value: Value = serde_json::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
        let in_schema = v.check(def, &value).is_ok();
        // A key twice: JSON Schema sees one value (serde_json's `Value` keeps the last), the host
        // refuses the document; only the host's side can be checked.
        let duplicate_key = doc.contains(r#""message":"a","message":"b""#);
        if !duplicate_key {
            assert_eq!(in_schema, *accepted, "$defs/{def} on {doc}: {:?}", v.check(def, &value));
        }
        assert_eq!(host_reads(def, doc), *accepted, "the host on {def} {doc}");
    }

    // Where they differ, on purpose: the schema states what a plugin must write to be understood
    // as it meant; the host reads some more, and does what docs/plugin-authors.md says with it.
    let differ: &[(&str, &str, &str)] = &[
        // An unknown code or `invalid_settings` in a result is read as `plugin_error`.
        (
            "send_answer",
            r#"{"v":1,"done":{"error":{"code":"invalid_recipent","message":"m"}}}"#,
            "an unknown code",
        ),
        (
            "send_answer",
            r#"{"v":1,"done":{"error":{"code":"invalid_settings","message":"m"}}}"#,
            "invalid_settings in a result",
        ),
        // A recipient with neither an id nor an error ends `failed` with `plugin_error`.
        ("send_answer", r#"{"v":1,"done":{"recipients":[{"to":"49151"}]}}"#, "a recipient with neither"),
        // A status word that is not a status is ignored.
        (
            "status_answer",
            r#"{"v":1,"done":{"statuses":[{"ref":"r","status":"DELIVRD"}]}}"#,
            "an unknown status",
        ),
        // A URL that is not absolute: the host's HTTP client refuses it (`plugin_error`).
        (
            "send_answer",
            r#"{"v":1,"http":{"method":"GET","url":"gw.example/send"},"state":"s"}"#,
            "a relative URL",
        ),
        // The loader does not check `alphabet` (`plugin verify` does).
        (
            "describe",
            r#"{"v":1,"name":"x","version":"1","max_recipients":1,"alphabet":"ascii"}"#,
            "another alphabet",
        ),
        // A response status outside 100..=999 is answered as 200.
        ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_status":1000}}"#, "status 1000"),
        // The host does not check `v` of an error document.
        ("error_document", r#"{"v":7,"error":{"code":"plugin_error","message":"m"}}"#, "v 7"),
        // ABI 1.1: two bodies are read, then not sent: the operation ends `plugin_error`.
        (
            "send_answer",
            r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","body":"a=1","form":[["a","1"]]},"state":"s"}"#,
            "body and form",
        ),
        (
            "send_answer",
            r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","form":[["a","1"]],"json":{}},"state":"s"}"#,
            "form and json",
        ),
        (
            "send_answer",
            r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","body":"{}","json":{}},"state":"s"}"#,
            "body and json",
        ),
        // `results` beside `done` alone, or in another operation's answer, is read and ignored.
        (
            "send_answer",
            r#"{"v":1,"done":{"recipients":[]},"results":[{"to":"4915171112233","provider_message_id":"m"}]}"#,
            "results beside done",
        ),
        ("status_answer", r#"{"v":1,"done":{"statuses":[]},"results":[]}"#, "results in status"),
        (
            "balance_answer",
            r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":"s","results":[]}"#,
            "results in balance",
        ),
        ("callback_answer", r#"{"v":1,"done":{"updates":[]},"results":[]}"#, "results in callback"),
    ];
    for (def, doc, what) in differ {
        let value: Value = serde_json::from_str(doc).unwrap();
        assert!(v.check(def, &value).is_err(), "{what}: $defs/{def} accepts {doc}");
        assert!(host_reads(def, doc), "{what}: the host refuses {doc}");
    }
    // And the other way, which JSON Schema cannot express: it does not tell 1.0 from 1, but the
    // host reads integers as unsigned integers.
    for (def, doc) in [
        ("send_answer", r#"{"v":1.0,"done":{"recipients":[]}}"#),
        ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"m","retry_after_ms":7000.0}}}"#),
    ] {
        let value: Value = serde_json::from_str(doc).unwrap();
        assert!(v.check(def, &value).is_ok(), "$defs/{def} refuses {doc}");
        assert!(!host_reads(def, doc), "the host reads {doc}");
    }
}

// ---- the guide's tables ------------------------------------------------------------------------

/// A field table of docs/plugin-authors.md: the `$defs` entries its `Schema:` line names, and each
/// row's field with whether the table says it is required.
#[derive(Debug)]
struct Table {
    defs: Vec<String>,
    line: usize,
    fields: BTreeMap<String, bool>,
}

/// The backticked words of `text`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|').trim_end_matches('|');
    row.split('|').map(|c| c.trim().to_owned()).collect()
}

/// Every table that follows a line saying `Schema: `name`[, `name`…]`, up to the next such line.
fn guide_tables(guide: &str) -> Vec<Table> {
    let lines: Vec<&str> = guide.lines().collect();
    let mut tables = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((_, named)) = lines[i].split_once("Schema: ") else {
            i += 1;
            continue;
        };
        let (defs, at) = (backticked(named), i + 1);
        i += 1;
        while i < lines.len() && !lines[i].starts_with('|') {
            assert!(
                !lines[i].contains("Schema: "),
                "docs/plugin-authors.md:{at}: no table before line {}",
                i + 1
            );
            i += 1;
        }
        assert!(i < lines.len(), "docs/plugin-authors.md:{at}: no table follows");
        let header = cells(lines[i]);
        let column = |name: &str| {
            header.iter().position(|c| c == name).unwrap_or_else(|| {
                panic!("docs/plugin-authors.md:{}: the table has no `{name}` column: {header:?}", i + 1)
            })
        };
        let (field, required) = (column("field"), column("required"));
        let mut fields = BTreeMap::new();
        i += 2; // the header and the |---| row
        while i < lines.len() && lines[i].starts_with('|') {
            let row = cells(lines[i]);
            let name = backticked(&row[field]).into_iter().next().unwrap_or_else(|| {
                panic!("docs/plugin-authors.md:{}: no `field` in {:?}", i + 1, row[field])
            });
            let flag = match row[required].as_str() {
                "yes" => true,
                "no" => false,
                other => panic!("docs/plugin-authors.md:{}: required is {other:?}, not yes or no", i + 1),
            };
            assert!(
                fields.insert(name.clone(), flag).is_none(),
                "docs/plugin-authors.md:{}: `{name}` twice",
                i + 1
            );
            i += 1;
        }
        tables.push(Table { defs, line: at, fields });
    }
    tables
}

#[test]
fn the_guide_tables_list_the_schema_fields_with_the_same_required_flags() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plugin-authors.md");
    let guide = std::fs::read_to_string(&path).unwrap();
    let schema = schema_json();
    let defs = schema["$defs"].as_object().unwrap();
    let tables = guide_tables(&guide);
    let mut covered = BTreeSet::new();
    for table in &tables {
        assert!(
            !table.defs.is_empty(),
            "docs/plugin-authors.md:{}: `Schema:` names no definition",
            table.line
        );
        for name in &table.defs {
            let def = defs.get(name).unwrap_or_else(|| {
                panic!("docs/plugin-authors.md:{}: the schema has no $defs/{name}", table.line)
            });
            let properties: BTreeSet<&str> = def["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let required: BTreeSet<&str> =
                def["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let listed: BTreeSet<&str> = table.fields.keys().map(String::as_str).collect();
            assert_eq!(
                listed, properties,
                "docs/plugin-authors.md:{}: the fields of $defs/{name}",
                table.line
            );
            let said: BTreeSet<&str> =
                table.fields.iter().filter(|(_, required)| **required).map(|(f, _)| f.as_str()).collect();
            assert_eq!(
                said, required,
                "docs/plugin-authors.md:{}: the required fields of $defs/{name}",
                table.line
            );
            covered.insert(name.clone());
        }
    }
    // And the other way: every definition of a document with fields has its table.
    let with_fields: BTreeSet<String> = defs
        .iter()
        .filter(|(_, def)| def["type"] == "object" && def.get("properties").is_some())
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(covered, with_fields, "definitions with a table in docs/plugin-authors.md");
    assert!(tables.len() >= 15, "found only {} tables: is the `Schema:` line still there?", tables.len());
}

#[test]
fn the_table_check_can_fail() {
    let guide = "Schema: `describe`.\n\n| field | type | required | meaning |\n|---|---|---|---|\n| `v` | 1 | yes | |\n| `name` | string | no | |\n";
    let tables = guide_tables(guide);
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].defs, ["describe"]);
    assert_eq!(tables[0].fields, BTreeMap::from([("v".to_owned(), true), ("name".to_owned(), false)]));
}
