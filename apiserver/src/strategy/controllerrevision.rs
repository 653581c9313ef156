//! ControllerRevisions (apps/v1): revision not negative, data immutable, and the
//! CONTROLLER/REVISION columns (the controller as `kind.group/name` from the owner reference).

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct ControllerRevisions;

impl Kind for ControllerRevisions {
    type Object = ControllerRevision;

    fn validate(&self, r: &ControllerRevision) -> Vec<FieldError> {
        super::workload::non_negative("revision", Some(r.revision))
    }

    fn validate_update(&self, new: &ControllerRevision, old: &ControllerRevision) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.data != old.data {
            errs.push(FieldError::invalid("data", "", "field is immutable"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Controller", "string", "Controller of the object"),
            col("Revision", "string", "Revision indicates the revision of the state represented by Data."),
            AGE_COLUMN,
        ]
    }

    fn cells(&self, r: &ControllerRevision, now: Timestamp) -> Vec<Value> {
        let owner = r.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
        let controller = match owner {
            Some(o) => {
                let group = o.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                let gk = if group.is_empty() { o.kind.clone() } else { format!("{}.{group}", o.kind) };
                format!("{}/{}", gk.to_lowercase(), o.name)
            }
            None => "<none>".into(),
        };
        vec![json!(r.metadata.name.clone().unwrap_or_default()), json!(controller), json!(r.revision), json!(age(r.metadata.creation_timestamp.as_ref(), now))]
    }
}
