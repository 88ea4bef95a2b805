//! Recipient phone numbers in notifyd's normal form (docs/contract.md §2.3, `to`).

use std::error::Error;
use std::fmt;
use std::str::FromStr;

/// Fewest digits a number may have in normal form.
const MIN_DIGITS: usize = 8;
/// Most digits a number may have in normal form (ITU-T E.164).
const MAX_DIGITS: usize = 15;

/// A phone number in normal form: ASCII digits only, 8..=15 of them, international (the country
/// code first, without `+` or `00`).
///
/// `Display` and [`as_str`](Self::as_str) give the full number, for providers and events;
/// `Debug` gives the [masked](Self::masked) form, so a number cannot leak into logs through
/// `{:?}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a number as users write it and brings it to normal form.
    ///
    /// Surrounding whitespace is ignored. Then one leading `+` or one leading `00` is removed
    /// (`+` is allowed nowhere else), spaces, dashes, dots and parentheses are dropped wherever
    /// they are (any Unicode whitespace counts as a space), and 8..=15 ASCII digits must remain.
    /// Any other character is an error.
    ///
    /// # Errors
    ///
    /// [`PhoneError`] says which rule the input broke, without repeating the number.
    ///
    /// ```
    /// # use notifyd_sms::PhoneNumber;
    /// let n = PhoneNumber::parse("+49 (151) 7111-2233").unwrap();
    /// assert_eq!(n.as_str(), "4915171112233");
    /// ```
    pub fn parse(input: &str) -> Result<PhoneNumber, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let rest = trimmed.strip_prefix('+').or_else(|| trimmed.strip_prefix("00")).unwrap_or(trimmed);
        let mut digits = String::with_capacity(MAX_DIGITS);
        let mut count = 0usize;
        for c in rest.chars() {
            match c {
                '0'..='9' => {
                    count += 1;
                    // Counting on without storing keeps a huge input from costing memory.
                    if count <= MAX_DIGITS {
                        digits.push(c);
                    }
                }
                '-' | '.' | '(' | ')' => {}
                c if c.is_whitespace() => {}
                c => return Err(PhoneError::InvalidCharacter(c)),
            }
        }
        if count < MIN_DIGITS {
            Err(PhoneError::TooShort(count))
        } else if count > MAX_DIGITS {
            Err(PhoneError::TooLong(count))
        } else {
            Ok(PhoneNumber(digits))
        }
    }

    /// The number in normal form (digits only).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number in normal form, as an owned string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }

    /// The number with its middle digits replaced by `*`, for logs and diagnostics.
    ///
    /// Numbers of 12 digits or more keep their first 5 and last 3 digits
    /// (`4915171112233` → `49151*****233`), enough to recognise the country and network and to
    /// tell numbers apart. Shorter ones keep a third of their digits (rounded down) at each end,
    /// so at least a third is always hidden (`12345678` → `12****78`).
    #[must_use]
    pub fn masked(&self) -> String {
        let n = self.0.len();
        let (head, tail) = if n >= 12 { (5, 3) } else { (n / 3, n / 3) };
        let mut out = String::with_capacity(n);
        out.push_str(&self.0[..head]);
        out.extend(std::iter::repeat_n('*', n - head - tail));
        out.push_str(&self.0[n - tail..]);
        out
    }
}

impl fmt::Display for PhoneNumber {
    /// The full number in normal form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhoneNumber {
    /// The masked number: `PhoneNumber(49151*****233)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PhoneNumber").field(&format_args!("{}", self.masked())).finish()
    }
}

impl FromStr for PhoneNumber {
    type Err = PhoneError;

    /// Same as [`PhoneNumber::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PhoneNumber::parse(s)
    }
}

impl AsRef<str> for PhoneNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a number was refused. The messages never repeat the number itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    /// Nothing but whitespace was given.
    Empty,
    /// A character that is neither a digit nor an allowed separator (or a `+` not at the start).
    InvalidCharacter(char),
    /// Fewer than 8 digits remained after normalisation; carries how many.
    TooShort(usize),
    /// More than 15 digits remained after normalisation; carries how many.
    TooLong(usize),
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneError::Empty => f.write_str("the number is empty"),
            PhoneError::InvalidCharacter(c) => write!(
                f,
                "the number contains the character {c:?}, which is not allowed; a number is \
                 digits with an optional leading '+' or '00', and may contain spaces, dashes, \
                 dots and parentheses"
            ),
            PhoneError::TooShort(n) => {
                write!(f, "the number has {}; at least {MIN_DIGITS} are needed", Digits(*n))
            }
            PhoneError::TooLong(n) => {
                write!(f, "the number has {}; at most {MAX_DIGITS} are allowed", Digits(*n))
            }
        }
    }
}

impl Error for PhoneError {}

/// "no digits", "1 digit", "5 digits".
struct Digits(usize);

