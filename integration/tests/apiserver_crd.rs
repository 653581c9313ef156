//! CustomResourceDefinitions in `berth server`, driven by the real kubectl 1.33 and 1.27: a CRD
//! (namespaced, two versions, printer columns, a short name, category `all`, status and scale
//! subresources) applied and waited for, its custom resources applied, listed, explained,
//! validated against the schema (422 in upstream words, nothing stored), pruned or refused for
//! unknown fields, selected by a selectable field, patched (status kept apart, scale, 415 for
//! strategic merge), watched, changed (its columns follow), kept over a restart, and removed
//! with the CRD.

use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_integration::apiserver::ApiServer;
use serde_json::Value;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    selectableFields:
    - jsonPath: .spec.image
    additionalPrinterColumns:
    - name: Spec
      type: string
      description: The cron spec defining the interval a CronJob is run
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Image
      type: string
      priority: 1
      jsonPath: .spec.image
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: CronTabSpec is what the CronTab should run.
            required: [cronSpec]
            properties:
              cronSpec:
                type: string
                description: When to run, in cron format.
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              replicas:
                type: integer
                minimum: 0
                default: 1
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const NAME: &str = "crontabs.stable.example.com";

fn crontab(name: &str, extra: &str) -> String {
    format!("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  cronSpec: \"* * * * */5\"\n  image: cron:1\n{extra}")
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The header line of a `kubectl get` table, words separated by single spaces.
fn header(out: &str) -> String {
    out.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The row of `name` in a `kubectl get` table, words separated by single spaces.
fn row(out: &str, name: &str) -> String {
    out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn create_crd(s: &ApiServer, v: &str) {
    let out = s.ok_in(v, &["apply", "-f", "-"], Some(CRD));
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created"), "{v}: {out}");
    let out = s.ok(v, &["wait", "--for", "condition=established", "--timeout=60s", &format!("crd/{NAME}")]);
    assert!(out.contains("condition met"), "{v}: {out}");
}

/// A running `kubectl get ... -w` printing one line per event.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(s: &ApiServer, v: &str, args: &[&str]) -> Watch {
        let mut child = s.command(v).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("kubectl get -w");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    fn wait_for(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.trim() == want => return,
                Ok(_) => {}
                Err(_) => panic!("the watch did not show {want}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workflow(v: &str) {
    workflow_on(ApiServer::start(&format!("crd-{}", v.replace('.', ""))), v);
}

fn workflow_on(mut s: ApiServer, v: &str) {
    // a CRD that breaks upstream's rules is refused, in upstream's words
    let bad = CRD.replace("name: crontabs.stable.example.com", "name: crontab.stable.example.com");
    let err = s.fails(v, &["apply", "-f", "-"], Some(&bad));
    assert!(err.contains(r#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#), "{v}: {err}");
    let nonstructural = CRD.replace("            type: object\n            description: CronTabSpec", "            description: CronTabSpec");
    let err = s.fails(v, &["apply", "-f", "-"], Some(&nonstructural));
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"),
        "{v}: {err}"
    );

    create_crd(&s, v);
    let crd = json(&s.ok(v, &["get", "crd", NAME, "-o", "json"]));
    assert_eq!(crd["spec"]["names"]["singular"], "crontab", "{crd}");
    assert_eq!(crd["spec"]["names"]["listKind"], "CronTabList", "{crd}");
    assert_eq!(crd["spec"]["conversion"]["strategy"], "None", "{crd}");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "CronTab", "{crd}");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]), "{crd}");
    let types: Vec<&str> =
        crd["status"]["conditions"].as_array().into_iter().flatten().filter(|c| c["status"] == "True").filter_map(|c| c["type"].as_str()).collect();
    assert!(types.contains(&"NamesAccepted") && types.contains(&"Established"), "{crd}");
    let resources = s.ok(v, &["api-resources", "--api-group=stable.example.com"]);
    assert_eq!(row(&resources, "crontabs"), "crontabs ct stable.example.com/v1 true CronTab", "{v}: {resources}");

    // custom resources: apply, get (table, wide, yaml, by short name and kind), get all
    let out = s.ok_in(v, &["apply", "-f", "-"], Some(&format!("{}---\n{}", crontab("every-minute", "  replicas: 2\n"), crontab("defaulted", ""))));
    assert!(out.contains("crontab.stable.example.com/every-minute created") && out.contains("crontab.stable.example.com/defaulted created"), "{v}: {out}");
    // applied again: unchanged, or configured (a merge patch) when it changed
    let again = s.ok_in(v, &["apply", "-f", "-"], Some(&crontab("defaulted", "")));
    assert!(again.contains("crontab.stable.example.com/defaulted unchanged"), "{v}: {again}");
    let changed = s.ok_in(v, &["apply", "-f", "-"], Some(&crontab("defaulted", "").replace("cron:1", "cron:0")));
    assert!(changed.contains("crontab.stable.example.com/defaulted configured"), "{v}: {changed}");
    s.ok_in(v, &["apply", "-f", "-"], Some(&crontab("defaulted", "")));
    let table = s.ok(v, &["-n", "default", "get", "crontabs"]);
    assert_eq!(header(&table), "NAME SPEC REPLICAS AGE", "{v}: {table}");
    assert!(row(&table, "every-minute").starts_with("every-minute * * * * */5 2 "), "{v}: {table}");
    assert!(row(&table, "defaulted").starts_with("defaulted * * * * */5 1 "), "schema default: {v}: {table}");
    let wide = s.ok(v, &["-n", "default", "get", "ct", "-o", "wide"]);
    assert_eq!(header(&wide), "NAME SPEC REPLICAS IMAGE AGE", "{v}: {wide}");
    assert!(row(&wide, "every-minute").starts_with("every-minute * * * * */5 2 cron:1 "), "{v}: {wide}");
    let yaml = s.ok(v, &["-n", "default", "get", "CronTab", "every-minute", "-o", "yaml"]);
    assert!(yaml.contains("apiVersion: stable.example.com/v1") && yaml.contains("kind: CronTab") && yaml.contains("generation: 1"), "{v}: {yaml}");
    let beta = s.ok(v, &["-n", "default", "get", "crontabs.v1beta1.stable.example.com", "every-minute", "-o", "jsonpath={.apiVersion}"]);
    assert_eq!(beta, "stable.example.com/v1beta1");
    let all = s.ok(v, &["-n", "default", "get", "all"]);
    assert!(all.contains("crontab.stable.example.com/every-minute"), "{v}: {all}");

    // kubectl explain reads the CRD's schema from OpenAPI v3
    let explained = s.ok(v, &["explain", "crontabs.spec"]);
    assert!(explained.contains("CronTab") && explained.contains("cronSpec") && explained.contains("When to run, in cron format."), "{v}: {explained}");

    // a CR the schema refuses: 422 in upstream's words, nothing stored
    let err = s.fails(v, &["apply", "-f", "-"], Some(&crontab("bad", "  replicas: \"string\"\n")));
    assert!(err.contains(r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#), "{v}: {err}");
    let err = s.fails(v, &["apply", "-f", "-"], Some(&crontab("bad", "  replicas: -1\n")));
    assert!(err.contains("spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"), "{v}: {err}");
    let err = s.fails(v, &["-n", "default", "get", "crontab", "bad"], None);
    assert!(err.contains(r#"crontabs.stable.example.com "bad" not found"#), "{v}: {err}");

    // unknown fields: refused under strict validation (kubectl's default), else pruned
    let unknown = crontab("pruned", "  bogus: 1\n");
    let err = s.fails(v, &["apply", "--validate=strict", "-f", "-"], Some(&unknown));
    assert!(err.contains(r#"CronTab in version "v1" cannot be handled as a CronTab: strict decoding error: unknown field "spec.bogus""#), "{v}: {err}");
    let out = s.kubectl_in(v, &["apply", "--validate=warn", "-f", "-"], Some(&unknown));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains(r#"unknown field "spec.bogus""#), "{v}: {out:?}");
    let spec = json(&s.ok(v, &["-n", "default", "get", "ct", "pruned", "-o", "jsonpath={.spec}"]));
    assert!(spec.get("bogus").is_none() && spec["image"] == "cron:1", "{v}: {spec}");

    // status is a subresource: the main resource keeps it, and only spec changes bump generation
    s.ok(
        v,
        &["-n", "default", "patch", "ct", "every-minute", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":2,"selector":"app=cron"}}"#],
    );
    s.ok(v, &["-n", "default", "patch", "ct", "every-minute", "--type=merge", "-p", r#"{"spec":{"image":"cron:2"},"status":{"replicas":9}}"#]);
    let obj = json(&s.ok(v, &["-n", "default", "get", "ct", "every-minute", "-o", "json"]));
    assert_eq!((obj["status"]["replicas"].as_i64(), obj["spec"]["image"].as_str()), (Some(2), Some("cron:2")), "{v}: {obj}");
    assert_eq!(obj["metadata"]["generation"], 2, "{v}: {obj}");
    s.ok(v, &["-n", "default", "patch", "ct", "every-minute", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":3}}"#]);
    let obj = json(&s.ok(v, &["-n", "default", "get", "ct", "every-minute", "-o", "json"]));
    assert_eq!((obj["status"]["replicas"].as_i64(), obj["metadata"]["generation"].as_i64()), (Some(3), Some(2)), "{v}: {obj}");
    s.ok(v, &["-n", "default", "patch", "ct", "every-minute", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/image","value":"cron:3"}]"#]);
    let selected = s.ok(v, &["-n", "default", "get", "ct", "--field-selector", "spec.image=cron:3", "-o", "name"]);
    assert_eq!(selected.trim(), "crontab.stable.example.com/every-minute", "selectableFields: {v}");
    let err = s.fails(v, &["-n", "default", "patch", "ct", "every-minute", "-p", r#"{"spec":{"image":"cron:4"}}"#], None);
    // kubectl words the 415 itself
    let want = "application/strategic-merge-patch+json is not supported by stable.example.com/v1, Kind=CronTab: the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";
    assert!(err.contains(want), "strategic merge patch: {v}: {err}");

    // scale
    let out = s.ok(v, &["-n", "default", "scale", "ct", "every-minute", "--replicas=5"]);
    assert!(out.contains("crontab.stable.example.com/every-minute scaled"), "{v}: {out}");
    assert_eq!(s.ok(v, &["-n", "default", "get", "ct", "every-minute", "-o", "jsonpath={.spec.replicas}"]), "5");
    let scale = json(&s.ok(v, &["get", "--raw", "/apis/stable.example.com/v1/namespaces/default/crontabs/every-minute/scale"]));
    assert_eq!(
        (scale["spec"]["replicas"].as_i64(), scale["status"]["replicas"].as_i64(), scale["status"]["selector"].as_str()),
        (Some(5), Some(3), Some("app=cron")),
        "{scale}"
    );

    // server-side apply and watch
    let watch =
        Watch::start(&s, v, &["-n", "default", "get", "ct", "-w", "-o", "jsonpath={.metadata.name}:{.spec.image}{\"\\n\"}", "--output-watch-events=false"]);
    watch.wait_for("defaulted:cron:1");
    let out = s.ok_in(v, &["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&crontab("defaulted", "").replace("cron:1", "cron:ssa")));
    assert!(out.contains("crontab.stable.example.com/defaulted serverside-applied"), "{v}: {out}");
    watch.wait_for("defaulted:cron:ssa");
    drop(watch);

    // deletecollection
    s.ok_in(v, &["apply", "-f", "-"], Some(&crontab("doomed", "").replace("namespace: default", "namespace: kube-public")));
    let out = s.ok(v, &["-n", "kube-public", "delete", "ct", "--all"]);
    assert!(out.contains("crontab.stable.example.com \"doomed\" deleted"), "{v}: {out}");

    // a changed CRD changes what is served: the Image column now shows by default
    let out = s.ok_in(v, &["apply", "-f", "-"], Some(&CRD.replace("      priority: 1\n", "")));
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com configured"), "{v}: {out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let table = s.ok(v, &["-n", "default", "get", "ct"]);
        if header(&table) == "NAME SPEC REPLICAS IMAGE AGE" {
            assert!(row(&table, "every-minute").starts_with("every-minute * * * * */5 5 cron:3 "), "{v}: {table}");
            break;
        }
        assert!(Instant::now() < deadline, "the new columns were never served: {table}");
    }

    // a restart keeps the CRD and its custom resources, served from the start
    s.restart();
    s.ok(v, &["wait", "--for", "condition=established", "--timeout=60s", &format!("crd/{NAME}")]);
    let table = s.ok(v, &["-n", "default", "get", "ct"]);
    assert!(row(&table, "every-minute").starts_with("every-minute * * * * */5 5 "), "{v}: {table}");

    // deleting the CRD removes its custom resources and its discovery entries
    let out = s.ok(v, &["delete", "crd", NAME]);
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io \"crontabs.stable.example.com\" deleted"), "{v}: {out}");
    let resources = s.ok(v, &["api-resources"]);
    assert!(!resources.contains("crontabs"), "{v}: {resources}");
    let groups = s.ok(v, &["get", "--raw", "/apis"]);
    assert!(!groups.contains("stable.example.com"), "{v}: {groups}");
    let err = s.fails(v, &["get", "--raw", "/apis/stable.example.com/v1/namespaces/default/crontabs"], None);
    assert!(err.contains("NotFound") || err.contains("not found"), "{v}: {err}");
    create_crd(&s, v);
    let out = s.kubectl(v, &["-n", "default", "get", "ct"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("No resources found"), "the old custom resources are gone: {v}: {text}");
}

#[test]
fn kubectl_1_33_serves_custom_resources_of_a_crd() {
    workflow("1.33");
}

#[test]
fn kubectl_1_27_serves_custom_resources_of_a_crd() {
    workflow("1.27");
}

#[test]
fn custom_resources_on_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = rt.block_on(berth_store::etcd_process::EtcdCluster::single(&["--experimental-watch-progress-notify-interval=500ms"])).expect("start etcd");
    let endpoint = etcd.members[0].client_url.clone();
    workflow_on(ApiServer::start_with("crd-etcd", vec!["--datastore-endpoint".into(), endpoint]), "1.33");
    drop(etcd);
}
