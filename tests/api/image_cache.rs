//! The image cache (issue 13, point 4): `GET /v2/cache`, `PUT /v2/cache/{id}`,
//! `DELETE /v2/cache/{id}`, `DELETE /v2/cache` with `x-image-cache-clear-target`, Glance's
//! policies and texts; the node's copies served instead of the store, bounded, checked,
//! kept across a restart, and one cache per node.

use std::time::Duration;

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

fn cached_server(env: &Env, extra: &[&str]) -> Server {
    let mut args = vec!["--image-cache-dir".to_owned(), env.dir().join("cache").display().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    env.start_with(&ServerOpts { extra_args: args, ..Default::default() })
}

async fn cache_state(server: &Server) -> Value {
    let r = g(server, "GET", "/v2/cache").token(TOK_ADMIN).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn cached_ids(state: &Value) -> Vec<String> {
    state["cached_images"].as_array().unwrap().iter().map(|e| e["image_id"].as_str().unwrap().to_owned()).collect()
}

/// Waits until this node's cache lists `id` as cached; its entry.
async fn wait_cached(server: &Server, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = cache_state(server).await;
        if let Some(e) = state["cached_images"].as_array().unwrap().iter().find(|e| e["image_id"] == id) {
            return e.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{id} never got cached: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The image's data file in the file store (named by its id in hex).
fn store_file(env: &Env, id: &str) -> std::path::PathBuf {
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    let path = env.dir().join("images").join(hex);
    assert!(path.is_file(), "{}", path.display());
    path
}

#[tokio::test]
async fn without_a_cache_directory_the_api_is_not_supported_here() {
    let env = Env::new();
    let server = env.start();
    let id = active_raw(&server, b"data").await;
    let r = g(&server, "GET", "/v2/cache").token(TOK_ADMIN).send().await;
    assert_gerr(&r, 404, "Caching via API is not supported at this site.");
    let r = g(&server, "PUT", &format!("/v2/cache/{id}")).token(TOK_ADMIN).send().await;
    assert_gerr(&r, 404, "Caching via API is not supported at this site.");
    // The policy comes first.
    let r = g(&server, "GET", "/v2/cache").send().await;
    assert_gerr(&r, 403, "Access was denied to this resource.");
    // Downloads are not changed by it.
    assert_eq!(g(&server, "GET", &file_path(&id)).send().await.body, b"data");
}

#[tokio::test]
async fn queue_prefetch_serve_and_clear_as_glance_does() {
    let env = Env::new();
    let server = cached_server(&env, &[]);
    let data = pattern(300_000, 7);
    let id = active_raw(&server, &data).await;
    let queued_image = create_raw(&server).await;

    // Admins only; each refusal a bare 403.
    for (method, path) in
        [("GET", "/v2/cache".to_owned()), ("PUT", format!("/v2/cache/{id}")), ("DELETE", "/v2/cache".into())]
    {
        let r = g(&server, method, &path).send().await;
        assert_gerr(&r, 403, "Access was denied to this resource.");
    }
    assert_eq!(cache_state(&server).await, json!({"cached_images": [], "queued_images": []}));
    let missing = new_id();
    let r = g(&server, "PUT", &format!("/v2/cache/{missing}")).token(TOK_ADMIN).send().await;
    assert_gerr(&r, 404, &format!("Image {missing} not found."));
    let r = g(&server, "DELETE", &format!("/v2/cache/{missing}")).token(TOK_ADMIN).send().await;
    assert_gerr(&r, 404, &format!("Image {missing} not found."));
    let r = g(&server, "PUT", &format!("/v2/cache/{queued_image}")).token(TOK_ADMIN).send().await;
    assert_gerr(&r, 400, "Only images with status active can be targeted for queueing");
    let r = g(&server, "GET", "/v2/cache").token(TOK_ADMIN).body("x").send().await;
    assert_gerr(&r, 400, "A body is not expected with this request.");

    // Queued: 202 with no body; the prefetcher caches it.
    let r = g(&server, "PUT", &format!("/v2/cache/{id}")).token(TOK_ADMIN).send().await;
    assert_eq!((r.status, r.body.len()), (202, 0), "{}", r.text());
    let entry = wait_cached(&server, &id).await;
    let keys: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["image_id", "hits", "last_accessed", "last_modified", "size"]);
    assert_eq!((entry["hits"].clone(), entry["size"].clone()), (json!(0), json!(data.len())));
    assert!(entry["last_accessed"].as_f64().unwrap() > 1.7e9, "{entry}");
    assert_eq!(cache_state(&server).await["queued_images"], json!([]));

    // Served from the node's copy: the store's file is gone, the data is not.
    std::fs::remove_file(store_file(&env, &id)).unwrap();
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "the whole image, from the cache");
    let r = g(&server, "GET", &file_path(&id)).header("Range", "bytes=100-199").send().await;
    assert_eq!((r.status, r.header("content-range")), (206, Some("bytes 100-199/300000")));
    assert!(r.body == data[100..200]);
    assert_eq!(wait_cached(&server, &id).await["hits"], 2);
    // A reader may still not download: the cache decides nothing.
    let r = g(&server, "GET", &file_path(&id)).token(TOK_A_READER).send().await;
    assert_eq!(r.status, 403);

    // Clearing: a target it does not know is refused; `cache` empties the cache.
    let r =
        g(&server, "DELETE", "/v2/cache").token(TOK_ADMIN).header("x-image-cache-clear-target", "both").send().await;
    assert_gerr(&r, 400, "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.");
    let r =
        g(&server, "DELETE", "/v2/cache").token(TOK_ADMIN).header("x-image-cache-clear-target", "Cache").send().await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert_eq!(cache_state(&server).await, json!({"cached_images": [], "queued_images": []}));
    assert_eq!(std::fs::read_dir(env.dir().join("cache/ready")).unwrap().count(), 0);
    // Now the store is the only source, and its file is gone (Glance's 204 for data its
    // store does not have).
    assert_eq!(g(&server, "GET", &file_path(&id)).send().await.status, 204);
}

#[tokio::test]
async fn whole_downloads_fill_the_cache_within_its_bound() {
    let env = Env::new();
    let server = cached_server(&env, &["--image-cache-max-size", "250000"]);
    let (a, b) = (pattern(100_000, 1), pattern(100_000, 2));
    let (ia, ib) = (active_raw(&server, &a).await, active_raw(&server, &b).await);
    let big = active_raw(&server, &pattern(300_000, 3)).await;

    // A range read copies nothing; a whole download does.
    g(&server, "GET", &file_path(&ia)).header("Range", "bytes=0-9").send().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cached_ids(&cache_state(&server).await), Vec::<String>::new());
    assert!(g(&server, "GET", &file_path(&ia)).send().await.body == a);
    wait_cached(&server, &ia).await;
    assert!(g(&server, "GET", &file_path(&ib)).send().await.body == b);
    wait_cached(&server, &ib).await;
    // Larger than the whole cache: never copied.
    g(&server, "GET", &file_path(&big)).send().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!cached_ids(&cache_state(&server).await).contains(&big));

    // A third image pushes out the least recently used one (`ib`: `ia` was read since).
    assert!(g(&server, "GET", &file_path(&ia)).send().await.body == a);
    let ic = active_raw(&server, &pattern(100_000, 4)).await;
    g(&server, "GET", &file_path(&ic)).send().await;
    wait_cached(&server, &ic).await;
    let mut ids = cached_ids(&cache_state(&server).await);
    ids.sort();
    let mut want = vec![ia.clone(), ic.clone()];
    want.sort();
    assert_eq!(ids, want);

    // An image deleted through either API leaves the cache with it.
    let r = g(&server, "DELETE", &img_path(&ia)).send().await;
    assert_eq!(r.status, 204);
    assert_eq!(cached_ids(&cache_state(&server).await), vec![ic.clone()]);
    assert!(!env.dir().join("cache/ready").join(&ia).exists());

    // The copies are found again after a restart; a queued image is queued again.
    let queued = active_raw(&server, b"later").await;
    drop(server);
    std::fs::File::create(env.dir().join("cache/queue").join(&queued)).unwrap();
    let server = cached_server(&env, &["--image-cache-max-size", "250000"]);
    wait_cached(&server, &queued).await;
    let ids = cached_ids(&cache_state(&server).await);
    assert!(ids.contains(&ic) && ids.contains(&queued), "{ids:?}");
    // DELETE /v2/cache/{id}: out of this node's cache, the image stays.
    let r = g(&server, "DELETE", &format!("/v2/cache/{ic}")).token(TOK_ADMIN).send().await;
    assert_eq!(r.status, 204);
    assert_eq!(cached_ids(&cache_state(&server).await), vec![queued]);
    assert_eq!(show(&server, &ic).await["status"], "active");
}

