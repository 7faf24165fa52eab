//! Removing a volume: checked, stopped, deleted, and its bricks cleared.

use super::*;

impl SshBackend {
    /// Stops and deletes the volume (already gone counts as done) and removes its brick
    /// directories. When the volume still exists, its own brick list is used, and both it and
    /// its identity are checked before anything is stopped: see [`Self::checked_volume`] and
    /// [`Expected`].
    pub async fn remove(
        &self,
        cluster: &str,
        name: &str,
        bricks: &[Brick],
        owner: Expected<'_>,
    ) -> Result<()> {
        let cluster = &self.cluster(Some(cluster))?;
        let Some((volume, bricks_now)) = self.checked_volume(cluster, name).await? else {
            return self.remove_bricks(name, bricks).await;
        };
        owner.check(&volume)?;
        self.stop(cluster, name).await?;
        self.delete(cluster, name).await?;
        self.remove_bricks(name, &bricks_now).await
    }

    /// The volume `name` and its bricks (`None`: no such volume), once every one of them is
    /// `<brick root>/<name>/brick` of a topology node. A volume of that name with a brick
    /// anywhere else is not one this provisioner made (or was moved by hand): it is neither
    /// stopped nor deleted. The look-up and the stop are one after the other, never at once.
    pub(super) async fn checked_volume(
        &self,
        cluster: &Cluster,
        name: &str,
    ) -> Result<Option<(Volume, Vec<Brick>)>> {
        let Some(volume) = self.volume_info(cluster, name).await? else {
            return Ok(None);
        };
        match self.bricks_of(cluster, &volume) {
            Err(Error::Placement(why)) => Err(Error::NotOurs(why)),
            other => other.map(|bricks| Some((volume, bricks))),
        }
    }

    pub(super) async fn stop(&self, cluster: &Cluster, name: &str) -> Result<()> {
        let stop = cli::stop_args(name);
        self.gluster_tolerant(
            cluster,
            stop,
            &["is not in the started state", "does not exist"],
        )
        .await
    }

    pub(super) async fn delete(&self, cluster: &Cluster, name: &str) -> Result<()> {
        let delete = cli::delete_args(name);
        self.gluster_tolerant(cluster, delete, &["does not exist"])
            .await
    }

    /// Clears each brick: its image (unmounted, out of the fstab, removed) when it has one,
    /// then its directory, in one round trip. Either kind of brick is cleared the same way, so
    /// what a PV says of a brick's size limit decides nothing here.
    pub(super) async fn remove_bricks(&self, name: &str, bricks: &[Brick]) -> Result<()> {
        self.placing.lock().expect("placing lock").remove(name);
        self.on_bricks(bricks.iter(), |b| ("sh", image::remove_args(b)))
            .await
            .map(drop)
    }

    /// Brick directories are made before the volume, so any brick root of the cluster may
    /// hold one of the name; removing one that is not there is a no-op.
    pub(super) async fn abandon_volume(
        &self,
        name: &str,
        cluster: Option<&str>,
        owner: Expected<'_>,
    ) -> Result<()> {
        if !naming::is_volume_name(name) {
            return Err(Error::Placement(format!("{name:?} is not a volume name")));
        }
        let cluster = &self.cluster(cluster)?;
        let everywhere: Vec<Brick> = cluster
            .nodes
            .iter()
            .flat_map(|n| n.brick_roots.iter().map(move |r| Brick::new(n, r, name)))
            .collect();
        let volume = self.checked_volume(cluster, name).await?;
        let exists = volume.is_some();
        if let Some((volume, _)) = volume {
            owner.check(&volume)?;
            self.stop(cluster, name).await?;
            self.delete(cluster, name).await?;
        }
        self.remove_bricks(name, &everywhere).await?;
        tracing::info!(
            volume = name,
            exists,
            "what was made for a deleted claim is removed"
        );
        Ok(())
    }
}
