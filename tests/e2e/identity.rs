//! A volume is this provisioner's to remove only when what it recorded on the volume itself
//! says so ([`glusterfs_provisioner::identity`]): PVs, names and absences prove nothing.

use std::sync::Arc;
use std::time::Duration;

use glusterfs_provisioner::gluster::SshBackend;
use glusterfs_provisioner::identity::{Expected, Why};
use glusterfs_provisioner::metrics::Metrics;
use glusterfs_provisioner::volumes::VolumeBackend;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::scenario::*;
use crate::support::{env, eventually, ssh, unique};

/// The attack of issue "Nothing lost": a Released PV of policy Delete, marked as ours, whose
/// claimRef UID is a word a hand-made volume's name ends in, its bricks where ours go.
#[tokio::test]
async fn a_crafted_pv_leaves_a_volume_made_by_hand_started_and_whole() {
    let s = Scenario::new("crafted").await;
    let class = s.class(json!({}), "Delete").await;
    let word = unique("data").replace('-', "");
    let volume = format!("prod_{word}");
    let root = nodes()[0].brick_roots[0].path.display().to_string();
    make_volume(&volume, &root).await;
    let bricks: Vec<String> = nodes()
        .iter()
        .map(|n| format!("{}:{root}/{volume}/brick", n.name))
        .collect();
    let pv_name = format!("pvc-{word}");
    let crafted = from_json(json!({
        "metadata": {"name": pv_name, "annotations": {
            "pv.kubernetes.io/provisioned-by": s.provisioner.name,
            "pv.beta.kubernetes.io/gid": "2999",
            "gluster.org/cluster": env_cluster(),
            "gluster.org/bricks": bricks.join(","),
        }},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": class,
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": s.ns,
                              "name": "ghost", "uid": word},
                 "glusterfs": {"endpoints": "x", "endpointsNamespace": s.ns, "path": volume}},
    }));
    s.pvs
        .create(&PostParams::default(), &crafted)
        .await
        .unwrap();

    let note = pv_warning(
        &s.client,
        &s.provisioner_name,
        &pv_name,
        "VolumeFailedDelete",
    )
    .await;
    assert!(note.contains("records no identity"), "{note}");
    assert!(volume_started(&volume).await, "{volume} stays started");
    let dirs = brick_dirs().await;
    let kept = dirs.iter().filter(|d| d.ends_with(&volume)).count();
    assert_eq!(kept, nodes().len(), "every brick stays: {dirs:?}");

    s.discard_pv(&pv_name).await;
    gluster_cli(&["volume", "stop", &volume]).await;
    gluster_cli(&["volume", "delete", &volume]).await;
    on_every_node("rm -rf \"$1/$2\"", &[&root, &volume]).await;
}

/// A PV whose identity on the volume names another claim or cluster is refused, and the volume
/// stays; one whose volume records it is removed as before.
#[tokio::test]
async fn a_released_pv_removes_only_a_volume_that_records_it() {
    let s = Scenario::new("recorded").await;
    let class = s.class(json!({}), "Delete").await;
    for claim in ["mine", "moved"] {
        s.claim(claim, &class, "1Gi", "ReadWriteOnce").await;
    }
    let mine = s.bound_pv("mine").await;
    let moved = s.bound_pv("moved").await;
    let moved_volume = glusterfs_path(&moved);
    // As if another Kubernetes cluster sharing the pool had made it.
    let claim_uid = moved.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
    let claim_uid = claim_uid.uid.clone().unwrap();
    set_identity(&moved_volume, "another-cluster", &claim_uid, "Delete").await;

    s.delete_claim("mine").await;
    s.delete_claim("moved").await;
    s.wait_pv_gone(&mine.name_any()).await;
    assert!(!gluster_volumes().await.contains(&glusterfs_path(&mine)));
    let note = pv_warning(
        &s.client,
        &s.provisioner_name,
        &moved.name_any(),
        "VolumeFailedDelete",
    )
    .await;
    assert!(note.contains("another Kubernetes cluster"), "{note}");
    assert!(volume_started(&moved_volume).await);

    // Recorded as this cluster's again, the retry removes it with its bricks.
    let here = kube_cluster_id(&s.client).await;
    set_identity(&moved_volume, &here, &claim_uid, "Delete").await;
    s.wait_pv_gone(&moved.name_any()).await;
    assert!(!gluster_volumes().await.contains(&moved_volume));
    let dirs = brick_dirs().await;
    assert!(!dirs.iter().any(|d| d.ends_with(&moved_volume)), "{dirs:?}");
}

