//! The metadefs schemas (metadefs-spec §11): the ten documents `/v2/schemas/metadefs/*`
//! serves, built as Glance builds them (an entity's schema, and the collection schema made from
//! it), and the validation of request bodies against those same documents, so the two cannot
//! disagree.
//!
//! Validation reports the error Glance's `jsonschema.validate` raises (its `best_match`), in its
//! words, without the schema dump and instance that follow them in Glance's message.

use std::sync::OnceLock;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::api::fault::Fault;
use crate::api::pyrepr::repr;

/// The entity schemas requests are validated against, by their `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Namespace,
    Object,
    Property,
    /// A property inside an object: no `name` required.
    ObjectProperty,
    Tag,
    /// `POST …/tags`: a list of tags (a schema Glance does not serve).
    TagList,
    Association,
}

/// The documents `/v2/schemas/metadefs/{name}` serves, by name.
pub fn document(name: &str) -> Option<&'static Value> {
    static DOCS: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    let docs = DOCS.get_or_init(|| {
        vec![
            ("namespace", namespace().raw()),
            ("namespaces", namespace().collection("namespaces")),
            ("object", object().raw()),
            ("objects", object().collection("objects")),
            ("property", property(true).raw()),
            ("properties", property(false).dict_collection("properties")),
            ("tag", tag().raw()),
            ("tags", tag().collection("tags")),
            ("resource_type", association().raw()),
            ("resource_types", association().collection("resource_type_associations")),
        ]
    });
    docs.iter().find(|(n, _)| *n == name).map(|(_, d)| d)
}

/// Checks `body` against `entity`'s schema: Glance's 400 `Provided object does not match
/// schema '<name>': <why>` when it does not match.
pub fn validate(entity: Entity, body: &Value) -> Result<(), Fault> {
    check(entity, body).map_err(|text| Fault::explained(StatusCode::BAD_REQUEST, text))
}

/// [`validate`]'s refusal, as text.
pub fn check(entity: Entity, body: &Value) -> Result<(), String> {
    static SCHEMAS: OnceLock<Vec<(Entity, Value)>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        vec![
            (Entity::Namespace, namespace().raw()),
            (Entity::Object, object().raw()),
            (Entity::Property, property(true).raw()),
            (Entity::ObjectProperty, property(false).raw()),
            (Entity::Tag, tag().raw()),
            (Entity::TagList, tag_list()),
            (Entity::Association, association().raw()),
        ]
    });
    let Some((_, schema)) = schemas.iter().find(|(e, _)| *e == entity) else { return Ok(()) };
    match best_match(schema, body) {
        None => Ok(()),
        Some(why) => Err(message(entity, &why)),
    }
}

/// Glance's refusal of a body that does not fit `entity`'s schema (also for what its model
/// then refuses: Glance fails there with a 500).
pub fn invalid(entity: Entity, why: &str) -> Fault {
    Fault::explained(StatusCode::BAD_REQUEST, message(entity, why))
}

fn message(entity: Entity, why: &str) -> String {
    let name = match entity {
        Entity::Namespace => "namespace",
        // An object's properties are reported against the object.
        Entity::Object | Entity::ObjectProperty => "object",
        Entity::Property => "property",
        Entity::Tag => "tag",
        Entity::TagList => "tags",
        Entity::Association => "resource_type_association",
    };
    format!("Provided object does not match schema '{name}': {why}")
}

/// A schema as Glance's `glance.schema.Schema` holds it.
struct Schema {
    name: &'static str,
    properties: Value,
    definitions: Option<Value>,
    required: Vec<&'static str>,
}

impl Schema {
    /// `Schema.raw()`: name, properties, `additionalProperties: false`, then definitions and
    /// required when there are any.
    fn raw(&self) -> Value {
        let mut m = self.without_definitions();
        if let Some(d) = &self.definitions {
            let required = m.remove("required");
            m.insert("definitions".into(), d.clone());
            if let Some(r) = required {
                m.insert("required".into(), r);
            }
        }
        Value::Object(m)
    }

    fn without_definitions(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("properties".into(), self.properties.clone());
        m.insert("additionalProperties".into(), json!(false));
        if !self.required.is_empty() {
            m.insert("required".into(), json!(self.required));
        }
        m
    }

    /// `CollectionSchema.raw()`: the entities as an array, the links, and the entity's
    /// definitions hoisted.
    fn collection(&self, name: &str) -> Value {
        self.collected(name, json!({"type": "array", "items": Value::Object(self.without_definitions())}))
    }

