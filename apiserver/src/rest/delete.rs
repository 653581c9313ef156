//! delete and deletecollection: preconditions, finalizers (the object is marked with a
//! deletionTimestamp and goes when its finalizers are gone), graceful deletion of pods bound to a
//! node (the node agent finishes it), and namespaces: marked Terminating, then a finalizing step
//! removes every object in them and finally the namespace itself.

use std::sync::Arc;

use berth_store::{ListOptions, StoreError};
use serde_json::{json, Value};

use super::{store_error, WriteOptions};
use crate::api::Api;
use crate::cache::decode_kv;
use crate::meta;
use crate::resources::Resource;
use crate::status::ApiError;

/// How long after a namespace is marked Terminating its objects start being removed.
const NAMESPACE_FINALIZE_DELAY: std::time::Duration = std::time::Duration::from_millis(1500);

/// The DeleteOptions a client may send.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub preconditions: Option<Preconditions>,
    pub propagation_policy: Option<String>,
    pub dry_run: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Api {
    /// Deletes the object `name`; the answer is the object as it was deleted or as it is now
    /// marked for deletion.
    pub async fn delete(self: &Arc<Self>, res: &Arc<Resource>, ns: Option<&str>, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        if res.plural == "namespaces" && res.group.is_empty() && ["default", "kube-system", "kube-public"].contains(&name) {
            return Err(ApiError::forbidden(res, name, "this namespace may not be deleted"));
        }
        let key = res.key(&self.store_prefix, ns, name);
        let dry_run = opts.dry_run.as_ref().is_some_and(|d| d.iter().any(|x| x == "All"));
        for _ in 0..16 {
            let kv = self.store.get(&key, None).await.map_err(|e| store_error(res, name, e))?.ok_or_else(|| ApiError::not_found(res, name))?;
            let current = decode_kv(&kv).map_err(ApiError::internal)?;
            if let Some(p) = &opts.preconditions {
                let uid = meta::get(&current, "uid").unwrap_or("");
                if let Some(want) = p.uid.as_deref().filter(|u| *u != uid) {
                    return Err(ApiError::conflict_because(res, name, &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}")));
                }
                if let Some(want) = p.resource_version.as_deref().filter(|rv| *rv != kv.mod_revision.to_string()) {
                    return Err(ApiError::conflict_because(
                        res,
                        name,
                        &format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}", kv.mod_revision),
                    ));
                }
            }
            if dry_run {
                return Ok(current);
            }
            let has_finalizers = current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            let graceful = res.plural == "pods"
                && res.group.is_empty()
                && current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
                && opts.grace_period_seconds.or(current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30) > 0;
            let is_namespace = res.plural == "namespaces" && res.group.is_empty();
            if has_finalizers || graceful || is_namespace {
                if meta::get(&current, "deletionTimestamp").is_some() {
                    return Ok(current);
                }
                let grace = if graceful {
                    opts.grace_period_seconds.or(current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30)
                } else {
                    0
                };
                let mut marked = current.clone();
                let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                meta::set(&mut marked, "deletionTimestamp", json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                meta::set(&mut marked, "deletionGracePeriodSeconds", json!(grace));
                if is_namespace {
                    marked["status"] = json!({"phase": "Terminating"});
                }
                match self.store.update(&key, super::to_bytes(&marked)?, kv.mod_revision, res.ttl).await {
                    Ok(kv) => {
                        meta::set(&mut marked, "resourceVersion", json!(kv.mod_revision.to_string()));
                        if is_namespace {
                            let me = self.clone();
                            let ns_name = name.to_string();
                            tokio::spawn(async move {
                                // As upstream's namespace controller, start a moment later: a client
                                // deleting the namespace's objects itself right after (`kubectl delete
                                // -f` of a manifest with its namespace first) still finds them.
                                tokio::time::sleep(NAMESPACE_FINALIZE_DELAY).await;
                                me.finalize_namespace(&ns_name).await
                            });
                        }
                        return Ok(marked);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(res, name, e)),
                }
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(d) => {
                    let mut gone = current;
                    meta::set(&mut gone, "resourceVersion", json!(d.revision.to_string()));
                    return Ok(gone);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(res, name, e)),
            }
        }
        Err(ApiError::conflict(res, name))
    }

    /// Deletes every object `list` selects; the answer is the list of what was deleted.
    pub async fn delete_collection(
        self: &Arc<Self>,
        res: &Arc<Resource>,
        ns: Option<&str>,
        list: &super::ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let (items, _) = self.list(res, ns, list).await?;
        let mut out = vec![];
        for item in items {
            let item_ns = meta::get(&item, "namespace").map(String::from);
            match self.delete(res, item_ns.as_deref().or(ns), meta::name(&item), opts).await {
                Ok(o) => out.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes everything in a terminating namespace, then the namespace.
    pub(crate) async fn finalize_namespace(self: &Arc<Self>, ns: &str) {
        for res in self.registry.all().iter().filter(|r| r.namespaced) {
            let prefix = res.list_prefix(&self.store_prefix, Some(ns));
            loop {
                let page = match self.store.list(&prefix, ListOptions { limit: Some(500), ..Default::default() }).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(namespace = ns, error = %e, "finalizing the namespace failed; it stays Terminating until the next start");
                        return;
                    }
                };
                if page.kvs.is_empty() {
                    break;
                }
                for kv in page.kvs {
                    if let Err(e) = self.store.delete(&kv.key, None).await {
                        if !matches!(e, StoreError::NotFound { .. }) {
                            tracing::warn!(key = %kv.key, error = %e, "deleting a namespace's object failed");
                            return;
                        }
                    }
                }
            }
        }
        let Ok(namespaces) = self.resource("", "namespaces") else { return };
        let key = namespaces.key(&self.store_prefix, None, ns);
        match self.store.delete(&key, None).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => tracing::info!(namespace = ns, "namespace finalized"),
            Err(e) => tracing::warn!(namespace = ns, error = %e, "removing the finalized namespace failed"),
        }
    }

    /// Finishes namespaces left Terminating by an earlier run.
    pub(crate) async fn finalize_terminating_namespaces(self: &Arc<Self>) {
        let Ok(namespaces) = self.resource("", "namespaces") else { return };
        let Ok(page) = self.store.list(&namespaces.prefix(&self.store_prefix), ListOptions::default()).await else { return };
        for kv in page.kvs {
            let Ok(obj) = decode_kv(&kv) else { continue };
            if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
                let me = self.clone();
                let name = meta::name(&obj).to_string();
                tokio::spawn(async move { me.finalize_namespace(&name).await });
            }
        }
    }
}

impl From<&DeleteOptions> for WriteOptions {
    fn from(d: &DeleteOptions) -> Self {
        WriteOptions { dry_run: d.dry_run.as_ref().is_some_and(|x| x.iter().any(|v| v == "All")), ..Default::default() }
    }
}
