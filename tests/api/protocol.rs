//! Protocol-level behaviour: request ids, microversions, content types,
//! routing (404 / 405), project ids in URLs, body size limit, bad input
//! (spec §1, §2, §5, §6; checklist #24-#34, #36 (as overridden), #37, #58).

use serde_json::json;

use crate::helpers::*;

fn seeded(env: &Env) -> String {
    env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------

// §12 #31
#[tokio::test]
async fn every_api_response_has_equal_well_formed_request_ids() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let ok = srv.get(&meta_path(&id)).send().await;
    let v2 = srv.get(&format!("/v2/images/{id}/metadata")).send().await;
    let not_found = srv.get(&meta_path(&new_id())).send().await;
    let unauth = srv.get(&meta_path(&id)).no_token().send().await;
    let bad = srv.post(&meta_path(&id), json!({})).send().await;
    let unrouted = srv.get("/v2.1/nothing-here").header("Accept", "application/json").send().await;
    let version_doc = srv.get("/v2.1/").no_token().send().await;
    let no_content = srv.delete(&key_path(&id, "a")).send().await;

    let mut seen = std::collections::HashSet::new();
    for r in [&ok, &v2, &not_found, &unauth, &bad, &unrouted, &version_doc, &no_content] {
        let rid = assert_request_ids(r);
        assert!(seen.insert(rid.clone()), "request ids are unique per request: {rid}");
    }
}

// §12 #31
#[tokio::test]
async fn root_versions_document_has_no_request_id() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.get("/").no_token().send().await;

    assert_eq!(r.status, 200);
    assert!(r.header("x-compute-request-id").is_none(), "{:?}", r.headers);
    assert!(r.header("x-openstack-request-id").is_none(), "{:?}", r.headers);
}

// §12 #32
#[tokio::test]
async fn inbound_request_id_is_not_echoed() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let inbound = "req-01234567-89ab-cdef-0123-456789abcdef";

    let r = srv.get(&meta_path(&id)).header("X-OpenStack-Request-ID", inbound).send().await;

    assert_eq!(r.status, 200);
    let rid = assert_request_ids(&r);
    assert_ne!(rid, inbound);
}

// ---------------------------------------------------------------------------
// Microversions
// ---------------------------------------------------------------------------

// §12 #24
#[tokio::test]
async fn at_2_36_image_proxies_are_404_but_metadata_works() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let nf = "The resource could not be found.";

    let list = srv.get("/v2.1/images").mv("2.36").send().await;
    let detail = srv.get("/v2.1/images/detail").mv("2.36").send().await;
    let show = srv.get(&image_path(&id)).mv("2.36").send().await;
    let del = srv.delete(&image_path(&id)).mv("2.36").send().await;
    let md = srv.get(&meta_path(&id)).mv("2.36").send().await;

    for r in [&list, &detail, &show, &del] {
        assert_fault(r, 404, "itemNotFound", nf);
        assert_mv_headers(r, "2.36");
    }
    assert_json(&md, 200, &json!({"metadata": {"a": "1"}}));
    assert_mv_headers(&md, "2.36");
    // The DELETE at 2.36 did not delete anything.
    assert_eq!(srv.get(&image_path(&id)).send().await.status, 200);
}

// §12 #24 (window edge): 2.35 still serves the image proxies
#[tokio::test]
async fn at_2_35_image_proxies_work() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let list = srv.get("/v2.1/images").mv("2.35").send().await;
    let show = srv.get(&image_path(&id)).mv("2.35").send().await;

    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(show.status, 200, "{}", show.text());
    assert_mv_headers(&show, "2.35");
}

// §12 #25
#[tokio::test]
async fn at_2_39_metadata_calls_are_404_even_with_invalid_body() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let nf = "The resource could not be found.";

    let get = srv.get(&meta_path(&id)).mv("2.39").send().await;
    let get_key = srv.get(&key_path(&id, "a")).mv("2.39").send().await;
    let post = srv.post(&meta_path(&id), json!({"bogus": 1})).mv("2.39").send().await;
    let post_malformed = srv.call("POST", &meta_path(&id)).json_bytes("{").mv("2.39").send().await;
    let put = srv.put(&meta_path(&id), json!({"metadata": {"a": 1}})).mv("2.39").send().await;
    let put_item = srv.put(&key_path(&id, "a"), json!({"meta": {"b": "2"}})).mv("2.39").send().await;
    let del = srv.delete(&key_path(&id, "a")).mv("2.39").send().await;

    for r in [&get, &get_key, &post, &put, &put_item, &del] {
        assert_fault(r, 404, "itemNotFound", nf);
        assert_mv_headers(r, "2.39");
    }
    // Body parsing (§2 step 6) precedes the window check (step 8).
    assert_fault(&post_malformed, 400, "badRequest", "Malformed request body");
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
}

