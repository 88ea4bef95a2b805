//! Helpers for a plugin's own tests (cargo feature `testing`; a plugin enables it in its
//! `[dev-dependencies]`): build the documents the host sends, drive an operation's exchanges
//! against canned HTTP answers the way the host does, take the results apart, and check that a
//! result is well formed whatever the answer was.
//!
//! ```
//! use notifyd_plugin::sdk::testing::{drive, ok, recipients, send_input};
//! # use notifyd_plugin::sdk::{OpResult, expect_state};
//! # use notifyd_plugin::wire::{Exchange, HttpRequest, RecipientResult, SendInput, SendResult, Step};
//! # fn send(input: &SendInput, exchange: Option<&Exchange>) -> OpResult<SendResult> {
//! #     let Some(ex) = exchange else {
//! #         let http = HttpRequest { method: "POST".into(), url: "https://acme.example/send".into(),
//! #             headers: vec![], body: input.to.join(","), ..HttpRequest::default() };
//! #         return Ok(Step::http(http, "send"));
//! #     };
//! #     expect_state("send", ex, "send")?;
//! #     let id = ex.response()?.body.trim();
//! #     let recipients = input.to.iter().map(|to| RecipientResult::sent(to, id)).collect();
//! #     Ok(Step::done(SendResult::Recipients { recipients }))
//! # }
//! let input = send_input(&["4915171112233"], "Your code is 1234");
//! let (requests, result) = drive(|ex| send(&input, ex), &[ok("id-1\n")]);
//! assert_eq!(requests[0].body, "4915171112233");
//! assert_eq!(recipients(result)[0].provider_message_id.as_deref(), Some("id-1"));
//! ```

use super::{OpResult, Provider};
use crate::wire::{
    BalanceResult, Exchange, HttpRequest, HttpResponse, InstanceInit, MAX_EXCHANGES, ProviderError,
    RecipientResult, SendInput, SendResult, Status, StatusInput, StatusResult, StatusUpdate, Step,
    WIRE_VERSION,
};
use std::fmt::Debug;

/// The statuses a status update may carry (docs/contract.md §2.8).
pub const STATUSES: &[Status] = &[
    Status::Sent,
    Status::Delivered,
    Status::Undelivered,
    Status::Expired,
    Status::Rejected,
    Status::Unknown,
];

/// Asserts what plugin `P` says about itself: its capability bits (as `P::CAPABILITIES` gives
/// them, without the `CAP_SEND` the export adds) and its describe document, compared as the JSON
/// the host reads (`v` is added).
pub fn assert_describes<P: Provider>(capabilities: u64, describe: serde_json::Value) {
    assert_eq!(P::CAPABILITIES, capabilities, "capability bits");
    let mut expected = serde_json::json!({"v": WIRE_VERSION});
    if let (Some(all), Some(given)) = (expected.as_object_mut(), describe.as_object()) {
        all.extend(given.clone());
    }
    let found = serde_json::to_value(P::describe()).expect("a describe document encodes");
    assert_eq!(found, expected, "the describe document");
}

/// The settings document of instance `name` (`settings` must be a JSON object, else it counts as
/// empty).
pub fn init(name: &str, base_url: Option<&str>, settings: serde_json::Value) -> InstanceInit {
    InstanceInit {
        v: WIRE_VERSION,
        name: name.to_owned(),
        base_url: base_url.map(str::to_owned),
        settings: settings.as_object().cloned().unwrap_or_default(),
        abi_minor: None,
    }
}

/// A `send` input: request id `req-1`, GSM-7, one segment, no sender, not scheduled. Change the
/// rest with struct update syntax: `SendInput { from: Some("MyShop".into()), ..send_input(..) }`.
pub fn send_input(to: &[&str], text: &str) -> SendInput {
    SendInput {
        id: "req-1".into(),
        to: to.iter().map(|s| (*s).to_owned()).collect(),
        text: text.into(),
        from: None,
        from_given: None,
        encoding: "gsm7".into(),
        segments: 1,
        send_at: None,
    }
}

/// A `status` input for these tracking references.
pub fn status_input(refs: &[&str]) -> StatusInput {
    StatusInput { refs: refs.iter().map(|s| (*s).to_owned()).collect() }
}

/// An HTTP answer without headers.
pub fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse { status, body: body.into(), ..HttpResponse::default() }
}

/// An HTTP 200 answer without headers.
pub fn ok(body: &str) -> HttpResponse {
    response(200, body)
}

/// `r` with one more header (give `name` in lower case, as the host does).
pub fn with_header(mut r: HttpResponse, name: &str, value: &str) -> HttpResponse {
    r.headers.insert(name.into(), value.into());
    r
}

/// The exchange the host hands back after performing the request of step `state`.
pub fn exchange(state: &str, response: HttpResponse) -> Exchange {
    Exchange::answered(state, response)
}

