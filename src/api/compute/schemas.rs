//! Request validation as Nova's JSON schemas do it (nova-images §3.6, §3.7, §4.2), with the same
//! order of checks and the same messages, producing domain types.
//!
//! The schemas are small and fixed, so they are transcribed as code: `create`/`update_all`
//! (`{"metadata": METADATA}`), `update` (`{"meta": METADATA, exactly one item}`) and the
//! pagination parameters of the image lists. Error texts follow jsonschema 4.26 with Nova's
//! `Invalid input for field/attribute <name>. Value: <str>. <message>` wrapper.

use serde_json::Value;

use crate::api::pyrepr::{py_repr_str, py_str, repr};

use crate::api::fault::Fault;
use crate::domain::metadata::{MetadataItems, MetadataKey, MetadataValue};

const KEY_PATTERN: &str = "'^[a-zA-Z0-9-_:. ]{1,255}$'";

/// `/v2` relaxes unknown top-level keys (they are dropped) but not metadata keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// `/v2.1`: `additionalProperties: false` everywhere.
    Strict,
    /// `/v2` (legacy v2 compatible mode).
    Legacy,
}

/// `{"metadata": {...}}` for POST and PUT `/metadata`.
pub fn metadata_body(body: Option<&Value>, strictness: Strictness) -> Result<MetadataItems, Fault> {
    let map = envelope(body, "metadata", strictness, |v| metadata_object("metadata", v, strictness, false))?;
    Ok(map)
}

/// `{"meta": {"<key>": "<value>"}}` for PUT `/metadata/{key}`.
pub fn meta_body(body: Option<&Value>, strictness: Strictness) -> Result<(MetadataKey, MetadataValue), Fault> {
    let mut items = envelope(body, "meta", strictness, |v| metadata_object("meta", v, strictness, true))?;
    // The schema guarantees exactly one item.
    Ok(items.remove(0))
}

/// The top-level object: type, `properties`, `required`, `additionalProperties`, in order.
fn envelope<T>(
    body: Option<&Value>,
    field: &str,
    strictness: Strictness,
    inner: impl FnOnce(&Value) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let Some(Value::Object(top)) = body else {
        let shown = body.map_or_else(|| "None".to_owned(), repr);
        return Err(Fault::bad_request(format!("{shown} is not of type 'object'")));
    };
    let parsed = top.get(field).map(inner).transpose()?;
    let Some(parsed) = parsed else {
        return Err(Fault::bad_request(format!("'{field}' is a required property")));
    };
    if strictness == Strictness::Strict {
        let extras: Vec<&String> = top.keys().filter(|k| *k != field).collect();
        if !extras.is_empty() {
            return Err(Fault::bad_request(additional_not_allowed(&extras)));
        }
    }
    Ok(parsed)
}

/// METADATA (plus `minProperties`/`maxProperties` 1 when `single`), at path `field`.
fn metadata_object(field: &str, value: &Value, strictness: Strictness, single: bool) -> Result<MetadataItems, Fault> {
    let invalid = |at: &str, instance: &Value, message: String| {
        Fault::bad_request(format!("Invalid input for field/attribute {at}. Value: {}. {message}", py_str(instance)))
    };
    let Value::Object(map) = value else {
        return Err(invalid(field, value, format!("{} is not of type 'object'", repr(value))));
    };
    let mut items = MetadataItems::with_capacity(map.len());
    let mut extras = Vec::new();
    for (k, v) in map {
        let Some(key) = MetadataKey::parse(k) else {
            extras.push(k);
            continue;
        };
        let Value::String(s) = v else {
            return Err(invalid(k, v, format!("{} is not of type 'string'", repr(v))));
        };
        let Some(val) = MetadataValue::parse(s) else {
            let why = if s.contains('\0') { "contains a NUL character" } else { "is too long" };
            return Err(invalid(k, v, format!("{} {why}", repr(v))));
        };
        items.push((key, val));
    }
    if !extras.is_empty() {
        let message = match strictness {
            Strictness::Strict => {
                extras.sort();
                let verb = if extras.len() == 1 { "does" } else { "do" };
                format!("{} {verb} not match any of the regexes: {KEY_PATTERN}", joined(&extras))
            }
            Strictness::Legacy => additional_not_allowed(&extras),
        };
        return Err(invalid(field, value, message));
    }
    if single && map.is_empty() {
        return Err(invalid(field, value, format!("{} should be non-empty", repr(value))));
    }
    if single && map.len() > 1 {
        return Err(invalid(field, value, format!("{} has too many properties", repr(value))));
    }
    Ok(items)
}

