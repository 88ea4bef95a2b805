//! The plugin documents' JSON Schema (`include/notifyd_plugin.schema.json`), compiled once per
//! test process with boon, and checks against its definitions.
// Each test file that says `mod support;` uses part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where the schema lives: beside the C header.
pub fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/notifyd_plugin.schema.json")
}

/// The schema as JSON.
pub fn schema_json() -> Value {
    let path = schema_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The names under `$defs`.
pub fn definitions() -> Vec<String> {
    schema_json()["$defs"].as_object().expect("the schema has $defs").keys().cloned().collect()
}

/// Every definition of one schema document, compiled.
pub struct Validator {
    schemas: boon::Schemas,
    defs: BTreeMap<String, boon::SchemaIndex>,
}

impl Validator {
    /// Compiles every definition of `schema` (which boon also checks against the 2020-12
    /// metaschema), with `format` asserted (`date-time`, `uri`).
    pub fn new(schema: Value) -> Result<Validator, String> {
        const URL: &str = "urn:notifyd:plugin-schema";
        let names: Vec<String> = schema["$defs"].as_object().ok_or("no $defs")?.keys().cloned().collect();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.add_resource(URL, schema).map_err(|e| format!("{e:#}"))?;
        let mut schemas = boon::Schemas::new();
        let mut defs = BTreeMap::new();
        for name in names {
            let index = compiler
                .compile(&format!("{URL}#/$defs/{name}"), &mut schemas)
                .map_err(|e| format!("{e:#}"))?;
            defs.insert(name, index);
        }
        Ok(Validator { schemas, defs })
    }

    /// The schema of the repository, compiled once.
    pub fn get() -> &'static Validator {
        static VALIDATOR: OnceLock<Validator> = OnceLock::new();
        VALIDATOR.get_or_init(|| Validator::new(schema_json()).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The schema with `additionalProperties: false` added to every object of a plugin's
    /// answers: the host ignores keys it does not know, but a plugin of this repository writes
    /// none, so a misspelt key is caught.
    pub fn strict() -> &'static Validator {
        static STRICT: OnceLock<Validator> = OnceLock::new();
        STRICT.get_or_init(|| {
            let mut schema = schema_json();
            close_objects(&mut schema["$defs"]);
            Validator::new(schema).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// Whether `doc` is a valid `#/$defs/<def>`; the error says where it is not.
    pub fn check(&self, def: &str, doc: &Value) -> Result<(), String> {
        let index = self.defs.get(def).unwrap_or_else(|| panic!("the schema has no $defs/{def}"));
        self.schemas.validate(doc, *index).map_err(|e| format!("{e}"))
    }

    /// [`Validator::check`] for a document given as bytes, which must be JSON.
    pub fn check_bytes(&self, def: &str, bytes: &[u8]) -> Result<Value, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
            format!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)]))
        })?;
        self.check(def, &doc)?;
        Ok(doc)
    }
}

/// Adds `additionalProperties: false` to every object schema that lists `properties` and says
/// nothing about other keys (the plugins' answers; the host's documents say it already).
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && map.get("type") == Some(&Value::from("object")) {
                map.entry("additionalProperties").or_insert(Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}
