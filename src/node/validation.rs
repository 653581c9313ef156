//! The apiserver's checks the node repeats at its door, whatever the pod's source: every name
//! that becomes a path, a cgroup name or a log file name (namespace, pod name and UID,
//! container and volume names, projected file paths) and every resource quantity. A pod that
//! fails is refused before anything of it is created, with the apiserver's field errors.
use crate::util::names::{self, check, dns1123_label, dns1123_subdomain};
use crate::util::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};
use std::collections::{BTreeMap, HashSet};

/// Every field error of `pod`; empty when the node may run it.
pub fn pod_errors(pod: &Pod) -> Vec<String> {
    let mut errs = vec![];
    let md = &pod.metadata;
    errs.extend(check("metadata.name", md.name.as_deref().unwrap_or_default(), dns1123_subdomain));
    errs.extend(check("metadata.namespace", md.namespace.as_deref().unwrap_or("default"), dns1123_label));
    if let Some(uid) = md.uid.as_deref() {
        if uid.is_empty() || uid.len() > 128 || !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            errs.push(names::invalid("metadata.uid", uid, "must consist of alphanumeric characters or '-' (a UUID)"));
        }
    }
    let Some(spec) = pod.spec.as_ref() else {
        errs.push(names::required("spec"));
        return errs;
    };
    if spec.containers.is_empty() {
        errs.push(names::required("spec.containers"));
    }
    let mut seen = HashSet::new();
    let lists: [(&str, Vec<&Container>); 2] =
        [("spec.initContainers", spec.init_containers.iter().flatten().collect()), ("spec.containers", spec.containers.iter().collect())];
    for (field, list) in lists {
        for (i, c) in list.into_iter().enumerate() {
            let path = format!("{field}[{i}]");
            errs.extend(check(&format!("{path}.name"), &c.name, dns1123_label));
            if !c.name.is_empty() && !seen.insert(c.name.clone()) {
                errs.push(format!("{path}.name: Duplicate value: {}", names::go_quote(&c.name)));
            }
            if c.image.as_deref().unwrap_or_default().is_empty() {
                errs.push(names::required(&format!("{path}.image")));
            }
            errs.extend(resource_errors(&path, c));
            for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
                if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    errs.extend(relative_path_errors(&format!("{path}.volumeMounts[{j}].subPath"), sub));
                }
            }
        }
    }
    for (i, ec) in spec.ephemeral_containers.iter().flatten().enumerate() {
        errs.extend(check(&format!("spec.ephemeralContainers[{i}].name"), &ec.name, dns1123_label));
    }
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("spec.volumes[{i}]");
        errs.extend(check(&format!("{path}.name"), &v.name, dns1123_label));
        if !volumes.insert(v.name.clone()) {
            errs.push(format!("{path}.name: Duplicate value: {}", names::go_quote(&v.name)));
        }
        errs.extend(volume_file_errors(&path, v));
        if let Some(q) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            if let Err(e) = Quantity::parse(&q.0) {
                errs.push(names::invalid(&format!("{path}.emptyDir.sizeLimit"), &q.0, &e.to_string()));
            }
        }
    }
    if let Some(p) = spec.restart_policy.as_deref() {
        if !matches!(p, "Always" | "OnFailure" | "Never") {
            errs.push(format!("spec.restartPolicy: Unsupported value: {}: supported values: \"Always\", \"OnFailure\", \"Never\"", names::go_quote(p)));
        }
    }
    errs
}

/// Quantities that parse, and requests that do not exceed their limits.
fn resource_errors(path: &str, c: &Container) -> Vec<String> {
    let mut errs = vec![];
    let Some(r) = c.resources.as_ref() else { return errs };
    let mut parsed = |which: &str, map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
        let mut out = BTreeMap::new();
        for (name, q) in map.into_iter().flatten() {
            match Quantity::parse(&q.0) {
                Ok(v) if v.is_negative() => errs.push(names::invalid(&format!("{path}.resources.{which}[{name}]"), &q.0, "must be greater than or equal to 0")),
                Ok(v) => {
                    out.insert(name.clone(), (q.0.clone(), v));
                }
                Err(e) => errs.push(names::invalid(&format!("{path}.resources.{which}[{name}]"), &q.0, &e.to_string())),
            }
        }
        out
    };
    let limits = parsed("limits", r.limits.as_ref());
    let requests = parsed("requests", r.requests.as_ref());
    for (name, (text, req)) in &requests {
        if let Some((lim_text, lim)) = limits.get(name) {
            if req > lim {
                errs.push(names::invalid(&format!("{path}.resources.requests"), text, &format!("must be less than or equal to {name} limit of {lim_text}")));
            }
        }
    }
    errs
}

