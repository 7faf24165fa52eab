//! `glusterfs-provisioner evacuate --node NAME`: every brick of this Kubernetes cluster's
//! volumes on the node moved to the others, by the rules provisioning places bricks by, one
//! volume healed before the next one's redundancy is taken away (`--at-once` more).
//!
//! A live node's replicate bricks get a new copy first, healed, before the old one is taken
//! out; a dead node's, and arbiter or disperse volumes' (gluster cannot add one more brick to
//! those), are swapped with `replace-brick … commit force` and healed. What is under way is read
//! back from gluster ([`plan::step`]), so a run killed anywhere is finished by the next one. The
//! old brick (image, fstab line, directory) goes only after the new one is healed, when its node
//! answers; a dead node's wait for a run once it is back.

mod plan;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use crate::config::Cluster;
use crate::gluster::plan::{Promise, count_promises};
use crate::gluster::{Brick, SshBackend};
use crate::identity::{self, Identity};
use crate::k8s::objects::{self, ANN_BRICKS, ANN_CLUSTER, brick_record};
use crate::{Error, Result};
pub use plan::{How, Move, Step};

/// What `evacuate` is told.
pub struct EvacuateOptions {
    /// The topology node to empty.
    pub node: String,
    /// Move; without it only the plan.
    pub apply: bool,
    /// Volumes moving at once.
    pub at_once: usize,
    /// Longest wait for one volume's new brick to heal.
    pub heal_timeout: Duration,
}

/// How often a heal is looked at.
const HEAL_POLL: Duration = Duration::from_secs(2);

/// Plans (and with `apply`, carries out) the evacuation. Returns what fails the command: the
/// volumes that cannot be placed; with `apply`, every volume left on the node (not moved, not
/// placeable, or failed).
pub async fn run(client: Client, backend: &SshBackend, options: &EvacuateOptions) -> Result<usize> {
    let cluster = backend
        .topology()
        .clusters
        .iter()
        .find(|c| c.nodes.iter().any(|n| n.name == options.node))
        .ok_or_else(|| Error::Placement(format!("no node {} in the topology", options.node)))?;
    let kube_cluster = identity::kube_cluster_id(&client).await?;
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let node_up = backend.is_up(cluster, &options.node).await;
    let mut capacity = backend.room(cluster, &promises(&pvs, &cluster.name)).await;
    let volumes = backend.volumes(cluster).await?;
    println!(
        "node {} ({}): {} volume(s) in cluster {}",
        options.node,
        if node_up { "up" } else { "down" },
        volumes.len(),
        cluster.name
    );
    let size_of = |volume: &crate::gluster::xml::Volume| {
        let identity = Identity::of(volume).ok().flatten()?;
        let pv = pvs.iter().find(|pv| pv.name_any() == identity.pv)?;
        let capacity = pv.spec.as_ref()?.capacity.as_ref()?;
        objects::storage_gib(capacity.get("storage")).ok()
    };
    let laid_out = laid_out(backend, cluster, &options.node).await;
    let mut steps = Vec::new();
    for volume in &volumes {
        let on_node = backend.owned_bricks(cluster, volume);
        let holds = match &on_node {
            Ok(bricks) => bricks.iter().any(|b| b.node == options.node),
            Err(_) => volume
                .bricks()
                .any(|(host, _)| host_is(cluster, host, &options.node)),
        };
        if !holds {
            continue;
        }
        let facts = plan::Facts {
            volume,
            bricks: on_node.map_err(|e| e.to_string()),
            node: &options.node,
            node_up,
            kube_cluster: &kube_cluster,
            size_gib: size_of(volume),
            capacity: &capacity,
            laid_out: laid_out.get(&volume.name).map_or(&[], Vec::as_slice),
        };
        let step = plan::step(&facts);
        // What this plan places counts against the room the next volume sees.
        if let Step::Move(m) = &step {
            let promise = Promise {
                volume: m.volume.clone(),
                bricks: vec![(m.new.node.clone(), m.new.path.clone())],
                bytes: m.image_bytes,
                arbiter_bytes: None,
            };
            count_promises(&mut capacity, [&promise]);
        }
        steps.push(step);
    }
    for step in &steps {
        println!("  {step}");
    }
    let blocked = steps
        .iter()
        .filter(|s| matches!(s, Step::Unplaceable { .. }))
        .count();
    let not_moved = steps
        .iter()
        .filter(|s| matches!(s, Step::NotMoved { .. }))
        .count();
    let to_move: Vec<Step> = steps
        .into_iter()
        .filter(|s| matches!(s, Step::Move(_) | Step::Finish { .. }))
        .collect();
    println!(
        "{} brick(s) to move, {blocked} cannot be placed, {not_moved} not moved",
        to_move.len()
    );
    if blocked > 0 {
        println!("nothing moved: every brick must have a place first");
        return Ok(if options.apply {
            blocked + not_moved + to_move.len()
        } else {
            blocked
        });
    }
    if !options.apply {
        return Ok(0);
    }
    let mover = Mover {
        backend,
        cluster,
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "glusterfs-provisioner-evacuate".into(),
                instance: None,
            },
        ),
        options,
        node_up,
    };
    mover.leftovers(&volumes).await;
    mover.heal_earlier(&volumes).await?;
    let failed = futures::stream::iter(to_move.iter())
        .map(|step| mover.carry_out(step))
        .buffer_unordered(options.at_once.max(1))
        .filter(|ok| futures::future::ready(!ok))
        .count()
        .await;
    println!(
        "{} moved, {failed} failed, {not_moved} not moved",
        to_move.len() - failed
    );
    Ok(failed + not_moved)
}

