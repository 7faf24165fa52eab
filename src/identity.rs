//! A volume's identity: what the provisioner writes on a gluster volume when it makes it, and
//! the only proof that anything automatic (deletion of a Released PV, a deleted claim's
//! cleanup, `audit --apply`) may stop or remove it. A PV, a name or an absence proves nothing:
//! whoever may write a PV may write any name and any claim UID.
//!
//! It is kept as options of gluster's `user.` namespace, which gluster stores with the volume,
//! shows in `volume info --xml` and never interprets: readable from gluster alone, by any
//! Kubernetes cluster sharing the pool, after any restart. Heketi volumes have no such options
//! here; they are judged by Heketi's own record of their name and GID.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::gluster::xml::Volume;
use crate::{Error, Result};

/// Every option of the record starts with it; classes may not set any.
pub const PREFIX: &str = "user.glusterfs-provisioner.";
const KUBE_CLUSTER: &str = "user.glusterfs-provisioner.kube-cluster";
const CLAIM_UID: &str = "user.glusterfs-provisioner.claim-uid";
const PV: &str = "user.glusterfs-provisioner.pv";
pub const POLICY: &str = "user.glusterfs-provisioner.reclaim-policy";
const PROVISIONER: &str = "user.glusterfs-provisioner.provisioner";

/// The Kubernetes cluster this process acts for: the UID of its `kube-system` namespace, the
/// usual Kubernetes cluster id. Two clusters sharing one gluster pool tell their volumes apart
/// by it (the topology's cluster names are theirs to choose, and may well be the same).
pub async fn kube_cluster_id(client: &Client) -> Result<String> {
    let namespace = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await?;
    namespace
        .uid()
        .ok_or_else(|| Error::NotOurs("the kube-system namespace has no UID".into()))
}

/// A PV's reclaim policy as the volume records it. Anything but `Delete` keeps the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Delete,
    Retain,
}

impl Policy {
    /// A PV's `persistentVolumeReclaimPolicy` (Kubernetes' default is Delete).
    pub fn of_pv(policy: Option<&str>) -> Self {
        match policy.unwrap_or("Delete") {
            "Delete" => Policy::Delete,
            _ => Policy::Retain,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Delete => "Delete",
            Policy::Retain => "Retain",
        }
    }
}

/// Who made a volume and for what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// [`kube_cluster_id`] of the cluster whose provisioner made it.
    pub kube_cluster: String,
    /// The claim it was made for (with its dashes, as Kubernetes writes it).
    pub claim_uid: String,
    /// The PV made for it.
    pub pv: String,
    pub policy: Policy,
    /// The provisioner name the PV carries.
    pub provisioner: String,
}

impl Identity {
    /// The `volume set` key/value pairs that record it.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            (KUBE_CLUSTER, self.kube_cluster.as_str()),
            (CLAIM_UID, &self.claim_uid),
            (PV, &self.pv),
            (POLICY, self.policy.as_str()),
            (PROVISIONER, &self.provisioner),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Whether `other` records the same volume, whatever the policy (which may change).
    pub fn same_volume(&self, other: &Identity) -> bool {
        Identity {
            policy: self.policy,
            ..other.clone()
        } == *self
    }

    /// What removing this volume expects when no PV was ever made for it.
    pub fn no_pv(&self) -> Expected<'_> {
        Expected {
            kube_cluster: &self.kube_cluster,
            claim_uid: &self.claim_uid,
            why: Why::NoPv,
        }
    }

    /// What `volume` records: `Ok(None)` when it records nothing (made by hand, or before
    /// identities were written); an error when it records part of one or a policy it cannot
    /// mean, which is never taken as anyone's.
    pub fn of(volume: &Volume) -> std::result::Result<Option<Self>, String> {
        let keys = [KUBE_CLUSTER, CLAIM_UID, PV, POLICY, PROVISIONER];
        let values: Vec<Option<&str>> = keys.iter().map(|k| volume.option(k)).collect();
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let [
            Some(kube_cluster),
            Some(claim_uid),
            Some(pv),
            Some(policy),
            Some(provisioner),
        ] = values[..]
        else {
            return Err(format!(
                "volume {} records only part of an identity",
                volume.name
            ));
        };
        let policy = match policy {
            "Delete" => Policy::Delete,
            "Retain" => Policy::Retain,
            other => {
                return Err(format!(
                    "volume {} records reclaim policy {other:?}",
                    volume.name
                ));
            }
        };
        Ok(Some(Identity {
            kube_cluster: kube_cluster.into(),
            claim_uid: claim_uid.into(),
            pv: pv.into(),
            policy,
            provisioner: provisioner.into(),
        }))
    }
}

/// What an automatic step expects of the volume it is about to stop or remove.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// This process's [`kube_cluster_id`].
    pub kube_cluster: &'a str,
    pub claim_uid: &'a str,
    pub why: Why<'a>,
}

/// Why a volume is to go, which decides what else its identity must say.
#[derive(Clone, Copy, Debug)]
pub enum Why<'a> {
    /// Its PV (this one) is Released or deleted with policy Delete: the volume must have been
    /// made for this PV, and record Delete too.
    PvDeleted { pv: &'a str },
    /// No PV was ever made for it (its claim was deleted first, or saving the PV failed):
    /// whatever the policy, nobody was given it. A volume an attempt created but never started
    /// (it died before recording the identity) holds nothing and may go too.
    NoPv,
    /// `audit --apply`: no claim has the UID, no PV names the volume; only a Delete volume goes.
    Orphan,
}

