//! Moving a brick to another node, the gluster side of `evacuate`: the new brick laid out as
//! creation lays one out, then swapped in (`replace-brick`) or added as one more copy and the
//! old one taken out once the new one is healed.

use super::*;

/// Where a volume being moved records the brick it is taking out: a run killed between adding
/// the new copy and removing the old one reads it back.
pub const MOVING: &str = "user.glusterfs-provisioner.moving";

/// The value of [`MOVING`] once nothing is being moved (gluster cannot reset `user.` options
/// one by one).
pub const NOT_MOVING: &str = "-";

impl SshBackend {
    /// The room of the cluster's nodes that are up, with `promises` counted: what placement of
    /// a moved brick sees, as provisioning does.
    pub async fn room<'c>(
        &self,
        cluster: &'c Cluster,
        promises: &[Promise],
    ) -> Vec<NodeCapacity<'c>> {
        let (mut capacity, _) = self.capacity(cluster).await;
        let health = self.health(cluster).await;
        capacity.retain(|c| health.iter().any(|h| h.node == c.node.name && h.is_up()));
        place::count_promises(&mut capacity, promises);
        capacity
    }

    /// Whether the pool (by majority) has `node` up.
    pub async fn is_up(&self, cluster: &Cluster, node: &str) -> bool {
        let health = self.health(cluster).await;
        health.iter().any(|h| h.node == node && h.is_up())
    }

    /// Lays out `brick` (image of `image_bytes`, directory of the volume's `gid`).
    pub async fn prepare_brick(&self, brick: &Brick, image_bytes: u64, gid: u32) -> Result<()> {
        self.lay_bricks(std::slice::from_ref(brick), image_bytes, image_bytes, gid)
            .await
    }

    /// Swaps `old` (`host:/path`) for `new` at once.
    pub async fn replace_brick(
        &self,
        cluster: &Cluster,
        volume: &str,
        old: &str,
        new: &Brick,
    ) -> Result<()> {
        let args = cli::replace_brick_args(volume, old, new);
        self.gluster(cluster, args).await.map(drop)
    }

    /// Adds `new` as one more copy, recording `old` as the brick it is to replace.
    pub async fn add_replica(
        &self,
        cluster: &Cluster,
        volume: &Volume,
        old: &str,
        new: &Brick,
    ) -> Result<()> {
        let name = &volume.name;
        let moving = [(MOVING.to_string(), old.to_string())];
        self.gluster(cluster, cli::set_args(name, &moving)).await?;
        let add = cli::add_replica_args(name, volume.replica_count, new);
        let Err(e) = self.gluster(cluster, add).await else {
            return Ok(());
        };
        // A commit that failed on one peer (or an answer lost) may still have added the
        // brick: what gluster lists now decides.
        let now = self.volume_info(cluster, name).await?;
        let spec = new.spec();
        let added = now.is_some_and(|v| v.bricks().any(|(h, p)| format!("{h}:{p}") == spec));
        if added { Ok(()) } else { Err(e) }
    }

    /// Takes `old` out of a volume a copy was added to, and forgets the move.
    pub async fn remove_replica(
        &self,
        cluster: &Cluster,
        volume: &Volume,
        old: &str,
    ) -> Result<()> {
        let name = &volume.name;
        let remove = cli::remove_replica_args(name, volume.replica_count, old);
        self.gluster_tolerant(cluster, remove, &["does not exist"])
            .await?;
        let done = [(MOVING.to_string(), NOT_MOVING.to_string())];
        self.gluster(cluster, cli::set_args(name, &done))
            .await
            .map(drop)
    }

    /// Starts a full heal: a new copy starts empty, and the index lists only what changed.
    pub async fn heal_full(&self, cluster: &Cluster, volume: &str) -> Result<()> {
        let heal = cli::heal_full_args(volume);
        self.gluster(cluster, heal).await.map(drop)
    }

    /// How many entries the brick holds, gluster's own `.glusterfs` left out: a copy healed
    /// whole has as many as a good one.
    pub async fn brick_entries(&self, brick: &Brick) -> Result<u64> {
        const COUNT: &str = "find \"$1\" -path \"$1/.glusterfs\" -prune -o -print | wc -l";
        let args = vec![
            "-c".to_string(),
            COUNT.to_string(),
            "count".to_string(),
            path_arg(&brick.path),
        ];
        let out = self.ssh.run_ok(&brick.ssh_address, "sh", &args).await?;
        out.trim().parse().map_err(|_| Error::Gluster {
            command: format!("count entries of {}", brick.spec()),
            message: format!("unexpected output {out:?}"),
        })
    }

    /// Removes what `brick` was (its image, fstab line and directory) from its node.
    pub async fn clear_brick(&self, volume: &str, brick: &Brick) -> Result<()> {
        self.remove_bricks(volume, std::slice::from_ref(brick))
            .await
    }
}
