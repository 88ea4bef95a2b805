//! Reading SMS Club's answers into notifyd results.
//!
//! Every successful answer is `{"success_request": {"info": ..., "add_info": ...}}`: `info` holds
//! the call's result, `add_info` (only when something was refused) maps a phone number or a
//! request field to the reason. The HTTP status comes first ([`mapping::http_class`]); the body is
//! read leniently (the private `lenient` reader) so that the document's printed examples parse
//! too. An answer that is none of these is `plugin_error` with a short snippet of the body, never
//! a panic.

mod lenient;

use crate::mapping::{self, HttpClass};
use notifyd_plugin::sdk::{snippet, unexpected_answer};
use notifyd_plugin::wire::{
    BalanceResult, HttpResponse, ProviderError, RecipientResult, SendResult, StatusResult, StatusUpdate,
};
use notifyd_plugin::wire::{ErrorCode, Status};
use serde_json::{Map, Value};

/// The currency assumed when a balance answer names none: SMS Club bills Ukrainian accounts in
/// hryvnias (the document's example says `UAH`).
pub const DEFAULT_CURRENCY: &str = "UAH";

/// The fields of `success_request` that matter.
#[derive(Debug, Default)]
struct Answer {
    info: Option<Value>,
    /// `add_info` entries: (phone number or field name, reason), in the answer's order.
    refusals: Vec<(String, String)>,
}

/// `{"success_request": {...}}` read from `body`, or `None` when the body is not that.
fn read_answer(body: &str) -> Option<Answer> {
    let root = lenient::parse(body)?;
    let success = root.as_object()?.get("success_request")?.as_object()?;
    let refusals = match success.get("add_info") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), reason_text(v))).collect(),
        _ => Vec::new(),
    };
    Some(Answer { info: success.get("info").cloned(), refusals })
}

/// An error document `{"name": "...", "message": "..."}` (unconfirmed form): (name, message).
fn read_named(body: &str) -> Option<(String, String)> {
    let root = lenient::parse(body)?;
    let root = root.as_object()?;
    let text = |key: &str| root.get(key).and_then(Value::as_str).map(snippet);
    let (name, message) = (text("name"), text("message"));
    if name.is_none() && message.is_none() {
        return None;
    }
    Some((name.unwrap_or_default(), message.unwrap_or_default()))
}

/// A reason as text: a string as it is, a list of strings joined, anything else as JSON; cut
/// short for messages.
fn reason_text(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    };
    snippet(text.trim())
}

/// The digits of a phone number as an answer spells it (`+380 98...` → `38098...`).
fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Which of `to` the number `phone` from an answer stands for: the same digits, else the only
/// recipient that ends with it or that it ends with (a provider may drop or add a country code),
/// with at least 9 digits in common. `None` when no recipient, or more than one, fits.
fn owner(phone: &str, to: &[String]) -> Option<usize> {
    let phone = digits(phone);
    if phone.is_empty() {
        return None;
    }
    if let Some(i) = to.iter().position(|t| *t == phone) {
        return Some(i);
    }
    let mut fits = to.iter().enumerate().filter(|(_, t)| {
        t.len().min(phone.len()) >= 9 && (t.ends_with(phone.as_str()) || phone.ends_with(t.as_str()))
    });
    match (fits.next(), fits.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// Whether an `add_info` key is a phone number rather than a field name.
fn is_number_key(key: &str) -> bool {
    let key = key.trim();
    !key.is_empty()
        && key.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')'))
        && digits(key).len() >= 7
}

/// Adds the body's detail to an error decided by the HTTP status: the text of an error document,
/// else a snippet of the body where it can help (an unexpected or failing answer).
fn with_body(error: ProviderError, response: &HttpResponse) -> ProviderError {
    if let Some((name, message)) = read_named(&response.body) {
        return mapping::named_error(error, &name, &message);
    }
    let body = response.body.trim();
    if !body.is_empty() && matches!(error.code.as_str(), "plugin_error" | "unavailable") {
        return ProviderError { message: format!("{}: {}", error.message, snippet(body)), ..error };
    }
    error
}

/// The whole-request error of an HTTP 400 (validation) answer: the first refused field in
/// `add_info`, else the error document's text, else a snippet.
fn validation_error(response: &HttpResponse) -> ProviderError {
    let base =
        ProviderError::new(ErrorCode::InvalidRequest, "SMS Club refused the request as invalid (HTTP 400)")
            .with_provider_code("400");
    if let Some((field, reason)) =
        read_answer(&response.body).and_then(|a| a.refusals.into_iter().find(|(k, _)| !is_number_key(k)))
    {
        return mapping::field_error(&field, &reason);
    }
    if read_named(&response.body).is_some() {
        return with_body(base, response);
    }
    let body = response.body.trim();
    if body.is_empty() {
        base
    } else {
        ProviderError { message: format!("{}: {}", base.message, snippet(body)), ..base }
    }
}

