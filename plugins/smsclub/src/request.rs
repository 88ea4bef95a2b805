//! Building SMS Club's HTTP requests: every call is a `POST` on `{base_url}/sms/<call>` with
//! `Authorization: Bearer <token>` and a JSON body (UTF-8, as the API requires).

use crate::IntegrationId;
use notifyd_plugin::sdk::{Secret, join_url};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{HttpRequest, ProviderError, SendInput};
use serde::Serialize;

/// Sends one text to up to [`MAX_RECIPIENTS`] numbers.
pub const SEND_PATH: &str = "/sms/send";
/// Delivery statuses of up to [`MAX_STATUS_IDS`] message ids.
pub const STATUS_PATH: &str = "/sms/status";
/// The account's balance and currency.
pub const BALANCE_PATH: &str = "/sms/balance";

/// "Array of numbers (up to 100 per request)".
pub const MAX_RECIPIENTS: usize = 100;
/// `id_sms`: "the limit is not more than 100".
pub const MAX_STATUS_IDS: usize = 100;

/// The body of `/sms/send`, in the order the document shows.
#[derive(Serialize)]
struct SendBody<'a> {
    /// International numbers, digits only (`380989361131`).
    phone: &'a [String],
    message: &'a str,
    /// The alpha name; required by SMS Club.
    src_addr: &'a str,
    /// Only for the referral system.
    #[serde(skip_serializing_if = "Option::is_none")]
    integration_id: Option<&'a IntegrationId>,
}

/// The body of `/sms/status`.
#[derive(Serialize)]
struct StatusBody<'a> {
    id_sms: &'a [String],
}

/// `POST {base}{path}` with the bearer token and a JSON body (empty for calls without one).
fn post(base_url: &str, path: &str, token: &Secret, body: String) -> HttpRequest {
    HttpRequest {
        method: "POST".to_owned(),
        url: join_url(base_url, path),
        headers: vec![
            ("Authorization".to_owned(), format!("Bearer {}", token.expose())),
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Accept".to_owned(), "application/json".to_owned()),
        ],
        body,
        ..Default::default()
    }
}

fn encode<T: Serialize>(body: &T) -> Result<String, ProviderError> {
    serde_json::to_string(body).map_err(|e| {
        ProviderError::new(ErrorCode::PluginError, format!("cannot encode the request body: {e}"))
    })
}

/// The `/sms/send` request for `input`. `Err` for input the host should never send: no
/// recipients or more than [`MAX_RECIPIENTS`] (`plugin_error`), and no sender (`invalid_sender`:
/// SMS Club requires an alpha name, and the host has none to give).
pub fn send(
    base_url: &str,
    token: &Secret,
    integration_id: Option<&IntegrationId>,
    input: &SendInput,
) -> Result<HttpRequest, ProviderError> {
    if input.to.is_empty() || input.to.len() > MAX_RECIPIENTS {
        return Err(ProviderError::new(
            ErrorCode::PluginError,
            format!("SMS Club takes 1 to {MAX_RECIPIENTS} numbers per call, not {}", input.to.len()),
        ));
    }
    let Some(src_addr) = input.from.as_deref().filter(|s| !s.trim().is_empty()) else {
        return Err(ProviderError::new(
            ErrorCode::InvalidSender,
            "SMS Club needs a sender (one of the account's alpha names): set `sender` on the \
             provider instance or `from` in the request",
        ));
    };
    let body = SendBody { phone: &input.to, message: &input.text, src_addr, integration_id };
    Ok(post(base_url, SEND_PATH, token, encode(&body)?))
}

/// The `/sms/status` request for message ids `refs` (1 to [`MAX_STATUS_IDS`]).
pub fn status(base_url: &str, token: &Secret, refs: &[String]) -> Result<HttpRequest, ProviderError> {
    if refs.is_empty() || refs.len() > MAX_STATUS_IDS {
        return Err(ProviderError::new(
            ErrorCode::PluginError,
            format!("SMS Club takes 1 to {MAX_STATUS_IDS} message ids per status call, not {}", refs.len()),
        ));
    }
    Ok(post(base_url, STATUS_PATH, token, encode(&StatusBody { id_sms: refs })?))
}

/// The `/sms/balance` request ("without a request body").
pub fn balance(base_url: &str, token: &Secret) -> HttpRequest {
    post(base_url, BALANCE_PATH, token, String::new())
}
