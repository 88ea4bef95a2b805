//! The plugin host with real plugin libraries: the C example, the sandbox (built with the Rust
//! SDK) and the C fixtures in `tests/fixtures`. Providers are loaded the way the daemon loads them
//! (TOML config → `plugin::find` → `PluginLibrary::load` → instance), driven through
//! `Provider::run` against a real HTTP server (`MockHttp`), and checked with `notifyd plugin verify`.

use notifyd::config::Config;
use notifyd::http::{HttpClient, TransportError};
use notifyd::metrics::Metrics;
use notifyd::plugin::{self, Op, PluginError, PluginLibrary};
use notifyd::provider::{OpError, Provider, Providers};
use notifyd::verify;
use notifyd_plugin::abi;
use notifyd_plugin::wire::{
    ProviderError, RecipientResult, SendInput, SendResult, StatusInput, StatusResult,
};
use notifyd_testkit::{MockHttp, MockResponse, c_plugin, cargo_plugin, workspace_root};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- plugins ------------------------------------------------------------------------------------

/// The sandbox plugin (Rust SDK), built by cargo.
fn sandbox() -> PathBuf {
    cargo_plugin("notifyd-sandbox", "notifyd_sandbox")
}

/// The C example plugin, compiled from `plugins/c-example`.
fn c_example() -> PathBuf {
    c_plugin(&workspace_root().join("plugins/c-example/notifyd_c_example.c"), "notifyd_c_example")
}

/// A C fixture from `tests/fixtures/<name>.c`, compiled to `libnotifyd_<name>.so`.
fn fixture(name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.c"));
    c_plugin(&source, &format!("notifyd_{name}"))
}

// ---- configuration ------------------------------------------------------------------------------

/// The c-example's credentials; `printf 'acme:s3cret pw' | base64` is `YWNtZTpzM2NyZXQgcHc=`.
const USERNAME: &str = "acme";
const PASSWORD: &str = "s3cret pw";
const BASIC_AUTH: &str = "Basic YWNtZTpzM2NyZXQgcHc=";

/// The query_key fixture's API key, which travels in the request URL's query.
const API_KEY: &str = "qk-Secret-4711";

/// A `[[providers]]` block for `plugin` (a path) with `lines` (top-level keys) and `settings`
/// (lines of `[providers.settings]`).
fn block(name: &str, plugin: &Path, lines: &str, settings: &str) -> String {
    format!(
        "[[providers]]\nname = {name:?}\nplugin = {:?}\n{lines}\n[providers.settings]\n{settings}\n\n",
        plugin.display().to_string()
    )
}

/// A c-example block with the test credentials.
fn c_example_block(name: &str, lines: &str) -> String {
    block(name, &c_example(), lines, &format!("username = {USERNAME:?}\npassword = {PASSWORD:?}"))
}

/// A query_key fixture block with the test API key.
fn query_key_block(name: &str, lines: &str) -> String {
    block(name, &fixture("query_key"), lines, &format!("api_key = {API_KEY:?}"))
}

/// A config from `[[providers]]` blocks plus one catch-all route to `route_to`.
fn config(blocks: &str, route_to: &str) -> Config {
    let text = format!("{blocks}[[routes]]\nprefixes = [\"\"]\nproviders = [{route_to:?}]\n");
    Config::from_toml(&text, Path::new("/nonexistent"))
        .unwrap_or_else(|e| panic!("the test config is invalid:\n{e}\n---\n{text}"))
}

/// Every provider of `config`, loaded as the daemon loads them.
fn load(config: &Config) -> Providers {
    Providers::load(config, &HttpClient::new(), &Metrics::new())
        .unwrap_or_else(|errors| panic!("providers did not load:\n{}", lines(&errors)))
}

/// Why the providers of `config` did not load.
fn load_errors(config: &Config) -> Vec<PluginError> {
    match Providers::load(config, &HttpClient::new(), &Metrics::new()) {
        Ok(p) => panic!("providers loaded, but should not have: {:?}", p.list),
        Err(errors) => errors,
    }
}

fn lines(errors: &[PluginError]) -> String {
    errors.iter().map(|e| format!("  - {e}\n")).collect()
}

/// The one provider named `name`.
fn provider(providers: &Providers, name: &str) -> Arc<Provider> {
    providers.get(name).unwrap_or_else(|| panic!("no provider {name:?}")).clone()
}

// ---- operations ---------------------------------------------------------------------------------

fn send_input(to: &[&str], text: &str) -> SendInput {
    SendInput {
        id: "req-1".into(),
        to: to.iter().map(|s| (*s).to_owned()).collect(),
        text: text.into(),
        from: Some("ACME".into()),
        from_given: None,
        encoding: "ucs2".into(),
        segments: 1,
        send_at: None,
    }
}

async fn send(p: &Provider, to: &[&str], text: &str) -> Result<SendResult, OpError> {
    p.run(Op::Send, &send_input(to, text)).await
}

/// The per-recipient outcomes of a send that the provider processed.
fn recipients(result: Result<SendResult, OpError>) -> Vec<RecipientResult> {
    match result {
        Ok(SendResult::Recipients { recipients }) => recipients,
        other => panic!("expected per-recipient outcomes, got {other:?}"),
    }
}

/// The whole-request error of a send that the provider refused.
fn request_error(result: Result<SendResult, OpError>) -> ProviderError {
    match result {
        Ok(SendResult::Failed { error }) => error,
        other => panic!("expected a whole-request error, got {other:?}"),
    }
}

