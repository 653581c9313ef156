//! The RBAC authorizer and rule resolver. Everything is read from the watch caches of the four
//! RBAC kinds (upstream's informers), each object compiled once per revision
//! ([`crate::cache::CachedObject::typed`]). For a request it walks, as upstream does, the
//! ClusterRoleBindings and then the RoleBindings of the request's namespace, and for each binding
//! whose subjects include the user, the rules of the role it refers to; the first rule that
//! allows the request decides. A binding to a role that does not exist is an error carried into
//! the reason of a refusal (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use serde_json::Value;

use super::attributes::Attributes;
use super::rule::Rule;
use crate::api::Api;
use crate::User;

pub const GROUP: &str = "rbac.authorization.k8s.io";

/// A Role's or ClusterRole's rules, compiled.
#[derive(Debug)]
pub struct Rules(pub Vec<Rule>);

/// A RoleBinding or ClusterRoleBinding, compiled.
#[derive(Debug)]
pub struct Binding {
    pub name: String,
    pub namespace: String,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    pub role_name: String,
    pub subjects: Vec<Subject>,
}

fn compile_role(v: Value) -> Option<Rules> {
    // Role and ClusterRole share the rule list's shape; a ClusterRole's aggregationRule is the
    // aggregation controller's business (it writes the rules)
    let rules = match v.get("kind").and_then(Value::as_str) {
        Some("Role") => serde_json::from_value::<Role>(v).ok()?.rules,
        _ => serde_json::from_value::<ClusterRole>(v).ok()?.rules,
    };
    Some(Rules(rules.unwrap_or_default().iter().map(Rule::from).collect()))
}

fn compile_binding(v: Value) -> Option<Binding> {
    let namespaced = v.pointer("/metadata/namespace").is_some_and(|n| n.as_str().is_some_and(|s| !s.is_empty()));
    let (meta, role_ref, subjects) = if namespaced {
        let b: RoleBinding = serde_json::from_value(v).ok()?;
        (b.metadata, b.role_ref, b.subjects)
    } else {
        let b: ClusterRoleBinding = serde_json::from_value(v).ok()?;
        (b.metadata, b.role_ref, b.subjects)
    };
    Some(Binding {
        name: meta.name.unwrap_or_default(),
        namespace: meta.namespace.unwrap_or_default(),
        role_kind: role_ref.kind,
        role_name: role_ref.name,
        subjects: subjects.unwrap_or_default(),
    })
}

/// Whether `subject` (of a binding in `namespace`, "" for a ClusterRoleBinding) is `user`.
pub fn applies_to(subject: &Subject, user: &User, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        _ => false,
    }
}

/// How a subject is named in reasons (upstream's describeSubject).
fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = s.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(binding_namespace);
            format!("{} {}", s.kind, berth_names::go_quote(&format!("{}/{ns}", s.name)))
        }
        _ => format!("{} {}", s.kind, berth_names::go_quote(&s.name)),
    }
}

/// Where a rule came from (for the reason of an allowed SubjectAccessReview).
fn describe_binding(b: &Binding, s: &Subject) -> String {
    if b.namespace.is_empty() {
        format!(
            "ClusterRoleBinding {} of {} {} to {}",
            berth_names::go_quote(&b.name),
            b.role_kind,
            berth_names::go_quote(&b.role_name),
            describe_subject(s, "")
        )
    } else {
        format!(
            "RoleBinding {} of {} {} to {}",
            berth_names::go_quote(&format!("{}/{}", b.name, b.namespace)),
            b.role_kind,
            berth_names::go_quote(&b.role_name),
            describe_subject(s, &b.namespace)
        )
    }
}

/// What a walk over the rules of a user found.
pub enum Visit {
    /// Go on.
    Continue,
    /// Stop walking.
    Stop,
}

/// The RBAC objects of the API, read through its watch caches.
pub struct Policy<'a> {
    api: &'a Api,
}

impl<'a> Policy<'a> {
    pub fn new(api: &'a Api) -> Self {
        Policy { api }
    }

    fn objects(&self, plural: &str, namespace: Option<&str>) -> Vec<Arc<crate::cache::CachedObject>> {
        let Ok(res) = self.api.resource(GROUP, plural) else { return vec![] };
        let Ok(cache) = self.api.cache(&res) else { return vec![] };
        cache.snapshot(&res.list_prefix(self.api.store_prefix(), namespace)).0
    }

    /// The rules of the role a binding refers to, or the error upstream reports.
    fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Result<Arc<Rules>, String> {
        let (plural, singular, ns) = match kind {
            "Role" => ("roles", "role", Some(namespace)),
            _ => ("clusterroles", "clusterrole", None),
        };
        let missing = || format!("{singular}.{GROUP} {} not found", berth_names::go_quote(name));
        let res = self.api.resource(GROUP, plural).map_err(|e| e.message)?;
        let cache = self.api.cache(&res).map_err(|e| e.message)?;
        let obj = cache.get(&res.key(self.api.store_prefix(), ns, name)).ok_or_else(missing)?;
        obj.typed(compile_role).ok_or_else(|| format!("{singular} {name} cannot be decoded"))
    }

