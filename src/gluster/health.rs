//! Which nodes of a cluster can take part in a volume: those whose glusterd answers, which
//! most of the other answering nodes see connected, and which see most of them. A node whose
//! sshd is up but whose glusterd is down, hung or cut off from the pool gets no bricks, and
//! cluster-wide commands go to a node that is up. One node's view alone (a node cut off on the
//! storage network sees every peer disconnected) takes out no other node.

use crate::config::{Cluster, Node};
use crate::gluster::xml::Peer;

/// A node's standing at the last probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    pub node: String,
    /// Why it is left out; `None` when it is up.
    pub down: Option<String>,
    /// Nodes that do not see it connected, too few to leave it out: a split the operator should
    /// hear of (`topology` prints it).
    pub disputed: Option<String>,
}

impl NodeHealth {
    pub fn left_out(node: &str, why: String) -> Self {
        NodeHealth {
            node: node.to_string(),
            down: Some(why),
            disputed: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }
}

/// Whether `node` is among `peers` and connected.
fn sees(peers: &[Peer], node: &Node) -> bool {
    peers.iter().any(|p| p.is_connected() && is(p, node))
}

/// Whether the peer is `node`: by any name the pool knows it by against any of the node's, as
/// pools are probed by DNS names, storage or SSH addresses.
fn is(peer: &Peer, node: &Node) -> bool {
    let storage = node.storage_address.to_string();
    let own = [
        storage.as_str(),
        node.ssh_address.as_str(),
        node.name.as_str(),
    ];
    peer.names().any(|n| own.contains(&n))
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

/// Judges every node from what each one said of its peers. The nodes that answered with their
/// peers are the judges; a node is left out when
/// - it did not answer;
/// - a strict majority of the other judges do not see it connected (a node not in a judge's
///   peer list at all, such as one not probed yet, is not connected in that judge's view);
/// - it is a judge, and it and the nodes it sees connected are no majority of the nodes that
///   answered (busy ones included): it is the one cut off. Nodes that did not answer are not
///   counted, since nobody can see them;
/// - its glusterd knows no peers at all, in a cluster of more than one node: it was never
///   probed into the pool (a node just added to the topology), or lost its state. It judges
///   nobody and is not counted either: nodes added before they are probed take none down.
///
/// With one answering node nobody contradicts it, and it is up. With two that do not see each
/// other (or a 2-2 split of four) no side is a majority, so both are left out: there is no
/// telling which one is cut off, and a volume across the split would fail anyway.
pub fn judge(cluster: &Cluster, answers: &[Answer]) -> Vec<NodeHealth> {
    let nodes = || cluster.nodes.iter().zip(answers);
    let judges = judges(cluster, answers);
    let answered: Vec<&Node> = nodes()
        .filter(|(_, answer)| !matches!(answer, Answer::Down(_)) && !lone(cluster, answer))
        .map(|(node, _)| node)
        .collect();
    nodes()
        .map(|(node, answer)| {
            let peers = match answer {
                Answer::Down(why) => return NodeHealth::left_out(&node.name, why.clone()),
                _ if lone(cluster, answer) => None,
                Answer::Peers(peers) => Some(peers),
                Answer::Busy => None,
            };
            // The other judges, by whether they see it connected.
            let (mut blind, mut seeing) = (Vec::new(), Vec::new());
            for (judge, peers) in judges.iter().filter(|(j, _)| j.name != node.name) {
                let side = if sees(peers, node) {
                    &mut seeing
                } else {
                    &mut blind
                };
                side.push(judge.name.as_str());
            }
            let verdict = (!blind.is_empty()).then(|| not_connected(&blind, &seeing));
            let (mut down, mut disputed) = (Vec::new(), None);
            if blind.len() > seeing.len() {
                down.extend(verdict);
            } else {
                disputed = verdict;
            }
            if lone(cluster, answer) {
                down.push(NO_PEERS.to_string());
            }
            if let Some(peers) = peers {
                let others = answered.iter().filter(|o| o.name != node.name);
                let hidden: Vec<&str> = others
                    .clone()
                    .filter(|o| !sees(peers, o))
                    .map(|o| o.name.as_str())
                    .collect();
                let visible = others.count() - hidden.len();
                if (visible + 1) * 2 <= answered.len() {
                    down.push(format!(
                        "sees only {visible} of {} other nodes (not {}): cut off from the pool",
                        visible + hidden.len(),
                        hidden.join(", ")
                    ));
                }
            }
            NodeHealth {
                node: node.name.clone(),
                down: (!down.is_empty()).then(|| down.join("; ")),
                disputed,
            }
        })
        .collect()
}

/// Why a node whose glusterd knows no peers is left out.
const NO_PEERS: &str = "its glusterd knows no peers: not in the pool";

/// Whether the node answered that it knows no peers, in a cluster where it should.
fn lone(cluster: &Cluster, answer: &Answer) -> bool {
    matches!(answer, Answer::Peers(peers) if peers.is_empty()) && cluster.nodes.len() > 1
}

/// The nodes whose view of the pool counts: those that answered with their peers, and know some.
fn judges<'c, 'a>(cluster: &'c Cluster, answers: &'a [Answer]) -> Vec<(&'c Node, &'a [Peer])> {
    let nodes = cluster.nodes.iter().zip(answers);
    nodes
        .filter_map(|(node, answer)| match answer {
            Answer::Peers(peers) if !lone(cluster, answer) => Some((node, peers.as_slice())),
            _ => None,
        })
        .collect()
}

/// Whether each node is a peer of the pool (listed, connected or not, in any state): `Some`
/// by the majority of the other nodes' peer lists (those of [`judge`]); with none to ask, a
/// node that answered is one when it knows peers, or is the cluster's only node; `None` when
/// nobody can tell.
pub fn membership(cluster: &Cluster, answers: &[Answer]) -> Vec<Option<bool>> {
    let judges = judges(cluster, answers);
    cluster
        .nodes
        .iter()
        .zip(answers)
        .map(|(node, answer)| {
            let others = judges.iter().filter(|(j, _)| j.name != node.name);
            let listing = others
                .clone()
                .filter(|(_, peers)| peers.iter().any(|p| is(p, node)));
            let (listing, all) = (listing.count(), others.count());
            match answer {
                _ if all > 0 => Some(listing * 2 > all),
                Answer::Peers(_) => Some(!lone(cluster, answer)),
                _ => None,
            }
        })
        .collect()
}

/// "not connected according to a, b (c sees it)".
fn not_connected(blind: &[&str], seeing: &[&str]) -> String {
    let said = format!("not connected according to {}", blind.join(", "));
    match seeing {
        [] => said,
        [one] => format!("{said} ({one} sees it)"),
        more => format!("{said} ({} see it)", more.join(", ")),
    }
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
    use crate::gluster::xml::Hostnames;

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
            hostnames: Hostnames {
                names: vec![ip.into()],
            },
            connected,
            state: "Peer in Cluster".into(),
        }
    }

