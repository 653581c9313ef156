//! admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration and
//! MutatingWebhookConfiguration: cluster-scoped lists of webhooks the admission chain calls
//! (`crate::admission::webhook`). Defaults as upstream's (failurePolicy Fail, matchPolicy
//! Equivalent, empty selectors, timeoutSeconds 10, rule scope `*`, reinvocationPolicy Never);
//! validation of what the caller needs to get right: unique qualified names, exactly one of url
//! and service (an https URL without user info or fragment), sideEffects None or NoneOnDryRun,
//! admissionReviewVersions naming v1 or v1beta1, timeouts of 1 to 30 seconds, rules with
//! operations and resources. Columns: NAME WEBHOOKS AGE. Also ValidatingAdmissionPolicy and
//! ValidatingAdmissionPolicyBinding (their CEL expressions must compile; validationActions from
//! Deny, Warn, Audit, not Deny with Warn; paramRef by name or selector), judged by
//! `crate::admission::policy`.

use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

fn columns() -> Vec<Column> {
    vec![NAME_COLUMN, col("Webhooks", "integer", "Webhooks indicates the number of webhooks in the configuration."), AGE_COLUMN]
}

fn cells(m: &ObjectMeta, count: usize, now: Timestamp) -> Vec<Value> {
    vec![json!(m.name.clone().unwrap_or_default()), json!(count), json!(age(m.creation_timestamp.as_ref(), now))]
}

/// The parts of a webhook both kinds share, for defaulting and validation.
struct Common<'a> {
    name: &'a str,
    client: &'a WebhookClientConfig,
    rules: Option<&'a Vec<RuleWithOperations>>,
    side_effects: &'a str,
    timeout: Option<i32>,
    versions: &'a [String],
    failure_policy: Option<&'a str>,
    match_policy: Option<&'a str>,
    conditions: Option<&'a Vec<MatchCondition>>,
}

fn default_rules(rules: Option<&mut Vec<RuleWithOperations>>) {
    for r in rules.into_iter().flatten() {
        if r.scope.is_none() {
            r.scope = Some("*".into());
        }
    }
}

fn default_selector(sel: &mut Option<LabelSelector>) {
    if sel.is_none() {
        *sel = Some(LabelSelector::default());
    }
}

fn default_service_port(client: &mut WebhookClientConfig) {
    if let Some(s) = client.service.as_mut() {
        if s.port.is_none() {
            s.port = Some(443);
        }
    }
}

