//! A PersistentVolume as the provisioner caches it: only the fields it reads. k8s-openapi's
//! type holds every volume source inline (3.4 KB before any data), which a cache of thousands
//! of PVs would pay for each one.

use k8s_openapi::api::core::v1::{GlusterfsPersistentVolumeSource, ObjectReference};
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPv {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CachedPvSpec,
    #[serde(default)]
    pub status: CachedPvStatus,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPvSpec {
    pub glusterfs: Option<GlusterfsPersistentVolumeSource>,
    pub claim_ref: Option<ObjectReference>,
    pub persistent_volume_reclaim_policy: Option<String>,
    pub storage_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPvStatus {
    pub phase: Option<String>,
}

impl k8s_openapi::Resource for CachedPv {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "PersistentVolume";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "persistentvolumes";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for CachedPv {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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
}
