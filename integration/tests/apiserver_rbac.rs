//! Authorization end to end: the real `berth server`, real kubectl (1.33 and 1.27) and users
//! from a static token file. Users bound to view, edit or admin in one namespace can do what
//! upstream's roles let them and get upstream's 403 messages for the rest; `kubectl auth can-i`
//! (also `--list`) and `auth whoami` answer; escalation through a Role or a binding is refused;
//! impersonation needs `impersonate`; a ServiceAccount's token works once a RoleBinding names
//! it; aggregated roles pick up new ClusterRoles; SubjectAccessReview gives RBAC's reason; a
//! node's credential reads only the Secrets of pods bound to it; bootstrap roles come back at
//! the next start when deleted.

use std::process::Output;
use std::time::{Duration, Instant};

use berth_integration::apiserver::ApiServer;
use serde_json::{json, Value};

const NS: &str = "rbac-a";
const VERSIONS: [&str; 2] = ["1.33", "1.27"];

/// A server whose token file holds the test's users (the file's directory lives as long as the
/// server is used).
fn server(tag: &str) -> (ApiServer, berth_integration::TempDir) {
    let dir = berth_integration::TempDir::new(&format!("{tag}-tokens"));
    let file = dir.path().join("tokens.csv");
    std::fs::write(
        &file,
        "viewer-token,viewer,2001\n\
         editor-token,editor,2002\n\
         admin-token,nsadmin,2003\n\
         nobody-token,nobody,2004\n\
         imp-token,imp,2005\n\
         n1-token,system:node:berth-n1,2006,system:nodes\n",
    )
    .expect("token file");
    (ApiServer::start_with(tag, vec!["--token-auth-file".into(), file.display().to_string()]), dir)
}

fn out(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).trim().to_string(), String::from_utf8_lossy(&o.stderr).trim().to_string())
}

/// kubectl as `token`, which must succeed: stdout.
fn ok_as(s: &ApiServer, v: &str, token: &str, args: &[&str]) -> String {
    let o = s.as_token(v, token, args);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "kubectl {v} {args:?} as {token}: {stderr}\n{stdout}");
    stdout
}

