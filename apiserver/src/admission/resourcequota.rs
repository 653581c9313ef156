//! ResourceQuota: what a namespace's objects may use in total. The plugin (validating, last in the
//! chain) evaluates what a create (and an update of a service or claim) adds, against every quota
//! of the namespace whose `status.hard` names a resource the object uses and whose scopes match it;
//! pods without the cpu/memory requests or limits a quota covers are refused; then the usage is
//! charged to `status.used` of those quotas by compare-and-swap on each quota's revision, retried
//! on conflict, so parallel creates never overshoot `hard`. Dry-run requests are judged, never
//! charged. The controller half (upstream's resourcequota controller) recomputes `status.hard` and
//! `status.used` from the watch caches when a quota is new or its `spec.hard` changed and when
//! objects it counts went away (deleted, or a pod finished), so usage goes down again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use berth_names::quantity::{Format, Quantity};
use berth_store::StoreError;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tracing::Instrument;

use super::limitranger::{pod_total, resource_list};
use super::{cached, Attributes, Operation, Plugin};
use crate::api::Api;
use crate::resources::Resource;
use crate::status::ApiError;

/// Resource name → quantity.
pub type Usage = BTreeMap<String, Quantity>;

/// What one request charged to one quota (its store key).
#[derive(Debug, Clone)]
pub struct Charge {
    key: String,
    usage: Usage,
}

/// The resources a quota on cpu or memory forces every container to state.
const VALIDATION_SET: &[&str] = &["cpu", "limits.cpu", "limits.memory", "memory", "requests.cpu", "requests.memory"];

pub struct ResourceQuota;

impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    fn validate<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !a.subresource.is_empty() || !a.resource.namespaced {
                return Ok(());
            }
            let Some(obj) = a.object.as_ref() else { return Ok(()) };
            let (group, plural) = (a.resource.group, a.resource.plural);
            let delta = match a.operation {
                Operation::Create => usage(group, plural, obj),
                // services change type and claims grow; other updates use nothing new
                Operation::Update if group.is_empty() && matches!(plural, "services" | "persistentvolumeclaims") => {
                    let old = a.old_object.as_ref().map(|o| usage(group, plural, o)).unwrap_or_default();
                    usage(group, plural, obj)
                        .into_iter()
                        .map(|(k, q)| (k.clone(), q - old.get(&k).copied().unwrap_or_default()))
                        .filter(|(_, q)| q.nanos() > 0)
                        .collect()
                }
                _ => return Ok(()),
            };
            let obj = obj.clone();
            let charged = charge(api, a, &obj, &delta).await?;
            a.charged.extend(charged);
            Ok(())
        })
    }
}

/// What `obj` of `group`/`plural` counts for, by quota resource name.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let one = Quantity::from_units(1);
    let count = if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") };
    if !group.is_empty() {
        u.insert(count, one);
        return u;
    }
    match plural {
        "pods" => {
            if !pod_counts(obj) {
                return u;
            }
            u.insert(count, one);
            u.insert("pods".into(), one);
            for (k, (q, _)) in pod_total(obj, "requests") {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    u.insert(k.clone(), q);
                }
                u.insert(format!("requests.{k}"), q);
            }
            for (k, (q, _)) in pod_total(obj, "limits") {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    u.insert(format!("limits.{k}"), q);
                }
            }
        }
        "services" => {
            u.insert(count, one);
            u.insert("services".into(), one);
            let kind = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len) as i64;
            if kind == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one);
            }
            let node_ports =
                kind == "NodePort" || (kind == "LoadBalancer" && obj.pointer("/spec/allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false));
            if node_ports {
                u.insert("services.nodeports".into(), Quantity::from_units(ports));
            }
        }
        "persistentvolumeclaims" => {
            u.insert(count, one);
            u.insert("persistentvolumeclaims".into(), one);
            let storage = resource_list(obj.pointer("/spec/resources/requests")).get("storage").map(|s| s.0);
            let class = obj.pointer("/spec/storageClassName").and_then(Value::as_str).filter(|c| !c.is_empty());
            if let Some(s) = storage {
                u.insert("requests.storage".into(), s);
            }
            if let Some(c) = class {
                u.insert(format!("{c}.storageclass.storage.k8s.io/persistentvolumeclaims"), one);
                if let Some(s) = storage {
                    u.insert(format!("{c}.storageclass.storage.k8s.io/requests.storage"), s);
                }
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            u.insert(count, one);
            u.insert(plural.to_string(), one);
        }
        _ => {
            u.insert(count, one);
        }
    }
    u
}

