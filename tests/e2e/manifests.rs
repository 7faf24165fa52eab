//! What users apply, as `kubectl apply -k` renders it: every pod template meets the Pod
//! Security level its namespace enforces, and the CSI-only install grants no access to
//! Endpoints or Services yet provisions and deletes under exactly its grants.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::pods::{DEPLOYED_NS, kubectl};
use crate::scenario::{BIND_WAIT, Scenario, Space, from_json};
use crate::support::{Provisioner, admin_client, env, eventually, unique};

/// The objects of `examples/<file>`.
fn example(file: &str) -> Vec<Value> {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The objects `kubectl kustomize manifests/<dir>` renders.
async fn rendered(dir: &str) -> Vec<Value> {
    let path = format!("{}/manifests/{dir}", env!("CARGO_MANIFEST_DIR"));
    let (ok, out, err) = kubectl(&["kustomize", &path], "").await;
    assert!(ok, "{err}");
    serde_saphyr::from_multiple(&out).unwrap()
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| o["kind"] == kind)
}

/// What the Pod Security Standards' `level` forbids in `pod` (a pod spec), as the admission
/// plugin words it; empty when it passes. `privileged` allows anything.
fn violations(level: &str, pod: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if level == "privileged" {
        return found;
    }
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod[k].as_array().into_iter().flatten())
        .collect();
    let empty = vec![];
    let volumes = pod["volumes"].as_array().unwrap_or(&empty);
    // baseline
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            found.push(format!("{host}=true"));
        }
    }
    for v in volumes {
        if v.get("hostPath").is_some() {
            found.push(format!("hostPath volume {}", v["name"]));
        }
    }
    for c in &containers {
        if c["securityContext"]["privileged"] == true {
            found.push(format!("privileged container {}", c["name"]));
        }
    }
    if level == "baseline" {
        return found;
    }
    // restricted
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in volumes {
        let kind = v.as_object().unwrap().keys().find(|k| *k != "name");
        if !kind.is_some_and(|k| VOLUMES.contains(&k.as_str())) {
            found.push(format!("volume {} of type {kind:?}", v["name"]));
        }
    }
    let pod_sc = &pod["securityContext"];
    for c in &containers {
        let sc = &c["securityContext"];
        let either = |k: &str| if sc[k].is_null() { &pod_sc[k] } else { &sc[k] };
        if sc["allowPrivilegeEscalation"] != false {
            found.push(format!("{}: allowPrivilegeEscalation != false", c["name"]));
        }
        if *either("runAsNonRoot") != true || *either("runAsUser") == 0 {
            found.push(format!("{}: runAsNonRoot != true", c["name"]));
        }
        let seccomp = &either("seccompProfile")["type"];
        if seccomp != "RuntimeDefault" && seccomp != "Localhost" {
            found.push(format!("{}: seccompProfile {seccomp}", c["name"]));
        }
        let drops = sc["capabilities"]["drop"].as_array();
        if !drops.is_some_and(|d| d.iter().any(|c| c == "ALL")) {
            found.push(format!("{}: capabilities do not drop ALL", c["name"]));
        }
        let adds = sc["capabilities"]["add"].as_array().unwrap_or(&empty);
        if adds.iter().any(|c| c != "NET_BIND_SERVICE") {
            found.push(format!("{}: adds capabilities {adds:?}", c["name"]));
        }
    }
    found
}

