//! RBAC's escalation prevention, run on every create and update of a Role, ClusterRole,
//! RoleBinding or ClusterRoleBinding (upstream does it in the storage of those kinds; here it is
//! a step of the admission chain, so dry runs are judged the same way):
//! - a role may grant only what its writer holds (in the role's namespace, or cluster-wide for a
//!   ClusterRole), unless the writer may `escalate` roles; setting an aggregationRule needs full
//!   authority;
//! - a binding may refer only to a role whose rules its writer holds, unless the writer may
//!   `bind` that role.
//!
//! Members of `system:masters` and the API's own writes (no user) are not checked. A refusal is
//! 403 with upstream's text: `user "alice" (groups=["system:authenticated"]) is attempting to
//! grant RBAC permissions not currently held:` and the missing rules, compacted, one per line.

use futures_util::future::BoxFuture;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;

use super::attributes::{Attributes as Request, ResourceTarget};
use super::rbac::{Policy, GROUP};
use super::rule::{compact, uncovered, Rule};
use crate::admission::{Attributes, Operation, Plugin};
use crate::api::Api;
use crate::status::ApiError;
use crate::User;

pub struct Escalation;

impl Plugin for Escalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    fn validate<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !matches!(a.operation, Operation::Create | Operation::Update) || a.resource.group != GROUP || !a.subresource.is_empty() {
                return Ok(());
            }
            let (Some(user), Some(obj)) = (a.user.clone(), a.object.clone()) else { return Ok(()) };
            if user.groups.iter().any(|g| g == super::PRIVILEGED_GROUP) {
                return Ok(());
            }
            let namespace = a.namespace().to_string();
            match a.resource.plural {
                "roles" | "clusterroles" => check_role(api, a, &user, &namespace, obj).await,
                "rolebindings" | "clusterrolebindings" => check_binding(api, a, &user, &namespace, obj).await,
                _ => Ok(()),
            }
        })
    }
}

fn target(resource: &str, namespace: &str, name: &str) -> ResourceTarget {
    ResourceTarget { group: GROUP.into(), resource: resource.into(), namespace: namespace.into(), name: name.into(), ..Default::default() }
}

async fn check_role(api: &Api, a: &Attributes, user: &User, namespace: &str, obj: Value) -> Result<(), ApiError> {
    let (rules, aggregated) = if a.resource.plural == "roles" {
        (serde_json::from_value::<Role>(obj).map_err(|e| ApiError::bad_request(e.to_string()))?.rules, false)
    } else {
        let r = serde_json::from_value::<ClusterRole>(obj).map_err(|e| ApiError::bad_request(e.to_string()))?;
        (r.rules, r.aggregation_rule.is_some())
    };
    let escalate = Request::resource(user, "escalate", target(a.resource.plural, namespace, &a.name));
    if super::authorize(api, &escalate).await.allowed() {
        return Ok(());
    }
    let rules: Vec<Rule> = rules.unwrap_or_default().iter().map(Rule::from).collect();
    confirm_held(api, a, user, namespace, &rules, None)?;
    if aggregated {
        let everything = [Rule::new(&["*"], &["*"], &["*"]), Rule { non_resource_urls: vec!["*".into()], ..Rule::new(&["*"], &[], &[]) }];
        confirm_held(api, a, user, namespace, &everything, Some("must have cluster-admin privileges to use the aggregationRule"))?;
    }
    Ok(())
}

async fn check_binding(api: &Api, a: &Attributes, user: &User, namespace: &str, obj: Value) -> Result<(), ApiError> {
    let role_ref = if a.resource.plural == "rolebindings" {
        serde_json::from_value::<RoleBinding>(obj).map_err(|e| ApiError::bad_request(e.to_string()))?.role_ref
    } else {
        serde_json::from_value::<ClusterRoleBinding>(obj).map_err(|e| ApiError::bad_request(e.to_string()))?.role_ref
    };
    let role_resource = if role_ref.kind == "Role" { "roles" } else { "clusterroles" };
    let bind = Request::resource(user, "bind", target(role_resource, namespace, &role_ref.name));
    if super::authorize(api, &bind).await.allowed() {
        return Ok(());
    }
    let rules = Policy::new(api).rules_of(&role_ref.kind, namespace, &role_ref.name).map_err(|e| a.forbidden(&e))?;
    confirm_held(api, a, user, namespace, &rules, None)
}

/// Ok when `user` holds every rule of `wanted` in `namespace`; else the 403 upstream gives
/// (with `instead` as the reason when given).
fn confirm_held(api: &Api, a: &Attributes, user: &User, namespace: &str, wanted: &[Rule], instead: Option<&str>) -> Result<(), ApiError> {
    let (held, errors) = Policy::new(api).rules_for(user, namespace);
    let missing = uncovered(&held, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    if let Some(why) = instead {
        return Err(a.forbidden(why));
    }
    let mut lines: Vec<String> = compact(missing).iter().map(Rule::compact_string).collect();
    lines.sort();
    lines.dedup();
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        berth_names::go_quote(&user.name),
        berth_names::go_quote_list(&user.groups),
        lines.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(a.forbidden(&msg))
}
