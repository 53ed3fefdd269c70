//! Glance v2: PATCH /v2/images/{id} (glance-v2 §6; checklist §18 #18–#28).

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

const ACCEPT_PATCH: &str = "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch";

async fn patch(server: &Server, id: &str, ops: Value) -> Resp {
    g(server, "PATCH", &img_path(id)).patch(&ops).send().await
}

/// Patches and asserts 200 with a body equal to a following GET; returns the image.
async fn patch_ok(server: &Server, id: &str, ops: Value) -> Value {
    let r = patch(server, id, ops.clone()).await;
    assert_eq!(r.status, 200, "PATCH {ops}: {}", r.text());
    assert_eq!(r.content_type(), Some("application/json"));
    let v = r.json();
    assert_eq!(v, show(server, id).await, "PATCH response equals GET");
    v
}

// §18 #18, §6: a missing or foreign Content-Type → 415 with Accept-Patch; parameters ignored.
#[tokio::test]
async fn patch_content_type() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let ops = json!([{"op": "replace", "path": "/name", "value": "x"}]);
    let body = serde_json::to_vec(&ops).unwrap();
    for ct in [
        Some("application/json"),
        Some("application/json-patch+json"),
        Some("application/openstack-images-v2.2-json-patch"),
        Some("text/plain"),
        None,
    ] {
        let mut c = g(&server, "PATCH", &img_path(&id)).body(body.clone());
        if let Some(ct) = ct {
            c = c.content_type(ct);
        }
        let r = c.send().await;
        assert_eq!(r.status, 415, "Content-Type {ct:?}: {}", r.text());
        assert_eq!(r.header_all("accept-patch"), vec![ACCEPT_PATCH], "Accept-Patch for {ct:?}");
        let v = r.json();
        assert_eq!(v["code"], json!("415 Unsupported Media Type"));
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains(&format!("Image PATCH expects Content-Type one of: {ACCEPT_PATCH}")),
            "detail in {v}"
        );
    }
    assert_eq!(show(&server, &id).await["name"], json!("raw"), "nothing applied");
    let r = g(&server, "PATCH", &img_path(&id))
        .content_type("application/openstack-images-v2.1-json-patch; charset=UTF-8")
        .body(body)
        .send()
        .await;
    assert_eq!(r.status, 200, "media-type parameters are ignored: {}", r.text());
    assert_eq!(r.json()["name"], json!("x"));
}

// §18 #19, §6 table: v2.1 add is an upsert; v2.0 add on an existing property → 409.
#[tokio::test]
async fn add_semantics_v21_and_v20() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"name": "old", "foo": "1"})).await["id"].as_str().unwrap().to_string();
    // The SDK's `image set --name x --property k=v` patch (§6).
    let v = patch_ok(
        &server,
        &id,
        json!([{"op": "add", "path": "/foo", "value": "2"}, {"op": "add", "path": "/name", "value": "new"}, {"op": "add", "path": "/bar", "value": "b"}]),
    )
    .await;
    assert_eq!(v["name"], json!("new"));
    assert_eq!(v["foo"], json!("2"));
    assert_eq!(v["bar"], json!("b"));

    // Draft 4 (tempest): the op is the member name, its value the path.
    let r = g(&server, "PATCH", &img_path(&id)).patch20(&json!([{"add": "/name", "value": "x"}])).send().await;
    assert_gerr(&r, 409, "Property name already present.");
    let r = g(&server, "PATCH", &img_path(&id)).patch20(&json!([{"add": "/foo", "value": "x"}])).send().await;
    assert_gerr(&r, 409, "Property foo already present.");
    let r = g(&server, "PATCH", &img_path(&id))
        .patch20(&json!([{"add": "/baz", "value": "z"}, {"replace": "/name", "value": "v20"}, {"remove": "/bar"}]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["baz"], json!("z"));
    assert_eq!(v["name"], json!("v20"));
    assert!(v.get("bar").is_none(), "bar removed: {v}");
    // Zero or several op members → 400.
    for ops in [json!([{"value": "x"}]), json!([{"add": "/a", "replace": "/b", "value": "x"}])] {
        let r = g(&server, "PATCH", &img_path(&id)).patch20(&ops).send().await;
        assert_gerr_code(&r, 400);
    }
}

