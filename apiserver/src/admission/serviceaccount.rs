//! ServiceAccount: a new pod runs as a service account (`default` when it names none) that must
//! exist, gets that account's imagePullSecrets when it has none, and, unless the pod or the account
//! turns automounting off, the projected `kube-api-access-<random>` volume (a bound token, the
//! cluster CA from the `kube-root-ca.crt` ConfigMap, the namespace) mounted read-only at
//! /var/run/secrets/kubernetes.io/serviceaccount in every container that does not mount that path
//! itself. Mirror pods may reference no service account.
//!
//! The controller half keeps what the plugin relies on (upstream's serviceaccount and root-ca-cert
//! publisher controllers): every active namespace has the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap, re-created when deleted and corrected when changed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{cached, cached_one, Attributes, Operation, Plugin};
use crate::api::Api;
use crate::rest::{Subresource, WriteOptions};
use crate::status::ApiError;

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token volume is mounted.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
/// The bound token's lifetime upstream asks for (an hour and seven seconds: tokens the kubelet
/// refreshes, marked so that stale ones are only warned about).
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

pub struct ServiceAccount;

impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    fn admit<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !a.is("", "pods") || a.operation != Operation::Create {
                return Ok(());
            }
            let Some(pod) = a.object.as_ref() else { return Ok(()) };
            let named = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
            if pod.pointer("/metadata/annotations").and_then(|m| m.get(MIRROR_ANNOTATION)).is_some() {
                if named.is_some() {
                    return Err(a.forbidden("a mirror pod may not reference service accounts"));
                }
                return Ok(());
            }
            let sa_name = named.unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
            let ns = a.namespace().to_string();
            let Some(sa) = lookup(api, &ns, &sa_name).await? else {
                return Err(a.forbidden(&format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found")));
            };
            let Some(pod) = a.object.as_mut() else { return Ok(()) };
            let spec = &mut pod["spec"];
            spec["serviceAccountName"] = json!(sa_name);
            spec["serviceAccount"] = json!(sa_name);
            if automount(spec, &sa) {
                mount_token(spec);
            }
            let has_pull_secrets = spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|l| !l.is_empty());
            if let Some(secrets) = sa.get("imagePullSecrets").filter(|s| s.as_array().is_some_and(|l| !l.is_empty()) && !has_pull_secrets) {
                spec["imagePullSecrets"] = secrets.clone();
            }
            Ok(())
        })
    }
}

/// The service account `ns/name`: from the cache, else from the store; the default account is
/// looked up again for a while, as its controller may be about to make it (a namespace created a
/// moment ago).
async fn lookup(api: &Api, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    if let Some(sa) = cached_one(api, "", "serviceaccounts", Some(ns), name) {
        return Ok(Some(sa));
    }
    let res = api.resource("", "serviceaccounts")?;
    let key = res.key(api.store_prefix(), Some(ns), name);
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT { 10 } else { 1 };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 + u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 100))).await;
        }
        if let Some(kv) = api.store.get(&key, None).await.map_err(|e| crate::rest::store_error(&res, name, e))? {
            return serde_json::from_slice(&kv.value).map(Some).map_err(ApiError::internal);
        }
    }
    Ok(None)
}

/// The pod's own automountServiceAccountToken wins over the account's; both absent: mount.
fn automount(spec: &Value, sa: &Value) -> bool {
    spec.get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true)
}

/// The projected volume upstream adds.
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 0o644,
        }
    })
}

/// Mounts the token volume (an existing `kube-api-access-*` one, else a new one) in every init
/// container and container that does not mount the token path, and adds the volume when one did.
fn mount_token(spec: &mut Value) {
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().filter_map(|v| v.get("name").and_then(Value::as_str)).find(|n| n.starts_with(VOLUME_PREFIX)).map(String::from));
    let name = existing.clone().unwrap_or_else(|| crate::meta::generate_name(VOLUME_PREFIX));
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let mounts = c.get("volumeMounts").and_then(Value::as_array);
            if mounts.is_some_and(|ms| ms.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH))) {
                continue;
            }
            if !c.get("volumeMounts").is_some_and(Value::is_array) {
                c["volumeMounts"] = json!([]);
            }
            if let Some(ms) = c["volumeMounts"].as_array_mut() {
                ms.push(mount.clone());
            }
            needed = true;
        }
    }
    if needed && existing.is_none() {
        if !spec.get("volumes").is_some_and(Value::is_array) {
            spec["volumes"] = json!([]);
        }
        if let Some(vs) = spec["volumes"].as_array_mut() {
            vs.push(token_volume(&name));
        }
    }
}

