//! The plugin through its `Provider` interface: the requests it builds, every answer documented
//! in `smsclub.txt` and the providers README (byte for byte, in `fixtures/`), and hostile answers.

use super::*;
use notifyd_plugin::sdk::testing::{
    self, check_balance_result, check_send_result, check_status_result, done, exchange, http_step, response,
    status_input, with_header,
};
use notifyd_plugin::wire::{HttpRequest, HttpResponse, RecipientResult, StatusUpdate};
use proptest::prelude::*;
use serde_json::json;

const TOKEN: &str = "tok-SECRET-4242";

/// The .txt's examples, cut out of it unchanged.
const TXT_SEND_REQUEST: &str = include_str!("../fixtures/txt_send_request.json");
const TXT_SEND_RESPONSE: &str = include_str!("../fixtures/txt_send_response.json");
const TXT_STATUS_REQUEST: &str = include_str!("../fixtures/txt_status_request.json");
const TXT_STATUS_RESPONSE: &str = include_str!("../fixtures/txt_status_response.json");
const TXT_BALANCE_RESPONSE: &str = include_str!("../fixtures/txt_balance_response.json");
const TXT_ORIGINATOR_RESPONSE: &str = include_str!("../fixtures/txt_originator_response.json");

fn init(base_url: Option<&str>, settings: serde_json::Value) -> InstanceInit {
    testing::init("club", base_url, settings)
}

fn club() -> SmsClub {
    SmsClub::new(init(Some("https://proxy.example/club/"), json!({"token": TOKEN}))).unwrap()
}

fn input(to: &[&str]) -> SendInput {
    SendInput { from: Some("VashZakaz".into()), ..testing::send_input(to, "test text") }
}

/// The first step of `send`: the HTTP request.
fn send_request(club: &SmsClub, input: &SendInput) -> HttpRequest {
    let (http, state) = http_step(club.send(input, None));
    assert_eq!(state, STATE_SEND);
    http
}

/// The result of `send` for `to` after `response`.
fn send_result(to: &[&str], response: HttpResponse) -> SendResult {
    done(club().send(&input(to), Some(&exchange(STATE_SEND, response))))
}

fn recipients(to: &[&str], response: HttpResponse) -> Vec<RecipientResult> {
    let recipients = testing::recipients(send_result(to, response));
    let order: Vec<&str> = recipients.iter().map(|r| r.to.as_str()).collect();
    assert_eq!(order, to, "one result per recipient, in order");
    recipients
}

fn whole_error(to: &[&str], response: HttpResponse) -> ProviderError {
    testing::whole_error(send_result(to, response))
}

fn status_result(refs: &[&str], response: HttpResponse) -> StatusResult {
    done(club().status(&status_input(refs), Some(&exchange(STATE_STATUS, response))))
}

fn statuses(refs: &[&str], response: HttpResponse) -> Vec<StatusUpdate> {
    testing::statuses(status_result(refs, response))
}

fn balance_result(response: HttpResponse) -> BalanceResult {
    done(club().balance(&json!({}), Some(&exchange(STATE_BALANCE, response))))
}

fn sent_id(r: &RecipientResult) -> (&str, &str) {
    assert!(r.error.is_none(), "{r:?}");
    (r.provider_message_id.as_deref().unwrap(), r.tracking.as_deref().unwrap())
}

/// (code, retryable, provider_code) of an error.
fn shape(e: &ProviderError) -> (&str, bool, Option<&str>) {
    (e.code.as_str(), e.retryable, e.provider_code.as_deref())
}

fn recipient_error(r: &RecipientResult) -> &ProviderError {
    assert!(r.provider_message_id.is_none(), "{r:?}");
    r.error.as_ref().unwrap_or_else(|| panic!("expected an error: {r:?}"))
}

fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    http.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

// ---- describe and settings ----------------------------------------------------------------------

#[test]
fn describe_states_the_documented_limits() {
    testing::assert_describes::<SmsClub>(
        CAP_SEND | CAP_STATUS | CAP_BALANCE,
        serde_json::json!({"name": "smsclub", "version": env!("CARGO_PKG_VERSION"), "max_recipients": 100,
            "max_status_refs": 100, "alphabet": "unicode", "default_base_url": "https://im.smsclub.mobi"}),
    );
}

