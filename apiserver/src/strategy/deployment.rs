//! Deployments (apps/v1): defaults (replicas, rolling-update strategy, history and progress
//! limits, the pod template's defaults), validation (selector matches the template, the template
//! restarts Always, the selector never changes), generation tracking, status cleared on create,
//! and the `kubectl get deployments` columns.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::pod::{default_pod_spec, validate_pod_spec};
use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::selector::{format_label_selector, LabelSelector};
use crate::status::FieldError;
use crate::table::age;

pub struct Deployments;

impl Kind for Deployments {
    type Object = Deployment;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, d: &mut Deployment) {
        let spec = d.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into()).clone();
        if kind == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_unavailable.get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_surge.get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        if let Some(ps) = spec.template.spec.as_mut() {
            default_pod_spec(ps);
        }
    }

    fn prepare_for_create(&self, d: &mut Deployment) {
        d.status = Some(Default::default());
    }

    fn validate(&self, d: &Deployment) -> Vec<FieldError> {
        let mut errs = vec![];
        let Some(spec) = &d.spec else {
            return vec![FieldError::required("spec", "")];
        };
        if let Some(r) = spec.replicas.filter(|r| *r < 0) {
            errs.push(FieldError::invalid("spec.replicas", r, "must be greater than or equal to 0"));
        }
        let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        let selector_empty =
            spec.selector.match_labels.as_ref().is_none_or(|m| m.is_empty()) && spec.selector.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        if selector_empty {
            errs.push(FieldError::required("spec.selector", ""));
            errs.push(FieldError::invalid("spec.selector", json!({}), "empty selector is invalid for deployment"));
        } else {
            match LabelSelector::from_api(&spec.selector) {
                Ok(sel) if !sel.matches(&labels) => {
                    errs.push(FieldError::invalid("spec.template.metadata.labels", go_map(&labels), "`selector` does not match template `labels`"))
                }
                Ok(_) => {}
                Err(e) => errs.push(FieldError::invalid("spec.selector", json!(format_label_selector(&spec.selector)), e)),
            }
        }
        errs.extend(super::validate_labels("spec.template.metadata.labels", Some(&labels)));
        match &spec.template.spec {
            Some(ps) => {
                errs.extend(validate_pod_spec(ps, "spec.template.spec"));
                if let Some(rp) = ps.restart_policy.as_deref().filter(|rp| *rp != "Always") {
                    errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", rp, &["Always"]));
                }
            }
            None => errs.push(FieldError::required("spec.template.spec", "")),
        }
        if let Some(s) = &spec.strategy {
            match s.type_.as_deref() {
                Some("RollingUpdate") | Some("Recreate") | None => {}
                Some(other) => errs.push(FieldError::not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"])),
            }
        }
        errs
    }

    fn validate_update(&self, new: &Deployment, old: &Deployment) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let (n, o) = (new.spec.as_ref().map(|s| &s.selector), old.spec.as_ref().map(|s| &s.selector));
        if let (Some(n), Some(o)) = (n, o) {
            if n != o {
                errs.push(FieldError::invalid("spec.selector", json!(format_label_selector(n)), "field is immutable"));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE_COLUMN,
            wide("Containers", "string", "Names of each container in the template."),
            wide("Images", "string", "Images referenced by each container in the template."),
            wide(
                "Selector",
                "string",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ]
    }

    fn cells(&self, d: &Deployment, now: Timestamp) -> Vec<Value> {
        let spec = d.spec.clone().unwrap_or_default();
        let status = d.status.clone().unwrap_or_default();
        let containers = spec.template.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        vec![
            json!(d.metadata.name.clone().unwrap_or_default()),
            json!(format!("{}/{}", status.ready_replicas.unwrap_or(0), spec.replicas.unwrap_or(0))),
            json!(status.updated_replicas.unwrap_or(0)),
            json!(status.available_replicas.unwrap_or(0)),
            json!(age(d.metadata.creation_timestamp.as_ref(), now)),
            json!(containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(",")),
            json!(containers.iter().map(|c| c.image.clone().unwrap_or_default()).collect::<Vec<_>>().join(",")),
            json!(format_label_selector(&spec.selector)),
        ]
    }
}

/// A label map as Go's %#v prints `map[string]string` in field errors.
fn go_map(m: &std::collections::BTreeMap<String, String>) -> Value {
    let inner = m.iter().map(|(k, v)| format!("{}:{}", berth_names::go_quote(k), berth_names::go_quote(v))).collect::<Vec<_>>().join(", ");
    crate::status::go_raw(format!("map[string]string{{{inner}}}"))
}