impl fmt::Display for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("no digits"),
            1 => f.write_str("1 digit"),
            n => write!(f, "{n} digits"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let ok = [
            ("+49 151 7111-2233", "4915171112233"),
            ("0049 (151) 71112233", "4915171112233"),
            ("+1.415.555.0100", "14155550100"),
            ("4915171112234", "4915171112234"),
            ("  +4915171112233\t", "4915171112233"),
            ("\u{A0}+49\u{A0}151\u{A0}71112233", "4915171112233"),
            ("12345678", "12345678"),
            ("123456789012345", "123456789012345"),
            // "00" is removed once only; further zeros are digits.
            ("000049151711122", "0049151711122"),
            // "+" and "00" are alternatives, not both.
            ("+0049151711122", "0049151711122"),
            ("+(49) 151-711.122", "49151711122"),
        ];
        for (input, want) in ok {
            let got = PhoneNumber::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.as_str(), want, "{input:?}");
        }

        let bad = [
            ("", PhoneError::Empty),
            ("   ", PhoneError::Empty),
            ("00", PhoneError::TooShort(0)),
            ("+", PhoneError::TooShort(0)),
            ("+49 151 12", PhoneError::TooShort(7)),
            ("0049 12345", PhoneError::TooShort(7)),
            ("1234567890123456", PhoneError::TooLong(16)),
            ("+49151711122334455", PhoneError::TooLong(17)),
            ("+49 151 CALL-NOW", PhoneError::InvalidCharacter('C')),
            ("49+15171112233", PhoneError::InvalidCharacter('+')),
            ("++4915171112233", PhoneError::InvalidCharacter('+')),
            (" 49 151 / 71112233", PhoneError::InvalidCharacter('/')),
            ("4915171112233#", PhoneError::InvalidCharacter('#')),
            ("٤٩١٥١٧١١١٢٢٣٣", PhoneError::InvalidCharacter('٤')),
        ];
        for (input, want) in bad {
            assert_eq!(PhoneNumber::parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn from_str_matches_parse() {
        let n: PhoneNumber = "+49 151 7111-2233".parse().unwrap();
        assert_eq!(n.clone().into_string(), "4915171112233");
        assert_eq!(n.to_string(), "4915171112233");
        assert_eq!("x".parse::<PhoneNumber>(), Err(PhoneError::InvalidCharacter('x')));
    }

    #[test]
    fn masking() {
        let cases = [
            ("4915171112233", "49151*****233"),
            ("491517111223", "49151****223"),
            ("123456789012345", "12345*******345"),
            ("14155550100", "141*****100"),
            ("1234567890", "123****890"),
            ("123456789", "123***789"),
            ("12345678", "12****78"),
        ];
        for (number, want) in cases {
            let n = PhoneNumber::parse(number).unwrap();
            assert_eq!(n.masked(), want);
            assert_eq!(format!("{n:?}"), format!("PhoneNumber({want})"));
        }
        // Every valid length hides at least a third of the digits.
        for len in MIN_DIGITS..=MAX_DIGITS {
            let n = PhoneNumber::parse(&"7".repeat(len)).unwrap();
            let hidden = n.masked().chars().filter(|&c| c == '*').count();
            assert_eq!(n.masked().len(), len);
            assert!(hidden * 3 >= len, "{len} digits, {hidden} hidden");
        }
    }

    #[test]
    fn debug_never_shows_the_full_number() {
        let n = PhoneNumber::parse("4915171112233").unwrap();
        assert!(!format!("{n:?}").contains("4915171112233"));
        assert!(!format!("{:?}", Some(&n)).contains("71112"));
    }

    #[test]
    fn error_messages_are_sentences_without_the_number() {
        assert_eq!(PhoneError::Empty.to_string(), "the number is empty");
        assert_eq!(PhoneError::TooShort(5).to_string(), "the number has 5 digits; at least 8 are needed");
        assert_eq!(PhoneError::TooShort(0).to_string(), "the number has no digits; at least 8 are needed");
        assert_eq!(PhoneError::TooShort(1).to_string(), "the number has 1 digit; at least 8 are needed");
        assert_eq!(PhoneError::TooLong(16).to_string(), "the number has 16 digits; at most 15 are allowed");
        let e = PhoneNumber::parse("+49 151 CALL-NOW").unwrap_err();
        assert!(e.to_string().starts_with("the number contains the character 'C',"));
        assert!(!e.to_string().contains("151"));
        let _: &dyn Error = &e;
    }

    #[test]
    fn parse_never_panics() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for input in [
                c.to_string(),
                format!("+4915171112{c}"),
                format!("00{c}4915171112"),
                format!("{c}{c}{c}{c}{c}{c}{c}{c}"),
            ] {
                if let Ok(n) = PhoneNumber::parse(&input) {
                    assert!(n.as_str().bytes().all(|b| b.is_ascii_digit()));
                    assert!((MIN_DIGITS..=MAX_DIGITS).contains(&n.as_str().len()));
                    let _ = n.masked();
                }
            }
        }
    }
}
