//! Phase 9: bursts of claims with image bricks (a parameterless class's volumes) against the
//! same work typed by hand on the nodes, all at once, in the same environment: three rounds of
//! each at the first `--image-claims` size (their median ratios), one at each further size.
//! The provisioner's own figures say where its time went, step by step
//! (`glusterfs_provisioner_provision_step_seconds`).

use super::*;

use glusterfs_provisioner::metrics::Step;

/// What a round by hand took: seconds until every volume was started, and until every volume,
/// image, fstab line and directory was gone.
struct ByHand {
    create: f64,
    delete: f64,
}

/// One shell run per brick: what the provisioner lays out for an image brick (a sparse XFS
/// image of `$2` bytes with a 64 MiB log, listed in the node's fstab, mounted on the volume's
/// directory `$1`, the brick directory owned by the GID `$3`).
const LAY_OUT: &str = r#"set -e
truncate -s "$2" "$1.img"
mkfs.xfs -q -i size=512 -l size=64m "$1.img"
mkdir -p "$1"
flock /run/gp-bench-fstab.lock sh -c 'printf "%s\n" "$1.img $1 xfs loop,noatime,inode64,nofail 0 0" >>/etc/fstab' - "$1"
mount "$1"
install -d -m 2775 -g "$3" "$1/brick"
"#;

/// And its undoing: unmounted, out of the fstab, image and directory removed.
const CLEAR: &str = r#"set -e
umount "$1"
flock /run/gp-bench-fstab.lock sh -c 'grep -vxF "$1.img $1 xfs loop,noatime,inode64,nofail 0 0" /etc/fstab >/etc/fstab.gp-bench; cat /etc/fstab.gp-bench >/etc/fstab; rm /etc/fstab.gp-bench' - "$1"
rm -f "$1.img"
rm -rf --one-file-system "$1"
"#;

/// The volume `name`'s directory under the node's first (image) brick root.
fn dir(node: &Node, name: &str) -> String {
    format!("{}/{name}", node.brick_roots[0].path.display())
}

/// `script` run by bash on `host` with `args` as its positional parameters.
async fn run_with(cli: &Cli, host: &str, script: &str, args: &[String]) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!("set -- {}\n{script}", quoted.join(" "));
    cli.run(host, &script).await;
}

/// `n` replica-3 volumes of 1 GiB with image bricks, made all at once by gluster's CLI and the
/// steps above over the system's `ssh`, then stopped and deleted all at once.
async fn by_hand(cli: &Cli, cluster: &Cluster, n: usize) -> ByHand {
    let tag = unique("img").replace('-', "");
    // Three bricks, as the environment's three nodes give a replica 3 volume.
    let nodes = &cluster.nodes[..3];
    let bytes = glusterfs_provisioner::gluster::image::image_bytes(1, 1).to_string();
    let names: Vec<String> = (0..n).map(|i| format!("bench_{tag}_{i}")).collect();
    let start = Instant::now();
    futures::future::join_all(names.iter().enumerate().map(|(i, name)| {
        let bytes = &bytes;
        async move {
            let gid = (GID_MIN + i as u32).to_string();
            futures::future::join_all(nodes.iter().map(|node| {
                let args = [dir(node, name), bytes.clone(), gid.clone()];
                async move { run_with(cli, &node.ssh_address, LAY_OUT, &args).await }
            }))
            .await;
            let bricks: Vec<String> = nodes
                .iter()
                .map(|node| format!("{}:{}/brick", node.storage_address, dir(node, name)))
                .collect();
            let script = format!(
                "{GLUSTER_FN}g volume create {name} replica 3 {bricks}\n\
                 g volume set {name} storage.owner-gid {gid} storage.health-check-interval 0\n\
                 g volume start {name} force\n",
                bricks = bricks.join(" ")
            );
            cli.run(&nodes[i % nodes.len()].ssh_address, &script).await;
        }
    }))
    .await;
    let create = secs(start.elapsed());
    let start = Instant::now();
    futures::future::join_all(names.iter().enumerate().map(|(i, name)| async move {
        cli.run(&nodes[i % nodes.len()].ssh_address, &stop_and_delete(name))
            .await;
        futures::future::join_all(nodes.iter().map(|node| async move {
            run_with(cli, &node.ssh_address, CLEAR, &[dir(node, name)]).await
        }))
        .await;
    }))
    .await;
    let delete = secs(start.elapsed());
    log(format!(
        "by hand, {n} image volumes at once: made in {create:.1} s, deleted in {delete:.1} s"
    ));
    ByHand { create, delete }
}

