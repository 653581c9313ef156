//! LimitRanger: the LimitRanges of a namespace fill and bound what its pods and claims ask for.
//! Mutating (new pods): each container and init container gets the `default` limits and
//! `defaultRequest` requests of the Container items it does not set itself, recorded in the
//! `kubernetes.io/limit-ranger` annotation. Validating: min, max and maxLimitRequestRatio of the
//! Container items per container, of the Pod items on the pod's total (the containers' sum, or
//! the largest init container when that is more), and min/max of the PersistentVolumeClaim items
//! on a claim's requested storage; every violation is listed in upstream's words.
//! LimitRanges are read from the store, so one created just before the pod applies.

use std::collections::BTreeMap;

use berth_names::quantity::{Format, Quantity};
use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};

use super::{Attributes, Operation, Plugin};
use crate::api::Api;
use crate::status::ApiError;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

pub struct LimitRanger;

impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    fn admit<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            // containers cannot change after create: pods are judged once
            if !a.is("", "pods") || a.operation != Operation::Create {
                return Ok(());
            }
            let ranges = limit_ranges(api, a.namespace()).await?;
            if let Some(pod) = a.object.as_mut() {
                for r in &ranges {
                    apply_defaults(r, pod);
                }
            }
            Ok(())
        })
    }

    fn validate<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let pods = a.is("", "pods") && a.operation == Operation::Create;
            let claims = a.is("", "persistentvolumeclaims") && matches!(a.operation, Operation::Create | Operation::Update);
            if !pods && !claims {
                return Ok(());
            }
            let ranges = limit_ranges(api, a.namespace()).await?;
            let Some(obj) = a.object.as_ref() else { return Ok(()) };
            let mut errs = vec![];
            for r in &ranges {
                if pods {
                    errs.extend(validate_pod(r, obj));
                } else {
                    errs.extend(validate_claim(r, obj));
                }
            }
            if errs.is_empty() {
                return Ok(());
            }
            Err(a.forbidden(&aggregate(errs)))
        })
    }
}

/// Upstream's error aggregate: one message bare, several (duplicates once) in brackets.
pub fn aggregate(errs: Vec<String>) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let unique: Vec<String> = errs.into_iter().filter(|e| seen.insert(e.clone())).collect();
    match unique.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The LimitRanges of namespace `ns`, as stored now.
async fn limit_ranges(api: &Api, ns: &str) -> Result<Vec<Value>, ApiError> {
    let res = api.resource("", "limitranges")?;
    let page = api.store.list(&res.list_prefix(api.store_prefix(), Some(ns)), Default::default()).await.map_err(|e| crate::rest::store_error(&res, "", e))?;
    Ok(page.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

fn items<'a>(range: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    range.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten().filter(move |i| i.get("type").and_then(Value::as_str) == Some(kind))
}

/// A resource list (`{"cpu": "500m"}`) with its quantities parsed; unparsable ones are skipped
/// (validation refused them before).
pub fn resource_list(v: Option<&Value>) -> BTreeMap<String, (Quantity, String)> {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| {
            let s = q.as_str()?;
            Some((k.clone(), (Quantity::parse(s).ok()?, s.to_string())))
        })
        .collect()
}

/// How upstream prints a quantity it read (`Quantity.String()`: canonical, in its own format).
pub fn show(q: &Quantity, written: &str) -> String {
    q.canonical(Quantity::format_of(written))
}

