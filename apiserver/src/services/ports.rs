//! Node port allocation: `--service-node-port-range` (default 30000-32767) as a bitmap, one bit
//! per port, persisted as one record in the store (upstream's RangeAllocation under
//! `ranges/servicenodeports`) and changed only by compare-and-swap on its revision. Every
//! allocation and release is a read-modify-CAS round, so restarts and several servers on one
//! etcd never hand out a port twice. Automatic allocation prefers the upper band of the range
//! (the same static/dynamic split as cluster IPs). The record's storage is behind
//! [`RangeStore`]; this module knows the bitmap and the retry loop.

use std::fmt;

use async_trait::async_trait;

/// A range of node ports, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub base: u16,
    pub size: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid port range {0:?}: want FROM-TO (e.g. 30000-32767)")]
pub struct RangeSyntax(pub String);

impl PortRange {
    /// "30000-32767", "30000+2767" or a single port.
    pub fn parse(s: &str) -> Result<PortRange, RangeSyntax> {
        let bad = || RangeSyntax(s.to_string());
        let s = s.trim();
        let (lo, hi) = if let Some((a, b)) = s.split_once('-') {
            let lo: u16 = a.trim().parse().map_err(|_| bad())?;
            (lo, b.trim().parse::<u16>().map_err(|_| bad())?)
        } else if let Some((a, b)) = s.split_once('+') {
            let lo: u16 = a.trim().parse().map_err(|_| bad())?;
            (lo, lo.checked_add(b.trim().parse::<u16>().map_err(|_| bad())?).ok_or_else(bad)?)
        } else {
            let p: u16 = s.parse().map_err(|_| bad())?;
            (p, p)
        };
        if lo == 0 || hi < lo {
            return Err(bad());
        }
        Ok(PortRange { base: lo, size: hi - lo + 1 })
    }

    pub fn contains(&self, port: i32) -> bool {
        (self.base as i32..self.base as i32 + self.size as i32).contains(&port)
    }

    fn offset(&self, port: i32) -> usize {
        (port - self.base as i32) as usize
    }

    /// Upstream's static band of a port range: min(max(16, size/32), 128).
    pub fn static_band(&self) -> usize {
        let size = self.size as usize;
        if size <= 16 {
            return 0;
        }
        (size / 32).clamp(16, 128)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.base, self.base as u32 + self.size as u32 - 1)
    }
}

/// Why a port could not be allocated, in upstream's words.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("range is full")]
    Full,
    #[error("provided port is already allocated")]
    Allocated,
    #[error("provided port is not in the valid range. The range of valid ports is {0}")]
    NotInRange(String),
    #[error("{0}")]
    Store(String),
}

/// The persisted bitmap: which ports of `range` are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub range: PortRange,
    bits: Vec<u8>,
}

impl Bitmap {
    pub fn empty(range: PortRange) -> Self {
        Bitmap { range, bits: vec![0; (range.size as usize).div_ceil(8)] }
    }

    pub fn has(&self, port: i32) -> bool {
        self.range.contains(port) && {
            let o = self.range.offset(port);
            self.bits[o / 8] & (1 << (o % 8)) != 0
        }
    }

    pub fn set(&mut self, port: i32) {
        if self.range.contains(port) {
            let o = self.range.offset(port);
            self.bits[o / 8] |= 1 << (o % 8);
        }
    }

    pub fn clear(&mut self, port: i32) {
        if self.range.contains(port) {
            let o = self.range.offset(port);
            self.bits[o / 8] &= !(1 << (o % 8));
        }
    }

    /// The taken ports.
    pub fn ports(&self) -> impl Iterator<Item = i32> + '_ {
        (0..self.range.size as i32).map(|o| self.range.base as i32 + o).filter(|p| self.has(*p))
    }

    /// A free port: the upper (dynamic) band from a random start, then the lower one.
    fn next_free(&self) -> Option<i32> {
        let size = self.range.size as usize;
        let split = self.range.static_band();
        for (lo, hi) in [(split, size), (0, split)] {
            let len = hi - lo;
            if len == 0 {
                continue;
            }
            let start = (uuid::Uuid::new_v4().as_u128() % len as u128) as usize;
            for i in 0..len {
                let port = self.range.base as i32 + (lo + (start + i) % len) as i32;
                if !self.has(port) {
                    return Some(port);
                }
            }
        }
        None
    }

    /// The record as stored: upstream's RangeAllocation shape, the bitmap in base64.
    pub fn encode(&self) -> Vec<u8> {
        use base64::Engine;
        let record = serde_json::json!({
            "kind": "RangeAllocation", "apiVersion": "v1",
            "metadata": {"name": "servicenodeports"},
            "range": self.range.to_string(),
            "data": base64::engine::general_purpose::STANDARD.encode(&self.bits),
        });
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// Reads a stored record into `range`: ports are kept by number, those outside dropped
    /// (the flag may have changed since the record was written).
    pub fn decode(bytes: &[u8], range: PortRange) -> Result<Bitmap, String> {
        use base64::Engine;
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let stored = PortRange::parse(v.get("range").and_then(|r| r.as_str()).unwrap_or_default()).map_err(|e| e.to_string())?;
        let bits = base64::engine::general_purpose::STANDARD.decode(v.get("data").and_then(|d| d.as_str()).unwrap_or_default()).map_err(|e| e.to_string())?;
        let mut old = Bitmap::empty(stored);
        let n = old.bits.len().min(bits.len());
        old.bits[..n].copy_from_slice(&bits[..n]);
        if stored == range {
            return Ok(old);
        }
        let mut out = Bitmap::empty(range);
        for p in old.ports() {
            out.set(p);
        }
        Ok(out)
    }
}

