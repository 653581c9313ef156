//! ResourceQuotas and LimitRanges (core/v1): resource names and quantities valid, a quota's
//! status cleared on create (the quota controller fills it), a container limit range's default
//! and defaultRequest filled from max and min, and the columns (`REQUEST`/`LIMIT` from status).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

fn validate_resources(path: &str, m: Option<&BTreeMap<String, Quantity>>) -> Vec<FieldError> {
    let mut errs = vec![];
    for (k, q) in m.into_iter().flatten() {
        let p = format!("{path}[{k}]");
        errs.extend(berth_names::qualified_name(k).into_iter().map(|r| FieldError::invalid(p.as_str(), k.as_str(), r)));
        if q.0.starts_with('-') {
            errs.push(FieldError::invalid(p.as_str(), q.0.as_str(), "must be greater than or equal to 0"));
        }
    }
    errs
}

pub struct ResourceQuotas;

impl Kind for ResourceQuotas {
    type Object = ResourceQuota;

    fn prepare_for_create(&self, q: &mut ResourceQuota) {
        q.status = None;
    }

    fn validate(&self, q: &ResourceQuota) -> Vec<FieldError> {
        let spec = q.spec.clone().unwrap_or_default();
        let mut errs = validate_resources("spec.hard", spec.hard.as_ref());
        for (i, s) in spec.scopes.iter().flatten().enumerate() {
            const SCOPES: &[&str] = &["BestEffort", "CrossNamespacePodAffinity", "NotBestEffort", "NotTerminating", "PriorityClass", "Terminating"];
            if !SCOPES.contains(&s.as_str()) {
                errs.push(FieldError::not_supported(format!("spec.scopes[{i}]"), s.as_str(), SCOPES));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            AGE_COLUMN,
            col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
            col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
        ]
    }

    fn cells(&self, q: &ResourceQuota, now: Timestamp) -> Vec<Value> {
        let status = q.status.clone().unwrap_or_default();
        let (hard, used) = (status.hard.unwrap_or_default(), status.used.unwrap_or_default());
        let (mut request, mut limit) = (vec![], vec![]);
        for (name, h) in &hard {
            let u = used.get(name).map(|q| q.0.as_str()).unwrap_or("0");
            let cell = format!("{name}: {u}/{}", h.0);
            if name.split('.').next() == Some("limits") && name.contains('.') {
                limit.push(cell);
            } else {
                request.push(cell);
            }
        }
        vec![
            json!(q.metadata.name.clone().unwrap_or_default()),
            json!(age(q.metadata.creation_timestamp.as_ref(), now)),
            json!(request.join(", ")),
            json!(limit.join(", ")),
        ]
    }
}

pub struct LimitRanges;

const LIMIT_TYPES: &[&str] = &["Container", "PersistentVolumeClaim", "Pod"];

impl Kind for LimitRanges {
    type Object = LimitRange;

    fn default(&self, l: &mut LimitRange) {
        for item in l.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
            if item.type_ != "Container" {
                continue;
            }
            let default = item.default.get_or_insert_with(BTreeMap::new);
            for (k, v) in item.max.iter().flatten() {
                default.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let default = default.clone();
            let request = item.default_request.get_or_insert_with(BTreeMap::new);
            for (k, v) in default.iter().chain(item.min.iter().flatten()) {
                request.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if item.default.as_ref().is_some_and(|d| d.is_empty()) {
                item.default = None;
            }
            if item.default_request.as_ref().is_some_and(|d| d.is_empty()) {
                item.default_request = None;
            }
        }
    }

    fn validate(&self, l: &LimitRange) -> Vec<FieldError> {
        let mut errs = vec![];
        for (i, item) in l.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
            let p = format!("spec.limits[{i}]");
            if !LIMIT_TYPES.contains(&item.type_.as_str()) {
                errs.push(FieldError::not_supported(format!("{p}.type"), item.type_.as_str(), LIMIT_TYPES));
            }
            for (name, m) in [("max", &item.max), ("min", &item.min), ("default", &item.default), ("defaultRequest", &item.default_request)] {
                errs.extend(validate_resources(&format!("{p}.{name}"), m.as_ref()));
            }
            if item.type_ == "Pod" && (item.default.is_some() || item.default_request.is_some()) {
                errs.push(FieldError::forbidden(format!("{p}.default"), "may not be specified when `type` is 'Pod'"));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, Column { name: "Created At", kind: "date", ..AGE_COLUMN }]
    }

    fn cells(&self, l: &LimitRange, _now: Timestamp) -> Vec<Value> {
        vec![json!(l.metadata.name.clone().unwrap_or_default()), json!(l.metadata.creation_timestamp)]
    }
}
