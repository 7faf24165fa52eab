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

    #[error("SSH connection to {host} failed: {}", with_causes(source))]
    SshConnect {
        host: String,
        #[source]
        source: openssh::Error,
    },

    #[error(
        "SSH host key of {host} does not match {known_hosts}: refused (strict host key \
         checking); if the node was reinstalled, replace its line there"
    )]
    SshHostKey { host: String, known_hosts: String },

    #[error(
        "cannot read {path}: {source}; in a pod, the SSH Secret's files are readable by the \
         pod's fsGroup only"
    )]
    SshFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("SSH command on {host} failed: {}", with_causes(source))]
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

    #[error("invalid StorageClass parameter: {0}")]
    InvalidParameter(String),

    #[error("unsupported claim: {0}")]
    InvalidClaim(String),

    #[error("conversion to CSI: {0}")]
    Convert(String),

    #[error("unknown cluster {0:?}: not in the topology file")]
    UnknownCluster(String),

    #[error("cannot place bricks: {0}")]
    Placement(String),

    #[error("PV {pv}: {message}")]
    InvalidVolume { pv: String, message: String },

    #[error("refusing to touch it: {0}")]
    NotOurs(String),

    #[error("GID range {min}-{max} is full")]
    GidRangeFull { min: u32, max: u32 },

    #[error("StorageClass {0:?} not found")]
    ClassNotFound(String),

    #[error("Heketi TLS setup: {0}")]
    HeketiTls(String),

    #[error("Heketi at {url} unreachable ({request}): {cause}")]
    HeketiUnreachable {
        url: String,
        request: String,
        cause: String,
    },

    #[error("Heketi {request}: HTTP {status}: {message}")]
    Heketi {
        request: String,
        status: u16,
        message: String,
    },

    #[error("Heketi {request}: no answer within {seconds} s")]
    HeketiTimeout { request: String, seconds: u64 },

    #[error("Heketi credentials: {0}")]
    HeketiCredentials(String),

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),

    #[error("lost the leader lease")]
    LostLease,
}

impl Error {
    /// glusterd serialises conflicting operations with cluster-wide locks, and under load a
    /// node can fail its part of a commit (a brick slow to start); such refusals pass, and every
    /// step is safe to repeat. A node that is down passes too: the retry goes to another.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Gluster { message, .. } if !self.is_node_down() => {
                message.contains("Another transaction is in progress")
                    || message.contains("Locking failed")
                    || message.contains("Please try again after some time")
                    || message.contains("Commit failed")
            }
            // Host keys do not change back by themselves.
            Error::SshHostKey { .. } => false,
            _ => self.is_node_down(),
        }
    }

    /// The node a command ran on failed, not the command: its sshd or glusterd is down, or
    /// its host key is refused. Another node can take the command.
    pub fn is_node_down(&self) -> bool {
        match self {
            Error::Gluster { message, .. } => message.contains("gluster daemon is operational"),
            Error::SshCommand { .. } | Error::SshConnect { .. } | Error::SshHostKey { .. } => true,
            _ => false,
        }
    }

    /// Heketi does not know the id (404, or its "Id not found" text).
    pub fn is_heketi_not_found(&self) -> bool {
        matches!(self, Error::Heketi { status, message, .. }
            if *status == 404 || message.contains("Id not found"))
    }

    /// Heketi has more operations in flight than it takes ("Server busy", 429).
    pub fn is_heketi_busy(&self) -> bool {
        matches!(self, Error::Heketi { status: 429, .. })
    }

    /// A short, fixed reason for metrics and event reasons: never names or free text.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::TopologyRead { .. }
            | Error::TopologyParse { .. }
            | Error::TopologyInvalid(_) => "topology",
            Error::SshConnect { .. } | Error::SshCommand { .. } => "unreachable",
            Error::SshHostKey { .. } | Error::SshFileUnreadable { .. } => "hostkey",
            Error::RemoteCommand { .. } | Error::GlusterXml { .. } | Error::Gluster { .. } => {
                "gluster"
            }
            Error::InvalidParameter(_) | Error::ClassNotFound(_) => "parameters",
            Error::InvalidClaim(_) => "claim",
            Error::Convert(_) => "convert",
            Error::UnknownCluster(_) => "cluster",
            Error::Placement(_) => "placement",
            Error::InvalidVolume { .. } => "volume",
            Error::NotOurs(_) => "ownership",
            Error::GidRangeFull { .. } => "gid",
            Error::HeketiTls(_)
            | Error::HeketiUnreachable { .. }
            | Error::Heketi { .. }
            | Error::HeketiTimeout { .. } => "heketi",
            Error::HeketiCredentials(_) => "credentials",
            Error::Kube(_) => "kubernetes",
            Error::Lease(_) | Error::LostLease => "lease",
        }
    }
}

/// An error and its causes: `openssh` keeps ssh's own words ("Connection refused", "Host key
/// verification failed") in the cause.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        cause = c.source();
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
