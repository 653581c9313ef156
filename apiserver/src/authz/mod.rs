//! Authorization: what an authenticated user may do. Every request (from the network and from
//! the in-process components alike) is judged before anything else reads it, by upstream's
//! chain for `--authorization-mode=Node,RBAC`:
//! 1. the privileged group `system:masters` may do everything;
//! 2. the Node authorizer ([`node`]) judges kubelet credentials;
//! 3. RBAC ([`rbac`]) over the Roles, ClusterRoles and their bindings in the watch caches.
//!
//! The first authorizer that allows decides; when none does, the request is refused with 403 and
//! upstream's message (`pods is forbidden: User "alice" cannot list resource "pods" in API group
//! "" in the namespace "default"`, followed by the reasons the authorizers gave). Caches follow
//! the store a moment behind it, so a refusal is checked once more after the caches have seen
//! this server's last writes to them (`crate::written`): a binding created just before counts.
//!
//! Also here: the bootstrap policy ([`bootstrap_policy`], reconciled at start by
//! [`bootstrap`]), the ClusterRole aggregation controller ([`aggregation`]), the escalation check
//! on writes of roles and bindings ([`escalation`]), impersonation ([`impersonation`]) and the
//! authorization.k8s.io reviews ([`review`]). Attributes of a request: [`attributes`]; rules:
//! [`rule`].

pub mod aggregation;
pub mod attributes;
pub mod bootstrap;
pub mod bootstrap_policy;
pub mod escalation;
pub mod impersonation;
pub mod node;
pub mod rbac;
pub mod review;
pub mod rule;

use std::time::Duration;

use attributes::{Attributes, Target};

use crate::api::Api;
use crate::status::ApiError;

/// The group whose members may do everything (upstream's SystemPrivilegedGroup).
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// How long a refusal waits for the caches to catch up with the store.
const CATCH_UP: Duration = Duration::from_secs(2);

/// What the chain decided, with the reason (an allow's source, a refusal's reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(String),
    Refuse(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// The chain's decision on `a` as the caches stand now.
pub fn decide(api: &Api, a: &Attributes) -> Decision {
    if a.user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
        return Decision::Allow(String::new());
    }
    let mut reasons = vec![];
    match node::authorize(api, a) {
        node::Decision::Allow => return Decision::Allow(String::new()),
        node::Decision::NoOpinion(r) if !r.is_empty() => reasons.push(r),
        node::Decision::NoOpinion(_) => {}
    }
    match rbac::Policy::new(api).authorize(a) {
        Ok(why) => return Decision::Allow(why),
        Err(errors) if !errors.is_empty() => reasons.push(format!("RBAC: {}", rbac::aggregate(&errors))),
        Err(_) => {}
    }
    Decision::Refuse(reasons.join("\n"))
}

/// The chain's decision on `a`; a refusal is decided again once the caches the authorizers
/// read have seen this server's last writes to them (a RoleBinding created just before).
pub async fn authorize(api: &Api, a: &Attributes) -> Decision {
    let first = decide(api, a);
    if first.allowed() {
        return first;
    }
    let mut behind = false;
    for (group, plural) in
        [(rbac::GROUP, "clusterrolebindings"), (rbac::GROUP, "rolebindings"), (rbac::GROUP, "clusterroles"), (rbac::GROUP, "roles"), ("", "pods")]
    {
        let Ok(res) = api.resource(group, plural) else { continue };
        let Ok(cache) = api.cache(&res) else { continue };
        let written = api.writes.last(res.storage);
        if cache.revision() < written {
            behind = true;
            cache.wait_for(written, CATCH_UP).await;
        }
    }
    if behind {
        decide(api, a)
    } else {
        first
    }
}

/// Ok when the chain allows `a`, else upstream's 403.
pub async fn require(api: &Api, a: &Attributes) -> Result<(), ApiError> {
    match authorize(api, a).await {
        Decision::Allow(_) => Ok(()),
        Decision::Refuse(reason) => Err(forbidden(a, &reason)),
    }
}

/// upstream's message for a refused request (responsewriters.forbiddenMessage).
pub fn forbidden_message(a: &Attributes) -> String {
    let user = berth_names::go_quote(&a.user.name);
    match &a.target {
        Target::Path(p) => format!("User {user} cannot {} path {}", a.verb, berth_names::go_quote(p)),
        Target::Resource(r) => {
            let resource = berth_names::go_quote(&r.combined());
            let group = berth_names::go_quote(&r.group);
            if r.namespace.is_empty() {
                format!("User {user} cannot {} resource {resource} in API group {group} at the cluster scope", a.verb)
            } else {
                format!("User {user} cannot {} resource {resource} in API group {group} in the namespace {}", a.verb, berth_names::go_quote(&r.namespace))
            }
        }
    }
}

/// The 403 of a refused request, with the authorizers' reason after the message when there is one.
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let msg = forbidden_message(a);
    let why = if reason.is_empty() { msg } else { format!("{msg}: {reason}") };
    match &a.target {
        Target::Path(_) => ApiError::forbidden_resource("", "", "", &why),
        Target::Resource(r) => ApiError::forbidden_resource(&r.group, &r.resource, &r.name, &why),
    }
}

#[cfg(test)]
mod tests {
    use super::attributes::ResourceTarget;
    use super::*;
    use crate::User;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        let t = ResourceTarget {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        Attributes::resource(&User::new("alice", &[]), verb, t)
    }

    #[test]
    fn refusals_read_as_upstream_writes_them() {
        let e = forbidden(&attrs("list", "", "pods", "", "default", ""), "");
        assert_eq!(e.code, 403);
        assert_eq!(e.message, r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#);
        let e = forbidden(&attrs("get", "", "pods", "", "default", "p"), "");
        assert_eq!(e.message, r#"pods "p" is forbidden: User "alice" cannot get resource "pods" in API group "" in the namespace "default""#);
        assert_eq!(e.details, Some(serde_json::json!({"name": "p", "kind": "pods"})));
        let e = forbidden(&attrs("create", "", "pods", "exec", "ns", "p"), "");
        assert_eq!(e.message, r#"pods "p" is forbidden: User "alice" cannot create resource "pods/exec" in API group "" in the namespace "ns""#);
        let e = forbidden(&attrs("list", "apps", "deployments", "", "", ""), "RBAC: clusterrole.rbac.authorization.k8s.io \"x\" not found");
        assert_eq!(
            e.message,
            r#"deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "x" not found"#
        );
        let path = Attributes { user: User::new("alice", &[]), verb: "get".into(), target: Target::Path("/metrics".into()) };
        assert_eq!(forbidden(&path, "").message, r#"forbidden: User "alice" cannot get path "/metrics""#);
    }
}