/// The error of an operation that failed inside the plugin.
fn plugin_failure<T: std::fmt::Debug>(result: Result<T, OpError>) -> ProviderError {
    match result {
        Err(OpError::Plugin(e)) => e,
        other => panic!("expected OpError::Plugin, got {other:?}"),
    }
}

/// The transport failure of an operation whose HTTP exchange produced no response.
fn transport_failure<T: std::fmt::Debug>(result: Result<T, OpError>) -> TransportError {
    match result {
        Err(OpError::Transport(e)) => e,
        other => panic!("expected OpError::Transport, got {other:?}"),
    }
}

/// Fails when any text derived from `error` (what logs and events would show) contains a secret.
fn assert_no_secrets(error: &TransportError, secrets: &[&str]) {
    let op = OpError::Transport(error.clone());
    let texts = [error.to_string(), format!("{error:?}"), format!("{op:?}"), op.to_provider_error().message];
    for text in &texts {
        for secret in secrets {
            assert!(!text.contains(secret), "error text {text:?} leaks {secret:?}");
        }
    }
}

/// A TCP port on 127.0.0.1 with nothing listening (it was free a moment ago).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a free port").port()
}

/// Copies `library` into `dir` under its own file name and returns the copy's path.
fn copy_into(library: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the plugin dir");
    let copy = dir.join(library.file_name().expect("a file name"));
    std::fs::copy(library, &copy).expect("copy the plugin library");
    copy
}

// ---- the C example over HTTP --------------------------------------------------------------------

#[test]
fn c_example_loads_and_describes_itself() {
    let lib = PluginLibrary::load(&c_example()).expect("the C example loads");

    assert_eq!(lib.describe.name, "c-example");
    assert_eq!(lib.describe.version, "0.1.0");
    assert_eq!(lib.abi_version(), "1.1", "built against this header: it uses `form` and `basic_auth`");
    assert_eq!(lib.describe.max_recipients, 50);
    assert_eq!(lib.describe.max_status_refs, 0);
    assert_eq!(lib.capabilities(), abi::CAP_SEND);
    assert!(lib.supports(Op::Send));
    for op in [Op::Status, Op::Balance, Op::Callback] {
        assert!(!lib.supports(op), "c-example should not support {op:?}");
    }
}

#[tokio::test]
async fn c_example_posts_the_documented_form_with_basic_auth() {
    let mock = MockHttp::start(|_| MockResponse::ok("4915100000001 OK id-1\n4915100000002 OK id-2\n")).await;
    let providers = load(&config(&c_example_block("gw", &format!("base_url = {:?}", mock.url())), "gw"));

    let result = send(&provider(&providers, "gw"), &["4915100000001", "4915100000002"], "Grüße €").await;

    assert_eq!(recipients(result).len(), 2);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/send");
    assert_eq!(request.query, "");
    assert_eq!(request.header("authorization"), Some(BASIC_AUTH));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(request.form_param("to").as_deref(), Some("4915100000001,4915100000002"));
    assert_eq!(request.form_param("text").as_deref(), Some("Grüße €"));
    assert_eq!(request.form_param("from").as_deref(), Some("ACME"));
    // The host encoded the plugin's `form` (ABI 1.1): UTF-8 bytes as %XX, a space as `+`, in the
    // plugin's order.
    assert_eq!(
        request.body, "to=4915100000001%2C4915100000002&text=Gr%C3%BC%C3%9Fe+%E2%82%AC&from=ACME",
        "{request:#?}"
    );
}

#[tokio::test]
async fn c_example_maps_each_answer_line_to_its_own_recipient() {
    // The gateway answers in another order than asked, with CRLF and LF line ends.
    let mock = MockHttp::start(|_| {
        MockResponse::ok("4915100000003 OK id-c\r\n4915100000002 ERR INVALID_NUMBER\n4915100000001 OK id-a\n")
    })
    .await;
    let providers = load(&config(&c_example_block("gw", &format!("base_url = {:?}", mock.url())), "gw"));

    let result =
        send(&provider(&providers, "gw"), &["4915100000001", "4915100000002", "4915100000003"], "hi").await;

    let r = recipients(result);
    let to: Vec<&str> = r.iter().map(|r| r.to.as_str()).collect();
    assert_eq!(to, ["4915100000001", "4915100000002", "4915100000003"], "one entry per recipient, in order");
    assert_eq!(r[0].provider_message_id.as_deref(), Some("id-a"));
    assert!(r[0].error.is_none(), "{:?}", r[0]);
    assert_eq!(r[2].provider_message_id.as_deref(), Some("id-c"));
    assert!(r[2].error.is_none(), "{:?}", r[2]);
    assert_eq!(r[1].provider_message_id, None);
    let error = r[1].error.as_ref().expect("the invalid number failed");
    assert_eq!(error.code, "invalid_recipient");
    assert_eq!(error.provider_code.as_deref(), Some("INVALID_NUMBER"));
    assert!(!error.retryable);
}

#[tokio::test]
async fn c_example_maps_401_to_auth_not_retryable() {
    let mock = MockHttp::start(|_| MockResponse::status(401, "Unauthorized")).await;
    let providers = load(&config(&c_example_block("gw", &format!("base_url = {:?}", mock.url())), "gw"));

    let error = request_error(send(&provider(&providers, "gw"), &["4915100000001"], "hi").await);

    assert_eq!(error.code, "auth");
    assert!(!error.retryable);
    assert_eq!(error.provider_code.as_deref(), Some("401"));
    assert_eq!(error.retry_after_ms, None);
    assert!(!error.message.contains(PASSWORD), "{}", error.message);
}