    /// Walks the rules that apply to `user` in `namespace` ("" for the cluster scope only):
    /// those of the ClusterRoleBindings, then those of the namespace's RoleBindings. `visit`
    /// gets each rule with where it came from, or an error; it says whether to go on.
    pub fn visit(&self, user: &User, namespace: &str, mut visit: impl FnMut(Result<(&Rule, &dyn Fn() -> String), String>) -> Visit) {
        let scopes: Vec<(&str, Option<&str>)> =
            if namespace.is_empty() { vec![("clusterrolebindings", None)] } else { vec![("clusterrolebindings", None), ("rolebindings", Some(namespace))] };
        for (plural, ns) in scopes {
            for obj in self.objects(plural, ns) {
                let Some(b) = obj.typed(compile_binding) else { continue };
                let Some(subject) = b.subjects.iter().find(|s| applies_to(s, user, &b.namespace)) else { continue };
                match self.role_rules(&b.role_kind, &b.namespace, &b.role_name) {
                    Ok(rules) => {
                        let source = || describe_binding(&b, subject);
                        for r in &rules.0 {
                            if let Visit::Stop = visit(Ok((r, &source))) {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        if let Visit::Stop = visit(Err(e)) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The RBAC decision for a request: Ok(why) when a rule allows it, else Err(the errors met).
    pub fn authorize(&self, a: &Attributes) -> Result<String, Vec<String>> {
        let namespace = a.resource_target().map(|r| r.namespace.as_str()).unwrap_or("");
        let mut errors = vec![];
        let mut allowed = None;
        self.visit(&a.user, namespace, |found| match found {
            Ok((rule, source)) if rule.allows(a) => {
                allowed = Some(format!("RBAC: allowed by {}", source()));
                Visit::Stop
            }
            Ok(_) => Visit::Continue,
            Err(e) => {
                errors.push(e);
                Visit::Continue
            }
        });
        allowed.ok_or(errors)
    }

    /// Every rule that applies to `user` in `namespace`, and the errors met on the way
    /// (upstream's RulesFor).
    pub fn rules_for(&self, user: &User, namespace: &str) -> (Vec<Rule>, Vec<String>) {
        let (mut rules, mut errors) = (vec![], vec![]);
        self.visit(user, namespace, |found| {
            match found {
                Ok((r, _)) => rules.push(r.clone()),
                Err(e) => errors.push(e),
            }
            Visit::Continue
        });
        (rules, errors)
    }

    /// The rules of a role as stored now (for the escalation check of a binding).
    pub fn rules_of(&self, kind: &str, namespace: &str, name: &str) -> Result<Vec<Rule>, String> {
        self.role_rules(kind, namespace, name).map(|r| r.0.clone())
    }
}

/// upstream's aggregate of errors: one as is, several in brackets.
pub fn aggregate(errors: &[String]) -> String {
    match errors {
        [] => String::new(),
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject { kind: kind.into(), name: name.into(), namespace: ns.map(String::from), api_group: None }
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let alice = User::new("alice", &["dev", "system:authenticated"]);
        assert!(applies_to(&subject("User", "alice", None), &alice, ""));
        assert!(!applies_to(&subject("User", "bob", None), &alice, ""));
        assert!(applies_to(&subject("Group", "dev", None), &alice, ""));
        let sa = User::new("system:serviceaccount:ns1:robot", &["system:serviceaccounts"]);
        assert!(applies_to(&subject("ServiceAccount", "robot", Some("ns1")), &sa, ""));
        assert!(applies_to(&subject("ServiceAccount", "robot", None), &sa, "ns1"), "a RoleBinding's namespace is the default");
        assert!(!applies_to(&subject("ServiceAccount", "robot", None), &sa, ""));
        assert!(!applies_to(&subject("ServiceAccount", "robot", Some("ns2")), &sa, "ns1"));
    }

    #[test]
    fn sources_are_described_as_upstream() {
        let b = Binding { name: "rb".into(), namespace: "ns".into(), role_kind: "ClusterRole".into(), role_name: "view".into(), subjects: vec![] };
        assert_eq!(describe_binding(&b, &subject("User", "alice", None)), r#"RoleBinding "rb/ns" of ClusterRole "view" to User "alice""#);
        assert_eq!(describe_binding(&b, &subject("ServiceAccount", "sa", None)), r#"RoleBinding "rb/ns" of ClusterRole "view" to ServiceAccount "sa/ns""#);
        let c = Binding { namespace: String::new(), name: "cluster-admin".into(), role_name: "cluster-admin".into(), ..b };
        assert_eq!(
            describe_binding(&c, &subject("Group", "system:masters", None)),
            r#"ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters""#
        );
    }

    #[test]
    fn errors_aggregate_as_upstream() {
        assert_eq!(aggregate(&[]), "");
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into()]), "[a, b]");
    }
}
