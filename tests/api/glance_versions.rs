//! Glance v2: version discovery, auth, request ids, routing and the schema endpoints
//! (glance-v2 §1, §2, §3, §17; checklist §18 #1–#5, #61).

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

fn versions_doc(image_base: &str) -> Value {
    let href = format!("{image_base}/v2/");
    let mut v = vec![
        json!({"id": "v2.15", "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]}),
        json!({"id": "v2.9", "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]}),
        json!({"id": "v2.17", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}),
    ];
    for minor in (0..=7).rev() {
        v.push(json!({"id": format!("v2.{minor}"), "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]}));
    }
    json!({ "versions": v })
}

// §18 #1, §2: GET / → 300 and GET /versions → 200, both without a token, same body.
#[tokio::test]
async fn versions_without_auth() {
    let env = Env::new();
    let server = env.start();
    let expected = versions_doc(&server.image_base);
    let r = g(&server, "GET", "/").no_token().send().await;
    assert_json(&r, 300, &expected);
    let r = g(&server, "GET", "/versions").no_token().send().await;
    assert_json(&r, 200, &expected);
    // §2: any path whose first segment is not an allowed version → 300.
    let r = g(&server, "GET", "/v3/images").no_token().send().await;
    assert_json(&r, 300, &expected);
    // Every entry has id, status and a self link ending /v2/ (tempest, keystoneauth).
    for e in expected["versions"].as_array().unwrap() {
        assert!(e["links"][0]["href"].as_str().unwrap().ends_with("/v2/"));
    }
}

// §2: allowed version prefixes (v2.0 … v2.7, v2.9, v2.15, v2.17) are rewritten to /v2.
#[tokio::test]
async fn version_prefixes_are_rewritten() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    for prefix in ["v2", "v2.0", "v2.1", "v2.7", "v2.9", "v2.15", "v2.17"] {
        let r = g(&server, "GET", &format!("/{prefix}/images/{id}")).send().await;
        assert_eq!(r.status, 200, "/{prefix}/images/{id}: {}", r.text());
        assert_eq!(r.json()["id"], json!(id));
    }
}

// §18 #2, §1: any /v2 request without a valid token → 401 (Keystone's body).
#[tokio::test]
async fn v2_requires_token() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let keystone = json!({"error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }});
    let cases: Vec<(&str, String)> = vec![
        ("GET", "/v2/images".into()),
        ("POST", "/v2/images".into()),
        ("GET", img_path(&id)),
        ("PATCH", img_path(&id)),
        ("DELETE", img_path(&id)),
        ("GET", file_path(&id)),
        ("PUT", format!("/v2/images/{id}/tags/t")),
        ("POST", format!("/v2/images/{id}/actions/deactivate")),
        ("GET", "/v2/schemas/image".into()),
        ("GET", "/v2/no/such/path".into()),
    ];
    for (m, p) in &cases {
        for tok in [None, Some("not-a-token")] {
            let mut c = g(&server, m, p).no_token();
            if let Some(t) = tok {
                c = c.token(t);
            }
            let r = c.send().await;
            assert_eq!(r.status, 401, "{m} {p} token {tok:?}: {}", r.text());
            assert_eq!(r.json(), keystone, "{m} {p}");
            assert!(r.header("www-authenticate").is_some(), "WWW-Authenticate on 401");
        }
    }
    // Nothing was changed by the refused requests.
    let v = show(&server, &id).await;
    assert_eq!(v["status"], json!("queued"));
    assert_eq!(v["tags"], json!([]));
}

// §18 #3, §1: every authenticated response has x-openstack-request-id: req-<uuid>;
// a client id is echoed, with req- prefixed when missing.
#[tokio::test]
async fn request_ids() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let mut seen = vec![];
    for (m, p) in [
        ("GET", "/v2/images".to_string()),
        ("GET", img_path(&id)),
        ("GET", img_path(&new_id())), // 404
        ("PUT", img_path(&id)),       // 405
        ("GET", "/v2/schemas/image".to_string()),
        ("GET", file_path(&id)), // 204
    ] {
        let r = g(&server, m, &p).send().await;
        let all = r.header_all("x-openstack-request-id");
        assert_eq!(all.len(), 1, "{m} {p} ({}): exactly one request id: {:?}", r.status, r.headers);
        assert!(is_request_id(all[0]), "{m} {p}: request id format {}", all[0]);
        seen.push(all[0].to_string());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "a fresh id per request");

    let mine = new_id();
    let r = g(&server, "GET", "/v2/images").header("X-Openstack-Request-ID", &mine).send().await;
    assert_eq!(r.header_all("x-openstack-request-id"), vec![format!("req-{mine}")]);
    let r =
        g(&server, "GET", &img_path(&new_id())).header("X-Openstack-Request-ID", &format!("req-{mine}")).send().await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header_all("x-openstack-request-id"), vec![format!("req-{mine}")]);
}

// §18 #4, §1, §3: unknown path → 404; a method outside the table → 405 with Allow.
#[tokio::test]
async fn routing_404_405() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    for p in [
        "/v2/nothing".to_string(),
        "/v2/images/x/y".to_string(),
        format!("/v2/images/{id}/locations"),
        "/v2/tasks/x/y".to_string(),
        "/v2/metadefs/nothing".to_string(),
        "/v2/schemas/nothing".to_string(),
        format!("/v2/images/{id}/actions/explode"),
    ] {
        let r = g(&server, "GET", &p).send().await;
        assert_gerr(&r, 404, "The resource could not be found.");
    }
    // §3 "Allow on 405" column; the message is WebOb's HTTPMethodNotAllowed template
    // (§12: "The method GET is not allowed for this resource. <br /><br />\n").
    let cases: Vec<(&str, String, &str)> = vec![
        ("PUT", "/v2/images".into(), "GET, POST"),
        ("DELETE", "/v2/images".into(), "GET, POST"),
        ("PATCH", "/v2/images".into(), "GET, POST"),
        ("PUT", img_path(&id), "GET, PATCH, DELETE"),
        ("POST", img_path(&id), "GET, PATCH, DELETE"),
        ("POST", file_path(&id), "GET, PUT"),
        ("DELETE", file_path(&id), "GET, PUT"),
        ("GET", format!("/v2/images/{id}/tags/t"), "PUT, DELETE"),
        ("POST", format!("/v2/images/{id}/tags/t"), "PUT, DELETE"),
        ("GET", format!("/v2/images/{id}/actions/deactivate"), "POST"),
        ("PUT", "/v2/metadefs/namespaces".into(), "GET, POST"),
        ("PUT", "/v2/metadefs/namespaces/n/tags".into(), "GET, POST, DELETE"),
        ("PATCH", "/v2/metadefs/namespaces/n/tags/t".into(), "GET, POST, PUT, DELETE"),
        ("GET", "/v2/metadefs/namespaces/n/resource_types/r".into(), "DELETE"),
        ("PUT", format!("/v2/images/{id}/actions/reactivate"), "POST"),
        ("POST", "/v2/schemas/image".into(), "GET"),
        ("DELETE", "/v2/schemas/images".into(), "GET"),
        ("GET", format!("/v2/images/{id}/import"), "POST"),
        ("GET", format!("/v2/images/{id}/stage"), "PUT"),
        ("POST", format!("/v2/images/{id}/tasks"), "GET"),
        ("POST", "/v2/info/import".into(), "GET"),
        ("PUT", "/v2/tasks".into(), "GET, POST"),
        ("PUT", "/v2/tasks/x".into(), "GET, DELETE"),
        ("PUT", "/v2/schemas/task".into(), "GET"),
        ("PUT", "/v2/schemas/tasks".into(), "GET"),
    ];
    let mut bodies = vec![];
    for (m, p, allow) in &cases {
        let r = g(&server, m, p).send().await;
        assert_eq!(r.status, 405, "{m} {p}: {}", r.text());
        assert_eq!(r.header_all("allow"), vec![*allow], "{m} {p}: Allow");
        let want = json!({
            "message": format!("The method {m} is not allowed for this resource. <br /><br />\n"),
            "code": "405 Method Not Allowed",
            "title": "Method Not Allowed",
        });
        if r.json() != want {
            bodies.push(format!("{m} {p}: got {}, want {want}", r.text()));
        }
    }
    assert!(bodies.is_empty(), "405 bodies:\n{}", bodies.join("\n"));
}

// §18 #4, §1: a method outside GET/HEAD/POST/PUT/DELETE/PATCH → 501.
#[tokio::test]
async fn unknown_method_501() {
    let env = Env::new();
    let server = env.start();
    // A method glance does not implement at all → 501 (G:common/wsgi.py `_dispatch` returns a
    // bare `webob.exc.HTTPNotImplemented()`, whose template (WebOb 1.8.11, run locally) gives
    // "\nThe request method FROB is not implemented for this server. <br /><br />\n").
    let r = g(&server, "FROB", "/v2/images").send().await;
    assert_eq!(r.status, 501, "{}", r.text());
    assert_eq!(r.content_type(), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({
            "message": "\nThe request method FROB is not implemented for this server. <br /><br />\n",
            "code": "501 Not Implemented",
            "title": "Not Implemented",
        })
    );
}

// §18 #4, §1: a body on a body_reject route → 400 `A body is not expected with this request.`
#[tokio::test]
async fn body_reject_routes() {
    let env = Env::new();
    let server = env.start();
    let id = active_raw(&server, b"abc").await;
    let cases: Vec<(&str, String)> = vec![
        ("GET", img_path(&id)),
        ("DELETE", img_path(&id)),
        ("GET", file_path(&id)),
        ("PUT", format!("/v2/images/{id}/tags/t")),
        ("DELETE", format!("/v2/images/{id}/tags/t")),
        ("POST", format!("/v2/images/{id}/actions/deactivate")),
        ("POST", format!("/v2/images/{id}/actions/reactivate")),
    ];
    for (m, p) in &cases {
        let r = g(&server, m, p).json(&json!({"a": 1})).send().await;
        assert_gerr(&r, 400, "A body is not expected with this request.");
    }
    // A chunked body on a body_reject PUT/POST counts too.
    let port = image_port(&server);
    let req = format!(
        "POST /v2/images/{id}/actions/deactivate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Auth-Token: {TOK_A}\r\n\
         Accept: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    let r = raw_http(port, req.as_bytes());
    assert_gerr(&r, 400, "A body is not expected with this request.");
    // Nothing happened: still active, not deleted, no tag.
    let v = show(&server, &id).await;
    assert_eq!(v["status"], json!("active"));
    assert_eq!(v["tags"], json!([]));
}

// §18 #5, §1: GET/DELETE /v2/images/ (empty id) → 404; ids longer than 36 chars → 404; any
// other string is looked up as is (the SDK's find-by-name relies on a 404 for a name).
#[tokio::test]
async fn empty_and_long_ids() {
    let env = Env::new();
    let server = env.start();
    for m in ["GET", "DELETE"] {
        let r = g(&server, m, "/v2/images/").send().await;
        assert_eq!(r.status, 404, "{m} /v2/images/: {}", r.text());
    }
    let long = "a".repeat(37);
    for (m, p) in
        [("GET", img_path(&long)), ("DELETE", img_path(&long)), ("GET", file_path(&long)), ("PATCH", img_path(&long))]
    {
        let mut c = g(&server, m, &p);
        if m == "PATCH" {
            c = c.patch(&json!([]));
        }
        let r = c.send().await;
        assert_eq!(r.status, 404, "{m} {p}: {}", r.text());
    }
    let r = g(&server, "GET", "/v2/images/cirros").send().await;
    assert_gerr(&r, 404, "No image found with ID cirros");
}

// §18 #61, §17: the image and images schemas.
#[tokio::test]
async fn schemas() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "GET", "/v2/schemas/image").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), Some("application/json"));
    let s = r.json();
    assert_eq!(s["name"], json!("image"));
    assert_eq!(s["additionalProperties"], json!({"type": "string"}));
    assert_eq!(
        s["links"],
        json!([
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ])
    );
    let props = &s["properties"];
    // disk_format / container_format enums include null (§17) and the §4.1 values.
    let df: Vec<Value> = props["disk_format"]["enum"].as_array().expect("disk_format enum").clone();
    assert!(df.contains(&Value::Null), "disk_format enum has null: {df:?}");
    for f in ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"] {
        assert!(df.contains(&json!(f)), "disk_format enum has {f}");
    }
    let cf: Vec<Value> = props["container_format"]["enum"].as_array().expect("container_format enum").clone();
    assert!(cf.contains(&Value::Null), "container_format enum has null: {cf:?}");
    for f in ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"] {
        assert!(cf.contains(&json!(f)), "container_format enum has {f}");
    }
    // Custom properties carry is_base: false (§4.2); base ones do not.
    for k in [
        "kernel_id",
        "ramdisk_id",
        "instance_uuid",
        "architecture",
        "os_distro",
        "os_version",
        "description",
        "cinder_encryption_key_id",
        "cinder_encryption_key_deletion_policy",
    ] {
        assert_eq!(props[k]["is_base"], json!(false), "{k} is_base:false in {}", props[k]);
    }
    for k in ["id", "name", "status", "visibility", "protected", "os_hidden", "min_ram", "min_disk", "owner", "tags"] {
        assert!(props.get(k).is_some(), "schema has {k}");
        assert!(props[k].get("is_base").is_none(), "{k} is a base property");
    }
    let vis = props["visibility"]["enum"].as_array().unwrap();
    for v in ["public", "private", "shared", "community"] {
        assert!(vis.contains(&json!(v)), "visibility enum has {v}");
    }
    for k in ["status", "checksum", "size", "virtual_size", "created_at", "updated_at", "self", "file", "schema"] {
        assert_eq!(props[k]["readOnly"], json!(true), "{k} readOnly");
    }
    assert_eq!(props["name"]["maxLength"], json!(255));
    assert_eq!(props["checksum"]["maxLength"], json!(32));
    assert_eq!(
        props["id"]["pattern"],
        json!("^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$")
    );
    assert_eq!(props["cinder_encryption_key_deletion_policy"]["enum"], json!(["on_image_deletion", "do_not_delete"]));

    let r = g(&server, "GET", "/v2/schemas/images").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s2 = r.json();
    assert_eq!(s2["name"], json!("images"));
    assert_eq!(s2["properties"]["images"]["type"], json!("array"));
    assert_eq!(s2["properties"]["images"]["items"], s, "items is the image schema");
    assert_eq!(s2["properties"]["first"], json!({"type": "string"}));
    assert_eq!(s2["properties"]["next"], json!({"type": "string"}));
    assert_eq!(s2["properties"]["schema"], json!({"type": "string"}));
    assert_eq!(
        s2["links"],
        json!([
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ])
    );
}

// Glance's image schema: the `locations` items carry `validation_data` (write-only), as
// glance/api/v2/images.py defines it.
#[tokio::test]
async fn image_schema_locations_carry_validation_data() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "GET", "/v2/schemas/image").send().await;
    let v = r.json();
    let items = &v["properties"]["locations"]["items"];
    assert_eq!(items["required"], json!(["url", "metadata"]));
    let data = &items["properties"]["validation_data"];
    assert_eq!(data["type"], "object");
    assert_eq!(data["writeOnly"], true);
    assert_eq!(data["additionalProperties"], false);
    assert_eq!(data["required"], json!(["os_hash_algo", "os_hash_value"]));
    assert_eq!(
        data["properties"],
        json!({"checksum": {"type": "string", "minLength": 32, "maxLength": 32},
               "os_hash_algo": {"type": "string", "maxLength": 64},
               "os_hash_value": {"type": "string", "maxLength": 128}})
    );
}
