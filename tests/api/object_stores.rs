//! Image data in object storage, on a real OpenStack Swift spoken to over its own API and its
//! S3 API (ci/swift), next to a file store: Glance's multi-store API, uploads that stream into
//! multipart uploads and static large objects, downloads and ranges, deletes that leave no
//! part or segment, interrupted uploads that leave nothing, and a store that goes away. These
//! run when `IMAGEMETA_TEST_SWIFT` holds the JSON line `ci/swift/start.sh` printed.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

/// The Swift CI starts, as `ci/swift/start.sh` describes it.
pub fn swift() -> Option<Value> {
    std::env::var("IMAGEMETA_TEST_SWIFT").ok().map(|s| serde_json::from_str(&s).expect("IMAGEMETA_TEST_SWIFT is JSON"))
}

/// A name no other test uses, for buckets and containers.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A server with three stores: `swift` (the default: Swift's API), `s3` (Swift's S3 API) and
/// `file`, with the credentials in the environment the server gets.
struct Stores {
    server: Server,
    container: String,
    bucket: String,
    swift: Value,
}

fn start(env: &Env, swift: &Value, extra: &[&str]) -> Stores {
    let (container, bucket) = (unique("images"), unique("bucket"));
    let opts = stores_opts(env, swift, &container, &bucket, extra);
    let server = env.start_with(&opts);
    Stores { server, container, bucket, swift: swift.clone() }
}

