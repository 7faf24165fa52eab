//! The volumes' health sweep: every volume of a PV made here over SSH is looked at (bricks
//! running, entries to heal, split-brain: `gluster::heal`) soon after its PV appears, again
//! soon while it is degraded or healing, rarely while it is whole, and at once when a node of
//! its cluster goes down or comes back. Each look runs `glfsheal` against the bricks, so at most
//! [`AT_ONCE`] run together. A change of state is one event on the claim; the metrics carry
//! the last look. The looks also tell where each volume's bricks are: mounts follow them
//! ([`servers`]), and a PV whose brick record changed (`evacuate`) is looked at at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use super::{Context, servers};
use crate::gluster::SshBackend;
use crate::gluster::heal::VolumeHealth;
use crate::identity::Identity;
use crate::k8s::cached::CachedPv;
use crate::k8s::objects;

/// Looks at once.
const AT_ONCE: usize = 4;
/// How often due volumes are gathered (and the nodes' standing read).
const TICK: Duration = Duration::from_secs(10);
/// A degraded or healing volume is looked at again this soon.
const AGAIN_UNWELL: Duration = Duration::from_secs(15);
/// Longest a look waits for provisions and deletes to finish before it starts anyway.
const YIELD_AT_MOST: Duration = Duration::from_secs(30);
/// How long none must have run before a look starts: claims come in waves (a StatefulSet
/// scaled up then down, a CI job's claims made then deleted), and a look begun the instant one
/// wave ends runs `glfsheal` and holds a volume's lock beside the next wave's first commands
/// (measured: the looks of a burst's new volumes began with the burst's deletion every time).
const QUIET: Duration = Duration::from_secs(3);

/// A volume being watched: its claim, what the volume must record to be that claim's, when to
/// look next, since when it is not whole.
struct Watched {
    claim: PersistentVolumeClaim,
    volume: String,
    cluster: String,
    /// The bricks the PV records, as last seen.
    bricks: String,
    /// With the PV's reclaim policy as last seen.
    identity: Identity,
    next: Instant,
    unwell_since: Option<Instant>,
}

impl Watched {
    fn labels(&self) -> [&str; 3] {
        [
            self.claim.metadata.namespace.as_deref().unwrap_or_default(),
            self.claim.metadata.name.as_deref().unwrap_or_default(),
            &self.volume,
        ]
    }
}

pub(super) async fn sweep(ctx: Arc<Context>) {
    let Some(ssh) = &ctx.ssh else { return };
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut up_before: HashSet<String> = HashSet::new();
    let mut servers = servers::Servers::default();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut current = HashSet::new();
        // Bound ones: a Released volume is about to go (stopped first), and its claim is gone.
        let bound =
            |pv: &&Arc<CachedPv>| ctx.made_here(pv) && pv.status.phase.as_deref() == Some("Bound");
        for pv in ctx.volumes.state().iter().filter(bound) {
            let (Some(cluster), Some(volume), Some(claim), Some(identity)) = (
                pv.annotation(objects::ANN_CLUSTER),
                pv.spec.gluster_volume(&ctx.settings.csi_driver),
                pv.spec.claim_ref.as_ref(),
                ctx.identity_of(pv),
            ) else {
                continue;
            };
            let name = pv.name_any();
            current.insert(name.clone());
            let bricks = pv.annotation(objects::ANN_BRICKS).unwrap_or_default();
            if let Some(w) = watched.get_mut(&name)
                && (w.identity.policy != identity.policy || w.bricks != bricks)
            {
                // The PV's policy changed (the volume records it at the next look), or
                // `evacuate` moved a brick (mounts follow the volume's servers): look now.
                w.identity.policy = identity.policy;
                w.bricks = bricks.to_string();
                w.next = now;
            }
            watched.entry(name).or_insert_with(|| Watched {
                identity,
                claim: PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: claim.name.clone(),
                        namespace: claim.namespace.clone(),
                        uid: claim.uid.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                volume: volume.to_string(),
                cluster: cluster.to_string(),
                bricks: bricks.to_string(),
                next: now,
                unwell_since: None,
            });
        }
        watched.retain(|pv, w| {
            let keep = current.contains(pv);
            if !keep {
                ctx.metrics.forget_volume(&w.labels());
            }
            keep
        });
        // A node gone down or back up: every volume of its cluster may have lost a brick or
        // be healing now.
        let mut up_now = HashSet::new();
        for cluster in &ssh.topology().clusters {
            let health = ssh.health(cluster).await;
            let changed = health
                .iter()
                .any(|h| h.is_up() != up_before.contains(&h.node));
            if changed {
                for w in watched.values_mut().filter(|w| w.cluster == cluster.name) {
                    w.next = now;
                }
            }
            let up = health.iter().filter(|h| h.is_up());
            up_now.extend(up.map(|h| h.node.clone()));
        }
        up_before = up_now;

        let due: Vec<&mut Watched> = watched.values_mut().filter(|w| w.next <= now).collect();
        let looks = futures::stream::iter(due)
            .map(|w| async {
                yield_to_operations(&ctx).await;
                // Its claim may have gone while the look waited: a look at a volume being
                // deleted holds glusterd's lock on it against the delete.
                if !still_bound(&ctx, &w.identity.pv) {
                    return (w, None);
                }
                let look = match ssh.cluster(Some(&w.cluster)) {
                    Ok(cluster) => ssh.volume_health(&cluster, &w.volume).await,
                    Err(e) => Err(e),
                };
                (w, Some(look))
            })
            .buffer_unordered(AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        for (w, look) in looks {
            // Not looked at: gone from the watch list at the next tick unless Bound again.
            let Some(look) = look else { continue };
            match look {
                Ok(Some(health)) if is_the_claims(&health, w) => {
                    keep_policy(&ctx, ssh, w, &health).await;
                    servers.saw(&w.identity.pv, Some(&health));
                    record(&ctx, w, &health).await;
                }
                Ok(Some(_)) => {
                    servers.saw(&w.identity.pv, None);
                    tracing::debug!(
                        volume = w.volume,
                        "the volume does not record this PV's claim: nothing is told about it"
                    );
                    w.next = Instant::now() + ctx.settings.health_interval;
                }
                // Not made yet, or deleted by hand: nothing to look at for a while.
                Ok(None) => {
                    servers.saw(&w.identity.pv, None);
                    w.next = Instant::now() + ctx.settings.health_interval;
                }
                Err(e) => {
                    tracing::warn!(volume = w.volume, error = %e, "cannot look at the volume's health");
                    w.next = Instant::now() + AGAIN_UNWELL;
                }
            }
        }
        servers.publish(&ctx, &current).await;
    }
}

