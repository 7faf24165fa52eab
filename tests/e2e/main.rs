//! Tests against the real environment (`e2e/env up`): the control plane, a worker node whose
//! kubelet runs pods, the provisioner deployed on it, and three glusterd nodes reached over SSH.
//! Run them with `e2e/test`.

mod clone;
mod convert;
mod csi;
mod disruptive;
mod env_smoke;
mod expansion;
mod grow;
mod heketi;
mod heketi_standin;
mod identity;
mod manifests;
mod mounts_follow;
mod node_files;
mod operations;
mod ownership;
mod pods;
mod pool;
mod provision;
mod scenario;
mod size_limits;
mod support;
mod toolbox;