#[tokio::test]
async fn c_example_maps_429_with_retry_after_to_throttled_with_delay() {
    let mock =
        MockHttp::start(|_| MockResponse::status(429, "slow down").with_header("Retry-After", "7")).await;
    let providers = load(&config(&c_example_block("gw", &format!("base_url = {:?}", mock.url())), "gw"));

    let error = request_error(send(&provider(&providers, "gw"), &["4915100000001"], "hi").await);

    assert_eq!(error.code, "throttled");
    assert!(error.retryable);
    assert_eq!(error.retry_after_ms, Some(7000));
    assert_eq!(error.provider_code.as_deref(), Some("429"));
}

/// A plugin that needs ABI 1.1 refuses to start on a host that does not say it speaks it (a 1.0
/// host would send its `form` requests without a body).
#[test]
fn c_example_refuses_a_host_that_does_not_speak_abi_1_1() {
    let lib = PluginLibrary::load(&c_example()).expect("the C example loads");
    let from_1_0 = br#"{"v":1,"name":"gw","base_url":null,"settings":{"username":"acme","password":"pw"}}"#;

    let created = lib.instance_new(from_1_0);

    assert_eq!(created.rc, abi::RC_ERROR);
    let answer = String::from_utf8_lossy(&created.answer);
    assert!(answer.contains("invalid_settings"), "{answer}");
    assert!(answer.contains("needs notifyd with plugin ABI 1.1 or later"), "{answer}");
    let from_1_1 = br#"{"v":1,"name":"gw","base_url":null,"settings":{"username":"acme","password":"pw"},"abi_minor":1}"#;
    assert_eq!(lib.instance_new(from_1_1).rc, abi::RC_OK);
}

/// The C example's JSON reader takes any valid JSON as the host's own (escapes in keys and
/// values, a surrogate pair, keys in any order, unknown keys, `null` for absent) and refuses
/// malformed JSON with an error document, never a crash.
#[test]
fn c_example_reads_any_valid_json_and_refuses_the_rest() {
    let lib = PluginLibrary::load(&c_example()).expect("the C example loads");
    let settings = br#"{"settings":{"\u0070assword":"s3\"cret","username":"acme"},"extra":[1,{"x":null}],"base_url":"https://gw.example/p/","name":"gw","abi_minor":1,"v":1}"#;
    let created = lib.instance_new(settings);
    assert_eq!(created.rc, abi::RC_OK, "{}", String::from_utf8_lossy(&created.answer));
    let instance = created.instance.expect("an instance");
    let input = r#"{"input":{"segments":1,"text":"Gr\u00fc\u00dfe \ud83d\ude00 \"q\"","to":["4915100000001"],"from":null,"later":{"a":[]}},"v":1}"#;

    let answer = instance.call(Op::Send, input.as_bytes()).expect("send is supported");

    assert_eq!(answer.rc, abi::RC_OK, "{}", String::from_utf8_lossy(&answer.body));
    let doc: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(doc["http"]["url"], "https://gw.example/p/api/send");
    assert_eq!(doc["http"]["basic_auth"], serde_json::json!({"user": "acme", "password": "s3\"cret"}));
    let form = serde_json::json!([["to", "4915100000001"], ["text", "Grüße 😀 \"q\""]]);
    assert_eq!(doc["http"]["form"], form, "and no `from`: null is absent");

    let deep = format!(
        r#"{{"v":1,"input":{{"to":["4915100000001"],"text":"a","x":{}{}}}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    for malformed in [
        r#"{"v":1,"input":5"#,
        r#"{"v":1,"input":{"to":["4915100000001"],"text":"\ud83d"}}"#,
        r#"{"v":1,"input":{"to":["4915100000001"],"text":"a\u00"}}"#,
        r#"{"v":1,"input":{"to":["4915100000001"],"text":"a\x"}}"#,
        "{\"v\":1,\"input\":{\"to\":[\"4915100000001\"],\"text\":\"a\u{1}\"}}",
        r#"{"v":1,"input":{"to":["4915100000001"],"text":"a",}}"#,
        r#"{"v":1,"input":{"to":["4915100000001"] "text":"a"}}"#,
        r#"{"v":1,"input":{"to":["4915100000001"],"text":"a"}} {}"#,
        &deep,
    ] {
        let answer = instance.call(Op::Send, malformed.as_bytes()).expect("send is supported");
        assert_eq!(answer.rc, abi::RC_ERROR, "{malformed}");
        let error: serde_json::Value = serde_json::from_slice(&answer.body).expect("an error document");
        assert_eq!(error["error"]["code"], "plugin_error", "{malformed}");
    }
}

#[tokio::test]
async fn base_url_path_prefix_is_kept() {
    let mock = MockHttp::start(|_| MockResponse::ok("4915100000001 OK gw-1\n")).await;
    let base_url = format!("{}/gw/", mock.url());
    let providers = load(&config(&c_example_block("gw", &format!("base_url = {base_url:?}")), "gw"));

    let r = recipients(send(&provider(&providers, "gw"), &["4915100000001"], "hi").await);

    assert_eq!(r[0].provider_message_id.as_deref(), Some("gw-1"));
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/gw/api/send"]);
}

// ---- transport failures -------------------------------------------------------------------------

