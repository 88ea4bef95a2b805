//! A ticket: some recipients of one request, waiting in one provider's queue for one class.
//!
//! It carries everything a replica needs to take the recipients up where they were left: the
//! request itself (with its id written in, so a generated id survives), their position in their
//! route, how often they were tried, and when the request was accepted. Tickets are JSON, one
//! JetStream message each, with `Nats-Msg-Id` `<id>/q/<position>/<tries>/<first recipient>`, so a
//! ticket published twice (a redelivery of the request that made it) is stored once.

use crate::class::Class;
use notifyd_plugin::wire::ProviderError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Serialize, Deserialize)]
pub struct Ticket {
    /// The request id.
    pub id: String,
    /// Recipients (normal form) and the provider calls made for each so far.
    pub to: Vec<(String, u32)>,
    /// The route, provider names in failover order, and the position of this provider in it.
    pub route: Vec<String>,
    pub pos: usize,
    pub class: Class,
    /// Steps already made at this provider (0: none yet).
    #[serde(default)]
    pub tries: u32,
    /// When the request was accepted, Unix milliseconds (for the queue wait histogram).
    pub accepted_ms: i64,
    /// Not to be taken up before (Unix milliseconds; 0: at once): a retry's backoff.
    #[serde(default)]
    pub not_before_ms: i64,
    /// The request's `expires_at` (Unix milliseconds), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// The recipients' last error (what they fail with if no provider is left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ProviderError>,
    /// The request as published, with its id.
    pub request: Box<RawValue>,
}

impl Ticket {
    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("tickets encode as JSON").into()
    }

    pub fn decode(payload: &[u8]) -> Result<Ticket, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Its `Nats-Msg-Id`: the request, the position and tries, and a hash of its recipients and
    /// route, so two different tickets of one request never share it.
    pub fn msg_id(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in self.to.iter().map(|(n, _)| n.as_str()).chain(self.route.iter().map(String::as_str)) {
            for b in part.bytes().chain(std::iter::once(b',')) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        format!("{}/q/{}/{}/{h:016x}", self.id, self.pos, self.tries)
    }
}

/// The parts of a request a ticket carries: the request as published, parsed once, with its id
/// written in (a generated one must survive). See [`Base::for_recipients`].
pub struct Base(serde_json::Map<String, serde_json::Value>);

impl Base {
    /// `payload` (a request that passed validation) with `id` written in.
    pub fn new(payload: &[u8], id: &str) -> Base {
        let mut request: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).unwrap_or_default();
        request.insert("id".to_owned(), serde_json::Value::String(id.to_owned()));
        Base(request)
    }

    /// The request for a ticket of recipients `to` (normal form): compact JSON, and `to` holds
    /// only them. So a ticket is never much larger than its recipients and text, whatever the
    /// published request held besides (whitespace, other recipients, invalid entries).
    pub fn for_recipients<'a>(&self, to: impl Iterator<Item = &'a str>) -> Box<RawValue> {
        let mut request = self.0.clone();
        let to: Vec<serde_json::Value> = to.map(|n| serde_json::Value::String(n.to_owned())).collect();
        request.insert("to".to_owned(), serde_json::Value::Array(to));
        serde_json::value::to_raw_value(&request).expect("a JSON object encodes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_carries_its_id_its_recipients_and_nothing_padded() {
        let padded = format!(
            r#"{{"to":["+4915171112233", "+4915171112234", "{}"],{}"text":"hi"}}"#,
            "x".repeat(10_000),
            " ".repeat(100_000)
        );
        let raw = Base::new(padded.as_bytes(), "js-1-7").for_recipients(["4915171112234"].into_iter());
        assert!(raw.get().len() < 100, "{}", raw.get());
        let back: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(back["id"], "js-1-7");
        assert_eq!(back["text"], "hi");
        assert_eq!(back["to"], serde_json::json!(["4915171112234"]));
    }

    #[test]
    fn tickets_round_trip() {
        let t = Ticket {
            id: "a/b".into(),
            to: vec![("4915171112233".into(), 1)],
            route: vec!["p".into(), "q".into()],
            pos: 1,
            class: Class::Urgent,
            tries: 0,
            accepted_ms: 5,
            not_before_ms: 0,
            expires_ms: None,
            last_error: None,
            request: Base::new(br#"{"id":"a/b"}"#, "a/b").for_recipients(std::iter::empty()),
        };
        let back = Ticket::decode(&t.encode()).unwrap();
        assert_eq!((back.id.as_str(), back.pos, back.class), ("a/b", 1, Class::Urgent));
        assert_eq!(back.to, t.to);
        assert!(t.msg_id().starts_with("a/b/q/1/0/"), "{}", t.msg_id());
        let other = Ticket { to: vec![("4915171112234".into(), 1)], ..Ticket::decode(&t.encode()).unwrap() };
        assert_ne!(t.msg_id(), other.msg_id(), "other recipients, another id");
    }
}
