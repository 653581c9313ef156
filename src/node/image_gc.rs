//! Image garbage collection, as the kubelet's image manager does it: when the image
//! filesystem is fuller than the high threshold, unused images — not used by any container,
//! not pinned, older than the minimum age — are removed, least recently used first, until
//! usage is down to the low threshold. Under disk pressure every unused image may go.
use super::eviction::parse_duration;
use crate::cri::api::{ImageApi, RuntimeApi};
use crate::cri::v1 as cri;
use crate::util::time::now_ns;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// `[image_gc]` in the config file; the kubelet's flags of the same names override it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageGcConfig {
    /// Percent of the image filesystem in use that starts a collection (85; 100 turns it off).
    pub high_threshold_percent: Option<u8>,
    /// Percent a collection brings usage down to (80).
    pub low_threshold_percent: Option<u8>,
    /// Images younger than this (since first seen) are kept (2m).
    pub minimum_age: Option<String>,
    /// How often usage is checked (5m).
    pub period: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageGcSettings {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub minimum_age: Duration,
    pub period: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageGcError {
    #[error("image_gc: low threshold {low}% must be below the high threshold {high}% (both at most 100)")]
    Thresholds { low: u8, high: u8 },
    #[error("image_gc: {0}")]
    Duration(#[from] super::eviction::ThresholdError),
}

impl ImageGcConfig {
    pub fn settings(&self) -> Result<ImageGcSettings, ImageGcError> {
        let high = self.high_threshold_percent.unwrap_or(85);
        let low = self.low_threshold_percent.unwrap_or(80);
        if high > 100 || low >= high {
            return Err(ImageGcError::Thresholds { low, high });
        }
        let period = self.period.as_deref().map(parse_duration).transpose()?.unwrap_or(Duration::from_secs(300));
        let period = if period.is_zero() { Duration::from_secs(300) } else { period };
        Ok(ImageGcSettings {
            high_threshold_percent: high,
            low_threshold_percent: low,
            minimum_age: self.minimum_age.as_deref().map(parse_duration).transpose()?.unwrap_or(Duration::from_secs(120)),
            period,
        })
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    first_ns: i64,
    last_used_ns: i64,
}

/// What the collector remembers of each image between rounds.
#[derive(Default)]
pub struct ImageGc {
    seen: BTreeMap<String, Seen>,
}

/// An image that may be removed, with what ordering needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub size: u64,
    pub first_ns: i64,
    pub last_used_ns: i64,
}

/// Bytes to free for usage to come down to `low` percent, when it is at or above `high`.
pub fn bytes_to_free(used: u64, capacity: u64, high: u8, low: u8) -> u64 {
    if capacity == 0 || high >= 100 {
        return 0;
    }
    let percent = used as f64 * 100.0 / capacity as f64;
    if percent < high as f64 {
        return 0;
    }
    used.saturating_sub(capacity * low as u64 / 100)
}

impl ImageGc {
    /// Refresh what is in use and return the images that may go, least recently used first.
    async fn candidates(&mut self, runtime: &dyn RuntimeApi, images: &dyn ImageApi, min_age: Duration) -> Result<Vec<Candidate>, String> {
        let now = now_ns();
        let list = images.list_images(cri::ListImagesRequest { filter: None }).await.map_err(|e| e.message)?.images;
        let containers = runtime.list_containers(cri::ListContainersRequest { filter: None }).await.map_err(|e| e.message)?.containers;
        let mut in_use: BTreeSet<String> = BTreeSet::new();
        for c in &containers {
            in_use.insert(c.image_ref.clone());
            if let Some(spec) = &c.image {
                in_use.insert(spec.image.clone());
            }
        }
        let present: BTreeSet<String> = list.iter().map(|i| i.id.clone()).collect();
        self.seen.retain(|id, _| present.contains(id));
        let mut out = Vec::new();
        for img in list {
            let used = in_use.contains(&img.id) || img.repo_digests.iter().any(|d| in_use.contains(d)) || img.repo_tags.iter().any(|t| in_use.contains(t));
            let seen = self.seen.entry(img.id.clone()).or_insert(Seen { first_ns: now, last_used_ns: 0 });
            if used {
                seen.last_used_ns = now;
                continue;
            }
            if img.pinned || now - seen.first_ns < min_age.as_nanos() as i64 {
                continue;
            }
            out.push(Candidate { id: img.id, size: img.size, first_ns: seen.first_ns, last_used_ns: seen.last_used_ns });
        }
        out.sort_by_key(|c| (c.last_used_ns, c.first_ns));
        Ok(out)
    }

    /// Remove unused images until `want` bytes are freed (all of them when `want` is None).
    /// Returns the bytes freed and the images removed.
    pub async fn free(&mut self, runtime: &dyn RuntimeApi, images: &dyn ImageApi, want: Option<u64>, min_age: Duration) -> Result<(u64, Vec<String>), String> {
        let mut freed = 0u64;
        let mut removed = Vec::new();
        for c in self.candidates(runtime, images, min_age).await? {
            if want.map(|w| freed >= w).unwrap_or(false) {
                break;
            }
            match images.remove_image(cri::RemoveImageRequest { image: Some(cri::ImageSpec { image: c.id.clone(), ..Default::default() }) }).await {
                Ok(_) => {
                    tracing::info!(image = %c.id, size = c.size, "image garbage collected");
                    freed += c.size;
                    self.seen.remove(&c.id);
                    removed.push(c.id);
                }
                Err(e) => tracing::warn!(image = %c.id, "removing an unused image: {}", e.message),
            }
        }
        Ok((freed, removed))
    }

    /// One collection by the thresholds, measured on the image filesystem.
    pub async fn collect(&mut self, runtime: &dyn RuntimeApi, images: &dyn ImageApi, s: &ImageGcSettings) -> Result<Vec<String>, String> {
        let info = images.image_fs_info(cri::ImageFsInfoRequest {}).await.map_err(|e| e.message)?;
        let Some(mount) = info.image_filesystems.first().and_then(|f| f.fs_id.as_ref()).map(|f| f.mountpoint.clone()) else {
            return Ok(vec![]);
        };
        let Some(fs) = super::machine::fs(std::path::Path::new(&mount)) else { return Ok(vec![]) };
        let want = bytes_to_free(fs.capacity - fs.available, fs.capacity, s.high_threshold_percent, s.low_threshold_percent);
        // Keep the in-use bookkeeping fresh even when nothing has to go.
        if want == 0 {
            self.candidates(runtime, images, s.minimum_age).await?;
            return Ok(vec![]);
        }
        tracing::info!(mount, want, "image filesystem over {}%: collecting images", s.high_threshold_percent);
        let (freed, removed) = self.free(runtime, images, Some(want), s.minimum_age).await?;
        if freed < want {
            tracing::warn!(freed, want, "image garbage collection could not free enough space");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frees_down_to_the_low_threshold_only_above_the_high_one() {
        assert_eq!(bytes_to_free(84, 100, 85, 80), 0);
        assert_eq!(bytes_to_free(90, 100, 85, 80), 10);
        assert_eq!(bytes_to_free(90, 100, 100, 80), 0);
        assert_eq!(bytes_to_free(0, 0, 85, 80), 0);
    }

    #[test]
    fn settings_check_thresholds() {
        let s = ImageGcConfig::default().settings().unwrap();
        assert_eq!((s.high_threshold_percent, s.low_threshold_percent, s.minimum_age), (85, 80, Duration::from_secs(120)));
        let bad = ImageGcConfig { high_threshold_percent: Some(50), low_threshold_percent: Some(60), ..Default::default() };
        assert!(matches!(bad.settings(), Err(ImageGcError::Thresholds { .. })));
    }
}
