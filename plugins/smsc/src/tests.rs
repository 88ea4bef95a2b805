//! The plugin against SMSC's documented answers, byte for byte, and against hostile ones; the
//! exact requests it builds; its settings.

use super::*;
use notifyd_plugin::sdk::rfc3339_to_unix_ceil;
use notifyd_plugin::sdk::testing::{
    self, check_balance_result, check_send_result, check_status_result, done, exchange, form_params,
    http_step, ok, recipients, response as http, status_error, status_input, statuses, whole_error,
};
use notifyd_plugin::wire::{HttpRequest, HttpResponse, Status};
use proptest::prelude::*;
use std::collections::BTreeMap;

const PASSWORD: &str = "s3cret-pw";
const USERNAME: &str = "acme-login";
/// 2030-01-01T00:00:00Z, "now" for the scheduling tests.
const NOW: i64 = 1_893_456_000;

fn init(base_url: Option<&str>, settings: serde_json::Value) -> InstanceInit {
    testing::init("smsc-main", base_url, settings)
}

fn smsc_at(base_url: Option<&str>) -> Smsc {
    Smsc::from_init(&init(base_url, serde_json::json!({"username": USERNAME, "password": PASSWORD})))
        .expect("valid settings")
}

fn smsc() -> Smsc {
    smsc_at(Some("https://proxy.example/smsc/"))
}

fn input(to: &[&str]) -> SendInput {
    SendInput {
        id: "order-1234-otp".into(),
        from: Some("MyShop".into()),
        encoding: "ucs2".into(),
        ..testing::send_input(to, "Код 1234 & more: 100%")
    }
}

/// The request of a send's first step.
fn send_request(p: &Smsc, input: &SendInput) -> HttpRequest {
    let (http, state) = http_step(p.send_as_of(input, None, NOW));
    assert_eq!(state, STATE_SEND);
    http
}

/// The result of a send whose exchange got `response`.
fn send_result(to: &[&str], response: HttpResponse) -> SendResult {
    done(smsc().send_as_of(&input(to), Some(&exchange(STATE_SEND, response)), NOW))
}

fn status_result(refs: &[&str], response: HttpResponse) -> StatusResult {
    done(smsc().status(&status_input(refs), Some(&exchange(STATE_STATUS, response))))
}

fn balance_result(response: HttpResponse) -> BalanceResult {
    done(smsc().balance(&serde_json::Value::Null, Some(&exchange(STATE_BALANCE, response))))
}

/// The decoded `key=value` pairs of a form-encoded string.
fn pairs(encoded: &str) -> Vec<(String, String)> {
    form_params(encoded)
}

