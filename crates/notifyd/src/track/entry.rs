//! A tracked recipient: the entry the pipeline publishes to the tracking stream for every `sent`
//! recipient, and the event that ends it.

use crate::events::{Event, Status};
use crate::validate::Tags;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One tracked recipient, as stored in the tracking stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub to: String,
    /// The provider instance name.
    pub provider: String,
    /// The plugin's opaque tracking reference.
    #[serde(rename = "ref")]
    pub reference: String,
    pub provider_message_id: String,
    pub segments: u32,
    pub encoding: String,
    pub attempt: u32,
    /// When it was sent, unix milliseconds.
    pub sent_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// The event of a tracked recipient.
pub fn tracked_event(entry: &Entry, status: Status) -> Event<'_> {
    let mut ev = Event::new(&entry.id, status);
    ev.to = Some(&entry.to);
    ev.provider = Some(&entry.provider);
    ev.provider_message_id = Some(&entry.provider_message_id);
    ev.segments = Some(entry.segments);
    ev.encoding = Some(&entry.encoding);
    ev.attempt = Some(entry.attempt);
    ev.tags = entry.tags.as_ref();
    ev
}

/// Encodes an entry for the tracking stream.
pub fn encode(entry: &Entry) -> Bytes {
    let mut payload = Vec::with_capacity(320);
    serde_json::to_writer(&mut payload, entry).expect("tracking entries encode as JSON");
    Bytes::from(payload)
}

/// Now, as unix milliseconds.
pub fn now_unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Hex of any text, for keys and subjects (which cannot hold every character).
pub(crate) fn hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_plain_lowercase_hex() {
        assert_eq!(super::hex("a1"), "6131");
        assert_eq!(super::hex(""), "");
    }
}
