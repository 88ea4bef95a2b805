//! Commands for the processes a test runs that read `NOTIFYD_*` variables (the daemon, the
//! bench), without the developer's: a shell that exports `NOTIFYD_NATS__URL` for a manual run
//! must not send every test's daemon to that server.

use std::ffi::{OsStr, OsString};
use std::process::Command;

/// `Command::new(program)` without the `NOTIFYD_*` variables of this process, except the test
/// kit's own `NOTIFYD_TEST_*` (which choose the nats-server and make tools required); a test sets
/// the variables it means with `.env`.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    clean_command_from(program, std::env::vars_os())
}

/// [`clean_command`] for the environment `vars`.
fn clean_command_from(
    program: impl AsRef<OsStr>,
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> Command {
    let mut command = Command::new(program);
    for (name, _) in vars {
        // The daemon matches its prefix in any case (`notifyd_nats__url` sets `[nats] url`).
        let text = name.to_string_lossy().to_ascii_uppercase();
        if text.starts_with("NOTIFYD_") && !text.starts_with("NOTIFYD_TEST_") {
            command.env_remove(&name);
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::clean_command_from;
    use std::ffi::OsString;

    #[test]
    fn the_daemons_variables_are_removed_and_the_kits_own_kept() {
        let vars = [
            ("NOTIFYD_NATS__URL", "nats://127.0.0.1:4223"),
            ("NOTIFYD_INTAKE__MODE", "core"),
            ("NOTIFYD_LOG", "trace"),
            ("notifyd_nats__url", "nats://127.0.0.1:4223"),
            ("NOTIFYD_TEST_NATS_SERVER", "/opt/nats-server"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let command = clean_command_from("notifyd", vars.into_iter());
        let mut removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            ["NOTIFYD_INTAKE__MODE", "NOTIFYD_LOG", "NOTIFYD_NATS__URL", "notifyd_nats__url"]
        );
        assert_eq!(command.get_envs().count(), 4, "nothing else is touched");
    }
}
