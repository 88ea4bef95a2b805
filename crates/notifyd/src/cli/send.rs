//! `notifyd send`: publishes one request the way a microservice would, and with `--wait` follows
//! its events until every recipient reaches a final status, with either intake mode. It is a NATS
//! client and nothing more:
//! it reads only the `[nats]` table (of the config file when there is one, and the
//! `NOTIFYD_NATS__*` variables), or `--nats-url`.
//!
//! Exit codes ([`SENT`], [`PARTIAL`], [`NONE_SENT`], [`TIMED_OUT`], [`FAILED`]) are in the README.

use super::{EX_CONFIG, print_error};
use futures::StreamExt;
use notifyd::config::{Config, NatsConfig};
use notifyd::events::Status;
use notifyd::metrics::{Metrics, Readiness};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Without `--wait`: the request was stored (JetStream intake) or accepted (core intake). With
/// `--wait`: every recipient reached `sent` (its final status may be `delivered`, `undelivered`
/// or `unknown`).
pub const SENT: u8 = 0;
/// NATS could not be reached, or the request was not stored or answered.
pub const FAILED: u8 = 1;
/// `--wait`: some recipients reached `sent`, others did not.
pub const PARTIAL: u8 = 2;
/// No recipient reached `sent`: the request, or every recipient, was rejected or failed.
pub const NONE_SENT: u8 = 3;
/// `--wait`: the timeout passed before every recipient reached a final status.
pub const TIMED_OUT: u8 = 4;

/// What to send.
pub struct Send {
    pub to: Vec<String>,
    pub text: String,
    pub from: Option<String>,
    /// The request's `priority` (its traffic class); none: the route's.
    pub priority: Option<notifyd::class::Class>,
    pub wait: bool,
    /// How long `--wait` waits for final statuses.
    pub timeout: Duration,
}

/// Where `send` finds NATS: `--nats-url` over the config's `[nats] url`; `config` is the file
/// given with `--config`, else the default file when it exists, else none (the defaults).
pub fn run(config: Option<&Path>, nats_url: Option<String>, s: Send) -> ExitCode {
    let default = notifyd::config::default_path();
    let path = config.or_else(|| default.is_file().then_some(default.as_path()));
    let mut nats = match Config::load_nats(path) {
        Ok(n) => n,
        Err(e) => {
            let file = path.map_or_else(|| "the environment".to_owned(), |p| p.display().to_string());
            print_error(&format!("send: the NATS settings ({file}) have problems"), "problems", &e.problems);
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(url) = nats_url {
        nats.url = url;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match runtime.block_on(send(&nats, s)) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            print_error(&format!("send: {message}"), "problems", &[]);
            ExitCode::from(FAILED)
        }
    }
}

/// Publishes the request and prints its events (one line each) while waiting; returns the exit
/// code, or why the request could not be published.
async fn send(nats: &NatsConfig, s: Send) -> Result<u8, String> {
    let client = notifyd::nats::connect(nats, &Metrics::new(), &Arc::new(Readiness::default()))
        .await
        .map_err(|e| e.to_string())?;
    let id = format!("cli-{}", nuid::next());
    let prefix = &nats.subject_prefix;
    let mut events = client
        .subscribe(format!("{prefix}.sms.status.>"))
        .await
        .map_err(|e| format!("cannot subscribe to status events: {e}"))?;
    let mut request = serde_json::json!({"id": id, "to": s.to, "text": s.text});
    if let Some(from) = &s.from {
        request["from"] = from.clone().into();
    }
    if let Some(priority) = s.priority {
        request["priority"] = priority.as_str().into();
    }
    let payload = bytes::Bytes::from(serde_json::to_vec(&request).expect("encodes"));
    let subject = notifyd::nats::send_subject(prefix);
    if let Some(code) = publish(&client, &subject, &id, payload).await? {
        return Ok(code);
    }
    outln!("published request {id}");
    if !s.wait {
        return Ok(SENT);
    }
    // One final event per distinct valid number and per invalid entry; invalid entries that are
    // the same text end under the same `to`, so they count once here.
    let (mut valid, mut invalid) = (HashSet::new(), HashSet::new());
    for n in &s.to {
        match notifyd_sms::PhoneNumber::parse(n) {
            Ok(number) => valid.insert(number.as_str().to_owned()),
            Err(_) => invalid.insert(n.as_str()),
        };
    }
    let expected = valid.len() + invalid.len();
    let mut finals: HashMap<String, Status> = HashMap::new();
    let mut sent: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + s.timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err("the NATS connection closed".into()),
            Err(_) => {
                let message = format!(
                    "send: {} of {expected} recipients reached a final status within {:?}; the rest may still be on their way",
                    finals.len(),
                    s.timeout
                );
                print_error(&message, "problems", &[]);
                return Ok(TIMED_OUT);
            }
        };
        let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else { continue };
        if ev["id"] != id.as_str() {
            continue;
        }
        outln!("{}", event_line(&ev));
        let status = ev["status"].as_str().unwrap_or_default();
        let Some(to) = ev["to"].as_str() else {
            // A request-level rejection ends the whole request.
            outln!("done: the request was rejected");
            return Ok(NONE_SENT);
        };
        if status == "sent" {
            sent.insert(to.to_owned());
        }
        if let Some(st) = Status::parse(status).filter(|s| s.is_final()) {
            finals.insert(to.to_owned(), st);
        }
        if finals.len() >= expected {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for st in finals.values() {
                *counts.entry(st.as_str()).or_default() += 1;
            }
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            outln!("done: {}", summary.join(", "));
            let reached = finals.keys().filter(|to| sent.contains(*to)).count();
            return Ok(match reached {
                0 => NONE_SENT,
                n if n == finals.len() => SENT,
                _ => PARTIAL,
            });
        }
    }
}

