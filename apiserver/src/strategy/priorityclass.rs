//! PriorityClasses (scheduling.k8s.io/v1): the preemption policy default, the reserved
//! `system-` names and values above one billion (only the two system classes the server
//! creates), value and policy immutable, and the VALUE/GLOBAL-DEFAULT/PREEMPTIONPOLICY columns.

use jiff::Timestamp;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

/// The priority classes every cluster has: name, value, description.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i32, &str)] = &[
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
];

/// The highest value of a user-defined priority class.
const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;

pub struct PriorityClasses;

impl Kind for PriorityClasses {
    type Object = PriorityClass;

    fn default(&self, p: &mut PriorityClass) {
        p.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".into());
    }

    fn validate(&self, p: &PriorityClass) -> Vec<FieldError> {
        let mut errs = vec![];
        let name = p.metadata.name.clone().unwrap_or_default();
        match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name) {
            Some((_, value, _)) if *value != p.value => {
                errs.push(FieldError::forbidden("metadata.name", format!("{name:?} is a system priority class and its value must be {value}")))
            }
            Some(_) => {}
            None if name.starts_with("system-") => errs.push(FieldError::forbidden("metadata.name", "priority class names with 'system-' prefix are reserved")),
            None if p.value > HIGHEST_USER_DEFINABLE_PRIORITY => {
                errs.push(FieldError::forbidden("value", format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}")))
            }
            None => {}
        }
        match p.preemption_policy.as_deref() {
            None | Some("PreemptLowerPriority") | Some("Never") => {}
            Some(x) => errs.push(FieldError::not_supported("preemptionPolicy", x, &["Never", "PreemptLowerPriority"])),
        }
        errs
    }

    fn validate_update(&self, new: &PriorityClass, old: &PriorityClass) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.value != old.value {
            errs.push(FieldError::forbidden("value", "may not be changed in an update."));
        }
        if new.preemption_policy != old.preemption_policy {
            errs.push(FieldError::invalid("preemptionPolicy", new.preemption_policy.clone().unwrap_or_default(), "field is immutable"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Value", "integer", "value represents the integer value of this priority class."),
            col(
                "Global-Default",
                "boolean",
                "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
            ),
            AGE_COLUMN,
            col("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority."),
        ]
    }

    fn cells(&self, p: &PriorityClass, now: Timestamp) -> Vec<Value> {
        vec![
            json!(p.metadata.name.clone().unwrap_or_default()),
            json!(p.value),
            json!(p.global_default.unwrap_or(false)),
            json!(age(p.metadata.creation_timestamp.as_ref(), now)),
            json!(p.preemption_policy.clone().unwrap_or_default()),
        ]
    }
}
