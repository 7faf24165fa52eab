//! The SSH backend: makes and removes volumes by running the gluster CLI and a few coreutils on
//! the nodes of the topology. Every step is idempotent, so a retry or a restart after a crash
//! picks up where the last attempt stopped.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use std::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use futures::future::join_all;

use super::health::{self, Answer, NodeHealth};
use super::plan::{self, Brick, NodeCapacity, Promise, RootSpace};
use super::ssh::SshExecutor;
use super::xml::{self, Peer, Volume};
use crate::config::{Cluster, Node, Topology};
use crate::k8s::objects::{ANN_BRICKS, ANN_CLUSTER, brick_record};
use crate::metrics::Metrics;
use crate::volumes::{Made, Recorded, VolumeBackend, VolumeRequest};
use crate::{Error, Result};

/// A volume that exists and is started.
#[derive(Clone, Debug)]
pub struct ProvisionedVolume {
    pub name: String,
    pub cluster: String,
    pub bricks: Vec<Brick>,
}

pub struct SshBackend {
    topology: Topology,
    ssh: SshExecutor,
    metrics: Arc<Metrics>,
    /// Gluster commands start on the nodes in turn, spreading glusterd's coordinating work
    /// and the SSH sessions.
    next_node: AtomicUsize,
    /// Volumes placed whose PV is not in the caller's promises yet, by name: a burst's claims
    /// count each other's bricks.
    placing: std::sync::Mutex<HashMap<String, Promise>>,
    /// The last probe of each cluster's nodes, by cluster name.
    health: std::sync::Mutex<HashMap<String, HealthReading>>,
    /// Held by the one caller probing; the others go on with the last reading meanwhile.
    probing: tokio::sync::Mutex<()>,
    /// When each node last completed a gluster command, by node name: a probe that times out
    /// while the node completes others has met a long queue, not a hung glusterd.
    answered: std::sync::Mutex<HashMap<String, Instant>>,
    /// The last reading of each node's brick roots. Claims of a burst place their bricks from
    /// one reading instead of each asking every node (nothing is reserved by placement, so a
    /// fresher reading would not place them differently).
    space: HashMap<String, tokio::sync::Mutex<Option<SpaceReading>>>,
    /// The last `volume list` of each cluster, by cluster name, and when it was begun.
    listing: HashMap<String, tokio::sync::Mutex<Option<Listing>>>,
    /// Volumes being made at once, from their first brick directory to their size limit; the
    /// others wait, first come first served (tokio's semaphore is fair). glusterd grants its
    /// cluster lock to no queued command in particular, so with every volume of a burst in
    /// flight their steps interleave and all finish at the end; with a few at a time, a volume
    /// keeps its place from one step to the next and the burst finishes in order. Deletions
    /// are not held back: nobody waits on one in particular.
    making: tokio::sync::Semaphore,
}

/// When the brick roots of a node were read, and what they had.
type SpaceReading = (Instant, Vec<RootSpace>);

/// When a `volume list` was begun, and the names it had.
type Listing = (Instant, HashSet<String>);

/// When a cluster's nodes were probed, and how each stood.
type HealthReading = (Instant, Arc<Vec<NodeHealth>>);

/// How long a probe of the nodes' glusterd is used; a node found failing is marked down
/// at once.
const HEALTH_TTL: Duration = Duration::from_secs(5);

/// A glusterd that has not answered `peer status` in this time is hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reading of brick root space is used.
const SPACE_TTL: Duration = Duration::from_secs(2);

fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|w| w.to_string()).collect()
}

