//! Service addresses against a real `berth server` with the real kubectl: cluster IPs from
//! --service-cidr (explicit ones honoured once, refused in upstream's words when taken or out of
//! range, free again after a delete), node ports from --service-node-port-range, the
//! `kubernetes` Service and its endpoints, servicecidrs and ipaddresses as kubectl shows them,
//! 50 concurrent creates, allocations that survive a restart, and a /29 that fills up.

use berth_integration::apiserver::ApiServer;

const V: &str = "1.33";

#[test]
fn cluster_ips_and_node_ports_are_allocated_once_and_survive_a_restart() {
    let mut s = ApiServer::start("svc-alloc");

    let out = s.ok(V, &["get", "svc", "kubernetes"]);
    assert!(out.contains("10.43.0.1") && out.contains("443/TCP"), "{out}");
    let port = s.ok(V, &["get", "svc", "kubernetes", "-o", "jsonpath={.spec.ports[0].targetPort}"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = s.ok(V, &["get", "endpoints", "kubernetes"]);
        if out.contains(&format!("127.0.0.1:{port}")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = s.ok(V, &["get", "servicecidrs"]);
    assert!(out.starts_with("NAME") && out.contains("CIDRS") && out.contains("kubernetes") && out.contains("10.43.0.0/16"), "{out}");
    let out = s.ok(V, &["get", "ipaddresses"]);
    assert!(out.contains("PARENTREF") && out.contains("10.43.0.1") && out.contains("services/default/kubernetes"), "{out}");

    // automatic
    s.ok(V, &["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let ip = s.ok(V, &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");

    // explicit, taken, out of range
    s.ok(V, &["create", "service", "clusterip", "fixed", "--clusterip=10.43.0.5", "--tcp=80"]);
    let err = s.fails(V, &["create", "service", "clusterip", "again", "--clusterip=10.43.0.5", "--tcp=80"], None);
    assert!(
        err.contains(r#"spec.clusterIPs: Invalid value: []string{"10.43.0.5"}: failed to allocate IP 10.43.0.5: provided IP is already allocated"#),
        "{err}"
    );
    let err = s.fails(V, &["create", "service", "clusterip", "outside", "--clusterip=10.96.0.5", "--tcp=80"], None);
    assert!(err.contains("failed to allocate IP 10.96.0.5: the provided network does not match the current range"), "{err}");

    // node ports
    s.ok(V, &["create", "service", "nodeport", "np", "--tcp=80", "--node-port=30080"]);
    let err = s.fails(V, &["create", "service", "nodeport", "np2", "--tcp=80", "--node-port=30080"], None);
    assert!(err.contains("spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"), "{err}");

    // deleted: both can be taken again
    s.ok(V, &["delete", "svc", "fixed", "np"]);
    s.ok(V, &["create", "service", "clusterip", "again", "--clusterip=10.43.0.5", "--tcp=80"]);
    s.ok(V, &["create", "service", "nodeport", "np2", "--tcp=80", "--node-port=30080"]);

    // 50 concurrent creates get 50 addresses
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let kubeconfig = s.kubeconfig.clone();
            std::thread::spawn(move || {
                std::process::Command::new(berth_integration::apiserver::kubectl_bin(V))
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["create", "service", "clusterip", &format!("many-{i}"), "--tcp=80"])
                    .output()
                    .expect("kubectl")
            })
        })
        .collect();
    for t in threads {
        let out = t.join().expect("thread");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let ips = s.ok(V, &["get", "svc", "-o", "jsonpath={.items[*].spec.clusterIP}"]);
    let mut ips: Vec<&str> = ips.split_whitespace().collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!((ips.len(), n), (54, 54), "kubernetes, web, again, np2 and the 50");

    // a restart keeps what is allocated
    s.restart();
    let err = s.fails(V, &["create", "service", "clusterip", "after", "--clusterip=10.43.0.5", "--tcp=80"], None);
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let err = s.fails(V, &["create", "service", "nodeport", "np3", "--tcp=80", "--node-port=30080"], None);
    assert!(err.contains("provided port is already allocated"), "{err}");
    let out = s.ok(V, &["get", "svc", "kubernetes"]);
    assert!(out.contains("10.43.0.1"), "{out}");
}

#[test]
fn a_slash_29_service_cidr_fills_up() {
    let s = ApiServer::start_with("svc-full", vec!["--service-cidr".into(), "10.44.0.0/29".into()]);
    let out = s.ok(V, &["get", "svc", "kubernetes"]);
    assert!(out.contains("10.44.0.1"), "{out}");
    for i in 0..5 {
        s.ok(V, &["create", "service", "clusterip", &format!("s{i}"), "--tcp=80"]);
    }
    let err = s.fails(V, &["create", "service", "clusterip", "full", "--tcp=80"], None);
    assert!(err.contains("Internal error occurred: failed to allocate a serviceIP: range is full"), "{err}");
}
