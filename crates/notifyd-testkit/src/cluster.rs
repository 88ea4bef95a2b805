//! Three real `nats-server` processes on loopback forming a JetStream cluster, for fault tests.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::nats::{check_version, default_binary, describe_binary, file_len, read_from};

/// How many servers a cluster has.
const NODES: usize = 3;

/// How long a start (all nodes up, JetStream with a meta leader) or a node's restart may take.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a start is tried again with new ports because one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Lines of each node's log quoted in a panic message.
const LOG_TAIL_LINES: usize = 30;

/// How long one request to a node (monitoring or NATS) may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Three `nats-server` child processes on `127.0.0.1`, each with JetStream, its own store, and
/// routes to the other two, forming one JetStream cluster.
///
/// Each node has a client port ([`url`](Self::url)), a cluster (route) port and a monitoring
/// port; all were free when the cluster started and stay the same across
/// [`restart`](Self::restart). Nodes are addressed by index, `0..NODES`. Faults:
/// [`kill`](Self::kill) (SIGKILL), [`restart`](Self::restart), [`pause`](Self::pause) and
/// [`resume`](Self::resume) (SIGSTOP/SIGCONT). Dropping the value resumes paused nodes, kills
/// every process and removes the stores. All methods block.
///
/// ```no_run
/// let cluster = notifyd_testkit::NatsCluster::start();
/// println!("connect to {}", cluster.urls());
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    binary: PathBuf,
    cluster_name: String,
    nodes: Vec<Node>,
    /// Holds every node's store and logs; removed on drop, after the processes are killed.
    dir: TempDir,
}

/// One server of the cluster.
#[derive(Debug)]
struct Node {
    /// Unique `server_name` (also the JetStream peer name).
    name: String,
    port: u16,
    cluster_port: u16,
    http_port: u16,
    child: Option<Child>,
    paused: bool,
    store_dir: PathBuf,
    log_path: PathBuf,
    output_path: PathBuf,
}

impl NatsCluster {
    /// How many servers a cluster has: 3, the smallest that keeps a quorum with one down.
    pub const NODES: usize = NODES;

