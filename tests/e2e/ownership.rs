//! A PV's fields and annotations are editable, and anyone allowed to create PVs can write one
//! that claims to be this provisioner's. Such a PV must never steer a delete or an overwrite to
//! what is not its own: another claim's volume, a Service of someone else, or an unknown
//! Heketi server. The provisioner refuses with a Warning event and touches nothing.

use k8s_openapi::api::core::v1::{PersistentVolume, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::heketi_standin::HeketiStandIn;
use crate::scenario::*;
use crate::support::{Provisioner, env, ssh};

/// A PV as this provisioner writes them, for a claim that does not exist (so it is Released).
fn crafted(
    s: &Scenario,
    class: &str,
    claim_ns: &str,
    source: Value,
    annotations: Value,
) -> PersistentVolume {
    let uid = uuid::Uuid::new_v4();
    let mut ann = json!({"pv.kubernetes.io/provisioned-by": s.provisioner.name,
                         "pv.beta.kubernetes.io/gid": "2999"});
    ann.as_object_mut()
        .unwrap()
        .extend(annotations.as_object().unwrap().clone());
    let mut source = source;
    if source["path"].is_null() {
        source["path"] = format!("vol_{}", uid.simple()).into();
    }
    from_json(json!({
        "metadata": {"name": format!("pvc-{uid}"), "annotations": ann},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": class,
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": claim_ns,
                              "name": "ghost", "uid": uid.to_string()},
                 "glusterfs": source},
    }))
}

async fn warning(s: &Scenario, pv: &str, reason: &str) -> String {
    pv_warning(&s.client, &s.provisioner_name, pv, reason).await
}

#[tokio::test]
async fn crafted_pvs_touch_nothing_that_is_not_theirs() {
    let attacker = HeketiStandIn::start(false).await;
    let s = Scenario::new("owner").await;
    let class = s
        .class(json!({"volumetype": "replicate:2"}), "Delete")
        .await;
    s.claim("victim", &class, "1Gi", "ReadWriteOnce").await;
    let victim = s.bound_pv("victim").await;
    let victim_volume = glusterfs_path(&victim);
    let kubernetes = Api::<Service>::namespaced(s.client.clone(), "default");
    let kubernetes_uid = kubernetes.get("kubernetes").await.unwrap().uid();

    let recorded = annotations(&victim);
    let steal_volume = crafted(
        &s,
        &class,
        &s.ns,
        json!({"endpoints": "x", "endpointsNamespace": s.ns, "path": victim_volume}),
        json!({"gluster.org/cluster": recorded["gluster.org/cluster"],
               "gluster.org/bricks": recorded["gluster.org/bricks"]}),
    );
    let steal_service = crafted(
        &s,
        &class,
        "default",
        json!({"endpoints": "kubernetes", "endpointsNamespace": "default"}),
        json!({}),
    );
    let steal_key = crafted(
        &s,
        &class,
        &s.ns,
        json!({"endpoints": "x", "endpointsNamespace": s.ns}),
        json!({"gluster.org/heketi-url": attacker.url,
               "gluster.kubernetes.io/heketi-volume-id": "0123456789abcdef0123456789abcdef"}),
    );
    for (pv, cause) in [
        (&steal_volume, victim_volume.as_str()),
        (&steal_service, "Service default/kubernetes"),
        (&steal_key, attacker.url.as_str()),
    ] {
        s.pvs.create(&PostParams::default(), pv).await.unwrap();
        let note = warning(&s, &pv.name_any(), "VolumeFailedDelete").await;
        assert!(
            note.contains("refusing to touch it") && note.contains(cause),
            "{note:?}"
        );
    }

    assert!(
        volume_started(&victim_volume).await,
        "the victim still serves"
    );
    let pvs = Api::<PersistentVolume>::all(s.client.clone());
    assert!(pvs.get_opt(&victim.name_any()).await.unwrap().is_some());
    assert_eq!(
        kubernetes.get("kubernetes").await.unwrap().uid(),
        kubernetes_uid
    );
    let asked = attacker.state.requests.lock().unwrap().clone();
    assert!(asked.is_empty(), "the unknown Heketi was asked: {asked:?}");

    for pv in [&steal_volume, &steal_service, &steal_key] {
        s.discard_pv(&pv.name_any()).await;
    }
    s.delete_claim("victim").await;
    s.wait_pv_gone(&victim.name_any()).await;
}

