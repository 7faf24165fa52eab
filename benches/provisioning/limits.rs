//! Phases 6 and 7: what each way of keeping volumes to their size costs, and what the pool's
//! brick processes cost as it grows.
//!
//! 6. For `strict-quota` (what every volume had before image bricks), `quota` and `image`:
//!    claims one at a time and a burst, then the data path of each against a plain volume
//!    (no limit) on the same brick roots, through gluster's FUSE client on this host.
//! 7. Pool growth: volumes made raw on the nodes, 0, 100 and 200 of them, with and without
//!    brick multiplexing: an image claim's time to Bound and the brick processes' memory.

use std::path::Path;

use super::*;

/// The ways of keeping to a size, the first as every volume was before image bricks.
const LIMITS: [&str; 3] = ["strict-quota", "quota", "image"];

/// Seconds for each step of the data-path workload.
#[derive(Clone, Copy, Debug)]
struct DataPath {
    big_write: f64,
    creates: f64,
    stats: f64,
    deletes: f64,
}

impl DataPath {
    fn best(self, other: DataPath) -> DataPath {
        DataPath {
            big_write: self.big_write.min(other.big_write),
            creates: self.creates.min(other.creates),
            stats: self.stats.min(other.stats),
            deletes: self.deletes.min(other.deletes),
        }
    }

    /// Speed relative to `plain` (1.0: as fast), per step.
    fn relative(self, plain: DataPath) -> [f64; 4] {
        [
            plain.big_write / self.big_write,
            plain.creates / self.creates,
            plain.stats / self.stats,
            plain.deletes / self.deletes,
        ]
    }
}

/// 256 MiB written and fsynced, then 1,000 files of 4 KiB created, stat'ed and deleted.
fn workload(dir: &Path) -> DataPath {
    use std::io::Write;
    let timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        secs(start.elapsed())
    };
    let block = vec![7u8; 1 << 20];
    let big = dir.join("big");
    let big_write = timed(&mut || {
        let mut file = std::fs::File::create(&big).unwrap();
        for _ in 0..256 {
            file.write_all(&block).unwrap();
        }
        file.sync_all().unwrap();
    });
    std::fs::remove_file(&big).unwrap();
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let names: Vec<_> = (0..1000).map(|i| small.join(format!("f{i}"))).collect();
    let creates = timed(&mut || {
        for name in &names {
            std::fs::write(name, &block[..4096]).unwrap();
        }
    });
    let stats = timed(&mut || {
        for name in &names {
            std::fs::metadata(name).unwrap();
        }
    });
    let deletes = timed(&mut || {
        for name in &names {
            std::fs::remove_file(name).unwrap();
        }
    });
    std::fs::remove_dir(&small).unwrap();
    DataPath {
        big_write,
        creates,
        stats,
        deletes,
    }
}

/// A FUSE mount of `volume` on this host, served by the first node.
pub(crate) struct FuseMount {
    dir: tempfile::TempDir,
}

impl FuseMount {
    pub(crate) async fn of(cluster: &Cluster, volume: &str) -> FuseMount {
        let dir = tempfile::tempdir().unwrap();
        let source = format!("{}:/{volume}", cluster.nodes[0].storage_address);
        let path = dir.path().to_str().unwrap().to_string();
        support::local("mount", &["-t", "glusterfs", &source, &path]).await;
        FuseMount { dir }
    }

    async fn run(&self) -> DataPath {
        let dir = self.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || workload(&dir))
            .await
            .unwrap()
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) async fn unmount(self) {
        support::local("umount", &[self.dir.path().to_str().unwrap()]).await;
    }
}

/// A replica-3 volume with no size limit, made by gluster's CLI under the first brick root of
/// each node: gluster's own speed on the same disks.
pub(crate) async fn plain_volume(cli: &Cli, cluster: &Cluster) -> String {
    let volume = format!("bench_plain_{}", unique("v").replace('-', ""));
    let bricks: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{}/{volume}/brick", n.brick_roots[0].path.display()))
        .collect();
    for (node, brick) in cluster.nodes.iter().zip(&bricks) {
        cli.run(&node.ssh_address, &format!("mkdir -p {brick}\n"))
            .await;
    }
    let specs: Vec<String> = cluster
        .nodes
        .iter()
        .zip(&bricks)
        .map(|(n, b)| format!("{}:{b}", n.storage_address))
        .collect();
    let script = format!(
        "{GLUSTER_FN}g volume create {volume} replica 3 {}\ng volume start {volume} force\n",
        specs.join(" ")
    );
    cli.run(&cluster.nodes[0].ssh_address, &script).await;
    volume
}

