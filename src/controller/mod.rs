//! The Kubernetes-facing side: two kube-rs controllers sharing one [`Context`].
//!
//! - claims ([`provision`]): an unbound PVC of a class naming us gets a volume and a PV;
//! - volumes ([`delete`]): a Released PV of ours with policy Delete is removed with its volume;
//!   a live one gets its Endpoints/Service back if someone deleted them.

pub mod delete;
mod expand;
mod names;
pub mod provision;
pub mod slim;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::config::{BackendParams, ClassParams, HeketiParams, PvType};
use crate::gid::GidAllocator;
use crate::gluster::SshBackend;
use crate::heketi::volumes as heketi;
use crate::heketi::{Credentials, HeketiClient, HeketiHttp, HeketiVolumes};
use crate::http::Health;
use crate::k8s::cached::{CachedPv, CachedPvc};
use crate::k8s::objects::{self, LABEL_PV};
use crate::metrics::Metrics;
use crate::volumes::Backend;
use crate::{Error, Result};
use names::Names;

const FIELD_MANAGER: &str = "glusterfs-provisioner";
/// The removed in-tree provisioner, whose classes and PVs `--migrate-in-tree` takes over.
pub const IN_TREE: &str = "kubernetes.io/glusterfs";
const SECRET_TYPE: &str = "kubernetes.io/glusterfs";

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The name StorageClasses use in `provisioner:`.
    pub provisioner: String,
    /// Claims provisioned (and volumes deleted) at the same time.
    pub workers: u16,
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
    pub recorder: Recorder,
    /// The SSH backend, when a topology is configured.
    pub ssh: Option<SshBackend>,
    pub heketi: HeketiHttp,
    pub gids: GidAllocator,
    pub volumes: Store<CachedPv>,
    pub classes: Store<StorageClass>,
    endpoints: Names,
    services: Names,
    /// Opened once every cache holds its first full list; reconciles wait behind it.
    synced: tokio::sync::watch::Sender<bool>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// GIDs of the PVs this provisioner made, whatever their class.
    fn gids_in_use(&self) -> Vec<(String, u32)> {
        self.volumes
            .state()
            .iter()
            .filter(|pv| self.is_ours(pv))
            .filter_map(|pv| {
                let gid = pv.annotations().get(objects::ANN_GID)?.parse().ok()?;
                Some((pv.name_any(), gid))
            })
            .collect()
    }

    fn is_ours(&self, pv: &CachedPv) -> bool {
        pv.annotations()
            .get(objects::ANN_PROVISIONED_BY)
            .is_some_and(|p| self.settings.serves(p))
    }

    fn ssh(&self) -> Result<&SshBackend> {
        self.ssh.as_ref().ok_or_else(|| {
            Error::InvalidParameter(
                "this class uses the SSH backend (no resturl), but the provisioner runs without \
                 a topology file (--topology)"
                    .into(),
            )
        })
    }

    /// A Heketi backend as `params` describe it, with the user's key read from its Secret.
    async fn heketi(&self, params: &HeketiParams) -> Result<HeketiVolumes> {
        let key = match &params.secret {
            Some(secret) => Some(self.secret_key(secret).await?),
            None => params.user_key.clone(),
        };
        // Without a user Heketi runs without authentication (restauthenabled: "false").
        let credentials = Credentials {
            key: (!params.user.is_empty()).then(|| key.unwrap_or_default()),
            user: params.user.clone(),
        };
        let client = HeketiClient::new(self.heketi.clone(), &params.url, credentials);
        Ok(HeketiVolumes::new(client, params.clone()))
    }

    async fn secret_key(&self, secret: &crate::config::SecretRef) -> Result<String> {
        let bad = |why: &str| Error::HeketiCredentials(format!("Secret {secret}: {why}"));
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret.namespace);
        let found = match api.get_opt(&secret.name).await {
            Err(kube::Error::Api(s)) if s.code == 403 => return Err(bad("not allowed to read it")),
            other => other?,
        };
        let found = found.ok_or_else(|| bad("not found"))?;
        if found.type_.as_deref() != Some(SECRET_TYPE) {
            return Err(bad(&format!("type must be {SECRET_TYPE}")));
        }
        let key = found
            .data
            .as_ref()
            .and_then(|d| d.get("key"))
            .ok_or_else(|| bad("no \"key\" in its data"))?;
        String::from_utf8(key.0.clone()).map_err(|_| bad("\"key\" is not UTF-8 text"))
    }

    /// The backend that made a PV's volume.
    async fn backend_of(&self, pv: &CachedPv) -> Result<Backend<'_>> {
        let heketi = [heketi::ANN_VOLUME_ID, heketi::ANN_URL]
            .iter()
            .any(|a| pv.annotations().contains_key(*a));
        Ok(if heketi {
            Backend::Heketi(Box::new(self.heketi_of(pv).await?))
        } else {
            Backend::Ssh(self.ssh()?)
        })
    }

    /// The Heketi server, user and key of a PV: what ours recorded (the key from the recorded
    /// Secret, else from the class); for one the in-tree provisioner made, its class.
    async fn heketi_of(&self, pv: &CachedPv) -> Result<HeketiVolumes> {
        self.caches_synced().await;
        let class = || -> Result<HeketiParams> {
            let name = pv.spec.storage_class_name.clone().unwrap_or_default();
            let class = self
                .classes
                .get(&ObjectRef::new(&name))
                .ok_or_else(|| Error::ClassNotFound(name.clone()))?;
            match ClassParams::parse(&class.parameters.clone().unwrap_or_default())?.backend {
                BackendParams::Heketi(params) => Ok(params),
                BackendParams::Ssh { .. } => Err(Error::InvalidParameter(format!(
                    "StorageClass {name:?} has no resturl"
                ))),
            }
        };
        let params = match HeketiVolumes::params_from(pv.annotations()) {
            Some(mut params) => {
                if params.secret.is_none() && !params.user.is_empty() {
                    params.user_key = class()?.user_key;
                }
                params
            }
            None => class()?,
        };
        self.heketi(&params).await
    }

    async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let mut regarding = obj.object_ref(&());
        // Events about cluster-scoped objects (PVs) live in "default". API servers before 1.22
        // validate an event before filling in its namespace from the request, and refuse it
        // unless the reference names that namespace too.
        regarding.namespace.get_or_insert_with(|| "default".into());
        if let Err(e) = self.recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// Creates or repairs the Endpoints and Service of a claim's volume (server-side apply, so
    /// a second call changes nothing).
    async fn apply_endpoints(
        &self,
        namespace: &str,
        name: &str,
        claim: (&str, &str),
        addresses: &[std::net::IpAddr],
    ) -> Result<()> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let (claim_name, claim_uid) = claim;
        let svc = objects::service(name, namespace, claim_name, claim_uid);
        Api::<Service>::namespaced(self.client.clone(), namespace)
            .patch(name, &pp, &Patch::Apply(&svc))
            .await?;
        let ep = objects::endpoints(name, namespace, claim_name, claim_uid, addresses);
        Api::<Endpoints>::namespaced(self.client.clone(), namespace)
            .patch(name, &pp, &Patch::Apply(&ep))
            .await?;
        Ok(())
    }

    /// Deletes the Endpoints and Service; already gone is fine.
    async fn delete_endpoints(&self, namespace: &str, name: &str) -> Result<()> {
        let dp = Default::default();
        let svc = Api::<Service>::namespaced(self.client.clone(), namespace);
        ignore_not_found(svc.delete(name, &dp).await.map(drop))?;
        let ep = Api::<Endpoints>::namespaced(self.client.clone(), namespace);
        ignore_not_found(ep.delete(name, &dp).await.map(drop))
    }

    /// Waits until the caches are complete: GIDs and "already provisioned" come from them.
    async fn caches_synced(&self) {
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    /// `Store::wait_until_ready` wakes only one of several concurrent waiters (its oneshot
    /// keeps a single waker), so this one task waits on each store and opens the gate for all.
    async fn sync_caches(&self) -> bool {
        let synced = self.volumes.wait_until_ready().await.is_ok()
            && self.classes.wait_until_ready().await.is_ok();
        if synced {
            self.endpoints.wait_listed().await;
            self.services.wait_listed().await;
        }
        self.synced.send_replace(synced);
        synced
    }

    fn has_endpoints(&self, namespace: &str, name: &str) -> bool {
        self.endpoints.contains(namespace, name) && self.services.contains(namespace, name)
    }

    /// Exponential per-object backoff; a success resets it.
    fn backoff(&self, key: String) -> Action {
        let mut failures = self.failures.lock().expect("failures lock");
        let n = failures.entry(key).or_default();
        let delay = self.settings.retry_min.saturating_mul(1 << (*n).min(16));
        *n += 1;
        Action::requeue(delay.min(self.settings.retry_max))
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}

pub(crate) fn ignore_not_found(result: std::result::Result<(), kube::Error>) -> Result<()> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => Ok(other?),
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
    );
    let class_stream = class_stream.for_each(|_| async {});
    let (endpoints, ep_stream) = Names::watch(
        Api::<PartialObjectMeta<Endpoints>>::all(client.clone()),
        labelled.clone(),
    );
    let (services, svc_stream) = Names::watch(
        Api::<PartialObjectMeta<Service>>::all(client.clone()),
        labelled,
    );
    let served = settings.clone();
    let (volumes, pv_stream) = cache(
        Api::<CachedPv>::all(client.clone()),
        watcher::Config::default(),
        move |pv| slim::volume(pv, |by| served.serves(by)),
    );
    let (claim_store, claim_stream) = cache(
        Api::<CachedPvc>::all(client.clone()),
        watcher::Config::default(),
        slim::claim,
    );

    let workers = settings.workers;
    let volume_controller = Controller::for_stream(pv_stream.applied_objects(), volumes.clone())
        // Triggered by the caches' own streams, which yield a change only once the cache has
        // it: a repair then never reads a cache older than its trigger.
        .watches_stream(ep_stream, |ep| pv_of(&ep))
        .watches_stream(svc_stream, |svc| pv_of(&svc))
        .with_config(controller::Config::default().concurrency(workers));
    let reporter = Reporter {
        controller: settings.provisioner.clone(),
        instance: Some(settings.instance.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        metrics,
        settings,
        ssh,
        heketi,
        gids: GidAllocator::default(),
        volumes,
        classes,
        endpoints,
        services,
        synced: tokio::sync::watch::Sender::new(false),
        failures: Mutex::default(),
    });

    let claims = Controller::for_stream(claim_stream.applied_objects(), claim_store)
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
    let gauges = refresh_gauges(ctx.clone(), health);
    // The reflectors run until the controllers stop; then they are dropped.
    tokio::select! {
        _ = futures::future::join(claims, volumes) => {}
        _ = class_stream => {}
        _ = gauges => {}
    }
    Ok(())
}

