//! `notifyd plugin verify FILE`: conformance checks a plugin author can run against the daemon
//! they deploy. The result is a list of checks, each with a stable name, a verdict and a detail;
//! any failure makes the command fail.
//!
//! Checks, in order: the library loads and speaks ABI 1.x; `describe` is well formed and agrees
//! with the capability bits; an instance can be created (from `--settings`, or from empty or
//! placeholder credentials); an unknown key added to those settings is refused with a message that
//! names it; then for each operation the plugin has, a malformed input is refused, the first step
//! (a `send` to `min(2, max_recipients)` recipients) is valid, and hostile HTTP answers (empty,
//! HTML, truncated, huge) are classified, never crash; last, the instance serves several threads at
//! once. A failing check says what the plugin answered: the return code, and the error document's
//! code and message.
//!
//! Every document the plugin answers along the way is also checked against the schema of the
//! plugin documents, `include/notifyd_plugin.schema.json` (built into the binary, see
//! [`crate::schema`]): `describe: schema`, `settings: schema` (the error document of every
//! refusal of settings) and `<op>: schema` (every answer of the operation: its steps, HTTP
//! requests, results and error documents). A document that breaks a rule fails the check, which names the field by its JSON
//! pointer and says the rule (`/done/recipients/0/error/provider_code: expected a string or null,
//! found a number`).
//!
//! A new check is one more call to [`Report::check`] from the stage it belongs to; its name goes
//! into the table in docs/plugin-authors.md.

use crate::plugin::{Op, PluginError, PluginInstance, PluginLibrary};
use crate::schema;
use notifyd_plugin::abi;
use notifyd_plugin::wire::{
    Describe, ErrorCode, ErrorDoc, Exchange, HttpRequest, HttpResponse, InstanceInit, OpOutput, SendInput,
    SendResult, Step, WIRE_VERSION,
};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// The key the unknown-setting check adds to working settings.
const UNKNOWN_KEY: &str = "notifyd_verify_unknown_key";

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, stable across runs (`loads`, `settings: unknown key`, `send: first step`, ...).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen: on a failure, the plugin's answer (return code, error code and message).
    pub detail: String,
}

/// The report of a verification: the checks in the order they ran, and what the plugin says about
/// itself when it loaded.
#[derive(Debug, Default)]
pub struct Report {
    /// The plugin's `describe` document; `None` when the library did not load.
    pub describe: Option<Describe>,
    /// The ABI version the plugin was built against (`"1.0"`), when it loaded.
    pub abi: Option<String>,
    /// Every check that ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Records a check; returns `ok`.
    pub fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) -> bool {
        self.checks.push(Check { name: name.into(), ok, detail: detail.into() });
        ok
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// The check called `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// One line per check: `ok   <name>: <detail>` or `FAIL <name>: <detail>`.
    pub fn render(&self) -> Vec<String> {
        self.checks
            .iter()
            .map(|c| format!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail))
            .collect()
    }

    /// The report as one JSON document (`notifyd plugin verify --json`), pretty-printed, fields in
    /// this order: `file`, `passed`, `verdict` (`"conforms"` or `"does not conform"`), `abi` and
    /// `describe` (`null` when the library did not load), `checks` (`name`, `ok`, `detail` each).
    pub fn to_json(&self, file: &Path) -> String {
        #[derive(Serialize)]
        struct Document<'r> {
            file: String,
            passed: bool,
            verdict: &'static str,
            abi: &'r Option<String>,
            describe: &'r Option<Describe>,
            checks: &'r [Check],
        }
        let passed = self.passed();
        let document = Document {
            file: file.display().to_string(),
            passed,
            verdict: if passed { "conforms" } else { "does not conform" },
            abi: &self.abi,
            describe: &self.describe,
            checks: &self.checks,
        };
        serde_json::to_string_pretty(&document).expect("a report encodes as JSON")
    }
}

/// The settings document the daemon would write for `lib` (`abi_minor` only to a 1.1 table).
fn init(lib: &PluginLibrary, settings: serde_json::Map<String, serde_json::Value>) -> InstanceInit {
    let mut init = InstanceInit::new("verify", Some("http://127.0.0.1:9".into()), settings);
    if lib.abi_minor() < 1 {
        init.abi_minor = None;
    }
    init
}

