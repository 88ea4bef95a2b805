//! The one shared HTTP client that performs every exchange a plugin asks for.
//!
//! Transport failures are classified here, because only the host can tell them apart: a connection
//! that failed before the request left is safe to retry; a timeout or a dropped connection after it
//! left is *ambiguous* (the provider may have sent the message). Error texts never carry the URL,
//! which holds credentials for some providers.

use notifyd_plugin::wire::{HttpRequest, HttpResponse};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest response body handed to a plugin; a longer one is cut (a hostile or broken provider
/// must not make the daemon buffer gigabytes).
pub const MAX_BODY: usize = 1 << 20;

/// Why an exchange produced no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The request never left (connection refused, DNS, TLS handshake): safe to retry.
    #[error("could not connect to the provider: {0}")]
    Connect(String),
    /// No answer within the provider's timeout; the request may have been processed.
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke after the request was sent; it may have been processed.
    #[error("the connection to the provider broke: {0}")]
    Broken(String),
    /// The plugin described a request that cannot be sent (bad method, URL or header).
    #[error("the plugin described an invalid HTTP request: {0}")]
    Invalid(String),
}

impl TransportError {
    /// Whether the provider may have acted on the request.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, TransportError::Timeout(_) | TransportError::Broken(_))
    }
}

/// The shared client: one connection pool for every provider.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// A client that keeps up to 256 idle connections per provider host.
    pub fn new() -> Self {
        Self::with_idle_per_host(256)
    }

    /// A client that keeps up to `idle` idle connections per provider host (each closed after
    /// 60 s unused). The daemon keeps as many as it may have calls in flight
    /// (`intake.max_in_flight`), so a busy provider's connections are reused instead of being
    /// closed and opened again (each a TLS handshake).
    pub fn with_idle_per_host(idle: usize) -> Self {
        // Providers are reached over rustls with the `ring` provider (the one async-nats uses too).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("notifyd/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client's TLS backend initialises");
        HttpClient { client }
    }

    /// Performs `req` with `timeout` for the whole exchange.
    pub async fn perform(
        &self,
        req: &HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| TransportError::Invalid(format!("method {:?}", req.method)))?;
        let mut url =
            reqwest::Url::parse(&req.url).map_err(|e| TransportError::Invalid(format!("URL: {e}")))?;
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&req.query);
        }
        let mut builder = self.client.request(method, url).timeout(timeout);
        let mut content_type = false;
        let mut authorization = false;
        for (name, value) in &req.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TransportError::Invalid(format!("header name {name:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| TransportError::Invalid(format!("value of header {name}")))?;
            content_type |= name == reqwest::header::CONTENT_TYPE;
            authorization |= name == reqwest::header::AUTHORIZATION;
            builder = builder.header(name, value);
        }
        let (body, kind) = body_of(req)?;
        if let (Some(kind), false) = (kind, content_type) {
            builder = builder.header(reqwest::header::CONTENT_TYPE, kind);
        }
        if !body.is_empty() {
            builder = builder.body(body);
        }
        if let Some(auth) = &req.basic_auth {
            if authorization {
                return Err(TransportError::Invalid(
                    "it has both `basic_auth` and an Authorization header".to_owned(),
                ));
            }
            builder = builder.basic_auth(&auth.user, Some(&auth.password));
        }
        let mut response = builder.send().await.map_err(|e| classify(e, timeout))?;
        let status = response.status().as_u16();
        let mut headers = BTreeMap::new();
        for (name, value) in response.headers() {
            if let Ok(v) = value.to_str() {
                headers.insert(name.as_str().to_owned(), v.to_owned());
            }
        }
        let expected = response.content_length().map_or(512, |n| n as usize);
        // Sized by Content-Length, within reason: a hostile length reserves at most 64 KiB.
        let mut body = Vec::with_capacity(expected.min(64 * 1024));
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, timeout))? {
            let room = MAX_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_BODY {
                break;
            }
        }
        let body = match String::from_utf8(body) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok(HttpResponse { status, headers, body, json: None })
    }
}