#[tokio::test]
async fn a_provider_slower_than_its_timeout_is_a_transport_timeout_that_names_no_secret() {
    let mock =
        MockHttp::start(|_| MockResponse::ok("4915100000001 OK late\n").with_delay(Duration::from_secs(5)))
            .await;
    let lines = format!("base_url = {:?}\ntimeout = \"200ms\"", mock.url());
    let blocks = c_example_block("gw", &lines) + &query_key_block("qk", &lines);
    let providers = load(&config(&blocks, "gw"));

    for (name, secrets) in [("gw", vec![PASSWORD, BASIC_AUTH]), ("qk", vec![API_KEY, "api_key="])] {
        let p = provider(&providers, name);
        assert_eq!(p.timeout, Duration::from_millis(200));
        let started = Instant::now();
        let error = transport_failure(send(&p, &["4915100000001"], "hi").await);
        let took = started.elapsed();

        assert_eq!(error, TransportError::Timeout(Duration::from_millis(200)), "{name}");
        assert!(took < Duration::from_secs(3), "{name}: the timeout fired after {took:?}");
        assert!(error.is_ambiguous(), "a timed-out request may have been processed");
        let event = OpError::Transport(error.clone()).to_provider_error();
        assert_eq!((event.code.as_str(), event.retryable), ("timeout", true));
        assert_no_secrets(&error, &secrets);
    }
    // The secrets really were on the wire, so the checks above could have caught a leak.
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[0].header("authorization"), Some(BASIC_AUTH));
    assert_eq!(requests[1].path, "/send");
    assert_eq!(requests[1].query_param("api_key").as_deref(), Some(API_KEY));
}

#[tokio::test]
async fn a_port_with_nothing_listening_is_a_connect_error_that_names_no_secret() {
    let lines = format!("base_url = \"http://127.0.0.1:{}\"\ntimeout = \"2s\"", dead_port());
    let blocks = c_example_block("gw", &lines) + &query_key_block("qk", &lines);
    let providers = load(&config(&blocks, "gw"));

    for (name, secrets) in [("gw", vec![PASSWORD, BASIC_AUTH]), ("qk", vec![API_KEY, "api_key="])] {
        let error = transport_failure(send(&provider(&providers, name), &["4915100000001"], "hi").await);

        assert!(matches!(error, TransportError::Connect(_)), "{name}: {error:?}");
        assert!(!error.is_ambiguous(), "a refused connection never carried the request");
        let event = OpError::Transport(error.clone()).to_provider_error();
        assert_eq!((event.code.as_str(), event.retryable), ("unavailable", true));
        assert_no_secrets(&error, &secrets);
    }
}

// ---- ABI checks ---------------------------------------------------------------------------------

#[test]
fn a_plugin_of_another_abi_major_is_refused_naming_file_and_both_versions() {
    let path = fixture("abi_v2");

    let error = PluginLibrary::load(&path).expect_err("an ABI 2 plugin must be refused");

    let PluginError::AbiMismatch { path: named, major, minor } = &error else {
        panic!("expected AbiMismatch, got {error:?}")
    };
    assert_eq!((*major, *minor), (2, 0));
    assert_eq!(named, &path.display().to_string());
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    // The file name holds "v2.so"; look for the versions in the rest of the message.
    let rest = message.replace(&path.display().to_string(), "");
    assert!(rest.contains("2."), "the version found: {message}");
    assert!(rest.contains("1."), "the version supported: {message}");
}

