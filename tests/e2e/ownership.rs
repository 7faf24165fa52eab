//! A PV's fields and annotations are editable, and anyone allowed to create PVs can write one
//! that claims to be this provisioner's. Such a PV must never steer a delete or an overwrite to
//! what is not its own: another claim's volume, a Service of someone else, or an unknown
//! Heketi server. The provisioner refuses with a Warning event and touches nothing.

use k8s_openapi::api::core::v1::{PersistentVolume, Service};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::heketi_standin::HeketiStandIn;
use crate::scenario::*;
use crate::support::Provisioner;

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

/// The Warning the provisioner raises on a PV, by reason.
async fn pv_warning(s: &Scenario, pv: &str, reason: &str) -> String {
    let events: Api<Event> = Api::all(s.client.clone());
    wait_event(&events, &format!("{reason} on PV {pv}"), |e| {
        e.reason.as_deref() == Some(reason)
            && e.type_.as_deref() == Some("Warning")
            && e.reporting_controller.as_deref() == Some(&s.provisioner_name)
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pv)
    })
    .await
}

/// Removes a test's PV, held by the provisioner's finalizer.
async fn discard(s: &Scenario, pv: &str) {
    s.pvs.delete(pv, &DeleteParams::default()).await.ok();
    let unfinalized = json!({"metadata": {"finalizers": null}});
    s.pvs
        .patch(pv, &PatchParams::default(), &Patch::Merge(unfinalized))
        .await
        .ok();
    s.wait_pv_gone(pv).await;
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
        let note = pv_warning(&s, &pv.name_any(), "VolumeFailedDelete").await;
        assert!(
            note.contains("refusing to touch it") && note.contains(cause),
            "{note:?}"
        );
    }

    assert!(gluster_volumes().await.contains(&victim_volume));
    let pvs = Api::<PersistentVolume>::all(s.client.clone());
    assert!(pvs.get_opt(&victim.name_any()).await.unwrap().is_some());
    assert_eq!(
        kubernetes.get("kubernetes").await.unwrap().uid(),
        kubernetes_uid
    );
    let asked = attacker.state.requests.lock().unwrap().clone();
    assert!(asked.is_empty(), "the unknown Heketi was asked: {asked:?}");

    for pv in [&steal_volume, &steal_service, &steal_key] {
        discard(&s, &pv.name_any()).await;
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
    let note = pv_warning(&s, &pv.name_any(), "EndpointsRepairFailed").await;
    assert!(
        note.contains(&format!("Service {}/{name}", s.ns)),
        "{note:?}"
    );

    s.delete_claim("c").await;
    let note = pv_warning(&s, &pv.name_any(), "VolumeFailedDelete").await;
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
