//! Every plugin of the repository (`plugins/*`) answers what `include/notifyd_plugin.schema.json`
//! says, byte for byte as it crosses the ABI: each is built (cargo, or the C compiler for the
//! c-example), loaded with the host's loader and called through its function table with the
//! documents the host writes ([`CallDocument`]). Each HTTP request it asks for is answered with
//! the provider's documented answers (from the plugin's own tests and fixtures) and with hostile
//! ones, and every document it answers (describe, the error documents of `instance_new`, each
//! step and result of every operation it supports) is validated against its definition, and
//! against a strict copy of the schema that also refuses keys the host would ignore.
//!
//! The same calls are made with every object's keys in another order (sorted), and must get the
//! same answers: key order is free, for plugins too.

mod support;

use notifyd_loader::{Op, PluginInstance, PluginLibrary};
use notifyd_plugin::abi::{CAP_SCHEDULE, RC_ERROR, RC_OK, RC_PANIC};
use notifyd_plugin::wire::{
    CallDocument, CallbackInput, Exchange, HttpResponse, InstanceInit, MAX_EXCHANGES, SendInput, StatusInput,
};
use notifyd_testkit::{c_plugin, cargo_plugin, workspace_root};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use support::Validator;

/// One plugin of the repository, with the answers its provider documents.
struct Plugin {
    /// The directory under `plugins/`.
    dir: &'static str,
    /// Settings its `instance_new` accepts.
    settings: Value,
    /// Recipients its documented send answers name.
    to: &'static [&'static str],
    /// Documented answers to `send`'s request.
    send: Vec<HttpResponse>,
    /// References its documented status answers are for, and those answers.
    refs: &'static [&'static str],
    status: Vec<HttpResponse>,
    /// Documented answers to `balance`'s request.
    balance: Vec<HttpResponse>,
    /// Delivery reports, as the host hands them to `callback`.
    reports: Vec<CallbackInput>,
}

impl Plugin {
    fn new(dir: &'static str, settings: Value, to: &'static [&'static str]) -> Plugin {
        Plugin {
            dir,
            settings,
            to,
            send: vec![],
            refs: &[],
            status: vec![],
            balance: vec![],
            reports: vec![],
        }
    }

    fn library(&self) -> PathBuf {
        if self.dir == "c-example" {
            return c_plugin(
                &workspace_root().join("plugins/c-example/notifyd_c_example.c"),
                "notifyd_c_example",
            );
        }
        if self.dir == "c-vonage" {
            return c_plugin(&workspace_root().join("plugins/c-vonage/notifyd_vonage.c"), "notifyd_vonage");
        }
        let lib = format!("notifyd_{}", self.dir.replace('-', "_"));
        cargo_plugin(&format!("notifyd-{}", self.dir), &lib)
    }
}

fn ok(body: &str) -> HttpResponse {
    answer(200, &[], body)
}

fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        body: body.to_owned(),
        json: None,
    }
}

/// A 200 with a JSON body, parsed as the host hands it to a plugin that declares `response_json`.
fn json_ok(body: &str) -> HttpResponse {
    HttpResponse { json: Some(serde_json::from_str(body).unwrap()), ..ok(body) }
}

