//! Python's `str()` and `repr()` of JSON values: the OpenStack services quote request values
//! this way in their validation messages.

use serde_json::{Map, Value};

/// Python's `str()` of a JSON value: strings bare, everything else as `repr`.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

/// Python's `repr()` of the value `json.loads` would produce.
pub fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < 1e16 { format!("{f:.1}") } else { format!("{f}") }
            } else {
                n.to_string()
            }
        }
        Value::String(s) => py_repr_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => repr_map(m),
    }
}

fn repr_map(m: &Map<String, Value>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{}: {}", py_repr_str(k), repr(v))).collect();
    format!("{{{}}}", items.join(", "))
}

/// Python's `repr()` of a `str`: single quotes unless the text has a single quote and no
/// double quote; control characters escaped.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_repr() {
        assert_eq!(repr(&json!({"a": [true, null, 1.0, "it's"]})), r#"{'a': [True, None, 1.0, "it's"]}"#);
    }
}
