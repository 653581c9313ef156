//! The ValidatingAdmissionPolicy plugin: ValidatingAdmissionPolicies (CEL validations, with
//! matchConstraints, matchConditions, variables, paramKind, failurePolicy) applied through their
//! ValidatingAdmissionPolicyBindings (policyName, matchResources, paramRef, validationActions),
//! in the validating phase, as upstream:
//! - a binding applies when its policy exists, the request matches the policy's
//!   matchConstraints (resourceRules minus excludeResourceRules, namespace and object selectors)
//!   and the binding's matchResources, and every matchCondition is true;
//! - each validation's expression must be true; when it is false the binding's actions decide:
//!   Deny fails the request (`ValidatingAdmissionPolicy 'p' with binding 'b' denied request:
//!   <message>`, 422 Invalid by default, or the validation's reason), Warn adds a warning
//!   (`Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': <message>`), Audit adds
//!   the failure to the audit log's `validation.policy.admission.k8s.io/validation_failure`
//!   annotation (a JSON list: message, policy, binding, expressionIndex, validationActions);
//! - the policy's auditAnnotations (`valueExpression` giving a string, or null for none) go to the
//!   audit log as `<policy>/<key>`;
//! - the message is the validation's message, or its messageExpression's value, or `failed
//!   expression: <expression>`; an expression that fails to evaluate is a failure under
//!   failurePolicy Fail (the default) and ignored under Ignore;
//! - params: the object paramRef names (by name, in its namespace or the request's) of the
//!   policy's paramKind; none found → parameterNotFoundAction (Deny by default).
//!
//! The API's own writes (no user) and writes of admissionregistration objects are not judged.
//! Expressions: [`expr`], with Kubernetes' CEL libraries ([`library`]) and the `authorizer`
//! of the request's user.

pub mod expr;
pub mod library;

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::{MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use serde_json::{json, Value};

use super::webhook::matching::{labels_of as labels, rule_names, selector_matches};
use super::{cached, cached_one, Attributes, Plugin};
use crate::api::Api;
use crate::audit::policy::Level as AuditLevel;
use crate::selector::LabelSelector;
use crate::status::ApiError;

const GROUP: &str = "admissionregistration.k8s.io";

pub struct ValidatingAdmissionPolicies;

impl Plugin for ValidatingAdmissionPolicies {
    fn name(&self) -> &'static str {
        "ValidatingAdmissionPolicy"
    }

    fn validate<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if a.user.is_none() || a.resource.group == GROUP {
                return Ok(());
            }
            run(api, a)
        })
    }
}

/// Runs the policies; the failures of bindings with the Audit action go to the audit log as
/// upstream's `validation.policy.admission.k8s.io/validation_failure` annotation (also when a
/// later binding denies).
fn run(api: &Api, a: &mut Attributes) -> Result<(), ApiError> {
    let mut audited = vec![];
    let result = judge(api, a, &mut audited);
    if !audited.is_empty() {
        crate::audit::annotations::add(AuditLevel::Metadata, "validation.policy.admission.k8s.io/validation_failure", Value::Array(audited).to_string());
    }
    result
}

