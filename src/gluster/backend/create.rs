//! Making a volume: placing its bricks, then the gluster work on them.

use std::future::Future;

use futures::TryFutureExt;

use super::*;
use crate::metrics::Step;

impl SshBackend {
    pub async fn make(&self, req: &VolumeRequest<'_>) -> Result<ProvisionedVolume> {
        let started = Instant::now();
        let rank = self.asked.fetch_add(1, Ordering::Relaxed);
        let cluster = &self.cluster(req.cluster)?;
        let bricks = req.durability.bricks() as usize;
        if bricks > cluster.nodes.len() {
            return Err(Error::Placement(format!(
                "volumetype {} needs {bricks} bricks on distinct nodes, but cluster {:?} has {} nodes",
                req.durability,
                cluster.name,
                cluster.nodes.len()
            )));
        }
        // The readings placement needs are taken while the name is looked up: a burst's first
        // claim takes each fresh, and it leads the burst.
        let (listed, (mut capacity, unreadable), health) = tokio::join!(
            self.listed(cluster, req.name),
            self.capacity(cluster),
            self.health(cluster)
        );
        let mut existing = None;
        if listed? {
            existing = self.volume_info(cluster, req.name).await?;
        }
        if let Some(volume) = &existing {
            finishable(volume, req.identity)?;
        }
        // An attempt that lost its lease leaves what it laid out for the next leader; when that
        // is this process again, it finishes on the same bricks instead of leaving them behind.
        let laid = {
            let placing = self.placing.lock().expect("placing lock");
            placing.get(req.name).map(|(_, bricks)| bricks.clone())
        };
        let bricks = match (&existing, laid) {
            (Some(volume), _) => self.bricks_of(cluster, volume)?,
            (None, Some(bricks)) => bricks,
            (None, None) => {
                // A node is left out for the first reason found: its glusterd, its roots.
                let health: Vec<NodeHealth> = health
                    .iter()
                    .map(|h| match unreadable.iter().find(|u| u.node == h.node) {
                        Some(u) if h.is_up() => u.clone(),
                        _ => h.clone(),
                    })
                    .collect();
                capacity.retain(|c| health.iter().any(|h| h.node == c.node.name && h.is_up()));
                // Counting and placing under one lock: claims of a burst see each other.
                let mut placing = self.placing.lock().expect("placing lock");
                // A volume placed earlier whose PV now exists is counted from its PV.
                let mut saved = Vec::new();
                req.promised.each(&mut |p| {
                    if placing.contains_key(&p.volume) {
                        saved.push(p.volume.clone());
                    }
                    place::count_promises(&mut capacity, [&p]);
                });
                for name in saved {
                    placing.remove(&name);
                }
                place::count_promises(&mut capacity, placing.values().map(|(p, _)| p));
                let bytes = req.size_gib << 30;
                let need = place::Need {
                    durability: req.durability,
                    bytes,
                    size_limit: (req.size_limit.kind)
                        .unwrap_or_else(|| place::default_size_limit(cluster)),
                };
                let bricks = place::place_bricks(cluster, &capacity, need, req.name).map_err(
                    |e| match (e, health::describe_down(&health)) {
                        (Error::Placement(m), Some(down)) => {
                            Error::Placement(format!("{m}; {down}"))
                        }
                        (e, _) => e,
                    },
                )?;
                let held = bricks.iter().map(|b| (b.node.clone(), b.path.clone()));
                let promise = Promise {
                    volume: req.name.to_string(),
                    bricks: held.collect(),
                    bytes,
                    arbiter_bytes: need.arbiter_bytes(),
                };
                placing.insert(req.name.to_string(), (promise, bricks.clone()));
                bricks
            }
        };
        let placed = self.metrics.step(Step::Place, started);
        let making = self.making.acquire().await.expect("never closed");
        self.metrics.step(Step::Queue, placed);
        let done = self
            .build(cluster, req, rank, existing.as_ref(), &bricks)
            .await;
        drop(making);
        if let Err(e) = done {
            // A volume this attempt created is removed again; one found from an earlier attempt
            // is left for the next retry to finish, and so is everything once the lease is
            // lost: the new leader may be finishing the same volume.
            if existing.is_none()
                && !matches!(e, Error::LostLease)
                && let Err(cleanup) = self
                    .remove(&cluster.name, req.name, &bricks, req.identity.no_pv())
                    .await
            {
                tracing::error!(volume = req.name, error = %cleanup, "cleanup after a failed create failed");
            }
            return Err(e);
        }
        Ok(ProvisionedVolume {
            name: req.name.to_string(),
            cluster: cluster.name.clone(),
            bricks,
        })
    }

