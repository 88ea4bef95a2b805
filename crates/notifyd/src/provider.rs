//! Provider instances at run time: a plugin instance plus what the host adds around it (the shared
//! HTTP client, the instance's timeout and sender, metrics), and the loop that drives one operation
//! through its HTTP exchanges.

use crate::config::{Config, ProviderConfig};
use crate::http::{HttpClient, TransportError};
use crate::metrics::Metrics;
use crate::plugin::{self, Op, PluginError, PluginInstance, PluginLibrary};
use futures::future::BoxFuture;
use notifyd_plugin::abi;
use notifyd_plugin::wire::{
    BalanceResult, CallDocument, CallbackResult, Describe, ErrorCode, ErrorDoc, Exchange, InstanceInit,
    MAX_EXCHANGES, OpOutput, ProviderError, RecipientResult, ReportedStatus, SendInput, SendResult,
    StatusResult, Step, WIRE_VERSION,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
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

/// Where the recipients a plugin reports sent in the middle of a `send` go (ABI 1.1): the
/// request's ledger, before the host performs the next exchange.
pub trait SentSoFar: Sync {
    /// Records `sent` (recipients with a message id and no error, each reported once).
    fn record<'a>(&'a self, sent: &'a [RecipientResult]) -> BoxFuture<'a, ()>;
}

/// The ABI minor from which a plugin's table makes the host honour the 1.1 fields: the `describe`
/// flags, the request helpers and the `results` of an HTTP step. From a 1.0 plugin they are
/// unknown keys, ignored as before.
const ABI_1_1: u16 = 1;

/// A transport error handed to a plugin that declares `exchange_errors` (ABI 1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Handed {
    /// The error as the plugin got it in `exchange.error`.
    pub error: ProviderError,
    /// Whether the provider may have acted on the request (a timeout, a broken connection).
    pub ambiguous: bool,
}

/// What ABI 1.1 plugins add to a `send` besides its result.
#[derive(Debug, Default)]
pub struct Partial {
    /// The recipients the plugin reported sent beside its HTTP steps, each recorded before the
    /// next exchange: they stay sent whatever the rest of the operation says.
    pub early: Vec<RecipientResult>,
    /// Every transport error handed to the plugin, in order.
    pub handed: Vec<Handed>,
    /// The transport error the final answer replied to, when the last call handed one: the
    /// recipients that answer leaves out were not tried.
    pub replied_to: Option<Handed>,
}

impl Partial {
    /// Takes the sent recipients of an HTTP step's `results` that are not known yet and records
    /// them. Results with an error are left to the operation's final answer.
    async fn take_early(&mut self, results: Vec<RecipientResult>, sink: &dyn SentSoFar) {
        let mut known: HashSet<String> = self.early.iter().map(|e| e.to.clone()).collect();
        let new: Vec<RecipientResult> = results
            .into_iter()
            .filter(|r| r.error.is_none() && r.provider_message_id.is_some())
            .filter(|r| known.insert(r.to.clone()))
            .collect();
        if new.is_empty() {
            return;
        }
        sink.record(&new).await;
        self.early.extend(new);
    }
}

/// An operation driven to its end.
#[derive(Debug)]
pub struct Driven<R> {
    pub result: Result<R, OpError>,
    pub partial: Partial,
}

