//! Volumes made by a Heketi server, with the objects and annotations the in-tree provisioner
//! left, so PVs from either are deleted the same way.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::api::{CreateVolume, Snapshot, VolumeInfo};
use super::client::HeketiClient;
use crate::config::{Durability, HeketiParams, SecretRef};
use crate::gluster::place::Promise;
use crate::identity::Expected;
use crate::k8s::objects::ANN_GID;
use crate::volumes::{Made, Recorded, VolumeBackend, VolumeRequest};
use crate::{Error, Result};

/// The in-tree provisioner's record of the Heketi volume.
pub const ANN_VOLUME_ID: &str = "gluster.kubernetes.io/heketi-volume-id";
/// Where the volume lives and who may delete it, so deletion never needs the StorageClass.
pub const ANN_URL: &str = "gluster.org/heketi-url";
pub const ANN_USER: &str = "gluster.org/heketi-user";
pub const ANN_SECRET: &str = "gluster.org/heketi-secret";

pub struct HeketiVolumes {
    client: HeketiClient,
    params: HeketiParams,
}

impl HeketiVolumes {
    pub fn new(client: HeketiClient, params: HeketiParams) -> Self {
        Self { client, params }
    }

    /// What a PV of ours records of the server and user (never the key).
    pub fn params_from(annotations: &BTreeMap<String, String>) -> Option<HeketiParams> {
        let url = annotations.get(ANN_URL)?.clone();
        let secret = annotations
            .get(ANN_SECRET)
            .and_then(|s| s.split_once('/'))
            .map(|(namespace, name)| SecretRef {
                namespace: namespace.into(),
                name: name.into(),
            });
        Some(HeketiParams {
            url,
            user: annotations.get(ANN_USER).cloned().unwrap_or_default(),
            user_key: None,
            secret,
            clusters: Vec::new(),
            snap_factor: 1.0,
        })
    }

    /// The volume id: recorded by the in-tree provisioner and by us; else the name Heketi gives
    /// (`vol_<id>`).
    fn id<'a>(volume: Recorded<'a>) -> Result<&'a str> {
        volume
            .annotations
            .get(ANN_VOLUME_ID)
            .map(String::as_str)
            .or_else(|| volume.volume.strip_prefix("vol_"))
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| Error::InvalidVolume {
                pv: volume.pv.to_string(),
                message: format!("no usable {ANN_VOLUME_ID} annotation"),
            })
    }
}

impl HeketiVolumes {
    /// What Heketi knows of a recorded volume; that it knows nothing is an error.
    async fn info(&self, volume: Recorded<'_>) -> Result<VolumeInfo> {
        let id = Self::id(volume)?;
        self.client
            .volume(id)
            .await?
            .ok_or_else(|| Error::InvalidVolume {
                pv: volume.pv.to_string(),
                message: format!("Heketi has no volume {id}"),
            })
    }
}

impl VolumeBackend for HeketiVolumes {
    async fn create(&self, req: &VolumeRequest<'_>) -> Result<Made> {
        let info = match self.client.find_volume(req.name).await? {
            Some(info) => {
                tracing::info!(
                    volume = req.name,
                    id = info.id,
                    "found the volume an earlier attempt made"
                );
                info
            }
            None => {
                let body = CreateVolume {
                    size: req.size_gib,
                    name: req.name.to_string(),
                    clusters: self.params.clusters.clone(),
                    gid: req.gid,
                    durability: req.durability.into(),
                    glustervolumeoptions: heketi_options(req),
                    snapshot: Snapshot {
                        enable: true,
                        factor: self.params.snap_factor,
                    },
                };
                self.client.create_volume(&body).await?
            }
        };
        let addresses = self.client.storage_addresses(&info.cluster).await?;
        let mut annotations = BTreeMap::from([
            (ANN_VOLUME_ID.to_string(), info.id),
            (ANN_URL.to_string(), self.params.url.clone()),
            (ANN_USER.to_string(), self.params.user.clone()),
        ]);
        if let Some(secret) = &self.params.secret {
            annotations.insert(ANN_SECRET.to_string(), secret.to_string());
        }
        Ok(Made {
            volume: info.name,
            addresses,
            gid: info.gid,
            annotations,
        })
    }

    /// Heketi keeps no identity of ours: its record of the name and GID is the proof.
    async fn delete(&self, volume: Recorded<'_>, _owner: Expected<'_>) -> Result<()> {
        let id = Self::id(volume)?;
        // The id, the path and the GID are editable on the PV; Heketi's own record of the
        // volume must agree with all three (both provisioners gave Heketi the PV's GID).
        let gid = volume.annotations.get(ANN_GID);
        match self.client.volume(id).await? {
            None => return Ok(()),
            Some(info) if info.name != volume.volume => {
                return Err(Error::NotOurs(format!(
                    "PV {} records Heketi volume {id}, which is {:?}, not {:?}",
                    volume.pv, info.name, volume.volume
                )));
            }
            Some(info) if gid.is_none_or(|g| *g != info.gid.to_string()) => {
                return Err(Error::NotOurs(format!(
                    "PV {} records GID {gid:?}, but Heketi volume {id} has GID {}",
                    volume.pv, info.gid
                )));
            }
            Some(_) => {}
        }
        self.client.delete_volume(id).await?;
        tracing::info!(volume = volume.volume, id, "Heketi volume deleted");
        Ok(())
    }

