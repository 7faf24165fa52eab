//! Volume health under faults: a brick process killed, a whole node's gluster processes
//! stopped, a file put into split-brain. Each is seen where an operator looks: `status`, the
//! claim's events, the provisioner's metrics and the alerts a real Prometheus evaluates (with
//! their `for` shortened), and for CSI volumes the node plugin's volume condition.

use std::time::Duration;

use glusterfs_provisioner::config::Node;
use glusterfs_provisioner::csi::proto::NodeGetVolumeStatsRequest;
use glusterfs_provisioner::gluster::xml::parse_volume_status;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use serde_json::json;

use super::GlusterNode;
use crate::csi::{CSI_CLASS, kubelet_dir, node_client, volume_of};
use crate::pods::provisioner_pods;
use crate::scenario::*;
use crate::support::{Prometheus, Provisioner, env, eventually, metrics, unique};

/// `glusterfs-provisioner status`: (success, output).
async fn volume_status() -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"))
        .args(["status", "--topology"])
        .arg(env().state_dir.join("topology.json"))
        .arg("--kubeconfig")
        .arg(env().state_dir.join("admin.kubeconfig"))
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The row of `status` output naming `volume` (empty when none does).
fn row(out: &str, volume: &str) -> String {
    let found = out.lines().find(|l| l.contains(volume));
    found.unwrap_or_default().to_string()
}

/// Column `n` of a `status` row (0: claim, 3: bricks, 4: heal pending, 5: split-brain).
fn column(row: &str, n: usize) -> String {
    row.split_whitespace()
        .nth(n)
        .unwrap_or_default()
        .to_string()
}

/// The pid of `volume`'s brick process on `node`, while it runs.
async fn brick_pid(volume: &str, node: &Node) -> Option<i64> {
    let status = gluster_cli(&["volume", "status", volume, "--xml"]).await;
    parse_volume_status(&status)
        .unwrap()
        .into_iter()
        .find(|p| p.hostname == node.storage_address.to_string() && p.brick().is_some())
        .filter(|p| p.status == 1)
        .map(|p| p.pid)
}

/// `volume`'s brick on `node`, as `host:/path`.
async fn brick_of(volume: &str, node: &Node) -> String {
    let status = gluster_cli(&["volume", "status", volume, "--xml"]).await;
    let processes = parse_volume_status(&status).unwrap();
    let on_node = processes
        .into_iter()
        .find(|p| p.hostname == node.storage_address.to_string());
    on_node
        .and_then(|p| p.brick())
        .expect("a brick on the node")
}

/// SIGKILL of `volume`'s brick process on `node`, and waits until glusterd has seen it go: a
/// `start force` before that finds the brick "already running" and starts nothing.
async fn kill_brick(volume: &str, node: &Node) {
    let pid = brick_pid(volume, node).await.expect("the brick runs");
    crate::support::local("kill", &["-KILL", &pid.to_string()]).await;
    let what = format!("glusterd seeing the brick on {} gone", node.name);
    eventually(Duration::from_secs(30), &what, || async {
        brick_pid(volume, node).await.is_none().then_some(())
    })
    .await;
}

/// `volume start force` until every brick of `volume` runs again.
async fn start_bricks(volume: &str) {
    eventually(Duration::from_secs(60), "every brick running", || async {
        gluster_cli(&["volume", "start", volume, "force"]).await;
        for node in nodes() {
            brick_pid(volume, node).await?;
        }
        Some(())
    })
    .await;
}

/// A Prometheus with the alert rules (pending for 5 s) scraping `targets`.
async fn prometheus(port: u16, targets: &[String]) -> Prometheus {
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let scrape = format!(
        "  - job_name: glusterfs-provisioner\n    static_configs: [{{targets: [{}]}}]\n",
        list.join(", ")
    );
    Prometheus::with_alerts_pending(port, &scrape, "5s").await
}