// §12 #26
#[tokio::test]
async fn at_2_38_metadata_calls_behave_normally() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let post = srv.post(&meta_path(&id), json!({"metadata": {"b": "2"}})).mv("2.38").send().await;
    let put_item = srv.put(&key_path(&id, "c"), json!({"meta": {"c": "3"}})).mv("2.38").send().await;
    let get_key = srv.get(&key_path(&id, "b")).mv("2.38").send().await;
    let del = srv.delete(&key_path(&id, "a")).mv("2.38").send().await;
    let get = srv.get(&meta_path(&id)).mv("2.38").send().await;

    assert_json(&post, 200, &json!({"metadata": {"a": "1", "b": "2"}}));
    assert_json(&put_item, 200, &json!({"meta": {"c": "3"}}));
    assert_json(&get_key, 200, &json!({"meta": {"b": "2"}}));
    assert_no_content(&del);
    assert_json(&get, 200, &json!({"metadata": {"b": "2", "c": "3"}}));
    for r in [&post, &put_item, &get_key, &del, &get] {
        assert_mv_headers(r, "2.38");
    }
}

// §12 #27
#[tokio::test]
async fn legacy_header_is_honoured_and_new_header_wins() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let legacy_38 = srv.get(&meta_path(&id)).header("X-OpenStack-Nova-API-Version", "2.38").send().await;
    let legacy_39 = srv.get(&meta_path(&id)).header("X-OpenStack-Nova-API-Version", "2.39").send().await;
    let both = srv
        .get(&meta_path(&id))
        .header("X-OpenStack-Nova-API-Version", "2.39")
        .header("OpenStack-API-Version", "compute 2.38")
        .send()
        .await;
    let both_rev = srv
        .get(&meta_path(&id))
        .header("X-OpenStack-Nova-API-Version", "2.38")
        .header("OpenStack-API-Version", "compute 2.39")
        .send()
        .await;

    assert_json(&legacy_38, 200, &json!({"metadata": {"a": "1"}}));
    assert_mv_headers(&legacy_38, "2.38");
    assert_fault(&legacy_39, 404, "itemNotFound", "The resource could not be found.");
    assert_mv_headers(&legacy_39, "2.39");
    assert_eq!(both.status, 200, "{}", both.text());
    assert_mv_headers(&both, "2.38");
    assert_eq!(both_rev.status, 404);
    assert_mv_headers(&both_rev, "2.39");
}

// §6: service names are case-insensitive, other services ignored, last compute entry wins
#[tokio::test]
async fn openstack_api_version_header_parsing() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let other_service = srv.get(&meta_path(&id)).header("OpenStack-API-Version", "volume 3.0").send().await;
    let upper = srv.get(&meta_path(&id)).header("OpenStack-API-Version", "COMPUTE 2.39").send().await;
    let list = srv.get(&meta_path(&id)).header("OpenStack-API-Version", "volume 3.5, compute 2.39").send().await;
    let last_wins = srv.get(&meta_path(&id)).header("OpenStack-API-Version", "compute 2.39, compute 2.20").send().await;

    assert_eq!(other_service.status, 200, "{}", other_service.text());
    assert_mv_headers(&other_service, "2.1");
    assert_eq!(upper.status, 404);
    assert_mv_headers(&upper, "2.39");
    assert_eq!(list.status, 404);
    assert_mv_headers(&list, "2.39");
    assert_eq!(last_wins.status, 200, "{}", last_wins.text());
    assert_mv_headers(&last_wins, "2.20");
}

// §12 #28
#[tokio::test]
async fn out_of_range_version_is_406_compute_fault() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    for v in ["3.0", "2.0", "1.1", "2.105", "99999999999999999999.1"] {
        let r = srv.get(&meta_path(&id)).mv(v).send().await;
        assert_fault(
            &r,
            406,
            "computeFault",
            &format!("Version {v} is not supported by the API. Minimum is 2.1 and maximum is {MAX_MV}."),
        );
        // §6: on a 406 the echoed version is the requested one.
        assert_mv_headers(&r, v);
        assert_request_ids(&r);
    }
}

