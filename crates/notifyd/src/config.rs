//! Configuration: a TOML file merged with `NOTIFYD_<SECTION>__<KEY>` environment variables.
//!
//! Loading reports every problem at once: each section and each `[[providers]]`/`[[routes]]` block
//! is deserialized on its own (unknown keys are errors), then a validation pass checks what the
//! types cannot (routes naming unknown providers, missing `*_env` variables, bad URLs...).
//! See `docs/configuration.md` for every key and its default.

use figment::providers::{Env, Format, Toml};
use figment::value::Value;
use figment::{Figment, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret value (password, token): its `Debug` prints `***`. The plugin SDK's type, shared.
pub use notifyd_plugin::sdk::Secret;

/// Everything that can go wrong loading a configuration: a list of sentences for people.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(problem: impl Into<String>) -> Self {
        ConfigError { problems: vec![problem.into()] }
    }
}

/// A duration in the humantime grammar ("500ms", "30s", "1h30m"). A bare number, whether an
/// integer, a float or a string (`30`, `30.5`, `"30"`), is refused with a word on the unit it
/// lacks, whatever the source: TOML and `NOTIFYD_` variables (`=30` arrives as an integer) alike.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

/// The problem with a bare number as a duration (`30`, `"30"`, `2.5`): it names the unit it lacks.
/// Durations are no secret, so the number is echoed, cut short.
fn needs_a_unit(number: &str) -> String {
    let number: String = number.chars().take(20).collect();
    let example = match number.parse::<f64>() {
        _ if number.chars().all(|c| c.is_ascii_digit()) => format!("\"{number}s\" or \"{number}ms\""),
        // A fraction, read as seconds: units take whole numbers.
        Ok(secs) if secs.is_finite() && (0.0..1e9).contains(&secs) => {
            let ms = (secs * 1000.0).round() as u64;
            format!("\"{}s {}ms\" or \"{ms}ms\"", ms / 1000, ms % 1000)
        }
        _ => "\"30s\" or \"500ms\"".to_owned(),
    };
    format!("{number} has no time unit: write a string with one, e.g. {example}; units: ms, s, m, h, d")
}

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration with a unit, such as \"30s\"")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
        let trimmed = s.trim();
        let numeric = |c: char| c.is_ascii_digit() || c == '.' || c == '-';
        if trimmed.chars().any(|c| c.is_ascii_digit()) && trimmed.chars().all(numeric) {
            return Err(E::custom(needs_a_unit(trimmed)));
        }
        humantime::parse_duration(s).map_err(|e| {
            let given: String = s.chars().take(32).collect();
            E::custom(format!("invalid duration {given:?}: {e} (examples: \"500ms\", \"30s\", \"1h30m\")"))
        })
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
        Err(E::custom(needs_a_unit(&n.to_string())))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
        Err(E::custom(needs_a_unit(&n.to_string())))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
        Err(E::custom(needs_a_unit(&n.to_string())))
    }
}

/// A size in bytes: a whole number of bytes, or a string with a unit: `"512MiB"`, `"4 GiB"`,
/// `"2GB"`. KB, MB, GB and TB are powers of 1000; KiB, MiB, GiB and TiB powers of 1024 (any case).
fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    const EXAMPLES: &str = "a whole number of bytes or a string such as \"512MiB\" or \"4GB\"";
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => {
            // As a string's: a size JetStream can hold (an i64).
            n.as_u64()
                .filter(|&b| i64::try_from(b).is_ok())
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("must be {EXAMPLES}, not {n}")))
        }
        serde_json::Value::String(s) => parse_bytes(&s).map(Some).map_err(D::Error::custom),
        _ => Err(D::Error::custom(format!("must be {EXAMPLES}"))),
    }
}

/// [`opt_bytes`]' reading of a string.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let given: String = text.chars().take(24).collect();
    let not_a_size = || format!("{given:?} is not a size: a whole number with a unit, e.g. \"512MiB\"");
    if digits.is_empty() || unit.starts_with([',', '.', '_']) {
        return Err(not_a_size());
    }
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{given:?} has an unknown unit: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(not_a_size)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A traffic class: `"urgent"`, `"normal"` or `"bulk"`; anything else is explained in those words.
fn opt_class<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::class::Class>, D::Error> {
    const ALLOWED: &str = "\"urgent\", \"normal\" or \"bulk\"";
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => crate::class::Class::parse(&s).map(Some).ok_or_else(|| {
            let given: String = s.chars().take(16).collect();
            serde::de::Error::custom(format!("must be {ALLOWED} (lower case), not {given:?}"))
        }),
        _ => Err(serde::de::Error::custom(format!("must be a string, {ALLOWED}"))),
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsConfig,
    pub intake: IntakeConfig,
    pub limits: LimitsConfig,
    pub plugins: PluginsConfig,
    pub metrics: MetricsConfig,
    pub callbacks: CallbacksConfig,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub tracking: TrackingConfig,
    pub balance: BalanceConfig,
    pub shutdown: ShutdownConfig,
    pub scheduling: SchedulingConfig,
    pub providers: Vec<ProviderConfig>,
    pub routes: Vec<RouteConfig>,
    /// The directory relative paths are resolved against (the config file's).
    pub base_dir: PathBuf,
}

/// The least `[intake] max_bytes`: one request of the largest size NATS takes by default.
pub const MIN_INTAKE_BYTES: u64 = 1 << 20;

/// The most replicas JetStream keeps of a stream: `[nats] replicas` is 1 to this.
pub const MAX_REPLICAS: usize = 5;

/// `[nats]`: how to reach NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prefix of every subject. Default `notify`.
    pub subject_prefix: String,
    /// Credentials file (JWT + nkey seed). Default: none.
    pub creds_file: Option<PathBuf>,
    /// File holding an nkey seed. Default: none.
    pub nkey_file: Option<PathBuf>,
    /// User name for user/password authentication. Default: none.
    pub user: Option<String>,
    /// Password (or `password_env`). Default: none.
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    /// Token (or `token_env`). Default: none.
    pub token: Option<Secret>,
    pub token_env: Option<String>,
    /// CA certificate (PEM) to verify the server; setting it requires TLS. Default: none.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS. Default: none.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long to wait for a connection. Default 5s.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Replicas of every stream and bucket notifyd creates, 1 to 5; an existing one with another
    /// count is updated to it at start-up (see [`crate::nats`]). Default: unset, which creates
    /// them with 1 replica and leaves the replicas of existing ones as they are.
    pub replicas: Option<usize>,
    /// Placement tags of every stream and bucket notifyd creates (JetStream places the replicas
    /// on servers that have all of them); an existing one with other tags is updated. Default:
    /// none (any server, and existing placements are left as they are).
    pub placement_tags: Vec<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "notify".into(),
            creds_file: None,
            nkey_file: None,
            user: None,
            password: None,
            password_env: None,
            token: None,
            token_env: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            connect_timeout: Duration::from_secs(5),
            replicas: None,
            placement_tags: Vec::new(),
        }
    }
}

impl NatsConfig {
    /// Takes `NOTIFYD_NATS__PASSWORD`/`__TOKEN` from `env` as they are (figment would read
    /// `123456` as a number, and `012345` as 12345).
    fn take_raw_env_secrets(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        for (var, _) in RAW_ENV_SECRETS {
            if let Some(value) = env(var) {
                let slot = if var.ends_with("PASSWORD") { &mut self.password } else { &mut self.token };
                *slot = Some(Secret::new(value));
            }
        }
    }

