//! The Kubernetes-facing side: two kube-rs controllers sharing one [`Context`].
//!
//! - claims ([`provision`]): an unbound PVC of a class naming us gets a volume and a PV;
//!   one deleted before its PV exists takes what was made for it ([`unfinished`]);
//! - volumes ([`delete`]): a Released PV of ours with policy Delete is removed with its volume;
//!   a live one gets its Endpoints/Service back if someone deleted them.
//!
//! Beside them: `backends` (which backend, Heketi credentials from Secrets), `endpoints`
//! (Endpoints/Service writes and name caches), `sync` (the cache-sync gate), `backoff`
//! (per-object retry delays), `gauges` (the pool gauges loop), `slim` (compact caches).

mod backends;
mod backoff;
mod clone;
pub mod delete;
mod endpoints;
mod events;
pub use events::tell_reloads;
mod expand;
mod gauges;
mod names;
pub mod provision;
mod servers;
pub mod slim;
mod sweep;
mod sync;
mod unfinished;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::config::PvType;
use crate::convert;
use crate::gid::GidAllocator;
use crate::gluster::SshBackend;
use crate::gluster::place::Promise;
use crate::heketi::HeketiHttp;
use crate::heketi::volumes as heketi;
use crate::http::Health;
use crate::identity::{Identity, Policy};
use crate::k8s::cached::{CachedPv, CachedPvc};
use crate::k8s::objects::{self, LABEL_PV};
use crate::leader::{Fence, LeaseSettings};
use crate::metrics::{Metrics, Step};
use crate::{Error, Result};
use names::Names;

/// The removed in-tree provisioner, whose classes and PVs `--migrate-in-tree` takes over.
pub const IN_TREE: &str = "kubernetes.io/glusterfs";

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Kubernetes cluster's id, recorded on every volume made: see [`crate::identity`].
    pub kube_cluster: String,
    /// The name StorageClasses use in `provisioner:`.
    pub provisioner: String,
    /// Claims provisioned (and volumes deleted) at the same time.
    pub workers: u16,
    /// Clone copies running at the same time in each gluster cluster, beside the workers.
    pub clone_copies: u16,
    /// Per-object retry backoff after a failure: doubles from `retry_min` up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Identity in events (`reportingInstance`); the pod name in a cluster.
    pub instance: String,
    /// How often GID, volume and brick capacity gauges are refreshed.
    pub gauge_interval: Duration,
    /// Also serve `kubernetes.io/glusterfs` classes and delete the PVs that provisioner made.
    pub migrate_in_tree: bool,
    /// The kind of PV of classes without `pvtype`.
    pub pv_type: PvType,
    /// The CSI driver named by CSI PVs.
    pub csi_driver: String,
    /// The leader lease every write is fenced by, with leader election on.
    pub lease: Option<LeaseSettings>,
    /// The provisioner's own namespace, where `convert` keeps its records.
    pub namespace: String,
    /// How often a whole volume's health is looked at again (degraded ones: every 15 s).
    pub health_interval: Duration,
    /// Whether this install may read and write Endpoints and Services: `glusterfs` PVs need
    /// them; a CSI-only install (`manifests/csi-only`) grants neither.
    pub endpoints: bool,
    /// The ConfigMap (namespace, name) of the servers of volumes whose bricks moved, which the
    /// node plugin mounts (the `servers` module).
    pub servers_namespace: String,
    pub servers_config_map: String,
}

impl Settings {
    /// Whether a PV made by `provisioner`, or a class naming it, is this provisioner's.
    pub fn serves(&self, provisioner: &str) -> bool {
        provisioner == self.provisioner || (self.migrate_in_tree && provisioner == IN_TREE)
    }
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    events: events::Events,
    /// The SSH backend, when a topology is configured.
    pub ssh: Option<SshBackend>,
    pub heketi: HeketiHttp,
    pub gids: GidAllocator,
    pub volumes: Store<CachedPv>,
    pub classes: Store<StorageClass>,
    /// `convert`'s records: PVs being replaced, whose GIDs stay taken meanwhile.
    records: Store<ConfigMap>,
    endpoints: Names,
    services: Names,
    /// Opened once every cache holds its first full list; reconciles wait behind it.
    synced: tokio::sync::watch::Sender<bool>,
    backoff: backoff::Backoff,
    fence: Option<Fence>,
    /// Clones' copies, running beside the claims' reconciles.
    copies: Arc<clone::Copies>,
    /// PVs whose finalizer was removed lately.
    let_go: delete::LetGo,
}

impl Context {
    /// Ok while this replica may write: see [`Fence`].
    async fn fenced(&self) -> Result<()> {
        match &self.fence {
            Some(fence) => fence.check().await,
            None => Ok(()),
        }
    }

