//! Authentication end to end: the real `berth server` and real kubectl (1.33 and 1.27). Anonymous
//! callers read only the public documents; static, bootstrap and service account tokens
//! authenticate and say who they are through `kubectl auth whoami`; bad, expired and unbound
//! tokens get upstream's 401; TokenReview and the OIDC documents (whose JWK verifies the tokens)
//! work; the node join token exists and authenticates.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use berth_integration::apiserver::{kubectl_bin, ApiServer};
use ring::signature::{EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// upstream's answer to a request without a good credential.
fn unauthorized() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
}

/// A field of the admin kubeconfig.
fn kubeconfig_field(s: &ApiServer, name: &str) -> String {
    let kc = std::fs::read_to_string(&s.kubeconfig).expect("kubeconfig");
    kc.lines().find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string())).unwrap_or_else(|| panic!("{name} missing"))
}

/// One HTTP answer.
struct Answer {
    code: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// curl with the cluster CA, optionally the admin's client certificate and a bearer token.
struct Curl {
    server: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Curl {
    fn new(s: &ApiServer) -> Curl {
        let dir = s.dir.path().join("curl");
        std::fs::create_dir_all(&dir).expect("curl dir");
        let write = |file: &str, field: &str| {
            let path = dir.join(file);
            std::fs::write(&path, STANDARD.decode(kubeconfig_field(s, field)).expect("base64")).expect("write pem");
            path
        };
        Curl {
            server: kubeconfig_field(s, "server"),
            ca: write("ca.crt", "certificate-authority-data"),
            cert: write("admin.crt", "client-certificate-data"),
            key: write("admin.key", "client-key-data"),
        }
    }

    fn call(&self, method: &str, path: &str, client_cert: bool, token: Option<&str>, body: Option<&Value>) -> Answer {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http1.1", "-D", "-", "-X", method, "--max-time", "30"]).arg("--cacert").arg(&self.ca);
        if client_cert {
            cmd.arg("--cert").arg(&self.cert).arg("--key").arg(&self.key);
        }
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
        }
        let out = cmd.arg(format!("{}{path}", self.server)).stderr(Stdio::piped()).output().expect("curl");
        assert!(out.status.success(), "curl {method} {path}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("response headers");
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
        let content_type = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default();
        Answer { code, content_type, body: body.to_string() }
    }

    fn anonymous(&self, path: &str) -> Answer {
        self.call("GET", path, false, None, None)
    }

    fn with_token(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, false, Some(token), None)
    }
}

/// kubectl `version` as the holder of `token` (a kubeconfig with the CA and no client certificate).
fn as_token(s: &ApiServer, version: &str, token: &str, args: &[&str]) -> Output {
    // written each time: a restarted server listens on another port
    let path = s.dir.path().join("token.kubeconfig");
    {
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: nobody\ncurrent-context: berth\n",
            kubeconfig_field(s, "server"),
            kubeconfig_field(s, "certificate-authority-data")
        );
        std::fs::write(&path, kc).expect("token kubeconfig");
    }
    Command::new(kubectl_bin(version))
        .arg("--kubeconfig")
        .arg(&path)
        .arg("--cache-dir")
        .arg(s.dir.path().join("token-cache"))
        .arg("--token")
        .arg(token)
        .args(args)
        .output()
        .expect("run kubectl")
}

