//! Image records: create, show, list, JSON-patch update, delete, tags and (de)activation
//! (glance-v2 §5–§7, §9, §13, §16).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use super::{Ctx, Reply, modify, not_authorized, read_json, rejection, schemas, store_fault, views};
use crate::api::compute::images::parse_time;
use crate::api::fault::{Fault, Page};
use crate::api::{names, quote_plus, seconds_filter};
use crate::domain::policy::Rule;
use crate::domain::update::{self, PatchOp, SetMode};
use crate::domain::{Image, ImageStatus, MemberStatus, Rejection, RejectionKind, Visibility, now};
use crate::store::{Caller, Cmp, Column, Filter, HiddenFilter, ListQuery, Scalar, SortDir, VisibilityFilter};

const DEFAULT_LIMIT: u64 = 25;
const MAX_LIMIT: u64 = 1000;

fn bad_request(message: impl AsRef<str>) -> Fault {
    Fault::explained(StatusCode::BAD_REQUEST, message)
}

/// `POST /v2/images`.
pub async fn create(ctx: &Ctx, body: Body) -> Result<Reply, Fault> {
    let body = read_json(body, ctx.state.settings.max_request_body_size).await?;
    let Value::Object(fields) = body else {
        return Err(bad_request(format!(
            "Provided object does not match schema 'image': {} is not of type 'object'",
            crate::api::pyrepr::repr(&body)
        )));
    };
    for key in fields.keys() {
        if let Some(f) = schemas::forbidden_key(key, true) {
            return Err(f);
        }
    }
    for (k, v) in &fields {
        schemas::validate(k, v)?;
    }
    let who = &ctx.principal;
    ctx.authorize(&Rule::AddImage, None, || not_authorized(&Rule::AddImage))?;
    let id = match fields.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let mut image = Image::new(id, now());
    image.owner = Some(who.project_id.clone());
    if let Some(owner) = fields.get("owner") {
        let owner = owner.as_str().map(str::to_owned);
        if owner.as_deref() != Some(who.project_id.as_str()) {
            ctx.authorize(&Rule::AddImageForOther, None, || {
                Fault::explained(
                    StatusCode::FORBIDDEN,
                    format!("You are not permitted to create images owned by '{}'.", owner.clone().unwrap_or_default()),
                )
            })?;
        }
        image.owner = owner;
    }
    for (k, v) in &fields {
        // The hash attributes are computed from the data; a client's values are ignored.
        if matches!(k.as_str(), "id" | "owner" | "os_hash_algo" | "os_hash_value") {
            continue;
        }
        update::set(&mut image, who, schemas::to_attr(k, v)).map_err(rejection)?;
    }
    let quotas = ctx.state.settings.image_quotas;
    quotas.check_properties(&image).map_err(rejection)?;
    quotas.check_tags(&image).map_err(rejection)?;
    let id = image.id.clone();
    let image = ctx.state.store.insert_image(image).await.map_err(|e| store_fault(e, &id))?;
    let location = format!("{}/v2/images/{}", ctx.root_url(), image.id);
    let mut reply = Reply::created(&views::image(&image, ctx.state.data.is_multi()), &location);
    // What clients import with (openstacksdk's `--import` requires it): Glance sends it with
    // every creation, when any method is on offer.
    let methods: Vec<&str> = ctx.state.settings.import.methods.iter().map(|m| m.as_str()).collect();
    if !methods.is_empty() {
        reply = reply.with_header(names::OPENSTACK_IMAGE_IMPORT_METHODS, &methods.join(","));
    }
    if ctx.state.data.is_multi() {
        let stores: Vec<&str> = ctx.state.data.all().map(|(name, _)| name).collect();
        reply = reply.with_header(names::OPENSTACK_IMAGE_STORE_IDS, &stores.join(","));
    }
    Ok(reply)
}

/// `GET /v2/images/{id}`.
pub async fn show(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| store_fault(e, id))?;
    // The object depends on the image alone (its links are relative): rendered once per
    // cached copy.
    let render =
        || -> bytes::Bytes { crate::api::json::to_vec(&views::image(&image, ctx.state.data.is_multi())).into() };
    let body = crate::api::rendered::of(&image).map_or_else(render, |r| r.glance_image.get_or_init(render).clone());
    Ok(Reply::rendered(body))
}

