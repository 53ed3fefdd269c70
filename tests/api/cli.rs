//! The seeding CLI (`imagemeta image create|list`) and server configuration
//! through environment variables (brief: binary interface).

use serde_json::{Value, json};

use crate::helpers::*;

// Brief: image create prints the Glance v2 flat shape with each property top-level
#[test]
fn image_create_prints_glance_flat_json() {
    // Arrange
    let env = Env::new();
    let id = new_id();

    // Act
    let img = env.seed(
        &Seed::new()
            .id(&id)
            .name("cli-image")
            .owner(PROJ_B)
            .public()
            .status("queued")
            .min_disk(3)
            .min_ram(256)
            .size(1024)
            .protected()
            .created_at("2026-01-02T03:04:05Z")
            .prop("hw_disk_bus", "scsi")
            .prop("my key", "a=b"),
    );

    // Assert
    assert_eq!(img["id"], json!(id));
    assert_eq!(img["name"], json!("cli-image"));
    assert_eq!(img["owner"], json!(PROJ_B));
    assert_eq!(img["visibility"], json!("public"));
    assert_eq!(img["status"], json!("queued"));
    assert_eq!(img["min_disk"], json!(3));
    assert_eq!(img["min_ram"], json!(256));
    assert_eq!(img["size"], json!(1024));
    assert_eq!(img["protected"], json!(true));
    assert_eq!(img["tags"], json!([]));
    assert!(img["created_at"].as_str().unwrap().starts_with("2026-01-02T03:04:05"), "{img}");
    assert!(img["updated_at"].is_string(), "{img}");
    assert_eq!(img["hw_disk_bus"], json!("scsi"));
    assert_eq!(img["my key"], json!("a=b"), "only the first '=' splits key and value");
}

// Brief: defaults: new uuid id, status active, visibility private, owner none
#[test]
fn image_create_defaults() {
    let env = Env::new();

    let img = env.seed(&Seed::bare());

    let id = img["id"].as_str().expect("id is a string");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "id is a uuid: {id}");
    assert_eq!(img["status"], json!("active"));
    assert_eq!(img["visibility"], json!("private"));
    assert_eq!(img["owner"], json!(null));
    assert_eq!(img["protected"], json!(false));
}

// Brief: --count N prints N objects, names NAME-i, created_at one second apart
#[test]
fn image_create_count_prints_one_object_per_line() {
    let env = Env::new();

    let imgs = env.seed_count(&Seed::new().no_id().name("bulk").created_at("2026-05-06T07:08:09Z"), 3);

    let names: Vec<&str> = imgs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["bulk-0", "bulk-1", "bulk-2"]);
    let created: Vec<String> = imgs.iter().map(|i| nova_time(&i["created_at"]).as_str().unwrap().to_string()).collect();
    assert_eq!(created, vec!["2026-05-06T07:08:09Z", "2026-05-06T07:08:10Z", "2026-05-06T07:08:11Z"]);
    let ids: std::collections::BTreeSet<&str> = imgs.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "ids are distinct");
}

// Brief: image list prints a JSON array of what was created
#[test]
fn image_list_prints_json_array() {
    let env = Env::new();
    let a = env.seed(&Seed::new().name("a").prop("x", "1"));
    let b = env.seed(&Seed::new().name("b"));

    let out = env.cli(&["image", "list", "--database", &env.db_url()]);

    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON array");
    let arr = list.as_array().expect("array");
    assert_eq!(arr.len(), 2);
    for seeded in [&a, &b] {
        let found = arr.iter().find(|i| i["id"] == seeded["id"]).unwrap_or_else(|| panic!("{} listed", seeded["id"]));
        assert_eq!(found, seeded);
    }
}

// Brief: image list of an empty database is []
#[test]
fn image_list_of_empty_database_is_empty_array() {
    let env = Env::new();
    env.start(); // creates the schema
    let out = env.cli(&["image", "list", "--database", &env.db_url()]);

    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!([]));
}

// Brief: a duplicate id is refused (non-zero exit) and does not replace the image
#[test]
fn image_create_with_duplicate_id_fails() {
    let env = Env::new();
    let id = new_id();
    env.seed(&Seed::new().id(&id).name("first"));

    let out = env.seed_raw(&Seed::new().id(&id).name("second"));

    assert!(!out.status.success(), "duplicate id must fail");
    let list: Value = serde_json::from_slice(&env.cli(&["image", "list", "--database", &env.db_url()]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], json!("first"));
}

