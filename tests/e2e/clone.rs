//! Clones: a claim whose `dataSource` names another claim gets a volume holding a copy of its
//! files, made on a gluster node, seen from pods on the kubelet; refused with a reason for a
//! source that is not the claim author's to copy; whole after a crash mid-copy.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::pods::DEPLOYED;
use crate::scenario::*;
use crate::support::{Provisioner, eventually, metrics, ssh, unique};

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
    // Bound to a PV marked as ours whose path names another namespace's claim's volume.
    let theirs_pv = other.bound_pv("theirs").await;
    let mislabeled_pv = format!("{}-mislabeled", space.ns);
    let pv = from_json(json!({
        "metadata": {"name": mislabeled_pv, "annotations": {
            "pv.kubernetes.io/provisioned-by": DEPLOYED,
            "gluster.org/cluster": annotations(&theirs_pv)["gluster.org/cluster"],
        }},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "glusterfs": {"endpoints": "ep", "path": glusterfs_path(&theirs_pv)}},
    }));
    space.pvs.create(&Default::default(), &pv).await.unwrap();
    let mislabeled = json!({"storageClassName": "", "accessModes": ["ReadWriteOnce"],
                            "volumeName": mislabeled_pv,
                            "resources": {"requests": {"storage": "1Gi"}}});
    space.claim_with("mislabeled", mislabeled).await;
    space.bound_pv("mislabeled").await;

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
            "someone-elses",
            clone_of(&class, "mislabeled", "1Gi"),
            "which was not made for that claim",
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
    for pv in [&static_pv, &mislabeled_pv] {
        space.pvs.delete(pv, &Default::default()).await.unwrap();
    }
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
    let dest = format!("vol_{suffix}");
    assert!(gluster_volumes().await.contains(&dest));
    // The crashed provisioner's copy runs on, on its node. Stopped (SIGSTOP), it stands for a
    // copy that would never end by itself: only the next attempt's ending it lets that one go on.
    let crashed = stop_copies(&dest).await;
    assert!(
        !crashed.is_empty(),
        "the crashed copy still runs on its node"
    );
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
    assert_eq!(copy_leftovers(&dest).await, Vec::<String>::new());
    let ssh = ssh();
    for node in nodes() {
        for pid in &crashed {
            let args = ["-0".to_string(), pid.clone()];
            let alive = ssh.run(&node.ssh_address, "kill", &args).await.unwrap();
            let alive = alive.success;
            assert!(
                !alive,
                "process {pid} of the crashed copy runs on {}",
                node.name
            );
        }
    }
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
    let pvs = [source_pv.name_any(), clone_pv.name_any()];
    s.space.delete_all(&pvs).await;
}

/// Checksums of every file under /data.
async fn tree_sums(space: &Space, pod: &str) -> String {
    space
        .exec_ok(pod, "cd /data && find . -type f | sort | xargs md5sum")
        .await
}

/// Finds every process of a copy into `dest` (its script, by its arguments) on each node, and
/// stops (SIGSTOP) their process groups; returns their PIDs.
async fn stop_copies(dest: &str) -> Vec<String> {
    // The script itself (`sh -c SCRIPT clone copy ...`), not a `setsid` waiting for it.
    const STOP: &str = r#"pids=$(pgrep -f "^sh -c .*[c]lone copy .*$1") || exit 0
for p in $pids; do g=$(ps -o pgid= -p "$p" | tr -d ' ') && kill -STOP "-$g"; done
echo $pids"#;
    let ssh = ssh();
    let mut pids = Vec::new();
    for node in nodes() {
        let args = ["-c", STOP, "stop", dest].map(String::from);
        let out = ssh.run_ok(&node.ssh_address, "sh", &args).await.unwrap();
        pids.extend(out.split_whitespace().map(String::from));
    }
    pids.sort();
    pids.dedup();
    pids
}

