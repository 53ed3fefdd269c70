//! Image endpoints: list, detail, show, delete (spec §4, checklist #38-#44,
//! #49-#53).

use serde_json::{Value, json};

use crate::helpers::*;

fn ids(list: &Value) -> Vec<String> {
    list["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

// §12 #38
#[tokio::test]
async fn list_items_have_exactly_id_name_links() {
    // Arrange
    let env = Env::new();
    let id = new_id();
    env.seed(&Seed::new().id(&id).name("one").prop("k", "v").min_ram(5));
    let srv = env.start();

    // Act
    let r = srv.get("/v2.1/images").send().await;

    // Assert
    assert_json(
        &r,
        200,
        &json!({"images": [{"id": id, "name": "one", "links": image_links(&srv.image_base, &srv.host(), "v2.1", None, &id)}]}),
    );
}

// §12 #38 / #44: with the project id in the URL the links carry it
#[tokio::test]
async fn list_links_include_project_id_only_when_it_is_in_the_url() {
    let env = Env::new();
    let id = new_id();
    env.seed(&Seed::new().id(&id).name("one"));
    let srv = env.start();

    let r = srv.get(&format!("/v2.1/{PROJ_A}/images")).send().await;

    assert_json(
        &r,
        200,
        &json!({"images": [{"id": id, "name": "one", "links": image_links(&srv.image_base, &srv.host(), "v2.1", Some(PROJ_A), &id)}]}),
    );
}

// §12 #39 / #43 / #44: the full detail representation
#[tokio::test]
async fn show_returns_the_exact_image_representation() {
    // Arrange
    let env = Env::new();
    let id = new_id();
    let seeded = env.seed(
        &Seed::new()
            .id(&id)
            .name("cirros-0.6")
            .min_ram(512)
            .min_disk(1)
            .size(21430272)
            .created_at("2026-01-02T03:04:05Z")
            .prop("kernel_id", "kern-1")
            .prop("os_distro", "cirros"),
    );
    let srv = env.start();

    // Act
    let r = srv.get(&image_path(&id)).send().await;

    // Assert
    let expected = json!({"image": {
        "id": id,
        "name": "cirros-0.6",
        "minRam": 512,
        "minDisk": 1,
        "metadata": {"kernel_id": "kern-1", "os_distro": "cirros"},
        "created": "2026-01-02T03:04:05Z",
        "updated": nova_time(&seeded["updated_at"]),
        "status": "ACTIVE",
        "progress": 100,
        "OS-EXT-IMG-SIZE:size": 21430272,
        "links": image_links(&srv.image_base, &srv.host(), "v2.1", None, &id),
    }});
    assert_json(&r, 200, &expected);
}

// §12 #39: detail items have the same shape as show
#[tokio::test]
async fn detail_items_equal_show_representation() {
    let env = Env::new();
    let a = new_id();
    let b = new_id();
    env.seed(&Seed::new().id(&a).name("a").created_at("2026-01-01T00:00:00Z").prop("x", "1"));
    env.seed(&Seed::new().id(&b).name("b").created_at("2026-01-01T00:00:01Z").status("queued"));
    let srv = env.start();

    let detail = srv.get("/v2.1/images/detail").send().await;
    let show_a = srv.get(&image_path(&a)).send().await;
    let show_b = srv.get(&image_path(&b)).send().await;

    assert_eq!(detail.status, 200, "{}", detail.text());
    assert_eq!(detail.content_type(), Some("application/json"));
    assert_eq!(detail.json(), json!({"images": [show_b.json()["image"], show_a.json()["image"]]}));
    let item = &detail.json()["images"][0];
    let keys: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "OS-EXT-IMG-SIZE:size",
            "created",
            "id",
            "links",
            "metadata",
            "minDisk",
            "minRam",
            "name",
            "progress",
            "status",
            "updated"
        ]
    );
}