fn validate_common(i: usize, w: &Common, seen: &mut Vec<String>) -> Vec<FieldError> {
    let p = format!("webhooks[{i}]");
    let mut errs = vec![];
    if w.name.is_empty() {
        errs.push(FieldError::required(format!("{p}.name"), ""));
    } else if !w.name.contains('.') || !berth_names::dns1123_subdomain(w.name).is_empty() {
        errs.push(FieldError::invalid(format!("{p}.name"), json!(w.name), "should be a domain with at least three segments separated by dots"));
    } else if seen.iter().any(|n| n == w.name) {
        errs.push(FieldError::duplicate(format!("{p}.name"), json!(w.name)));
    } else {
        seen.push(w.name.to_string());
    }
    match (&w.client.url, &w.client.service) {
        (Some(_), Some(_)) => errs.push(FieldError::required(format!("{p}.clientConfig"), "exactly one of url or service is required")),
        (None, None) => errs.push(FieldError::required(format!("{p}.clientConfig"), "exactly one of url or service is required")),
        (Some(u), None) => match url::Url::parse(u) {
            Ok(parsed) if parsed.scheme() != "https" => {
                errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), json!(u), "'https' is the only allowed URL scheme"))
            }
            Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
                errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), json!(u), "user information is not permitted in the URL"))
            }
            Ok(parsed) if parsed.fragment().is_some() => {
                errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), json!(u), "fragments are not permitted in the URL"))
            }
            Ok(parsed) if parsed.query().is_some() => {
                errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), json!(u), "query parameters are not permitted in the URL"))
            }
            Ok(_) => {}
            Err(e) => errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), json!(u), format!("host must be specified: {e}"))),
        },
        (None, Some(s)) => {
            if s.name.is_empty() {
                errs.push(FieldError::required(format!("{p}.clientConfig.service.name"), "service name is required"));
            }
            if s.namespace.is_empty() {
                errs.push(FieldError::required(format!("{p}.clientConfig.service.namespace"), "service namespace is required"));
            }
        }
    }
    if !matches!(w.side_effects, "None" | "NoneOnDryRun") {
        errs.push(FieldError::not_supported(format!("{p}.sideEffects"), w.side_effects, &["None", "NoneOnDryRun"]));
    }
    if let Some(t) = w.timeout {
        if !(1..=30).contains(&t) {
            errs.push(FieldError::invalid(format!("{p}.timeoutSeconds"), json!(t), "the timeout value must be between 1 and 30 seconds"));
        }
    }
    if w.versions.is_empty() {
        errs.push(FieldError::required(format!("{p}.admissionReviewVersions"), "must specify one of v1, v1beta1"));
    } else if !w.versions.iter().any(|v| v == "v1" || v == "v1beta1") {
        errs.push(FieldError::invalid(format!("{p}.admissionReviewVersions"), json!(w.versions), "must include at least one of v1, v1beta1"));
    }
    if let Some(f) = w.failure_policy {
        if !matches!(f, "Fail" | "Ignore") {
            errs.push(FieldError::not_supported(format!("{p}.failurePolicy"), f, &["Fail", "Ignore"]));
        }
    }
    if let Some(m) = w.match_policy {
        if !matches!(m, "Exact" | "Equivalent") {
            errs.push(FieldError::not_supported(format!("{p}.matchPolicy"), m, &["Equivalent", "Exact"]));
        }
    }
    for (j, r) in w.rules.into_iter().flatten().enumerate() {
        let rp = format!("{p}.rules[{j}]");
        if r.operations.as_ref().is_none_or(|o| o.is_empty()) {
            errs.push(FieldError::required(format!("{rp}.operations"), ""));
        }
        for op in r.operations.iter().flatten() {
            if !matches!(op.as_str(), "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
                errs.push(FieldError::not_supported(format!("{rp}.operations"), op.as_str(), &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]));
            }
        }
        if r.resources.as_ref().is_none_or(|o| o.is_empty()) {
            errs.push(FieldError::required(format!("{rp}.resources"), ""));
        }
        if r.api_groups.as_ref().is_none_or(|o| o.is_empty()) {
            errs.push(FieldError::required(format!("{rp}.apiGroups"), ""));
        }
        if r.api_versions.as_ref().is_none_or(|o| o.is_empty()) {
            errs.push(FieldError::required(format!("{rp}.apiVersions"), ""));
        }
        if let Some(s) = r.scope.as_deref() {
            if !matches!(s, "*" | "Cluster" | "Namespaced") {
                errs.push(FieldError::not_supported(format!("{rp}.scope"), s, &["*", "Cluster", "Namespaced"]));
            }
        }
    }
    validate_conditions(&format!("{p}.matchConditions"), w.conditions.map(Vec::as_slice).unwrap_or_default(), &mut errs);
    errs
}

pub struct ValidatingWebhookConfigurations;

impl Kind for ValidatingWebhookConfigurations {
    type Object = ValidatingWebhookConfiguration;

    fn default(&self, c: &mut ValidatingWebhookConfiguration) {
        for w in c.webhooks.iter_mut().flatten() {
            default_webhook_fields(&mut w.failure_policy, &mut w.match_policy, &mut w.timeout_seconds);
            default_selector(&mut w.namespace_selector);
            default_selector(&mut w.object_selector);
            default_rules(w.rules.as_mut());
            default_service_port(&mut w.client_config);
        }
    }
    fn validate(&self, c: &ValidatingWebhookConfiguration) -> Vec<FieldError> {
        let mut seen = vec![];
        c.webhooks.iter().flatten().enumerate().flat_map(|(i, w)| validate_common(i, &validating(w), &mut seen)).collect()
    }
    fn columns(&self) -> Vec<Column> {
        columns()
    }
    fn cells(&self, c: &ValidatingWebhookConfiguration, now: Timestamp) -> Vec<Value> {
        cells(&c.metadata, c.webhooks.as_ref().map_or(0, Vec::len), now)
    }
}

fn validating(w: &ValidatingWebhook) -> Common<'_> {
    Common {
        name: &w.name,
        client: &w.client_config,
        rules: w.rules.as_ref(),
        side_effects: &w.side_effects,
        timeout: w.timeout_seconds,
        versions: &w.admission_review_versions,
        failure_policy: w.failure_policy.as_deref(),
        match_policy: w.match_policy.as_deref(),
        conditions: w.match_conditions.as_ref(),
    }
}

fn mutating(w: &MutatingWebhook) -> Common<'_> {
    Common {
        name: &w.name,
        client: &w.client_config,
        rules: w.rules.as_ref(),
        side_effects: &w.side_effects,
        timeout: w.timeout_seconds,
        versions: &w.admission_review_versions,
        failure_policy: w.failure_policy.as_deref(),
        match_policy: w.match_policy.as_deref(),
        conditions: w.match_conditions.as_ref(),
    }
}

fn default_webhook_fields(failure: &mut Option<String>, matching: &mut Option<String>, timeout: &mut Option<i32>) {
    failure.get_or_insert_with(|| "Fail".into());
    matching.get_or_insert_with(|| "Equivalent".into());
    timeout.get_or_insert(10);
}

