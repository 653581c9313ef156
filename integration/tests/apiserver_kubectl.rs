//! `berth server` driven by the real kubectl 1.27, 1.29, 1.30 and 1.33 beyond the basic workflow
//! (diff, edit, get -w, custom columns, describe, set image, create of secrets/configmaps/
//! namespaces, cascading deletes, label/annotate/patch variants), and by raw HTTPS with the admin
//! certificate (curl) for what kubectl cannot send: the deprecated watch paths, streaming lists
//! (sendInitialEvents), concurrent read-modify-writes, watches resumed from every version, 410
//! after the history is gone, and bad input answered with upstream's codes and messages.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine;
use berth_integration::apiserver::ApiServer;
use serde_json::{json, Value};

const VERSIONS: &[&str] = &["1.27", "1.29", "1.30", "1.33"];

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A line of a `kubectl get` table, words separated by single spaces.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The admin's HTTPS client: curl with the client certificate of the server's kubeconfig.
struct Raw {
    server: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// One HTTP answer.
struct Answer {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    fn json(&self) -> Value {
        json(&self.text())
    }
}

impl Raw {
    fn new(s: &ApiServer) -> Raw {
        let kc = std::fs::read_to_string(&s.kubeconfig).expect("kubeconfig");
        let field = |name: &str| {
            kc.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("{name} missing in the kubeconfig"))
        };
        let dir = s.dir.path().join("raw");
        std::fs::create_dir_all(&dir).expect("raw dir");
        let write = |file: &str, b64: &str| {
            let path = dir.join(file);
            std::fs::write(&path, base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("write pem");
            path
        };
        Raw {
            server: field("server"),
            ca: write("ca.crt", &field("certificate-authority-data")),
            cert: write("admin.crt", &field("client-certificate-data")),
            key: write("admin.key", &field("client-key-data")),
        }
    }

    fn call(&self, method: &str, path: &str, headers: &[&str], body: Option<&[u8]>) -> Answer {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http1.1", "-D", "-", "-X", method, "--max-time", "60"])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key);
        for h in headers {
            cmd.args(["-H", h]);
        }
        if body.is_some() {
            // no `Expect: 100-continue`: the answer is the server's only one
            cmd.args(["--data-binary", "@-", "-H", "Expect:"]);
        }
        cmd.arg(format!("{}{path}", self.server)).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(b) = body {
            // a refused body may be cut off by the server: a broken pipe is its answer
            let _ = stdin.write_all(b);
        }
        drop(stdin);
        let out = child.wait_with_output().expect("curl output");
        assert!(out.status.success(), "curl {method} {path}: {}", String::from_utf8_lossy(&out.stderr));
        let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").expect("response headers");
        let head = String::from_utf8_lossy(&out.stdout[..split]).to_string();
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
        let content_type = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default();
        Answer { code, content_type, body: out.stdout[split + 4..].to_vec() }
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[], None)
    }

    fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        self.call(method, path, &[&format!("Content-Type: {content_type}")], Some(body))
    }

    fn send_json(&self, method: &str, path: &str, body: &Value) -> Answer {
        self.send(method, path, "application/json", body.to_string().as_bytes())
    }
}

/// The (type, name, resourceVersion) of each event of a JSON watch stream.
fn events(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .map(|e| {
            let s = |p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
            (s("/type"), s("/object/metadata/name"), s("/object/metadata/resourceVersion"))
        })
        .collect()
}

fn configmap(ns: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data})
}