    /// Checks the table, and takes `password_env`/`token_env` from `env`.
    fn check(&mut self, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) {
        if !is_token(&self.subject_prefix) {
            problems.push(format!(
                "[nats] subject_prefix {:?} must be a NATS subject of letters, digits, '-', '_' and '.'",
                self.subject_prefix
            ));
        }
        for (key, value) in [("password", &mut self.password), ("token", &mut self.token)] {
            let env_key = if key == "password" { &self.password_env } else { &self.token_env };
            if let Some(var) = env_key {
                match env(var) {
                    Some(v) if value.is_none() => *value = Some(Secret::new(v)),
                    Some(_) => problems.push(format!("[nats] sets both {key} and {key}_env; keep one")),
                    None => problems.push(format!("[nats] {key}_env names ${var}, which is not set")),
                }
            }
        }
        if self.password.is_some() != self.user.is_some() {
            problems.push("[nats] user and password go together; set both or neither".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push("[nats] tls_cert and tls_key go together; set both or neither".into());
        }
        if let Some(n) = self.replicas.filter(|n| !(1..=MAX_REPLICAS).contains(n)) {
            problems.push(format!(
                "[nats] replicas must be between 1 and {MAX_REPLICAS} (JetStream keeps at most {MAX_REPLICAS} copies), not {n}"
            ));
        }
        if self.placement_tags.iter().any(|t| t.trim().is_empty() || t.contains(',')) {
            problems.push("[nats] placement_tags must be non-empty tags without ','".into());
        }
    }

    /// Resolves the table's relative file paths against `base` (the config file's directory).
    fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.creds_file,
            &mut self.nkey_file,
            &mut self.tls_ca,
            &mut self.tls_cert,
            &mut self.tls_key,
        ] {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        }
    }
}

/// How requests come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntakeMode {
    /// Durable: a JetStream work-queue stream and a shared pull consumer per send subject
    /// (default).
    Jetstream,
    /// At-most-once: a core NATS queue-group subscription, with a synchronous reply.
    Core,
}

/// `[intake]`: streams, consumer, bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// `"jetstream"` (default) or `"core"`.
    pub mode: IntakeMode,
    /// Stream of send requests. Default `NOTIFY_SMS`.
    pub stream: String,
    /// Durable pull consumer of `<prefix>.sms.send` shared by replicas; those of the per-class
    /// subjects are `<consumer>_<class>`. Core mode: the queue group and the held stream's
    /// consumer. Default `notifyd`.
    pub consumer: String,
    /// Stream capturing status events. Default `NOTIFY_SMS_STATUS`.
    pub status_stream: String,
    /// Key-value bucket of the idempotency ledger. Default `notifyd_ledger`. Its name also
    /// prefixes the buckets `<ledger_bucket>_replicas` and `<ledger_bucket>_callbacks`.
    pub ledger_bucket: String,
    /// Stream holding status-tracking entries. Default `NOTIFY_SMS_TRACKING`.
    pub tracking_stream: String,
    /// Stream keeping dead letters (`<prefix>.sms.dead`). Default `NOTIFY_SMS_DEAD`.
    pub dead_letter_stream: String,
    /// Core mode: stream holding requests whose `send_at` lies ahead (`<prefix>.sms.held`).
    /// Default `NOTIFY_SMS_HELD`.
    pub held_stream: String,
    /// Redelivery delay after a replica dies. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub ack_wait: Duration,
    /// Requests in flight per replica. Default 1000.
    pub max_in_flight: usize,
    /// Stream of the providers' queues (`<prefix>.sms.queue.<provider>.<class>.<lane>`) and their
    /// expiry twins (`<prefix>.sms.expire.<provider>.<class>.<lane>`). Default
    /// `NOTIFY_SMS_QUEUE`.
    pub queue_stream: String,
    /// The intake stream's size limit: beyond it JetStream refuses new requests (the publisher
    /// gets error 10077 `maximum bytes exceeded`), so a flood of requests cannot fill the store
    /// that ledger records and status events need. Default: none (the stream grows until the
    /// server's store is full).
    #[serde(deserialize_with = "opt_bytes")]
    pub max_bytes: Option<u64>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            mode: IntakeMode::Jetstream,
            stream: "NOTIFY_SMS".into(),
            consumer: "notifyd".into(),
            status_stream: "NOTIFY_SMS_STATUS".into(),
            ledger_bucket: "notifyd_ledger".into(),
            tracking_stream: "NOTIFY_SMS_TRACKING".into(),
            dead_letter_stream: "NOTIFY_SMS_DEAD".into(),
            held_stream: "NOTIFY_SMS_HELD".into(),
            ack_wait: Duration::from_secs(30),
            max_in_flight: 1000,
            queue_stream: "NOTIFY_SMS_QUEUE".into(),
            max_bytes: None,
        }
    }
}

/// `[limits]`: request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Recipients per request. Default 1000.
    pub max_recipients: usize,
    /// Segments per text. Default 10.
    pub max_segments: u32,
    /// How far ahead `send_at` may lie; a request beyond it is rejected. Default 365d.
    #[serde(deserialize_with = "duration")]
    pub max_schedule_ahead: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_recipients: 1000,
            max_segments: 10,
            max_schedule_ahead: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// `[plugins]`: where plugin libraries are found.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directories searched before the executable's directory and `/usr/lib/notifyd/plugins`.
    pub dirs: Vec<PathBuf>,
}

/// `[metrics]`: the HTTP listener for `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Default `0.0.0.0:9464`.
    pub listen: String,
    /// Time a client has to send a request's head once its first byte arrived. Default 10s.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A connection with no request for this long is closed. Default 60s.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Time for one request, its body included, from its head to the answer. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Connections open at once; further ones are answered 503 and closed. Default 64.
    pub max_connections: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "0.0.0.0:9464".into(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// `[callbacks]`: provider-pushed delivery reports; off unless `listen` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksConfig {
    /// Listen address. Default: none (off).
    pub listen: Option<String>,
    /// Unmatched reports kept. Default 100000.
    pub max_unmatched: usize,
    /// As `[metrics] header_timeout`, for the callback listener. Default 10s.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// As `[metrics] idle_timeout`, for the callback listener. Default 60s.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// As `[metrics] request_timeout`, for the callback listener. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// As `[metrics] max_connections`, for the callback listener. Default 512.
    pub max_connections: usize,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig {
            listen: None,
            max_unmatched: 100_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// What to do after an ambiguous attempt (timeout after the request was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAmbiguous {
    Resend,
    Fail,
}

/// `[retry]`: retries per provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per provider, the first included. Default 3.
    pub max_attempts: u32,
    /// Default 500ms.
    #[serde(deserialize_with = "duration")]
    pub initial_backoff: Duration,
    /// Default 30s; a longer Retry-After fails over instead.
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// `"resend"` (default) or `"fail"`.
    pub on_ambiguous: OnAmbiguous,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            on_ambiguous: OnAmbiguous::Resend,
        }
    }
}

/// `[breaker]`: circuit breaker per provider instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open it. Default 5.
    pub failures: u32,
    /// Then one probe. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures: 5, cool_down: Duration::from_secs(30) }
    }
}