impl Expected<'_> {
    /// Why `volume` may not be stopped or removed for this step; `None`: it may.
    pub fn refusal(&self, volume: &Volume) -> Option<String> {
        let name = &volume.name;
        let identity = match Identity::of(volume) {
            Err(why) => return Some(format!("{why}; it is left for an administrator")),
            Ok(None) if matches!(self.why, Why::NoPv) && !volume.is_started() => {
                return None;
            }
            Ok(None) => {
                return Some(format!(
                    "volume {name} records no identity (made by hand or by an earlier version): \
                     nothing automatic removes it; `glusterfs-provisioner adopt` lists volumes \
                     an administrator may adopt"
                ));
            }
            Ok(Some(identity)) => identity,
        };
        if identity.kube_cluster != self.kube_cluster {
            return Some(format!(
                "volume {name} was made by another Kubernetes cluster ({}), not this one ({})",
                identity.kube_cluster, self.kube_cluster
            ));
        }
        if identity.claim_uid != self.claim_uid {
            return Some(format!(
                "volume {name} was made for claim UID {}, not {}",
                identity.claim_uid, self.claim_uid
            ));
        }
        match self.why {
            Why::PvDeleted { pv } if identity.pv != pv => Some(format!(
                "volume {name} was made for PV {}, not {pv}",
                identity.pv
            )),
            Why::PvDeleted { .. } | Why::Orphan if identity.policy != Policy::Delete => {
                Some(format!(
                    "volume {name} records reclaim policy {}: it is kept",
                    identity.policy.as_str()
                ))
            }
            _ => None,
        }
    }

    /// [`Self::refusal`] as the error that stops the step.
    pub fn check(&self, volume: &Volume) -> Result<()> {
        match self.refusal(volume) {
            Some(why) => Err(Error::NotOurs(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(started: bool, options: &[(String, String)]) -> Volume {
        let bricks = ["a", "b", "c"].map(|h| (format!("{h}:/b/vol_x/brick"), false));
        Volume {
            status: if started { "Started" } else { "Created" }.into(),
            ..Volume::example(&bricks, options.to_vec())
        }
    }

    fn identity(policy: Policy) -> Identity {
        Identity {
            kube_cluster: "k1".into(),
            claim_uid: "u1".into(),
            pv: "pvc-u1".into(),
            policy,
            provisioner: "gluster.org/glusterfs".into(),
        }
    }

    fn expected(why: Why<'_>) -> Expected<'_> {
        Expected {
            kube_cluster: "k1",
            claim_uid: "u1",
            why,
        }
    }

    const PV_DELETED: Why<'static> = Why::PvDeleted { pv: "pvc-u1" };

    #[test]
    fn an_identity_reads_back_as_written() {
        let id = identity(Policy::Retain);
        assert_eq!(Identity::of(&volume(true, &id.options())), Ok(Some(id)));
        assert_eq!(Identity::of(&volume(true, &[])), Ok(None));
        let mut part = identity(Policy::Delete).options();
        part.remove(1);
        assert!(Identity::of(&volume(true, &part)).is_err());
        let mut odd = identity(Policy::Delete).options();
        odd[3].1 = "Recycle".into();
        assert!(Identity::of(&volume(true, &odd)).is_err());
    }

    #[test]
    fn only_a_matching_delete_identity_lets_a_released_pv_remove_its_volume() {
        let ours = volume(true, &identity(Policy::Delete).options());
        assert_eq!(expected(PV_DELETED).refusal(&ours), None);
        assert_eq!(expected(Why::Orphan).refusal(&ours), None);
        let cases = [
            (volume(true, &[]), PV_DELETED, "records no identity"),
            (
                volume(true, &identity(Policy::Retain).options()),
                PV_DELETED,
                "reclaim policy Retain",
            ),
            (
                volume(true, &identity(Policy::Retain).options()),
                Why::Orphan,
                "reclaim policy Retain",
            ),
            (ours.clone(), Why::PvDeleted { pv: "pvc-data" }, "PV pvc-u1"),
        ];
        for (v, why, want) in cases {
            let got = expected(why).refusal(&v).unwrap_or_default();
            assert!(got.contains(want), "{why:?}: {got}");
        }
        let other_cluster = Expected {
            kube_cluster: "k2",
            ..expected(PV_DELETED)
        };
        let got = other_cluster.refusal(&ours).unwrap();
        assert!(got.contains("another Kubernetes cluster (k1)"), "{got}");
        let other_claim = Expected {
            claim_uid: "data",
            ..expected(PV_DELETED)
        };
        assert!(other_claim.refusal(&ours).unwrap().contains("claim UID u1"));
    }

    #[test]
    fn a_volume_no_pv_had_goes_whatever_its_policy_or_if_never_started() {
        let retain = volume(true, &identity(Policy::Retain).options());
        assert_eq!(expected(Why::NoPv).refusal(&retain), None);
        assert_eq!(expected(Why::NoPv).refusal(&volume(false, &[])), None);
        assert!(expected(Why::NoPv).refusal(&volume(true, &[])).is_some());
    }
}
