//! A small nf_tables client over netlink (NETLINK_NETFILTER), so masquerading needs neither
//! the `nft` nor the `iptables` binary: messages are encoded here, sent as one batch that the
//! kernel applies atomically (all or nothing), and every message is acknowledged.
//! Only what berth-cni needs: tables, base chains, sets of addresses, set elements and rules
//! built from payload / bitwise / cmp / lookup / masq expressions.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// nf_tables message types (enum nf_tables_msg_types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Msg {
    NewTable = 0,
    NewChain = 3,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    NewSetElem = 12,
    DelSetElem = 14,
}

/// A netlink attribute: type and value; nested attributes carry NLA_F_NESTED.
#[derive(Debug, Clone)]
pub enum Attr {
    U32(u16, u32),
    Str(u16, String),
    Bytes(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

impl Attr {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        let kind = match self {
            Attr::U32(t, v) => {
                out.extend_from_slice(&v.to_be_bytes());
                *t
            }
            Attr::Str(t, s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
                *t
            }
            Attr::Bytes(t, b) => {
                out.extend_from_slice(b);
                *t
            }
            Attr::Nested(t, attrs) => {
                for a in attrs {
                    a.encode(out);
                }
                *t | NLA_F_NESTED
            }
        };
        let len = (out.len() - start) as u16;
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("nftables: {what}: {source}")]
    Kernel { what: String, source: std::io::Error },
    #[error("nftables: no answer from the kernel for {0}")]
    NoAnswer(String),
}

impl NftError {
    /// The kernel's errno, for callers that tolerate some (ENOENT on removal).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Messages applied by the kernel as one transaction.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// (sequence number, what the message does) of each message that expects an ack.
    pending: Vec<(u32, String)>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        let mut b = Batch { buf: Vec::new(), seq: 1, pending: Vec::new() };
        b.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        b
    }

    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[Attr]) -> u32 {
        let start = self.buf.len();
        let seq = self.seq;
        self.seq += 1;
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, resource id (big endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        for a in attrs {
            a.encode(&mut self.buf);
        }
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        seq
    }

    /// Add one nf_tables message; `what` names it in errors.
    pub fn add(&mut self, msg: Msg, flags: u16, family: u8, attrs: &[Attr], what: impl Into<String>) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg as u16;
        let seq = self.header(kind, NLM_F_REQUEST | NLM_F_ACK | flags, family, 0, attrs);
        self.pending.push((seq, what.into()));
    }

    /// Send the batch and wait for every acknowledgement. On a failure the kernel applied
    /// nothing; the error names the first message that failed.
    pub fn send(mut self) -> Result<(), NftError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        let sock = open_socket()?;
        let sent = unsafe { libc::send(sock.as_raw_fd(), self.buf.as_ptr().cast(), self.buf.len(), 0) };
        if sent < 0 {
            return Err(NftError::Socket(std::io::Error::last_os_error()));
        }
        let mut first_error: Option<NftError> = None;
        let mut buf = vec![0u8; 1 << 16];
        while !self.pending.is_empty() {
            // Once a failure is known the rest of the answers are only drained, not awaited.
            let flags = if first_error.is_some() { libc::MSG_DONTWAIT } else { 0 };
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if let Some(err) = first_error {
                    return Err(err);
                }
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    return Err(NftError::NoAnswer(self.pending.iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>().join(", ")));
                }
                return Err(NftError::Socket(e));
            }
            for (seq, errno) in acks(&buf[..n as usize]) {
                let Some(i) = self.pending.iter().position(|(s, _)| *s == seq) else { continue };
                let (_, what) = self.pending.remove(i);
                if errno != 0 && first_error.is_none() {
                    first_error = Some(NftError::Kernel { what, source: std::io::Error::from_raw_os_error(-errno) });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn open_socket() -> Result<OwnedFd, NftError> {
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(NftError::Socket(std::io::Error::last_os_error()));
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // A kernel that never answers must not hang a CNI call.
    let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>() as u32);
    }
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    let rc = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32) };
    if rc < 0 {
        return Err(NftError::Socket(std::io::Error::last_os_error()));
    }
    Ok(sock)
}

/// (sequence number, errno ≤ 0) of each NLMSG_ERROR message in a receive buffer.
fn acks(mut buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == NLMSG_ERROR && len >= 20 {
            let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            // The acknowledged message's own header follows: its sequence number at +8.
            let seq = if len >= 32 { u32::from_ne_bytes([buf[28], buf[29], buf[30], buf[31]]) } else { u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]) };
            out.push((seq, errno));
        }
        let advance = (len + 3) & !3;
        if advance >= buf.len() {
            break;
        }
        buf = &buf[advance..];
    }
    out
}

