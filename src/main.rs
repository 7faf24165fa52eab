//! The binary's edge: flags, logging, and the subcommands.

// The command futures nest deeper than the default limit lets rustc lay out.
#![recursion_limit = "256"]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use glusterfs_provisioner::config::csi as csi_names;
use glusterfs_provisioner::config::{PvType, Topology};
use glusterfs_provisioner::controller::{self, Settings};
use glusterfs_provisioner::gluster::backend::reload;
use glusterfs_provisioner::gluster::check;
use glusterfs_provisioner::gluster::{SshBackend, SshExecutor};
use glusterfs_provisioner::heketi::HeketiHttp;
use glusterfs_provisioner::http::{self, Health};
use glusterfs_provisioner::leader::{self, LeaseSettings};
use glusterfs_provisioner::metrics::Metrics;
use glusterfs_provisioner::report::{self, Outcome, OutputArgs, Printer};
use glusterfs_provisioner::{adopt, audit, convert, csi, evacuate, identity, status};
use k8s_openapi::api::core::v1::ObjectReference;

/// Kubernetes external provisioner for GlusterFS volumes.
///
/// Every flag can also be set from the environment variable shown with it.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log filter, e.g. `info` or `info,glusterfs_provisioner=debug`; RUST_LOG also works.
    /// [default: `info,kube=warn` for `run` and `node`, `warn` for the operator's commands]
    #[arg(long, global = true, env = "RUST_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision and delete GlusterFS volumes for PVCs (the normal mode).
    Run(Box<RunArgs>),
    /// Check every node of the topology file: SSH reachable, host key known, peers connected.
    Topology {
        #[command(flatten)]
        topology: TopologyArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The CSI node plugin: mounts the volumes of CSI PVs for the pods of this node (one per
    /// node, from a DaemonSet).
    Node(NodeArgs),
    /// Replace `glusterfs` PVs by CSI PVs of the same name, capacity, GID and claim, keeping
    /// the volume and its data. Prints the plan only, unless --apply.
    Convert(ConvertArgs),
    /// Each claim's volume: bricks running, entries to heal, split-brain; and for each node
    /// whether taking it down now costs any volume its quorum. Fails unless every volume is
    /// whole.
    Status {
        #[command(flatten)]
        topology: TopologyArgs,
        /// Kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster service account.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// What is left over, both ways: volumes and brick entries of ours with no PV or claim,
    /// PVs whose volume is gone, Endpoints/Services of ours with no PV, GIDs in use twice.
    /// Fails while any is left. Removes only orphans of ours with --apply.
    Audit(AuditArgs),
    /// Volumes that record no identity (made by an earlier version or by hand), each with the
    /// evidence that it is a Bound claim's of this cluster; records the identity only with
    /// --apply. Until then nothing automatic stops or removes such a volume.
    Adopt(AdoptArgs),
    /// Move every brick of this cluster's volumes off a node (dead, or to be retired) to the
    /// others, one volume healed before the next; prints the plan only, unless --apply.
    ///
    /// A table of the plan (a row per volume: claim, from, to, how or why not, state), then with
    /// --apply a line per volume once it is moved and healed; `-o json`: one document at the
    /// end. Exits 0 when every volume can be placed (with --apply: every brick moved and
    /// healed), 1 when a volume cannot be placed (nothing moves then), or with --apply is left
    /// on the node or failed (each named on stderr, with why), 2 when it could not run (usage,
    /// API server or gluster unreachable, unknown node).
    Evacuate(EvacuateArgs),
}

#[derive(Args)]
struct EvacuateArgs {
    #[command(flatten)]
    access: Access,
    /// The topology node to empty.
    #[arg(long)]
    node: String,
    /// Move; without it only the plan.
    #[arg(long)]
    apply: bool,
    /// Volumes moving at once; each takes one copy away (or adds one) until it is healed.
    #[arg(long, default_value_t = 1)]
    at_once: usize,
    /// Longest wait for one volume's new brick to heal, in seconds.
    #[arg(long, default_value_t = 3600)]
    heal_timeout_seconds: u64,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct AdoptArgs {
    #[command(flatten)]
    access: Access,
    /// Record the identity on each volume the evidence supports; without it only the list.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct AuditArgs {
    #[command(flatten)]
    access: Access,
    /// Orphans younger than this are listed, never removed: a provision may be under way.
    #[arg(long, default_value_t = 3600)]
    grace_seconds: u64,
    /// Remove the orphans of ours older than the grace period; without it only the list.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["pv", "namespace", "all"])))]
struct ConvertArgs {
    /// Kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Topology file: the CSI PVs' servers are its nodes of each volume (never its Endpoints,
    /// which namespace users may edit).
    #[arg(long, env = "GLUSTER_TOPOLOGY")]
    topology: PathBuf,
    /// This PV (repeatable).
    #[arg(long)]
    pv: Vec<String>,
    /// Every PV bound to a claim of this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Every `glusterfs` PV bound to a claim.
    #[arg(long)]
    all: bool,
    /// Convert; without it only the plan is printed.
    #[arg(long)]
    apply: bool,
    /// The CSI driver the new PVs name.
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = csi_names::DRIVER_NAME)]
    driver_name: String,
    /// Longest wait for a claim to be Bound to its new PV, in seconds.
    #[arg(long, default_value_t = 120)]
    bind_timeout_seconds: u64,
    /// The provisioner's namespace: conversions in progress are recorded there, out of
    /// namespace users' reach, and the provisioner keeps their GIDs reserved.
    #[arg(
        long,
        env = "PROVISIONER_NAMESPACE",
        default_value = "glusterfs-provisioner"
    )]
    provisioner_namespace: String,
}

