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
        img.store = Some("alpha".into());
        img.location = Some("a-1".into());
        img.replicas = vec![
            crate::domain::Replica { store: "gamma".into(), location: "g \"1\"".into() },
            crate::domain::Replica { store: "beta".into(), location: "b-1".into() },
        ];
        b.a.insert_image(img.clone()).await.unwrap();
        let got = b.b.find_image("img").await.unwrap().expect(b.name);
        assert_eq!(got.replicas, img.replicas, "{}: replicas in order", b.name);
        assert_eq!(got.locations().collect::<Vec<_>>(), [("alpha", "a-1"), ("gamma", "g \"1\""), ("beta", "b-1")]);
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
                    i.drop_copy("alpha");
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
        let stores: Vec<_> = read.locations().collect();
        assert_eq!(
            stores,
            [("gamma", "g \"1\""), ("beta", "b-1")],
            "{}: the first replica took the first place",
            b.name
        );
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

// ---------------------------------------------------------------------------------------------
// The metadata definitions catalogue (metadefs-spec).
// ---------------------------------------------------------------------------------------------

mod metadefs {
    use super::backends;
    use crate::domain::Principal;
    use crate::domain::metadefs::{
        Association, Contents, MAX_PER_NAMESPACE, NamespaceFields, NewNamespace, NsVisibility, Object, PropertyDef,
    };
    use crate::domain::policy::{MetadefRule, Refusal};
    use crate::store::metadefs::{
        Duplicate, Limited, MetadefError, NamespaceColumn, NamespaceQuery, SortDir, TagColumn, TagQuery,
    };

    fn admin() -> Principal {
        Principal::new("admin".into(), "padmin".into(), vec!["admin".into()])
    }

    fn reader(project: &str) -> Principal {
        Principal::new("r".into(), project.into(), vec!["reader".into()])
    }

    fn fields(name: &str, owner: &str, visibility: NsVisibility) -> NamespaceFields {
        NamespaceFields {
            name: name.into(),
            display_name: None,
            description: None,
            visibility: Some(visibility),
            protected: Some(false),
            owner: owner.into(),
        }
    }

    fn bare(name: &str, owner: &str, visibility: NsVisibility) -> NewNamespace {
        NewNamespace {
            fields: fields(name, owner, visibility),
            associations: None,
            properties: None,
            objects: None,
            tags: None,
        }
    }

    fn prop(title: &str) -> PropertyDef {
        PropertyDef { kind: Some("string".into()), title: Some(title.into()), ..PropertyDef::default() }
    }

    fn object(name: &str) -> Object {
        Object {
            name: name.into(),
            description: None,
            required: None,
            properties: None,
            created_at: None,
            updated_at: None,
        }
    }

    fn association(name: &str, prefix: Option<&str>) -> Association {
        Association {
            name: name.into(),
            prefix: prefix.map(str::to_owned),
            properties_target: None,
            created_at: None,
            updated_at: None,
        }
    }

    fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
        items.iter().map(|i| name(i).to_owned()).collect()
    }

    /// A namespace created with contents reads back whole, in Glance's orders: objects and
    /// properties by name (byte order), tags newest first, associations as they came; on
    /// either node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_namespace_and_its_contents_round_trip() {
        for b in backends().await {
            let mut new = bare("FullNS", "p", NsVisibility::Public);
            new.fields.display_name = Some("Full".into());
            new.fields.protected = Some(true);
            new.associations =
                Some(vec![association("OS::Nova::Flavor", Some("hw:")), association("OS::Glance::Image", None)]);
            new.objects = Some(vec![object("beta"), object("Alpha"), object("alpha")]);
            new.tags = Some(vec!["t1".into(), "t2".into()]);
            new.properties = Some(vec![("zeta".into(), prop("Z")), ("Mid".into(), prop("M"))]);
            let created = b.a.create_namespace(&admin(), new).await.unwrap();
            assert_eq!(created.updated_at, Some(created.created_at), "{}", b.name);
            let got = b.b.namespace(&reader("q"), "FullNS").await.unwrap();
            assert_eq!(got.namespace, created, "{}", b.name);
            assert_eq!(names(&got.objects, |o| &o.name), ["Alpha", "alpha", "beta"], "{}", b.name);
            assert_eq!(got.objects[0].required, Some(vec![]), "{}", b.name);
            assert_eq!(got.objects[0].properties, Some(vec![]), "{}", b.name);
            assert_eq!(names(&got.properties, |p| &p.0), ["Mid", "zeta"], "{}", b.name);
            assert_eq!(got.properties[1].1, prop("Z"), "{}", b.name);
            assert_eq!(names(&got.tags, |t| &t.name), ["t2", "t1"], "{}: newest first", b.name);
            assert_eq!(names(&got.associations, |a| &a.name), ["OS::Nova::Flavor", "OS::Glance::Image"], "{}", b.name);
            assert_eq!(got.associations[0].prefix.as_deref(), Some("hw:"), "{}", b.name);
            let types = b.a.resource_types(&reader("q")).await.unwrap();
            assert_eq!(names(&types, |t| &t.name), ["OS::Nova::Flavor", "OS::Glance::Image"], "{}", b.name);

            // Protected: nothing in it can be deleted, but it can be unprotected.
            let refused = b.a.delete_namespace(&admin(), "FullNS").await;
            assert!(matches!(refused, Err(MetadefError::Protected)), "{}: {refused:?}", b.name);
            for what in [Contents::Objects, Contents::Properties, Contents::Tags] {
                assert!(matches!(b.a.delete_contents(&admin(), "FullNS", what).await, Err(MetadefError::Protected)));
            }
            assert!(matches!(b.a.delete_tag(&admin(), "FullNS", "t1").await, Err(MetadefError::Protected)));
            let mut unprotected = fields("FullNS", "p", NsVisibility::Public);
            unprotected.protected = Some(false);
            let before = b.a.update_namespace(&admin(), "FullNS", unprotected).await.unwrap();
            assert_eq!(before.updated_at, created.updated_at, "{}: the answer keeps the old updated_at", b.name);
            assert!(b.b.namespace(&admin(), "FullNS").await.unwrap().namespace.updated_at > created.updated_at);
            b.b.delete_namespace(&admin(), "FullNS").await.unwrap();
            assert!(matches!(b.a.namespace(&admin(), "FullNS").await, Err(MetadefError::NamespaceNotFound)));
            // Its resource types stay.
            assert_eq!(b.a.resource_types(&admin()).await.unwrap().len(), 2, "{}", b.name);
        }
    }

    /// Who sees what (metadefs-spec §9): other projects see public namespaces only, readers
    /// change nothing, a token without the reader role reads nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visibility_and_rules_are_the_stores_to_check() {
        for b in backends().await {
            b.a.create_namespace(&admin(), bare("Priv", "p", NsVisibility::Private)).await.unwrap();
            b.a.create_namespace(&admin(), bare("Pub", "p", NsVisibility::Public)).await.unwrap();
            b.a.create_namespace(&admin(), bare("Other", "q", NsVisibility::Private)).await.unwrap();
            let listed = |who: Principal| {
                let store = b.b.clone();
                async move {
                    let page = store.list_namespaces(&who, &NamespaceQuery::default()).await.unwrap();
                    let mut names: Vec<String> = page.into_iter().map(|(n, _)| n.fields.name).collect();
                    names.sort();
                    names
                }
            };
            assert_eq!(listed(reader("p")).await, ["Priv", "Pub"], "{}", b.name);
            assert_eq!(listed(reader("q")).await, ["Other", "Pub"], "{}", b.name);
            assert_eq!(listed(admin()).await, ["Other", "Priv", "Pub"], "{}", b.name);
            assert!(matches!(b.a.namespace(&reader("q"), "Priv").await, Err(MetadefError::NamespaceInvisible)));
            assert!(b.a.namespace(&reader("q"), "Pub").await.is_ok(), "{}", b.name);
            let denied = b.a.create_object(&reader("p"), "Priv", object("o")).await;
            assert!(
                matches!(denied, Err(MetadefError::Refused(MetadefRule::AddObject, Refusal::Forbidden))),
                "{}: {denied:?}",
                b.name
            );
            let denied = b.a.create_namespace(&reader("p"), bare("X", "p", NsVisibility::Public)).await;
            assert!(matches!(denied, Err(MetadefError::Refused(MetadefRule::AddNamespace, Refusal::Forbidden))));
            let nobody = Principal::new("n".into(), "p".into(), vec![]);
            let hidden = b.a.namespace(&nobody, "Priv").await;
            assert!(matches!(hidden, Err(MetadefError::Refused(_, Refusal::Hidden))), "{}: {hidden:?}", b.name);
            assert!(b.a.objects(&reader("p"), "Priv").await.unwrap().is_empty());
        }
    }

    /// Names are unique under concurrency: of writers racing for one name on both nodes,
    /// exactly one wins and the others hear the conflict (never a failure of the store); a new
    /// resource type that several associations create at once exists once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_writers_get_conflicts_not_failures() {
        for b in backends().await {
            let mut tasks = Vec::new();
            for n in 0..8 {
                let store = if n % 2 == 0 { b.a.clone() } else { b.b.clone() };
                tasks.push(tokio::spawn(async move {
                    let ns = store.create_namespace(&admin(), bare("Race", "p", NsVisibility::Public)).await;
                    let own = format!("ns{n}");
                    store.create_namespace(&admin(), bare(&own, "p", NsVisibility::Public)).await.unwrap();
                    let rt = store.create_association(&admin(), &own, association("OS::New::Type", None)).await;
                    (ns.map(drop), rt.map(drop))
                }));
            }
            let mut won = 0;
            for t in tasks {
                let (ns, rt) = t.await.unwrap();
                match ns {
                    Ok(()) => won += 1,
                    Err(MetadefError::Duplicate(Duplicate::Namespace(name))) => assert_eq!(name, "Race"),
                    Err(e) => panic!("{}: {e:?}", b.name),
                }
                rt.unwrap();
            }
            assert_eq!(won, 1, "{}", b.name);
            assert_eq!(b.a.resource_types(&admin()).await.unwrap().len(), 1, "{}", b.name);

            // Tags on one namespace, with names differing only in case.
            let mut tasks = Vec::new();
            for n in 0..8 {
                let store = if n % 2 == 0 { b.a.clone() } else { b.b.clone() };
                let name = if n % 2 == 0 { "Tag" } else { "TAG" };
                tasks.push(tokio::spawn(async move { store.create_tag(&admin(), "Race", name).await }));
            }
            let mut won = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => won += 1,
                    Err(MetadefError::Duplicate(Duplicate::Tag(_))) => {}
                    Err(e) => panic!("{}: {e:?}", b.name),
                }
            }
            assert_eq!(won, 1, "{}: tag names are unique case-insensitively", b.name);
        }
    }

    /// Conflicts change nothing: a namespace whose contents clash is not created, a tag list
    /// with a clash leaves the tags as they were; renames onto taken names are conflicts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conflicts_roll_back_and_renames_are_checked() {
        for b in backends().await {
            let mut clash = bare("Clash", "p", NsVisibility::Public);
            clash.objects = Some(vec![object("o"), object("o")]);
            let refused = b.a.create_namespace(&admin(), clash).await;
            assert!(
                matches!(refused, Err(MetadefError::Duplicate(Duplicate::Object(ref o))) if o == "o"),
                "{refused:?}"
            );
            assert!(matches!(b.a.namespace(&admin(), "Clash").await, Err(MetadefError::NamespaceNotFound)));

            b.a.create_namespace(&admin(), bare("N", "p", NsVisibility::Public)).await.unwrap();
            b.a.create_namespace(&admin(), bare("M", "p", NsVisibility::Public)).await.unwrap();
            b.a.create_tags(&admin(), "N", vec!["a".into(), "b".into()], false).await.unwrap();
            let refused = b.b.create_tags(&admin(), "N", vec!["c".into(), "C".into()], false).await;
            assert!(matches!(refused, Err(MetadefError::Duplicate(Duplicate::Tag(ref t))) if t == "C"), "{refused:?}");
            let refused = b.b.create_tags(&admin(), "N", vec!["A".into()], true).await;
            assert!(matches!(refused, Err(MetadefError::Duplicate(Duplicate::Tag(_)))), "{refused:?}");
            b.b.create_tags(&admin(), "N", vec![], false).await.unwrap();
            let tags = b.a.tags(&admin(), "N", &TagQuery::default()).await.unwrap();
            assert_eq!(names(&tags, |t| &t.name), ["b", "a"], "{}: kept", b.name);
            b.b.create_tags(&admin(), "N", vec!["c".into()], false).await.unwrap();
            let tags = b.a.tags(&admin(), "N", &TagQuery::default()).await.unwrap();
            assert_eq!(names(&tags, |t| &t.name), ["c"], "{}: replaced", b.name);

            let renamed = b.a.update_namespace(&admin(), "N", fields("M", "p", NsVisibility::Public)).await;
            assert!(matches!(renamed, Err(MetadefError::Duplicate(Duplicate::Namespace(_)))), "{renamed:?}");
            b.a.create_object(&admin(), "N", object("o1")).await.unwrap();
            b.a.create_object(&admin(), "N", object("o2")).await.unwrap();
            let renamed = b.b.update_object(&admin(), "N", "o1", object("o2")).await;
            assert!(matches!(renamed, Err(MetadefError::Duplicate(Duplicate::Object(_)))), "{renamed:?}");
            b.a.create_property(&admin(), "N", "p1", prop("1")).await.unwrap();
            b.a.create_property(&admin(), "N", "p2", prop("2")).await.unwrap();
            let renamed = b.b.update_property(&admin(), "N", "p1", "p2", prop("x")).await;
            assert!(matches!(renamed, Err(MetadefError::Duplicate(Duplicate::Property(_)))), "{renamed:?}");
            b.a.create_tag(&admin(), "N", "d").await.unwrap();
            let renamed = b.b.update_tag(&admin(), "N", "d", "C").await;
            assert!(matches!(renamed, Err(MetadefError::Duplicate(Duplicate::Tag(_)))), "{renamed:?}");
            // A rename elsewhere works, and the old name is gone.
            b.b.update_object(&admin(), "N", "o1", object("o3")).await.unwrap();
            assert!(matches!(b.a.object(&admin(), "N", "o1").await, Err(MetadefError::ObjectNotFound)));
            b.a.update_namespace(&admin(), "N", fields("N2", "p", NsVisibility::Public)).await.unwrap();
            assert_eq!(b.b.objects(&admin(), "N2").await.unwrap().len(), 2, "{}", b.name);
        }
    }

    /// Namespace pages walk the whole listing in order whatever the sort key (NULLs first
    /// ascending); filters by visibility and resource type.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn namespace_pages_walk_the_listing() {
        for b in backends().await {
            for n in 0..9 {
                let mut new = bare(&format!("ns-{n}"), if n % 3 == 0 { "q" } else { "p" }, NsVisibility::Public);
                if n % 2 == 0 {
                    new.fields.visibility = Some(NsVisibility::Private);
                    new.fields.display_name = Some(format!("d{}", n % 4));
                }
                if n % 4 == 1 {
                    new.associations = Some(vec![association(if n == 1 { "A" } else { "B" }, None)]);
                }
                b.a.create_namespace(&admin(), new).await.unwrap();
            }
            let who = reader("p");
            for (sort_key, sort_dir) in [
                (NamespaceColumn::CreatedAt, SortDir::Desc),
                (NamespaceColumn::Namespace, SortDir::Asc),
                (NamespaceColumn::DisplayName, SortDir::Asc),
                (NamespaceColumn::DisplayName, SortDir::Desc),
                (NamespaceColumn::Owner, SortDir::Desc),
            ] {
                let whole = NamespaceQuery { limit: 100, sort_key, sort_dir, ..NamespaceQuery::default() };
                let once: Vec<String> =
                    b.a.list_namespaces(&who, &whole).await.unwrap().into_iter().map(|(n, _)| n.fields.name).collect();
                let mut query = NamespaceQuery { limit: 2, ..whole.clone() };
                let mut paged = Vec::new();
                loop {
                    let page = b.b.list_namespaces(&who, &query).await.unwrap();
                    paged.extend(page.iter().map(|(n, _)| n.fields.name.clone()));
                    if page.len() < query.limit {
                        break;
                    }
                    query.marker = page.last().map(|(n, _)| n.fields.name.clone());
                }
                assert_eq!(paged, once, "{}: {sort_key:?} {sort_dir:?}", b.name);
                // The reader sees its project's namespaces and public ones.
                let mut expected: Vec<String> =
                    (0..9).filter(|n| n % 3 != 0 || n % 2 != 0).map(|n| format!("ns-{n}")).collect();
                let mut got = once.clone();
                got.sort();
                expected.sort();
                assert_eq!(got, expected, "{}", b.name);
            }
            let newest = b.a.list_namespaces(&admin(), &NamespaceQuery { limit: 1, ..NamespaceQuery::default() }).await;
            assert_eq!(newest.unwrap()[0].0.fields.name, "ns-8", "{}: newest first", b.name);
            let private =
                NamespaceQuery { visibility: Some(NsVisibility::Private), limit: 100, ..NamespaceQuery::default() };
            assert_eq!(b.a.list_namespaces(&admin(), &private).await.unwrap().len(), 5, "{}", b.name);
            let typed =
                NamespaceQuery { resource_types: Some(vec!["A".into(), "Z".into()]), ..NamespaceQuery::default() };
            let found = b.a.list_namespaces(&admin(), &typed).await.unwrap();
            assert_eq!(found.len(), 1, "{}", b.name);
            assert_eq!(names(&found[0].1, |a| &a.name), ["A"], "{}: with its associations", b.name);
            let missing = NamespaceQuery { marker: Some("nope".into()), ..NamespaceQuery::default() };
            assert!(matches!(b.a.list_namespaces(&admin(), &missing).await, Err(MetadefError::MarkerNotFound)));
            let hidden = NamespaceQuery { marker: Some("ns-0".into()), ..NamespaceQuery::default() };
            assert!(matches!(b.a.list_namespaces(&who, &hidden).await, Err(MetadefError::MarkerInvisible)));
        }
    }

    /// Tag pages sort and page; a property is found through a resource type's prefix.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tags_page_and_properties_resolve_prefixes() {
        for b in backends().await {
            let mut new = bare("N", "p", NsVisibility::Public);
            new.associations = Some(vec![association("OS::Nova::Flavor", Some("hw:")), association("OS::X", None)]);
            new.properties = Some(vec![("cpu".into(), prop("CPU"))]);
            b.a.create_namespace(&admin(), new).await.unwrap();
            b.a.create_namespace(&admin(), bare("Other", "p", NsVisibility::Public)).await.unwrap();
            b.a.create_tags(&admin(), "N", (1..=5).map(|n| format!("t{n}")).collect(), false).await.unwrap();
            let query = TagQuery {
                limit: Some(2),
                sort_key: TagColumn::Name,
                sort_dir: SortDir::Asc,
                marker: Some("T2".into()),
            };
            let page = b.b.tags(&admin(), "N", &query).await.unwrap();
            assert_eq!(names(&page, |t| &t.name), ["t3", "t4"], "{}", b.name);
            let missing = TagQuery { marker: Some("nope".into()), ..TagQuery::default() };
            assert!(matches!(b.b.tags(&admin(), "N", &missing).await, Err(MetadefError::MarkerNotFound)));

            let who = reader("q");
            let (name, def) = b.a.property(&who, "N", "hw:cpu", Some("OS::Nova::Flavor")).await.unwrap();
            assert_eq!((name.as_str(), def), ("cpu", prop("CPU")), "{}", b.name);
            let err = |r: Result<(String, PropertyDef), MetadefError>| r.unwrap_err();
            assert!(matches!(err(b.a.property(&who, "N", "cpu", Some("OS::Nova::Flavor")).await),
                MetadefError::PrefixMismatch(Some(ref p)) if p == "hw:"));
            assert!(matches!(
                err(b.a.property(&who, "N", "cpu", Some("OS::X")).await),
                MetadefError::PrefixMismatch(None)
            ));
            assert!(matches!(
                err(b.a.property(&who, "N", "cpu", Some("OS::Nope")).await),
                MetadefError::ResourceTypeNotFound
            ));
            assert!(matches!(
                err(b.a.property(&who, "Other", "cpu", Some("OS::X")).await),
                MetadefError::AssociationNotFound
            ));
            assert!(matches!(
                err(b.a.property(&who, "N", "hw:gpu", Some("OS::Nova::Flavor")).await),
                MetadefError::PropertyNotFound(ref p) if p == "gpu"
            ));
            b.a.delete_association(&admin(), "N", "OS::X").await.unwrap();
            assert!(matches!(
                b.a.delete_association(&admin(), "N", "OS::X").await,
                Err(MetadefError::AssociationNotFound)
            ));
        }
    }

    /// The operator's load creates a namespace as Glance's loader does (no `updated_at`, its
    /// resource types protected), once; the limits hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_are_idempotent_and_limits_hold() {
        for b in backends().await {
            let mut new = bare("OS::Loaded", "admin", NsVisibility::Public);
            new.fields.visibility = None;
            new.fields.protected = None;
            new.associations = Some(vec![association("OS::Glance::Image", Some("hw_"))]);
            new.objects = Some(vec![object("o")]);
            assert!(b.a.load_namespace(new.clone()).await.unwrap(), "{}", b.name);
            assert!(!b.b.load_namespace(new).await.unwrap(), "{}: loaded once", b.name);
            let got = b.a.namespace(&admin(), "OS::Loaded").await.unwrap();
            assert_eq!(got.namespace.updated_at, None, "{}", b.name);
            assert_eq!(got.namespace.fields.visibility, None, "{}", b.name);
            assert_eq!(got.associations[0].updated_at, None, "{}", b.name);
            assert_eq!(got.objects[0].updated_at, None, "{}", b.name);
            assert!(b.a.namespace(&reader("admin"), "OS::Loaded").await.is_ok(), "{}: owned by project admin", b.name);
            assert!(matches!(b.a.namespace(&reader("p"), "OS::Loaded").await, Err(MetadefError::NamespaceInvisible)));

            b.a.create_namespace(&admin(), bare("Full", "p", NsVisibility::Public)).await.unwrap();
            let tags: Vec<String> = (0..MAX_PER_NAMESPACE).map(|n| format!("t{n}")).collect();
            b.a.create_tags(&admin(), "Full", tags, false).await.unwrap();
            let over = b.a.create_tag(&admin(), "Full", "one-more").await;
            assert!(
                matches!(over, Err(MetadefError::TooMany { what: Limited::Tags, attempted, max }) if attempted == max + 1),
                "{}: {over:?}",
                b.name
            );
            let too_many = (0..=MAX_PER_NAMESPACE).map(|n| format!("u{n}")).collect();
            assert!(matches!(
                b.a.create_tags(&admin(), "Full", too_many, false).await,
                Err(MetadefError::TooMany { .. })
            ));
            assert_eq!(b.a.tags(&admin(), "Full", &TagQuery::default()).await.unwrap().len(), MAX_PER_NAMESPACE);
        }
    }
}
