//! Heketi mode against the stand-in server (real volumes on the test pool): classes as the
//! guides write them bind and mount, failures name their cause and leak nothing, and the
//! removed in-tree provisioner's classes and PVs are taken over.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::heketi_standin::{ADMIN_KEY, HeketiStandIn};
use crate::scenario::*;
use crate::support::{Provisioner, eventually};

const ANN_HEKETI_ID: &str = "gluster.kubernetes.io/heketi-volume-id";

/// A Secret of the type the in-tree provisioner read, holding `key`.
async fn secret(s: &Scenario, name: &str, type_: &str, key: &str) {
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns);
    let secret: Secret = from_json(json!({
        "metadata": {"name": name}, "type": type_, "stringData": {"key": key},
    }));
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A class as the Heketi guides write it, against `url`, with the key in Secret `secret`.
fn guide_params(s: &Scenario, url: &str, secret: &str) -> Value {
    json!({
        "resturl": url, "restuser": "admin", "secretNamespace": s.ns, "secretName": secret,
        "gidMin": "40000", "gidMax": "50000", "volumetype": "replicate:3",
    })
}

/// The same, limited to the stand-in's cluster.
fn guide_params_with_cluster(s: &Scenario, heketi: &HeketiStandIn, secret: &str) -> Value {
    let mut params = guide_params(s, &heketi.url, secret);
    params["clusterid"] = heketi.cluster_id().into();
    params
}

async fn wait_heketi_empty(heketi: &HeketiStandIn, claim: &PersistentVolumeClaim) {
    let suffix = uid_suffix(claim);
    eventually(BIND_WAIT, "Heketi volume gone", || async {
        let left = heketi.volume_names().iter().any(|v| v.ends_with(&suffix))
            || gluster_volumes().await.iter().any(|v| v.ends_with(&suffix))
            || brick_dirs().await.iter().any(|d| d.ends_with(&suffix));
        (!left).then_some(())
    })
    .await;
}

#[tokio::test]
async fn heketi_class_from_the_guides_binds_mounts_and_deletes() {
    let heketi = HeketiStandIn::start(true).await;
    let s = Scenario::new("heketi").await;
    secret(&s, "heketi-secret", "kubernetes.io/glusterfs", ADMIN_KEY).await;
    let class = s
        .class(
            guide_params_with_cluster(&s, &heketi, "heketi-secret"),
            "Delete",
        )
        .await;
    let claim = s.claim("data", &class, "1Gi", "ReadWriteMany").await;
    let pv = s.bound_pv("data").await;
    let ann = annotations(&pv);
    let source = pv.spec.as_ref().unwrap().glusterfs.clone().unwrap();
    assert_eq!(
        ann.get(ANN_HEKETI_ID),
        heketi.volume_id(&source.path).as_ref(),
        "PV records the Heketi volume id"
    );
    let gid: u32 = ann["pv.beta.kubernetes.io/gid"].parse().unwrap();
    assert!(
        (40000..=50000).contains(&gid),
        "GID {gid} in the class range"
    );
    assert_eq!(ann["gluster.org/heketi-url"], heketi.url);
    assert_eq!(
        ann["gluster.org/heketi-secret"],
        format!("{}/heketi-secret", s.ns)
    );
    assert!(
        !ann.values().any(|v| v.contains(ADMIN_KEY)),
        "the key is never written on the PV"
    );
    let ep = s.endpoints(&source.endpoints).await.unwrap();
    let mut ips = endpoint_ips(&ep);
    ips.sort();
    let mut want: Vec<String> = nodes()
        .iter()
        .map(|n| n.storage_address.to_string())
        .collect();
    want.sort();
    assert_eq!(ips, want, "Endpoints list the cluster's storage addresses");

    let mount = Mount::of(&s, &pv).await;
    std::fs::write(mount.path().join("hello"), "from a Heketi volume").unwrap();
    // What a person checking Heketi mode by hand would look at (shown with --nocapture).
    let df = crate::support::local("df", &["-h", mount.path().to_str().unwrap()]).await;
    println!(
        "claim {}/data Bound to {}: {} (Heketi id {}, GID {gid}), Endpoints {ips:?}\n{df}",
        s.ns,
        pv.name_any(),
        source.path,
        ann[ANN_HEKETI_ID]
    );
    assert_eq!(
        std::fs::read_to_string(mount.path().join("hello")).unwrap(),
        "from a Heketi volume"
    );
    mount.unmount().await;

    s.delete_claim("data").await;
    s.wait_pv_gone(&pv.name_any()).await;
    wait_heketi_empty(&heketi, &claim).await;
    assert!(s.endpoints(&source.endpoints).await.is_none());
    // Every request was signed for its own path: the stand-in refuses any other.
    let requests = heketi.state.requests.lock().unwrap().clone();
    for want in ["POST /volumes", "GET /queue/<id>", "DELETE /volumes/<id>"] {
        assert!(requests.iter().any(|r| r == want), "{want} in {requests:?}");
    }
}