// §4.1: minRam/minDisk/size default to 0 and a null name stays null
#[tokio::test]
async fn missing_numbers_are_zero_and_missing_name_is_null() {
    let env = Env::new();
    let seeded = env.seed(&Seed::bare().owner(PROJ_A));
    let id = seeded["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.get(&image_path(&id)).send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    let img = &r.json()["image"];
    assert_eq!(img["name"], json!(null));
    assert_eq!(img["minRam"], json!(0));
    assert_eq!(img["minDisk"], json!(0));
    assert_eq!(img["OS-EXT-IMG-SIZE:size"], json!(0));
}

// §12 #40
#[tokio::test]
async fn glance_status_maps_to_compute_status_and_progress() {
    // Arrange
    let env = Env::new();
    let cases = [
        ("queued", "SAVING", 25),
        ("saving", "SAVING", 50),
        ("active", "ACTIVE", 100),
        ("killed", "ERROR", 0),
        ("deactivated", "UNKNOWN", 0),
        ("uploading", "UNKNOWN", 0),
        ("importing", "UNKNOWN", 0),
    ];
    let ids: Vec<String> =
        cases.iter().map(|(s, _, _)| env.seed(&Seed::new().status(s))["id"].as_str().unwrap().to_string()).collect();
    let srv = env.start();

    for ((glance, status, progress), id) in cases.iter().zip(&ids) {
        // Act
        let r = srv.get(&image_path(id)).send().await;
        // Assert
        assert_eq!(r.status, 200, "{glance}: {}", r.text());
        let img = &r.json()["image"];
        assert_eq!(img["status"], json!(status), "status for Glance {glance}");
        assert_eq!(img["progress"], json!(progress), "progress for Glance {glance}");
    }
}

// §12 #40: deleted / pending_delete -> DELETED 0. Glance soft-deletes such rows
// and may hide them (404); if shown, they must be DELETED with progress 0.
#[tokio::test]
async fn deleted_status_maps_to_deleted_or_is_hidden() {
    let env = Env::new();
    let d = env.seed(&Seed::new().status("deleted"))["id"].as_str().unwrap().to_string();
    let p = env.seed(&Seed::new().status("pending_delete"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    for id in [&d, &p] {
        let r = srv.get(&image_path(id)).send().await;
        if r.status == 404 {
            assert_fault(&r, 404, "itemNotFound", "Image not found.");
        } else {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["image"]["status"], json!("DELETED"));
            assert_eq!(r.json()["image"]["progress"], json!(0));
        }
    }
}

// §4.2 / glance-v2 list membership: killed and deleted images are never listed
#[tokio::test]
async fn killed_and_deleted_images_are_not_listed() {
    let env = Env::new();
    let active = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    env.seed(&Seed::new().status("killed"));
    env.seed(&Seed::new().status("deleted"));
    let srv = env.start();

    let r = srv.get("/v2.1/images/detail").send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&r.json()), vec![active]);
}

// §12 #41
#[tokio::test]
async fn auto_disk_config_maps_to_os_dcf_disk_config() {
    let env = Env::new();
    let cases: Vec<(Option<&str>, Option<&str>)> = vec![
        (Some("True"), Some("AUTO")),
        (Some("yes"), Some("AUTO")),
        (Some("1"), Some("AUTO")),
        (Some(" ON "), Some("AUTO")),
        (Some("False"), Some("MANUAL")),
        (Some("Disabled"), Some("MANUAL")),
        (Some("anything"), Some("MANUAL")),
        (None, None),
    ];
    let ids: Vec<String> = cases
        .iter()
        .map(|(v, _)| {
            let mut s = Seed::new();
            if let Some(v) = v {
                s = s.prop("auto_disk_config", v);
            }
            env.seed(&s)["id"].as_str().unwrap().to_string()
        })
        .collect();
    let srv = env.start();

    for ((value, expected), id) in cases.iter().zip(&ids) {
        let r = srv.get(&image_path(id)).send().await;
        assert_eq!(r.status, 200, "{}", r.text());
        let img = &r.json()["image"];
        match expected {
            Some(e) => assert_eq!(img["OS-DCF:diskConfig"], json!(e), "auto_disk_config={value:?}"),
            None => assert!(img.get("OS-DCF:diskConfig").is_none(), "no diskConfig without auto_disk_config: {img}"),
        }
    }
}

// §12 #42 / #44
#[tokio::test]
async fn instance_uuid_adds_server_object_with_links() {
    let env = Env::new();
    let server_id = new_id();
    let with = env.seed(&Seed::new().prop("instance_uuid", &server_id))["id"].as_str().unwrap().to_string();
    let without = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();
    let h = srv.host();

    let r = srv.get(&image_path(&with)).send().await;
    let rp = srv.get(&format!("/v2.1/{PROJ_A}/images/{with}")).send().await;
    let r2 = srv.get(&image_path(&without)).send().await;

    assert_eq!(
        r.json()["image"]["server"],
        json!({"id": server_id, "links": [
            {"rel": "self", "href": format!("http://{h}/v2.1/servers/{server_id}")},
            {"rel": "bookmark", "href": format!("http://{h}/servers/{server_id}")},
        ]})
    );
    assert_eq!(
        rp.json()["image"]["server"],
        json!({"id": server_id, "links": [
            {"rel": "self", "href": format!("http://{h}/v2.1/{PROJ_A}/servers/{server_id}")},
            {"rel": "bookmark", "href": format!("http://{h}/{PROJ_A}/servers/{server_id}")},
        ]})
    );
    assert!(r2.json()["image"].get("server").is_none(), "no server key: {}", r2.text());
}

