//! A tolerant JSON reader for the answers as SMS Club's document prints them.
//!
//! The API document shows two answers that are not JSON: the balance as an array holding
//! key/value pairs (`"info": ["money": "8111.1700", "currency": "UAH"]`) and the status request
//! with a trailing comma. The real API answers proper JSON, which [`parse`] reads with
//! `serde_json` first; only when that fails does it fall back to this reader, which accepts JSON
//! plus exactly these two deviations:
//!
//! - a trailing comma before `]` or `}`;
//! - an array whose elements are `"key": value` pairs, read as an object.
//!
//! It never panics: nesting is limited to [`MAX_DEPTH`] levels and every malformed input is `None`.

use serde_json::{Map, Value};

/// Deepest nesting the fallback reader accepts (the documented answers need 3).
pub const MAX_DEPTH: usize = 64;

/// Parses `text` as JSON, else as the printed forms described in the module docs.
pub fn parse(text: &str) -> Option<Value> {
    if let Ok(value) = serde_json::from_str(text) {
        return Some(value);
    }
    let mut reader = Reader { bytes: text.as_bytes(), text, pos: 0 };
    let value = reader.value(0)?;
    reader.skip_ws();
    (reader.pos == reader.bytes.len()).then_some(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn skip_ws(&mut self) {
        while self.bytes.get(self.pos).is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `byte` (after whitespace) when it is next.
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(Value::String),
            _ => self.scalar(),
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        self.pos += 1; // `{`
        let mut map = Map::new();
        loop {
            if self.eat(b'}') {
                return Some(Value::Object(map));
            }
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            if !self.eat(b':') {
                return None;
            }
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            if !self.eat(b',') {
                return self.eat(b'}').then_some(Value::Object(map));
            }
        }
    }

    /// An array, or an object written with brackets (`["k": v, ...]`).
    fn array(&mut self, depth: usize) -> Option<Value> {
        self.pos += 1; // `[`
        let mut items = Vec::new();
        let mut pairs: Option<Map<String, Value>> = None;
        loop {
            if self.eat(b']') {
                break;
            }
            let item = self.value(depth + 1)?;
            match (item, self.eat(b':')) {
                (Value::String(key), true) if items.is_empty() => {
                    let value = self.value(depth + 1)?;
                    pairs.get_or_insert_with(Map::new).insert(key, value);
                }
                (item, false) if pairs.is_none() => items.push(item),
                // A pair after a plain element, or a plain element after a pair.
                _ => return None,
            }
            if !self.eat(b',') {
                if !self.eat(b']') {
                    return None;
                }
                break;
            }
        }
        Some(match pairs {
            Some(map) => Value::Object(map),
            None => Value::Array(items),
        })
    }

    /// A JSON string, escapes decoded by serde_json.
    fn string(&mut self) -> Option<String> {
        let start = self.pos; // at `"`
        let mut i = start + 1;
        loop {
            match *self.bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        serde_json::from_str(self.text.get(start..=i)?).ok()
    }

    /// A number, `true`, `false` or `null`.
    fn scalar(&mut self) -> Option<Value> {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)) {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        serde_json::from_str(self.text.get(start..self.pos)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_proper_json_unchanged() {
        assert_eq!(parse(r#"{"a":[1,"x",null,true]}"#), Some(json!({"a": [1, "x", null, true]})));
    }

    #[test]
    fn reads_an_array_of_pairs_as_an_object() {
        let v = parse(r#"{"info": ["money": "8111.1700", "currency": "UAH"]}"#).unwrap();
        assert_eq!(v, json!({"info": {"money": "8111.1700", "currency": "UAH"}}));
    }

    #[test]
    fn tolerates_trailing_commas() {
        assert_eq!(parse("{\"id_sms\" : [\"106\"],\n}"), Some(json!({"id_sms": ["106"]})));
        assert_eq!(parse("[1, 2,]"), Some(json!([1, 2])));
    }

    #[test]
    fn decodes_escapes_in_strings() {
        assert_eq!(parse(r#"["a\"b", "\u0436",]"#), Some(json!(["a\"b", "ж"])));
    }

    #[test]
    fn refuses_what_is_not_even_the_printed_form() {
        for bad in [
            "",
            "   ",
            "{",
            "[\"k\": 1, 2]",
            "[1, \"k\": 2]",
            "{\"a\" 1}",
            "{\"a\":1,,}",
            "[,]",
            "<html>",
            "{\"a\":1} trailing",
            "\"unterminated",
            "\"ends in a backslash\\",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000) + "1,";
        assert_eq!(parse(&deep), None);
        let ok = "[".repeat(MAX_DEPTH) + "1," + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_some());
    }
}
