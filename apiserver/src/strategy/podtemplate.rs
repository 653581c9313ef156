//! PodTemplates (core/v1): the template's pod spec defaults and validation, and the
//! CONTAINERS/IMAGES/POD LABELS columns.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplate;
use serde_json::{json, Value};

use super::workload::{containers_and_images, default_template, format_labels, validate_template};
use super::{col, Column, Kind, NAME_COLUMN};
use crate::status::FieldError;

pub struct PodTemplates;

impl Kind for PodTemplates {
    type Object = PodTemplate;

    fn default(&self, t: &mut PodTemplate) {
        default_template(t.template.as_mut());
    }

    fn validate(&self, t: &PodTemplate) -> Vec<FieldError> {
        validate_template(t.template.as_ref(), "template", &["Always", "OnFailure", "Never"])
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Containers", "string", "Names of each container in the template."),
            col("Images", "string", "Images referenced by each container in the template."),
            col("Pod Labels", "string", "The labels for the pod template."),
        ]
    }

    fn cells(&self, t: &PodTemplate, _now: Timestamp) -> Vec<Value> {
        let (containers, images) = containers_and_images(t.template.as_ref());
        let labels = t.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref());
        vec![json!(t.metadata.name.clone().unwrap_or_default()), containers, images, json!(format_labels(labels))]
    }
}
