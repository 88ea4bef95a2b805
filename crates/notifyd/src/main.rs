//! The `notifyd` command: parses the command line, then hands over to the subcommand in
//! [`cli`] (the daemon itself is `notifyd::run`, called by [`cli::run`]).
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;
use cli::{Cli, Command, PluginCommand};
use std::process::ExitCode;

// The daemon allocates many small, short-lived objects per request from several threads; jemalloc
// costs less CPU per request than the system allocator there (docs/benchmarks.md). Plugins keep
// their own allocators: every buffer a plugin returns is freed through its `free_buf`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(&e),
    };
    let quiet = matches!(cli.command, Some(Command::Send { .. }));
    cli::init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    let config_path = cli.config.clone().unwrap_or_else(notifyd::config::default_path);
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::Run => cli::run::run(&config_path),
        Command::Dev => cli::dev::run(cli.config.as_deref()),
        Command::CheckConfig => cli::check_config::run(&config_path),
        Command::Plugins => cli::plugins::list(cli.config.as_deref()),
        Command::Plugin { command: PluginCommand::Verify { file, settings, json } } => {
            cli::plugins::verify(&file, settings, json)
        }
        Command::Balance => cli::balance::run(&config_path),
        Command::Send { nats_url, to, text, from, priority, wait, timeout } => {
            let send = cli::send::Send { to, text, from, priority, wait, timeout };
            cli::send::run(cli.config.as_deref(), nats_url, send)
        }
    };
    cli::out::exit_code(code)
}
