//! Body validation of the metadata writes (spec §3.6, §3.7, checklist #16-#21).

use serde_json::json;

use crate::helpers::*;

fn pattern_msg(repr_obj: &str, repr_key: &str) -> String {
    format!(
        "Invalid input for field/attribute metadata. Value: {repr_obj}. {repr_key} does not match any of the regexes: '{KEY_PATTERN}'"
    )
}

async fn image_with_a(env: &Env) -> String {
    env.seed(&Seed::new().prop("keep", "me"))["id"].as_str().unwrap().to_string()
}

// §12 #16
#[tokio::test]
async fn empty_body_on_post_put_and_put_item_is_none_is_not_of_type_object() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let post = srv.call("POST", &meta_path(&id)).content_type("application/json").send().await;
    let put = srv.call("PUT", &meta_path(&id)).content_type("application/json").send().await;
    let put_item = srv.call("PUT", &key_path(&id, "a")).content_type("application/json").send().await;
    let post_no_ct = srv.call("POST", &meta_path(&id)).send().await;

    for r in [&post, &put, &put_item, &post_no_ct] {
        assert_fault(r, 400, "badRequest", "None is not of type 'object'");
    }
    assert_eq!(srv.metadata_of(&id).await, json!({"keep": "me"}));
}

// §12 #17
#[tokio::test]
async fn invalid_json_is_400_malformed_request_body() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let post = srv.call("POST", &meta_path(&id)).json_bytes("{\"metadata\": {").send().await;
    let put = srv.call("PUT", &meta_path(&id)).json_bytes("not json").send().await;
    let put_item = srv.call("PUT", &key_path(&id, "a")).json_bytes("{'meta': {'a': '1'}}").send().await;

    for r in [&post, &put, &put_item] {
        assert_fault(r, 400, "badRequest", "Malformed request body");
    }
}

// §12 #17 / bad input: a body that is not UTF-8 is malformed, not a 500
#[tokio::test]
async fn non_utf8_json_body_is_400_malformed_request_body() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();
    let body: Vec<u8> = b"{\"metadata\": {\"a\": \"\xff\xfe\"}}".to_vec();

    let post = srv.call("POST", &meta_path(&id)).json_bytes(body.clone()).send().await;
    let put_item =
        srv.call("PUT", &key_path(&id, "a")).json_bytes(b"{\"meta\": {\"a\": \"\xc3\x28\"}}".to_vec()).send().await;

    assert_fault(&post, 400, "badRequest", "Malformed request body");
    assert_fault(&put_item, 400, "badRequest", "Malformed request body");
    assert_eq!(srv.metadata_of(&id).await, json!({"keep": "me"}));
}

// §2 step 6: GET/DELETE bodies are never read, so malformed JSON there is ignored
#[tokio::test]
async fn malformed_body_on_get_and_delete_is_ignored() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1").prop("b", "2"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let get = srv.call("GET", &meta_path(&id)).json_bytes("{{{").send().await;
    let del = srv.call("DELETE", &key_path(&id, "a")).json_bytes("{{{").send().await;

    assert_json(&get, 200, &json!({"metadata": {"a": "1", "b": "2"}}));
    assert_no_content(&del);
}

// §3.6 table: other top-level shapes
#[tokio::test]
async fn wrong_top_level_shapes_are_400_with_jsonschema_messages() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let array = srv.post(&meta_path(&id), json!([])).send().await;
    let empty_obj = srv.post(&meta_path(&id), json!({})).send().await;
    let null_md = srv.post(&meta_path(&id), json!({"metadata": null})).send().await;
    let wrong_key = srv.put(&key_path(&id, "a"), json!({"metadata": {"a": "1"}})).send().await;

    assert_fault(&array, 400, "badRequest", "[] is not of type 'object'");
    assert_fault(&empty_obj, 400, "badRequest", "'metadata' is a required property");
    assert_fault(
        &null_md,
        400,
        "badRequest",
        "Invalid input for field/attribute metadata. Value: None. None is not of type 'object'",
    );
    assert_fault(&wrong_key, 400, "badRequest", "'meta' is a required property");
    assert_eq!(srv.metadata_of(&id).await, json!({"keep": "me"}));
}

// §12 #18
#[tokio::test]
async fn non_string_values_are_400() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let int = srv.post(&meta_path(&id), json!({"metadata": {"a": 1}})).send().await;
    let boolean = srv.post(&meta_path(&id), json!({"metadata": {"a": true}})).send().await;
    let null = srv.post(&meta_path(&id), json!({"metadata": {"a": null}})).send().await;
    let obj = srv.post(&meta_path(&id), json!({"metadata": {"a": {"b": "c"}}})).send().await;
    let put_item = srv.put(&key_path(&id, "a"), json!({"meta": {"a": 1}})).send().await;

    assert_fault(&int, 400, "badRequest", "Invalid input for field/attribute a. Value: 1. 1 is not of type 'string'");
    assert_fault(
        &boolean,
        400,
        "badRequest",
        "Invalid input for field/attribute a. Value: True. True is not of type 'string'",
    );
    assert_fault(
        &null,
        400,
        "badRequest",
        "Invalid input for field/attribute a. Value: None. None is not of type 'string'",
    );
    assert_fault_name(&obj, 400, "badRequest");
    assert_fault(
        &put_item,
        400,
        "badRequest",
        "Invalid input for field/attribute a. Value: 1. 1 is not of type 'string'",
    );
    assert_eq!(srv.metadata_of(&id).await, json!({"keep": "me"}));
}

