//! `glusterfs-provisioner audit`: what is left over, both ways, in each cluster of the topology.
//!
//! Gluster's side: volumes named from a claim UID that no PV names (their claim gone: orphans;
//! their claim alive: its PV is gone), entries under the brick roots that belong to no volume.
//! Kubernetes' side: PVs of ours whose volume gluster lacks, Endpoints and Services of ours
//! whose PV is gone, GIDs two PVs of ours share. A volume named like ours whose bricks are not
//! where this provisioner puts them is "not ours": listed, never touched.
//!
//! `--apply` removes only orphans of ours (volumes, brick entries, Endpoints and Services) older
//! than the grace period, which an in-flight provision never is: a volume through the checked
//! path deletion uses, the rest directly. Nothing is decided from what a claim says: only from
//! whether a claim with the UID exists, which its author cannot fake.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use crate::Result;
use crate::config::Cluster;
use crate::controller::ignore_not_found;
use crate::gluster::{RootEntry, SshBackend, plan};
use crate::k8s::objects::{ANN_CLUSTER, ANN_GID, ANN_PROVISIONED_BY, LABEL_PV, volume_of};
use crate::volumes::VolumeBackend;

/// What audit found.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// A volume of ours that no PV names, and no claim has the UID of.
    Orphan { volume: String, age: Duration },
    /// A volume of ours whose claim lives but whose PV is gone.
    PvGone { volume: String, claim: String },
    /// An entry under a brick root that belongs to no volume.
    StrayBrick {
        node: String,
        path: PathBuf,
        volume: String,
        age: Duration,
        /// A PV or claim still names it: listed, kept.
        held_by: Option<String>,
    },
    /// A PV of ours whose volume gluster does not have.
    VolumeMissing { pv: String, volume: String },
    /// A volume named like ours, with bricks elsewhere: never touched.
    NotOurs { volume: String, why: String },
}

impl Finding {
    /// The volume whose leftovers `--apply` removes for it: an orphan of ours, older than
    /// `grace`.
    fn removable(&self, grace: Duration) -> Option<&str> {
        match self {
            Finding::Orphan { volume, age } if *age >= grace => Some(volume),
            Finding::StrayBrick {
                volume,
                age,
                held_by: None,
                ..
            } if *age >= grace => Some(volume),
            _ => None,
        }
    }