fn apply_defaults(range: &Value, pod: &mut Value) {
    let mut limits = Map::new();
    let mut requests = Map::new();
    for item in items(range, "Container") {
        for (k, v) in item.get("default").and_then(Value::as_object).into_iter().flatten() {
            limits.insert(k.clone(), v.clone());
        }
        for (k, v) in item.get("defaultRequest").and_then(Value::as_object).into_iter().flatten() {
            requests.insert(k.clone(), v.clone());
        }
    }
    if limits.is_empty() && requests.is_empty() {
        return;
    }
    let mut notes = vec![];
    for (list, what) in [("containers", "container"), ("initContainers", "init container")] {
        for c in pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut).into_iter().flatten() {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            if !c.get("resources").is_some_and(Value::is_object) {
                c["resources"] = json!({});
            }
            let r = &mut c["resources"];
            let fill = |r: &mut Value, field: &str, defaults: &Map<String, Value>| -> Vec<String> {
                if defaults.is_empty() {
                    return vec![];
                }
                if !r.get(field).is_some_and(Value::is_object) {
                    r[field] = json!({});
                }
                let Some(m) = r[field].as_object_mut() else { return vec![] };
                let mut set: Vec<String> = defaults.iter().filter(|(k, _)| !m.contains_key(*k)).map(|(k, _)| k.clone()).collect();
                for k in &set {
                    m.insert(k.clone(), defaults[k].clone());
                }
                set.sort();
                set
            };
            let set_requests = fill(r, "requests", &requests);
            let set_limits = fill(r, "limits", &limits);
            if !set_requests.is_empty() {
                notes.push(format!("{} request for {what} {name}", set_requests.join(", ")));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        if !pod.pointer("/metadata/annotations").is_some_and(Value::is_object) {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"][ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

type List = BTreeMap<String, (Quantity, String)>;

fn min_constraint(kind: &str, res: &str, enforced: &(Quantity, String), requests: &List, limits: &List) -> Option<String> {
    let e = show(&enforced.0, &enforced.1);
    let Some(req) = requests.get(res) else { return Some(format!("minimum {res} usage per {kind} is {e}.  No request is specified")) };
    if req.0 < enforced.0 {
        return Some(format!("minimum {res} usage per {kind} is {e}, but request is {}", show(&req.0, &req.1)));
    }
    match limits.get(res) {
        Some(lim) if lim.0 < enforced.0 => Some(format!("minimum {res} usage per {kind} is {e}, but limit is {}", show(&lim.0, &lim.1))),
        _ => None,
    }
}

fn max_constraint(kind: &str, res: &str, enforced: &(Quantity, String), requests: &List, limits: &List) -> Option<String> {
    let e = show(&enforced.0, &enforced.1);
    let Some(lim) = limits.get(res) else { return Some(format!("maximum {res} usage per {kind} is {e}.  No limit is specified")) };
    if lim.0 > enforced.0 {
        return Some(format!("maximum {res} usage per {kind} is {e}, but limit is {}", show(&lim.0, &lim.1)));
    }
    match requests.get(res) {
        Some(req) if req.0 > enforced.0 => Some(format!("maximum {res} usage per {kind} is {e}, but request is {}", show(&req.0, &req.1))),
        _ => None,
    }
}

fn max_request_constraint(kind: &str, res: &str, enforced: &(Quantity, String), requests: &List) -> Option<String> {
    let e = show(&enforced.0, &enforced.1);
    match requests.get(res) {
        None => Some(format!("maximum {res} usage per {kind} is {e}.  No request is specified")),
        Some(req) if req.0 > enforced.0 => Some(format!("maximum {res} usage per {kind} is {e}, but request is {}", show(&req.0, &req.1))),
        _ => None,
    }
}

fn ratio_constraint(kind: &str, res: &str, enforced: &(Quantity, String), requests: &List, limits: &List) -> Option<String> {
    let e = show(&enforced.0, &enforced.1);
    let req = requests.get(res).map(|r| r.0).filter(|r| !r.is_zero());
    let Some(req) = req else { return Some(format!("{res} max limit to request ratio per {kind} is {e}, but no request is specified or request is 0")) };
    let lim = limits.get(res).map(|l| l.0).filter(|l| !l.is_zero());
    let Some(lim) = lim else { return Some(format!("{res} max limit to request ratio per {kind} is {e}, but no limit is specified or limit is 0")) };
    // compared exactly: limit / request > enforced  <=>  limit > enforced * request
    let over = lim.nanos().checked_mul(1_000_000_000).zip(enforced.0.nanos().checked_mul(req.nanos())).is_some_and(|(l, r)| l > r);
    if over {
        let ratio = lim.nanos() as f64 / req.nanos() as f64;
        return Some(format!("{res} max limit to request ratio per {kind} is {e}, but provided ratio is {ratio:.6}"));
    }
    None
}

fn check(kind: &str, item: &Value, requests: &List, limits: &List, errs: &mut Vec<String>) {
    for (res, q) in resource_list(item.get("min")) {
        errs.extend(min_constraint(kind, &res, &q, requests, limits));
    }
    for (res, q) in resource_list(item.get("max")) {
        errs.extend(max_constraint(kind, &res, &q, requests, limits));
    }
    for (res, q) in resource_list(item.get("maxLimitRequestRatio")) {
        errs.extend(ratio_constraint(kind, &res, &q, requests, limits));
    }
}

fn container_lists(c: &Value) -> (List, List) {
    (resource_list(c.pointer("/resources/requests")), resource_list(c.pointer("/resources/limits")))
}

/// A pod's total of `field` (requests or limits): the sum over containers, or the largest init
/// container's when that is more, plus the pod overhead.
pub fn pod_total(pod: &Value, field: &str) -> List {
    let mut total: BTreeMap<String, Quantity> = BTreeMap::new();
    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        for (k, (q, _)) in resource_list(c.pointer(&format!("/resources/{field}"))) {
            let e = total.entry(k).or_default();
            *e = *e + q;
        }
    }
    for c in pod.pointer("/spec/initContainers").and_then(Value::as_array).into_iter().flatten() {
        for (k, (q, _)) in resource_list(c.pointer(&format!("/resources/{field}"))) {
            let e = total.entry(k).or_default();
            if q > *e {
                *e = q;
            }
        }
    }
    for (k, (q, _)) in resource_list(pod.pointer("/spec/overhead")) {
        let e = total.entry(k).or_default();
        *e = *e + q;
    }
    total
        .into_iter()
        .map(|(k, q)| {
            let format = if k == "cpu" { Format::DecimalSi } else { Format::BinarySi };
            let shown = q.canonical(format);
            (k, (q, shown))
        })
        .collect()
}

fn validate_pod(range: &Value, pod: &Value) -> Vec<String> {
    let mut errs = vec![];
    for item in range.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for list in ["containers", "initContainers"] {
                    for c in pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
                        let (requests, limits) = container_lists(c);
                        check("Container", item, &requests, &limits, &mut errs);
                    }
                }
            }
            Some("Pod") => check("Pod", item, &pod_total(pod, "requests"), &pod_total(pod, "limits"), &mut errs),
            _ => {}
        }
    }
    errs
}

