//! Configuration: the topology file the provisioner starts with, StorageClass parameters, and
//! the CSI names both roles share.

pub mod csi;
mod heketi;
pub mod params;
pub mod topology;
mod values;

pub use heketi::{HeketiParams, SecretRef, redacted};
pub use params::{BackendParams, ClassParams, PvType, SizeLimitChoice};
pub use topology::{BrickRoot, Cluster, Node, SizeLimit, SshSettings, Topology};
pub use values::{AVERAGE_FILE_KIB_DEFAULT, Durability};
