//! `glusterfs-provisioner audit`: what is left over, both ways, in each cluster of the topology.
//!
//! Gluster's side (`judge`): each volume no PV mounts, by the identity it records
//! ([`crate::identity`]): this Kubernetes cluster's with policy Delete and its claim gone is an
//! orphan; with Retain it is retained data; another cluster's, or one recording no identity,
//! is listed and never touched. Entries under the brick roots that belong to no volume.
//! Kubernetes' side: PVs of ours whose volume gluster lacks, Endpoints and Services of ours
//! whose PV is gone, GIDs two PVs of ours share.
//!
//! `--apply` removes only orphans (volumes, brick entries, Endpoints and Services) older than
//! the grace period, which an in-flight provision never is: a volume through the checked path
//! deletion uses, which reads its identity again, the rest directly. Nothing is decided from
//! what a claim or PV says: only from whether a claim with the UID exists and a PV mounts the
//! volume, which nobody can fake.

mod judge;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

pub use judge::{Claim, Finding, Objects, Placed, Pool, PoolVolume, judge};

use crate::Result;
use crate::config::Cluster;
use crate::controller::ignore_not_found;
use crate::gluster::SshBackend;
use crate::identity::{self, Expected, Identity, Why};
use crate::k8s::objects::{ANN_CLUSTER, ANN_GID, ANN_PROVISIONED_BY, LABEL_PV};
use crate::volumes::VolumeBackend;

/// What `audit` is told.
pub struct AuditOptions {
    /// The provisioner name whose PVs are ours.
    pub provisioner: String,
    /// Orphans younger than this are listed, never removed.
    pub grace: Duration,
    pub apply: bool,
}

fn age_since(time: Option<&Time>) -> Duration {
    let since = time.map(|t| Timestamp::now().duration_since(t.0));
    since.map_or(Duration::ZERO, |d| d.try_into().unwrap_or(Duration::ZERO))
}

/// Runs the audit and prints it; returns how many problems are left.
pub async fn run(client: Client, backend: &SshBackend, options: &AuditOptions) -> Result<usize> {
    let list = ListParams::default();
    let all_pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&list)
        .await?;
    let ours: Vec<&PersistentVolume> = all_pvs
        .items
        .iter()
        .filter(|pv| pv.annotations().get(ANN_PROVISIONED_BY) == Some(&options.provisioner))
        .collect();
    let claims: HashMap<String, Claim> = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&list)
        .await?
        .items
        .iter()
        .filter_map(|c| {
            let uid = c.uid()?.replace('-', "");
            let phase = c.status.as_ref().and_then(|s| s.phase.as_deref());
            let claim = Claim {
                name: format!("{}/{}", c.namespace()?, c.name_any()),
                pending: matches!(phase, None | Some("Pending")),
            };
            Some((uid, claim))
        })
        .collect();
    let kube_cluster = identity::kube_cluster_id(&client).await?;
    let mut left = 0;
    for cluster in &backend.topology().clusters {
        let pool = read_pool(backend, cluster).await?;
        let objects = Objects {
            kube_cluster: &kube_cluster,
            pvs: ours
                .iter()
                .copied()
                .filter(|pv| {
                    let recorded = pv.annotations().get(ANN_CLUSTER);
                    recorded.is_some_and(|c| *c == cluster.name)
                })
                .collect(),
            all_pvs: &all_pvs.items,
            claims: &claims,
        };
        let findings = judge(&pool, &objects);
        let named = objects.pvs.len();
        println!(
            "cluster {}: {} volume(s), {named} PV(s) of ours",
            cluster.name,
            pool.volumes.len()
        );
        for finding in findings {
            left += act(backend, cluster, &kube_cluster, &finding, options).await;
        }
    }
    left += objects_of_ours(&client, &all_pvs.items, options).await?;
    left += gids_twice(&ours);
    println!("{left} problem(s) left");
    Ok(left)
}

/// Prints a finding and, with `--apply`, removes it when it may; 1 when it is a problem left.
async fn act(
    backend: &SshBackend,
    cluster: &Cluster,
    kube_cluster: &str,
    finding: &Finding,
    options: &AuditOptions,
) -> usize {
    let removable = match finding.removable(options.grace) {
        Some(removable) if options.apply => removable,
        removable => {
            let kept = if removable.is_some() {
                "  [--apply removes it]"
            } else {
                ""
            };
            println!("  {finding}{kept}");
            return usize::from(finding.wrong());
        }
    };
    // The identity is read again before anything is stopped: it may have changed since.
    let owner = Expected {
        kube_cluster,
        claim_uid: removable.claim_uid.unwrap_or_default(),
        why: Why::Orphan,
    };
    match backend
        .abandon(removable.volume, Some(&cluster.name), owner)
        .await
    {
        Ok(()) => {
            println!("  {finding}  [removed]");
            0
        }
        Err(e) => {
            println!("  {finding}  [not removed: {e}]");
            1
        }
    }
}