fn owned(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Asserts the normalised code, retryability and provider code of an error.
fn assert_error(e: &ProviderError, code: &str, retryable: bool, provider_code: Option<&str>) {
    assert_eq!(e.code, code, "{e:?}");
    assert_eq!(e.retryable, retryable, "{e:?}");
    assert_eq!(e.provider_code.as_deref(), provider_code, "{e:?}");
    assert!(!e.message.contains(PASSWORD) && !e.message.contains(USERNAME), "credential in {e:?}");
}

// ---- describe and settings ----------------------------------------------------------------------

#[test]
fn describes_itself_with_its_limits_and_capabilities() {
    testing::assert_describes::<Smsc>(
        CAP_SEND | CAP_STATUS | CAP_BALANCE | CAP_SCHEDULE,
        serde_json::json!({"name": "smsc", "version": env!("CARGO_PKG_VERSION"), "max_recipients": 100,
            "max_status_refs": 100, "alphabet": "unicode", "default_base_url": "https://smsc.ru"}),
    );
}

#[test]
fn the_default_base_url_is_the_production_one() {
    let p = smsc_at(None);
    assert_eq!(send_request(&p, &input(&["4915100000001"])).url, "https://smsc.ru/sys/send.php");
}

#[test]
fn settings_are_checked_naming_the_key_never_the_secret() {
    let refuse = |base: Option<&str>, settings: serde_json::Value, needle: &str| {
        let e = Smsc::from_init(&init(base, settings)).expect_err("refused");
        assert_eq!(e.code, "invalid_settings");
        assert!(e.message.contains(needle), "{needle:?} not in {:?}", e.message);
        assert!(!e.message.contains(PASSWORD), "{}", e.message);
    };
    refuse(None, serde_json::json!({"username": "a", "password": PASSWORD, "token": "x"}), "token");
    refuse(None, serde_json::json!({"username": "a"}), "password");
    refuse(None, serde_json::json!({"password": PASSWORD}), "username");
    refuse(None, serde_json::json!({"username": " ", "password": PASSWORD}), "username");
    refuse(None, serde_json::json!({"username": "a", "password": ""}), "password");
    refuse(None, serde_json::json!({"username": "a", "password": 5}), "password");
    for bad in ["smsc.ru", "ftp://smsc.ru", "https://", "https:///x", "https://smsc.ru/?a=b"] {
        refuse(Some(bad), serde_json::json!({"username": "a", "password": PASSWORD}), "base_url");
    }
}

#[test]
fn the_instance_debug_shows_no_password() {
    let shown = format!("{:?}", smsc());
    assert!(!shown.contains(PASSWORD), "{shown}");
}

// ---- building requests --------------------------------------------------------------------------

#[test]
fn send_posts_the_documented_form_on_the_prefixed_base_url() {
    let req = send_request(&smsc(), &input(&["4915100000001"]));
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "https://proxy.example/smsc/sys/send.php", "the prefix is kept, one slash");
    assert_eq!(
        req.headers,
        vec![("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())]
    );
    assert_eq!(
        pairs(&req.body),
        owned(&[
            ("login", USERNAME),
            ("psw", PASSWORD),
            ("phones", "4915100000001"),
            ("mes", "Код 1234 & more: 100%"),
            ("sender", "MyShop"),
            ("charset", "utf-8"),
            ("fmt", "3"),
            ("cost", "3"),
            ("op", "1"),
        ])
    );
    // The text travels as percent-encoded UTF-8.
    assert!(req.body.contains("mes=%D0%9A%D0%BE%D0%B4%201234%20%26%20more%3A%20100%25"), "{}", req.body);
}

#[test]
fn several_recipients_travel_in_one_comma_separated_list() {
    let req = send_request(&smsc(), &input(&["4915100000001", "447700900123", "77011234567"]));
    let params = pairs(&req.body);
    assert!(
        params.contains(&("phones".into(), "4915100000001,447700900123,77011234567".into())),
        "{params:?}"
    );
    assert!(!params.iter().any(|(k, _)| k == "id"), "no client id is sent: {params:?}");
}

#[test]
fn a_long_send_is_a_post_too() {
    let many: Vec<String> = (0..100).map(|i| format!("49151000{i:05}")).collect();
    let to: Vec<&str> = many.iter().map(String::as_str).collect();
    let req = send_request(&smsc(), &input(&to));
    assert_eq!(req.method, "POST");
    assert!(!req.url.contains('?'), "nothing in the URL: {}", req.url);
    let phones =
        pairs(&req.body).into_iter().find(|(k, _)| k == "phones").map(|(_, v)| v).unwrap_or_default();
    assert_eq!(phones.split(',').count(), 100);
}

#[test]
fn without_a_sender_the_account_default_is_used() {
    let mut i = input(&["4915100000001"]);
    i.from = None;
    assert!(!pairs(&send_request(&smsc(), &i).body).iter().any(|(k, _)| k == "sender"));
    i.from = Some(String::new());
    assert!(!pairs(&send_request(&smsc(), &i).body).iter().any(|(k, _)| k == "sender"));
}

#[test]
fn send_at_ahead_becomes_time_as_unix_seconds_rounded_up() {
    let mut i = input(&["4915100000001"]);
    i.send_at = Some("2030-01-01T09:30:00.250Z".into());
    let params = pairs(&send_request(&smsc(), &i).body);
    let time = params.iter().find(|(k, _)| k == "time").map(|(_, v)| v.as_str());
    assert_eq!(time, Some("01893490201"), "`0<ts>`: 09:30:00.250 is sent as 09:30:01");
}

#[test]
fn send_at_in_the_past_sends_now() {
    let mut i = input(&["4915100000001"]);
    i.send_at = Some("2029-12-31T23:59:59Z".into());
    assert!(!pairs(&send_request(&smsc(), &i).body).iter().any(|(k, _)| k == "time"));
}

#[test]
fn malformed_inputs_are_refused_without_a_request() {
    let mut i = input(&["4915100000001"]);
    i.send_at = Some("next tuesday".into());
    let e = smsc().send_as_of(&i, None, NOW).expect_err("refused");
    assert_error(&e, "plugin_error", false, None);
    for bad in ["+4915100000001", "4915100000001,4915100000002", "49151;1", ""] {
        let e = smsc().send_as_of(&input(&[bad]), None, NOW).expect_err("refused");
        assert_error(&e, "plugin_error", false, None);
        assert!(e.message.contains("#0"), "{}", e.message);
    }
    let none = smsc().send_as_of(&input(&[]), None, NOW);
    assert_eq!(none, Ok(Step::done(SendResult::Recipients { recipients: vec![] })));
}

#[test]
fn a_foreign_exchange_state_is_refused() {
    let e = smsc()
        .send_as_of(&input(&["4915100000001"]), Some(&exchange("other", ok(r#"{"id":9}"#))), NOW)
        .expect_err("refused");
    assert_error(&e, "plugin_error", false, None);
    let e =
        smsc().balance(&serde_json::Value::Null, Some(&exchange(STATE_SEND, ok("{}")))).expect_err("refused");
    assert_error(&e, "plugin_error", false, None);
}

#[test]
fn status_of_one_message_is_a_get_with_phone_and_id() {
    let input = StatusInput { refs: vec!["9:4915100000001".into()] };
    let Ok(Step::Http { http: req, state, .. }) = smsc().status(&input, None) else {
        panic!("expected a request")
    };
    assert_eq!(state, STATE_STATUS);
    assert_eq!(req.method, "GET");
    let (url, query) = req.url.split_once('?').expect("a query");
    assert_eq!(url, "https://proxy.example/smsc/sys/status.php");
    assert_eq!(
        pairs(query),
        owned(&[
            ("login", USERNAME),
            ("psw", PASSWORD),
            ("phone", "4915100000001"),
            ("id", "9"),
            ("fmt", "3"),
            ("charset", "utf-8"),
        ])
    );
    assert!(req.body.is_empty());
}

#[test]
fn status_of_several_messages_sends_lists_in_matching_order() {
    let refs = vec!["9:4915100000001".into(), "9:4915100000002".into(), "12:447700900123".into()];
    let Ok(Step::Http { http: req, .. }) = smsc().status(&StatusInput { refs }, None) else { panic!() };
    let params = pairs(req.url.split_once('?').expect("a query").1);
    assert!(params.contains(&("phone".into(), "4915100000001,4915100000002,447700900123".into())));
    assert!(params.contains(&("id".into(), "9,9,12".into())));
}

#[test]
fn a_long_status_query_is_a_post() {
    let refs: Vec<String> = (0..100).map(|i| format!("{}:49151000{i:05}", 1_000_000 + i)).collect();
    let Ok(Step::Http { http: req, .. }) = smsc().status(&StatusInput { refs }, None) else { panic!() };
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "https://proxy.example/smsc/sys/status.php");
    let params = pairs(&req.body);
    assert_eq!(params.iter().find(|(k, _)| k == "id").map(|(_, v)| v.split(',').count()), Some(100));
}

#[test]
fn malformed_references_end_unknown_without_a_query() {
    let input = StatusInput { refs: vec!["garbage".into(), "1,2:49151".into()] };
    let Ok(Step::Done { done }) = smsc().status(&input, None) else { panic!("expected a result") };
    let s = statuses(done);
    assert_eq!(s.len(), 2);
    for u in &s {
        assert_eq!(u.status, "unknown");
        assert_error(u.error.as_ref().unwrap(), "plugin_error", false, None);
    }
    // With a good one among them, only the good one is queried, and the bad one still ends.
    let input = StatusInput { refs: vec!["garbage".into(), "9:4915100000001".into()] };
    let Ok(Step::Http { http: req, .. }) = smsc().status(&input, None) else { panic!() };
    assert!(req.url.contains("phone=4915100000001&id=9&"), "{}", req.url);
    let done = smsc().status(&input, Some(&exchange(STATE_STATUS, ok(r#"{"status":1}"#))));
    let Ok(Step::Done { done }) = done else { panic!() };
    let s = statuses(done);
    assert_eq!((s[0].reference.as_str(), s[0].status.as_str()), ("garbage", "unknown"));
    assert_eq!((s[1].reference.as_str(), s[1].status.as_str()), ("9:4915100000001", "delivered"));
}

#[test]
fn balance_is_a_get_with_json_and_currency() {
    let Ok(Step::Http { http: req, state, .. }) = smsc().balance(&serde_json::Value::Null, None) else {
        panic!()
    };
    assert_eq!((req.method.as_str(), state.as_str()), ("GET", STATE_BALANCE));
    let (url, query) = req.url.split_once('?').expect("a query");
    assert_eq!(url, "https://proxy.example/smsc/sys/balance.php");
    assert_eq!(pairs(query), owned(&[("login", USERNAME), ("psw", PASSWORD), ("fmt", "3"), ("cur", "1")]));
}

// ---- documented send answers --------------------------------------------------------------------

#[test]
fn documented_success_gives_every_recipient_the_submission_id() {
    let body = r#"{"id":9,"cnt":1,"cost":"3.8","balance":"286.55"}"#;
    let r = recipients(send_result(&["4915100000001"], ok(body)));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].to, "4915100000001");
    assert_eq!(r[0].provider_message_id.as_deref(), Some("9"));
    assert_eq!(r[0].tracking.as_deref(), Some("9:4915100000001"));
    assert_eq!(r[0].error, None);

    let body = r#"{"id":10,"cnt":2,"cost":"7.6","balance":"278.95"}"#;
    let r = recipients(send_result(&["4915100000001", "447700900123"], ok(body)));
    assert_eq!(r.iter().map(|x| x.to.as_str()).collect::<Vec<_>>(), ["4915100000001", "447700900123"]);
    assert!(r.iter().all(|x| x.provider_message_id.as_deref() == Some("10") && x.error.is_none()));
    assert_eq!(r[1].tracking.as_deref(), Some("10:447700900123"), "id + phone: SMSC needs both");
}

#[test]
fn per_number_entries_fail_only_the_numbers_smsc_refused() {
    let body = r#"{"id":12,"cnt":1,"cost":"1.4","balance":"100.5","phones":[{"phone":"4915100000001","mccmnc":"26203","cost":"1.4"},{"phone":"+4915100000002","mccmnc":"0","cost":"0","status":"22","error":"1"},{"phone":"4915100000003","mccmnc":"0","cost":"0","status":23}]}"#;
    let r = recipients(send_result(&["4915100000001", "4915100000002", "4915100000003"], ok(body)));
    assert_eq!(r[0].provider_message_id.as_deref(), Some("12"));
    assert!(r[0].error.is_none());
    assert_eq!(r[1].provider_message_id, None);
    assert_error(r[1].error.as_ref().unwrap(), "invalid_recipient", false, Some("22"));
    assert!(r[1].error.as_ref().unwrap().message.contains("error code 1"), "{:?}", r[1].error);
    assert_error(r[2].error.as_ref().unwrap(), "blocked_recipient", false, Some("23"));
}

#[test]
fn documented_error_fails_the_whole_request() {
    let body = r#"{"error":"invalid number","error_code":7,"id":175}"#;
    let e = whole_error(send_result(&["4915100000001"], ok(body)));
    assert_error(&e, "invalid_recipient", false, Some("7"));
    assert!(e.message.contains("invalid number"), "SMSC's words are quoted: {}", e.message);
}

#[test]
fn every_documented_send_error_code_maps_as_the_table_says() {
    let expected: &[(i64, &str, &str, bool)] = &[
        (1, "parameters error", "invalid_request", false),
        (2, "authorise error", "auth", false),
        (3, "no money", "insufficient_funds", false),
        (4, "IP is blocked", "auth", false),
        (5, "invalid date format", "invalid_request", false),
        (6, "message is denied", "content_rejected", false),
        (7, "invalid number", "invalid_recipient", false),
        (8, "can't deliver", "blocked_recipient", false),
        (9, "duplicate request, wait a minute", "duplicate", false),
    ];
    for &(code, words, normalised, retryable) in expected {
        let with_id = if matches!(code, 3 | 6 | 7 | 8) { r#","id":175"# } else { "" };
        let body = format!(r#"{{"error":"{words}","error_code":{code}{with_id}}}"#);
        let e = whole_error(send_result(&["4915100000001"], ok(&body)));
        assert_error(&e, normalised, retryable, Some(&code.to_string()));
        assert_eq!(e.retry_after_ms, None, "code {code}");
    }
}

#[test]
fn error_nine_for_concurrent_requests_is_throttled_with_a_delay() {
    let body = r#"{"error":"too many concurrent requests","error_code":9}"#;
    let e = whole_error(send_result(&["4915100000001"], ok(body)));
    assert_error(&e, "throttled", true, Some("9"));
    assert_eq!(e.retry_after_ms, Some(2_000));
}

#[test]
fn plain_text_answers_are_understood_too() {
    let e = whole_error(send_result(&["4915100000001"], ok("ERROR = 2 (authorise error)")));
    assert_error(&e, "auth", false, Some("2"));
    let e = whole_error(send_result(&["4915100000001"], ok("ERROR = 9 (duplicate request, wait a minute)")));
    assert_error(&e, "duplicate", false, Some("9"));
    let r = recipients(send_result(&["4915100000001"], ok("OK - 1 SMS, ID - 31")));
    assert_eq!(r[0].tracking.as_deref(), Some("31:4915100000001"));
}

#[test]
fn an_error_document_wins_over_the_http_status() {
    let e = whole_error(send_result(
        &["4915100000001"],
        http(403, r#"{"error":"authorise error","error_code":2}"#),
    ));
    assert_error(&e, "auth", false, Some("2"));
    let e =
        whole_error(send_result(&["4915100000001"], http(500, r#"{"error":"no money","error_code":"3"}"#)));
    assert_error(&e, "insufficient_funds", false, Some("3"));
}

// ---- documented status answers ------------------------------------------------------------------

#[test]
fn documented_single_status_answer() {
    let body = r#"{"status":1,"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222}"#;
    let s = statuses(status_result(&["9:4915100000001"], ok(body)));
    assert_eq!(
        s,
        vec![StatusUpdate {
            reference: "9:4915100000001".into(),
            to: None,
            status: Status::Delivered.into(),
            error: None
        }]
    );
}

#[test]
fn every_documented_status_code_maps_as_the_table_says() {
    let expected: &[(i64, &str, Option<&str>)] = &[
        (-3, "sent", None),
        (-2, "sent", None),
        (-1, "sent", None),
        (0, "sent", None),
        (1, "delivered", None),
        (2, "delivered", None),
        (3, "expired", None),
        (4, "delivered", None),
        (20, "undelivered", Some("blocked_recipient")),
        (22, "rejected", Some("invalid_recipient")),
        (23, "rejected", Some("blocked_recipient")),
        (24, "rejected", Some("insufficient_funds")),
        (25, "undelivered", Some("invalid_recipient")),
    ];
    for &(code, status, error) in expected {
        let body =
            format!(r#"{{"status":{code},"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222}}"#);
        let s = statuses(status_result(&["9:4915100000001"], ok(&body)));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].status, status, "code {code}");
        match error {
            Some(c) => {
                assert_error(s[0].error.as_ref().expect("an error"), c, false, Some(&code.to_string()))
            }
            None => assert_eq!(s[0].error, None, "code {code}"),
        }
    }
}

#[test]
fn several_statuses_are_matched_on_id_and_phone_whatever_their_order() {
    let body = r#"[{"status":20,"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222,"err":1,"id":9,"phone":"4915100000002"},{"status":1,"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222,"id":"12","phone":"447700900123"},{"status":0,"last_date":"28.06.2021 19:20:22","last_timestamp":1624897222,"id":9,"phone":"+4915100000001"}]"#;
    let refs = ["9:4915100000001", "9:4915100000002", "12:447700900123"];
    let s = statuses(status_result(&refs, ok(body)));
    let by_ref: BTreeMap<&str, &StatusUpdate> = s.iter().map(|u| (u.reference.as_str(), u)).collect();
    assert_eq!(by_ref.len(), 3);
    assert_eq!(by_ref["9:4915100000001"].status, "sent");
    assert_eq!(by_ref["9:4915100000002"].status, "undelivered");
    let e = by_ref["9:4915100000002"].error.as_ref().unwrap();
    assert_error(e, "blocked_recipient", false, Some("20"));
    assert!(e.message.contains("error code 1"), "{}", e.message);
    assert_eq!(by_ref["12:447700900123"].status, "delivered");
}

#[test]
fn an_answer_that_omits_a_message_leaves_it_pending() {
    let body = r#"[{"status":1,"id":9,"phone":"4915100000001"}]"#;
    let s = statuses(status_result(&["9:4915100000001", "9:4915100000002"], ok(body)));
    assert_eq!(s.len(), 1, "no update for the one not mentioned: the host keeps polling it");
    assert_eq!(s[0].reference, "9:4915100000001");
}

#[test]
fn status_errors_fail_the_query() {
    let e = status_error(status_result(
        &["9:4915100000001"],
        ok(r#"{"error":"authorise error","error_code":2}"#),
    ));
    assert_error(&e, "auth", false, Some("2"));
    let e = status_error(status_result(&["9:4915100000001"], ok(r#"{"error":"IP blocked","error_code":4}"#)));
    assert_error(&e, "auth", false, Some("4"));
    let e = status_error(status_result(
        &["9:4915100000001"],
        ok(r#"{"error":"too many requests","error_code":9}"#),
    ));
    assert_error(&e, "throttled", true, Some("9"));
    assert_eq!(e.retry_after_ms, Some(60_000));
}

#[test]
fn an_unknown_status_code_stays_pending_naming_the_code() {
    let s = statuses(status_result(&["9:4915100000001"], ok(r#"{"status":77}"#)));
    assert_eq!(s[0].status, "sent");
    let e = s[0].error.as_ref().unwrap();
    assert_error(e, "plugin_error", false, Some("77"));
    assert!(e.message.contains("77"));
}

// ---- documented balance answers -----------------------------------------------------------------

#[test]
fn documented_balance_answers() {
    assert_eq!(
        balance_result(ok(r#"{"balance":"0.00","currency":"KZT"}"#)),
        BalanceResult::Balance { amount: 0.0, currency: "KZT".into() }
    );
    assert_eq!(
        balance_result(ok(r#"{"balance":"286.55","currency":"RUB"}"#)),
        BalanceResult::Balance { amount: 286.55, currency: "RUB".into() }
    );
    assert_eq!(
        balance_result(ok(r#"{"balance":12.5}"#)),
        BalanceResult::Balance { amount: 12.5, currency: "unknown".into() }
    );
    let BalanceResult::Failed { error } = balance_result(ok(r#"{"error":"authorise error","error_code":2}"#))
    else {
        panic!()
    };
    assert_error(&error, "auth", false, Some("2"));
    let BalanceResult::Failed { error } =
        balance_result(ok(r#"{"error":"too many requests","error_code":9}"#))
    else {
        panic!()
    };
    assert_error(&error, "throttled", true, Some("9"));
}

// ---- hostile answers ----------------------------------------------------------------------------

/// Hostile bodies for HTTP 200: each is a `plugin_error` (SMSC may have acted) quoting a snippet.
const HOSTILE_200: &[(&str, &str)] = &[
    ("", "an empty body"),
    ("   \n", "an empty body"),
    ("<html><body><h1>Bad Gateway</h1></body></html>", "<html><body>"),
    ("<!DOCTYPE html><html>", "<!DOCTYPE html>"),
    (r#"{"id":9,"cnt":"#, r#"{"id":9,"cnt":"#),
    (r#"{"cnt":1,"cost":"3.8"}"#, r#"{"cnt":1"#),
    (r#"{"error":"new kind of error"}"#, "new kind of error"),
    (r#"{"error":"x","error_code":"abc"}"#, "error_code"),
    ("[1,2,3]", "[1,2,3]"),
    ("null", "null"),
    ("\"ok\"", "\"ok\""),
    ("OK", "OK"),
];

#[test]
fn hostile_send_answers_are_plugin_errors_with_a_snippet() {
    for &(body, quoted) in HOSTILE_200 {
        let e = whole_error(send_result(&["4915100000001", "4915100000002"], ok(body)));
        assert_error(&e, "plugin_error", false, None);
        assert!(e.message.contains("HTTP 200") && e.message.contains(quoted), "{body:?}: {}", e.message);
    }
}

#[test]
fn an_unknown_error_code_is_a_plugin_error_naming_it() {
    let e = whole_error(send_result(&["4915100000001"], ok(r#"{"error":"brand new","error_code":42}"#)));
    assert_error(&e, "plugin_error", false, Some("42"));
    assert!(e.message.contains("42") && e.message.contains("brand new"), "{}", e.message);
}

#[test]
fn a_one_mebibyte_body_gives_a_short_snippet() {
    for body in ["x".repeat(1 << 20), format!("{{\"id\":{}", "9".repeat(1 << 20)), "<p>".repeat(1 << 18)] {
        let e = whole_error(send_result(&["4915100000001"], ok(&body)));
        assert_error(&e, "plugin_error", false, None);
        assert!(e.message.len() < 200, "{} bytes", e.message.len());
        assert!(matches!(status_result(&["9:4915100000001"], ok(&body)), StatusResult::Failed { .. }));
        assert!(matches!(balance_result(ok(&body)), BalanceResult::Failed { .. }));
    }
}

#[test]
fn http_errors_map_by_status() {
    let e = whole_error(send_result(&["4915100000001"], http(502, "<html><body>Bad Gateway</body></html>")));
    assert_error(&e, "unavailable", true, Some("502"));
    assert!(e.message.contains("Bad Gateway"), "a snippet: {}", e.message);
    let mut throttled = http(429, "slow down");
    throttled.headers.insert("retry-after".into(), "7".into());
    let e = whole_error(send_result(&["4915100000001"], throttled));
    assert_error(&e, "throttled", true, Some("429"));
    assert_eq!(e.retry_after_ms, Some(7_000));
    let e = whole_error(send_result(&["4915100000001"], http(401, "")));
    assert_error(&e, "auth", false, Some("401"));
    let e = whole_error(send_result(&["4915100000001"], http(404, "<html>Not Found</html>")));
    assert_error(&e, "plugin_error", false, Some("404"));
    assert!(e.message.contains("Not Found"), "{}", e.message);
    let e = status_error(status_result(&["9:4915100000001"], http(503, "")));
    assert_error(&e, "unavailable", true, Some("503"));
    let BalanceResult::Failed { error } = balance_result(http(500, "oops")) else { panic!() };
    assert_error(&error, "unavailable", true, Some("500"));
}

#[test]
fn hostile_status_answers_fail_the_query() {
    // (`[1,2,3]` among them: an array of things that are not status objects says nothing.)
    for &(body, _) in HOSTILE_200 {
        let e = status_error(status_result(&["9:4915100000001"], ok(body)));
        assert_error(&e, "plugin_error", false, None);
        assert!(e.message.contains("HTTP 200"), "{}", e.message);
    }
    // An object for a message that was not asked about is not applied to another.
    let e = status_error(status_result(&["9:4915100000001", "9:4915100000002"], ok(r#"{"status":1}"#)));
    assert_error(&e, "plugin_error", false, None);
}

#[test]
fn status_elements_without_a_status_are_skipped() {
    let e = status_error(status_result(&["9:4915100000001"], ok(r#"{"last_date":"28.06.2021 19:20:22"}"#)));
    assert_error(&e, "plugin_error", false, None);
    let body = r#"[{"id":9,"phone":"4915100000001","last_date":"28.06.2021"},{"id":9,"phone":"4915100000002","status":1}]"#;
    let s = statuses(status_result(&["9:4915100000001", "9:4915100000002"], ok(body)));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].reference.as_str(), s[0].status.as_str()), ("9:4915100000002", "delivered"));
}

#[test]
fn a_per_message_error_leaves_that_message_pending() {
    let body = r#"[{"id":9,"phone":"4915100000001","error":"message not found","error_code":"5"},{"id":9,"phone":"4915100000002","status":1}]"#;
    let s = statuses(status_result(&["9:4915100000001", "9:4915100000002"], ok(body)));
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0].status, "sent");
    assert_error(s[0].error.as_ref().unwrap(), "invalid_request", false, Some("5"));
}

#[test]
fn no_credential_reaches_any_error_message() {
    // A proxy's error page that quotes the request URL, plain and percent-encoded.
    let echo = format!(
        "<html>GET /sys/send.php?login={USERNAME}&psw={PASSWORD} failed; psw=s3cret%2Dpw {PASSWORD}</html>"
    );
    for response in [
        ok(&echo),
        http(502, &echo),
        http(404, &echo),
        ok(&format!(r#"{{"error":"{PASSWORD}","error_code":2}}"#)),
    ] {
        let e = whole_error(send_result(&["4915100000001"], response.clone()));
        assert!(!e.message.contains(PASSWORD) && !e.message.contains(USERNAME), "{}", e.message);
        let e = status_error(status_result(&["9:4915100000001"], response.clone()));
        assert!(!e.message.contains(PASSWORD) && !e.message.contains(USERNAME), "{}", e.message);
        let BalanceResult::Failed { error } = balance_result(response) else { panic!() };
        assert!(!error.message.contains(PASSWORD), "{}", error.message);
    }
    let e = smsc().send_as_of(&input(&["x"]), None, NOW).expect_err("refused");
    assert!(!e.message.contains(PASSWORD));
}

// ---- properties ---------------------------------------------------------------------------------

/// Bodies that look like SMSC's answers, with arbitrary parts.
fn smsc_like() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-z0-9 .+-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ];
    let key = prop_oneof![
        Just("id"),
        Just("cnt"),
        Just("error"),
        Just("error_code"),
        Just("status"),
        Just("phone"),
        Just("phones"),
        Just("balance"),
        Just("currency"),
        Just("err"),
    ];
    let object = prop::collection::vec((key, value), 0..6).prop_map(|kv| {
        let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    });
    prop_oneof![
        object.clone(),
        prop::collection::vec(object, 0..4).prop_map(|o| format!("[{}]", o.join(","))),
        ".*",
        "(ERROR|OK)[ =\\-0-9A-Za-z(),]{0,30}",
    ]
}

fn codes_are_known(e: &ProviderError) -> bool {
    e.code.is_operation_code()
}

proptest! {
    #[test]
    fn reading_any_answer_never_panics(status in 100u16..600, body in smsc_like()) {
        let response = http(status, &body);
        match send_result(&["4915100000001", "4915100000002"], response.clone()) {
            SendResult::Failed { error } => prop_assert!(codes_are_known(&error), "{error:?}"),
            SendResult::Recipients { recipients } => {
                prop_assert_eq!(recipients.len(), 2);
                for r in recipients {
                    prop_assert!(r.error.as_ref().is_none_or(codes_are_known));
                    prop_assert!(r.error.is_some() != r.provider_message_id.is_some());
                }
            }
        }
        match status_result(&["9:4915100000001", "12:4915100000002"], response.clone()) {
            StatusResult::Failed { error } => prop_assert!(codes_are_known(&error)),
            StatusResult::Statuses { statuses } => {
                prop_assert!(statuses.len() <= 2);
                for s in statuses {
                    prop_assert!(["sent", "delivered", "undelivered", "expired", "rejected"].contains(&s.status.as_str()));
                }
            }
        }
        if let BalanceResult::Failed { error } = balance_result(response) {
            prop_assert!(codes_are_known(&error));
        }
    }

    #[test]
    fn reading_arbitrary_bytes_gives_well_formed_results(status in any::<u16>(), body in any::<Vec<u8>>()) {
        let body = String::from_utf8_lossy(&body).into_owned();
        let to = ["4915100000001"];
        let sent = send_result(&to, http(status, &body));
        prop_assert_eq!(check_send_result(&sent, &to), Ok(()));
        let refs = ["9:4915100000001"];
        let polled = status_result(&refs, http(status, &body));
        prop_assert_eq!(check_status_result(&polled, &refs), Ok(()));
        prop_assert_eq!(check_balance_result(&balance_result(http(status, &body))), Ok(()));
        // Nothing the provider answers is quoted with the credentials in it.
        let errors = [
            match &sent { SendResult::Failed { error } => Some(error), SendResult::Recipients { recipients } => recipients[0].error.as_ref() },
            match &polled { StatusResult::Failed { error } => Some(error), StatusResult::Statuses { .. } => None },
        ];
        for e in errors.into_iter().flatten() {
            prop_assert!(!e.message.contains(PASSWORD), "{:?}", e);
        }
    }

    #[test]
    fn any_send_at_is_either_refused_or_read(send_at in ".{0,40}") {
        let mut i = input(&["4915100000001"]);
        let scheduled = rfc3339_to_unix_ceil(&send_at);
        i.send_at = Some(send_at);
        match smsc().send_as_of(&i, None, NOW) {
            // A time it reads goes out as SMSC's `time` (`0` + unix seconds) when it is ahead of
            // now, and as an immediate send otherwise.
            Ok(Step::Http { http: req, .. }) => {
                let time = pairs(&req.body).into_iter().find(|(k, _)| k == "time").map(|(_, v)| v);
                match scheduled {
                    Some(at) if at > NOW => prop_assert_eq!(time, Some(format!("0{at}"))),
                    Some(_) => prop_assert_eq!(time, None),
                    None => prop_assert!(false, "an unreadable send_at was sent: {:?}", req),
                }
            }
            // One it cannot read is a malformed input: refused, never sent without it.
            Err(e) => {
                prop_assert!(scheduled.is_none(), "a readable send_at was refused: {:?}", e);
                prop_assert_eq!(e.code.as_str(), "plugin_error");
            }
            Ok(Step::Done { done }) => prop_assert!(false, "answered without a request: {:?}", done),
        }
    }
}
