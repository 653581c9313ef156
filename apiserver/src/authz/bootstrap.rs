//! Reconciles the bootstrap policy ([`super::bootstrap_policy`]) at every start, as upstream's
//! RBAC post-start hook does: a missing role or binding is created; one that exists and does
//! not carry `rbac.authorization.kubernetes.io/autoupdate: "false"` gets what it lacks (the
//! missing rules, or for an aggregated role the missing selectors, whose rules the aggregation
//! controller fills; the missing subjects of a binding; the policy's labels and annotations).
//! A binding whose roleRef differs is deleted and created again (a roleRef cannot change).
//! Nothing a user added is taken away. Berth's own bindings for joining nodes by token
//! ([`join_bindings`]) and the resource metrics API's role ([`metrics_roles`]) are reconciled
//! the same way.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::rbac::GROUP;
use super::rule::{uncovered, Rule};
use crate::api::Api;
use crate::rest::delete::DeleteOptions;
use crate::rest::{Subresource, WriteOptions};
use crate::status::ApiError;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Creates and updates the bootstrap roles and bindings.
pub async fn reconcile(api: &Arc<Api>) -> Result<(), ApiError> {
    let kinds: [(&str, Vec<Value>); 4] = [
        ("clusterroles", super::bootstrap_policy::cluster_roles().into_iter().chain(metrics_roles(api)).collect()),
        ("roles", super::bootstrap_policy::roles()),
        ("clusterrolebindings", super::bootstrap_policy::cluster_role_bindings().into_iter().chain(join_bindings()).collect()),
        ("rolebindings", super::bootstrap_policy::role_bindings()),
    ];
    let mut changed = 0;
    for (plural, objects) in kinds {
        let res = api.resource(GROUP, plural)?;
        for expected in objects {
            let name = crate::meta::name(&expected).to_string();
            let ns = crate::meta::get(&expected, "namespace").map(String::from);
            let current = match api.get(&res, ns.as_deref(), &name, None).await {
                Ok(v) => Some(v),
                Err(e) if e.code == 404 => None,
                Err(e) => return Err(e),
            };
            let Some(current) = current else {
                match api.create(&res, ns.as_deref(), expected, &WriteOptions::default()).await {
                    Ok(_) | Err(ApiError { code: 409, .. }) => changed += 1,
                    Err(e) => return Err(e),
                }
                continue;
            };
            if current.pointer(&format!("/metadata/annotations/{}", AUTOUPDATE.replace('/', "~1"))).and_then(Value::as_str) == Some("false") {
                continue;
            }
            let binding = plural.ends_with("bindings");
            if binding && current.get("roleRef") != expected.get("roleRef") {
                api.delete(&res, ns.as_deref(), &name, &DeleteOptions::default()).await?;
                api.create(&res, ns.as_deref(), expected, &WriteOptions::default()).await?;
                changed += 1;
                continue;
            }
            let updated = if binding { merged_binding(&current, &expected) } else { merged_role(&current, &expected) };
            if updated != current {
                match api.update(&res, ns.as_deref(), &name, updated, Subresource::Main, &WriteOptions::default()).await {
                    Ok(_) => changed += 1,
                    Err(e) if e.code == 409 => tracing::info!(%name, "changed meanwhile; reconciled at the next start"),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    tracing::info!(changed, "bootstrap RBAC policy reconciled");
    Ok(())
}

/// The roles the resource metrics API brings, when it is served.
fn metrics_roles(api: &Api) -> Vec<Value> {
    if api.resource_metrics.is_some() {
        crate::metrics::cluster_roles()
    } else {
        vec![]
    }
}

/// The bindings that let nodes join by token, as an installer adds them (kubeadm's
/// `kubeadm:kubelet-bootstrap` and node-autoapprove bindings): bootstrap tokens may ask for a
/// node client certificate and have it approved, nodes may renew their own. A Berth node agent
/// is also its node's service proxy and cluster DNS, with its node credential: the nodes get
/// kube-proxy's role (`system:node-proxier`: list and watch Services and EndpointSlices), as an
/// installer binds it to kube-proxy's credential.
fn join_bindings() -> Vec<Value> {
    let binding = |name: &str, role: &str, group: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "berth"}, "annotations": {AUTOUPDATE: "true"}},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": group}]
        })
    };
    vec![
        binding("berth:kubelet-bootstrap", "system:node-bootstrapper", crate::authn::bootstrap::GROUP),
        binding("berth:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", crate::authn::bootstrap::GROUP),
        binding(
            "berth:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            super::node::NODES_GROUP,
        ),
        binding("berth:node-proxier", "system:node-proxier", super::node::NODES_GROUP),
    ]
}