    /// [`Self::fenced`], timed as a step of a provisioning.
    async fn fenced_provisioning(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let fenced = self.fenced().await;
        self.metrics.step(Step::Fence, started);
        fenced
    }

    /// GIDs of the PVs this provisioner made, whatever their class, and of those `convert`
    /// is replacing (between the old PV's deletion and the new one's creation no PV has it).
    fn gids_in_use(&self) -> Vec<(String, u32)> {
        let converting = self.records.state();
        self.volumes
            .state()
            .iter()
            .filter(|pv| self.is_ours(pv))
            .filter_map(|pv| {
                let gid = pv.annotation(objects::ANN_GID)?.parse().ok()?;
                Some((pv.name_any(), gid))
            })
            .chain(converting.iter().filter_map(|cm| convert::reserved_gid(cm)))
            .collect()
    }

    /// What the PVs this provisioner made with the SSH backend hold on their brick roots, one
    /// PV at a time.
    fn promises(&self) -> impl Iterator<Item = Promise> + '_ {
        self.volumes
            .state()
            .into_iter()
            .filter(|pv| self.made_here(pv))
            .filter_map(|pv| {
                let bricks = pv.annotation(objects::ANN_BRICKS)?;
                let gib = objects::storage_gib(pv.spec.capacity.storage.as_ref()).ok()?;
                let volume = pv.spec.gluster_volume(&self.settings.csi_driver)?;
                let arbiter = pv.annotation(objects::ANN_ARBITER);
                Some(objects::promise(volume, bricks, gib, arbiter))
            })
    }

    /// Another PV, whoever made it, that mounts the same gluster volume as `pv` (or, of ours,
    /// names the same Heketi volume id): an admin may have re-exposed a volume by hand.
    fn also_naming(&self, pv: &CachedPv, volume: &str) -> Option<String> {
        let driver = &self.settings.csi_driver;
        let id = pv.annotation(heketi::ANN_VOLUME_ID);
        self.volumes
            .state()
            .into_iter()
            .filter(|other| other.name_any() != pv.name_any())
            .find(|other| {
                other.spec.gluster_volume(driver) == Some(volume)
                    || id.is_some()
                        && self.is_ours(other)
                        && other.annotation(heketi::ANN_VOLUME_ID) == id
            })
            .map(|other| other.name_any())
    }

    /// The identity the volume of `pv`, a PV made here over SSH, records when it is this PV's,
    /// with the PV's reclaim policy. `None` too while `convert` replaces the PV: it makes the
    /// old and new PV Retain for the swap only, which the volume must not keep.
    fn identity_of(&self, pv: &CachedPv) -> Option<Identity> {
        let record = convert::record_name(&pv.name_any());
        let converting = self.records.state().iter().any(|r| r.name_any() == record);
        if !self.made_here(pv) || converting {
            return None;
        }
        let claim = pv.spec.claim_ref.as_ref()?;
        Some(Identity {
            kube_cluster: self.settings.kube_cluster.clone(),
            claim_uid: claim.uid.clone()?,
            pv: pv.name_any(),
            policy: Policy::of_pv(pv.spec.persistent_volume_reclaim_policy.as_deref()),
            provisioner: self.settings.provisioner.clone(),
        })
    }

    /// Made by this provisioner itself, not by the in-tree one it took over from.
    fn made_here(&self, pv: &CachedPv) -> bool {
        pv.annotation(objects::ANN_PROVISIONED_BY) == Some(self.settings.provisioner.as_str())
    }

    fn is_ours(&self, pv: &CachedPv) -> bool {
        pv.annotation(objects::ANN_PROVISIONED_BY)
            .is_some_and(|p| self.settings.serves(p))
    }
}

