//! Admission webhooks end to end: the real `berth server`, real kubectl and a real HTTPS webhook
//! (served by this test on 127.0.0.1 with a certificate of its own CA, given as caBundle).
//! A validating webhook denies with its message, a mutating one patches, one that answers too
//! late fails the request under failurePolicy Fail and is skipped under Ignore, object
//! selectors pick what is sent, and bad configurations are refused with 422.
//! ValidatingAdmissionPolicies judge with CEL, Kubernetes' CEL libraries included.

use std::sync::Arc;

use base64::Engine;
use berth_integration::apiserver::ApiServer;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// The webhook server: answers /deny, /patch and /slow (after 3 s); stops with the test.
struct WebhookServer {
    port: u16,
    ca_pem: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn answer(path: &str, review: &Value) -> Value {
    let uid = review["request"]["uid"].clone();
    let name = review["request"]["name"].as_str().unwrap_or("");
    match path {
        "/deny" => json!({"uid": uid, "allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": format!("configmap {name} is not welcome")}}),
        "/patch" => {
            let ops = json!([{"op": "add", "path": "/metadata/labels/patched-by", "value": "berth-webhook"}]);
            let patch = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch, "warnings": ["patched by the test webhook"]})
        }
        // what the reinvocation test's webhooks do: record whether label `b` is there yet
        // (idempotent, as IfNeeded webhooks must be), and add label `b`
        "/seen-b" => {
            let seen = review["request"]["object"]["metadata"]["labels"].get("b").is_some();
            let ops = json!([{"op": "add", "path": "/metadata/labels/a-seen-b", "value": seen.to_string()}]);
            let patch = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch, "auditAnnotations": {"saw-b": seen.to_string()}})
        }
        "/add-b" => {
            let ops = json!([{"op": "add", "path": "/metadata/labels/b", "value": "1"}]);
            let patch = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch})
        }
        _ => json!({"uid": uid, "allowed": true}),
    }
}

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<bytes::Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path == "/slow" {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    let out = json!({"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": answer(&path, &review)});
    Ok(Response::builder().header("content-type", "application/json").body(Full::new(bytes::Bytes::from(out.to_string()))).expect("response"))
}

fn start_webhook() -> WebhookServer {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "berth-webhook-test-ca");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("tls config");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), hyper::service::service_fn(handle)).await;
            });
        }
    });
    WebhookServer { port, ca_pem: ca.pem(), runtime: Some(runtime) }
}

fn webhook(hook: &WebhookServer, name: &str, path: &str, label: &str, extra: Value) -> Value {
    let mut w = json!({
        "name": name,
        "clientConfig": {"url": format!("https://127.0.0.1:{}{path}", hook.port), "caBundle": base64::engine::general_purpose::STANDARD.encode(&hook.ca_pem)},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "objectSelector": {"matchLabels": {"berth-webhook": label}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"]
    });
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            w[k] = v.clone();
        }
    }
    w
}

fn configmap(name: &str, label: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "labels": {"berth-webhook": label}}, "data": {"a": "b"}})
        .to_string()
}

