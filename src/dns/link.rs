//! The cluster DNS address on a link of its own in the node's network namespace, as
//! NodeLocal DNSCache puts it on its dummy interface: an address of the host, so pods reach it
//! through their default route and nothing needs a service proxy rule. One link per address,
//! named after it (`bdns-0a2b000a` for 10.43.0.10; a hash for IPv6) so a restarted agent finds
//! and reuses the link of a run that crashed. A kernel built without the dummy driver gets a
//! bridge without ports instead (its addresses are local all the same). Removed on clean stop.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags};
use netlink_packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink: {0}")]
    Connection(#[from] std::io::Error),
    #[error("{what} {link}: {source}")]
    Netlink {
        what: &'static str,
        link: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} vanished while being set up")]
    Vanished(String),
}

/// The link that carries `ip`: `bdns-` and the IPv4 address in hex, or 10 hex digits of a hash
/// of the IPv6 address (at most 15 characters, the kernel's limit).
pub fn link_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("bdns-{:08x}", u32::from(*v4)),
        IpAddr::V6(v6) => {
            // FNV-1a: deterministic across runs and builds
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in v6.octets() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("bdns-{:010x}", h & 0xff_ffff_ffff)
        }
    }
}

/// Runs `f` with a netlink handle of this process's network namespace.
async fn with_handle<T, F, Fut>(f: F) -> Result<T, LinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, LinkError>>,
{
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let out = f(handle).await;
    task.abort();
    out
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    match h.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(LinkError::Netlink { what: "looking up", link: name.to_string(), source }),
    }
}

/// Makes the link for `ip` (or reuses one left over), brings it up and puts `ip` on it.
pub async fn ensure(ip: IpAddr) -> Result<String, LinkError> {
    let name = link_name(&ip);
    with_handle(|h| async move {
        let link = match link_by_name(&h, &name).await? {
            Some(l) => l,
            None => {
                create(&h, &name).await?;
                link_by_name(&h, &name).await?.ok_or_else(|| LinkError::Vanished(name.clone()))?
            }
        };
        let index = link.header.index;
        h.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(|source| LinkError::Netlink {
            what: "bringing up",
            link: name.clone(),
            source,
        })?;
        let mut addrs = h.address().get().set_link_index_filter(index).execute();
        while let Some(a) = addrs.try_next().await.map_err(|source| LinkError::Netlink { what: "listing the addresses of", link: name.clone(), source })? {
            if a.attributes.iter().any(|x| matches!(x, AddressAttribute::Address(v) if *v == ip)) {
                return Ok(name);
            }
        }
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let mut add = h.address().add(index, ip, prefix);
        // no duplicate address detection: the address must be usable at once
        add.message_mut().header.flags = AddressHeaderFlags::Nodad;
        match add.execute().await {
            Ok(()) => Ok(name),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(name),
            Err(source) => Err(LinkError::Netlink { what: "adding the address to", link: name.clone(), source }),
        }
    })
    .await
}

/// A dummy link named `name`, or a bridge without ports where the kernel has no dummy driver.
async fn create(h: &Handle, name: &str) -> Result<(), LinkError> {
    let err = |source| LinkError::Netlink { what: "creating", link: name.to_string(), source };
    match h.link().add(LinkDummy::new(name).up().build()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
            tracing::debug!(link = name, "the kernel has no dummy links: a bridge without ports carries the address");
            match h.link().add(LinkBridge::new(name).up().build()).execute().await {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
                Err(e) => Err(err(e)),
            }
        }
        Err(e) => Err(err(e)),
    }
}

/// Removes the link of `ip` (and so the address); a missing link is fine.
pub async fn remove(ip: IpAddr) -> Result<(), LinkError> {
    let name = link_name(&ip);
    with_handle(|h| async move {
        if let Some(l) = link_by_name(&h, &name).await? {
            match h.link().del(l.header.index).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::ENODEV) => {}
                Err(source) => return Err(LinkError::Netlink { what: "removing", link: name.clone(), source }),
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_derived_from_the_address() {
        assert_eq!(link_name(&"10.43.0.10".parse().unwrap()), "bdns-0a2b000a");
        let v6 = link_name(&"fd00:43::a".parse().unwrap());
        assert!(v6.starts_with("bdns-") && v6.len() == 15, "{v6}");
        assert_eq!(v6, link_name(&"fd00:43::a".parse().unwrap()));
        assert_ne!(v6, link_name(&"fd00:43::b".parse().unwrap()));
    }
}
