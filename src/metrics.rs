//! Prometheus metrics. Names of the external-provisioner library are kept so existing
//! dashboards and alerts work; labels come from small fixed sets (class, cluster, node,
//! operation, reason), never object names or error text.

use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::Error;

const BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
];

pub struct Metrics {
    registry: Registry,
    pub provision_total: IntCounterVec,
    pub provision_failed_total: IntCounterVec,
    pub provision_duration: HistogramVec,
    pub delete_total: IntCounterVec,
    pub delete_failed_total: IntCounterVec,
    pub delete_duration: HistogramVec,
    /// Failures by cause, which the compatible metrics above cannot carry.
    pub failures: IntCounterVec,
    pub gluster_duration: HistogramVec,
    /// Where a provisioning's time goes, by [`Step`].
    provision_steps: HistogramVec,
    /// Counted when sent: a command stuck on a hung glusterd never reaches the histogram.
    pub gluster_started: IntCounterVec,
    pub gluster_failures: IntCounterVec,
    pub ssh_up: IntGaugeVec,
    pub ssh_host_key_rejected: IntGaugeVec,
    pub glusterd_up: IntGaugeVec,
    pub gids_in_use: IntGaugeVec,
    pub gids_free: IntGaugeVec,
    pub volumes: IntGaugeVec,
    pub brick_bytes: GaugeVec,
    pub brick_free_bytes: GaugeVec,
    pub in_flight: IntGaugeVec,
    /// What clones have copied, growing while they copy.
    pub clone_copied_bytes: IntCounterVec,
    /// Changed topology files, by whether they were taken.
    pub topology_reloads: IntCounterVec,
    /// Bricks of this provisioner's volumes on nodes marked draining: what `evacuate` has left.
    pub bricks_to_move: IntGaugeVec,
    pub leader: IntGauge,
    /// The CSI node plugin's: mounts whose FUSE client stayed in the plugin's cgroup.
    pub fuse_cgroup_join_failures: IntCounter,
    /// Each volume's last health look, by namespace, claim and volume.
    volume_bricks_up: IntGaugeVec,
    volume_bricks: IntGaugeVec,
    volume_heal_pending: IntGaugeVec,
    volume_split_brain: IntGaugeVec,
    volume_checked: GaugeVec,
    /// What the health sweep yields to: the gauge above is for Prometheus, not a control.
    operations: std::sync::Mutex<Operations>,
}

/// Provisions and deletes running now, and when the last one ended (or the metrics were made).
struct Operations {
    running: u32,
    last_ended: Instant,
}

/// The steps of a provisioning (SSH mode), in order; `fence` is every lease read before a
/// write, wherever it falls.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// The Kubernetes side before the volume: the PV looked up, the claim's finalizer, the
    /// Provisioning event, the GID.
    Claim,
    /// Node health and brick room read, bricks placed.
    Place,
    /// Waiting for a turn: to be let in (`GLUSTER_COMMANDS` volumes are made at once), then
    /// before laying out bricks and before each gluster command, behind earlier volumes.
    Queue,
    /// Image bricks and brick directories laid out on the nodes.
    Bricks,
    Create,
    Options,
    Start,
    Quota,
    Fence,
    /// The Kubernetes side after the volume: Endpoints, the PV, the finalizer let go.
    Pv,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::Claim,
        Step::Place,
        Step::Queue,
        Step::Bricks,
        Step::Create,
        Step::Options,
        Step::Start,
        Step::Quota,
        Step::Fence,
        Step::Pv,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::Claim => "claim",
            Step::Place => "place",
            Step::Queue => "queue",
            Step::Bricks => "bricks",
            Step::Create => "create",
            Step::Options => "options",
            Step::Start => "start",
            Step::Quota => "quota",
            Step::Fence => "fence",
            Step::Pv => "pv",
        }
    }
}

