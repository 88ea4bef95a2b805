//! SMS text and number toolbox shared by the notifyd daemon and its provider plugins.
//!
//! It answers the questions every part of notifyd asks about a message before it reaches a
//! provider: which alphabet a text needs and how many segments it costs ([`analyze`], following
//! the GSM 03.38 default alphabet and its extension table), whether a recipient is a valid
//! international number and what its normal form is ([`PhoneNumber`]), whether a sender id is
//! acceptable ([`validate_sender`]), and how to bring a text down to plain Latin for providers
//! that accept nothing else ([`transliterate`]). The rules are those of docs/contract.md §2.3
//! ("Send requests"); the crate has no dependencies and does no I/O, so plugins can use it freely.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod phone;
mod sender;
mod text;
mod translit;

pub use phone::{PhoneError, PhoneNumber};
pub use sender::{SenderError, validate_sender};
pub use text::{Encoding, TextInfo, analyze, is_gsm7};
pub use translit::transliterate;