/// `DELETE /v2/images/{id}`: the record, then its data.
pub async fn delete(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    crate::service::delete_image(&ctx.state.store, &ctx.state.data, ctx.state.cache.as_deref(), &ctx.principal, id)
        .await
        .map_err(|e| store_fault(e, id))?;
    Ok(Reply::no_content())
}

const PATCH_V21: &str = "application/openstack-images-v2.1-json-patch";
const PATCH_V20: &str = "application/openstack-images-v2.0-json-patch";

/// `PATCH /v2/images/{id}`: every operation is parsed and checked before the image is loaded;
/// then they are applied in order inside one transaction, all or nothing.
pub async fn update(ctx: &Ctx, id: &str, body: Body) -> Result<Reply, Fault> {
    let media = ctx.media_type();
    let v21 = match media.as_str() {
        PATCH_V21 => true,
        PATCH_V20 => false,
        _ => {
            // WebOb's HTTPUnsupportedMediaType template, with Glance's detail.
            return Err(Fault::webob(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Page::new()
                    .markup("The request media type ")
                    .text(media)
                    .markup(" is not supported by this server.\n<br /><br />\n")
                    .text(format!("Image PATCH expects Content-Type one of: {PATCH_V20}, {PATCH_V21}")),
            )
            .with_header(
                axum::http::HeaderName::from_static("accept-patch"),
                HeaderValue::from_static(
                    "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch",
                ),
            ));
        }
    };
    let body = read_json(body, ctx.state.settings.max_request_body_size).await?;
    let Value::Array(raw_ops) = body else {
        return Err(bad_request("Request body must be a JSON array of operation objects."));
    };
    let ops = raw_ops.iter().map(|op| parse_op(op, v21)).collect::<Result<Vec<_>, _>>()?;
    let who = ctx.principal.clone();
    let quotas = ctx.state.settings.image_quotas;
    let image = modify(
        ctx,
        id,
        Rule::ModifyImage,
        "You are not authorized to complete modify_image action.".into(),
        move |image| update::apply_patch(image, &who, ops, quotas),
    )
    .await?;
    Ok(Reply::ok(&views::image(&image, ctx.state.data.is_multi())))
}

/// One JSON-patch operation in either media type.
pub(crate) fn parse_op(op: &Value, v21: bool) -> Result<PatchOp, Fault> {
    let Value::Object(obj) = op else {
        return Err(bad_request("Operations must be JSON objects."));
    };
    let (kind, path) = if v21 {
        let kind = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request("Unable to find 'op' in JSON Schema change"))?;
        if !matches!(kind, "add" | "remove" | "replace") {
            return Err(bad_request(format!(
                "Invalid operation: `{kind}`: Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace."
            )));
        }
        let path = obj
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request("Unable to find 'path' in JSON Schema change"))?;
        (kind, path)
    } else {
        let named: Vec<(&str, &Value)> =
            ["add", "remove", "replace"].into_iter().filter_map(|k| obj.get(k).map(|v| (k, v))).collect();
        match named.as_slice() {
            [(kind, Value::String(path))] => (*kind, path.as_str()),
            _ => {
                return Err(bad_request(
                    "Operation objects must contain exactly one member named \"add\", \"remove\", or \"replace\".",
                ));
            }
        }
    };
    let key = pointer_root(path)?;
    if key == "locations" {
        return Err(Fault::explained(
            StatusCode::FORBIDDEN,
            "It's not allowed to update locations if locations are invisible.",
        ));
    }
    if let Some(f) = schemas::forbidden_key(&key, false) {
        return Err(f);
    }
    if kind == "remove" {
        return Ok(PatchOp::Remove(key));
    }
    let value = obj
        .get("value")
        .ok_or_else(|| bad_request(format!("Operation \"{kind}\" requires a member named \"value\".")))?;
    schemas::validate(&key, value)?;
    let mode = match (kind, v21) {
        ("add", true) => SetMode::Upsert,
        ("add", false) => SetMode::AddNew,
        _ => SetMode::Replace,
    };
    Ok(PatchOp::Set(mode, schemas::to_attr(&key, value)))
}

/// The single unescaped segment of a JSON pointer such as `/name` (§6).
fn pointer_root(path: &str) -> Result<String, Fault> {
    let invalid = || bad_request(format!("Invalid JSON pointer for this resource: '{path}'"));
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    if rest.is_empty() || rest.contains('/') {
        return Err(invalid());
    }
    // Only `~0` and `~1` escapes exist.
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(invalid()),
            }
        } else {
            out.push(c);
        }
    }
    // Glance strips the token; a blank one names no property (Glance would create a property
    // named "", which no client can address afterwards).
    let token = out.trim();
    if token.is_empty() {
        return Err(bad_request(format!("Pointer `{path}` does not contains valid token.")));
    }
    Ok(token.to_owned())
}

