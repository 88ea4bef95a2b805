//! The mapping table: SMS Club's HTTP statuses, delivery status words, validation fields and
//! refusal reasons → notifyd's normalised statuses and error codes (docs/contract.md §2.8–§2.9).
//!
//! Everything here is data or a single `match`, so the README's tables can be checked against it
//! line by line. The reasons behind the non-obvious rows are in the row's comment.

use notifyd_plugin::sdk::retry_after_ms;
use notifyd_plugin::wire::{ErrorCode, Status};
use notifyd_plugin::wire::{HttpResponse, ProviderError};

/// The delay asked of the host after HTTP 429 when the answer has no usable `Retry-After`.
/// SMS Club documents no rate or reset time; a few seconds keeps the host from hammering an
/// account that is already over its limit (an account that keeps hammering risks a block).
pub const DEFAULT_THROTTLE_DELAY_MS: u64 = 5_000;

/// The shortest delay honoured after HTTP 429, even when `Retry-After` says less (`0`): never a
/// tight retry loop.
pub const MIN_THROTTLE_DELAY_MS: u64 = 1_000;

/// What an HTTP status means for the whole request, before the body is read.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpClass {
    /// 200: the body holds the answer.
    Answer,
    /// 400: a validation error; the body's `add_info` names the fields (see [`field_error`]).
    Validation,
    /// Any other status: this error for every recipient (or for the whole status/balance query).
    Error(ProviderError),
}

/// The HTTP statuses of the .txt's "Error" table, plus the usual ones a proxy in front may add.
pub fn http_class(response: &HttpResponse) -> HttpClass {
    let status = response.status;
    let error = match status {
        200 => return HttpClass::Answer,
        400 => return HttpClass::Validation,
        // 401 "User authentication error": a wrong or revoked token. Not retryable: the same
        // token keeps failing, and repeated failures can get the account blocked.
        401 => ProviderError::new(ErrorCode::Auth, "SMS Club refused the API token (HTTP 401)"),
        // 403 is not in the .txt; a gateway answers it for a blocked IP or account: an account
        // error, never retried.
        403 => ProviderError::new(
            ErrorCode::Auth,
            "SMS Club refused access for this account or IP address (HTTP 403)",
        ),
        // Not in the .txt: some gateways answer 402 when the balance is exhausted.
        402 => ProviderError::new(
            ErrorCode::InsufficientFunds,
            "SMS Club reports that the balance is exhausted (HTTP 402)",
        ),
        // 429 "Too many requests per unit of time": retry later, never at once.
        429 => ProviderError {
            retry_after_ms: Some(throttle_delay_ms(response)),
            ..ProviderError::retryable(
                ErrorCode::Throttled,
                "SMS Club asks to slow down: too many requests (HTTP 429)",
            )
        },
        // 453 "Duplication of a message in an interval of less than 2 minutes", for the whole
        // request: the same text to the same numbers most likely went out a moment ago (a resend
        // after an ambiguous timeout, say). Sending it again would be the duplicate the provider
        // guards against, so it is final and not retryable.
        453 => ProviderError::new(
            ErrorCode::Duplicate,
            "SMS Club refused the message as a duplicate of one sent less than 2 minutes ago \
             (HTTP 453); it was most likely sent already, so it is not sent again",
        ),
        // "500x Service is temporarily unavailable": any 5xx.
        500..=599 => ProviderError {
            retry_after_ms: retry_after_ms(response),
            ..ProviderError::retryable(
                ErrorCode::Unavailable,
                format!("SMS Club is temporarily unavailable (HTTP {status})"),
            )
        },
        // Anything else (a redirect, 404 for a wrong base_url, 405...) is not part of the API:
        // the plugin cannot tell what happened, so the host must not resend (`plugin_error`).
        _ => ProviderError::new(
            ErrorCode::PluginError,
            format!("unexpected HTTP status {status} from SMS Club"),
        ),
    };
    HttpClass::Error(error.with_provider_code(status.to_string()))
}

/// The delay after HTTP 429: `Retry-After` (seconds) when given, else
/// [`DEFAULT_THROTTLE_DELAY_MS`]; never less than [`MIN_THROTTLE_DELAY_MS`].
pub fn throttle_delay_ms(response: &HttpResponse) -> u64 {
    retry_after_ms(response).unwrap_or(DEFAULT_THROTTLE_DELAY_MS).max(MIN_THROTTLE_DELAY_MS)
}

/// Delivery status words (`/sms/status` → `info`), the SMPP `stat` words, to notifyd statuses.
/// A word is matched without regard to case or surrounding spaces.
pub const STATUS_WORDS: &[(&str, Status)] = &[
    // "message sent": on its way, not final.
    ("ENROUTE", Status::Sent),
    ("DELIVRD", Status::Delivered),
    // "expired, message not delivered".
    ("EXPIRED", Status::Expired),
    ("UNDELIV", Status::Undelivered),
    // "message rejected by the system".
    ("REJECTD", Status::Rejected),
    // Not in the .txt: the remaining SMPP v3.4 `stat` words, which an SMPP-backed gateway passes
    // through. ACCEPTD and UNKNOWN are not final: tracking goes on (and ends `unknown` after the
    // window if nothing else comes).
    ("ACCEPTD", Status::Sent),
    ("UNKNOWN", Status::Sent),
    // Deleted at the SMSC before delivery: it will not arrive.
    ("DELETED", Status::Undelivered),
];

