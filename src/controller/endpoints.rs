//! The Endpoints and Service a `glusterfs` PV's mount goes through: written, removed, and
//! looked up in the caches of their names.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, Patch, PatchParams};

use super::{Context, ignore_not_found};
use crate::Result;
use crate::k8s::objects;

const FIELD_MANAGER: &str = "glusterfs-provisioner";

impl Context {
    /// Creates or repairs the Endpoints and Service of a claim's volume (server-side apply, so
    /// a second call changes nothing).
    pub(super) async fn apply_endpoints(
        &self,
        namespace: &str,
        name: &str,
        claim: (&str, &str),
        addresses: &[std::net::IpAddr],
    ) -> Result<()> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let (claim_name, claim_uid) = claim;
        let svc = objects::service(name, namespace, claim_name, claim_uid);
        Api::<Service>::namespaced(self.client.clone(), namespace)
            .patch(name, &pp, &Patch::Apply(&svc))
            .await?;
        let ep = objects::endpoints(name, namespace, claim_name, claim_uid, addresses);
        Api::<Endpoints>::namespaced(self.client.clone(), namespace)
            .patch(name, &pp, &Patch::Apply(&ep))
            .await?;
        Ok(())
    }

    /// Deletes the Endpoints and Service; already gone is fine.
    pub(super) async fn delete_endpoints(&self, namespace: &str, name: &str) -> Result<()> {
        let dp = Default::default();
        let svc = Api::<Service>::namespaced(self.client.clone(), namespace);
        ignore_not_found(svc.delete(name, &dp).await.map(drop))?;
        let ep = Api::<Endpoints>::namespaced(self.client.clone(), namespace);
        ignore_not_found(ep.delete(name, &dp).await.map(drop))
    }

    pub(super) fn has_endpoints(&self, namespace: &str, name: &str) -> bool {
        self.endpoints.contains(namespace, name) && self.services.contains(namespace, name)
    }
}
