//! Configuration the provisioner is started with.

pub mod topology;

pub use topology::{Cluster, Node, SshSettings, Topology};