/// What a copy into `dest` left on any node: processes (its script, or a gluster client of
/// its mounts), mounts, its files under /run/glusterfs-clone, its logs.
async fn copy_leftovers(dest: &str) -> Vec<String> {
    const LOOK: &str = r#"pgrep -af "[c]lone copy .*$1" | cut -c1-80 | sed 's/^/process /'
pgrep -af "[/]run/glusterfs-clone/$1" | cut -c1-200 | sed 's/^/client /'
grep "/run/glusterfs-clone/$1" /proc/mounts | sed 's/^/mount /'
ls -d "/run/glusterfs-clone/$1" "/run/glusterfs-clone/$1".* /var/log/glusterfs/clone-"$1"* \
    2>/dev/null | sed 's/^/file /'
true"#;
    let ssh = ssh();
    let mut left = Vec::new();
    for node in nodes() {
        let args = ["-c", LOOK, "look", dest].map(String::from);
        let out = ssh.run_ok(&node.ssh_address, "sh", &args).await.unwrap();
        left.extend(out.lines().map(|l| format!("{}: {l}", node.name)));
    }
    left
}

/// A source claim of `class` holding `files` files of 64 KiB written by a pod (whose copy, file
/// by file through gluster's client on both sides, lasts a while); returns its PV and the
/// files' checksums.
async fn source_with_files(
    space: &Space,
    class: &str,
    files: u32,
) -> (k8s_openapi::api::core::v1::PersistentVolume, String) {
    space.claim("source", class, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("source").await;
    space.pod("writer", "source", json!({})).await;
    space.running("writer", None).await;
    let write = format!(
        "set -e; cd /data; head -c 65536 /dev/urandom >seed; i=0; \
         while [ $i -lt {files} ]; do cp seed f$i; echo $i >>f$i; i=$((i + 1)); done"
    );
    space.exec_ok("writer", &write).await;
    let sums = tree_sums(space, "writer").await;
    (pv, sums)
}

/// Copies run beside the claim queue: with every worker of a provisioner at `--workers 4`
/// asked for a clone (four clones, each copying files for a while), a plain claim of
/// another namespace is Bound as on an idle provisioner.
#[tokio::test]
async fn copies_leave_the_claim_queue_to_the_other_claims() {
    let s = Scenario::with_env("clone-queue", &[("WORKERS", "4")]).await;
    let class = s.class(json!({}), "Delete").await;
    let (source_pv, sums) = source_with_files(&s, &class, 2500).await;
    let mut clones = Vec::new();
    for i in 0..4 {
        let name = format!("clone-{i}");
        clones.push(s.claim_with(&name, clone_of(&class, "source", "1Gi")).await);
    }
    // Two copy at once (CLONE_COPIES' default), any two of the four.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(s.client.clone(), &s.ns);
    wait_event(&events, "a clone's copy started", |e| {
        e.reason.as_deref() == Some("CloneStarted")
            && e.reporting_controller.as_deref() == Some(s.provisioner_name.as_str())
    })
    .await;

    let other = Space::create(unique("clone-queue-other"), &s.provisioner_name).await;
    let plain_class = other.class(json!({}), "Delete").await;
    let asked = std::time::Instant::now();
    other
        .claim("plain", &plain_class, "1Gi", "ReadWriteOnce")
        .await;
    let plain_pv = other.bound_pv("plain").await;
    let took = asked.elapsed();
    let mut pending = 0;
    for clone in &clones {
        let clone = s.claims.get(&clone.name_any()).await.unwrap();
        let phase = clone.status.and_then(|st| st.phase);
        pending += usize::from(phase.as_deref() != Some("Bound"));
    }
    assert!(
        pending > 0,
        "the copies ended before the plain claim was Bound"
    );
    assert!(
        took < std::time::Duration::from_secs(60),
        "the plain claim took {took:?} beside {pending} copies"
    );

    let mut pvs = vec![source_pv.name_any()];
    for clone in &clones {
        pvs.push(s.bound_pv(&clone.name_any()).await.name_any());
    }
    s.pod("reader", "clone-3", json!({})).await;
    s.running("reader", None).await;
    assert_eq!(tree_sums(&s, "reader").await, sums);
    other.delete_all(&[plain_pv.name_any()]).await;
    s.space.delete_all(&pvs).await;
}

/// Holes stay holes: a 2 GiB sparse file holding 1 MiB of data is copied into a 1 GiB clone,
/// whole, and takes about 1 MiB there.
#[tokio::test]
async fn a_sparse_file_larger_than_the_clone_is_copied_as_holes() {
    let space = Scenario::new("clone-sparse").await;
    let class = space.class(json!({}), "Delete").await;
    space.claim("source", &class, "1Gi", "ReadWriteOnce").await;
    let source_pv = space.bound_pv("source").await;
    space.pod("writer", "source", json!({})).await;
    space.running("writer", None).await;
    let write = "set -e; cd /data; truncate -s 2G sparse; \
                 dd if=/dev/urandom of=sparse bs=1M count=1 seek=1536 conv=notrunc 2>/dev/null";
    space.exec_ok("writer", write).await;
    let look = "cd /data && md5sum sparse && stat -c '%s' sparse";
    let before = space.exec_ok("writer", look).await;

    space
        .claim_with("clone", clone_of(&class, "source", "1Gi"))
        .await;
    let clone_pv = space.bound_pv("clone").await;
    space.pod("reader", "clone", json!({})).await;
    space.running("reader", None).await;
    assert_eq!(space.exec_ok("reader", look).await, before);
    let kib = space
        .exec_ok("reader", "du -k /data/sparse | cut -f1")
        .await;
    let kib: u64 = kib.trim().parse().unwrap();
    assert!(kib < 8 << 10, "the clone's sparse file takes {kib} KiB");
    space
        .space
        .delete_all(&[source_pv.name_any(), clone_pv.name_any()])
        .await;
}

/// A clone claim deleted while its copy runs: the copy is ended on its node and its volume
/// removed; no copy process, mount, file, log or volume is left on any node.
#[tokio::test]
async fn a_clone_deleted_mid_copy_leaves_nothing_on_any_node() {
    let s = Scenario::new("clone-deleted").await;
    let class = s.class(json!({}), "Delete").await;
    let (source_pv, _) = source_with_files(&s, &class, 1500).await;
    let clone = s
        .claim_with("clone", clone_of(&class, "source", "1Gi"))
        .await;
    let dest = format!("vol_{}", uid_suffix(&clone));
    s.event(&clone, "CloneStarted").await;
    eventually(BIND_WAIT, "the copy running on its node", || async {
        copy_leftovers(&dest)
            .await
            .iter()
            .any(|l| l.contains(" process "))
            .then_some(())
    })
    .await;
    s.delete_claim("clone").await;
    eventually(BIND_WAIT, "the clone claim gone", || async {
        s.claims
            .get_opt("clone")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(copy_leftovers(&dest).await, Vec::<String>::new());
    assert!(!gluster_volumes().await.contains(&dest));
    let bricks = brick_dirs().await;
    assert!(!bricks.iter().any(|b| b.ends_with(&dest)), "{bricks:?}");
    s.space.delete_all(&[source_pv.name_any()]).await;
}

/// A leader stopped (SIGSTOP) between planning a clone and its copy wakes after its successor
/// bound the clone and a pod wrote to it: it copies nothing, and the pod's data stays.
#[tokio::test]
async fn a_leader_paused_before_its_copy_leaves_the_pods_data() {
    let pause = [("GLUSTERFS_PROVISIONER_PAUSE_AT", "before-clone-copy")];
    let mut s = Scenario::with_env("clone-paused", &pause).await;
    let class = s.class(json!({}), "Delete").await;
    s.claim("source", &class, "1Gi", "ReadWriteOnce").await;
    let source_pv = s.bound_pv("source").await;
    s.pod("writer", "source", json!({})).await;
    s.running("writer", None).await;
    s.exec_ok("writer", "echo source >/data/f").await;
    let standby = Provisioner::start(&s.provisioner.name).await;
    s.claim_with("clone", clone_of(&class, "source", "1Gi"))
        .await;
    s.provisioner.wait_stopped(BIND_WAIT).await;
    let clone_pv = s.bound_pv("clone").await;
    s.pod("user", "clone", json!({})).await;
    s.running("user", None).await;
    s.exec_ok("user", "echo mine >/data/written").await;

    let pid = s.provisioner.pid().unwrap();
    crate::support::local("kill", &["-CONT", &pid.to_string()]).await;
    s.provisioner
        .wait_exit(std::time::Duration::from_secs(60))
        .await;
    let after = s.exec_ok("user", "cat /data/f /data/written").await;
    assert_eq!(after, "source\nmine\n");
    // The standby, leading now, deletes the PVs.
    s.space
        .delete_all(&[source_pv.name_any(), clone_pv.name_any()])
        .await;
    drop(standby);
}
