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
use serde::Serialize;

pub use judge::{Claim, Finding, Objects, Placed, Pool, PoolVolume, judge};

use crate::Result;
use crate::config::Cluster;
use crate::gluster::SshBackend;
use crate::identity::{self, Expected, Identity, Why};
use crate::k8s::api::ignore_not_found;
use crate::k8s::objects::{ANN_CLUSTER, ANN_GID, ANN_PROVISIONED_BY, LABEL_PV};
use crate::report::{Outcome, Printer};
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

/// A line of the report: a finding, and what `--apply` did with it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    /// The gluster cluster, for what is found there.
    cluster: Option<String>,
    /// `orphan-volume`, `retained`, `pv-gone`, `no-identity`, `another-cluster`,
    /// `stray-brick`, `volume-missing`, `not-ours`, `stray-endpoints`, `stray-service`,
    /// `gid-twice`.
    kind: &'static str,
    /// What it names: a volume, `node:path`, a PV, `namespace/name`, a GID.
    subject: String,
    /// Whether it is a problem left (counted in `summary.problemsLeft`).
    problem: bool,
    action: Action,
    /// Why it was not removed.
    error: Option<String>,
    /// The table's line.
    message: String,
}

#[derive(Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Action {
    /// Listed only.
    None,
    /// `--apply` would remove it.
    WouldRemove,
    Removed,
    NotRemoved,
}

impl Row {
    fn new(cluster: Option<&str>, kind: &'static str, subject: String, message: String) -> Row {
        Row {
            cluster: cluster.map(str::to_string),
            kind,
            subject,
            problem: true,
            action: Action::None,
            error: None,
            message,
        }
    }

    /// What `--apply`'s removal came to: a problem left only when it failed.
    fn removal<E: std::fmt::Display>(&mut self, result: std::result::Result<(), E>) {
        match result {
            Ok(()) => {
                self.action = Action::Removed;
                self.problem = false;
            }
            Err(e) => {
                self.action = Action::NotRemoved;
                self.error = Some(e.to_string());
            }
        }
    }

    /// The row as the table prints it, what was done at its end.
    fn table_line(&self) -> String {
        let done = match (self.action, &self.error) {
            (Action::None, _) => String::new(),
            (Action::WouldRemove, _) => "  [--apply removes it]".into(),
            (Action::Removed, _) => "  [removed]".into(),
            (Action::NotRemoved, e) => format!("  [not removed: {}]", e.as_deref().unwrap_or("")),
        };
        format!("  {}{done}", self.message)
    }
}

/// A cluster's count of volumes and of PVs of ours.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRow {
    name: String,
    volumes: usize,
    pvs_of_ours: usize,
}

/// What the report collects, and prints as it goes.
struct Report {
    out: Printer,
    clusters: Vec<ClusterRow>,
    findings: Vec<Row>,
    /// What could not be looked at, and why.
    not_looked_at: Vec<String>,
}

impl Report {
    fn add(&mut self, row: Row) {
        self.out.line(row.table_line());
        self.findings.push(row);
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    clusters: &'a [ClusterRow],
    findings: &'a [Row],
    not_looked_at: &'a [String],
    summary: Summary,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    findings: usize,
    removed: usize,
    problems_left: usize,
}

/// A finding's kind and what it names, for the report's rows.
fn named(finding: &Finding) -> (&'static str, String) {
    match finding {
        Finding::Orphan { volume, .. } => ("orphan-volume", volume.clone()),
        Finding::Retained { volume, .. } => ("retained", volume.clone()),
        Finding::PvGone { volume, .. } => ("pv-gone", volume.clone()),
        Finding::Unidentified { volume, .. } => ("no-identity", volume.clone()),
        Finding::AnotherCluster { volume, .. } => ("another-cluster", volume.clone()),
        Finding::StrayBrick { node, path, .. } => {
            ("stray-brick", format!("{node}:{}", path.display()))
        }
        Finding::VolumeMissing { pv, .. } => ("volume-missing", pv.clone()),
        Finding::NotOurs { volume, .. } => ("not-ours", volume.clone()),
    }
}

/// Runs the audit and prints it; [`Outcome::Problems`] while any problem is left.
pub async fn run(
    client: Client,
    backend: &SshBackend,
    options: &AuditOptions,
    out: Printer,
) -> Result<Outcome> {
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
    let mut report = Report {
        out,
        clusters: Vec::new(),
        findings: Vec::new(),
        not_looked_at: Vec::new(),
    };
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
        report.out.line(format_args!(
            "cluster {}: {} volume(s), {named} PV(s) of ours",
            cluster.name,
            pool.volumes.len()
        ));
        report.clusters.push(ClusterRow {
            name: cluster.name.clone(),
            volumes: pool.volumes.len(),
            pvs_of_ours: named,
        });
        for finding in findings {
            let row = act(backend, cluster, &kube_cluster, &finding, options).await;
            report.add(row);
        }
    }
    objects_of_ours(&client, &all_pvs.items, options, &mut report).await?;
    for (gid, pvs) in gids_twice(&ours) {
        let line = format!("GID twice       {gid}: PVs {}", pvs.join(", "));
        report.add(Row::new(None, "gid-twice", gid.into(), line));
    }
    let left = report.findings.iter().filter(|r| r.problem).count();
    report.out.line(format_args!("{left} problem(s) left"));
    let removed = report.findings.iter();
    let summary = Summary {
        findings: report.findings.len(),
        removed: removed.filter(|r| r.action == Action::Removed).count(),
        problems_left: left,
    };
    report.out.finish(
        "Audit",
        &Document {
            clusters: &report.clusters,
            findings: &report.findings,
            not_looked_at: &report.not_looked_at,
            summary,
        },
    );
    Ok(Outcome::unless(left, |n| {
        format!("{n} problem(s) left over")
    }))
}