    fn cluster(names: &[&str]) -> Cluster {
        Cluster {
            name: "c".into(),
            nodes: names
                .iter()
                .zip(1..)
                .map(|(name, i)| node(name, &format!("10.0.0.{i}")))
                .collect(),
        }
    }

    fn three_nodes() -> Cluster {
        cluster(&["a", "b", "c"])
    }

    /// Peers answering with the given view of the other nodes (10.0.0.N is node N), 1 for
    /// connected.
    fn sees(view: &[(u8, u8)]) -> Answer {
        Answer::Peers(
            view.iter()
                .map(|(n, connected)| peer(&format!("10.0.0.{n}"), *connected))
                .collect(),
        )
    }

    fn down(health: &[NodeHealth]) -> Vec<(&str, &str)> {
        health
            .iter()
            .filter_map(|h| Some((h.node.as_str(), h.down.as_deref()?)))
            .collect()
    }

    #[test]
    fn a_node_is_up_when_it_answers_and_the_others_see_it() {
        let cluster = three_nodes();
        // c's glusterd is down: it does not answer, and a and b see it disconnected.
        let answers = vec![
            sees(&[(2, 1), (3, 0)]),
            sees(&[(1, 1), (3, 0)]),
            Answer::Down("glusterd does not answer: Connection failed".into()),
        ];
        let health = judge(&cluster, &answers);
        assert_eq!(
            down(&health),
            [("c", "glusterd does not answer: Connection failed")]
        );
        // c answers but a and b lost it: c is left out, and says by whom.
        let answers = vec![
            sees(&[(2, 1), (3, 0)]),
            sees(&[(1, 1), (3, 0)]),
            sees(&[(1, 1), (2, 1)]),
        ];
        let health = judge(&cluster, &answers);
        assert_eq!(down(&health), [("c", "not connected according to a, b")]);
        assert_eq!(
            describe_down(&health).as_deref(),
            Some("nodes left out: c (not connected according to a, b)")
        );
        let all_up = vec![
            sees(&[(2, 1), (3, 1)]),
            sees(&[(1, 1), (3, 1)]),
            sees(&[(1, 1), (2, 1)]),
        ];
        let health = judge(&cluster, &all_up);
        assert!(health.iter().all(|h| h.is_up() && h.disputed.is_none()));
        assert_eq!(describe_down(&health), None);
    }

