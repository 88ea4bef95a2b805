//! The JSON documents that cross the plugin boundary (ABI v1).
//!
//! Every document carries `"v": 1`. The host sends an [`OpInput`] and the plugin answers with an
//! [`OpOutput`]: either one HTTP exchange for the host to perform (`http` + `state`), or the
//! operation's result (`done`). After an exchange, the host calls the same operation again with the
//! same `input` plus the `exchange` (the plugin's `state` and the HTTP response), so the plugin keeps
//! no per-message state. Errors are answered with [`ErrorDoc`] and return code `NOTIFYD_ERROR`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version of the JSON documents; the `v` field of every document.
pub const WIRE_VERSION: u32 = 1;

/// Most HTTP exchanges the host performs for one operation; a plugin asking for more gets a
/// `plugin_error` (this stops a plugin that loops). Plugins that need one exchange per id size
/// `max_recipients`/`max_status_refs` to fit.
pub const MAX_EXCHANGES: usize = 16;

/// What a plugin says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Describe {
    pub v: u32,
    /// The plugin's name, e.g. `"smsc"` (the `plugin = "..."` value that finds it).
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// Most recipients one `send` call accepts; the host batches above it.
    pub max_recipients: u32,
    /// Most tracking references one `status` call accepts (0 when status is unsupported).
    #[serde(default)]
    pub max_status_refs: u32,
    /// Which texts the provider accepts: `"unicode"` (anything), `"gsm7"`, or `"latin"`.
    #[serde(default = "default_alphabet")]
    pub alphabet: String,
    /// The provider's production URL, used when the instance sets no `base_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_base_url: Option<String>,
}

fn default_alphabet() -> String {
    "unicode".to_owned()
}

/// The document `instance_new` receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInit {
    pub v: u32,
    /// The instance name from the config (`[[providers]] name`).
    pub name: String,
    /// The instance's `base_url`, when the config sets one (may carry a path prefix).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The instance's `[providers.settings]`, with `*_env` keys already resolved by the host
    /// (`password_env = "X"` arrives as `password = "<value of $X>"`).
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// The document every operation receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpInput<T> {
    pub v: u32,
    /// The operation's input; identical in every call of one operation.
    pub input: T,
    /// Absent in the first call; after an HTTP exchange, its state and response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Exchange>,
}

/// The result of an HTTP exchange that the plugin asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The `state` the plugin returned with the request, unchanged.
    pub state: String,
    pub response: HttpResponse,
}

/// An HTTP request the plugin asks the host to perform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute URL (built on the instance's base URL).
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// The HTTP response the host received. Non-2xx statuses are handed over too: classifying them
/// is the plugin's job. Transport failures (timeouts, refused connections) never reach the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced by U+FFFD), cut at the host's size limit.
    #[serde(default)]
    pub body: String,
}

/// What an operation answers.
///
/// Decoded through flat helper structs (here and in the result enums) rather than serde's
/// `flatten`/`untagged`, which buffer the document and build an error per variant tried: the
/// host decodes one of these per provider call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawOutput<T>")]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct OpOutput<T> {
    pub v: u32,
    #[serde(flatten)]
    pub step: Step<T>,
}

/// [`OpOutput`] as it may arrive: which fields are set decides the step.
#[derive(Deserialize)]
struct RawOutput<T> {
    v: u32,
    http: Option<HttpRequest>,
    state: Option<String>,
    done: Option<T>,
}

impl<T> TryFrom<RawOutput<T>> for OpOutput<T> {
    type Error = &'static str;

    fn try_from(raw: RawOutput<T>) -> Result<Self, Self::Error> {
        let step = match raw {
            RawOutput { http: Some(http), state: Some(state), .. } => Step::Http { http, state },
            RawOutput { done: Some(done), .. } => Step::Done { done },
            _ => return Err("the answer has neither `http` and `state` nor `done`"),
        };
        Ok(OpOutput { v: raw.v, step })
    }
}

