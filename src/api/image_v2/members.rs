//! Image members (glance-v2 §10): sharing a `shared` image with other projects, who accept or
//! reject it.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, Reply, modify, read_json, store_fault};
use crate::api::compute::views::isotime;
use crate::api::fault::Fault;
use crate::domain::policy::{self, Rule};
use crate::domain::{Image, Member, MemberStatus, Rejection, RejectionKind, Visibility, bad_text, now};

/// Glance's `image_member_quota`.
const MEMBER_QUOTA: usize = 128;

fn view(image_id: &str, m: &Member) -> Value {
    json!({
        "created_at": isotime(m.created_at),
        "image_id": image_id,
        "member_id": m.project,
        "schema": "/v2/schemas/member",
        "status": m.status.as_str(),
        "updated_at": isotime(m.updated_at),
    })
}

/// The members the caller may list: all of them for the owner and admins, its own entry for
/// a member.
fn listed<'a>(ctx: &Ctx, image: &'a Image) -> Vec<&'a Member> {
    let who = &ctx.principal;
    let owner = policy::authorize(who, &Rule::SeeAllMembers, Some(image));
    image.members.iter().filter(|m| owner || m.project == who.project_id).collect()
}

/// `GET /v2/images/{id}/members`.
pub async fn list(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| store_fault(e, id))?;
    let members: Vec<Value> = listed(ctx, &image).into_iter().map(|m| view(id, m)).collect();
    Ok(Reply::ok(&json!({"members": members, "schema": "/v2/schemas/members"})))
}

/// `GET /v2/images/{id}/members/{member}`.
pub async fn show(ctx: &Ctx, id: &str, member: &str) -> Result<Reply, Fault> {
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| store_fault(e, id))?;
    let found = listed(ctx, &image)
        .into_iter()
        .find(|m| m.project == member)
        .ok_or_else(|| Fault::explained(StatusCode::NOT_FOUND, format!("Member {member} not found for image {id}.")))?;
    Ok(Reply::ok(&view(id, found)))
}

/// `POST /v2/images/{id}/members {"member": "<project>"}`: the owner shares the image.
pub async fn create(ctx: &Ctx, id: &str, body: Body) -> Result<Reply, Fault> {
    let body = read_json(body, ctx.state.settings.max_request_body_size).await?;
    let member = match body.get("member") {
        Some(Value::String(m)) if !m.is_empty() && m.chars().count() <= 255 && bad_text(m, true).is_none() => m.clone(),
        Some(_) => {
            return Err(Fault::explained(
                StatusCode::BAD_REQUEST,
                "Member must be a project id of at most 255 characters.",
            ));
        }
        None => return Err(Fault::explained(StatusCode::BAD_REQUEST, "Member to be added not specified")),
    };
    let (image_id, project) = (id.to_owned(), member.clone());
    let image = modify(ctx, id, Rule::ShareImage, format!("Not allowed to create members for image {image_id}."), move |image| {
        if image.visibility != Visibility::Shared {
            return Err(Rejection::forbidden("Only shared images have members."));
        }
        if image.members.iter().any(|m| m.project == project) {
            return Err(Rejection::conflict(format!(
                "Member {project} already associated with image {image_id}."
            )));
        }
        if image.members.len() >= MEMBER_QUOTA {
            return Err(Rejection::over_limit(format!(
                "The limit has been exceeded on the number of allowed image members for this image. Attempted: {}, Maximum: {MEMBER_QUOTA}",
                image.members.len() + 1
            )));
        }
        let at = now();
        image.members.push(Member { project, status: MemberStatus::Pending, created_at: at, updated_at: at });
        Ok(())
    })
    .await?;
    let added = image.members.iter().find(|m| m.project == member).expect("the member just added");
    Ok(Reply::ok(&view(id, added)))
}

/// `PUT /v2/images/{id}/members/{member} {"status": …}`: the member (or an admin) answers.
pub async fn update(ctx: &Ctx, id: &str, member: &str, body: Body) -> Result<Reply, Fault> {
    let body = read_json(body, ctx.state.settings.max_request_body_size).await?;
    let status = body.get("status").and_then(Value::as_str).and_then(MemberStatus::parse).ok_or_else(|| {
        Fault::explained(StatusCode::BAD_REQUEST, "Status must be one of: pending, accepted, rejected.")
    })?;
    let (image_id, project) = (id.to_owned(), member.to_owned());
    let rule = Rule::ModifyMember(member.to_owned());
    let image = modify(ctx, id, rule, format!("Not allowed to update members for image {id}."), move |image| {
        let Some(m) = image.members.iter_mut().find(|m| m.project == project) else {
            return Err(Rejection::new(
                RejectionKind::NotFound,
                format!("Member {project} not found for image {image_id}."),
            ));
        };
        m.status = status;
        m.updated_at = now();
        Ok(())
    })
    .await?;
    let changed = image.members.iter().find(|m| m.project == member).expect("the member just changed");
    Ok(Reply::ok(&view(id, changed)))
}

/// `DELETE /v2/images/{id}/members/{member}`: the owner stops sharing.
pub async fn delete(ctx: &Ctx, id: &str, member: &str) -> Result<Reply, Fault> {
    let (image_id, project) = (id.to_owned(), member.to_owned());
    modify(ctx, id, Rule::ShareImage, format!("Not allowed to delete members for image {image_id}."), move |image| {
        let before = image.members.len();
        image.members.retain(|m| m.project != project);
        if image.members.len() == before {
            return Err(Rejection::new(
                RejectionKind::NotFound,
                format!("Member {project} not found for image {image_id}."),
            ));
        }
        Ok(())
    })
    .await?;
    Ok(Reply::no_content())
}

/// `/v2/schemas/member`.
pub fn member_schema() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "image_id": {"type": "string", "description": "An identifier for the image",
                         "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "schema": {"type": "string", "readOnly": true},
            "status": {"type": "string", "description": "The status of this image member",
                       "enum": ["pending", "accepted", "rejected"]},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
        },
    })
}

/// `/v2/schemas/members`.
pub fn members_schema() -> Value {
    json!({
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema()},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    })
}
