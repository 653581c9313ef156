//! The names of the cluster zone as the Kubernetes DNS specification lays them out, parsed from
//! a query's labels (below the zone, lower-cased); the dashed forms of addresses (endpoints
//! without a hostname, `pods insecure` names) and the reverse (in-addr.arpa, ip6.arpa) names.
//! Pure functions: no index, no wire format.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a name below the cluster zone asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneName<'a> {
    /// The zone itself.
    Apex,
    /// `svc.<zone>` or `pod.<zone>`: names with no records of their own.
    Branch,
    /// `<ns>.svc.<zone>` or `<ns>.pod.<zone>`.
    Namespace { namespace: &'a str },
    /// `<svc>.<ns>.svc.<zone>`.
    Service { namespace: &'a str, service: &'a str },
    /// `<hostname>.<svc>.<ns>.svc.<zone>`: an endpoint by its hostname (or dashed address).
    Endpoint { namespace: &'a str, service: &'a str, host: &'a str },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<zone>` (the underscores optional, as CoreDNS takes it).
    Port { namespace: &'a str, service: &'a str, port: &'a str, protocol: &'a str },
    /// `<a-b-c-d>.<ns>.pod.<zone>`: the address the name spells (CoreDNS's `pods insecure`).
    Pod { namespace: &'a str, ip: IpAddr },
    /// `dns-version.<zone>`: the schema version (TXT).
    DnsVersion,
    /// `ns.dns.<zone>`: the zone's name server (the cluster DNS addresses).
    NameServer,
    /// Anything else: no such name.
    Invalid,
}

/// The schema version of the Kubernetes DNS specification answered at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// Parses `labels`: the query's labels below the zone, left to right, lower-cased.
pub fn parse<'a>(labels: &[&'a str]) -> ZoneName<'a> {
    let Some((&kind, rest)) = labels.split_last() else { return ZoneName::Apex };
    match (kind, rest) {
        ("dns-version", []) => return ZoneName::DnsVersion,
        ("dns", ["ns"]) => return ZoneName::NameServer,
        ("svc" | "pod", []) => return ZoneName::Branch,
        ("svc" | "pod", _) => {}
        _ => return ZoneName::Invalid,
    }
    let pods = kind == "pod";
    let Some((&namespace, rest)) = rest.split_last() else { return ZoneName::Invalid };
    let Some((&name, rest)) = rest.split_last() else { return ZoneName::Namespace { namespace } };
    if pods {
        return match (rest, pod_ip(name)) {
            ([], Some(ip)) => ZoneName::Pod { namespace, ip },
            _ => ZoneName::Invalid,
        };
    }
    match rest {
        [] => ZoneName::Service { namespace, service: name },
        [host] => ZoneName::Endpoint { namespace, service: name, host },
        [port, protocol] => ZoneName::Port { namespace, service: name, port: strip_underscore(port), protocol: strip_underscore(protocol) },
        _ => ZoneName::Invalid,
    }
}

fn strip_underscore(s: &str) -> &str {
    s.strip_prefix('_').unwrap_or(s)
}

/// The address a pod name spells: `10-1-2-3` (three dashes, none doubled) is IPv4, anything
/// else is IPv6 with dashes for colons (`fd00--1`).
pub fn pod_ip(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".").parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// The label of an endpoint without a hostname: its address with dashes (CoreDNS's form: an
/// IPv6 address ending in `::` gets a trailing 0, so the label does not end in a dash).
pub fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s.push('0');
            }
            s
        }
    }
}

/// The reverse name of an address, without the trailing dot: `4.3.2.1.in-addr.arpa`, or 32
/// nibbles and `ip6.arpa`.
pub fn reverse_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The address a complete reverse name (labels left to right, lower-cased, without the root)
/// stands for; None for a partial or malformed one.
pub fn reverse_ip(labels: &[&str]) -> Option<IpAddr> {
    match labels {
        [d, c, b, a, "in-addr", "arpa"] => {
            let octet = |s: &str| if s.len() > 1 && s.starts_with('0') { None } else { s.parse::<u8>().ok() };
            Some(IpAddr::V4(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)))
        }
        [nibbles @ .., "ip6", "arpa"] if nibbles.len() == 32 => {
            let mut octets = [0u8; 16];
            for (i, pair) in nibbles.chunks(2).enumerate() {
                let nibble = |s: &str| if s.len() == 1 { u8::from_str_radix(s, 16).ok() } else { None };
                octets[15 - i] = nibble(pair[1])? << 4 | nibble(pair[0])?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Vec<&str> {
        name.split('.').filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn names_of_the_zone_parse_as_the_specification_lays_them_out() {
        assert_eq!(parse(&[]), ZoneName::Apex);
        assert_eq!(parse(&labels("svc")), ZoneName::Branch);
        assert_eq!(parse(&labels("pod")), ZoneName::Branch);
        assert_eq!(parse(&labels("default.svc")), ZoneName::Namespace { namespace: "default" });
        assert_eq!(parse(&labels("kubernetes.default.svc")), ZoneName::Service { namespace: "default", service: "kubernetes" });
        assert_eq!(parse(&labels("web-0.nginx.shop.svc")), ZoneName::Endpoint { namespace: "shop", service: "nginx", host: "web-0" });
        assert_eq!(
            parse(&labels("_https._tcp.kubernetes.default.svc")),
            ZoneName::Port { namespace: "default", service: "kubernetes", port: "https", protocol: "tcp" }
        );
        assert_eq!(parse(&labels("a.b.c.d.default.svc")), ZoneName::Invalid);
        assert_eq!(parse(&labels("10-42-0-7.shop.pod")), ZoneName::Pod { namespace: "shop", ip: "10.42.0.7".parse().unwrap() });
        assert_eq!(parse(&labels("fd00--7.shop.pod")), ZoneName::Pod { namespace: "shop", ip: "fd00::7".parse().unwrap() });
        assert_eq!(parse(&labels("10-42-0.shop.pod")), ZoneName::Invalid);
        assert_eq!(parse(&labels("x.10-42-0-7.shop.pod")), ZoneName::Invalid);
        assert_eq!(parse(&labels("dns-version")), ZoneName::DnsVersion);
        assert_eq!(parse(&labels("ns.dns")), ZoneName::NameServer);
        assert_eq!(parse(&labels("foo")), ZoneName::Invalid);
        assert_eq!(parse(&labels("foo.bar")), ZoneName::Invalid);
    }

    #[test]
    fn addresses_have_dashed_and_reverse_forms() {
        let v4: IpAddr = "10.43.0.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        assert_eq!(dashed(&v4), "10-43-0-10");
        assert_eq!(dashed(&v6), "2001-db8--0");
        assert_eq!(dashed(&"fd00::1".parse().unwrap()), "fd00--1");
        assert_eq!(reverse_name(&v4), "10.0.43.10.in-addr.arpa");
        let r6 = reverse_name(&"2001:db8::1".parse().unwrap());
        assert_eq!(r6, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
        for ip in [v4, v6, "2001:db8::1".parse().unwrap()] {
            assert_eq!(reverse_ip(&labels(&reverse_name(&ip))), Some(ip));
        }
        assert_eq!(reverse_ip(&labels("0.43.10.in-addr.arpa")), None);
        assert_eq!(reverse_ip(&labels("010.0.43.10.in-addr.arpa")), None);
        assert_eq!(reverse_ip(&labels("256.0.43.10.in-addr.arpa")), None);
        assert_eq!(reverse_ip(&labels("1.0.ip6.arpa")), None);
    }
}
