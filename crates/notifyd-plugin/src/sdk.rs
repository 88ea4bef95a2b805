//! The Rust SDK for provider plugins: implement [`Provider`], then call
//! [`export_plugin!`](crate::export_plugin) once in the crate root:
//!
//! ```ignore
//! struct MyProvider { /* settings */ }
//! impl notifyd_plugin::sdk::Provider for MyProvider { /* ... */ }
//! notifyd_plugin::export_plugin!(MyProvider);
//! ```
//!
//! The plugin crate is built as a `cdylib` named `notifyd_<name>`. It contains no `unsafe`: the
//! macro generates the entry symbol and table, and [`export`] holds the FFI glue, which catches
//! every panic and turns it into an error result.

use crate::wire::{
    BalanceResult, CallbackInput, CallbackResult, Describe, ErrorCode, Exchange, HttpRequest, HttpResponse,
    InstanceInit, ProviderError, RecipientResult, SendInput, SendResult, StatusInput, StatusResult, Step,
    WIRE_VERSION,
};
use serde::de::DeserializeOwned;
use std::borrow::Cow;

mod credentials;
mod mapping;
#[cfg(feature = "testing")]
pub mod testing;

pub use credentials::{Credentials, parse_settings_with_credentials};
pub use mapping::ErrorRule;

/// An operation's answer: one step, or an error (malformed input or state, bad settings).
pub type OpResult<T> = Result<Step<T>, ProviderError>;

/// A provider plugin. One instance serves many threads at once and keeps no per-message state:
/// what it needs between an HTTP request and its response travels in the `state` string.
pub trait Provider: Sized + Send + Sync + 'static {
    /// Capability bits ([`crate::abi::CAP_SEND`] | ...); an operation whose bit is unset is absent
    /// from the table.
    const CAPABILITIES: u64;

    /// Name, version and limits.
    fn describe() -> Describe;

    /// Creates an instance from its settings; unknown or missing settings are errors
    /// (code `invalid_settings`), see [`parse_settings`].
    fn new(init: InstanceInit) -> Result<Self, ProviderError>;

    /// Sends `input.text` to `input.to` (at most `max_recipients` of them).
    fn send(&self, input: &SendInput, exchange: Option<&Exchange>) -> OpResult<SendResult>;

    /// Queries the delivery status of tracking references ([`crate::abi::CAP_STATUS`]).
    fn status(&self, _input: &StatusInput, _exchange: Option<&Exchange>) -> OpResult<StatusResult> {
        Err(unsupported("status"))
    }

    /// Queries the account balance ([`crate::abi::CAP_BALANCE`]).
    fn balance(&self, _input: &serde_json::Value, _exchange: Option<&Exchange>) -> OpResult<BalanceResult> {
        Err(unsupported("balance"))
    }

    /// Parses a pushed delivery report ([`crate::abi::CAP_CALLBACK`]).
    fn callback(&self, _input: &CallbackInput, _exchange: Option<&Exchange>) -> OpResult<CallbackResult> {
        Err(unsupported("callback"))
    }
}

fn unsupported(op: &str) -> ProviderError {
    ProviderError::new(ErrorCode::PluginError, format!("this plugin does not support the {op} operation"))
}

impl<T> Step<T> {
    /// The operation's result.
    pub fn done(done: T) -> Self {
        Step::Done { done }
    }

    /// The same step with its result transformed.
    pub fn map_done<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Done { done } => Step::Done { done: f(done) },
            Step::Http { http, state, results } => Step::Http { http, state, results },
        }
    }

    /// Ask the host to perform `http`, then call again with `state` and the response.
    pub fn http(http: HttpRequest, state: impl Into<String>) -> Self {
        Step::Http { http, state: state.into(), results: Vec::new() }
    }

    /// The same HTTP step carrying the recipients whose outcome is already known (ABI 1.1,
    /// `send`): the host records the sent ones before it performs the request.
    pub fn with_results(self, known: Vec<RecipientResult>) -> Self {
        match self {
            Step::Http { http, state, .. } => Step::Http { http, state, results: known },
            done => done,
        }
    }
}