    /// The name is derived from the deleted claim's UID, which Heketi's volume carries.
    async fn abandon(
        &self,
        name: &str,
        _cluster: Option<&str>,
        _owner: Expected<'_>,
    ) -> Result<()> {
        if let Some(info) = self.client.find_volume(name).await? {
            self.client.delete_volume(&info.id).await?;
            tracing::info!(
                volume = name,
                id = info.id,
                "Heketi volume of a deleted claim deleted"
            );
        }
        Ok(())
    }

    /// Grows by what Heketi's own size lacks: a retry after an expansion whose PV update
    /// failed does not grow the volume again.
    async fn expand(
        &self,
        volume: Recorded<'_>,
        _from_gib: u64,
        to_gib: u64,
        _promised: &[Promise],
    ) -> Result<()> {
        let info = self.info(volume).await?;
        if info.size < to_gib {
            self.client
                .expand_volume(&info.id, to_gib - info.size)
                .await?;
        }
        Ok(())
    }

    async fn addresses(&self, volume: Recorded<'_>) -> Result<Vec<IpAddr>> {
        let info = self.info(volume).await?;
        self.client.storage_addresses(&info.cluster).await
    }
}

/// The class's options as Heketi takes them; `volumetype: arbiter` is Heketi's arbiter option.
fn heketi_options(req: &VolumeRequest<'_>) -> Vec<String> {
    let mut out: Vec<String> = req
        .options
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if let Durability::Arbiter { average_file_kib } = req.durability {
        let given = |key: &str| req.options.iter().any(|(k, _)| k.eq_ignore_ascii_case(key));
        if !given("user.heketi.arbiter") {
            out.push("user.heketi.arbiter true".into());
        }
        if !given("user.heketi.average-file-size") {
            out.push(format!("user.heketi.average-file-size {average_file_kib}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded<'a>(volume: &'a str, annotations: &'a BTreeMap<String, String>) -> Recorded<'a> {
        Recorded {
            pv: "pv",
            volume,
            annotations,
        }
    }

    #[test]
    fn an_arbiter_class_asks_heketi_for_its_arbiter() {
        let options = [(
            "user.heketi.average-file-size".to_string(),
            "16".to_string(),
        )];
        let req = VolumeRequest {
            name: "v",
            cluster: None,
            durability: Durability::Arbiter {
                average_file_kib: 16,
            },
            size_gib: 1,
            gid: 2000,
            options: &options,
            size_limit: Default::default(),
            promised: crate::volumes::Promised(&|_| {}),
            fence: crate::volumes::Fenced::none(),
            identity: &crate::identity::Identity {
                kube_cluster: "k".into(),
                claim_uid: "u".into(),
                pv: "pv".into(),
                policy: crate::identity::Policy::Delete,
                provisioner: "p".into(),
            },
        };
        assert_eq!(
            heketi_options(&req),
            [
                "user.heketi.average-file-size 16",
                "user.heketi.arbiter true"
            ]
        );
    }

    #[test]
    fn the_volume_id_comes_from_the_pv() {
        let ann = BTreeMap::from([(ANN_VOLUME_ID.to_string(), "abc123".to_string())]);
        assert_eq!(
            HeketiVolumes::id(recorded("vol_other", &ann)).unwrap(),
            "abc123"
        );
        // As the in-tree deleter did: without the annotation, the name Heketi gave.
        let none = BTreeMap::new();
        assert_eq!(
            HeketiVolumes::id(recorded("vol_def456", &none)).unwrap(),
            "def456"
        );
        let err = HeketiVolumes::id(recorded("custom_name", &none)).unwrap_err();
        assert!(err.to_string().contains(ANN_VOLUME_ID), "{err}");
        let hostile = BTreeMap::from([(ANN_VOLUME_ID.to_string(), "../clusters".to_string())]);
        assert!(HeketiVolumes::id(recorded("vol_x", &hostile)).is_err());
    }

    #[test]
    fn our_pvs_record_server_user_and_secret() {
        let ann = BTreeMap::from([
            (ANN_URL.to_string(), "https://heketi:8080".to_string()),
            (ANN_USER.to_string(), "admin".to_string()),
            (ANN_SECRET.to_string(), "storage/heketi-secret".to_string()),
        ]);
        let params = HeketiVolumes::params_from(&ann).unwrap();
        assert_eq!(params.url, "https://heketi:8080");
        assert_eq!(params.user, "admin");
        assert_eq!(
            params.secret,
            Some(SecretRef {
                namespace: "storage".into(),
                name: "heketi-secret".into()
            })
        );
        assert!(params.user_key.is_none());
        // An in-tree PV records none of it: its class must say.
        let in_tree = BTreeMap::from([(ANN_VOLUME_ID.to_string(), "abc".to_string())]);
        assert!(HeketiVolumes::params_from(&in_tree).is_none());
    }
}
