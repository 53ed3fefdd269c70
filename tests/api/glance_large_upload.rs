//! Issue 3: a 2 GiB upload streams through the server without holding the image in memory.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// The largest resident set (`VmHWM`, in KiB) the process has had.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn two_gib_upload_keeps_resident_memory_under_100_mib() {
    let env = Env::new();
    let server = env.start();
    let created = server
        .image()
        .call("POST", "/v2/images")
        .json(&json!({"name": "big", "disk_format": "raw", "container_format": "bare"}))
        .send()
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();

    // A raw socket, so the client holds nothing either: 2048 chunks of 1 MiB.
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 2048;
    let total = CHUNK * CHUNKS;
    let addr = server.image_base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
        TOK_A
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut chunk = vec![0u8; CHUNK];
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    for _ in 0..CHUNKS {
        sock.write_all(&chunk).await.unwrap();
    }
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(600), sock.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 204"), "{response}");

    let shown = server.image().call("GET", &format!("/v2/images/{id}")).send().await.json();
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["size"], json!(total));
    let peak = peak_rss_kib(server.pid());
    eprintln!("peak resident memory during a 2 GiB upload: {peak} KiB");
    assert!(peak < 100 * 1024, "peak resident memory {peak} KiB during a 2 GiB upload");
}