fn env_cluster() -> String {
    env().topology.clusters[0].name.clone()
}

/// What the volume `name` records as its reclaim policy.
async fn recorded_policy(name: &str) -> Option<String> {
    let out = gluster_cli(&["volume", "info", name, "--xml"]).await;
    let volumes = glusterfs_provisioner::gluster::xml::parse_volume_info(&out).unwrap();
    let volume = volumes.iter().find(|v| v.name == name)?;
    let policy = volume.option("user.glusterfs-provisioner.reclaim-policy");
    policy.map(str::to_string)
}

async fn set_policy(s: &Scenario, pv: &str, policy: &str) {
    let patch = json!({"spec": {"persistentVolumeReclaimPolicy": policy}});
    s.pvs
        .patch(pv, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// The volume's recorded policy follows its Bound PV's both ways, and a claim deleted after the
/// PV was made Retain leaves the volume; the health sweep tells only the claim the volume
/// records, not one a PV author bound to it.
#[tokio::test]
async fn the_policy_follows_the_pv_and_the_sweep_tells_only_the_volumes_claim() {
    let s = Scenario::with_env("sweep", &[("HEALTH_INTERVAL_SECONDS", "2")]).await;
    let class = s.class(json!({}), "Delete").await;
    s.claim("owner", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("owner").await;
    let (pv_name, volume) = (pv.name_any(), glusterfs_path(&pv));
    assert_eq!(recorded_policy(&volume).await.as_deref(), Some("Delete"));
    for policy in ["Retain", "Delete", "Retain"] {
        set_policy(&s, &pv_name, policy).await;
        eventually(
            Duration::from_secs(60),
            &format!("{volume} records {policy}"),
            || async { (recorded_policy(&volume).await.as_deref() == Some(policy)).then_some(()) },
        )
        .await;
    }

    // A claim elsewhere, bound by a PV author's look-alike PV to the owner's volume.
    let other = Space::create(unique("bystander"), &s.provisioner_name).await;
    let look_alike = unique("look-alike");
    other
        .claim_with(
            "bystander",
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                   "volumeName": look_alike,
                   "resources": {"requests": {"storage": "1Gi"}}}),
        )
        .await;
    let bystander = other.claims.get("bystander").await.unwrap();
    let crafted = from_json(json!({
        "metadata": {"name": look_alike, "annotations": {
            "pv.kubernetes.io/provisioned-by": s.provisioner.name,
            "gluster.org/cluster": annotations(&pv)["gluster.org/cluster"],
            "gluster.org/bricks": annotations(&pv)["gluster.org/bricks"],
        }},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": other.ns,
                              "name": "bystander", "uid": bystander.uid()},
                 "glusterfs": {"endpoints": "x", "endpointsNamespace": other.ns,
                               "path": volume}},
    }));
    s.pvs
        .create(&PostParams::default(), &crafted)
        .await
        .unwrap();
    other.bound_pv("bystander").await;

    // Stopped and started again: the owner hears both, on looks that cover the look-alike too.
    gluster_cli(&["volume", "stop", &volume, "force"]).await;
    let owner = s.claims.get("owner").await.unwrap();
    s.event(&owner, "VolumeDegraded").await;
    gluster_cli(&["volume", "start", &volume, "force"]).await;
    s.event(&owner, "VolumeHealed").await;
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(s.client.clone(), &other.ns);
    let told = events.list(&Default::default()).await.unwrap();
    let health: Vec<_> = told
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(s.provisioner_name.as_str()))
        .filter_map(|e| e.reason.clone())
        .filter(|r| r.starts_with("Volume"))
        .collect();
    assert_eq!(health, Vec::<String>::new(), "the bystander hears nothing");

    // Made Retain while bound, the volume outlives its claim and PV.
    other.delete_claim("bystander").await;
    s.discard_pv(&look_alike).await;
    s.delete_claim("owner").await;
    s.wait_released(&pv_name).await;
    s.discard_pv(&pv_name).await;
    assert!(volume_started(&volume).await, "a Retain volume stays");
    assert_eq!(recorded_policy(&volume).await.as_deref(), Some("Retain"));
    // Removed as a deleted claim's volume is, through the backend's checked path.
    let backend = SshBackend::new(env().topology.clone(), ssh(), Arc::new(Metrics::new()), 1);
    let here = kube_cluster_id(&s.client).await;
    let uid = owner.uid().unwrap();
    let expected = Expected {
        kube_cluster: &here,
        claim_uid: &uid,
        why: Why::NoPv,
    };
    backend.abandon(&volume, None, expected).await.unwrap();
    let dirs = brick_dirs().await;
    assert!(!dirs.iter().any(|d| d.ends_with(&volume)), "{dirs:?}");
}

