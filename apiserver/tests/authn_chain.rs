//! The authenticator chain as the HTTP adapter runs it, without TLS: what a request with no
//! credential, a client certificate, a good or bad bearer token, or a service account token gets;
//! the in-process door skips the chain.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth_apiserver::authn::token_file::StaticTokens;
use berth_apiserver::authn::ClientCertificate;
use berth_apiserver::{in_process, router, Api, ApiConfig, User};
use berth_store::{EmbeddedConfig, EmbeddedStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(router: &axum::Router, method: &str, uri: &str, cert: Option<User>, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    let mut req = req.body(body).expect("request");
    if let Some(u) = cert {
        req.extensions_mut().insert(ClientCertificate(u));
    }
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn whoami() -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
}

const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

#[tokio::test]
async fn the_chain_decides_who_asks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
    let mut config = ApiConfig::default();
    config.authn.static_tokens = StaticTokens::parse("tokens.csv", "tok-alice,alice,42,devs\n").expect("tokens");
    let api = Api::start(store.clone(), config).await.expect("api");
    let net = router(api.clone());
    let unauthorized =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401});

    // anonymous: public documents only
    assert_eq!(call(&net, "GET", "/api/v1/namespaces", None, None, Value::Null).await, (StatusCode::UNAUTHORIZED, unauthorized.clone()));
    for path in ["/version", "/api", "/apis/apps/v1", "/healthz", "/.well-known/openid-configuration", "/openid/v1/jwks"] {
        assert_eq!(call(&net, "GET", path, None, None, Value::Null).await.0, StatusCode::OK, "{path}");
    }
    // a bad token: 401 everywhere, unless a client certificate already said who it is
    assert_eq!(call(&net, "GET", "/version", None, Some("nope"), Value::Null).await, (StatusCode::UNAUTHORIZED, unauthorized.clone()));
    let admin = User::new("admin", &["system:masters"]);
    let (code, review) = call(&net, "POST", WHOAMI, Some(admin), Some("nope"), whoami()).await;
    assert_eq!(code, StatusCode::CREATED, "{review}");
    assert_eq!(review["status"]["userInfo"], json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]}));
    // a static token
    let (code, review) = call(&net, "POST", WHOAMI, None, Some("tok-alice"), whoami()).await;
    assert_eq!(code, StatusCode::CREATED, "{review}");
    assert_eq!(review["status"]["userInfo"], json!({"username": "alice", "uid": "42", "groups": ["devs", "system:authenticated"]}));

    // a service account token through the in-process door, then used over the network adapter
    let inproc = in_process(api.clone(), User::new("system:admin", &["system:masters", "system:authenticated"]));
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}});
    assert_eq!(call(&inproc, "POST", "/api/v1/namespaces/default/serviceaccounts", None, None, sa).await.0, StatusCode::CREATED);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}});
    let (code, answer) = call(&inproc, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", None, None, request).await;
    assert_eq!(code, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["spec"]["expirationSeconds"], 600);
    let token = answer["status"]["token"].as_str().expect("token").to_string();
    let (code, review) = call(&net, "POST", WHOAMI, None, Some(&token), whoami()).await;
    assert_eq!(code, StatusCode::CREATED, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "system:serviceaccount:default:robot");
    assert_eq!(review["status"]["userInfo"]["groups"], json!(["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]));
    // bound to a pod on a node the API does not know: the node's name only
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"}, "spec": {"serviceAccountName": "robot", "nodeName": "ghost", "containers": [{"name": "c", "image": "nginx"}]}});
    let (code, created) = call(&inproc, "POST", "/api/v1/namespaces/default/pods", None, None, pod).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p1"}}});
    let (code, answer) = call(&inproc, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", None, None, request).await;
    assert_eq!(code, StatusCode::CREATED, "{answer}");
    let bound = answer["status"]["token"].as_str().expect("token").to_string();
    let payload = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bound.split('.').nth(1).expect("payload")).expect("base64");
    let claims: Value = serde_json::from_slice(&payload).expect("claims");
    assert_eq!(claims["kubernetes.io"]["node"], json!({"name": "ghost"}), "{claims}");
    let (_, review) = call(&net, "POST", WHOAMI, None, Some(&bound), whoami()).await;
    let extra = &review["status"]["userInfo"]["extra"];
    assert_eq!(extra["authentication.kubernetes.io/node-name"], json!(["ghost"]), "{review}");
    assert!(extra.get("authentication.kubernetes.io/node-uid").is_none(), "{review}");
    // a name in the body that is not the service account's
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {"name": "other"}});
    let (code, answer) = call(&inproc, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", None, None, request).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        answer["message"],
        r#"TokenRequest.authentication.k8s.io "robot" is invalid: metadata.name: Invalid value: "other": must match the service account name if specified"#
    );

    // TokenReview for another audience: not authenticated, with the reason
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": ["vault"]}});
    let (code, review) = call(&inproc, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", None, None, tr).await;
    assert_eq!(code, StatusCode::CREATED, "{review}");
    assert!(review["status"]["authenticated"].is_null() && review["status"]["error"].as_str().is_some_and(|e| e.contains("audiences")), "{review}");
    // a token no authenticator recognises: not authenticated, no error (as upstream)
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "garbage"}});
    let (code, review) = call(&inproc, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", None, None, tr).await;
    assert_eq!((code, review["status"].clone()), (StatusCode::CREATED, json!({"user": {}})), "{review}");
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}});
    let (code, review) = call(&inproc, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", None, None, tr).await;
    assert_eq!((code, review["message"].as_str()), (StatusCode::BAD_REQUEST, Some("token is required for TokenReview in authentication.k8s.io/v1")));
    store.close().await;
}
