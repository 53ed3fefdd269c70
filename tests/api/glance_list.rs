//! Glance v2: GET /v2/images (glance-v2 §13, §10; checklist §18 #46–#59).
//! Image members are not implemented by the server, so the member_status=pending half of #58,
//! the member half of #60 and all of #63 are not tested (only member_status validation is).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

fn query_pairs(link: &str) -> BTreeSet<(String, String)> {
    let q = link.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

// §18 #46, §13, §10: default order created_at desc then id desc, 25 per page, without deleted,
// killed or os_hidden images.
#[tokio::test]
async fn default_list_order_and_exclusions() {
    let env = Env::new();
    // 28 images one second apart (`--count` steps created_at by 1 s), two sharing a newer
    // created_at (so id desc decides between them), one older.
    let steps = env.seed_count(&Seed::new().no_id().created_at("2024-01-01T00:00:00Z"), 28);
    let tie1 = env.seed(&Seed::new().created_at("2025-01-01T00:00:00Z"));
    let tie2 = env.seed(&Seed::new().created_at("2025-01-01T00:00:00Z"));
    let older = env.seed(&Seed::new().created_at("2023-01-01T00:00:00Z"));
    let killed = env.seed(&Seed::new().status("killed").created_at("2026-01-01T00:00:00Z"));
    let hidden = env.seed(&Seed::new().os_hidden().created_at("2026-01-01T00:00:00Z"));
    let server = env.start();
    let deleted = create(&server, json!({"name": "deleted"})).await;
    let r = g(&server, "DELETE", &img_path(&id_of(&deleted))).send().await;
    assert_no_content(&r);
    let mut ties = vec![id_of(&tie1), id_of(&tie2)];
    ties.sort();
    ties.reverse();
    let mut expected = ties;
    expected.extend(steps.iter().rev().map(id_of));
    expected.push(id_of(&older));

    let l = list_as(&server, TOK_A, "/v2/images").await;
    assert_eq!(ids(&l), expected[..25].to_vec(), "first page: newest first, id desc on ties, 25 items");
    assert_eq!(l["first"], json!("/v2/images"));
    assert_eq!(l["schema"], json!("/v2/schemas/images"));
    assert_eq!(l["next"], json!(format!("/v2/images?marker={}", expected[24])));
    let mut keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, vec!["first", "images", "next", "schema"]);
    let l2 = list_as(&server, TOK_A, l["next"].as_str().unwrap()).await;
    assert_eq!(ids(&l2), expected[25..].to_vec());
    assert!(l2.get("next").is_none(), "short last page has no next: {l2}");
    let all: Vec<String> = [ids(&l), ids(&l2)].concat();
    assert_eq!(all.len(), 31);
    for x in [&killed, &hidden, &deleted] {
        assert!(!all.contains(&id_of(x)), "{} listed", x["status"]);
    }
    // Each listed image is the full image representation (same as GET).
    let one = &l["images"][0];
    assert_eq!(one, &show(&server, &expected[0]).await);
}

// §18 #47, §13: limit=1 pages through everything, without duplicates; an exactly-full last
// page has a next that leads to an empty page without next.
#[tokio::test]
async fn paging_with_limit() {
    let env = Env::new();
    env.seed_count(&Seed::new().no_id(), 5);
    let server = env.start();
    let all = ids(&list_as(&server, TOK_A, "/v2/images").await);
    assert_eq!(all.len(), 5);
    let mut seen = vec![];
    let mut link = "/v2/images?limit=1".to_string();
    loop {
        let page = list_as(&server, TOK_A, &link).await;
        let got = ids(&page);
        assert!(got.len() <= 1);
        seen.extend(got.clone());
        assert_eq!(query_pairs(page["first"].as_str().unwrap()), pairs(&[("limit", "1")]), "first drops marker");
        match page.get("next") {
            Some(n) => {
                let n = n.as_str().unwrap().to_string();
                assert!(n.starts_with("/v2/images?"), "relative next: {n}");
                assert_eq!(got.len(), 1, "next only after a full page");
                assert_eq!(query_pairs(&n), pairs(&[("limit", "1"), ("marker", &got[0])]));
                link = n;
            }
            None => {
                assert!(got.is_empty(), "exactly-full last page leads to an empty page");
                break;
            }
        }
        assert!(seen.len() <= 5, "paging does not terminate: {seen:?}");
    }
    assert_eq!(seen, all, "limit=1 pages through everything in order, no duplicates");
    // limit=0 → empty page.
    let l = list_as(&server, TOK_A, "/v2/images?limit=0").await;
    assert_eq!(l["images"], json!([]));
}

