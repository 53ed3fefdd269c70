//! Glance v2 error bodies: WebOb's three-way negotiation on Accept (glance-v2 §12; checklist
//! §18 #62) and the JSON request-body errors of §1. Expected bytes were produced by running
//! WebOb 1.8.11 (`webob.exc.HTTPNotFound(explanation=...)` etc. through `Request.blank`).

use serde_json::json;

use crate::glance_helpers::*;
use crate::helpers::*;

// §18 #62, §12: JSON for Accept: application/json, byte-exact (Python json.dumps separators).
#[tokio::test]
async fn error_json_exact_bytes() {
    let env = Env::new();
    let server = env.start();
    let id = new_id();
    let r = g(&server, "GET", &img_path(&id)).accept("application/json").send().await;
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type(), Some("application/json"));
    assert_eq!(
        r.text(),
        format!(
            "{{\"message\": \"No image found with ID {id}<br /><br />\\n\\n\\n\", \"code\": \"404 Not Found\", \"title\": \"Not Found\"}}"
        )
    );
}

// §18 #62, §12: text/html for */* and for `application/json, */*` (tie → html, offered first).
#[tokio::test]
async fn error_html_for_wildcard() {
    let env = Env::new();
    let server = env.start();
    let id = new_id();
    let html = format!(
        "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  \
         No image found with ID {id}<br /><br />\n\n\n\n </body>\n</html>"
    );
    for accept in ["*/*", "application/json, */*", "text/html"] {
        let r = g(&server, "GET", &img_path(&id)).accept(accept).send().await;
        assert_eq!(r.status, 404, "Accept {accept}");
        assert_eq!(r.content_type(), Some("text/html; charset=UTF-8"), "Accept {accept}");
        assert_eq!(r.text(), html, "Accept {accept}");
    }
}

// §18 #62, §12: text/plain when Accept is absent, empty or text/plain; newlines flattened to
// spaces and <br /> turned into \n (WebOb strip_tags): "404 Not Found\n\nNo image found with ID X\n\n   ".
#[tokio::test]
async fn error_plain_without_accept() {
    let env = Env::new();
    let server = env.start();
    let id = new_id();
    let plain = format!("404 Not Found\n\nNo image found with ID {id}\n\n   ");
    // reqwest always adds `Accept: */*`, so the no-Accept request goes out raw.
    let port = image_port(&server);
    let req = format!(
        "GET /v2/images/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Auth-Token: {TOK_A}\r\nConnection: close\r\n\r\n"
    );
    let mut wrong = vec![];
    let r = raw_http(port, req.as_bytes());
    assert_eq!(r.status, 404);
    if r.content_type() != Some("text/plain; charset=UTF-8") || r.text() != plain {
        wrong.push(format!("no Accept: {:?} {:?}", r.content_type(), r.text()));
    }
    for accept in ["", "text/plain"] {
        let r = g(&server, "GET", &img_path(&id)).accept(accept).send().await;
        assert_eq!(r.status, 404);
        if r.content_type() != Some("text/plain; charset=UTF-8") || r.text() != plain {
            wrong.push(format!("Accept {accept:?}: {:?} {:?}", r.content_type(), r.text()));
        }
    }
    assert!(wrong.is_empty(), "want text/plain {plain:?}; got:\n{}", wrong.join("\n"));
}

// §12: the 415 on PATCH uses WebOb's HTTPUnsupportedMediaType template with the detail:
// JSON message "The request media type <ct> is not supported by this server.\n<br /><br />\n<detail>".
#[tokio::test]
async fn patch_415_message() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let r = g(&server, "PATCH", &img_path(&id)).json(&json!([])).send().await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({
            "message": "The request media type application/json is not supported by this server.\n<br /><br />\n\
                        Image PATCH expects Content-Type one of: application/openstack-images-v2.0-json-patch, \
                        application/openstack-images-v2.1-json-patch",
            "code": "415 Unsupported Media Type",
            "title": "Unsupported Media Type",
        })
    );
}

// §1: JSON request bodies — malformed → 400, top-level scalar → 400, missing → 400.
// Content-Type is not checked on POST.
#[tokio::test]
async fn json_body_errors() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let r = g(&server, "POST", "/v2/images").content_type("application/json").body("{nope").send().await;
    assert_gerr(&r, 400, "Malformed JSON in request body.");
    let r = g(&server, "POST", "/v2/images").content_type("application/json").body("42").send().await;
    assert_gerr(&r, 400, "Unexpected body type. Expected list/dict.");
    let r = g(&server, "POST", "/v2/images").content_type("application/json").send().await;
    assert_gerr(&r, 400, "Body expected in request.");
    let r = g(&server, "PATCH", &img_path(&id)).content_type(PATCH_V21).body("[{").send().await;
    assert_gerr(&r, 400, "Malformed JSON in request body.");
    let r = g(&server, "PATCH", &img_path(&id)).content_type(PATCH_V21).body("\"x\"").send().await;
    assert_gerr(&r, 400, "Unexpected body type. Expected list/dict.");
    let r = g(&server, "PATCH", &img_path(&id)).content_type(PATCH_V21).send().await;
    assert_gerr(&r, 400, "Body expected in request.");
    // Request Content-Type is not checked on POST (G:common/wsgi.py JSONRequestDeserializer).
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = g(&server, "POST", "/v2/images").content_type(ct).body("{\"name\": \"ct\"}").send().await;
        assert_eq!(r.status, 201, "POST with Content-Type {ct}: {}", r.text());
        assert_eq!(r.json()["name"], json!("ct"));
    }
    let r = g(&server, "POST", "/v2/images").body("{\"name\": \"noct\"}").send().await;
    assert_eq!(r.status, 201, "POST without Content-Type: {}", r.text());
}

// §12 / §3: JSON responses carry `Content-Type: application/json` without charset.
#[tokio::test]
async fn json_content_type_has_no_charset() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "POST", "/v2/images").json(&json!({})).send().await;
    assert_eq!(r.status, 201);
    assert_eq!(r.content_type(), Some("application/json"));
    let id = r.json()["id"].as_str().unwrap().to_string();
    for p in [img_path(&id), "/v2/images".into(), "/v2/schemas/image".into()] {
        let r = g(&server, "GET", &p).send().await;
        assert_eq!(r.content_type(), Some("application/json"), "{p}");
    }
}
