//! ConfigMaps: key grammar of `data` and `binaryData`, no key in both, the Table columns.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct ConfigMaps;

/// Field errors of a config key (ConfigMap and Secret data keys).
pub fn validate_config_key(path: &str, key: &str) -> Vec<FieldError> {
    let ok = !key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let mut errs = vec![];
    if key.len() > berth_names::DNS1123_SUBDOMAIN_MAX {
        errs.push(FieldError::invalid(path, key, format!("must be no more than {} characters", berth_names::DNS1123_SUBDOMAIN_MAX)));
    }
    if !ok {
        errs.push(FieldError::invalid(path, key, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
    } else if key == "." || key == ".." || key.starts_with("..") {
        errs.push(FieldError::invalid(path, key, "must not be '.' or '..' or start with '..'"));
    }
    errs
}

impl Kind for ConfigMaps {
    type Object = ConfigMap;

    fn validate(&self, cm: &ConfigMap) -> Vec<FieldError> {
        let mut errs = vec![];
        for k in cm.data.iter().flatten().map(|(k, _)| k) {
            errs.extend(validate_config_key(&format!("data[{k}]"), k));
        }
        for k in cm.binary_data.iter().flatten().map(|(k, _)| k) {
            errs.extend(validate_config_key(&format!("binaryData[{k}]"), k));
            if cm.data.as_ref().is_some_and(|d| d.contains_key(k)) {
                errs.push(FieldError::invalid(format!("data[{k}]"), k.as_str(), "duplicate of key present in binaryData"));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, col("Data", "integer", "Data contains the configuration data."), AGE_COLUMN]
    }

    fn cells(&self, cm: &ConfigMap, now: Timestamp) -> Vec<Value> {
        let n = cm.data.as_ref().map_or(0, |d| d.len()) + cm.binary_data.as_ref().map_or(0, |d| d.len());
        vec![json!(cm.metadata.name.clone().unwrap_or_default()), json!(n), json!(age(cm.metadata.creation_timestamp.as_ref(), now))]
    }
}
