//! The plugin documents' JSON Schema, `include/notifyd_plugin.schema.json`, embedded in the
//! binary, and a small validator for the part of JSON Schema 2020-12 that file uses: `plugin
//! verify` checks each answer a plugin gives against it and names the field that breaks a rule by
//! its JSON pointer.
//!
//! The validator knows these keywords: `$ref` (to `#/$defs/...`), `type`, `const`, `enum`,
//! `minimum`, `maximum`, `minLength`, `maxLength`, `pattern`, `format` (`date-time`, `uri`,
//! asserted), `properties`, `required`, `additionalProperties`, `propertyNames`, `maxProperties`,
//! `items`, `prefixItems`, `minItems`, `maxItems`, `uniqueItems`, `allOf`, `anyOf`; and ignores the
//! annotations (`title`, `description`, `default`, ...). [`Schema::new`] refuses a schema with any
//! other keyword, so a schema that grows one fails the tests rather than going unchecked. The
//! tests check it agrees with a full validator (boon, a dev-dependency only) on the schema's own
//! accepted and refused documents.

use regex::Regex;
use serde_json::{Number, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// `include/notifyd_plugin.schema.json`, as built into this binary.
pub const SCHEMA_TEXT: &str = include_str!("../../../include/notifyd_plugin.schema.json");

/// Keywords the validator applies.
const APPLIED: &[&str] = &[
    "$ref",
    "type",
    "const",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "maxProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "allOf",
    "anyOf",
];

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] =
    &["$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"];

/// Formats the validator asserts.
const FORMATS: &[&str] = &["date-time", "uri"];

/// One rule a document breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a JSON pointer into the document (`/done/recipients/0/error/provider_code`; `""`
    /// for the document itself).
    pub pointer: String,
    /// What the rule wants and what was found (`expected a string or null, found a number`).
    pub message: String,
    /// The rule's place in the schema (`#/$defs/provider_error/properties/provider_code`).
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() { "(the document)" } else { &self.pointer };
        write!(f, "{at}: {} (schema {})", self.message, self.rule)
    }
}

/// A compiled schema document: the JSON and its patterns.
#[derive(Debug)]
pub struct Schema {
    root: Value,
    patterns: HashMap<String, Regex>,
}

/// What is wrong, before it is worded: type mismatches are kept apart so that the branches of an
/// `anyOf` can be merged (`expected a string or null`).
#[derive(Debug)]
enum Kind {
    Type { expected: Vec<String>, found: &'static str },
    Other(String),
}

#[derive(Debug)]
struct Error {
    pointer: String,
    kind: Kind,
    rule: String,
}

impl Error {
    fn into_violation(self) -> Violation {
        let message = match self.kind {
            Kind::Type { expected, found } => {
                format!("expected {}, found {found}", expected.join(" or "))
            }
            Kind::Other(message) => message,
        };
        Violation { pointer: self.pointer, message, rule: self.rule }
    }
}

/// The schema of this notifyd, compiled once.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let root = serde_json::from_str(SCHEMA_TEXT).expect("the embedded schema is JSON (tested)");
        Schema::new(root).expect("the embedded schema compiles (tested)")
    })
}

impl Schema {
    /// Compiles `root`: every pattern must be a valid regex, every keyword one the validator
    /// knows, every format one it asserts, and every `$ref` must resolve.
    pub fn new(root: Value) -> Result<Schema, String> {
        let mut patterns = HashMap::new();
        let defs = root.get("$defs").and_then(Value::as_object).ok_or("the schema has no $defs")?;
        for (name, def) in defs {
            compile(&root, def, &format!("#/$defs/{name}"), &mut patterns)?;
        }
        Ok(Schema { root, patterns })
    }

    /// The names under `$defs`.
    pub fn definitions(&self) -> impl Iterator<Item = &str> {
        self.root["$defs"].as_object().into_iter().flat_map(|defs| defs.keys().map(String::as_str))
    }

