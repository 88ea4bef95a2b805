//! The smsco.ge provider plugin (Georgia, `plugin = "smscoge"`).
//!
//! It translates notifyd's operations into smsco.ge's HTTP API (plain-text answers over `GET`
//! requests, see `plugins/smscoge/README.md` and the provider's own document): `send` one text to
//! up to 100 numbers in one submission (one message id for all of them), natively scheduled when
//! the request has `send_at`; `status` by polling each message id; `balance`. Texts are checked
//! against the only alphabet the gateway accepts (Latin letters, digits, space, newline and
//! `. _ - "`) before anything is sent, and transliterated first when the instance says so. Like
//! every notifyd plugin it does no I/O itself: the host performs the exchanges it describes.
#![forbid(unsafe_code)]

pub mod mapping;
pub mod request;
pub mod response;

#[cfg(test)]
mod tests;

use notifyd_plugin::abi::{CAP_BALANCE, CAP_SCHEDULE, CAP_SEND, CAP_STATUS};
use notifyd_plugin::sdk::{
    Credentials, OpResult, Provider, expect_state, foreign_state, invalid_settings, now_unix,
    parse_settings_with_credentials,
};
use notifyd_plugin::wire::{
    BalanceResult, Describe, Exchange, InstanceInit, MAX_EXCHANGES, ProviderError, RecipientResult,
    SendInput, SendResult, StatusInput, StatusResult, StatusUpdate, Step,
};
use notifyd_plugin::wire::{ErrorCode, Status};
use response::StatusAnswer;
use serde::Deserialize;

/// The production URL, as the API document gives it (plain HTTP; see the README).
pub const DEFAULT_BASE_URL: &str = "http://smsco.ge";

/// Most numbers in one submission. The document names no limit; 100 keeps the `GET` URL short
/// (about 1.4 kB of numbers) and bounds what one whole-submission answer can affect.
pub const MAX_RECIPIENTS: u32 = 100;

/// Most tracking references in one `status` call (16). smsco.ge answers one message id per
/// request, and the host allows [`MAX_EXCHANGES`] HTTP exchanges per operation, so a batch may hold
/// at most that many distinct ids; references sharing an id (the recipients of one submission)
/// need one request together.
pub const MAX_STATUS_REFS: u32 = MAX_EXCHANGES as u32;

/// The `state` of a send exchange.
const SEND_STATE: &str = "send";
/// The `state` of a balance exchange.
const BALANCE_STATE: &str = "balance";
/// The prefix of a status exchange's `state`; the answers so far follow, one character per
/// message id queried: the status digit, or `x` for an answer that leaves it unchanged.
const STATUS_STATE: &str = "status:";

/// The instance's `[providers.settings]` besides the account's `username` and `password`, which
/// [`Credentials`] reads (both required and non-empty; the password usually given as
/// `password_env`, which the host resolves). `base_url` is not a setting: it comes from the
/// provider block (default [`DEFAULT_BASE_URL`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Transliterate texts to Latin (Georgian, Cyrillic, accented letters, typographic signs)
    /// before checking them against the gateway's alphabet. Default `false`: a text with any
    /// other character is refused with `content_rejected`.
    #[serde(default)]
    transliterate: bool,
    /// The query parameter that carries the sender id. The document does not name it; default
    /// `"sender"`. `""` never sends a sender id (the account's agreed one is used).
    #[serde(default = "default_sender_param")]
    sender_param: String,
    /// The UTC offset of the gateway's `schedule` times, `+HH:MM`. The document does not say;
    /// default `"+04:00"` (Asia/Tbilisi, which has had no daylight saving time since 2005).
    #[serde(default = "default_schedule_utc_offset")]
    schedule_utc_offset: String,
}

fn default_sender_param() -> String {
    "sender".to_owned()
}

fn default_schedule_utc_offset() -> String {
    "+04:00".to_owned()
}

/// Parameter names the plugin sends itself, which `sender_param` may not take.
const RESERVED_PARAMS: &[&str] =
    &["username", "password", "recipient", "message", "schedule", "balance", "mes_id"];

/// One smsco.ge instance. It does not change after [`Provider::new`], so many threads may use it.
#[derive(Debug)]
pub struct Smscoge {
    base_url: String,
    creds: Credentials,
    transliterate: bool,
    /// `None` when the sender id is never sent.
    sender_param: Option<String>,
    /// Minutes east of UTC of the `schedule` parameter.
    schedule_offset_minutes: i32,
}

fn plugin_error(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorCode::PluginError, message)
}

/// Whether `url` can serve as a base URL: absolute `http(s)://` with a host, no query or fragment
/// (the documented paths and the query are appended to it).
fn valid_base_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#']) && !r.contains(char::is_whitespace)
    })
}

