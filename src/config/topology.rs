//! The topology file: gluster clusters, their nodes, and how to reach them over SSH.
//!
//! ```json
//! {"ssh": {"user": "root", "port": 22, "private_key": "/etc/gluster-ssh/id_ed25519",
//!          "known_hosts": "/etc/gluster-ssh/known_hosts"},
//!  "clusters": [{"name": "main", "nodes": [{"name": "gluster1", "ssh_address": "10.0.0.11",
//!     "storage_address": "10.0.0.11", "zone": "a", "brick_roots": ["/srv/gluster/brick1",
//!     {"path": "/srv/gluster/brick2", "size_limit": "quota"}], "state": "active"}]}]}
//! ```
//!
//! A node's `state` is `active` (the default) or `draining`: a draining node gets no new
//! brick (no new volume, clone or evacuated brick is placed on it) while the bricks it has keep
//! working, until `evacuate` moves them away. The provisioner reads the file again when it
//! changes (every 10 s), apart from its `ssh` section, which takes a restart.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub ssh: SshSettings,
    pub clusters: Vec<Cluster>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub private_key: PathBuf,
    pub known_hosts: PathBuf,
    /// Accepting unknown host keys is for first contact only; strict is the safe default.
    #[serde(default = "default_true")]
    pub strict_host_key_checking: bool,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Longest a remote command may run; gluster's own CLI timeout is 120 s.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_seconds: u64,
    /// Commands run at once over one connection: sshd refuses sessions past its
    /// `MaxSessions` (10 by default), so keep this below it.
    #[serde(
        default = "default_sessions_per_connection",
        alias = "sessions_per_node"
    )]
    pub sessions_per_connection: usize,
    /// Connections a node may have at once, for bursts whose commands wait long on glusterd.
    #[serde(default = "default_connections_per_node")]
    pub connections_per_node: usize,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// Host name or address sshd listens on.
    pub ssh_address: String,
    /// Address gluster peers and clients use; Endpoints need an IP.
    pub storage_address: IpAddr,
    #[serde(default)]
    pub zone: String,
    pub brick_roots: Vec<BrickRoot>,
    #[serde(default)]
    pub state: NodeState,
}

#[cfg(test)]
impl Node {
    /// An active node of `zone` at 10.0.0.`ip` (SSH and storage), with `roots`: the tests' node.
    pub fn example(name: &str, zone: &str, ip: u8, roots: Vec<BrickRoot>) -> Node {
        Node {
            name: name.into(),
            ssh_address: format!("10.0.0.{ip}"),
            storage_address: std::net::Ipv4Addr::new(10, 0, 0, ip).into(),
            zone: zone.into(),
            brick_roots: roots,
            state: NodeState::Active,
        }
    }
}

impl Node {
    /// Whether new bricks may be placed on it.
    pub fn takes_bricks(&self) -> bool {
        self.state == NodeState::Active
    }
}

/// Whether a node takes new bricks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeState {
    #[default]
    Active,
    /// Its bricks keep working, but no new one is placed on it: it is being emptied.
    Draining,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// By hand, for an error that names the field and the values it takes (serde's own names
/// neither).
impl<'de> Deserialize<'de> for NodeState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        match value.as_str() {
            "active" => Ok(NodeState::Active),
            "draining" => Ok(NodeState::Draining),
            other => Err(serde::de::Error::custom(format!(
                "node state {other:?}: expected \"active\" or \"draining\""
            ))),
        }
    }
}

/// A directory of a node that holds bricks, and how it holds each volume to its size.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "serde_json::Value")]
pub struct BrickRoot {
    pub path: PathBuf,
    pub size_limit: SizeLimit,
}

/// How a volume is kept to its size. Each kind is a way of laying out bricks; an LVM thin pool
/// (Heketi's layout, which also allows gluster snapshots) would be another.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SizeLimit {
    /// Each brick is an XFS file system of the volume's size, in a sparse image file beside
    /// the brick and loop-mounted on it: the brick itself refuses to grow, and gluster runs at
    /// its own speed. The default: gluster's quota costs two thirds of the write speed.
    #[default]
    Image,
    /// Gluster's quota on the volume: every write is accounted by the quota translator.
    Quota,
}

