//! The plugin against every answer the API document and the providers README show, byte for
//! byte, plus hostile ones, driven through the `Provider` trait the way the host drives it.

use super::*;
use notifyd_plugin::sdk::testing::{self, drive, init, ok, response as resp, send_input, status_input};
use notifyd_plugin::wire::{ErrorCode, HttpRequest, HttpResponse};
use proptest::prelude::*;
use serde_json::json;

const PASSWORD: &str = "s3cret&pw";
const USERNAME: &str = "acme-user";
const A: &str = "4915171112233";
const B: &str = "4915171112234";
const C: &str = "4915171112235";

fn gate_with(settings: serde_json::Value) -> SendSmsGate {
    SendSmsGate::new(init("sendmsgate", None, settings)).expect("valid settings")
}

fn gate() -> SendSmsGate {
    gate_with(json!({"username": USERNAME, "password": PASSWORD}))
}

fn input(to: &[&str], text: &str) -> SendInput {
    SendInput { from: Some("MyShop".into()), ..send_input(to, text) }
}

fn send(
    g: &SendSmsGate,
    input: &SendInput,
    answers: &[HttpResponse],
) -> (Vec<HttpRequest>, Vec<RecipientResult>) {
    match drive(|ex| g.send(input, ex), answers) {
        (reqs, SendResult::Recipients { recipients }) => (reqs, recipients),
        // A whole-request error, copied to each recipient.
        (reqs, SendResult::Failed { error }) => {
            (reqs, input.to.iter().map(|to| RecipientResult::failed(to, error.clone())).collect())
        }
    }
}

fn status(g: &SendSmsGate, refs: &[&str], answers: &[HttpResponse]) -> (Vec<HttpRequest>, StatusResult) {
    let input = status_input(refs);
    drive(|ex| g.status(&input, ex), answers)
}

fn statuses(result: StatusResult) -> Vec<(String, String)> {
    match result {
        StatusResult::Statuses { statuses } => {
            statuses.into_iter().map(|s| (s.reference, s.status.as_str().to_owned())).collect()
        }
        StatusResult::Failed { error } => panic!("expected statuses, got {error:?}"),
    }
}