/// `PUT /v2/images/{id}/tags/{tag}`.
pub async fn add_tag(ctx: &Ctx, id: &str, tag: &str) -> Result<Reply, Fault> {
    schemas::validate("tags", &json!([tag]))?;
    let (tag, quotas) = (tag.to_owned(), ctx.state.settings.image_quotas);
    modify(ctx, id, Rule::ModifyImage, format!("Not allowed to update tags for image {id}."), move |image| {
        if !image.tags.contains(&tag) {
            image.tags.push(tag);
            quotas.check_tags(image)?;
        }
        Ok(())
    })
    .await?;
    Ok(Reply::no_content())
}

/// `DELETE /v2/images/{id}/tags/{tag}`: 404 when the tag is absent.
pub async fn delete_tag(ctx: &Ctx, id: &str, tag: &str) -> Result<Reply, Fault> {
    let tag = tag.to_owned();
    modify(ctx, id, Rule::ModifyImage, format!("Not allowed to update tags for image {id}."), move |image| {
        let before = image.tags.len();
        image.tags.retain(|t| *t != tag);
        if image.tags.len() == before {
            return Err(Rejection::new(RejectionKind::NotFound, format!("Tag {tag} not found.")));
        }
        Ok(())
    })
    .await?;
    Ok(Reply::no_content())
}

/// `POST /v2/images/{id}/actions/deactivate` (or `reactivate` when `deactivate` is false).
pub async fn deactivate(ctx: &Ctx, id: &str, deactivate: bool) -> Result<Reply, Fault> {
    let (action, from, to) = if deactivate {
        ("deactivate", ImageStatus::Active, ImageStatus::Deactivated)
    } else {
        ("reactivate", ImageStatus::Deactivated, ImageStatus::Active)
    };
    modify(ctx, id, Rule::Deactivate, format!("You are not authorized to complete {action} action."), move |image| {
        if image.status == from {
            image.status = to;
        } else if image.status != to {
            return Err(Rejection::forbidden(format!(
                "Not allowed to {action} image in status '{}'",
                image.status.as_str()
            )));
        }
        Ok(())
    })
    .await?;
    Ok(Reply::no_content())
}

/// `GET /v2/images` (§13).
pub async fn list(ctx: &Ctx) -> Result<Reply, Fault> {
    let query = list_query(&ctx.query)?;
    let images = if query.limit == 0 {
        Vec::new()
    } else {
        ctx.state.store.list_images(Caller::User(&ctx.principal), &query).await.map_err(|e| store_fault(e, ""))?
    };
    let rebuilt = |marker: Option<&str>| {
        let mut pairs: Vec<String> = ctx
            .query
            .iter()
            .filter(|(k, _)| k != "marker")
            .map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v)))
            .collect();
        if let Some(m) = marker {
            pairs.push(format!("marker={}", quote_plus(m)));
        }
        if pairs.is_empty() { "/v2/images".to_owned() } else { format!("/v2/images?{}", pairs.join("&")) }
    };
    let mut body = Map::new();
    let multi = ctx.state.data.is_multi();
    body.insert("images".into(), Value::Array(images.iter().map(|i| views::image(i, multi)).collect()));
    body.insert("first".into(), Value::from(rebuilt(None)));
    body.insert("schema".into(), Value::from("/v2/schemas/images"));
    if let Some(last) = images.last().filter(|_| images.len() == query.limit) {
        body.insert("next".into(), Value::from(rebuilt(Some(&last.id))));
    }
    Ok(Reply::ok(&Value::Object(body)))
}

/// Columns a listing may sort on.
fn sort_column(key: &str) -> Option<Column> {
    Some(match key {
        "name" => Column::Name,
        "status" => Column::Status,
        "container_format" => Column::ContainerFormat,
        "disk_format" => Column::DiskFormat,
        "size" => Column::Size,
        "id" => Column::Id,
        "created_at" => Column::CreatedAt,
        "updated_at" => Column::UpdatedAt,
        _ => return None,
    })
}