/// A path inside a volume: relative, without "..".
fn relative_path_errors(path: &str, value: &str) -> Vec<String> {
    let mut errs = vec![];
    if value.starts_with('/') {
        errs.push(names::invalid(path, value, "must be a relative path"));
    }
    if value.split('/').any(|p| p == "..") {
        errs.push(names::invalid(path, value, "must not contain '..'"));
    }
    if value.contains('\0') {
        errs.push(names::invalid(path, value, "must not contain NUL"));
    }
    errs
}

/// File names projected into configMap, secret, downwardAPI and projected volumes.
fn volume_file_errors(path: &str, v: &Volume) -> Vec<String> {
    let mut files: Vec<(String, &str)> = vec![];
    fn items<'a>(files: &mut Vec<(String, &'a str)>, field: String, list: Option<&'a Vec<KeyToPath>>) {
        for (i, it) in list.into_iter().flatten().enumerate() {
            files.push((format!("{field}.items[{i}].path"), it.path.as_str()));
        }
    }
    items(&mut files, format!("{path}.configMap"), v.config_map.as_ref().and_then(|c| c.items.as_ref()));
    items(&mut files, format!("{path}.secret"), v.secret.as_ref().and_then(|s| s.items.as_ref()));
    let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
    for (s, src) in sources.into_iter().flatten().enumerate() {
        items(&mut files, format!("{path}.projected.sources[{s}].configMap"), src.config_map.as_ref().and_then(|c| c.items.as_ref()));
        items(&mut files, format!("{path}.projected.sources[{s}].secret"), src.secret.as_ref().and_then(|c| c.items.as_ref()));
    }
    for (s, src) in sources.into_iter().flatten().enumerate() {
        for (i, f) in src.downward_api.as_ref().and_then(|d| d.items.as_ref()).into_iter().flatten().enumerate() {
            files.push((format!("{path}.projected.sources[{s}].downwardAPI.items[{i}].path"), f.path.as_str()));
        }
    }
    for (i, f) in v.downward_api.as_ref().and_then(|d| d.items.as_ref()).into_iter().flatten().enumerate() {
        files.push((format!("{path}.downwardAPI.items[{i}].path"), f.path.as_str()));
    }
    files.iter().flat_map(|(field, value)| relative_path_errors(field, value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn names_that_would_become_paths_are_refused() {
        let ok = pod(serde_json::json!({"metadata": {"name": "web-0", "namespace": "shop", "uid": "0f0e-12"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], "volumes": [{"name": "data", "emptyDir": {}}]}}));
        assert!(pod_errors(&ok).is_empty(), "{:?}", pod_errors(&ok));
        let bad = pod(serde_json::json!({"metadata": {"name": "../../etc", "namespace": "a/b", "uid": "../x"},
            "spec": {"containers": [{"name": "x/../../y", "image": "busybox"}, {"name": &"c".repeat(64), "image": "busybox"}],
                     "volumes": [{"name": "..", "configMap": {"name": "cm", "items": [{"key": "k", "path": "../../root/.ssh/authorized_keys"}]}}]}}));
        let errs = pod_errors(&bad);
        for field in [
            "metadata.name",
            "metadata.namespace",
            "metadata.uid",
            "spec.containers[0].name",
            "spec.containers[1].name",
            "spec.volumes[0].name",
            "spec.volumes[0].configMap.items[0].path",
        ] {
            assert!(errs.iter().any(|e| e.starts_with(&format!("{field}: "))), "{field}: {errs:#?}");
        }
        assert!(errs.iter().any(|e| e.contains("must be no more than 63 characters")));
    }

    #[test]
    fn quantities_parse_and_requests_fit_their_limits() {
        let p = pod(serde_json::json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "a", "image": "i",
            "resources": {"limits": {"memory": "512MB", "cpu": "1"}, "requests": {"cpu": "2"}}}]}}));
        let errs = pod_errors(&p);
        assert!(errs.contains(&"spec.containers[0].resources.limits[memory]: Invalid value: \"512MB\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".to_string()), "{errs:#?}");
        assert!(
            errs.contains(&"spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1".to_string()),
            "{errs:#?}"
        );
    }
}