// §12 #19
#[tokio::test]
async fn value_of_256_characters_is_400_and_255_is_200() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();
    let v256 = "x".repeat(256);
    let v255 = "y".repeat(255);

    let too_long = srv.post(&meta_path(&id), json!({"metadata": {"a": v256}})).send().await;
    let ok = srv.post(&meta_path(&id), json!({"metadata": {"b": v255}})).send().await;

    assert_fault(
        &too_long,
        400,
        "badRequest",
        &format!("Invalid input for field/attribute a. Value: {v256}. '{v256}' is too long"),
    );
    assert_json(&ok, 200, &json!({"metadata": {"keep": "me", "b": v255}}));
}

// §3.6: lengths are counted in characters, not bytes
#[tokio::test]
async fn value_length_counts_characters_not_bytes() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();
    let v255 = "é".repeat(255); // 510 bytes
    let v256 = "é".repeat(256);

    let ok = srv.put(&key_path(&id, "a"), json!({"meta": {"a": v255}})).send().await;
    let too_long = srv.put(&key_path(&id, "b"), json!({"meta": {"b": v256}})).send().await;

    assert_json(&ok, 200, &json!({"meta": {"a": v255}}));
    assert_fault_name(&too_long, 400, "badRequest");
}

// §12 #20
#[tokio::test]
async fn invalid_keys_are_400() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();
    let k256 = "k".repeat(256);

    let empty = srv.post(&meta_path(&id), json!({"metadata": {"": "v"}})).send().await;
    let long = srv.post(&meta_path(&id), json!({"metadata": {k256.clone(): "v"}})).send().await;
    let slash = srv.post(&meta_path(&id), json!({"metadata": {"a/b": "v"}})).send().await;
    let accent = srv.post(&meta_path(&id), json!({"metadata": {"é": "v"}})).send().await;
    let at = srv.post(&meta_path(&id), json!({"metadata": {"a@b": "v"}})).send().await;
    let plus = srv.put(&meta_path(&id), json!({"metadata": {"a+b": "v"}})).send().await;

    assert_fault(&empty, 400, "badRequest", &pattern_msg("{'': 'v'}", "''"));
    assert_fault(&long, 400, "badRequest", &pattern_msg(&format!("{{'{k256}': 'v'}}"), &format!("'{k256}'")));
    assert_fault(&slash, 400, "badRequest", &pattern_msg("{'a/b': 'v'}", "'a/b'"));
    assert_fault(&accent, 400, "badRequest", &pattern_msg("{'é': 'v'}", "'é'"));
    assert_fault(&at, 400, "badRequest", &pattern_msg("{'a@b': 'v'}", "'a@b'"));
    assert_fault(&plus, 400, "badRequest", &pattern_msg("{'a+b': 'v'}", "'a+b'"));
    assert_eq!(srv.metadata_of(&id).await, json!({"keep": "me"}));
}

// §12 #20
#[tokio::test]
async fn keys_with_space_colon_dot_dash_underscore_and_255_chars_are_accepted() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();
    let k255 = "K".repeat(255);
    let md = json!({"with space": "1", "a:b": "2", "a.b": "3", "a-b": "4", "a_b": "5", k255.clone(): "6", "Az09": "7"});

    let r = srv.post(&meta_path(&id), json!({"metadata": md})).send().await;

    let mut expected = md.clone();
    expected["keep"] = json!("me");
    assert_json(&r, 200, &json!({"metadata": expected}));
    assert_eq!(srv.metadata_of(&id).await, expected);
}

// §3.6 Rec: "key\n" is rejected (no Python `$`-before-newline leniency)
#[tokio::test]
async fn key_with_trailing_newline_is_rejected() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let post = srv.post(&meta_path(&id), json!({"metadata": {"key\n": "v"}})).send().await;
    let put = srv.put(&meta_path(&id), json!({"metadata": {"key\n": "v"}})).send().await;

    assert_fault_name(&post, 400, "badRequest");
    assert_fault_name(&put, 400, "badRequest");
    assert_eq!(srv.metadata_of(&id).await, json!({"keep": "me"}));
}

