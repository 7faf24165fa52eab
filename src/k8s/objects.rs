//! Pure builders of the Kubernetes objects a provisioned volume is made of: the PV (a
//! `glusterfs` one with the Endpoints + Service that name the gluster servers for the kubelet's
//! mount, or a CSI one that names them itself).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, EndpointAddress, EndpointPort, EndpointSubset, Endpoints,
    GlusterfsPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::config::csi::{ATTR_SERVERS, ATTR_VOLUME};
use crate::gluster::Brick;
use crate::gluster::place::Promise;
use crate::{Error, Result};

pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Set by the scheduler on a claim of a `WaitForFirstConsumer` class once its pod has a node.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_GID: &str = "pv.beta.kubernetes.io/gid";
pub const ANN_TYPE: &str = "gluster.org/type";
pub const ANN_CREATED_BY: &str = "kubernetes.io/createdby";
pub const ANN_DESCRIPTION: &str = "Description";
/// Ours: where the volume lives, so deletion needs neither the StorageClass nor a guess.
pub const ANN_CLUSTER: &str = "gluster.org/cluster";
pub const ANN_BRICKS: &str = "gluster.org/bricks";
/// On an arbiter volume's PV: the average file size (KiB) its arbiter brick, the last one
/// recorded, is sized for; what placement counts that brick at.
pub const ANN_ARBITER: &str = "gluster.org/arbiter";
/// On a CSI PV converted from a `glusterfs` one: the Endpoints and Service (in the claim's
/// namespace) it still has, deleted with it.
pub const ANN_ENDPOINTS: &str = "gluster.org/endpoints";
/// On every PV this provisioner makes: the object outlives its volume, whoever deletes it.
pub const FINALIZER: &str = "gluster.org/volume-protection";
/// On a claim from before its volume is made until its PV exists: a claim deleted meanwhile
/// waits until what was made for it is removed.
pub const CLAIM_FINALIZER: &str = "gluster.org/provisioning";
pub const LABEL_PROVISIONED_FOR: &str = "gluster.kubernetes.io/provisioned-for-pvc";
/// Ours, on Endpoints and Services: the PV they serve, so their events map back to it.
pub const LABEL_PV: &str = "gluster.org/pv";

const ALL_ACCESS_MODES: [&str; 3] = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"];

pub fn pv_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

pub fn endpoints_name(prefix: &str, claim_uid: &str) -> String {
    format!("{prefix}-{claim_uid}")
}

/// The claim's storage request rounded up to whole GiB.
pub fn requested_gib(claim: &PersistentVolumeClaim) -> Result<u64> {
    let request = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    storage_gib(request)
}

/// A storage quantity rounded up to whole GiB, as volumes are sized.
pub fn storage_gib(quantity: Option<&Quantity>) -> Result<u64> {
    let request = quantity.ok_or_else(|| Error::InvalidClaim("no storage request".into()))?;
    let bytes = quantity_bytes(&request.0).ok_or_else(|| {
        Error::InvalidClaim(format!("storage request {:?} is not a size", request.0))
    })?;
    Ok(bytes.div_ceil(1 << 30).max(1))
}

fn quantity_bytes(q: &str) -> Option<u64> {
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = (number * multiplier).ceil();
    (bytes.is_finite() && bytes > 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Refuses what a GlusterFS file volume cannot honour, before anything is made.
pub fn check_claim(claim: &PersistentVolumeClaim) -> Result<()> {
    let spec = claim
        .spec
        .as_ref()
        .ok_or_else(|| Error::InvalidClaim("no spec".into()))?;
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err(Error::InvalidClaim(
            "volumeMode Block is not supported: GlusterFS volumes are file systems".into(),
        ));
    }
    if spec.selector.is_some() {
        return Err(Error::InvalidClaim(
            "claims with a selector are not supported by dynamic provisioning".into(),
        ));
    }
    if let Some(mode) = spec
        .access_modes
        .iter()
        .flatten()
        .find(|m| !ALL_ACCESS_MODES.contains(&m.as_str()))
    {
        return Err(Error::InvalidClaim(format!(
            "access mode {mode} is not supported"
        )));
    }
    requested_gib(claim).map(drop)
}

/// The label value naming the claim: its name, or its UID when the name is too long for a label.
fn provisioned_for(claim_name: &str, claim_uid: &str) -> String {
    if claim_name.len() >= 63 {
        claim_uid
    } else {
        claim_name
    }
    .to_string()
}

fn endpoint_meta(name: &str, namespace: &str, claim_name: &str, claim_uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([
            (
                LABEL_PROVISIONED_FOR.into(),
                provisioned_for(claim_name, claim_uid),
            ),
            (LABEL_PV.into(), pv_name(claim_uid)),
        ])),
        ..Default::default()
    }
}