/// A started replica 3 volume on plain brick directories that lasts through a round, made and
/// removed by gluster's CLI: a pool in use has one, and with it the self-heal daemons, so
/// neither the run by hand nor the burst starts them for its first volume.
struct Standing<'a> {
    cli: &'a Cli,
    nodes: &'a [Node],
    name: String,
}

impl<'a> Standing<'a> {
    async fn make(cli: &'a Cli, cluster: &'a Cluster) -> Standing<'a> {
        let standing = Standing {
            cli,
            nodes: &cluster.nodes[..3],
            name: unique("standing").replace('-', "_"),
        };
        let bricks: Vec<String> = standing
            .nodes
            .iter()
            .map(|node| format!("{}:{}", node.storage_address, standing.dir(node)))
            .collect();
        let name = &standing.name;
        let script = format!(
            "{GLUSTER_FN}g volume create {name} replica 3 {bricks}\ng volume start {name} force\n",
            bricks = bricks.join(" ")
        );
        cli.run(&standing.nodes[0].ssh_address, &script).await;
        standing
    }

    fn dir(&self, node: &Node) -> String {
        dir(node, &self.name)
    }

    async fn remove(self) {
        let script = stop_and_delete(&self.name);
        self.cli.run(&self.nodes[0].ssh_address, &script).await;
        futures::future::join_all(self.nodes.iter().map(|node| {
            let script = format!("rm -rf --one-file-system {}\n", self.dir(node));
            async move { self.cli.run(&node.ssh_address, &script).await }
        }))
        .await;
    }
}

/// What the provisioner on `port` has counted so far: seconds spent in each step, summed over
/// its provisionings, and gluster commands sent (retries included) by operation.
struct Counted {
    steps: BTreeMap<&'static str, f64>,
    commands: BTreeMap<String, f64>,
}

async fn counted(port: u16) -> Counted {
    let text = support::metrics(port).await;
    let value = |line: &str| line.rsplit(' ').next()?.trim().parse::<f64>().ok();
    let steps = Step::ALL
        .iter()
        .map(|step| {
            let series = format!(
                "glusterfs_provisioner_provision_step_seconds_sum{{step=\"{}\"}} ",
                step.label()
            );
            let sum = text
                .lines()
                .find(|l| l.starts_with(&series))
                .and_then(value);
            (step.label(), sum.unwrap_or(0.0))
        })
        .collect();
    let mut commands = BTreeMap::new();
    for line in text.lines() {
        let Some(labels) =
            line.strip_prefix("glusterfs_provisioner_gluster_operations_started_total{")
        else {
            continue;
        };
        let operation = labels
            .split("operation=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        if let (Some(operation), Some(v)) = (operation, value(line)) {
            *commands.entry(operation.to_string()).or_default() += v;
        }
    }
    Counted { steps, commands }
}

/// One round: by hand, then the same number of claims, each with its deletion.
struct Round {
    hand: ByHand,
    run: BurstRun,
    /// Seconds per claim in each step (the burst's sums over its claims).
    steps: BTreeMap<&'static str, f64>,
    /// Gluster commands sent per claim, by operation (a command retried counts each time).
    commands: BTreeMap<String, f64>,
}

impl Round {
    fn bound_ratio(&self) -> f64 {
        self.run.claims.all_bound / self.hand.create
    }

    fn delete_ratio(&self) -> f64 {
        self.run.delete.all / self.hand.delete
    }

    fn json(&self) -> Value {
        json!({"by_hand": {"create_seconds": self.hand.create, "delete_seconds": self.hand.delete},
               "provisioner": self.run.json(), "bound_ratio": self.bound_ratio(),
               "delete_ratio": self.delete_ratio(), "step_seconds_per_claim": self.steps,
               "gluster_commands_per_claim": self.commands})
    }
}

