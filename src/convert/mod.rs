//! `glusterfs-provisioner convert`: moves claims from `glusterfs` PVs (which no kubelet from
//! 1.26 on can mount) to CSI PVs of the same name, capacity, GID and claim, keeping the data.
//!
//! Only a Bound PV whose claim, by UID, is Bound to it is converted; the rest (Released PVs, a
//! claim name reused since) are reported and left alone. Per PV, in an order that can stop
//! anywhere and be run again:
//! 1. a record: the old PV's UID, the claim's UID, its reclaim policy and the CSI PV derived
//!    from the old one, in a ConfigMap of the provisioner's namespace (never on the claim,
//!    which namespace users may edit); the provisioner keeps the record's GID reserved;
//! 2. the PV's reclaim policy becomes Retain, so nothing deletes the gluster volume;
//! 3. the old PV object is deleted, then its finalizers removed (the claim stays);
//! 4. the CSI PV is created from the record, bound to the same claim;
//! 5. once the claim is Bound to it again, the reclaim policy is restored and the record goes.
//!
//! A run without `--apply` only prints the plan. A claim that a pod uses is refused, when
//! resuming too; a record that no longer matches its claim or PV is refused, never followed.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::config::csi::{ATTR_SERVERS, ATTR_VOLUME};
use crate::config::{Node, Topology};
use crate::k8s::api::ignore_not_found;
use crate::k8s::objects::{ANN_BRICKS, ANN_CLUSTER, ANN_ENDPOINTS, parse_brick_record};
use crate::{Error, Result};

mod record;
pub use record::{LABEL_RECORD, record_name, reserved_gid};
use record::{Record, records};

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
    /// The provisioner's namespace, where the records are kept.
    pub records_namespace: String,
    /// Where the CSI PVs' servers come from.
    pub topology: Topology,
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
    /// Interrupted: go on from the record.
    Resume(Box<Record>),
    /// Not converted, and the run fails: the reason is in the plan's detail.
    Refuse,
    /// Not a PV to convert (not Bound to its claim); reported, not a failure.
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
    // The Endpoints and Service go with the CSI PV: the provisioner deletes them with it.
    let mut annotations = old.metadata.annotations.clone().unwrap_or_default();
    annotations.insert(ANN_ENDPOINTS.into(), source.endpoints.clone());
    let mut pv = PersistentVolume {
        metadata: kube::api::ObjectMeta {
            name: old.metadata.name.clone(),
            labels: old.metadata.labels.clone(),
            annotations: Some(annotations),
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

/// The servers of a PV's volume, from the topology: the nodes of the bricks the PV records,
/// else every node of the cluster it records. Never from its Endpoints: the users of their
/// namespace may edit them, and the privileged node plugin fetches the volume from these.
fn servers_of(
    topology: &Topology,
    pv: &PersistentVolume,
) -> std::result::Result<Vec<String>, String> {
    let unknown = |why: String| format!("the volume's servers are not in the topology: {why}");
    let annotations = pv.annotations();
    let cluster = annotations
        .get(ANN_CLUSTER)
        .ok_or_else(|| unknown(format!("it records no {ANN_CLUSTER}")))?;
    let cluster = topology
        .cluster(Some(cluster))
        .ok_or_else(|| unknown(format!("no cluster {cluster:?} in the topology")))?;
    let record = annotations.get(ANN_BRICKS).map(String::as_str);
    let bricks = parse_brick_record(record.unwrap_or_default());
    let nodes: Vec<&Node> = if bricks.is_empty() {
        cluster.nodes.iter().collect()
    } else {
        bricks
            .iter()
            .map(|(name, _)| {
                let in_cluster = cluster.nodes.iter().find(|n| &n.name == name);
                in_cluster.ok_or_else(|| {
                    unknown(format!(
                        "brick node {name:?} not in cluster {:?}",
                        cluster.name
                    ))
                })
            })
            .collect::<std::result::Result<_, _>>()?
    };
    let mut servers: Vec<String> = Vec::new();
    for address in nodes.iter().map(|n| n.storage_address.to_string()) {
        if !servers.contains(&address) {
            servers.push(address);
        }
    }
    if servers.is_empty() {
        return Err(unknown(format!("cluster {:?} has no nodes", cluster.name)));
    }
    Ok(servers)
}

/// The pods that mount `claim` and have not finished.
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

/// `(namespace, name)` of the claim a PV is bound to.
fn claim_of(pv: &PersistentVolume) -> Option<(String, String)> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((r.namespace.clone()?, r.name.clone()?))
}

fn claim_uid_of(pv: &PersistentVolume) -> Option<&str> {
    pv.spec.as_ref()?.claim_ref.as_ref()?.uid.as_deref()
}

fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("without a phase")
}

impl Plan {
    fn new(pv: &str, claim: (String, String), todo: Todo, detail: impl Into<String>) -> Self {
        Plan {
            pv: pv.into(),
            claim,
            detail: detail.into(),
            todo,
        }
    }
}

