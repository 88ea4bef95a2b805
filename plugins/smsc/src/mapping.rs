//! What SMSC's codes mean in notifyd's terms: the error table (`error_code` of any answer) and the
//! status table (`status` of a status answer, or of one number in a send answer), as data.
//!
//! The tables are the single place where a provider code becomes a normalised status or error
//! code (docs/contract.md §2.8–§2.9); `plugins/smsc/README.md` shows the same tables for people.
//! The host decides what follows from a code (`crates/notifyd/src/retry/policy.rs`, `classify`):
//! recipient errors end the recipient, retryable ones are retried with backoff, account errors
//! fail over.

use notifyd_plugin::sdk::{ErrorRule, snippet};
use notifyd_plugin::wire::ProviderError;
use notifyd_plugin::wire::{ErrorCode, Status};

/// The operation an answer belongs to: SMSC's error 9 means something different for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Send,
    Status,
    Balance,
}

/// One SMSC error code (`error_code`) and its normalised meaning.
pub type ErrorRow = ErrorRule<i64>;

/// SMSC's error codes for `send.php` (the .txt's list). None of them is retryable as such: SMSC
/// refuses an identical request for a minute, so resending the same request soon cannot succeed.
pub const SEND_ERRORS: &[ErrorRow] = &[
    // A parameter SMSC did not accept (a plugin or account-setting problem): no retry here, fail
    // over to the next provider.
    ErrorRule::new(1, ErrorCode::InvalidRequest, "SMSC refused the request's parameters"),
    // Wrong login or password; SMSC also answers 2 for a request from an IP address outside the
    // account's allow list.
    ErrorRule::new(2, ErrorCode::Auth, "SMSC refused the login or password"),
    ErrorRule::new(3, ErrorCode::InsufficientFunds, "the SMSC account has not enough money"),
    // SMSC blocks an IP address for a while after too many erroneous requests. Every further
    // request prolongs the block, so it is an account error: never retried on this instance,
    // the host fails over.
    ErrorRule::new(
        4,
        ErrorCode::Auth,
        "SMSC has temporarily blocked this IP address after too many erroneous requests",
    ),
    // Only `time` (native scheduling) carries a date: the scheduled time was refused.
    ErrorRule::new(5, ErrorCode::InvalidRequest, "SMSC refused the scheduled time's format"),
    // Refused for its text or its sender id (SMSC does not say which), or a mass or advertising
    // message from an account without a contract for it.
    ErrorRule::new(6, ErrorCode::ContentRejected, "SMSC refused the message for its text or its sender id"),
    ErrorRule::new(7, ErrorCode::InvalidRecipient, "SMSC says the phone number is invalid"),
    // SMSC will not deliver to this number at all (a landline, a destination the account cannot
    // reach): retrying or resending elsewhere through SMSC cannot help.
    ErrorRule::new(8, ErrorCode::BlockedRecipient, "SMSC cannot deliver a message to this number"),
    // An identical request within a minute is refused "to protect against errors and loops"
    // (the .txt): the first one was most likely sent, so this recipient ends here and the host
    // never resends it. SMSC gives the same code for too many concurrent requests; that case is
    // recognised by its description and becomes `throttled` ([`CONCURRENCY`]).
    ErrorRule::new(9, ErrorCode::Duplicate, "SMSC refused an identical request sent less than a minute ago"),
];

/// Error 9 of `send.php` when its description speaks of concurrent requests: SMSC refuses a
/// login's requests beyond a number in flight at once. That clears as soon as the others finish,
/// so a short delay is enough; SMSC gives none (unconfirmed: chosen, 2 s).
pub const CONCURRENCY: ErrorRow =
    ErrorRule::new(9, ErrorCode::Throttled, "SMSC refused the request: too many concurrent requests")
        .retry_after_ms(2_000);

/// Error 9 of `status.php` and `balance.php`: too many queries for the same message (or for the
/// balance) within a minute. SMSC counts per minute, so the delay is that minute.
pub const QUERY_LIMIT: ErrorRow =
    ErrorRule::new(9, ErrorCode::Throttled, "SMSC refused the query: too many queries within a minute")
        .retry_after_ms(60_000);

/// Words in error 9's description that mean "too many concurrent requests" rather than
/// "duplicate" (English and Russian descriptions; matched case-insensitively).
const CONCURRENCY_WORDS: &[&str] = &["concurrent", "simultaneous", "одновремен"];

/// The row for SMSC error `code` in an answer to `op`, if the code is known.
pub fn error_row(op: Op, code: i64, description: &str) -> Option<ErrorRow> {
    if code == 9 {
        let lower = description.to_lowercase();
        return Some(match op {
            Op::Send if CONCURRENCY_WORDS.iter().any(|w| lower.contains(w)) => CONCURRENCY,
            Op::Send => SEND_ERRORS[8].clone(),
            Op::Status | Op::Balance => QUERY_LIMIT,
        });
    }
    ErrorRule::find(SEND_ERRORS, &code).cloned()
}

/// The normalised error for SMSC error `code` with its `description` (already free of
/// credentials). An unknown code is a `plugin_error` (not retryable: SMSC may have acted).
pub fn api_error(op: Op, code: i64, description: &str) -> ProviderError {
    let said = if description.trim().is_empty() {
        String::new()
    } else {
        format!(" (SMSC: {})", snippet(description.trim()))
    };
    let error = match error_row(op, code, description) {
        Some(r) => r.to_error_saying(format!("{}{said}", r.message)),
        None => ProviderError::new(
            ErrorCode::PluginError,
            format!("SMSC answered the unknown error code {code}{said}"),
        ),
    };
    error.with_provider_code(code.to_string())
}

