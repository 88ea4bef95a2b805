//! Provider instances at run time: a plugin instance plus what the host adds around it (the shared
//! HTTP client, the instance's timeout and sender, metrics), and the loop that drives one operation
//! through its HTTP exchanges.

use crate::config::{Config, ProviderConfig};
use crate::http::{HttpClient, TransportError};
use crate::metrics::Metrics;
use crate::plugin::{self, Op, PluginError, PluginInstance, PluginLibrary};
use notifyd_plugin::abi;
use notifyd_plugin::wire::{
    BalanceResult, CallbackResult, Describe, ErrorCode, ErrorDoc, Exchange, InstanceInit, MAX_EXCHANGES,
    OpOutput, ProviderError, SendResult, StatusResult, Step, WIRE_VERSION,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why an operation gave no result.
#[derive(Debug, Clone, PartialEq)]
pub enum OpError {
    /// The plugin classified the failure, or failed itself (`plugin_error`).
    Plugin(ProviderError),
    /// The exchange produced no HTTP response.
    Transport(TransportError),
}

impl OpError {
    /// The normalised error this becomes in an event.
    pub fn to_provider_error(&self) -> ProviderError {
        match self {
            OpError::Plugin(e) => e.clone(),
            OpError::Transport(t @ TransportError::Timeout(_)) => {
                ProviderError::retryable(ErrorCode::Timeout, t.to_string())
            }
            OpError::Transport(t @ TransportError::Invalid(_)) => {
                ProviderError::new(ErrorCode::PluginError, t.to_string())
            }
            OpError::Transport(t) => ProviderError::retryable(ErrorCode::Unavailable, t.to_string()),
        }
    }
}

fn plugin_error(message: impl Into<String>) -> OpError {
    OpError::Plugin(ProviderError::new(ErrorCode::PluginError, message))
}

/// One configured provider instance.
pub struct Provider {
    /// The instance name (`[[providers]] name`).
    pub name: Arc<str>,
    pub instance: PluginInstance,
    /// The instance's default sender id.
    pub sender: Option<String>,
    pub timeout: Duration,
    http: HttpClient,
    metrics: Metrics,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("name", &self.name).field("instance", &self.instance).finish()
    }
}

impl Provider {
    pub fn describe(&self) -> &Describe {
        &self.instance.library().describe
    }

    pub fn supports(&self, op: Op) -> bool {
        self.instance.library().supports(op)
    }

    pub fn schedules_natively(&self) -> bool {
        self.instance.library().capabilities() & abi::CAP_SCHEDULE != 0
    }

