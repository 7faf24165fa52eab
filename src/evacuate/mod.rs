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
mod rows;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use crate::config::Cluster;
use crate::gluster::place::{Promise, count_promises};
use crate::gluster::xml::Volume;
use crate::gluster::{Brick, SshBackend};
use crate::identity::{self, Identity};
use crate::k8s::objects::{self, ANN_BRICKS, ANN_CLUSTER, brick_record};
use crate::report::{Outcome, Printer};
use crate::{Error, Result};
pub use plan::{How, Move, Step};
use rows::{Document, Kind, Row, State, Summary, Table};

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
/// How often a heal that has not ended is asked for again.
const HEAL_KICK: Duration = Duration::from_secs(30);

/// Plans (and with `apply`, carries out) the evacuation, and reports it through `out`: the
/// plan's table, then with `apply` a line for each volume once it is done. What fails the
/// command ([`Outcome::Problems`], naming each volume and why): a volume that cannot be
/// placed; with `apply`, every volume left on the node and every move that failed.
pub async fn run(
    client: Client,
    backend: &SshBackend,
    options: &EvacuateOptions,
    out: Printer,
) -> Result<Outcome> {
    let topology = backend.topology();
    let cluster = topology
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
    let laid_out = laid_out(backend, cluster, &options.node).await;
    let mut steps = Vec::new();
    let mut rows = Vec::new();
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
        let pv = pv_of(volume, &pvs);
        let facts = plan::Facts {
            volume,
            bricks: on_node.map_err(|e| e.to_string()),
            node: &options.node,
            node_up,
            kube_cluster: &kube_cluster,
            size_gib: pv.and_then(|pv| {
                let capacity = pv.spec.as_ref()?.capacity.as_ref()?;
                objects::storage_gib(capacity.get("storage")).ok()
            }),
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
        let on_node = volume
            .bricks()
            .find(|(host, _)| host_is(cluster, host, &options.node))
            .map(|(_, path)| format!("{}:{path}", options.node));
        rows.push(planned(&step, claim_of(pv), on_node));
        steps.push(step);
    }
    let count = |kind: Kind| rows.iter().filter(|r| r.kind == kind).count();
    let (blocked, not_moved) = (count(Kind::CannotPlace), count(Kind::NotMoved));
    let to_move = rows.len() - blocked - not_moved;
    if blocked > 0 && options.apply {
        hold(&mut rows, "nothing moves until every volume can be placed");
    }
    let table = Table::new(&rows);
    out.line(table.header());
    for row in &rows {
        out.line(table.line(row));
    }
    out.line(format_args!(
        "{} ({}, cluster {}): {to_move} volume(s) to move, {blocked} cannot be placed, {not_moved} not moved{}",
        options.node,
        if node_up { "up" } else { "down" },
        cluster.name,
        if blocked > 0 {
            "; nothing moved: every volume must have a place first"
        } else {
            ""
        }
    ));
    if options.apply && blocked == 0 {
        let mover = Mover {
            backend,
            cluster,
            kube_cluster: &kube_cluster,
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
            out,
            table: &table,
        };
        let mut more = mover.leftovers(&volumes, &pvs).await;
        let earlier = mover.heal_earlier(&volumes, &pvs).await?;
        let unhealed = earlier.iter().find(|r| r.state == State::Failed);
        if let Some(unhealed) = unhealed {
            let why = format!("{} did not heal from an earlier move", unhealed.volume);
            hold(&mut rows, &why);
        }
        more.extend(earlier);
        let mover = &mover;
        let done: Vec<(usize, Row)> = futures::stream::iter(steps.iter().zip(&rows).enumerate())
            .filter(|(_, (_, row))| futures::future::ready(row.moves()))
            .map(|(i, (step, row))| async move { (i, mover.carry_out(step, row.clone()).await) })
            .buffer_unordered(options.at_once.max(1))
            .collect()
            .await;
        for (i, row) in done {
            rows[i] = row;
        }
        let count = |state: State| rows.iter().filter(|r| r.state == state).count();
        out.line(format_args!(
            "{} moved, {} failed, {not_moved} not moved",
            count(State::Moved),
            count(State::Failed)
        ));
        rows.extend(more);
    }
    let problems: Vec<&Row> = rows
        .iter()
        .filter(|r| match options.apply {
            // What is left on the node keeps the evacuation unfinished: the next run goes on.
            true => matches!(
                r.state,
                State::Stays | State::Held | State::Failed | State::Kept | State::NotRemoved
            ),
            false => r.kind == Kind::CannotPlace,
        })
        .collect();
    let summary = Summary {
        node: &options.node,
        node_up,
        cluster: &cluster.name,
        to_move,
        cannot_place: blocked,
        not_moved,
        moved: rows.iter().filter(|r| r.state == State::Moved).count(),
        failed: rows.iter().filter(|r| r.state == State::Failed).count(),
        problems: problems.len(),
    };
    let outcome = Outcome::unless(problems.len(), |n| {
        let each: Vec<String> = problems
            .iter()
            .map(|r| format!("{} ({})", r.volume, r.trouble()))
            .collect();
        format!(
            "evacuation of {}: {n} volume(s) not moved off it or failed: {}",
            options.node,
            each.join("; ")
        )
    });
    out.finish(
        "Evacuation",
        &Document {
            volumes: &rows,
            summary,
        },
    );
    Ok(outcome)
}

