//! Interoperable image import and tasks (issue 13, points 1 and 2): `GET /v2/info/import`,
//! `PUT /v2/images/{id}/stage`, `POST /v2/images/{id}/import` with `glance-direct` and
//! `web-download` (from a loopback HTTP server the test runs), the import lock, the
//! `os_glance_*` properties, the task records and `/v2/tasks`.

use std::time::Duration;

use md5::Digest;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::glance_helpers::*;
use crate::helpers::*;

const OCTET_STREAM: &str = "application/octet-stream";

fn start(env: &Env, args: &[&str]) -> Server {
    env.start_with(&ServerOpts { extra_args: args.iter().map(|a| a.to_string()).collect(), ..Default::default() })
}

/// Polls the image (as admin) until `done` holds of it.
async fn wait_image(server: &Server, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let image = show(server, id).await;
        if done(&image) {
            return image;
        }
        assert!(std::time::Instant::now() < deadline, "the image never got there: {image}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The image's tasks, once every one of them is `status`.
async fn wait_tasks(server: &Server, id: &str, status: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = g(server, "GET", &format!("/v2/images/{id}/tasks")).send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        let tasks = r.json()["tasks"].as_array().unwrap().clone();
        if !tasks.is_empty() && tasks.iter().all(|t| t["status"] == status) {
            return tasks;
        }
        assert!(std::time::Instant::now() < deadline, "tasks never got to {status}: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn stage(server: &Server, id: &str, data: &[u8]) -> Resp {
    g(server, "PUT", &format!("/v2/images/{id}/stage")).content_type(OCTET_STREAM).body(data.to_vec()).send().await
}

async fn import(server: &Server, id: &str, body: Value) -> Resp {
    g(server, "POST", &format!("/v2/images/{id}/import")).json(&body).send().await
}

fn md5_hex(data: &[u8]) -> String {
    md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback HTTP server for `web-download`: `/data` answers `body`, `/slow` sends headers
/// and then nothing for a minute, `/redirect-to/PORT` redirects to `/data` on that port,
/// anything else 404. Its port.
async fn web_server(body: Vec<u8>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let head = |status: &str, extra: &str, len: usize| {
                    format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
                };
                if path == "/data" {
                    let _ = s.write_all(head("200 OK", "", body.len()).as_bytes()).await;
                    let _ = s.write_all(&body).await;
                } else if path == "/slow" {
                    let _ = s.write_all(head("200 OK", "", 1 << 20).as_bytes()).await;
                    let _ = s.write_all(&[0u8; 1000]).await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else if let Some(to) = path.strip_prefix("/redirect-to/") {
                    let extra = format!("Location: http://127.0.0.1:{to}/data\r\n");
                    let _ = s.write_all(head("302 Found", &extra, 0).as_bytes()).await;
                } else {
                    let _ = s.write_all(head("404 Not Found", "", 0).as_bytes()).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn import_info_and_the_create_header() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "GET", "/v2/info/import").send().await;
    assert_json(
        &r,
        200,
        &json!({"import-methods": {"description": "Import methods available.", "type": "array",
                                    "value": ["glance-direct", "web-download", "copy-image"]}}),
    );
    let r = g(&server, "GET", "/v2/info/import").content_type("application/json").body("{}").send().await;
    assert_gerr(&r, 400, "A body is not expected with this request.");

    // glance-download finds the other Glance in the caller's Keystone catalog: not without it.
    let opts = ServerOpts { extra_args: vec!["--import-methods=glance-download".into()], ..Default::default() };
    let (status, stderr) = env.start_fails(&opts);
    assert!(!status.success() && stderr.contains("glance-download needs --auth keystone"), "{stderr}");

    let none = start(&env, &["--import-methods="]);
    let r = g(&none, "GET", "/v2/info/import").send().await;
    assert_eq!(r.json()["import-methods"]["value"], json!([]));
    let r = g(&none, "POST", "/v2/images").json(&json!({"name": "x"})).send().await;
    assert_eq!(r.status, 201);
    assert!(r.header("openstack-image-import-methods").is_none(), "no header for no methods");
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_gerr(&stage(&none, &id, b"x").await, 404, "'glance-direct' method is not available at this site.");
}

#[tokio::test]
async fn stage_then_glance_direct_import() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let data = pattern(100_000, 11);

    let r = stage(&server, &id, &data).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let staged = show(&server, &id).await;
    assert_eq!(
        (&staged["status"], &staged["size"], &staged["checksum"]),
        (&json!("uploading"), &json!(100_000), &Value::Null)
    );
    assert_eq!(g(&server, "GET", &file_path(&id)).send().await.status, 204, "no data before the import");
    assert_gerr(
        &stage(&server, &id, &data).await,
        409,
        "Image status transition from uploading to uploading is not allowed",
    );

    let r = import(&server, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.body, b"");
    let request_id = r.header("x-openstack-request-id").unwrap().to_owned();
    let image = wait_image(&server, &id, |i| i["status"] == "active").await;
    assert_eq!(image["checksum"], json!(md5_hex(&data)));
    assert_eq!(image["os_hash_algo"], json!("sha512"));
    assert_eq!(image["size"], json!(100_000));
    assert_eq!(image["virtual_size"], json!(100_000), "raw: the virtual size is the size");
    assert_eq!((&image["os_glance_importing_to_stores"], &image["os_glance_failed_import"]), (&json!(""), &json!("")));
    assert!(image.get("os_glance_import_task").is_none(), "the lock is released: {image}");
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_eq!((r.status, r.body == data), (200, true));

    let tasks = wait_tasks(&server, &id, "success").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    assert_eq!(task["request_id"], json!(request_id));
    assert_eq!(task["input"]["import_req"]["method"]["name"], json!("glance-direct"));
    assert_eq!(task["input"]["backend"], json!([null]));
    assert_eq!(
        (&task["type"], &task["owner"], &task["user_id"]),
        (&json!("api_image_import"), &json!(PROJ_A), &json!("user-a"))
    );
    assert_eq!((&task["result"], &task["message"]), (&json!({"image_id": id}), &json!("Copied 0 MiB")));
    assert_eq!((&task["deleted"], &task["deleted_at"]), (&json!(false), &Value::Null));
    let times = ["created_at", "updated_at", "expires_at"];
    for t in times {
        let v = task[t].as_str().unwrap_or_else(|| panic!("{t}: {task}"));
        assert!(v.len() == 26 && v.as_bytes()[19] == b'.' && !v.ends_with('Z'), "{t} as Glance's records: {v}");
    }
    let keys: Vec<&str> = task.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "status",
            "owner",
            "expires_at",
            "created_at",
            "updated_at",
            "deleted_at",
            "deleted",
            "image_id",
            "request_id",
            "user_id",
            "input",
            "result",
            "message"
        ]
    );
    // Another project sees the image's tasks only if it sees the image, and never its tasks.
    assert_eq!(g(&server, "GET", &format!("/v2/images/{id}/tasks")).token(TOK_B).send().await.status, 404);

    // The full view, for admins.
    let task_id = task["id"].as_str().unwrap();
    let r = g(&server, "GET", &format!("/v2/tasks/{task_id}")).token(TOK_ADMIN).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let full = r.json();
    let keys: Vec<&str> = full.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "input",
            "type",
            "status",
            "owner",
            "message",
            "result",
            "created_at",
            "updated_at",
            "self",
            "schema",
            "image_id",
            "request_id",
            "user_id",
            "expires_at"
        ]
    );
    assert_eq!((&full["self"], &full["schema"]), (&json!(format!("/v2/tasks/{task_id}")), &json!("/v2/schemas/task")));
    assert!(full["created_at"].as_str().unwrap().ends_with('Z'));
    let r = g(&server, "GET", &format!("/v2/tasks/{task_id}")).send().await;
    assert_gerr(&r, 403, "You are not authorized to complete tasks_api_access action.");
}