#[test]
fn a_plugin_of_a_later_abi_minor_is_refused_with_both_versions() {
    let path = fixture("abi_v1_99");

    let error = PluginLibrary::load(&path).expect_err("an ABI 1.99 plugin must be refused");

    assert!(matches!(error, PluginError::AbiMismatch { major: 1, minor: 99, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("plugin ABI 1.99 is not supported"), "{message}");
    assert!(message.contains(&format!("up to 1.{}", abi::ABI_MINOR)), "{message}");
}

#[test]
fn a_library_without_the_entry_symbol_is_refused_naming_the_file() {
    let path = fixture("not_a_plugin");

    let error = PluginLibrary::load(&path).expect_err("a library without the entry symbol must be refused");

    let PluginError::NoEntry { path: named } = &error else { panic!("expected NoEntry, got {error:?}") };
    assert_eq!(named, &path.display().to_string());
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("notifyd_plugin_v1"), "{message}");
}

#[tokio::test]
async fn a_short_v1_0_table_loads_with_later_fields_absent_and_sends() {
    let path = fixture("short_table");
    let lib = PluginLibrary::load(&path).expect("a v1.0 table ending after `send` loads");
    assert_eq!(lib.describe.name, "short-table");
    assert_eq!(lib.abi_version(), "1.0");
    // Its status/balance/callback lie beyond struct_size (and abort() if called).
    for op in [Op::Status, Op::Balance, Op::Callback] {
        assert!(!lib.supports(op), "{op:?} lies beyond struct_size");
    }
    let providers = load(&config(&block("short", &path, "", ""), "short"));

    let r = recipients(send(&provider(&providers, "short"), &["4915100000001", "4915100000002"], "hi").await);

    let ids: Vec<(&str, Option<&str>)> =
        r.iter().map(|r| (r.to.as_str(), r.provider_message_id.as_deref())).collect();
    assert_eq!(
        ids,
        [("4915100000001", Some("short-4915100000001")), ("4915100000002", Some("short-4915100000002"))]
    );
}

#[tokio::test]
async fn status_on_a_plugin_without_it_is_a_plugin_error_not_a_crash() {
    let providers = load(&config(&block("short", &fixture("short_table"), "", ""), "short"));
    let p = provider(&providers, "short");
    assert!(!p.supports(Op::Status));

    let refs = StatusInput { refs: vec!["short-4915100000001".into()] };
    let error = plugin_failure(p.run::<_, StatusResult>(Op::Status, &refs).await);

    assert_eq!(error.code, "plugin_error");
    assert!(error.message.contains("status"), "{}", error.message);
    assert!(!error.retryable);
}

// ---- the sandbox --------------------------------------------------------------------------------

#[tokio::test]
async fn a_plugin_panic_is_a_plugin_error_and_the_instance_keeps_working() {
    let blocks =
        block("panicky", &sandbox(), "", "panic_on_text = \"boom\"") + &block("calm", &sandbox(), "", "");
    let providers = load(&config(&blocks, "panicky"));
    let (panicky, calm) = (provider(&providers, "panicky"), provider(&providers, "calm"));
    assert!(Arc::ptr_eq(panicky.instance.library(), calm.instance.library()), "one library, two instances");

    let error = plugin_failure(send(&panicky, &["4915100000001"], "boom").await);
    assert_eq!(error.code, "plugin_error");
    assert!(error.message.contains("panic"), "the message should mention the panic: {}", error.message);

    // The same instance still works...
    let r = recipients(send(&panicky, &["4915100000001"], "hello").await);
    assert!(r[0].error.is_none(), "{:?}", r[0]);
    assert!(r[0].provider_message_id.as_deref().is_some_and(|id| id.starts_with("sb-")), "{:?}", r[0]);
    // ...and so does another instance of the same library.
    let r = recipients(send(&calm, &["4915100000001"], "boom").await);
    assert!(r[0].error.is_none() && r[0].provider_message_id.is_some(), "{:?}", r[0]);
}

#[test]
fn an_unknown_setting_fails_provider_loading_naming_the_key() {
    let config = config(&block("sb", &sandbox(), "", "rejekt = [\"4915100000002\"]"), "sb");

    let errors = load_errors(&config);

    assert_eq!(errors.len(), 1, "{}", lines(&errors));
    let PluginError::Settings { plugin, instance, message, rc, code } = &errors[0] else {
        panic!("expected PluginError::Settings, got {:?}", errors[0])
    };
    assert_eq!(plugin, "sandbox");
    assert_eq!(instance, "sb");
    assert_eq!((*rc, code.as_deref()), (abi::RC_ERROR, Some("invalid_settings")));
    assert!(message.contains("rejekt"), "{message}");
    assert!(errors[0].to_string().contains("rejekt"), "{}", errors[0]);
}

#[tokio::test]
async fn a_rejected_recipient_gets_invalid_recipient_and_the_others_are_sent() {
    let providers = load(&config(&block("sb", &sandbox(), "", "reject = [\"4915100000002\"]"), "sb"));

    let r = recipients(send(&provider(&providers, "sb"), &["4915100000001", "4915100000002"], "hi").await);

    assert_eq!(r.len(), 2);
    assert_eq!(r[0].to, "4915100000001");
    assert!(r[0].error.is_none(), "{:?}", r[0]);
    assert!(r[0].provider_message_id.as_deref().is_some_and(|id| id.starts_with("sb-")), "{:?}", r[0]);
    assert_eq!(r[1].to, "4915100000002");
    assert_eq!(r[1].provider_message_id, None);
    let error = r[1].error.as_ref().expect("the configured number is rejected");
    assert_eq!(error.code, "invalid_recipient");
    assert_eq!(error.provider_code.as_deref(), Some("SANDBOX_REJECT"));
    assert!(!error.retryable);
}

// ---- conformance: `notifyd plugin verify` -------------------------------------------------------

#[test]
fn verify_passes_on_the_sandbox_the_c_example_and_the_short_table() {
    for (path, name) in
        [(sandbox(), "sandbox"), (c_example(), "c-example"), (fixture("short_table"), "short-table")]
    {
        let report = verify::verify(&path, None);

        let shown = report.render().join("\n");
        assert!(report.passed(), "{} does not conform:\n{shown}", path.display());
        // An empty report would pass too: make sure the checks ran to the end.
        assert!(shown.contains(&format!("loads: plugin `{name}`")), "{shown}");
        assert!(shown.contains("settings: unknown key:"), "{shown}");
        assert!(shown.contains("send: first step:"), "{shown}");
        assert!(shown.contains("threads:"), "{shown}");
        // Every answer was checked against the schema, and conforms.
        for name in ["describe: schema", "settings: schema", "send: schema"] {
            assert!(shown.contains(&format!("ok   {name}: ")), "{name}:\n{shown}");
        }
    }
}

#[test]
fn verify_passes_an_abi_1_1_plugin_and_hands_it_a_transport_error() {
    // One exchange per recipient, `exchange_errors` and `response_json` (tests/partial_sends.rs).
    let report = verify::verify(&fixture("per_recipient"), None);

    let shown = report.render().join("\n");
    assert!(report.passed(), "{shown}");
    assert_eq!(report.abi.as_deref(), Some("1.1"));
    assert!(check(&report, "describe: ABI 1.1 flags").ok, "{shown}");
    // Handed a timeout of its first exchange (to recipient 1 of 2), it answers that recipient
    // failed with the error it was given and leaves the other out (not tried).
    let transport = check(&report, "send: a transport error");
    assert!(transport.ok, "{shown}");
    assert!(transport.detail.starts_with("classified: "), "{shown}");
    assert!(transport.detail.contains("timeout"), "{shown}");
}

#[test]
fn verify_names_a_plugin_that_resends_by_itself_after_a_transport_error() {
    let report = verify::verify(&fixture("retries_itself"), None);

    let shown = report.render().join("\n");
    assert!(!report.passed(), "{shown}");
    let transport = check(&report, "send: a transport error");
    assert!(!transport.ok, "{shown}");
    assert!(transport.detail.contains("asks for the request that timed out again"), "{shown}");
    assert!(transport.detail.contains("on_ambiguous"), "{shown}");
}

#[tokio::test]
async fn a_transport_error_reaches_only_a_1_1_plugin_that_asks_and_answers_it() {
    let closed = format!("http://127.0.0.1:{}", dead_port());
    let at = |name: &str, plugin: &str| block(name, &fixture(plugin), &format!("base_url = {closed:?}"), "");
    let blocks =
        at("new", "per_recipient") + &at("old", "per_recipient_v1_0") + &at("failing", "fails_error_call");
    let providers = load(&config(&blocks, "new"));
    let to = ["4915100000001", "4915100000002"];

    // Built for 1.1: handed the refused connection, it answers: the first recipient failed with
    // the error unchanged, the second left out (not tried).
    let answered = recipients(send(&provider(&providers, "new"), &to, "hi").await);
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0].to, to[0]);
    assert_eq!(answered[0].error.as_ref().map(|e| e.code.as_str()), Some("unavailable"));
    // Built for 1.0: the same flags are ignored, and the send ends with the transport error.
    let error = transport_failure(send(&provider(&providers, "old"), &to, "hi").await);
    assert!(matches!(error, TransportError::Connect(_)), "{error:?}");
    // Built for 1.1 but failing the call that hands it the error: the same, as in 1.0.
    let error = transport_failure(send(&provider(&providers, "failing"), &to, "hi").await);
    assert!(matches!(error, TransportError::Connect(_)), "{error:?}");

    let report = verify::verify(&fixture("per_recipient_v1_0"), None);
    let flags = check(&report, "describe: ABI 1.1 flags");
    assert!(!flags.ok, "{}", report.render().join("\n"));
    assert!(flags.detail.contains("the table says ABI 1.0: the host ignores them"), "{}", flags.detail);
    assert!(report.checks.iter().all(|c| c.name != "send: a transport error"), "not handed one");
}

