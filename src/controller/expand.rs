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
    if want > have
        && let Err(why) = bound_to(claim, &pv)
    {
        // `spec.volumeName` is the claim's own word: anyone may name any PV there.
        let note = format!("not resizing PV {volume}: {why}");
        ctx.publish(
            claim,
            EventType::Warning,
            "VolumeResizeFailed",
            "Resize",
            note,
        )
        .await;
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

/// Ok when `claim` is Bound and `pv`'s claimRef names it: namespace, name and UID.
fn bound_to(claim: &CachedPvc, pv: &CachedPv) -> std::result::Result<(), String> {
    if claim.status.phase.as_deref() != Some("Bound") {
        return Err(format!(
            "the claim is {}, not Bound",
            claim.status.phase.as_deref().unwrap_or("without a phase")
        ));
    }
    let by = pv.spec.claim_ref.as_ref();
    let names = by.is_some_and(|r| {
        r.namespace == claim.namespace()
            && r.name.as_deref() == Some(claim.name_any().as_str())
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
