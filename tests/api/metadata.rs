//! Image metadata endpoints (spec §3, checklist #1-#15).

use serde_json::json;

use crate::helpers::*;

// §12 #1
#[tokio::test]
async fn get_metadata_returns_every_custom_property_and_no_base_attribute() {
    // Arrange
    let env = Env::new();
    let img = env.seed(
        &Seed::new()
            .name("cirros")
            .min_ram(512)
            .min_disk(1)
            .size(4096)
            .prop("kernel_id", "k-1")
            .prop("os_distro", "cirros")
            .prop("hw_disk_bus", "virtio")
            .prop("with space", "v s"),
    );
    let id = img["id"].as_str().unwrap();
    let srv = env.start();

    // Act
    let r = srv.get(&meta_path(id)).send().await;

    // Assert
    assert_json(
        &r,
        200,
        &json!({"metadata": {
            "kernel_id": "k-1", "os_distro": "cirros", "hw_disk_bus": "virtio", "with space": "v s"
        }}),
    );
}

// §12 #1
#[tokio::test]
async fn get_metadata_of_image_without_properties_is_an_empty_object() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.get(&meta_path(&id)).send().await;

    assert_json(&r, 200, &json!({"metadata": {}}));
}

// §12 #2
#[tokio::test]
async fn get_metadata_of_missing_image_is_404_image_not_found() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.get(&meta_path(&new_id())).send().await;

    assert_fault(&r, 404, "itemNotFound", "Image not found.");
}

// §12 #2 (a non-UUID image id is just a missing image, §11)
#[tokio::test]
async fn metadata_calls_on_non_uuid_image_id_are_404_image_not_found() {
    let env = Env::new();
    let srv = env.start();

    let get = srv.get("/v2.1/images/not-a-uuid/metadata").send().await;
    let post = srv.post("/v2.1/images/not-a-uuid/metadata", json!({"metadata": {"a": "1"}})).send().await;
    let put = srv.put("/v2.1/images/not-a-uuid/metadata/a", json!({"meta": {"a": "1"}})).send().await;
    let del = srv.delete("/v2.1/images/not-a-uuid/metadata/a").send().await;

    for r in [&get, &post, &put, &del] {
        assert_fault(r, 404, "itemNotFound", "Image not found.");
    }
}

// §12 #3 (Glance 403 = a caller that can see but not change the image)
#[tokio::test]
async fn metadata_writes_by_non_owner_of_public_image_are_403_and_change_nothing() {
    // Arrange
    let env = Env::new();
    let id = env.seed(&Seed::new().public().prop("k", "v"))["id"].as_str().unwrap().to_string();
    let srv = env.start();
    let msg = format!("Not authorized for image {id}.");

    // Act
    let post = srv.post(&meta_path(&id), json!({"metadata": {"a": "1"}})).token(TOK_B).send().await;
    let put = srv.put(&meta_path(&id), json!({"metadata": {"a": "1"}})).token(TOK_B).send().await;
    let put_item = srv.put(&key_path(&id, "k"), json!({"meta": {"k": "x"}})).token(TOK_B).send().await;
    let del = srv.delete(&key_path(&id, "k")).token(TOK_B).send().await;

    // Assert
    for r in [&post, &put, &put_item, &del] {
        assert_fault(r, 403, "forbidden", &msg);
    }
    assert_eq!(srv.metadata_of(&id).await, json!({"k": "v"}));
}

