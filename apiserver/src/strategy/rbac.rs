//! RBAC (rbac.authorization.k8s.io/v1): Roles, ClusterRoles, RoleBindings, ClusterRoleBindings.
//! Rules need verbs and (for resources) API groups; namespaced rules may not name non-resource
//! URLs; a binding's roleRef names a Role or ClusterRole of the RBAC group and never changes;
//! subjects are ServiceAccounts (group "") or Users and Groups (group defaulted to RBAC's).
//! Columns: CREATED AT for roles, ROLE and the wide USERS/GROUPS/SERVICEACCOUNTS for bindings.

use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{json, Value};

use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn created_at_columns() -> Vec<Column> {
    vec![NAME_COLUMN, col("Created At", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.")]
}

fn created_at_cells(m: &ObjectMeta) -> Vec<Value> {
    let at = m.creation_timestamp.as_ref().map(|Time(t)| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    vec![json!(m.name.clone().unwrap_or_default()), json!(at)]
}

fn validate_rules(rules: Option<&Vec<PolicyRule>>, namespaced: bool) -> Vec<FieldError> {
    let mut errs = vec![];
    for (i, r) in rules.into_iter().flatten().enumerate() {
        let p = format!("rules[{i}]");
        if r.verbs.is_empty() {
            errs.push(FieldError::required(format!("{p}.verbs"), "verbs must contain at least one value"));
        }
        let urls = r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty());
        if urls && namespaced {
            errs.push(FieldError::invalid(format!("{p}.nonResourceURLs"), json!(r.non_resource_urls), "namespaced rules cannot apply to non-resource URLs"));
        }
        let resources = r.resources.as_ref().is_some_and(|u| !u.is_empty());
        if urls && resources {
            errs.push(FieldError::invalid(
                format!("{p}.nonResourceURLs"),
                json!(r.non_resource_urls),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        if !urls && r.api_groups.as_ref().is_none_or(|g| g.is_empty()) {
            errs.push(FieldError::required(format!("{p}.apiGroups"), "resource rules must supply at least one api group"));
        }
        if !urls && !resources {
            errs.push(FieldError::required(format!("{p}.resources"), "resource rules must supply at least one resource"));
        }
    }
    errs
}

fn default_subjects(subjects: Option<&mut Vec<Subject>>) {
    for s in subjects.into_iter().flatten() {
        if s.api_group.is_none() {
            s.api_group = Some(if s.kind == "ServiceAccount" { String::new() } else { RBAC_GROUP.into() });
        }
    }
}

fn validate_binding(role_ref: &RoleRef, subjects: Option<&Vec<Subject>>, namespaced: bool) -> Vec<FieldError> {
    let mut errs = vec![];
    let kinds: &[&'static str] = if namespaced { &["ClusterRole", "Role"] } else { &["ClusterRole"] };
    if !kinds.contains(&role_ref.kind.as_str()) {
        errs.push(FieldError::not_supported("roleRef.kind", role_ref.kind.as_str(), kinds));
    }
    if role_ref.api_group != RBAC_GROUP {
        errs.push(FieldError::not_supported("roleRef.apiGroup", role_ref.api_group.as_str(), &[RBAC_GROUP]));
    }
    if role_ref.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    }
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let p = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        }
        let group = s.api_group.as_deref().unwrap_or("");
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !group.is_empty() {
                    errs.push(FieldError::not_supported(format!("{p}.apiGroup"), group, &[""]));
                }
                if !namespaced && s.namespace.as_deref().unwrap_or("").is_empty() {
                    errs.push(FieldError::required(format!("{p}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(FieldError::not_supported(format!("{p}.apiGroup"), group, &[RBAC_GROUP]));
                }
            }
            k => errs.push(FieldError::not_supported(format!("{p}.kind"), k, &["ServiceAccount", "User", "Group"])),
        }
    }
    errs
}

fn role_ref_immutable(new: &RoleRef, old: &RoleRef) -> Vec<FieldError> {
    if new != old {
        let shown = format!(
            "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
            berth_names::go_quote(&new.api_group),
            berth_names::go_quote(&new.kind),
            berth_names::go_quote(&new.name)
        );
        vec![FieldError::invalid("roleRef", crate::status::go_raw(shown), "cannot change roleRef")]
    } else {
        vec![]
    }
}

fn binding_columns() -> Vec<Column> {
    vec![
        NAME_COLUMN,
        col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
        AGE_COLUMN,
        wide("Users", "string", "Users in the roleBinding"),
        wide("Groups", "string", "Groups in the roleBinding"),
        wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
    ]
}

fn binding_cells(m: &ObjectMeta, role_ref: &RoleRef, subjects: Option<&Vec<Subject>>, now: Timestamp) -> Vec<Value> {
    let (mut users, mut groups, mut sas) = (vec![], vec![], vec![]);
    for s in subjects.into_iter().flatten() {
        match s.kind.as_str() {
            "User" => users.push(s.name.clone()),
            "Group" => groups.push(s.name.clone()),
            "ServiceAccount" => sas.push(format!("{}/{}", s.namespace.clone().unwrap_or_default(), s.name)),
            _ => {}
        }
    }
    vec![
        json!(m.name.clone().unwrap_or_default()),
        json!(format!("{}/{}", role_ref.kind, role_ref.name)),
        json!(age(m.creation_timestamp.as_ref(), now)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}

pub struct Roles;

impl Kind for Roles {
    type Object = Role;

    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::path_segment_name
    }
    fn validate(&self, r: &Role) -> Vec<FieldError> {
        validate_rules(r.rules.as_ref(), true)
    }
    fn columns(&self) -> Vec<Column> {
        created_at_columns()
    }
    fn cells(&self, r: &Role, _now: Timestamp) -> Vec<Value> {
        created_at_cells(&r.metadata)
    }
}

pub struct ClusterRoles;

impl Kind for ClusterRoles {
    type Object = ClusterRole;

    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::path_segment_name
    }
    fn validate(&self, r: &ClusterRole) -> Vec<FieldError> {
        validate_rules(r.rules.as_ref(), false)
    }
    fn columns(&self) -> Vec<Column> {
        created_at_columns()
    }
    fn cells(&self, r: &ClusterRole, _now: Timestamp) -> Vec<Value> {
        created_at_cells(&r.metadata)
    }
}

pub struct RoleBindings;

impl Kind for RoleBindings {
    type Object = RoleBinding;

    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::path_segment_name
    }
    fn default(&self, b: &mut RoleBinding) {
        default_subjects(b.subjects.as_mut());
    }
    fn validate(&self, b: &RoleBinding) -> Vec<FieldError> {
        validate_binding(&b.role_ref, b.subjects.as_ref(), true)
    }
    fn validate_update(&self, new: &RoleBinding, old: &RoleBinding) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(role_ref_immutable(&new.role_ref, &old.role_ref));
        errs
    }
    fn columns(&self) -> Vec<Column> {
        binding_columns()
    }
    fn cells(&self, b: &RoleBinding, now: Timestamp) -> Vec<Value> {
        binding_cells(&b.metadata, &b.role_ref, b.subjects.as_ref(), now)
    }
}

pub struct ClusterRoleBindings;

impl Kind for ClusterRoleBindings {
    type Object = ClusterRoleBinding;

    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::path_segment_name
    }
    fn default(&self, b: &mut ClusterRoleBinding) {
        default_subjects(b.subjects.as_mut());
    }
    fn validate(&self, b: &ClusterRoleBinding) -> Vec<FieldError> {
        validate_binding(&b.role_ref, b.subjects.as_ref(), false)
    }
    fn validate_update(&self, new: &ClusterRoleBinding, old: &ClusterRoleBinding) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(role_ref_immutable(&new.role_ref, &old.role_ref));
        errs
    }
    fn columns(&self) -> Vec<Column> {
        binding_columns()
    }
    fn cells(&self, b: &ClusterRoleBinding, now: Timestamp) -> Vec<Value> {
        binding_cells(&b.metadata, &b.role_ref, b.subjects.as_ref(), now)
    }
}
