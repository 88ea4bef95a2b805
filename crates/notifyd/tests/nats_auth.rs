//! NATS security: user/password, token, nkey and TLS against a nats-server that requires them,
//! and a clear error (exit code 1, no secret in the message) for wrong credentials.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, free_port, publish, sandbox_plugin};
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::process::Command;

/// SANDBOX_CONFIG with `extra` added to its [nats] section.
fn config_with_nats(extra: &str) -> String {
    SANDBOX_CONFIG.replace("[nats]\nurl = \"{nats}\"", &format!("[nats]\nurl = \"{{nats}}\"\n{extra}"))
}

/// Publishes one request as an authorised client and waits for its `sent` event.
async fn round_trip(client: async_nats::Client, id: &str) {
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": id, "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status(id, Some("4915171112233"), "sent").await;
}

/// Runs `notifyd check-config`-like start: the real binary, expecting it to fail fast.
fn start_expecting_failure(nats: &NatsServer, config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifyd.toml");
    let text = config
        .replace("{nats}", &nats.url())
        .replace("{metrics}", &format!("127.0.0.1:{}", free_port()))
        .replace("{sandbox}", sandbox_plugin().to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_the_environment() {
    let nats = NatsServer::builder().args(["--user", "notifyd", "--pass", "n4ts-s3cret"]).start();
    // The password comes from an environment variable, as operators keep secrets.
    let config = config_with_nats("user = \"notifyd\"\npassword_env = \"TEST_NATS_PASSWORD\"");
    let daemon = Daemon::start_with_env(&nats, &config, &[("TEST_NATS_PASSWORD", "n4ts-s3cret")]);
    let client = async_nats::ConnectOptions::with_user_and_password("notifyd".into(), "n4ts-s3cret".into())
        .connect(nats.url())
        .await
        .unwrap();
    round_trip(client, "auth-1").await;
    assert!(!daemon.log().contains("n4ts-s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_error_without_the_secret() {
    let nats = NatsServer::builder().args(["--user", "notifyd", "--pass", "right-one"]).start();
    let (code, err) =
        start_expecting_failure(&nats, &config_with_nats("user = \"notifyd\"\npassword = \"wr0ng-pw\""));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect to NATS"), "{err}");
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    assert!(!err.contains("wr0ng-pw"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let nats = NatsServer::builder().args(["--auth", "t0k3n"]).start();
    let _daemon = Daemon::start(&nats, &config_with_nats("token = \"t0k3n\""));
    let client = async_nats::ConnectOptions::with_token("t0k3n".into()).connect(nats.url()).await.unwrap();
    round_trip(client, "auth-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_file() {
    let pair = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, format!("authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n", pair.public_key()))
        .unwrap();
    let seed_file = dir.path().join("notifyd.nk");
    std::fs::write(&seed_file, pair.seed().unwrap()).unwrap();
    let nats = NatsServer::builder().args(["-c", conf.to_str().unwrap()]).start();
    let _daemon =
        Daemon::start(&nats, &config_with_nats(&format!("nkey_file = \"{}\"", seed_file.display())));
    let client =
        async_nats::ConnectOptions::with_nkey(pair.seed().unwrap()).connect(nats.url()).await.unwrap();
    round_trip(client, "auth-3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |args: &str| {
        let ok = Command::new("sh").arg("-c").arg(args).current_dir(d).output().unwrap();
        assert!(ok.status.success(), "{args}: {}", String::from_utf8_lossy(&ok.stderr));
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca");
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost");
    sh(
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > san.ext && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext",
    );
    let nats = NatsServer::builder()
        .args([
            "--tls",
            "--tlscert",
            d.join("server.pem").to_str().unwrap(),
            "--tlskey",
            d.join("server.key").to_str().unwrap(),
        ])
        .start();
    let ca = d.join("ca.pem");
    let _daemon = Daemon::start(&nats, &config_with_nats(&format!("tls_ca = \"{}\"", ca.display())));
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .require_tls(true)
        .connect(nats.url())
        .await
        .unwrap();
    round_trip(client, "auth-4").await;
}
