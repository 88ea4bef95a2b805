//! What the notifyd host and its provider plugins share.
//!
//! - [`abi`]: the C ABI v1, a mirror of `include/notifyd_plugin.h` (the source of truth);
//! - [`wire`]: the JSON documents that cross it;
//! - [`sdk`]: the Rust SDK: implement [`sdk::Provider`] and call [`export_plugin!`] once; plugin
//!   crates never write `unsafe`.
//!
//! `unsafe` in this crate lives only in the export machinery ([`sdk::export`]) that the macro calls.

// `deny`, not `forbid`: the export module needs `#[allow(unsafe_code)]`, and an `allow` cannot
// relax a `forbid`. Everything else in the crate is held to the deny.
#![deny(unsafe_code)]

pub mod abi;
pub mod sdk;
pub mod wire;
