//! Glance v2: tags and the deactivate/reactivate actions (glance-v2 §9, §16, §8.2; checklist
//! §18 #42–#45).

use serde_json::json;

use crate::glance_helpers::*;
use crate::helpers::*;

fn tag_path(id: &str, tag: &str) -> String {
    format!("/v2/images/{id}/tags/{tag}")
}

fn action(id: &str, what: &str) -> String {
    format!("/v2/images/{id}/actions/{what}")
}

// §18 #42, §16, §8.2: deactivate → 204, deactivated, non-admin download 403, admin 200;
// repeated deactivate is a no-op; reactivate → 204, active, download works again.
#[tokio::test]
async fn deactivate_reactivate() {
    let env = Env::new();
    let server = env.start();
    let data = pattern(1024, 1);
    let id = active_raw(&server, &data).await;
    let r = g(&server, "POST", &action(&id, "deactivate")).send().await;
    assert_no_content(&r);
    assert_eq!(show(&server, &id).await["status"], json!("deactivated"));
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_gerr(&r, 403, "The requested image has been deactivated. Image data download is forbidden.");
    let r = g(&server, "GET", &file_path(&id)).token(TOK_ADMIN).send().await;
    assert_eq!(r.status, 200, "admin may download a deactivated image");
    assert_eq!(r.body, data);
    // Metadata stays readable by the owner.
    let r = g(&server, "GET", &img_path(&id)).send().await;
    assert_eq!(r.status, 200);
    let r = g(&server, "POST", &action(&id, "deactivate")).send().await;
    assert_no_content(&r);
    assert_eq!(show(&server, &id).await["status"], json!("deactivated"));
    let r = g(&server, "POST", &action(&id, "reactivate")).send().await;
    assert_no_content(&r);
    assert_eq!(show(&server, &id).await["status"], json!("active"));
    let r = g(&server, "POST", &action(&id, "reactivate")).send().await;
    assert_no_content(&r);
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    // A deactivated image can be deleted (§7).
    let r = g(&server, "POST", &action(&id, "deactivate")).send().await;
    assert_no_content(&r);
    let r = g(&server, "DELETE", &img_path(&id)).send().await;
    assert_no_content(&r);
}

// §18 #43, §16: deactivate/reactivate from any other status → 403.
#[tokio::test]
async fn actions_on_queued_image() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let r = g(&server, "POST", &action(&id, "deactivate")).send().await;
    assert_gerr(&r, 403, "Not allowed to deactivate image in status 'queued'");
    let r = g(&server, "POST", &action(&id, "reactivate")).send().await;
    assert_gerr(&r, 403, "Not allowed to reactivate image in status 'queued'");
    assert_eq!(show(&server, &id).await["status"], json!("queued"));
}