/// Runs [`reconcile`] at start and on every change of namespaces, service accounts and config maps.
pub fn spawn_controller(api: &Arc<Api>) {
    let caches: Vec<_> = ["namespaces", "serviceaccounts", "configmaps"]
        .iter()
        .filter_map(|p| api.resource("", p).ok())
        .filter_map(|r| api.cache(&r).ok())
        .map(|c| c.changes())
        .collect();
    let [mut namespaces, mut accounts, mut config_maps] = match <[_; 3]>::try_from(caches) {
        Ok(c) => c,
        Err(_) => return,
    };
    let weak = Arc::downgrade(api);
    tokio::spawn(
        async move {
            loop {
                {
                    let Some(api) = weak.upgrade() else { return };
                    reconcile(&api).await;
                }
                tokio::select! {
                    r = namespaces.changed() => if r.is_err() { return },
                    r = accounts.changed() => if r.is_err() { return },
                    r = config_maps.changed() => if r.is_err() { return },
                }
            }
        }
        .instrument(tracing::info_span!("serviceaccount_controller")),
    );
}

/// One pass: every active namespace gets what it lacks.
pub async fn reconcile(api: &Api) {
    let Ok(accounts) = api.resource("", "serviceaccounts") else { return };
    let Ok(config_maps) = api.resource("", "configmaps") else { return };
    for ns in cached(api, "", "namespaces", None) {
        if ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") || crate::meta::get(&ns, "deletionTimestamp").is_some() {
            continue;
        }
        let name = crate::meta::name(&ns).to_string();
        if cached_one(api, "", "serviceaccounts", Some(&name), DEFAULT_SERVICE_ACCOUNT).is_none() {
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": name}});
            match api.create(&accounts, Some(&name), sa, &WriteOptions::default()).await {
                Ok(_) | Err(ApiError { code: 409, .. }) => {}
                Err(e) => tracing::debug!(namespace = %name, error = %e, "creating the default service account failed"),
            }
        }
        let Some(ca) = api.config.ca_pem.as_deref() else { continue };
        let want = json!({"ca.crt": ca});
        match cached_one(api, "", "configmaps", Some(&name), ROOT_CA_CONFIG_MAP) {
            None => {
                let cm = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": name, "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                    "data": want,
                });
                match api.create(&config_maps, Some(&name), cm, &WriteOptions::default()).await {
                    Ok(_) | Err(ApiError { code: 409, .. }) => {}
                    Err(e) => tracing::debug!(namespace = %name, error = %e, "creating the root CA config map failed"),
                }
            }
            Some(cm) if cm.get("data") != Some(&want) => {
                let fixed = api
                    .guaranteed_update(&config_maps, Some(&name), ROOT_CA_CONFIG_MAP, Subresource::Main, &WriteOptions::default(), |current| {
                        let mut c = current.clone();
                        c["data"] = want.clone();
                        c.as_object_mut().map(|m| m.remove("binaryData"));
                        crate::meta::set(&mut c, "resourceVersion", Value::Null);
                        Ok(c)
                    })
                    .await;
                if let Err(e) = fixed {
                    tracing::debug!(namespace = %name, error = %e, "correcting the root CA config map failed");
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{api, attrs, create};

    #[test]
    fn mounts_the_token_volume_where_it_is_missing() {
        let mut spec = json!({
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}],
        });
        mount_token(&mut spec);
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1);
        let name = volumes[0]["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5, "{name}");
        assert_eq!(volumes[0], token_volume(name));
        assert_eq!(volumes[0]["projected"]["sources"][0]["serviceAccountToken"], json!({"expirationSeconds": 3607, "path": "token"}));
        let mount = json!([{"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}]);
        assert_eq!(spec["initContainers"][0]["volumeMounts"], mount);
        assert_eq!(spec["containers"][0]["volumeMounts"], mount);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn pods_get_the_default_account_and_an_existing_account_is_required() {
        let api = api().await;
        create(&api, "", "namespaces", None, json!({"metadata": {"name": "fresh"}})).await;
        // the controller makes the default account and the CA config map; the plugin waits for it
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let mut a = attrs(&api, Operation::Create, "", "pods", Some("fresh"), pod.clone());
        ServiceAccount.admit(&api, &mut a).await.unwrap();
        let p = a.object.unwrap();
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert!(p["spec"]["volumes"][0]["name"].as_str().unwrap().starts_with("kube-api-access-"));

        let mut none = pod.clone();
        none["spec"]["automountServiceAccountToken"] = json!(false);
        let mut a = attrs(&api, Operation::Create, "", "pods", Some("fresh"), none);
        ServiceAccount.admit(&api, &mut a).await.unwrap();
        assert!(a.object.unwrap()["spec"].get("volumes").is_none());

        let mut other = pod;
        other["spec"]["serviceAccountName"] = json!("robot");
        let mut a = attrs(&api, Operation::Create, "", "pods", Some("fresh"), other);
        let err = ServiceAccount.admit(&api, &mut a).await.unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (403, "pods \"p\" is forbidden: error looking up service account fresh/robot: serviceaccount \"robot\" not found")
        );

        let cms = api.resource("", "configmaps").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(cm) = api.get(&cms, Some("fresh"), ROOT_CA_CONFIG_MAP, None).await {
                assert_eq!(cm["data"], json!({"ca.crt": "CA"}));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no kube-root-ca.crt");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
