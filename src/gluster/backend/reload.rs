//! The topology file followed while the provisioner runs: a changed file is read again and,
//! once valid, replaces the topology whole. Work under way keeps the topology it started with
//! (it holds its own copy of its cluster).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::config::Topology;
use crate::config::topology::NodeState;
use crate::metrics::Metrics;

/// How often the file is looked at: kubelet updates a mounted ConfigMap within a minute or so
/// of its edit, so this adds little to that.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The topology a backend uses, shared with whatever swaps in a new one.
#[derive(Clone, Debug)]
pub struct LiveTopology(Arc<RwLock<Arc<Topology>>>);

impl LiveTopology {
    pub fn new(topology: Topology) -> Self {
        LiveTopology(Arc::new(RwLock::new(Arc::new(topology))))
    }

    /// The topology in use now.
    pub fn get(&self) -> Arc<Topology> {
        self.0.read().expect("topology lock").clone()
    }

    /// Takes `new`'s clusters, keeping the SSH settings in use: the executor's connections
    /// were made with them. What changed.
    fn swap(&self, new: Topology) -> Changes {
        let mut current = self.0.write().expect("topology lock");
        let changes = Changes::between(&current, &new);
        let ssh = current.ssh.clone();
        *current = Arc::new(Topology {
            ssh,
            clusters: new.clusters,
        });
        changes
    }
}

/// What a new topology changes, by node name (unique across the clusters).
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Nodes whose state changed, with the new one.
    pub state: Vec<(String, NodeState)>,
    /// Nodes whose cluster, addresses, zone or brick roots changed.
    pub changed: Vec<String>,
    /// The `ssh` section differs: it is not taken before a restart.
    pub ssh_ignored: bool,
}

impl Changes {
    fn between(old: &Topology, new: &Topology) -> Changes {
        let nodes = |t: &Topology| -> Vec<(String, crate::config::Node)> {
            t.clusters
                .iter()
                .flat_map(|c| c.nodes.iter().map(|n| (c.name.clone(), n.clone())))
                .collect()
        };
        let (before, after) = (nodes(old), nodes(new));
        let find = |list: &[(String, crate::config::Node)], name: &str| {
            list.iter().find(|(_, n)| n.name == name).cloned()
        };
        let mut changes = Changes {
            ssh_ignored: old.ssh != new.ssh,
            ..Changes::default()
        };
        for (cluster, node) in &after {
            let Some((was_in, was)) = find(&before, &node.name) else {
                changes.added.push(node.name.clone());
                continue;
            };
            if was.state != node.state {
                changes.state.push((node.name.clone(), node.state));
            }
            let same_but_state = crate::config::Node {
                state: node.state,
                ..was
            };
            if was_in != *cluster || same_but_state != *node {
                changes.changed.push(node.name.clone());
            }
        }
        let gone = before
            .iter()
            .filter(|(_, n)| find(&after, &n.name).is_none());
        changes.removed = gone.map(|(_, n)| n.name.clone()).collect();
        changes
    }

    fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// What one look at the file found.
#[derive(Debug, PartialEq)]
enum Looked {
    /// The file is as last read, or says what is in use already.
    Same,
    Applied(Changes),
    /// Why the file was not taken.
    Refused(String),
}

/// What a reload is told as: the note of an event on the topology's ConfigMap, `Ok` once
/// applied (every node and its state), `Err` with why it was refused.
pub type Told = Result<String, String>;

/// Reads the file now and then for a [`LiveTopology`].
struct Follower {
    live: LiveTopology,
    path: PathBuf,
    metrics: Arc<Metrics>,
    tell: Option<tokio::sync::mpsc::UnboundedSender<Told>>,
    /// What the last read gave (the bytes, or why there were none): the same again is not
    /// judged (nor warned about) again.
    last: Option<Result<Vec<u8>, String>>,
}

impl Follower {
    fn new(live: LiveTopology, path: PathBuf, metrics: Arc<Metrics>) -> Self {
        Follower {
            live,
            path,
            metrics,
            tell: None,
            last: None,
        }
    }

    /// Reads the file; when it changed, parses and checks it, and swaps it in when valid.
    /// Counted and logged here.
    fn look(&mut self) -> Looked {
        let read = std::fs::read(&self.path).map_err(|e| {
            crate::Error::TopologyRead {
                path: self.path.clone(),
                source: e,
            }
            .to_string()
        });
        if self.last.as_ref() == Some(&read) {
            return Looked::Same;
        }
        self.last = Some(read.clone());
        let parsed =
            read.and_then(|bytes| Topology::parse(&self.path, &bytes).map_err(|e| e.to_string()));
        let looked = match parsed {
            Ok(new) if *self.live.get() == new => Looked::Same,
            Ok(new) => Looked::Applied(self.live.swap(new)),
            Err(why) => Looked::Refused(why),
        };
        self.tell(&looked);
        looked
    }