    /// The gluster work proper for a volume on chosen bricks: image bricks, brick directories,
    /// create (unless `existing`), options, start, quota. Nothing is looked up, so with no
    /// `existing` volume it is the least any tool must do for such a volume. Its bricks, then
    /// its gluster commands, wait their turn behind those of volumes of a lower `rank` (asked
    /// for earlier).
    async fn build(
        &self,
        cluster: &Cluster,
        req: &VolumeRequest<'_>,
        rank: u64,
        existing: Option<&Volume>,
        bricks: &[Brick],
    ) -> Result<()> {
        // Placement gives every brick of a volume the same size limit.
        let size_limit = bricks.first().map_or(SizeLimit::Quota, |b| b.size_limit);
        let quota = size_limit == SizeLimit::Quota;
        let bytes = image::image_bytes(req.size_gib, req.durability.data_bricks());
        let arbiter = match req.durability {
            Durability::Arbiter { average_file_kib } => {
                image::arbiter_image_bytes(req.size_gib, average_file_kib)
            }
            _ => bytes,
        };
        let lay = self.lay_bricks(bricks, bytes, arbiter, req.gid);
        let laying = self.turn(&self.laying, rank).await;
        self.fenced_step(req, Step::Bricks, lay).await?;
        drop(laying);
        // A volume keeps its turn from `create` to `start`: given back between its commands,
        // the turn went to a later volume's command, and a burst's first volume queued again
        // before each of its own.
        let commanding = self.turn(&self.commanding, rank).await;
        let name = req.name;
        if existing.is_none() {
            // The name is this claim's alone: one that exists is a retried create's own.
            let create = cli::create_args(name, req.durability, bricks);
            let create = self.gluster_tolerant(cluster, create, &["already exists"]);
            self.fenced_step(req, Step::Create, create).await?;
        }
        let limit = cli::limit_options(size_limit, req.size_limit.strict);
        let identity = req.identity.options();
        for set in cli::options_args(name, req.gid, req.options, limit, &identity) {
            let set = self.gluster(cluster, set).map_ok(drop);
            self.fenced_step(req, Step::Options, set).await?;
        }
        if !existing.is_some_and(Volume::is_started) {
            crate::failpoint::pause_point("before-volume-start");
            let start = self.gluster(cluster, cli::start_args(name)).map_ok(drop);
            self.fenced_step(req, Step::Start, start).await?;
        }
        // Quota's commands wait for no turn: many `quota enable` at once cost less each.
        drop(commanding);
        if quota {
            // Quota needs a started volume. Enabling it turns quota-deem-statfs on, so df in a
            // mount shows the limit as the size.
            let enable =
                self.gluster_tolerant(cluster, cli::quota_enable_args(name), &["already enabled"]);
            self.fenced_step(req, Step::Quota, enable).await?;
            let limit = cli::quota_limit_args(name, req.size_gib);
            let limit = self.gluster(cluster, limit).map_ok(drop);
            self.fenced_step(req, Step::Quota, limit).await?;
        }
        Ok(())
    }
}

impl SshBackend {
    /// A place at `gate` in the turn of `rank`, the wait timed as the queue.
    async fn turn<'g>(&self, gate: &'g turns::Gate, rank: u64) -> turns::Pass<'g> {
        let waited = Instant::now();
        let pass = gate.enter(rank).await;
        self.metrics.step(Step::Queue, waited);
        pass
    }

    /// `write` once the lease is checked, timed as `step`.
    async fn fenced_step(
        &self,
        req: &VolumeRequest<'_>,
        step: Step,
        write: impl Future<Output = Result<()>>,
    ) -> Result<()> {
        req.fence.check().await?;
        let started = Instant::now();
        write.await?;
        self.metrics.step(step, started);
        Ok(())
    }
}

/// Whether a volume of the name a request wants is an earlier attempt's, to finish: one that
/// records the request's identity (any policy: the class's may have changed since), or one never
/// started that records none (the attempt died before recording it, with the options set before
/// the start). Anything else is someone else's volume of that name.
fn finishable(volume: &Volume, wanted: &Identity) -> Result<()> {
    match Identity::of(volume).map_err(Error::NotOurs)? {
        Some(r) if wanted.same_volume(&r) => Ok(()),
        None if !volume.is_started() => Ok(()),
        Some(r) => Err(Error::NotOurs(format!(
            "volume {} exists, made by Kubernetes cluster {} for claim UID {} and PV {}; this \
             request is for claim UID {} of cluster {}",
            volume.name, r.kube_cluster, r.claim_uid, r.pv, wanted.claim_uid, wanted.kube_cluster
        ))),
        None => Err(Error::NotOurs(format!(
            "volume {} exists, started, and records no identity: not made for this claim",
            volume.name
        ))),
    }
}

impl SshBackend {
    /// Each brick's image (of `bytes`, an arbiter's of `arbiter_bytes`) when its root keeps
    /// sizes by images, then its directory, group-owned by the GID with setgid so files keep the
    /// group: what a brick is before gluster uses it.
    pub(super) async fn lay_bricks(
        &self,
        bricks: &[Brick],
        bytes: u64,
        arbiter_bytes: u64,
        gid: u32,
    ) -> Result<()> {
        // One round trip a brick, on every node at once.
        self.on_bricks(bricks.iter(), |b| match b.size_limit {
            SizeLimit::Image => {
                let bytes = if b.arbiter { arbiter_bytes } else { bytes };
                ("sh", image::create_args(b, bytes, gid))
            }
            SizeLimit::Quota => {
                let mut args = words(&["-d", "-m", "2775", "-g", &gid.to_string()]);
                args.push(path_arg(&b.path));
                ("install", args)
            }
        })
        .await
        .map(drop)
    }
}