// §12 #20 / §3.5: an invalid key in a PUT-item body is a schema error
#[tokio::test]
async fn put_item_with_invalid_key_in_body_is_400() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let r = srv.put(&key_path(&id, "a%40b"), json!({"meta": {"a@b": "v"}})).send().await;

    assert_fault_name(&r, 400, "badRequest");
}

// §12 #21
#[tokio::test]
async fn additional_top_level_property_is_400_on_v21_and_ignored_on_v2() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let v21 = srv.post(&meta_path(&id), json!({"metadata": {"a": "1"}, "x": 1})).send().await;
    let v2 = srv.post(&format!("/v2/images/{id}/metadata"), json!({"metadata": {"a": "1"}, "x": 1})).send().await;

    assert_fault(&v21, 400, "badRequest", "Additional properties are not allowed ('x' was unexpected)");
    assert_json(&v2, 200, &json!({"metadata": {"keep": "me", "a": "1"}}));
}

// §12 #21 on the other writes: PUT-all and PUT-item also reject extra keys on /v2.1
#[tokio::test]
async fn additional_top_level_property_on_put_and_put_item_is_400_on_v21() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let put = srv.put(&meta_path(&id), json!({"metadata": {"a": "1"}, "x": 1})).send().await;
    let put_item = srv.put(&key_path(&id, "a"), json!({"meta": {"a": "1"}, "x": 1})).send().await;
    let v2_put_item = srv.put(&format!("/v2/images/{id}/metadata/a"), json!({"meta": {"a": "1"}, "x": 1})).send().await;

    assert_fault(&put, 400, "badRequest", "Additional properties are not allowed ('x' was unexpected)");
    assert_fault(&put_item, 400, "badRequest", "Additional properties are not allowed ('x' was unexpected)");
    assert_json(&v2_put_item, 200, &json!({"meta": {"a": "1"}}));
}

// §3.7 Rec: no 33.0.0 hack on /v2 -- invalid keys are still 400; types too
#[tokio::test]
async fn v2_still_rejects_invalid_keys_and_types() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();
    let path = format!("/v2/images/{id}/metadata");

    let all_bad = srv.post(&path, json!({"metadata": {"a/b": "v"}})).send().await;
    let empty_key = srv.post(&path, json!({"metadata": {"": "v"}})).send().await;
    let mixed = srv.post(&path, json!({"metadata": {"ok": "v", "b/c": "v"}})).send().await;
    let bad_type = srv.post(&path, json!({"metadata": {"a": 1}})).send().await;

    for r in [&all_bad, &empty_key, &mixed, &bad_type] {
        assert_fault_name(r, 400, "badRequest");
        assert_no_mv_headers(r);
    }
    assert_eq!(srv.metadata_of(&id).await, json!({"keep": "me"}));
}

// §3.6: JSON duplicate keys, the last one wins
#[tokio::test]
async fn duplicate_json_keys_last_wins() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.call("POST", &meta_path(&id)).json_bytes(r#"{"metadata": {"a": "first", "a": "second"}}"#).send().await;

    assert_json(&r, 200, &json!({"metadata": {"a": "second"}}));
}

// §2 step 6 + §5.2: a JSON body that is valid but deeply nested never 500s
#[tokio::test]
async fn deeply_nested_json_body_is_a_client_error() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();
    let depth = 5000;
    let body = format!("{{\"metadata\": {{\"a\": {}\"x\"{}}}}}", "[".repeat(depth), "]".repeat(depth));

    let r = srv.call("POST", &meta_path(&id)).json_bytes(body).send().await;

    assert_fault_name(&r, 400, "badRequest");
}

// §2 step 6 / §3.6: JSON scalars are parsed, then fail the object schema
#[tokio::test]
async fn json_scalar_bodies_fail_the_schema() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let null = srv.call("POST", &meta_path(&id)).json_bytes("null").send().await;
    let number = srv.call("PUT", &meta_path(&id)).json_bytes("1").send().await;
    let string = srv.call("POST", &meta_path(&id)).json_bytes("\"str\"").send().await;

    assert_fault(&null, 400, "badRequest", "None is not of type 'object'");
    assert_fault(&number, 400, "badRequest", "1 is not of type 'object'");
    assert_fault(&string, 400, "badRequest", "'str' is not of type 'object'");
}

// §2 step 6: a non-empty body that is not one JSON document is malformed
#[tokio::test]
async fn whitespace_or_trailing_garbage_body_is_malformed() {
    let env = Env::new();
    let id = image_with_a(&env).await;
    let srv = env.start();

    let blank = srv.call("POST", &meta_path(&id)).json_bytes("   ").send().await;
    let trailing = srv.call("POST", &meta_path(&id)).json_bytes(r#"{"metadata": {}} x"#).send().await;
    let two_docs = srv.call("PUT", &meta_path(&id)).json_bytes(r#"{"metadata": {}}{"metadata": {}}"#).send().await;

    for r in [&blank, &trailing, &two_docs] {
        assert_fault(r, 400, "badRequest", "Malformed request body");
    }
}
