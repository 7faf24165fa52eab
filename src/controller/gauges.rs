//! The pool gauges: GIDs per class, volumes per cluster, brick capacity, bricks left on
//! draining nodes.

use std::collections::HashSet;
use std::sync::Arc;

use kube::ResourceExt;

use super::Context;
use crate::config::{ClassParams, Cluster};
use crate::gluster::xml::Volume;
use crate::identity::Identity;
use crate::k8s::objects;

/// Keeps the pool gauges (GIDs per class, volumes per cluster, brick capacity) current. Runs
/// on its own, so slow or unreachable nodes never hold up provisioning.
pub(super) async fn refresh_gauges(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.settings.gauge_interval);
    // Classes reported last time: a deleted class's series go, so they do not pile up.
    let mut reported = HashSet::new();
    // Likewise the `(cluster, node)` of nodes gone from the topology.
    let mut nodes_reported = HashSet::new();
    loop {
        tick.tick().await;
        // Right after the caches are filled, then now and then: see `memory::release_free`.
        crate::memory::release_free();
        let m = &ctx.metrics;
        let ours: Vec<_> = ctx
            .volumes
            .state()
            .into_iter()
            .filter(|pv| ctx.is_ours(pv))
            .collect();
        let gids: Vec<u32> = ours
            .iter()
            .filter_map(|pv| pv.annotation(objects::ANN_GID)?.parse().ok())
            .collect();
        let mut current = HashSet::new();
        for class in ctx
            .classes
            .state()
            .iter()
            .filter(|c| ctx.settings.serves(&c.provisioner))
        {
            let name = class.name_any();
            current.insert(name.clone());
            let Ok(params) = ClassParams::parse(&class.parameters.clone().unwrap_or_default())
            else {
                continue;
            };
            let in_use = ours
                .iter()
                .filter(|pv| pv.spec.storage_class_name.as_deref() == Some(&name))
                .count();
            let taken = gids
                .iter()
                .filter(|g| (params.gid_min..=params.gid_max).contains(*g))
                .count();
            let size = u64::from(params.gid_max - params.gid_min) + 1;
            m.gids_in_use.with_label_values(&[&name]).set(in_use as i64);
            m.gids_free
                .with_label_values(&[&name])
                .set(size.saturating_sub(taken as u64) as i64);
        }
        for gone in reported.difference(&current) {
            m.gids_in_use.remove_label_values(&[gone]).ok();
            m.gids_free.remove_label_values(&[gone]).ok();
        }
        reported = current;
        let Some(ssh) = &ctx.ssh else { continue };
        let topology = ssh.topology();
        let mut nodes_now = HashSet::new();
        for cluster in &topology.clusters {
            let count = ours
                .iter()
                .filter(|pv| pv.annotation(objects::ANN_CLUSTER) == Some(&cluster.name))
                .count();
            m.volumes
                .with_label_values(&[&cluster.name])
                .set(count as i64);
            let (capacity, _) = ssh.capacity(cluster).await;
            for node in capacity {
                for space in node.roots {
                    let root = space.root.path.display().to_string();
                    let labels = [node.node.name.as_str(), root.as_str()];
                    m.brick_bytes
                        .with_label_values(&labels)
                        .set(space.total as f64);
                    m.brick_free_bytes
                        .with_label_values(&labels)
                        .set(space.free as f64);
                }
            }
            // A reading that failed leaves the last values.
            let to_move = match cluster.nodes.iter().any(|n| !n.takes_bricks()) {
                false => Some(bricks_to_move(cluster, &[], "")),
                true => match ssh.volumes(cluster).await {
                    Ok(volumes) => {
                        let kube_cluster = &ctx.settings.kube_cluster;
                        Some(bricks_to_move(cluster, &volumes, kube_cluster))
                    }
                    Err(e) => {
                        let cluster = &cluster.name;
                        tracing::debug!(cluster, error = %e, "bricks to move not counted");
                        None
                    }
                },
            };
            for (node, count) in to_move.into_iter().flatten() {
                let labels = [cluster.name.as_str(), node];
                m.bricks_to_move
                    .with_label_values(&labels)
                    .set(count as i64);
            }
            let nodes = cluster.nodes.iter();
            nodes_now.extend(nodes.map(|n| (cluster.name.clone(), n.name.clone())));
        }
        for (cluster, node) in nodes_reported.difference(&nodes_now) {
            m.bricks_to_move.remove_label_values(&[cluster, node]).ok();
        }
        nodes_reported = nodes_now;
    }
}

