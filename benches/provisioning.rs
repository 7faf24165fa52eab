//! How close provisioning gets to GlusterFS's own limit, and what the controller costs at
//! scale. Runs against the real environment (`e2e/bench` brings it up) and a release build of
//! the provisioner under its restricted identity:
//!
//! 1. the baseline: N volumes made by gluster's own CLI, run on the nodes by this benchmark
//!    through the system's `ssh` (no provisioner code), serially and in parallel, with the same
//!    steps the provisioner takes; then their stop + delete;
//! 2. a burst of N claims (at each `--commands` setting, then the defaults): per-claim latency
//!    from creation to Bound, from watch events; then deleted, until every PV, volume and brick
//!    directory is gone;
//! 3. claims one at a time, each waited for;
//! 4. scale: 10 claims on an empty cluster; then 20,000 PVs of ours (with GIDs, Endpoints and
//!    Services) and 20,000 bound claims in the API server: time to ready, memory, idle CPU,
//!    and 10 claims on top.
//!
//! Prints a table and writes `results.json` and `latency.png` to `--out`.
//! Flags: `--claims N` (30), `--one-by-one N` (10), `--commands K,K,..` (bursts at these
//! `GLUSTER_COMMANDS` too), `--scale N` (20000), `--only bursts|scale` (phases 1-3 or 4),
//! `--out DIR` (target/bench).

#[path = "../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../tests/e2e/scenario.rs"]
#[allow(dead_code)]
mod scenario;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use glusterfs_provisioner::config::Cluster;
use glusterfs_provisioner::gluster::{Brick, plan};
use glusterfs_provisioner::k8s::objects;
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, PersistentVolume, PersistentVolumeClaim, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use plotters::prelude::*;
use serde_json::{Value, json};

use scenario::{brick_dirs, from_json, gluster_volumes};
use support::{Provisioner, admin_client, env, eventually, unique};

const TIMEOUT: Duration = Duration::from_secs(900);
const GID_MIN: u32 = 40000;
/// The preloaded PVs' GIDs: a range of their own, so the bursts' class has all of its own.
const SCALE_GID_MIN: u32 = 100_000;
const PRELOADED_ROOT: &str = "/srv/gluster/preloaded";

struct Options {
    claims: usize,
    one_by_one: usize,
    scale: usize,
    /// `GLUSTER_COMMANDS` settings to compare bursts at, besides the default.
    commands: Vec<u16>,
    /// Only phases 1 to 3 (`bursts`) or only phase 4 (`scale`).
    only: Option<String>,
    out: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        claims: 30,
        one_by_one: 10,
        scale: 20000,
        commands: Vec::new(),
        only: None,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--claims" => o.claims = value().parse().expect("--claims N"),
            "--scale" => o.scale = value().parse().expect("--scale N"),
            "--one-by-one" => o.one_by_one = value().parse().expect("--one-by-one N"),
            "--commands" => {
                o.commands = value()
                    .split(',')
                    .map(|k| k.parse().expect("--commands K,K,..."))
                    .collect()
            }
            "--only" => o.only = Some(value()),
            "--out" => o.out = value().into(),
            _ => {} // cargo bench adds --bench
        }
    }
    o
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// p50, p95 and max of `values`.
fn percentiles(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.95), *v.last().unwrap())
}

// ---- 1. the baseline ------------------------------------------------------------------------

/// The baseline runs gluster's own CLI on the nodes, as an operator's script would: through the
/// system's `ssh` client (one multiplexed master per node), none of the provisioner's code.
struct Cli {
    common: Vec<String>,
}

/// `gluster` with the retries any script needs under load: glusterd refuses a command while
/// another holds its cluster-wide lock.
const GLUSTER_FN: &str = r#"set -e
g() {
  while ! out=$(gluster --mode=script "$@" 2>&1); do
    case "$out" in
      *"Another transaction"*|*"Locking failed"*|*"try again"*) sleep 0.1 ;;
      *) echo "gluster $*: $out" >&2; return 1 ;;
    esac
  done
}
"#;