/// A pod uses quota until it has finished or its deletion grace period is over.
fn pod_counts(pod: &Value) -> bool {
    if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleting = crate::meta::get(pod, "deletionTimestamp").and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
    match (deleting, grace) {
        (Some(at), Some(g)) => jiff::Timestamp::now() <= at + jiff::SignedDuration::from_secs(g),
        _ => true,
    }
}

/// Whether a pod falls under `scope` (Terminating, NotTerminating, BestEffort, NotBestEffort,
/// PriorityClass with a selector operator and values).
fn scope_matches(scope: &str, operator: &str, values: &[String], pod: &Value) -> bool {
    let terminating = pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|d| d >= 0);
    let best_effort = ["containers", "initContainers"].iter().all(|list| {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| ["requests", "limits"].iter().all(|f| c.pointer(&format!("/resources/{f}")).and_then(Value::as_object).is_none_or(|m| m.is_empty())))
    });
    let class = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or("");
    match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "PriorityClass" => match operator {
            "In" => values.iter().any(|v| v == class),
            "NotIn" => !values.iter().any(|v| v == class),
            "Exists" => !class.is_empty(),
            "DoesNotExist" => class.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

/// The scopes of a quota: `spec.scopes` (operator Exists) and `spec.scopeSelector`.
fn scopes(quota: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<(String, String, Vec<String>)> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists".to_string(), vec![]))
        .collect();
    for e in quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("").to_string();
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("").to_string();
        let values = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
        out.push((name, op, values));
    }
    out
}

/// Whether `quota` applies to `obj`: every scope matches (scopes only ever match pods).
fn quota_matches(quota: &Value, is_pod: bool, obj: &Value) -> bool {
    scopes(quota).iter().all(|(s, op, values)| is_pod && scope_matches(s, op, values, obj))
}

fn parse_list(v: Option<&Value>) -> BTreeMap<String, (Quantity, String)> {
    resource_list(v)
}

/// How a usage figure is printed (counts and cpu decimal, memory and storage binary).
fn show(name: &str, q: &Quantity) -> String {
    let binary = name.contains("memory") || name.contains("storage");
    q.canonical(if binary { Format::BinarySi } else { Format::DecimalSi })
}

