//! Faults of shared parts: sshd restarting, a host key that changes, glusterd down on one node,
//! the API server and etcd restarting. Each breaks what every other test uses, so `e2e/test`
//! runs this module on its own, one test at a time, after the others; a guard puts a node back
//! even when a test fails.

use std::path::PathBuf;
use std::time::Duration;

use glusterfs_provisioner::config::Node;
use glusterfs_provisioner::gluster::xml::{Peer, parse_peer_status};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;

mod arbiter;
mod audit;
mod health;
mod reboot;

use crate::scenario::*;
use crate::support::{Provisioner, env, eventually, metrics, unique};

/// One node of the pool, to break and mend: its daemons run in its own network and mount
/// namespaces, pinned by a holder process.
pub(crate) struct GlusterNode {
    name: String,
    dir: PathBuf,
}

impl GlusterNode {
    pub(crate) fn new(name: &str) -> Self {
        GlusterNode {
            name: name.into(),
            dir: env().state_dir.join("nodes").join(name),
        }
    }

    fn holder(&self) -> String {
        let pid = env()
            .state_dir
            .join("pids")
            .join(format!("{}-ns", self.name));
        std::fs::read_to_string(pid).unwrap().trim().to_string()
    }

    /// Processes named `comm` in the node's network namespace.
    pub(crate) fn pids(&self, comm: &str) -> Vec<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn signal(&self, comm: &str, signal: &str) {
        for pid in self.pids(comm) {
            std::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap();
        }
    }

    /// Runs `program` in the node's namespaces, as the environment started its daemons.
    fn start(&self, program: &str, args: &[&str]) {
        let status = std::process::Command::new("nsenter")
            .args(["-t", &self.holder(), "-n", "-m", program])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "starting {program} on {}", self.name);
    }

    fn start_sshd(&self) {
        let config = self.dir.join("etc/sshd_config");
        let log = env()
            .state_dir
            .join("logs")
            .join(format!("{}-sshd.log", self.name));
        self.start(
            "/usr/sbin/sshd",
            &["-f", config.to_str().unwrap(), "-E", log.to_str().unwrap()],
        );
    }

    /// Every sshd of the node, so open connections break too.
    fn kill_sshd(&self) {
        self.signal("sshd", "-KILL");
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            self.pids("sshd").is_empty()
        });
        assert!(gone, "sshd of {} still running", self.name);
    }

    fn start_glusterd(&self) {
        self.start("glusterd", &["--log-file=/var/log/glusterfs/glusterd.log"]);
    }

    /// Runs `program` in the node's mount namespace and waits for it to succeed.
    fn in_mounts(&self, program: &str, args: &[&str]) {
        let status = std::process::Command::new("nsenter")
            .args(["-t", &self.holder(), "-m", program])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{program} {args:?} on {}", self.name);
    }

    /// What a power cut does: every gluster process ends, and every mount under the brick
    /// roots (the image bricks) is gone; the roots themselves stay, as disks would.
    pub(crate) fn shut_down(&self) {
        for comm in ["glusterd", "glusterfsd", "glusterfs"] {
            self.signal(comm, "-KILL");
        }
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            ["glusterd", "glusterfsd", "glusterfs"]
                .iter()
                .all(|comm| self.pids(comm).is_empty())
        });
        assert!(gone, "gluster processes of {} still running", self.name);
        let mounts = std::fs::read_to_string(format!("/proc/{}/mounts", self.holder())).unwrap();
        let roots = &crate::scenario::node_by_name(&self.name).brick_roots;
        for target in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if roots
                .iter()
                .any(|r| target.starts_with(&format!("{}/", r.path.display())))
            {
                self.in_mounts("umount", &[target]);
            }
        }
    }

    /// What a server does when it boots: /run starts empty (a killed brick's pid file, its pid
    /// not yet reaped here, would pass for a running brick), it mounts what its /etc/fstab
    /// lists and starts glusterd (which starts the bricks of started volumes).
    pub(crate) fn boot(&self) {
        self.in_mounts("rm", &["-rf", "/run/gluster"]);
        self.in_mounts("mkdir", &["/run/gluster"]);
        self.in_mounts("mount", &["-a"]);
        self.start_glusterd();
    }

    /// The node as the environment made it: sshd and glusterd running, the original host key.
    pub(crate) fn mend(&self) {
        let key = self.dir.join("etc/ssh_host_ed25519_key");
        let saved = key.with_extension("orig");
        if saved.exists() {
            std::fs::rename(&saved, &key).unwrap();
            self.kill_sshd();
        }
        if self.pids("sshd").is_empty() {
            self.start_sshd();
        }
        self.signal("glusterd", "-CONT");
        if self.pids("glusterd").is_empty() {
            // Image bricks a failed reboot test left unmounted.
            self.in_mounts("mount", &["-a"]);
            self.start_glusterd();
        }
    }
}

