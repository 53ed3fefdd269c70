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

// Nova's limits: from 2.57 the personality (injected files) limits are gone
// (`FILTERED_LIMITS_v257`); the keys of every other microversion stay exactly as they were.
#[tokio::test]
async fn personality_limits_are_gone_from_2_57() {
    let env = Env::new();
    let srv = env.start();
    let keys = |v: &str| {
        let srv = &srv;
        let v = v.to_owned();
        async move {
            let r = srv.get("/v2.1/limits").mv(&v).send().await;
            assert_eq!(r.status, 200, "{}", r.text());
            let body = r.json();
            let mut keys: Vec<String> = body["limits"]["absolute"].as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        }
    };
    let at_2_56 = keys("2.56").await;
    let at_2_57 = keys("2.57").await;
    assert!(at_2_56.contains(&"maxPersonality".to_owned()) && at_2_56.contains(&"maxPersonalitySize".to_owned()));
    let expected: Vec<String> = at_2_56.into_iter().filter(|k| !k.starts_with("maxPersonality")).collect();
    assert_eq!(at_2_57, expected);
    assert_eq!(keys("latest").await, expected);
}

// Nova's limits query schema: from 2.75 only `tenant_id` (`additionalProperties: false`);
// before, anything else is ignored.
#[tokio::test]
async fn unknown_query_parameters_are_400_from_2_75() {
    let env = Env::new();
    let srv = env.start();
    assert_eq!(srv.get("/v2.1/limits?foo=1&bar=2").mv("2.74").send().await.status, 200);
    let r = srv.get("/v2.1/limits?foo=1&bar=2").mv("2.75").send().await;
    assert_fault(&r, 400, "badRequest", "Additional properties are not allowed ('bar', 'foo' were unexpected)");
    let r = srv.get("/v2.1/limits?foo=1").mv("latest").send().await;
    assert_fault(&r, 400, "badRequest", "Additional properties are not allowed ('foo' was unexpected)");
}

// `tenant_id` asks for a project's limits: `os_compute_api:limits:other_project`, admin only,
// checked whenever it is given.
#[tokio::test]
async fn tenant_id_needs_admin() {
    let env = Env::new();
    let srv = env.start();
    for tenant in [PROJ_B, PROJ_A] {
        let r = srv.get(&format!("/v2.1/limits?tenant_id={tenant}")).send().await;
        assert_fault(&r, 403, "forbidden", "Policy doesn't allow os_compute_api:limits:other_project to be performed.");
    }
    let r = srv.get(&format!("/v2.1/limits?tenant_id={PROJ_B}")).token(TOK_ADMIN).mv("2.75").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
}
