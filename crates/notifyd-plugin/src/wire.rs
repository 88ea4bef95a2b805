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
    /// ABI 1.1: call the operation again when an exchange fails in transport, with
    /// [`Exchange::error`] instead of a response, rather than ending it with the transport error.
    /// A plugin that sends recipients one exchange at a time uses it to answer the recipients it
    /// already sent (docs/plugin-authors.md, "Partial sends"). Honoured only for plugins built
    /// against ABI 1.1 or later.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exchange_errors: bool,
    /// ABI 1.1: give [`HttpResponse::json`], the response body already parsed, when it is JSON.
    /// Honoured only for plugins built against ABI 1.1 or later.
    #[serde(default, skip_serializing_if = "is_false")]
    pub response_json: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
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
    /// ABI 1.1: the ABI minor the host speaks; absent from a 1.0 host. A plugin that needs 1.1
    /// (its request helpers, `exchange_errors`) refuses the settings when it is absent, rather
    /// than have a 1.0 host ignore what it asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi_minor: Option<u16>,
}

impl InstanceInit {
    /// The document this host writes for an instance: `abi_minor` is its own.
    pub fn new(
        name: impl Into<String>,
        base_url: Option<String>,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        InstanceInit {
            v: WIRE_VERSION,
            name: name.into(),
            base_url,
            settings,
            abi_minor: Some(crate::abi::ABI_MINOR),
        }
    }
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

/// The bytes of the document an operation receives, exactly as the host writes them: `{"v":1,
/// "input":…}` in the first call (no `exchange` key at all, never `"exchange":null`), then
/// `{"v":1,"input":…,"exchange":{…}}` after each HTTP exchange, with the same input bytes. The
/// input is encoded once: every call of one operation repeats it.
///
/// The shape is the one [`OpInput`] serialises to; `include/notifyd_plugin.schema.json`
/// (`#/$defs/send_call`, ...) describes it, and the schema test validates these bytes.
#[derive(Debug, Clone)]
pub struct CallDocument {
    bytes: Vec<u8>,
    /// Where the input ends: an exchange is written from here.
    head: usize,
}

impl CallDocument {
    /// The first call's document for `input`.
    pub fn new<I: Serialize + ?Sized>(input: &I) -> serde_json::Result<CallDocument> {
        let mut bytes = Vec::with_capacity(1024);
        bytes.extend_from_slice(format!(r#"{{"v":{WIRE_VERSION},"input":"#).as_bytes());
        serde_json::to_writer(&mut bytes, input)?;
        let head = bytes.len();
        bytes.push(b'}');
        Ok(CallDocument { bytes, head })
    }

    /// Replaces the exchange (or adds the first one): the next call's document.
    pub fn set_exchange(&mut self, exchange: &Exchange) -> serde_json::Result<()> {
        self.bytes.truncate(self.head);
        self.bytes.extend_from_slice(br#","exchange":"#);
        let written = serde_json::to_writer(&mut self.bytes, exchange);
        if written.is_err() {
            self.bytes.truncate(self.head);
        }
        self.bytes.push(b'}');
        written
    }

    /// The document as it is passed to the plugin.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The result of an HTTP exchange that the plugin asked for: the response, or (ABI 1.1, for a
/// plugin that declares [`Describe::exchange_errors`]) the transport error that left none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The `state` the plugin returned with the request, unchanged.
    pub state: String,
    /// The provider's answer; absent exactly when `error` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
    /// Why the exchange produced no response (a timeout, a refused or broken connection), with
    /// the code the host would have given it (`timeout` or `unavailable`, retryable). Only ever
    /// sent to a plugin that declares [`Describe::exchange_errors`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProviderError>,
}

impl Exchange {
    /// The exchange of a response.
    pub fn answered(state: impl Into<String>, response: HttpResponse) -> Self {
        Exchange { state: state.into(), response: Some(response), error: None }
    }

    /// The exchange of a transport error.
    pub fn failed(state: impl Into<String>, error: ProviderError) -> Self {
        Exchange { state: state.into(), response: None, error: Some(error) }
    }

    /// The response, or the transport error as an error (what a plugin that does not handle
    /// transport errors itself answers with `?`).
    pub fn response(&self) -> Result<&HttpResponse, ProviderError> {
        match (&self.response, &self.error) {
            (Some(response), _) => Ok(response),
            (None, Some(error)) => Err(error.clone()),
            (None, None) => {
                Err(ProviderError::new(ErrorCode::PluginError, "the exchange carries no response"))
            }
        }
    }
}

/// An HTTP request the plugin asks the host to perform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute URL (built on the instance's base URL).
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// ABI 1.1: query parameters the host appends to `url`, percent-encoded
    /// (`application/x-www-form-urlencoded`), in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    /// ABI 1.1: form fields the host encodes as the body (`application/x-www-form-urlencoded`,
    /// also the `Content-Type` unless `headers` name one). Not with `body` or `json`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub form: Vec<(String, String)>,
    /// ABI 1.1: a JSON value the host writes as the body (`Content-Type: application/json`
    /// unless `headers` name one). Not with `body` or `form`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// ABI 1.1: credentials the host sends as `Authorization: Basic …` (base64 of
    /// `user:password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
}

impl HttpRequest {
    /// A request with no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        HttpRequest { method: method.into(), url: url.into(), ..HttpRequest::default() }
    }
}

/// HTTP basic credentials ([`HttpRequest::basic_auth`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth").field("user", &self.user).field("password", &"***").finish()
    }
}

