//! Claims whose `dataSource` names another claim: the source is checked before anything is
//! made, and its volume's files are copied into the new volume before the PV exists, so no
//! claim is ever bound to a half copy. A crash mid-copy leaves no PV: the next attempt finds
//! the volume again by its name and copies anew into it, emptied.
//!
//! `dataSource` is written by the claim's author, so nothing is taken from it but a name in
//! the claim's own namespace; what that claim is and has is read from the objects themselves.

use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::Context;
use crate::config::{BackendParams, ClassParams};
use crate::gluster::plan;
use crate::k8s::objects::{self, ANN_CLUSTER, ANN_PROVISIONED_BY};
use crate::volumes::Made;
use crate::{Error, Result};

/// A claim's volume to copy from, checked.
#[derive(Debug)]
pub(super) struct Source {
    /// `namespace/name`.
    claim: String,
    volume: String,
    cluster: String,
}

fn refused(message: String) -> Error {
    Error::InvalidClaim(message)
}

/// The name of the claim `claim` is to be a clone of, when it asks for one; anything else as
/// a data source (snapshots, another namespace, other kinds) is refused.
pub(super) fn source_name(claim: &PersistentVolumeClaim) -> Result<Option<&str>> {
    let Some(spec) = claim.spec.as_ref() else {
        return Ok(None);
    };
    // With AnyVolumeDataSource the API server mirrors dataSource into dataSourceRef; a
    // dataSourceRef of its own (another kind, another namespace) is no clone.
    if let Some(r) = &spec.data_source_ref {
        // The core group is written either way: null or "".
        let group = |g: &Option<String>| g.as_deref().unwrap_or_default().to_string();
        let mirrored = spec.data_source.as_ref().is_some_and(|d| {
            d.kind == r.kind && d.name == r.name && group(&d.api_group) == group(&r.api_group)
        });
        if !mirrored
            || r.namespace
                .as_ref()
                .is_some_and(|ns| Some(ns) != claim.metadata.namespace.as_ref())
        {
            return Err(refused(format!(
                "dataSourceRef {} {:?}{}: only a claim of the same namespace can be cloned",
                r.kind,
                r.name,
                r.namespace
                    .as_ref()
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default()
            )));
        }
    }
    let Some(source) = &spec.data_source else {
        return Ok(None);
    };
    if source.kind != "PersistentVolumeClaim"
        || source.api_group.as_deref().is_some_and(|g| !g.is_empty())
    {
        return Err(refused(format!(
            "dataSource {} {:?}: only a PersistentVolumeClaim can be cloned (no snapshots)",
            source.kind, source.name
        )));
    }
    Ok(Some(&source.name))
}

/// The volume the claim's data source holds: a Bound claim of the same namespace, whose PV
/// this provisioner made for it over SSH in `cluster` (the new volume's), no larger than
/// `size_gib`.
pub(super) async fn source(
    claim: &PersistentVolumeClaim,
    params: &ClassParams,
    cluster: Option<&str>,
    size_gib: u64,
    ctx: &Context,
) -> Result<Option<Source>> {
    let Some(name) = source_name(claim)? else {
        return Ok(None);
    };
    let namespace = claim.namespace().unwrap_or_default();
    let what = format!("source claim {namespace}/{name}");
    if let BackendParams::Heketi(_) = params.backend {
        return Err(refused(format!(
            "{what}: clones are copied over SSH; this class uses Heketi, which this provisioner \
             cannot copy into"
        )));
    }
    let cluster = ctx.ssh()?.cluster(cluster)?.name.clone();
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace);
    let source = claims
        .get_opt(name)
        .await?
        .ok_or_else(|| refused(format!("{what} not found")))?;
    let phase = source.status.as_ref().and_then(|s| s.phase.as_deref());
    let bound_to = source.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    let (Some("Bound"), Some(pv_name)) = (phase, bound_to) else {
        return Err(refused(format!(
            "{what} is {}: only a Bound claim can be cloned",
            phase.unwrap_or("Pending")
        )));
    };
    let pv = Api::<PersistentVolume>::all(ctx.client.clone())
        .get_opt(pv_name)
        .await?
        .ok_or_else(|| refused(format!("{what}: its PV {pv_name} is gone")))?;
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let source_uid = source.uid().unwrap_or_default();
    if claim_ref.and_then(|r| r.uid.as_deref()) != Some(source_uid.as_str()) {
        return Err(refused(format!("{what}: PV {pv_name} is not bound to it")));
    }
    let by = pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str);
    if by != Some(ctx.settings.provisioner.as_str()) {
        return Err(refused(format!(
            "{what}: its PV {pv_name} was provisioned by {}, not by this provisioner ({})",
            by.unwrap_or("nobody (made by hand)"),
            ctx.settings.provisioner
        )));
    }
    let volume = objects::volume_of(&pv).unwrap_or_default().to_string();
    // A PV's path is editable: only the volume made for the source claim is copied.
    if !plan::derives_from(&volume, &source_uid) {
        return Err(refused(format!(
            "{what}: PV {pv_name} names volume {volume:?}, which was not made for that claim"
        )));
    }
    match pv.annotations().get(ANN_CLUSTER) {
        Some(c) if *c == cluster => {}
        Some(c) => {
            return Err(refused(format!(
                "{what}: its volume is in cluster {c:?}, this class makes volumes in {cluster:?}; \
                 clones are copied within one cluster"
            )));
        }
        None => {
            return Err(refused(format!(
                "{what}: its volume is served by Heketi; clones are copied between volumes \
                 of the SSH backend"
            )));
        }
    }
    let capacity = pv.spec.as_ref().and_then(|s| s.capacity.as_ref());
    let source_gib = objects::storage_gib(capacity.and_then(|c| c.get("storage")))?;
    if source_gib > size_gib {
        return Err(refused(format!(
            "{what} is {source_gib}Gi, larger than this claim's {size_gib}Gi: a clone is at \
             least as large as its source"
        )));
    }
    Ok(Some(Source {
        claim: format!("{namespace}/{name}"),
        volume,
        cluster,
    }))
}

