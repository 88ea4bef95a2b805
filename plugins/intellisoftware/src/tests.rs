//! The plugin against every answer the provider documents (byte for byte as in
//! `intellisoftware.txt` and the providers README), hostile answers, the requests it builds, and
//! the delivery reports it reads.

use super::*;
use crate::response::{Answer, Line, Outcome, form_pairs, parse_answer};
use notifyd_plugin::sdk::testing::{
    self, done, exchange, http_step, recipients, response, send_input as input, whole_error, with_header,
};
use notifyd_plugin::wire::{HttpRequest, HttpResponse, RecipientResult, StatusUpdate};
use proptest::prelude::*;
use std::collections::BTreeMap;

const USER: &str = "acme-user";
const PASSWORD: &str = "s3cret&pw=1";

fn init(settings: serde_json::Value, base_url: Option<&str>) -> InstanceInit {
    testing::init("intellisoftware", base_url, settings)
}

fn plugin_with(settings: serde_json::Value) -> IntelliSoftware {
    IntelliSoftware::new(init(settings, None)).expect("valid settings")
}

fn plugin() -> IntelliSoftware {
    plugin_with(serde_json::json!({"username": USER, "password": PASSWORD}))
}

/// The first step of a send: the request the plugin asks for.
fn request_of(p: &IntelliSoftware, input: &SendInput) -> HttpRequest {
    let (http, state) = http_step(p.send(input, None));
    assert_eq!(state, "send");
    http
}

/// The body's parameters, decoded, in order.
fn params(req: &HttpRequest) -> Vec<(String, String)> {
    form_pairs(&req.body).collect()
}

