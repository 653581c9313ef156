//! StatefulSets (apps/v1): defaults (replicas, pod management, rolling update with partition 0,
//! history limit, PVC retention), selector matches the template which restarts Always, the
//! selector never changes, generation tracking, status cleared on create, the READY column.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};
use serde_json::{json, Value};

use super::workload::{
    containers_and_images, default_template, non_negative, selector_immutable, validate_selector_matches, validate_template, CONTAINERS_COLUMN, IMAGES_COLUMN,
};
use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct StatefulSets;

impl Kind for StatefulSets {
    type Object = StatefulSet;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, s: &mut StatefulSet) {
        let spec = s.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.pod_management_policy.get_or_insert_with(|| "OrderedReady".into());
        spec.revision_history_limit.get_or_insert(10);
        let us = spec.update_strategy.get_or_insert_with(StatefulSetUpdateStrategy::default);
        if us.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
            us.rolling_update.get_or_insert_with(RollingUpdateStatefulSetStrategy::default).partition.get_or_insert(0);
        }
        let rp = spec.persistent_volume_claim_retention_policy.get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
        rp.when_deleted.get_or_insert_with(|| "Retain".into());
        rp.when_scaled.get_or_insert_with(|| "Retain".into());
        for pvc in spec.volume_claim_templates.iter_mut().flatten() {
            if let Some(ps) = pvc.spec.as_mut() {
                ps.volume_mode.get_or_insert_with(|| "Filesystem".into());
            }
            pvc.status.get_or_insert_with(Default::default).phase.get_or_insert_with(|| "Pending".into());
        }
        default_template(Some(&mut spec.template));
    }

    fn prepare_for_create(&self, s: &mut StatefulSet) {
        s.status = Some(Default::default());
    }

    fn validate(&self, s: &StatefulSet) -> Vec<FieldError> {
        let Some(spec) = &s.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = non_negative("spec.replicas", spec.replicas.map(i64::from));
        match spec.pod_management_policy.as_deref() {
            None | Some("OrderedReady") | Some("Parallel") => {}
            Some(p) => errs.push(FieldError::not_supported("spec.podManagementPolicy", p, &["OrderedReady", "Parallel"])),
        }
        if let Some(t) = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()) {
            if t != "RollingUpdate" && t != "OnDelete" {
                errs.push(FieldError::not_supported("spec.updateStrategy.type", t, &["OnDelete", "RollingUpdate"]));
            }
        }
        errs.extend(validate_selector_matches(&spec.selector, Some(&spec.template), "statefulset"));
        // the pods' volumes include one per claim template (upstream leaves the pod spec of a
        // StatefulSet unchecked for this reason; Berth checks it with those volumes in place)
        let mut template = spec.template.clone();
        if let (Some(ps), Some(claims)) = (template.spec.as_mut(), spec.volume_claim_templates.as_ref()) {
            let names: Vec<String> = claims.iter().filter_map(|c| c.metadata.name.clone()).collect();
            let volumes = ps.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| !names.contains(&v.name));
            volumes.extend(names.iter().map(|n| Volume {
                name: n.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: n.clone(), read_only: None }),
                ..Default::default()
            }));
        }
        errs.extend(validate_template(Some(&template), "spec.template", &["Always"]));
        errs
    }

    fn validate_update(&self, new: &StatefulSet, old: &StatefulSet) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if let (Some(n), Some(o)) = (&new.spec, &old.spec) {
            errs.extend(selector_immutable(&n.selector, &o.selector));
            let forbidden = n.service_name != o.service_name
                || n.pod_management_policy != o.pod_management_policy
                || serde_json::to_value(&n.volume_claim_templates).ok() != serde_json::to_value(&o.volume_claim_templates).ok();
            if forbidden {
                errs.push(FieldError::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, col("Ready", "string", "Number of the pod with ready state"), AGE_COLUMN, CONTAINERS_COLUMN, IMAGES_COLUMN]
    }

    fn cells(&self, s: &StatefulSet, now: Timestamp) -> Vec<Value> {
        let spec = s.spec.clone().unwrap_or_default();
        let status = s.status.clone().unwrap_or_default();
        let (containers, images) = containers_and_images(Some(&spec.template));
        vec![
            json!(s.metadata.name.clone().unwrap_or_default()),
            json!(format!("{}/{}", status.ready_replicas.unwrap_or(0), spec.replicas.unwrap_or(0))),
            json!(age(s.metadata.creation_timestamp.as_ref(), now)),
            containers,
            images,
        ]
    }
}