#[test]
fn webhooks_deny_patch_and_time_out_as_their_failure_policy_says() {
    let s = ApiServer::start("webhooks");
    let hook = start_webhook();
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "berth-validating"},
        "webhooks": [
            webhook(&hook, "deny.berth.test", "/deny", "deny", json!({})),
            webhook(&hook, "slow-fail.berth.test", "/slow", "slow-fail", json!({"timeoutSeconds": 1, "failurePolicy": "Fail"})),
            webhook(&hook, "slow-ignore.berth.test", "/slow", "slow-ignore", json!({"timeoutSeconds": 1, "failurePolicy": "Ignore"}))
        ]
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&validating.to_string()));
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "berth-mutating"},
        "webhooks": [webhook(&hook, "patch.berth.test", "/patch", "patch", json!({}))]
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&mutating.to_string()));
    // defaults as upstream's
    let stored: Value = serde_json::from_str(&s.ok("1.33", &["get", "validatingwebhookconfiguration", "berth-validating", "-o", "json"])).expect("json");
    let first = &stored["webhooks"][0];
    assert_eq!(
        (first["failurePolicy"].as_str(), first["matchPolicy"].as_str(), first["timeoutSeconds"].as_i64()),
        (Some("Fail"), Some("Equivalent"), Some(10))
    );
    assert_eq!(first["rules"][0]["scope"], "*");
    let table = s.ok("1.33", &["get", "validatingwebhookconfigurations"]);
    assert!(table.lines().any(|l| l.starts_with("berth-validating") && l.split_whitespace().nth(1) == Some("3")), "{table}");

    for v in ["1.33", "1.27"] {
        let n = v.replace('.', "-");
        // denied, with the webhook's message and code
        let err = s.fails(v, &["create", "-f", "-"], Some(&configmap(&format!("denied-{n}"), "deny")));
        assert!(
            err.contains(&format!(r#"Error from server (Forbidden): error when creating "STDIN": admission webhook "deny.berth.test" denied the request: configmap denied-{n} is not welcome"#)),
            "{v}: {err}"
        );
        // not selected: nothing is sent
        s.ok_in(v, &["create", "-f", "-"], Some(&configmap(&format!("plain-{n}"), "none")));
        // patched
        s.ok_in(v, &["create", "-f", "-"], Some(&configmap(&format!("patched-{n}"), "patch")));
        let label = s.ok(v, &["get", "configmap", &format!("patched-{n}"), "-o", "jsonpath={.metadata.labels.patched-by}"]);
        assert_eq!(label, "berth-webhook", "{v}");
        // too slow: Fail fails the request, Ignore lets it through
        let err = s.fails(v, &["create", "-f", "-"], Some(&configmap(&format!("slow-fail-{n}"), "slow-fail")));
        assert!(
            err.contains(&format!(
                r#"Internal error occurred: failed calling webhook "slow-fail.berth.test": failed to call webhook: Post "https://127.0.0.1:{}/slow?timeout=1s": context deadline exceeded"#,
                hook.port
            )),
            "{v}: {err}"
        );
        s.ok_in(v, &["create", "-f", "-"], Some(&configmap(&format!("slow-ignore-{n}"), "slow-ignore")));
    }
    let names = s.ok("1.33", &["get", "configmaps", "-o", "name"]);
    assert!(!names.contains("denied-") && !names.contains("slow-fail-"), "{names}");

    // a webhook that cannot be reached fails the request under Fail
    let gone = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "berth-unreachable"},
        "webhooks": [{"name": "gone.berth.test", "clientConfig": {"url": "https://127.0.0.1:1/x", "caBundle": base64::engine::general_purpose::STANDARD.encode(&hook.ca_pem)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "objectSelector": {"matchLabels": {"berth-webhook": "gone"}}, "sideEffects": "None", "admissionReviewVersions": ["v1"]}]
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&gone.to_string()));
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&configmap("unreachable", "gone")));
    assert!(
        err.contains(r#"failed calling webhook "gone.berth.test": failed to call webhook: Post "https://127.0.0.1:1/x?timeout=10s": dial tcp 127.0.0.1:1: connect: connection refused"#),
        "{err}"
    );

    // bad configurations are refused
    let bad = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "berth-bad"},
        "webhooks": [{"name": "bad.berth.test", "clientConfig": {"url": "http://127.0.0.1:1/x"}, "sideEffects": "Some", "admissionReviewVersions": ["v2"]}]
    });
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&bad.to_string()));
    for want in [
        r#"webhooks[0].clientConfig.url: Invalid value: "http://127.0.0.1:1/x": 'https' is the only allowed URL scheme"#,
        r#"webhooks[0].sideEffects: Unsupported value: "Some": supported values: "None", "NoneOnDryRun""#,
        "webhooks[0].admissionReviewVersions: Invalid value",
    ] {
        assert!(err.contains(want), "{want} missing in {err}");
    }
}

