//! The Endpoints and Service a `glusterfs` PV's mount goes through: written, removed, pointed
//! at the volume's servers after its bricks moved, and looked up in the caches of their names.
//! Only ever those made for the PV's claim.

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Resource, ResourceExt};

use super::Context;
use crate::k8s::api::ignore_not_found;
use crate::k8s::objects::{self, Owner};
use crate::{Error, Result};

pub(super) const FIELD_MANAGER: &str = "glusterfs-provisioner";

impl Context {
    /// Creates or repairs the Endpoints and Service of a claim's volume (server-side apply, so
    /// a second call changes nothing). An object of that name made for anything else is left
    /// alone, and is the error.
    pub(super) async fn apply_endpoints(
        &self,
        name: &str,
        owner: Owner<'_>,
        addresses: &[IpAddr],
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

    /// Points the Endpoints made for `owner` (in the claim's namespace) at `addresses`, the
    /// servers of its volume now, when they list others: after `evacuate` moved its bricks, a
    /// `glusterfs` PV mounts through them. Only the addresses change (the Service holds none);
    /// Endpoints someone else made are left alone, and absent ones are the repair's to make.
    pub(super) async fn follow_servers(
        &self,
        name: &str,
        owner: Owner<'_>,
        addresses: &[IpAddr],
    ) -> Result<AddressRepair> {
        if !self.settings.endpoints {
            return Ok(AddressRepair::Unchanged);
        }
        let endpoints = Api::<Endpoints>::namespaced(self.client.clone(), owner.claim_namespace);
        let found = endpoints.get_opt(name).await?;
        let repair = address_repair(found.as_ref(), owner, addresses);
        if repair == AddressRepair::Write {
            self.fenced().await?;
            let (namespace, claim_name) = (owner.claim_namespace, owner.claim_name);
            let mut ep =
                objects::endpoints(name, namespace, claim_name, owner.claim_uid, addresses);
            // Over the object looked at only: one replaced since fails, and is looked at again.
            ep.metadata.resource_version = found.and_then(|f| f.metadata.resource_version);
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            endpoints.patch(name, &pp, &Patch::Apply(&ep)).await?;
        }
        Ok(repair)
    }
}

/// What a `glusterfs` PV's Endpoints need once its volume's servers are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AddressRepair {
    /// None of that name: the repair of deleted Endpoints makes them (from the PV's bricks).
    Absent,
    /// Not made for this PV's claim: never written.
    NotOurs,
    /// They list the servers already (in any order).
    Unchanged,
    Write,
}

fn address_repair(found: Option<&Endpoints>, owner: Owner<'_>, wanted: &[IpAddr]) -> AddressRepair {
    let Some(found) = found else {
        return AddressRepair::Absent;
    };
    if !owner.owns(&found.metadata) {
        return AddressRepair::NotOurs;
    }
    let listed: HashSet<&str> = found
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().chain(&s.not_ready_addresses).flatten())
        .map(|a| a.ip.as_str())
        .collect();
    let wanted: Vec<String> = wanted.iter().map(IpAddr::to_string).collect();
    let wanted: HashSet<&str> = wanted.iter().map(String::as_str).collect();
    if listed == wanted {
        AddressRepair::Unchanged
    } else {
        AddressRepair::Write
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

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f";

    fn owner() -> Owner<'static> {
        Owner {
            pv: "pvc-0f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f",
            claim_namespace: "apps",
            claim_name: "data",
            claim_uid: UID,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    fn ours(addresses: &[&str]) -> Endpoints {
        objects::endpoints("ep", "apps", "data", UID, &ips(addresses))
    }

    #[test]
    fn ours_listing_others_are_written_and_the_same_servers_are_not() {
        let now = ips(&["10.0.0.4", "10.0.0.2", "10.0.0.3"]);
        let moved = ours(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(
            address_repair(Some(&moved), owner(), &now),
            AddressRepair::Write
        );
        let same = ours(&["10.0.0.3", "10.0.0.4", "10.0.0.2"]);
        assert_eq!(
            address_repair(Some(&same), owner(), &now),
            AddressRepair::Unchanged
        );
        assert_eq!(address_repair(None, owner(), &now), AddressRepair::Absent);
    }

    #[test]
    fn endpoints_not_made_for_the_claim_are_never_written() {
        let now = ips(&["10.0.0.4"]);
        // A user's own, of that name in the claim's namespace.
        let mut theirs = ours(&["10.0.0.1"]);
        theirs.metadata.labels = None;
        assert_eq!(
            address_repair(Some(&theirs), owner(), &now),
            AddressRepair::NotOurs
        );
        // Another claim's.
        let other = objects::endpoints("ep", "apps", "other", "u2", &ips(&["10.0.0.1"]));
        assert_eq!(
            address_repair(Some(&other), owner(), &now),
            AddressRepair::NotOurs
        );
        // Another namespace's.
        let elsewhere = objects::endpoints("ep", "kube-system", "data", UID, &ips(&["10.0.0.1"]));
        assert_eq!(
            address_repair(Some(&elsewhere), owner(), &now),
            AddressRepair::NotOurs
        );
    }
}
