//! Building the HTTP requests: `sendmsg.aspx` (send) and `getbalance.aspx` (balance).
//!
//! Both are `POST`s with an `application/x-www-form-urlencoded` body, as the provider's own client
//! library sends them (the document allows URL or POST parameters). The body keeps the
//! credentials out of URLs, where proxies and access logs would record them, and has no length
//! limit for long texts.

use crate::{Config, Unicode};
use notifyd_plugin::sdk::{form_encode, join_url};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{HttpRequest, ProviderError, SendInput};

/// The send endpoint, relative to the base URL (which may carry a path prefix).
pub const SEND_PATH: &str = "smsgateway/sendmsg.aspx";
/// The balance endpoint, relative to the base URL.
pub const BALANCE_PATH: &str = "smsgateway/getbalance.aspx";
/// Most numbers one send accepts ("A maximum of 100 numbers can be specified").
pub const MAX_RECIPIENTS: usize = 100;

/// The `state` of a send's exchange.
pub const SEND_STATE: &str = "send";
/// The `state` of a balance query's exchange.
pub const BALANCE_STATE: &str = "balance";

/// The request that sends `input.text` to `input.to`.
///
/// Parameters: `username`, `password`, `to` (the numbers, comma separated, in notifyd's normal
/// form: international, digits only), then the text: GSM-7 texts as `text` (UTF-8); other texts
/// per [`Unicode`]: `type=2` + `hex` (UCS-2 big-endian, four hex digits per UTF-16 unit) or
/// `text` (UTF-8). `from` when a sender is set; `maxconcat` = the host's segment count, so a long
/// text goes out whole (the gateway's default of 1 would cut it).
pub fn send(config: &Config, input: &SendInput) -> Result<HttpRequest, ProviderError> {
    check_recipients(&input.to)?;
    let to = input.to.join(",");
    let maxconcat = input.segments.max(1).to_string();
    let hex;
    let mut params: Vec<(&str, &str)> = vec![
        ("username", config.creds.username.as_str()),
        ("password", config.creds.password.expose()),
        ("to", to.as_str()),
    ];
    if input.encoding != "gsm7" && config.unicode == Unicode::Hex {
        hex = ucs2_hex(&input.text);
        params.extend([("type", "2"), ("hex", hex.as_str())]);
    } else {
        params.push(("text", input.text.as_str()));
    }
    if let Some(from) = input.from.as_deref().filter(|f| !f.is_empty()) {
        params.push(("from", from));
    }
    params.push(("maxconcat", maxconcat.as_str()));
    Ok(post(join_url(&config.base_url, SEND_PATH), form_encode(params)))
}

/// The request that asks for the account balance (`username`, `password`).
pub fn balance(config: &Config) -> HttpRequest {
    let body = form_encode([
        ("username", config.creds.username.as_str()),
        ("password", config.creds.password.expose()),
    ]);
    post(join_url(&config.base_url, BALANCE_PATH), body)
}

fn post(url: String, body: String) -> HttpRequest {
    HttpRequest {
        method: "POST".to_owned(),
        url,
        headers: vec![("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())],
        body,
        ..Default::default()
    }
}

/// The host hands over 1..=100 numbers in normal form; anything else is a host bug, refused
/// before it reaches the gateway (a stray `,` would split a number in two).
fn check_recipients(to: &[String]) -> Result<(), ProviderError> {
    if to.is_empty() || to.len() > MAX_RECIPIENTS {
        return Err(ProviderError::new(
            ErrorCode::PluginError,
            format!("a send takes 1 to {MAX_RECIPIENTS} recipients, not {}", to.len()),
        ));
    }
    if let Some(pos) = to.iter().position(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ProviderError::new(
            ErrorCode::PluginError,
            format!("recipient #{pos} is not in normal form (digits only)"),
        ));
    }
    Ok(())
}

/// `text` as UCS-2 big-endian in lower-case hex, four digits per UTF-16 code unit (the form the
/// provider's client library sends). Characters beyond the Basic Multilingual Plane (emoji) become
/// a surrogate pair, as in UTF-16.
pub fn ucs2_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(text.len() * 4);
    for unit in text.encode_utf16() {
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((unit >> shift) & 0xf)] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ucs2_hex_is_big_endian_four_digits_per_unit() {
        assert_eq!(ucs2_hex("A"), "0041");
        assert_eq!(ucs2_hex("Привет"), "041f04400438043204350442");
        assert_eq!(ucs2_hex("€"), "20ac");
        assert_eq!(ucs2_hex("😀"), "d83dde00");
        assert_eq!(ucs2_hex(""), "");
    }

    #[test]
    fn recipients_must_be_digits_and_at_most_100() {
        assert!(check_recipients(&["447700900123".into()]).is_ok());
        assert_eq!(check_recipients(&[]).unwrap_err().code, "plugin_error");
        assert!(check_recipients(&vec!["447700900123".to_owned(); 101]).is_err());
        assert!(check_recipients(&vec!["447700900123".to_owned(); 100]).is_ok());
        let e = check_recipients(&["447700900123".into(), "44,77".into()]).unwrap_err();
        assert!(e.message.contains("#1"), "{}", e.message);
        assert!(check_recipients(&["".into()]).is_err());
    }
}
