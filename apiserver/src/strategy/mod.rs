//! Strategies: what differs between kinds — defaulting, validation, what create and update may
//! set, generation tracking, Table columns and selectable fields. Each kind implements the typed
//! [`Kind`] trait on its k8s-openapi type in its own file; [`Typed`] adapts it to the object-safe
//! [`Strategy`] the generic REST layer calls with JSON values. This module also holds the table of
//! built-in resources ([`builtin_resources`]).

mod admissionregistration;
mod authentication;
mod authorization;
mod configmap;
mod controllerrevision;
pub mod csr;
mod daemonset;
mod deployment;
mod endpoints;
mod event;
pub mod hpa;
mod job;
mod lease;
mod namespace;
mod node;
mod pdb;
pub(crate) mod pod;
mod podtemplate;
pub(crate) mod priorityclass;
mod quota;
mod rbac;
mod replicaset;
mod secret;
mod service;
mod serviceaccount;
mod servicecidr;
mod statefulset;
pub(crate) mod storageclass;
mod volume;
mod workload;

use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::resources::{Action, Resource, ScaleSpec, ALL_VERBS, NAMESPACE_VERBS};

/// The verbs of a review kind.
const CREATE_ONLY: &[&str] = &["create"];
use crate::status::FieldError;

/// One Table column as upstream's printers define it.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0: shown by `kubectl get`; 1: only with `-o wide`.
    pub priority: u8,
}

/// A column shown by default.
pub const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 0 }
}

/// A column shown only with `-o wide`.
pub const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 1 }
}

/// The `Name` column (format "name").
pub const NAME_COLUMN: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};

/// The `Age` column.
pub const AGE_COLUMN: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
);

/// What an action (a POST-only subresource) does to its object.
#[derive(Debug)]
pub enum Outcome {
    /// Store the changed object (spec and status as the action left them).
    Replace,
    /// Delete the object (with the usual graceful deletion).
    Delete,
}

/// Why an action was refused.
#[derive(Debug)]
pub enum Refusal {
    /// 409: the object's state does not allow it.
    Conflict(String),
    /// 422: the request body is invalid.
    Invalid(Vec<FieldError>),
}

/// What a kind adds to the generic verbs, on its Rust type.
pub trait Kind: Send + Sync + 'static {
    type Object: Serialize + DeserializeOwned + Send + Default + schemars::JsonSchema;

    /// The grammar of the kind's names (`berth_names::dns1123_subdomain` for most kinds).
    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::dns1123_subdomain
    }
    /// Whether metadata.generation counts spec changes.
    fn tracks_generation(&self) -> bool {
        false
    }
    /// Fills the defaults upstream's defaulting functions fill.
    fn default(&self, _obj: &mut Self::Object) {}
    /// Resets what a client may not set on create (status).
    fn prepare_for_create(&self, _obj: &mut Self::Object) {}
    /// Records who creates the object where the kind keeps it (a CSR's requestor).
    fn record_requestor(&self, _obj: &mut Self::Object, _user: &crate::User) {}
    /// Carries over what an update may not clear (a service's allocated cluster IP).
    fn prepare_for_update(&self, _new: &mut Self::Object, _old: &Self::Object) {}
    fn validate(&self, _obj: &Self::Object) -> Vec<FieldError> {
        vec![]
    }
    fn validate_update(&self, new: &Self::Object, _old: &Self::Object) -> Vec<FieldError> {
        self.validate(new)
    }
    /// All Table columns, Name included (empty: the default table).
    fn columns(&self) -> Vec<Column> {
        vec![]
    }
    /// The cells of [`Kind::columns`].
    fn cells(&self, _obj: &Self::Object, _now: Timestamp) -> Vec<Value> {
        vec![]
    }
    /// Field-selectable fields besides metadata.name and metadata.namespace.
    fn fields(&self, _obj: &Self::Object) -> Vec<(&'static str, String)> {
        vec![]
    }
    /// Carries out the action `action` (a POST-only subresource) with request `body` on `obj`.
    fn act(&self, action: &str, _obj: &mut Self::Object, _body: &Value) -> Result<Outcome, Refusal> {
        Err(Refusal::Conflict(format!("{action} is not supported")))
    }
}