    #[test]
    fn a_node_cut_off_from_the_others_takes_none_of_them_down() {
        // c reaches SSH but not the storage network: it sees every peer disconnected.
        let answers = vec![
            sees(&[(2, 1), (3, 0)]),
            sees(&[(1, 1), (3, 0)]),
            sees(&[(1, 0), (2, 0)]),
        ];
        let health = judge(&three_nodes(), &answers);
        assert_eq!(
            down(&health),
            [(
                "c",
                "not connected according to a, b; \
                 sees only 0 of 2 other nodes (not a, b): cut off from the pool"
            )]
        );
        // c's view is kept, for `topology`.
        assert_eq!(
            health[0].disputed.as_deref(),
            Some("not connected according to c (b sees it)")
        );
        assert_eq!(
            describe_down(&health).as_deref(),
            Some(
                "nodes left out: c (not connected according to a, b; \
                 sees only 0 of 2 other nodes (not a, b): cut off from the pool)"
            )
        );
    }

    #[test]
    fn a_node_not_probed_into_the_pool_is_down_and_the_others_up() {
        // c is in the topology, but nobody ran `peer probe`: a and b do not list it, and its
        // glusterd knows no peers.
        let answers = vec![sees(&[(2, 1)]), sees(&[(1, 1)]), sees(&[])];
        let health = judge(&three_nodes(), &answers);
        assert_eq!(
            down(&health),
            [(
                "c",
                "not connected according to a, b; its glusterd knows no peers: not in the pool"
            )]
        );
        assert!(
            health.iter().all(|h| h.disputed.is_none()),
            "c judges nobody"
        );
        assert_eq!(
            membership(&three_nodes(), &answers),
            [Some(true), Some(true), Some(false)]
        );
    }

    #[test]
    fn as_many_new_nodes_as_old_take_none_of_the_old_down() {
        // d, e and f were added to the topology before anyone probed them.
        let cluster = cluster(&["a", "b", "c", "d", "e", "f"]);
        let answers = vec![
            sees(&[(2, 1), (3, 1)]),
            sees(&[(1, 1), (3, 1)]),
            sees(&[(1, 1), (2, 1)]),
            sees(&[]),
            sees(&[]),
            Answer::Down("no route".into()),
        ];
        let health = judge(&cluster, &answers);
        let left_out: Vec<&str> = down(&health).iter().map(|(n, _)| *n).collect();
        assert_eq!(left_out, ["d", "e", "f"]);
        assert!(health[..3].iter().all(|h| h.disputed.is_none()));
        assert_eq!(
            membership(&cluster, &answers),
            [
                Some(true),
                Some(true),
                Some(true),
                Some(false),
                Some(false),
                Some(false)
            ]
        );
    }

    #[test]
    fn a_peer_is_one_most_others_list_connected_or_not() {
        let cluster = three_nodes();
        // c's glusterd is down: a and b list it, disconnected. It is a peer, and down.
        let answers = vec![
            sees(&[(2, 1), (3, 0)]),
            sees(&[(1, 1), (3, 0)]),
            Answer::Down("no route".into()),
        ];
        assert_eq!(
            membership(&cluster, &answers),
            [Some(true), Some(true), Some(true)]
        );
        // One node's word alone does not make c a peer (nor one node's silence none).
        let answers = vec![sees(&[(2, 1), (3, 1)]), sees(&[(1, 1)]), sees(&[(1, 1)])];
        assert_eq!(membership(&cluster, &answers)[2], Some(false));
        // Nobody else to ask: a node knowing peers is in a pool; a node alone is its pool.
        let answers = vec![
            sees(&[(2, 0)]),
            Answer::Down("no route".into()),
            Answer::Busy,
        ];
        assert_eq!(
            membership(&cluster, &answers),
            [Some(true), Some(true), Some(false)]
        );
        let answers = vec![Answer::Busy, Answer::Down("no route".into()), sees(&[])];
        assert_eq!(membership(&cluster, &answers), [None, None, Some(false)]);
        let alone = super::tests::cluster(&["a"]);
        assert_eq!(membership(&alone, &[sees(&[])]), [Some(true)]);
        assert!(judge(&alone, &[sees(&[])])[0].is_up());
        // Nobody probed anything: no node is a peer, and none is up.
        let answers = vec![sees(&[]), sees(&[]), sees(&[])];
        assert_eq!(membership(&cluster, &answers), [Some(false); 3]);
        assert!(judge(&cluster, &answers).iter().all(|h| !h.is_up()));
    }

