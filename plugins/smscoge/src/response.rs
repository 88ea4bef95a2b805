//! Reading smsco.ge's answers. They are plain text, not JSON:
//!
//! - send: `OK <credits used> <mes_id>` (one id for the whole submission; some installations
//!   answer `OK <mes_id>`), or a bare error code 2904..2915;
//! - status: one digit 0..7, or an error code;
//! - balance: a number, or an error code.
//!
//! Answers are matched leniently: surrounding whitespace is ignored, `OK` in any case, and an
//! error code may be followed by its description (`2905=Invalid ...`, `2905 Invalid ...`).
//! Anything else is an unexpected answer: `plugin_error` with a short snippet of the body, from
//! which the credentials are removed.

use crate::mapping::{self, ErrorRow, Scope, StatusRow};
use notifyd_plugin::sdk::{http_status_error, redact_secrets, retry_after_ms, unexpected_answer};
use notifyd_plugin::wire::{HttpResponse, ProviderError};
use std::borrow::Cow;

/// The SDK's unexpected-answer error (`plugin_error`, not retryable, with a snippet of the body),
/// the snippet taken after `secrets` are cut out of the body (a provider's error page may echo the
/// request's query string); `provider_code` is the HTTP status when it is not 2xx.
pub fn unexpected(response: &HttpResponse, secrets: &[&str]) -> ProviderError {
    let mut e = match redact_secrets(&response.body, secrets) {
        Cow::Borrowed(_) => unexpected_answer(response),
        Cow::Owned(body) => {
            unexpected_answer(&HttpResponse { status: response.status, body, ..HttpResponse::default() })
        }
    };
    if !(200..300).contains(&response.status) {
        e.provider_code = Some(response.status.to_string());
    }
    e
}

/// What an answer says, before it is turned into results.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    /// The documented success form.
    Ok(T),
    /// A documented error code (2904..2915).
    Error(&'static ErrorRow),
    /// Not 2xx and not a documented error body: the HTTP status decides (429, 5xx, ...).
    Http(ProviderError),
    /// Anything else: unknown word or number, HTML page, empty or truncated body.
    Unexpected(ProviderError),
}

/// The leading error code of a body (`2905`, `2905=...`, `2905 ...`), when it is a documented
/// one; an unknown 29xx code is an unexpected answer.
fn error_code(body: &str) -> Option<&'static ErrorRow> {
    let t = body.trim();
    let n = t.bytes().take_while(u8::is_ascii_digit).count();
    if n != 4 || t[n..].starts_with(|c: char| c.is_alphanumeric() || c == '.') {
        return None;
    }
    mapping::error_row(t[..n].parse().ok()?)
}

/// Classifies `response`: documented error codes first (whatever the HTTP status), then
/// `parse` for a 2xx body, then the HTTP status.
fn classify<T>(
    response: &HttpResponse,
    secrets: &[&str],
    parse: impl FnOnce(&str) -> Option<T>,
) -> Answer<T> {
    if let Some(row) = error_code(&response.body) {
        return Answer::Error(row);
    }
    if (200..300).contains(&response.status) {
        return match parse(response.body.trim()) {
            Some(v) => Answer::Ok(v),
            None => Answer::Unexpected(unexpected(response, secrets)),
        };
    }
    match http_status_error(response) {
        Some(e) => Answer::Http(e),
        None => Answer::Unexpected(unexpected(response, secrets)),
    }
}

impl<T> Answer<T> {
    /// The success, or the error the answer means: the row's error (with `Retry-After` when the
    /// code is retryable and the header is there), or the HTTP/unexpected error.
    pub fn into_result(self, response: &HttpResponse) -> Result<T, ProviderError> {
        match self {
            Answer::Ok(v) => Ok(v),
            Answer::Error(row) => {
                let mut e = mapping::error(row);
                if e.retryable {
                    e.retry_after_ms = retry_after_ms(response);
                }
                Err(e)
            }
            Answer::Http(e) | Answer::Unexpected(e) => Err(e),
        }
    }
}

/// A successful send: `OK <credits used> <mes_id>` or `OK <mes_id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The message id of the whole submission (`mes_id` for status queries).
    pub mes_id: String,
    /// The credits (tetri) the submission cost, when the answer says.
    pub credits: Option<String>,
}

/// Whether `id` can be a message id: 1..=64 ASCII letters, digits, `-` or `_` (the document shows
/// numbers), so it travels safely in a tracking reference and a query string.
pub fn valid_mes_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

