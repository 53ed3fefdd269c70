//! Glance v2: image data upload and download (glance-v2 §8; checklist §18 #31–#41), plus
//! chunked uploads, interrupted uploads, the size cap, declared-size mismatches and format
//! inspection (raw, qcow2).

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

/// Files under the server's image data directory (`--image-data-dir`, see helpers.rs).
fn data_files(env: &Env) -> Vec<String> {
    let dir = env.dir().join("images");
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().to_string());
        }
    }
    out.sort();
    out
}

#[track_caller]
fn assert_queued_without_data(v: &Value) {
    assert_eq!(v["status"], json!("queued"), "{v}");
    assert_eq!(v["size"], Value::Null, "size cleared: {v}");
    assert_eq!(v["virtual_size"], Value::Null, "virtual_size cleared: {v}");
    assert_eq!(v["checksum"], Value::Null, "no checksum: {v}");
    assert_eq!(v["os_hash_value"], Value::Null, "no os_hash_value: {v}");
}

// §18 #31, §8.1 item 1: Content-Type must be exactly application/octet-stream.
#[tokio::test]
async fn upload_requires_octet_stream() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    for ct in [Some("application/json"), Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut c = g(&server, "PUT", &file_path(&id)).body(b"abc".to_vec());
        if let Some(ct) = ct {
            c = c.content_type(ct);
        }
        let r = c.send().await;
        assert_eq!(r.status, 415, "Content-Type {ct:?}: {}", r.text());
        assert_gerr_code(&r, 415);
    }
    assert_queued_without_data(&show(&server, &id).await);
}

// §18 #32, §8.1 item 4: no disk_format/container_format → 400; the image stays queued.
#[tokio::test]
async fn upload_needs_formats() {
    let env = Env::new();
    let server = env.start();
    for (body, missing) in [
        (json!({}), "disk_format, container_format"),
        (json!({"disk_format": "raw"}), "container_format"),
        (json!({"container_format": "bare"}), "disk_format"),
    ] {
        let id = create(&server, body.clone()).await["id"].as_str().unwrap().to_string();
        let r = upload(&server, &id, b"abc").await;
        assert_gerr_code(&r, 400);
        let e = explanation(&r);
        // Glance: "Property container_format must be set prior to saving data." /
        // "Properties disk_format, container_format must be set ..."; the spec only fixes
        // `Property(ies) ... must be set prior to saving data.`
        assert!(
            missing.split(", ").all(|m| e.contains(m)) && e.ends_with("must be set prior to saving data."),
            "{body}: explanation {e:?}"
        );
        assert_queued_without_data(&show(&server, &id).await);
    }
}

// §18 #33, #38, #40, §8.1 item 2 and 5: a chunked upload (no Content-Length) of 1024
// pseudo-random bytes to raw/bare → 204; active, size, md5, sha512, virtual_size == size;
// GET file returns the exact bytes with Content-MD5.
#[tokio::test]
async fn chunked_upload_and_download() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let data = pattern(1024, 1);
    let r = upload_chunked(&server, &id, &data, 100, &[]);
    assert_eq!(r.status, 204, "chunked upload: {}", r.text());
    assert!(r.body.is_empty());
    assert!(is_request_id(r.header("x-openstack-request-id").unwrap_or("")), "request id on upload");
    let v = show(&server, &id).await;
    assert_eq!(v["status"], json!("active"));
    assert_eq!(v["size"], json!(1024));
    assert_eq!(v["virtual_size"], json!(1024), "raw: virtual_size == size");
    assert_eq!(v["checksum"], json!(MD5_P1024));
    assert_eq!(v["os_hash_algo"], json!("sha512"));
    assert_eq!(v["os_hash_value"], json!(SHA512_P1024));

    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data, "exact bytes");
    assert_eq!(r.content_type(), Some("application/octet-stream"));
    assert_eq!(r.header("content-length"), Some("1024"));
    assert_eq!(r.header_all("content-md5"), vec![MD5_P1024], "Content-MD5 is hex md5");
    // Another project cannot see the (shared, member-less) image.
    let r = g(&server, "GET", &file_path(&id)).token(TOK_B).send().await;
    assert_gerr_code(&r, 404);
}