    /// `DictCollectionSchema.raw()`: the entities as an object's values.
    fn dict_collection(&self, name: &str) -> Value {
        self.collected(
            name,
            json!({"type": "object", "additionalProperties": Value::Object(self.without_definitions())}),
        )
    }

    fn collected(&self, name: &str, members: Value) -> Value {
        let mut properties = Map::new();
        properties.insert(name.into(), members);
        properties.insert("first".into(), json!({"type": "string"}));
        properties.insert("next".into(), json!({"type": "string"}));
        properties.insert("schema".into(), json!({"type": "string"}));
        let mut m = Map::new();
        m.insert("name".into(), json!(name));
        m.insert("properties".into(), Value::Object(properties));
        m.insert(
            "links".into(),
            json!([{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                   {"rel": "describedby", "href": "{schema}"}]),
        );
        if let Some(d) = &self.definitions {
            m.insert("definitions".into(), d.clone());
        }
        Value::Object(m)
    }
}

fn types_with_null() -> Value {
    json!(["array", "boolean", "integer", "number", "object", "string", null])
}

/// The keys of a property definition (Glance's `_get_base_properties` of properties).
fn property_properties() -> Value {
    json!({
        "name": {"type": "string", "maxLength": 80},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "operators": {"type": "array", "items": {"type": "string"}},
        "type": {"type": "string", "enum": types_with_null()},
        "required": {"$ref": "#/definitions/stringArray"},
        "minimum": {"type": "number"},
        "maximum": {"type": "number"},
        "maxLength": {"$ref": "#/definitions/positiveInteger"},
        "minLength": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "pattern": {"type": "string", "format": "regex"},
        "enum": {"type": "array"},
        "readonly": {"type": "boolean"},
        "default": {},
        "items": {"type": "object", "properties": {"type": {"type": "string", "enum": types_with_null()},
                                                   "enum": {"type": "array"}}},
        "maxItems": {"$ref": "#/definitions/positiveInteger"},
        "minItems": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "uniqueItems": {"type": "boolean", "default": false},
        "additionalItems": {"type": "boolean"},
    })
}

/// The shared definitions; a property's own string arrays must not be empty.
fn definitions(non_empty_arrays: bool, with_property: bool) -> Value {
    let mut string_array = json!({"type": "array", "items": {"type": "string"}});
    if non_empty_arrays {
        string_array["minItems"] = json!(1);
    }
    string_array["uniqueItems"] = json!(true);
    let mut d = json!({
        "positiveInteger": {"type": "integer", "minimum": 0},
        "positiveIntegerDefault0": {"allOf": [{"$ref": "#/definitions/positiveInteger"}, {"default": 0}]},
        "stringArray": string_array,
    });
    if with_property {
        d["property"] = json!({"type": "object", "additionalProperties": {
            "type": "object", "required": ["title", "type"], "properties": property_properties()}});
    }
    d
}

fn created(what: &str) -> Value {
    json!({"type": "string", "readOnly": true, "description": format!("Date and time of {what}"), "format": "date-time"})
}

fn namespace() -> Schema {
    Schema {
        name: "namespace",
        properties: json!({
            "namespace": {"type": "string", "description": "The unique namespace text.", "maxLength": 80},
            "display_name": {"type": "string",
                             "description": "The user friendly name for the namespace. Used by UI if available.",
                             "maxLength": 80},
            "description": {"type": "string", "description": "Provides a user friendly description of the namespace.",
                            "maxLength": 500},
            "visibility": {"type": "string", "description": "Scope of namespace accessibility.",
                           "enum": ["public", "private"]},
            "protected": {"type": "boolean", "description": "If true, namespace will not be deletable."},
            "owner": {"type": "string", "description": "Owner of the namespace.", "maxLength": 255},
            "created_at": created("namespace creation"),
            "updated_at": created("the last namespace modification"),
            "schema": {"readOnly": true, "type": "string"},
            "self": {"readOnly": true, "type": "string"},
            "resource_type_associations": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "prefix": {"type": "string"}, "properties_target": {"type": "string"}}}},
            "properties": {"$ref": "#/definitions/property"},
            "objects": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "description": {"type": "string"},
                "required": {"$ref": "#/definitions/stringArray"}, "properties": {"$ref": "#/definitions/property"}}}},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }),
        definitions: Some(definitions(false, true)),
        required: vec!["namespace"],
    }
}

