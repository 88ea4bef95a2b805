//! Reading SMSC's answers into results.
//!
//! SMSC answers HTTP 200 with a JSON document (`fmt=3`): success, or `{"error": "...",
//! "error_code": N}` for the whole request. Answers are read leniently: numbers may come as JSON
//! numbers or strings, the plain-text form of `fmt=0` (`ERROR = N (...)`, `OK - n SMS, ID - id`) is
//! understood too, and an error document wins over the HTTP status. Anything else (HTML, an empty
//! or truncated body, an unknown code) becomes a `plugin_error` (not resent: SMSC may have acted)
//! or, for HTTP 5xx, `unavailable` (retryable), with a short snippet of the body from which the
//! credentials are cut.

use crate::mapping::{self, Op};
use crate::request::TrackingRef;
use notifyd_plugin::sdk::{http_status_error, redact_secrets, snippet};
use notifyd_plugin::wire::{
    BalanceResult, HttpResponse, ProviderError, RecipientResult, SendResult, StatusResult, StatusUpdate,
};
use notifyd_plugin::wire::{ErrorCode, Status};
use serde_json::{Map, Value};

/// A short single-line excerpt of `body` for an error message, with the account's credentials cut
/// out (an HTML error page of a proxy may quote the request URL), or "an empty body".
fn quote(body: &str, secrets: &[&str]) -> String {
    if body.trim().is_empty() { "an empty body".to_owned() } else { snippet(&redact_secrets(body, secrets)) }
}

/// An answer that is not what SMSC documents.
fn unexpected(response: &HttpResponse, secrets: &[&str]) -> ProviderError {
    ProviderError::new(
        ErrorCode::PluginError,
        format!("unexpected answer from SMSC (HTTP {}): {}", response.status, quote(&response.body, secrets)),
    )
}

/// An SMSC answer, as far as its shape goes.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// A JSON object without an error code.
    Object(Map<String, Value>),
    /// A JSON array (several status answers).
    Array(Vec<Value>),
    /// `{"error": ..., "error_code": N}`, or `ERROR = N (description)` in plain text.
    Error { code: i64, description: String },
    /// `OK - <n> SMS, ID - <id>` in plain text (`fmt=0`).
    TextOk { id: String },
    /// Anything else.
    Unreadable,
}

fn read(body: &str) -> Answer {
    let trimmed = body.trim_start_matches('\u{feff}').trim();
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(map)) => match map.get("error_code").and_then(int) {
            Some(code) => Answer::Error { code, description: text(map.get("error")) },
            // An `error` without a code is not a documented answer.
            None if map.contains_key("error") || map.contains_key("error_code") => Answer::Unreadable,
            None => Answer::Object(map),
        },
        Ok(Value::Array(items)) => Answer::Array(items),
        Ok(_) => Answer::Unreadable,
        Err(_) => read_text(trimmed),
    }
}

/// The `fmt=0` forms: `ERROR = 2 (authorise error)`, `ERROR = 7 (invalid number), ID - 175`,
/// `OK - 1 SMS, ID - 9` (with `cost=3`, `, COST - 3.8, BALANCE - 286.55` follows).
fn read_text(body: &str) -> Answer {
    if let Some(rest) = body.strip_prefix("ERROR") {
        let rest = rest.trim_start().strip_prefix('=').map(str::trim_start);
        let digits = rest.map(|r| r.split(|c: char| !c.is_ascii_digit()).next().unwrap_or_default());
        if let (Some(rest), Some(digits)) = (rest, digits) {
            if let Ok(code) = digits.parse::<i64>() {
                let after = &rest[digits.len()..];
                let description = after
                    .trim_start()
                    .strip_prefix('(')
                    .and_then(|d| d.split_once(')'))
                    .map(|(d, _)| d.to_owned())
                    .unwrap_or_default();
                return Answer::Error { code, description };
            }
        }
        return Answer::Unreadable;
    }
    if body.starts_with("OK") {
        let id = body
            .split(',')
            .filter_map(|part| part.trim().strip_prefix("ID"))
            .filter_map(|rest| rest.trim_start().strip_prefix('-'))
            .map(str::trim)
            .find(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()));
        if let Some(id) = id {
            return Answer::TextOk { id: id.to_owned() };
        }
    }
    Answer::Unreadable
}

