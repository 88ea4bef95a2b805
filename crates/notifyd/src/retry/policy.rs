//! The host's policy for provider answers: plugins only classify an answer (an error code,
//! `retryable`, `retry_after_ms`); what happens next is decided here, and nowhere else.
//!
//! A recipient error ends the recipient; a retryable error retries on the same provider with
//! exponential backoff and jitter (honouring the provider's delay up to `retry.max_backoff`), up to
//! `retry.max_attempts` tries; a plugin failure (`plugin_error`, `internal`, or a code the host
//! does not know: the provider may have acted) ends the recipient `failed`; anything else fails
//! over to the next provider of the route. An **ambiguous** attempt (a timeout or a broken
//! connection after the request was sent, or an attempt interrupted by a crash before its outcome
//! was recorded in the ledger) is resent or ended `failed`/`timeout` as `retry.on_ambiguous` says
//! ([`Policy::ambiguous`]).

use super::Backoff;
use crate::config::{OnAmbiguous, RetryConfig};
use notifyd_plugin::wire::{ErrorCode, ProviderError};
use std::time::Duration;

/// What the host does with a classified error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The recipient is refused for good (`rejected`).
    Reject,
    /// Try the same provider again, after at least this long when the provider said so.
    Retry { after: Option<Duration> },
    /// Give up on this provider for this recipient; try the next one of the route.
    Failover,
    /// Give up on this recipient (`failed`).
    Fail,
}

/// The host's classification of a provider error. Exhaustive over [`ErrorCode`]: a new code
/// needs a decision here.
pub fn classify(error: &ProviderError, ambiguous: bool, on_ambiguous: OnAmbiguous) -> Action {
    match error.code {
        ErrorCode::InvalidRecipient
        | ErrorCode::BlockedRecipient
        | ErrorCode::ContentRejected
        | ErrorCode::InvalidSender
        | ErrorCode::Duplicate => Action::Reject,
        // A plugin that failed or could not read the answer: the provider may have acted on the
        // request, so it is neither retried nor sent elsewhere. A code the host does not know
        // (or `invalid_settings`, which belongs to `instance_new`) says as little: the provider
        // module normally turns it into `plugin_error` first.
        ErrorCode::Expired
        | ErrorCode::PluginError
        | ErrorCode::Internal
        | ErrorCode::InvalidSettings
        | ErrorCode::Unrecognised(_) => Action::Fail,
        ErrorCode::InvalidRequest
        | ErrorCode::Auth
        | ErrorCode::InsufficientFunds
        | ErrorCode::Throttled
        | ErrorCode::Unavailable
        | ErrorCode::Timeout
        | ErrorCode::RouteClosed => {
            if ambiguous && on_ambiguous == OnAmbiguous::Fail {
                Action::Fail
            } else if error.retryable {
                Action::Retry { after: error.retry_after_ms.map(Duration::from_millis) }
            } else {
                Action::Failover
            }
        }
    }
}

/// What becomes of one recipient after one provider call's error.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Refused for good: end it `rejected` with this error.
    Reject(ProviderError),
    /// Try the same provider again after `delay`. `ambiguous`: the provider may have sent it
    /// already (counted in `notifyd_ambiguous_resends_total`).
    Retry { delay: Duration, ambiguous: bool, error: ProviderError },
    /// Try the next provider of the route (or end `failed` with this error when none is left).
    Failover(ProviderError),
    /// End it `failed` with this error.
    Fail(ProviderError),
}

/// The retry policy, from `[retry]`.
#[derive(Debug, Clone)]
pub struct Policy {
    config: RetryConfig,
    backoff: Backoff,
}

impl Policy {
    pub fn new(config: RetryConfig) -> Self {
        let backoff = Backoff::new(config.initial_backoff, config.max_backoff);
        Policy { config, backoff }
    }

    /// Decides what becomes of a recipient whose `try_no`-th call on a provider (1 for the first)
    /// answered `error`; `ambiguous`: the provider may have acted on it.
    pub fn decide(&self, error: ProviderError, ambiguous: bool, try_no: u32) -> Decision {
        match classify(&error, ambiguous, self.config.on_ambiguous) {
            Action::Reject => Decision::Reject(error),
            Action::Fail if ambiguous && self.config.on_ambiguous == OnAmbiguous::Fail => {
                Decision::Fail(not_resent(error))
            }
            Action::Fail => Decision::Fail(error),
            Action::Retry { after } if try_no < self.config.max_attempts => {
                let delay = after.unwrap_or_else(|| self.backoff.jittered(try_no));
                if delay <= self.config.max_backoff {
                    Decision::Retry { delay, ambiguous, error }
                } else {
                    Decision::Failover(error)
                }
            }
            Action::Retry { .. } | Action::Failover => Decision::Failover(error),
        }
    }

