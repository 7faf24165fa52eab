//! A pool that outlives its first machines: three new nodes join (probed, added to the topology
//! file the provisioner mounts, the first three marked draining), the first three are evacuated
//! and retired, and volumes made on the first three still mount. Needs six gluster nodes of
//! which three are spares (`GP_GLUSTER_NODES=6 GP_GLUSTER_SPARES=3 e2e/env up`): `e2e/test` runs
//! it alone, in an environment of its own, as it retires the nodes the other tests use.

use std::collections::HashSet;
use std::time::Duration;

use glusterfs_provisioner::config::{Node, Topology};
use glusterfs_provisioner::gluster::xml::{parse_peer_status, parse_volume_info};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::csi::CSI_CLASS;
use crate::disruptive::GlusterNode;
use crate::pods::DEPLOYED_NS;
use crate::scenario::*;
use crate::support::{env, eventually};

const TOPOLOGY_CONFIGMAP: &str = "glusterfs-provisioner-topology";

/// Every node the environment started, spares too.
fn started() -> Vec<Node> {
    let all = Topology::load(&env().state_dir.join("topology-all.json")).unwrap();
    all.clusters[0].nodes.clone()
}

/// The topology document with `nodes` as its first cluster's nodes (each as its entry of
/// `template`'s shape, with `draining` ones marked so).
fn reshaped(doc: &Value, nodes: &[&Node], draining: &[&Node]) -> Value {
    let mut doc = doc.clone();
    let entries = doc["clusters"][0]["nodes"].as_array().unwrap().clone();
    let template = entries[0].clone();
    let list: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let mut e = template.clone();
            e["name"] = json!(n.name);
            e["ssh_address"] = json!(n.ssh_address);
            e["storage_address"] = json!(n.storage_address.to_string());
            e["zone"] = json!(n.zone);
            if draining.iter().any(|d| d.name == n.name) {
                e["state"] = json!("draining");
            } else if let Some(o) = e.as_object_mut() {
                o.remove("state");
            }
            e
        })
        .collect();
    doc["clusters"][0]["nodes"] = json!(list);
    doc
}

/// Gives the provisioner (its mounted ConfigMap) and the operator commands (the environment's
/// file) the same nodes, and waits until each provisioner replica says it took them.
async fn change_topology(nodes: &[&Node], draining: &[&Node]) {
    let client = crate::support::admin_client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), DEPLOYED_NS);
    let map = maps.get(TOPOLOGY_CONFIGMAP).await.unwrap();
    let deployed: Value =
        serde_json::from_str(&map.data.as_ref().unwrap()["topology.json"]).unwrap();
    let deployed = reshaped(&deployed, nodes, draining);
    let file = env().state_dir.join("topology.json");
    let local: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    std::fs::write(&file, reshaped(&local, nodes, draining).to_string()).unwrap();
    let since = k8s_openapi::jiff::Timestamp::now();
    let patch = json!({"data": {"topology.json": deployed.to_string()}});
    maps.patch(
        TOPOLOGY_CONFIGMAP,
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let events: Api<Event> = Api::namespaced(client.clone(), DEPLOYED_NS);
    // Each replica's kubelet updates its own mount of the ConfigMap: the leader may take it
    // after the other, so every replica must have said so.
    let replicas: HashSet<String> = crate::pods::provisioner_pods(&client)
        .await
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    eventually(
        Duration::from_secs(180),
        "every provisioner replica taking the new topology",
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            let told: HashSet<String> = list
                .items
                .into_iter()
                .filter(|e| {
                    let about = e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(TOPOLOGY_CONFIGMAP);
                    let new = e.event_time.as_ref().is_some_and(|t| t.0 >= since)
                        || e.deprecated_last_timestamp
                            .as_ref()
                            .is_some_and(|t| t.0 >= since);
                    let note = e.note.as_deref().unwrap_or_default();
                    about
                        && new
                        && e.reason.as_deref() == Some("TopologyReloaded")
                        && names.iter().all(|n| note.contains(n))
                })
                .filter_map(|e| e.reporting_instance)
                .collect();
            replicas.is_subset(&told).then_some(())
        },
    )
    .await;
}

/// The nodes holding the volume's bricks, asked of `cli`.
async fn brick_hosts(cli: &Node, volume: &str) -> Vec<String> {
    let out = gluster_cli_on(cli, &["volume", "info", volume, "--xml"]).await;
    let volumes = parse_volume_info(&out).unwrap();
    let v = volumes.iter().find(|v| v.name == volume).unwrap();
    v.bricks
        .bricks
        .iter()
        .map(|b| b.name.split(':').next().unwrap().to_string())
        .collect()
}

fn csi_volume(pv: &PersistentVolume) -> String {
    crate::csi::volume_of(pv)
}

