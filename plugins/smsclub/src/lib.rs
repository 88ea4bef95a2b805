//! The SMS Club (Ukraine) provider plugin for notifyd (`plugin = "smsclub"`).
//!
//! SMS Club's JSON API (`https://im.smsclub.mobi`) takes every call as a `POST` with a bearer
//! token: `/sms/send` (one text to up to 100 numbers, one message id per number), `/sms/status`
//! (up to 100 ids) and `/sms/balance`. This crate translates notifyd's `send`, `status` and
//! `balance` operations into those calls ([`request`]) and their answers back into normalised
//! results ([`response`]) through one mapping table ([`mapping`]); the host performs the HTTP
//! exchanges. See `plugins/smsclub/README.md` for the settings and the full mapping.
#![forbid(unsafe_code)]

pub mod mapping;
pub mod request;
pub mod response;

#[cfg(test)]
mod tests;

use notifyd_plugin::abi::{CAP_BALANCE, CAP_SEND, CAP_STATUS};
use notifyd_plugin::sdk::{
    OpResult, Provider, Secret, expect_state, invalid_settings, parse_settings, redact_secrets,
    require_string_settings,
};
use notifyd_plugin::wire::{
    BalanceResult, Describe, Exchange, HttpResponse, InstanceInit, ProviderError, SendInput, SendResult,
    StatusInput, StatusResult, Step,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// SMS Club's production API, used when the instance sets no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://im.smsclub.mobi";

/// The `state` of each operation's one HTTP exchange.
const STATE_SEND: &str = "smsclub/send";
const STATE_STATUS: &str = "smsclub/status";
const STATE_BALANCE: &str = "smsclub/balance";

/// The instance's `[providers.settings]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The API token of the SMS Club account (sent as `Authorization: Bearer <token>`). Required;
    /// `token_env = "VAR"` reads it from the environment instead (resolved by the host).
    token: Secret,
    /// The `integration_id` of SMS Club's referral system, sent with every message (a number or
    /// a string, passed on as given). Default: none, and the field is not sent.
    #[serde(default)]
    integration_id: Option<IntegrationId>,
}

/// The referral `integration_id`: sent as the number or string it was configured as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntegrationId {
    Number(u64),
    Text(String),
}

/// One SMS Club provider instance.
#[derive(Debug)]
pub struct SmsClub {
    base_url: String,
    token: Secret,
    integration_id: Option<IntegrationId>,
}

impl SmsClub {
    /// The provider's answer with the token masked (`***`) before anything reads it, so that a
    /// provider echoing it cannot put it into an error message, an event or a log.
    fn masked<'a>(&self, response: &'a HttpResponse) -> Cow<'a, HttpResponse> {
        match redact_secrets(&response.body, &[self.token.expose()]) {
            Cow::Borrowed(_) => Cow::Borrowed(response),
            Cow::Owned(body) => Cow::Owned(HttpResponse {
                status: response.status,
                headers: response.headers.clone(),
                body,
                json: None,
            }),
        }
    }
}

impl Provider for SmsClub {
    const CAPABILITIES: u64 = CAP_SEND | CAP_STATUS | CAP_BALANCE;

    fn describe() -> Describe {
        Describe::new("smsclub", env!("CARGO_PKG_VERSION"), request::MAX_RECIPIENTS as u32)
            .with_max_status_refs(request::MAX_STATUS_IDS as u32)
            .with_default_base_url(DEFAULT_BASE_URL)
    }

    fn new(init: InstanceInit) -> Result<Self, ProviderError> {
        // Names the key, where serde's type error would not (neither quotes the value).
        require_string_settings(&init, &["token"])?;
        let settings: Settings = parse_settings(&init)?;
        let token = settings.token.expose();
        if token.is_empty() {
            return Err(invalid_settings(&init, "`token` is empty"));
        }
        // It goes into an HTTP header: visible ASCII only (never quoted back).
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid_settings(&init, "`token` contains spaces, control or non-ASCII characters"));
        }
        let base_url = init.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let lower = base_url.to_ascii_lowercase();
        let scheme_ok = lower.starts_with("http://") || lower.starts_with("https://");
        if !scheme_ok || base_url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid_settings(
                &init,
                &format!("base_url {base_url:?} is not an absolute http:// or https:// URL"),
            ));
        }
        Ok(SmsClub { base_url, token: settings.token, integration_id: settings.integration_id })
    }

    fn send(&self, input: &SendInput, exchange: Option<&Exchange>) -> OpResult<SendResult> {
        let result = match exchange {
            None => match request::send(&self.base_url, &self.token, self.integration_id.as_ref(), input) {
                Ok(http) => return Ok(Step::http(http, STATE_SEND)),
                Err(error) => SendResult::Failed { error },
            },
            Some(exchange) => {
                expect_state("send", exchange, STATE_SEND)?;
                response::send(&input.to, &self.masked(exchange.response()?))
            }
        };
        Ok(Step::done(result))
    }

    fn status(&self, input: &StatusInput, exchange: Option<&Exchange>) -> OpResult<StatusResult> {
        let result = match exchange {
            None if input.refs.is_empty() => StatusResult::Statuses { statuses: Vec::new() },
            None => match request::status(&self.base_url, &self.token, &input.refs) {
                Ok(http) => return Ok(Step::http(http, STATE_STATUS)),
                Err(error) => StatusResult::Failed { error },
            },
            Some(exchange) => {
                expect_state("status", exchange, STATE_STATUS)?;
                response::status(&input.refs, &self.masked(exchange.response()?))
            }
        };
        Ok(Step::done(result))
    }

    fn balance(&self, _input: &serde_json::Value, exchange: Option<&Exchange>) -> OpResult<BalanceResult> {
        match exchange {
            None => Ok(Step::http(request::balance(&self.base_url, &self.token), STATE_BALANCE)),
            Some(exchange) => {
                expect_state("balance", exchange, STATE_BALANCE)?;
                Ok(Step::done(response::balance(&self.masked(exchange.response()?))))
            }
        }
    }
}

notifyd_plugin::export_plugin!(SmsClub);
