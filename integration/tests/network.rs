//! Pod networking through CNI with Debian's containernetworking-plugins (bridge, host-local,
//! loopback, portmap) run by Berth's CNI runner. All traffic stays on a bridge the test owns.
use berth::cri::v1 as cri;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A private CNI setup: its own bridge, subnet, IPAM dir and conf dir; removed on drop.
struct Net {
    dir: TempDir,
    bridge: String,
    subnet_octet: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Plugins {
    /// Debian's containernetworking-plugins: bridge + host-local + loopback (+ portmap).
    Debian { portmap: bool },
    /// Berth's own plugin, with the config's cniVersion (containerd 1.6 knows up to 1.0.0).
    Berth { version: &'static str },
}

impl Net {
    fn new(plugins: Plugins) -> Net {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let bridge = format!("berth{}", (pid * 7 + n) % 100_000);
        let subnet_octet = 100 + (pid + n * 13) % 150;
        let dir = TempDir::new("cni");
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        let subnet = format!("10.{subnet_octet}.7.0/24");
        let (version, plugins) = match plugins {
            Plugins::Debian { portmap } => {
                let mut p = vec![
                    serde_json::json!({"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
                        "ipam": {"type": "host-local", "dataDir": dir.path().join("ipam"), "ranges": [[{"subnet": subnet}]]}}),
                    serde_json::json!({"type": "loopback"}),
                ];
                if portmap {
                    p.push(serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
                }
                ("1.0.0", p)
            }
            Plugins::Berth { version } => (
                version,
                vec![serde_json::json!({"type": "berth-cni", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
                    "ipam": {"dataDir": dir.path().join("ipam"), "ranges": [[{"subnet": subnet}]]}})],
            ),
        };
        let list = serde_json::json!({"cniVersion": version, "name": format!("berth-it-{n}"), "plugins": plugins});
        std::fs::write(dir.path().join("conf/10-test.conflist"), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        Net { dir, bridge, subnet_octet }
    }

    fn config(&self) -> String {
        let own = berth_bin().parent().unwrap().display().to_string();
        format!("[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{own}\", \"/usr/lib/cni\"]\n", self.dir.path().join("conf").display())
    }

    fn gateway(&self) -> String {
        format!("10.{}.7.1", self.subnet_octet)
    }

    fn ipam_files(&self) -> Vec<String> {
        let mut v = vec![];
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("ipam")) {
            for net in rd.flatten() {
                for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
                    let name = f.file_name().to_string_lossy().to_string();
                    if name.starts_with("10.") {
                        v.push(name);
                    }
                }
            }
        }
        v
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// Host-side veths attached to `bridge`.
fn veths(bridge: &str) -> usize {
    let out = Command::new("ip").args(["-o", "link", "show", "master", bridge]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("veth")).count()
}

fn busybox() -> String {
    format!("{}/berth/busybox:latest", test_registry())
}

fn pod_config(name: &str, logs: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "default".into(), attempt: 0 }),
        hostname: name.into(),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, cfg: &cri::PodSandboxConfig) -> (String, String) {
    let id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(cfg.clone()), runtime_handler: String::new() })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false }).await.unwrap().into_inner();
    let ip = st.status.unwrap().network.unwrap().ip;
    (id, ip)
}

async fn start(rt: &mut Rt, pod: &str, cfg: &cri::PodSandboxConfig, name: &str, cmd: &[&str]) -> String {
    let c = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: spec(&busybox()),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let id = rt
        .create_container(cri::CreateContainerRequest { pod_sandbox_id: pod.into(), config: Some(c), sandbox_config: Some(cfg.clone()) })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    id
}

/// Wait until something in `container`'s network namespace listens on TCP `port`.
async fn wait_listening(rt: &mut Rt, container: &str, port: u16) {
    let probe = format!("netstat -ltn | grep -q ':{port} '");
    wait_until(&format!("{container} listens on :{port}"), Duration::from_secs(20), async || exec(rt, container, &["sh", "-c", &probe]).await.0 == 0).await;
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str]) -> (i32, String) {
    let r = rt
        .exec_sync(cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 20 })
        .await
        .expect("exec")
        .into_inner();
    (r.exit_code, String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr))
}

