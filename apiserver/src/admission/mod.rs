//! The admission chain (upstream's in-tree admission plugins, in upstream's order). Every write
//! the REST verbs make passes it: the mutating phase runs right after the request body is decoded
//! and defaulted and before the strategy's create/update preparation and validation (a plugin may
//! change the object; the strategy defaults and validates what it left); the validating phase runs
//! after validation, right before the store write, also for dry-run requests (then nothing is
//! stored and nothing is charged). Delete is admitted before anything is marked or removed;
//! pods/binding and pods/eviction are CREATE on their subresource with the request body as object,
//! as upstream's handlers call them.
//!
//! A plugin sees the [`Attributes`] of one request and answers with an [`ApiError`] in upstream's
//! words (`admission.NewForbidden`: `pods "x" is forbidden: <why>`). Plugins read the watch caches
//! (upstream's informers) and, where a stale cache would give a wrong answer, the store. The
//! controllers that keep what plugins rely on (the default service account, the quota usage) live
//! beside them and are started with the API. This module must not know HTTP; it only judges
//! objects.

pub mod defaultstorageclass;
pub mod defaulttolerationseconds;
pub mod limitranger;
pub mod namespacelifecycle;
pub mod noderestriction;
pub mod podsecurity;
pub mod policy;
pub mod priority;
pub mod resourcequota;
pub mod serviceaccount;
pub mod webhook;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::api::Api;
use crate::resources::Resource;
use crate::status::ApiError;
use crate::User;

/// What a request does (upstream's admission.Operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Everything a plugin sees of one request.
#[derive(Clone)]
pub struct Attributes {
    pub operation: Operation,
    /// The resource written (group, version, plural, kind).
    pub resource: Arc<Resource>,
    /// "" for the main resource; "status", "scale", "binding", "eviction".
    pub subresource: String,
    pub namespace: Option<String>,
    /// The object's name; on a create with generateName, the generateName (as upstream reports it).
    pub name: String,
    /// The object written (None for delete); mutating plugins change it in place.
    pub object: Option<Value>,
    /// The object as stored before (update, delete, and the pod of a binding or eviction).
    pub old_object: Option<Value>,
    pub user: Option<User>,
    pub dry_run: bool,
    /// `Warning` headers plugins add (PodSecurity's warn mode).
    pub warnings: Vec<String>,
    /// What ResourceQuota charged for this request, given back when the write then fails.
    pub(crate) charged: Vec<resourcequota::Charge>,
    /// Whether and which mutating webhooks run a second time.
    pub(crate) reinvocation: webhook::Reinvocation,
}

impl Attributes {
    /// Whether this is `plural` of the core or named `group`, main resource.
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.resource.group == group && self.resource.plural == plural && self.subresource.is_empty()
    }

    /// Upstream's `admission.NewForbidden`: `<resource> "<name>" is forbidden: <why>`.
    pub fn forbidden(&self, why: &str) -> ApiError {
        let name = if self.name.is_empty() { "Unknown" } else { self.name.as_str() };
        ApiError::forbidden(&self.resource, name, why)
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

/// One admission plugin. A plugin implements the phases it takes part in; both default to allow.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// The mutating phase: may change `a.object`.
    fn admit<'a>(&'a self, _api: &'a Api, _a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }
    /// The validating phase: judges the final object.
    fn validate<'a>(&'a self, _api: &'a Api, _a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The plugins in upstream's order (kube-apiserver's recommended order, those Berth has).
pub struct Chain {
    plugins: Vec<Box<dyn Plugin>>,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            plugins: vec![
                // RBAC's escalation check (upstream's role and binding storage), first
                Box::new(crate::authz::escalation::Escalation),
                Box::new(namespacelifecycle::NamespaceLifecycle),
                Box::new(limitranger::LimitRanger),
                Box::new(serviceaccount::ServiceAccount),
                Box::new(noderestriction::NodeRestriction),
                Box::new(priority::Priority),
                Box::new(defaulttolerationseconds::DefaultTolerationSeconds),
                Box::new(defaultstorageclass::DefaultStorageClass),
                Box::new(podsecurity::PodSecurity),
                Box::new(webhook::Webhooks { mutating: true }),
                Box::new(policy::ValidatingAdmissionPolicies),
                Box::new(webhook::Webhooks { mutating: false }),
                Box::new(resourcequota::ResourceQuota),
            ],
        }
    }
}