fn pretty(list: &BTreeMap<String, String>) -> String {
    list.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Containers that do not state a cpu/memory resource a quota covers, in upstream's words.
fn missing_requests(required: &BTreeSet<String>, pod: &Value) -> Option<String> {
    let required: BTreeSet<&str> = required.iter().map(String::as_str).filter(|r| VALIDATION_SET.contains(r)).collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for list in ["containers", "initContainers"] {
        for c in pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let requests = resource_list(c.pointer("/resources/requests"));
            let limits = resource_list(c.pointer("/resources/limits"));
            let mut has = BTreeSet::new();
            for r in ["cpu", "memory"] {
                if requests.contains_key(r) {
                    has.insert(r.to_string());
                    has.insert(format!("requests.{r}"));
                }
                if limits.contains_key(r) {
                    has.insert(format!("limits.{r}"));
                }
            }
            for r in &required {
                if !has.contains(*r) {
                    missing.entry(r).or_default().insert(name.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing.iter().map(|(r, names)| format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(","))).collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Checks `delta` against the namespace's quotas and charges it, compare-and-swap per quota;
/// what it charged.
async fn charge(api: &Api, a: &Attributes, obj: &Value, delta: &Usage) -> Result<Vec<Charge>, ApiError> {
    let quotas_res = api.resource("", "resourcequotas")?;
    let is_pod = a.is("", "pods");
    let ns = a.namespace().to_string();
    // most namespaces have no quota: the cache says so without a store read (a quota too new to
    // be in the cache has no status yet, so it would not be enforced either)
    if cached(api, "", "resourcequotas", Some(&ns)).is_empty() {
        return Ok(vec![]);
    }
    let mut charged: BTreeSet<String> = BTreeSet::new();
    let mut charges = vec![];
    for _attempt in 0..64 {
        let page = api
            .store
            .list(&quotas_res.list_prefix(api.store_prefix(), Some(&ns)), Default::default())
            .await
            .map_err(|e| crate::rest::store_error(&quotas_res, "", e))?;
        let mut updates = vec![];
        for kv in &page.kvs {
            let Ok(quota) = serde_json::from_slice::<Value>(&kv.value) else { continue };
            let name = crate::meta::name(&quota).to_string();
            if charged.contains(&name) {
                continue;
            }
            let hard = parse_list(quota.pointer("/status/hard"));
            if !delta.keys().any(|k| hard.contains_key(k)) || !quota_matches(&quota, is_pod, obj) {
                // a pod quota that covers cpu or memory still judges the pod's containers
                if !(is_pod && hard.keys().any(|k| VALIDATION_SET.contains(&k.as_str())) && quota_matches(&quota, is_pod, obj)) {
                    continue;
                }
            }
            let covered: BTreeSet<String> = hard.keys().cloned().collect();
            if is_pod {
                if let Some(why) = missing_requests(&covered, obj) {
                    return Err(a.forbidden(&format!("failed quota: {name}: {why}")));
                }
            }
            let used = parse_list(quota.pointer("/status/used"));
            let requested: Usage = delta.iter().filter(|(k, _)| hard.contains_key(*k)).map(|(k, q)| (k.clone(), *q)).collect();
            if requested.is_empty() {
                continue;
            }
            let unknown: Vec<&String> = requested.keys().filter(|k| !used.contains_key(*k)).collect();
            if !unknown.is_empty() {
                let names = unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                return Err(a.forbidden(&format!("status unknown for quota: {name}, resources: {names}")));
            }
            let mut new_used: BTreeMap<String, Quantity> = used.iter().map(|(k, (q, _))| (k.clone(), *q)).collect();
            let mut exceeded = vec![];
            for (k, q) in &requested {
                let total = new_used.get(k).copied().unwrap_or_default() + *q;
                if hard.get(k).is_some_and(|(h, _)| total > *h) {
                    exceeded.push(k.clone());
                }
                new_used.insert(k.clone(), total);
            }
            if !exceeded.is_empty() {
                let pick = |f: &dyn Fn(&String) -> String| exceeded.iter().map(|k| (k.clone(), f(k))).collect::<BTreeMap<_, _>>();
                let req = pick(&|k| show(k, &requested[k]));
                let usd = pick(&|k| used.get(k).map(|(q, s)| super::limitranger::show(q, s)).unwrap_or_default());
                let lim = pick(&|k| hard.get(k).map(|(q, s)| super::limitranger::show(q, s)).unwrap_or_default());
                return Err(a.forbidden(&format!("exceeded quota: {name}, requested: {}, used: {}, limited: {}", pretty(&req), pretty(&usd), pretty(&lim))));
            }
            let mut updated = quota.clone();
            let used_json: serde_json::Map<String, Value> = new_used.iter().map(|(k, q)| (k.clone(), json!(show(k, q)))).collect();
            updated["status"]["used"] = Value::Object(used_json);
            updates.push((name, kv.key.clone(), kv.mod_revision, updated, requested));
        }
        if a.dry_run {
            return Ok(vec![]);
        }
        let mut conflicted = false;
        for (name, key, rev, updated, usage) in updates {
            let bytes = crate::rest::to_bytes(&updated)?;
            match api.store.update(&key, bytes, rev, None).await {
                Ok(_) => {
                    charged.insert(name);
                    charges.push(Charge { key, usage });
                }
                Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
                    conflicted = true;
                    break;
                }
                Err(e) => return Err(crate::rest::store_error(&quotas_res, &name, e)),
            }
        }
        if !conflicted {
            return Ok(charges);
        }
    }
    uncharge(api, charges).await;
    Err(ApiError::conflict(&quotas_res, a.namespace()))
}

/// Subtracts what `charges` added from their quotas' `status.used` (never below zero),
/// compare-and-swap per quota.
pub async fn uncharge(api: &Api, charges: Vec<Charge>) {
    for c in charges {
        for _ in 0..16 {
            let Ok(Some(kv)) = api.store.get(&c.key, None).await else { break };
            let Ok(mut quota) = serde_json::from_slice::<Value>(&kv.value) else { break };
            let used = parse_list(quota.pointer("/status/used"));
            let mut list = serde_json::Map::new();
            for (k, (q, s)) in &used {
                match c.usage.get(k) {
                    Some(minus) => {
                        let left = if *q > *minus { *q - *minus } else { Quantity::default() };
                        list.insert(k.clone(), json!(show(k, &left)));
                    }
                    None => {
                        list.insert(k.clone(), json!(s));
                    }
                }
            }
            quota["status"]["used"] = Value::Object(list);
            let Ok(bytes) = crate::rest::to_bytes(&quota) else { break };
            match api.store.update(&c.key, bytes, kv.mod_revision, None).await {
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::warn!(quota = %c.key, error = %e, "giving back quota usage failed; the controller's resync corrects it");
                    break;
                }
                Ok(_) => break,
            }
        }
    }
}

/// The quota resources a quota's `hard` names → the resources whose objects count for it.
fn counted_resources(api: &Api, hard: &BTreeMap<String, (Quantity, String)>) -> Vec<Arc<Resource>> {
    let mut out: Vec<Arc<Resource>> = vec![];
    let mut add = |group: &str, plural: &str| {
        if let Some(r) = super::served(api, group, plural) {
            if !out.iter().any(|o| o.storage == r.storage) {
                out.push(r);
            }
        }
    };
    for k in hard.keys() {
        if let Some(rest) = k.strip_prefix("count/") {
            let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
            add(group, plural);
        } else if k.starts_with("services") {
            add("", "services");
        } else if k == "persistentvolumeclaims" || k.contains("storage") && !k.contains("ephemeral") {
            add("", "persistentvolumeclaims");
        } else if matches!(k.as_str(), "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") {
            add("", k);
        } else {
            add("", "pods");
        }
    }
    out
}

/// Recomputes one quota's status from the watch caches; writes it when it changed.
async fn recompute(api: &Api, quota: &Value) {
    let Ok(quotas_res) = api.resource("", "resourcequotas") else { return };
    let ns = crate::meta::get(quota, "namespace").unwrap_or("").to_string();
    let name = crate::meta::name(quota).to_string();
    let key = quotas_res.key(api.store_prefix(), Some(&ns), &name);
    for _ in 0..16 {
        let Ok(Some(kv)) = api.store.get(&key, None).await else { return };
        let Ok(current) = serde_json::from_slice::<Value>(&kv.value) else { return };
        let hard = parse_list(current.pointer("/spec/hard"));
        let mut used: Usage = hard.keys().map(|k| (k.clone(), Quantity::default())).collect();
        let counted = counted_resources(api, &hard);
        // the caches show at least what was stored before this pass
        if let Ok(now) = api.store.current_revision().await {
            for res in &counted {
                if let Ok(cache) = api.cache(res) {
                    cache.wait_for(now, std::time::Duration::from_secs(5)).await;
                }
            }
        }
        for res in counted {
            let is_pod = res.group.is_empty() && res.plural == "pods";
            for obj in cached(api, res.group, res.plural, Some(&ns)) {
                if !quota_matches(&current, is_pod, &obj) {
                    continue;
                }
                for (k, q) in usage(res.group, res.plural, &obj) {
                    if let Some(u) = used.get_mut(&k) {
                        *u = *u + q;
                    }
                }
            }
        }
        let status = json!({
            "hard": current.pointer("/spec/hard").cloned().unwrap_or(json!({})),
            "used": used.iter().map(|(k, q)| (k.clone(), json!(show(k, q)))).collect::<serde_json::Map<_, _>>(),
        });
        if current.get("status") == Some(&status) {
            return;
        }
        let mut updated = current.clone();
        updated["status"] = status;
        let Ok(bytes) = crate::rest::to_bytes(&updated) else { return };
        match api.store.update(&key, bytes, kv.mod_revision, None).await {
            Ok(_) => return,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(quota = %name, namespace = %ns, error = %e, "writing the quota status failed");
                return;
            }
        }
    }
}

/// What the controller remembers of a counted object: whether it still counted.
type Seen = HashMap<String, HashMap<String, bool>>;

/// The namespaces where an object of `res` went away or stopped counting since `seen`.
fn shrunk(api: &Api, res: &Resource, seen: &mut HashMap<String, bool>) -> BTreeSet<String> {
    let Ok(cache) = api.cache(res) else { return BTreeSet::new() };
    let (items, _) = cache.snapshot(&res.prefix(api.store_prefix()));
    let is_pod = res.group.is_empty() && res.plural == "pods";
    let mut now = HashMap::new();
    let mut namespaces = BTreeSet::new();
    for item in items {
        let Ok(v) = item.value() else { continue };
        let key = format!("{}/{}", crate::meta::get(&v, "namespace").unwrap_or(""), crate::meta::name(&v));
        now.insert(key, !is_pod || pod_counts(&v));
    }
    for (key, counted) in seen.iter() {
        if *counted && !now.get(key).copied().unwrap_or(false) {
            namespaces.insert(key.split('/').next().unwrap_or("").to_string());
        }
    }
    *seen = now;
    namespaces
}

/// Runs the quota controller: a pass on every change of the quotas and of the kinds they count
/// (custom resources included: the caches of CRDs served later are followed as they come).
pub fn spawn_controller(api: &Arc<Api>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let weak = Arc::downgrade(api);
    tokio::spawn(
        async move {
            let mut seen: Seen = HashMap::new();
            let mut followed: BTreeSet<String> = BTreeSet::new();
            let mut resync = tokio::time::interval(RESYNC);
            resync.tick().await;
            let mut full = false;
            loop {
                {
                    let Some(api) = weak.upgrade() else { return };
                    follow_caches(&api, &tx, &mut followed);
                    pass(&api, &mut seen, full).await;
                }
                tokio::select! {
                    r = rx.recv() => {
                        if r.is_none() {
                            return;
                        }
                        full = false;
                    }
                    _ = resync.tick() => full = true,
                }
            }
        }
        .instrument(tracing::info_span!("resourcequota_controller")),
    );
}

/// Forwards the changes of every served storage not yet followed into `tx` (one wake-up
/// pending at most); a forwarder ends with its cache or with the controller.
fn follow_caches(api: &Api, tx: &tokio::sync::mpsc::Sender<()>, followed: &mut BTreeSet<String>) {
    let registry = api.registry();
    // a storage that went (a CRD deleted) is followed again should it come back
    followed.retain(|s| registry.all().iter().any(|r| r.storage == s.as_str()));
    for res in registry.all().iter() {
        if followed.contains(res.storage) {
            continue;
        }
        let Ok(cache) = api.cache(res) else { continue };
        followed.insert(res.storage.to_string());
        let mut changes = cache.changes();
        let tx = tx.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if tx.is_closed() {
                    return;
                }
                let _ = tx.try_send(());
            }
        });
    }
}

