//! Glance's metadata definitions catalogue ("metadefs", metadefs-spec §3): namespaces of
//! property definitions that dashboards offer for other services' resources (image properties,
//! flavor extra specs, volume metadata), with the resource types each namespace applies to.
//!
//! The catalogue only stores and serves these definitions; nothing in it is enforced on images.
//! Nothing here knows HTTP or SQL: the image API parses requests into these types, the stores
//! keep them, and the views show them.

use serde_json::{Map, Number, Value};
use time::OffsetDateTime;

use super::{BadText, bad_text};

/// The longest name of a namespace, object, property, tag or resource type, and the longest
/// `display_name`, `prefix` and `properties_target` (Glance's columns and schemas).
pub const MAX_NAME: usize = 80;
/// The longest namespace `description`.
pub const MAX_DESCRIPTION: usize = 500;
/// The longest namespace `owner`.
pub const MAX_OWNER: usize = 255;
/// The most objects, properties, tags and resource-type associations one namespace holds,
/// each. Glance has no such limit; a namespace is read whole (its `GET` shows everything in
/// it), so this bounds the work and memory of one request. The largest namespace Glance ships
/// has 19 properties.
pub const MAX_PER_NAMESPACE: usize = 256;
/// The most resource types the catalogue holds: they are listed whole, and associations
/// create them. Glance ships six.
pub const MAX_RESOURCE_TYPES: usize = 1000;

/// A namespace's visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsVisibility {
    Public,
    Private,
}

impl NsVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            NsVisibility::Public => "public",
            NsVisibility::Private => "private",
        }
    }

    pub fn parse(s: &str) -> Option<NsVisibility> {
        match s {
            "public" => Some(NsVisibility::Public),
            "private" => Some(NsVisibility::Private),
            _ => None,
        }
    }
}

/// A namespace's own fields, as a create or an update gives them (the timestamps are the
/// store's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceFields {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// `None`: a definition file that names none (shown, and treated, as private).
    pub visibility: Option<NsVisibility>,
    /// `None`: a definition file that names none (false).
    pub protected: Option<bool>,
    pub owner: String,
}

/// A namespace as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub fields: NamespaceFields,
    pub created_at: OffsetDateTime,
    /// `None` for rows a definition file loaded and nothing changed since (Glance shows no
    /// `updated_at` for them).
    pub updated_at: Option<OffsetDateTime>,
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.fields.name
    }

    pub fn visibility(&self) -> NsVisibility {
        self.fields.visibility.unwrap_or(NsVisibility::Private)
    }

    pub fn is_public(&self) -> bool {
        self.fields.visibility == Some(NsVisibility::Public)
    }

    pub fn is_protected(&self) -> bool {
        self.fields.protected == Some(true)
    }
}

/// A namespace with everything in it (its `GET`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceContents {
    pub namespace: Namespace,
    pub associations: Vec<Association>,
    pub properties: Vec<(String, PropertyDef)>,
    pub objects: Vec<Object>,
    pub tags: Vec<Tag>,
}

/// A namespace to create, with what it holds from the start: the body of a create, or a
/// definition file. A collection the request did not name is `None` (its echo leaves it out).
#[derive(Debug, Clone, PartialEq)]
pub struct NewNamespace {
    pub fields: NamespaceFields,
    pub associations: Option<Vec<Association>>,
    pub properties: Option<Vec<(String, PropertyDef)>>,
    pub objects: Option<Vec<Object>>,
    pub tags: Option<Vec<String>>,
}

/// An object: a named group of property definitions. What a request did not give is `None`;
/// the store gives back every field (`required` `[]`, `properties` `{}` when empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub name: String,
    pub description: Option<String>,
    pub required: Option<Vec<String>>,
    pub properties: Option<Vec<(String, PropertyDef)>>,
    pub created_at: Option<OffsetDateTime>,
    pub updated_at: Option<OffsetDateTime>,
}

/// A tag of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub created_at: OffsetDateTime,
    pub updated_at: Option<OffsetDateTime>,
}

/// A resource type (`OS::Glance::Image`, `OS::Nova::Flavor`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub name: String,
    pub created_at: OffsetDateTime,
    pub updated_at: Option<OffsetDateTime>,
}

/// A namespace's association with a resource type: `prefix` is what a consumer puts before
/// the namespace's property names for that type (`hw:` for flavor extra specs), and
/// `properties_target` which of the type's dictionaries they go in. The timestamps are the
/// store's (`None` in what a request gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub name: String,
    pub prefix: Option<String>,
    pub properties_target: Option<String>,
    pub created_at: Option<OffsetDateTime>,
    pub updated_at: Option<OffsetDateTime>,
}

/// Which of a namespace's collections a bulk delete empties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    Objects,
    Properties,
    Tags,
}

