//! Image metadata: keys, values, the ordered property map and the four ways the Compute API
//! changes it.

/// The longest key and value, in characters (Unicode scalar values, as Python's `len`).
pub const MAX_LEN: usize = 255;

/// A metadata key that satisfies Nova's `^[a-zA-Z0-9-_:. ]{1,255}$`, anchored at the true end
/// (Nova's `$` would also accept one trailing newline; spec §3.6 recommends rejecting it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetadataKey(String);

impl MetadataKey {
    pub fn parse(s: &str) -> Option<MetadataKey> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.' | b' '));
        ok.then(|| MetadataKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A metadata value: a string of at most 255 characters, without NUL (see
/// [`super::bad_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataValue(String);

impl MetadataValue {
    pub fn parse(s: &str) -> Option<MetadataValue> {
        (s.chars().count() <= MAX_LEN && super::bad_text(s, false).is_none()).then(|| MetadataValue(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Validated metadata from a request, in the order the client sent it (duplicates resolved,
/// last one wins, as Python's `json`).
pub type MetadataItems = Vec<(MetadataKey, MetadataValue)>;

/// An image's non-base properties, in insertion order. Values are strings; `None` is a stored
/// null (Glance allows it for `kernel_id` and `ramdisk_id`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties(Vec<(String, Option<String>)>);

impl Properties {
    pub fn new(items: Vec<(String, Option<String>)>) -> Properties {
        Properties(items)
    }

    pub fn get(&self, key: &str) -> Option<&Option<String>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` when it is set and not null.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_deref())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// Sets `key`, keeping its position when it already exists.
    pub fn set(&mut self, key: String, value: Option<String>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != key);
        self.0.len() != before
    }

    /// The database's form (PostgreSQL's `images.properties`): a JSON array of
    /// `[name, value]` pairs in order, `value` null for a stored null.
    pub fn encode(&self) -> String {
        serde_json::to_string(&self.0).expect("strings serialize")
    }

    /// The properties [`Properties::encode`] wrote; `None` for text it did not write.
    pub fn decode(text: &str) -> Option<Properties> {
        serde_json::from_str(text).ok().map(Properties)
    }
}

/// One Compute API metadata mutation (nova-images §3.3–§3.8).
#[derive(Debug, Clone)]
pub enum MetadataChange {
    /// POST: set every given key, keep the others.
    Merge(MetadataItems),
    /// PUT: the given keys become the whole set.
    Replace(MetadataItems),
    /// PUT item: set one key.
    Set(MetadataKey, MetadataValue),
    /// DELETE item: remove one key, which must exist.
    Delete(String),
}

/// The `metadata_items` quota: how many properties one image may carry. `None` is unlimited
/// (Nova's `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataQuota(pub Option<u64>);

impl MetadataQuota {
    pub fn from_config(n: i64) -> MetadataQuota {
        MetadataQuota(u64::try_from(n).ok())
    }

    /// Nova's `check_img_metadata_properties_quota`: an empty set is never checked, and a
    /// count equal to the limit is allowed.
    pub fn allows(self, count: usize) -> bool {
        match self.0 {
            Some(limit) => count == 0 || count as u64 <= limit,
            None => true,
        }
    }

    /// The value `GET /limits` reports.
    pub fn as_limit(self) -> i64 {
        self.0.map_or(-1, |n| n as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_grammar_is_nova_pattern_anchored_at_the_true_end() {
        for ok in ["a", "A-z_0:9. x", &"k".repeat(255)] {
            assert!(MetadataKey::parse(ok).is_some(), "{ok:?}");
        }
        for bad in ["", "a/b", "é", "key\n", "a@b", &"k".repeat(256)] {
            assert!(MetadataKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn value_length_counts_characters_not_bytes() {
        assert!(MetadataValue::parse(&"é".repeat(255)).is_some());
        assert!(MetadataValue::parse(&"é".repeat(256)).is_none());
    }

    #[test]
    fn quota_allows_the_limit_and_skips_empty_sets() {
        let q = MetadataQuota::from_config(2);
        assert!(q.allows(0) && q.allows(2) && !q.allows(3));
        assert!(MetadataQuota::from_config(-1).allows(1_000_000));
        assert!(MetadataQuota::from_config(0).allows(0) && !MetadataQuota::from_config(0).allows(1));
    }

    #[test]
    fn database_form_keeps_order_nulls_and_any_text() {
        let p = Properties::new(vec![
            ("z".into(), Some("1".into())),
            ("a".into(), None),
            ("q\"uote\\".into(), Some("é\u{0}\n".into())),
        ]);
        assert_eq!(p.encode(), r#"[["z","1"],["a",null],["q\"uote\\","é\u0000\n"]]"#);
        assert_eq!(Properties::decode(&p.encode()), Some(p));
        assert_eq!(Properties::decode("[]"), Some(Properties::default()));
        assert_eq!(Properties::decode(r#"{"a":"b"}"#), None);
    }
}
