//! Everything that talks to gluster nodes.

pub mod ssh;
pub mod xml;

pub use ssh::{RemoteOutput, SshExecutor};
