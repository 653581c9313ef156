//! The JSON documents of the OCI image spec and Docker schema 2 that a pull reads: manifests,
//! indexes (manifest lists) and descriptors. Image configs use oci-spec's `ImageConfiguration`.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Largest manifest or config we accept (they are small JSON documents).
pub const MAX_DOCUMENT: u64 = 8 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// What a fetched manifest document turned out to be.
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("unsupported manifest: Docker schema 1 images are not supported")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("malformed manifest: {0}")]
    Malformed(String),
}

/// Parse a manifest or index. `media_type` is the Content-Type the registry gave (may be empty);
/// the document's own mediaType field wins when present.
pub fn parse_document(bytes: &[u8], media_type: &str) -> Result<Document, DocumentError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| DocumentError::Malformed(e.to_string()))?;
    let declared = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or(media_type);
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) || declared == DOCKER_SCHEMA1 {
        return Err(DocumentError::Schema1);
    }
    let is_index = match declared {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // No media type anywhere: decide by shape, as the OCI spec allows.
        "" | "application/json" => v.get("manifests").is_some(),
        other => return Err(DocumentError::UnsupportedMediaType(other.to_string())),
    };
    let bad = |e: serde_json::Error| DocumentError::Malformed(e.to_string());
    if is_index {
        Ok(Document::Index(serde_json::from_value(v).map_err(bad)?))
    } else {
        let m: Manifest = serde_json::from_value(v).map_err(bad)?;
        Ok(Document::Manifest(m))
    }
}

/// The node's platform in OCI terms.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform { architecture: architecture.to_string(), os: "linux".to_string(), variant: variant.map(str::to_string) }
}

/// Pick the manifest for `want` from an index: same os and architecture; a matching variant
/// is preferred, an entry without a variant is accepted (arm64 images rarely state "v8").
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let candidates = index.manifests.iter().filter(|d| d.platform.as_ref().is_some_and(|p| p.os == want.os && p.architecture == want.architecture));
    let mut fallback = None;
    for d in candidates {
        let variant = d.platform.as_ref().and_then(|p| p.variant.clone());
        if variant == want.variant {
            return Some(d);
        }
        if variant.is_none() || fallback.is_none() {
            fallback = Some(d);
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, digest: char) -> serde_json::Value {
        let mut p = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            p["variant"] = v.into();
        }
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", digest.to_string().repeat(64)), "size": 1, "platform": p})
    }

    #[test]
    fn selects_host_platform_from_index() {
        let doc = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [entry("arm64", None, 'a'), entry("amd64", None, 'b'), entry("arm", Some("v7"), 'c')]});
        let Document::Index(idx) = parse_document(doc.to_string().as_bytes(), "").unwrap() else { panic!() };
        let amd = Platform { architecture: "amd64".into(), os: "linux".into(), variant: None };
        assert!(select_platform(&idx, &amd).unwrap().digest.contains("bbbb"));
        let arm64 = Platform { architecture: "arm64".into(), os: "linux".into(), variant: Some("v8".into()) };
        assert!(select_platform(&idx, &arm64).unwrap().digest.contains("aaaa"));
        let s390 = Platform { architecture: "s390x".into(), os: "linux".into(), variant: None };
        assert!(select_platform(&idx, &s390).is_none());
    }

    #[test]
    fn rejects_schema1_and_unknown() {
        assert!(matches!(parse_document(br#"{"schemaVersion":1}"#, ""), Err(DocumentError::Schema1)));
        assert!(matches!(parse_document(br#"{"schemaVersion":2,"mediaType":"text/html"}"#, ""), Err(DocumentError::UnsupportedMediaType(_))));
        assert!(matches!(parse_document(b"not json", ""), Err(DocumentError::Malformed(_))));
    }
}