    /// Decides a recipient whose earlier attempt was interrupted before its outcome was
    /// recorded (the crash window: the provider may have sent it): `Ok` to send it again,
    /// `Err` with the error to end it `failed` with.
    pub fn interrupted(&self) -> Result<(), ProviderError> {
        match self.config.on_ambiguous {
            OnAmbiguous::Resend => Ok(()),
            OnAmbiguous::Fail => Err(ProviderError::new(
                ErrorCode::Timeout,
                "an earlier attempt was interrupted before its outcome was recorded; not resending",
            )),
        }
    }

    /// `retry.on_ambiguous`.
    pub fn ambiguous(&self) -> OnAmbiguous {
        self.config.on_ambiguous
    }
}

/// The error of an ambiguous attempt that is not resent: whether it was sent is unknown, and it
/// must not be sent twice.
fn not_resent(mut error: ProviderError) -> ProviderError {
    error.message = format!("not resent after an ambiguous attempt: {}", error.message);
    error.code = ErrorCode::Timeout;
    error.retryable = false;
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, retryable: bool) -> ProviderError {
        ProviderError { retryable, ..ProviderError::new(ErrorCode::parse(code), "x") }
    }

    fn policy(on_ambiguous: OnAmbiguous) -> Policy {
        Policy::new(RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            on_ambiguous,
        })
    }

    #[test]
    fn recipient_errors_end_the_recipient() {
        for code in
            ["invalid_recipient", "blocked_recipient", "content_rejected", "invalid_sender", "duplicate"]
        {
            assert_eq!(classify(&err(code, false), false, OnAmbiguous::Resend), Action::Reject, "{code}");
        }
    }

    #[test]
    fn account_errors_fail_over_and_transient_ones_retry() {
        for code in ["auth", "insufficient_funds", "route_closed", "invalid_request"] {
            assert_eq!(classify(&err(code, false), false, OnAmbiguous::Resend), Action::Failover, "{code}");
        }
        let mut throttled = err("throttled", true);
        throttled.retry_after_ms = Some(1500);
        assert_eq!(
            classify(&throttled, false, OnAmbiguous::Resend),
            Action::Retry { after: Some(Duration::from_millis(1500)) }
        );
    }

    #[test]
    fn plugin_failures_are_not_resent_anywhere() {
        for code in ["plugin_error", "internal", "expired", "invalid_settings", "plugin_eror"] {
            for retryable in [false, true] {
                let e = err(code, retryable);
                assert_eq!(classify(&e, false, OnAmbiguous::Resend), Action::Fail, "{code}");
                assert!(
                    matches!(policy(OnAmbiguous::Resend).decide(e, false, 1), Decision::Fail(_)),
                    "{code}"
                );
            }
        }
    }

    #[test]
    fn ambiguous_attempt_follows_the_setting() {
        let timeout = err("timeout", true);
        assert_eq!(classify(&timeout, true, OnAmbiguous::Fail), Action::Fail);
        assert_eq!(classify(&timeout, true, OnAmbiguous::Resend), Action::Retry { after: None });
    }

    #[test]
    fn retries_stop_at_max_attempts_and_at_max_backoff() {
        let p = policy(OnAmbiguous::Resend);
        let Decision::Retry { delay, ambiguous: false, .. } = p.decide(err("throttled", true), false, 1)
        else {
            panic!("the first try is retried")
        };
        assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&delay), "{delay:?}");
        let Decision::Retry { delay, .. } = p.decide(err("throttled", true), false, 2) else { panic!() };
        assert!((Duration::from_millis(100)..=Duration::from_millis(200)).contains(&delay), "{delay:?}");
        assert!(matches!(p.decide(err("throttled", true), false, 3), Decision::Failover(_)), "max_attempts");
        let mut slow = err("throttled", true);
        slow.retry_after_ms = Some(2001);
        assert!(matches!(p.decide(slow, false, 1), Decision::Failover(_)), "a wait over max_backoff");
    }

    #[test]
    fn an_ambiguous_attempt_is_resent_or_failed_as_configured() {
        let resend = policy(OnAmbiguous::Resend);
        assert!(matches!(
            resend.decide(err("timeout", true), true, 1),
            Decision::Retry { ambiguous: true, .. }
        ));
        assert_eq!(resend.interrupted(), Ok(()));

        let fail = policy(OnAmbiguous::Fail);
        let Decision::Fail(e) = fail.decide(err("unavailable", true), true, 1) else { panic!("not resent") };
        assert_eq!((e.code.as_str(), e.retryable), ("timeout", false));
        assert_eq!(e.message, "not resent after an ambiguous attempt: x");
        assert_eq!(fail.interrupted().unwrap_err().code, "timeout");
    }
}
