//! A claim deleted before its PV exists takes whatever was made for it. A finalizer holds the
//! claim from before its volume is made until its PV is saved (the external-provisioner holds
//! the claims it clones from the same way), so a deletion at any moment, even while no
//! provisioner runs, comes back here.

use std::time::Duration;

use backon::{ConstantBuilder, Retryable};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Context, event_note};
use crate::config::{BackendParams, ClassParams};
use crate::gluster::naming;
use crate::identity::{Expected, Why};
use crate::k8s::api::ignore_not_found;
use crate::k8s::cached::CachedPvc;
use crate::k8s::objects::{self, CLAIM_FINALIZER, Owner};
use crate::volumes::VolumeBackend;
use crate::{Error, Result};

fn held(meta: &ObjectMeta) -> bool {
    meta.finalizers
        .iter()
        .flatten()
        .any(|f| f == CLAIM_FINALIZER)
}

fn claims(ctx: &Context, namespace: &str) -> Api<PersistentVolumeClaim> {
    Api::namespaced(ctx.client.clone(), namespace)
}

/// A JSON patch that first tests what it changes, so it applies to the finalizers as read
/// whatever else changed on the claim meanwhile (as kube's finalizer helper patches).
fn json_patch(ops: serde_json::Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).expect("a well-formed JSON patch"))
}

/// Puts the finalizer on a claim before anything is made for it; returns the claim as written.
/// Neither this nor [`let_go`] is fenced: a stale leader adding it does what the leader does
/// to every claim it serves, and removing it follows a PV's creation or a fenced cleanup, so
/// the new leader, finding the same, removes it too.
pub(super) async fn hold(
    claim: &PersistentVolumeClaim,
    ctx: &Context,
) -> Result<PersistentVolumeClaim> {
    if held(&claim.metadata) {
        return Ok(claim.clone());
    }
    let ops = match claim.metadata.finalizers.as_deref() {
        None | Some([]) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": claim.metadata.finalizers},
            {"op": "add", "path": "/metadata/finalizers", "value": [CLAIM_FINALIZER]},
        ]),
        Some(finalizers) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": CLAIM_FINALIZER},
        ]),
    };
    let namespace = claim.namespace().unwrap_or_default();
    Ok(claims(ctx, &namespace)
        .patch(&claim.name_any(), &PatchParams::default(), &json_patch(ops))
        .await?)
}

/// Takes the finalizer off: the claim's PV exists, or nothing made for it is left. Read afresh,
/// since the patch names the finalizer by its position.
pub(super) async fn let_go(meta: &ObjectMeta, ctx: &Context) -> Result<()> {
    let api = claims(ctx, meta.namespace.as_deref().unwrap_or_default());
    let name = meta.name.as_deref().unwrap_or_default();
    let remove = || async {
        let Some(current) = api.get_metadata_opt(name).await? else {
            return Ok(());
        };
        let Some(i) = current
            .finalizers()
            .iter()
            .position(|f| f == CLAIM_FINALIZER)
        else {
            return Ok(());
        };
        let path = format!("/metadata/finalizers/{i}");
        let ops = json!([
            {"op": "test", "path": path, "value": CLAIM_FINALIZER},
            {"op": "remove", "path": path},
        ]);
        api.patch_metadata(name, &PatchParams::default(), &json_patch(ops))
            .await
            .map(drop)
    };
    // A finalizer that moved between the read and the patch fails the patch's test (422):
    // read again rather than wait for the next reconcile.
    let removed = remove
        .retry(
            ConstantBuilder::default()
                .with_delay(Duration::ZERO)
                .with_max_times(2),
        )
        .when(|e| matches!(e, kube::Error::Api(s) if s.code == 422))
        .await;
    ignore_not_found(removed)
}

/// A claim holding the finalizer: let go once its PV exists; when it was deleted before, remove
/// what was made for it first. `None`: the claim goes on to be provisioned or expanded.
pub(super) async fn settle(cached: &CachedPvc, ctx: &Context) -> Result<Option<Action>> {
    if !held(cached.meta()) {
        return Ok(None);
    }
    let deleting = cached.meta().deletion_timestamp.is_some();
    let pv = objects::pv_name(&cached.uid().unwrap_or_default());
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    if pvs.get_metadata_opt(&pv).await?.is_some() {
        // The PV's own finalizer and reclaim policy take over.
        let_go(cached.meta(), ctx).await?;
        return Ok(deleting.then(Action::await_change));
    }
    if !deleting {
        return Ok(None);
    }
    if let Err(e) = abandon(cached, &pv, ctx).await {
        let note = format!(
            "the claim was deleted before its volume was bound; what was made for it is kept \
             until it can be removed: {}",
            event_note(&e)
        );
        ctx.publish(
            cached,
            EventType::Warning,
            "ProvisioningCleanupFailed",
            "Delete",
            note,
        )
        .await;
        return Err(e);
    }
    let_go(cached.meta(), ctx).await?;
    Ok(Some(Action::await_change()))
}

/// Removes the volume, bricks, Endpoints/Service and GID reservation of a claim that has no PV.
async fn abandon(cached: &CachedPvc, pv: &str, ctx: &Context) -> Result<()> {
    let class_name = cached.class().unwrap_or_default();
    let class = ctx
        .classes
        .get(&ObjectRef::new(class_name))
        .ok_or_else(|| Error::ClassNotFound(class_name.into()))?;
    let params = ClassParams::parse(&class.parameters.clone().unwrap_or_default())?;
    let (backend, cluster) = ctx.backend_for(&params).await?;
    let (namespace, name, uid) = (
        cached.namespace().unwrap_or_default(),
        cached.name_any(),
        cached.uid().unwrap_or_default(),
    );
    let volume = naming::volume_name(
        params.volume_name_prefix.as_deref(),
        &namespace,
        &name,
        &uid,
    );
    let expected = Expected {
        kube_cluster: &ctx.settings.kube_cluster,
        claim_uid: &uid,
        why: Why::NoPv,
    };
    // A clone's copy still running into the volume ends first, here and on every node (the
    // claim's cache knows no dataSource: any claim's is looked for).
    ctx.copies.end(&volume);
    if let (BackendParams::Ssh { .. }, Some(ssh)) = (&params.backend, &ctx.ssh) {
        let cluster = ssh.cluster(cluster)?.name.clone();
        ctx.fenced().await?;
        ssh.end_copies(&cluster, &volume).await?;
    }
    ctx.fenced().await?;
    backend.abandon(&volume, cluster, expected).await?;
    let owner = Owner {
        pv,
        claim_namespace: &namespace,
        claim_name: &name,
        claim_uid: &uid,
    };
    let endpoints = objects::endpoints_name(&params.endpoint_prefix, &uid);
    ctx.fenced().await?;
    ctx.delete_endpoints(&endpoints, owner).await?;
    ctx.gids.release(pv);
    tracing::info!(
        claim = name,
        volume,
        "claim deleted before its PV: its volume is removed"
    );
    Ok(())
}