/// Keeps the pool gauges (GIDs per class, volumes per cluster, brick capacity) current. Runs
/// on its own, so slow or unreachable nodes never hold up provisioning.
async fn refresh_gauges(ctx: Arc<Context>, health: Arc<Health>) {
    if !ctx.sync_caches().await {
        return;
    }
    health.set_ready(true);
    let mut tick = tokio::time::interval(ctx.settings.gauge_interval);
    loop {
        tick.tick().await;
        // Right after the caches are filled, then now and then: see `memory::release_free`.
        crate::memory::release_free();
        let m = &ctx.metrics;
        let ours: Vec<_> = ctx
            .volumes
            .state()
            .into_iter()
            .filter(|pv| ctx.is_ours(pv))
            .collect();
        let gids: Vec<u32> = ours
            .iter()
            .filter_map(|pv| pv.annotations().get(objects::ANN_GID)?.parse().ok())
            .collect();
        for class in ctx
            .classes
            .state()
            .iter()
            .filter(|c| ctx.settings.serves(&c.provisioner))
        {
            let name = class.name_any();
            let Ok(params) = ClassParams::parse(&class.parameters.clone().unwrap_or_default())
            else {
                continue;
            };
            let in_use = ours
                .iter()
                .filter(|pv| pv.spec.storage_class_name.as_deref() == Some(&name))
                .count();
            let taken = gids
                .iter()
                .filter(|g| (params.gid_min..=params.gid_max).contains(*g))
                .count();
            let size = u64::from(params.gid_max - params.gid_min) + 1;
            m.gids_in_use.with_label_values(&[&name]).set(in_use as i64);
            m.gids_free
                .with_label_values(&[&name])
                .set(size.saturating_sub(taken as u64) as i64);
        }
        let Some(ssh) = &ctx.ssh else { continue };
        for cluster in &ssh.topology().clusters {
            let count = ours
                .iter()
                .filter(|pv| pv.annotations().get(objects::ANN_CLUSTER) == Some(&cluster.name))
                .count();
            m.volumes
                .with_label_values(&[&cluster.name])
                .set(count as i64);
            let Ok(capacity) = ssh.capacity(cluster).await else {
                continue;
            };
            for node in capacity {
                for space in node.roots {
                    let root = space.root.display().to_string();
                    let labels = [node.node.name.as_str(), root.as_str()];
                    m.brick_bytes
                        .with_label_values(&labels)
                        .set(space.total as f64);
                    m.brick_free_bytes
                        .with_label_values(&labels)
                        .set(space.free as f64);
                }
            }
        }
    }
}

/// A cache of `api`'s objects as `slim` leaves them, and the stream of watch events that keeps
/// it current; an event comes out only once the cache has taken it.
fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
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
