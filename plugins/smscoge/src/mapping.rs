//! The smsco.ge answers and what they mean in notifyd's terms, as data: the error codes
//! 2904..2915 of `smsapi2.php`, and the status codes 0..7 of `getstatus.php`.
//!
//! HTTP statuses other than 2xx are classified by the SDK's
//! [`http_status_error`](notifyd_plugin::sdk::http_status_error) (401/403 `auth`, 402
//! `insufficient_funds`, 408 `timeout`, 429 `throttled`, 5xx `unavailable`); the provider's
//! document does not mention HTTP statuses at all, so those rows are the usual web semantics.

use notifyd_plugin::sdk::ErrorRule;
use notifyd_plugin::wire::{ErrorCode, ProviderError, Status};

/// Whether an error code concerns the account (every call will fail alike) or only one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Credentials, credit or the gateway itself: a status batch stops at the first such answer.
    Account,
    /// This submission or this one status query only.
    Call,
}

/// One documented error code of smsco.ge: `provider_code` is the bare number smsco.ge answers
/// (e.g. `2905`; the provider's own description of it is in the row's comment and its message);
/// `scope` whether it concerns the account or only this call.
pub type ErrorRow = ErrorRule<u16, Scope>;

/// Every error code of the API document, "Получение ответа услуги".
pub const ERRORS: &[ErrorRow] = &[
    // "OK" means that at least one SMS of the submission went out, so 2904 means that none did.
    // The gateway being down has its own code (2907) and our own requests are checked before
    // they leave (text alphabet, sender, number format), so what is left is the numbers: they are
    // refused (`rejected`) rather than resent to smsco.ge or to another provider in a loop.
    // 2904 "SMS Sending Failed"
    ErrorRule::scoped(
        2904,
        ErrorCode::InvalidRecipient,
        Scope::Call,
        "smsco.ge could not send to any number of this submission (2904 SMS Sending Failed)",
    ),
    // 2905 "Invalid username/password combination"
    ErrorRule::scoped(
        2905,
        ErrorCode::Auth,
        Scope::Account,
        "smsco.ge refused the username/password combination (2905)",
    ),
    // 2906 "Credit exhausted"
    ErrorRule::scoped(
        2906,
        ErrorCode::InsufficientFunds,
        Scope::Account,
        "the smsco.ge account has no credit left (2906 Credit exhausted)",
    ),
    // 2907 "Gateway unavailable"
    ErrorRule::scoped(
        2907,
        ErrorCode::Unavailable,
        Scope::Account,
        "the smsco.ge gateway is unavailable (2907)",
    )
    .retryable(),
    // The plugin writes the date itself, so this means that the gateway reads it differently:
    // another provider (or notifyd's own scheduling) may still send the message.
    // 2908 "Invalid schedule date format"
    ErrorRule::scoped(
        2908,
        ErrorCode::InvalidRequest,
        Scope::Call,
        "smsco.ge refused the schedule date format (2908)",
    ),
    // 2909 "Unable to schedule"
    ErrorRule::scoped(
        2909,
        ErrorCode::InvalidRequest,
        Scope::Call,
        "smsco.ge could not schedule the message for send_at (2909 Unable to schedule)",
    ),
    // The plugin refuses empty credentials at start-up, so these mean that the gateway lost them
    // on the way (e.g. a proxy in base_url dropping the query): a configuration problem.
    // 2910 "Username is empty"
    ErrorRule::scoped(
        2910,
        ErrorCode::Auth,
        Scope::Account,
        "smsco.ge received no username (2910 Username is empty)",
    ),
    // 2911 "Password is empty"
    ErrorRule::scoped(
        2911,
        ErrorCode::Auth,
        Scope::Account,
        "smsco.ge received no password (2911 Password is empty)",
    ),
    // notifyd never sends without a recipient or a text: the request did not arrive as sent.
    // 2912 "Recipient is empty"
    ErrorRule::scoped(
        2912,
        ErrorCode::InvalidRequest,
        Scope::Call,
        "smsco.ge received no recipient (2912 Recipient is empty)",
    ),
    // 2913 "Message is empty"
    ErrorRule::scoped(
        2913,
        ErrorCode::InvalidRequest,
        Scope::Call,
        "smsco.ge received no message text (2913 Message is empty)",
    ),
    // The account needs a sender id (agreed with smsco.ge beforehand) and none was given.
    // 2914 "Sender is empty"
    ErrorRule::scoped(
        2914,
        ErrorCode::InvalidSender,
        Scope::Call,
        "smsco.ge needs a sender id (2914 Sender is empty): set `sender` on the provider \
                  instance or `from` in the request",
    ),
    // 2915 "One or more required fields are empty"
    ErrorRule::scoped(
        2915,
        ErrorCode::InvalidRequest,
        Scope::Call,
        "smsco.ge found a required field empty (2915)",
    ),
];

