//! A controller's template history as ControllerRevisions, as upstream keeps it for DaemonSets
//! and StatefulSets (and `kubectl rollout history|undo` reads it): each template the owner had
//! is a revision `<owner>-<hash>` whose data is the patch that restores it
//! (`{"spec":{"template":{..., "$patch":"replace"}}}`), numbered in order; going back to an
//! older template renumbers its revision as the newest. Old revisions no pod uses beyond
//! revisionHistoryLimit (10) are deleted.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, PostParams};
use serde_json::{json, Value};

use crate::deployment::util::template_hash;

/// The label of pods and revisions naming their revision.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// What the history of one owner is made from.
pub struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub reference: OwnerReference,
    pub template: &'a PodTemplateSpec,
    pub collision_count: Option<i32>,
    pub history_limit: Option<i32>,
}

/// The patch that restores `template`.
pub fn data(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or(Value::Null);
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
    owner: &Owner<'_>,
    owned: Vec<Arc<ControllerRevision>>,
) -> Result<(ControllerRevision, Vec<Arc<ControllerRevision>>), String> {
    let api: kube::Api<ControllerRevision> = kube::Api::namespaced(client.clone(), owner.namespace);
    let want = data(owner.template);
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
            let hash = template_hash(owner.template, owner.collision_count);
            let mut labels = owner.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(REVISION_HASH.into(), hash.clone());
            let revision = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{hash}", owner.name)),
                    namespace: Some(owner.namespace.to_string()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner.reference.clone()]),
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
pub fn hash_of(r: &ControllerRevision, owner_name: &str) -> String {
    r.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH).cloned())
        .unwrap_or_else(|| r.metadata.name.as_deref().unwrap_or("").trim_start_matches(&format!("{owner_name}-")).to_string())
}

/// Deletes the oldest revisions beyond the limit that are not `in_use` (`in_use(revision)`).
pub async fn cleanup(
    client: &kube::Client,
    owner: &Owner<'_>,
    old: &[Arc<ControllerRevision>],
    in_use: impl Fn(&ControllerRevision) -> bool,
) -> Result<(), String> {
    let limit = owner.history_limit.unwrap_or(10).max(0) as usize;
    let unused: Vec<&Arc<ControllerRevision>> = old.iter().filter(|r| !in_use(r)).collect();
    let extra = unused.len().saturating_sub(limit);
    let api: kube::Api<ControllerRevision> = kube::Api::namespaced(client.clone(), owner.namespace);
    for r in unused.into_iter().take(extra) {
        match api.delete(r.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("deleting an old controller revision: {e}")),
        }
    }
    Ok(())
}
