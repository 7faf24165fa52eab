//! What the caches keep of each object: only what a reconcile reads. In a cluster of thousands
//! of PVs and claims the rest (managedFields above all) would be most of the provisioner's
//! memory.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use crate::heketi::volumes as heketi;
use crate::k8s::cached::{CachedPv, CachedPvc};
use crate::k8s::objects::{ANN_BRICKS, ANN_CLUSTER, ANN_GID, ANN_PROVISIONED_BY, CLAIM_FINALIZER};

/// The identity of an object: enough to find it, key it and order its versions; and the
/// finalizer that is ours.
fn identity(meta: &ObjectMeta) -> ObjectMeta {
    let ours = meta
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == CLAIM_FINALIZER);
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        deletion_timestamp: meta.deletion_timestamp.clone(),
        finalizers: ours.then(|| vec![CLAIM_FINALIZER.to_string()]),
        ..ObjectMeta::default()
    }
}

fn only(map: &Option<BTreeMap<String, String>>, keys: &[&str]) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<_, _> = map
        .iter()
        .flatten()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// A claim bound to a volume is never provisioned again: its identity, volume name and request
/// (for expansion) do.
/// Unbound claims keep their annotations, which say who provisions them.
pub fn claim(claim: &mut CachedPvc) {
    if claim
        .spec
        .volume_name
        .as_deref()
        .is_some_and(|v| !v.is_empty())
    {
        claim.metadata = identity(&claim.metadata);
        claim.spec.storage_class_name = None;
    } else {
        strip(&mut claim.metadata);
    }
}

/// Someone else's PV: only that it is not ours. Ours (made by a provisioner `serves` accepts):
/// the annotations deletion, GIDs and gauges read (the spec is cached in its compact form
/// already).
pub fn volume(pv: &mut CachedPv, serves: impl Fn(&str) -> bool) {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_PROVISIONED_BY))
        .is_some_and(|by| serves(by));
    let mut metadata = identity(&pv.metadata);
    if !ours {
        metadata.annotations = only(&pv.metadata.annotations, &[ANN_PROVISIONED_BY]);
        *pv = CachedPv {
            metadata,
            ..Default::default()
        };
        return;
    }
    metadata.annotations = only(
        &pv.metadata.annotations,
        &[
            ANN_PROVISIONED_BY,
            ANN_GID,
            ANN_CLUSTER,
            ANN_BRICKS,
            heketi::ANN_VOLUME_ID,
            heketi::ANN_URL,
            heketi::ANN_USER,
            heketi::ANN_SECRET,
        ],
    );
    // The finalizer helper patches the list by position.
    metadata.finalizers = pv.metadata.finalizers.clone();
    pv.metadata = metadata;
}

/// Fields no reconcile reads on any object: managedFields and kubectl's copy of the object.
pub fn strip(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    /// The object as JSON, without the apiVersion and kind k8s-openapi always writes.
    fn body<T: serde::Serialize>(obj: &T) -> serde_json::Value {
        let mut v = serde_json::to_value(obj).unwrap();
        let map = v.as_object_mut().unwrap();
        map.remove("apiVersion");
        map.remove("kind");
        v
    }

    #[test]
    fn bound_claims_keep_their_identity_and_volume_only() {
        let managed = json!([{"manager": "kubectl", "operation": "Update"}]);
        let mut bound: CachedPvc = from(json!({
            "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "7",
                         "managedFields": managed, "annotations": {"a": "b"},
                         "finalizers": ["kubernetes.io/pvc-protection", CLAIM_FINALIZER]},
            "spec": {"volumeName": "pv", "storageClassName": "sc", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "2Gi"}, "limits": {"storage": "3Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}},
        }));
        claim(&mut bound);
        assert_eq!(
            body(&bound),
            json!({"metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "7",
                                "finalizers": [CLAIM_FINALIZER]},
                   "spec": {"volumeName": "pv", "storageClassName": null,
                            "resources": {"requests": {"storage": "2Gi"}}},
                   "status": {"capacity": {"storage": "1Gi"}}})
        );
        let mut pending: CachedPvc = from(json!({
            "metadata": {"name": "c", "managedFields": managed,
                         "annotations": {"a": "b", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"storageClassName": "sc", "accessModes": ["ReadWriteOnce"]},
        }));
        claim(&mut pending);
        assert_eq!(
            body(&pending),
            json!({"metadata": {"name": "c", "annotations": {"a": "b"}},
                   "spec": {"storageClassName": "sc", "volumeName": null,
                            "resources": {"requests": {"storage": null}}},
                   "status": {"capacity": {"storage": null}}})
        );
    }

    #[test]
    fn volumes_keep_what_deletion_and_repair_read() {
        let pv = |by: &str| -> CachedPv {
            from(json!({
                "metadata": {"name": "pv", "uid": "u", "finalizers": ["kubernetes.io/pv-protection"],
                             "annotations": {ANN_PROVISIONED_BY: by, ANN_GID: "2000",
                                             ANN_CLUSTER: "c", ANN_BRICKS: "n:/b", "Description": "d"}},
                "spec": {"capacity": {"storage": "1Gi"}, "persistentVolumeReclaimPolicy": "Delete",
                         "storageClassName": "sc", "mountOptions": ["x"],
                         "claimRef": {"name": "c", "namespace": "n", "uid": "cu"},
                         "glusterfs": {"endpoints": "ep", "endpointsNamespace": "n", "path": "vol_x"}},
                "status": {"phase": "Released", "message": "m"},
            }))
        };
        let mut ours = pv("me");
        volume(&mut ours, |by| by == "me");
        assert_eq!(
            body(&ours),
            json!({
                "metadata": {"name": "pv", "uid": "u", "finalizers": ["kubernetes.io/pv-protection"],
                             "annotations": {ANN_PROVISIONED_BY: "me", ANN_GID: "2000",
                                             ANN_CLUSTER: "c", ANN_BRICKS: "n:/b"}},
                "spec": {"capacity": {"storage": "1Gi"},
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "sc",
                         "claimRef": {"name": "c", "namespace": "n", "uid": "cu"},
                         "glusterfs": {"endpoints": "ep", "endpointsNamespace": "n", "path": "vol_x"}},
                "status": {"phase": "Released"},
            })
        );
        let mut theirs = pv("someone-else");
        volume(&mut theirs, |by| by == "me");
        assert_eq!(
            body(&theirs)["metadata"],
            json!({"name": "pv", "uid": "u", "annotations": {ANN_PROVISIONED_BY: "someone-else"}})
        );
        assert!(theirs.spec.glusterfs.is_none() && theirs.status.phase.is_none());
    }
}