#[test]
fn verify_fails_an_answer_that_breaks_the_schema_naming_the_field_by_its_pointer() {
    // `numeric_code` answers every recipient failed, with `"provider_code": 21211`.
    let report = verify::verify(&fixture("numeric_code"), None);

    let shown = report.render().join("\n");
    assert!(!report.passed(), "{shown}");
    let schema = check(&report, "send: schema");
    assert!(!schema.ok, "{shown}");
    assert!(
        schema.detail.contains(
            "the first step, checked against $defs/send_answer: /done/recipients/0/error/provider_code: expected a string or null, found a number (schema #/$defs/provider_error/properties/provider_code/anyOf)"
        ),
        "{shown}"
    );
    // Its other documents conform: the check names the one that does not.
    assert!(check(&report, "describe: schema").ok, "{shown}");
    assert!(check(&report, "settings: schema").ok, "{shown}");
    // The same failure in `--json`.
    let (code, stdout, stderr) = verify_command_with(&fixture("numeric_code"), &["--json"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let failed: Vec<&serde_json::Value> =
        json["checks"].as_array().unwrap().iter().filter(|c| c["name"] == "send: schema").collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert_eq!(failed[0]["ok"], false, "{stdout}");
    assert!(
        failed[0]["detail"].as_str().unwrap().contains("/done/recipients/0/error/provider_code"),
        "{stdout}"
    );
}

#[test]
fn verify_fails_on_a_non_plugin_and_on_another_abi_naming_the_reason() {
    for (path, reason) in [(fixture("not_a_plugin"), "notifyd_plugin_v1"), (fixture("abi_v2"), "ABI 2.0")] {
        let report = verify::verify(&path, None);

        let shown = report.render().join("\n");
        assert!(!report.passed(), "{} should fail:\n{shown}", path.display());
        assert!(
            report.failures().any(|c| c.detail.contains(reason)),
            "no FAIL line names {reason:?}:\n{shown}"
        );
    }
}

/// The `picky` fixture's settings that create an instance (its API key is a placeholder).
fn picky_settings() -> serde_json::Value {
    serde_json::json!({"api_key": "pk-Secret-0815"})
}

/// The check `name` of `report`, which must have run.
fn check<'r>(report: &'r verify::Report, name: &str) -> &'r verify::Check {
    report.get(name).unwrap_or_else(|| panic!("no check {name:?}:\n{}", report.render().join("\n")))
}

#[test]
fn verify_sends_a_plugin_no_more_recipients_than_its_max_recipients() {
    // picky says max_recipients = 1 and refuses a send to two: it conforms all the same.
    let report = verify::verify(&fixture("picky"), Some(picky_settings()));

    let shown = report.render().join("\n");
    assert!(report.passed(), "{shown}");
    let first = check(&report, "send: first step");
    assert!(first.detail.contains("to 1 recipient (max_recipients is 1)"), "{shown}");
    assert!(first.detail.contains("done: 1 sent"), "{shown}");
    assert!(check(&report, "threads").ok, "{shown}");
}