// §18 #48, §13, §11: limit validation and the 1000 cap.
#[tokio::test]
async fn limit_validation_and_cap() {
    let env = Env::new();
    env.seed_count(&Seed::new().no_id(), 1001);
    let server = env.start();
    let r = g(&server, "GET", "/v2/images?limit=abc").send().await;
    assert_gerr(&r, 400, "limit param must be an integer");
    let r = g(&server, "GET", "/v2/images?limit=-1").send().await;
    assert_gerr(&r, 400, "limit param must be positive");
    let l = list_as(&server, TOK_A, "/v2/images?limit=5000").await;
    assert_eq!(l["images"].as_array().unwrap().len(), 1000, "limit capped at 1000");
    assert!(l.get("next").is_some());
    let l2 = list_as(&server, TOK_A, l["next"].as_str().unwrap()).await;
    assert_eq!(l2["images"].as_array().unwrap().len(), 1);
}

// §18 #49, §13: an unknown or deleted marker → 400; one the caller cannot see → 403.
#[tokio::test]
async fn marker_errors() {
    let env = Env::new();
    let other = env.seed(&Seed::new().owner(PROJ_B));
    env.seed(&Seed::new());
    let server = env.start();
    let deleted = create(&server, json!({})).await;
    assert_no_content(&g(&server, "DELETE", &img_path(&id_of(&deleted))).send().await);
    let r = g(&server, "GET", &format!("/v2/images?marker={}", new_id())).send().await;
    assert_gerr_code(&r, 400);
    let r = g(&server, "GET", &format!("/v2/images?marker={}", id_of(&deleted))).send().await;
    assert_gerr_code(&r, 400);
    let r = g(&server, "GET", &format!("/v2/images?marker={}", id_of(&other))).send().await;
    assert_gerr_code(&r, 403);
}

// §18 #50, §13: first = query minus marker; next = query with the new marker; schema link.
#[tokio::test]
async fn first_and_next_links() {
    let env = Env::new();
    let imgs = env.seed_count(&Seed::new().no_id(), 4);
    let server = env.start();
    let all = ids(&list_as(&server, TOK_A, "/v2/images").await);
    assert_eq!(all.len(), imgs.len());
    let l = list_as(&server, TOK_A, &format!("/v2/images?status=active&limit=2&marker={}", all[0])).await;
    assert_eq!(ids(&l), all[1..3].to_vec());
    let first = l["first"].as_str().unwrap();
    assert!(first.starts_with("/v2/images?"), "{first}");
    assert_eq!(query_pairs(first), pairs(&[("status", "active"), ("limit", "2")]));
    let next = l["next"].as_str().unwrap();
    assert!(next.starts_with("/v2/images?"), "{next}");
    assert_eq!(query_pairs(next), pairs(&[("status", "active"), ("limit", "2"), ("marker", &all[2])]));
    assert_eq!(l["schema"], json!("/v2/schemas/images"));
}

/// Creates (via the API, as A) an image and optionally uploads `size` bytes.
async fn mk(server: &Server, body: Value, size: Option<usize>) -> String {
    let id = id_of(&create(server, body).await);
    if let Some(n) = size {
        upload_ok(server, &id, &pattern(n, 5)).await;
    }
    id
}

