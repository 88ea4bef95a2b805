//! `notifyd plugins` (list the plugins found) and `notifyd plugin verify FILE` (conformance).

use super::{EX_USAGE, print_error};
use notifyd::config::Config;
use notifyd::{plugin, verify};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Lists the plugins in the plugin directories (those of the config at `config_path`, if given,
/// and the default ones); exit code 1 when there are none.
pub fn list(config_path: Option<&Path>) -> ExitCode {
    let loaded = config_path.map(|p| Config::load(p).map(|c| c.plugins.dirs));
    let dirs = match &loaded {
        Some(Ok(dirs)) => dirs.clone(),
        _ => Vec::new(),
    };
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
                    outln!(
                        "{:<16} {:<8} ABI {:<5} send{}{}  {}",
                        d.name,
                        d.version,
                        lib.abi_version(),
                        if caps.is_empty() { "" } else { "," },
                        caps.join(","),
                        path.display()
                    );
                }
                Err(e) => outln!("{:<16} unusable: {e}", "?"),
            }
        }
    }
    if found == 0 {
        let (how, searched) = none_found(&dirs, config_path.zip(loaded.map(|l| l.is_ok())));
        print_error(&how, "searched", &searched);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// What to say when no plugin is found in the directories searched for `dirs` (the config's
/// `[plugins] dirs`): how to add one, and each directory searched, with where it comes from.
/// `config`: the config file given, and whether it loaded.
fn none_found(dirs: &[PathBuf], config: Option<(&Path, bool)>) -> (String, Vec<String>) {
    let file = format!("{}notifyd_<name>{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    let mut searched: Vec<String> = plugin::search_dirs(dirs)
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let from = if i < dirs.len() {
                "[plugins] dirs"
            } else if exe_dir.as_ref() == Some(dir) {
                "the notifyd executable's directory"
            } else {
                "the system directory"
            };
            let missing = if dir.is_dir() { "" } else { ", does not exist" };
            format!("{} ({from}{missing})", dir.display())
        })
        .collect();
    let configure = match config {
        None => {
            "add its directory to `[plugins] dirs` in a config file and pass it with --config FILE".into()
        }
        Some((path, true)) => format!("add its directory to `[plugins] dirs` in {}", path.display()),
        Some((path, false)) => {
            searched.push(format!(
                "not searched: the `[plugins] dirs` of {}, which does not load (see `notifyd check-config`)",
                path.display()
            ));
            format!("fix {} and add the directory to its `[plugins] dirs`", path.display())
        }
    };
    let how = format!(
        "no plugins found (no {file} in the directories searched, below). To add one, build them \
         with `cargo build --workspace` (they land beside the notifyd binary, in target/debug), \
         copy one into a directory below, or {configure}"
    );
    (how, searched)
}

/// `notifyd plugin verify FILE`: runs the conformance checks ([`notifyd::verify`]) on a plugin and
/// prints a line per check and the verdict, or with `json` one JSON document
/// ([`verify::Report::to_json`]). Exit code 0 when it conforms, 1 when not, 64 for a bad `--settings`.
pub fn verify(file: &Path, settings: Option<String>, json: bool) -> ExitCode {
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
    if json {
        outln!("{}", report.to_json(file));
    } else {
        for line in report.render() {
            outln!("{line}");
        }
        if report.passed() {
            outln!("{}: conforms to the notifyd plugin ABI", file.display());
        } else {
            outln!("{}: does NOT conform; see the FAIL lines above", file.display());
        }
    }
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
