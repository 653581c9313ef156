//! The audit log end to end: `berth server --audit-policy-file --audit-log-path` with a policy of
//! several levels, real kubectl requests (allowed, forbidden, impersonated), and the JSON lines
//! in the log checked field by field.

use std::time::{Duration, Instant};

use berth_integration::apiserver::ApiServer;
use serde_json::Value;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
  - level: None
    userGroups: ["system:nodes"]
  - level: None
    users: ["system:kube-scheduler", "system:kube-controller-manager", "system:apiserver"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/api*", "/openapi*"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["configmaps"]
  - level: Request
    resources:
      - group: ""
        resources: ["secrets"]
    omitStages: ["RequestReceived"]
  - level: Metadata
"#;

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The events of requests for `resource` named `name` (or of its collection), once at least
/// `count` are in the log.
fn wait_events(path: &std::path::Path, count: usize, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = events(path).into_iter().filter(|e| pick(e)).collect();
        if found.len() >= count {
            return found;
        }
        assert!(Instant::now() < deadline, "{count} events not in the log; found {found:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn requests_are_audited_at_the_levels_the_policy_gives() {
    let dir = berth_integration::TempDir::new("audit-policy");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let log = dir.path().join("logs/audit.log");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "carol-token,carol,3001\n").expect("tokens");
    let s = ApiServer::start_with(
        "audit",
        [
            "--audit-policy-file",
            &policy.display().to_string(),
            "--audit-log-path",
            &log.display().to_string(),
            "--token-auth-file",
            &tokens.display().to_string(),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect(),
    );
    s.ok("1.33", &["-n", "default", "create", "configmap", "audited-cm", "--from-literal=k=v"]);
    // RequestResponse: both stages, the request and the answer, one audit ID
    let cm = wait_events(&log, 2, |e| e["objectRef"]["resource"] == "configmaps" && e["verb"] == "create");
    assert_eq!(cm[0]["stage"], "RequestReceived");
    assert_eq!(cm[1]["stage"], "ResponseComplete");
    assert_eq!(cm[0]["auditID"], cm[1]["auditID"]);
    let done = &cm[1];
    assert_eq!(done["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(done["kind"], "Event");
    assert_eq!(done["level"], "RequestResponse");
    assert_eq!(done["user"]["username"], "admin");
    assert_eq!(done["objectRef"]["namespace"], "default");
    assert_eq!(done["objectRef"]["apiVersion"], "v1");
    assert_eq!(done["responseStatus"]["code"], 201);
    assert_eq!(done["requestObject"]["data"]["k"], "v");
    assert_eq!(done["responseObject"]["metadata"]["name"], "audited-cm");
    assert!(done["responseObject"]["metadata"]["uid"].is_string());
    assert!(done["responseObject"]["metadata"].get("managedFields").is_none(), "omitManagedFields");
    assert_eq!(done["sourceIPs"][0], "127.0.0.1");
    assert!(done["userAgent"].as_str().is_some_and(|u| u.starts_with("kubectl")), "{done}");
    assert_eq!(done["annotations"]["authorization.k8s.io/decision"], "allow");
    assert!(done["requestReceivedTimestamp"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 27), "{done}");

    // Request level without the first stage: the request body, no answer
    s.ok("1.33", &["-n", "default", "create", "secret", "generic", "audited-secret", "--from-literal=p=q"]);
    let secret = wait_events(&log, 1, |e| e["objectRef"]["resource"] == "secrets" && e["verb"] == "create");
    assert_eq!(secret.len(), 1, "{secret:#?}");
    assert_eq!((secret[0]["stage"].as_str(), secret[0]["level"].as_str()), (Some("ResponseComplete"), Some("Request")));
    assert!(secret[0]["requestObject"]["data"]["p"].is_string());
    assert!(secret[0].get("responseObject").is_none());

    // Metadata: a refused request, and one made as another user
    let out = s.as_token("1.33", "carol-token", &["-n", "default", "get", "pods"]);
    assert!(!out.status.success());
    let refused = wait_events(&log, 2, |e| e["user"]["username"] == "carol" && e["objectRef"]["resource"] == "pods");
    let done = refused.iter().find(|e| e["stage"] == "ResponseComplete").expect("complete");
    assert_eq!((done["level"].as_str(), done["verb"].as_str()), (Some("Metadata"), Some("list")));
    assert_eq!(done["responseStatus"]["code"], 403);
    assert_eq!(done["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert!(done.get("requestObject").is_none() && done.get("responseObject").is_none());
    // (carol may not list nodes: can-i says no, with exit status 1)
    assert!(!s.kubectl("1.33", &["--as", "carol", "auth", "can-i", "list", "nodes", "--quiet"]).status.success());
    let imp = wait_events(&log, 1, |e| e["impersonatedUser"]["username"] == "carol" && e["stage"] == "ResponseComplete");
    assert_eq!(imp[0]["user"]["username"], "admin");
    assert_eq!(imp[0]["objectRef"]["resource"], "selfsubjectaccessreviews");

    // the authorizer's reason: none for system:masters (as upstream's privileged-group
    // authorizer), the binding RBAC allowed by
    assert_eq!(cm[1]["annotations"]["authorization.k8s.io/reason"], "", "{}", cm[1]["annotations"]);
    s.ok("1.33", &["-n", "default", "create", "rolebinding", "carol-view", "--clusterrole=view", "--user=carol"]);
    let out = s.as_token("1.33", "carol-token", &["-n", "default", "get", "configmaps", "audited-cm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = wait_events(&log, 1, |e| e["user"]["username"] == "carol" && e["verb"] == "get" && e["stage"] == "ResponseComplete");
    assert_eq!(
        read[0]["annotations"]["authorization.k8s.io/reason"],
        r#"RBAC: allowed by RoleBinding "carol-view/default" of ClusterRole "view" to User "carol""#
    );

    // admission's annotations: PodSecurity's policy and audit-level violations
    s.ok("1.33", &["create", "namespace", "audited-ns"]);
    s.ok("1.33", &["label", "namespace", "audited-ns", "pod-security.kubernetes.io/audit=restricted", "pod-security.kubernetes.io/enforce=baseline"]);
    s.ok("1.33", &["-n", "audited-ns", "run", "audited-pod", "--image=busybox", "--restart=Never"]);
    let pod = wait_events(&log, 1, |e| {
        e["objectRef"]["resource"] == "pods" && e["objectRef"]["namespace"] == "audited-ns" && e["verb"] == "create" && e["stage"] == "ResponseComplete"
    });
    let notes = &pod[0]["annotations"];
    assert_eq!(notes["pod-security.kubernetes.io/enforce-policy"], "baseline:latest", "{notes}");
    assert!(
        notes["pod-security.kubernetes.io/audit-violations"]
            .as_str()
            .is_some_and(|v| v.starts_with(r#"would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#)),
        "{notes}"
    );

    // a ValidatingAdmissionPolicy's Audit action and its auditAnnotations
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "berth-audited.example.com"},
        "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
                 "validations": [{"expression": "!object.metadata.name.startsWith('vap-audited')", "message": "audited name"}],
                 "auditAnnotations": [{"key": "name-length", "valueExpression": "string(size(object.metadata.name))"}]}
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&policy.to_string()));
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "berth-audited-binding"},
        "spec": {"policyName": "berth-audited.example.com", "validationActions": ["Audit"]}
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&binding.to_string()));
    s.ok("1.33", &["-n", "default", "create", "configmap", "vap-audited-1"]);
    let vap = wait_events(&log, 1, |e| e["responseObject"]["metadata"]["name"] == "vap-audited-1" && e["verb"] == "create" && e["stage"] == "ResponseComplete");
    let notes = &vap[0]["annotations"];
    assert_eq!(notes["berth-audited.example.com/name-length"], "13", "{notes}");
    let failures: Value =
        serde_json::from_str(notes["validation.policy.admission.k8s.io/validation_failure"].as_str().expect("validation_failure")).expect("json");
    assert_eq!(
        failures,
        serde_json::json!([{"message": "audited name", "policy": "berth-audited.example.com", "binding": "berth-audited-binding", "expressionIndex": 0, "validationActions": ["Audit"]}])
    );

    // None: nothing for what the policy leaves out
    assert!(events(&log).iter().all(|e| e["requestURI"].as_str().is_some_and(|u| !u.starts_with("/version") && !u.starts_with("/readyz"))));
}
