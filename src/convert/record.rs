//! The record of a conversion in progress: what `convert` keeps in a ConfigMap of the
//! provisioner's namespace (never on the claim, which namespace users may edit) while it
//! replaces a PV, and what the provisioner reads of it (the GID it keeps reserved).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;

use super::claim_of;
use crate::k8s::objects::ANN_GID;
use crate::{Error, Result};

/// Labels the ConfigMaps that hold conversions in progress, in the provisioner's namespace.
pub const LABEL_RECORD: &str = "gluster.org/convert-record";
const KEY_RECORD: &str = "record";

/// What is kept while a PV is replaced: made by this tool from the old PV, and followed only
/// while the claim and the PV are still the ones it was made from.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub(super) old_uid: String,
    pub(super) claim_uid: String,
    pub(super) reclaim_policy: String,
    pub(super) pv: PersistentVolume,
}

/// The ConfigMap a PV's record is kept in.
pub fn record_name(pv: &str) -> String {
    format!("convert-{pv}")
}

/// The PV name and GID a record holds: the provisioner hands that GID to nobody else while
/// the PV is being replaced.
pub fn reserved_gid(cm: &ConfigMap) -> Option<(String, u32)> {
    let record: Record = serde_json::from_str(cm.data.as_ref()?.get(KEY_RECORD)?).ok()?;
    let gid = record.pv.annotations().get(ANN_GID)?.parse().ok()?;
    Some((record.pv.name_any(), gid))
}

impl Record {
    pub(super) fn claim(&self) -> (String, String) {
        claim_of(&self.pv).unwrap_or_default()
    }

    /// The ConfigMap that keeps it.
    pub(super) fn config_map(&self) -> Result<ConfigMap> {
        let fail = |e: serde_json::Error| Error::Convert(e.to_string());
        let text = serde_json::to_string(self).map_err(fail)?;
        serde_json::from_value(json!({
            "metadata": {"name": record_name(&self.pv.name_any()), "labels": {LABEL_RECORD: "true"}},
            "data": {KEY_RECORD: text},
        }))
        .map_err(fail)
    }
}

/// The records of conversions in progress, by PV name. One that does not parse, or is kept
/// under another PV's name, is an error: somebody wrote it who should not have.
pub(super) async fn records(api: &Api<ConfigMap>) -> Result<BTreeMap<String, Record>> {
    let listed = api
        .list(&ListParams::default().labels(LABEL_RECORD))
        .await?;
    let mut out = BTreeMap::new();
    for cm in listed.items {
        let text = cm.data.as_ref().and_then(|d| d.get(KEY_RECORD));
        let record: Record = text
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| {
                Error::Convert(format!("ConfigMap {} holds no record", cm.name_any()))
            })?;
        let pv = record.pv.name_any();
        if cm.name_any() != record_name(&pv) {
            return Err(Error::Convert(format!(
                "ConfigMap {} holds the record of PV {pv}",
                cm.name_any()
            )));
        }
        out.insert(pv, record);
    }
    Ok(out)
}