fn fixture(path: &str) -> String {
    let path = workspace_root().join("plugins").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn report(method: &str, query: &str, body: &str) -> CallbackInput {
    CallbackInput {
        method: method.into(),
        path: String::new(),
        query: query.into(),
        headers: [("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned())].into(),
        body: body.into(),
    }
}

/// Every plugin under `plugins/`.
fn plugins() -> Vec<Plugin> {
    let credentials = json!({"username": "acme", "password": "s3cret pw"});
    vec![
        // No HTTP. `panic_on_text`: the text "boom" makes `send` panic
        // (`a_panic_answers_an_error_document`).
        Plugin::new(
            "sandbox",
            json!({"reject": ["4915171112234"], "undeliverable": ["4915171112233"], "balance": 12.5, "panic_on_text": "boom"}),
            &["4915171112233", "4915171112234"],
        ),
        Plugin {
            send: vec![ok("4915171112233 OK 7f3a-0001\n4915171112234 ERR INVALID_NUMBER\n")],
            ..Plugin::new("c-example", credentials.clone(), &["4915171112233", "4915171112234"])
        },
        // One recipient per request, `response_json`: the answers come parsed.
        Plugin {
            send: vec![
                json_ok(
                    r#"{"message-count":"1","messages":[{"to":"4915171112233","message-id":"0A0000000123ABCD1","status":"0","remaining-balance":"3.14159265","message-price":"0.03330000","network":"26201"}]}"#,
                ),
                json_ok(
                    r#"{"message-count":"1","messages":[{"status":"3","error-text":"Invalid to number"}]}"#,
                ),
                json_ok(
                    r#"{"message-count":"1","messages":[{"status":"1","error-text":"Throughput Rate Exceeded"}]}"#,
                ),
            ],
            balance: vec![json_ok(r#"{"value":10.28,"autoReload":false}"#)],
            ..Plugin::new(
                "c-vonage",
                json!({"api_key": "k3y", "api_secret": "s3cret"}),
                &["4915171112233", "4915171112234"],
            )
        },
        Plugin {
            send: vec![
                ok(r#"{"id":10,"cnt":2,"cost":"7.6","balance":"278.95"}"#),
                ok("OK - 1 SMS, ID - 31"),
                ok("ERROR = 2 (authorise error)"),
            ],
            refs: &["9:4915100000001", "9:4915100000002", "12:447700900123"],
            status: vec![ok(
                r#"[{"status":20,"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222,"err":1,"id":9,"phone":"4915100000002"},{"status":1,"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222,"id":"12","phone":"447700900123"},{"status":0,"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222,"id":9,"phone":"+4915100000001"}]"#,
            )],
            balance: vec![
                ok(r#"{"balance":"286.55","currency":"RUB"}"#),
                ok(r#"{"error":"authorise error","error_code":2}"#),
            ],
            ..Plugin::new("smsc", credentials.clone(), &["4915100000001", "447700900123"])
        },
        Plugin {
            send: vec![ok(&fixture("smsclub/fixtures/txt_send_response.json"))],
            refs: &["106"],
            status: vec![ok(&fixture("smsclub/fixtures/txt_status_response.json"))],
            balance: vec![ok(&fixture("smsclub/fixtures/txt_balance_response.json"))],
            ..Plugin::new("smsclub", json!({"token": "t0k3n"}), &["380989361131"])
        },
        Plugin {
            send: vec![ok("OK 1 55"), ok("2907")],
            refs: &["123:995599445448", "124:995599445449"],
            status: vec![ok("1"), ok("6")],
            balance: vec![ok("150.25"), ok("12,5")],
            ..Plugin::new("smscoge", credentials.clone(), &["995599445448", "995599445449"])
        },
        Plugin {
            send: vec![ok("38421, 38422"), ok("Out of SMS"), ok("The phone number is in the stop list.")],
            refs: &["38421", "38422"],
            status: vec![ok("deliver"), ok("not deliver")],
            balance: vec![ok("1000 EUR")],
            ..Plugin::new("sendmsgate", credentials.clone(), &["4915171112233", "4915171112234"])
        },
        Plugin {
            send: vec![ok("ID:10011000000000000001"), ok("44771012345,ID:5\n"), ok("err:login_invalid")],
            balance: vec![ok("BALANCE:1234"), ok("ERR:LOGIN_INVALID")],
            reports: vec![report("POST", "", "msgid=1&status=4"), report("POST", "", "msgid=2&status=7")],
            ..Plugin::new("intellisoftware", credentials, &["44771012345"])
        },
    ]
}

/// Answers any provider may give: errors, HTML, nothing, a cut body, a huge one.
fn hostile() -> Vec<HttpResponse> {
    vec![
        ok(""),
        answer(502, &[("content-type", "text/html")], "<html><body>Bad Gateway</body></html>"),
        ok("<html><body>down for maintenance</body></html>"),
        ok(r#"{"id":"#),
        answer(500, &[], ""),
        answer(429, &[("retry-after", "7")], ""),
        answer(401, &[], "unauthorised"),
        ok(&"x".repeat(1 << 20)),
    ]
}

fn hostile_reports() -> Vec<CallbackInput> {
    vec![report("POST", "", ""), report("GET", "a=%zz", "<html>"), report("POST", "", "msgid=&status=")]
}

// ---- calling a plugin ---------------------------------------------------------------------------

/// Validates `bytes` against `#/$defs/<def>`, and against the strict copy.
fn checked(plugin: &str, what: &str, def: &str, bytes: &[u8]) -> Value {
    let fail = |e: String| -> ! {
        panic!(
            "plugin `{plugin}`, {what}: the answer is not a valid {def}:\n{}\n{e}",
            String::from_utf8_lossy(bytes)
        )
    };
    let doc = Validator::get().check_bytes(def, bytes).unwrap_or_else(|e| fail(e));
    Validator::strict()
        .check(def, &doc)
        .unwrap_or_else(|e| fail(format!("(strict: a key the host ignores) {e}")));
    doc
}

/// `value` written with every object's keys sorted: another order than the host's.
fn sorted(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), sorted(&map[k.as_str()])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(sorted).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// As the host writes them ([`CallDocument`]).
    Host,
    /// Every object's keys sorted.
    Sorted,
}

/// Runs `op` as the host does, answering each HTTP request with `response`; validates every
/// answer and returns them.
fn drive(
    name: &str,
    instance: &PluginInstance,
    op: Op,
    input: &Value,
    response: &HttpResponse,
    order: Order,
) -> Vec<Value> {
    let def = format!("{}_answer", op.as_str());
    let what = |step: usize| {
        format!("{} step {step} (answer {} {:.40?})", op.as_str(), response.status, response.body)
    };
    let mut doc = CallDocument::new(input).unwrap();
    let mut answers = Vec::new();
    for step in 0..=MAX_EXCHANGES {
        let bytes = match order {
            Order::Host => doc.as_bytes().to_vec(),
            Order::Sorted => sorted(&serde_json::from_slice(doc.as_bytes()).unwrap()).into_bytes(),
        };
        let answer = instance.call(op, &bytes).expect("the plugin supports the operation");
        match answer.rc {
            RC_OK => {
                let doc_out = checked(name, &what(step), &def, &answer.body);
                answers.push(doc_out.clone());
                match (doc_out.get("http").filter(|h| !h.is_null()), doc_out["state"].as_str()) {
                    (Some(_), Some(state)) => {
                        doc.set_exchange(&Exchange::answered(state.to_owned(), response.clone())).unwrap()
                    }
                    _ => return answers,
                }
            }
            RC_ERROR => {
                let error = checked(name, &what(step), "error_document", &answer.body);
                // The codes docs/plugin-authors.md asks for (the host does not use them): a report
                // that is not one the plugin can read is an invalid request; anything else
                // refused by an operation is the plugin's `plugin_error`.
                let expected: &[&str] =
                    if op == Op::Callback { &["invalid_request", "plugin_error"] } else { &["plugin_error"] };
                let code = error["error"]["code"].as_str().unwrap_or_default();
                assert!(expected.contains(&code), "plugin `{name}`, {}: {error}", what(step));
                answers.push(error);
                return answers;
            }
            rc => panic!(
                "plugin `{name}`, {}: return code {rc}: {}",
                what(step),
                String::from_utf8_lossy(&answer.body)
            ),
        }
    }
    panic!("plugin `{name}`: {} asked for more than {MAX_EXCHANGES} exchanges", op.as_str())
}

/// [`drive`] in the host's key order and in another, which must get the same answers.
fn drive_both(
    name: &str,
    instance: &PluginInstance,
    op: Op,
    input: &Value,
    response: &HttpResponse,
) -> Vec<Value> {
    let answers = drive(name, instance, op, input, response, Order::Host);
    let reordered = drive(name, instance, op, input, response, Order::Sorted);
    assert_eq!(answers, reordered, "plugin `{name}`, {}: another key order, another answer", op.as_str());
    answers
}

fn load(plugin: &Plugin) -> (Arc<PluginLibrary>, PluginInstance) {
    let library = PluginLibrary::load(&plugin.library()).unwrap_or_else(|e| panic!("{}: {e}", plugin.dir));
    let init = InstanceInit::new(
        format!("{}-schema", plugin.dir),
        None,
        plugin.settings.as_object().cloned().unwrap_or_default(),
    );
    let instance = library.instantiate(&init).unwrap_or_else(|e| panic!("{}: {e}", plugin.dir));
    (library, instance)
}

// ---- the tests ----------------------------------------------------------------------------------

#[test]
fn every_plugin_of_the_repository_is_covered() {
    let dirs: BTreeSet<String> = std::fs::read_dir(workspace_root().join("plugins"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let covered: BTreeSet<String> = plugins().iter().map(|p| p.dir.to_owned()).collect();
    assert_eq!(covered, dirs, "add the new plugin, with its documented answers, to `plugins()`");
}

#[test]
fn describe_and_the_settings_answers_are_valid() {
    for plugin in plugins() {
        let (library, _) = load(&plugin);
        let name = plugin.dir;
        checked(name, "describe", "describe", library.describe_document());

        let mut settings = plugin.settings.clone();
        settings["notifyd_schema_unknown_key"] = json!(true);
        let init = json!({"v": 1, "name": "schema", "base_url": null, "settings": settings, "abi_minor": 1});
        for (what, doc) in [
            ("an unknown key", serde_json::to_vec(&init).unwrap()),
            ("an unknown key, keys sorted", sorted(&init).into_bytes()),
            ("a malformed settings document", br#"{"v":1,"name":"#.to_vec()),
        ] {
            let created = library.instance_new(&doc);
            assert_eq!(created.rc, RC_ERROR, "plugin `{name}`, {what}");
            assert!(created.instance.is_none());
            let error = checked(name, what, "error_document", &created.answer);
            assert_eq!(error["error"]["code"], "invalid_settings", "plugin `{name}`, {what}: {error}");
        }
        let valid = json!({"v": 1, "name": "schema", "base_url": "https://gw.example/prefix/", "settings": plugin.settings, "abi_minor": 1});
        let created = library.instance_new(sorted(&valid).as_bytes());
        assert_eq!(created.rc, RC_OK, "plugin `{name}`: settings with their keys sorted");
        assert!(created.instance.is_some(), "plugin `{name}`");
    }
}

#[test]
fn every_answer_of_every_operation_is_valid() {
    for plugin in plugins() {
        let (library, instance) = load(&plugin);
        let name = plugin.dir;
        let schedules = library.capabilities() & CAP_SCHEDULE != 0;
        let inputs = [
            SendInput {
                id: "order-1234-otp".into(),
                to: plugin.to.iter().map(|s| (*s).to_owned()).collect(),
                text: "Your code is 1234".into(),
                from: Some("MyShop".into()),
                from_given: None,
                encoding: "gsm7".into(),
                segments: 1,
                send_at: schedules.then(|| "2026-11-22T09:00:00.000Z".to_owned()),
            },
            SendInput {
                id: "js-1763800000000-42".into(),
                to: plugin.to[..1].iter().map(|s| (*s).to_owned()).collect(),
                text: "Привет, мир".into(),
                from: Some("4915171112233".into()),
                from_given: Some("+4915171112233".into()),
                encoding: "ucs2".into(),
                segments: 1,
                send_at: None,
            },
        ];
        let send_answers: Vec<HttpResponse> = plugin.send.iter().cloned().chain(hostile()).collect();
        // Every answer, to check below that the documented answers were understood: a test that
        // only ever saw error results would check little of the schema.
        let mut seen = Vec::new();
        for input in &inputs {
            let input = serde_json::to_value(input).unwrap();
            for response in &send_answers {
                let answers = drive_both(name, &instance, Op::Send, &input, response);
                seen.extend(answers);
            }
        }
        let sent = |a: &Value| {
            a["done"]["recipients"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["provider_message_id"].is_string()))
        };
        assert!(seen.iter().any(sent), "plugin `{name}`: no recipient was sent");

        if library.supports(Op::Status) {
            let input = serde_json::to_value(StatusInput {
                refs: plugin.refs.iter().map(|s| (*s).to_owned()).collect(),
            });
            let mut input = input.unwrap();
            if plugin.refs.is_empty() {
                input = json!({"refs": ["sb-1:4915171112233", "sb-2:4915171112234"]});
            }
            for response in plugin.status.iter().cloned().chain(hostile()) {
                seen.extend(drive_both(name, &instance, Op::Status, &input, &response));
            }
            assert!(listed(&seen, "statuses"), "plugin `{name}`: no status was read");
        }
        if library.supports(Op::Balance) {
            for response in plugin.balance.iter().cloned().chain(hostile()) {
                seen.extend(drive_both(name, &instance, Op::Balance, &json!({}), &response));
            }
            assert!(
                seen.iter().any(|a| a["done"]["amount"].is_number()),
                "plugin `{name}`: no balance was read"
            );
        }
        if library.supports(Op::Callback) {
            assert!(!plugin.reports.is_empty(), "plugin `{name}`: give it documented reports");
            for report in plugin.reports.iter().cloned().chain(hostile_reports()) {
                let input = serde_json::to_value(report).unwrap();
                seen.extend(drive_both(name, &instance, Op::Callback, &input, &ok("")));
            }
            assert!(listed(&seen, "updates"), "plugin `{name}`: no report was read");
        }
    }
}

/// Whether one of `answers` is a result whose list `key` is not empty.
fn listed(answers: &[Value], key: &str) -> bool {
    answers.iter().any(|a| a["done"][key].as_array().is_some_and(|list| !list.is_empty()))
}

#[test]
fn malformed_input_and_foreign_state_answer_valid_documents() {
    for plugin in plugins() {
        let (library, instance) = load(&plugin);
        let name = plugin.dir;
        let ops = [Op::Send, Op::Status, Op::Balance, Op::Callback];
        for op in ops.into_iter().filter(|op| library.supports(*op)) {
            let answer = instance.call(op, br#"{"v":1,"input":5"#).unwrap();
            assert_eq!(answer.rc, RC_ERROR, "plugin `{name}`, {}: a truncated document", op.as_str());
            let error = checked(name, "a truncated document", "error_document", &answer.body);
            assert_eq!(error["error"]["code"], "plugin_error", "plugin `{name}`: {error}");
        }
        // A state the plugin never gave: an error document, or a result.
        let input =
            json!({"id": "r-1", "to": [plugin.to[0]], "text": "hi", "encoding": "gsm7", "segments": 1});
        let mut doc = CallDocument::new(&input).unwrap();
        doc.set_exchange(&Exchange::answered("not-from-this-plugin", ok(""))).unwrap();
        let answer = instance.call(Op::Send, doc.as_bytes()).unwrap();
        match answer.rc {
            RC_OK => checked(name, "a foreign state", "send_answer", &answer.body),
            RC_ERROR => checked(name, "a foreign state", "error_document", &answer.body),
            rc => panic!("plugin `{name}`: a foreign state: return code {rc}"),
        };
    }
}

#[test]
fn a_panic_answers_an_error_document() {
    let sandbox = plugins().into_iter().find(|p| p.dir == "sandbox").unwrap();
    let (_, instance) = load(&sandbox);
    let input =
        json!({"id": "r-1", "to": ["4915171112233"], "text": "boom", "encoding": "gsm7", "segments": 1});
    let answer = instance.call(Op::Send, CallDocument::new(&input).unwrap().as_bytes()).unwrap();
    assert_eq!(answer.rc, RC_PANIC);
    let error = checked("sandbox", "a panic", "error_document", &answer.body);
    assert_eq!(error["error"]["code"], "plugin_error");
}
