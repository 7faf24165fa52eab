//! Phase 8: a clone of a claim holding 1 GiB in 10,000 files, from the clone's creation to
//! Bound, against `cp -a` between two raw gluster mounts on one node in the same run: what a
//! clone costs beyond gluster's own speed.

use super::*;

const FILES: usize = 10_000;
/// 1 GiB over the files.
const FILE_BYTES: usize = (1 << 30) / FILES;

/// `FILES` files of `FILE_BYTES` in 100 directories under `dir`.
fn fill(dir: &std::path::Path) {
    let block: Vec<u8> = (0..FILE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    for d in 0..100 {
        let sub = dir.join(format!("d{d}"));
        std::fs::create_dir(&sub).unwrap();
        for f in 0..FILES / 100 {
            std::fs::write(sub.join(format!("f{f}")), &block).unwrap();
        }
    }
}

/// A claim of the burst's class, a clone of `source` when given; seconds to Bound.
async fn claim(
    burst: &Burst,
    name: &str,
    size: &str,
    source: Option<&str>,
) -> (PersistentVolumeClaim, f64) {
    let mut spec = json!({"storageClassName": burst.class, "accessModes": ["ReadWriteMany"],
                          "resources": {"requests": {"storage": size}}});
    if let Some(source) = source {
        spec["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": source});
    }
    let asked = Instant::now();
    let pvc = from_json(json!({"metadata": {"name": name}, "spec": spec}));
    let pvc = burst
        .claims
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    let bound = eventually(TIMEOUT, &format!("claim {name} Bound"), || async {
        burst.bound.lock().unwrap().get(name).copied()
    })
    .await;
    (pvc, secs(bound - asked))
}

pub(crate) async fn clone(
    client: &Client,
    cli: &Cli,
    cluster: &Cluster,
    name: &str,
) -> (Vec<Row>, Value) {
    log("8. a clone of 1 GiB in 10,000 files, against cp -a between raw mounts on one node");
    let burst = Burst::new(client, name, "image").await;
    let (mut provisioner, _, _) = start_provisioner(name, &burst.class, &[]).await;
    let (source, _) = claim(&burst, "clone-source", "2Gi", None).await;
    let source_volume = volume_of(&burst, &source).await;
    let mount = FuseMount::of(cluster, &source_volume).await;
    let dir = mount.path().to_path_buf();
    tokio::task::spawn_blocking(move || fill(&dir))
        .await
        .unwrap();
    mount.unmount().await;

    let (copy, clone_secs) = claim(&burst, "clone-copy", "2Gi", Some("clone-source")).await;
    log(format!("   clone Bound after {clone_secs:.1} s"));

    let raw = plain_volume(cli, cluster).await;
    let node = &cluster.nodes[0];
    let server = node.storage_address;
    let script = format!(
        "set -e; s=$(mktemp -d); d=$(mktemp -d)\n\
         mount -t glusterfs -o ro {server}:/{source_volume} $s; mount -t glusterfs {server}:/{raw} $d\n\
         cp -a $s/. $d/\n\
         umount $s $d; rmdir $s $d\n"
    );
    let started = Instant::now();
    cli.run(&node.ssh_address, &script).await;
    let cp_secs = secs(started.elapsed());
    log(format!("   cp -a between raw mounts: {cp_secs:.1} s"));
    let drop_raw = format!("{GLUSTER_FN}g volume stop {raw}\ng volume delete {raw}\n");
    cli.run(&node.ssh_address, &drop_raw).await;
    for n in &cluster.nodes {
        let root = n.brick_roots[0].path.display();
        cli.run(&n.ssh_address, &format!("rm -rf {root}/{raw}\n"))
            .await;
    }
    burst.delete(&[copy, source]).await;
    provisioner.stop().await;
    let rows = vec![
        row(
            "clone of 1 GiB, 10,000 files: Bound after (s)",
            format!("{clone_secs:.1}, {:.2}x cp -a", clone_secs / cp_secs),
            String::new(),
        ),
        row(
            "cp -a between two raw gluster mounts on one node (s)",
            format!("{cp_secs:.1}"),
            String::new(),
        ),
    ];
    (
        rows,
        json!({"clone": {"bound_seconds": clone_secs, "cp_seconds": cp_secs,
                            "files": FILES, "bytes": FILES * FILE_BYTES}}),
    )
}