/// `[tracking]`: delivery status polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// First status query after `sent`. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub first_poll: Duration,
    /// Backoff cap between queries. Default 10m.
    #[serde(deserialize_with = "duration")]
    pub max_interval: Duration,
    /// Then `unknown`. Default 48h.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            first_poll: Duration::from_secs(30),
            max_interval: Duration::from_secs(600),
            window: Duration::from_secs(48 * 3600),
        }
    }
}

/// `[balance]`: balance polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    /// Poll interval; `"0s"` disables. Default 5m.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig { interval: Duration::from_secs(300) }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time to finish or hand back in-flight work on SIGTERM. Default 20s.
    #[serde(deserialize_with = "duration")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace: Duration::from_secs(20) }
    }
}

/// `[scheduling]`: how a provider's capacity is shared between classes (docs/scheduling.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulingConfig {
    /// Share of `normal` against `bulk` when both wait. Default 4.
    pub normal_weight: u32,
    /// Share of `bulk` against `normal` when both wait. Default 1.
    pub bulk_weight: u32,
    /// The tag that names a request's tenant. Default `tenant`.
    pub tenant_tag: String,
    /// Queues per provider and class that tenants not listed in `tenants` share, by a hash of
    /// their name. Default 4.
    pub tenant_shards: u32,
    /// Tenants with queues of their own, a metric label and an optional quota.
    pub tenants: Vec<TenantConfig>,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            normal_weight: 4,
            bulk_weight: 1,
            tenant_tag: "tenant".into(),
            tenant_shards: 4,
            tenants: Vec::new(),
        }
    }
}

/// `[[scheduling.tenants]]`: a tenant with queues of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant tag's value (letters, digits, '_' and '-').
    pub name: String,
    /// The tenant's quota, calls per second over every provider (per deployment). Default none.
    pub rate_per_second: Option<f64>,
    /// Its burst. Default `rate_per_second`.
    pub burst: Option<u32>,
}

/// `[[providers]]`: one provider instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Instance name, used in routes, events and metrics. Required.
    pub name: String,
    /// Plugin name (`libnotifyd_<plugin>.so` in the plugin dirs) or a path. Required.
    pub plugin: String,
    /// Default: the provider's production URL.
    pub base_url: Option<String>,
    /// Default sender id, for requests without `from`. Default: none. After validation it is in
    /// normal form, like a request's `from` (`" +4915171112233"` becomes `"4915171112233"`).
    pub sender: Option<String>,
    /// The sender as written (blanks trimmed), when its normal form differs (a leading `+`):
    /// plugins get it as `from_given`.
    #[serde(skip)]
    pub sender_given: Option<String>,
    /// HTTP timeout per call. Default 10s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Calls per second to this provider for the whole deployment: each of `n` live replicas
    /// sends `rate_per_second / n` (see [`crate::replicas`]). Default unlimited.
    pub rate_per_second: Option<f64>,
    /// Calls that may go out at once after a quiet period, for the whole deployment (each replica
    /// holds `burst / n`, at least 1). Default `rate_per_second` rounded up.
    pub burst: Option<u32>,
    /// Calls in flight to this provider at once, per replica. Default unlimited.
    pub max_concurrency: Option<usize>,
    /// Tickets waiting in each of this provider's queues (per class and tenant lane); beyond it,
    /// intake holds requests back. Default 1,000,000.
    pub max_queued: Option<u64>,
    /// Low-balance alert threshold.
    pub low_balance: Option<f64>,
    /// Shared secret in the callback path (or `callback_token_env`).
    pub callback_token: Option<Secret>,
    pub callback_token_env: Option<String>,
    /// Handed to the plugin as JSON; `<key>_env = "VAR"` is replaced by `<key> = $VAR`.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl ProviderConfig {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10))
    }
}

/// `[[routes]]`: longest matching prefix wins; providers are tried in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Number prefixes (digits, international); `""` matches every number.
    pub prefixes: Vec<String>,
    /// Provider instance names, in failover order.
    pub providers: Vec<String>,
    /// The class of a request routed here that states none. Default `normal`.
    #[serde(default, deserialize_with = "opt_class")]
    pub priority: Option<crate::class::Class>,
}

const SECTIONS: &[&str] = &[
    "nats",
    "intake",
    "limits",
    "plugins",
    "metrics",
    "callbacks",
    "retry",
    "breaker",
    "tracking",
    "balance",
    "shutdown",
    "scheduling",
    "providers",
    "routes",
];

/// The largest `[scheduling]` weight: shares are ratios, and a larger one only starves the other
/// class for longer.
const MAX_WEIGHT: u32 = 1000;

/// The most connections a listener may be configured to hold.
const MAX_LISTENER_CONNECTIONS: usize = 1_000_000;

/// Secrets set by environment variable, read verbatim (variable, figment's key for it).
const RAW_ENV_SECRETS: [(&str, &str); 2] =
    [("NOTIFYD_NATS__PASSWORD", "nats__password"), ("NOTIFYD_NATS__TOKEN", "nats__token")];

/// The prefix of the environment variables that override the file.
const ENV_PREFIX: &str = "NOTIFYD_";

/// The `NOTIFYD_<SECTION>__<KEY>` variables merged over the file, without the secrets that are
/// read verbatim ([`RAW_ENV_SECRETS`]).
fn environment() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|k| {
            k.as_str().contains("__")
                && !RAW_ENV_SECRETS.iter().any(|(_, key)| k.as_str().eq_ignore_ascii_case(key))
        })
        .split("__")
}

/// The names of the `NOTIFYD_<SECTION>__<KEY>` variables set in this process, sorted: the part of
/// the configuration that does not come from the file. Names only: values may be secrets.
pub fn environment_overrides() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.get(..ENV_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                && name.contains("__")
        })
        .collect();
    names.sort();
    names
}

/// Where the config file is: `--config`, else `config/notifyd.toml` if present, else
/// `/etc/notifyd/notifyd.toml`.
pub fn default_path() -> PathBuf {
    let local = PathBuf::from("config/notifyd.toml");
    if local.exists() { local } else { PathBuf::from("/etc/notifyd/notifyd.toml") }
}

