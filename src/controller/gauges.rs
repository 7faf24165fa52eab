//! The pool gauges: GIDs per class, volumes per cluster, brick capacity.

use std::collections::HashSet;
use std::sync::Arc;

use kube::ResourceExt;

use super::Context;
use crate::config::ClassParams;
use crate::k8s::objects;

/// Keeps the pool gauges (GIDs per class, volumes per cluster, brick capacity) current. Runs
/// on its own, so slow or unreachable nodes never hold up provisioning.
pub(super) async fn refresh_gauges(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.settings.gauge_interval);
    // Classes reported last time: a deleted class's series go, so they do not pile up.
    let mut reported = HashSet::new();
    loop {
        tick.tick().await;
        // Right after the caches are filled, then now and then: see `memory::release_free`.
        crate::memory::release_free();
        let m = &ctx.metrics;
        let ours: Vec<_> = ctx
            .volumes
            .state()
            .into_iter()
            .filter(|pv| ctx.is_ours(pv))
            .collect();
        let gids: Vec<u32> = ours
            .iter()
            .filter_map(|pv| pv.annotation(objects::ANN_GID)?.parse().ok())
            .collect();
        let mut current = HashSet::new();
        for class in ctx
            .classes
            .state()
            .iter()
            .filter(|c| ctx.settings.serves(&c.provisioner))
        {
            let name = class.name_any();
            current.insert(name.clone());
            let Ok(params) = ClassParams::parse(&class.parameters.clone().unwrap_or_default())
            else {
                continue;
            };
            let in_use = ours
                .iter()
                .filter(|pv| pv.spec.storage_class_name.as_deref() == Some(&name))
                .count();
            let taken = gids
                .iter()
                .filter(|g| (params.gid_min..=params.gid_max).contains(*g))
                .count();
            let size = u64::from(params.gid_max - params.gid_min) + 1;
            m.gids_in_use.with_label_values(&[&name]).set(in_use as i64);
            m.gids_free
                .with_label_values(&[&name])
                .set(size.saturating_sub(taken as u64) as i64);
        }
        for gone in reported.difference(&current) {
            m.gids_in_use.remove_label_values(&[gone]).ok();
            m.gids_free.remove_label_values(&[gone]).ok();
        }
        reported = current;
        let Some(ssh) = &ctx.ssh else { continue };
        for cluster in &ssh.topology().clusters {
            let count = ours
                .iter()
                .filter(|pv| pv.annotation(objects::ANN_CLUSTER) == Some(&cluster.name))
                .count();
            m.volumes
                .with_label_values(&[&cluster.name])
                .set(count as i64);
            let (capacity, _) = ssh.capacity(cluster).await;
            for node in capacity {
                for space in node.roots {
                    let root = space.root.path.display().to_string();
                    let labels = [node.node.name.as_str(), root.as_str()];
                    m.brick_bytes
                        .with_label_values(&labels)
                        .set(space.total as f64);
                    m.brick_free_bytes
                        .with_label_values(&labels)
                        .set(space.free as f64);
                }
            }
        }
    }
}
