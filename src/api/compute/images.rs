//! The image proxy actions (nova-images §4): list, detail, show, delete.

use time::OffsetDateTime;

use super::schemas::positive_integer;
use super::views;
use super::{Ctx, Reply};
use crate::api::fault::Fault;
use crate::api::{quote_plus, seconds_filter};
use crate::domain::{ImageStatus, MemberStatus};
use crate::store::{Caller, Cmp, Column, Filter, ListQuery, Scalar, StoreError};

/// Nova's `[api] max_limit`: the most images one page carries (the Rec of §4.2).
pub const MAX_LIMIT: u64 = 1000;

/// The query parameters Nova's `index_query` schema keeps; everything else is stripped
/// (and so also left out of `next` links).
const KNOWN_PARAMS: &[&str] = &[
    "name",
    "status",
    "changes-since",
    "server",
    "type",
    "minRam",
    "minDisk",
    "limit",
    "page_size",
    "marker",
    "offset",
];

fn is_known(param: &str) -> bool {
    KNOWN_PARAMS.contains(&param) || param.starts_with("property-")
}

pub async fn index(ctx: &Ctx<'_>) -> Result<Reply, Fault> {
    list(ctx, false).await
}

pub async fn detail(ctx: &Ctx<'_>) -> Result<Reply, Fault> {
    list(ctx, true).await
}

async fn list(ctx: &Ctx<'_>, detail: bool) -> Result<Reply, Fault> {
    let query = list_query(&ctx.query, detail)?;
    let images = ctx.state.store.list_images(Caller::User(&ctx.principal), &query).await.map_err(|e| match e {
        StoreError::MarkerNotFound(m) => {
            Fault::bad_request(format!("HTTP 400 Bad Request: Marker {m} could not be found."))
        }
        // Glance's 403 reaches the client as Nova's 403 (§4.2).
        StoreError::MarkerForbidden(m) => {
            Fault::forbidden(format!("HTTP 403 Forbidden: Forbidden to see the marker image {m}."))
        }
        other => Fault::store(&other, true),
    })?;
    let links = ctx.links();
    let next = images.last().filter(|_| images.len() == query.limit).map(|last| {
        let collection = if detail { "images/detail" } else { "images" };
        [NextLink { rel: "next", href: links.collection(collection, &next_query(ctx, &last.id)) }]
    });
    Ok(Reply::ok(ImagePage { links: &links, images: &images, detail, images_links: next }))
}

/// `{"images": [...], "images_links": [next]}`, the links only on a full page.
struct ImagePage<'a> {
    links: &'a views::LinkBase,
    images: &'a [crate::domain::Image],
    detail: bool,
    images_links: Option<[NextLink; 1]>,
}

#[derive(serde::Serialize)]
struct NextLink {
    rel: &'static str,
    href: String,
}

impl serde::Serialize for ImagePage<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Items<'a>(&'a ImagePage<'a>);
        impl serde::Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let page = self.0;
                let mut seq = s.serialize_seq(Some(page.images.len()))?;
                for image in page.images {
                    if page.detail {
                        seq.serialize_element(&views::ImageDetail(page.links, image))?;
                    } else {
                        seq.serialize_element(&views::ImageBasic(page.links, image))?;
                    }
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("images", &Items(self))?;
        if let Some(next) = &self.images_links {
            map.serialize_entry("images_links", next)?;
        }
        map.end()
    }
}

/// Translates the Compute filters into the store's listing query (§4.2, Glance semantics).
pub(crate) fn list_query(query: &[(String, String)], detail: bool) -> Result<ListQuery, Fault> {
    let all = |name: &str| -> Vec<&str> { query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect() };
    let last = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let limit = positive_integer("limit", &all("limit"))?;
    positive_integer("page_size", &all("page_size"))?;
    positive_integer("offset", &all("offset"))?;

    let mut q = ListQuery {
        limit: limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT) as usize,
        marker: last("marker").map(str::to_owned),
        detail,
        // Nova asks Glance for its default list: shared images the caller accepted.
        member_status: Some(MemberStatus::Accepted),
        ..ListQuery::default()
    };
    if let Some(name) = last("name") {
        let names = in_operator(name).into_iter().map(Scalar::Text).collect();
        q.filters.push(Filter::In(Column::Name, names));
    }
    if let Some(status) = last("status") {
        let statuses = in_operator(&status.to_lowercase())
            .iter()
            .map(|s| match ImageStatus::parse(s) {
                Some(st) => Ok(Scalar::Text(st.as_str().into())),
                None => Err(Fault::bad_request(format!("HTTP 400 Bad Request: Invalid status value: {s}"))),
            })
            .collect::<Result<_, _>>()?;
        q.filters.push(Filter::In(Column::Status, statuses));
    }
    if let Some(since) = last("changes-since") {
        let t = parse_time(since)
            .ok_or_else(|| Fault::bad_request(format!("HTTP 400 Bad Request: Invalid changes-since value: {since}")))?;
        q.filters.push(seconds_filter(Column::UpdatedAt, Cmp::Gte, t));
    }
    if let Some(server) = last("server") {
        let uuid = server.rsplit('/').next().unwrap_or(server);
        q.filters.push(Filter::Property("instance_uuid".into(), uuid.into()));
    }
    if let Some(kind) = last("type") {
        q.filters.push(Filter::Property("image_type".into(), kind.into()));
    }
    for (param, column) in [("minRam", Column::MinRam), ("minDisk", Column::MinDisk)] {
        if let Some(n) = int_filter(last(param), param)? {
            q.filters.push(Filter::Compare(column, Cmp::Eq, Scalar::Int(n)));
        }
    }
    let mut seen = Vec::new();
    for (k, _) in query {
        if let Some(prop) = k.strip_prefix("property-")
            && !seen.contains(&prop)
        {
            seen.push(prop);
            let v = last(k).unwrap_or_default();
            q.filters.push(Filter::Property(prop.to_owned(), v.to_owned()));
        }
    }
    if let Some(why) = q.too_large() {
        return Err(Fault::bad_request(format!("HTTP 400 Bad Request: {why}")));
    }
    Ok(q)
}

