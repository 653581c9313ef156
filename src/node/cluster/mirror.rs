//! Mirror pods: how the cluster sees this node's static pods (the manifest directory), as the
//! kubelet shows them. For each static pod the API holds a pod of the same namespace and name
//! (`<name>-<node>`), bound to this node, owned by its Node, annotated
//! `kubernetes.io/config.mirror: <config hash>`, with the static pod's status. The mirror is
//! only a view: the node never runs it (`pods` keeps mirrors out of the pods it runs), so
//! deleting it with kubectl stops nothing; the node makes it again (a new uid), as it does when
//! the manifest changed (the hash differs). A mirror whose manifest is gone is deleted.
//! Checked every second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::ClusterPods;
use crate::node::{manifest, NodeShared};

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
const PERIOD: Duration = Duration::from_secs(1);

/// Whether `pod` is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

/// The mirror of static pod `pod` on node `node`.
fn mirror_of(pod: &Pod, node: &Node) -> Pod {
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let hash = annotations.get(HASH_ANNOTATION).cloned().unwrap_or_default();
    annotations.insert(MIRROR_ANNOTATION.into(), hash);
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let mut spec = pod.spec.clone().unwrap_or_default();
    spec.node_name = Some(node_name.clone());
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            labels: pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node_name,
                uid: node.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Keeps the mirror pods until `stop` fires.
pub async fn run(client: kube::Client, node_name: String, shared: Arc<NodeShared>, pods: watch::Receiver<ClusterPods>, mut stop: watch::Receiver<bool>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node: Option<Node> = None;
    // status last written, by mirror uid
    let mut sent: BTreeMap<String, Value> = BTreeMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let cluster = pods.borrow().clone();
        if !cluster.synced {
            continue;
        }
        let Some(owner) = node.clone().or(nodes.get_opt(&node_name).await.ok().flatten()) else { continue };
        node = Some(owner.clone());
        let (dir, name) = (shared.cfg.manifest_dir.clone(), node_name.clone());
        let Ok(snapshot) = tokio::task::spawn_blocking(move || manifest::read_dir(&dir, &name)).await else { continue };
        let statuses = shared.statuses.read().await.clone();
        let mut wanted = BTreeMap::new();
        for (uid, sp) in &snapshot.pods {
            let key = (sp.pod.metadata.namespace.clone().unwrap_or_default(), sp.pod.metadata.name.clone().unwrap_or_default());
            wanted.insert(key.clone(), ());
            let api: Api<Pod> = Api::namespaced(client.clone(), &key.0);
            match cluster.mirrors.get(&key) {
                None => match api.create(&PostParams::default(), &mirror_of(&sp.pod, &owner)).await {
                    Ok(_) => tracing::info!(pod = %format!("{}/{}", key.0, key.1), "mirror pod created"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => tracing::warn!(pod = %format!("{}/{}", key.0, key.1), error = %e, "creating the mirror pod"),
                },
                Some(m) if m.metadata.deletion_timestamp.is_some() || annotation(m, MIRROR_ANNOTATION) != annotation(&sp.pod, HASH_ANNOTATION) => {
                    delete(&api, m).await;
                }
                Some(m) => {
                    let muid = m.metadata.uid.clone().unwrap_or_default();
                    let Some(status) = statuses.get(uid).and_then(|p| serde_json::to_value(p.status.as_ref()?).ok()) else { continue };
                    if sent.get(&muid) == Some(&status) {
                        continue;
                    }
                    let body = json!({"metadata": {"uid": muid}, "status": status});
                    match api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(body)).await {
                        Ok(_) => {
                            sent.insert(muid, status);
                        }
                        Err(e) => tracing::warn!(pod = %format!("{}/{}", key.0, key.1), error = %e, "writing the mirror pod's status"),
                    }
                }
            }
        }
        for (key, m) in &cluster.mirrors {
            if !wanted.contains_key(key) {
                delete(&Api::namespaced(client.clone(), &key.0), m).await;
            }
        }
        sent.retain(|uid, _| cluster.mirrors.values().any(|m| m.metadata.uid.as_deref() == Some(uid.as_str())));
    }
}

/// Deletes mirror `m` at once (its uid as precondition: a newer mirror of the same name stays).
async fn delete(api: &Api<Pod>, m: &Pod) {
    let name = m.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: m.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = name, "mirror pod deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = name, error = %e, "deleting the mirror pod"),
    }
}
