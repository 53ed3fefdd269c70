//! Glance v2 JSON shapes (glance-v2 §4.1).

use serde_json::{Map, Value, json};

use crate::api::compute::views::isotime;
use crate::domain::{Image, ImageStatus};

/// Properties Glance keeps but never shows.
const HIDDEN: &[&str] = &["os_glance_stage_host", "os_glance_hash_op_host"];

/// The flat image object: extra properties first (a stored null shows as `""`, or `null`
/// where the schema allows it), then every
/// base attribute (null when unset), tags and the relative links; with several image stores,
/// `stores`: the store holding the data, once there is data.
pub fn image(image: &Image, multi_store: bool) -> Value {
    let mut v = Map::new();
    for (k, val) in image.properties.iter() {
        if HIDDEN.contains(&k) {
            continue;
        }
        // A stored null shows as null where the schema allows it (`kernel_id`,
        // `ramdisk_id`), and as "" for any other property.
        let shown = match val {
            Some(val) => Value::from(val),
            None if super::schemas::nullable(k) => Value::Null,
            None => Value::from(""),
        };
        v.insert(k.to_owned(), shown);
    }
    let id = &image.id;
    let base = json!({
        "name": image.name,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "visibility": image.visibility.as_str(),
        "size": image.size,
        "virtual_size": image.virtual_size,
        "status": image.status.as_str(),
        "checksum": image.checksum,
        "protected": image.protected,
        "min_ram": image.min_ram,
        "min_disk": image.min_disk,
        "owner": image.owner,
        "os_hidden": image.os_hidden,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "id": id,
        "created_at": isotime(image.created_at),
        "updated_at": isotime(image.updated_at),
        "tags": image.tags,
        "self": format!("/v2/images/{id}"),
        "file": format!("/v2/images/{id}/file"),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(base) = base {
        for (k, val) in base {
            v.insert(k, val);
        }
    }
    let has_data = matches!(image.status, ImageStatus::Active | ImageStatus::Deactivated | ImageStatus::PendingDelete);
    if multi_store && has_data && image.location.is_some() {
        let stores: Vec<&str> = image.locations().map(|(store, _)| store).collect();
        v.insert("stores".into(), Value::from(stores.join(",")));
    }
    Value::Object(v)
}