/// The object-safe strategy the generic layer calls, on JSON objects.
pub trait Strategy: Send + Sync {
    /// Decodes into the kind's type and back: wrong types fail, unknown fields are dropped.
    fn normalize(&self, obj: &Value) -> Result<Value, String>;
    fn default(&self, obj: &mut Value) -> Result<(), String>;
    fn prepare_for_create(&self, obj: &mut Value) -> Result<(), String>;
    fn record_requestor(&self, obj: &mut Value, user: &crate::User) -> Result<(), String>;
    fn prepare_for_update(&self, new: &mut Value, old: &Value) -> Result<(), String>;
    fn validate(&self, obj: &Value) -> Vec<FieldError>;
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError>;
    fn name_grammar(&self) -> fn(&str) -> Vec<String>;
    fn tracks_generation(&self) -> bool;
    fn columns(&self) -> Vec<Column>;
    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value>;
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)>;
    /// The names of the kind's selectable fields.
    fn field_names(&self) -> Vec<&'static str>;
    /// Carries out an action on `obj` (changed in place when the outcome is Replace).
    fn act(&self, action: &str, obj: &mut Value, body: &Value) -> Result<Outcome, Refusal>;
    /// Adds the kind's OpenAPI schema (and those it refers to) to `gen`; the reference to it.
    fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Value;
    /// How the kind's lists merge (strategic merge patch, server-side apply, field ownership).
    fn list_rules(&self) -> &dyn crate::patch::ListRules {
        &crate::patch::BuiltinLists
    }
}

/// Adapts a typed [`Kind`] to [`Strategy`].
pub struct Typed<K>(pub K);

fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, String> {
    serde_json::from_value(obj.clone()).map_err(|e| e.to_string())
}

fn encode<T: Serialize>(obj: &T) -> Result<Value, String> {
    serde_json::to_value(obj).map_err(|e| e.to_string())
}

impl<K: Kind> Typed<K> {
    fn edit(&self, obj: &mut Value, f: impl FnOnce(&mut K::Object)) -> Result<(), String> {
        let mut typed: K::Object = decode(obj)?;
        f(&mut typed);
        *obj = encode(&typed)?;
        Ok(())
    }
}

impl<K: Kind> Strategy for Typed<K> {
    fn normalize(&self, obj: &Value) -> Result<Value, String> {
        encode(&decode::<K::Object>(obj)?)
    }
    fn default(&self, obj: &mut Value) -> Result<(), String> {
        self.edit(obj, |o| self.0.default(o))
    }
    fn prepare_for_create(&self, obj: &mut Value) -> Result<(), String> {
        self.edit(obj, |o| self.0.prepare_for_create(o))
    }
    fn record_requestor(&self, obj: &mut Value, user: &crate::User) -> Result<(), String> {
        self.edit(obj, |o| self.0.record_requestor(o, user))
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) -> Result<(), String> {
        let old: K::Object = decode(old)?;
        self.edit(new, |n| self.0.prepare_for_update(n, &old))
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        match decode(obj) {
            Ok(o) => self.0.validate(&o),
            Err(e) => vec![FieldError::invalid("", "", e)],
        }
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        match (decode(new), decode(old)) {
            (Ok(n), Ok(o)) => self.0.validate_update(&n, &o),
            (Err(e), _) | (_, Err(e)) => vec![FieldError::invalid("", "", e)],
        }
    }
    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        self.0.name_grammar()
    }
    fn tracks_generation(&self) -> bool {
        self.0.tracks_generation()
    }
    fn columns(&self) -> Vec<Column> {
        self.0.columns()
    }
    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        decode(obj).map(|o| self.0.cells(&o, now)).unwrap_or_default()
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        decode(obj).map(|o| self.0.fields(&o)).unwrap_or_default()
    }
    fn field_names(&self) -> Vec<&'static str> {
        self.0.fields(&K::Object::default()).into_iter().map(|(k, _)| k).collect()
    }
    fn act(&self, action: &str, obj: &mut Value, body: &Value) -> Result<Outcome, Refusal> {
        let mut typed: K::Object = decode(obj).map_err(Refusal::Conflict)?;
        let outcome = self.0.act(action, &mut typed, body)?;
        *obj = encode(&typed).map_err(Refusal::Conflict)?;
        Ok(outcome)
    }
    fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Value {
        gen.subschema_for::<K::Object>().to_value()
    }
}