// §18 #20, §6 table: replace/remove of an absent property → 409; remove of a base attribute → 403.
#[tokio::test]
async fn replace_and_remove() {
    let env = Env::new();
    let server = env.start();
    let id =
        create(&server, json!({"name": "n", "foo": "1", "os_distro": "d"})).await["id"].as_str().unwrap().to_string();
    let r = patch(&server, &id, json!([{"op": "replace", "path": "/missing_prop", "value": "x"}])).await;
    assert_gerr(&r, 409, "Property missing_prop does not exist.");
    let r = patch(&server, &id, json!([{"op": "remove", "path": "/missing_prop"}])).await;
    assert_gerr(&r, 409, "Property missing_prop does not exist.");
    for attr in [
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
    ] {
        let r = patch(&server, &id, json!([{"op": "remove", "path": format!("/{attr}")}])).await;
        assert_gerr(&r, 403, &format!("Property {attr} may not be removed."));
    }
    let v = patch_ok(
        &server,
        &id,
        json!([{"op": "replace", "path": "/foo", "value": "2"}, {"op": "remove", "path": "/os_distro"}, {"op": "replace", "path": "/name", "value": null}]),
    )
    .await;
    assert_eq!(v["foo"], json!("2"));
    assert!(v.get("os_distro").is_none(), "os_distro removed: {v}");
    assert_eq!(v["name"], Value::Null);
    let v = patch_ok(&server, &id, json!([{"op": "remove", "path": "/foo"}])).await;
    assert!(v.get("foo").is_none());
    // An empty patch → 200 with the image unchanged, but for `updated_at`: Glance saves the
    // image anyway, and its database layer sets `updated_at` on every save (G:db/sqlalchemy/api.py
    // `_image_update`). Compared without it, which moves on across a second boundary.
    let mut before = show(&server, &id).await;
    let mut v = patch_ok(&server, &id, json!([])).await;
    let (was, now) = (before["updated_at"].take(), v["updated_at"].take());
    assert!(now.as_str().unwrap() >= was.as_str().unwrap(), "{was} → {now}");
    assert_eq!(v, before);
}

// §18 #21, §4.2: read-only and reserved roots → 403, for remove too.
#[tokio::test]
async fn readonly_and_reserved_paths() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    for attr in [
        "status",
        "id",
        "checksum",
        "size",
        "virtual_size",
        "os_hash_value",
        "os_hash_algo",
        "created_at",
        "updated_at",
        "self",
        "file",
        "schema",
        "direct_url",
    ] {
        for op in ["add", "replace", "remove"] {
            let mut o = json!({"op": op, "path": format!("/{attr}")});
            if op != "remove" {
                o["value"] = json!("x");
            }
            let r = patch(&server, &id, json!([o])).await;
            assert_gerr(&r, 403, &format!("Attribute '{attr}' is read-only."));
        }
    }
    for key in ["os_glance_x", "os_glance_import_task", "location", "deleted", "deleted_at"] {
        for op in ["add", "replace", "remove"] {
            let mut o = json!({"op": op, "path": format!("/{key}")});
            if op != "remove" {
                o["value"] = json!("x");
            }
            let r = patch(&server, &id, json!([o])).await;
            assert_gerr(&r, 403, &format!("Attribute '{key}' is reserved."));
        }
    }
    // §6: locations are invisible by default → always 403.
    let r = patch(&server, &id, json!([{"op": "replace", "path": "/locations", "value": []}])).await;
    assert_gerr(&r, 403, "It's not allowed to update locations if locations are invisible.");
    let v = show(&server, &id).await;
    assert_eq!(v["status"], json!("queued"));
}