fn object() -> Schema {
    Schema {
        name: "object",
        properties: json!({
            "name": {"type": "string", "maxLength": 80},
            "description": {"type": "string"},
            "required": {"$ref": "#/definitions/stringArray"},
            "properties": {"$ref": "#/definitions/property"},
            "schema": {"readOnly": true, "type": "string"},
            "self": {"readOnly": true, "type": "string"},
            "created_at": created("object creation"),
            "updated_at": created("the last object modification"),
        }),
        definitions: Some(definitions(false, true)),
        required: vec!["name"],
    }
}

/// The property schema: `named` for a property on its own (`POST …/properties`), which must
/// name itself; a collection's members (and an object's properties) need not.
fn property(named: bool) -> Schema {
    Schema {
        name: "property",
        properties: property_properties(),
        definitions: Some(definitions(true, false)),
        required: if named { vec!["type", "title", "name"] } else { vec!["type", "title"] },
    }
}

fn tag() -> Schema {
    Schema {
        name: "tag",
        properties: json!({
            "name": {"type": "string", "maxLength": 80},
            "created_at": created("tag creation"),
            "updated_at": created("the last tag modification"),
        }),
        definitions: None,
        required: vec!["name"],
    }
}

/// `POST …/tags`: Glance's `get_schema_for_tags_list`.
fn tag_list() -> Value {
    json!({
        "name": "tags",
        "properties": {"tags": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"}},
            "required": ["name"], "additionalProperties": false}}},
        "additionalProperties": false,
    })
}