/// The plan's row for a volume with a brick on the node (`on_node`, as gluster lists it).
fn planned(step: &Step, claim: Option<String>, on_node: Option<String>) -> Row {
    let (kind, old, new, why) = match step {
        Step::Move(m) => {
            let kind = match m.how {
                How::AddThenRemove => Kind::AddCopy,
                How::Replace => Kind::Replace,
            };
            (kind, Some(&m.old), Some(&m.new), None)
        }
        Step::Finish { old, new, .. } => (Kind::Finish, Some(old), Some(new), None),
        Step::NotMoved { why, .. } => (Kind::NotMoved, None, None, Some(why)),
        Step::Unplaceable { why, .. } => (Kind::CannotPlace, None, None, Some(why)),
    };
    let volume = match step {
        Step::Move(m) => &m.volume,
        Step::Finish { volume, .. }
        | Step::NotMoved { volume, .. }
        | Step::Unplaceable { volume, .. } => volume,
    };
    Row {
        from: old.map(brick_name).or(on_node),
        to: new.map(brick_name),
        why: why.cloned(),
        ..Row::new(volume, claim, kind)
    }
}

/// Every move of the plan held, and why.
fn hold(rows: &mut [Row], why: &str) {
    for row in rows.iter_mut().filter(|r| r.moves()) {
        row.state = State::Held;
        row.error = Some(why.to_string());
    }
}

/// A brick as the report names it: `node:path`, as the PV's brick record does.
fn brick_name(brick: &Brick) -> String {
    format!("{}:{}", brick.node, brick.path.display())
}

/// The PV the volume's identity names.
fn pv_of<'p>(volume: &Volume, pvs: &'p [PersistentVolume]) -> Option<&'p PersistentVolume> {
    let identity = Identity::of(volume).ok().flatten()?;
    pvs.iter().find(|pv| pv.name_any() == identity.pv)
}

/// `namespace/name` of the claim the PV is bound to.
fn claim_of(pv: Option<&PersistentVolume>) -> Option<String> {
    let claim = pv?.spec.as_ref()?.claim_ref.as_ref()?;
    let (namespace, name) = (claim.namespace.as_deref()?, claim.name.as_deref()?);
    Some(format!("{namespace}/{name}"))
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
    /// This Kubernetes cluster's id: only its volumes' leftovers are removed.
    kube_cluster: &'a str,
    out: Printer,
    table: &'a Table,
}

