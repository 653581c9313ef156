//! berth-cni: a CNI plugin (spec 0.3.0 – 1.1.0) that connects pods to a Linux bridge with a
//! veth pair and hands out addresses from host-local ranges. Works under any CNI runtime.
mod ipam;
mod link;
mod masq;
mod nft;
mod types;

use ipam::{from_u128, range_sets, Allocation, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::IpAddr;
use types::{CniError, Env, NetConf, SUPPORTED_VERSIONS};

fn main() {
    let env = Env::from_env();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<Value>(&stdin).ok().and_then(|v| v["cniVersion"].as_str().map(String::from)).unwrap_or_else(|| "1.1.0".into());
    let outcome = run(&env, &stdin);
    let mut out = std::io::stdout();
    match outcome {
        Ok(Some(v)) => {
            let _ = serde_json::to_writer(&mut out, &v);
            let _ = out.write_all(b"\n");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = serde_json::to_writer(&mut out, &e.to_json(&version));
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            std::process::exit(1);
        }
    }
}

fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    match env.command.as_str() {
        "VERSION" => Ok(Some(json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS}))),
        "ADD" => add(env, &types::parse_conf(stdin)?).map(Some),
        "DEL" => del(env, &types::parse_conf(stdin)?).map(|_| None),
        "CHECK" => check(env, &types::parse_conf(stdin)?).map(|_| None),
        "STATUS" => status(&types::parse_conf(stdin)?).map(|_| None),
        "GC" => gc(&types::parse_conf(stdin)?).map(|_| None),
        "" => Err(CniError::env("CNI_COMMAND is required")),
        other => Err(CniError::env(format!("unknown CNI_COMMAND {other:?}"))),
    }
}

/// Host-side veth name: stable per container and interface, so DEL finds it.
fn host_veth(id: &str, ifname: &str) -> String {
    let h = hex::encode(Sha256::digest(format!("{id}/{ifname}").as_bytes()));
    format!("veth{}", &h[..11])
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    env.require(true)?;
    let sets = range_sets(&conf.ipam)?;
    // Nothing is made for a pod whose namespace cannot be opened.
    std::fs::File::open(&env.netns).map_err(|e| CniError::new(5, "failed to open netns", format!("{}: {e}", env.netns)))?;
    let allocs = {
        let store = Store::open(conf.ipam.data_dir.as_deref(), &conf.name)?;
        store.allocate(&sets, &conf.ipam.reserved, &env.container_id, &env.ifname)?
    };
    match wire(env, conf, &allocs) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Roll back: nothing of a failed ADD stays.
            let ips: Vec<IpAddr> = allocs.iter().map(|a| a.ip).collect();
            let _ = unwire(env, conf, &ips);
            if let Ok(store) = Store::open(conf.ipam.data_dir.as_deref(), &conf.name) {
                store.release(&env.container_id, &env.ifname);
            }
            Err(e)
        }
    }
}

fn wire(env: &Env, conf: &NetConf, allocs: &[Allocation]) -> Result<Value, CniError> {
    let host = host_veth(&env.container_id, &env.ifname);
    // The pod end is created in the pod's namespace under its final name.
    let peer = env.ifname.clone();
    let gateways: Vec<(IpAddr, u8)> = allocs.iter().map(|a| (from_u128(a.range.gateway, a.range.v6), a.range.prefix)).collect();
    let (bridge, host_link) = link::with_handle(|h| {
        let (conf, host, peer, netns, gateways) = (conf.clone(), host.clone(), peer.clone(), env.netns.clone(), gateways.clone());
        async move {
            let br = link::ensure_bridge(&h, &conf.bridge, conf.mtu, conf.promisc_mode).await?;
            if conf.is_gateway {
                for (gw, prefix) in &gateways {
                    link::ensure_address(&h, br.header.index, *gw, *prefix).await?;
                }
            }
            let hl = link::create_veth(&h, &host, &peer, br.header.index, conf.mtu, conf.hairpin_mode, &netns).await?;
            Ok((br, hl))
        }
    })?;
    if conf.is_gateway {
        // The bridge routes the pods' traffic: the host must forward it (as CNI's bridge does).
        for v6 in [false, true] {
            if allocs.iter().any(|a| a.range.v6 == v6) {
                enable_forwarding(v6)?;
            }
        }
    }
    let default_route = conf.is_gateway || conf.is_default_gateway;
    let pod_addrs: Vec<(IpAddr, u8, Option<IpAddr>)> =
        allocs.iter().map(|a| (a.ip, a.range.prefix, default_route.then(|| from_u128(a.range.gateway, a.range.v6)))).collect();
    let ifname = env.ifname.clone();
    let pod_link = link::in_netns(&env.netns, move || link::with_handle(|h| async move { link::configure_pod_side(&h, &peer, &ifname, &pod_addrs).await }))?;
    if conf.ip_masq {
        let ranges: Vec<ipam::Range> = range_sets(&conf.ipam)?.into_iter().flatten().collect();
        let ips: Vec<IpAddr> = allocs.iter().map(|a| a.ip).collect();
        masq::add(&conf.name, &ranges, &ips)?;
    }
    Ok(result(env, conf, allocs, &link::mac_of(&bridge), &host, &link::mac_of(&host_link), &link::mac_of(&pod_link), default_route))
}

