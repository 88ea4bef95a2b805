//! Decoding and validation of send requests (docs/contract.md §2.3, §2.5).
//!
//! A payload ends as one of three things: a dead letter (not a JSON object at all), a
//! request-level rejection (one `rejected` event, with whatever id and tags could be recovered), or
//! a valid [`Request`] whose recipients are each either a normalised number or a per-number
//! rejection.

use crate::class::Class;
use notifyd_plugin::wire::ErrorCode;
use notifyd_sms::{Encoding, PhoneNumber, TextInfo};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Request tags, echoed in events.
pub type Tags = BTreeMap<String, String>;

/// Limits a request is checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_recipients: usize,
    pub max_segments: u32,
    /// How far ahead `send_at` may lie (`limits.max_schedule_ahead`).
    pub max_schedule_ahead: std::time::Duration,
}

/// The request as it appears on the wire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    id: Option<String>,
    to: Option<To>,
    text: Option<String>,
    from: Option<String>,
    provider: Option<String>,
    send_at: Option<String>,
    expires_at: Option<String>,
    tags: Option<Tags>,
    /// Any JSON value, so a wrong type gets the message naming the allowed values, not serde's.
    /// `null` is absent.
    priority: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum To {
    One(String),
    Many(Vec<String>),
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: Arc<str>,
    /// Each entry of `to` as given, in order, with its fate.
    pub recipients: Vec<Recipient>,
    pub text: String,
    pub info: TextInfo,
    pub from: Option<String>,
    /// `from` as given (blanks trimmed), when that differs from its normal form.
    pub from_given: Option<String>,
    pub provider: Option<String>,
    pub send_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    pub tags: Option<Arc<Tags>>,
    /// The traffic class the request states (its `priority` field, else its intake subject's
    /// suffix); `None`: its route's `priority`, else `normal`.
    pub class: Option<Class>,
}

/// One entry of `to`.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipient {
    /// A valid number, first of its kind in the request.
    Valid(PhoneNumber),
    /// Invalid: the number as given (cut to 32 chars), its position in `to`, and why.
    Invalid { given: String, position: usize, reason: String },
    /// A duplicate (after normalisation) of an earlier entry: dropped silently.
    Duplicate,
}

/// A request-level problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `invalid_request` or `invalid_sender`.
    pub code: ErrorCode,
    pub message: String,
    /// The request's id when it could be recovered and is valid.
    pub id: Option<String>,
    /// The request's tags when they could be recovered and are valid.
    pub tags: Option<Tags>,
}

/// The outcome of decoding one payload.
#[derive(Debug)]
pub enum Decoded {
    Valid(Request),
    Rejected(Rejection),
    /// Not a JSON object: the reason, for the `Notifyd-Error` header.
    Dead(String),
}

/// Decodes and validates one payload. `subject_class` is the class the subject it arrived on
/// states (`<prefix>.sms.send.<class>`; `None` for `<prefix>.sms.send`); `generated_id` supplies
/// the id when the request has none (or an invalid one); `known_provider` says whether a pinned
/// provider exists.
pub fn decode(
    payload: &[u8],
    limits: &Limits,
    subject_class: Option<Class>,
    known_provider: impl Fn(&str) -> bool,
    generated_id: &dyn Fn() -> String,
) -> Decoded {
    let wire: Wire = match serde_json::from_slice(payload) {
        Ok(w) => w,
        Err(e) => return classify_undecodable(payload, e),
    };
    match check(wire, limits, subject_class, &known_provider) {
        Ok(mut req) => {
            if req.id.is_empty() {
                req.id = generated_id().into();
            }
            Decoded::Valid(req)
        }
        Err(r) => Decoded::Rejected(r),
    }
}

