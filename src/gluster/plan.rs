//! Pure decisions about a volume, testable without nodes: its name, where its bricks go, and
//! the gluster CLI argument lists that make or remove it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::{BrickRoot, Cluster, Durability, Node, SizeLimit};
use crate::{Error, Result};

/// Gluster accepts longer names, but brick paths and client log file names embed the name.
const VOLUME_NAME_MAX: usize = 108;

/// The volume name for a claim. Derived from the claim's UID so a retry, or a restart after a
/// crash at any step, finds the volume it made before instead of making another.
pub fn volume_name(prefix: Option<&str>, namespace: &str, claim: &str, uid: &str) -> String {
    let suffix: String = uid.chars().filter(char::is_ascii_alphanumeric).collect();
    let Some(prefix) = prefix else {
        return format!("vol_{suffix}");
    };
    // Namespace and claim names are DNS names; '.' is not allowed in volume names.
    let clean = |s: &str| s.replace('.', "-");
    let budget = VOLUME_NAME_MAX - prefix.len() - suffix.len() - 3;
    let (mut ns, mut claim) = (clean(namespace), clean(claim));
    ns.truncate(budget / 2);
    claim.truncate(budget - ns.len());
    format!("{prefix}_{ns}_{claim}_{suffix}")
}

/// Whether `name` is what [`volume_name`] gives for the claim `uid`, whatever the prefix: a
/// PV's path is editable, and only the claim's own volume may be deleted through its PV.
pub fn derives_from(name: &str, uid: &str) -> bool {
    let suffix: String = uid.chars().filter(char::is_ascii_alphanumeric).collect();
    !suffix.is_empty()
        && is_volume_name(name)
        && name
            .strip_suffix(&suffix)
            .is_some_and(|head| head == "vol_" || head.ends_with('_'))
}

/// The claim UID (without dashes) a name as [`volume_name`] gives ends with, for any prefix.
pub fn uid_suffix(name: &str) -> Option<&str> {
    let suffix = name.rsplit('_').next()?;
    let hex = suffix.len() == 32 && suffix.chars().all(|c| c.is_ascii_hexdigit());
    (hex && is_volume_name(name) && name.len() > suffix.len()).then_some(suffix)
}

/// Names this provisioner made or accepts: gluster's own rule, kept to what is safe in a path.
pub fn is_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= VOLUME_NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// The volume a mount source's path names: gluster mounts `vol`, `/vol` and a subdirectory
/// `vol/sub` alike, so a PV naming any of them uses the volume.
pub fn volume_in_path(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    path.split('/').next().unwrap_or(path)
}

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

fn args<const N: usize>(words: [&str; N]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// `gluster volume create` for the bricks in placement order.
pub fn create_args(volume: &str, durability: Durability, bricks: &[Brick]) -> Vec<String> {
    let mut out = args(["volume", "create", volume]);
    match durability {
        Durability::None => {}
        Durability::Replicate(n) => out.extend(args(["replica", &n.to_string()])),
        // Gluster makes the last brick of each set of three the arbiter.
        Durability::Arbiter { .. } => out.extend(args(["replica", "3", "arbiter", "1"])),
        Durability::Disperse { data, redundancy } => out.extend(args([
            "disperse",
            &(data + redundancy).to_string(),
            "redundancy",
            &redundancy.to_string(),
        ])),
    }
    out.extend(bricks.iter().map(Brick::spec));
    out
}

/// The options a volume's way of keeping to its size needs, as `key value ...`.
pub fn limit_options(size_limit: SizeLimit, strict_quota: bool) -> &'static [&'static str] {
    match (size_limit, strict_quota) {
        // With its own file system full, a brick fails gluster's health check (a file it
        // writes on the brick every 30 s) and stops itself: every replica at once, as they
        // fill together. Gluster's reserve stays: writes are refused below 1% free (checked
        // every 5 s), which leaves the replication's own metadata room unless a writer fills
        // that 1% within the 5 s.
        (SizeLimit::Image, _) => &["storage.health-check-interval", "0"],
        // Usage re-read on every write: the limit holds exactly, at a third of the speed.
        (SizeLimit::Quota, true) => &["features.soft-timeout", "0", "features.hard-timeout", "0"],
        (SizeLimit::Quota, false) => &[],
    }
}