// §12 #3 / §9: reads of a visible public image by another project succeed
#[tokio::test]
async fn non_owner_can_read_public_image_metadata() {
    let env = Env::new();
    let id = env.seed(&Seed::new().public().prop("k", "v"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let all = srv.get(&meta_path(&id)).token(TOK_B).send().await;
    let one = srv.get(&key_path(&id, "k")).token(TOK_B).send().await;

    assert_json(&all, 200, &json!({"metadata": {"k": "v"}}));
    assert_json(&one, 200, &json!({"meta": {"k": "v"}}));
}

// §9: invisible images are 404, never 403
#[tokio::test]
async fn other_projects_private_image_is_404_for_every_metadata_call() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("k", "v"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let get = srv.get(&meta_path(&id)).token(TOK_B).send().await;
    let get_key = srv.get(&key_path(&id, "k")).token(TOK_B).send().await;
    let post = srv.post(&meta_path(&id), json!({"metadata": {"a": "1"}})).token(TOK_B).send().await;
    let put = srv.put(&meta_path(&id), json!({"metadata": {}})).token(TOK_B).send().await;
    let put_item = srv.put(&key_path(&id, "k"), json!({"meta": {"k": "x"}})).token(TOK_B).send().await;
    let del = srv.delete(&key_path(&id, "k")).token(TOK_B).send().await;

    for r in [&get, &get_key, &post, &put, &put_item, &del] {
        assert_fault(r, 404, "itemNotFound", "Image not found.");
    }
    assert_eq!(srv.metadata_of(&id).await, json!({"k": "v"}));
}

// §12 #4
#[tokio::test]
async fn get_existing_key_returns_exactly_that_pair() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1").prop("b", "2"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.get(&key_path(&id, "b")).send().await;

    assert_json(&r, 200, &json!({"meta": {"b": "2"}}));
}

// §12 #4 / §11: keys may contain spaces, URL-encoded as %20
#[tokio::test]
async fn get_key_with_space_via_percent_encoding() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("my key", "v"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.get(&key_path(&id, "my%20key")).send().await;

    assert_json(&r, 200, &json!({"meta": {"my key": "v"}}));
}

// §12 #5
#[tokio::test]
async fn get_missing_key_is_404_resource_not_found() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.get(&key_path(&id, "zz")).send().await;

    assert_fault(&r, 404, "itemNotFound", "The resource could not be found.");
}

// §12 #5 / §3.2: keys are case-sensitive
#[tokio::test]
async fn keys_are_case_sensitive() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("Owner", "x"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let lower = srv.get(&key_path(&id, "owner")).send().await;
    let exact = srv.get(&key_path(&id, "Owner")).send().await;

    assert_fault(&lower, 404, "itemNotFound", "The resource could not be found.");
    assert_json(&exact, 200, &json!({"meta": {"Owner": "x"}}));
}

// §12 #5 / §3.2: key GET on a missing image is the image lookup 404
#[tokio::test]
async fn get_key_of_missing_image_is_image_not_found() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.get(&key_path(&new_id(), "a")).send().await;

    assert_fault(&r, 404, "itemNotFound", "Image not found.");
}

// §12 #6
#[tokio::test]
async fn post_merges_and_returns_the_full_set() {
    // Arrange
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("x", "1").prop("y", "2"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    // Act
    let r = srv.post(&meta_path(&id), json!({"metadata": {"a": "1", "y": "9"}})).send().await;

    // Assert
    let expected = json!({"x": "1", "y": "9", "a": "1"});
    assert_json(&r, 200, &json!({"metadata": expected}));
    assert_eq!(srv.metadata_of(&id).await, expected);
}

// §12 #7
#[tokio::test]
async fn post_empty_metadata_returns_unchanged_full_set() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("x", "1").prop("y", "2"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.post(&meta_path(&id), json!({"metadata": {}})).send().await;

    assert_json(&r, 200, &json!({"metadata": {"x": "1", "y": "2"}}));
    assert_eq!(srv.metadata_of(&id).await, json!({"x": "1", "y": "2"}));
}

// §12 #8
#[tokio::test]
async fn put_replaces_all_and_echoes_the_request() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("x", "1").prop("kernel_id", "k"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.put(&meta_path(&id), json!({"metadata": {"a": "1"}})).send().await;

    assert_json(&r, 200, &json!({"metadata": {"a": "1"}}));
    let after = srv.get(&meta_path(&id)).send().await;
    assert_json(&after, 200, &json!({"metadata": {"a": "1"}}));
}

// §12 #9
#[tokio::test]
async fn put_empty_metadata_removes_all_custom_properties() {
    let env = Env::new();
    let id =
        env.seed(&Seed::new().prop("x", "1").prop("instance_uuid", &new_id()).prop("image_type", "snapshot"))["id"]
            .as_str()
            .unwrap()
            .to_string();
    let srv = env.start();

    let r = srv.put(&meta_path(&id), json!({"metadata": {}})).send().await;

    assert_json(&r, 200, &json!({"metadata": {}}));
    assert_eq!(srv.metadata_of(&id).await, json!({}));
}

// §12 #9: base attributes are not metadata and survive a replace-all
#[tokio::test]
async fn put_empty_metadata_keeps_base_attributes() {
    let env = Env::new();
    let id = env.seed(&Seed::new().name("keep-me").min_ram(64).prop("x", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.put(&meta_path(&id), json!({"metadata": {}})).send().await;
    let show = srv.get(&image_path(&id)).send().await;

    assert_eq!(r.status, 200);
    assert_eq!(show.status, 200, "{}", show.text());
    let img = &show.json()["image"];
    assert_eq!(img["name"], json!("keep-me"));
    assert_eq!(img["minRam"], json!(64));
    assert_eq!(img["metadata"], json!({}));
}

// §12 #10
#[tokio::test]
async fn put_item_sets_one_key_and_echoes_it() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1").prop("b", "x"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let replace = srv.put(&key_path(&id, "a"), json!({"meta": {"a": "2"}})).send().await;
    let create = srv.put(&key_path(&id, "c"), json!({"meta": {"c": "3"}})).send().await;

    assert_json(&replace, 200, &json!({"meta": {"a": "2"}}));
    assert_json(&create, 200, &json!({"meta": {"c": "3"}}));
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "2", "b": "x", "c": "3"}));
}