impl Config {
    /// Loads the file at `path` merged with the process environment, and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::one(format!(
                "the config file {} does not exist (pass --config FILE, or start from config/notifyd.toml)",
                path.display()
            )));
        }
        // Secrets from the environment are taken as they are: figment would read `123456` as a
        // number (and `012345` as 12345).
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(environment());
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_figment(&figment, base_dir, &|name| std::env::var(name).ok(), true)
    }

    /// The `[nats]` table alone, for commands that are only NATS clients (`notifyd send`): from
    /// the file at `path` when one is given (its other sections are not read, so a client needs
    /// no provider secrets), then the `NOTIFYD_NATS__*` variables, checked as [`Config::load`]
    /// checks them. Without a file, the defaults and the environment.
    pub fn load_nats(path: Option<&Path>) -> Result<NatsConfig, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::one(format!("the config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let figment = figment.merge(environment());
        // The whole document is read (a file that does not parse is an error, never "no [nats]
        // table"), then only its `nats` table is taken, as `Config::load` takes it.
        let root: BTreeMap<String, Value> =
            figment.extract().map_err(|e| ConfigError::one(figment_error(&e, "", &figment, None)))?;
        let mut nats: NatsConfig = match root.get("nats") {
            None => NatsConfig::default(),
            Some(value) => value.deserialize().map_err(|e| {
                ConfigError::one(figment_error(&e, "[nats]", &figment, Some(("nats", value))))
            })?,
        };
        let env = |name: &str| std::env::var(name).ok();
        nats.take_raw_env_secrets(&env);
        let mut problems = Vec::new();
        nats.check(&env, &mut problems);
        let base = path.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        nats.resolve_paths(&base);
        if problems.is_empty() { Ok(nats) } else { Err(ConfigError { problems }) }
    }

    /// Loads a configuration from TOML text (for tests and `check-config` on a string).
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let figment = Figment::new().merge(Toml::string(text));
        Self::from_figment(&figment, base_dir.to_path_buf(), &|name| std::env::var(name).ok(), false)
    }

    /// `raw_env_secrets`: take `NOTIFYD_NATS__PASSWORD`/`__TOKEN` from `env` as they are.
    fn from_figment(
        figment: &Figment,
        base_dir: PathBuf,
        env: &dyn Fn(&str) -> Option<String>,
        raw_env_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let root: BTreeMap<String, Value> =
            figment.extract().map_err(|e| ConfigError::one(figment_error(&e, "", figment, None)))?;
        let mut problems = Vec::new();
        for (key, value) in &root {
            if !SECTIONS.contains(&key.as_str()) {
                let known = SECTIONS.join(", ");
                problems.push(match env_vars(figment, &[key], value).as_slice() {
                    [] => format!("unknown section `{key}` (known: {known})"),
                    vars => format!("{}: unknown section `{key}` (known: {known})", env_names(vars)),
                });
            }
        }
        macro_rules! table {
            ($name:literal, $ty:ty) => {
                match root.get($name) {
                    None => <$ty>::default(),
                    Some(v) => match v.deserialize::<$ty>() {
                        Ok(t) => t,
                        Err(e) => {
                            let at = concat!("[", $name, "]");
                            problems.push(figment_error(&e, at, figment, Some(($name, v))));
                            <$ty>::default()
                        }
                    },
                }
            };
        }
        let mut cfg = Config {
            nats: table!("nats", NatsConfig),
            intake: table!("intake", IntakeConfig),
            limits: table!("limits", LimitsConfig),
            plugins: table!("plugins", PluginsConfig),
            metrics: table!("metrics", MetricsConfig),
            callbacks: table!("callbacks", CallbacksConfig),
            retry: table!("retry", RetryConfig),
            breaker: table!("breaker", BreakerConfig),
            tracking: table!("tracking", TrackingConfig),
            balance: table!("balance", BalanceConfig),
            shutdown: table!("shutdown", ShutdownConfig),
            scheduling: table!("scheduling", SchedulingConfig),
            providers: Vec::new(),
            routes: Vec::new(),
            base_dir,
        };
        if raw_env_secrets {
            cfg.nats.take_raw_env_secrets(env);
        }
        let mut provider_names = HashSet::new();
        cfg.providers = blocks::<ProviderConfig>(figment, &root, "providers", &mut problems, |v| {
            // Remember the names of blocks that fail to parse too, so routes do not report them.
            if let Some(name) = v.find_ref("name").and_then(|n| n.as_str().map(str::to_owned)) {
                provider_names.insert(name);
            }
        });
        cfg.routes = blocks::<RouteConfig>(figment, &root, "routes", &mut problems, |_| {});
        let validated_from = problems.len();
        cfg.validate(&provider_names, env, &mut problems);
        let raw_set: Vec<&str> = RAW_ENV_SECRETS
            .iter()
            .map(|(var, _)| *var)
            .filter(|var| raw_env_secrets && env(var).is_some())
            .collect();
        name_env_sources(&mut problems[validated_from..], figment, &root, &raw_set);
        cfg.resolve_paths();
        if problems.is_empty() { Ok(cfg) } else { Err(ConfigError { problems }) }
    }

    fn validate(
        &mut self,
        parsed_names: &HashSet<String>,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) {
        self.nats.check(env, problems);
        for (name, stream) in [
            ("stream", &self.intake.stream),
            ("consumer", &self.intake.consumer),
            ("status_stream", &self.intake.status_stream),
            ("ledger_bucket", &self.intake.ledger_bucket),
            ("tracking_stream", &self.intake.tracking_stream),
            ("dead_letter_stream", &self.intake.dead_letter_stream),
            ("held_stream", &self.intake.held_stream),
            ("queue_stream", &self.intake.queue_stream),
        ] {
            if stream.is_empty() || !stream.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems
                    .push(format!("[intake] {name} {stream:?} may only hold letters, digits, '_' and '-'"));
            }
        }
        if self.intake.max_in_flight == 0 {
            problems.push("[intake] max_in_flight must be at least 1".into());
        }
        if self.intake.max_bytes.is_some() && self.intake.mode == IntakeMode::Core {
            problems.push(
                "[intake] max_bytes limits the intake stream of mode = \"jetstream\"; core mode has none: \
                 remove the key"
                    .into(),
            );
        }
        if let Some(bytes) = self.intake.max_bytes.filter(|&b| b < MIN_INTAKE_BYTES) {
            problems.push(format!(
                "[intake] max_bytes must be at least 1MiB ({MIN_INTAKE_BYTES} bytes, the largest NATS \
                 message by default), not {bytes}"
            ));
        }
        if self.intake.ack_wait < Duration::from_secs(1) {
            problems.push("[intake] ack_wait must be at least 1s".into());
        }
        for (key, weight) in
            [("normal_weight", self.scheduling.normal_weight), ("bulk_weight", self.scheduling.bulk_weight)]
        {
            if !(1..=MAX_WEIGHT).contains(&weight) {
                problems
                    .push(format!("[scheduling] {key} must be between 1 and {MAX_WEIGHT} (it is {weight})"));
            }
        }
        if self.limits.max_recipients == 0 || self.limits.max_segments == 0 {
            problems.push("[limits] max_recipients and max_segments must be at least 1".into());
        }
        // JetStream's redelivery delay is a signed 64-bit count of nanoseconds (about 292 years).
        if self.limits.max_schedule_ahead.is_zero()
            || self.limits.max_schedule_ahead > Duration::from_secs(250 * 31_557_600)
        {
            problems.push("[limits] max_schedule_ahead must be between 1s and 250 years".into());
        }
        if self.retry.max_attempts == 0 {
            problems.push("[retry] max_attempts must be at least 1 (the first attempt counts)".into());
        }
        if self.tracking.first_poll.is_zero() || self.tracking.max_interval.is_zero() {
            problems.push("[tracking] first_poll and max_interval must be longer than 0s".into());
        }
        for (section, timeouts, max_connections) in [
            (
                "metrics",
                [self.metrics.header_timeout, self.metrics.idle_timeout, self.metrics.request_timeout],
                self.metrics.max_connections,
            ),
            (
                "callbacks",
                [self.callbacks.header_timeout, self.callbacks.idle_timeout, self.callbacks.request_timeout],
                self.callbacks.max_connections,
            ),
        ] {
            if timeouts.iter().any(Duration::is_zero) {
                problems.push(format!(
                    "[{section}] header_timeout, idle_timeout and request_timeout must be longer than 0s"
                ));
            }
            if max_connections == 0 || max_connections > MAX_LISTENER_CONNECTIONS {
                problems.push(format!(
                    "[{section}] max_connections must be between 1 and {MAX_LISTENER_CONNECTIONS}"
                ));
            }
        }
        for (section, addr, port) in [
            ("metrics", Some(&self.metrics.listen), 9464),
            ("callbacks", self.callbacks.listen.as_ref(), 9465),
        ] {
            if let Some(problem) = addr.and_then(|addr| listen_problem(section, addr, port)) {
                problems.push(problem);
            }
        }

        let mut seen = HashSet::new();
        for p in &mut self.providers {
            let at = format!("[[providers]] {:?}", p.name);
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push(format!("{at}: name may only hold letters, digits, '_' and '-'"));
            }
            if !seen.insert(p.name.clone()) {
                problems.push(format!("{at}: the name is used by two providers"));
            }
            if let Some(url) = &p.base_url {
                match reqwest::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => problems.push(format!("{at}: base_url {url:?} is not an http(s) URL")),
                }
            }
            // Kept in normal form, as a request's `from` is: a plugin gets the same `from`
            // whichever of the two it came from (docs/plugin-authors.md, `send`).
            if let Some(sender) = &mut p.sender {
                match notifyd_sms::validate_sender(sender) {
                    Ok(normal) => {
                        p.sender_given = Some(sender.trim().to_owned()).filter(|given| *given != normal);
                        *sender = normal;
                    }
                    Err(e) => problems.push(format!("{at}: sender {sender:?}: {e}")),
                }
            }
            if let Some(rate) = p.rate_per_second {
                if !(rate > 0.0 && rate.is_finite()) {
                    problems.push(format!("{at}: rate_per_second must be a positive number"));
                }
            }
            if p.timeout() < Duration::from_millis(1) {
                problems.push(format!("{at}: timeout must be longer than 0s"));
            }
            if p.max_concurrency == Some(0) {
                problems
                    .push(format!("{at}: max_concurrency must be at least 1 (leave it out for no limit)"));
            }
            if p.max_queued == Some(0) {
                problems.push(format!("{at}: max_queued must be at least 1"));
            }
            if let Some(var) = &p.callback_token_env {
                match env(var) {
                    Some(v) if v.is_empty() => {
                        problems.push(format!("{at}: callback_token_env names ${var}, which is empty"))
                    }
                    Some(v) if p.callback_token.is_none() => p.callback_token = Some(Secret::new(v)),
                    Some(_) => {
                        problems.push(format!("{at}: sets both callback_token and callback_token_env"))
                    }
                    None => problems.push(format!("{at}: callback_token_env names ${var}, which is not set")),
                }
            }
            // An empty token would leave the endpoint open while the path looks guarded.
            if p.callback_token.as_ref().is_some_and(|t| t.expose().is_empty()) {
                problems
                    .push(format!("{at}: callback_token is empty; set a long random one, or leave it out"));
            }
            resolve_env_settings(&at, &mut p.settings, env, problems);
        }

        let sched = &self.scheduling;
        if sched.tenant_tag.is_empty() || sched.tenant_tag.chars().count() > 64 {
            problems.push("[scheduling] tenant_tag must be 1 to 64 characters".into());
        }
        if !(1..=64).contains(&sched.tenant_shards) {
            problems.push("[scheduling] tenant_shards must be between 1 and 64".into());
        }
        let mut tenant_names = HashSet::new();
        for (i, t) in sched.tenants.iter().enumerate() {
            let at = format!("[[scheduling.tenants]] #{}", i + 1);
            let token = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if t.name.is_empty() || t.name.len() > 64 || !t.name.chars().all(token) {
                problems.push(format!("{at}: name must be 1 to 64 letters, digits, '_' or '-'"));
            }
            if !tenant_names.insert(t.name.as_str()) {
                problems.push(format!("{at}: the tenant is listed twice"));
            }
            if t.rate_per_second.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                problems.push(format!("{at}: rate_per_second must be a positive number"));
            }
        }

        if self.providers.is_empty() && !problems.iter().any(|p| p.starts_with("[[providers]]")) {
            problems.push("no [[providers]] block: configure at least one provider instance".into());
        }
        if self.routes.is_empty() && !problems.iter().any(|p| p.starts_with("[[routes]]")) {
            problems.push("no [[routes]] block: add one, e.g. prefixes = [\"\"] with your providers".into());
        }
        let mut prefixes = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("[[routes]] #{}", i + 1);
            if r.providers.is_empty() {
                problems.push(format!("{at}: providers is empty"));
            }
            for name in &r.providers {
                if !parsed_names.contains(name) {
                    problems
                        .push(format!("{at}: names provider {name:?}, which no [[providers]] block defines"));
                }
            }
            for prefix in &r.prefixes {
                if !prefix.chars().all(|c| c.is_ascii_digit()) || prefix.len() > 15 {
                    problems
                        .push(format!("{at}: prefix {prefix:?} must be digits only (international, no '+')"));
                }
                if !prefixes.insert(prefix.clone()) {
                    problems.push(format!("{at}: prefix {prefix:?} appears in two routes"));
                }
            }
        }
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir.clone();
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.plugins.dirs.iter_mut().for_each(abs);
        self.nats.resolve_paths(&base);
        for p in &mut self.providers {
            if p.plugin.contains('/') && Path::new(&p.plugin).is_relative() {
                p.plugin = base.join(&p.plugin).to_string_lossy().into_owned();
            }
        }
    }

    /// The subject requests arrive on: `<prefix>.sms.send` (and `<prefix>.sms.send.<class>`, see
    /// [`crate::nats::send_subjects`]).
    pub fn send_subject(&self) -> String {
        crate::nats::send_subject(&self.nats.subject_prefix)
    }
}

