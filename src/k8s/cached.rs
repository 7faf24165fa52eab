//! PersistentVolumes and claims as the provisioner caches them: only the fields it reads.
//! k8s-openapi's types hold every optional field inline (a PV is 3.4 KB, a claim 1 KB, before
//! any data), which a cache of thousands of them would pay for each one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{GlusterfsPersistentVolumeSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::gluster::naming::volume_in_path;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPv {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CachedPvSpec,
    #[serde(default)]
    pub status: CachedPvStatus,
    /// The annotations the cache keeps, moved out of `metadata` (see [`Kept`]).
    #[serde(skip)]
    pub kept: Kept,
}

impl CachedPv {
    /// A kept annotation (`metadata.annotations` of a cached PV is empty).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.kept.get(key)
    }
}

/// Annotations of known keys, compactly: a map holds a 544-byte node and a copy of each key,
/// which for a few short values is most of a cached PV.
#[derive(Clone, Debug, Default)]
pub struct Kept(Box<[(&'static str, Box<str>)]>);

impl Kept {
    /// The entries of `keys` that `annotations` has.
    pub fn of(annotations: Option<&BTreeMap<String, String>>, keys: &[&'static str]) -> Self {
        let Some(annotations) = annotations else {
            return Self::default();
        };
        let kept = keys
            .iter()
            .filter_map(|&k| Some((k, annotations.get(k)?.as_str().into())));
        Kept(kept.collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| &**v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a map, for code that reads annotations of any PV (deletion, expansion: rare).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPvSpec {
    #[serde(default)]
    pub capacity: Storage,
    pub glusterfs: Option<GlusterfsPersistentVolumeSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csi: Option<CachedCsiSource>,
    pub claim_ref: Option<ObjectReference>,
    pub persistent_volume_reclaim_policy: Option<String>,
    pub storage_class_name: Option<String>,
}

/// A CSI PV's source: which driver, its handle (for ours, the gluster volume's name) and the
/// volume attribute the node plugin mounts instead of the handle when it is there.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedCsiSource {
    pub driver: String,
    pub volume_handle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_attributes: Option<CsiVolumeAttribute>,
}

/// Of a CSI PV's attributes, the one that names the volume and the servers it is mounted from
/// (the health sweep tells the node plugin when the volume's bricks moved off them).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CsiVolumeAttribute {
    pub volume: Option<String>,
    pub servers: Option<String>,
}

impl CachedPvSpec {
    /// The gluster volume a PV mounts: the volume of a `glusterfs` PV's path (`vol`, `/vol`,
    /// `vol/sub`), or for a CSI PV of `driver` its `volume` attribute, else its handle.
    pub fn gluster_volume(&self, driver: &str) -> Option<&str> {
        match (&self.glusterfs, &self.csi) {
            (Some(g), _) => Some(volume_in_path(&g.path)),
            (None, Some(c)) if c.driver == driver => {
                let attribute = c
                    .volume_attributes
                    .as_ref()
                    .and_then(|a| a.volume.as_deref());
                Some(attribute.unwrap_or(&c.volume_handle))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPvStatus {
    pub phase: Option<String>,
}

/// The class of a claim made before `storageClassName` existed, still honoured.
pub const ANN_CLASS_BETA: &str = "volume.beta.kubernetes.io/storage-class";

/// A claim as the claim controller caches it: enough to tell whether it wants a volume. The
/// whole claim is read from the API server when it does.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPvc {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CachedPvcSpec,
    #[serde(default)]
    pub status: CachedPvcStatus,
}

impl CachedPvc {
    /// The class it names, in the field or the beta annotation.
    pub fn class(&self) -> Option<&str> {
        let annotations = self.metadata.annotations.as_ref();
        (self.spec.storage_class_name.as_deref())
            .or_else(|| annotations?.get(ANN_CLASS_BETA).map(String::as_str))
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPvcStatus {
    #[serde(default)]
    pub capacity: Storage,
    /// Only a Bound claim may grow its volume.
    pub phase: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPvcSpec {
    pub storage_class_name: Option<String>,
    pub volume_name: Option<String>,
    /// What a bound claim asks for: more than its PV has is an expansion.
    #[serde(default)]
    pub resources: Resources,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Resources {
    #[serde(default)]
    pub requests: Storage,
}

/// The `storage` entry of a resource list (the only one volumes have).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Storage {
    pub storage: Option<Quantity>,
}

/// Makes a compact type a stand-in for the Kubernetes kind it is read from.
macro_rules! cached_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = "v1";
            const GROUP: &'static str = "";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cached_resource!(
    CachedPv,
    "PersistentVolume",
    "persistentvolumes",
    k8s_openapi::ClusterResourceScope
);
cached_resource!(
    CachedPvc,
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    k8s_openapi::NamespaceResourceScope
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_glusterfs_pv_and_is_small() {
        let pv: CachedPv = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pvc-1"},
            "spec": {"persistentVolumeReclaimPolicy": "Delete", "storageClassName": "sc",
                     "capacity": {"storage": "1Gi"}, "claimRef": {"name": "c", "uid": "u"},
                     "glusterfs": {"endpoints": "ep", "path": "vol_1"}},
            "status": {"phase": "Bound"},
        }))
        .unwrap();
        assert_eq!(pv.spec.glusterfs.unwrap().path, "vol_1");
        assert_eq!(pv.spec.claim_ref.unwrap().uid.as_deref(), Some("u"));
        assert_eq!(pv.status.phase.as_deref(), Some("Bound"));
        assert!(std::mem::size_of::<CachedPv>() < 1024);
    }

    #[test]
    fn a_csi_pv_names_its_volume_for_its_driver_only() {
        let pv: CachedPv = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-1"},
            "spec": {"csi": {"driver": "glusterfs.gluster.org", "volumeHandle": "vol_1",
                             "volumeAttributes": {"servers": "10.0.0.1"}}},
        }))
        .unwrap();
        assert_eq!(
            pv.spec.gluster_volume("glusterfs.gluster.org"),
            Some("vol_1")
        );
        assert_eq!(pv.spec.gluster_volume("other.example.com"), None);
        // The node plugin mounts the `volume` attribute over the handle.
        let pv: CachedPv = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "by-hand"},
            "spec": {"csi": {"driver": "glusterfs.gluster.org", "volumeHandle": "anything",
                             "volumeAttributes": {"volume": "vol_1", "servers": "10.0.0.1"}}},
        }))
        .unwrap();
        assert_eq!(
            pv.spec.gluster_volume("glusterfs.gluster.org"),
            Some("vol_1")
        );
    }

    #[test]
    fn reads_a_claim_and_is_small() {
        let claim: CachedPvc = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c", "namespace": "n"},
            "spec": {"storageClassName": "sc", "volumeName": "pv",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"},
        }))
        .unwrap();
        assert_eq!(claim.spec.storage_class_name.as_deref(), Some("sc"));
        assert_eq!(claim.spec.volume_name.as_deref(), Some("pv"));
        let full = std::mem::size_of::<k8s_openapi::api::core::v1::PersistentVolumeClaim>();
        assert!(std::mem::size_of::<CachedPvc>() * 2 < full);
    }
}