/// An integer given as a JSON number or a string of digits.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A decimal given as a JSON number or a string.
fn decimal(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// An id given as a JSON number or a non-empty string.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The digits of a phone number as SMSC writes it (it may add a `+`).
fn digits(v: &Value) -> String {
    text(Some(v)).chars().filter(char::is_ascii_digit).collect()
}

/// The error the answer's HTTP status means when the body is no SMSC error document: `None` for
/// 2xx. 5xx is `unavailable` and 429 `throttled` (both retryable, honouring `Retry-After`), 401 and
/// 403 `auth`, 402 `insufficient_funds`; any other status a `plugin_error`.
fn http_error(response: &HttpResponse, secrets: &[&str]) -> Option<ProviderError> {
    if (200..300).contains(&response.status) {
        return None;
    }
    let Some(mut error) = http_status_error(response) else {
        return Some(unexpected(response, secrets).with_provider_code(response.status.to_string()));
    };
    if response.status >= 500 {
        error.message =
            format!("SMSC is unavailable (HTTP {}): {}", response.status, quote(&response.body, secrets));
    }
    Some(error)
}

/// Reads the answer to a send for recipients `to` (the same list, in the same order, as the
/// request's `phones`).
///
/// One submission has one id: every accepted recipient gets it as `provider_message_id`, and
/// `<id>:<phone>` as its tracking reference. With `op=1` the answer lists each number; one that
/// carries a failure status is failed with that status's error, the others share the id.
pub fn send(to: &[String], response: &HttpResponse, secrets: &[&str]) -> SendResult {
    let failed = |error| SendResult::Failed { error };
    let map = match (read(&response.body), http_error(response, secrets)) {
        (Answer::Error { code, description }, _) => {
            return failed(mapping::api_error(Op::Send, code, &redact_secrets(&description, secrets)));
        }
        (_, Some(error)) => return failed(error),
        (Answer::Object(map), None) => map,
        (Answer::TextOk { id }, None) => return sent_all(to, &id, &[]),
        (Answer::Array(_) | Answer::Unreadable, None) => return failed(unexpected(response, secrets)),
    };
    let Some(id) = map.get("id").and_then(id_text) else {
        return failed(unexpected(response, secrets));
    };
    let phones: &[Value] = map.get("phones").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    sent_all(to, &id, phones)
}

fn sent_all(to: &[String], id: &str, phones: &[Value]) -> SendResult {
    let recipients = to
        .iter()
        .map(|number| {
            let entry = phones
                .iter()
                .filter_map(Value::as_object)
                .find(|e| e.get("phone").map(digits).is_some_and(|p| p == *number));
            match entry.and_then(number_error) {
                Some(error) => RecipientResult::failed(number, error),
                None => {
                    let mut result = RecipientResult::sent(number, id);
                    result.tracking = Some(TrackingRef { id: id.to_owned(), phone: number.clone() }.encode());
                    result
                }
            }
        })
        .collect();
    SendResult::Recipients { recipients }
}

/// The error of one number's entry in a send answer (`op=1`), if it failed: its `status` is a
/// failure status, or it has a non-zero `error` without a status this plugin knows.
fn number_error(entry: &Map<String, Value>) -> Option<ProviderError> {
    let err = entry.get("error").and_then(int).filter(|e| *e != 0);
    match entry.get("status").and_then(int) {
        Some(code) => match mapping::status_row(code) {
            Some(row) => mapping::status_error(row, err),
            None => Some(
                ProviderError::new(
                    ErrorCode::PluginError,
                    format!("SMSC reports the unknown status {code} for this number"),
                )
                .with_provider_code(code.to_string()),
            ),
        },
        None => err.map(|e| {
            ProviderError::new(ErrorCode::PluginError, format!("SMSC reports error {e} for this number"))
                .with_provider_code(e.to_string())
        }),
    }
}

/// Reads the answer to a status query for `refs` (the query's messages, in its order); returns
/// one update per reference that the answer mentions.
///
/// A single message is answered with one object; several with an array of objects naming their
/// `id` and `phone` (matched on both; by position when an element names neither). A status this
/// plugin does not know leaves the message pending (`sent`), with a `plugin_error` that names the
/// code: a later poll may see a known one, and the host ends it `unknown` after its window.
pub fn status(refs: &[TrackingRef], response: &HttpResponse, secrets: &[&str]) -> StatusResult {
    let failed = |error| StatusResult::Failed { error };
    let items: Vec<Value> = match (read(&response.body), http_error(response, secrets)) {
        (Answer::Error { code, description }, _) => {
            return failed(mapping::api_error(Op::Status, code, &redact_secrets(&description, secrets)));
        }
        (_, Some(error)) => return failed(error),
        (Answer::Object(map), None) => vec![Value::Object(map)],
        (Answer::Array(items), None) => items,
        (Answer::TextOk { .. } | Answer::Unreadable, None) => return failed(unexpected(response, secrets)),
    };
    let mut updates: Vec<Option<StatusUpdate>> = vec![None; refs.len()];
    let mut readable = false;
    for (pos, item) in items.iter().enumerate() {
        // An element that gives neither a status nor an error says nothing.
        let Some(obj) = item.as_object().filter(|o| o.contains_key("status") || o.contains_key("error_code"))
        else {
            continue;
        };
        let index = match (obj.get("id").and_then(id_text), obj.get("phone").map(digits)) {
            (Some(id), phone) => phone
                .and_then(|phone| refs.iter().position(|t| t.id == id && t.phone == phone))
                .or_else(|| only_one(refs, &id)),
            (None, _) if refs.len() == items.len() => Some(pos),
            (None, _) => None,
        };
        let Some(index) = index else { continue };
        readable = true;
        updates[index] = Some(update(refs[index].encode(), obj));
    }
    if !readable && !items.is_empty() {
        return failed(unexpected(response, secrets));
    }
    StatusResult::Statuses { statuses: updates.into_iter().flatten().collect() }
}

/// The position of the one reference with message id `id`; `None` when there is none or the id
/// is shared by several (one submission to several numbers), as a phone is then needed.
fn only_one(refs: &[TrackingRef], id: &str) -> Option<usize> {
    let mut found = refs.iter().enumerate().filter(|(_, t)| t.id == id).map(|(i, _)| i);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn update(reference: String, obj: &Map<String, Value>) -> StatusUpdate {
    let pending = |error: ProviderError| StatusUpdate {
        reference: reference.clone(),
        to: None,
        status: Status::Sent.into(),
        error: Some(error),
    };
    let Some(code) = obj.get("status").and_then(int) else {
        return match obj.get("error_code").and_then(int) {
            Some(code) => pending(mapping::api_error(Op::Status, code, &text(obj.get("error")))),
            None => pending(ProviderError::new(
                ErrorCode::PluginError,
                "SMSC's answer gives no readable status for this message",
            )),
        };
    };
    match mapping::status_row(code) {
        Some(row) => StatusUpdate {
            reference: reference.clone(),
            to: None,
            status: row.status.into(),
            error: mapping::status_error(row, obj.get("err").and_then(int)),
        },
        None => pending(
            ProviderError::new(
                ErrorCode::PluginError,
                format!("SMSC answered the unknown status code {code}"),
            )
            .with_provider_code(code.to_string()),
        ),
    }
}

/// Reads the answer to a balance query: `{"balance": "286.55", "currency": "RUB"}`. Without a
/// currency (SMSC adds it for `cur=1`), the currency is `unknown`.
pub fn balance(response: &HttpResponse, secrets: &[&str]) -> BalanceResult {
    let failed = |error| BalanceResult::Failed { error };
    match (read(&response.body), http_error(response, secrets)) {
        (Answer::Error { code, description }, _) => {
            failed(mapping::api_error(Op::Balance, code, &redact_secrets(&description, secrets)))
        }
        (_, Some(error)) => failed(error),
        (Answer::Object(map), None) => match map.get("balance").and_then(decimal) {
            Some(amount) => {
                let currency = match map.get("currency").map(|c| text(Some(c))) {
                    Some(c) if !c.trim().is_empty() => c.trim().to_owned(),
                    _ => "unknown".to_owned(),
                };
                BalanceResult::Balance { amount, currency }
            }
            None => failed(unexpected(response, secrets)),
        },
        _ => failed(unexpected(response, secrets)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_answers_are_read() {
        assert_eq!(
            read("ERROR = 2 (authorise error)"),
            Answer::Error { code: 2, description: "authorise error".into() }
        );
        assert_eq!(
            read("ERROR = 7 (invalid number), ID - 175"),
            Answer::Error { code: 7, description: "invalid number".into() }
        );
        assert_eq!(read("OK - 1 SMS, ID - 9"), Answer::TextOk { id: "9".into() });
        assert_eq!(
            read("OK - 2 SMS, ID - 10, COST - 7.6, BALANCE - 278.95"),
            Answer::TextOk { id: "10".into() }
        );
        for garbage in ["ERROR", "ERROR = ", "ERROR = x", "OK", "OK - 1 SMS", "OK - 1 SMS, ID - ", "okay"] {
            assert_eq!(read(garbage), Answer::Unreadable, "{garbage:?}");
        }
    }

    #[test]
    fn numbers_may_be_strings() {
        assert_eq!(int(&Value::from("7")), Some(7));
        assert_eq!(int(&Value::from(-3)), Some(-3));
        assert_eq!(int(&serde_json::json!(1.0)), Some(1));
        assert_eq!(int(&serde_json::json!(1.5)), None);
        assert_eq!(decimal(&Value::from("286.55")), Some(286.55));
        assert_eq!(decimal(&Value::from("NaN")), None);
        assert_eq!(id_text(&Value::from(9)), Some("9".into()));
        assert_eq!(id_text(&Value::from(" ")), None);
    }
}
