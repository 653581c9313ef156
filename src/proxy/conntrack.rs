//! Stale UDP conntrack entries, as kube-proxy clears them: a UDP flow to a Service keeps the
//! endpoint its first datagram was translated to for as long as datagrams keep coming, so
//! after an endpoint goes (or a Service that had none gets one) its flows are deleted and the
//! next datagram is balanced anew. Talks ctnetlink (NETLINK_NETFILTER) itself: a dump of the
//! family's entries, then a delete per stale one by its original tuple; no `conntrack` binary.
//!
//! [`stale`] picks the entries (pure); [`Conntrack`] runs the socket (blocking: call it from
//! `spawn_blocking`); the message encoding and parsing are plain functions.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::model::{Proto, ServiceModel};
use super::ruleset::Family;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(1 << 15 | 1 << 14);
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// The protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// One direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A conntrack entry: its original and reply directions (the reply's source is the endpoint a
/// DNAT chose) and its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub orig: Tuple,
    pub reply: Tuple,
    pub zone: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("ctnetlink answered error {0}")]
    Kernel(i32),
    #[error("malformed netlink message")]
    Malformed,
}

/// What a sync knows of one UDP Service port: where clients send (Service IPs with the port,
/// and the node port) and the IPs of its serving endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpService {
    pub ips: Vec<IpAddr>,
    pub port: u16,
    pub node_port: Option<u16>,
    pub endpoints: BTreeSet<IpAddr>,
}

/// The UDP flows among `flows` that go to a Service (one of its IPs and its port, or its node
/// port) with serving endpoints but were translated to none of them (an endpoint that went,
/// or no translation at all). Services without serving endpoints keep their entries.
pub fn stale(services: &[UdpService], flows: &[Flow]) -> Vec<Flow> {
    let mut by_ip: HashMap<(IpAddr, u16), &BTreeSet<IpAddr>> = HashMap::new();
    let mut by_node_port: HashMap<u16, &BTreeSet<IpAddr>> = HashMap::new();
    for s in services.iter().filter(|s| !s.endpoints.is_empty()) {
        for ip in &s.ips {
            by_ip.insert((*ip, s.port), &s.endpoints);
        }
        if let Some(np) = s.node_port {
            by_node_port.insert(np, &s.endpoints);
        }
    }
    flows
        .iter()
        .filter(|f| f.orig.proto == IPPROTO_UDP)
        .filter(|f| {
            let by_dst = by_ip.get(&(f.orig.dst, f.orig.dport)).is_some_and(|eps| !eps.contains(&f.reply.src));
            let by_port = by_node_port.get(&f.orig.dport).is_some_and(|eps| !eps.contains(&f.reply.src));
            by_dst || by_port
        })
        .copied()
        .collect()
}

/// The UDP ports of `models` in family `f` (cluster IPs in `skip` left out: the node answers
/// on them itself), with their serving endpoints on any node.
pub fn udp_services<'a>(f: Family, models: impl IntoIterator<Item = &'a ServiceModel>, skip: &[IpAddr]) -> Vec<UdpService> {
    let mut out = vec![];
    for m in models {
        let cluster = m.cluster_ips.iter().filter(|ip| !skip.contains(ip));
        let ips: Vec<IpAddr> = cluster.chain(&m.load_balancer_ips).chain(&m.external_ips).filter(|ip| f.has(ip)).copied().collect();
        // a port reached at no address this proxy programs has no entries to clear
        for p in m.ports.iter().filter(|p| p.protocol == Proto::Udp && (!ips.is_empty() || p.node_port.is_some())) {
            let endpoints = p.endpoints.iter().filter(|e| e.serving && f.has(&e.ip)).map(|e| e.ip).collect();
            out.push(UdpService { ips: ips.clone(), port: p.port, node_port: p.node_port, endpoints });
        }
    }
    out
}

