//! Secrets encrypted at rest (`--encryption-provider-config`): the real `berth server` on a real
//! etcd, kubectl writes and reads Secrets in clear while etcd holds only ciphertext under
//! upstream's prefix; a new first key, a restart and a rewrite move every Secret to it.

use berth_integration::apiserver::ApiServer;
use berth_integration::TempDir;
use berth_store::etcd_process::EtcdCluster;
use berth_store::{EtcdConfig, EtcdStore, Store};

const KEY1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgYmVybGluIGlzIGNvb2w=";
const KEY2: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";

fn config(providers: &str) -> String {
    format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n{providers}")
}

fn aescbc(name: &str, secret: &str) -> String {
    format!("      - aescbc:\n          keys:\n            - name: {name}\n              secret: {secret}\n")
}

#[test]
fn secrets_are_stored_encrypted_read_back_in_clear_and_keys_rotate() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = rt.block_on(EtcdCluster::single(&["--experimental-watch-progress-notify-interval=500ms"])).expect("start etcd");
    let endpoint = etcd.members[0].client_url.clone();
    let raw = rt.block_on(EtcdStore::connect(EtcdConfig::new([endpoint.clone()]))).expect("etcd client");
    let stored = |name: &str| -> Vec<u8> {
        rt.block_on(raw.get(&format!("/registry/secrets/berth-enc/{name}"), None)).expect("get").map(|kv| kv.value.to_vec()).unwrap_or_default()
    };
    let dir = TempDir::new("enc-config");
    let path = dir.path().join("encryption.yaml");
    std::fs::write(&path, config(&format!("{}      - identity: {{}}\n", aescbc("key1", KEY1)))).expect("config");
    let args = vec!["--datastore-endpoint".into(), endpoint, "--encryption-provider-config".into(), path.display().to_string()];
    let mut s = ApiServer::start_with("encryption", args);
    s.ok("1.33", &["create", "namespace", "berth-enc"]);
    s.ok("1.33", &["-n", "berth-enc", "create", "secret", "generic", "db", "--from-literal=password=hunter2"]);
    let value = stored("db");
    assert!(value.starts_with(b"k8s:enc:aescbc:v1:key1:"), "{:?}", String::from_utf8_lossy(&value));
    assert!(!String::from_utf8_lossy(&value).contains("aHVudGVyMg"), "no plain text in etcd");
    let password = s.ok("1.33", &["-n", "berth-enc", "get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(password, "aHVudGVyMg==");
    // ConfigMaps are not configured: stored as they are
    s.ok("1.33", &["-n", "berth-enc", "create", "configmap", "plain", "--from-literal=a=b"]);
    let cm = rt.block_on(raw.get("/registry/configmaps/berth-enc/plain", None)).expect("get").expect("stored");
    assert!(cm.value.starts_with(b"{"), "{:?}", cm.value);

    // rotation: key2 first, restart, rewrite every secret; then key1 can go
    std::fs::write(&path, config(&format!("{}{}", aescbc("key2", KEY2), aescbc("key1", KEY1)))).expect("config");
    s.restart();
    assert_eq!(s.ok("1.33", &["-n", "berth-enc", "get", "secret", "db", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==", "key1 still reads");
    let all = s.ok("1.33", &["get", "secrets", "-A", "-o", "json"]);
    s.ok_in("1.33", &["replace", "-f", "-"], Some(&all));
    assert!(stored("db").starts_with(b"k8s:enc:aescbc:v1:key2:"), "{:?}", String::from_utf8_lossy(&stored("db")));
    std::fs::write(&path, config(&aescbc("key2", KEY2))).expect("config");
    s.restart();
    assert_eq!(s.ok("1.33", &["-n", "berth-enc", "get", "secret", "db", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==");

    // a broken configuration stops the server before it serves anything
    std::fs::write(&path, config("      - aescbc:\n          keys: []\n")).expect("config");
    let out = std::process::Command::new(berth_integration::berth_bin())
        .args(["server", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--listen", "127.0.0.1:0", "--disable-agent", "--encryption-provider-config"])
        .arg(&path)
        .output()
        .expect("run berth server");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one key"), "{}", String::from_utf8_lossy(&out.stderr));
    rt.block_on(raw.close());
}
