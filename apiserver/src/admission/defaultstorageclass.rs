//! DefaultStorageClass: a new PersistentVolumeClaim that names no class (no
//! `spec.storageClassName`, not even "", and no beta class annotation) gets the default
//! StorageClass (annotation storageclass.kubernetes.io/is-default-class "true"); when several
//! are marked default, the newest wins (by name when they were made in the same second), as
//! upstream's GetDefaultClass picks it. No default class: the claim stays without one.

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{cached, Attributes, Operation, Plugin};
use crate::api::Api;
use crate::status::ApiError;
use crate::strategy::storageclass::{BETA_IS_DEFAULT_CLASS, IS_DEFAULT_CLASS};

/// The claim annotation that named a class before `spec.storageClassName`.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

pub struct DefaultStorageClass;

impl Plugin for DefaultStorageClass {
    fn name(&self) -> &'static str {
        "DefaultStorageClass"
    }

    fn admit<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !a.is("", "persistentvolumeclaims") || a.operation != Operation::Create {
                return Ok(());
            }
            let Some(claim) = a.object.as_mut() else { return Ok(()) };
            if names_a_class(claim) {
                return Ok(());
            }
            if let Some(name) = default_class(&cached(api, "storage.k8s.io", "storageclasses", None)) {
                tracing::debug!(class = %name, "defaulting the claim's storage class");
                if !claim.get("spec").is_some_and(Value::is_object) {
                    claim["spec"] = serde_json::json!({});
                }
                claim["spec"]["storageClassName"] = Value::String(name);
            }
            Ok(())
        })
    }
}

/// Whether a claim names its class (an explicit "" names "no class").
fn names_a_class(claim: &Value) -> bool {
    claim.pointer("/spec/storageClassName").is_some_and(|v| !v.is_null())
        || claim.pointer("/metadata/annotations").and_then(|a| a.get(BETA_STORAGE_CLASS)).is_some()
}

fn marked_default(class: &Value) -> bool {
    let a = class.pointer("/metadata/annotations");
    [IS_DEFAULT_CLASS, BETA_IS_DEFAULT_CLASS].iter().any(|k| a.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"))
}

/// The default class's name: the newest of those marked default (RFC 3339 stamps of one
/// format sort as text), by name among those of the same second.
pub fn default_class(classes: &[Value]) -> Option<String> {
    let stamp = |c: &Value| c.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("").to_string();
    let name = |c: &Value| crate::meta::name(c).to_string();
    classes.iter().filter(|c| marked_default(c)).max_by(|a, b| stamp(a).cmp(&stamp(b)).then_with(|| name(b).cmp(&name(a)))).map(name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::testing::{api, attrs, create};

    #[test]
    fn the_newest_default_wins() {
        let c = |name: &str, at: &str, default: bool| json!({"metadata": {"name": name, "creationTimestamp": at, "annotations": {IS_DEFAULT_CLASS: default.to_string()}}});
        let classes =
            vec![c("old", "2024-01-01T00:00:00Z", true), c("new", "2024-06-01T00:00:00Z", true), c("newest-not-default", "2025-01-01T00:00:00Z", false)];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        let same = vec![c("b", "2024-01-01T00:00:00Z", true), c("a", "2024-01-01T00:00:00Z", true)];
        assert_eq!(default_class(&same).as_deref(), Some("a"));
        assert_eq!(default_class(&[]), None);
    }

    #[tokio::test]
    async fn a_claim_without_a_class_gets_the_default_and_an_explicit_empty_class_stays() {
        let api = api().await;
        let class = json!({"metadata": {"name": "local-path", "annotations": {IS_DEFAULT_CLASS: "true"}}, "provisioner": "rancher.io/local-path"});
        create(&api, "storage.k8s.io", "storageclasses", None, class).await;
        let claim = |spec: Value| json!({"metadata": {"name": "c"}, "spec": spec});
        let mut a = attrs(&api, Operation::Create, "", "persistentvolumeclaims", Some("default"), claim(json!({"accessModes": ["ReadWriteOnce"]})));
        DefaultStorageClass.admit(&api, &mut a).await.expect("admit");
        assert_eq!(a.object.as_ref().and_then(|o| o.pointer("/spec/storageClassName")), Some(&json!("local-path")));
        let mut a = attrs(&api, Operation::Create, "", "persistentvolumeclaims", Some("default"), claim(json!({"storageClassName": ""})));
        DefaultStorageClass.admit(&api, &mut a).await.expect("admit");
        assert_eq!(a.object.as_ref().and_then(|o| o.pointer("/spec/storageClassName")), Some(&json!("")));
    }
}