/// Runs every check on the plugin at `path`. `settings`, a JSON object, are the test instance's
/// settings; without them, empty and placeholder credentials are tried.
pub fn verify(path: &Path, settings: Option<serde_json::Value>) -> Report {
    let mut r = Report::default();
    let lib = match PluginLibrary::load(path) {
        Ok(lib) => lib,
        Err(e) => {
            r.check("loads", false, e.to_string());
            return r;
        }
    };
    r.describe = Some(lib.describe.clone());
    r.abi = Some(lib.abi_version());
    check_describe(&mut r, &lib);
    // The error documents of every refusal of settings, checked against the schema.
    let mut refusals = Conformance::default();
    let Some((instance, settings)) = check_instance(&mut r, &lib, settings, &mut refusals) else {
        refusals.report(&mut r, "settings: schema");
        return r;
    };
    check_unknown_key(&mut r, &lib, settings, &mut refusals);
    refusals.report(&mut r, "settings: schema");
    let recipients = lib.describe.max_recipients.min(2) as usize;
    check_op(&mut r, &instance, Op::Send, send_input(recipients));
    if lib.supports(Op::Status) {
        check_op(&mut r, &instance, Op::Status, serde_json::json!({"refs": ["verify-1:4915100000001"]}));
    }
    if lib.supports(Op::Balance) {
        check_op(&mut r, &instance, Op::Balance, serde_json::json!({}));
    }
    check_threads(&mut r, Arc::new(instance), send_input(recipients));
    r
}

/// `loads`, and what `describe` and the table say about the plugin.
fn check_describe(r: &mut Report, lib: &PluginLibrary) {
    let d = &lib.describe;
    r.check("loads", true, format!("plugin `{}` {} (ABI {})", d.name, d.version, lib.abi_version()));
    let mut describe = Conformance::default();
    describe.document("the describe document", "describe", lib.describe_document());
    describe.report(r, "describe: schema");
    let known = ["unicode", "gsm7", "latin"].contains(&d.alphabet.as_str());
    let is = if known { "is" } else { "is not" };
    r.check("describe: alphabet", known, format!("{:?} {is} one of unicode, gsm7, latin", d.alphabet));
    let caps = lib.capabilities();
    for (op, bit) in
        [(Op::Status, abi::CAP_STATUS), (Op::Balance, abi::CAP_BALANCE), (Op::Callback, abi::CAP_CALLBACK)]
    {
        let (has_fn, has_bit) = (lib.supports(op), caps & bit != 0);
        let detail = match (has_bit, has_fn) {
            (true, true) => "bit and function pointer agree (supported)".to_owned(),
            (false, false) => "bit and function pointer agree (absent)".to_owned(),
            (true, false) => format!("the {} bit is set but its function pointer is NULL", op.as_str()),
            (false, true) => format!("the function pointer is set but the {} bit is not", op.as_str()),
        };
        r.check(format!("capabilities: {}", op.as_str()), has_fn == has_bit, detail);
    }
    if d.exchange_errors || d.response_json {
        let built = lib.abi_minor();
        r.check(
            "describe: ABI 1.1 flags",
            built >= 1,
            if built >= 1 {
                "exchange_errors/response_json are honoured (the table says ABI 1.1 or later)".to_owned()
            } else {
                format!(
                    "describe sets exchange_errors or response_json, but the table says ABI 1.{built}: the host ignores them; set abi_minor to NOTIFYD_ABI_MINOR of a 1.1 or later header"
                )
            },
        );
    }
    if caps & abi::CAP_STATUS != 0 {
        r.check(
            "describe: max_status_refs",
            d.max_status_refs > 0,
            format!("{} (at least 1 when status is supported)", d.max_status_refs),
        );
    }
}

/// `settings: instance`: creates the test instance from `--settings`, or from the first
/// placeholder settings that work. On failure, says what each attempt was refused with.
fn check_instance(
    r: &mut Report,
    lib: &Arc<PluginLibrary>,
    settings: Option<serde_json::Value>,
    refusals: &mut Conformance,
) -> Option<(PluginInstance, serde_json::Map<String, serde_json::Value>)> {
    let object = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let (given, candidates) = match settings {
        Some(s) => (true, vec![object(s)]),
        None => (
            false,
            vec![
                object(serde_json::json!({})),
                object(serde_json::json!({"username": "notifyd-verify", "password": "notifyd-verify"})),
                object(serde_json::json!({"token": "notifyd-verify"})),
            ],
        ),
    };
    let source = if given { "--settings" } else { "placeholder settings" };
    let mut refused = Vec::new();
    for settings in candidates {
        match lib.instantiate(&init(lib, settings.clone())) {
            Ok(instance) => {
                r.check("settings: instance", true, format!("created from {source} {}", keys(&settings)));
                return Some((instance, settings));
            }
            Err(e) => {
                check_refusal(lib, &settings, refusals);
                refused.push(format!("{} refused: {}", keys(&settings), refusal(&e)))
            }
        }
    }
    let hint =
        if given { "fix --settings" } else { "pass --settings '{...}' with the settings your plugin needs" };
    r.check(
        "settings: instance",
        false,
        format!("no instance could be created from {source}: {} ({hint})", refused.join("; ")),
    );
    None
}