// §8.1 item 2, §14: the SDK's upload (Content-Length, X-OpenStack-Image-Size, empty Accept);
// §18 #34: a second upload on an active image → 409, data unchanged.
#[tokio::test]
async fn sdk_style_upload_then_second_upload() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let data = pattern(4096, 7);
    let r = g(&server, "PUT", &file_path(&id))
        .content_type(OCTET)
        .header("X-OpenStack-Image-Size", "4096")
        .accept("")
        .body(data.clone())
        .send()
        .await;
    assert_no_content(&r);
    let v = show(&server, &id).await;
    assert_eq!(
        (v["status"].clone(), v["size"].clone(), v["checksum"].clone(), v["os_hash_value"].clone()),
        (json!("active"), json!(4096), json!(MD5_P4096), json!(SHA512_P4096))
    );
    let r = upload(&server, &id, b"other").await;
    assert_gerr_code(&r, 409);
    let r = upload_chunked(&server, &id, b"other", 2, &[]);
    assert_gerr_code(&r, 409);
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header_all("content-md5"), vec![MD5_P4096]);
    assert_eq!(show(&server, &id).await["checksum"], json!(MD5_P4096));
}

// §18 #35, §8.1 item 5: over --image-size-cap → 413, back to queued with size null; a
// retry within the cap then works.
#[tokio::test]
async fn upload_over_size_cap() {
    let env = Env::new();
    let server = env
        .start_with(&ServerOpts { extra_args: vec!["--image-size-cap".into(), "1000".into()], ..Default::default() });
    let id = create_raw(&server).await;
    let data = pattern(1024, 1);
    let r = upload(&server, &id, &data).await;
    assert_gerr_has(&r, 413, "The incoming image is too large: ");
    assert_queued_without_data(&show(&server, &id).await);
    // Chunked: the cap is enforced while streaming.
    let r = upload_chunked(&server, &id, &data, 256, &[]);
    assert_gerr_has(&r, 413, "The incoming image is too large: ");
    assert_queued_without_data(&show(&server, &id).await);
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_no_content(&r);
    // Exactly at the cap is fine.
    upload_ok(&server, &id, &data[..1000]).await;
    let v = show(&server, &id).await;
    assert_eq!((v["status"].clone(), v["size"].clone()), (json!("active"), json!(1000)));
}

// §18 #36, §8.1 item 2 and 5: size ≠ X-OpenStack-Image-Size → 400, queued; a non-integer
// header → 400.
#[tokio::test]
async fn upload_size_mismatch() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    for (declared, len) in [("10", 11usize), ("10", 9), ("0", 1)] {
        let r = g(&server, "PUT", &file_path(&id))
            .content_type(OCTET)
            .header("x-openstack-image-size", declared)
            .body(pattern(len, 3))
            .send()
            .await;
        assert_gerr_code(&r, 400);
        assert_queued_without_data(&show(&server, &id).await);
    }
    let r = upload_chunked(&server, &id, &pattern(100, 3), 30, &["X-OpenStack-Image-Size: 99"]);
    assert_gerr_code(&r, 400);
    assert_queued_without_data(&show(&server, &id).await);
    let r = g(&server, "PUT", &file_path(&id))
        .content_type(OCTET)
        .header("x-openstack-image-size", "ten")
        .body(b"0123456789".to_vec())
        .send()
        .await;
    assert_gerr_code(&r, 400);
    assert_queued_without_data(&show(&server, &id).await);
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_no_content(&r);
    // A matching declaration works.
    let r = upload_chunked(&server, &id, &pattern(100, 3), 30, &["X-OpenStack-Image-Size: 100"]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(show(&server, &id).await["size"], json!(100));
}

// §18 #37, §8.1 item 8: Nova's zero-byte "force activate" upload.
#[tokio::test]
async fn zero_byte_upload() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    upload_ok(&server, &id, b"").await;
    let v = show(&server, &id).await;
    assert_eq!(v["status"], json!("active"));
    assert_eq!(v["size"], json!(0));
    assert_eq!(v["checksum"], json!(MD5_EMPTY));
    assert_eq!(v["os_hash_algo"], json!("sha512"));
    assert_eq!(v["os_hash_value"], json!(SHA512_EMPTY));
    // Chunked with only the terminating chunk, too.
    let id2 = create_raw(&server).await;
    let r = upload_chunked(&server, &id2, b"", 1, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    let v = show(&server, &id2).await;
    assert_eq!(
        (v["status"].clone(), v["size"].clone(), v["checksum"].clone()),
        (json!("active"), json!(0), json!(MD5_EMPTY))
    );
}

