//! The Node authorizer: what a kubelet's credential (user `system:node:<name>` in group
//! `system:nodes`) may do, as upstream's node authorizer decides it. A node reads a Secret,
//! ConfigMap, PersistentVolumeClaim (and its PersistentVolume) only when a pod bound to it uses
//! it, asks for a token only for the service account of one of its pods, reads and writes only
//! its own Lease in kube-node-lease, lists and watches only its own pods (a `spec.nodeName`
//! field selector). Everything else a node does is judged by the `system:node` rules of the
//! bootstrap policy (register its Node, write pod status, events, mirror pods, CSRs, reviews);
//! which object a write touches is NodeRestriction's business (`crate::admission`).
//!
//! Upstream keeps a graph of pods and what they use; here the pods bound to the node are read
//! from the pods' watch cache and what each uses ([`PodRefs`]) is worked out once per revision.

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::attributes::{Attributes, ResourceTarget};
use super::rule::Rule;
use crate::api::Api;
use crate::User;

/// The group of node credentials.
pub const NODES_GROUP: &str = "system:nodes";

/// The node a user is the kubelet of, when it is one (upstream's NodeIdentity).
pub fn node_name(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// What a pod uses, by name in its namespace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodRefs {
    pub node_name: String,
    pub namespace: String,
    pub service_account: String,
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
    pub claims: Vec<String>,
}

/// The ConfigMaps, Secrets, PersistentVolumeClaims and service account a pod uses: volumes
/// (incl. projected sources and generic ephemeral volumes' claims), env and envFrom of every
/// container (init and ephemeral too) and imagePullSecrets.
pub fn pod_references(pod: &Pod) -> PodRefs {
    let mut refs = PodRefs { namespace: pod.metadata.namespace.clone().unwrap_or_default(), ..Default::default() };
    let Some(spec) = &pod.spec else { return refs };
    refs.node_name = spec.node_name.clone().unwrap_or_default();
    refs.service_account = spec.service_account_name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "default".into());
    let add = |list: &mut Vec<String>, name: &str| {
        if !name.is_empty() && !list.iter().any(|n| n == name) {
            list.push(name.to_string());
        }
    };
    for s in spec.image_pull_secrets.iter().flatten() {
        add(&mut refs.secrets, &s.name);
    }
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            add(&mut refs.config_maps, &cm.name);
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            add(&mut refs.secrets, s);
        }
        if let Some(c) = &v.persistent_volume_claim {
            add(&mut refs.claims, &c.claim_name);
        }
        if v.ephemeral.is_some() {
            add(&mut refs.claims, &format!("{pod_name}-{}", v.name));
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                add(&mut refs.config_maps, &cm.name);
            }
            if let Some(s) = &src.secret {
                add(&mut refs.secrets, &s.name);
            }
        }
        // volume plugins that name a secret
        for name in [
            v.azure_file.as_ref().map(|a| a.secret_name.clone()),
            v.cephfs.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.clone()),
            v.cinder.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.clone()),
            v.flex_volume.as_ref().and_then(|f| f.secret_ref.as_ref()).map(|r| r.name.clone()),
            v.rbd.as_ref().and_then(|r| r.secret_ref.as_ref()).map(|r| r.name.clone()),
            v.iscsi.as_ref().and_then(|i| i.secret_ref.as_ref()).map(|r| r.name.clone()),
            v.scale_io.as_ref().map(|s| s.secret_ref.name.clone()),
            v.storageos.as_ref().and_then(|s| s.secret_ref.as_ref()).map(|r| r.name.clone()),
            v.csi.as_ref().and_then(|c| c.node_publish_secret_ref.as_ref()).map(|r| r.name.clone()),
        ]
        .into_iter()
        .flatten()
        {
            add(&mut refs.secrets, &name);
        }
    }
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let envs = containers.map(|c| (&c.env, &c.env_from)).chain(spec.ephemeral_containers.iter().flatten().map(|c| (&c.env, &c.env_from)));
    for (env, env_from) in envs {
        for e in env.iter().flatten() {
            let from = e.value_from.as_ref();
            if let Some(k) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
                add(&mut refs.config_maps, &k.name);
            }
            if let Some(k) = from.and_then(|f| f.secret_key_ref.as_ref()) {
                add(&mut refs.secrets, &k.name);
            }
        }
        for f in env_from.iter().flatten() {
            if let Some(cm) = &f.config_map_ref {
                add(&mut refs.config_maps, &cm.name);
            }
            if let Some(s) = &f.secret_ref {
                add(&mut refs.secrets, &s.name);
            }
        }
    }
    refs
}