fn family_byte(f: Family) -> u8 {
    match f {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

/// A netlink message: header, nfgenmsg (family, version 0, resource id 0), attributes.
fn message(kind: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | kind).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// An attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// The request for a dump of every entry of family `f`.
pub fn encode_dump(f: Family, seq: u32) -> Vec<u8> {
    message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family_byte(f), &[])
}

fn encode_tuple(t: &Tuple) -> Vec<u8> {
    let mut ip = vec![];
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            attr(&mut ip, CTA_IP_V4_SRC, &s.octets());
            attr(&mut ip, CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            attr(&mut ip, CTA_IP_V6_SRC, &v6(s).octets());
            attr(&mut ip, CTA_IP_V6_DST, &v6(d).octets());
        }
    }
    let mut proto = vec![];
    attr(&mut proto, CTA_PROTO_NUM, &[t.proto]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    let mut out = vec![];
    attr(&mut out, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr(&mut out, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    out
}

/// The request deleting `flow` (by its original tuple and zone), acknowledged.
pub fn encode_delete(flow: &Flow, seq: u32) -> Vec<u8> {
    let mut attrs = vec![];
    attr(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, &encode_tuple(&flow.orig));
    if let Some(z) = flow.zone {
        attr(&mut attrs, CTA_ZONE, &z.to_be_bytes());
    }
    message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family_byte(Family::of(&flow.orig.src)), &attrs)
}

/// The attributes in `buf`: (type without flags, payload).
fn attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, ConntrackError> {
    let mut out = vec![];
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(ConntrackError::Malformed);
        }
        out.push((kind, &buf[4..len]));
        let padded = (len + 3) & !3;
        buf = &buf[padded.min(buf.len())..];
    }
    Ok(out)
}

fn ip_of(p: &[u8]) -> Result<IpAddr, ConntrackError> {
    match p.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(p[0], p[1], p[2], p[3]))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(p);
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => Err(ConntrackError::Malformed),
    }
}

fn port_of(p: &[u8]) -> Result<u16, ConntrackError> {
    p.try_into().map(u16::from_be_bytes).map_err(|_| ConntrackError::Malformed)
}