/// The plan for a `glusterfs` PV without a record.
async fn plan_pv(
    client: &Client,
    pv: &PersistentVolume,
    settings: &Settings,
) -> Result<Option<Plan>> {
    let spec = pv.spec.as_ref();
    let (Some(source), Some(claim)) = (spec.and_then(|s| s.glusterfs.as_ref()), claim_of(pv))
    else {
        return Ok(None);
    };
    let name = pv.name_any();
    let skip = |why: String| Ok(Some(Plan::new(&name, claim.clone(), Todo::Skip, why)));
    if phase(pv) != "Bound" {
        return skip(format!("skipped: the PV is {}, not Bound", phase(pv)));
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.0);
    let found = claims.get_opt(&claim.1).await?;
    let bound_here = found.as_ref().is_some_and(|c| {
        c.uid().as_deref() == claim_uid_of(pv)
            && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name.as_str())
    });
    if !bound_here {
        return skip(format!(
            "skipped: claim {}/{} (UID {:?}) is not the claim bound to this PV (UID {:?})",
            claim.0,
            claim.1,
            found.and_then(|c| c.uid()),
            claim_uid_of(pv)
        ));
    }
    if let Some(refused) = in_use(client, &name, &claim).await? {
        return Ok(Some(refused));
    }
    let servers = match servers_of(&settings.topology, pv) {
        Ok(servers) => servers,
        Err(why) => {
            let why = format!("refused: {why}");
            return Ok(Some(Plan::new(&name, claim, Todo::Refuse, why)));
        }
    };
    let record = Record {
        old_uid: pv.uid().unwrap_or_default(),
        claim_uid: claim_uid_of(pv).unwrap_or_default().into(),
        reclaim_policy: spec
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| "Delete".into()),
        pv: csi_pv(pv, &settings.driver, &servers)?,
    };
    let detail = format!(
        "convert volume {} (servers {})",
        source.path,
        servers.join(",")
    );
    Ok(Some(Plan::new(
        &name,
        claim,
        Todo::Convert(Box::new(record)),
        detail,
    )))
}

/// A refusal when a pod that has not finished uses the claim.
async fn in_use(client: &Client, pv: &str, claim: &(String, String)) -> Result<Option<Plan>> {
    let busy = users(client, &claim.0, &claim.1).await?;
    Ok((!busy.is_empty()).then(|| {
        let why = format!("refused: claim in use by pod(s) {}", busy.join(", "));
        Plan::new(pv, claim.clone(), Todo::Refuse, why)
    }))
}

/// The plan for a PV with a record: resumed only while the claim is the one the record was
/// made for and the PV is either the old one or the one the record made.
async fn plan_resume(
    client: &Client,
    record: Record,
    now: Option<&PersistentVolume>,
) -> Result<Plan> {
    let name = record.pv.name_any();
    let claim = record.claim();
    let refuse = |why: String| {
        let why = format!(
            "refused: {why}; the record was not followed (ConfigMap {})",
            record_name(&name)
        );
        Ok(Plan::new(&name, claim.clone(), Todo::Refuse, why))
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.0);
    let found = claims.get_opt(&claim.1).await?.and_then(|c| c.uid());
    if found.as_deref() != Some(record.claim_uid.as_str()) {
        return refuse(format!(
            "claim {}/{} has UID {found:?}, the record was made for {:?}",
            claim.0, claim.1, record.claim_uid
        ));
    }
    if let Some(pv) = now {
        let spec = pv.spec.as_ref();
        let old =
            spec.is_some_and(|s| s.glusterfs.is_some()) && pv.uid() == Some(record.old_uid.clone());
        let made = spec.and_then(|s| s.csi.as_ref())
            == record.pv.spec.as_ref().and_then(|s| s.csi.as_ref())
            && claim_uid_of(pv) == Some(record.claim_uid.as_str());
        if !old && !made {
            return refuse(format!(
                "PV {name} is neither the one the record was made from nor the one it makes"
            ));
        }
    }
    if let Some(refused) = in_use(client, &name, &claim).await? {
        return Ok(refused);
    }
    Ok(Plan::new(
        &name,
        claim,
        Todo::Resume(Box::new(record)),
        "resume an interrupted conversion",
    ))
}

fn chosen(selection: &Selection, pv: &str, claim: Option<(String, String)>) -> bool {
    match selection {
        Selection::Pvs(names) => names.iter().any(|n| n == pv),
        Selection::Namespace(ns) => claim.is_some_and(|c| &c.0 == ns),
        Selection::All => true,
    }
}

