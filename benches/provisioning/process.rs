//! The provisioner under test as a process: started as deployed, its memory and CPU.

use super::*;

/// VmRSS and VmHWM (peak) of a process, in bytes.
pub(crate) fn memory(pid: u32) -> (u64, u64) {
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
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Seconds from `start` until the provisioner serves the GID gauge of `class`: its caches are
/// complete and the GID table rebuilt.
pub(crate) async fn time_to_ready(port: u16, class: &str, start: Instant) -> f64 {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The provisioner as deployed (release build, restricted identity), with the environment
/// `vars` on top of its defaults; and the seconds it took to be ready for `class`.
pub(crate) async fn start_provisioner(
    name: &str,
    class: &str,
    vars: &[(&str, &str)],
) -> (Provisioner, u16, f64) {
    let port = free_port();
    let started = Instant::now();
    let provisioner = Provisioner::spawn(name, vars, &format!("127.0.0.1:{port}"), "info");
    let ready = time_to_ready(port, class, started).await;
    (provisioner, port, ready)
}
