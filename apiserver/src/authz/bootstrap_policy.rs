//! The bootstrap RBAC policy: the ClusterRoles, ClusterRoleBindings, Roles and RoleBindings a
//! Kubernetes apiserver creates at start (upstream 1.33, default feature gates).
//!
//! This is data, transcribed from upstream's generated fixtures for the bootstrap policy. Each
//! object is an API object in `rbac.authorization.k8s.io/v1`, carrying the
//! `kubernetes.io/bootstrapping: rbac-defaults` label and the
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` annotation, so a reconciler at start can
//! tell them from objects users made. Rules keep upstream's order; within a rule the verbs,
//! groups, resources, names and URLs are sorted, as upstream's rule builder leaves them. Lists of
//! objects are sorted by name (Roles and RoleBindings by namespace, then name), as in upstream's
//! fixtures.
//!
//! `admin`, `edit` and `view` carry only an aggregation rule: the ClusterRole aggregation
//! controller fills their rules from the roles whose labels the selectors match
//! (`system:aggregate-to-*`, and `edit`/`view` themselves, which feed `admin`/`edit`).
//!
//! Roles behind feature gates that are off by default in 1.33 are left out (dynamic resource
//! allocation, VolumeAttributesClass, ClusterTrustBundle, storage version APIs and so on).

use serde_json::{json, Map, Value};

const API_VERSION: &str = "rbac.authorization.k8s.io/v1";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const BOOTSTRAP_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
const CONTROLLER_PREFIX: &str = "system:controller:";
const KUBE_SYSTEM: &str = "kube-system";
const KUBE_PUBLIC: &str = "kube-public";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

const CORE: &[&str] = &[""];
const APPS: &[&str] = &["apps"];
const APPS_EXT: &[&str] = &["apps", "extensions"];
const AUTHN: &[&str] = &["authentication.k8s.io"];
const AUTHZ: &[&str] = &["authorization.k8s.io"];
const BATCH: &[&str] = &["batch"];
const CERTS: &[&str] = &["certificates.k8s.io"];
const COORDINATION: &[&str] = &["coordination.k8s.io"];
const DISCOVERY: &[&str] = &["discovery.k8s.io"];
const NETWORKING: &[&str] = &["networking.k8s.io"];
const STORAGE: &[&str] = &["storage.k8s.io"];
const ALL: &[&str] = &["*"];

/// A resource rule: verbs on resources of some API groups.
fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
}

/// A resource rule limited to some object names.
fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "resourceNames": names, "verbs": verbs })
}

/// A non-resource rule: verbs on URL paths.
fn urls(verbs: &[&str], paths: &[&str]) -> Value {
    json!({ "nonResourceURLs": paths, "verbs": verbs })
}

/// Upstream's shared events rule: write events in the core and events.k8s.io groups.
fn events() -> Value {
    rule(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"])
}

fn metadata(name: &str, namespace: Option<&str>, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = Map::new();
    labels.insert(BOOTSTRAP_LABEL.0.to_string(), json!(BOOTSTRAP_LABEL.1));
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), json!(v));
    }
    let mut meta = Map::new();
    meta.insert("name".to_string(), json!(name));
    if let Some(ns) = namespace {
        meta.insert("namespace".to_string(), json!(ns));
    }
    meta.insert("labels".to_string(), Value::Object(labels));
    meta.insert("annotations".to_string(), json!({ AUTOUPDATE: "true" }));
    Value::Object(meta)
}

fn cluster_role(name: &str, extra_labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterRole",
        "metadata": metadata(name, None, extra_labels),
        "rules": rules,
    })
}

/// A ClusterRole whose rules the aggregation controller fills from the roles labelled
/// `selector: "true"`; upstream leaves its own rules empty.
fn aggregated(name: &str, extra_labels: &[(&str, &str)], selector: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterRole",
        "metadata": metadata(name, None, extra_labels),
        "aggregationRule": { "clusterRoleSelectors": [ { "matchLabels": { selector: "true" } } ] },
    })
}

fn controller(suffix: &str, rules: Vec<Value>) -> Value {
    cluster_role(&format!("{CONTROLLER_PREFIX}{suffix}"), &[], rules)
}

fn role(namespace: &str, name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Role",
        "metadata": metadata(name, Some(namespace), &[]),
        "rules": rules,
    })
}

fn user(name: &str) -> Value {
    json!({ "apiGroup": RBAC_GROUP, "kind": "User", "name": name })
}

fn group(name: &str) -> Value {
    json!({ "apiGroup": RBAC_GROUP, "kind": "Group", "name": name })
}

fn service_account(namespace: &str, name: &str) -> Value {
    json!({ "kind": "ServiceAccount", "name": name, "namespace": namespace })
}

fn with_subjects(mut binding: Value, subjects: Vec<Value>) -> Value {
    if !subjects.is_empty() {
        if let Some(obj) = binding.as_object_mut() {
            obj.insert("subjects".to_string(), Value::Array(subjects));
        }
    }
    binding
}

/// A ClusterRoleBinding of the ClusterRole of the same name; no subjects leaves `subjects` out.
fn cluster_binding(name: &str, subjects: Vec<Value>) -> Value {
    let binding = json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name, None, &[]),
        "roleRef": { "apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name },
    });
    with_subjects(binding, subjects)
}

fn role_binding(namespace: &str, name: &str, role_name: &str, subjects: Vec<Value>) -> Value {
    let binding = json!({
        "apiVersion": API_VERSION,
        "kind": "RoleBinding",
        "metadata": metadata(name, Some(namespace), &[]),
        "roleRef": { "apiGroup": RBAC_GROUP, "kind": "Role", "name": role_name },
    });
    with_subjects(binding, subjects)
}

fn object_name(obj: &Value) -> Option<&str> {
    obj.get("metadata")?.get("name")?.as_str()
}

/// The ClusterRoles (incl. the system:controller:* ones), as API objects (apiVersion rbac.authorization.k8s.io/v1, kind ClusterRole).
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = base_cluster_roles();
    roles.extend(controller_roles());
    roles
}

/// The ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings = vec![
        cluster_binding("cluster-admin", vec![group("system:masters")]),
        cluster_binding("system:basic-user", vec![group("system:authenticated")]),
        cluster_binding("system:discovery", vec![group("system:authenticated")]),
        cluster_binding("system:kube-controller-manager", vec![user("system:kube-controller-manager")]),
        cluster_binding("system:kube-dns", vec![service_account(KUBE_SYSTEM, "kube-dns")]),
        cluster_binding("system:kube-scheduler", vec![user("system:kube-scheduler")]),
        cluster_binding("system:monitoring", vec![group("system:monitoring")]),
        // Upstream keeps this binding with no subjects: the Node authorizer took over in 1.7, and
        // the empty binding lets reconciliation strip the old system:nodes subject.
        cluster_binding("system:node", vec![]),
        cluster_binding("system:node-proxier", vec![user("system:kube-proxy")]),
        cluster_binding("system:public-info-viewer", vec![group("system:authenticated"), group("system:unauthenticated")]),
        cluster_binding("system:service-account-issuer-discovery", vec![group("system:serviceaccounts")]),
        cluster_binding("system:volume-scheduler", vec![user("system:kube-scheduler")]),
    ];
    // Each controller role is bound to the service account of the same name in kube-system.
    for role in controller_roles() {
        if let Some(name) = object_name(&role) {
            let sa = name.strip_prefix(CONTROLLER_PREFIX).unwrap_or(name);
            bindings.push(cluster_binding(name, vec![service_account(KUBE_SYSTEM, sa)]));
        }
    }
    bindings
}

/// The namespaced Roles (metadata.namespace set).
pub fn roles() -> Vec<Value> {
    let leader_locking = |lock: &str| {
        vec![
            rule(&["watch"], CORE, &["configmaps"]),
            named(&["get", "update"], CORE, &["configmaps"], &[lock]),
            rule(&["create", "get", "list", "update", "watch"], COORDINATION, &["leases"]),
            rule(&["create", "get", "list", "update", "watch"], COORDINATION, &["leasecandidates"]),
        ]
    };
    vec![
        role(
            KUBE_PUBLIC,
            "system:controller:bootstrap-signer",
            vec![rule(READ, CORE, &["configmaps"]), named(&["update"], CORE, &["configmaps"], &["cluster-info"]), events()],
        ),
        role(KUBE_SYSTEM, "extension-apiserver-authentication-reader", vec![named(READ, CORE, &["configmaps"], &["extension-apiserver-authentication"])]),
        role(KUBE_SYSTEM, "system::leader-locking-kube-controller-manager", leader_locking("kube-controller-manager")),
        role(KUBE_SYSTEM, "system::leader-locking-kube-scheduler", leader_locking("kube-scheduler")),
        role(KUBE_SYSTEM, "system:controller:bootstrap-signer", vec![rule(READ, CORE, &["secrets"])]),
        role(KUBE_SYSTEM, "system:controller:cloud-provider", vec![rule(&["create", "get", "list", "watch"], CORE, &["configmaps"])]),
        role(KUBE_SYSTEM, "system:controller:token-cleaner", vec![rule(&["delete", "get", "list", "watch"], CORE, &["secrets"]), events()]),
    ]
}

/// The namespaced RoleBindings.
pub fn role_bindings() -> Vec<Value> {
    vec![
        role_binding(
            KUBE_PUBLIC,
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account(KUBE_SYSTEM, "bootstrap-signer")],
        ),
        // Upstream names this binding differently from the role it binds.
        role_binding(
            KUBE_SYSTEM,
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            vec![user("system:kube-controller-manager"), user("system:kube-scheduler")],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            vec![
                user("system:kube-controller-manager"),
                service_account(KUBE_SYSTEM, "kube-controller-manager"),
                service_account(KUBE_SYSTEM, "leader-election-controller"),
            ],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            vec![user("system:kube-scheduler"), service_account(KUBE_SYSTEM, "kube-scheduler")],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account(KUBE_SYSTEM, "bootstrap-signer")],
        ),
        role_binding(KUBE_SYSTEM, "system:controller:cloud-provider", "system:controller:cloud-provider", vec![service_account(KUBE_SYSTEM, "cloud-provider")]),
        role_binding(KUBE_SYSTEM, "system:controller:token-cleaner", "system:controller:token-cleaner", vec![service_account(KUBE_SYSTEM, "token-cleaner")]),
    ]
}

/// The ClusterRoles other than the controllers' ones (upstream's cluster-roles fixture).
fn base_cluster_roles() -> Vec<Value> {
    let approver = |signer: &str| vec![named(&["approve"], CERTS, &["signers"], &[signer])];
    vec![
        aggregated("admin", &[], AGGREGATE_TO_ADMIN),
        cluster_role("cluster-admin", &[], vec![rule(&["*"], ALL, &["*"]), urls(&["*"], &["*"])]),
        aggregated("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            vec![rule(&["create"], AUTHZ, &["localsubjectaccessreviews"]), rule(READ_WRITE, &[RBAC_GROUP], &["rolebindings", "roles"])],
        ),
        cluster_role("system:aggregate-to-edit", &[(AGGREGATE_TO_EDIT, "true")], aggregate_to_edit_rules()),
        cluster_role("system:aggregate-to-view", &[(AGGREGATE_TO_VIEW, "true")], aggregate_to_view_rules()),
        cluster_role("system:auth-delegator", &[], vec![rule(&["create"], AUTHN, &["tokenreviews"]), rule(&["create"], AUTHZ, &["subjectaccessreviews"])]),
        cluster_role(
            "system:basic-user",
            &[],
            vec![rule(&["create"], AUTHZ, &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]), rule(&["create"], AUTHN, &["selfsubjectreviews"])],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(&["create"], CERTS, &["certificatesigningrequests/nodeclient"])],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(&["create"], CERTS, &["certificatesigningrequests/selfnodeclient"])],
        ),
        cluster_role("system:certificates.k8s.io:kube-apiserver-client-approver", &[], approver("kubernetes.io/kube-apiserver-client")),
        cluster_role("system:certificates.k8s.io:kube-apiserver-client-kubelet-approver", &[], approver("kubernetes.io/kube-apiserver-client-kubelet")),
        cluster_role("system:certificates.k8s.io:kubelet-serving-approver", &[], approver("kubernetes.io/kubelet-serving")),
        cluster_role("system:certificates.k8s.io:legacy-unknown-approver", &[], approver("kubernetes.io/legacy-unknown")),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(&["get"], &["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"])],
        ),
        cluster_role("system:heapster", &[], vec![rule(READ, CORE, &["events", "namespaces", "nodes", "pods"]), rule(READ, &["extensions"], &["deployments"])]),
        cluster_role("system:kube-aggregator", &[], vec![rule(READ, CORE, &["endpoints", "services"])]),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![
                events(),
                rule(&["create"], COORDINATION, &["leases"]),
                named(&["get", "update"], COORDINATION, &["leases"], &["kube-controller-manager"]),
                rule(&["create"], CORE, &["secrets", "serviceaccounts"]),
                rule(&["delete"], CORE, &["secrets"]),
                rule(&["get"], CORE, &["configmaps", "namespaces", "secrets", "serviceaccounts"]),
                rule(&["update"], CORE, &["secrets", "serviceaccounts"]),
                rule(&["create"], AUTHN, &["tokenreviews"]),
                rule(&["create"], AUTHZ, &["subjectaccessreviews"]),
                rule(&["list", "watch"], ALL, &["*"]),
                rule(&["create"], CORE, &["serviceaccounts/token"]),
            ],
        ),
        cluster_role("system:kube-dns", &[], vec![rule(&["list", "watch"], CORE, &["endpoints", "services"])]),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                events(),
                rule(&["create"], COORDINATION, &["leases"]),
                named(&["get", "update"], COORDINATION, &["leases"], &["kube-scheduler"]),
                rule(READ, CORE, &["nodes"]),
                rule(&["delete", "get", "list", "watch"], CORE, &["pods"]),
                rule(&["create"], CORE, &["bindings", "pods/binding"]),
                rule(&["patch", "update"], CORE, &["pods/status"]),
                rule(READ, CORE, &["replicationcontrollers", "services"]),
                rule(READ, APPS_EXT, &["replicasets"]),
                rule(READ, APPS, &["statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, CORE, &["persistentvolumeclaims", "persistentvolumes"]),
                rule(&["create"], AUTHN, &["tokenreviews"]),
                rule(&["create"], AUTHZ, &["subjectaccessreviews"]),
                rule(READ, STORAGE, &["csinodes"]),
                rule(READ, CORE, &["namespaces"]),
                rule(READ, STORAGE, &["csidrivers"]),
                rule(READ, STORAGE, &["csistoragecapacities"]),
            ],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            &[],
            vec![
                rule(READ, CORE, &["nodes"]),
                rule(&["proxy"], CORE, &["nodes"]),
                rule(&["*"], CORE, &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"]),
            ],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(&["get"], &["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*"])],
        ),
        cluster_role("system:node", &[], node_rules()),
        cluster_role("system:node-bootstrapper", &[], vec![rule(&["create", "get", "list", "watch"], CERTS, &["certificatesigningrequests"])]),
        cluster_role("system:node-problem-detector", &[], vec![rule(&["get"], CORE, &["nodes"]), rule(&["patch"], CORE, &["nodes/status"]), events()]),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], CORE, &["endpoints", "services"]),
                rule(READ, CORE, &["nodes"]),
                events(),
                rule(&["list", "watch"], DISCOVERY, &["endpointslices"]),
                rule(&["list", "watch"], NETWORKING, &["servicecidrs"]),
            ],
        ),
        cluster_role(
            "system:persistent-volume-provisioner",
            &[],
            vec![
                rule(&["create", "delete", "get", "list", "watch"], CORE, &["persistentvolumes"]),
                rule(&["get", "list", "update", "watch"], CORE, &["persistentvolumeclaims"]),
                rule(READ, STORAGE, &["storageclasses"]),
                rule(&["watch"], CORE, &["events"]),
                events(),
            ],
        ),
        cluster_role("system:public-info-viewer", &[], vec![urls(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
        cluster_role("system:service-account-issuer-discovery", &[], vec![urls(&["get"], &["/.well-known/openid-configuration", "/openid/v1/jwks"])]),
        cluster_role(
            "system:volume-scheduler",
            &[],
            vec![
                rule(&["get", "list", "patch", "update", "watch"], CORE, &["persistentvolumes"]),
                rule(READ, STORAGE, &["storageclasses"]),
                rule(&["get", "list", "patch", "update", "watch"], CORE, &["persistentvolumeclaims"]),
            ],
        ),
        aggregated("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
    ]
}

fn aggregate_to_edit_rules() -> Vec<Value> {
    vec![
        rule(READ, CORE, &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
        rule(&["impersonate"], CORE, &["serviceaccounts"]),
        rule(WRITE, CORE, &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
        rule(&["create"], CORE, &["pods/eviction"]),
        rule(
            WRITE,
            CORE,
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["create"], CORE, &["serviceaccounts/token"]),
        rule(
            WRITE,
            APPS,
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, BATCH, &["cronjobs", "jobs"]),
        rule(
            WRITE,
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "ingresses",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
            ],
        ),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(WRITE, NETWORKING, &["ingresses", "networkpolicies"]),
        rule(READ_WRITE, COORDINATION, &["leases"]),
    ]
}

fn aggregate_to_view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            CORE,
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            CORE,
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
        ),
        rule(READ, CORE, &["namespaces"]),
        rule(READ, DISCOVERY, &["endpointslices"]),
        rule(
            READ,
            APPS,
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(READ, &["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, BATCH, &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        rule(
            READ,
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
            ],
        ),
        rule(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, NETWORKING, &["ingresses", "ingresses/status", "networkpolicies"]),
    ]
}

/// system:node. The Node authorizer and the NodeRestriction admission plugin narrow these to the
/// node's own objects; the role itself is no longer bound to the system:nodes group.
fn node_rules() -> Vec<Value> {
    vec![
        rule(&["create"], AUTHN, &["tokenreviews"]),
        rule(&["create"], AUTHZ, &["localsubjectaccessreviews", "subjectaccessreviews"]),
        rule(READ, CORE, &["services"]),
        rule(&["create", "get", "list", "watch"], CORE, &["nodes"]),
        rule(&["patch", "update"], CORE, &["nodes/status"]),
        rule(&["patch", "update"], CORE, &["nodes"]),
        rule(&["create", "patch", "update"], CORE, &["events"]),
        rule(READ, CORE, &["pods"]),
        rule(&["create", "delete"], CORE, &["pods"]),
        rule(&["patch", "update"], CORE, &["pods/status"]),
        rule(&["create"], CORE, &["pods/eviction"]),
        rule(READ, CORE, &["configmaps", "secrets"]),
        rule(&["get"], CORE, &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["get"], CORE, &["endpoints"]),
        rule(&["create", "get", "list", "watch"], CERTS, &["certificatesigningrequests"]),
        rule(&["create", "delete", "get", "patch", "update"], COORDINATION, &["leases"]),
        rule(&["get"], STORAGE, &["volumeattachments"]),
        rule(&["create"], CORE, &["serviceaccounts/token"]),
        rule(&["get", "patch", "update"], CORE, &["persistentvolumeclaims/status"]),
        rule(READ, STORAGE, &["csidrivers"]),
        rule(&["create", "delete", "get", "patch", "update"], STORAGE, &["csinodes"]),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

/// The system:controller:* ClusterRoles, one per kube-controller-manager controller that runs
/// under its own service account (upstream's controller-roles fixture).
fn controller_roles() -> Vec<Value> {
    vec![
        controller(
            "attachdetach-controller",
            vec![
                rule(&["list", "watch"], CORE, &["persistentvolumeclaims", "persistentvolumes"]),
                rule(READ, CORE, &["nodes"]),
                rule(&["patch", "update"], CORE, &["nodes/status"]),
                rule(&["list", "watch"], CORE, &["pods"]),
                events(),
                rule(&["create", "delete", "get", "list", "watch"], STORAGE, &["volumeattachments"]),
                rule(READ, STORAGE, &["csidrivers"]),
                rule(READ, STORAGE, &["csinodes"]),
            ],
        ),
        controller(
            "certificate-controller",
            vec![
                rule(&["delete", "get", "list", "watch"], CERTS, &["certificatesigningrequests"]),
                rule(&["update"], CERTS, &["certificatesigningrequests/approval", "certificatesigningrequests/status"]),
                named(&["approve"], CERTS, &["signers"], &["kubernetes.io/kube-apiserver-client-kubelet"]),
                named(
                    &["sign"],
                    CERTS,
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ],
                ),
                rule(&["create"], AUTHZ, &["subjectaccessreviews"]),
                events(),
            ],
        ),
        controller(
            "clusterrole-aggregation-controller",
            vec![rule(&["escalate", "get", "list", "patch", "update", "watch"], &[RBAC_GROUP], &["clusterroles"])],
        ),
        controller(
            "cronjob-controller",
            vec![
                rule(&["get", "list", "update", "watch"], BATCH, &["cronjobs"]),
                rule(&["create", "delete", "get", "list", "patch", "update", "watch"], BATCH, &["jobs"]),
                rule(&["update"], BATCH, &["cronjobs/status"]),
                rule(&["update"], BATCH, &["cronjobs/finalizers"]),
                rule(&["delete", "list", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        controller(
            "daemon-set-controller",
            vec![
                rule(READ, APPS_EXT, &["daemonsets"]),
                rule(&["update"], APPS_EXT, &["daemonsets/status"]),
                rule(&["update"], APPS_EXT, &["daemonsets/finalizers"]),
                rule(&["list", "watch"], CORE, &["nodes"]),
                rule(&["create", "delete", "list", "patch", "watch"], CORE, &["pods"]),
                rule(&["create"], CORE, &["pods/binding"]),
                rule(&["create", "delete", "get", "list", "patch", "update", "watch"], APPS, &["controllerrevisions"]),
                events(),
            ],
        ),
        controller(
            "deployment-controller",
            vec![
                rule(&["get", "list", "update", "watch"], APPS_EXT, &["deployments"]),
                rule(&["update"], APPS_EXT, &["deployments/status"]),
                rule(&["update"], APPS_EXT, &["deployments/finalizers"]),
                rule(&["create", "delete", "get", "list", "patch", "update", "watch"], APPS_EXT, &["replicasets"]),
                rule(&["get", "list", "update", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        controller(
            "disruption-controller",
            vec![
                rule(READ, APPS_EXT, &["deployments"]),
                rule(READ, APPS_EXT, &["replicasets"]),
                rule(READ, CORE, &["replicationcontrollers"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, APPS, &["statefulsets"]),
                rule(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                rule(&["patch", "update"], CORE, &["pods/status"]),
                rule(&["get"], ALL, &["*/scale"]),
                events(),
            ],
        ),
        controller(
            "endpoint-controller",
            vec![
                rule(READ, CORE, &["pods", "services"]),
                rule(&["create", "delete", "get", "list", "update", "watch"], CORE, &["endpoints"]),
                rule(&["create"], CORE, &["endpoints/restricted"]),
                events(),
            ],
        ),
        controller(
            "endpointslice-controller",
            vec![
                rule(READ, CORE, &["nodes", "pods", "services"]),
                rule(&["update"], CORE, &["services/finalizers"]),
                rule(&["create", "delete", "get", "list", "update", "watch"], DISCOVERY, &["endpointslices"]),
                events(),
            ],
        ),
        controller(
            "endpointslicemirroring-controller",
            vec![
                rule(READ, CORE, &["endpoints", "services"]),
                rule(&["update"], CORE, &["services/finalizers"]),
                rule(&["update"], CORE, &["endpoints/finalizers"]),
                rule(&["create", "delete", "get", "list", "update", "watch"], DISCOVERY, &["endpointslices"]),
                events(),
            ],
        ),
        controller(
            "ephemeral-volume-controller",
            vec![
                rule(READ, CORE, &["pods"]),
                rule(&["update"], CORE, &["pods/finalizers"]),
                rule(&["create", "get", "list", "watch"], CORE, &["persistentvolumeclaims"]),
                events(),
            ],
        ),
        controller(
            "expand-controller",
            vec![
                rule(&["get", "list", "patch", "update", "watch"], CORE, &["persistentvolumes"]),
                rule(&["patch", "update"], CORE, &["persistentvolumeclaims/status"]),
                rule(READ, CORE, &["persistentvolumeclaims"]),
                events(),
                // For the in-tree portworx volume plugin.
                rule(&["get"], CORE, &["services"]),
            ],
        ),
        controller("generic-garbage-collector", vec![rule(&["delete", "get", "list", "patch", "update", "watch"], ALL, &["*"]), events()]),
        controller(
            "horizontal-pod-autoscaler",
            vec![
                rule(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(&["update"], &["autoscaling"], &["horizontalpodautoscalers/status"]),
                rule(&["get", "update"], ALL, &["*/scale"]),
                rule(&["list", "watch"], CORE, &["pods"]),
                rule(&["list", "watch"], &["metrics.k8s.io"], &["pods"]),
                rule(READ, &["custom.metrics.k8s.io"], &["*"]),
                rule(READ, &["external.metrics.k8s.io"], &["*"]),
                events(),
            ],
        ),
        controller(
            "job-controller",
            vec![
                rule(&["get", "list", "patch", "update", "watch"], BATCH, &["jobs"]),
                rule(&["update"], BATCH, &["jobs/status"]),
                rule(&["update"], BATCH, &["jobs/finalizers"]),
                rule(&["create", "delete", "list", "patch", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        controller(
            "legacy-service-account-token-cleaner",
            vec![
                named(&["get"], CORE, &["configmaps"], &["kube-apiserver-legacy-service-account-token-tracking"]),
                rule(&["delete", "patch"], CORE, &["secrets"]),
            ],
        ),
        controller(
            "namespace-controller",
            vec![
                rule(&["delete", "get", "list", "watch"], CORE, &["namespaces"]),
                rule(&["update"], CORE, &["namespaces/finalize", "namespaces/status"]),
                rule(&["delete", "deletecollection", "get", "list", "watch"], ALL, &["*"]),
            ],
        ),
        controller(
            "node-controller",
            vec![
                rule(&["delete", "get", "list", "patch", "update", "watch"], CORE, &["nodes"]),
                rule(&["patch", "update"], CORE, &["nodes/status"]),
                rule(&["patch", "update"], CORE, &["pods/status"]),
                rule(&["delete", "get", "list", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        controller(
            "persistent-volume-binder",
            vec![
                rule(&["create", "delete", "get", "list", "update", "watch"], CORE, &["persistentvolumes"]),
                rule(&["update"], CORE, &["persistentvolumes/status"]),
                rule(&["get", "list", "update", "watch"], CORE, &["persistentvolumeclaims"]),
                rule(&["update"], CORE, &["persistentvolumeclaims/status"]),
                rule(&["create", "delete", "get", "list", "watch"], CORE, &["pods"]),
                rule(READ, STORAGE, &["storageclasses"]),
                rule(&["list", "watch"], CORE, &["nodes"]),
                events(),
                // The recycler watches its pod's events.
                rule(&["watch"], CORE, &["events"]),
                // For the in-tree portworx volume plugin.
                rule(&["get"], CORE, &["services"]),
            ],
        ),
        controller(
            "pod-garbage-collector",
            vec![rule(&["delete", "list", "watch"], CORE, &["pods"]), rule(READ, CORE, &["nodes"]), rule(&["patch"], CORE, &["pods/status"])],
        ),
        controller("pv-protection-controller", vec![rule(&["get", "list", "update", "watch"], CORE, &["persistentvolumes"]), events()]),
        controller(
            "pvc-protection-controller",
            vec![rule(&["get", "list", "update", "watch"], CORE, &["persistentvolumeclaims"]), rule(READ, CORE, &["pods"]), events()],
        ),
        controller(
            "replicaset-controller",
            vec![
                rule(&["get", "list", "update", "watch"], APPS_EXT, &["replicasets"]),
                rule(&["update"], APPS_EXT, &["replicasets/status"]),
                rule(&["update"], APPS_EXT, &["replicasets/finalizers"]),
                rule(&["create", "delete", "list", "patch", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        controller(
            "replication-controller",
            vec![
                rule(&["get", "list", "update", "watch"], CORE, &["replicationcontrollers"]),
                rule(&["update"], CORE, &["replicationcontrollers/status"]),
                rule(&["update"], CORE, &["replicationcontrollers/finalizers"]),
                rule(&["create", "delete", "list", "patch", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        controller("resourcequota-controller", vec![rule(&["list", "watch"], ALL, &["*"]), rule(&["update"], CORE, &["resourcequotas/status"]), events()]),
        controller("root-ca-cert-publisher", vec![rule(&["create", "update"], CORE, &["configmaps"]), events()]),
        controller("route-controller", vec![rule(&["list", "watch"], CORE, &["nodes"]), rule(&["patch"], CORE, &["nodes/status"]), events()]),
        controller(
            "selinux-warning-controller",
            vec![
                events(),
                rule(READ, CORE, &["persistentvolumes"]),
                rule(READ, CORE, &["persistentvolumeclaims"]),
                rule(READ, CORE, &["pods"]),
                rule(READ, STORAGE, &["csidrivers"]),
            ],
        ),
        controller("service-account-controller", vec![rule(&["create"], CORE, &["serviceaccounts"]), events()]),
        controller(
            "service-cidrs-controller",
            vec![
                rule(&["get", "list", "patch", "update", "watch"], NETWORKING, &["servicecidrs"]),
                rule(&["patch", "update"], NETWORKING, &["servicecidrs/finalizers"]),
                rule(&["patch", "update"], NETWORKING, &["servicecidrs/status"]),
                rule(READ, NETWORKING, &["ipaddresses"]),
                events(),
            ],
        ),
        controller(
            "service-controller",
            vec![rule(READ, CORE, &["services"]), rule(&["patch", "update"], CORE, &["services/status"]), rule(&["list", "watch"], CORE, &["nodes"]), events()],
        ),
        controller(
            "statefulset-controller",
            vec![
                rule(&["list", "watch"], CORE, &["pods"]),
                rule(READ, APPS, &["statefulsets"]),
                rule(&["update"], APPS, &["statefulsets/status"]),
                rule(&["update"], APPS, &["statefulsets/finalizers"]),
                rule(&["create", "delete", "get", "patch", "update"], CORE, &["pods"]),
                rule(&["create", "delete", "get", "list", "patch", "update", "watch"], APPS, &["controllerrevisions"]),
                rule(&["create", "get", "list", "watch"], CORE, &["persistentvolumeclaims"]),
                rule(&["delete", "update"], CORE, &["persistentvolumeclaims"]),
                rule(&["update"], CORE, &["pods/finalizers"]),
                events(),
            ],
        ),
        controller("ttl-after-finished-controller", vec![rule(&["delete", "get", "list", "watch"], BATCH, &["jobs"]), events()]),
        controller("ttl-controller", vec![rule(&["list", "patch", "update", "watch"], CORE, &["nodes"]), events()]),
        controller(
            "validatingadmissionpolicy-status-controller",
            vec![
                rule(READ, &["admissionregistration.k8s.io"], &["validatingadmissionpolicies"]),
                rule(&["get", "patch", "update"], &["admissionregistration.k8s.io"], &["validatingadmissionpolicies/status"]),
                events(),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn name(obj: &Value) -> &str {
        object_name(obj).unwrap_or("")
    }

    fn namespace(obj: &Value) -> &str {
        obj["metadata"]["namespace"].as_str().unwrap_or("")
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
    }

    static NULL: Value = Value::Null;

    fn find<'a>(objs: &'a [Value], wanted: &str) -> &'a Value {
        objs.iter().find(|o| name(o) == wanted).unwrap_or(&NULL)
    }

    fn rules_of<'a>(objs: &'a [Value], wanted: &str) -> Vec<&'a Value> {
        find(objs, wanted)["rules"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
    }

    fn matches(list: &[&str], x: &str) -> bool {
        list.iter().any(|v| *v == "*" || *v == x)
    }

    /// Whether some rule allows a resource request (no `*/sub` handling: not needed here).
    fn allows(rules: &[&Value], verb: &str, group: &str, resource: &str, object: &str) -> bool {
        rules.iter().any(|r| {
            let names = strings(&r["resourceNames"]);
            matches(&strings(&r["verbs"]), verb)
                && matches(&strings(&r["apiGroups"]), group)
                && matches(&strings(&r["resources"]), resource)
                && (names.is_empty() || names.contains(&object))
        })
    }

    fn allows_url(rules: &[&Value], verb: &str, url: &str) -> bool {
        rules.iter().any(|r| {
            matches(&strings(&r["verbs"]), verb)
                && strings(&r["nonResourceURLs"]).iter().any(|u| *u == url || u.strip_suffix('*').is_some_and(|p| url.starts_with(p)))
        })
    }

    #[test]
    fn counts_match_upstream_fixtures() {
        let crs = cluster_roles();
        let controllers = crs.iter().filter(|r| name(r).starts_with(CONTROLLER_PREFIX)).count();
        // cluster-roles.yaml holds 31, controller-roles.yaml 35.
        assert_eq!(crs.len() - controllers, 31);
        assert_eq!(controllers, 35);
        let crbs = cluster_role_bindings();
        let controller_bindings = crbs.iter().filter(|b| name(b).starts_with(CONTROLLER_PREFIX)).count();
        // cluster-role-bindings.yaml holds 12, controller-role-bindings.yaml 35.
        assert_eq!(crbs.len() - controller_bindings, 12);
        assert_eq!(controller_bindings, 35);
        assert_eq!(roles().len(), 7);
        assert_eq!(role_bindings().len(), 7);
    }

    #[test]
    fn every_object_has_kind_labels_and_annotation() {
        let groups = [
            (cluster_roles(), "ClusterRole", false),
            (cluster_role_bindings(), "ClusterRoleBinding", false),
            (roles(), "Role", true),
            (role_bindings(), "RoleBinding", true),
        ];
        for (objs, kind, namespaced) in groups {
            for o in &objs {
                assert_eq!(o["apiVersion"], API_VERSION, "{}", name(o));
                assert_eq!(o["kind"], kind, "{}", name(o));
                assert!(!name(o).is_empty());
                assert_eq!(o["metadata"]["labels"]["kubernetes.io/bootstrapping"], "rbac-defaults", "{}", name(o));
                assert_eq!(o["metadata"]["annotations"][AUTOUPDATE], "true", "{}", name(o));
                assert_eq!(o["metadata"].get("namespace").is_some(), namespaced, "{}", name(o));
                if namespaced {
                    assert!(namespace(o) == KUBE_SYSTEM || namespace(o) == KUBE_PUBLIC, "{}", name(o));
                }
            }
        }
    }

    #[test]
    fn names_are_unique_and_sorted_as_upstream() {
        let base: Vec<Value> = cluster_roles().into_iter().filter(|r| !name(r).starts_with(CONTROLLER_PREFIX)).collect();
        let ctrl: Vec<Value> = cluster_roles().into_iter().filter(|r| name(r).starts_with(CONTROLLER_PREFIX)).collect();
        let base_b: Vec<Value> = cluster_role_bindings().into_iter().filter(|r| !name(r).starts_with(CONTROLLER_PREFIX)).collect();
        for objs in [base, ctrl, base_b, roles(), role_bindings()] {
            let keys: Vec<(&str, &str)> = objs.iter().map(|o| (namespace(o), name(o))).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(keys, sorted);
        }
        for objs in [cluster_roles(), cluster_role_bindings()] {
            let set: HashSet<&str> = objs.iter().map(name).collect();
            assert_eq!(set.len(), objs.len());
        }
    }

    #[test]
    fn rules_are_well_formed_and_normalized() {
        let all: Vec<Value> = cluster_roles().into_iter().chain(roles()).collect();
        for o in &all {
            let rules = o["rules"].as_array();
            if o.get("aggregationRule").is_some() {
                assert!(rules.is_none(), "{} has rules besides its aggregation rule", name(o));
                continue;
            }
            let rules = rules.map(|r| r.as_slice()).unwrap_or_default();
            assert!(!rules.is_empty(), "{}", name(o));
            for r in rules {
                let verbs = strings(&r["verbs"]);
                assert!(!verbs.is_empty(), "{}", name(o));
                let is_url = r.get("nonResourceURLs").is_some();
                assert_eq!(is_url, r.get("resources").is_none(), "{}", name(o));
                assert_eq!(is_url, r.get("apiGroups").is_none(), "{}", name(o));
                for key in ["verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"] {
                    let list = strings(&r[key]);
                    let mut sorted = list.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(list, sorted, "{} {key}", name(o));
                    if r.get(key).is_some() {
                        assert!(!list.is_empty(), "{} {key}", name(o));
                    }
                }
            }
        }
    }

    #[test]
    fn bindings_point_at_existing_roles() {
        let crs = cluster_roles();
        let cluster_names: HashSet<&str> = crs.iter().map(name).collect();
        for b in cluster_role_bindings() {
            assert_eq!(b["roleRef"]["apiGroup"], RBAC_GROUP);
            assert_eq!(b["roleRef"]["kind"], "ClusterRole");
            let target = b["roleRef"]["name"].as_str().unwrap_or("");
            assert!(cluster_names.contains(target), "{} -> {target}", name(&b));
        }
        let rs = roles();
        for b in role_bindings() {
            assert_eq!(b["roleRef"]["apiGroup"], RBAC_GROUP);
            assert_eq!(b["roleRef"]["kind"], "Role");
            let target = b["roleRef"]["name"].as_str().unwrap_or("");
            assert!(rs.iter().any(|r| name(r) == target && namespace(r) == namespace(&b)), "{} -> {target}", name(&b));
        }
    }

    #[test]
    fn subjects_are_well_formed() {
        for b in cluster_role_bindings().iter().chain(role_bindings().iter()) {
            if name(b) == "system:node" {
                assert!(b.get("subjects").is_none(), "system:node is bound to nobody");
                continue;
            }
            let subjects = b["subjects"].as_array().map(|s| s.as_slice()).unwrap_or_default();
            assert!(!subjects.is_empty(), "{}", name(b));
            for s in subjects {
                assert!(s["name"].as_str().is_some_and(|n| !n.is_empty()), "{}", name(b));
                match s["kind"].as_str() {
                    Some("User") | Some("Group") => {
                        assert_eq!(s["apiGroup"], RBAC_GROUP, "{}", name(b));
                        assert!(s.get("namespace").is_none(), "{}", name(b));
                    }
                    Some("ServiceAccount") => {
                        assert!(s.get("apiGroup").is_none(), "{}", name(b));
                        assert_eq!(s["namespace"], KUBE_SYSTEM, "{}", name(b));
                    }
                    other => panic!("{}: subject kind {other:?}", name(b)),
                }
            }
        }
    }

    #[test]
    fn controller_roles_are_bound_to_their_service_accounts() {
        let crbs = cluster_role_bindings();
        for r in cluster_roles().iter().filter(|r| name(r).starts_with(CONTROLLER_PREFIX)) {
            let b = find(&crbs, name(r));
            let sa = name(r).trim_start_matches(CONTROLLER_PREFIX);
            assert_eq!(b["subjects"], json!([{ "kind": "ServiceAccount", "name": sa, "namespace": "kube-system" }]), "{}", name(r));
        }
    }

    #[test]
    fn aggregation_wiring() {
        let crs = cluster_roles();
        for (role_name, selector) in [("admin", AGGREGATE_TO_ADMIN), ("edit", AGGREGATE_TO_EDIT), ("view", AGGREGATE_TO_VIEW)] {
            let r = find(&crs, role_name);
            assert_eq!(r["aggregationRule"]["clusterRoleSelectors"], json!([{ "matchLabels": { selector: "true" } }]));
            let sources: Vec<&str> = crs.iter().filter(|c| c["metadata"]["labels"][selector] == "true").map(name).collect();
            assert!(sources.contains(&format!("system:aggregate-to-{role_name}").as_str()), "{role_name}: {sources:?}");
        }
        assert_eq!(find(&crs, "edit")["metadata"]["labels"][AGGREGATE_TO_ADMIN], "true");
        assert_eq!(find(&crs, "view")["metadata"]["labels"][AGGREGATE_TO_EDIT], "true");
        assert!(find(&crs, "admin")["metadata"]["labels"].get(AGGREGATE_TO_ADMIN).is_none());
    }

    #[test]
    fn cluster_admin_can_do_everything() {
        let crs = cluster_roles();
        let rules = rules_of(&crs, "cluster-admin");
        assert_eq!(rules.len(), 2);
        assert_eq!(*rules[0], json!({ "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] }));
        assert_eq!(*rules[1], json!({ "nonResourceURLs": ["*"], "verbs": ["*"] }));
        let b = find(&cluster_role_bindings(), "cluster-admin").clone();
        assert_eq!(b["subjects"], json!([{ "apiGroup": RBAC_GROUP, "kind": "Group", "name": "system:masters" }]));
    }

    #[test]
    fn spot_checks() {
        let crs = cluster_roles();
        let node = rules_of(&crs, "system:node");
        assert!(allows(&node, "update", "", "nodes/status", ""));
        assert!(allows(&node, "patch", "", "nodes/status", ""));
        assert!(allows(&node, "create", "", "serviceaccounts/token", ""));
        assert!(!allows(&node, "delete", "", "nodes", ""));

        let sched = rules_of(&crs, "system:kube-scheduler");
        assert!(allows(&sched, "create", "", "pods/binding", ""));
        assert!(allows(&sched, "update", "", "pods/status", ""));
        assert!(allows(&sched, "update", "coordination.k8s.io", "leases", "kube-scheduler"));
        assert!(!allows(&sched, "update", "coordination.k8s.io", "leases", "kube-controller-manager"));
        assert!(allows(&sched, "watch", "storage.k8s.io", "csistoragecapacities", ""));

        let basic = rules_of(&crs, "system:basic-user");
        assert!(allows(&basic, "create", "authorization.k8s.io", "selfsubjectaccessreviews", ""));
        assert!(allows(&basic, "create", "authorization.k8s.io", "selfsubjectrulesreviews", ""));
        assert!(allows(&basic, "create", "authentication.k8s.io", "selfsubjectreviews", ""));

        let discovery = rules_of(&crs, "system:discovery");
        for url in ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/healthz", "/livez", "/readyz", "/version", "/openapi/v3"] {
            assert!(allows_url(&discovery, "get", url), "{url}");
        }
        assert!(!allows_url(&discovery, "get", "/metrics"));
        assert!(!allows_url(&discovery, "post", "/api"));

        let edit = rules_of(&crs, "system:aggregate-to-edit");
        assert!(allows(&edit, "create", "", "pods/exec", ""));
        assert!(allows(&edit, "get", "", "secrets", ""));
        assert!(!allows(&edit, "create", "rbac.authorization.k8s.io", "roles", ""));
        let view = rules_of(&crs, "system:aggregate-to-view");
        assert!(!allows(&view, "get", "", "secrets", ""));
        assert!(allows(&view, "list", "discovery.k8s.io", "endpointslices", ""));

        let csr = rules_of(&crs, "system:controller:certificate-controller");
        assert!(allows(&csr, "sign", "certificates.k8s.io", "signers", "kubernetes.io/kubelet-serving"));
        assert!(!allows(&csr, "approve", "certificates.k8s.io", "signers", "kubernetes.io/kubelet-serving"));

        let crbs = cluster_role_bindings();
        assert_eq!(find(&crbs, "system:basic-user")["subjects"], json!([{ "apiGroup": RBAC_GROUP, "kind": "Group", "name": "system:authenticated" }]));
        assert_eq!(find(&crbs, "system:public-info-viewer")["subjects"].as_array().map(Vec::len), Some(2));

        let rs = roles();
        let reader = rs.iter().find(|r| name(r) == "extension-apiserver-authentication-reader").cloned().unwrap_or(Value::Null);
        assert_eq!(namespace(&reader), KUBE_SYSTEM);
        let reader_rules: Vec<&Value> = reader["rules"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        assert!(allows(&reader_rules, "get", "", "configmaps", "extension-apiserver-authentication"));
        assert!(!allows(&reader_rules, "get", "", "configmaps", "other"));
        assert_eq!(rs.iter().filter(|r| name(r) == "system:controller:bootstrap-signer").count(), 2);
    }
}
