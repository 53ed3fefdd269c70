//! The store contract: what every backend guarantees, checked against each of them: SQLite
//! always, PostgreSQL when `IMAGEMETA_TEST_DATABASE` names a server (CI runs it; each test
//! gets a database of its own there, and two stores on it stand for two nodes).

use crate::domain::metadata::{MetadataChange, MetadataKey, MetadataQuota, MetadataValue};
use crate::domain::policy::{ListVisibility, Rule, listed_for};
use crate::domain::{Image, ImageStatus, Member, MemberStatus, Node, Principal, UploadLease, Visibility, now};
use crate::store::{
    Caller, Column, DatabaseUrl, DynStore, Filter, HiddenFilter, ListQuery, Scalar, SortDir, StoreError, StoreOptions,
};

/// A catalogue under test: its name, two stores on it (two nodes, for PostgreSQL; the same
/// store twice for SQLite, which one process serves), and what to clean up.
struct Backend {
    name: &'static str,
    a: DynStore,
    b: DynStore,
    _cleanup: Cleanup,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Database { admin: String, name: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Database { admin, name } => {
                let _ = std::process::Command::new("psql")
                    .args(["-q", admin, "-c", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
                    .output();
            }
        }
    }
}

/// Every backend available here, each with a fresh catalogue.
async fn backends() -> Vec<Backend> {
    let dir = std::env::temp_dir().join(format!("imagemeta-contract-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = crate::store::open(&DatabaseUrl::Sqlite(dir.join("db")), StoreOptions::default()).await.unwrap();
    let mut all = vec![Backend { name: "sqlite", a: sqlite.clone(), b: sqlite, _cleanup: Cleanup::Dir(dir) }];
    if let Ok(admin) = std::env::var("IMAGEMETA_TEST_DATABASE") {
        let name = format!("imagemeta_contract_{}", uuid::Uuid::new_v4().simple());
        let out = std::process::Command::new("psql")
            .args(["-q", &admin, "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (server, _) = admin.rsplit_once('/').unwrap();
        let url = DatabaseUrl::parse(&format!("{server}/{name}?sslmode=disable")).unwrap();
        let a = crate::store::open(&url, StoreOptions::default()).await.unwrap();
        let b = crate::store::open(&url, StoreOptions::default()).await.unwrap();
        all.push(Backend { name: "postgres", a, b, _cleanup: Cleanup::Database { admin, name } });
    }
    all
}

fn member(project: &str) -> Principal {
    Principal::new("u".into(), project.into(), vec!["member".into()])
}

fn merge(pairs: &[(&str, &str)]) -> MetadataChange {
    MetadataChange::Merge(
        pairs.iter().map(|(k, v)| (MetadataKey::parse(k).unwrap(), MetadataValue::parse(v).unwrap())).collect(),
    )
}

fn image(id: &str, owner: &str) -> Image {
    let mut image = Image::new(id.into(), now());
    image.owner = Some(owner.into());
    image
}

fn keys(image: &Image) -> Vec<String> {
    image.properties.iter().map(|(k, _)| k.to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_round_trip_with_order_tags_members_and_leases() {
    for b in backends().await {
        let mut img = image("img", "p");
        img.name = Some("n".into());
        img.size = Some(7);
        img.properties.set("zeta".into(), Some("1".into()));
        img.properties.set("alpha".into(), None);
        img.tags = vec!["t2".into(), "t1".into()];
        img.members =
            vec![Member { project: "q".into(), status: MemberStatus::Pending, created_at: now(), updated_at: now() }];
        b.a.insert_image(img.clone()).await.unwrap();
        let got = b.b.find_image("img").await.unwrap().expect(b.name);
        assert_eq!(keys(&got), ["zeta", "alpha"], "{}", b.name);
        assert_eq!(got.properties.get("alpha"), Some(&None), "{}", b.name);
        assert_eq!(got.tags, ["t1", "t2"], "{}: tags in order", b.name);
        assert_eq!(got.members[0].project, "q", "{}", b.name);
        assert_eq!((got.name.as_deref(), got.size, got.created_at), (Some("n"), Some(7), img.created_at), "{}", b.name);

        let lease = UploadLease { node: "n1".into(), staging: "s1".into() };
        let held = lease.clone();
        let after =
            b.a.modify_image(
                &member("p"),
                "img",
                Rule::ModifyImage,
                Box::new(move |i| {
                    i.status = ImageStatus::Saving;
                    i.upload = Some(held);
                    i.properties.set("alpha".into(), Some("2".into()));
                    i.properties.set("new".into(), Some("3".into()));
                    i.properties.remove("zeta");
                    i.tags.push("t0".into());
                    Ok(())
                }),
            )
            .await
            .unwrap();
        assert_eq!(keys(&after), ["alpha", "new"], "{}", b.name);
        // Read back on the writing node (the other caught up within a second: see below).
        let read = b.a.find_image("img").await.unwrap().unwrap();
        assert_eq!(read.upload.as_ref(), Some(&lease), "{}", b.name);
        assert_eq!(read.tags, ["t0", "t1", "t2"], "{}", b.name);
        assert_eq!(b.b.held_uploads().await.unwrap(), vec![("img".to_owned(), lease)], "{}", b.name);

        // A refused modification changes nothing.
        let refused =
            b.a.modify_image(
                &member("p"),
                "img",
                Rule::ModifyImage,
                Box::new(|_| Err(crate::domain::Rejection::conflict("no"))),
            )
            .await;
        assert!(matches!(refused, Err(StoreError::Rejected(_))), "{}", b.name);
        assert_eq!(keys(&b.a.find_image("img").await.unwrap().unwrap()), ["alpha", "new"]);

        // The rule is the store's to check: another project sees a public image, may not
        // change it, and its change never runs.
        let mut public = image("pub", "p");
        public.visibility = crate::domain::Visibility::Public;
        b.a.insert_image(public).await.unwrap();
        let denied =
            b.b.modify_image(&member("q"), "pub", Rule::ModifyImage, Box::new(|_| panic!("a refused change ran")))
                .await;
        assert!(matches!(denied, Err(StoreError::Forbidden)), "{}", b.name);
        let rename = Box::new(|i: &mut Image| {
            i.name = Some("kept".into());
            Ok(())
        });
        let kept = b.b.modify_image(&member("q"), "pub", Rule::Bookkeeping, rename).await.unwrap();
        assert_eq!(kept.name.as_deref(), Some("kept"), "{}", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_never_reused_and_deletes_follow_the_policy() {
    for b in backends().await {
        b.a.insert_image(image("x", "p")).await.unwrap();
        assert!(matches!(b.b.insert_image(image("x", "q")).await, Err(StoreError::Conflict(_))), "{}", b.name);
        assert!(matches!(b.b.delete_image(&member("q"), "x").await, Err(StoreError::NotFound)), "{}", b.name);
        let mut protected = image("y", "p");
        protected.protected = true;
        b.a.insert_image(protected).await.unwrap();
        assert!(matches!(b.b.delete_image(&member("p"), "y").await, Err(StoreError::Protected)), "{}", b.name);
        b.b.delete_image(&member("p"), "x").await.unwrap();
        assert!(b.a.find_image("x").await.unwrap().is_none(), "{}: deleted on every node", b.name);
        assert!(
            matches!(b.a.insert_image(image("x", "p")).await, Err(StoreError::Conflict(_))),
            "{}: tombstone",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_changes_merge_replace_and_keep_their_order() {
    for b in backends().await {
        let mut img = image("m", "p");
        img.properties.set("a".into(), Some("1".into()));
        img.properties.set("b".into(), Some("2".into()));
        b.a.insert_image(img).await.unwrap();
        let who = member("p");
        let props =
            b.a.change_metadata(&who, "m", merge(&[("b", "x"), ("c", "3")]), MetadataQuota(None)).await.unwrap();
        assert_eq!(
            props.iter().collect::<Vec<_>>(),
            [("a", Some("1")), ("b", Some("x")), ("c", Some("3"))],
            "{}",
            b.name
        );
        let replace = MetadataChange::Replace(vec![
            (MetadataKey::parse("c").unwrap(), MetadataValue::parse("4").unwrap()),
            (MetadataKey::parse("d").unwrap(), MetadataValue::parse("5").unwrap()),
        ]);
        let props = b.b.change_metadata(&who, "m", replace, MetadataQuota(None)).await.unwrap();
        assert_eq!(props.iter().collect::<Vec<_>>(), [("c", Some("4")), ("d", Some("5"))], "{}", b.name);
        let deleted = b.a.change_metadata(&who, "m", MetadataChange::Delete("zz".into()), MetadataQuota(None)).await;
        assert!(matches!(deleted, Err(StoreError::KeyNotFound)), "{}", b.name);
        let over = b.a.change_metadata(&who, "m", merge(&[("e", "6")]), MetadataQuota(Some(2))).await;
        assert!(matches!(over, Err(StoreError::QuotaExceeded)), "{}", b.name);
        let other = b.a.change_metadata(&member("q"), "m", merge(&[("e", "6")]), MetadataQuota(None)).await;
        assert!(matches!(other, Err(StoreError::NotFound)), "{}: another project's private image", b.name);
        let stored = b.b.find_image("m").await.unwrap().unwrap();
        assert_eq!(keys(&stored), ["c", "d"], "{}", b.name);
    }
}

/// Writers racing on one image through both nodes never lose a key and never pass the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_two_nodes_lose_nothing_and_keep_the_quota() {
    for b in backends().await {
        b.a.insert_image(image("r", "p")).await.unwrap();
        b.a.insert_image(image("q", "p")).await.unwrap();
        let mut tasks = Vec::new();
        for n in 0..32 {
            let store = if n % 2 == 0 { b.a.clone() } else { b.b.clone() };
            tasks.push(tokio::spawn(async move {
                let (who, key) = (member("p"), format!("k{n}"));
                let all = store.change_metadata(&who, "r", merge(&[(&key, "v")]), MetadataQuota(None)).await;
                let quota = store.change_metadata(&who, "q", merge(&[(&key, "v")]), MetadataQuota(Some(5))).await;
                (all, quota)
            }));
        }
        let mut within_quota = 0;
        for t in tasks {
            let (all, quota) = t.await.unwrap();
            all.unwrap();
            match quota {
                Ok(_) => within_quota += 1,
                Err(StoreError::QuotaExceeded) => {}
                Err(e) => panic!("{}: {e}", b.name),
            }
        }
        assert_eq!(b.b.find_image("r").await.unwrap().unwrap().properties.len(), 32, "{}", b.name);
        assert_eq!(within_quota, 5, "{}", b.name);
        assert_eq!(b.a.find_image("q").await.unwrap().unwrap().properties.len(), 5, "{}", b.name);
    }
}

/// Keyset pages walk the whole listing in order, whatever the sort (NULLs first ascending);
/// filters and the listing rules apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_in_order_and_filter() {
    for b in backends().await {
        let base = now();
        let mut all = Vec::new();
        for n in 0..23 {
            let mut img = image(&format!("img-{n:02}"), if n % 3 == 0 { "q" } else { "p" });
            img.created_at = base + time::Duration::seconds(n % 5);
            img.name = (n % 4 != 0).then(|| format!("name-{}", n % 7));
            img.size = (n % 2 == 0).then_some(n);
            img.visibility =
                [Visibility::Public, Visibility::Private, Visibility::Shared, Visibility::Community][n as usize % 4];
            img.os_hidden = n == 5;
            img.tags = vec![format!("t{}", n % 2)];
            img.properties.set("os_distro".into(), Some(format!("d{}", n % 3)));
            if n % 4 == 2 {
                img.members = vec![Member {
                    project: "p".into(),
                    status: MemberStatus::Accepted,
                    created_at: now(),
                    updated_at: now(),
                }];
            }
            all.push(img);
        }
        b.a.insert_images(all.clone()).await.unwrap();
        let who = member("p");
        for sort in [
            vec![],
            vec![(Column::Name, SortDir::Asc)],
            vec![(Column::Size, SortDir::Desc), (Column::Name, SortDir::Asc)],
        ] {
            for (visibility, hidden) in
                [(ListVisibility::Default, false), (ListVisibility::All, false), (ListVisibility::All, true)]
            {
                let mut query =
                    ListQuery { sort: sort.clone(), visibility, limit: 4, detail: true, ..ListQuery::default() };
                query.hidden = if hidden { HiddenFilter::Only } else { HiddenFilter::Exclude };
                let mut paged = Vec::new();
                loop {
                    let page = b.b.list_images(Caller::User(&who), &query).await.unwrap();
                    paged.extend(page.iter().map(|i| i.id.clone()));
                    if page.len() < query.limit {
                        break;
                    }
                    query.marker = page.last().map(|i| i.id.clone());
                }
                // The same listing in one page.
                let whole = ListQuery { marker: None, limit: 1000, ..query.clone() };
                let once: Vec<String> =
                    b.a.list_images(Caller::User(&who), &whole).await.unwrap().iter().map(|i| i.id.clone()).collect();
                assert_eq!(paged, once, "{}: pages of {sort:?}", b.name);
                // Exactly what the listing rules, evaluated in memory, offer.
                let rule = listed_for(&who, visibility, hidden, None);
                let mut expected: Vec<&str> = all.iter().filter(|i| rule.holds(i)).map(|i| i.id.as_str()).collect();
                let mut got: Vec<&str> = once.iter().map(String::as_str).collect();
                expected.sort();
                got.sort();
                assert_eq!(got, expected, "{}: {visibility:?} hidden={hidden}", b.name);
            }
        }
        let query = ListQuery {
            filters: vec![
                Filter::Property("os_distro".into(), "d1".into()),
                Filter::Tag("t0".into()),
                Filter::Compare(Column::Size, crate::store::Cmp::Gte, Scalar::Int(4)),
            ],
            limit: 100,
            ..ListQuery::default()
        };
        let got: Vec<String> =
            b.a.list_images(Caller::Operator, &query).await.unwrap().iter().map(|i| i.id.clone()).collect();
        let expected: Vec<String> = ["img-22", "img-16", "img-10", "img-04"].iter().map(|s| s.to_string()).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut expected_sorted = expected;
        expected_sorted.sort();
        assert_eq!(got_sorted, expected_sorted, "{}", b.name);
        // Text with NUL (no stored value holds one; PostgreSQL refuses it in a comparison):
        // equal to nothing, different from everything.
        let nul = |filters: Vec<Filter>| ListQuery { filters, limit: 100, ..ListQuery::default() };
        for filters in [
            vec![Filter::Compare(Column::Name, crate::store::Cmp::Eq, Scalar::Text("a\0".into()))],
            vec![Filter::In(Column::Id, vec![Scalar::Text("\0".into())])],
            vec![Filter::Property("os_distro".into(), "d\0".into())],
            vec![Filter::Tag("t\0".into())],
        ] {
            assert!(b.a.list_images(Caller::Operator, &nul(filters)).await.unwrap().is_empty(), "{}", b.name);
        }
        let mixed = nul(vec![Filter::In(Column::Id, vec![Scalar::Text("\0".into()), Scalar::Text("img-04".into())])]);
        assert_eq!(b.a.list_images(Caller::Operator, &mixed).await.unwrap().len(), 1, "{}", b.name);
        let different = nul(vec![Filter::Compare(Column::Name, crate::store::Cmp::Neq, Scalar::Text("\0".into()))]);
        assert_eq!(b.a.list_images(Caller::Operator, &different).await.unwrap().len(), 23, "{}", b.name);
        let missing = ListQuery { marker: Some("nope".into()), limit: 10, ..ListQuery::default() };
        assert!(matches!(b.a.list_images(Caller::Operator, &missing).await, Err(StoreError::MarkerNotFound(_))));
    }
}

/// Nodes register, renew and leave; the catalogue lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_renew_and_leave() {
    for b in backends().await {
        let node = Node::this_process();
        b.a.heartbeat(&node).await.unwrap();
        b.a.heartbeat(&node).await.unwrap();
        let nodes = b.b.nodes().await.unwrap();
        assert_eq!(nodes.len(), 1, "{}", b.name);
        assert!(nodes[0].heartbeat_at >= node.started_at, "{}", b.name);
        b.b.unregister_node(&node.id).await.unwrap();
        assert!(b.a.nodes().await.unwrap().is_empty(), "{}", b.name);
    }
}

/// A write acknowledged by one node is read by the other within a second (at once when it
/// is the same node), even after the reader cached the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_read_on_the_other_within_a_second() {
    for b in backends().await {
        b.a.insert_image(image("c", "p")).await.unwrap();
        let who = member("p");
        for round in 0..5 {
            // Both nodes have the image cached.
            b.a.get_image(&who, "c").await.unwrap();
            b.b.get_image(&who, "c").await.unwrap();
            let value = format!("v{round}");
            b.a.change_metadata(&who, "c", merge(&[("k", &value)]), MetadataQuota(None)).await.unwrap();
            assert_eq!(b.a.get_image(&who, "c").await.unwrap().properties.get_str("k"), Some(value.as_str()));
            let written = std::time::Instant::now();
            loop {
                if b.b.get_image(&who, "c").await.unwrap().properties.get_str("k") == Some(value.as_str()) {
                    break;
                }
                assert!(written.elapsed() < std::time::Duration::from_secs(1), "{}: stale after 1 s", b.name);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_recorded_changed_listed_and_expire() {
    use crate::domain::task::{Task, TaskQuery, TaskSortKey, TaskStatus};
    let at = |s: i64| time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap();
    let task = |id: &str, owner: &str, created: i64| {
        let mut t = Task::new(id.into(), "api_image_import", owner.into(), at(created));
        t.image_id = Some(format!("img-{id}"));
        t.input = Some(
            serde_json::json!({"image_id": format!("img-{id}"), "import_req": {"method": {"name": "glance-direct"}}}),
        );
        t
    };
    let query = |owner: Option<&str>| TaskQuery {
        owner: owner.map(str::to_owned),
        status: None,
        kind: None,
        image_id: None,
        sort_key: TaskSortKey::CreatedAt,
        descending: true,
        marker: None,
        limit: 25,
    };
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    for b in backends().await {
        let n = b.name;
        for (id, owner, created) in [("t1", "p", 1), ("t2", "p", 2), ("t3", "q", 3), ("t4", "p", 4)] {
            b.a.insert_task(task(id, owner, created)).await.unwrap();
        }
        assert!(matches!(b.b.insert_task(task("t1", "p", 9)).await, Err(StoreError::Conflict(_))), "{n}");
        let got = b.b.get_task("t1").await.unwrap().expect(n);
        assert_eq!(got, task("t1", "p", 1), "{n}: round trip");
        assert_eq!(b.b.get_task("nope").await.unwrap(), None, "{n}");

        // Listings: newest first, by owner, paged after a marker, filtered, sorted.
        assert_eq!(ids(b.b.list_tasks(&query(None)).await.unwrap()), ["t4", "t3", "t2", "t1"], "{n}");
        assert_eq!(ids(b.b.list_tasks(&query(Some("p"))).await.unwrap()), ["t4", "t2", "t1"], "{n}");
        let page = TaskQuery { limit: 2, ..query(Some("p")) };
        assert_eq!(ids(b.b.list_tasks(&page).await.unwrap()), ["t4", "t2"], "{n}");
        let next = TaskQuery { marker: Some("t2".into()), ..page.clone() };
        assert_eq!(ids(b.b.list_tasks(&next).await.unwrap()), ["t1"], "{n}");
        let foreign = TaskQuery { marker: Some("t3".into()), ..page.clone() };
        assert!(matches!(b.b.list_tasks(&foreign).await, Err(StoreError::MarkerNotFound(_))), "{n}");
        let by_image = TaskQuery { image_id: Some("img-t3".into()), ..query(None) };
        assert_eq!(ids(b.b.list_tasks(&by_image).await.unwrap()), ["t3"], "{n}");
        let by_owner_asc = TaskQuery { sort_key: TaskSortKey::Owner, descending: false, ..query(None) };
        assert_eq!(ids(b.b.list_tasks(&by_owner_asc).await.unwrap()), ["t1", "t2", "t4", "t3"], "{n}");
        let after = TaskQuery { marker: Some("t4".into()), ..by_owner_asc.clone() };
        assert_eq!(ids(b.b.list_tasks(&after).await.unwrap()), ["t3"], "{n}: ties broken by created_at, id");

        // A change is one transaction on either node; an ended task expires and is purged.
        let running =
            b.b.update_task(
                "t2",
                Box::new(|t| {
                    t.status = TaskStatus::Processing;
                    t.node = Some("node-1".into());
                }),
            )
            .await
            .unwrap();
        assert_eq!((running.status, running.node.as_deref()), (TaskStatus::Processing, Some("node-1")), "{n}");
        assert_eq!(ids(b.a.running_tasks().await.unwrap()), ["t2"], "{n}");
        let processing = TaskQuery { status: Some(TaskStatus::Processing), ..query(None) };
        assert_eq!(ids(b.a.list_tasks(&processing).await.unwrap()), ["t2"], "{n}");
        let ended =
            b.a.update_task("t1", Box::new(|t| t.end(Err("it failed".into()), time::OffsetDateTime::UNIX_EPOCH)))
                .await
                .unwrap();
        assert_eq!((ended.status, ended.message.as_str()), (TaskStatus::Failure, "it failed"), "{n}");
        assert_eq!(ids(b.b.list_tasks(&query(None)).await.unwrap()), ["t4", "t3", "t2"], "{n}: expired, not listed");
        assert!(b.b.get_task("t1").await.unwrap().is_some(), "{n}: still there until purged");
        assert_eq!(b.b.purge_tasks(now()).await.unwrap(), 1, "{n}");
        assert_eq!(b.b.get_task("t1").await.unwrap(), None, "{n}");
        assert!(matches!(b.a.update_task("t1", Box::new(|_| {})).await, Err(StoreError::NotFound)), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_lookups_by_text_no_store_can_hold_find_nothing() {
    use crate::domain::task::{TaskQuery, TaskSortKey};
    for b in backends().await {
        let n = b.name;
        assert_eq!(b.a.get_task("a\0b").await.unwrap(), None, "{n}");
        assert!(matches!(b.a.update_task("a\0b", Box::new(|_| {})).await, Err(StoreError::NotFound)), "{n}");
        let q = TaskQuery {
            owner: Some("p\0".into()),
            status: None,
            kind: None,
            image_id: None,
            sort_key: TaskSortKey::Id,
            descending: false,
            marker: None,
            limit: 10,
        };
        assert_eq!(b.a.list_tasks(&q).await.unwrap(), vec![], "{n}");
        let q = TaskQuery { owner: None, marker: Some("m\0".into()), ..q };
        assert!(matches!(b.a.list_tasks(&q).await, Err(StoreError::MarkerNotFound(_))), "{n}");
    }
}