/// The `volume set` commands of a new volume: each option profile (`group NAME` in
/// `volumeoptions`, the files in gluster's `groups` directory) alone, as gluster takes no other
/// option with one; then one command for the group the volume root belongs to, the options of
/// its size limit ([`limit_options`]), the class's other options, which so win over a
/// profile's, and the volume's identity ([`crate::identity`]), recorded before it is started.
pub fn options_args(
    volume: &str,
    gid: u32,
    options: &[(String, String)],
    limit: &[&str],
    identity: &[(String, String)],
) -> Vec<Vec<String>> {
    let (profiles, plain): (Vec<_>, Vec<_>) = options.iter().partition(|(k, _)| k == "group");
    let mut out: Vec<Vec<String>> = profiles
        .into_iter()
        .map(|(_, name)| args(["volume", "set", volume, "group", name]))
        .collect();
    let mut set = args([
        "volume",
        "set",
        volume,
        "storage.owner-gid",
        &gid.to_string(),
    ]);
    set.extend(limit.iter().map(|w| w.to_string()));
    for (key, value) in plain.into_iter().chain(identity) {
        set.extend([key.clone(), value.clone()]);
    }
    out.push(set);
    out
}

/// One `volume set` of several options (an identity's, say).
pub fn set_args(volume: &str, options: &[(String, String)]) -> Vec<String> {
    let mut set = args(["volume", "set", volume]);
    for (key, value) in options {
        set.extend([key.clone(), value.clone()]);
    }
    set
}

/// An option of the whole pool (`cluster.brick-multiplex`, say).
pub fn pool_option_args(option: &str) -> Vec<String> {
    args(["volume", "get", "all", option])
}

pub fn list_args() -> Vec<String> {
    args(["volume", "list"])
}

pub fn info_args(volume: &str) -> Vec<String> {
    args(["volume", "info", volume])
}

pub fn status_args(volume: &str) -> Vec<String> {
    args(["volume", "status", volume])
}

/// `old` swapped for `new` at once: the volume holds one copy less until `new` is healed.
pub fn replace_brick_args(volume: &str, old: &str, new: &Brick) -> Vec<String> {
    let new = new.spec();
    args([
        "volume",
        "replace-brick",
        volume,
        old,
        &new,
        "commit",
        "force",
    ])
}

/// `new` added as one more replica of a single-subvolume replicate volume of `replica` copies.
pub fn add_replica_args(volume: &str, replica: u32, new: &Brick) -> Vec<String> {
    let (count, new) = ((replica + 1).to_string(), new.spec());
    args(["volume", "add-brick", volume, "replica", &count, &new])
}

/// `old` taken out of a volume of `replica` copies, leaving one fewer.
pub fn remove_replica_args(volume: &str, replica: u32, old: &str) -> Vec<String> {
    let count = (replica - 1).to_string();
    args([
        "volume",
        "remove-brick",
        volume,
        "replica",
        &count,
        old,
        "force",
    ])
}

/// Every file compared between the copies, not only those the index lists: a new replica
/// starts empty.
pub fn heal_full_args(volume: &str) -> Vec<String> {
    args(["volume", "heal", volume, "full"])
}

/// Counts only: `info` alone lists every entry, and runs as long as there are many.
pub fn heal_summary_args(volume: &str) -> Vec<String> {
    args(["volume", "heal", volume, "info", "summary"])
}

/// `force` also starts the bricks of a volume whose earlier start failed on some node, so a
/// retry completes a half-started volume instead of being told it is started.
pub fn start_args(volume: &str) -> Vec<String> {
    args(["volume", "start", volume, "force"])
}

pub fn stop_args(volume: &str) -> Vec<String> {
    args(["volume", "stop", volume, "force"])
}

pub fn delete_args(volume: &str) -> Vec<String> {
    args(["volume", "delete", volume])
}

pub fn quota_enable_args(volume: &str) -> Vec<String> {
    args(["volume", "quota", volume, "enable"])
}

