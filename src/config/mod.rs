//! Configuration: the topology file the provisioner starts with, and StorageClass parameters.

pub mod params;
pub mod topology;

pub use params::{BackendParams, ClassParams, Durability, HeketiParams, SecretRef};
pub use topology::{Cluster, Node, SshSettings, Topology};
