//! The SendSMSGate provider plugin (`plugin = "sendmsgate"`): sends SMS through
//! `cloud.sendmsgate.com`'s HTTP GET interface, follows each message's delivery by polling the
//! status of every part, and reads the account balance.
//!
//! The gateway gives one message id per SMS part, per recipient; a recipient's tracking reference
//! carries all of its part ids, and its status is their combination (delivered only when every
//! part is). Requests are built in [`request`], answers read in [`response`], and what each answer
//! means is the data of [`mapping`]. See `plugins/sendmsgate/README.md`.
#![forbid(unsafe_code)]

pub mod mapping;
pub mod request;
pub mod response;

#[cfg(test)]
mod tests;

use mapping::{PartStatus, Scope};
use notifyd_plugin::abi::{CAP_BALANCE, CAP_SEND, CAP_STATUS};
pub use notifyd_plugin::sdk::Credentials;
use notifyd_plugin::sdk::{
    OpResult, Provider, expect_state, invalid_settings, parse_settings_with_credentials,
};
use notifyd_plugin::wire::{
    BalanceResult, Describe, Exchange, InstanceInit, MAX_EXCHANGES, ProviderError, RecipientResult,
    SendInput, SendResult, StatusInput, StatusResult, StatusUpdate, Step,
};
use notifyd_plugin::wire::{ErrorCode, Status};
use request::StatusParam;
use serde::{Deserialize, Serialize};

/// The production URL (the API document's host).
pub const DEFAULT_BASE_URL: &str = "https://cloud.sendmsgate.com";

/// Most numbers one send call takes (15). The gateway documents no limit; this one keeps a call
/// within the host's [`MAX_EXCHANGES`] HTTP exchanges per operation even when the gateway refuses
/// the batch for one number's sake and each number must be sent alone (1 + 15 exchanges).
pub const MAX_RECIPIENTS: u32 = MAX_EXCHANGES as u32 - 1;

/// Most tracking references one status call takes. The gateway answers one id per query and a
/// reference holds one id per part (a text of 10 parts, notifyd's default maximum, takes 10
/// queries), so one reference per call keeps a call within the host's 16 exchanges.
pub const MAX_STATUS_REFS: u32 = 1;

/// The instance's `[providers.settings]` besides `username` (sent as `user`) and `password`
/// (sent as `pwd`), which [`Credentials`] reads: both required, non-empty; or `username_env`,
/// `password_env`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The status query's id parameter: `"msgid"` (default, as SendSMSGate documents it) or
    /// `"smsid"` (sibling platforms of the same white-label gateway).
    #[serde(default)]
    status_param: StatusParam,
}

/// One configured SendSMSGate account.
#[derive(Debug)]
pub struct SendSmsGate {
    base_url: String,
    creds: Credentials,
    status_param: StatusParam,
}

fn bad_state() -> ProviderError {
    ProviderError::new(ErrorCode::PluginError, "the exchange state does not belong to this operation's input")
}

/// What a send call has learnt so far, carried in the exchange `state`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
enum SendState {
    /// The answer is the one to every eligible number at once.
    Batch,
    /// The batch was refused for one number's sake; numbers are being sent one by one. The
    /// answer is the one to eligible number `done.len()`.
    Single { done: Vec<Outcome> },
}

/// One number's outcome while sending one by one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Ids(Vec<String>),
    Error(ProviderError),
}

/// Where a status call stands, carried in the exchange `state`: the updates decided so far, and
/// the statuses of the parts of reference `updates.len()` known so far (the answer is for the
/// next part).
#[derive(Debug, Default, Serialize, Deserialize)]
struct StatusState {
    updates: Vec<StatusUpdate>,
    parts: Vec<PartStatus>,
    /// Exchanges performed so far in this call, the one answered included.
    used: usize,
}