/// Lines of a running command's stdout, read on a thread.
struct Lines {
    child: std::process::Child,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx }
    }

    /// The next line (panics after 20 s without one).
    fn next(&self) -> String {
        self.rx.recv_timeout(Duration::from_secs(20)).expect("a line of output")
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl_suite(s: &ApiServer, v: &str) {
    let ns = format!("berth-k{}", v.replace('.', ""));
    let ns = ns.as_str();
    let dir = s.dir.path().join(format!("k{}", v.replace('.', "")));
    std::fs::create_dir_all(&dir).expect("dir");

    // typed create commands
    assert_eq!(s.ok(v, &["create", "namespace", ns]).trim(), format!("namespace/{ns} created"));
    assert_eq!(s.ok(v, &["-n", ns, "create", "configmap", "c1", "--from-literal=a=1"]).trim(), "configmap/c1 created");
    assert_eq!(s.ok(v, &["-n", ns, "create", "secret", "generic", "s1", "--from-literal=p=q"]).trim(), "secret/s1 created");
    assert_eq!(s.ok(v, &["-n", ns, "get", "secret", "s1", "-o", "jsonpath={.data.p}"]), "cQ==");
    assert_eq!(s.ok(v, &["-n", ns, "get", "secret", "s1", "-o", "jsonpath={.type}"]), "Opaque");
    s.ok(v, &["-n", ns, "create", "deployment", "web", "--image=nginx:1.27", "--replicas=2"]);
    s.ok(v, &["-n", ns, "create", "service", "clusterip", "web", "--tcp=80:8080"]);
    s.ok(v, &["-n", ns, "run", "p1", "--image=nginx:1.27", "--labels=app=p1"]);

    // diff: exit 0 and no output when nothing would change, exit 1 and a diff when something
    // would (a dry-run patch: nothing is stored)
    let same = dir.join("same.yaml");
    std::fs::write(&same, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  namespace: {ns}\ndata:\n  a: \"1\"\n")).expect("write");
    let out = s.kubectl(v, &["diff", "-f", same.to_str().unwrap_or_default()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{v}: diff of an unchanged object: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{v}: {}", String::from_utf8_lossy(&out.stdout));
    let changed = dir.join("changed.yaml");
    std::fs::write(&changed, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  namespace: {ns}\ndata:\n  a: \"2\"\n")).expect("write");
    let out = s.kubectl(v, &["diff", "-f", changed.to_str().unwrap_or_default()]);
    let diff = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{v}: diff of a changed object: {diff}{}", String::from_utf8_lossy(&out.stderr));
    assert!(diff.contains("-  a: \"1\"") && diff.contains("+  a: \"2\""), "{v}: {diff}");
    assert!(!diff.contains("annotations"), "{v}: only the data changes: {diff}");
    assert_eq!(s.ok(v, &["-n", ns, "get", "cm", "c1", "-o", "jsonpath={.data.a}"]), "1", "{v}: diff stored nothing");

    // edit through $EDITOR
    let editor = dir.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/a: \"1\"/a: edited/' \"$1\"\n").expect("write editor");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let out = s.command(v).args(["-n", ns, "edit", "cm", "c1"]).env("EDITOR", &editor).output().expect("kubectl edit");
    assert!(out.status.success(), "{v}: edit: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "configmap/c1 edited");
    assert_eq!(s.ok(v, &["-n", ns, "get", "cm", "c1", "-o", "jsonpath={.data.a}"]), "edited");

    // get -w prints the list, then one row per event (with --output-watch-events its type)
    let mut cmd = s.command(v);
    cmd.args(["-n", ns, "get", "cm", "-w", "--output-watch-events"]);
    let watch = Lines::spawn(cmd);
    assert_eq!(words(&watch.next()), "EVENT NAME DATA AGE", "{v}");
    assert!(words(&watch.next()).starts_with("ADDED c1 1 "), "{v}");
    // the namespace's kube-root-ca.crt (the root CA publisher's, as upstream)
    assert!(words(&watch.next()).starts_with("ADDED kube-root-ca.crt 1 "), "{v}");
    s.ok(v, &["-n", ns, "create", "cm", "w1"]);
    assert!(words(&watch.next()).starts_with("ADDED w1 0 "), "{v}");
    s.ok(v, &["-n", ns, "label", "cm", "w1", "x=y"]);
    assert!(words(&watch.next()).starts_with("MODIFIED w1 0 "), "{v}");
    s.ok(v, &["-n", ns, "delete", "cm", "w1"]);
    assert!(words(&watch.next()).starts_with("DELETED w1 0 "), "{v}");
    drop(watch);

    // output options
    let out = s.ok(v, &["-n", ns, "get", "cm", "c1", "-o", "custom-columns=NAME:.metadata.name,VALUE:.data.a,MISSING:.data.zz"]);
    assert_eq!(out.lines().map(words).collect::<Vec<_>>(), ["NAME VALUE MISSING", "c1 edited <none>"], "{v}");
    s.ok(v, &["-n", ns, "label", "cm", "c1", "tier=front"]);
    let out = s.ok(v, &["-n", ns, "get", "cm", "c1", "-L", "tier", "--show-labels"]);
    let rows: Vec<String> = out.lines().map(words).collect();
    assert_eq!(rows[0], "NAME DATA AGE TIER LABELS", "{v}");
    assert!(rows[1].starts_with("c1 1 ") && rows[1].ends_with(" front tier=front"), "{v}: {out}");
    let out = s.ok(v, &["-n", ns, "get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image}{\"\\n\"}{end}"]);
    assert_eq!(out, "p1=nginx:1.27\n", "{v}");

    // describe: no error, the sections kubectl prints for each kind. It reads in protobuf, where
    // embedded structs (a volume's source, a probe's handler, a key reference's name) are nested
    let probed = dir.join("probed.yaml");
    std::fs::write(
        &probed,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p2\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n    \
             livenessProbe:\n      exec:\n        command: [\"true\"]\n    env:\n    - name: E\n      valueFrom:\n        configMapKeyRef:\n          name: c1\n          key: a\n    \
             volumeMounts:\n    - name: conf\n      mountPath: /conf\n  volumes:\n  - name: conf\n    configMap:\n      name: c1\n"
        ),
    )
    .expect("write");
    s.ok(v, &["create", "-f", probed.to_str().unwrap_or_default()]);
    for (what, sections) in [
        ("deployment/web", &["Name:", "Selector:", "Replicas:", "StrategyType:", "Pod Template:", "nginx:1.27"][..]),
        (
            "pod/p1",
            &[
                "Name:",
                "Status:",
                "Pending",
                "Containers:",
                "QoS Class:",
                "Tolerations:",
                "Projected (a volume that contains injected data from multiple sources)",
                "ConfigMapName:           kube-root-ca.crt",
            ][..],
        ),
        (
            "pod/p2",
            &["Liveness:", "exec [true]", "<set to the key 'a' of config map 'c1'>", "ConfigMap (a volume populated by a ConfigMap)", "Name:      c1"][..],
        ),
        ("service/web", &["Name:", "Type:", "ClusterIP", "IP:", "TargetPort:", "8080/TCP"][..]),
        ("configmap/c1", &["Name:", "Labels:", "tier=front", "Data", "edited"][..]),
    ] {
        let out = s.ok(v, &["-n", ns, "describe", what]);
        for want in sections {
            assert!(out.contains(want), "{v}: describe {what}: {want} missing in\n{out}");
        }
    }
    let out = s.ok(v, &["describe", "namespace", ns]);
    assert!(out.contains(&format!("Name:         {ns}")) && out.contains("Status:       Active"), "{v}: {out}");

    // set image; rollout history (no deployment controller runs: no revisions, not an error)
    assert_eq!(s.ok(v, &["-n", ns, "set", "image", "deployment/web", "nginx=nginx:1.28"]).trim(), "deployment.apps/web image updated");
    assert_eq!(s.ok(v, &["-n", ns, "get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "nginx:1.28");
    assert_eq!(s.ok(v, &["-n", ns, "get", "deploy", "web", "-o", "jsonpath={.metadata.generation}"]), "2");
    s.ok(v, &["-n", ns, "rollout", "history", "deployment/web"]);

    // discovery
    let versions = s.ok(v, &["api-versions"]);
    assert!(versions.lines().any(|l| l == "v1") && versions.lines().any(|l| l == "apps/v1"), "{v}: {versions}");
    let resources = s.ok(v, &["api-resources"]);
    assert_eq!(words(resources.lines().next().unwrap_or("")), "NAME SHORTNAMES APIVERSION NAMESPACED KIND", "{v}");
    assert!(resources.lines().map(words).any(|l| l == "configmaps cm v1 true ConfigMap"), "{v}: {resources}");
    let names = s.ok(v, &["api-resources", "--namespaced=false", "-o", "name"]);
    assert!(names.lines().any(|l| l == "namespaces") && !names.lines().any(|l| l == "configmaps"), "{v}: {names}");

    // label --overwrite, annotate and its removal with key-
    let err = s.fails(v, &["-n", ns, "label", "cm", "c1", "tier=back"], None);
    assert!(err.contains("'tier' already has a value (front), and --overwrite is false"), "{v}: {err}");
    s.ok(v, &["-n", ns, "label", "--overwrite", "cm", "c1", "tier=back"]);
    assert_eq!(s.ok(v, &["-n", ns, "get", "cm", "c1", "-o", "jsonpath={.metadata.labels.tier}"]), "back");
    s.ok(v, &["-n", ns, "annotate", "cm", "c1", "note=hi"]);
    assert_eq!(s.ok(v, &["-n", ns, "get", "cm", "c1", "-o", "jsonpath={.metadata.annotations.note}"]), "hi");
    s.ok(v, &["-n", ns, "annotate", "cm", "c1", "note-"]);
    let c1 = json(&s.ok(v, &["-n", ns, "get", "cm", "c1", "-o", "json"]));
    assert!(c1["metadata"].get("annotations").is_none(), "{v}: the last annotation removed leaves no annotations: {c1}");

    // the three patch types, and a JSON patch that does not apply
    s.ok(v, &["-n", ns, "patch", "cm", "c1", "--type", "json", "-p", r#"[{"op":"add","path":"/data/j","value":"1"}]"#]);
    s.ok(v, &["-n", ns, "patch", "cm", "c1", "--type", "merge", "-p", r#"{"data":{"m":"1","a":null}}"#]);
    s.ok(v, &["-n", ns, "patch", "cm", "c1", "--type", "strategic", "-p", r#"{"data":{"s":"1"}}"#]);
    let data = json(&s.ok(v, &["-n", ns, "get", "cm", "c1", "-o", "jsonpath={.data}"]));
    assert_eq!(data, json!({"j": "1", "m": "1", "s": "1"}), "{v}");
    let err = s.fails(v, &["-n", ns, "patch", "cm", "c1", "--type", "json", "-p", r#"[{"op":"replace","path":"/data/nope","value":"x"}]"#], None);
    assert!(err.contains("replace operation does not apply: doc is missing path: /data/nope"), "{v}: {err}");
    let err = s.fails(v, &["-n", ns, "patch", "cm", "c1", "--type", "json", "-p", r#"[{"op":"test","path":"/data/j","value":"2"}]"#], None);
    assert!(err.contains("testing value /data/j failed"), "{v}: {err}");

    // cascading deletes of objects without dependents: each is gone when kubectl returns
    for (name, cascade) in [("d-orphan", "orphan"), ("d-background", "background"), ("d-foreground", "foreground")] {
        s.ok(v, &["-n", ns, "create", "cm", name]);
        let out = s.ok(v, &["-n", ns, "delete", "cm", name, &format!("--cascade={cascade}")]);
        assert_eq!(out.trim(), format!("configmap \"{name}\" deleted"), "{v}");
        let err = s.fails(v, &["-n", ns, "get", "cm", name], None);
        assert!(err.contains("not found"), "{v}: {err}");
    }
    s.ok(v, &["delete", "namespace", ns, "--wait=false"]);
}

/// A configmap `name`, or None once it is gone.
fn configmap_now(s: &ApiServer, name: &str) -> Option<Value> {
    let out = s.ok("1.33", &["get", "configmaps", "-o", "json"]);
    json(&out)["items"].as_array().and_then(|items| items.iter().find(|c| c["metadata"]["name"] == name).cloned())
}

/// Polls configmap `name` until `check` holds (None: gone), for at most 60 s.
fn configmap_until(s: &ApiServer, name: &str, what: &str, check: impl Fn(Option<&Value>) -> bool) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = configmap_now(s, name);
        if check(now.as_ref()) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: configmap {name} is {now:#?}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_garbage_collector_finishes_foreground_and_orphan_deletions_after_a_restart() {
    // the API alone first (no garbage collector): only the delete's own cascade runs
    let mut s = ApiServer::start("gc-restart");
    let v = "1.33";
    let uid_of = |name: &str| s.ok(v, &["get", "cm", name, "-o", "jsonpath={.metadata.uid}"]);
    let dependent = |name: &str, owner: &str, uid: &str, finalizers: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  finalizers: {finalizers}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}, blockOwnerDeletion: true}}\n"
        )
    };
    // a foreground delete whose dependent is held by a finalizer of its own
    s.ok(v, &["create", "cm", "fg-owner"]);
    let fg_uid = uid_of("fg-owner");
    s.ok_in(v, &["apply", "-f", "-"], Some(&dependent("fg-dep", "fg-owner", &fg_uid, "[example.com/hold]")));
    s.ok(v, &["delete", "cm", "fg-owner", "--cascade=foreground", "--wait=false"]);
    configmap_until(&s, "fg-dep", "the dependent marked", |c| c.is_some_and(|c| c["metadata"]["deletionTimestamp"].is_string()));
    // an owner deleted with the orphan finalizer it already carried (next to one that keeps it)
    let owner = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: or-owner\n  finalizers: [orphan, example.com/hold]\n";
    s.ok_in(v, &["apply", "-f", "-"], Some(owner));
    let or_uid = uid_of("or-owner");
    s.ok_in(v, &["apply", "-f", "-"], Some(&dependent("or-dep", "or-owner", &or_uid, "[]")));
    s.ok(v, &["delete", "cm", "or-owner", "--wait=false"]);
    let or_owner = configmap_now(&s, "or-owner").unwrap_or_default();
    assert!(or_owner["metadata"]["deletionTimestamp"].is_string(), "{or_owner:#}");
    assert_eq!(or_owner["metadata"]["finalizers"], json!(["orphan", "example.com/hold"]), "nobody orphans without the collector");

    // the server again, now with the garbage collector: it finds both owners marked
    s.restart_with(vec!["--controllers=garbagecollector,namespace".into()]);
    configmap_until(&s, "or-owner", "the orphan finalizer removed", |c| c.is_some_and(|c| c["metadata"]["finalizers"] == json!(["example.com/hold"])));
    let or_dep = configmap_now(&s, "or-dep").unwrap_or_default();
    assert!(or_dep["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "the dependent orphaned first: {or_dep:#}");
    assert!(or_dep["metadata"]["deletionTimestamp"].is_null(), "{or_dep:#}");
    // the collector has listed everything (it finished the orphaning): the held dependent still
    // holds its owner back
    let fg_owner = configmap_now(&s, "fg-owner").unwrap_or_default();
    assert!(fg_owner["metadata"]["deletionTimestamp"].is_string(), "{fg_owner:#}");
    assert_eq!(fg_owner["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{fg_owner:#}");

    // the dependent let go: it goes, then its owner
    s.ok(v, &["patch", "cm", "fg-dep", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    configmap_until(&s, "fg-dep", "the dependent gone", |c| c.is_none());
    configmap_until(&s, "fg-owner", "the owner gone", |c| c.is_none());
    s.ok(v, &["patch", "cm", "or-owner", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    configmap_until(&s, "or-owner", "the orphan's owner gone", |c| c.is_none());
    assert!(configmap_now(&s, "or-dep").is_some(), "the orphan stays");
}

#[test]
fn kubectl_diff_edit_watch_describe_and_friends_on_every_version() {
    let s = ApiServer::start("kubectl-suite");
    for v in VERSIONS {
        kubectl_suite(&s, v);
    }
}

#[test]
fn deprecated_watch_paths_and_streaming_lists() {
    // An idle store: the resourceVersion comparisons below assume no other writer (the
    // scheduler renews its Lease every 2 s).
    let s = ApiServer::start_with("watchlist", vec!["--disable-scheduler".into()]);
    let raw = Raw::new(&s);
    let ns = "default";
    for name in ["a1", "a2"] {
        assert_eq!(raw.send_json("POST", &format!("/api/v1/namespaces/{ns}/configmaps"), &configmap(ns, name, json!({}))).code, 201);
    }
    s.ok("1.33", &["-n", ns, "create", "deployment", "web", "--image=nginx"]);

    // /api/v1/watch/...: the collection, one object by name, all namespaces; /apis/G/V/watch/...
    let names = |path: &str| events(&raw.get(path).text()).into_iter().map(|(t, n, _)| format!("{t} {n}")).collect::<Vec<_>>();
    // with the namespace's kube-root-ca.crt (the root CA publisher's, as upstream)
    assert_eq!(names(&format!("/api/v1/watch/namespaces/{ns}/configmaps?timeoutSeconds=1")), ["ADDED a1", "ADDED a2", "ADDED kube-root-ca.crt"]);
    assert_eq!(names(&format!("/api/v1/watch/namespaces/{ns}/configmaps/a2?timeoutSeconds=1")), ["ADDED a2"]);
    assert!(names("/api/v1/watch/configmaps?timeoutSeconds=1").contains(&"ADDED a1".to_string()));
    assert_eq!(names("/apis/apps/v1/watch/deployments?timeoutSeconds=1"), ["ADDED web"]);
    assert_eq!(names("/api/v1/watch/namespaces/default?timeoutSeconds=1"), ["ADDED default"]);
    assert_eq!(raw.call("DELETE", "/api/v1/watch/namespaces/default/configmaps/a1", &[], None).code, 404);

    // a streaming list: the objects as ADDED, then a bookmark that ends the initial events, at
    // least as new as a consistent list made before it (the server's own controllers write
    // leases meanwhile, so a list made after may be newer)
    let list_rv: i64 =
        raw.get(&format!("/api/v1/namespaces/{ns}/configmaps")).json()["metadata"]["resourceVersion"].as_str().unwrap_or("").parse().expect("rv");
    let stream = |query: &str| raw.get(&format!("/api/v1/namespaces/{ns}/configmaps?watch=1&timeoutSeconds=1&{query}")).text();
    let out = stream("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true");
    let evs = events(&out);
    assert_eq!(
        evs.iter().map(|(t, n, _)| format!("{t} {n}")).take(4).collect::<Vec<_>>(),
        ["ADDED a1", "ADDED a2", "ADDED kube-root-ca.crt", "BOOKMARK "],
        "{out}"
    );
    let end = json(out.lines().nth(3).unwrap_or("{}"));
    assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true", "{out}");
    assert_eq!(end["object"]["kind"], "ConfigMap");
    let end_rv: i64 = end["object"]["metadata"]["resourceVersion"].as_str().unwrap_or("").parse().expect("bookmark rv");
    assert!(end_rv >= list_rv, "the initial state is as new as a consistent list: {end_rv} < {list_rv}");
    // from a given resourceVersion: the same state (not older), then the changes
    let out = stream(&format!("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={list_rv}"));
    assert_eq!(events(&out).iter().filter(|(t, _, _)| t == "ADDED").count(), 3, "{out}");
    // sendInitialEvents=false: only what changes from now on
    let out = stream("sendInitialEvents=false&resourceVersionMatch=NotOlderThan");
    assert!(events(&out).is_empty(), "{out}");

    // the combinations upstream refuses
    let refused = |query: &str, code: u16, message: &str| {
        let a = raw.get(&format!("/api/v1/namespaces/{ns}/configmaps?{query}"));
        assert_eq!(a.code, code, "{query}: {}", a.text());
        let st = a.json();
        assert_eq!(st["kind"], "Status");
        assert_eq!(st["message"], message, "{query}");
    };
    refused(
        "watch=1&sendInitialEvents=true",
        422,
        r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"#,
    );
    refused(
        "watch=1&resourceVersionMatch=NotOlderThan",
        422,
        r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"#,
    );
    refused("sendInitialEvents=true", 422, r#"ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"#);
    refused(
        "resourceVersionMatch=NotOlderThan",
        422,
        r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"#,
    );
    refused("watch=1&sendInitialEvents=maybe&resourceVersionMatch=NotOlderThan", 400, r#"strconv.ParseBool: parsing "maybe": invalid syntax"#);
}

#[test]
fn fifty_concurrent_read_modify_writers_see_conflicts_and_lose_no_update() {
    let s = ApiServer::start("rmw");
    let raw = Arc::new(Raw::new(&s));
    let path = "/api/v1/namespaces/default/configmaps/counter";
    assert_eq!(raw.send_json("POST", "/api/v1/namespaces/default/configmaps", &configmap("default", "counter", json!({"n": "0"}))).code, 201);
    const WRITERS: usize = 50;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (raw, barrier) = (raw.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut conflicts = 0;
                let mut first = true;
                loop {
                    let mut obj = raw.get(path).json();
                    if first {
                        // every writer has read the same version before anyone writes
                        barrier.wait();
                        first = false;
                    }
                    let n: u64 = obj["data"]["n"].as_str().unwrap_or("").parse().expect("counter");
                    obj["data"]["n"] = json!((n + 1).to_string());
                    let a = raw.send_json("PUT", path, &obj);
                    match a.code {
                        200 => return conflicts,
                        409 => {
                            assert_eq!(a.json()["reason"], "Conflict");
                            conflicts += 1;
                        }
                        other => panic!("PUT answered {other}: {}", a.text()),
                    }
                }
            })
        })
        .collect();
    let conflicts: usize = handles.into_iter().map(|h| h.join().expect("writer")).sum();
    let n = raw.get(path).json()["data"]["n"].as_str().unwrap_or("").to_string();
    assert_eq!(n, WRITERS.to_string(), "every successful write counted once");
    assert!(conflicts >= WRITERS - 1, "writers of the same version conflict: {conflicts}");
}

#[test]
fn a_watch_resumed_from_any_version_sees_every_later_event_once_and_410_when_too_old() {
    let mut s = ApiServer::start("resume");
    let raw = Raw::new(&s);
    s.ok("1.33", &["create", "namespace", "berth-resume"]);
    let base = "/api/v1/namespaces/berth-resume/configmaps";
    let mut rvs = vec![];
    for i in 0..20 {
        let a = if i == 0 {
            raw.send_json("POST", base, &configmap("berth-resume", "w", json!({"i": "0"})))
        } else {
            raw.send("PATCH", &format!("{base}/w"), "application/merge-patch+json", json!({"data": {"i": i.to_string()}}).to_string().as_bytes())
        };
        assert!(a.code == 200 || a.code == 201, "{}", a.text());
        rvs.push(a.json()["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string());
    }
    let raw = Arc::new(raw);
    let handles: Vec<_> = rvs
        .iter()
        .map(|rv| {
            let (raw, path) = (raw.clone(), format!("{base}?watch=1&resourceVersion={rv}&timeoutSeconds=2"));
            std::thread::spawn(move || events(&raw.get(&path).text()))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let seen: Vec<String> = h.join().expect("watch").into_iter().map(|(t, _, rv)| format!("{t} {rv}")).collect();
        let want: Vec<String> = rvs[i + 1..].iter().map(|rv| format!("MODIFIED {rv}")).collect();
        assert_eq!(seen, want, "a watch from {} sees each later write exactly once", rvs[i]);
    }

    // The history does not survive a restart: a watch from before is 410 Expired, and a client
    // lists again and watches from the list's version.
    s.restart();
    let raw = Raw::new(&s);
    let out = raw.get(&format!("{base}?watch=1&resourceVersion={}&timeoutSeconds=1", rvs[0])).text();
    let first = json(out.lines().next().unwrap_or("{}"));
    assert_eq!(first["type"], "ERROR", "{out}");
    assert_eq!((first["object"]["code"].as_i64(), first["object"]["reason"].as_str()), (Some(410), Some("Expired")), "{out}");
    let list = raw.get(base).json();
    // the namespace also holds its kube-root-ca.crt (the root CA publisher's, as upstream)
    let w = list["items"].as_array().and_then(|items| items.iter().find(|i| i["metadata"]["name"] == "w")).cloned().unwrap_or_default();
    assert_eq!(w["data"]["i"], "19", "{list}");
    let list_rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
    let a = raw.send("PATCH", &format!("{base}/w"), "application/merge-patch+json", br#"{"data":{"i":"20"}}"#);
    assert_eq!(a.code, 200, "{}", a.text());
    let out = raw.get(&format!("{base}?watch=1&resourceVersion={list_rv}&timeoutSeconds=1")).text();
    let seen: Vec<(String, String, String)> = events(&out);
    assert_eq!(seen.len(), 1, "{out}");
    assert_eq!((seen[0].0.as_str(), seen[0].2.as_str()), ("MODIFIED", a.json()["metadata"]["resourceVersion"].as_str().unwrap_or("")));
}

/// What a client sees when the store compacts history under it: a list at a compacted version
/// and a continue token from before the compaction are 410 Expired with upstream's messages; a
/// relist and a watch from its version carry on.
fn compaction_gone_then_relist(s: &ApiServer) {
    let raw = Raw::new(s);
    s.ok("1.33", &["create", "namespace", "berth-compact"]);
    let base = "/api/v1/namespaces/berth-compact/configmaps";
    for i in 0..3 {
        let a = raw.send_json("POST", base, &configmap("berth-compact", &format!("c{i}"), json!({"v": "0"})));
        assert_eq!(a.code, 201, "{}", a.text());
    }
    let list = raw.get(base).json();
    let old_rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
    let page = raw.get(&format!("{base}?limit=1")).json();
    let token = page["metadata"]["continue"].as_str().unwrap_or("").to_string();
    assert!(!token.is_empty(), "{page}");
    let exact = format!("{base}?resourceVersion={old_rv}&resourceVersionMatch=Exact");
    assert_eq!(raw.get(&exact).code, 200, "the version is still there before any write");
    // Writes move the revision on; the compactor (every second) drops what is older.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    let (gone, last) = loop {
        n += 1;
        let a = raw.send("PATCH", &format!("{base}/c0"), "application/merge-patch+json", json!({"data": {"v": n.to_string()}}).to_string().as_bytes());
        assert_eq!(a.code, 200, "{}", a.text());
        let last = a.json()["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
        let answer = raw.get(&exact);
        if answer.code != 200 {
            break (answer, last);
        }
        assert!(Instant::now() < deadline, "the store never compacted: {}", s.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(gone.code, 410, "{}", gone.text());
    let st = gone.json();
    assert_eq!((st["reason"].as_str(), st["message"].as_str()), (Some("Expired"), Some("The resourceVersion for the provided list is too old.")), "{st}");
    let cont = raw.get(&format!("{base}?limit=1&continue={token}"));
    assert_eq!(cont.code, 410, "{}", cont.text());
    assert!(cont.json()["message"].as_str().unwrap_or("").starts_with("The provided continue parameter is too old"), "{}", cont.text());
    // kubectl and informers list again: the current state, at a current version.
    let list = raw.get(base).json();
    let names: Vec<&str> = list["items"].as_array().map(|a| a.iter().filter_map(|i| i["metadata"]["name"].as_str()).collect()).unwrap_or_default();
    assert_eq!(names, ["c0", "c1", "c2", "kube-root-ca.crt"], "every namespace has the cluster CA: {list}");
    let list_rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
    assert!(list_rv.parse::<i64>().unwrap_or(0) >= last.parse::<i64>().unwrap_or(i64::MAX), "{list_rv} {last}");
    let pages = s.ok("1.33", &["-n", "berth-compact", "get", "configmaps", "--chunk-size=1", "-o", "name"]);
    assert!(pages.contains("configmap/c2"), "{pages}");
    let a = raw.send("PATCH", &format!("{base}/c1"), "application/merge-patch+json", br#"{"data":{"v":"after"}}"#);
    assert_eq!(a.code, 200, "{}", a.text());
    let out = raw.get(&format!("{base}?watch=1&resourceVersion={list_rv}&timeoutSeconds=1")).text();
    let seen = events(&out);
    assert!(seen.iter().any(|(t, name, rv)| t == "MODIFIED" && name == "c1" && Some(rv.as_str()) == a.json()["metadata"]["resourceVersion"].as_str()), "{out}");
}

#[test]
fn compaction_answers_410_and_a_relist_recovers_on_the_embedded_store() {
    compaction_gone_then_relist(&ApiServer::start_with("compact", vec!["--etcd-compaction-interval".into(), "1s".into()]));
}

#[test]
fn compaction_answers_410_and_a_relist_recovers_on_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = rt.block_on(berth_store::etcd_process::EtcdCluster::single(&["--experimental-watch-progress-notify-interval=500ms"])).expect("start etcd");
    let endpoint = etcd.members[0].client_url.clone();
    compaction_gone_then_relist(&ApiServer::start_with(
        "compact-etcd",
        vec!["--datastore-endpoint".into(), endpoint, "--etcd-compaction-interval".into(), "1s".into()],
    ));
}

#[test]
fn bad_input_gets_upstream_codes_and_messages_and_stores_nothing() {
    let s = ApiServer::start("badinput");
    let raw = Raw::new(&s);
    let base = "/api/v1/namespaces/default/configmaps";
    assert_eq!(raw.send_json("POST", base, &configmap("default", "keep", json!({"a": "1"}))).code, 201);
    let snapshot = || {
        let list = raw.get(base).json();
        list["items"].as_array().cloned().unwrap_or_default()
    };
    let before = snapshot();
    let check = |a: Answer, code: u16, reason: &str, message: &str| {
        assert_eq!(a.code, code, "{}", a.text());
        let st = a.json();
        assert_eq!((st["kind"].as_str(), st["status"].as_str(), st["reason"].as_str()), (Some("Status"), Some("Failure"), Some(reason)), "{st}");
        let m = st["message"].as_str().unwrap_or("");
        assert!(m.contains(message), "{message:?} missing in {m:?}");
    };
    check(raw.send("POST", base, "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"#), 400, "BadRequest", "json parse error");
    check(
        raw.send("POST", base, "application/yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: [name: x\n"),
        400,
        "BadRequest",
        "error converting YAML to JSON",
    );
    check(raw.send("POST", base, "application/vnd.kubernetes.protobuf", b"k8s\x00\x0a\xff\xff"), 400, "BadRequest", "");
    check(raw.send("POST", base, "application/vnd.kubernetes.protobuf", b"not protobuf"), 400, "BadRequest", "");
    check(
        raw.send_json(
            "POST",
            &format!("{base}?fieldValidation=Strict"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1}),
        ),
        400,
        "BadRequest",
        r#"strict decoding error: unknown field "bogus""#,
    );
    check(
        raw.send_json("POST", base, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})),
        400,
        "BadRequest",
        "the kind of the object (Secret) does not match the expected kind (ConfigMap)",
    );
    check(
        raw.send_json("POST", base, &json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
        400,
        "BadRequest",
        "the API version in the data (apps/v1) does not match the expected API version (v1)",
    );
    check(
        raw.send_json("POST", base, &configmap("kube-system", "x", json!({}))),
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
    );
    check(
        raw.send_json("PUT", &format!("{base}/keep"), &configmap("kube-system", "keep", json!({}))),
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
    );
    let big = configmap("default", "big", json!({"blob": "x".repeat(3 * 1024 * 1024 + 10)}));
    check(raw.send_json("POST", base, &big), 413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728");
    check(
        raw.send_json("POST", base, &configmap("default", "Bad_Name", json!({}))),
        422,
        "Invalid",
        r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#,
    );
    check(
        raw.send("PATCH", &format!("{base}/keep"), "application/json-patch+json", br#"[{"op":"replace","path":"/data/nope","value":"x"}]"#),
        422,
        "Invalid",
        "replace operation does not apply: doc is missing path: /data/nope",
    );
    check(raw.send("PATCH", &format!("{base}/keep"), "application/json-patch+json", b"[{"), 400, "BadRequest", "");
    assert_eq!(snapshot(), before, "nothing was stored");
}

#[test]
fn cascading_deletes_follow_owner_references() {
    let s = ApiServer::start("cascade");
    let raw = Raw::new(&s);
    let ns = "default";
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    // an owner and a dependent that names it
    let pair = |owner: &str, dependent: &str| {
        let o = raw.send_json("POST", &base, &configmap(ns, owner, json!({})));
        assert_eq!(o.code, 201, "{}", o.text());
        let uid = o.json()["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let mut d = configmap(ns, dependent, json!({}));
        d["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid, "blockOwnerDeletion": true}]);
        assert_eq!(raw.send_json("POST", &base, &d).code, 201);
    };
    let rv0 = raw.get(&base).json()["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();

    // foreground: the owner is marked with the foregroundDeletion finalizer, its dependent goes
    // first, then the owner; kubectl waits for both
    pair("fg-owner", "fg-dep");
    assert_eq!(s.ok("1.33", &["-n", ns, "delete", "cm", "fg-owner", "--cascade=foreground"]).trim(), "configmap \"fg-owner\" deleted");
    for name in ["fg-owner", "fg-dep"] {
        assert_eq!(raw.get(&format!("{base}/{name}")).code, 404, "{name} is gone");
    }
    let out = raw.get(&format!("{base}?watch=1&resourceVersion={rv0}&timeoutSeconds=1")).text();
    let seen: Vec<Value> = out.lines().filter(|l| !l.is_empty()).map(json).collect();
    let marked = seen
        .iter()
        .position(|e| e["type"] == "MODIFIED" && e["object"]["metadata"]["name"] == "fg-owner")
        .unwrap_or_else(|| panic!("the owner was marked: {out}"));
    assert_eq!(seen[marked]["object"]["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{out}");
    assert!(seen[marked]["object"]["metadata"]["deletionTimestamp"].is_string(), "{out}");
    let position = |name: &str| seen.iter().position(|e| e["type"] == "DELETED" && e["object"]["metadata"]["name"] == name);
    assert!(position("fg-dep") < position("fg-owner") && position("fg-owner").is_some(), "the dependent goes before its owner: {out}");

    // orphan: the dependent stays, without the reference
    pair("or-owner", "or-dep");
    s.ok("1.33", &["-n", ns, "delete", "cm", "or-owner", "--cascade=orphan"]);
    let dep = raw.get(&format!("{base}/or-dep")).json();
    assert!(dep["metadata"].get("ownerReferences").is_none(), "{dep}");

    // background: the owner goes at once, the dependent after it
    pair("bg-owner", "bg-dep");
    s.ok("1.33", &["-n", ns, "delete", "cm", "bg-owner", "--cascade=background"]);
    s.ok("1.33", &["-n", ns, "wait", "--for=delete", "cm/bg-dep", "--timeout=30s"]);

    // the answer to a foreground delete is the marked object (200, as upstream)
    assert_eq!(raw.send_json("POST", &base, &configmap(ns, "fg-alone", json!({}))).code, 201);
    let a = raw.send_json("DELETE", &format!("{base}/fg-alone"), &json!({"propagationPolicy": "Foreground"}));
    assert_eq!(a.code, 200, "{}", a.text());
    let marked = a.json();
    assert_eq!(marked["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{marked}");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    assert_eq!(raw.get(&format!("{base}/fg-alone")).code, 404, "with no dependents the owner goes at once");

    // a policy upstream does not know
    let a = raw.send_json("DELETE", &format!("{base}/or-dep"), &json!({"propagationPolicy": "Sometimes"}));
    assert_eq!(a.code, 422, "{}", a.text());
    assert_eq!(raw.get(&format!("{base}/or-dep")).code, 200);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn clients_that_prefer_protobuf_get_protobuf_objects_lists_and_watch_frames() {
    let s = ApiServer::start("pbanswers");
    let raw = Raw::new(&s);
    let base = "/api/v1/namespaces/default/configmaps";
    for name in ["pb1", "pb2"] {
        assert_eq!(raw.send_json("POST", base, &configmap("default", name, json!({"greeting": "hello-from-berth"}))).code, 201);
    }
    let pb = "Accept: application/vnd.kubernetes.protobuf,application/json";
    let a = raw.call("GET", &format!("{base}/pb1"), &[pb], None);
    assert_eq!((a.code, a.content_type.as_str()), (200, "application/vnd.kubernetes.protobuf"));
    assert!(a.body.starts_with(b"k8s\0"), "the protobuf envelope");
    for want in [&b"ConfigMap"[..], b"pb1", b"hello-from-berth"] {
        assert!(contains(&a.body, want), "{:?} missing", String::from_utf8_lossy(want));
    }
    let a = raw.call("GET", base, &[pb], None);
    assert_eq!(a.content_type, "application/vnd.kubernetes.protobuf");
    assert!(a.body.starts_with(b"k8s\0") && contains(&a.body, b"ConfigMapList") && contains(&a.body, b"pb2"));
    // JSON first, Tables, and errors stay JSON
    assert_eq!(
        raw.call("GET", &format!("{base}/pb1"), &["Accept: application/json, application/vnd.kubernetes.protobuf"], None).json()["data"]["greeting"],
        "hello-from-berth"
    );
    let t = raw.call("GET", base, &["Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json"], None);
    assert_eq!(t.json()["kind"], "Table");
    let missing = raw.call("GET", &format!("{base}/nope"), &[pb], None);
    assert_eq!((missing.code, missing.json()["reason"].as_str()), (404, Some("NotFound")));

    // a watch: length-prefixed WatchEvents, each with its enveloped object
    let w = raw.call("GET", &format!("{base}?watch=1&timeoutSeconds=1"), &[pb], None);
    assert_eq!(w.content_type, "application/vnd.kubernetes.protobuf;stream=watch");
    let mut frames = vec![];
    let mut rest = &w.body[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert!(rest.len() >= 4 + len, "a whole frame");
        frames.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty());
    // the namespace's kube-root-ca.crt (the root CA publisher's, as upstream) sorts first
    assert_eq!(frames.len(), 3);
    assert!(contains(&frames[0], b"kube-root-ca.crt"));
    for (frame, name) in frames[1..].iter().zip([b"pb1", b"pb2"]) {
        assert!(frame.starts_with(b"\x0a\x05ADDED") && contains(frame, b"k8s\0") && contains(frame, name));
    }

    // kubectl 1.33 asks for protobuf on its typed commands and reads the answers
    assert_eq!(s.ok("1.33", &["-n", "default", "create", "configmap", "pb3", "--from-literal=a=b"]).trim(), "configmap/pb3 created");
    assert_eq!(s.ok("1.33", &["-n", "default", "label", "configmap", "pb3", "x=y"]).trim(), "configmap/pb3 labeled");
    assert_eq!(s.ok("1.33", &["-n", "default", "create", "deployment", "pbd", "--image=nginx", "--replicas=0"]).trim(), "deployment.apps/pbd created");
    assert_eq!(s.ok("1.33", &["-n", "default", "scale", "deployment", "pbd", "--replicas=2"]).trim(), "deployment.apps/pbd scaled");
}

#[test]
fn openapi_v2_in_json_has_every_definition() {
    let s = ApiServer::start("openapiv2");
    let raw = Raw::new(&s);
    let doc = raw.call("GET", "/openapi/v2", &["Accept: application/json"], None);
    assert_eq!(doc.code, 200);
    let doc = doc.json();
    assert_eq!(doc["swagger"], "2.0");
    let pod = &doc["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"], json!([{"group": "", "kind": "Pod", "version": "v1"}]));
    assert_eq!(pod["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
    assert!(doc["definitions"]["io.k8s.api.apps.v1.Deployment"].is_object());
    assert!(!doc.to_string().contains("#/components/schemas/"), "every reference points into definitions");
    assert!(doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"].is_object());
    // the patch strategies the server's strategic merge patch follows
    let spec = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"];
    assert_eq!(
        (spec["containers"]["x-kubernetes-patch-merge-key"].as_str(), spec["containers"]["x-kubernetes-patch-strategy"].as_str()),
        (Some("name"), Some("merge"))
    );
    assert_eq!(spec["volumes"]["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let ports = &doc["definitions"]["io.k8s.api.core.v1.Container"]["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(doc["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]["x-kubernetes-patch-strategy"], "retainKeys");
    assert!(spec["tolerations"].get("x-kubernetes-patch-strategy").is_none(), "atomic lists stay atomic");
    // kubectl's protobuf request gets the same document in protobuf, which every kubectl
    // version parses: explain in its OpenAPI v2 form, and apply computes its patches from it
    let pb = raw.call("GET", "/openapi/v2", &["Accept: application/com.github.proto-openapi.spec.v2.v1.0+protobuf"], None);
    assert_eq!((pb.code, pb.content_type.as_str()), (200, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"));
    assert!(pb.body.len() > 100_000, "{} bytes", pb.body.len());
    for v in ["1.27", "1.29", "1.30", "1.33"] {
        let out = s.ok(v, &["explain", "deployments.spec.strategy", "--output=plaintext-openapiv2"]);
        assert!(out.contains("KIND:     Deployment") && out.contains("RESOURCE: strategy <Object>"), "{v}: {out}");
        assert!(out.contains("rollingUpdate\t<Object>") && out.contains("type\t<string>"), "{v}: {out}");
        let out = s.ok(v, &["explain", "pods.spec.containers.ports.containerPort", "--output=plaintext-openapiv2"]);
        assert!(out.contains("FIELD:    containerPort <integer>"), "{v}: {out}");
        // apply: a removed container, a removed port and a strategy type change (retainKeys)
        let ns = format!("berth-v2-{}", v.replace('.', "-"));
        s.ok(v, &["create", "namespace", &ns]);
        let deployment = |containers: &str, strategy: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  strategy: {strategy}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: {containers}\n"
            )
        };
        let first = deployment(
            "[{name: a, image: nginx, ports: [{containerPort: 80}, {containerPort: 81}]}, {name: b, image: busybox}]",
            "{type: RollingUpdate, rollingUpdate: {maxSurge: 2}}",
        );
        s.ok_in(v, &["apply", "-f", "-"], Some(&first));
        let second = deployment("[{name: a, image: nginx, ports: [{containerPort: 81}]}]", "{type: Recreate}");
        s.ok_in(v, &["apply", "-f", "-"], Some(&second));
        let got = s.ok(
            v,
            &[
                "-n",
                &ns,
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.strategy} {.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].ports[*].containerPort}",
            ],
        );
        assert_eq!(got, r#"{"type":"Recreate"} a 81"#, "{v}");
    }
}
