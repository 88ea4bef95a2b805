//! The mapping table, as data: IntelliSoftware's `ERR:<CODE>` words and delivery-report status
//! codes → notifyd's normalised error codes and statuses (docs/contract.md §2.8–§2.9).
//! `response.rs` applies it; the plugin's README shows the same table for people.
//!
//! What the host does with each code (`crates/notifyd/src/retry/policy.rs`, `classify`): recipient
//! errors end the recipient `rejected`; retryable errors are retried with backoff; `auth`,
//! `insufficient_funds`, `invalid_request` fail over to the route's next provider; `plugin_error`
//! ends the recipient `failed` and is never resent anywhere.

use notifyd_plugin::wire::ProviderError;
use notifyd_plugin::wire::{ErrorCode, Status};

/// How one `ERR:<CODE>` answer is classified: `provider_code` is the provider's word after `ERR:`,
/// upper case; the message is completed with the word in the error.
pub type ErrorRule = notifyd_plugin::sdk::ErrorRule<&'static str>;

/// Every `ERR:` word the provider documents (the `.txt` and the providers README).
pub const ERRORS: &[ErrorRule] = &[
    ErrorRule::new("LOGIN_INVALID", ErrorCode::Auth, "the gateway refused the username or password"),
    ErrorRule::new(
        "INSUFFICIENT_CREDIT",
        ErrorCode::InsufficientFunds,
        "the gateway account has too little credit",
    ),
    // "Unable to route to the destination phone number": the host has already checked the number's
    // form, so this is the gateway's own verdict on the number; a recipient error, not resent.
    ErrorRule::new("INVALID_NUMBER", ErrorCode::InvalidRecipient, "the gateway cannot route to this number"),
    ErrorRule::new("INVALID_REQUEST", ErrorCode::InvalidRequest, "the gateway found the request invalid"),
    // Both are documented as "Unable to process request at this time": nothing was sent, so
    // the host may retry later (with its backoff; never a tight loop).
    ErrorRule::new(
        "GATEWAY_ERROR",
        ErrorCode::Unavailable,
        "the gateway cannot process requests at this time",
    )
    .retryable(),
    ErrorRule::new(
        "INTERNAL_ERROR",
        ErrorCode::Unavailable,
        "the gateway cannot process requests at this time",
    )
    .retryable(),
    // The plugin never sends more than 100 numbers (describe's max_recipients), so this means the
    // account's limit is lower: not retryable on this provider.
    ErrorRule::new(
        "TOO_MANY_NUMBERS",
        ErrorCode::InvalidRequest,
        "the gateway refused the number of recipients",
    ),
    // Belongs to the gateway's message-id operations; not expected from a send.
    ErrorRule::new("MSGID_INVALID", ErrorCode::InvalidRequest, "the gateway refused the message id"),
    ErrorRule::new("PARAMETER_MISSING", ErrorCode::InvalidRequest, "the gateway says a parameter is missing"),
    ErrorRule::new("PARAMETER_INVALID", ErrorCode::InvalidRequest, "the gateway says a parameter is invalid"),
    // The `ERR:NO_<PARAM>` family for the two credentials: a configuration problem of the account,
    // like a wrong password (the settings refuse empty credentials, so it should never happen).
    ErrorRule::new("NO_USERNAME", ErrorCode::Auth, "the gateway received no username"),
    ErrorRule::new("NO_PASSWORD", ErrorCode::Auth, "the gateway received no password"),
];

/// The rest of the `ERR:NO_<PARAM>` family ("a mandatory parameter is missing").
pub const MISSING_PARAMETER: ErrorRule =
    ErrorRule::new("NO_*", ErrorCode::InvalidRequest, "the gateway says a mandatory parameter is missing");

/// A word the provider does not document: the gateway refused *something*, but the plugin cannot
/// tell what. `plugin_error` is never retried or resent, so an unknown answer can never cause a
/// tight loop (e.g. against an undocumented IP block or duplicate check).
pub const UNKNOWN_ERROR: ErrorRule = ErrorRule::new(
    "*",
    ErrorCode::PluginError,
    "the gateway answered with an error word this plugin does not know",
);

/// The rule for the word after `ERR:` (any case).
pub fn error_rule(word: &str) -> ErrorRule {
    let upper = word.to_ascii_uppercase();
    if let Some(rule) = ErrorRule::find(ERRORS, &upper.as_str()) {
        return rule.clone();
    }
    if upper.len() > 3 && upper.starts_with("NO_") { MISSING_PARAMETER } else { UNKNOWN_ERROR }
}

