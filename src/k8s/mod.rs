//! Kubernetes objects: pure builders of what this provisioner creates (no API calls), and the
//! compact form it caches PVs in.

pub mod cached;
pub mod objects;
