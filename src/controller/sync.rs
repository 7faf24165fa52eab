//! The gate reconciles wait behind until every cache holds its first full list.

use super::Context;

impl Context {
    /// Waits until the caches are complete: GIDs and "already provisioned" come from them.
    pub(super) async fn caches_synced(&self) {
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    /// `Store::wait_until_ready` wakes only one of several concurrent waiters (its oneshot
    /// keeps a single waker), so this one task waits on each store and opens the gate for all.
    pub(super) async fn sync_caches(&self) -> bool {
        let synced = self.volumes.wait_until_ready().await.is_ok()
            && self.classes.wait_until_ready().await.is_ok();
        if synced {
            self.endpoints.wait_listed().await;
            self.services.wait_listed().await;
        }
        self.synced.send_replace(synced);
        synced
    }
}