// §12 #28
#[tokio::test]
async fn malformed_version_is_400_and_has_no_version_headers() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    for v in ["2.01", "abc", "2", "2.1.1", "-2.1", "2.-1", "Latest", "02.1", "2.1a"] {
        let r = srv.get(&meta_path(&id)).mv(v).send().await;
        assert_fault(
            &r,
            400,
            "badRequest",
            &format!("API Version String {v} is of invalid format. Must be of format MajorNum.MinorNum."),
        );
        assert!(r.header("openstack-api-version").is_none(), "{v}: {:?}", r.headers);
        assert!(r.header("x-openstack-nova-api-version").is_none(), "{v}: {:?}", r.headers);
    }
    let legacy = srv.get(&meta_path(&id)).header("X-OpenStack-Nova-API-Version", "2.01").send().await;
    assert_fault(
        &legacy,
        400,
        "badRequest",
        "API Version String 2.01 is of invalid format. Must be of format MajorNum.MinorNum.",
    );
}

// bad input: garbage microversion headers never produce a 5xx
#[tokio::test]
async fn garbage_microversion_headers_never_500() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let long = format!("compute {}", "9".repeat(4000));
    let values =
        ["", " ", "compute", "compute ", ",", "compute 2.1 extra", "\t2.1", "compute\t2.1", "compute 2.1\u{e9}", &long];

    for v in values {
        let a = srv.get(&meta_path(&id)).header("OpenStack-API-Version", v).send().await;
        let b = srv.get(&meta_path(&id)).header("X-OpenStack-Nova-API-Version", v).send().await;
        assert_not_5xx(&a);
        assert_not_5xx(&b);
        assert!([200, 400, 406].contains(&a.status), "{v:?}: {}", a.status);
        assert!([200, 400, 406].contains(&b.status), "{v:?}: {}", b.status);
    }
}

// §12 #29
#[tokio::test]
async fn latest_means_the_maximum_version() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let md = srv.get(&meta_path(&id)).mv("latest").send().await;
    let legacy = srv.get("/v2.1/images").header("X-OpenStack-Nova-API-Version", "latest").send().await;

    assert_fault(&md, 404, "itemNotFound", "The resource could not be found.");
    assert_mv_headers(&md, MAX_MV);
    assert_mv_headers(&legacy, MAX_MV);
}

// §12 #30
#[tokio::test]
async fn v21_responses_carry_microversion_headers_and_v2_none() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let ok = srv.get(&meta_path(&id)).send().await;
    let fault_404 = srv.get(&meta_path(&new_id())).send().await;
    let fault_400 = srv.post(&meta_path(&id), json!({})).send().await;
    let list = srv.get("/v2.1/images").send().await;
    let v2_ok = srv.get(&format!("/v2/images/{id}/metadata")).send().await;
    let v2_fault = srv.get(&format!("/v2/images/{}/metadata", new_id())).send().await;
    let v2_with_header = srv.get(&format!("/v2/images/{id}/metadata")).mv("2.39").send().await;

    for r in [&ok, &fault_404, &fault_400, &list] {
        assert_mv_headers(r, "2.1");
    }
    assert_json(&v2_ok, 200, &json!({"metadata": {"a": "1"}}));
    assert_fault(&v2_fault, 404, "itemNotFound", "Image not found.");
    // §6: /v2 ignores microversion headers, so the proxies never disappear there.
    assert_json(&v2_with_header, 200, &json!({"metadata": {"a": "1"}}));
    for r in [&v2_ok, &v2_fault, &v2_with_header] {
        assert_no_mv_headers(r);
    }
}

// §6: /v2 image proxies never return the deprecation 404
#[tokio::test]
async fn v2_image_proxies_ignore_microversion_headers() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let r = srv.get(&format!("/v2/images/{id}")).mv("2.36").send().await;
    let legacy = srv.get("/v2/images").header("X-OpenStack-Nova-API-Version", "3.0").send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(legacy.status, 200, "{}", legacy.text());
    assert_no_mv_headers(&r);
}

// ---------------------------------------------------------------------------
// Content types
// ---------------------------------------------------------------------------

// §12 #33
#[tokio::test]
async fn unsupported_content_type_is_415_on_every_method() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let get = srv.get(&meta_path(&id)).content_type("application/xml").send().await;
    let list = srv.get("/v2.1/images").content_type("application/xml").send().await;
    let post = srv.call("POST", &meta_path(&id)).content_type("application/xml").body("<metadata/>").send().await;
    let del = srv.delete(&key_path(&id, "a")).content_type("text/html").send().await;
    let form = srv
        .call("PUT", &meta_path(&id))
        .content_type("application/x-www-form-urlencoded")
        .body("metadata=1")
        .send()
        .await;

    for r in [&get, &list, &post, &del, &form] {
        assert_fault(r, 415, "badMediaType", "Unsupported Content-Type");
        assert_request_ids(r);
    }
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
}

