//! Mounts follow the pool (README): once `evacuate` moved a volume's bricks, the leader lists
//! the volume's servers now in the node plugin's ConfigMap and points a `glusterfs` PV's
//! Endpoints at them, and a new CSI stage mounts from them first. Needs a spare gluster node
//! (`GP_GLUSTER_NODES=6 GP_GLUSTER_SPARES=3 e2e/env up`): it joins one to the pool and the
//! operator's topology file (not the provisioner's: the sweep reads where bricks are from
//! gluster), moves the bricks there and back, and leaves the pool as it found it. Run it in its
//! own process before `grow::`, which retires the first nodes for good.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use glusterfs_provisioner::config::csi::{CurrentServers, SERVERS_CONFIG_MAP, SERVERS_KEY};
use glusterfs_provisioner::config::{Node, Topology};
use glusterfs_provisioner::gluster::xml::{parse_peer_status, parse_volume_info};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::csi::{CSI_CLASS, PLUGIN, kubelet_dir};
use crate::pods::CSI_NS;
use crate::scenario::*;
use crate::support::{env, eventually};

/// The sweep looks at a volume at its next tick (10 s) once its PV's brick record changed.
const FOLLOWS: Duration = Duration::from_secs(90);

/// A node the environment started outside the pool and the topology.
fn spare() -> Node {
    let all = Topology::load(&env().state_dir.join("topology-all.json")).unwrap();
    let spare = all.clusters[0]
        .nodes
        .iter()
        .find(|n| !nodes().iter().any(|p| p.name == n.name))
        .cloned();
    spare.expect("this test needs a spare node: GP_GLUSTER_NODES=6 GP_GLUSTER_SPARES=3 e2e/env up")
}

/// The environment's topology file (what operator commands read) with one more node; the file
/// as it was once dropped.
struct LocalTopology {
    path: PathBuf,
    was: Vec<u8>,
}

impl LocalTopology {
    fn with(node: &Node) -> Self {
        let path = env().state_dir.join("topology.json");
        let was = std::fs::read(&path).unwrap();
        let all = std::fs::read(env().state_dir.join("topology-all.json")).unwrap();
        let all: Value = serde_json::from_slice(&all).unwrap();
        let entry = all["clusters"][0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node.name.as_str())
            .unwrap()
            .clone();
        let mut doc: Value = serde_json::from_slice(&was).unwrap();
        doc["clusters"][0]["nodes"]
            .as_array_mut()
            .unwrap()
            .push(entry);
        std::fs::write(&path, doc.to_string()).unwrap();
        LocalTopology { path, was }
    }
}

impl Drop for LocalTopology {
    fn drop(&mut self) {
        std::fs::write(&self.path, &self.was).ok();
    }
}

/// Peers the first node sees connected.
async fn connected_peers() -> usize {
    let out = gluster_cli(&["peer", "status", "--xml"]).await;
    let peers = parse_peer_status(&out).unwrap_or_default();
    peers.iter().filter(|p| p.is_connected()).count()
}