fn parse_ok(body: &str) -> Option<Accepted> {
    let mut words = body.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("OK") {
        return None;
    }
    let (credits, id) = match (words.next(), words.next(), words.next()) {
        (Some(id), None, None) => (None, id),
        (Some(credits), Some(id), None) if credits.parse::<f64>().is_ok_and(f64::is_finite) => {
            (Some(credits), id)
        }
        _ => return None,
    };
    valid_mes_id(id).then(|| Accepted { mes_id: id.to_owned(), credits: credits.map(str::to_owned) })
}

/// Reads a send answer.
pub fn send(response: &HttpResponse, secrets: &[&str]) -> Answer<Accepted> {
    classify(response, secrets, parse_ok)
}

/// What one status query said about one message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAnswer {
    /// A documented status (0..7).
    Known(&'static StatusRow),
    /// Anything else, including error codes about this query alone: the status stays as it is.
    Unchanged,
}

/// Reads a status answer. `Err` is an answer that concerns the account or the gateway (bad
/// credentials, gateway down, HTTP 429/5xx, ...): the batch stops there and is asked again at
/// the next poll.
pub fn status(response: &HttpResponse, secrets: &[&str]) -> Result<StatusAnswer, ProviderError> {
    let answer = classify(response, secrets, |body| {
        let digit = body.strip_prefix(|c: char| c.is_ascii_digit())?;
        // A documented status is a single digit; a description after it is tolerated.
        if digit.starts_with(|c: char| c.is_alphanumeric() || c == '.') {
            return None;
        }
        mapping::status_row(body.as_bytes()[0] - b'0')
    });
    match answer {
        Answer::Error(row) if row.scope == Scope::Call => Ok(StatusAnswer::Unchanged),
        // An unknown word about one id (or an HTML page that a 2xx carries): that id stays as it
        // is and the others are still asked.
        Answer::Unexpected(_) if (200..300).contains(&response.status) => Ok(StatusAnswer::Unchanged),
        other => other.into_result(response).map(StatusAnswer::Known),
    }
}

/// Reads a balance answer: a number (`,` accepted as the decimal separator). A bare integer
/// 2904..2915 is read as the error code it also is (see the README).
pub fn balance(response: &HttpResponse, secrets: &[&str]) -> Result<f64, ProviderError> {
    let answer = classify(response, secrets, |body| {
        let word = body.split_whitespace().next()?;
        word.replace(',', ".").parse::<f64>().ok().filter(|v| v.is_finite())
    });
    answer.into_result(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, body: body.into(), ..HttpResponse::default() }
    }

    #[test]
    fn redaction_covers_plain_and_encoded_secrets() {
        let long = format!("{}password=p@ss word&x", "x".repeat(55));
        let e = unexpected(&r(200, &long), &["p@ss word", ""]);
        assert!(!e.message.contains("p@ss") && !e.message.contains("ss wo"), "{}", e.message);
        assert!(e.message.ends_with("password=…"), "{}", e.message);
    }

    #[test]
    fn ok_forms() {
        assert_eq!(parse_ok("OK 4 123"), Some(Accepted { mes_id: "123".into(), credits: Some("4".into()) }));
        assert_eq!(parse_ok("OK 123"), Some(Accepted { mes_id: "123".into(), credits: None }));
        assert_eq!(
            parse_ok("ok  0.5\t77"),
            Some(Accepted { mes_id: "77".into(), credits: Some("0.5".into()) })
        );
        for bad in ["OK", "OK 4 123 5", "OK x 123", "OK 4 12/3", "OKAY 4 123", "NOK 4 123", "OK 4 <b>"] {
            assert_eq!(parse_ok(bad), None, "{bad}");
        }
    }

    #[test]
    fn error_codes_with_or_without_words() {
        assert_eq!(error_code("2905").map(|r| r.provider_code), Some(2905));
        assert_eq!(error_code(" 2906\r\n").map(|r| r.provider_code), Some(2906));
        assert_eq!(error_code("2907=Gateway unavailable").map(|r| r.provider_code), Some(2907));
        assert_eq!(error_code("2908 Invalid schedule date format").map(|r| r.provider_code), Some(2908));
        for other in ["2903", "2916", "29050", "2905.5", "2905abc", "12905", "", "OK 4 2905"] {
            assert_eq!(error_code(other), None, "{other}");
        }
    }
}
