//! Image members (glance-v2 §10, §18 #58, #60, #63): sharing a `shared` image with another
//! project, which sees it at once and lists it once it accepts.

use serde_json::json;

use crate::glance_helpers::*;
use crate::helpers::*;

fn ids(list: &serde_json::Value) -> Vec<String> {
    list["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

// §18 #63, #60, #58
#[tokio::test]
async fn members_share_a_shared_image_until_removed() {
    let env = Env::new();
    let server = env.start();
    let shared = create(&server, json!({"name": "s"})).await["id"].as_str().unwrap().to_owned();
    let private =
        create(&server, json!({"name": "p", "visibility": "private"})).await["id"].as_str().unwrap().to_owned();
    let members = format!("{}/members", img_path(&shared));

    // Not yet shared: another project does not see it.
    assert_gerr_code(&g(&server, "GET", &img_path(&shared)).token(TOK_B).send().await, 404);

    // #63: the owner adds project B: 200, pending.
    let added = g(&server, "POST", &members).json(&json!({"member": PROJ_B})).send().await;
    assert_eq!(added.status, 200, "{}", added.text());
    let m = added.json();
    assert_eq!(
        (m["member_id"].as_str(), m["image_id"].as_str(), m["status"].as_str()),
        (Some(PROJ_B), Some(shared.as_str()), Some("pending"))
    );
    assert_eq!(m["schema"], "/v2/schemas/member");
    // Duplicate 409; private image 403; missing member 400; a non-owner cannot add 403.
    assert_gerr_code(&g(&server, "POST", &members).json(&json!({"member": PROJ_B})).send().await, 409);
    let on_private =
        g(&server, "POST", &format!("{}/members", img_path(&private))).json(&json!({"member": PROJ_B})).send().await;
    assert_gerr(&on_private, 403, "Only shared images have members.");
    assert_gerr_code(&g(&server, "POST", &members).json(&json!({})).send().await, 400);

    // #60: a member in any status sees the image; #58: it lists it only when asked for pending.
    assert_eq!(g(&server, "GET", &img_path(&shared)).token(TOK_B).send().await.status, 200);
    let default_list = g(&server, "GET", "/v2/images").token(TOK_B).send().await.json();
    assert!(!ids(&default_list).contains(&shared));
    let pending =
        g(&server, "GET", "/v2/images?member_status=pending&visibility=shared").token(TOK_B).send().await.json();
    assert_eq!(ids(&pending), vec![shared.clone()]);
    assert_gerr_code(&g(&server, "POST", &members).token(TOK_B).json(&json!({"member": PROJ_A})).send().await, 403);

    // Only the member answers; then the image is in its default lists, Glance's and Nova's.
    let by_owner = g(&server, "PUT", &format!("{members}/{PROJ_B}")).json(&json!({"status": "accepted"})).send().await;
    assert_gerr_code(&by_owner, 403);
    let accepted = g(&server, "PUT", &format!("{members}/{PROJ_B}"))
        .token(TOK_B)
        .json(&json!({"status": "accepted"}))
        .send()
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.json()["status"], "accepted");
    assert_gerr_code(
        &g(&server, "PUT", &format!("{members}/{PROJ_B}")).token(TOK_B).json(&json!({"status": "maybe"})).send().await,
        400,
    );
    assert!(ids(&g(&server, "GET", "/v2/images").token(TOK_B).send().await.json()).contains(&shared));
    let nova = server.get("/v2.1/images").token(TOK_B).send().await;
    assert!(nova.json()["images"].as_array().unwrap().iter().any(|i| i["id"] == json!(shared)));
    // A member reads but does not write.
    let write = g(&server, "PATCH", &img_path(&shared))
        .token(TOK_B)
        .patch(&json!([{"op": "add", "path": "/k", "value": "v"}]))
        .send()
        .await;
    assert_gerr_code(&write, 403);

    // The owner lists every member; the member sees its own entry.
    let all = g(&server, "GET", &members).send().await.json();
    assert_eq!(all["schema"], "/v2/schemas/members");
    assert_eq!(all["members"].as_array().unwrap().len(), 1);
    assert_eq!(g(&server, "GET", &format!("{members}/{PROJ_B}")).token(TOK_B).send().await.status, 200);

    // Removing the member hides the image again.
    assert_eq!(g(&server, "DELETE", &format!("{members}/{PROJ_B}")).send().await.status, 204);
    assert_gerr_code(&g(&server, "DELETE", &format!("{members}/{PROJ_B}")).send().await, 404);
    assert_gerr_code(&g(&server, "GET", &img_path(&shared)).token(TOK_B).send().await, 404);
}

#[tokio::test]
async fn member_schemas_are_served() {
    let env = Env::new();
    let server = env.start();
    let member = g(&server, "GET", "/v2/schemas/member").send().await.json();
    let members = g(&server, "GET", "/v2/schemas/members").send().await.json();
    assert_eq!(member["name"], "member");
    assert_eq!(member["properties"]["status"]["enum"], json!(["pending", "accepted", "rejected"]));
    assert_eq!(members["name"], "members");
}