impl Cli {
    fn new() -> Self {
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
    async fn run(&self, host: &str, script: &str) {
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

struct Baseline {
    parallel: usize,
    /// Seconds from the start until each volume was started and size-limited.
    ready: Vec<f64>,
    /// Seconds each volume took from its first command.
    each: Vec<f64>,
    create: f64,
    delete: f64,
}

/// Makes `n` replica-3 volumes of 1 GiB with the gluster CLI, `parallel` at a time, as the
/// provisioner makes them (brick directories owned by the GID, the GID and timeouts set,
/// started, quota limit); then stops and deletes them. Volume i's commands run on node
/// i mod 3, as the provisioner spreads them.
async fn baseline(cli: &Cli, cluster: &Cluster, n: usize, parallel: usize) -> Baseline {
    let tag = unique("base").replace('-', "");
    let nodes = &cluster.nodes;
    let brick = |node: &glusterfs_provisioner::config::Node, name: &str| {
        format!("{}/{name}", node.brick_roots[0].display())
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
            let script =
                format!("{GLUSTER_FN}g volume stop {name} force\ng volume delete {name}\n");
            cli.run(&nodes[i % nodes.len()].ssh_address, &script).await;
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

// ---- 2. and 3. bursts of claims -------------------------------------------------------------

/// When each object `key` names (a claim) was first seen as `key` picks, as a watch on `api`
/// shows it; filled in by a task, listed before this returns.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

async fn first_seen<K>(api: Api<K>, key: fn(K) -> Option<String>) -> Seen
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen = Seen::default();
    let record = seen.clone();
    let (listed, watching) = tokio::sync::oneshot::channel();
    let mut watch = watcher(api, watcher::Config::default()).boxed();
    tokio::spawn(async move {
        let mut listed = Some(listed);
        while let Some(Ok(event)) = watch.next().await {
            let object = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                watcher::Event::InitDone => {
                    listed.take().map(|l| l.send(()));
                    continue;
                }
                _ => continue,
            };
            if let Some(name) = key(object) {
                record
                    .lock()
                    .unwrap()
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });
    watching.await.unwrap();
    seen
}

/// A burst's claims: when each was asked for, its PV made (the provisioner's part), and it
/// was Bound (the PV controller's part added); seconds from the start.
struct Claims {
    made: Vec<PersistentVolumeClaim>,
    /// Per claim, from its creation.
    to_pv: Vec<f64>,
    to_bound: Vec<f64>,
    /// From the first creation to the last PV, and to the last claim Bound.
    all_pvs: f64,
    all_bound: f64,
}

/// A namespace, a Delete class of the bench provisioner, and watches on its claims and PVs.
struct Burst {
    client: Client,
    claims: Api<PersistentVolumeClaim>,
    class: String,
    bound: Seen,
    pvs: Seen,
}

impl Burst {
    async fn new(client: &Client, provisioner: &str) -> Self {
        let params = json!({"volumetype": "replicate:3", "gidMin": "40000", "gidMax": "50000"});
        let (ns, class) = namespace_and_class(client, "bench", provisioner, "Delete", params).await;
        let class = class.name_any();
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
        let bound = first_seen(claims.clone(), |pvc| {
            let bound = pvc.status?.phase? == "Bound";
            bound.then_some(pvc.metadata.name?)
        })
        .await;
        // PVs of any class: only the burst's claim names are looked up.
        let pvs = first_seen(Api::<PersistentVolume>::all(client.clone()), |pv| {
            pv.spec?.claim_ref?.name
        })
        .await;
        Burst {
            client: client.clone(),
            claims,
            class,
            bound,
            pvs,
        }
    }

    /// Creates `n` claims at once and waits until all are Bound.
    async fn provision(&self, n: usize, prefix: &str) -> Claims {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let start = Instant::now();
        let made: Vec<(PersistentVolumeClaim, Instant)> =
            futures::future::join_all(names.iter().map(|name| async move {
                let asked = Instant::now();
                let pvc: PersistentVolumeClaim = from_json(json!({
                    "metadata": {"name": name},
                    "spec": {"storageClassName": self.class, "accessModes": ["ReadWriteMany"],
                             "resources": {"requests": {"storage": "1Gi"}}},
                }));
                let pvc = self
                    .claims
                    .create(&PostParams::default(), &pvc)
                    .await
                    .unwrap();
                (pvc, asked)
            }))
            .await;
        let when = |seen: &Seen| {
            let seen = seen.lock().unwrap();
            names
                .iter()
                .map(|n| seen.get(n).copied())
                .collect::<Option<Vec<Instant>>>()
        };
        let bound = eventually(TIMEOUT, &format!("{n} claims Bound"), || async {
            when(&self.bound)
        })
        .await;
        let pvs = when(&self.pvs).expect("a bound claim's PV was seen");
        let since = |at: &[Instant]| -> Vec<f64> {
            made.iter()
                .zip(at)
                .map(|((_, asked), at)| secs(*at - *asked))
                .collect()
        };
        let last = |at: &[Instant]| secs(*at.iter().max().unwrap() - start);
        Claims {
            to_pv: since(&pvs),
            to_bound: since(&bound),
            all_pvs: last(&pvs),
            all_bound: last(&bound),
            made: made.into_iter().map(|(c, _)| c).collect(),
        }
    }

    /// Deletes the claims at once; seconds until their volumes and brick directories are gone
    /// (the gluster side, the baseline's measure), and until their PVs are gone too.
    async fn delete(&self, claims: &[PersistentVolumeClaim]) -> Deleted {
        let start = Instant::now();
        let dp = DeleteParams::default();
        let names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
        futures::future::join_all(names.iter().map(|n| self.claims.delete(n, &dp))).await;
        let pvs = Api::<PersistentVolume>::all(self.client.clone());
        let names: Vec<String> = claims
            .iter()
            .map(|c| objects::pv_name(&c.uid().unwrap()))
            .collect();
        let suffixes: Vec<String> = claims
            .iter()
            .map(|c| c.uid().unwrap().replace('-', ""))
            .collect();
        let pvs_gone = eventually(TIMEOUT, "PVs deleted", || async {
            let left = pvs.list_metadata(&ListParams::default()).await.unwrap();
            let gone = !left.items.iter().any(|pv| names.contains(&pv.name_any()));
            gone.then(|| secs(start.elapsed()))
        });
        let gluster_gone = eventually(TIMEOUT, "volumes and bricks removed", || async {
            let mut left = gluster_volumes().await;
            left.extend(brick_dirs().await);
            let gone = !left.iter().any(|v| suffixes.iter().any(|s| v.ends_with(s)));
            gone.then(|| secs(start.elapsed()))
        });
        let (pvs, gluster) = futures::future::join(pvs_gone, gluster_gone).await;
        Deleted {
            gluster,
            all: pvs.max(gluster),
        }
    }
}

/// Seconds from a burst's deletion until its volumes and bricks were gone, and everything.
struct Deleted {
    gluster: f64,
    all: f64,
}

/// A new namespace, and a class of `provisioner` with `reclaim` and `params`.
async fn namespace_and_class(
    client: &Client,
    tag: &str,
    provisioner: &str,
    reclaim: &str,
    params: Value,
) -> (String, StorageClass) {
    let ns = unique(tag);
    let namespace: Namespace = from_json(json!({"metadata": {"name": ns}}));
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let class: StorageClass = from_json(json!({
        "metadata": {"name": unique(&format!("{tag}-sc"))}, "provisioner": provisioner,
        "reclaimPolicy": reclaim, "parameters": params,
    }));
    let class = Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    (ns, class)
}

// ---- 4. scale -------------------------------------------------------------------------------

/// `n` bound claims with PVs of ours (GIDs from `SCALE_GID_MIN`), Endpoints and Services, as the
/// provisioner and the PV controller would have left them (the bind written here, so the
/// controller has nothing to do); Retain, so nothing could ever delete a real volume.
async fn preload(client: &Client, provisioner: &str, cluster: &Cluster, n: usize) -> String {
    let params = json!({"gidMin": SCALE_GID_MIN.to_string(),
                        "gidMax": (SCALE_GID_MIN + n as u32).to_string()});
    let (ns, class) = namespace_and_class(client, "scale", provisioner, "Retain", params).await;
    let class_name = class.name_any();
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let eps = Api::<Endpoints>::namespaced(client.clone(), &ns);
    let svcs = Api::<Service>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (class, class_name) = (&class, &class_name);
            let (claims, pvs, eps, svcs, ns) = (&claims, &pvs, &eps, &svcs, &ns);
            async move {
                let name = format!("data-{i}");
                // A UID of our own, so the PV can be named before the claim exists.
                let pv_name = objects::pv_name(&uuid::Uuid::new_v4().to_string());
                let claim: PersistentVolumeClaim = from_json(json!({
                    "metadata": {"name": name,
                                 "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                    "spec": {"storageClassName": class_name, "accessModes": ["ReadWriteMany"],
                             "volumeName": pv_name,
                             "resources": {"requests": {"storage": "1Gi"}}},
                }));
                let claim = claims.create(&PostParams::default(), &claim).await.unwrap();
                let status = json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteMany"],
                                               "capacity": {"storage": "1Gi"}}});
                claims
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                let uid = claim.uid().unwrap();
                let volume = plan::volume_name(None, ns, &name, &uid);
                let bricks: Vec<Brick> = cluster
                    .nodes
                    .iter()
                    // A root outside the topology: these volumes hold no real space, so they
                    // must not fill the real roots' promises.
                    .map(|node| Brick::new(node, Path::new(PRELOADED_ROOT), &volume))
                    .collect();
                let ep_name = objects::endpoints_name("glusterfs-dynamic", &uid);
                let recorded = BTreeMap::from([
                    (objects::ANN_CLUSTER.to_string(), cluster.name.clone()),
                    (
                        objects::ANN_BRICKS.to_string(),
                        objects::brick_record(&bricks),
                    ),
                ]);
                let mut pv = objects::persistent_volume(
                    &claim,
                    class,
                    &objects::VolumeFacts {
                        provisioner,
                        volume: &volume,
                        annotations: &recorded,
                        mounter: objects::Mounter::Glusterfs {
                            endpoints: &ep_name,
                        },
                        gid: SCALE_GID_MIN + i as u32,
                        size_gib: 1,
                    },
                );
                pv.metadata.name = Some(pv_name.clone());
                pvs.create(&PostParams::default(), &pv).await.unwrap();
                let status = json!({"status": {"phase": "Bound"}});
                pvs.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                let addresses = plan::storage_addresses(&bricks);
                let ep = objects::endpoints(&ep_name, ns, &name, &uid, &addresses);
                eps.create(&PostParams::default(), &ep).await.unwrap();
                let svc = objects::service(&ep_name, ns, &name, &uid);
                svcs.create(&PostParams::default(), &svc).await.unwrap();
            }
        })
        .await;
    log(format!(
        "preloaded {n} claims, PVs, Endpoints and Services in {:.0} s",
        secs(started.elapsed())
    ));
    // A claim the PV controller saw before its PV existed is Lost until its next sync.
    eventually(TIMEOUT, "preloaded claims Bound", || async {
        let list = claims.list(&ListParams::default()).await.unwrap();
        let bound = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        if bound < n {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        (bound == n).then_some(())
    })
    .await;
    class_name
}

/// VmRSS and VmHWM (peak) of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Seconds from `start` until the provisioner serves the GID gauge of `class`: its caches are
/// complete and the GID table rebuilt.
async fn time_to_ready(port: u16, class: &str, start: Instant) -> f64 {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let wanted = format!("glusterfs_provisioner_gids_free{{class=\"{class}\"}}");
    loop {
        let out = tokio::process::Command::new("curl")
            .args(["-fsS", &url])
            .output()
            .await
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&wanted) {
            return secs(start.elapsed());
        }
        assert!(start.elapsed() < TIMEOUT, "provisioner never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The provisioner as deployed (release build, restricted identity), with its defaults or
/// `commands` gluster commands at once; and the seconds it took to be ready for `class`.
async fn start_provisioner(
    name: &str,
    class: &str,
    commands: Option<u16>,
) -> (Provisioner, u16, f64) {
    let port = free_port();
    let started = Instant::now();
    let commands = commands.map(|k| k.to_string());
    let vars: Vec<(&str, &str)> = commands
        .iter()
        .map(|k| ("GLUSTER_COMMANDS", k.as_str()))
        .collect();
    let provisioner = Provisioner::spawn(name, &vars, &format!("127.0.0.1:{port}"), "info");
    let ready = time_to_ready(port, class, started).await;
    (provisioner, port, ready)
}

// ---- the report -----------------------------------------------------------------------------

fn chart(path: &std::path::Path, series: &[(String, Vec<f64>)]) {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .expect("fonts-dejavu-core (e2e/bench installs it)");
    plotters::style::register_font("sans-serif", FontStyle::Normal, font.leak())
        .map_err(|_| "font")
        .unwrap();
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let max_x = series.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
    let max_y = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0, f64::max)
        * 1.05;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "Per-claim time to ready: provisioner vs. GlusterFS doing the same work",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(1usize..max_x, 0f64..max_y)
        .unwrap();
    c.configure_mesh()
        .x_desc("claims / volumes, fastest first")
        .y_desc("seconds from the start of the burst")
        .label_style(("sans-serif", 14))
        .draw()
        .unwrap();
    let colors = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        BLACK,
        CYAN,
        RGBColor(230, 140, 0),
        RGBColor(120, 60, 20),
    ];
    for ((label, values), color) in series.iter().zip(colors) {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let points: Vec<(usize, f64)> =
            v.into_iter().enumerate().map(|(i, y)| (i + 1, y)).collect();
        c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .unwrap()
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        c.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )
        .unwrap();
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .unwrap();
    root.present().unwrap();
}

/// A burst at one setting and its delete.
struct BurstRun {
    commands: Option<u16>,
    claims: Claims,
    delete: Deleted,
}

impl BurstRun {
    fn median_share(&self) -> f64 {
        percentiles(&self.claims.to_bound).0 / self.claims.all_bound
    }

