//! Interoperable image import (glance-v2 import): `GET /v2/info/import`,
//! `PUT /v2/images/{id}/stage` and `POST /v2/images/{id}/import`, checked in Glance's order
//! and with its words. The import itself runs in the background ([`crate::import`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use serde_json::{Map, Value, json};

use super::image_data::{requeue, upload_fault};
use super::{Ctx, Reply, modify, read_json, store_fault};
use crate::api::AppState;
use crate::api::fault::Fault;
use crate::domain::import::ImportMethod;
use crate::domain::policy::Rule;
use crate::domain::task::{API_IMAGE_IMPORT, Task, TaskStatus};
use crate::domain::{Image, ImageStatus, Principal, Rejection, RejectionKind, UploadLease, now};
use crate::import::{FAILED_IMPORT, IMPORTING_TO, Importer, Job, LOCK, RemoteImage, STAGE_HOST, edit_store_list};
use crate::store::data::DataStore;

/// How long a `web-download` may go without a byte.
const DOWNLOAD_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `web-download` host name may take to resolve when the import is asked for.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// An import lock older than this (twice that for a pending task) is taken over (Glance's).
const LOCK_EXPIRY: time::Duration = time::Duration::minutes(60);

fn bad_request(message: impl AsRef<str>) -> Fault {
    Fault::explained(StatusCode::BAD_REQUEST, message)
}

fn conflict(message: impl AsRef<str>) -> Fault {
    Fault::explained(StatusCode::CONFLICT, message)
}

/// `GET /v2/info/import`.
pub fn info(ctx: &Ctx) -> Reply {
    let methods: Vec<&str> = ctx.state.settings.import.methods.iter().map(|m| m.as_str()).collect();
    Reply::ok(
        &json!({"import-methods": {"description": "Import methods available.", "type": "array", "value": methods}}),
    )
}

/// The node's importer.
fn importer(state: &AppState) -> Importer {
    Importer {
        store: state.store.clone(),
        data: state.data.clone(),
        size_cap: state.settings.image_size_cap,
        read_timeout: DOWNLOAD_READ_TIMEOUT,
        filter: state.settings.import.filter.clone(),
        auth: state.auth.clone(),
    }
}