/// Reads the answer to `/sms/send` for recipients `to` (in the order sent).
pub fn send(to: &[String], response: &HttpResponse) -> SendResult {
    match mapping::http_class(response) {
        HttpClass::Error(error) => SendResult::Failed { error: with_body(error, response) },
        HttpClass::Validation => send_refused(to, response),
        HttpClass::Answer => send_answered(to, response),
    }
}

/// HTTP 200: `info` maps each message id to its number, `add_info` each refused number to why.
fn send_answered(to: &[String], response: &HttpResponse) -> SendResult {
    let Some(answer) = read_answer(&response.body) else {
        return SendResult::Failed { error: unexpected_answer(response) };
    };
    let ids: Vec<(String, String)> = match &answer.info {
        Some(Value::Object(info)) => {
            info.iter().filter_map(|(id, phone)| Some((id.clone(), phone_text(phone)?))).collect()
        }
        _ => Vec::new(),
    };
    if ids.is_empty() && answer.refusals.is_empty() {
        return SendResult::Failed { error: unexpected_answer(response) };
    }
    let otherwise = field_refusal(to, &answer.refusals).unwrap_or_else(|| {
        ProviderError::new(
            ErrorCode::PluginError,
            "SMS Club's answer does not mention this number, so its fate is unknown",
        )
    });
    SendResult::Recipients { recipients: assign(to, &ids, &answer.refusals, otherwise) }
}

/// The error of the first request field (not a number) that `add_info` refuses, for the
/// recipients without a result of their own. A refused `phone` field does not say which number:
/// with one recipient it is that one.
fn field_refusal(to: &[String], refusals: &[(String, String)]) -> Option<ProviderError> {
    let (field, reason) = refusals.iter().find(|(k, _)| !is_number_key(k))?;
    Some(if field.trim().eq_ignore_ascii_case("phone") && to.len() == 1 {
        mapping::number_error(reason)
    } else {
        mapping::field_error(field, reason)
    })
}

/// HTTP 400: nothing was sent. Numbers named in `add_info` are refused for good; the others
/// were refused only because of them (retryable: sent again without them, they may pass), or
/// because of a request field (that field's error).
fn send_refused(to: &[String], response: &HttpResponse) -> SendResult {
    let answer = read_answer(&response.body).unwrap_or_default();
    let numbers = answer.refusals.iter().any(|(k, _)| is_number_key(k));
    let others = match field_refusal(to, &answer.refusals) {
        Some(error) => error,
        None if numbers => ProviderError::retryable(
            ErrorCode::InvalidRequest,
            "SMS Club refused the whole request because of another number in it; nothing was sent",
        )
        .with_provider_code("400"),
        None => return SendResult::Failed { error: validation_error(response) },
    };
    SendResult::Recipients { recipients: assign(to, &[], &answer.refusals, others) }
}

/// A number in `info` as text (a string, or a number).
fn phone_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One result per recipient of `to`, in order: its message id from `ids` (id, number), else its
/// refusal from `refusals` (number, reason), else `otherwise`.
fn assign(
    to: &[String],
    ids: &[(String, String)],
    refusals: &[(String, String)],
    otherwise: ProviderError,
) -> Vec<RecipientResult> {
    let mut results: Vec<Option<RecipientResult>> = vec![None; to.len()];
    for (id, phone) in ids {
        if let Some(i) = owner(phone, to).filter(|&i| results[i].is_none()) {
            let mut sent = RecipientResult::sent(&to[i], id);
            sent.tracking = Some(id.clone());
            results[i] = Some(sent);
        }
    }
    for (key, reason) in refusals.iter().filter(|(k, _)| is_number_key(k)) {
        if let Some(i) = owner(key, to).filter(|&i| results[i].is_none()) {
            results[i] = Some(RecipientResult::failed(&to[i], mapping::number_error(reason)));
        }
    }
    results
        .into_iter()
        .zip(to)
        .map(|(result, to)| result.unwrap_or_else(|| RecipientResult::failed(to, otherwise.clone())))
        .collect()
}

