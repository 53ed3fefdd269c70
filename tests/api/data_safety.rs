//! Data safety under concurrency and crashes (issue: tests (a), (b), (c)).
//! Nova's own read-modify-write through glanceclient can lose updates (§3.9);
//! the re-implementation must not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::*;

// Issue (a): 32 parallel POSTs of distinct keys to one image all survive
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_posts_of_distinct_keys_all_survive() {
    // Arrange
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("base", "0"))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(-1);
    let h = srv.handle();

    // Act
    let mut tasks = Vec::new();
    for i in 0..32 {
        let h = h.clone();
        let path = meta_path(&id);
        tasks.push(tokio::spawn(async move {
            h.call("POST", &path).json(&json!({"metadata": {format!("key{i}"): format!("val{i}")}})).send().await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }

    // Assert
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        let md = &r.json()["metadata"];
        assert_eq!(md[format!("key{i}")], json!(format!("val{i}")), "response of POST {i} contains its own key");
        assert_eq!(md["base"], json!("0"));
    }
    let mut expected = serde_json::Map::new();
    expected.insert("base".into(), json!("0"));
    for i in 0..32 {
        expected.insert(format!("key{i}"), json!(format!("val{i}")));
    }
    assert_eq!(srv.metadata_of(&id).await, Value::Object(expected));
}

// Issue (a), PUT-item and DELETE variants: no lost updates either
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_put_items_and_deletes_do_not_lose_updates() {
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(32))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(-1);
    let h = srv.handle();

    let mut tasks = Vec::new();
    for i in 0..32 {
        let h = h.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let put = h
                .call("PUT", &key_path(&id, &format!("new{i}")))
                .json(&json!({"meta": {format!("new{i}"): "x"}}))
                .send()
                .await;
            let del = h.call("DELETE", &key_path(&id, &format!("p{i}"))).send().await;
            (put, del)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (put, del) = t.await.unwrap();
        assert_json(&put, 200, &json!({"meta": {format!("new{i}"): "x"}}));
        assert_no_content(&del);
    }

    let mut expected = serde_json::Map::new();
    for i in 0..32 {
        expected.insert(format!("new{i}"), json!("x"));
    }
    assert_eq!(srv.metadata_of(&id).await, Value::Object(expected));
}

// Issue (b): parallel writes racing at the quota never exceed it
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_posts_racing_at_quota_never_exceed_it() {
    // Arrange: quota 10, empty image, 40 distinct single-key POSTs
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(10);
    let h = srv.handle();

    // Act
    let mut tasks = Vec::new();
    for i in 0..40 {
        let h = h.clone();
        let path = meta_path(&id);
        tasks.push(tokio::spawn(async move {
            (i, h.call("POST", &path).json(&json!({"metadata": {format!("k{i}"): "v"}})).send().await)
        }));
    }
    let mut ok_keys = BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r.status {
            200 => {
                let n = r.json()["metadata"].as_object().unwrap().len();
                assert!(n <= 10, "a 200 response shows {n} > 10 properties");
                ok_keys.insert(format!("k{i}"));
            }
            _ => {
                assert_fault(&r, 403, "forbidden", "Image metadata limit exceeded");
                refused += 1;
            }
        }
    }

    // Assert
    assert_eq!(ok_keys.len(), 10, "exactly quota-many writes succeed");
    assert_eq!(refused, 30);
    let md = srv.metadata_of(&id).await;
    let final_keys: BTreeSet<String> = md.as_object().unwrap().keys().cloned().collect();
    assert_eq!(final_keys, ok_keys, "stored keys are exactly the acknowledged ones");
}

