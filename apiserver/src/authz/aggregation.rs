//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` gets as its
//! rules those of every other ClusterRole its label selectors match, in name order, each rule
//! once (upstream's clusterrole-aggregation controller). That is how `admin`, `edit` and `view`
//! gain the rules of the `aggregate-to-*` roles and of any ClusterRole a user labels
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"`. It runs a pass whenever the
//! ClusterRoles' cache changes, and writes a role only when its rules differ, as the field
//! manager `clusterrole-aggregator`.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde_json::json;
use tracing::Instrument;

use super::rbac::GROUP;
use crate::api::Api;
use crate::cache::CachedObject;
use crate::patch::PatchType;
use crate::rest::{Subresource, WriteOptions};
use crate::selector::LabelSelector;

/// Starts the controller for the life of `api`.
pub fn spawn(api: &Arc<Api>) {
    let Ok(res) = api.resource(GROUP, "clusterroles") else { return };
    let Ok(cache) = api.cache(&res) else { return };
    let mut changes = cache.changes();
    let weak = Arc::downgrade(api);
    tokio::spawn(
        async move {
            // what the last pass saw: the same objects (one Arc per revision) need no new pass
            let mut seen: Vec<Arc<CachedObject>> = vec![];
            loop {
                {
                    let Some(api) = weak.upgrade() else { return };
                    let (now, _) = cache.snapshot(&res.prefix(api.store_prefix()));
                    let same = now.len() == seen.len() && now.iter().zip(&seen).all(|(a, b)| Arc::ptr_eq(a, b));
                    if !same {
                        reconcile(&api, &now).await;
                        seen = now;
                    }
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        }
        .instrument(tracing::info_span!("clusterrole_aggregation")),
    );
}

/// The rules an aggregated role should have, from `roles` (sorted by name).
pub fn aggregate(role: &ClusterRole, roles: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let rule = role.aggregation_rule.as_ref()?;
    let mut rules: Vec<PolicyRule> = vec![];
    for sel in rule.cluster_role_selectors.iter().flatten() {
        let Ok(sel) = LabelSelector::from_api(sel) else { continue };
        for other in roles {
            if other.metadata.name == role.metadata.name || !sel.matches(other.metadata.labels.as_ref().unwrap_or(&Default::default())) {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
    }
    Some(rules)
}

async fn reconcile(api: &Arc<Api>, objects: &[Arc<CachedObject>]) {
    let mut roles: Vec<ClusterRole> = objects.iter().filter_map(|o| o.value().ok()).filter_map(|v| serde_json::from_value(v).ok()).collect();
    roles.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let Ok(res) = api.resource(GROUP, "clusterroles") else { return };
    let opts = WriteOptions { field_manager: Some("clusterrole-aggregator".into()), ..Default::default() };
    for role in &roles {
        let Some(rules) = aggregate(role, &roles) else { continue };
        if role.rules.as_ref().unwrap_or(&vec![]) == &rules {
            continue;
        }
        let name = role.metadata.name.clone().unwrap_or_default();
        let patch = json!({"rules": rules});
        match api.patch(&res, None, &name, PatchType::Merge, &patch, Subresource::Main, &opts).await {
            Ok(_) => tracing::info!(role = %name, rules = rules.len(), "aggregated"),
            Err(e) => tracing::warn!(role = %name, error = %e, "aggregating the role failed (retried on the next change)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(v: serde_json::Value) -> ClusterRole {
        serde_json::from_value(v).expect("role")
    }

    #[test]
    fn matching_roles_rules_are_gathered_once_in_name_order() {
        let view = role(json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}));
        let a = role(json!({"metadata": {"name": "a", "labels": {"agg": "view"}}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}));
        let b = role(json!({"metadata": {"name": "b", "labels": {"agg": "view"}}, "rules": [
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["list"], "apiGroups": ["apps"], "resources": ["deployments"]}
        ]}));
        let other = role(json!({"metadata": {"name": "c"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}));
        let roles = vec![a, b, other, view.clone()];
        let rules = aggregate(&view, &roles).expect("aggregated");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].resources.as_deref(), Some(&["deployments".to_string()][..]));
        assert!(aggregate(&roles[0], &roles).is_none(), "a role without an aggregationRule is left alone");
    }
}
