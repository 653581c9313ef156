//! One RBAC rule (a PolicyRule) and the three questions asked of rules: does a rule allow a
//! request (upstream's RuleAllows: verbs and groups with `*`, resources with `*`, `res/sub` and
//! `*/sub`, resourceNames, nonResourceURLs with a trailing `*`), do some rules cover another
//! rule (the escalation check: every verb, group, resource and name the rule grants must be
//! allowed by one of the owner's rules), and how a rule is shown (upstream's compact form,
//! `{APIGroups:["apps"], Resources:["deployments"], Verbs:["delete"]}`).

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{json, Value};

use super::attributes::{Attributes, Target};

/// A PolicyRule with its lists unwrapped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl From<&PolicyRule> for Rule {
    fn from(r: &PolicyRule) -> Self {
        Rule {
            verbs: r.verbs.clone(),
            api_groups: r.api_groups.clone().unwrap_or_default(),
            resources: r.resources.clone().unwrap_or_default(),
            resource_names: r.resource_names.clone().unwrap_or_default(),
            non_resource_urls: r.non_resource_urls.clone().unwrap_or_default(),
        }
    }
}

fn has(list: &[String], x: &str) -> bool {
    list.iter().any(|v| v == "*" || v == x)
}

impl Rule {
    pub fn new(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Rule { verbs: own(verbs), api_groups: own(groups), resources: own(resources), ..Default::default() }
    }

    /// Whether the rule allows the request (upstream's RuleAllows).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        match &a.target {
            Target::Resource(r) => {
                has(&self.api_groups, &r.group)
                    && self.resource_matches(&r.combined(), &r.subresource)
                    && (self.resource_names.is_empty() || self.resource_names.contains(&r.name))
            }
            Target::Path(p) => self.url_matches(p),
        }
    }

    fn resource_matches(&self, combined: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*" || r == combined || (!subresource.is_empty() && r.len() == subresource.len() + 2 && r.starts_with("*/") && r.ends_with(subresource))
        })
    }

    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*'))))
    }

    /// The rule split into rules of one verb on one group and resource (and one name when it
    /// names objects), or one verb on one URL (upstream's BreakdownRule).
    pub fn breakdown(&self) -> Vec<Rule> {
        let mut out = vec![];
        let one = |v: &String| vec![v.clone()];
        for g in &self.api_groups {
            for r in &self.resources {
                for v in &self.verbs {
                    if self.resource_names.is_empty() {
                        out.push(Rule { verbs: one(v), api_groups: one(g), resources: one(r), ..Default::default() });
                    } else {
                        for n in &self.resource_names {
                            out.push(Rule { verbs: one(v), api_groups: one(g), resources: one(r), resource_names: one(n), ..Default::default() });
                        }
                    }
                }
            }
        }
        for u in &self.non_resource_urls {
            for v in &self.verbs {
                out.push(Rule { verbs: one(v), non_resource_urls: one(u), ..Default::default() });
            }
        }
        out
    }

    /// Whether this rule alone grants everything `sub` (one broken-down rule) grants.
    fn covers(&self, sub: &Rule) -> bool {
        let all = |owner: &[String], wanted: &[String]| owner.iter().any(|o| o == "*") || wanted.iter().all(|w| owner.contains(w));
        let resources = self.resources.iter().any(|o| o == "*")
            || sub.resources.iter().all(|w| {
                self.resources.iter().any(|o| {
                    // `res/*` covers every subresource of res (upstream's resourceCoversAll)
                    o == w || (o.ends_with("/*") && w.split_once('/').is_some_and(|(res, _)| o.strip_suffix("/*") == Some(res)))
                })
            });
        let urls = sub.non_resource_urls.iter().all(|w| self.url_matches(w));
        let names = self.resource_names.is_empty() || sub.resource_names.iter().all(|n| self.resource_names.contains(n)) && !sub.resource_names.is_empty();
        all(&self.verbs, &sub.verbs)
            && all(&self.api_groups, &sub.api_groups)
            && resources
            && urls
            && (sub.non_resource_urls.is_empty() || !self.non_resource_urls.is_empty())
            && (sub.resources.is_empty() || !self.resources.is_empty())
            && names
    }

    /// upstream's CompactString: the non-empty lists, Go-quoted.
    pub fn compact_string(&self) -> String {
        let mut parts = vec![];
        for (name, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{name}:{}", berth_names::go_quote_list(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }

    /// The rule as the API shows it (a PolicyRule, empty lists left out).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"verbs": self.verbs});
        for (k, l) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !l.is_empty() {
                v[k] = json!(l);
            }
        }
        v
    }
}

/// The parts of `wanted` that `owner` does not cover, broken down (upstream's Covers).
pub fn uncovered(owner: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    wanted.iter().flat_map(Rule::breakdown).filter(|sub| !owner.iter().any(|o| o.covers(sub))).collect()
}