#[test]
fn settings_take_a_token_and_an_optional_integration_id() {
    let c = SmsClub::new(init(None, json!({"token": TOKEN, "integration_id": 77}))).unwrap();
    assert_eq!(c.base_url, DEFAULT_BASE_URL);
    assert_eq!(c.integration_id, Some(IntegrationId::Number(77)));
    let c = SmsClub::new(init(None, json!({"token": TOKEN, "integration_id": "ref-9"}))).unwrap();
    assert_eq!(c.integration_id, Some(IntegrationId::Text("ref-9".into())));
    assert!(!format!("{c:?}").contains(TOKEN), "Debug hides the token: {c:?}");
}

#[test]
fn bad_settings_are_refused_by_name_never_quoting_the_token() {
    let cases = [
        (json!({}), "token"),
        (json!({"token": TOKEN, "tokne": "x"}), "tokne"),
        (json!({"username": "a", "password": "b"}), "password"),
        (json!({"token": 123_456_789}), "token"),
        (json!({"token": ""}), "token"),
        (json!({"token": "abc def-4242"}), "token"),
        (json!({"token": "tök-4242"}), "token"),
    ];
    for (settings, named) in cases {
        let err =
            SmsClub::new(init(None, settings.clone())).err().unwrap_or_else(|| panic!("{settings} accepted"));
        assert_eq!(err.code, "invalid_settings", "{settings}");
        assert!(err.message.contains(named), "{settings}: {}", err.message);
        for secret in ["123456789", "4242"] {
            assert!(!err.message.contains(secret), "{settings}: the value leaked: {}", err.message);
        }
    }
    for base in ["ftp://x", "im.smsclub.mobi", "https://a b"] {
        let err = SmsClub::new(init(Some(base), json!({"token": TOKEN}))).err().unwrap();
        assert!(err.message.contains("base_url"), "{}", err.message);
    }
}

// ---- requests -----------------------------------------------------------------------------------