impl Describe {
    /// A plugin's description: its `name` (the `plugin = "..."` value), its `version` (pass
    /// `env!("CARGO_PKG_VERSION")`) and the most recipients one `send` takes. The rest starts at
    /// the defaults: no `status` (`max_status_refs` 0), alphabet `"unicode"`, no default base URL.
    pub fn new(name: &str, version: &str, max_recipients: u32) -> Self {
        Describe {
            v: WIRE_VERSION,
            name: name.to_owned(),
            version: version.to_owned(),
            max_recipients,
            max_status_refs: 0,
            alphabet: "unicode".to_owned(),
            default_base_url: None,
            exchange_errors: false,
            response_json: false,
        }
    }

    /// Ask to be called again with a transport error (ABI 1.1, [`Describe::exchange_errors`]).
    pub fn with_exchange_errors(mut self) -> Self {
        self.exchange_errors = true;
        self
    }

    /// Ask for JSON responses already parsed (ABI 1.1, [`Describe::response_json`]).
    pub fn with_response_json(mut self) -> Self {
        self.response_json = true;
        self
    }

    /// The most tracking references one `status` call takes (at least 1 with `CAP_STATUS`).
    pub fn with_max_status_refs(mut self, max_status_refs: u32) -> Self {
        self.max_status_refs = max_status_refs;
        self
    }

    /// The texts the provider accepts: `"unicode"` (the default), `"gsm7"` or `"latin"`.
    pub fn with_alphabet(mut self, alphabet: &str) -> Self {
        self.alphabet = alphabet.to_owned();
        self
    }

    /// The provider's production URL, which the plugin uses when an instance sets no `base_url`.
    pub fn with_default_base_url(mut self, url: &str) -> Self {
        self.default_base_url = Some(url.to_owned());
        self
    }
}

/// Checks that `exchange` answers the request that operation `op` asked for with `state`: the
/// continuation of a one-exchange operation. Otherwise the error (`plugin_error`, answered as
/// `NOTIFYD_ERROR`) says so and quotes a snippet of the state it got.
pub fn expect_state(op: &str, exchange: &Exchange, state: &str) -> Result<(), ProviderError> {
    if exchange.state == state { Ok(()) } else { Err(foreign_state(op, exchange)) }
}

/// The error for an exchange whose `state` operation `op` did not make (for plugins that read
/// their state themselves; see [`expect_state`]).
pub fn foreign_state(op: &str, exchange: &Exchange) -> ProviderError {
    ProviderError::new(
        ErrorCode::PluginError,
        format!("{op} was handed back an exchange state it did not make: {:?}", snippet(&exchange.state)),
    )
}

/// Now, in unix seconds (0 before 1970), for plugins that compute a provider's schedule
/// parameter. Take it as a parameter in the functions that use it, so tests can fix the time.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Deserializes an instance's settings into `T` (which should say `#[serde(deny_unknown_fields)]`),
/// turning any problem into an `invalid_settings` error that names the key but never its value.
pub fn parse_settings<T: DeserializeOwned>(init: &InstanceInit) -> Result<T, ProviderError> {
    let value = serde_json::Value::Object(init.settings.clone());
    serde_json::from_value(value).map_err(|e| {
        let message = redact_values(&e.to_string());
        ProviderError::new(
            ErrorCode::InvalidSettings,
            format!("invalid settings for `{}`: {message}", init.name),
        )
    })
}

/// serde quotes the offending value in type errors (`invalid type: integer `1234`, expected a
/// string`); a setting may be a secret and a request field a phone number, so the quoted value is
/// dropped. Key names (as in `unknown field `x``) are kept.
pub fn redact_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(pos) = rest.rfind(", expected") {
                // "integer `1234`" / "string \"abc\"" → "integer" / "string"
                let kind = rest[..pos].split([' ', '`', '"']).next().unwrap_or_default();
                return format!("{prefix}{kind}{}", &rest[pos..]);
            }
        }
    }
    message.to_owned()
}

/// The `invalid_settings` error for a setting the plugin checks itself, in the form
/// [`parse_settings`] uses: ``invalid settings for `<instance>`: <what>``. `what` names the key
/// and never quotes a secret's value.
pub fn invalid_settings(init: &InstanceInit, what: &str) -> ProviderError {
    ProviderError::new(ErrorCode::InvalidSettings, format!("invalid settings for `{}`: {what}", init.name))
}