/// Gluster's `GB` is 2^30 bytes, matching the GiB the claim was rounded up to.
pub fn quota_limit_args(volume: &str, size_gib: u64) -> Vec<String> {
    args([
        "volume",
        "quota",
        volume,
        "limit-usage",
        "/",
        &format!("{size_gib}GB"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::topology::NodeState;

    #[test]
    fn a_mount_path_names_its_volume_in_any_form() {
        for path in ["vol_x", "/vol_x", "vol_x/sub", "/vol_x/sub/deeper"] {
            assert_eq!(volume_in_path(path), "vol_x", "{path}");
        }
    }

    fn node(name: &str, zone: &str, ip: u8) -> Node {
        Node {
            name: name.into(),
            ssh_address: format!("10.0.0.{ip}"),
            storage_address: format!("10.0.0.{ip}").parse().unwrap(),
            zone: zone.into(),
            brick_roots: vec!["/b1".into(), "/b2".into()],
            state: NodeState::Active,
        }
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
    fn names_come_from_the_uid() {
        let uid = "0f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f";
        assert_eq!(
            volume_name(None, "ns", "data", uid),
            "vol_0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f"
        );
        let n = volume_name(Some("dept"), "my.ns", "data-web-0", uid);
        assert_eq!(n, "dept_my-ns_data-web-0_0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f");
        assert!(is_volume_name(&n));
        assert!(derives_from(&n, uid) && derives_from(&volume_name(None, "a", "b", uid), uid));
        let other = "1f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f";
        assert!(!derives_from(&n, other), "another claim's volume");
        assert!(!derives_from("gluster_shared_storage", uid));
        assert_eq!(uid_suffix(&n), Some("0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f"));
        assert_eq!(uid_suffix("gluster_shared_storage"), None);
        assert!(!derives_from(
            &format!("x{}", n.rsplit('_').next().unwrap()),
            uid
        ));
        let long = volume_name(Some("p"), &"n".repeat(63), &"c".repeat(253), uid);
        assert!(
            long.len() <= VOLUME_NAME_MAX && is_volume_name(&long),
            "{long}"
        );
        assert!(long.ends_with("_0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f"));
        for bad in ["", "a b", "a;b", "-x", "a/b", "a.b", &"x".repeat(200)] {
            assert!(!is_volume_name(bad), "{bad:?}");
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

    #[test]
    fn commands() {
        let nodes = [node("n1", "a", 1), node("n2", "b", 2), node("n3", "c", 3)];
        let bricks: Vec<Brick> = nodes
            .iter()
            .map(|n| Brick::new(n, &"/b1".into(), "v"))
            .collect();
        assert_eq!(
            create_args("v", Durability::Replicate(3), &bricks).join(" "),
            "volume create v replica 3 10.0.0.1:/b1/v/brick 10.0.0.2:/b1/v/brick 10.0.0.3:/b1/v/brick"
        );
        assert_eq!(
            create_args(
                "v",
                Durability::Disperse {
                    data: 2,
                    redundancy: 1
                },
                &bricks
            )
            .join(" "),
            "volume create v disperse 3 redundancy 1 10.0.0.1:/b1/v/brick 10.0.0.2:/b1/v/brick 10.0.0.3:/b1/v/brick"
        );
        assert_eq!(
            create_args("v", Durability::None, &bricks[..1]).join(" "),
            "volume create v 10.0.0.1:/b1/v/brick"
        );
        assert_eq!(
            quota_limit_args("v", 2).join(" "),
            "volume quota v limit-usage / 2GB"
        );
        let options = [
            ("group".to_string(), "metadata-cache".to_string()),
            ("performance.quick-read".to_string(), "off".to_string()),
            ("group".to_string(), "nl-cache".to_string()),
        ];
        let commands = |strict| -> Vec<String> {
            options_args(
                "v",
                2000,
                &options,
                limit_options(SizeLimit::Quota, strict),
                &[],
            )
            .iter()
            .map(|c| c.join(" "))
            .collect()
        };
        assert_eq!(
            commands(true),
            [
                "volume set v group metadata-cache",
                "volume set v group nl-cache",
                "volume set v storage.owner-gid 2000 features.soft-timeout 0 \
                 features.hard-timeout 0 performance.quick-read off",
            ]
        );
        assert_eq!(
            commands(false)[2],
            "volume set v storage.owner-gid 2000 performance.quick-read off"
        );
        assert_eq!(
            options_args("v", 2000, &[], limit_options(SizeLimit::Image, false), &[])[0].join(" "),
            "volume set v storage.owner-gid 2000 storage.health-check-interval 0"
        );
    }
}
