//! Cloning: a volume's files copied into a new volume on a gluster node (`clone.sh`), so the
//! provisioner's pod needs neither FUSE nor privileges.

use super::*;
use crate::volumes::Fenced;

const SCRIPT: &str = include_str!("../clone.sh");

/// Set on a volume once its copy is whole (by `clone.sh`, before it lets the copy's lock go):
/// the copy is not made again, and no copy empties the volume any more.
pub const CLONE_DONE: &str = "user.glusterfs-provisioner.clone-done";

/// How often a running copy is asked how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Longest a copy may take: a volume of several TiB through gluster's client.
const COPY_LIMIT: Duration = Duration::from_secs(24 * 3600);

fn args<'a>(rest: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    ["-c", SCRIPT, "clone"]
        .into_iter()
        .chain(rest)
        .map(String::from)
        .collect()
}

/// `setsid -w sh -c SCRIPT clone copy ...`: the copy a process group of its own, which
/// `clone stop` ends whole, whatever became of the SSH session that started it.
fn copy_args(rest: [&str; 5]) -> Vec<String> {
    ["-w".to_string(), "sh".to_string()]
        .into_iter()
        .chain(args(["copy"].into_iter().chain(rest)))
        .collect()
}

/// A finished copy.
#[derive(Clone, Debug, PartialEq)]
pub struct Copied {
    /// The node it ran on.
    pub node: String,
    /// What the destination grew by.
    pub bytes: u64,
}

/// The node a copy into `dest` runs on: the same for every attempt while it is up, so a copy
/// left running by a provisioner that died is waited for there instead of running beside it.
fn copy_node<'c>(cluster: &'c Cluster, health: &[NodeHealth], dest: &str) -> Result<&'c Node> {
    let start = dest
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31) + usize::from(b));
    let n = cluster.nodes.len();
    (0..n)
        .map(|i| &cluster.nodes[(start + i) % n])
        .find(|node| health.iter().any(|h| h.node == node.name && h.is_up()))
        .ok_or_else(|| {
            Error::Placement(format!(
                "no node of cluster {:?} is up to copy on",
                cluster.name
            ))
        })
}

impl SshBackend {
    /// What the node lacks to copy a clone's files, as `missing TOOL (for clones)`.
    pub async fn clone_findings(&self, node: &Node) -> Result<Vec<String>> {
        let out = self
            .ssh
            .run_ok(&node.ssh_address, "sh", &args(["check"]))
            .await?;
        Ok(out
            .lines()
            .filter(|l| l.starts_with("missing "))
            .map(|l| format!("{l} (for clones)"))
            .collect())
    }

    /// The started volume `name`, its bricks where this provisioner puts them.
    async fn started_volume(&self, cluster: &Cluster, name: &str) -> Result<Volume> {
        match self.checked_volume(cluster, name).await? {
            Some((volume, _)) if volume.is_started() => Ok(volume),
            _ => Err(Error::Gluster {
                command: format!("volume info {name}"),
                message: "no such started volume to copy".into(),
            }),
        }
    }

    /// Whether the started volume `dest` is marked copied whole.
    pub async fn copied(&self, cluster: &str, dest: &str) -> Result<bool> {
        let cluster = &self.cluster(Some(cluster))?;
        let volume = self.started_volume(cluster, dest).await?;
        Ok(volume.option(CLONE_DONE).is_some())
    }

    /// Ends every copy into `dest` on every node of `cluster` (its whole process group), and
    /// removes its mounts, files and logs. A node that is down is left out (its copy is ended
    /// by the next copy into `dest` started there, or by this once it is up again).
    pub async fn end_copies(&self, cluster: &str, dest: &str) -> Result<()> {
        let cluster = &self.cluster(Some(cluster))?;
        let stop = args(["stop", dest]);
        let health = self.health(cluster).await;
        let down = |node: &Node| !health.iter().any(|h| h.node == node.name && h.is_up());
        let ends = cluster.nodes.iter().map(|node| async {
            match self.ssh.run_ok(&node.ssh_address, "sh", &stop).await {
                Err(e) if e.is_node_down() || down(node) => {
                    let (node, volume) = (&node.name, dest);
                    tracing::warn!(node, volume, error = %e, "cannot end a copy on a node down");
                    Ok(())
                }
                other => other.map(drop),
            }
        });
        join_all(ends).await.into_iter().collect()
    }