/// `settings: unknown key`: `settings` (which created an instance) plus an unknown key must be
/// refused, naming the key.
fn check_unknown_key(
    r: &mut Report,
    lib: &Arc<PluginLibrary>,
    mut settings: serde_json::Map<String, serde_json::Value>,
    refusals: &mut Conformance,
) {
    let name = "settings: unknown key";
    settings.insert(UNKNOWN_KEY.into(), true.into());
    let with = keys(&settings);
    check_refusal(lib, &settings, refusals);
    match lib.instantiate(&init(lib, settings)) {
        Ok(_) => {
            r.check(name, false, format!("{with} was accepted; an unknown key must be refused, naming it"))
        }
        Err(e @ PluginError::Settings { .. }) if e.to_string().contains(UNKNOWN_KEY) => {
            r.check(name, true, format!("{with} refused, naming the key: {}", refusal(&e)))
        }
        Err(e) => r.check(
            name,
            false,
            format!("{with} refused, but the message does not name `{UNKNOWN_KEY}`: {}", refusal(&e)),
        ),
    };
}

/// Checks the error document `instance_new` answers when it refuses `settings` (the document as
/// the plugin wrote it; [`PluginLibrary::instantiate`] keeps only its code and message).
fn check_refusal(
    lib: &Arc<PluginLibrary>,
    settings: &serde_json::Map<String, serde_json::Value>,
    refusals: &mut Conformance,
) {
    let document = serde_json::to_vec(&init(lib, settings.clone())).expect("settings encode as JSON");
    let created = lib.instance_new(&document);
    if created.rc != abi::RC_OK {
        refusals.document(&format!("the refusal of {}", keys(settings)), "error_document", &created.answer);
    }
}

/// The definition of the schema an answer of `op` with `NOTIFYD_OK` conforms to.
fn answer_definition(op: Op) -> &'static str {
    match op {
        Op::Send => "send_answer",
        Op::Status => "status_answer",
        Op::Balance => "balance_answer",
        Op::Callback => "callback_answer",
    }
}

/// The documents a plugin answered in one stage, checked against the schema.
#[derive(Debug, Default)]
struct Conformance {
    /// How many documents were checked.
    seen: usize,
    /// Their definitions.
    definitions: BTreeSet<&'static str>,
    /// How many broke a rule.
    failed: usize,
    /// The first that did, in words.
    first: Option<String>,
}

impl Conformance {
    /// Checks the answer of `op` with return code `rc`: with `NOTIFYD_OK` an answer of the
    /// operation, otherwise an error document.
    fn answer(&mut self, what: &str, op: Op, rc: i32, body: &[u8]) {
        let definition = if rc == abi::RC_OK { answer_definition(op) } else { "error_document" };
        self.document(what, definition, body);
    }

    /// Checks `body` against `#/$defs/<definition>`. What is not JSON (an empty answer, say) is
    /// not checked here: the stage's own checks say what is wrong with it.
    fn document(&mut self, what: &str, definition: &'static str, body: &[u8]) {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else { return };
        self.seen += 1;
        self.definitions.insert(definition);
        if let Err(violations) = schema::schema().check(definition, &doc) {
            self.failed += 1;
            self.first.get_or_insert_with(|| {
                let more = match violations.len() {
                    1 => String::new(),
                    n => format!(" (and {} more in this document)", n - 1),
                };
                format!("{what}, checked against $defs/{definition}: {}{more}", violations[0])
            });
        }
    }

    /// Records the check `name`, when a document was checked.
    fn report(self, r: &mut Report, name: &str) {
        if self.seen == 0 {
            return;
        }
        let definitions: Vec<String> = self.definitions.iter().map(|d| format!("$defs/{d}")).collect();
        let (definitions, seen) = (definitions.join(", "), self.seen);
        let documents = if seen == 1 { "document conforms" } else { "documents conform" };
        match self.first {
            None => r.check(name, true, format!("{seen} {documents} to the schema ({definitions})")),
            Some(first) => {
                r.check(name, false, format!("{} of {seen} documents do not conform; {first}", self.failed))
            }
        };
    }
}

