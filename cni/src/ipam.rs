//! Host-local address management: one file per allocated address (holding the container ID
//! and interface) in a per-network directory, all changes under an exclusive file lock so
//! concurrent ADDs never hand out the same address.
use crate::types::{CniError, IpamConf};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// One usable range: [start, end] inside subnet, with its gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub network: u128,
    pub prefix: u8,
    pub v6: bool,
    pub start: u128,
    pub end: u128,
    pub gateway: u128,
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

impl Range {
    pub fn parse(subnet: &str, start: Option<IpAddr>, end: Option<IpAddr>, gateway: Option<IpAddr>) -> Result<Range, CniError> {
        let bad = |m: String| CniError::config(m);
        let (addr, prefix) = subnet.split_once('/').ok_or_else(|| bad(format!("subnet {subnet:?} is not CIDR")))?;
        let ip: IpAddr = addr.parse().map_err(|_| bad(format!("subnet {subnet:?}: bad address")))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad(format!("subnet {subnet:?}: bad prefix")))?;
        let v6 = ip.is_ipv6();
        let bits = if v6 { 128 } else { 32 };
        if prefix > bits || prefix > bits - 2 {
            return Err(bad(format!("subnet {subnet:?} is too small")));
        }
        let host_bits = (bits - prefix) as u32;
        let mask: u128 = if host_bits >= 128 { 0 } else { !0u128 << host_bits } & if v6 { !0 } else { u32::MAX as u128 };
        let network = to_u128(ip) & mask;
        let last = network | (!mask & if v6 { !0 } else { u32::MAX as u128 });
        let inside = |a: IpAddr, what: &str| -> Result<u128, CniError> {
            let v = to_u128(a);
            if a.is_ipv6() != v6 || v < network || v > last {
                return Err(bad(format!("{what} {a} is outside {subnet}")));
            }
            Ok(v)
        };
        let gateway = match gateway {
            Some(g) => inside(g, "gateway")?,
            None => network + 1,
        };
        let start = match start {
            Some(s) => inside(s, "rangeStart")?,
            None => network + 1,
        };
        let end = match end {
            Some(e) => inside(e, "rangeEnd")?,
            // IPv4 keeps the broadcast address out.
            None => {
                if v6 {
                    last
                } else {
                    last - 1
                }
            }
        };
        if start > end {
            return Err(bad(format!("rangeStart is after rangeEnd in {subnet}")));
        }
        Ok(Range { network, prefix, v6, start, end, gateway })
    }

    pub fn contains(&self, v: u128) -> bool {
        v >= self.start && v <= self.end
    }

    fn overlaps(&self, o: &Range) -> bool {
        self.v6 == o.v6 && self.start <= o.end && o.start <= self.end
    }
}

/// Range sets from the config: one address is allocated from each set.
pub fn range_sets(conf: &IpamConf) -> Result<Vec<Vec<Range>>, CniError> {
    let mut sets = Vec::new();
    if let Some(s) = &conf.subnet {
        sets.push(vec![Range::parse(s, None, None, None)?]);
    }
    for set in &conf.ranges {
        let mut v = Vec::new();
        for r in set {
            v.push(Range::parse(&r.subnet, r.range_start, r.range_end, r.gateway)?);
        }
        if v.is_empty() {
            return Err(CniError::config("an empty range set"));
        }
        sets.push(v);
    }
    if sets.is_empty() {
        return Err(CniError::config("ipam: no ranges or subnet given"));
    }
    let all: Vec<&Range> = sets.iter().flatten().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.overlaps(b) {
                return Err(CniError::config(format!(
                    "overlapping subnet: {}/{} and {}/{}",
                    from_u128(a.network, a.v6),
                    a.prefix,
                    from_u128(b.network, b.v6),
                    b.prefix
                )));
            }
        }
    }
    Ok(sets)
}

/// An allocated address with the range it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub range: Range,
}

pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Open (and lock) the network's allocation directory.
    pub fn open(data_dir: Option<&str>, network: &str) -> Result<Store, CniError> {
        if network.contains('/') || network == "." || network == ".." {
            return Err(CniError::config(format!("invalid network name {network:?}")));
        }
        let dir = Path::new(data_dir.unwrap_or(DEFAULT_DATA_DIR)).join(network);
        std::fs::create_dir_all(&dir).map_err(|e| CniError::io(format!("{}: {e}", dir.display())))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(|e| CniError::io(e.to_string()))?;
        // SAFETY: flock on an fd we own; released when the file closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(CniError::io(format!("locking {}: {}", dir.display(), std::io::Error::last_os_error())));
        }
        Ok(Store { dir, _lock: lock })
    }

    fn owner_text(id: &str, ifname: &str) -> String {
        format!("{id}\n{ifname}")
    }

    /// (address, owner text) of every allocation.
    fn entries(&self) -> Vec<(IpAddr, String)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return vec![] };
        rd.flatten()
            .filter_map(|e| {
                let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
                Some((ip, std::fs::read_to_string(e.path()).unwrap_or_default()))
            })
            .collect()
    }

    /// Allocate one address from each range set; an existing allocation for the same
    /// container and interface is returned again.
    pub fn allocate(&self, sets: &[Vec<Range>], reserved: &[IpAddr], id: &str, ifname: &str) -> Result<Vec<Allocation>, CniError> {
        let owner = Self::owner_text(id, ifname);
        let entries = self.entries();
        let mut out = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            if let Some((ip, range)) = entries.iter().filter(|(_, o)| *o == owner).find_map(|(ip, _)| {
                let v = to_u128(*ip);
                set.iter().find(|r| r.v6 == ip.is_ipv6() && r.contains(v)).map(|r| (*ip, r.clone()))
            }) {
                out.push(Allocation { ip, range });
                continue;
            }
            match self.allocate_in(i, set, reserved, &owner) {
                Ok(a) => out.push(a),
                Err(e) => {
                    for a in &out {
                        let _ = std::fs::remove_file(self.dir.join(a.ip.to_string()));
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    fn allocate_in(&self, set_index: usize, set: &[Range], reserved: &[IpAddr], owner: &str) -> Result<Allocation, CniError> {
        let last_file = self.dir.join(format!("last_reserved_ip.{set_index}"));
        let last: Option<u128> = std::fs::read_to_string(&last_file).ok().and_then(|s| s.trim().parse::<IpAddr>().ok()).map(to_u128);
        let reserved: Vec<u128> = reserved.iter().map(|r| to_u128(*r)).collect();
        // Walk every range of the set once, starting after the last address handed out.
        let mut candidates: Vec<(usize, u128)> = Vec::new();
        let total: u128 = set.iter().map(|r| r.end - r.start + 1).sum();
        let limit = total.min(1 << 20);
        let (mut ri, mut cur) = match last.and_then(|l| set.iter().position(|r| r.contains(l)).map(|i| (i, l))) {
            Some((i, l)) => (i, l),
            None => (set.len() - 1, set[set.len() - 1].end),
        };
        for _ in 0..limit {
            if cur >= set[ri].end {
                ri = (ri + 1) % set.len();
                cur = set[ri].start;
            } else {
                cur += 1;
            }
            candidates.push((ri, cur));
        }
        for (ri, v) in candidates {
            let r = &set[ri];
            if v == r.gateway || reserved.contains(&v) {
                continue;
            }
            let ip = from_u128(v, r.v6);
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes()).map_err(|e| CniError::io(e.to_string()))?;
                    let _ = std::fs::write(&last_file, ip.to_string());
                    return Ok(Allocation { ip, range: r.clone() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CniError::io(format!("{}: {e}", path.display()))),
            }
        }
        let r = &set[0];
        Err(CniError::no_addresses(format!("no IP addresses available in range set {}/{}", from_u128(r.network, r.v6), r.prefix)))
    }

    /// Release the container's addresses; returns how many.
    pub fn release(&self, id: &str, ifname: &str) -> usize {
        let owner = Self::owner_text(id, ifname);
        self.entries().into_iter().filter(|(_, o)| *o == owner).filter(|(ip, _)| std::fs::remove_file(self.dir.join(ip.to_string())).is_ok()).count()
    }

    /// The container's current addresses.
    pub fn addresses_of(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        let owner = Self::owner_text(id, ifname);
        self.entries().into_iter().filter(|(_, o)| *o == owner).map(|(ip, _)| ip).collect()
    }

    /// Every address held in the network.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.entries().into_iter().map(|(ip, _)| ip).collect()
    }

    /// Release every allocation whose (container, interface) is not in `valid`.
    pub fn gc(&self, valid: &[(String, String)]) -> usize {
        let keep: Vec<String> = valid.iter().map(|(c, i)| Self::owner_text(c, i)).collect();
        self.entries().into_iter().filter(|(_, o)| !keep.contains(o)).filter(|(ip, _)| std::fs::remove_file(self.dir.join(ip.to_string())).is_ok()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_overlaps_are_refused() {
        let r = Range::parse("10.1.2.0/24", None, None, None).unwrap();
        assert_eq!((from_u128(r.start, false).to_string(), from_u128(r.end, false).to_string()), ("10.1.2.1".into(), "10.1.2.254".into()));
        assert_eq!(from_u128(r.gateway, false).to_string(), "10.1.2.1");
        assert!(Range::parse("10.1.2.0/31", None, None, None).is_err());
        assert!(Range::parse("10.1.2.0/24", Some("10.1.3.1".parse().unwrap()), None, None).is_err());
        let conf: IpamConf = serde_json::from_str(r#"{"ranges": [[{"subnet": "10.1.0.0/16"}], [{"subnet": "10.1.2.0/24"}]]}"#).unwrap();
        let e = range_sets(&conf).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.details.contains("overlapping subnet"));
        let v6 = Range::parse("fd00:1::/64", None, None, None).unwrap();
        assert_eq!(from_u128(v6.gateway, true).to_string(), "fd00:1::1");
    }

    #[test]
    fn allocates_distinct_addresses_releases_and_runs_out() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap();
        let conf: IpamConf = serde_json::from_str(r#"{"ranges": [[{"subnet": "10.9.0.0/29"}], [{"subnet": "fd00:9::/120"}]]}"#).unwrap();
        let sets = range_sets(&conf).unwrap();
        let reserved: Vec<IpAddr> = vec!["10.9.0.3".parse().unwrap()];
        let mut seen = vec![];
        for i in 0..4 {
            let s = Store::open(Some(dir), "net").unwrap();
            let a = s.allocate(&sets, &reserved, &format!("c{i}"), "eth0").unwrap();
            assert_eq!(a.len(), 2, "dual stack");
            assert!(!seen.contains(&a[0].ip));
            assert_ne!(a[0].ip.to_string(), "10.9.0.1", "the gateway is never handed out");
            assert_ne!(a[0].ip.to_string(), "10.9.0.3", "reserved");
            seen.push(a[0].ip);
        }
        // 10.9.0.0/29: .2 .4 .5 .6 usable; all taken now.
        let s = Store::open(Some(dir), "net").unwrap();
        assert_eq!(s.allocate(&sets, &reserved, "c0", "eth0").unwrap()[0].ip, seen[0], "same container, same address");
        let e = s.allocate(&sets, &reserved, "c9", "eth0").unwrap_err();
        assert_eq!(e.code, 11);
        assert!(s.addresses_of("c9", "eth0").is_empty(), "nothing half-allocated");
        assert_eq!(s.release("c1", "eth0"), 2);
        assert_eq!(s.allocate(&sets, &reserved, "c9", "eth0").unwrap()[0].ip, seen[1]);
        assert_eq!(s.gc(&[("c9".into(), "eth0".into())]), 6);
        assert_eq!(s.addresses_of("c9", "eth0").len(), 2);
    }
}
