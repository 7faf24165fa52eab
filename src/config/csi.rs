//! What the provisioner writes into a CSI PV (and the servers ConfigMap) and the node plugin
//! reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The CSI driver name (domain-name notation, as CSI requires) of both roles.
pub const DRIVER_NAME: &str = "glusterfs.gluster.org";
/// Volume attribute: the gluster volume to mount.
pub const ATTR_VOLUME: &str = "volume";
/// Volume attribute: the servers to fetch its volfile from, comma-separated, first one primary.
pub const ATTR_SERVERS: &str = "servers";
/// The node plugin's namespace, where the provisioner keeps [`CurrentServers`].
pub const NODE_NAMESPACE: &str = "glusterfs-csi";
/// The ConfigMap of [`CurrentServers`], in the node plugin's namespace.
pub const SERVERS_CONFIG_MAP: &str = "glusterfs-csi-servers";
/// Its key holding them, as JSON: also the file's name where the node plugin mounts it.
pub const SERVERS_KEY: &str = "servers.json";

/// Where the volumes whose bricks moved are served now: a PV's `servers` are frozen when it is
/// made, and `evacuate` may move every brick off them. The provisioner writes it; the node
/// plugin mounts from these first (it reads nothing from the API server).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentServers {
    /// Per gluster volume, the storage addresses of its bricks' nodes, in brick order.
    pub volumes: BTreeMap<String, Vec<String>>,
}

/// Whether `server` can go into a mount option: an IPv4 address or a DNS name, nothing that
/// separates options (`,`) or servers (`:`, so no IPv6 literal either).
pub fn is_server(server: &str) -> bool {
    server.parse::<std::net::Ipv4Addr>().is_ok()
        || (!server.is_empty()
            && server.len() <= 253
            && server.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_addresses_or_dns_names() {
        for ok in ["10.0.0.1", "gluster-1.example.com", "node1"] {
            assert!(is_server(ok), "{ok}");
        }
        for bad in ["", "a,b", "a:b", "fe80::1", "-x", "x y", "a..b", "$(id)"] {
            assert!(!is_server(bad), "{bad}");
        }
    }
}
