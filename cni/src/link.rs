//! The netlink work: the bridge and its gateway address on the host, the veth pair, and the
//! pod side (name, MTU, address, routes) inside the pod's network namespace. Netlink sockets
//! belong to the namespace they were opened in, so pod-side work runs on a thread that has
//! joined the pod's namespace first.
use crate::types::CniError;
use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoBridgePort, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

fn nl(what: &str) -> impl Fn(rtnetlink::Error) -> CniError + '_ {
    move |e| CniError::io(format!("{what}: {e}"))
}

/// Run async netlink work on a fresh single-threaded runtime, in the current network namespace.
pub fn with_handle<T, F, Fut>(f: F) -> Result<T, CniError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, CniError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| CniError::io(e.to_string()))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| CniError::io(format!("netlink: {e}")))?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        r
    })
}

/// Run `f` on a thread inside the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> Result<T, CniError> + Send + 'static) -> Result<T, CniError> {
    let file = std::fs::File::open(netns).map_err(|e| CniError::new(5, "failed to open netns", format!("{netns}: {e}")))?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| CniError::io(format!("setns: {e}")))?;
        f()
    })
    .join()
    .map_err(|_| CniError::io("netns worker panicked"))?
}

pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    match h.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(m) => Ok(m),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(CniError::io(format!("looking up {name}: {e}"))),
    }
}

pub fn mac_of(m: &LinkMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")),
            _ => None,
        })
        .unwrap_or_default()
}

/// Create the bridge if needed and bring it up; returns it.
pub async fn ensure_bridge(h: &Handle, name: &str, mtu: Option<u32>, promisc: bool) -> Result<LinkMessage, CniError> {
    if link_by_name(h, name).await?.is_none() {
        let mut b = LinkBridge::new(name);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        match h.link().add(b.up().build()).execute().await {
            Ok(()) => {}
            // Another ADD made it first.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(CniError::io(format!("creating bridge {name}: {e}"))),
        }
    }
    let br = link_by_name(h, name).await?.ok_or_else(|| CniError::io(format!("bridge {name} vanished")))?;
    let mut set = LinkUnspec::new_with_index(br.header.index).up();
    if promisc {
        set = set.promiscuous(true);
    }
    h.link().set(set.build()).execute().await.map_err(nl("bringing the bridge up"))?;
    Ok(br)
}

/// Add `ip/prefix` to the link unless it is already there.
pub async fn ensure_address(h: &Handle, index: u32, ip: IpAddr, prefix: u8) -> Result<(), CniError> {
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(a) = addrs.try_next().await.map_err(nl("listing addresses"))? {
        if a.attributes.iter().any(|x| matches!(x, AddressAttribute::Address(v) if *v == ip)) {
            return Ok(());
        }
    }
    match h.address().add(index, ip, prefix).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        Err(e) => Err(CniError::io(format!("adding {ip}/{prefix}: {e}"))),
    }
}

/// Create a veth pair with `host` on the host, attached to the bridge, and `peer` made
/// directly inside the pod's namespace: creating it there (rather than moving it) spares the
/// kernel's network synchronisation that a namespace move costs (~15 ms).
pub async fn create_veth(h: &Handle, host: &str, peer: &str, bridge_index: u32, mtu: Option<u32>, hairpin: bool, netns: &str) -> Result<LinkMessage, CniError> {
    if let Some(old) = link_by_name(h, host).await? {
        // Left over from an earlier ADD of the same container: start clean.
        let _ = h.link().del(old.header.index).execute().await;
    }
    let ns = std::fs::File::open(netns).map_err(|e| CniError::new(5, "failed to open netns", format!("{netns}: {e}")))?;
    let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(ns.as_raw_fd());
    let mut v = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(host.to_string());
    if let Some(m) = mtu {
        peer_msg = peer_msg.mtu(m);
        v = v.mtu(m);
    }
    let v = v.set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
    h.link().add(v.build()).execute().await.map_err(nl("creating the veth pair"))?;
    let host_link = link_by_name(h, host).await?.ok_or_else(|| CniError::io("the host veth vanished"))?;
    h.link()
        .set(LinkUnspec::new_with_index(host_link.header.index).controller(bridge_index).up().build())
        .execute()
        .await
        .map_err(nl("attaching the veth to the bridge"))?;
    if hairpin {
        let port = LinkBridgePort::new(host_link.header.index).append_info_data(InfoBridgePort::HairpinMode(true)).build();
        h.link().set_port(port).execute().await.map_err(nl("hairpin mode"))?;
    }
    Ok(host_link)
}

/// Delete a link by name; a missing link is fine.
pub async fn delete_link(h: &Handle, name: &str) -> Result<(), CniError> {
    if let Some(l) = link_by_name(h, name).await? {
        match h.link().del(l.header.index).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
            Err(e) => return Err(CniError::io(format!("deleting {name}: {e}"))),
        }
    }
    Ok(())
}

/// Inside the pod: rename the peer, bring it and lo up, add addresses and the default routes.
pub async fn configure_pod_side(h: &Handle, peer: &str, ifname: &str, addrs: &[(IpAddr, u8, Option<IpAddr>)]) -> Result<LinkMessage, CniError> {
    let link = link_by_name(h, peer).await?.ok_or_else(|| CniError::io(format!("{peer} is not in the pod")))?;
    let index = link.header.index;
    h.link().set(LinkUnspec::new_with_index(index).name(ifname.to_string()).build()).execute().await.map_err(nl("renaming the pod interface"))?;
    h.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(nl("bringing the pod interface up"))?;
    if let Some(lo) = link_by_name(h, "lo").await? {
        h.link().set(LinkUnspec::new_with_index(lo.header.index).up().build()).execute().await.map_err(nl("lo up"))?;
    }
    for (ip, prefix, gw) in addrs {
        ensure_address(h, index, *ip, *prefix).await?;
        if let Some(gw) = gw {
            let route = match gw {
                IpAddr::V4(g) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().output_interface(index).gateway(*g).build(),
                IpAddr::V6(g) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().output_interface(index).gateway(*g).build(),
            };
            match h.route().add(route).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(CniError::io(format!("default route via {gw}: {e}"))),
            }
        }
    }
    link_by_name(h, ifname).await?.ok_or_else(|| CniError::io("the pod interface vanished"))
}

/// The addresses on `ifname` in the current namespace, None if the interface is missing.
pub async fn addresses_on(h: &Handle, ifname: &str) -> Result<Option<Vec<IpAddr>>, CniError> {
    let Some(link) = link_by_name(h, ifname).await? else { return Ok(None) };
    let mut out = Vec::new();
    let mut addrs = h.address().get().set_link_index_filter(link.header.index).execute();
    while let Some(a) = addrs.try_next().await.map_err(nl("listing addresses"))? {
        for x in &a.attributes {
            if let AddressAttribute::Address(ip) = x {
                out.push(*ip);
            }
        }
    }
    Ok(Some(out))
}