/// Runs both controllers until a shutdown signal; ready once the caches are filled.
pub async fn run(
    client: Client,
    ssh: Option<SshBackend>,
    heketi: HeketiHttp,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<()> {
    health.set_ready(false);
    let labelled = watcher::Config::default().labels(LABEL_PV);
    let (classes, class_stream) = cache(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
        |class| slim::strip(&mut class.metadata),
        |_| true,
    );
    let (endpoints, ep_stream) = Names::watch_if(
        settings.endpoints,
        Api::<PartialObjectMeta<Endpoints>>::all(client.clone()),
        labelled.clone(),
    );
    let (services, svc_stream) = Names::watch_if(
        settings.endpoints,
        Api::<PartialObjectMeta<Service>>::all(client.clone()),
        labelled,
    );
    let served = settings.clone();
    let (volumes, pv_stream) = cache(
        Api::<CachedPv>::all(client.clone()),
        watcher::Config::default(),
        move |pv| slim::volume(pv, |by| served.serves(by)),
        slim::volume_needed,
    );
    let (claim_store, claim_stream) = cache(
        Api::<CachedPvc>::all(client.clone()),
        watcher::Config::default(),
        slim::claim,
        slim::claim_needed,
    );

    let (records, records_stream) = cache(
        Api::<ConfigMap>::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default().labels(convert::LABEL_RECORD),
        |_| {},
        |_| true,
    );

    let workers = settings.workers;
    let unsettled = pv_stream
        .applied_objects()
        .try_filter(|pv| futures::future::ready(slim::volume_unsettled(pv)));
    // PVs found without Endpoints or Service once the caches are in.
    let (repairs, repair_requests) = tokio::sync::mpsc::unbounded_channel();
    let volume_controller = Controller::for_stream(unsettled, volumes.clone())
        // Triggered by the caches' own streams, which yield a change only once the cache has
        // it: a repair then never reads a cache older than its trigger.
        .watches_stream(ep_stream, |ep| pv_of(&ep))
        .watches_stream(svc_stream, |svc| pv_of(&svc))
        .reconcile_on(UnboundedReceiverStream::new(repair_requests))
        .with_config(controller::Config::default().concurrency(workers));
    // Claims whose clone copy ended, reconciled again.
    let (copies_ended, copy_ends) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter {
        controller: settings.provisioner.clone(),
        instance: Some(settings.instance.clone()),
    };
    let ctx = Arc::new(Context {
        events: events::Events::new(client.clone(), reporter),
        client: client.clone(),
        metrics,
        ssh,
        heketi,
        gids: GidAllocator::default(),
        volumes,
        classes,
        records,
        endpoints,
        services,
        synced: tokio::sync::watch::Sender::new(false),
        backoff: backoff::Backoff::new(settings.retry_min, settings.retry_max),
        fence: settings
            .lease
            .clone()
            .map(|lease| Fence::new(client.clone(), lease)),
        copies: Arc::new(clone::Copies::new(
            settings.clone_copies.into(),
            copies_ended,
        )),
        let_go: Default::default(),
        settings,
    });

    let claims_of_class = claim_store.clone();
    let claims = Controller::for_stream(claim_stream.applied_objects(), claim_store)
        // A claim seen before its class waits for the class, not on a timer.
        .watches_stream(class_stream.applied_objects(), move |class| {
            let name = class.name_any();
            claims_of_class
                .state()
                .iter()
                .filter(|c| c.class() == Some(name.as_str()))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(UnboundedReceiverStream::new(copy_ends))
        .with_config(controller::Config::default().concurrency(workers))
        .shutdown_on_signal()
        .run(provision::reconcile, provision::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "claim reconcile");
            }
        });
    let volumes = volume_controller
        .shutdown_on_signal()
        .run(delete::reconcile, delete::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "volume reconcile");
            }
        });
    tracing::info!(
        provisioner = ctx.settings.provisioner,
        "controllers started"
    );
    let gauges = async {
        if !ctx.sync_caches().await {
            return;
        }
        for pv in ctx.without_endpoints() {
            let _ = repairs.send(pv);
        }
        health.set_ready(true);
        // Holds `repairs` open: the controller would stop with its last trigger stream.
        futures::future::join(
            gauges::refresh_gauges(ctx.clone()),
            sweep::sweep(ctx.clone()),
        )
        .await;
        drop(repairs);
    };
    // The reflectors run until the controllers stop; then they are dropped.
    let records = records_stream.for_each(|_| futures::future::ready(()));
    tokio::select! {
        _ = futures::future::join(claims, volumes) => {}
        _ = gauges => {}
        _ = records => {}
    }
    Ok(())
}

/// A cache of `api`'s objects as `slim` leaves them, those `needed` only, and the stream of
/// watch events that keeps it current; an event comes out only once the cache has taken it.
/// An object no longer needed leaves the cache as if deleted, and triggers no reconcile.
fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
    needed: fn(&K) -> bool,
) -> (
    Store<K>,
    impl futures::Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let updates = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .map_ok(move |event| match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) if !needed(&obj) => {
                watcher::Event::Delete(obj)
            }
            event => event,
        })
        .reflect(writer);
    (store, updates)
}

fn pv_of<K: Resource>(obj: &K) -> Option<ObjectRef<CachedPv>> {
    obj.meta()
        .labels
        .as_ref()?
        .get(LABEL_PV)
        .map(|pv| ObjectRef::new(pv))
}

/// Where an object's failures are counted for backoff.
fn failure_key<K: Resource>(obj: &K) -> String {
    obj.meta().uid.clone().unwrap_or_default()
}

/// The error as an event note (the API caps notes at 1 kB).
fn event_note(e: &Error) -> String {
    let mut s = e.to_string();
    if s.len() > 1000 {
        let mut end = 1000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