impl SshBackend {
    /// At most `volumes` volumes are being made at once.
    pub fn new(
        topology: Topology,
        ssh: SshExecutor,
        metrics: Arc<Metrics>,
        volumes: usize,
    ) -> Self {
        let space = topology
            .clusters
            .iter()
            .flat_map(|c| &c.nodes)
            .map(|n| (n.name.clone(), Default::default()))
            .collect();
        let listing = topology
            .clusters
            .iter()
            .map(|c| (c.name.clone(), Default::default()))
            .collect();
        Self {
            space,
            listing,
            health: Default::default(),
            probing: Default::default(),
            answered: Default::default(),
            placing: Default::default(),
            topology,
            ssh,
            metrics,
            next_node: AtomicUsize::default(),
            making: tokio::sync::Semaphore::new(volumes.max(1)),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn cluster(&self, name: Option<&str>) -> Result<&Cluster> {
        self.topology
            .cluster(name)
            .ok_or_else(|| Error::UnknownCluster(name.unwrap_or_default().to_string()))
    }

    /// Makes (or finds and completes) the volume `req` describes, started and size-limited.
    pub async fn make(&self, req: &VolumeRequest<'_>) -> Result<ProvisionedVolume> {
        let cluster = self.cluster(req.cluster)?;
        let bricks = req.durability.bricks() as usize;
        if bricks > cluster.nodes.len() {
            return Err(Error::Placement(format!(
                "volumetype {} needs {bricks} bricks on distinct nodes, but cluster {:?} has {} nodes",
                req.durability,
                cluster.name,
                cluster.nodes.len()
            )));
        }
        let mut existing = None;
        if self.listed(cluster, req.name).await? {
            existing = self.volume_info(cluster, req.name).await?;
        }
        let bricks = match &existing {
            Some(volume) => self.bricks_of(cluster, volume)?,
            None => {
                let (mut capacity, unreadable) = self.capacity(cluster).await;
                // A node is left out for the first reason found: its glusterd, its roots.
                let health: Vec<NodeHealth> = self
                    .health(cluster)
                    .await
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
                    plan::count_promises(&mut capacity, [&p]);
                });
                for name in saved {
                    placing.remove(&name);
                }
                plan::count_promises(&mut capacity, placing.values());
                let bytes = req.size_gib << 30;
                let bricks =
                    plan::place_bricks(cluster, &capacity, req.durability, bytes, req.name)
                        .map_err(|e| match (e, health::describe_down(&health)) {
                            (Error::Placement(m), Some(down)) => {
                                Error::Placement(format!("{m}; {down}"))
                            }
                            (e, _) => e,
                        })?;
                let held = bricks.iter().map(|b| (b.node.clone(), b.path.clone()));
                let promise = Promise {
                    volume: req.name.to_string(),
                    bricks: held.collect(),
                    bytes,
                };
                placing.insert(req.name.to_string(), promise);
                bricks
            }
        };
        let making = self.making.acquire().await.expect("never closed");
        let done = self.build(cluster, req, existing.as_ref(), &bricks).await;
        drop(making);
        if let Err(e) = done {
            // A volume this attempt created is removed again; one found from an earlier attempt
            // is left for the next retry to finish, and so is everything once the lease is
            // lost: the new leader may be finishing the same volume.
            if existing.is_none()
                && !matches!(e, Error::LostLease)
                && let Err(cleanup) = self.remove(&cluster.name, req.name, &bricks).await
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

    /// The gluster work proper for a volume on chosen bricks: brick directories, create
    /// (unless `existing`), options, start, size limit. Nothing is looked up, so with no
    /// `existing` volume it is the least any tool must do for such a volume (the benchmark's
    /// baseline).
    pub async fn build(
        &self,
        cluster: &Cluster,
        req: &VolumeRequest<'_>,
        existing: Option<&Volume>,
        bricks: &[Brick],
    ) -> Result<()> {
        let gid = req.gid.to_string();
        req.fence.check().await?;
        // Brick directories group-owned by the GID with setgid, so files keep the group.
        let dirs = bricks.iter().map(|b| {
            let args = vec![
                "-d".into(),
                "-m".into(),
                "2775".into(),
                "-g".into(),
                gid.clone(),
                path_arg(&b.path),
            ];
            async move { self.ssh.run_ok(&b.ssh_address, "install", &args).await }
        });
        join_all(dirs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let name = req.name;
        if existing.is_none() {
            // The name is this claim's alone: one that exists is a retried create's own.
            let create = plan::create_args(name, req.durability, bricks);
            req.fence.check().await?;
            self.gluster_tolerant(cluster, create, &["already exists"])
                .await?;
        }
        for set in plan::options_args(name, req.gid, req.options) {
            req.fence.check().await?;
            self.gluster(cluster, set).await?;
        }
        if !existing.is_some_and(Volume::is_started) {
            crate::failpoint::pause_point("before-volume-start");
            req.fence.check().await?;
            self.gluster(cluster, plan::start_args(name)).await?;
        }
        // Quota needs a started volume. Enabling it turns quota-deem-statfs on, so df in a
        // mount shows the limit as the size.
        req.fence.check().await?;
        self.gluster_tolerant(cluster, plan::quota_enable_args(name), &["already enabled"])
            .await?;
        let limit = plan::quota_limit_args(name, req.size_gib);
        req.fence.check().await?;
        self.gluster(cluster, limit).await?;
        Ok(())
    }

    /// Sets the size the volume enforces (its quota limit): expansion.
    pub async fn resize(&self, cluster: &str, name: &str, size_gib: u64) -> Result<()> {
        let cluster = self.cluster(Some(cluster))?;
        self.gluster(cluster, plan::quota_limit_args(name, size_gib))
            .await
            .map(drop)
    }

    /// Stops and deletes the volume (already gone counts as done) and removes its brick
    /// directories. When the volume still exists, its own brick list is used, and checked
    /// before anything is stopped: see [`Self::checked_volume`].
    pub async fn remove(&self, cluster: &str, name: &str, bricks: &[Brick]) -> Result<()> {
        let cluster = self.cluster(Some(cluster))?;
        let Some(bricks_now) = self.checked_volume(cluster, name).await? else {
            return self.remove_bricks(name, bricks).await;
        };
        self.stop(cluster, name).await?;
        self.delete(cluster, name).await?;
        self.remove_bricks(name, &bricks_now).await
    }

    /// The bricks of the volume `name` (`None`: no such volume), once every one of them is
    /// `<brick root>/<name>/brick` of a topology node. A volume of that name with a brick
    /// anywhere else is not one this provisioner made (or was moved by hand): it is neither
    /// stopped nor deleted. The look-up and the stop are one after the other, never at once.
    async fn checked_volume(&self, cluster: &Cluster, name: &str) -> Result<Option<Vec<Brick>>> {
        let Some(volume) = self.volume_info(cluster, name).await? else {
            return Ok(None);
        };
        match self.bricks_of(cluster, &volume) {
            Err(Error::Placement(why)) => Err(Error::NotOurs(why)),
            other => other.map(Some),
        }
    }

    async fn stop(&self, cluster: &Cluster, name: &str) -> Result<()> {
        let stop = plan::stop_args(name);
        self.gluster_tolerant(
            cluster,
            stop,
            &["is not in the started state", "does not exist"],
        )
        .await
    }

    async fn delete(&self, cluster: &Cluster, name: &str) -> Result<()> {
        let delete = plan::delete_args(name);
        self.gluster_tolerant(cluster, delete, &["does not exist"])
            .await
    }

    async fn remove_bricks(&self, name: &str, bricks: &[Brick]) -> Result<()> {
        self.placing.lock().expect("placing lock").remove(name);
        let removals = bricks.iter().map(|b| {
            let args = vec![
                "-rf".into(),
                "--one-file-system".into(),
                path_arg(b.volume_dir()),
            ];
            async move { self.ssh.run_ok(&b.ssh_address, "rm", &args).await }
        });
        join_all(removals)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// The cluster and checked bricks a PV records.
    fn recorded_bricks<'r>(&self, volume: Recorded<'r>) -> Result<(&'r str, Vec<Brick>)> {
        let invalid = |message: String| Error::InvalidVolume {
            pv: volume.pv.to_string(),
            message,
        };
        if !plan::is_volume_name(volume.volume) {
            return Err(invalid(format!(
                "path {:?} is not a volume name this provisioner makes",
                volume.volume
            )));
        }
        let cluster = volume
            .annotations
            .get(ANN_CLUSTER)
            .ok_or_else(|| invalid(format!("no {ANN_CLUSTER} annotation")))?;
        let record = volume.annotations.get(ANN_BRICKS).map(String::as_str);
        let bricks = self.bricks_from_record(cluster, volume.volume, record.unwrap_or_default())?;
        Ok((cluster, bricks))
    }

    /// Brick records as stored on a PV, checked against the topology before anything is removed:
    /// the path must be `<a brick root of that node>/<volume>/brick`.
    pub fn bricks_from_record(
        &self,
        cluster: &str,
        volume: &str,
        record: &str,
    ) -> Result<Vec<Brick>> {
        let cluster = self.cluster(Some(cluster))?;
        record
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (node, path) = r.split_once(':').unwrap_or((r, ""));
                let node = cluster
                    .nodes
                    .iter()
                    .find(|n| n.name == node)
                    .ok_or_else(|| {
                        Error::Placement(format!(
                            "brick {r:?}: node not in cluster {:?}",
                            cluster.name
                        ))
                    })?;
                self.checked_brick(node, volume, Path::new(path))
            })
            .collect()
    }

    fn checked_brick(
        &self,
        node: &crate::config::Node,
        volume: &str,
        path: &Path,
    ) -> Result<Brick> {
        node.brick_roots
            .iter()
            .map(|root| Brick::new(node, root, volume))
            .find(|b| b.path == path)
            .ok_or_else(|| {
                Error::Placement(format!(
                    "brick {}:{} is not <brick root>/{volume}/brick of that node",
                    node.name,
                    path.display()
                ))
            })
    }

    /// Maps the bricks gluster reports (`address:/path`) back to topology nodes.
    fn bricks_of(&self, cluster: &Cluster, volume: &Volume) -> Result<Vec<Brick>> {
        volume
            .bricks()
            .map(|(host, path)| {
                let node = cluster
                    .nodes
                    .iter()
                    .find(|n| n.storage_address.to_string() == host || n.ssh_address == host)
                    .ok_or_else(|| {
                        Error::Placement(format!(
                            "volume {} has a brick on {host}, not in the topology",
                            volume.name
                        ))
                    })?;
                self.checked_brick(node, &volume.name, Path::new(path))
            })
            .collect()
    }

    /// Whether `volume list` has the name, from a listing begun after this call: the claims of
    /// a burst share one or two listings instead of each asking glusterd.
    async fn listed(&self, cluster: &Cluster, name: &str) -> Result<bool> {
        let asked = Instant::now();
        let slot = &self.listing[&cluster.name];
        let mut last = slot.lock().await;
        if let Some((begun, names)) = last.as_ref()
            && *begun >= asked
        {
            return Ok(names.contains(name));
        }
        let begun = Instant::now();
        let out = self.gluster(cluster, plan::list_args()).await?;
        let names: HashSet<String> = xml::parse_volume_list(&out)?.into_iter().collect();
        let found = names.contains(name);
        *last = Some((begun, names));
        Ok(found)
    }

    pub async fn volume_info(&self, cluster: &Cluster, name: &str) -> Result<Option<Volume>> {
        match self.gluster(cluster, plan::info_args(name)).await {
            Ok(out) => Ok(xml::parse_volume_info(&out)?
                .into_iter()
                .find(|v| v.name == name)),
            Err(Error::Gluster { message, .. }) if message.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Free bytes of every brick root of every node, asked in parallel. Nodes that do not
    /// answer are left out, and listed with the reason.
    pub async fn capacity<'c>(
        &self,
        cluster: &'c Cluster,
    ) -> (Vec<NodeCapacity<'c>>, Vec<NodeHealth>) {
        let asks = cluster.nodes.iter().map(|node| self.node_space(node));
        let (mut out, mut left_out) = (Vec::new(), Vec::new());
        for (node, result) in cluster.nodes.iter().zip(join_all(asks).await) {
            match result {
                Ok(c) => out.push(c),
                Err(e) => {
                    tracing::warn!(node = node.name, error = %e, "node left out of placement");
                    let why = format!("brick roots not readable: {e}");
                    left_out.push(NodeHealth::left_out(&node.name, why));
                }
            }
        }
        (out, left_out)
    }

    /// Space of each brick root of `node`, at most [`SPACE_TTL`] old; an error when a root is
    /// missing. Callers arriving while the node is asked wait for that answer.
    pub async fn node_space<'n>(&self, node: &'n Node) -> Result<NodeCapacity<'n>> {
        let Some(slot) = self.space.get(&node.name) else {
            let roots = self.read_space(node).await?;
            return Ok(NodeCapacity { node, roots });
        };
        let mut last = slot.lock().await;
        if let Some((at, roots)) = last.as_ref()
            && at.elapsed() < SPACE_TTL
        {
            return Ok(NodeCapacity {
                node,
                roots: roots.clone(),
            });
        }
        let roots = self.read_space(node).await?;
        *last = Some((Instant::now(), roots.clone()));
        Ok(NodeCapacity { node, roots })
    }

