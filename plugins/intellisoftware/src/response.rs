//! Parsing the gateway's answers (send, balance) and its pushed delivery reports (callback) into
//! notifyd's results, through the table in `mapping.rs`.
//!
//! A send answer is plain text, either one line for the whole submission (`ID:<id>`,
//! `ERR:<CODE>`) or one line per recipient (`<number>,ID:<id>` / `<number>,ERR:<CODE>`), the same
//! id on every line. The numbers in the answer are the gateway's rewriting of the request's
//! (country code added, duplicates removed, a leading `+` or `00`), so both sides are normalised
//! before they are matched. Nothing here panics or trusts the body's size: an answer that is not
//! one of these forms becomes an error that quotes a short snippet with the credentials masked.

use crate::mapping;
use notifyd_plugin::sdk::{http_status_error, redact_secrets, retry_after_ms, snippet};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{
    BalanceResult, CallbackInput, CallbackResult, HttpResponse, ProviderError, RecipientResult, SendInput,
    SendResult, StatusUpdate,
};

/// Longest message id or error word accepted; a longer token is not an answer.
const MAX_TOKEN: usize = 64;

/// What the gateway says about a submission or one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `ID:<id>`: accepted, with the submission's message id.
    Id(String),
    /// `ERR:<CODE>`: refused, with the provider's word.
    Err(String),
}

/// One line of a multi-recipient answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The number as the gateway wrote it, normalised ([`normalise_number`]).
    pub number: String,
    pub outcome: Outcome,
}

/// A send answer that follows the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A single line for the whole submission (one recipient, or the whole submission failed).
    Whole(Outcome),
    /// One line per recipient.
    Lines(Vec<Line>),
}

/// Reads `ID:<id>` or `ERR:<CODE>` (prefix in any case; spaces after the colon allowed, as some
/// answers have them; anything after the first space-separated token ignored).
pub fn parse_outcome(text: &str) -> Option<Outcome> {
    let text = text.trim();
    let rest = |prefix: &str| {
        text.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| text[prefix.len()..].split_whitespace().next().unwrap_or_default())
    };
    if let Some(id) = rest("ID:") {
        let ok = (1..=MAX_TOKEN).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        return ok.then(|| Outcome::Id(id.to_owned()));
    }
    if let Some(word) = rest("ERR:") {
        let ok = (1..=MAX_TOKEN).contains(&word.len())
            && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        return ok.then(|| Outcome::Err(word.to_owned()));
    }
    None
}

/// A phone number as the gateway may write it (`447700900123`, `+447700900123`,
/// `00447700900123`, with spaces, dashes, dots or parentheses) in notifyd's normal form: digits
/// only, without a leading `00`. `None` when it is not a number at all.
pub fn normalise_number(text: &str) -> Option<String> {
    let text = text.trim();
    if !text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b' ' | b'-' | b'.' | b'(' | b')')) {
        return None;
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.strip_prefix("00").map(str::to_owned).unwrap_or(digits);
    (!digits.is_empty() && digits.len() <= 32).then_some(digits)
}

/// Reads a send answer. Per-recipient lines win; lines that are not well formed (a cut last line,
/// a trailing remark) are skipped; without any such line, the first line must be a whole-
/// submission answer. `None` for anything else (empty, HTML, garbage).
pub fn parse_answer(body: &str) -> Option<Answer> {
    let body = body.trim_start_matches('\u{feff}');
    let mut first = None;
    let mut lines = Vec::new();
    for line in body.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()) {
        first.get_or_insert(line);
        if let Some((number, outcome)) = line.split_once(',') {
            if let (Some(number), Some(outcome)) = (normalise_number(number), parse_outcome(outcome)) {
                lines.push(Line { number, outcome });
            }
        }
    }
    if !lines.is_empty() {
        return Some(Answer::Lines(lines));
    }
    first.and_then(parse_outcome).map(Answer::Whole)
}

