//! Pulling an image: resolve the manifest (through mirrors), pick the node's platform from an
//! index, then fetch every layer concurrently, unpacking each while it downloads. Every blob
//! is verified against its digest, every snapshot against its diff ID, before anything is
//! recorded; a download cut off midway resumes from the bytes already on disk.
use super::error::ImageError;
use super::meta::{ImageRecord, LayerRecord};
use super::oci::{self, Descriptor, Document};
use super::reference::Reference;
use super::registry::{Credentials, RegistryError, Source};
use super::snapshot::TempSnapshot;
use super::store::ImageStore;
use super::unpack::{unpack_layer, Compression, UnpackedLayer};
use crate::util::digest::{Digest, HashingReader};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use std::io::{self, Read};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How many layers of one image are fetched and unpacked at once.
const LAYER_CONCURRENCY: usize = 3;

/// Progress of a pull, for progress bars.
#[derive(Clone, Debug)]
pub enum PullEvent {
    /// The manifest is known: this many layers, this many bytes in all.
    Resolved { layers: usize, total: u64 },
    /// Bytes of a layer fetched so far (`done` counts resumed bytes too).
    Layer { digest: String, done: u64, total: u64, state: LayerState },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerState {
    Downloading,
    /// Already on the node; nothing fetched.
    Exists,
    Done,
}

pub type ProgressTx = mpsc::UnboundedSender<PullEvent>;

fn registry_err(image: &Reference) -> impl FnOnce(RegistryError) -> ImageError + '_ {
    move |source| ImageError::Registry { image: image.to_string(), source }
}

fn send(progress: &Option<ProgressTx>, ev: PullEvent) {
    if let Some(p) = progress {
        let _ = p.send(ev);
    }
}

fn parse_digest(what: &str, d: &str) -> Result<Digest, ImageError> {
    Digest::parse(d).map_err(|e| ImageError::InvalidArgument(format!("{what}: {e}")))
}

impl ImageStore {
    /// Pull `image` and record it; returns the image record.
    #[tracing::instrument(skip(self, creds, progress))]
    pub async fn pull(&self, image: &str, creds: &Credentials, progress: Option<ProgressTx>) -> Result<ImageRecord, ImageError> {
        let r: Reference = image.parse()?;
        let (src, top) = self.registry.fetch_manifest(&r, creds).await.map_err(registry_err(&r))?;
        let top_digest = parse_digest("manifest digest", &top.digest)?;
        let (manifest, manifest_digest, manifest_bytes) = match oci::parse_document(&top.bytes, &top.media_type)? {
            Document::Manifest(m) => (m, top_digest.clone(), top.bytes.clone()),
            Document::Index(idx) => {
                let want = oci::host_platform();
                let d = oci::select_platform(&idx, &want).ok_or_else(|| ImageError::NoMatchingPlatform(format!("{}/{}", want.os, want.architecture)))?;
                let m = self.registry.fetch_manifest_by_digest(&src, &d.digest).await.map_err(registry_err(&r))?;
                match oci::parse_document(&m.bytes, &m.media_type)? {
                    Document::Manifest(mm) => (mm, parse_digest("manifest digest", &m.digest)?, m.bytes),
                    Document::Index(_) => return Err(ImageError::InvalidArgument("nested image indexes are not supported".into())),
                }
            }
        };

        // From here on content is written; hold off garbage collection until it is recorded.
        let _gc = self.gc_lock.read().await;
        self.content.write_verified(&top_digest, &top.bytes)?;
        self.content.write_verified(&manifest_digest, &manifest_bytes)?;

        let config_digest = parse_digest("config digest", &manifest.config.digest)?;
        let config = self.fetch_config(&r, &src, &manifest.config, &config_digest).await?;
        let diff_ids = diff_ids(&config, manifest.layers.len())?;

        let total: u64 = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum();
        send(&progress, PullEvent::Resolved { layers: manifest.layers.len(), total });
        let work: Vec<_> = manifest.layers.iter().zip(diff_ids).map(|(desc, diff_id)| self.ensure_layer(&r, &src, desc, diff_id, progress.clone())).collect();
        let layers: Vec<LayerRecord> = futures_util::stream::iter(work).buffered(LAYER_CONCURRENCY).try_collect().await?;

        let rec = ImageRecord {
            id: config_digest,
            repo_tags: r.tagged().into_iter().collect(),
            repo_digests: vec![r.digested(top_digest.as_str())],
            manifest_digest,
            size: manifest.config.size.max(0) as u64 + total,
            layers,
            pinned: false,
            created_at: now_secs(),
        };
        let rec = self.meta().upsert(rec).map_err(ImageError::io(self.root.join("images.json")))?;
        self.invalidate_usage();
        tracing::info!(image = %r, id = %rec.id, "pulled");
        Ok(rec)
    }

