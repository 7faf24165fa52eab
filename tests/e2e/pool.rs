//! A pool that lives on: a node retired or dead for good has its bricks moved to the others by
//! `evacuate`. These need five gluster nodes (`GP_GLUSTER_NODES=5 e2e/env up`), and break
//! nodes: `e2e/test` runs them alone, in an environment of their own.

use std::collections::HashSet;
use std::time::Duration;

use glusterfs_provisioner::gluster::xml::{
    parse_heal_summary, parse_peer_status, parse_volume_info, parse_volume_status,
};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::csi::CSI_CLASS;
use crate::disruptive::GlusterNode;
use crate::scenario::*;
use crate::support::{eventually, ssh};

/// The nodes the pool was made with; fails the test in a smaller environment.
fn five_nodes() {
    assert!(
        nodes().len() >= 5,
        "these tests need GP_GLUSTER_NODES=5 e2e/env up (have {} nodes)",
        nodes().len()
    );
}

/// The volume's bricks as gluster lists them, `host:/path`.
async fn bricks_of(volume: &str) -> Vec<String> {
    let out = gluster_cli(&["volume", "info", volume, "--xml"]).await;
    let volumes = parse_volume_info(&out).unwrap();
    let v = volumes.iter().find(|v| v.name == volume).unwrap();
    v.bricks.bricks.iter().map(|b| b.name.clone()).collect()
}

/// The node names holding the volume's bricks.
async fn brick_nodes(volume: &str) -> Vec<String> {
    bricks_of(volume)
        .await
        .iter()
        .map(|b| {
            let host = b.split(':').next().unwrap();
            let node = nodes()
                .iter()
                .find(|n| n.storage_address.to_string() == host);
            node.unwrap().name.clone()
        })
        .collect()
}

/// Copies of the volume's data that are whole now: its first bricks still running, plus any
/// new brick once nothing is left to heal; `None` when gluster does not answer (its lock is
/// busy with the move itself).
async fn healed_copies(volume: &str, first: &HashSet<String>) -> Option<usize> {
    let ask = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--xml".into(), "--mode=script".into()]);
        async move {
            let out = ssh()
                .run(&nodes()[0].ssh_address, "gluster", &all)
                .await
                .ok()?;
            Some(out.stdout)
        }
    };
    let status = ask(&["volume", "status", volume]).await?;
    let running: Vec<String> = parse_volume_status(&status)
        .ok()?
        .into_iter()
        .filter(|p| p.status == 1)
        .filter_map(|p| p.brick())
        .collect();
    let summary = ask(&["volume", "heal", volume, "info", "summary"]).await?;
    let pending = parse_heal_summary(&summary)
        .ok()?
        .iter()
        .map(|b| b.pending.unwrap_or(u64::MAX))
        .max()
        .unwrap_or(u64::MAX);
    let old = running.iter().filter(|b| first.contains(*b)).count();
    let new = running.iter().filter(|b| !first.contains(*b)).count();
    Some(old + if pending == 0 { new } else { 0 })
}

/// A node with a brick of every volume in `volumes`, none of them the pool's first (the
/// tests' gluster CLI runs there).
async fn node_holding(volumes: &[String]) -> String {
    let mut common: Option<HashSet<String>> = None;
    for v in volumes {
        let these: HashSet<String> = brick_nodes(v).await.into_iter().collect();
        common = Some(match common {
            None => these,
            Some(c) => c.intersection(&these).cloned().collect(),
        });
    }
    let mut common: Vec<String> = common.unwrap_or_default().into_iter().collect();
    common.sort();
    common
        .into_iter()
        .find(|n| *n != nodes()[0].name)
        .expect("a node other than the first holds a brick of every volume")
}

/// What is left on `node` of `volume`: entries under its brick roots, its fstab lines, its
/// mounts.
async fn left_on(node: &str, volume: &str) -> String {
    let script = "for r in \"$@\"; do ls -d \"$r/$0\" \"$r/$0.img\" 2>/dev/null; done; \
                  grep -F \"/$0\" /etc/fstab; grep -F \"/$0\" /proc/mounts; true";
    let node = node_by_name(node);
    let mut args = vec!["-c".to_string(), script.to_string(), volume.to_string()];
    args.extend(
        node.brick_roots
            .iter()
            .map(|r| r.path.display().to_string()),
    );
    ssh().run_ok(&node.ssh_address, "sh", &args).await.unwrap()
}

async fn evacuate(args: &[&str]) -> (bool, String) {
    operator_command("evacuate", args).await
}

fn volumetype(kind: &str) -> Value {
    json!({ "volumetype": kind })
}

fn volume_of_pv(pv: &PersistentVolume) -> String {
    glusterfs_path(pv)
}

/// A pod `pod` on `claim` that appends a line to `/data/log` every 0.2 s, after writing 20 MB
/// to `/data/blob`: the blob's md5sum, to compare once the bricks moved.
async fn writer(space: &Space, pod: &str, claim: &str) -> String {
    let script = "i=0; while true; do i=$((i+1)); echo $i >>/data/log; sleep 0.2; done";
    space.pod_running(pod, claim, json!({}), script).await;
    space.running(pod, None).await;
    space
        .exec_ok(pod, "head -c 20000000 /dev/urandom >/data/blob && sync")
        .await;
    space.exec_ok(pod, "md5sum </data/blob").await
}

