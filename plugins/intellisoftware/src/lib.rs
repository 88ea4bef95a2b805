//! The IntelliSoftware (UK) provider: a notifyd plugin for the IntelliSoftware SMS gateway's HTTP
//! interface (`plugin = "intellisoftware"`).
//!
//! `send` posts one text to up to 100 numbers to `{base_url}/smsgateway/sendmsg.aspx` and reads
//! the plain-text answer (`ID:<id>`, or one `<number>,ID:<id>` / `<number>,ERR:<CODE>` line per
//! recipient); `balance` asks `{base_url}/smsgateway/getbalance.aspx` (`BALANCE:<credits>`);
//! `callback` reads the delivery reports the gateway pushes (form fields `msgid`, `status`,
//! `toaddr`). The gateway has no status-polling endpoint, so the plugin describes no `status`
//! capability. Request building is in `request.rs`, answer parsing in `response.rs`, and the
//! status and error mapping table in `mapping.rs`; see `plugins/intellisoftware/README.md`.
#![forbid(unsafe_code)]

mod mapping;
mod request;
mod response;
#[cfg(test)]
mod tests;

use notifyd_plugin::abi::{CAP_BALANCE, CAP_CALLBACK, CAP_SEND};
use notifyd_plugin::sdk::{
    Credentials, OpResult, Provider, expect_state, invalid_settings, parse_settings_with_credentials,
};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{
    BalanceResult, CallbackInput, CallbackResult, Describe, Exchange, InstanceInit, ProviderError, SendInput,
    SendResult, Step,
};
use serde::Deserialize;

/// The production gateway (the document's host, over https as it recommends).
pub const DEFAULT_BASE_URL: &str = "https://www.intellisoftware.co.uk";

/// The instance's settings (`[providers.settings]`) besides the gateway account's `username` and
/// `password`, which [`Credentials`] reads (both required, no default). The host resolves
/// `*_env` keys first, so `password_env = "VAR"` arrives as `password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// How texts that are not GSM-7 are sent. Default `"hex"`.
    #[serde(default)]
    unicode: Unicode,
}

/// How a text that is not GSM-7 is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unicode {
    /// `type=2` and `hex` = the text in UCS-2 big-endian hex: the form the provider's own client
    /// library uses for Unicode texts, so the one known to work. The default.
    #[default]
    Hex,
    /// `text` = the text in UTF-8, like a GSM-7 text (whether the gateway accepts every character
    /// this way is unconfirmed).
    Text,
}

/// One configured instance: what every request needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `InstanceInit.base_url`, default [`DEFAULT_BASE_URL`]; may carry a path prefix.
    pub base_url: String,
    pub creds: Credentials,
    pub unicode: Unicode,
}

/// The IntelliSoftware plugin instance.
#[derive(Debug)]
pub struct IntelliSoftware {
    config: Config,
}

impl IntelliSoftware {
    /// The credentials, to be masked wherever a body is quoted.
    fn secrets(&self) -> [&str; 2] {
        self.config.creds.secrets()
    }
}

impl Provider for IntelliSoftware {
    const CAPABILITIES: u64 = CAP_SEND | CAP_BALANCE | CAP_CALLBACK;

    fn describe() -> Describe {
        // No polling endpoint (no `max_status_refs`): delivery reports are pushed (callback).
        Describe::new("intellisoftware", env!("CARGO_PKG_VERSION"), request::MAX_RECIPIENTS as u32)
            .with_default_base_url(DEFAULT_BASE_URL)
    }

    fn new(init: InstanceInit) -> Result<Self, ProviderError> {
        let (creds, settings) = parse_settings_with_credentials::<Settings>(&init)?;
        let base_url = init.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let scheme_ok = ["http://", "https://"].iter().any(|s| {
            base_url.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s)) && base_url.len() > s.len()
        });
        if !scheme_ok {
            return Err(invalid_settings(&init, "`base_url` must be an absolute http:// or https:// URL"));
        }
        Ok(IntelliSoftware { config: Config { base_url, creds, unicode: settings.unicode } })
    }

    fn send(&self, input: &SendInput, exchange: Option<&Exchange>) -> OpResult<SendResult> {
        match exchange {
            None => Ok(Step::http(request::send(&self.config, input)?, request::SEND_STATE)),
            Some(ex) => {
                expect_state("send", ex, request::SEND_STATE)?;
                Ok(Step::done(response::send_result(input, ex.response()?, &self.secrets())))
            }
        }
    }

    fn balance(&self, _input: &serde_json::Value, exchange: Option<&Exchange>) -> OpResult<BalanceResult> {
        match exchange {
            None => Ok(Step::http(request::balance(&self.config), request::BALANCE_STATE)),
            Some(ex) => {
                expect_state("balance", ex, request::BALANCE_STATE)?;
                Ok(Step::done(response::balance_result(ex.response()?, &self.secrets())))
            }
        }
    }

    fn callback(&self, input: &CallbackInput, exchange: Option<&Exchange>) -> OpResult<CallbackResult> {
        if exchange.is_some() {
            return Err(ProviderError::new(
                ErrorCode::PluginError,
                "a delivery report needs no HTTP exchange",
            ));
        }
        Ok(Step::done(response::delivery_report(input)?))
    }
}

notifyd_plugin::export_plugin!(IntelliSoftware);
