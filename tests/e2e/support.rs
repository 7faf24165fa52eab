//! Access to the environment `e2e/env up` started: its kubeconfigs, topology and SSH key.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use glusterfs_provisioner::config::Topology;
use glusterfs_provisioner::gluster::SshExecutor;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct Env {
    pub state_dir: PathBuf,
    pub topology: Topology,
}

/// The running environment; a test without one fails and says how to start it.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let state_dir = PathBuf::from(
            std::env::var("GP_STATE_DIR").unwrap_or("/tmp/glusterfs-provisioner-env".into()),
        );
        let topology_path = state_dir.join("topology.json");
        let topology = Topology::load(&topology_path).unwrap_or_else(|e| {
            panic!("no test environment ({e}); run the tests with e2e/test, or start one with e2e/env up")
        });
        Env { state_dir, topology }
    })
}

pub async fn client_for(kubeconfig: &str) -> kube::Client {
    let path = env().state_dir.join(kubeconfig);
    let kc = Kubeconfig::read_from(&path).expect("reading kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

/// A client with cluster-admin rights, for arranging and inspecting test objects.
pub async fn admin_client() -> kube::Client {
    client_for("admin.kubeconfig").await
}

/// An SSH executor with its own multiplexing sockets, as the provisioner would have.
pub fn ssh() -> SshExecutor {
    let dir = env().state_dir.join("test-ssh").join(unique("ctl"));
    std::fs::create_dir_all(&dir).unwrap();
    SshExecutor::new(env().topology.ssh.clone(), dir)
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Polls `check` until it yields a value; fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs a local program (mount, umount, ...) and returns its stdout; fails the test on error.
pub async fn local(program: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
