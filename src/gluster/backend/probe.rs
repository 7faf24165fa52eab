//! Which nodes commands and bricks may go to: every node of a cluster is asked for its peers at
//! once and judged with the others (`gluster::health`), again once the reading is a few seconds
//! old; a command that fails as a down node fails leaves its node out at once.

use super::*;

/// How long a probe of the nodes' glusterd is used.
const HEALTH_TTL: Duration = Duration::from_secs(5);

/// A glusterd that has not answered `peer status` in this time is hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// When a cluster's nodes were probed, and how each stood.
type HealthReading = (Instant, Arc<Vec<NodeHealth>>);

/// What the probes found, and what they judge by.
#[derive(Default)]
pub(super) struct Nodes {
    /// The last probe of each cluster's nodes, by cluster name.
    readings: std::sync::Mutex<HashMap<String, HealthReading>>,
    /// Held by the one caller probing; the others go on with the last reading meanwhile.
    probing: tokio::sync::Mutex<()>,
    /// The gluster commands of each node, by node name: a probe that times out while the node
    /// works through others has met a long queue, not a hung glusterd (see [`Nodes::busy`]).
    traffic: std::sync::Mutex<HashMap<String, Traffic>>,
}

/// A node's gluster commands: how many are out, and when it last completed one.
#[derive(Default)]
struct Traffic {
    out: usize,
    answered: Option<Instant>,
}

/// Counts a command as out on its node until dropped (a cancelled one too).
pub(super) struct Out<'n> {
    nodes: &'n Nodes,
    node: &'n str,
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        let mut traffic = self.nodes.traffic.lock().expect("traffic lock");
        if let Some(t) = traffic.get_mut(self.node) {
            t.out -= 1;
        }
    }
}

impl Nodes {
    fn last(&self, cluster: &str) -> Option<HealthReading> {
        let readings = self.readings.lock().expect("health lock");
        readings.get(cluster).cloned()
    }

    pub(super) fn sent<'n>(&'n self, node: &'n str) -> Out<'n> {
        let mut traffic = self.traffic.lock().expect("traffic lock");
        traffic.entry(node.to_string()).or_default().out += 1;
        Out { nodes: self, node }
    }

    pub(super) fn answered(&self, node: &str) {
        let mut traffic = self.traffic.lock().expect("traffic lock");
        traffic.entry(node.to_string()).or_default().answered = Some(Instant::now());
    }

    /// Whether `node`, whose probe begun at `began` got no answer, is busy rather than hung: it
    /// completed a command since, or it has commands out and completed one in the probe's time
    /// before it. glusterd runs a burst's `volume stop`s one or two a second across the pool, so
    /// a node can complete none of them in one probe's time; a hung one completes nothing in
    /// the next probe's either, and is left out then.
    fn busy(&self, node: &str, began: Instant) -> bool {
        let traffic = self.traffic.lock().expect("traffic lock");
        traffic.get(node).is_some_and(|t| {
            t.answered
                .is_some_and(|at| at >= began || (t.out > 0 && at + PROBE_TIMEOUT >= began))
        })
    }

    /// Leaves `node` out until the next probe: a command on it failed as a node that is down
    /// fails.
    pub(super) fn mark_down(&self, cluster: &str, node: &str, why: &Error) {
        let mut readings = self.readings.lock().expect("health lock");
        if let Some((_, health)) = readings.get_mut(cluster) {
            let health = Arc::make_mut(health);
            if let Some(h) = health.iter_mut().find(|h| h.node == node) {
                h.down = Some(why.to_string());
            }
        }
    }
}

