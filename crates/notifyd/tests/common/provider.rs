//! One harness for the provider plugins' end-to-end tests: a config with one or more instances of a
//! plugin against a mock of the provider's API, and the daemon started on it with a real
//! nats-server, a client and a status-event subscriber.
//!
//! ```ignore
//! let mock = MockHttp::start(api).await;
//! let mut t = ProviderTest::new("smsc")
//!     .base_url(&mock, "/smsc")
//!     .sender("MyShop")
//!     .settings(json!({"username": LOGIN, "password": PASSWORD}))
//!     .extra("[limits]\nmax_schedule_ahead = \"100y\"")
//!     .route(&[""])
//!     .start()
//!     .await;
//! publish(&t.client, request).await;
//! t.events.status("id", Some(to), "sent").await;
//! ```

use super::{Daemon, Events};
use notifyd_testkit::{MockHttp, NatsServer};
use serde_json::Value;
use std::path::PathBuf;

/// The built library of plugin `name` (crate `notifyd-<name>`, library `notifyd_<name>`).
pub fn plugin(name: &str) -> PathBuf {
    notifyd_testkit::cargo_plugin(&format!("notifyd-{name}"), &format!("notifyd_{name}"))
}

/// The sections every provider test starts from: short intake, tracking and retry timings.
/// [`ProviderTest::without`] drops one of them.
const DEFAULT_SECTIONS: [(&str, &str); 3] = [
    ("intake", "ack_wait = \"2s\""),
    ("tracking", "first_poll = \"100ms\"\nmax_interval = \"500ms\""),
    ("retry", "max_attempts = 2\ninitial_backoff = \"50ms\""),
];

/// One `[[providers]]` entry.
struct Instance {
    name: String,
    plugin: PathBuf,
    base_url: Option<String>,
    sender: Option<String>,
    settings: serde_json::Map<String, Value>,
}

/// A config for instances of one provider plugin; the builder methods after [`new`](Self::new) or
/// [`instance`](Self::instance) apply to that instance.
pub struct ProviderTest {
    plugin: PathBuf,
    sections: Vec<(&'static str, &'static str)>,
    extra: Vec<String>,
    instances: Vec<Instance>,
    routes: Vec<(Vec<String>, String)>,
}

impl ProviderTest {
    /// An instance named `plugin` of plugin `plugin` (see [`plugin`]), with the default sections
    /// `[intake]`, `[tracking]` and `[retry]`.
    pub fn new(plugin: &str) -> ProviderTest {
        let mut test = ProviderTest {
            plugin: self::plugin(plugin),
            sections: DEFAULT_SECTIONS.to_vec(),
            extra: Vec::new(),
            instances: Vec::new(),
            routes: Vec::new(),
        };
        test.add_instance(plugin);
        test
    }

    /// Another instance, `name`, of the same plugin; the following builder calls configure it.
    pub fn instance(mut self, name: &str) -> ProviderTest {
        self.add_instance(name);
        self
    }

    fn add_instance(&mut self, name: &str) {
        self.instances.push(Instance {
            name: name.to_owned(),
            plugin: self.plugin.clone(),
            base_url: None,
            sender: None,
            settings: serde_json::Map::new(),
        });
    }

    fn current(&mut self) -> &mut Instance {
        self.instances.last_mut().expect("ProviderTest::new adds an instance")
    }

    /// `base_url` = the mock's URL followed by `path` (a path prefix such as `/smsc`, or "").
    pub fn base_url(self, mock: &MockHttp, path: &str) -> ProviderTest {
        self.base_url_str(format!("{}{path}", mock.url()))
    }

    /// `base_url` as given.
    pub fn base_url_str(mut self, url: impl Into<String>) -> ProviderTest {
        self.current().base_url = Some(url.into());
        self
    }

    pub fn sender(mut self, sender: &str) -> ProviderTest {
        self.current().sender = Some(sender.to_owned());
        self
    }

