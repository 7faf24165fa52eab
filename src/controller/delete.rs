//! Volumes: a PV this provisioner made is deleted with its gluster volume, bricks, Endpoints and
//! Service once Released with policy Delete, or once anyone deletes it (a finalizer holds the
//! object until the volume is gone); Retain is never touched. While it lives, its Endpoints
//! and Service are recreated if someone deletes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};

use crate::k8s::cached::CachedPv;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::{Context, event_note, failure_key};
use crate::gluster::naming;
use crate::identity::{Expected, Why};
use crate::k8s::api::ignore_not_found;
use crate::k8s::objects::{self, FINALIZER, Owner};
use crate::metrics::InFlight;
use crate::volumes::{Recorded, VolumeBackend};
use crate::{Error, Result};

pub async fn reconcile(pv: Arc<CachedPv>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_ours(&pv) {
        return Ok(Action::await_change());
    }
    let deleting = pv.meta().deletion_timestamp.is_some();
    let uid = pv.uid().unwrap_or_default();
    // Deleted while its claim still holds it: the data stays until the claim lets go
    // (pv-protection keeps the object meanwhile); the phase change brings it back here.
    let bound = pv.status.phase.as_deref() == Some("Bound");
    if deleting && (bound || ctx.let_go.holds(&uid)) {
        return Ok(Action::await_change());
    }
    let name = pv.name_any();
    let span = tracing::info_span!("volume", pv = name);
    let api = Api::<CachedPv>::all(ctx.client.clone());
    // The finalizer makes every deletion of the PV object, by anyone, come through `gone`.
    // Its own two writes are not fenced: adding it is what any leader does to a PV of ours,
    // and it is removed only once `gone` has removed the volume (every write there is
    // fenced), which leaves a stale leader nothing to undo.
    finalizer(&api, FINALIZER, pv, |event| async {
        match event {
            finalizer::Event::Apply(pv) => live(&pv, &ctx).await,
            finalizer::Event::Cleanup(pv) => gone(&pv, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .inspect(|_| {
        if deleting {
            ctx.let_go.add(uid);
        }
    })
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => e.into(),
        other => Error::InvalidVolume {
            pv: name,
            message: other.to_string(),
        },
    })
}

/// PVs (by UID) whose finalizer this process removed lately. A reconcile queued while the
/// volume was being removed (the PV controller's own writes meanwhile) runs at once with the
/// object as the cache still has it, finalizer and all: it is not a second removal to begin
/// (measured: a fifth of a burst's deletions asked gluster and the nodes again, at the end).
/// After a restart nothing is held, and a PV still there is checked and removed as before.
#[derive(Default)]
pub(super) struct LetGo(Mutex<HashMap<String, Instant>>);

/// Longer than the cache takes to see a deletion.
const LET_GO_KEPT: Duration = Duration::from_secs(60);

impl LetGo {
    fn add(&self, uid: String) {
        let mut held = self.0.lock().expect("let_go lock");
        held.retain(|_, at| at.elapsed() < LET_GO_KEPT);
        held.insert(uid, Instant::now());
    }

    fn holds(&self, uid: &str) -> bool {
        let held = self.0.lock().expect("let_go lock");
        held.get(uid).is_some_and(|at| at.elapsed() < LET_GO_KEPT)
    }
}

/// A live PV: once Released with policy Delete its object is deleted (`gone` then removes the
/// volume); otherwise its Endpoints and Service are kept.
async fn live(pv: &CachedPv, ctx: &Context) -> Result<Action> {
    let phase = pv.status.phase.as_deref();
    if phase == Some("Released") && reclaim_policy(pv) != "Delete" {
        keep_recorded(pv, ctx).await?;
    }
    if phase == Some("Released") && reclaim_policy(pv) == "Delete" {
        let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
        ctx.fenced().await?;
        ignore_not_found(
            pvs.delete(&pv.name_any(), &Default::default())
                .await
                .map(drop),
        )?;
    } else if phase != Some("Released")
        && let Err(e) = repair_endpoints(pv, ctx).await
    {
        let note = event_note(&e);
        ctx.publish(
            pv,
            EventType::Warning,
            "EndpointsRepairFailed",
            "Repair",
            note,
        )
        .await;
        return Err(e);
    }
    Ok(Action::await_change())
}

fn reclaim_policy(pv: &CachedPv) -> &str {
    pv.spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("Delete")
}

/// A PV being deleted: with policy Delete its volume, bricks, Endpoints and Service go before
/// the object may; with Retain everything stays, and the volume records Retain before the PV
/// goes (the health sweep records a policy changed on a Bound PV only every few seconds), so
/// `audit` keeps it once no PV names it.
async fn gone(pv: &CachedPv, ctx: &Context) -> Result<Action> {
    if reclaim_policy(pv) != "Delete" {
        keep_recorded(pv, ctx).await?;
        tracing::info!("PV deleted; reclaim policy Retain: its volume stays");
        return Ok(Action::await_change());
    }
    let class = pv.spec.storage_class_name.clone().unwrap_or_default();
    let _in_flight = InFlight::start(&ctx.metrics, "delete");
    let started = Instant::now();
    let result = delete(pv, ctx).await;
    ctx.metrics
        .delete_duration
        .with_label_values(&[&class])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            ctx.metrics.delete_total.with_label_values(&[&class]).inc();
            ctx.backoff.succeeded(&failure_key(pv));
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.metrics
                .delete_failed_total
                .with_label_values(&[&class])
                .inc();
            ctx.metrics
                .failures
                .with_label_values(&["delete", e.reason()])
                .inc();
            tracing::warn!(pv = pv.name_any(), error = %e, "delete failed");
            ctx.publish(
                pv,
                EventType::Warning,
                "VolumeFailedDelete",
                "Delete",
                event_note(&e),
            )
            .await;
            Err(e)
        }
    }
}