/// Attribute and constant names of nf_tables (linux/netfilter/nf_tables.h), for callers.
pub mod attr {
    pub const TABLE_NAME: u16 = 1;
    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;
    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_FLAGS: u16 = 3;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_ID: u16 = 10;
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_KEY: u16 = 1;
    pub const DATA_VALUE: u16 = 1;
    pub const PAYLOAD_DREG: u16 = 1;
    pub const PAYLOAD_BASE: u16 = 2;
    pub const PAYLOAD_OFFSET: u16 = 3;
    pub const PAYLOAD_LEN: u16 = 4;
    pub const LOOKUP_SET: u16 = 1;
    pub const LOOKUP_SREG: u16 = 2;
    pub const BITWISE_SREG: u16 = 1;
    pub const BITWISE_DREG: u16 = 2;
    pub const BITWISE_LEN: u16 = 3;
    pub const BITWISE_MASK: u16 = 4;
    pub const BITWISE_XOR: u16 = 5;
    pub const CMP_SREG: u16 = 1;
    pub const CMP_OP: u16 = 2;
    pub const CMP_DATA: u16 = 3;
    pub const CMP_NEQ: u32 = 1;
    pub const PAYLOAD_NETWORK_HEADER: u32 = 1;
    pub const REG_1: u32 = 1;
    pub const NF_INET_POST_ROUTING: u32 = 4;
    pub const NF_ACCEPT: u32 = 1;
    /// nft's data types for set keys.
    pub const TYPE_IPADDR: u32 = 7;
    pub const TYPE_IP6ADDR: u32 = 8;
}

/// Expressions of a rule.
pub mod expr {
    use super::{attr::*, Attr};

    fn expr(name: &str, data: Vec<Attr>) -> Attr {
        let mut v = vec![Attr::Str(EXPR_NAME, name.into())];
        if !data.is_empty() {
            v.push(Attr::Nested(EXPR_DATA, data));
        }
        Attr::Nested(LIST_ELEM, v)
    }

    fn value(kind: u16, bytes: &[u8]) -> Attr {
        Attr::Nested(kind, vec![Attr::Bytes(DATA_VALUE, bytes.to_vec())])
    }

    /// Load `len` bytes at `offset` of the network header into register 1.
    pub fn network_header(offset: u32, len: u32) -> Attr {
        expr(
            "payload",
            vec![
                Attr::U32(PAYLOAD_DREG, REG_1),
                Attr::U32(PAYLOAD_BASE, PAYLOAD_NETWORK_HEADER),
                Attr::U32(PAYLOAD_OFFSET, offset),
                Attr::U32(PAYLOAD_LEN, len),
            ],
        )
    }

    /// Register 1 &= mask.
    pub fn mask(mask: &[u8]) -> Attr {
        expr(
            "bitwise",
            vec![
                Attr::U32(BITWISE_SREG, REG_1),
                Attr::U32(BITWISE_DREG, REG_1),
                Attr::U32(BITWISE_LEN, mask.len() as u32),
                value(BITWISE_MASK, mask),
                value(BITWISE_XOR, &vec![0; mask.len()]),
            ],
        )
    }

    /// Stop unless register 1 != data.
    pub fn not_equal(data: &[u8]) -> Attr {
        expr("cmp", vec![Attr::U32(CMP_SREG, REG_1), Attr::U32(CMP_OP, CMP_NEQ), value(CMP_DATA, data)])
    }

    /// Stop unless register 1 is an element of `set`.
    pub fn in_set(set: &str) -> Attr {
        expr("lookup", vec![Attr::Str(LOOKUP_SET, set.into()), Attr::U32(LOOKUP_SREG, REG_1)])
    }

    pub fn masquerade() -> Attr {
        expr("masq", vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut out = vec![];
        Attr::Nested(4, vec![Attr::U32(1, 4), Attr::Str(2, "nat".into())]).encode(&mut out);
        // nested header (4) + u32 attr (8) + "nat\0" attr (8) = 20
        assert_eq!(out.len(), 20);
        assert_eq!(u16::from_ne_bytes([out[0], out[1]]), 20);
        assert_eq!(u16::from_ne_bytes([out[2], out[3]]), 4 | NLA_F_NESTED);
        assert_eq!(&out[8..12], &4u32.to_be_bytes());
        assert_eq!(u16::from_ne_bytes([out[12], out[13]]), 8);
        assert_eq!(&out[16..20], b"nat\0");
        let mut odd = vec![];
        Attr::Bytes(1, vec![1, 2, 3, 4, 5]).encode(&mut odd);
        assert_eq!((odd.len(), u16::from_ne_bytes([odd[0], odd[1]])), (12, 9));
    }

    #[test]
    fn acks_are_read_by_sequence() {
        let mut buf = vec![];
        for (seq, errno) in [(3u32, 0i32), (4, -2)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&errno.to_ne_bytes());
            // the acknowledged message's header
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
        }
        assert_eq!(acks(&buf), vec![(3, 0), (4, -2)]);
    }
}
