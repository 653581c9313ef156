//! Credentials for a pod's image pulls from its imagePullSecrets, as the kubelet finds them:
//! each Secret of type `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`: `{"auths":
//! {...}}`) or `kubernetes.io/dockercfg` (`.dockercfg`: the entries alone), in the pod's order;
//! an entry applies when its key names the image's registry (with or without a scheme, with a
//! leading path prefix of the repository, `docker.io` also as `index.docker.io` and
//! `https://index.docker.io/v1/`). Each entry gives username and password (or `auth`, their
//! base64 join) or an identity token. The kubelet tries them in that order and pulls without
//! credentials when none applies.

use base64::Engine;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::Value;

use super::volumes::Objects;
use crate::cri::v1 as cri;
use crate::image::reference::Reference;

/// The credentials that apply to pulling `image` for `pod`, in the order to try them.
pub fn credentials(pod: &Pod, objects: &Objects, image: &str) -> Vec<cri::AuthConfig> {
    let Ok(reference) = Reference::parse(image) else { return vec![] };
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = vec![];
    for s in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
        let Some(secret) = objects.secrets.get(&(ns.clone(), s.name.clone())) else {
            tracing::debug!(secret = %s.name, "an imagePullSecret the node does not have");
            continue;
        };
        for (key, entry) in entries(secret) {
            if applies(&key, &reference) {
                if let Some(auth) = auth_config(&key, &entry) {
                    out.push(auth);
                }
            }
        }
    }
    out
}

/// The registry entries of a docker config Secret.
fn entries(secret: &Secret) -> Vec<(String, Value)> {
    let data = |k: &str| secret.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.clone());
    let (raw, nested) = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => (data(".dockerconfigjson"), true),
        Some("kubernetes.io/dockercfg") => (data(".dockercfg"), false),
        _ => return vec![],
    };
    let Some(v) = raw.and_then(|r| serde_json::from_slice::<Value>(&r).ok()) else { return vec![] };
    let map = if nested { v.get("auths").cloned().unwrap_or(Value::Null) } else { v };
    map.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

/// Whether a config key names the image's registry (and a prefix of its repository).
fn applies(key: &str, r: &Reference) -> bool {
    let bare = key.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let (host, path) = bare.split_once('/').unwrap_or((bare, ""));
    let docker_hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    let host_ok = host == r.domain || (docker_hub(host) && docker_hub(&r.domain));
    // `https://index.docker.io/v1/` names the whole of Docker Hub
    let path = if docker_hub(host) && path == "v1" { "" } else { path };
    host_ok && (path.is_empty() || r.repository == path || r.repository.starts_with(&format!("{path}/")))
}

fn auth_config(key: &str, entry: &Value) -> Option<cri::AuthConfig> {
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (mut username, mut password) = (text("username"), text("password"));
    let auth = text("auth");
    if username.is_empty() && !auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.as_bytes()).ok()?;
        let (u, p) = String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_string(), p.to_string()))?;
        (username, password) = (u, p);
    }
    let identity_token = text("identitytoken");
    if username.is_empty() && identity_token.is_empty() {
        return None;
    }
    Some(cri::AuthConfig { username, password, server_address: key.to_string(), identity_token, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(name: &str, type_: &str, key: &str, value: Value) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some([(key.to_string(), ByteString(value.to_string().into_bytes()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn pull_secrets_give_the_credentials_of_the_images_registry_in_order() {
        let mut objects = Objects::default();
        let b64 = base64::engine::general_purpose::STANDARD.encode("berth:berth-secret");
        objects.secrets.insert(
            ("ns".into(), "reg".into()),
            secret(
                "reg",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                json!({"auths": {"127.0.0.1:5001": {"auth": b64}, "other.example": {"username": "x", "password": "y"}}}),
            ),
        );
        objects.secrets.insert(
            ("ns".into(), "hub".into()),
            secret("hub", "kubernetes.io/dockercfg", ".dockercfg", json!({"https://index.docker.io/v1/": {"username": "u", "password": "p"}})),
        );
        objects.secrets.insert(("ns".into(), "opaque".into()), secret("opaque", "Opaque", "x", json!({})));
        let pod: Pod = serde_json::from_value(json!({"metadata": {"namespace": "ns"}, "spec": {"containers": [], "imagePullSecrets": [{"name": "opaque"}, {"name": "missing"}, {"name": "reg"}, {"name": "hub"}]}}))
            .expect("pod");
        let creds = credentials(&pod, &objects, "127.0.0.1:5001/berth/busybox:latest");
        assert_eq!(creds.len(), 1);
        assert_eq!((creds[0].username.as_str(), creds[0].password.as_str()), ("berth", "berth-secret"));
        let creds = credentials(&pod, &objects, "busybox");
        assert_eq!(creds.iter().map(|c| c.username.as_str()).collect::<Vec<_>>(), vec!["u"]);
        assert!(credentials(&pod, &objects, "quay.io/x/y").is_empty());
    }

    #[test]
    fn keys_may_name_a_repository_prefix() {
        let r = Reference::parse("registry.example/team/app:1").expect("ref");
        assert!(applies("registry.example", &r));
        assert!(applies("https://registry.example/team", &r));
        assert!(!applies("registry.example/other", &r));
        assert!(!applies("registry.example:5000", &r));
    }
}
