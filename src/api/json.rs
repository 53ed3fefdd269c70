//! JSON bodies as Python's `json.dumps` writes them: `", "` and `": "` separators, and non-ASCII
//! characters escaped as `\uXXXX` (`ensure_ascii`, [`to_vec`]) or not ([`to_vec_unicode`]), so
//! byte-exact clients see what Nova and Glance send.

use serde::Serialize;
use serde_json::ser::Formatter;
use std::io::{self, Write};

/// Python's separators; `ascii`: non-ASCII characters escaped.
struct PythonFormatter {
    ascii: bool,
}

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        // Most strings are ASCII throughout: one word-at-a-time check, then one copy.
        if !self.ascii || fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serializes `value` with every non-ASCII character escaped.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    python(value, true)
}

/// Serializes `value` with non-ASCII characters as they are (`ensure_ascii=False`).
pub fn to_vec_unicode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    python(value, false)
}

fn python<T: Serialize + ?Sized>(value: &T, ascii: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter { ascii });
    // Serializing a `serde_json::Value` or a plain struct into memory cannot fail.
    value.serialize(&mut ser).expect("JSON serialization to memory");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_non_ascii_like_python() {
        let v = serde_json::json!({"name": "é😀", "n": [1, 2]});
        assert_eq!(super::to_vec(&v), br#"{"name": "\u00e9\ud83d\ude00", "n": [1, 2]}"#.to_vec());
        assert_eq!(super::to_vec_unicode(&v), r#"{"name": "é😀", "n": [1, 2]}"#.as_bytes().to_vec());
    }
}
