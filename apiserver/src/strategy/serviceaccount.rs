//! ServiceAccounts: the Table columns (token controllers come with authentication by token).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::table::age;

pub struct ServiceAccounts;

impl Kind for ServiceAccounts {
    type Object = ServiceAccount;

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            AGE_COLUMN,
        ]
    }

    fn cells(&self, sa: &ServiceAccount, now: Timestamp) -> Vec<Value> {
        let n = sa.secrets.as_ref().map_or(0, |s| s.len());
        vec![json!(sa.metadata.name.clone().unwrap_or_default()), json!(n), json!(age(sa.metadata.creation_timestamp.as_ref(), now))]
    }
}