fn sort_dir(dir: &str) -> Result<SortDir, Fault> {
    match dir {
        "asc" => Ok(SortDir::Asc),
        "desc" => Ok(SortDir::Desc),
        other => Err(bad_request(format!("Invalid sort direction: {other}"))),
    }
}

fn sort_key(key: &str) -> Result<Column, Fault> {
    sort_column(key).ok_or_else(|| {
        bad_request(format!(
            "Invalid sort key: {key}. It should be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at."
        ))
    })
}

/// Splits `in:a,"b,c"` values, quotes protecting commas.
fn split_in(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in list.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// `name`, `id`, `status`, `container_format`, `disk_format`: `in:`, `eq:` or a bare value.
fn operator_filter(column: Column, value: &str) -> Result<Filter, Fault> {
    if let Some(list) = value.strip_prefix("in:") {
        return Ok(Filter::In(column, split_in(list).into_iter().map(Scalar::Text).collect()));
    }
    if let Some(v) = value.strip_prefix("eq:") {
        return Ok(Filter::Compare(column, Cmp::Eq, Scalar::Text(v.to_owned())));
    }
    if let Some((op, _)) = value.split_once(':') {
        return Err(bad_request(format!("Unable to filter by unknown operator '{op}'.")));
    }
    Ok(Filter::Compare(column, Cmp::Eq, Scalar::Text(value.to_owned())))
}

fn time_filter(column: Column, value: &str) -> Result<Filter, Fault> {
    let (cmp, t) = match value.split_once(':') {
        Some((op @ ("gt" | "gte" | "lt" | "lte" | "eq" | "neq"), rest)) => (op, rest),
        _ => ("eq", value),
    };
    let cmp = match cmp {
        "gt" => Cmp::Gt,
        "gte" => Cmp::Gte,
        "lt" => Cmp::Lt,
        "lte" => Cmp::Lte,
        "neq" => Cmp::Neq,
        _ => Cmp::Eq,
    };
    let t = parse_time(t).ok_or_else(|| bad_request(format!("Invalid timestamp: {t}")))?;
    Ok(seconds_filter(column, cmp, t))
}

fn int_value(value: &str) -> Result<i64, Fault> {
    value.trim().parse().map_err(|_| bad_request("Unable to filter on a range with a non-numeric value."))
}

fn bool_value(name: &str, value: &str) -> Result<bool, Fault> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad_request(format!(
            "Invalid value '{value}' for '{name}' filter. Valid values are 'true' or 'false'."
        ))),
    }
}