    /// Checks `doc` against `#/$defs/<def>`; `Err` lists every rule it breaks, in document
    /// order as far as the schema allows (a field's own rules before its object's `anyOf`).
    ///
    /// # Panics
    /// When the schema has no such definition.
    pub fn check(&self, def: &str, doc: &Value) -> Result<(), Vec<Violation>> {
        let rule = format!("#/$defs/{def}");
        let schema = self.resolve(&rule).unwrap_or_else(|| panic!("the schema has no $defs/{def}"));
        let mut errors = Vec::new();
        self.validate(schema, &rule, doc, "", &mut errors);
        if errors.is_empty() {
            return Ok(());
        }
        // A rule reached twice (a field's own rules, then again through its object's `anyOf`)
        // is reported once.
        let mut violations: Vec<Violation> = Vec::new();
        for v in errors.into_iter().map(Error::into_violation) {
            if !violations.iter().any(|w| w.pointer == v.pointer && w.message == v.message) {
                violations.push(v);
            }
        }
        Err(violations)
    }

    fn resolve(&self, reference: &str) -> Option<&Value> {
        self.root.pointer(reference.strip_prefix('#')?)
    }

    fn validate(&self, schema: &Value, rule: &str, doc: &Value, at: &str, out: &mut Vec<Error>) {
        let map = match schema {
            Value::Bool(true) => return,
            Value::Object(map) => map,
            _ => {
                out.push(Error {
                    pointer: at.into(),
                    kind: Kind::Other("no value is allowed here".into()),
                    rule: rule.into(),
                });
                return;
            }
        };
        if let Some(Value::String(reference)) = map.get("$ref") {
            let target = self.resolve(reference).expect("every $ref resolves (checked by Schema::new)");
            let mut inner = Vec::new();
            self.validate(target, reference, doc, at, &mut inner);
            out.append(&mut inner);
        }
        if let Some(want) = map.get("type") {
            let expected: Vec<&str> = match want {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !expected.iter().any(|t| is_type(doc, t)) {
                out.push(Error {
                    pointer: at.into(),
                    kind: Kind::Type {
                        expected: expected.iter().map(|t| article(t).to_owned()).collect(),
                        found: kind_of(doc),
                    },
                    rule: format!("{rule}/type"),
                });
                // The other rules of this schema are about the expected type.
                return;
            }
        }
        let mut fail = |pointer: String, message: String, keyword: &str| {
            out.push(Error { pointer, kind: Kind::Other(message), rule: format!("{rule}/{keyword}") })
        };
        if let Some(want) = map.get("const") {
            if !equal(doc, want) {
                fail(at.into(), format!("expected {want}, found {}", shown(doc)), "const");
            }
        }
        if let Some(Value::Array(options)) = map.get("enum") {
            if !options.iter().any(|o| equal(doc, o)) {
                let list: Vec<String> = options.iter().map(Value::to_string).collect();
                fail(at.into(), format!("{} is not one of {}", shown(doc), list.join(", ")), "enum");
            }
        }
        if let Value::Number(n) = doc {
            if let Some(Value::Number(min)) = map.get("minimum") {
                if compare(n, min) == Some(Ordering::Less) {
                    fail(at.into(), format!("{n} is less than the minimum {min}"), "minimum");
                }
            }
            if let Some(Value::Number(max)) = map.get("maximum") {
                if compare(n, max) == Some(Ordering::Greater) {
                    fail(at.into(), format!("{n} is more than the maximum {max}"), "maximum");
                }
            }
        }
        if let Value::String(s) = doc {
            let chars = || s.chars().count();
            if let Some(min) = map.get("minLength").and_then(Value::as_u64) {
                if (chars() as u64) < min {
                    fail(at.into(), format!("{} is shorter than {min} characters", shown(doc)), "minLength");
                }
            }
            if let Some(max) = map.get("maxLength").and_then(Value::as_u64) {
                if chars() as u64 > max {
                    fail(
                        at.into(),
                        format!("a string of {} characters is longer than {max}", chars()),
                        "maxLength",
                    );
                }
            }
            if let Some(Value::String(pattern)) = map.get("pattern") {
                if !self.patterns[pattern].is_match(s) {
                    fail(
                        at.into(),
                        format!("{} does not match the pattern {pattern}", shown(doc)),
                        "pattern",
                    );
                }
            }
            if let Some(Value::String(format)) = map.get("format") {
                if let Err(why) = check_format(format, s) {
                    fail(at.into(), format!("{} is not a valid {format}: {why}", shown(doc)), "format");
                }
            }
        }
        if let Value::Object(object) = doc {
            let properties = map.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(required)) = map.get("required") {
                for key in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(key) {
                        fail(format!("{at}/{}", escape(key)), "required, but missing".into(), "required");
                    }
                }
            }
            if let Some(max) = map.get("maxProperties").and_then(Value::as_u64) {
                if object.len() as u64 > max {
                    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
                    fail(
                        at.into(),
                        format!(
                            "has {} properties ({}), at most {max} allowed",
                            object.len(),
                            keys.join(", ")
                        ),
                        "maxProperties",
                    );
                }
            }
            for (key, value) in object {
                let here = format!("{at}/{}", escape(key));
                if let Some(names) = map.get("propertyNames") {
                    self.validate(
                        names,
                        &format!("{rule}/propertyNames"),
                        &Value::String(key.clone()),
                        &here,
                        out,
                    );
                }
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => {
                        self.validate(sub, &format!("{rule}/properties/{}", escape(key)), value, &here, out)
                    }
                    None => match map.get("additionalProperties") {
                        Some(Value::Bool(false)) => out.push(Error {
                            pointer: here,
                            kind: Kind::Other("not allowed: no such property".into()),
                            rule: format!("{rule}/additionalProperties"),
                        }),
                        Some(sub) => {
                            self.validate(sub, &format!("{rule}/additionalProperties"), value, &here, out)
                        }
                        None => {}
                    },
                }
            }
        }
        if let Value::Array(items) = doc {
            let mut fail = |pointer: String, message: String, keyword: &str| {
                out.push(Error { pointer, kind: Kind::Other(message), rule: format!("{rule}/{keyword}") })
            };
            if let Some(min) = map.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    fail(
                        at.into(),
                        format!("has {} items, at least {min} required", items.len()),
                        "minItems",
                    );
                }
            }
            if let Some(max) = map.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    fail(at.into(), format!("has {} items, at most {max} allowed", items.len()), "maxItems");
                }
            }
            if map.get("uniqueItems") == Some(&Value::Bool(true)) {
                let duplicate = (1..items.len())
                    .find_map(|j| (0..j).find(|&i| equal(&items[i], &items[j])).map(|i| (i, j)));
                if let Some((i, j)) = duplicate {
                    fail(
                        format!("{at}/{j}"),
                        format!("equal to item {i}; the items must be unique"),
                        "uniqueItems",
                    );
                }
            }
            let prefix = map.get("prefixItems").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            for (i, item) in items.iter().enumerate() {
                let here = format!("{at}/{i}");
                match prefix.get(i) {
                    Some(sub) => self.validate(sub, &format!("{rule}/prefixItems/{i}"), item, &here, out),
                    None => {
                        if let Some(sub) = map.get("items") {
                            self.validate(sub, &format!("{rule}/items"), item, &here, out);
                        }
                    }
                }
            }
        }
        if let Some(Value::Array(all)) = map.get("allOf") {
            for (i, sub) in all.iter().enumerate() {
                self.validate(sub, &format!("{rule}/allOf/{i}"), doc, at, out);
            }
        }
        if let Some(Value::Array(any)) = map.get("anyOf") {
            self.any_of(any, &format!("{rule}/anyOf"), doc, at, out);
        }
    }

    /// `anyOf`: passes if one branch does; otherwise reports the branch that got furthest.
    fn any_of(&self, branches: &[Value], rule: &str, doc: &Value, at: &str, out: &mut Vec<Error>) {
        let mut failed = Vec::new();
        for (i, sub) in branches.iter().enumerate() {
            let mut errors = Vec::new();
            self.validate(sub, &format!("{rule}/{i}"), doc, at, &mut errors);
            if errors.is_empty() {
                return;
            }
            failed.push(errors);
        }
        let wrong_type = |e: &Error| e.pointer == at && matches!(e.kind, Kind::Type { .. });
        // Every branch wants another type: one message with every type.
        if failed.iter().all(|errors| errors.iter().all(wrong_type)) {
            let mut expected: Vec<String> = Vec::new();
            for e in failed.iter().flatten() {
                if let Kind::Type { expected: want, .. } = &e.kind {
                    for t in want {
                        if !expected.contains(t) {
                            expected.push(t.clone());
                        }
                    }
                }
            }
            out.push(Error {
                pointer: at.into(),
                kind: Kind::Type { expected, found: kind_of(doc) },
                rule: rule.into(),
            });
            return;
        }
        // Otherwise the branches whose type fits, and of those the ones that went deepest.
        let score = |errors: &Vec<Error>| {
            let fits = !errors.iter().any(wrong_type);
            let depth = errors.iter().map(|e| e.pointer.matches('/').count()).max().unwrap_or(0);
            (fits, depth)
        };
        let best = failed.iter().map(score).max().expect("at least one branch failed");
        let mut winners: Vec<Vec<Error>> = failed.into_iter().filter(|e| score(e) == best).collect();
        if winners.len() == 1 {
            out.append(&mut winners[0]);
            return;
        }
        let alternatives: Vec<String> = winners
            .into_iter()
            .map(|errors| {
                errors
                    .into_iter()
                    .map(|e| {
                        let v = e.into_violation();
                        let where_ =
                            if v.pointer.is_empty() { "(the document)".to_owned() } else { v.pointer };
                        format!("{where_}: {}", v.message)
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .collect();
        out.push(Error {
            pointer: at.into(),
            kind: Kind::Other(format!("matches none of the alternatives: {}", alternatives.join(" | or | "))),
            rule: rule.into(),
        });
    }
}

/// Checks the keywords of `schema` and compiles its patterns, recursively.
fn compile(
    root: &Value,
    schema: &Value,
    at: &str,
    patterns: &mut HashMap<String, Regex>,
) -> Result<(), String> {
    let map = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(map) => map,
        other => return Err(format!("{at}: a schema must be an object or a boolean, found {other}")),
    };
    for (keyword, value) in map {
        if !APPLIED.contains(&keyword.as_str()) && !ANNOTATIONS.contains(&keyword.as_str()) {
            return Err(format!("{at}: the keyword {keyword:?} is not one this validator applies"));
        }
        let here = format!("{at}/{keyword}");
        match keyword.as_str() {
            "$ref" => {
                let reference = value.as_str().ok_or(format!("{here}: not a string"))?;
                if !reference.starts_with("#/") || root.pointer(&reference[1..]).is_none() {
                    return Err(format!("{here}: {reference:?} does not resolve in this document"));
                }
            }
            "pattern" => {
                let pattern = value.as_str().ok_or(format!("{here}: not a string"))?;
                let regex = Regex::new(pattern).map_err(|e| format!("{here}: {e}"))?;
                patterns.insert(pattern.to_owned(), regex);
            }
            "format" if !value.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                return Err(format!("{here}: the format {value} is not one this validator asserts"));
            }
            "properties" => {
                for (name, sub) in value.as_object().ok_or(format!("{here}: not an object"))? {
                    compile(root, sub, &format!("{here}/{}", escape(name)), patterns)?;
                }
            }
            "additionalProperties" | "propertyNames" | "items" => compile(root, value, &here, patterns)?,
            "prefixItems" | "allOf" | "anyOf" => {
                for (i, sub) in value.as_array().ok_or(format!("{here}: not an array"))?.iter().enumerate() {
                    compile(root, sub, &format!("{here}/{i}"), patterns)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_type(doc: &Value, t: &str) -> bool {
    match t {
        "null" => doc.is_null(),
        "boolean" => doc.is_boolean(),
        "object" => doc.is_object(),
        "array" => doc.is_array(),
        "string" => doc.is_string(),
        "number" => doc.is_number(),
        "integer" => match doc {
            Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
            _ => false,
        },
        _ => false,
    }
}

/// A type name with its article: `a string`, `an object`, `null`.
fn article(t: &str) -> &str {
    match t {
        "null" => "null",
        "boolean" => "a boolean",
        "object" => "an object",
        "array" => "an array",
        "string" => "a string",
        "number" => "a number",
        "integer" => "an integer",
        other => other,
    }
}

/// What `doc` is, in words.
fn kind_of(doc: &Value) -> &'static str {
    match doc {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
    }
}

/// A value for a message: scalars as JSON (strings cut at 60 characters), containers by kind.
fn shown(doc: &Value) -> String {
    match doc {
        Value::String(s) if s.chars().count() > 60 => {
            format!("{}…", Value::String(s.chars().take(60).collect()))
        }
        Value::Object(_) | Value::Array(_) => kind_of(doc).to_owned(),
        other => other.to_string(),
    }
}

/// JSON Schema equality: numbers by value (`1` equals `1.0`), objects regardless of key order.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// Two numbers compared by value, exactly for integers (up to `u64::MAX`).
fn compare(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// A key as a JSON pointer token (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The formats asserted: `date-time` (RFC 3339) and `uri` (RFC 3986, with a scheme).
fn check_format(format: &str, s: &str) -> Result<(), String> {
    match format {
        "date-time" => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "uri" => check_uri(s),
        _ => Ok(()),
    }
}

/// An absolute URI: a scheme, then only the characters RFC 3986 allows, `%` only before two hex
/// digits, and at most one `#`.
fn check_uri(s: &str) -> Result<(), String> {
    let (scheme, _) = s.split_once(':').ok_or("no scheme")?;
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err("no scheme".into());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            if !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return Err("a % not followed by two hex digits".into());
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?#[]".contains(&c)) {
            return Err(format!("the character {:?} is not allowed", char::from(c)));
        }
        i += 1;
    }
    if s.matches('#').count() > 1 {
        return Err("more than one #".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// The same schema compiled by boon, with formats asserted as the schema's own tests do.
    struct Boon {
        schemas: boon::Schemas,
        defs: BTreeMap<String, boon::SchemaIndex>,
    }

    impl Boon {
        fn new() -> Boon {
            const URL: &str = "urn:notifyd:plugin-schema";
            let root: Value = serde_json::from_str(SCHEMA_TEXT).unwrap();
            let mut compiler = boon::Compiler::new();
            compiler.enable_format_assertions();
            compiler.add_resource(URL, root).unwrap();
            let mut schemas = boon::Schemas::new();
            let mut defs = BTreeMap::new();
            for name in schema().definitions() {
                let index = compiler.compile(&format!("{URL}#/$defs/{name}"), &mut schemas).unwrap();
                defs.insert(name.to_owned(), index);
            }
            Boon { schemas, defs }
        }

        /// `Err` holds every instance location boon's error tree names.
        fn check(&self, def: &str, doc: &Value) -> Result<(), Vec<String>> {
            fn walk(e: &boon::ValidationError<'_, '_>, out: &mut Vec<String>) {
                out.push(e.instance_location.to_string());
                e.causes.iter().for_each(|c| walk(c, out));
            }
            self.schemas.validate(doc, self.defs[def]).map_err(|e| {
                let mut locations = Vec::new();
                walk(&e, &mut locations);
                locations
            })
        }
    }

    fn send_input() -> Value {
        json!({"id": "m-1", "to": ["4915171112233", "4915171112234"], "text": "hi", "from": "MyShop",
               "encoding": "gsm7", "segments": 1, "send_at": "2026-11-22T09:00:00.000Z"})
    }

    /// (definition, document): the refusal cases of crates/notifyd-plugin/tests/schema.rs, the
    /// documents it accepts, and more; valid and invalid.
    fn documents() -> Vec<(&'static str, Value)> {
        let input = send_input();
        let with = |key: &str, value: Value| {
            let mut input = input.clone();
            input[key] = value;
            json!({"v": 1, "input": input})
        };
        const HTTP: &str = r#""http":{"method":"POST","url":"https://gw.example/api/send","headers":[["content-type","text/plain"]],"body":"a"}"#;
        let mut docs = vec![
            // What the host writes.
            ("send_call", json!({"v": 1, "input": input})),
            (
                "send_call",
                json!({"v": 1, "input": input, "exchange": {"state": "s", "response": {"status": 200, "headers": {"content-type": "text/plain"}, "body": "ok"}}}),
            ),
            ("settings", json!({"v": 1, "name": "a_b-1", "base_url": null, "settings": {"k": 1}})),
            ("status_call", json!({"v": 1, "input": {"refs": ["r"]}})),
            ("balance_call", json!({"v": 1, "input": {}})),
            (
                "callback_input",
                json!({"method": "POST", "path": "", "query": "a=1", "headers": {"x-a": "b\tc"}, "body": ""}),
            ),
            // What the host never writes (tests/schema.rs).
            ("send_call", json!({"v": 1, "input": input, "exchange": null})),
            ("send_call", json!({"v": 1, "input": input, "extra": true})),
            ("send_call", json!({"v": 2, "input": input})),
            ("send_call", with("from", json!("+4915171112233"))),
            ("send_call", with("from", json!(" MyShop"))),
            ("send_call", with("from", json!("MyShopOnline"))),
            ("send_call", with("from", json!("12-34"))),
            ("send_call", with("to", json!(["+4915171112233"]))),
            ("send_call", with("to", json!(["4915171112233", "4915171112233"]))),
            ("send_call", with("to", json!([]))),
            ("send_call", with("text", json!(""))),
            ("send_call", with("encoding", json!("utf8"))),
            ("send_call", with("segments", json!(0))),
            ("send_call", with("segments", json!(4294967296u64))),
            ("send_call", with("send_at", json!("2026-11-22T09:00:00Z"))),
            ("send_call", with("send_at", json!("2026-13-22T09:00:00.000Z"))),
            ("send_call", with("id", json!("a\nb"))),
            ("send_call", with("id", json!("x".repeat(129)))),
            ("settings", json!({"v": 1, "name": "a", "settings": {}})),
            ("settings", json!({"v": 1, "name": "a b", "base_url": null, "settings": {}})),
            (
                "callback_input",
                json!({"method": "POST", "path": "/x", "query": "", "headers": {}, "body": ""}),
            ),
            ("http_response", json!({"status": 200, "headers": {"Content-Type": "x"}, "body": ""})),
            ("http_response", json!({"status": 200, "body": ""})),
            ("http_response", json!({"status": 99, "headers": {}, "body": ""})),
            ("http_response", json!({"status": 200, "headers": {"a": "b\nc"}, "body": ""})),
            ("exchange", json!({"state": null, "response": {"status": 200, "headers": {}, "body": ""}})),
            ("balance_input", json!({"currency": "EUR"})),
            // ABI 1.1: a response or a transport error, not both; `json`; `from_given`.
            (
                "exchange",
                json!({"state": "s", "error": {"code": "timeout", "message": "m", "retryable": true}}),
            ),
            (
                "exchange",
                json!({"state": "s", "response": {"status": 200, "headers": {}, "body": "{}", "json": {}},
                       "error": {"code": "timeout", "message": "m", "retryable": true}}),
            ),
            ("exchange", json!({"state": "s"})),
            ("exchange", json!({"state": "s", "error": {"code": "auth", "message": "m", "retryable": true}})),
            (
                "exchange",
                json!({"state": "s", "error": {"code": "timeout", "message": "m", "retryable": true, "x": 1}}),
            ),
            ("send_call", with("from_given", json!("+4915171112233"))),
            ("send_call", with("from_given", json!("4915171112233"))),
        ];
        // What a plugin answers (tests/schema.rs, both ways, and more).
        let answers: &[(&'static str, String)] = &[
            ("send_answer", format!(r#"{{"v":1,{HTTP},"state":"s"}}"#)),
            ("send_answer", format!(r#"{{"v":1,{HTTP},"state":"s","done":{{"recipients":[]}}}}"#)),
            ("send_answer", r#"{"v":1,"http":{"url":"https://gw.example/","method":"GET"},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":[{"to":"49151","provider_message_id":"7"}]}}"#.into()),
            ("send_answer", r#"{"v":1,"http":null,"state":null,"done":{"recipients":[{"to":"49151","provider_message_id":"7","tracking":null,"error":null}],"error":null}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"throttled","message":"slow down","provider_code":"429","retryable":true,"retry_after_ms":7000}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no","provider_code":null,"retry_after_ms":null,"hint":1}},"extra":[]}"#.into()),
            ("send_answer", r#"{"v":1.0,"done":{"recipients":[]}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"m","retry_after_ms":7000.0}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"m","retry_after_ms":18446744073709551615}}}"#.into()),
            ("send_answer", r#"{"v":1}"#.into()),
            ("send_answer", r#"{"v":2,"done":{"recipients":[]}}"#.into()),
            ("send_answer", r#"{"done":{"recipients":[]}}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"}}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":7}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","headers":null},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","body":null},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","headers":[["a","b","c"]]},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","headers":{"a":"b"}},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","headers":[["a","b\nc"]]},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"G T","url":"https://gw.example/"},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"gw.example/send"},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/a b"},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/%zz"},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":5,"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"done":{}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":7}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":null,"error":null}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":[{"provider_message_id":"7"}]}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":[{"to":"49151"}]}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":[{"to":"49151","provider_message_id":7}]}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":[{"to":"49151","error":{"code":"auth","message":"no","provider_code":429}}]}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no","provider_code":429}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no","retryable":null}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no","retry_after_ms":-1}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"auth"}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":7,"message":"m"}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"invalid_recipent","message":"m"}}}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"error":{"code":"invalid_settings","message":"m"}}}"#.into()),
            ("describe", r#"{"v":1,"name":"c-example","version":"0.1.0","max_recipients":50,"max_status_refs":0,"alphabet":"unicode","default_base_url":"http://127.0.0.1:8080"}"#.into()),
            ("describe", r#"{"max_recipients":1,"version":"1","name":"x","v":1,"default_base_url":null}"#.into()),
            ("describe", r#"{"v":1,"name":"","version":"1","max_recipients":1}"#.into()),
            ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":0}"#.into()),
            ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1.5}"#.into()),
            ("describe", r#"{"v":1,"name":"x","max_recipients":1}"#.into()),
            ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"alphabet":null}"#.into()),
            ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"alphabet":"ascii"}"#.into()),
            ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"max_status_refs":null}"#.into()),
            ("describe", r#"[1]"#.into()),
            ("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r","status":"delivered","to":null,"error":null}]}}"#.into()),
            ("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r","status":"accepted"}]}}"#.into()),
            ("status_answer", r#"{"v":1,"done":{"error":{"code":"unavailable","message":"down","retryable":true}}}"#.into()),
            ("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r"}]}}"#.into()),
            ("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r","status":"DELIVRD"}]}}"#.into()),
            ("status_answer", r#"{"v":1,"done":{"recipients":[]}}"#.into()),
            ("balance_answer", r#"{"v":1,"done":{"amount":1000,"currency":"credits"}}"#.into()),
            ("balance_answer", r#"{"v":1,"done":{"currency":"EUR","amount":-2.5}}"#.into()),
            ("balance_answer", r#"{"v":1,"done":{"error":{"code":"auth","message":"no"}}}"#.into()),
            ("balance_answer", r#"{"v":1,"done":{"amount":"1000","currency":"EUR"}}"#.into()),
            ("balance_answer", r#"{"v":1,"done":{"amount":1.5}}"#.into()),
            ("balance_answer", r#"{"v":1,"done":{"error":null}}"#.into()),
            ("callback_answer", r#"{"v":1,"done":{"updates":[]}}"#.into()),
            ("callback_answer", r#"{"v":1,"done":{"updates":[{"ref":"38421","to":"4915171112233","status":"delivered"}],"response_status":200,"response_body":"OK"}}"#.into()),
            ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_status":null}}"#.into()),
            ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_body":null}}"#.into()),
            ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_status":70000}}"#.into()),
            ("callback_answer", r#"{"v":1,"done":{"updates":[],"response_status":1000}}"#.into()),
            ("callback_answer", r#"{"v":1,"done":{"response_status":200}}"#.into()),
            ("error_document", r#"{"v":1,"error":{"code":"invalid_settings","message":"unknown setting `foo`","retryable":false}}"#.into()),
            ("error_document", r#"{"error":{"message":"the host's input document is malformed","code":"plugin_error"},"v":1}"#.into()),
            ("error_document", r#"{"v":1,"error":{"message":"m"}}"#.into()),
            ("error_document", r#"{"error":{"code":"plugin_error","message":"m"}}"#.into()),
            ("error_document", r#"{"v":7,"error":{"code":"plugin_error","message":"m"}}"#.into()),
            ("error_document", r#"{"v":1,"error":{"code":"auth","message":"m","provider_code":401}}"#.into()),
            // ABI 1.1.
            ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"exchange_errors":true,"response_json":true}"#.into()),
            ("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":1,"exchange_errors":null}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","form":[["a","b"]],"basic_auth":{"user":"u","password":"p"}},"state":"s","results":[{"to":"49151","provider_message_id":"7"}]}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","query":[["a","b"]],"json":{"a":[1]},"body":""},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","body":"a=b","form":[["a","b"]]},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","form":[["a","b"]],"json":0},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","basic_auth":{"password":"p"}},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","query":[["a",1]]},"state":"s"}"#.into()),
            ("send_answer", r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/"},"state":"s","results":null}"#.into()),
            ("send_answer", r#"{"v":1,"done":{"recipients":[]},"results":[]}"#.into()),
            ("status_answer", r#"{"v":1,"done":{"statuses":[]},"results":[]}"#.into()),
        ];
        for (def, doc) in answers {
            docs.push((def, serde_json::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}"))));
        }
        docs
    }

    #[test]
    fn the_validator_agrees_with_boon_on_what_is_valid_and_where_it_is_not() {
        let boon = Boon::new();
        let (mut valid, mut invalid) = (0, 0);
        for (def, doc) in documents() {
            let ours = schema().check(def, &doc);
            let theirs = boon.check(def, &doc);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "$defs/{def} on {doc}: ours {ours:?}, boon's {theirs:?}"
            );
            let (Err(violations), Err(locations)) = (ours, theirs) else {
                valid += 1;
                continue;
            };
            invalid += 1;
            // Our first violation is somewhere boon names too, or in what boon names (a missing
            // key, a key not allowed or badly named, a duplicate item: boon names their object or
            // array; the validator names the key or item).
            let first = &violations[0];
            let parent = first.pointer.rsplit_once('/').map_or("", |(p, _)| p);
            assert!(
                locations.iter().any(|l| *l == first.pointer || l == parent),
                "$defs/{def} on {doc}: ours {first} is not among boon's {locations:?}"
            );
        }
        assert!(valid >= 20 && invalid >= 50, "{valid} valid, {invalid} invalid");
    }

    fn first(def: &str, doc: &str) -> String {
        let doc: Value = serde_json::from_str(doc).unwrap();
        schema().check(def, &doc).expect_err("invalid")[0].to_string()
    }

    #[test]
    fn a_violation_names_the_field_by_its_pointer_and_the_rule() {
        assert_eq!(
            first(
                "send_answer",
                r#"{"v":1,"done":{"recipients":[{"to":"4915","error":{"code":"auth","message":"m","provider_code":429}}]}}"#
            ),
            "/done/recipients/0/error/provider_code: expected a string or null, found a number (schema #/$defs/provider_error/properties/provider_code/anyOf)"
        );
        assert_eq!(
            first("send_answer", r#"{"v":1,"done":{"recipients":[{"provider_message_id":"7"}]}}"#),
            "/done/recipients/0/to: required, but missing (schema #/$defs/recipient_result/required)"
        );
        assert_eq!(
            first("describe", r#"{"v":1,"name":"x","version":"1","max_recipients":0}"#),
            "/max_recipients: 0 is less than the minimum 1 (schema #/$defs/describe/properties/max_recipients/minimum)"
        );
        assert_eq!(
            first("status_answer", r#"{"v":1,"done":{"statuses":[{"ref":"r","status":"DELIVRD"}]}}"#),
            r#"/done/statuses/0/status: "DELIVRD" is not one of "accepted", "rejected", "sent", "delivered", "undelivered", "expired", "failed", "unknown" (schema #/$defs/status_update/properties/status/enum)"#
        );
        assert_eq!(
            first("send_answer", r#"{"v":1,"http":{"method":"GET","url":"gw.example/send"},"state":"s"}"#),
            r#"/http/url: "gw.example/send" is not a valid uri: no scheme (schema #/$defs/http_request/properties/url/format)"#
        );
        assert_eq!(
            first("send_answer", r#"{"v":2,"done":{"recipients":[]}}"#),
            "/v: expected 1, found 2 (schema #/$defs/v/const)"
        );
        assert_eq!(
            first("status_answer", r#"{"v":1,"done":{"statuses":[]},"results":[]}"#),
            "/results: no value is allowed here (schema #/$defs/status_answer/properties/results/allOf/0)"
        );
        assert_eq!(
            first(
                "send_answer",
                r#"{"v":1,"http":{"method":"GET","url":"https://gw.example/","query":[["a",1]]},"state":"s"}"#
            ),
            "/http/query/0/1: expected a string, found a number (schema #/$defs/http_request/properties/query/items/prefixItems/1/type)"
        );
        let both = first(
            "send_answer",
            r#"{"v":1,"http":{"method":"POST","url":"https://gw.example/","body":"a=b","form":[["a","b"]]},"state":"s"}"#,
        );
        assert!(both.starts_with("/http: matches none of the alternatives: /http/form: "), "{both}");
        assert!(both.contains("/http/body: "), "{both}");
        let neither = first("send_answer", r#"{"v":1}"#);
        assert!(
            neither.starts_with(
                "(the document): matches none of the alternatives: /http: required, but missing"
            ),
            "{neither}"
        );
        assert!(neither.contains("/done: required, but missing"), "{neither}");
    }

    #[test]
    fn a_schema_with_a_keyword_the_validator_does_not_apply_is_refused() {
        assert!(Schema::new(json!({"$defs": {"x": {"oneOf": [true]}}})).unwrap_err().contains("\"oneOf\""));
        assert!(Schema::new(json!({"$defs": {"x": {"pattern": "(unclosed"}}})).is_err());
        assert!(Schema::new(json!({"$defs": {"x": {"$ref": "#/$defs/y"}}})).is_err());
        assert!(Schema::new(json!({"$defs": {"x": {"format": "email"}}})).is_err());
        assert!(Schema::new(json!({"$defs": {"x": {"properties": {"a": {"if": true}}}}})).is_err());
        assert_eq!(schema().definitions().count(), 28);
    }
}
