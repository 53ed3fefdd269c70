//! Property tests over every parser and validator a request meets: whatever the input, each
//! either accepts it into domain types or refuses it with a client error (4xx), never panics,
//! and what it accepts is bounded. Failing cases are kept in `proptest-regressions/` (the
//! corpus), and replayed first on every run. The HTTP-level randomized test is in
//! `tests/api/fuzz.rs`.

use proptest::prelude::*;
use serde_json::Value;

use super::compute::schemas::{Strictness, meta_body, metadata_body};
use super::fault::Fault;

/// Arbitrary JSON, with the strings and numbers that matter to the validators over-weighted.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<serde_json::Map<_, _>>())),
        ]
    })
}

/// Strings: the ones the APIs know, edge cases, and anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "/",
            "/ ",
            "//",
            "~",
            "~2",
            "/a~1b",
            "/name",
            "/tags",
            "/locations",
            "/os_distro",
            "metadata",
            "meta",
            "op",
            "path",
            "value",
            "add",
            "replace",
            "remove",
            "in:a,b",
            "eq:x",
            "gte:2026-01-01",
            "9999-12-31T23:59:59.9Z",
            "0000-01-01T00:00:00Z",
            "-1",
            "0",
            "2147483648",
            "name:asc",
            "size:desc",
            "\u{0}",
            "\u{1F600}",
            "é",
            "a\u{0}b",
            "%ff",
            "%",
            "+",
        ])
        .prop_map(str::to_owned),
        "[a-z_:. /~0-9-]{0,12}",
        any::<String>(),
        "[a-z]{200,300}",
    ]
}

/// A refusal must be the client's: a 4xx.
fn client_error(f: &Fault) -> Result<(), TestCaseError> {
    prop_assert!(f.status().is_client_error(), "{f:?}");
    Ok(())
}

/// Query parameters, from the names the list APIs know and anything else.
fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "limit",
            "marker",
            "sort",
            "sort_key",
            "sort_dir",
            "name",
            "status",
            "changes-since",
            "server",
            "type",
            "minRam",
            "minDisk",
            "page_size",
            "offset",
            "visibility",
            "member_status",
            "os_hidden",
            "protected",
            "tag",
            "id",
            "container_format",
            "disk_format",
            "created_at",
            "updated_at",
            "size_min",
            "size_max",
            "virtual_size_min",
            "size",
            "min_ram",
            "owner",
            "checksum",
            "property-os_distro",
            "property-",
            "x",
        ])
        .prop_map(str::to_owned),
        text(),
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "name:asc,name:asc,size:desc",
            "name",
            "asc",
            "desc",
            "bogus",
            "all",
            "public",
            "community",
            "true",
            "in:\"a,b\",c",
            "gte:9999-12-31T23:59:59.5Z",
            "lt:0000-01-01T00:00:00Z",
            "neq:2026-01-01T00:00:00.5Z",
            "9999-12-31T23:59:59.9Z",
            "1000",
            "1001",
            "-5",
            "99999999999999999999",
        ])
        .prop_map(str::to_owned),
        text(),
    ];
    prop::collection::vec((name, value), 0..80)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn query_strings_and_paths_decode_or_refuse(s in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = super::parse_query(&s);
        let _ = super::percent_decode(&s);
        let raw: String = bytes.iter().map(|b| format!("%{b:02x}")).collect();
        let _ = super::parse_query(&raw);
        let _ = super::percent_decode(&raw);
    }

    #[test]
    fn metadata_bodies_validate_or_400(body in json(), legacy in any::<bool>()) {
        let strictness = if legacy { Strictness::Legacy } else { Strictness::Strict };
        for wrapped in [body.clone(), serde_json::json!({"metadata": body.clone()}), serde_json::json!({"meta": body})] {
            match metadata_body(Some(&wrapped), strictness) {
                Ok(items) => prop_assert!(items.iter().all(|(k, v)| !k.as_str().is_empty() && !v.as_str().contains('\0'))),
                Err(f) => client_error(&f)?,
            }
            match meta_body(Some(&wrapped), strictness) {
                Ok(_) => {}
                Err(f) => client_error(&f)?,
            }
        }
    }

    #[test]
    fn json_patch_operations_parse_or_4xx(op in json(), v21 in any::<bool>()) {
        if let Err(f) = super::image_v2::images::parse_op(&op, v21) {
            client_error(&f)?;
        }
    }

    #[test]
    fn image_properties_validate_or_4xx(key in text(), value in json()) {
        if let Err(f) = super::image_v2::schemas::validate(&key, &value) {
            client_error(&f)?;
        }
    }

    /// Whatever the listing parameters, a listing is refused or bounded: few enough filters
    /// and values, no repeated sort key.
    #[test]
    fn listings_parse_into_bounded_queries(q in query(), detail in any::<bool>()) {
        for parsed in [super::image_v2::images::list_query(&q), super::compute::images::list_query(&q, detail)] {
            match parsed {
                Ok(listing) => {
                    prop_assert!(listing.too_large().is_none());
                    let mut keys: Vec<_> = listing.sort.iter().map(|(c, _)| *c).collect();
                    let n = keys.len();
                    keys.dedup();
                    prop_assert_eq!(keys.len(), n);
                    prop_assert!(listing.limit <= 1000);
                }
                Err(f) => client_error(&f)?,
            }
        }
    }

    #[test]
    fn microversion_headers_negotiate_or_refuse(a in text(), b in text()) {
        let mut headers = axum::http::HeaderMap::new();
        for (name, value) in [("openstack-api-version", &a), ("x-openstack-nova-api-version", &b)] {
            if let Ok(v) = axum::http::HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        }
        if let Err((f, _)) = super::microversion::negotiate(&headers) {
            client_error(&f)?;
        }
    }

    /// No instant, however near the ends of time, breaks a time comparison.
    #[test]
    fn time_filters_never_overflow(
        seconds in prop_oneof![Just(253_402_300_799i64), Just(-62_167_219_200i64), -62_167_219_200i64..=253_402_300_799i64],
        nanos in prop_oneof![Just(0u32), Just(999_999_999u32), 0u32..1_000_000_000],
    ) {
        let t = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap().replace_nanosecond(nanos).unwrap();
        for cmp in [crate::store::Cmp::Eq, crate::store::Cmp::Neq, crate::store::Cmp::Gt, crate::store::Cmp::Gte,
                    crate::store::Cmp::Lt, crate::store::Cmp::Lte] {
            let _ = super::seconds_filter(crate::store::Column::UpdatedAt, cmp, t);
        }
        let text = super::compute::views::isotime(t);
        prop_assert!(super::compute::images::parse_time(&text).is_some(), "{}", text);
    }
}

