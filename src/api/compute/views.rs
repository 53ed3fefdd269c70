//! The Compute API's JSON shapes (nova `views/images.py`): images, metadata, links.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::domain::{Image, ImageStatus, Properties};

/// Where links point: built once per request from its URL.
#[derive(Debug, Clone)]
pub struct LinkBase {
    /// `http://host:8774`: the root, for bookmark links.
    pub root: String,
    /// `/v2` or `/v2.1`.
    pub version_prefix: &'static str,
    /// `/<project_id>` when the token's project occurs in the request URL, else empty.
    pub project: String,
    /// The image service endpoint without a version, for alternate links.
    pub image_endpoint: String,
}

impl LinkBase {
    /// `<root><prefix><project>/<collection>/<id>`: the `self` link.
    pub fn href(&self, collection: &str, id: &str) -> String {
        format!("{}{}{}/{collection}/{id}", self.root, self.version_prefix, self.project)
    }

    /// The same without the version segment: the `bookmark` link.
    pub fn bookmark(&self, collection: &str, id: &str) -> String {
        format!("{}{}/{collection}/{id}", self.root, self.project)
    }

    /// A collection URL with a query string (pagination `next` links).
    pub fn collection(&self, collection: &str, query: &str) -> String {
        format!("{}{}{}/{collection}?{query}", self.root, self.version_prefix, self.project)
    }

    fn image_links(&self, id: &str) -> Value {
        json!([
            {"rel": "self", "href": self.href("images", id)},
            {"rel": "bookmark", "href": self.bookmark("images", id)},
            {"rel": "alternate", "type": "application/vnd.openstack.image",
             "href": format!("{}/images/{id}", self.image_endpoint)},
        ])
    }
}

/// Nova's `utils.isotime`: seconds precision, `Z`.
pub fn isotime(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_default()
}

/// Glance status → (Compute status, progress) (nova-images §4.1).
pub fn status_and_progress(s: ImageStatus) -> (&'static str, u8) {
    match s {
        ImageStatus::Active => ("ACTIVE", 100),
        ImageStatus::Queued => ("SAVING", 25),
        ImageStatus::Saving => ("SAVING", 50),
        ImageStatus::Deleted | ImageStatus::PendingDelete => ("DELETED", 0),
        ImageStatus::Killed => ("ERROR", 0),
        ImageStatus::Deactivated | ImageStatus::Uploading | ImageStatus::Importing => ("UNKNOWN", 0),
    }
}

/// The metadata object as a JSON map (for views that embed it): [`MetadataView`] rendered.
pub fn metadata(props: &Properties) -> Map<String, Value> {
    match serde_json::to_value(MetadataView(props)) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `{"metadata": {...}}`, serialized straight from the properties (the hot read path).
#[derive(serde::Serialize)]
pub struct MetadataEnvelope<'a> {
    pub metadata: MetadataView<'a>,
}

/// The metadata object: every property; `block_device_mapping` and `mappings` are
/// JSON-decoded as Nova's glance layer does. Serialized without building a map first.
pub struct MetadataView<'a>(pub &'a Properties);

impl serde::Serialize for MetadataView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            match v {
                Some(text) if k == "block_device_mapping" || k == "mappings" => {
                    match serde_json::from_str::<Value>(text) {
                        Ok(decoded) => map.serialize_entry(k, &decoded)?,
                        Err(_) => map.serialize_entry(k, text)?,
                    }
                }
                other => map.serialize_entry(k, &other)?,
            }
        }
        map.end()
    }
}

/// `GET /images` items.
pub fn image_basic(links: &LinkBase, image: &Image) -> Value {
    json!({"id": image.id, "name": image.name, "links": links.image_links(&image.id)})
}

/// `GET /images/detail` items and `GET /images/{id}`.
pub fn image_detail(links: &LinkBase, image: &Image) -> Value {
    let (status, progress) = status_and_progress(image.status);
    let mut v = json!({
        "id": image.id,
        "name": image.name,
        "minRam": image.min_ram,
        "minDisk": image.min_disk,
        "metadata": metadata(&image.properties),
        "created": isotime(image.created_at),
        "updated": isotime(image.updated_at),
        "status": status,
        "progress": progress,
        "OS-EXT-IMG-SIZE:size": image.size.unwrap_or(0),
        "links": links.image_links(&image.id),
    });
    let obj = v.as_object_mut().expect("a JSON object");
    if let Some(uuid) = image.properties.get_str("instance_uuid") {
        obj.insert(
            "server".into(),
            json!({"id": uuid, "links": [
                {"rel": "self", "href": links.href("servers", uuid)},
                {"rel": "bookmark", "href": links.bookmark("servers", uuid)},
            ]}),
        );
    }
    if let Some(auto) = image.properties.get_str("auto_disk_config") {
        let disk_config = if bool_from_string(auto) { "AUTO" } else { "MANUAL" };
        obj.insert("OS-DCF:diskConfig".into(), disk_config.into());
    }
    v
}

/// oslo's `strutils.bool_from_string` (non-strict).
fn bool_from_string(s: &str) -> bool {
    matches!(s.trim().to_ascii_lowercase().as_str(), "1" | "t" | "true" | "on" | "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_map() {
        assert_eq!(status_and_progress(ImageStatus::Queued), ("SAVING", 25));
        assert_eq!(status_and_progress(ImageStatus::Deactivated), ("UNKNOWN", 0));
    }

    #[test]
    fn isotime_drops_fractions() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.678 UTC);
        assert_eq!(isotime(t), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn disk_config_strings() {
        assert!(bool_from_string(" True ") && bool_from_string("on"));
        assert!(!bool_from_string("False") && !bool_from_string("Disabled"));
    }
}