impl Mover<'_> {
    /// One volume's step; its row, printed once it is moved and healed (or failed).
    async fn carry_out(&self, step: &Step, mut row: Row) -> Row {
        let (volume, old, new) = match step {
            Step::Move(m) => (&m.volume, &m.old, &m.new),
            Step::Finish { volume, old, new } => (volume, old, new),
            _ => return row,
        };
        let started = Instant::now();
        match self.moved(step).await {
            Ok(()) => {
                let seconds = started.elapsed().as_secs();
                let note = format!(
                    "brick of volume {volume} moved from {} to {} (healed in {seconds} s)",
                    old.spec(),
                    new.spec(),
                );
                row.state = State::Moved;
                row.heal_seconds = Some(seconds);
                row.old_brick_removed = Some(self.node_up);
                self.tell(volume, note).await;
            }
            Err(e) => {
                row.state = State::Failed;
                row.error = Some(e.to_string());
            }
        }
        self.out.line(self.table.line(&row));
        row
    }

    async fn moved(&self, step: &Step) -> Result<()> {
        let (b, c) = (self.backend, self.cluster);
        let (name, old, new) = match step {
            Step::Move(m) => {
                tracing::info!(volume = m.volume, brick = m.new.spec(), "laying out");
                b.prepare_brick(&m.new, m.image_bytes, m.gid).await?;
                let volume = b
                    .volume_info(c, &m.volume)
                    .await?
                    .ok_or_else(|| Error::NotOurs(format!("volume {} is gone", m.volume)))?;
                let (from, to) = (m.old.spec(), m.new.spec());
                match m.how {
                    How::Replace => {
                        tracing::info!(volume = m.volume, from, to, "replace-brick");
                        b.replace_brick(c, &m.volume, &m.old.spec(), &m.new).await?;
                    }
                    How::AddThenRemove => {
                        tracing::info!(volume = m.volume, from, to, "adding one more copy");
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
            tracing::info!(
                volume = name,
                brick = old.spec(),
                "healed; removing the old brick"
            );
            b.remove_replica(c, &volume, &old.spec()).await?;
        }
        if self.node_up {
            b.clear_brick(name, old).await?;
        } else {
            tracing::info!(
                volume = name,
                brick = old.spec(),
                "left on the down node: a run once it is back removes it"
            );
        }
        self.record(name, old, new).await
    }

    /// Waits until the volume is whole (every brick running, nothing to heal) and `new` holds
    /// as many entries as a brick that kept its data.
    async fn healed(&self, name: &str, new: &Brick, old: &Brick) -> Result<()> {
        let deadline = Instant::now() + self.options.heal_timeout;
        let mut kick = Instant::now() + HEAL_KICK;
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
            // A full heal asked for before the self-heal daemons saw the new brick can end at
            // once, leaving it to their next crawl (10 minutes): asked for again.
            if Instant::now() >= kick {
                if let Err(e) = self.backend.heal_full(self.cluster, name).await {
                    tracing::debug!(volume = name, error = %e, "heal not started again");
                }
                kick = Instant::now() + HEAL_KICK;
            }
            tokio::time::sleep(HEAL_POLL).await;
        }
    }

    /// Whether the volume is whole (every brick running, nothing to heal) at some look within
    /// the heal timeout: a volume being written to lists entries in flight now and then.
    async fn whole_within(&self, name: &str) -> bool {
        let deadline = Instant::now() + self.options.heal_timeout;
        loop {
            match self.backend.volume_health(self.cluster, name).await {
                Ok(Some(h)) if h.whole() => return true,
                Ok(None) => return false,
                Ok(Some(_)) | Err(_) if Instant::now() >= deadline => return false,
                _ => tokio::time::sleep(HEAL_POLL).await,
            }
        }
    }

    /// Waits for the volumes of this cluster that are healing, none of whose bricks is on the
    /// node (an earlier run moved them, and was killed before they healed): the next volume's
    /// copy is taken away only once they are whole. A row for each, printed once it healed;
    /// the first that does not heal ends the wait.
    async fn heal_earlier(&self, volumes: &[Volume], pvs: &[PersistentVolume]) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
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
                tracing::info!(volume = volume.name, "healing from an earlier run; waiting");
                let started = Instant::now();
                let (new, old) = (&bricks[0], &bricks[0]);
                let mut row = Row::new(&volume.name, claim_of(pv_of(volume, pvs)), Kind::Healing);
                match self.healed(&volume.name, new, old).await {
                    Ok(()) => {
                        row.state = State::Healed;
                        row.heal_seconds = Some(started.elapsed().as_secs());
                    }
                    Err(e) => {
                        row.state = State::Failed;
                        row.error = Some(e.to_string());
                    }
                }
                self.out.line(self.table.line(&row));
                let failed = row.state == State::Failed;
                rows.push(row);
                if failed {
                    break;
                }
            }
        }
        Ok(rows)
    }

    /// Brick directories and images a killed run or a dead node left on the node: each
    /// volume of this cluster that no longer has a brick there gets its old one removed, once
    /// it is whole. A row for each, printed as it is handled.
    async fn leftovers(&self, volumes: &[Volume], pvs: &[PersistentVolume]) -> Vec<Row> {
        let mut rows = Vec::new();
        if !self.node_up {
            return rows;
        }
        let Some(node) = self
            .cluster
            .nodes
            .iter()
            .find(|n| n.name == self.options.node)
        else {
            return rows;
        };
        let entries = match self.backend.root_entries(node).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(node = node.name, error = %e, "leftovers not looked for: brick roots not readable");
                return rows;
            }
        };
        let mut seen = HashSet::new();
        for entry in entries {
            let Some(volume) = volumes.iter().find(|v| v.name == entry.name) else {
                continue;
            };
            let ours = Identity::of(volume)
                .ok()
                .flatten()
                .is_some_and(|i| i.kube_cluster == self.kube_cluster);
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
            let mut row = Row {
                from: Some(brick_name(&old)),
                ..Row::new(&volume.name, claim_of(pv_of(volume, pvs)), Kind::Leftover)
            };
            row.state = match self.whole_within(&volume.name).await {
                true => match self.backend.clear_brick(&volume.name, &old).await {
                    Ok(()) => State::Removed,
                    Err(e) => {
                        row.error = Some(e.to_string());
                        State::NotRemoved
                    }
                },
                false => State::Kept,
            };
            self.out.line(self.table.line(&row));
            rows.push(row);
        }
        rows
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
