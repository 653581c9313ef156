//! Cascading deletion (`propagationPolicy`): what upstream's GC does after a delete, done by the
//! delete itself, so it holds in every configuration (also with the garbagecollector
//! controller turned off). The garbage collector of berth-control collects what this cannot
//! see: dependents whose owners were already gone when they were created or changed. Dependents are the objects whose
//! `ownerReferences` name the owner's uid (in the owner's namespace, or anywhere for a
//! cluster-scoped owner).
//!
//! - Foreground: the owner is marked (deletionTimestamp and the `foregroundDeletion` finalizer,
//!   one MODIFIED event as upstream), its dependents are deleted in the foreground too, and when
//!   none with blockOwnerDeletion is left the finalizer is removed, which deletes the owner.
//!   With no such dependents that happens at once: the state upstream's GC reaches a moment
//!   after the mark. Dependents that take longer than two minutes (a finalizer of their own),
//!   or a restart meanwhile, leave the owner marked: the garbage collector of berth-control
//!   finishes it from its graph, as upstream's does.
//! - Orphan: the owner is marked (deletionTimestamp and the `orphan` finalizer, so no controller
//!   adopts the dependents back meanwhile), its reference is removed from every dependent, then
//!   the finalizer, which deletes the owner (a restart in between: the garbage collector
//!   finishes it).
//! - Background (the default): the owner is deleted, then its dependents.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::delete::DeleteOptions;
use super::{Subresource, WriteOptions};
use crate::api::Api;
use crate::meta;
use crate::resources::Resource;
use crate::status::ApiError;

/// The finalizer of an owner waiting for its dependents to go.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner whose dependents are being orphaned.
pub const ORPHAN: &str = "orphan";
/// How long a foreground deletion waits for dependents that go slowly (pods on a node).
const DEPENDENTS_TIMEOUT: Duration = Duration::from_secs(120);

/// Dependents deleted at once.
const DELETE_CONCURRENCY: usize = 16;

/// The propagation policy of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    pub fn of(opts: &DeleteOptions) -> Result<Self, ApiError> {
        match opts.propagation_policy.as_deref() {
            None | Some("") if opts.orphan_dependents == Some(true) => Ok(Propagation::Orphan),
            None | Some("") | Some("Background") => Ok(Propagation::Background),
            Some("Foreground") => Ok(Propagation::Foreground),
            Some("Orphan") => Ok(Propagation::Orphan),
            Some(other) => Err(ApiError::invalid_kind(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                &[crate::status::FieldError::not_supported("propagationPolicy", other, &["Foreground", "Background", "Orphan", "nil"])],
            )),
        }
    }
}

/// One dependent: its resource, namespace and name, and whether its reference to the owner has
/// blockOwnerDeletion.
type Dependent = (Arc<Resource>, Option<String>, String, bool);

/// Whether an object's JSON mentions `uid` anywhere (the encoder writes UTF-8, searched with
/// the standard library's substring search, which every delete runs over every object of the
/// namespace; bytes that are not UTF-8 are searched window by window).
fn names_uid(json: &[u8], uid: &str) -> bool {
    match std::str::from_utf8(json) {
        Ok(text) => text.contains(uid),
        Err(_) => json.windows(uid.len()).any(|w| w == uid.as_bytes()),
    }
}

impl Api {
    /// The objects that name `owner` (of `res`) in their ownerReferences.
    pub(crate) fn dependents(&self, res: &Resource, owner: &Value) -> Vec<Dependent> {
        let Some(uid) = meta::get(owner, "uid").filter(|u| !u.is_empty()) else { return vec![] };
        let ns = if res.namespaced { meta::get(owner, "namespace") } else { None };
        let mut out = vec![];
        let registry = self.registry();
        // each storage once (a custom resource's versions share one), by a resource that
        // serves it as stored where there is one
        let mut seen = std::collections::HashSet::new();
        let stored = || registry.all().iter().filter(|r| !r.review && !r.resource_metrics);
        let stored_first = stored().filter(|r| r.view.is_none()).chain(stored().filter(|r| r.view.is_some()));
        for r in stored_first {
            if !seen.insert(r.storage) {
                continue;
            }
            let Ok(cache) = self.cache(r) else { continue };
            let (items, _) = cache.snapshot(&r.list_prefix(&self.store_prefix, ns));
            for cached in items {
                // only objects whose JSON names the uid at all are decoded
                if !names_uid(cached.encoded.item(), uid) {
                    continue;
                }
                let Ok(o) = cached.value() else { continue };
                let refs = o.pointer("/metadata/ownerReferences").and_then(Value::as_array);
                let Some(reference) = refs.and_then(|refs| refs.iter().find(|x| x["uid"] == uid)) else { continue };
                let blocks = reference["blockOwnerDeletion"] == json!(true);
                out.push((r.clone(), meta::get(&o, "namespace").map(String::from), meta::name(&o).to_string(), blocks));
            }
        }
        out
    }

