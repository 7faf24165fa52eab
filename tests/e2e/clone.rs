//! Clones: a claim whose `dataSource` names another claim gets a volume holding a copy of its
//! files, made on a gluster node, seen from pods on the kubelet; refused with a reason for a
//! source that is not the claim author's to copy; whole after a crash mid-copy.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::scenario::*;
use crate::support::{Provisioner, eventually, metrics, ssh};

/// A tree with what a copy must keep: contents, a hard link, a symlink, a file of the volume's
/// GID with mode 0640, a user xattr, an old timestamp.
const WRITE_TREE: &str = "set -e; cd /data; mkdir -p d/e; \
    dd if=/dev/urandom of=d/big bs=1M count=20 2>/dev/null; \
    echo hello >d/e/f; ln d/e/f d/hard; ln -s e/f d/link; \
    echo secret >d/group; chgrp $GID d/group; chmod 0640 d/group; \
    setfattr -n user.note -v kept d/e/f; touch -d '2020-01-02 03:04:05' d/e/f";

/// Every entry's name, type, size, mode, owner, group (the volume's GID as `GID`), mtime and
/// link count; the files' checksums; the user xattrs.
const LIST_TREE: &str = "cd /data/d && find . | sort | while read -r f; do \
    stat -c '%n %F %s %a %u %g %Y %h' \"$f\"; done; \
    find . -type f | sort | xargs md5sum; readlink link; getfattr -R -d -m '^user\\.' .";

