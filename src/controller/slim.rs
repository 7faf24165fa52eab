//! What the caches keep of each object: only what a reconcile reads. In a cluster of thousands
//! of PVs and claims the rest (managedFields above all) would be most of the provisioner's
//! memory.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::heketi::volumes as heketi;
use crate::k8s::cached::{CachedPv, CachedPvc, Kept};
use crate::k8s::objects::{
    ANN_ARBITER, ANN_BRICKS, ANN_CLUSTER, ANN_ENDPOINTS, ANN_GID, ANN_PROVISIONED_BY,
    CLAIM_FINALIZER, FINALIZER, storage_gib,
};

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

/// Whether a claim may still need this provisioner: not bound yet, held by its finalizer,
/// being deleted, or asking for more than it has (an expansion). The others are left out of
/// the cache: nothing is done for a settled claim until it changes, and thousands of bound
/// claims would be most of the provisioner's memory.
pub fn claim_needed(claim: &CachedPvc) -> bool {
    let bound = claim
        .spec
        .volume_name
        .as_deref()
        .is_some_and(|v| !v.is_empty());
    let gib = |q: Option<&Quantity>| q.map(|q| storage_gib(Some(q)).ok());
    let asks_more = match (
        gib(claim.spec.resources.requests.storage.as_ref()),
        gib(claim.status.capacity.storage.as_ref()),
    ) {
        (Some(Some(want)), Some(Some(has))) => want > has,
        _ => true,
    };
    !bound
        || asks_more
        || claim.metadata.deletion_timestamp.is_some()
        || claim.metadata.finalizers.is_some()
}

/// Whether a PV of ours needs a reconcile for what it is: without our finalizer yet, being
/// deleted, or released. The others are not triggered by their own events (in a cluster of
/// thousands, the queue would hold every one at start-up, and keep its size for good): a
/// live PV's Endpoints and Service are checked once the first lists are in, and again when
/// either is deleted.
pub fn volume_unsettled(pv: &CachedPv) -> bool {
    let held = pv
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER);
    !held
        || pv.metadata.deletion_timestamp.is_some()
        || pv.status.phase.as_deref() == Some("Released")
}

/// Someone else's PV is left out of the cache: nothing is ever done with it.
pub fn volume_needed(pv: &CachedPv) -> bool {
    !pv.kept.is_empty()
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

/// Someone else's PV: nothing (see [`volume_needed`]). Ours (made by a provisioner `serves` accepts):
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
        *pv = CachedPv {
            metadata,
            ..Default::default()
        };
        return;
    }
    pv.kept = Kept::of(
        pv.metadata.annotations.as_ref(),
        &[
            ANN_PROVISIONED_BY,
            ANN_GID,
            ANN_CLUSTER,
            ANN_BRICKS,
            ANN_ARBITER,
            ANN_ENDPOINTS,
            heketi::ANN_VOLUME_ID,
            heketi::ANN_URL,
            heketi::ANN_USER,
            heketi::ANN_SECRET,
        ],
    );
    // The finalizer helper patches the list by position.
    metadata.finalizers = pv.metadata.finalizers.clone();
    pv.metadata = metadata;
    // Which claim: the rest (kind, version) is the same for all.
    if let Some(claim) = pv.spec.claim_ref.as_mut() {
        *claim = ObjectReference {
            name: claim.name.take(),
            namespace: claim.namespace.take(),
            uid: claim.uid.take(),
            ..Default::default()
        };
    }
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
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

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
                   "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}})
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
                   "status": {"capacity": {"storage": null}, "phase": null}})
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
                         "claimRef": {"name": "c", "namespace": "n", "uid": "cu", "kind": "PersistentVolumeClaim",
                                      "apiVersion": "v1", "resourceVersion": "9"},
                         "glusterfs": {"endpoints": "ep", "endpointsNamespace": "n", "path": "vol_x"}},
                "status": {"phase": "Released", "message": "m"},
            }))
        };
        let mut ours = pv("me");
        volume(&mut ours, |by| by == "me");
        assert_eq!(
            body(&ours),
            json!({
                "metadata": {"name": "pv", "uid": "u", "finalizers": ["kubernetes.io/pv-protection"]},
                "spec": {"capacity": {"storage": "1Gi"},
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "sc",
                         "claimRef": {"name": "c", "namespace": "n", "uid": "cu"},
                         "glusterfs": {"endpoints": "ep", "endpointsNamespace": "n", "path": "vol_x"}},
                "status": {"phase": "Released"},
            })
        );
        let mut theirs = pv("someone-else");
        volume(&mut theirs, |by| by == "me");
        let kept: BTreeMap<_, _> = [
            (ANN_PROVISIONED_BY, "me"),
            (ANN_GID, "2000"),
            (ANN_CLUSTER, "c"),
            (ANN_BRICKS, "n:/b"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(ours.kept.to_map(), kept, "the annotations read, no others");
        assert_eq!(ours.annotation(ANN_GID), Some("2000"));
        assert!(volume_needed(&ours));
        assert!(!volume_needed(&theirs));
    }

    #[test]
    fn only_claims_that_may_need_something_are_kept() {
        let claim = |volume: &str, want: &str, has: &str, finalizers: Value| -> CachedPvc {
            let mut c: CachedPvc = from(json!({
                "metadata": {"name": "c", "namespace": "n", "uid": "u", "finalizers": finalizers},
                "spec": {"volumeName": volume, "resources": {"requests": {"storage": want}}},
                "status": {"capacity": {"storage": has}},
            }));
            super::claim(&mut c);
            c
        };
        let none = json!(["kubernetes.io/pvc-protection"]);
        assert!(!claim_needed(&claim("pv", "1Gi", "1Gi", none.clone())));
        assert!(!claim_needed(&claim("pv", "1Gi", "2Gi", none.clone())));
        assert!(
            claim_needed(&claim("", "1Gi", "1Gi", none.clone())),
            "unbound"
        );
        assert!(
            claim_needed(&claim("pv", "2Gi", "1Gi", none.clone())),
            "expansion"
        );
        assert!(
            claim_needed(&claim("pv", "1Gi", "", none)),
            "no capacity yet"
        );
        assert!(
            claim_needed(&claim("pv", "1Gi", "1Gi", json!([CLAIM_FINALIZER]))),
            "held"
        );
    }
}