#[tokio::test]
async fn import_requests_are_checked_in_glances_order() {
    let env = Env::new();
    let server = env.start();
    let queued = create_raw(&server).await;
    let bad = |r: &Resp, msg: &str| assert_gerr(r, 400, msg);
    bad(&import(&server, &queued, json!({})).await, "Import request requires a 'method' field.");
    bad(
        &import(&server, &queued, json!({"method": "glance-direct"})).await,
        "Import request requires a 'method' field.",
    );
    bad(&import(&server, &queued, json!([1])).await, "Import request requires a 'method' field.");
    bad(&import(&server, &queued, json!({"method": {}})).await, "Import request requires a 'name' field.");
    bad(
        &import(&server, &queued, json!({"method": {"name": "glance-download"}})).await,
        "Unknown import method name 'glance-download'.",
    );
    bad(
        &import(&server, &queued, json!({"method": {"name": "glance-direct"}, "all_stores": "yes"})).await,
        "'all_stores' must be boolean value only",
    );
    bad(
        &import(&server, &queued, json!({"method": {"name": "glance-direct"}, "all_stores_must_succeed": 1})).await,
        "'all_stores_must_succeed' must be boolean value only",
    );
    let gone = new_id();
    assert_gerr(
        &import(&server, &gone, json!({"method": {"name": "glance-direct"}})).await,
        404,
        &format!("No image found with ID {gone}"),
    );
    assert_gerr(
        &import(&server, &queued, json!({"method": {"name": "glance-direct"}})).await,
        409,
        "Image needs to be staged before 'glance-direct' method can be used",
    );
    let active = active_raw(&server, b"data").await;
    assert_gerr(
        &import(&server, &active, json!({"method": {"name": "web-download", "uri": "http://example.com/x"}})).await,
        409,
        "Image with status active cannot be target for import",
    );
    assert_gerr(
        &import(&server, &queued, json!({"method": {"name": "copy-image"}})).await,
        409,
        "Only images with status active can be targeted for copying",
    );
    // One store: the data is in it already.
    let admin = |body: Value| g(&server, "POST", &format!("/v2/images/{active}/import")).token(TOK_ADMIN).json(&body);
    assert_gerr(
        &admin(json!({"method": {"name": "copy-image"}})).send().await,
        400,
        "Image is already present at store 'file'",
    );
    assert_eq!(admin(json!({"method": {"name": "copy-image"}, "all_stores": true})).send().await.status, 202);
    let bare = create(&server, json!({"name": "no formats"})).await["id"].as_str().unwrap().to_owned();
    assert_eq!(stage(&server, &bare, b"abc").await.status, 204, "formats are not needed to stage");
    assert_gerr(
        &import(&server, &bare, json!({"method": {"name": "glance-direct"}})).await,
        409,
        "'container_format' needs to be set before import",
    );
    // openstack image import's default body: accepted with one store (Glance would refuse it).
    let id = create_raw(&server).await;
    assert_eq!(stage(&server, &id, b"abc").await.status, 204);
    let reader = g(&server, "POST", &format!("/v2/images/{id}/import"))
        .token(TOK_A_READER)
        .json(&json!({"method": {"name": "glance-direct"}}))
        .send()
        .await;
    assert_gerr(&reader, 403, "You are not authorized to complete modify_image action.");
    let osc = json!({"method": {"name": "glance-direct"}, "all_stores": false, "all_stores_must_succeed": false});
    assert_eq!(import(&server, &id, osc).await.status, 202);
    wait_image(&server, &id, |i| i["status"] == "active").await;

    // Stage: its own checks.
    let id = create_raw(&server).await;
    let r =
        g(&server, "PUT", &format!("/v2/images/{id}/stage")).content_type("application/json").body("{}").send().await;
    assert_gerr(&r, 415, "Invalid content type application/json");
    let r = g(&server, "PUT", &format!("/v2/images/{id}/stage"))
        .content_type(OCTET_STREAM)
        .header("X-Openstack-Image-Size", "many")
        .body("x")
        .send()
        .await;
    assert_gerr(&r, 400, "Invalid or missing image size in request headers.");
    let r = g(&server, "PUT", &format!("/v2/images/{id}/stage"))
        .token(TOK_B)
        .content_type(OCTET_STREAM)
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 404, "another project's image is not found");
    assert_eq!(show(&server, &id).await["status"], json!("queued"), "nothing changed");
}