    /// Adds the keys of `settings` (a JSON object) to the instance's `[providers.settings]`.
    pub fn settings(mut self, settings: Value) -> ProviderTest {
        let Value::Object(map) = settings else { panic!("settings must be a JSON object: {settings}") };
        self.current().settings.extend(map);
        self
    }

    /// A `[[routes]]` entry sending `prefixes` to the instance.
    pub fn route(mut self, prefixes: &[&str]) -> ProviderTest {
        let name = self.current().name.clone();
        self.routes.push((prefixes.iter().map(|p| p.to_string()).collect(), name));
        self
    }

    /// Top-level TOML added to the config (`[limits]`, `[balance]`, `[callbacks]`...).
    pub fn extra(mut self, toml: &str) -> ProviderTest {
        self.extra.push(toml.to_owned());
        self
    }

    /// Leaves out the default section `name` (`intake`, `tracking` or `retry`).
    pub fn without(mut self, name: &str) -> ProviderTest {
        assert!(self.sections.iter().any(|(s, _)| *s == name), "no default section [{name}]");
        self.sections.retain(|(s, _)| *s != name);
        self
    }

    /// Only the `[[providers]]` and `[[routes]]` entries.
    pub fn providers_toml(&self) -> String {
        let mut text = String::new();
        for i in &self.instances {
            text += &format!(
                "\n[[providers]]\nname = {}\nplugin = {}\n",
                quoted(&i.name),
                quoted(&i.plugin.display().to_string())
            );
            if let Some(url) = &i.base_url {
                text += &format!("base_url = {}\n", quoted(url));
            }
            if let Some(sender) = &i.sender {
                text += &format!("sender = {}\n", quoted(sender));
            }
            if !i.settings.is_empty() {
                text += "[providers.settings]\n";
                for (key, value) in &i.settings {
                    text += &format!("{} = {}\n", key_name(key), toml_value(value));
                }
            }
        }
        for (prefixes, provider) in &self.routes {
            let prefixes: Vec<String> = prefixes.iter().map(|p| quoted(p)).collect();
            text += &format!(
                "\n[[routes]]\nprefixes = [{}]\nproviders = [{}]\n",
                prefixes.join(", "),
                quoted(provider)
            );
        }
        text
    }

    /// The whole config, with `{nats}` and `{metrics}` left for [`Daemon::start`] to fill in.
    pub fn config(&self) -> String {
        let mut text = String::from("[nats]\nurl = \"{nats}\"\n[metrics]\nlisten = \"{metrics}\"\n");
        for (name, body) in &self.sections {
            text += &format!("[{name}]\n{body}\n");
        }
        for extra in &self.extra {
            text += &format!("{extra}\n");
        }
        text + &self.providers_toml()
    }

    /// Starts a nats-server and the daemon on [`config`](Self::config), connects a client and
    /// subscribes to the status events.
    pub async fn start(self) -> Running {
        let config = self.config();
        let nats = NatsServer::start();
        let daemon = Daemon::start(&nats, &config);
        let client = async_nats::connect(nats.url()).await.unwrap();
        let events = Events::subscribe(&client).await;
        Running { nats, daemon, client, events, config }
    }
}

/// A daemon started by [`ProviderTest::start`].
pub struct Running {
    pub nats: NatsServer,
    pub daemon: Daemon,
    pub client: async_nats::Client,
    pub events: Events,
    /// The config the daemon was started with (before `{nats}` and `{metrics}` were filled in).
    pub config: String,
}

/// `s` as a TOML basic string (JSON's escapes are TOML's).
fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

/// `key` bare where TOML allows it, else quoted.
fn key_name(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { key.to_owned() } else { quoted(key) }
}

/// A JSON value (no null) as a TOML value; objects become inline tables.
fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => panic!("TOML has no null"),
        Value::Bool(_) | Value::Number(_) | Value::String(_) => value.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let fields: Vec<String> =
                map.iter().map(|(k, v)| format!("{} = {}", key_name(k), toml_value(v))).collect();
            format!("{{ {} }}", fields.join(", "))
        }
    }
}