    /// Copies the files of volume `source` into volume `dest`, emptied first, on a node of
    /// `cluster`: both must be started volumes whose bricks are where this provisioner puts
    /// them. Files of the source's GID get `dest_gid`. Any earlier copy into `dest`, on any
    /// node, is ended first; `fence` is checked before that and before the copy, which the
    /// node refuses when `dest` is marked copied already. `progress` hears the bytes written
    /// so far every few seconds. A copy given up (it failed, or took longer than a day) is
    /// ended on its node.
    pub async fn copy_volume(
        &self,
        cluster_name: &str,
        source: &str,
        dest: &str,
        dest_gid: u32,
        fence: Fenced<'_>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Copied> {
        let cluster = &self.cluster(Some(cluster_name))?;
        let source_gid = self.started_volume(cluster, source).await?;
        let source_gid = source_gid
            .option("storage.owner-gid")
            .and_then(|g| g.parse().ok());
        self.started_volume(cluster, dest).await?;
        let gids = [source_gid.unwrap_or(dest_gid), dest_gid].map(|g| g.to_string());
        let node = copy_node(cluster, &self.health(cluster).await, dest)?;
        let server = node.storage_address.to_string();
        // A copy a provisioner left (it died, or another node was chosen then) writes no more.
        fence.check().await?;
        self.end_copies(cluster_name, dest).await?;
        fence.check().await?;
        let copy = copy_args([&server, source, dest, &gids[0], &gids[1]]);
        let ask = args(["progress", dest]);
        let run = self
            .ssh
            .run_ok_within(&node.ssh_address, "setsid", &copy, COPY_LIMIT);
        tokio::pin!(run);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        let out = loop {
            tokio::select! {
                out = &mut run => break out,
                _ = tick.tick() => {
                    let asked = self.ssh.run_ok(&node.ssh_address, "sh", &ask).await;
                    if let Some(bytes) = asked.ok().and_then(|o| o.trim().parse().ok()) {
                        progress(bytes);
                        crate::failpoint::crash_point("clone-copying");
                    }
                }
            }
        };
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // The provisioner's side gave up: the node's must too, or it would run on.
                let stop = args(["stop", dest]);
                if let Err(stop) = self.ssh.run_ok(&node.ssh_address, "sh", &stop).await {
                    let (node, volume) = (&node.name, dest);
                    tracing::warn!(node, volume, error = %stop, "cannot end a copy given up");
                }
                return Err(e);
            }
        };
        let bytes = out
            .lines()
            .find_map(|l| l.strip_prefix("copied "))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| Error::Gluster {
                command: format!("copy of {source} into {dest}"),
                message: format!("no byte count in its output {out:?}"),
            })?;
        Ok(Copied {
            node: node.name.clone(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attempt_copies_on_the_same_node_while_it_is_up() {
        let node = |name: &str, ip: u8| Node {
            name: name.into(),
            ssh_address: format!("10.0.0.{ip}"),
            storage_address: format!("10.0.0.{ip}").parse().unwrap(),
            zone: "z".into(),
            brick_roots: vec!["/b".into()],
            state: Default::default(),
        };
        let cluster = Cluster {
            name: "c".into(),
            nodes: vec![node("n1", 1), node("n2", 2), node("n3", 3)],
        };
        let up = |node: &str| NodeHealth {
            node: node.into(),
            down: None,
            disputed: None,
        };
        let all_up: Vec<NodeHealth> = ["n1", "n2", "n3"].map(up).to_vec();
        let first = copy_node(&cluster, &all_up, "vol_x").unwrap().name.clone();
        assert_eq!(copy_node(&cluster, &all_up, "vol_x").unwrap().name, first);
        let others: Vec<NodeHealth> = all_up.into_iter().filter(|h| h.node != first).collect();
        assert_ne!(copy_node(&cluster, &others, "vol_x").unwrap().name, first);
        assert!(copy_node(&cluster, &[], "vol_x").is_err());
    }

    #[test]
    fn a_copy_runs_in_a_session_of_its_own() {
        let a = copy_args(["10.0.0.1", "vol_a", "vol_b", "2000", "2001"]);
        assert_eq!(a[..3], ["-w", "sh", "-c"]);
        assert_eq!(
            &a[4..],
            [
                "clone", "copy", "10.0.0.1", "vol_a", "vol_b", "2000", "2001"
            ]
        );
    }

    /// Hostile names go through the script as they are: as one argument each, never as code.
    #[test]
    fn hostile_names_stay_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let witness = dir.path().join("ran");
        let w = witness.display();
        for name in [
            format!("x; touch {w}"),
            format!("$(touch {w})"),
            format!("`touch {w}`"),
            format!("x' ; touch {w}; '"),
            "../../etc".to_string(),
        ] {
            let out = std::process::Command::new("sh")
                .args(args(["progress", &name]))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "none\n", "{name}");
            assert!(!witness.exists(), "{name} ran as code");
        }
    }
}
