//! The `topology` command's check: one row per node (SSH and host key, glusterd and its
//! peers, brick roots and their space, the tools image bricks and clones need) and a line per
//! cluster on its zones.

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
            let (peers, space, images, clones) = tokio::join!(
                backend.peers(node),
                backend.node_space(node),
                backend.image_findings(node),
                backend.clone_findings(node)
            );
            (node, peers, space, images, clones)
        }))
        .await;
        let health = backend.health(cluster).await;
        for (node, peers, space, images, clones) in checks {
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
                    .map(|r| {
                        let (path, limit) = (r.root.path.display(), r.root.size_limit);
                        format!("{path} ({limit}) {}/{}", gib(r.free), gib(r.total))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => {
                    status.push(e.to_string());
                    "-".into()
                }
            };
            match images {
                Ok(found) => status.extend(found),
                Err(e) => status.push(format!("image bricks not checked: {e}")),
            }
            match clones {
                Ok(found) => status.extend(found),
                Err(e) => status.push(format!("tools for clones not checked: {e}")),
            }
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
        let (line, ok) = multiplexing(backend, cluster).await;
        println!("cluster {}: {line}", cluster.name);
        problems += usize::from(!ok);
    }
    problems
}

/// Most bricks a multiplexed GlusterFS 10 brick process holds well: at about 75 it runs out of
/// file descriptors (about 260 a brick, limit 20,000) and later bricks do not start.
const MUX_BRICKS_SAFE: u64 = 50;

/// What the pool does with brick processes, and whether that is sound.
async fn multiplexing(backend: &SshBackend, cluster: &crate::config::Cluster) -> (String, bool) {
    let (mux, most) = tokio::join!(
        backend.pool_option(cluster, "cluster.brick-multiplex"),
        backend.pool_option(cluster, "cluster.max-bricks-per-process")
    );
    let mux = match mux {
        Ok(value) => value.unwrap_or_default(),
        Err(e) => return (format!("brick multiplexing not read: {e}"), false),
    };
    if !matches!(mux.as_str(), "on" | "enable" | "true" | "yes" | "1") {
        return (
            "brick multiplexing off: a brick process per brick (about 21 MiB each, 64 MiB a \
             replica-3 volume)"
                .into(),
            true,
        );
    }
    // 0 is no limit.
    let most: u64 = most
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if most == 0 || most > MUX_BRICKS_SAFE {
        let shown = if most == 0 {
            "no limit".into()
        } else {
            most.to_string()
        };
        return (
            format!(
                "brick multiplexing on with {shown} bricks a process: a brick process runs out \
                 of file descriptors at about 75 bricks, and later bricks do not start; set \
                 `gluster volume set all cluster.max-bricks-per-process {MUX_BRICKS_SAFE}`"
            ),
            false,
        );
    }
    (
        format!("brick multiplexing on, at most {most} bricks a process"),
        true,
    )
}

fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / f64::from(1 << 30))
}
