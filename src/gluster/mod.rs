//! Everything that talks to gluster nodes: the SSH executor, `--xml` parsing, the pure parts of
//! a volume (its name, its bricks' placement, its CLI arguments) and the backend that puts them
//! together.

pub mod backend;
pub mod check;
pub mod cli;
pub mod heal;
pub mod health;
pub mod image;
pub mod naming;
pub mod place;
pub mod ssh;
pub mod xml;

pub use crate::volumes::VolumeRequest;
pub use backend::{MOVING, NOT_MOVING, ProvisionedVolume, RootEntry, SshBackend};
pub use place::Brick;
pub use ssh::{RemoteOutput, SshExecutor};
