//! Sender ids (docs/contract.md §2.3, `from`).

use std::error::Error;
use std::fmt;

/// Most characters in an alphanumeric sender id (the GSM originating-address limit).
const MAX_ALPHANUMERIC: usize = 11;
/// Most digits in a numeric sender id (ITU-T E.164).
const MAX_NUMERIC: usize = 15;

/// Checks a sender id and returns it in normal form.
///
/// Surrounding whitespace is ignored. Two forms are accepted:
/// - **numeric**: ASCII digits only, at most 15, optionally after one leading `+`, which is
///   removed (`"+4915171112233"` → `"4915171112233"`); short codes such as `"7255"` qualify;
/// - **alphanumeric**: at most 11 characters taken from ASCII letters, digits, space, `.`, `-`
///   and `_` (what gateways commonly accept), with at least one letter; returned unchanged
///   (case is kept).
///
/// # Errors
///
/// [`SenderError`] says which rule the sender id broke.
///
/// ```
/// # use notifyd_sms::validate_sender;
/// assert_eq!(validate_sender(" MyShop ").unwrap(), "MyShop");
/// assert_eq!(validate_sender("+4915171112233").unwrap(), "4915171112233");
/// assert!(validate_sender("Shop+Co").is_err());
/// ```
pub fn validate_sender(s: &str) -> Result<String, SenderError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(SenderError::Empty);
    }
    let digits = s.strip_prefix('+').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return if digits.len() > MAX_NUMERIC {
            Err(SenderError::NumericTooLong(digits.len()))
        } else {
            Ok(digits.to_owned())
        };
    }
    // Not numeric, so alphanumeric; a '+' is reported as the invalid character it is here.
    if let Some(c) = s.chars().find(|&c| !is_alphanumeric_sender_char(c)) {
        return Err(SenderError::InvalidCharacter(c));
    }
    if !s.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(SenderError::NoLetter);
    }
    // Only ASCII is left, so bytes are characters.
    if s.len() > MAX_ALPHANUMERIC {
        return Err(SenderError::AlphanumericTooLong(s.len()));
    }
    Ok(s.to_owned())
}

fn is_alphanumeric_sender_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '-' | '_')
}

/// Why a sender id was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderError {
    /// Nothing but whitespace was given.
    Empty,
    /// A character outside ASCII letters, digits, space, `.`, `-` and `_` (or a `+` in a sender
    /// id that is not all digits).
    InvalidCharacter(char),
    /// Not all digits, yet no letter either (e.g. `"12-34"`).
    NoLetter,
    /// An alphanumeric sender id longer than 11 characters; carries its length.
    AlphanumericTooLong(usize),
    /// A numeric sender id longer than 15 digits; carries its length.
    NumericTooLong(usize),
}

impl fmt::Display for SenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderError::Empty => f.write_str("the sender id is empty"),
            SenderError::InvalidCharacter(c) => write!(
                f,
                "the sender id contains the character {c:?}, which is not allowed; use ASCII \
                 letters, digits, spaces, '.', '-' and '_', or digits only with an optional \
                 leading '+'"
            ),
            SenderError::NoLetter => f.write_str(
                "the sender id has no letter; an alphanumeric sender id needs at least one \
                 letter, and a numeric one must be digits only",
            ),
            SenderError::AlphanumericTooLong(n) => write!(
                f,
                "the sender id has {n} characters; an alphanumeric sender id may have at most \
                 {MAX_ALPHANUMERIC}"
            ),
            SenderError::NumericTooLong(n) => {
                write!(f, "the sender id has {n} digits; a numeric sender id may have at most {MAX_NUMERIC}")
            }
        }
    }
}

impl Error for SenderError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_senders() {
        let ok = [
            ("MyShop", "MyShop"),
            ("  MyShop\n", "MyShop"),
            ("My Shop", "My Shop"),
            ("ACME-Bank_1", "ACME-Bank_1"),
            ("shop.ge", "shop.ge"),
            ("A", "A"),
            ("2FA", "2FA"),
            ("7255", "7255"),
            ("4915171112233", "4915171112233"),
            ("+4915171112233", "4915171112233"),
            ("123456789012345", "123456789012345"),
        ];
        for (input, want) in ok {
            assert_eq!(validate_sender(input).as_deref(), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn refused_senders() {
        let bad = [
            ("", SenderError::Empty),
            ("  ", SenderError::Empty),
            ("+", SenderError::InvalidCharacter('+')),
            ("+MyShop", SenderError::InvalidCharacter('+')),
            ("Shop+Co", SenderError::InvalidCharacter('+')),
            ("Магазин", SenderError::InvalidCharacter('М')),
            ("Café", SenderError::InvalidCharacter('é')),
            ("Shop&Co", SenderError::InvalidCharacter('&')),
            ("Shop\tCo", SenderError::InvalidCharacter('\t')),
            ("12-34", SenderError::NoLetter),
            ("+49 151 7111", SenderError::InvalidCharacter('+')),
            ("49 151 7111", SenderError::NoLetter),
            ("MyShopOnline", SenderError::AlphanumericTooLong(12)),
            ("1234567890AB", SenderError::AlphanumericTooLong(12)),
            ("1234567890123456", SenderError::NumericTooLong(16)),
            ("+1234567890123456", SenderError::NumericTooLong(16)),
        ];
        for (input, want) in bad {
            assert_eq!(validate_sender(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(SenderError::Empty.to_string(), "the sender id is empty");
        assert_eq!(
            SenderError::AlphanumericTooLong(12).to_string(),
            "the sender id has 12 characters; an alphanumeric sender id may have at most 11"
        );
        assert_eq!(
            SenderError::NumericTooLong(16).to_string(),
            "the sender id has 16 digits; a numeric sender id may have at most 15"
        );
        assert!(
            SenderError::InvalidCharacter('&')
                .to_string()
                .starts_with("the sender id contains the character '&', which is not allowed")
        );
        let _: &dyn Error = &SenderError::NoLetter;
    }
}
