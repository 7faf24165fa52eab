//! `glusterfs-provisioner convert`: moves claims from `glusterfs` PVs (which no kubelet from
//! 1.26 on can mount) to CSI PVs of the same name, capacity, GID and claim, keeping the data.
//!
//! Per PV, in an order that can stop anywhere and be run again:
//! 1. the planned CSI PV and the PV's reclaim policy are recorded on the claim;
//! 2. the PV's reclaim policy becomes Retain, so nothing deletes the gluster volume;
//! 3. the old PV object is deleted, then its finalizers removed (the claim stays);
//! 4. the CSI PV is created from the record, bound to the same claim;
//! 5. once the claim is Bound to it again, the reclaim policy is restored and the record goes.
//!
//! A run without `--apply` only prints the plan. A claim that a running pod uses is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, Endpoints, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::config::csi::{ATTR_SERVERS, ATTR_VOLUME};
use crate::controller::ignore_not_found;
use crate::{Error, Result};

/// On a claim being converted: the CSI PV to make and the reclaim policy to restore.
pub const ANN_CONVERT: &str = "gluster.org/convert-to-csi";

pub enum Selection {
    Pvs(Vec<String>),
    Namespace(String),
    All,
}

pub struct Settings {
    pub driver: String,
    pub apply: bool,
    /// Longest wait for a claim to be Bound to its new PV.
    pub bind_timeout: Duration,
}

/// What was recorded on the claim before the old PV went.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    pv: PersistentVolume,
    reclaim_policy: String,
}

/// One PV's conversion as planned.
struct Plan {
    pv: String,
    claim: (String, String),
    detail: String,
    todo: Todo,
}

enum Todo {
    Convert(Box<Record>),
    /// Interrupted after step 1: go on from the record.
    Resume(Box<Record>),
    Skip,
}

fn fail(message: String) -> Error {
    Error::Convert(message)
}

/// The CSI PV replacing `old`: the same object but for its source (and the fields the API
/// server fills in), reclaim policy Retain until the claim is back.
pub fn csi_pv(
    old: &PersistentVolume,
    driver: &str,
    servers: &[String],
) -> Result<PersistentVolume> {
    let spec = old.spec.clone().unwrap_or_default();
    let source = spec
        .glusterfs
        .as_ref()
        .ok_or_else(|| fail(format!("PV {} has no glusterfs source", old.name_any())))?;
    let mut claim_ref = spec
        .claim_ref
        .clone()
        .ok_or_else(|| fail(format!("PV {} is not bound to a claim", old.name_any())))?;
    claim_ref.resource_version = None;
    let mut pv = PersistentVolume {
        metadata: kube::api::ObjectMeta {
            name: old.metadata.name.clone(),
            labels: old.metadata.labels.clone(),
            annotations: old.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: Some(spec.clone()),
        status: None,
    };
    let new_spec = pv.spec.as_mut().expect("set above");
    new_spec.glusterfs = None;
    new_spec.claim_ref = Some(claim_ref);
    new_spec.persistent_volume_reclaim_policy = Some("Retain".into());
    new_spec.csi = Some(CSIPersistentVolumeSource {
        driver: driver.into(),
        volume_handle: source.path.clone(),
        volume_attributes: Some(BTreeMap::from([
            (ATTR_VOLUME.into(), source.path.clone()),
            (ATTR_SERVERS.into(), servers.join(",")),
        ])),
        read_only: source.read_only,
        ..Default::default()
    });
    Ok(pv)
}

async fn servers_of(client: &Client, pv: &PersistentVolume, claim_ns: &str) -> Result<Vec<String>> {
    let source = pv
        .spec
        .as_ref()
        .and_then(|s| s.glusterfs.as_ref())
        .expect("checked");
    let ns = source.endpoints_namespace.as_deref().unwrap_or(claim_ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let ep = endpoints.get_opt(&source.endpoints).await?.ok_or_else(|| {
        fail(format!(
            "Endpoints {ns}/{} of PV {} not found: the volume's servers are unknown",
            source.endpoints,
            pv.name_any()
        ))
    })?;
    let servers: Vec<String> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    if servers.is_empty() {
        return Err(fail(format!(
            "Endpoints {ns}/{} list no address",
            source.endpoints
        )));
    }
    Ok(servers)
}

/// The running pods that mount `claim`.
async fn users(client: &Client, ns: &str, claim: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| {
            let done = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
            let mounts = p
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                });
            mounts && !done
        })
        .map(|p| format!("{ns}/{}", p.name_any()))
        .collect())
}

fn claim_of(pv: &PersistentVolume) -> Option<(String, String)> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((r.namespace.clone()?, r.name.clone()?))
}