#[test]
fn send_request_is_the_documented_post_with_bearer_token() {
    let http = send_request(&club(), &input(&["380989361131"]));
    assert_eq!(http.method, "POST");
    assert_eq!(http.url, "https://proxy.example/club/sms/send", "the base_url's prefix is kept");
    assert_eq!(header(&http, "authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(header(&http, "content-type"), Some("application/json"));
    // The document's own example, parameter for parameter.
    assert_eq!(http.body, r#"{"phone":["380989361131"],"message":"test text","src_addr":"VashZakaz"}"#);
    let documented: serde_json::Value = serde_json::from_str(TXT_SEND_REQUEST).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&http.body).unwrap(), documented);
}

#[test]
fn send_request_carries_every_number_the_text_as_utf8_and_the_referral_id() {
    let c = SmsClub::new(init(None, json!({"token": TOKEN, "integration_id": 77}))).unwrap();
    let mut i = input(&["380989361131", "380671234567", "4915171112233"]);
    i.text = "Привіт, \"друже\" ☺\nкод 1234".into();
    let http = send_request(&c, &i);
    assert_eq!(http.url, "https://im.smsclub.mobi/sms/send");
    let body: serde_json::Value = serde_json::from_str(&http.body).unwrap();
    assert_eq!(
        body,
        json!({"phone": ["380989361131", "380671234567", "4915171112233"], "message": i.text,
               "src_addr": "VashZakaz", "integration_id": 77})
    );
    assert!(http.body.contains("Привіт"), "UTF-8 as it is, not \\u escapes: {}", http.body);
    let c = SmsClub::new(init(None, json!({"token": TOKEN, "integration_id": "ref-9"}))).unwrap();
    assert!(send_request(&c, &input(&["380989361131"])).body.ends_with(r#","integration_id":"ref-9"}"#));
}

#[test]
fn send_without_a_sender_is_refused_before_any_request() {
    for from in [None, Some(""), Some("  ")] {
        let mut i = input(&["380989361131"]);
        i.from = from.map(str::to_owned);
        let Ok(Step::Done { done: SendResult::Failed { error } }) = club().send(&i, None) else {
            panic!("expected a refusal for {from:?}")
        };
        assert_eq!(shape(&error), ("invalid_sender", false, None));
        assert!(error.message.contains("sender"), "{}", error.message);
    }
}

#[test]
fn send_refuses_more_numbers_than_the_provider_takes() {
    let many: Vec<String> = (0..101).map(|n| format!("3806700{n:05}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    for to in [&refs[..], &[][..]] {
        let Ok(Step::Done { done: SendResult::Failed { error } }) = club().send(&input(to), None) else {
            panic!("expected a refusal")
        };
        assert_eq!(error.code, "plugin_error");
    }
    assert!(matches!(club().send(&input(&refs[..100]), None), Ok(Step::Http { .. })));
}

#[test]
fn status_request_lists_the_ids() {
    let refs = StatusInput { refs: vec!["106".into()] };
    let Ok(Step::Http { http, state, .. }) = club().status(&refs, None) else { panic!("expected HTTP") };
    assert_eq!(state, STATE_STATUS);
    assert_eq!((http.method.as_str(), http.url.as_str()), ("POST", "https://proxy.example/club/sms/status"));
    assert_eq!(header(&http, "authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(http.body, r#"{"id_sms":["106"]}"#);
    // The document's example (printed with a trailing comma) asks for the same.
    let documented = response::tests_support::lenient(TXT_STATUS_REQUEST).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&http.body).unwrap(), documented);

    let two = StatusInput { refs: vec!["106".into(), "107".into()] };
    let Ok(Step::Http { http, .. }) = club().status(&two, None) else { panic!("expected HTTP") };
    assert_eq!(http.body, r#"{"id_sms":["106","107"]}"#);
    let none = club().status(&StatusInput { refs: vec![] }, None);
    assert_eq!(none, Ok(Step::done(StatusResult::Statuses { statuses: vec![] })), "no call for nothing");
    let many = StatusInput { refs: (0..101).map(|n| n.to_string()).collect() };
    assert!(matches!(club().status(&many, None), Ok(Step::Done { done: StatusResult::Failed { .. } })));
}

#[test]
fn balance_request_has_no_body() {
    let Ok(Step::Http { http, state, .. }) = club().balance(&json!({}), None) else {
        panic!("expected HTTP")
    };
    assert_eq!(state, STATE_BALANCE);
    assert_eq!((http.method.as_str(), http.url.as_str()), ("POST", "https://proxy.example/club/sms/balance"));
    assert_eq!(header(&http, "authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert!(http.body.is_empty());
}

#[test]
fn an_exchange_of_another_operation_is_refused() {
    let ex = exchange(STATE_STATUS, response(200, TXT_SEND_RESPONSE));
    let err = club().send(&input(&["380989361131"]), Some(&ex)).unwrap_err();
    assert_eq!(err.code, "plugin_error");
    let ex = exchange("garbage", response(200, TXT_STATUS_RESPONSE));
    assert!(club().status(&StatusInput { refs: vec!["106".into()] }, Some(&ex)).is_err());
    assert!(club().balance(&json!({}), Some(&ex)).is_err());
}

// ---- send: documented answers -------------------------------------------------------------------

#[test]
fn documented_send_answer_gives_the_id_to_its_number() {
    let r = recipients(&["380989361131"], response(200, TXT_SEND_RESPONSE));
    assert_eq!(sent_id(&r[0]), ("106", "106"));
}

#[test]
fn ids_go_to_their_own_numbers_whatever_the_order() {
    let body = r#"{"success_request":{"info":{"107":"380671234567","106":"380989361131","108":"+38 050 111 22 33"}}}"#;
    let r = recipients(&["380989361131", "380501112233", "380671234567"], response(200, body));
    assert_eq!(sent_id(&r[0]), ("106", "106"));
    assert_eq!(sent_id(&r[1]), ("108", "108"), "the answer's spelling of the number does not matter");
    assert_eq!(sent_id(&r[2]), ("107", "107"));
}

#[test]
fn readme_partial_answer_refuses_only_the_named_number() {
    // The README's shape: `{"success_request":{"info":{"<sms id>":"<phone>"}, "add_info":{"<phone>":"<why it failed>"}}}`.
    let body = r#"{"success_request":{"info":{"106":"380989361131"}, "add_info":{"380000000001":"Invalid phone number"}}}"#;
    let r = recipients(&["380989361131", "380000000001"], response(200, body));
    assert_eq!(sent_id(&r[0]), ("106", "106"));
    let e = recipient_error(&r[1]);
    assert_eq!(shape(e), ("invalid_recipient", false, Some("Invalid phone number")));
    assert!(e.message.contains("Invalid phone number"), "{}", e.message);
}

#[test]
fn refusal_reasons_map_by_their_words() {
    let cases = [
        ("Invalid phone number", "invalid_recipient"),
        ("Номер у стоп-листі", "blocked_recipient"),
        ("Number is in the black list", "blocked_recipient"),
        ("Номер заблокирован", "blocked_recipient"),
        ("Недостатньо коштів на балансі", "insufficient_funds"),
        ("something we have never seen", "invalid_recipient"),
    ];
    for (reason, code) in cases {
        let body = json!({"success_request": {"info": [], "add_info": {"380000000001": reason}}}).to_string();
        let r = recipients(&["380000000001"], response(200, &body));
        assert_eq!(shape(recipient_error(&r[0])), (code, false, Some(reason)), "{reason}");
    }
}

#[test]
fn every_number_refused_in_a_200_answer() {
    // PHP writes an empty `info` as `[]`; reasons may be lists.
    let body = r#"{"success_request":{"info":[],"add_info":{"380000000001":["Invalid phone number","Too short"],"380000000002":"Invalid phone number"}}}"#;
    let r = recipients(&["380000000001", "380000000002"], response(200, body));
    assert_eq!(
        shape(recipient_error(&r[0])),
        ("invalid_recipient", false, Some("Invalid phone number; Too short"))
    );
    assert_eq!(recipient_error(&r[1]).code, "invalid_recipient");
}

#[test]
fn a_refused_field_in_a_200_answer_applies_to_the_numbers_without_an_id() {
    let body = r#"{"success_request":{"info":[],"add_info":{"src_addr":"Alpha name is not active"}}}"#;
    let r = recipients(&["380989361131", "380671234567"], response(200, body));
    for r in &r {
        assert_eq!(shape(recipient_error(r)), ("invalid_sender", false, Some("src_addr")));
    }
}

#[test]
fn a_number_the_answer_forgets_is_not_resent() {
    let body = r#"{"success_request":{"info":{"106":"380989361131","107":"380999999999"}}}"#;
    let r = recipients(&["380989361131", "380671234567"], response(200, body));
    assert_eq!(sent_id(&r[0]).0, "106");
    assert_eq!(shape(recipient_error(&r[1])), ("plugin_error", false, None));
}

#[test]
fn readme_validation_answer_refuses_the_sender() {
    // The README's 400 body, byte for byte.
    let body = r#"{"success_request":{"add_info":{"src_addr":"..."}}}"#;
    let r = recipients(&["380989361131", "380671234567"], response(400, body));
    for r in &r {
        let e = recipient_error(r);
        assert_eq!(shape(e), ("invalid_sender", false, Some("src_addr")));
        assert!(e.message.contains("src_addr: ..."), "{}", e.message);
    }
}

#[test]
fn validation_of_other_fields() {
    let cases = [
        (
            r#"{"success_request":{"add_info":{"message":"Message is too long"}}}"#,
            "content_rejected",
            "message",
        ),
        (
            r#"{"success_request":{"add_info":{"integration_id":"Unknown"}}}"#,
            "invalid_request",
            "integration_id",
        ),
        (r#"{"success_request":{"add_info":{"balance":"0"}}}"#, "insufficient_funds", "balance"),
        (r#"{"success_request":{"add_info":{"id_sms":"wrong"}}}"#, "invalid_request", "id_sms"),
    ];
    for (body, code, field) in cases {
        let r = recipients(&["380989361131"], response(400, body));
        assert_eq!(shape(recipient_error(&r[0])), (code, false, Some(field)), "{body}");
    }
}

#[test]
fn a_400_naming_numbers_refuses_them_and_lets_the_others_retry() {
    let body = r#"{"success_request":{"add_info":{"380000000001":"Invalid phone number"}}}"#;
    let r = recipients(&["380989361131", "380000000001"], response(400, body));
    assert_eq!(shape(recipient_error(&r[0])), ("invalid_request", true, Some("400")));
    assert_eq!(shape(recipient_error(&r[1])), ("invalid_recipient", false, Some("Invalid phone number")));
}

#[test]
fn a_400_on_the_phone_field_blames_a_single_number_only() {
    let body = r#"{"success_request":{"add_info":{"phone":"Invalid phone number"}}}"#;
    let one = recipients(&["380989361131"], response(400, body));
    assert_eq!(shape(recipient_error(&one[0])), ("invalid_recipient", false, Some("Invalid phone number")));
    let two = recipients(&["380989361131", "380671234567"], response(400, body));
    for r in &two {
        assert_eq!(shape(recipient_error(r)), ("invalid_request", false, Some("phone")));
    }
}

#[test]
fn a_400_without_detail_is_an_invalid_request() {
    let named = r#"{"name":"...","message":"..."}"#; // the README's other error shape, byte for byte
    let e = whole_error(&["380989361131"], response(400, named));
    assert_eq!(shape(&e), ("invalid_request", false, Some("400")));
    let funds = r#"{"name":"Bad Request","message":"Insufficient funds on the balance"}"#;
    assert_eq!(whole_error(&["380989361131"], response(400, funds)).code, "insufficient_funds");
    let html = whole_error(&["380989361131"], response(400, "<html><body>Bad Request</body></html>"));
    assert_eq!(shape(&html), ("invalid_request", false, Some("400")));
    assert!(html.message.contains("<html>"), "{}", html.message);
    assert_eq!(whole_error(&["380989361131"], response(400, "")).code, "invalid_request");
}

#[test]
fn documented_http_errors_fail_the_whole_request() {
    let cases: [(u16, &str, bool); 8] = [
        (401, "auth", false),
        (403, "auth", false),
        (402, "insufficient_funds", false),
        (429, "throttled", true),
        (453, "duplicate", false),
        (500, "unavailable", true),
        (502, "unavailable", true),
        (503, "unavailable", true),
    ];
    for (status, code, retryable) in cases {
        let e = whole_error(&["380989361131", "380671234567"], response(status, ""));
        let provider_code = status.to_string();
        assert_eq!(shape(&e), (code, retryable, Some(provider_code.as_str())), "HTTP {status}");
    }
}

#[test]
fn an_auth_error_document_is_quoted() {
    let body = r#"{"name":"Unauthorized","message":"Your request was made with invalid credentials.","code":0,"status":401}"#;
    let e = whole_error(&["380989361131"], response(401, body));
    assert_eq!(shape(&e), ("auth", false, Some("401")));
    assert!(e.message.contains("invalid credentials"), "{}", e.message);
}

#[test]
fn throttling_always_asks_for_a_real_pause() {
    let delay = |r: HttpResponse| whole_error(&["380989361131"], r).retry_after_ms;
    assert_eq!(delay(response(429, "")), Some(5_000), "no Retry-After: a few seconds, not a tight loop");
    assert_eq!(delay(with_header(response(429, ""), "retry-after", "12")), Some(12_000));
    assert_eq!(delay(with_header(response(429, ""), "retry-after", "0")), Some(1_000), "never less than 1s");
    assert_eq!(
        delay(with_header(response(429, ""), "retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")),
        Some(5_000)
    );
    assert_eq!(delay(with_header(response(503, ""), "retry-after", "30")), Some(30_000));
    assert_eq!(delay(response(503, "")), None, "5xx: the host's own backoff");
}

#[test]
fn a_duplicate_is_final() {
    let e = whole_error(&["380989361131"], response(453, ""));
    assert_eq!(shape(&e), ("duplicate", false, Some("453")));
    assert_eq!(e.retry_after_ms, None);
    assert!(e.message.contains("2 minutes"), "{}", e.message);
}

#[test]
fn an_undocumented_status_is_a_plugin_error_with_a_snippet() {
    for status in [301, 404, 405, 418] {
        let e = whole_error(&["380989361131"], response(status, "<html><h1>Not Found</h1></html>"));
        let provider_code = status.to_string();
        assert_eq!(shape(&e), ("plugin_error", false, Some(provider_code.as_str())));
        assert!(e.message.contains("<html>"), "{}", e.message);
    }
}

// ---- status -------------------------------------------------------------------------------------

#[test]
fn documented_status_answer_is_still_pending() {
    let s = statuses(&["106"], response(200, TXT_STATUS_RESPONSE));
    assert_eq!(
        s,
        vec![StatusUpdate {
            reference: "106".into(),
            to: None,
            status: notifyd_plugin::wire::Status::Sent.into(),
            error: None
        }]
    );
}

#[test]
fn every_documented_status_word_maps() {
    let cases = [
        ("ENROUTE", "sent"),
        ("DELIVRD", "delivered"),
        ("EXPIRED", "expired"),
        ("UNDELIV", "undelivered"),
        ("REJECTD", "rejected"),
        ("ACCEPTD", "sent"),
        ("UNKNOWN", "sent"),
        ("DELETED", "undelivered"),
        ("delivrd", "delivered"),
        (" DELIVRD ", "delivered"),
    ];
    for (word, status) in cases {
        let body = json!({"success_request": {"info": {"106": word}}}).to_string();
        let s = statuses(&["106"], response(200, &body));
        assert_eq!((s.len(), s[0].reference.as_str(), s[0].status.as_str()), (1, "106", status), "{word}");
        if status != "rejected" {
            assert_eq!(s[0].error, None, "{word}");
        }
    }
    let body = r#"{"success_request":{"info":{"106":"REJECTD"}}}"#;
    let s = statuses(&["106"], response(200, body));
    assert_eq!(shape(s[0].error.as_ref().unwrap()), ("content_rejected", false, Some("REJECTD")));
}

#[test]
fn statuses_of_several_ids_and_ids_the_answer_leaves_out() {
    let body = r#"{"success_request":{"info":{"106":"DELIVRD","107":"UNDELIV","999":"DELIVRD"}}}"#;
    let s = statuses(&["106", "107", "108"], response(200, body));
    let got: Vec<(&str, &str)> = s.iter().map(|u| (u.reference.as_str(), u.status.as_str())).collect();
    assert_eq!(got, [("106", "delivered"), ("107", "undelivered")], "108 is left out, 999 not ours");
    let none = statuses(&["106"], response(200, r#"{"success_request":{"info":[]}}"#));
    assert!(none.is_empty());
}

#[test]
fn an_unknown_status_word_keeps_the_message_pending_and_names_the_word() {
    for (value, shown) in [(json!("QUEUED"), "QUEUED"), (json!(7), "7"), (json!(null), "null")] {
        let body = json!({"success_request": {"info": {"106": value}}}).to_string();
        let s = statuses(&["106"], response(200, &body));
        assert_eq!(s[0].status, "sent");
        assert_eq!(shape(s[0].error.as_ref().unwrap()), ("plugin_error", false, Some(shown)));
    }
    let object = r#"{"success_request":{"info":{"106":{"status":"DELIVRD"}}}}"#;
    assert_eq!(statuses(&["106"], response(200, object))[0].status, "delivered");
}

#[test]
fn status_errors_fail_the_query() {
    for (status, code) in [(401, "auth"), (429, "throttled"), (500, "unavailable"), (400, "invalid_request")]
    {
        let StatusResult::Failed { error } = status_result(&["106"], response(status, "")) else {
            panic!("HTTP {status}: expected a failure")
        };
        assert_eq!(error.code, code, "HTTP {status}");
    }
    let body = r#"{"success_request":{"add_info":{"id_sms":"wrong"}}}"#;
    let StatusResult::Failed { error } = status_result(&["x"], response(400, body)) else { panic!() };
    assert_eq!(shape(&error), ("invalid_request", false, Some("id_sms")));
}

// ---- balance ------------------------------------------------------------------------------------

#[test]
fn documented_balance_answer_in_its_printed_form() {
    assert_eq!(
        balance_result(response(200, TXT_BALANCE_RESPONSE)),
        BalanceResult::Balance { amount: 8111.17, currency: "UAH".into() }
    );
}

#[test]
fn readme_balance_answer_and_its_variants() {
    let readme = r#"{"success_request":{"info":{"money":"8111.1700","currency":"UAH"}}}"#;
    assert_eq!(
        balance_result(response(200, readme)),
        BalanceResult::Balance { amount: 8111.17, currency: "UAH".into() }
    );
    let numeric = r#"{"success_request":{"info":{"money":12.5,"currency":"EUR"}}}"#;
    assert_eq!(
        balance_result(response(200, numeric)),
        BalanceResult::Balance { amount: 12.5, currency: "EUR".into() }
    );
    let bare = r#"{"success_request":{"info":{"money":"-3.20"}}}"#;
    assert_eq!(
        balance_result(response(200, bare)),
        BalanceResult::Balance { amount: -3.2, currency: "UAH".into() }
    );
}

#[test]
fn balance_errors_and_answers_that_are_not_a_balance() {
    let BalanceResult::Failed { error } = balance_result(response(401, "")) else { panic!() };
    assert_eq!(shape(&error), ("auth", false, Some("401")));
    // The originator list (the .txt's example) where a balance was expected.
    let BalanceResult::Failed { error } = balance_result(response(200, TXT_ORIGINATOR_RESPONSE)) else {
        panic!()
    };
    assert_eq!(error.code, "plugin_error");
    for money in [r#""lots""#, "null", r#""NaN""#, r#""inf""#] {
        let body = format!(r#"{{"success_request":{{"info":{{"money":{money}}}}}}}"#);
        let BalanceResult::Failed { error } = balance_result(response(200, &body)) else { panic!("{body}") };
        assert_eq!(error.code, "plugin_error", "{body}");
    }
}

#[test]
fn documented_originator_answer_reads_as_a_list() {
    // No operation asks for alpha names; the answer is still read without trouble.
    let v = response::tests_support::lenient(TXT_ORIGINATOR_RESPONSE).unwrap();
    assert_eq!(v, json!({"success_request": {"info": ["test1", "test2"]}}));
}

// ---- hostile answers ----------------------------------------------------------------------------

fn hostile_bodies() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("blank", " \r\n ".into()),
        ("html", "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>".into()),
        ("truncated", r#"{"success_request":{"info":{"106":"3809"#.into()),
        ("unknown shape", r#"{"result":"ok"}"#.into()),
        ("success without info", r#"{"success_request":{}}"#.into()),
        ("error document with 200", r#"{"name":"Error","message":"Something"}"#.into()),
        ("not an object", r#"["106"]"#.into()),
        ("1 MiB", "x".repeat(1 << 20)),
        ("1 MiB of nesting", "[".repeat(1 << 20)),
        ("1 MiB inside JSON", format!(r#"{{"success_request":{{"info":{{"106":"{}"#, "9".repeat(1 << 20))),
    ]
}

#[test]
fn hostile_send_answers_are_plugin_errors_with_a_short_snippet() {
    for (what, body) in hostile_bodies() {
        let e = whole_error(&["380989361131"], response(200, &body));
        assert_eq!(shape(&e), ("plugin_error", false, None), "{what}");
        assert!(e.message.chars().count() < 200, "{what}: {} chars", e.message.chars().count());
        assert!(e.message.contains("HTTP 200"), "{what}: {}", e.message);
    }
    let e = whole_error(&["380989361131"], response(200, ""));
    assert!(e.message.contains("an empty body"), "{}", e.message);
}

#[test]
fn hostile_status_and_balance_answers_are_plugin_errors() {
    for (what, body) in hostile_bodies() {
        let StatusResult::Failed { error } = status_result(&["106"], response(200, &body)) else {
            panic!("{what}: expected a failure")
        };
        assert_eq!(error.code, "plugin_error", "{what}");
        assert!(error.message.chars().count() < 200, "{what}");
        let BalanceResult::Failed { error } = balance_result(response(200, &body)) else {
            panic!("{what}: expected a failure")
        };
        assert_eq!(error.code, "plugin_error", "{what}");
    }
}

#[test]
fn a_5xx_page_is_unavailable_with_a_snippet() {
    let e = whole_error(&["380989361131"], response(502, "<html><body>Bad Gateway</body></html>"));
    assert_eq!(shape(&e), ("unavailable", true, Some("502")));
    assert!(e.message.contains("Bad Gateway"), "{}", e.message);
    let huge = whole_error(&["380989361131"], response(500, &"y".repeat(1 << 20)));
    assert!(huge.message.chars().count() < 200);
}

#[test]
fn the_token_never_appears_in_an_error() {
    let echo = format!("<html>invalid token {TOKEN}</html>");
    let bodies = [
        (200, echo.clone()),
        (500, echo.clone()),
        (404, echo.clone()),
        (400, echo.clone()),
        (401, format!(r#"{{"name":"Unauthorized","message":"token {TOKEN} revoked"}}"#)),
        (400, format!(r#"{{"success_request":{{"add_info":{{"src_addr":"{TOKEN}"}}}}}}"#)),
        (200, format!(r#"{{"success_request":{{"info":[],"add_info":{{"380989361131":"{TOKEN}"}}}}}}"#)),
    ];
    for (status, body) in bodies {
        let text = serde_json::to_string(&send_result(&["380989361131"], response(status, &body))).unwrap();
        assert!(!text.contains(TOKEN), "HTTP {status}: {text}");
        assert!(text.contains("***"), "HTTP {status}: the echo is masked, not dropped: {text}");
        let text = serde_json::to_string(&status_result(&["106"], response(status, &body))).unwrap();
        assert!(!text.contains(TOKEN), "status, HTTP {status}: {text}");
        let text = serde_json::to_string(&balance_result(response(status, &body))).unwrap();
        assert!(!text.contains(TOKEN), "balance, HTTP {status}: {text}");
    }
    let status_echo = format!(r#"{{"success_request":{{"info":{{"106":"{TOKEN}"}}}}}}"#);
    let text = serde_json::to_string(&status_result(&["106"], response(200, &status_echo))).unwrap();
    assert!(!text.contains(TOKEN), "{text}");
}

// ---- the README's mapping tables match the code ---------------------------------------------------

#[test]
fn readme_lists_every_status_word_and_field() {
    let readme = include_str!("../README.md");
    for (word, status) in mapping::STATUS_WORDS {
        let row = format!("| `{word}` | `{status}` |");
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
    for (field, code) in mapping::FIELD_ERRORS {
        let row = format!("| `add_info` names the field `{field}` | `{code}` |");
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}

// ---- properties ---------------------------------------------------------------------------------

/// Bodies that look like SMS Club's answers, with random parts, and plain random text.
fn body_strategy() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        "[A-Z]{0,8}".prop_map(|s| json!(s)),
        "[0-9+ ]{0,14}".prop_map(|s| json!(s)),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                "(info|add_info|money|currency|status|[0-9]{1,12}|src_addr|phone)",
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        value.clone().prop_map(|v| json!({"success_request": v}).to_string()),
        value.prop_map(|v| v.to_string()),
        ".{0,200}",
        // Cut-off JSON.
        (any::<prop::sample::Index>(), Just(TXT_BALANCE_RESPONSE))
            .prop_map(|(i, s)| s[..i.index(s.len())].to_owned()),
    ]
}

proptest! {
    #[test]
    fn answers_never_panic_and_stay_well_formed(status in 100u16..600, body in body_strategy()) {
        let to = ["380989361131", "380671234567"];
        match send_result(&to, response(status, &body)) {
            SendResult::Recipients { recipients } => {
                prop_assert_eq!(recipients.len(), to.len());
                for r in &recipients {
                    prop_assert!(r.error.is_some() != r.provider_message_id.is_some(), "{:?}", r);
                    if let Some(e) = &r.error {
                        prop_assert!(e.code.is_operation_code(), "{:?}", e);
                    }
                }
            }
            SendResult::Failed { error } => {
                prop_assert!(error.code.is_operation_code(), "{:?}", error);
                prop_assert!(error.message.chars().count() < 300);
            }
        }
        match status_result(&["106", "7"], response(status, &body)) {
            StatusResult::Statuses { statuses } => {
                for s in &statuses {
                    let known = ["sent", "delivered", "undelivered", "expired", "rejected"];
                    prop_assert!(known.contains(&s.status.as_str()), "{:?}", s);
                }
            }
            StatusResult::Failed { error } => prop_assert!(error.code.is_operation_code()),
        }
        if let BalanceResult::Balance { amount, .. } = balance_result(response(status, &body)) {
            prop_assert!(amount.is_finite());
        }
    }

    #[test]
    fn arbitrary_text_gives_well_formed_results(status in any::<u16>(), body in any::<String>()) {
        let sent = send_result(&["380989361131"], response(status, &body));
        prop_assert_eq!(check_send_result(&sent, &["380989361131"]), Ok(()));
        let polled = status_result(&["106"], response(status, &body));
        prop_assert_eq!(check_status_result(&polled, &["106"]), Ok(()));
        prop_assert_eq!(check_balance_result(&balance_result(response(status, &body))), Ok(()));
    }
}
