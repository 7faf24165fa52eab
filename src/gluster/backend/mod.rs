//! The SSH backend: makes and removes volumes by running the gluster CLI and a few coreutils on
//! the nodes of the topology. Every step is idempotent, so a retry or a restart after a crash
//! picks up where the last attempt stopped.

mod bricks;
mod clone;
mod create;
mod expand;
mod identity;
mod inventory;
mod moves;
mod probe;
pub mod reload;
mod remove;
mod space;
mod turns;

pub use clone::Copied;
pub use inventory::RootEntry;
pub use moves::{MOVING, NOT_MOVING};
pub use reload::LiveTopology;
use space::SpaceReading;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use std::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use futures::future::join_all;

use super::health::{self, Answer, NodeHealth};
use super::image;
use super::place::{self, Brick, NodeCapacity, Promise, RootSpace};
use super::ssh::SshExecutor;
use super::xml::{self, Peer, Volume};
use super::{cli, naming};
use crate::config::{Cluster, Durability, Node, SizeLimit, Topology};
use crate::identity::{Expected, Identity, POLICY};
use crate::k8s::objects::{ANN_ARBITER, ANN_BRICKS, ANN_CLUSTER, brick_record};
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
    /// Swapped whole when the file changes; each operation takes its cluster's copy at its start.
    topology: LiveTopology,
    ssh: SshExecutor,
    metrics: Arc<Metrics>,
    /// Gluster commands start on the nodes in turn, spreading glusterd's coordinating work
    /// and the SSH sessions.
    next_node: AtomicUsize,
    /// Volumes placed whose PV is not in the caller's promises yet, by name, with their bricks:
    /// a burst's claims count each other's, and a retry after a lost lease lays out its own
    /// again.
    placing: std::sync::Mutex<HashMap<String, (Promise, Vec<Brick>)>>,
    /// The nodes' last probes, and their gluster commands.
    nodes: probe::Nodes,
    /// The last reading of each node's brick roots. Claims of a burst place their bricks from
    /// one reading instead of each asking every node (nothing is reserved by placement, so a
    /// fresher reading would not place them differently).
    space: Slots<SpaceReading>,
    /// The last `volume list` of each cluster, by cluster name, and when it was begun.
    listing: Slots<Listing>,
    /// Volumes being made at once, from their first brick directory to their size limit; the
    /// others wait, first come first served (tokio's semaphore is fair). glusterd grants its
    /// cluster lock to no queued command in particular, so with every volume of a burst in
    /// flight their steps interleave and all finish at the end; with a few at a time, a volume
    /// keeps its place from one step to the next and the burst finishes in order. Deletions
    /// are not held back: nobody waits on one in particular.
    making: tokio::sync::Semaphore,
    /// The order volumes were asked for in: their rank at the gates below, which order the
    /// work of the volumes let in.
    asked: AtomicU64,
    /// Volumes laying out their bricks at once (`mkfs`, mounts: the nodes' CPU and disks).
    laying: turns::Gate,
    /// Volumes sending their gluster commands at once, one after another from `create` to
    /// `start` (not quota's, which cost less each when many run together).
    commanding: turns::Gate,
}

/// When a `volume list` was begun, and the names it had.
type Listing = (Instant, HashSet<String>);

/// A cache slot for each node or cluster name, made when first asked for: nodes and clusters
/// come with the topology file. Those of nodes gone from it stay, a few bytes each.
struct Slots<T>(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<T>>>>>);

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots(Default::default())
    }
}

impl<T> Slots<T> {
    fn of(&self, name: &str) -> Arc<tokio::sync::Mutex<Option<T>>> {
        let mut slots = self.0.lock().expect("slots lock");
        slots.entry(name.to_string()).or_default().clone()
    }
}

/// Of the volumes being made at once, one in this many lays out bricks at a time: with 16 made
/// at once, a gate of 4 finished a burst of 30 image claims in order (median claim Bound at
/// 0.65 of the burst, not 0.75) without a longer burst; 4 made at once in all made it longer
/// (README: image bricks at gluster's own limit).
const LAYING_PER_GATE: usize = 4;

