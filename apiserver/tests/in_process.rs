//! The in-process door: the same router kubectl reaches over HTTPS, called as a tower service
//! with no TCP, over an embedded store in a temp dir.

use std::sync::Arc;

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
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn in_process_callers_use_the_same_router_without_tcp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
    let api = Api::start(store.clone(), ApiConfig::default()).await.expect("api");
    let user = User::new("system:apiserver", &["system:masters", "system:authenticated"]);
    let router = in_process(api.clone(), user);

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "berth-inproc"}, "data": {"a": "1"}});
    let (status, created) = call(&router, "POST", "/api/v1/namespaces/default/configmaps", "application/json", cm.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    let (status, dup) = call(&router, "POST", "/api/v1/namespaces/default/configmaps", "application/json", cm).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(dup["message"], r#"configmaps "berth-inproc" already exists"#);
    let (status, patched) =
        call(&router, "PATCH", "/api/v1/namespaces/default/configmaps/berth-inproc", "application/strategic-merge-patch+json", json!({"data": {"b": "2"}}))
            .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"], json!({"a": "1", "b": "2"}));
    let (status, list) = call(&router, "GET", "/api/v1/configmaps?labelSelector=", "application/json", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    // generateName, then deletecollection by label selector
    let gen = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "berth-gen-", "labels": {"batch": "x"}}});
    for _ in 0..3 {
        let (status, made) = call(&router, "POST", "/api/v1/namespaces/default/configmaps", "application/json", gen.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        assert!(made["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("berth-gen-") && n.len() == 15), "{made}");
    }
    let (status, deleted) = call(&router, "DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=batch%3Dx", "application/json", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["items"].as_array().map(Vec::len), Some(3));
    let (_, list) = call(&router, "GET", "/api/v1/namespaces/default/configmaps", "application/json", Value::Null).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "only berth-inproc is left");

    // Without a user (what the TLS door does for a client with no certificate): 401.
    let (status, body) = call(&berth_apiserver::router(api), "GET", "/api/v1/configmaps", "application/json", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["reason"], "Unauthorized");
    store.close().await;
}