/// A store with a few images (properties, tags, members, one marker id) that every generated
/// listing runs against.
fn listing_store() -> &'static (tokio::runtime::Runtime, crate::store::DynStore) {
    use crate::domain::{Image, Member, MemberStatus, Visibility, now};
    static STORE: std::sync::OnceLock<(tokio::runtime::Runtime, crate::store::DynStore)> = std::sync::OnceLock::new();
    STORE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("imagemeta-properties-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = runtime.block_on(async {
            let url = crate::store::DatabaseUrl::Sqlite(dir.join("db"));
            let store = crate::store::open(&url, crate::store::StoreOptions::default()).await.unwrap();
            let images = (0..20)
                .map(|n| {
                    let mut image = Image::new(if n == 0 { "marker".into() } else { format!("image-{n}") }, now());
                    image.name = Some(format!("name-{}", n % 3));
                    image.owner = Some(if n % 2 == 0 { "p".into() } else { "q".into() });
                    image.visibility = [Visibility::Public, Visibility::Shared, Visibility::Private][n % 3];
                    image.size = (n % 4 != 0).then_some(n as i64 * 10);
                    image.properties.set("os_distro".into(), Some(format!("d{}", n % 2)));
                    image.tags = vec![format!("t{}", n % 3)];
                    image.members = vec![Member {
                        project: "p".into(),
                        status: MemberStatus::Accepted,
                        created_at: now(),
                        updated_at: now(),
                    }];
                    image
                })
                .collect();
            store.insert_images(images).await.unwrap();
            store
        });
        // The files go with the process; the directory is only removed by the OS's temp cleanup.
        (runtime, store)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every listing either API accepts runs: the generated SQL is valid and small enough
    /// for the database, whatever the filters, sorts and marker.
    #[test]
    fn every_accepted_listing_runs(mut q in query(), detail in any::<bool>(), admin in any::<bool>(), marker in any::<bool>()) {
        if marker {
            q.push(("marker".into(), "marker".into()));
        }
        let (runtime, store) = listing_store();
        let roles = if admin { vec!["admin".to_owned()] } else { vec!["member".to_owned()] };
        let who = crate::domain::Principal::new("u".into(), "p".into(), roles);
        for parsed in [super::image_v2::images::list_query(&q), super::compute::images::list_query(&q, detail)] {
            let Ok(listing) = parsed else { continue };
            let result = runtime.block_on(store.list_images(crate::store::Caller::User(&who), &listing));
            match result {
                Ok(page) => prop_assert!(page.len() <= listing.limit),
                Err(crate::store::StoreError::MarkerNotFound(_) | crate::store::StoreError::MarkerForbidden(_)) => {}
                Err(e) => prop_assert!(false, "{e} for {listing:?}"),
            }
        }
    }
}