/// This environment's Kubernetes (1.20) has no Pod Security admission (it came in 1.22): the
/// namespaces' `pod-security.kubernetes.io` labels are not enforced here, so this test's own
/// checker ([`violations`]) stands in for the admission plugin.
#[tokio::test]
async fn every_pod_meets_the_pod_security_level_of_its_namespace() {
    for dir in ["", "csi-only"] {
        let objects = rendered(dir).await;
        let level = |ns: &str| {
            of_kind(&objects, "Namespace")
                .find(|n| n["metadata"]["name"] == ns)
                .and_then(|n| {
                    n["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str()
                })
                .map(str::to_string)
        };
        let mut workloads = 0;
        for kind in ["Deployment", "DaemonSet", "StatefulSet", "Job"] {
            for w in of_kind(&objects, kind) {
                let ns = w["metadata"]["namespace"].as_str().unwrap();
                let name = &w["metadata"]["name"];
                let level = level(ns).unwrap_or_else(|| {
                    panic!("manifests/{dir}: namespace {ns} of {kind} {name} enforces no level")
                });
                let found = violations(&level, &w["spec"]["template"]["spec"]);
                assert!(found.is_empty(), "{kind} {ns}/{name} ({level}): {found:?}");
                workloads += 1;
            }
        }
        assert_eq!(
            workloads, 2,
            "manifests/{dir}: a Deployment and a DaemonSet"
        );
        // The provisioner, which holds the SSH key to every gluster node, runs restricted.
        assert_eq!(level(DEPLOYED_NS).as_deref(), Some("restricted"));
    }
    // The audit CronJob of the examples runs in the provisioner's namespace, restricted too.
    let audit = example("audit-cronjob.yaml");
    let cron = of_kind(&audit, "CronJob").next().unwrap();
    assert_eq!(cron["metadata"]["namespace"], DEPLOYED_NS);
    let found = violations(
        "restricted",
        &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    );
    assert!(found.is_empty(), "examples/audit-cronjob.yaml: {found:?}");
    // The check itself: the node plugin's pod is refused anything but privileged.
    let objects = rendered("").await;
    let plugin = of_kind(&objects, "DaemonSet").next().unwrap();
    let spec = &plugin["spec"]["template"]["spec"];
    assert!(!violations("baseline", spec).is_empty());
    assert!(!violations("restricted", spec).is_empty());
}

/// A rule that grants anything on Endpoints or Services.
fn touches_endpoints(role: &Value) -> bool {
    role["rules"].as_array().into_iter().flatten().any(|r| {
        let resources = r["resources"].as_array().into_iter().flatten();
        resources
            .clone()
            .any(|x| x == "endpoints" || x == "services" || x == "*")
    })
}

/// A ServiceAccount bound to what the CSI-only install binds, and a kubeconfig of its token.
async fn csi_only_identity(client: &Client, bindings: &[Value]) -> (String, std::path::PathBuf) {
    let name = unique("csi-only");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), DEPLOYED_NS);
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
    for binding in bindings {
        let mut copy = binding.clone();
        copy["metadata"]["name"] =
            format!("{name}-{}", binding["metadata"]["name"].as_str().unwrap()).into();
        copy["subjects"] =
            json!([{"kind": "ServiceAccount", "name": name, "namespace": DEPLOYED_NS}]);
        let (ok, _, err) = kubectl(&["create", "-f", "-"], &copy.to_string()).await;
        assert!(ok, "{err}");
    }
    let token = eventually(BIND_WAIT, "the ServiceAccount's token", || async {
        let account = accounts.get(&name).await.unwrap();
        let secret = account.secrets?.first()?.name.clone()?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), DEPLOYED_NS);
        let secret = secrets.get(&secret).await.ok()?;
        let token = secret.data?.get("token")?.0.clone();
        Some(String::from_utf8(token).unwrap())
    })
    .await;
    let text = std::fs::read_to_string(env().state_dir.join("provisioner.kubeconfig")).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    for user in config["users"].as_array_mut().unwrap() {
        user["user"] = json!({"token": token});
    }
    let path = env().state_dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, config.to_string()).unwrap();
    (name, path)
}

/// `manifests/csi-only` grants nothing on Endpoints or Services; a provisioner with exactly its
/// grants (and `MANAGE_ENDPOINTS=false`, as it sets) provisions and deletes CSI volumes, and
/// refuses a class of `glusterfs` PVs before making anything.
#[tokio::test]
async fn the_csi_only_install_needs_no_endpoints_or_services() {
    let objects = rendered("csi-only").await;
    let roles: Vec<&Value> = of_kind(&objects, "ClusterRole")
        .chain(of_kind(&objects, "Role"))
        .collect();
    let bindings: Vec<Value> = of_kind(&objects, "ClusterRoleBinding")
        .chain(of_kind(&objects, "RoleBinding"))
        .filter(|b| b["subjects"][0]["name"] == "glusterfs-provisioner")
        .cloned()
        .collect();
    for binding in &bindings {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["name"] == binding["roleRef"]["name"])
            .unwrap();
        assert!(!touches_endpoints(role), "{}", role["metadata"]["name"]);
    }
    let deployment = of_kind(&objects, "Deployment").next().unwrap();
    let env_vars = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env_vars
            .as_array()
            .unwrap()
            .contains(&json!({"name": "MANAGE_ENDPOINTS", "value": "false"}))
    );

    let client = admin_client().await;
    let (account, kubeconfig) = csi_only_identity(&client, &bindings).await;
    let ns = unique("csi-only");
    let name = format!("e2e.gluster.org/{ns}");
    let vars = [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("MANAGE_ENDPOINTS", "false"),
        ("PV_TYPE", "csi"),
    ];
    let s = Scenario {
        space: Space::create(ns, &name).await,
        provisioner: Provisioner::start_with(&name, &vars).await,
    };
    let class = s.class(json!({"volumetype": "none"}), "Delete").await;
    s.claim("data", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("data").await;
    assert!(pv.spec.as_ref().unwrap().csi.is_some());
    let old_kind = s
        .class(
            json!({"volumetype": "none", "pvtype": "glusterfs"}),
            "Delete",
        )
        .await;
    let refused = s.claim("old", &old_kind, "1Gi", "ReadWriteOnce").await;
    let note = s.event(&refused, "ProvisioningFailed").await;
    assert!(note.contains("MANAGE_ENDPOINTS=false"), "{note:?}");
    s.delete_claim("data").await;
    s.wait_pv_gone(&pv.name_any()).await;
    s.delete_claim("old").await;

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), DEPLOYED_NS);
    accounts
        .delete(&account, &DeleteParams::default())
        .await
        .unwrap();
    for binding in &bindings {
        let kind = binding["kind"].as_str().unwrap();
        let copy = format!(
            "{account}-{}",
            binding["metadata"]["name"].as_str().unwrap()
        );
        let mut args = vec!["delete", kind, &copy];
        let ns = binding["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        let (ok, _, err) = kubectl(&args, "").await;
        assert!(ok, "{err}");
    }
}

