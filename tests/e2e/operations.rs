//! Running it like production: two replicas behind a Lease, and metrics that a real Prometheus
//! scrapes and that every dashboard and alert expression reads.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use crate::scenario::*;
use crate::support::{Prometheus, Provisioner, env, eventually, local, metrics, unique};

async fn lease_holder(s: &Scenario) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), "glusterfs-provisioner");
    let name = s.provisioner.name.replace(['/', '.'], "-");
    leases.get_opt(&name).await.unwrap()?.spec?.holder_identity
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed() {
    let mut s = Scenario::new("ha").await;
    let mut standby = Provisioner::start(&s.provisioner.name).await;
    let class = s.class(json!({"volumetype": "none"}), "Delete").await;
    s.claim("before", &class, "1Gi", "ReadWriteOnce").await;
    s.bound_pv("before").await;
    let leader = eventually(Duration::from_secs(30), "a lease holder", || {
        lease_holder(&s)
    })
    .await;
    // Whichever of the two leads is killed; the other must take over.
    let survivor_id = if leader == s.provisioner.identity() {
        s.provisioner.kill().await;
        standby.identity()
    } else {
        assert_eq!(leader, standby.identity());
        standby.kill().await;
        s.provisioner.identity()
    };
    let mut claims = Vec::new();
    for i in 0..3 {
        claims.push(
            s.claim(&format!("during-{i}"), &class, "1Gi", "ReadWriteOnce")
                .await,
        );
    }
    let took_over = eventually(
        Duration::from_secs(30),
        "the standby holding the lease",
        || async { (lease_holder(&s).await? == survivor_id).then_some(()) },
    );
    tokio::time::timeout(Duration::from_secs(15), took_over)
        .await
        .expect("standby must take the lease within its duration (6 s) plus a retry");
    let names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
    join_all(names.iter().map(|n| s.bound_pv(n))).await;
    let volumes = gluster_volumes().await;
    for claim in &claims {
        let suffix = uid_suffix(claim);
        assert_eq!(
            volumes.iter().filter(|v| v.ends_with(&suffix)).count(),
            1,
            "one volume per claim"
        );
        assert_eq!(
            s.event(claim, "ProvisioningSucceeded")
                .await
                .matches("pvc-")
                .count(),
            1
        );
    }
    for c in names.iter().chain(["before".to_string()].iter()) {
        s.delete_claim(c).await;
    }
}

/// Every `expr:` of the alert rules file.
fn alert_expressions() -> Vec<String> {
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts.yaml"))
            .unwrap();
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect()
}

fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grafana/dashboard.json"
    ))
    .unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn prometheus_reads_every_dashboard_and_alert_expression() {
    let (metrics_port, prom_port) = (18081u16, 19091u16);
    let s = Scenario::with_env("prom", &[]).await;
    // A second provisioner of its own, with metrics on a known port and quick gauges.
    let mut p = Provisioner::start_at(
        &format!("{}-m", s.provisioner.name),
        &[("GAUGE_INTERVAL_SECONDS", "1")],
        &format!("127.0.0.1:{metrics_port}"),
    )
    .await;
    let prometheus = Prometheus::start(
        prom_port,
        &format!(
            "  - job_name: provisioner\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
        ),
    )
    .await;

    // Some work for the metrics: provisions, a failure, a delete.
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(s.client.clone());
    let good = unique("prom-good");
    let bad = unique("prom-bad");
    for (name, params) in [
        (&good, json!({"volumetype": "none"})),
        (&bad, json!({"volumetype": "mirror"})),
    ] {
        classes
            .create(&Default::default(), &from_json(json!({
                "metadata": {"name": name}, "provisioner": p.name, "reclaimPolicy": "Delete", "parameters": params,
            })))
            .await
            .unwrap();
    }
    s.claim("m1", &good, "1Gi", "ReadWriteOnce").await;
    s.claim("m2", &good, "1Gi", "ReadWriteOnce").await;
    let failing = s.claim("m3", &bad, "1Gi", "ReadWriteOnce").await;
    s.bound_pv("m1").await;
    let pv2 = s.bound_pv("m2").await;
    s.event_from(&failing, "ProvisioningFailed", &p.name).await;
    s.delete_claim("m2").await;
    s.wait_pv_gone(&pv2.name_any()).await;

    // Wait until Prometheus has scraped the delete, then ask it everything.
    eventually(
        Duration::from_secs(60),
        "Prometheus scraping the delete",
        || async {
            let r = prometheus
                .query("sum(controller_persistentvolume_delete_total)")
                .await;
            (r["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty()))
            .then_some(())
        },
    )
    .await;
    // Rates need a second scrape after the work: each panel is asked until it has data.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut empty = HashMap::new();
    loop {
        empty.clear();
        for (panel, expr) in dashboard_expressions() {
            let r = prometheus.query(&expr).await;
            assert_eq!(r["status"], "success", "{panel}: {expr}: {r}");
            if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
                empty.insert(panel, expr);
            }
        }
        if empty.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        empty.is_empty(),
        "dashboard panels without data: {empty:#?}"
    );
    let alerts = alert_expressions();
    assert!(alerts.len() >= 5);
    for expr in alerts {
        let r = prometheus.query(&expr).await;
        assert_eq!(r["status"], "success", "alert {expr}: {r}");
    }
    let rules = prometheus.api("rules", "").await.to_string();
    assert!(
        rules.contains("GlusterProvisionerNoLeader") && !rules.contains("\"health\":\"err\""),
        "{rules}"
    );

    s.delete_claim("m1").await;
    drop(prometheus);
    p.kill().await;
}

/// `glusterfs-provisioner topology` with the topology `file`: exit status and table.
async fn topology_check(file: &std::path::Path) -> (bool, String) {
    let control = env().state_dir.join("test-ssh").join(unique("topo"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"))
        .args(["topology", "--topology"])
        .arg(file)
        .arg("--ssh-control-dir")
        .arg(control)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn topology_check_reports_every_node_and_fails_on_problems() {
    let path = env().state_dir.join("topology.json");
    let (ok, table) = topology_check(&path).await;
    assert!(ok, "{table}");
    for node in nodes() {
        let row = table.lines().find(|l| l.contains(&node.name)).unwrap();
        assert!(
            row.contains("2/2 up")
                && row.contains("/srv/gluster/brick1 (image)")
                && row.contains("/srv/gluster/brick2 (quota)")
                && row.ends_with("ok"),
            "{row}"
        );
    }
    assert!(table.contains("3 nodes in 2 zone(s)"), "{table}");
    assert!(table.contains("brick multiplexing off"), "{table}");
    // An image brick the node would not mount at boot: in an image root, in no fstab line.
    let node = &nodes()[2];
    let stray = format!("/srv/gluster/brick1/{}.img", unique("stray"));
    let ssh = crate::support::ssh();
    let truncate = ["-s", "1M", &stray].map(String::from);
    ssh.run_ok(&node.ssh_address, "truncate", &truncate)
        .await
        .unwrap();

    // A brick root missing on one node, then host keys nobody knows: each fails its rows.
    let dir = env().state_dir.join(unique("topo"));
    std::fs::create_dir_all(&dir).unwrap();
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut missing = original.clone();
    missing["clusters"][0]["nodes"][1]["brick_roots"]
        .as_array_mut()
        .unwrap()
        .push(json!("/srv/gluster/missing"));
    let unknown_keys = dir.join("known_hosts");
    std::fs::write(&unknown_keys, "").unwrap();
    let mut strangers = original;
    strangers["ssh"]["known_hosts"] = json!(unknown_keys);
    for (case, topology, bad_rows) in [("missing root", missing, 1), ("host keys", strangers, 3)] {
        let file = dir.join(format!("{}.json", case.replace(' ', "-")));
        std::fs::write(&file, topology.to_string()).unwrap();
        let (ok, table) = topology_check(&file).await;
        assert!(!ok, "{case}: {table}");
        let failing = table
            .lines()
            .filter(|l| l.contains("gp-node") && !l.ends_with("ok"));
        assert_eq!(failing.count(), bad_rows, "{case}: {table}");
        if case == "missing root" {
            assert!(table.contains("/srv/gluster/missing"), "{table}");
        }
    }
    // Images made in the last minute may be between their rename and their mount.
    let row = eventually(BIND_WAIT, "the stray image reported", || async {
        let (ok, table) = topology_check(&path).await;
        let row = table.lines().find(|l| l.contains(&node.name))?.to_string();
        (!ok && row.contains(&format!("{stray} not in /etc/fstab"))).then_some(row)
    })
    .await;
    assert!(row.contains(&format!("{stray} not mounted")), "{row}");
    let rm = ["-f", &stray].map(String::from);
    ssh.run_ok(&node.ssh_address, "rm", &rm).await.unwrap();
}

/// The series of a deleted class go with it (nothing grows with classes ever seen).
#[tokio::test]
async fn gauges_of_a_deleted_class_go_away() {
    let port = 18083u16;
    let s = Scenario::with_env("gauges", &[]).await;
    let p = Provisioner::start_at(
        &format!("{}-g", s.provisioner.name),
        &[("GAUGE_INTERVAL_SECONDS", "1")],
        &format!("127.0.0.1:{port}"),
    )
    .await;
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(s.client.clone());
    let name = unique("gauge-class");
    classes
        .create(
            &Default::default(),
            &from_json(json!({"metadata": {"name": name}, "provisioner": p.name,
                              "parameters": {"volumetype": "none"}})),
        )
        .await
        .unwrap();
    let series = format!("glusterfs_provisioner_gids_free{{class=\"{name}\"}}");
    let metrics = || metrics(port);
    eventually(Duration::from_secs(60), "the class's gauge", || async {
        metrics().await.contains(&series).then_some(())
    })
    .await;
    classes.delete(&name, &Default::default()).await.unwrap();
    eventually(
        Duration::from_secs(60),
        "the class's gauge gone",
        || async { (!metrics().await.contains(&series)).then_some(()) },
    )
    .await;
    drop(p);
}

/// Fault: the leader stops (SIGSTOP, from a pause point just before it saves a PV) for longer
/// than its lease. The standby takes over and binds that claim and more; the old leader,
/// resumed (SIGCONT), writes nothing more and steps down: one volume per claim, no GID twice.
#[tokio::test]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_wakes() {
    paused_leader_case("before-pv-create").await;
}

/// The same, paused between two steps of making the volume: woken, it neither goes on (the
/// volume the new leader finished and bound keeps what that one set) nor removes the volume as
/// a failed attempt of its own.
#[tokio::test]
async fn a_leader_paused_inside_a_volume_leaves_it_to_the_new_one() {
    paused_leader_case("before-volume-start").await;
}

async fn paused_leader_case(point: &str) {
    let pause = [("GLUSTERFS_PROVISIONER_PAUSE_AT", point)];
    let mut s = Scenario::with_env("paused", &pause).await;
    let paused_id = s.provisioner.identity();
    eventually(
        Duration::from_secs(30),
        "the first replica leading",
        || async { (lease_holder(&s).await? == paused_id).then_some(()) },
    )
    .await;
    let standby = Provisioner::start(&s.provisioner.name).await;
    let class = s
        .class(
            json!({"volumetype": "none", "gidMin": "3000", "gidMax": "3100"}),
            "Delete",
        )
        .await;
    let first = s.claim("first", &class, "1Gi", "ReadWriteOnce").await;
    s.provisioner.wait_stopped(Duration::from_secs(120)).await;
    eventually(Duration::from_secs(30), "the standby leading", || async {
        (lease_holder(&s).await? == standby.identity()).then_some(())
    })
    .await;
    let mut claims = vec![first];
    for i in 0..2 {
        claims.push(
            s.claim(&format!("more-{i}"), &class, "1Gi", "ReadWriteOnce")
                .await,
        );
    }
    let mut pvs = Vec::new();
    for claim in &claims {
        pvs.push(s.bound_pv(&claim.name_any()).await);
    }

    let pid = s.provisioner.pid().unwrap();
    local("kill", &["-CONT", &pid.to_string()]).await;
    s.provisioner.wait_exit(Duration::from_secs(60)).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(s.client.clone(), &s.ns);
    let from_paused: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(&paused_id))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        !from_paused.iter().any(|r| r == "ProvisioningSucceeded"),
        "the paused leader went on after waking: {from_paused:?}"
    );
    let volumes = gluster_volumes().await;
    let mut gids = std::collections::HashSet::new();
    for (claim, pv) in claims.iter().zip(&pvs) {
        let suffix = uid_suffix(claim);
        assert_eq!(volumes.iter().filter(|v| v.ends_with(&suffix)).count(), 1);
        let volume = glusterfs_path(pv);
        assert!(volume_started(&volume).await, "{volume} of a bound claim");
        let gid = annotations(pv)["pv.beta.kubernetes.io/gid"].clone();
        assert!(gids.insert(gid.clone()), "GID {gid} twice");
    }
    for claim in &claims {
        s.delete_claim(&claim.name_any()).await;
    }
    for pv in &pvs {
        s.wait_pv_gone(&pv.name_any()).await;
    }
    drop(standby);
}

/// The fence itself, against Leases in the API server: a replica may write only while the lease
/// names it and its last renewal still holds (a replica paused past it must not).
#[tokio::test]
async fn the_fence_passes_only_a_current_lease_of_ours() {
    use glusterfs_provisioner::leader::{Fence, LeaseSettings};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    let s = Space::create(unique("fence"), "unused").await;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &s.ns);
    let settings = LeaseSettings {
        name: "fenced".into(),
        namespace: s.ns.clone(),
        identity: "me".into(),
        duration_seconds: 15,
        renew_before_seconds: 5,
    };
    let fence = Fence::new(s.client.clone(), settings);
    let cases = [
        ("me", SignedDuration::from_secs(0), true),
        ("me", SignedDuration::from_secs(-20), false),
        ("someone-else", SignedDuration::from_secs(0), false),
    ];
    for (holder, age, passes) in cases {
        let renewed = Timestamp::now() + age;
        let lease: Lease = from_json(json!({
            "metadata": {"name": "fenced"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": MicroTime(renewed)},
        }));
        leases.delete("fenced", &Default::default()).await.ok();
        eventually(Duration::from_secs(10), "the old lease gone", || async {
            leases
                .get_opt("fenced")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        leases.create(&Default::default(), &lease).await.unwrap();
        assert_eq!(
            fence.check().await.is_ok(),
            passes,
            "holder {holder}, renewed {age} ago"
        );
    }
}