pub fn error_policy(pv: Arc<CachedPv>, _: &Error, ctx: Arc<Context>) -> Action {
    ctx.backoff.failed(failure_key(pv.as_ref()))
}

fn invalid(pv: &CachedPv, message: impl Into<String>) -> Error {
    Error::InvalidVolume {
        pv: pv.name_any(),
        message: message.into(),
    }
}

/// Deletes in an order that can stop anywhere and resume: the Endpoints/Service, then the
/// gluster volume and its bricks; the PV object goes last, once the finalizer is removed (its
/// GID is free once the PV is gone). Everything the PV names is checked before anything goes.
async fn delete(pv: &CachedPv, ctx: &Context) -> Result<()> {
    let (volume, owner) = checked(pv, ctx)?;
    ctx.fenced().await?;
    if let Some(endpoints) = endpoints_of(pv) {
        ctx.delete_endpoints(endpoints, owner).await?;
    }
    let recorded = Recorded {
        pv: &pv.name_any(),
        volume,
        annotations: &pv.kept.to_map(),
    };
    let backend = ctx.backend_of(pv).await?;
    let expected = Expected {
        kube_cluster: &ctx.settings.kube_cluster,
        claim_uid: owner.claim_uid,
        why: Why::PvDeleted { pv: owner.pv },
    };
    ctx.fenced().await?;
    backend.delete(recorded, expected).await?;
    crate::failpoint::crash_point("after-volume-delete");
    tracing::info!("volume deleted");
    Ok(())
}

