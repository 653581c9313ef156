//! StorageClasses (storage.k8s.io/v1): defaults (reclaimPolicy Delete, volumeBindingMode
//! Immediate), validation (a provisioner, the supported policies and modes), provisioner,
//! parameters, reclaimPolicy and volumeBindingMode fixed once created, and the columns
//! (`NAME` carries " (default)" for the default class, as upstream prints it).

use jiff::Timestamp;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

/// The annotation that makes a class the default one (and its beta spelling, still honoured).
pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const BETA_IS_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// Whether a class is marked default (upstream's storageutil.IsDefaultAnnotation).
pub fn is_default(meta: &ObjectMeta) -> bool {
    let a = meta.annotations.as_ref();
    a.is_some_and(|a| a.get(IS_DEFAULT_CLASS).map(String::as_str) == Some("true") || a.get(BETA_IS_DEFAULT_CLASS).map(String::as_str) == Some("true"))
}

pub struct StorageClasses;

impl Kind for StorageClasses {
    type Object = StorageClass;

    fn default(&self, c: &mut StorageClass) {
        c.reclaim_policy.get_or_insert_with(|| "Delete".into());
        c.volume_binding_mode.get_or_insert_with(|| "Immediate".into());
    }

    fn validate(&self, c: &StorageClass) -> Vec<FieldError> {
        let mut errs = vec![];
        if c.provisioner.is_empty() {
            errs.push(FieldError::required("provisioner", ""));
        }
        match c.reclaim_policy.as_deref() {
            None | Some("Delete") | Some("Retain") => {}
            Some(p) => errs.push(FieldError::not_supported("reclaimPolicy", p, &["Delete", "Retain"])),
        }
        match c.volume_binding_mode.as_deref() {
            None => errs.push(FieldError::required("volumeBindingMode", "")),
            Some("Immediate") | Some("WaitForFirstConsumer") => {}
            Some(m) => errs.push(FieldError::not_supported("volumeBindingMode", m, &["Immediate", "WaitForFirstConsumer"])),
        }
        errs
    }

    fn validate_update(&self, new: &StorageClass, old: &StorageClass) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.parameters != old.parameters {
            errs.push(FieldError::forbidden("parameters", "updates to parameters are forbidden."));
        }
        if new.provisioner != old.provisioner {
            errs.push(FieldError::forbidden("provisioner", "updates to provisioner are forbidden."));
        }
        if new.reclaim_policy != old.reclaim_policy {
            errs.push(FieldError::forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."));
        }
        if new.volume_binding_mode != old.volume_binding_mode {
            errs.push(FieldError::invalid("volumeBindingMode", new.volume_binding_mode.clone().unwrap_or_default(), "field is immutable"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
            col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete."),
            col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature."),
            col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
            AGE_COLUMN,
        ]
    }

    fn cells(&self, c: &StorageClass, now: Timestamp) -> Vec<Value> {
        let mut name = c.metadata.name.clone().unwrap_or_default();
        if is_default(&c.metadata) {
            name.push_str(" (default)");
        }
        vec![
            json!(name),
            json!(c.provisioner),
            json!(c.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
            json!(c.volume_binding_mode.clone().unwrap_or_else(|| "Immediate".into())),
            json!(c.allow_volume_expansion.unwrap_or(false).to_string()),
            json!(age(c.metadata.creation_timestamp.as_ref(), now)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(v: Value) -> StorageClass {
        serde_json::from_value(v).expect("class")
    }

    #[test]
    fn defaults_validation_and_immutable_fields() {
        let mut c = class(json!({"metadata": {"name": "fast"}, "provisioner": "rancher.io/local-path"}));
        StorageClasses.default(&mut c);
        assert_eq!((c.reclaim_policy.as_deref(), c.volume_binding_mode.as_deref()), (Some("Delete"), Some("Immediate")));
        assert!(StorageClasses.validate(&c).is_empty());
        let mut bad = c.clone();
        bad.provisioner = String::new();
        bad.reclaim_policy = Some("Recycle".into());
        assert_eq!(StorageClasses.validate(&bad).len(), 2);
        let mut changed = c.clone();
        changed.volume_binding_mode = Some("WaitForFirstConsumer".into());
        changed.reclaim_policy = Some("Retain".into());
        let errs = StorageClasses.validate_update(&changed, &c);
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn the_default_class_is_marked_in_its_name_cell() {
        let c = class(json!({"metadata": {"name": "local-path", "annotations": {IS_DEFAULT_CLASS: "true"}}, "provisioner": "p"}));
        assert_eq!(StorageClasses.cells(&c, Timestamp::now())[0], json!("local-path (default)"));
    }
}
