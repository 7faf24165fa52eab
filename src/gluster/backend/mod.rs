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
use super::plan::{self, Brick, NodeCapacity, Promise, RootSpace};
use super::ssh::SshExecutor;
use super::xml::{self, Peer, Volume};
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
    /// The last probe of each cluster's nodes, by cluster name.
    health: std::sync::Mutex<HashMap<String, HealthReading>>,
    /// Held by the one caller probing; the others go on with the last reading meanwhile.
    probing: tokio::sync::Mutex<()>,
    /// The gluster commands of each node, by node name: a probe that times out while the node
    /// works through others has met a long queue, not a hung glusterd (see [`Self::busy`]).
    traffic: std::sync::Mutex<HashMap<String, Traffic>>,
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

/// A node's gluster commands: how many are out, and when it last completed one.
#[derive(Default)]
struct Traffic {
    out: usize,
    answered: Option<Instant>,
}

/// Counts a command as out on its node until dropped (a cancelled one too).
struct Out<'b> {
    backend: &'b SshBackend,
    node: &'b str,
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        let mut traffic = self.backend.traffic.lock().expect("traffic lock");
        if let Some(t) = traffic.get_mut(self.node) {
            t.out -= 1;
        }
    }
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

/// When a cluster's nodes were probed, and how each stood.
type HealthReading = (Instant, Arc<Vec<NodeHealth>>);

/// Of the volumes being made at once, one in this many lays out bricks at a time, and one in
/// this many has a gluster command out: with 16 made at once, a gate of 4 each finished a
/// burst of 30 image claims in order (median claim Bound at 0.65 of the burst, not 0.75)
/// without a longer burst; 4 made at once in all made it longer (README: image bricks at
/// gluster's own limit).
const TURNS_PER_GATE: usize = 4;

/// How long a probe of the nodes' glusterd is used; a node found failing is marked down
/// at once.
const HEALTH_TTL: Duration = Duration::from_secs(5);

/// A glusterd that has not answered `peer status` in this time is hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
            health: Default::default(),
            probing: Default::default(),
            traffic: Default::default(),
            placing: Default::default(),
            topology: LiveTopology::new(topology),
            ssh,
            metrics,
            next_node: AtomicUsize::default(),
            making: tokio::sync::Semaphore::new(volumes.max(1)),
            asked: AtomicU64::default(),
            laying: turns::Gate::new(volumes / TURNS_PER_GATE),
            commanding: turns::Gate::new(volumes / TURNS_PER_GATE),
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

    /// How the cluster's nodes stood at the last probe of their glusterd, probed again once
    /// older than `HEALTH_TTL`: one caller probes (an unreachable node can take its connect
    /// timeout), the others go on with the last reading; only the very first reading is
    /// waited for.
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
                Err(_) if self.busy(&node.name, began) => {
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

    /// Whether `node`, whose probe begun at `began` got no answer, is busy rather than hung: it
    /// completed a command since, or it has commands out and completed one in the probe's time
    /// before it. glusterd runs a burst's `volume stop`s about one a second across the pool, so
    /// a node can complete none of them in one probe's time; a hung one completes nothing in
    /// the next probe's either, and is left out then.
    fn busy(&self, node: &str, began: Instant) -> bool {
        let traffic = self.traffic.lock().expect("traffic lock");
        traffic.get(node).is_some_and(|t| {
            t.answered
                .is_some_and(|at| at >= began || (t.out > 0 && at + PROBE_TIMEOUT >= began))
        })
    }

    fn sent<'b>(&'b self, node: &'b str) -> Out<'b> {
        let mut traffic = self.traffic.lock().expect("traffic lock");
        traffic.entry(node.to_string()).or_default().out += 1;
        Out {
            backend: self,
            node,
        }
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

    /// The value of a pool-wide option (`None`: this gluster has no such option).
    pub async fn pool_option(&self, cluster: &Cluster, option: &str) -> Result<Option<String>> {
        let out = self
            .gluster(cluster, plan::pool_option_args(option))
            .await?;
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

    /// The trusted-pool peers `node`'s glusterd knows.
    /// Gluster's own timeout bounds a hung glusterd; SSH's retries a restarting sshd.
    pub async fn peers(&self, node: &Node) -> Result<Vec<Peer>> {
        let timeout = format!("--timeout={}", PROBE_TIMEOUT.as_secs());
        let args = words(&["--mode=script", &timeout, "peer", "status", "--xml"]);
        let out = self.ssh.run_ok(&node.ssh_address, "gluster", &args).await?;
        xml::parse_peer_status(&out)
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
            let _out = self.sent(&node.name);
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
                let mut traffic = self.traffic.lock().expect("traffic lock");
                traffic.entry(node.name.clone()).or_default().answered = Some(Instant::now());
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
        Ok(plan::storage_addresses(&bricks))
    }
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend of one cluster, nodes n1 and n2, never connected.
    fn backend(dir: &tempfile::TempDir) -> SshBackend {
        let path = dir.path().join("topology.json");
        let file = r#"{"ssh": {"private_key": "/k", "known_hosts": "/h"},
            "clusters": [{"name": "c1", "nodes": [
              {"name": "n1", "ssh_address": "10.0.0.1", "storage_address": "10.0.0.1",
               "brick_roots": ["/b"]},
              {"name": "n2", "ssh_address": "10.0.0.2", "storage_address": "10.0.0.2",
               "brick_roots": ["/b"]}]}]}"#;
        std::fs::write(&path, file).unwrap();
        let topology = Topology::load(&path).unwrap();
        let ssh = SshExecutor::new(topology.ssh.clone(), dir.path().into());
        SshBackend::new(topology, ssh, Arc::new(Metrics::new()), 4)
    }

    fn answered(backend: &SshBackend, node: &str, at: Instant) {
        let mut traffic = backend.traffic.lock().unwrap();
        traffic.entry(node.into()).or_default().answered = Some(at);
    }

    #[test]
    fn a_node_working_through_its_queue_is_busy_and_a_silent_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir);
        let began = Instant::now();
        let ago = |secs| began.checked_sub(Duration::from_secs(secs)).unwrap();
        assert!(!b.busy("n1", began), "never answered anything");
        answered(&b, "n1", ago(3));
        assert!(!b.busy("n1", began), "answered before, nothing out since");
        {
            let _out = b.sent("n1");
            assert!(
                b.busy("n1", began),
                "commands out, one completed just before"
            );
            assert!(
                !b.busy("n2", began),
                "the other node's commands are its own"
            );
            answered(&b, "n1", ago(PROBE_TIMEOUT.as_secs() + 1));
            assert!(
                !b.busy("n1", began),
                "commands out, none completed for too long"
            );
        }
        answered(&b, "n1", Instant::now());
        assert!(b.busy("n1", began), "completed one during the probe");
        assert_eq!(
            b.traffic.lock().unwrap()["n1"].out,
            0,
            "the command out is counted back"
        );
    }
}
