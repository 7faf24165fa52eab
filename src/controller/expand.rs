//! Expansion: a bound claim asking for more than its PV holds (in a class with
//! `allowVolumeExpansion`) grows its volume, then the PV's capacity, then the claim's status.
//! GlusterFS needs nothing done on the nodes that mount it, so the claim is done then.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Context;
use crate::k8s::cached::{CachedPv, CachedPvc};
use crate::k8s::objects;
use crate::volumes::{Recorded, VolumeBackend};
use crate::{Error, Result};

pub async fn reconcile(claim: &CachedPvc, volume: &str, ctx: &Context) -> Result<Action> {
    let Some(pv) = ctx.volumes.get(&ObjectRef::new(volume)) else {
        return Ok(Action::await_change());
    };
    if !ctx.is_ours(&pv) {
        return Ok(Action::await_change());
    }
    let Some(request) = claim.spec.resources.requests.storage.as_ref() else {
        return Ok(Action::await_change());
    };
    let want = objects::storage_gib(Some(request))?;
    let have = objects::storage_gib(pv.spec.capacity.storage.as_ref())?;
    // `spec.volumeName` is the claim's own word: anyone may name any PV there, so nothing is
    // written for a claim the PV is not bound to, whatever it asks for.
    if let Err(why) = bound_to(claim, &pv) {
        // A claim only as large as the PV asks for nothing: it is told nothing.
        if want > have {
            let note = format!("not resizing PV {volume}: {why}");
            ctx.publish(
                claim,
                EventType::Warning,
                "VolumeResizeFailed",
                "Resize",
                note,
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    if want > have {
        if let Err(e) = grow(claim, &pv, have, want, ctx).await {
            ctx.publish(
                claim,
                EventType::Warning,
                "VolumeResizeFailed",
                "Resize",
                super::event_note(&e),
            )
            .await;
            return Err(e);
        }
    } else {
        // The PV has grown; the claim's status may not have been told yet.
        let status = claim.status.capacity.storage.as_ref();
        if status.is_none_or(|s| objects::storage_gib(Some(s)).is_ok_and(|s| s < have)) {
            set_claim_capacity(claim, have, ctx).await?;
        }
    }
    Ok(Action::await_change())
}

/// Ok when `claim` is Bound to `pv`: the claim names the PV, and the PV's claimRef names the
/// claim (namespace, name and UID).
fn bound_to(claim: &CachedPvc, pv: &CachedPv) -> std::result::Result<(), String> {
    if claim.status.phase.as_deref() != Some("Bound") {
        return Err(format!(
            "the claim is {}, not Bound",
            claim.status.phase.as_deref().unwrap_or("without a phase")
        ));
    }
    if claim.spec.volume_name.as_deref() != Some(pv.name_any().as_str()) {
        return Err("the claim names another PV".into());
    }
    let by = pv.spec.claim_ref.as_ref();
    let names = by.is_some_and(|r| {
        r.namespace == claim.namespace()
            && r.name.as_deref() == Some(claim.name_any().as_str())
            && r.uid.is_some()
            && r.uid == claim.uid()
    });
    if !names {
        return Err("its claimRef names another claim".into());
    }
    Ok(())
}

async fn grow(claim: &CachedPvc, pv: &CachedPv, have: u64, want: u64, ctx: &Context) -> Result<()> {
    let class = pv.spec.storage_class_name.clone().unwrap_or_default();
    let allowed = ctx
        .classes
        .get(&ObjectRef::new(&class))
        .is_some_and(|c| c.allow_volume_expansion == Some(true));
    if !allowed {
        return Err(Error::InvalidClaim(format!(
            "StorageClass {class:?} does not allow volume expansion"
        )));
    }
    let volume = pv
        .spec
        .gluster_volume(&ctx.settings.csi_driver)
        .ok_or_else(|| Error::InvalidVolume {
            pv: pv.name_any(),
            message: "neither a glusterfs source nor a CSI source of ours".into(),
        })?;
    let note = format!("growing volume {volume} from {have}Gi to {want}Gi");
    ctx.publish(claim, EventType::Normal, "Resizing", "Resize", note)
        .await;
    let recorded = Recorded {
        pv: &pv.name_any(),
        volume,
        annotations: &pv.kept.to_map(),
    };
    let backend = ctx.backend_of(pv).await?;
    ctx.fenced().await?;
    backend
        .expand(recorded, have, want, &ctx.promises().collect::<Vec<_>>())
        .await?;
    let capacity = json!({"spec": {"capacity": {"storage": format!("{want}Gi")}}});
    ctx.fenced().await?;
    Api::<PersistentVolume>::all(ctx.client.clone())
        .patch(
            &pv.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&capacity),
        )
        .await?;
    set_claim_capacity(claim, want, ctx).await?;
    let note = format!("volume {volume} is now {want}Gi");
    ctx.publish(
        claim,
        EventType::Normal,
        "VolumeResizeSuccessful",
        "Resize",
        note,
    )
    .await;
    Ok(())
}

async fn set_claim_capacity(claim: &CachedPvc, gib: u64, ctx: &Context) -> Result<()> {
    let status = json!({"status": {"capacity": {"storage": format!("{gib}Gi")}}});
    let claims = Api::<PersistentVolumeClaim>::namespaced(
        ctx.client.clone(),
        &claim.namespace().unwrap_or_default(),
    );
    let pp = PatchParams::default();
    ctx.fenced().await?;
    claims
        .patch_status(&claim.name_any(), &pp, &Patch::Merge(&status))
        .await?;
    tracing::info!(claim = claim.name_any(), gib, "claim capacity updated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(phase: &str, volume: &str, uid: &str) -> CachedPvc {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": uid},
            "spec": {"volumeName": volume},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn pv(name: &str, claim_ref: serde_json::Value) -> CachedPv {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"claimRef": claim_ref},
        }))
        .unwrap()
    }

    #[test]
    fn only_a_claim_bound_to_the_pv_is_written() {
        let ours = json!({"namespace": "ns", "name": "c", "uid": "u1"});
        let pv_ = pv("pvc-1", ours.clone());
        assert_eq!(bound_to(&claim("Bound", "pvc-1", "u1"), &pv_), Ok(()));

        let refused = [
            // A Pending claim naming a PV whose claimRef is its own: not yet bound.
            (claim("Pending", "pvc-1", "u1"), pv_.clone(), "not Bound"),
            // A claim of the same name made again (another UID).
            (claim("Bound", "pvc-1", "u2"), pv_.clone(), "another claim"),
            // A claim that names another PV than the one it is checked against.
            (claim("Bound", "pvc-2", "u1"), pv_.clone(), "another PV"),
            (
                claim("Bound", "pvc-1", "u1"),
                pv(
                    "pvc-1",
                    json!({"namespace": "other", "name": "c", "uid": "u1"}),
                ),
                "another claim",
            ),
            (
                claim("Bound", "pvc-1", "u1"),
                pv("pvc-1", json!({"namespace": "ns", "name": "c"})),
                "another claim",
            ),
        ];
        for (claim, pv, why) in refused {
            let err = bound_to(&claim, &pv).unwrap_err();
            assert!(err.contains(why), "{err:?} for {claim:?}");
        }
    }
}
