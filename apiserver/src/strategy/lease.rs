//! Leases (coordination.k8s.io/v1): duration and transitions positive, and the HOLDER column.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct Leases;

impl Kind for Leases {
    type Object = Lease;

    fn validate(&self, l: &Lease) -> Vec<FieldError> {
        let spec = l.spec.clone().unwrap_or_default();
        let mut errs = vec![];
        if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            errs.push(FieldError::invalid("spec.leaseDurationSeconds", d, "must be greater than 0"));
        }
        errs.extend(super::workload::non_negative("spec.leaseTransitions", spec.lease_transitions.map(i64::from)));
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."), AGE_COLUMN]
    }

    fn cells(&self, l: &Lease, now: Timestamp) -> Vec<Value> {
        let holder = l.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
        vec![json!(l.metadata.name.clone().unwrap_or_default()), json!(holder), json!(age(l.metadata.creation_timestamp.as_ref(), now))]
    }
}
