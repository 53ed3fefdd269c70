//! Version discovery documents (spec §8, checklist #54-#56).

use serde_json::{Value, json};

use crate::helpers::*;

fn v21_doc(h: &str) -> Value {
    json!({"version": {
        "id": "v2.1", "status": "CURRENT", "version": MAX_MV, "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": format!("http://{h}/v2.1/")},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]
    }})
}

fn v2_doc(h: &str) -> Value {
    json!({"version": {
        "id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "",
        "updated": "2025-07-04T12:00:00Z",
        "links": [
            {"rel": "self", "href": format!("http://{h}/v2/")},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]
    }})
}

// §12 #54 / #56
#[tokio::test]
async fn root_lists_versions_without_auth() {
    // Arrange
    let env = Env::new();
    let srv = env.start();
    let h = srv.host();

    // Act
    let r = srv.get("/").no_token().send().await;

    // Assert
    assert_json(
        &r,
        200,
        &json!({"versions": [
            {"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "",
             "updated": "2025-07-04T12:00:00Z", "links": [{"rel": "self", "href": format!("http://{h}/v2/")}]},
            {"id": "v2.1", "status": "CURRENT", "version": MAX_MV, "min_version": "2.1",
             "updated": "2013-07-23T11:33:21Z", "links": [{"rel": "self", "href": format!("http://{h}/v2.1/")}]}
        ]}),
    );
    assert_no_mv_headers(&r);
}

// §12 #54: an invalid token does not matter on /
#[tokio::test]
async fn root_ignores_invalid_token() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.get("/").token("garbage").send().await;

    assert_eq!(r.status, 200, "{}", r.text());
}

// §12 #55
#[tokio::test]
async fn v21_version_document_with_and_without_slash() {
    let env = Env::new();
    let srv = env.start();
    let h = srv.host();

    let slash = srv.get("/v2.1/").no_token().send().await;
    let bare = srv.get("/v2.1").no_token().send().await;

    for r in [&slash, &bare] {
        assert_json(r, 200, &v21_doc(&h));
        assert_request_ids(r);
        assert_mv_headers(r, "2.1");
    }
}

// §8: the v2.0 document, no microversion headers on /v2
#[tokio::test]
async fn v2_version_document_with_and_without_slash() {
    let env = Env::new();
    let srv = env.start();
    let h = srv.host();

    let slash = srv.get("/v2/").no_token().send().await;
    let bare = srv.get("/v2").no_token().send().await;

    for r in [&slash, &bare] {
        assert_json(r, 200, &v2_doc(&h));
        assert_no_mv_headers(r);
    }
}

// §12 #56
#[tokio::test]
async fn unprefixed_path_is_300_choices() {
    let env = Env::new();
    let srv = env.start();
    let h = srv.host();

    let r = srv.get("/images").no_token().send().await;

    assert_json(
        &r,
        300,
        &json!({"choices": [
            {"id": "v2.0", "status": "DEPRECATED",
             "links": [{"rel": "self", "href": format!("http://{h}/v2/images")}],
             "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]},
            {"id": "v2.1", "status": "CURRENT",
             "links": [{"rel": "self", "href": format!("http://{h}/v2.1/images")}],
             "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]}
        ]}),
    );
    // The root app has no request-id middleware (§1 pipeline, §6).
    assert!(r.header("x-compute-request-id").is_none(), "{:?}", r.headers);
    assert_no_mv_headers(&r);
}

// §8: version documents follow the Host header
#[tokio::test]
async fn version_links_follow_host_header() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.raw(b"GET /v2.1/ HTTP/1.1\r\nHost: nova.example.net:8774\r\nConnection: close\r\n\r\n");

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), v21_doc("nova.example.net:8774"));
}

// §8 (N:urlmap.py): with no version prefix, a `version` media-type parameter in
// Accept or Content-Type picks the API, so `GET /images` reaches the v2.1 list
#[tokio::test]
async fn media_type_version_parameter_selects_the_api_without_prefix() {
    let env = Env::new();
    let id = new_id();
    env.seed(&Seed::new().id(&id).name("one"));
    let srv = env.start();
    let h = srv.host();
    let expected =
        json!({"images": [{"id": id, "name": "one", "links": image_links(&srv.image_base, &h, "v2.1", None, &id)}]});

    let by_accept =
        srv.get("/images").header("Accept", "application/vnd.openstack.compute+json;version=2.1").send().await;
    let by_content_type = srv.get("/images").content_type("application/json;version=2.1").send().await;
    let anonymous = srv
        .get("/images")
        .header("Accept", "application/vnd.openstack.compute+json;version=2.1")
        .no_token()
        .send()
        .await;

    assert_eq!(by_accept.status, 200, "{}", by_accept.text());
    assert_eq!(by_accept.json(), expected);
    assert_json(&by_content_type, 200, &expected);
    assert_eq!(anonymous.status, 401, "the API app needs a token: {}", anonymous.text());
}

// §8 (N:routes.py `/versions/{id}`, N:versionsV21.py): GET /v2.1/versions/{id}
// (authenticated) returns the version document; an unknown id is 404
#[tokio::test]
async fn versions_show_under_v21() {
    let env = Env::new();
    let srv = env.start();
    let h = srv.host();

    let v21 = srv.get("/v2.1/versions/v2.1").send().await;
    let unknown = srv.get("/v2.1/versions/v9.9").send().await;
    let anonymous = srv.get("/v2.1/versions/v2.1").no_token().send().await;

    assert_json(&v21, 200, &v21_doc(&h));
    assert_fault(&unknown, 404, "itemNotFound", "The resource could not be found.");
    assert_eq!(anonymous.status, 401);
}
