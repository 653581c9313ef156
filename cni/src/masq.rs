//! IP masquerade for traffic leaving the pod network (`"ipMasq": true`), through nf_tables
//! over netlink: no `iptables` or `nft` binary is needed, so it works on minimal and
//! nftables-only hosts.
//!
//! Layout, per address family (tables `ip berth-cni` and `ip6 berth-cni`), per network N
//! (h = the first 12 hex digits of sha256(N)):
//!   set   pods-h   the addresses of N's pods (an ADD inserts, a DEL removes, GC rebuilds)
//!   chain masq-h   nat hook postrouting priority srcnat (100), one rule:
//!                  saddr @pods-h, daddr outside each of N's subnets, not multicast → masquerade
//! `nft list table ip berth-cni` shows it. ADD rewrites the chain's one rule and adds the
//! address in one transaction, so the rule follows the network's subnets.
use crate::ipam::{from_u128, Range};
use crate::nft::{attr::*, expr, Attr, Batch, Msg, NFPROTO_IPV4, NFPROTO_IPV6, NLM_F_APPEND, NLM_F_CREATE};
use crate::types::CniError;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

pub const TABLE: &str = "berth-cni";
const SRCNAT_PRIORITY: u32 = 100;

struct Family {
    proto: u8,
    v6: bool,
}

const FAMILIES: [Family; 2] = [Family { proto: NFPROTO_IPV4, v6: false }, Family { proto: NFPROTO_IPV6, v6: true }];

fn names(network: &str) -> (String, String) {
    let h = hex::encode(Sha256::digest(network.as_bytes()));
    (format!("pods-{}", &h[..12]), format!("masq-{}", &h[..12]))
}

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn prefix_mask(prefix: u8, v6: bool) -> Vec<u8> {
    let bits: u32 = if v6 { 128 } else { 32 };
    let m: u128 = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
    let m = if v6 { m } else { m >> 96 };
    addr_bytes(from_u128(m & (u128::MAX >> (128 - bits)), v6))
}

/// The rule: source in the pod set, destination outside every subnet and not multicast.
fn rule(set: &str, subnets: &[&Range], v6: bool) -> Vec<Attr> {
    let (saddr, daddr, len) = if v6 { (8, 24, 16) } else { (12, 16, 4) };
    let mut e = vec![expr::network_header(saddr, len), expr::in_set(set)];
    for r in subnets {
        e.push(expr::network_header(daddr, len));
        e.push(expr::mask(&prefix_mask(r.prefix, v6)));
        e.push(expr::not_equal(&addr_bytes(from_u128(r.network, v6))));
    }
    let (multicast, prefix) = if v6 { ("ff00::".parse::<IpAddr>(), 8) } else { ("224.0.0.0".parse::<IpAddr>(), 4) };
    if let Ok(m) = multicast {
        e.push(expr::network_header(daddr, len));
        e.push(expr::mask(&prefix_mask(prefix, v6)));
        e.push(expr::not_equal(&addr_bytes(m)));
    }
    e.push(expr::masquerade());
    e
}

fn elements(ips: &[IpAddr]) -> Attr {
    Attr::Nested(
        SET_ELEM_LIST_ELEMENTS,
        ips.iter().map(|ip| Attr::Nested(LIST_ELEM, vec![Attr::Nested(SET_ELEM_KEY, vec![Attr::Bytes(DATA_VALUE, addr_bytes(*ip))])])).collect(),
    )
}

fn nft_err(e: crate::nft::NftError) -> CniError {
    CniError::io(format!("masquerade: {e}"))
}

