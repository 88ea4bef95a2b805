//! `notifyd` / `notifyd run`: the daemon, until SIGTERM or SIGINT.

use super::{load, report};
use std::path::Path;
use std::process::ExitCode;

/// Runs the daemon with the config at `path` on a multi-threaded runtime.
pub fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    raise_open_files_limit();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    match runtime.block_on(notifyd::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Raises the open-file soft limit to the hard limit, so that the usual default of 1024 does not
/// become the capacity of the listeners and the provider connections; logs the result.
fn raise_open_files_limit() {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) if soft < hard => match rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => {
                tracing::warn!(limit = soft, hard, error = %e, "could not raise the open-file limit")
            }
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit (already at its hard limit)"),
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
    }
}
