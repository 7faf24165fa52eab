//! Kubernetes objects: pure builders of what this provisioner creates (no API calls), the
//! compact form it caches PVs in, and how the API server's answers are read.

pub mod api;
pub mod cached;
pub mod objects;
