//! Phase 5: the volume health sweep at scale. `--sweep N` volumes made raw on the nodes, with
//! PVs and bound claims of ours; the provisioner's first look at all of them (seconds, gluster
//! commands, CPU); then claims one at a time, first with the sweep idle, then with it looking
//! at every volume back to back, to show what the sweep costs provisioning.

use super::*;

/// Each node's bricks for these volumes: under its own directory of the environment (the
/// nodes share the host's file systems but for their brick roots, and these volumes must stay
/// out of the roots' promises).
fn sweep_root(node: &Node) -> PathBuf {
    env().state_dir.join("nodes").join(&node.name).join("sweep")
}

/// The sum of the samples of metric `name` whose labels contain one of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().any(|with| l.contains(with)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The gluster commands a look at a volume's health sends, counted so far.
fn health_commands(text: &str) -> f64 {
    let looks = [
        "operation=\"volume status\"",
        "operation=\"volume heal\"",
        "operation=\"volume info\"",
    ];
    sum(
        text,
        "glusterfs_provisioner_gluster_operations_started_total",
        &looks,
    )
}

/// How many volumes of namespace `ns` have been looked at: their last-look timestamps.
fn looked(text: &str, ns: &str) -> usize {
    let label = format!("namespace=\"{ns}\"");
    text.lines()
        .filter(|l| l.starts_with("glusterfs_provisioner_volume_health_checked_timestamp_seconds{"))
        .filter(|l| l.contains(&label))
        .count()
}

/// Brick processes on the host (every node's) and their resident memory, in bytes.
pub(crate) fn brick_processes() -> (usize, u64) {
    let mut count = 0;
    let mut rss = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "glusterfsd" {
            count += 1;
            rss += memory(pid).0;
        }
    }
    (count, rss)
}

/// Waits until the provisioner, started at `started`, has looked at every volume of `ns`:
/// the seconds since, its health-look commands and CPU seconds (all of its life so far).
async fn first_full_sweep(
    started: Instant,
    port: u16,
    pid: u32,
    ns: &str,
    n: usize,
) -> (f64, f64, f64) {
    let text = eventually(TIMEOUT, &format!("{n} volumes looked at"), || async {
        let text = support::metrics(port).await;
        (looked(&text, ns) == n).then_some(text)
    })
    .await;
    (
        secs(started.elapsed()),
        health_commands(&text),
        cpu_seconds(pid),
    )
}

