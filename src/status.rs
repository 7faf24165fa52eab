//! `glusterfs-provisioner status`: one row per claim whose volume lives in the topology's
//! clusters (bricks running, entries waiting to be healed, entries in split-brain), then, per
//! node, whether taking it down now would cost any volume its quorum: what an operator reads
//! after an outage, and before taking the next node down for maintenance.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::Result;
use crate::config::Cluster;
use crate::gluster::SshBackend;
use crate::gluster::heal::VolumeHealth;
use crate::k8s::objects::{ANN_CLUSTER, volume_of};

/// Volumes looked at at once: each heal summary runs gluster's `glfsheal` against the bricks.
const AT_ONCE: usize = 4;

/// A PV's claim and volume, in the cluster that holds the volume.
struct Row<'c> {
    claim: String,
    pv: String,
    volume: String,
    cluster: &'c Cluster,
}

/// Prints the table; returns how many volumes are not whole.
pub async fn report(client: Client, backend: &SshBackend) -> Result<usize> {
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
            let claim = claim.map_or("-".to_string(), |c| {
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

    println!(
        "{:<40} {:<42} {:<42} {:<7} {:<12} {:<11} STATUS",
        "CLAIM", "PV", "VOLUME", "BRICKS", "HEAL PENDING", "SPLIT-BRAIN"
    );
    let count = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    let mut not_whole = 0;
    for (row, health) in rows.iter().zip(&healths) {
        let Some(h) = health else {
            continue;
        };
        let status = h.state();
        not_whole += usize::from(!h.whole());
        println!(
            "{:<40} {:<42} {:<42} {:<7} {:<12} {:<11} {status}",
            row.claim,
            row.pv,
            row.volume,
            format!("{}/{}", h.up(), h.bricks.len()),
            count(h.heal_pending),
            count(h.split_brain),
        );
    }
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
                println!(
                    "node {} ({}): can go down now: every volume keeps its quorum",
                    node.name, cluster.name
                );
            } else {
                println!(
                    "node {} ({}): taking it down now costs {} volume(s) their quorum: {}",
                    node.name,
                    cluster.name,
                    lost.len(),
                    lost.join(", ")
                );
            }
        }
    }
    Ok(not_whole)
}
