//! Every JSON shape of the metadefs API (metadefs-spec §3), in Glance's key order. What is
//! absent (`None`) is left out, never written as null.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::api::compute::views::isotime;
use crate::domain::metadefs::{
    Association, Namespace, NamespaceContents, Object, PropertyDef, ResourceType, Tag, properties_to_json,
};

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v);
    }
}

fn time(t: Option<OffsetDateTime>) -> Option<Value> {
    t.map(|t| Value::String(isotime(t)))
}

fn text(s: &Option<String>) -> Option<Value> {
    s.clone().map(Value::String)
}

pub fn namespace_path(name: &str) -> String {
    format!("/v2/metadefs/namespaces/{name}")
}

/// What a namespace is shown with, besides its own fields.
#[derive(Default)]
pub struct Embedded<'a> {
    pub associations: Option<&'a [Association]>,
    pub properties: Option<&'a [(String, PropertyDef)]>,
    pub objects: Option<Value>,
    pub tags: Option<Vec<&'a str>>,
}

/// A namespace with what is embedded in it (each collection only when given).
pub fn namespace(ns: &Namespace, embedded: Embedded<'_>) -> Value {
    let f = &ns.fields;
    let mut m = Map::new();
    m.insert("namespace".into(), json!(f.name));
    put(&mut m, "display_name", text(&f.display_name));
    put(&mut m, "description", text(&f.description));
    m.insert("visibility".into(), json!(ns.visibility().as_str()));
    m.insert("protected".into(), json!(ns.is_protected()));
    m.insert("owner".into(), json!(f.owner));
    put(&mut m, "created_at", time(Some(ns.created_at)));
    put(&mut m, "updated_at", time(ns.updated_at));
    put(
        &mut m,
        "resource_type_associations",
        embedded.associations.map(|a| Value::Array(a.iter().map(association).collect())),
    );
    put(&mut m, "properties", embedded.properties.map(properties_to_json));
    put(&mut m, "objects", embedded.objects);
    put(&mut m, "tags", embedded.tags.map(|t| Value::Array(t.into_iter().map(tag_name).collect())));
    m.insert("self".into(), json!(namespace_path(&f.name)));
    m.insert("schema".into(), json!("/v2/schemas/metadefs/namespace"));
    Value::Object(m)
}

/// A namespace in a listing: its associations when it has any.
pub fn namespace_summary(ns: &Namespace, associations: &[Association]) -> Value {
    let associations = (!associations.is_empty()).then_some(associations);
    namespace(ns, Embedded { associations, ..Embedded::default() })
}

/// A namespace's `GET`: each collection when it is not empty; property names (of the
/// namespace's and its objects') prefixed with `prefix` when one is given.
pub fn namespace_contents(c: &NamespaceContents, prefix: Option<&str>) -> Value {
    let prefixed = |props: &[(String, PropertyDef)]| -> Vec<(String, PropertyDef)> {
        props.iter().map(|(k, d)| (format!("{}{k}", prefix.unwrap_or("")), d.clone())).collect()
    };
    let properties = prefixed(&c.properties);
    let objects: Vec<Value> = c
        .objects
        .iter()
        .map(|o| {
            let o = Object {
                required: o
                    .required
                    .as_ref()
                    .map(|r| r.iter().map(|n| format!("{}{n}", prefix.unwrap_or(""))).collect()),
                properties: o.properties.as_deref().map(prefixed),
                ..o.clone()
            };
            object(c.namespace.name(), &o)
        })
        .collect();
    let ns = &c.namespace;
    namespace(
        ns,
        Embedded {
            associations: (!c.associations.is_empty()).then_some(&c.associations[..]),
            properties: (!properties.is_empty()).then_some(&properties[..]),
            objects: (!objects.is_empty()).then_some(Value::Array(objects)),
            tags: (!c.tags.is_empty()).then(|| c.tags.iter().map(|t| t.name.as_str()).collect()),
        },
    )
}

/// An object's own fields, as a namespace's create echoes them (no timestamps, no links).
pub fn object_fields(o: &Object) -> Value {
    Value::Object(object_map(o))
}

fn object_map(o: &Object) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(o.name));
    put(&mut m, "required", o.required.clone().map(|r| json!(r)));
    put(&mut m, "description", text(&o.description));
    put(&mut m, "properties", o.properties.as_deref().map(properties_to_json));
    m
}

/// An object of namespace `ns`.
pub fn object(ns: &str, o: &Object) -> Value {
    let mut m = object_map(o);
    put(&mut m, "created_at", time(o.created_at));
    put(&mut m, "updated_at", time(o.updated_at));
    m.insert("self".into(), json!(format!("{}/objects/{}", namespace_path(ns), o.name)));
    m.insert("schema".into(), json!("/v2/schemas/metadefs/object"));
    Value::Object(m)
}

/// The objects of namespace `ns` (Glance's `schema` link there has no leading slash).
pub fn objects(ns: &str, all: &[Object]) -> Value {
    json!({"objects": all.iter().map(|o| object(ns, o)).collect::<Vec<_>>(), "schema": "v2/schemas/metadefs/objects"})
}

/// A property on its own: named as it is stored.
pub fn property(name: &str, def: &PropertyDef) -> Value {
    PropertyDef { name: Some(name.to_owned()), ..def.clone() }.to_json()
}

pub fn properties(all: &[(String, PropertyDef)]) -> Value {
    json!({ "properties": properties_to_json(all) })
}

fn tag_name(name: &str) -> Value {
    json!({ "name": name })
}

pub fn tag(t: &Tag) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(t.name));
    put(&mut m, "created_at", time(Some(t.created_at)));
    put(&mut m, "updated_at", time(t.updated_at));
    Value::Object(m)
}

pub fn tags<'a>(names: impl IntoIterator<Item = &'a str>) -> Value {
    json!({ "tags": names.into_iter().map(tag_name).collect::<Vec<_>>() })
}

pub fn association(a: &Association) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(a.name));
    put(&mut m, "prefix", text(&a.prefix));
    put(&mut m, "properties_target", text(&a.properties_target));
    put(&mut m, "created_at", time(a.created_at));
    put(&mut m, "updated_at", time(a.updated_at));
    Value::Object(m)
}

pub fn associations(all: &[Association]) -> Value {
    json!({ "resource_type_associations": all.iter().map(association).collect::<Vec<_>>() })
}

pub fn resource_types(all: &[ResourceType]) -> Value {
    let types: Vec<Value> = all
        .iter()
        .map(|t| {
            let mut m = Map::new();
            m.insert("name".into(), json!(t.name));
            put(&mut m, "created_at", time(Some(t.created_at)));
            put(&mut m, "updated_at", time(t.updated_at));
            Value::Object(m)
        })
        .collect();
    json!({ "resource_types": types })
}