/// The HTTP response the host received. Non-2xx statuses are handed over too: classifying them
/// is the plugin's job. Transport failures (timeouts, refused connections) reach only a plugin that
/// declares [`Describe::exchange_errors`], as [`Exchange::error`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced by U+FFFD), cut at the host's size limit.
    #[serde(default)]
    pub body: String,
    /// ABI 1.1: the body parsed, when the plugin declares [`Describe::response_json`] and the
    /// body is a JSON document; absent otherwise. `body` is there as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
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
    #[serde(default)]
    results: Vec<RecipientResult>,
    done: Option<T>,
}

impl<T> TryFrom<RawOutput<T>> for OpOutput<T> {
    type Error = &'static str;

    fn try_from(raw: RawOutput<T>) -> Result<Self, Self::Error> {
        let step = match raw {
            RawOutput { http: Some(http), state: Some(state), results, .. } => {
                Step::Http { http, state, results }
            }
            RawOutput { done: Some(done), .. } => Step::Done { done },
            _ => return Err("the answer has neither `http` and `state` nor `done`"),
        };
        Ok(OpOutput { v: raw.v, step })
    }
}

/// Either an HTTP exchange to perform or the result.
// A step lives for one call and is moved at most twice; boxing the request would cost an
// allocation per exchange for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step<T> {
    /// Perform this request and call again with `state` and the response.
    Http {
        http: HttpRequest,
        state: String,
        /// ABI 1.1, `send` only: the recipients whose outcome is already known (those sent by
        /// earlier exchanges). The host records the sent ones in the ledger before it performs
        /// `http`, so they are never sent again, whatever happens next.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        results: Vec<RecipientResult>,
    },
    /// The operation's result.
    Done { done: T },
}

/// An error document (return code `NOTIFYD_ERROR`): bad settings, malformed input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDoc {
    pub v: u32,
    pub error: ProviderError,
}