#[tokio::test]
async fn heketi_credential_problems_name_the_cause_and_recover() {
    let heketi = HeketiStandIn::start(true).await;
    let s = Scenario::new("heketi-auth").await;
    secret(&s, "wrong-key", "kubernetes.io/glusterfs", "not the key").await;
    secret(&s, "wrong-type", "Opaque", ADMIN_KEY).await;
    let cases = [
        ("missing", "Secret", "not found"),
        ("wrong-key", "HTTP 401", "signature is invalid"),
        (
            "wrong-type",
            "Secret",
            "type must be kubernetes.io/glusterfs",
        ),
    ];
    let mut claims = Vec::new();
    for (secret_name, want, why) in cases {
        let class = s
            .class(guide_params(&s, &heketi.url, secret_name), "Delete")
            .await;
        let claim = s.claim(secret_name, &class, "1Gi", "ReadWriteOnce").await;
        claims.push((claim, want, why));
    }
    for (claim, want, why) in &claims {
        let note = s.event(claim, "ProvisioningFailed").await;
        assert!(
            note.contains(want) && note.contains(why),
            "{}: {note:?} should say {want:?} and {why:?}",
            claim.name_any()
        );
        assert!(!note.contains(ADMIN_KEY), "no key in events");
    }
    assert!(
        heketi.volume_names().is_empty(),
        "nothing made on bad credentials"
    );
    // The missing Secret appears: the retry provisions.
    secret(&s, "missing", "kubernetes.io/glusterfs", ADMIN_KEY).await;
    let pv = s.bound_pv("missing").await;
    assert_eq!(heketi.volume_names().len(), 1);
    s.delete_claim("missing").await;
    s.wait_pv_gone(&pv.name_any()).await;
    wait_heketi_empty(&heketi, &claims[0].0).await;
}