    fn tell(&self, looked: &Looked) {
        let path = self.path.display().to_string();
        let result = match looked {
            Looked::Same => return,
            Looked::Refused(why) => {
                tracing::warn!(
                    path,
                    error = why,
                    "topology file refused: the one in use is kept"
                );
                self.told(Err(format!(
                    "topology file refused, the one in use is kept: {why}"
                )));
                "refused"
            }
            Looked::Applied(changes) => {
                if changes.ssh_ignored {
                    tracing::warn!(
                        path,
                        "the topology file's ssh section changed: it takes a restart, and the \
                         ssh settings in use are kept; its clusters are taken"
                    );
                }
                if !changes.is_empty() {
                    let state: Vec<String> = changes
                        .state
                        .iter()
                        .map(|(n, s)| format!("{n}: {s}"))
                        .collect();
                    tracing::info!(
                        path,
                        added = ?changes.added,
                        removed = ?changes.removed,
                        state = ?state,
                        changed = ?changes.changed,
                        "topology file applied"
                    );
                }
                for node in &changes.removed {
                    self.metrics.glusterd_up.remove_label_values(&[node]).ok();
                }
                start_series(&self.metrics, &self.live.get());
                self.told(Ok(applied_note(&self.live.get(), changes)));
                "applied"
            }
        };
        self.metrics
            .topology_reloads
            .with_label_values(&[result])
            .inc();
    }
}

impl Follower {
    fn told(&self, told: Told) {
        if let Some(tell) = &self.tell {
            tell.send(told).ok();
        }
    }
}

/// Every node of the topology applied, with its state, and what changed.
fn applied_note(topology: &Topology, changes: &Changes) -> String {
    let clusters: Vec<String> = topology
        .clusters
        .iter()
        .map(|c| {
            let nodes: Vec<String> = c
                .nodes
                .iter()
                .map(|n| format!("{} ({})", n.name, n.state))
                .collect();
            format!("cluster {}: {}", c.name, nodes.join(", "))
        })
        .collect();
    let mut note = format!("topology file applied: {}", clusters.join("; "));
    for (what, names) in [("added", &changes.added), ("removed", &changes.removed)] {
        if !names.is_empty() {
            note.push_str(&format!("; {what} {}", names.join(", ")));
        }
    }
    if changes.ssh_ignored {
        note.push_str("; the ssh section's change takes a restart");
    }
    note
}

/// Series that read 0 from the start, so a rate over them reads before the first event.
pub(super) fn start_series(metrics: &Metrics, topology: &Topology) {
    for cluster in &topology.clusters {
        metrics
            .clone_copied_bytes
            .with_label_values(&[&cluster.name]);
    }
}

/// Follows the topology file at `path` for `live`, for good: every [`EVERY`] it is read, and
/// a changed file that is valid replaces the topology in use; one that is not is refused with
/// a warning, and the topology in use is kept whole.
/// Each reload or refusal is also sent to `tell`, when given.
pub async fn follow(
    live: LiveTopology,
    path: PathBuf,
    metrics: Arc<Metrics>,
    tell: Option<tokio::sync::mpsc::UnboundedSender<Told>>,
) {
    for result in ["applied", "refused"] {
        metrics.topology_reloads.with_label_values(&[result]);
    }
    let mut follower = Follower::new(live, path, metrics);
    follower.tell = tell;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        follower.look();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"ssh": {"private_key": "/k", "known_hosts": "/h"},
        "clusters": [{"name": "c1", "nodes": [
          {"name": "n1", "ssh_address": "10.0.0.1", "storage_address": "10.0.0.1",
           "brick_roots": ["/b"]},
          {"name": "n2", "ssh_address": "10.0.0.2", "storage_address": "10.0.0.2",
           "brick_roots": ["/b"]}]}]}"#;

