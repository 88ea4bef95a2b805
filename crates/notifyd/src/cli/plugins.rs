//! `notifyd plugins` (list the plugins found) and `notifyd plugin verify FILE` (conformance).

use super::{EX_USAGE, print_error};
use notifyd::config::Config;
use notifyd::{plugin, verify};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Lists the plugins in the plugin directories (those of the config at `config_path`, if given,
/// and the default ones); exit code 1 when there are none.
pub fn list(config_path: Option<&Path>) -> ExitCode {
    let dirs =
        config_path.map(|p| Config::load(p).map(|c| c.plugins.dirs).unwrap_or_default()).unwrap_or_default();
    let mut found = 0;
    for dir in plugin::search_dirs(&dirs) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("{}notifyd_", std::env::consts::DLL_PREFIX))
                        && n.ends_with(std::env::consts::DLL_SUFFIX)
                })
            })
            .collect();
        paths.sort();
        for path in paths {
            found += 1;
            match plugin::PluginLibrary::load(&path) {
                Ok(lib) => {
                    let d = &lib.describe;
                    let caps: Vec<&str> = [
                        (notifyd_plugin::abi::CAP_STATUS, "status"),
                        (notifyd_plugin::abi::CAP_BALANCE, "balance"),
                        (notifyd_plugin::abi::CAP_CALLBACK, "callback"),
                        (notifyd_plugin::abi::CAP_SCHEDULE, "schedule"),
                    ]
                    .into_iter()
                    .filter(|(bit, _)| lib.capabilities() & bit != 0)
                    .map(|(_, n)| n)
                    .collect();
                    println!(
                        "{:<16} {:<8} ABI {:<5} send{}{}  {}",
                        d.name,
                        d.version,
                        lib.abi_version(),
                        if caps.is_empty() { "" } else { "," },
                        caps.join(","),
                        path.display()
                    );
                }
                Err(e) => println!("{:<16} unusable: {e}", "?"),
            }
        }
    }
    if found == 0 {
        eprintln!("no plugins found; build them with `cargo build --workspace` or set [plugins] dirs");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `notifyd plugin verify FILE`: runs the conformance checks ([`notifyd::verify`]) on a plugin.
pub fn verify(file: &Path, settings: Option<String>) -> ExitCode {
    let settings = match settings.map(|s| serde_json::from_str::<serde_json::Value>(&s)) {
        None => None,
        Some(Ok(v)) if v.is_object() => Some(v),
        Some(_) => {
            print_error(
                "--settings must be a JSON object, e.g. '{\"username\":\"u\",\"password\":\"p\"}'",
                "problems",
                &[],
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    let report = verify::verify(file, settings);
    print!("{}", report.render());
    if report.passed() {
        println!("{}: conforms to the notifyd plugin ABI", file.display());
        ExitCode::SUCCESS
    } else {
        println!("{}: does NOT conform; see the FAIL lines above", file.display());
        ExitCode::from(1)
    }
}