// §12 #33
#[tokio::test]
async fn json_text_plain_vendor_type_and_missing_content_type_are_accepted() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let body = r#"{"metadata": {"b": "2"}}"#;

    let charset =
        srv.call("POST", &meta_path(&id)).content_type("application/json; charset=utf-8").body(body).send().await;
    let plain = srv.call("POST", &meta_path(&id)).content_type("text/plain").body(body).send().await;
    let vendor = srv
        .call("POST", &meta_path(&id))
        .content_type("application/vnd.openstack.compute+json")
        .body(body)
        .send()
        .await;
    let none = srv.call("POST", &meta_path(&id)).no_content_type().body(body).send().await;
    let get_json = srv.get(&meta_path(&id)).content_type("application/json").send().await;
    let get_empty = srv.get(&meta_path(&id)).content_type("").send().await;
    let no_space =
        srv.call("POST", &meta_path(&id)).content_type("application/json;charset=utf-8").body(body).send().await;
    let plain_charset =
        srv.call("POST", &meta_path(&id)).content_type("text/plain; charset=utf-8").body(body).send().await;

    for r in [&charset, &plain, &vendor, &none, &no_space, &plain_charset] {
        assert_json(r, 200, &json!({"metadata": {"a": "1", "b": "2"}}));
    }
    assert_eq!(get_json.status, 200);
    assert_eq!(get_empty.status, 200, "{}", get_empty.text());
}

// §12 #34
#[tokio::test]
async fn accept_text_html_still_gets_json() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let ok = srv.get(&meta_path(&id)).header("Accept", "text/html").send().await;
    let err = srv.get(&meta_path(&new_id())).header("Accept", "text/html").send().await;

    assert_json(&ok, 200, &json!({"metadata": {"a": "1"}}));
    assert_fault(&err, 404, "itemNotFound", "Image not found.");
}

// ---------------------------------------------------------------------------
// Routing: 405 override and bare 404
// ---------------------------------------------------------------------------

fn allow_set(r: &Resp) -> Vec<String> {
    let mut v: Vec<String> = r.header_tokens("allow").iter().map(|s| s.to_ascii_uppercase()).collect();
    v.sort();
    v
}

#[track_caller]
fn assert_405(r: &Resp, allowed: &[&str]) {
    assert_fault(r, 405, "badMethod", BAD_METHOD_MSG);
    let mut expected: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(allow_set(r), expected, "Allow header: {:?}", r.header_all("allow"));
}

// §12 #36, overridden by the brief: known path + unsupported method -> 405 + Allow
#[tokio::test]
async fn unsupported_method_on_known_path_is_405_with_allow() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let post_images = srv.post("/v2.1/images", json!({"image": {}})).send().await;
    let put_detail = srv.call("PUT", "/v2.1/images/detail").send().await;
    let put_image = srv.put(&image_path(&id), json!({})).send().await;
    let post_image = srv.call("POST", &image_path(&id)).send().await;
    let del_md = srv.delete(&meta_path(&id)).send().await;
    let patch_md = srv.call("PATCH", &meta_path(&id)).send().await;
    let post_key = srv.post(&key_path(&id, "a"), json!({"meta": {"a": "1"}})).send().await;
    let patch_key = srv.call("PATCH", &key_path(&id, "a")).send().await;
    let v2_post = srv.post(&format!("/v2/{PROJ_A}/images"), json!({})).send().await;

    assert_405(&post_images, &["GET"]);
    // DELETE /images/detail is routed (to delete id "detail", §1.1), so
    // DELETE is a supported method of that path and belongs in Allow.
    assert_405(&put_detail, &["GET", "DELETE"]);
    assert_405(&put_image, &["GET", "DELETE"]);
    assert_405(&post_image, &["GET", "DELETE"]);
    assert_405(&del_md, &["GET", "POST", "PUT"]);
    assert_405(&patch_md, &["GET", "POST", "PUT"]);
    assert_405(&post_key, &["GET", "PUT", "DELETE"]);
    assert_405(&patch_key, &["GET", "PUT", "DELETE"]);
    assert_405(&v2_post, &["GET"]);
    for r in [&post_images, &del_md, &post_key] {
        assert_request_ids(r);
    }
    // Nothing changed.
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
}