/// The volume a claim of the burst's class got.
pub(crate) async fn volume_of(burst: &Burst, claim: &PersistentVolumeClaim) -> String {
    let pvs = Api::<PersistentVolume>::all(burst.client.clone());
    let pv = pvs
        .get(&objects::pv_name(&claim.uid().unwrap()))
        .await
        .unwrap();
    pv.spec.unwrap().glusterfs.unwrap().path
}

pub(crate) async fn limits(
    o: &Options,
    client: &Client,
    cli: &Cli,
    cluster: &Cluster,
    name: &str,
) -> (Vec<Row>, Value) {
    let n = o.claims;
    let mut rows = Vec::new();
    let mut results = json!({});
    let mut volumes = Vec::new();
    let mut speed = BTreeMap::new();
    for limit in LIMITS {
        log(format!(
            "6. sizeLimit {limit}: {} claims one at a time, a burst of {n}",
            o.one_by_one
        ));
        let burst = Burst::new(client, name, limit).await;
        let (mut provisioner, _, _) = start_provisioner(name, &burst.class, &[]).await;
        let single = one_by_one(&burst, o.one_by_one, &format!("{limit}-one")).await;
        let run = burst_and_delete(&burst, n, &format!("{limit}-burst"), None).await;
        // Kept for the data path, mounted once all are made.
        let claim = burst.provision(1, &format!("{limit}-data")).await.made;
        volumes.push((limit, volume_of(&burst, &claim[0]).await));
        provisioner.stop().await;
        let (p50, _, max) = percentiles(&single);
        log(format!("   one at a time: p50 {p50:.2} s, max {max:.2} s"));
        speed.insert(limit, (p50, run.claims.all_bound));
        rows.push(row(
            format!("{limit}: one claim Bound p50 / max (s)"),
            format!("{p50:.2} / {max:.2}"),
            if limit == "image" {
                format!("<= 1.5: {}", verdict(p50 <= 1.5))
            } else {
                String::new()
            },
        ));
        results[format!("limit_{limit}")] = json!({"one_by_one": single, "burst": run.json()});
    }
    let before = speed["strict-quota"].1;
    for limit in LIMITS {
        let all = speed[limit].1;
        rows.push(row(
            format!("{limit}: burst of {n} all Bound (s), vs strict-quota"),
            format!("{all:.2}, {:.2}x faster", before / all),
            if limit == "image" {
                format!(">= 2x: {}", verdict(before / all >= 2.0))
            } else {
                String::new()
            },
        ));
    }

    log("6. data path: 256 MiB + fsync, 1,000 files of 4 KiB; best of two rounds");
    volumes.insert(0, ("plain", plain_volume(cli, cluster).await));
    let mut mounts = Vec::new();
    for (limit, volume) in &volumes {
        mounts.push((*limit, FuseMount::of(cluster, volume).await));
    }
    let mut best: BTreeMap<&str, DataPath> = BTreeMap::new();
    for round in 0..2 {
        // In turn, the other way round the second time.
        let order: Vec<usize> = match round {
            0 => (0..mounts.len()).collect(),
            _ => (0..mounts.len()).rev().collect(),
        };
        for i in order {
            let (limit, mount) = &mounts[i];
            let took = mount.run().await;
            log(format!("   {limit}: {took:?}"));
            let kept = best.get(limit).map_or(took, |b| b.best(took));
            best.insert(limit, kept);
        }
    }
    for (_, mount) in mounts {
        mount.unmount().await;
    }
    let plain = best["plain"];
    rows.push(row(
        "data path plain: write 256M / 1000 creates / stats / deletes (s)",
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2}",
            plain.big_write, plain.creates, plain.stats, plain.deletes
        ),
        String::new(),
    ));
    for limit in LIMITS {
        let [write, creates, stats, deletes] = best[limit].relative(plain);
        let target = if limit == "image" {
            let small = creates.min(stats).min(deletes);
            format!(
                "small >= 0.9: {}, write >= 0.8: {}",
                verdict(small >= 0.9),
                verdict(write >= 0.8)
            )
        } else {
            String::new()
        };
        rows.push(row(
            format!("data path {limit}: x plain (write/creates/stats/deletes)"),
            format!("{write:.2} / {creates:.2} / {stats:.2} / {deletes:.2}"),
            target,
        ));
        results[format!("datapath_{limit}")] = json!({"seconds": format!("{:?}", best[limit]),
            "relative": [write, creates, stats, deletes]});
    }
    results["datapath_plain"] = json!(format!("{plain:?}"));
    (rows, results)
}