/// Where the bitmap is kept: one record with a revision.
#[async_trait]
pub trait RangeStore: Send + Sync {
    /// The record and its revision; None when it was never written.
    async fn load(&self) -> Result<Option<(Vec<u8>, i64)>, String>;
    /// Writes the record if its revision is still `revision` (None: only if it does not exist).
    /// Ok(false) when another writer came first.
    async fn save(&self, record: Vec<u8>, revision: Option<i64>) -> Result<bool, String>;
}

/// What to allocate for one port of a Service: a given port or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Port(i32),
    Any,
}

/// The node port allocator of one range over a [`RangeStore`].
pub struct PortAllocator {
    pub range: PortRange,
    store: Box<dyn RangeStore>,
}

impl PortAllocator {
    pub fn new(range: PortRange, store: Box<dyn RangeStore>) -> Self {
        PortAllocator { range, store }
    }

    /// Runs `change` on the current bitmap and stores the result, again from a fresh read
    /// whenever another writer came first.
    pub async fn update<T>(&self, mut change: impl FnMut(&mut Bitmap) -> Result<T, PortError>) -> Result<T, PortError> {
        loop {
            let loaded = self.store.load().await.map_err(PortError::Store)?;
            let (mut bitmap, revision) = match &loaded {
                Some((bytes, rev)) => (Bitmap::decode(bytes, self.range).map_err(PortError::Store)?, Some(*rev)),
                None => (Bitmap::empty(self.range), None),
            };
            let before = bitmap.clone();
            let out = change(&mut bitmap)?;
            if bitmap == before && loaded.is_some() {
                return Ok(out);
            }
            if self.store.save(bitmap.encode(), revision).await.map_err(PortError::Store)? {
                return Ok(out);
            }
        }
    }

    /// Allocates all of `wants` at once, or none: the ports, or the index of the first that
    /// failed and why. With `dry_run`, checks without storing.
    pub async fn allocate(&self, wants: &[Want], dry_run: bool) -> Result<Vec<i32>, (usize, PortError)> {
        for (i, w) in wants.iter().enumerate() {
            if let Want::Port(p) = w {
                if !self.range.contains(*p) {
                    return Err((i, PortError::NotInRange(self.range.to_string())));
                }
            }
        }
        let mut failed = None;
        let run = |bitmap: &mut Bitmap| -> Result<Vec<i32>, PortError> {
            let mut out = vec![];
            for (i, w) in wants.iter().enumerate() {
                let port = match w {
                    Want::Port(p) if bitmap.has(*p) => {
                        failed = Some(i);
                        return Err(PortError::Allocated);
                    }
                    Want::Port(p) => *p,
                    Want::Any => match bitmap.next_free() {
                        Some(p) => p,
                        None => {
                            failed = Some(i);
                            return Err(PortError::Full);
                        }
                    },
                };
                bitmap.set(port);
                out.push(port);
            }
            Ok(out)
        };
        if dry_run {
            let loaded = self.store.load().await.map_err(|e| (0, PortError::Store(e)))?;
            let mut bitmap = match loaded {
                Some((bytes, _)) => Bitmap::decode(&bytes, self.range).map_err(|e| (0, PortError::Store(e)))?,
                None => Bitmap::empty(self.range),
            };
            let mut run = run;
            return run(&mut bitmap).map_err(|e| (failed.unwrap_or(0), e));
        }
        let result = self.update(run).await;
        result.map_err(|e| (failed.unwrap_or(0), e))
    }

    /// Frees `ports` (those outside the range or not taken are ignored).
    pub async fn release(&self, ports: &[i32]) -> Result<(), PortError> {
        if ports.is_empty() {
            return Ok(());
        }
        self.update(|b| {
            for p in ports {
                b.clear(*p);
            }
            Ok(())
        })
        .await
    }

    /// The bitmap as stored now, with its revision (None: never written).
    pub async fn load(&self) -> Result<(Bitmap, Option<i64>), PortError> {
        match self.store.load().await.map_err(PortError::Store)? {
            Some((bytes, rev)) => Ok((Bitmap::decode(&bytes, self.range).map_err(PortError::Store)?, Some(rev))),
            None => Ok((Bitmap::empty(self.range), None)),
        }
    }

