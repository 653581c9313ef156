//! PersistentVolumeClaims and PersistentVolumes (core/v1): defaults (volume mode, reclaim
//! policy, the Pending phase of a new object), validation (access modes, storage request or
//! capacity, a PV's single volume source), a claim's spec fixed once bound, and the columns.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// Access modes as upstream prints them: deduplicated, in RWO, ROX, RWX, RWOP order.
pub fn access_modes(modes: Option<&Vec<String>>) -> String {
    let modes = modes.map(|m| m.as_slice()).unwrap_or_default();
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(m, _)| modes.iter().any(|x| x == m))
        .map(|(_, s)| *s)
        .collect::<Vec<_>>()
        .join(",")
}

fn storage_class(meta: &ObjectMeta, spec_class: Option<&String>) -> String {
    meta.annotations.as_ref().and_then(|a| a.get("volume.beta.kubernetes.io/storage-class")).or(spec_class).cloned().unwrap_or_default()
}

fn validate_modes(path: &str, modes: Option<&Vec<String>>, volume_mode: Option<&String>) -> Vec<FieldError> {
    let mut errs = vec![];
    let modes = modes.map(|m| m.as_slice()).unwrap_or_default();
    if modes.is_empty() {
        errs.push(FieldError::required(format!("{path}.accessModes"), "at least 1 access mode is required"));
    }
    for m in modes.iter().filter(|m| !ACCESS_MODES.contains(&m.as_str())) {
        errs.push(FieldError::not_supported(format!("{path}.accessModes"), m.as_str(), ACCESS_MODES));
    }
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        errs.push(FieldError::forbidden(format!("{path}.accessModes"), "may not use ReadWriteOncePod with other access modes"));
    }
    if let Some(v) = volume_mode.filter(|v| !VOLUME_MODES.contains(&v.as_str())) {
        errs.push(FieldError::not_supported(format!("{path}.volumeMode"), v.as_str(), VOLUME_MODES));
    }
    errs
}

fn validate_storage(path: &str, q: Option<&BTreeMap<String, Quantity>>) -> Vec<FieldError> {
    match q.and_then(|q| q.get("storage")) {
        None => vec![FieldError::required(path, "")],
        Some(q) if q.0.starts_with('-') => vec![FieldError::invalid(path, q.0.as_str(), "must be greater than or equal to 0")],
        Some(_) => vec![],
    }
}

pub struct PersistentVolumeClaims;

impl Kind for PersistentVolumeClaims {
    type Object = PersistentVolumeClaim;

    fn default(&self, c: &mut PersistentVolumeClaim) {
        c.spec.get_or_insert_with(Default::default).volume_mode.get_or_insert_with(|| "Filesystem".into());
        c.status.get_or_insert_with(Default::default).phase.get_or_insert_with(|| "Pending".into());
    }

    fn prepare_for_create(&self, c: &mut PersistentVolumeClaim) {
        c.status = Some(Default::default());
    }

    fn validate(&self, c: &PersistentVolumeClaim) -> Vec<FieldError> {
        let spec = c.spec.clone().unwrap_or_default();
        let mut errs = validate_modes("spec", spec.access_modes.as_ref(), spec.volume_mode.as_ref());
        errs.extend(validate_storage("spec.resources[storage]", spec.resources.as_ref().and_then(|r| r.requests.as_ref())));
        errs
    }

    fn validate_update(&self, new: &PersistentVolumeClaim, old: &PersistentVolumeClaim) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let (mut n, mut o) = (new.spec.clone().unwrap_or_default(), old.spec.clone().unwrap_or_default());
        // a bound claim's volume name is set once; its requests may grow (expansion)
        if o.volume_name.as_deref().unwrap_or("").is_empty() {
            o.volume_name = n.volume_name.clone();
        }
        n.resources = None;
        o.resources = None;
        n.volume_attributes_class_name = None;
        o.volume_attributes_class_name = None;
        if n != o {
            errs.push(FieldError::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
            col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
            col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
            col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
            col("StorageClass", "string", "StorageClass of the pvc"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
            AGE_COLUMN,
            wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
        ]
    }

    fn cells(&self, c: &PersistentVolumeClaim, now: Timestamp) -> Vec<Value> {
        let spec = c.spec.clone().unwrap_or_default();
        let status = c.status.clone().unwrap_or_default();
        let phase = if c.metadata.deletion_timestamp.is_some() { "Terminating".into() } else { status.phase.clone().unwrap_or_default() };
        let volume = spec.volume_name.clone().unwrap_or_default();
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (status.capacity.as_ref().and_then(|c| c.get("storage")).map(|q| q.0.clone()).unwrap_or_default(), access_modes(status.access_modes.as_ref()))
        };
        vec![
            json!(c.metadata.name.clone().unwrap_or_default()),
            json!(phase),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(storage_class(&c.metadata, spec.storage_class_name.as_ref())),
            json!(spec.volume_attributes_class_name.clone().unwrap_or_else(|| "<unset>".into())),
            json!(age(c.metadata.creation_timestamp.as_ref(), now)),
            json!(spec.volume_mode.clone().unwrap_or_else(|| "<unset>".into())),
        ]
    }

