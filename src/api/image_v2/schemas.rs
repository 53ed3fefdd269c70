//! The Glance image schema (glance-v2 §4, §17): the document `/v2/schemas/image` serves, and
//! the validation of request values against that same document, so the two cannot disagree.

use std::sync::OnceLock;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::fault::Fault;
use crate::api::pyrepr::repr;
use crate::domain::update::Attr;
use crate::domain::{BadText, Visibility, bad_text};

const UUID_PATTERN: &str = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

pub const DISK_FORMATS: &[&str] = &["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"];
pub const CONTAINER_FORMATS: &[&str] = &["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"];

fn with_null(values: &[&str]) -> Value {
    let mut v = vec![Value::Null];
    v.extend(values.iter().map(|s| Value::from(*s)));
    Value::Array(v)
}

/// The image schema: base properties, then the deployment's custom properties
/// (`"is_base": false`), and strings for everything else.
pub fn image_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let statuses: Vec<&str> = crate::domain::ImageStatus::ALL.iter().map(|s| s.as_str()).collect();
        // Apart: one `json!` of the whole schema is deeper than the macro's recursion limit.
        let validation_data = json!({
            "description": "Values to be used to populate the corresponding image properties. If the image status is not 'queued', values must exactly match those already contained in the image properties.",
            "type": "object", "writeOnly": true, "additionalProperties": false,
            "properties": {"checksum": {"type": "string", "minLength": 32, "maxLength": 32},
                           "os_hash_algo": {"type": "string", "maxLength": 64},
                           "os_hash_value": {"type": "string", "maxLength": 128}},
            "required": ["os_hash_algo", "os_hash_value"]});
        json!({
            "name": "image",
            "properties": {
                "id": {"type": "string", "description": "An identifier for the image", "pattern": UUID_PATTERN},
                "name": {"type": ["null", "string"], "description": "Descriptive name for the image", "maxLength": 255},
                "status": {"type": "string", "readOnly": true, "description": "Status of the image", "enum": statuses},
                "visibility": {"type": "string", "description": "Scope of image accessibility",
                               "enum": ["community", "public", "private", "shared"]},
                "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
                "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
                "checksum": {"type": ["null", "string"], "readOnly": true, "maxLength": 32,
                             "description": "md5 hash of image contents."},
                "os_hash_algo": {"type": ["null", "string"], "readOnly": true, "maxLength": 64,
                                 "description": "Algorithm to calculate the os_hash_value"},
                "os_hash_value": {"type": ["null", "string"], "readOnly": true, "maxLength": 128,
                                  "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo"},
                "owner": {"type": ["null", "string"], "description": "Owner of the image", "maxLength": 255},
                "size": {"type": ["null", "integer"], "readOnly": true, "description": "Size of image file in bytes"},
                "virtual_size": {"type": ["null", "integer"], "readOnly": true, "description": "Virtual size of image in bytes"},
                "container_format": {"type": ["null", "string"], "description": "Format of the container",
                                     "enum": with_null(CONTAINER_FORMATS)},
                "disk_format": {"type": ["null", "string"], "description": "Format of the disk",
                                "enum": with_null(DISK_FORMATS)},
                "created_at": {"type": "string", "readOnly": true, "description": "Date and time of image registration"},
                "updated_at": {"type": "string", "readOnly": true, "description": "Date and time of the last image modification"},
                "tags": {"type": "array", "description": "List of strings related to the image",
                         "items": {"type": "string", "maxLength": 255}},
                "direct_url": {"type": "string", "readOnly": true, "description": "URL to access the image file kept in external store"},
                "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
                "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
                "self": {"type": "string", "readOnly": true, "description": "An image self url"},
                "file": {"type": "string", "readOnly": true, "description": "An image file url"},
                "stores": {"type": "string", "readOnly": true, "description": "Store in which image data resides."},
                "schema": {"type": "string", "readOnly": true, "description": "An image schema url"},
                "locations": {"type": "array",
                              "items": {"type": "object",
                                        "properties": {"url": {"type": "string", "maxLength": 255},
                                                       "metadata": {"type": "object"},
                                                       "validation_data": validation_data},
                                        "required": ["url", "metadata"]},
                              "description": "A set of URLs to access the image file kept in external store"},
                "kernel_id": {"type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": false,
                              "description": "ID of image stored in Glance that should be used as the kernel when booting an AMI-style image."},
                "ramdisk_id": {"type": ["null", "string"], "pattern": UUID_PATTERN, "is_base": false,
                               "description": "ID of image stored in Glance that should be used as the ramdisk when booting an AMI-style image."},
                "instance_uuid": {"type": "string", "is_base": false,
                                  "description": "Metadata which can be used to record which instance this image is associated with. (Informational only, does not create an instance snapshot.)"},
                "architecture": {"type": "string", "is_base": false,
                                 "description": "Operating system architecture as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html"},
                "os_distro": {"type": "string", "is_base": false,
                              "description": "Common name of operating system distribution as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html"},
                "os_version": {"type": "string", "is_base": false,
                               "description": "Operating system version as specified by the distributor."},
                "description": {"type": "string", "is_base": false, "description": "A human-readable string describing this image."},
                "cinder_encryption_key_id": {"type": "string", "is_base": false,
                                             "description": "Identifier in the OpenStack Key Management Service for the encryption key for the Block Storage Service to use when mounting a volume created from this image"},
                "cinder_encryption_key_deletion_policy": {"type": "string", "enum": ["on_image_deletion", "do_not_delete"],
                                                          "is_base": false,
                                                          "description": "States the condition under which the Image Service will delete the object associated with the 'cinder_encryption_key_id' image property.  If this property is missing, the Image Service will take no action"},
            },
            "additionalProperties": {"type": "string"},
            "links": [
                {"rel": "self", "href": "{self}"},
                {"rel": "enclosure", "href": "{file}"},
                {"rel": "describedby", "href": "{schema}"},
            ],
        })
    })
}

