//! Heketi's JSON bodies, as far as a provisioner reads and writes them.

use serde::{Deserialize, Serialize};

use crate::config::Durability;

#[derive(Clone, Debug, Serialize)]
pub struct CreateVolume {
    /// GiB.
    pub size: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    pub gid: u32,
    pub durability: DurabilityJson,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub glustervolumeoptions: Vec<String>,
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
pub struct DurabilityJson {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<Replicate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disperse: Option<Disperse>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
pub struct Replicate {
    pub replica: u32,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
pub struct Disperse {
    pub data: u32,
    pub redundancy: u32,
}

impl From<Durability> for DurabilityJson {
    fn from(d: Durability) -> Self {
        match d {
            Durability::None => DurabilityJson {
                type_: "none".into(),
                ..Default::default()
            },
            Durability::Replicate(replica) => DurabilityJson {
                type_: "replicate".into(),
                replicate: Some(Replicate { replica }),
                ..Default::default()
            },
            // Heketi builds the arbiter from the `user.heketi.arbiter` option.
            Durability::Arbiter { .. } => Durability::Replicate(3).into(),
            Durability::Disperse { data, redundancy } => DurabilityJson {
                type_: "disperse".into(),
                disperse: Some(Disperse { data, redundancy }),
                ..Default::default()
            },
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Snapshot {
    pub enable: bool,
    pub factor: f32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct VolumeInfo {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub size: u64,
    #[serde(default)]
    pub gid: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExpandVolume {
    pub expand_size: u64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct VolumeList {
    pub volumes: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ClusterInfo {
    pub id: String,
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub hostnames: Hostnames,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Hostnames {
    pub manage: Vec<String>,
    pub storage: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_as_heketi_writes_it() {
        let json = |d| serde_json::to_value(DurabilityJson::from(d)).unwrap();
        assert_eq!(
            json(Durability::Replicate(3)),
            serde_json::json!({"type": "replicate", "replicate": {"replica": 3}})
        );
        assert_eq!(
            json(Durability::Disperse {
                data: 4,
                redundancy: 2
            }),
            serde_json::json!({"type": "disperse", "disperse": {"data": 4, "redundancy": 2}})
        );
        assert_eq!(json(Durability::None), serde_json::json!({"type": "none"}));
    }
}