/// A normalised error code (docs/contract.md §2.9): what a provider's answer means in notifyd's
/// terms. The host decides what follows from it (`classify` in the daemon's retry policy), so
/// every code is a variant and a new one forces a decision there.
///
/// On the wire it is the code's word (`"invalid_recipient"`, `"plugin_error"`, ...), exactly as
/// [`ErrorCode::as_str`] spells it. A word not in the list decodes as
/// [`ErrorCode::Unrecognised`], keeping the plugin's word, rather than failing the whole answer:
/// the host then treats it like `plugin_error` (docs/plugin-authors.md, "Errors").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `invalid_request`: the provider says the request is malformed.
    InvalidRequest,
    /// `invalid_recipient`: the provider says the number is invalid or does not exist.
    InvalidRecipient,
    /// `blocked_recipient`: the number is on a stop list or opted out.
    BlockedRecipient,
    /// `invalid_sender`: the sender id is refused.
    InvalidSender,
    /// `content_rejected`: the text is refused.
    ContentRejected,
    /// `auth`: the credentials are refused.
    Auth,
    /// `insufficient_funds`: the account is out of money or credits.
    InsufficientFunds,
    /// `throttled`: rate-limited (retryable).
    Throttled,
    /// `duplicate`: the provider refuses it as a duplicate.
    Duplicate,
    /// `unavailable`: the provider is down or overloaded (retryable).
    Unavailable,
    /// `timeout`: the provider (or the host, for an ambiguous attempt) reports a timeout.
    Timeout,
    /// `route_closed`: the provider cannot deliver to this destination.
    RouteClosed,
    /// `expired`: the message's validity ran out.
    Expired,
    /// `plugin_error`: the plugin failed or cannot understand the answer; the provider may have
    /// acted on the request.
    PluginError,
    /// `internal`: anything else that is the plugin's fault.
    Internal,
    /// `invalid_settings`: an instance's settings are refused. Only from `instance_new`; in an
    /// operation's result the host treats it as unrecognised.
    InvalidSettings,
    /// A word that is none of the above, as the plugin wrote it. Never built by the SDK; the host
    /// turns it into `plugin_error` (keeping the word in the message) and logs it once per
    /// plugin and word.
    Unrecognised(String),
}

impl ErrorCode {
    /// The normalised codes an operation's result may carry, in the order of docs/contract.md §2.9 (without
    /// `invalid_settings`, which belongs to `instance_new`).
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidRecipient,
        ErrorCode::BlockedRecipient,
        ErrorCode::InvalidSender,
        ErrorCode::ContentRejected,
        ErrorCode::Auth,
        ErrorCode::InsufficientFunds,
        ErrorCode::Throttled,
        ErrorCode::Duplicate,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::RouteClosed,
        ErrorCode::Expired,
        ErrorCode::PluginError,
        ErrorCode::Internal,
    ];

    /// The word on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidRecipient => "invalid_recipient",
            ErrorCode::BlockedRecipient => "blocked_recipient",
            ErrorCode::InvalidSender => "invalid_sender",
            ErrorCode::ContentRejected => "content_rejected",
            ErrorCode::Auth => "auth",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::Throttled => "throttled",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::RouteClosed => "route_closed",
            ErrorCode::Expired => "expired",
            ErrorCode::PluginError => "plugin_error",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidSettings => "invalid_settings",
            ErrorCode::Unrecognised(word) => word.as_str(),
        }
    }

    /// The code a word names; [`ErrorCode::Unrecognised`] for any other word.
    pub fn parse(word: &str) -> ErrorCode {
        if word == "invalid_settings" {
            return ErrorCode::InvalidSettings;
        }
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == word)
            .unwrap_or_else(|| ErrorCode::Unrecognised(word.to_owned()))
    }

    /// Whether this is one of [`ErrorCode::ALL`], the codes an operation's result may carry.
    pub fn is_operation_code(&self) -> bool {
        !matches!(self, ErrorCode::InvalidSettings | ErrorCode::Unrecognised(_))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_word(deserializer, ErrorCode::parse)
    }
}

/// Decodes a JSON string into a `T` through `parse`, which takes any word (the unknown ones
/// included), without copying the string first.
fn deserialize_word<'de, D: serde::Deserializer<'de>, T>(
    deserializer: D,
    parse: fn(&str) -> T,
) -> Result<T, D::Error> {
    struct Word<T>(fn(&str) -> T);
    impl<T> serde::de::Visitor<'_> for Word<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a word (a string)")
        }
        fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<T, E> {
            Ok((self.0)(word))
        }
    }
    deserializer.deserialize_str(Word(parse))
}

