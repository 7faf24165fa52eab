//! Which nodes of a cluster can take part in a volume: those whose glusterd answers, and which
//! every other answering node sees connected. A node whose sshd is up but whose glusterd is
//! down or hung gets no bricks, and cluster-wide commands go to a node that is up.

use crate::config::{Cluster, Node};
use crate::gluster::xml::Peer;

/// A node's standing at the last probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    pub node: String,
    /// Why it is left out; `None` when it is up.
    pub down: Option<String>,
}

impl NodeHealth {
    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }
}

fn names(peer: &Peer, node: &Node) -> bool {
    peer.hostname == node.storage_address.to_string()
        || peer.hostname == node.ssh_address
        || peer.hostname == node.name
}

/// What a node said when probed.
#[derive(Debug)]
pub enum Answer {
    /// The peers its glusterd knows.
    Peers(Vec<Peer>),
    /// No answer in time, but it completed other commands meanwhile: busy with a burst (its
    /// lock queue is long), not hung. It says nothing of its peers.
    Busy,
    /// Why it did not answer.
    Down(String),
}

/// Judges every node from what each one said of its peers.
pub fn judge(cluster: &Cluster, answers: &[Answer]) -> Vec<NodeHealth> {
    cluster
        .nodes
        .iter()
        .zip(answers)
        .map(|(node, answer)| {
            let down = match answer {
                Answer::Down(why) => Some(why.clone()),
                Answer::Peers(_) | Answer::Busy => cluster
                    .nodes
                    .iter()
                    .zip(answers)
                    .filter(|(other, _)| other.name != node.name)
                    .find_map(|(other, seen)| {
                        let Answer::Peers(peers) = seen else {
                            return None;
                        };
                        let connected = peers.iter().any(|p| names(p, node) && p.is_connected());
                        (!connected).then(|| format!("not connected to {}'s glusterd", other.name))
                    }),
            };
            NodeHealth {
                node: node.name.clone(),
                down,
            }
        })
        .collect()
}

/// The nodes left out, for an error that has to say why a volume cannot be placed.
pub fn describe_down(health: &[NodeHealth]) -> Option<String> {
    let down: Vec<String> = health
        .iter()
        .filter_map(|h| Some(format!("{} ({})", h.node, h.down.as_ref()?)))
        .collect();
    (!down.is_empty()).then(|| format!("nodes left out: {}", down.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "name": name, "ssh_address": ip, "storage_address": ip, "zone": "z",
            "brick_roots": ["/b"],
        }))
        .unwrap()
    }

    fn peer(ip: &str, connected: u8) -> Peer {
        Peer {
            uuid: String::new(),
            hostname: ip.into(),
            connected,
            state: "Peer in Cluster".into(),
        }
    }

    fn three_nodes() -> Cluster {
        Cluster {
            name: "c".into(),
            nodes: vec![
                node("a", "10.0.0.1"),
                node("b", "10.0.0.2"),
                node("c", "10.0.0.3"),
            ],
        }
    }

    #[test]
    fn a_node_is_up_when_it_answers_and_the_others_see_it() {
        let cluster = three_nodes();
        // c's glusterd is down: it does not answer, and a and b see it disconnected.
        let answers = vec![
            Answer::Peers(vec![peer("10.0.0.2", 1), peer("10.0.0.3", 0)]),
            Answer::Peers(vec![peer("10.0.0.1", 1), peer("10.0.0.3", 0)]),
            Answer::Down("glusterd does not answer: Connection failed".into()),
        ];
        let health = judge(&cluster, &answers);
        assert!(health[0].is_up() && health[1].is_up());
        assert_eq!(
            health[2].down.as_deref(),
            Some("glusterd does not answer: Connection failed")
        );
        // c answers but a lost it: c is still left out, and says by whom.
        let answers = vec![
            Answer::Peers(vec![peer("10.0.0.2", 1), peer("10.0.0.3", 0)]),
            Answer::Peers(vec![peer("10.0.0.1", 1), peer("10.0.0.3", 1)]),
            Answer::Peers(vec![peer("10.0.0.1", 1), peer("10.0.0.2", 1)]),
        ];
        let health = judge(&cluster, &answers);
        assert_eq!(
            health[2].down.as_deref(),
            Some("not connected to a's glusterd")
        );
        assert_eq!(
            describe_down(&health).as_deref(),
            Some("nodes left out: c (not connected to a's glusterd)")
        );
        let all_up = vec![
            Answer::Peers(vec![peer("10.0.0.2", 1), peer("10.0.0.3", 1)]),
            Answer::Peers(vec![peer("10.0.0.1", 1), peer("10.0.0.3", 1)]),
            Answer::Peers(vec![peer("10.0.0.1", 1), peer("10.0.0.2", 1)]),
        ];
        assert!(judge(&cluster, &all_up).iter().all(NodeHealth::is_up));
        assert_eq!(describe_down(&judge(&cluster, &all_up)), None);
    }

    #[test]
    fn a_busy_node_is_up_and_judges_nobody() {
        let cluster = three_nodes();
        // b is busy; a sees it, c has lost a.
        let answers = vec![
            Answer::Peers(vec![peer("10.0.0.2", 1), peer("10.0.0.3", 1)]),
            Answer::Busy,
            Answer::Peers(vec![peer("10.0.0.1", 0), peer("10.0.0.2", 1)]),
        ];
        let health = judge(&cluster, &answers);
        assert!(health[1].is_up() && health[2].is_up());
        assert_eq!(
            health[0].down.as_deref(),
            Some("not connected to c's glusterd")
        );
        // A busy node others have lost is still left out.
        let answers = vec![
            Answer::Peers(vec![peer("10.0.0.2", 0), peer("10.0.0.3", 1)]),
            Answer::Busy,
            Answer::Busy,
        ];
        let health = judge(&cluster, &answers);
        assert_eq!(
            health[1].down.as_deref(),
            Some("not connected to a's glusterd")
        );
        assert!(health[0].is_up() && health[2].is_up());
    }
}