fn gid(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> String {
    pv.annotations()["pv.beta.kubernetes.io/gid"].clone()
}

/// What [`LIST_TREE`] prints in `pod`, with the volume's GID written `GID`.
async fn tree(space: &Space, pod: &str, gid: &str) -> String {
    let out = space.exec_ok(pod, LIST_TREE).await;
    out.lines()
        .map(|l| {
            l.split(' ')
                .map(|w| if w == gid { "GID" } else { w })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn clone_of(class: &str, source: &str, size: &str) -> Value {
    json!({"storageClassName": class, "accessModes": ["ReadWriteOnce"],
           "resources": {"requests": {"storage": size}},
           "dataSource": {"kind": "PersistentVolumeClaim", "name": source}})
}

/// A source claim with the tree written by a pod; returns its listing.
async fn source_with_tree(space: &Space, class: &str) -> String {
    space.claim("source", class, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("source").await;
    space.pod("writer", "source", json!({})).await;
    space.running("writer", None).await;
    let gid = gid(&pv);
    space
        .exec_ok("writer", &WRITE_TREE.replace("$GID", &gid))
        .await;
    tree(space, "writer", &gid).await
}

#[tokio::test]
async fn a_clone_holds_its_sources_tree_and_outlives_it() {
    let space = Space::deployed("clone").await;
    let class = space.class(json!({}), "Delete").await;
    let before = source_with_tree(&space, &class).await;
    assert!(
        before.contains("user.note=\"kept\"")
            && before.contains("./group regular file 7 640 0 GID")
    );

    let clone = space
        .claim_with("clone", clone_of(&class, "source", "2Gi"))
        .await;
    let clone_pv = space.bound_pv("clone").await;
    let started = space.event(&clone, "CloneStarted").await;
    assert!(
        started.contains(&format!("{}/source", space.ns)),
        "{started}"
    );
    let finished = space.event(&clone, "CloneFinished").await;
    assert!(
        finished.starts_with("Copied 2") && finished.contains(" MiB "),
        "{finished}"
    );
    assert_ne!(gid(&clone_pv), gid(&space.bound_pv("source").await));
    space.pod("reader", "clone", json!({})).await;
    space.running("reader", None).await;
    assert_eq!(tree(&space, "reader", &gid(&clone_pv)).await, before);

    // The source goes; the clone keeps everything, and stays writable.
    let source_pv = space.bound_pv("source").await.name_any();
    space.delete_pod("writer").await;
    space.delete_claim("source").await;
    space.wait_pv_gone(&source_pv).await;
    assert_eq!(tree(&space, "reader", &gid(&clone_pv)).await, before);
    space.exec_ok("reader", "echo more >/data/d/more").await;
    space.delete_all(&[clone_pv.name_any()]).await;
}

/// Claims whose source is not theirs to copy, or cannot be: each refused by an event naming
/// why, with nothing made.
#[tokio::test]
async fn clones_of_what_cannot_be_copied_are_refused_with_the_reason() {
    let space = Space::deployed("clone-refused").await;
    let other = Space::deployed("clone-other").await;
    let class = space.class(json!({}), "Delete").await;
    space.claim("big", &class, "2Gi", "ReadWriteOnce").await;
    other.claim("theirs", &class, "1Gi", "ReadWriteOnce").await;
    // Pending for good: its class names a provisioner that does not run.
    let none = json!({"provisioner": "example.com/none"});
    let stuck = space.class_with(json!({}), "Delete", none).await;
    space.claim("pending", &stuck, "1Gi", "ReadWriteOnce").await;
    // Bound to a PV made by hand, with a path like a volume of ours.
    let static_pv = format!("{}-static", space.ns);
    let pv = from_json(json!({
        "metadata": {"name": static_pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "glusterfs": {"endpoints": "ep", "path": "vol_00000000000000000000000000000000"}},
    }));
    space.pvs.create(&Default::default(), &pv).await.unwrap();
    let by_hand = json!({"storageClassName": "", "accessModes": ["ReadWriteOnce"],
                         "volumeName": static_pv, "resources": {"requests": {"storage": "1Gi"}}});
    space.claim_with("by-hand", by_hand).await;
    space.bound_pv("by-hand").await;
    let big_pv = space.bound_pv("big").await;

    let snapshot = json!({"storageClassName": class, "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
        "dataSource": {"kind": "VolumeSnapshot", "name": "s",
                       "apiGroup": "snapshot.storage.k8s.io"}});
    let cases = [
        (
            "other-namespace",
            clone_of(&class, "theirs", "1Gi"),
            "/theirs not found",
        ),
        (
            "pending-source",
            clone_of(&class, "pending", "1Gi"),
            "is Pending: only a Bound claim",
        ),
        (
            "too-small",
            clone_of(&class, "big", "1Gi"),
            "is 2Gi, larger than this claim's 1Gi",
        ),
        (
            "not-ours",
            clone_of(&class, "by-hand", "1Gi"),
            "not by this provisioner",
        ),
        (
            "snapshot",
            snapshot,
            "only a PersistentVolumeClaim can be cloned",
        ),
    ];
    for (name, spec, want) in &cases {
        let claim = space.claim_with(name, spec.clone()).await;
        let note = space.event(&claim, "ProvisioningFailed").await;
        assert!(note.contains(want), "{name}: {note}");
    }
    let volumes = gluster_volumes().await;
    for (name, _, _) in &cases {
        let claim: PersistentVolumeClaim = space.claims.get(name).await.unwrap();
        let suffix = claim.uid().unwrap().replace('-', "");
        assert!(
            !volumes.iter().any(|v| v.ends_with(&suffix)),
            "{name} got a volume"
        );
    }
    space
        .pvs
        .delete(&static_pv, &Default::default())
        .await
        .unwrap();
    space.delete_all(&[big_pv.name_any()]).await;
    let theirs = [other.bound_pv("theirs").await.name_any()];
    other.delete_all(&theirs).await;
}

/// The provisioner dies (abort, as `kill -9`) while the copy runs on the node. Restarted, it
/// copies anew into the same volume: one volume for the clone, whole, and nothing left.
#[tokio::test]
async fn a_crash_mid_copy_ends_with_one_whole_clone() {
    let crash = [("GLUSTERFS_PROVISIONER_CRASH_AT", "clone-copying")];
    let mut s = Scenario::with_env("clone-crash", &crash).await;
    let class = s.class(json!({}), "Delete").await;
    s.claim("source", &class, "1Gi", "ReadWriteOnce").await;
    let source_pv = s.bound_pv("source").await;
    s.pod("writer", "source", json!({})).await;
    s.running("writer", None).await;
    // Large enough that the copy runs past the first progress reading (2 s).
    let write = "cd /data && for i in $(seq 1 400); do dd if=/dev/urandom of=f$i bs=1M count=1 \
                 2>/dev/null; done; mkdir -p d/e; echo hello >d/e/f";
    s.exec_ok("writer", write).await;
    let before = tree_sums(&s, "writer").await;

    let clone = s
        .claim_with("clone", clone_of(&class, "source", "1Gi"))
        .await;
    s.provisioner.wait_exit(BIND_WAIT).await;
    let suffix = clone.uid().unwrap().replace('-', "");
    assert!(gluster_volumes().await.iter().any(|v| v.ends_with(&suffix)));
    assert!(
        s.pvs
            .get_opt(&format!("pvc-{}", clone.uid().unwrap()))
            .await
            .unwrap()
            .is_none(),
        "no PV for a half copy"
    );

    let port = 18098u16;
    s.provisioner =
        Provisioner::start_at(&s.provisioner.name, &[], &format!("127.0.0.1:{port}")).await;
    let clone_pv = s.bound_pv("clone").await;
    let copied: f64 = eventually(BIND_WAIT, "bytes copied counted", || async {
        let text = metrics(port).await;
        text.lines()
            .find(|l| l.starts_with("glusterfs_provisioner_clone_copied_bytes_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    })
    .await;
    assert!(copied >= 400.0 * 1024.0 * 1024.0, "{copied}");
    let volumes = gluster_volumes().await;
    assert_eq!(
        volumes.iter().filter(|v| v.ends_with(&suffix)).count(),
        1,
        "{volumes:?}"
    );
    s.pod("reader", "clone", json!({})).await;
    s.running("reader", None).await;
    assert_eq!(tree_sums(&s, "reader").await, before);
    let (ssh, args) = (ssh(), ["/proc/mounts".to_string()]);
    for node in nodes() {
        let mounts = ssh.run_ok(&node.ssh_address, "cat", &args).await.unwrap();
        assert!(
            !mounts.contains("glusterfs-clone"),
            "copy mounts left on {}",
            node.name
        );
    }
    let pvs = [source_pv.name_any(), clone_pv.name_any()];
    s.space.delete_all(&pvs).await;
}

/// Checksums of every file under /data.
async fn tree_sums(space: &Space, pod: &str) -> String {
    space
        .exec_ok(pod, "cd /data && find . -type f | sort | xargs md5sum")
        .await
}