// Brief: the database may be seeded while the server runs
#[tokio::test]
async fn images_seeded_while_server_runs_are_visible() {
    let env = Env::new();
    let srv = env.start();
    let id = env.seed(&Seed::new().prop("late", "yes"))["id"].as_str().unwrap().to_string();

    let r = srv.get(&meta_path(&id)).send().await;

    assert_json(&r, 200, &json!({"metadata": {"late": "yes"}}));
}

// Brief: API writes are visible to `image list`
#[tokio::test]
async fn api_writes_are_visible_to_image_list() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let r = srv.post(&meta_path(&id), json!({"metadata": {"via": "api"}})).send().await;
    let out = env.cli(&["image", "list", "--database", &env.db_url()]);

    assert_eq!(r.status, 200);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["via"], json!("api"));
}

// Brief: configuration through IMAGEMETA_* environment variables
#[tokio::test]
async fn server_configured_through_environment_variables() {
    let env = Env::new();
    let id = env.seed(&Seed::new().props_n(2))["id"].as_str().unwrap().to_string();
    let srv = env.start_with(&ServerOpts { via_env: true, metadata_items: Some(2), ..Default::default() });

    let over = srv.post(&meta_path(&id), json!({"metadata": {"x": "1"}})).send().await;
    let unauth = srv.get(&meta_path(&id)).token("bogus").send().await;

    assert_fault(&over, 403, "forbidden", "Image metadata limit exceeded");
    assert_eq!(unauth.status, 401);
}

/// `--config FILE` (issue 14): a TOML file gives `serve` its settings, each key a flag's name
/// with `_` for `-`; flags win over the environment, which wins over the file; a key that
/// names no flag stops the server, naming it.
#[tokio::test]
async fn a_config_file_sets_values_and_flags_and_environment_override_it() {
    let env = Env::new();
    let config = env.dir().join("imagemeta.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_items = 3\nimage_tag_quota = 1\nimage_store = [\"only=file://{}\"]\nforce_noauth = false\n",
            env.dir().join("store").display()
        ),
    )
    .unwrap();
    let path = config.display().to_string();
    let limit = |server: &Server| {
        let h = server.handle();
        async move { h.call("GET", "/v2.1/limits").send().await.json()["limits"]["absolute"]["maxImageMeta"].clone() }
    };

    let from_file =
        env.start_with(&ServerOpts { extra_args: vec!["--config".into(), path.clone()], ..Default::default() });
    assert_eq!(limit(&from_file).await, json!(3));
    let id = crate::glance_helpers::create_raw(&from_file).await;
    let r = crate::glance_helpers::g(&from_file, "PUT", &format!("/v2/images/{id}/tags/a")).send().await;
    assert_eq!(r.status, 204);
    let r = crate::glance_helpers::g(&from_file, "PUT", &format!("/v2/images/{id}/tags/b")).send().await;
    assert_eq!(r.status, 413, "the file's tag quota: {}", r.text());
    drop(from_file);

    let flag = env.start_with(&ServerOpts {
        extra_args: vec!["--config".into(), path.clone(), "--metadata-items".into(), "5".into()],
        ..Default::default()
    });
    assert_eq!(limit(&flag).await, json!(5), "a flag wins over the file");
    drop(flag);
    let environment = env.start_with(&ServerOpts {
        extra_args: vec!["--config".into(), path.clone()],
        env: vec![("IMAGEMETA_METADATA_ITEMS".into(), "7".into())],
        ..Default::default()
    });
    assert_eq!(limit(&environment).await, json!(7), "the environment wins over the file");
    drop(environment);

    std::fs::write(&config, "metadata_items = 3\ncompute_listn = \"x\"\nnope = 1\n").unwrap();
    let (status, stderr) =
        env.start_fails(&ServerOpts { extra_args: vec!["--config".into(), path], ..Default::default() });
    assert!(!status.success());
    assert!(stderr.contains("unknown settings: compute_listn, nope"), "{stderr}");
}