pub(crate) async fn sweep(
    o: &Options,
    client: &Client,
    cli: &Cli,
    cluster: &Cluster,
    burst: &Burst,
    name: &str,
) -> (Vec<Row>, Value) {
    let n = o.sweep;
    log(format!(
        "5. health sweep: {n} volumes made raw on the nodes (bricks multiplexed), with PVs"
    ));
    // Without multiplexing, 3 brick processes of about 21 MiB per volume would not fit this
    // machine at 500 volumes. One process holds about 75 bricks before it runs out of file
    // descriptors (about 260 a brick, its limit 20,000) and further bricks fail to attach: 50
    // a process.
    let nodes = &cluster.nodes;
    multiplex(cli, cluster).await;
    let pre = preload(client, name, cluster, n, sweep_root).await;
    for node in nodes {
        let dirs: Vec<String> = pre
            .volumes
            .iter()
            .flat_map(|(_, bricks)| bricks.iter().filter(|b| b.node == node.name))
            .map(|b| b.path.display().to_string())
            .collect();
        let script = format!("mkdir -p {}\n", dirs.join(" "));
        cli.run(&node.ssh_address, &script).await;
    }
    // One at a time, as an operator's script would: made several at once, glusterd 10 logged
    // failed brick attaches (`attach_brick_callback`: "Failed to store volinfo").
    let started = Instant::now();
    for (volume, bricks) in &pre.volumes {
        let specs: Vec<String> = bricks.iter().map(Brick::spec).collect();
        let script = format!(
            "{GLUSTER_FN}g volume create {volume} replica 3 {} force\n\
             g volume start {volume} force\n",
            specs.join(" ")
        );
        cli.run(&nodes[0].ssh_address, &script).await;
    }
    let made = secs(started.elapsed());
    // Every brick must run, or the looks measured are cheaper than real ones.
    let ssh = support::ssh();
    let down: Vec<&String> = stream::iter(&pre.volumes)
        .map(|(volume, _)| {
            let ssh = &ssh;
            async move {
                let args = ["volume", "status", volume, "--xml"].map(String::from);
                let out = ssh.run_ok(&nodes[0].ssh_address, "gluster", &args).await;
                let bricks = xml::parse_volume_status(&out.unwrap()).unwrap();
                let running = bricks
                    .iter()
                    .filter(|b| b.brick().is_some() && b.status == 1);
                (running.count() < 3).then_some(volume)
            }
        })
        .buffer_unordered(4)
        .filter_map(|down| async move { down })
        .collect()
        .await;
    assert!(down.is_empty(), "volumes with bricks down: {down:?}");
    let (processes, brick_rss) = brick_processes();
    log(format!(
        "{n} volumes made and started in {made:.0} s; {processes} brick processes, {:.0} MiB",
        brick_rss as f64 / (1 << 20) as f64
    ));

    // Looked at once when the provisioner starts, then not for a day.
    let idle = [("HEALTH_INTERVAL_SECONDS", "86400")];
    let started = Instant::now();
    let (mut provisioner, port, _) = start_provisioner(name, &pre.class, &idle).await;
    let pid = provisioner.pid().unwrap();
    let (first, first_commands, first_cpu) = first_full_sweep(started, port, pid, &pre.ns, n).await;
    log(format!(
        "first look at {n} volumes: {first:.1} s, {first_commands} gluster commands, {first_cpu:.1} s CPU"
    ));
    log(format!(
        "   {} claims one at a time, the sweep idle",
        o.one_by_one
    ));
    let quiet = one_by_one(burst, o.one_by_one, "quiet").await;
    provisioner.stop().await;

    // Every volume due again as soon as it was looked at: each tick of the sweep (10 s) looks at
    // all of them, back to back once a pass takes longer than a tick.
    let busy = [("HEALTH_INTERVAL_SECONDS", "1")];
    let started = Instant::now();
    let (mut provisioner, port, _) = start_provisioner(name, &pre.class, &busy).await;
    let pid = provisioner.pid().unwrap();
    first_full_sweep(started, port, pid, &pre.ns, n).await;
    let (cpu, commands, window) = (
        cpu_seconds(pid),
        health_commands(&support::metrics(port).await),
        Instant::now(),
    );
    log(format!(
        "   {} claims one at a time, sweeping back to back",
        o.one_by_one
    ));
    let sweeping = one_by_one(burst, o.one_by_one, "sweeping").await;
    let minutes = secs(window.elapsed()) / 60.0;
    let busy_commands = (health_commands(&support::metrics(port).await) - commands) / minutes;
    let busy_cpu = (cpu_seconds(pid) - cpu) / (minutes * 60.0);
    provisioner.stop().await;

    let (q50, _, qmax) = percentiles(&quiet);
    let (s50, _, smax) = percentiles(&sweeping);
    let slower = s50 / q50;
    let per_volume = first_commands / n as f64;
    // At the default HEALTH_INTERVAL_SECONDS (600): each volume once in 10 minutes.
    let default_rate = per_volume * n as f64 / 10.0;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let rows = vec![
        row(
            format!("sweep: {n} volumes made raw (s), brick procs / MiB"),
            format!("{made:.0}, {processes} / {:.0}", mib(brick_rss)),
            "(multiplexed)".into(),
        ),
        row(
            format!("sweep: all {n} looked at from start (s), CPU (s)"),
            format!("{first:.1}, {first_cpu:.1}"),
            String::new(),
        ),
        row(
            "sweep: gluster commands per volume looked at",
            format!("{per_volume:.2}"),
            String::new(),
        ),
        row(
            "sweep: commands/min at the default 600 s",
            format!("{default_rate:.0}"),
            "(per volume x N / 10 min)".into(),
        ),
        row(
            "sweep back to back: commands/min, CPU (cores)",
            format!("{busy_commands:.0}, {busy_cpu:.2}"),
            String::new(),
        ),
        row(
            format!("{} one at a time: p50 idle / sweeping (s)", o.one_by_one),
            format!("{q50:.2} / {s50:.2} (max {qmax:.2} / {smax:.2})"),
            format!("<= 1.10x: {}", verdict(slower <= 1.10)),
        ),
    ];
    let results = json!({
        "sweep": {"volumes": n, "made_seconds": made, "brick_processes": processes,
                  "brick_rss_bytes": brick_rss, "first_sweep_seconds": first,
                  "first_sweep_commands": first_commands, "first_sweep_cpu_seconds": first_cpu,
                  "busy_commands_per_minute": busy_commands, "busy_cpu_cores": busy_cpu,
                  "one_by_one_idle": quiet, "one_by_one_sweeping": sweeping},
    });
    (rows, results)
}
