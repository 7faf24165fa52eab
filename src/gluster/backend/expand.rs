//! Growing a volume's enforced size.

use super::*;

impl SshBackend {
    /// Sets the size the volume enforces: each image brick grows, file and file system, while
    /// mounted; a volume with quota gets the new limit. What the volume has decides, not what
    /// its PV says nor what its roots would give a new volume.
    pub async fn resize(&self, cluster: &str, name: &str, size_gib: u64) -> Result<()> {
        let cluster = &self.cluster(Some(cluster))?;
        let Some((volume, bricks)) = self.checked_volume(cluster, name).await? else {
            return Err(Error::Gluster {
                command: format!("volume info {name}"),
                message: "no such volume to grow".into(),
            });
        };
        let bytes = image::image_bytes(size_gib, volume.data_bricks());
        let arbiter = image::arbiter_image_bytes(size_gib, volume.average_file_kib());
        let grown = self
            .on_bricks(bricks.iter(), |b| {
                (
                    "sh",
                    image::grow_args(b, if b.arbiter { arbiter } else { bytes }),
                )
            })
            .await?;
        let images = grown.iter().filter(|out| out.trim() == "grown").count();
        let quota = volume.option("features.quota") == Some("on");
        if quota {
            self.gluster(cluster, cli::quota_limit_args(name, size_gib))
                .await?;
        }
        if images == 0 && !quota {
            return Err(Error::NotOurs(format!(
                "volume {name} has neither image bricks nor a quota: nothing limits its size"
            )));
        }
        Ok(())
    }

    /// Raises the enforced size. Each brick root must have the room: free bytes, and beyond
    /// what its volumes (this one at its present size included) are promised. Growing by
    /// adding bricks is not done yet, so a root short of room is an error naming it.
    pub(super) async fn expand_volume(
        &self,
        volume: Recorded<'_>,
        from_gib: u64,
        to_gib: u64,
        promised: &[Promise],
    ) -> Result<()> {
        let (cluster, bricks) = self.recorded_bricks(volume)?;
        let nodes = &self.cluster(Some(cluster))?.nodes;
        let average_file_kib = volume.annotations.get(ANN_ARBITER);
        let average_file_kib = average_file_kib.and_then(|kib| kib.parse().ok());
        // An arbiter brick, the last recorded, grows by its rule.
        let more = |index: usize| match average_file_kib {
            Some(kib) if index + 1 == bricks.len() => place::arbiter_bytes(to_gib << 30, kib)
                .saturating_sub(place::arbiter_bytes(from_gib << 30, kib)),
            _ => to_gib.saturating_sub(from_gib) << 30,
        };
        let mut capacity = Vec::new();
        // Recorded bricks are checked against the topology, so their nodes are in it.
        for node in nodes
            .iter()
            .filter(|n| bricks.iter().any(|b| b.node == n.name))
        {
            capacity.push(self.node_space(node).await?);
        }
        place::count_promises(&mut capacity, promised);
        for (index, brick) in bricks.iter().enumerate() {
            let roots = capacity
                .iter()
                .filter(|c| c.node.name == brick.node)
                .flat_map(|c| &c.roots);
            let root = roots.clone().find(|r| brick.path.starts_with(&r.root));
            if let Some(root) = root.filter(|r| r.room() < more(index)) {
                return Err(Error::Placement(format!(
                    "cannot grow {} by {} GiB: brick root {}:{} has room for {} GiB (free, less \
                     what its volumes are promised)",
                    volume.volume,
                    to_gib - from_gib,
                    brick.node,
                    root.root.path.display(),
                    root.room() >> 30
                )));
            }
        }
        self.resize(cluster, volume.volume, to_gib).await
    }
}
