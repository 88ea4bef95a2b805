//! Username/password settings, which most providers take: read, checked and refused the same way
//! in every plugin, without ever quoting a value.

use super::{Secret, invalid_settings, parse_settings, require_string_settings};
use crate::wire::{InstanceInit, ProviderError};
use serde::de::{self, DeserializeOwned, Visitor};

/// An account's `username` and `password` from `[providers.settings]` (the host resolves
/// `username_env` / `password_env` into them first). Both are required: the username must hold a
/// non-space character and the password must not be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account's login, sent with every request.
    pub username: String,
    /// The account's password; its `Debug` prints `***`.
    pub password: Secret,
}

/// The settings keys [`Credentials`] reads.
const KEYS: [&str; 2] = ["username", "password"];

impl Credentials {
    /// Credentials from settings that hold nothing else: any other key is refused.
    pub fn from_settings(init: &InstanceInit) -> Result<Self, ProviderError> {
        parse_settings_with_credentials::<NoOtherSettings>(init).map(|(credentials, _)| credentials)
    }

    /// Both, for [`redact_secrets`](super::redact_secrets) before a provider's answer is quoted
    /// (a provider may echo the request with them).
    pub fn secrets(&self) -> [&str; 2] {
        [self.username.as_str(), self.password.expose()]
    }
}

/// The settings of a plugin that takes nothing but [`Credentials`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoOtherSettings {}

/// Reads [`Credentials`] and the plugin's other settings `T` from `init.settings`, refusing, in
/// this order and always with `invalid_settings` naming the key but never its value:
/// `username`/`password` that are not strings; a key that neither the credentials nor `T` know
/// (``unknown field `x`, expected one of `username`, `password`, ...``, as serde words it); any
/// problem serde finds in `T` (see [`parse_settings`]); a missing `username` or `password`
/// (``missing field `username` ``); a blank `username` or an empty `password` (`` `username` must
/// not be empty``).
///
/// `T` is a `#[derive(Deserialize)]` struct of the other keys, with `#[serde(deny_unknown_fields)]`
/// and without `username` and `password`.
pub fn parse_settings_with_credentials<T: DeserializeOwned>(
    init: &InstanceInit,
) -> Result<(Credentials, T), ProviderError> {
    require_string_settings(init, &KEYS)?;
    let own_fields = struct_fields::<T>();
    if let Some(unknown) =
        init.settings.keys().find(|k| !KEYS.contains(&k.as_str()) && !own_fields.contains(&k.as_str()))
    {
        let known: Vec<&str> = KEYS.iter().chain(own_fields).copied().collect();
        return Err(invalid_settings(init, &format!("unknown field `{unknown}`, {}", expected(&known))));
    }
    let mut rest = init.settings.clone();
    let mut take = |key: &str| match rest.remove(key) {
        Some(serde_json::Value::String(value)) => Ok(value),
        _ => Err(invalid_settings(init, &format!("missing field `{key}`"))),
    };
    let (username, password) = (take("username"), take("password"));
    let settings: T = parse_settings(&InstanceInit { settings: rest, ..init.clone() })?;
    let (username, password) = (username?, password?);
    if username.trim().is_empty() {
        return Err(invalid_settings(init, "`username` must not be empty"));
    }
    if password.is_empty() {
        return Err(invalid_settings(init, "`password` must not be empty"));
    }
    Ok((Credentials { username, password: Secret::new(password) }, settings))
}

/// serde's wording of a list of expected fields (`serde::de::Error::unknown_field`).
fn expected(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    match quoted.as_slice() {
        [] => "there are no fields".to_owned(),
        [one] => format!("expected {one}"),
        [a, b] => format!("expected {a} or {b}"),
        all => format!("expected one of {}", all.join(", ")),
    }
}

/// The field names of a `#[derive(Deserialize)]` struct: serde hands them to
/// `deserialize_struct`, which this probe records before it gives up. Empty for anything else.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Probed
    }
}

impl<'de> de::Deserializer<'de> for FieldProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.0 = fields;
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn init(settings: serde_json::Value) -> InstanceInit {
        InstanceInit {
            v: 1,
            name: "acme-main".into(),
            base_url: None,
            settings: settings.as_object().cloned().unwrap(),
            abi_minor: None,
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Extra {
        #[serde(default)]
        sender_param: Option<String>,
        #[serde(default)]
        transliterate: bool,
    }

    fn refusal(settings: serde_json::Value) -> String {
        let e = parse_settings_with_credentials::<Extra>(&init(settings)).unwrap_err();
        assert_eq!(e.code, "invalid_settings");
        e.message.strip_prefix("invalid settings for `acme-main`: ").expect("the usual form").to_owned()
    }

    #[test]
    fn credentials_and_other_settings_are_read_together() {
        let (c, extra) = parse_settings_with_credentials::<Extra>(&init(
            json!({"username": "acme", "password": "pw", "transliterate": true}),
        ))
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("acme", "pw"));
        assert_eq!(c.secrets(), ["acme", "pw"]);
        assert!(extra.transliterate && extra.sender_param.is_none());
        assert_eq!(format!("{c:?}"), r#"Credentials { username: "acme", password: *** }"#);
        let only = Credentials::from_settings(&init(json!({"username": "u", "password": "p"}))).unwrap();
        assert_eq!(only.username, "u");
    }

    #[test]
    fn refusals_name_the_key_in_serdes_words_and_never_the_value() {
        assert_eq!(
            refusal(json!({"username": "u", "password": "p", "colour": "red"})),
            "unknown field `colour`, expected one of `username`, `password`, `sender_param`, `transliterate`"
        );
        let e = Credentials::from_settings(&init(json!({"notifyd_verify_unknown_key": true}))).unwrap_err();
        assert!(
            e.message
                .ends_with("unknown field `notifyd_verify_unknown_key`, expected `username` or `password`"),
            "{}",
            e.message
        );
        assert_eq!(refusal(json!({"username": "u", "password": 12345678})), "`password` must be a string");
        assert_eq!(refusal(json!({"username": 4242, "password": "p"})), "`username` must be a string");
        assert_eq!(refusal(json!({"password": "p"})), "missing field `username`");
        assert_eq!(refusal(json!({"username": "u"})), "missing field `password`");
        assert_eq!(refusal(json!({"username": " ", "password": "p"})), "`username` must not be empty");
        assert_eq!(refusal(json!({"username": "u", "password": ""})), "`password` must not be empty");
        let typed = refusal(json!({"username": "u", "password": "p", "transliterate": "s3cret"}));
        assert!(typed.starts_with("invalid type: string, expected a boolean"), "{typed}");
        assert!(!typed.contains("s3cret"), "{typed}");
    }

    #[test]
    fn the_probe_reads_a_structs_fields_and_nothing_else() {
        assert_eq!(struct_fields::<Extra>(), ["sender_param", "transliterate"]);
        assert!(struct_fields::<NoOtherSettings>().is_empty());
        assert!(struct_fields::<String>().is_empty());
        assert_eq!(expected(&["a"]), "expected `a`");
        assert_eq!(expected(&["a", "b"]), "expected `a` or `b`");
    }
}
