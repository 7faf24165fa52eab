//! What `evacuate` does with each volume, decided from what gluster says alone, so a run
//! killed anywhere and started again goes on from where the pool is.

use crate::gluster::place::{self, NodeCapacity};
use crate::gluster::xml::Volume;
use crate::gluster::{Brick, MOVING, image};
use crate::identity::Identity;

/// One volume's step.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A brick of it is on the node: where it goes, and how.
    Move(Move),
    /// A copy was added in its place by an earlier run; the old brick is taken out once the
    /// new one is healed.
    Finish {
        volume: String,
        old: Brick,
        new: Brick,
    },
    /// It is not moved, and why (another cluster's, no identity, its layout).
    NotMoved { volume: String, why: String },
    /// It would be moved, but nothing can hold its brick.
    Unplaceable { volume: String, why: String },
}

/// How a brick leaves its node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum How {
    /// A replicate volume of a live node: the new brick added as one more copy, healed, and
    /// only then the old one taken out: it never has fewer healed copies than before.
    AddThenRemove,
    /// `replace-brick … commit force`: one copy fewer until the new brick is healed. A dead
    /// node's bricks have no copy to lose; arbiter and disperse volumes cannot take one more.
    Replace,
}

#[derive(Debug, PartialEq)]
pub struct Move {
    pub volume: String,
    pub old: Brick,
    pub new: Brick,
    pub how: How,
    /// The new brick's image, when its root keeps sizes by images.
    pub image_bytes: u64,
    /// The volume's GID, which the new brick directory is group-owned by.
    pub gid: u32,
}

/// What the pool says of one volume with a brick on the node, and what else is known.
pub struct Facts<'a> {
    pub volume: &'a Volume,
    /// Its bricks, checked against the topology (else why not).
    pub bricks: Result<Vec<Brick>, String>,
    /// The node being emptied.
    pub node: &'a str,
    /// Whether that node is up (by the pool's majority).
    pub node_up: bool,
    /// This Kubernetes cluster's id.
    pub kube_cluster: &'a str,
    /// The volume's size, from its PV (`None`: no PV).
    pub size_gib: Option<u64>,
    /// The room of the nodes that are up, promises counted.
    pub capacity: &'a [NodeCapacity<'a>],
    /// Bricks of this volume's name laid out on nodes it has no brick on (by a run killed
    /// before it swapped them in): taken first, so a run started over leaves none behind.
    pub laid_out: &'a [Brick],
}

