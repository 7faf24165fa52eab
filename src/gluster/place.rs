//! Where a volume's bricks go, testable without nodes: distinct nodes and zones, on each node
//! the brick root with the most room, counting what its volumes were promised.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::{BrickRoot, Cluster, Durability, Node, SizeLimit};
use crate::{Error, Result};

/// Addresses of the nodes holding `bricks`, for the Endpoints clients mount through.
pub fn storage_addresses(bricks: &[Brick]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = bricks.iter().map(|b| b.storage_address).collect();
    out.dedup();
    out
}

/// One brick: on which node, at which path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Brick {
    pub node: String,
    pub ssh_address: String,
    pub storage_address: IpAddr,
    /// The brick directory, `<brick root>/<volume>/brick`.
    pub path: PathBuf,
    /// How its brick root keeps it to the volume's size.
    pub size_limit: SizeLimit,
    /// An arbiter brick: names and metadata only ([`arbiter_bytes`]).
    pub arbiter: bool,
}

impl Brick {
    pub fn new(node: &Node, root: &BrickRoot, volume: &str) -> Self {
        Brick {
            node: node.name.clone(),
            ssh_address: node.ssh_address.clone(),
            storage_address: node.storage_address,
            path: root.path.join(volume).join("brick"),
            size_limit: root.size_limit,
            arbiter: false,
        }
    }

    /// The directory removed on delete: the volume's directory under the brick root.
    pub fn volume_dir(&self) -> &Path {
        self.path.parent().expect("brick paths have a parent")
    }

    /// `host:/path`, as gluster names bricks.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.storage_address, self.path.display())
    }
}

/// Space of one brick root, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RootSpace {
    pub root: BrickRoot,
    pub free: u64,
    pub total: u64,
    /// The enforced sizes of the volumes with a brick here: what they may still write.
    pub promised: u64,
}

impl RootSpace {
    /// What a new brick may count on: free bytes, but never more than the root holds beyond
    /// what its volumes were promised (they are mostly empty when a burst places bricks).
    pub fn room(&self) -> u64 {
        self.free.min(self.total.saturating_sub(self.promised))
    }
}

/// A volume's hold on its brick roots: its enforced size on each of its bricks.
#[derive(Clone, Debug, PartialEq)]
pub struct Promise {
    pub volume: String,
    /// `(node name, brick path)`.
    pub bricks: Vec<(String, PathBuf)>,
    pub bytes: u64,
    /// An arbiter volume's: what its last brick, the arbiter, holds instead.
    pub arbiter_bytes: Option<u64>,
}

impl Promise {
    /// What the brick at `index` holds.
    fn brick_bytes(&self, index: usize) -> u64 {
        match self.arbiter_bytes {
            Some(arbiter) if index + 1 == self.bricks.len() => arbiter,
            _ => self.bytes,
        }
    }
}

/// What an arbiter brick holds for a volume of `volume_bytes`: 4 KiB (an inode, its
/// extended attributes and its name) for each file the volume holds at `average_file_kib`,
/// Heketi's rule; at least 256 MiB, as XFS makes no smaller file system (with the image's log).
pub fn arbiter_bytes(volume_bytes: u64, average_file_kib: u32) -> u64 {
    const PER_FILE: u64 = 4 << 10;
    const MIN: u64 = 256 << 20;
    let files = volume_bytes.div_ceil(u64::from(average_file_kib.max(1)) << 10);
    (files * PER_FILE).max(MIN)
}

/// Counts each promise on the brick root its bricks are under.
pub fn count_promises<'p>(
    capacity: &mut [NodeCapacity<'_>],
    promises: impl IntoIterator<Item = &'p Promise>,
) {
    for promise in promises {
        for (index, (node, path)) in promise.bricks.iter().enumerate() {
            let mut roots = capacity
                .iter_mut()
                .filter(|c| c.node.name == *node)
                .flat_map(|c| c.roots.iter_mut());
            if let Some(root) = roots.find(|r| path.starts_with(&r.root.path)) {
                root.promised += promise.brick_bytes(index);
            }
        }
    }
}

/// What a node offers for placement: the space of each brick root.
#[derive(Clone, Debug)]
pub struct NodeCapacity<'a> {
    pub node: &'a Node,
    pub roots: Vec<RootSpace>,
}

impl NodeCapacity<'_> {
    fn best_root(&self, size_limit: SizeLimit) -> Option<&RootSpace> {
        self.roots
            .iter()
            .filter(|r| r.root.size_limit == size_limit)
            .max_by_key(|r| r.room())
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1 << 30))
}

