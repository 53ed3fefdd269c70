//! Glance v2: create, show and delete (glance-v2 §4, §5, §7, §10; checklist §18 #6–#17, #29,
//! #30, and the non-member half of #60).

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

// §18 #6, #7, §4.1, §5 item 7: the defaults of `POST {}`, the absolute Location and the
// relative self/file/schema paths.
#[tokio::test]
async fn create_empty_defaults() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "POST", "/v2/images").json(&json!({})).send().await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.content_type(), Some("application/json"));
    let v = r.json();
    let id = v["id"].as_str().expect("id").to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "server uuid4: {id}");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut want: Vec<&str> = BASE_KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want, "exactly the base keys: {v}");
    let expected = json!({
        "name": null, "disk_format": null, "container_format": null,
        "visibility": "shared", "size": null, "virtual_size": null, "status": "queued",
        "checksum": null, "protected": false, "min_ram": 0, "min_disk": 0, "owner": PROJ_A,
        "os_hidden": false, "os_hash_algo": null, "os_hash_value": null, "id": id,
        "created_at": v["created_at"], "updated_at": v["updated_at"], "tags": [],
        "self": format!("/v2/images/{id}"), "file": format!("/v2/images/{id}/file"),
        "schema": "/v2/schemas/image",
    });
    assert_eq!(v, expected);
    assert!(is_glance_time(&v["created_at"]), "created_at format {}", v["created_at"]);
    assert_eq!(v["created_at"], v["updated_at"], "a new image has updated_at == created_at");
    assert_eq!(r.header_all("location"), vec![format!("{}/v2/images/{id}", server.image_base)]);
    // The import methods on offer, as Glance sends them with every creation (openstacksdk's
    // `--import` reads them); no store ids with one store.
    assert_eq!(r.header_all("openstack-image-import-methods"), vec!["glance-direct,web-download,copy-image"]);
    assert!(r.header("openstack-image-store-ids").is_none());
    // §18 #16: GET shows the same image.
    let r = g(&server, "GET", &img_path(&id)).send().await;
    assert_json(&r, 200, &expected);
}

// §18 #16, §4.1: every base key is present (nulls included); extra and custom properties
// appear at top level; all create-writable attributes are stored.
#[tokio::test]
async fn create_full_and_show() {
    let env = Env::new();
    let server = env.start();
    let id = new_id();
    let body = json!({
        "id": id, "name": "cirros", "disk_format": "qcow2", "container_format": "bare",
        "visibility": "private", "protected": true, "os_hidden": true, "min_disk": 2, "min_ram": 512,
        "tags": ["t1", "t2"], "foo": "bar", "os_distro": "cirros", "description": "",
        "kernel_id": "11111111-2222-3333-4444-555555555555",
    });
    let v = create(&server, body).await;
    let r = g(&server, "GET", &img_path(&id)).send().await;
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s, v, "GET equals the create response");
    for k in BASE_KEYS {
        assert!(s.get(*k).is_some(), "base key {k} present in {s}");
    }
    assert_eq!(s["id"], json!(id));
    assert_eq!(s["name"], json!("cirros"));
    assert_eq!(s["disk_format"], json!("qcow2"));
    assert_eq!(s["container_format"], json!("bare"));
    assert_eq!(s["visibility"], json!("private"));
    assert_eq!(s["protected"], json!(true));
    assert_eq!(s["os_hidden"], json!(true));
    assert_eq!(s["min_disk"], json!(2));
    assert_eq!(s["min_ram"], json!(512));
    assert_eq!(tags(&s), vec!["t1", "t2"]);
    assert_eq!(s["foo"], json!("bar"));
    assert_eq!(s["os_distro"], json!("cirros"));
    assert_eq!(s["description"], json!(""));
    assert_eq!(s["kernel_id"], json!("11111111-2222-3333-4444-555555555555"));
    assert_eq!(s["size"], Value::Null);
    assert_eq!(s["checksum"], Value::Null);
    assert_eq!(s["os_hash_algo"], Value::Null);
    assert_eq!(s["os_hash_value"], Value::Null);
    assert_eq!(s["virtual_size"], Value::Null);
    assert_eq!(s.as_object().unwrap().len(), BASE_KEYS.len() + 4, "base keys + 4 properties: {s}");
}