/// A Service of someone else's where the PV's was: it is neither overwritten by the repair
/// nor deleted with the PV.
#[tokio::test]
async fn a_service_of_someone_else_is_never_overwritten_or_deleted() {
    let mut s = Scenario::new("foreignsvc").await;
    let class = s.class(json!({"volumetype": "none"}), "Delete").await;
    let claim = s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("c").await;
    let name = format!("glusterfs-dynamic-{}", claim.uid().unwrap());
    let services = Api::<Service>::namespaced(s.client.clone(), &s.ns);

    s.provisioner.kill().await;
    services
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let foreign: Service = from_json(json!({
        "metadata": {"name": name, "labels": {"app": "someone-else"}},
        "spec": {"selector": {"app": "someone-else"}, "ports": [{"port": 80}]},
    }));
    let foreign_uid = services
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap()
        .uid();
    s.provisioner = Provisioner::start(&s.provisioner.name).await;
    let note = warning(&s, &pv.name_any(), "EndpointsRepairFailed").await;
    assert!(
        note.contains(&format!("Service {}/{name}", s.ns)),
        "{note:?}"
    );

    s.delete_claim("c").await;
    let note = warning(&s, &pv.name_any(), "VolumeFailedDelete").await;
    assert!(note.contains("refusing to touch it"), "{note:?}");
    let kept = services.get(&name).await.unwrap();
    assert_eq!(kept.uid(), foreign_uid);
    assert_eq!(
        kept.labels().get("app").map(String::as_str),
        Some("someone-else")
    );
    assert!(kept.labels().get("gluster.org/pv").is_none());

    // Once the other Service goes, the PV's deletion goes through.
    services
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    s.wait_pv_gone(&pv.name_any()).await;
}

/// A volume named as this provisioner names them (after the crafted PV's claim UID), but whose
/// brick is not `<brick root>/<volume>/brick`: someone else's, or one moved by hand. The PV's
/// own record of the bricks looks right. Nothing is stopped or deleted.
#[tokio::test]
async fn a_volume_with_a_foreign_brick_is_not_stopped() {
    let s = Scenario::new("foreignbrick").await;
    let class = s.class(json!({"volumetype": "none"}), "Delete").await;
    let uid = uuid::Uuid::new_v4();
    let volume = format!("vol_{}", uid.simple());
    let node = &nodes()[0];
    let root = node.brick_roots[0].path.display().to_string();
    let foreign_dir = format!("{root}/{}", crate::support::unique("foreign"));
    ssh()
        .run_ok(
            &node.ssh_address,
            "mkdir",
            &["-p".into(), foreign_dir.clone()],
        )
        .await
        .unwrap();
    let brick = format!("{}:{foreign_dir}/brick", node.storage_address);
    gluster_cli(&["volume", "create", &volume, &brick]).await;
    gluster_cli(&["volume", "start", &volume]).await;

    let mut pv = crafted(
        &s,
        &class,
        &s.ns,
        json!({"endpoints": "x", "endpointsNamespace": s.ns, "path": volume}),
        json!({"gluster.org/cluster": env().topology.clusters[0].name,
               "gluster.org/bricks": format!("{}:{root}/{volume}/brick", node.name)}),
    );
    // Named after the claim UID the volume's name carries, as ours are.
    pv.metadata.name = Some(format!("pvc-{uid}"));
    pv.spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = Some(uid.to_string());
    s.pvs.create(&PostParams::default(), &pv).await.unwrap();
    let note = warning(&s, &pv.name_any(), "VolumeFailedDelete").await;
    assert!(
        note.contains("refusing to touch it") && note.contains(&foreign_dir),
        "{note:?}"
    );
    assert!(volume_started(&volume).await, "the volume still serves");

    s.discard_pv(&pv.name_any()).await;
    gluster_cli(&["volume", "stop", &volume]).await;
    gluster_cli(&["volume", "delete", &volume]).await;
    ssh()
        .run_ok(&node.ssh_address, "rm", &["-rf".into(), foreign_dir])
        .await
        .unwrap();
}
