//! NodeRestriction: what a node (user `system:node:<name>` in `system:nodes`) may write, as
//! upstream's plugin limits it, so that one node's credentials cannot touch another node or
//! its pods:
//!
//! - Nodes (and their status): only its own Node; it may not set labels under
//!   `node-restriction.kubernetes.io/`.
//! - Pods: it creates only mirror pods (the `kubernetes.io/config.mirror` annotation), bound to
//!   itself, owned by nothing but its own Node, referencing no service account, Secret,
//!   ConfigMap or claim; it updates no pod spec; it deletes, evicts and writes the status of
//!   only the pods bound to it.
//! - Leases in kube-node-lease: only the one named after it.
//!
//! Refusals carry upstream's words (`nodes "a" is forbidden: node "b" is not allowed to modify
//! node "a"`). Other users pass untouched.

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::api::Api;
use crate::status::ApiError;

const NODE_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";
const MIRROR: &str = "kubernetes.io/config.mirror";
const RESTRICTED_LABELS: &str = "node-restriction.kubernetes.io/";

pub struct NodeRestriction;

/// The node a request comes from, when it comes from one.
fn requesting_node(a: &Attributes) -> Option<String> {
    let u = a.user.as_ref()?;
    let name = u.name.strip_prefix(NODE_PREFIX)?;
    (u.groups.iter().any(|g| g == NODES_GROUP) && !name.is_empty()).then(|| name.to_string())
}

fn node_name_of(pod: Option<&Value>) -> &str {
    pod.and_then(|p| p.pointer("/spec/nodeName")).and_then(Value::as_str).unwrap_or("")
}

impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    fn validate<'a>(&'a self, _api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(node) = requesting_node(a) else { return Ok(()) };
            match (a.resource.group, a.resource.plural) {
                ("", "pods") => admit_pod(a, &node),
                ("", "nodes") => admit_node(a, &node),
                ("coordination.k8s.io", "leases") if a.namespace() == "kube-node-lease" => {
                    if a.name != node {
                        return Err(a.forbidden(&format!("node {node:?} can only access node lease with the same name as the requesting node")));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })
    }
}

fn admit_pod(a: &Attributes, node: &str) -> Result<(), ApiError> {
    match (a.subresource.as_str(), a.operation) {
        ("", Operation::Create) => {
            let pod = a.object.as_ref();
            let annotated = pod.and_then(|p| p.pointer("/metadata/annotations")).and_then(|m| m.get(MIRROR)).is_some();
            if !annotated {
                return Err(a.forbidden(&format!("pod does not have \"{MIRROR}\" annotation, node {node:?} can only create mirror pods")));
            }
            if node_name_of(pod) != node {
                return Err(a.forbidden(&format!("node {node:?} can only create pods with spec.nodeName set to itself")));
            }
            let owners = pod.and_then(|p| p.pointer("/metadata/ownerReferences")).and_then(Value::as_array).cloned().unwrap_or_default();
            if owners.len() > 1
                || owners.iter().any(|o| o.get("kind").and_then(Value::as_str) != Some("Node") || o.get("name").and_then(Value::as_str) != Some(node))
            {
                return Err(a.forbidden(&format!("node {node:?} can only create pods with an owner reference set to itself")));
            }
            let spec = pod.and_then(|p| p.get("spec"));
            if spec.and_then(|s| s.get("serviceAccountName")).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                return Err(a.forbidden(&format!("node {node:?} can not create pods that reference a service account")));
            }
            for v in spec.and_then(|s| s.get("volumes")).and_then(Value::as_array).into_iter().flatten() {
                for (kind, what) in [("secret", "secrets"), ("configMap", "configmaps"), ("persistentVolumeClaim", "persistentvolumeclaims")] {
                    if v.get(kind).is_some() {
                        return Err(a.forbidden(&format!("node {node:?} can not create pods that reference {what}")));
                    }
                }
            }
            Ok(())
        }
        ("", Operation::Delete) | ("eviction", _) => {
            if node_name_of(a.old_object.as_ref()) != node {
                let verb = if a.subresource == "eviction" { "evict" } else { "delete" };
                return Err(a.forbidden(&format!("node {node:?} can only {verb} pods with spec.nodeName set to itself")));
            }
            Ok(())
        }
        ("status", _) => {
            if node_name_of(a.old_object.as_ref()) != node {
                return Err(a.forbidden(&format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself")));
            }
            Ok(())
        }
        ("", op) => Err(a.forbidden(&format!("unexpected operation {:?}, node {node:?} can only create and delete mirror pods", op.as_str()))),
        _ => Ok(()),
    }
}

fn admit_node(a: &Attributes, node: &str) -> Result<(), ApiError> {
    if a.name != node {
        return Err(a.forbidden(&format!("node {node:?} is not allowed to modify node {:?}", a.name)));
    }
    let labels = |o: Option<&Value>| -> Vec<(String, String)> {
        o.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
            .unwrap_or_default()
    };
    let before = labels(a.old_object.as_ref());
    let mut forbidden: Vec<String> = labels(a.object.as_ref())
        .into_iter()
        .filter(|(k, v)| {
            (k.starts_with(RESTRICTED_LABELS) || k.split('/').next().is_some_and(|d| d.ends_with(".node-restriction.kubernetes.io")))
                && !before.contains(&(k.clone(), v.clone()))
        })
        .map(|(k, _)| k)
        .collect();
    if !forbidden.is_empty() {
        forbidden.sort();
        return Err(a.forbidden(&format!("is not allowed to modify labels: {}", forbidden.join(", "))));
    }
    Ok(())
}
