//! `glusterfs-provisioner status`: one row per claim whose volume lives in the topology's
//! clusters (bricks running, entries waiting to be healed, entries in split-brain), then, per
//! node, whether taking it down now would cost any volume its quorum: what an operator reads
//! after an outage, and before taking the next node down for maintenance.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::Result;
use crate::config::Cluster;
use crate::gluster::SshBackend;
use crate::gluster::heal::VolumeHealth;
use crate::k8s::objects::{ANN_CLUSTER, volume_of};
use crate::report::{Outcome, Printer};

/// Volumes looked at at once: each heal summary runs gluster's `glfsheal` against the bricks.
const AT_ONCE: usize = 4;

/// A PV's claim and volume, in the cluster that holds the volume.
struct Row<'c> {
    claim: Option<String>,
    pv: String,
    volume: String,
    cluster: &'c Cluster,
}

/// A volume's row of the report.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeRow<'a> {
    /// `namespace/name`, or none for a PV bound to no claim.
    claim: Option<&'a str>,
    pv: &'a str,
    volume: &'a str,
    cluster: &'a str,
    bricks_up: usize,
    bricks: usize,
    /// None: gluster cannot tell (a volume without copies, or no brick answering).
    heal_pending: Option<u64>,
    split_brain: Option<u64>,
    whole: bool,
    /// `whole`, or what is wrong, as the table's STATUS column says it.
    status: String,
}

/// A node's row: whether taking it down now costs any volume its quorum.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRow<'a> {
    node: &'a str,
    cluster: &'a str,
    can_go_down: bool,
    /// The volumes that would lose their quorum.
    would_lose_quorum: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    volumes: usize,
    not_whole: usize,
}

#[derive(Serialize)]
struct Document<'a> {
    volumes: Vec<VolumeRow<'a>>,
    nodes: Vec<NodeRow<'a>>,
    summary: Summary,
}

/// Prints the report; [`Outcome::Problems`] while any volume is not whole.
pub async fn report(client: Client, backend: &SshBackend, out: Printer) -> Result<Outcome> {
    let clusters = &backend.topology().clusters;
    let mut listed = Vec::new();
    for cluster in clusters {
        listed.push((cluster, backend.volume_names(cluster).await?));
    }
    let pvs = Api::<PersistentVolume>::all(client)
        .list(&ListParams::default())
        .await?;
    let mut rows: Vec<Row> = pvs
        .items
        .iter()
        .filter_map(|pv| {
            let volume = volume_of(pv)?;
            let recorded = pv.annotations().get(ANN_CLUSTER);
            let (cluster, _) = listed.iter().find(|(c, names)| {
                recorded.is_none_or(|r| *r == c.name) && names.iter().any(|n| n == volume)
            })?;
            let claim = pv.spec.as_ref()?.claim_ref.as_ref();
            let claim = claim.map(|c| {
                format!(
                    "{}/{}",
                    c.namespace.as_deref().unwrap_or_default(),
                    c.name.as_deref().unwrap_or_default()
                )
            });
            Some(Row {
                claim,
                pv: pv.name_any(),
                volume: volume.to_string(),
                cluster,
            })
        })
        .collect();
    rows.sort_by(|a, b| a.claim.cmp(&b.claim));
    let healths: Vec<Option<VolumeHealth>> = futures::stream::iter(&rows)
        .map(|row| backend.volume_health(row.cluster, &row.volume))
        .buffered(AT_ONCE)
        .try_collect()
        .await?;

    out.line(format_args!(
        "{:<40} {:<42} {:<42} {:<7} {:<12} {:<11} STATUS",
        "CLAIM", "PV", "VOLUME", "BRICKS", "HEAL PENDING", "SPLIT-BRAIN"
    ));
    let count = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    let mut volumes = Vec::new();
    for (row, health) in rows.iter().zip(&healths) {
        let Some(h) = health else {
            continue;
        };
        let volume = VolumeRow {
            claim: row.claim.as_deref(),
            pv: &row.pv,
            volume: &row.volume,
            cluster: &row.cluster.name,
            bricks_up: h.up(),
            bricks: h.bricks.len(),
            heal_pending: h.heal_pending,
            split_brain: h.split_brain,
            whole: h.whole(),
            status: h.state(),
        };
        out.line(format_args!(
            "{:<40} {:<42} {:<42} {:<7} {:<12} {:<11} {}",
            volume.claim.unwrap_or("-"),
            volume.pv,
            volume.volume,
            format!("{}/{}", volume.bricks_up, volume.bricks),
            count(volume.heal_pending),
            count(volume.split_brain),
            volume.status,
        ));
        volumes.push(volume);
    }
    let mut nodes = Vec::new();
    for cluster in clusters {
        for node in &cluster.nodes {
            let lost: Vec<&str> = rows
                .iter()
                .zip(&healths)
                .filter(|(row, _)| row.cluster.name == cluster.name)
                .filter_map(|(_, h)| h.as_ref())
                .filter(|h| !h.keeps_quorum_without(node))
                .map(|h| h.volume.as_str())
                .collect();
            if lost.is_empty() {
                out.line(format_args!(
                    "node {} ({}): can go down now: every volume keeps its quorum",
                    node.name, cluster.name
                ));
            } else {
                out.line(format_args!(
                    "node {} ({}): taking it down now costs {} volume(s) their quorum: {}",
                    node.name,
                    cluster.name,
                    lost.len(),
                    lost.join(", ")
                ));
            }
            nodes.push(NodeRow {
                node: &node.name,
                cluster: &cluster.name,
                can_go_down: lost.is_empty(),
                would_lose_quorum: lost,
            });
        }
    }
    let not_whole = volumes.iter().filter(|v| !v.whole).count();
    let summary = Summary {
        volumes: volumes.len(),
        not_whole,
    };
    out.finish(
        "VolumeStatus",
        &Document {
            volumes,
            nodes,
            summary,
        },
    );
    Ok(Outcome::unless(not_whole, |n| {
        format!("{n} volume(s) not whole (bricks down, entries to heal or in split-brain)")
    }))
}
