//! Claims whose `dataSource` names another claim: the source is checked before anything is
//! made, and its volume's files are copied into the new volume before the PV exists, so no
//! claim is ever bound to a half copy. The copy is a job of its own ([`Copies`]), and the
//! volume is marked once it is copied whole. A crash mid-copy leaves no PV and no mark: the
//! next attempt finds the volume again by its name, ends the copy left running, and copies
//! anew into it, emptied.
//!
//! `dataSource` is written by the claim's author, so nothing is taken from it but a name in
//! the claim's own namespace; what that claim is and has is read from the objects themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

use super::Context;
use crate::config::{BackendParams, ClassParams};
use crate::gluster::naming;
use crate::k8s::cached::CachedPvc;
use crate::k8s::objects::{self, ANN_CLUSTER, ANN_PROVISIONED_BY};
use crate::volumes::{Fenced, Made};
use crate::{Error, Result};

/// A claim's volume to copy from, checked.
#[derive(Clone, Debug)]
pub(super) struct Source {
    /// `namespace/name`.
    claim: String,
    volume: String,
    cluster: String,
}

fn refused(message: String) -> Error {
    Error::InvalidClaim(message)
}

/// The name of the claim `claim` is to be a clone of, when it asks for one; anything else as
/// a data source (snapshots, another namespace, other kinds) is refused.
pub(super) fn source_name(claim: &PersistentVolumeClaim) -> Result<Option<&str>> {
    let Some(spec) = claim.spec.as_ref() else {
        return Ok(None);
    };
    // With AnyVolumeDataSource the API server mirrors dataSource into dataSourceRef; a
    // dataSourceRef of its own (another kind, another namespace) is no clone.
    if let Some(r) = &spec.data_source_ref {
        // The core group is written either way: null or "".
        let group = |g: &Option<String>| g.as_deref().unwrap_or_default().to_string();
        let mirrored = spec.data_source.as_ref().is_some_and(|d| {
            d.kind == r.kind && d.name == r.name && group(&d.api_group) == group(&r.api_group)
        });
        if !mirrored
            || r.namespace
                .as_ref()
                .is_some_and(|ns| Some(ns) != claim.metadata.namespace.as_ref())
        {
            return Err(refused(format!(
                "dataSourceRef {} {:?}{}: only a claim of the same namespace can be cloned",
                r.kind,
                r.name,
                r.namespace
                    .as_ref()
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default()
            )));
        }
    }
    let Some(source) = &spec.data_source else {
        return Ok(None);
    };
    if source.kind != "PersistentVolumeClaim"
        || source.api_group.as_deref().is_some_and(|g| !g.is_empty())
    {
        return Err(refused(format!(
            "dataSource {} {:?}: only a PersistentVolumeClaim can be cloned (no snapshots)",
            source.kind, source.name
        )));
    }
    Ok(Some(&source.name))
}