#[derive(Args)]
struct NodeArgs {
    /// This node's name (the Kubernetes node the plugin runs on).
    #[arg(long, env = "NODE_NAME")]
    node_id: String,
    /// The CSI driver name; CSI PVs name it in `spec.csi.driver`.
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = csi_names::DRIVER_NAME)]
    driver_name: String,
    /// The kubelet's root directory, mounted at the same path in the plugin's container.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    kubelet_dir: PathBuf,
    /// Register with the kubelet's plugin watcher (off behind a node-driver-registrar sidecar).
    #[arg(long, env = "REGISTER_WITH_KUBELET", default_value_t = true, action = clap::ArgAction::Set)]
    register: bool,
    /// Directory of the FUSE clients' logs, one file per volume.
    #[arg(
        long,
        env = "GLUSTERFS_LOG_DIR",
        default_value = "/var/log/glusterfs/csi"
    )]
    log_dir: PathBuf,
    /// The host's cgroup file system, mounted into the container: FUSE clients move to a
    /// cgroup of their own there, so restarting the plugin does not kill the pods' mounts.
    #[arg(long, env = "FUSE_CGROUP_ROOT")]
    fuse_cgroup_root: Option<PathBuf>,
    /// Longest a look at a mount may take before it counts as dead, in seconds.
    #[arg(long, env = "MOUNT_TIMEOUT_SECONDS", default_value_t = 10)]
    mount_timeout_seconds: u64,
    /// Seconds a mount may go without an answer before it is replaced as hung; a bit more than
    /// gluster's network.ping-timeout (42), which a live client waits out for a brick that went
    /// down before it answers.
    #[arg(long, env = "MOUNT_HUNG_SECONDS", default_value_t = 45)]
    mount_hung_seconds: u64,
    /// Address of the HTTP server for /metrics, /healthz and /readyz; none without it.
    #[arg(long, env = "HTTP_ADDRESS")]
    http_address: Option<std::net::SocketAddr>,
    /// The provisioner's servers ConfigMap, mounted (its `servers.json`): a volume whose bricks
    /// moved mounts from its servers now first, then from those its PV lists. Read at each
    /// stage; absent or unparsable, the PV's servers alone.
    #[arg(long, env = "SERVERS_FILE")]
    servers_file: Option<PathBuf>,
}

#[derive(Args)]
struct TopologyArgs {
    /// Topology file: clusters, nodes (SSH and storage addresses, zone, brick roots), SSH settings.
    /// Needed by classes without `resturl`; a provisioner serving only Heketi classes can go
    /// without it.
    #[arg(long = "topology", env = "GLUSTER_TOPOLOGY")]
    path: Option<PathBuf>,
    /// Directory for the SSH multiplexing sockets.
    #[arg(long, env = "GLUSTER_SSH_CONTROL_DIR", default_value = "/tmp")]
    ssh_control_dir: PathBuf,
}