impl SshBackend {
    /// How the cluster's nodes stood at the last probe of their glusterd, probed again once
    /// older than [`HEALTH_TTL`]: one caller probes (an unreachable node can take its connect
    /// timeout), the others go on with the last reading; only the very first reading is
    /// waited for.
    pub async fn health(&self, cluster: &Cluster) -> Arc<Vec<NodeHealth>> {
        let nodes = &self.nodes;
        let fresh = |r: &Option<HealthReading>| match r {
            Some((at, h)) if at.elapsed() < HEALTH_TTL => Some(h.clone()),
            _ => None,
        };
        let reading = nodes.last(&cluster.name);
        if let Some(health) = fresh(&reading) {
            return health;
        }
        let _probing = match (nodes.probing.try_lock(), &reading) {
            (Ok(guard), _) => guard,
            (Err(_), Some((_, health))) => return health.clone(),
            (Err(_), None) => nodes.probing.lock().await,
        };
        // Probed by another caller while this one waited.
        if let Some(health) = fresh(&nodes.last(&cluster.name)) {
            return health;
        }
        let began = Instant::now();
        let probes = cluster.nodes.iter().map(|node| async move {
            match self.peers(node).await {
                Ok(peers) => Answer::Peers(peers),
                Err(
                    e @ (Error::SshConnect { .. }
                    | Error::SshCommand { .. }
                    | Error::SshHostKey { .. }),
                ) => Answer::Down(e.to_string()),
                Err(_) if nodes.busy(&node.name, began) => {
                    tracing::debug!(node = node.name, "probe timed out while glusterd works");
                    Answer::Busy
                }
                Err(e) => Answer::Down(format!("glusterd does not answer: {e}")),
            }
        });
        let answers = join_all(probes).await;
        let health = Arc::new(health::judge(cluster, &answers));
        let before = reading.map(|(_, h)| h);
        for h in health.iter() {
            self.metrics
                .glusterd_up
                .with_label_values(&[&h.node])
                .set(h.is_up().into());
            let was = before
                .as_ref()
                .and_then(|b| b.iter().find(|p| p.node == h.node));
            if was.is_none_or(|w| w.is_up() != h.is_up()) {
                match &h.down {
                    Some(why) => tracing::warn!(node = h.node, why, "node left out"),
                    None => tracing::info!(node = h.node, "node up"),
                }
            }
        }
        let mut readings = nodes.readings.lock().expect("health lock");
        readings.insert(cluster.name.clone(), (Instant::now(), health.clone()));
        health
    }

    /// The trusted-pool peers `node`'s glusterd knows. Gluster's own timeout bounds a hung
    /// glusterd; SSH's retries a restarting sshd.
    pub async fn peers(&self, node: &Node) -> Result<Vec<Peer>> {
        let timeout = format!("--timeout={}", PROBE_TIMEOUT.as_secs());
        let args = words(&["--mode=script", &timeout, "peer", "status", "--xml"]);
        let out = self.ssh.run_ok(&node.ssh_address, "gluster", &args).await?;
        xml::parse_peer_status(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered_at(nodes: &Nodes, node: &str, at: Instant) {
        let mut traffic = nodes.traffic.lock().unwrap();
        traffic.entry(node.into()).or_default().answered = Some(at);
    }

    #[test]
    fn a_node_working_through_its_queue_is_busy_and_a_silent_one_is_not() {
        let nodes = Nodes::default();
        let began = Instant::now();
        let ago = |secs| began.checked_sub(Duration::from_secs(secs)).unwrap();
        assert!(!nodes.busy("n1", began), "never answered anything");
        answered_at(&nodes, "n1", ago(3));
        assert!(
            !nodes.busy("n1", began),
            "answered before, nothing out since"
        );
        {
            let _out = nodes.sent("n1");
            assert!(
                nodes.busy("n1", began),
                "commands out, one completed just before"
            );
            assert!(
                !nodes.busy("n2", began),
                "the other node's commands are its own"
            );
            answered_at(&nodes, "n1", ago(PROBE_TIMEOUT.as_secs() + 1));
            assert!(
                !nodes.busy("n1", began),
                "commands out, none completed for too long"
            );
        }
        nodes.answered("n1");
        assert!(nodes.busy("n1", began), "completed one during the probe");
        let traffic = nodes.traffic.lock().unwrap();
        assert_eq!(traffic["n1"].out, 0, "the command out is counted back");
    }
}