/// The normalised statuses (docs/contract.md §2.8): the status of a message in an event, and the status a
/// plugin reports in a `status` or `callback` answer ([`StatusUpdate::status`]). On the wire it is
/// the lower-case word ([`Status::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Accepted,
    Rejected,
    Sent,
    Delivered,
    Undelivered,
    Expired,
    Failed,
    Unknown,
}

impl Status {
    /// Every status, at its [`Status::index`].
    pub const ALL: [Status; 8] = [
        Status::Accepted,
        Status::Rejected,
        Status::Sent,
        Status::Delivered,
        Status::Undelivered,
        Status::Expired,
        Status::Failed,
        Status::Unknown,
    ];

    /// The position in [`Status::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Status::Accepted => 0,
            Status::Rejected => 1,
            Status::Sent => 2,
            Status::Delivered => 3,
            Status::Undelivered => 4,
            Status::Expired => 5,
            Status::Failed => 6,
            Status::Unknown => 7,
        }
    }

    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Undelivered => "undelivered",
            Status::Expired => "expired",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
        }
    }

    /// The status a word names, if any.
    pub fn parse(word: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// Whether no other status follows this one (all but `accepted` and `sent`).
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Accepted | Status::Sent)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status word of a [`StatusUpdate`]: a [`Status`], or a word that is none, kept as the
/// plugin wrote it. The host ignores an update with an unrecognised word (the message stays
/// pending; tracking ends it `unknown` when its window closes) and logs the word once per plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportedStatus {
    Known(Status),
    Unrecognised(String),
}

impl ReportedStatus {
    /// The status, unless the word was unrecognised.
    pub fn known(&self) -> Option<Status> {
        match self {
            ReportedStatus::Known(status) => Some(*status),
            ReportedStatus::Unrecognised(_) => None,
        }
    }

    /// The word on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ReportedStatus::Known(status) => status.as_str(),
            ReportedStatus::Unrecognised(word) => word.as_str(),
        }
    }
}

impl From<Status> for ReportedStatus {
    fn from(status: Status) -> Self {
        ReportedStatus::Known(status)
    }
}

impl PartialEq<&str> for ReportedStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Status> for ReportedStatus {
    fn eq(&self, other: &Status) -> bool {
        self.known() == Some(*other)
    }
}

impl Serialize for ReportedStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReportedStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_word(deserializer, |word| match Status::parse(word) {
            Some(status) => ReportedStatus::Known(status),
            None => ReportedStatus::Unrecognised(word.to_owned()),
        })
    }
}