// Brief: the Allow header carries the exact documented lists
#[tokio::test]
async fn allow_header_values_are_exact() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let md = srv.delete(&meta_path(&id)).send().await;
    let key = srv.call("POST", &key_path(&id, "a")).send().await;
    let img = srv.call("PUT", &image_path(&id)).send().await;
    let list = srv.call("POST", "/v2.1/images").send().await;

    assert_eq!(md.header_all("allow"), vec!["GET, POST, PUT"]);
    assert_eq!(key.header_all("allow"), vec!["GET, PUT, DELETE"]);
    assert_eq!(img.header_all("allow"), vec!["GET, DELETE"]);
    assert_eq!(list.header_all("allow"), vec!["GET"]);
}

// §1.1: unknown paths stay the bare WebOb 404 (no fault, no microversion headers)
#[tokio::test]
async fn unknown_path_is_bare_404() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let paths = [
        "/v2.1/nothing".to_string(),
        format!("/v2.1/images/{id}/metadata/a/b"),
        format!("/v2.1/images/{id}/other"),
        "/v2.1/xyz-not-hex/images".to_string(),
        format!("/v2.1/{PROJ_A}/{PROJ_A}/images"),
    ];
    for p in &paths {
        let r = srv.get(p).header("Accept", "application/json").send().await;
        assert_eq!(r.status, 404, "{p}: {}", r.text());
        assert_eq!(r.json(), bare_404_json(), "{p}");
        assert!(r.header("allow").is_none(), "{p}");
        assert_no_mv_headers(&r);
        assert_request_ids(&r);
    }
}

// Brief: DELETE /v2.1/images/ (blank id) is 404, not 405
#[tokio::test]
async fn delete_with_blank_image_id_is_404() {
    let env = Env::new();
    seeded(&env);
    let srv = env.start();

    let r = srv.delete("/v2.1/images/").header("Accept", "application/json").send().await;

    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.header("allow").is_none(), "{:?}", r.headers);
    assert_not_5xx(&r);
}

// ---------------------------------------------------------------------------
// Project id in the URL
// ---------------------------------------------------------------------------

// §12 #37
#[tokio::test]
async fn routes_work_with_and_without_project_id() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let with = srv.get(&format!("/v2.1/{PROJ_A}/images/{id}/metadata")).send().await;
    let without = srv.get(&meta_path(&id)).send().await;
    let v2_with = srv.get(&format!("/v2/{PROJ_A}/images/{id}/metadata/a")).send().await;
    let post_with =
        srv.post(&format!("/v2.1/{PROJ_A}/images/{id}/metadata"), json!({"metadata": {"b": "2"}})).send().await;
    let detail_with = srv.get(&format!("/v2.1/{PROJ_A}/images/detail")).send().await;

    assert_json(&with, 200, &json!({"metadata": {"a": "1"}}));
    assert_json(&without, 200, &json!({"metadata": {"a": "1"}}));
    assert_json(&v2_with, 200, &json!({"meta": {"a": "1"}}));
    assert_json(&post_with, 200, &json!({"metadata": {"a": "1", "b": "2"}}));
    assert_eq!(detail_with.status, 200);
}

// §12 #37
#[tokio::test]
async fn mismatching_project_id_is_400_malformed_request_url() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let msg =
        format!("Malformed request URL: URL's project_id '{PROJ_B}' doesn't match Context's project_id '{PROJ_A}'");

    let get = srv.get(&format!("/v2.1/{PROJ_B}/images/{id}/metadata")).send().await;
    let post = srv.post(&format!("/v2.1/{PROJ_B}/images/{id}/metadata"), json!({"metadata": {"x": "1"}})).send().await;
    let list = srv.get(&format!("/v2/{PROJ_B}/images")).send().await;
    let dashed = srv.get("/v2.1/0123-4567/images").send().await;

    assert_fault(&get, 400, "badRequest", &msg);
    assert_fault(&post, 400, "badRequest", &msg);
    assert_fault(&list, 400, "badRequest", &msg);
    assert_fault(
        &dashed,
        400,
        "badRequest",
        &format!("Malformed request URL: URL's project_id '0123-4567' doesn't match Context's project_id '{PROJ_A}'"),
    );
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
}

// ---------------------------------------------------------------------------
// Faults, size limit, bad input
// ---------------------------------------------------------------------------

// §12 #58 (its "500 uses computeFault" half cannot be triggered from outside:
// no input reaches an unexpected error; 406 is covered here)
#[tokio::test]
async fn faults_have_nova_format_and_charset_content_type() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let r400 = srv.call("POST", &meta_path(&id)).json_bytes("{").send().await;
    let r403 = srv.post(&meta_path(&id), json!({"metadata": {"a": "2"}})).token(TOK_A_READER).send().await;
    let r404 = srv.get(&meta_path(&new_id())).send().await;
    let r406 = srv.get(&meta_path(&id)).mv("3.0").send().await;
    let r415 = srv.get(&meta_path(&id)).content_type("application/xml").send().await;

    assert_fault_name(&r400, 400, "badRequest");
    assert_fault_name(&r403, 403, "forbidden");
    assert_fault_name(&r404, 404, "itemNotFound");
    assert_fault_name(&r406, 406, "computeFault");
    assert_fault_name(&r415, 415, "badMediaType");
}