/// `kubectl auth whoami` as `token` must succeed: its table.
fn whoami(s: &ApiServer, version: &str, token: &str) -> String {
    let out = as_token(s, version, token, &["auth", "whoami"]);
    assert!(out.status.success(), "kubectl {version} auth whoami: {}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), s.log());
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The value column of `attribute` in whoami's table.
fn attribute(table: &str, attribute: &str) -> String {
    table
        .lines()
        .find_map(|l| l.strip_prefix(attribute).filter(|rest| rest.starts_with(' ')).map(|rest| rest.trim().to_string()))
        .unwrap_or_else(|| panic!("no {attribute} in {table}"))
}

/// kubectl as `token` fails as unauthorized once the server has seen an object go (its caches
/// follow the store within moments).
fn refused_soon(s: &ApiServer, version: &str, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // (authenticated, the token's user may still be refused by RBAC: 403, not yet 401)
    while !String::from_utf8_lossy(&as_token(s, version, token, &["get", "configmaps", "-n", "default"]).stderr).contains("You must be logged in") {
        assert!(std::time::Instant::now() < deadline, "the token still works: {}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    refused(s, version, token);
}

/// kubectl as `token` must fail as unauthorized.
fn refused(s: &ApiServer, version: &str, token: &str) {
    let out = as_token(s, version, token, &["get", "configmaps", "-n", "default"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl {version} with a bad token succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("You must be logged in to the server"), "{stderr}");
}

#[test]
fn anonymous_callers_read_only_public_documents_and_static_tokens_authenticate() {
    let tag = "authn-static";
    let tokens = berth_integration::TempDir::new(tag);
    let file = tokens.path().join("tokens.csv");
    std::fs::write(&file, "s3cret-alice,alice,1001,\"dev,ops\"\ns3cret-bob,bob,1002,system:masters\ns3cret-dave,dave,1003\n").expect("token file");
    let s = ApiServer::start_with(tag, vec!["--token-auth-file".into(), file.display().to_string()]);
    let curl = Curl::new(&s);

    // no credential: 401 with upstream's Status on resources; the public documents are readable
    for path in ["/api/v1/namespaces/default/configmaps", "/api/v1/pods", "/apis/apps/v1/deployments", "/metrics"] {
        let a = curl.anonymous(path);
        assert_eq!((a.code, a.json()), (401, unauthorized()), "{path}");
    }
    for path in ["/version", "/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/openapi/v2", "/openapi/v3", "/healthz", "/readyz", "/livez"] {
        assert_eq!(curl.anonymous(path).code, 200, "{path}");
    }
    // a token nobody knows fails everywhere, even where anonymous callers may read
    for path in ["/version", "/api/v1/namespaces"] {
        let a = curl.with_token(path, "not-a-token");
        assert_eq!((a.code, a.json()), (401, unauthorized()), "{path}");
    }
    // a verified client certificate decides before the token is looked at (upstream's union)
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let a = curl.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", true, Some("not-a-token"), Some(&review));
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.json()["status"]["userInfo"], json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]}));

    for v in ["1.33", "1.27"] {
        let me = whoami(&s, v, "s3cret-alice");
        assert_eq!(attribute(&me, "Username"), "alice", "{v}: {me}");
        assert_eq!(attribute(&me, "UID"), "1001", "{v}: {me}");
        assert_eq!(attribute(&me, "Groups"), "[dev ops system:authenticated]", "{v}: {me}");
        let out = as_token(&s, v, "s3cret-bob", &["get", "namespaces", "-o", "name"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"), "{v}: {}", String::from_utf8_lossy(&out.stderr));
        // authenticated is not authorized: a user no role is bound to is refused (403, not 401)
        let out = as_token(&s, v, "s3cret-dave", &["get", "namespaces", "-o", "name"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            r#"Error from server (Forbidden): namespaces is forbidden: User "dave" cannot list resource "namespaces" in API group "" at the cluster scope"#,
            "{v}"
        );
        refused(&s, v, "s3cret-carol");
        // the review kinds are in discovery, create-only, as upstream lists them
        let resources = s.ok(v, &["api-resources", "--api-group=authentication.k8s.io", "-o", "wide"]);
        for kind in ["SelfSubjectReview", "TokenReview"] {
            let line = resources.lines().find(|l| l.contains(kind)).unwrap_or_else(|| panic!("{v}: no {kind} in {resources}"));
            assert!(line.contains("authentication.k8s.io/v1") && line.contains("false") && line.contains("create") && !line.contains("get"), "{v}: {line}");
        }
    }
}

/// The claims of a JWT (unverified).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("claims")
}

/// `claims` signed with the server's service account key (read from its data dir), as the
/// server would sign them.
fn sign_with_server_key(s: &ApiServer, kid: &str, claims: &Value) -> String {
    let pem = std::fs::read_to_string(s.dir.path().join("server/service-account.key")).expect("service account key");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &STANDARD.decode(b64).expect("pem"), &rng).expect("pkcs8");
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": kid}).to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = key.sign(&rng, input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[test]
fn service_account_tokens_authenticate_while_valid_and_bound_objects_exist() {
    let s = ApiServer::start("authn-sa");
    let curl = Curl::new(&s);
    let ns = "berth-sa";
    s.ok("1.33", &["create", "namespace", ns]);
    s.ok("1.33", &["-n", ns, "create", "serviceaccount", "builder"]);
    let sa_uid = s.ok("1.33", &["-n", ns, "get", "serviceaccount", "builder", "-o", "jsonpath={.metadata.uid}"]);
    let user = format!("system:serviceaccount:{ns}:builder");

    for v in ["1.33", "1.27"] {
        let token = s.ok(v, &["-n", ns, "create", "token", "builder"]).trim().to_string();
        let c = claims(&token);
        assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local", "{c}");
        assert_eq!(c["sub"], user.as_str(), "{c}");
        assert_eq!(c["aud"], json!(["https://kubernetes.default.svc.cluster.local"]), "{c}");
        assert_eq!(c["exp"].as_i64().unwrap_or(0) - c["iat"].as_i64().unwrap_or(0), 3600, "{c}");
        assert_eq!(c["nbf"], c["iat"], "{c}");
        assert_eq!(c["kubernetes.io"], json!({"namespace": ns, "serviceaccount": {"name": "builder", "uid": sa_uid}}), "{c}");
        let jti = c["jti"].as_str().unwrap_or("").to_string();
        assert!(!jti.is_empty(), "{c}");

        let me = whoami(&s, v, &token);
        assert_eq!(attribute(&me, "Username"), user, "{v}: {me}");
        assert_eq!(attribute(&me, "UID"), sa_uid, "{v}: {me}");
        assert_eq!(attribute(&me, "Groups"), format!("[system:serviceaccounts system:serviceaccounts:{ns} system:authenticated]"), "{v}: {me}");
        assert_eq!(attribute(&me, "Extra: authentication.kubernetes.io/credential-id"), format!("[JTI={jti}]"), "{v}: {me}");

        // a changed payload breaks the signature
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = c.clone();
        forged["sub"] = json!("system:serviceaccount:kube-system:admin");
        refused(&s, v, &format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged.to_string()), parts[2]));
        // tokens for another audience are not for the API
        let other = s.ok(v, &["-n", ns, "create", "token", "builder", "--audience", "vault"]).trim().to_string();
        assert_eq!(claims(&other)["aud"], json!(["vault"]));
        refused(&s, v, &other);
        let short = s.fails(v, &["-n", ns, "create", "token", "builder", "--duration", "5m"], None);
        assert!(
            short.contains(r#"TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"#),
            "{v}: {short}"
        );
    }
    let missing = s.fails("1.33", &["-n", ns, "create", "token", "nobody"], None);
    assert!(missing.contains(r#"serviceaccounts "nobody" not found"#), "{missing}");

    // a token signed with the server's key: good while its time window holds, refused after
    let token = s.ok("1.33", &["-n", ns, "create", "token", "builder"]).trim().to_string();
    let kid = serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap_or("")).expect("header")).expect("header json")["kid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut c = claims(&token);
    c["exp"] = json!(now() + 900);
    assert_eq!(attribute(&whoami(&s, "1.33", &sign_with_server_key(&s, &kid, &c)), "Username"), user);
    c["exp"] = json!(now() - 3600);
    c["iat"] = json!(now() - 7200);
    c["nbf"] = json!(now() - 7200);
    refused(&s, "1.33", &sign_with_server_key(&s, &kid, &c));

    // OIDC discovery, anonymously, and the JWK verifies the token's signature
    let conf = curl.anonymous("/.well-known/openid-configuration");
    assert_eq!((conf.code, conf.content_type.as_str()), (200, "application/json"), "{}", conf.body);
    let conf = conf.json();
    assert_eq!(conf["issuer"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(conf["jwks_uri"], format!("{}/openid/v1/jwks", kubeconfig_field(&s, "server")));
    assert_eq!(conf["response_types_supported"], json!(["id_token"]));
    assert_eq!(conf["subject_types_supported"], json!(["public"]));
    let jwks = curl.anonymous("/openid/v1/jwks");
    assert_eq!((jwks.code, jwks.content_type.as_str()), (200, "application/jwk-set+json"), "{}", jwks.body);
    let jwk = jwks.json()["keys"][0].clone();
    assert_eq!((jwk["kty"].as_str(), jwk["kid"].as_str(), jwk["use"].as_str()), (Some("EC"), Some(kid.as_str()), Some("sig")), "{jwk}");
    let coord = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap_or("")).expect("coordinate");
    let point = [vec![4u8], coord("x"), coord("y")].concat();
    let (signed, sig) = token.rsplit_once('.').expect("jws");
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).expect("signature"))
        .expect("the JWK verifies the token");

    // TokenReview
    let review = |t: &str| {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}});
        s.ok_in("1.33", &["create", "-f", "-", "-o", "json"], Some(&body.to_string()))
    };
    let good: Value = serde_json::from_str(&review(&token)).expect("json");
    assert_eq!(good["status"]["authenticated"], true, "{good}");
    assert_eq!(good["status"]["user"]["username"], user.as_str(), "{good}");
    assert_eq!(good["status"]["user"]["uid"], sa_uid.as_str(), "{good}");
    assert_eq!(good["status"]["audiences"], json!(["https://kubernetes.default.svc.cluster.local"]), "{good}");
    // a signature that does not verify: not authenticated, and why; a token nobody recognises
    // (its signature is not even base64url): not authenticated, no error, as upstream
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims(&token);
    forged["sub"] = json!("system:serviceaccount:kube-system:admin");
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged.to_string()), parts[2]);
    let bad: Value = serde_json::from_str(&review(&tampered)).expect("json");
    assert_eq!(bad["status"], json!({"user": {}, "error": "invalid signature"}), "{bad}");
    let unknown: Value = serde_json::from_str(&review(&format!("{token}x"))).expect("json");
    assert_eq!(unknown["status"], json!({"user": {}}), "{unknown}");

    // a token bound to a pod: the pod's name and uid in the user; gone with the pod
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: worker\n  namespace: {ns}\nspec:\n  serviceAccountName: builder\n  containers:\n  - name: c\n    image: nginx:1.27\n"
    );
    s.ok_in("1.33", &["create", "-f", "-"], Some(&pod));
    let pod_uid = s.ok("1.33", &["-n", ns, "get", "pod", "worker", "-o", "jsonpath={.metadata.uid}"]);
    for v in ["1.33", "1.27"] {
        let bound = s.ok(v, &["-n", ns, "create", "token", "builder", "--bound-object-kind", "Pod", "--bound-object-name", "worker"]).trim().to_string();
        assert_eq!(claims(&bound)["kubernetes.io"]["pod"], json!({"name": "worker", "uid": pod_uid}));
        let me = whoami(&s, v, &bound);
        assert_eq!(attribute(&me, "Extra: authentication.kubernetes.io/pod-name"), "[worker]", "{v}: {me}");
        assert_eq!(attribute(&me, "Extra: authentication.kubernetes.io/pod-uid"), format!("[{pod_uid}]"), "{v}: {me}");
    }
    // the kubelet's 3607 seconds: a year, stale after the time asked for (upstream's extension)
    let kubelet = s.ok("1.33", &["-n", ns, "create", "token", "builder", "--bound-object-kind", "Pod", "--bound-object-name", "worker", "--duration", "3607s"]);
    let c = claims(kubelet.trim());
    let iat = c["iat"].as_i64().unwrap_or(0);
    assert_eq!((c["exp"].as_i64().unwrap_or(0) - iat, c["kubernetes.io"]["warnafter"].as_i64().unwrap_or(0) - iat), (365 * 24 * 3600, 3607), "{c}");
    let bound = s.ok("1.33", &["-n", ns, "create", "token", "builder", "--bound-object-kind", "Pod", "--bound-object-name", "worker"]).trim().to_string();
    let nopod = s.fails("1.33", &["-n", ns, "create", "token", "builder", "--bound-object-kind", "Pod", "--bound-object-name", "nothere"], None);
    assert!(nopod.contains(r#"pods "nothere" not found"#), "{nopod}");
    s.ok("1.33", &["-n", ns, "delete", "pod", "worker", "--wait=true"]);
    refused_soon(&s, "1.33", &bound);
    // a token bound to a node: the node in the user, gone with the node
    s.ok_in("1.33", &["create", "-f", "-"], Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: berth-n1\n"));
    let node_uid = s.ok("1.33", &["get", "node", "berth-n1", "-o", "jsonpath={.metadata.uid}"]);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Node", "name": "berth-n1"}}});
    let answer =
        s.ok_in("1.33", &["create", "--raw", &format!("/api/v1/namespaces/{ns}/serviceaccounts/builder/token"), "-f", "-"], Some(&request.to_string()));
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["kind"], "TokenRequest", "{answer}");
    assert!(answer["status"]["expirationTimestamp"].is_string(), "{answer}");
    let node_token = answer["status"]["token"].as_str().unwrap_or("").to_string();
    assert_eq!(claims(&node_token)["kubernetes.io"]["node"], json!({"name": "berth-n1", "uid": node_uid}));
    let me = whoami(&s, "1.33", &node_token);
    assert_eq!(attribute(&me, "Extra: authentication.kubernetes.io/node-name"), "[berth-n1]", "{me}");
    assert_eq!(attribute(&me, "Extra: authentication.kubernetes.io/node-uid"), format!("[{node_uid}]"), "{me}");
    s.ok("1.33", &["delete", "node", "berth-n1"]);
    refused_soon(&s, "1.33", &node_token);
    let deployment = json!({"spec": {"boundObjectRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}}});
    let out =
        s.kubectl_in("1.33", &["create", "--raw", &format!("/api/v1/namespaces/{ns}/serviceaccounts/builder/token"), "-f", "-"], Some(&deployment.to_string()));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot bind token to object of type apps/v1, Kind=Deployment"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a legacy token Secret: the server fills token, ca.crt and namespace; the token is good
    // while the Secret exists
    let legacy = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: builder-token\n  namespace: {ns}\n  annotations:\n    kubernetes.io/service-account.name: builder\ntype: kubernetes.io/service-account-token\n"
    );
    s.ok_in("1.33", &["create", "-f", "-"], Some(&legacy));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let filled = loop {
        let secret: Value = serde_json::from_str(&s.ok("1.33", &["-n", ns, "get", "secret", "builder-token", "-o", "json"])).expect("json");
        if secret["data"]["token"].is_string() {
            break secret;
        }
        assert!(std::time::Instant::now() < deadline, "the token secret was not filled: {secret}\n{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let data = |k: &str| String::from_utf8(STANDARD.decode(filled["data"][k].as_str().unwrap_or("")).unwrap_or_default()).unwrap_or_default();
    assert_eq!(data("namespace"), ns);
    assert_eq!(data("ca.crt").as_bytes(), STANDARD.decode(kubeconfig_field(&s, "certificate-authority-data")).expect("ca").as_slice());
    assert_eq!(filled["metadata"]["annotations"]["kubernetes.io/service-account.uid"], sa_uid.as_str());
    let legacy_token = data("token");
    assert_eq!(claims(&legacy_token)["iss"], "kubernetes/serviceaccount");
    let me = whoami(&s, "1.33", &legacy_token);
    assert_eq!((attribute(&me, "Username"), attribute(&me, "UID")), (user.clone(), sa_uid.clone()), "{me}");
    s.ok("1.33", &["-n", ns, "delete", "secret", "builder-token"]);
    refused_soon(&s, "1.33", &legacy_token);

    // and a token of a deleted service account stops working too
    s.ok("1.33", &["-n", ns, "delete", "serviceaccount", "builder"]);
    refused_soon(&s, "1.33", &token);
}

fn bootstrap_secret(id: &str, secret: &str, expiration: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{id}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {id}\n  token-secret: {secret}\n  expiration: \"{expiration}\"\n  usage-bootstrap-authentication: \"true\"\n  auth-extra-groups: system:bootstrappers:worker\n"
    )
}

#[test]
fn bootstrap_tokens_and_the_node_token_authenticate_until_they_expire() {
    let mut s = ApiServer::start("authn-bootstrap");
    let path = s.dir.path().join("server/node-token");
    let node_token = std::fs::read_to_string(&path).expect("node-token").trim().to_string();
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("node-token").permissions().mode() & 0o777, 0o600);
    }
    let (id, _) = node_token.split_once('.').expect("id.secret");
    assert!(s.log().contains(&format!("berth agent --server {} --token $(cat {})", kubeconfig_field(&s, "server"), path.display())), "{}", s.log());
    for v in ["1.33", "1.27"] {
        let me = whoami(&s, v, &node_token);
        assert_eq!(attribute(&me, "Username"), format!("system:bootstrap:{id}"), "{v}: {me}");
        assert_eq!(attribute(&me, "Groups"), "[system:bootstrappers system:bootstrappers:berth:default-node-token system:authenticated]", "{v}: {me}");
    }
    let secret = s.ok("1.33", &["-n", "kube-system", "get", "secret", &format!("bootstrap-token-{id}"), "-o", "json"]);
    let secret: Value = serde_json::from_str(&secret).expect("json");
    let data = |k: &str| String::from_utf8(STANDARD.decode(secret["data"][k].as_str().unwrap_or("")).unwrap_or_default()).unwrap_or_default();
    assert_eq!((data("usage-bootstrap-authentication"), data("usage-bootstrap-signing"), data("expiration")), ("true".into(), "true".into(), String::new()));

    s.ok_in("1.33", &["create", "-f", "-"], Some(&bootstrap_secret("abcdef", "0123456789abcdef", "2999-01-01T00:00:00Z")));
    s.ok_in("1.33", &["create", "-f", "-"], Some(&bootstrap_secret("expire", "0123456789abcdef", "2020-01-01T00:00:00Z")));
    for v in ["1.33", "1.27"] {
        let me = whoami(&s, v, "abcdef.0123456789abcdef");
        assert_eq!(attribute(&me, "Username"), "system:bootstrap:abcdef", "{v}: {me}");
        assert_eq!(attribute(&me, "Groups"), "[system:bootstrappers system:bootstrappers:worker system:authenticated]", "{v}: {me}");
        refused(&s, v, "expire.0123456789abcdef");
        refused(&s, v, "abcdef.0123456789abcdee");
        refused(&s, v, "zzzzzz.0123456789abcdef");
    }
    s.ok("1.33", &["-n", "kube-system", "delete", "secret", "bootstrap-token-abcdef"]);
    refused_soon(&s, "1.33", "abcdef.0123456789abcdef");

    // after a restart the same token, still good
    s.restart();
    assert_eq!(std::fs::read_to_string(&path).expect("node-token").trim(), node_token);
    assert_eq!(attribute(&whoami(&s, "1.33", &node_token), "Username"), format!("system:bootstrap:{id}"));
}

#[test]
fn service_account_issuers_and_api_audiences_come_from_the_flags() {
    let s = ApiServer::start_with(
        "authn-issuer",
        [
            "--service-account-issuer",
            "https://berth.example",
            "--service-account-issuer",
            "https://old.example",
            "--api-audiences",
            "api,https://berth.example",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect(),
    );
    s.ok("1.33", &["-n", "default", "create", "serviceaccount", "robot"]);
    let token = s.ok("1.33", &["-n", "default", "create", "token", "robot"]).trim().to_string();
    let c = claims(&token);
    assert_eq!((c["iss"].as_str(), c["aud"].clone()), (Some("https://berth.example"), json!(["api", "https://berth.example"])), "{c}");
    assert_eq!(attribute(&whoami(&s, "1.33", &token), "Username"), "system:serviceaccount:default:robot");
    let conf = Curl::new(&s).anonymous("/.well-known/openid-configuration").json();
    assert_eq!(conf["issuer"], "https://berth.example");
    // a token of the older issuer is still accepted; one of an unknown issuer is not
    let kid = serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap_or("")).expect("header")).expect("header json")["kid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut old = c.clone();
    old["iss"] = json!("https://old.example");
    assert_eq!(attribute(&whoami(&s, "1.33", &sign_with_server_key(&s, &kid, &old)), "Username"), "system:serviceaccount:default:robot");
    old["iss"] = json!("https://elsewhere.example");
    refused(&s, "1.33", &sign_with_server_key(&s, &kid, &old));
    // tokens for an audience the API does not accept are refused
    let other = s.ok("1.33", &["-n", "default", "create", "token", "robot", "--audience", "https://kubernetes.default.svc.cluster.local"]).trim().to_string();
    refused(&s, "1.33", &other);
}