/// The step for a volume with a brick on the node.
pub fn step(facts: &Facts<'_>) -> Step {
    let volume = facts.volume;
    let name = volume.name.clone();
    let not_moved = |why: String| Step::NotMoved {
        volume: name.clone(),
        why,
    };
    match Identity::of(volume) {
        Ok(Some(i)) if i.kube_cluster == facts.kube_cluster => {}
        Ok(Some(i)) => {
            return not_moved(format!(
                "made by another Kubernetes cluster ({})",
                i.kube_cluster
            ));
        }
        Ok(None) => return not_moved("records no identity (see `adopt`)".into()),
        Err(why) => return not_moved(why),
    }
    let bricks = match &facts.bricks {
        Ok(bricks) => bricks,
        Err(why) => return not_moved(why.clone()),
    };
    // The provisioner makes `1 x N` volumes and grows their bricks in place.
    let per_set = match (volume.disperse_count, volume.replica_count) {
        (0, 0) => 1,
        (0, replica) => replica,
        (disperse, _) => disperse,
    };
    if volume.brick_count != per_set {
        return not_moved(format!(
            "{} bricks in sets of {per_set}: only single-set volumes are moved",
            volume.brick_count
        ));
    }
    let Some(old) = bricks.iter().find(|b| b.node == facts.node) else {
        return not_moved(format!("no brick on {}", facts.node));
    };
    if let Some((from, to)) = volume.option(MOVING).and_then(|m| m.split_once(','))
        && from == old.spec()
        && let Some(new) = bricks.iter().find(|b| b.spec() == to)
    {
        return Step::Finish {
            volume: name,
            old: old.clone(),
            new: new.clone(),
        };
    }
    let keep: Vec<Brick> = bricks
        .iter()
        .filter(|b| b.node != old.node)
        .cloned()
        .collect();
    let Some(size_gib) = facts.size_gib else {
        return not_moved("no PV names it: the size of its brick is unknown".into());
    };
    let data_bricks = volume.data_bricks();
    let (room, image_bytes) = if old.arbiter {
        let kib = volume.average_file_kib();
        (
            place::arbiter_bytes(size_gib << 30, kib),
            image::arbiter_image_bytes(size_gib, kib),
        )
    } else {
        (size_gib << 30, image::image_bytes(size_gib, data_bricks))
    };
    // A node marked draining since is no place for it any more.
    let draining = |node: &str| {
        let mut nodes = facts.capacity.iter().map(|c| c.node);
        nodes.any(|n| n.name == node && !n.takes_bricks())
    };
    let earlier = facts.laid_out.iter().find(|b| {
        b.size_limit == old.size_limit
            && !bricks.iter().any(|k| k.node == b.node)
            && !draining(&b.node)
    });
    let new = match earlier {
        Some(b) => Brick {
            arbiter: old.arbiter,
            ..b.clone()
        },
        None => match place::replacement(facts.capacity, &keep, old, room, &name) {
            Ok(new) => new,
            Err(why) => return Step::Unplaceable { volume: name, why },
        },
    };
    let plain_replica = volume.disperse_count == 0 && !bricks.iter().any(|b| b.arbiter);
    let how = if facts.node_up && plain_replica {
        How::AddThenRemove
    } else {
        How::Replace
    };
    let gid = volume
        .option("storage.owner-gid")
        .and_then(|g| g.parse().ok());
    Step::Move(Move {
        volume: name,
        old: old.clone(),
        new,
        how,
        image_bytes,
        gid: gid.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::topology::NodeState;
    use crate::config::{BrickRoot, Node, SizeLimit};
    use crate::gluster::place::RootSpace;
    use crate::identity::Policy;

    fn node(name: &str, zone: &str, ip: u8) -> Node {
        let root = BrickRoot {
            path: "/b".into(),
            size_limit: SizeLimit::Image,
        };
        Node::example(name, zone, ip, vec![root])
    }

    fn nodes() -> Vec<Node> {
        vec![
            node("n1", "a", 1),
            node("n2", "b", 2),
            node("n3", "a", 3),
            node("n4", "c", 4),
            node("n5", "a", 5),
        ]
    }

    fn capacity(nodes: &[Node], room_gib: u64) -> Vec<NodeCapacity<'_>> {
        nodes
            .iter()
            .map(|n| NodeCapacity {
                node: n,
                roots: vec![RootSpace {
                    root: n.brick_roots[0].clone(),
                    free: room_gib << 30,
                    total: room_gib << 30,
                    promised: 0,
                }],
            })
            .collect()
    }

    fn volume(on: &[&Node], arbiter: bool, options: &[(&str, &str)]) -> (Volume, Vec<Brick>) {
        let bricks: Vec<Brick> = on
            .iter()
            .enumerate()
            .map(|(i, n)| Brick {
                arbiter: arbiter && i + 1 == on.len(),
                ..Brick::new(n, &n.brick_roots[0], "vol_x")
            })
            .collect();
        let identity = Identity {
            kube_cluster: "k".into(),
            claim_uid: "u".into(),
            pv: "pvc-u".into(),
            policy: Policy::Delete,
            provisioner: "p".into(),
        };
        let mut all: Vec<(String, String)> = identity.options();
        all.extend(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let specs: Vec<(String, bool)> = bricks.iter().map(|b| (b.spec(), b.arbiter)).collect();
        let v = Volume::example(&specs, all);
        (v, bricks)
    }

    fn facts<'a>(
        v: &'a Volume,
        bricks: &[Brick],
        node_up: bool,
        capacity: &'a [NodeCapacity<'a>],
    ) -> Facts<'a> {
        Facts {
            volume: v,
            bricks: Ok(bricks.to_vec()),
            node: "n1",
            node_up,
            kube_cluster: "k",
            size_gib: Some(1),
            capacity,
            laid_out: &[],
        }
    }

    #[test]
    fn a_brick_moves_to_a_node_and_zone_the_volume_has_none_on() {
        let ns = nodes();
        let cap = capacity(&ns, 10);
        let (v, bricks) = volume(&[&ns[0], &ns[1], &ns[2]], false, &[]);
        let Step::Move(m) = step(&facts(&v, &bricks, true, &cap)) else {
            panic!("a move");
        };
        assert_eq!(m.new.node, "n4", "zone c is the volume's only new zone");
        assert_eq!(m.how, How::AddThenRemove);
        let Step::Move(m) = step(&facts(&v, &bricks, false, &cap)) else {
            panic!("a move");
        };
        assert_eq!(m.how, How::Replace, "a dead node has no copy to keep");
    }

    #[test]
    fn an_arbiter_stays_an_arbiter_and_is_replaced() {
        let ns = nodes();
        let cap = capacity(&ns, 10);
        let (v, bricks) = volume(&[&ns[1], &ns[2], &ns[0]], true, &[]);
        let Step::Move(m) = step(&facts(&v, &bricks, true, &cap)) else {
            panic!("a move");
        };
        assert!(m.new.arbiter);
        assert_eq!(m.how, How::Replace);
        assert_eq!(m.image_bytes, image::arbiter_image_bytes(1, 64));
    }

    #[test]
    fn nothing_that_can_hold_it_is_said_and_moves_nothing() {
        let ns = nodes();
        let (v, bricks) = volume(&[&ns[0], &ns[1], &ns[2]], false, &[]);
        let full = capacity(&ns, 0);
        let got = step(&facts(&v, &bricks, true, &full));
        assert!(
            matches!(&got, Step::Unplaceable { why, .. } if why.contains("room")),
            "{got:?}"
        );
        let few = capacity(&ns[..3], 10);
        assert!(matches!(
            step(&facts(&v, &bricks, true, &few)),
            Step::Unplaceable { .. }
        ));
    }

    #[test]
    fn a_run_killed_after_adding_the_copy_finishes_it() {
        let ns = nodes();
        let cap = capacity(&ns, 10);
        let (_, plain) = volume(&[&ns[0], &ns[1], &ns[2], &ns[3]], false, &[]);
        let marker = format!("{},{}", plain[0].spec(), plain[3].spec());
        let (v, bricks) = volume(
            &[&ns[0], &ns[1], &ns[2], &ns[3]],
            false,
            &[(MOVING, &marker)],
        );
        assert_eq!(
            step(&facts(&v, &bricks, true, &cap)),
            Step::Finish {
                volume: "vol_x".into(),
                old: bricks[0].clone(),
                new: bricks[3].clone()
            }
        );
    }

    #[test]
    fn a_brick_laid_out_by_a_killed_run_is_taken_again() {
        let ns = nodes();
        let cap = capacity(&ns, 10);
        let (v, bricks) = volume(&[&ns[0], &ns[1], &ns[2]], false, &[]);
        let earlier = [Brick::new(&ns[4], &ns[4].brick_roots[0], "vol_x")];
        let mut f = facts(&v, &bricks, false, &cap);
        f.laid_out = &earlier;
        let Step::Move(m) = step(&f) else {
            panic!("a move");
        };
        assert_eq!(
            m.new.node, "n5",
            "not n4, which placement alone would choose"
        );
    }

    #[test]
    fn a_draining_node_takes_no_moved_brick() {
        let mut ns = nodes();
        // n4 alone has a zone of its own: the first choice, but it is being emptied too; and
        // a brick laid out on n5 before it was marked draining is not taken again.
        ns[3].state = NodeState::Draining;
        ns[4].state = NodeState::Draining;
        let cap = capacity(&ns, 10);
        let (v, bricks) = volume(&[&ns[0], &ns[1], &ns[2]], false, &[]);
        let earlier = [Brick::new(&ns[4], &ns[4].brick_roots[0], "vol_x")];
        let mut f = facts(&v, &bricks, true, &cap);
        f.laid_out = &earlier;
        let got = step(&f);
        assert!(
            matches!(&got, Step::Unplaceable { why, .. } if why.contains("not draining")),
            "{got:?}"
        );
        ns[4].state = NodeState::Active;
        let cap = capacity(&ns, 10);
        let mut f = facts(&v, &bricks, true, &cap);
        f.laid_out = &earlier;
        let Step::Move(m) = step(&f) else {
            panic!("a move");
        };
        assert_eq!(m.new.node, "n5");
    }

    #[test]
    fn volumes_not_of_this_cluster_are_not_moved() {
        let ns = nodes();
        let cap = capacity(&ns, 10);
        let (v, bricks) = volume(&[&ns[0], &ns[1], &ns[2]], false, &[]);
        let mut other = facts(&v, &bricks, true, &cap);
        other.kube_cluster = "elsewhere";
        assert!(matches!(step(&other), Step::NotMoved { why, .. } if why.contains("another")));
        let mut bare = v.clone();
        bare.options.options.clear();
        let got = step(&facts(&bare, &bricks, true, &cap));
        assert!(matches!(got, Step::NotMoved { why, .. } if why.contains("identity")));
    }
}
