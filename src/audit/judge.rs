//! What audit makes of a cluster, from what gluster and Kubernetes say: pure, so every rule is
//! tested without nodes. Whose a volume is comes from its identity ([`crate::identity`]) alone.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;

use crate::gluster::{RootEntry, naming};
use crate::identity::{Identity, Policy};
use crate::k8s::objects::volume_of;

/// What audit found.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// A volume this Kubernetes cluster made with policy Delete, whose claim is gone and which
    /// no PV mounts: removable past the grace period.
    Orphan {
        volume: String,
        claim_uid: String,
        age: Duration,
    },
    /// A volume this cluster made with policy Retain whose claim is gone and which no PV
    /// mounts: the data an administrator kept. Never removed.
    Retained { volume: String, pv: String },
    /// A volume of ours whose claim lives but whose PV is gone.
    PvGone { volume: String, claim: String },
    /// A volume named like ours that records no identity (made by hand, or by a version
    /// before identities) or only part of one: left for an administrator.
    Unidentified { volume: String, why: String },
    /// A volume another Kubernetes cluster sharing the pool made: never touched.
    AnotherCluster { volume: String, cluster: String },
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
    /// A volume of ours by its identity, with bricks elsewhere: never touched.
    NotOurs { volume: String, why: String },
}

/// What `--apply` may remove for a finding.
#[derive(Debug, PartialEq)]
pub struct Removable<'a> {
    pub volume: &'a str,
    /// The claim UID the volume's identity must still record; `None` for brick entries of no
    /// volume (should a volume of the name appear meanwhile, no UID is its).
    pub claim_uid: Option<&'a str>,
}