/// With `--apply`, removes a finding when it may; its row of the report.
async fn act(
    backend: &SshBackend,
    cluster: &Cluster,
    kube_cluster: &str,
    finding: &Finding,
    options: &AuditOptions,
) -> Row {
    let (kind, subject) = named(finding);
    let mut row = Row::new(Some(&cluster.name), kind, subject, finding.to_string());
    let removable = match finding.removable(options.grace) {
        Some(removable) if options.apply => removable,
        removable => {
            if removable.is_some() {
                row.action = Action::WouldRemove;
            }
            row.problem = finding.wrong();
            return row;
        }
    };
    // The identity is read again before anything is stopped: it may have changed since.
    let owner = Expected {
        kube_cluster,
        claim_uid: removable.claim_uid.unwrap_or_default(),
        why: Why::Orphan,
    };
    let removed = backend.abandon(removable.volume, Some(&cluster.name), owner);
    row.removal(removed.await);
    row
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
/// `--apply` once older than the grace period.
async fn objects_of_ours(
    client: &Client,
    pvs: &[PersistentVolume],
    options: &AuditOptions,
    report: &mut Report,
) -> Result<()> {
    let names: HashSet<String> = pvs.iter().map(|pv| pv.name_any()).collect();
    let labelled = ListParams::default().labels(LABEL_PV);
    let endpoints = Api::<Endpoints>::all(client.clone()).list(&labelled).await;
    let services = Api::<Service>::all(client.clone()).list(&labelled).await;
    let (endpoints, services) = match (endpoints, services) {
        (Ok(e), Ok(s)) => (e, s),
        // A CSI-only install (manifests/csi-only) has no access to them, and makes none.
        (Err(kube::Error::Api(e)), _) | (_, Err(kube::Error::Api(e))) if e.code == 403 => {
            let what = "Endpoints and Services: not readable here, not looked at";
            report.out.line(what);
            report.not_looked_at.push(what.into());
            return Ok(());
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
        let row_kind = match kind {
            "Endpoints" => "stray-endpoints",
            _ => "stray-service",
        };
        let mut row = Row::new(None, row_kind, format!("{ns}/{name}"), line);
        if options.apply && age >= options.grace {
            let deleted = match kind {
                "Endpoints" => delete::<Endpoints>(client, &ns, &name).await,
                _ => delete::<Service>(client, &ns, &name).await,
            };
            row.removal(ignore_not_found(deleted));
        }
        report.add(row);
    }
    Ok(())
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

/// GIDs more than one PV of ours has, with those PVs: two volumes' files would be one group's.
fn gids_twice<'a>(pvs: &[&'a PersistentVolume]) -> Vec<(&'a str, Vec<String>)> {
    let mut by_gid: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for pv in pvs {
        if let Some(gid) = pv.annotations().get(ANN_GID) {
            by_gid.entry(gid).or_default().push(pv.name_any());
        }
    }
    by_gid
        .into_iter()
        .filter(|(_, pvs)| pvs.len() > 1)
        .collect()
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
        let twice = gids_twice(&[&a, &b, &c]);
        assert_eq!(twice, [("2000", vec!["a".to_string(), "b".to_string()])]);
        assert!(gids_twice(&[&a, &c]).is_empty());
    }
}