/// Copies the source's files into the volume just made, telling the claim when the copy starts
/// and ends.
pub(super) async fn copy(
    claim: &PersistentVolumeClaim,
    source: &Source,
    made: &Made,
    ctx: &Context,
) -> Result<()> {
    let note = format!(
        "Copying the files of claim {} (volume {}) into volume {}",
        source.claim, source.volume, made.volume
    );
    ctx.publish(claim, EventType::Normal, "CloneStarted", "Provision", note)
        .await;
    let started = Instant::now();
    let counter = ctx
        .metrics
        .clone_copied_bytes
        .with_label_values(&[&source.cluster]);
    let counted = std::sync::atomic::AtomicU64::new(0);
    // The counter grows as the copy does; a copy started over counts its bytes again.
    let count = |bytes: u64| {
        let before = counted.fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
        counter.inc_by(bytes.saturating_sub(before));
    };
    let copied = ctx
        .ssh()?
        .copy_volume(
            &source.cluster,
            &source.volume,
            &made.volume,
            made.gid,
            &count,
        )
        .await?;
    count(copied.bytes);
    let note = format!(
        "Copied {} MiB from claim {} in {:.1} s on {}",
        copied.bytes >> 20,
        source.claim,
        started.elapsed().as_secs_f64(),
        copied.node
    );
    ctx.publish(claim, EventType::Normal, "CloneFinished", "Provision", note)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "ns"}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn only_a_claim_of_the_same_namespace_is_a_clone_source() {
        let pvc = serde_json::json!({"kind": "PersistentVolumeClaim", "name": "src"});
        assert_eq!(
            source_name(&claim(serde_json::json!({"dataSource": pvc}))).unwrap(),
            Some("src")
        );
        let mirrored = serde_json::json!({"dataSource": pvc, "dataSourceRef": pvc});
        assert_eq!(source_name(&claim(mirrored)).unwrap(), Some("src"));
        let core =
            serde_json::json!({"kind": "PersistentVolumeClaim", "name": "src", "apiGroup": ""});
        let mirrored = serde_json::json!({"dataSource": pvc, "dataSourceRef": core});
        assert_eq!(source_name(&claim(mirrored)).unwrap(), Some("src"));
        assert_eq!(source_name(&claim(serde_json::json!({}))).unwrap(), None);
        for (spec, want) in [
            (
                serde_json::json!({"dataSource": {"kind": "VolumeSnapshot", "name": "s",
                                                  "apiGroup": "snapshot.storage.k8s.io"}}),
                "only a PersistentVolumeClaim",
            ),
            (
                serde_json::json!({"dataSource": pvc, "dataSourceRef":
                    {"kind": "PersistentVolumeClaim", "name": "src", "namespace": "other"}}),
                "in namespace other",
            ),
            (
                serde_json::json!({"dataSourceRef": {"kind": "Widget", "name": "w",
                                                     "apiGroup": "example.com"}}),
                "only a claim of the same namespace",
            ),
        ] {
            let err = source_name(&claim(spec.clone())).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }
}
