//! The gate reconciles wait behind until every cache holds its first full list.

use kube::runtime::reflector::ObjectRef;

use super::{Context, slim};
use crate::k8s::cached::CachedPv;

impl Context {
    /// Waits until the caches are complete: GIDs and "already provisioned" come from them.
    pub(super) async fn caches_synced(&self) {
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    /// `Store::wait_until_ready` wakes only one of several concurrent waiters (its oneshot
    /// keeps a single waker), so this one task waits on each store and opens the gate for all.
    pub(super) async fn sync_caches(&self) -> bool {
        let synced = self.volumes.wait_until_ready().await.is_ok()
            && self.classes.wait_until_ready().await.is_ok()
            && self.records.wait_until_ready().await.is_ok();
        if synced {
            self.endpoints.wait_listed().await;
            self.services.wait_listed().await;
        }
        self.synced.send_replace(synced);
        synced
    }

    /// Live `glusterfs` PVs of ours whose Endpoints or Service is missing, once the caches are
    /// complete: their own events do not trigger them (see `slim::volume_unsettled`).
    pub(super) fn without_endpoints(&self) -> Vec<ObjectRef<CachedPv>> {
        self.volumes
            .state()
            .iter()
            .filter(|pv| self.is_ours(pv) && !slim::volume_unsettled(pv))
            .filter(|pv| {
                let claim = pv.spec.claim_ref.as_ref();
                let namespace = claim.and_then(|c| c.namespace.as_deref());
                match (&pv.spec.glusterfs, namespace) {
                    (Some(source), Some(namespace)) => {
                        !self.has_endpoints(namespace, &source.endpoints)
                    }
                    _ => false,
                }
            })
            .map(|pv| ObjectRef::from_obj(pv.as_ref()))
            .collect()
    }
}
