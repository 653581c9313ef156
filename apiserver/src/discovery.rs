//! Discovery, from the resource table: /version, /api, /apis, /apis/GROUP, the resource lists
//! of each group version (with subresources as `pods/status` entries), and aggregated discovery
//! (apidiscovery.k8s.io v2 and v2beta1) that kubectl 1.30+ asks for first.

use serde_json::{json, Value};

use crate::resources::{Registry, Resource};

/// The Kubernetes version Berth's API corresponds to.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0-berth";

/// The verbs of a subresource.
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

/// The verbs of a subresource (namespaces/finalize is update only, as upstream's).
fn sub_verbs(sub: &str) -> &'static [&'static str] {
    if sub == "finalize" {
        &["update"]
    } else {
        SUB_VERBS
    }
}

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { std::env::consts::ARCH }),
    })
}

/// /api
pub fn api_versions(advertise: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": advertise}]})
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(json!({}))})
}

/// /apis
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg.groups().into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, vs)| group_json(g, &vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// /apis/GROUP
pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    reg.groups().into_iter().find(|(g, _)| *g == group && !g.is_empty()).map(|(g, vs)| {
        let mut v = group_json(g, &vs);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        v
    })
}

/// /api/v1 and /apis/GROUP/VERSION
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = vec![];
    for r in reg.of(group, version) {
        let mut main = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs});
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        resources.push(main);
        let first_sub = resources.len();
        for sub in r.subresources() {
            let mut s = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": sub_verbs(sub)});
            if sub == "scale" {
                s["group"] = json!("autoscaling");
                s["version"] = json!("v1");
                s["kind"] = json!("Scale");
            }
            resources.push(s);
        }
        for a in r.actions {
            let mut s =
                json!({"name": format!("{}/{}", r.plural, a.name), "singularName": "", "namespaced": r.namespaced, "kind": a.kind, "verbs": ["create"]});
            if a.group != r.group || a.version != r.version {
                s["group"] = json!(a.group);
                s["version"] = json!(a.version);
            }
            resources.push(s);
        }
        resources[first_sub..].sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    let subs: Vec<Value> = r
        .subresources()
        .into_iter()
        .map(|sub| {
            let kind = if sub == "scale" {
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            } else {
                json!({"group": r.group, "version": r.version, "kind": r.kind})
            };
            json!({"subresource": sub, "responseKind": kind, "verbs": sub_verbs(sub)})
        })
        .collect();
    if !subs.is_empty() {
        v["subresources"] = json!(subs);
    }
    v
}

/// Aggregated discovery of the core group (`legacy`: /api) or of every other group (/apis).
pub fn aggregated(reg: &Registry, legacy: bool, version: &str) -> Value {
    let items: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == legacy)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"version": v, "resources": reg.of(g, v).map(|r| aggregated_resource(r)).collect::<Vec<_>>(), "freshness": "Current"}))
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}