impl SizeLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            SizeLimit::Image => "image",
            SizeLimit::Quota => "quota",
        }
    }
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<Path> for BrickRoot {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A root that limits sizes the default way.
impl From<PathBuf> for BrickRoot {
    fn from(path: PathBuf) -> Self {
        BrickRoot {
            path,
            size_limit: SizeLimit::default(),
        }
    }
}

impl From<&str> for BrickRoot {
    fn from(path: &str) -> Self {
        PathBuf::from(path).into()
    }
}

/// A root is a path (sizes limited the default way) or `{"path": ..., "size_limit": ...}`.
impl TryFrom<serde_json::Value> for BrickRoot {
    type Error = String;

    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            path: PathBuf,
            #[serde(default)]
            size_limit: SizeLimit,
        }
        match value {
            serde_json::Value::String(path) => Ok(path.as_str().into()),
            object @ serde_json::Value::Object(_) => serde_json::from_value::<Full>(object)
                .map(|f| BrickRoot {
                    path: f.path,
                    size_limit: f.size_limit,
                })
                .map_err(|e| format!("brick root: {e}")),
            other => Err(format!(
                "brick root {other}: expected a path or {{\"path\": ..., \"size_limit\": \"image\" or \"quota\"}}"
            )),
        }
    }
}

/// Why an IPv6 storage address is refused, wherever one comes from.
pub const NO_IPV6: &str = "IPv6 storage addresses are not supported: the GlusterFS FUSE client \
     would need transport.address-family=inet6, which this provisioner does not set up";

fn default_user() -> String {
    "root".into()
}
fn default_port() -> u16 {
    22
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_command_timeout() -> u64 {
    150
}
fn default_sessions_per_connection() -> usize {
    6
}
fn default_connections_per_node() -> usize {
    4
}

impl SshSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_seconds)
    }
}

impl Topology {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|source| Error::TopologyRead {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The topology in `text`, read from `path`, once valid.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self> {
        let topology: Topology =
            serde_json::from_slice(text).map_err(|source| Error::TopologyParse {
                path: path.into(),
                source,
            })?;
        topology.validate()?;
        Ok(topology)
    }

    fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::TopologyInvalid(msg));
        if self.clusters.is_empty() {
            return invalid("no clusters".into());
        }
        let mut cluster_names = HashSet::new();
        let mut node_names = HashSet::new();
        for cluster in &self.clusters {
            if !cluster_names.insert(&cluster.name) {
                return invalid(format!("cluster {:?} appears twice", cluster.name));
            }
            if cluster.nodes.is_empty() {
                return invalid(format!("cluster {:?} has no nodes", cluster.name));
            }
            for node in &cluster.nodes {
                if !node_names.insert(&node.name) {
                    return invalid(format!("node {:?} appears twice", node.name));
                }
                if node.ssh_address.is_empty() || node.ssh_address.starts_with('-') {
                    return invalid(format!("node {:?}: bad ssh_address", node.name));
                }
                // The CSI node plugin could not mount from it: refused here, not at the first pod.
                if node.storage_address.is_ipv6() {
                    return invalid(format!(
                        "node {:?}: storage_address {}: {NO_IPV6}",
                        node.name, node.storage_address
                    ));
                }
                if node.brick_roots.is_empty() {
                    return invalid(format!("node {:?} has no brick_roots", node.name));
                }
                if let Some(root) = node.brick_roots.iter().find(|r| !is_safe_abs_path(&r.path)) {
                    return invalid(format!(
                        "node {:?}: brick root {} must be an absolute path of letters, digits, '/', '.', '_', '-'",
                        node.name,
                        root.path.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The named cluster, or the first one when no name is given.
    pub fn cluster(&self, name: Option<&str>) -> Option<&Cluster> {
        match name {
            Some(name) => self.clusters.iter().find(|c| c.name == name),
            None => self.clusters.first(),
        }
    }
}

fn is_safe_abs_path(path: &Path) -> bool {
    let Some(s) = path.to_str() else { return false };
    s.starts_with('/')
        && !s.split('/').any(|part| part == "..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Topology> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        std::fs::write(&path, json).unwrap();
        Topology::load(&path)
    }

    const GOOD: &str = r#"{"ssh": {"private_key": "/k", "known_hosts": "/h"},
        "clusters": [{"name": "c1", "nodes": [
          {"name": "n1", "ssh_address": "10.0.0.1", "storage_address": "10.0.0.1",
           "zone": "a", "brick_roots": ["/srv/b1"]}]}]}"#;

    #[test]
    fn loads_with_defaults() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.ssh.user, "root");
        assert_eq!(t.ssh.port, 22);
        assert!(t.ssh.strict_host_key_checking);
        assert_eq!(t.cluster(None).unwrap().name, "c1");
        assert_eq!(t.cluster(Some("c1")).unwrap().nodes.len(), 1);
        assert!(t.cluster(Some("other")).is_none());
    }

    #[test]
    fn a_root_says_how_it_limits_sizes() {
        let t = parse(&GOOD.replace(
            r#"["/srv/b1"]"#,
            r#"["/srv/b1", {"path": "/srv/b2", "size_limit": "quota"}, {"path": "/srv/b3"}]"#,
        ))
        .unwrap();
        let limits: Vec<_> = t.clusters[0].nodes[0]
            .brick_roots
            .iter()
            .map(|r| (r.path.to_str().unwrap(), r.size_limit))
            .collect();
        assert_eq!(
            limits,
            [
                ("/srv/b1", SizeLimit::Image),
                ("/srv/b2", SizeLimit::Quota),
                ("/srv/b3", SizeLimit::Image)
            ]
        );
    }

    #[test]
    fn a_node_is_active_unless_marked_draining() {
        let t = parse(GOOD).unwrap();
        let n1 = &t.clusters[0].nodes[0];
        assert_eq!(n1.state, NodeState::Active);
        assert!(n1.takes_bricks());
        let draining = r#""brick_roots": ["/srv/b1"], "state": "draining""#;
        let t = parse(&GOOD.replace(r#""brick_roots": ["/srv/b1"]"#, draining)).unwrap();
        let n1 = &t.clusters[0].nodes[0];
        assert_eq!(n1.state, NodeState::Draining);
        assert!(!n1.takes_bricks());
        for bad in [r#""retired""#, r#""Draining""#, "1", "null"] {
            let state = format!(r#""brick_roots": ["/srv/b1"], "state": {bad}"#);
            let err = parse(&GOOD.replace(r#""brick_roots": ["/srv/b1"]"#, &state))
                .unwrap_err()
                .to_string();
            assert!(err.contains("topology"), "{err}");
            if bad.starts_with('"') {
                let want = format!(r#"node state {bad}: expected "active" or "draining""#);
                assert!(err.contains(&want), "{err:?} should say {want:?}");
            }
        }
    }

    #[test]
    fn rejects_bad_files() {
        let cases = [
            (GOOD.replace("\"zone\"", "\"zonee\""), "unknown field"),
            (GOOD.replace("/srv/b1", "/srv/b1;rm -rf /"), "brick root"),
            (GOOD.replace("/srv/b1", "srv/b1"), "brick root"),
            (GOOD.replace("/srv/b1", "/srv/../etc"), "brick root"),
            (
                GOOD.replace(
                    r#""/srv/b1""#,
                    r#"{"path": "/srv/b1", "size_limit": "lvm"}"#,
                ),
                "unknown variant `lvm`, expected `image` or `quota`",
            ),
            (
                GOOD.replace(r#""/srv/b1""#, r#"{"path": "/srv/b1", "limit": "quota"}"#),
                "unknown field `limit`",
            ),
            (GOOD.replace(r#""/srv/b1""#, "7"), "expected a path or"),
            (
                GOOD.replace(
                    "\"storage_address\": \"10.0.0.1\"",
                    "\"storage_address\": \"gl1\"",
                ),
                "invalid IP",
            ),
            (
                GOOD.replace(
                    "\"storage_address\": \"10.0.0.1\"",
                    "\"storage_address\": \"fd00::1\"",
                ),
                "node \"n1\": storage_address fd00::1: IPv6 storage addresses are not supported",
            ),
        ];
        for (json, want) in &cases {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let err = parse(r#"{"ssh": {"private_key": "/k", "known_hosts": "/h"}, "clusters": []}"#)
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid topology: no clusters");
    }
}