/// The notifyd status for a delivery status word, `None` for a word not in [`STATUS_WORDS`].
pub fn status_word(word: &str) -> Option<Status> {
    let word = word.trim();
    STATUS_WORDS.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)).map(|(_, status)| *status)
}

/// The error attached to a final status word that is not a delivery, so that the event names the
/// provider's word. `None` where the status says it all.
pub fn status_error(word: &str) -> Option<ProviderError> {
    let word = word.trim().to_ascii_uppercase();
    match word.as_str() {
        // SMS Club does not say why; the usual causes are the number's stop list, the content or
        // the sender. `content_rejected` is the closest code (unconfirmed); the word is kept.
        "REJECTD" => Some(
            ProviderError::new(
                ErrorCode::ContentRejected,
                "SMS Club's system rejected the message (REJECTD) without giving a reason",
            )
            .with_provider_code(word),
        ),
        _ => None,
    }
}

/// Request fields that SMS Club's validation (`add_info`, keyed by field) can name, and the
/// error each means for the recipients of that request.
pub const FIELD_ERRORS: &[(&str, ErrorCode)] = &[
    // The alpha name is not one of the account's active names (see `/sms/originator`).
    ("src_addr", ErrorCode::InvalidSender),
    // The text itself was refused (empty, too long, forbidden content): another try or another
    // provider with the same text would not fare better in the provider's eyes.
    ("message", ErrorCode::ContentRejected),
    // Not confirmed by the .txt: the referral id is wrong; the message could go elsewhere.
    ("integration_id", ErrorCode::InvalidRequest),
    // One of the numbers, but the answer does not say which: with one recipient it is that one
    // (`number_error`, see `response::send_refused`); with several, none is blamed and they fail
    // over (not retryable: the same request would be refused again).
    ("phone", ErrorCode::InvalidRequest),
];

/// The error for a validation message about `field` that is not a recipient's number. `reason`
/// is the provider's text (for the message and the funds check).
pub fn field_error(field: &str, reason: &str) -> ProviderError {
    let code = if mentions_funds(reason) || mentions_funds(field) {
        ErrorCode::InsufficientFunds
    } else {
        FIELD_ERRORS
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(field.trim()))
            .map_or(ErrorCode::InvalidRequest, |(_, c)| c.clone())
    };
    ProviderError::new(code, format!("SMS Club refused the request: {field}: {reason}"))
        .with_provider_code(field.to_owned())
}

/// The error for a number that SMS Club refused (`add_info` keyed by that number), from the
/// reason it gives. The reasons are free text (Ukrainian, Russian or English) and not
/// documented, so the mapping looks for words: a stop list or block means `blocked_recipient`,
/// money means `insufficient_funds` (an account error: another provider may still send it),
/// anything else `invalid_recipient`. `provider_code` is the reason itself.
pub fn number_error(reason: &str) -> ProviderError {
    let code = if mentions_funds(reason) {
        ErrorCode::InsufficientFunds
    } else if mentions_block(reason) {
        ErrorCode::BlockedRecipient
    } else {
        ErrorCode::InvalidRecipient
    };
    ProviderError::new(code, format!("SMS Club refused this number: {reason}"))
        .with_provider_code(reason.to_owned())
}

/// Words of a stop list / black list / blocked number.
const BLOCK_WORDS: &[&str] =
    &["stop", "стоп", "black", "чорн", "черн", "block", "блок", "banned", "заборон", "запрещ"];

/// Words of an exhausted balance.
const FUNDS_WORDS: &[&str] = &[
    "balance",
    "баланс",
    "insufficient",
    "not enough money",
    "недостатньо",
    "недостаточно",
    "коштів",
    "средств",
    "funds",
];

fn mentions(text: &str, words: &[&str]) -> bool {
    let text = text.to_lowercase();
    words.iter().any(|w| text.contains(w))
}

fn mentions_block(text: &str) -> bool {
    mentions(text, BLOCK_WORDS)
}

fn mentions_funds(text: &str) -> bool {
    mentions(text, FUNDS_WORDS)
}

/// The error for an error document `{"name": ..., "message": ...}` (the Yii framework's form,
/// unconfirmed for SMS Club): `base` is what the HTTP status means; the text refines a validation
/// error about money into `insufficient_funds` and is quoted in the message.
pub fn named_error(base: ProviderError, name: &str, message: &str) -> ProviderError {
    let refine = base.code == ErrorCode::InvalidRequest && mentions_funds(message);
    let code = if refine { ErrorCode::InsufficientFunds } else { base.code.clone() };
    let what = if message.is_empty() { name } else { message };
    ProviderError { code, message: format!("{} ({what})", base.message), ..base }
}