    /// Runs `op` with `input` to its result, performing the HTTP exchanges the plugin asks for.
    pub async fn run<I: Serialize, R: DeserializeOwned + OpResultKind>(
        &self,
        op: Op,
        input: &I,
    ) -> Result<R, OpError> {
        let started = Instant::now();
        let result = self.drive::<I, R>(op, input).await;
        // A callback is inbound (a provider's report), counted by `notifyd_callbacks_total`:
        // these metrics count only the operations notifyd calls on providers.
        if op == Op::Callback {
            return result;
        }
        let label = match &result {
            Ok(r) => r.error_code().map_or("ok", ErrorCode::as_str).to_owned(),
            Err(e) => e.to_provider_error().code.to_string(),
        };
        self.metrics.provider_requests.with_label_values(&[&self.name, op.as_str(), &label]).inc();
        self.metrics
            .provider_duration
            .with_label_values(&[&self.name, op.as_str()])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn drive<I: Serialize, R: DeserializeOwned>(&self, op: Op, input: &I) -> Result<R, OpError> {
        // The document starts with the input, encoded once: every call of the operation repeats
        // it, followed by the latest exchange.
        let mut doc = Vec::with_capacity(1024);
        doc.extend_from_slice(format!(r#"{{"v":{WIRE_VERSION},"input":"#).as_bytes());
        serde_json::to_writer(&mut doc, input)
            .map_err(|e| plugin_error(format!("cannot encode the input: {e}")))?;
        let head = doc.len();
        doc.push(b'}');
        for performed in 0..=MAX_EXCHANGES {
            let (http, state) = match self.call::<R>(op, &doc)? {
                Step::Done { done } => return Ok(done),
                Step::Http { .. } if performed == MAX_EXCHANGES => break,
                Step::Http { http, state } => (http, state),
            };
            let response = self.http.perform(&http, self.timeout).await.map_err(OpError::Transport)?;
            doc.truncate(head);
            doc.extend_from_slice(br#","exchange":"#);
            serde_json::to_writer(&mut doc, &Exchange { state, response })
                .map_err(|e| plugin_error(format!("cannot encode the exchange: {e}")))?;
            doc.push(b'}');
        }
        Err(plugin_error(format!(
            "the plugin asked for more than {MAX_EXCHANGES} HTTP exchanges in one {}",
            op.as_str()
        )))
    }

    /// One synchronous call into the plugin, its answer decoded.
    fn call<R: DeserializeOwned>(&self, op: Op, doc: &[u8]) -> Result<Step<R>, OpError> {
        let answer = self.instance.call(op, doc).map_err(OpError::Plugin)?;
        match answer.rc {
            abi::RC_OK => {
                let out: OpOutput<R> = serde_json::from_slice(&answer.body).map_err(|e| {
                    plugin_error(format!(
                        "plugin `{}` answered {} with a malformed document: {e}",
                        self.describe().name,
                        op.as_str()
                    ))
                })?;
                if out.v != WIRE_VERSION {
                    return Err(plugin_error(format!("plugin answered document version {}", out.v)));
                }
                Ok(out.step)
            }
            abi::RC_ERROR | abi::RC_PANIC => {
                let what = if answer.rc == abi::RC_PANIC { "panicked" } else { "failed" };
                let message = serde_json::from_slice::<ErrorDoc>(&answer.body)
                    .map(|d| d.error.message)
                    .unwrap_or_else(|_| "no readable error document".to_owned());
                Err(plugin_error(format!(
                    "plugin `{}` {what} in {}: {message}",
                    self.describe().name,
                    op.as_str()
                )))
            }
            abi::RC_UNSUPPORTED => Err(plugin_error(format!(
                "plugin `{}` does not support {}",
                self.describe().name,
                op.as_str()
            ))),
            rc => {
                Err(plugin_error(format!("plugin `{}` returned the unknown code {rc}", self.describe().name)))
            }
        }
    }
}

/// What the `result` label of `notifyd_provider_requests_total` says about an operation's result:
/// the error code of a whole-call failure, else `ok`.
pub trait OpResultKind {
    fn error_code(&self) -> Option<&ErrorCode>;
}

impl OpResultKind for SendResult {
    fn error_code(&self) -> Option<&ErrorCode> {
        match self {
            SendResult::Failed { error } => Some(&error.code),
            SendResult::Recipients { .. } => None,
        }
    }
}

impl OpResultKind for StatusResult {
    fn error_code(&self) -> Option<&ErrorCode> {
        match self {
            StatusResult::Failed { error } => Some(&error.code),
            StatusResult::Statuses { .. } => None,
        }
    }
}

impl OpResultKind for BalanceResult {
    fn error_code(&self) -> Option<&ErrorCode> {
        match self {
            BalanceResult::Failed { error } => Some(&error.code),
            BalanceResult::Balance { .. } => None,
        }
    }
}

impl OpResultKind for CallbackResult {
    fn error_code(&self) -> Option<&ErrorCode> {
        None
    }
}

/// Every configured provider instance, by name and by position.
#[derive(Debug, Default)]
pub struct Providers {
    pub list: Vec<Arc<Provider>>,
    by_name: HashMap<Arc<str>, usize>,
}

impl Providers {
    /// Loads each instance's plugin and creates the instance; reports every failure at once.
    pub fn load(
        config: &Config,
        http: &HttpClient,
        metrics: &Metrics,
    ) -> Result<Providers, Vec<PluginError>> {
        let mut providers = Providers::default();
        let mut errors = Vec::new();
        for pc in &config.providers {
            match load_one(pc, config, http, metrics) {
                Ok(p) => {
                    providers.by_name.insert(p.name.clone(), providers.list.len());
                    providers.list.push(Arc::new(p));
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(providers) } else { Err(errors) }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.index(name).map(|i| &self.list[i])
    }
}

fn load_one(
    pc: &ProviderConfig,
    config: &Config,
    http: &HttpClient,
    metrics: &Metrics,
) -> Result<Provider, PluginError> {
    let path = plugin::find(&pc.plugin, &config.plugins.dirs)?;
    let lib = PluginLibrary::load(&path)?;
    let init = InstanceInit {
        v: WIRE_VERSION,
        name: pc.name.clone(),
        base_url: pc.base_url.clone(),
        settings: pc.settings.clone(),
    };
    let instance = lib.instantiate(&init)?;
    let d = &lib.describe;
    metrics.plugin_info.with_label_values(&[&d.name, &d.version, &lib.abi_version()]).set(1.0);
    Ok(Provider {
        name: pc.name.as_str().into(),
        instance,
        sender: pc.sender.clone(),
        timeout: pc.timeout(),
        http: http.clone(),
        metrics: metrics.clone(),
    })
}