/// A space served by a provisioner of the test's own with metrics on `port` and a look every
/// 5 s at a whole volume, a Prometheus on `prometheus_port` scraping it, and a `replicate:3`
/// class.
async fn watched(tag: &str, port: u16, prometheus_port: u16) -> (Scenario, Prometheus, String) {
    let ns = unique(tag);
    let name = format!("e2e.gluster.org/{ns}");
    let quick = [("HEALTH_INTERVAL_SECONDS", "5")];
    let s = Scenario {
        space: Space::create(ns, &name).await,
        provisioner: Provisioner::start_at(&name, &quick, &format!("127.0.0.1:{port}")).await,
    };
    let prometheus = prometheus(prometheus_port, &[format!("127.0.0.1:{port}")]).await;
    let three = s
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    (s, prometheus, three)
}

/// Waits until the claims for which `alert` fires in `ns` are exactly `claims`.
async fn alert_firing_for(prometheus: &Prometheus, alert: &str, ns: &str, claims: &[&str]) {
    let what = format!("{alert} firing for {claims:?}");
    eventually(Duration::from_secs(120), &what, || async {
        (prometheus.firing(alert, ns).await == claims).then_some(())
    })
    .await;
}

/// Fault: one brick process of a volume killed (SIGKILL of its `glusterfsd`) while a client
/// writes. `status` names the claim, shows 2/3 bricks and entries waiting to be healed, says
/// that taking either other node down would cost the volume its quorum, and fails; the claim
/// gets its Warning, the metrics say 2 of 3 and the alert fires. Once the brick is started
/// again and healed, all of them say whole again.
#[tokio::test]
async fn status_reports_a_killed_brick_until_the_volume_has_healed() {
    let port = 18096;
    let (s, prometheus, three) = watched("brickdown", port, 19096).await;
    let data = s.claim("data", &three, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("data").await;
    let volume = glusterfs_path(&pv);
    let claim = format!("{}/data", s.ns);
    let mount = Mount::of(&s, &pv).await;
    std::fs::write(mount.path().join("before"), "x").unwrap();
    let (_, out) = volume_status().await;
    let line = row(&out, &volume);
    assert!(
        column(&line, 0) == claim && column(&line, 3) == "3/3",
        "{out}"
    );
    assert!(line.ends_with("whole"), "{out}");

    let victim = &nodes()[2];
    kill_brick(&volume, victim).await;
    for i in 0..20 {
        std::fs::write(mount.path().join(format!("during-{i}")), "x").unwrap();
    }
    let out = eventually(BIND_WAIT, "status reporting the brick down", || async {
        let (ok, out) = volume_status().await;
        (!ok && column(&row(&out, &volume), 3) == "2/3").then_some(out)
    })
    .await;
    println!("degraded:\n{out}");
    let line = row(&out, &volume);
    assert!(
        line.contains("degraded") && line.contains(&victim.storage_address.to_string()),
        "{out}"
    );
    let pending: u64 = column(&line, 4).parse().unwrap();
    assert!(pending > 0, "{out}");
    for node in &nodes()[..2] {
        let said = out
            .lines()
            .find(|l| l.starts_with(&format!("node {} ", node.name)));
        assert!(said.unwrap().contains(&volume), "{out}");
    }
    // The provisioner's own sweep: the claim's Warning naming the brick, the metrics, the alert.
    let note = s.event(&data, "VolumeDegraded").await;
    assert!(
        note.contains(&victim.storage_address.to_string()),
        "{note:?}"
    );
    let labels = format!(
        "{{namespace=\"{}\",persistentvolumeclaim=\"data\",volume=\"{volume}\"}}",
        s.ns
    );
    eventually(BIND_WAIT, "the metrics showing 2 of 3 bricks", || async {
        let up = format!("glusterfs_provisioner_volume_bricks_up{labels} 2");
        metrics(port).await.contains(&up).then_some(())
    })
    .await;
    alert_firing_for(&prometheus, "GlusterVolumeDegraded", &s.ns, &["data"]).await;

    start_bricks(&volume).await;
    let out = eventually(BIND_WAIT, "status reporting the volume whole", || async {
        let (_, out) = volume_status().await;
        row(&out, &volume).ends_with("whole").then_some(out)
    })
    .await;
    println!("healed:\n{out}");
    let note = s.event(&data, "VolumeHealed").await;
    assert!(note.contains("whole again"), "{note:?}");
    eventually(
        BIND_WAIT,
        "the metrics showing the volume whole",
        || async {
            let text = metrics(port).await;
            let whole = [
                format!("glusterfs_provisioner_volume_bricks_up{labels} 3"),
                format!("glusterfs_provisioner_volume_heal_pending_entries{labels} 0"),
            ];
            whole.iter().all(|w| text.contains(w)).then_some(())
        },
    )
    .await;
    alert_firing_for(&prometheus, "GlusterVolumeDegraded", &s.ns, &[]).await;
    for i in 0..20 {
        let name = format!("during-{i}");
        assert_eq!(
            std::fs::read_to_string(mount.path().join(name)).unwrap(),
            "x"
        );
    }
    mount.unmount().await;
    s.delete_claim("data").await;
    s.wait_pv_gone(&pv.name_any()).await;
}

/// The node plugin's condition of the volume a pod (by UID) has mounted from the CSI PV `pv`.
async fn condition(pv: &PersistentVolume, pod_uid: &str) -> (bool, String) {
    let target = kubelet_dir().join(format!(
        "pods/{pod_uid}/volumes/kubernetes.io~csi/{}/mount",
        pv.name_any()
    ));
    let stats = node_client()
        .await
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume_of(pv),
            volume_path: target.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.unwrap();
    (condition.abnormal, condition.message)
}

/// Fault: every gluster process of one node (glusterd, its bricks, its self-heal daemon)
/// killed while pods write to three volumes, two `glusterfs` PVs and one CSI PV, of the
/// provisioner deployed from `manifests/` (its default sweep: every 10 minutes while whole).
/// The node going down makes the sweep look at once: each claim gets its Warning naming the
/// node, `status` shows each volume 2/3, the alert fires for each, and the node plugin says
/// which brick the CSI pod's client cannot reach. The node back (glusterd restarted, as after
/// a reboot), each volume heals, and each claim hears so within the 40 s the README states
/// after gluster has finished healing it.
#[tokio::test]
async fn a_node_outage_degrades_every_volume_until_each_has_healed() {
    let space = Space::deployed("outage").await;
    let class = space
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    let targets: Vec<String> = provisioner_pods(&space.client)
        .await
        .into_iter()
        .filter_map(|(_, _, ip)| Some(format!("{}:8080", ip?)))
        .collect();
    let prometheus = prometheus(19097, &targets).await;
    let names = ["a", "b", "c"];
    let mut claims = Vec::new();
    let mut pvs = Vec::new();
    for name in names {
        let class = if name == "c" { CSI_CLASS } else { &class };
        claims.push(space.claim(name, class, "1Gi", "ReadWriteOnce").await);
        pvs.push(space.bound_pv(name).await);
        let script = "i=0; while true; do i=$((i+1)); echo $i >>/data/log; sleep 0.2; done";
        space
            .pod_running(&format!("writer-{name}"), name, json!({}), script)
            .await;
    }
    let mut pods = Vec::new();
    for name in names {
        pods.push(space.running(&format!("writer-{name}"), None).await);
    }
    let volumes: Vec<String> = pvs
        .iter()
        .map(|pv| match pv.spec.as_ref().unwrap().csi {
            Some(_) => volume_of(pv),
            None => glusterfs_path(pv),
        })
        .collect();
    let csi = (&pvs[2], pods[2].uid().unwrap());
    let (abnormal, message) = condition(csi.0, &csi.1).await;
    assert!(!abnormal, "{message}");
    // Each volume looked at and found whole first: its next look is 10 minutes away, so only
    // the node going down can bring one sooner.
    let whole = format!(
        "glusterfs_provisioner_volume_bricks_up{{namespace=\"{}\"}} == 3",
        space.ns
    );
    eventually(BIND_WAIT, "every volume looked at, whole", || async {
        let r = prometheus.query(&whole).await;
        (r["data"]["result"].as_array()?.len() == names.len()).then_some(())
    })
    .await;

    let victim = &nodes()[2];
    let address = victim.storage_address.to_string();
    let node = GlusterNode::new(&victim.name);
    for comm in ["glusterd", "glusterfsd", "glusterfs"] {
        node.signal(comm, "-KILL");
    }
    for claim in &claims {
        let note = space
            .event_from(claim, "VolumeDegraded", &space.provisioner_name)
            .await;
        assert!(note.contains(&address), "{}: {note}", claim.name_any());
    }
    let out = eventually(BIND_WAIT, "status reporting every volume 2/3", || async {
        let (ok, out) = volume_status().await;
        let all = volumes.iter().all(|v| column(&row(&out, v), 3) == "2/3");
        (!ok && all).then_some(out)
    })
    .await;
    println!("node down:\n{out}");
    alert_firing_for(&prometheus, "GlusterVolumeDegraded", &space.ns, &names).await;
    let (abnormal, message) = condition(csi.0, &csi.1).await;
    assert!(abnormal && message.contains(&address), "{message}");
    let lines = |pod: String| {
        let space = &space;
        async move {
            let out = space.exec_ok(&pod, "wc -l </data/log").await;
            out.trim().parse::<u64>().unwrap()
        }
    };
    let written: Vec<u64> =
        futures::future::join_all(names.map(|n| lines(format!("writer-{n}")))).await;
    // Each writes on while the node is down, not only once it is back.
    for (name, before) in names.iter().zip(&written) {
        let what = format!("writer-{name} writing during the outage");
        eventually(BIND_WAIT, &what, || async {
            (lines(format!("writer-{name}")).await > *before).then_some(())
        })
        .await;
    }

    node.mend();
    let healed = eventually(
        Duration::from_secs(300),
        "status reporting every volume whole",
        || async {
            let (_, out) = volume_status().await;
            let all = volumes.iter().all(|v| row(&out, v).ends_with("whole"));
            all.then_some(out)
        },
    )
    .await;
    let healed_at = tokio::time::Instant::now();
    println!("node back, healed:\n{healed}");
    for claim in &claims {
        let note = space
            .event_from(claim, "VolumeHealed", &space.provisioner_name)
            .await;
        assert!(note.contains("whole again"), "{note}");
        assert!(
            healed_at.elapsed() <= Duration::from_secs(40),
            "{}: reported whole {} s after gluster had healed it",
            claim.name_any(),
            healed_at.elapsed().as_secs()
        );
    }
    alert_firing_for(&prometheus, "GlusterVolumeDegraded", &space.ns, &[]).await;
    let (abnormal, message) = condition(csi.0, &csi.1).await;
    assert!(!abnormal, "{message}");
    // And after it.
    for (name, before) in names.iter().zip(written) {
        let after = lines(format!("writer-{name}")).await;
        assert!(
            after > before,
            "writer-{name}: {before} lines, then {after}"
        );
    }
    space
        .delete_all(&pvs.iter().map(|pv| pv.name_any()).collect::<Vec<_>>())
        .await;
}

/// Whether the pod's GlusterFS client is connected to each brick of `volume`, as it says in
/// its `.meta` tree.
async fn pod_connected(s: &Space, pod: &str, volume: &str) -> Vec<bool> {
    // dd, not cat: these files say they are empty, and busybox's cat believes it.
    let script =
        format!("for f in /data/.meta/graphs/active/{volume}-client-*/private; do dd if=$f; done");
    let out = s.exec_ok(pod, &script).await;
    out.lines()
        .filter(|l| l.starts_with("connected"))
        .map(|l| l.ends_with('1'))
        .collect()
}

/// Writes `text` to `/data/f` from the pod while only `keep`'s brick runs, then starts the
/// others again and waits for the pod's client to reach them.
async fn write_with_only(s: &Space, volume: &str, keep: &Node, text: &str) {
    for node in nodes().iter().filter(|n| n.name != keep.name) {
        kill_brick(volume, node).await;
    }
    eventually(
        Duration::from_secs(60),
        "the client losing two bricks",
        || async {
            let up = pod_connected(s, "writer", volume).await;
            (up.iter().filter(|c| **c).count() == 1).then_some(())
        },
    )
    .await;
    s.exec_ok("writer", &format!("echo {text} >/data/f")).await;
    start_bricks(volume).await;
    eventually(
        Duration::from_secs(60),
        "the client reaching every brick",
        || async {
            let up = pod_connected(s, "writer", volume).await;
            (up.len() == 3 && up.iter().all(|c| *c)).then_some(())
        },
    )
    .await;
}

/// Fault: one file put into split-brain on purpose, as gluster's documentation does it: with
/// quorum and self-heal off, a pod writes the file while only the first brick runs, then
/// while only the second does. Reading it then fails (EIO); `status` names the claim with
/// one entry in split-brain, the metric says 1 and the alert fires. Resolved with gluster's
/// own `split-brain source-brick`, the volume is whole again and the alert resolves.
#[tokio::test]
async fn a_file_in_split_brain_is_named_counted_and_alerted() {
    let port = 18097;
    let (s, prometheus, three) = watched("splitbrain", port, 19098).await;
    s.claim("data", &three, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("data").await;
    let volume = glusterfs_path(&pv);
    s.pod("writer", "data", json!({})).await;
    s.running("writer", None).await;
    s.exec_ok("writer", "echo first >/data/f").await;
    let unguarded = [
        ("cluster.quorum-type", "none"),
        ("cluster.self-heal-daemon", "off"),
        ("cluster.data-self-heal", "off"),
        ("cluster.metadata-self-heal", "off"),
        ("cluster.entry-self-heal", "off"),
    ];
    for (option, value) in unguarded {
        gluster_cli(&["volume", "set", &volume, option, value]).await;
    }
    write_with_only(&s, &volume, &nodes()[0], "from-node1").await;
    write_with_only(&s, &volume, &nodes()[1], "from-node2-later").await;
    let (read, out) = s.exec("writer", "cat /data/f").await;
    assert!(!read && out.contains("Input/output error"), "{out}");

    let out = eventually(BIND_WAIT, "status naming the split-brain", || async {
        let (ok, out) = volume_status().await;
        (!ok && column(&row(&out, &volume), 5) == "1").then_some(out)
    })
    .await;
    println!("split-brain:\n{out}");
    let line = row(&out, &volume);
    assert_eq!(column(&line, 0), format!("{}/data", s.ns), "{out}");
    assert_eq!(column(&line, 6), "split-brain:", "{out}");
    let labels = format!(
        "{{namespace=\"{}\",persistentvolumeclaim=\"data\",volume=\"{volume}\"}}",
        s.ns
    );
    eventually(BIND_WAIT, "the split-brain metric", || async {
        let entries = format!("glusterfs_provisioner_volume_split_brain_entries{labels} 1");
        metrics(port).await.contains(&entries).then_some(())
    })
    .await;
    alert_firing_for(&prometheus, "GlusterVolumeSplitBrain", &s.ns, &["data"]).await;

    // The second write is the one to keep: its brick is the source (gluster keeps mtimes
    // equal across copies, so `latest-mtime` cannot choose here).
    let source = brick_of(&volume, &nodes()[1]).await;
    let heal = [
        "volume",
        "heal",
        &volume,
        "split-brain",
        "source-brick",
        &source,
        "/f",
    ];
    gluster_cli(&heal).await;
    for (option, _) in unguarded {
        gluster_cli(&["volume", "reset", &volume, option]).await;
    }
    let out = eventually(BIND_WAIT, "status reporting the volume whole", || async {
        let (_, out) = volume_status().await;
        row(&out, &volume).ends_with("whole").then_some(out)
    })
    .await;
    println!("resolved:\n{out}");
    alert_firing_for(&prometheus, "GlusterVolumeSplitBrain", &s.ns, &[]).await;
    let kept = s.exec_ok("writer", "cat /data/f").await;
    assert_eq!(kept.trim(), "from-node2-later");
    s.pods()
        .delete("writer", &Default::default())
        .await
        .unwrap();
    s.delete_claim("data").await;
    s.wait_pv_gone(&pv.name_any()).await;
}