impl Chain {
    /// The mutating phase of every plugin, in order; the first refusal ends it.
    /// A mutating webhook asking to be reinvoked makes the whole phase run once more (the
    /// in-tree plugins, then the webhooks marked), as upstream's reinvocation.
    pub async fn admit(&self, api: &Api, a: &mut Attributes) -> Result<(), ApiError> {
        for p in &self.plugins {
            p.admit(api, a).await.inspect_err(|e| tracing::debug!(plugin = p.name(), error = %e, "admission refused"))?;
        }
        if a.reinvocation.wanted && !a.reinvocation.second_round {
            a.reinvocation.second_round = true;
            for p in &self.plugins {
                p.admit(api, a).await.inspect_err(|e| tracing::debug!(plugin = p.name(), error = %e, "admission refused (reinvocation)"))?;
            }
        }
        Ok(())
    }

    /// The validating phase of every plugin, in order.
    pub async fn validate(&self, api: &Api, a: &mut Attributes) -> Result<(), ApiError> {
        for p in &self.plugins {
            p.validate(api, a).await.inspect_err(|e| tracing::debug!(plugin = p.name(), error = %e, "admission refused"))?;
        }
        Ok(())
    }
}

/// upstream's AdmissionRequest as CEL's `request` variable (policies, webhook matchConditions).
pub(crate) fn request_variable(a: &Attributes) -> Value {
    let res = &a.resource;
    json!({
        "kind": {"group": res.group, "version": res.version, "kind": res.kind},
        "resource": {"group": res.group, "version": res.version, "resource": res.plural},
        "subResource": a.subresource,
        "requestKind": {"group": res.group, "version": res.version, "kind": res.kind},
        "requestResource": {"group": res.group, "version": res.version, "resource": res.plural},
        "name": a.name,
        "namespace": a.namespace(),
        "operation": a.operation.as_str(),
        "userInfo": a.user.as_ref().map(crate::authn::review::user_info).unwrap_or(json!({})),
        "dryRun": a.dry_run,
    })
}

/// Gives back what a request's admission charged when its write did not happen (a create that
/// found the name taken, an update that lost a race and is tried again).
pub async fn rollback(api: &Api, a: &mut Attributes) {
    resourcequota::uncharge(api, std::mem::take(&mut a.charged)).await;
}

/// Starts the controllers the plugins rely on (default service accounts and root CA config maps,
/// quota usage).
pub fn spawn_controllers(api: &Arc<Api>) {
    serviceaccount::spawn_controller(api);
    resourcequota::spawn_controller(api);
}

/// The objects of `group`/`plural` in namespace `ns` (all namespaces: None), from the watch cache.
pub(crate) fn cached(api: &Api, group: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
    let Some(res) = served(api, group, plural) else { return vec![] };
    let Ok(cache) = api.cache(&res) else { return vec![] };
    let (items, _) = cache.snapshot(&res.list_prefix(api.store_prefix(), ns));
    items.iter().filter_map(|o| o.value().ok()).collect()
}

/// The resource `group`/`plural` (a built-in kind's stored version, or any version of a custom
/// resource: they share one storage and one cache).
pub(crate) fn served(api: &Api, group: &str, plural: &str) -> Option<Arc<Resource>> {
    let registry = api.registry();
    let mut matching = registry.all().iter().filter(|r| r.group == group && r.plural == plural);
    let first = matching.next()?.clone();
    Some(registry.all().iter().find(|r| r.group == group && r.plural == plural && r.view.is_none()).cloned().unwrap_or(first))
}