    async fn fetch_config(&self, r: &Reference, src: &Source, desc: &Descriptor, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        if self.content.has(digest) {
            return Ok(self.content.read(digest)?);
        }
        if desc.size < 0 || desc.size as u64 > oci::MAX_DOCUMENT {
            return Err(ImageError::InvalidArgument(format!("image config of {} bytes is too large", desc.size)));
        }
        let (_, mut stream) = self.registry.fetch_blob(src, digest.as_str(), 0).await.map_err(registry_err(r))?;
        let mut data = Vec::with_capacity(desc.size as usize);
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.map_err(registry_err(r))?);
            if data.len() as u64 > desc.size as u64 {
                break;
            }
        }
        if data.len() as u64 != desc.size as u64 {
            return Err(ImageError::SizeMismatch { what: format!("config {digest}"), expected: desc.size as u64, actual: data.len() as u64 });
        }
        self.content.write_verified(digest, &data)?;
        Ok(data)
    }

    /// Make sure the snapshot of one layer exists: reuse it, unpack a stored blob, or
    /// download and unpack at once. Concurrent pulls of the same layer wait for each other.
    async fn ensure_layer(
        &self,
        r: &Reference,
        src: &Source,
        desc: &Descriptor,
        diff_id: Digest,
        progress: Option<ProgressTx>,
    ) -> Result<LayerRecord, ImageError> {
        let digest = parse_digest("layer digest", &desc.digest)?;
        let compression = Compression::from_media_type(&desc.media_type)
            .ok_or_else(|| ImageError::InvalidArgument(format!("layer {digest}: unsupported media type {:?}", desc.media_type)))?;
        if desc.size < 0 {
            return Err(ImageError::InvalidArgument(format!("layer {digest}: negative size")));
        }
        let size = desc.size as u64;
        let record = LayerRecord { digest: digest.clone(), media_type: desc.media_type.clone(), size, diff_id: diff_id.clone() };
        let _guard = self.layer_locks.lock(diff_id.as_str()).await;
        if self.snapshots.exists(&diff_id) {
            send(&progress, PullEvent::Layer { digest: digest.to_string(), done: size, total: size, state: LayerState::Exists });
            return Ok(record);
        }
        let (tmp, unpacked) = if self.content.has(&digest) {
            send(&progress, PullEvent::Layer { digest: digest.to_string(), done: size, total: size, state: LayerState::Exists });
            self.unpack_stored(&digest, compression).await?
        } else {
            self.download_and_unpack(r, src, &digest, size, compression, &progress).await?
        };
        if unpacked.diff_id != diff_id.as_str() {
            self.content.discard_ingest(&digest);
            return Err(ImageError::DigestMismatch { what: format!("layer {digest} (uncompressed)"), expected: diff_id.to_string(), actual: unpacked.diff_id });
        }
        if !self.content.has(&digest) {
            self.content.commit_ingest(&digest)?;
        }
        self.snapshots.commit(tmp, &diff_id).map_err(ImageError::io(self.snapshots.path(&diff_id)))?;
        send(&progress, PullEvent::Layer { digest: digest.to_string(), done: size, total: size, state: LayerState::Done });
        Ok(record)
    }

    /// Unpack a blob that is already in the content store.
    async fn unpack_stored(&self, digest: &Digest, compression: Compression) -> Result<(TempSnapshot, UnpackedLayer), ImageError> {
        let path = self.content.blob_path(digest);
        let tmp = self.snapshots.prepare().map_err(ImageError::io(self.root.join("snapshots")))?;
        let d = digest.to_string();
        tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path).map_err(ImageError::io(&path))?;
            let unpacked = unpack_layer(io::BufReader::new(f), compression, &tmp.fs()).map_err(|source| ImageError::Unpack { digest: d, source })?;
            Ok((tmp, unpacked))
        })
        .await
        .map_err(|e| ImageError::Internal(e.to_string()))?
    }

    /// Download a layer into the ingest area while a blocking worker decompresses and unpacks
    /// the same bytes; verify the blob digest and size at the end.
    async fn download_and_unpack(
        &self,
        r: &Reference,
        src: &Source,
        digest: &Digest,
        size: u64,
        compression: Compression,
        progress: &Option<ProgressTx>,
    ) -> Result<(TempSnapshot, UnpackedLayer), ImageError> {
        let ingest = self.content.ingest_path(digest);
        let mut offset = std::fs::metadata(&ingest).map(|m| m.len()).unwrap_or(0);
        if offset >= size {
            offset = 0; // the partial file cannot be a prefix of this blob
        }
        if offset > 0 {
            tracing::info!(%digest, offset, "resuming layer download");
        }
        let (_, mut stream) = self.registry.fetch_blob(src, digest.as_str(), offset).await.map_err(registry_err(r))?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(offset > 0)
            .truncate(offset == 0)
            .open(&ingest)
            .await
            .map_err(ImageError::io(&ingest))?;

        let tmp = self.snapshots.prepare().map_err(ImageError::io(self.root.join("snapshots")))?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(32);
        let worker = spawn_unpacker(ingest.clone(), offset, rx, compression, tmp, digest.to_string());

        let mut done = offset;
        let download: Result<(), ImageError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(registry_err(r))?;
                file.write_all(&chunk).await.map_err(ImageError::io(&ingest))?;
                done += chunk.len() as u64;
                send(progress, PullEvent::Layer { digest: digest.to_string(), done, total: size, state: LayerState::Downloading });
                if done > size {
                    return Err(ImageError::SizeMismatch { what: format!("layer {digest}"), expected: size, actual: done });
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // the unpacker stopped; its error says why
                }
            }
            file.flush().await.map_err(ImageError::io(&ingest))
        }
        .await;
        if let Err(e) = &download {
            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
        }
        drop(tx);
        let unpacked = worker.await.map_err(|e| ImageError::Internal(e.to_string()))?;
        if let Err(e) = download {
            if matches!(e, ImageError::SizeMismatch { .. }) {
                self.content.discard_ingest(digest);
            }
            return Err(e); // the partial download stays for a later resume
        }
        let (tmp, unpacked, actual, n) = match unpacked {
            Ok(v) => v,
            Err(e) => {
                self.content.discard_ingest(digest);
                return Err(e);
            }
        };
        if &actual != digest || n != size {
            self.content.discard_ingest(digest);
            if &actual != digest {
                return Err(ImageError::DigestMismatch { what: format!("layer {digest}"), expected: digest.to_string(), actual: actual.to_string() });
            }
            return Err(ImageError::SizeMismatch { what: format!("layer {digest}"), expected: size, actual: n });
        }
        Ok((tmp, unpacked))
    }
}

