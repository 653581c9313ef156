//! berth-cni driven directly, as any CNI runtime would: the spec's commands, its error codes
//! for bad input, and address management under concurrency.
use berth_integration::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn plugin() -> PathBuf {
    berth_bin().with_file_name("berth-cni")
}

/// Run berth-cni; returns (exit success, stdout JSON or Null).
fn cni(command: &str, id: &str, netns: &str, conf: &Value) -> (bool, Value) {
    let mut child = Command::new(plugin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run berth-cni");
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn raw(command: Option<&str>, stdin: &str) -> Value {
    let mut cmd = Command::new(plugin());
    cmd.env_clear().env("CNI_CONTAINERID", "x").env("CNI_NETNS", "/nonexistent").env("CNI_IFNAME", "eth0");
    if let Some(c) = command {
        cmd.env("CNI_COMMAND", c);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success() || command == Some("VERSION"));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn conf(dir: &std::path::Path, bridge: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": "berth-conformance", "type": "berth-cni", "bridge": bridge, "isGateway": true,
        "ipam": {"ranges": [[{"subnet": subnet}]], "dataDir": dir.join("ipam")}})
}

#[test]
fn bad_input_gets_cni_error_codes() {
    let dir = TempDir::new("cni-conf");
    let _bridge = LinkGuard("berthcf0".into());
    let good = conf(dir.path(), "berthcf0", "10.252.0.0/24");
    let v = raw(Some("VERSION"), r#"{"cniVersion":"1.1.0"}"#);
    assert!(v["supportedVersions"].as_array().unwrap().contains(&json!("1.1.0")));
    assert_eq!(raw(None, &good.to_string())["code"], 4, "no CNI_COMMAND");
    assert_eq!(raw(Some("BOGUS"), &good.to_string())["code"], 4);
    assert_eq!(raw(Some("ADD"), "{not json")["code"], 6);
    let mut v = good.clone();
    v["cniVersion"] = json!("9.9.9");
    assert_eq!(raw(Some("ADD"), &v.to_string())["code"], 1);
    let mut v = good.clone();
    v["name"] = json!("");
    assert_eq!(raw(Some("ADD"), &v.to_string())["code"], 7);
    let mut v = good.clone();
    v["ipam"]["ranges"] = json!([[{"subnet": "10.252.0.0/16"}], [{"subnet": "10.252.3.0/24"}]]);
    let e = raw(Some("ADD"), &v.to_string());
    assert_eq!(e["code"], 7);
    assert!(e["details"].as_str().unwrap().contains("overlapping subnet"), "{e}");
    let mut v = good.clone();
    v["ipam"]["ranges"] = json!([[{"subnet": "not-a-cidr"}]]);
    assert_eq!(raw(Some("ADD"), &v.to_string())["code"], 7);
    let mut v = good.clone();
    v["ipam"] = json!({});
    assert_eq!(raw(Some("ADD"), &v.to_string())["code"], 7);
    let mut v = good.clone();
    v["bridge"] = json!("a-bridge-name-far-too-long");
    assert_eq!(raw(Some("ADD"), &v.to_string())["code"], 7);
    // A missing netns is an error for ADD, not for DEL.
    let (ok, e) = cni("ADD", "bad-netns", "/nonexistent/netns", &good);
    assert!(!ok, "{e}");
    assert!(e["code"].as_u64().is_some() && e["msg"].is_string());
    let (ok, _) = cni("DEL", "never-added", "/nonexistent/netns", &good);
    assert!(ok, "DEL of an unknown container succeeds");
    let (ok, e) = cni("CHECK", "never-added", "/nonexistent/netns", &good);
    assert!(!ok);
    assert_eq!(e["code"], 3);
    assert!(entries_with_prefix(&dir.path().join("ipam/berth-conformance"), "10.").is_empty(), "nothing allocated");
}

/// A network namespace of our own, pinned at a file under a TempDir; removed on drop.
struct Netns {
    _dir: TempDir,
    path: PathBuf,
}

impl Netns {
    fn new() -> Netns {
        let dir = TempDir::new("netns");
        let path = dir.path().join("ns");
        std::fs::File::create(&path).unwrap();
        let target = path.clone();
        std::thread::spawn(move || {
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let src = std::ffi::CString::new("/proc/thread-self/ns/net").unwrap();
            let dst = std::ffi::CString::new(target.to_string_lossy().as_bytes()).unwrap();
            assert_eq!(unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) }, 0);
        })
        .join()
        .unwrap();
        Netns { _dir: dir, path }
    }
    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let p = std::ffi::CString::new(self.path.to_string_lossy().as_bytes()).unwrap();
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn add_check_del_and_running_out_of_addresses() {
    let dir = TempDir::new("cni-run");
    let bridge = format!("berthr{}", std::process::id() % 10000);
    let _guard = LinkGuard(bridge.clone());
    // A /29: gateway .1, so .2-.6 are the five addresses to hand out.
    let c = conf(dir.path(), &bridge, "10.253.9.0/29");
    let namespaces: Vec<Netns> = (0..6).map(|_| Netns::new()).collect();
    let mut results = vec![];
    for (i, ns) in namespaces.iter().take(5).enumerate() {
        let (ok, r) = cni("ADD", &format!("c{i}"), ns.path(), &c);
        assert!(ok, "{r}");
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["interfaces"][2]["sandbox"], ns.path());
        assert_eq!(r["ips"][0]["gateway"], "10.253.9.1");
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        results.push(r);
    }
    let mut addrs: Vec<String> = results.iter().map(|r| r["ips"][0]["address"].as_str().unwrap().to_string()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 5);
    let (ok, e) = cni("ADD", "c5", namespaces[5].path(), &c);
    assert!(!ok);
    assert_eq!(e["code"], 11, "{e}");
    assert_eq!(e["msg"], "no addresses");
    let mut with_prev = c.clone();
    with_prev["prevResult"] = results[0].clone();
    let (ok, e) = cni("CHECK", "c0", namespaces[0].path(), &with_prev);
    assert!(ok, "{e}");
    let links = |b: &str| String::from_utf8_lossy(&Command::new("ip").args(["-o", "link", "show", "master", b]).output().unwrap().stdout).lines().count();
    assert_eq!(links(&bridge), 5);
    for (i, ns) in namespaces.iter().enumerate() {
        let (ok, e) = cni("DEL", &format!("c{i}"), ns.path(), &c);
        assert!(ok, "{e}");
        let (ok, _) = cni("DEL", &format!("c{i}"), ns.path(), &c);
        assert!(ok, "DEL twice");
    }
    assert_eq!(links(&bridge), 0);
    assert!(entries_with_prefix(&dir.path().join("ipam/berth-conformance"), "10.").is_empty());
    // GC releases what the runtime no longer knows about.
    let (ok, _) = cni("ADD", "keep", namespaces[0].path(), &c);
    assert!(ok);
    let (ok, _) = cni("ADD", "stale", namespaces[1].path(), &c);
    assert!(ok);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let (ok, e) = cni("GC", "", "", &gc);
    assert!(ok, "{e}");
    assert_eq!(entries_with_prefix(&dir.path().join("ipam/berth-conformance"), "10.").len(), 1);
    let (ok, _) = cni("STATUS", "", "", &c);
    assert!(ok);
    for (i, id) in ["keep", "stale"].iter().enumerate() {
        cni("DEL", id, namespaces[i].path(), &c);
    }
}