/// The body of `req` and the content type its form implies: `body` as it is, `form` encoded
/// (`application/x-www-form-urlencoded`) or `json` written (`application/json`); at most one.
fn body_of(req: &HttpRequest) -> Result<(String, Option<&'static str>), TransportError> {
    let given = [!req.body.is_empty(), !req.form.is_empty(), req.json.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(TransportError::Invalid("it has more than one of `body`, `form` and `json`".to_owned()));
    }
    if !req.form.is_empty() {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&req.form).finish();
        return Ok((body, Some("application/x-www-form-urlencoded")));
    }
    if let Some(json) = &req.json {
        return Ok((json.to_string(), Some("application/json")));
    }
    Ok((req.body.clone(), None))
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

fn classify(e: reqwest::Error, timeout: Duration) -> TransportError {
    let e = e.without_url();
    if e.is_timeout() {
        TransportError::Timeout(timeout)
    } else if e.is_connect() {
        TransportError::Connect(root_cause(&e))
    } else {
        TransportError::Broken(root_cause(&e))
    }
}

/// The innermost error message (reqwest's own text is generic).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use notifyd_plugin::wire::BasicAuth;
    use notifyd_testkit::{MockHttp, MockResponse};

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn the_host_encodes_query_form_and_basic_auth_for_the_plugin() {
        let mock = MockHttp::start(|_| MockResponse::ok("ok")).await;
        let req = HttpRequest {
            query: vec![("api key".into(), "a&b=c".into()), ("to".into(), "+49 151".into())],
            form: vec![("Body".into(), "Grüße & 100%".into()), ("To".into(), "4915171112233".into())],
            basic_auth: Some(BasicAuth { user: "acme".into(), password: "s3cret pw".into() }),
            ..HttpRequest::new("POST", format!("{}/send?x=1", mock.url()))
        };
        let response = HttpClient::new().perform(&req, TIMEOUT).await.unwrap();
        assert_eq!((response.status, response.body.as_str(), response.json), (200, "ok", None));
        let got = &mock.requests()[0];
        assert_eq!(got.query_params(), [("x", "1"), ("api key", "a&b=c"), ("to", "+49 151")].map(pair));
        assert_eq!(got.form_params(), [("Body", "Grüße & 100%"), ("To", "4915171112233")].map(pair));
        assert_eq!(got.header("content-type"), Some("application/x-www-form-urlencoded"));
        // `printf 'acme:s3cret pw' | base64`
        assert_eq!(got.header("authorization"), Some("Basic YWNtZTpzM2NyZXQgcHc="));
    }

    #[tokio::test]
    async fn a_json_body_is_written_with_its_type_unless_the_plugin_names_one() {
        let mock = MockHttp::start(|_| MockResponse::ok("")).await;
        let value = serde_json::json!({"to": ["4915171112233"], "text": "Grüße \"x\""});
        let json = HttpRequest { json: Some(value.clone()), ..HttpRequest::new("POST", mock.url()) };
        HttpClient::new().perform(&json, TIMEOUT).await.unwrap();
        let named = HttpRequest {
            headers: vec![("Content-Type".into(), "application/vnd.acme+json".into())],
            ..json.clone()
        };
        HttpClient::new().perform(&named, TIMEOUT).await.unwrap();
        let got = mock.requests();
        assert_eq!(got[0].json(), value);
        assert_eq!(got[0].header("content-type"), Some("application/json"));
        assert_eq!(got[1].header("content-type"), Some("application/vnd.acme+json"));
    }

    #[tokio::test]
    async fn a_request_with_two_bodies_or_two_authorizations_is_invalid_and_never_sent() {
        let mock = MockHttp::start(|_| MockResponse::ok("")).await;
        let both = HttpRequest {
            body: "a=1".into(),
            form: vec![("a".into(), "1".into())],
            ..HttpRequest::new("POST", mock.url())
        };
        let e = HttpClient::new().perform(&both, TIMEOUT).await.unwrap_err();
        assert!(matches!(&e, TransportError::Invalid(m) if m.contains("more than one of")), "{e}");
        let two_auths = HttpRequest {
            headers: vec![("authorization".into(), "Bearer t".into())],
            basic_auth: Some(BasicAuth { user: "u".into(), password: "secret-pw".into() }),
            ..HttpRequest::new("GET", mock.url())
        };
        let e = HttpClient::new().perform(&two_auths, TIMEOUT).await.unwrap_err();
        assert!(matches!(&e, TransportError::Invalid(m) if m.contains("basic_auth")), "{e}");
        assert!(!e.to_string().contains("secret-pw"), "{e}");
        assert_eq!(mock.request_count(), 0);
    }

    fn pair((k, v): (&str, &str)) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }
}
