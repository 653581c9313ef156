//! What a request asks to do, in the terms authorizers judge (upstream's authorizer.Attributes
//! over its RequestInfo): a verb on a resource (group, resource, subresource, namespace, name)
//! or on a non-resource path. [`Attributes::of_request`] reads them from a request's method,
//! path and query the way upstream's request-info parser does, before anything else looks at
//! the request, so an unknown resource is refused as forbidden to a user who may not see it
//! and reported as missing only to one who may.

use crate::selector::FieldSelector;
use crate::User;

/// One request as authorization sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: User,
    /// get, list, watch, create, update, patch, delete, deletecollection; impersonate, bind,
    /// escalate, ... for checks made by the API itself; a lower-case HTTP method for paths.
    pub verb: String,
    pub target: Target,
}

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Resource(ResourceTarget),
    /// A non-resource path (`/version`, `/healthz`, `/api`, ...).
    Path(String),
}

/// A resource (or one of its objects or subresources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceTarget {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// "" at the cluster scope.
    pub namespace: String,
    /// "" for a collection (a list or watch with a `metadata.name=` field selector names it).
    pub name: String,
    /// The field selector of a list or watch ("" when none).
    pub field_selector: String,
}

impl ResourceTarget {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn combined(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The value a list's or watch's field selector requires `field` to have exactly.
    pub fn required_field(&self, field: &str) -> Option<String> {
        let sel = FieldSelector::parse(&self.field_selector).ok()?;
        sel.requirements.iter().find(|r| r.equal && r.field == field).map(|r| r.value.clone())
    }
}

impl Attributes {
    /// A check of `verb` on a resource.
    pub fn resource(user: &User, verb: &str, target: ResourceTarget) -> Self {
        Attributes { user: user.clone(), verb: verb.into(), target: Target::Resource(target) }
    }

    /// The resource target, when this is a resource request.
    pub fn resource_target(&self) -> Option<&ResourceTarget> {
        match &self.target {
            Target::Resource(r) => Some(r),
            Target::Path(_) => None,
        }
    }

    /// The attributes of a request by `user`: its method, path (no trailing slash) and query.
    pub fn of_request(user: &User, method: &str, path: &str, query: &std::collections::HashMap<String, String>) -> Self {
        let path_verb = || method.to_ascii_lowercase();
        let non_resource =
            || Attributes { user: user.clone(), verb: path_verb(), target: Target::Path(if path.is_empty() { "/".into() } else { path.into() }) };
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, mut rest) = match segs.as_slice() {
            ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
            ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
            _ => return non_resource(),
        };
        let mut verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => return non_resource(),
        }
        .to_string();
        let mut t = ResourceTarget { group: group.into(), version: version.into(), ..Default::default() };
        // the deprecated /watch/ paths
        if rest.first() == Some(&"watch") {
            verb = "watch".into();
            rest = &rest[1..];
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            t.namespace = rest[1].to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        let Some(resource) = rest.first() else { return non_resource() };
        t.resource = resource.to_string();
        t.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        t.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        if t.name.is_empty() {
            match verb.as_str() {
                "get" => verb = if flag(query, "watch") { "watch" } else { "list" }.into(),
                "delete" => verb = "deletecollection".into(),
                _ => {}
            }
        }
        if verb == "list" || verb == "watch" {
            t.field_selector = query.get("fieldSelector").cloned().unwrap_or_default();
            if let Some(name) = t.required_field("metadata.name") {
                t.name = name;
            }
        }
        Attributes { user: user.clone(), verb, target: Target::Resource(t) }
    }
}

fn flag(query: &std::collections::HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true" || v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn attrs(method: &str, path: &str, query: &[(&str, &str)]) -> Attributes {
        let q: HashMap<String, String> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Attributes::of_request(&User::new("u", &[]), method, path, &q)
    }

    fn res(a: &Attributes) -> (&str, &str, &str, &str, &str, &str) {
        let r = a.resource_target().expect("a resource request");
        (a.verb.as_str(), r.group.as_str(), r.resource.as_str(), r.subresource.as_str(), r.namespace.as_str(), r.name.as_str())
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        assert_eq!(res(&attrs("GET", "/api/v1/namespaces/default/pods", &[])), ("list", "", "pods", "", "default", ""));
        assert_eq!(res(&attrs("GET", "/api/v1/namespaces/default/pods", &[("watch", "true")])), ("watch", "", "pods", "", "default", ""));
        assert_eq!(res(&attrs("GET", "/api/v1/namespaces/default/pods/p", &[])), ("get", "", "pods", "", "default", "p"));
        assert_eq!(res(&attrs("POST", "/apis/apps/v1/namespaces/ns/deployments", &[])), ("create", "apps", "deployments", "", "ns", ""));
        assert_eq!(res(&attrs("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", &[])), ("update", "apps", "deployments", "scale", "ns", "d"));
        assert_eq!(res(&attrs("PATCH", "/api/v1/nodes/n/status", &[])), ("patch", "", "nodes", "status", "", "n"));
        assert_eq!(res(&attrs("DELETE", "/api/v1/namespaces/a/pods", &[])), ("deletecollection", "", "pods", "", "a", ""));
        assert_eq!(res(&attrs("DELETE", "/api/v1/namespaces/a/pods/p", &[])), ("delete", "", "pods", "", "a", "p"));
        assert_eq!(res(&attrs("GET", "/api/v1/pods", &[])), ("list", "", "pods", "", "", ""));
        assert_eq!(res(&attrs("GET", "/api/v1/watch/namespaces/a/pods", &[])), ("watch", "", "pods", "", "a", ""));
        assert_eq!(res(&attrs("POST", "/api/v1/namespaces/a/pods/p/exec", &[])), ("create", "", "pods", "exec", "a", "p"));
        assert_eq!(res(&attrs("GET", "/api/v1/namespaces/a/pods/p/log", &[])), ("get", "", "pods", "log", "a", "p"));
    }

    #[test]
    fn namespaces_are_their_own_namespace() {
        assert_eq!(res(&attrs("GET", "/api/v1/namespaces/foo", &[])), ("get", "", "namespaces", "", "foo", "foo"));
        assert_eq!(res(&attrs("PUT", "/api/v1/namespaces/foo/finalize", &[])), ("update", "", "namespaces", "finalize", "foo", "foo"));
        assert_eq!(res(&attrs("GET", "/api/v1/namespaces", &[])), ("list", "", "namespaces", "", "", ""));
    }

    #[test]
    fn a_name_field_selector_names_the_object() {
        let a = attrs("GET", "/api/v1/namespaces/a/secrets", &[("watch", "1"), ("fieldSelector", "metadata.name=s1")]);
        assert_eq!(res(&a), ("watch", "", "secrets", "", "a", "s1"));
        let a = attrs("GET", "/api/v1/pods", &[("fieldSelector", "spec.nodeName=n1")]);
        assert_eq!(a.resource_target().and_then(|r| r.required_field("spec.nodeName")), Some("n1".into()));
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource() {
        for p in ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/healthz", "/openapi/v2", "/foo"] {
            let a = attrs("GET", p, &[]);
            assert_eq!(a.target, Target::Path(p.into()), "{p}");
            assert_eq!(a.verb, "get");
        }
        assert_eq!(attrs("POST", "", &[]).target, Target::Path("/".into()));
    }
}