/// What `run` and `audit` reach and who they are.
#[derive(Args)]
struct Access {
    #[command(flatten)]
    topology: TopologyArgs,
    /// Kubeconfig file; without it, KUBECONFIG, ~/.kube/config or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Provisioner name that StorageClasses put in `provisioner:`; PVs it made are ours.
    #[arg(
        long,
        env = "PROVISIONER_NAME",
        default_value = "gluster.org/glusterfs"
    )]
    provisioner_name: String,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    access: Access,
    /// Claims provisioned, and volumes deleted, in parallel.
    #[arg(long, env = "WORKERS", default_value_t = 32)]
    workers: u16,
    /// Clone copies running at once in each gluster cluster of the topology, beside the
    /// workers (a copy holds none); more clones wait, Pending, for a copy to end.
    #[arg(long, env = "CLONE_COPIES", default_value_t = 2)]
    clone_copies: u16,
    /// Volumes being made at once (so at most this many gluster commands making volumes are
    /// out); the rest wait, first come first served. Fewer: a burst's first claims are Bound
    /// sooner; more: its last ones (the README's benchmark shows the trade-off).
    #[arg(long, env = "GLUSTER_COMMANDS", default_value_t = 16)]
    gluster_commands: u16,
    /// First retry delay after a failure, in seconds; it doubles on each further failure.
    #[arg(long, env = "RETRY_MIN_SECONDS", default_value_t = 15.0)]
    retry_min_seconds: f64,
    /// Longest retry delay, in seconds.
    #[arg(long, env = "RETRY_MAX_SECONDS", default_value_t = 1000.0)]
    retry_max_seconds: f64,
    /// Name of this instance in events and in the lease (set it to the pod name).
    #[arg(long, env = "POD_NAME", default_value_t = default_instance())]
    instance: String,
    /// The ConfigMap (in the provisioner's namespace) the topology file is mounted from: each
    /// reload, or refusal of a bad file, is an event on it. Empty: no events.
    #[arg(long, env = "TOPOLOGY_CONFIG_MAP", default_value = "")]
    topology_config_map: String,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: std::net::SocketAddr,
    /// Seconds between refreshes of the GID, volume and brick capacity gauges.
    #[arg(long, env = "GAUGE_INTERVAL_SECONDS", default_value_t = 30)]
    gauge_interval_seconds: u64,
    /// Seconds between looks at a whole volume's health (bricks, heal, split-brain); a
    /// degraded one is looked at every 15 s, and every volume of a cluster at once when one of
    /// its nodes comes back.
    #[arg(long, env = "HEALTH_INTERVAL_SECONDS", default_value_t = 600)]
    health_interval_seconds: u64,
    /// Longest a Heketi operation (create, delete, expand) may take, in seconds.
    #[arg(long, env = "HEKETI_TIMEOUT_SECONDS", default_value_t = 600)]
    heketi_timeout_seconds: u64,
    /// Take over from the removed in-tree provisioner: also provision claims of
    /// `kubernetes.io/glusterfs` classes, and delete the Released PVs it made.
    #[arg(long, env = "MIGRATE_IN_TREE", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    migrate_in_tree: bool,
    /// The PVs of classes without a `pvtype` parameter: `glusterfs` (mounted by the kubelet's
    /// own plugin, Kubernetes <= 1.25), `csi` (mounted by the `node` plugin), or `auto`: by the
    /// API server's version.
    #[arg(long, env = "PV_TYPE", default_value = "auto")]
    pv_type: PvTypeArg,
    /// The CSI driver name CSI PVs give (the node plugin's `--driver-name`).
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = csi_names::DRIVER_NAME)]
    csi_driver_name: String,
    /// The node plugin's namespace, where the leader keeps the servers of volumes whose bricks
    /// moved off those their PV lists (README: "Mounts follow the pool").
    #[arg(long, env = "SERVERS_NAMESPACE", default_value = csi_names::NODE_NAMESPACE)]
    servers_namespace: String,
    /// The name of that ConfigMap (the node plugin mounts it).
    #[arg(long, env = "SERVERS_CONFIG_MAP", default_value = csi_names::SERVERS_CONFIG_MAP)]
    servers_config_map: String,
    /// Read and write Endpoints and Services (`glusterfs` PVs need them). `false` for an
    /// install that makes CSI PVs only and is granted no access to them (`manifests/csi-only`).
    #[arg(long, env = "MANAGE_ENDPOINTS", default_value_t = true, action = clap::ArgAction::Set)]
    manage_endpoints: bool,
    #[command(flatten)]
    lease: LeaseArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PvTypeArg {
    Auto,
    Glusterfs,
    Csi,
}