/// Either an HTTP exchange to perform or the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step<T> {
    /// Perform this request and call again with `state` and the response.
    Http { http: HttpRequest, state: String },
    /// The operation's result.
    Done { done: T },
}

/// An error document (return code `NOTIFYD_ERROR`): bad settings, malformed input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDoc {
    pub v: u32,
    pub error: ProviderError,
}

/// The normalised error codes (SPEC §2); `ProviderError::code` is one of them.
pub const ERROR_CODES: &[&str] = &[
    "invalid_request",
    "invalid_recipient",
    "blocked_recipient",
    "invalid_sender",
    "content_rejected",
    "auth",
    "insufficient_funds",
    "throttled",
    "duplicate",
    "unavailable",
    "timeout",
    "route_closed",
    "expired",
    "plugin_error",
    "internal",
];

/// A classified error: the normalised code, a sentence for people, and the provider's own code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderError {
    /// One of the normalised error codes (`invalid_recipient`, `auth`, `throttled`, ...).
    pub code: String,
    /// A sentence for people. Never contains credentials.
    pub message: String,
    /// The provider's own code or word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// Whether the same provider may succeed later (throttled, unavailable, timeout).
    #[serde(default)]
    pub retryable: bool,
    /// How long to wait before retrying, when the provider said so (`Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ProviderError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            provider_code: None,
            retryable: false,
            retry_after_ms: None,
        }
    }

    /// A retryable error (`retryable = true`).
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self { retryable: true, ..Self::new(code, message) }
    }

    pub fn with_provider_code(mut self, code: impl Into<String>) -> Self {
        self.provider_code = Some(code.into());
        self
    }
}

/// The input of `send`: one text to one or more recipients (at most `max_recipients`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendInput {
    /// The request id (the idempotency key); plugins may pass it to providers that take a client id.
    pub id: String,
    /// Recipients in normal form: digits only, international, no `+`.
    pub to: Vec<String>,
    pub text: String,
    /// The sender id: the request's `from`, else the instance's `sender`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `"gsm7"` or `"ucs2"`, as detected by the host.
    pub encoding: String,
    /// Segments per recipient, as counted by the host.
    pub segments: u32,
    /// RFC 3339; present only for plugins with the schedule capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
}

/// The result of `send`: one entry per recipient, or one error for all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "RawSendResult")]
pub enum SendResult {
    Recipients { recipients: Vec<RecipientResult> },
    Failed { error: ProviderError },
}

/// [`SendResult`] as it may arrive.
#[derive(Deserialize)]
struct RawSendResult {
    recipients: Option<Vec<RecipientResult>>,
    error: Option<ProviderError>,
}

impl TryFrom<RawSendResult> for SendResult {
    type Error = &'static str;

    fn try_from(raw: RawSendResult) -> Result<Self, Self::Error> {
        match raw {
            RawSendResult { recipients: Some(recipients), .. } => Ok(SendResult::Recipients { recipients }),
            RawSendResult { error: Some(error), .. } => Ok(SendResult::Failed { error }),
            _ => Err("a send result has neither `recipients` nor `error`"),
        }
    }
}

/// The outcome for one recipient of a `send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientResult {
    /// The recipient as given in [`SendInput::to`].
    pub to: String,
    /// Set when the provider accepted the message for this recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// Opaque reference that the host hands back to `status` (defaults to the message id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<String>,
    /// Set when the provider did not accept it; the host decides what follows from the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProviderError>,
}

impl RecipientResult {
    pub fn sent(to: impl Into<String>, provider_message_id: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            provider_message_id: Some(provider_message_id.into()),
            tracking: None,
            error: None,
        }
    }

    pub fn failed(to: impl Into<String>, error: ProviderError) -> Self {
        Self { to: to.into(), provider_message_id: None, tracking: None, error: Some(error) }
    }
}

/// The input of `status`: a batch of tracking references (at most `max_status_refs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInput {
    pub refs: Vec<String>,
}

