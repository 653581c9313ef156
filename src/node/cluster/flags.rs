//! The node's registration flags as the kubelet reads them: `--node-labels key=value,...` and
//! `--register-with-taints key=value:Effect,...` (also `key:Effect`), checked with the API's
//! own name rules so a bad flag stops the start instead of failing every Node write.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;

/// A flag that does not parse, with what is wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FlagError {
    #[error("invalid node label {0:?}: {1}")]
    Label(String, String),
    #[error("invalid taint spec {0:?}: {1}")]
    Taint(String, String),
}

/// `key=value` pairs (a key alone means an empty value, as the kubelet takes it).
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, FlagError> {
    let mut labels = BTreeMap::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let mut errs = berth_names::qualified_name(key);
        errs.extend(berth_names::label_value(value));
        if !errs.is_empty() {
            return Err(FlagError::Label(item.to_string(), errs.join("; ")));
        }
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

/// `key=value:Effect` or `key:Effect`, Effect one of NoSchedule, PreferNoSchedule, NoExecute.
pub fn parse_taints(items: &[String]) -> Result<Vec<Taint>, FlagError> {
    let mut taints: Vec<Taint> = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let bad = |why: &str| FlagError::Taint(item.to_string(), why.to_string());
        let (head, effect) = item.rsplit_once(':').ok_or_else(|| bad("expected key=value:effect or key:effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(bad(&format!("invalid taint effect: {effect}, unsupported taint effect")));
        }
        let (key, value) = match head.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (head, None),
        };
        let mut errs = berth_names::qualified_name(key);
        errs.extend(value.map(berth_names::label_value).unwrap_or_default());
        if !errs.is_empty() {
            return Err(bad(&errs.join("; ")));
        }
        if taints.iter().any(|t| t.key == key && t.effect == effect) {
            return Err(bad("duplicated taints with the same key and effect"));
        }
        taints.push(Taint { key: key.to_string(), value: value.map(str::to_string), effect: effect.to_string(), time_added: None });
    }
    Ok(taints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn labels_take_keys_with_prefixes_and_empty_values() {
        let l = parse_labels(&v(&["node-role.kubernetes.io/worker=", "zone=a", "plain"])).expect("labels");
        assert_eq!(l.get("zone").map(String::as_str), Some("a"));
        assert_eq!(l.get("node-role.kubernetes.io/worker").map(String::as_str), Some(""));
        assert_eq!(l.get("plain").map(String::as_str), Some(""));
        assert!(matches!(parse_labels(&v(&["bad key=x"])), Err(FlagError::Label(..))));
        assert!(matches!(parse_labels(&v(&["k=bad value"])), Err(FlagError::Label(..))));
    }

    #[test]
    fn taints_with_and_without_values() {
        let t = parse_taints(&v(&["dedicated=gpu:NoSchedule", "maintenance:NoExecute"])).expect("taints");
        assert_eq!((t[0].key.as_str(), t[0].value.as_deref(), t[0].effect.as_str()), ("dedicated", Some("gpu"), "NoSchedule"));
        assert_eq!((t[1].key.as_str(), t[1].value.as_deref(), t[1].effect.as_str()), ("maintenance", None, "NoExecute"));
        assert!(matches!(parse_taints(&v(&["k=v"])), Err(FlagError::Taint(..))));
        assert!(matches!(parse_taints(&v(&["k=v:Sometimes"])), Err(FlagError::Taint(..))));
        assert!(matches!(parse_taints(&v(&["k:NoSchedule", "k=x:NoSchedule"])), Err(FlagError::Taint(..))));
    }
}