    fn fields(&self, c: &PersistentVolumeClaim) -> Vec<(&'static str, String)> {
        vec![("status.phase", c.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default())]
    }
}

/// The keys of a PV spec that are not volume sources.
const PV_NON_SOURCES: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeAttributesClassName",
    "volumeMode",
];

pub struct PersistentVolumes;

impl Kind for PersistentVolumes {
    type Object = PersistentVolume;

    fn default(&self, v: &mut PersistentVolume) {
        let spec = v.spec.get_or_insert_with(Default::default);
        spec.persistent_volume_reclaim_policy.get_or_insert_with(|| "Retain".into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        v.status.get_or_insert_with(Default::default).phase.get_or_insert_with(|| "Pending".into());
    }

    fn prepare_for_create(&self, v: &mut PersistentVolume) {
        v.status = Some(Default::default());
    }

    fn validate(&self, v: &PersistentVolume) -> Vec<FieldError> {
        let spec = v.spec.clone().unwrap_or_default();
        let mut errs = validate_modes("spec", spec.access_modes.as_ref(), spec.volume_mode.as_ref());
        errs.extend(validate_storage("spec.capacity", spec.capacity.as_ref()));
        match spec.persistent_volume_reclaim_policy.as_deref() {
            None | Some("Retain") | Some("Delete") | Some("Recycle") => {}
            Some(p) => errs.push(FieldError::not_supported("spec.persistentVolumeReclaimPolicy", p, &["Delete", "Recycle", "Retain"])),
        }
        let sources = serde_json::to_value(&spec)
            .ok()
            .and_then(|s| s.as_object().map(|m| m.keys().filter(|k| !PV_NON_SOURCES.contains(&k.as_str())).count()))
            .unwrap_or(0);
        match sources {
            0 => errs.push(FieldError::required("spec", "must specify a volume type")),
            1 => {}
            _ => errs.push(FieldError::forbidden("spec", "may not specify more than 1 volume type")),
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
            col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
            col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
            col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
            col("StorageClass", "string", "StorageClass of the pv"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
            col(
                "Reason",
                "string",
                "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
            ),
            AGE_COLUMN,
            wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
        ]
    }

    fn cells(&self, v: &PersistentVolume, now: Timestamp) -> Vec<Value> {
        let spec = v.spec.clone().unwrap_or_default();
        let status = v.status.clone().unwrap_or_default();
        let claim =
            spec.claim_ref.as_ref().map(|r| format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default())).unwrap_or_default();
        let phase = if v.metadata.deletion_timestamp.is_some() { "Terminating".into() } else { status.phase.clone().unwrap_or_default() };
        vec![
            json!(v.metadata.name.clone().unwrap_or_default()),
            json!(spec.capacity.as_ref().and_then(|c| c.get("storage")).map(|q| q.0.clone()).unwrap_or_else(|| "0".into())),
            json!(access_modes(spec.access_modes.as_ref())),
            json!(spec.persistent_volume_reclaim_policy.clone().unwrap_or_default()),
            json!(phase),
            json!(claim),
            json!(storage_class(&v.metadata, spec.storage_class_name.as_ref())),
            json!(spec.volume_attributes_class_name.clone().unwrap_or_else(|| "<unset>".into())),
            json!(status.reason.clone().unwrap_or_default()),
            json!(age(v.metadata.creation_timestamp.as_ref(), now)),
            json!(spec.volume_mode.clone().unwrap_or_else(|| "<unset>".into())),
        ]
    }
}