// §12 #43: timestamps have no fractions
#[tokio::test]
async fn timestamps_are_rendered_without_fractions() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string(); // created "now"
    let srv = env.start();

    let r = srv.get(&image_path(&id)).send().await;

    let img = &r.json()["image"];
    for k in ["created", "updated"] {
        let s = img[k].as_str().unwrap_or_else(|| panic!("{k} is a string: {img}"));
        let b = s.as_bytes();
        assert_eq!(b.len(), 20, "{k}={s}");
        let shape_ok = b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
        assert!(shape_ok, "{k}={s} is YYYY-MM-DDTHH:MM:SSZ");
    }
}

// §12 #44: /v2 links use the v2 segment, bookmarks have none
#[tokio::test]
async fn v2_prefix_links_use_v2_segment() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.get(&format!("/v2/{PROJ_A}/images/{id}")).send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["image"]["links"], image_links(&srv.image_base, &srv.host(), "v2", Some(PROJ_A), &id));
    assert_no_mv_headers(&r);
}

// §4.1: application URL follows the Host header; alternate names the image API endpoint
#[tokio::test]
async fn links_follow_the_host_header() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();
    let req = format!(
        "GET /v2.1/images/{id} HTTP/1.1\r\nHost: compute.example.org:8774\r\nX-Auth-Token: {TOK_A}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );

    let r = srv.raw(req.as_bytes());

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["image"]["links"], image_links(&srv.image_base, "compute.example.org:8774", "v2.1", None, &id));
}

// §4.1 / brief: a Host without a port, and an IPv6 literal Host
#[tokio::test]
async fn links_for_host_without_port_and_ipv6_host() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();
    let get = |host: &str| {
        let req = format!(
            "GET /v2.1/images/{id} HTTP/1.1\r\nHost: {host}\r\nX-Auth-Token: {TOK_A}\r\nConnection: close\r\n\r\n"
        );
        srv.raw(req.as_bytes())
    };

    let plain = get("compute.example.org");
    let v6 = get("[::1]:8774");

    assert_eq!(
        plain.json()["image"]["links"],
        json!([
            {"rel": "self", "href": format!("http://compute.example.org/v2.1/images/{id}")},
            {"rel": "bookmark", "href": format!("http://compute.example.org/images/{id}")},
            {"rel": "alternate", "type": "application/vnd.openstack.image", "href": format!("{}/images/{id}", srv.image_base)},
        ])
    );
    assert_eq!(v6.json()["image"]["links"], image_links(&srv.image_base, "[::1]:8774", "v2.1", None, &id));
}