fn set(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn list_set(server: &Server, token: &str, path: &str) -> BTreeSet<String> {
    ids(&list_as(server, token, path).await).into_iter().collect()
}

// §18 #51, §13: each filter returns only the matching images.
#[tokio::test]
async fn filters() {
    let env = Env::new();
    let server = env.start();
    let a = mk(
        &server,
        json!({"name": "alpha", "disk_format": "raw", "container_format": "bare", "tags": ["t1", "t2"]}),
        Some(10),
    )
    .await;
    let b = mk(
        &server,
        json!({"name": "beta", "disk_format": "qcow2", "container_format": "ovf", "tags": ["t1"]}),
        Some(20),
    )
    .await;
    let c = mk(
        &server,
        json!({"name": "gamma", "disk_format": "raw", "container_format": "bare", "visibility": "private"}),
        Some(30),
    )
    .await;
    let q = mk(&server, json!({"name": "alpha", "visibility": "community"}), None).await;
    let bb = id_of(&create_as(&server, TOK_B, json!({"name": "alpha", "visibility": "community"})).await);
    let owner_q = format!("owner={PROJ_A}");
    let id_q = format!("id={b}");
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        ("name=alpha", set(&[&a, &q])),
        ("name=nothing", set(&[])),
        ("status=queued", set(&[&q])),
        ("status=active", set(&[&a, &b, &c])),
        ("visibility=private", set(&[&c])),
        ("visibility=shared", set(&[&a, &b])),
        ("container_format=ovf", set(&[&b])),
        ("disk_format=raw", set(&[&a, &c])),
        ("size=20", set(&[&b])),
        ("size_min=20", set(&[&b, &c])),
        ("size_max=20", set(&[&a, &b])),
        ("size_min=10&size_max=20", set(&[&a, &b])),
        ("size_min=11&size_max=29", set(&[&b])),
        ("tag=t1", set(&[&a, &b])),
        ("tag=t1&tag=t2", set(&[&a])),
        ("tag=t3", set(&[])),
        (&owner_q, set(&[&a, &b, &c, &q])),
        (&id_q, set(&[&b])),
    ];
    for (query, want) in &cases {
        let got = list_set(&server, TOK_A, &format!("/v2/images?{query}")).await;
        assert_eq!(&got, want, "?{query}");
    }
    // visibility=community includes other projects' community images; owner filter as admin.
    assert_eq!(list_set(&server, TOK_A, "/v2/images?visibility=community").await, set(&[&q, &bb]));
    assert_eq!(list_set(&server, TOK_ADMIN, &format!("/v2/images?owner={PROJ_B}&visibility=all")).await, set(&[&bb]));
    // Non-numeric range → 400.
    let r = g(&server, "GET", "/v2/images?size_min=big").send().await;
    assert_gerr(&r, 400, "Unable to filter on a range with a non-numeric value.");
}