/// The result of a send, from the gateway's HTTP answer. `secrets` are masked in any quote of
/// the body.
pub fn send_result(input: &SendInput, response: &HttpResponse, secrets: &[&str]) -> SendResult {
    if response.status == 429 {
        return SendResult::Failed { error: throttled(response) };
    }
    match parse_answer(&response.body) {
        Some(Answer::Whole(Outcome::Id(id))) => {
            SendResult::Recipients { recipients: input.to.iter().map(|to| sent(to, &id)).collect() }
        }
        Some(Answer::Whole(Outcome::Err(word))) => SendResult::Failed { error: refused(&word, response) },
        Some(Answer::Lines(lines)) => {
            let matched = match_lines(&input.to, &lines);
            let recipients = input
                .to
                .iter()
                .zip(matched)
                .map(|(to, outcome)| match outcome {
                    Some(Outcome::Id(id)) => sent(to, id),
                    Some(Outcome::Err(word)) => RecipientResult::failed(to, refused(word, response)),
                    None => RecipientResult::failed(
                        to,
                        ProviderError::new(
                            ErrorCode::PluginError,
                            "the gateway's answer has no line for this recipient; it may or may not \
                             have been sent",
                        ),
                    ),
                })
                .collect();
            SendResult::Recipients { recipients }
        }
        None => SendResult::Failed { error: unreadable(response, secrets) },
    }
}

fn sent(to: &str, id: &str) -> RecipientResult {
    // One id per submission: the callback's `msgid` plus `toaddr` find the recipient.
    RecipientResult { tracking: Some(id.to_owned()), ..RecipientResult::sent(to, id) }
}

/// The error of an `ERR:<word>`; a retryable one honours `Retry-After`.
fn refused(word: &str, response: &HttpResponse) -> ProviderError {
    let mut error = mapping::error_for(word);
    if error.retryable {
        error.retry_after_ms = retry_after_ms(response);
    }
    error
}

/// HTTP 429: the gateway documents no throttling answer of its own, so the HTTP status is read
/// the usual way: `throttled`, retryable, after `Retry-After` when given.
fn throttled(response: &HttpResponse) -> ProviderError {
    http_status_error(response).unwrap_or_else(|| ProviderError::retryable(ErrorCode::Throttled, "HTTP 429"))
}

/// Which answer line belongs to which recipient (by position in `to`).
///
/// First exact matches of the normalised numbers (a line may serve several recipients: the
/// gateway removes duplicates). Then, for recipients still without a line, a line whose number
/// ends with the recipient's (or the other way round, a leading trunk `0` ignored, at least 7
/// digits in common), when that pairing is unique on both sides: the gateway may add a country
/// code to a number. A recipient without a line gets `None`.
pub fn match_lines<'a>(to: &[String], lines: &'a [Line]) -> Vec<Option<&'a Outcome>> {
    let mut used = vec![false; lines.len()];
    let mut matched: Vec<Option<&Outcome>> = to
        .iter()
        .map(|number| {
            let i = lines.iter().position(|l| l.number == *number)?;
            used[i] = true;
            Some(&lines[i].outcome)
        })
        .collect();
    let candidates = |number: &str| -> Vec<usize> {
        (0..lines.len()).filter(|&i| !used[i] && same_subscriber(number, &lines[i].number)).collect()
    };
    let open: Vec<usize> = (0..to.len()).filter(|&r| matched[r].is_none()).collect();
    for &r in &open {
        if let [i] = candidates(&to[r])[..] {
            let rivals = open.iter().filter(|&&o| same_subscriber(&to[o], &lines[i].number)).count();
            if rivals == 1 {
                matched[r] = Some(&lines[i].outcome);
            }
        }
    }
    matched
}

/// Whether two normalised numbers differ only by a prefix (a country code) on one side.
fn same_subscriber(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let short = short.trim_start_matches('0');
    short.len() >= 7 && long.ends_with(short)
}