/// One SMSC message status code and its normalised status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// SMSC's `status`.
    pub code: i64,
    /// The normalised status: `sent` (still pending), `delivered`, `undelivered`, `expired` or
    /// `rejected`.
    pub status: Status,
    /// The normalised error code carried by a failure status: in a status event, and for a
    /// number that a send answer already reports failed.
    pub error: Option<ErrorCode>,
    /// What SMSC says, for people.
    pub meaning: &'static str,
}

const fn status(code: i64, status: Status, error: Option<ErrorCode>, meaning: &'static str) -> StatusRow {
    StatusRow { code, status, error, meaning }
}

/// SMSC's status codes (the README's list; -2, 2 and 4 from SMSC's own status page, unconfirmed
/// for SMS).
pub const STATUSES: &[StatusRow] = &[
    // No message for this phone and id. Not final: the final `unknown` is the host's to decide
    // when its tracking window ends, and a query that reached a replica before the message did
    // must not end tracking early.
    status(-3, Status::Sent, None, "message not found"),
    // A message of a mailing that was paused; it goes out when the mailing resumes.
    status(-2, Status::Sent, None, "stopped"),
    // Waiting to be sent: briefly, or until the time given with `time`.
    status(-1, Status::Sent, None, "waiting to be sent"),
    status(0, Status::Sent, None, "passed to the operator"),
    status(1, Status::Delivered, None, "delivered"),
    // Read (opened): implies delivery.
    status(2, Status::Delivered, None, "read"),
    status(3, Status::Expired, None, "expired"),
    // The recipient opened the message's short link: implies delivery.
    status(4, Status::Delivered, None, "link clicked"),
    // The carrier or SMSC cannot deliver to this number (e.g. a landline); the same verdict as
    // send error 8.
    status(20, Status::Undelivered, Some(ErrorCode::BlockedRecipient), "cannot be delivered"),
    status(22, Status::Rejected, Some(ErrorCode::InvalidRecipient), "wrong number"),
    // SMSC's limits refused it: duplicate or flood limits for one number, the number on a black
    // list, or a text or sender id refused by the spam filter.
    status(23, Status::Rejected, Some(ErrorCode::BlockedRecipient), "prohibited"),
    // The account ran out of money before the message went out: it was never sent.
    status(24, Status::Rejected, Some(ErrorCode::InsufficientFunds), "not enough money"),
    // The number is not in service.
    status(25, Status::Undelivered, Some(ErrorCode::InvalidRecipient), "unreachable number"),
];

/// The row for SMSC status `code`, if known.
pub fn status_row(code: i64) -> Option<&'static StatusRow> {
    STATUSES.iter().find(|r| r.code == code)
}

/// The error a failure status carries, with SMSC's status code (and its `err` detail code, when
/// the answer gives one) for people.
pub fn status_error(row: &StatusRow, err: Option<i64>) -> Option<ProviderError> {
    let code = row.error.clone()?;
    let detail = err.filter(|e| *e != 0).map(|e| format!(", error code {e}")).unwrap_or_default();
    Some(
        ProviderError::new(code, format!("SMSC status {}: {}{detail}", row.code, row.meaning))
            .with_provider_code(row.code.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_appears_once() {
        for (i, r) in SEND_ERRORS.iter().enumerate() {
            assert_eq!(r.provider_code, i as i64 + 1, "SEND_ERRORS is ordered by code and complete");
        }
        let mut codes: Vec<i64> = STATUSES.iter().map(|r| r.code).collect();
        codes.dedup();
        assert_eq!(codes.len(), STATUSES.len());
    }

    #[test]
    fn failure_statuses_carry_an_error_and_pending_ones_do_not() {
        for r in STATUSES {
            let failure = matches!(r.status, Status::Rejected | Status::Undelivered);
            assert_eq!(r.error.is_some(), failure, "status {}", r.code);
        }
    }

    #[test]
    fn error_nine_depends_on_the_operation_and_its_description() {
        let dup = error_row(Op::Send, 9, "duplicate request, wait a minute").unwrap();
        assert_eq!((dup.code, dup.retryable), (ErrorCode::Duplicate, false));
        let busy = error_row(Op::Send, 9, "Too many CONCURRENT requests").unwrap();
        assert_eq!(
            (busy.code, busy.retryable, busy.retry_after_ms),
            (ErrorCode::Throttled, true, Some(2_000))
        );
        let ru = error_row(Op::Send, 9, "Слишком много одновременных запросов").unwrap();
        assert_eq!(ru.code, "throttled");
        for op in [Op::Status, Op::Balance] {
            let limit = error_row(op, 9, "duplicate request, wait a minute").unwrap();
            assert_eq!((limit.code, limit.retry_after_ms), (ErrorCode::Throttled, Some(60_000)));
        }
    }

    #[test]
    fn unknown_codes_are_plugin_errors_naming_the_code() {
        let e = api_error(Op::Send, 42, "something new");
        assert_eq!((e.code.as_str(), e.retryable), ("plugin_error", false));
        assert_eq!(e.provider_code.as_deref(), Some("42"));
        assert!(e.message.contains("42") && e.message.contains("something new"), "{}", e.message);
        assert_eq!(status_row(77), None);
    }
}