/// One configured provider instance.
pub struct Provider {
    /// The instance name (`[[providers]] name`).
    pub name: Arc<str>,
    pub instance: PluginInstance,
    /// The instance's default sender id, in normal form.
    pub sender: Option<String>,
    /// The default sender as configured, when that differs from its normal form.
    pub sender_given: Option<String>,
    pub timeout: Duration,
    http: HttpClient,
    metrics: Metrics,
    /// The unrecognised words already logged, shared by every instance (see [`Unrecognised`]).
    unrecognised: Arc<Unrecognised>,
    /// Whether [`Provider::warn_failed_error_call`] has logged.
    warned_error_call: std::sync::atomic::AtomicBool,
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
        self.run_with(op, input, None).await.result
    }

    /// Runs `send`: like [`Provider::run`], and besides the result, what ABI 1.1 adds for a
    /// plugin that sends recipients one exchange at a time: the recipients it reported sent
    /// before its last exchange (each already passed to `sent` before the next exchange was
    /// performed) and the transport errors it was handed (docs/plugin-authors.md, "Partial
    /// sends").
    pub async fn run_send(&self, input: &SendInput, sent: &dyn SentSoFar) -> Driven<SendResult> {
        self.run_with(Op::Send, input, Some(sent)).await
    }

    async fn run_with<I: Serialize, R: DeserializeOwned + OpResultKind>(
        &self,
        op: Op,
        input: &I,
        sent: Option<&dyn SentSoFar>,
    ) -> Driven<R> {
        let started = Instant::now();
        let mut driven = self.drive::<I, R>(op, input, sent).await;
        if let Ok(r) = &mut driven.result {
            r.check_words(&mut |word| self.unrecognised.check(&self.describe().name, &self.name, word));
        }
        // A callback is inbound (a provider's report), counted by `notifyd_callbacks_total`:
        // these metrics count only the operations notifyd calls on providers.
        if op == Op::Callback {
            return driven;
        }
        // An operation that met a transport error (handed to the plugin) counts as that error,
        // as it would from a 1.0 plugin, unless its result names a failure of its own.
        let handed = driven.partial.handed.last().map(|h| h.error.code.as_str());
        let label = match &driven.result {
            Ok(r) => r.error_code().map(ErrorCode::as_str).or(handed).unwrap_or("ok").to_owned(),
            Err(e) => e.to_provider_error().code.to_string(),
        };
        self.metrics.provider_requests.with_label_values(&[&self.name, op.as_str(), &label]).inc();
        self.metrics
            .provider_duration
            .with_label_values(&[&self.name, op.as_str()])
            .observe(started.elapsed().as_secs_f64());
        driven
    }

    async fn drive<I: Serialize, R: DeserializeOwned>(
        &self,
        op: Op,
        input: &I,
        sent: Option<&dyn SentSoFar>,
    ) -> Driven<R> {
        let mut partial = Partial::default();
        let result = self.steps(op, input, sent, &mut partial).await;
        Driven { result, partial }
    }

    /// Calls the plugin and performs the exchanges it asks for, until its result.
    async fn steps<I: Serialize, R: DeserializeOwned>(
        &self,
        op: Op,
        input: &I,
        sent: Option<&dyn SentSoFar>,
        partial: &mut Partial,
    ) -> Result<R, OpError> {
        // The input is encoded once: every call of the operation repeats it, followed by the
        // latest exchange.
        let mut doc =
            CallDocument::new(input).map_err(|e| plugin_error(format!("cannot encode the input: {e}")))?;
        let is_1_1 = self.instance.library().abi_minor() >= ABI_1_1;
        let wants_errors = is_1_1 && self.describe().exchange_errors;
        let wants_json = is_1_1 && self.describe().response_json;
        // The transport error handed in the call about to be made.
        let mut handing: Option<(TransportError, Handed)> = None;
        for performed in 0..=MAX_EXCHANGES {
            let step = match self.call::<R>(op, doc.as_bytes()) {
                Ok(step) => step,
                // A plugin that cannot answer the transport error it was handed: the operation
                // ends with that error, as for a plugin that does not take them.
                Err(e) => {
                    return Err(match handing.take() {
                        Some((t, _)) => {
                            self.warn_failed_error_call(&e);
                            OpError::Transport(t)
                        }
                        None => e,
                    });
                }
            };
            let replying_to = handing.take();
            let (mut http, state, results) = match step {
                Step::Done { done } => {
                    partial.replied_to = replying_to.map(|(_, handed)| handed);
                    return Ok(done);
                }
                Step::Http { http, state, results } => (http, state, results),
            };
            // Recorded even when the plugin asks for one exchange too many: they were sent.
            if let (Some(sink), true, false) = (sent, is_1_1, results.is_empty()) {
                partial.take_early(results, sink).await;
            }
            if performed == MAX_EXCHANGES {
                break;
            }
            if !is_1_1 {
                // Unknown keys to a 1.0 plugin, ignored as before 1.1.
                (http.query, http.form, http.json, http.basic_auth) = (Vec::new(), Vec::new(), None, None);
            }
            let exchange = match self.http.perform(&http, self.timeout).await {
                Ok(mut response) => {
                    if wants_json {
                        response.json = serde_json::from_str(&response.body).ok();
                    }
                    Exchange::answered(state, response)
                }
                // An invalid request is the plugin's fault, not the provider's: no second chance.
                Err(t @ TransportError::Invalid(_)) => return Err(OpError::Transport(t)),
                Err(t) if wants_errors => {
                    let handed = Handed {
                        error: OpError::Transport(t.clone()).to_provider_error(),
                        ambiguous: t.is_ambiguous(),
                    };
                    partial.handed.push(handed.clone());
                    let exchange = Exchange::failed(state, handed.error.clone());
                    handing = Some((t, handed));
                    exchange
                }
                Err(t) => return Err(OpError::Transport(t)),
            };
            doc.set_exchange(&exchange)
                .map_err(|e| plugin_error(format!("cannot encode the exchange: {e}")))?;
        }
        Err(plugin_error(format!(
            "the plugin asked for more than {MAX_EXCHANGES} HTTP exchanges in one {}",
            op.as_str()
        )))
    }

    /// Logs, once per instance, that the plugin failed a call that handed it a transport error
    /// (the operation ended with that error, as for a 1.0 plugin).
    fn warn_failed_error_call(&self, e: &OpError) {
        if !self.warned_error_call.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                provider = %self.name,
                plugin = %self.describe().name,
                error = %e.to_provider_error().message,
                "the plugin declares exchange_errors but failed the call that handed it a transport \
                 error; the operation ended with that error. Logged once per instance"
            );
        }
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