// §12 #10 / §11: URL-encoded key with a space
#[tokio::test]
async fn put_item_with_encoded_space_key() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.put(&key_path(&id, "my%20key"), json!({"meta": {"my key": "v"}})).send().await;

    assert_json(&r, 200, &json!({"meta": {"my key": "v"}}));
    assert_eq!(srv.metadata_of(&id).await, json!({"my key": "v"}));
}

// §12 #11
#[tokio::test]
async fn put_item_with_mismatched_key_is_400_even_for_missing_image() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let existing = srv.put(&key_path(&id, "a"), json!({"meta": {"b": "2"}})).send().await;
    let missing = srv.put(&key_path(&new_id(), "a"), json!({"meta": {"b": "2"}})).send().await;

    assert_fault(&existing, 400, "badRequest", "Request body and URI mismatch");
    assert_fault(&missing, 400, "badRequest", "Request body and URI mismatch");
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
}

// §12 #12
#[tokio::test]
async fn put_item_with_two_keys_is_400_too_many_properties() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.put(&key_path(&id, "a"), json!({"meta": {"a": "1", "b": "2"}})).send().await;

    assert_fault(
        &r,
        400,
        "badRequest",
        "Invalid input for field/attribute meta. Value: {'a': '1', 'b': '2'}. {'a': '1', 'b': '2'} has too many properties",
    );
    assert_eq!(srv.metadata_of(&id).await, json!({}));
}

// §12 #13
#[tokio::test]
async fn put_item_with_empty_meta_is_400() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.put(&key_path(&id, "a"), json!({"meta": {}})).send().await;

    // §3.6 documents the message of current jsonschema and of older releases.
    assert_fault_name(&r, 400, "badRequest");
    let msg = r.json()["badRequest"]["message"].as_str().unwrap().to_string();
    assert!(
        msg == "Invalid input for field/attribute meta. Value: {}. {} should be non-empty"
            || msg == "Invalid input for field/attribute meta. Value: {}. {} does not have enough properties",
        "message: {msg}"
    );
}

// §12 #14
#[tokio::test]
async fn delete_present_key_is_204_and_key_is_gone() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1").prop("b", "2"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.delete(&key_path(&id, "a")).send().await;

    assert_no_content(&r);
    let after = srv.get(&key_path(&id, "a")).send().await;
    assert_fault(&after, 404, "itemNotFound", "The resource could not be found.");
    assert_eq!(srv.metadata_of(&id).await, json!({"b": "2"}));
}

// §12 #14 / §3.8 / §11: 204 carries Content-Type application/json and no body
#[tokio::test]
async fn delete_key_204_has_json_content_type_and_zero_length() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.delete(&key_path(&id, "a")).send().await;

    assert_no_content(&r);
    assert_eq!(r.content_type(), Some("application/json"));
}

// §12 #15
#[tokio::test]
async fn delete_absent_key_is_404_invalid_metadata_key() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.delete(&key_path(&id, "zz")).send().await;

    assert_fault(&r, 404, "itemNotFound", "Invalid metadata key");
}

// §12 #15 / §3.8: the image lookup comes first
#[tokio::test]
async fn delete_key_of_missing_image_is_image_not_found() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.delete(&key_path(&new_id(), "a")).send().await;

    assert_fault(&r, 404, "itemNotFound", "Image not found.");
}