/// `current` with the policy's labels and annotations added.
fn with_metadata(current: &Value, expected: &Value) -> Value {
    let mut out = current.clone();
    for field in ["labels", "annotations"] {
        let Some(want) = expected.pointer(&format!("/metadata/{field}")).and_then(Value::as_object) else { continue };
        let mut have: Map<String, Value> = out.pointer(&format!("/metadata/{field}")).and_then(Value::as_object).cloned().unwrap_or_default();
        for (k, v) in want {
            have.entry(k.clone()).or_insert_with(|| v.clone());
        }
        out["metadata"][field] = Value::Object(have);
    }
    out
}

/// A role with the policy's rules (or aggregation selectors) it lacks.
pub fn merged_role(current: &Value, expected: &Value) -> Value {
    let mut out = with_metadata(current, expected);
    if let Some(want) = expected.pointer("/aggregationRule/clusterRoleSelectors").and_then(Value::as_array) {
        let mut have = out.pointer("/aggregationRule/clusterRoleSelectors").and_then(Value::as_array).cloned().unwrap_or_default();
        for sel in want {
            if !have.contains(sel) {
                have.push(sel.clone());
            }
        }
        out["aggregationRule"] = json!({"clusterRoleSelectors": have});
        return out;
    }
    let rules = |v: &Value| -> Vec<Rule> {
        v.get("rules")
            .and_then(|r| serde_json::from_value::<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>(r.clone()).ok())
            .unwrap_or_default()
            .iter()
            .map(Rule::from)
            .collect()
    };
    let missing = uncovered(&rules(&out), &rules(expected));
    if !missing.is_empty() {
        let mut list = out.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
        list.extend(missing.iter().map(Rule::to_json));
        out["rules"] = Value::Array(list);
    }
    out
}

/// A binding with the policy's subjects it lacks.
pub fn merged_binding(current: &Value, expected: &Value) -> Value {
    let mut out = with_metadata(current, expected);
    let mut have = out.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
    for s in expected.get("subjects").and_then(Value::as_array).into_iter().flatten() {
        if !have.contains(s) {
            have.push(s.clone());
        }
    }
    if !have.is_empty() {
        out["subjects"] = Value::Array(have);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_gains_missing_rules_and_keeps_its_own() {
        let current = json!({"metadata": {"name": "r", "labels": {"mine": "x"}}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        let expected = json!({"metadata": {"name": "r", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": [
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}
        ]});
        let out = merged_role(&current, &expected);
        assert_eq!(out["metadata"]["labels"], json!({"mine": "x", "kubernetes.io/bootstrapping": "rbac-defaults"}));
        assert_eq!(
            out["rules"],
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}])
        );
        assert_eq!(merged_role(&out, &expected), out, "a second pass changes nothing");
    }

    #[test]
    fn an_aggregated_role_gains_selectors_not_rules() {
        let sel = json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}});
        let current = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": []}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        let expected = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [sel.clone()]}});
        let out = merged_role(&current, &expected);
        assert_eq!(out["aggregationRule"]["clusterRoleSelectors"], json!([sel]));
        assert_eq!(out["rules"], current["rules"]);
    }

    #[test]
    fn a_binding_gains_missing_subjects() {
        let s1 = json!({"kind": "Group", "apiGroup": GROUP, "name": "system:authenticated"});
        let s2 = json!({"kind": "User", "apiGroup": GROUP, "name": "extra"});
        let current = json!({"metadata": {"name": "b"}, "subjects": [s2.clone()]});
        let expected = json!({"metadata": {"name": "b"}, "subjects": [s1.clone()]});
        assert_eq!(merged_binding(&current, &expected)["subjects"], json!([s2, s1]));
    }
}