/// One object of `group`/`plural` from the watch cache.
pub(crate) fn cached_one(api: &Api, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
    let res = api.resource(group, plural).ok()?;
    let cache = api.cache(&res).ok()?;
    cache.get(&res.key(api.store_prefix(), ns, name))?.value().ok()
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use berth_store::{EmbeddedConfig, EmbeddedStore, Store};
    use serde_json::Value;

    use super::{Attributes, Operation};
    use crate::api::{Api, ApiConfig};
    use crate::rest::WriteOptions;

    /// An API over an embedded store in a temp dir (removed when dropped).
    pub struct TestApi {
        pub api: Arc<Api>,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for TestApi {
        type Target = Arc<Api>;
        fn deref(&self) -> &Arc<Api> {
            &self.api
        }
    }

    pub async fn api() -> TestApi {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
        let api = Api::start(store, ApiConfig { ca_pem: Some("CA".into()), ..Default::default() }).await.expect("api");
        TestApi { api, _dir: dir }
    }

    /// Creates an object as the server (admission runs).
    pub async fn create(api: &Api, group: &str, plural: &str, ns: Option<&str>, obj: Value) -> Value {
        let res = api.resource(group, plural).expect("resource");
        api.create(&res, ns, obj, &WriteOptions::default()).await.unwrap_or_else(|e| panic!("create {plural}: {e}")).object
    }

    /// The attributes of a request on the main resource.
    pub fn attrs(api: &Api, op: Operation, group: &str, plural: &str, ns: Option<&str>, obj: Value) -> Attributes {
        let res = api.resource(group, plural).expect("resource");
        Attributes {
            operation: op,
            resource: res,
            subresource: String::new(),
            namespace: ns.map(String::from),
            name: crate::meta::name(&obj).to_string(),
            object: Some(obj),
            old_object: None,
            user: None,
            dry_run: false,
            warnings: vec![],
            charged: vec![],
            reinvocation: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{api, create};
    use crate::rest::WriteOptions;

    #[tokio::test]
    async fn every_verb_passes_the_chain_also_on_dry_run() {
        let api = api().await;
        let cms = api.resource("", "configmaps").unwrap();
        let dry = WriteOptions { dry_run: true, ..Default::default() };
        // create, dry-run: judged (404 from NamespaceLifecycle), nothing stored
        let err = api.create(&cms, Some("nowhere"), json!({"metadata": {"name": "c"}}), &dry).await.unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (404, "namespaces \"nowhere\" not found"));

        // delete: an immortal namespace, also on dry-run
        let namespaces = api.resource("", "namespaces").unwrap();
        let opts = crate::rest::delete::DeleteOptions { dry_run: Some(vec!["All".into()]), ..Default::default() };
        let err = api.delete(&namespaces, None, "kube-public", &opts).await.unwrap_err();
        assert_eq!(err.message, "namespaces \"kube-public\" is forbidden: this namespace may not be deleted");

        // update: the mutating phase runs on every attempt (Priority keeps the stored priority)
        create(&api, "", "namespaces", None, json!({"metadata": {"name": "u"}})).await;
        let pods = api.resource("", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let created = api.create(&pods, Some("u"), pod, &WriteOptions::default()).await.unwrap().object;
        assert_eq!(created["spec"]["priority"], 0);
        assert_eq!(created["spec"]["serviceAccountName"], "default");
        let patch = json!({"metadata": {"labels": {"a": "b"}}});
        let patched =
            api.patch(&pods, Some("u"), "p", crate::patch::PatchType::Merge, &patch, crate::rest::Subresource::Main, &WriteOptions::default()).await.unwrap();
        assert_eq!((patched.object["spec"]["priority"].clone(), patched.object["metadata"]["labels"]["a"].clone()), (json!(0), json!("b")));

        // an action is a CREATE of its subresource: a binding into a terminating namespace is refused
        api.delete(&namespaces, None, "u", &Default::default()).await.unwrap();
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
        let err = api.act(&pods, Some("u"), "p", "binding", &binding, None).await.unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (403, "pods \"p\" is forbidden: unable to create new content in namespace u because it is being terminated")
        );
    }
}
