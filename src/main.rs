//! The binary's edge: flags, logging, and the two subcommands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use glusterfs_provisioner::config::Topology;
use glusterfs_provisioner::controller::{self, Settings};
use glusterfs_provisioner::gluster::{SshBackend, SshExecutor, xml};

/// Kubernetes external provisioner for GlusterFS volumes.
///
/// Every flag can also be set from the environment variable shown with it.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log filter, e.g. `info` or `info,glusterfs_provisioner=debug`; RUST_LOG also works.
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = "info,kube=warn"
    )]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision and delete GlusterFS volumes for PVCs (the normal mode).
    Run(RunArgs),
    /// Check every node of the topology file: SSH reachable, host key known, peers connected.
    Topology {
        #[command(flatten)]
        topology: TopologyArgs,
    },
}

#[derive(Args)]
struct TopologyArgs {
    /// Topology file: clusters, nodes (SSH and storage addresses, zone, brick roots), SSH settings.
    #[arg(long = "topology", env = "GLUSTER_TOPOLOGY")]
    path: PathBuf,
    /// Directory for the SSH multiplexing sockets.
    #[arg(long, env = "GLUSTER_SSH_CONTROL_DIR", default_value = "/tmp")]
    ssh_control_dir: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    topology: TopologyArgs,
    /// Kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Provisioner name that StorageClasses put in `provisioner:`.
    #[arg(
        long,
        env = "PROVISIONER_NAME",
        default_value = "gluster.org/glusterfs"
    )]
    provisioner_name: String,
    /// Claims provisioned, and volumes deleted, in parallel.
    #[arg(long, env = "WORKERS", default_value_t = 8)]
    workers: u16,
    /// First retry delay after a failure, in seconds; it doubles on each further failure.
    #[arg(long, env = "RETRY_MIN_SECONDS", default_value_t = 15.0)]
    retry_min_seconds: f64,
    /// Longest retry delay, in seconds.
    #[arg(long, env = "RETRY_MAX_SECONDS", default_value_t = 1000.0)]
    retry_max_seconds: f64,
    /// Name of this instance in events (set it to the pod name).
    #[arg(long, env = "POD_NAME", default_value = "glusterfs-provisioner")]
    instance: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log_level)?)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Topology { topology } => check_topology(&topology).await,
    }
}

fn executor(args: &TopologyArgs) -> anyhow::Result<(Topology, SshExecutor)> {
    let topology = Topology::load(&args.path)?;
    let dir = args.ssh_control_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((topology.clone(), SshExecutor::new(topology.ssh, dir)))
}

async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let Some(path) = kubeconfig else {
        return Ok(kube::Client::try_default().await?);
    };
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (topology, ssh) = executor(&args.topology)?;
    let client = client(args.kubeconfig.as_deref()).await?;
    let settings = Settings {
        provisioner: args.provisioner_name,
        workers: args.workers.max(1),
        retry_min: Duration::from_secs_f64(args.retry_min_seconds),
        retry_max: Duration::from_secs_f64(args.retry_max_seconds),
        instance: args.instance,
    };
    controller::run(client, SshBackend::new(topology, ssh), settings).await?;
    Ok(())
}

async fn check_topology(args: &TopologyArgs) -> anyhow::Result<()> {
    let (topology, ssh) = executor(args)?;
    let mut problems = 0;
    println!(
        "{:<10} {:<16} {:<16} {:<10} STATUS",
        "CLUSTER", "NODE", "SSH", "ZONE"
    );
    for cluster in &topology.clusters {
        for node in &cluster.nodes {
            let args = ["peer", "status", "--xml"].map(String::from);
            let peers = ssh
                .run_ok(&node.ssh_address, "gluster", &args)
                .await
                .and_then(|out| xml::parse_peer_status(&out));
            let status = match peers {
                Ok(peers) => {
                    let down: Vec<_> = peers
                        .iter()
                        .filter(|p| !p.is_connected())
                        .map(|p| p.hostname.as_str())
                        .collect();
                    if down.is_empty() {
                        format!("ok, {} peers connected", peers.len())
                    } else {
                        problems += 1;
                        format!("peers not connected: {}", down.join(", "))
                    }
                }
                Err(e) => {
                    problems += 1;
                    e.to_string()
                }
            };
            println!(
                "{:<10} {:<16} {:<16} {:<10} {status}",
                cluster.name, node.name, node.ssh_address, node.zone
            );
        }
    }
    anyhow::ensure!(problems == 0, "{problems} node(s) with problems");
    Ok(())
}