#[tokio::test]
async fn heketi_down_errors_and_lost_replies_retry_without_leaks() {
    let heketi = HeketiStandIn::start(true).await;
    let s = Scenario::new("heketi-fail").await;
    secret(&s, "heketi-secret", "kubernetes.io/glusterfs", ADMIN_KEY).await;

    // Heketi down: nothing listens on the URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = s
        .class(guide_params(&s, &down_url, "heketi-secret"), "Delete")
        .await;
    let down_claim = s.claim("down", &down, "1Gi", "ReadWriteOnce").await;
    let note = s.event(&down_claim, "ProvisioningFailed").await;
    assert!(
        note.contains("unreachable") && note.contains(&down_url),
        "{note:?}"
    );

    let class = s
        .class(guide_params(&s, &heketi.url, "heketi-secret"), "Delete")
        .await;
    // Heketi fails the create with a message, once.
    {
        let mut faults = heketi.faults();
        faults.fail_creates = 1;
        faults.fail_message = "No space".into();
    }
    let failing = s.claim("nospace", &class, "1Gi", "ReadWriteOnce").await;
    let note = s.event(&failing, "ProvisioningFailed").await;
    assert!(
        note.contains("HTTP 500") && note.contains("No space"),
        "{note:?}"
    );
    let failing_pv = s.bound_pv("nospace").await;

    // Heketi makes the volume but the reply is lost: the retry finds it by name.
    heketi.faults().lose_create_replies = 1;
    let lost = s.claim("lost", &class, "1Gi", "ReadWriteOnce").await;
    let note = s.event(&lost, "ProvisioningFailed").await;
    assert!(note.contains("connection to the database lost"), "{note:?}");
    let lost_pv = s.bound_pv("lost").await;
    let suffix = uid_suffix(&lost);
    let made: Vec<_> = heketi
        .volume_names()
        .into_iter()
        .filter(|v| v.ends_with(&suffix))
        .collect();
    assert_eq!(made.len(), 1, "one volume for the claim: {made:?}");

    // A burst of "server busy" longer than the client's own retries.
    heketi.faults().busy_requests = 12;
    let busy = s.claim("busy", &class, "1Gi", "ReadWriteOnce").await;
    let note = s.event(&busy, "ProvisioningFailed").await;
    assert!(
        note.contains("HTTP 429") && note.contains("Server busy"),
        "{note:?}"
    );
    let busy_pv = s.bound_pv("busy").await;

    assert_eq!(
        heketi.volume_names().len(),
        3,
        "{:?}",
        heketi.volume_names()
    );
    for (name, pv, claim) in [
        ("nospace", &failing_pv, &failing),
        ("lost", &lost_pv, &lost),
        ("busy", &busy_pv, &busy),
    ] {
        s.delete_claim(name).await;
        s.wait_pv_gone(&pv.name_any()).await;
        wait_heketi_empty(&heketi, claim).await;
    }
    // The claim of the server that is down never got anything.
    assert!(
        s.pvs
            .get_opt(&format!("pvc-{}", down_claim.uid().unwrap()))
            .await
            .unwrap()
            .is_none()
    );
}

/// A class of the removed in-tree provisioner, as users still have them.
async fn in_tree_class(s: &Scenario, params: Value) -> String {
    let name = crate::support::unique("in-tree");
    let classes: Api<StorageClass> = Api::all(s.client.clone());
    let class: StorageClass = from_json(json!({
        "metadata": {"name": name}, "provisioner": "kubernetes.io/glusterfs",
        "reclaimPolicy": "Delete", "parameters": params,
    }));
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    name
}

