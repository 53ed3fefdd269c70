//! The Glance v2 API and the Compute API over one store (glance-v2 §15; checklist §18 #64):
//! Nova's "metadata" is every image key minus the schema's base properties and the links, and
//! Glance statuses map to Nova's status/progress.

use serde_json::{Map, Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

/// What Nova (through glanceclient: GET image + GET schema) puts under `properties` (§15).
fn nova_properties(image: &Value, schema: &Value) -> Value {
    let props = schema["properties"].as_object().unwrap();
    let dropped = ["self", "schema", "protected", "virtual_size", "file", "tags", "direct_url", "locations"];
    let mut out = Map::new();
    for (k, v) in image.as_object().unwrap() {
        if dropped.contains(&k.as_str()) {
            continue;
        }
        let is_base = props.get(k).is_some_and(|p| p.get("is_base") != Some(&json!(false)));
        if !is_base {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

// §18 #64, §15: properties set through Glance (create, PATCH) are exactly the compute metadata,
// as a glanceclient round-trip (image + schema) computes them.
#[tokio::test]
async fn glance_properties_show_in_compute_metadata() {
    let env = Env::new();
    let server = env.start();
    let id = id_of(
        &create(
            &server,
            json!({"name": "bridge", "os_distro": "ubuntu", "foo": "bar", "tags": ["t"], "min_ram": 64,
                   "kernel_id": "11111111-2222-3333-4444-555555555555"}),
        )
        .await,
    );
    let r = g(&server, "PATCH", &img_path(&id))
        .patch(&json!([{"op": "add", "path": "/hw_disk_bus", "value": "virtio"}, {"op": "replace", "path": "/foo", "value": "baz"}]))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let image = r.json();
    let schema = g(&server, "GET", "/v2/schemas/image").send().await.json();
    let expected = json!({
        "os_distro": "ubuntu", "foo": "baz", "hw_disk_bus": "virtio",
        "kernel_id": "11111111-2222-3333-4444-555555555555",
    });
    assert_eq!(nova_properties(&image, &schema), expected, "glanceclient split");
    assert_eq!(server.metadata_of(&id).await, expected, "compute metadata");
    let r = server.get(&format!("/v2.1/images/{id}")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["image"]["metadata"], expected);
    assert_eq!(c["image"]["name"], json!("bridge"));
    assert_eq!(c["image"]["minRam"], json!(64));
    // Removing through Glance removes it from compute.
    let r = g(&server, "PATCH", &img_path(&id)).patch(&json!([{"op": "remove", "path": "/foo"}])).send().await;
    assert_eq!(r.status, 200);
    let m = server.metadata_of(&id).await;
    assert!(m.get("foo").is_none(), "{m}");
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

// §18 #64, §15: metadata written through the compute API is a top-level string property in
// Glance; deleting it there removes it from Glance.
#[tokio::test]
async fn compute_metadata_shows_in_glance() {
    let env = Env::new();
    let server = env.start();
    let id = id_of(&create(&server, json!({"name": "n", "keep": "k"})).await);
    let r = server
        .post(&meta_path(&id), json!({"metadata": {"hw_qemu_guest_agent": "yes", "os_version": "22.04"}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = g(&server, "GET", &img_path(&id)).send().await.json();
    assert_eq!(v["hw_qemu_guest_agent"], json!("yes"));
    assert_eq!(v["os_version"], json!("22.04"));
    assert_eq!(v["keep"], json!("k"));
    assert_eq!(v["name"], json!("n"), "base attributes untouched");
    let r = server.delete(&key_path(&id, "keep")).send().await;
    assert_eq!(r.status, 204, "{}", r.text());
    let v = g(&server, "GET", &img_path(&id)).send().await.json();
    assert!(v.get("keep").is_none(), "{v}");
    // The Glance list filter sees compute-written properties.
    let l = list_as(&server, TOK_A, "/v2/images?hw_qemu_guest_agent=yes").await;
    assert_eq!(ids(&l), vec![id.clone()]);
}

// §18 #64, §15: Nova status/progress: queued → SAVING/25, active → ACTIVE/100, size from
// Glance; deactivated → UNKNOWN.
#[tokio::test]
async fn compute_status_follows_glance() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let c = server.get(&format!("/v2.1/images/{id}")).send().await.json();
    assert_eq!(c["image"]["status"], json!("SAVING"), "{c}");
    assert_eq!(c["image"]["progress"], json!(25));
    assert_eq!(c["image"]["OS-EXT-IMG-SIZE:size"], json!(0), "size null → 0 (§15)");
    upload_ok(&server, &id, &pattern(1024, 1)).await;
    let c = server.get(&format!("/v2.1/images/{id}")).send().await.json();
    assert_eq!(c["image"]["status"], json!("ACTIVE"), "{c}");
    assert_eq!(c["image"]["progress"], json!(100));
    assert_eq!(c["image"]["OS-EXT-IMG-SIZE:size"], json!(1024));
    let r = g(&server, "POST", &format!("/v2/images/{id}/actions/deactivate")).send().await;
    assert_no_content(&r);
    let c = server.get(&format!("/v2.1/images/{id}")).send().await.json();
    assert_eq!(c["image"]["status"], json!("UNKNOWN"), "{c}");
    // Deleted through Glance → gone from compute.
    let r = g(&server, "DELETE", &img_path(&id)).send().await;
    assert_no_content(&r);
    let r = server.get(&format!("/v2.1/images/{id}")).send().await;
    assert_eq!(r.status, 404);
}