// §18 #8, §5 item 1: schema failures → 400.
#[tokio::test]
async fn create_schema_failures() {
    let env = Env::new();
    let server = env.start();
    let long = "n".repeat(256);
    for body in [
        json!({"disk_format": "wrong"}),
        json!({"container_format": "wrong"}),
        json!({"name": long}),
        json!({"protected": "yes"}),
        json!({"os_hidden": "true"}),
        json!({"min_ram": "1"}),
        json!({"min_disk": 1.5}),
        json!({"visibility": "everyone"}),
        json!({"tags": [1]}),
        json!({"tags": "a"}),
        json!({"tags": ["x".repeat(256)]}),
    ] {
        let r = g(&server, "POST", "/v2/images").json(&body).send().await;
        assert_gerr_code(&r, 400);
        assert!(
            explanation(&r).starts_with("Provided object does not match schema 'image': "),
            "{body}: jsonschema text: {}",
            r.text()
        );
    }
    // §5 item 5: negative min_disk / min_ram → 400.
    for body in [json!({"min_ram": -1}), json!({"min_disk": -1})] {
        let r = g(&server, "POST", "/v2/images").json(&body).send().await;
        assert_gerr_code(&r, 400);
    }
    // Nothing was created.
    let l = list_as(&server, TOK_ADMIN, "/v2/images").await;
    assert_eq!(l["images"], json!([]));
}

// §18 #9, §4.2, §5 item 2: extra values must be strings; keys ≤ 255 characters.
#[tokio::test]
async fn create_extra_property_rules() {
    let env = Env::new();
    let server = env.start();
    for value in [json!(1), json!(true), Value::Null, json!({"a": "b"}), json!(["a"]), json!(1.5)] {
        let r = g(&server, "POST", "/v2/images").json(&json!({"foo": value})).send().await;
        assert_gerr_code(&r, 400);
    }
    let r = g(&server, "POST", "/v2/images").json(&json!({ "k".repeat(256): "v" })).send().await;
    assert_gerr(&r, 400, "Custom property should not be greater than 255 characters.");
    let v = create(&server, json!({ "k".repeat(255): "v" })).await;
    assert_eq!(v["k".repeat(255).as_str()], json!("v"));
}

// §18 #10, §4.2: read-only and reserved keys on create → 403.
#[tokio::test]
async fn create_forbidden_keys() {
    let env = Env::new();
    let server = env.start();
    let cases: Vec<(Value, String)> = vec![
        (json!({"self": "/x"}), "Attribute 'self' is read-only.".into()),
        (json!({"file": "/x"}), "Attribute 'file' is read-only.".into()),
        (json!({"schema": "/x"}), "Attribute 'schema' is read-only.".into()),
        (json!({"direct_url": "x"}), "Attribute 'direct_url' is read-only.".into()),
        (json!({"stores": "x"}), "Attribute 'stores' is read-only.".into()),
        (json!({"status": "active"}), "Attribute 'status' is read-only.".into()),
        (json!({"size": 5}), "Attribute 'size' is read-only.".into()),
        (json!({"virtual_size": 5}), "Attribute 'virtual_size' is read-only.".into()),
        (json!({"checksum": "abc"}), "Attribute 'checksum' is read-only.".into()),
        (json!({"created_at": "2020-01-01T00:00:00Z"}), "Attribute 'created_at' is read-only.".into()),
        (json!({"updated_at": "2020-01-01T00:00:00Z"}), "Attribute 'updated_at' is read-only.".into()),
        (json!({"os_glance_foo": "x"}), "Attribute 'os_glance_foo' is reserved.".into()),
        (json!({"location": "x"}), "Attribute 'location' is reserved.".into()),
        (json!({"locations": "x"}), "Attribute 'locations' is reserved.".into()),
        (json!({"deleted": "x"}), "Attribute 'deleted' is reserved.".into()),
        (json!({"deleted_at": "x"}), "Attribute 'deleted_at' is reserved.".into()),
    ];
    for (body, text) in &cases {
        let r = g(&server, "POST", "/v2/images").json(body).send().await;
        assert_eq!(r.status, 403, "{body}: {}", r.text());
        assert_gerr_has(&r, 403, text);
    }
    let l = list_as(&server, TOK_ADMIN, "/v2/images").await;
    assert_eq!(l["images"], json!([]), "nothing created");
}