fn record_of(claim: &PersistentVolumeClaim) -> Result<Option<Record>> {
    claim
        .annotations()
        .get(ANN_CONVERT)
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                fail(format!(
                    "annotation {ANN_CONVERT} of claim {}: {e}",
                    claim.name_any()
                ))
            })
        })
        .transpose()
}

async fn plan_pv(client: &Client, pv: &PersistentVolume, driver: &str) -> Result<Option<Plan>> {
    let Some(claim) = claim_of(pv) else {
        return Ok(None);
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.0);
    let record = match claims.get_opt(&claim.1).await? {
        Some(c) => record_of(&c)?,
        None => None,
    };
    let spec = pv.spec.as_ref();
    let (todo, detail) = match (record, spec.and_then(|s| s.glusterfs.as_ref())) {
        (Some(record), _) => (
            Todo::Resume(Box::new(record)),
            "resume an interrupted conversion".into(),
        ),
        (None, None) => return Ok(None),
        (None, Some(source)) => {
            let busy = users(client, &claim.0, &claim.1).await?;
            if !busy.is_empty() {
                let why = format!(
                    "refused: claim in use by running pod(s) {}",
                    busy.join(", ")
                );
                (Todo::Skip, why)
            } else {
                let servers = servers_of(client, pv, &claim.0).await?;
                let reclaim_policy = spec
                    .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                    .unwrap_or_else(|| "Delete".into());
                let record = Record {
                    pv: csi_pv(pv, driver, &servers)?,
                    reclaim_policy,
                };
                let detail = format!(
                    "convert volume {} (servers {})",
                    source.path,
                    servers.join(",")
                );
                (Todo::Convert(Box::new(record)), detail)
            }
        }
    };
    Ok(Some(Plan {
        pv: pv.name_any(),
        claim,
        detail,
        todo,
    }))
}

/// Interrupted between deleting the old PV and creating the new one: the claim's record is
/// all that is left.
async fn orphaned_records(client: &Client, selection: &Selection) -> Result<Vec<Plan>> {
    let claims: Api<PersistentVolumeClaim> = match selection {
        Selection::Namespace(ns) => Api::namespaced(client.clone(), ns),
        _ => Api::all(client.clone()),
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut out = Vec::new();
    for claim in claims.list(&ListParams::default()).await?.items {
        let Some(record) = record_of(&claim)? else {
            continue;
        };
        let name = record.pv.name_any();
        let chosen = match selection {
            Selection::Pvs(names) => names.contains(&name),
            _ => true,
        };
        if chosen && pvs.get_opt(&name).await?.is_none() {
            out.push(Plan {
                pv: name,
                claim: (claim.namespace().unwrap_or_default(), claim.name_any()),
                detail: "resume: create the CSI PV".into(),
                todo: Todo::Resume(Box::new(record)),
            });
        }
    }
    Ok(out)
}

pub async fn run(client: Client, selection: Selection, settings: &Settings) -> Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut plans = Vec::new();
    for pv in pvs.list(&ListParams::default()).await?.items {
        let chosen = match &selection {
            Selection::Pvs(names) => names.contains(&pv.name_any()),
            Selection::Namespace(ns) => claim_of(&pv).is_some_and(|c| &c.0 == ns),
            Selection::All => true,
        };
        if chosen && let Some(plan) = plan_pv(&client, &pv, &settings.driver).await? {
            plans.push(plan);
        }
    }
    plans.extend(orphaned_records(&client, &selection).await?);
    if let Selection::Pvs(names) = &selection {
        for name in names.iter().filter(|n| !plans.iter().any(|p| &p.pv == *n)) {
            println!("{name}: nothing to do (not found, not bound, or already a CSI PV)");
        }
    }
    let mut refused = 0;
    for plan in &plans {
        println!(
            "{} ({}/{}): {}",
            plan.pv, plan.claim.0, plan.claim.1, plan.detail
        );
        refused += usize::from(matches!(plan.todo, Todo::Skip));
    }
    if !settings.apply {
        println!("dry run: nothing changed; run again with --apply to convert");
        return ensure_none_refused(refused);
    }
    for plan in plans {
        let record = match plan.todo {
            Todo::Convert(r) | Todo::Resume(r) => r,
            Todo::Skip => continue,
        };
        convert(&client, &plan.claim, *record, settings.bind_timeout).await?;
        println!(
            "{}: converted, claim {}/{} Bound",
            plan.pv, plan.claim.0, plan.claim.1
        );
    }
    ensure_none_refused(refused)
}

fn ensure_none_refused(refused: usize) -> Result<()> {
    if refused > 0 {
        return Err(fail(format!(
            "{refused} PV(s) refused; stop the pods named above first"
        )));
    }
    Ok(())
}

