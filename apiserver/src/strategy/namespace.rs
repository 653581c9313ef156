//! Namespaces: DNS-1123 label names, the `kubernetes` finalizer and phase Active on create (not a
//! default: a finalized namespace has none), the
//! `kubernetes.io/metadata.name` label upstream keeps equal to the name, Table columns. An update
//! keeps spec.finalizers (only the `finalize` subresource writes them). Deleting one marks it
//! Terminating (the REST layer); the namespace controller empties it and removes the
//! `kubernetes` finalizer, and the namespace goes with its last finalizer.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::table::age;

pub struct Namespaces;

/// The label upstream sets on every namespace to its name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Kind for Namespaces {
    type Object = Namespace;

    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::dns1123_label
    }

    fn default(&self, ns: &mut Namespace) {
        if let Some(name) = ns.metadata.name.clone() {
            ns.metadata.labels.get_or_insert_with(Default::default).insert(NAME_LABEL.into(), name);
        }
        ns.status.get_or_insert_with(NamespaceStatus::default).phase.get_or_insert_with(|| "Active".into());
    }

    fn prepare_for_create(&self, ns: &mut Namespace) {
        ns.status = Some(NamespaceStatus { phase: Some("Active".into()), ..Default::default() });
        ns.spec = Some(NamespaceSpec { finalizers: Some(vec!["kubernetes".into()]) });
    }

    fn prepare_for_update(&self, new: &mut Namespace, old: &Namespace) {
        let finalizers = old.spec.as_ref().and_then(|s| s.finalizers.clone());
        new.spec.get_or_insert_with(NamespaceSpec::default).finalizers = finalizers;
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, col("Status", "string", "The status of the namespace"), AGE_COLUMN]
    }

    fn cells(&self, ns: &Namespace, now: Timestamp) -> Vec<Value> {
        let phase = ns.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        vec![json!(ns.metadata.name.clone().unwrap_or_default()), json!(phase), json!(age(ns.metadata.creation_timestamp.as_ref(), now))]
    }

    fn fields(&self, ns: &Namespace) -> Vec<(&'static str, String)> {
        vec![("status.phase", ns.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default())]
    }
}
