//! Secrets: `stringData` folded into `data` (as upstream's conversion does), type Opaque by
//! default, key grammar, the Table columns and the `type` field selector.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::{json, Value};

use super::configmap::validate_config_key;
use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct Secrets;

impl Kind for Secrets {
    type Object = Secret;

    fn default(&self, s: &mut Secret) {
        s.type_.get_or_insert_with(|| "Opaque".into());
        if let Some(sd) = s.string_data.take() {
            let data = s.data.get_or_insert_with(Default::default);
            for (k, v) in sd {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
    }

    fn validate(&self, s: &Secret) -> Vec<FieldError> {
        s.data.iter().flatten().flat_map(|(k, _)| validate_config_key(&format!("data[{k}]"), k)).collect()
    }

    fn validate_update(&self, new: &Secret, old: &Secret) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.type_ != old.type_ {
            errs.push(FieldError::invalid("type", new.type_.clone().unwrap_or_default(), "field is immutable"));
        }
        if old.immutable == Some(true) && new.data != old.data {
            errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, col("Type", "string", "The type of the secret"), col("Data", "string", "The number of entries in the secret"), AGE_COLUMN]
    }

    fn cells(&self, s: &Secret, now: Timestamp) -> Vec<Value> {
        let n = s.data.as_ref().map_or(0, |d| d.len());
        vec![
            json!(s.metadata.name.clone().unwrap_or_default()),
            json!(s.type_.clone().unwrap_or_default()),
            json!(n),
            json!(age(s.metadata.creation_timestamp.as_ref(), now)),
        ]
    }

    fn fields(&self, s: &Secret) -> Vec<(&'static str, String)> {
        vec![("type", s.type_.clone().unwrap_or_default())]
    }
}