/// What a volume needs of its bricks.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub durability: Durability,
    pub bytes: u64,
    /// Every brick of a volume is kept to its size the same way.
    pub size_limit: SizeLimit,
}

impl Need {
    /// What its arbiter brick holds, for an arbiter volume.
    pub fn arbiter_bytes(&self) -> Option<u64> {
        match self.durability {
            Durability::Arbiter { average_file_kib } => {
                Some(arbiter_bytes(self.bytes, average_file_kib))
            }
            _ => None,
        }
    }
}

/// How a cluster's volumes are kept to their size when the class does not say: by their bricks
/// when any root can, else by gluster's quota.
pub fn default_size_limit(cluster: &Cluster) -> SizeLimit {
    let roots = cluster.nodes.iter().flat_map(|n| &n.brick_roots);
    if roots.clone().any(|r| r.size_limit == SizeLimit::Image) {
        SizeLimit::Image
    } else {
        SizeLimit::Quota
    }
}

/// Chooses one brick per node for `durability`: distinct nodes always, distinct zones whenever
/// the nodes allow, and on each node the brick root of the size limit with the most room. An
/// arbiter brick goes last, on another node, in a zone the data bricks are not in if there is one.
/// Draining nodes get none.
pub fn place_bricks(
    cluster: &Cluster,
    capacity: &[NodeCapacity<'_>],
    need: Need,
    volume: &str,
) -> Result<Vec<Brick>> {
    let Need {
        durability,
        bytes: size_bytes,
        size_limit,
    } = need;
    // Most room first; the node name breaks ties so placement is deterministic.
    let fitting = |bytes: u64| {
        let mut out: Vec<(&NodeCapacity, &RootSpace)> = capacity
            .iter()
            .filter(|c| c.node.takes_bricks())
            .filter_map(|c| c.best_root(size_limit).map(|root| (c, root)))
            .filter(|(_, root)| root.room() >= bytes)
            .collect();
        out.sort_by(|a, b| {
            b.1.room()
                .cmp(&a.1.room())
                .then(a.0.node.name.cmp(&b.0.node.name))
        });
        out
    };
    let short = |what: String, found: usize| {
        let rooms: Vec<String> = capacity
            .iter()
            .flat_map(|c| {
                c.roots.iter().map(move |r| {
                    let root = &r.root;
                    let (path, limit) = (root.path.display(), root.size_limit);
                    format!("{}:{path} ({limit}) {}", c.node.name, gib(r.room()))
                })
            })
            .collect();
        Error::Placement(format!(
            "volumetype {durability} needs {what}, in brick roots with size limit {size_limit}, \
             but cluster {:?} has {found} node(s) with the room ({}); room by brick root (free, \
             less what its volumes are promised): {}",
            cluster.name,
            node_count(cluster),
            if rooms.is_empty() {
                "none readable".into()
            } else {
                rooms.join(", ")
            }
        ))
    };
    let wanted = (durability.bricks() - durability.arbiters()) as usize;
    let mut candidates = fitting(size_bytes);
    if candidates.len() < wanted {
        let what = format!("{wanted} bricks of {} on distinct nodes", gib(size_bytes));
        return Err(short(what, candidates.len()));
    }
    let mut chosen: Vec<(&NodeCapacity, &RootSpace)> = Vec::with_capacity(wanted);
    let mut zones = HashSet::new();
    while chosen.len() < wanted {
        let pick = match candidates
            .iter()
            .position(|(c, _)| !zones.contains(&c.node.zone))
        {
            Some(i) => i,
            // Every zone left has a brick already: start another round over the zones.
            None => {
                zones.clear();
                0
            }
        };
        let (c, root) = candidates.remove(pick);
        zones.insert(&c.node.zone);
        chosen.push((c, root));
    }
    let mut bricks: Vec<Brick> = chosen
        .iter()
        .map(|(c, space)| Brick::new(c.node, &space.root, volume))
        .collect();
    if let Some(bytes) = need.arbiter_bytes() {
        let data_zones: HashSet<&String> = chosen.iter().map(|(c, _)| &c.node.zone).collect();
        let mut rest: Vec<_> = fitting(bytes)
            .into_iter()
            .filter(|(c, _)| !bricks.iter().any(|b| b.node == c.node.name))
            .collect();
        // A stable sort: most room still decides within each group.
        rest.sort_by_key(|(c, _)| data_zones.contains(&c.node.zone));
        let Some((c, space)) = rest.first() else {
            let what = format!(
                "{wanted} data bricks of {} and an arbiter brick of {} on a third node",
                gib(size_bytes),
                gib(bytes)
            );
            return Err(short(what, wanted));
        };
        bricks.push(Brick {
            arbiter: true,
            ..Brick::new(c.node, &space.root, volume)
        });
    }
    Ok(bricks)
}

/// "3 node(s) in the topology", and how many of them are draining.
pub fn node_count(cluster: &Cluster) -> String {
    let all = cluster.nodes.len();
    match cluster.nodes.iter().filter(|n| !n.takes_bricks()).count() {
        0 => format!("{all} node(s) in the topology"),
        draining => format!("{all} node(s) in the topology, {draining} of them draining"),
    }
}

/// A new place for `old`, a brick of a volume whose other bricks are `keep`, needing `bytes`
/// of room: by the rules of [`place_bricks`], on a node none of the volume's bricks is on (nor
/// `old`'s) and not draining, in a zone none of `keep` is in when there is one, on the brick
/// root of `old`'s size limit with the most room; an arbiter stays an arbiter.
pub fn replacement(
    capacity: &[NodeCapacity<'_>],
    keep: &[Brick],
    old: &Brick,
    bytes: u64,
    volume: &str,
) -> std::result::Result<Brick, String> {
    let taken = |c: &NodeCapacity| {
        let node = &c.node.name;
        !c.node.takes_bricks() || *node == old.node || keep.iter().any(|b| b.node == *node)
    };
    let zones: HashSet<&str> = capacity
        .iter()
        .filter(|c| keep.iter().any(|b| b.node == c.node.name))
        .map(|c| c.node.zone.as_str())
        .collect();
    let mut fitting: Vec<(&NodeCapacity, &RootSpace)> = capacity
        .iter()
        .filter(|c| !taken(c))
        .filter_map(|c| c.best_root(old.size_limit).map(|root| (c, root)))
        .filter(|(_, root)| root.room() >= bytes)
        .collect();
    // Zones of its own first, then most room; the node name breaks ties.
    fitting.sort_by(|a, b| {
        zones
            .contains(a.0.node.zone.as_str())
            .cmp(&zones.contains(b.0.node.zone.as_str()))
            .then(b.1.room().cmp(&a.1.room()))
            .then(a.0.node.name.cmp(&b.0.node.name))
    });
    let Some((c, space)) = fitting.first() else {
        let others: Vec<String> = capacity
            .iter()
            .filter(|c| !taken(c))
            .map(|c| {
                let room = c.best_root(old.size_limit).map_or(0, RootSpace::room);
                format!("{} {}", c.node.name, gib(room))
            })
            .collect();
        return Err(format!(
            "no node without a brick of {volume} has {} of room in a brick root with size limit \
             {} (nodes up, not draining, without one of its bricks: {})",
            gib(bytes),
            old.size_limit,
            if others.is_empty() {
                "none".into()
            } else {
                others.join(", ")
            }
        ));
    };
    Ok(Brick {
        arbiter: old.arbiter,
        ..Brick::new(c.node, &space.root, volume)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::topology::NodeState;
    use crate::gluster::cli::create_args;

    fn node(name: &str, zone: &str, ip: u8) -> Node {
        Node::example(name, zone, ip, vec!["/b1".into(), "/b2".into()])
    }

    fn capacity<'a>(nodes: &'a [Node], free: &[(u64, u64)]) -> Vec<NodeCapacity<'a>> {
        nodes
            .iter()
            .zip(free)
            .map(|(node, (b1, b2))| NodeCapacity {
                node,
                roots: [("/b1", b1), ("/b2", b2)]
                    .map(|(root, gib)| RootSpace {
                        root: BrickRoot::from(root),
                        free: gib << 30,
                        total: 10 << 30,
                        promised: 0,
                    })
                    .to_vec(),
            })
            .collect()
    }

    fn need(durability: Durability, bytes: u64) -> Need {
        Need {
            durability,
            bytes,
            size_limit: SizeLimit::Image,
        }
    }

    fn cluster(nodes: &[Node]) -> Cluster {
        Cluster {
            name: "c".into(),
            nodes: nodes.to_vec(),
        }
    }

    #[test]
    fn replicas_spread_over_zones_then_most_free_space() {
        let nodes = [
            node("n1", "a", 1),
            node("n2", "a", 2),
            node("n3", "b", 3),
            node("n4", "b", 4),
        ];
        // n2 has the most space overall, n4 the most in zone b, so those two come first.
        let cap = capacity(&nodes, &[(5, 6), (9, 1), (2, 2), (3, 8)]);
        let bricks = place_bricks(
            &cluster(&nodes),
            &cap,
            need(Durability::Replicate(3), 1 << 30),
            "v",
        )
        .unwrap();
        let got: Vec<_> = bricks
            .iter()
            .map(|b| (b.node.as_str(), b.path.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("n2", "/b1/v/brick"),
                ("n4", "/b2/v/brick"),
                ("n1", "/b2/v/brick")
            ]
        );
        assert_eq!(bricks[0].spec(), "10.0.0.2:/b1/v/brick");
        assert_eq!(bricks[0].volume_dir(), Path::new("/b1/v"));
    }

    const ARBITER: Durability = Durability::Arbiter {
        average_file_kib: 64,
    };

    #[test]
    fn an_arbiter_goes_to_a_third_node_in_another_zone_and_needs_little_room() {
        let nodes = [
            node("n1", "a", 1),
            node("n2", "a", 2),
            node("n3", "b", 3),
            node("n4", "c", 4),
        ];
        // n4 has too little room for data but enough for the arbiter, in a zone of its own.
        let cap = capacity(&nodes, &[(5, 5), (6, 6), (7, 7), (0, 1)]);
        let bricks = place_bricks(&cluster(&nodes), &cap, need(ARBITER, 4 << 30), "v").unwrap();
        let got: Vec<_> = bricks
            .iter()
            .map(|b| (b.node.as_str(), b.arbiter))
            .collect();
        assert_eq!(got, [("n3", false), ("n2", false), ("n4", true)]);
        assert_eq!(
            create_args("v", ARBITER, &bricks).join(" "),
            "volume create v replica 3 arbiter 1 10.0.0.3:/b2/v/brick 10.0.0.2:/b2/v/brick \
             10.0.0.4:/b2/v/brick"
        );
        // Two zones: the arbiter shares one, but never a node.
        let cap = capacity(&nodes[..3], &[(5, 5), (6, 6), (7, 7)]);
        let bricks = place_bricks(&cluster(&nodes[..3]), &cap, need(ARBITER, 4 << 30), "v");
        let nodes_used: HashSet<_> = bricks.unwrap().into_iter().map(|b| b.node).collect();
        assert_eq!(nodes_used.len(), 3);
        // Room for two data bricks, none for a third node's arbiter.
        let cap = capacity(&nodes[..3], &[(5, 5), (6, 6), (0, 0)]);
        let err = place_bricks(&cluster(&nodes[..3]), &cap, need(ARBITER, 4 << 30), "v")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("an arbiter brick of 0.2 GiB on a third node"),
            "{err}"
        );
    }

    #[test]
    fn an_arbiter_brick_holds_4_kib_a_file_and_at_least_256_mib() {
        assert_eq!(arbiter_bytes(1 << 30, 64), 256 << 20);
        assert_eq!(arbiter_bytes(100 << 30, 64), 6400 << 20);
        assert_eq!(arbiter_bytes(100 << 30, 4), 100 << 30);
        let nodes = [node("n1", "a", 1)];
        let mut cap = capacity(&nodes, &[(10, 10)]);
        let promise = Promise {
            volume: "v".into(),
            bricks: vec![
                ("n1".into(), "/b1/v/brick".into()),
                ("n1".into(), "/b2/v/brick".into()),
            ],
            bytes: 4 << 30,
            arbiter_bytes: Some(256 << 20),
        };
        count_promises(&mut cap, [&promise]);
        assert_eq!(cap[0].roots[0].promised, 4 << 30);
        assert_eq!(cap[0].roots[1].promised, 256 << 20);
    }

    #[test]
    fn promised_space_counts_though_the_volumes_are_empty() {
        let nodes = [node("n1", "a", 1), node("n2", "b", 2)];
        // Both roots look empty: 10 GiB free of 10.
        let mut cap = capacity(&nodes, &[(10, 10), (10, 10)]);
        let promise = |volume: &str, root: &str| Promise {
            volume: volume.into(),
            bricks: vec![
                ("n1".into(), format!("{root}/{volume}/brick").into()),
                ("n2".into(), format!("{root}/{volume}/brick").into()),
            ],
            bytes: 6 << 30,
            arbiter_bytes: None,
        };
        count_promises(&mut cap, &[promise("v1", "/b1"), promise("v2", "/b2")]);
        assert_eq!(cap[0].roots[0].promised, 6 << 30);
        assert_eq!(cap[0].roots[0].room(), 4 << 30);
        let err = place_bricks(
            &cluster(&nodes),
            &cap,
            need(Durability::Replicate(2), 6 << 30),
            "v3",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("n1:/b1 (image) 4.0 GiB, n1:/b2 (image) 4.0 GiB"),
            "{err}"
        );
        let fits = place_bricks(
            &cluster(&nodes),
            &cap,
            need(Durability::Replicate(2), 4 << 30),
            "v3",
        );
        assert_eq!(fits.unwrap().len(), 2);
    }

    #[test]
    fn every_brick_of_a_volume_is_limited_the_same_way() {
        let nodes = [node("n1", "a", 1), node("n2", "b", 2)];
        let mut cap = capacity(&nodes, &[(9, 1), (1, 9)]);
        // n2's roomier root limits sizes by quota.
        cap[1].roots[1].root.size_limit = SizeLimit::Quota;
        let bricks = place_bricks(
            &cluster(&nodes),
            &cap,
            need(Durability::Replicate(2), 1 << 30),
            "v",
        )
        .unwrap();
        let got: Vec<_> = bricks
            .iter()
            .map(|b| (b.path.to_str().unwrap(), b.size_limit))
            .collect();
        assert_eq!(
            got,
            [
                ("/b1/v/brick", SizeLimit::Image),
                ("/b1/v/brick", SizeLimit::Image)
            ]
        );
        let quota = Need {
            size_limit: SizeLimit::Quota,
            ..need(Durability::Replicate(2), 1 << 30)
        };
        let err = place_bricks(&cluster(&nodes), &cap, quota, "v")
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 1 node(s) with the room"), "{err}");
        let mut quota_cluster = cluster(&nodes);
        assert_eq!(default_size_limit(&quota_cluster), SizeLimit::Image);
        for root in quota_cluster
            .nodes
            .iter_mut()
            .flat_map(|n| &mut n.brick_roots)
        {
            root.size_limit = SizeLimit::Quota;
        }
        assert_eq!(default_size_limit(&quota_cluster), SizeLimit::Quota);
    }

    #[test]
    fn draining_nodes_get_no_new_brick() {
        let mut nodes = [
            node("n1", "a", 1),
            node("n2", "b", 2),
            node("n3", "c", 3),
            node("n4", "a", 4),
        ];
        // n1 has by far the most room, and its own zone would be taken first.
        nodes[0].state = NodeState::Draining;
        let cap = capacity(&nodes, &[(9, 9), (2, 2), (3, 3), (4, 4)]);
        let replica3 = need(Durability::Replicate(3), 1 << 30);
        let bricks = place_bricks(&cluster(&nodes), &cap, replica3, "v").unwrap();
        let on: Vec<&str> = bricks.iter().map(|b| b.node.as_str()).collect();
        assert_eq!(on, ["n4", "n3", "n2"]);
        let arbiter = place_bricks(&cluster(&nodes), &cap, need(ARBITER, 1 << 30), "v");
        assert!(arbiter.unwrap().iter().all(|b| b.node != "n1"));
        let err = place_bricks(
            &cluster(&nodes),
            &cap,
            need(Durability::Replicate(4), 1 << 30),
            "v",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "has 3 node(s) with the room (4 node(s) in the topology, 1 of them draining)"
            ),
            "{err}"
        );
        // Nor a moved one: n2's brick goes to n4, not the roomier n1.
        let keep = [Brick::new(&nodes[2], &"/b1".into(), "v")];
        let old = Brick::new(&nodes[1], &"/b1".into(), "v");
        let new = replacement(&cap, &keep, &old, 1 << 30, "v").unwrap();
        assert_eq!(new.node, "n4");
        nodes[3].state = NodeState::Draining;
        let cap = capacity(&nodes, &[(9, 9), (2, 2), (3, 3), (4, 4)]);
        let err = replacement(&cap, &keep, &old, 1 << 30, "v").unwrap_err();
        assert!(
            err.contains("(nodes up, not draining, without one of its bricks: none)"),
            "{err}"
        );
    }

    #[test]
    fn too_few_nodes_is_refused() {
        let nodes = [node("n1", "a", 1), node("n2", "b", 2), node("n3", "a", 3)];
        let cap = capacity(&nodes, &[(5, 5), (5, 5), (5, 5)]);
        let err = place_bricks(
            &cluster(&nodes),
            &cap,
            need(Durability::Replicate(4), 1 << 30),
            "v",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("replicate:4 needs 4 bricks of 1.0 GiB on distinct nodes, in brick roots with size limit image"),
            "{err}"
        );
        // A node whose roots are too small for the volume does not count.
        let cap = capacity(&nodes, &[(5, 5), (5, 5), (0, 0)]);
        assert!(
            place_bricks(
                &cluster(&nodes),
                &cap,
                need(Durability::Replicate(3), 1 << 30),
                "v"
            )
            .is_err()
        );
        let one =
            place_bricks(&cluster(&nodes), &cap, need(Durability::None, 1 << 30), "v").unwrap();
        assert_eq!(one.len(), 1);
    }
}
