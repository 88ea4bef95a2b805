//! `notifyd balance`: asks every provider that supports it for its balance, and prints them.

use super::{load, report};
use notifyd::{Error, plugin};
use std::path::Path;
use std::process::ExitCode;

/// Prints the balance of every provider of the config at `path`; exit code 1 when one failed.
pub fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let metrics = notifyd::metrics::Metrics::new();
    let providers =
        match notifyd::provider::Providers::load(&config, &notifyd::http::HttpClient::new(), &metrics) {
            Ok(p) => p,
            Err(errors) => return report(&Error::Plugins(errors)),
        };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut failed = false;
    for p in &providers.list {
        if !p.supports(plugin::Op::Balance) {
            outln!("{:<20} (the plugin cannot report a balance)", p.name);
            continue;
        }
        match runtime.block_on(notifyd::balance::query(p)) {
            Ok((amount, currency)) => outln!("{:<20} {amount:>14.2} {currency}", p.name),
            Err(e) => {
                failed = true;
                outln!("{:<20} error: {} ({})", p.name, e.message, e.code);
            }
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
