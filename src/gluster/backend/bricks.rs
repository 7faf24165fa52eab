//! Which bricks are ours: what a PV records and what gluster reports, checked against the
//! topology before anything is touched.

use super::*;

impl SshBackend {
    /// The cluster and checked bricks a PV records.
    pub(super) fn recorded_bricks<'r>(
        &self,
        volume: Recorded<'r>,
    ) -> Result<(&'r str, Vec<Brick>)> {
        let invalid = |message: String| Error::InvalidVolume {
            pv: volume.pv.to_string(),
            message,
        };
        if !naming::is_volume_name(volume.volume) {
            return Err(invalid(format!(
                "path {:?} is not a volume name this provisioner makes",
                volume.volume
            )));
        }
        let cluster = volume
            .annotations
            .get(ANN_CLUSTER)
            .ok_or_else(|| invalid(format!("no {ANN_CLUSTER} annotation")))?;
        let record = volume.annotations.get(ANN_BRICKS).map(String::as_str);
        let bricks = self.bricks_from_record(cluster, volume.volume, record.unwrap_or_default())?;
        Ok((cluster, bricks))
    }

    /// Brick records as stored on a PV, checked against the topology before anything is removed:
    /// the path must be `<a brick root of that node>/<volume>/brick`.
    pub fn bricks_from_record(
        &self,
        cluster: &str,
        volume: &str,
        record: &str,
    ) -> Result<Vec<Brick>> {
        let cluster = &self.cluster(Some(cluster))?;
        record
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (node, path) = r.split_once(':').unwrap_or((r, ""));
                let node = cluster
                    .nodes
                    .iter()
                    .find(|n| n.name == node)
                    .ok_or_else(|| {
                        Error::Placement(format!(
                            "brick {r:?}: node not in cluster {:?}",
                            cluster.name
                        ))
                    })?;
                self.checked_brick(node, volume, Path::new(path))
            })
            .collect()
    }

    pub(super) fn checked_brick(
        &self,
        node: &crate::config::Node,
        volume: &str,
        path: &Path,
    ) -> Result<Brick> {
        node.brick_roots
            .iter()
            .map(|root| Brick::new(node, root, volume))
            .find(|b| b.path == path)
            .ok_or_else(|| {
                Error::Placement(format!(
                    "brick {}:{} is not <brick root>/{volume}/brick of that node",
                    node.name,
                    path.display()
                ))
            })
    }

    /// Maps the bricks gluster reports (`address:/path`) back to topology nodes.
    pub(super) fn bricks_of(&self, cluster: &Cluster, volume: &Volume) -> Result<Vec<Brick>> {
        volume
            .bricks()
            .map(|(host, path)| {
                let node = cluster
                    .nodes
                    .iter()
                    .find(|n| n.storage_address.to_string() == host || n.ssh_address == host)
                    .ok_or_else(|| {
                        Error::Placement(format!(
                            "volume {} has a brick on {host}, not in the topology",
                            volume.name
                        ))
                    })?;
                let brick = self.checked_brick(node, &volume.name, Path::new(path))?;
                let arbiter = volume.is_arbiter(&format!("{host}:{path}"));
                Ok(Brick { arbiter, ..brick })
            })
            .collect()
    }
}