/// `/v2/schemas/images`.
pub fn images_schema() -> Value {
    json!({
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image_schema()},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    })
}

fn invalid(message: String) -> Fault {
    Fault::explained(StatusCode::BAD_REQUEST, format!("Provided object does not match schema 'image': {message}"))
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// Checks `value` against one property definition: type, enum, maxLength, pattern, items.
fn check(def: &Value, value: &Value) -> Result<(), Fault> {
    if let Some(t) = def.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| type_ok(t, value)) {
            let names = types.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
            return Err(invalid(format!("{} is not of type {names}", repr(value))));
        }
    }
    if let Some(Value::Array(options)) = def.get("enum")
        && !options.contains(value)
    {
        return Err(invalid(format!("{} is not one of {}", repr(value), repr(&Value::Array(options.clone())))));
    }
    if let (Some(max), Value::String(s)) = (def.get("maxLength").and_then(Value::as_u64), value)
        && s.chars().count() as u64 > max
    {
        return Err(invalid(format!("{} is too long", repr(value))));
    }
    if let (Some(Value::String(pattern)), Value::String(s)) = (def.get("pattern"), value)
        && pattern == UUID_PATTERN
        && !is_uuid(s)
    {
        return Err(invalid(format!("{} does not match {}", repr(value), repr(&Value::from(pattern.as_str())))));
    }
    if let (Some(items), Value::Array(values)) = (def.get("items"), value) {
        for v in values {
            check(items, v)?;
        }
    }
    Ok(())
}

/// Glance's id pattern: 8-4-4-4-12 hex digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Validates `value` for property `key` (a schema property, or an extra one, which must be a
/// string with a name of at most 255 characters). Names, strings and tags must be text the
/// catalogue stores (glance's `no_4byte_params`, and no NUL).
pub fn validate(key: &str, value: &Value) -> Result<(), Fault> {
    storable(key, value)?;
    match image_schema()["properties"].get(key) {
        Some(def) => check(def, value),
        None => {
            if key.chars().count() > 255 {
                return Err(Fault::explained(
                    StatusCode::BAD_REQUEST,
                    "Custom property should not be greater than 255 characters.",
                ));
            }
            check(&image_schema()["additionalProperties"], value)
        }
    }
}