/// The request and state of a step that must be an HTTP step; panics with the step otherwise.
pub fn http_step<T: Debug>(step: OpResult<T>) -> (HttpRequest, String) {
    match step {
        Ok(Step::Http { http, state, .. }) => (http, state),
        other => panic!("expected an HTTP step, got {other:?}"),
    }
}

/// The result of a step that must be `done`; panics with the step otherwise.
pub fn done<T: Debug>(step: OpResult<T>) -> T {
    match step {
        Ok(Step::Done { done }) => done,
        other => panic!("expected a result, got {other:?}"),
    }
}

/// Drives one operation the way the host does: calls it without an exchange, then again with the
/// answer to each request in turn (`answers[0]` to the first request, and so on), up to the host's
/// [`MAX_EXCHANGES`]. Returns the requests asked for and the result. Panics when the operation
/// answers `Err`, asks for more requests than `answers` holds, or for more than the host allows.
pub fn drive<T: Debug>(
    mut call: impl FnMut(Option<&Exchange>) -> OpResult<T>,
    answers: &[HttpResponse],
) -> (Vec<HttpRequest>, T) {
    let mut requests = Vec::new();
    let mut exchange: Option<Exchange> = None;
    for _ in 0..=MAX_EXCHANGES {
        match call(exchange.as_ref()).expect("the operation answers a step") {
            Step::Done { done } => return (requests, done),
            Step::Http { http, state, .. } => {
                let response = answers.get(requests.len()).cloned().unwrap_or_else(|| {
                    panic!("request #{} has no answer in the test: {http:?}", requests.len() + 1)
                });
                requests.push(http);
                exchange = Some(Exchange::answered(state, response));
            }
        }
    }
    panic!("more than {MAX_EXCHANGES} exchanges: {requests:#?}");
}

/// The per-recipient results; panics on a whole-request error.
pub fn recipients(result: SendResult) -> Vec<RecipientResult> {
    match result {
        SendResult::Recipients { recipients } => recipients,
        SendResult::Failed { error } => panic!("expected per-recipient results, got the error {error:?}"),
    }
}

/// The whole-request error; panics on per-recipient results.
pub fn whole_error(result: SendResult) -> ProviderError {
    match result {
        SendResult::Failed { error } => error,
        SendResult::Recipients { recipients } => panic!("expected a whole-request error, got {recipients:?}"),
    }
}

/// The status updates; panics on an error for the whole query.
pub fn statuses(result: StatusResult) -> Vec<StatusUpdate> {
    match result {
        StatusResult::Statuses { statuses } => statuses,
        StatusResult::Failed { error } => panic!("expected statuses, got the error {error:?}"),
    }
}

/// The error for the whole status query; panics on status updates.
pub fn status_error(result: StatusResult) -> ProviderError {
    match result {
        StatusResult::Failed { error } => error,
        StatusResult::Statuses { statuses } => panic!("expected an error, got {statuses:?}"),
    }
}

/// The amount and currency; panics on an error.
pub fn balance(result: BalanceResult) -> (f64, String) {
    match result {
        BalanceResult::Balance { amount, currency } => (amount, currency),
        BalanceResult::Failed { error } => panic!("expected a balance, got the error {error:?}"),
    }
}

/// The balance query's error; panics on a balance.
pub fn balance_error(result: BalanceResult) -> ProviderError {
    match result {
        BalanceResult::Failed { error } => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The pairs of an `application/x-www-form-urlencoded` text (a form body, or a URL's query after
/// its `?`), decoded (`+` is a space), in order. Panics on a malformed escape.
pub fn form_params(text: &str) -> Vec<(String, String)> {
    let query = text.split_once('?').map_or(text, |(_, q)| q);
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The value of parameter `name` in a form text or URL, if present (see [`form_params`]).
pub fn form_param(text: &str, name: &str) -> Option<String> {
    form_params(text).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).unwrap_or_else(|| panic!("a truncated escape in {s:?}"));
                out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("a bad escape in {s:?}")));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| panic!("escapes of invalid UTF-8 in {s:?}"))
}

/// Checks what the host requires of an error, whatever the answer was: a known code and a
/// message.
pub fn check_error(error: &ProviderError) -> Result<(), String> {
    if !error.code.is_operation_code() {
        return Err(format!("unknown error code in {error:?}"));
    }
    if error.message.trim().is_empty() {
        return Err(format!("an error without a message: {error:?}"));
    }
    Ok(())
}

