//! The cache of upstream answers, as k3s's CoreDNS (`cache 30`) keeps it: positive answers for
//! their smallest TTL, negative ones (NXDOMAIN, NODATA) for the TTL their SOA gives (RFC 2308;
//! without an SOA they are not kept), an upstream SERVFAIL for 5 s; never longer than 30 s.
//! Served with the TTL that remains. Bounded: when full, an arbitrary entry makes room (CoreDNS
//! evicts at random too).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};

/// The longest an answer is kept (k3s's Corefile: `cache 30`).
pub const MAX_TTL: u32 = 30;
/// How long an upstream's SERVFAIL is kept (CoreDNS's cache default).
pub const SERVFAIL_TTL: u32 = 5;
/// The most entries kept.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// An upstream's answer: its response code and sections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Upstream {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// What the cache is keyed by.
pub type Key = (LowerName, RecordType, DNSClass);

struct Entry {
    answer: Arc<Upstream>,
    stored: Instant,
    ttl: u32,
}

pub struct Cache {
    entries: RwLock<HashMap<Key, Entry>>,
    capacity: usize,
}

/// How long `answer` may be kept; None when it may not.
pub fn ttl_of(answer: &Upstream) -> Option<u32> {
    let ttl = match answer.rcode {
        ResponseCode::NoError if !answer.answers.is_empty() => answer.answers.iter().map(|r| r.ttl).min()?,
        ResponseCode::NoError | ResponseCode::NXDomain => answer.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })?,
        ResponseCode::ServFail => SERVFAIL_TTL,
        _ => return None,
    };
    Some(ttl.min(MAX_TTL)).filter(|t| *t > 0)
}

/// `answer` with every TTL lowered to what remains of `ttl` after `elapsed`.
fn aged(answer: &Upstream, ttl: u32, elapsed: Duration) -> Upstream {
    let left = ttl.saturating_sub(u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX));
    let age = |records: &[Record]| {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = r.ttl.min(left);
                r
            })
            .collect()
    };
    Upstream { rcode: answer.rcode, answers: age(&answer.answers), authorities: age(&answer.authorities), additionals: age(&answer.additionals) }
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache { entries: RwLock::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The cached answer for `key`, its TTLs aged, if it has not expired.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Upstream> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(key)?;
        let elapsed = now.checked_duration_since(e.stored).unwrap_or_default();
        if elapsed >= Duration::from_secs(u64::from(e.ttl)) {
            return None;
        }
        Some(aged(&e.answer, e.ttl, elapsed))
    }

    /// Keeps `answer` for as long as its TTLs allow (not at all when they do not).
    pub fn put(&self, key: Key, answer: &Upstream, now: Instant) {
        let Some(ttl) = ttl_of(answer) else { return };
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // the first key of the table: an arbitrary one (the hasher is randomly seeded)
            if let Some(k) = entries.keys().next().cloned() {
                entries.remove(&k);
            }
        }
        entries.insert(key, Entry { answer: Arc::new(answer.clone()), stored: now, ttl });
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Name;

    fn key(name: &str) -> Key {
        (LowerName::new(&Name::from_ascii(name).unwrap()), RecordType::A, DNSClass::IN)
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(Name::from_ascii("www.example.com.").unwrap(), ttl, RData::A(A::new(192, 0, 2, 1)))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_ascii("example.com.").unwrap();
        Record::from_rdata(n.clone(), ttl, RData::SOA(SOA::new(n.clone(), n, 1, 7200, 1800, 86400, minimum)))
    }

    #[test]
    fn ttls_follow_the_answer_and_are_capped() {
        let pos = Upstream { answers: vec![a(300), a(12)], ..Default::default() };
        assert_eq!(ttl_of(&pos), Some(12));
        assert_eq!(ttl_of(&Upstream { answers: vec![a(3600)], ..Default::default() }), Some(MAX_TTL));
        assert_eq!(ttl_of(&Upstream { answers: vec![a(0)], ..Default::default() }), None);
        let nx = Upstream { rcode: ResponseCode::NXDomain, authorities: vec![soa(900, 7)], ..Default::default() };
        assert_eq!(ttl_of(&nx), Some(7));
        let nodata = Upstream { authorities: vec![soa(3, 60)], ..Default::default() };
        assert_eq!(ttl_of(&nodata), Some(3));
        assert_eq!(ttl_of(&Upstream { rcode: ResponseCode::NXDomain, ..Default::default() }), None, "no SOA: not kept");
        assert_eq!(ttl_of(&Upstream { rcode: ResponseCode::ServFail, ..Default::default() }), Some(SERVFAIL_TTL));
        assert_eq!(ttl_of(&Upstream { rcode: ResponseCode::Refused, ..Default::default() }), None);
    }

    #[test]
    fn entries_age_expire_and_stay_bounded() {
        let c = Cache::new(2);
        let t0 = Instant::now();
        c.put(key("www.example.com."), &Upstream { answers: vec![a(10)], ..Default::default() }, t0);
        let got = c.get(&key("WWW.example.com."), t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(got.answers[0].ttl, 6, "the TTL that remains; names compare without case");
        assert!(c.get(&key("www.example.com."), t0 + Duration::from_secs(10)).is_none());
        c.put(key("b.example."), &Upstream { answers: vec![a(10)], ..Default::default() }, t0);
        c.put(key("c.example."), &Upstream { answers: vec![a(10)], ..Default::default() }, t0);
        assert_eq!(c.len(), 2);
        // nothing cacheable is kept
        c.put(key("d.example."), &Upstream { rcode: ResponseCode::Refused, ..Default::default() }, t0);
        assert!(c.get(&key("d.example."), t0).is_none());
    }
}