    #[test]
    fn peers_match_by_any_name_the_pool_knows() {
        // SSH and storage on separate networks; the pool was probed by DNS names, and later by
        // storage address (a second entry in `hostnames`), or by the topology's node name.
        let node = |name: &str, ssh: &str, storage: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "name": name, "ssh_address": ssh, "storage_address": storage, "zone": "z",
                "brick_roots": ["/b"],
            }))
            .unwrap()
        };
        let cluster = Cluster {
            name: "c".into(),
            nodes: vec![
                node("a", "192.168.0.1", "10.0.0.1"),
                node("b", "192.168.0.2", "10.0.0.2"),
                node("c", "192.168.0.3", "10.0.0.3"),
            ],
        };
        let dns = |host: &str, storage: &str| Peer {
            hostname: format!("{host}.gluster.example"),
            hostnames: Hostnames {
                names: vec![format!("{host}.gluster.example"), storage.into()],
            },
            ..peer(storage, 1)
        };
        let by_name = |name: &str| Peer {
            hostname: name.into(),
            hostnames: Hostnames::default(),
            ..peer(name, 1)
        };
        let answers = vec![
            Answer::Peers(vec![dns("b", "10.0.0.2"), dns("c", "10.0.0.3")]),
            Answer::Peers(vec![dns("a", "10.0.0.1"), by_name("c")]),
            Answer::Peers(vec![dns("a", "10.0.0.1"), dns("b", "10.0.0.2")]),
        ];
        let health = judge(&cluster, &answers);
        assert!(health.iter().all(|h| h.is_up() && h.disputed.is_none()));
    }

    #[test]
    fn the_majority_of_the_other_nodes_decides() {
        let cluster = cluster(&["a", "b", "c", "d"]);
        // Two of the three others lost d: it is left out, naming who still sees it.
        let answers = vec![
            sees(&[(2, 1), (3, 1), (4, 0)]),
            sees(&[(1, 1), (3, 1), (4, 0)]),
            sees(&[(1, 1), (2, 1), (4, 1)]),
            sees(&[(1, 1), (2, 1), (3, 1)]),
        ];
        let health = judge(&cluster, &answers);
        assert_eq!(
            down(&health),
            [("d", "not connected according to a, b (c sees it)")]
        );
        // One of three: d stays up, and the disagreement is kept.
        let answers = vec![
            sees(&[(2, 1), (3, 1), (4, 0)]),
            sees(&[(1, 1), (3, 1), (4, 1)]),
            sees(&[(1, 1), (2, 1), (4, 1)]),
            sees(&[(1, 1), (2, 1), (3, 1)]),
        ];
        let health = judge(&cluster, &answers);
        assert!(health.iter().all(NodeHealth::is_up));
        assert_eq!(
            health[3].disputed.as_deref(),
            Some("not connected according to a (b, c see it)")
        );
    }

    #[test]
    fn two_nodes_split_are_both_left_out_and_a_dead_peer_takes_none() {
        let cluster = cluster(&["a", "b"]);
        // Neither side is a majority: there is no telling which one is cut off.
        let answers = vec![sees(&[(2, 0)]), sees(&[(1, 0)])];
        let health = judge(&cluster, &answers);
        assert!(health.iter().all(|h| !h.is_up()), "{health:?}");
        // The one answering node has nobody to contradict it.
        let answers = vec![sees(&[(2, 0)]), Answer::Down("no route".into())];
        assert_eq!(down(&judge(&cluster, &answers)), [("b", "no route")]);
    }

    #[test]
    fn a_busy_node_is_up_and_judges_nobody() {
        let cluster = three_nodes();
        // b is busy; a sees it, c has lost a: c is the only other judge of a.
        let answers = vec![
            sees(&[(2, 1), (3, 1)]),
            Answer::Busy,
            sees(&[(1, 0), (2, 1)]),
        ];
        let health = judge(&cluster, &answers);
        assert_eq!(down(&health), [("a", "not connected according to c")]);
        // A busy node others have lost is still left out.
        let answers = vec![sees(&[(2, 0), (3, 1)]), Answer::Busy, Answer::Busy];
        let health = judge(&cluster, &answers);
        assert_eq!(down(&health), [("b", "not connected according to a")]);
    }
}
