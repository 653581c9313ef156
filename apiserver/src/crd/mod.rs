//! CustomResourceDefinitions (apiextensions.k8s.io/v1): the `customresourcedefinitions`
//! resource itself ([`definition`]: defaulting, upstream's validation of the spec in
//! [`validate`]), and the custom resources each established CRD adds to the served table
//! ([`served`]: one [`Resource`](crate::resources::Resource) per served version, with a strategy
//! driven by the version's structural schema ([`schema`]: validation, pruning, defaults) and its
//! printer columns ([`columns`])). A level-triggered [`controller`] watches the CRDs: it swaps in
//! a new resource table (and starts or stops watch caches) when the set of CRDs changes, writes
//! their status (NamesAccepted, Established, storedVersions), and on deletion removes every
//! custom resource of the CRD before letting it go. This module does not touch the generic REST
//! verbs: custom resources go through them like every built-in kind.
//!
//! The resource table holds `&'static str` names (the built-in kinds are literals). Custom
//! resources get theirs from [`intern`]: each distinct string is leaked once and reused, so the
//! memory kept is bounded by the distinct names ever served, not by how often CRDs change —
//! cheaper than making every name in the table owned and touching every built-in kind.

pub mod columns;
pub mod controller;
pub mod definition;
pub mod intern;
pub mod schema;
pub mod served;
pub mod validate;

use serde_json::{json, Value};

use crate::status::ApiError;

/// The group of CustomResourceDefinitions.
pub const GROUP: &str = "apiextensions.k8s.io";
/// Their resource name.
pub const PLURAL: &str = "customresourcedefinitions";
/// The finalizer a CRD carries from its deletion until its custom resources are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Whether `res` is the customresourcedefinitions resource.
pub fn is_crd_resource(res: &crate::resources::Resource) -> bool {
    res.group == GROUP && res.plural == PLURAL
}

/// The 415 answer to a strategic merge patch of a custom resource, as upstream words it.
pub fn strategic_merge_unsupported() -> ApiError {
    ApiError {
        code: 415,
        reason: "UnsupportedMediaType",
        message: "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
        details: None,
    }
}

/// Marks a CRD being deleted the way upstream does: the cleanup finalizer (its custom resources
/// go first) and a Terminating condition.
pub fn mark_terminating(crd: &mut Value) {
    let finalizers = crd.pointer_mut("/metadata/finalizers");
    match finalizers.and_then(Value::as_array_mut) {
        Some(list) if list.iter().any(|f| f == CLEANUP_FINALIZER) => {}
        Some(list) => list.push(json!(CLEANUP_FINALIZER)),
        None => crate::meta::set(crd, "finalizers", json!([CLEANUP_FINALIZER])),
    }
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    let condition = json!({
        "type": "Terminating",
        "status": "True",
        "reason": "InstanceDeletionPending",
        "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        "lastTransitionTime": crate::meta::now(),
    });
    let conditions = crd["status"].as_object_mut().map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(list) = conditions.and_then(Value::as_array_mut) {
        list.retain(|c| c["type"] != "Terminating");
        list.push(condition);
    }
}