/// Refuses settings in which one of `keys` is present but not a string, with an `invalid_settings`
/// error that names the key (`` `password` must be a string ``) and not the value. Call it before
/// [`parse_settings`] for keys an operator may well write as a number (a numeric password): that
/// refuses them too, without quoting the value, but serde's type errors do not say which key.
pub fn require_string_settings(init: &InstanceInit, keys: &[&str]) -> Result<(), ProviderError> {
    match keys.iter().find(|key| init.settings.get(**key).is_some_and(|v| !v.is_string())) {
        Some(key) => Err(invalid_settings(init, &format!("`{key}` must be a string"))),
        None => Ok(()),
    }
}

/// A credential from the settings (password, token): its `Debug` prints `***`, so a settings
/// struct can derive `Debug` without leaking it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place it goes: the request to the provider.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Joins a base URL (which may carry a path prefix, with or without a trailing `/`) and a path.
pub fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// Percent-encodes `pairs` as `application/x-www-form-urlencoded` (also fit for a query string).
pub fn form_encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(256);
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        percent_encode_into(&mut out, k);
        out.push('=');
        percent_encode_into(&mut out, v);
    }
    out
}

fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// A short, single-line excerpt of a provider's answer for error messages (at most 64 chars).
pub fn snippet(body: &str) -> String {
    let mut s: String = body.chars().take(64).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.chars().nth(64).is_some() {
        s.push('…');
    }
    s
}

/// The delay a `Retry-After` header asks for, in milliseconds (the seconds form; an HTTP date is
/// ignored).
pub fn retry_after_ms(response: &HttpResponse) -> Option<u64> {
    let value = response.headers.get("retry-after")?;
    value.trim().parse::<u64>().ok().map(|s| s.saturating_mul(1000))
}

/// The error an HTTP status means regardless of the body, for providers that use HTTP statuses
/// in the usual way: 401/403 `auth`, 402 `insufficient_funds`, 408 `timeout` (retryable), 429
/// `throttled` (retryable, honouring `Retry-After`), 5xx `unavailable` (retryable). `None` for the
/// others, which the plugin reads itself. `provider_code` is the status number.
pub fn http_status_error(response: &HttpResponse) -> Option<ProviderError> {
    let status = response.status;
    let error = match status {
        401 | 403 => ProviderError::new(ErrorCode::Auth, "the provider refused the credentials"),
        402 => ProviderError::new(ErrorCode::InsufficientFunds, "the provider account has no funds left"),
        408 => ProviderError::retryable(ErrorCode::Timeout, "the provider timed out handling the request"),
        429 => ProviderError {
            retry_after_ms: retry_after_ms(response),
            ..ProviderError::retryable(ErrorCode::Throttled, "the provider asks to slow down (HTTP 429)")
        },
        500..=599 => ProviderError {
            retry_after_ms: retry_after_ms(response),
            ..ProviderError::retryable(
                ErrorCode::Unavailable,
                format!("the provider is unavailable (HTTP {status})"),
            )
        },
        _ => return None,
    };
    Some(error.with_provider_code(status.to_string()))
}

/// The error for an answer the plugin cannot understand (empty, HTML, truncated, unknown word):
/// `plugin_error`, not retryable (the provider may have acted on the request), with a short
/// snippet of the body.
pub fn unexpected_answer(response: &HttpResponse) -> ProviderError {
    let body =
        if response.body.trim().is_empty() { "an empty body".to_owned() } else { snippet(&response.body) };
    ProviderError::new(
        ErrorCode::PluginError,
        format!("unexpected answer from the provider (HTTP {}): {body}", response.status),
    )
}