pub struct MutatingWebhookConfigurations;

impl Kind for MutatingWebhookConfigurations {
    type Object = MutatingWebhookConfiguration;

    fn default(&self, c: &mut MutatingWebhookConfiguration) {
        for w in c.webhooks.iter_mut().flatten() {
            default_webhook_fields(&mut w.failure_policy, &mut w.match_policy, &mut w.timeout_seconds);
            w.reinvocation_policy.get_or_insert_with(|| "Never".into());
            default_selector(&mut w.namespace_selector);
            default_selector(&mut w.object_selector);
            default_rules(w.rules.as_mut());
            default_service_port(&mut w.client_config);
        }
    }
    fn validate(&self, c: &MutatingWebhookConfiguration) -> Vec<FieldError> {
        let mut seen = vec![];
        let mut errs: Vec<FieldError> = c.webhooks.iter().flatten().enumerate().flat_map(|(i, w)| validate_common(i, &mutating(w), &mut seen)).collect();
        for (i, w) in c.webhooks.iter().flatten().enumerate() {
            if let Some(r) = w.reinvocation_policy.as_deref() {
                if !matches!(r, "Never" | "IfNeeded") {
                    errs.push(FieldError::not_supported(format!("webhooks[{i}].reinvocationPolicy"), r, &["IfNeeded", "Never"]));
                }
            }
        }
        errs
    }
    fn columns(&self) -> Vec<Column> {
        columns()
    }
    fn cells(&self, c: &MutatingWebhookConfiguration, now: Timestamp) -> Vec<Value> {
        cells(&c.metadata, c.webhooks.as_ref().map_or(0, Vec::len), now)
    }
}

/// matchConditions as upstream validates them: at most 64, names qualified and distinct,
/// expressions that compile.
fn validate_conditions(path: &str, conditions: &[MatchCondition], errs: &mut Vec<FieldError>) {
    if conditions.len() > 64 {
        errs.push(FieldError::too_many(path, conditions.len(), 64));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in conditions.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if c.name.is_empty() {
            errs.push(FieldError::required(format!("{at}.name"), ""));
        } else if let Some(why) = berth_names::qualified_name(&c.name).into_iter().next() {
            errs.push(FieldError::invalid(format!("{at}.name"), json!(c.name), why));
        } else if !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(format!("{at}.name"), json!(c.name)));
        }
        check_expression(format!("{at}.expression"), &c.expression, errs);
    }
}

/// A CEL expression that does not compile, as upstream reports it.
fn check_expression(path: String, expression: &str, errs: &mut Vec<FieldError>) {
    if expression.trim().is_empty() {
        errs.push(FieldError::required(path, ""));
    } else if let Err(e) = crate::admission::policy::expr::compile(expression) {
        errs.push(FieldError::invalid(path, json!(expression), e));
    }
}

pub struct ValidatingAdmissionPolicies;

impl Kind for ValidatingAdmissionPolicies {
    type Object = ValidatingAdmissionPolicy;

    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, p: &mut ValidatingAdmissionPolicy) {
        if let Some(spec) = p.spec.as_mut() {
            spec.failure_policy.get_or_insert_with(|| "Fail".into());
            if let Some(m) = spec.match_constraints.as_mut() {
                default_match_resources(m);
            }
        }
    }
    fn validate(&self, p: &ValidatingAdmissionPolicy) -> Vec<FieldError> {
        let mut errs = vec![];
        let Some(spec) = &p.spec else { return vec![FieldError::required("spec", "")] };
        if let Some(f) = spec.failure_policy.as_deref() {
            if !matches!(f, "Fail" | "Ignore") {
                errs.push(FieldError::not_supported("spec.failurePolicy", f, &["Fail", "Ignore"]));
            }
        }
        match &spec.match_constraints {
            None => errs.push(FieldError::required("spec.matchConstraints", "")),
            Some(m) if m.resource_rules.as_ref().is_none_or(|r| r.is_empty()) => errs.push(FieldError::required("spec.matchConstraints.resourceRules", "")),
            Some(_) => {}
        }
        let validations = spec.validations.as_deref().unwrap_or(&[]);
        if validations.is_empty() && spec.audit_annotations.as_ref().is_none_or(|a| a.is_empty()) {
            errs.push(FieldError::required("spec.validations", "validations or auditAnnotations must contain at least one item"));
        }
        for (i, v) in validations.iter().enumerate() {
            check_expression(format!("spec.validations[{i}].expression"), &v.expression, &mut errs);
            if let Some(m) = v.message_expression.as_deref() {
                check_expression(format!("spec.validations[{i}].messageExpression"), m, &mut errs);
            }
            if let Some(r) = v.reason.as_deref() {
                if !matches!(r, "Unauthorized" | "Forbidden" | "Invalid" | "RequestEntityTooLarge") {
                    errs.push(FieldError::not_supported(
                        format!("spec.validations[{i}].reason"),
                        r,
                        &["Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized"],
                    ));
                }
            }
        }
        for (i, c) in spec.match_conditions.iter().flatten().enumerate() {
            check_expression(format!("spec.matchConditions[{i}].expression"), &c.expression, &mut errs);
        }
        for (i, v) in spec.variables.iter().flatten().enumerate() {
            check_expression(format!("spec.variables[{i}].expression"), &v.expression, &mut errs);
        }
        errs
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Validations", "integer", "Validations indicates the number of validation rules in the policy."),
            col("ParamKind", "string", "ParamKind specifies the kind of resources used to parameterize this policy"),
            AGE_COLUMN,
        ]
    }
    fn cells(&self, p: &ValidatingAdmissionPolicy, now: Timestamp) -> Vec<Value> {
        let spec = p.spec.as_ref();
        let count = spec.and_then(|s| s.validations.as_ref()).map_or(0, Vec::len);
        let param =
            spec.and_then(|s| s.param_kind.as_ref()).map(|k| format!("{}/{}", k.api_version.clone().unwrap_or_default(), k.kind.clone().unwrap_or_default()));
        vec![
            json!(p.metadata.name.clone().unwrap_or_default()),
            json!(count),
            json!(param.unwrap_or_else(|| "<unset>".into())),
            json!(age(p.metadata.creation_timestamp.as_ref(), now)),
        ]
    }
}

