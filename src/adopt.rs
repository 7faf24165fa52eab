//! `glusterfs-provisioner adopt`: volumes that record no identity ([`crate::identity`]), made
//! by an earlier version or by hand, are never stopped or removed by anything automatic. This
//! lists each with the evidence that it is a claim's of this cluster, and records the identity
//! only with `--apply`, so an administrator decides; nothing a PV says stamps one by itself.
//!
//! The evidence asked for: exactly one PV mounts the volume, made by this provisioner, named
//! after its claim's UID, Bound to that claim, which lives and is Bound to it; the volume's name
//! derives from that UID; its bricks are where this provisioner puts them, in the cluster the
//! PV records.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::Result;
use crate::config::Cluster;
use crate::gluster::xml::Volume;
use crate::gluster::{SshBackend, naming};
use crate::identity::{self, Identity, Policy};
use crate::k8s::objects::{self, ANN_CLUSTER, ANN_PROVISIONED_BY, volume_of};
use crate::report::{Outcome, Printer};

/// What `adopt` is told.
pub struct AdoptOptions {
    /// The provisioner name whose PVs are ours.
    pub provisioner: String,
    pub apply: bool,
}

/// A volume recording no identity, and what became of it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row<'a> {
    cluster: &'a str,
    volume: String,
    adoptable: bool,
    /// The evidence that it is a Bound claim's of this cluster, or why it is not adoptable.
    reason: String,
    action: Action,
    /// Why `--apply` did not adopt it.
    error: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Action {
    /// Not adoptable: listed only.
    None,
    WouldAdopt,
    Adopted,
    NotAdopted,
}

impl Row<'_> {
    /// The row as the table prints it.
    fn table_line(&self) -> String {
        let (volume, reason) = (&self.volume, &self.reason);
        match self.action {
            Action::None => format!("  {volume}: not adoptable: {reason}"),
            Action::WouldAdopt => format!("  {volume}: {reason}  [--apply adopts it]"),
            Action::Adopted => format!("  {volume}: {reason}  [adopted]"),
            Action::NotAdopted => {
                let e = self.error.as_deref().unwrap_or_default();
                format!("  {volume}: {reason}  [not adopted: {e}]")
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    /// Volumes left recording no identity.
    left: usize,
    adopted: usize,
    /// Adoptable volumes `--apply` failed to adopt.
    failed: usize,
}

#[derive(Serialize)]
struct Document<'a> {
    volumes: &'a [Row<'a>],
    summary: Summary,
}

/// Lists (and with `--apply` adopts) the volumes recording no identity. Volumes left without
/// one are what it reports; [`Outcome::Problems`] only when `--apply` failed to adopt one the
/// evidence supports.
pub async fn run(
    client: Client,
    backend: &SshBackend,
    options: &AdoptOptions,
    out: Printer,
) -> Result<Outcome> {
    let list = ListParams::default();
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&list)
        .await?
        .items;
    let claims: HashMap<String, PersistentVolumeClaim> =
        Api::<PersistentVolumeClaim>::all(client.clone())
            .list(&list)
            .await?
            .items
            .into_iter()
            .filter_map(|c| Some((c.uid()?, c)))
            .collect();
    let kube_cluster = identity::kube_cluster_id(&client).await?;
    let mut rows = Vec::new();
    let topology = backend.topology();
    for cluster in &topology.clusters {
        for volume in backend.volumes(cluster).await? {
            if Identity::of(&volume) != Ok(None) {
                continue;
            }
            let facts = Facts {
                backend,
                cluster,
                pvs: &pvs,
                claims: &claims,
                kube_cluster: &kube_cluster,
                provisioner: &options.provisioner,
            };
            let judged = facts.evidence(&volume);
            let mut row = Row {
                cluster: &cluster.name,
                volume: volume.name,
                adoptable: judged.is_ok(),
                reason: String::new(),
                action: Action::None,
                error: None,
            };
            match judged {
                Err(why) => row.reason = why,
                Ok((identity, evidence)) if options.apply => {
                    row.reason = evidence;
                    match backend.adopt(cluster, &row.volume, &identity).await {
                        Ok(()) => row.action = Action::Adopted,
                        Err(e) => {
                            row.action = Action::NotAdopted;
                            row.error = Some(e.to_string());
                        }
                    }
                }
                Ok((_, evidence)) => {
                    row.reason = evidence;
                    row.action = Action::WouldAdopt;
                }
            }
            out.line(row.table_line());
            rows.push(row);
        }
    }
    let count = |action| rows.iter().filter(|r| r.action == action).count();
    let (adopted, failed) = (count(Action::Adopted), count(Action::NotAdopted));
    let left = rows.len() - adopted;
    out.line(format_args!("{left} volume(s) left without an identity"));
    let summary = Summary {
        left,
        adopted,
        failed,
    };
    out.finish(
        "Adopt",
        &Document {
            volumes: &rows,
            summary,
        },
    );
    Ok(Outcome::unless(failed, |n| {
        format!("{n} volume(s) the evidence supports not adopted")
    }))
}

