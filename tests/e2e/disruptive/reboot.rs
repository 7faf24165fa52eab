//! A node restarted as after a reboot: its gluster processes end and its image bricks are
//! unmounted; then it mounts what its /etc/fstab lists and starts glusterd. The bricks of
//! volumes of either size limit come back, and what pods wrote meanwhile reaches them.

use glusterfs_provisioner::gluster::xml::parse_volume_status;
use kube::ResourceExt;
use serde_json::json;

use super::GlusterNode;
use crate::scenario::*;
use crate::size_limits::on_nodes;
use crate::support::{eventually, ssh};

/// Whether `volume`'s brick on `node` runs, as glusterd reports it.
pub(crate) async fn brick_online(volume: &str, node: &glusterfs_provisioner::config::Node) -> bool {
    let status = gluster_cli(&["volume", "status", volume, "--xml"]).await;
    parse_volume_status(&status).is_ok_and(|processes| {
        processes.iter().any(|p| {
            p.hostname == node.storage_address.to_string() && p.brick().is_some() && p.status == 1
        })
    })
}

#[tokio::test]
async fn a_rebooted_node_mounts_its_image_bricks_and_serves_them_again() {
    let space = Space::deployed("reboot").await;
    let mut pvs = Vec::new();
    for limit in ["image", "quota"] {
        let class = space.class(json!({"sizeLimit": limit}), "Delete").await;
        space.claim(limit, &class, "1Gi", "ReadWriteOnce").await;
    }
    for limit in ["image", "quota"] {
        pvs.push(space.bound_pv(limit).await);
        space.pod(limit, limit, json!({})).await;
    }
    for limit in ["image", "quota"] {
        space.running(limit, None).await;
        space.exec_ok(limit, "echo before >/data/before").await;
    }
    // Replica 3 on three nodes: the last node holds a brick of each.
    let victim = &nodes()[2];
    let node = GlusterNode::new(&victim.name);
    node.shut_down();
    for limit in ["image", "quota"] {
        space.exec_ok(limit, "echo during >/data/during").await;
    }
    node.boot();

    let ssh = ssh();
    for pv in &pvs {
        let volume = glusterfs_path(pv);
        eventually(
            BIND_WAIT,
            &format!("brick of {volume} on {} running", victim.name),
            || async { brick_online(&volume, victim).await.then_some(()) },
        )
        .await;
        let (_, brick) = pv_bricks(pv)
            .into_iter()
            .find(|(n, _)| *n == victim.name)
            .unwrap();
        // Self-heal brings the file written while the node was down to its brick.
        eventually(BIND_WAIT, &format!("{brick} healed"), || async {
            let args = [format!("{brick}/during"), format!("{brick}/before")];
            let out = ssh.run_ok(&victim.ssh_address, "cat", &args).await.ok()?;
            (out == "during\nbefore\n").then_some(())
        })
        .await;
    }
    // The image brick is its own file system again, mounted from the node's fstab.
    let image = on_nodes(&pvs[0]).await;
    assert!(
        image.iter().all(|has| has.contains(&"mounted")),
        "image bricks after the reboot: {image:?}"
    );
    for limit in ["image", "quota"] {
        space.exec_ok(limit, "echo after >/data/after").await;
    }
    let names: Vec<String> = pvs.iter().map(|pv| pv.name_any()).collect();
    space.delete_all(&names).await;
}
