//! Parsing the gateway's answers into results. The gateway answers plain text: message ids, a
//! status word, a balance line, or one of the error sentences of [`crate::mapping::ERRORS`].
//!
//! Order of the checks, for every operation: a known error sentence (whatever the HTTP status),
//! then the HTTP status ([`http_status_error`]: 401/403 auth, 402 funds, 408 timeout, 429
//! throttled, 5xx unavailable), then the operation's own answer on a 2xx; anything else is an
//! unexpected answer (`plugin_error`, quoting a short snippet with the credentials blanked out).

use crate::Credentials;
use crate::mapping::{self, PartStatus, Scope};
use notifyd_plugin::sdk::{http_status_error, redact_secrets, snippet};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{HttpResponse, ProviderError};

/// How much of a body is searched for an error sentence: the sentences are short and come first;
/// a huge body is not lower-cased as a whole.
const SEARCH_LIMIT: usize = 64 * 1024;

/// Longest message id accepted (the document shows five digits).
const MAX_ID_LEN: usize = 32;

/// The body without a UTF-8 byte order mark (PHP scripts saved with one print it first) and
/// without surrounding whitespace.
fn clean(body: &str) -> &str {
    body.trim_start_matches('\u{feff}').trim()
}

/// The first `limit` bytes of `s`, cut at a character boundary.
fn head(s: &str, limit: usize) -> &str {
    if s.len() <= limit {
        return s;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A short, single-line excerpt of `body` for an error message, with every occurrence of the
/// credentials (plain or percent-encoded, as an echoed URL would carry them) replaced by `***`.
pub fn quote(body: &str, creds: &Credentials) -> String {
    if clean(body).is_empty() {
        return "an empty body".to_owned();
    }
    format!("\"{}\"", snippet(&redact_secrets(body, &creds.secrets())))
}

/// The error for an answer the plugin cannot read: `plugin_error`, not retryable (the gateway may
/// have acted on the request), quoting the body.
pub fn unexpected(response: &HttpResponse, creds: &Credentials, what: &str) -> ProviderError {
    let mut e = ProviderError::new(
        ErrorCode::PluginError,
        format!("SendSMSGate answered {what} (HTTP {}): {}", response.status, quote(&response.body, creds)),
    );
    if !(200..300).contains(&response.status) {
        e.provider_code = Some(response.status.to_string());
    }
    e
}

/// A failure every operation reads the same way: an error sentence or an HTTP error status.
pub fn failure(response: &HttpResponse, creds: &Credentials) -> Option<(ProviderError, Scope)> {
    if let Some(row) = mapping::find_error(head(&response.body, SEARCH_LIMIT)) {
        return Some((mapping::error(row), row.scope));
    }
    if let Some(mut e) = http_status_error(response) {
        e.message = format!("SendSMSGate: {}: {}", e.message, quote(&response.body, creds));
        return Some((e, Scope::Request));
    }
    if !(200..300).contains(&response.status) {
        return Some((unexpected(response, creds, "an unexpected HTTP status"), Scope::Request));
    }
    None
}

/// The message ids of a successful send: comma-separated (spaces, `;` and line breaks tolerated),
/// digits only. `None` when the body is anything else.
pub fn parse_ids(body: &str) -> Option<Vec<String>> {
    let body = clean(body);
    let ids: Vec<String> = body
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = !ids.is_empty()
        && ids.iter().all(|id| id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_digit()));
    valid.then_some(ids)
}

/// The answer to a send: the message ids, or the error with the recipients it concerns.
///
/// A 2xx body that starts like ids but is not only ids (say `38421, Out of SMS`) is unreadable,
/// not an error sentence: the gateway may have sent some of it, so it must not be sent again.
pub fn send(response: &HttpResponse, creds: &Credentials) -> Result<Vec<String>, (ProviderError, Scope)> {
    let starts_with_id = clean(&response.body).starts_with(|c: char| c.is_ascii_digit());
    if (200..300).contains(&response.status) && starts_with_id {
        return parse_ids(&response.body).ok_or_else(|| {
            (unexpected(response, creds, "message ids mixed with something else"), Scope::Request)
        });
    }
    if let Some(failed) = failure(response, creds) {
        return Err(failed);
    }
    parse_ids(&response.body)
        .ok_or_else(|| (unexpected(response, creds, "neither message ids nor a known error"), Scope::Request))
}

/// The answer to a status query for one message id.
pub fn status(response: &HttpResponse, creds: &Credentials) -> Result<PartStatus, ProviderError> {
    if let Some((e, _)) = failure(response, creds) {
        return Err(e);
    }
    mapping::part_status(clean(&response.body))
        .ok_or_else(|| unexpected(response, creds, "an unknown status"))
}

/// The answer to a balance query, `1000 EUR UK:4600,Germany:3700,...`: the amount and the
/// currency (`credits` when the second word is not a currency code).
pub fn balance(response: &HttpResponse, creds: &Credentials) -> Result<(f64, String), ProviderError> {
    if let Some((e, _)) = failure(response, creds) {
        return Err(e);
    }
    let mut words = clean(&response.body).split_whitespace();
    let amount = words.next().and_then(parse_amount);
    let Some(amount) = amount else {
        return Err(unexpected(response, creds, "no balance"));
    };
    let currency = match words.next() {
        Some(w) if (1..=8).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_alphabetic()) => {
            w.to_ascii_uppercase()
        }
        _ => "credits".to_owned(),
    };
    Ok((amount, currency))
}

/// `1000`, `1000.50`, `-3.5`, and a decimal comma (`1000,50`).
fn parse_amount(word: &str) -> Option<f64> {
    let word = if word.contains('.') { word.replace(',', "") } else { word.replace(',', ".") };
    let looks_numeric = word.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+');
    let amount: f64 = if looks_numeric { word.parse().ok()? } else { return None };
    amount.is_finite().then_some(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_tolerate_spaces_and_line_breaks_but_nothing_else() {
        assert_eq!(parse_ids("38421"), Some(vec!["38421".into()]));
        assert_eq!(
            parse_ids("38421, 38422, 38425"),
            Some(vec!["38421".into(), "38422".into(), "38425".into()])
        );
        assert_eq!(parse_ids("\u{feff}38421,38422\r\n"), Some(vec!["38421".into(), "38422".into()]));
        assert_eq!(parse_ids(""), None);
        assert_eq!(parse_ids("38421, error"), None);
        assert_eq!(parse_ids("ERROR"), None);
        assert_eq!(parse_ids(&"1".repeat(33)), None);
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("1000"), Some(1000.0));
        assert_eq!(parse_amount("1000,50"), Some(1000.5));
        assert_eq!(parse_amount("1,000.50"), Some(1000.5));
        assert_eq!(parse_amount("-3.5"), Some(-3.5));
        assert_eq!(parse_amount("inf"), None);
        assert_eq!(parse_amount("NaN"), None);
        assert_eq!(parse_amount("UK:4600"), None);
    }

    #[test]
    fn head_cuts_at_a_character_boundary() {
        assert_eq!(head("ääää", 3), "ä");
        assert_eq!(head("abc", 10), "abc");
    }
}