/// The volume the claim's data source holds: a Bound claim of the same namespace, whose PV
/// this provisioner made for it over SSH in `cluster` (the new volume's), no larger than
/// `size_gib`.
pub(super) async fn source(
    claim: &PersistentVolumeClaim,
    params: &ClassParams,
    cluster: Option<&str>,
    size_gib: u64,
    ctx: &Context,
) -> Result<Option<Source>> {
    let Some(name) = source_name(claim)? else {
        return Ok(None);
    };
    let namespace = claim.namespace().unwrap_or_default();
    let what = format!("source claim {namespace}/{name}");
    if let BackendParams::Heketi(_) = params.backend {
        return Err(refused(format!(
            "{what}: clones are copied over SSH; this class uses Heketi, which this provisioner \
             cannot copy into"
        )));
    }
    let cluster = ctx.ssh()?.cluster(cluster)?.name.clone();
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace);
    let source = claims
        .get_opt(name)
        .await?
        .ok_or_else(|| refused(format!("{what} not found")))?;
    let phase = source.status.as_ref().and_then(|s| s.phase.as_deref());
    let bound_to = source.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    let (Some("Bound"), Some(pv_name)) = (phase, bound_to) else {
        return Err(refused(format!(
            "{what} is {}: only a Bound claim can be cloned",
            phase.unwrap_or("Pending")
        )));
    };
    let pv = Api::<PersistentVolume>::all(ctx.client.clone())
        .get_opt(pv_name)
        .await?
        .ok_or_else(|| refused(format!("{what}: its PV {pv_name} is gone")))?;
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let source_uid = source.uid().unwrap_or_default();
    if claim_ref.and_then(|r| r.uid.as_deref()) != Some(source_uid.as_str()) {
        return Err(refused(format!("{what}: PV {pv_name} is not bound to it")));
    }
    let by = pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str);
    if by != Some(ctx.settings.provisioner.as_str()) {
        return Err(refused(format!(
            "{what}: its PV {pv_name} was provisioned by {}, not by this provisioner ({})",
            by.unwrap_or("nobody (made by hand)"),
            ctx.settings.provisioner
        )));
    }
    let volume = objects::volume_of(&pv).unwrap_or_default().to_string();
    // A PV's path is editable: only the volume made for the source claim is copied.
    if !naming::derives_from(&volume, &source_uid) {
        return Err(refused(format!(
            "{what}: PV {pv_name} names volume {volume:?}, which was not made for that claim"
        )));
    }
    match pv.annotations().get(ANN_CLUSTER) {
        Some(c) if *c == cluster => {}
        Some(c) => {
            return Err(refused(format!(
                "{what}: its volume is in cluster {c:?}, this class makes volumes in {cluster:?}; \
                 clones are copied within one cluster"
            )));
        }
        None => {
            return Err(refused(format!(
                "{what}: its volume is served by Heketi; clones are copied between volumes \
                 of the SSH backend"
            )));
        }
    }
    let capacity = pv.spec.as_ref().and_then(|s| s.capacity.as_ref());
    let source_gib = objects::storage_gib(capacity.and_then(|c| c.get("storage")))?;
    if source_gib > size_gib {
        return Err(refused(format!(
            "{what} is {source_gib}Gi, larger than this claim's {size_gib}Gi: a clone is at \
             least as large as its source"
        )));
    }
    Ok(Some(Source {
        claim: format!("{namespace}/{name}"),
        volume,
        cluster,
    }))
}

/// Copies run beside the claims' reconciles, not in them: each is a task of its own, keyed by
/// the volume it copies into, at most `limit` at once in each gluster cluster. Claims,
/// deletions and expansions never wait on one; the clone claim stays Pending meanwhile, and is
/// reconciled again when its copy ends.
pub(super) struct Copies {
    limit: usize,
    /// Each cluster's copy slots, by cluster name.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    jobs: Mutex<HashMap<String, Job>>,
    /// Claims whose copy ended, for the claims controller.
    ended: mpsc::UnboundedSender<ObjectRef<CachedPvc>>,
}

enum Job {
    Running(AbortHandle),
    /// Taken once, by the claim's next reconcile.
    Ended(Result<()>),
}

/// Where a clone's copy stands.
#[derive(Debug, PartialEq)]
pub(super) enum Copy {
    /// Copied whole: the PV can be made.
    Done,
    /// Queued or running; the claim is reconciled again when it ends.
    Running,
}

impl Copies {
    /// With `limit` copies at once per cluster; `ended` hears each claim whose copy ended.
    pub(super) fn new(limit: usize, ended: mpsc::UnboundedSender<ObjectRef<CachedPvc>>) -> Self {
        Self {
            limit: limit.max(1),
            slots: Mutex::default(),
            jobs: Mutex::default(),
            ended,
        }
    }

    fn slots(&self, cluster: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().expect("copy slots lock");
        let slots = slots.entry(cluster.to_string());
        slots
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone()
    }

    /// How the copy into `dest` stands here: `None` when none runs or ended unseen; an ended
    /// copy's result is handed out once.
    fn take(&self, dest: &str) -> Option<Result<Copy>> {
        let mut jobs = self.jobs.lock().expect("copy jobs lock");
        match jobs.get(dest)? {
            Job::Running(_) => Some(Ok(Copy::Running)),
            Job::Ended(_) => match jobs.remove(dest) {
                Some(Job::Ended(result)) => Some(result.map(|()| Copy::Done)),
                _ => unreachable!("the job just seen"),
            },
        }
    }