/// Brick directories under the roots of the cluster's other nodes that are up, by volume name:
/// where a killed run laid out new bricks.
async fn laid_out(
    backend: &SshBackend,
    cluster: &Cluster,
    node: &str,
) -> HashMap<String, Vec<Brick>> {
    let mut out: HashMap<String, Vec<Brick>> = HashMap::new();
    for other in cluster.nodes.iter().filter(|n| n.name != node) {
        if !backend.is_up(cluster, &other.name).await {
            continue;
        }
        let Ok(entries) = backend.root_entries(other).await else {
            continue;
        };
        for entry in entries {
            if let Some(root) = other.brick_roots.iter().find(|r| r.path == entry.root) {
                let brick = Brick::new(other, root, &entry.name);
                let bricks = out.entry(entry.name).or_default();
                if !bricks.contains(&brick) {
                    bricks.push(brick);
                }
            }
        }
    }
    out
}

/// Whether gluster's `host` of a brick is `node` of the cluster.
fn host_is(cluster: &Cluster, host: &str, node: &str) -> bool {
    cluster
        .nodes
        .iter()
        .any(|n| n.name == node && (n.storage_address.to_string() == host || n.ssh_address == host))
}

/// What the PVs of `cluster` hold on their brick roots.
fn promises(pvs: &[PersistentVolume], cluster: &str) -> Vec<Promise> {
    pvs.iter()
        .filter(|pv| pv.annotations().get(ANN_CLUSTER).map(String::as_str) == Some(cluster))
        .filter_map(|pv| {
            let capacity = pv.spec.as_ref()?.capacity.as_ref()?;
            let gib = objects::storage_gib(capacity.get("storage")).ok()?;
            let annotations = pv.annotations();
            Some(objects::promise(
                objects::volume_of(pv)?,
                annotations.get(ANN_BRICKS)?,
                gib,
                annotations.get(objects::ANN_ARBITER).map(String::as_str),
            ))
        })
        .collect()
}

/// Carries out the steps of one evacuation.
struct Mover<'a> {
    backend: &'a SshBackend,
    cluster: &'a Cluster,
    client: Client,
    recorder: Recorder,
    options: &'a EvacuateOptions,
    node_up: bool,
}