/// The options of a server on the three stores (several servers given the same container and
/// bucket share them).
pub fn stores_opts(env: &Env, swift: &Value, container: &str, bucket: &str, extra: &[&str]) -> ServerOpts {
    let auth = swift["auth_v1"].as_str().unwrap();
    let proxy = swift["proxy"].as_str().unwrap();
    let credentials = [
        ("IMAGEMETA_SWIFT_USER", "user"),
        ("IMAGEMETA_SWIFT_KEY", "key"),
        ("AWS_ACCESS_KEY_ID", "s3_access_key"),
        ("AWS_SECRET_ACCESS_KEY", "s3_secret_key"),
    ]
    .map(|(var, key)| (var.to_owned(), swift[key].as_str().unwrap().to_owned()))
    .to_vec();
    let mut args = vec![
        "--image-store".to_owned(),
        format!("swift=swift://{container}?auth_url={auth}"),
        "--image-store".to_owned(),
        format!("s3=s3://{bucket}?endpoint={proxy}&region={}", swift["region"].as_str().unwrap_or("us-east-1")),
        "--image-store".to_owned(),
        format!("file=file://{}", env.dir().join("file-store").display()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    ServerOpts { extra_args: args, env: credentials, ..Default::default() }
}

impl Stores {
    /// A tempauth token and the storage URL, for looking into Swift directly.
    async fn swift_session(&self) -> (String, String) {
        let client = reqwest::Client::new();
        let r = client
            .get(self.swift["auth_v1"].as_str().unwrap())
            .header("X-Auth-User", self.swift["user"].as_str().unwrap())
            .header("X-Auth-Key", self.swift["key"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let header = |n: &str| r.headers()[n].to_str().unwrap().to_owned();
        (header("x-storage-url"), header("x-auth-token"))
    }

    /// The objects in a Swift container.
    async fn swift_objects(&self, container: &str) -> Vec<String> {
        let (url, token) = self.swift_session().await;
        let r = reqwest::Client::new()
            .get(format!("{url}/{container}?format=json"))
            .header("X-Auth-Token", token)
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 404 {
            return Vec::new();
        }
        let list: Vec<Value> = r.json().await.unwrap_or_default();
        list.iter().map(|o| o["name"].as_str().unwrap().to_owned()).collect()
    }

    /// Everything in the S3 bucket, seen through the Swift API (s3api keeps a bucket as a
    /// container, and multipart upload parts in `BUCKET+segments`).
    async fn s3_objects(&self) -> Vec<String> {
        let mut all = self.swift_objects(&self.bucket).await;
        all.extend(self.swift_objects(&format!("{}+segments", self.bucket)).await);
        all
    }
}

async fn create_raw_image(server: &Server) -> String {
    create(server, json!({"name": "obj", "disk_format": "raw", "container_format": "bare"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn upload_to(server: &Server, id: &str, store: Option<&str>, data: &[u8]) -> Resp {
    let mut call = g(server, "PUT", &file_path(id)).content_type(OCTET).body(data.to_vec());
    if let Some(store) = store {
        call = call.header("X-Image-Meta-Store", store);
    }
    call.send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_listed_as_glance_lists_them() {
    let Some(swift) = swift() else { return };
    let env = Env::new();
    let s = start(&env, &swift, &["--default-image-store", "swift"]);
    let r = g(&s.server, "GET", "/v2/info/stores").send().await;
    assert_json(&r, 200, &json!({"stores": [{"id": "swift", "default": "true"}, {"id": "s3"}, {"id": "file"}]}));
    let r = g(&s.server, "GET", "/v2/info/stores/detail").send().await;
    assert_gerr(&r, 403, "You are not authorized to complete stores_info_detail action.");
    let r = g(&s.server, "GET", "/v2/info/stores/detail").token(TOK_ADMIN).send().await;
    let types: Vec<Value> = r.json()["stores"].as_array().unwrap().iter().map(|s| s["type"].clone()).collect();
    assert_eq!(types, [json!("swift"), json!("s3"), json!("file")]);

    // One store: Glance's multi-store API is off.
    let plain = Env::new().start();
    let r = g(&plain, "GET", "/v2/info/stores").send().await;
    assert_gerr(&r, 404, "Multi backend is not supported at this site.");
    assert_eq!(g(&plain, "DELETE", &format!("/v2/stores/file/{}", new_id())).send().await.status, 404);
}

/// Data in each store: uploaded (multipart and SLO past 8 MiB), downloaded whole and by
/// range, with the image's `stores`; deleted through either API with every part and segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_round_trips_through_every_store() {
    let Some(swift) = swift() else { return };
    let env = Env::new();
    let s = start(&env, &swift, &[]);
    let big = pattern(20 << 20, 7);
    for (store, data) in [
        ("swift", big.clone()),
        ("s3", big.clone()),
        ("file", big.clone()),
        ("swift", b"small".to_vec()),
        ("s3", b"small".to_vec()),
    ] {
        let id = create_raw_image(&s.server).await;
        let r = upload_to(&s.server, &id, Some(store), &data).await;
        assert_no_content(&r);
        let v = show(&s.server, &id).await;
        assert_eq!(
            (v["status"].clone(), v["stores"].clone(), v["size"].clone()),
            (json!("active"), json!(store), json!(data.len())),
            "{store}"
        );
        let r = g(&s.server, "GET", &file_path(&id)).send().await;
        assert_eq!(r.status, 200, "{store}");
        assert!(r.body == data, "{store}: the data comes back");
        let r = g(&s.server, "GET", &file_path(&id)).header("Range", "bytes=1-3").send().await;
        assert_eq!((r.status, r.body.as_slice()), (206, &data[1..4]), "{store}: a range");
        assert_eq!(r.header("content-range"), Some(format!("bytes 1-3/{}", data.len()).as_str()));
        // Deleted (through the Compute API for one, Glance for the other): nothing left.
        if store == "s3" {
            assert_no_content(&s.server.delete(&image_path(&id)).send().await);
        } else {
            assert_no_content(&g(&s.server, "DELETE", &img_path(&id)).send().await);
        }
    }
    assert_eq!(s.swift_objects(&s.container).await, Vec::<String>::new(), "no object left in Swift");
    assert_eq!(s.swift_objects(&format!("{}_segments", s.container)).await, Vec::<String>::new(), "no segment left");
    assert_eq!(s.s3_objects().await, Vec::<String>::new(), "no object or part left in the bucket");

    // The default store without the header; an unknown store is 400.
    let id = create_raw_image(&s.server).await;
    assert_no_content(&upload_to(&s.server, &id, None, b"default").await);
    assert_eq!(show(&s.server, &id).await["stores"], "swift");
    let other = create_raw_image(&s.server).await;
    let r = upload_to(&s.server, &other, Some("nope"), b"x").await;
    assert_gerr(&r, 400, "Store for identifier nope not found");
    assert_eq!(show(&s.server, &other).await["status"], "queued");
    // Deleting from the only store holding the data: refused, as Glance does.
    let r = g(&s.server, "DELETE", &format!("/v2/stores/swift/{id}")).token(TOK_ADMIN).send().await;
    assert_gerr(
        &r,
        403,
        "Cannot delete image data from the only store containing it. Consider deleting the image instead.",
    );
    let r = g(&s.server, "DELETE", &format!("/v2/stores/nope/{id}")).token(TOK_ADMIN).send().await;
    assert_gerr(&r, 409, "The selected store nope is not available on this node.");
}

/// A client that disconnects in the middle of an upload leaves no object, part or segment,
/// and the image queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_leaves_nothing_in_any_store() {
    let Some(swift) = swift() else { return };
    let env = Env::new();
    let s = start(&env, &swift, &[]);
    for store in ["swift", "s3"] {
        let id = create_raw_image(&s.server).await;
        let port = image_port(&s.server);
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\nX-Image-Meta-Store: {store}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 100000000\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).unwrap();
        // More than two parts (8 MiB each) reach the store before the client goes.
        sock.write_all(&pattern(20 << 20, 3)).unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = if store == "swift" {
                s.swift_objects(&format!("{}_segments", s.container)).await.len()
            } else {
                s.s3_objects().await.len()
            };
            if seen >= 2 {
                break;
            }
            assert!(Instant::now() < until, "{store}: no part was written");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(sock);
        wait_status(&s.server, &id, "queued").await;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = [
                s.swift_objects(&s.container).await,
                s.swift_objects(&format!("{}_segments", s.container)).await,
                s.s3_objects().await,
            ]
            .concat();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < until, "{store}: left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A 2 GiB upload to S3 streams through the server in bounded memory: its peak resident
/// memory stays under 150 MiB, and the data's hashes are right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_gib_upload_to_s3_stays_in_bounded_memory() {
    let Some(swift) = swift() else { return };
    if std::env::var("IMAGEMETA_TEST_BIG_UPLOAD").is_err() {
        return; // CI sets it: 2 GiB through Swift's disk takes a minute
    }
    let env = Env::new();
    let s = start(&env, &swift, &["--default-image-store", "s3"]);
    let id = create_raw_image(&s.server).await;
    let size: u64 = 2 << 30;
    let chunk = pattern(1 << 20, 5);
    let stream = futures_util::stream::iter((0..(size >> 20)).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
    let r = client
        .put(format!("{}{}", s.server.image_base, file_path(&id)))
        .header("X-Auth-Token", TOK_A)
        .header("Content-Type", OCTET)
        .header("Content-Length", size.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap_or_default());
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.server.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!("2 GiB upload to S3: peak RSS {} MiB", peak_kib / 1024);
    assert!(peak_kib < 150 * 1024, "peak RSS {} MiB", peak_kib / 1024);
    let v = show(&s.server, &id).await;
    assert_eq!((v["size"].clone(), v["stores"].clone()), (json!(size), json!("s3")));
    assert_no_content(&g(&s.server, "DELETE", &img_path(&id)).send().await);
}

fn swift_script(script: &str, state: &std::path::Path) -> String {
    let out = std::process::Command::new(format!("{}/ci/swift/{script}", env!("CARGO_MANIFEST_DIR")))
        .arg(state)
        .output()
        .expect("run the Swift harness");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned()
}

struct StopSwift(std::path::PathBuf);

impl Drop for StopSwift {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/ci/swift/stop.sh")).arg(&self.0).output();
    }
}

/// The object store goes away: an upload is 503 with Retry-After and its image goes back to
/// `queued`, a download is 503; when the store is back (its tokens forgotten: Swift's are in
/// memcached), both work again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_503_and_the_image_stays_queued() {
    if swift().is_none() {
        return;
    }
    let env = Env::new();
    let state = env.dir().join("swift");
    let own: Value = serde_json::from_str(&swift_script("start.sh", &state)).unwrap();
    let _stop = StopSwift(state.clone());
    let s = start(&env, &own, &["--default-image-store", "swift"]);
    let kept = create_raw_image(&s.server).await;
    assert_no_content(&upload_to(&s.server, &kept, Some("s3"), b"kept in s3").await);

    swift_script("stop.sh", &state);
    for store in ["swift", "s3"] {
        let id = create_raw_image(&s.server).await;
        let r = upload_to(&s.server, &id, Some(store), &pattern(100_000, 1)).await;
        assert_gerr(&r, 503, "The image data store is unavailable.");
        assert_eq!(r.header("retry-after"), Some("5"));
        assert_eq!(show(&s.server, &id).await["status"], "queued", "{store}");
    }
    let r = g(&s.server, "GET", &file_path(&kept)).send().await;
    assert_gerr(&r, 503, "The image data store is unavailable.");

    swift_script("start.sh", &state);
    let id = create_raw_image(&s.server).await;
    assert_no_content(&upload_to(&s.server, &id, Some("swift"), b"after the outage").await);
    assert_eq!(g(&s.server, "GET", &file_path(&id)).send().await.body, b"after the outage");
    assert_eq!(g(&s.server, "GET", &file_path(&kept)).send().await.body, b"kept in s3");
}

/// `copy-image` from the file store into Swift and S3 (Swift's two APIs), then the image
/// served from the object stores once its file copy is deleted, and every object gone with
/// the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_image_puts_the_data_in_every_store() {
    let Some(swift) = swift() else { return };
    let env = Env::new();
    let s = start(&env, &swift, &[]);
    let data = pattern(12 << 20, 3);
    let id = create_raw_image(&s.server).await;
    assert_no_content(&upload_to(&s.server, &id, Some("file"), &data).await);
    let r = g(&s.server, "POST", &format!("/v2/images/{id}/import"))
        .token(TOK_ADMIN)
        .json(&json!({"method": {"name": "copy-image"}, "all_stores": true}))
        .send()
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(60);
    let image = loop {
        let image = show(&s.server, &id).await;
        if image.get("os_glance_import_task").is_none() {
            break image;
        }
        assert!(Instant::now() < deadline, "the copy never ended: {image}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&image["status"], &image["stores"], &image["os_glance_failed_import"]),
        (&json!("active"), &json!("file,swift,s3"), &json!(""))
    );
    assert!(!s.swift_objects(&s.container).await.is_empty(), "an object in Swift");
    assert!(!s.s3_objects().await.is_empty(), "an object in the bucket");
    for store in ["file", "swift"] {
        let r = g(&s.server, "DELETE", &format!("/v2/stores/{store}/{id}")).token(TOK_ADMIN).send().await;
        assert_no_content(&r);
    }
    assert_eq!(show(&s.server, &id).await["stores"], json!("s3"));
    assert_eq!(s.swift_objects(&s.container).await, Vec::<String>::new(), "the Swift copy is gone");
    let r = g(&s.server, "GET", &file_path(&id)).send().await;
    assert!(r.status == 200 && r.body == data, "served from S3");
    assert_no_content(&g(&s.server, "DELETE", &img_path(&id)).send().await);
    assert_eq!(s.s3_objects().await, Vec::<String>::new(), "nothing left in the bucket");
    assert_eq!(s.swift_objects(&format!("{}_segments", s.container)).await, Vec::<String>::new(), "no segment left");
}