    /// Whether it is a problem (a volume that is not ours is not).
    fn wrong(&self) -> bool {
        !matches!(self, Finding::NotOurs { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mins = |age: &Duration| age.as_secs() / 60;
        match self {
            Finding::Orphan { volume, age } => write!(
                f,
                "orphan volume   {volume}: no PV names it, no claim has its UID ({} min old)",
                mins(age)
            ),
            Finding::PvGone { volume, claim } => write!(
                f,
                "PV gone         {volume}: its claim {claim} lives, no PV names the volume"
            ),
            Finding::StrayBrick {
                node,
                path,
                age,
                held_by,
                ..
            } => {
                write!(
                    f,
                    "stray brick     {node}:{}: no volume has it ({} min old)",
                    path.display(),
                    mins(age)
                )?;
                match held_by {
                    Some(by) => write!(f, "; kept: {by} names it"),
                    None => Ok(()),
                }
            }
            Finding::VolumeMissing { pv, volume } => {
                write!(f, "volume missing  PV {pv}: gluster has no volume {volume}")
            }
            Finding::NotOurs { volume, why } => {
                write!(f, "not ours        {volume}: {why}; never touched")
            }
        }
    }
}

/// A volume's bricks as `(node, brick path)` when they are where this provisioner puts them,
/// else why not.
pub type Placed = std::result::Result<Vec<(String, PathBuf)>, String>;

/// What a cluster holds, as read from gluster and the nodes.
pub struct Pool {
    pub volumes: Vec<(String, Placed)>,
    pub entries: Vec<RootEntry>,
}

/// What the cluster's side of Kubernetes says.
pub struct Objects<'a> {
    /// PVs of ours and of this cluster (by its record, when it has one).
    pub pvs: Vec<&'a PersistentVolume>,
    /// Every PV, whoever made it: a volume any of them names is in use.
    pub all_pvs: &'a [PersistentVolume],
    /// Every claim, by its UID without dashes.
    pub claims: &'a HashMap<String, Claim>,
}

/// A claim, as far as audit asks.
#[derive(Clone, Debug)]
pub struct Claim {
    /// `namespace/name`.
    pub name: String,
    /// Still waiting for its volume: what is made for it is in flight, not left over.
    pub pending: bool,
}

/// The findings for one cluster.
pub fn judge(pool: &Pool, objects: &Objects<'_>) -> Vec<Finding> {
    let named: HashMap<&str, String> = objects
        .all_pvs
        .iter()
        .filter_map(|pv| Some((volume_of(pv)?, pv.name_any())))
        .collect();
    let mut out = Vec::new();
    let mut owned: HashSet<(&str, PathBuf)> = HashSet::new();
    let age_of = |volume: &str| {
        let ages = pool.entries.iter().filter(|e| e.name == volume);
        ages.map(|e| e.age).min().unwrap_or(Duration::MAX)
    };
    for (volume, bricks) in &pool.volumes {
        if let Ok(bricks) = bricks {
            for (node, path) in bricks {
                // The entry is `<root>/<volume>`, the brick `<root>/<volume>/brick`.
                let dir = path.parent().map(PathBuf::from).unwrap_or_default();
                owned.insert((node.as_str(), dir));
            }
        }
        let Some(uid) = plan::uid_suffix(volume) else {
            continue;
        };
        if named.contains_key(volume.as_str()) {
            continue;
        }
        if let Err(why) = bricks {
            out.push(Finding::NotOurs {
                volume: volume.clone(),
                why: why.clone(),
            });
            continue;
        }
        out.push(match objects.claims.get(uid) {
            Some(claim) if claim.pending => continue,
            Some(claim) => Finding::PvGone {
                volume: volume.clone(),
                claim: claim.name.clone(),
            },
            None => Finding::Orphan {
                volume: volume.clone(),
                age: age_of(volume),
            },
        });
    }
    let volumes: HashSet<&str> = pool.volumes.iter().map(|(v, _)| v.as_str()).collect();
    let mut seen = HashSet::new();
    for entry in &pool.entries {
        let path = entry.root.join(&entry.name);
        let Some(uid) = plan::uid_suffix(&entry.name) else {
            continue;
        };
        let claim = objects.claims.get(uid);
        if owned.contains(&(entry.node.as_str(), path.clone()))
            || claim.is_some_and(|c| c.pending)
            || !seen.insert((entry.node.clone(), path.clone()))
        {
            continue;
        }
        let held_by = named
            .get(entry.name.as_str())
            .map(|pv| format!("PV {pv}"))
            .or_else(|| claim.map(|c| format!("claim {}", c.name)))
            // Another volume of the name, with bricks elsewhere: removing its name is not ours.
            .or_else(|| {
                volumes
                    .contains(entry.name.as_str())
                    .then(|| format!("volume {}", entry.name))
            });
        out.push(Finding::StrayBrick {
            node: entry.node.clone(),
            path,
            volume: entry.name.clone(),
            age: age_of(&entry.name),
            held_by,
        });
    }
    let listed: HashSet<&str> = volumes;
    for pv in &objects.pvs {
        let Some(volume) = volume_of(pv) else {
            continue;
        };
        if !listed.contains(volume) {
            out.push(Finding::VolumeMissing {
                pv: pv.name_any(),
                volume: volume.to_string(),
            });
        }
    }
    out
}

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
    let mut left = 0;
    for cluster in &backend.topology().clusters {
        let pool = read_pool(backend, cluster).await?;
        let objects = Objects {
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
            left += act(backend, cluster, &finding, options).await;
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
    finding: &Finding,
    options: &AuditOptions,
) -> usize {
    let volume = match finding.removable(options.grace) {
        Some(volume) if options.apply => volume,
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
    match backend.abandon(volume, Some(&cluster.name)).await {
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
            let bricks = bricks.map(|bs| bs.into_iter().map(|b| (b.node, b.path)).collect());
            (v.name, bricks)
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

    const UID_A: &str = "0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";
    const UID_B: &str = "1f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";
    const UID_C: &str = "2f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";

    fn pv(name: &str, volume: &str) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"glusterfs": {"endpoints": "e", "path": volume}},
        }))
        .unwrap()
    }

    fn entry(node: &str, name: &str, age: u64) -> RootEntry {
        RootEntry {
            node: node.into(),
            root: "/b1".into(),
            name: name.into(),
            age: Duration::from_secs(age),
        }
    }

    fn ours(volume: &str) -> Placed {
        Ok(vec![("n1".into(), format!("/b1/{volume}/brick").into())])
    }

    #[test]
    fn each_leftover_is_told_apart() {
        // Named by a PV of another provisioner (another instance on the same pool): in use.
        let d = "vol_3f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f".to_string();
        let (a, b, c) = (
            format!("vol_{UID_A}"),
            format!("dept_ns_claim_{UID_B}"),
            format!("vol_{UID_C}"),
        );
        let pool = Pool {
            volumes: vec![
                (a.clone(), ours(&a)),
                (b.clone(), ours(&b)),
                (c.clone(), Err("brick elsewhere".into())),
                ("shared".into(), Err("brick elsewhere".into())),
                ("vol_named".into(), ours("vol_named")),
                (d.clone(), ours(&d)),
            ],
            entries: vec![
                entry("n1", &a, 7200),
                entry("n1", &b, 10),
                entry("n2", &format!("vol_{UID_B}"), 50),
                entry("n1", "lost+found", 9999),
            ],
        };
        let (with_pv, missing) = (pv("pv-named", "vol_named"), pv("pv-missing", "vol_gone"));
        let all = [with_pv.clone(), missing.clone(), pv("theirs", &d)];
        let objects = Objects {
            pvs: vec![&with_pv, &missing],
            all_pvs: &all,
            claims: &HashMap::from([(
                UID_B.to_string(),
                Claim {
                    name: "ns/claim".into(),
                    pending: false,
                },
            )]),
        };
        let found = judge(&pool, &objects);
        let grace = Duration::from_secs(3600);
        let removable: Vec<bool> = found.iter().map(|f| f.removable(grace).is_some()).collect();
        assert_eq!(
            found,
            [
                Finding::Orphan {
                    volume: a.clone(),
                    age: Duration::from_secs(7200)
                },
                Finding::PvGone {
                    volume: b.clone(),
                    claim: "ns/claim".into()
                },
                Finding::NotOurs {
                    volume: c.clone(),
                    why: "brick elsewhere".into()
                },
                Finding::StrayBrick {
                    node: "n2".into(),
                    path: format!("/b1/vol_{UID_B}").into(),
                    volume: format!("vol_{UID_B}"),
                    age: Duration::from_secs(50),
                    held_by: Some("claim ns/claim".into()),
                },
                Finding::VolumeMissing {
                    pv: "pv-missing".into(),
                    volume: "vol_gone".into()
                },
            ]
        );
        assert_eq!(removable, [true, false, false, false, false]);
        assert_eq!(
            found[0].removable(Duration::from_secs(7201)),
            None,
            "too young"
        );
        assert_eq!(found[0].removable(grace), Some(a.as_str()));
    }

    #[test]
    fn a_gid_two_pvs_of_ours_share_is_a_problem() {
        let with_gid = |name: &str, gid: &str| {
            let mut pv = pv(name, name);
            pv.metadata.annotations = Some([(ANN_GID.to_string(), gid.to_string())].into());
            pv
        };
        let (a, b, c) = (
            with_gid("a", "2000"),
            with_gid("b", "2000"),
            with_gid("c", "2001"),
        );
        assert_eq!(gids_twice(&[&a, &b, &c]), 1);
        assert_eq!(gids_twice(&[&a, &c]), 0);
    }

    #[test]
    fn what_a_pending_claim_waits_for_is_in_flight() {
        let a = format!("vol_{UID_A}");
        let pool = Pool {
            volumes: vec![(a.clone(), ours(&a))],
            entries: vec![entry("n1", &a, 9999), entry("n2", &a, 9999)],
        };
        let pending = Claim {
            name: "ns/c".into(),
            pending: true,
        };
        let objects = Objects {
            pvs: vec![],
            all_pvs: &[],
            claims: &HashMap::from([(UID_A.to_string(), pending)]),
        };
        assert_eq!(judge(&pool, &objects), []);
    }

    #[test]
    fn stray_entries_of_another_volume_of_the_name_are_kept() {
        let a = format!("vol_{UID_A}");
        let pool = Pool {
            volumes: vec![(a.clone(), Err("elsewhere".into()))],
            entries: vec![entry("n1", &a, 9999)],
        };
        let objects = Objects {
            pvs: vec![],
            all_pvs: &[],
            claims: &HashMap::new(),
        };
        let found = judge(&pool, &objects);
        assert!(
            matches!(&found[1], Finding::StrayBrick { held_by: Some(by), .. } if by.contains("volume"))
        );
        assert!(
            found.iter().all(|f| f.removable(Duration::ZERO).is_none()),
            "{found:?}"
        );
    }
}