/// A word in a plugin's answer that is not in the wire list: an error code other than the
/// normalised ones, or a status word other than the normalised statuses.
pub enum Word<'a> {
    Code(&'a mut ProviderError),
    Status(&'a ReportedStatus),
}

/// The words plugins answered that notifyd does not know, logged once per plugin and word.
///
/// The rule (docs/plugin-authors.md, "Errors"): an error code that is not one of
/// [`ErrorCode::ALL`] (including `invalid_settings`, which belongs to `instance_new`) is treated
/// like `plugin_error`: the host cannot tell whether the provider acted, so the recipient ends
/// `failed` with no retry and no failover. The error keeps the plugin's word in its message. An
/// unrecognised status word is ignored, as before (tracking ends the message `unknown` when its
/// window closes).
#[derive(Debug, Default)]
pub struct Unrecognised {
    /// `(plugin, word)` pairs already logged; at most [`Unrecognised::MAX_LOGGED`].
    logged: Mutex<HashSet<(String, String)>>,
}

impl Unrecognised {
    /// Most distinct words remembered (and so logged): a plugin that echoes a provider's varying
    /// text as its code must not grow the set without bound.
    pub const MAX_LOGGED: usize = 256;

    /// Applies the rule to `word` from plugin `plugin` (instance `provider`), logging a word the
    /// first time this plugin answers it.
    pub fn check(&self, plugin: &str, provider: &str, word: Word<'_>) {
        match word {
            Word::Code(error) if !error.code.is_operation_code() => {
                let code = notifyd_plugin::sdk::snippet(error.code.as_str());
                if self.first(plugin, &code) {
                    tracing::warn!(
                        plugin,
                        provider,
                        code = %code,
                        "a plugin answered an error code notifyd does not know; it is treated as \
                         plugin_error (the recipient ends failed, without retry or failover). \
                         Logged once per plugin and code"
                    );
                }
                error.message =
                    format!("the plugin answered the unknown error code `{code}`: {}", error.message);
                error.code = ErrorCode::PluginError;
                error.retryable = false;
                error.retry_after_ms = None;
            }
            Word::Status(ReportedStatus::Unrecognised(status)) => {
                let status = notifyd_plugin::sdk::snippet(status);
                if self.first(plugin, &status) {
                    tracing::warn!(
                        plugin,
                        provider,
                        status = %status,
                        "a plugin reported a status word notifyd does not know; such updates are \
                         ignored. Logged once per plugin and word"
                    );
                }
            }
            Word::Code(_) | Word::Status(ReportedStatus::Known(_)) => {}
        }
    }

    /// Whether `word` is new for `plugin` (and so to be logged); remembers it.
    fn first(&self, plugin: &str, word: &str) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        logged.len() < Self::MAX_LOGGED && logged.insert((plugin.to_owned(), word.to_owned()))
    }
}