/// How often every quota is recomputed (upstream's default resync period).
const RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// One pass: quotas whose status does not reflect their spec, and quotas of namespaces where
/// counted objects went away, are recomputed (all of them when `full`).
async fn pass(api: &Api, seen: &mut Seen, full: bool) {
    let quotas = cached(api, "", "resourcequotas", None);
    let mut namespaces = BTreeSet::new();
    let mut watched: Vec<Arc<Resource>> = vec![];
    for q in &quotas {
        for r in counted_resources(api, &parse_list(q.pointer("/spec/hard"))) {
            if !watched.iter().any(|w| w.storage == r.storage) {
                watched.push(r);
            }
        }
    }
    for res in &watched {
        let entry = seen.entry(res.qualified()).or_default();
        namespaces.extend(shrunk(api, res, entry));
    }
    seen.retain(|k, _| watched.iter().any(|w| &w.qualified() == k));
    for q in &quotas {
        let ns = crate::meta::get(q, "namespace").unwrap_or("");
        let stale = q.pointer("/status/hard") != q.pointer("/spec/hard") || q.pointer("/status/used").is_none();
        if full || stale || namespaces.contains(ns) {
            recompute(api, q).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{api, attrs, create};

    #[test]
    fn usage_of_pods_services_and_claims() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
        ]}});
        let u = usage("", "pods", &pod);
        let s = |k: &str| show(k, &u[k]);
        assert_eq!(
            (s("pods"), s("count/pods"), s("requests.cpu"), s("cpu"), s("requests.memory"), s("limits.cpu")),
            ("1".into(), "1".into(), "500m".into(), "500m".into(), "128Mi".into(), "500m".into())
        );
        let mut done = pod.clone();
        done["status"] = json!({"phase": "Succeeded"});
        assert!(usage("", "pods", &done).is_empty());
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        assert_eq!(show("services.nodeports", &usage("", "services", &svc)["services.nodeports"]), "2");
        assert_eq!(usage("apps", "deployments", &json!({})).keys().collect::<Vec<_>>(), vec!["count/deployments.apps"]);
    }

    #[test]
    fn quotas_on_cpu_or_memory_need_every_container_to_state_them() {
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}, {"name": "b"}]}});
        let required: BTreeSet<String> = ["limits.cpu", "requests.cpu", "pods"].iter().map(|s| s.to_string()).collect();
        assert_eq!(missing_requests(&required, &pod).unwrap(), "must specify limits.cpu for: a,b; requests.cpu for: b");
    }

    #[test]
    fn scopes_select_pods() {
        let q = json!({"spec": {"scopes": ["BestEffort"], "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let pod = |class: &str| json!({"spec": {"priorityClassName": class, "containers": [{"name": "a"}]}});
        assert!(quota_matches(&q, true, &pod("high")));
        assert!(!quota_matches(&q, true, &pod("low")));
        assert!(!quota_matches(&q, false, &json!({})), "scoped quotas count only pods");
    }

    #[tokio::test]
    async fn parallel_creates_never_overshoot_and_usage_goes_down_on_delete() {
        let api = api().await;
        let q = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "default"}, "spec": {"hard": {"secrets": "4"}}});
        create(&api, "", "resourcequotas", Some("default"), q).await;
        let quotas = api.resource("", "resourcequotas").unwrap();
        let wait_used = |want: &'static str| {
            let api = api.api.clone();
            let quotas = quotas.clone();
            async move {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    let q = api.get(&quotas, Some("default"), "q", None).await.unwrap();
                    if q.pointer("/status/used/secrets").and_then(Value::as_str) == Some(want) {
                        return;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "used never became {want}: {q}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        wait_used("0").await;
        let cms = api.resource("", "secrets").unwrap();
        let mut tasks = vec![];
        for i in 0..10 {
            let (api, cms) = (api.api.clone(), cms.clone());
            tasks.push(tokio::spawn(async move {
                let cm = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("c{i}")}});
                api.create(&cms, Some("default"), cm, &Default::default()).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert_eq!(e.code, 403);
                    assert_eq!(
                        e.message,
                        format!(
                            "secrets \"{}\" is forbidden: exceeded quota: q, requested: secrets=1, used: secrets=4, limited: secrets=4",
                            e.details.as_ref().unwrap()["name"].as_str().unwrap()
                        )
                    );
                }
            }
        }
        assert_eq!(ok, 4);
        wait_used("4").await;
        let victim = cached(&api, "", "secrets", Some("default")).into_iter().find(|c| crate::meta::name(c).starts_with('c')).unwrap();
        api.delete(&cms, Some("default"), crate::meta::name(&victim), &Default::default()).await.unwrap();
        wait_used("3").await;

        // a create that finds its name taken gives back what it was charged
        let taken = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c9"}});
        let names: Vec<String> = cached(&api, "", "secrets", Some("default")).iter().map(|c| crate::meta::name(c).to_string()).collect();
        let existing = names.iter().find(|n| n.starts_with('c')).cloned().unwrap();
        let mut dup = taken.clone();
        dup["metadata"]["name"] = json!(existing);
        assert_eq!(api.create(&cms, Some("default"), dup, &Default::default()).await.unwrap_err().code, 409);
        wait_used("3").await;
        assert_eq!(api.get(&quotas, Some("default"), "q", None).await.unwrap()["status"]["used"]["secrets"], "3");

        let mut a = attrs(&api, Operation::Create, "", "secrets", Some("default"), json!({"metadata": {"name": "dry"}}));
        a.dry_run = true;
        ResourceQuota.validate(&api, &mut a).await.unwrap();
        wait_used("3").await;
    }
}