/// Glance's messages for text its database layer refuses (and the same shape for NUL).
fn storable(key: &str, value: &Value) -> Result<(), Fault> {
    let refuse = |message: String| Err(Fault::explained(StatusCode::BAD_REQUEST, message));
    let what = |bad: BadText| if bad == BadText::Nul { "NUL characters" } else { "4 byte unicode" };
    if let Some(bad) = bad_text(key, true) {
        return refuse(format!("Property names can't contain {}.", what(bad)));
    }
    match value {
        Value::String(s) => match bad_text(s, true) {
            Some(BadText::FourByte) => refuse(format!("{} can't contain 4 byte unicode characters.", py_title(key))),
            Some(BadText::Nul) => refuse(format!("{} can't contain NUL characters.", py_title(key))),
            None => Ok(()),
        },
        Value::Array(items) if key == "tags" => {
            match items.iter().filter_map(Value::as_str).find_map(|t| bad_text(t, true)) {
                Some(bad) => refuse(format!("Param values can't contain {}.", what(bad))),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Python's `str.title()`: each run of letters capitalised.
pub(crate) fn py_title(s: &str) -> String {
    let mut after_letter = false;
    s.chars()
        .flat_map(|c| {
            let out: Vec<char> = if after_letter { c.to_lowercase().collect() } else { c.to_uppercase().collect() };
            after_letter = c.is_alphabetic();
            out
        })
        .collect()
}

/// Whether the schema lets property `key` be null (its type includes "null").
pub fn nullable(key: &str) -> bool {
    match image_schema()["properties"].get(key).and_then(|d| d.get("type")) {
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        Some(t) => t == "null",
        None => false,
    }
}

/// Whether the schema marks `key` as a base property (as opposed to custom or extra).
pub fn is_base(key: &str) -> bool {
    image_schema()["properties"].get(key).is_some_and(|d| d.get("is_base") != Some(&Value::Bool(false)))
}

/// Converts a validated value into a typed attribute.
pub fn to_attr(key: &str, value: &Value) -> Attr {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match key {
        "name" => Attr::Name(text(value)),
        "visibility" => {
            Attr::Visibility(Visibility::parse(value.as_str().unwrap_or("")).unwrap_or(Visibility::Private))
        }
        "protected" => Attr::Protected(value.as_bool().unwrap_or(false)),
        "os_hidden" => Attr::OsHidden(value.as_bool().unwrap_or(false)),
        "min_disk" => Attr::MinDisk(value.as_i64().unwrap_or(i64::MAX)),
        "min_ram" => Attr::MinRam(value.as_i64().unwrap_or(i64::MAX)),
        "disk_format" => Attr::DiskFormat(text(value)),
        "container_format" => Attr::ContainerFormat(text(value)),
        "owner" => Attr::Owner(text(value)),
        "tags" => Attr::Tags(value.as_array().map(|a| a.iter().filter_map(text).collect()).unwrap_or_default()),
        _ => Attr::Extra(key.to_owned(), text(value)),
    }
}

/// Why a property name cannot be written, on create or on patch (glance-v2 §4.2).
pub fn forbidden_key(key: &str, on_create: bool) -> Option<Fault> {
    let read_only: &[&str] = if on_create {
        &[
            "direct_url",
            "self",
            "file",
            "schema",
            "stores",
            "created_at",
            "updated_at",
            "status",
            "checksum",
            "size",
            "virtual_size",
        ]
    } else {
        &[
            "created_at",
            "updated_at",
            "status",
            "checksum",
            "size",
            "virtual_size",
            "direct_url",
            "self",
            "file",
            "schema",
            "id",
            "os_hash_algo",
            "os_hash_value",
            "stores",
        ]
    };
    let reserved =
        |k: &str| matches!(k, "location" | "locations" | "deleted" | "deleted_at") || k.starts_with("os_glance");
    if read_only.contains(&key) {
        Some(Fault::explained(StatusCode::FORBIDDEN, format!("Attribute '{key}' is read-only.")))
    } else if reserved(key) {
        Some(Fault::explained(StatusCode::FORBIDDEN, format!("Attribute '{key}' is reserved.")))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(f: Fault) -> String {
        match f {
            Fault::Bare { body, .. } => body.raw().trim_end_matches("<br /><br />\n\n\n").to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validates_against_the_served_schema() {
        assert!(validate("disk_format", &json!("qcow2")).is_ok());
        assert!(validate("disk_format", &Value::Null).is_ok());
        assert!(
            message(validate("disk_format", &json!("wrong")).unwrap_err())
                .contains("'wrong' is not one of [None, 'ami'")
        );
        assert_eq!(
            message(validate("foo", &json!(1)).unwrap_err()),
            "Provided object does not match schema 'image': 1 is not of type 'string'"
        );
        assert!(validate("kernel_id", &json!("nope")).is_err());
        assert!(validate("tags", &json!(["a", 1])).is_err());
        assert!(validate("min_ram", &json!(true)).is_err());
        assert!(is_base("name") && !is_base("kernel_id") && !is_base("anything"));
    }

    /// Glance's `no_4byte_params` messages, and NUL refused in names, values and tags.
    #[test]
    fn text_the_catalogue_cannot_store() {
        assert_eq!(
            message(validate("os_distro", &json!("a\u{1F600}")).unwrap_err()),
            "Os_Distro can't contain 4 byte unicode characters."
        );
        assert_eq!(
            message(validate("a\u{0}b", &json!("x")).unwrap_err()),
            "Property names can't contain NUL characters."
        );
        assert_eq!(message(validate("hw_x", &json!("a\u{0}")).unwrap_err()), "Hw_X can't contain NUL characters.");
        assert_eq!(
            message(validate("tags", &json!(["ok", "\u{0}"])).unwrap_err()),
            "Param values can't contain NUL characters."
        );
        assert!(validate("os_distro", &json!("é")).is_ok());
        assert_eq!(py_title("hw_disk_bus2x"), "Hw_Disk_Bus2X");
    }
}