/// Simple rules (one group, one resource, no names) on the same group and resource merged into
/// one with all their verbs, in first-seen order (upstream's CompactRules).
pub fn compact(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = vec![];
    for r in rules {
        let simple = r.api_groups.len() == 1 && r.resources.len() == 1 && r.resource_names.is_empty() && r.non_resource_urls.is_empty();
        if simple {
            if let Some(prev) = out
                .iter_mut()
                .find(|p| p.api_groups == r.api_groups && p.resources == r.resources && p.resource_names.is_empty() && p.non_resource_urls.is_empty())
            {
                for v in r.verbs {
                    if !prev.verbs.contains(&v) {
                        prev.verbs.push(v);
                    }
                }
                continue;
            }
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::attributes::ResourceTarget;
    use crate::User;

    fn req(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes::resource(
            &User::new("u", &[]),
            verb,
            ResourceTarget { group: group.into(), resource: resource.into(), subresource: sub.into(), name: name.into(), ..Default::default() },
        )
    }

    fn path(verb: &str, p: &str) -> Attributes {
        Attributes { user: User::new("u", &[]), verb: verb.into(), target: Target::Path(p.into()) }
    }

    #[test]
    fn verbs_groups_and_resources_match_with_wildcards() {
        let r = Rule::new(&["get", "list"], &[""], &["pods"]);
        assert!(r.allows(&req("get", "", "pods", "", "p")));
        assert!(!r.allows(&req("delete", "", "pods", "", "p")));
        assert!(!r.allows(&req("get", "apps", "pods", "", "p")));
        assert!(!r.allows(&req("get", "", "pods", "log", "p")), "a subresource needs its own rule");
        assert!(Rule::new(&["*"], &["*"], &["*"]).allows(&req("escalate", "rbac.authorization.k8s.io", "roles", "", "")));
        assert!(Rule::new(&["get"], &[""], &["pods/log"]).allows(&req("get", "", "pods", "log", "p")));
        assert!(Rule::new(&["get"], &[""], &["*/log"]).allows(&req("get", "", "pods", "log", "p")));
        assert!(!Rule::new(&["get"], &[""], &["pods/*"]).allows(&req("get", "", "pods", "log", "p")), "upstream matches only */sub");
    }

    #[test]
    fn resource_names_limit_the_objects() {
        let r = Rule { resource_names: vec!["a".into()], ..Rule::new(&["get"], &[""], &["secrets"]) };
        assert!(r.allows(&req("get", "", "secrets", "", "a")));
        assert!(!r.allows(&req("get", "", "secrets", "", "b")));
        assert!(!r.allows(&req("list", "", "secrets", "", "")), "a list names no object");
    }

    #[test]
    fn urls_match_exactly_or_by_prefix_star() {
        let r = Rule { verbs: vec!["get".into()], non_resource_urls: vec!["/healthz".into(), "/apis/*".into()], ..Default::default() };
        assert!(r.allows(&path("get", "/healthz")));
        assert!(r.allows(&path("get", "/apis/apps/v1")));
        assert!(!r.allows(&path("get", "/healthz/etcd")));
        assert!(!r.allows(&path("post", "/healthz")));
        assert!(!r.allows(&req("get", "", "pods", "", "")), "a URL rule allows no resource");
    }

    #[test]
    fn coverage_breaks_rules_down_and_compacts_what_is_missing() {
        let owner = vec![Rule::new(&["get", "list", "watch"], &[""], &["pods", "services"]), Rule::new(&["*"], &["apps"], &["deployments"])];
        assert!(uncovered(&owner, &[Rule::new(&["get"], &[""], &["pods"])]).is_empty());
        assert!(uncovered(&owner, &[Rule::new(&["delete", "create"], &["apps"], &["deployments"])]).is_empty());
        let missing = compact(uncovered(&owner, &[Rule::new(&["get", "delete", "create"], &[""], &["pods", "secrets"])]));
        let shown: Vec<String> = missing.iter().map(Rule::compact_string).collect();
        assert_eq!(
            shown,
            vec![
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete" "create"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete" "create"]}"#
            ]
        );
        let named = Rule { resource_names: vec!["x".into()], ..Rule::new(&["get"], &[""], &["configmaps"]) };
        assert!(uncovered(std::slice::from_ref(&named), std::slice::from_ref(&named)).is_empty());
        assert_eq!(uncovered(&[named], &[Rule::new(&["get"], &[""], &["configmaps"])]).len(), 1, "a named rule does not cover all objects");
        let url = Rule { verbs: vec!["get".into()], non_resource_urls: vec!["/metrics".into()], ..Default::default() };
        assert_eq!(uncovered(&owner, std::slice::from_ref(&url))[0].compact_string(), r#"{NonResourceURLs:["/metrics"], Verbs:["get"]}"#);
        let star = Rule { verbs: vec!["*".into()], non_resource_urls: vec!["*".into()], ..Rule::new(&["*"], &["*"], &["*"]) };
        assert!(uncovered(&[star], &[url]).is_empty());
    }
}
