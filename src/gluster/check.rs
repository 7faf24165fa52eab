//! The `topology` command's check: one row per node (its state, SSH and host key, whether it is
//! a peer of the pool and how to make it one, glusterd and its peers, brick roots and their
//! space, the tools image bricks and clones need) and a line per cluster on its zones.

use serde::Serialize;

use crate::config::{Cluster, Node};
use crate::gluster::SshBackend;
use crate::gluster::health::{self, Answer, NodeHealth};
use crate::report::{Outcome, Printer};

/// A node's row of the report.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRow<'a> {
    cluster: &'a str,
    node: &'a str,
    ssh_address: &'a str,
    zone: &'a str,
    /// `active` or `draining` (no new bricks).
    state: &'static str,
    /// Whether it is a peer of the pool, by most of the other nodes; none when nobody can tell.
    peer: Option<bool>,
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

/// Prints the report of the topology file as it is now; [`Outcome::Problems`] when any node (or
/// a cluster's brick processes) has a problem.
pub async fn report(backend: &SshBackend, out: Printer) -> Outcome {
    let topology = backend.topology();
    let mut problems = 0;
    let (mut nodes, mut clusters) = (Vec::new(), Vec::new());
    out.line(format_args!(
        "{:<10} {:<14} {:<16} {:<8} {:<9} {:<5} {:<12} {:<40} STATUS",
        "CLUSTER", "NODE", "SSH", "ZONE", "STATE", "PEER", "PEERS", "BRICK ROOTS (free / size)"
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
        let answers: Vec<Answer> = checks
            .iter()
            .map(|(_, peers, ..)| match peers {
                Ok(peers) => Answer::Peers(peers.clone()),
                Err(e) => Answer::Down(e.to_string()),
            })
            .collect();
        let pool = pool_lines(cluster, &answers, &health);
        for ((node, peers, space, images, clones), (peer, hint)) in checks.into_iter().zip(pool) {
            let mut status: Vec<String> = Vec::new();
            // Not in the pool: how to add it says all, the rest follows from it.
            let outside = hint.is_some();
            status.extend(hint);
            if let Some(h) = health.iter().find(|h| h.node == node.name)
                && !outside
            {
                status.extend(h.down.clone());
                // A minority's view: worth fixing, though the node still gets bricks.
                status.extend(h.disputed.as_ref().map(|d| format!("up, but {d}")));
            }
            let (peers_connected, peers) = match peers {
                Ok(peers) => {
                    let up = peers.iter().filter(|p| p.is_connected()).count();
                    if up + 1 < cluster.nodes.len() && !outside {
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
                state: node.state.as_str(),
                peer,
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

/// For each node of the cluster, from what each said of its peers: whether it is a peer of the
/// pool ([`health::membership`]) and, when it is not, how to add it: `gluster peer probe` of its
/// storage address on a node that is a peer (up, when one is).
fn pool_lines(
    cluster: &Cluster,
    answers: &[Answer],
    health: &[NodeHealth],
) -> Vec<(Option<bool>, Option<String>)> {
    let member = health::membership(cluster, answers);
    let up = |n: &Node| health.iter().any(|h| h.node == n.name && h.is_up());
    let nodes = || cluster.nodes.iter().zip(member.iter().copied());
    let peers = || nodes().filter(|(_, m)| *m == Some(true)).map(|(n, _)| n);
    let seed = peers().find(|n| up(n)).or_else(|| peers().next());
    // No node is in a pool: the first that answered starts one.
    let first = nodes().find(|(_, m)| m.is_some()).map(|(n, _)| n);
    nodes()
        .map(|(node, m)| {
            let hint = match (m, seed.or(first)) {
                (Some(false), Some(on)) if on.name == node.name => {
                    "no node of the cluster is a peer of a pool yet: on this one, run `gluster \
                     peer probe` with each other node's storage address"
                        .to_string()
                }
                (Some(false), Some(on)) => format!(
                    "not a peer of the pool: on {}, run `gluster peer probe {}`",
                    on.name, node.storage_address
                ),
                _ => return (m, None),
            };
            (m, Some(hint))
        })
        .collect()
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
        let peer = match self.peer {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        format!(
            "{:<10} {:<14} {:<16} {:<8} {:<9} {:<5} {:<12} {:<40} {status}",
            self.cluster, self.node, self.ssh_address, self.zone, self.state, peer, peers, roots
        )
    }
}

/// Most bricks a multiplexed GlusterFS 10 brick process holds well: at about 75 it runs out of
/// file descriptors (about 260 a brick, limit 20,000) and later bricks do not start.
const MUX_BRICKS_SAFE: u64 = 50;

/// What the pool does with brick processes, and whether that is sound.
async fn multiplexing(backend: &SshBackend, cluster: &Cluster) -> (String, bool) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gluster::xml::{Hostnames, Peer};

    fn cluster(n: u8) -> Cluster {
        let nodes: Vec<serde_json::Value> = (1..=n)
            .map(|i| {
                let ip = format!("10.0.0.{i}");
                serde_json::json!({"name": format!("n{i}"), "ssh_address": ip,
                    "storage_address": ip, "brick_roots": ["/b"]})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"name": "c", "nodes": nodes})).unwrap()
    }

    /// The answer of a node listing nodes `of` (10.0.0.N is node N), all connected.
    fn lists(of: &[u8]) -> Answer {
        let peer = |i: &u8| Peer {
            uuid: String::new(),
            hostname: format!("10.0.0.{i}"),
            hostnames: Hostnames::default(),
            connected: 1,
            state: "Peer in Cluster".into(),
        };
        Answer::Peers(of.iter().map(peer).collect())
    }

    fn lines(cluster: &Cluster, answers: &[Answer]) -> Vec<(Option<bool>, Option<String>)> {
        let health = health::judge(cluster, answers);
        pool_lines(cluster, answers, &health)
    }

    #[test]
    fn a_node_not_in_the_pool_is_told_how_to_join_it_from_one_that_is() {
        let cluster = cluster(4);
        // n4 was added to the topology; n1's glusterd is down.
        let answers = [
            Answer::Down("no route".into()),
            lists(&[1, 3]),
            lists(&[1, 2]),
            lists(&[]),
        ];
        let got = lines(&cluster, &answers);
        let peer: Vec<_> = got.iter().map(|(p, _)| *p).collect();
        assert_eq!(peer, [Some(true), Some(true), Some(true), Some(false)]);
        assert_eq!(
            got[3].1.as_deref(),
            Some("not a peer of the pool: on n2, run `gluster peer probe 10.0.0.4`"),
            "n1 is a peer, but down"
        );
        assert!(got[..3].iter().all(|(_, hint)| hint.is_none()));
        // Only one other node lists n4: not yet most of them.
        let answers = [
            lists(&[2, 3, 4]),
            lists(&[1, 3]),
            lists(&[1, 2]),
            lists(&[1]),
        ];
        let got = lines(&cluster, &answers);
        assert_eq!(got[3].0, Some(false));
        assert!(
            got[3]
                .1
                .as_ref()
                .unwrap()
                .ends_with("on n1, run `gluster peer probe 10.0.0.4`")
        );
    }

    #[test]
    fn with_no_pool_at_all_the_first_node_starts_one() {
        let cluster = cluster(3);
        let answers = [Answer::Down("no route".into()), lists(&[]), lists(&[])];
        let got = lines(&cluster, &answers);
        assert_eq!(got[0], (None, None), "nobody can tell");
        assert!(
            got[1]
                .1
                .as_ref()
                .unwrap()
                .starts_with("no node of the cluster is a peer")
        );
        assert_eq!(
            got[2].1.as_deref(),
            Some("not a peer of the pool: on n2, run `gluster peer probe 10.0.0.3`")
        );
    }
}