#[test]
fn dual_stack_pods_get_both_families() {
    let dir = TempDir::new("cni-dual");
    let bridge = format!("berthv{}", std::process::id() % 10000);
    let _guard = LinkGuard(bridge.clone());
    let mut c = conf(dir.path(), &bridge, "10.254.3.0/24");
    c["ipam"]["ranges"] = json!([[{"subnet": "10.254.3.0/24"}], [{"subnet": "fd00:b:3::/64"}]]);
    let ns = Netns::new();
    let (ok, r) = cni("ADD", "dual", ns.path(), &c);
    assert!(ok, "{r}");
    let ips: Vec<&str> = r["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
    assert_eq!(ips, ["10.254.3.2/24", "fd00:b:3::2/64"]);
    assert_eq!(r["routes"][1]["dst"], "::/0");
    let (ok, e) = cni("CHECK", "dual", ns.path(), &{
        let mut p = c.clone();
        p["prevResult"] = r.clone();
        p
    });
    assert!(ok, "{e}");
    let (ok, _) = cni("DEL", "dual", ns.path(), &c);
    assert!(ok);
}

#[test]
fn masquerade_follows_add_del_and_gc() {
    let dir = TempDir::new("cni-masq");
    let bridge = format!("berthm{}", std::process::id() % 10000);
    let _guard = LinkGuard(bridge.clone());
    let mut c = conf(dir.path(), &bridge, "10.253.10.0/29");
    let network = format!("berth-masq-{}", std::process::id());
    c["name"] = json!(network);
    c["ipMasq"] = json!(true);
    let _masq = MasqGuard(network.clone());
    let namespaces: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
    let mut ips = vec![];
    for (i, ns) in namespaces.iter().enumerate() {
        let (ok, r) = cni("ADD", &format!("m{i}"), ns.path(), &c);
        assert!(ok, "{r}");
        ips.push(r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string());
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(masq_state(&network).map(|(e, r)| (sorted(e), r)), Some((sorted(ips.clone()), 1)), "one rule, every pod");
    let (ok, e) = cni("DEL", "m0", namespaces[0].path(), &c);
    assert!(ok, "{e}");
    assert_eq!(masq_state(&network).map(|(e, _)| sorted(e)), Some(sorted(ips[1..].to_vec())));
    // DEL of an address that is already gone is fine.
    let (ok, e) = cni("DEL", "m0", namespaces[0].path(), &c);
    assert!(ok, "{e}");
    // GC keeps only the live attachments' addresses.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "m2", "ifname": "eth0"}]);
    let (ok, e) = cni("GC", "", "", &gc);
    assert!(ok, "{e}");
    assert_eq!(masq_state(&network).map(|(e, _)| e), Some(vec![ips[2].clone()]));
    for (i, ns) in namespaces.iter().enumerate() {
        let (ok, e) = cni("DEL", &format!("m{i}"), ns.path(), &c);
        assert!(ok, "{e}");
    }
    assert_eq!(masq_state(&network).map(|(e, _)| e), Some(vec![]));
}
