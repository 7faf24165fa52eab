//! An arbiter class as OpenShift Container Storage's helpers write it for Heketi: the SSH
//! backend builds `replica 3 arbiter 1`, pods write on while a data node is down, and the volume
//! grows and stays an arbiter volume.

use glusterfs_provisioner::gluster::image::arbiter_image_bytes;
use glusterfs_provisioner::gluster::xml::{Volume, parse_volume_info};
use glusterfs_provisioner::k8s::objects::ANN_ARBITER;
use kube::ResourceExt;
use serde_json::json;

use super::GlusterNode;
use super::reboot::brick_online;
use crate::scenario::*;
use crate::size_limits::df_in_pod;
use crate::support::{eventually, ssh};

/// The volume, checked to be `1 x (2 + 1)` with its three bricks on three nodes; the nodes of
/// its data bricks, then of its arbiter.
async fn arbiter_volume(name: &str) -> (Volume, Vec<&'static glusterfs_provisioner::config::Node>) {
    let text = gluster_cli(&["volume", "info", name]).await;
    assert!(
        text.contains("Number of Bricks: 1 x (2 + 1) = 3"),
        "not an arbiter volume: {text}"
    );
    let xml = gluster_cli(&["volume", "info", name, "--xml"]).await;
    let volume = parse_volume_info(&xml).unwrap().remove(0);
    let node_of = |brick: &str| {
        let host = brick.split_once(':').unwrap().0;
        nodes()
            .iter()
            .find(|n| n.storage_address.to_string() == host)
            .unwrap()
    };
    let bricks = &volume.bricks.bricks;
    let arbiters: Vec<bool> = bricks.iter().map(|b| volume.is_arbiter(&b.name)).collect();
    assert_eq!(
        arbiters,
        [false, false, true],
        "the last brick is the arbiter"
    );
    let on: Vec<_> = bricks.iter().map(|b| node_of(&b.name)).collect();
    assert!(
        on[0].name != on[1].name && on[1].name != on[2].name && on[0].name != on[2].name,
        "three nodes: {:?}",
        on.iter().map(|n| &n.name).collect::<Vec<_>>()
    );
    (volume, on)
}

/// The size of the arbiter brick's image file on its node.
async fn arbiter_image_size(volume: &Volume, node: &glusterfs_provisioner::config::Node) -> u64 {
    let brick = volume.bricks.bricks[2].name.split_once(':').unwrap().1;
    let image = format!("{}.img", brick.trim_end_matches("/brick"));
    let args = ["-c".to_string(), "%s".into(), image];
    let out = ssh()
        .run_ok(&node.ssh_address, "stat", &args)
        .await
        .unwrap();
    out.trim().parse().unwrap()
}

#[tokio::test]
async fn an_arbiter_class_writes_through_a_data_node_outage_and_grows_as_an_arbiter_volume() {
    let space = Space::deployed("arbiter").await;
    let options = "user.heketi.arbiter true,user.heketi.average-file-size 64";
    let class = space
        .class_with(
            json!({"volumeoptions": options}),
            "Delete",
            json!({"allowVolumeExpansion": true}),
        )
        .await;
    space.claim("arb", &class, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("arb").await;
    assert_eq!(
        pv.annotations().get(ANN_ARBITER).map(String::as_str),
        Some("64")
    );
    let name = glusterfs_path(&pv);
    let (volume, on) = arbiter_volume(&name).await;
    assert_eq!(
        arbiter_image_size(&volume, on[2]).await,
        arbiter_image_bytes(1, 64)
    );
    space.pod("arb", "arb", json!({})).await;
    space.running("arb", None).await;
    space.exec_ok("arb", "echo before >/data/before").await;

    // A data node goes down: the other data brick and the arbiter keep quorum.
    let data_node = on[0];
    let node = GlusterNode::new(&data_node.name);
    node.shut_down();
    space
        .exec_ok("arb", "echo during >/data/during && cat /data/before")
        .await;
    node.boot();
    eventually(
        BIND_WAIT,
        &format!("brick of {name} on {} running", data_node.name),
        || async { brick_online(&name, data_node).await.then_some(()) },
    )
    .await;
    let brick = volume.bricks.bricks[0]
        .name
        .split_once(':')
        .unwrap()
        .1
        .to_string();
    eventually(BIND_WAIT, &format!("{brick} healed"), || async {
        let args = [format!("{brick}/during")];
        let out = ssh()
            .run_ok(&data_node.ssh_address, "cat", &args)
            .await
            .ok()?;
        (out == "during\n").then_some(())
    })
    .await;

    space.grow_claim("arb", "2Gi").await;
    let size = eventually(BIND_WAIT, "the pod sees 2 GiB", || async {
        let size = df_in_pod(&space, "arb").await;
        (size > 1 << 30).then_some(size)
    })
    .await;
    assert_eq!(size, 2 << 30);
    let (grown, _) = arbiter_volume(&name).await;
    assert_eq!(
        arbiter_image_size(&grown, on[2]).await,
        arbiter_image_bytes(2, 64)
    );
    space
        .exec_ok(
            "arb",
            "dd if=/dev/zero of=/data/big bs=1M count=1500 && cat /data/during",
        )
        .await;
    space.delete_all(&[pv.name_any()]).await;
}