async fn read_pool(backend: &SshBackend, cluster: &Cluster) -> Result<Pool> {
    let volumes = backend
        .volumes(cluster)
        .await?
        .into_iter()
        .map(|v| {
            let bricks = backend.owned_bricks(cluster, &v).map_err(|e| e.to_string());
            let placed = bricks.map(|bs| bs.into_iter().map(|b| (b.node, b.path)).collect());
            PoolVolume {
                identity: Identity::of(&v),
                name: v.name,
                placed,
            }
        })
        .collect();
    let mut entries = Vec::new();
    for node in &cluster.nodes {
        entries.extend(backend.root_entries(node).await?);
    }
    Ok(Pool { volumes, entries })
}

/// Endpoints and Services of ours (labelled with their PV) whose PV is gone; removed with
/// `--apply` once older than the grace period. Returns how many are left.
async fn objects_of_ours(
    client: &Client,
    pvs: &[PersistentVolume],
    options: &AuditOptions,
) -> Result<usize> {
    let names: HashSet<String> = pvs.iter().map(|pv| pv.name_any()).collect();
    let labelled = ListParams::default().labels(LABEL_PV);
    let endpoints = Api::<Endpoints>::all(client.clone()).list(&labelled).await;
    let services = Api::<Service>::all(client.clone()).list(&labelled).await;
    let (endpoints, services) = match (endpoints, services) {
        (Ok(e), Ok(s)) => (e, s),
        // A CSI-only install (manifests/csi-only) has no access to them, and makes none.
        (Err(kube::Error::Api(e)), _) | (_, Err(kube::Error::Api(e))) if e.code == 403 => {
            println!("Endpoints and Services: not readable here, not looked at");
            return Ok(0);
        }
        (Err(e), _) | (_, Err(e)) => return Err(e.into()),
    };
    let found = endpoints
        .items
        .iter()
        .map(|e| ("Endpoints", e.metadata.clone()))
        .chain(
            services
                .items
                .iter()
                .map(|s| ("Service", s.metadata.clone())),
        );
    let mut left = 0;
    for (kind, meta) in found {
        let pv = meta.labels.as_ref().and_then(|l| l.get(LABEL_PV)).cloned();
        let Some(pv) = pv.filter(|pv| !names.contains(pv)) else {
            continue;
        };
        let (ns, name) = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone(),
        );
        let name = name.unwrap_or_default();
        let age = age_since(meta.creation_timestamp.as_ref());
        let line = format!("stray {kind:<9} {ns}/{name}: its PV {pv} is gone");
        if !(options.apply && age >= options.grace) {
            println!("  {line}");
            left += 1;
            continue;
        }
        let deleted = match kind {
            "Endpoints" => delete::<Endpoints>(client, &ns, &name).await,
            _ => delete::<Service>(client, &ns, &name).await,
        };
        match ignore_not_found(deleted) {
            Ok(()) => println!("  {line}  [removed]"),
            Err(e) => {
                println!("  {line}  [not removed: {e}]");
                left += 1;
            }
        }
    }
    Ok(left)
}

async fn delete<K>(client: &Client, ns: &str, name: &str) -> std::result::Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    api.delete(name, &DeleteParams::default()).await.map(drop)
}

/// GIDs more than one PV of ours has: two volumes' files would be one group's.
fn gids_twice(pvs: &[&PersistentVolume]) -> usize {
    let mut by_gid: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for pv in pvs {
        if let Some(gid) = pv.annotations().get(ANN_GID) {
            by_gid.entry(gid).or_default().push(pv.name_any());
        }
    }
    let twice: Vec<_> = by_gid
        .into_iter()
        .filter(|(_, pvs)| pvs.len() > 1)
        .collect();
    for (gid, pvs) in &twice {
        println!("  GID twice       {gid}: PVs {}", pvs.join(", "));
    }
    twice.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gid_two_pvs_of_ours_share_is_a_problem() {
        let with_gid = |name: &str, gid: &str| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "annotations": {ANN_GID: gid}},
            }))
            .unwrap()
        };
        let (a, b, c) = (
            with_gid("a", "2000"),
            with_gid("b", "2000"),
            with_gid("c", "2001"),
        );
        assert_eq!(gids_twice(&[&a, &b, &c]), 1);
        assert_eq!(gids_twice(&[&a, &c]), 0);
    }
}
