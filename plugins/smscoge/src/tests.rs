//! The plugin driven the way the host drives it: each documented answer of smsco.ge's API
//! document (and of `shared/providers/README.md`), byte for byte, plus hostile ones.

use super::*;
use notifyd_plugin::sdk::testing::{self, form_params, response, send_input as input};
use notifyd_plugin::wire::{HttpRequest, HttpResponse};
use proptest::prelude::*;
use std::collections::BTreeMap;

const PASSWORD: &str = "s3cr&t pw";

fn init(base_url: Option<&str>, settings: serde_json::Value) -> InstanceInit {
    testing::init("smscoge", base_url, settings)
}

fn provider_with(extra: serde_json::Value) -> Smscoge {
    let mut settings = serde_json::json!({"username": "acme", "password": PASSWORD});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        settings[k] = v;
    }
    Smscoge::new(init(Some("https://proxy.example/smsco/"), settings)).unwrap()
}

fn provider() -> Smscoge {
    provider_with(serde_json::json!({}))
}

/// The query parameters of a request's URL, decoded, in order.
fn params(http: &HttpRequest) -> Vec<(String, String)> {
    form_params(&http.url)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The first step of a send: the request and its state.
fn first(p: &Smscoge, input: &SendInput) -> (HttpRequest, String) {
    testing::http_step(p.send(input, None))
}

/// A send's result after the gateway answered `response`.
fn answered(p: &Smscoge, input: &SendInput, response: HttpResponse) -> SendResult {
    let (_, state) = first(p, input);
    testing::done(p.send(input, Some(&Exchange::answered(state, response))))
}

/// The error of every recipient (they must all have the same one).
fn whole_error(result: &SendResult) -> ProviderError {
    match result {
        SendResult::Failed { error } => error.clone(),
        SendResult::Recipients { recipients } => {
            let first = recipients[0].error.clone().expect("an error");
            for r in recipients {
                assert_eq!(r.error.as_ref(), Some(&first), "{r:?}");
                assert!(r.provider_message_id.is_none());
            }
            first
        }
    }
}

fn assert_no_secret(e: &ProviderError) {
    for s in [PASSWORD, "s3cr", "s3cr%26t", "%20pw", "+pw", "&t pw"] {
        assert!(!e.message.contains(s), "a secret in {:?}", e.message);
    }
}

// ---- describe and settings ----------------------------------------------------------------------

#[test]
fn describes_itself() {
    testing::assert_describes::<Smscoge>(
        CAP_SEND | CAP_STATUS | CAP_BALANCE | CAP_SCHEDULE,
        serde_json::json!({"name": "smscoge", "version": env!("CARGO_PKG_VERSION"), "max_recipients": 100,
            "max_status_refs": 16, "alphabet": "latin", "default_base_url": "http://smsco.ge"}),
    );
}

#[test]
fn settings_need_username_and_password_and_refuse_unknown_keys() {
    let cases = [
        (serde_json::json!({"password": "p"}), "username"),
        (serde_json::json!({"username": "u"}), "password"),
        (serde_json::json!({"username": "", "password": "p"}), "`username` must not be empty"),
        (serde_json::json!({"username": "u", "password": ""}), "`password` must not be empty"),
        (serde_json::json!({"username": "u", "password": "p", "token": "t"}), "token"),
        (serde_json::json!({"username": "u", "password": "p", "base_url": "x"}), "base_url"),
        (serde_json::json!({"username": "u", "password": "p", "sender_param": "message"}), "sender_param"),
        (serde_json::json!({"username": "u", "password": "p", "sender_param": "a b"}), "sender_param"),
        (
            serde_json::json!({"username": "u", "password": "p", "schedule_utc_offset": "4"}),
            "schedule_utc_offset",
        ),
        (serde_json::json!({"username": "u", "password": "p", "transliterate": "yes"}), "invalid type"),
    ];
    for (settings, named) in cases {
        let e = Smscoge::new(init(None, settings.clone())).unwrap_err();
        assert_eq!(e.code, "invalid_settings", "{settings}");
        assert!(e.message.contains(named), "{settings}: {}", e.message);
        assert!(!e.message.contains("\"p\""), "{}", e.message);
    }
}

#[test]
fn base_url_defaults_to_production_and_must_be_http() {
    let p = Smscoge::new(init(None, serde_json::json!({"username": "u", "password": "p"}))).unwrap();
    assert_eq!(p.base_url, "http://smsco.ge");
    assert!(
        first(&p, &input(&["995599445448"], "test"))
            .0
            .url
            .starts_with("http://smsco.ge/components/com_smsreseller/smsapi2.php?")
    );
    for bad in ["smsco.ge", "ftp://smsco.ge", "http://", "https://x/?a=1", "http:///x"] {
        let e =
            Smscoge::new(init(Some(bad), serde_json::json!({"username": "u", "password": "p"}))).unwrap_err();
        assert_eq!(e.code, "invalid_settings", "{bad}");
    }
}

#[test]
fn the_password_is_never_printed() {
    let p = provider();
    let shown = format!("{p:?}");
    assert!(!shown.contains("s3cr"), "{shown}");
    assert!(shown.contains("***"));
}

// ---- send: the request --------------------------------------------------------------------------

#[test]
fn send_request_follows_the_document() {
    let p = provider();
    let (http, state) = first(&p, &input(&["995599445448", "995599244409"], "Your code is 1234.\nBye"));
    assert_eq!(http.method, "GET");
    assert!(http.headers.is_empty() && http.body.is_empty());
    let (path, query) = http.url.split_once('?').unwrap();
    assert_eq!(path, "https://proxy.example/smsco/components/com_smsreseller/smsapi2.php", "prefix kept");
    assert_eq!(
        query,
        "username=acme&password=s3cr%26t%20pw&recipient=995599445448%2C995599244409\
         &message=Your%20code%20is%201234.%0ABye"
    );
    assert_eq!(state, "send");
}

#[test]
fn sender_goes_under_its_setting() {
    let mut i = input(&["995599445448"], "test");
    i.from = Some("MyShop".into());
    let (http, _) = first(&provider(), &i);
    assert_eq!(
        params(&http),
        pairs(&[
            ("username", "acme"),
            ("password", PASSWORD),
            ("recipient", "995599445448"),
            ("message", "test"),
            ("sender", "MyShop"),
        ])
    );
    let (http, _) = first(&provider_with(serde_json::json!({"sender_param": "sender_id"})), &i);
    assert_eq!(params(&http)[4], ("sender_id".to_owned(), "MyShop".to_owned()));
    let (http, _) = first(&provider_with(serde_json::json!({"sender_param": ""})), &i);
    assert_eq!(params(&http).len(), 4, "no sender id sent at all");
    // Without a sender id, no parameter.
    let (http, _) = first(&provider(), &input(&["995599445448"], "test"));
    assert!(!params(&http).iter().any(|(k, _)| k == "sender"));
}

#[test]
fn send_at_becomes_the_schedule_in_tbilisi_time() {
    let mut i = input(&["995599244409"], "test");
    i.send_at = Some("2099-10-01T08:30:00.000Z".into());
    let (http, _) = first(&provider(), &i);
    assert_eq!(params(&http).last().unwrap(), &("schedule".to_owned(), "2099-10-01 12:30:00".to_owned()));
    assert!(http.url.ends_with("&schedule=2099-10-01%2012%3A30%3A00"), "{}", http.url);
    // Another offset, from the settings.
    let (http, _) = first(&provider_with(serde_json::json!({"schedule_utc_offset": "+00:00"})), &i);
    assert_eq!(params(&http).last().unwrap().1, "2099-10-01 08:30:00");
    // Already due: sent at once, without a schedule.
    i.send_at = Some("2001-01-01T00:00:00Z".into());
    let (http, _) = first(&provider(), &i);
    assert!(!params(&http).iter().any(|(k, _)| k == "schedule"));
    // Malformed: refused before anything is sent.
    i.send_at = Some("next tuesday".into());
    let Ok(Step::Done { done }) = provider().send(&i, None) else { panic!("expected a result") };
    assert_eq!(whole_error(&done).code, "invalid_request");
}

#[test]
fn a_text_outside_the_alphabet_is_refused_without_any_exchange() {
    for text in ["Привет", "Your code: 1234", "50% off!", "€5", "hello, world"] {
        let i = input(&["995599445448", "995599244409"], text);
        let Ok(Step::Done { done }) = provider().send(&i, None) else { panic!("{text}: expected a result") };
        let e = whole_error(&done);
        assert_eq!((e.code.as_str(), e.retryable), ("content_rejected", false), "{text}");
    }
}

#[test]
fn transliteration_sends_the_latin_text() {
    let p = provider_with(serde_json::json!({"transliterate": true}));
    let (http, _) = first(&p, &input(&["995599445448"], "გამარჯობა მეგობარო"));
    assert_eq!(params(&http)[3], ("message".to_owned(), "gamarjoba megobaro".to_owned()));
    let Ok(Step::Done { done }) = p.send(&input(&["995599445448"], "ok 😀"), None) else { panic!() };
    assert_eq!(whole_error(&done).code, "content_rejected");
}

#[test]
fn a_long_sender_is_refused_without_any_exchange() {
    let mut i = input(&["995599445448"], "test");
    i.from = Some("995599123456".into());
    let Ok(Step::Done { done }) = provider().send(&i, None) else { panic!() };
    assert_eq!(whole_error(&done).code, "invalid_sender");
}

#[test]
fn numbers_not_in_normal_form_never_reach_the_list() {
    let p = provider();
    let i = input(&["995599445448", "99559,944540", "123"], "test");
    let (http, _) = first(&p, &i);
    assert_eq!(params(&http)[2].1, "995599445448");
    let SendResult::Recipients { recipients } = answered(&p, &i, response(200, "OK 1 55")) else { panic!() };
    assert_eq!(recipients[0].provider_message_id.as_deref(), Some("55"));
    assert_eq!(recipients[1].error.as_ref().unwrap().code, "invalid_recipient");
    assert_eq!(recipients[2].error.as_ref().unwrap().code, "invalid_recipient");
    // Nothing valid at all: no exchange.
    let Ok(Step::Done { done }) = p.send(&input(&["12,34"], "test"), None) else { panic!() };
    assert_eq!(whole_error(&done).code, "invalid_recipient");
}

#[test]
fn malformed_calls_are_errors_not_panics() {
    let p = provider();
    assert_eq!(p.send(&input(&[], "x"), None).unwrap_err().code, "plugin_error");
    let many: Vec<String> = (0..101).map(|n| format!("9955990{n:05}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(p.send(&input(&refs, "x"), None).unwrap_err().code, "plugin_error");
    let ex = Exchange::answered("balance", response(200, "OK 1 2"));
    assert_eq!(p.send(&input(&["995599445448"], "x"), Some(&ex)).unwrap_err().code, "plugin_error");
}

// ---- send: the documented answers ---------------------------------------------------------------

#[test]
fn ok_with_credits_gives_every_recipient_the_submission_id() {
    let p = provider();
    let i = input(&["995599445448", "995599244409"], "test");
    let SendResult::Recipients { recipients } = answered(&p, &i, response(200, "OK 4 123")) else { panic!() };
    assert_eq!(recipients.len(), 2);
    for (r, to) in recipients.iter().zip(["995599445448", "995599244409"]) {
        assert_eq!(r.to, to);
        assert_eq!(r.provider_message_id.as_deref(), Some("123"));
        assert_eq!(r.tracking.as_deref(), Some(format!("123:{to}").as_str()));
        assert!(r.error.is_none());
    }
}

#[test]
fn ok_without_credits_and_with_line_ends() {
    let p = provider();
    let i = input(&["995599445448"], "test");
    for body in ["OK 123", "OK 4 123\n", "OK 4 123\r\n", " ok 0.08 123 "] {
        let SendResult::Recipients { recipients } = answered(&p, &i, response(200, body)) else { panic!() };
        assert_eq!(recipients[0].provider_message_id.as_deref(), Some("123"), "{body:?}");
        assert_eq!(recipients[0].tracking.as_deref(), Some("123:995599445448"));
    }
}

#[test]
fn every_documented_error_code_maps_as_the_readme_says() {
    // (answer, code, retryable) as in plugins/smscoge/README.md.
    let table = [
        ("2904", "invalid_recipient", false),
        ("2905", "auth", false),
        ("2906", "insufficient_funds", false),
        ("2907", "unavailable", true),
        ("2908", "invalid_request", false),
        ("2909", "invalid_request", false),
        ("2910", "auth", false),
        ("2911", "auth", false),
        ("2912", "invalid_request", false),
        ("2913", "invalid_request", false),
        ("2914", "invalid_sender", false),
        ("2915", "invalid_request", false),
    ];
    let p = provider();
    let i = input(&["995599445448", "995599244409"], "test");
    for (body, code, retryable) in table {
        for variant in [body.to_owned(), format!("{body}\n"), format!("{body}=Some words")] {
            let e = whole_error(&answered(&p, &i, response(200, &variant)));
            assert_eq!(
                (e.code.as_str(), e.retryable, e.provider_code.as_deref(), e.retry_after_ms),
                (code, retryable, Some(body), None),
                "{variant:?}"
            );
            assert!(e.message.contains(body), "{}", e.message);
            assert_no_secret(&e);
        }
    }
}

#[test]
fn gateway_unavailable_honours_retry_after() {
    let p = provider();
    let i = input(&["995599445448"], "test");
    let mut r = response(200, "2907");
    r.headers.insert("retry-after".into(), "30".into());
    let e = whole_error(&answered(&p, &i, r));
    assert_eq!((e.code.as_str(), e.retryable, e.retry_after_ms), ("unavailable", true, Some(30_000)));
}

#[test]
fn http_statuses_map_to_their_codes() {
    let p = provider();
    let i = input(&["995599445448"], "test");
    let mut throttled = response(429, "Too Many Requests");
    throttled.headers.insert("retry-after".into(), "2".into());
    let e = whole_error(&answered(&p, &i, throttled));
    assert_eq!(
        (e.code.as_str(), e.retryable, e.retry_after_ms, e.provider_code.as_deref()),
        ("throttled", true, Some(2000), Some("429"))
    );
    let e = whole_error(&answered(&p, &i, response(429, "")));
    assert_eq!((e.code.as_str(), e.retryable, e.retry_after_ms), ("throttled", true, None));
    for (status, code, retryable) in
        [(401, "auth", false), (403, "auth", false), (500, "unavailable", true), (503, "unavailable", true)]
    {
        let e = whole_error(&answered(&p, &i, response(status, "<html>error</html>")));
        assert_eq!((e.code.as_str(), e.retryable), (code, retryable), "{status}");
        assert_eq!(e.provider_code, Some(status.to_string()));
    }
    // A documented code wins over the HTTP status it came with.
    let e = whole_error(&answered(&p, &i, response(500, "2905")));
    assert_eq!(e.code, "auth");
    // Any other status: plugin_error quoting the body.
    let e = whole_error(&answered(&p, &i, response(404, "<h1>Not Found</h1>")));
    assert_eq!(
        (e.code.as_str(), e.retryable, e.provider_code.as_deref()),
        ("plugin_error", false, Some("404"))
    );
    assert!(e.message.contains("Not Found"), "{}", e.message);
}

#[test]
fn hostile_answers_are_plugin_errors_with_a_short_snippet() {
    let p = provider();
    let i = input(&["995599445448", "995599244409"], "test");
    let huge = "x".repeat(1 << 20);
    let echo = format!("<html>Warning: bad query username=acme&password={PASSWORD} in smsapi2.php</html>");
    let encoded_echo = "Notice: password=s3cr%26t%20pw&recipient=1".to_owned();
    let cases = [
        "",
        "   \n",
        "<!DOCTYPE html><html><body>Maintenance</body></html>",
        // ("OK 4" is the documented short form `OK <id>`: a cut answer cannot be told from it.)
        "OK",
        "OK 4 123 77",
        "O",
        "2916",
        "2903",
        "ERROR",
        "{\"status\":",
        "29",
        huge.as_str(),
        echo.as_str(),
        encoded_echo.as_str(),
        "\u{0}\u{1}garbage",
    ];
    for body in cases {
        let e = whole_error(&answered(&p, &i, response(200, body)));
        assert_eq!((e.code.as_str(), e.retryable), ("plugin_error", false), "{body:.40?}");
        assert!(e.message.chars().count() < 160, "short: {}", e.message);
        assert!(e.message.contains("HTTP 200"), "{}", e.message);
        assert_no_secret(&e);
    }
    let e = whole_error(&answered(&p, &i, response(200, "")));
    assert!(e.message.contains("an empty body"), "{}", e.message);
    let e = whole_error(&answered(&p, &i, response(200, &echo)));
    assert!(e.message.contains("password=***"), "{}", e.message);
    let e = whole_error(&answered(&p, &i, response(502, &huge)));
    assert_eq!((e.code.as_str(), e.retryable), ("unavailable", true));
}

// ---- status -------------------------------------------------------------------------------------

/// Runs a status call to its end, answering the request for `mes_id` with `answer(mes_id)`;
/// returns the result and the ids asked, in order.
fn poll(p: &Smscoge, refs: &[&str], answer: impl Fn(&str) -> HttpResponse) -> (StatusResult, Vec<String>) {
    let input = testing::status_input(refs);
    let mut asked = Vec::new();
    let mut exchange = None;
    for _ in 0..=16 {
        match p.status(&input, exchange.as_ref()).unwrap() {
            Step::Done { done } => return (done, asked),
            Step::Http { http, state, .. } => {
                let (path, _) = http.url.split_once('?').unwrap();
                assert_eq!(path, "https://proxy.example/smsco/components/com_smsreseller/getstatus.php");
                let ps = params(&http);
                assert_eq!(ps[..2], pairs(&[("username", "acme"), ("password", PASSWORD)]));
                assert_eq!(ps[2].0, "mes_id");
                assert_eq!(ps.len(), 3);
                asked.push(ps[2].1.clone());
                exchange = Some(Exchange::answered(state, answer(&ps[2].1)));
            }
        }
    }
    panic!("more than 16 exchanges");
}

fn statuses(result: &StatusResult) -> Vec<(String, String, Option<String>)> {
    let StatusResult::Statuses { statuses } = result else { panic!("expected statuses, got {result:?}") };
    statuses
        .iter()
        .map(|s| {
            (s.reference.clone(), s.status.as_str().to_owned(), s.error.as_ref().map(|e| e.code.to_string()))
        })
        .collect()
}

#[test]
fn every_documented_status_code_maps_as_the_readme_says() {
    let table = [
        ("0", "sent", None),
        ("1", "delivered", None),
        ("2", "sent", None),
        ("3", "undelivered", None),
        ("4", "undelivered", None),
        ("5", "expired", None),
        ("6", "rejected", Some("blocked_recipient")),
        ("7", "undelivered", None),
    ];
    let p = provider();
    for (body, status, error) in table {
        for variant in [body.to_owned(), format!("{body}\n"), format!(" {body} ")] {
            let (result, _) = poll(&p, &["123:995599445448"], |_| response(200, &variant));
            assert_eq!(
                statuses(&result),
                vec![("123:995599445448".to_owned(), status.to_owned(), error.map(str::to_owned))],
                "{variant:?}"
            );
        }
    }
    let (result, _) = poll(&p, &["123:995599445448"], |_| response(200, "6"));
    let StatusResult::Statuses { statuses } = result else { panic!() };
    assert_eq!(statuses[0].error.as_ref().unwrap().provider_code.as_deref(), Some("6"));
}

#[test]
fn one_request_per_message_id_answers_every_recipient() {
    let p = provider();
    let refs = ["123:995599445448", "124:995599000001", "123:995599244409", "125"];
    let (result, asked) = poll(&p, &refs, |id| response(200, if id == "124" { "3" } else { "1" }));
    assert_eq!(asked, ["123", "124", "125"], "each id once, in order");
    let got = statuses(&result);
    let words: Vec<&str> = got.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(words, ["delivered", "undelivered", "delivered", "delivered"]);
    let refs_back: Vec<&str> = got.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(refs_back, refs, "each reference answered, as given");
}

#[test]
fn an_unknown_status_answer_leaves_the_status_unchanged() {
    let p = provider();
    let huge = "7".repeat(1 << 20);
    for body in ["8", "-1", "", "12", "Delivered", "<html>oops</html>", "2904", "2915", "1.5", huge.as_str()]
    {
        let (result, _) = poll(&p, &["123:995599445448", "124:995599445449"], |id| {
            response(200, if id == "123" { body } else { "1" })
        });
        let got = statuses(&result);
        assert_eq!(got[0].1, "sent", "{body:.20?}");
        assert_eq!(got[1].1, "delivered", "{body:.20?}: the other ids are still asked");
    }
}

#[test]
fn account_errors_stop_the_batch() {
    let p = provider();
    let refs = ["1:995599445448", "2:995599445449", "3:995599445450"];
    // At the first id: the whole call failed (the host logs it and polls again later).
    for (body, status, code) in [
        ("2905", 200, "auth"),
        ("2907", 200, "unavailable"),
        ("", 429, "throttled"),
        ("", 503, "unavailable"),
    ] {
        let (result, asked) = poll(&p, &refs, |_| response(status, body));
        assert_eq!(asked.len(), 1, "{body} {status}: no further requests");
        let StatusResult::Failed { error } = result else { panic!("{result:?}") };
        assert_eq!(error.code, code);
        assert_no_secret(&error);
    }
    // After some answers: those are kept, the rest stay unchanged.
    let (result, asked) =
        poll(&p, &refs, |id| if id == "1" { response(200, "1") } else { response(200, "2905") });
    assert_eq!(asked, ["1", "2"]);
    let words: Vec<String> = statuses(&result).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(words, ["delivered", "sent", "sent"]);
}

#[test]
fn foreign_references_end_unknown_without_a_request() {
    let p = provider();
    let (result, asked) =
        poll(&p, &["12/3:995599445448", "123:99", "", "5:995599445448"], |_| response(200, "1"));
    assert_eq!(asked, ["5"]);
    let got = statuses(&result);
    assert_eq!(got[0], ("12/3:995599445448".into(), "unknown".into(), Some("plugin_error".into())));
    assert_eq!(got[1].1, "unknown");
    assert_eq!(got[2].1, "unknown");
    assert_eq!(got[3].1, "delivered");
}

#[test]
fn more_ids_than_exchanges_are_left_for_the_next_poll() {
    let p = provider();
    let refs: Vec<String> = (0..20).map(|n| format!("{n}:995599445448")).collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let (result, asked) = poll(&p, &refs, |_| response(200, "1"));
    assert_eq!(asked.len(), 16);
    let words: Vec<String> = statuses(&result).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(words.iter().filter(|s| *s == "delivered").count(), 16);
    assert_eq!(words[16..], ["sent", "sent", "sent", "sent"]);
}

#[test]
fn a_foreign_status_state_is_refused() {
    let p = provider();
    let input = StatusInput { refs: vec!["1:995599445448".into()] };
    for state in ["send", "status:1", "status:9", "status:", "balance"] {
        let state = if state == "status:" { "status:11".to_owned() } else { state.to_owned() };
        let ex = Exchange::answered(state.clone(), response(200, "1"));
        assert_eq!(p.status(&input, Some(&ex)).unwrap_err().code, "plugin_error", "{state}");
    }
}

// ---- balance ------------------------------------------------------------------------------------

fn balance_of(p: &Smscoge, r: HttpResponse) -> BalanceResult {
    let Ok(Step::Http { http, state, .. }) = p.balance(&serde_json::json!({}), None) else { panic!() };
    assert_eq!(
        http.url,
        "https://proxy.example/smsco/components/com_smsreseller/smsapi2.php\
         ?username=acme&password=s3cr%26t%20pw&balance=true"
    );
    match p.balance(&serde_json::json!({}), Some(&Exchange::answered(state, r))) {
        Ok(Step::Done { done }) => done,
        other => panic!("{other:?}"),
    }
}

#[test]
fn balance_answers() {
    let p = provider();
    for (body, amount) in
        [("150.25", 150.25), ("150.25\n", 150.25), ("0", 0.0), ("12,5", 12.5), ("2910.50", 2910.5)]
    {
        assert_eq!(
            balance_of(&p, response(200, body)),
            BalanceResult::Balance { amount, currency: "credits".into() },
            "{body:?}"
        );
    }
    for (body, status, code) in [
        ("2905", 200, "auth"),
        ("2907", 200, "unavailable"),
        ("<html>", 200, "plugin_error"),
        ("", 200, "plugin_error"),
        ("x", 401, "auth"),
        ("NaN", 200, "plugin_error"),
        ("inf", 200, "plugin_error"),
    ] {
        let BalanceResult::Failed { error } = balance_of(&p, response(status, body)) else {
            panic!("{body}")
        };
        assert_eq!(error.code, code, "{body:?}");
        assert_no_secret(&error);
    }
}

// ---- never a panic ------------------------------------------------------------------------------

fn any_response() -> impl Strategy<Value = HttpResponse> {
    let body = prop_oneof![
        ".{0,200}",
        "(OK|ok)( [0-9.]{0,4})?( [0-9a-zA-Z_/-]{0,8})?( .{0,4})?",
        "29[0-9]{2}.{0,6}",
        "[0-9]{1,3}.{0,3}",
    ];
    (
        prop_oneof![Just(200u16), Just(429), Just(500), 0u16..1000],
        body,
        proptest::option::of("[0-9a-z ]{0,6}"),
    )
        .prop_map(|(status, body, retry)| {
            let mut headers = BTreeMap::new();
            if let Some(r) = retry {
                headers.insert("retry-after".to_owned(), r);
            }
            HttpResponse { status, headers, body, json: None }
        })
}

proptest! {
    #[test]
    fn parsing_never_panics(r in any_response(), refs in proptest::collection::vec(".{0,24}", 0..20)) {
        let p = provider();
        let i = input(&["995599445448", "995599244409"], "test");
        let result = answered(&p, &i, r.clone());
        if let SendResult::Recipients { recipients } = &result {
            prop_assert_eq!(recipients.len(), 2);
            for rr in recipients {
                prop_assert!(rr.error.is_some() != rr.provider_message_id.is_some());
                if let Some(e) = &rr.error { assert_no_secret(e); }
            }
        }
        prop_assert_eq!(testing::check_send_result(&result, &i.to.iter().map(String::as_str).collect::<Vec<_>>()), Ok(()));
        let balance = balance_of(&p, r.clone());
        prop_assert_eq!(testing::check_balance_result(&balance), Ok(()));
        if let BalanceResult::Failed { error } = &balance { assert_no_secret(error); }
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let (status, asked) = poll(&p, &refs, |_| r.clone());
        prop_assert!(asked.len() <= 16);
        prop_assert_eq!(testing::check_status_result(&status, &refs), Ok(()));
        if let StatusResult::Statuses { statuses } = status {
            prop_assert_eq!(statuses.len(), refs.len());
        }
    }

    #[test]
    fn any_text_sender_or_send_at_is_classified(
        text in ".{1,40}",
        from in proptest::option::of(".{0,14}"),
        send_at in proptest::option::of(".{0,30}"),
        translit in any::<bool>(),
    ) {
        let p = provider_with(serde_json::json!({"transliterate": translit}));
        let mut i = input(&["995599445448"], &text);
        i.from = from;
        i.send_at = send_at;
        match p.send(&i, None) {
            Ok(Step::Http { http, .. }) => {
                let message = &params(&http)[3].1;
                prop_assert!(message.chars().all(request::allowed), "{message:?}");
            }
            Ok(Step::Done { done }) => {
                let e = whole_error(&done);
                prop_assert!(["content_rejected", "invalid_sender", "invalid_request"].contains(&e.code.as_str()));
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }
}