// §2 step 1: bodies above 114688 bytes are refused with 413, before auth.
// Each request goes on its own `Connection: close` connection (see the next
// test for connection reuse after a 413).
#[tokio::test]
async fn oversized_body_is_413() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let body = format!(r#"{{"metadata": {{"a": "{}"}}}}"#, "x".repeat(120_000));
    let send = |method: &str, path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("X-Auth-Token: {t}\r\n")).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            srv.host(),
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        srv.raw(&req)
    };

    let authed = send("POST", &meta_path(&id), Some(TOK_A));
    let anon = send("POST", &meta_path(&id), None);
    let put_item = send("PUT", &key_path(&id, "a"), Some(TOK_A));

    for r in [&authed, &anon, &put_item] {
        assert_eq!(r.status, 413, "{}", r.text());
        assert_request_ids(r);
    }
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
}

// §2 step 1 + HTTP/1.1 (RFC 9112 §9.6): after a 413 on a keep-alive
// connection the server either says `Connection: close` or keeps the
// connection usable. Closing silently makes keep-alive clients (reqwest)
// fail the next request with "connection closed before message completed".
#[test]
fn connection_after_413_is_closed_explicitly_or_reusable() {
    use std::io::{Read, Write};
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let body = format!(r#"{{"metadata": {{"a": "{}"}}}}"#, "x".repeat(120_000));
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {TOK_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        meta_path(&id),
        srv.host(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(&req).expect("send oversized request");

    // Read the first response: head plus Content-Length body.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let (head, body_len) = loop {
        let n = s.read(&mut tmp).expect("read 413");
        assert!(n > 0, "connection closed before the 413 arrived");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let cl: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            while buf.len() < end + 4 + cl {
                let n = s.read(&mut tmp).expect("read 413 body");
                assert!(n > 0, "413 body truncated");
                buf.extend_from_slice(&tmp[..n]);
            }
            break (head, cl);
        }
    };
    let _ = body_len;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    if head.lines().any(|l| l.trim() == "connection: close") {
        return; // explicitly closed: fine
    }

    // No `Connection: close`: the connection must still serve a request.
    let second = format!("GET {} HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {TOK_A}\r\n\r\n", meta_path(&id), srv.host());
    let wrote = s.write_all(second.as_bytes());
    let mut rest = Vec::new();
    let got =
        wrote.is_ok() && matches!(s.read(&mut tmp), Ok(n) if n > 0 && { rest.extend_from_slice(&tmp[..n]); true });
    assert!(
        got && rest.starts_with(b"HTTP/1.1 200"),
        "413 response had no `Connection: close`, yet the connection was not reusable: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

// §2 step 1: exactly 114688 bytes is not too large (then fails the schema, 400)
#[tokio::test]
async fn body_of_exactly_the_limit_is_not_413() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let prefix = r#"{"metadata": {"a": ""#;
    let suffix = r#""}}"#;
    let fill = 114_688 - prefix.len() - suffix.len();
    let body = format!("{prefix}{}{suffix}", "x".repeat(fill));
    assert_eq!(body.len(), 114_688);

    let r = srv.call("POST", &meta_path(&id)).json_bytes(body).send().await;

    assert_fault_name(&r, 400, "badRequest"); // value too long, but not 413
}

// §2 step 1: the limit also applies to a chunked body without Content-Length
#[tokio::test]
async fn oversized_chunked_body_is_413() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let mut req = format!(
        "POST /v2.1/images/{id}/metadata HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {TOK_A}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.host()
    )
    .into_bytes();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..10 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");

    let r = srv.raw(&req);

    assert_eq!(r.status, 413, "{}", r.text());
}

// bad input: huge ids and keys never 500
#[tokio::test]
async fn huge_ids_and_keys_are_404_not_500() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let huge = "a".repeat(4000);

    let show = srv.get(&image_path(&huge)).send().await;
    let md = srv.get(&meta_path(&huge)).send().await;
    let key = srv.get(&key_path(&id, &huge)).send().await;
    let del_key = srv.delete(&key_path(&id, &huge)).send().await;
    let put_key = srv.put(&key_path(&id, &huge), json!({"meta": {huge.clone(): "v"}})).send().await;

    assert_fault(&show, 404, "itemNotFound", "Image not found.");
    assert_fault(&md, 404, "itemNotFound", "Image not found.");
    assert_fault(&key, 404, "itemNotFound", "The resource could not be found.");
    assert_fault(&del_key, 404, "itemNotFound", "Invalid metadata key");
    assert_fault_name(&put_key, 400, "badRequest"); // 4000-char key fails the schema
}