type UnpackResult = Result<(TempSnapshot, UnpackedLayer, Digest, u64), ImageError>;

/// Unpack what arrives on `rx` (after the first `offset` bytes, which come from the partial
/// file at `ingest`), hashing the compressed stream as it goes.
fn spawn_unpacker(
    ingest: PathBuf,
    offset: u64,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    compression: Compression,
    tmp: TempSnapshot,
    digest: String,
) -> tokio::task::JoinHandle<UnpackResult> {
    tokio::task::spawn_blocking(move || {
        let prefix: Box<dyn Read + Send> = if offset > 0 {
            let f = std::fs::File::open(&ingest).map_err(ImageError::io(&ingest))?;
            Box::new(io::BufReader::new(f).take(offset))
        } else {
            Box::new(io::empty())
        };
        let mut hashing = HashingReader::new(prefix.chain(ChannelReader { rx, current: Bytes::new() }));
        let unpacked = unpack_layer(&mut hashing, compression, &tmp.fs()).map_err(|source| ImageError::Unpack { digest: digest.clone(), source })?;
        let (actual, n) = hashing
            .finish()
            .map_err(|e| ImageError::Unpack { digest, source: super::unpack::UnpackError::Io { path: PathBuf::from("<download>"), source: e } })?;
        Ok((tmp, unpacked, actual, n))
    })
}

/// A blocking reader over chunks sent from the async download loop.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The diff IDs of the config, one per layer.
pub(super) fn diff_ids(config: &[u8], layers: usize) -> Result<Vec<Digest>, ImageError> {
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let c: Config = serde_json::from_slice(config).map_err(|e| ImageError::InvalidArgument(format!("malformed image config: {e}")))?;
    if c.rootfs.diff_ids.len() != layers {
        return Err(ImageError::InvalidArgument(format!("image config lists {} diff IDs for {layers} layers", c.rootfs.diff_ids.len())));
    }
    c.rootfs.diff_ids.iter().map(|d| parse_digest("diff ID", d)).collect()
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