#[test]
fn validating_admission_policies_judge_with_cel_through_their_bindings() {
    let s = ApiServer::start("vap");
    s.ok("1.33", &["create", "namespace", "vap-test"]);
    s.ok("1.33", &["label", "namespace", "vap-test", "environment=test"]);
    s.ok("1.33", &["create", "namespace", "vap-other"]);
    s.ok("1.33", &["-n", "vap-test", "create", "configmap", "limits", "--from-literal=maxReplicas=4"]);
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "berth-replicas.example.com"},
        "spec": {
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
            "validations": [
                {"expression": "variables.replicas <= 5"},
                {"expression": "variables.replicas <= int(params.data.maxReplicas)", "messageExpression": "'at most ' + params.data.maxReplicas + ' replicas here, not ' + string(variables.replicas)", "reason": "Forbidden"}
            ]
        }
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&policy.to_string()));
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "berth-replicas-binding"},
        "spec": {"policyName": "berth-replicas.example.com", "validationActions": ["Deny"],
                 "paramRef": {"name": "limits", "parameterNotFoundAction": "Deny"},
                 "matchResources": {"namespaceSelector": {"matchLabels": {"environment": "test"}}}}
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&binding.to_string()));
    let stored: Value = serde_json::from_str(&s.ok("1.33", &["get", "validatingadmissionpolicy", "berth-replicas.example.com", "-o", "json"])).expect("json");
    assert_eq!(stored["spec"]["failurePolicy"], "Fail");
    for v in ["1.33", "1.27"] {
        let n = v.replace('.', "-");
        let err = s.fails(v, &["-n", "vap-test", "create", "deployment", &format!("big-{n}"), "--image=busybox", "--replicas=7"], None);
        assert!(
            err.contains(&format!(
                r#"deployments.apps "big-{n}" is forbidden: ValidatingAdmissionPolicy 'berth-replicas.example.com' with binding 'berth-replicas-binding' denied request: failed expression: variables.replicas <= 5"#
            )),
            "{v}: {err}"
        );
        // reason Invalid (422) with the message as a cause, as kubectl shows it for a manifest
        let manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("big-file-{n}"), "namespace": "vap-test"},
            "spec": {"replicas": 7, "selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        let err = s.fails(v, &["create", "-f", "-"], Some(&manifest.to_string()));
        assert!(
            err.contains(&format!(
                r#"The deployments "big-file-{n}" is invalid: : ValidatingAdmissionPolicy 'berth-replicas.example.com' with binding 'berth-replicas-binding' denied request: failed expression: variables.replicas <= 5"#
            )),
            "{v}: {err}"
        );
        // the second validation, with its message from params and its reason
        let err = s.fails(v, &["-n", "vap-test", "create", "deployment", &format!("five-{n}"), "--image=busybox", "--replicas=5"], None);
        assert!(
            err.contains(&format!(
                r#"Error from server (Forbidden): deployments.apps "five-{n}" is forbidden: ValidatingAdmissionPolicy 'berth-replicas.example.com' with binding 'berth-replicas-binding' denied request: at most 4 replicas here, not 5"#
            )) || err.contains("denied request: at most 4 replicas here, not 5"),
            "{v}: {err}"
        );
        s.ok(v, &["-n", "vap-test", "create", "deployment", &format!("small-{n}"), "--image=busybox", "--replicas=3"]);
        // not selected by the binding's namespaceSelector
        s.ok(v, &["-n", "vap-other", "create", "deployment", &format!("big-{n}"), "--image=busybox", "--replicas=7"]);
    }
    // without its params the binding denies (parameterNotFoundAction Deny)
    s.ok("1.33", &["-n", "vap-test", "delete", "configmap", "limits"]);
    let err = s.fails("1.33", &["-n", "vap-test", "create", "deployment", "no-params", "--image=busybox", "--replicas=1"], None);
    assert!(err.contains("no params found for policy binding with `Deny` parameterNotFoundAction"), "{err}");
    // Warn instead of Deny: allowed, with a warning
    let warn = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "berth-replicas-binding"},
        "spec": {"policyName": "berth-replicas.example.com", "validationActions": ["Warn"], "paramRef": {"name": "limits", "parameterNotFoundAction": "Allow"},
                 "matchResources": {"namespaceSelector": {"matchLabels": {"environment": "test"}}}}
    });
    s.ok_in("1.33", &["replace", "-f", "-"], Some(&warn.to_string()));
    let out = s.kubectl("1.33", &["-n", "vap-test", "create", "deployment", "warned", "--image=busybox", "--replicas=9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // (params missing and Allow: the binding does not apply at all, so no warning)
    s.ok("1.33", &["-n", "vap-test", "create", "configmap", "limits", "--from-literal=maxReplicas=4"]);
    let out = s.kubectl("1.33", &["-n", "vap-test", "create", "deployment", "warned-2", "--image=busybox", "--replicas=9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'berth-replicas.example.com' with binding 'berth-replicas-binding': failed expression: variables.replicas <= 5"),
        "{stderr}"
    );
    // an expression that does not compile is refused
    let bad = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "berth-bad.example.com"},
        "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]},
                 "validations": [{"expression": "object.spec.replicas <= "}]}
    });
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&bad.to_string()));
    assert!(err.contains(r#"spec.validations[0].expression: Invalid value: "object.spec.replicas <= ": compilation failed: "#), "{err}");
}

/// A pod for the CEL libraries test: `name`, one container per image with memory limit
/// `memory`, these annotations and labels.
fn cel_pod(name: &str, images: &[&str], memory: &str, annotations: Value, labels: Value) -> String {
    let containers: Vec<Value> =
        images.iter().enumerate().map(|(i, image)| json!({"name": format!("c{i}"), "image": image, "resources": {"limits": {"memory": memory}}})).collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "cel-test", "annotations": annotations, "labels": labels},
        "spec": {"containers": containers}})
    .to_string()
}

