//! Proof that the environment is real: the control plane binds and releases PVs, the gluster
//! nodes form one pool over SSH, and a replica 3 volume stores data on all three nodes.

use std::time::Duration;

use glusterfs_provisioner::gluster::xml;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::support::{admin_client, env, eventually, local, ssh, unique};

const WAIT: Duration = Duration::from_secs(60);

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

async fn pvc_phase(api: &Api<PersistentVolumeClaim>, name: &str) -> Option<String> {
    api.get_opt(name).await.unwrap()?.status?.phase
}

async fn pv_phase(api: &Api<PersistentVolume>, name: &str) -> Option<String> {
    api.get_opt(name).await.unwrap()?.status?.phase
}

#[tokio::test]
async fn prebound_pv_binds_and_is_released_when_its_claim_goes() {
    let client = admin_client().await;
    let ns = unique("smoke");
    let class = unique("smoke-class");
    let pv_name = unique("smoke-pv");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let classes: Api<StorageClass> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();

    namespaces
        .create(&pp, &from_json(json!({"metadata": {"name": ns}})))
        .await
        .unwrap();
    // A provisioner nobody serves: neither ours nor the in-tree plugin may answer it.
    classes
        .create(
            &pp,
            &from_json(json!({
                "metadata": {"name": class},
                "provisioner": "example.com/nobody",
                "reclaimPolicy": "Delete",
            })),
        )
        .await
        .unwrap();
    let claim = |name: &str| -> PersistentVolumeClaim {
        from_json(json!({
            "metadata": {"name": name},
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }))
    };
    let pvc = pvcs.create(&pp, &claim("data")).await.unwrap();
    pvs.create(
        &pp,
        &from_json(json!({
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                // Retain: a Delete PV with a glusterfs source and no provisioned-by annotation is
                // claimed by the in-tree glusterfs deleter of this controller-manager.
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": class,
                "glusterfs": {"endpoints": "glusterfs-cluster", "path": "vol_smoke"},
                "claimRef": {"namespace": ns, "name": "data", "uid": pvc.metadata.uid},
            },
        })),
    )
    .await
    .unwrap();

    eventually(WAIT, "PVC Bound", || async {
        (pvc_phase(&pvcs, "data").await.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    assert_eq!(
        pvcs.get("data")
            .await
            .unwrap()
            .spec
            .unwrap()
            .volume_name
            .as_deref(),
        Some(pv_name.as_str())
    );

    // A claim with no PV is handed to its external provisioner, as ours will be.
    pvcs.create(&pp, &claim("waiting")).await.unwrap();
    eventually(WAIT, "storage-provisioner annotation", || async {
        let pvc = pvcs.get("waiting").await.unwrap();
        let annotations = pvc.metadata.annotations.unwrap_or_default();
        (annotations
            .get("volume.beta.kubernetes.io/storage-provisioner")
            .map(String::as_str)
            == Some("example.com/nobody"))
        .then_some(())
    })
    .await;

    pvcs.delete("data", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "PV Released", || async {
        (pv_phase(&pvs, &pv_name).await.as_deref() == Some("Released")).then_some(())
    })
    .await;
    eventually(WAIT, "PVC gone", || async {
        pvcs.get_opt("data").await.unwrap().is_none().then_some(())
    })
    .await;

    pvs.delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
    classes
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn every_node_sees_the_other_two_peers_over_ssh() {
    let ssh = ssh();
    let nodes = &env().topology.clusters[0].nodes;
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        let out = ssh
            .run_ok(
                &node.ssh_address,
                "gluster",
                &["peer".into(), "status".into(), "--xml".into()],
            )
            .await
            .unwrap();
        let peers = xml::parse_peer_status(&out).unwrap();
        let mut seen: Vec<String> = peers
            .iter()
            .filter(|p| p.is_connected())
            .map(|p| p.hostname.clone())
            .collect();
        let mut others: Vec<String> = nodes
            .iter()
            .filter(|n| n.name != node.name)
            .map(|n| n.storage_address.to_string())
            .collect();
        seen.sort();
        others.sort();
        assert_eq!(seen, others, "connected peers of {}", node.name);
    }
}

#[tokio::test]
async fn replica_3_volume_stores_a_file_on_all_three_nodes() {
    let ssh = ssh();
    let nodes = &env().topology.clusters[0].nodes;
    let volume = unique("smoke").replace('-', "_");
    let first = nodes[0].ssh_address.as_str();
    let brick_dir = |n: &glusterfs_provisioner::config::Node| {
        format!("{}/{volume}", n.brick_roots[0].path.display())
    };
    let gluster = |args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--mode=script".into(), "--xml".into()]);
        let ssh = &ssh;
        async move {
            let out = ssh.run_ok(first, "gluster", &args).await.unwrap();
            xml::parse_status(&args.join(" "), &out).unwrap();
        }
    };

    for node in nodes {
        ssh.run_ok(&node.ssh_address, "mkdir", &["-p".into(), brick_dir(node)])
            .await
            .unwrap();
    }
    let mut create = vec!["volume", "create", &volume, "replica", "3"];
    let bricks: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:{}/brick", n.storage_address, brick_dir(n)))
        .collect();
    create.extend(bricks.iter().map(String::as_str));
    gluster(&create).await;
    gluster(&["volume", "start", &volume]).await;

    let mountpoint = tempfile::tempdir().unwrap();
    let mp = mountpoint.path().to_str().unwrap();
    let backups = format!(
        "backup-volfile-servers={}:{}",
        nodes[1].storage_address, nodes[2].storage_address
    );
    let source = format!("{}:/{volume}", nodes[0].storage_address);
    local("mount", &["-t", "glusterfs", "-o", &backups, &source, mp]).await;
    let content = format!("written through FUSE into {volume}\n");
    std::fs::write(mountpoint.path().join("hello.txt"), &content).unwrap();
    local("umount", &[mp]).await;

    for node in nodes {
        let path = format!("{}/brick/hello.txt", brick_dir(node));
        let on_brick = ssh.run_ok(&node.ssh_address, "cat", &[path]).await.unwrap();
        assert_eq!(on_brick, content, "brick on {}", node.name);
    }

    gluster(&["volume", "stop", &volume]).await;
    gluster(&["volume", "delete", &volume]).await;
    for node in nodes {
        ssh.run_ok(&node.ssh_address, "rm", &["-rf".into(), brick_dir(node)])
            .await
            .unwrap();
    }
    let out = ssh
        .run_ok(
            first,
            "gluster",
            &["volume".into(), "list".into(), "--xml".into()],
        )
        .await
        .unwrap();
    assert!(
        !out.contains(&format!("<volume>{volume}</volume>")),
        "volume still listed: {out}"
    );
}

#[tokio::test]
async fn remote_arguments_reach_the_program_literally() {
    let marker = std::env::temp_dir().join(unique("quoting-escape"));
    let hostile = [
        "a;b".to_string(),
        format!("$(touch {})", marker.display()),
        format!("`touch {}`", marker.display()),
        "it's".into(),
        "\"double\"".into(),
        "two  spaces".into(),
        "new\nline".into(),
        "*".into(),
        "$HOME".into(),
        "back\\slash".into(),
        "&& true |".into(),
        "".into(),
    ];
    let mut args = vec!["%s\\0".to_string()];
    args.extend(hostile.iter().cloned());
    let node = &env().topology.clusters[0].nodes[0];
    let out = ssh()
        .run(&node.ssh_address, "printf", &args)
        .await
        .expect("printf over SSH");
    assert!(out.success, "{out:?}");
    let received: Vec<&str> = out.stdout.split('\0').collect();
    // printf's output ends with a separator: one empty piece after the last argument.
    assert_eq!(
        &received[..received.len() - 1],
        hostile.each_ref().map(String::as_str)
    );
    assert!(!marker.exists(), "a command substitution ran");
}