fn status_error(result: StatusResult) -> ProviderError {
    match result {
        StatusResult::Failed { error } => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn balance(g: &SendSmsGate, answer: HttpResponse) -> (Vec<HttpRequest>, BalanceResult) {
    drive(|ex| g.balance(&json!({}), ex), &[answer])
}

/// The decoded query parameters of a request, in order.
fn params(req: &HttpRequest) -> Vec<(String, String)> {
    let query = req.url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param(req: &HttpRequest, name: &str) -> Option<String> {
    params(req).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("valid escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

fn sent_ids(r: &RecipientResult) -> (&str, &str) {
    assert!(r.error.is_none(), "{r:?}");
    (r.provider_message_id.as_deref().unwrap(), r.tracking.as_deref().unwrap())
}

fn error_of(r: &RecipientResult) -> &ProviderError {
    assert!(r.provider_message_id.is_none(), "{r:?}");
    r.error.as_ref().unwrap_or_else(|| panic!("expected an error: {r:?}"))
}

fn no_secret(message: &str) {
    for secret in [PASSWORD, "s3cret%26pw", "s3cret", USERNAME] {
        assert!(!message.contains(secret), "a credential leaked into {message:?}");
    }
}

// ---- describe and settings -----------------------------------------------------------------

#[test]
fn describes_itself() {
    testing::assert_describes::<SendSmsGate>(
        CAP_SEND | CAP_STATUS | CAP_BALANCE,
        serde_json::json!({"name": "sendmsgate", "version": env!("CARGO_PKG_VERSION"), "max_recipients": 15,
            "max_status_refs": 1, "alphabet": "unicode", "default_base_url": "https://cloud.sendmsgate.com"}),
    );
}

#[test]
fn settings_are_checked() {
    let err = |settings: serde_json::Value| {
        SendSmsGate::new(init("sendmsgate", None, settings)).expect_err("refused")
    };
    let e = err(json!({"username": "u", "password": "p", "passwort": "x"}));
    assert_eq!(e.code, "invalid_settings");
    assert!(e.message.contains("passwort"), "{}", e.message);
    assert!(err(json!({"password": "p"})).message.contains("username"));
    assert!(err(json!({"username": "u"})).message.contains("password"));
    assert!(err(json!({"username": "u", "password": ""})).message.contains("`password` must not be empty"));
    assert!(err(json!({"username": " ", "password": "p"})).message.contains("`username` must not be empty"));
    let e = err(json!({"username": "u", "password": "p", "status_param": "id"}));
    assert!(e.message.contains("status_param") || e.message.contains("msgid"), "{}", e.message);
    // The password's value never appears, even in a type error.
    let e = err(json!({"username": "u", "password": 12345678}));
    assert!(
        !e.message.contains("12345678") && e.message.contains("`password` must be a string"),
        "{}",
        e.message
    );
    let e = err(json!({"username": ["acme"], "password": "p"}));
    assert!(!e.message.contains("acme") && e.message.contains("`username`"), "{}", e.message);
    for bad in ["ftp://x", "cloud.sendmsgate.com", "https://", "https://x/?a=b", "https://x y"] {
        let e =
            SendSmsGate::new(init("sendmsgate", Some(bad), json!({"username": "u", "password": "p"}))).err();
        assert_eq!(e.map(|e| e.code), Some(ErrorCode::InvalidSettings), "{bad}");
    }
}

#[test]
fn the_password_does_not_show_in_debug_output() {
    let g = gate();
    let debug = format!("{g:?}");
    assert!(debug.contains("***") && !debug.contains(PASSWORD), "{debug}");
}

// ---- requests ------------------------------------------------------------------------------

#[test]
fn send_request_carries_the_documented_parameters_encoded() {
    let g = gate();
    let (reqs, _) = send(&g, &input(&[A, B], "Grüße & €, 100% ok+"), &[ok("1, 2")]);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "GET");
    assert!(r.headers.is_empty() && r.body.is_empty());
    assert_eq!(
        r.url,
        "https://cloud.sendmsgate.com/sendsms.php?user=acme-user&pwd=s3cret%26pw&sadr=MyShop\
         &dadr=4915171112233%2C4915171112234\
         &text=Gr%C3%BC%C3%9Fe%20%26%20%E2%82%AC%2C%20100%25%20ok%2B"
    );
    assert_eq!(
        params(r),
        [
            ("user", USERNAME),
            ("pwd", PASSWORD),
            ("sadr", "MyShop"),
            ("dadr", "4915171112233,4915171112234"),
            ("text", "Grüße & €, 100% ok+"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

#[test]
fn base_url_prefix_is_kept_and_sender_is_omitted_without_one() {
    let g = SendSmsGate::new(init(
        "sendmsgate",
        Some("http://proxy.example/gw/"),
        json!({"username": USERNAME, "password": PASSWORD}),
    ))
    .unwrap();
    let mut inp = input(&[A], "hi");
    inp.from = None;
    let (reqs, _) = send(&g, &inp, &[ok("1")]);
    assert!(reqs[0].url.starts_with("http://proxy.example/gw/sendsms.php?user="), "{}", reqs[0].url);
    assert_eq!(param(&reqs[0], "sadr"), None);
    assert_eq!(param(&reqs[0], "dadr").as_deref(), Some(A));
}

#[test]
fn status_and_balance_requests() {
    let g = gate();
    let (reqs, _) = status(&g, &["38421"], &[ok("deliver")]);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(
        reqs[0].url,
        "https://cloud.sendmsgate.com/sendsms.php?user=acme-user&pwd=s3cret%26pw&msgid=38421"
    );
    let sibling = gate_with(json!({"username": USERNAME, "password": PASSWORD, "status_param": "smsid"}));
    let (reqs, _) = status(&sibling, &["38421"], &[ok("deliver")]);
    assert_eq!(param(&reqs[0], "smsid").as_deref(), Some("38421"));
    assert_eq!(param(&reqs[0], "msgid"), None);
    let (reqs, _) = balance(&g, ok("1000 EUR"));
    assert_eq!(
        reqs[0].url,
        "https://cloud.sendmsgate.com/sendsms.php?user=acme-user&pwd=s3cret%26pw&balance=1"
    );
}

#[test]
fn numbers_the_gateway_refuses_are_not_sent() {
    let g = gate();
    let long = "491517111223344"; // 15 digits: "must be less than 15 characters"
    let (reqs, rs) = send(&g, &input(&[A, long, B], "hi"), &[ok("38421, 38422")]);
    assert_eq!(param(&reqs[0], "dadr").as_deref(), Some("4915171112233,4915171112234"));
    assert_eq!(sent_ids(&rs[0]).0, "38421");
    assert_eq!(sent_ids(&rs[2]).0, "38422");
    let e = error_of(&rs[1]);
    assert_eq!((e.code.as_str(), e.retryable), ("invalid_recipient", false));
    assert_eq!(rs.iter().map(|r| r.to.as_str()).collect::<Vec<_>>(), [A, long, B]);

    // Nothing left to send: no request at all.
    let (reqs, rs) = send(&g, &input(&[long, "49x"], "hi"), &[]);
    assert!(reqs.is_empty());
    assert_eq!(error_of(&rs[0]).code, "invalid_recipient");
    assert_eq!(error_of(&rs[1]).code, "invalid_recipient");
    // 14 digits is fine.
    assert!(request::check_number("49151711122334").is_none());
}

// ---- send answers as documented ------------------------------------------------------------

#[test]
fn one_id_for_one_recipient() {
    let (_, rs) = send(&gate(), &input(&[A], "text of SMS"), &[ok("38421")]);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].to, A);
    assert_eq!(sent_ids(&rs[0]), ("38421", "38421"));
}

#[test]
fn one_id_each_for_several_recipients() {
    let (reqs, rs) = send(&gate(), &input(&[A, B, C], "text of SMS"), &[ok("38421, 38422, 38425")]);
    assert_eq!(reqs.len(), 1, "one request for all");
    assert_eq!(param(&reqs[0], "dadr").as_deref(), Some("4915171112233,4915171112234,4915171112235"));
    let ids: Vec<_> = rs.iter().map(|r| (r.to.as_str(), sent_ids(r).0)).collect();
    assert_eq!(ids, [(A, "38421"), (B, "38422"), (C, "38425")]);
}

#[test]
fn two_parts_to_two_recipients_split_number_major() {
    let mut inp = input(&[A, B], &"x".repeat(200));
    inp.segments = 2;
    let (_, rs) = send(&gate(), &inp, &[ok("38421, 38422, 38423, 38424")]);
    assert_eq!(sent_ids(&rs[0]), ("38421,38422", "38421,38422"));
    assert_eq!(sent_ids(&rs[1]), ("38423,38424", "38423,38424"));
    // One recipient, two parts: both ids are its own.
    let (_, rs) = send(&gate(), &input(&[A], &"x".repeat(200)), &[ok("38421,38422\n")]);
    assert_eq!(sent_ids(&rs[0]), ("38421,38422", "38421,38422"));
}

#[test]
fn an_id_count_that_does_not_split_evenly_is_shared() {
    let (_, rs) = send(&gate(), &input(&[A, B], "hi"), &[ok("38421, 38422, 38423")]);
    assert_eq!(sent_ids(&rs[0]).1, "38421,38422,38423");
    assert_eq!(sent_ids(&rs[1]).1, "38421,38422,38423");
}

/// Every error message of the API document, as printed, with the outcome this plugin gives it.
const DOCUMENTED_ERRORS: &[(&str, &str)] = &[
    ("Not enough data to send.", "invalid_request"),
    ("Your account is blocked", "auth"),
    ("Wrong login or password", "auth"),
    ("Enter a phone number.", "invalid_recipient"),
    ("The phone number is in the stop list.", "blocked_recipient"),
    ("This direction is closed to you.", "route_closed"),
    ("This direction is closed.", "route_closed"),
    ("The phone number must be less than 15 characters.", "invalid_recipient"),
    ("We have run out of SMS. To resolve the problem, contact the manager.", "insufficient_funds"),
    ("Out of SMS", "insufficient_funds"),
    ("Text SMS rejected by the moderator.", "content_rejected"),
    ("No sender.", "invalid_sender"),
    (
        "The sender must not exceed 15 characters for digital numbers and 11 characters for alphanumeric.",
        "invalid_sender",
    ),
    ("No message text.", "content_rejected"),
    ("There is no such sender.", "invalid_sender"),
    ("The sender did not pass moderation.", "invalid_sender"),
];

#[test]
fn every_documented_error_for_one_recipient() {
    assert_eq!(DOCUMENTED_ERRORS.len(), mapping::ERRORS.len(), "the table covers the document");
    for (sentence, code) in DOCUMENTED_ERRORS {
        for body in [sentence.to_string(), format!("{sentence}\n"), sentence.to_lowercase()] {
            let (reqs, rs) = send(&gate(), &input(&[A], "hi"), &[ok(&body)]);
            assert_eq!(reqs.len(), 1, "{sentence}: no second request for one number");
            let e = error_of(&rs[0]);
            assert_eq!(e.code, *code, "{body:?}");
            assert!(!e.retryable, "{sentence}");
            assert_eq!(e.provider_code.as_deref(), Some(*sentence));
            assert_eq!(e.retry_after_ms, None);
            no_secret(&e.message);
        }
    }
}

#[test]
fn request_wide_errors_apply_to_every_recipient_at_once() {
    for (sentence, code) in DOCUMENTED_ERRORS
        .iter()
        .filter(|(s, _)| mapping::find_error(s).is_some_and(|row| row.scope == mapping::Scope::Request))
    {
        let (reqs, rs) = send(&gate(), &input(&[A, B], "hi"), &[ok(sentence)]);
        assert_eq!(reqs.len(), 1, "{sentence}: not resent number by number");
        assert!(rs.iter().all(|r| error_of(r).code == *code), "{sentence}: {rs:?}");
    }
}

#[test]
fn a_request_wide_error_is_one_error_unless_some_recipients_were_refused_before() {
    let (_, result) = drive(|ex| gate().send(&input(&[A, B], "hi"), ex), &[ok("Out of SMS")]);
    let SendResult::Failed { error } = result else { panic!("{result:?}") };
    assert_eq!(
        (error.code.as_str(), error.provider_code.as_deref()),
        ("insufficient_funds", Some("Out of SMS"))
    );
    // A number-level error for one number is that recipient's.
    let (_, result) = drive(|ex| gate().send(&input(&[A], "hi"), ex), &[ok("This direction is closed.")]);
    assert!(matches!(result, SendResult::Recipients { .. }), "{result:?}");
    // With a recipient refused by the plugin, each gets its own result.
    let (_, result) = drive(|ex| gate().send(&input(&[A, "491517111223344"], "hi"), ex), &[ok("Out of SMS")]);
    let SendResult::Recipients { recipients } = result else { panic!("{result:?}") };
    assert_eq!(error_of(&recipients[0]).code, "insufficient_funds");
    assert_eq!(error_of(&recipients[1]).code, "invalid_recipient");
}

#[test]
fn a_number_level_refusal_of_a_batch_is_resolved_number_by_number() {
    let answers = [
        ok("The phone number is in the stop list."),
        ok("38421"),
        ok("The phone number is in the stop list."),
        ok("38423, 38424"),
    ];
    let (reqs, rs) = send(&gate(), &input(&[A, B, C], "hi"), &answers);
    let dadr: Vec<_> = reqs.iter().map(|r| param(r, "dadr").unwrap()).collect();
    assert_eq!(dadr, ["4915171112233,4915171112234,4915171112235", A, B, C]);
    assert!(reqs.iter().all(|r| param(r, "text").as_deref() == Some("hi")));
    assert_eq!(sent_ids(&rs[0]).0, "38421");
    let e = error_of(&rs[1]);
    assert_eq!(
        (e.code.as_str(), e.provider_code.as_deref()),
        ("blocked_recipient", Some("The phone number is in the stop list."))
    );
    assert_eq!(sent_ids(&rs[2]), ("38423,38424", "38423,38424"));
}

#[test]
fn one_by_one_stops_at_an_account_error() {
    let answers = [ok("This direction is closed."), ok("38421"), ok("Wrong login or password")];
    let (reqs, rs) = send(&gate(), &input(&[A, B, C], "hi"), &answers);
    assert_eq!(reqs.len(), 3, "C is not asked after an account error");
    assert_eq!(sent_ids(&rs[0]).0, "38421");
    assert_eq!(error_of(&rs[1]).code, "auth");
    assert_eq!(error_of(&rs[2]).code, "auth");
}

#[test]
fn one_by_one_stops_at_an_unreadable_answer_and_the_rest_may_retry() {
    let answers = [ok("This direction is closed to you."), ok("<html>oops</html>")];
    let (reqs, rs) = send(&gate(), &input(&[A, B, C], "hi"), &answers);
    assert_eq!(reqs.len(), 2);
    assert_eq!(error_of(&rs[0]).code, "plugin_error", "A may have been sent: never resent");
    for r in &rs[1..] {
        let e = error_of(r);
        assert_eq!((e.code.as_str(), e.retryable), ("unavailable", true), "never sent: may be retried");
    }
}

#[test]
fn a_full_batch_resolved_one_by_one_fits_the_exchange_budget() {
    let to: Vec<String> = (0..MAX_RECIPIENTS).map(|i| format!("49151711{i:05}")).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let mut answers = vec![ok("This direction is closed.")];
    answers.extend(
        (0..MAX_RECIPIENTS)
            .map(|i| if i == 7 { ok("This direction is closed.") } else { ok(&format!("{}", 100 + i)) }),
    );
    let (reqs, rs) = send(&gate(), &input(&to, "hi"), &answers);
    assert_eq!(reqs.len(), MAX_EXCHANGES);
    assert_eq!(error_of(&rs[7]).code, "route_closed");
    assert_eq!(sent_ids(&rs[14]).0, "114");
}

// ---- HTTP statuses and hostile answers ---------------------------------------------------------

#[test]
fn throttling_is_retryable_with_the_delay_the_gateway_asks_for() {
    let mut r = resp(429, "Too Many Requests");
    r.headers.insert("retry-after".into(), "7".into());
    let (_, rs) = send(&gate(), &input(&[A, B], "hi"), &[r]);
    for r in &rs {
        let e = error_of(r);
        assert_eq!((e.code.as_str(), e.retryable, e.retry_after_ms), ("throttled", true, Some(7000)));
        assert_eq!(e.provider_code.as_deref(), Some("429"));
    }
    let (_, rs) = send(&gate(), &input(&[A], "hi"), &[resp(429, "")]);
    let e = error_of(&rs[0]);
    assert_eq!((e.code.as_str(), e.retryable, e.retry_after_ms), ("throttled", true, None));
}

#[test]
fn http_errors_map_to_their_codes() {
    let cases = [
        (401, "auth", false),
        (403, "auth", false),
        (402, "insufficient_funds", false),
        (503, "unavailable", true),
        (500, "unavailable", true),
    ];
    for (status, code, retryable) in cases {
        let (_, rs) = send(
            &gate(),
            &input(&[A], "hi"),
            &[resp(status, "<html><body>Service Unavailable</body></html>")],
        );
        let e = error_of(&rs[0]);
        assert_eq!((e.code.as_str(), e.retryable), (code, retryable), "{status}");
        assert_eq!(e.provider_code.as_deref(), Some(status.to_string().as_str()));
    }
    let (_, rs) = send(&gate(), &input(&[A], "hi"), &[resp(502, "<html>Bad Gateway</html>")]);
    assert!(error_of(&rs[0]).message.contains("<html>Bad Gateway</html>"), "the snippet is quoted");
    // A known sentence wins over the status.
    let (_, rs) = send(&gate(), &input(&[A], "hi"), &[resp(403, "Your account is blocked")]);
    assert_eq!(error_of(&rs[0]).provider_code.as_deref(), Some("Your account is blocked"));
    let (_, rs) = send(&gate(), &input(&[A], "hi"), &[resp(404, "<h1>Not Found</h1>")]);
    let e = error_of(&rs[0]);
    assert_eq!((e.code.as_str(), e.provider_code.as_deref()), ("plugin_error", Some("404")));
}

#[test]
fn hostile_answers_are_plugin_errors_with_a_short_snippet() {
    let huge = "7".repeat(1 << 19) + &"x".repeat(1 << 19);
    let cases: [(&str, &str); 8] = [
        ("", "an empty body"),
        ("   \r\n", "an empty body"),
        ("<!DOCTYPE html><html><body><h1>Error</h1></body></html>", "<!DOCTYPE html>"),
        ("{\"id\":", "{\"id\":"),
        ("{\"status\":\"ok\",\"id\":38421}", "{\"status\""),
        ("ERROR_42", "ERROR_42"),
        ("38421, Out of SMS", "38421, Out of SMS"),
        (&huge, "7777"),
    ];
    for (body, quoted) in cases {
        let (reqs, rs) = send(&gate(), &input(&[A, B], "hi"), &[ok(body)]);
        assert_eq!(reqs.len(), 1, "never resent: {}", snippet_of(body));
        for r in &rs {
            let e = error_of(r);
            assert_eq!((e.code.as_str(), e.retryable), ("plugin_error", false), "{}", snippet_of(body));
            assert!(e.message.contains(quoted), "{}", e.message);
            assert!(e.message.contains("HTTP 200"), "{}", e.message);
            assert!(e.message.len() < 300, "short: {} bytes", e.message.len());
        }
    }
}

fn snippet_of(s: &str) -> String {
    s.chars().take(40).collect()
}

#[test]
fn credentials_never_reach_an_error_message() {
    let echoes = [
        format!("<html>GET /sendsms.php?user={USERNAME}&pwd=s3cret%26pw&dadr=1 failed</html>"),
        format!("error for {PASSWORD}"),
        format!("{}{PASSWORD}", "x".repeat(60)),
    ];
    for body in &echoes {
        for code in [200, 404, 500] {
            let (_, rs) = send(&gate(), &input(&[A], "hi"), &[resp(code, body)]);
            let e = error_of(&rs[0]);
            no_secret(&e.message);
            assert!(e.message.contains("***") || !e.message.contains("pwd="), "{}", e.message);
            let (_, st) = status(&gate(), &["1"], &[resp(code, body)]);
            no_secret(&status_error(st).message);
            let (_, b) = balance(&gate(), resp(code, body));
            match b {
                BalanceResult::Failed { error } => no_secret(&error.message),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn a_tampered_state_is_refused() {
    let g = gate();
    let inp = input(&[A], "hi");
    for state in ["", "nonsense", r#"{"step":"single","done":[{"ids":["1"]}]}"#] {
        let ex = Exchange::answered(state, ok("1"));
        let e = g.send(&inp, Some(&ex)).err().unwrap_or_else(|| panic!("{state:?} accepted"));
        assert_eq!(e.code, "plugin_error");
    }
    let ex = Exchange::answered("batch", ok("1"));
    assert!(g.balance(&json!({}), Some(&ex)).is_err());
    let ex = Exchange::answered(r#"{"updates":[],"parts":["delivered"],"used":1}"#, ok("deliver"));
    assert!(g.status(&StatusInput { refs: vec!["1".into()] }, Some(&ex)).is_err());
}

// ---- status --------------------------------------------------------------------------------

#[test]
fn every_documented_status_word() {
    let cases = [
        ("send", "sent"),
        ("deliver", "delivered"),
        ("not_deliver", "undelivered"),
        ("expired", "expired"),
        // Sibling platforms (README, unconfirmed here).
        ("read", "delivered"),
        ("partly_deliver", "sent"),
        ("", "sent"),
        // Case and whitespace do not matter.
        ("DELIVER\r\n", "delivered"),
        (" Not_Deliver ", "undelivered"),
    ];
    for (word, expected) in cases {
        let (reqs, result) = status(&gate(), &["38421"], &[ok(word)]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(param(&reqs[0], "msgid").as_deref(), Some("38421"));
        assert_eq!(statuses(result), [("38421".to_owned(), expected.to_owned())], "{word:?}");
    }
}

#[test]
fn sibling_platforms_smsid_parameter() {
    let g = gate_with(json!({"username": USERNAME, "password": PASSWORD, "status_param": "smsid"}));
    let (reqs, result) = status(&g, &["38421,38422"], &[ok("read"), ok("partly_deliver")]);
    assert_eq!(reqs.iter().map(|r| param(r, "smsid").unwrap()).collect::<Vec<_>>(), ["38421", "38422"]);
    assert_eq!(statuses(result), [("38421,38422".to_owned(), "sent".to_owned())]);
}

#[test]
fn a_recipient_of_several_parts_is_delivered_only_when_every_part_is() {
    let r = "38421,38422";
    let (reqs, result) = status(&gate(), &[r], &[ok("deliver"), ok("deliver")]);
    assert_eq!(reqs.iter().map(|q| param(q, "msgid").unwrap()).collect::<Vec<_>>(), ["38421", "38422"]);
    assert_eq!(statuses(result), [(r.to_owned(), "delivered".to_owned())]);

    let (_, result) = status(&gate(), &[r], &[ok("deliver"), ok("not_deliver")]);
    assert_eq!(statuses(result), [(r.to_owned(), "undelivered".to_owned())]);

    let (_, result) = status(&gate(), &[r], &[ok("deliver"), ok("expired")]);
    assert_eq!(statuses(result), [(r.to_owned(), "expired".to_owned())]);

    // A part still pending decides at once: no need to ask for the others.
    let (reqs, result) = status(&gate(), &[r], &[ok("send")]);
    assert_eq!(reqs.len(), 1);
    assert_eq!(statuses(result), [(r.to_owned(), "sent".to_owned())]);

    let (reqs, result) = status(&gate(), &[r], &[ok("not_deliver")]);
    assert_eq!(reqs.len(), 1);
    assert_eq!(statuses(result), [(r.to_owned(), "undelivered".to_owned())]);
}

#[test]
fn several_references_in_one_call() {
    let (reqs, result) =
        status(&gate(), &["1", "2,3", "4"], &[ok("deliver"), ok("deliver"), ok("send"), ok("expired")]);
    assert_eq!(reqs.len(), 4);
    let expected =
        [("1", "delivered"), ("2,3", "sent"), ("4", "expired")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(statuses(result), expected);
}

#[test]
fn status_stops_at_the_exchange_budget() {
    let ids: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let r = ids.join(",");
    let answers = vec![ok("deliver"); 20];
    let (reqs, result) = status(&gate(), &[&r], &answers);
    assert_eq!(reqs.len(), MAX_EXCHANGES);
    assert!(statuses(result).is_empty(), "not reported: the host keeps it pending");
}

#[test]
fn status_errors_fail_the_call() {
    let e = status_error(status(&gate(), &["1"], &[ok("Wrong login or password")]).1);
    assert_eq!((e.code.as_str(), e.provider_code.as_deref()), ("auth", Some("Wrong login or password")));
    let e = status_error(status(&gate(), &["1"], &[ok("Your account is blocked")]).1);
    assert_eq!((e.code.as_str(), e.retryable), ("auth", false));
    let e = status_error(status(&gate(), &["1"], &[resp(503, "")]).1);
    assert_eq!((e.code.as_str(), e.retryable), ("unavailable", true));
    let e = status_error(status(&gate(), &["1"], &[resp(429, "slow down")]).1);
    assert_eq!((e.code.as_str(), e.retryable), ("throttled", true));
    for body in
        ["bogus", "<html><body>Error</body></html>", "{\"status\":", "delivered!", &"y".repeat(1 << 20)]
    {
        let e = status_error(status(&gate(), &["1"], &[ok(body)]).1);
        assert_eq!(e.code, "plugin_error", "{}", snippet_of(body));
        assert!(e.message.contains("unknown status") && e.message.len() < 300, "{}", e.message);
    }
    // An empty body is a queued message, but not on an error status.
    let e = status_error(status(&gate(), &["1"], &[resp(404, "")]).1);
    assert!(e.message.contains("an empty body"), "{}", e.message);
}

#[test]
fn a_malformed_reference_ends_unknown_without_a_request() {
    let (reqs, result) = status(&gate(), &["", "1,,2", "1;2"], &[]);
    assert!(reqs.is_empty());
    let StatusResult::Statuses { statuses } = result else { panic!() };
    assert_eq!(statuses.len(), 3);
    for s in statuses {
        assert_eq!(s.status, "unknown");
        assert_eq!(s.error.map(|e| e.code), Some(ErrorCode::PluginError));
    }
}

// ---- balance -------------------------------------------------------------------------------

#[test]
fn the_documented_balance_answer() {
    let body = "1000 EUR UK:4600,Germany:3700,Netherlands:300,Latvia:7100,Russia:4000";
    let (_, b) = balance(&gate(), ok(body));
    assert_eq!(b, BalanceResult::Balance { amount: 1000.0, currency: "EUR".into() });
    let (_, b) = balance(&gate(), ok("12.50 usd\n"));
    assert_eq!(b, BalanceResult::Balance { amount: 12.5, currency: "USD".into() });
    let (_, b) = balance(&gate(), ok("350 UK:4600"));
    assert_eq!(b, BalanceResult::Balance { amount: 350.0, currency: "credits".into() });
}

#[test]
fn balance_errors() {
    let failed = |answer| match balance(&gate(), answer).1 {
        BalanceResult::Failed { error } => error,
        other => panic!("{other:?}"),
    };
    assert_eq!(failed(ok("Wrong login or password")).code, "auth");
    assert_eq!(failed(resp(503, "")).code, "unavailable");
    for body in ["", "EUR 1000", "<html></html>", "{\"balance\":"] {
        let e = failed(ok(body));
        assert_eq!(e.code, "plugin_error", "{body}");
    }
}

// ---- never a panic ---------------------------------------------------------------------------

fn any_response() -> impl Strategy<Value = HttpResponse> {
    let body = prop_oneof![
        any::<String>(),
        "[0-9, ]{0,40}",
        "(send|deliver|not_deliver|expired|read|partly_deliver|Out of SMS|No sender\\.|[ \r\n]){0,3}",
        "[0-9]{1,6} [A-Za-z]{0,4}.{0,20}",
    ];
    (100u16..1000, body, proptest::option::of("[0-9a-zA-Z ,:-]{0,12}")).prop_map(|(status, body, retry)| {
        let mut r = resp(status, &body);
        if let Some(v) = retry {
            r.headers.insert("retry-after".into(), v);
        }
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn send_answers_never_panic(
        answers in proptest::collection::vec(any_response(), 1..=16),
        n in 1usize..5,
    ) {
        let to: Vec<String> = (0..n).map(|i| format!("4915171112{i:03}")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let inp = input(&to, "hi");
        let g = gate();
        let mut exchange: Option<Exchange> = None;
        for answer in answers {
            match g.send(&inp, exchange.as_ref()).expect("a step") {
                Step::Done { done: SendResult::Recipients { recipients } } => {
                    prop_assert_eq!(recipients.len(), n);
                    for r in &recipients {
                        prop_assert!(r.error.is_some() != r.provider_message_id.is_some());
                        if let Some(e) = &r.error { prop_assert!(!e.message.contains(PASSWORD)); }
                    }
                    break;
                }
                Step::Done { done: SendResult::Failed { error } } => {
                    prop_assert!(!error.message.contains(PASSWORD));
                    prop_assert!(error.code != "plugin_error" || !error.retryable);
                    break;
                }
                Step::Http { state, .. } => exchange = Some(Exchange::answered(state, answer)),
            }
        }
    }

    #[test]
    fn status_and_balance_answers_never_panic(
        answers in proptest::collection::vec(any_response(), 1..=16),
        parts in 1usize..4,
    ) {
        let g = gate();
        let reference = (1..=parts).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let inp = StatusInput { refs: vec![reference] };
        let mut exchange: Option<Exchange> = None;
        for answer in &answers {
            match g.status(&inp, exchange.as_ref()).expect("a step") {
                Step::Done { .. } => break,
                Step::Http { state, .. } => exchange = Some(Exchange::answered(state, answer.clone())),
            }
        }
        let ex = Exchange::answered("balance", answers[0].clone());
        let done = matches!(g.balance(&json!({}), Some(&ex)), Ok(Step::Done { .. }));
        prop_assert!(done);
    }

    #[test]
    fn any_text_and_sender_reach_the_gateway_unchanged(text in any::<String>(), from in "[A-Za-z0-9 ]{1,11}") {
        let mut inp = input(&[A], &text);
        inp.from = Some(from.clone());
        let Ok(Step::Http { http, .. }) = gate().send(&inp, None) else { panic!("a request") };
        prop_assert_eq!(param(&http, "text"), Some(text));
        prop_assert_eq!(param(&http, "sadr"), Some(from));
        prop_assert!(!http.url.contains(' '));
    }
}
