//! The `topology` command's check: one row per node (SSH and host key, glusterd and its
//! peers, brick roots and their space) and a line per cluster on its zones.

use crate::config::Topology;
use crate::gluster::SshBackend;

/// Prints the table; returns how many nodes have problems.
pub async fn report(backend: &SshBackend, topology: &Topology) -> usize {
    let mut problems = 0;
    println!(
        "{:<10} {:<14} {:<16} {:<8} {:<12} {:<40} STATUS",
        "CLUSTER", "NODE", "SSH", "ZONE", "PEERS", "BRICK ROOTS (free / size)"
    );
    for cluster in &topology.clusters {
        let backend = &backend;
        let checks = futures::future::join_all(cluster.nodes.iter().map(|node| async move {
            let (peers, space) = tokio::join!(backend.peers(node), backend.node_space(node));
            (node, peers, space)
        }))
        .await;
        let health = backend.health(cluster).await;
        for (node, peers, space) in checks {
            let mut status: Vec<String> = Vec::new();
            if let Some(h) = health.iter().find(|h| h.node == node.name) {
                status.extend(h.down.clone());
                // A minority's view: worth fixing, though the node still gets bricks.
                status.extend(h.disputed.as_ref().map(|d| format!("up, but {d}")));
            }
            let peers = match peers {
                Ok(peers) => {
                    let up = peers.iter().filter(|p| p.is_connected()).count();
                    if up + 1 < cluster.nodes.len() {
                        status.push(format!(
                            "{up} peers connected, the cluster has {} other nodes",
                            cluster.nodes.len() - 1
                        ));
                    }
                    format!("{up}/{} up", peers.len())
                }
                Err(e) => {
                    status.push(e.to_string());
                    "-".into()
                }
            };
            let roots = match space {
                Ok(space) => space
                    .roots
                    .iter()
                    .map(|r| format!("{} {}/{}", r.root.display(), gib(r.free), gib(r.total)))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => {
                    status.push(e.to_string());
                    "-".into()
                }
            };
            status.dedup();
            problems += usize::from(!status.is_empty());
            let status = if status.is_empty() {
                "ok".to_string()
            } else {
                status.join("; ")
            };
            println!(
                "{:<10} {:<14} {:<16} {:<8} {:<12} {:<40} {status}",
                cluster.name, node.name, node.ssh_address, node.zone, peers, roots
            );
        }
        let zones: std::collections::BTreeSet<_> = cluster.nodes.iter().map(|n| &n.zone).collect();
        let spread = if zones.len() > 1 {
            "replicas are spread over zones"
        } else {
            "one zone: replicas cannot be spread over zones"
        };
        println!(
            "cluster {}: {} nodes in {} zone(s); {spread}",
            cluster.name,
            cluster.nodes.len(),
            zones.len()
        );
    }
    problems
}

fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / f64::from(1 << 30))
}
