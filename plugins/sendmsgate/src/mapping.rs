//! SendSMSGate's answers and what they mean in notifyd's terms, as data: the error sentences of
//! the API document (section "Possible error messages") and the status words of a status query.
//!
//! The plugin's README prints both tables; keep them in step.

use notifyd_plugin::sdk::ErrorRule;
use notifyd_plugin::wire::ProviderError;
use notifyd_plugin::wire::{ErrorCode, Status};

/// Which recipients an error sentence concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One number of the request. The gateway does not say which one, so a request with several
    /// numbers is resent number by number to find out (see `lib.rs`).
    Number,
    /// The whole request: the account, the sender, the text, or the gateway itself.
    Request,
}

/// One error sentence the gateway answers instead of message ids. `provider_code` is the sentence
/// as the API document prints it (also the event's `provider_code`), matched case-insensitively,
/// anywhere in the body, ignoring runs of whitespace and a final `.` (see [`find_error`]); `scope`
/// says which recipients it concerns.
pub type ErrorRow = ErrorRule<&'static str, Scope>;

/// Every error sentence of the API document. None of them is retryable: each names a condition
/// that the same request cannot outgrow by waiting (docs/contract.md §2.9: only throttled, unavailable and
/// timeout are). The gateway documents no throttling sentence; HTTP 429 is handled in
/// `response.rs`.
pub const ERRORS: &[ErrorRow] = &[
    // The plugin always sends `user`, `pwd`, `dadr` and `text`; what is missing is most likely an
    // empty credential or the omitted `sadr`. Another provider may take the message: fail over.
    ErrorRule::scoped(
        "Not enough data to send.",
        ErrorCode::InvalidRequest,
        Scope::Request,
        "the gateway says the request lacks data (is a credential or the sender empty?)",
    ),
    // A blocked account (the gateway blocks accounts, e.g. after too many errors) is an account
    // error like bad credentials: never retried on this provider, failed over.
    ErrorRule::scoped(
        "Your account is blocked",
        ErrorCode::Auth,
        Scope::Request,
        "the gateway says the account is blocked",
    ),
    ErrorRule::scoped(
        "Wrong login or password",
        ErrorCode::Auth,
        Scope::Request,
        "the gateway refused the credentials",
    ),
    // Only answered when `dadr` is empty or unreadable; the plugin never sends an empty one, so
    // the gateway found a number it could not read.
    ErrorRule::scoped(
        "Enter a phone number.",
        ErrorCode::InvalidRecipient,
        Scope::Number,
        "the gateway could not read the number",
    ),
    ErrorRule::scoped(
        "The phone number is in the stop list.",
        ErrorCode::BlockedRecipient,
        Scope::Number,
        "the number is on the gateway's stop list",
    ),
    // A closed direction is about the destination country/operator, not about the number: another
    // provider of the route may serve it, so `route_closed` (failover), not a rejection.
    ErrorRule::scoped(
        "This direction is closed to you.",
        ErrorCode::RouteClosed,
        Scope::Number,
        "the gateway does not serve this destination for this account",
    ),
    ErrorRule::scoped(
        "This direction is closed.",
        ErrorCode::RouteClosed,
        Scope::Number,
        "the gateway does not serve this destination",
    ),
    // The gateway says the number itself is wrong (too long for it): the recipient is rejected
    // as an invalid number, as the gateway's own words have it. The plugin refuses such numbers
    // before sending (see `request.rs`); this row covers a gateway that counts differently.
    ErrorRule::scoped(
        "The phone number must be less than 15 characters.",
        ErrorCode::InvalidRecipient,
        Scope::Number,
        "the gateway takes numbers of at most 14 digits",
    ),
    ErrorRule::scoped(
        "We have run out of SMS. To resolve the problem, contact the manager.",
        ErrorCode::InsufficientFunds,
        Scope::Request,
        "the gateway account has run out of SMS",
    ),
    ErrorRule::scoped(
        "Out of SMS",
        ErrorCode::InsufficientFunds,
        Scope::Request,
        "the gateway account has run out of SMS",
    ),
    ErrorRule::scoped(
        "Text SMS rejected by the moderator.",
        ErrorCode::ContentRejected,
        Scope::Request,
        "the gateway's moderator rejected the text",
    ),
    // Answered when the instance has no `sender` and the request no `from` (the plugin then omits
    // `sadr`).
    ErrorRule::scoped(
        "No sender.",
        ErrorCode::InvalidSender,
        Scope::Request,
        "the gateway requires a sender id (set `sender`)",
    ),
    ErrorRule::scoped(
        "The sender must not exceed 15 characters for digital numbers and 11 characters for alphanumeric.",
        ErrorCode::InvalidSender,
        Scope::Request,
        "the gateway refused the sender id's length",
    ),
    // notifyd never sends an empty text, so the gateway found nothing in it that it can carry.
    ErrorRule::scoped(
        "No message text.",
        ErrorCode::ContentRejected,
        Scope::Request,
        "the gateway found no text it can send",
    ),
    ErrorRule::scoped(
        "There is no such sender.",
        ErrorCode::InvalidSender,
        Scope::Request,
        "the sender id is not registered at the gateway",
    ),
    ErrorRule::scoped(
        "The sender did not pass moderation.",
        ErrorCode::InvalidSender,
        Scope::Request,
        "the sender id did not pass the gateway's moderation",
    ),
];