// §18 #11, §5 item 6, §7: explicit UUID id; non-UUID → 400; a used id, even deleted → 409.
#[tokio::test]
async fn create_with_id() {
    let env = Env::new();
    let server = env.start();
    let id = new_id();
    let v = create(&server, json!({"id": id})).await;
    assert_eq!(v["id"], json!(id));
    let r = g(&server, "POST", "/v2/images").json(&json!({"id": "not-a-uuid"})).send().await;
    assert_gerr_code(&r, 400);
    let r = g(&server, "POST", "/v2/images").json(&json!({"id": id})).send().await;
    assert_gerr(&r, 409, &format!("Image ID {id} already exists!"));
    // Another project reusing the id is refused too.
    let r = g(&server, "POST", "/v2/images").token(TOK_B).json(&json!({"id": id})).send().await;
    assert_gerr(&r, 409, &format!("Image ID {id} already exists!"));
    let r = g(&server, "DELETE", &img_path(&id)).send().await;
    assert_no_content(&r);
    let r = g(&server, "POST", "/v2/images").json(&json!({"id": id})).send().await;
    assert_gerr(&r, 409, &format!("Image ID {id} already exists!"));
}

// §18 #12, §5 item 4: public needs admin; community is open to members.
#[tokio::test]
async fn create_visibility_policy() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "POST", "/v2/images").json(&json!({"visibility": "public"})).send().await;
    assert_gerr_code(&r, 403);
    let v = create(&server, json!({"visibility": "community"})).await;
    assert_eq!(v["visibility"], json!("community"));
    let v = create_as(&server, TOK_ADMIN, json!({"visibility": "public"})).await;
    assert_eq!(v["visibility"], json!("public"));
    for vis in ["private", "shared"] {
        let v = create(&server, json!({ "visibility": vis })).await;
        assert_eq!(v["visibility"], json!(vis));
    }
    let l = list_as(&server, TOK_ADMIN, "/v2/images?visibility=all").await;
    assert_eq!(l["images"].as_array().unwrap().len(), 4, "the 403 created nothing");
}

// §18 #13, §5 item 3: owner ≠ own project → 403 for a member; an admin may set any owner.
#[tokio::test]
async fn create_owner_policy() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "POST", "/v2/images").json(&json!({"owner": PROJ_B})).send().await;
    assert_gerr_has(&r, 403, &format!("You are not permitted to create images owned by '{PROJ_B}'"));
    let v = create(&server, json!({"owner": PROJ_A})).await;
    assert_eq!(v["owner"], json!(PROJ_A), "own project is fine");
    let owner = "0123456789abcdef0123456789abcdef";
    let v = create_as(&server, TOK_ADMIN, json!({ "owner": owner })).await;
    assert_eq!(v["owner"], json!(owner));
    let v = create_as(&server, TOK_ADMIN, json!({})).await;
    assert_eq!(v["owner"], json!(PROJ_ADMIN));
}

// §18 #14, §11: 129 extra properties or 129 tags → 413 with the default quotas (128).
#[tokio::test]
async fn create_default_quotas() {
    let env = Env::new();
    let server = env.start();
    let mut body = serde_json::Map::new();
    for i in 0..129 {
        body.insert(format!("p{i}"), json!(format!("v{i}")));
    }
    let r = g(&server, "POST", "/v2/images").json(&Value::Object(body.clone())).send().await;
    assert_gerr(
        &r,
        413,
        "The limit has been exceeded on the number of allowed image properties. Attempted: 129, Maximum: 128",
    );
    body.remove("p128");
    let v = create(&server, Value::Object(body)).await;
    assert_eq!(v["p127"], json!("v127"));

    let t: Vec<String> = (0..129).map(|i| format!("t{i}")).collect();
    let r = g(&server, "POST", "/v2/images").json(&json!({ "tags": t })).send().await;
    assert_gerr(
        &r,
        413,
        "The limit has been exceeded on the number of allowed image tags. Attempted: 129, Maximum: 128",
    );
    let v = create(&server, json!({ "tags": t[..128] })).await;
    assert_eq!(v["tags"].as_array().unwrap().len(), 128);
}

