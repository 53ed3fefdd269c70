//! Glance's metadata definitions API (issue 13, point 3): `/v2/metadefs/…` and
//! `/v2/schemas/metadefs/*`, with Glance's shapes, orders, policies and texts
//! (metadefs-spec, its checklist), and `imagemeta metadefs load`.

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

const NS: &str = "/v2/metadefs/namespaces";

/// Loads Glance's definition files into the environment's catalogue.
fn load(env: &Env) -> Value {
    let db = env.db_url();
    let out = env.cli(&["metadefs", "load", "--database", &db]);
    assert!(out.status.success(), "metadefs load: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn create_ns(server: &Server, body: Value) -> Resp {
    g(server, "POST", NS).token(TOK_ADMIN).json(&body).send().await
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// Takes the timestamps out of a document (checking they are Glance's), recursively.
fn untimed(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| {
                    let timed = *k == "created_at" || *k == "updated_at";
                    assert!(!timed || is_glance_time(v), "{k}: {v}");
                    !timed
                })
                .map(|(k, v)| (k.clone(), untimed(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(untimed).collect()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn loaded_definitions_list_show_and_prefix_as_glance_does() {
    let env = Env::new();
    let report = load(&env);
    assert_eq!(report["loaded"].as_array().unwrap().len(), 32, "{report}");
    assert_eq!(report["skipped"], json!([]));
    // A second load leaves everything as it is.
    let again = load(&env);
    assert_eq!((again["loaded"].as_array().unwrap().len(), again["skipped"].as_array().unwrap().len()), (0, 32));
    let server = env.start();

    let r = g(&server, "GET", "/v2/metadefs/resource_types").token(TOK_A).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let types = r.json();
    let names: Vec<&str> =
        types["resource_types"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "OS::Cinder::Volume",
            "OS::Glance::Image",
            "OS::Nova::Aggregate",
            "OS::Nova::Flavor",
            "OS::Nova::Server",
            "OS::Trove::Instance"
        ]
    );

    // Loaded namespaces are public and protected, owned by `admin`, readable by any reader.
    let topology = "/v2/metadefs/namespaces/OS::Compute::VirtCPUTopology";
    let r = g(&server, "GET", topology).token(TOK_A_READER).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        keys(&v),
        [
            "namespace",
            "display_name",
            "description",
            "visibility",
            "protected",
            "owner",
            "created_at",
            "resource_type_associations",
            "properties",
            "self",
            "schema"
        ]
    );
    assert_eq!((&v["visibility"], &v["protected"], &v["owner"]), (&json!("public"), &json!(true), &json!("admin")));
    assert!(v["properties"]["cpu_sockets"].is_object(), "{v}");
    // With a resource type, its association's prefix is put on every property name.
    let r = g(&server, "GET", &format!("{topology}?resource_type=OS::Nova::Flavor")).send().await;
    let props = r.json()["properties"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert!(!props.is_empty() && props.iter().all(|p| p.starts_with("hw:cpu_")), "{props:?}");
    let r = g(&server, "GET", &format!("{topology}?resource_type=OS::Glance::Image")).send().await;
    assert!(r.json()["properties"].as_object().unwrap().keys().all(|p| p.starts_with("hw_cpu_")));
    // A property shown for a resource type: named with the prefix, found without it.
    let r =
        g(&server, "GET", &format!("{topology}/properties/hw:cpu_sockets?resource_type=OS::Nova::Flavor")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "cpu_sockets");
    let r =
        g(&server, "GET", &format!("{topology}/properties/cpu_sockets?resource_type=OS::Nova::Flavor")).send().await;
    assert_gerr(
        &r,
        404,
        "Property cpu_sockets does not start with the expected resource type association prefix of 'hw:'.",
    );

    // A protected namespace cannot be deleted; an admin unprotects it with a full PUT.
    let r = g(&server, "DELETE", topology).token(TOK_ADMIN).send().await;
    assert_gerr(
        &r,
        403,
        "Metadata definition namespace OS::Compute::VirtCPUTopology is protected and cannot be deleted.",
    );
    let r = g(&server, "DELETE", &format!("{topology}/properties")).token(TOK_ADMIN).send().await;
    assert_gerr(
        &r,
        403,
        "Metadata definition namespace OS::Compute::VirtCPUTopology is protected and cannot be deleted.",
    );
    let r = g(&server, "PUT", topology)
        .token(TOK_ADMIN)
        .json(&json!({"namespace": "OS::Compute::VirtCPUTopology", "visibility": "public", "protected": false}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A full replacement: what the body leaves out goes back to its default, the owner too.
    assert_eq!(r.json()["owner"], PROJ_ADMIN);
    assert!(r.json().get("display_name").is_none());
    assert_eq!(g(&server, "DELETE", topology).token(TOK_ADMIN).send().await.status, 204);
    let r = g(&server, "GET", topology).send().await;
    assert_gerr(&r, 404, "Metadata definition namespace=OS::Compute::VirtCPUTopology was not found.");
}

#[tokio::test]
async fn a_namespace_is_created_echoed_shown_and_deleted_in_glances_shapes() {
    let env = Env::new();
    let server = env.start();
    let body = json!({
        "namespace": "FullNS", "display_name": "Full NS", "description": "desc",
        "visibility": "public", "protected": true,
        "resource_type_associations": [
            {"name": "OS::Nova::Flavor", "prefix": "hw:"},
            {"name": "OS::Glance::Image", "prefix": "hw_", "properties_target": "image"}
        ],
        "properties": {
            "nodes": {"type": "integer", "title": "Nodes", "minimum": 1, "maximum": 4},
            "cpu_policy": {"type": "string", "title": "CPU Policy", "description": "d", "default": "shared",
                           "enum": ["shared", "dedicated"]}
        },
        "objects": [{"name": "obj1", "description": "o1", "required": ["a"], "properties": {
            "a": {"type": "string", "title": "A"},
            "b": {"type": "array", "title": "B", "items": {"type": "string", "enum": ["x", "y"]}, "uniqueItems": true}
        }}],
        "tags": [{"name": "tagA"}, {"name": "tagB"}]
    });
    let r = create_ns(&server, body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("{}/v2/metadefs/namespaces/FullNS", server.image_base).as_str()));
    // The echo: the request's collections as they were given, without timestamps or links.
    assert_eq!(
        untimed(&r.json()),
        json!({
            "namespace": "FullNS", "display_name": "Full NS", "description": "desc", "visibility": "public",
            "protected": true, "owner": PROJ_ADMIN,
            "resource_type_associations": [
                {"name": "OS::Nova::Flavor", "prefix": "hw:"},
                {"name": "OS::Glance::Image", "prefix": "hw_", "properties_target": "image"}
            ],
            "properties": {
                "cpu_policy": {"type": "string", "title": "CPU Policy", "description": "d", "default": "shared",
                               "enum": ["shared", "dedicated"]},
                "nodes": {"type": "integer", "title": "Nodes", "minimum": 1, "maximum": 4}
            },
            "objects": [{"name": "obj1", "required": ["a"], "description": "o1", "properties": {
                "a": {"type": "string", "title": "A"},
                "b": {"type": "array", "title": "B", "items": {"type": "string", "enum": ["x", "y"]}, "uniqueItems": true}
            }}],
            "tags": [{"name": "tagA"}, {"name": "tagB"}],
            "self": "/v2/metadefs/namespaces/FullNS", "schema": "/v2/schemas/metadefs/namespace"
        })
    );
    // The show, in Glance's key order; tags newest first.
    let r = g(&server, "GET", "/v2/metadefs/namespaces/FullNS").token(TOK_B).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        keys(&v),
        [
            "namespace",
            "display_name",
            "description",
            "visibility",
            "protected",
            "owner",
            "created_at",
            "updated_at",
            "resource_type_associations",
            "properties",
            "objects",
            "tags",
            "self",
            "schema"
        ]
    );
    assert_eq!(v["tags"], json!([{"name": "tagB"}, {"name": "tagA"}]));
    assert_eq!(
        untimed(&v["objects"]),
        json!([{"name": "obj1", "required": ["a"], "description": "o1", "properties": {
            "a": {"type": "string", "title": "A"},
            "b": {"type": "array", "title": "B", "items": {"type": "string", "enum": ["x", "y"]}, "uniqueItems": true}
        }, "self": "/v2/metadefs/namespaces/FullNS/objects/obj1", "schema": "/v2/schemas/metadefs/object"}])
    );
    let r = g(&server, "GET", "/v2/metadefs/namespaces/FullNS?resource_type=OS::Nova::Flavor").send().await;
    let v = r.json();
    assert_eq!(v["objects"][0]["required"], json!(["hw:a"]));
    assert_eq!(keys(&v["properties"]), ["hw:cpu_policy", "hw:nodes"]);

    // Again: a conflict. As a member: the policy's refusal.
    let r = create_ns(&server, json!({"namespace": "FullNS"})).await;
    assert_gerr(&r, 409, "The metadata definition namespace=FullNS already exists.");
    let r = g(&server, "POST", NS).token(TOK_A).json(&json!({"namespace": "Mine"})).send().await;
    assert_gerr(&r, 403, "You are not authorized to complete add_metadef_namespace action.");
    // Another project's reader reads a public namespace but may not delete it.
    let r = g(&server, "DELETE", "/v2/metadefs/namespaces/FullNS").token(TOK_B).send().await;
    assert_gerr(&r, 403, "You are not authorized to complete delete_metadef_namespace action.");

    // A minimal create: exactly Glance's keys, private, unprotected, the caller's.
    let r = create_ns(&server, json!({"namespace": "Private"})).await;
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(
        keys(&v),
        ["namespace", "visibility", "protected", "owner", "created_at", "updated_at", "self", "schema"]
    );
    assert_eq!(
        (&v["visibility"], &v["protected"], &v["owner"]),
        (&json!("private"), &json!(false), &json!(PROJ_ADMIN))
    );
    // Invisible to another project: WebOb's bare 404 on show, Glance's text elsewhere.
    let r = g(&server, "GET", "/v2/metadefs/namespaces/Private").token(TOK_B).send().await;
    assert_gerr(&r, 404, "The resource could not be found.");
    let r = g(&server, "GET", "/v2/metadefs/namespaces/Private/tags").token(TOK_B).send().await;
    assert_gerr(&r, 404, "Namespace Private not found");
    let r = g(&server, "GET", "/v2/metadefs/namespaces/Private/objects").token(TOK_B).send().await;
    assert_gerr(&r, 404, "Namespace Private not found");
    let r = g(&server, "GET", "/v2/metadefs/namespaces/Nope/objects").token(TOK_B).send().await;
    assert_gerr(&r, 404, "Metadata definition namespace=Nope was not found.");

    // Bodies: the schema, read-only attributes, a body where none is expected.
    let r = create_ns(&server, json!({"display_name": "x"})).await;
    assert_eq!(r.status, 400);
    assert!(
        explanation(&r)
            .starts_with("Provided object does not match schema 'namespace': 'namespace' is a required property")
    );
    let r = create_ns(&server, json!({"namespace": "x", "self": "/x"})).await;
    assert_gerr(&r, 403, "Attribute 'self' is read-only.");
    let r = g(&server, "POST", "/v2/metadefs/namespaces/FullNS/tags/t1").token(TOK_ADMIN).json(&json!({})).send().await;
    assert_gerr(&r, 400, "A body is not expected with this request.");

    // Delete: the namespace and everything in it; the resource types stay.
    let r = g(&server, "PUT", "/v2/metadefs/namespaces/FullNS")
        .token(TOK_ADMIN)
        .json(&json!({"namespace": "FullNS", "visibility": "public", "protected": false}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(g(&server, "DELETE", "/v2/metadefs/namespaces/FullNS").token(TOK_ADMIN).send().await.status, 204);
    let r = g(&server, "GET", "/v2/metadefs/namespaces/FullNS/objects/obj1").token(TOK_ADMIN).send().await;
    assert_gerr(&r, 404, "Metadata definition namespace=FullNS was not found.");
    let r = g(&server, "GET", "/v2/metadefs/resource_types").send().await;
    assert_eq!(r.json()["resource_types"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn objects_properties_tags_and_associations_change_as_in_glance() {
    let env = Env::new();
    let server = env.start();
    assert_eq!(create_ns(&server, json!({"namespace": "N", "visibility": "public"})).await.status, 201);
    let admin = |m: &str, p: &str| g(&server, m, &format!("/v2/metadefs/namespaces/N{p}")).token(TOK_ADMIN);

    // Objects.
    let r = admin("POST", "/objects")
        .json(&json!({"name": "o1", "properties": {"p": {"type": "string", "title": "P"}}}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        untimed(&r.json()),
        json!({"name": "o1", "properties": {"p": {"type": "string", "title": "P"}},
               "self": "/v2/metadefs/namespaces/N/objects/o1", "schema": "/v2/schemas/metadefs/object"})
    );
    let r = admin("POST", "/objects").json(&json!({"name": "o1"})).send().await;
    assert_gerr(&r, 409, "A metadata definition object with name=o1 already exists in namespace=N.");
    assert_eq!(admin("POST", "/objects").json(&json!({"name": "o2"})).send().await.status, 201);
    let r = admin("PUT", "/objects/o2").json(&json!({"name": "o1"})).send().await;
    assert_gerr(
        &r,
        409,
        "Invalid update. It would result in a duplicate metadata definition object with the same name=o1 in namespace=N.",
    );
    let r = admin("PUT", "/objects/o2").json(&json!({"name": "o3", "description": "renamed"})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["self"], "/v2/metadefs/namespaces/N/objects/o3");
    // Read back: `required` and `properties` always there (an echo has only what was sent).
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/objects/o3").send().await;
    assert_eq!(
        untimed(&r.json()),
        json!({"name": "o3", "required": [], "description": "renamed", "properties": {},
               "self": "/v2/metadefs/namespaces/N/objects/o3", "schema": "/v2/schemas/metadefs/object"})
    );
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/objects").send().await;
    let v = r.json();
    assert_eq!(v["schema"], "v2/schemas/metadefs/objects");
    assert_eq!(v["objects"].as_array().unwrap().iter().map(|o| o["name"].clone()).collect::<Vec<_>>(), ["o1", "o3"]);
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/objects?limit=x").send().await;
    assert_gerr(&r, 400, "limit param must be an integer");
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/objects/nope").send().await;
    assert_gerr(&r, 404, "Could not find metadata object nope");
    let r = admin("DELETE", "/objects/o3").send().await;
    assert_eq!(r.status, 204);

    // Properties.
    let prop = json!({"name": "speed", "title": "Speed", "type": "integer", "minimum": 1, "maximum": 10});
    let r = admin("POST", "/properties").json(&prop).send().await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"name": "speed", "type": "integer", "title": "Speed", "minimum": 1, "maximum": 10}));
    let r = admin("POST", "/properties").json(&prop).send().await;
    assert_gerr(&r, 409, "A metadata definition property with name=speed already exists in namespace=N.");
    let r = admin("POST", "/properties").json(&json!({"name": "x", "type": "string"})).send().await;
    assert_eq!(r.status, 400);
    assert!(
        explanation(&r).starts_with("Provided object does not match schema 'property': 'title' is a required property")
    );
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/properties").send().await;
    // Created on its own, a property keeps its name inside its definition (as Glance stores it).
    assert_eq!(
        r.json(),
        json!({"properties": {"speed": {"name": "speed", "type": "integer", "title": "Speed", "minimum": 1, "maximum": 10}}})
    );
    let r = admin("PUT", "/properties/speed")
        .json(&json!({"name": "rate", "title": "Rate", "type": "string"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/properties/speed").send().await;
    assert_gerr(&r, 404, "Could not find property speed");
    assert_eq!(g(&server, "GET", "/v2/metadefs/namespaces/N/properties/rate").send().await.json()["title"], "Rate");
    let r = g(&server, "DELETE", "/v2/metadefs/namespaces/N/properties/rate").token(TOK_A).send().await;
    assert_gerr(&r, 403, "You are not authorized to complete remove_metadef_property action.");

    // Tags: replaced, appended, unique case-insensitively, renamed, paged.
    let r = admin("POST", "/tags").json(&json!({"tags": [{"name": "a"}, {"name": "b"}]})).send().await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"tags": [{"name": "a"}, {"name": "b"}]}));
    let r = admin("POST", "/tags")
        .header("X-Openstack-Append", "True")
        .json(&json!({"tags": [{"name": "c"}]}))
        .send()
        .await;
    assert_eq!(r.status, 201);
    let r = admin("POST", "/tags")
        .header("X-Openstack-Append", "True")
        .json(&json!({"tags": [{"name": "A"}]}))
        .send()
        .await;
    assert_gerr(
        &r,
        409,
        "A metadata tag with name=A already exists in namespace=N. (Please note that metadata tag names are case insensitive).",
    );
    let names = |v: Value| v["tags"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect::<Vec<_>>();
    let all = g(&server, "GET", "/v2/metadefs/namespaces/N/tags?sort_key=name&sort_dir=asc").send().await;
    assert_eq!(names(all.json()), ["a", "b", "c"], "the refused append changed nothing");
    let page =
        g(&server, "GET", "/v2/metadefs/namespaces/N/tags?sort_key=name&sort_dir=asc&limit=1&marker=a").send().await;
    assert_eq!(names(page.json()), ["b"]);
    let r = admin("POST", "/tags/d").send().await;
    assert_eq!(r.status, 201);
    assert_eq!(keys(&r.json()), ["name", "created_at", "updated_at"]);
    let r = admin("PUT", "/tags/d").json(&json!({"name": "e"})).send().await;
    assert_eq!((r.status, r.json()["name"].clone()), (200, json!("e")));
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/tags/d").send().await;
    assert_gerr(&r, 404, "Could not find metadata tag d");
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/tags?sort_key=bogus").send().await;
    assert_eq!(r.status, 400);
    assert_eq!(admin("DELETE", "/tags").send().await.status, 204);
    assert_eq!(g(&server, "GET", "/v2/metadefs/namespaces/N/tags").send().await.json(), json!({"tags": []}));

    // Associations: a new name makes a resource type.
    let r = admin("POST", "/resource_types").json(&json!({"name": "OS::Nova::Flavor", "prefix": "hw:"})).send().await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(untimed(&r.json()), json!({"name": "OS::Nova::Flavor", "prefix": "hw:"}));
    let r = admin("POST", "/resource_types").json(&json!({"name": "OS::Nova::Flavor"})).send().await;
    assert_gerr(
        &r,
        409,
        "The metadata definition resource-type association of resource-type=OS::Nova::Flavor to namespace=N already exists.",
    );
    let r = g(&server, "GET", "/v2/metadefs/namespaces/N/resource_types").send().await;
    assert_eq!(
        untimed(&r.json()),
        json!({"resource_type_associations": [{"name": "OS::Nova::Flavor", "prefix": "hw:"}]})
    );
    assert_eq!(admin("DELETE", "/resource_types/OS::Nova::Flavor").send().await.status, 204);
    let r = admin("DELETE", "/resource_types/OS::Nova::Flavor").send().await;
    assert_gerr(&r, 404, "Failed to find resource type OS::Nova::Flavor to delete");
    let r = g(&server, "GET", "/v2/metadefs/resource_types").send().await;
    assert_eq!(untimed(&r.json()), json!({"resource_types": [{"name": "OS::Nova::Flavor"}]}));
}

#[tokio::test]
async fn namespace_listings_page_filter_and_refuse_what_they_cannot_use() {
    let env = Env::new();
    let server = env.start();
    for (name, visibility) in [("ns-a", "public"), ("ns-b", "private"), ("ns-c", "public")] {
        assert_eq!(create_ns(&server, json!({"namespace": name, "visibility": visibility})).await.status, 201);
    }
    let r = g(&server, "POST", "/v2/metadefs/namespaces/ns-c/resource_types")
        .token(TOK_ADMIN)
        .json(&json!({"name": "OS::Glance::Image"}))
        .send()
        .await;
    assert_eq!(r.status, 201);
    let list = |token: &'static str, q: &str| {
        let server = &server;
        let path = format!("{NS}{q}");
        async move {
            let r = g(server, "GET", &path).token(token).send().await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            r.json()
        }
    };
    let names =
        |v: &Value| v["namespaces"].as_array().unwrap().iter().map(|n| n["namespace"].clone()).collect::<Vec<_>>();

    let v = list(TOK_ADMIN, "?sort_key=namespace&sort_dir=asc&limit=2").await;
    assert_eq!(names(&v), ["ns-a", "ns-b"]);
    assert_eq!(v["first"], "/v2/metadefs/namespaces?sort_key=namespace&sort_dir=asc&limit=2");
    assert_eq!(v["next"], "/v2/metadefs/namespaces?sort_key=namespace&sort_dir=asc&limit=2&marker=ns-b");
    assert_eq!(v["schema"], "/v2/schemas/metadefs/namespaces");
    let v = list(TOK_ADMIN, "?sort_key=namespace&sort_dir=asc&limit=2&marker=ns-b").await;
    assert_eq!(names(&v), ["ns-c"]);
    assert!(v.get("next").is_none(), "{v}");
    // Listing entries carry their associations, nothing else.
    assert!(keys(&v["namespaces"][0]).contains(&"resource_type_associations"));
    // Another project sees the public ones; filters by visibility and resource type.
    assert_eq!(names(&list(TOK_B, "?sort_key=namespace&sort_dir=asc").await), ["ns-a", "ns-c"]);
    assert_eq!(names(&list(TOK_ADMIN, "?visibility=private").await), ["ns-b"]);
    assert_eq!(names(&list(TOK_ADMIN, "?resource_types=OS::Glance::Image").await), ["ns-c"]);

    for (q, text) in [
        ("?limit=-1", "limit param must be positive"),
        ("?sort_dir=up", "Invalid sort direction: up"),
        ("?visibility=shared", "Invalid visibility value: shared"),
        ("?marker=nope", "Metadata definition namespace=nope was not found."),
    ] {
        let r = g(&server, "GET", &format!("{NS}{q}")).token(TOK_ADMIN).send().await;
        let code = if q.starts_with("?marker") { 404 } else { 400 };
        assert_gerr(&r, code, text);
    }
    let r = g(&server, "GET", &format!("{NS}?marker=ns-b")).token(TOK_B).send().await;
    assert_gerr(&r, 403, "Forbidding request, metadata definition namespace=ns-b is not visible.");
    // A token without the reader role reads nothing.
    let r = g(&server, "GET", NS).token("no-such-token").send().await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn the_schemas_are_glances_byte_for_byte() {
    let env = Env::new();
    let server = env.start();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/metadefs-schemas");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let r = g(&server, "GET", &format!("/v2/schemas/metadefs/{name}")).send().await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.text(), std::fs::read_to_string(&path).unwrap(), "{name}");
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(g(&server, "GET", "/v2/schemas/metadefs/nope").send().await.status, 404);
}

#[tokio::test]
async fn a_load_checks_every_file_before_it_loads_any() {
    let env = Env::new();
    let dir = env.dir().join("defs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.json"), json!({"namespace": "Good", "visibility": "public"}).to_string()).unwrap();
    std::fs::write(
        dir.join("b.json"),
        json!({"namespace": "Bad", "objects": [{"description": "no name"}]}).to_string(),
    )
    .unwrap();
    let db = env.db_url();
    let defs = dir.to_str().unwrap();
    let out = env.cli(&["metadefs", "load", "--database", &db, "--from", defs]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.json") && err.contains("'name' is a required property"), "{err}");
    std::fs::remove_file(dir.join("b.json")).unwrap();
    let out = env.cli(&["metadefs", "load", "--database", &db, "--from", defs]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!({"loaded": ["Good"], "skipped": []}));
    let server = env.start();
    let r = g(&server, "GET", NS).token(TOK_A).send().await;
    let v = r.json();
    assert_eq!(v["namespaces"].as_array().unwrap().len(), 1, "only Good, not Bad: {v}");
    // Loaded without a protection: unprotected, as glance-manage leaves it.
    assert_eq!(v["namespaces"][0]["protected"], false);
}
