//! What the brick roots hold: the free space placement and expansion read.

use super::*;

/// When the brick roots of a node were read, and what they had.
pub(super) type SpaceReading = (Instant, Vec<RootSpace>);

/// How long a reading of brick root space is used.
const SPACE_TTL: Duration = Duration::from_secs(2);

impl SshBackend {
    /// Free bytes of every brick root of every node, asked in parallel. Nodes that do not
    /// answer are left out, and listed with the reason.
    pub async fn capacity<'c>(
        &self,
        cluster: &'c Cluster,
    ) -> (Vec<NodeCapacity<'c>>, Vec<NodeHealth>) {
        let asks = cluster.nodes.iter().map(|node| self.node_space(node));
        let (mut out, mut left_out) = (Vec::new(), Vec::new());
        for (node, result) in cluster.nodes.iter().zip(join_all(asks).await) {
            match result {
                Ok(c) => out.push(c),
                Err(e) => {
                    tracing::warn!(node = node.name, error = %e, "node left out of placement");
                    let why = format!("brick roots not readable: {e}");
                    left_out.push(NodeHealth::left_out(&node.name, why));
                }
            }
        }
        (out, left_out)
    }

    /// Space of each brick root of `node`, at most [`SPACE_TTL`] old; an error when a root is
    /// missing. Callers arriving while the node is asked wait for that answer.
    pub async fn node_space<'n>(&self, node: &'n Node) -> Result<NodeCapacity<'n>> {
        let slot = self.space.of(&node.name);
        let mut last = slot.lock().await;
        // Of the roots the node has now: the topology file may have changed them.
        if let Some((at, roots)) = last.as_ref()
            && at.elapsed() < SPACE_TTL
            && roots.iter().map(|r| &r.root).eq(&node.brick_roots)
        {
            return Ok(NodeCapacity {
                node,
                roots: roots.clone(),
            });
        }
        let roots = self.read_space(node).await?;
        *last = Some((Instant::now(), roots.clone()));
        Ok(NodeCapacity { node, roots })
    }

    pub(super) async fn read_space(&self, node: &Node) -> Result<Vec<RootSpace>> {
        let mut args = words(&["-f", "-c", "%a %b %S"]);
        args.extend(node.brick_roots.iter().map(|r| path_arg(&r.path)));
        let out = self.ssh.run_ok(&node.ssh_address, "stat", &args).await?;
        let roots = node
            .brick_roots
            .iter()
            .zip(out.lines())
            .map(|(root, line)| {
                let n: Vec<u64> = line
                    .split_whitespace()
                    .map(|n| n.parse().unwrap_or(0))
                    .collect();
                let (avail, blocks, block_size) = (n.first(), n.get(1), n.get(2));
                let bytes = |b: Option<&u64>| b.unwrap_or(&0) * block_size.unwrap_or(&0);
                RootSpace {
                    root: root.clone(),
                    free: bytes(avail),
                    total: bytes(blocks),
                    promised: 0,
                }
            })
            .collect();
        Ok(roots)
    }
}