// §12 #49: status filter is case-insensitive
#[tokio::test]
async fn status_filter_is_lower_cased() {
    let env = Env::new();
    let active = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let queued = env.seed(&Seed::new().status("queued"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let upper = srv.get("/v2.1/images?status=ACTIVE").send().await;
    let lower = srv.get("/v2.1/images/detail?status=queued").send().await;

    assert_eq!(upper.status, 200, "{}", upper.text());
    assert_eq!(ids(&upper.json()), vec![active]);
    assert_eq!(ids(&lower.json()), vec![queued]);
}

// §12 #49: server filter accepts a full server URL or a bare uuid
#[tokio::test]
async fn server_filter_matches_instance_uuid() {
    let env = Env::new();
    let server_id = new_id();
    let snap = env.seed(&Seed::new().prop("instance_uuid", &server_id))["id"].as_str().unwrap().to_string();
    env.seed(&Seed::new().prop("instance_uuid", &new_id()));
    env.seed(&Seed::new());
    let srv = env.start();

    let by_url = srv.get(&format!("/v2.1/images?server=http://h/v2.1/{PROJ_A}/servers/{server_id}")).send().await;
    let by_uuid = srv.get(&format!("/v2.1/images/detail?server={server_id}")).send().await;

    assert_eq!(ids(&by_url.json()), vec![snap.clone()]);
    assert_eq!(ids(&by_uuid.json()), vec![snap]);
}

// §4.2 filters: name, type, minRam/minDisk (equality), property-<x> (Rec: prefix strip)
#[tokio::test]
async fn name_type_min_and_property_filters() {
    let env = Env::new();
    let a = env.seed(
        &Seed::new().name("alpha").min_ram(512).min_disk(10).prop("image_type", "snapshot").prop("os_type", "linux"),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = env
        .seed(&Seed::new().name("beta").min_ram(1024).min_disk(20).prop("image_type", "base").prop("s_type", "linux"))
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let srv = env.start();

    let by_name = srv.get("/v2.1/images?name=beta").send().await;
    let by_type = srv.get("/v2.1/images?type=snapshot").send().await;
    let by_ram = srv.get("/v2.1/images?minRam=512").send().await;
    let by_disk = srv.get("/v2.1/images/detail?minDisk=20").send().await;
    let by_prop = srv.get("/v2.1/images?property-os_type=linux").send().await;
    let none = srv.get("/v2.1/images?name=gamma").send().await;

    assert_eq!(ids(&by_name.json()), vec![b.clone()]);
    assert_eq!(ids(&by_type.json()), vec![a.clone()]);
    assert_eq!(ids(&by_ram.json()), vec![a.clone()], "minRam is an equality match");
    assert_eq!(ids(&by_disk.json()), vec![b.clone()], "minDisk is an equality match");
    assert_eq!(ids(&by_prop.json()), vec![a], "property- prefix stripped as a prefix (Rec)");
    assert_json(&none, 200, &json!({"images": []}));
}

// §12 #50
#[tokio::test]
async fn unknown_query_parameters_are_ignored() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let list = srv.get("/v2.1/images?foo=bar&sort_key=name&sort_dir=asc").send().await;
    let detail = srv.get("/v2.1/images/detail?bogus=1").send().await;
    let show = srv.get(&format!("{}?whatever=1", image_path(&id))).send().await;

    assert_eq!(ids(&list.json()), vec![id.clone()]);
    assert_eq!(ids(&detail.json()), vec![id.clone()]);
    assert_eq!(show.status, 200);
    assert!(list.json().get("images_links").is_none());
}

// §4.2 / glance: os_hidden images are not listed but can be shown
#[tokio::test]
async fn hidden_images_are_not_listed_but_can_be_shown() {
    let env = Env::new();
    let shown = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let hidden = env.seed(&Seed::new().os_hidden())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let list = srv.get("/v2.1/images").send().await;
    let show = srv.get(&image_path(&hidden)).send().await;

    assert_eq!(ids(&list.json()), vec![shown]);
    assert_eq!(show.status, 200, "{}", show.text());
}

// §12 #52
#[tokio::test]
async fn delete_image_is_204_and_it_is_gone() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.delete(&image_path(&id)).send().await;

    assert_no_content(&r);
    assert_eq!(r.content_type(), Some("application/json"));
    let show = srv.get(&image_path(&id)).send().await;
    assert_fault(&show, 404, "itemNotFound", "Image not found.");
    let list = srv.get("/v2.1/images").send().await;
    assert_json(&list, 200, &json!({"images": []}));
    let again = srv.delete(&image_path(&id)).send().await;
    assert_fault(&again, 404, "itemNotFound", "Image not found.");
}

// §12 #52
#[tokio::test]
async fn delete_missing_image_is_404() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.delete(&image_path(&new_id())).send().await;
    let detail = srv.delete("/v2.1/images/detail").send().await;

    assert_fault(&r, 404, "itemNotFound", "Image not found.");
    assert_fault(&detail, 404, "itemNotFound", "Image not found.");
}

// §12 #52
#[tokio::test]
async fn delete_by_non_owner_or_of_protected_image_is_403() {
    let env = Env::new();
    let public = env.seed(&Seed::new().public())["id"].as_str().unwrap().to_string();
    let protected = env.seed(&Seed::new().protected())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let not_owner = srv.delete(&image_path(&public)).token(TOK_B).send().await;
    let prot = srv.delete(&image_path(&protected)).send().await;
    let prot_admin = srv.delete(&image_path(&protected)).token(TOK_ADMIN).send().await;

    for r in [&not_owner, &prot, &prot_admin] {
        assert_fault(r, 403, "forbidden", "You are not allowed to delete the image.");
    }
    assert_eq!(srv.get(&image_path(&public)).send().await.status, 200);
    assert_eq!(srv.get(&image_path(&protected)).send().await.status, 200);
}

