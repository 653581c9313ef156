//! The etcd backend against Debian's etcd-server: the conformance suite on a single member,
//! plus a three-member cluster that loses a member while writes go on.

mod common;
#[macro_use]
mod conformance;

conformance_suite!(common::etcd);

use std::time::{Duration, Instant};

use berth_store::etcd_process::{EtcdCluster, EtcdServerTls};
use berth_store::{EtcdConfig, EtcdStore, EtcdTls, ListOptions, Store, StoreError, WatchEvent, WatchOptions};
use common::{b, changes_through, temp_dir, TEST_ETCD_ARGS, WAIT};

/// The member currently leading the cluster.
async fn leader(cluster: &EtcdCluster) -> usize {
    for (i, m) in cluster.members.iter().enumerate() {
        let mut c = etcd_client::Client::connect([m.client_url.as_str()], None).await.unwrap();
        let status = c.status().await.unwrap();
        if status.header().map(|h| h.member_id()) == Some(status.leader()) {
            return i;
        }
    }
    panic!("no member leads the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_keeps_writing_when_a_member_is_killed() {
    const WRITES: usize = 300;
    let mut cluster = EtcdCluster::start(3, TEST_ETCD_ARGS).await.expect("start 3 etcd members");
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.compaction_interval = None;
    config.request_timeout = Duration::from_secs(5);
    let s = EtcdStore::connect(config).await.unwrap();
    let p = "/registry/cluster/";
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch(p, from, WatchOptions::default()).await.unwrap();
    let mut acked = Vec::new();
    let mut failures = 0;
    let mut killed = None;
    for i in 0..WRITES {
        if i == WRITES / 3 {
            let l = leader(&cluster).await;
            eprintln!("killing the leader, member {l}");
            cluster.members[l].kill();
            killed = Some(Instant::now());
        }
        let key = format!("{p}k{i:04}");
        let deadline = Instant::now() + WAIT;
        let kv = loop {
            match s.create(&key, b(&format!("v{i}")), None).await {
                Ok(kv) => break kv,
                // The first attempt may have been applied before its answer was lost.
                Err(StoreError::AlreadyExists { .. }) => break s.get(&key, None).await.unwrap().unwrap(),
                Err(StoreError::Unavailable(m)) if Instant::now() < deadline => {
                    failures += 1;
                    eprintln!("write {i} unavailable ({m}), retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("write {i}: {e}"),
            }
        };
        acked.push(kv);
    }
    eprintln!("{WRITES} writes, {failures} retried, the last {} after the kill ({:?} ago)", WRITES - WRITES / 3, killed.map(|k| k.elapsed()));
    // Every acknowledged write is there, on the surviving members.
    let listed = s.list(p, ListOptions::default()).await.unwrap();
    assert_eq!(listed.kvs, acked);
    // The watch went on across the loss of a member: every write once, in order.
    let events = changes_through(&mut w, acked.last().unwrap().mod_revision).await;
    let created: Vec<_> = events
        .into_iter()
        .map(|e| match e {
            WatchEvent::Created { kv } => kv,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(created, acked);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn certificates(dir: &std::path::Path) -> EtcdServerTls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "berth-test-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, "berth-apiserver");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    EtcdServerTls {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let dir = temp_dir();
    let tls = certificates(dir.path());
    let cluster = EtcdCluster::single_tls(TEST_ETCD_ARGS, &tls).await.expect("start etcd with TLS");
    let endpoint = cluster.endpoints()[0].clone();
    assert!(endpoint.starts_with("https://"));
    let mut config = EtcdConfig::new([endpoint.clone()]);
    config.compaction_interval = None;
    config.tls = Some(EtcdTls { ca_file: Some(tls.ca.clone()), cert_file: Some(tls.client_cert.clone()), key_file: Some(tls.client_key.clone()) });
    let s = EtcdStore::connect(config.clone()).await.expect("connect over TLS");
    let kv = s.create("/registry/tls/a", b("v"), None).await.unwrap();
    assert_eq!(s.get("/registry/tls/a", None).await.unwrap(), Some(kv));
    s.close().await;
    // Without a client certificate etcd refuses the connection.
    config.tls = Some(EtcdTls { ca_file: Some(tls.ca.clone()), ..Default::default() });
    config.request_timeout = Duration::from_secs(3);
    config.dial_timeout = Duration::from_secs(3);
    assert!(EtcdStore::connect(config).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_are_refused_and_a_dead_etcd_is_unavailable() {
    for (endpoints, tls) in [
        (vec![], None),
        (vec!["127.0.0.1:2379".to_string()], None),
        (vec!["https://127.0.0.1:2379".to_string()], None),
        (vec!["http://127.0.0.1:2379".to_string()], Some(EtcdTls::default())),
    ] {
        let mut config = EtcdConfig::new(endpoints.clone());
        config.tls = tls;
        assert!(matches!(EtcdStore::connect(config).await, Err(StoreError::InvalidArgument(_))), "{endpoints:?}");
    }
    let port = berth_store::etcd_process::free_port().unwrap();
    let mut config = EtcdConfig::new([format!("http://127.0.0.1:{port}")]);
    config.dial_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    let started = Instant::now();
    assert!(matches!(EtcdStore::connect(config).await, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(10));
}
