//! Kubernetes external provisioner for GlusterFS.
//!
//! - `config`: the topology file and StorageClass parameters.
//! - `volumes`: the `VolumeBackend` trait the controllers make, grow and remove volumes with.
//! - `gluster`: SSH executor, `--xml` parsing, volume planning and the SSH backend.
//! - `heketi`: the Heketi REST client and the Heketi backend.
//! - `k8s`: pure builders of the PV, Endpoints and Service.
//! - `gid`: GID allocation across classes.
//! - `identity`: what a volume records of who made it, which every removal checks.
//! - `controller`: the reconcilers that provision claims and delete released volumes.
//! - `convert`: the `convert` subcommand, `glusterfs` PVs to CSI PVs in place.
//! - `audit`, `adopt`: leftovers, and volumes an administrator may give an identity.
//! - `evacuate`: every brick of a node moved to the others.
//! - `status`: the `status` subcommand, each claim's volume health and the nodes' quorum.
//! - `report`: how the operator's commands print (table or JSON) and exit.
//! - `csi`: the CSI node plugin (`node` subcommand) that mounts volumes of CSI PVs.
//! - `leader`: leader election on a Lease. `metrics`, `http`: Prometheus metrics and probes.

// The deletion reconciler's future nests deeper than the default limit lets rustc lay out.
#![recursion_limit = "256"]

pub mod adopt;
pub mod audit;
pub mod config;
pub mod controller;
pub mod convert;
pub mod csi;
pub mod error;
pub mod evacuate;
pub mod failpoint;
pub mod gid;
pub mod gluster;
pub mod heketi;
pub mod http;
pub mod identity;
pub mod k8s;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod report;
pub mod status;
pub mod volumes;

pub use error::{Error, Result};
