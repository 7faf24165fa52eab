//! The Heketi backend: StorageClasses with `resturl` get their volumes from a Heketi server,
//! as they did with the in-tree `kubernetes.io/glusterfs` provisioner.

pub mod api;
pub mod client;
pub mod jwt;
pub mod volumes;

pub use client::{Credentials, HeketiClient, HeketiHttp};
pub use volumes::HeketiVolumes;