/// The part ids of a tracking reference: comma-separated ids as [`sent`] wrote them.
fn reference_ids(reference: &str) -> Option<Vec<&str>> {
    let ids: Vec<&str> = reference.split(',').map(str::trim).collect();
    let valid = ids.iter().all(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    valid.then_some(ids)
}

/// The result for a recipient the gateway accepted with `ids` (one per part): the
/// `provider_message_id` and the tracking reference are both the ids joined by `,`.
fn sent(to: &str, ids: &[String]) -> RecipientResult {
    let joined = ids.join(",");
    RecipientResult {
        to: to.to_owned(),
        provider_message_id: Some(joined.clone()),
        tracking: Some(joined),
        error: None,
    }
}

/// Splits the ids of a batch answer among its `n` numbers. The gateway lists one id per part per
/// number; with `m` ids for `n` numbers and `m` a multiple of `n`, number `i` (in `dadr` order)
/// gets ids `i*k .. (i+1)*k` where `k = m / n` (number-major order, the order in which a gateway
/// that splits each number's text into parts creates them). Any other count cannot be split
/// safely: every number then gets every id, so each is tracked as the combination of all of them.
fn assign_ids(ids: &[String], n: usize) -> Vec<Vec<String>> {
    if n > 0 && ids.len() % n == 0 {
        ids.chunks(ids.len() / n).map(<[String]>::to_vec).collect()
    } else {
        vec![ids.to_vec(); n]
    }
}

impl SendSmsGate {
    /// The recipients the plugin refuses itself, by position in `input.to`.
    fn local_errors(input: &SendInput) -> Vec<Option<ProviderError>> {
        input.to.iter().map(|n| request::check_number(n)).collect()
    }

    fn send_request(&self, input: &SendInput, numbers: &[&str]) -> notifyd_plugin::wire::HttpRequest {
        request::send(&self.base_url, &self.creds, input.from.as_deref(), numbers, &input.text)
    }

    /// The result: one entry per recipient of `input.to`, in order; `eligible[i]` got `outcomes[i]`.
    fn finish(
        input: &SendInput,
        local: Vec<Option<ProviderError>>,
        eligible: &[usize],
        outcomes: Vec<Outcome>,
    ) -> SendResult {
        let mut by_position: Vec<Option<Outcome>> =
            local.into_iter().map(|e| e.map(Outcome::Error)).collect();
        for (&pos, outcome) in eligible.iter().zip(outcomes) {
            by_position[pos] = Some(outcome);
        }
        let recipients = input
            .to
            .iter()
            .zip(by_position)
            .map(|(to, outcome)| match outcome {
                Some(Outcome::Ids(ids)) => sent(to, &ids),
                Some(Outcome::Error(e)) => RecipientResult::failed(to, e),
                None => RecipientResult::failed(
                    to,
                    ProviderError::new(ErrorCode::PluginError, "the plugin lost track of this recipient"),
                ),
            })
            .collect();
        SendResult::Recipients { recipients }
    }

    /// The next step of sending one by one, `done` holding the outcomes so far.
    fn next_single(&self, input: &SendInput, eligible: &[usize], done: Vec<Outcome>) -> OpResult<SendResult> {
        let local = Self::local_errors(input);
        match eligible.get(done.len()) {
            None => Ok(Step::done(Self::finish(input, local, eligible, done))),
            Some(&pos) => {
                let state = serde_json::to_string(&SendState::Single { done }).map_err(|_| bad_state())?;
                Ok(Step::http(self.send_request(input, &[input.to[pos].as_str()]), state))
            }
        }
    }

    /// The status of references from `updates.len()` on: asks for the next part of the first one,
    /// or answers once every reference is decided or the exchange budget is spent.
    fn next_status(&self, input: &StatusInput, mut state: StatusState) -> OpResult<StatusResult> {
        while let Some(reference) = input.refs.get(state.updates.len()) {
            let Some(ids) = reference_ids(reference) else {
                state.updates.push(StatusUpdate {
                    reference: reference.clone(),
                    to: None,
                    status: Status::Unknown.into(),
                    error: Some(ProviderError::new(
                        ErrorCode::PluginError,
                        "the tracking reference is not a list of SendSMSGate message ids",
                    )),
                });
                state.parts.clear();
                continue;
            };
            if state.used >= MAX_EXCHANGES {
                // Out of exchanges for this call: the references left are not reported, so the
                // host keeps them pending and asks again at the next poll.
                break;
            }
            let Some(id) = ids.get(state.parts.len()) else { return Err(bad_state()) };
            let http = request::status(&self.base_url, &self.creds, self.status_param, id);
            state.used += 1;
            let encoded = serde_json::to_string(&state).map_err(|_| bad_state())?;
            return Ok(Step::http(http, encoded));
        }
        Ok(Step::done(StatusResult::Statuses { statuses: state.updates }))
    }
}

impl Provider for SendSmsGate {
    const CAPABILITIES: u64 = CAP_SEND | CAP_STATUS | CAP_BALANCE;

    fn describe() -> Describe {
        Describe::new("sendmsgate", env!("CARGO_PKG_VERSION"), MAX_RECIPIENTS)
            .with_max_status_refs(MAX_STATUS_REFS)
            .with_default_base_url(DEFAULT_BASE_URL)
    }

    fn new(init: InstanceInit) -> Result<Self, ProviderError> {
        let (creds, s) = parse_settings_with_credentials::<Settings>(&init)?;
        let base_url = init.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let scheme_ok = base_url.starts_with("https://") || base_url.starts_with("http://");
        let host_ok =
            base_url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
        if !scheme_ok
            || !host_ok
            || base_url.contains(['?', '#'])
            || base_url.chars().any(char::is_whitespace)
        {
            return Err(invalid_settings(
                &init,
                "`base_url` must be an absolute http:// or https:// URL without query or fragment",
            ));
        }
        Ok(SendSmsGate { base_url, creds, status_param: s.status_param })
    }

    /// One request with every number the plugin does not refuse itself. If the gateway refuses it
    /// for one number's sake (stop list, closed direction...), it does not say which number: the
    /// numbers are then sent one at a time, so each gets its own answer. A refusal never sends
    /// anything (the gateway answers ids or an error, not both), so nobody gets the text twice.
    fn send(&self, input: &SendInput, exchange: Option<&Exchange>) -> OpResult<SendResult> {
        let local = Self::local_errors(input);
        let eligible: Vec<usize> = (0..input.to.len()).filter(|&i| local[i].is_none()).collect();
        let Some(exchange) = exchange else {
            if eligible.is_empty() {
                return Ok(Step::done(Self::finish(input, local, &eligible, Vec::new())));
            }
            let numbers: Vec<&str> = eligible.iter().map(|&i| input.to[i].as_str()).collect();
            let state = serde_json::to_string(&SendState::Batch).map_err(|_| bad_state())?;
            return Ok(Step::http(self.send_request(input, &numbers), state));
        };
        let state: SendState = serde_json::from_str(&exchange.state).map_err(|_| bad_state())?;
        let answer = response::send(exchange.response()?, &self.creds);
        match state {
            SendState::Batch => {
                let outcomes = match answer {
                    Ok(ids) => assign_ids(&ids, eligible.len()).into_iter().map(Outcome::Ids).collect(),
                    Err((_, Scope::Number)) if eligible.len() > 1 => {
                        return self.next_single(input, &eligible, Vec::new());
                    }
                    // One error for the whole request, when it is about the request and concerns
                    // every recipient.
                    Err((error, Scope::Request)) if eligible.len() == input.to.len() => {
                        return Ok(Step::done(SendResult::Failed { error }));
                    }
                    Err((e, _)) => vec![Outcome::Error(e); eligible.len()],
                };
                Ok(Step::done(Self::finish(input, local, &eligible, outcomes)))
            }
            SendState::Single { mut done } => {
                if done.len() >= eligible.len() {
                    return Err(bad_state());
                }
                match answer {
                    Ok(ids) => done.push(Outcome::Ids(ids)),
                    Err((e, Scope::Number)) => done.push(Outcome::Error(e)),
                    Err((e, Scope::Request)) => {
                        // The whole account or gateway answered: the numbers left would get the same
                        // answer, so they are not asked. An unreadable answer concerns this number
                        // only (the gateway may have sent it); the others were never sent and may be
                        // tried again.
                        let rest = if e.code == "plugin_error" {
                            ProviderError::retryable(
                                ErrorCode::Unavailable,
                                "not sent: the gateway's answer for another number of the same request was unreadable",
                            )
                        } else {
                            e.clone()
                        };
                        done.push(Outcome::Error(e));
                        while done.len() < eligible.len() {
                            done.push(Outcome::Error(rest.clone()));
                        }
                    }
                }
                self.next_single(input, &eligible, done)
            }
        }
    }

    /// One query per part id, parts in order, stopping at the first part that is not delivered:
    /// that part decides (see [`mapping::combine`]).
    fn status(&self, input: &StatusInput, exchange: Option<&Exchange>) -> OpResult<StatusResult> {
        let Some(exchange) = exchange else {
            return self.next_status(input, StatusState::default());
        };
        let mut state: StatusState = serde_json::from_str(&exchange.state).map_err(|_| bad_state())?;
        let reference = input.refs.get(state.updates.len()).ok_or_else(bad_state)?;
        let ids = reference_ids(reference).ok_or_else(bad_state)?;
        if state.parts.len() >= ids.len() {
            return Err(bad_state());
        }
        let part = match response::status(exchange.response()?, &self.creds) {
            Ok(part) => part,
            Err(error) => return Ok(Step::done(StatusResult::Failed { error })),
        };
        state.parts.push(part);
        // Decided once a part is not delivered, or once every part has answered.
        if part != PartStatus::Delivered || state.parts.len() == ids.len() {
            let status = mapping::combine(state.parts.drain(..)).unwrap_or(PartStatus::Pending);
            state.updates.push(StatusUpdate {
                reference: reference.clone(),
                to: None,
                status: status.as_status().into(),
                error: None,
            });
        }
        self.next_status(input, state)
    }

    fn balance(&self, _input: &serde_json::Value, exchange: Option<&Exchange>) -> OpResult<BalanceResult> {
        let Some(exchange) = exchange else {
            return Ok(Step::http(request::balance(&self.base_url, &self.creds), "balance"));
        };
        expect_state("balance", exchange, "balance")?;
        Ok(Step::done(match response::balance(exchange.response()?, &self.creds) {
            Ok((amount, currency)) => BalanceResult::Balance { amount, currency },
            Err(error) => BalanceResult::Failed { error },
        }))
    }
}

notifyd_plugin::export_plugin!(SendSmsGate);
