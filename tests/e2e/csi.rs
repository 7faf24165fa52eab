//! CSI mode on the worker node: the node plugin runs from the DaemonSet in `manifests/`, the
//! real kubelet (v1.20) registers it and calls it, and pods use CSI PVs the deployed provisioner
//! makes. Also the node service driven directly over its socket, as the CSI spec requires.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use glusterfs_provisioner::csi::mounts::{MountEntry, parse_mountinfo};
use glusterfs_provisioner::csi::proto::node_client::NodeClient;
use glusterfs_provisioner::csi::proto::volume_capability::access_mode::Mode;
use glusterfs_provisioner::csi::proto::volume_capability::{AccessMode, AccessType, MountVolume};
use glusterfs_provisioner::csi::proto::*;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::CSINode;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

use crate::pods::{self, CSI_NS, POD_WAIT, kubectl};
use crate::scenario::{Space, from_json, nodes};
use crate::support::{env, eventually, local, unique};

pub(crate) const CSI_CLASS: &str = "glusterfs-csi";

/// The restart test takes the node plugin away for a while. The tests that call it directly,
/// or whose pods mount CSI volumes, hold this for reading so they never run across a restart:
/// the kubelet's retries of a mount back off to two minutes, longer than a test waits for a pod.
pub(crate) static PLUGIN: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
const DRIVER: &str = "glusterfs.gluster.org";

pub(crate) fn kubelet_dir() -> PathBuf {
    env().state_dir.join("node/kubelet")
}

/// GlusterFS FUSE mounts in the node's mount table whose source names `volume`.
/// The node's FUSE mounts of `volume`, from its mount table.
pub(crate) fn fuse_mounts(volume: &str) -> Vec<MountEntry> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    parse_mountinfo(&table)
        .into_iter()
        .filter(|m| m.fs_type == "fuse.glusterfs" && m.source.ends_with(&format!("/{volume}")))
        .collect()
}

