use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use glusterfs_provisioner::config::Topology;
use glusterfs_provisioner::gluster::{SshExecutor, xml};

/// Kubernetes external provisioner for GlusterFS volumes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every node of the topology file: SSH reachable, host key known, peers connected.
    Topology {
        /// Topology file (clusters, nodes, SSH settings).
        #[arg(long, env = "GLUSTER_TOPOLOGY")]
        topology: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match Cli::parse().command {
        Command::Topology { topology } => check_topology(&topology).await,
    }
}

async fn check_topology(path: &std::path::Path) -> anyhow::Result<()> {
    let topology = Topology::load(path)?;
    let control_dir = tempfile_dir()?;
    let ssh = SshExecutor::new(topology.ssh.clone(), control_dir.clone());
    let mut problems = 0;
    println!(
        "{:<10} {:<16} {:<16} {:<10} STATUS",
        "CLUSTER", "NODE", "SSH", "ZONE"
    );
    for cluster in &topology.clusters {
        for node in &cluster.nodes {
            let status = match ssh
                .run_ok(
                    &node.ssh_address,
                    "gluster",
                    &["peer".into(), "status".into(), "--xml".into()],
                )
                .await
                .and_then(|out| xml::parse_peer_status(&out))
            {
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
    drop(ssh);
    std::fs::remove_dir_all(&control_dir).ok();
    anyhow::ensure!(problems == 0, "{problems} node(s) with problems");
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("glusterfs-provisioner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