async fn network_ready(rt: &mut Rt) -> bool {
    let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner().status.unwrap();
    st.conditions.iter().find(|c| c.r#type == "NetworkReady").map(|c| c.status).unwrap()
}

async fn remove_pod(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("stop pod");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("remove pod");
}

#[tokio::test]
async fn two_pods_talk_over_the_bridge() {
    two_pods_talk(Plugins::Debian { portmap: false }).await;
}

#[tokio::test]
async fn two_pods_talk_over_the_bridge_with_berth_cni() {
    two_pods_talk(Plugins::Berth { version: "1.1.0" }).await;
}

async fn two_pods_talk(plugins: Plugins) {
    let net = Net::new(plugins);
    let d = Daemon::start(&net.config()).await;
    pull(&mut d.images().await, &busybox()).await.unwrap();
    let mut rt = d.runtime().await;
    assert!(network_ready(&mut rt).await);
    let logs = TempDir::new("logs");
    let cfg_a = pod_config(&format!("berth-web-{}", net.subnet_octet), logs.path());
    let cfg_b = pod_config(&format!("berth-client-{}", net.subnet_octet), logs.path());
    let (a, ip_a) = run_pod(&mut rt, &cfg_a).await;
    let (b, ip_b) = run_pod(&mut rt, &cfg_b).await;
    let prefix = format!("10.{}.7.", net.subnet_octet);
    assert!(ip_a.starts_with(&prefix) && ip_b.starts_with(&prefix), "{ip_a} {ip_b}");
    assert_ne!(ip_a, ip_b);
    assert_eq!(veths(&net.bridge), 2);

    let web = start(&mut rt, &a, &cfg_a, "web", &["sh", "-c", "mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 8080 -h /www"]).await;
    let client = start(&mut rt, &b, &cfg_b, "client", &["sleep", "3600"]).await;
    wait_listening(&mut rt, &web, 8080).await;
    let url = format!("http://{ip_a}:8080/index.html");
    let (code, out) = exec(&mut rt, &client, &["wget", "-q", "-O", "-", &url]).await;
    assert_eq!((code, out.trim()), (0, "hello-from-a"), "pod B reaches pod A over TCP");
    let (code, out) = exec(&mut rt, &web, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"]).await;
    assert_eq!((code, out.trim()), (0, "hello-from-a"), "loopback in the pod");
    let (code, out) = exec(&mut rt, &client, &["ping", "-c", "1", "-W", "3", &net.gateway()]).await;
    assert_eq!(code, 0, "the pod reaches its gateway: {out}");
    let (_, hosts) = exec(&mut rt, &web, &["cat", "/etc/hosts"]).await;
    assert!(hosts.contains(&ip_a), "the pod's own IP is in /etc/hosts: {hosts}");

    assert_eq!(net.ipam_files().len(), 2);
    remove_pod(&mut rt, &a).await;
    remove_pod(&mut rt, &b).await;
    assert_eq!(veths(&net.bridge), 0);
    assert!(net.ipam_files().is_empty(), "addresses released: {:?}", net.ipam_files());
    assert!(entries_with_prefix(&d.data_dir().join("network"), "").is_empty(), "the result cache is gone");
    assert!(entries_with_prefix(&d.run_dir().join("network"), "").is_empty(), "no attachment left pending");
}

#[tokio::test]
async fn delete_after_a_daemon_restart_and_without_config() {
    let net = Net::new(Plugins::Berth { version: "1.1.0" });
    let mut d = Daemon::start(&net.config()).await;
    let mut rt = d.runtime().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&format!("berth-restart-{}", net.subnet_octet), logs.path());
    let (pod, ip) = run_pod(&mut rt, &cfg).await;
    assert!(!ip.is_empty());
    assert_eq!(net.ipam_files().len(), 1);
    // The daemon dies between ADD and DEL, and the config changes meanwhile: DEL uses the
    // cached config of the ADD.
    d.kill9();
    let conf = net.dir.path().join("conf/10-test.conflist");
    let saved = std::fs::read(&conf).unwrap();
    std::fs::remove_file(&conf).unwrap();
    d.restart_after_kill9().await;
    let mut rt = d.runtime().await;
    assert!(!network_ready(&mut rt).await, "no config: NetworkReady is false");
    remove_pod(&mut rt, &pod).await;
    assert_eq!(veths(&net.bridge), 0);
    assert!(net.ipam_files().is_empty());
    // Hot reload: the config comes back and is used without a restart.
    std::fs::write(&conf, saved).unwrap();
    assert!(network_ready(&mut rt).await);
    // A pod whose network setup fails is rolled back entirely.
    let broken = serde_json::json!({"cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "bridge", "bridge": net.bridge, "ipam": {"type": "host-local", "dataDir": net.dir.path().join("ipam"), "ranges": [[{"subnet": "not-a-subnet"}]]}}]});
    std::fs::write(net.dir.path().join("conf/05-broken.conflist"), broken.to_string()).unwrap();
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod_config("berth-broken", logs.path())), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert!(e.message().contains("bridge"), "{}", e.message());
    assert!(rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items.is_empty());
    assert!(mounts_under(d.dir.path()).is_empty());
    assert_eq!(veths(&net.bridge), 0);
}

#[tokio::test]
async fn host_ports_map_to_the_pod() {
    let net = Net::new(Plugins::Debian { portmap: true });
    let d = Daemon::start(&net.config()).await;
    pull(&mut d.images().await, &busybox()).await.unwrap();
    let mut rt = d.runtime().await;
    let logs = TempDir::new("logs");
    let mut cfg = pod_config(&format!("berth-ports-{}", net.subnet_octet), logs.path());
    let host_port = 20000 + (std::process::id() % 10000) as i32;
    cfg.port_mappings = vec![cri::PortMapping { protocol: cri::Protocol::Tcp as i32, container_port: 8080, host_port, host_ip: String::new() }];
    let (pod, ip) = run_pod(&mut rt, &cfg).await;
    let web = start(&mut rt, &pod, &cfg, "web", &["sh", "-c", "mkdir -p /www && echo mapped > /www/index.html && exec httpd -f -p 8080 -h /www"]).await;
    wait_listening(&mut rt, &web, 8080).await;
    // From the host, through the pod IP (on our bridge) and through the mapped host port.
    let direct = Command::new("busybox").args(["wget", "-q", "-O", "-", &format!("http://{ip}:8080/index.html")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), "mapped", "{}", String::from_utf8_lossy(&direct.stderr));
    let gw_ip = net.gateway();
    let mapped = Command::new("busybox").args(["wget", "-q", "-O", "-", &format!("http://{gw_ip}:{host_port}/index.html")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&mapped.stdout).trim(), "mapped", "{}", String::from_utf8_lossy(&mapped.stderr));
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn two_hundred_parallel_pods_get_distinct_addresses_and_leave_nothing() {
    parallel_pods(Plugins::Debian { portmap: false }).await;
}

#[tokio::test]
async fn two_hundred_parallel_pods_with_berth_cni() {
    parallel_pods(Plugins::Berth { version: "1.1.0" }).await;
}

async fn parallel_pods(plugins: Plugins) {
    let net = Net::new(plugins);
    let d = Daemon::start(&net.config()).await;
    let logs = TempDir::new("logs");
    let mut tasks = vec![];
    for i in 0..200 {
        let mut rt = d.runtime().await;
        let cfg = pod_config(&format!("berth-par-{}-{i}", net.subnet_octet), logs.path());
        tasks.push(tokio::spawn(async move {
            let (id, ip) = run_pod(&mut rt, &cfg).await;
            (rt, id, ip)
        }));
        if i % 50 == 49 {
            // A range of 253 addresses: remove each batch before the next so it never runs out.
            let mut ips = HashMap::new();
            for t in tasks.drain(..) {
                let (mut rt, id, ip) = t.await.unwrap();
                assert!(ips.insert(ip.clone(), id.clone()).is_none(), "address {ip} handed out twice");
                remove_pod(&mut rt, &id).await;
            }
            assert_eq!(ips.len(), 50);
        }
    }
    assert!(net.ipam_files().is_empty(), "leaked addresses: {:?}", net.ipam_files());
    assert_eq!(veths(&net.bridge), 0);
    assert!(mounts_under(d.dir.path()).is_empty());
    assert!(entries_with_prefix(&d.data_dir().join("network"), "").is_empty());
}

#[tokio::test]
async fn a_pod_cidr_writes_a_default_config_debian_plugins_can_run() {
    let dir = TempDir::new("defconf");
    let own = berth_bin().parent().unwrap().display().to_string();
    let conf_dir = dir.path().join("net.d");
    let bridge = format!("berthd{}", std::process::id() % 10000);
    let _guard = LinkGuard(bridge.clone());
    // Debian's portmap (containernetworking-plugins 1.1.1) speaks CNI up to 1.0.0.
    let cfg =
        format!("[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{own}\", \"/usr/lib/cni\"]\nmasquerade = false\nbridge = \"{bridge}\"\n", conf_dir.display());
    let d = Daemon::start(&cfg).await;
    let mut rt = d.runtime().await;
    assert!(!network_ready(&mut rt).await, "no config and no pod CIDR yet");
    let octet = 100 + std::process::id() % 150;
    let cidr = format!("10.{octet}.99.0/24");
    rt.update_runtime_config(cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig { network_config: Some(cri::NetworkConfig { pod_cidr: cidr.clone() }) }),
    })
    .await
    .unwrap();
    assert!(network_ready(&mut rt).await, "{}", d.log());
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(conf_dir.join("10-berth.conflist")).unwrap()).unwrap();
    assert_eq!(written["cniVersion"], "1.0.0", "the newest version berth-cni and Debian's portmap share: {written}");
    assert_eq!(written["plugins"][0]["type"], "berth-cni");
    assert_eq!(written["plugins"][0]["bridge"], bridge.as_str());
    assert_eq!(written["plugins"][1]["type"], "portmap");
    assert_eq!(written["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], cidr);
    // Keep IPAM state out of the host's /var/lib/cni: only the data dir is edited.
    let mut edited = written.clone();
    edited["plugins"][0]["ipam"]["dataDir"] = serde_json::json!(dir.path().join("ipam"));
    std::fs::write(conf_dir.join("10-berth.conflist"), edited.to_string()).unwrap();
    let logs = TempDir::new("logs");
    let (pod, ip) = run_pod(&mut rt, &pod_config("berth-defcidr", logs.path())).await;
    assert!(ip.starts_with(&format!("10.{octet}.99.")), "{ip}");
    remove_pod(&mut rt, &pod).await;
    assert_eq!(veths(&bridge), 0);
}

async fn network_reason(rt: &mut Rt) -> String {
    let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let c = st.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(!c.status, "network unexpectedly ready");
    format!("{}: {}", c.reason, c.message)
}

#[tokio::test]
async fn a_config_its_plugins_cannot_speak_is_reported_not_run() {
    let dir = TempDir::new("badver");
    let conf_dir = dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let list = serde_json::json!({"cniVersion": "1.1.0", "name": "berth-badver", "plugins": [
        {"type": "loopback"}, {"type": "portmap", "capabilities": {"portMappings": true}}]});
    std::fs::write(conf_dir.join("10-x.conflist"), list.to_string()).unwrap();
    let cfg = format!("[network]\nconf_dir = \"{}\"\nbin_dirs = [\"/usr/lib/cni\"]\n", conf_dir.display());
    let d = Daemon::start(&cfg).await;
    let mut rt = d.runtime().await;
    let reason = network_reason(&mut rt).await;
    assert!(reason.starts_with("NetworkPluginNotReady: "), "{reason}");
    assert!(reason.contains("\"loopback\"") && reason.contains("\"1.1.0\"") && reason.contains("1.0.0"), "{reason}");
    // A pod fails at once with the same reason, before any plugin runs ADD.
    let logs = TempDir::new("logs");
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod_config("berth-badver", logs.path())), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert!(err.message().contains("does not support cniVersion \"1.1.0\""), "{err:?}");
    assert!(!d.log().contains("ADD failed"), "{}", d.log());
    // Fixing the file fixes the network without a restart.
    let mut fixed = list.clone();
    fixed["cniVersion"] = serde_json::json!("1.0.0");
    std::fs::write(conf_dir.join("10-x.conflist"), fixed.to_string()).unwrap();
    assert!(network_ready(&mut rt).await, "{}", d.log());
}

#[tokio::test]
async fn an_unparsable_config_is_reported_with_its_file() {
    let net = Net::new(Plugins::Berth { version: "1.0.0" });
    // Sorted first, so it is the config in force: the valid one after it must not stand in.
    std::fs::write(net.dir.path().join("conf/05-broken.conflist"), "{\"cniVersion\": ").unwrap();
    let d = Daemon::start(&net.config()).await;
    let mut rt = d.runtime().await;
    let reason = network_reason(&mut rt).await;
    assert!(reason.contains("05-broken.conflist") && reason.contains("failed to load CNI config"), "{reason}");
    assert!(d.log().contains("WARN") && d.log().contains("05-broken.conflist"), "{}", d.log());
    let logs = TempDir::new("logs");
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod_config("berth-broken", logs.path())), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert!(err.message().contains("05-broken.conflist"), "{err:?}");
    assert_eq!(veths(&net.bridge), 0);
}