/// Each node has its own cache: what one caches, the other does not list (PostgreSQL only:
/// several nodes share a PostgreSQL catalogue).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_node_has_its_own_cache() {
    let env = Env::new();
    if !env.is_postgres() {
        return;
    }
    let node = |name: &str| {
        let args = vec!["--image-cache-dir".to_owned(), env.dir().join(name).display().to_string()];
        env.start_with(&ServerOpts { extra_args: args, ..Default::default() })
    };
    let (a, b) = (node("cache-a"), node("cache-b"));
    let id = active_raw(&a, &pattern(50_000, 9)).await;
    let r = g(&a, "PUT", &format!("/v2/cache/{id}")).token(TOK_ADMIN).send().await;
    assert_eq!(r.status, 202);
    wait_cached(&a, &id).await;
    assert_eq!(cache_state(&b).await, json!({"cached_images": [], "queued_images": []}));
    let r = g(&b, "PUT", &format!("/v2/cache/{id}")).token(TOK_ADMIN).send().await;
    assert_eq!(r.status, 202);
    wait_cached(&b, &id).await;
    // A delete through one node: the other never serves its copy again.
    assert_eq!(g(&a, "DELETE", &img_path(&id)).send().await.status, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(g(&b, "GET", &file_path(&id)).send().await.status, 404);
    // Its copy is removed on demand though the catalogue has no such image any more.
    assert_eq!(g(&b, "DELETE", &format!("/v2/cache/{id}")).token(TOK_ADMIN).send().await.status, 204);
    assert_eq!(cached_ids(&cache_state(&b).await), Vec::<String>::new());
}
