//! The authorization.k8s.io reviews: may this user do this (SubjectAccessReview, for anyone;
//! LocalSubjectAccessReview, within one namespace; SelfSubjectAccessReview, for the caller:
//! `kubectl auth can-i`) and what may I do in a namespace (SelfSubjectRulesReview:
//! `kubectl auth can-i --list`). Answers come from the same chain that judges requests.
//! Nothing is stored; the answer is the posted object with its status filled.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::attributes::{Attributes, ResourceTarget, Target};
use super::rule::Rule;
use super::{node, rbac, Decision};
use crate::api::Api;
use crate::authn::review::answer_base;
use crate::status::{ApiError, FieldError};
use crate::User;

const GROUP: &str = "authorization.k8s.io";

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// What a review's spec asks about (resourceAttributes or nonResourceAttributes).
fn target_of(spec: &Value) -> Result<(String, Target), Vec<FieldError>> {
    let res = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (res, non) {
        (Some(_), Some(n)) => {
            Err(vec![FieldError::invalid("spec.nonResourceAttributes", n.clone(), "cannot be specified in combination with resourceAttributes")])
        }
        (None, None) => Err(vec![FieldError::invalid(
            "spec.resourceAttributes",
            Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )]),
        (Some(r), None) => Ok((
            text(r, "verb"),
            Target::Resource(ResourceTarget {
                group: text(r, "group"),
                version: text(r, "version"),
                resource: text(r, "resource"),
                subresource: text(r, "subresource"),
                namespace: text(r, "namespace"),
                name: text(r, "name"),
                field_selector: r.pointer("/fieldSelector/rawSelector").and_then(Value::as_str).unwrap_or("").to_string(),
            }),
        )),
        (None, Some(n)) => Ok((text(n, "verb"), Target::Path(text(n, "path")))),
    }
}

/// The status of an access review of `a`.
async fn access_status(api: &Api, a: &Attributes) -> Value {
    match super::authorize(api, a).await {
        Decision::Allow(reason) if reason.is_empty() => json!({"allowed": true}),
        Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Refuse(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::Refuse(reason) => json!({"allowed": false, "reason": reason}),
    }
}

fn invalid(kind: &str, errs: Vec<FieldError>) -> ApiError {
    ApiError::invalid_kind(kind, GROUP, "", &errs)
}

/// Answers a SubjectAccessReview (or, with `namespace`, a LocalSubjectAccessReview).
pub async fn subject_access_review(api: &Api, kind: &str, api_version: &str, namespace: Option<&str>, body: &Value) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let (verb, target) = target_of(&spec).map_err(|e| invalid(kind, e))?;
    let user_name = text(&spec, "user");
    let groups: Vec<String> = spec.get("groups").and_then(|g| serde_json::from_value(g.clone()).ok()).unwrap_or_default();
    if user_name.is_empty() && groups.is_empty() {
        return Err(invalid(kind, vec![FieldError::invalid("spec.user", json!(""), "at least one of user or group must be specified")]));
    }
    if let Some(ns) = namespace {
        if spec.get("nonResourceAttributes").is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                kind,
                vec![FieldError::invalid("spec.nonResourceAttributes", spec["nonResourceAttributes"].clone(), "disallowed on this kind of request")],
            ));
        }
        let asked = spec.pointer("/resourceAttributes/namespace").and_then(Value::as_str).unwrap_or("");
        if asked != ns {
            return Err(invalid(kind, vec![FieldError::invalid("spec.resourceAttributes.namespace", json!(asked), "must match metadata.namespace")]));
        }
    }
    let extra: BTreeMap<String, Vec<String>> = spec.get("extra").and_then(|e| serde_json::from_value(e.clone()).ok()).unwrap_or_default();
    let user = User { name: user_name, uid: text(&spec, "uid"), groups, extra };
    let a = Attributes { user, verb, target };
    let mut out = answer_base(kind, api_version, body);
    out["status"] = access_status(api, &a).await;
    Ok(out)
}

/// Answers a SelfSubjectAccessReview by `user`.
pub async fn self_subject_access_review(api: &Api, user: &User, api_version: &str, body: &Value) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let (verb, target) = target_of(&spec).map_err(|e| invalid("SelfSubjectAccessReview", e))?;
    let a = Attributes { user: user.clone(), verb, target };
    let mut out = answer_base("SelfSubjectAccessReview", api_version, body);
    out["status"] = access_status(api, &a).await;
    Ok(out)
}

/// Answers a SelfSubjectRulesReview by `user`: the rules RBAC gives it in spec.namespace.
pub fn self_subject_rules_review(api: &Api, user: &User, api_version: &str, body: &Value) -> Result<Value, ApiError> {
    let namespace = body.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or("");
    if namespace.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let (rules, mut errors) = rbac::Policy::new(api).rules_for(user, namespace);
    let mut rules = rules;
    if user.groups.iter().any(|g| g == super::PRIVILEGED_GROUP) {
        rules.insert(0, Rule { non_resource_urls: vec!["*".into()], ..Rule::new(&["*"], &[], &[]) });
        rules.insert(0, Rule::new(&["*"], &["*"], &["*"]));
    }
    if node::node_name(user).is_some() {
        errors.push("node authorizer does not support user rule resolution".into());
    }
    let (resource_rules, non_resource_rules): (Vec<&Rule>, Vec<&Rule>) = rules.iter().partition(|r| r.non_resource_urls.is_empty());
    let mut status = json!({
        "resourceRules": resource_rules.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        "nonResourceRules": non_resource_rules.iter().map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls})).collect::<Vec<_>>(),
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(rbac::aggregate(&errors));
    }
    let mut out = answer_base("SelfSubjectRulesReview", api_version, body);
    out["status"] = status;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_asks_about_exactly_one_kind_of_target() {
        let (verb, t) = target_of(&json!({"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "a", "name": "p"}})).expect("resource");
        assert_eq!(verb, "get");
        assert!(matches!(t, Target::Resource(ref r) if r.resource == "pods" && r.namespace == "a" && r.name == "p"));
        let (verb, t) = target_of(&json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}})).expect("path");
        assert_eq!((verb.as_str(), t), ("get", Target::Path("/healthz".into())));
        let both = target_of(&json!({"resourceAttributes": {}, "nonResourceAttributes": {}})).expect_err("both");
        assert!(both[0].to_string().starts_with("spec.nonResourceAttributes: Invalid value: "));
        assert!(both[0].to_string().ends_with(": cannot be specified in combination with resourceAttributes"));
        let neither = target_of(&json!({})).expect_err("neither");
        assert!(neither[0].to_string().ends_with(": exactly one of nonResourceAttributes or resourceAttributes must be specified"));
    }
}