/// Of the volumes being made at once, one in this many sends its gluster commands: glusterd
/// runs one transaction at a time, so a second volume in line hides the CLI's own start, and
/// more only interleave the first volumes' steps with later ones' (with a volume keeping its
/// turn from `create` to `start`, 2 instead of 4 Bound the first of 30 claims at 2.1 to 2.3 s
/// instead of 2.5 to 2.8, the median at 0.60 of the burst instead of 0.63, the burst as long).
const COMMANDING_PER_GATE: usize = 8;

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
        reload::start_series(&metrics, &topology);
        Self {
            space: Default::default(),
            listing: Default::default(),
            nodes: Default::default(),
            placing: Default::default(),
            topology: LiveTopology::new(topology),
            ssh,
            metrics,
            next_node: AtomicUsize::default(),
            making: tokio::sync::Semaphore::new(volumes.max(1)),
            asked: AtomicU64::default(),
            laying: turns::Gate::new(volumes / LAYING_PER_GATE),
            commanding: turns::Gate::new(volumes / COMMANDING_PER_GATE),
        }
    }

    /// The topology in use now: a later change of the file does not change this one.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.get()
    }

    /// The topology it uses, for [`reload::follow`] to swap a new one in.
    pub fn live_topology(&self) -> LiveTopology {
        self.topology.clone()
    }

    /// A copy of the cluster as the topology has it now, which the caller's work keeps to the
    /// end whatever the file says meanwhile.
    pub fn cluster(&self, name: Option<&str>) -> Result<Cluster> {
        let topology = self.topology.get();
        let cluster = topology.cluster(name).cloned();
        cluster.ok_or_else(|| Error::UnknownCluster(name.unwrap_or_default().to_string()))
    }

    /// Whether `volume list` has the name, from a listing begun after this call: the claims of
    /// a burst share one or two listings instead of each asking glusterd.
    async fn listed(&self, cluster: &Cluster, name: &str) -> Result<bool> {
        let asked = Instant::now();
        let slot = self.listing.of(&cluster.name);
        let mut last = slot.lock().await;
        if let Some((begun, names)) = last.as_ref()
            && *begun >= asked
        {
            return Ok(names.contains(name));
        }
        let begun = Instant::now();
        let out = self.gluster(cluster, cli::list_args()).await?;
        let names: HashSet<String> = xml::parse_volume_list(&out)?.into_iter().collect();
        let found = names.contains(name);
        *last = Some((begun, names));
        Ok(found)
    }

    pub async fn volume_info(&self, cluster: &Cluster, name: &str) -> Result<Option<Volume>> {
        match self.gluster(cluster, cli::info_args(name)).await {
            Ok(out) => Ok(xml::parse_volume_info(&out)?
                .into_iter()
                .find(|v| v.name == name)),
            Err(Error::Gluster { message, .. }) if message.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The value of a pool-wide option (`None`: this gluster has no such option).
    pub async fn pool_option(&self, cluster: &Cluster, option: &str) -> Result<Option<String>> {
        let out = self.gluster(cluster, cli::pool_option_args(option)).await?;
        xml::parse_volume_get(&out, option)
    }

    /// Problems the node has making and keeping image bricks under its image roots: tools
    /// missing, images not in its fstab or not mounted, fstab lines of images gone.
    pub async fn image_findings(&self, node: &Node) -> Result<Vec<String>> {
        let roots: Vec<_> = node
            .brick_roots
            .iter()
            .filter(|r| r.size_limit == SizeLimit::Image)
            .cloned()
            .collect();
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ssh
            .run_ok(&node.ssh_address, "sh", &image::check_args(&roots))
            .await?;
        Ok(image::check_findings(&out))
    }

    /// Runs the program and arguments `command` gives for each brick on its node, all at once;
    /// the output of each.
    async fn on_bricks<'b>(
        &self,
        bricks: impl Iterator<Item = &'b Brick>,
        command: impl Fn(&Brick) -> (&'static str, Vec<String>),
    ) -> Result<Vec<String>> {
        let runs = bricks.map(|b| {
            let (program, args) = command(b);
            async move { self.ssh.run_ok(&b.ssh_address, program, &args).await }
        });
        join_all(runs).await.into_iter().collect()
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
            let _out = self.nodes.sent(&node.name);
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
                self.nodes.answered(&node.name);
            }
            if let Err(e) = &result
                && e.is_node_down()
            {
                self.nodes.mark_down(&cluster.name, &node.name, e);
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
        let addresses = place::storage_addresses(&made.bricks);
        let mut annotations = BTreeMap::from([
            (ANN_CLUSTER.to_string(), made.cluster),
            (ANN_BRICKS.to_string(), brick_record(&made.bricks)),
        ]);
        if let Durability::Arbiter { average_file_kib } = req.durability {
            annotations.insert(ANN_ARBITER.to_string(), average_file_kib.to_string());
        }
        Ok(Made {
            volume: made.name,
            addresses,
            gid: req.gid,
            annotations,
        })
    }

    async fn delete(&self, volume: Recorded<'_>, owner: Expected<'_>) -> Result<()> {
        let (cluster, bricks) = self.recorded_bricks(volume)?;
        self.remove(cluster, volume.volume, &bricks, owner).await?;
        tracing::info!(volume = volume.volume, "gluster volume and bricks removed");
        Ok(())
    }

    async fn abandon(&self, name: &str, cluster: Option<&str>, owner: Expected<'_>) -> Result<()> {
        self.abandon_volume(name, cluster, owner).await
    }

    async fn expand(
        &self,
        volume: Recorded<'_>,
        from_gib: u64,
        to_gib: u64,
        promised: &[Promise],
    ) -> Result<()> {
        self.expand_volume(volume, from_gib, to_gib, promised).await
    }

    async fn addresses(&self, volume: Recorded<'_>) -> Result<Vec<IpAddr>> {
        let (_, bricks) = self.recorded_bricks(volume)?;
        Ok(place::storage_addresses(&bricks))
    }
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}
