//! ReplicaSets (apps/v1) and ReplicationControllers (core/v1): replicas defaulted to 1 (an RC's
//! selector and labels from its template), selector must match the template, which restarts
//! Always; the selector of a ReplicaSet never changes; generation tracking, status cleared on
//! create, and the DESIRED/CURRENT/READY columns both share.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use serde_json::{json, Value};

use super::workload::{
    containers_and_images, default_template, format_labels, go_map, non_negative, selector_immutable, template_labels, validate_selector_matches,
    validate_template, CONTAINERS_COLUMN, IMAGES_COLUMN,
};
use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::selector::format_label_selector;
use crate::status::FieldError;
use crate::table::age;

fn columns(selector: &'static str) -> Vec<Column> {
    vec![
        NAME_COLUMN,
        col("Desired", "integer", "Replicas is the number of desired replicas."),
        col("Current", "integer", "Replicas is the most recently observed number of replicas."),
        col("Ready", "integer", "The number of ready replicas for this replica set."),
        AGE_COLUMN,
        CONTAINERS_COLUMN,
        IMAGES_COLUMN,
        wide("Selector", "string", selector),
    ]
}

pub struct ReplicaSets;

impl Kind for ReplicaSets {
    type Object = ReplicaSet;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, rs: &mut ReplicaSet) {
        let spec = rs.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        default_template(spec.template.as_mut());
    }

    fn prepare_for_create(&self, rs: &mut ReplicaSet) {
        rs.status = Some(Default::default());
    }

    fn validate(&self, rs: &ReplicaSet) -> Vec<FieldError> {
        let Some(spec) = &rs.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = non_negative("spec.replicas", spec.replicas.map(i64::from));
        errs.extend(non_negative("spec.minReadySeconds", spec.min_ready_seconds.map(i64::from)));
        errs.extend(validate_selector_matches(&spec.selector, spec.template.as_ref(), "replicaset"));
        errs.extend(validate_template(spec.template.as_ref(), "spec.template", &["Always"]));
        errs
    }

    fn validate_update(&self, new: &ReplicaSet, old: &ReplicaSet) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if let (Some(n), Some(o)) = (&new.spec, &old.spec) {
            errs.extend(selector_immutable(&n.selector, &o.selector));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        columns("Selector is a label query over pods that should match the replica count.")
    }

    fn cells(&self, rs: &ReplicaSet, now: Timestamp) -> Vec<Value> {
        let spec = rs.spec.clone().unwrap_or_default();
        let status = rs.status.clone().unwrap_or_default();
        let (containers, images) = containers_and_images(spec.template.as_ref());
        vec![
            json!(rs.metadata.name.clone().unwrap_or_default()),
            json!(spec.replicas.unwrap_or(0)),
            json!(status.replicas),
            json!(status.ready_replicas.unwrap_or(0)),
            json!(age(rs.metadata.creation_timestamp.as_ref(), now)),
            containers,
            images,
            json!(format_label_selector(&spec.selector)),
        ]
    }

    fn fields(&self, rs: &ReplicaSet) -> Vec<(&'static str, String)> {
        vec![("status.replicas", rs.status.as_ref().map_or(0, |s| s.replicas).to_string())]
    }
}

pub struct ReplicationControllers;

impl Kind for ReplicationControllers {
    type Object = ReplicationController;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, rc: &mut ReplicationController) {
        let labels = rc.spec.as_ref().map(|s| template_labels(s.template.as_ref())).unwrap_or_default();
        let spec = rc.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        if spec.selector.as_ref().is_none_or(|s| s.is_empty()) && !labels.is_empty() {
            spec.selector = Some(labels.clone());
        }
        if rc.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) && !labels.is_empty() {
            rc.metadata.labels = Some(labels);
        }
        default_template(spec.template.as_mut());
    }

    fn prepare_for_create(&self, rc: &mut ReplicationController) {
        rc.status = Some(Default::default());
    }

    fn validate(&self, rc: &ReplicationController) -> Vec<FieldError> {
        let Some(spec) = &rc.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = non_negative("spec.replicas", spec.replicas.map(i64::from));
        errs.extend(non_negative("spec.minReadySeconds", spec.min_ready_seconds.map(i64::from)));
        let selector = spec.selector.clone().unwrap_or_default();
        if selector.is_empty() {
            errs.push(FieldError::required("spec.selector", ""));
        } else {
            errs.extend(super::validate_labels("spec.selector", Some(&selector)));
            let labels = template_labels(spec.template.as_ref());
            if spec.template.is_some() && !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                errs.push(FieldError::invalid("spec.template.metadata.labels", go_map(&labels), "`selector` does not match template `labels`"));
            }
        }
        match &spec.template {
            Some(_) => errs.extend(validate_template(spec.template.as_ref(), "spec.template", &["Always"])),
            None => errs.push(FieldError::required("spec.template", "")),
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        columns("Selector is a label query over pods that should match the Replicas count.")
    }

    fn cells(&self, rc: &ReplicationController, now: Timestamp) -> Vec<Value> {
        let spec = rc.spec.clone().unwrap_or_default();
        let status = rc.status.clone().unwrap_or_default();
        let (containers, images) = containers_and_images(spec.template.as_ref());
        vec![
            json!(rc.metadata.name.clone().unwrap_or_default()),
            json!(spec.replicas.unwrap_or(0)),
            json!(status.replicas),
            json!(status.ready_replicas.unwrap_or(0)),
            json!(age(rc.metadata.creation_timestamp.as_ref(), now)),
            containers,
            images,
            json!(format_labels(spec.selector.as_ref())),
        ]
    }

    fn fields(&self, rc: &ReplicationController) -> Vec<(&'static str, String)> {
        vec![("status.replicas", rc.status.as_ref().map_or(0, |s| s.replicas).to_string())]
    }
}