#[test]
fn validating_admission_policies_use_kubernetes_cel_libraries() {
    let s = ApiServer::start("vap-cel");
    s.ok("1.33", &["create", "namespace", "cel-test"]);
    s.ok("1.33", &["label", "namespace", "cel-test", "berth-cel=yes"]);
    // alice may create pods here, nothing else
    s.ok("1.33", &["-n", "cel-test", "create", "role", "pod-creator", "--verb=create,get", "--resource=pods"]);
    s.ok("1.33", &["-n", "cel-test", "create", "rolebinding", "alice-creates", "--role=pod-creator", "--user=alice"]);
    let has = |key: &str| format!("has(object.metadata.annotations) && '{key}' in object.metadata.annotations");
    let annotation = |key: &str| format!("object.metadata.annotations['{key}']");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "berth-cel-libraries.example.com"},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]},
            "variables": [{"name": "maxMemory", "expression": "quantity('256Mi')"}],
            "validations": [
                {"expression": "object.metadata.name.matches('^berth-[a-z0-9-]+$')", "message": "names start with berth-"},
                {"expression": "object.spec.containers.all(c, !quantity(c.resources.limits.memory).isGreaterThan(variables.maxMemory))",
                 "message": "memory limits are at most 256Mi"},
                {"expression": format!("!({}) || isURL({}) && url({}).getScheme() == 'https' && url({}).getHostname().endsWith('.berth.test')",
                    has("berth.test/callback"), annotation("berth.test/callback"), annotation("berth.test/callback"), annotation("berth.test/callback")),
                 "message": "callbacks are https URLs of berth.test"},
                {"expression": format!("!({}) || isIP({}) && cidr('10.0.0.0/8').containsIP(ip({}))",
                    has("berth.test/peer"), annotation("berth.test/peer"), annotation("berth.test/peer")),
                 "message": "peers are in 10.0.0.0/8"},
                {"expression": format!("!({}) || quantity({}).isLessThan(quantity('1Gi'))", has("berth.test/size"), annotation("berth.test/size"))},
                {"expression": "object.spec.containers.all(c, c.image.startsWith('registry.berth.test/'))",
                 "messageExpression": "'images not from the registry: ' + object.spec.containers.filter(c, !c.image.startsWith('registry.berth.test/')).map(c, c.image.lowerAscii()).join(', ')"},
                {"expression": "!has(object.metadata.labels) || !('berth.test/priority' in object.metadata.labels) || authorizer.group('berth.test').resource('priorities').check('use').allowed()",
                 "messageExpression": "'may not use priorities: ' + authorizer.requestResource.check('create').reason()"}
            ]
        }
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&policy.to_string()));
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "berth-cel-libraries-binding"},
        "spec": {"policyName": "berth-cel-libraries.example.com", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"berth-cel": "yes"}}}}
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&binding.to_string()));
    // pods need the namespace's default service account
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !s.kubectl("1.33", &["-n", "cel-test", "get", "serviceaccount", "default"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "no default service account in cel-test");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let good = json!({"berth.test/callback": "https://hooks.berth.test:8443/notify?x=1", "berth.test/peer": "10.1.2.3", "berth.test/size": "512Mi"});
    let image = "registry.berth.test/app:1";
    s.ok_in("1.33", &["create", "-f", "-"], Some(&cel_pod("berth-ok", &[image, image], "128Mi", good.clone(), json!({}))));
    let denied = |pod: String, message: &str| {
        let err = s.fails("1.33", &["create", "-f", "-"], Some(&pod));
        let want = format!("ValidatingAdmissionPolicy 'berth-cel-libraries.example.com' with binding 'berth-cel-libraries-binding' denied request: {message}");
        assert!(err.contains(&want), "want {want:?} in {err}");
    };
    denied(cel_pod("web", &[image], "128Mi", good.clone(), json!({})), "names start with berth-");
    denied(cel_pod("berth-big", &[image, image], "1Gi", good.clone(), json!({})), "memory limits are at most 256Mi");
    s.ok_in("1.33", &["create", "-f", "-"], Some(&cel_pod("berth-exactly", &[image], "268435456", good.clone(), json!({}))));
    let with = |key: &str, value: &str| {
        let mut a = good.clone();
        a[key] = json!(value);
        a
    };
    denied(
        cel_pod("berth-http", &[image], "1Mi", with("berth.test/callback", "http://hooks.berth.test/notify"), json!({})),
        "callbacks are https URLs of berth.test",
    );
    denied(
        cel_pod("berth-elsewhere", &[image], "1Mi", with("berth.test/callback", "https://example.com/notify"), json!({})),
        "callbacks are https URLs of berth.test",
    );
    denied(cel_pod("berth-peer", &[image], "1Mi", with("berth.test/peer", "192.168.1.1"), json!({})), "peers are in 10.0.0.0/8");
    denied(cel_pod("berth-peer-2", &[image], "1Mi", with("berth.test/peer", "not-an-ip"), json!({})), "peers are in 10.0.0.0/8");
    // a quantity that does not parse fails the expression (failurePolicy Fail)
    denied(
        cel_pod("berth-size", &[image], "1Mi", with("berth.test/size", "lots"), json!({})),
        "expression '!(has(object.metadata.annotations) && 'berth.test/size' in object.metadata.annotations) || quantity(object.metadata.annotations['berth.test/size']).isLessThan(quantity('1Gi'))' resulted in error: quantities must match the regular expression",
    );
    denied(cel_pod("berth-size-2", &[image], "1Mi", with("berth.test/size", "2Gi"), json!({})), "failed expression: ");
    denied(
        cel_pod("berth-images", &[image, "Docker.io/Nginx", "quay.io/x"], "1Mi", good.clone(), json!({})),
        "images not from the registry: docker.io/nginx, quay.io/x",
    );
    // the authorizer judges the request's user: the admin may use priorities, alice may not
    let priority = json!({"berth.test/priority": "high"});
    s.ok_in("1.33", &["create", "-f", "-"], Some(&cel_pod("berth-admin-priority", &[image], "1Mi", good.clone(), priority.clone())));
    s.ok_in("1.33", &["--as=alice", "create", "-f", "-"], Some(&cel_pod("berth-alice", &[image], "1Mi", good.clone(), json!({}))));
    let err = s.fails("1.33", &["--as=alice", "create", "-f", "-"], Some(&cel_pod("berth-alice-priority", &[image], "1Mi", good.clone(), priority)));
    assert!(
        err.contains(
            "denied request: may not use priorities: RBAC: allowed by RoleBinding \"alice-creates/cel-test\" of Role \"pod-creator\" to User \"alice\""
        ),
        "{err}"
    );
}