    /// Runs `copy` as the job of `dest` within a slot of `cluster`, unless one runs already;
    /// `claim` is reconciled again once it ends.
    fn start(
        self: &Arc<Self>,
        dest: &str,
        cluster: &str,
        claim: ObjectRef<CachedPvc>,
        copy: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let mut jobs = self.jobs.lock().expect("copy jobs lock");
        if matches!(jobs.get(dest), Some(Job::Running(_))) {
            return;
        }
        let (copies, slots, key) = (self.clone(), self.slots(cluster), dest.to_string());
        let task = tokio::spawn(async move {
            let result = match slots.acquire_owned().await {
                Ok(_slot) => copy.await,
                Err(_) => unreachable!("the copy slots are never closed"),
            };
            let mut jobs = copies.jobs.lock().expect("copy jobs lock");
            // Unless ended meanwhile: its claim is gone.
            if let Some(job @ Job::Running(_)) = jobs.get_mut(&key) {
                *job = Job::Ended(result);
                drop(jobs);
                let _ = copies.ended.send(claim);
            }
        });
        jobs.insert(dest.to_string(), Job::Running(task.abort_handle()));
    }

    /// Stops the job of `dest` here, running or queued (the node's side is ended apart).
    pub(super) fn end(&self, dest: &str) {
        if let Some(Job::Running(task)) = self.jobs.lock().expect("copy jobs lock").remove(dest) {
            task.abort();
        }
    }
}

/// Whether the source's files are in the volume just made, whole: when not, a copy is started
/// (once) beside the claims' reconciles, and the claim is reconciled again when it ends.
pub(super) async fn copied(
    claim: &PersistentVolumeClaim,
    source: &Source,
    made: &Made,
    ctx: &Arc<Context>,
) -> Result<Copy> {
    if let Some(copy) = ctx.copies.take(&made.volume) {
        return copy;
    }
    // Copied by an attempt before a crash, or by another leader.
    if ctx.ssh()?.copied(&source.cluster, &made.volume).await? {
        return Ok(Copy::Done);
    }
    let wake = ObjectRef::new(&claim.name_any()).within(&claim.namespace().unwrap_or_default());
    let copy = copy(
        claim.clone(),
        source.clone(),
        made.volume.clone(),
        made.gid,
        ctx.clone(),
    );
    ctx.copies.start(&made.volume, &source.cluster, wake, copy);
    Ok(Copy::Running)
}