/// The keys of settings, never their values: `{username, password}`.
fn keys(settings: &serde_json::Map<String, serde_json::Value>) -> String {
    format!("{{{}}}", settings.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
}

/// Why `instance_new` refused, as [`answered`] says it.
fn refusal(e: &PluginError) -> String {
    match e {
        PluginError::Settings { message, rc: abi::RC_OK, .. } => {
            format!("{} with {message}", rc_name(abi::RC_OK))
        }
        PluginError::Settings { message, rc, code, .. } => match code {
            Some(code) => format!("{}: error `{code}`: {message:?}", rc_name(*rc)),
            None => format!("{}: {message}", rc_name(*rc)),
        },
        other => other.to_string(),
    }
}

/// A return code in words: `NOTIFYD_ERROR (1)`.
fn rc_name(rc: i32) -> String {
    match rc {
        abi::RC_OK => "NOTIFYD_OK (0)".into(),
        abi::RC_ERROR => "NOTIFYD_ERROR (1)".into(),
        abi::RC_PANIC => "NOTIFYD_PANIC (2)".into(),
        abi::RC_UNSUPPORTED => "NOTIFYD_UNSUPPORTED (3)".into(),
        other => format!("return code {other} (not one the ABI defines)"),
    }
}

/// What a plugin answered with a return code other than `NOTIFYD_OK`: the code, and the error
/// document's code and message (or why there is none).
fn answered(rc: i32, body: &[u8]) -> String {
    let document = match serde_json::from_slice::<ErrorDoc>(body) {
        Ok(doc) => format!(": error `{}`: {:?}", doc.error.code.as_str(), doc.error.message),
        Err(_) if body.is_empty() => " with no error document".into(),
        Err(e) => format!(" with a malformed error document ({e}): {}", excerpt(body)),
    };
    format!("{}{document}", rc_name(rc))
}

/// The start of a document, for a message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(120) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

fn send_input(recipients: usize) -> serde_json::Value {
    serde_json::to_value(SendInput {
        id: "verify-1".into(),
        to: (1..=recipients).map(|i| format!("491510000000{i}")).collect(),
        text: "notifyd plugin verify".into(),
        from: Some("notifyd".into()),
        from_given: None,
        encoding: "gsm7".into(),
        segments: 1,
        send_at: None,
    })
    .expect("encodes")
}

/// The operation document for `input`, with the answer to an earlier exchange.
fn doc(input: &serde_json::Value, exchange: Option<&Exchange>) -> Vec<u8> {
    let mut v = serde_json::json!({"v": WIRE_VERSION, "input": input});
    if let Some(ex) = exchange {
        v["exchange"] = serde_json::to_value(ex).expect("encodes");
    }
    serde_json::to_vec(&v).expect("encodes")
}

/// A valid answer of an operation.
enum Answer {
    /// An `http` step: the request and the state.
    Http(Box<HttpRequest>, String),
    /// A `done` step, summed up.
    Done(String),
    /// `NOTIFYD_ERROR` with a valid error document, in words ([`answered`]).
    Error(String),
}

/// Reads an operation's answer; `Err` says what is wrong with it.
fn answer_of(op: Op, rc: i32, body: &[u8]) -> Result<Answer, String> {
    match rc {
        abi::RC_OK => {
            let malformed =
                |e: serde_json::Error| format!("malformed answer document ({e}): {}", excerpt(body));
            let step = if op == Op::Send {
                match serde_json::from_slice::<OpOutput<SendResult>>(body).map_err(malformed)?.step {
                    Step::Done { done } => Step::done(send_summary(&done)?),
                    Step::Http { http, state, results } => Step::Http { http, state, results },
                }
            } else {
                serde_json::from_slice::<OpOutput<serde_json::Value>>(body)
                    .map_err(malformed)?
                    .step
                    .map_done(|_| "done".to_owned())
            };
            Ok(match step {
                Step::Done { done } => Answer::Done(done),
                Step::Http { http, state, .. } => Answer::Http(Box::new(http), state),
            })
        }
        abi::RC_ERROR if serde_json::from_slice::<ErrorDoc>(body).is_ok() => {
            Ok(Answer::Error(answered(rc, body)))
        }
        rc => Err(answered(rc, body)),
    }
}

/// A `send` result in words (`done: 2 sent`); `Err` for an error code the host does not know.
fn send_summary(done: &SendResult) -> Result<String, String> {
    let unknown = |code: &ErrorCode| {
        (!code.is_operation_code()).then(|| format!("done, with the unknown error code {:?}", code.as_str()))
    };
    match done {
        SendResult::Recipients { recipients } => {
            let failed: Vec<&notifyd_plugin::wire::ProviderError> =
                recipients.iter().filter_map(|r| r.error.as_ref()).collect();
            if let Some(bad) = failed.iter().find_map(|e| unknown(&e.code)) {
                return Err(bad);
            }
            let mut summary = format!("done: {} sent", recipients.len() - failed.len());
            if let Some(first) = failed.first() {
                summary.push_str(&format!(
                    ", {} failed (the first: error `{}`: {:?})",
                    failed.len(),
                    first.code.as_str(),
                    first.message
                ));
            }
            Ok(summary)
        }
        SendResult::Failed { error } => match unknown(&error.code) {
            Some(bad) => Err(bad),
            None => Ok(format!(
                "done: every recipient failed: error `{}`: {:?}",
                error.code.as_str(),
                error.message
            )),
        },
    }
}

/// Calls `op` and reads the answer, which `conformance` checks against the schema as the answer
/// to `what`.
fn call(
    instance: &PluginInstance,
    op: Op,
    document: &[u8],
    conformance: &mut Conformance,
    what: &str,
) -> Result<Answer, String> {
    let answer = instance.call(op, document).map_err(|e| e.message)?;
    conformance.answer(what, op, answer.rc, &answer.body);
    answer_of(op, answer.rc, &answer.body)
}

/// Checks one operation: `<op>: malformed input` is refused; `<op>: first step` is valid; when it
/// asks for HTTP, `<op>: request` is a valid request on the base URL and every hostile answer to
/// it is classified (`<op>: <answer>`). Last, `<op>: schema`: every answer it gave conforms to
/// the schema.
fn check_op(r: &mut Report, instance: &PluginInstance, op: Op, input: serde_json::Value) {
    let mut conformance = Conformance::default();
    check_steps(r, instance, op, input, &mut conformance);
    conformance.report(r, &format!("{}: schema", op.as_str()));
}

/// [`check_op`] but for the schema.
fn check_steps(
    r: &mut Report,
    instance: &PluginInstance,
    op: Op,
    input: serde_json::Value,
    conformance: &mut Conformance,
) {
    let op_name = op.as_str();
    let name = |what: &str| format!("{op_name}: {what}");
    let garbage = instance.call(op, b"{\"v\":1,\"input\":5").map_err(|e| e.message);
    if let Ok(a) = &garbage {
        conformance.answer("the answer to a truncated document", op, a.rc, &a.body);
    }
    match garbage {
        Ok(a) if a.rc == abi::RC_ERROR => {
            r.check(name("malformed input"), true, format!("refused with {}", answered(a.rc, &a.body)))
        }
        Ok(a) if a.rc == abi::RC_OK => r.check(
            name("malformed input"),
            false,
            format!(
                "a truncated document was answered NOTIFYD_OK ({}); it must be refused with NOTIFYD_ERROR",
                excerpt(&a.body)
            ),
        ),
        Ok(a) => r.check(
            name("malformed input"),
            false,
            format!("a truncated document was answered {}; expected NOTIFYD_ERROR", answered(a.rc, &a.body)),
        ),
        Err(e) => r.check(name("malformed input"), false, e),
    };

    let what = match input["to"].as_array().map(Vec::len) {
        Some(1) => " to 1 recipient (max_recipients is 1)".to_owned(),
        Some(n) => format!(" to {n} recipients"),
        None => String::new(),
    };
    let (http, state) = match call(instance, op, &doc(&input, None), conformance, "the first step") {
        Ok(Answer::Http(http, state)) => (http, state),
        Ok(Answer::Done(done)) => {
            let detail = format!("{op_name}{what} answered without HTTP ({done}); no network needed");
            r.check(name("first step"), true, detail);
            return;
        }
        // The status input's reference is made up, one the plugin never issued: refusing it is
        // fair. Any other input is valid, and the daemon would make the error a plugin_error.
        Ok(Answer::Error(error)) if op == Op::Status => {
            let detail = format!(
                "{op_name} of a made-up reference answered {error} (accepted for a reference the plugin never issued)"
            );
            r.check(name("first step"), true, detail);
            return;
        }
        Ok(Answer::Error(error)) => {
            r.check(name("first step"), false, format!("{op_name}{what} answered {error}"));
            return;
        }
        Err(e) => {
            r.check(name("first step"), false, format!("{op_name}{what} answered {e}"));
            return;
        }
    };
    r.check(name("first step"), true, format!("{op_name}{what} asks for an HTTP request"));
    let url_ok = reqwest::Url::parse(&http.url).is_ok_and(|u| u.as_str().starts_with("http://127.0.0.1:9"));
    let method_ok = reqwest::Method::from_bytes(http.method.as_bytes()).is_ok();
    r.check(
        name("request"),
        url_ok && method_ok,
        match (method_ok, url_ok) {
            (true, true) => format!("a valid {} request on the instance's base_url", http.method),
            (false, _) => format!("{:?} is not a valid HTTP method", http.method),
            (true, false) => {
                format!("{:?} is not a URL under the instance's base_url http://127.0.0.1:9", http.url)
            }
        },
    );
    let library = instance.library();
    let (wants_json, wants_errors) = if library.abi_minor() >= 1 {
        (library.describe.response_json, library.describe.exchange_errors)
    } else {
        (false, false)
    };
    // As the host hands them over: with the body parsed for a plugin that asked for it.
    let response = |status: u16, body: String| HttpResponse {
        status,
        json: serde_json::from_str(&body).ok().filter(|_| wants_json),
        body,
        ..HttpResponse::default()
    };
    let hostile = [
        ("an empty 200", response(200, String::new())),
        ("an HTML 502 page", response(502, "<html><body>Bad Gateway</body></html>".into())),
        ("an HTML 200 page", response(200, "<!DOCTYPE html><html>".into())),
        ("a truncated body", response(200, "{\"id\":".into())),
        ("a huge body", response(200, "x".repeat(1 << 20))),
        ("a 500", response(500, "Internal Server Error".into())),
        ("a JSON 200 of another shape", response(200, r#"{"unexpected":[1,2,3]}"#.into())),
    ];
    for (what, response) in hostile {
        let ex = Exchange::answered(state.clone(), response);
        let (ok, detail) = match call(
            instance,
            op,
            &doc(&input, Some(&ex)),
            conformance,
            &format!("the answer to {what}"),
        ) {
            Ok(Answer::Done(done)) => (true, format!("classified: {done}")),
            Ok(Answer::Http(http, _)) => {
                (true, format!("classified: asks for another {} request", http.method))
            }
            Ok(Answer::Error(error)) => (
                true,
                format!(
                    "answered {error} (accepted, but the daemon makes it plugin_error: prefer a done result with an error)"
                ),
            ),
            Err(e) => (false, format!("answered {e}")),
        };
        r.check(name(what), ok, detail);
    }
    if wants_errors {
        check_transport_error(r, instance, op, &input, (&http, &state), conformance);
    }
}

/// `<op>: a transport error`, for a plugin that declares `exchange_errors`: handed a timeout of
/// its first exchange (`first`), it answers a result or another request, never an error. A `send`
/// result reports nobody sent (nothing was), names only recipients of the input, and carries the
/// handed error unchanged (on the recipient whose exchange failed, or on the whole send), so the
/// host knows who is in doubt; a next request is not the same one again (whether to resend what
/// may have reached the provider is the host's decision, `retry.on_ambiguous`).
fn check_transport_error(
    r: &mut Report,
    instance: &PluginInstance,
    op: Op,
    input: &serde_json::Value,
    (first, state): (&HttpRequest, &str),
    conformance: &mut Conformance,
) {
    let name = format!("{}: a transport error", op.as_str());
    let timeout = notifyd_plugin::wire::ProviderError::retryable(
        ErrorCode::Timeout,
        "the provider did not answer within 10s",
    );
    let ex = Exchange::failed(state, timeout.clone());
    let answer = match instance.call(op, &doc(input, Some(&ex))) {
        Ok(a) => a,
        Err(e) => {
            r.check(name, false, e.message);
            return;
        }
    };
    conformance.answer("the answer to a transport error", op, answer.rc, &answer.body);
    let copied =
        |e: &notifyd_plugin::wire::ProviderError| e.code == timeout.code && e.message == timeout.message;
    let given: Vec<&str> = input["to"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    let verdict = match answer_of(op, answer.rc, &answer.body) {
        Err(e) => Err(format!("answered {e}")),
        Ok(Answer::Error(error)) => Err(format!(
            "answered {error}; a plugin that declares exchange_errors answers a transport error with a result (copy `exchange.error` into the recipient whose exchange failed) or its next request"
        )),
        Ok(Answer::Http(http, _)) if *http == *first => Err(
            "asks for the request that timed out again: whether to resend what may have reached the provider is the host's decision (retry.on_ambiguous); answer a result that carries `exchange.error` instead"
                .to_owned(),
        ),
        Ok(Answer::Http(http, _)) => Ok(format!("goes on with another {} request", http.method)),
        Ok(Answer::Done(done)) if op != Op::Send => Ok(format!("classified: {done}")),
        Ok(Answer::Done(done)) => match serde_json::from_slice::<OpOutput<SendResult>>(&answer.body).map(|o| o.step) {
            Ok(Step::Done { done: SendResult::Recipients { recipients } }) => {
                let strangers: Vec<&str> =
                    recipients.iter().map(|r| r.to.as_str()).filter(|to| !given.contains(to)).collect();
                let sent: Vec<&str> = recipients
                    .iter()
                    .filter(|r| r.error.is_none() && r.provider_message_id.is_some())
                    .map(|r| r.to.as_str())
                    .collect();
                if !strangers.is_empty() {
                    Err(format!("the result names recipients that are not in the input: {strangers:?}"))
                } else if !sent.is_empty() {
                    Err(format!("the result reports {sent:?} sent, though the only exchange timed out"))
                } else if !recipients.iter().any(|r| r.error.as_ref().is_some_and(copied)) {
                    Err("no recipient carries `exchange.error` unchanged: copy it (code and message) into the recipient whose exchange failed, so the host knows it may have been sent, and leave out the recipients not tried".to_owned())
                } else {
                    Ok(format!("classified: {done}"))
                }
            }
            Ok(Step::Done { done: SendResult::Failed { error } }) if !copied(&error) => Err(format!(
                "the whole send failed with `{}` of the plugin's own: copy `exchange.error` unchanged, so the host knows the recipients may have been sent",
                error.code
            )),
            _ => Ok(format!("classified: {done}")),
        },
    };
    let (ok, detail) = match verdict {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    r.check(name, ok, detail);
}

/// `threads`: 4 threads × 200 first-step sends on one instance all answer `NOTIFYD_OK`.
fn check_threads(r: &mut Report, instance: Arc<PluginInstance>, input: serde_json::Value) {
    const THREADS: usize = 4;
    const SENDS: usize = 200;
    let document = doc(&input, None);
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (instance, document) = (instance.clone(), document.clone());
            std::thread::spawn(move || {
                // (failed sends, the first failure's answer)
                let mut failed = (0, None);
                for _ in 0..SENDS {
                    let answer = instance.call(Op::Send, &document).map_err(|e| e.message);
                    match answer {
                        Ok(a) if a.rc == abi::RC_OK => {}
                        other => {
                            failed.0 += 1;
                            failed.1.get_or_insert_with(|| match other {
                                Ok(a) => answered(a.rc, &a.body),
                                Err(e) => e,
                            });
                        }
                    }
                }
                failed
            })
        })
        .collect();
    let (mut failed, mut first) = (0, None);
    for handle in handles {
        match handle.join() {
            Ok((n, answer)) => {
                failed += n;
                first = first.or(answer);
            }
            Err(_) => {
                failed += SENDS;
                first = first.or(Some("a verify thread panicked".into()));
            }
        }
    }
    let all = THREADS * SENDS;
    match first {
        None => r.check("threads", true, format!("{THREADS} threads × {SENDS} sends on one instance all answered")),
        Some(answer) => r.check(
            "threads",
            false,
            format!("{failed} of {all} sends from {THREADS} threads on one instance failed; the first answered {answer}"),
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_doc(code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"v": 1, "error": {"code": code, "message": message}})).unwrap()
    }

    #[test]
    fn an_answer_names_the_return_code_and_the_error_documents_code_and_message() {
        assert_eq!(
            answered(abi::RC_ERROR, &error_doc("auth", "bad key")),
            r#"NOTIFYD_ERROR (1): error `auth`: "bad key""#
        );
        assert_eq!(
            answered(abi::RC_PANIC, &error_doc("plugin_error", "boom")),
            r#"NOTIFYD_PANIC (2): error `plugin_error`: "boom""#
        );
        assert_eq!(answered(abi::RC_UNSUPPORTED, b""), "NOTIFYD_UNSUPPORTED (3) with no error document");
        assert_eq!(answered(7, b""), "return code 7 (not one the ABI defines) with no error document");
        let malformed = answered(abi::RC_ERROR, b"<html>");
        assert!(malformed.starts_with("NOTIFYD_ERROR (1) with a malformed error document ("), "{malformed}");
        assert!(malformed.ends_with(r#": "<html>""#), "{malformed}");
    }

    #[test]
    fn a_send_error_is_an_error_answer_and_other_codes_are_failures() {
        let body = error_doc("auth", "bad key");
        assert!(
            matches!(answer_of(Op::Send, abi::RC_ERROR, &body), Ok(Answer::Error(e)) if e.contains("bad key"))
        );
        assert!(
            matches!(answer_of(Op::Send, abi::RC_PANIC, &body), Err(e) if e.contains("NOTIFYD_PANIC (2)"))
        );
        assert!(
            matches!(answer_of(Op::Send, abi::RC_ERROR, b"{}"), Err(e) if e.contains("malformed error document"))
        );
        let failed = br#"{"v":1,"done":{"error":{"code":"auth","message":"bad key"}}}"#;
        assert!(
            matches!(answer_of(Op::Send, abi::RC_OK, failed), Ok(Answer::Done(d)) if d == r#"done: every recipient failed: error `auth`: "bad key""#)
        );
        let unknown = br#"{"v":1,"done":{"error":{"code":"nope","message":"m"}}}"#;
        assert!(
            matches!(answer_of(Op::Send, abi::RC_OK, unknown), Err(e) if e.contains("unknown error code \"nope\""))
        );
    }

    #[test]
    fn a_document_that_breaks_the_schema_fails_its_check_naming_the_field() {
        let mut r = Report::default();
        let mut c = Conformance::default();
        c.answer(
            "the first step",
            Op::Send,
            abi::RC_OK,
            br#"{"v":1,"done":{"recipients":[{"to":"4915","provider_message_id":"7"}]}}"#,
        );
        c.answer(
            "the answer to a 500",
            Op::Send,
            abi::RC_ERROR,
            br#"{"v":1,"error":{"code":"unavailable"}}"#,
        );
        c.answer("an empty answer", Op::Send, abi::RC_OK, b"");
        c.report(&mut r, "send: schema");
        assert_eq!(
            r.render(),
            [
                "FAIL send: schema: 1 of 2 documents do not conform; the answer to a 500, checked against $defs/error_document: /error/message: required, but missing (schema #/$defs/provider_error/required)"
            ]
        );
        let mut c = Conformance::default();
        c.answer("the first step", Op::Status, abi::RC_OK, br#"{"v":1,"done":{"statuses":[]}}"#);
        c.report(&mut r, "status: schema");
        assert_eq!(
            r.render()[1],
            "ok   status: schema: 1 document conforms to the schema ($defs/status_answer)"
        );
        // Nothing checked, no check.
        Conformance::default().report(&mut r, "balance: schema");
        assert_eq!(r.checks.len(), 2);
    }

    #[test]
    fn settings_are_shown_by_their_keys_only() {
        let settings = serde_json::json!({"username": "u", "password": "s3cret"});
        let shown = keys(settings.as_object().unwrap());
        assert!(shown.contains("username") && shown.contains("password"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(keys(&serde_json::Map::new()), "{}");
    }

    #[test]
    fn a_report_passes_only_without_failures_and_renders_a_line_per_check() {
        let mut r = Report::default();
        r.check("loads", true, "plugin `x`");
        assert!(r.passed());
        r.check("threads", false, "1 of 800 failed");
        assert!(!r.passed());
        assert_eq!(r.render(), ["ok   loads: plugin `x`", "FAIL threads: 1 of 800 failed"]);
        let text = r.to_json(Path::new("libnotifyd_x.so"));
        assert!(text.find("\"name\"") < text.find("\"detail\""), "a check's fields in order: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["file"], "libnotifyd_x.so");
        assert_eq!(json["passed"], false);
        assert_eq!(json["verdict"], "does not conform");
        assert_eq!(json["describe"], serde_json::Value::Null);
        assert_eq!(
            json["checks"][1],
            serde_json::json!({"name": "threads", "ok": false, "detail": "1 of 800 failed"})
        );
    }
}