// Issue (b), PUT-item variant, starting from a partly filled image
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_put_items_racing_at_quota_never_exceed_it() {
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(4))["id"].as_str().unwrap().to_string();
    let srv = env.start_quota(10);
    let h = srv.handle();

    let mut tasks = Vec::new();
    for i in 0..30 {
        let h = h.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("n{i}");
            (key.clone(), h.call("PUT", &key_path(&id, &key)).json(&json!({"meta": {key: "v"}})).send().await)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (_, r) = t.await.unwrap();
        if r.status == 200 {
            ok += 1;
        } else {
            assert_fault(&r, 403, "forbidden", "Image metadata limit exceeded");
        }
    }

    assert_eq!(ok, 6);
    assert_eq!(srv.metadata_of(&id).await.as_object().unwrap().len(), 10);
}

#[derive(Default)]
struct Ledger {
    /// key -> value of every acknowledged (200) write
    written: BTreeMap<String, String>,
    /// keys whose DELETE was acknowledged (204)
    deleted: BTreeSet<String>,
    /// keys with a write or delete that got no answer (in flight at the kill)
    uncertain: BTreeSet<String>,
}

// Issue (c): SIGKILL in the middle of a write load loses no acknowledged write
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_and_restart() {
    // Arrange
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let mut srv = env.start_quota(-1);
    let h = srv.handle();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let mut workers = Vec::new();
    for w in 0..8 {
        let (h, id, ledger, acks, stop) = (h.clone(), id.clone(), ledger.clone(), acks.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w{w}-{n}");
                let val = format!("value-{w}-{n}");
                let call = if n.is_multiple_of(2) {
                    h.call("POST", &meta_path(&id)).json(&json!({"metadata": {key.clone(): val.clone()}}))
                } else {
                    h.call("PUT", &key_path(&id, &key)).json(&json!({"meta": {key.clone(): val.clone()}}))
                };
                match call.try_send().await {
                    Ok(r) if r.status == 200 => {
                        ledger.lock().await.written.insert(key.clone(), val);
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("unexpected {} for {key}: {}", r.status, r.text()),
                    Err(_) => {
                        ledger.lock().await.uncertain.insert(key);
                        break;
                    }
                }
                // Every 4th step, delete the key written three steps earlier.
                if n % 4 == 3 {
                    let old = format!("w{w}-{}", n - 3);
                    match h.call("DELETE", &key_path(&id, &old)).try_send().await {
                        Ok(r) if r.status == 204 => {
                            ledger.lock().await.deleted.insert(old);
                        }
                        Ok(r) => panic!("unexpected {} deleting {old}: {}", r.status, r.text()),
                        Err(_) => {
                            ledger.lock().await.uncertain.insert(old);
                            break;
                        }
                    }
                }
                n += 1;
            }
        }));
    }

    // Act: let the load run until a good number of writes were acknowledged,
    // then SIGKILL the server with requests in flight.
    let mut waited = 0;
    while acks.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 6000, "write load made no progress: {} acks", acks.load(Ordering::SeqCst));
    }
    srv.kill();
    for wk in workers {
        wk.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let srv2 = env.start_quota(-1);

    // Assert
    let md = srv2.metadata_of(&id).await;
    let md = md.as_object().unwrap();
    let ledger = ledger.lock().await;
    assert!(ledger.written.len() >= 200);
    let mut checked = 0;
    for (k, v) in &ledger.written {
        if ledger.uncertain.contains(k) {
            continue;
        }
        if ledger.deleted.contains(k) {
            assert!(md.get(k).is_none(), "acknowledged delete of {k} was lost");
        } else {
            assert_eq!(md.get(k), Some(&json!(v)), "acknowledged write of {k} was lost");
            checked += 1;
        }
    }
    assert!(checked > 100, "checked {checked} surviving writes");
    // The restarted server still accepts writes and the database is readable by the CLI.
    let r = srv2.post(&meta_path(&id), json!({"metadata": {"after": "restart"}})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = env.cli(&["image", "list", "--database", &env.db_url()]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let images: Value = serde_json::from_slice(&list.stdout).expect("image list JSON");
    assert_eq!(images.as_array().unwrap().len(), 1);
}