/// The volume's brick hosts as gluster lists them, in brick order, once each.
async fn brick_hosts(volume: &str) -> Vec<String> {
    let out = gluster_cli(&["volume", "info", volume, "--xml"]).await;
    let volumes = parse_volume_info(&out).unwrap();
    let v = volumes.iter().find(|v| v.name == volume).unwrap();
    let mut hosts: Vec<String> = Vec::new();
    for b in &v.bricks.bricks {
        let host = b.name.split(':').next().unwrap().to_string();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// The servers a CSI PV was made with.
fn listed_servers(pv: &PersistentVolume) -> Vec<String> {
    let csi = pv.spec.as_ref().unwrap().csi.as_ref().unwrap();
    let attributes = csi.volume_attributes.as_ref().unwrap();
    attributes["servers"].split(',').map(String::from).collect()
}

/// What the servers ConfigMap says now (absent: nothing).
async fn published(space: &Space) -> CurrentServers {
    let maps: Api<ConfigMap> = Api::namespaced(space.client.clone(), CSI_NS);
    let Some(map) = maps.get_opt(SERVERS_CONFIG_MAP).await.unwrap() else {
        return CurrentServers::default();
    };
    let text = &map.data.as_ref().unwrap()[SERVERS_KEY];
    serde_json::from_str(text).unwrap()
}

/// The servers file as the worker's node plugin sees it (its ConfigMap volume, on the node).
async fn plugin_file(space: &Space) -> Option<CurrentServers> {
    let pods: Api<Pod> = Api::namespaced(space.client.clone(), CSI_NS);
    let selector = ListParams::default().labels("app.kubernetes.io/name=glusterfs-csi-node");
    let list = pods.list(&selector).await.ok()?;
    let pod = list.items.into_iter().find(|p| {
        let spec = p.spec.as_ref();
        p.metadata.deletion_timestamp.is_none()
            && spec.and_then(|s| s.node_name.as_deref()) == Some("gp-worker")
    })?;
    let file = kubelet_dir()
        .join("pods")
        .join(pod.uid()?)
        .join("volumes/kubernetes.io~configmap/servers")
        .join(SERVERS_KEY);
    serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()
}

/// Sources of the node's FUSE mounts of `volume` (`server:/volume`).
fn mount_sources(volume: &str) -> HashSet<String> {
    crate::csi::fuse_mounts(volume)
        .into_iter()
        .map(|m| m.source)
        .collect()
}

async fn evacuate(node: &str) {
    let (ok, out) = operator_command("evacuate", &["--node", node, "--apply"]).await;
    println!("{out}");
    assert!(ok, "evacuate {node}: {out}");
}

/// A CSI PV and a `glusterfs` PV, their bricks moved off the CSI PV's first server to a node
/// neither lists: the ConfigMap names the CSI volume's servers now (not the `glusterfs` one's),
/// the Endpoints list the other volume's, and new pods mount both, the CSI stage from the first
/// of its servers now. Moved back, the CSI volume drops out of the ConfigMap.
#[tokio::test]
async fn a_moved_volume_is_mounted_from_its_servers_now() {
    let _stable = PLUGIN.read().await;
    let spare = spare();
    let space = Space::deployed("follow").await;
    let tree_class = space
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    space.claim("csi", CSI_CLASS, "1Gi", "ReadWriteMany").await;
    space
        .claim("tree", &tree_class, "1Gi", "ReadWriteMany")
        .await;
    let (csi_pv, tree_pv) = (space.bound_pv("csi").await, space.bound_pv("tree").await);
    let (csi_vol, tree_vol) = (crate::csi::volume_of(&csi_pv), glusterfs_path(&tree_pv));
    let listed = listed_servers(&csi_pv);
    let victim = nodes()
        .iter()
        .find(|n| n.storage_address.to_string() == listed[0])
        .expect("the CSI PV's first server is a node of the pool");
    let tree_endpoints = tree_pv.spec.as_ref().unwrap().glusterfs.as_ref().unwrap();
    let tree_endpoints = tree_endpoints.endpoints.clone();
    let before: HashSet<String> = endpoint_ips(&space.endpoints(&tree_endpoints).await.unwrap())
        .into_iter()
        .collect();

    // The spare joins the pool and the operator's topology; the victim's bricks move to it.
    let spare_ip = spare.storage_address.to_string();
    gluster_cli(&["peer", "probe", &spare_ip]).await;
    eventually(Duration::from_secs(60), "the spare connected", || async {
        (connected_peers().await == nodes().len()).then_some(())
    })
    .await;
    let topology = LocalTopology::with(&spare);
    topology_checks().await;
    evacuate(&victim.name).await;
    let csi_now = brick_hosts(&csi_vol).await;
    let tree_now: HashSet<String> = brick_hosts(&tree_vol).await.into_iter().collect();
    let csi_set: HashSet<String> = csi_now.iter().cloned().collect();
    for hosts in [&csi_set, &tree_now] {
        assert!(hosts.contains(&spare_ip), "{hosts:?}");
        assert!(!hosts.contains(&listed[0]), "{hosts:?}");
    }

    eventually(
        FOLLOWS,
        "the ConfigMap naming the CSI volume's servers now",
        || async {
            let current = published(&space).await;
            assert!(!current.volumes.contains_key(&tree_vol), "{current:?}");
            (current.volumes.get(&csi_vol) == Some(&csi_now)).then_some(())
        },
    )
    .await;
    eventually(
        FOLLOWS,
        "the Endpoints listing the volume's servers now",
        || async {
            let ep = space.endpoints(&tree_endpoints).await?;
            let ips: HashSet<String> = endpoint_ips(&ep).into_iter().collect();
            (ips == tree_now).then_some(())
        },
    )
    .await;
    // The kubelet brings the ConfigMap to the node (its sync period) before the stage reads it.
    eventually(
        Duration::from_secs(180),
        "the node plugin's file naming the CSI volume's servers now",
        || async {
            let file = plugin_file(&space).await?;
            (file.volumes.get(&csi_vol) == Some(&csi_now)).then_some(())
        },
    )
    .await;

    // Nothing staged the CSI volume on the worker before: this stage reads the file.
    for claim in ["csi", "tree"] {
        let reader = format!("{claim}-reader");
        space.pod(&reader, claim, json!({})).await;
        space.running(&reader, None).await;
        let read = space
            .exec_ok(&reader, "echo moved >/data/f && cat /data/f")
            .await;
        assert_eq!(read.trim(), "moved", "{reader}");
    }
    let primary = format!("{}:/{csi_vol}", csi_now[0]);
    assert_ne!(csi_now[0], listed[0]);
    assert_eq!(mount_sources(&csi_vol), HashSet::from([primary]));

    // Moved back onto the servers its PV lists: the CSI volume drops out, the Endpoints follow.
    for reader in ["csi-reader", "tree-reader"] {
        space.delete_pod(reader).await;
    }
    evacuate(&spare.name).await;
    eventually(FOLLOWS, "the CSI volume out of the ConfigMap", || async {
        let current = published(&space).await;
        (!current.volumes.contains_key(&csi_vol)).then_some(())
    })
    .await;
    eventually(FOLLOWS, "the Endpoints back on the first nodes", || async {
        let ep = space.endpoints(&tree_endpoints).await?;
        let ips: HashSet<String> = endpoint_ips(&ep).into_iter().collect();
        (ips == before).then_some(())
    })
    .await;

    // The volumes go with their claims (their bricks all on the provisioner's nodes again); the
    // spare leaves the pool.
    space
        .delete_all(&[csi_pv.name_any(), tree_pv.name_any()])
        .await;
    drop(topology);
    gluster_cli(&["peer", "detach", &spare_ip]).await;
    eventually(Duration::from_secs(60), "the spare detached", || async {
        (connected_peers().await + 1 == nodes().len()).then_some(())
    })
    .await;
}