pub async fn run(client: Client, selection: Selection, settings: &Settings) -> Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let kept: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.records_namespace);
    let mut records = records(&kept).await?;
    let mut plans = Vec::new();
    for pv in pvs.list(&ListParams::default()).await?.items {
        let name = pv.name_any();
        if !chosen(&selection, &name, claim_of(&pv)) {
            continue;
        }
        if let Some(record) = records.remove(&name) {
            plans.push(plan_resume(&client, record, Some(&pv)).await?);
        } else if let Some(plan) = plan_pv(&client, &pv, settings).await? {
            plans.push(plan);
        }
    }
    // Interrupted between deleting the old PV and creating the new one.
    for (name, record) in records {
        if chosen(&selection, &name, Some(record.claim())) {
            plans.push(plan_resume(&client, record, None).await?);
        }
    }
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
        refused += usize::from(matches!(plan.todo, Todo::Refuse));
    }
    if !settings.apply {
        println!("dry run: nothing changed; run again with --apply to convert");
        return ensure_none_refused(refused);
    }
    for plan in plans {
        let (record, fresh) = match plan.todo {
            Todo::Convert(r) => (r, true),
            Todo::Resume(r) => (r, false),
            Todo::Refuse | Todo::Skip => continue,
        };
        let converted = convert(&client, &kept, &plan.claim, *record, fresh, settings).await;
        match converted {
            Ok(()) => println!(
                "{}: converted, claim {}/{} Bound",
                plan.pv, plan.claim.0, plan.claim.1
            ),
            Err(e) => {
                println!("{}: failed: {e}", plan.pv);
                refused += 1;
            }
        }
    }
    ensure_none_refused(refused)
}

fn ensure_none_refused(refused: usize) -> Result<()> {
    if refused > 0 {
        return Err(fail(format!(
            "{refused} PV(s) not converted: see the reasons above"
        )));
    }
    Ok(())
}

async fn convert(
    client: &Client,
    kept: &Api<ConfigMap>,
    claim: &(String, String),
    record: Record,
    fresh: bool,
    settings: &Settings,
) -> Result<()> {
    let name = record.pv.name_any();
    let timeout = settings.bind_timeout;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.0);
    let params = PatchParams::default();
    // 1. The record first: from here on a rerun knows what to make.
    if fresh {
        kept.create(&PostParams::default(), &record.config_map()?)
            .await?;
        crate::failpoint::crash_point("convert-after-record");
    }
    let old = pvs.get_opt(&name).await?;
    if old.is_some_and(|pv| pv.spec.is_some_and(|s| s.glusterfs.is_some())) {
        // 2. Nothing may delete the volume while its PV object is replaced. The UID
        // precondition: only the PV the record was made from.
        let retain = json!({"metadata": {"uid": record.old_uid},
                            "spec": {"persistentVolumeReclaimPolicy": "Retain"}});
        pvs.patch(&name, &params, &Patch::Merge(retain)).await?;
        // 3. The old object goes. Finalizers (pv-protection, the provisioner's) would hold it
        // while the claim is bound; they are removed after the delete, when nobody can add
        // one back.
        let only_old = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(record.old_uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        ignore_not_found(pvs.delete(&name, &only_old).await.map(drop))?;
        let no_finalizers = json!({"metadata": {"uid": record.old_uid, "finalizers": null}});
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
    ignore_not_found(
        kept.delete(&record_name(&name), &DeleteParams::default())
            .await
            .map(drop),
    )?;
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
                   "gluster.kubernetes.io/heketi-volume-id": "abc",
                   "gluster.org/endpoints": "glusterfs-dynamic-cu"}})
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

    fn topology() -> Topology {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        let node = |name: &str, ip: &str| {
            json!({"name": name, "ssh_address": ip, "storage_address": ip,
                   "brick_roots": ["/srv/b"]})
        };
        let topology = json!({"ssh": {"private_key": "/k", "known_hosts": "/h"},
            "clusters": [{"name": "main", "nodes": [node("n1", "10.0.0.1"),
                                                    node("n2", "10.0.0.2"),
                                                    node("n3", "10.0.0.3")]}]});
        std::fs::write(&path, topology.to_string()).unwrap();
        Topology::load(&path).unwrap()
    }

    fn recording(annotations: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-1", "annotations": annotations},
            "spec": {"glusterfs": {"endpoints": "glusterfs-dynamic-cu", "path": "vol_abc"}},
        }))
        .unwrap()
    }

    #[test]
    fn servers_come_from_the_topology_only() {
        let topology = topology();
        let bricks = recording(json!({"gluster.org/cluster": "main",
            "gluster.org/bricks": "n3:/srv/b/vol_abc/brick,n1:/srv/b/vol_abc/brick"}));
        assert_eq!(
            servers_of(&topology, &bricks).unwrap(),
            ["10.0.0.3", "10.0.0.1"]
        );
        let cluster_only = recording(json!({"gluster.org/cluster": "main"}));
        assert_eq!(
            servers_of(&topology, &cluster_only).unwrap(),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        for (annotations, why) in [
            (json!({}), "records no gluster.org/cluster"),
            (
                json!({"gluster.org/cluster": "other"}),
                "no cluster \"other\"",
            ),
            (
                json!({"gluster.org/cluster": "main", "gluster.org/bricks": "evil:/x"}),
                "brick node \"evil\"",
            ),
        ] {
            let err = servers_of(&topology, &recording(annotations)).unwrap_err();
            assert!(
                err.contains("not in the topology") && err.contains(why),
                "{err}"
            );
        }
    }
}
