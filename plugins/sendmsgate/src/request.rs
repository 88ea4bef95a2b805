//! Building the HTTP requests: every call is `GET {base_url}/sendsms.php` with the credentials
//! `user` and `pwd` in the query string (the gateway knows no other authentication), UTF-8 values
//! percent-encoded.

use crate::Credentials;
use notifyd_plugin::sdk::{form_encode, join_url};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{HttpRequest, ProviderError};

/// The one documented path; `base_url` may carry a prefix in front of it.
pub const PATH: &str = "sendsms.php";

/// Numbers of this many digits or more are refused by the gateway ("The phone number must be
/// less than 15 characters.").
pub const MAX_NUMBER_LEN: usize = 14;

/// The name of the status query's id parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusParam {
    /// `msgid`, as SendSMSGate's document says.
    #[default]
    Msgid,
    /// `smsid`, as sibling platforms of the same white-label gateway call it.
    Smsid,
}

impl StatusParam {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusParam::Msgid => "msgid",
            StatusParam::Smsid => "smsid",
        }
    }
}

fn get(base_url: &str, params: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        method: "GET".to_owned(),
        url: format!("{}?{}", join_url(base_url, PATH), form_encode(params.iter().copied())),
        headers: Vec::new(),
        body: String::new(),
        ..Default::default()
    }
}

/// Sends `text` to `numbers` (digits only, at most [`MAX_NUMBER_LEN`] each), joined by `,` in
/// `dadr`. `sadr` is omitted when there is no sender; the gateway then answers "No sender."
/// unless the account has a default.
pub fn send(
    base_url: &str,
    creds: &Credentials,
    from: Option<&str>,
    numbers: &[&str],
    text: &str,
) -> HttpRequest {
    let dadr = numbers.join(",");
    let mut params = vec![("user", creds.username.as_str()), ("pwd", creds.password.expose())];
    if let Some(from) = from {
        params.push(("sadr", from));
    }
    params.push(("dadr", &dadr));
    params.push(("text", text));
    get(base_url, &params)
}

/// Asks for the status of one message id (one part).
pub fn status(base_url: &str, creds: &Credentials, param: StatusParam, id: &str) -> HttpRequest {
    get(
        base_url,
        &[("user", creds.username.as_str()), ("pwd", creds.password.expose()), (param.as_str(), id)],
    )
}

/// Asks for the balance (`balance=1`).
pub fn balance(base_url: &str, creds: &Credentials) -> HttpRequest {
    get(base_url, &[("user", creds.username.as_str()), ("pwd", creds.password.expose()), ("balance", "1")])
}

/// Why the plugin refuses a recipient without asking the gateway, if it does.
pub fn check_number(number: &str) -> Option<ProviderError> {
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        // The host hands over numbers in normal form; anything else is a host bug, but it must
        // not reach the gateway's comma-separated list.
        return Some(ProviderError::new(
            ErrorCode::InvalidRecipient,
            "the number is not in normal form (digits only)",
        ));
    }
    if number.len() > MAX_NUMBER_LEN {
        return Some(ProviderError::new(
            ErrorCode::InvalidRecipient,
            format!(
                "SendSMSGate takes numbers of at most {MAX_NUMBER_LEN} digits; this one has {}",
                number.len()
            ),
        ));
    }
    None
}