    /// Starts three servers with the default binary (see [`crate::NatsServer`]) and blocks
    /// until every node is up and agrees on a JetStream meta leader that sees both other peers
    /// as current, so a stream with three replicas can be created at once.
    ///
    /// # Panics
    ///
    /// If the binary is missing or too old, or the cluster is not formed within 20 s (the
    /// message quotes the end of every node's log).
    pub fn start() -> NatsCluster {
        let binary = default_binary();
        check_version(&binary);
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = format!("{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new()
            .prefix("notifyd-nats-cluster-")
            .tempdir()
            .expect("create a temporary directory for the nats-server cluster");
        let nodes = (0..NODES)
            .map(|i| {
                let node_dir = dir.path().join(format!("n{i}"));
                let store_dir = node_dir.join("store");
                fs::create_dir_all(&store_dir)
                    .unwrap_or_else(|e| panic!("create JetStream store dir {}: {e}", store_dir.display()));
                Node {
                    name: format!("notifyd-test-{id}-n{i}"),
                    port: 0,
                    cluster_port: 0,
                    http_port: 0,
                    child: None,
                    paused: false,
                    store_dir,
                    log_path: node_dir.join("nats-server.log"),
                    output_path: node_dir.join("nats-server.out"),
                }
            })
            .collect();
        let mut cluster = NatsCluster { binary, cluster_name: format!("notifyd-test-{id}"), nodes, dir };
        for _ in 0..PORT_ATTEMPTS {
            let mut ports = free_ports(3 * NODES).into_iter();
            for node in &mut cluster.nodes {
                node.port = ports.next().expect("enough ports");
                node.cluster_port = ports.next().expect("enough ports");
                node.http_port = ports.next().expect("enough ports");
            }
            let mut taken = false;
            for i in 0..NODES {
                match cluster.spawn(i) {
                    Ok(()) => {}
                    Err(why) if why.contains("address already in use") => taken = true,
                    Err(why) => cluster.fail(&why),
                }
            }
            if taken {
                for node in &mut cluster.nodes {
                    node.stop();
                }
                continue;
            }
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Some(why) = cluster.exited() {
                    cluster.fail(&why);
                }
                if cluster.formed() {
                    return cluster;
                }
                if Instant::now() >= deadline {
                    cluster
                        .fail(&format!("the cluster had no JetStream meta leader within {READY_TIMEOUT:?}"));
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        cluster.fail(&format!("a chosen port was already in use {PORT_ATTEMPTS} times in a row"))
    }

    /// Node `node`'s client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].port)
    }

    /// Every node's client URL, comma-separated, node 0 first (as notifyd's `[nats] url` takes
    /// them).
    pub fn urls(&self) -> String {
        self.urls_from(0)
    }

    /// Every node's client URL, comma-separated, starting with node `first` (a client that
    /// keeps the order connects there first).
    pub fn urls_from(&self, first: usize) -> String {
        (0..NODES).map(|i| self.url((first + i) % NODES)).collect::<Vec<_>>().join(",")
    }

    /// Node `node`'s `server_name`, which JetStream reports as a stream's leader or replica.
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// The node named `name`, if it is one of this cluster's.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `node`'s monitoring port (`/jsz`, `/varz`, `/connz`, …).
    pub fn http_port(&self, node: usize) -> u16 {
        self.nodes[node].http_port
    }

    /// Whether node `node`'s process runs (it may be paused).
    pub fn is_running(&mut self, node: usize) -> bool {
        self.nodes[node].child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Node `node`'s log so far (across restarts), followed by what the process printed.
    pub fn log(&self, node: usize) -> String {
        let n = &self.nodes[node];
        let log = fs::read_to_string(&n.log_path).unwrap_or_default();
        let output = fs::read_to_string(&n.output_path).unwrap_or_default();
        if output.trim().is_empty() { log } else { format!("{log}\n--- stdout/stderr ---\n{output}") }
    }

    /// Kills node `node` (SIGKILL, like a crash) and waits until it is gone. Does nothing if it
    /// is not running; a paused node is killed too.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].stop();
    }

    /// Starts node `node` again (killing it first if it runs) with the same ports, name and
    /// store, and blocks until it is back in the cluster: it reports the same JetStream meta
    /// leader as the other running nodes.
    ///
    /// # Panics
    ///
    /// If it is not back within 20 s (with every node's log).
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        let deadline = Instant::now() + READY_TIMEOUT;
        // The port may still be held for a moment by a connection of the killed process.
        loop {
            match self.spawn(node) {
                Ok(()) => break,
                Err(why) if why.contains("address already in use") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(why) => self.fail(&format!("restart of node {node}: {why}")),
            }
        }
        loop {
            if let Some(why) = self.exited() {
                self.fail(&why);
            }
            let leader = self.meta_leader(node);
            if leader.is_some()
                && (0..NODES).filter(|&i| self.is_up(i)).all(|i| self.meta_leader(i) == leader)
            {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("node {node} was not back in the cluster within {READY_TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops node `node` with SIGSTOP: its connections stay open but nothing is answered, like a
    /// server stalled by the machine. [`resume`](Self::resume) continues it; so does dropping
    /// the cluster.
    pub fn pause(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let pid = n.child.as_ref().unwrap_or_else(|| panic!("node {node} is not running")).id();
        signal("-STOP", pid);
        n.paused = true;
    }

    /// Continues a node stopped by [`pause`](Self::pause) (SIGCONT).
    pub fn resume(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if let Some(child) = &n.child {
            signal("-CONT", child.id());
        }
        n.paused = false;
    }

    /// The node that leads stream `stream`, as the stream's cluster information
    /// (`cluster.leader`) on each running, unpaused node's `/jsz` says: the first node that names
    /// a leader decides. `None` when none does (the stream has no leader now, or no node
    /// answers). Each node reports its own view of the stream's group, so this is seen as soon as
    /// an election ends; a follower may still name a leader that has just died.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        (0..NODES).filter(|&i| self.is_up(i)).find_map(|i| {
            let body = http_get(self.nodes[i].http_port, "/jsz?accounts=true&streams=true")?;
            let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
            let details = jsz["account_details"].as_array()?;
            let info = details
                .iter()
                .filter_map(|a| a["stream_detail"].as_array())
                .flatten()
                .find(|s| s["name"] == stream)?;
            self.node_named(info["cluster"]["leader"].as_str()?)
        })
    }

    /// Sends one NATS request to node `node` (as a plain client without credentials) and returns
    /// the reply parsed as JSON: e.g. a JetStream API call such as
    /// `$JS.API.STREAM.CREATE.<name>`, or a publish to a stream's subject (its reply is the
    /// JetStream ack). `Err` if nothing answers within 2 s, there are no responders, or the reply
    /// is not JSON. A JetStream error is `Ok` with an `error` field, as the server sent it.
    pub fn request(&self, node: usize, subject: &str, payload: &str) -> Result<serde_json::Value, String> {
        let reply = nats_request(self.nodes[node].port, subject, payload.as_bytes())?;
        serde_json::from_slice(&reply)
            .map_err(|e| format!("reply to {subject} is not JSON ({e}): {}", String::from_utf8_lossy(&reply)))
    }

    /// Whether node `node` runs and is not paused (so it can be asked something).
    fn is_up(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.child.is_some() && !n.paused
    }

    /// The JetStream meta leader node `node` reports on `/jsz`, if any.
    fn meta_leader(&self, node: usize) -> Option<String> {
        let jsz = self.jsz(node)?;
        jsz["meta_cluster"]["leader"].as_str().filter(|l| !l.is_empty()).map(str::to_owned)
    }

    /// Node `node`'s `/jsz`, if it answers.
    fn jsz(&self, node: usize) -> Option<serde_json::Value> {
        let body = http_get(self.nodes[node].http_port, "/jsz")?;
        serde_json::from_str(&body).ok()
    }

    /// Whether every node agrees on a meta leader, and the leader counts the other two peers as
    /// current.
    fn formed(&self) -> bool {
        let Some(leader) = self.meta_leader(0) else { return false };
        if (1..NODES).any(|i| self.meta_leader(i).as_deref() != Some(leader.as_str())) {
            return false;
        }
        let Some(at) = self.node_named(&leader) else { return false };
        let Some(jsz) = self.jsz(at) else { return false };
        let current = jsz["meta_cluster"]["replicas"]
            .as_array()
            .map_or(0, |peers| peers.iter().filter(|p| p["current"] == true).count());
        current == NODES - 1 && self.places_three_replicas()
    }

    /// Whether the meta leader places a stream on all three nodes now: it creates (and deletes)
    /// a probe stream with three replicas. A peer that is current may still count as offline for
    /// placement until its first statistics reach the leader (10005 "no suitable peers for
    /// placement, peer offline", seen in 2 of 8 runs of notifyd's cluster tests).
    fn places_three_replicas(&self) -> bool {
        const PROBE: &str = "NOTIFYD_TESTKIT_PROBE";
        let config = format!(
            r#"{{"name":"{PROBE}","subjects":["notifyd-testkit.probe"],"num_replicas":3,"storage":"memory"}}"#
        );
        let created = self.request(0, &format!("$JS.API.STREAM.CREATE.{PROBE}"), &config);
        let placed = created.as_ref().is_ok_and(|c| c.get("error").is_none());
        if placed {
            let deleted = self.request(0, &format!("$JS.API.STREAM.DELETE.{PROBE}"), "");
            if !deleted.as_ref().is_ok_and(|d| d["success"] == true) {
                // Left behind, it would show in every stream list of a test: asked again next time.
                return false;
            }
        }
        placed
    }

    /// Spawns node `node`'s process (not waiting for it). `Err` with what it said when it exits
    /// within the first moments (a port taken, a flag refused).
    fn spawn(&mut self, node: usize) -> Result<(), String> {
        let routes: Vec<String> = (0..NODES)
            .filter(|&i| i != node)
            .map(|i| format!("nats-route://127.0.0.1:{}", self.nodes[i].cluster_port))
            .collect();
        let n = &mut self.nodes[node];
        let log_start = file_len(&n.log_path);
        let output_start = file_len(&n.output_path);
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.output_path)
            .expect("create nats-server output file");
        let output_err = output.try_clone().expect("clone nats-server output file");
        let mut child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &n.port.to_string(), "-n", &n.name, "-js"])
            .args(["-m", &n.http_port.to_string()])
            .args(["--cluster_name", &self.cluster_name])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", n.cluster_port)])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(&n.store_dir)
            .arg("-l")
            .arg(&n.log_path)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output_err)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", describe_binary(&self.binary)));
        // A port conflict or a bad flag ends the process at once; anything later is seen by
        // `exited` while waiting for the cluster.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                let said = read_from(&n.log_path, log_start) + &read_from(&n.output_path, output_start);
                return Err(format!("node {node} ({}) exited ({status}) at start: {said}", n.name));
            }
            if http_get(n.http_port, "/healthz?js-server-only=true").is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    /// A description of the first node whose process has exited unexpectedly, if any.
    fn exited(&mut self) -> Option<String> {
        self.nodes.iter_mut().enumerate().find_map(|(i, n)| {
            let status = n.child.as_mut()?.try_wait().ok()??;
            n.child = None;
            Some(format!("node {i} ({}) exited ({status})", n.name))
        })
    }

    /// Panics with `why` and the end of every node's log, after killing every node.
    fn fail(&mut self, why: &str) -> ! {
        for node in &mut self.nodes {
            node.stop();
        }
        let mut message = format!("{why}\nbinary: {}\n", describe_binary(&self.binary));
        for (i, n) in self.nodes.iter().enumerate() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            message += &format!(
                "--- node {i} ({}, client {}, cluster {}, http {}), last {LOG_TAIL_LINES} lines of {}:\n{}\n",
                n.name,
                n.port,
                n.cluster_port,
                n.http_port,
                n.log_path.display(),
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"),
            );
        }
        panic!("{message}")
    }

    /// The directory holding every node's store and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Node {
    /// Kills the process (continuing it first if paused) and waits until it is gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if self.paused {
                signal("-CONT", child.id());
            }
            let _ = child.wait();
        }
        self.paused = false;
    }
}