#[tokio::test]
async fn containerd_runs_pods_with_berth_cni() {
    let net = Net::new(Plugins::Berth { version: "1.0.0" });
    // containerd takes one plugin dir and always runs "loopback" from it too.
    let bin = TempDir::new("cni-bin");
    std::os::unix::fs::symlink(berth_bin().with_file_name("berth-cni"), bin.path().join("berth-cni")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin.path().join("loopback")).unwrap();
    let ctrd = berth_integration::containerd::Containerd::start(&net.dir.path().join("conf"), bin.path(), &test_registry()).await;
    pull(&mut ctrd.images().await, &busybox()).await.expect("containerd pulls busybox");
    let mut rt = ctrd.runtime().await;
    let start_wait = std::time::Instant::now();
    while !network_ready(&mut rt).await {
        assert!(start_wait.elapsed() < Duration::from_secs(20), "containerd never saw the CNI config:\n{}", ctrd.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = TempDir::new("logs");
    let cfg_a = pod_config(&format!("berth-ctrd-a-{}", net.subnet_octet), logs.path());
    let cfg_b = pod_config(&format!("berth-ctrd-b-{}", net.subnet_octet), logs.path());
    let (a, ip_a) = run_pod(&mut rt, &cfg_a).await;
    let (b, ip_b) = run_pod(&mut rt, &cfg_b).await;
    let prefix = format!("10.{}.7.", net.subnet_octet);
    assert!(ip_a.starts_with(&prefix) && ip_b.starts_with(&prefix) && ip_a != ip_b, "{ip_a} {ip_b}");
    let web = start(&mut rt, &a, &cfg_a, "web", &["sh", "-c", "mkdir -p /www && echo via-containerd > /www/index.html && exec httpd -f -p 8080 -h /www"]).await;
    let client = start(&mut rt, &b, &cfg_b, "client", &["sleep", "3600"]).await;
    wait_listening(&mut rt, &web, 8080).await;
    let (code, out) = exec(&mut rt, &client, &["wget", "-q", "-O", "-", &format!("http://{ip_a}:8080/index.html")]).await;
    assert_eq!((code, out.trim()), (0, "via-containerd"));
    remove_pod(&mut rt, &a).await;
    remove_pod(&mut rt, &b).await;
    assert_eq!(veths(&net.bridge), 0);
    assert!(net.ipam_files().is_empty(), "{:?}", net.ipam_files());
}

/// An "outside" host: a network namespace behind a veth pair from the root namespace, with no
/// route back to the pod network, so only masqueraded pod traffic gets answers. Removed on drop.
struct OutsideHost {
    netns: String,
    host_link: String,
    server: Option<std::process::Child>,
}

impl OutsideHost {
    fn new(octet: u32) -> OutsideHost {
        let id = std::process::id() % 100_000;
        let o = OutsideHost { netns: format!("berthext{id}"), host_link: format!("bxh{id}"), server: None };
        let peer = format!("bxp{id}");
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["netns", "add", &o.netns]);
        run(&["link", "add", &o.host_link, "type", "veth", "peer", "name", &peer]);
        run(&["link", "set", &peer, "netns", &o.netns]);
        run(&["addr", "add", &format!("10.{octet}.8.1/24"), "dev", &o.host_link]);
        run(&["link", "set", &o.host_link, "up"]);
        run(&["-n", &o.netns, "addr", "add", &format!("10.{octet}.8.2/24"), "dev", &peer]);
        run(&["-n", &o.netns, "link", "set", &peer, "up"]);
        run(&["-n", &o.netns, "link", "set", "lo", "up"]);
        o
    }

    fn serve(&mut self, dir: &Path) {
        std::fs::write(dir.join("index.html"), "from-outside\n").unwrap();
        let child = Command::new("ip").args(["netns", "exec", &self.netns, "busybox", "httpd", "-f", "-p", "8080", "-h"]).arg(dir).spawn().unwrap();
        self.server = Some(child);
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

#[tokio::test]
async fn pods_are_masqueraded_through_nftables_without_iptables() {
    let net = Net::new(Plugins::Berth { version: "1.0.0" });
    let conf_path = net.dir.path().join("conf/10-test.conflist");
    let mut list: serde_json::Value = serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    list["plugins"][0]["ipMasq"] = serde_json::json!(true);
    std::fs::write(&conf_path, list.to_string()).unwrap();
    let network = list["name"].as_str().unwrap().to_string();
    let _masq = MasqGuard(network.clone());
    let mut outside = OutsideHost::new(net.subnet_octet);
    let www = TempDir::new("www");
    outside.serve(www.path());
    // A host without iptables (or nft): the daemon and its plugins find no binaries on PATH.
    let empty = TempDir::new("empty-path");
    let d = Daemon::start_with_env(&net.config(), &[("PATH", &empty.path().display().to_string())]).await;
    let mut rt = d.runtime().await;
    pull(&mut d.images().await, &busybox()).await.expect("pull busybox");
    let logs = TempDir::new("logs");
    let cfg = pod_config(&format!("berth-masq-{}", net.subnet_octet), logs.path());
    let (pod, ip) = run_pod(&mut rt, &cfg).await;
    let (elems, rules) = masq_state(&network).expect("berth-cni table and set");
    assert_eq!((elems, rules), (vec![ip.clone()], 1));
    let client = start(&mut rt, &pod, &cfg, "client", &["sleep", "3600"]).await;
    let url = format!("http://10.{}.8.2:8080/index.html", net.subnet_octet);
    // The outside host has no route to the pod network: only masqueraded requests get answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (code, out) = loop {
        let (code, out) = exec(&mut rt, &client, &["wget", "-q", "-O", "-", &url]).await;
        if code == 0 || std::time::Instant::now() > deadline {
            break (code, out);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ruleset = String::from_utf8_lossy(&Command::new("nft").args(["list", "table", "ip", "berth-cni"]).output().unwrap().stdout).to_string();
    assert_eq!((code, out.trim()), (0, "from-outside"), "{ruleset}");
    remove_pod(&mut rt, &pod).await;
    let (elems, _) = masq_state(&network).expect("set kept for the network");
    assert!(elems.is_empty(), "pod address still masqueraded: {elems:?}");
    assert!(!d.log().contains("iptables"), "{}", d.log());
}