/// The row of a documented error code.
pub fn error_row(code: u16) -> Option<&'static ErrorRow> {
    ErrorRule::find(ERRORS, &code)
}

/// The normalised error of a row, `provider_code` = the number.
pub fn error(row: &ErrorRow) -> ProviderError {
    row.to_error().with_provider_code(row.provider_code.to_string())
}

/// One documented delivery status of `getstatus.php`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRow {
    /// The digit smsco.ge answers.
    pub code: u8,
    /// The provider's own word for it.
    pub word: &'static str,
    /// The notifyd status word: `sent` (still pending), `delivered`, `undelivered`, `expired` or
    /// `rejected`.
    pub status: Status,
}

/// Every status of the API document, "Услуга возвращает статусы сообщения".
pub const STATUSES: &[StatusRow] = &[
    // "Передано оператору абонента": handed to the carrier, not yet on the handset.
    StatusRow { code: 0, word: "Sent", status: Status::Sent },
    StatusRow { code: 1, word: "Delivered", status: Status::Delivered },
    StatusRow { code: 2, word: "In process", status: Status::Sent },
    // "Невозможно отправить оператором абонента": the carrier could not deliver it.
    StatusRow { code: 3, word: "Failed", status: Status::Undelivered },
    // Deleted by the carrier before it reached the handset.
    StatusRow { code: 4, word: "Deleted", status: Status::Undelivered },
    StatusRow { code: 5, word: "Expired", status: Status::Expired },
    // "Отклонен оператором абонента": the carrier refused this recipient.
    StatusRow { code: 6, word: "Rejected", status: Status::Rejected },
    // Cancelled by the carrier: it will not be delivered.
    StatusRow { code: 7, word: "Canceled", status: Status::Undelivered },
];

/// The row of a documented status code.
pub fn status_row(code: u8) -> Option<&'static StatusRow> {
    STATUSES.iter().find(|row| row.code == code)
}

/// The error that goes with a final status that is not `delivered`, for the event's `error`
/// (`provider_code` = the digit). `None` for pending statuses, `delivered` and `expired` (the
/// status says it all).
pub fn status_error(row: &StatusRow) -> Option<ProviderError> {
    let code = match row.status {
        // The carrier refused the number: the same as a provider refusing it at submission.
        Status::Rejected => ErrorCode::BlockedRecipient,
        _ => return None,
    };
    let message = format!("the recipient's carrier reported {} ({})", row.word, row.code);
    Some(ProviderError::new(code, message).with_provider_code(row.code.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_one_row() {
        let codes: Vec<u16> = ERRORS.iter().map(|r| r.provider_code).collect();
        assert_eq!(codes, (2904..=2915).collect::<Vec<_>>());
        let statuses: Vec<u8> = STATUSES.iter().map(|r| r.code).collect();
        assert_eq!(statuses, (0..=7).collect::<Vec<_>>());
    }

    #[test]
    fn only_the_gateway_being_down_is_retryable() {
        let retryable: Vec<u16> = ERRORS.iter().filter(|r| r.retryable).map(|r| r.provider_code).collect();
        assert_eq!(retryable, [2907]);
    }

    #[test]
    fn rows_use_normalised_codes_and_words() {
        const CODES: &[ErrorCode] = &[
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRecipient,
            ErrorCode::InvalidSender,
            ErrorCode::Auth,
            ErrorCode::InsufficientFunds,
            ErrorCode::Unavailable,
        ];
        for row in ERRORS {
            assert!(CODES.contains(&row.code), "{row:?}");
            assert!(row.message.contains(&row.provider_code.to_string()), "{row:?}");
        }
        for row in STATUSES {
            assert!(
                [Status::Sent, Status::Delivered, Status::Undelivered, Status::Expired, Status::Rejected]
                    .contains(&row.status)
            );
        }
    }

    #[test]
    fn a_rejection_by_the_carrier_carries_its_code() {
        let e = status_error(status_row(6).unwrap()).unwrap();
        assert_eq!(
            (e.code.as_str(), e.provider_code.as_deref(), e.retryable),
            ("blocked_recipient", Some("6"), false)
        );
        assert!(status_error(status_row(1).unwrap()).is_none());
        assert!(status_error(status_row(3).unwrap()).is_none());
    }
}