// §3.1 / §3.2 Rec: query parameters on metadata GET are ignored
#[tokio::test]
async fn query_parameters_on_metadata_get_are_ignored() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let all = srv.get(&format!("{}?foo=bar&limit=abc", meta_path(&id))).send().await;
    let one = srv.get(&format!("{}?x=1", key_path(&id, "a"))).send().await;

    assert_json(&all, 200, &json!({"metadata": {"a": "1"}}));
    assert_json(&one, 200, &json!({"meta": {"a": "1"}}));
}

// §3 / §6: non-ASCII values round-trip (output escapes them, content is equal)
#[tokio::test]
async fn non_ascii_values_round_trip() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.post(&meta_path(&id), json!({"metadata": {"a": "héllo ☃ 日本"}})).send().await;

    assert_json(&r, 200, &json!({"metadata": {"a": "héllo ☃ 日本"}}));
    assert!(r.body.is_ascii(), "JSON output escapes non-ASCII (§6): {}", r.text());
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "héllo ☃ 日本"}));
}

// §3 / §4.1: block_device_mapping and mappings are JSON-decoded on output
#[tokio::test]
async fn block_device_mapping_and_mappings_are_decoded_on_output() {
    let env = Env::new();
    let id = env.seed(
        &Seed::new()
            .prop("block_device_mapping", r#"[{"boot_index": 0, "source_type": "snapshot"}]"#)
            .prop("mappings", r#"[{"virtual": "root", "device": "vda"}]"#)
            .prop("plain", "[1]"),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let srv = env.start();

    let r = srv.get(&meta_path(&id)).send().await;

    assert_json(
        &r,
        200,
        &json!({"metadata": {
            "block_device_mapping": [{"boot_index": 0, "source_type": "snapshot"}],
            "mappings": [{"virtual": "root", "device": "vda"}],
            "plain": "[1]"
        }}),
    );
}

// §11: `{key}` is URL-decoded; `:` may arrive percent-encoded
#[tokio::test]
async fn percent_encoded_key_is_decoded() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("os:type", "x"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let get = srv.get(&key_path(&id, "os%3Atype")).send().await;
    let put = srv.put(&key_path(&id, "os%3Atype"), json!({"meta": {"os:type": "y"}})).send().await;
    let del = srv.delete(&key_path(&id, "os%3atype")).send().await;

    assert_json(&get, 200, &json!({"meta": {"os:type": "x"}}));
    assert_json(&put, 200, &json!({"meta": {"os:type": "y"}}));
    assert_no_content(&del);
    assert_eq!(srv.metadata_of(&id).await, json!({}));
}

// §3.3: POST to a missing image with a valid body is 404 (lookup before quota)
#[tokio::test]
async fn writes_to_missing_image_are_404() {
    let env = Env::new();
    let srv = env.start_quota(0);
    let missing = new_id();

    let post = srv.post(&meta_path(&missing), json!({"metadata": {"a": "1"}})).send().await;
    let put = srv.put(&meta_path(&missing), json!({"metadata": {"a": "1"}})).send().await;
    let put_item = srv.put(&key_path(&missing, "a"), json!({"meta": {"a": "1"}})).send().await;

    for r in [&post, &put, &put_item] {
        assert_fault(r, 404, "itemNotFound", "Image not found.");
    }
}

// §3.3 / §3.4 / §11: POST returns the merged set as read back (block_device_mapping
// decoded), while PUT-all and PUT-item echo the request (still a string)
#[tokio::test]
async fn post_returns_decoded_set_while_put_echoes_request() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();
    let bdm = r#"[{"boot_index": 0}]"#;

    let post = srv.post(&meta_path(&id), json!({"metadata": {"block_device_mapping": bdm}})).send().await;
    let put = srv.put(&meta_path(&id), json!({"metadata": {"block_device_mapping": bdm}})).send().await;
    let put_item = srv.put(&key_path(&id, "mappings"), json!({"meta": {"mappings": "[]"}})).send().await;
    let get = srv.get(&meta_path(&id)).send().await;

    assert_json(&post, 200, &json!({"metadata": {"block_device_mapping": [{"boot_index": 0}]}}));
    assert_json(&put, 200, &json!({"metadata": {"block_device_mapping": bdm}}));
    assert_json(&put_item, 200, &json!({"meta": {"mappings": "[]"}}));
    assert_json(&get, 200, &json!({"metadata": {"block_device_mapping": [{"boot_index": 0}], "mappings": []}}));
}