/// The classified error a row stands for.
pub fn error(row: &ErrorRow) -> ProviderError {
    row.to_error_saying(format!("SendSMSGate: {}", row.message)).with_provider_code(row.provider_code)
}

/// Lower case, whitespace runs collapsed to one space, trimmed: the form sentences are matched in.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// The error sentence `body` contains, if any; the longest match wins ("This direction is closed
/// to you." over "This direction is closed.", "We have run out of SMS. ..." over "Out of SMS").
pub fn find_error(body: &str) -> Option<&'static ErrorRow> {
    let body = normalize(body);
    if body.is_empty() {
        return None;
    }
    ERRORS
        .iter()
        .filter(|row| body.contains(normalize(row.provider_code).trim_end_matches('.')))
        .max_by_key(|row| row.provider_code.len())
}

/// The delivery state of one part (one message id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartStatus {
    /// Not final yet.
    Pending,
    Delivered,
    Undelivered,
    Expired,
}

impl PartStatus {
    /// The notifyd status (`StatusUpdate::status`).
    pub fn as_status(self) -> Status {
        match self {
            PartStatus::Pending => Status::Sent,
            PartStatus::Delivered => Status::Delivered,
            PartStatus::Undelivered => Status::Undelivered,
            PartStatus::Expired => Status::Expired,
        }
    }
}

/// The answers to a status query (`msgid=<id>`), matched case-insensitively after trimming.
pub const STATUSES: &[(&str, PartStatus)] = &[
    // "SMS sent": handed to the carrier, no report yet.
    ("send", PartStatus::Pending),
    ("deliver", PartStatus::Delivered),
    ("not_deliver", PartStatus::Undelivered),
    ("expired", PartStatus::Expired),
    // Sibling platforms (unconfirmed here): a message read on the handset was delivered.
    ("read", PartStatus::Delivered),
    // Sibling platforms (unconfirmed here): some parts of a message arrived. Not final: the other
    // parts may still arrive (`deliver`) or fail (`not_deliver`); if neither happens, the tracking
    // window ends the recipient `unknown`, which is honest about what is known.
    ("partly_deliver", PartStatus::Pending),
    // Sibling platforms (unconfirmed here) answer an empty body while the message is queued.
    ("", PartStatus::Pending),
];

/// The part status a status word stands for.
pub fn part_status(word: &str) -> Option<PartStatus> {
    let word = word.trim();
    STATUSES.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)).map(|(_, s)| *s)
}

/// The status of a recipient whose message has several parts (one id each), from its parts'
/// statuses in order: delivered only when every part is; otherwise the first part that is not
/// delivered decides (pending, or its final state: a message missing a part never arrived whole).
/// `None` for no parts.
pub fn combine(parts: impl IntoIterator<Item = PartStatus>) -> Option<PartStatus> {
    let mut any = false;
    for part in parts {
        any = true;
        if part != PartStatus::Delivered {
            return Some(part);
        }
    }
    any.then_some(PartStatus::Delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sentence_finds_its_own_row() {
        for row in ERRORS {
            assert_eq!(find_error(row.provider_code).map(|r| r.provider_code), Some(row.provider_code));
            assert_eq!(
                find_error(&row.provider_code.to_uppercase()).map(|r| r.provider_code),
                Some(row.provider_code)
            );
            let bare = row.provider_code.trim_end_matches('.');
            assert_eq!(
                find_error(&format!("  {bare}\r\n")).map(|r| r.provider_code),
                Some(row.provider_code)
            );
        }
    }

    #[test]
    fn codes_are_normalised_ones() {
        // Each sentence is a refusal: never a reason to retry (throttled, unavailable, timeout),
        // a duplicate, an expiry, or a fault of the plugin or the host.
        let not_a_refusal = [
            ErrorCode::Throttled,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::Duplicate,
            ErrorCode::Expired,
            ErrorCode::PluginError,
            ErrorCode::Internal,
        ];
        for row in ERRORS {
            assert!(row.code.is_operation_code() && !not_a_refusal.contains(&row.code), "{}", row.code);
            assert!(!error(row).retryable);
        }
    }

    #[test]
    fn combination_is_delivered_only_when_every_part_is() {
        use PartStatus::*;
        assert_eq!(combine([Delivered, Delivered]), Some(Delivered));
        assert_eq!(combine([Delivered, Pending]), Some(Pending));
        assert_eq!(combine([Pending, Undelivered]), Some(Pending));
        assert_eq!(combine([Delivered, Undelivered]), Some(Undelivered));
        assert_eq!(combine([Expired, Delivered]), Some(Expired));
        assert_eq!(combine([]), None);
    }

    #[test]
    fn status_words_are_case_insensitive_and_trimmed() {
        assert_eq!(part_status(" DELIVER\n"), Some(PartStatus::Delivered));
        assert_eq!(part_status("Not_Deliver"), Some(PartStatus::Undelivered));
        assert_eq!(part_status("\r\n"), Some(PartStatus::Pending));
        assert_eq!(part_status("delivered!"), None);
    }
}