/// kubectl as `token`, which must fail with `message` from the server.
fn refused_as(s: &ApiServer, v: &str, token: &str, args: &[&str], message: &str) {
    let o = s.as_token(v, token, args);
    let (stdout, stderr) = out(&o);
    assert!(!o.status.success(), "kubectl {v} {args:?} as {token} should be refused: {stdout}");
    assert!(stderr.contains(message), "kubectl {v} {args:?} as {token}:\n got: {stderr}\nwant: {message}");
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits for `check` on the output of kubectl as admin (a condition, never a fixed sleep).
fn wait_for(s: &ApiServer, args: &[&str], what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = s.kubectl("1.33", args);
        if o.status.success() && check(&String::from_utf8_lossy(&o.stdout)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the holder of `token` may list gizmos.berth.example.com in the test namespace, by a
/// SelfSubjectAccessReview (no CRD serves them, so kubectl's can-i could not resolve the group).
fn can_list(token: &str, s: &ApiServer) -> String {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": NS, "verb": "list", "group": "berth.example.com", "resource": "gizmos"}}});
    let path = s.dir.path().join(format!("review-{token}.json"));
    std::fs::write(&path, review.to_string()).expect("review file");
    let file = path.display().to_string();
    ok_as(s, "1.33", token, &["create", "-f", &file, "-o", "jsonpath={.status.allowed}"])
}

/// The namespace and the view/edit/admin bindings of the test users.
fn bind_users(s: &ApiServer) {
    s.ok("1.33", &["create", "namespace", NS]);
    for (user, role) in [("viewer", "view"), ("editor", "edit"), ("nsadmin", "admin")] {
        s.ok("1.33", &["-n", NS, "create", "rolebinding", &format!("{user}-{role}"), &format!("--clusterrole={role}"), &format!("--user={user}")]);
    }
}

#[test]
fn view_edit_and_admin_in_one_namespace_do_what_upstream_roles_allow() {
    let (s, _tokens) = server("rbac-roles");
    bind_users(&s);
    s.ok("1.33", &["-n", NS, "create", "configmap", "seed", "--from-literal=a=b"]);
    for v in VERSIONS {
        // view: reads, no writes, no secrets, nothing outside its namespace
        assert!(ok_as(&s, v, "viewer-token", &["-n", NS, "get", "configmaps", "-o", "name"]).contains("configmap/seed"), "{v}");
        refused_as(
            &s,
            v,
            "viewer-token",
            &["-n", "default", "get", "pods"],
            r#"Error from server (Forbidden): pods is forbidden: User "viewer" cannot list resource "pods" in API group "" in the namespace "default""#,
        );
        ok_as(&s, v, "viewer-token", &["-n", NS, "get", "configmap", "seed"]);
        refused_as(
            &s,
            v,
            "viewer-token",
            &["-n", NS, "create", "configmap", &format!("by-viewer-{}", v.replace('.', "-"))],
            r#"configmaps is forbidden: User "viewer" cannot create resource "configmaps" in API group "" in the namespace "rbac-a""#,
        );
        refused_as(
            &s,
            v,
            "viewer-token",
            &["-n", NS, "get", "secrets"],
            r#"Error from server (Forbidden): secrets is forbidden: User "viewer" cannot list resource "secrets" in API group "" in the namespace "rbac-a""#,
        );
        refused_as(
            &s,
            v,
            "viewer-token",
            &["get", "nodes"],
            r#"Error from server (Forbidden): nodes is forbidden: User "viewer" cannot list resource "nodes" in API group "" at the cluster scope"#,
        );
        refused_as(
            &s,
            v,
            "viewer-token",
            &["-n", NS, "delete", "configmap", "seed"],
            r#"Error from server (Forbidden): configmaps "seed" is forbidden: User "viewer" cannot delete resource "configmaps" in API group "" in the namespace "rbac-a""#,
        );
        // edit: writes and secrets, but no RBAC
        let cm = format!("by-editor-{}", v.replace('.', "-"));
        ok_as(&s, v, "editor-token", &["-n", NS, "create", "configmap", &cm, "--from-literal=x=y"]);
        ok_as(&s, v, "editor-token", &["-n", NS, "get", "secrets"]);
        refused_as(
            &s,
            v,
            "editor-token",
            &["-n", NS, "create", "rolebinding", &format!("e-{}", v.replace('.', "-")), "--clusterrole=view", "--user=nobody"],
            r#"rolebindings.rbac.authorization.k8s.io is forbidden: User "editor" cannot create resource "rolebindings" in API group "rbac.authorization.k8s.io" in the namespace "rbac-a""#,
        );
        // pods/exec is create on the subresource: edit has it, view has not
        assert_eq!(ok_as(&s, v, "editor-token", &["-n", NS, "auth", "can-i", "create", "pods/exec"]), "yes", "{v}");
        let o = s.as_token(v, "viewer-token", &["-n", NS, "auth", "can-i", "create", "pods/exec"]);
        assert_eq!(out(&o).0, "no", "{v}");
        // admin: RBAC within the namespace, as far as it holds the rights it grants
        let role = format!("cm-reader-{}", v.replace('.', "-"));
        ok_as(&s, v, "admin-token", &["-n", NS, "create", "role", &role, "--verb=get,list", "--resource=configmaps"]);
        ok_as(&s, v, "admin-token", &["-n", NS, "create", "rolebinding", &role, &format!("--role={role}"), "--user=nobody"]);
        assert!(ok_as(&s, v, "nobody-token", &["-n", NS, "get", "configmaps", "-o", "name"]).contains("configmap/seed"), "{v}");
        refused_as(
            &s,
            v,
            "admin-token",
            &["-n", NS, "create", "role", &format!("nodes-{}", v.replace('.', "-")), "--verb=get", "--resource=nodes"],
            &format!(
                "roles.rbac.authorization.k8s.io \"nodes-{}\" is forbidden: user \"nsadmin\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}}",
                v.replace('.', "-")
            ),
        );
        // binding a ClusterRole it does not hold (cluster-admin) is escalation too
        refused_as(
            &s,
            v,
            "admin-token",
            &["-n", NS, "create", "rolebinding", &format!("ca-{}", v.replace('.', "-")), "--clusterrole=cluster-admin", "--user=nsadmin"],
            "is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}",
        );
        // can-i and whoami
        assert_eq!(ok_as(&s, v, "viewer-token", &["-n", NS, "auth", "can-i", "list", "pods"]), "yes", "{v}");
        let o = s.as_token(v, "viewer-token", &["-n", NS, "auth", "can-i", "create", "deployments.apps"]);
        assert_eq!((out(&o).0.as_str(), o.status.code()), ("no", Some(1)), "{v}");
        let list = ok_as(&s, v, "viewer-token", &["-n", NS, "auth", "can-i", "--list"]);
        let pods = list.lines().find(|l| l.starts_with("pods ")).unwrap_or_else(|| panic!("{v}: no pods line in\n{list}"));
        assert!(pods.contains("[get list watch]"), "{v}: {pods}");
        assert!(list.lines().any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io") && l.contains("[create]")), "{v}: {list}");
        assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{v}: view must not list secrets:\n{list}");
        assert!(ok_as(&s, v, "viewer-token", &["auth", "whoami"]).contains("viewer"), "{v}");
    }
}

#[test]
fn impersonation_needs_the_impersonate_verb() {
    let (s, _tokens) = server("rbac-imp");
    bind_users(&s);
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "berth-impersonate-viewer"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["viewer"]},
                  {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["system:authenticated"]}]}"#;
    s.ok_in("1.33", &["apply", "-f", "-"], Some(role));
    s.ok("1.33", &["create", "clusterrolebinding", "berth-imp", "--clusterrole=berth-impersonate-viewer", "--user=imp"]);
    for v in VERSIONS {
        assert_eq!(ok_as(&s, v, "imp-token", &["--as", "viewer", "-n", NS, "auth", "can-i", "list", "pods"]), "yes", "{v}");
        let who = ok_as(&s, v, "imp-token", &["--as", "viewer", "auth", "whoami"]);
        assert!(who.contains("viewer") && who.contains("system:authenticated"), "{v}: {who}");
        refused_as(
            &s,
            v,
            "imp-token",
            &["--as", "editor", "-n", NS, "get", "pods"],
            r#"Error from server (Forbidden): users "editor" is forbidden: User "imp" cannot impersonate resource "users" in API group "" at the cluster scope"#,
        );
        refused_as(
            &s,
            v,
            "imp-token",
            &["--as", "viewer", "--as-group", "system:masters", "get", "nodes"],
            r#"groups "system:masters" is forbidden: User "imp" cannot impersonate resource "groups" in API group "" at the cluster scope"#,
        );
        refused_as(
            &s,
            v,
            "nobody-token",
            &["--as", "viewer", "-n", NS, "get", "pods"],
            r#"users "viewer" is forbidden: User "nobody" cannot impersonate resource "users" in API group "" at the cluster scope"#,
        );
        // the admin may impersonate anyone, and then has only that user's rights
        let o = s.kubectl(v, &["--as", "viewer", "-n", NS, "auth", "can-i", "create", "pods"]);
        assert_eq!(out(&o).0, "no", "{v}");
        let o = s.kubectl(v, &["--as", "system:serviceaccount:rbac-a:robot", "auth", "whoami", "-o", "json"]);
        let me = json(&out(&o).0);
        assert_eq!(me["status"]["userInfo"]["groups"], json!(["system:serviceaccounts", "system:serviceaccounts:rbac-a", "system:authenticated"]), "{v}");
    }
}

#[test]
fn service_account_tokens_work_once_a_role_binding_names_them() {
    let (s, _tokens) = server("rbac-sa");
    bind_users(&s);
    s.ok("1.33", &["-n", NS, "create", "serviceaccount", "robot"]);
    let token = s.ok("1.33", &["-n", NS, "create", "token", "robot"]).trim().to_string();
    for v in VERSIONS {
        refused_as(
            &s,
            v,
            &token,
            &["-n", NS, "get", "pods"],
            r#"Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:rbac-a:robot" cannot list resource "pods" in API group "" in the namespace "rbac-a""#,
        );
    }
    s.ok("1.33", &["-n", NS, "create", "rolebinding", "robot-view", "--clusterrole=view", "--serviceaccount=rbac-a:robot"]);
    for v in VERSIONS {
        // right after the binding was written: the server waits for its cache to see it
        ok_as(&s, v, &token, &["-n", NS, "get", "pods"]);
        refused_as(&s, v, &token, &["-n", "default", "get", "pods"], r#"User "system:serviceaccount:rbac-a:robot" cannot list resource "pods""#);
    }
    // a binding to a role that does not exist says so in the refusal
    s.ok("1.33", &["-n", NS, "create", "rolebinding", "robot-missing", "--role=no-such-role", "--serviceaccount=rbac-a:robot"]);
    refused_as(
        &s,
        "1.33",
        &token,
        &["-n", NS, "create", "configmap", "x"],
        r#"configmaps is forbidden: User "system:serviceaccount:rbac-a:robot" cannot create resource "configmaps" in API group "" in the namespace "rbac-a": RBAC: role.rbac.authorization.k8s.io "no-such-role" not found"#,
    );
}

#[test]
fn aggregated_roles_pick_up_new_cluster_roles_and_bootstrap_roles_come_back() {
    let (mut s, _tokens) = server("rbac-agg");
    bind_users(&s);
    // the bootstrap policy is there, labelled as upstream labels it
    let roles = s.ok("1.33", &["get", "clusterroles", "-o", "name"]);
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:node",
        "system:kube-scheduler",
        "system:controller:node-controller",
    ] {
        assert!(roles.lines().any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{r}")), "{r} missing:\n{roles}");
    }
    let view = json(&s.ok("1.33", &["get", "clusterrole", "view", "-o", "json"]));
    assert_eq!(view["metadata"]["labels"]["kubernetes.io/bootstrapping"], "rbac-defaults");
    assert!(view["rules"].as_array().is_some_and(|r| r.iter().any(|r| r["resources"].as_array().is_some_and(|x| x.contains(&json!("pods"))))), "{view:#}");
    // a new ClusterRole labelled aggregate-to-view joins view
    let gizmos = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "berth-gizmo-viewer", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["berth.example.com"], "resources": ["gizmos"], "verbs": ["get", "list"]}]}"#;
    assert_eq!(can_list("viewer-token", &s), "false");
    s.ok_in("1.33", &["apply", "-f", "-"], Some(gizmos));
    wait_for(&s, &["get", "clusterrole", "view", "-o", "json"], "view aggregates gizmos", |t| t.contains("berth.example.com"));
    // view feeds edit, edit feeds admin
    wait_for(&s, &["get", "clusterrole", "admin", "-o", "json"], "admin aggregates gizmos", |t| t.contains("berth.example.com"));
    for (token, want) in [("viewer-token", "true"), ("editor-token", "true"), ("nobody-token", "false")] {
        assert_eq!(can_list(token, &s), want, "{token}");
    }
    // a deleted bootstrap role is back after a restart; a user's change to one is kept
    s.ok("1.33", &["delete", "clusterrole", "system:basic-user"]);
    s.ok("1.33", &["label", "clusterrole", "system:discovery", "berth-test=kept"]);
    s.restart();
    let basic = json(&s.ok("1.33", &["get", "clusterrole", "system:basic-user", "-o", "json"]));
    assert!(basic["rules"].to_string().contains("selfsubjectaccessreviews"), "{basic:#}");
    let discovery = json(&s.ok("1.33", &["get", "clusterrole", "system:discovery", "-o", "json"]));
    assert_eq!(discovery["metadata"]["labels"]["berth-test"], "kept");
}

