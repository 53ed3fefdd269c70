//! Changing an image's attributes the way Glance's domain does (glance-v2 §5, §6): typed
//! attribute values, the rules that depend on the image and the caller, JSON-patch semantics
//! and the property and tag quotas.

use super::policy::Principal;
use super::{Image, ImageStatus, Rejection, Visibility};

/// A writable attribute with a value already checked against the image schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Name(Option<String>),
    Visibility(Visibility),
    Protected(bool),
    OsHidden(bool),
    MinDisk(i64),
    MinRam(i64),
    DiskFormat(Option<String>),
    ContainerFormat(Option<String>),
    Owner(Option<String>),
    Tags(Vec<String>),
    /// A non-base property (custom or extra); `None` is a stored null.
    Extra(String, Option<String>),
}

/// The base attributes a patch may name (everything else is an extra property).
pub const WRITABLE_BASE: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "min_disk",
    "min_ram",
    "disk_format",
    "container_format",
    "owner",
    "tags",
];

/// How a patch operation treats an existing or absent target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// `add` in the v2.1 patch media type: create or overwrite.
    Upsert,
    /// `add` in the v2.0 media type: the target must not exist.
    AddNew,
    /// `replace`: the target must exist (base attributes always do).
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatchOp {
    Set(SetMode, Attr),
    /// `remove` of a property by name.
    Remove(String),
}

/// Glance's `image_property_quota` and `image_tag_quota` (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageQuotas {
    pub properties: Option<usize>,
    pub tags: Option<usize>,
}

impl Default for ImageQuotas {
    fn default() -> Self {
        ImageQuotas { properties: Some(128), tags: Some(128) }
    }
}

/// Properties that count against `image_property_quota` (`os_glance*` do not).
fn counted_properties(image: &Image) -> usize {
    image.properties.iter().filter(|(k, _)| !k.starts_with("os_glance")).count()
}

impl ImageQuotas {
    pub fn check_properties(&self, image: &Image) -> Result<(), Rejection> {
        let n = counted_properties(image);
        match self.properties {
            Some(max) if n > max => Err(Rejection::over_limit(format!(
                "The limit has been exceeded on the number of allowed image properties. Attempted: {n}, Maximum: {max}"
            ))),
            _ => Ok(()),
        }
    }

    pub fn check_tags(&self, image: &Image) -> Result<(), Rejection> {
        let n = image.tags.len();
        match self.tags {
            Some(max) if n > max => Err(Rejection::over_limit(format!(
                "The limit has been exceeded on the number of allowed image tags. Attempted: {n}, Maximum: {max}"
            ))),
            _ => Ok(()),
        }
    }
}

fn has_target(image: &Image, attr: &Attr) -> bool {
    match attr {
        Attr::Extra(k, _) => image.properties.get(k).is_some(),
        _ => true,
    }
}

fn attr_name(attr: &Attr) -> &str {
    match attr {
        Attr::Name(_) => "name",
        Attr::Visibility(_) => "visibility",
        Attr::Protected(_) => "protected",
        Attr::OsHidden(_) => "os_hidden",
        Attr::MinDisk(_) => "min_disk",
        Attr::MinRam(_) => "min_ram",
        Attr::DiskFormat(_) => "disk_format",
        Attr::ContainerFormat(_) => "container_format",
        Attr::Owner(_) => "owner",
        Attr::Tags(_) => "tags",
        Attr::Extra(k, _) => k,
    }
}

fn non_negative(param: &str, v: i64) -> Result<i64, Rejection> {
    if v < 0 {
        return Err(Rejection::invalid(format!(
            "Invalid value '{v}' for parameter '{param}': Cannot be a negative value."
        )));
    }
    Ok(v)
}

/// Sets one attribute, applying the rules that depend on the image and the caller.
pub fn set(image: &mut Image, who: &Principal, attr: Attr) -> Result<(), Rejection> {
    match attr {
        Attr::Name(v) => image.name = v,
        Attr::Visibility(v) => {
            if v == Visibility::Public && !who.is_admin && image.visibility != Visibility::Public {
                return Err(Rejection::forbidden("You are not authorized to complete publicize_image action."));
            }
            image.visibility = v;
        }
        Attr::Protected(v) => image.protected = v,
        Attr::OsHidden(v) => image.os_hidden = v,
        Attr::MinDisk(v) => image.min_disk = non_negative("min_disk", v)?,
        Attr::MinRam(v) => image.min_ram = non_negative("min_ram", v)?,
        Attr::DiskFormat(_) | Attr::ContainerFormat(_)
            if !matches!(image.status, ImageStatus::Queued | ImageStatus::Importing) =>
        {
            return Err(Rejection::forbidden(format!(
                "Attribute {} can be only replaced for a queued image.",
                attr_name(&attr)
            )));
        }
        Attr::DiskFormat(v) => image.disk_format = v,
        Attr::ContainerFormat(v) => image.container_format = v,
        Attr::Owner(v) => {
            if !who.is_admin && v != image.owner {
                return Err(Rejection::forbidden("Owner can't be updated by non admin."));
            }
            image.owner = v;
        }
        Attr::Tags(tags) => {
            let mut unique: Vec<String> = Vec::with_capacity(tags.len());
            for t in tags {
                if !unique.contains(&t) {
                    unique.push(t);
                }
            }
            image.tags = unique;
        }
        Attr::Extra(k, v) => image.properties.set(k, v),
    }
    Ok(())
}

