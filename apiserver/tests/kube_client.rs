//! kube-rs, the client Berth's controllers, scheduler and node agent are written against, over
//! the in-process door: typed get/list/create/patch and a kube-runtime watcher, no TCP.

use std::sync::Arc;
use std::time::Duration;

use berth_apiserver::{in_process, Api, ApiConfig, User};
use berth_store::{EmbeddedConfig, EmbeddedStore, Store};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

#[tokio::test]
async fn kube_rs_client_works_over_the_in_process_router() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
    let api = Api::start(store.clone(), ApiConfig { bookmark_interval: Duration::from_millis(200), ..Default::default() }).await.expect("api");
    let user = User::new("system:apiserver", &["system:masters", "system:authenticated"]);
    let client = kube::Client::new(in_process(api, user), "default");

    let cms: kube::Api<ConfigMap> = kube::Api::default_namespaced(client.clone());
    let mut events = watcher(cms.clone(), watcher::Config::default().timeout(5)).boxed();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "berth-kube"}, "data": {"a": "1"}})).expect("cm");
    cms.create(&PostParams::default(), &cm).await.expect("create");
    let got = cms.get("berth-kube").await.expect("get");
    assert_eq!(got.data.as_ref().and_then(|d| d.get("a")).map(String::as_str), Some("1"));
    let patched = cms.patch("berth-kube", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"b": "2"}}))).await.expect("patch");
    assert_eq!(patched.data.as_ref().map(|d| d.len()), Some(2));
    let applied = cms
        .patch(
            "berth-kube",
            &PatchParams::apply("berth-test").force(),
            &Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"c": "3"}})),
        )
        .await
        .expect("server-side apply");
    assert_eq!(applied.data.as_ref().map(|d| d.len()), Some(3));
    let err = cms.get("berth-missing").await.expect_err("missing");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.message, r#"configmaps "berth-missing" not found"#);
        }
        other => panic!("unexpected error {other}"),
    }

    // The watcher lists, then sees the object.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) if o.metadata.name.as_deref() == Some("berth-kube") => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true));

    let deployments: kube::Api<Deployment> = kube::Api::all(client);
    let list = deployments.list(&ListParams::default()).await.expect("list");
    assert!(list.items.is_empty());
    store.close().await;
}
