//! The crate's one error type. Messages are written to be shown to users in events, so they name
//! the object and the cause; they never carry secrets.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read topology file {path}: {source}")]
    TopologyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("topology file {path}: {source}")]
    TopologyParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid topology: {0}")]
    TopologyInvalid(String),

    #[error("SSH connection to {host} failed: {source}")]
    SshConnect {
        host: String,
        #[source]
        source: openssh::Error,
    },

    #[error("SSH command on {host} failed: {source}")]
    SshCommand {
        host: String,
        #[source]
        source: openssh::Error,
    },

    #[error("`{command}` on {host} exited with {status}: {stderr}")]
    RemoteCommand {
        host: String,
        command: String,
        status: String,
        stderr: String,
    },

    #[error("cannot parse gluster XML output of `{command}`: {source}")]
    GlusterXml {
        command: String,
        #[source]
        source: quick_xml::DeError,
    },

    #[error("gluster `{command}` failed: {message}")]
    Gluster { command: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
