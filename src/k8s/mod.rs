//! Kubernetes objects this provisioner builds; pure, no API calls.

pub mod objects;
