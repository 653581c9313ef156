//! Which webhooks a request goes to: a webhook (mutating or validating, in one shape here)
//! matches when one of its rules names the request's operation, group, version and resource
//! (`*`, `res`, `res/sub`, `res/*`, `*/sub`) in its scope, and its namespace and object
//! selectors match. The rule and selector matching is shared with ValidatingAdmissionPolicy.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MatchCondition, MutatingWebhook, RuleWithOperations, ValidatingWebhook, WebhookClientConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;
use serde_json::Value;

use crate::admission::Attributes;
use crate::selector::LabelSelector;

/// One webhook, of either kind.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub client: WebhookClientConfig,
    pub rules: Vec<RuleWithOperations>,
    pub namespace_selector: Option<ApiSelector>,
    pub object_selector: Option<ApiSelector>,
    /// failurePolicy Ignore.
    pub ignore_failures: bool,
    pub timeout_seconds: u64,
    /// The AdmissionReview version to send (v1 when the webhook takes it).
    pub review_version: &'static str,
    /// matchConditions: (name, CEL expression), all of which must hold.
    pub match_conditions: Vec<(String, String)>,
    /// reinvocationPolicy IfNeeded (mutating webhooks only).
    pub reinvoke_if_needed: bool,
    /// The name of the configuration the webhook is in (audit annotations name it).
    pub configuration: String,
}

fn conditions(list: Option<Vec<MatchCondition>>) -> Vec<(String, String)> {
    list.into_iter().flatten().map(|c| (c.name, c.expression)).collect()
}

fn review_version(versions: &[String]) -> &'static str {
    if versions.iter().any(|v| v == "v1") || versions.is_empty() {
        "v1"
    } else {
        "v1beta1"
    }
}

impl From<ValidatingWebhook> for Webhook {
    fn from(w: ValidatingWebhook) -> Self {
        Webhook {
            review_version: review_version(&w.admission_review_versions),
            name: w.name,
            client: w.client_config,
            rules: w.rules.unwrap_or_default(),
            namespace_selector: w.namespace_selector,
            object_selector: w.object_selector,
            ignore_failures: w.failure_policy.as_deref() == Some("Ignore"),
            timeout_seconds: w.timeout_seconds.unwrap_or(10).clamp(1, 30) as u64,
            match_conditions: conditions(w.match_conditions),
            reinvoke_if_needed: false,
            configuration: String::new(),
        }
    }
}

impl From<MutatingWebhook> for Webhook {
    fn from(w: MutatingWebhook) -> Self {
        Webhook {
            review_version: review_version(&w.admission_review_versions),
            name: w.name,
            client: w.client_config,
            rules: w.rules.unwrap_or_default(),
            namespace_selector: w.namespace_selector,
            object_selector: w.object_selector,
            ignore_failures: w.failure_policy.as_deref() == Some("Ignore"),
            timeout_seconds: w.timeout_seconds.unwrap_or(10).clamp(1, 30) as u64,
            match_conditions: conditions(w.match_conditions),
            reinvoke_if_needed: w.reinvocation_policy.as_deref() == Some("IfNeeded"),
            configuration: String::new(),
        }
    }
}

fn any_or(list: Option<&Vec<String>>, x: &str) -> bool {
    list.into_iter().flatten().any(|v| v == "*" || v == x)
}

/// Whether a rule's resource list names `resource` with `sub` ("" for the main resource).
fn resource_matches(list: Option<&Vec<String>>, resource: &str, sub: &str) -> bool {
    list.into_iter().flatten().any(|r| match r.split_once('/') {
        // `*/*`: everything, main resources included
        Some(("*", "*")) => true,
        Some((res, rsub)) => (res == "*" || res == resource) && if rsub == "*" { !sub.is_empty() } else { rsub == sub },
        None => sub.is_empty() && (r == "*" || r == resource),
    })
}

/// Whether an admissionregistration rule (a webhook's, or a policy's resourceRules) names the
/// request: operation, group, version, resource (with its subresource forms) and scope.
pub fn rule_names(
    operations: Option<&Vec<String>>,
    groups: Option<&Vec<String>>,
    versions: Option<&Vec<String>>,
    resources: Option<&Vec<String>>,
    scope: Option<&str>,
    a: &Attributes,
) -> bool {
    let res = &a.resource;
    let scope_ok = match scope.unwrap_or("*") {
        "Cluster" => !res.namespaced,
        "Namespaced" => res.namespaced,
        _ => true,
    };
    any_or(operations, a.operation.as_str())
        && any_or(groups, res.group)
        && any_or(versions, res.version)
        && resource_matches(resources, res.plural, &a.subresource)
        && scope_ok
}

/// Whether a label selector (None: everything) matches `labels`.
pub fn selector_matches(sel: Option<&ApiSelector>, labels: &BTreeMap<String, String>) -> bool {
    match sel {
        None => true,
        Some(s) => LabelSelector::from_api(s).is_ok_and(|s| s.matches(labels)),
    }
}

/// An object's labels (empty when it has none).
pub fn labels_of(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(|v| v.pointer("/metadata/labels")).and_then(|l| serde_json::from_value(l.clone()).ok()).unwrap_or_default()
}

impl Webhook {
    /// Whether the request goes to this webhook; `namespace_labels` is None for a
    /// cluster-scoped object.
    pub fn matches(&self, a: &Attributes, namespace_labels: Option<&BTreeMap<String, String>>) -> bool {
        let rule_matches = self
            .rules
            .iter()
            .any(|r| rule_names(r.operations.as_ref(), r.api_groups.as_ref(), r.api_versions.as_ref(), r.resources.as_ref(), r.scope.as_deref(), a));
        if !rule_matches {
            return false;
        }
        if let Some(labels) = namespace_labels {
            if !selector_matches(self.namespace_selector.as_ref(), labels) {
                return false;
            }
        }
        selector_matches(self.object_selector.as_ref(), &labels_of(a.object.as_ref()))
            || (a.old_object.is_some() && selector_matches(self.object_selector.as_ref(), &labels_of(a.old_object.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn resources_match_with_subresource_forms() {
        assert!(resource_matches(list(&["pods"]).as_ref(), "pods", ""));
        assert!(!resource_matches(list(&["pods"]).as_ref(), "pods", "status"));
        assert!(resource_matches(list(&["pods/status"]).as_ref(), "pods", "status"));
        assert!(resource_matches(list(&["pods/*"]).as_ref(), "pods", "status"));
        assert!(!resource_matches(list(&["pods/*"]).as_ref(), "pods", ""));
        assert!(resource_matches(list(&["*"]).as_ref(), "configmaps", ""));
        assert!(!resource_matches(list(&["*"]).as_ref(), "pods", "status"));
        assert!(resource_matches(list(&["*/status"]).as_ref(), "deployments", "status"));
        assert!(resource_matches(list(&["*/*"]).as_ref(), "pods", "exec"));
        assert!(resource_matches(list(&["*/*"]).as_ref(), "pods", ""));
        assert!(!resource_matches(list(&["services"]).as_ref(), "pods", ""));
    }

    #[test]
    fn selectors_default_to_everything() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
        assert!(selector_matches(None, &labels));
        assert!(selector_matches(Some(&ApiSelector::default()), &labels));
        let sel = ApiSelector { match_labels: Some([("a".to_string(), "c".to_string())].into()), ..Default::default() };
        assert!(!selector_matches(Some(&sel), &labels));
    }
}