async fn convert(
    client: &Client,
    claim: &(String, String),
    record: Record,
    timeout: Duration,
) -> Result<()> {
    let name = record.pv.name_any();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.0);
    let params = PatchParams::default();
    // 1. The record first: from here on a rerun knows what to make.
    let text = serde_json::to_string(&record).map_err(|e| fail(e.to_string()))?;
    claims
        .patch(
            &claim.1,
            &params,
            &Patch::Merge(json!({"metadata": {"annotations": {ANN_CONVERT: text}}})),
        )
        .await?;
    let old = pvs.get_opt(&name).await?;
    if old.is_some_and(|pv| pv.spec.is_some_and(|s| s.glusterfs.is_some())) {
        // 2. Nothing may delete the volume while its PV object is replaced.
        let retain = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
        pvs.patch(&name, &params, &Patch::Merge(retain)).await?;
        // 3. The old object goes. Finalizers (pv-protection, the provisioner's) would hold it
        // while the claim is bound; they are removed after the delete, when nobody can add
        // one back.
        ignore_not_found(pvs.delete(&name, &DeleteParams::default()).await.map(drop))?;
        let no_finalizers = json!({"metadata": {"finalizers": null}});
        let removed = pvs
            .patch(&name, &params, &Patch::Merge(no_finalizers))
            .await;
        ignore_not_found(removed.map(drop))?;
        let gone = || async { Ok(pvs.get_opt(&name).await?.is_none()) };
        wait(timeout, gone, &format!("PV {name} deleted")).await?;
        crate::failpoint::crash_point("convert-after-delete");
    }
    // 4. The CSI PV, unless a rerun finds it made.
    if pvs.get_opt(&name).await?.is_none() {
        match pvs.create(&PostParams::default(), &record.pv).await {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            other => drop(other?),
        }
    }
    // 5. The claim Bound to it again, then the policy back and the record gone.
    wait(
        timeout,
        || async {
            let c = claims.get(&claim.1).await?;
            let bound = c.status.and_then(|s| s.phase).as_deref() == Some("Bound");
            Ok(bound && c.spec.and_then(|s| s.volume_name).as_deref() == Some(name.as_str()))
        },
        &format!("claim {}/{} Bound to {name}", claim.0, claim.1),
    )
    .await?;
    let policy = json!({"spec": {"persistentVolumeReclaimPolicy": record.reclaim_policy}});
    pvs.patch(&name, &params, &Patch::Merge(policy)).await?;
    claims
        .patch(
            &claim.1,
            &params,
            &Patch::Merge(json!({"metadata": {"annotations": {ANN_CONVERT: null}}})),
        )
        .await?;
    Ok(())
}

async fn wait<F, Fut>(timeout: Duration, mut done: F, what: &str) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !done().await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(fail(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csi_pv_keeps_everything_but_the_source() {
        let old: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pvc-1", "resourceVersion": "7", "uid": "u",
                         "finalizers": ["kubernetes.io/pv-protection"],
                         "annotations": {"pv.beta.kubernetes.io/gid": "40001",
                                         "gluster.kubernetes.io/heketi-volume-id": "abc"}},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gluster",
                     "mountOptions": ["log-level=WARNING"],
                     "claimRef": {"namespace": "apps", "name": "data", "uid": "cu", "resourceVersion": "3"},
                     "glusterfs": {"endpoints": "glusterfs-dynamic-cu", "path": "vol_abc"}},
            "status": {"phase": "Bound"},
        }))
        .unwrap();
        let servers = ["10.0.0.1".to_string(), "10.0.0.2".to_string()];
        let pv =
            serde_json::to_value(csi_pv(&old, "glusterfs.gluster.org", &servers).unwrap()).unwrap();
        assert_eq!(
            pv["metadata"],
            json!({"name": "pvc-1", "annotations": {"pv.beta.kubernetes.io/gid": "40001",
                   "gluster.kubernetes.io/heketi-volume-id": "abc"}})
        );
        let spec = &pv["spec"];
        assert_eq!(spec["capacity"]["storage"], "2Gi");
        assert_eq!(spec["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(spec["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(spec["storageClassName"], "gluster");
        assert_eq!(spec["mountOptions"], json!(["log-level=WARNING"]));
        assert_eq!(
            spec["claimRef"],
            json!({"namespace": "apps", "name": "data", "uid": "cu"})
        );
        assert!(spec.get("glusterfs").is_none() && pv.get("status").is_none());
        assert_eq!(
            spec["csi"],
            json!({"driver": "glusterfs.gluster.org", "volumeHandle": "vol_abc",
                   "volumeAttributes": {"volume": "vol_abc", "servers": "10.0.0.1,10.0.0.2"}})
        );
    }
}