/// Whether the ServiceAccount `account` of the provisioner's namespace may `verb` `resource`,
/// as the API server's authorizer answers.
async fn can(account: &str, verb: &str, resource: &str) -> bool {
    let who = format!("--as=system:serviceaccount:{DEPLOYED_NS}:{account}");
    let (_, out, _) = kubectl(&["auth", "can-i", verb, resource, &who], "").await;
    out.trim() == "yes"
}

/// `kubectl apply` of `objects` (or `delete`, with `verb`).
async fn kubectl_objects(verb: &str, objects: &[&Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let (ok, _, err) = kubectl(&[verb, "-f", "-"], &list.to_string()).await;
    assert!(ok, "{err}");
}

/// The audit CronJob's ServiceAccount reads what `audit` reads and writes nothing; only
/// `examples/audit-apply-rbac.yaml`, applied on purpose, lets `--apply` delete the Endpoints
/// and Services it removes.
#[tokio::test]
async fn the_audit_account_only_reads_unless_apply_is_granted() {
    const AUDIT: &str = "glusterfs-provisioner-audit";
    let audit = example("audit-cronjob.yaml");
    let cron = of_kind(&audit, "CronJob").next().unwrap();
    let template = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(template["serviceAccountName"], AUDIT);
    let identity: Vec<&Value> = audit.iter().filter(|o| o["kind"] != "CronJob").collect();
    kubectl_objects("apply", &identity).await;

    let reads = [
        ("list", "persistentvolumes"),
        ("list", "persistentvolumeclaims"),
        ("list", "endpoints"),
        ("list", "services"),
        ("get", "namespaces/kube-system"),
    ];
    // The authorizer sees new bindings shortly after they are made.
    eventually(BIND_WAIT, "the audit's reads granted", || async {
        for (verb, resource) in reads {
            if !can(AUDIT, verb, resource).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    let writes = [
        ("create", "persistentvolumes"),
        ("delete", "persistentvolumes"),
        ("patch", "persistentvolumeclaims"),
        ("delete", "endpoints"),
        ("delete", "services"),
        ("get", "secrets"),
        ("get", "namespaces/default"),
    ];
    for (verb, resource) in writes {
        assert!(!can(AUDIT, verb, resource).await, "{verb} {resource}");
    }

    let apply = example("audit-apply-rbac.yaml");
    let apply: Vec<&Value> = apply.iter().collect();
    kubectl_objects("apply", &apply).await;
    eventually(BIND_WAIT, "--apply's deletes granted", || async {
        let endpoints = can(AUDIT, "delete", "endpoints").await;
        (endpoints && can(AUDIT, "delete", "services").await).then_some(())
    })
    .await;
    for (verb, resource) in &writes[..3] {
        assert!(!can(AUDIT, verb, resource).await, "{verb} {resource}");
    }
    kubectl_objects("delete", &apply).await;
}

/// The `(apiVersion, kind)` pairs this API server serves.
async fn served_kinds() -> std::collections::HashSet<(String, String)> {
    let (ok, out, err) = kubectl(&["api-resources", "--no-headers"], "").await;
    assert!(ok, "{err}");
    out.lines()
        .filter_map(|line| {
            // NAME [SHORTNAMES] APIVERSION NAMESPACED KIND
            let words: Vec<&str> = line.split_whitespace().collect();
            let [.., version, _, kind] = words[..] else {
                return None;
            };
            Some((version.to_string(), kind.to_string()))
        })
        .collect()
}

/// What operators apply, by where it comes from: every kustomization, rendered, and every
/// example.
async fn everything_applied() -> Vec<(String, Vec<Value>)> {
    let mut sources = Vec::new();
    for dir in ["", "csi-only", "prometheus-operator"] {
        let mut objects = rendered(dir).await;
        // kubectl 1.20's kustomize (v2.0.3) leaves `{}` where a `$patch: delete` removed an
        // object (manifests/csi-only), which its `apply -k` refuses; 1.21's (v4) drops it. The
        // README says so.
        objects.retain(|o| o != &json!({}));
        sources.push((format!("manifests/{dir}"), objects));
    }
    // e2e/overlay as e2e/env fills it in (the environment's topology, SSH key, kubelet paths).
    let overlay = env().state_dir.join("overlay");
    let (ok, out, err) = kubectl(&["kustomize", overlay.to_str().unwrap()], "").await;
    assert!(ok, "e2e/overlay: {err}");
    let objects = serde_saphyr::from_multiple(&out).unwrap();
    sources.push(("e2e/overlay".to_string(), objects));
    let examples = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap();
    let mut names: Vec<String> = examples
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    for name in names {
        let objects = example(&name);
        sources.push((format!("examples/{name}"), objects));
    }
    sources
}

/// Everything operators apply applies: each kustomization and each example through the API
/// server's validation and admission (`kubectl apply --dry-run=server`, what `kubectl apply`
/// does but store; 1.20's server-side apply refuses Service ports without `protocol`, which
/// its own defaulting adds). A kind this API server does not serve (the Prometheus
/// Operator's, without its CRDs) is skipped, said so; a CronJob is applied as
/// `batch/v1beta1`, the same fields in 1.20's version.
#[tokio::test]
async fn everything_operators_apply_applies() {
    let served = served_kinds().await;
    let cron_job_1_20 = ("batch/v1beta1".to_string(), "CronJob".to_string());
    for (source, objects) in everything_applied().await {
        let mut items = Vec::new();
        for mut object in objects {
            let (Some(kind), Some(version)) =
                (object["kind"].as_str(), object["apiVersion"].as_str())
            else {
                panic!("{source}: an object without a kind or apiVersion: {object}");
            };
            let (kind, version) = (kind.to_string(), version.to_string());
            let pair = (version.clone(), kind.clone());
            if kind == "CronJob" && !served.contains(&pair) && served.contains(&cron_job_1_20) {
                object["apiVersion"] = json!(cron_job_1_20.0);
            } else if !served.contains(&pair) {
                let name = &object["metadata"]["name"];
                println!(
                    "{source}: {kind} {name} not applied: this API server serves no {version} {kind}"
                );
                continue;
            }
            items.push(object);
        }
        if items.is_empty() {
            continue;
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        let args = ["apply", "--dry-run=server", "-f", "-"];
        let (ok, out, err) = kubectl(&args, &list.to_string()).await;
        assert!(ok, "{source}: {err}");
        let applied = out.lines().filter(|l| l.ends_with("(server dry run)"));
        assert_eq!(applied.count(), items.len(), "{source}: {out}");
    }
}

/// The PrometheusRule's alerts are grafana/alerts.yaml's, which
/// `manifests/prometheus-operator/generate.sh` writes into it, and `promtool check rules`
/// accepts them as kustomize renders them.
#[tokio::test]
async fn the_prometheus_rule_has_the_alerts_of_grafana() {
    let read = |path: &str| -> Value {
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")));
        serde_saphyr::from_str(&text.unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let alerts = read("grafana/alerts.yaml");
    let rule = read("manifests/prometheus-operator/prometheusrule.yaml");
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "the PrometheusRule's groups are not grafana/alerts.yaml's: run manifests/prometheus-operator/generate.sh"
    );
    let objects = rendered("prometheus-operator").await;
    let rule = of_kind(&objects, "PrometheusRule").next().unwrap();
    let groups = json!({"groups": rule["spec"]["groups"]});
    let rules: usize = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    // promtool reads YAML, of which JSON is a part.
    let file = env()
        .state_dir
        .join(format!("{}.yaml", unique("prometheusrule")));
    std::fs::write(&file, groups.to_string()).unwrap();
    let checked = tokio::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .await
        .expect("promtool (Debian's prometheus package, e2e/lib/deps.sh)");
    std::fs::remove_file(&file).unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{said}{err}");
    assert!(
        said.contains(&format!("SUCCESS: {rules} rules found")),
        "{said}"
    );
}