/// Whose Endpoints and Service an object must be before anything touches it: a PV's fields are
/// editable, and must never steer a delete or an overwrite to objects of others.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub pv: &'a str,
    pub claim_namespace: &'a str,
    pub claim_name: &'a str,
    pub claim_uid: &'a str,
}

impl Owner<'_> {
    /// Whether `meta` is one this provisioner (or the in-tree one, which set only the claim
    /// label) made for this PV's claim.
    pub fn owns(&self, meta: &ObjectMeta) -> bool {
        let Some(labels) = meta.labels.as_ref() else {
            return false;
        };
        meta.namespace.as_deref() == Some(self.claim_namespace)
            && labels
                .get(LABEL_PROVISIONED_FOR)
                .is_some_and(|c| *c == provisioned_for(self.claim_name, self.claim_uid))
            && labels.get(LABEL_PV).is_none_or(|pv| pv == self.pv)
    }
}

/// A Service without selector, so the endpoints controller leaves our Endpoints alone.
pub fn service(name: &str, namespace: &str, claim_name: &str, claim_uid: &str) -> Service {
    Service {
        metadata: endpoint_meta(name, namespace, claim_name, claim_uid),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 1,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn endpoints(
    name: &str,
    namespace: &str,
    claim_name: &str,
    claim_uid: &str,
    addresses: &[IpAddr],
) -> Endpoints {
    Endpoints {
        metadata: endpoint_meta(name, namespace, claim_name, claim_uid),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                addresses
                    .iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                port: 1,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    }
}

/// What goes into a PV besides the claim and its class.
pub struct VolumeFacts<'a> {
    pub provisioner: &'a str,
    pub volume: &'a str,
    /// What the backend needs to find the volume again.
    pub annotations: &'a BTreeMap<String, String>,
    pub mounter: Mounter<'a>,
    pub gid: u32,
    pub size_gib: u64,
}

/// What mounts the volume for pods.
pub enum Mounter<'a> {
    /// The kubelet's `glusterfs` plugin, through these Endpoints (in the claim's namespace).
    Glusterfs { endpoints: &'a str },
    /// The CSI `driver`, from these servers. The volume handle is the volume's name: it
    /// identifies the volume for its whole life, as the `glusterfs` PV's path does.
    Csi {
        driver: &'a str,
        servers: &'a [IpAddr],
    },
}

impl Mounter<'_> {
    fn source(&self, volume: &str, namespace: &str) -> PersistentVolumeSpec {
        match self {
            Mounter::Glusterfs { endpoints } => PersistentVolumeSpec {
                glusterfs: Some(GlusterfsPersistentVolumeSource {
                    endpoints: (*endpoints).into(),
                    endpoints_namespace: Some(namespace.into()),
                    path: volume.into(),
                    read_only: None,
                }),
                ..Default::default()
            },
            Mounter::Csi { driver, servers } => {
                let servers: Vec<String> = servers.iter().map(IpAddr::to_string).collect();
                PersistentVolumeSpec {
                    csi: Some(CSIPersistentVolumeSource {
                        driver: (*driver).into(),
                        volume_handle: volume.into(),
                        volume_attributes: Some(BTreeMap::from([
                            (ATTR_VOLUME.into(), volume.into()),
                            (ATTR_SERVERS.into(), servers.join(",")),
                        ])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }
        }
    }
}

/// What a PV's volume holds on its brick roots: `gib` on each brick it records, an arbiter
/// volume's last brick (`average_file_kib` recorded) by the arbiter's rule.
pub fn promise(volume: &str, bricks: &str, gib: u64, average_file_kib: Option<&str>) -> Promise {
    let average_file_kib = average_file_kib.and_then(|kib| kib.parse().ok());
    Promise {
        volume: volume.to_string(),
        bricks: parse_brick_record(bricks),
        bytes: gib << 30,
        arbiter_bytes: average_file_kib
            .map(|kib| crate::gluster::place::arbiter_bytes(gib << 30, kib)),
    }
}

/// Bricks as recorded on the PV: `node:/path,...`.
pub fn brick_record(bricks: &[Brick]) -> String {
    bricks
        .iter()
        .map(|b| format!("{}:{}", b.node, b.path.display()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The volume a PV mounts: the volume of a `glusterfs` path (`vol`, `/vol`, `vol/sub`), or a
/// CSI PV's `volume` attribute, else its handle (of any driver: audit counts every PV).
pub fn volume_of(pv: &PersistentVolume) -> Option<&str> {
    let spec = pv.spec.as_ref()?;
    match (&spec.glusterfs, &spec.csi) {
        (Some(g), _) => Some(crate::gluster::naming::volume_in_path(&g.path)),
        (None, Some(c)) => {
            let attributes = c.volume_attributes.as_ref();
            let attribute = attributes.and_then(|a| a.get(crate::config::csi::ATTR_VOLUME));
            Some(attribute.unwrap_or(&c.volume_handle))
        }
        _ => None,
    }
}

/// Bricks as a PV records them, as `(node, path)`.
pub fn parse_brick_record(record: &str) -> Vec<(String, std::path::PathBuf)> {
    record
        .split(',')
        .filter_map(|r| r.split_once(':'))
        .map(|(node, path)| (node.to_string(), path.into()))
        .collect()
}

pub fn persistent_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    facts: &VolumeFacts<'_>,
) -> PersistentVolume {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let access_modes = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| ALL_ACCESS_MODES.iter().map(|m| m.to_string()).collect());
    let mut annotations = BTreeMap::from([
        (ANN_PROVISIONED_BY.into(), facts.provisioner.into()),
        (ANN_GID.into(), facts.gid.to_string()),
        (ANN_TYPE.into(), "file".into()),
        (ANN_CREATED_BY.into(), "glusterfs-provisioner".into()),
        (
            ANN_DESCRIPTION.into(),
            "Gluster-Internal: Dynamically provisioned PV".into(),
        ),
    ]);
    annotations.extend(facts.annotations.clone());
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name(&uid)),
            annotations: Some(annotations),
            finalizers: Some(vec![FINALIZER.into()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".into(),
                Quantity(format!("{}Gi", facts.size_gib)),
            )])),
            access_modes: Some(access_modes),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            mount_options: class.mount_options.clone(),
            volume_mode: Some("Filesystem".into()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace.clone()),
                name: claim.metadata.name.clone(),
                uid: Some(uid),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            }),
            ..facts.mounter.source(facts.volume, &namespace)
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "0f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f";

    fn claim(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data-web-0", "namespace": "apps", "uid": UID, "resourceVersion": "7"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn sized(storage: &str) -> PersistentVolumeClaim {
        claim(json!({"resources": {"requests": {"storage": storage}}}))
    }

    #[test]
    fn sizes_round_up_to_whole_gib() {
        for (q, want) in [
            ("1Gi", 1),
            ("1", 1),
            ("500Mi", 1),
            ("1025Mi", 2),
            ("1.5Gi", 2),
            ("2G", 2),
            ("10Gi", 10),
            ("1Ti", 1024),
        ] {
            assert_eq!(requested_gib(&sized(q)).unwrap(), want, "{q}");
        }
        for bad in ["", "abc", "1Xi", "-1Gi"] {
            assert!(requested_gib(&sized(bad)).is_err(), "{bad:?}");
        }
        assert!(
            requested_gib(&claim(json!({})))
                .unwrap_err()
                .to_string()
                .contains("no storage request")
        );
    }

    #[test]
    fn unsupported_claims_are_refused() {
        let base = json!({"resources": {"requests": {"storage": "1Gi"}}});
        assert!(check_claim(&claim(base.clone())).is_ok());
        for (extra, want) in [
            (json!({"volumeMode": "Block"}), "volumeMode Block"),
            (json!({"selector": {"matchLabels": {"a": "b"}}}), "selector"),
            (
                json!({"accessModes": ["ReadWriteOncePod"]}),
                "access mode ReadWriteOncePod",
            ),
        ] {
            let mut spec = base.clone();
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let err = check_claim(&claim(spec)).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn endpoints_and_service() {
        let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let name = endpoints_name("glusterfs-dynamic", UID);
        assert_eq!(name, format!("glusterfs-dynamic-{UID}"));
        let ep = endpoints(&name, "apps", "data-web-0", UID, &ips);
        let v = serde_json::to_value(&ep).unwrap();
        assert_eq!(
            v["subsets"][0]["addresses"],
            json!([{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}])
        );
        assert_eq!(
            v["subsets"][0]["ports"],
            json!([{"port": 1, "protocol": "TCP"}])
        );
        assert_eq!(v["metadata"]["labels"][LABEL_PROVISIONED_FOR], "data-web-0");
        assert_eq!(v["metadata"]["labels"][LABEL_PV], format!("pvc-{UID}"));
        let long = "x".repeat(63);
        let svc = serde_json::to_value(service(&name, "apps", &long, UID)).unwrap();
        assert_eq!(svc["metadata"]["labels"][LABEL_PROVISIONED_FOR], UID);
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"port": 1, "protocol": "TCP"}])
        );
        assert!(svc["spec"].get("selector").is_none());
    }

    #[test]
    fn pv_shape() {
        let c = claim(
            json!({"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "2Gi"}}}),
        );
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "gluster"}, "provisioner": "gluster.org/glusterfs",
            "reclaimPolicy": "Retain", "mountOptions": ["log-level=WARNING"],
        }))
        .unwrap();
        let node = crate::config::Node {
            name: "n1".into(),
            ssh_address: "n1".into(),
            storage_address: "10.0.0.1".parse().unwrap(),
            zone: "a".into(),
            brick_roots: vec!["/b1".into()],
            state: Default::default(),
        };
        let bricks = [Brick::new(&node, &node.brick_roots[0], "vol_x")];
        let recorded = BTreeMap::from([
            (ANN_CLUSTER.to_string(), "main".to_string()),
            (ANN_BRICKS.to_string(), brick_record(&bricks)),
        ]);
        let mut facts = VolumeFacts {
            provisioner: "gluster.org/glusterfs",
            volume: "vol_x",
            annotations: &recorded,
            mounter: Mounter::Glusterfs {
                endpoints: "glusterfs-dynamic-x",
            },
            gid: 2001,
            size_gib: 2,
        };
        let pv = serde_json::to_value(persistent_volume(&c, &class, &facts)).unwrap();
        assert_eq!(pv["metadata"]["name"], format!("pvc-{UID}"));
        assert_eq!(pv["metadata"]["finalizers"], json!([FINALIZER]));
        let ann = &pv["metadata"]["annotations"];
        assert_eq!(ann[ANN_PROVISIONED_BY], "gluster.org/glusterfs");
        assert_eq!(ann[ANN_GID], "2001");
        assert_eq!(ann[ANN_TYPE], "file");
        assert_eq!(ann[ANN_BRICKS], "n1:/b1/vol_x/brick");
        assert_eq!(ann[ANN_CLUSTER], "main");
        let spec = &pv["spec"];
        assert_eq!(spec["capacity"]["storage"], "2Gi");
        assert_eq!(spec["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(spec["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(spec["mountOptions"], json!(["log-level=WARNING"]));
        assert_eq!(spec["storageClassName"], "gluster");
        assert_eq!(spec["claimRef"]["uid"], UID);
        assert_eq!(spec["claimRef"]["namespace"], "apps");
        assert_eq!(
            spec["glusterfs"],
            json!({"endpoints": "glusterfs-dynamic-x", "endpointsNamespace": "apps", "path": "vol_x"})
        );
        assert!(spec.get("csi").is_none());
        // No access modes on the claim: all three, as the in-tree provisioner did.
        let pv = persistent_volume(&sized("1Gi"), &class, &facts);
        assert_eq!(pv.spec.unwrap().access_modes.unwrap().len(), 3);

        // The CSI kind: the same PV, mounted by the driver from the servers it names.
        let servers = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        facts.mounter = Mounter::Csi {
            driver: "glusterfs.gluster.org",
            servers: &servers,
        };
        let pv = serde_json::to_value(persistent_volume(&c, &class, &facts)).unwrap();
        assert_eq!(pv["metadata"]["annotations"][ANN_GID], "2001");
        assert_eq!(pv["spec"]["claimRef"]["uid"], UID);
        assert!(pv["spec"].get("glusterfs").is_none());
        assert_eq!(
            pv["spec"]["csi"],
            json!({"driver": "glusterfs.gluster.org", "volumeHandle": "vol_x",
                   "volumeAttributes": {"volume": "vol_x", "servers": "10.0.0.1,10.0.0.2"}})
        );
    }
}
