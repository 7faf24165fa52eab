//! The boundary between the controllers and whatever makes volumes: the SSH backend
//! ([`crate::gluster::SshBackend`]) or a Heketi server ([`crate::heketi::HeketiVolumes`]).
//! Each records on the PV what it needs to find the volume again, so deleting never needs the
//! StorageClass.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;

use futures::future::BoxFuture;

use crate::Result;
use crate::config::{Durability, SizeLimitChoice};
use crate::gluster::SshBackend;
use crate::gluster::place::Promise;
use crate::heketi::HeketiVolumes;
use crate::identity::{Expected, Identity};

/// What the provisioner asks for.
#[derive(Clone, Debug)]
pub struct VolumeRequest<'a> {
    pub name: &'a str,
    /// Topology cluster (SSH backend); `None` means the first one.
    pub cluster: Option<&'a str>,
    pub durability: Durability,
    pub size_gib: u64,
    pub gid: u32,
    pub options: &'a [(String, String)],
    /// How the SSH backend keeps the volume to its size.
    pub size_limit: SizeLimitChoice,
    /// The space the PVs of the cluster hold on their bricks (the SSH backend places by it).
    pub promised: Promised<'a>,
    /// Checked before each step that writes: see [`Fenced`].
    pub fence: Fenced<'a>,
    /// Recorded on the volume itself (SSH backend): see [`crate::identity`].
    pub identity: &'a Identity,
}

/// The leader's fence ([`crate::leader::Fence`]), for a backend that makes a volume in several
/// steps: a leader paused between two of them must not apply one (a GID, say) over what a
/// new leader has since set.
#[derive(Clone, Copy)]
pub struct Fenced<'a>(pub &'a (dyn Fn() -> BoxFuture<'a, Result<()>> + Sync + 'a));

impl<'a> Fenced<'a> {
    pub async fn check(&self) -> Result<()> {
        (self.0)().await
    }

    /// For callers that are no leader (tools, tests).
    pub fn none() -> Self {
        Fenced(&|| Box::pin(async { Ok(()) }))
    }
}

impl std::fmt::Debug for Fenced<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fenced")
    }
}

/// Hands what each PV holds on its bricks, one at a time, when a volume is placed and no
/// sooner: with thousands of PVs, a copy of them all for every claim of a burst would be most
/// of the provisioner's peak memory.
#[derive(Clone, Copy)]
pub struct Promised<'a>(pub &'a EachPromise<'a>);

/// Calls its argument with each promise.
pub type EachPromise<'a> = dyn Fn(&mut dyn FnMut(Promise)) + Sync + 'a;

impl Promised<'_> {
    pub fn each(&self, f: &mut dyn FnMut(Promise)) {
        (self.0)(f)
    }
}

impl std::fmt::Debug for Promised<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Promised")
    }
}

/// A volume that exists, is started and is size-limited.
#[derive(Clone, Debug)]
pub struct Made {
    /// The gluster volume name: the PV's `glusterfs.path`.
    pub volume: String,
    /// Where clients mount it from: the Endpoints' addresses.
    pub addresses: Vec<IpAddr>,
    /// The GID the volume has: an earlier attempt's volume keeps the one it was made with.
    pub gid: u32,
    /// Recorded on the PV for [`VolumeBackend::delete`] and [`VolumeBackend::addresses`].
    pub annotations: BTreeMap<String, String>,
}

/// A volume as its PV records it.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub pv: &'a str,
    pub volume: &'a str,
    pub annotations: &'a BTreeMap<String, String>,
}

pub trait VolumeBackend: Sync {
    /// Makes the volume, or finds and completes the one an earlier attempt made.
    fn create(&self, req: &VolumeRequest<'_>) -> impl Future<Output = Result<Made>> + Send;

    /// Removes the volume and its bricks once it is what `owner` expects; one already gone
    /// counts as removed.
    fn delete(
        &self,
        volume: Recorded<'_>,
        owner: Expected<'_>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes whatever attempts to make the volume `name` left (no PV records it): the
    /// volume (once it is what `owner` expects), its bricks, brick directories made before the
    /// volume was. Nothing left counts as removed.
    fn abandon(
        &self,
        name: &str,
        cluster: Option<&str>,
        owner: Expected<'_>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The addresses clients mount the volume from, for Endpoints recreated later.
    fn addresses(&self, volume: Recorded<'_>) -> impl Future<Output = Result<Vec<IpAddr>>> + Send;

    /// Grows the volume from `from_gib` to `to_gib`; `promised` as in [`VolumeRequest`].
    fn expand(
        &self,
        volume: Recorded<'_>,
        from_gib: u64,
        to_gib: u64,
        promised: &[Promise],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The backend serving one class or PV.
pub enum Backend<'a> {
    Ssh(&'a SshBackend),
    Heketi(Box<HeketiVolumes>),
}

impl VolumeBackend for Backend<'_> {
    async fn create(&self, req: &VolumeRequest<'_>) -> Result<Made> {
        match self {
            Backend::Ssh(b) => b.create(req).await,
            Backend::Heketi(b) => b.create(req).await,
        }
    }

    async fn delete(&self, volume: Recorded<'_>, owner: Expected<'_>) -> Result<()> {
        match self {
            Backend::Ssh(b) => b.delete(volume, owner).await,
            Backend::Heketi(b) => b.delete(volume, owner).await,
        }
    }

    async fn abandon(&self, name: &str, cluster: Option<&str>, owner: Expected<'_>) -> Result<()> {
        match self {
            Backend::Ssh(b) => b.abandon(name, cluster, owner).await,
            Backend::Heketi(b) => b.abandon(name, cluster, owner).await,
        }
    }

    async fn addresses(&self, volume: Recorded<'_>) -> Result<Vec<IpAddr>> {
        match self {
            Backend::Ssh(b) => b.addresses(volume).await,
            Backend::Heketi(b) => b.addresses(volume).await,
        }
    }

    async fn expand(
        &self,
        volume: Recorded<'_>,
        from_gib: u64,
        to_gib: u64,
        promised: &[Promise],
    ) -> Result<()> {
        match self {
            Backend::Ssh(b) => b.expand(volume, from_gib, to_gib, promised).await,
            Backend::Heketi(b) => b.expand(volume, from_gib, to_gib, promised).await,
        }
    }
}
