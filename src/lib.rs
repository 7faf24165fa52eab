//! Kubernetes external provisioner for GlusterFS.
//!
//! Layout: `config` reads the topology file; `gluster` runs gluster commands on the nodes (SSH
//! executor, `--xml` parsing).

pub mod config;
pub mod error;
pub mod gluster;

pub use error::{Error, Result};