#[test]
fn verify_fails_a_send_error_showing_the_return_code_and_the_plugins_code_and_message() {
    let mut settings = picky_settings();
    settings["fail_send"] = true.into();

    let report = verify::verify(&fixture("picky"), Some(settings));

    let shown = report.render().join("\n");
    assert!(!report.passed(), "{shown}");
    let plugin_says =
        r#"NOTIFYD_ERROR (1): error `auth`: "the provider refused the API key (picky's fail_send is set)""#;
    for name in ["send: first step", "threads"] {
        let failed = check(&report, name);
        assert!(!failed.ok, "{name} must fail:\n{shown}");
        assert!(failed.detail.contains(plugin_says), "{name} must show the plugin's answer:\n{shown}");
    }
    assert!(check(&report, "threads").detail.starts_with("800 of 800 sends"), "{shown}");
    assert!(!shown.contains("without HTTP"), "an error is not an answer without HTTP:\n{shown}");
}

#[test]
fn verify_without_working_settings_shows_each_attempts_keys_and_the_plugins_reason() {
    let report = verify::verify(&fixture("picky"), None);

    let shown = report.render().join("\n");
    let instance = check(&report, "settings: instance");
    assert!(!instance.ok, "{shown}");
    let reason = r#"NOTIFYD_ERROR (1): error `invalid_settings`: "missing setting `api_key` (a string)""#;
    for attempt in ["{} refused: ", "{password, username} refused: ", "{token} refused: "] {
        assert!(instance.detail.contains(&format!("{attempt}{reason}")), "{attempt}:\n{shown}");
    }
    assert!(!instance.detail.contains("notifyd-verify"), "no setting's value:\n{shown}");

    // Given settings: their keys, never their values.
    let report = verify::verify(&fixture("picky"), Some(serde_json::json!({"token": "tk-Secret-4711"})));
    let instance = check(&report, "settings: instance");
    assert!(!instance.ok);
    assert!(
        instance.detail.contains(&format!("--settings: {{token}} refused: {reason}")),
        "{}",
        instance.detail
    );
    assert!(!report.render().join("\n").contains("tk-Secret-4711"), "no setting's value");
}

#[test]
fn verify_adds_the_unknown_key_to_the_settings_that_created_an_instance() {
    // picky reports a missing api_key before an unknown key: alone, the unknown key would only
    // get "missing setting `api_key`".
    let report = verify::verify(&fixture("picky"), Some(picky_settings()));

    let unknown = check(&report, "settings: unknown key");
    assert!(unknown.ok, "{}", report.render().join("\n"));
    assert!(
        unknown.detail.starts_with("{api_key, notifyd_verify_unknown_key} refused, naming the key"),
        "{}",
        unknown.detail
    );
    assert!(unknown.detail.contains("unknown setting `notifyd_verify_unknown_key`"), "{}", unknown.detail);
    assert!(!unknown.detail.contains("pk-Secret-0815"), "no setting's value: {}", unknown.detail);
}

#[test]
fn verify_of_a_file_that_is_not_a_library_shows_the_dynamic_loaders_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("libnotifyd_text.so");
    std::fs::write(&path, "not a shared library, only text\n".repeat(100)).expect("write");

    let report = verify::verify(&path, None);

    let loads = check(&report, "loads");
    assert!(!loads.ok);
    // libloading's own text is "dlopen failed"; the reason is glibc's dlerror().
    assert!(loads.detail.contains("dlopen failed: "), "{}", loads.detail);
    assert!(loads.detail.ends_with("invalid ELF header"), "{}", loads.detail);
}

#[test]
fn a_library_built_for_another_abi_major_is_said_to_be_built_for_it() {
    let path = fixture("entry_v2");

    let error = PluginLibrary::load(&path).expect_err("an ABI 2 library must be refused");
    let PluginError::OtherAbiEntry { path: named, majors } = &error else {
        panic!("expected OtherAbiEntry, got {error:?}")
    };
    assert_eq!((named.as_str(), majors.as_slice()), (path.display().to_string().as_str(), &[2][..]));
    let report = verify::verify(&path, None);
    let loads = check(&report, "loads");
    assert!(!loads.ok);
    assert!(loads.detail.contains("built for ABI 2; this notifyd supports ABI 1"), "{}", loads.detail);
    assert!(loads.detail.contains("`notifyd_plugin_v2`"), "{}", loads.detail);
    assert!(!loads.detail.contains("not a notifyd plugin"), "{}", loads.detail);
}

/// Runs `notifyd plugin verify <path>`; returns (exit code, stdout, stderr).
fn verify_command(path: &Path) -> (Option<i32>, String, String) {
    verify_command_with(path, &[])
}