pub fn additional_not_allowed(extras: &[&String]) -> String {
    let mut extras = extras.to_vec();
    extras.sort();
    let verb = if extras.len() == 1 { "was" } else { "were" };
    format!("Additional properties are not allowed ({} {verb} unexpected)", joined(&extras))
}

fn joined(keys: &[&String]) -> String {
    keys.iter().map(|k| py_repr_str(k)).collect::<Vec<_>>().join(", ")
}

/// The pagination parameters `limit`, `page_size` and `offset`: `positive_integer` in a
/// `multi_params` array, so every repetition is checked and the last one is used.
pub fn positive_integer(name: &str, values: &[&str]) -> Result<Option<u64>, Fault> {
    for v in values {
        let message = if !v.bytes().all(|b| b.is_ascii_digit()) {
            format!("{} does not match '^[0-9]*$'", py_repr_str(v))
        } else if v.is_empty() {
            "'' should be non-empty".to_owned()
        } else if v.bytes().all(|b| b == b'0') {
            format!("{v} is less than the minimum of 1")
        } else {
            continue;
        };
        return Err(Fault::bad_request(format!("Invalid input for query parameters {name}. Value: {v}. {message}")));
    }
    // Digits only and not zero: saturate absurdly long numbers, they are capped anyway.
    Ok(values.last().map(|v| v.parse::<u64>().unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(r: Result<impl std::fmt::Debug, Fault>) -> String {
        match r.unwrap_err() {
            Fault::Nova { message, .. } => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_messages_match_nova_table() {
        use Strictness::*;
        let m = |b: Option<Value>| msg(metadata_body(b.as_ref(), Strict));
        assert_eq!(m(None), "None is not of type 'object'");
        assert_eq!(m(Some(json!([]))), "[] is not of type 'object'");
        assert_eq!(m(Some(json!({}))), "'metadata' is a required property");
        assert_eq!(
            m(Some(json!({"metadata": null}))),
            "Invalid input for field/attribute metadata. Value: None. None is not of type 'object'"
        );
        assert_eq!(
            m(Some(json!({"metadata": {"a": 1}}))),
            "Invalid input for field/attribute a. Value: 1. 1 is not of type 'string'"
        );
        let long = "x".repeat(256);
        assert_eq!(
            m(Some(json!({"metadata": {"a": long}}))),
            format!("Invalid input for field/attribute a. Value: {long}. '{long}' is too long")
        );
        assert_eq!(
            m(Some(json!({"metadata": {"a/b": "v"}}))),
            "Invalid input for field/attribute metadata. Value: {'a/b': 'v'}. 'a/b' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'"
        );
        assert_eq!(
            m(Some(json!({"metadata": {}, "x": 1}))),
            "Additional properties are not allowed ('x' was unexpected)"
        );
        assert!(metadata_body(Some(&json!({"metadata": {}, "x": 1})), Legacy).is_ok());
        assert_eq!(
            msg(metadata_body(Some(&json!({"metadata": {"b/c": "v", "a": "1"}})), Legacy)),
            "Invalid input for field/attribute metadata. Value: {'b/c': 'v', 'a': '1'}. Additional properties are not allowed ('b/c' was unexpected)"
        );
    }

    #[test]
    fn meta_messages_match_nova_table() {
        let m = |b: Value| msg(meta_body(Some(&b), Strictness::Strict));
        assert_eq!(m(json!({"meta": {}})), "Invalid input for field/attribute meta. Value: {}. {} should be non-empty");
        assert_eq!(
            m(json!({"meta": {"a": "1", "b": "2"}})),
            "Invalid input for field/attribute meta. Value: {'a': '1', 'b': '2'}. {'a': '1', 'b': '2'} has too many properties"
        );
        assert_eq!(m(json!({"metadata": {"a": "1"}})), "'meta' is a required property");
    }

    #[test]
    fn pagination_integers() {
        assert_eq!(positive_integer("limit", &["5", "7"]).unwrap(), Some(7));
        assert_eq!(
            msg(positive_integer("limit", &["0"])),
            "Invalid input for query parameters limit. Value: 0. 0 is less than the minimum of 1"
        );
        assert_eq!(
            msg(positive_integer("limit", &["abc"])),
            "Invalid input for query parameters limit. Value: abc. 'abc' does not match '^[0-9]*$'"
        );
        assert_eq!(
            msg(positive_integer("limit", &["-1"])),
            "Invalid input for query parameters limit. Value: -1. '-1' does not match '^[0-9]*$'"
        );
    }

    #[test]
    fn python_repr() {
        assert_eq!(repr(&json!({"a": [true, null, 1.0, "it's"]})), r#"{'a': [True, None, 1.0, "it's"]}"#);
    }
}
