//! `notifyd plugin verify FILE`: conformance checks a plugin author can run against the daemon
//! they deploy. Each check prints one line; any failure makes the command fail.
//!
//! Checks: the library loads and speaks ABI 1.x; `describe` is well formed and agrees with the
//! capability bits; unknown settings are refused with a readable error; with an instance (created
//! from `--settings`, or from empty or placeholder credentials), a malformed input is refused, a
//! send to two recipients yields a valid step, and hostile HTTP answers (empty, HTML, truncated,
//! huge) are classified, never crash; the instance serves several threads at once.

use crate::plugin::{Op, PluginInstance, PluginLibrary};
use notifyd_plugin::abi;
use notifyd_plugin::wire::{
    ErrorCode, Exchange, HttpRequest, HttpResponse, InstanceInit, OpOutput, SendInput, SendResult, Step,
    WIRE_VERSION,
};
use std::path::Path;
use std::sync::Arc;

/// The report of a verification: one line per check.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<(bool, String)>,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        self.lines.push((ok, what.into()));
        ok
    }

    pub fn passed(&self) -> bool {
        self.lines.iter().all(|(ok, _)| *ok)
    }

    pub fn render(&self) -> String {
        self.lines.iter().map(|(ok, l)| format!("{} {l}\n", if *ok { "ok  " } else { "FAIL" })).collect()
    }
}

fn init(settings: serde_json::Value) -> InstanceInit {
    InstanceInit {
        v: WIRE_VERSION,
        name: "verify".into(),
        base_url: Some("http://127.0.0.1:9".into()),
        settings: settings.as_object().cloned().unwrap_or_default(),
    }
}

/// Runs every check on the plugin at `path`.
pub fn verify(path: &Path, settings: Option<serde_json::Value>) -> Report {
    let mut r = Report::default();
    let lib = match PluginLibrary::load(path) {
        Ok(lib) => lib,
        Err(e) => {
            r.check(false, format!("load: {e}"));
            return r;
        }
    };
    let d = &lib.describe;
    r.check(true, format!("loads: plugin `{}` {} (ABI {})", d.name, d.version, lib.abi_version()));
    r.check(
        ["unicode", "gsm7", "latin"].contains(&d.alphabet.as_str()),
        format!("describe: alphabet {:?} is one of unicode, gsm7, latin", d.alphabet),
    );
    let caps = lib.capabilities();
    for (op, bit) in
        [(Op::Status, abi::CAP_STATUS), (Op::Balance, abi::CAP_BALANCE), (Op::Callback, abi::CAP_CALLBACK)]
    {
        let has_fn = lib.supports(op);
        r.check(
            has_fn == (caps & bit != 0),
            format!(
                "capabilities: {} bit and function pointer agree ({})",
                op.as_str(),
                if has_fn { "supported" } else { "absent" }
            ),
        );
    }
    if caps & abi::CAP_STATUS != 0 {
        r.check(d.max_status_refs > 0, "describe: max_status_refs is at least 1 when status is supported");
    }

    let unknown = lib.instantiate(&init(serde_json::json!({"notifyd_verify_unknown_key": true})));
    r.check(
        matches!(&unknown, Err(e) if e.to_string().contains("notifyd_verify_unknown_key")),
        "settings: an unknown key is refused, naming the key",
    );

    let candidates = match settings {
        Some(s) => vec![s],
        None => vec![
            serde_json::json!({}),
            serde_json::json!({"username": "notifyd-verify", "password": "notifyd-verify"}),
            serde_json::json!({"token": "notifyd-verify"}),
        ],
    };
    let instance = candidates.into_iter().find_map(|s| lib.instantiate(&init(s)).ok());
    let Some(instance) = instance else {
        r.check(
            false,
            "settings: no instance could be created (pass --settings '{...}' with valid settings)",
        );
        return r;
    };
    r.check(true, "settings: an instance was created");
    check_op(&mut r, &instance, Op::Send, send_input());
    if instance.library().supports(Op::Status) {
        check_op(&mut r, &instance, Op::Status, serde_json::json!({"refs": ["verify-1:4915100000001"]}));
    }
    if instance.library().supports(Op::Balance) {
        check_op(&mut r, &instance, Op::Balance, serde_json::json!({}));
    }
    check_threads(&mut r, Arc::new(instance));
    r
}

fn send_input() -> serde_json::Value {
    serde_json::to_value(SendInput {
        id: "verify-1".into(),
        to: vec!["4915100000001".into(), "4915100000002".into()],
        text: "notifyd plugin verify".into(),
        from: Some("notifyd".into()),
        encoding: "gsm7".into(),
        segments: 1,
        send_at: None,
    })
    .expect("encodes")
}

fn doc(exchange: Option<&Exchange>) -> Vec<u8> {
    let mut v = serde_json::json!({"v": WIRE_VERSION, "input": send_input()});
    if let Some(ex) = exchange {
        v["exchange"] = serde_json::to_value(ex).expect("encodes");
    }
    serde_json::to_vec(&v).expect("encodes")
}

