//! `notifyd send`: publishes one request the way a microservice would, and with `--wait` follows
//! its events until every recipient reaches a final status.

use super::{load, report};
use futures::StreamExt;
use notifyd::Error;
use notifyd::config::Config;
use notifyd::events::Status;
use notifyd::metrics::{Metrics, Readiness};
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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

/// Loads the config at `path` and sends `s` on a single-threaded runtime.
pub fn run(path: &Path, s: Send) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match runtime.block_on(send(&config, s)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Publishes the request and prints its events (one line each) while waiting.
pub async fn send(config: &Config, s: Send) -> Result<(), Error> {
    let client =
        notifyd::nats::connect(&config.nats, &Metrics::new(), &Arc::new(Readiness::default())).await?;
    let id = format!("cli-{}", nuid::next());
    let prefix = &config.nats.subject_prefix;
    let mut events = client
        .subscribe(format!("{prefix}.sms.status.>"))
        .await
        .map_err(|e| Error::Nats(format!("cannot subscribe to status events: {e}")))?;
    let mut request = serde_json::json!({"id": id, "to": s.to, "text": s.text});
    if let Some(from) = &s.from {
        request["from"] = from.clone().into();
    }
    if let Some(priority) = s.priority {
        request["priority"] = priority.as_str().into();
    }
    let payload = serde_json::to_vec(&request).expect("encodes");
    let js = async_nats::jetstream::new(client.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    js.publish_with_headers(config.send_subject(), headers, payload.into())
        .await
        .map_err(|e| Error::Nats(format!("cannot publish the request: {e}")))?
        .await
        .map_err(|e| {
            Error::Nats(format!("the request was not stored by JetStream (is notifyd's stream there?): {e}"))
        })?;
    println!("published request {id}");
    if !s.wait {
        return Ok(());
    }
    let mut finals: HashMap<String, Status> = HashMap::new();
    let deadline = tokio::time::Instant::now() + s.timeout;
    // One final event per distinct valid number and per invalid entry, as the daemon reports them.
    let mut distinct = std::collections::HashSet::new();
    let expected =
        s.to.iter()
            .filter(|n| notifyd_sms::PhoneNumber::parse(n).map_or(true, |n| distinct.insert(n)))
            .count();
    loop {
        let msg = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Error::Nats("the NATS connection closed".into())),
            Err(_) => {
                return Err(Error::Other(format!(
                    "{} of {expected} recipients reached a final status within {:?}; the rest may still be on their way",
                    finals.len(),
                    s.timeout
                )));
            }
        };
        let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else { continue };
        if ev["id"] != id.as_str() {
            continue;
        }
        let status = ev["status"].as_str().unwrap_or_default();
        let to = ev["to"].as_str().unwrap_or("-");
        let mut line = format!("{:<12} {to}", status);
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
        println!("{line}");
        if ev.get("to").is_none() {
            // A request-level rejection ends the whole request.
            return Err(Error::Other("the request was rejected".into()));
        }
        if let Some(st) = Status::parse(status).filter(|s| s.is_final()) {
            finals.insert(to.to_owned(), st);
        }
        if finals.len() >= expected {
            let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
            for st in finals.values() {
                *counts.entry(st.as_str()).or_default() += 1;
            }
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            println!("done: {}", summary.join(", "));
            return Ok(());
        }
    }
}
