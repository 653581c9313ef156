//! delete and deletecollection: preconditions, finalizers (the object is marked with a
//! deletionTimestamp and goes when its finalizers are gone), graceful deletion of pods bound to a
//! node (the node agent finishes it), and namespaces: marked Terminating, and deleted at once
//! only when spec.finalizers and metadata.finalizers are empty; otherwise the namespace
//! controller (berth-control) empties them through the API and removes its `kubernetes`
//! finalizer with the `finalize` subresource, which deletes the namespace (`update.rs`).
//! Dependents (ownerReferences) follow the propagation policy (`cascade.rs`).

use std::sync::Arc;

use berth_store::StoreError;
use serde_json::{json, Value};

use super::cascade::{self, Propagation};
use super::{store_error, WriteOptions};
use crate::admission::{Attributes, Operation};
use crate::api::Api;
use crate::cache::decode_kv;
use crate::meta;
use crate::resources::Resource;
use crate::status::ApiError;

/// The DeleteOptions a client may send.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub preconditions: Option<Preconditions>,
    pub propagation_policy: Option<String>,
    /// The deprecated form of the policy (true: Orphan).
    pub orphan_dependents: Option<bool>,
    pub dry_run: Option<Vec<String>>,
    /// The caller (None: the server's own deletes), for admission; never read from a body.
    #[serde(skip)]
    pub user: Option<crate::User>,
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
        let key = res.key(&self.store_prefix, ns, name);
        let dry_run = opts.dry_run.as_ref().is_some_and(|d| d.iter().any(|x| x == "All"));
        let policy = Propagation::of(opts)?;
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
            let mut attrs = Attributes {
                operation: Operation::Delete,
                resource: res.clone(),
                subresource: String::new(),
                namespace: ns.filter(|_| res.namespaced).map(String::from),
                name: name.to_string(),
                object: None,
                old_object: Some(current.clone()),
                user: opts.user.clone(),
                dry_run,
                warnings: vec![],
                charged: vec![],
                reinvocation: Default::default(),
            };
            self.admission.admit(self, &mut attrs).await?;
            self.admission.validate(self, &mut attrs).await?;
            if dry_run {
                return Ok(current);
            }
            let has_finalizers = current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            let graceful = res.plural == "pods"
                && res.group.is_empty()
                && current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
                && opts.grace_period_seconds.or(current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30) > 0;
            let is_namespace = res.plural == "namespaces" && res.group.is_empty();
            let dependents = if is_namespace { vec![] } else { self.dependents(res, &current) };
            if policy == Propagation::Foreground && !graceful && !is_namespace && meta::get(&current, "deletionTimestamp").is_none() {
                let mut marked = current.clone();
                meta::set(&mut marked, "deletionTimestamp", json!(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                meta::set(&mut marked, "deletionGracePeriodSeconds", json!(0));
                let mut finalizers = marked.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
                if !finalizers.contains(&json!(cascade::FOREGROUND)) {
                    finalizers.push(json!(cascade::FOREGROUND));
                }
                meta::set(&mut marked, "finalizers", json!(finalizers));
                match self.store.update(&key, super::to_bytes(&marked)?, kv.mod_revision, res.ttl).await {
                    Ok(kv) => meta::set(&mut marked, "resourceVersion", json!(kv.mod_revision.to_string())),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(res, name, e)),
                }
                // nothing to wait for: the owner goes before the answer
                if !dependents.iter().any(|d| d.3) {
                    self.finish_foreground(res, &marked).await;
                } else {
                    let (me, res, owner) = (self.clone(), res.clone(), marked.clone());
                    tokio::spawn(async move { me.finish_foreground(&res, &owner).await });
                }
                return Ok(marked);
            }
            if policy == Propagation::Orphan && !dependents.is_empty() {
                let marks = !graceful && !is_namespace && meta::get(&current, "deletionTimestamp").is_none();
                if !marks {
                    self.orphan(&dependents, meta::get(&current, "uid").unwrap_or("")).await?;
                } else {
                    // marked first, so that no controller adopts the dependents back meanwhile
                    let mut marked = current.clone();
                    meta::set(&mut marked, "deletionTimestamp", json!(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    meta::set(&mut marked, "deletionGracePeriodSeconds", json!(0));
                    let mut finalizers = marked.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
                    if !finalizers.contains(&json!(cascade::ORPHAN)) {
                        finalizers.push(json!(cascade::ORPHAN));
                    }
                    meta::set(&mut marked, "finalizers", json!(finalizers));
                    match self.store.update(&key, super::to_bytes(&marked)?, kv.mod_revision, res.ttl).await {
                        Ok(kv) => meta::set(&mut marked, "resourceVersion", json!(kv.mod_revision.to_string())),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(store_error(res, name, e)),
                    }
                    self.orphan(&dependents, meta::get(&current, "uid").unwrap_or("")).await?;
                    self.remove_finalizer(res, &marked, cascade::ORPHAN).await;
                    return Ok(marked);
                }
            }
            // a CRD goes only after its custom resources (the CRD controller removes them)
            let is_crd = crate::crd::is_crd_resource(res);
            if has_finalizers || graceful || is_namespace || is_crd {
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
                if is_crd {
                    crate::crd::mark_terminating(&mut marked);
                }
                // a namespace without finalizers goes at once (upstream's namespace storage)
                let write = if is_namespace && super::update::finalized(res, &marked) {
                    self.store.delete(&key, Some(kv.mod_revision)).await.map(|d| d.revision)
                } else {
                    self.store.update(&key, super::to_bytes(&marked)?, kv.mod_revision, res.ttl).await.map(|kv| kv.mod_revision)
                };
                match write {
                    Ok(rev) => {
                        meta::set(&mut marked, "resourceVersion", json!(rev.to_string()));
                        return Ok(marked);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(res, name, e)),
                }
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(d) => {
                    if let Some(a) = self.allocations(res) {
                        a.on_delete(self, &current).await;
                    }
                    if policy == Propagation::Background && !dependents.is_empty() {
                        tokio::spawn(self.clone().delete_dependents(dependents, "Background"));
                    }
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
}

impl From<&DeleteOptions> for WriteOptions {
    fn from(d: &DeleteOptions) -> Self {
        WriteOptions { dry_run: d.dry_run.as_ref().is_some_and(|x| x.iter().any(|v| v == "All")), user: d.user.clone(), ..Default::default() }
    }
}