/// Three nodes join, the first three leave: a claim made meanwhile goes to the new ones only,
/// every brick of the old ones moves, the pods writing keep writing and read back what they
/// wrote, and new pods still mount a CSI PV whose servers are all gone and a `glusterfs` PV
/// (its Endpoints repaired).
#[tokio::test]
async fn the_pool_moves_to_new_nodes_and_old_pvs_still_mount() {
    let all = started();
    let (old, new): (Vec<&Node>, Vec<&Node>) = all
        .iter()
        .partition(|n| nodes().iter().any(|p| p.name == n.name));
    assert!(
        old.len() == 3 && new.len() == 3,
        "this test needs GP_GLUSTER_NODES=6 GP_GLUSTER_SPARES=3 e2e/env up"
    );
    let space = Space::deployed("grow").await;
    space.claim("csi", CSI_CLASS, "1Gi", "ReadWriteMany").await;
    let tree_class = space
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    space
        .claim("tree", &tree_class, "1Gi", "ReadWriteMany")
        .await;
    let (csi_pv, tree_pv) = (space.bound_pv("csi").await, space.bound_pv("tree").await);
    let (csi_vol, tree_vol) = (csi_volume(&csi_pv), glusterfs_path(&tree_pv));
    let script = "i=0; while true; do i=$((i+1)); echo $i >>/data/log; sleep 0.2; done";
    let mut sums = Vec::new();
    for (pod, claim) in [("csi-writer", "csi"), ("tree-writer", "tree")] {
        space.pod_running(pod, claim, json!({}), script).await;
        space.running(pod, None).await;
        space
            .exec_ok(pod, "head -c 20000000 /dev/urandom >/data/blob && sync")
            .await;
        sums.push(space.exec_ok(pod, "md5sum </data/blob").await);
    }

    // The new nodes join the pool, then the topology, the old ones draining.
    for n in &new {
        gluster_cli_on(old[0], &["peer", "probe", &n.storage_address.to_string()]).await;
    }
    eventually(Duration::from_secs(60), "six connected peers", || async {
        let out = gluster_cli_on(old[0], &["peer", "status", "--xml"]).await;
        let peers = parse_peer_status(&out).ok()?;
        (peers.iter().filter(|p| p.is_connected()).count() == 5).then_some(())
    })
    .await;
    let everyone: Vec<&Node> = old.iter().chain(&new).copied().collect();
    change_topology(&everyone, &old).await;
    let table = topology_checks().await;
    for n in &old {
        let line = table
            .lines()
            .find(|l| l.contains(&n.name))
            .unwrap_or_default();
        assert!(line.contains("draining"), "{table}");
    }

    // The next claim's bricks: on the new nodes only, without a restart.
    space
        .claim("next", &tree_class, "1Gi", "ReadWriteOnce")
        .await;
    let next = space.bound_pv("next").await;
    let on: HashSet<String> = pv_bricks(&next).into_iter().map(|(n, _)| n).collect();
    let wanted: HashSet<String> = new.iter().map(|n| n.name.clone()).collect();
    assert_eq!(on, wanted, "the next claim's bricks");

    // Every brick of the old nodes moves; the old nodes leave the topology and the pool.
    for n in &old {
        let (ok, out) = operator_command("evacuate", &["--node", &n.name, "--apply"]).await;
        println!("{out}");
        assert!(ok, "evacuate {}: {out}", n.name);
    }
    let (ok, status) = operator_command("status", &[]).await;
    assert!(ok, "every volume whole:\n{status}");
    change_topology(&new, &[]).await;
    for n in &old {
        gluster_cli_on(new[0], &["peer", "detach", &n.storage_address.to_string()]).await;
    }
    let retired: Vec<GlusterNode> = old.iter().map(|n| GlusterNode::new(&n.name)).collect();
    for node in &retired {
        node.shut_down();
    }
    let new_addresses: HashSet<String> =
        new.iter().map(|n| n.storage_address.to_string()).collect();
    for volume in [&csi_vol, &tree_vol] {
        let hosts: HashSet<String> = brick_hosts(new[0], volume).await.into_iter().collect();
        assert_eq!(hosts, new_addresses, "{volume}");
    }

    // The writers kept writing and read back what they wrote; new pods mount both PVs.
    for ((pod, claim), sum) in [("csi-writer", "csi"), ("tree-writer", "tree")]
        .into_iter()
        .zip(&sums)
    {
        assert_eq!(
            &space.exec_ok(pod, "md5sum </data/blob").await,
            sum,
            "{pod}"
        );
        let reader = format!("{claim}-reader");
        space.pod(&reader, claim, json!({})).await;
        space.running(&reader, None).await;
        assert_eq!(
            &space.exec_ok(&reader, "md5sum </data/blob").await,
            sum,
            "{reader}"
        );
    }
    let endpoints = space.endpoints(&endpoints_name(&tree_pv)).await.unwrap();
    let listed: HashSet<String> = endpoint_ips(&endpoints).into_iter().collect();
    assert_eq!(listed, new_addresses, "the glusterfs PV's Endpoints");
    drop(retired);

    // And they go with their claims, from the new nodes.
    let namespaces: Api<Namespace> = Api::all(space.client.clone());
    namespaces
        .delete(&space.ns, &DeleteParams::default())
        .await
        .unwrap();
    for pv in [&csi_pv, &tree_pv, &next] {
        space.wait_pv_gone(&pv.name_any()).await;
    }
    let left = gluster_cli_on(new[0], &["volume", "list"]).await;
    for volume in [&csi_vol, &tree_vol] {
        assert!(
            !left.lines().any(|l| l == volume.as_str()),
            "{volume} left: {left}"
        );
    }
}