/// Checks a send result against its recipients `to`: a whole-request error that passes
/// [`check_error`], or exactly one result per recipient, in order, each either sent (with a
/// message id and no error) or failed (with a checked error and no id).
pub fn check_send_result(result: &SendResult, to: &[&str]) -> Result<(), String> {
    match result {
        SendResult::Failed { error } => check_error(error),
        SendResult::Recipients { recipients } => {
            let order: Vec<&str> = recipients.iter().map(|r| r.to.as_str()).collect();
            if order != to {
                return Err(format!("expected one result per recipient {to:?}, in order: {recipients:?}"));
            }
            for r in recipients {
                match (&r.provider_message_id, &r.error) {
                    (Some(_), None) => {}
                    (None, Some(error)) => check_error(error)?,
                    _ => return Err(format!("neither sent with an id nor failed with an error: {r:?}")),
                }
            }
            Ok(())
        }
    }
}

/// Checks a status result: a checked error for the whole query, or updates only for references
/// asked, each with a known status and, if any, a checked error.
pub fn check_status_result(result: &StatusResult, refs: &[&str]) -> Result<(), String> {
    match result {
        StatusResult::Failed { error } => check_error(error),
        StatusResult::Statuses { statuses } => {
            for s in statuses {
                if !refs.contains(&s.reference.as_str()) {
                    return Err(format!("an update for a reference not asked: {s:?}"));
                }
                if !s.status.known().is_some_and(|status| STATUSES.contains(&status)) {
                    return Err(format!("an unknown status: {s:?}"));
                }
                if let Some(error) = &s.error {
                    check_error(error)?;
                }
            }
            Ok(())
        }
    }
}

/// Checks a balance result: a checked error, or a finite amount with a currency.
pub fn check_balance_result(result: &BalanceResult) -> Result<(), String> {
    match result {
        BalanceResult::Failed { error } => check_error(error),
        BalanceResult::Balance { amount, currency } if amount.is_finite() && !currency.is_empty() => Ok(()),
        other => Err(format!("a balance must be finite and have a currency: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ErrorCode, ReportedStatus};

    #[test]
    fn forms_and_queries_are_decoded_in_order() {
        let url = "https://p.example/send?login=a%26b&mes=x+y%D0%B4&flag";
        assert_eq!(
            form_params(url),
            [("login", "a&b"), ("mes", "x yд"), ("flag", "")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(form_param("a=1&b=2", "b").as_deref(), Some("2"));
        assert_eq!(form_param("a=1", "c"), None);
    }

    #[test]
    fn drive_answers_each_request_in_turn() {
        let (requests, result) = drive(
            |ex| match ex {
                None => Ok(Step::http(HttpRequest::new("GET", "u1"), "1")),
                Some(ex) if ex.state == "1" => Ok(Step::http(
                    HttpRequest::new("GET", "u2"),
                    format!("2:{}", ex.response().unwrap().body),
                )),
                Some(ex) => Ok(Step::done(format!("{}+{}", ex.state, ex.response()?.body))),
            },
            &[ok("a"), response(500, "b")],
        );
        assert_eq!(requests.iter().map(|r| r.url.as_str()).collect::<Vec<_>>(), ["u1", "u2"]);
        assert_eq!(result, "2:a+b");
    }

    #[test]
    fn checks_find_what_the_host_would_refuse() {
        let sent = RecipientResult::sent("1", "id");
        let failed = RecipientResult::failed("2", ProviderError::new(ErrorCode::Auth, "no"));
        let good = SendResult::Recipients { recipients: vec![sent.clone(), failed.clone()] };
        assert_eq!(check_send_result(&good, &["1", "2"]), Ok(()));
        assert!(check_send_result(&good, &["2", "1"]).is_err());
        let bad = SendResult::Recipients {
            recipients: vec![RecipientResult::failed(
                "1",
                ProviderError::new(ErrorCode::Unrecognised("oops".into()), "no"),
            )],
        };
        assert!(check_send_result(&bad, &["1"]).is_err());
        let neither = RecipientResult { provider_message_id: None, ..sent };
        assert!(check_send_result(&SendResult::Recipients { recipients: vec![neither] }, &["1"]).is_err());
        let update = |reference: &str, status: ReportedStatus| StatusUpdate {
            reference: reference.into(),
            to: None,
            status,
            error: None,
        };
        let ok_statuses = StatusResult::Statuses { statuses: vec![update("a", Status::Delivered.into())] };
        assert_eq!(check_status_result(&ok_statuses, &["a", "b"]), Ok(()));
        assert!(check_status_result(&ok_statuses, &["b"]).is_err());
        let odd = StatusResult::Statuses {
            statuses: vec![update("a", ReportedStatus::Unrecognised("gone".into()))],
        };
        assert!(check_status_result(&odd, &["a"]).is_err());
        assert!(
            check_balance_result(&BalanceResult::Balance { amount: f64::NAN, currency: "x".into() }).is_err()
        );
        assert_eq!(
            check_balance_result(&BalanceResult::Balance { amount: 1.5, currency: "EUR".into() }),
            Ok(())
        );
        assert!(check_error(&ProviderError::new(ErrorCode::Auth, " ")).is_err());
    }
}
