//! The `notifyd` command's subcommands, on the binary side: the daemon library knows nothing of
//! them. One module per command: [`run`] (the daemon), [`check_config`], [`plugins`] (listing and
//! `plugin verify`), [`balance`], [`send`]; this module holds the command line and what they share
//! (loading the config, logging, exit codes).

pub mod balance;
pub mod check_config;
pub mod plugins;
pub mod run;
pub mod send;

use clap::{Parser, Subcommand, ValueEnum};
use notifyd::Error;
use notifyd::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "notifyd", version, about = "SMS notification daemon: NATS in, provider plugins out")]
pub struct Cli {
    /// Config file [default: config/notifyd.toml if present, else /etc/notifyd/notifyd.toml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: `text` (human) or `json`
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Traffic class, sent as the request's `priority` (default: none, the route's)
        #[arg(long, value_name = "CLASS", value_parser = parse_class)]
        priority: Option<notifyd::class::Class>,
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

/// A traffic class named on the command line: `urgent`, `normal` or `bulk`.
fn parse_class(s: &str) -> Result<notifyd::class::Class, String> {
    notifyd::class::Class::parse(s).ok_or_else(|| "must be urgent, normal or bulk".to_owned())
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Load a plugin and run the conformance checks on it
    Verify {
        /// The plugin library (e.g. target/release/libnotifyd_smsc.so)
        file: PathBuf,
        /// Settings for the test instance, as JSON (default: tries empty and placeholder credentials)
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
    },
}

pub const EX_USAGE: u8 = 64;
pub const EX_CONFIG: u8 = 78;

/// Sets up logging to stderr in `format`, filtered by `NOTIFYD_LOG` (see [`log_directives`]).
pub fn init_logging(format: LogFormat) {
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

/// Loads the config at `path`; on problems, lists them all on stderr and gives exit code 78.
/// The message names the `NOTIFYD_` variables in play next to the file: the file is not always
/// where a problem is.
pub fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        let overrides = notifyd::config::environment_overrides();
        let source = match overrides.as_slice() {
            [] => path.display().to_string(),
            vars => format!("{}, with {} from the environment,", path.display(), vars.join(", ")),
        };
        eprintln!("notifyd: the configuration {source} has problems:");
        for p in &e.problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(EX_CONFIG)
    })
}

/// Prints a daemon error and gives its exit code.
pub fn report(e: &Error) -> ExitCode {
    eprintln!("notifyd: {e}");
    ExitCode::from(e.exit_code() as u8)
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