    fn setting(&self) -> String {
        match self.commands {
            Some(k) => format!("GLUSTER_COMMANDS={k}"),
            None => "default".into(),
        }
    }

    fn json(&self) -> Value {
        let c = &self.claims;
        json!({"setting": self.setting(), "total_seconds": c.all_bound,
               "all_pvs_seconds": c.all_pvs, "latencies": c.to_bound, "to_pv": c.to_pv,
               "median_share": self.median_share(), "delete_seconds": self.delete.all,
               "delete_gluster_seconds": self.delete.gluster})
    }
}

async fn burst_and_delete(
    burst: &Burst,
    n: usize,
    prefix: &str,
    commands: Option<u16>,
) -> BurstRun {
    let claims = burst.provision(n, prefix).await;
    log(format!(
        "{n} claims: PVs made in {:.1} s, Bound in {:.1} s",
        claims.all_pvs, claims.all_bound
    ));
    let delete = burst.delete(&claims.made).await;
    log(format!(
        "{n} deleted: volumes and bricks in {:.1} s, PVs too in {:.1} s",
        delete.gluster, delete.all
    ));
    BurstRun {
        commands,
        claims,
        delete,
    }
}

/// `n` claims, each made once the one before is Bound: an `OrderedReady` StatefulSet. One
/// claim before them, not counted, opens the provisioner's SSH connections (the baseline's
/// are open before its clock starts).
async fn one_by_one(burst: &Burst, n: usize) -> Vec<f64> {
    let mut claims = burst.provision(1, "warm").await.made;
    let mut latencies = Vec::new();
    for i in 0..n {
        let one = burst.provision(1, &format!("one{i}")).await;
        latencies.extend(one.to_bound);
        claims.extend(one.made);
    }
    burst.delete(&claims).await;
    latencies
}

/// 10 claims at once, twice: the faster run (glusterd's pace varies by a few seconds from run
/// to run).
async fn best_of_two(burst: &Burst, prefix: &str) -> Claims {
    let one = burst_and_delete(burst, 10, &format!("{prefix}a"), None).await;
    let two = burst_and_delete(burst, 10, &format!("{prefix}b"), None).await;
    [one, two]
        .into_iter()
        .map(|r| r.claims)
        .min_by(|a, b| a.all_bound.total_cmp(&b.all_bound))
        .unwrap()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// A line of the table: what was measured, the figure, its target and verdict.
type Row = (String, String, String);

fn row(what: impl Into<String>, figure: String, target: String) -> Row {
    (what.into(), figure, target)
}

/// A line for the chart: its label and the seconds at which each claim or volume was ready.
type Series = (String, Vec<f64>);

/// Phases 1 to 3: the baseline, a burst at each `--commands` setting and at the defaults with
/// their deletes, and claims one at a time.
async fn bursts(
    o: &Options,
    cli: &Cli,
    cluster: &Cluster,
    burst: &Burst,
    name: &str,
) -> (Vec<Row>, Value, Vec<Series>) {
    let n = o.claims;
    log(format!(
        "1. baseline: {n} volumes made by gluster's CLI over ssh"
    ));
    let serial = baseline(cli, cluster, n, 1).await;
    let mut parallel = Vec::new();
    for p in [8, n] {
        parallel.push(baseline(cli, cluster, n, p).await);
    }
    let best = parallel
        .iter()
        .min_by(|a, b| a.create.total_cmp(&b.create))
        .unwrap();
    let best_delete = parallel
        .iter()
        .map(|b| b.delete)
        .fold(serial.delete, f64::min);
    let (alone, _, _) = percentiles(&serial.each);

    let mut runs = Vec::new();
    for k in o.commands.iter().copied() {
        log(format!(
            "2. burst of {n} with GLUSTER_COMMANDS={k}, then its delete"
        ));
        let (mut provisioner, _, _) = start_provisioner(name, &burst.class, Some(k)).await;
        runs.push(burst_and_delete(burst, n, &format!("k{k}"), Some(k)).await);
        // Stopped as a pod is, so the next start does not wait out a dead leader's lease.
        provisioner.stop().await;
    }
    let (mut provisioner, _, _) = start_provisioner(name, &burst.class, None).await;
    log(format!("3. {} claims one at a time", o.one_by_one));
    let single = one_by_one(burst, o.one_by_one).await;
    log(format!("2. burst of {n} at the defaults, then its delete"));
    let main = burst_and_delete(burst, n, "burst", None).await;
    provisioner.stop().await;

    let (p50, p95, max) = percentiles(&main.claims.to_bound);
    let (o50, _, omax) = percentiles(&single);
    let ratio = main.claims.all_bound / best.create;
    let delete_ratio = main.delete.all / best_delete;
    let mut rows = vec![
        row(
            "baseline serial: create / delete (s)",
            format!("{:.2} / {:.2}", serial.create, serial.delete),
            String::new(),
        ),
        row(
            "baseline parallel: create / delete (s)",
            parallel
                .iter()
                .map(|b| format!("x{}: {:.2} / {:.2}", b.parallel, b.create, b.delete))
                .collect::<Vec<_>>()
                .join(", "),
            String::new(),
        ),
        row(
            "baseline: one volume alone, p50 (s)",
            format!("{alone:.2}"),
            String::new(),
        ),
        row(
            format!("burst of {n}: all Bound (s), / best baseline"),
            format!("{:.2}, {ratio:.2}", main.claims.all_bound),
            format!("<= 1.05: {}", verdict(ratio <= 1.05)),
        ),
        row(
            "burst: all PVs made (s), / best baseline",
            format!(
                "{:.2}, {:.2}",
                main.claims.all_pvs,
                main.claims.all_pvs / best.create
            ),
            "(the provisioner's part)".into(),
        ),
        row(
            "burst: per-claim p50 / p95 / max (s)",
            format!("{p50:.2} / {p95:.2} / {max:.2}"),
            String::new(),
        ),
        row(
            "burst: p50 / all Bound",
            format!("{:.2}", main.median_share()),
            format!("<= 0.60: {}", verdict(main.median_share() <= 0.6)),
        ),
    ];
    for run in &runs {
        rows.push(row(
            format!("burst at {}: all Bound, p50 / all (s)", run.setting()),
            format!(
                "{:.2} ({:.2}x best), {:.2}; delete {:.2}",
                run.claims.all_bound,
                run.claims.all_bound / best.create,
                run.median_share(),
                run.delete.all
            ),
            String::new(),
        ));
    }
    rows.extend([
        row(
            "burst delete: all gone (s), / best baseline",
            format!("{:.2}, {delete_ratio:.2}", main.delete.all),
            format!("<= 1.10: {}", verdict(delete_ratio <= 1.10)),
        ),
        row(
            "burst delete: volumes and bricks gone (s), / best",
            format!(
                "{:.2}, {:.2}",
                main.delete.gluster,
                main.delete.gluster / best_delete
            ),
            "(the gluster side)".into(),
        ),
        row(
            format!("{} one at a time: p50 / max (s)", o.one_by_one),
            format!("{o50:.2} / {omax:.2}"),
            format!(
                "max <= {:.2}: {}",
                alone + 1.0,
                verdict(omax <= alone + 1.0)
            ),
        ),
    ]);
    let results = json!({
        "claims": n,
        "burst": main.json(),
        "settings": runs.iter().map(BurstRun::json).collect::<Vec<_>>(),
        "baseline": {
            "serial": {"create_seconds": serial.create, "delete_seconds": serial.delete,
                       "ready": serial.ready, "each": serial.each},
            "parallel": parallel.iter().map(|b| json!({"parallelism": b.parallel,
                "create_seconds": b.create, "delete_seconds": b.delete, "ready": b.ready})).collect::<Vec<_>>(),
        },
        "ratio_burst_to_best_baseline": ratio,
        "ratio_delete_to_best_baseline": delete_ratio,
        "one_by_one": {"latencies": single, "baseline_alone_p50": alone},
    });
    let mut series = vec![
        (
            format!("provisioner, burst of {n}: created → Bound"),
            main.claims.to_bound.clone(),
        ),
        (
            format!("gluster CLI x{}: volume ready", best.parallel),
            best.ready.clone(),
        ),
        (
            "gluster CLI, serial: volume ready".into(),
            serial.ready.clone(),
        ),
    ];
    series.extend(runs.iter().map(|r| {
        (
            format!("provisioner, {}", r.setting()),
            r.claims.to_bound.clone(),
        )
    }));
    (rows, results, series)
}

/// Phase 4: 10 claims on an empty cluster; then `--scale` PVs and claims preloaded, the
/// provisioner started on them (ready, memory, idle CPU) and 10 claims again.
async fn scale(
    o: &Options,
    client: &Client,
    cluster: &Cluster,
    burst: &Burst,
    name: &str,
) -> (Vec<Row>, Value) {
    let (mut provisioner, _, ready_small) = start_provisioner(name, &burst.class, None).await;
    log("4. 10 claims at once on an empty cluster, the better of two");
    let empty = best_of_two(burst, "empty").await;
    provisioner.stop().await;

    log(format!("5. scale: {} PVs and bound claims", o.scale));
    let scale_class = preload(client, name, cluster, o.scale).await;
    let (mut provisioner, _, ready_scale) = start_provisioner(name, &scale_class, None).await;
    let pid = provisioner.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_steady, _) = memory(pid);
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle_cpu = cpu_seconds(pid) - cpu_before;
    let at_scale = best_of_two(burst, "scale").await;
    let (_, rss_peak) = memory(pid);
    provisioner.kill().await;

    let (e50, _, _) = percentiles(&empty.to_bound);
    let (s50, _, _) = percentiles(&at_scale.to_bound);
    let (empty_total, scale_total) = (empty.all_bound, at_scale.all_bound);
    let scale_ratio = scale_total / empty_total;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let rows = vec![
        row(
            "ready, empty cluster (s)",
            format!("{ready_small:.2}"),
            String::new(),
        ),
        row(
            format!("scale: ready with {0} PVs + {0} claims (s)", o.scale),
            format!("{ready_scale:.2}"),
            format!("< 3: {}", verdict(ready_scale < 3.0)),
        ),
        row(
            "scale: RSS steady / peak (MiB)",
            format!("{:.1} / {:.1}", mib(rss_steady), mib(rss_peak)),
            format!("< 80 MB: {}", verdict(rss_peak < 80_000_000)),
        ),
        row(
            "scale: CPU over 60 idle s (s)",
            format!("{idle_cpu:.3}"),
            String::new(),
        ),
        row(
            "10 claims: all Bound empty / at scale (s)",
            format!("{empty_total:.2} / {scale_total:.2} (p50 {e50:.2} / {s50:.2})"),
            format!("<= 1.10x: {}", verdict(scale_ratio <= 1.10)),
        ),
    ];
    let results = json!({
        "ready_seconds_empty": ready_small,
        "empty_10": {"latencies": empty.to_bound, "total_seconds": empty_total},
        "scale": {"pvs": o.scale, "claims": o.scale, "ready_seconds": ready_scale,
                  "rss_steady_bytes": rss_steady, "rss_peak_bytes": rss_peak,
                  "idle_cpu_seconds_per_60s": idle_cpu, "latencies": at_scale.to_bound,
                  "total_seconds": scale_total},
    });
    (rows, results)
}

#[tokio::main]
async fn main() {
    let o = options();
    std::fs::create_dir_all(&o.out).unwrap();
    let env = env();
    let cluster = env.topology.clusters[0].clone();
    let client = admin_client().await;
    let cli = Cli::new();
    // Connections open before any clock starts.
    for node in &cluster.nodes {
        cli.run(&node.ssh_address, "gluster --version >/dev/null\n")
            .await;
    }
    let name = format!("bench.gluster.org/{}", unique("p"));
    let burst = Burst::new(&client, &name).await;
    let (mut rows, mut results, mut series) = (Vec::new(), json!({}), Vec::new());
    let mut add = |(more_rows, more_results): (Vec<Row>, Value)| {
        rows.extend(more_rows);
        let more = more_results.as_object().unwrap().clone();
        results.as_object_mut().unwrap().extend(more);
    };
    if o.only.as_deref() != Some("scale") {
        let (rows, results, lines) = bursts(&o, &cli, &cluster, &burst, &name).await;
        add((rows, results));
        series = lines;
    }
    if o.only.as_deref() != Some("bursts") {
        add(scale(&o, &client, &cluster, &burst, &name).await);
    }

    println!();
    for (k, v, target) in &rows {
        println!("{k:<46} {v:<40} {target}");
    }
    let json_path = o.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    println!("\nresults: {}", json_path.display());
    if !series.is_empty() {
        let png = o.out.join("latency.png");
        chart(&png, &series);
        println!("chart:   {}", png.display());
    }
}
