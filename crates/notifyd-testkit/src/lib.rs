//! Test support for notifyd's integration tests and benchmarks.
//!
//! The daemon is tested against real processes rather than fakes of its
//! protocols: [`NatsServer`] spawns a real `nats-server` with JetStream on a
//! free port and kills it on `Drop`, and [`NatsCluster`] three of them forming a
//! JetStream cluster, for fault tests that kill, restart or pause one node; [`MockHttp`] is a real HTTP/1.1 server on a
//! free port that plays an SMS provider's API and records every request it
//! gets; [`cargo_plugin`] and [`c_plugin`] build provider plugins (Rust cdylibs
//! and C shared objects) once per test process so tests can load them;
//! [`clean_command`] starts the daemon without the developer's `NOTIFYD_*`
//! variables. Nothing
//! here is meant for production code.

#![forbid(unsafe_code)]

mod cluster;
mod command;
mod http;
mod nats;
mod plugin;

pub use cluster::NatsCluster;
pub use command::clean_command;
pub use http::{MockHttp, MockResponse, RecordedRequest};
pub use nats::{NatsServer, NatsServerBuilder};
pub use plugin::{c_plugin, cargo_plugin, target_dir, workspace_root};
