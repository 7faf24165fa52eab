//! Phase 1: the baseline, volumes made by gluster's own CLI over ssh, no provisioner code.

use super::*;

/// The baseline runs gluster's own CLI on the nodes, as an operator's script would: through the
/// system's `ssh` client (one multiplexed master per node), none of the provisioner's code.
pub(crate) struct Cli {
    pub(crate) common: Vec<String>,
}

/// `gluster` with the retries any script needs under load, as the provisioner's: glusterd
/// refuses a command while another holds its cluster-wide lock, and a node fails its part of a
/// commit when two bricks started at once were given one port (`start force` starts it again).
pub(crate) const GLUSTER_FN: &str = r#"set -e
g() {
  while ! out=$(gluster --mode=script "$@" 2>&1); do
    case "$out" in
      *"Another transaction"*|*"Locking failed"*|*"try again"*) sleep 0.1 ;;
      # Only a start is tried again: a create's second try would meet what the first left.
      *"Commit failed"*) [ "$1 $2" = "volume start" ] || { echo "gluster $*: $out" >&2; return 1; }; sleep 0.1 ;;
      *) echo "gluster $*: $out" >&2; return 1 ;;
    esac
  done
}
"#;

/// A script that stops (forced) and deletes the volume `name`, with [`GLUSTER_FN`]'s retries.
pub(crate) fn stop_and_delete(name: &str) -> String {
    format!("{GLUSTER_FN}g volume stop {name} force\ng volume delete {name}\n")
}

impl Cli {
    pub(crate) fn new() -> Self {
        let ssh = &env().topology.ssh;
        let dir = env().state_dir.join("test-ssh").join(unique("cli"));
        std::fs::create_dir_all(&dir).unwrap();
        let opt = |o: String| ["-o".to_string(), o];
        let mut common = vec!["-F".into(), "/dev/null".into(), "-i".into()];
        common.push(ssh.private_key.display().to_string());
        common.extend([
            "-l".into(),
            ssh.user.clone(),
            "-p".into(),
            ssh.port.to_string(),
        ]);
        for o in [
            format!("UserKnownHostsFile={}", ssh.known_hosts.display()),
            "StrictHostKeyChecking=yes".into(),
            "BatchMode=yes".into(),
            "ControlMaster=auto".into(),
            format!("ControlPath={}/%h", dir.display()),
            "ControlPersist=600".into(),
        ] {
            common.extend(opt(o));
        }
        Cli { common }
    }

    /// Runs `script` with bash on `host`.
    pub(crate) async fn run(&self, host: &str, script: &str) {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new("ssh")
            .args(&self.common)
            .args([host, "bash", "-s"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub(crate) struct Baseline {
    pub(crate) parallel: usize,
    /// Seconds from the start until each volume was started and size-limited.
    pub(crate) ready: Vec<f64>,
    /// Seconds each volume took from its first command.
    pub(crate) each: Vec<f64>,
    pub(crate) create: f64,
    pub(crate) delete: f64,
}

/// Makes `n` replica-3 volumes of 1 GiB with the gluster CLI, `parallel` at a time, as the
/// provisioner makes them (brick directories owned by the GID, the GID and timeouts set,
/// started, quota limit); then stops and deletes them. Volume i's commands run on node
/// i mod 3, as the provisioner spreads them.
pub(crate) async fn baseline(cli: &Cli, cluster: &Cluster, n: usize, parallel: usize) -> Baseline {
    let tag = unique("base").replace('-', "");
    let nodes = &cluster.nodes;
    let brick = |node: &glusterfs_provisioner::config::Node, name: &str| {
        format!("{}/{name}", node.brick_roots[0].path.display())
    };
    let names: Vec<String> = (0..n).map(|i| format!("bench_{tag}_{i}")).collect();
    let start = Instant::now();
    let timings: Vec<(f64, f64)> = stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move {
            let began = Instant::now();
            let gid = GID_MIN + i as u32;
            futures::future::join_all(nodes.iter().map(|node| {
                let dir = brick(node, name);
                let script = format!("install -d -m 2775 -g {gid} {dir}/brick\n");
                async move { cli.run(&node.ssh_address, &script).await }
            }))
            .await;
            let bricks: Vec<String> = nodes
                .iter()
                .map(|node| format!("{}:{}/brick", node.storage_address, brick(node, name)))
                .collect();
            let script = format!(
                "{GLUSTER_FN}g volume create {name} replica 3 {bricks}\n\
                 g volume set {name} storage.owner-gid {gid} features.soft-timeout 0 \
                 features.hard-timeout 0\n\
                 g volume start {name} force\n\
                 g volume quota {name} enable\n\
                 g volume quota {name} limit-usage / 1GB\n",
                bricks = bricks.join(" ")
            );
            cli.run(&nodes[i % nodes.len()].ssh_address, &script).await;
            (secs(start.elapsed()), secs(began.elapsed()))
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let create = secs(start.elapsed());
    let (mut ready, each): (Vec<f64>, Vec<f64>) = timings.into_iter().unzip();
    ready.sort_by(f64::total_cmp);
    let start = Instant::now();
    stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move {
            cli.run(&nodes[i % nodes.len()].ssh_address, &stop_and_delete(name))
                .await;
            futures::future::join_all(nodes.iter().map(|node| {
                let script = format!("rm -rf --one-file-system {}\n", brick(node, name));
                async move { cli.run(&node.ssh_address, &script).await }
            }))
            .await;
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await;
    let delete = secs(start.elapsed());
    log(format!(
        "baseline x{parallel}: {n} volumes made in {create:.1} s, deleted in {delete:.1} s"
    ));
    Baseline {
        parallel,
        ready,
        each,
        create,
        delete,
    }
}