/// Turns brick multiplexing on, at most 50 bricks a process: at about 75, a GlusterFS 10 brick
/// process runs out of file descriptors and further bricks fail to attach.
pub(crate) async fn multiplex(cli: &Cli, cluster: &Cluster) {
    let all = format!(
        "{GLUSTER_FN}g volume set all cluster.brick-multiplex on\n\
         g volume set all cluster.max-bricks-per-process 50\n"
    );
    cli.run(&cluster.nodes[0].ssh_address, &all).await;
}

/// Volumes made raw on the nodes, bricks under each node's own directory of the environment,
/// one at a time: `pool_<from>` to `pool_<to - 1>`.
async fn raw_volumes(cli: &Cli, cluster: &Cluster, from: usize, to: usize, tag: &str) {
    if from >= to {
        return;
    }
    let nodes = &cluster.nodes;
    let brick = |node: &Node, i: usize| {
        let root = env().state_dir.join("nodes").join(&node.name).join("pool");
        format!("{}/{tag}{i}/brick", root.display())
    };
    for node in nodes {
        let dirs: Vec<String> = (from..to).map(|i| brick(node, i)).collect();
        cli.run(&node.ssh_address, &format!("mkdir -p {}\n", dirs.join(" ")))
            .await;
    }
    for i in from..to {
        let specs: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}:{}", n.storage_address, brick(n, i)))
            .collect();
        let script = format!(
            "{GLUSTER_FN}g volume create {tag}{i} replica 3 {} force\ng volume start {tag}{i} force\n",
            specs.join(" ")
        );
        cli.run(&nodes[i % nodes.len()].ssh_address, &script).await;
    }
}

/// Stops and deletes the raw volumes, a few at a time.
async fn remove_raw(cli: &Cli, cluster: &Cluster, count: usize, tag: &str) {
    stream::iter(0..count)
        .map(|i| async move {
            let script =
                format!("{GLUSTER_FN}g volume stop {tag}{i} force\ng volume delete {tag}{i}\n");
            cli.run(&cluster.nodes[i % 3].ssh_address, &script).await;
        })
        .buffer_unordered(3)
        .collect::<Vec<_>>()
        .await;
}

pub(crate) async fn pool(
    client: &Client,
    cli: &Cli,
    cluster: &Cluster,
    name: &str,
) -> (Vec<Row>, Value) {
    const LEVELS: [usize; 3] = [0, 100, 200];
    let burst = Burst::new(client, name, "image").await;
    let mut rows = Vec::new();
    let mut results = json!({});
    for mux in [false, true] {
        let setting = if mux {
            "multiplexed"
        } else {
            "one process a brick"
        };
        let tag = if mux { "poolm" } else { "pool" };
        if mux {
            multiplex(cli, cluster).await;
        }
        let (_, rss_empty) = brick_processes();
        let mut made = 0;
        let mut first = None;
        for level in LEVELS {
            log(format!("7. pool, {setting}: {level} volumes"));
            let started = Instant::now();
            raw_volumes(cli, cluster, made, level, tag).await;
            let per_volume = secs(started.elapsed()) / (level - made).max(1) as f64;
            made = level;
            let (processes, rss) = brick_processes();
            let (mut provisioner, _, _) = start_provisioner(name, &burst.class, &[]).await;
            let single = one_by_one(&burst, 3, &format!("{tag}{level}-")).await;
            provisioner.stop().await;
            let (p50, _, _) = percentiles(&single);
            let base = *first.get_or_insert(p50);
            let mib = (rss.saturating_sub(rss_empty)) as f64 / (1 << 20) as f64;
            let each = if level == 0 { 0.0 } else { mib / level as f64 };
            // What one brick process's crash takes down, on average.
            let per_process = (3 * level) as f64 / processes.max(1) as f64;
            log(format!(
                "   claim p50 {p50:.2} s; {processes} brick processes ({per_process:.1} bricks each), {mib:.0} MiB"
            ));
            rows.push(row(
                format!("pool {setting}, {level} volumes: claim p50 (s), x empty"),
                format!(
                    "{p50:.2}, {:.2}x; {processes} procs ({per_process:.1} bricks each), {mib:.0} MiB ({each:.1}/volume); raw create {per_volume:.2} s",
                    p50 / base
                ),
                if level == 200 {
                    format!("<= 1.25x: {}", verdict(p50 / base <= 1.25))
                } else {
                    String::new()
                },
            ));
            results[format!("pool_{tag}_{level}")] = json!({"one_by_one": single,
                "brick_processes": processes, "bricks_per_process": per_process, "brick_rss_mib": mib,
                "raw_create_seconds_each": per_volume});
        }
        if !mux {
            log("7. pool: the unmultiplexed volumes removed");
            remove_raw(cli, cluster, made, tag).await;
        }
    }
    (rows, results)
}