fn fuse_mounts_of(volume: &str) -> Vec<PathBuf> {
    fuse_mounts(volume)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

pub(crate) fn volume_of(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .unwrap()
        .csi
        .as_ref()
        .unwrap()
        .volume_handle
        .clone()
}

/// Waits until no pod's or stage's mount of the PV's volume is left on the node.
async fn wait_unmounted(volume: &str) {
    eventually(
        Duration::from_secs(120),
        "the node's mounts of the volume gone",
        || async { fuse_mounts_of(volume).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn csi_statefulset_example_pods_write_keep_their_data_and_unmount() {
    let _stable = PLUGIN.read().await;
    let space = Space::deployed("csi-sts").await;
    let pv_names = pods::statefulset_case(space, CSI_CLASS).await;
    // `statefulset_case` deleted everything: the kubelet unpublished and unstaged each volume.
    for name in &pv_names {
        let volume = format!("vol_{}", name.trim_start_matches("pvc-").replace('-', ""));
        wait_unmounted(&volume).await;
    }
}

#[tokio::test]
async fn csi_non_root_pod_writes_through_the_pv_gid() {
    let _stable = PLUGIN.read().await;
    pods::non_root_case(Space::deployed("csi-nonroot").await, CSI_CLASS).await;
}

#[tokio::test]
async fn csi_two_pods_share_a_read_write_many_claim() {
    let _stable = PLUGIN.read().await;
    pods::rwx_case(Space::deployed("csi-rwx").await, CSI_CLASS).await;
}

/// `kubelet_volume_stats_used_bytes` of a claim, from the kubelet's metrics.
async fn used_bytes(ns: &str, claim: &str) -> Option<f64> {
    let (ok, text, _) = kubectl(
        &["get", "--raw", "/api/v1/nodes/gp-worker/proxy/metrics"],
        "",
    )
    .await;
    assert!(ok);
    let labels = format!("namespace=\"{ns}\",persistentvolumeclaim=\"{claim}\"");
    text.lines()
        .find(|l| l.starts_with("kubelet_volume_stats_used_bytes{") && l.contains(&labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn csi_volume_stats_follow_what_a_pod_writes() {
    let _stable = PLUGIN.read().await;
    let space = Space::deployed("csi-stats").await;
    space.claim("data", CSI_CLASS, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("data").await;
    space.pod("writer", "data", json!({})).await;
    space.running("writer", None).await;
    let before = eventually(POD_WAIT, "the claim's volume stats", || {
        used_bytes(&space.ns, "data")
    })
    .await;
    space
        .exec_ok(
            "writer",
            "dd if=/dev/urandom of=/data/blob bs=1M count=64 conv=fsync 2>&1",
        )
        .await;
    let after = eventually(
        Duration::from_secs(120),
        "the stats to count the write",
        || async {
            used_bytes(&space.ns, "data")
                .await
                .filter(|b| *b >= before + 60.0 * 1024.0 * 1024.0)
        },
    )
    .await;
    println!("kubelet_volume_stats_used_bytes: {before} -> {after}");
    space.delete_all(&[pv.name_any()]).await;
}

/// The node plugin's pod on the worker.
async fn plugin_pod(client: &kube::Client) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), CSI_NS);
    pods.list(&ListParams::default().labels("app.kubernetes.io/name=glusterfs-csi-node"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
}

/// The plugin's container is running and the kubelet has the driver registered again.
async fn plugin_back(client: &kube::Client, not: (&str, i32)) {
    eventually(
        POD_WAIT,
        "the node plugin running and registered again",
        || async {
            let pod = plugin_pod(client).await?;
            let status = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            let new = pod.uid().as_deref() != Some(not.0) || status.restart_count > not.1;
            let running = status.state.as_ref()?.running.is_some() && status.ready;
            let csinode = Api::<CSINode>::all(client.clone())
                .get("gp-worker")
                .await
                .ok()?;
            let registered = csinode.spec.drivers.iter().any(|d| d.name == DRIVER);
            (new && running && registered).then_some(())
        },
    )
    .await;
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

#[tokio::test]
async fn csi_mounts_survive_the_node_plugin_being_killed_or_replaced() {
    let _restarting = PLUGIN.write().await;
    let space = Space::deployed("csi-restart").await;
    space.claim("data", CSI_CLASS, "1Gi", "ReadWriteMany").await;
    let pv = space.bound_pv("data").await;
    // A writer that keeps appending while the plugin goes away and comes back.
    let writes = "i=0; while :; do echo $i >>/data/log; i=$((i+1)); sleep 0.1; done";
    space.pod_running("writer", "data", json!({}), writes).await;
    space.running("writer", None).await;
    let client = space.client.clone();
    for (round, how) in [
        "kill -9 of the plugin process",
        "deletion of the plugin's pod",
    ]
    .iter()
    .enumerate()
    {
        let pod = plugin_pod(&client).await.expect("the node plugin's pod");
        let uid = pod.uid().unwrap();
        let before = restarts(&pod);
        if round == 0 {
            local("pkill", &["-9", "-f", "glusterfs-provisioner node"]).await;
        } else {
            Api::<Pod>::namespaced(client.clone(), CSI_NS)
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
                .unwrap();
        }
        plugin_back(&client, (&uid, before)).await;
        // The pod's mount kept working all along: the writer's log still grows, and is readable.
        let lines = |out: String| out.trim().parse::<u64>().unwrap_or(0);
        let first = lines(space.exec_ok("writer", "wc -l </data/log").await);
        let grown = eventually(
            Duration::from_secs(30),
            "the writer's log growing",
            || async {
                let now = lines(space.exec_ok("writer", "wc -l </data/log").await);
                (now > first).then_some(now)
            },
        )
        .await;
        println!("after {how}: the writer's log has {grown} lines");
        // A new pod of the same claim starts on the mount the old plugin staged.
        let reader = format!("reader-{round}");
        space.pod(&reader, "data", json!({})).await;
        space.running(&reader, None).await;
        let seen = lines(space.exec_ok(&reader, "wc -l </data/log").await);
        assert!(
            seen >= first,
            "{how}: the new pod sees {seen} lines, the writer wrote {first}"
        );
    }
    space.delete_all(&[pv.name_any()]).await;
}

/// A client of the node plugin's CSI socket, as the kubelet dials it.
pub(crate) async fn node_client() -> NodeClient<Channel> {
    let socket = kubelet_dir().join("plugins").join(DRIVER).join("csi.sock");
    let channel = tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connecting to the node plugin");
    NodeClient::new(channel)
}

fn capability(mode: Mode, flags: &[&str]) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode.into() }),
    })
}

fn context_of(pv: &PersistentVolume) -> HashMap<String, String> {
    let csi = pv.spec.as_ref().unwrap().csi.as_ref().unwrap();
    csi.volume_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn csi_dead_fuse_client_is_reported_and_mounted_again() {
    let _stable = PLUGIN.read().await;
    let space = Space::deployed("csi-dead").await;
    space.claim("data", CSI_CLASS, "1Gi", "ReadWriteMany").await;
    let pv = space.bound_pv("data").await;
    let volume = volume_of(&pv);
    let first = space.pod("first", "data", json!({})).await;
    space.running("first", None).await;
    space.exec_ok("first", "echo kept >/data/file").await;
    // Kill the volume's FUSE client, as a crash or an OOM kill would.
    local("pkill", &["-9", "-f", &format!("volfile-id=/?{volume}")]).await;
    let target = kubelet_dir().join(format!(
        "pods/{}/volumes/kubernetes.io~csi/{}/mount",
        first.uid().unwrap(),
        pv.name_any()
    ));
    let mut node = node_client().await;
    let condition = eventually(
        Duration::from_secs(30),
        "an abnormal volume condition",
        || {
            let (mut node, target, volume) = (node.clone(), target.clone(), volume.clone());
            async move {
                let stats = node
                    .node_get_volume_stats(NodeGetVolumeStatsRequest {
                        volume_id: volume,
                        volume_path: target.display().to_string(),
                        staging_target_path: String::new(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                stats.volume_condition.filter(|c| c.abnormal)
            }
        },
    )
    .await;
    // The kernel answers a dead FUSE connection with ENOTCONN, or ECONNABORTED when the
    // request raced the abort; anything else (a timeout, ENOENT) is not this fault.
    assert!(
        ["not connected", "connection abort"]
            .iter()
            .any(|e| condition.message.contains(e)),
        "{}",
        condition.message
    );
    // A new pod of the claim gets a working mount: the plugin replaces the dead stage.
    space.pod("second", "data", json!({})).await;
    space.running("second", None).await;
    assert_eq!(
        space.exec_ok("second", "cat /data/file").await.trim(),
        "kept"
    );
    let stats = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: String::new(),
        })
        .await;
    // The first pod's own bind mount still points at the dead client; it is reported so.
    assert!(stats.is_ok_and(|s| s.into_inner().volume_condition.is_some_and(|c| c.abnormal)));
    space.delete_all(&[pv.name_any()]).await;
    wait_unmounted(&volume).await;
}

#[tokio::test]
async fn csi_node_service_conformance() {
    let _stable = PLUGIN.read().await;
    let space = Space::deployed("csi-conf").await;
    space.claim("data", CSI_CLASS, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("data").await;
    let volume = volume_of(&pv);
    let context = context_of(&pv);
    let mut node = node_client().await;
    // Paths the plugin sees at the same place as the node: under the kubelet's plugins dir.
    let base = kubelet_dir()
        .join("plugins")
        .join(DRIVER)
        .join(unique("conformance"));
    let (staging, target) = (base.join("stage"), base.join("target"));
    let stage = NodeStageVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: capability(Mode::SingleNodeWriter, &[]),
        volume_context: context.clone(),
        ..Default::default()
    };
    let publish = NodePublishVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: capability(Mode::SingleNodeWriter, &[]),
        volume_context: context.clone(),
        ..Default::default()
    };

    // Missing or hostile fields: InvalidArgument, and nothing mounted.
    let mut hostile_servers = stage.clone();
    hostile_servers
        .volume_context
        .insert("servers".into(), "10.0.0.1,x;id".into());
    let block = VolumeCapability {
        access_type: Some(AccessType::Block(Default::default())),
        ..capability(Mode::SingleNodeWriter, &[]).unwrap()
    };
    let bad_stages = [
        (
            "no volume_id",
            NodeStageVolumeRequest {
                volume_id: String::new(),
                ..stage.clone()
            },
        ),
        (
            "no staging path",
            NodeStageVolumeRequest {
                staging_target_path: String::new(),
                ..stage.clone()
            },
        ),
        (
            "no capability",
            NodeStageVolumeRequest {
                volume_capability: None,
                ..stage.clone()
            },
        ),
        (
            "block access",
            NodeStageVolumeRequest {
                volume_capability: Some(block),
                ..stage.clone()
            },
        ),
        ("hostile servers", hostile_servers),
        (
            "an option smuggled into a mount flag",
            NodeStageVolumeRequest {
                volume_capability: capability(
                    Mode::SingleNodeWriter,
                    &["log-level=INFO,volfile-server=10.0.0.9"],
                ),
                ..stage.clone()
            },
        ),
    ];
    for (case, request) in bad_stages {
        let status = node.node_stage_volume(request).await.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    }
    let no_target = NodePublishVolumeRequest {
        target_path: String::new(),
        ..publish.clone()
    };
    let status = node
        .node_publish_volume(no_target)
        .await
        .expect_err("no target");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(fuse_mounts_of(&volume).is_empty());

    // Unknown volumes and paths: NotFound for stats.
    let stats = |path: &Path| NodeGetVolumeStatsRequest {
        volume_id: volume.clone(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    };
    let status = node
        .node_get_volume_stats(stats(&target))
        .await
        .expect_err("not mounted");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Stage and publish, each twice: the same answer, one mount each.
    for _ in 0..2 {
        node.node_stage_volume(stage.clone()).await.expect("stage");
    }
    for _ in 0..2 {
        node.node_publish_volume(publish.clone())
            .await
            .expect("publish");
    }
    let mounts = fuse_mounts_of(&volume);
    assert_eq!(
        mounts.iter().filter(|m| **m == staging).count(),
        1,
        "{mounts:?}"
    );
    assert_eq!(
        mounts.iter().filter(|m| **m == target).count(),
        1,
        "{mounts:?}"
    );
    std::fs::write(target.join("through-target"), "x").unwrap();
    assert!(staging.join("through-target").exists());
    let usage = node
        .node_get_volume_stats(stats(&target))
        .await
        .unwrap()
        .into_inner();
    let bytes = usage
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
        .unwrap();
    let gib = f64::from(1 << 30);
    assert!(
        (bytes.total as f64 - gib).abs() < gib / 100.0,
        "the quota is the size: {bytes:?}"
    );

    // A read-only publish is read-only.
    let ro_target = base.join("ro");
    let mut ro = publish.clone();
    ro.target_path = ro_target.display().to_string();
    ro.readonly = true;
    node.node_publish_volume(ro)
        .await
        .expect("read-only publish");
    assert!(std::fs::write(ro_target.join("no"), "x").is_err());

    // Unpublish and unstage, each twice: targets removed, nothing left mounted.
    for path in [&target, &ro_target] {
        for _ in 0..2 {
            let req = NodeUnpublishVolumeRequest {
                volume_id: volume.clone(),
                target_path: path.display().to_string(),
            };
            node.node_unpublish_volume(req).await.expect("unpublish");
        }
        assert!(!path.exists(), "unpublish removes {}", path.display());
    }
    for _ in 0..2 {
        let req = NodeUnstageVolumeRequest {
            volume_id: volume.clone(),
            staging_target_path: staging.display().to_string(),
        };
        node.node_unstage_volume(req).await.expect("unstage");
    }
    assert!(fuse_mounts_of(&volume).is_empty());
    std::fs::remove_dir_all(&base).ok();
    space.delete_all(&[pv.name_any()]).await;
}

/// A pod whose CSI volume cannot be mounted is told why in mount's own words: the FailedMount
/// event the kubelet posts carries the node plugin's error, and that carries mount's stderr.
#[tokio::test]
async fn csi_a_failed_mount_says_why_in_the_pods_events() {
    let _stable = PLUGIN.read().await;
    let space = Space::deployed("csi-nomount").await;
    // A PV of this driver naming a volume the pool has not got.
    let volume = format!("vol_{}", uuid::Uuid::new_v4().simple());
    let pv_name = format!("{}-missing", space.ns);
    let servers: Vec<String> = nodes()
        .iter()
        .map(|n| n.storage_address.to_string())
        .collect();
    let pv: PersistentVolume = from_json(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": space.ns, "name": "data"},
                 "csi": {"driver": DRIVER, "volumeHandle": volume,
                         "volumeAttributes": {"volume": volume, "servers": servers.join(",")}}},
    }));
    space.pvs.create(&PostParams::default(), &pv).await.unwrap();
    let claim = json!({"storageClassName": "", "volumeName": pv_name,
                       "accessModes": ["ReadWriteOnce"],
                       "resources": {"requests": {"storage": "1Gi"}}});
    space.claim_with("data", claim).await;
    space.bound_pv("data").await;
    space.pod("reader", "data", json!({})).await;

    let events: Api<Event> = Api::namespaced(space.client.clone(), &space.ns);
    let note = eventually(POD_WAIT, "the pod's FailedMount event", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("FailedMount"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("reader"))
            .filter_map(|e| e.note)
            .find(|note| note.contains("MountDevice"))
    })
    .await;
    // What mount.glusterfs prints when the client fails before or after it daemonizes.
    let said = ["Mount failed. Check the log file", "Mounting glusterfs on"];
    assert!(
        note.contains(&volume) && said.iter().any(|s| note.contains(s)),
        "{note}"
    );

    space.delete_pod("reader").await;
    space
        .pvs
        .delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
    space.delete_all(&[pv_name]).await;
}
