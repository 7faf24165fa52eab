//! Configuration: the topology file the provisioner starts with, and StorageClass parameters.

pub mod params;
pub mod topology;

pub use params::{ClassParams, Durability};
pub use topology::{Cluster, Node, SshSettings, Topology};
