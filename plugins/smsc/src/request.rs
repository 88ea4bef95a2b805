//! Building SMSC's HTTP requests: `sys/send.php`, `sys/status.php` and `sys/balance.php` on the
//! instance's base URL (which may carry a path prefix), with the account's `login` and `psw`
//! among the form parameters, as SMSC expects them.
//!
//! `send` is always a POST: it is not idempotent (an intermediary may repeat a GET), and a body
//! keeps the password and the text out of URLs and access logs. `status` and `balance` are GETs,
//! as the .txt shows them, unless the query grows past [`MAX_GET_QUERY`] bytes (a status batch of
//! many messages); then they are POSTs with the same parameters in a form body, which SMSC accepts
//! for every call.

use notifyd_plugin::sdk::{Credentials, form_encode, join_url, rfc3339_to_unix_ceil};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{HttpRequest, ProviderError, SendInput};

/// SMSC's paths, appended to the base URL.
pub const SEND_PATH: &str = "sys/send.php";
pub const STATUS_PATH: &str = "sys/status.php";
pub const BALANCE_PATH: &str = "sys/balance.php";

/// Longest query string sent as a GET (SMSC's own client libraries switch to POST at the same
/// length; some proxies refuse longer URLs).
pub const MAX_GET_QUERY: usize = 2000;

const FORM: &str = "application/x-www-form-urlencoded";

/// A message as SMSC identifies it for `status.php`: its id and the phone number it went to.
/// One submission has one id for all its recipients, so the id alone is not enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingRef {
    pub id: String,
    pub phone: String,
}

impl TrackingRef {
    /// The opaque tracking reference handed to the host: `<id>:<phone>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.id, self.phone)
    }

    /// Reads a reference made by [`encode`](Self::encode); `None` for anything else, including an
    /// id that would break SMSC's comma lists.
    pub fn parse(reference: &str) -> Option<TrackingRef> {
        let (id, phone) = reference.rsplit_once(':')?;
        let id_ok = !id.is_empty() && !id.contains([',', ';']) && !id.chars().any(char::is_whitespace);
        (id_ok && is_phone(phone)).then(|| TrackingRef { id: id.to_owned(), phone: phone.to_owned() })
    }
}

/// Whether `s` is a number in notifyd's normal form as far as SMSC is concerned: ASCII digits
/// only (a `,` or `;` would split SMSC's list of phones).
pub fn is_phone(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn plugin_error(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorCode::PluginError, message)
}

/// The send request: `phones` joined by `,`, the text as UTF-8 (`charset=utf-8`), JSON answers
/// (`fmt=3`) with cost and new balance (`cost=3`) and one entry per number (`op=1`, so a number
/// SMSC refuses within a batch is known), the sender when there is one, and `time` when `send_at`
/// lies ahead of `now_unix` (seconds).
///
/// No client `id` is sent: the .txt does not say SMSC deduplicates by it, SMSC takes only a 32-bit
/// number there (notifyd's request ids are strings), and SMSC already refuses an identical request
/// within a minute.
pub fn send(
    base_url: &str,
    creds: &Credentials,
    input: &SendInput,
    now_unix: i64,
) -> Result<HttpRequest, ProviderError> {
    if let Some(bad) = input.to.iter().position(|to| !is_phone(to)) {
        return Err(plugin_error(format!(
            "recipient #{bad} is not in normal form (digits only); the host sent a malformed input"
        )));
    }
    let time = match input.send_at.as_deref() {
        Some(at) => {
            let at = rfc3339_to_unix_ceil(at)
                .ok_or_else(|| plugin_error("send_at is not an RFC 3339 timestamp"))?;
            // A time that has passed means "now": SMSC is not asked to send in the past.
            (at > now_unix).then(|| format!("0{at}"))
        }
        None => None,
    };
    let phones = input.to.join(",");
    let mut pairs: Vec<(&str, &str)> = vec![
        ("login", &creds.username),
        ("psw", creds.password.expose()),
        ("phones", &phones),
        ("mes", &input.text),
    ];
    if let Some(from) = input.from.as_deref().filter(|f| !f.is_empty()) {
        pairs.push(("sender", from));
    }
    pairs.extend([("charset", "utf-8"), ("fmt", "3"), ("cost", "3"), ("op", "1")]);
    if let Some(time) = &time {
        pairs.push(("time", time));
    }
    Ok(post(join_url(base_url, SEND_PATH), form_encode(pairs)))
}

/// The status query for `refs` (at least one): a single message as `phone=<n>&id=<id>` (the
/// answer is one object); several as comma lists in matching order (the answer is an array of
/// objects that name their `id` and `phone`).
pub fn status(base_url: &str, creds: &Credentials, refs: &[TrackingRef]) -> HttpRequest {
    let phones = refs.iter().map(|r| r.phone.as_str()).collect::<Vec<_>>().join(",");
    let ids = refs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(",");
    let query = form_encode([
        ("login", creds.username.as_str()),
        ("psw", creds.password.expose()),
        ("phone", &phones),
        ("id", &ids),
        ("fmt", "3"),
        ("charset", "utf-8"),
    ]);
    get_or_post(join_url(base_url, STATUS_PATH), query)
}

/// The balance query: JSON (`fmt=3`) with the account's currency (`cur=1`).
pub fn balance(base_url: &str, creds: &Credentials) -> HttpRequest {
    let query = form_encode([
        ("login", creds.username.as_str()),
        ("psw", creds.password.expose()),
        ("fmt", "3"),
        ("cur", "1"),
    ]);
    get_or_post(join_url(base_url, BALANCE_PATH), query)
}

fn post(url: String, body: String) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url,
        headers: vec![("Content-Type".into(), FORM.into())],
        body,
        ..Default::default()
    }
}

fn get_or_post(url: String, query: String) -> HttpRequest {
    if query.len() > MAX_GET_QUERY {
        post(url, query)
    } else {
        HttpRequest {
            method: "GET".into(),
            url: format!("{url}?{query}"),
            headers: Vec::new(),
            body: String::new(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notifyd_plugin::sdk::Secret;

    #[test]
    fn tracking_refs_round_trip_and_refuse_what_would_break_the_lists() {
        let r = TrackingRef { id: "175".into(), phone: "4915100000001".into() };
        assert_eq!(r.encode(), "175:4915100000001");
        assert_eq!(TrackingRef::parse("175:4915100000001"), Some(r));
        for bad in
            ["", "175", ":4915100000001", "175:", "1,2:4915100000001", "175:49151 0", "175:+4915100000001"]
        {
            assert_eq!(TrackingRef::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Credentials { username: "acme".into(), password: Secret::new("s3cret-pw") };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-pw") && shown.contains("***"), "{shown}");
    }
}
