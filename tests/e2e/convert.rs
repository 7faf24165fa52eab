//! `glusterfs-provisioner convert` against the deployed provisioner: a `glusterfs` PV becomes
//! a CSI PV keeping its data, through crashes at every step; and nothing a namespace user
//! writes, nor a stale PV, steers it to objects that are not the claim's own.

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, PersistentVolume, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::pods::{self, DEPLOYED_NS, POD_WAIT};
use crate::scenario::{Space, annotations, from_json, glusterfs_path, node_by_name, pv_bricks};
use crate::support::{env, eventually};

/// `glusterfs-provisioner convert ARGS` as the cluster admin: (success, output).
async fn convert(args: &[&str], crash_at: Option<&str>) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"));
    cmd.arg("convert")
        .arg("--kubeconfig")
        .arg(env().state_dir.join("admin.kubeconfig"))
        .arg("--topology")
        .arg(env().state_dir.join("topology.json"))
        .args(args)
        .env_remove(glusterfs_provisioner::failpoint::ENV);
    if let Some(point) = crash_at {
        cmd.env(glusterfs_provisioner::failpoint::ENV, point);
    }
    let out = cmd.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn records(space: &Space) -> Api<ConfigMap> {
    Api::namespaced(space.client.clone(), DEPLOYED_NS)
}

async fn is_glusterfs(space: &Space, pv: &str) -> bool {
    let pv = space.pvs.get(pv).await.unwrap();
    pv.spec.unwrap().glusterfs.is_some()
}

#[tokio::test]
async fn convert_moves_a_glusterfs_pv_to_csi_keeping_the_data() {
    let _stable = crate::csi::PLUGIN.read().await;
    let space = Space::deployed("convert").await;
    let class = pods::example_class().await;
    let claim = space.claim("data", &class, "1Gi", "ReadWriteOnce").await;
    let old = space.bound_pv("data").await;
    let name = old.name_any();
    assert!(old.spec.as_ref().unwrap().glusterfs.is_some());
    let gid = old.annotations()["pv.beta.kubernetes.io/gid"].clone();
    let record = format!("convert-{name}");
    // Written through the 1.20 kubelet's own glusterfs plugin.
    space.pod("before", "data", json!({})).await;
    space.running("before", None).await;
    space
        .exec_ok("before", "echo from-the-glusterfs-pv >/data/file")
        .await;

    // In use: refused, naming the pod; nothing changes.
    let (ok, out) = convert(&["--pv", &name, "--apply"], None).await;
    assert!(
        !ok && out.contains(&format!("{}/before", space.ns)),
        "{out}"
    );
    assert!(is_glusterfs(&space, &name).await);
    space.delete_pod("before").await;

    // The dry run (the default) prints the plan and changes nothing.
    let (ok, out) = convert(&["--namespace", &space.ns], None).await;
    assert!(
        ok && out.contains(&name) && out.contains("dry run"),
        "{out}"
    );
    assert!(is_glusterfs(&space, &name).await);

    // Killed once the record is kept; a pod starts meanwhile: resuming is refused as well.
    let (ok, out) = convert(&["--pv", &name, "--apply"], Some("convert-after-record")).await;
    assert!(!ok, "the crash point must stop it: {out}");
    assert!(records(&space).get_opt(&record).await.unwrap().is_some());
    space.pod("meanwhile", "data", json!({})).await;
    space.running("meanwhile", None).await;
    let (ok, out) = convert(&["--pv", &name, "--apply"], None).await;
    assert!(
        !ok && out.contains(&format!("{}/meanwhile", space.ns)),
        "{out}"
    );
    assert!(is_glusterfs(&space, &name).await);
    space.delete_pod("meanwhile").await;

    // Killed right after the old PV went: its GID is still taken. A class whose range holds
    // only that GID has none to give.
    let (ok, out) = convert(&["--pv", &name, "--apply"], Some("convert-after-delete")).await;
    assert!(!ok, "the crash point must stop it: {out}");
    assert!(space.pvs.get_opt(&name).await.unwrap().is_none());
    let narrow = space
        .class_with(
            json!({"volumetype": "none", "gidMin": gid, "gidMax": gid}),
            "Delete",
            json!({}),
        )
        .await;
    let late = space.claim("late", &narrow, "1Gi", "ReadWriteOnce").await;
    let note = space.event(&late, "ProvisioningFailed").await;
    assert!(note.contains("is full"), "{note:?}");

    // Run again: it finishes from the record.
    let (ok, out) = convert(&["--pv", &name, "--apply"], None).await;
    assert!(ok, "{out}");
    let new = space.pvs.get(&name).await.unwrap();
    let spec = new.spec.clone().unwrap();
    assert!(spec.glusterfs.is_none());
    assert_eq!(
        spec.csi.as_ref().unwrap().volume_handle,
        glusterfs_path(&old)
    );
    assert_eq!(
        spec.claim_ref.as_ref().unwrap().uid,
        old.spec.as_ref().unwrap().claim_ref.as_ref().unwrap().uid
    );
    assert_eq!(spec.capacity, old.spec.as_ref().unwrap().capacity);
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(new.annotations()["pv.beta.kubernetes.io/gid"], gid);
    assert!(records(&space).get_opt(&record).await.unwrap().is_none());
    let bound = space.claims.get("data").await.unwrap();
    assert_eq!(bound.status.unwrap().phase.as_deref(), Some("Bound"));

    // A new pod reads the data through the CSI node plugin.
    space.pod("after", "data", json!({})).await;
    space.running("after", None).await;
    let out = space
        .exec_ok("after", "cat /data/file && grep ' /data ' /proc/mounts")
        .await;
    assert!(
        out.starts_with("from-the-glusterfs-pv\n") && out.contains("fuse.glusterfs"),
        "{out}"
    );
    let (ok, out) = convert(&["--pv", &name], None).await;
    assert!(
        ok && out.contains("nothing to do"),
        "a second run finds nothing: {out}"
    );

    // Deleted, the CSI PV takes the Endpoints and Service the glusterfs PV had.
    let service = format!("glusterfs-dynamic-{}", claim.uid().unwrap());
    let services: Api<Service> = Api::namespaced(space.client.clone(), &space.ns);
    assert!(services.get_opt(&service).await.unwrap().is_some());
    space.delete_pod("after").await;
    space.delete_claim("data").await;
    space.wait_pv_gone(&name).await;
    assert!(services.get_opt(&service).await.unwrap().is_none());
    assert!(space.endpoints(&service).await.is_none());
    space.delete_claim("late").await;
    space.delete_all(&[name]).await;
}

