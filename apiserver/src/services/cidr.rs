//! Service CIDRs as the allocator sees them: parsing `--service-cidr` ("10.43.0.0/16", dual-stack
//! "v4cidr,v6cidr"), the family of a CIDR, the addresses that may be handed out (not the network
//! address, not the IPv4 broadcast address), and upstream's split of a range into a lower static
//! band (preferred by explicitly requested IPs) and an upper dynamic band (where automatic
//! allocation starts). Pure arithmetic: it knows nothing of the store or the API.
//!
//! Also the CIDR grammar itself ([`Prefix`]: an address and a prefix length, read as Go's
//! netip.ParsePrefix reads them), which [`Cidr::parse`] and the CEL `cidr()` library build on.

use std::fmt;
use std::net::IpAddr;

/// An IP family as the Service API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    IPv4,
    IPv6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::IPv4
        } else {
            Family::IPv6
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::IPv4 => "IPv4",
            Family::IPv6 => "IPv6",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::IPv4),
            "IPv6" => Some(Family::IPv6),
            _ => None,
        }
    }

    pub fn other(self) -> Family {
        match self {
            Family::IPv4 => Family::IPv6,
            Family::IPv6 => Family::IPv4,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not a CIDR (address/prefix-length)")]
    Syntax(String),
    #[error("{cidr}: the prefix length must be at most {max}")]
    PrefixTooLong { cidr: String, max: u8 },
    #[error("{cidr}: the address has host bits set (the network is {network})")]
    HostBits { cidr: String, network: String },
    #[error("{cidr}: the shortest allowed prefix length for an IPv6 service CIDR is 64")]
    Ipv6TooLarge { cidr: String },
    #[error("--service-cidr takes at most two CIDRs, one of each IP family")]
    TooMany,
    #[error("--service-cidr: the two CIDRs must be of different IP families")]
    SameFamily,
    #[error("--service-cidr is empty")]
    Empty,
}

/// One service range (an IPv4 or IPv6 network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: u128,
    prefix: u8,
    family: Family,
}

impl Cidr {
    /// Parses a canonical service CIDR: host bits must be zero, IPv6 ranges at most a /64.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let cidr = Cidr::parse_network(s)?;
        if cidr.family == Family::IPv6 && cidr.prefix < 64 {
            return Err(CidrError::Ipv6TooLarge { cidr: s.to_string() });
        }
        Ok(cidr)
    }

    /// Parses any canonical network (a pod CIDR, say): host bits must be zero.
    pub fn parse_network(s: &str) -> Result<Cidr, CidrError> {
        let Prefix { addr: ip, len: prefix } = Prefix::parse(s.trim()).map_err(|e| match e {
            PrefixError::Range { max } => CidrError::PrefixTooLong { cidr: s.to_string(), max },
            _ => CidrError::Syntax(s.to_string()),
        })?;
        let family = Family::of(&ip);
        let n = to_u128(&ip);
        let cidr = Cidr { network: n & mask(family, prefix), prefix, family };
        if cidr.network != n {
            return Err(CidrError::HostBits { cidr: s.to_string(), network: cidr.to_string() });
        }
        Ok(cidr)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        from_u128(self.family, self.network)
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(&other.network())
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family && to_u128(ip) & mask(self.family, self.prefix) == self.network
    }

    /// Whether `ip` may be handed out: inside, and neither the network address nor (IPv4) the
    /// broadcast address.
    pub fn assignable(&self, ip: &IpAddr) -> bool {
        self.contains(ip) && (self.first()..=self.last()).contains(&to_u128(ip))
    }

    /// The number of addresses of the whole network, capped at u64::MAX.
    pub fn size(&self) -> u64 {
        let host_bits = bits(self.family) - self.prefix;
        if host_bits >= 64 {
            u64::MAX
        } else {
            1u64 << host_bits
        }
    }

    /// The first address that may be handed out (the network's .1).
    fn first(&self) -> u128 {
        self.network + 1
    }

    /// The last address that may be handed out (IPv4: before the broadcast address; IPv6: the
    /// last address). Below first() for networks too small to have one.
    fn last(&self) -> u128 {
        let host = !mask(self.family, self.prefix) & full(self.family);
        let top = self.network | host;
        if self.family == Family::IPv4 {
            top.saturating_sub(1)
        } else {
            top
        }
    }

    /// How many addresses may be handed out.
    pub fn assignable_count(&self) -> u128 {
        (self.last() + 1).saturating_sub(self.first())
    }

    /// The first assignable address (the one the `kubernetes` Service takes).
    pub fn first_address(&self) -> Option<IpAddr> {
        (self.assignable_count() > 0).then(|| from_u128(self.family, self.first()))
    }

    /// Upstream's static band size: min(max(16, size/16), 256), none for a range of 16 addresses
    /// or fewer (KEP-3070).
    pub fn static_band(&self) -> u128 {
        const MIN: u64 = 16;
        const MAX: u64 = 256;
        const STEP: u64 = 16;
        let size = self.size();
        if size <= MIN {
            return 0;
        }
        (size / STEP).clamp(MIN, MAX) as u128
    }

    /// The assignable addresses as two bands: (static, dynamic), each a range of offsets from
    /// the first assignable address.
    pub fn bands(&self) -> (std::ops::Range<u128>, std::ops::Range<u128>) {
        let count = self.assignable_count();
        let split = self.static_band().min(count);
        (0..split, split..count)
    }

    /// The assignable address at `offset` from the first.
    pub fn nth(&self, offset: u128) -> IpAddr {
        from_u128(self.family, self.first() + offset)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", from_u128(self.family, self.network), self.prefix)
    }
}

