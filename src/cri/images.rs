//! The CRI ImageService over the image store: CRI messages in, store operations, CRI
//! messages out.
use super::api::{CriError, CriResult, ImageApi};
use crate::cri::v1 as cri;
use crate::image::meta::ImageRecord;
use crate::image::reference::Reference;
use crate::image::registry::Credentials;
use crate::image::store::ImageStore;
use std::sync::Arc;

pub struct CriImages {
    store: Arc<ImageStore>,
    /// Normalised `name:tag` references that are always reported pinned (the sandbox image).
    pinned: Vec<String>,
}

impl CriImages {
    pub fn new(store: Arc<ImageStore>, pinned: &[String]) -> Result<Self, CriError> {
        let pinned = pinned
            .iter()
            .map(|p| {
                let r: Reference = p.parse().map_err(|e| CriError::invalid(format!("pinned image {p:?}: {e}")))?;
                Ok(r.tagged().unwrap_or_else(|| r.to_string()))
            })
            .collect::<Result<_, CriError>>()?;
        Ok(CriImages { store, pinned })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    fn to_cri(&self, rec: &ImageRecord) -> cri::Image {
        let user = self.store.config(rec).ok().and_then(|c| c.config().as_ref().and_then(|cc| cc.user().clone())).unwrap_or_default();
        let (uid, username) = split_user(&user);
        cri::Image {
            id: rec.id.to_string(),
            repo_tags: rec.repo_tags.clone(),
            repo_digests: rec.repo_digests.clone(),
            size: rec.size,
            uid: uid.map(|value| cri::Int64Value { value }),
            username,
            spec: Some(cri::ImageSpec { image: rec.id.to_string(), ..Default::default() }),
            pinned: rec.pinned || rec.repo_tags.iter().any(|t| self.pinned.contains(t)),
        }
    }

    fn verbose_info(&self, rec: &ImageRecord) -> CriResult<String> {
        let config: serde_json::Value =
            serde_json::from_slice(&self.store.config_json(rec)?).map_err(|e| CriError::new(tonic::Code::Internal, e.to_string()))?;
        let info = serde_json::json!({
            "id": rec.id,
            "manifestDigest": rec.manifest_digest,
            "size": rec.size,
            "pinned": rec.pinned,
            "layers": rec.layers,
            "snapshots": self.store.layer_dirs(rec),
            "imageSpec": config,
        });
        serde_json::to_string(&info).map_err(|e| CriError::new(tonic::Code::Internal, e.to_string()))
    }
}

/// The image's user as CRI reports it: a numeric uid, or a name to look up at create time.
fn split_user(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

fn image_name(spec: &Option<cri::ImageSpec>) -> CriResult<&str> {
    match spec.as_ref().map(|s| s.image.as_str()) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(CriError::invalid("image spec is missing the image name")),
    }
}

fn credentials(auth: Option<cri::AuthConfig>) -> Credentials {
    let a = auth.unwrap_or_default();
    Credentials { username: a.username, password: a.password, auth: a.auth, identity_token: a.identity_token, registry_token: a.registry_token }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[tonic::async_trait]
impl ImageApi for CriImages {
    async fn list_images(&self, req: cri::ListImagesRequest) -> CriResult<cri::ListImagesResponse> {
        let wanted = req.filter.and_then(|f| f.image).map(|s| s.image).filter(|s| !s.is_empty());
        let records = match wanted {
            Some(w) => self.store.resolve(&w)?.into_iter().collect(),
            None => self.store.list(),
        };
        Ok(cri::ListImagesResponse { images: records.iter().map(|r| self.to_cri(r)).collect() })
    }

    async fn image_status(&self, req: cri::ImageStatusRequest) -> CriResult<cri::ImageStatusResponse> {
        let name = image_name(&req.image)?;
        let Some(rec) = self.store.resolve(name)? else {
            return Ok(cri::ImageStatusResponse::default());
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            info.insert("info".to_string(), self.verbose_info(&rec)?);
        }
        Ok(cri::ImageStatusResponse { image: Some(self.to_cri(&rec)), info })
    }

    async fn pull_image(&self, req: cri::PullImageRequest) -> CriResult<cri::PullImageResponse> {
        let name = image_name(&req.image)?;
        let rec = self.store.pull(name, &credentials(req.auth), None).await?;
        Ok(cri::PullImageResponse { image_ref: rec.id.to_string() })
    }

    async fn remove_image(&self, req: cri::RemoveImageRequest) -> CriResult<cri::RemoveImageResponse> {
        let name = image_name(&req.image)?;
        self.store.remove(name).await?;
        Ok(cri::RemoveImageResponse {})
    }

    async fn image_fs_info(&self, _req: cri::ImageFsInfoRequest) -> CriResult<cri::ImageFsInfoResponse> {
        let u = self.store.usage().await?;
        let fs = cri::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: self.store.root().display().to_string() }),
            used_bytes: Some(cri::UInt64Value { value: u.used_bytes }),
            inodes_used: Some(cri::UInt64Value { value: u.inodes_used }),
        };
        Ok(cri::ImageFsInfoResponse { image_filesystems: vec![fs], container_filesystems: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_split_like_kubelet_expects() {
        assert_eq!(split_user(""), (None, String::new()));
        assert_eq!(split_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(split_user("www-data:50"), (None, "www-data".to_string()));
    }
}
