//! Leader election on a `coordination.k8s.io/v1` Lease: of several replicas only the holder
//! provisions and deletes; the others stand by and take over when the lease expires.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::Api;
use kube_lease_manager::LeaseManagerBuilder;

use crate::http::Health;
use crate::metrics::Metrics;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// How long a lease holds without renewal; a standby takes over after this.
    pub duration_seconds: u64,
    /// The holder renews this long before the lease would expire.
    pub renew_before_seconds: u64,
}

/// Waits for the lease, then runs `work` while holding it. Losing the lease ends `work` with an
/// error, so the process exits and restarts as a standby rather than act without it.
pub async fn run_as_leader<F>(
    client: Client,
    settings: LeaseSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    work: F,
) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.renew_before_seconds)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    health.set_ready(true);
    tracing::info!(
        lease = settings.name,
        identity = settings.identity,
        "standing by for the lease"
    );
    leading
        .wait_for(|l| *l)
        .await
        .map_err(|_| Error::LostLease)?;
    tracing::info!(lease = settings.name, "leading");
    metrics.leader.set(1);
    let result = tokio::select! {
        r = work => r,
        _ = leading.wait_for(|l| !*l) => Err(Error::LostLease),
    };
    metrics.leader.set(0);
    // Closing the channel makes the manager release the lease for a standby.
    drop(leading);
    if let Ok(Err(e)) = task.await {
        tracing::warn!(error = %e, "releasing the lease");
    }
    result
}

/// A leader paused past its lease (SIGSTOP, a frozen VM) wakes with work in flight that a new
/// leader may have taken over: checked right before each write to gluster or to the API, the
/// fence stops it there. Client-go's leader election leaves this to the caller too.
pub struct Fence {
    api: Api<Lease>,
    settings: LeaseSettings,
}

/// Kept back from the lease's end, for the write that follows the check.
const FENCE_MARGIN: SignedDuration = SignedDuration::from_secs(1);

impl Fence {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// Ok while the lease names this replica and its last renewal still holds.
    pub async fn check(&self) -> Result<()> {
        let lease = self.api.get(&self.settings.name).await?;
        let spec = lease.spec.unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.settings.identity.as_str());
        let duration = SignedDuration::from_secs(
            spec.lease_duration_seconds
                .map_or(self.settings.duration_seconds as i64, i64::from),
        );
        let current = spec
            .renew_time
            .is_some_and(|t| t.0 + duration - FENCE_MARGIN > Timestamp::now());
        if ours && current {
            Ok(())
        } else {
            tracing::warn!(
                holder = spec.holder_identity,
                "the lease is not ours (any more): stopping before a write"
            );
            Err(Error::LostLease)
        }
    }
}