/// The volume a PV names and the claim it was made for, once they agree: a PV of ours is
/// named after its claim's UID and so is its volume (the in-tree provisioner's PVs name
/// Heketi volumes by id, checked against Heketi's own record of the name and GID on delete),
/// and no other PV of ours names that volume.
fn checked<'p>(pv: &'p CachedPv, ctx: &Context) -> Result<(&'p str, Owner<'p>)> {
    let volume = pv
        .spec
        .gluster_volume(&ctx.settings.csi_driver)
        .ok_or_else(|| invalid(pv, "neither a glusterfs source nor a CSI source of ours"))?;
    let claim = pv
        .spec
        .claim_ref
        .as_ref()
        .ok_or_else(|| invalid(pv, "no claimRef"))?;
    let owner = Owner {
        pv: pv.meta().name.as_deref().unwrap_or_default(),
        claim_namespace: claim.namespace.as_deref().unwrap_or_default(),
        claim_name: claim.name.as_deref().unwrap_or_default(),
        claim_uid: claim.uid.as_deref().unwrap_or_default(),
    };
    // Both provisioners' PVs are named after their claim's UID (the PV controller named the
    // in-tree one's so), and PV names are unique: a second PV cannot claim the same UID.
    if owner.pv != objects::pv_name(owner.claim_uid) {
        return Err(Error::NotOurs(format!(
            "PV {} is bound to claim UID {:?}; PVs of ours are named pvc-<claim UID>",
            owner.pv, owner.claim_uid
        )));
    }
    if ctx.made_here(pv) && !naming::derives_from(volume, owner.claim_uid) {
        return Err(Error::NotOurs(format!(
            "PV {} names volume {volume:?}, not one named after its claim UID {:?}",
            owner.pv, owner.claim_uid
        )));
    }
    if let Some(other) = ctx.also_naming(pv, volume) {
        return Err(Error::NotOurs(format!(
            "PV {} names volume {volume:?}, which PV {other} names too",
            owner.pv
        )));
    }
    if let Some(ep) = pv.spec.glusterfs.as_ref()
        && ep.endpoints_namespace.as_deref() != Some(owner.claim_namespace)
    {
        return Err(Error::NotOurs(format!(
            "PV {} names Endpoints {:?} in namespace {:?}, not its claim's {:?}",
            owner.pv, ep.endpoints, ep.endpoints_namespace, owner.claim_namespace
        )));
    }
    Ok((volume, owner))
}

/// Records Retain on the volume of a PV of ours whose policy is not Delete, when the volume
/// records this very PV (a PV of no identity, or of another, is left alone: Retain touches
/// nothing). Turning Retain into Delete is never done here: see the health sweep.
async fn keep_recorded(pv: &CachedPv, ctx: &Context) -> Result<()> {
    let (Some(ssh), Some(cluster)) = (&ctx.ssh, pv.annotation(objects::ANN_CLUSTER)) else {
        return Ok(());
    };
    let Some(wanted) = ctx.identity_of(pv) else {
        return Ok(());
    };
    // Asked of the API server, not the cache: `convert` writes its record just before it
    // makes the PV Retain, and a cache behind by that much would keep the volume Retain.
    let records = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let record = crate::convert::record_name(&pv.name_any());
    if records.get_metadata_opt(&record).await?.is_some() {
        return Ok(());
    }
    ctx.fenced().await?;
    match ssh
        .record_policy(cluster, &volume_name(pv, ctx), &wanted)
        .await
    {
        Err(Error::NotOurs(why)) | Err(Error::UnknownCluster(why)) => {
            tracing::info!(why, "volume not recorded as this PV's; left as it is");
            Ok(())
        }
        other => other,
    }
}

fn volume_name(pv: &CachedPv, ctx: &Context) -> String {
    let volume = pv.spec.gluster_volume(&ctx.settings.csi_driver);
    volume.unwrap_or_default().to_string()
}

/// The Endpoints and Service a PV has in its claim's namespace: a `glusterfs` PV's own, or
/// those a CSI PV kept from the `glusterfs` PV it was converted from.
fn endpoints_of(pv: &CachedPv) -> Option<&str> {
    match &pv.spec.glusterfs {
        Some(source) => Some(&source.endpoints),
        None => pv.annotation(objects::ANN_ENDPOINTS),
    }
}

async fn repair_endpoints(pv: &CachedPv, ctx: &Context) -> Result<()> {
    let Some(source) = pv
        .spec
        .glusterfs
        .as_ref()
        .filter(|_| ctx.settings.endpoints)
    else {
        return Ok(());
    };
    if pv.spec.claim_ref.is_none() || source.endpoints_namespace.is_none() {
        return Ok(());
    }
    let (volume, owner) = checked(pv, ctx)?;
    ctx.caches_synced().await;
    if ctx.has_endpoints(owner.claim_namespace, &source.endpoints) {
        return Ok(());
    }
    let recorded = Recorded {
        pv: owner.pv,
        volume,
        annotations: &pv.kept.to_map(),
    };
    let addresses = ctx.backend_of(pv).await?.addresses(recorded).await?;
    ctx.fenced().await?;
    ctx.apply_endpoints(&source.endpoints, owner, &addresses)
        .await?;
    tracing::info!(
        endpoints = source.endpoints,
        "Endpoints and Service recreated"
    );
    Ok(())
}
