//! The `topology` command's check: one row per node (SSH and host key, glusterd and its
//! peers, brick roots and their space, the tools image bricks and clones need) and a line per
//! cluster on its zones.

use serde::Serialize;

use crate::config::Topology;
use crate::gluster::SshBackend;
use crate::report::{Outcome, Printer};

/// A node's row of the report.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRow<'a> {
    cluster: &'a str,
    node: &'a str,
    ssh_address: &'a str,
    zone: &'a str,
    /// Peers connected, of those glusterd knows; none when it did not answer.
    peers_connected: Option<usize>,
    peers: Option<usize>,
    /// Each root with its space; none when the space could not be read (see `problems`).
    brick_roots: Option<Vec<RootRow>>,
    /// Empty on a node without problems.
    problems: Vec<String>,
    ok: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RootRow {
    path: String,
    size_limit: &'static str,
    free_bytes: u64,
    size_bytes: u64,
}

/// A cluster's zones and brick processes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRow<'a> {
    name: &'a str,
    nodes: usize,
    zones: usize,
    /// What the pool does with brick processes, as the table says it.
    brick_multiplexing: String,
    ok: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    nodes: usize,
    /// Nodes with problems, and clusters whose brick processes are not sound.
    problems: usize,
}

#[derive(Serialize)]
struct Document<'a> {
    nodes: Vec<NodeRow<'a>>,
    clusters: Vec<ClusterRow<'a>>,
    summary: Summary,
}

/// Prints the report; [`Outcome::Problems`] when any node (or a cluster's brick processes) has
/// a problem.
pub async fn report(backend: &SshBackend, topology: &Topology, out: Printer) -> Outcome {
    let mut problems = 0;
    let (mut nodes, mut clusters) = (Vec::new(), Vec::new());
    out.line(format_args!(
        "{:<10} {:<14} {:<16} {:<8} {:<12} {:<40} STATUS",
        "CLUSTER", "NODE", "SSH", "ZONE", "PEERS", "BRICK ROOTS (free / size)"
    ));
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
            let (peers_connected, peers) = match peers {
                Ok(peers) => {
                    let up = peers.iter().filter(|p| p.is_connected()).count();
                    if up + 1 < cluster.nodes.len() {
                        status.push(format!(
                            "{up} peers connected, the cluster has {} other nodes",
                            cluster.nodes.len() - 1
                        ));
                    }
                    (Some(up), Some(peers.len()))
                }
                Err(e) => {
                    status.push(e.to_string());
                    (None, None)
                }
            };
            let roots = match space {
                Ok(space) => space
                    .roots
                    .iter()
                    .map(|r| RootRow {
                        path: r.root.path.display().to_string(),
                        size_limit: r.root.size_limit.as_str(),
                        free_bytes: r.free,
                        size_bytes: r.total,
                    })
                    .collect::<Vec<_>>()
                    .into(),
                Err(e) => {
                    status.push(e.to_string());
                    None
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
            let row = NodeRow {
                cluster: &cluster.name,
                node: &node.name,
                ssh_address: &node.ssh_address,
                zone: &node.zone,
                peers_connected,
                peers,
                brick_roots: roots,
                ok: status.is_empty(),
                problems: status,
            };
            out.line(row.table_line());
            nodes.push(row);
        }
        let zones: std::collections::BTreeSet<_> = cluster.nodes.iter().map(|n| &n.zone).collect();
        let spread = if zones.len() > 1 {
            "replicas are spread over zones"
        } else {
            "one zone: replicas cannot be spread over zones"
        };
        out.line(format_args!(
            "cluster {}: {} nodes in {} zone(s); {spread}",
            cluster.name,
            cluster.nodes.len(),
            zones.len()
        ));
        let (line, ok) = multiplexing(backend, cluster).await;
        out.line(format_args!("cluster {}: {line}", cluster.name));
        problems += usize::from(!ok);
        clusters.push(ClusterRow {
            name: &cluster.name,
            nodes: cluster.nodes.len(),
            zones: zones.len(),
            brick_multiplexing: line,
            ok,
        });
    }
    let summary = Summary {
        nodes: nodes.len(),
        problems,
    };
    out.finish(
        "TopologyCheck",
        &Document {
            nodes,
            clusters,
            summary,
        },
    );
    Outcome::unless(problems, |n| {
        format!("{n} problem(s): nodes, or a cluster's brick processes")
    })
}

impl NodeRow<'_> {
    /// The row as the table prints it.
    fn table_line(&self) -> String {
        let peers = match (self.peers_connected, self.peers) {
            (Some(up), Some(all)) => format!("{up}/{all} up"),
            _ => "-".into(),
        };
        let roots = self.brick_roots.as_ref().map_or("-".to_string(), |roots| {
            let roots: Vec<String> = roots
                .iter()
                .map(|r| {
                    let (free, size) = (gib(r.free_bytes), gib(r.size_bytes));
                    format!("{} ({}) {free}/{size}", r.path, r.size_limit)
                })
                .collect();
            roots.join(", ")
        });
        let status = if self.ok {
            "ok".to_string()
        } else {
            self.problems.join("; ")
        };
        format!(
            "{:<10} {:<14} {:<16} {:<8} {:<12} {:<40} {status}",
            self.cluster, self.node, self.ssh_address, self.zone, peers, roots
        )
    }
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