// §18 #22, §6: malformed operations → 400.
#[tokio::test]
async fn malformed_operations() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    for op in ["move", "copy", "test", "frob"] {
        let r = patch(&server, &id, json!([{"op": op, "path": "/name", "value": "x", "from": "/foo"}])).await;
        assert_gerr_code(&r, 400);
    }
    let r = patch(&server, &id, json!([{"path": "/name", "value": "x"}])).await;
    assert_gerr_code(&r, 400);
    let r = patch(&server, &id, json!([{"op": "add", "value": "x"}])).await;
    assert_gerr_code(&r, 400);
    let r = patch(&server, &id, json!([{"op": "add", "path": "/a/b", "value": "x"}])).await;
    assert_gerr(&r, 400, "Invalid JSON pointer for this resource: '/a/b'");
    let r = patch(&server, &id, json!([{"op": "add", "path": "/tags/-", "value": "x"}])).await;
    assert_gerr(&r, 400, "Invalid JSON pointer for this resource: '/tags/-'");
    for path in ["name", "/name/", "//name", "/", "/a~2b", "/a~"] {
        let r = patch(&server, &id, json!([{"op": "add", "path": path, "value": "x"}])).await;
        assert_gerr_code(&r, 400);
    }
    for op in ["add", "replace"] {
        let r = patch(&server, &id, json!([{"op": op, "path": "/name"}])).await;
        assert_gerr(&r, 400, &format!("Operation \"{op}\" requires a member named \"value\"."));
    }
    let r = patch(&server, &id, json!({"op": "add", "path": "/name", "value": "x"})).await;
    assert_gerr(&r, 400, "Request body must be a JSON array of operation objects.");
    let r = patch(&server, &id, json!([1])).await;
    assert_gerr(&r, 400, "Operations must be JSON objects.");
    assert_eq!(show(&server, &id).await["name"], json!("raw"));
    // ~1 and ~0 escapes are decoded: `/a~1b` is the key `a/b`, `/c~0d` is `c~d`.
    let v = patch_ok(
        &server,
        &id,
        json!([{"op": "add", "path": "/a~1b", "value": "slash"}, {"op": "add", "path": "/c~0d", "value": "tilde"}]),
    )
    .await;
    assert_eq!(v["a/b"], json!("slash"));
    assert_eq!(v["c~d"], json!("tilde"));
}

// §18 #23, §6: disk_format/container_format only while queued.
#[tokio::test]
async fn formats_only_while_queued() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({})).await["id"].as_str().unwrap().to_string();
    let v = patch_ok(
        &server,
        &id,
        json!([{"op": "replace", "path": "/disk_format", "value": "qcow2"}, {"op": "replace", "path": "/container_format", "value": "bare"}]),
    )
    .await;
    assert_eq!(v["disk_format"], json!("qcow2"));
    assert_eq!(v["container_format"], json!("bare"));
    let v = patch_ok(&server, &id, json!([{"op": "replace", "path": "/disk_format", "value": "raw"}])).await;
    assert_eq!(v["disk_format"], json!("raw"));
    let r = patch(&server, &id, json!([{"op": "replace", "path": "/disk_format", "value": "bogus"}])).await;
    assert_gerr_code(&r, 400);
    upload_ok(&server, &id, b"data").await;
    for attr in ["disk_format", "container_format"] {
        let value = if attr == "disk_format" { "qcow2" } else { "ovf" };
        for op in ["replace", "add"] {
            let r = patch(&server, &id, json!([{"op": op, "path": format!("/{attr}"), "value": value}])).await;
            assert_gerr(&r, 403, &format!("Attribute {attr} can be only replaced for a queued image."));
        }
    }
    let v = show(&server, &id).await;
    assert_eq!((v["disk_format"].clone(), v["container_format"].clone()), (json!("raw"), json!("bare")));
    // Other attributes stay writable on an active image.
    let v = patch_ok(&server, &id, json!([{"op": "replace", "path": "/name", "value": "active-name"}])).await;
    assert_eq!(v["name"], json!("active-name"));
}

