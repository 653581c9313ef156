//! The static pod source: Pod manifests (YAML, one or more documents, or JSON) in a
//! directory, read again whenever a file changes. Each pod gets a UID derived from its source
//! file and content, so editing a manifest makes a new pod (the kubelet recreates on change).
use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One pod from a manifest file.
#[derive(Debug, Clone)]
pub struct SourcePod {
    pub pod: Pod,
    pub file: PathBuf,
}

/// A snapshot of the directory: the pods it declares and the files it could not use.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Pods by UID.
    pub pods: BTreeMap<String, SourcePod>,
    /// Manifest errors by file.
    pub errors: BTreeMap<PathBuf, String>,
    /// ConfigMaps and Secrets declared next to the pods.
    pub objects: super::volumes::Objects,
}

/// What one file declares.
#[derive(Debug, Clone, Default)]
pub struct FileContent {
    pub pods: Vec<SourcePod>,
    pub config_maps: Vec<k8s_openapi::api::core::v1::ConfigMap>,
    pub secrets: Vec<k8s_openapi::api::core::v1::Secret>,
}

/// Files of the directory with modification times, to notice changes cheaply.
pub fn stamp(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    let mut v: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_manifest(p))
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            (p, md.as_ref().and_then(|m| m.modified().ok()), md.map(|m| m.len()).unwrap_or(0))
        })
        .collect();
    v.sort();
    v
}

fn is_manifest(p: &Path) -> bool {
    let hidden = p.file_name().and_then(|n| n.to_str()).map(|n| n.starts_with('.')).unwrap_or(true);
    !hidden && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// Read every manifest of `dir`.
pub fn read_dir(dir: &Path, node_name: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    for (path, _, _) in stamp(dir) {
        match read_file(&path, node_name) {
            Ok(content) => {
                let key = |md: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                    (md.namespace.clone().unwrap_or_else(|| "default".into()), md.name.clone().unwrap_or_default())
                };
                for cm in content.config_maps {
                    snap.objects.config_maps.insert(key(&cm.metadata), cm);
                }
                for sec in content.secrets {
                    snap.objects.secrets.insert(key(&sec.metadata), sec);
                }
                for p in content.pods {
                    let uid = p.pod.metadata.uid.clone().unwrap_or_default();
                    if let Some(other) = snap.pods.values().find(|o| same_name(&o.pod, &p.pod)) {
                        snap.errors.insert(path.clone(), format!("pod {} is also declared in {}", full_name(&p.pod), other.file.display()));
                        continue;
                    }
                    snap.pods.insert(uid, p);
                }
            }
            Err(e) => {
                snap.errors.insert(path.clone(), e);
            }
        }
    }
    snap
}

/// The annotation naming a pod's source (`file` for static pods, as the kubelet sets it).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";

/// Whether the pod came from a manifest file (a static pod), not from the apiserver.
pub fn is_static(p: &Pod) -> bool {
    p.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_SOURCE)).is_some_and(|s| s == "file")
}

pub fn full_name(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or("default"), p.metadata.name.as_deref().unwrap_or(""))
}

fn same_name(a: &Pod, b: &Pod) -> bool {
    full_name(a) == full_name(b)
}

/// The pods (and ConfigMaps and Secrets) of one file; an error names what is wrong.
pub fn read_file(path: &Path, node_name: &str) -> Result<FileContent, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading: {e}"))?;
    let docs: Vec<serde_json::Value> = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        vec![serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?]
    } else {
        // Kubernetes reads YAML 1.1 style: 0644 is octal (file modes are written that way).
        let mut opts = serde_saphyr::Options::default();
        opts.legacy_octal_numbers = true;
        serde_saphyr::from_multiple_with_options(&text, opts).map_err(|e| format!("invalid YAML: {e}"))?
    };
    let mut out = FileContent::default();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if !matches!(kind.as_str(), "Pod" | "ConfigMap" | "Secret") {
            return Err(format!("document {i}: kind {kind:?} is not a Pod, ConfigMap or Secret"));
        }
        if doc["apiVersion"].as_str() != Some("v1") {
            return Err(format!("document {i}: apiVersion must be v1"));
        }
        match kind.as_str() {
            "ConfigMap" => {
                out.config_maps.push(named_object(i, doc, |c: &k8s_openapi::api::core::v1::ConfigMap| &c.metadata)?);
                continue;
            }
            "Secret" => {
                out.secrets.push(named_object(i, doc, |c: &k8s_openapi::api::core::v1::Secret| &c.metadata)?);
                continue;
            }
            _ => {}
        }
        let content = serde_json::to_vec(&doc).unwrap_or_default();
        let mut pod: Pod = serde_json::from_value(doc).map_err(|e| format!("document {i}: {e}"))?;
        if pod.metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(format!("document {i}: metadata.name: Required value"));
        }
        let md = &mut pod.metadata;
        md.namespace.get_or_insert_with(|| "default".into());
        // Static pods are named <name>-<node>, as the kubelet names their mirror pods.
        let name = format!("{}-{}", md.name.clone().unwrap_or_default(), node_name);
        md.name = Some(name);
        let mut h = Sha256::new();
        h.update(path.to_string_lossy().as_bytes());
        h.update(&content);
        let hex = hex::encode(h.finalize());
        md.uid = Some(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]));
        let annotations = md.annotations.get_or_insert_with(Default::default);
        annotations.insert(CONFIG_SOURCE.into(), "file".into());
        annotations.insert("kubernetes.io/config.hash".into(), hex[..32].to_string());
        // What the apiserver would refuse, checked on the pod as the node will run it.
        let errs = super::validation::pod_errors(&pod);
        if !errs.is_empty() {
            return Err(format!("document {i}: invalid pod: {}", errs.join("; ")));
        }
        out.pods.push(SourcePod { pod, file: path.to_path_buf() });
    }
    Ok(out)
}

/// A ConfigMap or Secret document, which must have a name.
fn named_object<T: serde::de::DeserializeOwned>(
    i: usize,
    doc: serde_json::Value,
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<T, String> {
    let obj: T = serde_json::from_value(doc).map_err(|e| format!("document {i}: {e}"))?;
    if meta(&obj).name.as_deref().unwrap_or_default().is_empty() {
        return Err(format!("document {i}: metadata.name is required"));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_and_reports_bad_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: one\nspec:\n  containers:\n  - name: c\n    image: busybox\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: two\n  namespace: kube-system\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
        )
        .unwrap();
        std::fs::write(d.path().join("b.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad"},"spec":{"containers":[]}}"#).unwrap();
        std::fs::write(d.path().join("c.yaml"), "kind: Deployment\napiVersion: apps/v1\n").unwrap();
        std::fs::write(d.path().join(".hidden.yaml"), "garbage: [").unwrap();
        let s = read_dir(d.path(), "node1");
        let names: Vec<String> = s.pods.values().map(|p| full_name(&p.pod)).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"default/one-node1".to_string()));
        assert!(names.contains(&"kube-system/two-node1".to_string()));
        assert!(s.errors[&d.path().join("b.json")].contains("containers"));
        assert!(s.errors[&d.path().join("c.yaml")].contains("not a Pod"));
        // Content decides the UID: the same file read again gives the same pods.
        let again = read_dir(d.path(), "node1");
        assert_eq!(s.pods.keys().collect::<Vec<_>>(), again.pods.keys().collect::<Vec<_>>());
    }
}
