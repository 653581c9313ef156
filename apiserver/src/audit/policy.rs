//! The audit policy (audit.k8s.io/v1 Policy, `--audit-policy-file`): rules tried in order, the
//! first that matches a request gives its level (None, Metadata, Request, RequestResponse) and
//! the stages it leaves out; no match means None. A rule matches when each of its lists that is
//! set holds the request's: users, userGroups, verbs, namespaces, resources (group, resources
//! incl. `res/sub`, `*/sub`, `res/*` and `*`, resourceNames) for resource requests, and
//! nonResourceURLs (a trailing `*` is a prefix) for the others.

use serde::Deserialize;

use crate::authz::attributes::{Attributes, Target};

/// How much of a request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
pub enum Level {
    #[default]
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
    #[serde(default)]
    pub omit_managed_fields: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("not an audit policy: {0}")]
    Parse(String),
    #[error("kind must be Policy and apiVersion audit.k8s.io/v1, got {kind:?} {api_version:?}")]
    Kind { kind: String, api_version: String },
    #[error("rules[{0}]: nonResourceURLs cannot be combined with resources or namespaces")]
    Mixed(usize),
}

/// The stages a request passes.
pub const STAGES: &[&str] = &["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"];

impl Policy {
    /// Parses a policy file (YAML or JSON).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = serde_saphyr::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if p.kind != "Policy" || !matches!(p.api_version.as_str(), "audit.k8s.io/v1" | "audit.k8s.io/v1beta1") {
            return Err(PolicyError::Kind { kind: p.kind, api_version: p.api_version });
        }
        for (i, r) in p.rules.iter().enumerate() {
            if !r.non_resource_urls.is_empty() && (!r.resources.is_empty() || !r.namespaces.is_empty()) {
                return Err(PolicyError::Mixed(i));
            }
        }
        Ok(p)
    }

    /// The level and the omitted stages for a request.
    pub fn decide(&self, a: &Attributes) -> (Level, Vec<String>) {
        for r in &self.rules {
            if r.matches(a) {
                let mut omit = self.omit_stages.clone();
                omit.extend(r.omit_stages.iter().cloned());
                return (r.level, omit);
            }
        }
        (Level::None, vec![])
    }
}

fn listed(list: &[String], x: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == x)
}

impl Rule {
    fn matches(&self, a: &Attributes) -> bool {
        if !listed(&self.users, &a.user.name) || !listed(&self.verbs, &a.verb) {
            return false;
        }
        if !self.user_groups.is_empty() && !a.user.groups.iter().any(|g| self.user_groups.contains(g)) {
            return false;
        }
        match &a.target {
            Target::Path(p) => {
                if !self.resources.is_empty() || !self.namespaces.is_empty() {
                    return false;
                }
                self.non_resource_urls.is_empty()
                    || self.non_resource_urls.iter().any(|u| u == p || (u.ends_with('*') && p.starts_with(u.trim_end_matches('*'))))
            }
            Target::Resource(r) => {
                if !self.non_resource_urls.is_empty() || !listed(&self.namespaces, &r.namespace) {
                    return false;
                }
                let combined = r.combined();
                self.resources.is_empty()
                    || self.resources.iter().any(|g| {
                        g.group == r.group
                            && (g.resources.is_empty()
                                || g.resources.iter().any(|x| {
                                    x == "*"
                                        || *x == combined
                                        || (!r.subresource.is_empty() && (*x == format!("*/{}", r.subresource) || *x == format!("{}/*", r.resource)))
                                }))
                            && (g.resource_names.is_empty() || g.resource_names.contains(&r.name))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::attributes::ResourceTarget;
    use crate::User;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-scheduler"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["configmaps"]
  - level: Request
    verbs: ["create"]
    namespaces: ["audited"]
  - level: Metadata
    nonResourceURLs: ["/version", "/apis*"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["pods/log"]
"#;

    fn res(user: &str, verb: &str, resource: &str, sub: &str, ns: &str) -> Attributes {
        let t = ResourceTarget { resource: resource.into(), subresource: sub.into(), namespace: ns.into(), ..Default::default() };
        Attributes::resource(&User::new(user, &["system:authenticated"]), verb, t)
    }

    #[test]
    fn the_first_matching_rule_gives_the_level() {
        let p = Policy::parse(POLICY).expect("policy");
        assert_eq!(p.decide(&res("system:kube-scheduler", "get", "configmaps", "", "a")).0, Level::None);
        let (level, omit) = p.decide(&res("alice", "get", "configmaps", "", "a"));
        assert_eq!((level, omit), (Level::RequestResponse, vec!["RequestReceived".to_string()]));
        assert_eq!(p.decide(&res("alice", "create", "secrets", "", "audited")).0, Level::Request);
        assert_eq!(p.decide(&res("alice", "create", "secrets", "", "other")).0, Level::None);
        assert_eq!(p.decide(&res("alice", "get", "pods", "log", "x")).0, Level::Metadata);
        assert_eq!(p.decide(&res("alice", "get", "pods", "", "x")).0, Level::None);
        let path = |p: &str| Attributes { user: User::new("alice", &[]), verb: "get".into(), target: Target::Path(p.into()) };
        assert_eq!(p.decide(&path("/version")).0, Level::Metadata);
        assert_eq!(p.decide(&path("/apis/apps/v1")).0, Level::Metadata);
        assert_eq!(p.decide(&path("/healthz")).0, Level::None);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(matches!(Policy::parse("kind: Other\napiVersion: v1\n"), Err(PolicyError::Kind { .. })));
        assert!(matches!(Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Bogus}]\n"), Err(PolicyError::Parse(_))));
        let mixed = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata, nonResourceURLs: [/x], namespaces: [a]}]\n";
        assert!(matches!(Policy::parse(mixed), Err(PolicyError::Mixed(0))));
    }
}