/// The tracking reference of a recipient: `<mes_id>:<number>`. The id alone is shared by every
/// recipient of a submission, and the host keys status answers by reference, so the number makes
/// each recipient's reference its own.
pub fn tracking_ref(mes_id: &str, to: &str) -> String {
    format!("{mes_id}:{to}")
}

/// The message id of a tracking reference (`<mes_id>:<number>`, or a bare `<mes_id>`).
pub fn ref_mes_id(reference: &str) -> Option<&str> {
    let id = match reference.split_once(':') {
        Some((id, to)) if request::valid_recipient(to) => id,
        Some(_) => return None,
        None => reference,
    };
    response::valid_mes_id(id).then_some(id)
}

impl Smscoge {
    /// What must never appear in an error message: the password (a provider's error page may echo
    /// the request's query string).
    fn secrets(&self) -> [&str; 1] {
        [self.creds.password.expose()]
    }

    /// Rejects every recipient with `error`.
    fn all_failed(input: &SendInput, error: ProviderError) -> SendResult {
        SendResult::Recipients {
            recipients: input.to.iter().map(|to| RecipientResult::failed(to, error.clone())).collect(),
        }
    }

    /// The first call of `send`: checks, then the request (or the result, when nothing can go).
    fn send_request(&self, input: &SendInput) -> OpResult<SendResult> {
        let prepared = request::prepare_text(&input.text, self.transliterate)
            .and_then(|text| request::check_sender(input.from.as_deref()).map(|()| text))
            .and_then(|text| {
                let schedule = match &input.send_at {
                    Some(at) => request::schedule(at, self.schedule_offset_minutes, now_unix())?,
                    None => None,
                };
                Ok((text, schedule))
            });
        let (text, schedule) = match prepared {
            Ok(p) => p,
            Err(error) => return Ok(Step::done(SendResult::Failed { error })),
        };
        let recipients: Vec<&str> =
            input.to.iter().map(String::as_str).filter(|to| request::valid_recipient(to)).collect();
        if recipients.is_empty() {
            return Ok(Step::done(Self::all_failed(input, not_a_number())));
        }
        let submission = request::Submission { recipients, text, sender: input.from.as_deref(), schedule };
        Ok(Step::http(request::send(self, &submission), SEND_STATE))
    }

    /// The second call of `send`: the gateway's answer, per recipient.
    fn send_result(&self, input: &SendInput, response: &notifyd_plugin::wire::HttpResponse) -> SendResult {
        let outcome = response::send(response, &self.secrets()).into_result(response);
        let recipients = input
            .to
            .iter()
            .map(|to| {
                if !request::valid_recipient(to) {
                    return RecipientResult::failed(to, not_a_number());
                }
                match &outcome {
                    // One id for the whole submission: every number shares it.
                    Ok(accepted) => RecipientResult {
                        tracking: Some(tracking_ref(&accepted.mes_id, to)),
                        ..RecipientResult::sent(to, &accepted.mes_id)
                    },
                    Err(e) => RecipientResult::failed(to, e.clone()),
                }
            })
            .collect();
        SendResult::Recipients { recipients }
    }

    /// The status result once every message id has been asked (or the batch stopped).
    fn statuses(refs: &[String], ids: &[&str], answers: &str) -> StatusResult {
        let statuses = refs
            .iter()
            .map(|reference| {
                let Some(id) = ref_mes_id(reference) else {
                    // Not a reference this plugin made: it can never be answered.
                    return StatusUpdate {
                        reference: reference.clone(),
                        to: None,
                        status: Status::Unknown.into(),
                        error: Some(plugin_error("not a smsco.ge tracking reference")),
                    };
                };
                let row = ids
                    .iter()
                    .position(|i| *i == id)
                    .and_then(|n| answers.as_bytes().get(n))
                    .filter(|c| c.is_ascii_digit())
                    .and_then(|c| mapping::status_row(c - b'0'));
                StatusUpdate {
                    reference: reference.clone(),
                    to: None,
                    status: row.map_or(Status::Sent, |r| r.status).into(),
                    error: row.and_then(mapping::status_error),
                }
            })
            .collect();
        StatusResult::Statuses { statuses }
    }
}

/// The error of a recipient that is not a number in normal form (the host sends only those).
fn not_a_number() -> ProviderError {
    ProviderError::new(ErrorCode::InvalidRecipient, "not an international number of 8 to 15 digits")
}

impl Provider for Smscoge {
    const CAPABILITIES: u64 = CAP_SEND | CAP_STATUS | CAP_BALANCE | CAP_SCHEDULE;