/// A payload that does not decode as a request: a dead letter unless it is a JSON object, in which
/// case a rejection carrying what can be recovered.
fn classify_undecodable(payload: &[u8], err: serde_json::Error) -> Decoded {
    if let Err(e) = std::str::from_utf8(payload) {
        return Decoded::Dead(format!("the payload is not valid UTF-8 (at byte {})", e.valid_up_to()));
    }
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return Decoded::Dead(format!("the payload is not JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        let kind = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Decoded::Dead(format!("the payload is {kind}, not a JSON object"));
    };
    let id = obj.get("id").and_then(|v| v.as_str()).filter(|id| check_id(id).is_ok()).map(str::to_owned);
    let tags = obj
        .get("tags")
        .and_then(|v| serde_json::from_value::<Tags>(v.clone()).ok())
        .filter(|t| check_tags(t).is_ok());
    Decoded::Rejected(Rejection {
        code: ErrorCode::InvalidRequest,
        message: describe_serde_error(&err),
        id,
        tags,
    })
}

/// serde's message, phrased for the request's author.
fn describe_serde_error(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    if msg.starts_with("data did not match any variant of untagged enum To") {
        return "`to` must be a string or an array of strings".to_owned();
    }
    // "unknown field `x`, expected one of ..." / "invalid type: integer, expected a string at line 1
    // column 9": the offending value is dropped, it may be a phone number or the text.
    format!("the request does not match the schema: {}", notifyd_plugin::sdk::redact_values(&msg))
}

fn check_id(id: &str) -> Result<(), String> {
    let n = id.chars().count();
    if n == 0 || n > 128 {
        return Err(format!("`id` must be 1 to 128 characters long (it has {n})"));
    }
    if id.starts_with("js-") {
        return Err("`id` must not start with \"js-\" (reserved for ids notifyd generates)".to_owned());
    }
    // An id travels in NATS headers (`Nats-Msg-Id`), subjects of logs and ledger keys: a line
    // break or any other control character would forge log lines or break a header.
    if let Some((at, c)) = id.chars().enumerate().find(|(_, c)| is_forbidden_in_id(*c)) {
        return Err(format!(
            "`id` must not contain control characters (found U+{:04X} at character {})",
            u32::from(c),
            at + 1
        ));
    }
    Ok(())
}

/// Control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
fn is_forbidden_in_id(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn check_tags(tags: &Tags) -> Result<(), String> {
    if tags.len() > 16 {
        return Err(format!("`tags` may hold at most 16 entries (it has {})", tags.len()));
    }
    for (k, v) in tags {
        if k.chars().count() > 64 {
            return Err("a tag key is longer than 64 characters".to_owned());
        }
        if v.chars().count() > 256 {
            return Err(format!("the value of tag {:?} is longer than 256 characters", cut(k, 64)));
        }
    }
    Ok(())
}

fn timestamp(field: &str, value: Option<String>) -> Result<Option<OffsetDateTime>, String> {
    value
        .map(|s| {
            OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| {
                format!("`{field}` must be an RFC 3339 timestamp such as \"2026-11-21T21:05:00Z\"")
            })
        })
        .transpose()
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The request's class: its `priority` field when given, else the class of the subject it was
/// published on (`subject`), else none (its route's default applies). A `priority` that is not
/// one of the class names, or that contradicts the subject, is a problem.
fn class(priority: Option<serde_json::Value>, subject: Option<Class>) -> Result<Option<Class>, String> {
    const ALLOWED: &str = "\"urgent\", \"normal\" or \"bulk\" (lower case)";
    let stated = match priority {
        None => None,
        Some(serde_json::Value::String(s)) => match Class::parse(&s) {
            Some(c) => Some(c),
            // Quoted with `{:?}`: control characters are escaped, never written out, and only
            // the first 16 characters are shown.
            None => return Err(format!("`priority` must be {ALLOWED}, not {:?}", cut(&s, 16))),
        },
        Some(other) => {
            let kind = match other {
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            };
            return Err(format!("`priority` must be a string, {ALLOWED}, not {kind}"));
        }
    };
    match (stated, subject) {
        (Some(field), Some(subject)) if field != subject => Err(format!(
            "the priority field says \"{field}\" but the request was published on \
             <prefix>.sms.send.{subject}; make them agree, or leave one of them out"
        )),
        (stated, subject) => Ok(stated.or(subject)),
    }
}

fn check(
    wire: Wire,
    limits: &Limits,
    subject_class: Option<Class>,
    known_provider: &dyn Fn(&str) -> bool,
) -> Result<Request, Rejection> {
    // Id and tags first: a rejection for any other reason still carries them.
    let id_problem = wire.id.as_deref().map(check_id).transpose().err();
    let tags_problem = wire.tags.as_ref().map(check_tags).transpose().err();
    let id = if id_problem.is_none() { wire.id.clone() } else { None };
    let tags = if tags_problem.is_none() { wire.tags.clone() } else { None };
    let reject =
        |code: ErrorCode, message: String| Rejection { code, message, id: id.clone(), tags: tags.clone() };
    let invalid = |message: String| reject(ErrorCode::InvalidRequest, message);

    if let Some(p) = id_problem {
        return Err(invalid(p));
    }
    if let Some(p) = tags_problem {
        return Err(invalid(p));
    }
    let to = match wire.to {
        None => return Err(invalid("`to` is required".into())),
        Some(To::One(n)) => vec![n],
        Some(To::Many(v)) => v,
    };
    if to.is_empty() {
        return Err(invalid("`to` must hold at least one number".into()));
    }
    if to.len() > limits.max_recipients {
        return Err(invalid(format!(
            "`to` holds {} numbers; at most {} are allowed",
            to.len(),
            limits.max_recipients
        )));
    }
    let text = match wire.text {
        Some(t) if !t.is_empty() => t,
        _ => return Err(invalid("`text` is required and must not be empty".into())),
    };
    let info = notifyd_sms::analyze(&text);
    if info.segments > limits.max_segments {
        return Err(invalid(format!(
            "the text needs {} segments ({}); at most {} are allowed",
            info.segments,
            info.encoding.as_str(),
            limits.max_segments
        )));
    }
    let (from, from_given) = match wire.from {
        None => (None, None),
        Some(given) => match notifyd_sms::validate_sender(&given) {
            Ok(normal) => {
                let given = Some(given.trim().to_owned()).filter(|given| *given != normal);
                (Some(normal), given)
            }
            Err(e) => return Err(reject(ErrorCode::InvalidSender, format!("`from`: {e}"))),
        },
    };
    if let Some(p) = &wire.provider {
        if !known_provider(p) {
            return Err(invalid(format!(
                "`provider` {:?} is not a configured provider instance",
                cut(p, 64)
            )));
        }
    }
    let class = class(wire.priority, subject_class).map_err(&invalid)?;
    let send_at = timestamp("send_at", wire.send_at).map_err(&invalid)?;
    let expires_at = timestamp("expires_at", wire.expires_at).map_err(&invalid)?;
    if let Some(at) = send_at {
        // Beyond the horizon a hold-back delay would not fit the schedulers (JetStream's delay is
        // 64-bit nanoseconds, about 292 years); far short of that it is a mistake.
        let ahead = at - OffsetDateTime::now_utc();
        if ahead > limits.max_schedule_ahead {
            return Err(invalid(format!(
                "`send_at` lies more than {} ahead (limits.max_schedule_ahead)",
                humantime::format_duration(limits.max_schedule_ahead)
            )));
        }
    }

    let mut seen = HashSet::with_capacity(to.len());
    let recipients = to
        .into_iter()
        .enumerate()
        .map(|(position, given)| match PhoneNumber::parse(&given) {
            Ok(n) if seen.insert(n.clone()) => Recipient::Valid(n),
            Ok(_) => Recipient::Duplicate,
            Err(e) => Recipient::Invalid { given: cut(&given, 32), position, reason: e.to_string() },
        })
        .collect();

    Ok(Request {
        id: id.unwrap_or_default().into(),
        recipients,
        text,
        info,
        from,
        from_given,
        provider: wire.provider,
        send_at,
        expires_at,
        tags: tags.map(Arc::new),
        class,
    })
}

impl Request {
    pub fn encoding(&self) -> Encoding {
        self.info.encoding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_recipients: 3,
            max_segments: 2,
            max_schedule_ahead: std::time::Duration::from_secs(86_400),
        }
    }

    fn run(payload: &str) -> Decoded {
        run_on(payload, None)
    }

    /// `payload` as published on the subject of `subject_class`.
    fn run_on(payload: &str, subject_class: Option<Class>) -> Decoded {
        decode(payload.as_bytes(), &limits(), subject_class, |p| p == "sms-a", &|| "js-1-7".to_owned())
    }

    fn rejected(payload: &str) -> Rejection {
        match run(payload) {
            Decoded::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn valid_request_normalises_numbers_and_keeps_positions() {
        let Decoded::Valid(r) = run(
            r#"{"id":"o-1","to":["+49 151 7111 2233","x1","0049151711122 33"],"text":"hi","tags":{"t":"a"}}"#,
        ) else {
            panic!()
        };
        assert_eq!(&*r.id, "o-1");
        assert_eq!(r.recipients[0], Recipient::Valid(PhoneNumber::parse("4915171112233").unwrap()));
        assert!(matches!(&r.recipients[1], Recipient::Invalid { given, position: 1, .. } if given == "x1"));
        assert_eq!(r.recipients[2], Recipient::Duplicate);
        assert_eq!(r.info.segments, 1);
        assert_eq!(r.tags.as_deref().unwrap()["t"], "a");
    }

    #[test]
    fn the_sender_is_normalised_and_kept_as_given_when_that_differs() {
        for (from, normal, given) in [
            (" +4915171112233 ", "4915171112233", Some("+4915171112233")),
            ("7255", "7255", None),
            (" MyShop", "MyShop", None),
        ] {
            let payload = serde_json::json!({"to": "4915171112233", "text": "hi", "from": from});
            let Decoded::Valid(r) = run(&payload.to_string()) else { panic!("{from:?}") };
            assert_eq!((r.from.as_deref(), r.from_given.as_deref()), (Some(normal), given), "{from:?}");
        }
    }

    #[test]
    fn missing_id_is_generated() {
        let Decoded::Valid(r) = run(r#"{"to":"4915171112233","text":"hi"}"#) else { panic!() };
        assert_eq!(&*r.id, "js-1-7");
    }

    #[test]
    fn not_an_object_is_a_dead_letter() {
        assert!(matches!(run("[1,2]"), Decoded::Dead(r) if r.contains("an array")));
        assert!(matches!(run("hello"), Decoded::Dead(r) if r.contains("not JSON")));
        assert!(matches!(run("\"s\""), Decoded::Dead(r) if r.contains("a string")));
        let bad_utf8 = decode(b"{\"to\":\"\xff\"}", &limits(), None, |_| true, &String::new);
        assert!(matches!(bad_utf8, Decoded::Dead(r) if r.contains("UTF-8")));
    }

    #[test]
    fn request_level_problems_carry_recovered_id_and_tags() {
        let r = rejected(r#"{"id":"o-2","to":"4915171112233","text":"hi","colour":"red","tags":{"k":"v"}}"#);
        assert_eq!(r.code, "invalid_request");
        assert!(r.message.contains("colour"), "{}", r.message);
        assert_eq!(r.id.as_deref(), Some("o-2"));
        assert_eq!(r.tags.unwrap()["k"], "v");

        let r4 = rejected(r#"{"id":"o-4","to":"4915171112233","text":4915171112299}"#);
        assert!(!r4.message.contains("4915171112299"), "the value is not quoted: {}", r4.message);
        assert!(r4.message.contains("invalid type: integer, expected a string"), "{}", r4.message);

        let r = rejected(r#"{"id":"o-3","to":5,"text":"hi"}"#);
        assert!(r.message.contains("`to`"), "{}", r.message);
        assert_eq!(r.id.as_deref(), Some("o-3"));
    }

    #[test]
    fn each_request_level_rule() {
        let cases = [
            (r#"{"text":"hi"}"#, "invalid_request", "`to` is required"),
            (r#"{"to":[],"text":"hi"}"#, "invalid_request", "at least one"),
            (r#"{"to":["1","2","3","4"],"text":"hi"}"#, "invalid_request", "at most 3"),
            (r#"{"to":"4915171112233","text":""}"#, "invalid_request", "`text`"),
            (
                r#"{"to":"4915171112233","text":"hi","from":"ThisIsTooLongASender"}"#,
                "invalid_sender",
                "`from`",
            ),
            (r#"{"to":"4915171112233","text":"hi","provider":"nope"}"#, "invalid_request", "\"nope\""),
            (r#"{"to":"4915171112233","text":"hi","send_at":"tomorrow"}"#, "invalid_request", "RFC 3339"),
            (
                r#"{"to":"4915171112233","text":"hi","send_at":"9999-12-31T23:59:59Z"}"#,
                "invalid_request",
                "max_schedule_ahead",
            ),
            (r#"{"id":"js-9","to":"4915171112233","text":"hi"}"#, "invalid_request", "js-"),
            (r#"{"id":"crlf\nX","to":"4915171112233","text":"hi"}"#, "invalid_request", "U+000A"),
            (r#"{"id":"cr\rX","to":"4915171112233","text":"hi"}"#, "invalid_request", "control"),
            (r#"{"id":"nul\u0000","to":"4915171112233","text":"hi"}"#, "invalid_request", "U+0000"),
            (r#"{"id":"sep\u2028","to":"4915171112233","text":"hi"}"#, "invalid_request", "U+2028"),
            (r#"{"id":"esc\u001b[31m","to":"4915171112233","text":"hi"}"#, "invalid_request", "U+001B"),
            (r#"{"id":"","to":"4915171112233","text":"hi"}"#, "invalid_request", "1 to 128"),
        ];
        for (payload, code, needle) in cases {
            let r = rejected(payload);
            assert_eq!(r.code, code, "{payload}");
            assert!(r.message.contains(needle), "{payload}: {}", r.message);
        }
        let long = "x".repeat(400);
        let r = rejected(&format!(r#"{{"to":"4915171112233","text":"{long}"}}"#));
        assert!(r.message.contains("segments"), "{}", r.message);
        let many_tags: Vec<String> = (0..17).map(|i| format!("\"k{i}\":\"v\"")).collect();
        let r =
            rejected(&format!(r#"{{"to":"4915171112233","text":"hi","tags":{{{}}}}}"#, many_tags.join(",")));
        assert!(r.message.contains("16"), "{}", r.message);
        assert!(r.tags.is_none());
    }

    #[test]
    fn timestamps_with_offsets_parse() {
        let Decoded::Valid(r) =
            run(r#"{"to":"4915171112233","text":"hi","expires_at":"2026-11-21T22:05:00+01:00"}"#)
        else {
            panic!()
        };
        assert_eq!(r.expires_at.unwrap().unix_timestamp(), 1_795_295_100);
    }

    #[test]
    fn the_priority_field_wins_else_the_subject_else_none() {
        use Class::*;
        let class = |priority: &str, subject: Option<Class>| {
            let payload = format!(r#"{{"id":"p","to":"4915171112233","text":"hi"{priority}}}"#);
            match run_on(&payload, subject) {
                Decoded::Valid(r) => r.class,
                other => panic!("{payload} on {subject:?}: {other:?}"),
            }
        };
        // Neither: none, so the route's default applies later. `null` is absent.
        assert_eq!(class("", None), None);
        assert_eq!(class(r#","priority":null"#, None), None);
        // The field alone.
        assert_eq!(class(r#","priority":"urgent""#, None), Some(Urgent));
        assert_eq!(class(r#","priority":"normal""#, None), Some(Normal));
        assert_eq!(class(r#","priority":"bulk""#, None), Some(Bulk));
        // The subject alone.
        for c in Class::ALL {
            assert_eq!(class("", Some(c)), Some(c));
            assert_eq!(class(r#","priority":null"#, Some(c)), Some(c));
        }
        // Both, agreeing.
        assert_eq!(class(r#","priority":"bulk""#, Some(Bulk)), Some(Bulk));
    }

    #[test]
    fn a_priority_that_contradicts_the_subject_is_rejected() {
        let r = match run_on(
            r#"{"id":"p-1","to":"4915171112233","text":"hi","priority":"bulk"}"#,
            Some(Class::Urgent),
        ) {
            Decoded::Rejected(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.code, "invalid_request");
        assert_eq!(r.id.as_deref(), Some("p-1"));
        assert!(r.message.contains("says \"bulk\""), "{}", r.message);
        assert!(r.message.contains("published on <prefix>.sms.send.urgent"), "{}", r.message);
        for (field, subject) in [("urgent", Class::Normal), ("normal", Class::Bulk), ("bulk", Class::Normal)]
        {
            let payload = format!(r#"{{"to":"4915171112233","text":"hi","priority":"{field}"}}"#);
            assert!(matches!(run_on(&payload, Some(subject)), Decoded::Rejected(_)), "{field} on {subject}");
        }
    }

    #[test]
    fn a_priority_that_is_not_a_class_name_is_rejected_naming_the_allowed_values() {
        let long = format!("\\u001b[31m{}", "x".repeat(500));
        let cases = [
            r#""URGENT""#,
            r#""Urgent""#,
            r#""high""#,
            r#""""#,
            r#"" urgent""#,
            r#""urgent\n""#,
            r#""\u001b[2Jurgent""#,
            r#""a\u2028b""#,
            r#""\u202eevil""#,
            "1",
            "0.5",
            "true",
            r#"["urgent"]"#,
            r#"{"class":"urgent"}"#,
        ];
        for value in cases.iter().map(|v| v.to_string()).chain([format!("\"{long}\"")]) {
            let payload = format!(r#"{{"id":"p-2","to":"4915171112233","text":"hi","priority":{value}}}"#);
            for subject in [None, Some(Class::Urgent)] {
                let r = match run_on(&payload, subject) {
                    Decoded::Rejected(r) => r,
                    other => panic!("{value}: {other:?}"),
                };
                assert_eq!(r.code, "invalid_request", "{value}");
                assert_eq!(r.id.as_deref(), Some("p-2"), "{value}");
                assert!(r.message.contains(r#""urgent", "normal" or "bulk""#), "{value}: {}", r.message);
                assert!(
                    !r.message.chars().any(|c| c.is_control() || ('\u{2028}'..='\u{202e}').contains(&c)),
                    "{value}: a control character leaks: {:?}",
                    r.message
                );
                assert!(r.message.len() < 200, "{value}: the value is cut: {}", r.message);
            }
        }
        let r = rejected(r#"{"to":"4915171112233","text":"hi","priority":"HIGH"}"#);
        assert!(r.message.ends_with(r#"not "HIGH""#), "{}", r.message);
        let r = rejected(r#"{"to":"4915171112233","text":"hi","priority":7}"#);
        assert!(r.message.ends_with("not a number"), "{}", r.message);
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics_on_arbitrary_bytes(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&payload, &limits(), None, |_| true, &|| "js-1-1".to_owned());
        }

        #[test]
        fn decoding_never_panics_on_request_shaped_json(
            id in proptest::option::of(".{0,140}"),
            to in proptest::collection::vec("[+0-9 ()a-z.-]{0,20}", 0..6),
            text in "\\PC{0,400}",
            from in proptest::option::of(".{0,20}"),
            at in proptest::option::of("[0-9TZ:.+-]{0,30}"),
        ) {
            let mut v = serde_json::json!({"to": to, "text": text});
            if let Some(id) = id { v["id"] = id.into(); }
            if let Some(from) = from { v["from"] = from.into(); }
            if let Some(at) = at { v["send_at"] = at.into(); }
            let payload = serde_json::to_vec(&v).unwrap();
            match decode(&payload, &limits(), None, |_| true, &|| "js-1-1".to_owned()) {
                Decoded::Valid(r) => proptest::prop_assert!(!r.id.is_empty()),
                Decoded::Rejected(r) => proptest::prop_assert!(!r.message.is_empty()),
                Decoded::Dead(_) => proptest::prop_assert!(false, "a JSON object is never a dead letter"),
            }
        }
    }
}
