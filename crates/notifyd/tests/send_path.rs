//! End to end through a real nats-server and the real `notifyd` binary: the send path, request
//! validation outcomes, dead letters, metrics and health.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, http_get, publish};
use futures::StreamExt;
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_is_accepted_sent_and_delivered_with_the_sandbox() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let req = json!({"id": "otp-1", "to": ["+49 151 7111 2233", "4915171112234"], "text": "Your code is 1234",
                     "tags": {"tenant": "acme"}});
    publish(&client, req.to_string()).await;

    for to in ["4915171112233", "4915171112234"] {
        let accepted = events.status("otp-1", Some(to), "accepted").await;
        assert_eq!(accepted["segments"], 1);
        assert_eq!(accepted["encoding"], "gsm7");
        assert_eq!(accepted["tags"]["tenant"], "acme");
        assert!(accepted.get("provider").is_none() && accepted.get("attempt").is_none());

        let sent = events.status("otp-1", Some(to), "sent").await;
        assert_eq!(sent["provider"], "sandbox");
        assert_eq!(sent["attempt"], 1);
        let pmid = sent["provider_message_id"].as_str().unwrap().to_owned();
        assert!(pmid.starts_with("sb-"), "{pmid}");
        assert!(sent.get("error").is_none());

        let delivered = events.status("otp-1", Some(to), "delivered").await;
        assert_eq!(
            delivered["provider_message_id"],
            pmid.as_str(),
            "delivery is matched to the same message"
        );
        assert_eq!(delivered["tags"]["tenant"], "acme");
    }
    let ids: Vec<&str> = events
        .seen
        .iter()
        .filter(|e| e["status"] == "sent")
        .map(|e| e["provider_message_id"].as_str().unwrap())
        .collect();
    assert_ne!(ids[0], ids[1], "each recipient has its own provider message id");

    // The events are stored in the status stream, once each.
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("NOTIFY_SMS_STATUS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_number_problems_do_not_stop_the_others() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    // An invalid number, a number without a route (33...), one the provider rejects, a duplicate,
    // and a good one.
    let req = json!({"id": "mix-1", "to": ["12ab", "33612345678", "4915100000009", "+4915171112233", "004915171112233"],
                     "text": "Привет"});
    publish(&client, req.to_string()).await;

    let invalid = events.status("mix-1", Some("12ab"), "rejected").await;
    assert_eq!(invalid["error"]["code"], "invalid_recipient");
    assert_eq!(invalid["encoding"], "ucs2");
    let unroutable = events.status("mix-1", Some("33612345678"), "failed").await;
    assert_eq!(unroutable["error"]["code"], "route_closed");
    let refused = events.status("mix-1", Some("4915100000009"), "rejected").await;
    assert_eq!(refused["error"]["code"], "invalid_recipient");
    assert_eq!(refused["error"]["provider_code"], "SANDBOX_REJECT");
    assert_eq!(refused["provider"], "sandbox");
    assert_eq!(refused["error"]["retryable"], false);
    events.status("mix-1", Some("4915171112233"), "sent").await;
    events.drain_for(Duration::from_millis(500)).await;
    let sends = events.seen.iter().filter(|e| e["status"] == "sent").count();
    assert_eq!(sends, 1, "the duplicate number is sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected_and_the_next_good_one_succeeds() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut dead = client.subscribe("notify.sms.dead").await.unwrap();
    client.flush().await.unwrap();

    publish(&client, r#"{"id":"bad-1","to":"4915171112233","text":"hi","colour":"red"}"#).await;
    let r = events.status("bad-1", None, "rejected").await;
    assert_eq!(r["error"]["code"], "invalid_request");
    assert!(r["error"]["message"].as_str().unwrap().contains("colour"));
    assert!(r.get("to").is_none(), "a request-level rejection has no `to`");

    publish(&client, r#"{"id":"bad-2","to":"4915171112233","text":"hi","from":"Way-Too-Long-Sender"}"#).await;
    assert_eq!(events.status("bad-2", None, "rejected").await["error"]["code"], "invalid_sender");

    // No id: the generated one is js-<stream created>-<sequence>.
    publish(&client, r#"{"to":"4915171112233","text":5}"#).await;
    let generated = events
        .wait_for("rejection with generated id", |v| {
            v["status"] == "rejected" && v["id"].as_str().is_some_and(|id| id.starts_with("js-"))
        })
        .await;
    assert!(generated["id"].as_str().unwrap().ends_with("-3"), "{generated}");

    publish(&client, &b"\xff\xfe not json"[..]).await;
    let letter = tokio::time::timeout(Duration::from_secs(10), dead.next()).await.unwrap().unwrap();
    assert_eq!(&letter.payload[..], b"\xff\xfe not json", "the raw payload is kept");
    let reason = letter.headers.as_ref().and_then(|h| h.get("Notifyd-Error")).unwrap().to_string();
    assert!(reason.contains("UTF-8"), "{reason}");

    publish(&client, json!({"id": "good-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("good-1", Some("4915171112233"), "sent").await;

    let m = daemon.metrics();
    assert!(m.contains(r#"notifyd_requests_total{outcome="rejected"} 3"#), "{m}");
    assert!(m.contains(r#"notifyd_requests_total{outcome="dead_lettered"} 1"#), "{m}");
    assert!(m.contains(r#"notifyd_requests_total{outcome="accepted"} 1"#), "{m}");
    assert!(m.contains(r#"notifyd_events_total{provider="sandbox",status="sent"} 1"#), "{m}");
    assert!(m.contains(r#"notifyd_plugin_info{abi="1.1",plugin="sandbox",version="0.1.0"} 1"#), "{m}");
    assert!(m.contains("notifyd_nats_connected 1"), "{m}");
    assert!(!m.contains("4915171112233"), "no phone number in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    assert_eq!(http_get(daemon.metrics_port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(daemon.metrics_port, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(daemon.metrics_port, "/nope").unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let nats = NatsServer::start();
    let mut daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": "t-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("t-1", Some("4915171112233"), "sent").await;
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    assert!(daemon.log().contains("notifyd stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_panic_fails_only_its_message_and_the_daemon_keeps_serving() {
    let nats = NatsServer::start();
    let config = SANDBOX_CONFIG.replace("reject = [\"4915100000009\"]", "panic_on_text = \"boom\"");
    let daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "p-1", "to": "4915171112233", "text": "boom"}).to_string()).await;
    let failed = events.status("p-1", Some("4915171112233"), "failed").await;
    assert_eq!(failed["error"]["code"], "plugin_error");
    assert!(failed["error"]["message"].as_str().unwrap().contains("panicked"), "{failed}");
    assert_eq!(failed["provider"], "sandbox");

    publish(&client, json!({"id": "p-2", "to": "4915171112233", "text": "fine"}).to_string()).await;
    events.status("p-2", Some("4915171112233"), "sent").await;
    assert!(daemon.metrics().contains(
        r#"notifyd_provider_requests_total{operation="send",provider="sandbox",result="plugin_error"} 1"#
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_server_urls_is_accepted() {
    let nats = NatsServer::start();
    let dead = format!("nats://127.0.0.1:{}", common::free_port());
    let config = SANDBOX_CONFIG.replace("url = \"{nats}\"", &format!("url = \"{dead}, {{nats}}\""));
    let _daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": "urls-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("urls-1", Some("4915171112233"), "sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_follows_a_request_to_its_final_statuses() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let config = daemon.dir.path().join("notifyd.toml");
    let out = tokio::task::spawn_blocking(move || {
        notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
            .args([
                "send",
                "--to",
                "+4915171112233,4915100000009,12",
                "--text",
                "hello",
                "--wait",
                "--timeout",
                "30s",
            ])
            .arg("--config")
            .arg(config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // One recipient sent, two rejected: partial success.
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("delivered") && l.contains("4915171112233")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("rejected") && l.contains("4915100000009")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("rejected") && l.contains("12 ")), "{stdout}");
    assert!(stdout.contains("done: 1 delivered, 2 rejected"), "{stdout}");
}

/// `notifyd send` run from a directory without any config file, against the test's server.
fn send(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .arg("send")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_is_a_client_with_exit_codes() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let url = nats.url();
    const WAIT: &[&str] = &["--wait", "--timeout", "30s", "--text", "hello"];
    let run = move |to: &'static str, extra: &'static [&'static str], env: Vec<(&'static str, String)>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--to", to];
            args.extend_from_slice(extra);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let with_url = ["--nats-url", url.as_str()];
            if env.is_empty() {
                args.extend_from_slice(&with_url)
            }
            send(&args, &env)
        })
    };

    // Every recipient sent: 0; no config file, the URL from the command line; quiet on stderr
    // (the client logs at warn).
    let (code, stdout, stderr) = run("+4915171112233", WAIT, vec![]).await.unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("done: 1 delivered"), "{stdout}");
    assert!(stderr.is_empty(), "nothing logged below warn: {stderr}");

    // A number that cannot be valid: nothing sent, 3 (it used to print "1 rejected" and exit 0).
    let (code, stdout, _) = run("+12", WAIT, vec![]).await.unwrap();
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("done: 1 rejected"), "{stdout}");

    // The same invalid entry twice ends once: 3 at once, not a timeout.
    let (code, stdout, _) = run("abc,abc", WAIT, vec![]).await.unwrap();
    assert_eq!(code, Some(3), "{stdout}");

    // One sent, one refused by the provider: partial, 2.
    let (code, stdout, _) = run("+4915171112233,+4915100000009", WAIT, vec![]).await.unwrap();
    assert_eq!(code, Some(2), "{stdout}");

    // The server from NOTIFYD_NATS__URL, no flag, no file.
    let env = vec![("NOTIFYD_NATS__URL", nats.url())];
    let (code, stdout, stderr) = run("+4915171112233", WAIT, env).await.unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // Without --wait: 0 once JetStream stored the request.
    let (code, stdout, _) = run("+4915171112233", &["--text", "hi"], vec![]).await.unwrap();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("published request cli-"), "{stdout}");

    // Nothing listening: not published, 1, and it says where it tried.
    let nowhere = format!("nats://127.0.0.1:{}", common::free_port());
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        send(&["--to", "+4915171112233", "--text", "hi", "--nats-url", &nowhere], &[])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.starts_with("notifyd: send: "), "{stderr}");
    assert!(!stdout.contains("published"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_reads_only_the_nats_table() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    // A daemon config whose provider needs a secret this shell does not have: the daemon could
    // not start with it, the client does not read it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.toml");
    let text = format!(
        "[nats]\nurl = \"{}\"\n[[providers]]\nname = \"x\"\nplugin = \"missing\"\n[providers.settings]\npassword_env = \"NOT_SET_ANYWHERE\"\n",
        nats.url()
    );
    std::fs::write(&path, text).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
            .args([
                "send",
                "--to",
                "+4915171112233",
                "--text",
                "hi",
                "--wait",
                "--timeout",
                "30s",
                "--config",
            ])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("done: 1 delivered"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_works_with_a_core_intake_daemon() {
    let nats = NatsServer::start();
    let config = SANDBOX_CONFIG.replace("[intake]\n", "[intake]\nmode = \"core\"\n");
    let _daemon = Daemon::start(&nats, &config);
    let url = nats.url();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        send(
            &["--to", "+4915171112233", "--text", "hi", "--wait", "--timeout", "30s", "--nats-url", &url],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "accepted by the core intake and sent: {stdout}{stderr}");
    assert!(stdout.contains("done: 1 delivered"), "{stdout}");
    // Rejected by the core intake's answer (no valid recipient): 3 without waiting.
    let url = nats.url();
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || send(&["--to", "+12", "--text", "", "--nats-url", &url], &[]))
            .await
            .unwrap();
    assert_eq!(code, Some(3), "{stdout}");
}

#[test]
fn the_send_command_refuses_a_config_file_that_does_not_parse() {
    // A broken line elsewhere must not make send forget [nats] (and go to 127.0.0.1:4222).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[nats]\nurl = \"nats://127.0.0.1:4333\"\ntoken = \"s3cret-token\"\n[intake\n")
        .unwrap();
    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(["send", "--to", "+4915171112233", "--text", "hi", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(!stderr.contains("s3cret-token"), "{stderr}");
}