    fn describe() -> Describe {
        Describe::new("smscoge", env!("CARGO_PKG_VERSION"), MAX_RECIPIENTS)
            .with_max_status_refs(MAX_STATUS_REFS)
            .with_alphabet("latin")
            .with_default_base_url(DEFAULT_BASE_URL)
    }

    fn new(init: InstanceInit) -> Result<Self, ProviderError> {
        let (creds, s) = parse_settings_with_credentials::<Settings>(&init)?;
        let sender_param = match s.sender_param.as_str() {
            "" => None,
            p if RESERVED_PARAMS.contains(&p) => {
                return Err(invalid_settings(
                    &init,
                    &format!("`sender_param` may not be `{p}`, which the plugin sends itself"),
                ));
            }
            p if p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => Some(p.to_owned()),
            _ => {
                return Err(invalid_settings(
                    &init,
                    "`sender_param` must be a parameter name (letters, digits, `_`) or \"\"",
                ));
            }
        };
        let Some(schedule_offset_minutes) = request::parse_offset(&s.schedule_utc_offset) else {
            return Err(invalid_settings(&init, "`schedule_utc_offset` must look like \"+04:00\""));
        };
        let base_url = init.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        if !valid_base_url(&base_url) {
            return Err(invalid_settings(
                &init,
                "`base_url` must be an absolute http:// or https:// URL without a query",
            ));
        }
        Ok(Smscoge { base_url, creds, transliterate: s.transliterate, sender_param, schedule_offset_minutes })
    }

    fn send(&self, input: &SendInput, exchange: Option<&Exchange>) -> OpResult<SendResult> {
        if input.to.is_empty() || input.to.len() > MAX_RECIPIENTS as usize {
            return Err(plugin_error(format!(
                "send takes 1 to {MAX_RECIPIENTS} recipients, not {}",
                input.to.len()
            )));
        }
        match exchange {
            None => self.send_request(input),
            Some(ex) => {
                expect_state("send", ex, SEND_STATE)?;
                Ok(Step::done(self.send_result(input, ex.response()?)))
            }
        }
    }

    fn status(&self, input: &StatusInput, exchange: Option<&Exchange>) -> OpResult<StatusResult> {
        // Each message id is asked once, however many recipients share it, in order of appearance.
        let mut ids: Vec<&str> = Vec::new();
        for id in input.refs.iter().filter_map(|r| ref_mes_id(r)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        // Beyond what the host lets one operation exchange, ids stay unchanged until the next poll.
        ids.truncate(MAX_STATUS_REFS as usize);
        let mut answers = match exchange {
            None => String::new(),
            Some(ex) => {
                let answers = ex
                    .state
                    .strip_prefix(STATUS_STATE)
                    .filter(|a| {
                        a.len() < ids.len() && a.bytes().all(|c| c == b'x' || (b'0'..=b'7').contains(&c))
                    })
                    .ok_or_else(|| foreign_state("status", ex))?;
                let mut answers = answers.to_owned();
                match response::status(ex.response()?, &self.secrets()) {
                    Ok(StatusAnswer::Known(row)) => answers.push(char::from(b'0' + row.code)),
                    Ok(StatusAnswer::Unchanged) => answers.push('x'),
                    // Bad credentials, gateway down, throttled: stop asking; the ids asked so far
                    // keep their answers, the rest are asked again at the next poll.
                    Err(error) if answers.is_empty() => {
                        return Ok(Step::done(StatusResult::Failed { error }));
                    }
                    Err(_) => return Ok(Step::done(Self::statuses(&input.refs, &ids, &answers))),
                }
                answers
            }
        };
        match ids.get(answers.len()) {
            Some(id) => {
                let http = request::status(self, id);
                answers.insert_str(0, STATUS_STATE);
                Ok(Step::http(http, answers))
            }
            None => Ok(Step::done(Self::statuses(&input.refs, &ids, &answers))),
        }
    }

    fn balance(&self, _input: &serde_json::Value, exchange: Option<&Exchange>) -> OpResult<BalanceResult> {
        match exchange {
            None => Ok(Step::http(request::balance(self), BALANCE_STATE)),
            Some(ex) => {
                expect_state("balance", ex, BALANCE_STATE)?;
                Ok(Step::done(match response::balance(ex.response()?, &self.secrets()) {
                    // The document does not say in which unit the balance is (the send answer
                    // counts tetri): reported as credits.
                    Ok(amount) => BalanceResult::Balance { amount, currency: "credits".to_owned() },
                    Err(error) => BalanceResult::Failed { error },
                }))
            }
        }
    }
}

notifyd_plugin::export_plugin!(Smscoge);