fn judge(api: &Api, a: &mut Attributes, audited: &mut Vec<Value>) -> Result<(), ApiError> {
    let bindings: Vec<ValidatingAdmissionPolicyBinding> =
        cached(api, GROUP, "validatingadmissionpolicybindings", None).into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect();
    if bindings.is_empty() {
        return Ok(());
    }
    let namespace_object = if a.resource.namespaced { cached_one(api, "", "namespaces", None, a.namespace()) } else { None };
    let namespace_labels = labels(namespace_object.as_ref());
    let authorizer = authorizer(api, a);
    let mut sorted = bindings;
    sorted.sort_by(|x, y| x.metadata.name.cmp(&y.metadata.name));
    for binding in &sorted {
        let Some(spec) = &binding.spec else { continue };
        let Some(policy_name) = spec.policy_name.as_deref() else { continue };
        let Some(policy) =
            cached_one(api, GROUP, "validatingadmissionpolicies", None, policy_name).and_then(|v| serde_json::from_value::<ValidatingAdmissionPolicy>(v).ok())
        else {
            continue;
        };
        let Some(pspec) = &policy.spec else { continue };
        if !pspec.match_constraints.as_ref().is_some_and(|m| matches(m, a, &namespace_labels)) {
            continue;
        }
        if spec.match_resources.as_ref().is_some_and(|m| !matches(m, a, &namespace_labels)) {
            continue;
        }
        let binding_name = binding.metadata.name.clone().unwrap_or_default();
        let fail = pspec.failure_policy.as_deref() != Some("Ignore");
        let actions: Vec<String> = spec.validation_actions.clone().unwrap_or_default();
        let judged = Judgement { policy: policy_name, binding: &binding_name, actions: &actions };
        // params
        let params = match (&pspec.param_kind, &spec.param_ref) {
            (Some(kind), Some(r)) => match find_params(api, kind.api_version.as_deref().unwrap_or(""), kind.kind.as_deref().unwrap_or(""), r, a) {
                Some(p) => p,
                None if r.parameter_not_found_action.as_deref() == Some("Allow") => continue,
                None => return Err(judged.deny_error(a, "no params found for policy binding with `Deny` parameterNotFoundAction", None)),
            },
            _ => Value::Null,
        };
        let mut b = expr::Bindings::new(authorizer.as_ref());
        b.set("object", a.object.clone().unwrap_or(Value::Null));
        b.set("oldObject", a.old_object.clone().unwrap_or(Value::Null));
        b.set("request", super::request_variable(a));
        b.set("params", params);
        b.set("namespaceObject", namespace_object.clone().unwrap_or(Value::Null));
        // matchConditions: all true, or the binding does not apply
        let mut applies = true;
        for c in pspec.match_conditions.iter().flatten() {
            match b.eval_bool(&c.expression) {
                Ok(true) => {}
                Ok(false) => {
                    applies = false;
                    break;
                }
                Err(e) if fail => return Err(judged.deny_error(a, &format!("expression '{}' resulted in error: {e}", c.expression), None)),
                Err(_) => {
                    applies = false;
                    break;
                }
            }
        }
        if !applies {
            continue;
        }
        for v in pspec.variables.iter().flatten() {
            match b.eval_value(&v.expression) {
                Ok(value) => b.set_variable(&v.name, value),
                Err(e) => tracing::debug!(variable = %v.name, error = %e, "policy variable failed"),
            }
        }
        for (index, v) in pspec.validations.iter().flatten().enumerate() {
            // why it failed: None for a false expression, the error of one that failed to run
            let why = match b.eval_bool(&v.expression) {
                Ok(true) => continue,
                Ok(false) => None,
                Err(e) if fail => Some(format!("expression '{}' resulted in error: {e}", v.expression)),
                Err(_) => continue,
            };
            let message = match why {
                Some(w) => w,
                None => {
                    let from_expression = v
                        .message_expression
                        .as_deref()
                        .and_then(|m| b.eval(m).ok())
                        .and_then(|m| m.as_str().map(String::from))
                        .filter(|m| !m.trim().is_empty());
                    from_expression
                        .or_else(|| v.message.clone().filter(|m| !m.is_empty()))
                        .unwrap_or_else(|| format!("failed expression: {}", v.expression.trim()))
                }
            };
            judged.act(a, &message, v.reason.as_deref(), index, audited)?;
        }
        // the policy's own audit annotations, `<policy>/<key>` (a null value adds nothing)
        for note in pspec.audit_annotations.iter().flatten() {
            match b.eval(&note.value_expression) {
                Ok(Value::String(text)) => crate::audit::annotations::add(AuditLevel::Metadata, format!("{policy_name}/{}", note.key), text),
                Ok(Value::Null) => {}
                Ok(other) => tracing::debug!(key = %note.key, value = %other, "audit annotation is not a string"),
                Err(e) => tracing::debug!(key = %note.key, error = %e, "audit annotation failed"),
            }
        }
    }
    Ok(())
}