/// What is wrong with `[<section>] listen = addr`, if anything: it must be a literal IP address and
/// port, since a host name would be looked up once, at start-up, with no say over which of its
/// addresses is bound. The examples keep the port given (else `default_port`).
fn listen_problem(section: &str, addr: &str, default_port: u16) -> Option<String> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(default_port);
    let given: String = addr.chars().take(64).collect();
    Some(format!(
        "[{section}] listen {given:?} is not an IP address and port (host names are not looked up): \
         write \"127.0.0.1:{port}\" (this host only) or \"0.0.0.0:{port}\" (every interface)"
    ))
}

/// Replaces every `<key>_env = "VAR"` in plugin settings with `<key> = $VAR`.
fn resolve_env_settings(
    at: &str,
    settings: &mut serde_json::Map<String, serde_json::Value>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    let env_keys: Vec<String> = settings.keys().filter(|k| k.ends_with("_env")).cloned().collect();
    for key in env_keys {
        let target = key.trim_end_matches("_env").to_owned();
        let Some(serde_json::Value::String(var)) = settings.remove(&key) else {
            problems.push(format!("{at}: settings.{key} must name an environment variable"));
            continue;
        };
        if settings.contains_key(&target) {
            problems.push(format!("{at}: settings set both {target} and {key}; keep one"));
        } else if let Some(value) = env(&var) {
            settings.insert(target, serde_json::Value::String(value));
        } else {
            problems.push(format!("{at}: settings.{key} names ${var}, which is not set"));
        }
    }
}

