//! The SMSC / SMS Center provider (`plugin = "smsc"`, <https://smsc.ru>): a notifyd plugin that
//! sends through SMSC's HTTP API (`sys/send.php`), polls delivery statuses (`sys/status.php`, in
//! batches of id + phone pairs) and reads the account balance (`sys/balance.php`), with native
//! scheduling (`time`).
//!
//! Like every notifyd plugin it only translates: [`request`] builds each HTTP request,
//! [`response`] reads each answer, [`mapping`] holds the status and error tables; the host performs
//! the exchanges and decides about retries and failover. See `plugins/smsc/README.md`.
#![forbid(unsafe_code)]

pub mod mapping;
pub mod request;
pub mod response;
#[cfg(test)]
mod tests;

use notifyd_plugin::abi::{CAP_BALANCE, CAP_SCHEDULE, CAP_SEND, CAP_STATUS};
use notifyd_plugin::sdk::{Credentials, OpResult, Provider, expect_state, invalid_settings, now_unix};
use notifyd_plugin::wire::{
    BalanceResult, Describe, Exchange, InstanceInit, ProviderError, SendInput, SendResult, StatusInput,
    StatusResult, StatusUpdate, Step,
};
use notifyd_plugin::wire::{ErrorCode, Status};
use request::TrackingRef;

/// SMSC's production URL, used when the instance sets no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://smsc.ru";

/// Most recipients per `send` call. SMSC documents no maximum for `phones`; 100 keeps the request
/// moderate and bounds what one whole-request error (e.g. error 7 for a batch) affects.
pub const MAX_RECIPIENTS: u32 = 100;

/// Most tracking references per `status` call: SMSC takes comma lists of phones and ids.
pub const MAX_STATUS_REFS: u32 = 100;

/// One configured SMSC instance: where to send, and as whom.
#[derive(Debug)]
pub struct Smsc {
    base_url: String,
    creds: Credentials,
}

/// The `state` of each operation's one exchange.
const STATE_SEND: &str = "smsc-send";
const STATE_STATUS: &str = "smsc-status";
const STATE_BALANCE: &str = "smsc-balance";

impl Smsc {
    /// Creates an instance from `init`, with its settings checked: the settings are `username`
    /// (sent as `login`) and `password` (sent as `psw`), both required (see [`Credentials`]), and
    /// a `base_url` that is not an absolute http(s) URL is an error.
    pub fn from_init(init: &InstanceInit) -> Result<Self, ProviderError> {
        let creds = Credentials::from_settings(init)?;
        let base_url = init.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let host = base_url.strip_prefix("https://").or_else(|| base_url.strip_prefix("http://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/') && !h.contains(['?', '#', ' '])) {
            // The URL is not repeated: it may carry credentials of a proxy.
            return Err(invalid_settings(
                init,
                "`base_url` must be an absolute http:// or https:// URL without query or fragment",
            ));
        }
        Ok(Smsc { base_url, creds })
    }

    /// The send's first step (the request) or its result (the answer read), with `now_unix` as
    /// the current time for scheduling.
    pub fn send_as_of(
        &self,
        input: &SendInput,
        exchange: Option<&Exchange>,
        now_unix: i64,
    ) -> OpResult<SendResult> {
        if input.to.is_empty() {
            return Ok(Step::done(SendResult::Recipients { recipients: Vec::new() }));
        }
        match exchange {
            None => Ok(Step::http(request::send(&self.base_url, &self.creds, input, now_unix)?, STATE_SEND)),
            Some(ex) => {
                expect_state("send", ex, STATE_SEND)?;
                Ok(Step::done(response::send(&input.to, ex.response()?, &self.creds.secrets())))
            }
        }
    }
}

impl Provider for Smsc {
    const CAPABILITIES: u64 = CAP_SEND | CAP_STATUS | CAP_BALANCE | CAP_SCHEDULE;

    fn describe() -> Describe {
        Describe::new("smsc", env!("CARGO_PKG_VERSION"), MAX_RECIPIENTS)
            .with_max_status_refs(MAX_STATUS_REFS)
            .with_default_base_url(DEFAULT_BASE_URL)
    }

    fn new(init: InstanceInit) -> Result<Self, ProviderError> {
        Smsc::from_init(&init)
    }

    fn send(&self, input: &SendInput, exchange: Option<&Exchange>) -> OpResult<SendResult> {
        self.send_as_of(input, exchange, now_unix())
    }

    /// Queries every well-formed reference in one call; a reference this plugin did not make can
    /// never be answered, so it ends `unknown` at once (with a `plugin_error` saying why).
    fn status(&self, input: &StatusInput, exchange: Option<&Exchange>) -> OpResult<StatusResult> {
        let parsed: Vec<Option<TrackingRef>> = input.refs.iter().map(|r| TrackingRef::parse(r)).collect();
        let valid: Vec<TrackingRef> = parsed.iter().flatten().cloned().collect();
        let mut statuses: Vec<StatusUpdate> = input
            .refs
            .iter()
            .zip(&parsed)
            .filter(|(_, p)| p.is_none())
            .map(|(reference, _)| StatusUpdate {
                reference: reference.clone(),
                to: None,
                status: Status::Unknown.into(),
                error: Some(ProviderError::new(
                    ErrorCode::PluginError,
                    "the tracking reference is not one this plugin made (`<id>:<phone>`)",
                )),
            })
            .collect();
        if valid.is_empty() {
            return Ok(Step::done(StatusResult::Statuses { statuses }));
        }
        match exchange {
            None => Ok(Step::http(request::status(&self.base_url, &self.creds, &valid), STATE_STATUS)),
            Some(ex) => {
                expect_state("status", ex, STATE_STATUS)?;
                Ok(Step::done(match response::status(&valid, ex.response()?, &self.creds.secrets()) {
                    StatusResult::Statuses { statuses: answered } => {
                        statuses.extend(answered);
                        StatusResult::Statuses { statuses }
                    }
                    failed => failed,
                }))
            }
        }
    }

    fn balance(&self, _input: &serde_json::Value, exchange: Option<&Exchange>) -> OpResult<BalanceResult> {
        match exchange {
            None => Ok(Step::http(request::balance(&self.base_url, &self.creds), STATE_BALANCE)),
            Some(ex) => {
                expect_state("balance", ex, STATE_BALANCE)?;
                Ok(Step::done(response::balance(ex.response()?, &self.creds.secrets())))
            }
        }
    }
}

notifyd_plugin::export_plugin!(Smsc);
