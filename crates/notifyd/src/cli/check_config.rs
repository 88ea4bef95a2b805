//! `notifyd check-config`: validates the config and loads its plugins, listing every problem.

use super::{load, report};
use notifyd::Error;
use std::path::Path;
use std::process::ExitCode;

/// Checks the config at `path`.
pub fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let metrics = notifyd::metrics::Metrics::new();
    match notifyd::provider::Providers::load(&config, &notifyd::http::HttpClient::new(), &metrics) {
        Ok(providers) => {
            outln!(
                "{}: ok ({} providers, {} routes)",
                path.display(),
                providers.list.len(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => report(&Error::Plugins(errors)),
    }
}