/// Copies the source's files into `dest`, telling the claim when the copy starts and ends.
async fn copy(
    claim: PersistentVolumeClaim,
    source: Source,
    dest: String,
    gid: u32,
    ctx: Arc<Context>,
) -> Result<()> {
    // A leader stopped here may wake after its successor bound the clone: the fence, then the
    // node's own check of the volume's mark, keep it from emptying what a pod has written.
    crate::failpoint::pause_point("before-clone-copy");
    ctx.fenced().await?;
    let note = format!(
        "Copying the files of claim {} (volume {}) into volume {dest}",
        source.claim, source.volume
    );
    ctx.publish(&claim, EventType::Normal, "CloneStarted", "Provision", note)
        .await;
    let started = Instant::now();
    let counter = ctx
        .metrics
        .clone_copied_bytes
        .with_label_values(&[&source.cluster]);
    let counted = std::sync::atomic::AtomicU64::new(0);
    // The counter grows as the copy does; a copy started over counts its bytes again.
    let count = |bytes: u64| {
        let before = counted.fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
        counter.inc_by(bytes.saturating_sub(before));
    };
    let copied = ctx
        .ssh()?
        .copy_volume(
            &source.cluster,
            &source.volume,
            &dest,
            gid,
            Fenced(&|| Box::pin(ctx.fenced())),
            &count,
        )
        .await;
    let copied = match copied {
        Ok(copied) => copied,
        Err(e) => {
            tracing::warn!(volume = dest, error = %e, "clone copy failed");
            return Err(e);
        }
    };
    count(copied.bytes);
    let note = format!(
        "Copied {} MiB from claim {} in {:.1} s on {}",
        copied.bytes >> 20,
        source.claim,
        started.elapsed().as_secs_f64(),
        copied.node
    );
    ctx.publish(
        &claim,
        EventType::Normal,
        "CloneFinished",
        "Provision",
        note,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    fn claim_ref(name: &str) -> ObjectRef<CachedPvc> {
        ObjectRef::new(name).within("ns")
    }

    /// A copy that runs until told how it ended, counting its starts.
    fn job(
        started: &Arc<AtomicUsize>,
    ) -> (
        oneshot::Sender<Result<()>>,
        impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let (end, ended) = oneshot::channel();
        let started = started.clone();
        (end, async move {
            started.fetch_add(1, Ordering::SeqCst);
            ended.await.unwrap()
        })
    }

    #[tokio::test]
    async fn a_copy_runs_once_and_its_end_is_told_once() {
        let (tx, mut woken) = mpsc::unbounded_channel();
        let copies = Arc::new(Copies::new(2, tx));
        let started = Arc::new(AtomicUsize::new(0));
        assert!(copies.take("vol_a").is_none());
        let (end, copy) = job(&started);
        copies.start("vol_a", "c", claim_ref("a"), copy);
        // Asked again while it runs: no second copy.
        let (_, again) = job(&started);
        copies.start("vol_a", "c", claim_ref("a"), again);
        assert_eq!(copies.take("vol_a").unwrap().unwrap(), Copy::Running);
        end.send(Ok(())).unwrap();
        assert_eq!(woken.recv().await.unwrap(), claim_ref("a"));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(copies.take("vol_a").unwrap().unwrap(), Copy::Done);
        assert!(copies.take("vol_a").is_none());

        let (end, copy) = job(&started);
        copies.start("vol_a", "c", claim_ref("a"), copy);
        end.send(Err(Error::LostLease)).unwrap();
        woken.recv().await.unwrap();
        assert!(matches!(copies.take("vol_a"), Some(Err(Error::LostLease))));
        assert!(copies.take("vol_a").is_none());
    }

    #[tokio::test]
    async fn copies_beyond_the_limit_wait_and_each_cluster_has_its_own() {
        let (tx, mut woken) = mpsc::unbounded_channel();
        let copies = Arc::new(Copies::new(1, tx));
        let started = Arc::new(AtomicUsize::new(0));
        let (end_a, a) = job(&started);
        let (end_b, b) = job(&started);
        let (end_c, c) = job(&started);
        copies.start("vol_a", "one", claim_ref("a"), a);
        copies.start("vol_b", "one", claim_ref("b"), b);
        copies.start("vol_c", "two", claim_ref("c"), c);
        let settled = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            started.load(Ordering::SeqCst)
        };
        assert_eq!(settled().await, 2, "vol_b waits for cluster one's slot");
        assert_eq!(copies.take("vol_b").unwrap().unwrap(), Copy::Running);
        end_a.send(Ok(())).unwrap();
        assert_eq!(woken.recv().await.unwrap(), claim_ref("a"));
        assert_eq!(settled().await, 3);
        end_b.send(Ok(())).unwrap();
        end_c.send(Ok(())).unwrap();
    }

    #[tokio::test]
    async fn an_ended_copy_wakes_nobody() {
        let (tx, mut woken) = mpsc::unbounded_channel();
        let copies = Arc::new(Copies::new(1, tx));
        let started = Arc::new(AtomicUsize::new(0));
        let (end, copy) = job(&started);
        copies.start("vol_a", "c", claim_ref("a"), copy);
        copies.end("vol_a");
        assert!(copies.take("vol_a").is_none());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(end.send(Ok(())).is_err(), "the aborted copy still listens");
        // The only sender left is the job set's own.
        drop(copies);
        assert!(woken.recv().await.is_none());
    }

    fn claim(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "ns"}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn only_a_claim_of_the_same_namespace_is_a_clone_source() {
        let pvc = serde_json::json!({"kind": "PersistentVolumeClaim", "name": "src"});
        assert_eq!(
            source_name(&claim(serde_json::json!({"dataSource": pvc}))).unwrap(),
            Some("src")
        );
        let mirrored = serde_json::json!({"dataSource": pvc, "dataSourceRef": pvc});
        assert_eq!(source_name(&claim(mirrored)).unwrap(), Some("src"));
        let core =
            serde_json::json!({"kind": "PersistentVolumeClaim", "name": "src", "apiGroup": ""});
        let mirrored = serde_json::json!({"dataSource": pvc, "dataSourceRef": core});
        assert_eq!(source_name(&claim(mirrored)).unwrap(), Some("src"));
        assert_eq!(source_name(&claim(serde_json::json!({}))).unwrap(), None);
        for (spec, want) in [
            (
                serde_json::json!({"dataSource": {"kind": "VolumeSnapshot", "name": "s",
                                                  "apiGroup": "snapshot.storage.k8s.io"}}),
                "only a PersistentVolumeClaim",
            ),
            (
                serde_json::json!({"dataSource": pvc, "dataSourceRef":
                    {"kind": "PersistentVolumeClaim", "name": "src", "namespace": "other"}}),
                "in namespace other",
            ),
            (
                serde_json::json!({"dataSourceRef": {"kind": "Widget", "name": "w",
                                                     "apiGroup": "example.com"}}),
                "only a claim of the same namespace",
            ),
        ] {
            let err = source_name(&claim(spec.clone())).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }
}