/// The error for an answer that is not one of the documented forms: the HTTP status's usual
/// meaning (401/403 `auth`, 5xx `unavailable`...) where it has one, else `plugin_error` (the
/// gateway may have acted on the request, so it is not resent); always with a masked snippet.
pub fn unreadable(response: &HttpResponse, secrets: &[&str]) -> ProviderError {
    let quoted = quote(&response.body, secrets);
    match http_status_error(response) {
        Some(mut error) => {
            error.message = format!("{}: {quoted}", error.message);
            error
        }
        None => ProviderError::new(
            ErrorCode::PluginError,
            format!("unexpected answer from the gateway (HTTP {}): {quoted}", response.status),
        ),
    }
}

/// A short single-line excerpt of `body` (at most 64 characters) with every secret, also in its
/// percent-encoded forms, replaced by `***`.
pub fn quote(body: &str, secrets: &[&str]) -> String {
    let body = body.trim_start_matches('\u{feff}');
    if body.trim().is_empty() {
        return "an empty body".to_owned();
    }
    snippet(&redact_secrets(body, secrets))
}

/// The result of a balance query: `BALANCE:<credits>`, or an `ERR:` answer.
pub fn balance_result(response: &HttpResponse, secrets: &[&str]) -> BalanceResult {
    if response.status == 429 {
        return BalanceResult::Failed { error: throttled(response) };
    }
    let body = response.body.trim_start_matches('\u{feff}').trim();
    let first = body.split(['\n', '\r']).next().unwrap_or_default().trim();
    let amount = first
        .get(.."BALANCE:".len())
        .filter(|p| p.eq_ignore_ascii_case("BALANCE:"))
        .and_then(|_| first["BALANCE:".len()..].split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.is_finite());
    if let Some(amount) = amount {
        return BalanceResult::Balance { amount, currency: "credits".to_owned() };
    }
    match parse_outcome(first) {
        Some(Outcome::Err(word)) => BalanceResult::Failed { error: refused(&word, response) },
        _ => BalanceResult::Failed { error: unreadable(response, secrets) },
    }
}

/// A pushed delivery report: form fields `msgid`, `status` (numeric code) and `toaddr`, in the
/// body (the gateway POSTs them) or the query string. One report, one update: `ref` = `msgid`,
/// `to` = `toaddr` in normal form. Answered 200 (the gateway repeats a report every 5 minutes
/// until it gets one). A report without a usable `msgid` or with a non-numeric `status` is an
/// error (the host answers 400).
pub fn delivery_report(input: &CallbackInput) -> Result<CallbackResult, ProviderError> {
    let fields: Vec<(String, String)> = form_pairs(&input.body).chain(form_pairs(&input.query)).collect();
    let field =
        |name: &str| fields.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
    let garbage = |why: &str| {
        ProviderError::new(
            ErrorCode::InvalidRequest,
            format!("not an IntelliSoftware delivery report: {why}"),
        )
    };
    let msgid = field("msgid").ok_or_else(|| garbage("no msgid field"))?;
    let id_ok = (1..=MAX_TOKEN).contains(&msgid.len())
        && msgid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !id_ok {
        return Err(garbage("the msgid field is not a message id"));
    }
    let code: i64 = field("status")
        .ok_or_else(|| garbage("no status field"))?
        .parse()
        .map_err(|_| garbage("the status field is not a number"))?;
    let rule = u32::try_from(code).map_or(mapping::UNKNOWN_REPORT, mapping::report_rule);
    let error = rule.error.map(|c| ProviderError {
        provider_code: Some(code.to_string()),
        ..ProviderError::new(c, format!("the gateway reported status {code} ({})", rule.name))
    });
    let update = StatusUpdate {
        reference: msgid.to_owned(),
        to: field("toaddr").and_then(normalise_number),
        status: rule.status.into(),
        error,
    };
    Ok(CallbackResult { updates: vec![update], response_status: 200, response_body: "OK".to_owned() })
}

/// The decoded `key=value` pairs of a form-encoded string (`+` is a space, `%XX` a byte; a
/// malformed escape stays as it is; invalid UTF-8 becomes U+FFFD).
pub fn form_pairs(encoded: &str) -> impl Iterator<Item = (String, String)> + '_ {
    encoded.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k), form_decode(v))
    })
}

fn form_decode(encoded: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16)).map(|d| d as u8);
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