// §10: actions need owner (member) or admin; invisible → 404; missing → 404.
#[tokio::test]
async fn action_permissions() {
    let env = Env::new();
    let server = env.start();
    let private = active_raw(&server, b"p").await;
    let community = create(
        &server,
        json!({"disk_format": "raw", "container_format": "bare", "visibility": "community"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    upload_ok(&server, &community, b"c").await;
    let r = g(&server, "POST", &action(&private, "deactivate")).token(TOK_B).send().await;
    assert_gerr_code(&r, 404);
    let r = g(&server, "POST", &action(&community, "deactivate")).token(TOK_B).send().await;
    assert_gerr_code(&r, 403);
    let r = g(&server, "POST", &action(&private, "deactivate")).token(TOK_A_READER).send().await;
    assert_gerr_code(&r, 403);
    let r = g(&server, "POST", &action(&new_id(), "deactivate")).send().await;
    assert_gerr_code(&r, 404);
    assert_eq!(show(&server, &private).await["status"], json!("active"));
    assert_eq!(show(&server, &community).await["status"], json!("active"));
    let r = g(&server, "POST", &action(&private, "deactivate")).token(TOK_ADMIN).send().await;
    assert_no_content(&r);
    // A deactivated community image: other projects may not download it.
    let r = g(&server, "POST", &action(&community, "deactivate")).send().await;
    assert_no_content(&r);
    let r = g(&server, "GET", &file_path(&community)).token(TOK_B).send().await;
    assert_gerr(&r, 403, "The requested image has been deactivated. Image data download is forbidden.");
}

// §18 #44, §9: PUT tag → 204 and listed; repeating is a no-op; > 255 chars → 400; missing
// image → 404.
#[tokio::test]
async fn put_tag() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let r = g(&server, "PUT", &tag_path(&id, "alpha")).send().await;
    assert_no_content(&r);
    assert_eq!(tags(&show(&server, &id).await), vec!["alpha"]);
    let r = g(&server, "PUT", &tag_path(&id, "alpha")).send().await;
    assert_no_content(&r);
    assert_eq!(show(&server, &id).await["tags"], json!(["alpha"]), "no duplicate");
    let r = g(&server, "PUT", &tag_path(&id, "beta%20gamma")).send().await;
    assert_no_content(&r);
    assert_eq!(tags(&show(&server, &id).await), vec!["alpha", "beta gamma"], "tags are percent-decoded");
    let long = "t".repeat(256);
    let r = g(&server, "PUT", &tag_path(&id, &long)).send().await;
    assert_gerr_code(&r, 400);
    let r = g(&server, "PUT", &tag_path(&id, &"t".repeat(255))).send().await;
    assert_no_content(&r);
    let missing = new_id();
    let r = g(&server, "PUT", &tag_path(&missing, "alpha")).send().await;
    assert_gerr_code(&r, 404);
    // Tags work in any status (here: active, deactivated).
    upload_ok(&server, &id, b"x").await;
    let r = g(&server, "POST", &format!("/v2/images/{id}/actions/deactivate")).send().await;
    assert_no_content(&r);
    let r = g(&server, "PUT", &tag_path(&id, "late")).send().await;
    assert_no_content(&r);
    assert!(tags(&show(&server, &id).await).contains(&"late".to_string()));
}

// §18 #45, §9: DELETE of an absent tag → 404; of an existing one → 204.
#[tokio::test]
async fn delete_tag() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"tags": ["a", "b"]})).await["id"].as_str().unwrap().to_string();
    let r = g(&server, "DELETE", &tag_path(&id, "nope")).send().await;
    assert_gerr_code(&r, 404);
    let r = g(&server, "DELETE", &tag_path(&id, "a")).send().await;
    assert_no_content(&r);
    assert_eq!(show(&server, &id).await["tags"], json!(["b"]));
    let r = g(&server, "DELETE", &tag_path(&id, "a")).send().await;
    assert_gerr_code(&r, 404);
    let r = g(&server, "DELETE", &tag_path(&new_id(), "b")).send().await;
    assert_gerr_code(&r, 404);
}

// §9, §10: tag changes by a non-owner: 403 if visible, 404 if not.
#[tokio::test]
async fn tag_permissions() {
    let env = Env::new();
    let server = env.start();
    let community =
        create(&server, json!({"visibility": "community", "tags": ["x"]})).await["id"].as_str().unwrap().to_string();
    let private =
        create(&server, json!({"visibility": "private", "tags": ["x"]})).await["id"].as_str().unwrap().to_string();
    let r = g(&server, "PUT", &tag_path(&community, "y")).token(TOK_B).send().await;
    assert_gerr(&r, 403, &format!("Not allowed to update tags for image {community}."));
    let r = g(&server, "DELETE", &tag_path(&community, "x")).token(TOK_B).send().await;
    // G:image_tags.py says "delete" here; the spec only says "403 as above" (§9).
    assert_gerr_has(&r, 403, &format!("tags for image {community}."));
    let r = g(&server, "PUT", &tag_path(&private, "y")).token(TOK_B).send().await;
    assert_gerr_code(&r, 404);
    let r = g(&server, "DELETE", &tag_path(&private, "x")).token(TOK_B).send().await;
    assert_gerr_code(&r, 404);
    let r = g(&server, "PUT", &tag_path(&private, "y")).token(TOK_A_READER).send().await;
    assert_gerr_code(&r, 403);
    assert_eq!(show(&server, &community).await["tags"], json!(["x"]));
    assert_eq!(show(&server, &private).await["tags"], json!(["x"]));
    let r = g(&server, "PUT", &tag_path(&private, "y")).token(TOK_ADMIN).send().await;
    assert_no_content(&r);
}

// §9, §11: PUT tag over image_tag_quota → 413; re-adding an existing tag at the limit is fine.
#[tokio::test]
async fn tag_quota() {
    let env = Env::new();
    let server =
        env.start_with(&ServerOpts { extra_args: vec!["--image-tag-quota".into(), "2".into()], ..Default::default() });
    let id = create(&server, json!({"tags": ["a", "b"]})).await["id"].as_str().unwrap().to_string();
    let r = g(&server, "PUT", &tag_path(&id, "c")).send().await;
    assert_gerr_code(&r, 413);
    let r = g(&server, "PUT", &tag_path(&id, "a")).send().await;
    assert_no_content(&r);
    assert_eq!(tags(&show(&server, &id).await), vec!["a", "b"]);
}
