//! The API's discovery as the namespace controller and the garbage collector read it (client-go's
//! ServerPreferredResources): the preferred version of every group, each group asked on its own
//! so one failing group does not hide the others. Failures are kept in upstream's words
//! (ErrGroupDiscoveryFailed: "unable to retrieve the complete list of server APIs: g/v: err").
//! Only reads; what to do with the resources is the caller's.

use std::collections::BTreeMap;

use kube::core::GroupVersion;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

/// One resource the API serves at its group's preferred version.
#[derive(Debug, Clone)]
pub struct Served {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl Served {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// What discovery found, and what it could not read.
#[derive(Debug, Default)]
pub struct Discovered {
    pub resources: Vec<Served>,
    /// group/version → the error reading it.
    pub failed: BTreeMap<String, String>,
    /// group versions that do not parse.
    pub unparsable: Vec<String>,
}

impl Discovered {
    /// The discovery failure as upstream's ErrGroupDiscoveryFailed prints it.
    pub fn failure(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let groups: Vec<String> = self.failed.iter().map(|(gv, e)| format!("{gv}: {e}")).collect();
        Some(format!("unable to retrieve the complete list of server APIs: {}", groups.join(", ")))
    }

    /// The failure of parsing group versions, as upstream's GroupVersionResources reports it.
    pub fn parsing_failure(&self) -> Option<String> {
        if self.unparsable.is_empty() {
            return None;
        }
        Some(self.unparsable.iter().map(|gv| format!("unexpected GroupVersion string: {gv}")).collect::<Vec<_>>().join(", "))
    }
}

/// Reads the preferred version of every group.
pub async fn preferred(client: &kube::Client) -> Result<Discovered, kube::Error> {
    let mut out = Discovered::default();
    let mut versions = vec![];
    for v in client.list_core_api_versions().await?.versions {
        versions.push(v);
    }
    for g in client.list_api_groups().await?.groups {
        match g.preferred_version.or_else(|| g.versions.first().cloned()) {
            Some(v) => versions.push(v.group_version),
            None => continue,
        }
    }
    for gv in versions {
        let parsed: GroupVersion = match gv.parse() {
            Ok(p) => p,
            Err(_) => {
                out.unparsable.push(gv);
                continue;
            }
        };
        match kube::discovery::pinned_group(client, &parsed).await {
            Ok(group) => {
                for (resource, caps) in group.recommended_resources() {
                    out.resources.push(served(resource, &caps));
                }
            }
            Err(e) => {
                out.failed.insert(gv, e.to_string());
            }
        }
    }
    Ok(out)
}

fn served(resource: ApiResource, caps: &ApiCapabilities) -> Served {
    Served { resource, namespaced: caps.scope == Scope::Namespaced, verbs: caps.operations.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_upstream_prints_them() {
        let mut d = Discovered::default();
        assert_eq!(d.failure(), None);
        d.failed.insert("metrics.k8s.io/v1beta1".into(), "the server is currently unable to handle the request".into());
        assert_eq!(
            d.failure().as_deref(),
            Some("unable to retrieve the complete list of server APIs: metrics.k8s.io/v1beta1: the server is currently unable to handle the request")
        );
    }
}