fn decode_tuple(buf: &[u8]) -> Result<Tuple, ConntrackError> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for (kind, payload) in attrs(buf)? {
        match kind {
            CTA_TUPLE_IP => {
                for (k, p) in attrs(payload)? {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(ip_of(p)?),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(ip_of(p)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, p) in attrs(payload)? {
                    match k {
                        CTA_PROTO_NUM => proto = p.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = port_of(p)?,
                        CTA_PROTO_DST_PORT => dport = port_of(p)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (src, dst, proto) {
        (Some(src), Some(dst), Some(proto)) => Ok(Tuple { src, dst, proto, sport, dport }),
        _ => Err(ConntrackError::Malformed),
    }
}

/// The entry in the attributes of one IPCTNL_MSG_CT_NEW message (after the nfgenmsg).
fn decode_flow(buf: &[u8]) -> Result<Flow, ConntrackError> {
    let (mut orig, mut reply, mut zone) = (None, None, None);
    for (kind, payload) in attrs(buf)? {
        match kind {
            CTA_TUPLE_ORIG => orig = Some(decode_tuple(payload)?),
            CTA_TUPLE_REPLY => reply = Some(decode_tuple(payload)?),
            CTA_ZONE => zone = Some(port_of(payload)?),
            _ => {}
        }
    }
    match (orig, reply) {
        (Some(orig), Some(reply)) => Ok(Flow { orig, reply, zone }),
        _ => Err(ConntrackError::Malformed),
    }
}

/// What one datagram of answers holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answers {
    pub flows: Vec<Flow>,
    /// The dump ended (NLMSG_DONE).
    pub done: bool,
    /// Acknowledgements and errors: (sequence number, errno; 0 for an ack).
    pub acks: Vec<(u32, i32)>,
}

/// Parses the netlink messages in `buf`.
pub fn decode(mut buf: &[u8]) -> Result<Answers, ConntrackError> {
    let mut out = Answers::default();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < 16 || len > buf.len() {
            return Err(ConntrackError::Malformed);
        }
        let body = &buf[16..len];
        match kind {
            NLMSG_DONE => out.done = true,
            NLMSG_ERROR => {
                let errno = body.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).ok_or(ConntrackError::Malformed)?;
                out.acks.push((seq, -errno));
            }
            k if k == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW && body.len() >= 4 => out.flows.push(decode_flow(&body[4..])?),
            _ => {}
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(out)
}

/// A ctnetlink socket of this thread's network namespace.
pub struct Conntrack {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Conntrack {
    pub fn open() -> Result<Conntrack, ConntrackError> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Conntrack { socket, seq: 0 })
    }

    fn receive(&self) -> Result<Answers, ConntrackError> {
        let mut buf = Vec::with_capacity(1 << 16);
        self.socket.recv(&mut buf, 0)?;
        decode(&buf)
    }

    /// Every entry of family `f`.
    pub fn dump(&mut self, f: Family) -> Result<Vec<Flow>, ConntrackError> {
        self.seq += 1;
        self.socket.send(&encode_dump(f, self.seq), 0)?;
        let mut flows = vec![];
        loop {
            let a = self.receive()?;
            flows.extend(a.flows);
            if let Some((_, errno)) = a.acks.iter().find(|(_, e)| *e != 0) {
                return Err(ConntrackError::Kernel(*errno));
            }
            if a.done {
                return Ok(flows);
            }
        }
    }

    /// Deletes `flows`: how many went (those gone already do not count).
    pub fn delete(&mut self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let mut deleted = 0;
        for f in flows {
            self.seq += 1;
            let seq = self.seq;
            self.socket.send(&encode_delete(f, seq), 0)?;
            loop {
                let a = self.receive()?;
                match a.acks.iter().find(|(s, _)| *s == seq) {
                    Some((_, 0)) => deleted += 1,
                    Some((_, e)) if *e == libc::ENOENT => {}
                    Some((_, e)) => return Err(ConntrackError::Kernel(*e)),
                    None => continue,
                }
                break;
            }
        }
        Ok(deleted)
    }
}

/// Deletes the stale entries of `services` (UDP, of family `f`): how many went.
pub fn clear_stale(f: Family, services: &[UdpService]) -> Result<usize, ConntrackError> {
    if !services.iter().any(|s| !s.endpoints.is_empty()) {
        return Ok(0);
    }
    let mut ct = Conntrack::open()?;
    let flows = ct.dump(f)?;
    let gone = stale(services, &flows);
    if gone.is_empty() {
        return Ok(0);
    }
    ct.delete(&gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink DONE or ERROR message: the header, an i32 code and `trailing` zero bytes (an
    /// error's copy of the request header).
    fn control_message(kind: u16, flags: u16, seq: u32, code: i32, trailing: usize) -> Vec<u8> {
        let mut m = vec![];
        m.extend_from_slice(&(20 + trailing as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.resize(m.len() + trailing, 0);
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn flow(client: &str, dst: &str, dport: u16, reply_src: &str) -> Flow {
        Flow {
            orig: Tuple { src: ip(client), dst: ip(dst), proto: IPPROTO_UDP, sport: 40000, dport },
            reply: Tuple { src: ip(reply_src), dst: ip(client), proto: IPPROTO_UDP, sport: 9000, dport: 40000 },
            zone: None,
        }
    }

    #[test]
    fn flows_to_a_service_not_translated_to_a_serving_endpoint_are_stale() {
        let svc = UdpService { ips: vec![ip("10.43.0.9"), ip("192.0.2.8")], port: 53, node_port: Some(30053), endpoints: [ip("10.42.0.7")].into() };
        let empty = UdpService { ips: vec![ip("10.43.0.10")], port: 53, node_port: None, endpoints: BTreeSet::new() };
        let flows = [
            flow("10.42.0.2", "10.43.0.9", 53, "10.42.0.7"),        // to the live endpoint: kept
            flow("10.42.0.2", "10.43.0.9", 53, "10.42.0.99"),       // to a gone one: stale
            flow("10.42.0.3", "10.43.0.9", 53, "10.43.0.9"),        // never translated: stale
            flow("10.42.0.3", "192.0.2.8", 53, "10.42.0.98"),       // the LB IP: stale
            flow("10.42.0.3", "10.43.0.9", 54, "10.42.0.99"),       // another port: not the Service's
            flow("198.51.100.1", "192.0.2.1", 30053, "10.42.0.97"), // node port: stale
            flow("10.42.0.4", "10.43.0.10", 53, "10.42.0.96"),      // no endpoints: kept
        ];
        let mut tcp = flow("10.42.0.5", "10.43.0.9", 53, "10.42.0.99");
        tcp.orig.proto = 6;
        let all: Vec<Flow> = flows.iter().copied().chain([tcp]).collect();
        let got = stale(&[svc, empty], &all);
        assert_eq!(got, vec![flows[1], flows[2], flows[3], flows[5]]);
    }

    #[test]
    fn a_delete_carries_the_original_tuple_and_the_zone() {
        let mut f = flow("10.42.0.2", "10.43.0.9", 53, "10.42.0.7");
        f.zone = Some(3);
        let m = encode_delete(&f, 7);
        let ne16 = |v: u16| v.to_ne_bytes();
        let mut want = vec![];
        want.extend_from_slice(&(m.len() as u32).to_ne_bytes());
        want.extend_from_slice(&ne16(0x0102)); // ctnetlink, delete
        want.extend_from_slice(&ne16(NLM_F_REQUEST | NLM_F_ACK));
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        // CTA_TUPLE_ORIG { CTA_TUPLE_IP { src, dst }, CTA_TUPLE_PROTO { 17, 40000, 53 } }
        want.extend_from_slice(&ne16(4 + 20 + 28));
        want.extend_from_slice(&ne16(1 | NLA_F_NESTED));
        want.extend_from_slice(&ne16(20));
        want.extend_from_slice(&ne16(1 | NLA_F_NESTED));
        want.extend_from_slice(&[8, 0, 1, 0, 10, 42, 0, 2]);
        want.extend_from_slice(&[8, 0, 2, 0, 10, 43, 0, 9]);
        want.extend_from_slice(&ne16(28));
        want.extend_from_slice(&ne16(2 | NLA_F_NESTED));
        want.extend_from_slice(&[5, 0, 1, 0, 17, 0, 0, 0]);
        want.extend_from_slice(&[6, 0, 2, 0, 0x9c, 0x40, 0, 0]);
        want.extend_from_slice(&[6, 0, 3, 0, 0, 53, 0, 0]);
        // CTA_ZONE, big-endian
        want.extend_from_slice(&[6, 0, 18, 0, 0, 3, 0, 0]);
        assert_eq!(m, want);
        if cfg!(target_endian = "little") {
            assert_eq!(&m[4..6], &[0x02, 0x01]);
        }
    }

    #[test]
    fn a_dump_is_asked_for_and_its_entries_read_back() {
        let d = encode_dump(Family::V6, 1);
        assert_eq!(d.len(), 20);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), 0x0101);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(d[16], libc::AF_INET6 as u8);

        // an entry as the kernel sends it: orig and reply tuples, other attributes between
        let f = Flow {
            orig: Tuple { src: ip("fd00::2"), dst: ip("fd00:43::9"), proto: IPPROTO_UDP, sport: 5353, dport: 53 },
            reply: Tuple { src: ip("fd00:42::7"), dst: ip("fd00::2"), proto: IPPROTO_UDP, sport: 53, dport: 5353 },
            zone: None,
        };
        let mut attrs = vec![];
        attr(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, &encode_tuple(&f.orig));
        attr(&mut attrs, CTA_TUPLE_REPLY | NLA_F_NESTED, &encode_tuple(&f.reply));
        attr(&mut attrs, 3, &0x18u32.to_be_bytes()); // CTA_STATUS
        let mut buf = message(IPCTNL_MSG_CT_NEW, 0x2, 1, libc::AF_INET6 as u8, &attrs);
        buf.extend_from_slice(&control_message(NLMSG_DONE, 0x2, 1, 0, 0));
        let a = decode(&buf).expect("decode");
        assert_eq!(a, Answers { flows: vec![f], done: true, acks: vec![] });

        let err = control_message(NLMSG_ERROR, 0, 9, -libc::ENOENT, 16);
        assert_eq!(decode(&err).expect("decode").acks, vec![(9, libc::ENOENT)]);
        assert!(decode(&buf[..30]).is_err(), "a cut message");
    }
}