/// `PUT /v2/images/{id}/stage`: the data of a `queued` image, kept (`uploading`) for a
/// `glance-direct` import. It is staged in the default store, where the import adopts it.
pub async fn stage(ctx: &Ctx, id: &str, body: Body) -> Result<Reply, Fault> {
    if !ctx.state.settings.import.offers(ImportMethod::GlanceDirect) {
        return Err(Fault::explained(StatusCode::NOT_FOUND, "'glance-direct' method is not available at this site."));
    }
    if ctx.media_type() != "application/octet-stream" {
        let given = ctx.header("content-type").unwrap_or("None");
        return Err(Fault::explained(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Invalid content type {given}")));
    }
    let declared = match ctx.header("x-openstack-image-size").or_else(|| ctx.header("content-length")) {
        None => None,
        Some(v) => Some(
            v.trim().parse::<u64>().map_err(|_| bad_request("Invalid or missing image size in request headers."))?,
        ),
    };
    let store = ctx.state.data.default_name().to_owned();
    let lease = UploadLease { node: ctx.state.node.id.clone(), staging: DataStore::new_staging(&store, id) };
    let hold = lease.clone();
    modify(ctx, id, Rule::ModifyImage, "You are not authorized to complete modify_image action.".into(), move |i| {
        if i.status != ImageStatus::Queued {
            return Err(Rejection::conflict(format!(
                "Image status transition from {} to uploading is not allowed",
                i.status.as_str()
            )));
        }
        i.status = ImageStatus::Uploading;
        i.upload = Some(hold);
        Ok(())
    })
    .await?;
    let (state, who, image_id) = (ctx.state.clone(), ctx.principal.clone(), id.to_owned());
    let task = ctx.state.tasks.spawn(receive_stage(state, who, image_id, lease, body, declared));
    match task.await {
        Ok(result) => result.map(|()| Reply::no_content()),
        Err(e) => Err(Fault::explained(StatusCode::INTERNAL_SERVER_ERROR, format!("stage task failed: {e}"))),
    }
}

/// Streams the stage into the default store and records it; on any failure the image goes
/// back to `queued` with nothing staged.
async fn receive_stage(
    state: AppState,
    who: Arc<Principal>,
    id: String,
    lease: UploadLease,
    body: Body,
    declared: Option<u64>,
) -> Result<(), Fault> {
    let cap = state.settings.image_size_cap;
    let staged = match state.data.stage(&id, &lease.staging, body, cap, declared).await {
        Ok(staged) => staged,
        Err(e) => {
            requeue(&state, &who, &id, &lease).await;
            return Err(upload_fault(e, cap, &id));
        }
    };
    if let Some(expected) = declared.filter(|n| *n != staged.size) {
        let got = staged.size;
        state.data.discard(staged).await;
        requeue(&state, &who, &id, &lease).await;
        return Err(bad_request(format!("Size mismatch: expected {expected} bytes, got {got} bytes")));
    }
    let (store, size) = (staged.store.clone(), staged.size as i64);
    let location = match state.data.commit(staged).await {
        Ok(location) => location,
        Err(e) => {
            tracing::error!(error = %e, image = %id, "cannot commit staged data");
            requeue(&state, &who, &id, &lease).await;
            return Err(super::image_data::data_unavailable());
        }
    };
    let (held, kept_store, kept_location) = (lease.clone(), store.clone(), location.clone());
    let recorded = state
        .store
        .modify_image(
            &who,
            &id,
            Rule::Bookkeeping,
            Box::new(move |i| {
                if i.status != ImageStatus::Uploading || i.upload.as_ref() != Some(&held) {
                    return Err(Rejection::new(RejectionKind::Gone, "The image changed while its data was staged."));
                }
                i.upload = None;
                i.store = Some(kept_store);
                i.location = Some(kept_location);
                i.size = Some(size);
                Ok(())
            }),
        )
        .await;
    if let Err(e) = recorded {
        if let Some(backend) = state.data.get(&store) {
            let _ = backend.remove(&id, Some(&location)).await;
        }
        return Err(match e {
            crate::store::StoreError::NotFound => {
                Fault::explained(StatusCode::GONE, "The image was deleted while its data was staged.")
            }
            other => store_fault(other, &id),
        });
    }
    Ok(())
}

/// `POST /v2/images/{id}/import`.
pub async fn import(ctx: &Ctx, id: &str, body: Body) -> Result<Reply, Fault> {
    let settings = &ctx.state.settings.import;
    let body = read_json(body, ctx.state.settings.max_request_body_size).await?;
    let empty = Map::new();
    let fields = body.as_object().unwrap_or(&empty);
    let Some(Value::Object(method)) = fields.get("method") else {
        return Err(bad_request("Import request requires a 'method' field."));
    };
    let Some(Value::String(name)) = method.get("name") else {
        return Err(bad_request("Import request requires a 'name' field."));
    };
    let method_kind = ImportMethod::parse(name)
        .filter(|m| settings.offers(*m))
        .ok_or_else(|| bad_request(format!("Unknown import method name '{name}'.")))?;
    for flag in ["all_stores_must_succeed", "all_stores"] {
        if fields.get(flag).is_some_and(|v| !v.is_boolean()) {
            return Err(bad_request(format!("'{flag}' must be boolean value only")));
        }
    }
    let all_stores = fields.get("all_stores").and_then(Value::as_bool).unwrap_or(false);
    let must_succeed = fields.get("all_stores_must_succeed").and_then(Value::as_bool).unwrap_or(true);

    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| store_fault(e, id))?;
    ready_for(&image, method_kind)?;
    let remote = match method_kind {
        ImportMethod::GlanceDownload => Some(remote_image(ctx, method)?),
        _ => None,
    };
    // copy-image by its own policy; any other import changes the image, as its owner may.
    let rule = if method_kind == ImportMethod::CopyImage { Rule::CopyImage } else { Rule::ModifyImage };
    ctx.authorize(&rule, Some(&image), || super::not_authorized(&rule))?;
    let expected_lock = lock_to_take(ctx, &image).await?;
    let (mut stores, multi_store) = target_stores(ctx, fields, all_stores)?;
    if method_kind == ImportMethod::CopyImage {
        if all_stores {
            // Copied to every store that does not hold it yet: nothing to do when all do.
            stores.retain(|s| !image.in_store(s));
            if stores.is_empty() {
                return Ok(accepted());
            }
        } else if let Some(present) = stores.iter().find(|s| image.in_store(s)) {
            return Err(bad_request(format!("Image is already present at store '{present}'")));
        }
    }
    // Glance refuses `all_stores_must_succeed: false` without several stores; `openstack image
    // import` sends it by default, so here it is accepted (one store: nothing to tell apart).
    let uri = match method_kind {
        ImportMethod::WebDownload => Some(checked_uri(ctx, method.get("uri")).await?),
        _ => None,
    };

    // The lock, the status and this node's hold, in one transaction.
    let task_id = uuid::Uuid::new_v4().to_string();
    let first = stores[0].clone();
    let staging = match method_kind {
        ImportMethod::GlanceDirect if image.store.as_deref().unwrap_or(crate::store::data::FILE_STORE) == first => {
            String::new()
        }
        _ => DataStore::new_staging(&first, id),
    };
    let lease = UploadLease { node: ctx.state.node.id.clone(), staging };
    let (lock, hold) = (task_id.clone(), lease.clone());
    let named: Vec<String> = if multi_store { stores.clone() } else { Vec::new() };
    let denied = format!("You are not authorized to complete {} action.", rule.name());
    modify(ctx, id, rule.clone(), denied, move |i| {
        if i.properties.get_str(LOCK) != expected_lock.as_deref() {
            return Err(Rejection::conflict("Image has active task"));
        }
        if ready_for(i, method_kind).is_err() {
            return Err(Rejection::conflict(format!(
                "Image status transition from {} to importing is not allowed",
                i.status.as_str()
            )));
        }
        // A copy leaves the image active, serving the data it has.
        if method_kind != ImportMethod::CopyImage {
            i.status = ImageStatus::Importing;
        }
        i.upload = Some(hold);
        i.properties.set(LOCK.into(), Some(lock));
        let requested: Vec<&str> = named.iter().map(String::as_str).collect();
        edit_store_list(i, IMPORTING_TO, &requested, &[]);
        edit_store_list(i, FAILED_IMPORT, &[], &requested);
        i.properties.remove(STAGE_HOST);
        Ok(())
    })
    .await?;

    let backend: Vec<Option<&String>> = if multi_store { stores.iter().map(Some).collect() } else { vec![None] };
    let mut body = body;
    if let Some(remote) = &remote {
        // As Glance records it: with the interface it defaulted.
        body["method"]["glance_service_interface"] = json!(remote.interface);
    }
    let input = json!({"image_id": id, "import_req": body, "backend": backend});
    let job = Job {
        task_id: task_id.clone(),
        image_id: id.to_owned(),
        method: method_kind,
        stores,
        multi_store,
        all_stores_must_succeed: must_succeed,
        uri,
        remote,
        lease,
    };
    let mut task = Task::new(task_id, API_IMAGE_IMPORT, ctx.principal.project_id.clone(), now());
    task.image_id = Some(id.to_owned());
    task.request_id = Some(ctx.request_id.clone());
    task.user_id = Some(ctx.principal.user_id.clone()).filter(|u| !u.is_empty());
    task.input = Some(input);
    task.node = Some(ctx.state.node.id.clone());
    let importer = importer(&ctx.state);
    if let Err(e) = ctx.state.store.insert_task(task).await {
        crate::import::abandon(&importer, &job, &crate::import::Progress::new(job.lease.clone())).await;
        return Err(store_fault(e, id));
    }
    ctx.state.tasks.spawn(crate::import::run(importer, job));
    Ok(accepted())
}

/// Glance's answer to an accepted import.
fn accepted() -> Reply {
    Reply::empty(StatusCode::ACCEPTED).with_header(header::CONTENT_TYPE, "text/html; charset=UTF-8")
}

/// Whether `image` can be the target of a `method` import (Glance's checks, in its order).
fn ready_for(image: &Image, method: ImportMethod) -> Result<(), Fault> {
    match method {
        ImportMethod::CopyImage if image.status != ImageStatus::Active => {
            return Err(conflict("Only images with status active can be targeted for copying"));
        }
        ImportMethod::CopyImage => {}
        _ if image.status == ImageStatus::Active => {
            return Err(conflict("Image with status active cannot be target for import"));
        }
        ImportMethod::WebDownload | ImportMethod::GlanceDownload if image.status != ImageStatus::Queued => {
            return Err(conflict(format!("Image needs to be in 'queued' state to use '{}' method", method.as_str())));
        }
        // Staged means all of it: a stage still streaming holds the image.
        ImportMethod::GlanceDirect if image.status != ImageStatus::Uploading || image.upload.is_some() => {
            return Err(conflict("Image needs to be staged before 'glance-direct' method can be used"));
        }
        _ => {}
    }
    if image.container_format.as_deref().is_none_or(str::is_empty) {
        return Err(conflict("'container_format' needs to be set before import"));
    }
    if image.disk_format.as_deref().is_none_or(str::is_empty) {
        return Err(conflict("'disk_format' needs to be set before import"));
    }
    Ok(())
}

/// `glance-download`'s image of the other Glance: its id, region and interface (Glance's
/// checks and words), and the caller's token to reach it with.
fn remote_image(ctx: &Ctx, method: &Map<String, Value>) -> Result<RemoteImage, Fault> {
    let text = |key: &str| method.get(key).map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()));
    let region = text("glance_region")
        .ok_or_else(|| bad_request("'glance_region' needs to be set for glance-download import method"))?;
    let image_id = text("glance_image_id")
        .ok_or_else(|| bad_request("'glance_image_id' needs to be set for glance-download import method"))?;
    if uuid::Uuid::parse_str(&image_id).is_err() {
        return Err(bad_request(format!("Remote image id does not look like a UUID: {image_id}")));
    }
    let interface = text("glance_service_interface").unwrap_or_else(|| "public".to_owned());
    let token = crate::api::http::token(&ctx.parts.headers).unwrap_or_default().to_owned();
    Ok(RemoteImage { image_id, region, interface, token })
}