/// Publishes the request as one NATS request with `Nats-Msg-Id` = its id, and reads the one
/// answer: JetStream's acknowledgement when the intake stream takes the subject (JetStream
/// intake), or the daemon's own answer when a daemon in core intake mode does. `Some(code)`: the
/// answer ends the command (core intake rejected the request).
async fn publish(
    client: &async_nats::Client,
    subject: &str,
    id: &str,
    payload: bytes::Bytes,
) -> Result<Option<u8>, String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    let reply = match client.request_with_headers(subject.to_owned(), headers, payload).await {
        Ok(reply) => reply,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(format!(
                "nothing takes requests on {subject}: no intake stream, and no daemon in core intake mode \
                 (is notifyd running, with the same [nats] subject_prefix?)"
            ));
        }
        Err(e) => {
            return Err(format!(
                "the request {id} was not acknowledged ({e}); it may still have been stored and be sent: \
                 watch `<prefix>.sms.status.>` for it before sending the text again"
            ));
        }
    };
    Ok(read_answer(&reply.payload)?.then_some(NONE_SENT))
}

/// What the answer to a published request says: JetStream stored it (`{"stream":…,"seq":…}`), a
/// core intake accepted it (`{"status":"accepted"}`), or rejected it (`true`, after printing the
/// rejection); a JetStream error or an answer of neither kind is an error.
fn read_answer(payload: &[u8]) -> Result<bool, String> {
    let answer: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    if let Some(error) = answer.get("error").filter(|_| answer.get("status").is_none()) {
        let text = error["description"].as_str().or(error["message"].as_str()).unwrap_or("no description");
        return Err(format!(
            "the request was not stored by JetStream: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    if answer.get("stream").is_some() {
        return Ok(false);
    }
    match answer["status"].as_str() {
        Some("accepted") => Ok(false),
        Some("rejected") => {
            outln!(
                "rejected     -  error={}: {}",
                answer["error"]["code"].as_str().unwrap_or(""),
                answer["error"]["message"].as_str().unwrap_or("")
            );
            Ok(true)
        }
        _ => Err("the answer to the request was neither JetStream's nor notifyd's".to_owned()),
    }
}

/// One event as a line: status, number, provider, provider message id, error.
fn event_line(ev: &serde_json::Value) -> String {
    let status = ev["status"].as_str().unwrap_or_default();
    let to = ev["to"].as_str().unwrap_or("-");
    let mut line = format!("{status:<12} {to}");
    if let Some(p) = ev["provider"].as_str() {
        line.push_str(&format!("  provider={p}"));
    }
    if let Some(m) = ev["provider_message_id"].as_str() {
        line.push_str(&format!("  id={m}"));
    }
    if let Some(e) = ev.get("error") {
        line.push_str(&format!(
            "  error={}: {}",
            e["code"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ));
    }
    line
}