/// The `authorizer` of the request's user (none for the API's own writes), its
/// `requestResource` the request's resource and object.
pub(crate) fn authorizer<'a>(api: &'a Api, a: &Attributes) -> Option<library::authz::Scope<'a>> {
    let user = a.user.clone()?;
    Some(library::authz::Scope::new(api, user, a.resource.group, a.resource.plural, &a.subresource, a.namespace(), &a.name))
}

/// What a failed validation leads to, by the binding's actions.
struct Judgement<'a> {
    policy: &'a str,
    binding: &'a str,
    actions: &'a [String],
}

impl Judgement<'_> {
    fn act(&self, a: &mut Attributes, message: &str, reason: Option<&str>, index: usize, audited: &mut Vec<Value>) -> Result<(), ApiError> {
        if self.actions.iter().any(|x| x == "Warn") {
            a.warnings.push(format!("Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {message}", self.policy, self.binding));
        }
        if self.actions.iter().any(|x| x == "Audit") {
            audited.push(json!({
                "message": message, "policy": self.policy, "binding": self.binding, "expressionIndex": index, "validationActions": self.actions,
            }));
        }
        if self.actions.iter().any(|x| x == "Deny") {
            return Err(self.deny_error(a, message, reason));
        }
        Ok(())
    }

    /// upstream's denial: admission's Forbidden message with the reason the validation gives
    /// (Invalid, 422, by default) and the message also as a cause.
    fn deny_error(&self, a: &Attributes, message: &str, reason: Option<&str>) -> ApiError {
        let text = format!("ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}", self.policy, self.binding);
        let mut e = a.forbidden(&text);
        (e.code, e.reason) = match reason.unwrap_or("Invalid") {
            "Forbidden" => (403, "Forbidden"),
            "Unauthorized" => (401, "Unauthorized"),
            "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
            _ => (422, "Invalid"),
        };
        if let Some(d) = e.details.as_mut() {
            d["causes"] = json!([{"message": text}]);
        }
        e
    }
}

fn rule_matches(r: &NamedRuleWithOperations, a: &Attributes) -> bool {
    let names_ok = r.resource_names.as_ref().is_none_or(|n| n.is_empty() || n.contains(&a.name));
    names_ok && rule_names(r.operations.as_ref(), r.api_groups.as_ref(), r.api_versions.as_ref(), r.resources.as_ref(), r.scope.as_deref(), a)
}

/// Whether the request is in `m` (rules, exclusions, selectors).
fn matches(m: &MatchResources, a: &Attributes, namespace_labels: &BTreeMap<String, String>) -> bool {
    let included = m.resource_rules.as_ref().is_none_or(|rules| rules.iter().any(|r| rule_matches(r, a)));
    let excluded = m.exclude_resource_rules.iter().flatten().any(|r| rule_matches(r, a));
    let ns_ok = !a.resource.namespaced || selector_matches(m.namespace_selector.as_ref(), namespace_labels);
    let obj_ok = selector_matches(m.object_selector.as_ref(), &labels(a.object.as_ref()))
        || (a.old_object.is_some() && selector_matches(m.object_selector.as_ref(), &labels(a.old_object.as_ref())));
    included && !excluded && ns_ok && obj_ok
}

/// The params object a binding names.
fn find_params(api: &Api, api_version: &str, kind: &str, r: &k8s_openapi::api::admissionregistration::v1::ParamRef, a: &Attributes) -> Option<Value> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let registry = api.registry();
    let res = registry.all().iter().find(|x| x.group == group && x.version == version && x.kind == kind)?.clone();
    let ns = if res.namespaced { Some(r.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| a.namespace().to_string())) } else { None };
    match &r.name {
        Some(name) => cached_one(api, res.group, res.plural, ns.as_deref(), name),
        None => {
            let sel = r.selector.as_ref().and_then(|s| LabelSelector::from_api(s).ok())?;
            cached(api, res.group, res.plural, ns.as_deref()).into_iter().find(|o| sel.matches(&labels(Some(o))))
        }
    }
}
