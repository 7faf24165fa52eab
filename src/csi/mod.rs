//! The CSI node plugin (`glusterfs-provisioner node`): the Identity and Node services on a unix
//! socket the kubelet dials, and the kubelet plugin-registration service that announces it.
//!
//! - `mounts`: the mount table, bind mounts, unmounts.
//! - `fuse`: FUSE mounts that outlive the plugin; `liveness`: a live mount from a dead one.
//! - `node`: stage (one FUSE mount per volume and node), publish (bind mounts), stats.
//! - `identity`, `registration`: what the driver is, for CSI and for the kubelet.
//! - `authority`: lets older kubelets' requests through (their `:authority` is a path).

pub mod authority;
pub mod fuse;
pub mod identity;
pub mod liveness;
pub mod mounts;
pub mod node;
pub mod registration;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::Status;

use crate::http;
use crate::metrics::Metrics;

/// Types and services generated from `proto/` (the CSI specification's Identity and Node
/// services, the kubelet's plugin registration).
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("csi.v1");
    pub mod registration {
        tonic::include_proto!("pluginregistration");
    }
}

/// Failures of the node plugin, each with the gRPC code CSI prescribes for it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("an operation on volume {0} is in progress")]
    Busy(String),
    /// Not now: a mount that has not answered yet; the kubelet retries.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Mount(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let message = e.to_string();
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::NotFound(_) => Status::not_found(message),
            Error::Busy(_) => Status::aborted(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Mount(_) | Error::Io { .. } | Error::Serve(_) => Status::internal(message),
        }
    }
}

pub struct NodeSettings {
    pub driver: String,
    pub node_id: String,
    /// The CSI socket, at the same path in the plugin's container as on the node.
    pub csi_socket: PathBuf,
    /// The registration socket in the kubelet's `plugins_registry`; none behind a
    /// node-driver-registrar sidecar.
    pub registration_socket: Option<PathBuf>,
    pub log_dir: PathBuf,
    /// The host's cgroup file system, for FUSE clients that outlive the plugin; none to leave
    /// them in the plugin's cgroup.
    pub fuse_cgroup_root: Option<PathBuf>,
    pub timeout: Duration,
    /// How long a mount may go without an answer before it is replaced as hung.
    pub hung: Duration,
    /// Where to serve /metrics, /healthz and /readyz; none for no HTTP server.
    pub http_address: Option<SocketAddr>,
    /// The provisioner's servers ConfigMap as mounted (`config::csi::CurrentServers`): volumes
    /// mount from their servers now, not only those their PV was made with.
    pub servers_file: Option<PathBuf>,
}

/// A fresh listening socket at `path` (one left by an earlier run is replaced).
fn listen(path: &Path) -> Result<UnixListener, Error> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| Error::Io { what, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("removing")(e)),
        _ => {}
    }
    UnixListener::bind(path).map_err(io("listening on"))
}

/// The connections of `listener`, each passed through [`authority::fix_authority`].
fn incoming(listener: UnixListener) -> impl Stream<Item = std::io::Result<authority::Fixed>> {
    UnixListenerStream::new(listener).map(|conn| conn.map(authority::fix_authority))
}

/// Serves until SIGTERM or SIGINT, then removes the sockets (the kubelet then unregisters the
/// driver until a new plugin registers it again). Mounts stay: pods keep using them.
pub async fn run(settings: NodeSettings) -> Result<(), Error> {
    std::fs::create_dir_all(&settings.log_dir).map_err(|source| Error::Io {
        what: format!("creating {}", settings.log_dir.display()),
        source,
    })?;
    let procs = match &settings.fuse_cgroup_root {
        Some(root) => {
            let procs = fuse::fuse_cgroups(root)?;
            let dirs: Vec<String> = procs
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches("/cgroup.procs").into())
                .collect();
            tracing::info!(
                cgroups = dirs.join(", "),
                "FUSE clients live in cgroups of their own: they outlive the plugin"
            );
            procs
        }
        None => {
            tracing::warn!(
                "no --fuse-cgroup-root: FUSE clients live in the plugin's own cgroup: they die \
                 with the plugin's container"
            );
            vec![]
        }
    };
    let metrics = Arc::new(Metrics::new());
    if let Some(address) = settings.http_address {
        // Metrics are no reason to stop mounting: a port in use is logged, not fatal.
        match http::bind(address).await {
            Ok(listener) => {
                let health = Arc::new(http::Health::default());
                health.set_ready(true);
                tokio::spawn(http::serve(listener, metrics.clone(), health));
            }
            Err(error) => tracing::warn!(%address, %error, "not serving metrics"),
        }
    }
    let fuse_cgroups = fuse::FuseCgroups {
        procs,
        join_failures: metrics.fuse_cgroup_join_failures.clone(),
    };
    let adopted = mounts::mount_table()?
        .iter()
        .filter(|m| m.fs_type == "fuse.glusterfs")
        .count();
    tracing::info!(
        driver = settings.driver,
        node = settings.node_id,
        adopted,
        "node plugin starting; GlusterFS mounts found on the node are kept"
    );
    let node = node::NodeService::new(
        settings.node_id.clone(),
        settings.log_dir.clone(),
        fuse_cgroups,
        liveness::Checks::new(settings.timeout, settings.hung),
        settings.servers_file.clone(),
    );
    let identity = identity::IdentityService {
        driver: settings.driver.clone(),
    };
    let csi = tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::new(identity))
        .add_service(proto::node_server::NodeServer::new(node))
        .serve_with_incoming_shutdown(incoming(listen(&settings.csi_socket)?), shutdown());
    let registration = async {
        let Some(socket) = &settings.registration_socket else {
            return Ok(());
        };
        let service = registration::RegistrationService {
            driver: settings.driver.clone(),
            endpoint: settings.csi_socket.display().to_string(),
        };
        tonic::transport::Server::builder()
            .add_service(proto::registration::registration_server::RegistrationServer::new(service))
            .serve_with_incoming_shutdown(incoming(listen(socket)?), shutdown())
            .await
            .map_err(Error::from)
    };
    let served = tokio::try_join!(async { csi.await.map_err(Error::from) }, registration);
    for socket in [
        Some(&settings.csi_socket),
        settings.registration_socket.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        std::fs::remove_file(socket).ok();
    }
    served.map(drop)
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("stopping the node plugin");
}