/// `text` with every occurrence of each (non-empty) secret replaced by `***`: as given,
/// percent-encoded as [`form_encode`] writes it, and with `+` for a space, as a form body or query
/// string may carry it. Longer forms are cut first, so a secret that contains another is cut
/// whole. Borrowed when no secret occurs.
///
/// For provider text on its way into an error message (a proxy's error page may echo the request
/// URL with its credentials), usually as `snippet(&redact_secrets(&response.body, &[password]))`.
pub fn redact_secrets<'a>(text: &'a str, secrets: &[&str]) -> Cow<'a, str> {
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let mut encoded = String::new();
        percent_encode_into(&mut encoded, secret);
        let plus = encoded.replace("%20", "+");
        for form in [(*secret).to_owned(), encoded, plus] {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut out = Cow::Borrowed(text);
    for form in &forms {
        if out.contains(form.as_str()) {
            out = Cow::Owned(out.replace(form.as_str(), "***"));
        }
    }
    out
}

/// Unix seconds of an RFC 3339 date and time (`2026-11-22T09:00:00Z`,
/// `2026-11-22T13:00:00.250+04:00`), a fractional second rounded up to the next whole one, so
/// that a message scheduled for the result never goes out before the time given (notifyd promises
/// "not before `send_at`"). `None` for anything that is not RFC 3339 (no offset, a date alone,
/// an impossible date or time).
pub fn rfc3339_to_unix_ceil(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) { std::str::from_utf8(part).ok()?.parse().ok() } else { None }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut fraction = false;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            fraction |= b[i] != b'0';
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    // 60 is a leap second, which RFC 3339 allows; it counts as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    Some(seconds + i64::from(fraction))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The FFI glue behind [`export_plugin!`](crate::export_plugin). Not for direct use.
// The crate denies `unsafe_code` (lib.rs); this module is its one exception.
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod export {
    use super::Provider;
    use crate::abi::{self, Buf, Instance, PluginVTable};
    use crate::wire::{ErrorCode, ErrorDoc, Exchange, OpInput, OpOutput, ProviderError, WIRE_VERSION};
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    /// The function table for `T`, built at compile time.
    pub const fn vtable<T: Provider>() -> PluginVTable {
        let caps = T::CAPABILITIES | abi::CAP_SEND;
        PluginVTable {
            struct_size: size_of::<PluginVTable>() as u32,
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            capabilities: caps,
            free_buf: Some(free_buf),
            describe: Some(describe::<T>),
            instance_new: Some(instance_new::<T>),
            instance_free: Some(instance_free::<T>),
            send: Some(send::<T>),
            status: if caps & abi::CAP_STATUS != 0 { Some(status::<T>) } else { None },
            balance: if caps & abi::CAP_BALANCE != 0 { Some(balance::<T>) } else { None },
            callback: if caps & abi::CAP_CALLBACK != 0 { Some(callback::<T>) } else { None },
        }
    }

    fn into_buf(bytes: Vec<u8>) -> Buf {
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        Buf { ptr: Box::into_raw(boxed).cast::<u8>(), len }
    }

    fn error_bytes(error: ProviderError) -> Vec<u8> {
        serde_json::to_vec(&ErrorDoc { v: WIRE_VERSION, error }).unwrap_or_default()
    }

    /// Runs `f`, writes its answer into `out`, and turns errors and panics into return codes.
    fn guard(out: *mut Buf, f: impl FnOnce() -> Result<Vec<u8>, ProviderError>) -> i32 {
        if out.is_null() {
            return abi::RC_ERROR;
        }
        let (rc, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(bytes)) => (abi::RC_OK, bytes),
            Ok(Err(error)) => (abi::RC_ERROR, error_bytes(error)),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                let error =
                    ProviderError::new(ErrorCode::PluginError, format!("the plugin panicked: {what}"));
                (abi::RC_PANIC, catch_unwind(|| error_bytes(error)).unwrap_or_default())
            }
        };
        // SAFETY: `out` is non-null and, by the ABI contract, points to a writable notifyd_buf.
        unsafe { out.write(into_buf(bytes)) };
        rc
    }

    /// # Safety
    /// `ptr`/`len` must come from a buffer this plugin returned, released once.
    pub unsafe extern "C" fn free_buf(buf: Buf) {
        if !buf.ptr.is_null() {
            // SAFETY: the buffer was made by `into_buf` from a boxed slice of exactly `len` bytes.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len)) });
        }
    }

    unsafe extern "C" fn describe<T: Provider>(out: *mut Buf) -> i32 {
        guard(out, || to_json(&T::describe()))
    }

    unsafe extern "C" fn instance_new<T: Provider>(
        settings: *const u8,
        len: usize,
        instance: *mut *mut Instance,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: host-owned input, valid for this call.
        let input = unsafe { input_slice(settings, len) };
        guard(out, || {
            if instance.is_null() {
                return Err(ProviderError::new(
                    ErrorCode::PluginError,
                    "instance_new called without an out pointer",
                ));
            }
            let init = serde_json::from_slice(input).map_err(|e| {
                ProviderError::new(
                    ErrorCode::InvalidSettings,
                    format!("the settings document is malformed: {e}"),
                )
            })?;
            let provider = T::new(init)?;
            // SAFETY: checked non-null above; the host provides a writable pointer slot.
            unsafe { instance.write(Box::into_raw(Box::new(provider)).cast::<Instance>()) };
            Ok(Vec::new())
        })
    }

    unsafe extern "C" fn instance_free<T: Provider>(instance: *mut Instance) {
        if !instance.is_null() {
            // SAFETY: made by `instance_new::<T>` from a `Box<T>`, freed once by the host.
            let _ = catch_unwind(|| drop(unsafe { Box::from_raw(instance.cast::<T>()) }));
        }
    }

    /// # Safety
    /// `ptr` must be valid for `len` bytes for the duration of the call (or null with len 0).
    unsafe fn input_slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if ptr.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: guaranteed by the caller (the host's side of the ABI contract).
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    }

    fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ProviderError> {
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, value).map(|()| out).map_err(|e| {
            ProviderError::new(ErrorCode::PluginError, format!("the plugin's answer cannot be encoded: {e}"))
        })
    }

    /// One operation: decode the input document, call the provider, encode its step.
    unsafe fn op<T, I, R>(
        instance: *const Instance,
        input: *const u8,
        len: usize,
        out: *mut Buf,
        call: impl FnOnce(&T, &I, Option<&Exchange>) -> super::OpResult<R>,
    ) -> i32
    where
        T: Provider,
        I: DeserializeOwned,
        R: Serialize,
    {
        // SAFETY: host-owned input, valid for this call.
        let input = unsafe { input_slice(input, len) };
        guard(out, || {
            if instance.is_null() {
                return Err(ProviderError::new(
                    ErrorCode::PluginError,
                    "operation called without an instance",
                ));
            }
            // SAFETY: a non-null instance was made by `instance_new::<T>` and outlives the call.
            let provider = unsafe { &*instance.cast::<T>() };
            let doc: OpInput<I> = serde_json::from_slice(input).map_err(|e| {
                ProviderError::new(
                    ErrorCode::PluginError,
                    format!("the host's input document is malformed: {e}"),
                )
            })?;
            let step = call(provider, &doc.input, doc.exchange.as_ref())?;
            to_json(&OpOutput { v: WIRE_VERSION, step })
        })
    }

    unsafe extern "C" fn send<T: Provider>(i: *const Instance, p: *const u8, n: usize, out: *mut Buf) -> i32 {
        // SAFETY: forwarded ABI arguments.
        unsafe { op(i, p, n, out, T::send) }
    }

    unsafe extern "C" fn status<T: Provider>(
        i: *const Instance,
        p: *const u8,
        n: usize,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: forwarded ABI arguments.
        unsafe { op(i, p, n, out, T::status) }
    }

    unsafe extern "C" fn balance<T: Provider>(
        i: *const Instance,
        p: *const u8,
        n: usize,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: forwarded ABI arguments.
        unsafe { op(i, p, n, out, T::balance) }
    }

    unsafe extern "C" fn callback<T: Provider>(
        i: *const Instance,
        p: *const u8,
        n: usize,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: forwarded ABI arguments.
        unsafe { op(i, p, n, out, T::callback) }
    }
}