/// A volume of an earlier version (no identity) is never removed with its Released PV; `adopt`
/// lists it with its evidence, records the identity only with `--apply`, and from then on the
/// volume goes with its claim.
#[tokio::test]
async fn adopt_lists_the_evidence_and_adopts_only_with_apply() {
    let s = Scenario::new("adopt").await;
    let class = s.class(json!({}), "Delete").await;
    for claim in ["old", "older"] {
        s.claim(claim, &class, "1Gi", "ReadWriteOnce").await;
    }
    let (old, older) = (s.bound_pv("old").await, s.bound_pv("older").await);
    // As an earlier version left them: gluster resets `user.` options only all at once.
    for pv in [&old, &older] {
        gluster_cli(&["volume", "reset", &glusterfs_path(pv)]).await;
        assert_eq!(recorded_policy(&glusterfs_path(pv)).await, None);
    }
    // Released before it is adopted: refused, and said so.
    s.delete_claim("older").await;
    let note = pv_warning(
        &s.client,
        &s.provisioner_name,
        &older.name_any(),
        "VolumeFailedDelete",
    )
    .await;
    assert!(note.contains("adopt"), "{note}");

    let me = ["--provisioner-name", s.provisioner_name.as_str()];
    let (ok, listed) = operator_command("adopt", &me).await;
    assert!(ok, "{listed}");
    let line = |report: &str, volume: &str| {
        let found = report.lines().find(|l| l.contains(volume));
        found
            .unwrap_or_else(|| panic!("{volume} in:\n{report}"))
            .to_string()
    };
    let old_line = line(&listed, &glusterfs_path(&old));
    assert!(
        old_line.contains(&format!(
            "PV {} Bound to claim {}/old",
            old.name_any(),
            s.ns
        )) && old_line.contains("[--apply adopts it]"),
        "{old_line}"
    );
    let older_line = line(&listed, &glusterfs_path(&older));
    assert!(older_line.contains("not adoptable"), "{older_line}");
    assert_eq!(recorded_policy(&glusterfs_path(&old)).await, None);

    let (ok, adopted) = operator_command("adopt", &[me[0], me[1], "--apply"]).await;
    assert!(ok, "{adopted}");
    assert!(line(&adopted, &glusterfs_path(&old)).contains("[adopted]"));
    assert_eq!(
        recorded_policy(&glusterfs_path(&old)).await.as_deref(),
        Some("Delete")
    );
    s.delete_claim("old").await;
    s.wait_pv_gone(&old.name_any()).await;
    assert!(!gluster_volumes().await.contains(&glusterfs_path(&old)));

    // The one never adopted is the admin's: here, it is adopted by hand and then goes.
    let here = kube_cluster_id(&s.client).await;
    let claim = older.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
    let uid = claim.uid.clone().unwrap();
    set_identity(&glusterfs_path(&older), &here, &uid, "Delete").await;
    s.wait_pv_gone(&older.name_any()).await;
}