/// The kind of PV a cluster can mount: Kubernetes 1.26 removed the kubelet's `glusterfs` plugin.
async fn pv_type(arg: PvTypeArg, client: &kube::Client) -> anyhow::Result<PvType> {
    Ok(match arg {
        PvTypeArg::Glusterfs => PvType::Glusterfs,
        PvTypeArg::Csi => PvType::Csi,
        PvTypeArg::Auto => {
            let version = client.apiserver_version().await?;
            let minor: u32 = version
                .minor
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .with_context(|| format!("API server minor version {:?}", version.minor))?;
            let kind = if version.major == "1" && minor < 26 {
                PvType::Glusterfs
            } else {
                PvType::Csi
            };
            tracing::info!(
                version = version.git_version,
                ?kind,
                "PV type by the API server's version"
            );
            kind
        }
    })
}

#[derive(Args)]
struct LeaseArgs {
    /// Run only while holding the leader lease (for more than one replica).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "glusterfs-provisioner")]
    lease_name: String,
    /// The provisioner's own namespace: its Lease, and the records of `convert`.
    #[arg(long, env = "LEASE_NAMESPACE", default_value = "glusterfs-provisioner")]
    lease_namespace: String,
    /// Seconds a lease holds without renewal; a standby takes over after this.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..))]
    lease_duration_seconds: u64,
    /// Seconds before expiry the holder renews the lease (less than the duration).
    #[arg(long, env = "LEASE_RENEW_BEFORE_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    lease_renew_before_seconds: u64,
}

fn default_instance() -> String {
    format!("glusterfs-provisioner-{}", std::process::id())
}

impl Command {
    /// The log filter without `--log-level` or RUST_LOG: the services say what they do; the
    /// operator's commands keep stderr for warnings, so their report reads alone.
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Run(_) | Command::Node(_) | Command::Convert(_) => "info,kube=warn",
            Command::Topology { .. } | Command::Status { .. } => "warn",
            Command::Audit(_) | Command::Adopt(_) | Command::Evacuate(_) => "warn",
        }
    }
}

/// The name it is run by: as `kubectl-gluster` on the PATH it is the kubectl plugin, and its
/// help says `kubectl gluster`.
fn bin_name() -> &'static str {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    let name = argv0.as_deref().and_then(Path::file_name);
    if name.is_some_and(|n| n == "kubectl-gluster") {
        "kubectl gluster"
    } else {
        "glusterfs-provisioner"
    }
}

/// Exit codes (README: "The operator's toolbox"): 0 when all is well;
/// [`report::EXIT_PROBLEMS`] when an operator's command ran and found problems, said in one
/// line on stderr; [`report::EXIT_FAILED`] for a usage error (clap's) or an error that kept it
/// from running, said in one line with its causes. Never a backtrace: RUST_BACKTRACE=1 is
/// common in operators' shells, and anyhow's Debug output would print one.
#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().bin_name(bin_name()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filter = cli.log_level.as_deref();
    let filter = filter.unwrap_or_else(|| cli.command.default_log_level());
    let filter = match tracing_subscriber::EnvFilter::try_new(filter) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: --log-level / RUST_LOG {filter:?}: {e}");
            return ExitCode::from(report::EXIT_FAILED);
        }
    };
    // Logs go to stderr: stdout is for what a command reports.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let ended = match cli.command {
        Command::Run(args) => run(*args).await.map(|()| Outcome::Fine),
        Command::Topology { topology, output } => check_topology(&topology, output).await,
        Command::Node(args) => csi::run(node_settings(args))
            .await
            .map(|()| Outcome::Fine)
            .map_err(Into::into),
        Command::Convert(args) => convert(args).await.map(|()| Outcome::Fine),
        Command::Status {
            topology,
            kubeconfig,
            output,
        } => volume_status(&topology, kubeconfig.as_deref(), output).await,
        Command::Audit(args) => audit(args).await,
        Command::Adopt(args) => adopt(args).await,
        Command::Evacuate(args) => evacuate(args).await,
    };
    match ended {
        Ok(Outcome::Fine) => ExitCode::SUCCESS,
        Ok(Outcome::Problems(what)) => {
            eprintln!("{what}");
            ExitCode::from(report::EXIT_PROBLEMS)
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(report::EXIT_FAILED)
        }
    }
}

/// An error and its causes in one line, each said once: many errors repeat their source's
/// words in their own, and a command's stderr in one may span lines.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain().map(ToString::to_string) {
        let lines: Vec<&str> = cause
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let cause = lines.join("; ");
        if line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

