//! Controller references (the ownerReference with `controller: true`) and claiming, as
//! upstream's ControllerRefManager: an owner keeps the objects it controls that its selector
//! still matches, adopts orphans its selector matches, and releases the ones it controls that
//! no longer match. An owner being deleted neither adopts nor releases; objects being deleted
//! are left alone.

use std::sync::Arc;

use berth_apiserver::selector::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;

/// The controller reference of an object.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// The reference making `owner` the controller of an object.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta`'s controller is the object of kind `kind` with this uid.
pub fn controlled_by(meta: &ObjectMeta, kind: &str, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.kind == kind && r.uid == uid)
}

/// What an owner does with the objects of its namespace.
pub struct Claim<T> {
    /// Controlled by the owner and matched: its objects.
    pub owned: Vec<Arc<T>>,
    /// Orphans the selector matches (to adopt; owned once adopted).
    pub adopt: Vec<Arc<T>>,
    /// Controlled by the owner but no longer matched (to release).
    pub release: Vec<Arc<T>>,
}

/// Sorts `objects` into what the owner (uid `owner_uid`, being deleted or not) owns, adopts and
/// releases.
pub fn claim<T: Resource>(owner_uid: &str, owner_deleting: bool, selector: &LabelSelector, objects: Vec<Arc<T>>) -> Claim<T> {
    let mut out = Claim { owned: vec![], adopt: vec![], release: vec![] };
    for obj in objects {
        let meta = obj.meta();
        let empty = Default::default();
        let matches = selector.matches(meta.labels.as_ref().unwrap_or(&empty));
        match controller_of(meta) {
            Some(r) if r.uid != owner_uid => {}
            Some(_) if matches => out.owned.push(obj),
            Some(_) => {
                if !owner_deleting && meta.deletion_timestamp.is_none() {
                    out.release.push(obj);
                }
            }
            None => {
                if matches && !owner_deleting && meta.deletion_timestamp.is_none() {
                    out.adopt.push(obj);
                }
            }
        }
    }
    out
}

fn ids<T: Resource>(obj: &T) -> (String, String, String) {
    let m = obj.meta();
    (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default(), m.uid.clone().unwrap_or_default())
}

/// Makes `owner` the controller of `obj` (a strategic merge patch guarded by the object's uid).
pub async fn adopt<T>(client: &kube::Client, obj: &T, owner: OwnerReference) -> Result<T, kube::Error>
where
    T: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let (ns, name, uid) = ids(obj);
    let api: kube::Api<T> = kube::Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"metadata": {"ownerReferences": [owner], "uid": uid}});
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch)).await
}

/// Removes the reference to the owner with `owner_uid` from `obj`. An object already gone
/// counts as released.
pub async fn release<T>(client: &kube::Client, obj: &T, owner_uid: &str) -> Result<(), kube::Error>
where
    T: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let (ns, name, uid) = ids(obj);
    let api: kube::Api<T> = kube::Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": uid}});
    match api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Carries out a claim for `owner`: the orphans are adopted once a fresh read shows the owner
/// still there and not being deleted (upstream's re-check), the others released. What the
/// owner owns afterwards.
pub async fn settle<O, T>(client: &kube::Client, owner: &O, claim: Claim<T>) -> Result<Vec<Arc<T>>, String>
where
    O: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    T: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let (kind, meta) = (T::kind(&()), owner.meta());
    let mut owned = claim.owned;
    if !claim.adopt.is_empty() {
        let api: kube::Api<O> = kube::Api::namespaced(client.clone(), meta.namespace.as_deref().unwrap_or(""));
        let fresh = api.get_opt(meta.name.as_deref().unwrap_or("")).await.map_err(|e| format!("re-reading the owner: {e}"))?;
        if fresh.is_some_and(|f| f.meta().uid == meta.uid && f.meta().deletion_timestamp.is_none()) {
            let r = controller_ref(owner);
            for obj in claim.adopt {
                match adopt(client, obj.as_ref(), r.clone()).await {
                    Ok(adopted) => owned.push(Arc::new(adopted)),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(format!("adopting a {kind}: {e}")),
                }
            }
        }
    }
    let uid = meta.uid.clone().unwrap_or_default();
    for obj in claim.release {
        release(client, obj.as_ref(), &uid).await.map_err(|e| format!("releasing a {kind}: {e}"))?;
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(name: &str, app: &str, owner: Option<&str>) -> Arc<Pod> {
        let refs = owner.map(|uid| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]));
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}, "ownerReferences": refs}})).expect("pod"))
    }

    #[test]
    fn owners_keep_adopt_and_release_by_selector() {
        let sel = LabelSelector::parse("app=web").expect("selector");
        let pods = vec![
            pod("mine", "web", Some("u1")),
            pod("orphan", "web", None),
            pod("moved", "db", Some("u1")),
            pod("other", "web", Some("u2")),
            pod("stranger", "db", None),
        ];
        let c = claim("u1", false, &sel, pods.clone());
        let names = |v: &Vec<Arc<Pod>>| v.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect::<Vec<_>>();
        assert_eq!((names(&c.owned), names(&c.adopt), names(&c.release)), (vec!["mine".to_string()], vec!["orphan".to_string()], vec!["moved".to_string()]));
        let c = claim("u1", true, &sel, pods);
        assert!(c.adopt.is_empty() && c.release.is_empty() && c.owned.len() == 1, "an owner being deleted neither adopts nor releases");
    }
}
