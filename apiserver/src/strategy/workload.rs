//! Helpers shared by the kinds that hold a pod template (replica sets, replication controllers,
//! stateful sets, daemon sets, jobs, cron jobs, pod templates): the template's containers and
//! images as the printers show them, label maps as `labels.FormatLabels` prints them, and the
//! "selector must match the template" rule.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;
use serde_json::{json, Value};

use super::{wide, Column};
use crate::selector::{format_label_selector, LabelSelector};
use crate::status::FieldError;

/// The `-o wide` Containers and Images columns.
pub const CONTAINERS_COLUMN: Column = wide("Containers", "string", "Names of each container in the template.");
pub const IMAGES_COLUMN: Column = wide("Images", "string", "Images referenced by each container in the template.");

/// The Containers and Images cells of a pod template.
pub fn containers_and_images(t: Option<&PodTemplateSpec>) -> (Value, Value) {
    let containers = t.and_then(|t| t.spec.as_ref()).map(|s| s.containers.as_slice()).unwrap_or_default();
    (
        json!(containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(",")),
        json!(containers.iter().map(|c| c.image.clone().unwrap_or_default()).collect::<Vec<_>>().join(",")),
    )
}

/// A label map as upstream's `labels.FormatLabels` prints it (`a=b,c=d`, `<none>` when empty).
pub fn format_labels(m: Option<&BTreeMap<String, String>>) -> String {
    match m {
        Some(m) if !m.is_empty() => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        _ => "<none>".into(),
    }
}

/// The labels of a pod template.
pub fn template_labels(t: Option<&PodTemplateSpec>) -> BTreeMap<String, String> {
    t.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default()
}

fn selector_empty(sel: &ApiSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// Field errors of a label selector that must be non-empty and select the template's labels
/// (`kind` names the owner in the "empty selector" message: "deployment", "statefulset").
pub fn validate_selector_matches(sel: &ApiSelector, t: Option<&PodTemplateSpec>, kind: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    let labels = template_labels(t);
    if selector_empty(sel) {
        errs.push(FieldError::required("spec.selector", ""));
        errs.push(FieldError::invalid("spec.selector", json!({}), format!("empty selector is invalid for {kind}")));
        return errs;
    }
    match LabelSelector::from_api(sel) {
        Ok(s) if !s.matches(&labels) => {
            errs.push(FieldError::invalid("spec.template.metadata.labels", go_map(&labels), "`selector` does not match template `labels`"))
        }
        Ok(_) => {}
        Err(e) => errs.push(FieldError::invalid("spec.selector", json!(format_label_selector(sel)), e)),
    }
    errs
}

/// Field errors of a template (labels, pod spec) whose restart policy must be one of `policies`.
pub fn validate_template(t: Option<&PodTemplateSpec>, path: &str, policies: &[&'static str]) -> Vec<FieldError> {
    let mut errs = super::validate_labels(&format!("{path}.metadata.labels"), Some(&template_labels(t)));
    match t.and_then(|t| t.spec.as_ref()) {
        Some(ps) => {
            errs.extend(super::pod::validate_pod_spec(ps, &format!("{path}.spec")));
            if let Some(rp) = ps.restart_policy.as_deref().filter(|rp| !policies.contains(rp)) {
                errs.push(FieldError::not_supported(format!("{path}.spec.restartPolicy"), rp, policies));
            }
        }
        None => errs.push(FieldError::required(format!("{path}.spec"), "")),
    }
    errs
}

/// Defaults of a pod template's pod spec.
pub fn default_template(t: Option<&mut PodTemplateSpec>) {
    if let Some(ps) = t.and_then(|t| t.spec.as_mut()) {
        super::pod::default_pod_spec(ps);
    }
}

/// An error unless `n` is absent or at least 0.
pub fn non_negative(field: &str, n: Option<i64>) -> Vec<FieldError> {
    match n {
        Some(n) if n < 0 => vec![FieldError::invalid(field, n, "must be greater than or equal to 0")],
        _ => vec![],
    }
}

/// The "field is immutable" error when a selector changed.
pub fn selector_immutable(new: &ApiSelector, old: &ApiSelector) -> Vec<FieldError> {
    if new != old {
        vec![FieldError::invalid("spec.selector", json!(format_label_selector(new)), "field is immutable")]
    } else {
        vec![]
    }
}

/// A label map as Go's %#v prints `map[string]string` in field errors.
pub fn go_map(m: &BTreeMap<String, String>) -> Value {
    let inner = m.iter().map(|(k, v)| format!("{}:{}", berth_names::go_quote(k), berth_names::go_quote(v))).collect::<Vec<_>>().join(", ");
    crate::status::go_raw(format!("map[string]string{{{inner}}}"))
}
