//! Each way of keeping a volume to its size, seen from pods on the kubelet: a filled claim fails
//! its writer only, grows online with `df` showing it, and leaves nothing on the nodes once
//! deleted. The environment's first brick root keeps sizes with image bricks, its second with
//! gluster's quota.

use kube::ResourceExt;
use serde_json::json;

use crate::scenario::*;
use crate::support::{eventually, ssh};

/// Bytes `df` shows as the size of /data in the pod.
pub(crate) async fn df_in_pod(space: &Space, pod: &str) -> u64 {
    let out = space.exec_ok(pod, "stat -f -c '%b %S' /data").await;
    let (blocks, size) = out.trim().split_once(' ').unwrap();
    blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap()
}

/// What each brick's node has of the volume: `mounted` (its image on the volume directory),
/// `listed` (in the node's fstab), `image` (the file), `dir` (the volume directory).
pub(crate) async fn on_nodes(
    pv: &k8s_openapi::api::core::v1::PersistentVolume,
) -> Vec<Vec<&'static str>> {
    let ssh = ssh();
    let mut found = Vec::new();
    for (node, brick) in pv_bricks(pv) {
        let dir = brick.trim_end_matches("/brick").to_string();
        let script = "d=$1; mountpoint -q $d && echo mounted; grep -q \"^$d.img $d \" /etc/fstab && \
                      echo listed; [ -e $d.img ] && echo image; [ -d $d ] && echo dir; true";
        let args = ["-c", script, "check", &dir].map(String::from);
        let out = ssh
            .run_ok(&node_by_name(&node).ssh_address, "sh", &args)
            .await
            .unwrap();
        let has = ["mounted", "listed", "image", "dir"];
        found.push(has.into_iter().filter(|h| out.contains(h)).collect());
    }
    found
}