/// A property definition: Glance's `PropertyType` model, a subset of JSON schema. Fields are
/// in the order Glance writes them; each is `None` when absent. Values are kept as Glance's
/// model types them (see [`PropertyDef::from_json`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropertyDef {
    /// Only when one was given inside the definition (a property created on its own has it;
    /// one created in a namespace or loaded from a file usually not).
    pub name: Option<String>,
    pub kind: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub operators: Option<Vec<String>>,
    /// `Some(None)`: a default Glance cannot type (an object or a list), shown as `null`.
    pub default: Option<Option<String>>,
    pub readonly: Option<bool>,
    pub minimum: Option<Number>,
    pub maximum: Option<Number>,
    pub enumeration: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub min_length: Option<Number>,
    pub max_length: Option<Number>,
    pub confidential: Option<bool>,
    pub items: Option<ItemsDef>,
    pub unique_items: Option<bool>,
    pub min_items: Option<Number>,
    pub max_items: Option<Number>,
    pub additional_items: Option<bool>,
}

/// The `items` of an array property.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemsDef {
    pub kind: Option<String>,
    pub enumeration: Option<Vec<String>>,
}

impl PropertyDef {
    /// A definition from its JSON (already valid against Glance's property schema), typed as
    /// Glance's model types it: a scalar `default` becomes Python's `str()` of it (`5` is
    /// `"5"`, `true` is `"True"`) and any other `default` null; the integer fields lose their
    /// fraction (`1.5` is `1`); lists must hold strings. An unknown key, or a value the model
    /// cannot type, is refused with why (Glance fails with a 500 there).
    pub fn from_json(v: &Map<String, Value>) -> Result<PropertyDef, String> {
        let mut def = PropertyDef::default();
        for (key, value) in v {
            if value.is_null() && key != "default" {
                continue;
            }
            match key.as_str() {
                "name" => def.name = Some(text(key, value)?),
                "type" => def.kind = Some(text(key, value)?),
                "title" => def.title = Some(text(key, value)?),
                "description" => def.description = Some(text(key, value)?),
                "operators" => def.operators = Some(texts(key, value)?),
                "default" => def.default = Some(py_str(value)),
                "readonly" => def.readonly = Some(boolean(key, value)?),
                "minimum" => def.minimum = Some(integer(key, value)?),
                "maximum" => def.maximum = Some(integer(key, value)?),
                "enum" => def.enumeration = Some(texts(key, value)?),
                "pattern" => def.pattern = Some(text(key, value)?),
                "minLength" => def.min_length = Some(integer(key, value)?),
                "maxLength" => def.max_length = Some(integer(key, value)?),
                "confidential" => def.confidential = Some(boolean(key, value)?),
                "items" => {
                    let Value::Object(items) = value else { return Err(invalid(key, value, "an object")) };
                    let mut parsed = ItemsDef::default();
                    for (k, v) in items {
                        match k.as_str() {
                            _ if v.is_null() => {}
                            "type" => parsed.kind = Some(text(k, v)?),
                            "enum" => parsed.enumeration = Some(texts(k, v)?),
                            other => return Err(format!("Unknown attribute for argument items: {other}")),
                        }
                    }
                    def.items = Some(parsed);
                }
                "uniqueItems" => def.unique_items = Some(boolean(key, value)?),
                "minItems" => def.min_items = Some(integer(key, value)?),
                "maxItems" => def.max_items = Some(integer(key, value)?),
                "additionalItems" => def.additional_items = Some(boolean(key, value)?),
                other => return Err(format!("Unknown attribute for argument property: {other}")),
            }
        }
        Ok(def)
    }

    /// The definition as JSON, in Glance's key order: how it is stored and shown.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::String);
        let list =
            |v: &Option<Vec<String>>| v.clone().map(|l| Value::Array(l.into_iter().map(Value::String).collect()));
        let n = |v: &Option<Number>| v.clone().map(Value::Number);
        let b = |v: &Option<bool>| v.map(Value::Bool);
        put("name", s(&self.name));
        put("type", s(&self.kind));
        put("title", s(&self.title));
        put("description", s(&self.description));
        put("operators", list(&self.operators));
        put("default", self.default.clone().map(|d| d.map_or(Value::Null, Value::String)));
        put("readonly", b(&self.readonly));
        put("minimum", n(&self.minimum));
        put("maximum", n(&self.maximum));
        put("enum", list(&self.enumeration));
        put("pattern", s(&self.pattern));
        put("minLength", n(&self.min_length));
        put("maxLength", n(&self.max_length));
        put("confidential", b(&self.confidential));
        put(
            "items",
            self.items.as_ref().map(|i| {
                let mut items = Map::new();
                if let Some(k) = &i.kind {
                    items.insert("type".into(), Value::String(k.clone()));
                }
                if let Some(e) = list(&i.enumeration) {
                    items.insert("enum".into(), e);
                }
                Value::Object(items)
            }),
        );
        put("uniqueItems", b(&self.unique_items));
        put("minItems", n(&self.min_items));
        put("maxItems", n(&self.max_items));
        put("additionalItems", b(&self.additional_items));
        Value::Object(m)
    }
}