async fn set_phase(s: &Scenario, pv: &str, phase: &str) {
    let status = json!({"status": {"phase": phase}});
    s.pvs
        .patch_status(pv, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the controller-manager's persistentvolume-binder off; e2e/test runs it so"]
async fn migration_takes_over_in_tree_classes_and_volumes() {
    let controllers = std::env::var("GP_KUBE_CONTROLLERS").unwrap_or_default();
    assert!(
        !controllers.is_empty()
            && !controllers
                .split(',')
                .any(|c| c == "persistentvolume-binder"),
        "run with the persistentvolume-binder off (GP_KUBE_CONTROLLERS={controllers:?})"
    );
    let heketi = HeketiStandIn::start(true).await;
    // Without the flag: in-tree classes and PVs are not ours.
    let s = Scenario::new("migrate").await;
    secret(&s, "heketi-secret", "kubernetes.io/glusterfs", ADMIN_KEY).await;
    let class = in_tree_class(&s, guide_params(&s, &heketi.url, "heketi-secret")).await;
    let claim = s.claim("legacy", &class, "1Gi", "ReadWriteMany").await;
    let pv_of_claim = format!("pvc-{}", claim.uid().unwrap());

    // A PV exactly as the in-tree provisioner left it, Released with policy Delete.
    let (id, volume) = heketi.make_volume(1, 40001).await;
    let old_claim_uid = uuid::Uuid::new_v4().to_string();
    let old_pv = format!("pvc-{old_claim_uid}");
    let ep_name = format!("glusterfs-dynamic-{old_claim_uid}");
    let pv: PersistentVolume = from_json(json!({
        "metadata": {"name": old_pv, "annotations": {
            "pv.kubernetes.io/provisioned-by": "kubernetes.io/glusterfs",
            ANN_HEKETI_ID: id, "pv.beta.kubernetes.io/gid": "40001", "gluster.org/type": "file",
            "kubernetes.io/createdby": "heketi-dynamic-provisioner",
            "Description": "Gluster-Internal: Dynamically provisioned PV"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": class,
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": s.ns, "name": "gone",
                              "uid": old_claim_uid},
                 "glusterfs": {"endpoints": ep_name, "endpointsNamespace": s.ns, "path": volume}},
    }));
    s.pvs.create(&PostParams::default(), &pv).await.unwrap();
    set_phase(&s, &old_pv, "Released").await;
    let services: Api<Service> = Api::namespaced(s.client.clone(), &s.ns);
    let service: Service = from_json(json!({
        "metadata": {"name": ep_name, "labels": {"gluster.kubernetes.io/provisioned-for-pvc": "gone"}},
        "spec": {"ports": [{"port": 1, "protocol": "TCP"}]},
    }));
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    // Signs that the provisioner has seen both: a claim of its own class made after them gets
    // its PV, and a PV of its own made after them gets its finalizer.
    let own = s.class(json!({"volumetype": "none"}), "Delete").await;
    let sign = s.claim("sign", &own, "1Gi", "ReadWriteOnce").await;
    let sign_pv = format!("pvc-{}", sign.uid().unwrap());
    let marker = format!("{}-marker", s.ns);
    let marker_pv: PersistentVolume = from_json(json!({
        "metadata": {"name": marker, "annotations": {
            "pv.kubernetes.io/provisioned-by": s.provisioner.name}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "none",
                 "glusterfs": {"endpoints": "ep", "path": "vol_marker"}},
    }));
    s.pvs
        .create(&PostParams::default(), &marker_pv)
        .await
        .unwrap();
    eventually(BIND_WAIT, "the provisioner caught up", || async {
        let made = s.pvs.get_opt(&sign_pv).await.unwrap().is_some();
        let marked = s
            .pvs
            .get(&marker)
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|f| f == "gluster.org/volume-protection");
        (made && marked).then_some(())
    })
    .await;
    assert!(
        s.pvs.get_opt(&pv_of_claim).await.unwrap().is_none(),
        "flag off: claim ignored"
    );
    assert!(
        s.pvs.get_opt(&old_pv).await.unwrap().is_some(),
        "flag off: in-tree PV kept"
    );
    assert_eq!(heketi.volume_names(), std::slice::from_ref(&volume));

    // Crafted in-tree PVs, Released with policy Delete, naming Heketi volumes that are not
    // theirs: one of another user of the same Heketi (with its GID wrong: Heketi knows it),
    // one that a live in-tree PV names (with its GID copied).
    let (other_id, other_volume) = heketi.make_volume(1, 40002).await;
    let (kept_id, kept_volume) = heketi.make_volume(1, 40003).await;
    let in_tree_pv = |claim_uid: &str, id: &str, volume: &str, gid: &str, phase_policy: &str| {
        from_json::<PersistentVolume>(json!({
            "metadata": {"name": format!("pvc-{claim_uid}"), "annotations": {
                "pv.kubernetes.io/provisioned-by": "kubernetes.io/glusterfs",
                ANN_HEKETI_ID: id, "pv.beta.kubernetes.io/gid": gid}},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": phase_policy, "storageClassName": class,
                     "claimRef": {"kind": "PersistentVolumeClaim", "namespace": s.ns,
                                  "name": claim_uid, "uid": claim_uid},
                     "glusterfs": {"endpoints": "ep", "endpointsNamespace": s.ns, "path": volume}},
        }))
    };
    let live_uid = uuid::Uuid::new_v4().to_string();
    let live = in_tree_pv(&live_uid, &kept_id, &kept_volume, "40003", "Retain");
    s.pvs.create(&PostParams::default(), &live).await.unwrap();
    set_phase(&s, &live.name_any(), "Bound").await;
    let crafted = [
        (&other_id, &other_volume, "40009", "has GID 40002"),
        (&kept_id, &kept_volume, "40003", "names too"),
    ]
    .map(|(id, volume, gid, why)| {
        let uid = uuid::Uuid::new_v4().to_string();
        (in_tree_pv(&uid, id, volume, gid, "Delete"), why)
    });
    for (pv, _) in &crafted {
        s.pvs.create(&PostParams::default(), pv).await.unwrap();
        set_phase(&s, &pv.name_any(), "Released").await;
    }

    // With the flag: both are taken over.
    let migrating_name = crate::support::unique("e2e.gluster.org/migrate");
    let migrating = Provisioner::start_with(&migrating_name, &[("MIGRATE_IN_TREE", "true")]).await;
    for (pv, why) in &crafted {
        let reason = "VolumeFailedDelete";
        let note = pv_warning(&s.client, &migrating_name, &pv.name_any(), reason).await;
        assert!(
            note.contains("refusing to touch it") && note.contains(why),
            "{note:?}"
        );
    }
    eventually(BIND_WAIT, "in-tree PV deleted through Heketi", || async {
        let gone = s.pvs.get_opt(&old_pv).await.unwrap().is_none()
            && !heketi.volume_names().contains(&volume)
            && !gluster_volumes().await.contains(&volume);
        gone.then_some(())
    })
    .await;
    assert!(
        services.get_opt(&ep_name).await.unwrap().is_none(),
        "its Service removed"
    );

    // The claim of the in-tree class gets a PV naming it (the binder, off here, binds it).
    let made = eventually(BIND_WAIT, "PV for the in-tree class's claim", || async {
        s.pvs.get_opt(&pv_of_claim).await.unwrap()
    })
    .await;
    let spec = made.spec.as_ref().unwrap();
    assert_eq!(
        spec.claim_ref.as_ref().unwrap().uid,
        claim.uid(),
        "claimRef names the claim"
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
    let path = &spec.glusterfs.as_ref().unwrap().path;
    assert_eq!(
        annotations(&made).get(ANN_HEKETI_ID),
        heketi.volume_id(path).as_ref()
    );
    // Released with Delete: removed through Heketi like any other.
    s.delete_claim("legacy").await;
    set_phase(&s, &pv_of_claim, "Released").await;
    s.wait_pv_gone(&pv_of_claim).await;
    s.delete_claim("sign").await;
    set_phase(&s, &sign_pv, "Released").await;
    s.wait_pv_gone(&sign_pv).await;
    s.pvs.delete(&marker, &Default::default()).await.unwrap();
    let unfinalized = json!({"metadata": {"finalizers": null}});
    s.pvs
        .patch(
            &marker,
            &PatchParams::default(),
            &Patch::Merge(&unfinalized),
        )
        .await
        .unwrap();
    wait_heketi_empty(&heketi, &claim).await;
    let names = heketi.volume_names();
    assert!(names.contains(&other_volume) && names.contains(&kept_volume));
    drop(migrating);
    for pv in crafted.iter().map(|(pv, _)| pv).chain([&live]) {
        s.pvs
            .delete(&pv.name_any(), &Default::default())
            .await
            .unwrap();
        s.pvs
            .patch(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&unfinalized),
            )
            .await
            .unwrap();
    }
    heketi.remove_volume(&other_id).await;
    heketi.remove_volume(&kept_id).await;
}