/// What a namespace user may write on their claims is never followed: an annotation in the
/// form older versions kept their record in, naming a hostPath PV of the tenant's making or
/// another claim's PV.
#[tokio::test]
async fn a_record_written_on_a_claim_is_not_followed() {
    let victim = Space::deployed("convert-victim").await;
    let tenant = Space::deployed("convert-tenant").await;
    let class = pods::example_class().await;
    victim.claim("data", &class, "1Gi", "ReadWriteOnce").await;
    let victim_pv = victim.bound_pv("data").await;
    let victim_uid = victim_pv.uid();
    tenant.claim("mine", &class, "1Gi", "ReadWriteOnce").await;
    let own_pv = tenant.bound_pv("mine").await;
    let tenant_claim = tenant.claims.get("mine").await.unwrap();

    let hostpath = format!("{}-root", tenant.ns);
    let claim_ref = json!({"kind": "PersistentVolumeClaim", "namespace": tenant.ns,
                           "name": "mine", "uid": tenant_claim.uid()});
    let forged = |pv: &str, source: serde_json::Value| {
        let mut spec = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                              "claimRef": claim_ref, "storageClassName": class,
                              "persistentVolumeReclaimPolicy": "Delete"});
        let fields = source.as_object().unwrap().clone();
        spec.as_object_mut().unwrap().extend(fields);
        json!({"pv": {"metadata": {"name": pv}, "spec": spec}, "reclaim_policy": "Delete"})
            .to_string()
    };
    for record in [
        forged(&hostpath, json!({"hostPath": {"path": "/"}})),
        forged(
            &victim_pv.name_any(),
            json!({"csi": {"driver": "glusterfs.gluster.org",
                           "volumeHandle": glusterfs_path(&victim_pv)}}),
        ),
    ] {
        let annotate = json!({"metadata": {"annotations": {"gluster.org/convert-to-csi": record}}});
        tenant
            .claims
            .patch("mine", &PatchParams::default(), &Patch::Merge(annotate))
            .await
            .unwrap();
        let (ok, out) = convert(&["--namespace", &tenant.ns, "--apply"], None).await;
        assert!(ok, "{out}");
        assert!(
            tenant.pvs.get_opt(&hostpath).await.unwrap().is_none(),
            "no hostPath PV: {out}"
        );
        let still = tenant.pvs.get(&victim_pv.name_any()).await.unwrap();
        assert_eq!(still.uid(), victim_uid, "the victim's PV untouched: {out}");
        assert!(still.spec.unwrap().glusterfs.is_some());
    }
    // The tenant's own PV was converted as any other, to what convert itself derived.
    let own = tenant.pvs.get(&own_pv.name_any()).await.unwrap();
    let csi = own.spec.unwrap().csi.unwrap();
    assert_eq!(csi.volume_handle, glusterfs_path(&own_pv));
    tenant.delete_all(&[own_pv.name_any()]).await;
    victim.delete_all(&[victim_pv.name_any()]).await;
}

