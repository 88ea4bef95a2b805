//! The `notifyd` command: parses the command line and the config, then hands over to the library.

use clap::{Parser, Subcommand, ValueEnum};
use notifyd::config::{self, Config};
use notifyd::{Error, plugin, verify};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// The daemon allocates many small, short-lived objects per request from several threads; jemalloc
// costs less CPU per request than the system allocator there (docs/benchmarks.md). Plugins keep
// their own allocators: every buffer a plugin returns is freed through its `free_buf`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "notifyd", version, about = "SMS notification daemon: NATS in, provider plugins out")]
struct Cli {
    /// Config file [default: config/notifyd.toml if present, else /etc/notifyd/notifyd.toml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: `text` (human) or `json`
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default)
    Run,
    /// Validate the config, load its plugins, and list every problem
    CheckConfig,
    /// List the plugins found in the plugin directories
    Plugins,
    /// Publish one request and, with --wait, follow its events until every recipient is final
    Send {
        /// Recipient number(s), international format; repeat or comma-separate for several
        #[arg(long, required = true, value_delimiter = ',')]
        to: Vec<String>,
        /// The text
        #[arg(long)]
        text: String,
        /// Sender id (default: the provider's `sender`)
        #[arg(long)]
        from: Option<String>,
        /// Wait for final statuses and print every event
        #[arg(long)]
        wait: bool,
        /// How long --wait waits
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Ask every provider that supports it for its balance, and print them
    Balance,
    /// Plugin tools
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin and run the conformance checks on it
    Verify {
        /// The plugin library (e.g. target/release/libnotifyd_smsc.so)
        file: PathBuf,
        /// Settings for the test instance, as JSON (default: tries empty and placeholder credentials)
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
    },
}

const EX_USAGE: u8 = 64;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    let config_path = cli.config.clone().unwrap_or_else(config::default_path);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&config_path),
        Command::CheckConfig => check_config(&config_path),
        Command::Plugins => list_plugins(cli.config.as_deref()),
        Command::Plugin { command: PluginCommand::Verify { file, settings } } => {
            verify_plugin(&file, settings)
        }
        Command::Balance => balance(&config_path),
        Command::Send { to, text, from, wait, timeout } => {
            let config = match load(&config_path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let s = notifyd::send::Send { to, text, from, wait, timeout };
            match runtime.block_on(notifyd::send::send(&config, s)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(&e),
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let directives = log_directives(std::env::var("NOTIFYD_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The `EnvFilter` directives for `NOTIFYD_LOG` (default `info`). A bare `debug` or `trace`
/// applies to notifyd's own targets (`notifyd*`: the daemon, its SDK crates and plugins) only;
/// every other target (async_nats, hyper, h2, reqwest, rustls, ...) stays at `info`, because
/// at `trace` the NATS client logs whole payloads: texts and full numbers. A library's trace
/// output needs its own directive: `NOTIFYD_LOG=trace,async_nats=trace`.
fn log_directives(env: Option<&str>) -> String {
    let env = env.map(str::trim).filter(|e| !e.is_empty()).unwrap_or("info");
    // `trace,notifyd=warn` names notifyd itself: its own directive stays the only one for it.
    let names_notifyd = env.split(',').any(|d| d.trim().split(['=', '[']).next() == Some("notifyd"));
    env.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| match d.to_ascii_lowercase().as_str() {
            "debug" | "trace" if names_notifyd => "info".to_owned(),
            "debug" | "trace" => format!("notifyd={d},info"),
            _ => d.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
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

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("notifyd: the configuration {} has problems:", path.display());
        for p in &e.problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(EX_CONFIG)
    })
}

fn run(path: &Path) -> ExitCode {
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

fn report(e: &Error) -> ExitCode {
    eprintln!("notifyd: {e}");
    ExitCode::from(e.exit_code() as u8)
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

fn check_config(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let metrics = notifyd::metrics::Metrics::new();
    match notifyd::provider::Providers::load(&config, &notifyd::http::HttpClient::new(), &metrics) {
        Ok(providers) => {
            println!(
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

fn balance(path: &Path) -> ExitCode {
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
            println!("{:<20} (the plugin cannot report a balance)", p.name);
            continue;
        }
        match runtime.block_on(notifyd::balance::query(p)) {
            Ok((amount, currency)) => println!("{:<20} {amount:>14.2} {currency}", p.name),
            Err(e) => {
                failed = true;
                println!("{:<20} error: {} ({})", p.name, e.message, e.code);
            }
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn list_plugins(config_path: Option<&Path>) -> ExitCode {
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

fn verify_plugin(file: &Path, settings: Option<String>) -> ExitCode {
    let settings = match settings.map(|s| serde_json::from_str::<serde_json::Value>(&s)) {
        None => None,
        Some(Ok(v)) if v.is_object() => Some(v),
        Some(_) => {
            eprintln!(
                "notifyd: --settings must be a JSON object, e.g. '{{\"username\":\"u\",\"password\":\"p\"}}'"
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

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn a_bare_verbose_level_is_for_notifyd_only() {
        assert_eq!(log_directives(None), "info");
        assert_eq!(log_directives(Some("")), "info");
        assert_eq!(log_directives(Some("trace")), "notifyd=trace,info");
        assert_eq!(log_directives(Some("DEBUG")), "notifyd=DEBUG,info");
        assert_eq!(log_directives(Some("warn")), "warn");
        assert_eq!(log_directives(Some("notifyd=debug,info")), "notifyd=debug,info");
        assert_eq!(log_directives(Some("trace,async_nats=trace")), "notifyd=trace,info,async_nats=trace");
        assert_eq!(log_directives(Some("trace,notifyd=warn")), "info,notifyd=warn");
    }
}