/// The labels of a volume's health series.
const VOLUME_LABELS: [&str; 3] = ["namespace", "persistentvolumeclaim", "volume"];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                labels,
            )
            .expect("metric");
            registry.register(Box::new(h.clone())).expect("register");
            h
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(opts(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let float_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(opts(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let leader = IntGauge::new(
            "glusterfs_provisioner_leader",
            "1 while this instance is the leader",
        )
        .expect("metric");
        registry
            .register(Box::new(leader.clone()))
            .expect("register");
        let fuse_cgroup_join_failures = IntCounter::new(
            "glusterfs_provisioner_csi_fuse_cgroup_join_failures_total",
            "FUSE mounts whose client failed to join its cgroup: it dies with the node plugin",
        )
        .expect("metric");
        registry
            .register(Box::new(fuse_cgroup_join_failures.clone()))
            .expect("register");
        let build = gauge(
            "glusterfs_provisioner_build_info",
            "Build information",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            provision_total: counter(
                "controller_persistentvolumeclaim_provision_total",
                "Claims provisioned",
                &["class", "source"],
            ),
            provision_failed_total: counter(
                "controller_persistentvolumeclaim_provision_failed_total",
                "Failed provisioning attempts",
                &["class", "source"],
            ),
            provision_duration: histogram(
                "controller_persistentvolumeclaim_provision_duration_seconds",
                "Time to provision a claim",
                &["class", "source"],
            ),
            delete_total: counter(
                "controller_persistentvolume_delete_total",
                "Volumes deleted",
                &["class"],
            ),
            delete_failed_total: counter(
                "controller_persistentvolume_delete_failed_total",
                "Failed delete attempts",
                &["class"],
            ),
            delete_duration: histogram(
                "controller_persistentvolume_delete_duration_seconds",
                "Time to delete a volume",
                &["class"],
            ),
            failures: counter(
                "glusterfs_provisioner_failures_total",
                "Failed provision and delete attempts by cause",
                &["operation", "reason"],
            ),
            gluster_duration: histogram(
                "glusterfs_provisioner_gluster_operation_duration_seconds",
                "Latency of gluster CLI operations over SSH",
                &["operation", "node"],
            ),
            provision_steps: histogram(
                "glusterfs_provisioner_provision_step_seconds",
                "Time a provisioning spends in each step",
                &["step"],
            ),
            gluster_started: counter(
                "glusterfs_provisioner_gluster_operations_started_total",
                "Gluster CLI operations sent to a node over SSH (health probes not included)",
                &["operation", "node"],
            ),
            gluster_failures: counter(
                "glusterfs_provisioner_gluster_operation_failures_total",
                "Failed gluster CLI operations",
                &["operation", "node", "reason"],
            ),
            ssh_up: gauge(
                "glusterfs_provisioner_ssh_connection_up",
                "1 while the SSH connection to a node is open",
                &["node"],
            ),
            ssh_host_key_rejected: gauge(
                "glusterfs_provisioner_ssh_host_key_rejected",
                "1 while a node's SSH host key does not match known_hosts (the node is refused)",
                &["node"],
            ),
            glusterd_up: gauge(
                "glusterfs_provisioner_glusterd_up",
                "1 while a node's glusterd answers, most other nodes see it connected and it sees most of them",
                &["node"],
            ),
            gids_in_use: gauge(
                "glusterfs_provisioner_gids_in_use",
                "GIDs held by PVs of a class",
                &["class"],
            ),
            gids_free: gauge(
                "glusterfs_provisioner_gids_free",
                "GIDs left in a class's range",
                &["class"],
            ),
            volumes: gauge(
                "glusterfs_provisioner_volumes",
                "Volumes managed, per cluster",
                &["cluster"],
            ),
            brick_bytes: float_gauge(
                "glusterfs_provisioner_brick_root_size_bytes",
                "Size of a brick root",
                &["node", "root"],
            ),
            brick_free_bytes: float_gauge(
                "glusterfs_provisioner_brick_root_free_bytes",
                "Free space of a brick root",
                &["node", "root"],
            ),
            in_flight: gauge(
                "glusterfs_provisioner_operations_in_flight",
                "Provisions and deletes running",
                &["operation"],
            ),
            clone_copied_bytes: counter(
                "glusterfs_provisioner_clone_copied_bytes_total",
                "Bytes clones have copied into their new volumes, counted as they are copied",
                &["cluster"],
            ),
            topology_reloads: counter(
                "glusterfs_provisioner_topology_reloads_total",
                "Changed topology files read while running: applied, or refused (the topology \
                 in use kept)",
                &["result"],
            ),
            bricks_to_move: gauge(
                "glusterfs_provisioner_bricks_to_move",
                "Bricks of this provisioner's volumes on a node marked draining (0 on other nodes)",
                &["cluster", "node"],
            ),
            volume_bricks_up: gauge(
                "glusterfs_provisioner_volume_bricks_up",
                "Bricks of a claim's volume whose process runs, at the last look",
                &VOLUME_LABELS,
            ),
            volume_bricks: gauge(
                "glusterfs_provisioner_volume_bricks",
                "Bricks of a claim's volume",
                &VOLUME_LABELS,
            ),
            volume_heal_pending: gauge(
                "glusterfs_provisioner_volume_heal_pending_entries",
                "Entries of a claim's volume waiting to be healed (-1: gluster cannot tell)",
                &VOLUME_LABELS,
            ),
            volume_split_brain: gauge(
                "glusterfs_provisioner_volume_split_brain_entries",
                "Entries of a claim's volume in split-brain (-1: gluster cannot tell)",
                &VOLUME_LABELS,
            ),
            volume_checked: float_gauge(
                "glusterfs_provisioner_volume_health_checked_timestamp_seconds",
                "When a claim's volume was last looked at successfully (Unix time)",
                &VOLUME_LABELS,
            ),
            leader,
            fuse_cgroup_join_failures,
            registry,
            operations: std::sync::Mutex::new(Operations {
                running: 0,
                last_ended: Instant::now(),
            }),
        }
    }

    /// The series of a volume's last health look.
    pub fn volume_health(&self, labels: &[&str; 3], health: &crate::gluster::heal::VolumeHealth) {
        let count = |n: Option<u64>| n.map_or(-1, |n| n as i64);
        self.volume_bricks_up
            .with_label_values(labels)
            .set(health.up() as i64);
        self.volume_bricks
            .with_label_values(labels)
            .set(health.bricks.len() as i64);
        self.volume_heal_pending
            .with_label_values(labels)
            .set(count(health.heal_pending));
        self.volume_split_brain
            .with_label_values(labels)
            .set(count(health.split_brain));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        self.volume_checked
            .with_label_values(labels)
            .set(now.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// A volume's series go with its PV.
    pub fn forget_volume(&self, labels: &[&str; 3]) {
        for g in [
            &self.volume_bricks_up,
            &self.volume_bricks,
            &self.volume_heal_pending,
            &self.volume_split_brain,
        ] {
            g.remove_label_values(labels).ok();
        }
        self.volume_checked.remove_label_values(labels).ok();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics");
        String::from_utf8(out).expect("metrics are UTF-8")
    }

    /// Times one step of a provisioning, from `started`; returns now, where the next starts.
    pub fn step(&self, step: Step, started: Instant) -> Instant {
        let now = Instant::now();
        let seconds = (now - started).as_secs_f64();
        // In the caller's span: a debug log shows where one claim's time went.
        tracing::debug!(step = step.label(), seconds, "provisioning step");
        self.provision_steps
            .with_label_values(&[step.label()])
            .observe(seconds);
        now
    }

    /// Times one gluster operation and counts its failure.
    pub fn gluster_op<T>(
        &self,
        operation: &str,
        node: &str,
        started: Instant,
        result: &Result<T, Error>,
    ) {
        let seconds = started.elapsed().as_secs_f64();
        tracing::debug!(
            operation,
            node,
            seconds,
            ok = result.is_ok(),
            "gluster command"
        );
        self.gluster_duration
            .with_label_values(&[operation, node])
            .observe(seconds);
        if let Err(e) = result {
            self.gluster_failures
                .with_label_values(&[operation, node, e.reason()])
                .inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts an operation as in flight while the guard lives.
pub struct InFlight<'m> {
    metrics: &'m Metrics,
    gauge: prometheus::IntGauge,
}

impl<'m> InFlight<'m> {
    pub fn start(metrics: &'m Metrics, operation: &str) -> Self {
        let gauge = metrics.in_flight.with_label_values(&[operation]);
        gauge.inc();
        metrics.operations().running += 1;
        InFlight { metrics, gauge }
    }
}

impl Metrics {
    fn operations(&self) -> std::sync::MutexGuard<'_, Operations> {
        self.operations.lock().expect("operations lock")
    }

    /// Since when no provision or delete has run; `None` while one runs.
    pub fn idle_since(&self) -> Option<Instant> {
        let ops = self.operations();
        (ops.running == 0).then_some(ops.last_ended)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut ops = self.metrics.operations();
        ops.running -= 1;
        ops.last_ended = Instant::now();
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_compatible_names() {
        let m = Metrics::new();
        m.provision_total.with_label_values(&["gold", ""]).inc();
        m.gluster_started
            .with_label_values(&["volume create", "n1"])
            .inc();
        let before = Instant::now();
        {
            let provision = InFlight::start(&m, "provision");
            let _delete = InFlight::start(&m, "delete");
            assert!(
                m.render().contains(
                    "glusterfs_provisioner_operations_in_flight{operation=\"provision\"} 1"
                )
            );
            drop(provision);
            assert_eq!(m.idle_since(), None, "one still runs");
        }
        assert!(
            m.idle_since().is_some_and(|t| t > before),
            "idle since they ended"
        );
        let text = m.render();
        assert!(
            text.contains(
                "controller_persistentvolumeclaim_provision_total{class=\"gold\",source=\"\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("glusterfs_provisioner_operations_in_flight{operation=\"provision\"} 0")
        );
        assert!(text.contains("glusterfs_provisioner_build_info{version="));
        // The e2e tests read it in this shape.
        assert!(text.contains(
            "glusterfs_provisioner_gluster_operations_started_total\
             {node=\"n1\",operation=\"volume create\"} 1"
        ));
        assert!(text.contains("glusterfs_provisioner_csi_fuse_cgroup_join_failures_total 0"));
    }
}