impl Drop for GlusterNode {
    fn drop(&mut self) {
        self.mend();
    }
}

/// Notes of the `reason` events the space's provisioner reported about objects `regarding`
/// accepts.
async fn notes(
    s: &Space,
    reason: &str,
    regarding: impl Fn(&k8s_openapi::api::core::v1::ObjectReference) -> bool,
) -> Vec<String> {
    let events: Api<Event> = Api::all(s.client.clone());
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some(&s.provisioner_name)
                && e.regarding.as_ref().is_some_and(&regarding)
        })
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// Waits for the claim to fail naming `node` as one whose glusterd does not answer.
async fn refused_naming(s: &Space, claim: &PersistentVolumeClaim, node: &str) {
    let note = eventually(BIND_WAIT, "a failure naming the node", || async {
        failed_events(s, claim).await.into_iter().next()
    })
    .await;
    assert!(
        note.contains(&format!("{node} (glusterd does not answer")),
        "{note:?}"
    );
}

/// The claim's `ProvisioningFailed` notes.
async fn failed_events(s: &Space, claim: &PersistentVolumeClaim) -> Vec<String> {
    notes(s, "ProvisioningFailed", |r| r.uid == claim.uid()).await
}

/// A namespace, a provisioner with its metrics on `port`, and its `replicate:3` and
/// `replicate:2` classes.
async fn with_metrics(tag: &str, port: u16) -> (Space, Provisioner, String, String) {
    let ns = unique(tag);
    let name = format!("e2e.gluster.org/{ns}");
    let s = Space::create(ns, &name).await;
    let p = Provisioner::start_at(&name, &[], &format!("127.0.0.1:{port}")).await;
    let three = s
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    let two = s
        .class(json!({"volumetype": "replicate:2"}), "Delete")
        .await;
    (s, p, three, two)
}

/// The nodes holding a PV's bricks.
/// The node whose zone no other node shares, and its index: placement takes it for every
/// `replicate:2` volume (zones come first), so only a fault can leave it out of one.
fn lone_zone_node() -> (usize, &'static Node) {
    let shared = |n: &Node| nodes().iter().filter(|o| o.zone == n.zone).count() > 1;
    let found = nodes().iter().enumerate().find(|(_, n)| !shared(n));
    found.expect("a node in a zone of its own (e2e/lib/common.sh's NODE_ZONES)")
}