fn param(req: &HttpRequest, name: &str) -> Option<String> {
    params(req).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The second step of a send: the result for `response`.
fn answer(p: &IntelliSoftware, input: &SendInput, response: HttpResponse) -> SendResult {
    done(p.send(input, Some(&exchange("send", response))))
}

fn assert_sent(r: &RecipientResult, to: &str, id: &str) {
    assert_eq!(r.to, to);
    assert_eq!(r.provider_message_id.as_deref(), Some(id), "{r:?}");
    assert_eq!(r.tracking.as_deref(), Some(id), "{r:?}");
    assert!(r.error.is_none(), "{r:?}");
}

fn assert_error(e: &ProviderError, code: &str, retryable: bool, provider_code: Option<&str>) {
    assert_eq!(e.code, code, "{e:?}");
    assert_eq!(e.retryable, retryable, "{e:?}");
    assert_eq!(e.provider_code.as_deref(), provider_code, "{e:?}");
    assert_no_secret(&e.message);
}

fn assert_no_secret(message: &str) {
    for secret in [USER, PASSWORD, "s3cret%26pw%3D1", "s3cret"] {
        assert!(!message.contains(secret), "a credential leaks into {message:?}");
    }
}

// ---- describe and settings ---------------------------------------------------------------------

#[test]
fn describe_names_the_plugin_and_its_limits() {
    // No polling endpoint: max_status_refs 0, no CAP_STATUS.
    testing::assert_describes::<IntelliSoftware>(
        CAP_SEND | CAP_BALANCE | CAP_CALLBACK,
        serde_json::json!({"name": "intellisoftware", "version": env!("CARGO_PKG_VERSION"),
            "max_recipients": 100, "max_status_refs": 0, "alphabet": "unicode",
            "default_base_url": "https://www.intellisoftware.co.uk"}),
    );
}

#[test]
fn settings_refuse_unknown_missing_and_empty_keys_by_name() {
    let cases = [
        (serde_json::json!({"username": USER, "password": PASSWORD, "tokn": "x"}), "tokn"),
        (serde_json::json!({"password": PASSWORD}), "username"),
        (serde_json::json!({"username": USER}), "password"),
        (serde_json::json!({"username": " ", "password": PASSWORD}), "username"),
        (serde_json::json!({"username": USER, "password": ""}), "password"),
        (serde_json::json!({"username": USER, "password": PASSWORD, "unicode": "ucs2"}), "ucs2"),
        (serde_json::json!({"username": USER, "password": 5}), "`password` must be a string"),
    ];
    for (settings, named) in cases {
        let err = IntelliSoftware::new(init(settings.clone(), None)).unwrap_err();
        assert_eq!(err.code, "invalid_settings", "{settings}");
        assert!(err.message.contains(named), "{settings}: {}", err.message);
        assert!(!err.message.contains(PASSWORD), "{}", err.message);
    }
}

#[test]
fn a_password_of_the_wrong_type_is_not_quoted() {
    for password in
        [serde_json::json!(12345678), serde_json::json!(["hunter22"]), serde_json::json!({"a": "hunter22"})]
    {
        let settings = serde_json::json!({"username": USER, "password": password});
        let err = IntelliSoftware::new(init(settings, None)).unwrap_err();
        assert_eq!(err.code, "invalid_settings");
        assert!(!err.message.contains("12345678") && !err.message.contains("hunter22"), "{}", err.message);
        assert!(err.message.contains("`password` must be a string"), "{}", err.message);
    }
}

#[test]
fn settings_check_the_base_url_without_quoting_it() {
    let settings = serde_json::json!({"username": USER, "password": PASSWORD});
    for bad in ["ftp://x", "www.intellisoftware.co.uk", "https://", ""] {
        let err = IntelliSoftware::new(init(settings.clone(), Some(bad))).unwrap_err();
        assert_eq!(err.code, "invalid_settings");
        assert!(err.message.contains("base_url"), "{}", err.message);
    }
    assert!(IntelliSoftware::new(init(settings, Some("HTTP://127.0.0.1:9"))).is_ok());
}

#[test]
fn the_password_never_shows_in_debug_output() {
    let p = plugin();
    let shown = format!("{p:?}");
    assert!(!shown.contains(PASSWORD) && shown.contains("***"), "{shown}");
}

// ---- requests -----------------------------------------------------------------------------------

#[test]
fn send_posts_the_documented_parameters_form_encoded() {
    let p = plugin();
    let mut i = input(&["447710123450"], "Your code is 1234");
    i.from = Some("MyShop".into());
    let req = request_of(&p, &i);
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "https://www.intellisoftware.co.uk/smsgateway/sendmsg.aspx");
    assert_eq!(
        req.headers,
        vec![("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())]
    );
    assert_eq!(
        req.body,
        "username=acme-user&password=s3cret%26pw%3D1&to=447710123450&text=Your%20code%20is%201234\
         &from=MyShop&maxconcat=1"
    );
    assert!(!req.url.contains(PASSWORD), "credentials stay out of the URL");
}

#[test]
fn several_recipients_go_comma_separated_in_one_request() {
    let req = request_of(&plugin(), &input(&["44771012345", "44771054321"], "hi"));
    assert_eq!(param(&req, "to").as_deref(), Some("44771012345,44771054321"));
    assert!(req.body.contains("to=44771012345%2C44771054321"), "{}", req.body);
    assert_eq!(param(&req, "from"), None, "no sender: the account's default");
}

#[test]
fn maxconcat_follows_the_segment_count() {
    let mut i = input(&["447710123450"], &"x".repeat(400));
    i.segments = 3;
    assert_eq!(param(&request_of(&plugin(), &i), "maxconcat").as_deref(), Some("3"));
    i.segments = 0;
    assert_eq!(param(&request_of(&plugin(), &i), "maxconcat").as_deref(), Some("1"));
}

#[test]
fn unicode_texts_go_as_type_2_hex_by_default() {
    let mut i = input(&["447710123450"], "Привет 😀");
    i.encoding = "ucs2".into();
    i.segments = 1;
    let req = request_of(&plugin(), &i);
    let ps = params(&req);
    let names: Vec<&str> = ps.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["username", "password", "to", "type", "hex", "maxconcat"]);
    assert_eq!(param(&req, "type").as_deref(), Some("2"));
    assert_eq!(param(&req, "hex").as_deref(), Some("041f044004380432043504420020d83dde00"));
    assert_eq!(param(&req, "text"), None);
}

#[test]
fn unicode_texts_go_as_utf8_text_when_configured() {
    let p = plugin_with(serde_json::json!({"username": USER, "password": PASSWORD, "unicode": "text"}));
    let mut i = input(&["447710123450"], "Grüße ç");
    i.encoding = "ucs2".into();
    let req = request_of(&p, &i);
    assert!(req.body.contains("&text=Gr%C3%BC%C3%9Fe%20%C3%A7&"), "{}", req.body);
    assert_eq!(param(&req, "type"), None);
    assert_eq!(param(&req, "hex"), None);
}

#[test]
fn gsm_texts_go_as_text_even_with_the_extension_table() {
    let req = request_of(&plugin(), &input(&["447710123450"], "Total: 5€ {ok}"));
    assert_eq!(param(&req, "text").as_deref(), Some("Total: 5€ {ok}"));
    assert_eq!(param(&req, "type"), None);
}

#[test]
fn the_base_url_path_prefix_is_kept() {
    let settings = serde_json::json!({"username": USER, "password": PASSWORD});
    let p = IntelliSoftware::new(init(settings, Some("http://proxy.example/intelli/"))).unwrap();
    assert_eq!(
        request_of(&p, &input(&["447710123450"], "hi")).url,
        "http://proxy.example/intelli/smsgateway/sendmsg.aspx"
    );
    let Ok(Step::Http { http, state, .. }) = p.balance(&serde_json::Value::Null, None) else { panic!() };
    assert_eq!(state, "balance");
    assert_eq!(http.url, "http://proxy.example/intelli/smsgateway/getbalance.aspx");
    assert_eq!(http.method, "POST");
    assert_eq!(http.body, "username=acme-user&password=s3cret%26pw%3D1");
}

#[test]
fn recipients_not_in_normal_form_are_refused_before_sending() {
    for to in [vec![], vec!["44 7710"], vec!["+447710123450"], vec!["4477,10"]] {
        let err = plugin().send(&input(&to, "hi"), None).unwrap_err();
        assert_eq!(err.code, "plugin_error", "{to:?}");
    }
    let many: Vec<String> = (0..101).map(|n| format!("4477101{n:05}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(plugin().send(&input(&many, "hi"), None).is_err());
    assert!(plugin().send(&input(&many[..100], "hi"), None).is_ok());
}

// ---- documented send answers ---------------------------------------------------------------------

#[test]
fn documented_single_recipient_success() {
    let p = plugin();
    let i = input(&["44771012345"], "hi");
    for body in ["ID:10011000000000000001", "ID: 10011000000000000001", "ID:10011000000000000001\r\n"] {
        let r = recipients(answer(&p, &i, response(200, body)));
        assert_eq!(r.len(), 1);
        assert_sent(&r[0], "44771012345", "10011000000000000001");
    }
}

#[test]
fn documented_multi_recipient_success() {
    let p = plugin();
    let i = input(&["44771012345", "44771054321"], "hi");
    let body = "44771012345,ID:10011000000000000001\r\n44771054321,ID:10011000000000000001\r\n";
    let r = recipients(answer(&p, &i, response(200, body)));
    assert_sent(&r[0], "44771012345", "10011000000000000001");
    assert_sent(&r[1], "44771054321", "10011000000000000001");
}

#[test]
fn multi_recipient_answer_with_an_error_line() {
    let p = plugin();
    let i = input(&["44771012345", "44771054321"], "hi");
    let body = "44771012345,ID:10011000000000000001\n44771054321,ERR:INVALID_NUMBER\n";
    let r = recipients(answer(&p, &i, response(200, body)));
    assert_sent(&r[0], "44771012345", "10011000000000000001");
    assert_eq!(r[1].to, "44771054321");
    assert_eq!(r[1].provider_message_id, None);
    assert_error(r[1].error.as_ref().unwrap(), "invalid_recipient", false, Some("INVALID_NUMBER"));
}

#[test]
fn answer_numbers_are_matched_after_normalisation() {
    let p = plugin();
    let i = input(&["447700900123", "4915171112233", "33612345678", "07700900999"], "hi");
    // Another order, `+` and `00` prefixes, a space after `ID:`, a country code added to a
    // national number, and a line for a number that was not asked for.
    let body = "+4915171112233,ID: 77\r\n0033 6 12 34 56 78,ID:77\r\n447700900999,ERR:INVALID_NUMBER\r\n\
                447700900123,ID:77\r\n449999999999,ID:77\r\n";
    let r = recipients(answer(&p, &i, response(200, body)));
    assert_sent(&r[0], "447700900123", "77");
    assert_sent(&r[1], "4915171112233", "77");
    assert_sent(&r[2], "33612345678", "77");
    assert_error(r[3].error.as_ref().unwrap(), "invalid_recipient", false, Some("INVALID_NUMBER"));
}

#[test]
fn a_recipient_missing_from_the_answer_gets_plugin_error() {
    let p = plugin();
    let i = input(&["44771012345", "44771054321"], "hi");
    let r = recipients(answer(&p, &i, response(200, "44771012345,ID:5\n")));
    assert_sent(&r[0], "44771012345", "5");
    assert_error(r[1].error.as_ref().unwrap(), "plugin_error", false, None);
    assert!(r[1].error.as_ref().unwrap().message.contains("no line for this recipient"));
}

#[test]
fn a_cut_answer_keeps_the_complete_lines() {
    let p = plugin();
    let i = input(&["44771012345", "44771054321"], "hi");
    let r = recipients(answer(&p, &i, response(200, "44771012345,ID:5\n4477105")));
    assert_sent(&r[0], "44771012345", "5");
    assert_eq!(r[1].error.as_ref().unwrap().code, "plugin_error");
}

#[test]
fn an_ambiguous_suffix_match_is_not_guessed() {
    // Both recipients end in the same 10 digits, the line matches either: neither gets it.
    let p = plugin();
    let i = input(&["17700900123", "447700900123"], "hi");
    let lines = vec![Line { number: "867700900123".into(), outcome: Outcome::Id("9".into()) }];
    assert_eq!(response::match_lines(&i.to, &lines), vec![None, None]);
    let r = recipients(answer(&p, &i, response(200, "867700900123,ID:9")));
    assert!(r.iter().all(|r| r.error.as_ref().is_some_and(|e| e.code == "plugin_error")));
}

#[test]
fn a_single_id_for_several_recipients_applies_to_all() {
    // The document's single-line form is for one recipient; should the gateway use it for a
    // whole submission, the id "applies to the whole submission".
    let r =
        recipients(answer(&plugin(), &input(&["44771012345", "44771054321"], "hi"), response(200, "ID:42")));
    assert_sent(&r[0], "44771012345", "42");
    assert_sent(&r[1], "44771054321", "42");
}

/// Every documented `ERR:` word, byte for byte, as a whole-submission answer.
#[test]
fn documented_error_words_map_as_the_table_says() {
    let cases = [
        ("ERR:LOGIN_INVALID", "auth", false),
        ("ERR:INSUFFICIENT_CREDIT", "insufficient_funds", false),
        ("ERR:NO_XXXXXXXXXXX", "invalid_request", false),
        ("ERR:NO_TO", "invalid_request", false),
        ("ERR:NO_TEXT", "invalid_request", false),
        ("ERR:NO_USERNAME", "auth", false),
        ("ERR:NO_PASSWORD", "auth", false),
        ("ERR:INVALID_NUMBER", "invalid_recipient", false),
        ("ERR:INVALID_REQUEST", "invalid_request", false),
        ("ERR:GATEWAY_ERROR", "unavailable", true),
        ("ERR:INTERNAL_ERROR", "unavailable", true),
        ("ERR:TOO_MANY_NUMBERS", "invalid_request", false),
        ("ERR:MSGID_INVALID", "invalid_request", false),
        ("ERR:PARAMETER_MISSING", "invalid_request", false),
        ("ERR:PARAMETER_INVALID", "invalid_request", false),
        ("ERR:SOMETHING_UNDOCUMENTED", "plugin_error", false),
    ];
    let p = plugin();
    let i = input(&["44771012345"], "hi");
    for (body, code, retryable) in cases {
        let word = &body[4..];
        for variant in [body.to_owned(), format!("{body}\r\n"), format!("{body} Unable to process request")] {
            let e = whole_error(answer(&p, &i, response(200, &variant)));
            assert_error(&e, code, retryable, Some(word));
            assert!(e.message.contains(body), "{variant}: {}", e.message);
            assert_eq!(e.retry_after_ms, None);
        }
    }
}

#[test]
fn error_words_are_read_in_any_case_and_per_line() {
    let p = plugin();
    let e = whole_error(answer(&p, &input(&["44771012345"], "hi"), response(200, "err:login_invalid")));
    assert_error(&e, "auth", false, Some("login_invalid"));
    let i = input(&["44771012345", "44771054321"], "hi");
    let body = "44771012345,ERR:GATEWAY_ERROR\n44771054321,ERR:NEW_WORD\n";
    let r = recipients(answer(&p, &i, with_header(response(200, body), "retry-after", "30")));
    let e0 = r[0].error.as_ref().unwrap();
    assert_error(e0, "unavailable", true, Some("GATEWAY_ERROR"));
    assert_eq!(e0.retry_after_ms, Some(30_000), "a retryable error honours Retry-After");
    let e1 = r[1].error.as_ref().unwrap();
    assert_error(e1, "plugin_error", false, Some("NEW_WORD"));
    assert_eq!(e1.retry_after_ms, None);
}

// ---- HTTP statuses and hostile answers ---------------------------------------------------------------

#[test]
fn http_429_is_throttled_with_the_given_delay() {
    let p = plugin();
    let i = input(&["44771012345"], "hi");
    let e = whole_error(answer(&p, &i, with_header(response(429, "slow down"), "retry-after", "7")));
    assert_error(&e, "throttled", true, Some("429"));
    assert_eq!(e.retry_after_ms, Some(7000));
    // Even when the body looks like an answer: the status is explicit.
    let e = whole_error(answer(&p, &i, response(429, "ERR:GATEWAY_ERROR")));
    assert_error(&e, "throttled", true, Some("429"));
    assert_eq!(e.retry_after_ms, None);
}

#[test]
fn http_errors_without_a_readable_body_follow_the_status() {
    let p = plugin();
    let i = input(&["44771012345"], "hi");
    let html = "<html><head><title>503 Service Unavailable</title></head><body>down</body></html>";
    let e = whole_error(answer(&p, &i, with_header(response(503, html), "retry-after", "2")));
    assert_error(&e, "unavailable", true, Some("503"));
    assert_eq!(e.retry_after_ms, Some(2000));
    assert!(e.message.contains("<html><head><title>503"), "{}", e.message);
    let e = whole_error(answer(&p, &i, response(401, "Unauthorized")));
    assert_error(&e, "auth", false, Some("401"));
    let e = whole_error(answer(&p, &i, response(404, "<html>Not Found</html>")));
    assert_error(&e, "plugin_error", false, None);
    assert!(e.message.contains("HTTP 404") && e.message.contains("Not Found"), "{}", e.message);
}

#[test]
fn a_documented_body_wins_over_an_error_status() {
    let p = plugin();
    let i = input(&["44771012345"], "hi");
    let e = whole_error(answer(&p, &i, response(500, "ERR:INTERNAL_ERROR")));
    assert_error(&e, "unavailable", true, Some("INTERNAL_ERROR"));
    let e = whole_error(answer(&p, &i, response(401, "ERR:LOGIN_INVALID")));
    assert_error(&e, "auth", false, Some("LOGIN_INVALID"));
}

#[test]
fn hostile_answers_are_classified_with_a_short_snippet() {
    let p = plugin();
    let i = input(&["44771012345", "44771054321"], "hi");
    let huge = "x".repeat(1 << 20);
    let huge_lines = "44771012345,ID:\n".repeat(70_000);
    let cases: Vec<(u16, &str, &str, &str)> = vec![
        (200, "", "plugin_error", "an empty body"),
        (200, "  \r\n ", "plugin_error", "an empty body"),
        (
            200,
            "<!DOCTYPE html><html><body>Server Error in '/' Application.</body></html>",
            "plugin_error",
            "<!DOCTYPE html>",
        ),
        (502, "<html><body>Bad Gateway</body></html>", "unavailable", "Bad Gateway"),
        (200, "{\"id\":", "plugin_error", "{\"id\":"),
        (200, "OK", "plugin_error", "OK"),
        (200, "ID:", "plugin_error", "ID:"),
        (200, "ID:<script>", "plugin_error", "ID:<script>"),
        (200, "ERR:", "plugin_error", "ERR:"),
        (200, "\u{feff}", "plugin_error", "an empty body"),
        (200, &huge, "plugin_error", "xxxx"),
        (200, &huge_lines, "plugin_error", "44771012345,ID:"),
    ];
    for (status, body, code, quoted) in cases {
        let e = whole_error(answer(&p, &i, response(status, body)));
        assert_eq!(e.code, code, "{status} {:.40}", body);
        assert!(e.message.contains(quoted), "{:.40}: {}", body, e.message);
        assert!(e.message.chars().count() < 160, "a short message: {}", e.message);
        assert!(!e.message.contains('\n'), "one line: {}", e.message);
    }
}

#[test]
fn a_body_with_the_credentials_is_quoted_masked() {
    let p = plugin();
    let i = input(&["44771012345"], "hi");
    let echoes = [
        format!("<html>Invalid login {USER} / {PASSWORD}</html>"),
        "<html>username=acme-user&password=s3cret%26pw%3D1</html>".to_owned(),
        format!("{}{PASSWORD}", "y".repeat(60)),
    ];
    for body in echoes {
        for status in [200, 400, 500, 503] {
            let e = whole_error(answer(&p, &i, response(status, &body)));
            assert_no_secret(&e.message);
            assert!(e.message.contains("***"), "{}", e.message);
        }
    }
}

#[test]
fn an_exchange_with_a_foreign_state_is_refused() {
    let ex = Exchange::answered("balance", response(200, "ID:1"));
    let err = plugin().send(&input(&["44771012345"], "hi"), Some(&ex)).unwrap_err();
    assert_eq!(err.code, "plugin_error");
    let ex = Exchange::answered("send", response(200, "BALANCE:1"));
    assert!(plugin().balance(&serde_json::Value::Null, Some(&ex)).is_err());
}

#[test]
fn parse_answer_reads_both_forms() {
    assert_eq!(parse_answer("ID:5"), Some(Answer::Whole(Outcome::Id("5".into()))));
    assert_eq!(parse_answer("ERR:NO_TO"), Some(Answer::Whole(Outcome::Err("NO_TO".into()))));
    assert_eq!(
        parse_answer("44771012345,ID:5\r\n"),
        Some(Answer::Lines(vec![Line { number: "44771012345".into(), outcome: Outcome::Id("5".into()) }]))
    );
    assert_eq!(parse_answer("<html>"), None);
    assert_eq!(parse_answer("abc,ID:5"), None);
}

// ---- balance --------------------------------------------------------------------------------------

fn balance_of(p: &IntelliSoftware, response: HttpResponse) -> BalanceResult {
    let ex = Exchange::answered("balance", response);
    match p.balance(&serde_json::Value::Null, Some(&ex)) {
        Ok(Step::Done { done }) => done,
        other => panic!("expected a result, got {other:?}"),
    }
}

#[test]
fn balance_reads_credits_and_errors() {
    let p = plugin();
    for (body, amount) in [("BALANCE:1234", 1234.0), ("BALANCE: 12.5\r\n", 12.5), ("balance:0", 0.0)] {
        assert_eq!(
            balance_of(&p, response(200, body)),
            BalanceResult::Balance { amount, currency: "credits".into() },
            "{body}"
        );
    }
    let failed = |r: BalanceResult| match r {
        BalanceResult::Failed { error } => error,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_error(
        &failed(balance_of(&p, response(200, "ERR:LOGIN_INVALID"))),
        "auth",
        false,
        Some("LOGIN_INVALID"),
    );
    assert_error(&failed(balance_of(&p, response(429, ""))), "throttled", true, Some("429"));
    assert_error(&failed(balance_of(&p, response(503, "<html>"))), "unavailable", true, Some("503"));
    for garbage in ["", "BALANCE:", "BALANCE:lots", "BALANCE:NaN", "<html>", "BALANCE:inf"] {
        let e = failed(balance_of(&p, response(200, garbage)));
        assert_error(&e, "plugin_error", false, None);
    }
}

// ---- delivery reports (callback) ------------------------------------------------------------------

fn report(body: &str, query: &str) -> Result<CallbackResult, ProviderError> {
    let input = CallbackInput {
        method: "POST".into(),
        path: String::new(),
        query: query.into(),
        headers: [("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned())].into(),
        body: body.into(),
    };
    match plugin().callback(&input, None) {
        Ok(Step::Done { done }) => Ok(done),
        Ok(other) => panic!("expected a result, got {other:?}"),
        Err(e) => Err(e),
    }
}

fn update(body: &str) -> StatusUpdate {
    let result = report(body, "").unwrap_or_else(|e| panic!("{body}: {e:?}"));
    assert_eq!(result.response_status, 200);
    assert_eq!(result.updates.len(), 1);
    result.updates.into_iter().next().unwrap()
}

/// Every status code the providers README lists.
#[test]
fn every_documented_report_status_maps_as_the_table_says() {
    let cases: [(u32, &str, Option<&str>); 11] = [
        (0, "sent", None),
        (1, "sent", None),
        (2, "sent", None),
        (3, "sent", None),
        (4, "delivered", None),
        (5, "rejected", Some("invalid_request")),
        (6, "undelivered", None),
        (7, "undelivered", Some("route_closed")),
        (8, "expired", None),
        (11, "delivered", None),
        (12, "undelivered", Some("blocked_recipient")),
    ];
    for (code, status, error) in cases {
        let u = update(&format!("msgid=10011000000000000001&status={code}&toaddr=447710123450"));
        assert_eq!(u.reference, "10011000000000000001");
        assert_eq!(u.to.as_deref(), Some("447710123450"));
        assert_eq!(u.status, status, "status {code}");
        assert_eq!(u.error.as_ref().map(|e| e.code.as_str()), error, "status {code}");
        if let Some(e) = &u.error {
            assert_eq!(e.provider_code.as_deref(), Some(code.to_string().as_str()));
            assert!(!e.retryable);
        }
    }
}

#[test]
fn reports_are_read_leniently() {
    // `+`/`00` and spaces in the number, the fields in any order and case, extra fields.
    let u = update("toaddr=%2B44+7710+123450&Status=+4+&MSGID=abc-1&fromaddr=MyShop&time=2024");
    assert_eq!(
        (u.reference.as_str(), u.to.as_deref(), u.status.as_str()),
        ("abc-1", Some("447710123450"), "delivered")
    );
    assert_eq!(update("msgid=1&status=4&toaddr=00447710123450").to.as_deref(), Some("447710123450"));
    assert_eq!(update("msgid=1&status=4").to, None, "toaddr is optional");
    assert_eq!(update("msgid=1&status=4&toaddr=unknown").to, None);
    // In the query string (a GET), too.
    let from_query = report("", "msgid=7&status=8&toaddr=447710123450").unwrap();
    assert_eq!(from_query.updates[0].status, "expired");
    // Undocumented codes leave the status unchanged, and the report is acknowledged.
    for code in ["9", "10", "13", "99", "-1"] {
        let u = update(&format!("msgid=1&status={code}"));
        assert_eq!((u.status.as_str(), u.error), ("sent", None), "status {code}");
    }
}

#[test]
fn garbage_reports_are_errors() {
    for body in [
        "",
        "hello",
        "status=4&toaddr=447710123450",
        "msgid=&status=4",
        "msgid=1",
        "msgid=1&status=delivered",
        "msgid=1&status=4.0",
        "msgid=%3Cscript%3E&status=4",
        "{\"msgid\":\"1\",\"status\":4}",
    ] {
        let err = report(body, "").unwrap_err();
        assert_eq!(err.code, "invalid_request", "{body}");
        assert!(err.message.starts_with("not an IntelliSoftware delivery report"), "{}", err.message);
    }
    let long_id = format!("msgid={}&status=4", "9".repeat(65));
    assert!(report(&long_id, "").is_err());
}

#[test]
fn a_callback_never_asks_for_an_exchange() {
    let input = CallbackInput {
        method: "POST".into(),
        path: String::new(),
        query: String::new(),
        headers: BTreeMap::new(),
        body: "msgid=1&status=4".into(),
    };
    let ex = Exchange::answered("x", response(200, ""));
    assert!(plugin().callback(&input, Some(&ex)).is_err());
}

// ---- properties ---------------------------------------------------------------------------------

/// Bodies that look like answers, to reach deep into the parser, plus arbitrary text.
fn body_strategy() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "(\\+|00)?[0-9 ]{0,16},(ID|id|ERR|err): ?[A-Za-z0-9_<>]{0,12}",
        "(ID|ERR|BALANCE):[ -~]{0,20}",
        "\\PC{0,40}",
    ];
    prop_oneof![
        prop::collection::vec(line, 0..8).prop_map(|l| l.join("\r\n")),
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #[test]
    fn send_parsing_never_panics_and_answers_every_recipient(
        status in 0u16..1000,
        body in body_strategy(),
        retry_after in proptest::option::of("[ -~]{0,8}"),
        n in 1usize..5,
    ) {
        let p = plugin();
        let to: Vec<String> = (0..n).map(|k| format!("4477101234{k:02}")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let i = input(&to, "hi");
        let mut r = response(status, &body);
        if let Some(v) = retry_after {
            r = with_header(r, "retry-after", &v);
        }
        match answer(&p, &i, r) {
            SendResult::Recipients { recipients } => {
                prop_assert_eq!(recipients.len(), n);
                for (r, to) in recipients.iter().zip(&to) {
                    prop_assert_eq!(&r.to, to);
                    prop_assert!(r.provider_message_id.is_some() != r.error.is_some());
                    if let Some(e) = &r.error { assert_no_secret(&e.message); }
                }
            }
            SendResult::Failed { error } => {
                assert_no_secret(&error.message);
                prop_assert!(error.message.chars().count() < 200);
            }
        }
    }

    #[test]
    fn balance_parsing_never_panics(status in 0u16..1000, body in body_strategy()) {
        if let BalanceResult::Failed { error } = balance_of(&plugin(), response(status, &body)) {
            assert_no_secret(&error.message);
        }
    }

    #[test]
    fn report_parsing_never_panics(body in body_strategy(), query in "\\PC{0,40}") {
        if let Ok(result) = report(&body, &query) {
            prop_assert_eq!(result.updates.len(), 1);
            prop_assert_eq!(result.response_status, 200);
        }
    }

    #[test]
    fn well_formed_reports_round_trip(id in "[A-Za-z0-9_.-]{1,64}", code in 0u32..20, to in "[1-9][0-9]{7,14}") {
        let u = update(&format!("msgid={id}&status={code}&toaddr={to}"));
        prop_assert_eq!(u.reference, id);
        prop_assert_eq!(u.to, Some(to));
    }
}