/// `image`, `quota` or `strict-quota`: two claims of a class with that `sizeLimit`, each with a
/// pod. One pod writes far past its 1Gi; the other goes on writing. Then the claim grows to
/// 2Gi while mounted, and the claims are deleted.
async fn keeps_a_claim_to_its_size(size_limit: &str) {
    let space = Space::deployed(&format!("limit-{size_limit}")).await;
    let class = space
        .class_with(
            json!({"sizeLimit": size_limit}),
            "Delete",
            json!({"allowVolumeExpansion": true}),
        )
        .await;
    space.claim("full", &class, "1Gi", "ReadWriteOnce").await;
    space
        .claim("neighbour", &class, "1Gi", "ReadWriteOnce")
        .await;
    let pv = space.bound_pv("full").await;
    let neighbour_pv = space.bound_pv("neighbour").await;
    let volume = glusterfs_path(&pv);
    let image = size_limit == "image";
    let expected: &[&str] = if image {
        &["mounted", "listed", "image", "dir"]
    } else {
        &["dir"]
    };
    assert!(
        on_nodes(&pv).await.iter().all(|has| has == expected),
        "bricks of {volume} on the nodes: {:?}, expected {expected:?}",
        on_nodes(&pv).await
    );
    let info = gluster_cli(&["volume", "info", &volume, "--xml"]).await;
    let info = glusterfs_provisioner::gluster::xml::parse_volume_info(&info).unwrap();
    assert_eq!(
        info[0].option("features.quota") == Some("on"),
        !image,
        "quota on {volume} only with sizeLimit {size_limit}"
    );

    space.pod("filler", "full", json!({})).await;
    space.pod("neighbour", "neighbour", json!({})).await;
    space.running("filler", None).await;
    space.running("neighbour", None).await;
    assert_eq!(
        df_in_pod(&space, "filler").await,
        1 << 30,
        "df shows the claim's size"
    );

    // 32 MiB at a time, up to 2.5 GiB: past 1 GiB a second apart, as gluster's quota at its
    // default timeouts re-reads usage only every 60 s below 80% of the limit, 5 s above.
    let (stopped, out) = space
        .exec(
            "filler",
            "for i in $(seq 80); do \
               dd if=/dev/zero of=/data/fill$i bs=1M count=32 conv=fsync || break; \
               [ $i -le 32 ] || sleep 1; \
             done; echo written $(cat /data/fill* | wc -c) failed at $i; [ $i -lt 80 ]",
        )
        .await;
    assert!(stopped, "writing 2.5 GiB into 1 GiB must fail: {out}");
    // Replicas fill at slightly different points; when one refuses the replication's own
    // bookkeeping (a fast writer can outrun gluster's 1% reserve), the writer gets EIO instead.
    // The file whose write failed may then differ on each replica (each brick stopped at its
    // own point and blames the others: a split-brain of that one file, README "Sizes");
    // everything written before it is whole and reads back.
    let eio = image && out.contains("Input/output error");
    assert!(
        out.contains("No space left on device") || out.contains("Disk quota exceeded") || eio,
        "ENOSPC or EDQUOT in the pod: {out}"
    );
    if eio {
        println!("sizeLimit image: the writer got EIO as the replicas filled");
        let summary = gluster_cli(&["volume", "heal", &volume, "info", "summary", "--xml"]).await;
        let bricks = glusterfs_provisioner::gluster::xml::parse_heal_summary(&summary).unwrap();
        let entries: Vec<_> = bricks.iter().map(|b| (b.pending, b.split_brain)).collect();
        assert!(
            entries
                .iter()
                .all(|(p, s)| p.unwrap_or(u64::MAX) + s.unwrap_or(u64::MAX) <= 1),
            "{volume}: at most the failed file to heal after EIO: {entries:?}"
        );
        let failed: u32 = out
            .split("failed at ")
            .nth(1)
            .and_then(|w| w.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no failed write: {out}"));
        let check = format!(
            "for i in $(seq {}); do cat /data/fill$i >/dev/null && \
               [ $(stat -c %s /data/fill$i) -eq 33554432 ] || echo fill$i; done",
            failed - 1
        );
        let damaged = space.exec_ok("filler", &check).await;
        assert_eq!(damaged.trim(), "", "files written before the failed one");
    }
    let written: u64 = out
        .split("written ")
        .nth(1)
        .and_then(|w| w.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no size written: {out}"));
    println!(
        "sizeLimit {size_limit}: the writer stopped at {} MiB of a 1024 MiB claim",
        written >> 20
    );
    if size_limit != "quota" {
        assert!(written <= 1 << 30, "no overshoot with {size_limit}: {out}");
    }
    // The neighbour is not harmed.
    let out = space
        .exec_ok(
            "neighbour",
            "dd if=/dev/zero of=/data/mine bs=1M count=200 conv=fsync 2>&1 && stat -c %s /data/mine",
        )
        .await;
    assert!(out.trim().ends_with(&(200u64 << 20).to_string()), "{out}");

    // Room again once the file is gone (a brick's free-space check runs every few seconds).
    space.exec_ok("filler", "rm /data/fill*").await;
    eventually(BIND_WAIT, "the filler writes again", || async {
        let (ok, _) = space
            .exec("filler", "echo again >/data/after && cat /data/after")
            .await;
        ok.then_some(())
    })
    .await;

    space.grow_claim("full", "2Gi").await;
    let grown = eventually(BIND_WAIT, "df in the pod shows 2Gi", || async {
        let size = df_in_pod(&space, "filler").await;
        (size > 1 << 30).then_some(size)
    })
    .await;
    assert_eq!(grown, 2 << 30, "df shows the new size");
    let since = std::time::Instant::now();
    eventually(
        BIND_WAIT,
        "1400 MiB written into the grown claim",
        || async {
            let (ok, out) = space
                .exec(
                    "filler",
                    "dd if=/dev/zero of=/data/fill bs=1M count=1400 conv=fsync 2>&1",
                )
                .await;
            println!(
                "after growing, {:.1} s: {out}",
                since.elapsed().as_secs_f64()
            );
            ok.then_some(())
        },
    )
    .await;

    let pvs = [pv.name_any(), neighbour_pv.name_any()];
    space.delete_all(&pvs).await;
    for pv in [&pv, &neighbour_pv] {
        let left = on_nodes(pv).await;
        assert!(
            left.iter().all(Vec::is_empty),
            "left on the nodes of {}: {left:?}",
            glusterfs_path(pv)
        );
    }
}

#[tokio::test]
async fn image_bricks_keep_a_claim_to_its_size() {
    keeps_a_claim_to_its_size("image").await;
}

#[tokio::test]
async fn quota_keeps_a_claim_to_its_size() {
    keeps_a_claim_to_its_size("quota").await;
}

#[tokio::test]
async fn strict_quota_keeps_a_claim_to_its_size() {
    keeps_a_claim_to_its_size("strict-quota").await;
}