/// Whether the volume records the claim and PV it is watched for: a PV's claimRef and path are
/// anyone's to write, and a claim's events and metrics are for its own volume only.
fn is_the_claims(health: &VolumeHealth, w: &Watched) -> bool {
    health
        .identity
        .as_ref()
        .is_some_and(|i| w.identity.same_volume(i))
}

/// Records the Bound PV's reclaim policy on its volume when they differ: the one place a
/// volume's Retain may become Delete, as only while the claim is bound is the PV surely the
/// one made for it (a Released PV may be a look-alike made after the first was deleted).
async fn keep_policy(ctx: &Context, ssh: &SshBackend, w: &Watched, health: &VolumeHealth) {
    if health.identity.as_ref().map(|i| i.policy) == Some(w.identity.policy) {
        return;
    }
    let recorded = async {
        ctx.fenced().await?;
        ssh.record_policy(&w.cluster, &w.volume, &w.identity).await
    };
    if let Err(e) = recorded.await {
        tracing::warn!(volume = w.volume, error = %e, "cannot record the PV's reclaim policy on its volume");
    }
}

fn still_bound(ctx: &Context, pv: &str) -> bool {
    let pv = ctx.volumes.get(&ObjectRef::new(pv));
    pv.is_some_and(|pv| pv.status.phase.as_deref() == Some("Bound"))
}

/// Waits while claims are being provisioned or deleted, and for [`QUIET`] after (for at most
/// [`YIELD_AT_MOST`]): a look runs `glfsheal` on the nodes, and a claim waiting for its volume
/// matters more than a volume's next look.
async fn yield_to_operations(ctx: &Context) {
    let until = Instant::now() + YIELD_AT_MOST;
    let quiet = || {
        let idle = ctx.metrics.idle_since();
        idle.is_some_and(|since| since.elapsed() >= QUIET)
    };
    while !quiet() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The metrics of a look, and an event when the volume became unwell or whole again.
async fn record(ctx: &Context, w: &mut Watched, health: &VolumeHealth) {
    ctx.metrics.volume_health(&w.labels(), health);
    let whole = health.whole();
    match (whole, w.unwell_since) {
        (false, None) => {
            w.unwell_since = Some(Instant::now());
            let note = format!("volume {} is not whole: {}", w.volume, health.troubles());
            ctx.publish(
                &w.claim,
                EventType::Warning,
                "VolumeDegraded",
                "Health",
                note,
            )
            .await;
        }
        (true, Some(since)) => {
            w.unwell_since = None;
            let note = format!(
                "volume {} is whole again, after {} s",
                w.volume,
                since.elapsed().as_secs()
            );
            ctx.publish(&w.claim, EventType::Normal, "VolumeHealed", "Health", note)
                .await;
        }
        _ => {}
    }
    let again = if whole {
        ctx.settings.health_interval
    } else {
        AGAIN_UNWELL
    };
    w.next = Instant::now() + again;
}
