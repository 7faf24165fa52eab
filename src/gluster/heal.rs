//! A volume's health as gluster itself reports it: which bricks run (`volume status`), how
//! many entries wait to be healed and how many are in split-brain (`volume heal V info
//! summary`), and whether it would keep its quorum without a node.

use super::SshBackend;
use super::cli;
use super::xml::{self, Volume};
use crate::config::{Cluster, Node};
use crate::identity::Identity;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct VolumeHealth {
    pub volume: String,
    /// Each brick as `host:/path`, and whether its process runs.
    pub bricks: Vec<(String, bool)>,
    /// Entries waiting to be healed, as many as the brick holding most lists (each brick lists
    /// what its copies lack, so a sum would count one entry once per good copy); `None` when
    /// gluster cannot tell (a volume without copies, or no brick answering).
    pub heal_pending: Option<u64>,
    pub split_brain: Option<u64>,
    /// Bricks that must run for the volume to take writes.
    pub quorum: usize,
    /// Whether it keeps copies (replicate, disperse): only those heal.
    pub copies: bool,
    /// What it records of who made it (none when it records nothing whole).
    pub identity: Option<Identity>,
}

impl VolumeHealth {
    pub fn up(&self) -> usize {
        self.bricks.iter().filter(|(_, up)| *up).count()
    }

    /// The bricks whose process does not run.
    pub fn down_bricks(&self) -> Vec<&str> {
        self.bricks
            .iter()
            .filter(|(_, up)| !up)
            .map(|(b, _)| b.as_str())
            .collect()
    }

    /// Every brick running, nothing to heal, no split-brain (as far as gluster could tell
    /// for a volume with copies: a missing heal summary is not a whole volume).
    pub fn whole(&self) -> bool {
        self.up() == self.bricks.len()
            && (!self.copies || self.heal_pending.is_some())
            && self.heal_pending.unwrap_or(0) == 0
            && self.split_brain.unwrap_or(0) == 0
    }

    /// What is wrong, in words: the bricks down, the entries to heal, those in split-brain.
    pub fn troubles(&self) -> String {
        let down = self.down_bricks();
        let mut what = Vec::new();
        if !down.is_empty() {
            what.push(format!(
                "{}/{} bricks running (down: {})",
                self.up(),
                self.bricks.len(),
                down.join(", ")
            ));
        }
        if let Some(n) = self.heal_pending.filter(|n| *n > 0) {
            what.push(format!("{n} entries waiting to be healed"));
        }
        if let Some(n) = self.split_brain.filter(|n| *n > 0) {
            what.push(format!(
                "{n} entries in split-brain, which gluster does not heal by itself \
                 (`gluster volume heal {} split-brain ...` picks a copy)",
                self.volume
            ));
        }
        if what.is_empty() && !self.whole() {
            what.push("gluster gave no heal summary".into());
        }
        what.join("; ")
    }

    /// One word for the state, then the troubles: whole, degraded (bricks down), split-brain,
    /// healing, or cannot tell.
    pub fn state(&self) -> String {
        let word = if self.whole() {
            return "whole".into();
        } else if !self.down_bricks().is_empty() {
            "degraded"
        } else if self.split_brain.unwrap_or(0) > 0 {
            "split-brain"
        } else if self.heal_pending.unwrap_or(0) > 0 {
            "healing"
        } else {
            "cannot tell"
        };
        format!("{word}: {}", self.troubles())
    }

    /// Whether it keeps its quorum if `node` goes down too.
    pub fn keeps_quorum_without(&self, node: &Node) -> bool {
        let names = [
            node.name.clone(),
            node.ssh_address.clone(),
            node.storage_address.to_string(),
        ];
        let left = self
            .bricks
            .iter()
            .filter(|(brick, up)| {
                let host = brick.split_once(':').map_or(brick.as_str(), |(h, _)| h);
                *up && !names.iter().any(|n| n == host)
            })
            .count();
        left >= self.quorum
    }

    fn of(volume: &Volume, running: &[String], heal: Option<Vec<xml::HealBrick>>) -> Self {
        let bricks = volume
            .bricks
            .bricks
            .iter()
            .map(|b| (b.name.clone(), running.contains(&b.name)))
            .collect();
        let most = |count: fn(&xml::HealBrick) -> Option<u64>| {
            heal.as_ref()
                .and_then(|bricks| bricks.iter().filter_map(count).max())
        };
        VolumeHealth {
            volume: volume.name.clone(),
            bricks,
            heal_pending: most(|b| b.pending),
            split_brain: most(|b| b.split_brain),
            quorum: quorum(volume),
            copies: has_copies(volume),
            identity: Identity::of(volume).ok().flatten(),
        }
    }
}

/// Bricks a volume of one replica or disperse set needs running to take writes: more than
/// half of a replica set (gluster's `auto` client quorum for three copies), the data bricks of
/// a disperse set, every brick of a plain one.
fn quorum(volume: &Volume) -> usize {
    let bricks = volume.brick_count as usize;
    match volume.kind.as_str() {
        "Replicate" => volume.replica_count as usize / 2 + 1,
        "Disperse" => (volume.disperse_count - volume.redundancy_count) as usize,
        _ => bricks,
    }
    .min(bricks)
}

fn has_copies(volume: &Volume) -> bool {
    matches!(volume.kind.as_str(), "Replicate" | "Disperse")
}