/// How many bricks of the volumes of this Kubernetes cluster (`kube_cluster`, by their
/// identity) each node of `cluster` holds while it is draining: what `evacuate` has left to
/// move; 0 for the other nodes. A brick is on the node gluster names by its address.
fn bricks_to_move<'c>(
    cluster: &'c Cluster,
    volumes: &[Volume],
    kube_cluster: &str,
) -> Vec<(&'c str, usize)> {
    let ours = volumes.iter().filter(|v| {
        let identity = Identity::of(v);
        matches!(identity, Ok(Some(i)) if i.kube_cluster == kube_cluster)
    });
    let hosts: Vec<&str> = ours
        .flat_map(|v| v.bricks().map(|(host, _)| host))
        .collect();
    cluster
        .nodes
        .iter()
        .map(|node| {
            let address = node.storage_address.to_string();
            let on = |host: &&&str| **host == address || **host == node.ssh_address;
            let count = match node.takes_bricks() {
                true => 0,
                false => hosts.iter().filter(on).count(),
            };
            (node.name.as_str(), count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Policy;

    fn cluster() -> Cluster {
        serde_json::from_value(serde_json::json!({"name": "c", "nodes": [
            {"name": "n1", "ssh_address": "10.0.0.1", "storage_address": "10.0.0.1",
             "brick_roots": ["/b"], "state": "draining"},
            {"name": "n2", "ssh_address": "10.0.0.2", "storage_address": "10.0.0.2",
             "brick_roots": ["/b"]},
            {"name": "n3", "ssh_address": "gl3.example", "storage_address": "10.0.0.3",
             "brick_roots": ["/b"], "state": "draining"},
        ]}))
        .unwrap()
    }

    /// A volume of bricks on `hosts`, made by the provisioner of Kubernetes cluster `by` (none:
    /// by hand).
    fn volume(by: Option<&str>, hosts: &[&str]) -> Volume {
        let identity = by.map(|kube_cluster| Identity {
            kube_cluster: kube_cluster.into(),
            claim_uid: "u".into(),
            pv: "pvc-u".into(),
            policy: Policy::Delete,
            provisioner: "p".into(),
        });
        let options = identity.map(|i| i.options()).unwrap_or_default();
        let bricks: Vec<(String, bool)> = hosts
            .iter()
            .map(|h| (format!("{h}:/b/vol_x/brick"), false))
            .collect();
        Volume::example(&bricks, options)
    }

    #[test]
    fn only_our_bricks_on_draining_nodes_are_left_to_move() {
        let cluster = cluster();
        let volumes = [
            volume(Some("k"), &["10.0.0.1", "10.0.0.2", "gl3.example"]),
            volume(Some("k"), &["10.0.0.1", "10.0.0.2"]),
            volume(Some("other"), &["10.0.0.1", "10.0.0.2"]),
            volume(None, &["10.0.0.1", "10.0.0.3"]),
        ];
        assert_eq!(
            bricks_to_move(&cluster, &volumes, "k"),
            [("n1", 2), ("n2", 0), ("n3", 1)]
        );
        let active: Cluster = Cluster {
            nodes: cluster
                .nodes
                .iter()
                .map(|n| crate::config::Node {
                    state: Default::default(),
                    ..n.clone()
                })
                .collect(),
            ..cluster
        };
        assert_eq!(
            bricks_to_move(&active, &volumes, "k"),
            [("n1", 0), ("n2", 0), ("n3", 0)]
        );
    }
}