#[tokio::test]
async fn web_download_imports_and_fails_cleanly() {
    let env = Env::new();
    let data = pattern(300_000, 5);
    let port = web_server(data.clone()).await;
    // The test's server is on a random port: allow every port.
    let server = start(&env, &["--import-allowed-ports="]);

    let id = create_raw(&server).await;
    let uri = format!("http://127.0.0.1:{port}/data");
    let r = import(&server, &id, json!({"method": {"name": "web-download", "uri": uri}})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let image = wait_image(&server, &id, |i| i["status"] == "active").await;
    assert_eq!((&image["checksum"], &image["size"]), (&json!(md5_hex(&data)), &json!(300_000)));
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert!(r.status == 200 && r.body == data, "the data downloaded: {} {} bytes", r.status, r.body.len());
    wait_tasks(&server, &id, "success").await;

    // A download that fails: the task fails, the image is queued again, nothing is left.
    for (path, why) in [("/missing", "HTTP 404"), (&format!("/redirect-to/{port}") as &str, "")] {
        let id = create_raw(&server).await;
        let uri = format!("http://127.0.0.1:{port}{path}");
        let r = import(&server, &id, json!({"method": {"name": "web-download", "uri": uri}})).await;
        assert_eq!(r.status, 202, "{}", r.text());
        if why.is_empty() {
            // A redirect to an allowed place is followed.
            wait_image(&server, &id, |i| i["status"] == "active").await;
            continue;
        }
        let tasks = wait_tasks(&server, &id, "failure").await;
        assert!(tasks[0]["message"].as_str().unwrap().contains(why), "{tasks:?}");
        let image = show(&server, &id).await;
        assert_eq!(
            (&image["status"], &image["size"], &image["checksum"]),
            (&json!("queued"), &Value::Null, &Value::Null)
        );
        assert!(image.get("os_glance_import_task").is_none());
        // And it can be imported again.
        let r = import(
            &server,
            &id,
            json!({"method": {"name": "web-download", "uri": format!("http://127.0.0.1:{port}/data")}}),
        )
        .await;
        assert_eq!(r.status, 202);
        wait_image(&server, &id, |i| i["status"] == "active").await;
    }
    assert_eq!(data_files(&env).len(), 3, "one file per active image, nothing else: {:?}", data_files(&env));
}

#[tokio::test]
async fn web_download_urls_pass_the_filter() {
    let env = Env::new();
    let port = web_server(b"x".to_vec()).await;
    let server = env.start(); // Glance's defaults: http(s), ports 80 and 443 when named
    let id = create_raw(&server).await;
    let refused = |uri: &str| json!({"method": {"name": "web-download", "uri": uri}});
    for uri in [
        format!("http://127.0.0.1:{port}/data"),
        "ftp://example.com/x".to_owned(),
        "file:///etc/passwd".to_owned(),
        "http://127.1/x".to_owned(),
        "http://2130706433/x".to_owned(),
        "http://does-not.exist/no/possible/way".to_owned(),
        "http://h:99999/x".to_owned(),
    ] {
        let r = import(&server, &id, refused(&uri)).await;
        assert_gerr(&r, 400, &format!("URI for web-download does not pass filtering: {uri}"));
    }
    assert_gerr(
        &import(&server, &id, json!({"method": {"name": "web-download"}})).await,
        400,
        "URI for web-download does not pass filtering: None",
    );
    assert_eq!(show(&server, &id).await["status"], json!("queued"));

    // A redirect to a place the filter refuses fails the task.
    let denied = start(&env, &["--import-allowed-ports=", "--import-disallowed-ports", "1"]);
    let id = create_raw(&denied).await;
    let r = import(&denied, &id, refused(&format!("http://127.0.0.1:{port}/redirect-to/1"))).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let tasks = wait_tasks(&denied, &id, "failure").await;
    assert!(tasks[0]["message"].as_str().unwrap().contains("Redirect to disallowed URL"), "{tasks:?}");
    assert_eq!(show(&denied, &id).await["status"], json!("queued"));
}

#[tokio::test]
async fn an_import_in_progress_holds_the_image_and_a_dead_node_fails_visibly() {
    let env = Env::new();
    let port = web_server(Vec::new()).await;
    let mut server = start(&env, &["--import-allowed-ports="]);
    let id = create_raw(&server).await;
    let slow = json!({"method": {"name": "web-download", "uri": format!("http://127.0.0.1:{port}/slow")}});
    assert_eq!(import(&server, &id, slow.clone()).await.status, 202);
    let importing = wait_image(&server, &id, |i| i["status"] == "importing").await;
    let task_id = importing["os_glance_import_task"].as_str().unwrap().to_owned();
    assert_eq!(importing["os_glance_importing_to_stores"], json!(""));
    assert_gerr(
        &import(&server, &id, slow).await,
        409,
        "Image needs to be in 'queued' state to use 'web-download' method",
    );
    let r = g(&server, "PATCH", &img_path(&id))
        .patch(&json!([{"op": "remove", "path": "/os_glance_import_task"}]))
        .send()
        .await;
    assert_gerr(&r, 403, "Attribute 'os_glance_import_task' is reserved.");

    // The node dies mid-import; the next one puts the image back and fails the task.
    server.kill();
    let server = env.start();
    let image = wait_image(&server, &id, |i| i["status"] == "queued").await;
    assert!(image.get("os_glance_import_task").is_none(), "{image}");
    let r = g(&server, "GET", &format!("/v2/tasks/{task_id}")).token(TOK_ADMIN).send().await;
    assert_eq!(r.json()["status"], json!("failure"), "{}", r.text());
    assert_eq!(r.json()["message"], json!("The imagemeta node running this task stopped before it ended."));
    assert!(data_files(&env).is_empty(), "{:?}", data_files(&env));
}

#[tokio::test]
async fn the_tasks_api_is_for_admins() {
    let env = Env::new();
    let server = env.start();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = create_raw(&server).await;
        assert_eq!(stage(&server, &id, b"abc").await.status, 204);
        assert_eq!(import(&server, &id, json!({"method": {"name": "glance-direct"}})).await.status, 202);
        ids.push(wait_tasks(&server, &id, "success").await[0]["id"].as_str().unwrap().to_owned());
    }
    let admin = |path: &str| g(&server, "GET", path).token(TOK_ADMIN);
    let r = admin("/v2/tasks").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let listed: Vec<&str> = body["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids.iter().rev().map(String::as_str).collect::<Vec<_>>(), "newest first");
    assert_eq!((&body["first"], &body["schema"]), (&json!("/v2/tasks"), &json!("/v2/schemas/tasks")));
    assert!(body.get("next").is_none());
    let stub = &body["tasks"][0];
    let keys: Vec<&str> = stub.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "type", "status", "owner", "created_at", "updated_at", "self", "schema", "expires_at"]);

    let r = admin("/v2/tasks?limit=2&sort_dir=asc").send().await;
    let page = r.json();
    assert_eq!(page["next"], json!(format!("/v2/tasks?limit=2&sort_dir=asc&marker={}", ids[1])));
    assert_eq!(page["first"], json!("/v2/tasks?limit=2&sort_dir=asc"));
    let r = admin(page["next"].as_str().unwrap()).send().await;
    assert_eq!(r.json()["tasks"][0]["id"], json!(ids[2]));
    assert_eq!(admin("/v2/tasks?status=failure").send().await.json()["tasks"], json!([]));
    assert_gerr(&admin("/v2/tasks?type=api_image_import").send().await, 400, "Invalid type value: api_image_import");
    assert_gerr(&admin("/v2/tasks?status=done").send().await, 400, "Invalid status value: done");
    assert_gerr(&admin("/v2/tasks?sort_key=name").send().await, 400, "Sort key supplied was not valid.");
    assert_gerr(&admin("/v2/tasks?sort_dir=up").send().await, 400, "Invalid sort direction: up");
    assert_gerr(&admin("/v2/tasks?limit=x").send().await, 400, "limit param must be an integer");
    assert_gerr(&admin("/v2/tasks?marker=nope").send().await, 400, "Invalid marker format");
    let unknown = new_id();
    assert_gerr(
        &admin(&format!("/v2/tasks?marker={unknown}")).send().await,
        400,
        &format!("Task with the given id {unknown} was not found"),
    );
    assert_gerr(&admin(&format!("/v2/tasks/{unknown}")).send().await, 404, &format!("Could not find task {unknown}"));
    let r = g(&server, "DELETE", &format!("/v2/tasks/{}", ids[0])).token(TOK_ADMIN).send().await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_gerr(
        &g(&server, "GET", "/v2/tasks").send().await,
        403,
        "You are not authorized to complete tasks_api_access action.",
    );

    // The schemas, as Glance serves them.
    let r = g(&server, "GET", "/v2/schemas/task").send().await;
    let schema = r.json();
    let props: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        props,
        [
            "id",
            "type",
            "status",
            "input",
            "result",
            "owner",
            "message",
            "image_id",
            "request_id",
            "user_id",
            "expires_at",
            "created_at",
            "updated_at",
            "self",
            "schema"
        ]
    );
    assert_eq!(schema["properties"]["status"]["enum"], json!(["pending", "processing", "success", "failure"]));
    let r = g(&server, "GET", "/v2/schemas/tasks").send().await;
    let tasks = r.json();
    assert_eq!(tasks["links"], json!([{"rel": "describedby", "href": "{schema}"}]));
    assert!(tasks["properties"]["tasks"]["items"]["properties"].get("input").is_none());
}