/// The `evacuate` command: fails while any volume cannot be placed; with --apply, while any
/// with a brick on the node is left there or failed to move.
async fn evacuate(args: EvacuateArgs) -> anyhow::Result<Outcome> {
    let backend = standalone_backend(&args.access.topology)?;
    let options = evacuate::EvacuateOptions {
        node: args.node,
        apply: args.apply,
        at_once: args.at_once,
        heal_timeout: Duration::from_secs(args.heal_timeout_seconds),
    };
    let client = client(args.access.kubeconfig.as_deref()).await?;
    let out = Printer::new(args.output.format);
    Ok(evacuate::run(client, &backend, &options, out).await?)
}

/// The `adopt` command: lists (and with --apply adopts) volumes without an identity.
async fn adopt(args: AdoptArgs) -> anyhow::Result<Outcome> {
    let backend = standalone_backend(&args.access.topology)?;
    let options = adopt::AdoptOptions {
        provisioner: args.access.provisioner_name,
        apply: args.apply,
    };
    let client = client(args.access.kubeconfig.as_deref()).await?;
    let out = Printer::new(args.output.format);
    Ok(adopt::run(client, &backend, &options, out).await?)
}

/// The `audit` command: fails while anything is left over.
async fn audit(args: AuditArgs) -> anyhow::Result<Outcome> {
    let backend = standalone_backend(&args.access.topology)?;
    let options = audit::AuditOptions {
        provisioner: args.access.provisioner_name,
        grace: Duration::from_secs(args.grace_seconds),
        apply: args.apply,
    };
    let client = client(args.access.kubeconfig.as_deref()).await?;
    let out = Printer::new(args.output.format);
    Ok(audit::run(client, &backend, &options, out).await?)
}

async fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let selection = match (args.namespace, args.all) {
        (Some(ns), _) => convert::Selection::Namespace(ns),
        (None, true) => convert::Selection::All,
        (None, false) => convert::Selection::Pvs(args.pv),
    };
    let settings = convert::Settings {
        driver: args.driver_name,
        apply: args.apply,
        bind_timeout: Duration::from_secs(args.bind_timeout_seconds),
        records_namespace: args.provisioner_namespace,
        topology: Topology::load(&args.topology)?,
    };
    let client = client(args.kubeconfig.as_deref()).await?;
    Ok(convert::run(client, selection, &settings).await?)
}

fn node_settings(args: NodeArgs) -> csi::NodeSettings {
    let plugin_dir = args.kubelet_dir.join("plugins").join(&args.driver_name);
    let registration = args.kubelet_dir.join("plugins_registry");
    csi::NodeSettings {
        csi_socket: plugin_dir.join("csi.sock"),
        registration_socket: args
            .register
            .then(|| registration.join(format!("{}-reg.sock", args.driver_name))),
        driver: args.driver_name,
        node_id: args.node_id,
        log_dir: args.log_dir,
        fuse_cgroup_root: args.fuse_cgroup_root,
        timeout: Duration::from_secs(args.mount_timeout_seconds.max(1)),
        hung: Duration::from_secs(args.mount_hung_seconds),
        http_address: args.http_address,
        servers_file: args.servers_file,
    }
}

