//! List pagination and ordering (spec §4.2, checklist #45-#48, #51).

use serde_json::{Value, json};

use crate::helpers::*;

fn ids(list: &Value) -> Vec<String> {
    list["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// Seeds `n` images `page-0`..`page-{n-1}` one second apart; returns ids
/// newest first (the default list order).
fn seed_pages(env: &Env, n: usize) -> Vec<String> {
    let mut v: Vec<String> = env
        .seed_count(&Seed::new().no_id().name("page").created_at("2026-03-01T00:00:00Z"), n)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    v.reverse();
    v
}

// §12 #45
#[tokio::test]
async fn limit_returns_n_images_and_a_next_link() {
    // Arrange
    let env = Env::new();
    let all = seed_pages(&env, 5);
    let srv = env.start();
    let h = srv.host();

    // Act
    let r = srv.get("/v2.1/images?limit=2").send().await;

    // Assert
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(ids(&body), all[..2].to_vec());
    assert_eq!(
        body["images_links"],
        json!([{"rel": "next", "href": format!("http://{h}/v2.1/images?limit=2&marker={}", all[1])}])
    );
}

// §12 #45: following next links walks every image once; the last short page has no link
#[tokio::test]
async fn next_links_walk_all_pages() {
    let env = Env::new();
    let all = seed_pages(&env, 5);
    let srv = env.start();
    let base = srv.base.clone();

    let mut seen = Vec::new();
    let mut path = "/v2.1/images?limit=2".to_string();
    let mut pages = 0;
    loop {
        let r = srv.get(&path).send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        seen.extend(ids(&body));
        pages += 1;
        match body.get("images_links") {
            Some(l) => path = l[0]["href"].as_str().unwrap().strip_prefix(&base).unwrap().to_string(),
            None => break,
        }
        assert!(pages < 10, "too many pages");
    }

    assert_eq!(seen, all);
    assert_eq!(pages, 3);
}

// §12 #45: fewer than N -> no images_links; exactly N -> a next link (max_items == len)
#[tokio::test]
async fn next_link_presence_depends_on_page_being_full() {
    let env = Env::new();
    let all = seed_pages(&env, 3);
    let srv = env.start();
    let h = srv.host();

    let fewer = srv.get("/v2.1/images?limit=4").send().await;
    let exact = srv.get("/v2.1/images?limit=3").send().await;

    assert_eq!(fewer.status, 200, "{}", fewer.text());
    assert_eq!(ids(&fewer.json()), all);
    assert!(fewer.json().get("images_links").is_none(), "{}", fewer.text());
    assert_eq!(
        exact.json()["images_links"],
        json!([{"rel": "next", "href": format!("http://{h}/v2.1/images?limit=3&marker={}", all[2])}])
    );
}

// §12 #45 / §4.2: next-link query is sorted by name, marker replaced, project kept
#[tokio::test]
async fn next_link_keeps_filters_sorted_and_replaces_marker() {
    let env = Env::new();
    let all = seed_pages(&env, 5);
    let srv = env.start();
    let h = srv.host();

    let r = srv.get(&format!("/v2.1/{PROJ_A}/images?status=active&marker={}&limit=2", all[0])).send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(ids(&body), all[1..3].to_vec());
    assert_eq!(
        body["images_links"],
        json!([{"rel": "next", "href": format!("http://{h}/v2.1/{PROJ_A}/images?limit=2&marker={}&status=active", all[2])}])
    );
}

// §12 #46
#[tokio::test]
async fn detail_next_link_points_to_detail() {
    let env = Env::new();
    let all = seed_pages(&env, 3);
    let srv = env.start();
    let h = srv.host();

    let r = srv.get("/v2.1/images/detail?limit=1").send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(ids(&body), all[..1].to_vec());
    assert_eq!(body["images"][0]["name"], json!("page-2"));
    assert_eq!(
        body["images_links"],
        json!([{"rel": "next", "href": format!("http://{h}/v2.1/images/detail?limit=1&marker={}", all[0])}])
    );
}

// §12 #47
#[tokio::test]
async fn limit_zero_negative_or_non_integer_is_400() {
    let env = Env::new();
    seed_pages(&env, 1);
    let srv = env.start();

    let zero = srv.get("/v2.1/images?limit=0").send().await;
    let abc = srv.get("/v2.1/images?limit=abc").send().await;
    let neg = srv.get("/v2.1/images/detail?limit=-1").send().await;
    let page_size = srv.get("/v2.1/images?page_size=0").send().await;
    let offset = srv.get("/v2.1/images/detail?offset=x").send().await;
    let float = srv.get("/v2.1/images?limit=1.5").send().await;
    let empty = srv.get("/v2.1/images?limit=").send().await;

    assert_fault(
        &zero,
        400,
        "badRequest",
        "Invalid input for query parameters limit. Value: 0. 0 is less than the minimum of 1",
    );
    assert_fault(
        &abc,
        400,
        "badRequest",
        "Invalid input for query parameters limit. Value: abc. 'abc' does not match '^[0-9]*$'",
    );
    for r in [&neg, &page_size, &offset, &float, &empty] {
        assert_fault_name(r, 400, "badRequest");
    }
}

// §4.2: repeated parameters -> the last one is used; offset is validated then ignored
#[tokio::test]
async fn repeated_limit_uses_last_and_offset_is_ignored() {
    let env = Env::new();
    let all = seed_pages(&env, 4);
    let srv = env.start();

    let repeated = srv.get("/v2.1/images?limit=3&limit=1").send().await;
    let offset = srv.get("/v2.1/images?offset=2").send().await;

    assert_eq!(ids(&repeated.json()), all[..1].to_vec());
    assert_eq!(ids(&offset.json()), all);
}

// §12 #48
#[tokio::test]
async fn unknown_marker_is_400() {
    let env = Env::new();
    seed_pages(&env, 2);
    let srv = env.start();

    let list = srv.get(&format!("/v2.1/images?marker={}", new_id())).send().await;
    let detail = srv.get("/v2.1/images/detail?marker=garbage").send().await;

    assert_fault_name(&list, 400, "badRequest");
    assert_fault_name(&detail, 400, "badRequest");
}

// §12 #51
#[tokio::test]
async fn default_order_is_newest_created_first_then_id_desc() {
    // Arrange: inserted out of order
    let env = Env::new();
    let c = env.seed(&Seed::new().name("c").created_at("2026-01-03T00:00:00Z"))["id"].as_str().unwrap().to_string();
    let a = env.seed(&Seed::new().name("a").created_at("2026-01-01T00:00:00Z"))["id"].as_str().unwrap().to_string();
    let b = env.seed(&Seed::new().name("b").created_at("2026-01-02T00:00:00Z"))["id"].as_str().unwrap().to_string();
    let low = "00000000-0000-4000-8000-000000000001";
    let high = "ffffffff-ffff-4fff-bfff-ffffffffffff";
    env.seed(&Seed::new().id(low).name("tie-low").created_at("2026-01-04T00:00:00Z"));
    env.seed(&Seed::new().id(high).name("tie-high").created_at("2026-01-04T00:00:00Z"));
    let srv = env.start();

    // Act
    let list = srv.get("/v2.1/images").send().await;
    let detail = srv.get("/v2.1/images/detail").send().await;

    // Assert
    let expected = vec![high.to_string(), low.to_string(), c, b, a];
    assert_eq!(ids(&list.json()), expected);
    assert_eq!(ids(&detail.json()), expected);
}

// §4.2 Rec: the list is capped at 1000 items, with a next link
#[tokio::test]
async fn list_without_limit_is_capped_at_1000() {
    let env = Env::new();
    let all = seed_pages(&env, 1001);
    let srv = env.start();
    let h = srv.host();

    let first = srv.get("/v2.1/images").send().await;
    let big_limit = srv.get("/v2.1/images?limit=5000").send().await;

    assert_eq!(first.status, 200);
    let body = first.json();
    assert_eq!(ids(&body), all[..1000].to_vec());
    assert_eq!(
        body["images_links"],
        json!([{"rel": "next", "href": format!("http://{h}/v2.1/images?marker={}", all[999])}])
    );
    assert_eq!(ids(&big_limit.json()).len(), 1000);
    let next = srv.get(&format!("/v2.1/images?marker={}", all[999])).send().await;
    assert_json(
        &next,
        200,
        &json!({"images": [{"id": all[1000], "name": "page-0", "links": image_links(&srv.image_base, &h, "v2.1", None, &all[1000])}]}),
    );
}

// bad input: an absurdly large limit is not an error (capped, no overflow)
#[tokio::test]
async fn absurdly_large_limit_is_accepted() {
    let env = Env::new();
    let all = seed_pages(&env, 2);
    let srv = env.start();

    let r = srv.get("/v2.1/images?limit=99999999999999999999999999999").send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&r.json()), all);
    assert!(r.json().get("images_links").is_none());
}