/// Reads the answer to `/sms/status` for message ids `refs`: `info` maps each id to its status
/// word. Ids missing from the answer are left out (the host keeps tracking them).
pub fn status(refs: &[String], response: &HttpResponse) -> StatusResult {
    let answer = match mapping::http_class(response) {
        HttpClass::Error(error) => return StatusResult::Failed { error: with_body(error, response) },
        HttpClass::Validation => return StatusResult::Failed { error: validation_error(response) },
        HttpClass::Answer => read_answer(&response.body),
    };
    let info = match answer.and_then(|a| a.info) {
        Some(Value::Object(info)) => info,
        // PHP encodes an empty map as `[]`: none of the ids is known (yet).
        Some(Value::Array(items)) if items.is_empty() => Map::new(),
        _ => return StatusResult::Failed { error: unexpected_answer(response) },
    };
    let statuses = refs
        .iter()
        .filter_map(|reference| {
            let value = info.get(reference).or_else(|| info.get(reference.trim()))?;
            Some(status_update(reference, value))
        })
        .collect();
    StatusResult::Statuses { statuses }
}

/// One id's status from its `info` value: a word, or (unconfirmed) an object with a `status`.
fn status_update(reference: &str, value: &Value) -> StatusUpdate {
    let word = match value {
        Value::String(word) => Some(word.as_str()),
        Value::Object(o) => o.get("status").and_then(Value::as_str),
        _ => None,
    };
    let (status, error) = match word.and_then(|w| Some((w, mapping::status_word(w)?))) {
        Some((word, status)) => (status, mapping::status_error(word)),
        // An unknown word is not guessed at: the message stays pending (tracking goes on, and
        // ends `unknown` after the window), and the word is reported.
        None => {
            let shown = snippet(&match word {
                Some(w) => w.to_owned(),
                None => value.to_string(),
            });
            let error =
                ProviderError::new(ErrorCode::PluginError, format!("unknown status from SMS Club: {shown}"))
                    .with_provider_code(shown);
            (Status::Sent, Some(error))
        }
    };
    StatusUpdate { reference: reference.to_owned(), to: None, status: status.into(), error }
}

/// Reads the answer to `/sms/balance`: `info` is `{"money": "8111.1700", "currency": "UAH"}`
/// (or the document's printed form, `["money": ..., "currency": ...]`).
pub fn balance(response: &HttpResponse) -> BalanceResult {
    let answer = match mapping::http_class(response) {
        HttpClass::Error(error) => return BalanceResult::Failed { error: with_body(error, response) },
        HttpClass::Validation => return BalanceResult::Failed { error: validation_error(response) },
        HttpClass::Answer => read_answer(&response.body),
    };
    let info = answer.and_then(|a| a.info);
    let info = info.as_ref().and_then(Value::as_object);
    let amount = info.and_then(|i| i.get("money")).and_then(|m| match m {
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    });
    match amount.filter(|a| a.is_finite()) {
        Some(amount) => {
            let currency = info
                .and_then(|i| i.get("currency"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .unwrap_or(DEFAULT_CURRENCY);
            BalanceResult::Balance { amount, currency: snippet(currency) }
        }
        None => BalanceResult::Failed { error: unexpected_answer(response) },
    }
}

/// Test access to the lenient reader, for the document's printed examples.
#[cfg(test)]
pub mod tests_support {
    pub fn lenient(text: &str) -> Option<serde_json::Value> {
        super::lenient::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_matches_digits_then_a_unique_suffix() {
        let to = vec!["380989361131".to_owned(), "380671234567".to_owned()];
        assert_eq!(owner("380989361131", &to), Some(0));
        assert_eq!(owner("+380 67 123 45 67", &to), Some(1));
        assert_eq!(owner("0989361131", &to), Some(0), "a national form still finds its recipient");
        assert_eq!(owner("61131", &to), None, "too short to be sure");
        assert_eq!(owner("", &to), None);
        let twins = vec!["380989361131".to_owned(), "480989361131".to_owned()];
        assert_eq!(owner("0989361131", &twins), None, "ambiguous: neither");
    }

    #[test]
    fn number_keys_are_told_from_field_names() {
        assert!(is_number_key("380989361131"));
        assert!(is_number_key("+380 98 936 11 31"));
        assert!(!is_number_key("src_addr"));
        assert!(!is_number_key("phone"));
        assert!(!is_number_key("123"));
    }

    #[test]
    fn reasons_become_short_text() {
        assert_eq!(reason_text(&serde_json::json!("bad")), "bad");
        assert_eq!(reason_text(&serde_json::json!(["a", "b"])), "a; b");
        assert_eq!(reason_text(&serde_json::json!({"x": 1})), r#"{"x":1}"#);
        assert_eq!(reason_text(&serde_json::json!("y".repeat(500))).chars().count(), 65);
    }
}
