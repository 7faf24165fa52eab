//! Everything that talks to gluster nodes: the SSH executor, `--xml` parsing, pure volume
//! planning (names, placement, CLI arguments) and the backend that puts them together.

pub mod backend;
pub mod check;
pub mod heal;
pub mod health;
pub mod image;
pub mod plan;
pub mod ssh;
pub mod xml;

pub use crate::volumes::VolumeRequest;
pub use backend::{MOVING, NOT_MOVING, ProvisionedVolume, RootEntry, SshBackend};
pub use plan::Brick;
pub use ssh::{RemoteOutput, SshExecutor};
