//! Delivery status tracking, kept in NATS rather than in one process's memory.
//!
//! Each `sent` recipient becomes one message in the tracking
//! stream (work-queue retention, subject `<prefix>.sms.track`). A durable pull consumer shared by
//! every replica fetches these entries; an entry that is not due is handed back with a delay
//! (`NAK` with delay), so the schedule lives in JetStream: any replica continues another's work,
//! and a restart resumes it. Due entries are grouped per provider and queried in batches of the
//! plugin's `max_status_refs`; a final status publishes its event and acks the entry; a pending
//! one is handed back until the next poll (`first_poll`, then doubling up to `max_interval`); an
//! entry older than `window` ends `unknown`. Entries of providers that cannot be polled just wait for
//! the window's end: then they end `unknown`, unless a pushed delivery report already ended them.
//!
//! For a provider that pushes delivery reports (with the callback listener on), the callback
//! index decides which final status is a recipient's only one ([`callbacks::Index::settle`]):
//! a polled final status or the window's `unknown` is published only if no report ended the
//! recipient first. The poller also registers such an entry in the index when it first looks at it
//! (and again at the window's end), for a recipient the pipeline could not register when it was
//! sent: the tracking entry is that recipient's record until then.
//!
//! The stage, in the order an entry meets it: [`entry`] (what is tracked, published by the
//! pipeline with the `sent` event), [`poller`] (the schedule and the `status` calls),
//! [`callbacks`] (the index of pushed reports, which settles a recipient's one final status), and
//! [`listener`] (the HTTP endpoint providers push reports to). The NATS objects are set up in
//! [`crate::nats`].

pub mod callbacks;
pub mod entry;
pub mod listener;
pub mod poller;

pub use callbacks::Index;
pub use entry::{Entry, encode, now_unix_ms};
pub use poller::Poller;