impl Drop for NatsCluster {
    /// Continues paused nodes and kills every process; the stores go with the directory.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if node.paused {
                if let Some(child) = &node.child {
                    signal("-CONT", child.id());
                }
            }
            node.stop();
        }
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to `pid` with `kill(1)` (the kit has no unsafe code).
fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill").arg(sig).arg(pid.to_string()).status();
    assert!(status.as_ref().is_ok_and(|s| s.success()), "kill {sig} {pid} failed: {status:?}");
}

/// `count` distinct ports on 127.0.0.1 that were free a moment ago (all bound at once, then
/// released).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

/// A minimal HTTP/1.0 GET to 127.0.0.1: the body of a 200 answer, `None` otherwise.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), REQUEST_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_owned())
}

/// One request over the NATS text protocol: connects to `port`, subscribes an inbox, publishes
/// `payload` to `subject` with it as the reply subject, and returns the reply's payload.
fn nats_request(port: u16, subject: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| format!("NATS request {subject} to port {port}: {e}");
    let stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), REQUEST_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let mut out = Vec::new();
    out.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\n",
    );
    out.extend_from_slice(b"SUB _INBOX.testkit.cluster 1\r\n");
    out.extend_from_slice(format!("PUB {subject} _INBOX.testkit.cluster {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    writer.write_all(&out).map_err(io)?;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err(format!("NATS request {subject} to port {port}: connection closed"));
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("PING") => writer.write_all(b"PONG\r\n").map_err(io)?,
            Some("-ERR") => return Err(format!("NATS request {subject} to port {port}: {}", line.trim())),
            Some(verb @ ("MSG" | "HMSG")) => {
                let sizes: Vec<usize> = words[words.len() - if verb == "MSG" { 1 } else { 2 }..]
                    .iter()
                    .map(|w| w.parse().map_err(|_| format!("bad {verb} line {line:?}")))
                    .collect::<Result<_, _>>()?;
                let total = *sizes.last().expect("a size");
                let mut body = vec![0; total + 2];
                reader.read_exact(&mut body).map_err(io)?;
                body.truncate(total);
                if verb == "HMSG" {
                    let headers = String::from_utf8_lossy(&body[..sizes[0]]).into_owned();
                    if headers.starts_with("NATS/1.0 503") {
                        return Err(format!("NATS request {subject} to port {port}: no responders"));
                    }
                    return Ok(body.split_off(sizes[0]));
                }
                return Ok(body);
            }
            _ => {}
        }
    }
}