    async fn read_space(&self, node: &Node) -> Result<Vec<RootSpace>> {
        let mut args = words(&["-f", "-c", "%a %b %S"]);
        args.extend(node.brick_roots.iter().map(|r| path_arg(r)));
        let out = self.ssh.run_ok(&node.ssh_address, "stat", &args).await?;
        let roots = node
            .brick_roots
            .iter()
            .zip(out.lines())
            .map(|(root, line)| {
                let n: Vec<u64> = line
                    .split_whitespace()
                    .map(|n| n.parse().unwrap_or(0))
                    .collect();
                let (avail, blocks, block_size) = (n.first(), n.get(1), n.get(2));
                let bytes = |b: Option<&u64>| b.unwrap_or(&0) * block_size.unwrap_or(&0);
                RootSpace {
                    root: root.clone(),
                    free: bytes(avail),
                    total: bytes(blocks),
                    promised: 0,
                }
            })
            .collect();
        Ok(roots)
    }

    /// How each node of the cluster stands, probed at most every [`HEALTH_TTL`]. While one
    /// caller probes (an unreachable node can take its connect timeout), the others go on with
    /// the last reading; only the very first reading is waited for.
    pub async fn health(&self, cluster: &Cluster) -> Arc<Vec<NodeHealth>> {
        let last = || {
            self.health
                .lock()
                .expect("health lock")
                .get(&cluster.name)
                .cloned()
        };
        let fresh = |r: &Option<HealthReading>| match r {
            Some((at, h)) if at.elapsed() < HEALTH_TTL => Some(h.clone()),
            _ => None,
        };
        let reading = last();
        if let Some(health) = fresh(&reading) {
            return health;
        }
        let _probing = match (self.probing.try_lock(), &reading) {
            (Ok(guard), _) => guard,
            (Err(_), Some((_, health))) => return health.clone(),
            (Err(_), None) => self.probing.lock().await,
        };
        // Probed by another caller while this one waited.
        if let Some(health) = fresh(&last()) {
            return health;
        }
        let began = Instant::now();
        let probes = cluster.nodes.iter().map(|node| async move {
            match self.peers(node).await {
                Ok(peers) => Answer::Peers(peers),
                Err(
                    e @ (Error::SshConnect { .. }
                    | Error::SshCommand { .. }
                    | Error::SshHostKey { .. }),
                ) => Answer::Down(e.to_string()),
                Err(_) if self.answered_since(&node.name, began) => {
                    tracing::debug!(node = node.name, "probe timed out while glusterd works");
                    Answer::Busy
                }
                Err(e) => Answer::Down(format!("glusterd does not answer: {e}")),
            }
        });
        let answers = join_all(probes).await;
        let health = Arc::new(health::judge(cluster, &answers));
        let before = reading.map(|(_, h)| h);
        for h in health.iter() {
            self.metrics
                .glusterd_up
                .with_label_values(&[&h.node])
                .set(h.is_up().into());
            let was = before
                .as_ref()
                .and_then(|b| b.iter().find(|p| p.node == h.node));
            if was.is_none_or(|w| w.is_up() != h.is_up()) {
                match &h.down {
                    Some(why) => tracing::warn!(node = h.node, why, "node left out"),
                    None => tracing::info!(node = h.node, "node up"),
                }
            }
        }
        self.health
            .lock()
            .expect("health lock")
            .insert(cluster.name.clone(), (Instant::now(), health.clone()));
        health
    }

