//! A DaemonSet's history as ControllerRevisions, as upstream keeps it (and `kubectl rollout
//! history|undo daemonset` reads it): each template it had is a revision `<ds>-<hash>` whose data
//! is the patch that restores it (`{"spec":{"template":{..., "$patch":"replace"}}}`), numbered in
//! order; going back to an older template renumbers its revision as the newest. Old revisions no
//! pod uses beyond revisionHistoryLimit (10) are deleted.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, PostParams};
use serde_json::{json, Value};

use super::pods::REVISION_HASH;
use crate::controller::owner;
use crate::deployment::util::template_hash;

/// The patch that restores the DaemonSet's current template.
pub fn data(ds: &DaemonSet) -> Value {
    let mut template = serde_json::to_value(ds.spec.as_ref().map(|s| &s.template)).unwrap_or(Value::Null);
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

fn data_of(r: &ControllerRevision) -> Value {
    r.data.as_ref().map(|d| d.0.clone()).unwrap_or(Value::Null)
}

/// The current revision (found or created) and the older ones, oldest first.
pub async fn sync(
    client: &kube::Client,
    ds: &DaemonSet,
    owned: Vec<Arc<ControllerRevision>>,
) -> Result<(ControllerRevision, Vec<Arc<ControllerRevision>>), String> {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let api: kube::Api<ControllerRevision> = kube::Api::namespaced(client.clone(), &ns);
    let want = data(ds);
    let max = owned.iter().map(|r| r.revision).max().unwrap_or(0);
    let (mut same, mut old): (Vec<Arc<ControllerRevision>>, Vec<Arc<ControllerRevision>>) = owned.into_iter().partition(|r| data_of(r) == want);
    same.sort_by_key(|r| r.revision);
    // duplicates of the current template: the newest stays
    let current = same.pop();
    for dup in same {
        if let Err(e) = api.delete(dup.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await {
            tracing::debug!(error = %e, "deleting a duplicate controller revision");
        }
    }
    old.sort_by_key(|r| r.revision);
    let current = match current {
        Some(c) if c.revision >= max => (*c).clone(),
        Some(c) => {
            // back to an older template: it becomes the newest revision
            let mut next = (*c).clone();
            next.revision = max + 1;
            api.replace(next.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), &next).await.map_err(|e| format!("renumbering a revision: {e}"))?
        }
        None => {
            let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
            let hash = template_hash(&template, ds.status.as_ref().and_then(|s| s.collision_count));
            let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(REVISION_HASH.into(), hash.clone());
            let revision = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{hash}", ds.metadata.name.as_deref().unwrap_or(""))),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner::controller_ref(ds)]),
                    ..Default::default()
                },
                data: Some(RawExtension(want)),
                revision: max + 1,
            };
            api.create(&PostParams::default(), &revision).await.map_err(|e| format!("creating a controller revision: {e}"))?
        }
    };
    Ok((current, old))
}

/// The hash of a revision (its label, or its name's suffix).
pub fn hash_of(r: &ControllerRevision, ds_name: &str) -> String {
    r.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH).cloned())
        .unwrap_or_else(|| r.metadata.name.as_deref().unwrap_or("").trim_start_matches(&format!("{ds_name}-")).to_string())
}

/// Deletes the oldest revisions beyond the limit that no live pod uses.
pub async fn cleanup(
    client: &kube::Client,
    ds: &DaemonSet,
    old: &[Arc<ControllerRevision>],
    in_use: &std::collections::BTreeSet<String>,
) -> Result<(), String> {
    let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
    let name = ds.metadata.name.as_deref().unwrap_or("");
    let unused: Vec<&Arc<ControllerRevision>> = old.iter().filter(|r| !in_use.contains(&hash_of(r, name))).collect();
    let extra = unused.len().saturating_sub(limit);
    let api: kube::Api<ControllerRevision> = kube::Api::namespaced(client.clone(), ds.metadata.namespace.as_deref().unwrap_or(""));
    for r in unused.into_iter().take(extra) {
        match api.delete(r.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("deleting an old controller revision: {e}")),
        }
    }
    Ok(())
}
