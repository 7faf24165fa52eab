//! Volumes made by a Heketi server, with the objects and annotations the in-tree provisioner
//! left, so PVs from either are deleted the same way.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::api::{CreateVolume, Snapshot, VolumeInfo};
use super::client::HeketiClient;
use crate::config::{HeketiParams, SecretRef};
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
                    glustervolumeoptions: req
                        .options
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect(),
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
            annotations,
        })
    }

    async fn delete(&self, volume: Recorded<'_>) -> Result<()> {
        let id = Self::id(volume)?;
        self.client.delete_volume(id).await?;
        tracing::info!(volume = volume.volume, id, "Heketi volume deleted");
        Ok(())
    }

    /// Grows by what Heketi's own size lacks: a retry after an expansion whose PV update
    /// failed does not grow the volume again.
    async fn expand(&self, volume: Recorded<'_>, _from_gib: u64, to_gib: u64) -> Result<()> {
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