/// What the evidence is read from.
struct Facts<'a> {
    backend: &'a SshBackend,
    cluster: &'a Cluster,
    pvs: &'a [PersistentVolume],
    /// By UID, with its dashes.
    claims: &'a HashMap<String, PersistentVolumeClaim>,
    kube_cluster: &'a str,
    provisioner: &'a str,
}

impl Facts<'_> {
    /// The identity the volume would record, and the evidence for it as one line; else why
    /// it is not adoptable.
    fn evidence(&self, volume: &Volume) -> std::result::Result<(Identity, String), String> {
        let name = volume.name.as_str();
        let mounting: Vec<&PersistentVolume> = self
            .pvs
            .iter()
            .filter(|pv| volume_of(pv) == Some(name))
            .collect();
        let pv = match mounting[..] {
            [pv] => pv,
            [] => return Err("no PV mounts it".into()),
            _ => {
                let names: Vec<String> = mounting.iter().map(|pv| pv.name_any()).collect();
                return Err(format!(
                    "{} PVs mount it: {}",
                    names.len(),
                    names.join(", ")
                ));
            }
        };
        let pv_name = pv.name_any();
        let by = pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str);
        if by != Some(self.provisioner) {
            return Err(format!(
                "PV {pv_name} was provisioned by {}, not {}",
                by.unwrap_or("nobody (made by hand)"),
                self.provisioner
            ));
        }
        if pv.annotations().get(ANN_CLUSTER).map(String::as_str) != Some(&self.cluster.name) {
            return Err(format!(
                "PV {pv_name} does not record cluster {}",
                self.cluster.name
            ));
        }
        let spec = pv.spec.as_ref();
        let claim_ref = spec.and_then(|s| s.claim_ref.as_ref());
        let uid = claim_ref.and_then(|r| r.uid.as_deref()).unwrap_or_default();
        if pv_name != objects::pv_name(uid) || !naming::derives_from(name, uid) {
            return Err(format!(
                "PV {pv_name} is bound to claim UID {uid:?}: neither it nor the volume is named \
                 after that UID"
            ));
        }
        let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        let claim = self.claims.get(uid);
        let claim_bound = claim.is_some_and(|c| {
            c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(&pv_name)
                && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        });
        let (Some("Bound"), Some(claim), true) = (phase, claim, claim_bound) else {
            return Err(format!(
                "PV {pv_name} is {} and its claim (UID {uid}) is {}: only a volume whose claim \
                 is Bound to its PV is adopted",
                phase.unwrap_or("without a phase"),
                if claim.is_some() {
                    "not bound to it"
                } else {
                    "gone"
                }
            ));
        };
        let bricks = self
            .backend
            .owned_bricks(self.cluster, volume)
            .map_err(|e| e.to_string())?;
        let policy =
            Policy::of_pv(spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()));
        let bricks: Vec<String> = bricks
            .iter()
            .map(|b| format!("{}:{}", b.node, b.path.display()))
            .collect();
        let evidence = format!(
            "PV {pv_name} Bound to claim {}/{} (UID {uid}), the volume named after that UID, \
             bricks {}; would record policy {}",
            claim.namespace().unwrap_or_default(),
            claim.name_any(),
            bricks.join(","),
            policy.as_str()
        );
        let identity = Identity {
            kube_cluster: self.kube_cluster.to_string(),
            claim_uid: uid.to_string(),
            pv: pv_name,
            policy,
            provisioner: self.provisioner.to_string(),
        };
        Ok((identity, evidence))
    }
}
