//! Request bodies as JSON, with one rule serde_json does not have: an object may not name a key
//! twice. serde_json keeps the last of `{"rating": 1, "rating": 5}` silently, other parsers
//! keep the first, so a duplicated key means different things to different readers of one
//! request (the same reason a repeated query parameter is refused, see `params`). The refusal
//! names the top-level field the duplicate sits in.
//!
//! The duplicate check is a second pass over the (at most 64 KiB) body that builds nothing; the
//! value itself is serde_json's own parse, so numbers and strings mean exactly what they did.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::domain::FieldError;

/// Parses a request body: malformed JSON is named `json`, a duplicated key its top-level field.
pub fn parse(bytes: &[u8]) -> Result<Value, FieldError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| FieldError::new("json", format!("malformed JSON: {e}")))?;
    match first_duplicate_key(bytes) {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

/// The first key an object of the document repeats, as the error to report.
fn first_duplicate_key(bytes: &[u8]) -> Option<FieldError> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The document already parsed once, so an error here can only be the duplicate found.
    let _ = Walk {
        field: None,
        found: &found,
    }
    .deserialize(&mut de);
    found.into_inner()
}

/// Walks one value; `field` is the top-level key it sits under (`None` for the root).
#[derive(Clone, Copy)]
struct Walk<'a> {
    field: Option<&'a str>,
    found: &'a RefCell<Option<FieldError>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                let error = match self.field {
                    None => FieldError::new(key, "is given more than once"),
                    Some(field) => {
                        FieldError::new(field, format!("key {key:?} is given more than once"))
                    }
                };
                *self.found.borrow_mut() = Some(error);
                return Err(de::Error::custom("duplicate key"));
            }
            match self.field {
                // Below the top level the field named stays the top-level one.
                Some(_) => map.next_value_seed(self)?,
                None => map.next_value_seed(Walk {
                    field: Some(&key),
                    found: self.found,
                })?,
            }
            keys.push(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> FieldError {
        parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_repeated_top_level_key_is_named() {
        assert_eq!(
            err(r#"{"rating": 1, "summary": "x", "rating": 5}"#),
            FieldError::new("rating", "is given more than once")
        );
    }

    #[test]
    fn a_repeated_nested_key_names_its_top_level_field() {
        assert_eq!(
            err(r#"{"characteristics": {"5": 1, "5": 2}}"#),
            FieldError::new("characteristics", "key \"5\" is given more than once")
        );
        assert_eq!(err(r#"{"photos": [{"a": 1, "a": 1}]}"#).field, "photos");
    }

    #[test]
    fn equal_keys_in_different_objects_are_fine() {
        let v = parse(br#"{"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]}"#).unwrap();
        assert_eq!(v["b"]["k"], 2);
    }

    #[test]
    fn malformed_json_is_named_json() {
        assert_eq!(err("{\"a\": ").field, "json");
        assert_eq!(err("\"\\ud800\"").field, "json", "a lone surrogate escape");
        assert_eq!(
            err(&"[".repeat(200)).field,
            "json",
            "nesting past the parser's limit"
        );
    }

    #[test]
    fn escaped_keys_are_compared_after_unescaping() {
        assert_eq!(err(r#"{"a": 1, "\u0061": 2}"#).field, "a");
    }
}
