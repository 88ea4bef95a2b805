//! `MockHttp`, driven by hand-written HTTP/1.1 over plain TCP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use notifyd_testkit::{MockHttp, MockResponse};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One HTTP connection to the mock.
struct Connection {
    stream: BufReader<TcpStream>,
}

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

impl Connection {
    async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("connect to mock");
        Connection { stream: BufReader::new(stream) }
    }

    async fn send(&mut self, request: &str) {
        self.stream.get_mut().write_all(request.as_bytes()).await.expect("write request");
    }

    /// Reads one response with a `content-length` body.
    async fn read_answer(&mut self) -> Answer {
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).await.expect("read status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("read header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header has a colon");
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.parse().expect("numeric content-length"))
            .expect("content-length header");
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.expect("read body");
        Answer { status, headers, body: String::from_utf8(body).expect("UTF-8 body") }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: mock\r\n\r\n")).await;
        self.read_answer().await
    }
}

#[tokio::test]
async fn records_the_request_and_answers_as_configured() {
    let mock = MockHttp::start(|request| {
        MockResponse::status(201, format!("{{\"id\":\"m1\",\"path\":\"{}\"}}", request.path))
            .with_header("x-request-id", "r-17")
    })
    .await;
    assert_eq!(mock.url(), format!("http://127.0.0.1:{}", mock.addr().port()));

    let body = "to=%2B4915112345678&text=a%20b+c";
    let mut connection = Connection::open(mock.addr()).await;
    connection
        .send(&format!(
            "POST /v1/sms?api_key=k1&sender=Shop+Co HTTP/1.1\r\n\
             Host: provider.test\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             X-Custom: Yes\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await;
    let answer = connection.read_answer().await;

    assert_eq!(answer.status, 201);
    assert_eq!(answer.body, r#"{"id":"m1","path":"/v1/sms"}"#);
    assert_eq!(answer.header("x-request-id"), Some("r-17"));

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(mock.request_count(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/sms");
    assert_eq!(request.query, "api_key=k1&sender=Shop+Co");
    assert_eq!(request.query_param("sender").as_deref(), Some("Shop Co"));
    assert_eq!(request.body, body);
    assert_eq!(request.form_param("text").as_deref(), Some("a b c"));
    assert_eq!(request.form_param("to").as_deref(), Some("+4915112345678"));
    assert!(request.headers.contains(&("x-custom".to_owned(), "Yes".to_owned())), "{:?}", request.headers);
    assert_eq!(request.header("Host"), Some("provider.test"));
}

#[tokio::test]
async fn a_sequence_is_answered_in_order_on_one_kept_alive_connection() {
    let mock = MockHttp::start_sequence(vec![
        MockResponse::status(503, "busy"),
        MockResponse::json(200, r#"{"ok":true}"#),
    ])
    .await;

    let mut connection = Connection::open(mock.addr()).await;
    let first = connection.get("/a").await;
    let second = connection.get("/b").await;
    let third = connection.get("/c").await;

    assert_eq!((first.status, first.body.as_str()), (503, "busy"));
    assert_eq!((second.status, second.body.as_str()), (200, r#"{"ok":true}"#));
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!((third.status, third.body.as_str()), (200, r#"{"ok":true}"#));
    let paths: Vec<String> = mock
        .wait_for_requests(3, Duration::from_secs(5))
        .await
        .into_iter()
        .map(|request| request.path)
        .collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
}

#[tokio::test]
async fn a_delayed_answer_is_recorded_at_once_and_sent_late() {
    let delay = Duration::from_millis(300);
    let mock = MockHttp::start(move |_| MockResponse::ok("late").with_delay(delay)).await;
    let started = Instant::now();

    let mut connection = Connection::open(mock.addr()).await;
    connection.send("GET /slow HTTP/1.1\r\nHost: mock\r\n\r\n").await;
    let seen = mock.wait_for_requests(1, Duration::from_millis(250)).await;
    assert_eq!(seen[0].path, "/slow");
    let answer = connection.read_answer().await;

    assert!(started.elapsed() >= delay, "answered after {:?}", started.elapsed());
    assert_eq!(answer.body, "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_are_served_concurrently() {
    let delay = Duration::from_millis(200);
    let mock = MockHttp::start(move |_| MockResponse::ok("ok").with_delay(delay)).await;
    let started = Instant::now();

    let clients: Vec<_> = (0..50)
        .map(|i| {
            let addr = mock.addr();
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await;
                connection.get(&format!("/n/{i}")).await.status
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.expect("client task"), 200);
    }

    // One after the other, this would take 50 × 200 ms = 10 s.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(mock.request_count(), 50);
}

#[tokio::test]
async fn a_panicking_handler_answers_500_with_the_message() {
    let mock = MockHttp::start(|_| panic!("no answer configured")).await;

    let answer = Connection::open(mock.addr()).await.get("/x").await;

    assert_eq!(answer.status, 500);
    assert!(answer.body.contains("no answer configured"), "{}", answer.body);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn json_bodies_can_be_inspected() {
    let mock = MockHttp::start(|_| MockResponse::ok("")).await;
    let body = r#"{"to":"+4915112345678","text":"hi"}"#;

    let mut connection = Connection::open(mock.addr()).await;
    connection
        .send(&format!("POST /json HTTP/1.1\r\nHost: mock\r\nContent-Length: {}\r\n\r\n{body}", body.len()))
        .await;
    connection.read_answer().await;

    assert_eq!(mock.requests()[0].json()["text"], "hi");
}

#[tokio::test]
#[should_panic(expected = "expected 2 requests within 100ms, got 1")]
async fn waiting_for_requests_that_never_come_panics() {
    let mock = MockHttp::start(|_| MockResponse::ok("")).await;
    Connection::open(mock.addr()).await.get("/only").await;

    mock.wait_for_requests(2, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn drop_stops_the_server_and_closes_its_connections() {
    let mock = MockHttp::start(|_| MockResponse::ok("")).await;
    let addr = mock.addr();
    let mut kept_alive = Connection::open(addr).await;
    assert_eq!(kept_alive.get("/").await.status, 200);

    drop(mock);

    // The abort takes effect when the runtime next polls the task.
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), kept_alive.stream.read_to_end(&mut rest))
        .await
        .expect("the kept-alive connection is closed");
    assert!(rest.is_empty(), "{read:?}");
}
