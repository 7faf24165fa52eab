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
//!    and 10 claims on top;
//! 5. the health sweep: N volumes made raw on the nodes with PVs of ours, the provisioner's
//!    first look at all of them (seconds, gluster commands, CPU), and claims one at a time
//!    with the sweep idle and with it running back to back;
//! 6. size limits: for each `sizeLimit`, claims one at a time, a burst, and the data path
//!    against a plain volume (see `limits.rs`);
//! 7. pool growth: a claim's time to Bound and the brick processes' memory at 0, 100 and 200
//!    volumes, with and without brick multiplexing;
//! 8. a clone of 1 GiB in 10,000 files, against `cp -a` between two raw gluster mounts;
//! 9. image bricks: bursts of claims of a parameterless class against the same volumes made
//!    by hand on the nodes all at once, three rounds, with the provisioner's time by step.
//!
//! Prints a table and writes `results.json` and `latency.png` to `--out`.
//! Flags: `--claims N` (30), `--one-by-one N` (10), `--commands K,K,..` (bursts at these
//! `GLUSTER_COMMANDS` too), `--scale N` (20000), `--sweep N` (500),
//! `--only bursts,scale,limits,pool,sweep,clone,images` (phases 1-3, 4, 6, 7, 5, 8, 9; any of
//! them), `--image-claims N,N,..` (30: phase 9's bursts, three rounds of the first),
//! `--out DIR` (target/bench).

#[path = "../../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../../tests/e2e/scenario.rs"]
#[allow(dead_code)]
mod scenario;

mod baseline;
mod bursts;
mod clone;
mod images;
mod limits;
mod process;
mod report;
mod scale;
mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use glusterfs_provisioner::config::{Cluster, Node};
use glusterfs_provisioner::gluster::{Brick, naming, place, xml};
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

use baseline::*;
use bursts::*;
use clone::*;
use images::*;
use limits::*;
use process::*;
use report::*;
use scale::*;
use sweep::*;

const TIMEOUT: Duration = Duration::from_secs(900);
const GID_MIN: u32 = 40000;
/// The preloaded PVs' GIDs: a range of their own, so the bursts' class has all of its own.
const SCALE_GID_MIN: u32 = 100_000;
const PRELOADED_ROOT: &str = "/srv/gluster/preloaded";

struct Options {
    claims: usize,
    one_by_one: usize,
    scale: usize,
    /// Volumes the health sweep looks at.
    sweep: usize,
    /// `GLUSTER_COMMANDS` settings to compare bursts at, besides the default.
    commands: Vec<u16>,
    /// Image-brick bursts of phase 9: three rounds of the first size, one of each other.
    image_claims: Vec<usize>,
    /// Only these phases: `bursts` (1 to 3), `scale` (4), `limits` (6), `pool` (7), `sweep` (5),
    /// `clone` (8), `images` (9).
    only: Option<String>,
    out: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        claims: 30,
        one_by_one: 10,
        scale: 20000,
        sweep: 500,
        commands: Vec::new(),
        image_claims: vec![30],
        only: None,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--claims" => o.claims = value().parse().expect("--claims N"),
            "--scale" => o.scale = value().parse().expect("--scale N"),
            "--sweep" => o.sweep = value().parse().expect("--sweep N"),
            "--one-by-one" => o.one_by_one = value().parse().expect("--one-by-one N"),
            "--commands" => {
                o.commands = value()
                    .split(',')
                    .map(|k| k.parse().expect("--commands K,K,..."))
                    .collect()
            }
            "--image-claims" => {
                o.image_claims = value()
                    .split(',')
                    .map(|n| n.parse().expect("--image-claims N,N,..."))
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
    // Phases 1 to 5 compare with the baseline, which limits sizes with gluster's quota.
    let burst = Burst::new(&client, &name, "strict-quota").await;
    let (mut rows, mut results, mut series) = (Vec::new(), json!({}), Vec::new());
    let mut add = |(more_rows, more_results): (Vec<Row>, Value)| {
        rows.extend(more_rows);
        let more = more_results.as_object().unwrap().clone();
        results.as_object_mut().unwrap().extend(more);
    };
    let runs =
        |phase: &str| (o.only.as_deref()).is_none_or(|only| only.split(',').any(|p| p == phase));
    if runs("bursts") {
        let (rows, results, lines) = bursts(&o, &cli, &cluster, &burst, &name).await;
        add((rows, results));
        series = lines;
    }
    if runs("scale") {
        add(scale(&o, &client, &cluster, &burst, &name).await);
    }
    if runs("limits") {
        add(limits(&o, &client, &cli, &cluster, &name).await);
    }
    // Its multiplexed volumes, and the sweep's, stay until the environment goes down.
    if runs("pool") {
        add(pool(&client, &cli, &cluster, &name).await);
    }
    if runs("sweep") {
        add(sweep(&o, &client, &cli, &cluster, &burst, &name).await);
    }
    if runs("clone") {
        add(clone(&client, &cli, &cluster, &name).await);
    }
    if runs("images") {
        add(images(&o, &client, &cli, &cluster, &name).await);
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
