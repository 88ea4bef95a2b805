//! The mapping table: a provider's error codes (numbers, words, sentences) → notifyd's normalised
//! error codes (docs/contract.md §2.9), as data. Each plugin keeps one table of [`ErrorRule`]s,
//! which its README prints for people, and looks answers up in it.

use crate::wire::{ErrorCode, ProviderError};

/// One row of a provider's error table: what the provider's `provider_code` means in notifyd's
/// terms. `K` is the provider's code (an `i64`, a `u16`, a `&'static str` word or sentence); `S`
/// is whatever else the plugin needs to know about the row (e.g. whether it concerns one number
/// or the whole account), `()` when nothing.
///
/// Build rows with the `const fn`s, so a table is a `const`:
///
/// ```
/// use notifyd_plugin::sdk::ErrorRule;
/// use notifyd_plugin::wire::ErrorCode;
///
/// const ERRORS: &[ErrorRule<i64>] = &[
///     ErrorRule::new(2, ErrorCode::Auth, "the provider refused the credentials"),
///     ErrorRule::new(7, ErrorCode::InvalidRecipient, "the provider says the number is invalid"),
///     ErrorRule::new(9, ErrorCode::Throttled, "too many requests").retry_after_ms(60_000),
/// ];
/// let row = ErrorRule::find(ERRORS, &7).unwrap();
/// let error = row.to_error().with_provider_code("7");
/// assert_eq!((error.code, error.retryable), (ErrorCode::InvalidRecipient, false));
/// assert_eq!(ErrorRule::find(ERRORS, &9).unwrap().to_error().retry_after_ms, Some(60_000));
/// ```
///
/// The code is an [`ErrorCode`], so a misspelt code does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRule<K: 'static, S: 'static = ()> {
    /// The provider's code, word or sentence, as its API document gives it.
    pub provider_code: K,
    /// The normalised error code (docs/contract.md §2.9).
    pub code: ErrorCode,
    /// Whether the same provider may succeed later (the host retries with backoff). Default false.
    pub retryable: bool,
    /// How long to wait before that retry, when the provider implies a delay. Default none.
    pub retry_after_ms: Option<u64>,
    /// What else the plugin needs to know about the row; `()` by default.
    pub scope: S,
    /// A sentence for people (the error's `message`; never a credential).
    pub message: &'static str,
}

impl<K> ErrorRule<K> {
    /// A row that is not retryable and has no scope.
    pub const fn new(provider_code: K, code: ErrorCode, message: &'static str) -> Self {
        ErrorRule { provider_code, code, retryable: false, retry_after_ms: None, scope: (), message }
    }
}

impl<K, S> ErrorRule<K, S> {
    /// A row that is not retryable, with a scope.
    pub const fn scoped(provider_code: K, code: ErrorCode, scope: S, message: &'static str) -> Self {
        ErrorRule { provider_code, code, retryable: false, retry_after_ms: None, scope, message }
    }

    /// The same row, retryable.
    pub const fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// The same row, retryable after `ms` milliseconds.
    pub const fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retryable = true;
        self.retry_after_ms = Some(ms);
        self
    }

    /// The row whose `provider_code` equals `key`, the first one if several do. For a table of
    /// words, pass `&word` (a `&&str`), so that a word read from an answer can be looked up.
    pub fn find<'t, Q: ?Sized>(table: &'t [Self], key: &Q) -> Option<&'t Self>
    where
        K: PartialEq<Q>,
    {
        table.iter().find(|row| row.provider_code == *key)
    }

    /// The normalised error of this row, with [`message`](Self::message) as its message and no
    /// `provider_code` (add it with [`ProviderError::with_provider_code`], in the form the
    /// provider wrote it).
    pub fn to_error(&self) -> ProviderError {
        self.to_error_saying(self.message)
    }

    /// [`to_error`](Self::to_error) with another message (e.g. the row's message completed with
    /// what the provider said).
    pub fn to_error_saying(&self, message: impl Into<String>) -> ProviderError {
        ProviderError {
            retryable: self.retryable,
            retry_after_ms: self.retry_after_ms,
            ..ProviderError::new(self.code.clone(), message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Scope {
        Number,
        Account,
    }

    const WORDS: &[ErrorRule<&str, Scope>] = &[
        ErrorRule::scoped("BLOCKED", ErrorCode::BlockedRecipient, Scope::Number, "the number is blocked"),
        ErrorRule::scoped("DOWN", ErrorCode::Unavailable, Scope::Account, "the gateway is down").retryable(),
    ];

    #[test]
    fn rows_are_found_by_provider_code_and_become_errors() {
        let row = ErrorRule::find(WORDS, &"DOWN").unwrap();
        assert_eq!(row.scope, Scope::Account);
        let e = row.to_error();
        assert_eq!(
            (e.code.as_str(), e.message.as_str(), e.retryable, e.retry_after_ms, e.provider_code),
            ("unavailable", "the gateway is down", true, None, None)
        );
        let blocked = ErrorRule::find(WORDS, &"BLOCKED").unwrap().to_error_saying("blocked (BLOCKED)");
        assert_eq!(
            (blocked.code.as_str(), blocked.message.as_str(), blocked.retryable),
            ("blocked_recipient", "blocked (BLOCKED)", false)
        );
        assert!(ErrorRule::find(WORDS, &"blocked").is_none(), "matching is exact; fold case first");
        assert_eq!(ErrorRule::find(WORDS, &"BLOCKED").unwrap().scope, Scope::Number);
    }

    #[test]
    fn a_delay_makes_a_row_retryable() {
        const ROW: ErrorRule<i64> =
            ErrorRule::new(9, ErrorCode::Throttled, "slow down").retry_after_ms(2_000);
        let e = ROW.to_error();
        assert_eq!((e.retryable, e.retry_after_ms), (true, Some(2_000)));
        assert!(!ErrorRule::new(1, ErrorCode::Auth, "x").to_error().retryable);
    }
}
