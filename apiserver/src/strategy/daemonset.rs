//! DaemonSets (apps/v1): defaults (rolling update of one pod at a time, history limit), selector
//! matches the template which restarts Always, the selector never changes, generation tracking,
//! status cleared on create, the DESIRED/CURRENT/READY/UP-TO-DATE/AVAILABLE columns.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::workload::{
    containers_and_images, default_template, format_labels, selector_immutable, validate_selector_matches, validate_template, CONTAINERS_COLUMN, IMAGES_COLUMN,
};
use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::selector::format_label_selector;
use crate::status::FieldError;
use crate::table::age;

pub struct DaemonSets;

impl Kind for DaemonSets {
    type Object = DaemonSet;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, d: &mut DaemonSet) {
        let spec = d.spec.get_or_insert_with(Default::default);
        spec.revision_history_limit.get_or_insert(10);
        let us = spec.update_strategy.get_or_insert_with(DaemonSetUpdateStrategy::default);
        if us.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
            let ru = us.rolling_update.get_or_insert_with(RollingUpdateDaemonSet::default);
            ru.max_unavailable.get_or_insert(IntOrString::Int(1));
            ru.max_surge.get_or_insert(IntOrString::Int(0));
        }
        default_template(Some(&mut spec.template));
    }

    fn prepare_for_create(&self, d: &mut DaemonSet) {
        d.status = Some(Default::default());
    }

    fn validate(&self, d: &DaemonSet) -> Vec<FieldError> {
        let Some(spec) = &d.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = validate_selector_matches(&spec.selector, Some(&spec.template), "daemonset");
        errs.extend(validate_template(Some(&spec.template), "spec.template", &["Always"]));
        if let Some(t) = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()) {
            if t != "RollingUpdate" && t != "OnDelete" {
                errs.push(FieldError::not_supported("spec.updateStrategy.type", t, &["OnDelete", "RollingUpdate"]));
            }
        }
        errs
    }

    fn validate_update(&self, new: &DaemonSet, old: &DaemonSet) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if let (Some(n), Some(o)) = (&new.spec, &old.spec) {
            errs.extend(selector_immutable(&n.selector, &o.selector));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
            col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            col(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            ),
            col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
            AGE_COLUMN,
            CONTAINERS_COLUMN,
            IMAGES_COLUMN,
            wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
        ]
    }

    fn cells(&self, d: &DaemonSet, now: Timestamp) -> Vec<Value> {
        let spec = d.spec.clone().unwrap_or_default();
        let st = d.status.clone().unwrap_or_default();
        let (containers, images) = containers_and_images(Some(&spec.template));
        let node_selector = spec.template.spec.as_ref().and_then(|s| s.node_selector.as_ref());
        vec![
            json!(d.metadata.name.clone().unwrap_or_default()),
            json!(st.desired_number_scheduled),
            json!(st.current_number_scheduled),
            json!(st.number_ready),
            json!(st.updated_number_scheduled.unwrap_or(0)),
            json!(st.number_available.unwrap_or(0)),
            json!(format_labels(node_selector)),
            json!(age(d.metadata.creation_timestamp.as_ref(), now)),
            containers,
            images,
            json!(format_label_selector(&spec.selector)),
        ]
    }
}
