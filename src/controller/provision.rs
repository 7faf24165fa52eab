//! Claims: an unbound PVC whose class names this provisioner gets a gluster volume, its
//! Endpoints + Service, and a PV bound to it by claimRef (the PV controller then binds the PVC).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::{Context, event_note, failure_key};
use crate::config::{BackendParams, ClassParams, PvType, SizeLimitChoice};
use crate::gluster::naming;
use crate::identity::{Identity, Policy};
use crate::k8s::cached::CachedPvc;
use crate::k8s::objects::{
    self, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, ANN_STORAGE_PROVISIONER_BETA, Mounter,
};
use crate::metrics::{InFlight, Step};
use crate::volumes::{Fenced, Promised, Recorded, VolumeBackend, VolumeRequest};
use crate::{Error, Result};

enum Wanted {
    Yes(Arc<StorageClass>),
    No,
    ClassNotCached,
}

pub async fn reconcile(cached: Arc<CachedPvc>, ctx: Arc<Context>) -> Result<Action> {
    // GIDs come from the PV cache: nothing is provisioned before it is complete.
    ctx.caches_synced().await;
    if let Some(action) = super::unfinished::settle(&cached, &ctx).await? {
        return Ok(action);
    }
    if let Some(volume) = cached.spec.volume_name.as_deref().filter(|v| !v.is_empty())
        && cached.meta().deletion_timestamp.is_none()
    {
        return super::expand::reconcile(&cached, volume, &ctx).await;
    }
    let class = match wanted_class(&cached, &ctx)? {
        Wanted::Yes(class) => class,
        Wanted::No => return Ok(Action::await_change()),
        // A claim can arrive before its class reaches the cache; nothing else would wake it.
        // The class's arrival in its cache triggers the claim again.
        Wanted::ClassNotCached => return Ok(Action::await_change()),
    };
    // The cache keeps too little of a claim to provision it; the claim may also have been
    // bound, or deleted and made again, since the cache saw it.
    let claim = Api::<PersistentVolumeClaim>::namespaced(
        ctx.client.clone(),
        &cached.namespace().unwrap_or_default(),
    )
    .get_opt(&cached.name_any())
    .await?
    .filter(|c| {
        c.uid() == cached.uid()
            && c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_ref())
                .is_none()
    });
    let Some(claim) = claim else {
        return Ok(Action::await_change());
    };
    let span = tracing::info_span!(
        "provision",
        namespace = claim.namespace().unwrap_or_default(),
        claim = claim.name_any(),
        uid = claim.uid().unwrap_or_default()
    );
    let class_name = class.name_any();
    let labels = [class_name.as_str(), ""];
    let _in_flight = InFlight::start(&ctx.metrics, "provision");
    let started = Instant::now();
    let result = provision(&claim, &class, &ctx).instrument(span).await;
    // A pass that left a copy running provisioned nothing yet.
    if !matches!(result, Ok(None)) {
        ctx.metrics
            .provision_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
    match result {
        // The claim is reconciled again when its copy ends.
        Ok(None) => Ok(Action::await_change()),
        Ok(Some(pv)) => {
            ctx.metrics.provision_total.with_label_values(&labels).inc();
            ctx.backoff.succeeded(&failure_key(&claim));
            let note = format!("Successfully provisioned volume {pv}");
            ctx.publish(
                &claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                "Provision",
                note,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.metrics
                .provision_failed_total
                .with_label_values(&labels)
                .inc();
            ctx.metrics
                .failures
                .with_label_values(&["provision", e.reason()])
                .inc();
            tracing::warn!(claim = claim.name_any(), error = %e, "provisioning failed");
            ctx.publish(
                &claim,
                EventType::Warning,
                "ProvisioningFailed",
                "Provision",
                event_note(&e),
            )
            .await;
            Err(e)
        }
    }
}

pub fn error_policy(claim: Arc<CachedPvc>, _: &Error, ctx: Arc<Context>) -> Action {
    ctx.backoff.failed(failure_key(claim.as_ref()))
}

/// Whether this provisioner should provision the claim now, and with which class.
fn wanted_class(claim: &CachedPvc, ctx: &Context) -> Result<Wanted> {
    if claim.meta().deletion_timestamp.is_some()
        || claim
            .spec
            .volume_name
            .as_deref()
            .is_some_and(|v| !v.is_empty())
    {
        return Ok(Wanted::No);
    }
    let ours = &ctx.settings.provisioner;
    let annotated = [ANN_STORAGE_PROVISIONER, ANN_STORAGE_PROVISIONER_BETA]
        .iter()
        .any(|a| claim.annotations().get(*a) == Some(ours));
    let Some(class_name) = claim.class() else {
        return Ok(Wanted::No);
    };
    let class = match ctx.classes.get(&ObjectRef::new(class_name)) {
        Some(class) => class,
        None if annotated => return Err(Error::ClassNotFound(class_name.into())),
        None => return Ok(Wanted::ClassNotCached),
    };
    if !(annotated || ctx.settings.serves(&class.provisioner)) {
        return Ok(Wanted::No);
    }
    // Delayed binding: the scheduler picks the node first and says so on the claim, as the
    // external-provisioner library waits for it.
    if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
        && !claim.annotations().contains_key(ANN_SELECTED_NODE)
    {
        return Ok(Wanted::No);
    }
    // Provisioned already: the PV exists and the PV controller binds the claim.
    let pv = objects::pv_name(&claim.uid().unwrap_or_default());
    if ctx.volumes.get(&ObjectRef::new(&pv)).is_some() {
        return Ok(Wanted::No);
    }
    Ok(Wanted::Yes(class))
}

/// The PV made for the claim; `None` while its clone's copy runs.
async fn provision(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    ctx: &Arc<Context>,
) -> Result<Option<String>> {
    let started = Instant::now();
    // Everything is validated before anything is created anywhere.
    let params = ClassParams::parse(&class.parameters.clone().unwrap_or_default())?;
    objects::check_claim(claim)?;
    let pv_type = params.pv_type.unwrap_or(ctx.settings.pv_type);
    if pv_type == PvType::Glusterfs && !ctx.settings.endpoints {
        return Err(Error::InvalidClaim(format!(
            "class {} asks for glusterfs PVs, which need Endpoints and Services; this install \
             has no access to them (MANAGE_ENDPOINTS=false) and makes CSI PVs only",
            class.name_any()
        )));
    }
    let (backend, cluster) = ctx.backend_for(&params).await?;
    let size_gib = objects::requested_gib(claim)?;
    let source = super::clone::source(claim, &params, cluster, size_gib, ctx).await?;
    let (namespace, name, uid) = (
        claim.namespace().unwrap_or_default(),
        claim.name_any(),
        claim.uid().unwrap_or_default(),
    );
    let pv_name = objects::pv_name(&uid);
    // The cache can lag behind a PV this provisioner just made; re-making its volume would
    // hand it a second GID.
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    if pvs.get_metadata_opt(&pv_name).await?.is_some() {
        return Ok(Some(pv_name));
    }
    let claim = &super::unfinished::hold(claim, ctx).await?;
    let volume = naming::volume_name(
        params.volume_name_prefix.as_deref(),
        &namespace,
        &name,
        &uid,
    );
    let note = format!(
        "External provisioner is provisioning volume {volume} for claim {namespace}/{name}"
    );
    ctx.publish(claim, EventType::Normal, "Provisioning", "Provision", note)
        .await;
    ctx.metrics.step(Step::Claim, started);

    ctx.fenced_provisioning().await?;
    let gid = ctx
        .gids
        .allocate(&pv_name, params.gid_min, params.gid_max, ctx.gids_in_use())?;
    let identity = Identity {
        kube_cluster: ctx.settings.kube_cluster.clone(),
        claim_uid: uid.clone(),
        pv: pv_name.clone(),
        policy: Policy::of_pv(class.reclaim_policy.as_deref()),
        provisioner: ctx.settings.provisioner.clone(),
    };
    let req = VolumeRequest {
        name: &volume,
        cluster,
        durability: params.durability,
        size_gib,
        gid,
        options: &params.volume_options,
        size_limit: match params.backend {
            BackendParams::Ssh { size_limit, .. } => size_limit,
            BackendParams::Heketi(_) => SizeLimitChoice::default(),
        },
        promised: Promised(&|each| ctx.promises().for_each(each)),
        fence: Fenced(&|| Box::pin(ctx.fenced_provisioning())),
        identity: &identity,
    };
    let made = match backend.create(&req).await {
        Ok(made) => made,
        Err(e) => {
            ctx.gids.release(&pv_name);
            return Err(e);
        }
    };
    crate::failpoint::crash_point("after-volume-create");
    // No claim is bound to a half copy: the PV waits for the whole of it.
    if let Some(source) = &source
        && super::clone::copied(claim, source, &made, ctx).await? == super::clone::Copy::Running
    {
        return Ok(None);
    }
    // A volume an earlier attempt made (whose reply was lost) keeps the GID it has.
    let gid = made.gid;
    if gid != req.gid {
        tracing::info!(
            volume = made.volume,
            allocated = req.gid,
            gid,
            "the volume has the GID of an earlier attempt"
        );
        ctx.gids.reserve(&pv_name, gid);
    }
    tracing::info!(volume = made.volume, gid, "gluster volume ready");

    let ep_name = objects::endpoints_name(&params.endpoint_prefix, &uid);
    let mounter = match pv_type {
        PvType::Glusterfs => Mounter::Glusterfs {
            endpoints: &ep_name,
        },
        PvType::Csi => Mounter::Csi {
            driver: &ctx.settings.csi_driver,
            servers: &made.addresses,
        },
    };
    let pv = objects::persistent_volume(
        claim,
        class,
        &objects::VolumeFacts {
            provisioner: &ctx.settings.provisioner,
            volume: &made.volume,
            annotations: &made.annotations,
            mounter,
            gid,
            size_gib,
        },
    );
    crate::failpoint::pause_point("before-pv-create");
    // A leader paused past its lease stops here: the new one may have bound the claim to this
    // very volume, which must then stay.
    ctx.fenced_provisioning().await?;
    let kube_started = Instant::now();
    let owner = objects::Owner {
        pv: &pv_name,
        claim_namespace: &namespace,
        claim_name: &name,
        claim_uid: &uid,
    };
    let kube_side = async {
        // CSI PVs name their servers themselves.
        if pv_type == PvType::Glusterfs {
            ctx.apply_endpoints(&ep_name, owner, &made.addresses)
                .await?;
        }
        match pvs.create(&PostParams::default(), &pv).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            other => other
                .map(drop)
                .and_then(|()| crate::failpoint::fail_point("after-pv-create"))
                .map_err(Error::from),
        }
    };
    if let Err(e) = kube_side.await {
        // A timeout or a broken connection can come after the API server stored the PV: a
        // PV may name the volume, which must then stay. Only a PV known to be absent lets the
        // volume go; when even that cannot be told, everything is kept for the retry, which
        // finds the volume again by its name (from the claim UID) and keeps its GID.
        match pvs.get_metadata_opt(&pv_name).await {
            Ok(Some(_)) => {
                tracing::info!(pv = pv_name, error = %e, "the PV was saved despite the error");
                return Ok(Some(pv_name));
            }
            Ok(None) => {}
            Err(lookup) => {
                tracing::warn!(pv = pv_name, error = %lookup, "cannot tell whether the PV was saved; keeping the volume");
                return Err(e);
            }
        }
        // Without its PV the volume would be orphaned if the claim went away: undo it all
        // (the claim's finalizer removes it anyway, should this fail).
        ctx.fenced().await?;
        let recorded = Recorded {
            pv: &pv_name,
            volume: &made.volume,
            annotations: &made.annotations,
        };
        if let Err(cleanup) = backend.delete(recorded, identity.no_pv()).await {
            tracing::error!(volume, error = %cleanup, "cleanup of the volume failed");
            let note = format!("cleanup of volume {volume} failed: {cleanup}");
            ctx.publish(
                claim,
                EventType::Warning,
                "ProvisioningCleanupFailed",
                "Provision",
                note,
            )
            .await;
        }
        if ctx.fenced().await.is_ok() {
            ctx.delete_endpoints(&ep_name, owner).await.ok();
        }
        ctx.gids.release(&pv_name);
        return Err(e);
    }
    tracing::info!(pv = pv_name, "PV created");
    // Settled on the next reconcile if this fails: the PV exists.
    if let Err(e) = super::unfinished::let_go(&claim.metadata, ctx).await {
        tracing::warn!(error = %e, "cannot remove the claim's finalizer yet");
    }
    ctx.metrics.step(Step::Pv, kube_started);
    Ok(Some(pv_name))
}
