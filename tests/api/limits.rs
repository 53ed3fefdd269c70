//! `GET /limits` and `maxImageMeta` (spec §7, checklist #57).

use serde_json::json;

use crate::helpers::*;

// §12 #57
#[tokio::test]
async fn max_image_meta_equals_quota_below_2_39() {
    let env = Env::new();
    let srv = env.start_quota(7);

    let default_mv = srv.get("/v2.1/limits").send().await;
    let at_2_38 = srv.get("/v2.1/limits").mv("2.38").send().await;
    let v2 = srv.get(&format!("/v2/{PROJ_A}/limits")).send().await;

    for r in [&default_mv, &at_2_38, &v2] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.content_type(), Some("application/json"));
        let body = r.json();
        assert_eq!(body["limits"]["absolute"]["maxImageMeta"], json!(7), "{body}");
        assert_eq!(body["limits"]["rate"], json!([]), "{body}");
    }
    assert_mv_headers(&at_2_38, "2.38");
}

// §12 #57
#[tokio::test]
async fn max_image_meta_is_absent_from_2_39() {
    let env = Env::new();
    let srv = env.start_quota(7);

    let at_2_39 = srv.get("/v2.1/limits").mv("2.39").send().await;
    let latest = srv.get("/v2.1/limits").mv("latest").send().await;

    for r in [&at_2_39, &latest] {
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert!(body["limits"]["absolute"].is_object(), "{body}");
        assert!(body["limits"]["absolute"].get("maxImageMeta").is_none(), "{body}");
        assert_eq!(body["limits"]["rate"], json!([]));
    }
}

// §12 #57 with defaults: 128, and -1 for unlimited
#[tokio::test]
async fn max_image_meta_default_128_and_unlimited_minus_one() {
    let env = Env::new();
    let default = env.start();
    let unlimited = Env::new().start_quota(-1);

    let d = default.get("/v2.1/limits").send().await;
    let u = unlimited.get("/v2.1/limits").send().await;

    assert_eq!(d.json()["limits"]["absolute"]["maxImageMeta"], json!(128), "{}", d.text());
    assert_eq!(u.json()["limits"]["absolute"]["maxImageMeta"], json!(-1), "{}", u.text());
}