/// Whether a send answer is a valid step; `Err` says what is wrong.
fn parse_send(rc: i32, body: &[u8]) -> Result<Step<SendResult>, String> {
    match rc {
        abi::RC_OK => {
            let out: OpOutput<SendResult> =
                serde_json::from_slice(body).map_err(|e| format!("malformed answer document: {e}"))?;
            if let Step::Done { done } = &out.step {
                let codes: Vec<&ErrorCode> = match done {
                    SendResult::Recipients { recipients } => {
                        recipients.iter().filter_map(|r| r.error.as_ref().map(|e| &e.code)).collect()
                    }
                    SendResult::Failed { error } => vec![&error.code],
                };
                if let Some(bad) = codes.iter().find(|c| !c.is_operation_code()) {
                    return Err(format!("unknown error code {:?}", bad.as_str()));
                }
            }
            Ok(out.step)
        }
        abi::RC_ERROR => serde_json::from_slice::<notifyd_plugin::wire::ErrorDoc>(body)
            .map(|d| Step::done(SendResult::Failed { error: d.error }))
            .map_err(|e| format!("malformed error document: {e}")),
        rc => Err(format!("return code {rc}")),
    }
}

/// An operation's answer reduced to what the checks need: `None` when it is a result (or an
/// error document), the HTTP request and state when it asks for an exchange.
fn step_of(op: Op, rc: i32, body: &[u8]) -> Result<Option<(HttpRequest, String)>, String> {
    let step = match op {
        Op::Send => parse_send(rc, body)?.map_done(|_| ()),
        _ => match rc {
            abi::RC_OK => serde_json::from_slice::<OpOutput<serde_json::Value>>(body)
                .map_err(|e| format!("malformed answer document: {e}"))?
                .step
                .map_done(|_| ()),
            abi::RC_ERROR => {
                serde_json::from_slice::<notifyd_plugin::wire::ErrorDoc>(body)
                    .map_err(|e| format!("malformed error document: {e}"))?;
                Step::done(())
            }
            rc => return Err(format!("return code {rc}")),
        },
    };
    Ok(match step {
        Step::Done { .. } => None,
        Step::Http { http, state } => Some((http, state)),
    })
}

/// Checks one operation: a malformed input is refused; the first step is valid; every hostile
/// answer to its HTTP exchange is classified.
fn check_op(r: &mut Report, instance: &PluginInstance, op: Op, input: serde_json::Value) {
    let name = op.as_str();
    let garbage = instance.call(op, b"{\"v\":1,\"input\":5").map(|a| a.rc);
    r.check(
        garbage == Ok(abi::RC_ERROR),
        format!("{name}: a malformed input document is refused with an error"),
    );

    let doc = |exchange: Option<&Exchange>| {
        let mut v = serde_json::json!({"v": WIRE_VERSION, "input": input.clone()});
        if let Some(ex) = exchange {
            v["exchange"] = serde_json::to_value(ex).expect("encodes");
        }
        serde_json::to_vec(&v).expect("encodes")
    };
    let first = instance.call(op, &doc(None)).map_err(|e| e.message).and_then(|a| step_of(op, a.rc, &a.body));
    let (http, state) = match first {
        Ok(None) => {
            r.check(true, format!("{name}: answered without HTTP (no network needed)"));
            return;
        }
        Ok(Some(step)) => step,
        Err(e) => {
            r.check(false, format!("{name}: first step: {e}"));
            return;
        }
    };
    let url_ok = reqwest::Url::parse(&http.url).is_ok_and(|u| u.as_str().starts_with("http://127.0.0.1:9"));
    r.check(
        url_ok && reqwest::Method::from_bytes(http.method.as_bytes()).is_ok(),
        format!("{name}: asks for a valid {} request on the instance's base_url", http.method),
    );
    let response = |status: u16, body: String| HttpResponse { status, headers: Default::default(), body };
    let hostile = [
        ("an empty 200", response(200, String::new())),
        ("an HTML 502 page", response(502, "<html><body>Bad Gateway</body></html>".into())),
        ("an HTML 200 page", response(200, "<!DOCTYPE html><html>".into())),
        ("a truncated body", response(200, "{\"id\":".into())),
        ("a huge body", response(200, "x".repeat(1 << 20))),
        ("a 500", response(500, "Internal Server Error".into())),
    ];
    for (what, response) in hostile {
        let ex = Exchange { state: state.clone(), response };
        let verdict = instance
            .call(op, &doc(Some(&ex)))
            .map_err(|e| e.message)
            .and_then(|a| step_of(op, a.rc, &a.body));
        r.check(
            verdict.is_ok(),
            format!("{name}: {what} is classified ({})", verdict.err().unwrap_or_else(|| "ok".into())),
        );
    }
}

fn check_threads(r: &mut Report, instance: Arc<PluginInstance>) {
    let input = doc(None);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (instance, input) = (instance.clone(), input.clone());
            std::thread::spawn(move || {
                (0..200).all(|_| instance.call(Op::Send, &input).is_ok_and(|a| a.rc == abi::RC_OK))
            })
        })
        .collect();
    let ok = handles.into_iter().all(|h| h.join().unwrap_or(false));
    r.check(ok, "threads: 4 threads × 200 sends on one instance all answered");
}