#[tokio::test]
async fn a_pv_whose_heketi_is_unreachable_reports_why_and_is_kept() {
    let s = Scenario::new("heketi-gone").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let class = s.class(json!({"resturl": url}), "Delete").await;
    let claim_uid = uuid::Uuid::new_v4();
    let pv_name = format!("pvc-{claim_uid}");
    let pv: PersistentVolume = from_json(json!({
        "metadata": {"name": pv_name, "annotations": {
            "pv.kubernetes.io/provisioned-by": s.provisioner.name,
            ANN_HEKETI_ID: "0123456789abcdef0123456789abcdef", "gluster.org/heketi-url": url,
            "pv.beta.kubernetes.io/gid": "40000"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": class,
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": s.ns, "name": "gone",
                              "uid": claim_uid.to_string()},
                 "glusterfs": {"endpoints": "ep", "endpointsNamespace": s.ns,
                               "path": format!("vol_{}", claim_uid.simple())}},
    }));
    s.pvs.create(&PostParams::default(), &pv).await.unwrap();
    set_phase(&s, &pv_name, "Released").await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(s.client.clone());
    let note = wait_event(&events, "VolumeFailedDelete on the PV", |e| {
        e.reason.as_deref() == Some("VolumeFailedDelete")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&pv_name)
    })
    .await;
    assert!(
        note.contains("unreachable") && note.contains(&url),
        "{note:?}"
    );
    assert!(
        s.pvs.get_opt(&pv_name).await.unwrap().is_some(),
        "kept until Heketi answers"
    );
    s.pvs.delete(&pv_name, &Default::default()).await.unwrap();
}