/// An address with a prefix length ("192.168.0.1/24"), host bits kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why a string is not a [`Prefix`], in Go's netip words (after `netip.ParsePrefix("s"): `).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("no '/'")]
    NoSlash,
    #[error("ParseAddr({}): unable to parse IP", berth_names::go_quote(.0))]
    Addr(String),
    #[error("IPv6 zones cannot be present in a prefix")]
    Zone,
    #[error("bad bits after slash: {}", berth_names::go_quote(.0))]
    Bits(String),
    #[error("prefix length out of range")]
    Range { max: u8 },
}

impl Prefix {
    /// Parses `address/length` as Go's netip.ParsePrefix: the last '/' splits, the length is
    /// plain decimal digits without a sign or leading zeros, IPv6 zones are refused.
    pub fn parse(s: &str) -> Result<Prefix, PrefixError> {
        let (addr, bits_text) = s.rsplit_once('/').ok_or(PrefixError::NoSlash)?;
        let ip: IpAddr = match addr.parse() {
            Ok(ip) => ip,
            Err(_) => {
                let zoned = addr.split_once('%').is_some_and(|(a, zone)| !zone.is_empty() && a.parse::<std::net::Ipv6Addr>().is_ok());
                return Err(if zoned { PrefixError::Zone } else { PrefixError::Addr(addr.to_string()) });
            }
        };
        let digits_ok = !bits_text.is_empty() && bits_text.bytes().all(|b| b.is_ascii_digit()) && (bits_text.len() == 1 || !bits_text.starts_with('0'));
        if !digits_ok {
            return Err(PrefixError::Bits(bits_text.to_string()));
        }
        let max = bits(Family::of(&ip));
        match bits_text.parse::<u8>() {
            Ok(len) if len <= max => Ok(Prefix { addr: ip, len }),
            _ => Err(PrefixError::Range { max }),
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// The network: host bits cleared.
    pub fn masked(&self) -> Prefix {
        let f = self.family();
        Prefix { addr: from_u128(f, to_u128(&self.addr) & mask(f, self.len)), len: self.len }
    }

    /// Whether `ip` is in the network (an address of the other family never is).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let f = self.family();
        Family::of(ip) == f && to_u128(ip) & mask(f, self.len) == to_u128(&self.masked().addr)
    }

    /// Whether all of `other` is in this network.
    pub fn contains_prefix(&self, other: &Prefix) -> bool {
        self.len <= other.len && self.contains(&other.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The CIDRs of `--service-cidr`: one, or two of different families (the first is primary).
pub fn parse_list(s: &str) -> Result<Vec<Cidr>, CidrError> {
    let cidrs = s.split(',').map(str::trim).filter(|c| !c.is_empty()).map(Cidr::parse).collect::<Result<Vec<_>, _>>()?;
    match cidrs.as_slice() {
        [] => Err(CidrError::Empty),
        [_] => Ok(cidrs),
        [a, b] if a.family() == b.family() => Err(CidrError::SameFamily),
        [_, _] => Ok(cidrs),
        _ => Err(CidrError::TooMany),
    }
}

fn bits(f: Family) -> u8 {
    match f {
        Family::IPv4 => 32,
        Family::IPv6 => 128,
    }
}

fn full(f: Family) -> u128 {
    match f {
        Family::IPv4 => u32::MAX as u128,
        Family::IPv6 => u128::MAX,
    }
}

fn mask(f: Family, prefix: u8) -> u128 {
    let host = bits(f) - prefix;
    if host >= 128 {
        0
    } else {
        (full(f) >> host) << host
    }
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(*v4) as u128,
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

fn from_u128(f: Family, n: u128) -> IpAddr {
    match f {
        Family::IPv4 => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
        Family::IPv6 => IpAddr::V6(std::net::Ipv6Addr::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_slash_16_has_a_static_band_of_256_and_skips_network_and_broadcast() {
        let c = Cidr::parse("10.43.0.0/16").unwrap();
        assert_eq!(c.first_address(), Some(ip("10.43.0.1")));
        assert_eq!(c.assignable_count(), 65534);
        assert_eq!(c.static_band(), 256);
        let (s, d) = c.bands();
        assert_eq!((s.start, s.end, d.start, d.end), (0, 256, 256, 65534));
        assert_eq!(c.nth(d.start), ip("10.43.1.1"));
        assert_eq!(c.nth(d.end - 1), ip("10.43.255.254"));
        assert!(!c.assignable(&ip("10.43.0.0")) && !c.assignable(&ip("10.43.255.255")));
        assert!(c.assignable(&ip("10.43.0.5")) && !c.contains(&ip("10.44.0.5")));
    }

    #[test]
    fn networks_of_any_size_and_covering() {
        assert!(matches!(Cidr::parse("fd00::/48"), Err(CidrError::Ipv6TooLarge { .. })));
        let wide = Cidr::parse_network("fd00::/48").unwrap();
        assert_eq!((wide.prefix(), wide.network()), (48, ip("fd00::")));
        let (big, small) = (Cidr::parse_network("10.42.0.0/16").unwrap(), Cidr::parse_network("10.42.3.0/24").unwrap());
        assert!(big.covers(&small) && !small.covers(&big) && big.covers(&big));
        assert!(!big.covers(&wide) && !wide.covers(&big));
        assert!(matches!(Cidr::parse_network("10.42.3.1/24"), Err(CidrError::HostBits { .. })));
    }

    #[test]
    fn band_split_follows_upstreams_formula() {
        // min(max(16, size/16), 256); none at 16 addresses or fewer
        assert_eq!(Cidr::parse("10.0.0.0/29").unwrap().static_band(), 0);
        assert_eq!(Cidr::parse("10.0.0.0/28").unwrap().static_band(), 0);
        assert_eq!(Cidr::parse("10.0.0.0/27").unwrap().static_band(), 16);
        assert_eq!(Cidr::parse("10.0.0.0/20").unwrap().static_band(), 256);
        assert_eq!(Cidr::parse("10.0.0.0/22").unwrap().static_band(), 64);
        assert_eq!(Cidr::parse("10.0.0.0/12").unwrap().static_band(), 256);
        let small = Cidr::parse("10.0.0.0/29").unwrap();
        assert_eq!(small.assignable_count(), 6);
        assert_eq!(small.bands().1, 0..6);
    }

    #[test]
    fn ipv6_ranges_keep_the_last_address_and_refuse_more_than_a_slash_64() {
        let c = Cidr::parse("fd00:43::/112").unwrap();
        assert_eq!(c.family(), Family::IPv6);
        assert_eq!(c.assignable_count(), 65535);
        assert!(c.assignable(&ip("fd00:43::ffff")));
        assert!(matches!(Cidr::parse("fd00::/48"), Err(CidrError::Ipv6TooLarge { .. })));
        assert_eq!(Cidr::parse("fd00::/64").unwrap().size(), u64::MAX);
    }

    #[test]
    fn the_flag_takes_one_cidr_or_one_of_each_family() {
        assert_eq!(parse_list("10.43.0.0/16").unwrap().len(), 1);
        assert_eq!(parse_list("10.43.0.0/16,fd00:43::/112").unwrap()[1].family(), Family::IPv6);
        assert_eq!(parse_list("10.43.0.0/16,10.44.0.0/16"), Err(CidrError::SameFamily));
        assert!(matches!(parse_list("10.43.0.1/16"), Err(CidrError::HostBits { .. })));
        assert!(matches!(parse_list("nonsense"), Err(CidrError::Syntax(_))));
        assert!(matches!(parse_list("10.43.0.0/33"), Err(CidrError::PrefixTooLong { max: 32, .. })));
    }

    #[test]
    fn prefixes_are_read_as_go_reads_them() {
        let p = Prefix::parse("192.168.0.1/24").unwrap();
        assert_eq!((p.addr, p.len), (ip("192.168.0.1"), 24));
        assert_eq!(p.masked().to_string(), "192.168.0.0/24");
        assert!(p.contains(&ip("192.168.0.200")) && !p.contains(&ip("192.168.1.1")) && !p.contains(&ip("::1")));
        assert!(Prefix::parse("10.0.0.0/8").unwrap().contains_prefix(&Prefix::parse("10.1.0.0/16").unwrap()));
        assert!(!Prefix::parse("10.0.0.0/16").unwrap().contains_prefix(&Prefix::parse("10.0.0.0/8").unwrap()));
        assert_eq!(Prefix::parse("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(Prefix::parse("10.0.0.0"), Err(PrefixError::NoSlash));
        assert_eq!(Prefix::parse("10.0.0.0/").unwrap_err().to_string(), r#"bad bits after slash: """#);
        for bad in ["10.0.0.0/08", "10.0.0.0/+8", "10.0.0.0/ 8"] {
            assert!(matches!(Prefix::parse(bad), Err(PrefixError::Bits(_))), "{bad}");
        }
        assert_eq!(Prefix::parse("10.0.0.0/33"), Err(PrefixError::Range { max: 32 }));
        assert_eq!(Prefix::parse("::1/129"), Err(PrefixError::Range { max: 128 }));
        assert_eq!(Prefix::parse("fe80::1%eth0/64"), Err(PrefixError::Zone));
        assert_eq!(Prefix::parse("10.0.0.256/8").unwrap_err().to_string(), r#"ParseAddr("10.0.0.256"): unable to parse IP"#);
    }
}