/// The result of `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "RawStatusResult")]
pub enum StatusResult {
    Statuses { statuses: Vec<StatusUpdate> },
    Failed { error: ProviderError },
}

/// [`StatusResult`] as it may arrive.
#[derive(Deserialize)]
struct RawStatusResult {
    statuses: Option<Vec<StatusUpdate>>,
    error: Option<ProviderError>,
}

impl TryFrom<RawStatusResult> for StatusResult {
    type Error = &'static str;

    fn try_from(raw: RawStatusResult) -> Result<Self, Self::Error> {
        match raw {
            RawStatusResult { statuses: Some(statuses), .. } => Ok(StatusResult::Statuses { statuses }),
            RawStatusResult { error: Some(error), .. } => Ok(StatusResult::Failed { error }),
            _ => Err("a status result has neither `statuses` nor `error`"),
        }
    }
}

/// A delivery status for one tracking reference (status) or one message (callback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The tracking reference (`status`); for `callback`, the provider message id.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The recipient, when the provider names it (callbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `sent` (still pending), `delivered`, `undelivered`, `expired`, `rejected` or `unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProviderError>,
}

/// The result of `balance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BalanceResult {
    Balance { amount: f64, currency: String },
    Failed { error: ProviderError },
}

/// The input of `callback`: the HTTP request a provider pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackInput {
    pub method: String,
    /// The path after `/callbacks/<instance>`.
    pub path: String,
    /// The raw query string, without `?`.
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

/// The result of `callback`: status updates, and what to answer the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackResult {
    pub updates: Vec<StatusUpdate>,
    /// The HTTP status to answer once the updates are recorded (default 200).
    #[serde(default = "default_callback_status")]
    pub response_status: u16,
    #[serde(default)]
    pub response_body: String,
}

fn default_callback_status() -> u16 {
    200
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(doc: &str) -> Result<OpOutput<SendResult>, String> {
        serde_json::from_str(doc).map_err(|e| e.to_string())
    }

    #[test]
    fn answers_decode_to_their_step() {
        let http =
            output(r#"{"v":1,"http":{"method":"POST","url":"https://x/send","body":"a=1"},"state":"send"}"#)
                .unwrap();
        match http.step {
            Step::Http { http, state } => {
                assert_eq!((http.url.as_str(), state.as_str()), ("https://x/send", "send"))
            }
            other => panic!("{other:?}"),
        }
        let done =
            output(r#"{"v":1,"done":{"recipients":[{"to":"49151","provider_message_id":"7"}]}}"#).unwrap();
        assert_eq!(
            done.step,
            Step::Done {
                done: SendResult::Recipients { recipients: vec![RecipientResult::sent("49151", "7")] }
            }
        );
        let failed = output(r#"{"v":1,"done":{"error":{"code":"auth","message":"no"}}}"#).unwrap();
        assert!(
            matches!(failed.step, Step::Done { done: SendResult::Failed { error } } if error.code == "auth")
        );
    }

    #[test]
    fn malformed_answers_say_what_is_missing() {
        assert!(output(r#"{"v":1}"#).unwrap_err().contains("neither `http` and `state` nor `done`"));
        assert!(output(r#"{"v":1,"http":{"method":"GET","url":"u"}}"#).is_err(), "http without state");
        assert!(output(r#"{"v":1,"done":{}}"#).unwrap_err().contains("neither `recipients` nor `error`"));
        assert!(output(r#"{"v":1,"done":{"recipients":7}}"#).unwrap_err().contains("invalid type"));
        let status: Result<StatusResult, _> = serde_json::from_str(r#"{"recipients":[]}"#);
        assert!(status.is_err(), "a status result needs `statuses`");
    }

    #[test]
    fn results_encode_as_before() {
        let r = SendResult::Failed { error: ProviderError::new("auth", "no") };
        let json = serde_json::to_string(&OpOutput { v: 1, step: Step::Done { done: r } }).unwrap();
        assert!(json.starts_with(r#"{"v":1,"done":{"error":{"code":"auth""#), "{json}");
    }
}