/// Translates Glance's list parameters into the store's query (§13).
pub(crate) fn list_query(query: &[(String, String)]) -> Result<ListQuery, Fault> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT as usize,
        detail: true,
        member_status: Some(MemberStatus::Accepted),
        ..ListQuery::default()
    };
    let mut sort_keys = Vec::new();
    let mut sort_dirs = Vec::new();
    let mut new_sort = None;
    // Glance collapses repeated parameters to the last value, except `tag` and the sort lists.
    let mut last: Vec<(&str, &str)> = Vec::new();
    for (k, v) in query {
        match k.as_str() {
            "tag" => q.filters.push(Filter::Tag(v.clone())),
            "sort_key" => sort_keys.push(v.as_str()),
            "sort_dir" => sort_dirs.push(v.as_str()),
            _ => match last.iter_mut().find(|(lk, _)| lk == k) {
                Some(slot) => slot.1 = v,
                None => last.push((k, v)),
            },
        }
    }
    for (k, v) in last {
        match k {
            "limit" => {
                let n: i64 = v.trim().parse().map_err(|_| bad_request("limit param must be an integer"))?;
                if n < 0 {
                    return Err(bad_request("limit param must be positive"));
                }
                q.limit = (n as u64).min(MAX_LIMIT) as usize;
            }
            "marker" => q.marker = Some(v.to_owned()),
            "sort" => new_sort = Some(v),
            "member_status" => {
                q.member_status = match v {
                    "all" => None,
                    other => Some(
                        MemberStatus::parse(other).ok_or_else(|| bad_request(format!("Invalid status: {other}")))?,
                    ),
                }
            }
            "visibility" => {
                q.visibility = match v {
                    "all" => VisibilityFilter::All,
                    other => VisibilityFilter::Only(
                        Visibility::parse(other)
                            .ok_or_else(|| bad_request(format!("Invalid visibility value: {other}")))?,
                    ),
                }
            }
            "os_hidden" => {
                q.hidden = if bool_value("os_hidden", v)? { HiddenFilter::Only } else { HiddenFilter::Exclude }
            }
            "protected" => {
                q.filters.push(Filter::Compare(Column::Protected, Cmp::Eq, Scalar::Bool(bool_value("protected", v)?)))
            }
            "changes-since" => return Err(bad_request("The 'changes-since' filter is no longer available on v2.")),
            "name" => q.filters.push(operator_filter(Column::Name, v)?),
            "id" => q.filters.push(operator_filter(Column::Id, v)?),
            "status" => q.filters.push(operator_filter(Column::Status, v)?),
            "container_format" => q.filters.push(operator_filter(Column::ContainerFormat, v)?),
            "disk_format" => q.filters.push(operator_filter(Column::DiskFormat, v)?),
            "created_at" => q.filters.push(time_filter(Column::CreatedAt, v)?),
            "updated_at" => q.filters.push(time_filter(Column::UpdatedAt, v)?),
            "size_min" => q.filters.push(Filter::Compare(Column::Size, Cmp::Gte, Scalar::Int(int_value(v)?))),
            "size_max" => q.filters.push(Filter::Compare(Column::Size, Cmp::Lte, Scalar::Int(int_value(v)?))),
            "virtual_size_min" => {
                q.filters.push(Filter::Compare(Column::VirtualSize, Cmp::Gte, Scalar::Int(int_value(v)?)))
            }
            "virtual_size_max" => {
                q.filters.push(Filter::Compare(Column::VirtualSize, Cmp::Lte, Scalar::Int(int_value(v)?)))
            }
            "size" | "virtual_size" | "min_ram" | "min_disk" => {
                let column = match k {
                    "size" => Column::Size,
                    "virtual_size" => Column::VirtualSize,
                    "min_ram" => Column::MinRam,
                    _ => Column::MinDisk,
                };
                let n = v.trim().parse().map_err(|_| bad_request(format!("Invalid value for {k}: {v}")))?;
                q.filters.push(Filter::Compare(column, Cmp::Eq, Scalar::Int(n)));
            }
            "owner" => q.filters.push(Filter::Compare(Column::Owner, Cmp::Eq, Scalar::Text(v.to_owned()))),
            "checksum" => q.filters.push(Filter::Compare(Column::Checksum, Cmp::Eq, Scalar::Text(v.to_owned()))),
            "os_hash_value" => {
                q.filters.push(Filter::Compare(Column::OsHashValue, Cmp::Eq, Scalar::Text(v.to_owned())))
            }
            other => q.filters.push(Filter::Property(other.to_owned(), v.to_owned())),
        }
    }
    if let Some(spec) = new_sort {
        if !sort_keys.is_empty() || !sort_dirs.is_empty() {
            return Err(bad_request("Old and new sorting syntax cannot be combined"));
        }
        for item in spec.split(',') {
            let (key, dir) = item.split_once(':').unwrap_or((item, "desc"));
            q.sort.push((sort_key(key.trim())?, sort_dir(dir.trim())?));
        }
    } else if !sort_keys.is_empty() || !sort_dirs.is_empty() {
        let keys = if sort_keys.is_empty() { vec!["created_at"] } else { sort_keys };
        if sort_dirs.len() > 1 && sort_dirs.len() != keys.len() {
            return Err(bad_request("Number of sort dirs does not match the number of sort keys"));
        }
        for (n, key) in keys.iter().enumerate() {
            let dir = match sort_dirs.len() {
                0 => SortDir::Desc,
                1 => sort_dir(sort_dirs[0])?,
                _ => sort_dir(sort_dirs[n])?,
            };
            q.sort.push((sort_key(key)?, dir));
        }
    }
    q.dedup_sort();
    if let Some(why) = q.too_large() {
        return Err(bad_request(why));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::update::Attr;

    #[test]
    fn json_pointer_roots() {
        assert_eq!(pointer_root("/name").unwrap(), "name");
        assert_eq!(pointer_root("/a~1b~0").unwrap(), "a/b~");
        for bad in ["name", "/", "/ ", "/\t", "/a/b", "/tags/-", "/a~2"] {
            assert!(pointer_root(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn in_operator_respects_quotes() {
        assert_eq!(split_in(r#""a,b",c"#), vec!["a,b".to_string(), "c".to_string()]);
    }

    #[test]
    fn attr_conversion() {
        assert_eq!(schemas::to_attr("min_ram", &json!(5)), Attr::MinRam(5));
    }
}