/// Applies JSON-patch operations in order; the first failure aborts (the caller discards the
/// image, so nothing is applied). Quotas are checked on the result, the property quota only
/// when keys were added.
pub fn apply_patch(
    image: &mut Image,
    who: &Principal,
    ops: Vec<PatchOp>,
    quotas: ImageQuotas,
) -> Result<(), Rejection> {
    let before = counted_properties(image);
    let tags_before = image.tags.len();
    for op in ops {
        match op {
            PatchOp::Set(mode, attr) => {
                let exists = has_target(image, &attr);
                match mode {
                    SetMode::AddNew if exists => {
                        return Err(Rejection::conflict(format!("Property {} already present.", attr_name(&attr))));
                    }
                    SetMode::Replace if !exists => {
                        return Err(Rejection::conflict(format!("Property {} does not exist.", attr_name(&attr))));
                    }
                    _ => {}
                }
                set(image, who, attr)?;
            }
            PatchOp::Remove(key) => {
                if WRITABLE_BASE.contains(&key.as_str()) {
                    return Err(Rejection::forbidden(format!("Property {key} may not be removed.")));
                }
                if !image.properties.remove(&key) {
                    return Err(Rejection::conflict(format!("Property {key} does not exist.")));
                }
            }
        }
    }
    if counted_properties(image) > before {
        quotas.check_properties(image)?;
    }
    if image.tags.len() > tags_before {
        quotas.check_tags(image)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::now;

    fn member() -> Principal {
        Principal::new("u".into(), "p".into(), vec!["member".into()])
    }

    fn image() -> Image {
        let mut i = Image::new("i".into(), now());
        i.owner = Some("p".into());
        i.properties.set("k".into(), Some("v".into()));
        i
    }

    #[test]
    fn add_upserts_replace_needs_target_remove_base_is_forbidden() {
        let mut i = image();
        let q = ImageQuotas::default();
        apply_patch(
            &mut i,
            &member(),
            vec![PatchOp::Set(SetMode::Upsert, Attr::Extra("k".into(), Some("w".into())))],
            q,
        )
        .unwrap();
        assert_eq!(i.properties.get_str("k"), Some("w"));
        let e = apply_patch(&mut i, &member(), vec![PatchOp::Set(SetMode::Replace, Attr::Extra("x".into(), None))], q);
        assert_eq!(e.unwrap_err().message, "Property x does not exist.");
        let e = apply_patch(&mut i, &member(), vec![PatchOp::Set(SetMode::AddNew, Attr::Name(None))], q);
        assert_eq!(e.unwrap_err().message, "Property name already present.");
        let e = apply_patch(&mut i, &member(), vec![PatchOp::Remove("name".into())], q);
        assert_eq!(e.unwrap_err().message, "Property name may not be removed.");
    }

    #[test]
    fn quotas_apply_to_added_keys_only() {
        let mut i = image();
        let q = ImageQuotas { properties: Some(1), tags: Some(1) };
        let e = apply_patch(&mut i, &member(), vec![PatchOp::Set(SetMode::Upsert, Attr::Extra("b".into(), None))], q);
        assert_eq!(e.unwrap_err().kind, crate::domain::RejectionKind::OverLimit);
        let mut i = image();
        let tags = Attr::Tags(vec!["a".into(), "a".into()]);
        apply_patch(&mut i, &member(), vec![PatchOp::Set(SetMode::Replace, tags)], q).unwrap();
        assert_eq!(i.tags, vec!["a".to_string()]);
    }

    #[test]
    fn formats_only_while_queued_and_public_needs_admin() {
        let mut i = image();
        i.status = ImageStatus::Active;
        assert!(set(&mut i, &member(), Attr::DiskFormat(Some("raw".into()))).is_err());
        assert!(set(&mut i, &member(), Attr::Visibility(Visibility::Public)).is_err());
        assert!(set(&mut i, &member(), Attr::MinRam(-1)).is_err());
    }
}
