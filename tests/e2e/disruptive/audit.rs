//! `audit` judges the whole pool and, with `--apply`, removes from it: it runs alone, so no
//! other test's volumes are in flight. Each kind of leftover is made by hand; the audit lists
//! each, and `--apply` removes exactly the orphans of ours, past the grace period.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::pods::{DEPLOYED_NS, POD_WAIT, kubectl};
use crate::scenario::*;
use crate::support::{eventually, ssh, unique};

/// `glusterfs-provisioner audit ARGS` as the cluster admin: (success, standard output).
async fn audit(args: &[&str]) -> (bool, String) {
    operator_command("audit", args).await
}

/// One run of `examples/audit-cronjob.yaml` (as `kubectl create job --from` starts one, its
/// schedule suspended): whether it succeeded, and its log.
async fn cron_job_run() -> (bool, String) {
    let example = include_str!("../../../examples/audit-cronjob.yaml");
    let manifest = example
        // This environment's Kubernetes (1.20) serves CronJobs as batch/v1beta1, same fields.
        .replace(
            "apiVersion: batch/v1\nkind: CronJob",
            "apiVersion: batch/v1beta1\nkind: CronJob",
        )
        .replace(
            "  concurrencyPolicy:",
            "  suspend: true\n  concurrencyPolicy:",
        )
        .replace(
            "image: ghcr.io/gluster/glusterfs-provisioner:0.1.0\n",
            "image: localhost/glusterfs-provisioner:e2e\n              imagePullPolicy: Never\n",
        );
    assert!(manifest.contains("suspend: true") && manifest.contains("localhost/"));
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], &manifest).await;
    assert!(ok, "{err}");
    let job = unique("audit");
    let from = "--from=cronjob/glusterfs-provisioner-audit";
    let (ok, _, err) = kubectl(&["-n", DEPLOYED_NS, "create", "job", &job, from], "").await;
    assert!(ok, "{err}");
    let status = "jsonpath={.status.succeeded}/{.status.failed}";
    let done = eventually(POD_WAIT, &format!("Job {job} done"), || async {
        let (_, out, _) = kubectl(&["-n", DEPLOYED_NS, "get", "job", &job, "-o", status], "").await;
        match out.trim() {
            "1/" => Some(true),
            "/1" => Some(false),
            _ => None,
        }
    })
    .await;
    let (_, log, _) = kubectl(&["-n", DEPLOYED_NS, "logs", &format!("job/{job}")], "").await;
    kubectl(&["-n", DEPLOYED_NS, "delete", "job", &job], "").await;
    (done, log)
}

/// A name as this provisioner gives a claim's volume, for a claim that does not exist.
fn volume_like_ours() -> String {
    format!("vol_{}", uuid::Uuid::new_v4().simple())
}

/// The claim UID (with dashes) a volume name of [`volume_like_ours`] was made from.
fn claim_uid_of(volume: &str) -> String {
    let hex = volume.trim_start_matches("vol_");
    uuid::Uuid::parse_str(hex).unwrap().hyphenated().to_string()
}

fn line_of<'a>(report: &'a str, needle: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{report}"))
}