#[allow(clippy::too_many_arguments)]
fn resource(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    namespaced: bool,
    storage: &'static str,
    status: bool,
    strategy: Box<dyn Strategy>,
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        short_names,
        categories,
        namespaced,
        verbs: ALL_VERBS,
        storage,
        status,
        scale: None,
        actions: &[],
        ttl: None,
        return_deleted: matches!(plural, "pods" | "services"),
        view: None,
        deprecation: None,
        custom: false,
        terminating: false,
        review: false,
        approval: false,
        finalize: false,
        resource_metrics: false,
        strategy,
    }
}

/// The scale subresource of kinds whose replicas and selector sit where apps/v1 keeps them.
const SPEC_SCALE: ScaleSpec = ScaleSpec { spec_replicas: "/spec/replicas", status_replicas: "/status/replicas", selector: "/spec/selector" };

/// The built-in kinds, in discovery order (groups as upstream orders them, resources alphabetically).
pub fn builtin_resources() -> Vec<Resource> {
    let mut events = resource("", "Event", "events", "event", &["ev"], &[], true, "events", false, Box::new(Typed(event::Events)));
    events.ttl = Some(Duration::from_secs(3600));
    let mut csrs = resource(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "certificatesigningrequest",
        &["csr"],
        &[],
        false,
        "certificatesigningrequests",
        true,
        Box::new(Typed(csr::CertificateSigningRequests)),
    );
    csrs.approval = true;
    let mut namespaces = resource("", "Namespace", "namespaces", "namespace", &["ns"], &[], false, "namespaces", true, Box::new(Typed(namespace::Namespaces)));
    namespaces.verbs = NAMESPACE_VERBS;
    namespaces.finalize = true;
    let mut deployments =
        resource("apps", "Deployment", "deployments", "deployment", &["deploy"], &["all"], true, "deployments", true, Box::new(Typed(deployment::Deployments)));
    deployments.scale = Some(SPEC_SCALE);
    let mut pods = resource("", "Pod", "pods", "pod", &["po"], &["all"], true, "pods", true, Box::new(Typed(pod::Pods)));
    pods.actions =
        &[Action { name: "binding", group: "", version: "v1", kind: "Binding" }, Action { name: "eviction", group: "policy", version: "v1", kind: "Eviction" }];
    let mut rcs = resource(
        "",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        &["rc"],
        &["all"],
        true,
        "controllers",
        true,
        Box::new(Typed(replicaset::ReplicationControllers)),
    );
    rcs.scale = Some(SPEC_SCALE);
    let mut rss =
        resource("apps", "ReplicaSet", "replicasets", "replicaset", &["rs"], &["all"], true, "replicasets", true, Box::new(Typed(replicaset::ReplicaSets)));
    rss.scale = Some(SPEC_SCALE);
    let mut sts = resource(
        "apps",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        &["sts"],
        &["all"],
        true,
        "statefulsets",
        true,
        Box::new(Typed(statefulset::StatefulSets)),
    );
    sts.scale = Some(SPEC_SCALE);
    let mut hpa = resource(
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        &["hpa"],
        &["all"],
        true,
        "horizontalpodautoscalers",
        true,
        Box::new(Typed(hpa::HorizontalPodAutoscalers)),
    );
    hpa.version = "v2";
    let mut hpa_v1 = resource(
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        &["hpa"],
        &["all"],
        true,
        "horizontalpodautoscalers",
        true,
        Box::new(Typed(hpa::HorizontalPodAutoscalers)),
    );
    hpa_v1.view = Some(std::sync::Arc::new(crate::convert::HpaV1));
    let mut events_v1 = resource("events.k8s.io", "Event", "events", "event", &["ev"], &[], true, "events", false, Box::new(Typed(event::Events)));
    events_v1.ttl = Some(Duration::from_secs(3600));
    events_v1.view = Some(std::sync::Arc::new(crate::convert::EventsV1));
    let mut endpoints =
        resource("", "Endpoints", "endpoints", "endpoints", &["ep"], &[], true, "services/endpoints", false, Box::new(Typed(endpoints::EndpointsKind)));
    endpoints.deprecation = Some("v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice".into());
    let review = |kind: &'static str, plural: &'static str, singular: &'static str, version: &'static str, strategy: Box<dyn Strategy>| {
        let mut r = resource("authentication.k8s.io", kind, plural, singular, &[], &[], false, plural, false, strategy);
        r.version = version;
        r.verbs = CREATE_ONLY;
        r.review = true;
        r
    };
    let self_subject_reviews =
        review("SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", "v1", Box::new(Typed(authentication::SelfSubjectReviews)));
    let token_reviews = review("TokenReview", "tokenreviews", "tokenreview", "v1", Box::new(Typed(authentication::TokenReviews)));
    let self_subject_reviews_v1beta1 =
        review("SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", "v1beta1", Box::new(Typed(authentication::SelfSubjectReviews)));
    let access_review = |kind: &'static str, plural: &'static str, singular: &'static str, namespaced: bool, strategy: Box<dyn Strategy>| {
        let mut r = resource("authorization.k8s.io", kind, plural, singular, &[], &[], namespaced, plural, false, strategy);
        r.verbs = CREATE_ONLY;
        r.review = true;
        r
    };
    let [sar, ssar, lsar, ssrr] = [
        access_review("SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", false, Box::new(Typed(authorization::SubjectAccessReviews))),
        access_review(
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            false,
            Box::new(Typed(authorization::SelfSubjectAccessReviews)),
        ),
        access_review(
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            "localsubjectaccessreview",
            true,
            Box::new(Typed(authorization::LocalSubjectAccessReviews)),
        ),
        access_review(
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
            false,
            Box::new(Typed(authorization::SelfSubjectRulesReviews)),
        ),
    ];
    let mut service_accounts = resource(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        &["sa"],
        &[],
        true,
        "serviceaccounts",
        false,
        Box::new(Typed(serviceaccount::ServiceAccounts)),
    );
    service_accounts.actions = &[Action { name: "token", group: "authentication.k8s.io", version: "v1", kind: "TokenRequest" }];
    vec![
        resource("", "ConfigMap", "configmaps", "configmap", &["cm"], &[], true, "configmaps", false, Box::new(Typed(configmap::ConfigMaps))),
        endpoints,
        events,
        resource("", "LimitRange", "limitranges", "limitrange", &["limits"], &[], true, "limitranges", false, Box::new(Typed(quota::LimitRanges))),
        namespaces,
        resource("", "Node", "nodes", "node", &["no"], &[], false, "minions", true, Box::new(Typed(node::Nodes))),
        resource(
            "",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            &["pvc"],
            &[],
            true,
            "persistentvolumeclaims",
            true,
            Box::new(Typed(volume::PersistentVolumeClaims)),
        ),
        resource(
            "",
            "PersistentVolume",
            "persistentvolumes",
            "persistentvolume",
            &["pv"],
            &[],
            false,
            "persistentvolumes",
            true,
            Box::new(Typed(volume::PersistentVolumes)),
        ),
        pods,
        resource("", "PodTemplate", "podtemplates", "podtemplate", &[], &[], true, "podtemplates", false, Box::new(Typed(podtemplate::PodTemplates))),
        rcs,
        resource("", "ResourceQuota", "resourcequotas", "resourcequota", &["quota"], &[], true, "resourcequotas", true, Box::new(Typed(quota::ResourceQuotas))),
        resource("", "Secret", "secrets", "secret", &[], &[], true, "secrets", false, Box::new(Typed(secret::Secrets))),
        service_accounts,
        resource("", "Service", "services", "service", &["svc"], &["all"], true, "services/specs", true, Box::new(Typed(service::Services))),
        resource(
            "apps",
            "ControllerRevision",
            "controllerrevisions",
            "controllerrevision",
            &[],
            &[],
            true,
            "controllerrevisions",
            false,
            Box::new(Typed(controllerrevision::ControllerRevisions)),
        ),
        resource("apps", "DaemonSet", "daemonsets", "daemonset", &["ds"], &["all"], true, "daemonsets", true, Box::new(Typed(daemonset::DaemonSets))),
        deployments,
        rss,
        sts,
        events_v1,
        self_subject_reviews,
        token_reviews,
        self_subject_reviews_v1beta1,
        resource(
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            "validatingwebhookconfiguration",
            &[],
            &["api-extensions"],
            false,
            "validatingwebhookconfigurations",
            false,
            Box::new(Typed(admissionregistration::ValidatingWebhookConfigurations)),
        ),
        resource(
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
            &[],
            &["api-extensions"],
            false,
            "mutatingwebhookconfigurations",
            false,
            Box::new(Typed(admissionregistration::MutatingWebhookConfigurations)),
        ),
        {
            let mut r = resource(
                "admissionregistration.k8s.io",
                "ValidatingAdmissionPolicy",
                "validatingadmissionpolicies",
                "validatingadmissionpolicy",
                &[],
                &["api-extensions"],
                false,
                "validatingadmissionpolicies",
                true,
                Box::new(Typed(admissionregistration::ValidatingAdmissionPolicies)),
            );
            r.version = "v1";
            r
        },
        resource(
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            &[],
            &["api-extensions"],
            false,
            "validatingadmissionpolicybindings",
            false,
            Box::new(Typed(admissionregistration::ValidatingAdmissionPolicyBindings)),
        ),
        sar,
        ssar,
        lsar,
        ssrr,
        hpa,
        hpa_v1,
        resource("batch", "CronJob", "cronjobs", "cronjob", &["cj"], &["all"], true, "cronjobs", true, Box::new(Typed(job::CronJobs))),
        resource("batch", "Job", "jobs", "job", &[], &["all"], true, "jobs", true, Box::new(Typed(job::Jobs))),
        resource(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            &["pdb"],
            &[],
            true,
            "poddisruptionbudgets",
            true,
            Box::new(Typed(pdb::PodDisruptionBudgets)),
        ),
        resource(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
            "clusterrolebinding",
            &[],
            &[],
            false,
            "clusterrolebindings",
            false,
            Box::new(Typed(rbac::ClusterRoleBindings)),
        ),
        resource(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            "clusterrole",
            &[],
            &[],
            false,
            "clusterroles",
            false,
            Box::new(Typed(rbac::ClusterRoles)),
        ),
        resource(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebindings",
            "rolebinding",
            &[],
            &[],
            true,
            "rolebindings",
            false,
            Box::new(Typed(rbac::RoleBindings)),
        ),
        resource("rbac.authorization.k8s.io", "Role", "roles", "role", &[], &[], true, "roles", false, Box::new(Typed(rbac::Roles))),
        crate::crd::definition::resource(),
        resource(
            "scheduling.k8s.io",
            "PriorityClass",
            "priorityclasses",
            "priorityclass",
            &["pc"],
            &[],
            false,
            "priorityclasses",
            false,
            Box::new(Typed(priorityclass::PriorityClasses)),
        ),
        csrs,
        resource(
            "networking.k8s.io",
            "IPAddress",
            "ipaddresses",
            "ipaddress",
            &["ip"],
            &[],
            false,
            "ipaddresses",
            false,
            Box::new(Typed(servicecidr::IPAddresses)),
        ),
        resource(
            "networking.k8s.io",
            "ServiceCIDR",
            "servicecidrs",
            "servicecidr",
            &[],
            &[],
            false,
            "servicecidrs",
            true,
            Box::new(Typed(servicecidr::ServiceCIDRs)),
        ),
        resource(
            "storage.k8s.io",
            "StorageClass",
            "storageclasses",
            "storageclass",
            &["sc"],
            &[],
            false,
            "storageclasses",
            false,
            Box::new(Typed(storageclass::StorageClasses)),
        ),
        resource("coordination.k8s.io", "Lease", "leases", "lease", &[], &[], true, "leases", false, Box::new(Typed(lease::Leases))),
        resource(
            "discovery.k8s.io",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            &[],
            &[],
            true,
            "endpointslices",
            false,
            Box::new(Typed(endpoints::EndpointSlices)),
        ),
    ]
}

/// Field errors of a map of labels (`metadata.labels`, selectors).
pub fn validate_labels(path: &str, labels: Option<&std::collections::BTreeMap<String, String>>) -> Vec<FieldError> {
    let mut errs = vec![];
    for (k, v) in labels.into_iter().flatten() {
        errs.extend(berth_names::qualified_name(k).into_iter().map(|r| FieldError::invalid(path, k.as_str(), r)));
        errs.extend(berth_names::label_value(v).into_iter().map(|r| FieldError::invalid(path, v.as_str(), r)));
    }
    errs
}