/// What the node authorizer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not for this authorizer, or refused, with upstream's reason ("" when none).
    NoOpinion(String),
}

/// The rules of the bootstrap `system:node` ClusterRole, compiled once.
fn node_rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        super::bootstrap_policy::cluster_roles()
            .into_iter()
            .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some("system:node"))
            .filter_map(|r| serde_json::from_value::<k8s_openapi::api::rbac::v1::ClusterRole>(r).ok())
            .flat_map(|r| r.rules.unwrap_or_default())
            .map(|r| Rule::from(&r))
            .collect()
    })
}

/// Judges a request by a node's credential; NoOpinion("") for everyone else.
pub fn authorize(api: &Api, a: &Attributes) -> Decision {
    let Some(node) = node_name(&a.user) else { return Decision::NoOpinion(String::new()) };
    if node.is_empty() {
        return Decision::NoOpinion("unknown node".into());
    }
    if let Some(r) = a.resource_target() {
        let special = match (r.group.as_str(), r.resource.as_str()) {
            ("", "secrets") => Some(read_namespaced(api, node, &a.verb, r, Uses::Secret)),
            ("", "configmaps") => Some(read_namespaced(api, node, &a.verb, r, Uses::ConfigMap)),
            ("", "persistentvolumeclaims") => Some(get_only(api, node, &a.verb, r, Uses::Claim)),
            ("", "persistentvolumes") => Some(get_only(api, node, &a.verb, r, Uses::Volume)),
            ("", "serviceaccounts") => Some(create_token(api, node, &a.verb, r)),
            ("coordination.k8s.io", "leases") => Some(lease(node, &a.verb, r)),
            ("", "pods") if r.subresource.is_empty() && (a.verb == "list" || a.verb == "watch") => Some(list_pods(node, r)),
            _ => None,
        };
        if let Some(d) = special {
            return d;
        }
    }
    if node_rules().iter().any(|rule| rule.allows(a)) {
        Decision::Allow
    } else {
        Decision::NoOpinion(String::new())
    }
}

#[derive(Clone, Copy)]
enum Uses {
    Secret,
    ConfigMap,
    Claim,
    Volume,
    ServiceAccount,
}

fn no_relationship(node: &str) -> Decision {
    Decision::NoOpinion(format!("no relationship found between node '{node}' and this object"))
}

fn read_namespaced(api: &Api, node: &str, verb: &str, r: &ResourceTarget, what: Uses) -> Decision {
    if !matches!(verb, "get" | "list" | "watch") {
        return Decision::NoOpinion("can only read resources of this type".into());
    }
    if !r.subresource.is_empty() {
        return Decision::NoOpinion("cannot read subresource".into());
    }
    if r.namespace.is_empty() {
        return Decision::NoOpinion("can only read namespaced object of this type".into());
    }
    related(api, node, r, what)
}

fn get_only(api: &Api, node: &str, verb: &str, r: &ResourceTarget, what: Uses) -> Decision {
    if verb != "get" {
        return Decision::NoOpinion("can only get individual resources of this type".into());
    }
    if !r.subresource.is_empty() {
        return Decision::NoOpinion("cannot get subresource".into());
    }
    related(api, node, r, what)
}

fn create_token(api: &Api, node: &str, verb: &str, r: &ResourceTarget) -> Decision {
    if verb != "create" || r.name.is_empty() {
        return Decision::NoOpinion("can only create tokens for individual service accounts".into());
    }
    if r.subresource != "token" {
        return Decision::NoOpinion("can only create token subresource of serviceaccount".into());
    }
    related(api, node, r, Uses::ServiceAccount)
}

fn lease(node: &str, verb: &str, r: &ResourceTarget) -> Decision {
    if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
        return Decision::NoOpinion("can only get, create, update, patch, or delete a node lease".into());
    }
    if r.namespace != "kube-node-lease" {
        return Decision::NoOpinion("can only access leases in the \"kube-node-lease\" system namespace".into());
    }
    if verb != "create" && r.name != node {
        return Decision::NoOpinion("can only access node lease with the same name as the requesting node".into());
    }
    Decision::Allow
}

fn list_pods(node: &str, r: &ResourceTarget) -> Decision {
    if r.required_field("spec.nodeName").as_deref() == Some(node) {
        Decision::Allow
    } else {
        Decision::NoOpinion("can only list/watch pods with spec.nodeName field selector".into())
    }
}

