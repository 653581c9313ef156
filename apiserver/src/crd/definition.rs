//! The `customresourcedefinitions` kind: defaulting (singular, listKind, conversion None),
//! what create and update may set (status is the server's: storedVersions from the start, the
//! conditions from the controller), validation ([`super::validate`]), and its resource entry.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceConversion, CustomResourceDefinition, CustomResourceDefinitionStatus};
use serde_json::Value;

use crate::resources::Resource;
use crate::status::FieldError;
use crate::strategy::{Kind, Typed};

pub struct Definitions;

fn json(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(crd).unwrap_or(Value::Null)
}

/// Adds the storage version to `status.storedVersions` (once).
fn record_storage_version(crd: &mut CustomResourceDefinition) {
    let Some(storage) = crd.spec.versions.iter().find(|v| v.storage).map(|v| v.name.clone()) else { return };
    let status = crd.status.get_or_insert_with(Default::default);
    let stored = status.stored_versions.get_or_insert_with(Vec::new);
    if !stored.contains(&storage) {
        stored.push(storage);
    }
}

impl Kind for Definitions {
    type Object = CustomResourceDefinition;

    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, crd: &mut CustomResourceDefinition) {
        let names = &mut crd.spec.names;
        if names.singular.as_deref().is_none_or(str::is_empty) {
            names.singular = Some(names.kind.to_lowercase());
        }
        if names.list_kind.as_deref().is_none_or(str::is_empty) && !names.kind.is_empty() {
            names.list_kind = Some(format!("{}List", names.kind));
        }
        if crd.spec.conversion.is_none() {
            crd.spec.conversion = Some(CustomResourceConversion { strategy: "None".into(), webhook: None });
        }
    }
    fn prepare_for_create(&self, crd: &mut CustomResourceDefinition) {
        crd.status = Some(CustomResourceDefinitionStatus::default());
        record_storage_version(crd);
    }
    fn prepare_for_update(&self, new: &mut CustomResourceDefinition, _old: &CustomResourceDefinition) {
        record_storage_version(new);
    }
    fn validate(&self, crd: &CustomResourceDefinition) -> Vec<FieldError> {
        super::validate::validate(&json(crd))
    }
    fn validate_update(&self, new: &CustomResourceDefinition, old: &CustomResourceDefinition) -> Vec<FieldError> {
        super::validate::validate_update(&json(new), &json(old))
    }
}

/// The resource entry of CustomResourceDefinitions.
pub fn resource() -> Resource {
    Resource {
        group: super::GROUP,
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: super::PLURAL,
        singular: "customresourcedefinition",
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        namespaced: false,
        verbs: crate::resources::ALL_VERBS,
        storage: "apiextensions.k8s.io/customresourcedefinitions",
        status: true,
        scale: None,
        actions: &[],
        ttl: None,
        return_deleted: false,
        view: None,
        deprecation: None,
        custom: false,
        terminating: false,
        review: false,
        approval: false,
        finalize: false,
        resource_metrics: false,
        strategy: Box::new(Typed(Definitions)),
    }
}