    fn answered_since(&self, node: &str, since: Instant) -> bool {
        let answered = self.answered.lock().expect("answered lock");
        answered.get(node).is_some_and(|at| *at >= since)
    }

    /// Leaves `node` out until the next probe: a command on it failed as a node that is down
    /// fails.
    fn mark_down(&self, cluster: &Cluster, node: &str, why: &Error) {
        let mut readings = self.health.lock().expect("health lock");
        if let Some((_, health)) = readings.get_mut(&cluster.name) {
            let health = Arc::make_mut(health);
            if let Some(h) = health.iter_mut().find(|h| h.node == node) {
                h.down = Some(why.to_string());
            }
        }
    }

    /// The trusted-pool peers `node`'s glusterd knows.
    /// Gluster's own timeout bounds a hung glusterd; SSH's retries a restarting sshd.
    pub async fn peers(&self, node: &Node) -> Result<Vec<Peer>> {
        let timeout = format!("--timeout={}", PROBE_TIMEOUT.as_secs());
        let args = words(&["--mode=script", &timeout, "peer", "status", "--xml"]);
        let out = self.ssh.run_ok(&node.ssh_address, "gluster", &args).await?;
        xml::parse_peer_status(&out)
    }

    async fn gluster_tolerant(
        &self,
        cluster: &Cluster,
        args: Vec<String>,
        ok_if: &[&str],
    ) -> Result<()> {
        match self.gluster(cluster, args).await {
            Err(Error::Gluster { message, .. }) if ok_if.iter().any(|m| message.contains(m)) => {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// Runs `gluster --mode=script --xml ARGS` on a node of the cluster and checks its result.
    /// Lock contention and lost connections are retried with backoff, on the next node.
    pub(super) async fn gluster(&self, cluster: &Cluster, args: Vec<String>) -> Result<String> {
        let command = args.join(" ");
        // `volume create`, `volume quota`, ...: a fixed set, fit for a metric label.
        let operation = args.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
        let mut full = words(&["--mode=script", "--xml"]);
        full.extend(args);
        // Each attempt, a retry included, goes to the next node that is up.
        let run = || async {
            let health = self.health(cluster).await;
            let up: Vec<&Node> = cluster
                .nodes
                .iter()
                .filter(|n| health.iter().any(|h| h.node == n.name && h.is_up()))
                .collect();
            let candidates = if up.is_empty() {
                cluster.nodes.iter().collect()
            } else {
                up
            };
            let i = self.next_node.fetch_add(1, Ordering::Relaxed);
            let node = candidates[i % candidates.len()];
            self.metrics
                .gluster_started
                .with_label_values(&[&operation, &node.name])
                .inc();
            let started = Instant::now();
            let result = async {
                let out = self.ssh.run(&node.ssh_address, "gluster", &full).await?;
                if out.stdout.trim().is_empty() {
                    return Err(Error::Gluster {
                        command: command.clone(),
                        message: format!("{} ({})", out.stderr.trim(), out.status),
                    });
                }
                xml::parse_status(&command, &out.stdout)?;
                Ok(out.stdout)
            }
            .await;
            self.metrics
                .gluster_op(&operation, &node.name, started, &result);
            if result.is_ok() {
                let mut answered = self.answered.lock().expect("answered lock");
                answered.insert(node.name.clone(), Instant::now());
            }
            if let Err(e) = &result
                && e.is_node_down()
            {
                self.mark_down(cluster, &node.name, e);
            }
            result
        };
        run.retry(
            // Locks are held for a second or two at most: a short, capped delay waits no longer
            // than needed, and enough attempts outlast a burst of other volumes' operations.
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(30)
                .with_jitter(),
        )
        .when(Error::is_transient)
        .notify(|e, after| tracing::debug!(error = %e, ?after, "retrying gluster command"))
        .await
    }
}

/// Paths come from the validated topology, so they are plain; `openssh` quotes them anyway.
/// The SSH backend records the volume's cluster and bricks on its PV.
impl VolumeBackend for SshBackend {
    async fn create(&self, req: &VolumeRequest<'_>) -> Result<Made> {
        let made = self.make(req).await?;
        let addresses = plan::storage_addresses(&made.bricks);
        Ok(Made {
            volume: made.name,
            addresses,
            gid: req.gid,
            annotations: [
                (ANN_CLUSTER.to_string(), made.cluster),
                (ANN_BRICKS.to_string(), brick_record(&made.bricks)),
            ]
            .into(),
        })
    }

    async fn delete(&self, volume: Recorded<'_>) -> Result<()> {
        let (cluster, bricks) = self.recorded_bricks(volume)?;
        self.remove(cluster, volume.volume, &bricks).await?;
        tracing::info!(volume = volume.volume, "gluster volume and bricks removed");
        Ok(())
    }

    /// Brick directories are made before the volume, so any brick root of the cluster may
    /// hold one of the name; removing one that is not there is a no-op.
    async fn abandon(&self, name: &str, cluster: Option<&str>) -> Result<()> {
        if !plan::is_volume_name(name) {
            return Err(Error::Placement(format!("{name:?} is not a volume name")));
        }
        let cluster = self.cluster(cluster)?;
        let everywhere: Vec<Brick> = cluster
            .nodes
            .iter()
            .flat_map(|n| n.brick_roots.iter().map(move |r| Brick::new(n, r, name)))
            .collect();
        let exists = self.checked_volume(cluster, name).await?.is_some();
        if exists {
            self.stop(cluster, name).await?;
            self.delete(cluster, name).await?;
        }
        self.remove_bricks(name, &everywhere).await?;
        tracing::info!(
            volume = name,
            exists,
            "what was made for a deleted claim is removed"
        );
        Ok(())
    }

    /// Raises the enforced size. Each brick root must have the room: free bytes, and beyond
    /// what its volumes (this one at its present size included) are promised. Growing by
    /// adding bricks is not done yet, so a root short of room is an error naming it.
    async fn expand(
        &self,
        volume: Recorded<'_>,
        from_gib: u64,
        to_gib: u64,
        promised: &[Promise],
    ) -> Result<()> {
        let (cluster, bricks) = self.recorded_bricks(volume)?;
        let nodes = &self.cluster(Some(cluster))?.nodes;
        let more = to_gib.saturating_sub(from_gib) << 30;
        let mut capacity = Vec::new();
        // Recorded bricks are checked against the topology, so their nodes are in it.
        for node in nodes
            .iter()
            .filter(|n| bricks.iter().any(|b| b.node == n.name))
        {
            capacity.push(self.node_space(node).await?);
        }
        plan::count_promises(&mut capacity, promised);
        for brick in &bricks {
            let roots = capacity
                .iter()
                .filter(|c| c.node.name == brick.node)
                .flat_map(|c| &c.roots);
            let root = roots.clone().find(|r| brick.path.starts_with(&r.root));
            if let Some(root) = root.filter(|r| r.room() < more) {
                return Err(Error::Placement(format!(
                    "cannot grow {} by {} GiB: brick root {}:{} has room for {} GiB (free, less \
                     what its volumes are promised)",
                    volume.volume,
                    to_gib - from_gib,
                    brick.node,
                    root.root.display(),
                    root.room() >> 30
                )));
            }
        }
        self.resize(cluster, volume.volume, to_gib).await
    }

    async fn addresses(&self, volume: Recorded<'_>) -> Result<Vec<IpAddr>> {
        let (_, bricks) = self.recorded_bricks(volume)?;
        Ok(plan::storage_addresses(&bricks))
    }
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}
