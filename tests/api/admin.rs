//! The admin listener (issue 14): health, readiness and Prometheus metrics, apart from the
//! public APIs.

use std::collections::BTreeMap;

use serde_json::json;

use crate::glance_helpers::*;
use crate::helpers::*;

async fn admin_get(server: &Server, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("{}{path}", server.admin_base)).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the sample of `name` whose labels include all of `labels` (0 when absent).
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let have: BTreeMap<&str, &str> = rest
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            labels.iter().all(|(k, v)| have.get(k) == Some(v)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test]
async fn health_and_readiness() {
    let env = Env::new();
    let server = env.start();
    assert_eq!(admin_get(&server, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(admin_get(&server, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(admin_get(&server, "/nope").await.0, 404);
    // The public APIs do not answer these paths.
    assert_eq!(server.get("/healthz").send().await.status, 300);
    if env.is_postgres() {
        return; // PostgreSQL's outage: tests/api/postgres.rs
    }
    // The catalogue lost (its file deleted under the server): not ready, then, and says why.
    let seeded = env.seed(&Seed::new());
    std::fs::remove_file(env.db_path()).unwrap();
    let _ = server.post(&meta_path(seeded["id"].as_str().unwrap()), json!({"metadata": {"a": "b"}})).send().await;
    let (status, text) = admin_get(&server, "/readyz").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.starts_with("not ready: the catalogue does not answer"), "{text}");
}

/// The counters move by exactly the requests made, per API, route template (never the raw
/// path), method and status; latencies, the store's and the build's metrics are there.
#[tokio::test]
async fn request_counters_move_by_exactly_the_requests_made() {
    let env = Env::new();
    let seeded = env.seed(&Seed::new());
    let id = seeded["id"].as_str().unwrap();
    let server = env.start();
    let route = [("api", "compute"), ("route", "/images/{id}/metadata"), ("method", "GET"), ("status", "200")];
    let (_, before) = admin_get(&server, "/metrics").await;
    let start = sample(&before, "imagemeta_http_requests_total", &route);
    for _ in 0..3 {
        assert_eq!(server.get(&meta_path(id)).send().await.status, 200);
    }
    assert_eq!(server.get(&meta_path(&new_id())).send().await.status, 404);
    assert_eq!(server.post(&meta_path(id), json!({"metadata": {"k": "v"}})).send().await.status, 200);
    assert_eq!(g(&server, "GET", &img_path(id)).send().await.status, 200);
    assert_eq!(g(&server, "FROB", "/v2/images").send().await.status, 501);
    let (status, after) = admin_get(&server, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&after, "imagemeta_http_requests_total", &route) - start, 3.0, "{after}");
    let missing = [("api", "compute"), ("route", "/images/{id}/metadata"), ("method", "GET"), ("status", "404")];
    assert_eq!(sample(&after, "imagemeta_http_requests_total", &missing), 1.0);
    let post = [("api", "compute"), ("route", "/images/{id}/metadata"), ("method", "POST"), ("status", "200")];
    assert_eq!(sample(&after, "imagemeta_http_requests_total", &post), 1.0);
    let glance = [("api", "image"), ("route", "/v2/images/{id}"), ("method", "GET"), ("status", "200")];
    assert_eq!(sample(&after, "imagemeta_http_requests_total", &glance), 1.0);
    // A method no route serves has no route: its label is `unrouted` (bounded, like the rest).
    let other = [("api", "image"), ("route", "unrouted"), ("method", "other"), ("status", "501")];
    assert_eq!(sample(&after, "imagemeta_http_requests_total", &other), 1.0);
    assert!(!after.contains(id), "no raw path or id in a label");
    assert_eq!(
        sample(&after, "imagemeta_http_request_duration_seconds_count", &[("api", "compute"), ("method", "GET")]) - 0.0,
        sample(&after, "imagemeta_http_requests_total", &[("api", "compute"), ("method", "GET")])
    );
    assert_eq!(sample(&after, "imagemeta_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert!(
        sample(&after, "imagemeta_store_cache_hits_total", &[])
            + sample(&after, "imagemeta_store_cache_misses_total", &[])
            >= 5.0
    );
    if !env.is_postgres() {
        assert!(sample(&after, "imagemeta_store_write_batch_size_count", &[]) >= 1.0, "{after}");
        assert!(after.contains("imagemeta_store_write_queue_depth"), "{after}");
    } else {
        assert!(after.contains("imagemeta_store_pool_connections"), "{after}");
    }
}
