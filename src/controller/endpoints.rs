//! The Endpoints and Service a `glusterfs` PV's mount goes through: written, removed, and
//! looked up in the caches of their names. Only ever those made for the PV's claim.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Resource, ResourceExt};

use super::{Context, ignore_not_found};
use crate::k8s::objects::{self, Owner};
use crate::{Error, Result};

const FIELD_MANAGER: &str = "glusterfs-provisioner";

impl Context {
    /// Creates or repairs the Endpoints and Service of a claim's volume (server-side apply, so
    /// a second call changes nothing). An object of that name made for anything else is left
    /// alone, and is the error.
    pub(super) async fn apply_endpoints(
        &self,
        name: &str,
        owner: Owner<'_>,
        addresses: &[std::net::IpAddr],
    ) -> Result<()> {
        if !self.settings.endpoints {
            return Err(Error::InvalidClaim(format!(
                "Endpoints/Service {name} needed for a glusterfs PV, but this install has no \
                 access to them (MANAGE_ENDPOINTS=false): it makes CSI PVs only"
            )));
        }
        let namespace = owner.claim_namespace;
        let services = Api::<Service>::namespaced(self.client.clone(), namespace);
        let endpoints = Api::<Endpoints>::namespaced(self.client.clone(), namespace);
        owned_uid(&services, name, owner).await?;
        owned_uid(&endpoints, name, owner).await?;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let (claim_name, claim_uid) = (owner.claim_name, owner.claim_uid);
        let svc = objects::service(name, namespace, claim_name, claim_uid);
        services.patch(name, &pp, &Patch::Apply(&svc)).await?;
        let ep = objects::endpoints(name, namespace, claim_name, claim_uid, addresses);
        endpoints.patch(name, &pp, &Patch::Apply(&ep)).await?;
        Ok(())
    }

    /// Deletes the Endpoints and Service made for `owner`; already gone is fine. Nothing is
    /// deleted when either is someone else's.
    pub(super) async fn delete_endpoints(&self, name: &str, owner: Owner<'_>) -> Result<()> {
        let namespace = owner.claim_namespace;
        if !self.settings.endpoints {
            tracing::info!(
                namespace,
                name,
                "Endpoints/Service left as they are: this install has no access to them"
            );
            return Ok(());
        }
        let services = Api::<Service>::namespaced(self.client.clone(), namespace);
        let endpoints = Api::<Endpoints>::namespaced(self.client.clone(), namespace);
        let svc = owned_uid(&services, name, owner).await?;
        let ep = owned_uid(&endpoints, name, owner).await?;
        delete_uid(&services, name, svc).await?;
        delete_uid(&endpoints, name, ep).await
    }

    pub(super) fn has_endpoints(&self, namespace: &str, name: &str) -> bool {
        self.endpoints.contains(namespace, name) && self.services.contains(namespace, name)
    }
}

/// The UID of the object `name`, if it exists and is `owner`'s; someone else's is an error.
async fn owned_uid<K>(api: &Api<K>, name: &str, owner: Owner<'_>) -> Result<Option<String>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let Some(found) = api.get_metadata_opt(name).await? else {
        return Ok(None);
    };
    if !owner.owns(&found.metadata) {
        return Err(Error::NotOurs(format!(
            "{} {}/{name} was not made for PV {} (claim {}/{})",
            K::kind(&()),
            owner.claim_namespace,
            owner.pv,
            owner.claim_namespace,
            owner.claim_name
        )));
    }
    Ok(found.uid())
}

/// Deletes the object of that UID only, so one made since the check is spared.
async fn delete_uid<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(uid) = uid else { return Ok(()) };
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        // A precondition failure: what is there now is another object.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => ignore_not_found(other.map(drop)),
    }
}