/// Deserializes each element of an array of tables on its own, so each block reports its problem.
fn blocks<T: DeserializeOwned>(
    figment: &Figment,
    root: &BTreeMap<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
    mut each: impl FnMut(&Value),
) -> Vec<T> {
    let Some(value) = root.get(key) else { return Vec::new() };
    let Some(items) = value.as_array() else {
        problems.push(match env_vars(figment, &[key], value).as_slice() {
            [] => format!("`{key}` must be an array of tables ([[{key}]] blocks)"),
            vars => format!("{}: [[{key}]] blocks come only from the config file", env_names(vars)),
        });
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        each(item);
        match item.deserialize::<T>() {
            Ok(t) => out.push(t),
            Err(e) => {
                let name = item.find_ref("name").and_then(|n| n.as_str().map(str::to_owned));
                let which = name.map_or_else(|| format!("#{}", i + 1), |n| format!("{n:?}"));
                problems.push(figment_error(&e, &format!("[[{key}]] {which}"), figment, None));
            }
        }
    }
    out
}

/// figment's message as one problem, `at` (`[intake]`) the place it concerns, with the key and
/// without figment's profile noise. Values are never quoted (the key may hold a secret, a numeric
/// password or a token, whatever its type or source), except enum and duration values.
///
/// `section` is the name and value of the section read: a value that came from a `NOTIFYD_`
/// variable is named by that variable, since the file is not where it needs fixing.
fn figment_error(e: &figment::Error, at: &str, figment: &Figment, section: Option<(&str, &Value)>) -> String {
    e.clone()
        .into_iter()
        .map(|e| {
            let key: Vec<&str> = e.path.iter().map(String::as_str).filter(|k| *k != "default").collect();
            let kind = describe_kind(&e.kind);
            let from_env = section.and_then(|(name, value)| {
                let value = if key.is_empty() { Some(value) } else { value.find_ref(&key.join(".")) }?;
                let path: Vec<&str> = std::iter::once(name).chain(key.iter().copied()).collect();
                Some(env_vars(figment, &path, value)).filter(|vars| !vars.is_empty())
            });
            match from_env {
                Some(vars) => format!("{}: {kind}{}", env_names(&vars), env_type_hint(&e.kind, &vars[0])),
                None if key.is_empty() && at.is_empty() => kind,
                None if key.is_empty() => format!("{at}: {kind}"),
                None => format!("{at}: `{}`: {kind}", key.join(".")),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `NOTIFYD_` variables that set `value`, found at `path` (`["intake", "ack_wait"]`), or
/// parts of it; empty when the file set all of it. A table is looked into: `NOTIFYD_BOGUS__X`
/// makes a table `bogus` whose key `x` carries the variable's mark.
fn env_vars(figment: &Figment, path: &[&str], value: &Value) -> Vec<String> {
    match value {
        Value::Dict(_, dict) if !dict.is_empty() => dict
            .iter()
            .flat_map(|(key, v)| {
                let path: Vec<&str> = path.iter().copied().chain([key.as_str()]).collect();
                env_vars(figment, &path, v)
            })
            .collect(),
        _ => {
            let env = environment().metadata().name;
            if figment.get_metadata(value.tag()).is_some_and(|m| m.name == env) {
                vec![format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())]
            } else {
                Vec::new()
            }
        }
    }
}

/// `environment variable NOTIFYD_A__B` (or `variables A, B`), the start of a problem of theirs.
fn env_names(vars: &[String]) -> String {
    let s = if vars.len() == 1 { "" } else { "s" };
    format!("environment variable{s} {}", vars.join(", "))
}

/// Names the `NOTIFYD_` variables behind the validation problems of a section: `[intake] ack_wait
/// must be at least 1s`, when `NOTIFYD_INTAKE__ACK_WAIT=0s` set it, is fixed there, not in the
/// file. A problem is `[<section>] …`; every key of the section it mentions is looked up.
/// `raw_env_secrets`: the variables read verbatim ([`RAW_ENV_SECRETS`]) that are set.
fn name_env_sources(
    problems: &mut [String],
    figment: &Figment,
    root: &BTreeMap<String, Value>,
    raw_env_secrets: &[&str],
) {
    for problem in problems {
        let Some((section, rest)) = problem.strip_prefix('[').and_then(|p| p.split_once(']')) else {
            continue;
        };
        let table = root.get(section);
        let mut vars: Vec<String> = Vec::new();
        let words = rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty());
        for word in words {
            let raw = format!("{ENV_PREFIX}{section}__{word}").to_ascii_uppercase();
            let found = if raw_env_secrets.contains(&raw.as_str()) {
                vec![raw]
            } else {
                let value = table.and_then(|t| t.find_ref(word));
                value.map(|v| env_vars(figment, &[section, word], v)).unwrap_or_default()
            };
            for var in found {
                if !vars.contains(&var) {
                    vars.push(var);
                }
            }
        }
        if !vars.is_empty() {
            problem.push_str(&format!(" (set by the {})", env_names(&vars)));
        }
    }
}

/// For a variable read as a number or boolean where a string was expected: how to pass a string.
fn env_type_hint(kind: &figment::error::Kind, var: &str) -> String {
    use figment::error::{Actual, Kind};
    match kind {
        Kind::InvalidType(
            Actual::Bool(_) | Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_),
            e,
        ) if e == "a string" => {
            format!(" (it reads as a number or boolean; to pass a string, quote it: {var}='\"…\"')")
        }
        _ => String::new(),
    }
}

/// A figment error kind in words, naming types but never values, except an enum's (a choice
/// among names, never a secret).
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    let what = |actual: &Actual| {
        match actual {
            Actual::Bool(_) => "a boolean",
            Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
            Actual::Float(_) => "a float",
            Actual::Char(_) | Actual::Str(_) => "a string",
            Actual::Bytes(_) => "bytes",
            Actual::Unit | Actual::Option => "nothing",
            Actual::Seq => "an array",
            Actual::Map => "a table",
            _ => "a value of another type",
        }
        .to_owned()
    };
    match kind {
        Kind::InvalidType(actual, expected) => {
            format!("invalid type: found {}, expected {expected}", what(actual))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value: found {}, expected {expected}", what(actual))
        }
        Kind::Unsupported(actual) => format!("unsupported type: {}", what(actual)),
        Kind::UnsupportedKey(actual, need) => {
            format!("unsupported key type: found {}, need {need}", what(actual))
        }
        Kind::Message(text) => without_source_lines(text),
        // figment's own words put the names inside another pair of backticks (expected ``resend`
        // or `fail``). An enum value is no secret, so it is shown.
        Kind::UnknownVariant(given, allowed) => {
            let given: String = given.chars().take(32).collect();
            format!("must be {}, not {given:?}", one_of(allowed))
        }
        Kind::UnknownField(_, allowed) => format!("unknown key (known: {})", allowed.join(", ")),
        other => other.to_string(),
    }
}

/// `"a", "b" or "c"`.
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.as_slice() {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A parse error without the lines of the file it quotes (`3 | password = "hunter2`), which may
/// hold a secret: the position and the reason stay.
fn without_source_lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|'))
        .collect::<Vec<_>>()
        .join(": ")
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[providers]]
name = "sandbox"
plugin = "sandbox"