// §18 #24, §6: visibility=public and owner changes need admin.
#[tokio::test]
async fn visibility_and_owner_policy() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({})).await["id"].as_str().unwrap().to_string();
    let r = patch(&server, &id, json!([{"op": "replace", "path": "/visibility", "value": "public"}])).await;
    assert_gerr_code(&r, 403);
    let r = patch(&server, &id, json!([{"op": "replace", "path": "/owner", "value": PROJ_B}])).await;
    assert_gerr(&r, 403, "Owner can't be updated by non admin.");
    // §6 Rec / §20: 403 for every non-admin owner change, `add` included.
    let r = patch(&server, &id, json!([{"op": "add", "path": "/owner", "value": PROJ_B}])).await;
    assert_gerr_code(&r, 403);
    let v = show(&server, &id).await;
    assert_eq!((v["visibility"].clone(), v["owner"].clone()), (json!("shared"), json!(PROJ_A)));
    for vis in ["community", "private", "shared"] {
        let v = patch_ok(&server, &id, json!([{"op": "replace", "path": "/visibility", "value": vis}])).await;
        assert_eq!(v["visibility"], json!(vis));
    }
    let r = g(&server, "PATCH", &img_path(&id))
        .token(TOK_ADMIN)
        .patch(&json!([{"op": "replace", "path": "/owner", "value": PROJ_B}, {"op": "replace", "path": "/visibility", "value": "public"}]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["owner"], json!(PROJ_B));
    assert_eq!(r.json()["visibility"], json!("public"));
}

// §18 #25, §6, §10: replace /tags collapses duplicates; os_hidden hides from the default list.
#[tokio::test]
async fn tags_and_os_hidden() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"tags": ["old"]})).await["id"].as_str().unwrap().to_string();
    let v = patch_ok(&server, &id, json!([{"op": "replace", "path": "/tags", "value": ["a", "a", "b"]}])).await;
    assert_eq!(tags(&v), vec!["a", "b"]);
    let v = patch_ok(&server, &id, json!([{"op": "add", "path": "/tags", "value": ["c"]}])).await;
    assert_eq!(tags(&v), vec!["c"], "tags add replaces the whole set");
    assert!(ids(&list_as(&server, TOK_A, "/v2/images").await).contains(&id));
    let v = patch_ok(&server, &id, json!([{"op": "replace", "path": "/os_hidden", "value": true}])).await;
    assert_eq!(v["os_hidden"], json!(true));
    assert!(!ids(&list_as(&server, TOK_A, "/v2/images").await).contains(&id), "hidden from the default list");
    assert_eq!(ids(&list_as(&server, TOK_A, "/v2/images?os_hidden=true").await), vec![id.clone()]);
    // Still reachable directly.
    let r = g(&server, "GET", &img_path(&id)).send().await;
    assert_eq!(r.status, 200);
}

// §18 #26, §6: schema validation of values.
#[tokio::test]
async fn value_validation() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"foo": "1"})).await["id"].as_str().unwrap().to_string();
    for (op, path, value) in [
        ("add", "/bar", json!(1)),
        ("replace", "/foo", json!(true)),
        ("add", "/bar", json!({"a": "b"})),
        ("add", "/bar", Value::Null),
        ("replace", "/min_ram", json!(-1)),
        ("replace", "/min_disk", json!(-1)),
        ("replace", "/min_ram", json!("1")),
        ("replace", "/protected", json!("yes")),
        ("replace", "/os_hidden", json!(1)),
        ("replace", "/visibility", json!("bogus")),
        ("replace", "/tags", json!("x")),
        ("replace", "/tags", json!([1])),
        ("replace", "/name", json!("n".repeat(256))),
        ("add", "/kernel_id", json!("not-a-uuid")),
        ("add", "/cinder_encryption_key_deletion_policy", json!("never")),
    ] {
        let r = patch(&server, &id, json!([{"op": op, "path": path, "value": value}])).await;
        assert_eq!(r.status, 400, "{op} {path} {value}: {}", r.text());
        assert_gerr_code(&r, 400);
    }
    let v = show(&server, &id).await;
    assert_eq!(v["foo"], json!("1"));
    assert_eq!(v["min_ram"], json!(0));
    assert!(v.get("bar").is_none());
}