    /// Removes the reference to the owner `uid` from each dependent (Orphan).
    pub(crate) async fn orphan(self: &Arc<Self>, dependents: &[Dependent], uid: &str) -> Result<(), ApiError> {
        for (r, ns, name, _) in dependents {
            let result = self
                .guaranteed_update(r, ns.as_deref(), name, Subresource::Main, &WriteOptions::default(), |current| {
                    let mut o = current.clone();
                    if let Some(refs) = o.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                        refs.retain(|x| x["uid"] != uid);
                    }
                    // no resourceVersion: a write in between (the garbage collector orphaning
                    // the same dependent, a controller) is read again and retried
                    if let Some(m) = o.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    Ok(o)
                })
                .await;
            match result {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes each dependent with `policy`, ignoring the ones already gone. A boxed future: a
    /// dependent's delete may cascade again.
    pub(crate) fn delete_dependents(self: Arc<Self>, dependents: Vec<Dependent>, policy: &'static str) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            use futures_util::stream::{self, StreamExt};
            let opts = DeleteOptions { propagation_policy: Some(policy.to_string()), ..Default::default() };
            // several at a time, as upstream's garbage collector works on many dependents at once
            stream::iter(dependents)
                .for_each_concurrent(DELETE_CONCURRENCY, |(r, ns, name, _)| {
                    let (me, opts) = (self.clone(), &opts);
                    async move {
                        if let Err(e) = me.delete(&r, ns.as_deref(), &name, opts).await {
                            if e.code != 404 {
                                tracing::warn!(resource = %r.qualified(), name, error = %e.message, "deleting a dependent failed");
                            }
                        }
                    }
                })
                .await;
        })
    }

    /// The rest of a foreground deletion of the marked `owner`: its dependents are deleted, and
    /// when none that blocks it is left the finalizer goes (and with it, when it was the last,
    /// the owner).
    pub(crate) async fn finish_foreground(self: &Arc<Self>, res: &Arc<Resource>, owner: &Value) {
        let deadline = tokio::time::Instant::now() + DEPENDENTS_TIMEOUT;
        let mut pause = Duration::from_millis(50);
        loop {
            let dependents = self.dependents(res, owner);
            if !dependents.iter().any(|d| d.3) {
                // the others are deleted too, without waiting for them (upstream's GC)
                if !dependents.is_empty() {
                    tokio::spawn(self.clone().delete_dependents(dependents, "Foreground"));
                }
                break;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::info!(resource = %res.qualified(), name = meta::name(owner), "blocking dependents still there; the garbage collector finishes the foreground deletion");
                return;
            }
            self.clone().delete_dependents(dependents, "Foreground").await;
            // dependents that go gracefully (pods on a node) take a while
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        self.remove_finalizer(res, owner, FOREGROUND).await;
    }

    /// Removes `finalizer` from the marked `owner` (the same object: its uid), which deletes it
    /// when it was the last.
    pub(crate) async fn remove_finalizer(self: &Arc<Self>, res: &Arc<Resource>, owner: &Value, finalizer: &str) {
        let uid = meta::get(owner, "uid").unwrap_or("").to_string();
        let result = self
            .guaranteed_update(res, meta::get(owner, "namespace"), meta::name(owner), Subresource::Main, &WriteOptions::default(), |current| {
                if meta::get(current, "uid") != Some(uid.as_str()) {
                    return Err(ApiError::not_found(res, meta::name(owner)));
                }
                let mut o = current.clone();
                if let Some(f) = o.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
                    f.retain(|x| x != &json!(finalizer));
                }
                // no resourceVersion: a controller's write in between is read again and
                // retried, not a conflict that leaves the finalizer (and the owner) forever
                if let Some(m) = o.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                Ok(o)
            })
            .await;
        if let Err(e) = result {
            if e.code != 404 {
                tracing::warn!(resource = %res.qualified(), name = meta::name(owner), finalizer, error = %e.message, "removing a deletion finalizer failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_uid;

    #[test]
    fn a_uid_is_found_anywhere_in_the_json_and_only_whole() {
        let uid = "0f6c5a8e-3b1d-4c2e-9a7f-1e2d3c4b5a69";
        let owned = format!(r#"{{"metadata":{{"name":"p","ownerReferences":[{{"kind":"ReplicaSet","uid":"{uid}"}}]}}}}"#);
        assert!(names_uid(owned.as_bytes(), uid));
        assert!(!names_uid(owned.as_bytes(), "0f6c5a8e-3b1d-4c2e-9a7f-1e2d3c4b5a6a"));
        assert!(!names_uid(br#"{"metadata":{"name":"p"}}"#, uid));
        // not UTF-8: still searched
        let mut bytes = vec![0xff, 0xfe];
        bytes.extend_from_slice(uid.as_bytes());
        assert!(names_uid(&bytes, uid));
        assert!(!names_uid(&bytes[..20], uid));
    }
}