/// Waits until the pod's `/data/log` grows: it goes on writing.
async fn goes_on_writing(space: &Space, pod: &str) {
    let lines = space.exec_ok(pod, "wc -l </data/log").await;
    eventually(Duration::from_secs(30), "the writer going on", || async {
        let now = space.exec_ok(pod, "wc -l </data/log").await;
        (now.trim().parse::<u64>().ok()? > lines.trim().parse::<u64>().ok()?).then_some(())
    })
    .await;
}

/// A space of the deployed provisioner, each claim (name, class parameters) of 1Gi Bound: their
/// PVs.
async fn bound_claims(tag: &str, claims: &[(&str, Value)]) -> (Space, Vec<PersistentVolume>) {
    five_nodes();
    let space = Space::deployed(tag).await;
    let mut pvs = Vec::new();
    for (name, params) in claims {
        let class = space.class(params.clone(), "Delete").await;
        space.claim(name, &class, "1Gi", "ReadWriteOnce").await;
        pvs.push(space.bound_pv(name).await);
    }
    (space, pvs)
}

/// A planned retirement: the node is up. Each replicate volume gets its new copy healed
/// before the old one goes, so at no point has it fewer healed copies than it started with;
/// the arbiter volume's brick is replaced (gluster cannot add a fourth brick to it). A pod
/// writes throughout and reads back what it wrote; nothing is left on the retired node.
#[tokio::test]
async fn a_live_node_is_retired_without_losing_a_healed_copy() {
    let (space, pvs) = bound_claims(
        "retire",
        &[
            ("data", volumetype("replicate:3")),
            ("meta", volumetype("arbiter")),
        ],
    )
    .await;
    let (data_pv, meta_pv) = (pvs[0].clone(), pvs[1].clone());
    let (data, meta) = (volume_of_pv(&data_pv), volume_of_pv(&meta_pv));
    let sum = writer(&space, "writer", "data").await;
    let victim = node_holding(std::slice::from_ref(&data)).await;

    let (ok, plan) = evacuate(&["--node", &victim]).await;
    assert!(ok, "a plan that can be placed is fine:\n{plan}");
    let row = plan
        .lines()
        .find(|l| l.starts_with(&data))
        .unwrap_or_default();
    assert!(
        row.contains("add a copy") && row.ends_with("planned"),
        "{plan}"
    );
    assert_eq!(brick_nodes(&data).await.len(), 3, "the plan moves nothing");

    let first: HashSet<String> = bricks_of(&data).await.into_iter().collect();
    let watch = {
        let (data, first, victim) = (data.clone(), first.clone(), victim.clone());
        tokio::spawn(async move {
            let (mut least, mut readings) = (usize::MAX, 0);
            while brick_nodes(&data).await.contains(&victim) {
                if let Some(copies) = healed_copies(&data, &first).await {
                    (least, readings) = (least.min(copies), readings + 1);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (least, readings)
        })
    };
    let (ok, moved) = evacuate(&["--node", &victim, "--apply"]).await;
    println!("{moved}");
    assert!(ok, "{moved}");
    let (least, readings) = watch.await.unwrap();
    assert!(readings > 0, "the move was watched");
    assert!(least >= 3, "{data} had {least} healed copies at one point");
    for v in [&data, &meta] {
        let on = brick_nodes(v).await;
        assert!(!on.contains(&victim), "{v} still on {victim}: {on:?}");
        assert_eq!(on.len(), 3, "{v}: {on:?}");
        assert_eq!(left_on(&victim, v).await.trim(), "", "{v} left on {victim}");
    }
    let claim = space.claims.get("data").await.unwrap();
    let note = space
        .event_from(&claim, "BrickMoved", "glusterfs-provisioner-evacuate")
        .await;
    assert!(note.contains(&victim_address(&victim)), "{note}");
    let recorded = space.pvs.get(&data_pv.name_any()).await.unwrap();
    assert!(!annotations(&recorded)["gluster.org/bricks"].contains(&format!("{victim}:")));
    let (ok, status) = operator_command("status", &[]).await;
    assert!(ok, "every volume whole:\n{status}");
    assert_eq!(space.exec_ok("writer", "md5sum </data/blob").await, sum);
    goes_on_writing(&space, "writer").await;
    space
        .delete_all(&[data_pv.name_any(), meta_pv.name_any()])
        .await;
}

fn victim_address(node: &str) -> String {
    node_by_name(node).storage_address.to_string()
}

/// A node dead for good (gluster processes, sshd and image mounts gone), holding bricks of a
/// replica 3 volume on images, a disperse 2+1, a replica 3 with quota (`glusterfs` PVs) and a
/// CSI PV's, with pods writing to the first and the last: `evacuate --apply`
/// replaces each of its bricks on the others, never waiting on it; every volume is whole and
/// the pod kept writing. Killed mid-way and run again, it ends in the same state. Once the
/// node is back, a run removes what was left on it.
#[tokio::test]
async fn a_dead_nodes_bricks_move_and_a_killed_run_finishes() {
    let claims = [
        ("a", volumetype("replicate:3")),
        ("b", volumetype("disperse:2:1")),
        (
            "c",
            json!({"volumetype": "replicate:3", "sizeLimit": "quota"}),
        ),
    ];
    let (space, bound) = bound_claims("dead", &claims).await;
    let mut volumes: Vec<String> = bound.iter().map(volume_of_pv).collect();
    let mut pvs: Vec<String> = bound.iter().map(|pv| pv.name_any()).collect();
    // And a CSI PV, each kind with a pod writing.
    space.claim("d", CSI_CLASS, "1Gi", "ReadWriteOnce").await;
    let csi = space.bound_pv("d").await;
    volumes.push(crate::csi::volume_of(&csi));
    pvs.push(csi.name_any());
    let sum = writer(&space, "writer", "a").await;
    let csi_sum = writer(&space, "csi-writer", "d").await;
    let victim = node_holding(&volumes).await;
    let node = GlusterNode::new(&victim);
    node.shut_down();
    node.signal("sshd", "-KILL");

    // Killed once the first volume's brick was replaced, before it healed: stdout has a line
    // per volume only once it healed, the log at `info` says each step as it starts.
    let state = &crate::support::env().state_dir;
    let mut run = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"));
    run.args(["evacuate", "--node", &victim, "--apply", "--topology"])
        .arg(state.join("topology.json"))
        .arg("--kubeconfig")
        .arg(state.join("admin.kubeconfig"))
        // Killed, it cannot remove its SSH control sockets: they go with the state directory.
        .arg("--ssh-control-dir")
        .arg(state.join("test-ssh").join("killed"))
        .args(["--log-level", "info"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = run.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("replace-brick") {
            break;
        }
    }
    child.kill().await.unwrap();

    let (ok, moved) = evacuate(&["--node", &victim, "--apply"]).await;
    println!("{moved}");
    assert!(ok, "{moved}");
    for v in &volumes {
        let on = brick_nodes(v).await;
        assert!(!on.contains(&victim), "{v}: {on:?}");
        assert_eq!(on.iter().collect::<HashSet<_>>().len(), 3, "{v}: {on:?}");
    }
    let (ok, status) = operator_command("status", &[]).await;
    assert!(ok, "every volume whole:\n{status}");
    assert_eq!(space.exec_ok("writer", "md5sum </data/blob").await, sum);
    assert_eq!(
        space.exec_ok("csi-writer", "md5sum </data/blob").await,
        csi_sum
    );
    for pod in ["writer", "csi-writer"] {
        goes_on_writing(&space, pod).await;
    }

    // Back from the dead (booted: its image bricks mounted from its fstab, glusterd started,
    // sshd too): a run removes what it left there.
    node.boot();
    drop(node);
    // glusterd back learns from its peers what changed while it was gone: a while.
    let back = node_by_name(&victim);
    eventually(
        Duration::from_secs(240),
        "the node back in the pool",
        || async {
            let args = ["--mode=script", "peer", "status", "--xml"].map(String::from);
            let out = ssh().run(&back.ssh_address, "gluster", &args).await.ok()?;
            let peers = parse_peer_status(&out.stdout).ok()?;
            let connected = peers.iter().filter(|p| p.is_connected()).count();
            (connected + 1 == nodes().len()).then_some(())
        },
    )
    .await;
    let (ok, cleaned) = evacuate(&["--node", &victim, "--apply"]).await;
    println!("{cleaned}");
    assert!(ok, "{cleaned}");
    for v in &volumes {
        assert_eq!(left_on(&victim, v).await.trim(), "", "{v} left on {victim}");
    }
    space.delete_all(&pvs).await;
}

/// A plan with a volume nothing can hold (a brick on each of the five nodes) exits non-zero,
/// names the volume and why, and moves nothing, not even the volumes that could move.
#[tokio::test]
async fn a_plan_that_cannot_be_placed_moves_nothing() {
    let (space, pvs) = bound_claims(
        "unplaceable",
        &[
            ("wide", volumetype("replicate:5")),
            ("narrow", volumetype("replicate:3")),
        ],
    )
    .await;
    let (wide, narrow) = (pvs[0].clone(), pvs[1].clone());
    let victim = node_holding(&[volume_of_pv(&narrow)]).await;
    let before = bricks_of(&volume_of_pv(&narrow)).await;
    let (ok, out) = evacuate(&["--node", &victim, "--apply"]).await;
    assert!(!ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&volume_of_pv(&wide)))
        .unwrap_or_default();
    assert!(
        line.contains("cannot place") && line.contains("room"),
        "{out}"
    );
    assert!(out.contains("nothing moved"), "{out}");
    assert_eq!(bricks_of(&volume_of_pv(&narrow)).await, before);
    space
        .delete_all(&[wide.name_any(), narrow.name_any()])
        .await;
}