fn enable_forwarding(v6: bool) -> Result<(), CniError> {
    let path = if v6 { "/proc/sys/net/ipv6/conf/all/forwarding" } else { "/proc/sys/net/ipv4/ip_forward" };
    if std::fs::read_to_string(path).map(|v| v.trim() == "1").unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| CniError::io(format!("enabling forwarding ({path}): {e}")))
}

#[allow(clippy::too_many_arguments)]
fn result(env: &Env, conf: &NetConf, allocs: &[Allocation], bridge_mac: &str, host: &str, host_mac: &str, pod_mac: &str, default_route: bool) -> Value {
    let old = !conf.cni_version.starts_with("1.");
    let ips: Vec<Value> = allocs
        .iter()
        .map(|a| {
            let mut ip =
                json!({"address": format!("{}/{}", a.ip, a.range.prefix), "gateway": from_u128(a.range.gateway, a.range.v6).to_string(), "interface": 2});
            if old {
                ip["version"] = json!(if a.range.v6 { "6" } else { "4" });
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = if default_route {
        allocs.iter().map(|a| json!({"dst": if a.range.v6 { "::/0" } else { "0.0.0.0/0" }, "gw": from_u128(a.range.gateway, a.range.v6).to_string()})).collect()
    } else {
        vec![]
    };
    json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            {"name": conf.bridge, "mac": bridge_mac},
            {"name": host, "mac": host_mac},
            {"name": env.ifname, "mac": pod_mac, "sandbox": env.netns},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

/// Remove the veth (from the host side; the pod side goes with it) and stop masquerading
/// the pod's addresses `ips`.
fn unwire(env: &Env, conf: &NetConf, ips: &[IpAddr]) -> Result<(), CniError> {
    let host = host_veth(&env.container_id, &env.ifname);
    link::with_handle(|h| async move { link::delete_link(&h, &host).await })?;
    if conf.ip_masq {
        masq::remove(&conf.name, ips)?;
    }
    Ok(())
}

fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    if env.container_id.is_empty() {
        return Err(CniError::env("CNI_CONTAINERID is required"));
    }
    if env.ifname.is_empty() {
        return Err(CniError::env("CNI_IFNAME is required"));
    }
    // DEL must succeed for unknown containers and gone namespaces: each step tolerates absence.
    let store = Store::open(conf.ipam.data_dir.as_deref(), &conf.name)?;
    let ips = store.addresses_of(&env.container_id, &env.ifname);
    unwire(env, conf, &ips)?;
    store.release(&env.container_id, &env.ifname);
    Ok(())
}

fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    env.require(true)?;
    let store = Store::open(conf.ipam.data_dir.as_deref(), &conf.name)?;
    let mut want = store.addresses_of(&env.container_id, &env.ifname);
    drop(store);
    if want.is_empty() {
        return Err(CniError::new(3, "container unknown or does not exist", format!("no addresses recorded for {}", env.container_id)));
    }
    if let Some(prev) = &conf.prev_result {
        for ip in prev["ips"].as_array().into_iter().flatten() {
            let a = ip["address"].as_str().unwrap_or_default();
            let parsed: Option<IpAddr> = a.split('/').next().and_then(|s| s.parse().ok());
            if parsed.map(|p| !want.contains(&p)).unwrap_or(true) {
                return Err(CniError::new(999, "CHECK failed", format!("prevResult address {a} is not allocated to this container")));
            }
        }
    }
    let ifname = env.ifname.clone();
    let have = link::in_netns(&env.netns, move || link::with_handle(|h| async move { link::addresses_on(&h, &ifname).await }))?
        .ok_or_else(|| CniError::new(999, "CHECK failed", format!("interface {} is missing in the pod", env.ifname)))?;
    want.retain(|ip| !have.contains(ip));
    if !want.is_empty() {
        return Err(CniError::new(999, "CHECK failed", format!("addresses missing on {}: {want:?}", env.ifname)));
    }
    let host = host_veth(&env.container_id, &env.ifname);
    let present = link::with_handle(|h| async move { link::link_by_name(&h, &host).await.map(|l| l.is_some()) })?;
    if !present {
        return Err(CniError::new(999, "CHECK failed", "the host side of the veth pair is missing"));
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    range_sets(&conf.ipam)?;
    Store::open(conf.ipam.data_dir.as_deref(), &conf.name).map_err(|e| CniError::new(50, "the plugin is not available", e.details))?;
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid: Vec<(String, String)> = conf.valid_attachments.iter().flatten().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
    let store = Store::open(conf.ipam.data_dir.as_deref(), &conf.name)?;
    store.gc(&valid);
    if conf.ip_masq {
        masq::retain(&conf.name, &store.addresses())?;
    }
    Ok(())
}