// §18 #38, §8.1 item 6: a valid qcow2 upload takes virtual_size from header offset 24.
#[tokio::test]
async fn qcow2_virtual_size() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"disk_format": "qcow2", "container_format": "bare"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vsize: u64 = 10 * 1024 * 1024 * 1024;
    let data = qcow2(vsize, 1536);
    upload_ok(&server, &id, &data).await;
    let v = show(&server, &id).await;
    assert_eq!(v["status"], json!("active"));
    assert_eq!(v["size"], json!(1536));
    assert_eq!(v["virtual_size"], json!(vsize));
    // Chunked in small pieces: the header spans several chunks.
    let id2 = create(&server, json!({"disk_format": "qcow2", "container_format": "bare"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = upload_chunked(&server, &id2, &qcow2(12345 * 512, 4096), 7, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(show(&server, &id2).await["virtual_size"], json!(12345 * 512));
}

// §8.1 item 6: disk_format raw accepts anything (even a qcow2 header) with virtual_size == size.
#[tokio::test]
async fn raw_accepts_anything() {
    let env = Env::new();
    let server = env.start();
    for data in [pattern(1024, 1), qcow2(1 << 30, 1024)] {
        let id = active_raw(&server, &data).await;
        let v = show(&server, &id).await;
        assert_eq!(v["size"], json!(1024));
        assert_eq!(v["virtual_size"], json!(1024), "raw: virtual_size == size");
    }
}

// §8.1 item 6, §20: a format mismatch (qcow2 declared, random data) or an unsafe qcow2
// (backing file) → 415, restored to queued.
#[tokio::test]
async fn qcow2_mismatch_is_415() {
    let env = Env::new();
    let server = env.start();
    let id = create(&server, json!({"disk_format": "qcow2", "container_format": "bare"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = upload(&server, &id, &pattern(1024, 1)).await;
    assert_gerr_code(&r, 415);
    assert_queued_without_data(&show(&server, &id).await);
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_no_content(&r);
    // A qcow2 header with a backing file (offset 8 ≠ 0) fails the safety check.
    let mut backed = qcow2(1 << 30, 1024);
    backed[8..16].copy_from_slice(&512u64.to_be_bytes());
    backed[16..20].copy_from_slice(&8u32.to_be_bytes());
    backed[512..520].copy_from_slice(b"base.img");
    let r = upload(&server, &id, &backed).await;
    assert_gerr_code(&r, 415);
    assert_queued_without_data(&show(&server, &id).await);
    // The same image then accepts a valid qcow2.
    upload_ok(&server, &id, &qcow2(1 << 30, 1024)).await;
    assert_eq!(show(&server, &id).await["virtual_size"], json!(1u64 << 30));
}

// §8.1 item 6: inspection only applies to container_format bare; a non-inspectable
// disk_format (ami) with raw data is accepted with virtual_size null.
#[tokio::test]
async fn inspection_scope() {
    let env = Env::new();
    let server = env.start();
    let ovf = create(&server, json!({"disk_format": "qcow2", "container_format": "ovf"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    upload_ok(&server, &ovf, &pattern(1024, 1)).await;
    assert_eq!(show(&server, &ovf).await["status"], json!("active"));
    let ami = create(&server, json!({"disk_format": "ami", "container_format": "bare"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    upload_ok(&server, &ami, &pattern(1024, 1)).await;
    let v = show(&server, &ami).await;
    assert_eq!(v["status"], json!("active"));
    assert_eq!(v["virtual_size"], Value::Null);
}

// §18 #39, §8.2: GET file of an image without data → 204, empty body.
#[tokio::test]
async fn download_queued_is_204() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_no_content(&r);
    let missing = new_id();
    let r = g(&server, "GET", &file_path(&missing)).send().await;
    assert_gerr_code(&r, 404);
}

// §18 #41, §8.2: Range requests.
#[tokio::test]
async fn download_ranges() {
    let env = Env::new();
    let server = env.start();
    let data = pattern(4096, 7);
    let id = active_raw(&server, &data).await;
    let get = |range: &'static str| g(&server, "GET", &file_path(&id)).header("Range", range).send();
    let r = get("bytes=0-4").await;
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.header_all("content-range"), vec!["bytes 0-4/4096"]);
    assert_eq!(r.body, data[0..5].to_vec());
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.content_type(), Some("application/octet-stream"));
    let r = get("bytes=4090-").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header_all("content-range"), vec!["bytes 4090-4095/4096"]);
    assert_eq!(r.body, data[4090..].to_vec());
    let r = get("bytes=-3").await;
    assert_eq!(r.status, 206, "suffix range: {}", r.text());
    assert_eq!(r.header_all("content-range"), vec!["bytes 4093-4095/4096"]);
    assert_eq!(r.body, data[4093..].to_vec());
    for bad in ["bytes=4096-", "bytes=5000-6000", "bytes=abc", "pages=0-4"] {
        let r = get(bad).await;
        assert_eq!(r.status, 416, "Range {bad}: {}", r.text());
        assert_gerr_code(&r, 416);
    }
    let r = get("bytes=0-1,3-4").await;
    // G:common/wsgi.py says "Requests with multiple ranges are not supported in Glance. You may
    // make multiple single-range requests instead."; the spec fixes only the status.
    assert_gerr_code(&r, 400);
}

/// Opens a raw upload with `Content-Length: 1000000` and sends `sent` bytes; returns the socket.
fn start_partial_upload(server: &Server, id: &str, sent: usize) -> std::net::TcpStream {
    let port = image_port(server);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Auth-Token: {TOK_A}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&pattern(sent, 9)).unwrap();
    s.flush().unwrap();
    s
}

// §8.1 item 4/5: a client that disconnects mid-upload leaves the image queued, size null,
// no partial data (GET file → 204, nothing under the data directory); a retry works.
#[tokio::test]
async fn disconnect_mid_upload() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let sock = start_partial_upload(&server, &id, 500_000);
    // While the body is incomplete the image is `saving` (§8.1 item 4, §16).
    let v = wait_status(&server, &id, "saving").await;
    assert_eq!(v["size"], Value::Null);
    drop(sock);
    let v = wait_status(&server, &id, "queued").await;
    assert_queued_without_data(&v);
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_no_content(&r);
    // No partial file is left behind (poll briefly: cleanup may follow the status change).
    let mut files = data_files(&env);
    for _ in 0..100 {
        if files.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        files = data_files(&env);
    }
    assert!(files.is_empty(), "no partial data left: {files:?}");
    // The image accepts a complete upload afterwards, with only the new bytes.
    let data = pattern(1024, 1);
    upload_ok(&server, &id, &data).await;
    let v = show(&server, &id).await;
    assert_eq!((v["size"].clone(), v["checksum"].clone()), (json!(1024), json!(MD5_P1024)));
    let r = g(&server, "GET", &file_path(&id)).send().await;
    assert_eq!(r.body, data);
}

// §8.1 item 4: while one upload is in progress (saving) a second one → 409.
#[tokio::test]
async fn concurrent_upload_conflicts() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    let sock = start_partial_upload(&server, &id, 1000);
    wait_status(&server, &id, "saving").await;
    let r = upload(&server, &id, b"second").await;
    assert_eq!(r.status, 409, "upload while saving: {}", r.text());
    assert_gerr_code(&r, 409);
    drop(sock);
    wait_status(&server, &id, "queued").await;
}

// §8.1 item 3, §10: uploads need the owner (member role) or admin: another project → 404 if
// invisible, 403 if visible; a reader of the owner → 403.
#[tokio::test]
async fn upload_permissions() {
    let env = Env::new();
    let server = env.start();
    let private = create_raw(&server).await;
    let community = create(
        &server,
        json!({"disk_format": "raw", "container_format": "bare", "visibility": "community"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |id: &str, tok: &str| {
        g(&server, "PUT", &file_path(id)).token(tok).content_type(OCTET).body(b"x".to_vec()).send()
    };
    let r = put(&private, TOK_B).await;
    assert_gerr_code(&r, 404);
    let r = put(&community, TOK_B).await;
    assert_gerr_has(&r, 403, &format!("Not allowed to upload image data for image {community}"));
    let r = put(&private, TOK_A_READER).await;
    assert_gerr_code(&r, 403);
    assert_queued_without_data(&show(&server, &private).await);
    assert_queued_without_data(&show(&server, &community).await);
    let r = put(&private, TOK_ADMIN).await;
    assert_no_content(&r);
}