/// What the host reads from an operation's result: the error code of a whole-call failure (the
/// `result` label of `notifyd_provider_requests_total`, else `ok`), and every error code and status
/// word in it, for [`Unrecognised`].
pub trait OpResultKind {
    fn error_code(&self) -> Option<&ErrorCode>;

    /// Calls `check` with every error and status word of the result.
    fn check_words(&mut self, check: &mut dyn FnMut(Word<'_>));
}

fn check_updates(updates: &mut [notifyd_plugin::wire::StatusUpdate], check: &mut dyn FnMut(Word<'_>)) {
    for update in updates {
        check(Word::Status(&update.status));
        if let Some(error) = &mut update.error {
            check(Word::Code(error));
        }
    }
}

impl OpResultKind for SendResult {
    fn error_code(&self) -> Option<&ErrorCode> {
        match self {
            SendResult::Failed { error } => Some(&error.code),
            SendResult::Recipients { .. } => None,
        }
    }

    fn check_words(&mut self, check: &mut dyn FnMut(Word<'_>)) {
        match self {
            SendResult::Failed { error } => check(Word::Code(error)),
            SendResult::Recipients { recipients } => {
                recipients.iter_mut().filter_map(|r| r.error.as_mut()).for_each(|e| check(Word::Code(e)))
            }
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

    fn check_words(&mut self, check: &mut dyn FnMut(Word<'_>)) {
        match self {
            StatusResult::Failed { error } => check(Word::Code(error)),
            StatusResult::Statuses { statuses } => check_updates(statuses, check),
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

    fn check_words(&mut self, check: &mut dyn FnMut(Word<'_>)) {
        if let BalanceResult::Failed { error } = self {
            check(Word::Code(error));
        }
    }
}

impl OpResultKind for CallbackResult {
    fn error_code(&self) -> Option<&ErrorCode> {
        None
    }

    fn check_words(&mut self, check: &mut dyn FnMut(Word<'_>)) {
        check_updates(&mut self.updates, check);
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
        let unrecognised = Arc::new(Unrecognised::default());
        for pc in &config.providers {
            match load_one(pc, config, http, metrics, &unrecognised) {
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
    unrecognised: &Arc<Unrecognised>,
) -> Result<Provider, PluginError> {
    let path = plugin::find(&pc.plugin, &config.plugins.dirs)?;
    let lib = PluginLibrary::load(&path)?;
    let mut init = InstanceInit::new(pc.name.clone(), pc.base_url.clone(), pc.settings.clone());
    // Only a 1.1 plugin knows the key; a 1.0 one may refuse keys it does not know.
    if lib.abi_minor() < ABI_1_1 {
        init.abi_minor = None;
    }
    let instance = lib.instantiate(&init)?;
    let d = &lib.describe;
    metrics.plugin_info.with_label_values(&[&d.name, &d.version, &lib.abi_version()]).set(1.0);
    Ok(Provider {
        name: pc.name.as_str().into(),
        instance,
        sender: pc.sender.clone(),
        sender_given: pc.sender_given.clone(),
        timeout: pc.timeout(),
        http: http.clone(),
        metrics: metrics.clone(),
        unrecognised: unrecognised.clone(),
        warned_error_call: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OnAmbiguous, RetryConfig};
    use crate::retry::policy::{Decision, Policy};
    use std::io::Write;

    /// The log lines written while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = sink.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    fn check(seen: &Unrecognised, plugin: &str, result: &mut SendResult) {
        result.check_words(&mut |word| seen.check(plugin, "sms-a", word));
    }

    #[test]
    fn an_unknown_code_ends_the_recipient_failed_like_plugin_error_and_is_logged_once() {
        // As a C plugin writes it: a misspelt code, retryable, with a delay.
        let answer = r#"{"recipients":[
            {"to":"1","error":{"code":"invalid_recipent","message":"no such number","provider_code":"7","retryable":true,"retry_after_ms":100}},
            {"to":"2","error":{"code":"invalid_recipent","message":"no such number","retryable":false}},
            {"to":"3","error":{"code":"auth","message":"refused","retryable":false}}]}"#;
        let seen = Unrecognised::default();
        let mut result: SendResult = serde_json::from_str(answer).unwrap();
        let log = logged(|| check(&seen, "acme", &mut result));
        assert_eq!(log.matches("notifyd does not know").count(), 1, "{log}");
        assert!(log.contains("invalid_recipent") && log.contains("acme"), "{log}");

        let SendResult::Recipients { recipients } = result else { panic!() };
        let errors: Vec<&ProviderError> = recipients.iter().map(|r| r.error.as_ref().unwrap()).collect();
        assert_eq!(
            *errors[0],
            ProviderError {
                code: ErrorCode::PluginError,
                message: "the plugin answered the unknown error code `invalid_recipent`: no such number"
                    .into(),
                provider_code: Some("7".into()),
                retryable: false,
                retry_after_ms: None,
            }
        );
        assert_eq!(errors[1].code, ErrorCode::PluginError);
        assert_eq!(*errors[2], ProviderError::new(ErrorCode::Auth, "refused"), "known codes are untouched");

        // Ends `failed`: no retry, no failover.
        let policy = Policy::new(RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            on_ambiguous: OnAmbiguous::Resend,
        });
        assert!(matches!(policy.decide(errors[0].clone(), false, 1), Decision::Fail(e) if e == *errors[0]));

        // The same word again from the same plugin is not logged; from another plugin it is.
        let mut again: SendResult = serde_json::from_str(answer).unwrap();
        assert_eq!(logged(|| check(&seen, "acme", &mut again)), "");
        let mut other: SendResult = serde_json::from_str(answer).unwrap();
        assert_eq!(logged(|| check(&seen, "other", &mut other)).matches("notifyd does not know").count(), 1);
    }

    #[test]
    fn invalid_settings_in_an_operation_counts_as_unknown() {
        let seen = Unrecognised::default();
        let mut result = SendResult::Failed { error: ProviderError::new(ErrorCode::InvalidSettings, "x") };
        check(&seen, "acme", &mut result);
        let SendResult::Failed { error } = result else { panic!() };
        assert_eq!(error.code, ErrorCode::PluginError);
        assert!(error.message.contains("`invalid_settings`"), "{}", error.message);
    }

    #[test]
    fn an_unknown_status_word_is_kept_ignored_and_logged_once() {
        let answer = r#"{"statuses":[{"ref":"a","status":"DELIVRD"},{"ref":"b","status":"DELIVRD"},
            {"ref":"c","status":"delivered","error":{"code":"nope","message":"m"}}]}"#;
        let seen = Unrecognised::default();
        let mut result: StatusResult = serde_json::from_str(answer).unwrap();
        let log = logged(|| result.check_words(&mut |word| seen.check("acme", "sms-a", word)));
        assert_eq!(log.matches("status word notifyd does not know").count(), 1, "{log}");
        assert_eq!(log.matches("error code notifyd does not know").count(), 1, "{log}");
        let StatusResult::Statuses { statuses } = result else { panic!() };
        assert_eq!(statuses[0].status, ReportedStatus::Unrecognised("DELIVRD".into()));
        assert_eq!(statuses[0].status.known(), None, "tracking ignores it, as before");
        assert_eq!(statuses[2].error.as_ref().unwrap().code, ErrorCode::PluginError);
    }

    #[test]
    fn the_set_of_logged_words_is_bounded() {
        let seen = Unrecognised::default();
        for i in 0..Unrecognised::MAX_LOGGED {
            assert!(seen.first("acme", &format!("w{i}")));
        }
        assert!(!seen.first("acme", "one more"), "not remembered, so not logged");
    }
}
