//! The `metadata_items` quota (spec §7, checklist #22, #23).

use serde_json::{Map, Value, json};

use crate::helpers::*;

const LIMIT_MSG: &str = "Image metadata limit exceeded";

fn md(n: usize, prefix: &str) -> Value {
    let mut m = Map::new();
    for i in 0..n {
        m.insert(format!("{prefix}{i}"), json!(format!("v{i}")));
    }
    Value::Object(m)
}

// §12 #22 (POST counts the merged result)
#[tokio::test]
async fn post_reaching_quota_is_200_and_exceeding_it_is_403() {
    // Arrange: quota 3, image already has 2 properties
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(2))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(3);

    // Act
    let at_quota = srv.post(&meta_path(&id), json!({"metadata": {"a": "1"}})).send().await;
    let over = srv.post(&meta_path(&id), json!({"metadata": {"b": "1"}})).send().await;

    // Assert
    assert_json(&at_quota, 200, &json!({"metadata": {"p0": "v0", "p1": "v1", "a": "1"}}));
    assert_fault(&over, 403, "forbidden", LIMIT_MSG);
    assert_eq!(srv.metadata_of(&id).await, json!({"p0": "v0", "p1": "v1", "a": "1"}));
}

// §12 #22 (POST overwriting existing keys does not grow the count)
#[tokio::test]
async fn post_overwriting_existing_keys_at_quota_is_200() {
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(3))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(3);

    let r = srv.post(&meta_path(&id), json!({"metadata": {"p0": "new"}})).send().await;

    assert_json(&r, 200, &json!({"metadata": {"p0": "new", "p1": "v1", "p2": "v2"}}));
}

// §12 #22 (PUT-all counts only the body)
#[tokio::test]
async fn put_all_counts_only_the_body() {
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(5))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(3);

    let over = srv.put(&meta_path(&id), json!({"metadata": md(4, "k")})).send().await;
    let at_quota = srv.put(&meta_path(&id), json!({"metadata": md(3, "k")})).send().await;

    assert_fault(&over, 403, "forbidden", LIMIT_MSG);
    assert_json(&at_quota, 200, &json!({"metadata": md(3, "k")}));
    assert_eq!(srv.metadata_of(&id).await, md(3, "k"));
}

// §12 #22 (PUT-item counts all properties; even an update of an existing key
// on an image already over quota is refused)
#[tokio::test]
async fn put_item_over_quota_is_403_even_for_existing_key() {
    let env = Env::new();
    let full = env.seed(&Seed::new().props_n(3))["id"].as_str().unwrap().to_string();
    let over = env.seed(&Seed::new().props_n(5))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(3);

    let new_key = srv.put(&key_path(&full, "x"), json!({"meta": {"x": "1"}})).send().await;
    let existing_at_quota = srv.put(&key_path(&full, "p0"), json!({"meta": {"p0": "n"}})).send().await;
    let existing_over = srv.put(&key_path(&over, "p0"), json!({"meta": {"p0": "n"}})).send().await;

    assert_fault(&new_key, 403, "forbidden", LIMIT_MSG);
    assert_json(&existing_at_quota, 200, &json!({"meta": {"p0": "n"}}));
    assert_fault(&existing_over, 403, "forbidden", LIMIT_MSG);
    assert_eq!(srv.metadata_of(&over).await, md(5, "p"));
}

// §12 #22 with the default quota of 128
#[tokio::test]
async fn default_quota_is_128() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let ok = srv.put(&meta_path(&id), json!({"metadata": md(128, "k")})).send().await;
    let over = srv.put(&meta_path(&id), json!({"metadata": md(129, "k")})).send().await;
    let over_item = srv.put(&key_path(&id, "extra"), json!({"meta": {"extra": "1"}})).send().await;

    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_fault(&over, 403, "forbidden", LIMIT_MSG);
    assert_fault(&over_item, 403, "forbidden", LIMIT_MSG);
}

// §12 #23: -1 means unlimited
#[tokio::test]
async fn quota_minus_one_is_unlimited() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(-1);

    let post = srv.post(&meta_path(&id), json!({"metadata": md(300, "k")})).send().await;
    let item = srv.put(&key_path(&id, "one-more"), json!({"meta": {"one-more": "1"}})).send().await;

    assert_eq!(post.status, 200, "{}", post.text());
    assert_eq!(post.json()["metadata"].as_object().unwrap().len(), 300);
    assert_json(&item, 200, &json!({"meta": {"one-more": "1"}}));
    assert_eq!(srv.metadata_of(&id).await.as_object().unwrap().len(), 301);
}

// §12 #23: empty metadata is never quota-checked; quota 0 refuses any property
#[tokio::test]
async fn quota_zero_refuses_properties_but_not_empty_metadata() {
    let env = Env::new();
    let empty = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let with_props = env.seed(&Seed::new().props_n(2))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(0);

    let post_empty = srv.post(&meta_path(&empty), json!({"metadata": {}})).send().await;
    let put_empty = srv.put(&meta_path(&with_props), json!({"metadata": {}})).send().await;
    let post_one = srv.post(&meta_path(&empty), json!({"metadata": {"a": "1"}})).send().await;

    assert_json(&post_empty, 200, &json!({"metadata": {}}));
    assert_json(&put_empty, 200, &json!({"metadata": {}}));
    assert_fault(&post_one, 403, "forbidden", LIMIT_MSG);
}

// §7 / §11: DELETE is never quota-checked
#[tokio::test]
async fn delete_on_image_over_quota_is_allowed() {
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(5))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(3);

    let r = srv.delete(&key_path(&id, "p4")).send().await;

    assert_no_content(&r);
    assert_eq!(srv.metadata_of(&id).await, md(4, "p"));
}

// §2 order: schema errors come before the quota check
#[tokio::test]
async fn schema_error_wins_over_quota() {
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(3))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(3);

    let r = srv.post(&meta_path(&id), json!({"metadata": {"a": 1}})).send().await;

    assert_fault(&r, 400, "badRequest", "Invalid input for field/attribute a. Value: 1. 1 is not of type 'string'");
}
