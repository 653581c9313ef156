//! The resource table: every kind the apiserver serves is one [`Resource`] entry (names, scope,
//! storage key, subresources) plus its strategy. Discovery, routing, the REST verbs, the watch
//! cache and Table output all read this table; adding a kind is one entry here and one strategy,
//! never a new handler. The custom resources of CustomResourceDefinitions join the table at run
//! time (`crd`): the API swaps in a new [`Registry`] when CRDs change.

use std::sync::Arc;
use std::time::Duration;

use crate::strategy::{self, Strategy};

/// The verbs of a resource with every generic verb.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
/// Namespaces: no deletecollection.
pub const NAMESPACE_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

/// The `scale` subresource of a kind: where its replicas and selector live.
#[derive(Debug, Clone, Copy)]
pub struct ScaleSpec {
    /// JSON pointer to the desired replicas (`/spec/replicas`).
    pub spec_replicas: &'static str,
    /// JSON pointer to the observed replicas (`/status/replicas`).
    pub status_replicas: &'static str,
    /// JSON pointer to the label selector (`/spec/selector`).
    pub selector: &'static str,
}

/// A POST-only subresource that acts on an object (pods/binding, pods/eviction).
#[derive(Debug, Clone, Copy)]
pub struct Action {
    pub name: &'static str,
    /// The group, version and kind of the body it takes (for discovery).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

/// One served resource.
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// The key segment under the store prefix (upstream's layout: `services/specs`, `minions`).
    pub storage: &'static str,
    /// Has a `status` subresource (then updates of the main resource keep the stored status).
    pub status: bool,
    pub scale: Option<ScaleSpec>,
    /// POST-only subresources, carried out by the strategy's `act`.
    pub actions: &'static [Action],
    /// Objects expire this long after their last write (Events: one hour).
    pub ttl: Option<Duration>,
    /// A delete answers with the deleted object (pods, services) instead of a Success Status.
    pub return_deleted: bool,
    /// Served from another version's storage (the strategy is the stored kind's): the conversion.
    pub view: Option<Arc<dyn crate::convert::View>>,
    /// The warning every request to a deprecated resource gets (v1 Endpoints since 1.33).
    /// Owned: a CRD's warning is free text that may change at any time (not interned).
    pub deprecation: Option<Arc<str>>,
    /// Served for a CustomResourceDefinition (no strategic merge patch; swapped out when CRDs change).
    pub custom: bool,
    /// Its CRD is being deleted: served until its objects are gone, but no creates.
    pub terminating: bool,
    /// A create-only kind nothing is stored for (TokenReview, SubjectAccessReview, ...): a POST
    /// is answered by [`crate::review`], there is no watch cache and no other verb.
    pub review: bool,
    /// Has an `approval` subresource (CertificateSigningRequests): it writes status.conditions
    /// only, and the `status` subresource keeps the Approved/Denied conditions.
    pub approval: bool,
    /// Has a `finalize` subresource (namespaces): a PUT that writes spec.finalizers only.
    pub finalize: bool,
    /// Served from the scraped resource metrics (`crate::metrics`): get and list only, nothing
    /// stored, no watch cache.
    pub resource_metrics: bool,
    pub strategy: Box<dyn Strategy>,
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as upstream names resources in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store prefix of all objects of this resource (ends with '/').
    pub fn prefix(&self, store_prefix: &str) -> String {
        format!("{store_prefix}{}/", self.storage)
    }

    /// The store prefix of one namespace's objects, or of all of them.
    pub fn list_prefix(&self, store_prefix: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{store_prefix}{}/{ns}/", self.storage),
            _ => self.prefix(store_prefix),
        }
    }

    /// The store key of one object.
    pub fn key(&self, store_prefix: &str, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{store_prefix}{}/{ns}/{name}", self.storage),
            _ => format!("{store_prefix}{}/{name}", self.storage),
        }
    }

    /// A request body in the stored form.
    pub fn stored(&self, obj: serde_json::Value) -> serde_json::Value {
        match &self.view {
            Some(v) => v.stored(obj),
            None => obj,
        }
    }

    /// A stored object in the served form.
    pub fn served(&self, obj: serde_json::Value) -> serde_json::Value {
        match &self.view {
            Some(v) => v.served(obj),
            None => obj,
        }
    }

    /// The subresources served, in discovery order.
    pub fn subresources(&self) -> Vec<&'static str> {
        let mut v = vec![];
        if self.scale.is_some() {
            v.push("scale");
        }
        if self.approval {
            v.push("approval");
        }
        if self.finalize {
            v.push("finalize");
        }
        if self.status {
            v.push("status");
        }
        v
    }
}

/// The table of served resources. A registry is immutable: when CustomResourceDefinitions come
/// or go, the API swaps in a new one ([`Registry::with_custom`]), so a request works on one
/// consistent table from start to end.
pub struct Registry {
    resources: Vec<Arc<Resource>>,
    /// Counts the tables of this process: documents built from a table (OpenAPI) are kept per epoch.
    epoch: u64,
}

impl Registry {
    /// The kinds of this release.
    pub fn builtin() -> Self {
        Registry { resources: strategy::builtin_resources().into_iter().map(Arc::new).collect(), epoch: 0 }
    }

    /// The kinds of this release, with the resource metrics API when `resource_metrics`.
    pub fn builtin_with(resource_metrics: bool) -> Self {
        let mut r = Registry::builtin();
        if resource_metrics {
            r.resources.extend(crate::metrics::resources().into_iter().map(Arc::new));
        }
        r
    }

    /// This table's built-in kinds followed by `custom` (the custom resources, in discovery order).
    pub fn with_custom(&self, custom: Vec<Arc<Resource>>) -> Self {
        let mut resources: Vec<Arc<Resource>> = self.resources.iter().filter(|r| !r.custom).cloned().collect();
        resources.extend(custom);
        Registry { resources, epoch: self.epoch + 1 }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn all(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    /// The resource `plural` of `group`/`version`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<Resource>> {
        self.resources.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The served groups in discovery order (the core group "" first), each with its versions.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = vec![];
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
                Some(_) => {}
                None => out.push((r.group, vec![r.version])),
            }
        }
        out
    }

    /// The resources of one group version.
    pub fn of(&self, group: &str, version: &str) -> impl Iterator<Item = &Arc<Resource>> {
        let (group, version) = (group.to_string(), version.to_string());
        self.resources.iter().filter(move |r| r.group == group && r.version == version)
    }
}