/// Glance's `in:a,b` operator for name and status; otherwise one exact value.
fn in_operator(value: &str) -> Vec<String> {
    match value.strip_prefix("in:") {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => vec![value.to_owned()],
    }
}

fn int_filter(value: Option<&str>, name: &str) -> Result<Option<i64>, Fault> {
    value
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| Fault::bad_request(format!("HTTP 400 Bad Request: Invalid {name} value: {v}")))
        })
        .transpose()
}

/// ISO 8601 as Glance accepts it: with or without a UTC offset or fractions, or a bare date.
/// The result is in UTC; a time whose UTC equivalent leaves the representable range (a
/// negative offset on the last day of 9999) is no time.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return t.checked_to_offset(time::UtcOffset::UTC);
    }
    let naive = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    ];
    for f in naive {
        if let Ok(t) = time::PrimitiveDateTime::parse(s, &f) {
            return Some(t.assume_utc());
        }
    }
    time::Date::parse(s, &format_description!("[year]-[month]-[day]")).ok().map(|d| d.midnight().assume_utc())
}

/// The query of a `next` link: the kept parameters sorted by name (then value), one value each
/// (the last after sorting, as an OrderedDict of the sorted pairs), with `marker` set.
fn next_query(ctx: &Ctx<'_>, marker: &str) -> String {
    let mut pairs: Vec<(&str, &str)> =
        ctx.query.iter().filter(|(k, _)| is_known(k)).map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort();
    let mut params: Vec<(&str, &str)> = Vec::new();
    for (k, v) in pairs.into_iter().chain([("marker", marker)]) {
        match params.iter_mut().find(|(pk, _)| *pk == k) {
            Some(slot) => slot.1 = v,
            None => params.push((k, v)),
        }
    }
    params.iter().map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v))).collect::<Vec<_>>().join("&")
}

/// `GET /images/{id}`.
pub async fn show(ctx: &Ctx<'_>, id: &str) -> Result<Reply, Fault> {
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| match e {
        StoreError::NotFound => Fault::not_found("Image not found."),
        other => Fault::store(&other, true),
    })?;
    #[derive(serde::Serialize)]
    struct Show<'a> {
        image: views::ImageDetail<'a>,
    }
    let source = ctx.link_source();
    let render = || {
        let links = views::LinkBase::new(source, &ctx.state.settings);
        crate::api::json::to_vec(&Show { image: views::ImageDetail(&links, &image) }).into()
    };
    // Rendered once per cached copy for the links of the first request; other links render anew.
    let body = match crate::api::rendered::of(&image) {
        Some(r) => match r.compute_image.get_or_init(|| (views::LinkKey::of(source), render())) {
            (made_for, body) if made_for.is(source) => body.clone(),
            _ => render(),
        },
        None => render(),
    };
    Ok(Reply::with_body(body))
}

/// `DELETE /images/{id}`.
pub async fn delete(ctx: &Ctx<'_>, id: &str) -> Result<Reply, Fault> {
    crate::service::delete_image(&ctx.state.store, &ctx.state.data, ctx.state.cache.as_deref(), &ctx.principal, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Fault::not_found("Image not found."),
            StoreError::Forbidden | StoreError::Protected => {
                Fault::forbidden("You are not allowed to delete the image.")
            }
            other => Fault::store(&other, true),
        })?;
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_glance_accepts() {
        assert!(parse_time("2026-01-02T03:04:05Z").is_some());
        assert!(parse_time("2026-01-02T03:04:05").is_some());
        assert!(parse_time("2026-01-02T03:04:05.123456").is_some());
        assert!(parse_time("2026-01-02").is_some());
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("9999-12-31T23:59:59.9Z").is_some());
        assert!(parse_time("9999-12-31T23:59:59-01:00").is_none());
    }

    /// No time at the edges of the range panics, whatever the comparison.
    #[test]
    fn seconds_filters_at_the_edges_of_time() {
        use crate::api::seconds_filter;
        for t in ["9999-12-31T23:59:59.9Z", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "0000-01-01T00:00:00.5Z"] {
            let t = parse_time(t).unwrap();
            for cmp in [Cmp::Eq, Cmp::Neq, Cmp::Gt, Cmp::Gte, Cmp::Lt, Cmp::Lte] {
                let _ = seconds_filter(Column::UpdatedAt, cmp, t);
            }
        }
    }
}
