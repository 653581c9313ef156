//! CustomResourceDefinitions through the in-process door, where the store can be looked at:
//! custom resources under upstream's key layout, a watch of them ended when their CRD goes,
//! strategic merge patch refused, discovery following CRDs, and a restarted API serving the
//! stored CRDs' resources from its first request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth_apiserver::{in_process, Api, ApiConfig, User};
use berth_store::{EmbeddedConfig, EmbeddedStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(router: &axum::Router, method: &str, uri: &str, content_type: &str, body: Value) -> (StatusCode, Value) {
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    let req = Request::builder().method(method).uri(uri).header("content-type", content_type).body(body).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.berth.dev"},
        "spec": {"group": "example.berth.dev", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}})
}

/// Polls `uri` until `done` holds for its answer (the CRD controller works in the background).
async fn until(router: &axum::Router, uri: &str, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = call(router, "GET", uri, "application/json", Value::Null).await;
        if done(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{uri} never got there: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn established(status: StatusCode, crd: &Value) -> bool {
    status == StatusCode::OK && crd["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Established" && c["status"] == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_come_and_go_with_their_crd_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
    let api = Api::start(store.clone(), ApiConfig::default()).await.expect("api");
    let user = User::new("admin", &["system:masters"]);
    let router = in_process(api.clone(), user.clone());
    let crd_uri = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.berth.dev";
    let widgets = "/apis/example.berth.dev/v1/namespaces/default/widgets";

    let (status, created) = call(&router, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", crd()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    until(&router, crd_uri, established).await;
    let groups = until(&router, "/apis", |s, _| s == StatusCode::OK).await;
    assert!(groups.to_string().contains("example.berth.dev/v1"), "{groups}");

    // a second CRD wanting the same kind in the group: its names are not accepted, nothing served
    let mut gizmos = crd();
    gizmos["metadata"]["name"] = json!("gizmos.example.berth.dev");
    gizmos["spec"]["names"]["plural"] = json!("gizmos");
    gizmos["spec"]["names"]["singular"] = json!("gizmo");
    let (status, created) = call(&router, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", gizmos).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let refused = until(&router, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.example.berth.dev", |_, c| {
        c["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "NamesAccepted" && c["status"] == "False")
    })
    .await;
    let conditions = refused["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        (conditions[0]["reason"].as_str(), conditions[0]["message"].as_str()),
        (Some("KindConflict"), Some("\"Widget\" is already in use")),
        "{refused}"
    );
    assert_eq!((conditions[1]["type"].as_str(), conditions[1]["status"].as_str()), (Some("Established"), Some("False")), "{refused}");
    let (_, list) = call(&router, "GET", "/apis/example.berth.dev/v1", "application/json", Value::Null).await;
    assert!(!list.to_string().contains("gizmos"), "{list}");
    let gizmos_uri = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.example.berth.dev";
    let (status, _) = call(&router, "DELETE", gizmos_uri, "application/json", Value::Null).await;
    assert!(status.is_success());
    until(&router, gizmos_uri, |s, _| s == StatusCode::NOT_FOUND).await;

    let widget = json!({"apiVersion": "example.berth.dev/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"size": 3, "color": "red"}});
    let (status, made) = call(&router, "POST", widgets, "application/json", widget).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["spec"], json!({"size": 3}), "unknown fields are pruned");
    let kv = store.get("/registry/example.berth.dev/widgets/default/a", None).await.expect("get").expect("stored under upstream's key");
    let stored: Value = serde_json::from_slice(&kv.value).expect("JSON");
    assert_eq!(stored["apiVersion"], "example.berth.dev/v1");
    let (status, refused) = call(&router, "PATCH", &format!("{widgets}/a"), "application/strategic-merge-patch+json", json!({"spec": {"size": 4}})).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused}");
    let (status, bad) = call(&router, "PATCH", &format!("{widgets}/a"), "application/merge-patch+json", json!({"spec": {"size": "big"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert_eq!(
        bad["message"],
        r#"Widget.example.berth.dev "a" is invalid: spec.size: Invalid value: "string": spec.size in body must be of type integer: "string""#
    );

    // a deleted namespace stays Terminating with its `kubernetes` finalizer (no namespace
    // controller runs here); what that controller does by the API (the custom resource deleted,
    // the finalizer removed through `finalize`) lets it go
    let (status, _) =
        call(&router, "POST", "/api/v1/namespaces", "application/json", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let doomed = json!({"apiVersion": "example.berth.dev/v1", "kind": "Widget", "metadata": {"name": "b"}, "spec": {"size": 1}});
    let (status, made) = call(&router, "POST", "/apis/example.berth.dev/v1/namespaces/doomed/widgets", "application/json", doomed).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, _) = call(&router, "DELETE", "/api/v1/namespaces/doomed", "application/json", Value::Null).await;
    assert!(status.is_success());
    let (status, ns) = call(&router, "GET", "/api/v1/namespaces/doomed", "application/json", Value::Null).await;
    assert_eq!((status, &ns["status"]["phase"], &ns["spec"]["finalizers"]), (StatusCode::OK, &json!("Terminating"), &json!(["kubernetes"])), "{ns}");
    let (status, _) = call(&router, "DELETE", "/apis/example.berth.dev/v1/namespaces/doomed/widgets/b", "application/json", Value::Null).await;
    assert!(status.is_success());
    let (status, created) = call(
        &router,
        "POST",
        "/apis/example.berth.dev/v1/namespaces/doomed/widgets",
        "application/json",
        json!({"apiVersion": "example.berth.dev/v1", "kind": "Widget", "metadata": {"name": "late"}}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no new objects in a terminating namespace: {created}");
    let mut finalized = ns.clone();
    finalized["spec"]["finalizers"] = json!([]);
    let (status, body) = call(&router, "PUT", "/api/v1/namespaces/doomed/finalize", "application/json", finalized).await;
    assert!(status.is_success(), "{status} {body}");
    until(&router, "/api/v1/namespaces/doomed", |s, _| s == StatusCode::NOT_FOUND).await;
    assert!(store.get("/registry/example.berth.dev/widgets/doomed/b", None).await.expect("get").is_none());

    // a restarted API serves the stored CRD's resources from the start
    drop(router);
    drop(api);
    let api = Api::start(store.clone(), ApiConfig::default()).await.expect("api again");
    let router = in_process(api.clone(), user);
    let (status, got) = call(&router, "GET", &format!("{widgets}/a"), "application/json", Value::Null).await;
    assert_eq!((status, got["spec"]["size"].as_i64()), (StatusCode::OK, Some(3)), "{got}");

    // a watch of the custom resources ends when the CRD goes, and so do the objects
    let req = Request::builder().uri(format!("{widgets}?watch=1")).body(Body::empty()).expect("request");
    let watch = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(watch.status(), StatusCode::OK);
    let ended = tokio::spawn(async move { axum::body::to_bytes(watch.into_body(), 1 << 20).await.map(|b| String::from_utf8_lossy(&b).to_string()) });
    let held = json!({"apiVersion": "example.berth.dev/v1", "kind": "Widget", "metadata": {"name": "held", "finalizers": ["example.berth.dev/hold"]}});
    let (status, made) = call(&router, "POST", widgets, "application/json", held).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, deleting) = call(&router, "DELETE", crd_uri, "application/json", Value::Null).await;
    assert!(status.is_success(), "{deleting}");
    // a CR with a finalizer of its own keeps the CRD (served, but refusing creates) until it goes
    until(&router, &format!("{widgets}/held"), |s, w| s == StatusCode::OK && w["metadata"]["deletionTimestamp"].is_string()).await;
    until(&router, &format!("{widgets}/a"), |s, _| s == StatusCode::NOT_FOUND).await;
    let (status, crd_now) = call(&router, "GET", crd_uri, "application/json", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert!(crd_now["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Terminating" && c["status"] == "True"), "{crd_now}");
    let late = json!({"apiVersion": "example.berth.dev/v1", "kind": "Widget", "metadata": {"name": "late"}});
    let (status, refused) = call(&router, "POST", widgets, "application/json", late).await;
    assert_eq!(
        (status, refused["message"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("create not allowed while custom resource definition is terminating"))
    );
    let (status, released) =
        call(&router, "PATCH", &format!("{widgets}/held"), "application/merge-patch+json", json!({"metadata": {"finalizers": null}})).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    until(&router, crd_uri, |s, _| s == StatusCode::NOT_FOUND).await;
    let events = tokio::time::timeout(Duration::from_secs(20), ended).await.expect("the watch ended").expect("join").expect("body");
    assert!(events.contains("\"ADDED\""), "{events}");
    assert!(store.get("/registry/example.berth.dev/widgets/default/a", None).await.expect("get").is_none(), "the custom resources went with the CRD");
    let (status, _) = call(&router, "GET", widgets, "application/json", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, groups) = call(&router, "GET", "/apis", "application/json", Value::Null).await;
    assert!(!groups.to_string().contains("example.berth.dev"), "{groups}");
}

/// Server-side apply on custom resources merges lists as their schema says: a `map` list element
/// by element per manager (by its keys), a `set` as a union, an `atomic` list (the default) whole,
/// conflicting when another manager owns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_follows_the_schemas_list_types() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
    let api = Api::start(store.clone(), ApiConfig::default()).await.expect("api");
    let router = in_process(api.clone(), User::new("admin", &["system:masters"]));
    let mut def = crd();
    def["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] = json!({
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "protocol"],
            "items": {"type": "object", "required": ["name", "protocol"], "properties": {"name": {"type": "string"}, "protocol": {"type": "string"}, "port": {"type": "integer"}}}},
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "containers": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "image": {"type": "string"}}}}
    });
    let (status, body) = call(&router, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", def).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    until(&router, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.berth.dev", established).await;
    let uri = |manager: &str, force: bool| format!("/apis/example.berth.dev/v1/namespaces/default/widgets/w?fieldManager={manager}&force={force}");
    let apply = |manager: &'static str, spec: Value, force: bool| {
        let router = router.clone();
        let uri = uri(manager, force);
        async move {
            let body = json!({"apiVersion": "example.berth.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec});
            call(&router, "PATCH", &uri, "application/apply-patch+yaml", body).await
        }
    };
    let (status, w) = apply(
        "a",
        json!({"ports": [{"name": "http", "protocol": "TCP", "port": 80}], "tags": ["x"], "args": ["--a"], "containers": [{"name": "c", "image": "one"}]}),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let (status, w) = apply("b", json!({"ports": [{"name": "http", "protocol": "UDP", "port": 81}], "tags": ["y"]}), false).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(
        w["spec"]["ports"],
        json!([{"name": "http", "protocol": "TCP", "port": 80}, {"name": "http", "protocol": "UDP", "port": 81}]),
        "map elements of two managers, keyed by both keys"
    );
    assert_eq!(w["spec"]["tags"], json!(["x", "y"]), "a set is a union");
    let b = w["metadata"]["managedFields"].as_array().into_iter().flatten().find(|e| e["manager"] == "b").cloned().unwrap_or_default();
    assert!(b["fieldsV1"]["f:spec"]["f:ports"].get(r#"k:{"name":"http","protocol":"UDP"}"#).is_some(), "{b}");
    assert!(b["fieldsV1"]["f:spec"]["f:tags"].get(r#"v:"y""#).is_some(), "{b}");
    // an atomic list another manager owns: a conflict, unless forced
    let (status, err) = apply("b", json!({"args": ["--b"]}), false).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(err["message"].as_str().unwrap_or("").contains(r#"conflict with "a""#), "{err}");
    // a list of objects without a list type is atomic too, whatever its field is called
    let (status, err) = apply("b", json!({"containers": [{"name": "d", "image": "two"}]}), false).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, w) = apply("b", json!({"ports": [{"name": "http", "protocol": "UDP", "port": 81}], "tags": ["y"], "args": ["--b"]}), true).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["spec"]["args"], json!(["--b"]));
    // manager a drops its port and tag: only its own elements go
    let (status, w) = apply("a", json!({"containers": [{"name": "c", "image": "one"}]}), false).await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["spec"]["ports"], json!([{"name": "http", "protocol": "UDP", "port": 81}]), "{w}");
    assert_eq!(w["spec"]["tags"], json!(["y"]), "{w}");
    assert_eq!(w["spec"]["args"], json!(["--b"]));
    store.close().await;
}