fn default_match_resources(m: &mut k8s_openapi::api::admissionregistration::v1::MatchResources) {
    m.match_policy.get_or_insert_with(|| "Equivalent".into());
    default_selector(&mut m.namespace_selector);
    default_selector(&mut m.object_selector);
    for r in m.resource_rules.iter_mut().flatten().chain(m.exclude_resource_rules.iter_mut().flatten()) {
        r.scope.get_or_insert_with(|| "*".into());
    }
}

pub struct ValidatingAdmissionPolicyBindings;

impl Kind for ValidatingAdmissionPolicyBindings {
    type Object = ValidatingAdmissionPolicyBinding;

    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, b: &mut ValidatingAdmissionPolicyBinding) {
        if let Some(spec) = b.spec.as_mut() {
            if let Some(m) = spec.match_resources.as_mut() {
                default_match_resources(m);
            }
            if let Some(p) = spec.param_ref.as_mut() {
                p.parameter_not_found_action.get_or_insert_with(|| "Deny".into());
            }
        }
    }
    fn validate(&self, b: &ValidatingAdmissionPolicyBinding) -> Vec<FieldError> {
        let mut errs = vec![];
        let Some(spec) = &b.spec else { return vec![FieldError::required("spec", "")] };
        if spec.policy_name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required("spec.policyName", ""));
        }
        let actions = spec.validation_actions.as_deref().unwrap_or(&[]);
        if actions.is_empty() {
            errs.push(FieldError::required("spec.validationActions", "at least one validation action is required"));
        }
        for (i, a) in actions.iter().enumerate() {
            if !matches!(a.as_str(), "Deny" | "Warn" | "Audit") {
                errs.push(FieldError::not_supported(format!("spec.validationActions[{i}]"), a.as_str(), &["Audit", "Deny", "Warn"]));
            }
        }
        if actions.iter().any(|a| a == "Deny") && actions.iter().any(|a| a == "Warn") {
            errs.push(FieldError::invalid("spec.validationActions", json!(actions), "Deny and Warn may not be used together"));
        }
        if let Some(p) = &spec.param_ref {
            if p.name.is_some() == p.selector.is_some() {
                errs.push(FieldError::invalid("spec.paramRef", json!(p.name), "one of name or selector must be set"));
            }
        }
        errs
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("PolicyName", "string", "PolicyName references a ValidatingAdmissionPolicy name which the ValidatingAdmissionPolicyBinding binds to."),
            col("ParamRef", "string", "ParamRef specifies the parameter resource used to configure the admission control policy."),
            AGE_COLUMN,
        ]
    }
    fn cells(&self, b: &ValidatingAdmissionPolicyBinding, now: Timestamp) -> Vec<Value> {
        let spec = b.spec.as_ref();
        let param = spec.and_then(|s| s.param_ref.as_ref()).and_then(|p| p.name.clone()).map(|n| format!("*/{n}"));
        vec![
            json!(b.metadata.name.clone().unwrap_or_default()),
            json!(spec.and_then(|s| s.policy_name.clone()).unwrap_or_default()),
            json!(param.unwrap_or_else(|| "<unset>".into())),
            json!(age(b.metadata.creation_timestamp.as_ref(), now)),
        ]
    }
}