fn association() -> Schema {
    Schema {
        name: "resource_type_association",
        properties: json!({
            "name": {"type": "string",
                     "description": "Resource type names should be aligned with Heat resource types whenever possible: https://docs.openstack.org/heat/latest/template_guide/openstack.html",
                     "maxLength": 80},
            "prefix": {"type": "string",
                       "description": "Specifies the prefix to use for the given resource type. Any properties in the namespace should be prefixed with this prefix when being applied to the specified resource type. Must include prefix separator (e.g. a colon :).",
                       "maxLength": 80},
            "properties_target": {"type": "string",
                                  "description": "Some resource types allow more than one key / value pair per instance.  For example, Cinder allows user and image metadata on volumes. Only the image properties metadata is evaluated by Nova (scheduling or drivers). This property allows a namespace target to remove the ambiguity.",
                                  "maxLength": 80},
            "created_at": created("resource type association"),
            "updated_at": created("the last resource type association modification"),
        }),
        definitions: None,
        required: vec!["name"],
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: the part of JSON Schema (2020-12) these documents use.
// ---------------------------------------------------------------------------------------------

/// Where in the instance an error is: keys and indexes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Index(usize),
    Key(String),
}

#[derive(Debug)]
struct SchemaError {
    path: Vec<Step>,
    /// The instance does not have the type of the schema the error is in (or it has none).
    mismatched: bool,
    message: String,
}

/// The message of the error `jsonschema.exceptions.best_match` picks: the shallowest, then
/// the one whose path sorts last, then one whose instance does not match its schema's type;
/// among equals, the first found.
fn best_match(schema: &Value, instance: &Value) -> Option<String> {
    let mut errors = Vec::new();
    walk(schema, schema, instance, &mut Vec::new(), &mut errors);
    let key = |e: &SchemaError| (std::cmp::Reverse(e.path.len()), e.path.clone(), e.mismatched);
    let mut best: Option<&SchemaError> = None;
    for e in &errors {
        if best.is_none_or(|b| key(e) > key(b)) {
            best = Some(e);
        }
    }
    best.map(|e| e.message.clone())
}

fn is_type(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0) || v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn types(t: &Value) -> Vec<&str> {
    match t {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A value as Python's `==` on what `json.loads` makes compares it (`1 == 1.0`, `True != 1`),
/// as one string, so that equal values have equal keys.
fn canonical(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("n{:?}", n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        Value::Object(m) => {
            let mut items: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{}", canonical(v))).collect();
            items.sort();
            format!("{{{}}}", items.join(","))
        }
        other => other.to_string(),
    }
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix("#/")?;
    path.split('/').try_fold(root, |v, step| v.get(step))
}

fn walk(root: &Value, schema: &Value, instance: &Value, path: &mut Vec<Step>, out: &mut Vec<SchemaError>) {
    let Some(keywords) = schema.as_object() else { return };
    let mismatched = keywords.get("type").is_none_or(|t| !types(t).iter().any(|t| is_type(t, instance)));
    for (keyword, value) in keywords {
        match keyword.as_str() {
            "$ref" => {
                if let Some(target) = value.as_str().and_then(|r| resolve(root, r)) {
                    walk(root, target, instance, path, out);
                }
            }
            "allOf" => {
                for sub in value.as_array().into_iter().flatten() {
                    walk(root, sub, instance, path, out);
                }
            }
            "type" => {
                let expected = types(value);
                if !expected.iter().any(|t| is_type(t, instance)) {
                    let names: Vec<String> = expected.iter().map(|t| format!("'{t}'")).collect();
                    push(out, path, mismatched, format!("{} is not of type {}", repr(instance), names.join(", ")));
                }
            }
            "enum" => {
                let options = value.as_array().map(Vec::as_slice).unwrap_or_default();
                if !options.iter().any(|o| canonical(o) == canonical(instance)) {
                    push(out, path, mismatched, format!("{} is not one of {}", repr(instance), repr(value)));
                }
            }
            "maxLength" | "minLength" => {
                if let (Some(limit), Some(s)) = (value.as_u64(), instance.as_str()) {
                    let n = s.chars().count() as u64;
                    if keyword == "maxLength" && n > limit {
                        let why = if limit == 0 { "is expected to be empty" } else { "is too long" };
                        push(out, path, mismatched, format!("{} {why}", repr(instance)));
                    } else if keyword == "minLength" && n < limit {
                        let why = if limit == 1 { "should be non-empty" } else { "is too short" };
                        push(out, path, mismatched, format!("{} {why}", repr(instance)));
                    }
                }
            }
            "minimum" => {
                if let (Some(min), Some(n)) = (value.as_f64(), instance.as_f64())
                    && n < min
                {
                    push(
                        out,
                        path,
                        mismatched,
                        format!("{} is less than the minimum of {}", repr(instance), repr(value)),
                    );
                }
            }
            "minItems" => {
                if let (Some(min), Some(a)) = (value.as_u64(), instance.as_array())
                    && (a.len() as u64) < min
                {
                    let why = if min == 1 { "should be non-empty" } else { "is too short" };
                    push(out, path, mismatched, format!("{} {why}", repr(instance)));
                }
            }
            "uniqueItems" => {
                if let (Some(true), Some(a)) = (value.as_bool(), instance.as_array()) {
                    let mut seen = std::collections::HashSet::with_capacity(a.len());
                    if !a.iter().all(|v| seen.insert(canonical(v))) {
                        push(out, path, mismatched, format!("{} has non-unique elements", repr(instance)));
                    }
                }
            }
            "required" => {
                if let Some(m) = instance.as_object() {
                    for name in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if !m.contains_key(name) {
                            push(out, path, mismatched, format!("'{name}' is a required property"));
                        }
                    }
                }
            }
            "properties" => {
                if let (Some(props), Some(m)) = (value.as_object(), instance.as_object()) {
                    for (name, sub) in props {
                        if let Some(v) = m.get(name) {
                            path.push(Step::Key(name.clone()));
                            walk(root, sub, v, path, out);
                            path.pop();
                        }
                    }
                }
            }
            "additionalProperties" => {
                let Some(m) = instance.as_object() else { continue };
                let known = keywords.get("properties").and_then(Value::as_object);
                let extras: Vec<&String> = m.keys().filter(|k| known.is_none_or(|p| !p.contains_key(*k))).collect();
                match value {
                    Value::Bool(false) if !extras.is_empty() => {
                        let names: Vec<String> = extras.iter().map(|k| repr(&Value::String((*k).clone()))).collect();
                        let verb = if extras.len() == 1 { "was" } else { "were" };
                        push(
                            out,
                            path,
                            mismatched,
                            format!("Additional properties are not allowed ({} {verb} unexpected)", names.join(", ")),
                        );
                    }
                    Value::Object(_) => {
                        for k in extras {
                            path.push(Step::Key(k.clone()));
                            walk(root, value, &m[k.as_str()], path, out);
                            path.pop();
                        }
                    }
                    _ => {}
                }
            }
            "items" => {
                if let Some(a) = instance.as_array() {
                    for (i, v) in a.iter().enumerate() {
                        path.push(Step::Index(i));
                        walk(root, value, v, path, out);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }
}

fn push(out: &mut Vec<SchemaError>, path: &[Step], mismatched: bool, message: String) {
    out.push(SchemaError { path: path.to_vec(), mismatched, message });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(entity: Entity, body: Value) -> Option<String> {
        validate(entity, &body).err().map(|f| match f {
            Fault::Bare { body, .. } => body.raw().trim_end_matches("<br /><br />\n\n\n").to_owned(),
            other => panic!("{other:?}"),
        })
    }

    /// The messages `jsonschema` 4.26 (Glance 33's) gives for the same bodies, its first line
    /// (checked against it: metadefs-spec's probe transcripts).
    #[test]
    fn messages_are_jsonschemas() {
        let ns = |b: Value| why(Entity::Namespace, b).unwrap();
        let prefix = "Provided object does not match schema 'namespace': ";
        assert_eq!(ns(json!({"display_name": "x"})), format!("{prefix}'namespace' is a required property"));
        assert_eq!(
            ns(json!({"namespace": "n", "visibility": "shared"})),
            format!("{prefix}'shared' is not one of ['public', 'private']")
        );
        assert_eq!(ns(json!({"namespace": "X".repeat(81)})), format!("{prefix}'{}' is too long", "X".repeat(81)));
        assert_eq!(
            ns(json!({"namespace": "X3", "foo": "bar"})),
            format!("{prefix}Additional properties are not allowed ('foo' was unexpected)")
        );
        // The shallowest error wins, then the additional properties before the required ones.
        assert_eq!(
            ns(json!({"foo": 1, "visibility": "x"})),
            format!("{prefix}Additional properties are not allowed ('foo' was unexpected)")
        );
        assert_eq!(
            why(Entity::Property, json!({"name": "x", "title": "X", "type": "foo"})).unwrap(),
            "Provided object does not match schema 'property': 'foo' is not one of ['array', 'boolean', 'integer', 'number', 'object', 'string', None]"
        );
        assert_eq!(
            why(Entity::Property, json!({"name": "x", "title": "X", "type": null})).unwrap(),
            "Provided object does not match schema 'property': None is not of type 'string'"
        );
        assert_eq!(
            why(Entity::Property, json!({"name": "x", "title": "X", "type": "string", "maxLength": -1})).unwrap(),
            "Provided object does not match schema 'property': -1 is less than the minimum of 0"
        );
        assert_eq!(
            why(Entity::Property, json!({"name": "x", "title": "X", "type": "array", "required": []})).unwrap(),
            "Provided object does not match schema 'property': [] should be non-empty"
        );
        assert_eq!(
            why(Entity::TagList, json!({"tags": [{"name": "a", "x": 1}]})).unwrap(),
            "Provided object does not match schema 'tags': Additional properties are not allowed ('x' was unexpected)"
        );
        assert_eq!(
            why(Entity::Object, json!({"name": "o", "properties": {"p": {"type": "string"}}})).unwrap(),
            "Provided object does not match schema 'object': 'title' is a required property"
        );
        assert_eq!(
            why(Entity::Object, json!({"name": "o", "required": ["a", "a"]})).unwrap(),
            "Provided object does not match schema 'object': ['a', 'a'] has non-unique elements"
        );
        assert!(why(Entity::Object, json!({"name": "o", "required": [1, 1.0]})).unwrap().contains("non-unique"));
        assert_eq!(why(Entity::Namespace, json!({"namespace": ""})), None);
        assert_eq!(why(Entity::Property, json!({"name": "n", "title": "t", "type": "integer", "minimum": 1.5})), None);
    }

    /// Each document is what Glance serves, byte for byte (the API tests compare them with
    /// Glance's own output; here, the shapes that tie them together).
    #[test]
    fn collections_are_built_from_their_entities() {
        let namespaces = document("namespaces").unwrap();
        let mut item = document("namespace").unwrap().clone();
        let definitions = item.as_object_mut().unwrap().remove("definitions").unwrap();
        assert_eq!(namespaces["properties"]["namespaces"]["items"], item);
        assert_eq!(namespaces["definitions"], definitions);
        assert_eq!(document("resource_type").unwrap()["name"], "resource_type_association");
        assert_eq!(
            document("properties").unwrap()["properties"]["properties"]["additionalProperties"]["required"],
            json!(["type", "title"])
        );
        assert!(document("nope").is_none());
    }
}