impl Mover<'_> {
    /// One volume's step, a line as it moves and heals; whether it succeeded.
    async fn carry_out(&self, step: &Step) -> bool {
        let (volume, old, new) = match step {
            Step::Move(m) => (&m.volume, &m.old, &m.new),
            Step::Finish { volume, old, new } => (volume, old, new),
            _ => return true,
        };
        let started = Instant::now();
        match self.moved(step).await {
            Ok(()) => {
                let note = format!(
                    "brick of volume {volume} moved from {} to {} (healed in {} s)",
                    old.spec(),
                    new.spec(),
                    started.elapsed().as_secs()
                );
                println!("  {volume}: moved {} -> {}, healed", old.spec(), new.spec());
                self.tell(volume, note).await;
                true
            }
            Err(e) => {
                println!("  {volume}: not moved: {e}");
                false
            }
        }
    }

    async fn moved(&self, step: &Step) -> Result<()> {
        let (b, c) = (self.backend, self.cluster);
        let (name, old, new) = match step {
            Step::Move(m) => {
                println!("  {}: laying out {}", m.volume, m.new.spec());
                b.prepare_brick(&m.new, m.image_bytes, m.gid).await?;
                let volume = b
                    .volume_info(c, &m.volume)
                    .await?
                    .ok_or_else(|| Error::NotOurs(format!("volume {} is gone", m.volume)))?;
                match m.how {
                    How::Replace => {
                        println!(
                            "  {}: replace-brick {} -> {}",
                            m.volume,
                            m.old.spec(),
                            m.new.spec()
                        );
                        b.replace_brick(c, &m.volume, &m.old.spec(), &m.new).await?;
                    }
                    How::AddThenRemove => {
                        println!("  {}: adding {} as one more copy", m.volume, m.new.spec());
                        b.add_replica(c, &volume, &m.old.spec(), &m.new).await?;
                    }
                }
                (&m.volume, &m.old, &m.new)
            }
            Step::Finish { volume, old, new } => (volume, old, new),
            _ => return Ok(()),
        };
        if let Err(e) = b.heal_full(c, name).await {
            tracing::warn!(volume = name, error = %e, "no full heal started; the index heal goes on");
        }
        self.healed(name, new, old).await?;
        let volume = b
            .volume_info(c, name)
            .await?
            .ok_or_else(|| Error::NotOurs(format!("volume {name} is gone")))?;
        if volume.bricks().any(|(host, path)| {
            host_is(c, host, &old.node) && std::path::Path::new(path) == old.path
        }) {
            println!("  {name}: healed; removing {}", old.spec());
            b.remove_replica(c, &volume, &old.spec()).await?;
        }
        if self.node_up {
            b.clear_brick(name, old).await?;
        } else {
            println!(
                "  {name}: {} is left on the dead node: a run once it is back removes it",
                old.spec()
            );
        }
        self.record(name, old, new).await
    }

    /// Waits until the volume is whole (every brick running, nothing to heal) and `new` holds
    /// as many entries as a brick that kept its data.
    async fn healed(&self, name: &str, new: &Brick, old: &Brick) -> Result<()> {
        let deadline = Instant::now() + self.options.heal_timeout;
        loop {
            let whole = self.backend.volume_health(self.cluster, name).await?;
            if let Some(health) = whole.filter(|h| h.whole()) {
                let volume = self.backend.volume_info(self.cluster, name).await?;
                let good = volume
                    .iter()
                    .flat_map(|v| self.backend.owned_bricks(self.cluster, v).ok())
                    .flatten()
                    .find(|b| b.node != new.node && b.node != old.node);
                if let Some(good) = good {
                    let (have, want) = (
                        self.backend.brick_entries(new).await?,
                        self.backend.brick_entries(&good).await?,
                    );
                    if have >= want {
                        tracing::debug!(volume = name, have, want, ?health.heal_pending, "healed");
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Gluster {
                    command: format!("heal of {name}"),
                    message: format!(
                        "{} not healed within {} s",
                        new.spec(),
                        self.options.heal_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(HEAL_POLL).await;
        }
    }

    /// Waits for the volumes of this cluster that are healing, none of whose bricks is on the
    /// node (an earlier run moved them, and was killed before they healed): the next volume's
    /// copy is taken away only once they are whole.
    async fn heal_earlier(&self, volumes: &[crate::gluster::xml::Volume]) -> Result<()> {
        for volume in volumes {
            if Identity::of(volume).ok().flatten().is_none() {
                continue;
            }
            let Ok(bricks) = self.backend.owned_bricks(self.cluster, volume) else {
                continue;
            };
            if bricks.iter().any(|b| b.node == self.options.node) {
                continue;
            }
            let health = self
                .backend
                .volume_health(self.cluster, &volume.name)
                .await?;
            if health.is_some_and(|h| h.up() == h.bricks.len() && !h.whole()) {
                println!("  {}: healing from an earlier run; waiting", volume.name);
                let (new, old) = (&bricks[0], &bricks[0]);
                self.healed(&volume.name, new, old).await?;
            }
        }
        Ok(())
    }

    /// Brick directories and images a killed run or a dead node left on the node: each
    /// volume of this cluster that no longer has a brick there gets its old one removed, once
    /// it is whole.
    async fn leftovers(&self, volumes: &[crate::gluster::xml::Volume]) {
        if !self.node_up {
            return;
        }
        let Some(node) = self
            .cluster
            .nodes
            .iter()
            .find(|n| n.name == self.options.node)
        else {
            return;
        };
        let entries = match self.backend.root_entries(node).await {
            Ok(entries) => entries,
            Err(e) => {
                println!("  leftovers on {}: not readable: {e}", node.name);
                return;
            }
        };
        let mut seen = HashSet::new();
        for entry in entries {
            let Some(volume) = volumes.iter().find(|v| v.name == entry.name) else {
                continue;
            };
            let ours = Identity::of(volume).ok().flatten().is_some();
            let bricks = self.backend.owned_bricks(self.cluster, volume);
            let elsewhere = bricks
                .as_ref()
                .is_ok_and(|bs| bs.iter().all(|b| b.node != node.name));
            if !ours || !elsewhere || !seen.insert((entry.root.clone(), entry.name.clone())) {
                continue;
            }
            let Some(root) = node.brick_roots.iter().find(|r| r.path == entry.root) else {
                continue;
            };
            let old = Brick::new(node, root, &volume.name);
            let whole = self.backend.volume_health(self.cluster, &volume.name).await;
            match whole {
                Ok(Some(h)) if h.whole() => {
                    match self.backend.clear_brick(&volume.name, &old).await {
                        Ok(()) => println!("  {}: leftover {} removed", volume.name, old.spec()),
                        Err(e) => println!(
                            "  {}: leftover {} not removed: {e}",
                            volume.name,
                            old.spec()
                        ),
                    }
                }
                _ => println!(
                    "  {}: leftover {} kept until the volume is whole",
                    volume.name,
                    old.spec()
                ),
            }
        }
    }

    /// The PV's brick record follows the move, and its claim hears of it.
    async fn record(&self, name: &str, old: &Brick, new: &Brick) -> Result<()> {
        let pvs = Api::<PersistentVolume>::all(self.client.clone());
        let volume = self.backend.volume_info(self.cluster, name).await?;
        let Some(identity) = volume.as_ref().and_then(|v| Identity::of(v).ok().flatten()) else {
            return Ok(());
        };
        let Some(pv) = pvs.get_opt(&identity.pv).await? else {
            return Ok(());
        };
        let bricks = volume
            .as_ref()
            .map(|v| self.backend.owned_bricks(self.cluster, v))
            .transpose()?
            .unwrap_or_default();
        if objects::volume_of(&pv) == Some(name) {
            let patch = serde_json::json!({"metadata": {"annotations": {
                ANN_BRICKS: brick_record(&bricks),
            }}});
            pvs.patch(&identity.pv, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        tracing::info!(
            volume = name,
            from = old.spec(),
            to = new.spec(),
            "brick moved"
        );
        Ok(())
    }

    /// `BrickMoved` on the claim the volume records.
    async fn tell(&self, name: &str, note: String) {
        let volume = match self.backend.volume_info(self.cluster, name).await {
            Ok(Some(v)) => v,
            _ => return,
        };
        let Some(identity) = Identity::of(&volume).ok().flatten() else {
            return;
        };
        let claims = Api::<PersistentVolumeClaim>::all(self.client.clone());
        let Ok(list) = claims.list(&ListParams::default()).await else {
            return;
        };
        let by_uid: HashMap<String, &PersistentVolumeClaim> = list
            .items
            .iter()
            .filter_map(|c| Some((c.uid()?, c)))
            .collect();
        let Some(claim) = by_uid.get(&identity.claim_uid) else {
            return;
        };
        let event = Event {
            type_: EventType::Normal,
            reason: "BrickMoved".into(),
            note: Some(note),
            action: "Evacuate".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &claim.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish BrickMoved");
        }
    }
}