/// The normalised error for `ERR:<word>`, `provider_code` = the word as the gateway wrote it.
pub fn error_for(word: &str) -> ProviderError {
    let rule = error_rule(word);
    rule.to_error_saying(format!("{} (ERR:{word})", rule.message)).with_provider_code(word)
}

/// What one delivery-report status code means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRule {
    /// The report's `status` field.
    pub status_code: u32,
    /// The provider's name for it.
    pub name: &'static str,
    /// The normalised status: `sent` (still pending), `delivered`, `undelivered`, `expired`,
    /// `rejected`.
    pub status: Status,
    /// The normalised error code attached to the update, where one says more than the status.
    pub error: Option<ErrorCode>,
}

const fn report(status_code: u32, name: &'static str, status: Status) -> ReportRule {
    ReportRule { status_code, name, status, error: None }
}

/// [`report`] with an error code attached.
const fn failure(status_code: u32, name: &'static str, status: Status, error: ErrorCode) -> ReportRule {
    ReportRule { status_code, name, status, error: Some(error) }
}

/// Every delivery-report status code the provider documents.
pub const REPORTS: &[ReportRule] = &[
    // The gateway does not know yet: not final, tracking goes on.
    report(0, "unknown", Status::Sent),
    report(1, "ok", Status::Sent),
    report(2, "queued", Status::Sent),
    report(3, "sent", Status::Sent),
    report(4, "delivered", Status::Delivered),
    // Refused before it reached a carrier: never sent (docs/contract.md §2.8: `rejected`).
    failure(5, "error with request", Status::Rejected, ErrorCode::InvalidRequest),
    report(6, "unable to deliver", Status::Undelivered),
    // Accepted, then the gateway found no route to a carrier: a delivery failure after `sent`.
    failure(7, "routing error", Status::Undelivered, ErrorCode::RouteClosed),
    report(8, "expired", Status::Expired),
    // Voice-SMS: the recipient acknowledged the message, so it was delivered.
    report(11, "acknowledged", Status::Delivered),
    // Voice-SMS: the recipient refused it. It did reach the handset, so `undelivered` (notifyd's
    // `rejected` means "never sent"), with the recipient's refusal as the error.
    failure(12, "rejected by the recipient", Status::Undelivered, ErrorCode::BlockedRecipient),
];

/// A status code the provider does not document: the status stays as it was (`sent`, not final)
/// and the report is acknowledged, because a refused report is retried by the gateway every
/// 5 minutes for ever.
pub const UNKNOWN_REPORT: ReportRule = report(u32::MAX, "undocumented", Status::Sent);

/// The rule for a report's numeric status code.
pub fn report_rule(status_code: u32) -> ReportRule {
    REPORTS.iter().find(|r| r.status_code == status_code).cloned().unwrap_or(UNKNOWN_REPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_uses_a_normalised_code_and_words_are_unique() {
        for r in ERRORS.iter().chain([&MISSING_PARAMETER, &UNKNOWN_ERROR]) {
            assert!(r.code.is_operation_code(), "{r:?}");
        }
        for r in REPORTS {
            let reportable =
                [Status::Sent, Status::Delivered, Status::Undelivered, Status::Expired, Status::Rejected];
            assert!(reportable.contains(&r.status), "{r:?}");
            assert!(r.error.as_ref().is_none_or(ErrorCode::is_operation_code), "{r:?}");
        }
        let mut words: Vec<_> = ERRORS.iter().map(|r| r.provider_code).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), ERRORS.len());
    }

    #[test]
    fn no_prefix_family_and_unknown_words() {
        assert_eq!(error_rule("NO_TO").code, "invalid_request");
        assert_eq!(error_rule("no_text").code, "invalid_request");
        assert_eq!(error_rule("NO_PASSWORD").code, "auth");
        assert_eq!(error_rule("NO_").code, "plugin_error");
        assert_eq!(error_rule("SOMETHING_NEW").code, "plugin_error");
        assert_eq!(error_rule("login_invalid").code, "auth");
    }

    #[test]
    fn error_for_keeps_the_word_as_written() {
        let e = error_for("Insufficient_Credit");
        assert_eq!(e.code, "insufficient_funds");
        assert_eq!(e.provider_code.as_deref(), Some("Insufficient_Credit"));
        assert!(e.message.ends_with("(ERR:Insufficient_Credit)"), "{}", e.message);
    }
}