/// Whether a pod bound to `node` uses the object `r` names.
fn related(api: &Api, node: &str, r: &ResourceTarget, what: Uses) -> Decision {
    if r.name.is_empty() {
        return Decision::NoOpinion("No Object name found".into());
    }
    let pods = pods_on(api, node);
    let uses = |p: &PodRefs, ns: &str, name: &str| {
        p.namespace == ns
            && match what {
                Uses::Secret => p.secrets.iter().any(|s| s == name),
                Uses::ConfigMap => p.config_maps.iter().any(|s| s == name),
                Uses::Claim => p.claims.iter().any(|s| s == name),
                Uses::ServiceAccount => p.service_account == name,
                Uses::Volume => false,
            }
    };
    let found = match what {
        Uses::Volume => pods.iter().any(|p| p.claims.iter().any(|c| claim_volume(api, &p.namespace, c).as_deref() == Some(r.name.as_str()))),
        _ => pods.iter().any(|p| uses(p, &r.namespace, &r.name)),
    };
    if found {
        Decision::Allow
    } else {
        no_relationship(node)
    }
}

/// What the pods bound to `node` use.
fn pods_on(api: &Api, node: &str) -> Vec<Arc<PodRefs>> {
    let Ok(res) = api.resource("", "pods") else { return vec![] };
    let Ok(cache) = api.cache(&res) else { return vec![] };
    cache
        .snapshot(&res.prefix(api.store_prefix()))
        .0
        .into_iter()
        .filter(|o| o.selectable(&res).and_then(|s| s.field("spec.nodeName")).as_deref() == Some(node))
        .filter_map(|o| o.typed(|v| serde_json::from_value::<Pod>(v).ok().map(|p| pod_references(&p))))
        .collect()
}

/// The PersistentVolume a claim is bound to.
fn claim_volume(api: &Api, namespace: &str, claim: &str) -> Option<String> {
    let res = api.resource("", "persistentvolumeclaims").ok()?;
    let cache = api.cache(&res).ok()?;
    let obj = cache.get(&res.key(api.store_prefix(), Some(namespace), claim))?;
    obj.value().ok()?.pointer("/spec/volumeName").and_then(Value::as_str).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_identity_needs_the_name_prefix_and_the_group() {
        assert_eq!(node_name(&User::new("system:node:n1", &["system:nodes"])), Some("n1"));
        assert_eq!(node_name(&User::new("system:node:n1", &["system:authenticated"])), None);
        assert_eq!(node_name(&User::new("n1", &["system:nodes"])), None);
    }

    #[test]
    fn a_pod_uses_what_its_volumes_env_and_pull_secrets_name() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "nodeName": "n1",
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}
                ], "envFrom": [{"configMapRef": {"name": "from-cm"}}]}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
                "volumes": [
                    {"name": "v1", "secret": {"secretName": "vol-secret"}},
                    {"name": "v2", "configMap": {"name": "vol-cm"}},
                    {"name": "v3", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "v4", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}, {"secret": {"name": "proj-secret"}}]}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}}
                ]
            }
        }))
        .expect("pod");
        let r = pod_references(&pod);
        assert_eq!(r.node_name, "n1");
        assert_eq!(r.service_account, "default");
        assert_eq!(r.secrets, vec!["pull", "vol-secret", "proj-secret", "env-secret", "init-secret"]);
        assert_eq!(r.config_maps, vec!["vol-cm", "kube-root-ca.crt", "env-cm", "from-cm"]);
        assert_eq!(r.claims, vec!["data", "p-scratch"]);
    }

    #[test]
    fn leases_only_the_nodes_own_in_kube_node_lease() {
        let t = |ns: &str, name: &str| ResourceTarget {
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        assert_eq!(lease("n1", "update", &t("kube-node-lease", "n1")), Decision::Allow);
        assert_eq!(lease("n1", "create", &t("kube-node-lease", "")), Decision::Allow);
        assert!(matches!(lease("n1", "update", &t("kube-node-lease", "n2")), Decision::NoOpinion(_)));
        assert!(matches!(lease("n1", "get", &t("default", "n1")), Decision::NoOpinion(_)));
        assert!(matches!(lease("n1", "list", &t("kube-node-lease", "")), Decision::NoOpinion(_)));
    }

    #[test]
    fn pods_are_listed_only_by_the_nodes_name() {
        let t = |sel: &str| ResourceTarget { resource: "pods".into(), field_selector: sel.into(), ..Default::default() };
        assert_eq!(list_pods("n1", &t("spec.nodeName=n1")), Decision::Allow);
        assert!(matches!(list_pods("n1", &t("spec.nodeName=n2")), Decision::NoOpinion(_)));
        assert!(matches!(list_pods("n1", &t("")), Decision::NoOpinion(_)));
    }
}
