//! NamespaceLifecycle: no new objects in a namespace that does not exist (404 `namespaces "x" not
//! found`) or is being terminated (403 with a NamespaceTerminating cause); the namespaces the
//! cluster needs (default, kube-system, kube-public) may not be deleted. The namespace is read
//! from the store, not the cache, so one created just before is seen (upstream looks it up live
//! when its cache misses it).

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{Attributes, Operation, Plugin};
use crate::api::Api;
use crate::status::ApiError;

/// The namespaces upstream refuses to delete.
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

pub struct NamespaceLifecycle;

impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    fn admit<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let is_namespace = a.resource.group.is_empty() && a.resource.plural == "namespaces";
            if is_namespace {
                if a.operation == Operation::Delete && IMMORTAL_NAMESPACES.contains(&a.name.as_str()) {
                    return Err(ApiError::forbidden(&a.resource, &a.name, "this namespace may not be deleted"));
                }
                return Ok(());
            }
            if !a.resource.namespaced || a.operation == Operation::Delete || a.operation == Operation::Connect {
                return Ok(());
            }
            let Some(ns) = a.namespace.as_deref().filter(|n| !n.is_empty()) else { return Ok(()) };
            let Some(namespace) = lookup(api, ns).await? else {
                let namespaces = api.resource("", "namespaces")?;
                return Err(ApiError::not_found(&namespaces, ns));
            };
            if a.operation == Operation::Create && namespace.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
                let mut err = a.forbidden(&format!("unable to create new content in namespace {ns} because it is being terminated"));
                if let Some(d) = err.details.as_mut() {
                    d["causes"] =
                        json!([{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
                }
                return Err(err);
            }
            Ok(())
        })
    }
}

/// The namespace `ns` as stored now.
async fn lookup(api: &Api, ns: &str) -> Result<Option<Value>, ApiError> {
    let namespaces = api.resource("", "namespaces")?;
    let key = namespaces.key(api.store_prefix(), None, ns);
    let kv = api.store.get(&key, None).await.map_err(|e| crate::rest::store_error(&namespaces, ns, e))?;
    kv.map(|kv| serde_json::from_slice(&kv.value).map_err(ApiError::internal)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{api, attrs};

    #[tokio::test]
    async fn refuses_content_in_missing_and_terminating_namespaces() {
        let api = api().await;
        let mut a = attrs(&api, Operation::Create, "", "pods", Some("nowhere"), json!({"metadata": {"name": "p"}}));
        let err = NamespaceLifecycle.admit(&api, &mut a).await.unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (404, "namespaces \"nowhere\" not found"));

        crate::admission::testing::create(&api, "", "namespaces", None, json!({"metadata": {"name": "gone"}})).await;
        let res = api.resource("", "namespaces").unwrap();
        api.delete(&res, None, "gone", &Default::default()).await.unwrap();
        let mut a = attrs(&api, Operation::Create, "", "configmaps", Some("gone"), json!({"metadata": {"name": "c"}}));
        let err = NamespaceLifecycle.admit(&api, &mut a).await.unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(err.message, "configmaps \"c\" is forbidden: unable to create new content in namespace gone because it is being terminated");
        let mut a = attrs(&api, Operation::Create, "", "configmaps", Some("default"), json!({"metadata": {"name": "c"}}));
        NamespaceLifecycle.admit(&api, &mut a).await.unwrap();
    }

    #[tokio::test]
    async fn immortal_namespaces_may_not_be_deleted() {
        let api = api().await;
        for ns in IMMORTAL_NAMESPACES {
            let mut a = attrs(&api, Operation::Delete, "", "namespaces", None, Value::Null);
            a.name = ns.to_string();
            a.object = None;
            let err = NamespaceLifecycle.admit(&api, &mut a).await.unwrap_err();
            assert_eq!(err.code, 403);
            assert_eq!(err.message, format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted"));
        }
    }
}