// §11: --image-property-quota / --image-tag-quota are honoured on create.
#[tokio::test]
async fn create_configured_quotas() {
    let env = Env::new();
    let server = env.start_with(&ServerOpts {
        extra_args: vec!["--image-property-quota".into(), "2".into(), "--image-tag-quota".into(), "1".into()],
        ..Default::default()
    });
    let r = g(&server, "POST", "/v2/images").json(&json!({"a": "1", "b": "2", "c": "3"})).send().await;
    assert_gerr(
        &r,
        413,
        "The limit has been exceeded on the number of allowed image properties. Attempted: 3, Maximum: 2",
    );
    let r = g(&server, "POST", "/v2/images").json(&json!({"tags": ["x", "y"]})).send().await;
    assert_gerr(&r, 413, "The limit has been exceeded on the number of allowed image tags. Attempted: 2, Maximum: 1");
    create(&server, json!({"a": "1", "b": "2", "tags": ["x"]})).await;
}

// §18 #15, §4.2: custom schema properties are validated (kernel_id/ramdisk_id UUID pattern,
// cinder_encryption_key_deletion_policy enum).
#[tokio::test]
async fn create_custom_property_validation() {
    let env = Env::new();
    let server = env.start();
    for body in [
        json!({"kernel_id": "not-a-uuid"}),
        json!({"ramdisk_id": "nope"}),
        json!({"cinder_encryption_key_deletion_policy": "sometimes"}),
        json!({"os_distro": 7}),
    ] {
        let r = g(&server, "POST", "/v2/images").json(&body).send().await;
        assert_gerr_code(&r, 400);
    }
    let v = create(
        &server,
        json!({"kernel_id": "11111111-2222-3333-4444-555555555555", "cinder_encryption_key_deletion_policy": "do_not_delete"}),
    )
    .await;
    assert_eq!(v["cinder_encryption_key_deletion_policy"], json!("do_not_delete"));
}

// §18 #17, #60 (non-member half), §10: a nonexistent, deleted or invisible image → 404, never
// 403. (Image members are not implemented, so the member half of #60 is not tested.)
#[tokio::test]
async fn show_404s() {
    let env = Env::new();
    let server = env.start();
    let missing = new_id();
    let r = g(&server, "GET", &img_path(&missing)).send().await;
    assert_gerr(&r, 404, &format!("No image found with ID {missing}"));
    let private_b =
        create_as(&server, TOK_B, json!({"visibility": "private"})).await["id"].as_str().unwrap().to_string();
    let shared_b = create_as(&server, TOK_B, json!({})).await["id"].as_str().unwrap().to_string();
    for id in [&private_b, &shared_b] {
        let r = g(&server, "GET", &img_path(id)).send().await;
        assert_gerr(&r, 404, &format!("No image found with ID {id}"));
        let r = g(&server, "GET", &img_path(id)).token(TOK_B).send().await;
        assert_eq!(r.status, 200, "owner sees it");
        let r = g(&server, "GET", &img_path(id)).token(TOK_ADMIN).send().await;
        assert_eq!(r.status, 200, "admin sees it");
    }
    // Public and community images of another project are visible.
    let comm_b =
        create_as(&server, TOK_B, json!({"visibility": "community"})).await["id"].as_str().unwrap().to_string();
    let r = g(&server, "GET", &img_path(&comm_b)).send().await;
    assert_eq!(r.status, 200);
    let pub_adm =
        create_as(&server, TOK_ADMIN, json!({"visibility": "public"})).await["id"].as_str().unwrap().to_string();
    let r = g(&server, "GET", &img_path(&pub_adm)).send().await;
    assert_eq!(r.status, 200);
    // Deleted → 404.
    let r = g(&server, "DELETE", &img_path(&private_b)).token(TOK_B).send().await;
    assert_no_content(&r);
    for tok in [TOK_B, TOK_ADMIN] {
        let r = g(&server, "GET", &img_path(&private_b)).token(tok).send().await;
        assert_gerr(&r, 404, &format!("No image found with ID {private_b}"));
    }
}