fn brick_nodes(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> Vec<String> {
    pv_bricks(pv).into_iter().map(|(node, _)| node).collect()
}

/// Fault: every sshd of a node is killed (open connections included) while a claim needs that
/// node, and started again 4 s later. The provisioner reconnects and the claim binds, without
/// a failed attempt.
#[tokio::test]
async fn an_sshd_restart_is_ridden_out() {
    let s = Scenario::new("sshd").await;
    let class = s
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    // Connections to every node are open.
    s.claim("warm", &class, "1Gi", "ReadWriteOnce").await;
    let warm = s.bound_pv("warm").await;
    let node = GlusterNode::new(&nodes()[1].name);
    node.kill_sshd();
    let claim = s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    tokio::time::sleep(Duration::from_secs(4)).await; // the length of the outage
    node.start_sshd();
    let pv = s.bound_pv("c").await;
    assert_eq!(brick_nodes(&pv).len(), 3);
    let failed = failed_events(&s, &claim).await;
    assert!(failed.is_empty(), "failed attempts: {failed:?}");

    // Deletion rides one out too (rm of the bricks over SSH included).
    node.kill_sshd();
    s.delete_claim("c").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    node.start_sshd();
    s.wait_pv_gone(&pv.name_any()).await;
    let suffix = uid_suffix(&claim);
    assert!(!brick_dirs().await.iter().any(|d| d.ends_with(&suffix)));
    s.delete_claim("warm").await;
    s.wait_pv_gone(&warm.name_any()).await;
}

/// Fault: a node's SSH host key is replaced and its sshd restarted while the provisioner runs.
/// The node is refused (strict checking) with an event and a metric, the others serve on, and
/// once the known key is back the node serves again.
#[tokio::test]
async fn a_changed_host_key_is_refused_not_trusted() {
    let port = 18093;
    let (s, _p, three, two) = with_metrics("hostkey", port).await;
    s.claim("warm", &three, "1Gi", "ReadWriteOnce").await;
    s.bound_pv("warm").await;

    let (_, victim) = lone_zone_node();
    let node = GlusterNode::new(&victim.name);
    let key = node.dir.join("etc/ssh_host_ed25519_key");
    std::fs::copy(&key, key.with_extension("orig")).unwrap();
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(key.with_extension("pub")).unwrap();
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(made.success());
    node.kill_sshd();
    node.start_sshd();

    let refused = s.claim("three", &three, "1Gi", "ReadWriteOnce").await;
    let note = eventually(BIND_WAIT, "a failure naming the host key", || async {
        failed_events(&s, &refused)
            .await
            .into_iter()
            .find(|n| n.contains("host key"))
    })
    .await;
    assert!(
        note.contains(&format!(
            "SSH host key of {} does not match",
            victim.ssh_address
        )),
        "{note:?}"
    );
    let series = format!(
        "glusterfs_provisioner_ssh_host_key_rejected{{node=\"{}\"}} 1",
        victim.ssh_address
    );
    assert!(metrics(port).await.contains(&series), "{series}");
    s.claim("two", &two, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("two").await;
    assert!(!brick_nodes(&pv).contains(&victim.name), "{pv:?}");

    node.mend();
    s.bound_pv("three").await;
    let cleared = series.replace("} 1", "} 0");
    assert!(metrics(port).await.contains(&cleared), "{cleared}");
    for claim in ["warm", "three", "two"] {
        s.delete_claim(claim).await;
    }
}

/// Fault: glusterd is killed on one node while its sshd stays up. `replicate:2` claims still
/// provision, on the other nodes, without a failed attempt; `replicate:3` claims fail with an
/// event naming the node, the metric and the `topology` check report it, and the claim binds
/// once glusterd is back.
#[tokio::test]
async fn glusterd_down_on_one_node() {
    let port = 18094;
    let (s, _p, three, two) = with_metrics("glusterd", port).await;
    let (_, victim) = lone_zone_node();
    let node = GlusterNode::new(&victim.name);
    node.signal("glusterd", "-KILL");

    let mut pvs = Vec::new();
    for i in 0..3 {
        let claim = s
            .claim(&format!("two-{i}"), &two, "1Gi", "ReadWriteOnce")
            .await;
        let pv = s.bound_pv(&format!("two-{i}")).await;
        assert!(!brick_nodes(&pv).contains(&victim.name), "{pv:?}");
        let failed = failed_events(&s, &claim).await;
        assert!(failed.is_empty(), "failed attempts: {failed:?}");
        pvs.push(pv);
    }
    let refused = s.claim("three", &three, "1Gi", "ReadWriteOnce").await;
    refused_naming(&s, &refused, &victim.name).await;
    let series = format!(
        "glusterfs_provisioner_glusterd_up{{node=\"{}\"}} 0",
        victim.name
    );
    assert!(metrics(port).await.contains(&series), "{series}");
    let (ok, report) = topology_report().await;
    assert!(!ok, "{report}");
    let line = report.lines().find(|l| l.contains(&victim.name)).unwrap();
    assert!(line.contains("glusterd does not answer"), "{line}");

    node.start_glusterd();
    let pv = s.bound_pv("three").await;
    assert_eq!(brick_nodes(&pv).len(), 3);
    for claim in ["two-0", "two-1", "two-2", "three"] {
        s.delete_claim(claim).await;
    }
    pvs.push(pv);
    for pv in pvs {
        s.wait_pv_gone(&pv.name_any()).await;
    }
}

/// Gluster commands a provisioner (metrics on `port`) sent to `node`, finished or not.
async fn commands_on(port: u16, node: &str) -> u64 {
    let label = format!("node=\"{node}\"");
    metrics(port)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("glusterfs_provisioner_gluster_operations_started_total{")
                && l.contains(&label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Fault: glusterd on one node is hung (SIGSTOP) while its sshd answers. The probe finds it
/// (gluster's own timeout), so no command is sent there to wait out the full timeout, while the
/// other nodes serve; a `replicate:3` claim fails naming the node, and binds once it resumes.
#[tokio::test]
async fn a_hung_glusterd_gets_no_commands() {
    let port = 18095;
    let (s, _p, three, _two) = with_metrics("hung", port).await;
    let victim = &nodes()[2];
    let node = GlusterNode::new(&victim.name);
    node.signal("glusterd", "-STOP");
    let claim = s.claim("three", &three, "1Gi", "ReadWriteOnce").await;
    refused_naming(&s, &claim, &victim.name).await;
    // The retries run their commands on the other nodes, never on the hung one.
    eventually(BIND_WAIT, "commands on the other nodes", || async {
        let mut others = 0;
        for n in nodes().iter().filter(|n| n.name != victim.name) {
            others += commands_on(port, &n.name).await;
        }
        (others >= 4).then_some(())
    })
    .await;
    // Counted when sent: one stuck on the hung glusterd would show.
    assert_eq!(commands_on(port, &victim.name).await, 0);

    node.signal("glusterd", "-CONT");
    let pv = s.bound_pv("three").await;
    s.delete_claim("three").await;
    s.wait_pv_gone(&pv.name_any()).await;
}

/// Kills the environment's daemons `names` (`kill -9`, in order) and starts them again as the
/// environment did: the same command line, detached, logging to the same file. They outlive
/// the test, as the environment's own do; `e2e/env down` ends them.
#[allow(clippy::zombie_processes)]
fn restart_daemons(names: &[&str]) {
    let state = &env().state_dir;
    let mut commands = Vec::new();
    for name in names {
        let pid_file = state.join("pids").join(name);
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap();
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        });
        assert!(gone, "{name} ({pid}) still running");
        commands.push((name, pid_file, argv));
    }
    for (name, pid_file, argv) in commands.into_iter().rev() {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(state.join("logs").join(format!("{name}.log")))
            .unwrap();
        let child = std::process::Command::new("setsid")
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(pid_file, child.id().to_string()).unwrap();
    }
}

/// Fault: the API server and etcd are killed (`kill -9`) in the middle of a burst of 20 claims
/// and started again. Every claim is Bound exactly once, every volume has its PV, no GID twice.
#[tokio::test]
async fn the_api_server_restarting_mid_burst_loses_and_doubles_nothing() {
    let s = Scenario::new("apirestart").await;
    let class = s.class(json!({"volumetype": "none"}), "Delete").await;
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let claims = futures::future::join_all(
        names
            .iter()
            .map(|n| s.claim(n, &class, "1Gi", "ReadWriteOnce")),
    )
    .await;
    // Mid-burst: some bound, most not yet.
    eventually(BIND_WAIT, "the first claims Bound", || async {
        let list = s.claims.list(&Default::default()).await.ok()?;
        let bound = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Bound"))
            .count();
        (bound >= 2).then_some(())
    })
    .await;
    restart_daemons(&["kube-apiserver", "etcd"]);
    eventually(
        Duration::from_secs(60),
        "the API server answering",
        || async { s.claims.list(&Default::default()).await.ok() },
    )
    .await;

    let mut pvs = Vec::new();
    for name in &names {
        pvs.push(s.bound_pv(name).await);
    }
    let volumes = gluster_volumes().await;
    let bricks = brick_dirs().await;
    let mut gids = std::collections::HashSet::new();
    for (claim, pv) in claims.iter().zip(&pvs) {
        let suffix = uid_suffix(claim);
        assert_eq!(pv.name_any(), format!("pvc-{}", claim.uid().unwrap()));
        assert_eq!(glusterfs_path(pv), format!("vol_{suffix}"));
        assert_eq!(volumes.iter().filter(|v| v.ends_with(&suffix)).count(), 1);
        assert_eq!(bricks.iter().filter(|b| b.ends_with(&suffix)).count(), 1);
        let gid = annotations(pv)["pv.beta.kubernetes.io/gid"].clone();
        assert!(gids.insert(gid.clone()), "GID {gid} twice");
    }
    for name in &names {
        s.delete_claim(name).await;
    }
    for pv in &pvs {
        s.wait_pv_gone(&pv.name_any()).await;
    }
}

/// A node's link on the environment's bridge (its veth), put back up when dropped.
struct Link(String);

impl Link {
    fn down(node_index: usize) -> Self {
        let link = Link(format!("gpveth{node_index}"));
        link.set("down");
        link
    }

    fn set(&self, state: &str) {
        let ok = std::process::Command::new("ip")
            .args(["link", "set", &self.0, state])
            .status()
            .unwrap();
        assert!(ok.success(), "ip link set {} {state}", self.0);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.set("up");
    }
}

/// Whether the PV got a `VolumeFailedDelete` event.
async fn delete_failed(s: &Space, pv: &str) -> bool {
    !notes(s, "VolumeFailedDelete", |r| r.name.as_deref() == Some(pv))
        .await
        .is_empty()
}

/// Fault: a node's link goes down during a provision and during a delete. Its glusterd peers
/// still count it connected, so gluster's cluster-wide commands wait out their timeout: the
/// claim fails cleanly (an event) and the delete is retried, until the link is back; then the
/// claim binds, the delete finishes, and no volume or brick directory of either is left.
#[tokio::test]
async fn a_node_cut_off_during_provision_and_delete() {
    let s = Scenario::new("linkdown").await;
    let three = s
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    let two = s
        .class(json!({"volumetype": "replicate:2"}), "Delete")
        .await;
    let before = s.claim("before", &three, "1Gi", "ReadWriteOnce").await;
    let before_pv = s.bound_pv("before").await;

    let link = Link::down(2);
    let during = s.claim("during", &two, "1Gi", "ReadWriteOnce").await;
    s.delete_claim("before").await;
    let outage = Duration::from_secs(400);
    eventually(outage, "the provision failing or binding", || async {
        let bound = s.claims.get("during").await.unwrap().status?.phase? == "Bound";
        (bound || !failed_events(&s, &during).await.is_empty()).then_some(())
    })
    .await;
    eventually(outage, "the delete failing", || async {
        delete_failed(&s, &before_pv.name_any()).await.then_some(())
    })
    .await;
    assert!(
        s.pvs
            .get_opt(&before_pv.name_any())
            .await
            .unwrap()
            .is_some()
    );
    drop(link);

    let wait = Duration::from_secs(600);
    let during_pv = eventually(wait, "claim during Bound", || async {
        let c = s.claims.get("during").await.unwrap();
        (c.status?.phase? == "Bound").then_some(c.spec?.volume_name?)
    })
    .await;
    eventually(wait, "PV of claim before deleted", || async {
        s.pvs
            .get_opt(&before_pv.name_any())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let suffix = uid_suffix(&before);
    assert!(!gluster_volumes().await.iter().any(|v| v.ends_with(&suffix)));
    assert!(!brick_dirs().await.iter().any(|d| d.ends_with(&suffix)));
    s.delete_claim("during").await;
    s.wait_pv_gone(&during_pv).await;
    let suffix = uid_suffix(&during);
    assert!(!brick_dirs().await.iter().any(|d| d.ends_with(&suffix)));
}

/// A node cut off from the others on gluster's ports (glusterd's and the bricks'), its SSH still
/// answering, as when the storage network fails and the SSH one does not. Its glusterd starts
/// again behind the cut, so every connection to its peers is a new one, refused. Mended when
/// dropped.
struct StorageCut {
    node: GlusterNode,
    peers: Vec<String>,
}

impl StorageCut {
    fn new(index: usize) -> Self {
        let peers = nodes()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, n)| n.storage_address.to_string())
            .collect();
        let cut = StorageCut {
            node: GlusterNode::new(&nodes()[index].name),
            peers,
        };
        cut.rules("-A");
        cut.node.signal("glusterd", "-KILL");
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            cut.node.pids("glusterd").is_empty()
        });
        assert!(gone, "glusterd of {} still running", cut.node.name);
        cut.node.start_glusterd();
        cut
    }

    fn rules(&self, op: &str) {
        for peer in &self.peers {
            for (chain, side) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                let status = std::process::Command::new("nsenter")
                    .args(["-t", &self.node.holder(), "-n", "iptables", op, chain, side])
                    .args([peer, "-p", "tcp", "-m", "multiport"])
                    .args(["--dports", "24007:24008,49152:60999"])
                    .args(["-j", "REJECT", "--reject-with", "tcp-reset"])
                    .status()
                    .unwrap();
                assert!(
                    status.success(),
                    "iptables {op} {chain} on {}",
                    self.node.name
                );
            }
        }
    }
}