/// Exports a [`Provider`] as a notifyd plugin: generates the `notifyd_plugin_v1` entry symbol and
/// its static function table. Call it once, in the plugin crate's root.
///
/// The expansion lands in the plugin crate, and a plugin crate may say `#![forbid(unsafe_code)]`:
/// its one unsafe construct, `#[unsafe(no_mangle)]`, is written here, and rustc reports the
/// `unsafe_code` lint only for code the crate itself wrote, never inside another crate's macro.
/// So the expansion carries no `#[allow(unsafe_code)]` (under `forbid`, an `allow` is an error,
/// E0453). The workspace's plugins all forbid `unsafe_code`, so a compiler that changed this rule
/// would fail their build rather than pass silently.
#[macro_export]
macro_rules! export_plugin {
    ($provider:ty) => {
        /// The notifyd plugin entry point (ABI v1).
        #[unsafe(no_mangle)]
        pub extern "C" fn notifyd_plugin_v1() -> *const $crate::abi::PluginVTable {
            static TABLE: $crate::abi::PluginVTable = $crate::sdk::export::vtable::<$provider>();
            &TABLE
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_url_keeps_prefix_and_single_slash() {
        assert_eq!(
            join_url("https://p.example/smsc/", "/sys/send.php"),
            "https://p.example/smsc/sys/send.php"
        );
        assert_eq!(join_url("https://smsc.ru", "sys/send.php"), "https://smsc.ru/sys/send.php");
    }

    #[test]
    fn form_encode_escapes_reserved_and_utf8() {
        assert_eq!(form_encode([("mes", "a b&c=д"), ("to", "1,2")]), "mes=a%20b%26c%3D%D0%B4&to=1%2C2");
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.into(),
            json: None,
        }
    }

    #[test]
    fn http_statuses_map_to_their_codes() {
        let throttled = http_status_error(&response(429, &[("retry-after", "7")], "")).unwrap();
        assert_eq!(
            (throttled.code.as_str(), throttled.retryable, throttled.retry_after_ms),
            ("throttled", true, Some(7000))
        );
        assert_eq!(throttled.provider_code.as_deref(), Some("429"));
        let auth = http_status_error(&response(401, &[], "")).unwrap();
        assert_eq!((auth.code.as_str(), auth.retryable), ("auth", false));
        let down = http_status_error(&response(503, &[], "")).unwrap();
        assert_eq!((down.code.as_str(), down.retryable), ("unavailable", true));
        assert!(http_status_error(&response(200, &[], "")).is_none());
        assert!(http_status_error(&response(400, &[], "")).is_none());
        assert_eq!(
            retry_after_ms(&response(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], "")),
            None
        );
    }

    #[test]
    fn unexpected_answer_quotes_a_snippet() {
        let e = unexpected_answer(&response(200, &[], "<html><body>Bad Gateway</body></html>"));
        assert_eq!(e.code, "plugin_error");
        assert!(!e.retryable);
        assert!(e.message.contains("HTTP 200") && e.message.contains("<html>"), "{}", e.message);
        assert!(unexpected_answer(&response(200, &[], " ")).message.contains("an empty body"));
    }

    #[test]
    fn settings_errors_never_quote_values() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            password: String,
        }
        let init = |v: serde_json::Value| InstanceInit {
            v: 1,
            name: "x".into(),
            base_url: None,
            settings: v.as_object().cloned().unwrap(),
            abi_minor: None,
        };
        let e = parse_settings::<S>(&init(serde_json::json!({"password": 12345678}))).unwrap_err();
        assert!(!e.message.contains("12345678"), "{}", e.message);
        assert!(e.message.contains("invalid type: integer, expected a string"), "{}", e.message);
        assert_eq!(
            redact_values(
                r#"invalid type: string "4915171112233, expected", expected u32 at line 1 column 9"#
            ),
            "invalid type: string, expected u32 at line 1 column 9"
        );
        let e = parse_settings::<S>(&init(serde_json::json!({"pasword": "x"}))).unwrap_err();
        assert!(e.message.contains("unknown field `pasword`"), "{}", e.message);
    }

    #[test]
    fn string_settings_are_refused_by_key_without_their_value() {
        let init = |v: serde_json::Value| InstanceInit {
            v: 1,
            name: "x".into(),
            base_url: None,
            settings: v.as_object().cloned().unwrap(),
            abi_minor: None,
        };
        let keys = ["username", "password"];
        assert!(require_string_settings(&init(serde_json::json!({"password": "p"})), &keys).is_ok());
        for bad in [serde_json::json!(12345678), serde_json::json!(["hunter22"]), serde_json::Value::Null] {
            let e =
                require_string_settings(&init(serde_json::json!({"username": "u", "password": bad})), &keys)
                    .unwrap_err();
            assert_eq!(e.code, "invalid_settings");
            assert_eq!(e.message, "invalid settings for `x`: `password` must be a string");
        }
        let e = invalid_settings(&init(serde_json::json!({})), "`token` is empty");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("invalid_settings", "invalid settings for `x`: `token` is empty")
        );
    }

    #[test]
    fn secrets_are_redacted_plain_and_percent_encoded() {
        let secrets = ["p@ss word", "acme", ""];
        assert_eq!(
            redact_secrets("login=acme&psw=p%40ss%20word; psw=p%40ss+word or p@ss word", &secrets),
            "login=***&psw=***; psw=*** or ***"
        );
        // A secret that contains another is cut whole.
        assert_eq!(redact_secrets("pw=acme-acme", &["acme", "acme-acme"]), "pw=***");
        assert!(matches!(redact_secrets("nothing here", &secrets), Cow::Borrowed(_)));
        assert_eq!(redact_secrets("", &secrets), "");
        let body = format!("{}?psw=p%40ss%20word", "x".repeat(50));
        let quoted = snippet(&redact_secrets(&body, &secrets));
        assert!(!quoted.contains("p%40") && quoted.ends_with("x?psw=***"), "{quoted}");
    }

    #[test]
    fn rfc3339_timestamps_become_unix_seconds_rounded_up() {
        assert_eq!(rfc3339_to_unix_ceil("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_to_unix_ceil("2026-11-22T09:00:00.000Z"), Some(1_795_338_000));
        assert_eq!(rfc3339_to_unix_ceil("2026-11-22T09:00:00.001Z"), Some(1_795_338_001));
        assert_eq!(rfc3339_to_unix_ceil("2026-11-22T12:00:00+03:00"), Some(1_795_338_000));
        assert_eq!(rfc3339_to_unix_ceil("2026-11-22T04:30:00-04:30"), Some(1_795_338_000));
        assert_eq!(rfc3339_to_unix_ceil("2026-11-22 09:00:00z"), Some(1_795_338_000));
        assert_eq!(rfc3339_to_unix_ceil("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(rfc3339_to_unix_ceil("2016-12-31T23:59:60Z"), Some(1_483_228_800));
        for bad in [
            "",
            "tomorrow",
            "2026-11-22",
            "2026-11-22T09:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T09:00:00.Z",
            "2026-11-22T09:00:00+0300",
            "2026-11-22T09:00:00+4:00",
            "2026-11-22T09:00:00+24:00",
            "2026-11-22T09:00:00Z ",
            "2026-1-22T09:00:00Z",
            "+026-11-22T09:00:00Z",
        ] {
            assert_eq!(rfc3339_to_unix_ceil(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn describe_starts_at_the_defaults() {
        let d = Describe::new("acme", "1.2.3", 50);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"v":1,"name":"acme","version":"1.2.3","max_recipients":50,"max_status_refs":0,"alphabet":"unicode"}"#
        );
        let d =
            d.with_max_status_refs(16).with_alphabet("latin").with_default_base_url("https://acme.example");
        assert_eq!(
            (d.max_status_refs, d.alphabet.as_str(), d.default_base_url.as_deref()),
            (16, "latin", Some("https://acme.example"))
        );
    }

    #[test]
    fn a_foreign_state_is_refused_with_a_snippet_of_it() {
        let ex = Exchange::answered("status:12", response(200, &[], ""));
        assert!(expect_state("status", &ex, "status:12").is_ok());
        let e = expect_state("send", &ex, "send").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("plugin_error", r#"send was handed back an exchange state it did not make: "status:12""#)
        );
    }

    #[test]
    fn now_is_after_2025() {
        assert!(now_unix() > 1_735_689_600, "{}", now_unix());
    }

    #[test]
    fn snippet_is_short_and_single_line() {
        assert_eq!(snippet("<html>\n<body>"), "<html> <body>");
        let long = "x".repeat(100);
        assert_eq!(snippet(&long).chars().count(), 65);
    }
}