impl SshBackend {
    /// The health of volume `name`; `None` when it does not exist.
    pub async fn volume_health(
        &self,
        cluster: &Cluster,
        name: &str,
    ) -> Result<Option<VolumeHealth>> {
        let Some(volume) = self.volume_info(cluster, name).await? else {
            return Ok(None);
        };
        let running: Vec<String> = match self.gluster(cluster, cli::status_args(name)).await {
            Ok(out) => xml::parse_volume_status(&out)?
                .iter()
                .filter(|p| p.status == 1)
                .filter_map(|p| p.brick())
                .collect(),
            // A stopped volume runs no brick.
            Err(Error::Gluster { message, .. }) if message.contains("is not started") => Vec::new(),
            Err(e) => return Err(e),
        };
        let heal = if has_copies(&volume) && !running.is_empty() {
            match self.gluster(cluster, cli::heal_summary_args(name)).await {
                Ok(out) => Some(xml::parse_heal_summary(&out)?),
                // Gluster's own refusal (its self-heal daemon down, say): it cannot tell.
                Err(Error::Gluster { message, .. }) => {
                    tracing::warn!(volume = name, message, "no heal summary");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        Ok(Some(VolumeHealth::of(&volume, &running, heal)))
    }

    /// The names of the cluster's volumes.
    pub async fn volume_names(&self, cluster: &Cluster) -> Result<Vec<String>> {
        let out = self.gluster(cluster, cli::list_args()).await?;
        xml::parse_volume_list(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(kind: &str, replica: u32, bricks: &[&str]) -> Volume {
        serde_json::from_value(serde_json::json!({
            "name": "v", "id": "i", "statusStr": "Started", "typeStr": kind,
            "brickCount": bricks.len(), "replicaCount": replica,
            "bricks": {"brick": bricks.iter().map(|b| serde_json::json!({"name": b})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn node(name: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "name": name, "ssh_address": ip, "storage_address": ip, "zone": "z",
            "brick_roots": ["/b"],
        }))
        .unwrap()
    }

    fn heal(name: &str, pending: Option<u64>, split: Option<u64>) -> xml::HealBrick {
        xml::HealBrick {
            name: name.into(),
            pending,
            split_brain: split,
        }
    }

    #[test]
    fn a_brick_down_and_entries_to_heal_are_not_whole() {
        let bricks = [
            "10.0.0.1:/b/v/brick",
            "10.0.0.2:/b/v/brick",
            "10.0.0.3:/b/v/brick",
        ];
        let v = volume("Replicate", 3, &bricks);
        let running: Vec<String> = bricks[..2].iter().map(|b| b.to_string()).collect();
        // Two good copies each list the 21 entries the third lacks; the down brick says nothing.
        let summary = vec![
            heal(bricks[0], Some(21), Some(0)),
            heal(bricks[1], Some(21), Some(0)),
            heal(bricks[2], None, None),
        ];
        let h = VolumeHealth::of(&v, &running, Some(summary));
        assert_eq!(
            (h.up(), h.heal_pending, h.split_brain),
            (2, Some(21), Some(0))
        );
        assert!(!h.whole());
        assert!(
            h.state()
                .starts_with("degraded: 2/3 bricks running (down: 10.0.0.3:")
        );
        // With c already down, a second node down costs the quorum (2 of 3); c itself not.
        assert!(!h.keeps_quorum_without(&node("a", "10.0.0.1")));
        assert!(h.keeps_quorum_without(&node("c", "10.0.0.3")));

        let all: Vec<String> = bricks.iter().map(|b| b.to_string()).collect();
        let healed = vec![heal(bricks[0], Some(0), Some(0)); 3];
        let h = VolumeHealth::of(&v, &all, Some(healed));
        assert!(h.whole() && h.keeps_quorum_without(&node("a", "10.0.0.1")));
        assert_eq!(h.state(), "whole");
        let split = vec![heal(bricks[0], Some(0), Some(1))];
        let h = VolumeHealth::of(&v, &all, Some(split));
        assert!(
            !h.whole()
                && h.state()
                    .starts_with("split-brain: 1 entries in split-brain")
        );
        let pending = vec![heal(bricks[0], Some(4), Some(0))];
        let h = VolumeHealth::of(&v, &all, Some(pending));
        assert_eq!(h.state(), "healing: 4 entries waiting to be healed");
        // No heal summary: copies that may differ are not whole; a plain volume is.
        let h = VolumeHealth::of(&v, &all, None);
        assert!(!h.whole() && h.state() == "cannot tell: gluster gave no heal summary");
        let plain = volume("Distribute", 0, &bricks[..1]);
        assert!(VolumeHealth::of(&plain, &all, None).whole());
    }

    #[test]
    fn quorum_by_kind() {
        let three = ["h1:/a", "h2:/a", "h3:/a"];
        assert_eq!(quorum(&volume("Replicate", 3, &three)), 2);
        assert_eq!(quorum(&volume("Replicate", 2, &three[..2])), 2);
        assert_eq!(quorum(&volume("Distribute", 0, &three[..1])), 1);
        let mut disperse = volume("Disperse", 0, &three);
        (disperse.disperse_count, disperse.redundancy_count) = (3, 1);
        assert_eq!(quorum(&disperse), 2);
    }
}