/// The import lock this import may take over: none, or one whose task is gone, or that has
/// not moved for an hour (two while pending). 409 while another import holds the image.
async fn lock_to_take(ctx: &Ctx, image: &Image) -> Result<Option<String>, Fault> {
    let Some(held) = image.properties.get_str(LOCK) else { return Ok(None) };
    let task = ctx.state.store.get_task(held).await.map_err(|e| store_fault(e, &image.id))?;
    let stale = match &task {
        None => true,
        Some(t) => {
            let expiry = if t.status == TaskStatus::Pending { LOCK_EXPIRY * 2 } else { LOCK_EXPIRY };
            now() - t.updated_at >= expiry
        }
    };
    if !stale {
        return Err(conflict("Image has active task"));
    }
    if task.is_some_and(|t| !t.status.is_final()) {
        let preempted =
            ctx.state.store.update_task(held, Box::new(|t| t.end(Err("Expired lock preempted".into()), now())));
        if let Err(e) = preempted.await {
            tracing::warn!(error = %e, task = held, "cannot fail a preempted import task");
        }
    }
    Ok(Some(held.to_owned()))
}

/// The stores the data goes to, in order, and whether they are named among several. With one
/// store every store option is ignored (as Glance ignores them without `enabled_backends`);
/// with several, the request names them (`stores`, `X-Image-Meta-Store`, `all_stores`) or
/// gets the default.
fn target_stores(ctx: &Ctx, fields: &Map<String, Value>, all_stores: bool) -> Result<(Vec<String>, bool), Fault> {
    let data = &ctx.state.data;
    if !data.is_multi() {
        return Ok((vec![data.default_name().to_owned()], false));
    }
    let header = ctx.header("x-image-meta-store").map(str::trim);
    let mut stores: Vec<String> = if all_stores {
        if fields.contains_key("stores") || header.is_some() {
            return Err(bad_request(
                "All_stores parameter can't be used with x-image-meta-store header or stores parameter",
            ));
        }
        data.all().map(|(name, _)| name.to_owned()).collect()
    } else if let Some(stores) = fields.get("stores") {
        if header.is_some() {
            return Err(bad_request("Stores parameter and x-image-meta-store header can't be both specified"));
        }
        let Some(stores) = stores.as_array() else {
            return Err(bad_request("'stores' must be a list of store identifiers"));
        };
        stores.iter().map(|s| s.as_str().map(str::to_owned).unwrap_or_else(|| s.to_string())).collect()
    } else {
        vec![header.unwrap_or(data.default_name()).to_owned()]
    };
    for s in &stores {
        if data.get(s).is_none() {
            return Err(conflict(format!("Store for identifier {s} not found")));
        }
    }
    let mut seen = std::collections::HashSet::new();
    stores.retain(|s| seen.insert(s.clone()));
    if stores.is_empty() {
        stores.push(data.default_name().to_owned());
    }
    Ok((stores, true))
}

/// `web-download`'s URI, if it passes the site's filter and its host name resolves.
async fn checked_uri(ctx: &Ctx, uri: Option<&Value>) -> Result<String, Fault> {
    let text = uri.and_then(Value::as_str);
    let refused = || bad_request(format!("URI for web-download does not pass filtering: {}", text.unwrap_or("None")));
    let Some(text) = text else { return Err(refused()) };
    let passed = ctx.state.settings.import.filter.check(text).ok_or_else(refused)?;
    if passed.is_name {
        let port = passed.url.port_or_known_default().unwrap_or(80);
        let lookup = tokio::net::lookup_host((passed.host.as_str(), port));
        let resolved = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(addresses)) => addresses.count() > 0,
            _ => false,
        };
        if !resolved {
            return Err(refused());
        }
    }
    Ok(text.to_owned())
}