fn validate_claim(range: &Value, claim: &Value) -> Vec<String> {
    let mut errs = vec![];
    let requests = resource_list(claim.pointer("/spec/resources/requests"));
    for item in items(range, "PersistentVolumeClaim") {
        for (res, q) in resource_list(item.get("min")) {
            errs.extend(min_constraint("PersistentVolumeClaim", &res, &q, &requests, &List::new()));
        }
        for (res, q) in resource_list(item.get("max")) {
            errs.extend(max_request_constraint("PersistentVolumeClaim", &res, &q, &requests));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Value {
        json!({"spec": {"limits": limits}})
    }

    #[test]
    fn fills_defaults_and_records_them() {
        let r = range(json!([{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m", "memory": "64Mi"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}],
        }});
        apply_defaults(&r, &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["resources"], json!({"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": "1", "memory": "64Mi"}}));
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"],
            json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}})
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: memory request for container a; memory limit for container a; cpu, memory request for init container i; cpu, memory limit for init container i"
        );
    }

    #[test]
    fn min_max_and_ratio_in_upstream_words() {
        let r = range(json!([
            {"type": "Container", "max": {"cpu": "500m"}, "min": {"memory": "64Mi"}, "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "Pod", "max": {"memory": "1Gi"}},
        ]));
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "32Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "500m", "memory": "128Mi"}}},
        ]}});
        assert_eq!(
            validate_pod(&r, &pod),
            vec![
                "minimum memory usage per Container is 64Mi, but request is 32Mi",
                "maximum cpu usage per Container is 500m, but limit is 1",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
                "maximum memory usage per Pod is 1Gi, but limit is 1152Mi",
            ]
        );
        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            validate_pod(&range(json!([{"type": "Container", "max": {"cpu": "1"}}])), &bare),
            vec!["maximum cpu usage per Container is 1.  No limit is specified"]
        );
        assert_eq!(aggregate(vec!["x".into(), "x".into()]), "x");
        assert_eq!(aggregate(vec!["x".into(), "y".into()]), "[x, y]");
    }

    #[test]
    fn claims_are_bounded_by_their_requested_storage() {
        let r = range(json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
        let claim = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert_eq!(validate_claim(&r, &claim("20Gi")), vec!["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]);
        assert_eq!(validate_claim(&r, &claim("500Mi")), vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]);
        assert!(validate_claim(&r, &claim("5Gi")).is_empty());
    }
}