// §18 #52, §13: the in:/eq: operators; an unknown operator → 400.
#[tokio::test]
async fn filter_operators() {
    let env = Env::new();
    let server = env.start();
    let ab = mk(&server, json!({"name": "a,b"}), None).await;
    let c = mk(&server, json!({"name": "c"}), None).await;
    let _d = mk(&server, json!({"name": "d"}), None).await;
    let fb = mk(&server, json!({"name": "foo:bar"}), None).await;
    let act = mk(&server, json!({"name": "act", "disk_format": "raw", "container_format": "bare"}), Some(1)).await;
    let all = list_set(&server, TOK_A, "/v2/images").await;
    assert_eq!(all.len(), 5);
    assert_eq!(list_set(&server, TOK_A, "/v2/images?status=in:queued,active").await, all);
    assert_eq!(list_set(&server, TOK_A, "/v2/images?status=in:active").await, set(&[&act]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?name=in:%22a,b%22,c").await, set(&[&ab, &c]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?name=eq:foo:bar").await, set(&[&fb]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?name=eq:c").await, set(&[&c]));
    let r = g(&server, "GET", "/v2/images?name=foo:bar").send().await;
    assert_gerr(&r, 400, "Unable to filter by unknown operator 'foo'.");
}

// §18 #53, §13: created_at/updated_at with comparison operators; a bad time → 400.
#[tokio::test]
async fn time_filters() {
    let env = Env::new();
    let old = env.seed(&Seed::new().created_at("2020-01-01T00:00:00Z"));
    let mid = env.seed(&Seed::new().created_at("2022-06-01T12:00:00Z"));
    let new = env.seed(&Seed::new().created_at("2024-01-01T00:00:00Z"));
    let server = env.start();
    let (o, m, n) = (id_of(&old), id_of(&mid), id_of(&new));
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        ("created_at=gt:2022-06-01T12:00:00Z", set(&[&n])),
        ("created_at=gte:2022-06-01T12:00:00Z", set(&[&m, &n])),
        ("created_at=lt:2022-06-01T12:00:00Z", set(&[&o])),
        ("created_at=lte:2022-06-01T12:00:00Z", set(&[&o, &m])),
        ("created_at=eq:2022-06-01T12:00:00Z", set(&[&m])),
        ("created_at=neq:2022-06-01T12:00:00Z", set(&[&o, &n])),
    ];
    let mut wrong = vec![];
    for (query, want) in &cases {
        let got = list_set(&server, TOK_A, &format!("/v2/images?{query}")).await;
        if &got != want {
            wrong.push(format!("?{query}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "old={o} mid={m} new={n}\n{}", wrong.join("\n"));
    for bad in ["created_at=gt:yesterday", "created_at=gt:2022-13-45T00:00:00Z", "updated_at=lt:nope"] {
        let r = g(&server, "GET", &format!("/v2/images?{bad}")).send().await;
        assert_gerr_code(&r, 400);
    }
}

// §18 #54, §13: an arbitrary key filters on the extra property, exact string match.
#[tokio::test]
async fn extra_property_filter() {
    let env = Env::new();
    let server = env.start();
    let u = mk(&server, json!({"os_distro": "ubuntu", "foo": "bar"}), None).await;
    let u2 = mk(&server, json!({"os_distro": "ubuntu2"}), None).await;
    let _n = mk(&server, json!({}), None).await;
    assert_eq!(list_set(&server, TOK_A, "/v2/images?os_distro=ubuntu").await, set(&[&u]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?os_distro=ubuntu2").await, set(&[&u2]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?foo=bar").await, set(&[&u]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?foo=BAR").await, set(&[]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?foo=bar&os_distro=ubuntu2").await, set(&[]));
}

// §18 #55, §13: parameter validation; os_hidden=true returns only hidden images.
#[tokio::test]
async fn parameter_validation() {
    let env = Env::new();
    let server = env.start();
    let visible = mk(&server, json!({}), None).await;
    let hidden = mk(&server, json!({"os_hidden": true}), None).await;
    let prot = mk(&server, json!({"protected": true}), None).await;
    for q in [
        "protected=yes",
        "visibility=bogus",
        "changes-since=2020-01-01T00:00:00Z",
        "member_status=x",
        "os_hidden=maybe",
        "sort_dir=up",
        "sort_key=foo",
    ] {
        let r = g(&server, "GET", &format!("/v2/images?{q}")).send().await;
        assert_gerr_code(&r, 400);
    }
    let r = g(&server, "GET", "/v2/images?visibility=bogus").send().await;
    assert_gerr(&r, 400, "Invalid visibility value: bogus");
    assert_eq!(list_set(&server, TOK_A, "/v2/images?os_hidden=true").await, set(&[&hidden]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?os_hidden=True").await, set(&[&hidden]), "lower-cased first");
    assert_eq!(list_set(&server, TOK_A, "/v2/images?os_hidden=false").await, set(&[&visible, &prot]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?protected=true").await, set(&[&prot]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?protected=false").await, set(&[&visible]));
    for ms in ["pending", "accepted", "rejected", "all"] {
        let r = g(&server, "GET", &format!("/v2/images?member_status={ms}")).send().await;
        assert_eq!(r.status, 200, "member_status={ms}: {}", r.text());
    }
}

// §18 #56, §13: both sorting syntaxes; invalid key/dir and mixing → 400.
#[tokio::test]
async fn sorting() {
    let env = Env::new();
    let s1 = env.seed(&Seed::new().size(100).name("b"));
    let s2 = env.seed(&Seed::new().size(300).name("a"));
    let s3 = env.seed(&Seed::new().size(200).name("c"));
    let server = env.start();
    let (i1, i2, i3) = (id_of(&s1), id_of(&s2), id_of(&s3));
    let desc = vec![i2.clone(), i3.clone(), i1.clone()];
    let asc = vec![i1.clone(), i3.clone(), i2.clone()];
    assert_eq!(ids(&list_as(&server, TOK_A, "/v2/images?sort_key=size&sort_dir=desc").await), desc);
    assert_eq!(ids(&list_as(&server, TOK_A, "/v2/images?sort=size:desc").await), desc);
    assert_eq!(ids(&list_as(&server, TOK_A, "/v2/images?sort=size").await), desc, "missing dir = desc");
    assert_eq!(ids(&list_as(&server, TOK_A, "/v2/images?sort_key=size&sort_dir=asc").await), asc);
    assert_eq!(ids(&list_as(&server, TOK_A, "/v2/images?sort=size:asc").await), asc);
    assert_eq!(
        ids(&list_as(&server, TOK_A, "/v2/images?sort=name:asc").await),
        vec![i2.clone(), i1.clone(), i3.clone()]
    );
    // Paging follows the sort order.
    let p1 = list_as(&server, TOK_A, "/v2/images?sort=size:asc&limit=2").await;
    assert_eq!(ids(&p1), asc[..2].to_vec());
    let p2 = list_as(&server, TOK_A, p1["next"].as_str().unwrap()).await;
    assert_eq!(ids(&p2), asc[2..].to_vec());
    let r = g(&server, "GET", "/v2/images?sort_key=owner").send().await;
    assert_gerr_code(&r, 400);
    assert!(explanation(&r).starts_with("Invalid sort key: owner"), "{}", r.text());
    let r = g(&server, "GET", "/v2/images?sort=bogus:asc").send().await;
    assert_gerr_code(&r, 400);
    let r = g(&server, "GET", "/v2/images?sort=size:up").send().await;
    assert_gerr_code(&r, 400);
    let r = g(&server, "GET", "/v2/images?sort_key=size&sort_dir=sideways").send().await;
    assert_gerr(&r, 400, "Invalid sort direction: sideways");
    let r = g(&server, "GET", "/v2/images?sort=size:desc&sort_key=name").send().await;
    assert_gerr(&r, 400, "Old and new sorting syntax cannot be combined");
    let r = g(&server, "GET", "/v2/images?sort_key=size&sort_key=name&sort_dir=asc&sort_dir=desc&sort_dir=asc")
        .send()
        .await;
    assert_gerr_code(&r, 400);
}

// §18 #57, #58 (community half), #59, §10: who sees what in the list.
#[tokio::test]
async fn list_visibility_rules() {
    let env = Env::new();
    let server = env.start();
    let a_priv = id_of(&create(&server, json!({"visibility": "private"})).await);
    let a_shared = id_of(&create(&server, json!({"visibility": "shared"})).await);
    let a_comm = id_of(&create(&server, json!({"visibility": "community"})).await);
    let b_priv = id_of(&create_as(&server, TOK_B, json!({"visibility": "private"})).await);
    let b_shared = id_of(&create_as(&server, TOK_B, json!({"visibility": "shared"})).await);
    let b_comm = id_of(&create_as(&server, TOK_B, json!({"visibility": "community"})).await);
    let public = id_of(&create_as(&server, TOK_ADMIN, json!({"visibility": "public"})).await);
    let adm_priv = id_of(&create_as(&server, TOK_ADMIN, json!({"visibility": "private"})).await);

    // #57: public, own (any visibility); no other project's private/shared/community.
    assert_eq!(list_set(&server, TOK_A, "/v2/images").await, set(&[&a_priv, &a_shared, &a_comm, &public]));
    assert_eq!(list_set(&server, TOK_B, "/v2/images").await, set(&[&b_priv, &b_shared, &b_comm, &public]));
    // A reader sees the same as a member of the project.
    assert_eq!(list_set(&server, TOK_A_READER, "/v2/images").await, set(&[&a_priv, &a_shared, &a_comm, &public]));
    // #58: visibility=community lists every community image.
    assert_eq!(list_set(&server, TOK_A, "/v2/images?visibility=community").await, set(&[&a_comm, &b_comm]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?visibility=public").await, set(&[&public]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?visibility=private").await, set(&[&a_priv]));
    assert_eq!(list_set(&server, TOK_A, "/v2/images?visibility=shared").await, set(&[&a_shared]));
    assert_eq!(
        list_set(&server, TOK_A, "/v2/images?visibility=all").await,
        set(&[&a_priv, &a_shared, &a_comm, &b_comm, &public])
    );
    // #59: an admin lists other projects' private and shared images (community only when asked).
    assert_eq!(
        list_set(&server, TOK_ADMIN, "/v2/images").await,
        set(&[&a_priv, &a_shared, &b_priv, &b_shared, &public, &adm_priv])
    );
    assert_eq!(
        list_set(&server, TOK_ADMIN, "/v2/images?visibility=all").await,
        set(&[&a_priv, &a_shared, &a_comm, &b_priv, &b_shared, &b_comm, &public, &adm_priv])
    );
    assert_eq!(
        list_set(&server, TOK_ADMIN, "/v2/images?visibility=private").await,
        set(&[&a_priv, &b_priv, &adm_priv])
    );
}
