//! PodDisruptionBudgets (policy/v1): minAvailable and maxUnavailable exclusive and not negative,
//! the selector valid, generation tracking, status cleared on create, and the columns.

use jiff::Timestamp;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::selector::{format_label_selector, LabelSelector};
use crate::status::FieldError;
use crate::table::age;

pub struct PodDisruptionBudgets;

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn validate_int_or_percent(path: &str, v: Option<&IntOrString>) -> Vec<FieldError> {
    match v {
        Some(IntOrString::Int(i)) if *i < 0 => vec![FieldError::invalid(path, *i, "must be greater than or equal to 0")],
        Some(IntOrString::String(s)) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if (0..=100).contains(&n) => vec![],
            Some(_) => vec![FieldError::invalid(path, s.as_str(), "must not be greater than 100%")],
            None => vec![FieldError::invalid(
                path,
                s.as_str(),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )],
        },
        _ => vec![],
    }
}

impl Kind for PodDisruptionBudgets {
    type Object = PodDisruptionBudget;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, p: &mut PodDisruptionBudget) {
        p.status = Some(Default::default());
    }

    fn validate(&self, p: &PodDisruptionBudget) -> Vec<FieldError> {
        let spec = p.spec.clone().unwrap_or_default();
        let mut errs = vec![];
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            errs.push(FieldError::invalid("spec", json!({}), "minAvailable and maxUnavailable cannot be both set"));
        }
        errs.extend(validate_int_or_percent("spec.minAvailable", spec.min_available.as_ref()));
        errs.extend(validate_int_or_percent("spec.maxUnavailable", spec.max_unavailable.as_ref()));
        if let Some(sel) = &spec.selector {
            if let Err(e) = LabelSelector::from_api(sel) {
                errs.push(FieldError::invalid("spec.selector", json!(format_label_selector(sel)), e));
            }
        }
        match spec.unhealthy_pod_eviction_policy.as_deref() {
            None | Some("IfHealthyBudget") | Some("AlwaysAllow") => {}
            Some(x) => errs.push(FieldError::not_supported("spec.unhealthyPodEvictionPolicy", x, &["AlwaysAllow", "IfHealthyBudget"])),
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Min Available", "string", "The minimum number of pods that must be available simultaneously.  This can be either an integer or a string specifying a percentage, e.g. \"28%\"."),
            col("Max Unavailable", "string", "The maximum number of pods that may be unavailable simultaneously.  This can be either an integer or a string specifying a percentage, e.g. \"28%\"."),
            col("Allowed Disruptions", "integer", "Number of pod disruptions that are currently allowed."),
            AGE_COLUMN,
        ]
    }

    fn cells(&self, p: &PodDisruptionBudget, now: Timestamp) -> Vec<Value> {
        let spec = p.spec.clone().unwrap_or_default();
        let na = || "N/A".to_string();
        vec![
            json!(p.metadata.name.clone().unwrap_or_default()),
            json!(spec.min_available.as_ref().map(int_or_string).unwrap_or_else(na)),
            json!(spec.max_unavailable.as_ref().map(int_or_string).unwrap_or_else(na)),
            json!(p.status.as_ref().map_or(0, |s| s.disruptions_allowed)),
            json!(age(p.metadata.creation_timestamp.as_ref(), now)),
        ]
    }
}