// bad input: a 100 kB path or query never 5xx (sent raw: too long for a client URL)
#[tokio::test]
async fn absurd_urls_never_500() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let long = "b".repeat(100_000);
    let raw_get = |target: &str| {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {TOK_A}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            srv.host()
        );
        srv.raw(req.as_bytes())
    };

    let long_path = raw_get(&image_path(&long));
    let long_query = raw_get(&format!("/v2.1/images?name={long}"));
    let long_key = raw_get(&key_path(&id, &"k".repeat(20_000)));
    let many_params = srv
        .get(&format!("/v2.1/images?{}", (0..2000).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&")))
        .send()
        .await;
    let weird = srv.get("/v2.1/images?=&&==&limit&marker&name=%").send().await;

    for r in [&long_path, &long_query, &long_key, &many_params, &weird] {
        assert_not_5xx(r);
    }
    // Past the bound on the request target (16 KiB), as a web server in front of Nova: 414
    // (hyper itself answers a bare 414 past 64 KiB, before any of our code).
    assert_eq!((long_path.status, long_query.status), (414, 414));
    assert_fault(&long_key, 414, "computeFault", "The request URI was too long for this server.");
    let key_at_bound = raw_get(&key_path(&id, &"k".repeat(10_000)));
    assert_eq!(key_at_bound.status, 404, "{}", key_at_bound.text());
    assert_eq!(srv.get(&meta_path(&id)).send().await.status, 200, "server still alive");
}

// §5.2: an undecodable query string is 400 "Query string is not UTF-8 encoded"
#[tokio::test]
async fn non_utf8_query_string_is_400() {
    let env = Env::new();
    seeded(&env);
    let srv = env.start();

    let r = srv.get("/v2.1/images?name=%ff%fe").send().await;

    assert_fault(&r, 400, "badRequest", "Query string is not UTF-8 encoded");
}

// bad input: percent-encoded garbage in path segments never 500
#[tokio::test]
async fn odd_path_encodings_never_500() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let bad_utf8_key = srv.get(&key_path(&id, "%ff%fe")).send().await;
    let nul_key = srv.get(&key_path(&id, "a%00b")).send().await;
    let bad_utf8_id = srv.get(&image_path("%c3%28")).send().await;
    let encoded_slash = srv.get(&key_path(&id, "a%2Fb")).send().await;

    for r in [&bad_utf8_key, &nul_key, &bad_utf8_id, &encoded_slash] {
        assert_not_5xx(r);
        assert!(r.status == 404 || r.status == 400, "status {}: {}", r.status, r.text());
    }
}

// ---------------------------------------------------------------------------
// Order of request processing (§2: first failing step wins)
// ---------------------------------------------------------------------------

// §2 steps 1 < 2: size limit before auth is covered by oversized_body_is_413;
// steps 3 < 4: an unrouted path with a bad microversion is still the bare 404
#[tokio::test]
async fn routing_comes_before_microversion_parsing() {
    let env = Env::new();
    seeded(&env);
    let srv = env.start();

    let r = srv.get("/v2.1/nothing").mv("abc").header("Accept", "application/json").send().await;

    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json(), bare_404_json());
}

// §2 steps 4 < 5 < 6: microversion format, then Content-Type, then body
#[tokio::test]
async fn microversion_then_content_type_then_body() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let mv_vs_ct = srv.call("POST", &meta_path(&id)).mv("abc").content_type("application/xml").body("{").send().await;
    let ct_vs_body = srv.call("POST", &meta_path(&id)).content_type("application/xml").body("{").send().await;

    assert_fault(
        &mv_vs_ct,
        400,
        "badRequest",
        "API Version String abc is of invalid format. Must be of format MajorNum.MinorNum.",
    );
    assert_fault(&ct_vs_body, 415, "badMediaType", "Unsupported Content-Type");
}

// §2 steps 5 < 8: Content-Type is checked before the microversion window
#[tokio::test]
async fn content_type_before_microversion_window() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let r = srv.get(&meta_path(&id)).mv("2.39").content_type("application/xml").send().await;

    assert_fault(&r, 415, "badMediaType", "Unsupported Content-Type");
}

