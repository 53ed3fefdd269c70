//! The Compute API's JSON shapes (nova `views/images.py`): images, metadata, links.

use serde_json::Value;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::domain::{Image, ImageStatus, Properties};

/// What a request's links are made from, borrowed from it: requests with equal sources get
/// equal links (the image endpoint follows from the host and the process's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSource<'a> {
    /// The host the client addressed.
    pub host: &'a str,
    /// `/v2` or `/v2.1`.
    pub prefix: &'static str,
    /// The token's project, when it occurs in the request URL (Nova's `_get_project_id`).
    pub project: Option<&'a str>,
}

/// A [`LinkSource`] kept with what was rendered from it (telling whether a later request's
/// links are the same takes no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkKey {
    host: String,
    prefix: &'static str,
    project: Option<String>,
}

impl LinkKey {
    pub fn of(source: LinkSource<'_>) -> LinkKey {
        LinkKey { host: source.host.to_owned(), prefix: source.prefix, project: source.project.map(str::to_owned) }
    }

    /// Whether `source`'s links are the ones this key's source made.
    pub fn is(&self, source: LinkSource<'_>) -> bool {
        self.host == source.host && self.prefix == source.prefix && self.project.as_deref() == source.project
    }
}

/// Where links point: built from a request's [`LinkSource`].
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
    /// The links of `source`; the image endpoint is the settings' `image_url` when set, else
    /// the host's name on the settings' `image_port`.
    pub fn new(source: LinkSource<'_>, settings: &crate::api::Settings) -> LinkBase {
        let host = source.host;
        let image_endpoint = settings.image_url.clone().unwrap_or_else(|| {
            let hostname = match host.strip_prefix('[') {
                Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or("")),
                None => host.split(':').next().unwrap_or("").to_owned(),
            };
            format!("http://{hostname}:{}", settings.image_port)
        });
        LinkBase {
            root: format!("http://{host}"),
            version_prefix: source.prefix,
            project: source.project.map(|p| format!("/{p}")).unwrap_or_default(),
            image_endpoint,
        }
    }

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
}

/// One link object: `rel`, the optional `type`, `href` (Nova's key order).
#[derive(serde::Serialize)]
struct Link<'a> {
    rel: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    href: String,
}

/// An image's `self`, `bookmark` and `alternate` links.
struct ImageLinks<'a>(&'a LinkBase, &'a str);

impl serde::Serialize for ImageLinks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ImageLinks(links, id) = *self;
        [
            Link { rel: "self", media_type: None, href: links.href("images", id) },
            Link { rel: "bookmark", media_type: None, href: links.bookmark("images", id) },
            Link {
                rel: "alternate",
                media_type: Some("application/vnd.openstack.image"),
                href: format!("{}/images/{id}", links.image_endpoint),
            },
        ]
        .serialize(s)
    }
}

/// Nova's `utils.isotime`: seconds precision, `Z`.
pub fn isotime(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.checked_to_offset(time::UtcOffset::UTC).unwrap_or(t).format(&fmt).unwrap_or_default()
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

/// `{"metadata": {...}}`, serialized straight from the properties (the hot read path).
#[derive(serde::Serialize)]
pub struct MetadataEnvelope<'a> {
    pub metadata: MetadataView<'a>,
}

/// The metadata object: every property, each a [`MetadataValue`]. Serialized without
/// building a map first.
pub struct MetadataView<'a>(pub &'a Properties);

impl serde::Serialize for MetadataView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, &MetadataValue(k, v))?;
        }
        map.end()
    }
}

/// One metadata value: `block_device_mapping` and `mappings` are JSON-decoded as Nova's glance
/// layer does (left as text when they are not JSON); a null property is `null`.
pub struct MetadataValue<'a>(pub &'a str, pub Option<&'a str>);

impl serde::Serialize for MetadataValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MetadataValue("block_device_mapping" | "mappings", Some(text)) => {
                match serde_json::from_str::<Value>(text) {
                    Ok(decoded) => decoded.serialize(s),
                    Err(_) => s.serialize_str(text),
                }
            }
            MetadataValue(_, value) => value.serialize(s),
        }
    }
}

/// `{"meta": {key: value}}`: one metadata item.
#[derive(serde::Serialize)]
pub struct MetaEnvelope<'a> {
    pub meta: MetaItem<'a>,
}

pub struct MetaItem<'a>(pub &'a str, pub Option<&'a str>);

impl serde::Serialize for MetaItem<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &MetadataValue(self.0, self.1))?;
        map.end()
    }
}

/// `GET /images` items: id, name, links.
pub struct ImageBasic<'a>(pub &'a LinkBase, pub &'a Image);

impl serde::Serialize for ImageBasic<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let ImageBasic(links, image) = *self;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("id", &image.id)?;
        map.serialize_entry("name", &image.name)?;
        map.serialize_entry("links", &ImageLinks(links, &image.id))?;
        map.end()
    }
}

/// `GET /images/detail` items and `GET /images/{id}`, serialized straight from the image in
/// Nova's key order; `server` and `OS-DCF:diskConfig` only when their properties exist.
pub struct ImageDetail<'a>(pub &'a LinkBase, pub &'a Image);

impl serde::Serialize for ImageDetail<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let ImageDetail(links, image) = *self;
        let (status, progress) = status_and_progress(image.status);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &image.id)?;
        map.serialize_entry("name", &image.name)?;
        map.serialize_entry("minRam", &image.min_ram)?;
        map.serialize_entry("minDisk", &image.min_disk)?;
        map.serialize_entry("metadata", &MetadataView(&image.properties))?;
        map.serialize_entry("created", &isotime(image.created_at))?;
        map.serialize_entry("updated", &isotime(image.updated_at))?;
        map.serialize_entry("status", status)?;
        map.serialize_entry("progress", &progress)?;
        map.serialize_entry("OS-EXT-IMG-SIZE:size", &image.size.unwrap_or(0))?;
        map.serialize_entry("links", &ImageLinks(links, &image.id))?;
        if let Some(uuid) = image.properties.get_str("instance_uuid") {
            let server_links = [
                Link { rel: "self", media_type: None, href: links.href("servers", uuid) },
                Link { rel: "bookmark", media_type: None, href: links.bookmark("servers", uuid) },
            ];
            map.serialize_entry("server", &ServerRef { id: uuid, links: server_links })?;
        }
        if let Some(auto) = image.properties.get_str("auto_disk_config") {
            let disk_config = if bool_from_string(auto) { "AUTO" } else { "MANUAL" };
            map.serialize_entry("OS-DCF:diskConfig", disk_config)?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct ServerRef<'a> {
    id: &'a str,
    links: [Link<'a>; 2],
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