// §12 #53
#[tokio::test]
async fn show_missing_image_is_404() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.get(&image_path(&new_id())).send().await;
    let non_uuid = srv.get("/v2.1/images/nonexistent").send().await;

    assert_fault(&r, 404, "itemNotFound", "Image not found.");
    assert_fault(&non_uuid, 404, "itemNotFound", "Image not found.");
}

// §1.1: /images/detail is never "show id detail"
#[tokio::test]
async fn images_detail_is_not_an_image_id() {
    let env = Env::new();
    let srv = env.start();

    let r = srv.get("/v2.1/images/detail").send().await;

    assert_json(&r, 200, &json!({"images": []}));
}

// §4.2: changes-since -> updated_at >= value; a bad timestamp is 400
#[tokio::test]
async fn changes_since_filters_on_updated_at() {
    let env = Env::new();
    let old = env.seed(&Seed::new().name("old").created_at("2020-01-01T00:00:00Z"));
    let new = env.seed(&Seed::new().name("new").created_at("2030-01-01T00:00:00Z"));
    let srv = env.start();
    // The threshold is the later of the two updated_at values (whatever the CLI set).
    let (a, b) = (old["updated_at"].as_str().unwrap(), new["updated_at"].as_str().unwrap());
    let threshold = nova_time(&json!(a.max(b)));
    let expected: Vec<String> = [&new, &old]
        .iter()
        .filter(|i| nova_time(&i["updated_at"]) == threshold)
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();

    let r = srv.get(&format!("/v2.1/images?changes-since={}", threshold.as_str().unwrap())).send().await;
    let bad = srv.get("/v2.1/images?changes-since=yesterday").send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&r.json()), expected);
    assert_fault_name(&bad, 400, "badRequest");
}

// §4.2: name and status accept Glance's `in:` operator
#[tokio::test]
async fn name_and_status_accept_in_operator() {
    let env = Env::new();
    let a = env.seed(&Seed::new().name("alpha").created_at("2026-01-01T00:00:03Z"))["id"].as_str().unwrap().to_string();
    let b = env.seed(&Seed::new().name("beta").status("queued").created_at("2026-01-01T00:00:02Z"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.seed(&Seed::new().name("gamma").status("saving").created_at("2026-01-01T00:00:01Z"));
    let srv = env.start();

    let names = srv.get("/v2.1/images?name=in:alpha,beta").send().await;
    let statuses = srv.get("/v2.1/images?status=in:ACTIVE,queued").send().await;

    assert_eq!(ids(&names.json()), vec![a.clone(), b.clone()]);
    assert_eq!(ids(&statuses.json()), vec![a, b]);
}

// §1.1: current routes do not strip a `.json` suffix: it is part of the id
#[tokio::test]
async fn json_suffix_is_part_of_the_image_id() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let detail = srv.get("/v2.1/images/detail.json").send().await;
    let show = srv.get(&format!("/v2.1/images/{id}.json")).send().await;

    assert_fault(&detail, 404, "itemNotFound", "Image not found.");
    assert_fault(&show, 404, "itemNotFound", "Image not found.");
}

// §4.2: filters are equality matches (no SQL wildcards, no injection)
#[tokio::test]
async fn filters_are_exact_matches_without_wildcards_or_injection() {
    let env = Env::new();
    env.seed(&Seed::new().name("abc").prop("os_type", "linux"));
    let srv = env.start();

    let percent = srv.get("/v2.1/images?name=a%25").send().await; // name=a%
    let underscore = srv.get("/v2.1/images?name=a_c").send().await;
    let star = srv.get("/v2.1/images?name=*").send().await;
    let inject = srv.get("/v2.1/images?name=%27%20OR%20%271%27%3D%271").send().await; // ' OR '1'='1
    let prop = srv.get("/v2.1/images?property-os_type=lin%25").send().await;
    let case = srv.get("/v2.1/images?name=ABC").send().await;

    for r in [&percent, &underscore, &star, &inject, &prop, &case] {
        assert_json(r, 200, &json!({"images": []}));
    }
}

// bad input: injection-looking ids and keys are just missing things
#[tokio::test]
async fn injection_looking_ids_and_keys_are_not_found() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let show = srv.get("/v2.1/images/%27%20OR%20%271%27%3D%271").send().await;
    let key = srv.get(&key_path(&id, "a%27%20OR%20%271%27%3D%271")).send().await;
    let del_key = srv.delete(&key_path(&id, "%25")).send().await;

    assert_fault(&show, 404, "itemNotFound", "Image not found.");
    assert_fault(&key, 404, "itemNotFound", "The resource could not be found.");
    assert_fault(&del_key, 404, "itemNotFound", "Invalid metadata key");
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
}