// §2 steps 6 < 7 < 8 < 9: body parse, then URL project id, then window, then schema
#[tokio::test]
async fn body_then_project_id_then_window_then_schema() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();
    let other = format!("/v2.1/{PROJ_B}/images/{id}/metadata");
    let mismatch =
        format!("Malformed request URL: URL's project_id '{PROJ_B}' doesn't match Context's project_id '{PROJ_A}'");

    let body_vs_project = srv.call("POST", &other).json_bytes("{").send().await;
    let project_vs_window = srv.post(&other, json!({"metadata": {"a": 1}})).mv("2.39").send().await;
    let project_vs_schema = srv.post(&other, json!({"metadata": {"a": 1}})).send().await;

    assert_fault(&body_vs_project, 400, "badRequest", "Malformed request body");
    assert_fault(&project_vs_window, 400, "badRequest", &mismatch);
    assert_fault(&project_vs_schema, 400, "badRequest", &mismatch);
}

// §2 step 9 < 10: the schema is checked before the image lookup and the quota
#[tokio::test]
async fn schema_before_image_lookup() {
    let env = Env::new();
    let srv = env.start();
    let missing = new_id();

    let post = srv.post(&meta_path(&missing), json!({"metadata": {"a": 1}})).send().await;
    let put = srv.put(&meta_path(&missing), json!({})).send().await;
    let put_item = srv.put(&key_path(&missing, "a"), json!({"meta": {}})).send().await;

    assert_fault(&post, 400, "badRequest", "Invalid input for field/attribute a. Value: 1. 1 is not of type 'string'");
    assert_fault(&put, 400, "badRequest", "'metadata' is a required property");
    assert_fault_name(&put_item, 400, "badRequest");
}

// §1.1 + brief: HEAD is not a supported method of a known path -> 405
#[tokio::test]
async fn head_on_known_path_is_405() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let list = srv.call("HEAD", "/v2.1/images").send().await;
    let md = srv.call("HEAD", &meta_path(&id)).send().await;

    assert_eq!(list.status, 405);
    assert_eq!(list.header_all("allow"), vec!["GET"]);
    assert_eq!(md.status, 405);
    assert_eq!(md.header_all("allow"), vec!["GET, POST, PUT"]);
}

// §1.1: without Accept: application/json the bare 404 is not a Nova fault
#[tokio::test]
async fn bare_404_without_json_accept_is_not_json() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.get("/v2.1/nothing").send().await;

    assert_eq!(r.status, 404);
    let ct = r.content_type().unwrap_or_default().to_string();
    assert!(ct.starts_with("text/html") || ct.starts_with("text/plain"), "Content-Type {ct}");
    assert!(r.text().contains("The resource could not be found."), "{}", r.text());
}

// §2 step 1: the size limit applies to any method, GET included
#[tokio::test]
async fn oversized_body_on_get_is_413() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {TOK_A}\r\nContent-Type: application/json\r\nContent-Length: 114689\r\nConnection: close\r\n\r\n",
        meta_path(&id),
        srv.host()
    )
    .into_bytes();
    req.extend_from_slice(&[b' '; 114_689]);

    let r = srv.raw(&req);

    assert_eq!(r.status, 413, "{}", r.text());
}

// §6: repeated headers and comma lists -- the last compute entry / value wins
#[tokio::test]
async fn repeated_and_listed_version_headers_last_wins() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let repeated = srv
        .get(&meta_path(&id))
        .header("OpenStack-API-Version", "compute 2.39")
        .header("OpenStack-API-Version", "compute 2.38")
        .send()
        .await;
    let legacy_list = srv.get(&meta_path(&id)).header("X-OpenStack-Nova-API-Version", "2.38, 2.39").send().await;

    assert_eq!(repeated.status, 200, "{}", repeated.text());
    assert_mv_headers(&repeated, "2.38");
    assert_fault(&legacy_list, 404, "itemNotFound", "The resource could not be found.");
    assert_mv_headers(&legacy_list, "2.39");
}

// §6: the response type becomes the vendor type when Accept prefers it
#[tokio::test]
async fn vendor_accept_gets_vendor_content_type() {
    let env = Env::new();
    let id = seeded(&env);
    let srv = env.start();

    let r = srv.get(&meta_path(&id)).header("Accept", "application/vnd.openstack.compute+json").send().await;
    let pref_json = srv
        .get(&meta_path(&id))
        .header("Accept", "application/vnd.openstack.compute+json;q=0.5, application/json")
        .send()
        .await;

    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), Some("application/vnd.openstack.compute+json"));
    assert_eq!(r.json(), json!({"metadata": {"a": "1"}}));
    assert_json(&pref_json, 200, &json!({"metadata": {"a": "1"}}));
}
