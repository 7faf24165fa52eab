//! Expansion in both modes: a larger request on a bound claim grows the volume, the PV and the
//! claim's reported size, and a mount sees the room.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::heketi_standin::{ADMIN_KEY, HeketiStandIn};
use crate::scenario::*;
use crate::support::{eventually, local};

/// The size a mount reports, in bytes.
async fn df_size(mount: &Mount) -> u64 {
    let out = local(
        "df",
        &["-B1", "--output=size", mount.path().to_str().unwrap()],
    )
    .await;
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Provisions a 1Gi claim of an expandable class, asks for 2Gi and checks every layer grew;
/// returns the volume's name.
async fn grows(s: &Scenario, params: Value) -> String {
    let class = s
        .class_with(params, "Delete", json!({"allowVolumeExpansion": true}))
        .await;
    s.claim("grow", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("grow").await;
    let mount = Mount::of(s, &pv).await;
    let before = df_size(&mount).await;
    assert_eq!(before, 1 << 30, "a 1Gi volume shows 1 GiB");

    s.grow_claim("grow", "2Gi").await;
    let pv_now = s.pvs.get(&pv.name_any()).await.unwrap();
    assert_eq!(pv_now.spec.unwrap().capacity.unwrap()["storage"].0, "2Gi");
    let after = eventually(Duration::from_secs(60), "mount shows 2Gi", || async {
        let size = df_size(&mount).await;
        (size > 1 << 30).then_some(size)
    })
    .await;
    assert_eq!(after, 2 << 30, "a 2Gi volume shows 2 GiB");
    mount.unmount().await;
    let claim = s.claims.get("grow").await.unwrap();
    let note = s.event(&claim, "VolumeResizeSuccessful").await;
    assert!(note.contains("2Gi"), "{note:?}");
    pv.spec.unwrap().glusterfs.unwrap().path
}

async fn delete(s: &Scenario) {
    let pv = s.bound_pv("grow").await;
    s.delete_claim("grow").await;
    s.wait_pv_gone(&pv.name_any()).await;
}

#[tokio::test]
async fn expansion_over_ssh_raises_the_enforced_size() {
    let s = Scenario::new("grow-ssh").await;
    grows(&s, json!({"volumetype": "replicate:3"})).await;
    delete(&s).await;
}

/// Each brick of a disperse volume holds its share: its image is half the size here.
#[tokio::test]
async fn expansion_of_a_disperse_volume_of_image_bricks() {
    let s = Scenario::new("grow-disperse").await;
    let params = json!({"volumetype": "disperse:2:1", "sizeLimit": "image"});
    grows(&s, params).await;
    delete(&s).await;
}

#[tokio::test]
async fn expansion_through_heketi() {
    let heketi = HeketiStandIn::start(true).await;
    let s = Scenario::new("grow-heketi").await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(s.client.clone(), &s.ns);
    let secret = from_json(json!({
        "metadata": {"name": "heketi"}, "type": "kubernetes.io/glusterfs",
        "stringData": {"key": ADMIN_KEY},
    }));
    secrets.create(&Default::default(), &secret).await.unwrap();
    let params = json!({"resturl": heketi.url, "restuser": "admin", "secretNamespace": s.ns,
                        "secretName": "heketi"});
    let volume = grows(&s, params).await;
    assert_eq!(
        heketi.volume_size(&volume),
        Some(2),
        "Heketi knows the new size"
    );
    delete(&s).await;
    let requests = heketi.state.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r == "POST /volumes/<id>/expand"),
        "expanded through Heketi: {requests:?}"
    );
    eventually(BIND_WAIT, "Heketi volume deleted", || async {
        heketi.volume_size(&volume).is_none().then_some(())
    })
    .await;
}

/// A claim's `spec.volumeName` is its author's word: a Pending claim naming someone else's PV
/// gets nothing written onto it. Asking for more, it grows nothing and is told why; asking for
/// no more, it is not told the PV's size as if it were its own.
#[tokio::test]
async fn a_claim_naming_someone_elses_pv_grows_nothing() {
    // One worker: claims are looked at one at a time in the order they are made, so the
    // thief's event shows that the quiet claim, made before it, was looked at.
    let s = Scenario::with_env("grow-steal", &[("WORKERS", "1")]).await;
    let class = s
        .class_with(
            json!({"volumetype": "none"}),
            "Delete",
            json!({"allowVolumeExpansion": true}),
        )
        .await;
    s.claim("victim", &class, "1Gi", "ReadWriteOnce").await;
    let victim = s.bound_pv("victim").await;
    let victim_claim = s.claims.get("victim").await.unwrap();
    let naming = |request: &str| {
        json!({"storageClassName": class, "accessModes": ["ReadWriteOnce"],
               "volumeName": victim.name_any(),
               "resources": {"requests": {"storage": request}}})
    };
    s.claim_with("quiet", naming("1Gi")).await;
    let thief = s.claim_with("thief", naming("5Gi")).await;
    let note = s.event(&thief, "VolumeResizeFailed").await;
    assert!(
        note.contains(&victim.name_any()) && note.contains("not Bound"),
        "{note:?}"
    );
    for name in ["quiet", "thief"] {
        let claim = s.claims.get(name).await.unwrap();
        let status = claim.status.unwrap_or_default();
        assert_eq!(status.phase.as_deref(), Some("Pending"), "{name}");
        assert_eq!(status.capacity, None, "nothing written on {name}");
    }
    let now = s.pvs.get(&victim.name_any()).await.unwrap();
    assert_eq!(now.spec.unwrap().capacity.unwrap()["storage"].0, "1Gi");
    assert_eq!(
        s.claims.get("victim").await.unwrap().status,
        victim_claim.status,
        "the victim's claim is unchanged"
    );
    s.delete_claim("quiet").await;
    s.delete_claim("thief").await;
    s.delete_claim("victim").await;
    s.wait_pv_gone(&victim.name_any()).await;
}