impl Drop for StorageCut {
    fn drop(&mut self) {
        self.rules("-D");
    }
}

/// `glusterfs-provisioner topology`: (success, the table).
async fn topology_report() -> (bool, String) {
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"))
        .args(["topology", "--topology"])
        .arg(env().state_dir.join("topology.json"))
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    (check.status.success(), report)
}

/// The peers `node`'s glusterd knows; `None` when it does not answer.
async fn peers_seen_by(node: &Node) -> Option<Vec<Peer>> {
    let args = ["peer", "status", "--xml"].map(String::from);
    let out = crate::support::ssh()
        .run_ok(&node.ssh_address, "gluster", &args)
        .await
        .ok()?;
    parse_peer_status(&out).ok()
}

/// Whether every node's glusterd sees each of its peers connected.
pub(crate) async fn pool_whole() -> bool {
    for node in nodes() {
        let Some(peers) = peers_seen_by(node).await else {
            return false;
        };
        if peers.len() + 1 != nodes().len() || !peers.iter().all(|p| p.is_connected()) {
            return false;
        }
    }
    true
}

/// Fault: one node cut off on the storage network, reachable over SSH. It reports every peer
/// disconnected; judged by majority, only it is left out (before, its view took every node
/// out of placement and every claim failed). A `replicate:2` claim binds on the other two, and
/// `topology` says the node is cut off.
#[tokio::test]
async fn a_node_cut_off_from_the_pool_takes_only_itself_out() {
    let s = Scenario::new("storagecut").await;
    let two = s
        .class(json!({"volumetype": "replicate:2"}), "Delete")
        .await;
    let (index, victim) = lone_zone_node();
    let cut = StorageCut::new(index);
    let first = nodes().iter().find(|n| n.name != victim.name).unwrap();
    eventually(
        BIND_WAIT,
        "the others seeing the node disconnected",
        || async {
            let peers = peers_seen_by(first).await?;
            let lost = peers
                .iter()
                .any(|p| p.hostname == victim.storage_address.to_string() && !p.is_connected());
            lost.then_some(())
        },
    )
    .await;

    s.claim("data", &two, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("data").await;
    assert!(!brick_nodes(&pv).contains(&victim.name), "{pv:?}");
    let (ok, report) = topology_report().await;
    assert!(!ok, "a node cut off is a problem: {report}");
    let row = |name: &str| {
        let found = report
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name));
        found.unwrap().to_string()
    };
    assert!(
        row(&victim.name).contains("cut off from the pool"),
        "{report}"
    );
    // The others stay up, with what the cut-off node says of them.
    assert!(row(&first.name).contains("up, but"), "{report}");

    drop(cut);
    eventually(BIND_WAIT, "the pool whole again", || async {
        pool_whole().await.then_some(())
    })
    .await;
    s.delete_claim("data").await;
    s.wait_pv_gone(&pv.name_any()).await;
}