// §18 #27, §6: the first failing op aborts the whole patch; nothing is saved.
#[tokio::test]
async fn patch_is_atomic() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"name": "orig", "keep": "k"})).await["id"].as_str().unwrap().to_string();
    let before = show(&server, &id).await;
    let cases = [
        (
            json!([
                {"op": "add", "path": "/a", "value": "1"},
                {"op": "replace", "path": "/name", "value": "changed"},
                {"op": "remove", "path": "/keep"},
                {"op": "replace", "path": "/missing", "value": "x"},
            ]),
            409,
        ),
        (
            json!([
                {"op": "replace", "path": "/name", "value": "changed"},
                {"op": "replace", "path": "/min_ram", "value": -1},
            ]),
            400,
        ),
        (
            json!([
                {"op": "replace", "path": "/tags", "value": ["t"]},
                {"op": "replace", "path": "/status", "value": "active"},
            ]),
            403,
        ),
        (
            json!([
                {"op": "add", "path": "/a", "value": "1"},
                {"op": "add", "path": "/a/b", "value": "1"},
            ]),
            400,
        ),
    ];
    for (ops, code) in cases {
        let r = patch(&server, &id, ops.clone()).await;
        assert_eq!(r.status, code, "{ops}: {}", r.text());
        assert_eq!(show(&server, &id).await, before, "{ops} changed the image");
    }
}

// §18 #28, §10: a non-owner gets 403 on a visible image and 404 on an invisible one.
#[tokio::test]
async fn patch_by_non_owner() {
    let env = Env::new();
    let server = env.start();
    let public = create_as(&server, TOK_ADMIN, json!({"visibility": "public", "owner": PROJ_A})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let community = create(&server, json!({"visibility": "community"})).await["id"].as_str().unwrap().to_string();
    let private = create(&server, json!({"visibility": "private"})).await["id"].as_str().unwrap().to_string();
    let shared = create(&server, json!({})).await["id"].as_str().unwrap().to_string();
    let ops = json!([{"op": "replace", "path": "/name", "value": "stolen"}]);
    for id in [&public, &community] {
        let r = g(&server, "PATCH", &img_path(id)).token(TOK_B).patch(&ops).send().await;
        assert_gerr_code(&r, 403);
    }
    for id in [&private, &shared] {
        let r = g(&server, "PATCH", &img_path(id)).token(TOK_B).patch(&ops).send().await;
        assert_gerr(&r, 404, &format!("No image found with ID {id}"));
    }
    // A reader of the owning project may not modify.
    let r = g(&server, "PATCH", &img_path(&private)).token(TOK_A_READER).patch(&ops).send().await;
    assert_gerr_code(&r, 403);
    let missing = new_id();
    let r = patch(&server, &missing, ops.clone()).await;
    assert_gerr(&r, 404, &format!("No image found with ID {missing}"));
    for id in [&public, &community, &private, &shared] {
        assert_ne!(show(&server, id).await["name"], json!("stolen"));
    }
    // The owner (A, for the admin-created public image too) and an admin may.
    patch_ok(&server, &public, ops.clone()).await;
    let r = g(&server, "PATCH", &img_path(&private)).token(TOK_ADMIN).patch(&ops).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// §6, §11: quotas on save — new properties over image_property_quota and tags over
// image_tag_quota → 413; nothing saved.
#[tokio::test]
async fn patch_quotas() {
    let env = Env::new();
    let server = env.start_with(&ServerOpts {
        extra_args: vec!["--image-property-quota".into(), "2".into(), "--image-tag-quota".into(), "2".into()],
        ..Default::default()
    });
    let id = create(&server, json!({"a": "1", "b": "2"})).await["id"].as_str().unwrap().to_string();
    let r = patch(&server, &id, json!([{"op": "add", "path": "/c", "value": "3"}])).await;
    assert_gerr(
        &r,
        413,
        "The limit has been exceeded on the number of allowed image properties. Attempted: 3, Maximum: 2",
    );
    // Changing existing keys is fine at the limit.
    patch_ok(&server, &id, json!([{"op": "replace", "path": "/a", "value": "9"}])).await;
    let r = patch(&server, &id, json!([{"op": "replace", "path": "/tags", "value": ["x", "y", "z"]}])).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_gerr_code(&r, 413);
    let v = show(&server, &id).await;
    assert!(v.get("c").is_none());
    assert_eq!(v["tags"], json!([]));
    let v = patch_ok(&server, &id, json!([{"op": "replace", "path": "/tags", "value": ["x", "y", "x"]}])).await;
    assert_eq!(tags(&v), vec!["x", "y"]);
}