[[routes]]
prefixes = [""]
providers = ["sandbox"]
"#;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let cfg = Config::from_toml(MINIMAL, Path::new("/etc/notifyd")).unwrap();
        assert_eq!(cfg.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(cfg.intake.stream, "NOTIFY_SMS");
        assert_eq!(cfg.intake.ack_wait, Duration::from_secs(30));
        assert_eq!(cfg.limits.max_recipients, 1000);
        assert_eq!(cfg.tracking.window, Duration::from_secs(48 * 3600));
        assert_eq!(cfg.providers[0].timeout(), Duration::from_secs(10));
        assert_eq!(cfg.send_subject(), "notify.sms.send");
    }

    #[test]
    fn a_provider_sender_is_kept_in_normal_form_like_a_request_from() {
        // The sender as written reaches plugins as `from_given` when it differs (blanks aside).
        for (given, normal, kept) in [
            ("+4915171112233", "4915171112233", Some("+4915171112233")),
            (" MyShop ", "MyShop", None),
            ("7255", "7255", None),
        ] {
            let text =
                MINIMAL.replace("plugin = \"sandbox\"", &format!("plugin = \"sandbox\"\nsender = {given:?}"));
            let cfg = Config::from_toml(&text, Path::new(".")).unwrap();
            assert_eq!(cfg.providers[0].sender.as_deref(), Some(normal), "{given:?}");
            assert_eq!(cfg.providers[0].sender_given.as_deref(), kept, "{given:?}");
        }
        let text = MINIMAL.replace("plugin = \"sandbox\"", "plugin = \"sandbox\"\nsender = \"+MyShop\"");
        let err = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert!(err.problems.iter().any(|p| p.contains("sender \"+MyShop\"")), "{:?}", err.problems);
    }

    #[test]
    fn intake_max_bytes_takes_bytes_or_a_unit_and_explains_the_rest() {
        let with = |value: &str| {
            Config::from_toml(&format!("{MINIMAL}\n[intake]\nmax_bytes = {value}\n"), Path::new("."))
        };
        assert_eq!(Config::from_toml(MINIMAL, Path::new(".")).unwrap().intake.max_bytes, None);
        // A number beyond what JetStream holds (only an environment variable can give one: TOML
        // stops at i64) is refused like a string.
        #[derive(Debug, Deserialize)]
        struct Size {
            #[serde(deserialize_with = "opt_bytes")]
            #[allow(dead_code)]
            max_bytes: Option<u64>,
        }
        let huge = serde_json::json!({"max_bytes": 9_223_372_036_854_775_808_u64});
        let err = serde_json::from_value::<Size>(huge).unwrap_err().to_string();
        assert!(err.contains("whole number of bytes"), "{err}");
        let core = format!("{MINIMAL}\n[intake]\nmode = \"core\"\nmax_bytes = \"1GiB\"\n");
        let err = Config::from_toml(&core, Path::new(".")).unwrap_err();
        assert!(err.problems.iter().any(|p| p.contains("core mode has none")), "{:?}", err.problems);
        for (value, bytes) in [
            ("1048576", 1_048_576),
            ("\"1MiB\"", 1 << 20),
            ("\"4 GiB\"", 4 << 30),
            ("\"2gb\"", 2_000_000_000),
            ("\"1500000 B\"", 1_500_000),
            ("\"1TB\"", 1_000_000_000_000),
        ] {
            assert_eq!(with(value).unwrap().intake.max_bytes, Some(bytes), "{value}");
        }
        for (value, says) in [
            ("\"1.5GB\"", "is not a size"),
            ("\"10XB\"", "unknown unit"),
            ("\"GiB\"", "is not a size"),
            ("-5", "whole number of bytes"),
            ("\"99999999TiB\"", "is not a size"),
            ("1024", "at least 1MiB"),
        ] {
            let err = with(value).unwrap_err();
            assert!(err.problems.iter().any(|p| p.contains(says)), "{value}: {:?}", err.problems);
        }
    }

    #[test]
    fn unknown_key_and_unknown_route_provider_are_reported_together() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nprefixes = [\"49\"]\nproviders = [\"nope\"]\n[nats]\nurll = \"x\"\n"
        );
        let err = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{:?}", err.problems);
        assert!(err.problems.iter().any(|p| p.contains("urll")), "{:?}", err.problems);
        assert!(err.problems.iter().any(|p| p.contains("\"nope\"")), "{:?}", err.problems);
    }

    #[test]
    fn bad_duration_and_unknown_section_are_explained() {
        let text = format!("{MINIMAL}\n[retry]\ninitial_backoff = \"fast\"\n[bogus]\nx = 1\n");
        let err = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert!(err.problems.iter().any(|p| p.contains("invalid duration \"fast\"")), "{:?}", err.problems);
        assert!(err.problems.iter().any(|p| p.contains("unknown section `bogus`")), "{:?}", err.problems);
    }

    #[test]
    fn env_settings_are_resolved_and_missing_ones_named() {
        let mut settings = serde_json::Map::new();
        settings.insert("password_env".into(), "PW".into());
        settings.insert("token_env".into(), "MISSING".into());
        let mut problems = Vec::new();
        let env = |k: &str| (k == "PW").then(|| "s3cret".to_owned());
        resolve_env_settings("[[providers]] \"x\"", &mut settings, &env, &mut problems);
        assert_eq!(settings.get("password").and_then(|v| v.as_str()), Some("s3cret"));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("$MISSING") && !problems[0].contains("s3cret"));
    }

    #[test]
    fn no_secret_value_appears_in_an_error_whatever_its_type() {
        let cases = [
            ("[nats]\nuser = \"u\"\npassword = 98765432109\n", "98765432109", "`password`"),
            ("[nats]\ntoken = 98765.5\n", "98765", "`token`"),
            ("[nats]\ntoken = true\n", "true", "`token`"),
            ("[nats]\ntoken = [\"s3cr3t-in-array\"]\n", "s3cr3t-in-array", "`token`"),
            (
                "[[providers]]\nname = \"p\"\nplugin = \"x\"\ncallback_token = 12345678\n",
                "12345678",
                "callback_token",
            ),
            ("[nats]\nuser = \"u\"\npassword = \"unterminated-s3cret\n", "s3cret", "invalid basic string"),
        ];
        for (text, secret, names) in cases {
            let err =
                Config::from_toml(&format!("{MINIMAL}\n{text}"), Path::new(".")).unwrap_err().to_string();
            assert!(!err.contains(secret), "the value leaks: {err}");
            assert!(err.contains(names), "the problem names {names}: {err}");
        }
        let err =
            Config::from_toml(&format!("{MINIMAL}\n[nats]\npassword = 5\n"), Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("found an integer, expected a string"), "{err}");
    }

    #[test]
    fn an_empty_callback_token_and_an_absurd_connection_cap_are_refused() {
        let text = MINIMAL.replace("plugin = \"sandbox\"", "plugin = \"sandbox\"\ncallback_token = \"\"");
        let text = format!("{text}\n[callbacks]\nmax_connections = 100000000\n");
        let err = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert!(err.problems.iter().any(|p| p.contains("callback_token is empty")), "{:?}", err.problems);
        assert!(err.problems.iter().any(|p| p.contains("[callbacks] max_connections")), "{:?}", err.problems);
    }

    #[test]
    fn scheduling_weights_are_between_1_and_1000() {
        let cfg = Config::from_toml(MINIMAL, Path::new(".")).unwrap();
        assert_eq!((cfg.scheduling.normal_weight, cfg.scheduling.bulk_weight), (4, 1), "the defaults");
        let ok = format!("{MINIMAL}\n[scheduling]\nnormal_weight = 1000\nbulk_weight = 1\n");
        assert!(Config::from_toml(&ok, Path::new(".")).is_ok());
        let text = format!("{MINIMAL}\n[scheduling]\nnormal_weight = 0\nbulk_weight = 1001\n");
        let err = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{:?}", err.problems);
        assert!(
            err.problems
                .iter()
                .any(|p| p == "[scheduling] normal_weight must be between 1 and 1000 (it is 0)"),
            "{:?}",
            err.problems
        );
        assert!(
            err.problems.iter().any(|p| p.contains("bulk_weight") && p.contains("1001")),
            "{:?}",
            err.problems
        );
        let text = format!("{MINIMAL}\n[scheduling]\nbulk_weight = -1\n");
        let err = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.starts_with("[scheduling]: `bulk_weight`")),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn provider_queue_bounds_are_at_least_1() {
        let with =
            |keys: &str| MINIMAL.replace("plugin = \"sandbox\"", &format!("plugin = \"sandbox\"\n{keys}"));
        let cfg = Config::from_toml(&with("max_concurrency = 1\nmax_queued = 1"), Path::new(".")).unwrap();
        assert_eq!((cfg.providers[0].max_concurrency, cfg.providers[0].max_queued), (Some(1), Some(1)));
        let cfg = Config::from_toml(MINIMAL, Path::new(".")).unwrap();
        assert_eq!((cfg.providers[0].max_concurrency, cfg.providers[0].max_queued), (None, None));
        let err =
            Config::from_toml(&with("max_concurrency = 0\nmax_queued = 0"), Path::new(".")).unwrap_err();
        assert_eq!(
            err.problems,
            [
                "[[providers]] \"sandbox\": max_concurrency must be at least 1 (leave it out for no limit)",
                "[[providers]] \"sandbox\": max_queued must be at least 1",
            ]
        );
        let err = Config::from_toml(&with("max_queued = -5"), Path::new(".")).unwrap_err();
        assert!(err.problems.iter().any(|p| p.contains("`max_queued`")), "{:?}", err.problems);
    }

    #[test]
    fn a_route_priority_must_name_a_class() {
        let with = |value: &str| {
            MINIMAL.replace(
                "providers = [\"sandbox\"]",
                &format!("providers = [\"sandbox\"]\npriority = {value}"),
            )
        };
        let cfg = Config::from_toml(&with("\"bulk\""), Path::new(".")).unwrap();
        assert_eq!(cfg.routes[0].priority, Some(crate::class::Class::Bulk));
        assert_eq!(Config::from_toml(MINIMAL, Path::new(".")).unwrap().routes[0].priority, None);
        for (value, says) in [
            ("\"high\"", r#"must be "urgent", "normal" or "bulk" (lower case), not "high""#),
            ("\"URGENT\"", r#"not "URGENT""#),
            ("1", r#"must be a string, "urgent", "normal" or "bulk""#),
            ("[\"urgent\"]", "must be a string"),
        ] {
            let err = Config::from_toml(&with(value), Path::new(".")).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{value}: {:?}", err.problems);
            assert!(
                err.problems[0].starts_with("[[routes]] #1: `priority`: "),
                "{value}: {:?}",
                err.problems
            );
            assert!(err.problems[0].contains(says), "{value}: {:?}", err.problems);
        }
    }

    /// The one problem `text` (after [`MINIMAL`]) has.
    fn the_problem(text: &str) -> String {
        let err = Config::from_toml(&format!("{MINIMAL}\n{text}"), Path::new(".")).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{text}: {:?}", err.problems);
        err.problems[0].clone()
    }

    #[test]
    fn a_bare_number_is_not_a_duration_and_says_which_unit_it_lacks() {
        let int = "[intake]: `ack_wait`: 30 has no time unit: write a string with one, e.g. \"30s\" or \"30ms\"; units: ms, s, m, h, d";
        assert_eq!(the_problem("[intake]\nack_wait = 30"), int);
        assert_eq!(the_problem("[intake]\nack_wait = \"30\""), int, "a string holding a bare number");
        assert_eq!(the_problem("[intake]\nack_wait = \" 30 \""), int);
        assert!(
            the_problem("[intake]\nack_wait = 30.5").ends_with(
                "30.5 has no time unit: write a string with one, e.g. \"30s 500ms\" or \"30500ms\"; units: ms, s, m, h, d"
            ),
            "a float"
        );
        assert!(the_problem("[retry]\ninitial_backoff = -5").contains("-5 has no time unit"));
        assert!(
            the_problem("[[providers]]\nname = \"b\"\nplugin = \"x\"\ntimeout = 10")
                .starts_with("[[providers]] \"b\": `timeout`: 10 has no time unit")
        );
        assert_eq!(
            the_problem("[intake]\nack_wait = true"),
            "[intake]: `ack_wait`: invalid type: found a boolean, expected a duration with a unit, such as \"30s\""
        );
        let long = format!("[intake]\nack_wait = \"{}\"", "9".repeat(10_000));
        assert!(the_problem(&long).len() < 200, "a hostile value is cut short");
        let long = format!("[intake]\nack_wait = \"{}\"", "x".repeat(10_000));
        assert!(the_problem(&long).len() < 200, "a hostile value is cut short");
        let cfg = Config::from_toml(&format!("{MINIMAL}\n[intake]\nack_wait = \"1m 30s\""), Path::new("."));
        assert_eq!(cfg.unwrap().intake.ack_wait, Duration::from_secs(90));
    }

    #[test]
    fn enum_values_and_unknown_keys_read_without_nested_backticks() {
        assert_eq!(
            the_problem("[retry]\non_ambiguous = \"x\""),
            "[retry]: `on_ambiguous`: must be \"resend\" or \"fail\", not \"x\""
        );
        assert_eq!(
            the_problem("[intake]\nmode = \"JetStream\""),
            "[intake]: `mode`: must be \"jetstream\" or \"core\", not \"JetStream\""
        );
        assert_eq!(
            the_problem("[breaker]\ncool_dwon = \"1s\""),
            "[breaker]: `cool_dwon`: unknown key (known: failures, cool_down)"
        );
        let hostile = format!("[retry]\non_ambiguous = \"{}\"", "\\u0007".repeat(1000));
        let problem = the_problem(&hostile);
        assert!(problem.len() < 300 && !problem.contains('\u{7}'), "cut short and escaped: {problem}");
        for text in ["[retry]\non_ambiguous = \"x\"", "[nats]\nurll = \"x\"", "[intake]\nmode = 1"] {
            assert!(!the_problem(text).contains("``"), "{text}: {}", the_problem(text));
        }
    }

    #[test]
    fn a_listen_address_that_is_not_an_ip_names_its_key_and_the_fix() {
        assert_eq!(
            the_problem("[metrics]\nlisten = \"localhost:9464\""),
            "[metrics] listen \"localhost:9464\" is not an IP address and port (host names are not \
             looked up): write \"127.0.0.1:9464\" (this host only) or \"0.0.0.0:9464\" (every interface)"
        );
        assert!(
            the_problem("[callbacks]\nlisten = \":8080\"")
                .starts_with("[callbacks] listen \":8080\" is not an IP address and port"),
            "{}",
            the_problem("[callbacks]\nlisten = \":8080\"")
        );
        assert!(the_problem("[callbacks]\nlisten = \"example\"").contains("\"0.0.0.0:9465\""));
        let hostile = format!("[metrics]\nlisten = \"{}\"", "h".repeat(100_000));
        assert!(the_problem(&hostile).len() < 300);
        for ok in ["127.0.0.1:9464", "[::1]:9464", "0.0.0.0:0"] {
            let text = format!("{MINIMAL}\n[metrics]\nlisten = \"{ok}\"");
            assert!(Config::from_toml(&text, Path::new(".")).is_ok(), "{ok}");
        }
    }

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }
}