/// Masquerade `ips` (the pod's addresses) for network `network` with subnets `ranges`.
pub fn add(network: &str, ranges: &[Range], ips: &[IpAddr]) -> Result<(), CniError> {
    let (set, chain) = names(network);
    let mut batch = Batch::new();
    for f in &FAMILIES {
        let mine: Vec<IpAddr> = ips.iter().copied().filter(|ip| ip.is_ipv6() == f.v6).collect();
        if mine.is_empty() {
            continue;
        }
        let subnets: Vec<&Range> = ranges.iter().filter(|r| r.v6 == f.v6).collect();
        let (key_type, key_len) = if f.v6 { (TYPE_IP6ADDR, 16) } else { (TYPE_IPADDR, 4) };
        batch.add(Msg::NewTable, NLM_F_CREATE, f.proto, &[Attr::Str(TABLE_NAME, TABLE.into())], format!("creating table {TABLE}"));
        batch.add(
            Msg::NewSet,
            NLM_F_CREATE,
            f.proto,
            &[
                Attr::Str(SET_TABLE, TABLE.into()),
                Attr::Str(SET_NAME, set.clone()),
                Attr::U32(SET_FLAGS, 0),
                Attr::U32(SET_KEY_TYPE, key_type),
                Attr::U32(SET_KEY_LEN, key_len),
                Attr::U32(SET_ID, 1),
            ],
            format!("creating set {set}"),
        );
        batch.add(
            Msg::NewChain,
            NLM_F_CREATE,
            f.proto,
            &[
                Attr::Str(CHAIN_TABLE, TABLE.into()),
                Attr::Str(CHAIN_NAME, chain.clone()),
                Attr::Nested(CHAIN_HOOK, vec![Attr::U32(HOOK_HOOKNUM, NF_INET_POST_ROUTING), Attr::U32(HOOK_PRIORITY, SRCNAT_PRIORITY)]),
                Attr::U32(CHAIN_POLICY, NF_ACCEPT),
                Attr::Str(CHAIN_TYPE, "nat".into()),
            ],
            format!("creating chain {chain}"),
        );
        let target = [Attr::Str(RULE_TABLE, TABLE.into()), Attr::Str(RULE_CHAIN, chain.clone())];
        batch.add(Msg::DelRule, 0, f.proto, &target, format!("flushing chain {chain}"));
        let mut r = target.to_vec();
        r.push(Attr::Nested(RULE_EXPRESSIONS, rule(&set, &subnets, f.v6)));
        batch.add(Msg::NewRule, NLM_F_CREATE | NLM_F_APPEND, f.proto, &r, format!("adding the masquerade rule to {chain}"));
        batch.add(
            Msg::NewSetElem,
            NLM_F_CREATE,
            f.proto,
            &[Attr::Str(SET_ELEM_LIST_TABLE, TABLE.into()), Attr::Str(SET_ELEM_LIST_SET, set.clone()), elements(&mine)],
            format!("adding {mine:?} to set {set}"),
        );
    }
    batch.send().map_err(nft_err)
}

/// Stop masquerading `ips`; addresses, sets or tables already gone are fine.
pub fn remove(network: &str, ips: &[IpAddr]) -> Result<(), CniError> {
    let (set, _) = names(network);
    for f in &FAMILIES {
        let mine: Vec<IpAddr> = ips.iter().copied().filter(|ip| ip.is_ipv6() == f.v6).collect();
        if mine.is_empty() {
            continue;
        }
        // One element at a time: a missing one must not keep the others in the set.
        for ip in mine {
            let mut batch = Batch::new();
            batch.add(
                Msg::DelSetElem,
                0,
                f.proto,
                &[Attr::Str(SET_ELEM_LIST_TABLE, TABLE.into()), Attr::Str(SET_ELEM_LIST_SET, set.clone()), elements(&[ip])],
                format!("removing {ip} from set {set}"),
            );
            match batch.send() {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::ENOENT) => {}
                Err(e) => return Err(nft_err(e)),
            }
        }
    }
    Ok(())
}

/// CNI GC: the network's set holds exactly `valid` (the addresses of live attachments).
pub fn retain(network: &str, valid: &[IpAddr]) -> Result<(), CniError> {
    let (set, _) = names(network);
    for f in &FAMILIES {
        let mine: Vec<IpAddr> = valid.iter().copied().filter(|ip| ip.is_ipv6() == f.v6).collect();
        let target = || vec![Attr::Str(SET_ELEM_LIST_TABLE, TABLE.into()), Attr::Str(SET_ELEM_LIST_SET, set.clone())];
        let mut batch = Batch::new();
        // No element list: the set is flushed, then refilled, in one transaction.
        batch.add(Msg::DelSetElem, 0, f.proto, &target(), format!("flushing set {set}"));
        if !mine.is_empty() {
            let mut attrs = target();
            attrs.push(elements(&mine));
            batch.add(Msg::NewSetElem, NLM_F_CREATE, f.proto, &attrs, format!("refilling set {set}"));
        }
        match batch.send() {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(nft_err(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_names() {
        assert_eq!(prefix_mask(24, false), vec![255, 255, 255, 0]);
        assert_eq!(prefix_mask(4, false), vec![240, 0, 0, 0]);
        assert_eq!(prefix_mask(0, false), vec![0, 0, 0, 0]);
        let m6 = prefix_mask(64, true);
        assert_eq!((&m6[..8], &m6[8..]), (&[255u8; 8][..], &[0u8; 8][..]));
        let (set, chain) = names("berth");
        assert!(set.starts_with("pods-") && chain.starts_with("masq-") && set[5..] == chain[5..] && set.len() == 17);
    }
}
