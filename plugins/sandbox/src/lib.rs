//! The sandbox provider: a notifyd plugin that needs no network.
//!
//! `send` answers at once (no HTTP exchange) with a deterministic message id per recipient;
//! `status` reports every message `delivered`; `balance` reports the configured amount. Settings
//! make chosen recipients fail, for tests and demos. See `plugins/sandbox/README.md`.
#![forbid(unsafe_code)]

use notifyd_plugin::abi::{CAP_BALANCE, CAP_SEND, CAP_STATUS};
use notifyd_plugin::sdk::{OpResult, Provider, parse_settings};
use notifyd_plugin::wire::{
    BalanceResult, Describe, Exchange, InstanceInit, ProviderError, RecipientResult, SendInput, SendResult,
    StatusInput, StatusResult, StatusUpdate,
};
use notifyd_plugin::wire::{ErrorCode, Status};
use serde::Deserialize;
use std::collections::HashSet;

/// The sandbox's settings (`[providers.settings]`); every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Recipients (normal form) that `send` rejects with `invalid_recipient`.
    #[serde(default)]
    reject: Vec<String>,
    /// Recipients whose messages `status` reports `undelivered` instead of `delivered`.
    #[serde(default)]
    undeliverable: Vec<String>,
    /// The balance `balance` reports, in credits. Default 1000.
    #[serde(default = "default_balance")]
    balance: f64,
    /// A text that makes `send` panic: for testing that a plugin crash stays contained.
    #[serde(default)]
    panic_on_text: Option<String>,
}

fn default_balance() -> f64 {
    1000.0
}

pub struct Sandbox {
    reject: HashSet<String>,
    undeliverable: HashSet<String>,
    balance: f64,
    panic_on_text: Option<String>,
}

/// A stable message id for (request id, recipient): the same request gets the same ids.
fn message_id(id: &str, to: &str) -> String {
    // FNV-1a, 64 bit.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain([0]).chain(to.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sb-{h:016x}")
}

impl Provider for Sandbox {
    const CAPABILITIES: u64 = CAP_SEND | CAP_STATUS | CAP_BALANCE;

    fn describe() -> Describe {
        Describe::new("sandbox", env!("CARGO_PKG_VERSION"), 1000).with_max_status_refs(1000)
    }

    fn new(init: InstanceInit) -> Result<Self, ProviderError> {
        let s: Settings = parse_settings(&init)?;
        Ok(Sandbox {
            reject: s.reject.into_iter().collect(),
            undeliverable: s.undeliverable.into_iter().collect(),
            balance: s.balance,
            panic_on_text: s.panic_on_text,
        })
    }

    fn send(&self, input: &SendInput, _exchange: Option<&Exchange>) -> OpResult<SendResult> {
        if self.panic_on_text.as_deref() == Some(input.text.as_str()) {
            panic!("sandbox was told to panic on this text");
        }
        let recipients = input
            .to
            .iter()
            .map(|to| {
                if self.reject.contains(to) {
                    RecipientResult::failed(
                        to,
                        ProviderError::new(
                            ErrorCode::InvalidRecipient,
                            "the sandbox is configured to reject this number",
                        )
                        .with_provider_code("SANDBOX_REJECT"),
                    )
                } else {
                    let mut r = RecipientResult::sent(to, message_id(&input.id, to));
                    // The tracking reference carries the number, so status needs no state.
                    r.tracking =
                        Some(format!("{}:{to}", r.provider_message_id.as_deref().unwrap_or_default()));
                    r
                }
            })
            .collect();
        Ok(notifyd_plugin::wire::Step::done(SendResult::Recipients { recipients }))
    }

    fn status(&self, input: &StatusInput, _exchange: Option<&Exchange>) -> OpResult<StatusResult> {
        let statuses = input
            .refs
            .iter()
            .map(|reference| {
                let to = reference.split_once(':').map(|(_, to)| to).unwrap_or_default();
                let status =
                    if self.undeliverable.contains(to) { Status::Undelivered } else { Status::Delivered };
                StatusUpdate { reference: reference.clone(), to: None, status: status.into(), error: None }
            })
            .collect();
        Ok(notifyd_plugin::wire::Step::done(StatusResult::Statuses { statuses }))
    }

    fn balance(&self, _input: &serde_json::Value, _exchange: Option<&Exchange>) -> OpResult<BalanceResult> {
        Ok(notifyd_plugin::wire::Step::done(BalanceResult::Balance {
            amount: self.balance,
            currency: "credits".to_owned(),
        }))
    }
}

notifyd_plugin::export_plugin!(Sandbox);

#[cfg(test)]
mod tests {
    use super::*;
    use notifyd_plugin::sdk::testing;
    use notifyd_plugin::wire::Step;

    fn sandbox(settings: serde_json::Value) -> Result<Sandbox, ProviderError> {
        Sandbox::new(testing::init("sb", None, settings))
    }

    fn input(to: &[&str]) -> SendInput {
        SendInput { id: "r1".into(), ..testing::send_input(to, "hi") }
    }

    #[test]
    fn sends_each_recipient_and_rejects_configured_ones() {
        let sb = sandbox(serde_json::json!({"reject": ["4915100000002"]})).unwrap();
        let Ok(Step::Done { done: SendResult::Recipients { recipients } }) =
            sb.send(&input(&["4915100000001", "4915100000002"]), None)
        else {
            panic!("expected recipients")
        };
        assert_eq!(recipients[0].to, "4915100000001");
        assert_eq!(
            recipients[0].provider_message_id.as_deref(),
            Some(message_id("r1", "4915100000001").as_str())
        );
        assert!(recipients[0].error.is_none());
        assert_eq!(recipients[1].error.as_ref().unwrap().code, "invalid_recipient");
        assert_ne!(message_id("r1", "4915100000001"), message_id("r1", "4915100000003"));
    }

    #[test]
    fn status_reports_delivered_or_undelivered() {
        let sb = sandbox(serde_json::json!({"undeliverable": ["4915100000002"]})).unwrap();
        let refs = vec!["sb-1:4915100000001".to_owned(), "sb-2:4915100000002".to_owned()];
        let Ok(Step::Done { done: StatusResult::Statuses { statuses } }) =
            sb.status(&StatusInput { refs }, None)
        else {
            panic!("expected statuses")
        };
        assert_eq!(statuses[0].status, "delivered");
        assert_eq!(statuses[1].status, "undelivered");
    }

    #[test]
    fn unknown_setting_is_refused_by_name() {
        let err = sandbox(serde_json::json!({"rejekt": []})).err().unwrap();
        assert_eq!(err.code, "invalid_settings");
        assert!(err.message.contains("rejekt"), "{}", err.message);
    }
}