fn executor(args: &TopologyArgs, path: &Path) -> anyhow::Result<(Topology, SshExecutor)> {
    let topology = Topology::load(path)?;
    let dir = args.ssh_control_dir.clone();
    // ssh binds each control socket at DIR/.ssh-connectionXXXXXX/master.<16 characters>, and a
    // Unix socket's path holds 107 bytes: a longer DIR would fail every connection, retried
    // forever.
    let most = 107 - "/.ssh-connectionXXXXXX/master.0123456789abcdef".len();
    let len = dir.as_os_str().len();
    anyhow::ensure!(
        len <= most,
        "--ssh-control-dir {} is {len} bytes long, too long for ssh's control sockets (at most {most})",
        dir.display()
    );
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
    let lease = &args.lease;
    anyhow::ensure!(
        lease.lease_renew_before_seconds < lease.lease_duration_seconds,
        "--lease-renew-before-seconds must be less than --lease-duration-seconds"
    );
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = http::bind(args.http_address)
        .await
        .with_context(|| format!("listening on {}", args.http_address))?;
    tokio::spawn(http::serve(listener, metrics.clone(), health.clone()));

    let backend = match &args.access.topology.path {
        Some(path) => {
            let (topology, ssh) = executor(&args.access.topology, path)?;
            let ssh = ssh.with_metrics(metrics.clone());
            let backend =
                SshBackend::new(topology, ssh, metrics.clone(), args.gluster_commands.into());
            Some((backend, path.clone()))
        }
        None => None,
    };
    let heketi = HeketiHttp::new(Duration::from_secs(args.heketi_timeout_seconds));
    let client = client(args.access.kubeconfig.as_deref()).await?;
    let backend = backend.map(|(backend, path)| {
        // A mounted ConfigMap: its changes are taken without a restart, and told on it.
        let tell = (!args.topology_config_map.is_empty()).then(|| {
            let (tell, told) = tokio::sync::mpsc::unbounded_channel();
            let map = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                name: Some(args.topology_config_map.clone()),
                namespace: Some(args.lease.lease_namespace.clone()),
                ..Default::default()
            };
            let reporter = kube::runtime::events::Reporter {
                controller: args.access.provisioner_name.clone(),
                instance: Some(args.instance.clone()),
            };
            tokio::spawn(controller::tell_reloads(
                client.clone(),
                reporter,
                map,
                told,
            ));
            tell
        });
        let live = backend.live_topology();
        tokio::spawn(reload::follow(live, path, metrics.clone(), tell));
        backend
    });
    let lease = lease.leader_election.then(|| LeaseSettings {
        name: lease.lease_name.clone(),
        namespace: lease.lease_namespace.clone(),
        identity: args.instance.clone(),
        duration_seconds: lease.lease_duration_seconds,
        renew_before_seconds: lease.lease_renew_before_seconds,
    });
    let kind = pv_type(args.pv_type, &client).await?;
    anyhow::ensure!(
        args.manage_endpoints || kind == PvType::Csi,
        "MANAGE_ENDPOINTS=false makes CSI PVs only: set PV_TYPE=csi (glusterfs PVs need Endpoints)"
    );
    let kube_cluster = identity::kube_cluster_id(&client)
        .await
        .context("reading the Kubernetes cluster id (the kube-system namespace's UID)")?;
    let settings = Settings {
        kube_cluster,
        provisioner: args.access.provisioner_name,
        workers: args.workers.max(1),
        clone_copies: args.clone_copies.max(1),
        retry_min: Duration::from_secs_f64(args.retry_min_seconds),
        retry_max: Duration::from_secs_f64(args.retry_max_seconds),
        instance: args.instance.clone(),
        gauge_interval: Duration::from_secs(args.gauge_interval_seconds.max(1)),
        health_interval: Duration::from_secs(args.health_interval_seconds.max(1)),
        migrate_in_tree: args.migrate_in_tree,
        pv_type: kind,
        endpoints: args.manage_endpoints,
        csi_driver: args.csi_driver_name,
        lease: lease.clone(),
        namespace: args.lease.lease_namespace.clone(),
        servers_namespace: args.servers_namespace,
        servers_config_map: args.servers_config_map,
    };
    let work = controller::run(
        client.clone(),
        backend,
        heketi,
        settings,
        metrics.clone(),
        health.clone(),
    );
    match lease {
        Some(lease) => Ok(leader::run_as_leader(client, lease, metrics, health, work).await?),
        None => Ok(work.await?),
    }
}

/// The `status` command: fails while any volume is not whole.
async fn volume_status(
    args: &TopologyArgs,
    kubeconfig: Option<&Path>,
    output: OutputArgs,
) -> anyhow::Result<Outcome> {
    let backend = standalone_backend(args)?;
    let client = client(kubeconfig).await?;
    let out = Printer::new(output.format);
    Ok(status::report(client, &backend, out).await?)
}

/// The SSH backend of a command that runs once (no provisioning: one volume at a time).
fn standalone_backend(args: &TopologyArgs) -> anyhow::Result<SshBackend> {
    let path = args.path.as_deref().context("--topology is required")?;
    let (topology, ssh) = executor(args, path)?;
    Ok(SshBackend::new(topology, ssh, Arc::new(Metrics::new()), 1))
}

/// The `topology` command: fails when any node has a problem.
async fn check_topology(args: &TopologyArgs, output: OutputArgs) -> anyhow::Result<Outcome> {
    let backend = standalone_backend(args)?;
    let out = Printer::new(output.format);
    Ok(check::report(&backend, out).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_line_saying_each_cause_once() {
        let io = std::io::Error::other("connection refused");
        let repeated = anyhow::Error::new(io).context("connecting: connection refused");
        let error = repeated.context("listing PVs\nof every namespace");
        assert_eq!(
            one_line(&error),
            "listing PVs; of every namespace: connecting: connection refused"
        );
    }
}