/// A PV no longer Bound to the claim its claimRef names (Released, the claim gone, or its name
/// reused by a new claim, as a StatefulSet does) is reported and left as it is; the others of
/// the run are converted.
#[tokio::test]
async fn a_pv_not_bound_to_its_claim_is_left_alone() {
    let space = Space::deployed("convert-stale").await;
    let class = pods::example_class().await;
    space
        .claim("data-web-0", &class, "1Gi", "ReadWriteOnce")
        .await;
    let current = space.bound_pv("data-web-0").await;
    // A PV an earlier claim of the same name left, as the in-tree provisioner made them.
    let stale_name = format!("{}-stale", space.ns);
    let stale: PersistentVolume = from_json(json!({
        "metadata": {"name": stale_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": space.ns,
                              "name": "data-web-0", "uid": uuid::Uuid::new_v4().to_string()},
                 "glusterfs": {"endpoints": "gone", "endpointsNamespace": space.ns,
                               "path": "vol_stale"}},
    }));
    let stale_uid = space
        .pvs
        .create(&PostParams::default(), &stale)
        .await
        .unwrap()
        .uid();
    eventually(POD_WAIT, "the stale PV Released", || async {
        let pv = space.pvs.get(&stale_name).await.unwrap();
        (pv.status?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await;

    let (ok, out) = convert(&["--namespace", &space.ns, "--apply"], None).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&stale_name) && out.contains("skipped"),
        "{out}"
    );
    let kept = space.pvs.get(&stale_name).await.unwrap();
    assert_eq!(kept.uid(), stale_uid);
    assert!(kept.spec.as_ref().unwrap().glusterfs.is_some());
    assert_eq!(
        kept.spec
            .unwrap()
            .persistent_volume_reclaim_policy
            .as_deref(),
        Some("Retain")
    );
    assert!(!is_glusterfs(&space, &current.name_any()).await, "{out}");
    // While its PV is replaced the binder may mark the claim Lost; it binds again to the new one.
    eventually(POD_WAIT, "data-web-0 Bound", || async {
        let claim = space.claims.get("data-web-0").await.unwrap();
        (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;

    space
        .pvs
        .delete(&stale_name, &DeleteParams::default())
        .await
        .unwrap();
    space.delete_all(&[current.name_any()]).await;
}

/// The CSI PV's servers are the topology's nodes of the volume: the Endpoints a `glusterfs` PV
/// names are in the claim's namespace, whose users may edit them, and the privileged node
/// plugin fetches the volume's configuration from these servers. A PV whose servers the
/// topology does not know is refused.
#[tokio::test]
async fn servers_come_from_the_topology_not_the_tenants_endpoints() {
    let space = Space::deployed("convert-servers").await;
    let class = pods::example_class().await;
    space.claim("data", &class, "1Gi", "ReadWriteOnce").await;
    let old = space.bound_pv("data").await;
    let name = old.name_any();
    let source = old.spec.clone().unwrap().glusterfs.unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(space.client.clone(), &space.ns);
    // 192.0.2.0/24 is for documentation: an address of the tenant's choosing.
    let tenants = json!({"subsets": [{"addresses": [{"ip": "192.0.2.7"}],
                                      "ports": [{"port": 24007}]}]});
    endpoints
        .patch(
            &source.endpoints,
            &PatchParams::default(),
            &Patch::Merge(tenants),
        )
        .await
        .unwrap();

    let (ok, out) = convert(&["--pv", &name, "--apply"], None).await;
    assert!(ok, "{out}");
    let mut topology: Vec<String> = Vec::new();
    for (node, _) in pv_bricks(&old) {
        let address = node_by_name(&node).storage_address.to_string();
        if !topology.contains(&address) {
            topology.push(address);
        }
    }
    let new = space.pvs.get(&name).await.unwrap();
    let attributes = new.spec.unwrap().csi.unwrap().volume_attributes.unwrap();
    assert_eq!(attributes["servers"], topology.join(","), "{out}");

    // A PV that records no cluster of the topology: refused, left as it was.
    space.claim("unknown", &class, "1Gi", "ReadWriteOnce").await;
    let unknown = space.bound_pv("unknown").await;
    let cluster = annotations(&unknown)["gluster.org/cluster"].clone();
    let set_cluster = |value: serde_json::Value| json!({"metadata": {"annotations": {"gluster.org/cluster": value}}});
    let params = PatchParams::default();
    let forget = Patch::Merge(set_cluster(serde_json::Value::Null));
    space
        .pvs
        .patch(&unknown.name_any(), &params, &forget)
        .await
        .unwrap();
    let (ok, out) = convert(&["--pv", &unknown.name_any(), "--apply"], None).await;
    assert!(
        !ok && out.contains("not in the topology") && out.contains("gluster.org/cluster"),
        "{out}"
    );
    assert!(is_glusterfs(&space, &unknown.name_any()).await);
    let restore = Patch::Merge(set_cluster(cluster.into()));
    space
        .pvs
        .patch(&unknown.name_any(), &params, &restore)
        .await
        .unwrap();
    space.delete_all(&[name, unknown.name_any()]).await;
}