async fn round(
    cli: &Cli,
    cluster: &Cluster,
    burst: &Burst,
    name: &str,
    n: usize,
    i: usize,
) -> Round {
    let standing = Standing::make(cli, cluster).await;
    let hand = by_hand(cli, cluster, n).await;
    let (mut provisioner, port, _) = start_provisioner(name, &burst.class, &[]).await;
    let prefix = format!("img{n}r{i}");
    // One claim first, not counted, as a provisioner that has run a while has its SSH
    // connections open and its nodes' readings taken (the run by hand's are open already).
    let warm = burst.provision(1, &format!("{prefix}-warm")).await;
    burst.delete(&warm.made).await;
    let before = counted(port).await;
    let run = burst_and_delete(burst, n, &prefix, None).await;
    let after = counted(port).await;
    provisioner.stop().await;
    standing.remove().await;
    let steps = after
        .steps
        .iter()
        .map(|(step, sum)| (*step, (sum - before.steps[step]) / n as f64))
        .collect();
    let commands = after
        .commands
        .iter()
        .map(|(op, sum)| {
            let was = before.commands.get(op).copied().unwrap_or(0.0);
            (op.clone(), (sum - was) / n as f64)
        })
        .collect();
    Round {
        hand,
        run,
        steps,
        commands,
    }
}

fn median(values: Vec<f64>) -> f64 {
    percentiles(&values).0
}

pub(crate) async fn images(
    o: &Options,
    client: &Client,
    cli: &Cli,
    cluster: &Cluster,
    name: &str,
) -> (Vec<Row>, Value) {
    let burst = Burst::new(client, name, "image").await;
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (k, &n) in o.image_claims.iter().enumerate() {
        let rounds = if k == 0 { 3 } else { 1 };
        log(format!(
            "9. image bricks: {n} by hand at once, then {n} claims at once, {rounds} round(s)"
        ));
        let mut done = Vec::new();
        for i in 0..rounds {
            done.push(round(cli, cluster, &burst, name, n, i).await);
        }
        let bound = median(done.iter().map(Round::bound_ratio).collect());
        let share = median(done.iter().map(|r| r.run.median_share()).collect());
        let delete = median(done.iter().map(Round::delete_ratio).collect());
        let each = |f: &dyn Fn(&Round) -> f64| {
            done.iter()
                .map(|r| format!("{:.1}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let target = |limit: f64, value: f64| {
            if rounds == 3 && n == 30 {
                format!("<= {limit:.2}: {}", verdict(value <= limit))
            } else {
                "(measured)".into()
            }
        };
        rows.extend([
            row(
                format!("images, {n}: by hand made / deleted (s)"),
                format!(
                    "{} / {}",
                    each(&|r| r.hand.create),
                    each(&|r| r.hand.delete)
                ),
                String::new(),
            ),
            row(
                format!("images, {n}: claims Bound / deleted (s)"),
                format!(
                    "{} / {}",
                    each(&|r| r.run.claims.all_bound),
                    each(&|r| r.run.delete.all)
                ),
                String::new(),
            ),
            row(
                format!("images, {n}: all Bound / by hand (median)"),
                format!("{bound:.2}"),
                target(1.15, bound),
            ),
            row(
                format!("images, {n}: p50 claim / all Bound (median)"),
                format!("{share:.2}"),
                target(0.60, share),
            ),
            row(
                format!("images, {n}: deleted / by hand (median)"),
                format!("{delete:.2}"),
                target(1.05, delete),
            ),
        ]);
        // Where a claim's time went, in the median round by Bound ratio.
        let mut by_ratio: Vec<&Round> = done.iter().collect();
        by_ratio.sort_by(|a, b| a.bound_ratio().total_cmp(&b.bound_ratio()));
        let middle = by_ratio[by_ratio.len() / 2];
        rows.push(row(
            format!("images, {n}: s per claim by step"),
            middle
                .steps
                .iter()
                .filter(|(_, s)| **s > 0.0)
                .map(|(step, s)| format!("{step} {s:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            String::new(),
        ));
        rows.push(row(
            format!("images, {n}: gluster commands per claim"),
            middle
                .commands
                .iter()
                .map(|(op, k)| format!("{op} {k:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            String::new(),
        ));
        results.push(json!({"claims": n, "bound_ratio_median": bound,
                            "median_share_median": share, "delete_ratio_median": delete,
                            "rounds": done.iter().map(Round::json).collect::<Vec<_>>()}));
    }
    (rows, json!({"images": results}))
}
