//! The callback listener: `[callbacks] listen` (off by default) serves exactly
//! `/callbacks/<instance>[/<callback_token>]` for each provider instance whose plugin supports
//! `callback`. The plugin turns a report into status updates; each is applied through the
//! [callback index](super::callbacks), and the provider is answered only after the updates are
//! recorded (503 when the index cannot be read or written, so the provider retries).

use super::callbacks::{Applied, Index};
use crate::httpd::text as answer;
use crate::plugin::Op;
use crate::provider::Providers;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use notifyd_plugin::wire::{CallbackInput, CallbackResult};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Longest provider message id a report may name (it becomes part of a key and a subject).
const MAX_REFERENCE: usize = 256;

/// Largest report body accepted: 64 KiB.
const MAX_BODY: usize = 64 * 1024;

/// The listener's view of one provider instance.
struct Endpoint {
    token: Option<String>,
}

/// Serves `POST /callbacks/<instance>[/<token>]` on `listener`, within `settings`, until
/// shutdown begins.
pub async fn serve(
    listener: TcpListener,
    settings: crate::httpd::Settings,
    providers: Arc<Providers>,
    tokens: HashMap<String, Option<String>>,
    index: Index,
    shutdown: crate::shutdown::Shutdown,
) {
    let endpoints: Arc<BTreeMap<String, Endpoint>> = Arc::new(
        providers
            .list
            .iter()
            .filter(|p| p.supports(Op::Callback))
            .map(|p| {
                let token = tokens.get(&*p.name).cloned().flatten();
                if token.is_none() {
                    tracing::warn!(
                        provider = %p.name,
                        "callbacks for this provider need no token: anyone who can reach the listener can forge delivery reports; set callback_token"
                    );
                }
                (p.name.to_string(), Endpoint { token })
            })
            .collect(),
    );
    let handler = move |req: Request<Incoming>| {
        let (providers, endpoints, index) = (providers.clone(), endpoints.clone(), index.clone());
        async move { handle(req, &providers, &endpoints, &index).await }
    };
    crate::httpd::serve(listener, "callbacks", settings, handler, shutdown).await;
}

/// Most of a refused request's body read (and discarded) before it is answered, so the answer is
/// not lost to a reset when the socket closes with unread input; a larger body may still see one.
const DRAIN_MAX: usize = 2 * MAX_BODY;

/// Reads a body of at most [`MAX_BODY`] bytes. A larger one is `413` (after up to
/// [`DRAIN_MAX`] of it was read and discarded), one that cannot be read (a broken chunked
/// encoding, a connection closed early) `400`.
async fn read_body(mut body: Incoming) -> Result<Bytes, StatusCode> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY {
                kept.extend_from_slice(&data);
            } else if seen > DRAIN_MAX {
                break;
            }
        }
    }
    if seen > MAX_BODY { Err(StatusCode::PAYLOAD_TOO_LARGE) } else { Ok(Bytes::from(kept)) }
}

/// The instance named by a request target, when the target is exactly
/// `/callbacks/<instance>/<token>` (an instance with a token) or `/callbacks/<instance>` (one
/// without). Anything else, including a sub-path, a trailing `/`, doubled slashes and an
/// absolute-form target (`http://host/callbacks/…`), is `None`.
fn endpoint_of<'a>(uri: &'a hyper::Uri, endpoints: &BTreeMap<String, Endpoint>) -> Option<&'a str> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return None;
    }
    let rest = uri.path().strip_prefix("/callbacks/")?;
    let (instance, given) = match rest.split_once('/') {
        Some((instance, given)) => (instance, Some(given)),
        None => (rest, None),
    };
    let endpoint = endpoints.get(instance)?;
    match (&endpoint.token, given) {
        (Some(token), Some(given)) if constant_time_eq(token.as_bytes(), given.as_bytes()) => Some(instance),
        (None, None) => Some(instance),
        _ => None,
    }
}

async fn handle(
    req: Request<Incoming>,
    providers: &Providers,
    endpoints: &BTreeMap<String, Endpoint>,
    index: &Index,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Some((instance, provider)) =
        endpoint_of(&parts.uri, endpoints).and_then(|i| Some((i, providers.get(i)?)))
    else {
        let _ = read_body(body).await;
        return answer(StatusCode::NOT_FOUND, "not found\n");
    };
    let count = |result: &str| index.count(instance, result);
    let method = parts.method.as_str().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect();
    let body = match read_body(body).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(status) => {
            count("invalid");
            let why = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "report too large\n"
            } else {
                "cannot read the report\n"
            };
            return answer(status, why);
        }
    };
    // The path is always exact: a plugin gets no sub-path.
    let input = CallbackInput { method, path: String::new(), query, headers, body };
    let result: CallbackResult = match provider.run(Op::Callback, &input).await {
        Ok(r) => r,
        Err(e) => {
            count("invalid");
            let e = e.to_provider_error();
            tracing::info!(provider = %instance, code = %e.code, "refused a delivery report: {}", e.message);
            return answer(StatusCode::BAD_REQUEST, format!("invalid report: {}\n", e.message));
        }
    };
    for update in &result.updates {
        // The reference becomes a key and a subject: an empty or huge one is the plugin's error.
        if update.reference.is_empty() || update.reference.len() > MAX_REFERENCE {
            count("invalid");
            tracing::info!(provider = %instance, bytes = update.reference.len(), "ignored a report update whose message id is empty or longer than 256 bytes");
            continue;
        }
        match index.apply(instance, update).await {
            Ok(Applied::Matched) => count("matched"),
            Ok(Applied::Ignored) => count("ignored"),
            Ok(Applied::Unmatched { dropped }) => {
                count("unmatched");
                if dropped {
                    count("dropped");
                }
            }
            Err(e) => {
                tracing::warn!(provider = %instance, error = %e, "cannot record a delivery report now; the provider will retry");
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot record the report now; retry later\n",
                );
            }
        }
    }
    let status = StatusCode::from_u16(result.response_status).unwrap_or(StatusCode::OK);
    answer(status, result.response_body)
}

/// Compares secrets without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn only_the_exact_path_names_an_endpoint() {
        let endpoints: BTreeMap<String, Endpoint> = [
            ("intelli".to_owned(), Endpoint { token: Some("t0ken".to_owned()) }),
            ("open".to_owned(), Endpoint { token: None }),
        ]
        .into_iter()
        .collect();
        let of =
            |target: &str| endpoint_of(&target.parse::<hyper::Uri>().unwrap(), &endpoints).map(str::to_owned);
        assert_eq!(of("/callbacks/intelli/t0ken").as_deref(), Some("intelli"));
        assert_eq!(of("/callbacks/intelli/t0ken?msgid=1").as_deref(), Some("intelli"));
        assert_eq!(of("/callbacks/open").as_deref(), Some("open"));
        for refused in [
            "/callbacks/intelli/t0ken/extra",
            "/callbacks/intelli/t0ken/",
            "/callbacks/intelli",
            "/callbacks/intelli/",
            "/callbacks/intelli/wrong",
            "//callbacks/intelli/t0ken",
            "/callbacks//intelli/t0ken",
            "http://host/callbacks/intelli/t0ken",
            "/callbacks/open/",
            "/callbacks/open/x",
            "/callbacks/",
            "/callbacks",
            "*",
        ] {
            assert_eq!(of(refused), None, "{refused}");
        }
    }
}