impl Finding {
    /// What `--apply` removes for it: an orphan of ours, or a stray brick entry nobody names,
    /// older than `grace`.
    pub fn removable(&self, grace: Duration) -> Option<Removable<'_>> {
        match self {
            Finding::Orphan {
                volume,
                claim_uid,
                age,
            } if *age >= grace => Some(Removable {
                volume,
                claim_uid: Some(claim_uid),
            }),
            Finding::StrayBrick {
                volume,
                age,
                held_by: None,
                ..
            } if *age >= grace => Some(Removable {
                volume,
                claim_uid: None,
            }),
            _ => None,
        }
    }

    /// Whether it is a problem: a retained volume, another cluster's or one not ours is not.
    pub fn wrong(&self) -> bool {
        !matches!(
            self,
            Finding::NotOurs { .. } | Finding::Retained { .. } | Finding::AnotherCluster { .. }
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mins = |age: &Duration| age.as_secs() / 60;
        match self {
            Finding::Orphan { volume, age, .. } => write!(
                f,
                "orphan volume   {volume}: policy Delete, no PV mounts it, its claim is gone ({} min old)",
                mins(age)
            ),
            Finding::Retained { volume, pv } => write!(
                f,
                "retained, no PV {volume}: policy Retain (PV {pv} is gone); never removed"
            ),
            Finding::PvGone { volume, claim } => write!(
                f,
                "PV gone         {volume}: its claim {claim} lives, no PV mounts the volume"
            ),
            Finding::Unidentified { volume, why } => write!(
                f,
                "no identity     {volume}: {why}; left for an administrator (see `adopt`)"
            ),
            Finding::AnotherCluster { volume, cluster } => write!(
                f,
                "another cluster's {volume}: made by Kubernetes cluster {cluster}; never touched"
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

/// One volume of a cluster, as gluster tells it.
pub struct PoolVolume {
    pub name: String,
    pub placed: Placed,
    /// What it records of who made it: see [`Identity::of`].
    pub identity: std::result::Result<Option<Identity>, String>,
}

/// What a cluster holds, as read from gluster and the nodes.
pub struct Pool {
    pub volumes: Vec<PoolVolume>,
    pub entries: Vec<RootEntry>,
}

/// What the cluster's side of Kubernetes says.
pub struct Objects<'a> {
    /// This Kubernetes cluster's id.
    pub kube_cluster: &'a str,
    /// PVs of ours and of this cluster (by its record, when it has one).
    pub pvs: Vec<&'a PersistentVolume>,
    /// Every PV, whoever made it: a volume any of them mounts is in use.
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
    for volume in &pool.volumes {
        if let Ok(bricks) = &volume.placed {
            for (node, path) in bricks {
                // The entry is `<root>/<volume>`, the brick `<root>/<volume>/brick`.
                let dir = path.parent().map(PathBuf::from).unwrap_or_default();
                owned.insert((node.as_str(), dir));
            }
        }
        if !named.contains_key(volume.name.as_str())
            && let Some(finding) = judge_volume(volume, objects, age_of(&volume.name))
        {
            out.push(finding);
        }
    }
    let volumes: HashSet<&str> = pool.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut seen = HashSet::new();
    for entry in &pool.entries {
        let path = entry.root.join(&entry.name);
        let Some(uid) = naming::uid_suffix(&entry.name) else {
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
    for pv in &objects.pvs {
        let Some(volume) = volume_of(pv) else {
            continue;
        };
        if !volumes.contains(volume) {
            out.push(Finding::VolumeMissing {
                pv: pv.name_any(),
                volume: volume.to_string(),
            });
        }
    }
    out
}

/// A volume no PV mounts, by what it records of itself.
fn judge_volume(volume: &PoolVolume, objects: &Objects<'_>, age: Duration) -> Option<Finding> {
    let name = volume.name.clone();
    let identity = match &volume.identity {
        Ok(Some(identity)) => identity,
        // Volumes named unlike ours, recording nothing, are someone else's business.
        Ok(None) => {
            let claim = objects.claims.get(naming::uid_suffix(&name)?);
            // A claim waiting for it: an attempt that died before recording the identity.
            if claim.is_some_and(|c| c.pending) {
                return None;
            }
            return Some(Finding::Unidentified {
                volume: name,
                why: "records no identity (made by hand or by an earlier version)".into(),
            });
        }
        Err(why) => {
            return Some(Finding::Unidentified {
                volume: name,
                why: why.clone(),
            });
        }
    };
    if identity.kube_cluster != objects.kube_cluster {
        return Some(Finding::AnotherCluster {
            volume: name,
            cluster: identity.kube_cluster.clone(),
        });
    }
    if let Err(why) = &volume.placed {
        return Some(Finding::NotOurs {
            volume: name,
            why: why.clone(),
        });
    }
    Some(
        match objects.claims.get(&identity.claim_uid.replace('-', "")) {
            Some(claim) if claim.pending => return None,
            Some(claim) => Finding::PvGone {
                volume: name,
                claim: claim.name.clone(),
            },
            None if identity.policy == Policy::Retain => Finding::Retained {
                volume: name,
                pv: identity.pv.clone(),
            },
            None => Finding::Orphan {
                volume: name,
                claim_uid: identity.claim_uid.clone(),
                age,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID_A: &str = "0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";
    const UID_B: &str = "1f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";
    const UID_C: &str = "2f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";
    const UID_D: &str = "3f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";
    const UID_E: &str = "4f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f";
    const HERE: &str = "kube-here";

    fn pv(name: &str, source: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "spec": source,
        }))
        .unwrap()
    }

    fn glusterfs_pv(name: &str, path: &str) -> PersistentVolume {
        pv(
            name,
            serde_json::json!({"glusterfs": {"endpoints": "e", "path": path}}),
        )
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

    /// A volume of this cluster recording the claim `uid` and `policy`.
    fn made(name: &str, uid: &str, policy: Policy, kube_cluster: &str) -> PoolVolume {
        PoolVolume {
            name: name.into(),
            placed: ours(name),
            identity: Ok(Some(Identity {
                kube_cluster: kube_cluster.into(),
                claim_uid: uid.into(),
                pv: format!("pvc-{uid}"),
                policy,
                provisioner: "p".into(),
            })),
        }
    }

    fn objects<'a>(
        pvs: Vec<&'a PersistentVolume>,
        all_pvs: &'a [PersistentVolume],
        claims: &'a HashMap<String, Claim>,
    ) -> Objects<'a> {
        Objects {
            kube_cluster: HERE,
            pvs,
            all_pvs,
            claims,
        }
    }

    fn claims(entries: &[(&str, bool)]) -> HashMap<String, Claim> {
        entries
            .iter()
            .map(|(uid, pending)| {
                let claim = Claim {
                    name: "ns/claim".into(),
                    pending: *pending,
                };
                (uid.to_string(), claim)
            })
            .collect()
    }

    #[test]
    fn each_leftover_is_told_apart() {
        let (a, b, c) = (
            format!("vol_{UID_A}"),
            format!("dept_ns_claim_{UID_B}"),
            format!("vol_{UID_C}"),
        );
        let (retained, theirs) = (format!("vol_{UID_D}"), format!("vol_{UID_E}"));
        let mut elsewhere = made(&c, UID_C, Policy::Delete, HERE);
        elsewhere.placed = Err("brick elsewhere".into());
        let pool = Pool {
            volumes: vec![
                made(&a, UID_A, Policy::Delete, HERE),
                made(&b, UID_B, Policy::Delete, HERE),
                elsewhere,
                made(&retained, UID_D, Policy::Retain, HERE),
                made(&theirs, UID_E, Policy::Delete, "kube-there"),
                PoolVolume {
                    name: "shared".into(),
                    placed: Err("brick elsewhere".into()),
                    identity: Ok(None),
                },
                made("vol_named", UID_A, Policy::Delete, HERE),
            ],
            entries: vec![
                entry("n1", &a, 7200),
                entry("n1", &b, 10),
                entry("n2", &format!("vol_{UID_B}"), 50),
                entry("n1", "lost+found", 9999),
            ],
        };
        let (with_pv, missing) = (
            glusterfs_pv("pv-named", "/vol_named/sub"),
            glusterfs_pv("pv-missing", "vol_gone"),
        );
        let all = [with_pv.clone(), missing.clone()];
        let claims = claims(&[(UID_B, false)]);
        let found = judge(&pool, &objects(vec![&with_pv, &missing], &all, &claims));
        let grace = Duration::from_secs(3600);
        let removable: Vec<bool> = found.iter().map(|f| f.removable(grace).is_some()).collect();
        assert_eq!(
            found,
            [
                Finding::Orphan {
                    volume: a.clone(),
                    claim_uid: UID_A.into(),
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
                Finding::Retained {
                    volume: retained.clone(),
                    pv: format!("pvc-{UID_D}"),
                },
                Finding::AnotherCluster {
                    volume: theirs.clone(),
                    cluster: "kube-there".into(),
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
        assert_eq!(removable, [true, false, false, false, false, false, false]);
        assert_eq!(
            found[0].removable(Duration::from_secs(7201)),
            None,
            "too young"
        );
        assert_eq!(
            found[0].removable(grace),
            Some(Removable {
                volume: &a,
                claim_uid: Some(UID_A)
            })
        );
    }

    #[test]
    fn a_volume_any_pv_mounts_is_in_use_whatever_the_form() {
        let x = format!("vol_{UID_A}");
        let pvs = [
            glusterfs_pv("slash", &format!("/{x}")),
            glusterfs_pv("sub", &format!("{x}/sub")),
            pv(
                "csi",
                serde_json::json!({"csi": {"driver": "d", "volumeHandle": "other",
                                           "volumeAttributes": {"volume": x}}}),
            ),
        ];
        let claims = claims(&[]);
        for one in &pvs {
            let pool = Pool {
                volumes: vec![made(&x, UID_A, Policy::Delete, HERE)],
                entries: vec![],
            };
            let found = judge(&pool, &objects(vec![], std::slice::from_ref(one), &claims));
            assert_eq!(found, [], "{}", one.name_any());
        }
    }

    #[test]
    fn volumes_without_an_identity_are_listed_and_never_removable() {
        let x = format!("vol_{UID_A}");
        let unidentified = |identity| Pool {
            volumes: vec![PoolVolume {
                name: x.clone(),
                placed: ours(&x),
                identity,
            }],
            entries: vec![entry("n1", &x, 99999)],
        };
        let claims = claims(&[]);
        for identity in [Ok(None), Err("records only part of an identity".into())] {
            let found = judge(&unidentified(identity), &objects(vec![], &[], &claims));
            assert!(
                matches!(&found[..], [Finding::Unidentified { .. }]),
                "{found:?}"
            );
            assert!(found[0].removable(Duration::ZERO).is_none());
        }
        // A name unlike ours that records nothing is not audit's business.
        let other = Pool {
            volumes: vec![PoolVolume {
                name: "prod_data".into(),
                placed: ours("prod_data"),
                identity: Ok(None),
            }],
            entries: vec![],
        };
        assert_eq!(judge(&other, &objects(vec![], &[], &claims)), []);
    }

    #[test]
    fn what_a_pending_claim_waits_for_is_in_flight() {
        let a = format!("vol_{UID_A}");
        let pool = Pool {
            volumes: vec![PoolVolume {
                name: a.clone(),
                placed: ours(&a),
                identity: Ok(None),
            }],
            entries: vec![entry("n1", &a, 9999), entry("n2", &a, 9999)],
        };
        let claims = claims(&[(UID_A, true)]);
        assert_eq!(judge(&pool, &objects(vec![], &[], &claims)), []);
    }

    #[test]
    fn stray_entries_of_another_volume_of_the_name_are_kept() {
        let a = format!("vol_{UID_A}");
        let mut elsewhere = made(&a, UID_A, Policy::Delete, HERE);
        elsewhere.placed = Err("elsewhere".into());
        let pool = Pool {
            volumes: vec![elsewhere],
            entries: vec![entry("n1", &a, 9999)],
        };
        let claims = claims(&[]);
        let found = judge(&pool, &objects(vec![], &[], &claims));
        assert!(
            matches!(&found[1], Finding::StrayBrick { held_by: Some(by), .. } if by.contains("volume"))
        );
        assert!(
            found.iter().all(|f| f.removable(Duration::ZERO).is_none()),
            "{found:?}"
        );
    }
}
