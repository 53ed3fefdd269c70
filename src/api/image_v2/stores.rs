//! Glance's multi-store API (`enabled_backends`): the stores (`/v2/info/stores`, `/detail` for
//! admins) and deleting an image's data from one store. With one store it is not enabled:
//! 404, as Glance answers without `enabled_backends`.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, Reply, not_authorized, store_fault};
use crate::api::fault::Fault;
use crate::domain::policy::Rule;
use crate::domain::{ImageStatus, Rejection, RejectionKind};

fn not_enabled() -> Fault {
    Fault::explained(StatusCode::NOT_FOUND, "Multi backend is not supported at this site.")
}

/// `GET /v2/info/stores`, and with `detail` `GET /v2/info/stores/detail` (admins: each
/// store's type and properties).
pub fn list(ctx: &Ctx, detail: bool) -> Result<Reply, Fault> {
    let data = &ctx.state.data;
    if !data.is_multi() {
        return Err(not_enabled());
    }
    if detail {
        ctx.authorize(&Rule::StoresInfoDetail, None, || not_authorized(&Rule::StoresInfoDetail))?;
    }
    let stores: Vec<Value> = data
        .all()
        .enumerate()
        .map(|(n, (name, backend))| {
            let mut store = json!({"id": name});
            if n == 0 {
                store["default"] = json!("true");
            }
            if detail {
                let (kind, properties) = backend.describe();
                store["type"] = json!(kind);
                store["properties"] = properties;
                store["weight"] = json!(0);
            }
            store
        })
        .collect();
    Ok(Reply::ok(&json!({"stores": stores})))
}

/// `DELETE /v2/stores/{store}/{image}`: the image's copy in one store, removed, in Glance's
/// order of checks; never its only copy (delete the image instead).
pub async fn delete_from(ctx: &Ctx, store: &str, id: &str) -> Result<Reply, Fault> {
    let data = &ctx.state.data;
    if !data.is_multi() {
        return Err(Fault::bare(StatusCode::NOT_FOUND));
    }
    if data.get(store).is_none() {
        return Err(Fault::explained(
            StatusCode::CONFLICT,
            format!("The selected store {store} is not available on this node."),
        ));
    }
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| match e {
        crate::store::StoreError::NotFound => {
            Fault::explained(StatusCode::NOT_FOUND, format!("Failed to find image {id}"))
        }
        other => store_fault(other, id),
    })?;
    ctx.authorize(&Rule::DeleteImageLocation, Some(&image), || not_authorized(&Rule::DeleteImageLocation))?;
    if image.status != ImageStatus::Active {
        return Err(Fault::explained(
            StatusCode::CONFLICT,
            "It's not allowed to remove image data from store if image status is not 'active'",
        ));
    }
    // Checked again in the change, in Glance's order: one location is refused before the
    // store named is looked at.
    let only = "Cannot delete image data from the only store containing it. Consider deleting the image instead.";
    let missing = format!("Image {id} is not stored in store {store}.");
    let removed = image.locations().find(|(s, _)| *s == store).map(|(s, l)| (s.to_owned(), l.to_owned()));
    let changed = ctx.state.store.modify_image(
        &ctx.principal,
        id,
        Rule::DeleteImageLocation,
        Box::new(move |i| {
            if i.locations().count() <= 1 {
                return Err(Rejection::new(RejectionKind::Forbidden, only));
            }
            match removed {
                Some((s, l)) if i.locations().any(|copy| copy == (s.as_str(), l.as_str())) => {
                    i.drop_copy(&s);
                    Ok(())
                }
                _ => Err(Rejection::new(RejectionKind::NotFound, missing)),
            }
        }),
    );
    changed.await.map_err(|e| store_fault(e, id))?;
    // The copy is no longer the image's: its data goes (or the sweep takes it).
    let one = image.only_copy_in(store);
    if let Err(e) = data.remove(&one).await {
        tracing::warn!(error = %e, image = %id, store, "cannot remove the data of a deleted location; the sweep will");
    }
    Ok(Reply::no_content())
}
