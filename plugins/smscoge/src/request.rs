//! Building smsco.ge's HTTP requests, and the checks that come before any of them: the text's
//! alphabet, the sender id, the recipients and the schedule date.
//!
//! Every call is a `GET` on the documented PHP scripts with the credentials in the query, as the
//! API document prescribes:
//!
//! - send: `{base}/components/com_smsreseller/smsapi2.php?username=&password=&recipient=<n1>,<n2>&message=[&sender=][&schedule=YYYY-MM-DD HH:mm:ss]`
//! - status: `{base}/components/com_smsreseller/getstatus.php?username=&password=&mes_id=`
//! - balance: `{base}/components/com_smsreseller/smsapi2.php?username=&password=&balance=true`

use crate::Smscoge;
use notifyd_plugin::sdk::{form_encode, join_url, rfc3339_to_unix_ceil};
use notifyd_plugin::wire::ErrorCode;
use notifyd_plugin::wire::{HttpRequest, ProviderError};

/// The send and balance script, relative to the base URL.
pub const SEND_PATH: &str = "components/com_smsreseller/smsapi2.php";
/// The status script, relative to the base URL.
pub const STATUS_PATH: &str = "components/com_smsreseller/getstatus.php";

/// The longest sender id the API document allows ("max 11").
pub const MAX_SENDER_LEN: usize = 11;

/// Whether smsco.ge accepts `c` in a message: Latin letters, digits, space, newline and `. _ - "`
/// (the document's list, plus the separators any text needs).
pub fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '\n' | '.' | '_' | '-' | '"')
}

/// The text as it will be sent: line ends made `\n`, transliterated when the instance says so,
/// then checked against [`allowed`]. A text that still holds another character is refused with
/// `content_rejected`, naming the first such character and its position (never the text).
pub fn prepare_text(text: &str, transliterate: bool) -> Result<String, ProviderError> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = if transliterate { notifyd_sms::transliterate(&text) } else { text };
    match text.chars().enumerate().find(|(_, c)| !allowed(*c)) {
        None => Ok(text),
        Some((at, c)) => {
            let why = if transliterate && c == '?' {
                "a character that could not be transliterated (`?`) or a `?`".to_owned()
            } else {
                format!("{c:?}")
            };
            let hint = if transliterate { "" } else { " (or set `transliterate = true`)" };
            Err(ProviderError::new(
                ErrorCode::ContentRejected,
                format!(
                    "smsco.ge accepts only Latin letters, digits, space, newline and . _ - \" in a message; \
                     the text has {why} at position {}{hint}",
                    at + 1
                ),
            ))
        }
    }
}