/// Data files of the environment's file store (not staging).
fn data_files(env: &Env) -> Vec<String> {
    let dir = env.dir().join("images");
    std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// The files of image `id` in directory `dir` (a file store's data and partial uploads).
fn files_of(dir: &std::path::Path, id: &str) -> Vec<String> {
    let prefix: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A server on three file stores, `alpha` (the default), `beta` and `gamma`.
fn three_stores(env: &Env) -> Server {
    // web-download from the test's loopback server, on any port.
    let mut args = vec!["--import-allowed-ports=".to_owned()];
    for name in ["alpha", "beta", "gamma"] {
        args.push("--image-store".to_owned());
        args.push(format!("{name}=file://{}", env.dir().join(name).display()));
    }
    args.extend(["--default-image-store".to_owned(), "alpha".to_owned()]);
    env.start_with(&ServerOpts { extra_args: args, ..Default::default() })
}

async fn copy_image(server: &Server, id: &str, body: Value) -> Resp {
    let mut body = body;
    body["method"] = json!({"name": "copy-image"});
    g(server, "POST", &format!("/v2/images/{id}/import")).token(TOK_ADMIN).json(&body).send().await
}

/// The image once its import task ended (the task's status is returned with it).
async fn after_import(server: &Server, id: &str, tasks: usize) -> (Value, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // As admin: copy-image tasks are the admin project's.
        let r = g(server, "GET", &format!("/v2/images/{id}/tasks")).token(TOK_ADMIN).send().await;
        let listed = r.json()["tasks"].as_array().cloned().unwrap_or_default();
        if listed.len() >= tasks && listed.iter().all(|t| t["status"] == "success" || t["status"] == "failure") {
            // Oldest first.
            return (show(server, id).await, listed[listed.len() - 1]["status"].as_str().unwrap().to_owned());
        }
        assert!(std::time::Instant::now() < deadline, "the import never ended: {listed:?} {}", show(server, id).await);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn stores_of(image: &Value) -> (&Value, &Value, &Value, &Value) {
    (&image["status"], &image["stores"], &image["os_glance_importing_to_stores"], &image["os_glance_failed_import"])
}

#[tokio::test]
async fn imports_and_copies_go_to_several_stores() {
    let env = Env::new();
    let server = three_stores(&env);
    let dir = |name: &str| env.dir().join(name);
    let data = b"the same bytes in every store".to_vec();

    // glance-direct to every store, then to two named ones (in the order asked).
    let id = create_raw(&server).await;
    assert_eq!(stage(&server, &id, &data).await.status, 204);
    assert_eq!(
        import(&server, &id, json!({"method": {"name": "glance-direct"}, "all_stores": true})).await.status,
        202
    );
    let (image, task) = after_import(&server, &id, 1).await;
    assert_eq!(task, "success");
    assert_eq!(stores_of(&image), (&json!("active"), &json!("alpha,beta,gamma"), &json!(""), &json!("")));
    assert_eq!(image["checksum"], json!(md5_hex(&data)));
    for store in ["alpha", "beta", "gamma"] {
        assert_eq!(files_of(&dir(store), &id).len(), 1, "one whole copy in {store}, no stage left");
    }
    let r = g(&server, "GET", &format!("/v2/images/{id}/file")).send().await;
    assert_eq!((r.status, r.body.as_slice()), (200, data.as_slice()));
    let named = create_raw(&server).await;
    assert_eq!(stage(&server, &named, &data).await.status, 204);
    let body = json!({"method": {"name": "glance-direct"}, "stores": ["gamma", "beta"]});
    assert_eq!(import(&server, &named, body).await.status, 202);
    let (image, _) = after_import(&server, &named, 1).await;
    assert_eq!(stores_of(&image), (&json!("active"), &json!("gamma,beta"), &json!(""), &json!("")));
    assert!(files_of(&dir("alpha"), &named).is_empty(), "the stage in the default store is gone");

    // web-download to two stores: fetched once, copied to the second.
    let port = web_server(data.clone()).await;
    let fetched = create_raw(&server).await;
    let body = json!({"method": {"name": "web-download", "uri": format!("http://127.0.0.1:{port}/data")},
                      "stores": ["beta", "alpha"]});
    assert_eq!(import(&server, &fetched, body).await.status, 202);
    let (image, _) = after_import(&server, &fetched, 1).await;
    assert_eq!(stores_of(&image), (&json!("active"), &json!("beta,alpha"), &json!(""), &json!("")));
    assert_eq!(image["checksum"], json!(md5_hex(&data)));

    // copy-image: admins only, to stores that do not hold the data yet.
    let copied = create_raw(&server).await;
    let r = g(&server, "PUT", &format!("/v2/images/{copied}/file"))
        .content_type(OCTET_STREAM)
        .body(data.clone())
        .send()
        .await;
    assert_eq!(r.status, 204);
    let r = import(&server, &copied, json!({"method": {"name": "copy-image"}, "stores": ["beta"]})).await;
    assert_gerr(&r, 403, "You are not authorized to complete copy_image action.");
    assert_gerr(
        &copy_image(&server, &copied, json!({"stores": ["alpha"]})).await,
        400,
        "Image is already present at store 'alpha'",
    );
    assert_eq!(copy_image(&server, &copied, json!({"stores": ["beta"]})).await.status, 202);
    let (image, task) = after_import(&server, &copied, 1).await;
    assert_eq!(task, "success");
    assert_eq!(stores_of(&image), (&json!("active"), &json!("alpha,beta"), &json!(""), &json!("")));
    assert_eq!(copy_image(&server, &copied, json!({"all_stores": true})).await.status, 202);
    let (image, _) = after_import(&server, &copied, 2).await;
    assert_eq!(image["stores"], json!("alpha,beta,gamma"));
    // Nothing left to copy: accepted, and no task.
    assert_eq!(copy_image(&server, &copied, json!({"all_stores": true})).await.status, 202);
    let r = g(&server, "GET", &format!("/v2/images/{copied}/tasks")).token(TOK_ADMIN).send().await;
    assert_eq!(r.json()["tasks"].as_array().unwrap().len(), 2);

    // One store's copy deleted: the others serve the data; never the last one.
    let delete = |store: &str| g(&server, "DELETE", &format!("/v2/stores/{store}/{copied}")).token(TOK_ADMIN).send();
    assert_no_content(&delete("alpha").await);
    assert!(files_of(&dir("alpha"), &copied).is_empty(), "the data left the store");
    assert_eq!(show(&server, &copied).await["stores"], json!("beta,gamma"));
    assert_gerr(&delete("alpha").await, 404, &format!("Image {copied} is not stored in store alpha."));
    let r = g(&server, "GET", &format!("/v2/images/{copied}/file")).send().await;
    assert_eq!((r.status, r.body.as_slice()), (200, data.as_slice()), "served from the next copy");
    assert_no_content(&delete("gamma").await);
    assert_gerr(
        &delete("beta").await,
        403,
        "Cannot delete image data from the only store containing it. Consider deleting the image instead.",
    );
    // And the image deleted: every copy goes.
    assert_no_content(&g(&server, "DELETE", &img_path(&id)).send().await);
    for store in ["alpha", "beta", "gamma"] {
        assert!(files_of(&dir(store), &id).is_empty(), "nothing of a deleted image left in {store}");
    }

    // A store that fails (its directory replaced by a file): with all_stores_must_succeed
    // (the default) the copy fails and leaves nothing; without, the others are kept.
    std::fs::remove_dir_all(dir("gamma")).unwrap();
    std::fs::write(dir("gamma"), b"not a directory").unwrap();
    let image_now = show(&server, &copied).await;
    assert_eq!(image_now["stores"], json!("beta"));
    assert_eq!(copy_image(&server, &copied, json!({"stores": ["alpha", "gamma"]})).await.status, 202);
    let (image, task) = after_import(&server, &copied, 3).await;
    assert_eq!(task, "failure");
    assert_eq!(stores_of(&image), (&json!("active"), &json!("beta"), &json!(""), &json!("gamma")));
    assert!(files_of(&dir("alpha"), &copied).is_empty(), "the copy that succeeded was taken back");
    assert!(image.get("os_glance_import_task").is_none(), "the lock is released");
    let body = json!({"stores": ["alpha", "gamma"], "all_stores_must_succeed": false});
    assert_eq!(copy_image(&server, &copied, body).await.status, 202);
    let (image, task) = after_import(&server, &copied, 4).await;
    assert_eq!(task, "success");
    assert_eq!(stores_of(&image), (&json!("active"), &json!("beta,alpha"), &json!(""), &json!("gamma")));

    // An image deleted while it is being copied: nothing of it left in any store once the
    // copy has ended (whether the copy or the delete came first).
    let big = vec![7u8; 48 << 20];
    let deleted = create_raw(&server).await;
    let r = g(&server, "PUT", &format!("/v2/images/{deleted}/file")).content_type(OCTET_STREAM).body(big).send().await;
    assert_eq!(r.status, 204);
    assert_eq!(copy_image(&server, &deleted, json!({"stores": ["beta"]})).await.status, 202);
    assert_no_content(&g(&server, "DELETE", &img_path(&deleted)).send().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = g(&server, "GET", "/v2/tasks").token(TOK_ADMIN).send().await;
        let tasks = r.json()["tasks"].as_array().cloned().unwrap_or_default();
        assert!(!tasks.is_empty(), "{}", r.text());
        if tasks.iter().all(|t| t["status"] == "success" || t["status"] == "failure") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the copy never ended: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for store in ["alpha", "beta"] {
        let left = files_of(&dir(store), &deleted);
        assert!(left.is_empty(), "nothing of the deleted image left in {store}: {left:?}");
    }

    // An import to every store with one failing: back to queued, nothing left anywhere.
    let failing = create_raw(&server).await;
    assert_eq!(stage(&server, &failing, &data).await.status, 204);
    let body = json!({"method": {"name": "glance-direct"}, "all_stores": true});
    assert_eq!(import(&server, &failing, body).await.status, 202);
    let (image, task) = after_import(&server, &failing, 1).await;
    assert_eq!(task, "failure");
    assert_eq!(stores_of(&image), (&json!("queued"), &Value::Null, &json!(""), &json!("gamma")));
    for store in ["alpha", "beta"] {
        assert!(files_of(&dir(store), &failing).is_empty(), "nothing of the failed import left in {store}");
    }
}