/// Runs `notifyd plugin verify <path> <args>`; returns (exit code, stdout, stderr).
fn verify_command_with(path: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(["plugin", "verify"])
        .arg(path)
        .args(args)
        .env_remove("NOTIFYD_LOG")
        .output()
        .expect("run the notifyd binary");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn the_verify_command_exits_0_and_says_conforms_for_a_good_plugin() {
    for path in [sandbox(), c_example()] {
        let (code, stdout, stderr) = verify_command(&path);

        assert_eq!(code, Some(0), "{}:\n{stdout}{stderr}", path.display());
        assert!(stdout.contains("conforms"), "{stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}

#[test]
fn the_verify_command_fails_with_a_clear_message_for_a_non_plugin() {
    let path = fixture("not_a_plugin");

    let (code, stdout, stderr) = verify_command(&path);

    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}:\n{stdout}{stderr}");
    assert!(stdout.contains("does NOT conform"), "{stdout}");
    let fail =
        stdout.lines().find(|l| l.starts_with("FAIL")).unwrap_or_else(|| panic!("no FAIL line:\n{stdout}"));
    assert!(fail.contains(&path.display().to_string()), "{fail}");
    assert!(fail.contains("notifyd_plugin_v1"), "{fail}");
}

#[test]
fn the_verify_command_with_json_prints_one_document_with_the_checks_describe_and_verdict() {
    let (code, stdout, stderr) = verify_command_with(&sandbox(), &["--json"]);

    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));
    assert_eq!((&report["passed"], &report["verdict"]), (&true.into(), &"conforms".into()), "{stdout}");
    assert_eq!(report["file"], sandbox().display().to_string());
    assert_eq!(report["describe"]["name"], "sandbox");
    assert_eq!(report["describe"]["max_recipients"], 1000);
    assert_eq!(report["abi"], "1.1", "the SDK builds for this ABI");
    let checks = report["checks"].as_array().expect("checks");
    for check in checks {
        let fields: Vec<&str> =
            check.as_object().expect("a check is an object").keys().map(String::as_str).collect();
        assert_eq!(fields, ["detail", "name", "ok"], "{check}");
    }
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for name in ["loads", "settings: instance", "settings: unknown key", "send: first step", "threads"] {
        assert!(names.contains(&name), "no check {name:?}: {names:?}");
    }

    // A failure: exit 1, the verdict, and the failing check with the plugin's words.
    let settings = r#"{"api_key":"pk-Secret-0815","fail_send":true}"#;
    let (code, stdout, stderr) = verify_command_with(&fixture("picky"), &["--settings", settings, "--json"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));
    assert_eq!((&report["passed"], &report["verdict"]), (&false.into(), &"does not conform".into()));
    let send =
        report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "send: first step").expect("send");
    assert_eq!(send["ok"], false);
    assert!(send["detail"].as_str().unwrap().contains("NOTIFYD_ERROR (1): error `auth`"), "{send}");
    assert!(!stdout.contains("pk-Secret-0815"), "no setting's value:\n{stdout}");

    // Not a plugin: still one document, describe null.
    let (code, stdout, _) = verify_command_with(&fixture("not_a_plugin"), &["--json"]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));
    assert_eq!(report["describe"], serde_json::Value::Null);
    assert_eq!(report["checks"][0]["name"], "loads");

    // A usage error stays one: exit 64, the error on stderr, nothing on stdout.
    let (code, stdout, stderr) = verify_command_with(&sandbox(), &["--settings", "[]", "--json"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--settings must be a JSON object"), "{stderr}");
}

// ---- finding plugins ----------------------------------------------------------------------------

#[test]
fn a_plugin_name_is_found_in_the_configured_plugin_dirs() {
    let base = tempfile::tempdir().expect("temp dir");
    let copy = copy_into(&sandbox(), &base.path().join("plugins"));
    // A relative dir is taken relative to the config file's directory.
    let text = "[plugins]\ndirs = [\"plugins\"]\n\n[[providers]]\nname = \"sb\"\nplugin = \"sandbox\"\n\n\
                [[routes]]\nprefixes = [\"\"]\nproviders = [\"sb\"]\n";
    let config = Config::from_toml(text, base.path()).expect("valid config");
    assert_eq!(config.plugins.dirs, [base.path().join("plugins")]);

    assert_eq!(plugin::find("sandbox", &config.plugins.dirs).expect("found"), copy);
    let providers = load(&config);
    let lib = provider(&providers, "sb").instance.library().clone();
    assert_eq!(lib.path, copy.canonicalize().expect("canonical path"));
    assert_eq!(lib.describe.name, "sandbox");
}

#[test]
fn a_dashed_plugin_name_maps_to_an_underscored_library_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = copy_into(&c_example(), dir.path());
    assert_eq!(plugin::file_name("c-example"), "libnotifyd_c_example.so");

    let found = plugin::find("c-example", &[dir.path().to_path_buf()]).expect("found");

    assert_eq!(found, dir.path().join("libnotifyd_c_example.so"));
    assert_eq!(found, copy);
    assert_eq!(PluginLibrary::load(&found).expect("loads").describe.name, "c-example");
}

#[test]
fn a_missing_plugin_is_not_found_listing_every_searched_dir() {
    let (first, second) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let dirs = [first.path().to_path_buf(), second.path().to_path_buf()];

    let error = plugin::find("no-such-provider", &dirs).expect_err("nothing to find");

    let PluginError::NotFound { name, file, searched } = &error else {
        panic!("expected NotFound, got {error:?}")
    };
    assert_eq!(name, "no-such-provider");
    assert_eq!(file, "libnotifyd_no_such_provider.so");
    let exe_dir = std::env::current_exe().expect("test executable").parent().expect("its dir").to_path_buf();
    for dir in [first.path(), second.path(), exe_dir.as_path(), Path::new("/usr/lib/notifyd/plugins")] {
        assert!(searched.contains(&dir.display().to_string()), "{} not in {searched}", dir.display());
    }
    let message = error.to_string();
    assert!(message.contains("libnotifyd_no_such_provider.so") && message.contains(searched), "{message}");
}