/// The audit policy of the matchConditions/reinvocation test: configmaps with everything.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: RequestResponse\n    resources:\n      - group: \"\"\n        resources: [\"configmaps\"]\n  - level: None\n";

/// The ResponseComplete audit event of the create of configmap `name`, once it is in the log.
fn created_event(log: &std::path::Path, name: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["stage"] == "ResponseComplete" && e["verb"] == "create" && e["responseObject"]["metadata"]["name"] == name);
        if let Some(e) = found {
            return e;
        }
        assert!(std::time::Instant::now() < deadline, "no audit event for the create of {name}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn match_conditions_pick_requests_and_if_needed_webhooks_are_reinvoked() {
    let dir = berth_integration::TempDir::new("webhook-audit");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY).expect("policy");
    let log = dir.path().join("audit.log");
    let s = ApiServer::start_with(
        "webhooks-mc",
        vec!["--audit-policy-file".into(), policy.display().to_string(), "--audit-log-path".into(), log.display().to_string()],
    );
    let hook = start_webhook();
    let cond = |name: &str, expression: &str| json!({"name": name, "expression": expression});
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "berth-conditions"},
        "webhooks": [
            webhook(&hook, "named.berth.test", "/deny", "mc", json!({"matchConditions": [cond("deny-prefix", "object.metadata.name.startsWith('mc-deny')"), cond("is-create", "request.operation == 'CREATE'")]})),
            webhook(&hook, "broken-fail.berth.test", "/deny", "mc-fail", json!({"matchConditions": [cond("missing", "object.data.missing == 'x'"), cond("always", "true")]})),
            webhook(&hook, "broken-ignore.berth.test", "/deny", "mc-ignore", json!({"failurePolicy": "Ignore", "matchConditions": [cond("missing", "object.data.missing == 'x'")]})),
            webhook(&hook, "false-wins.berth.test", "/deny", "mc-false", json!({"matchConditions": [cond("missing", "object.data.missing == 'x'"), cond("never", "false")]}))
        ]
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&validating.to_string()));
    // all conditions true: sent and denied; one false: not sent
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&configmap("mc-deny-1", "mc")));
    assert!(err.contains(r#"admission webhook "named.berth.test" denied the request: configmap mc-deny-1 is not welcome"#), "{err}");
    s.ok_in("1.33", &["create", "-f", "-"], Some(&configmap("mc-keep-1", "mc")));
    // a condition that cannot be evaluated: Fail refuses, Ignore skips the webhook; a false one
    // beats the error
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&configmap("mc-fail-1", "mc-fail")));
    assert!(err.contains(r#"configmaps "mc-fail-1" is forbidden: expression 'object.data.missing == 'x'' resulted in error: "#), "{err}");
    s.ok_in("1.33", &["create", "-f", "-"], Some(&configmap("mc-ignore-1", "mc-ignore")));
    s.ok_in("1.33", &["create", "-f", "-"], Some(&configmap("mc-false-1", "mc-false")));

    // reinvocation: a-seen-b (IfNeeded) runs before add-b; only the IfNeeded one sees `b`
    let seen = |name: &str, label: &str, policy: &str| {
        let mut w = webhook(&hook, name, "/seen-b", label, json!({"reinvocationPolicy": policy}));
        w["objectSelector"] = json!({"matchLabels": {"berth-webhook": label}});
        w
    };
    let first = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "berth-a-seen-b"},
        "webhooks": [seen("seen-again.berth.test", "reinvoke", "IfNeeded"), seen("seen-once.berth.test", "once", "Never")]
    });
    let mut add = webhook(&hook, "add-b.berth.test", "/add-b", "", json!({}));
    add["objectSelector"] = json!({"matchExpressions": [{"key": "berth-webhook", "operator": "In", "values": ["reinvoke", "once"]}]});
    let second = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "berth-b-add"},
        "webhooks": [add]
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&first.to_string()));
    s.ok_in("1.33", &["create", "-f", "-"], Some(&second.to_string()));
    s.ok_in("1.33", &["create", "-f", "-"], Some(&configmap("reinvoked", "reinvoke")));
    s.ok_in("1.33", &["create", "-f", "-"], Some(&configmap("not-reinvoked", "once")));
    let label = |name: &str| s.ok("1.33", &["get", "configmap", name, "-o", "jsonpath={.metadata.labels.a-seen-b}/{.metadata.labels.b}"]);
    assert_eq!(label("reinvoked"), "true/1");
    assert_eq!(label("not-reinvoked"), "false/1");

    // the audit log: each mutating call and each patch by round and index, the webhook's own
    // annotations under its name
    let e = created_event(&log, "reinvoked");
    let notes = &e["annotations"];
    let mutation = |key: &str| serde_json::from_str::<Value>(notes[key].as_str().unwrap_or_else(|| panic!("{key} missing: {notes}"))).expect("json");
    assert_eq!(
        mutation("mutation.webhook.admission.k8s.io/round_0_index_0"),
        json!({"configuration": "berth-a-seen-b", "webhook": "seen-again.berth.test", "mutated": true})
    );
    assert_eq!(
        mutation("mutation.webhook.admission.k8s.io/round_0_index_2"),
        json!({"configuration": "berth-b-add", "webhook": "add-b.berth.test", "mutated": true})
    );
    assert_eq!(
        mutation("mutation.webhook.admission.k8s.io/round_1_index_0"),
        json!({"configuration": "berth-a-seen-b", "webhook": "seen-again.berth.test", "mutated": true})
    );
    let patch = mutation("patch.webhook.admission.k8s.io/round_1_index_0");
    assert_eq!(patch["patch"], json!([{"op": "add", "path": "/metadata/labels/a-seen-b", "value": "true"}]), "{patch}");
    assert_eq!(patch["patchType"], "JSONPatch");
    assert!(notes.get("mutation.webhook.admission.k8s.io/round_0_index_1").is_none(), "{notes}");
    // first value wins: the first round's
    assert_eq!(notes["seen-again.berth.test/saw-b"], "false", "{notes}");
    let once = created_event(&log, "not-reinvoked");
    assert!(once["annotations"].get("mutation.webhook.admission.k8s.io/round_1_index_1").is_none(), "{}", once["annotations"]);
    assert!(once["annotations"].get("mutation.webhook.admission.k8s.io/round_0_index_1").is_some(), "{}", once["annotations"]);

    // bad conditions are refused
    let bad = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "berth-bad-conditions"},
        "webhooks": [webhook(&hook, "bad.berth.test", "/deny", "none", json!({"matchConditions": [cond("x", "object.metadata.name == "), cond("x", "true"), cond("", "true")]}))]
    });
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&bad.to_string()));
    for want in [
        r#"webhooks[0].matchConditions[0].expression: Invalid value: "object.metadata.name == ": compilation failed: "#,
        r#"webhooks[0].matchConditions[1].name: Duplicate value: "x""#,
        "webhooks[0].matchConditions[2].name: Required value",
    ] {
        assert!(err.contains(want), "{want} missing in {err}");
    }
}
