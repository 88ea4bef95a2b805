//! `notifyd dev`: a NATS server of its own, the daemon, the printed `send` line that works as it
//! is, and nothing left behind: not after Ctrl-C/SIGTERM, and not after a `kill -9` (the next run
//! cleans up). Uses the nats-server on PATH (2.10 or newer), as a developer's machine would.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `notifyd dev --config <sandbox config>` started in an empty directory; the lines of its stderr
/// arrive on the returned channel.
fn start_dev(dir: &std::path::Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let metrics = common::free_port();
    let config = format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[tracking]\nfirst_poll = \"100ms\"\n[[providers]]\nname = \"sandbox\"\nplugin = {:?}\n[[routes]]\nprefixes = [\"\"]\nproviders = [\"sandbox\"]\n",
        common::sandbox_plugin()
    );
    let path = dir.join("dev.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(["dev", "--config"])
        .arg(&path)
        .current_dir(dir)
        .env("NOTIFYD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The printed `send` line, once `dev` says it is ready (at most 60 s).
fn send_line(rx: &std::sync::mpsc::Receiver<String>) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.trim_start().contains(" send ") && line.contains("--nats-url") {
            return (line.trim().to_owned(), seen);
        }
        seen.push(line);
    }
    panic!("no send line from notifyd dev within 60 s:\n{}", seen.join("\n"));
}

fn stores() -> Vec<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("notifyd-dev-nats-"))
        .collect()
}

/// Whether process `pid` still runs, waiting up to 5 s for it to go (a killed process stays
/// listed until its new parent reaps it).
fn pid_alive(pid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(std::path::Path::new("/proc").join(pid).join("stat"));
        match stat {
            Err(_) => return false,
            // State `Z`: dead, not yet reaped.
            Ok(s) if s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) => {
                return false;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    true
}

/// The tests run one at a time: a run cleans up after runs that were killed, and must not take
/// another test's run for one.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn dev_runs_a_server_of_its_own_and_leaves_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, rx) = start_dev(dir.path());
    let (line, seen) = send_line(&rx);
    let store =
        seen.iter().find_map(|l| l.split("store ").nth(1)?.split(' ').next()).expect("the store is named");
    let server_pid = std::fs::read_to_string(std::path::Path::new(store).join("nats-server.pid")).unwrap();
    // Not run from a clone: the line names the binary itself, and the config that was given.
    assert!(line.starts_with(env!("CARGO_BIN_EXE_notifyd")), "{line}");
    assert!(line.contains("--config"), "{line}");
    let args = shlex_split(&line);
    let out =
        notifyd_testkit::clean_command(&args[0]).args(&args[1..]).current_dir(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("done: 1 delivered"), "{stdout}");

    let _ = std::process::Command::new("kill").arg("-TERM").arg(dev.id().to_string()).status();
    let status = dev.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!std::path::Path::new(store).exists(), "the store is removed");
    assert!(!pid_alive(server_pid.trim()), "the server is stopped");
}

#[test]
fn a_dev_run_killed_hard_is_cleaned_up_by_the_next() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let (mut first, rx) = start_dev(dir.path());
    let (_, seen) = send_line(&rx);
    let store = seen.iter().find_map(|l| l.split("store ").nth(1)?.split(' ').next()).unwrap().to_owned();
    let server_pid = std::fs::read_to_string(std::path::Path::new(&store).join("nats-server.pid")).unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let orphan = std::fs::read_to_string(format!("/proc/{}/stat", server_pid.trim())).unwrap_or_default();
    assert!(!orphan.is_empty(), "kill -9 of notifyd leaves its server running");

    let (mut second, rx) = start_dev(dir.path());
    let (_, seen) = send_line(&rx);
    assert!(seen.iter().any(|l| l.contains("removed") && l.contains(&store)), "{seen:?}");
    assert!(!std::path::Path::new(&store).exists());
    assert!(!pid_alive(server_pid.trim()), "the orphaned server is stopped");
    assert!(!stores().contains(&store));
    let _ = std::process::Command::new("kill").arg("-TERM").arg(second.id().to_string()).status();
    assert!(second.wait().unwrap().success());
}

/// Splits the printed line into words (the text argument is the one quoted part).
fn shlex_split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