    /// Stores `bitmap` if the record is still at `revision`; false when it changed meanwhile.
    pub async fn store_at(&self, bitmap: &Bitmap, revision: Option<i64>) -> Result<bool, PortError> {
        self.store.save(bitmap.encode(), revision).await.map_err(PortError::Store)
    }

    /// The bitmap as stored now.
    pub async fn snapshot(&self) -> Result<Bitmap, PortError> {
        match self.store.load().await.map_err(PortError::Store)? {
            Some((bytes, _)) => Bitmap::decode(&bytes, self.range).map_err(PortError::Store),
            None => Ok(Bitmap::empty(self.range)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A record in memory with a revision, yielding inside each call so writers interleave.
    #[derive(Default, Clone)]
    struct FakeStore(Arc<Mutex<Option<Record>>>);

    /// A stored record and its revision.
    type Record = (Vec<u8>, i64);

    #[async_trait]
    impl RangeStore for FakeStore {
        async fn load(&self) -> Result<Option<(Vec<u8>, i64)>, String> {
            tokio::task::yield_now().await;
            Ok(self.0.lock().unwrap().clone())
        }
        async fn save(&self, record: Vec<u8>, revision: Option<i64>) -> Result<bool, String> {
            tokio::task::yield_now().await;
            let mut r = self.0.lock().unwrap();
            let current = r.as_ref().map(|(_, rev)| *rev);
            if current != revision {
                return Ok(false);
            }
            *r = Some((record, current.unwrap_or(0) + 1));
            Ok(true)
        }
    }

    fn range() -> PortRange {
        PortRange::parse("30000-32767").unwrap()
    }

    #[test]
    fn ranges_parse_as_upstreams_flag() {
        assert_eq!(range(), PortRange { base: 30000, size: 2768 });
        assert_eq!(range().to_string(), "30000-32767");
        assert_eq!(PortRange::parse("30000+10").unwrap().to_string(), "30000-30010");
        assert!(PortRange::parse("32767-30000").is_err());
        assert_eq!(range().static_band(), 86);
    }

    #[tokio::test]
    async fn explicit_ports_are_refused_when_taken_or_out_of_range() {
        let a = PortAllocator::new(range(), Box::new(FakeStore::default()));
        assert_eq!(a.allocate(&[Want::Port(30080)], false).await.unwrap(), [30080]);
        assert_eq!(a.allocate(&[Want::Port(30080)], false).await, Err((0, PortError::Allocated)));
        let err = a.allocate(&[Want::Any, Want::Port(8080)], false).await.unwrap_err();
        assert_eq!(err.0, 1);
        assert_eq!(err.1.to_string(), "provided port is not in the valid range. The range of valid ports is 30000-32767");
        a.release(&[30080]).await.unwrap();
        assert_eq!(a.allocate(&[Want::Port(30080)], false).await.unwrap(), [30080]);
    }

    #[tokio::test]
    async fn a_failed_batch_allocates_nothing() {
        let store = FakeStore::default();
        let a = PortAllocator::new(range(), Box::new(store.clone()));
        a.allocate(&[Want::Port(30001)], false).await.unwrap();
        assert_eq!(a.allocate(&[Want::Port(30002), Want::Port(30001)], false).await, Err((1, PortError::Allocated)));
        assert!(!a.snapshot().await.unwrap().has(30002));
    }

    #[tokio::test]
    async fn automatic_ports_prefer_the_upper_band_and_the_range_fills_up() {
        let small = PortRange::parse("30000-30009").unwrap();
        let a = PortAllocator::new(small, Box::new(FakeStore::default()));
        let got = a.allocate(&[Want::Any; 10], false).await.unwrap();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, (30000..30010).collect::<Vec<_>>());
        assert_eq!(a.allocate(&[Want::Any], false).await, Err((0, PortError::Full)));
        let big = PortAllocator::new(range(), Box::new(FakeStore::default()));
        let p = big.allocate(&[Want::Any], false).await.unwrap()[0];
        assert!(p >= 30086, "{p} is in the static band");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_allocators_on_one_record_never_share_a_port() {
        // two "servers" (allocators) on the same record, 40 allocations each
        let store = FakeStore::default();
        let small = PortRange::parse("30000-30079").unwrap();
        let mut tasks = vec![];
        for _ in 0..2 {
            let a = Arc::new(PortAllocator::new(small, Box::new(store.clone())));
            for _ in 0..40 {
                let a = a.clone();
                tasks.push(tokio::spawn(async move { a.allocate(&[Want::Any], false).await }));
            }
        }
        let mut got = vec![];
        for t in tasks {
            got.extend(t.await.unwrap().unwrap());
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 80);
    }

    #[test]
    fn a_record_of_another_range_keeps_ports_by_number() {
        let mut b = Bitmap::empty(PortRange::parse("30000-30100").unwrap());
        b.set(30050);
        b.set(30001);
        let moved = Bitmap::decode(&b.encode(), PortRange::parse("30040-30200").unwrap()).unwrap();
        assert_eq!(moved.ports().collect::<Vec<_>>(), [30050]);
    }
}