#[tokio::test]
async fn audit_lists_each_leftover_and_apply_removes_only_provable_orphans() {
    let space = Space::deployed("audit").await;
    let here = kube_cluster_id(&space.client).await;
    let class = space.class(json!({}), "Delete").await;
    for claim in ["kept", "gone"] {
        space.claim(claim, &class, "1Gi", "ReadWriteOnce").await;
    }
    // Retained data: its claim and then its PV deleted by the admin, the volume kept.
    let retain = space.class(json!({}), "Retain").await;
    space
        .claim("retained", &retain, "1Gi", "ReadWriteOnce")
        .await;
    let retained_pv = space.bound_pv("retained").await;
    let retained = glusterfs_path(&retained_pv);
    let data = Mount::volume(&retained).await;
    data.write("kept.txt", "retained data").await;
    data.unmount().await;
    space.delete_claim("retained").await;
    space.wait_released(&retained_pv.name_any()).await;
    space.delete_pv(&retained_pv.name_any()).await;
    space.wait_pv_gone(&retained_pv.name_any()).await;
    let kept = glusterfs_path(&space.bound_pv("kept").await);
    let gone_pv = space.bound_pv("gone").await;
    let gone = glusterfs_path(&gone_pv);
    let root = nodes()[0].brick_roots[1].path.display().to_string();

    // A PV whose volume was deleted with the gluster CLI.
    gluster_cli(&["volume", "stop", &gone]).await;
    gluster_cli(&["volume", "delete", &gone]).await;
    // A volume as a provisioner killed mid-way leaves it, its claim deleted since.
    let orphan = volume_like_ours();
    make_volume(&orphan, &root).await;
    set_identity(&orphan, &here, &claim_uid_of(&orphan), "Delete").await;
    // The same, made by another Kubernetes cluster sharing the pool.
    let theirs = volume_like_ours();
    make_volume(&theirs, &root).await;
    set_identity(&theirs, "another-cluster", &claim_uid_of(&theirs), "Delete").await;
    // The same, recording nothing: made by hand, or by a version before identities.
    let unidentified = volume_like_ours();
    make_volume(&unidentified, &root).await;
    // The same, that an admin re-exposed by hand through a PV naming it `/<volume>`.
    let reexposed = volume_like_ours();
    make_volume(&reexposed, &root).await;
    set_identity(&reexposed, &here, &claim_uid_of(&reexposed), "Delete").await;
    let by_hand = unique("by-hand");
    let pvs: Api<PersistentVolume> = Api::all(space.client.clone());
    let hand_pv = from_json(json!({
        "metadata": {"name": by_hand},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Retain",
                 "glusterfs": {"endpoints": "x", "path": format!("/{reexposed}")}},
    }));
    pvs.create(&PostParams::default(), &hand_pv).await.unwrap();
    // A brick directory of no volume, on one node.
    let stray = volume_like_ours();
    let node1 = &nodes()[0];
    let args = ["-p".to_string(), format!("{root}/{stray}/brick")];
    ssh()
        .run_ok(&node1.ssh_address, "mkdir", &args)
        .await
        .unwrap();
    // A volume named like ours, its bricks where this provisioner never puts them (each node's
    // brick root is its own file system; the directory above is the machine's).
    let foreign = volume_like_ours();
    let elsewhere = format!("{root}/foreign");
    make_volume(&foreign, &elsewhere).await;
    set_identity(&foreign, &here, &claim_uid_of(&foreign), "Delete").await;
    // Endpoints labelled as ours, for a PV that never existed.
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(space.client.clone(), &space.ns);
    let stale = from_json(json!({
        "metadata": {"name": "glusterfs-dynamic-stale", "labels": {"gluster.org/pv": "pvc-never"}},
        "subsets": [{"addresses": [{"ip": nodes()[0].storage_address.to_string()}],
                     "ports": [{"port": 1}]}],
    }));
    endpoints
        .create(&PostParams::default(), &stale)
        .await
        .unwrap();

    let (ok, report) = audit(&[]).await;
    assert!(!ok, "leftovers make audit fail:\n{report}");
    // Under its own read-only ServiceAccount it sees the pool and every kind of object.
    let (ok, log) = cron_job_run().await;
    assert!(
        !ok && log.contains(&orphan) && log.contains("glusterfs-dynamic-stale"),
        "the CronJob's run fails and says why:\n{log}"
    );
    assert!(
        line_of(&report, &orphan).contains("orphan volume"),
        "{report}"
    );
    let stray_line = line_of(&report, &format!("gp-node1:{root}/{stray}"));
    assert!(stray_line.contains("stray brick"), "{report}");
    let missing = line_of(&report, &format!("PV {}: ", gone_pv.name_any()));
    assert!(missing.contains("volume missing"), "{report}");
    assert!(line_of(&report, &foreign).contains("not ours"), "{report}");
    assert!(
        line_of(&report, &retained).contains("retained, no PV"),
        "{report}"
    );
    assert!(
        line_of(&report, &theirs).contains("another cluster's"),
        "{report}"
    );
    assert!(
        line_of(&report, &unidentified).contains("no identity"),
        "{report}"
    );
    assert!(
        !report.contains(&reexposed),
        "a volume a PV mounts as /<volume> is in use:\n{report}"
    );
    let ep = line_of(&report, "glusterfs-dynamic-stale");
    assert!(ep.contains("pvc-never"), "{report}");
    assert!(
        !report.contains(&kept),
        "a volume with its PV is fine:\n{report}"
    );

    // Everything is younger than the default grace period: nothing is removed.
    let (_, young) = audit(&["--apply"]).await;
    assert!(!young.contains("[removed]"), "{young}");
    assert!(volume_started(&orphan).await);

    let (ok, applied) = audit(&["--apply", "--grace-seconds", "0"]).await;
    assert!(!ok, "what it may not remove is left:\n{applied}");
    for removed in [orphan.as_str(), &stray, "glusterfs-dynamic-stale"] {
        assert!(
            line_of(&applied, removed).contains("[removed]"),
            "{applied}"
        );
    }
    let left = [
        foreign.as_str(),
        &format!("PV {}: ", gone_pv.name_any()),
        &retained,
        &theirs,
        &unidentified,
    ];
    for kept in left {
        assert!(!line_of(&applied, kept).contains("[removed]"), "{applied}");
    }
    let volumes = gluster_volumes().await;
    assert!(!volumes.contains(&orphan), "{volumes:?}");
    for kept in [
        &foreign,
        &kept,
        &retained,
        &theirs,
        &unidentified,
        &reexposed,
    ] {
        assert!(volumes.contains(kept), "{kept} is kept: {volumes:?}");
        assert!(volume_started(kept).await, "{kept} stays started");
    }
    let data = Mount::volume(&retained).await;
    assert_eq!(data.read("kept.txt").await, "retained data");
    data.unmount().await;
    let dirs = brick_dirs().await;
    assert!(
        !dirs
            .iter()
            .any(|d| d.ends_with(&orphan) || d.ends_with(&stray)),
        "{dirs:?}"
    );
    assert!(
        endpoints
            .get_opt("glusterfs-dynamic-stale")
            .await
            .unwrap()
            .is_none()
    );

    // The foreign volumes are their owners' to remove; the rest goes with the namespace.
    gluster_cli(&["volume", "stop", &foreign]).await;
    gluster_cli(&["volume", "delete", &foreign]).await;
    on_every_node("rm -rf \"$1\"", &[&elsewhere]).await;
    for by_cli in [&theirs, &unidentified] {
        gluster_cli(&["volume", "stop", by_cli]).await;
        gluster_cli(&["volume", "delete", by_cli]).await;
        on_every_node("rm -rf \"$1/$2\"", &[&root, by_cli]).await;
    }
    // The admin lets the retained volume go, and drops the hand-made PV: audit removes both.
    let retained_uid = retained_pv
        .spec
        .as_ref()
        .unwrap()
        .claim_ref
        .as_ref()
        .unwrap();
    let retained_uid = retained_uid.uid.clone().unwrap();
    set_identity(&retained, &here, &retained_uid, "Delete").await;
    pvs.delete(&by_hand, &Default::default()).await.unwrap();
    let (_, applied) = audit(&["--apply", "--grace-seconds", "0"]).await;
    for removed in [&retained, &reexposed] {
        assert!(
            line_of(&applied, removed).contains("[removed]"),
            "{applied}"
        );
    }
    let pvs = [space.bound_pv("kept").await.name_any(), gone_pv.name_any()];
    space.delete_all(&pvs).await;
    let (ok, after) = audit(&[]).await;
    assert!(ok, "nothing left:\n{after}");
    let (ok, log) = cron_job_run().await;
    assert!(ok, "{log}");
    kubectl(
        &[
            "-n",
            DEPLOYED_NS,
            "delete",
            "cronjob",
            "glusterfs-provisioner-audit",
        ],
        "",
    )
    .await;
}