/// Fault: the provisioner dies (crash point) after Heketi made the volume with one GID; while
/// it is down that GID's neighbour frees up, so a fresh allocation would differ. The PV must
/// carry the GID the volume has.
#[tokio::test]
async fn a_heketi_volume_found_again_keeps_its_gid() {
    let heketi = HeketiStandIn::start(true).await;
    let crash = [("GLUSTERFS_PROVISIONER_CRASH_AT", "after-volume-create")];
    let mut s = Scenario::with_env("heketi-gid", &crash).await;
    secret(&s, "heketi-secret", "kubernetes.io/glusterfs", ADMIN_KEY).await;
    let class = s
        .class(guide_params(&s, &heketi.url, "heketi-secret"), "Delete")
        .await;
    // A PV of this provisioner holds the class's first GID (Retain, bound to nothing).
    let holder = format!("{}-holder", s.ns);
    let pv: PersistentVolume = from_json(json!({
        "metadata": {"name": holder, "annotations": {
            "pv.kubernetes.io/provisioned-by": s.provisioner.name,
            "pv.beta.kubernetes.io/gid": "40000"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "none",
                 "glusterfs": {"endpoints": "ep", "path": "vol_holder"}},
    }));
    s.pvs.create(&PostParams::default(), &pv).await.unwrap();
    eventually(BIND_WAIT, "the holder PV in the cache", || async {
        let pv = s.pvs.get(&holder).await.unwrap();
        pv.finalizers()
            .contains(&"gluster.org/volume-protection".to_string())
            .then_some(())
    })
    .await;
    let claim = s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    s.provisioner.wait_exit(Duration::from_secs(300)).await;
    let suffix = uid_suffix(&claim);
    let volume = heketi
        .volume_names()
        .into_iter()
        .find(|v| v.ends_with(&suffix))
        .expect("Heketi made the volume before the crash");
    assert_eq!(heketi.volume_gid(&volume), Some(40001));

    // The holder goes while the provisioner is down (its finalizer with it: Retain).
    s.pvs.delete(&holder, &Default::default()).await.unwrap();
    let unfinalized = json!({"metadata": {"finalizers": null}});
    s.pvs
        .patch(&holder, &PatchParams::default(), &Patch::Merge(unfinalized))
        .await
        .unwrap();
    s.wait_pv_gone(&holder).await;

    s.provisioner = Provisioner::start(&s.provisioner.name).await;
    let pv = s.bound_pv("c").await;
    assert_eq!(
        annotations(&pv)["pv.beta.kubernetes.io/gid"],
        "40001",
        "the PV carries the GID volume {volume} has"
    );
    s.delete_claim("c").await;
    s.wait_pv_gone(&pv.name_any()).await;
    wait_heketi_empty(&heketi, &claim).await;
}