// §18 #29, §7: DELETE → 204; then GET → 404, DELETE → 404, and absent from the list.
#[tokio::test]
async fn delete_image() {
    let env = Env::new();
    let server = env.start();
    let id = active_raw(&server, b"some data").await;
    let keep = create_raw(&server).await;
    let r = g(&server, "DELETE", &img_path(&id)).send().await;
    assert_no_content(&r);
    let r = g(&server, "GET", &img_path(&id)).send().await;
    assert_gerr(&r, 404, &format!("No image found with ID {id}"));
    let r = g(&server, "DELETE", &img_path(&id)).send().await;
    assert_gerr_code(&r, 404);
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_gerr_code(&r, 404);
    for q in ["/v2/images", "/v2/images?visibility=all", "/v2/images?status=deleted"] {
        let l = list_as(&server, TOK_ADMIN, q).await;
        assert!(!ids(&l).contains(&id), "{q} lists the deleted image");
    }
    assert_eq!(ids(&list_as(&server, TOK_A, "/v2/images").await), vec![keep.clone()]);
    // §7: allowed from queued too.
    let r = g(&server, "DELETE", &img_path(&keep)).send().await;
    assert_no_content(&r);
}

// §18 #30, §7: a protected image cannot be deleted until `replace /protected false`.
#[tokio::test]
async fn delete_protected() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"protected": true})).await["id"].as_str().unwrap().to_string();
    let r = g(&server, "DELETE", &img_path(&id)).send().await;
    assert_gerr(&r, 403, &format!("Image {id} is protected and cannot be deleted."));
    // Even an admin.
    let r = g(&server, "DELETE", &img_path(&id)).token(TOK_ADMIN).send().await;
    assert_gerr(&r, 403, &format!("Image {id} is protected and cannot be deleted."));
    assert_eq!(show(&server, &id).await["status"], json!("queued"));
    let r = g(&server, "PATCH", &img_path(&id))
        .patch(&json!([{"op": "replace", "path": "/protected", "value": false}]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = g(&server, "DELETE", &img_path(&id)).send().await;
    assert_no_content(&r);
}

// §7, §10: DELETE by a non-owner: 403 if visible, 404 if not; an admin may delete.
#[tokio::test]
async fn delete_permissions() {
    let env = Env::new();
    let server = env.start();
    let community = create(&server, json!({"visibility": "community"})).await["id"].as_str().unwrap().to_string();
    let private = create(&server, json!({"visibility": "private"})).await["id"].as_str().unwrap().to_string();
    let r = g(&server, "DELETE", &img_path(&community)).token(TOK_B).send().await;
    assert_gerr_code(&r, 403);
    let r = g(&server, "DELETE", &img_path(&private)).token(TOK_B).send().await;
    assert_gerr(&r, 404, &format!("No image found with ID {private}"));
    // A reader of the owning project may not delete (mutations need member).
    let r = g(&server, "DELETE", &img_path(&private)).token(TOK_A_READER).send().await;
    assert_gerr_code(&r, 403);
    assert_eq!(show(&server, &private).await["status"], json!("queued"));
    let r = g(&server, "DELETE", &img_path(&private)).token(TOK_ADMIN).send().await;
    assert_no_content(&r);
    let r = g(&server, "DELETE", &img_path(&community)).send().await;
    assert_no_content(&r);
}

// A null `kernel_id` or `ramdisk_id` (schema properties that allow null) shows as null; only
// properties outside the schema show a stored null as "".
#[tokio::test]
async fn null_schema_properties_show_as_null() {
    let env = Env::new();
    let server = env.start();
    let v = create(&server, json!({"name": "ami", "kernel_id": null, "ramdisk_id": null})).await;
    assert_eq!((v["kernel_id"].clone(), v["ramdisk_id"].clone()), (Value::Null, Value::Null), "{v}");
    let id = v["id"].as_str().unwrap();
    let shown = show(&server, id).await;
    assert_eq!((shown["kernel_id"].clone(), shown["ramdisk_id"].clone()), (Value::Null, Value::Null), "{shown}");
}