/// Property definitions by name, from a JSON object (in its order).
pub fn properties_from_json(v: &Map<String, Value>) -> Result<Vec<(String, PropertyDef)>, String> {
    v.iter()
        .map(|(name, def)| match def {
            Value::Object(def) => Ok((name.clone(), PropertyDef::from_json(def)?)),
            other => Err(invalid(name, other, "an object")),
        })
        .collect()
}

/// Property definitions by name, as a JSON object.
pub fn properties_to_json(props: &[(String, PropertyDef)]) -> Value {
    Value::Object(props.iter().map(|(k, d)| (k.clone(), d.to_json())).collect())
}

fn invalid(key: &str, value: &Value, expected: &str) -> String {
    format!("Invalid input for field/attribute {key}. Value: '{value}'. Value should be {expected}")
}

fn text(key: &str, v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_owned).ok_or_else(|| invalid(key, v, "a string"))
}

fn texts(key: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Ok(items.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        }
        _ => Err(invalid(key, v, "a list of strings")),
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| invalid(key, v, "a boolean"))
}

/// Python's `int()` of a JSON number: the fraction dropped.
fn integer(key: &str, v: &Value) -> Result<Number, String> {
    let Value::Number(n) = v else { return Err(invalid(key, v, "an integer")) };
    if n.is_i64() || n.is_u64() {
        return Ok(n.clone());
    }
    let f = n.as_f64().unwrap_or(0.0).trunc();
    if f >= i64::MIN as f64 && f <= i64::MAX as f64 {
        Ok(Number::from(f as i64))
    } else {
        Number::from_f64(f).ok_or_else(|| invalid(key, v, "an integer"))
    }
}

/// Python's `str()` of a scalar; `None` for an object, a list or null (Glance's
/// `wsme.types.bytes` cannot hold them).
fn py_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// Text a field cannot hold, as Glance's `no_4byte_params` finds it (characters beyond the
/// Basic Multilingual Plane, when `bmp_only`), and NUL, which no catalogue stores: the first
/// offending field with why.
pub fn unstorable<'a>(fields: &[(&'a str, &str)], bmp_only: bool) -> Option<(&'a str, BadText)> {
    fields.iter().find_map(|(field, value)| bad_text(value, bmp_only).map(|bad| (*field, bad)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<PropertyDef, String> {
        PropertyDef::from_json(v.as_object().unwrap())
    }

    /// Glance's model types (metadefs-spec §3.3): a scalar default becomes its Python `str()`,
    /// another default null, integer fields are truncated; the order is Glance's.
    #[test]
    fn definitions_are_typed_as_glance_types_them() {
        let def = parse(json!({"maxItems": 3, "default": 5, "title": "T", "type": "array", "minimum": 1.5,
                               "items": {"enum": ["x"], "type": "string"}, "name": "n"}))
        .unwrap();
        assert_eq!(
            serde_json::to_string(&def.to_json()).unwrap(),
            r#"{"name":"n","type":"array","title":"T","default":"5","minimum":1,"items":{"type":"string","enum":["x"]},"maxItems":3}"#
        );
        let py = |v: Value| parse(json!({"default": v})).unwrap().default.unwrap();
        assert_eq!(py(json!(true)), Some("True".into()));
        assert_eq!(py(json!(false)), Some("False".into()));
        assert_eq!(py(json!(1.5)), Some("1.5".into()));
        assert_eq!(py(json!(2.0)), Some("2.0".into()));
        assert_eq!(py(json!({"a": 1})), None);
        assert_eq!(py(json!([1])), None);
        assert_eq!(parse(json!({"maximum": 7.9})).unwrap().maximum, Some(Number::from(7)));
        assert!(parse(json!({"enum": [1, 2]})).unwrap_err().contains("enum"));
        assert!(parse(json!({"required": ["a"]})).unwrap_err().contains("required"));
        assert!(parse(json!({"items": {"x": 1}})).is_err());
        // Typing is idempotent: what is stored reads back the same.
        let stored = def.to_json();
        assert_eq!(parse(stored).unwrap(), def);
    }

    #[test]
    fn unstorable_text_names_its_field() {
        assert_eq!(
            unstorable(&[("name", "ok"), ("description", "a\u{1F600}")], true),
            Some(("description", BadText::FourByte))
        );
        assert_eq!(unstorable(&[("name", "a\u{1F600}")], false), None);
        assert_eq!(unstorable(&[("name", "a\0")], false), Some(("name", BadText::Nul)));
    }
}