/// A classified error: the normalised code, a sentence for people, and the provider's own code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderError {
    /// The normalised error code.
    pub code: ErrorCode,
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
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), provider_code: None, retryable: false, retry_after_ms: None }
    }

    /// A retryable error (`retryable = true`).
    pub fn retryable(code: ErrorCode, message: impl Into<String>) -> Self {
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
    /// The sender id in normal form: the request's `from`, else the instance's `sender`, with
    /// surrounding blanks and a numeric sender's leading `+` removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// ABI 1.1: the sender id as given (blanks trimmed, a `+` kept), when it differs from
    /// `from`; for a provider that wants `+` on long codes and none on short codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_given: Option<String>,
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
    pub status: ReportedStatus,
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
            Step::Http { http, state, results } => {
                assert_eq!((http.url.as_str(), state.as_str()), ("https://x/send", "send"));
                assert!(results.is_empty());
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
    fn every_code_and_status_is_its_word_on_the_wire() {
        let codes = [
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
        assert_eq!(ErrorCode::ALL.map(|c| c.as_str().to_owned()), codes.map(str::to_owned));
        for (code, word) in ErrorCode::ALL
            .iter()
            .chain([&ErrorCode::InvalidSettings])
            .zip(codes.iter().chain(&["invalid_settings"]))
        {
            let json = format!("\"{word}\"");
            assert_eq!(serde_json::to_string(code).unwrap(), json);
            assert_eq!(&serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!(code.is_operation_code() == (*code != ErrorCode::InvalidSettings), "{code}");
        }
        let statuses =
            ["accepted", "rejected", "sent", "delivered", "undelivered", "expired", "failed", "unknown"];
        for (status, word) in Status::ALL.iter().zip(statuses) {
            let json = format!("\"{word}\"");
            assert_eq!(serde_json::to_string(status).unwrap(), json);
            assert_eq!(&serde_json::from_str::<Status>(&json).unwrap(), status);
            assert_eq!(Status::parse(word), Some(*status));
            assert_eq!(
                serde_json::from_str::<ReportedStatus>(&json).unwrap(),
                ReportedStatus::Known(*status)
            );
            assert_eq!(serde_json::to_string(&ReportedStatus::from(*status)).unwrap(), json);
        }
        assert!(Status::parse("DELIVRD").is_none());
        assert!(!Status::Sent.is_final() && !Status::Accepted.is_final() && Status::Delivered.is_final());
    }

    #[test]
    fn unrecognised_words_decode_and_encode_unchanged() {
        let e: ProviderError =
            serde_json::from_str(r#"{"code":"plugin_eror","message":"m","provider_code":"7"}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Unrecognised("plugin_eror".to_owned()));
        assert!(!e.code.is_operation_code());
        assert_eq!(serde_json::to_string(&e.code).unwrap(), r#""plugin_eror""#);
        let escaped: ErrorCode = serde_json::from_str(r#""a\u0075th""#).unwrap();
        assert_eq!(escaped, ErrorCode::Auth, "an escaped word is the same word");
        assert!(serde_json::from_str::<ErrorCode>("7").is_err(), "a code is a string");

        let u: StatusUpdate = serde_json::from_str(r#"{"ref":"r","status":"DELIVRD"}"#).unwrap();
        assert_eq!(u.status, ReportedStatus::Unrecognised("DELIVRD".to_owned()));
        assert_eq!(u.status.known(), None);
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"ref":"r","status":"DELIVRD"}"#);
        assert!(serde_json::from_str::<Status>(r#""DELIVRD""#).is_err(), "`Status` itself is strict");
    }

    #[test]
    fn a_call_document_has_no_exchange_key_first_then_only_the_latest_exchange() {
        let input = StatusInput { refs: vec!["r-1".into()] };
        let mut doc = CallDocument::new(&input).unwrap();
        assert_eq!(doc.as_bytes(), br#"{"v":1,"input":{"refs":["r-1"]}}"#);
        let first = serde_json::to_vec(&OpInput { v: WIRE_VERSION, input: input.clone(), exchange: None });
        assert_eq!(doc.as_bytes(), first.unwrap(), "the shape OpInput serialises to");
        let response = HttpResponse { status: 200, headers: BTreeMap::new(), body: "ok".into(), json: None };
        for state in ["one", "two"] {
            let exchange = Exchange::answered(state, response.clone());
            doc.set_exchange(&exchange).unwrap();
            let expected = serde_json::to_vec(&OpInput {
                v: WIRE_VERSION,
                input: input.clone(),
                exchange: Some(exchange),
            });
            assert_eq!(doc.as_bytes(), expected.unwrap(), "{state}");
        }
        assert_eq!(
            std::str::from_utf8(doc.as_bytes()).unwrap(),
            r#"{"v":1,"input":{"refs":["r-1"]},"exchange":{"state":"two","response":{"status":200,"headers":{},"body":"ok"}}}"#
        );
    }

    #[test]
    fn results_encode_as_before() {
        let r = SendResult::Failed { error: ProviderError::new(ErrorCode::Auth, "no") };
        let json = serde_json::to_string(&OpOutput { v: 1, step: Step::Done { done: r } }).unwrap();
        assert!(json.starts_with(r#"{"v":1,"done":{"error":{"code":"auth""#), "{json}");
    }
}