#[test]
fn subject_access_reviews_and_a_nodes_credential() {
    let (s, _tokens) = server("rbac-sar");
    bind_users(&s);
    let sar = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "viewer", "resourceAttributes": {"namespace": NS, "verb": "list", "resource": "pods"}}
    });
    let answer = json(&s.ok_in("1.33", &["create", "-f", "-", "-o", "json"], Some(&sar.to_string())));
    assert_eq!(
        answer["status"],
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"viewer-view/rbac-a\" of ClusterRole \"view\" to User \"viewer\""})
    );
    let mut denied = sar.clone();
    denied["spec"]["resourceAttributes"]["verb"] = json!("delete");
    let answer = json(&s.ok_in("1.33", &["create", "-f", "-", "-o", "json"], Some(&denied.to_string())));
    assert_eq!(answer["status"], json!({"allowed": false}));
    // neither a user nor groups: upstream's 422
    let bad =
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&bad.to_string()));
    assert!(err.contains("spec.user: Invalid value: \"\": at least one of user or group must be specified"), "{err}");
    // a namespaced review must ask about its own namespace
    let local = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview", "metadata": {"namespace": NS},
        "spec": {"user": "viewer", "resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}}});
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&local.to_string()));
    assert!(err.contains("must match metadata.namespace"), "{err}");

    // a node reads the secrets of the pods bound to it, and no others
    s.ok("1.33", &["create", "namespace", "rbac-n"]);
    for (secret, node) in [("for-n1", "berth-n1"), ("for-n2", "berth-n2")] {
        s.ok("1.33", &["-n", "rbac-n", "create", "secret", "generic", secret, "--from-literal=k=v"]);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("uses-{secret}"), "namespace": "rbac-n"},
            "spec": {"nodeName": node, "automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox", "envFrom": [{"secretRef": {"name": secret}}]}]}});
        s.ok_in("1.33", &["create", "-f", "-"], Some(&pod.to_string()));
    }
    for v in VERSIONS {
        ok_as(&s, v, "n1-token", &["-n", "rbac-n", "get", "secret", "for-n1"]);
        refused_as(
            &s,
            v,
            "n1-token",
            &["-n", "rbac-n", "get", "secret", "for-n2"],
            r#"Error from server (Forbidden): secrets "for-n2" is forbidden: User "system:node:berth-n1" cannot get resource "secrets" in API group "" in the namespace "rbac-n": no relationship found between node 'berth-n1' and this object"#,
        );
        refused_as(
            &s,
            v,
            "n1-token",
            &["-n", "rbac-n", "get", "secrets"],
            r#"User "system:node:berth-n1" cannot list resource "secrets" in API group "" in the namespace "rbac-n""#,
        );
        ok_as(&s, v, "n1-token", &["get", "pods", "-A", "--field-selector", "spec.nodeName=berth-n1"]);
        refused_as(&s, v, "n1-token", &["get", "pods", "-A"], "can only list/watch pods with spec.nodeName field selector");
        refused_as(
            &s,
            v,
            "n1-token",
            &["-n", "kube-node-lease", "get", "lease", "berth-n2"],
            "can only access node lease with the same name as the requesting node",
        );
    }
}
