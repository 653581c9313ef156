//! Pushing hand-made (often hostile) images to the test registry over the distribution API,
//! so pulls can be tested against content no image builder would produce.
use sha2::{Digest as _, Sha256};

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// One layer to push: the blob as stored and the diff ID the config will claim for it.
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: String,
    pub diff_id: String,
}

impl Layer {
    /// A gzip layer whose diff ID is the true digest of `tar`.
    pub fn gzip_tar(tar: &[u8]) -> Layer {
        Layer { blob: gzip(tar), media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(), diff_id: digest(tar) }
    }
}

fn client() -> reqwest::Client {
    // The workspace builds reqwest with rustls but no default provider: pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Upload a blob (monolithic POST + PUT); returns its digest.
pub async fn push_blob(registry: &str, repo: &str, data: &[u8]) -> String {
    push_blob_as(registry, repo, data, None).await
}

fn authed(r: reqwest::RequestBuilder, auth: Option<&str>) -> reqwest::RequestBuilder {
    match auth {
        Some(a) => r.header("authorization", a),
        None => r,
    }
}

/// `push_blob` with an Authorization header value.
pub async fn push_blob_as(registry: &str, repo: &str, data: &[u8], auth: Option<&str>) -> String {
    let d = digest(data);
    let c = client();
    let r = authed(c.post(format!("http://{registry}/v2/{repo}/blobs/uploads/")), auth).send().await.expect("start upload");
    assert_eq!(r.status().as_u16(), 202, "start upload: {:?}", r.text().await);
    let loc = r.headers().get("location").expect("upload location").to_str().expect("location").to_string();
    let url = if loc.starts_with("http") { loc } else { format!("http://{registry}{loc}") };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = authed(c.put(format!("{url}{sep}digest={d}")), auth)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("finish upload");
    assert_eq!(r.status().as_u16(), 201, "finish upload: {:?}", r.text().await);
    d
}

pub async fn push_manifest(registry: &str, repo: &str, tag: &str, media_type: &str, data: &[u8]) -> String {
    push_manifest_as(registry, repo, tag, media_type, data, None).await
}

pub async fn push_manifest_as(registry: &str, repo: &str, tag: &str, media_type: &str, data: &[u8], auth: Option<&str>) -> String {
    let r = authed(client().put(format!("http://{registry}/v2/{repo}/manifests/{tag}")), auth)
        .header("content-type", media_type)
        .body(data.to_vec())
        .send()
        .await
        .expect("push manifest");
    assert_eq!(r.status().as_u16(), 201, "push manifest: {:?}", r.text().await);
    digest(data)
}

/// Push an OCI image made of `layers`; returns the manifest digest.
pub async fn push_image(registry: &str, repo: &str, tag: &str, layers: &[Layer]) -> String {
    push_image_as(registry, repo, tag, layers, None).await
}

/// `push_image` with an Authorization header value.
pub async fn push_image_as(registry: &str, repo: &str, tag: &str, layers: &[Layer], auth: Option<&str>) -> String {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).expect("config");
    let config_digest = push_blob_as(registry, repo, &config, auth).await;
    let mut descs = vec![];
    for l in layers {
        let d = push_blob_as(registry, repo, &l.blob, auth).await;
        descs.push(serde_json::json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    });
    let m = serde_json::to_vec(&manifest).expect("manifest");
    push_manifest_as(registry, repo, tag, "application/vnd.oci.image.manifest.v1+json", &m, auth).await
}

/// A tar archive built entry by entry, including entries tar::Builder refuses to write.
pub struct TarBuilder {
    out: Vec<u8>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder { out: vec![] }
    }

    fn header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        {
            // Write the raw name so that paths like "../x" or "/x" are kept as given.
            let raw = h.as_ustar_mut().expect("ustar");
            let bytes = name.as_bytes();
            assert!(bytes.len() < 100, "name too long for this helper");
            raw.name = [0; 100];
            raw.name[..bytes.len()].copy_from_slice(bytes);
            if let Some(l) = link {
                let lb = l.as_bytes();
                raw.linkname = [0; 100];
                raw.linkname[..lb.len()].copy_from_slice(lb);
            }
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        h
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        let h = Self::header(name, tar::EntryType::Regular, data.len() as u64, None);
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A regular file with mode 0755.
    pub fn executable(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Self::header(name, tar::EntryType::Regular, data.len() as u64, None);
        h.set_mode(0o755);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        self.out.extend_from_slice(Self::header(name, tar::EntryType::Directory, 0, None).as_bytes());
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.out.extend_from_slice(Self::header(name, tar::EntryType::Symlink, 0, Some(target)).as_bytes());
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.out.extend_from_slice(Self::header(name, tar::EntryType::Link, 0, Some(target)).as_bytes());
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}