    const N3: &str = r#"{"name": "n3", "ssh_address": "10.0.0.3",
        "storage_address": "10.0.0.3", "brick_roots": ["/b"]}"#;

    /// A follower of a file holding `FILE`, which it has read.
    fn follower(dir: &tempfile::TempDir) -> Follower {
        let path = dir.path().join("topology.json");
        std::fs::write(&path, FILE).unwrap();
        let live = LiveTopology::new(Topology::load(&path).unwrap());
        let mut f = Follower::new(live, path, Arc::new(Metrics::new()));
        assert_eq!(
            f.look(),
            Looked::Same,
            "the file in use is not applied again"
        );
        f
    }

    fn write(f: &Follower, text: &str) {
        std::fs::write(&f.path, text).unwrap();
    }

    fn node_names(live: &LiveTopology) -> Vec<String> {
        let t = live.get();
        let nodes = t.clusters.iter().flat_map(|c| &c.nodes);
        nodes.map(|n| n.name.clone()).collect()
    }

    fn counted(f: &Follower, result: &str) -> u64 {
        f.metrics
            .topology_reloads
            .with_label_values(&[result])
            .get()
    }

    #[test]
    fn an_added_node_appears_and_a_removed_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = follower(&dir);
        let before = f.live.get();
        write(
            &f,
            &FILE.replace(r#"["/b"]}]}]}"#, &format!(r#"["/b"]}}, {N3}]}}]}}"#)),
        );
        let Looked::Applied(changes) = f.look() else {
            panic!("applied");
        };
        assert_eq!(changes.added, ["n3"]);
        assert!(changes.removed.is_empty() && !changes.ssh_ignored);
        assert_eq!(node_names(&f.live), ["n1", "n2", "n3"]);
        assert_eq!(before.clusters[0].nodes.len(), 2, "a holder keeps its own");
        assert_eq!(
            f.look(),
            Looked::Same,
            "the same bytes are not judged twice"
        );
        assert_eq!(counted(&f, "applied"), 1);

        write(
            &f,
            &FILE
                .replace("\"n1\"", "\"n0\"")
                .replace("10.0.0.1", "10.0.0.9"),
        );
        let Looked::Applied(changes) = f.look() else {
            panic!("applied");
        };
        assert_eq!(
            (changes.added, changes.removed),
            (vec!["n0".into()], vec!["n1".into(), "n3".into()])
        );
        assert_eq!(node_names(&f.live), ["n0", "n2"]);
    }

    #[test]
    fn a_state_change_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = follower(&dir);
        let draining = FILE.replacen(
            r#""brick_roots": ["/b"]}"#,
            r#""brick_roots": ["/b"], "state": "draining"}"#,
            1,
        );
        write(&f, &draining);
        let Looked::Applied(changes) = f.look() else {
            panic!("applied");
        };
        assert_eq!(changes.state, [("n1".to_string(), NodeState::Draining)]);
        assert!(changes.changed.is_empty(), "{changes:?}");
        assert!(!f.live.get().clusters[0].nodes[0].takes_bricks());
    }

    #[test]
    fn an_invalid_file_is_refused_whole_and_the_old_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = follower(&dir);
        // Valid JSON, one node added, but a state it does not know: nothing of it is taken.
        let bad = FILE.replace(
            r#"["/b"]}]}]}"#,
            &format!(r#"["/b"], "state": "gone"}}, {N3}]}}]}}"#),
        );
        for text in [bad.as_str(), "{\"ssh\": ", ""] {
            write(&f, text);
            let Looked::Refused(why) = f.look() else {
                panic!("refused: {text}");
            };
            assert!(why.contains("topology"), "{why}");
            assert_eq!(node_names(&f.live), ["n1", "n2"]);
        }
        std::fs::remove_file(&f.path).unwrap();
        assert!(
            matches!(f.look(), Looked::Refused(_)),
            "a file gone keeps the old one"
        );
        assert_eq!(f.look(), Looked::Same, "and is told once");
        assert_eq!(counted(&f, "refused"), 4);
        assert_eq!(counted(&f, "applied"), 0);
        let state = f.live.get().clusters[0].nodes[1].state;
        assert_eq!(state, NodeState::Active);
    }

    #[test]
    fn a_changed_ssh_section_is_kept_until_a_restart_and_the_clusters_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = follower(&dir);
        write(
            &f,
            &FILE
                .replace("\"/k\"", "\"/other-key\", \"port\": 2222")
                .replace(r#"["/b"]}]}]}"#, &format!(r#"["/b"]}}, {N3}]}}]}}"#)),
        );
        let Looked::Applied(changes) = f.look() else {
            panic!("applied");
        };
        assert!(changes.ssh_ignored);
        assert_eq!(changes.added, ["n3"]);
        let t = f.live.get();
        assert_eq!((t.ssh.port, t.ssh.private_key.to_str()), (22, Some("/k")));
        assert_eq!(node_names(&f.live), ["n1", "n2", "n3"]);
    }
}