/// Checks the sender id against the document's limit: at most [`MAX_SENDER_LEN`] characters.
pub fn check_sender(from: Option<&str>) -> Result<(), ProviderError> {
    match from {
        Some(s) if s.chars().count() > MAX_SENDER_LEN => Err(ProviderError::new(
            ErrorCode::InvalidSender,
            format!(
                "smsco.ge takes sender ids of at most {MAX_SENDER_LEN} characters; this one has {}",
                s.chars().count()
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether a recipient can go into the comma-separated `recipient` list: a number in normal
/// form (8..=15 digits, docs/contract.md §2.3), so no separator can slip in.
pub fn valid_recipient(to: &str) -> bool {
    (8..=15).contains(&to.len()) && to.bytes().all(|b| b.is_ascii_digit())
}

/// The `schedule` value for `send_at` (RFC 3339) in the gateway's format `YYYY-MM-DD HH:mm:ss`,
/// at UTC offset `offset_minutes` (smsco.ge runs on Tbilisi time, UTC+4, see the README), with a
/// fractional second rounded up so the message never goes out before `send_at`. `None` when
/// `send_at` is not later than `now` (unix seconds): the message is due, so it is sent at once.
pub fn schedule(send_at: &str, offset_minutes: i32, now: i64) -> Result<Option<String>, ProviderError> {
    let at = rfc3339_to_unix_ceil(send_at).ok_or_else(|| {
        ProviderError::new(ErrorCode::InvalidRequest, "send_at is not an RFC 3339 date and time")
    })?;
    if at <= now {
        return Ok(None);
    }
    let local = at + i64::from(offset_minutes) * 60;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    if !(1..=9999).contains(&y) {
        return Err(ProviderError::new(ErrorCode::InvalidRequest, "send_at is out of range"));
    }
    Ok(Some(format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)))
}

/// Parses `offset` as `+HH:MM` / `-HH:MM` (also `Z`) into minutes east of UTC.
pub fn parse_offset(offset: &str) -> Option<i32> {
    if offset.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let b = offset.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = (digits(&b[1..3])?, digits(&b[4..6])?);
    (h <= 23 && m <= 59).then(|| sign * (h as i32 * 60 + m as i32))
}

/// A run of ASCII digits as a number.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The date of a day count since 1970-01-01 (proleptic Gregorian, H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// What one send submission carries, already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission<'a> {
    /// Numbers in normal form.
    pub recipients: Vec<&'a str>,
    /// The text as [`prepare_text`] made it.
    pub text: String,
    pub sender: Option<&'a str>,
    /// `YYYY-MM-DD HH:mm:ss`, Tbilisi time.
    pub schedule: Option<String>,
}

/// A `GET` on `path` with the credentials first, then `params`.
fn get(p: &Smscoge, path: &str, params: &[(&str, &str)]) -> HttpRequest {
    let auth = [("username", p.creds.username.as_str()), ("password", p.creds.password.expose())];
    let query = form_encode(auth.iter().chain(params).copied());
    HttpRequest {
        method: "GET".to_owned(),
        url: format!("{}?{query}", join_url(&p.base_url, path)),
        headers: Vec::new(),
        body: String::new(),
        ..Default::default()
    }
}

/// The send request: `recipient` comma-separated, `message` UTF-8 percent-encoded, the sender
/// under the instance's `sender_param` (default `sender`), `schedule` when given.
pub fn send(p: &Smscoge, s: &Submission<'_>) -> HttpRequest {
    let recipients = s.recipients.join(",");
    let mut params = vec![("recipient", recipients.as_str()), ("message", s.text.as_str())];
    if let (Some(sender), Some(name)) = (s.sender, p.sender_param.as_deref()) {
        params.push((name, sender));
    }
    if let Some(at) = &s.schedule {
        params.push(("schedule", at.as_str()));
    }
    get(p, SEND_PATH, &params)
}

/// The status request for one message id.
pub fn status(p: &Smscoge, mes_id: &str) -> HttpRequest {
    get(p, STATUS_PATH, &[("mes_id", mes_id)])
}

/// The balance request.
pub fn balance(p: &Smscoge) -> HttpRequest {
    get(p, SEND_PATH, &[("balance", "true")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_characters_pass() {
        let ok = "Your code is 1234.\nThanks - \"ACME\"_shop";
        assert_eq!(prepare_text(ok, false).unwrap(), ok);
        for bad in ["a,b", "a:b", "a!b", "a?b", "a\tb", "Grüße", "€", "a'b", "a+b", "(a)", "a/b"] {
            let e = prepare_text(bad, false).unwrap_err();
            assert_eq!(e.code, "content_rejected", "{bad}");
            assert!(!e.retryable);
        }
        let e = prepare_text("Code: 12", false).unwrap_err();
        assert!(e.message.contains("':' at position 5"), "{}", e.message);
        assert!(e.message.contains("transliterate = true"), "{}", e.message);
        assert!(!e.message.contains("Code"), "the text itself is never quoted: {}", e.message);
    }

    #[test]
    fn line_ends_become_newlines() {
        assert_eq!(prepare_text("a\r\nb\rc", false).unwrap(), "a\nb\nc");
    }

    #[test]
    fn transliteration_then_the_same_check() {
        assert_eq!(prepare_text("გამარჯობა", true).unwrap(), "gamarjoba");
        assert_eq!(prepare_text("Привет мир", true).unwrap(), "Privet mir");
        assert_eq!(prepare_text("Ünïcödé “quoted” – ok", true).unwrap(), "Unicode \"quoted\" - ok");
        // Punctuation outside the list stays refused, transliterated or not.
        assert_eq!(prepare_text("Привет, мир", true).unwrap_err().code, "content_rejected");
        // What cannot be transliterated becomes `?`, which smsco.ge does not take either.
        let e = prepare_text("ok 😀", true).unwrap_err();
        assert_eq!(e.code, "content_rejected");
        assert!(
            e.message.contains("could not be transliterated") && e.message.contains("position 4"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("transliterate = true"));
    }

    #[test]
    fn sender_ids_longer_than_eleven_are_refused() {
        assert!(check_sender(None).is_ok());
        assert!(check_sender(Some("ACMEShop123")).is_ok());
        assert_eq!(check_sender(Some("ACMEShop1234")).unwrap_err().code, "invalid_sender");
        assert_eq!(check_sender(Some("995599123456")).unwrap_err().code, "invalid_sender");
    }

    #[test]
    fn recipients_must_be_in_normal_form() {
        assert!(valid_recipient("995599445448"));
        for bad in ["", "1234567", "9955994454481234", "+995599445448", "995599,44544", "99559944544x"] {
            assert!(!valid_recipient(bad), "{bad}");
        }
    }

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    #[test]
    fn schedule_is_tbilisi_time_in_the_documented_format() {
        let s = |at: &str| schedule(at, 240, NOW).unwrap();
        assert_eq!(s("2026-11-22T09:00:00Z").as_deref(), Some("2026-11-22 13:00:00"));
        assert_eq!(s("2026-11-22T09:00:00.000Z").as_deref(), Some("2026-11-22 13:00:00"));
        // A fraction is rounded up: never before send_at.
        assert_eq!(s("2026-11-22T09:00:00.001Z").as_deref(), Some("2026-11-22 13:00:01"));
        // Across midnight and the year end; offsets in the input.
        assert_eq!(s("2026-12-31T22:30:00Z").as_deref(), Some("2027-01-01 02:30:00"));
        assert_eq!(s("2026-03-01T01:00:00+04:00").as_deref(), Some("2026-03-01 01:00:00"));
        assert_eq!(s("2028-02-28T23:59:59-01:00").as_deref(), Some("2028-02-29 04:59:59"));
        // Another offset setting.
        assert_eq!(schedule("2026-06-01T12:00:00Z", 0, NOW).unwrap().as_deref(), Some("2026-06-01 12:00:00"));
    }

    #[test]
    fn a_due_send_at_is_sent_at_once() {
        assert_eq!(schedule("2026-01-01T00:00:00Z", 240, NOW).unwrap(), None);
        assert_eq!(schedule("2025-12-31T23:59:59.5Z", 240, NOW).unwrap(), None);
        assert_eq!(schedule("2020-01-01T00:00:00Z", 240, NOW).unwrap(), None);
        assert_eq!(
            schedule("2026-01-01T00:00:01Z", 240, NOW).unwrap().as_deref(),
            Some("2026-01-01 04:00:01")
        );
    }

    #[test]
    fn malformed_send_at_is_an_invalid_request() {
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+4:00",
        ] {
            assert_eq!(schedule(bad, 240, NOW).unwrap_err().code, "invalid_request", "{bad}");
        }
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+04:00"), Some(240));
        assert_eq!(parse_offset("-03:30"), Some(-210));
        assert_eq!(parse_offset("Z"), Some(0));
        for bad in ["04:00", "+4:00", "+04:60", "+24:00", "+0400", ""] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        // Every 997th day from 0000-03-01 on, up to the year 4160 (four-digit years, as RFC 3339).
        for days in (-719_468..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            let date = format!("{y:04}-{m:02}-{d:02}T00:00:00Z");
            assert_eq!(rfc3339_to_unix_ceil(&date), Some(days * 86_400), "{date}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(NOW / 86_400), (2026, 1, 1));
    }
}
