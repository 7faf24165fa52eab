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

/// What a provisioner with its HTTP server on `port` serves at `/metrics`.
#[allow(dead_code)] // not the benchmark's
pub async fn metrics(port: u16) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// A provisioner process under the restricted identity of `manifests/rbac.yaml`, serving its
/// own provisioner name so tests running side by side never see each other's claims.
pub struct Provisioner {
    pub name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Provisioner {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, &[]).await
    }

    pub async fn start_with(name: &str, env_vars: &[(&str, &str)]) -> Self {
        Self::start_at(name, env_vars, "127.0.0.1:0").await
    }

    /// With its HTTP server (metrics, probes) on `http_address`, quick retries and a short
    /// lease, as tests want.
    pub async fn start_at(name: &str, env_vars: &[(&str, &str)], http_address: &str) -> Self {
        let quick = [
            ("RETRY_MIN_SECONDS", "1"),
            ("RETRY_MAX_SECONDS", "8"),
            // Lease updates took up to a second on CI's loaded API server: a 4 s lease renewed
            // 2 s before its end was lost under copies and bursts, and its process stopped.
            ("LEASE_DURATION_SECONDS", "6"),
            ("LEASE_RENEW_BEFORE_SECONDS", "3"),
        ];
        let vars: Vec<_> = quick.iter().chain(env_vars).copied().collect();
        Self::spawn(
            name,
            &vars,
            http_address,
            "info,glusterfs_provisioner=debug",
        )
    }

    /// Only what a deployment would set: its identity, topology, name, own lease and log
    /// filter; settings beyond those come from `env_vars` (the flags' variables).
    pub fn spawn(name: &str, env_vars: &[(&str, &str)], http_address: &str, log: &str) -> Self {
        let env = env();
        let logs = env.state_dir.join("logs");
        let log_file = logs.join(format!("provisioner-{}.log", name.replace('/', "_")));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .unwrap();
        let control = env.state_dir.join("test-ssh").join(unique("prov"));
        // Another identity than the deployment's, for the tests of narrower RBAC.
        let kubeconfig = env_vars
            .iter()
            .find(|(k, _)| *k == "KUBECONFIG")
            .map_or(env.state_dir.join("provisioner.kubeconfig"), |(_, v)| {
                v.into()
            });
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--topology")
            .arg(env.state_dir.join("topology.json"))
            .arg("--ssh-control-dir")
            .arg(control)
            .args(["--provisioner-name", name])
            // Each provisioner leads on its own lease.
            .args(["--lease-name", &name.replace(['/', '.'], "-")])
            .args(["--http-address", http_address])
            .env(
                "RUST_LOG",
                std::env::var("GP_PROVISIONER_LOG").unwrap_or(log.into()),
            )
            .envs(env_vars.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("starting the provisioner");
        Provisioner {
            name: name.into(),
            child,
            log: log_file,
        }
    }

    /// For the benchmark's memory and CPU readings.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the process is stopped (SIGSTOP, state `T`), as a pause point leaves it.
    pub async fn wait_stopped(&self, timeout: Duration) {
        let pid = self.pid().expect("a running provisioner");
        eventually(timeout, "the provisioner stopped", || async {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            (state == "T").then_some(())
        })
        .await;
    }

    /// The identity it leads with (its default instance name).
    pub fn identity(&self) -> String {
        format!(
            "glusterfs-provisioner-{}",
            self.child.id().unwrap_or_default()
        )
    }

    /// Stops the process as Kubernetes stops a pod (SIGTERM), so it hands its lease back.
    #[allow(dead_code)] // the benchmark's
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            local("kill", &["-TERM", &pid.to_string()]).await;
        }
        self.wait_exit(Duration::from_secs(30)).await;
    }

    /// Kills the process as `kill -9` would.
    pub async fn kill(&mut self) {
        self.child.kill().await.ok();
    }

    /// Waits for the process to exit by itself (a crash point).
    pub async fn wait_exit(&mut self, timeout: Duration) {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("provisioner did not stop; log: {}", self.log.display()))
            .unwrap();
    }
}

/// A real Prometheus on `127.0.0.1:port` with the alert rules of `grafana/alerts.yaml`,
/// scraping every second with the given `scrape_configs` (YAML list items).
pub struct Prometheus {
    port: u16,
    _child: tokio::process::Child,
}

impl Prometheus {
    /// Returns once it answers on `/-/ready`.
    pub async fn start(port: u16, scrape_configs: &str) -> Self {
        Self::launch(port, scrape_configs, None).await
    }

    /// The same, with every alert's `for` shortened to `pending`: a test sees an alert fire
    /// and resolve without waiting the minutes a real pool waits.
    pub async fn with_alerts_pending(port: u16, scrape_configs: &str, pending: &str) -> Self {
        Self::launch(port, scrape_configs, Some(pending)).await
    }

    async fn launch(port: u16, scrape_configs: &str, pending: Option<&str>) -> Self {
        let dir = env().state_dir.join(unique("prometheus"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rules = format!("{}/grafana/alerts.yaml", env!("CARGO_MANIFEST_DIR"));
        if let Some(pending) = pending {
            let original = std::fs::read_to_string(&rules).unwrap();
            let shortened: Vec<String> = original
                .lines()
                .map(|line| match line.trim_start().strip_prefix("for:") {
                    Some(_) => format!(
                        "{}for: {pending}",
                        &line[..line.len() - line.trim_start().len()]
                    ),
                    None => line.to_string(),
                })
                .collect();
            let copy = dir.join("alerts.yaml");
            std::fs::write(&copy, shortened.join("\n")).unwrap();
            rules = copy.display().to_string();
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{rules}]\n\
                 scrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("starting prometheus");
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        eventually(Duration::from_secs(60), "Prometheus ready", || async {
            let out = tokio::process::Command::new("curl")
                .args(["-fsS", &ready])
                .output()
                .await
                .unwrap();
            out.status.success().then_some(())
        })
        .await;
        Prometheus {
            port,
            _child: child,
        }
    }

    /// The answer of `/api/v1/{path}` with `query` as its `query` parameter (none if empty).
    pub async fn api(&self, path: &str, query: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/api/v1/{path}", self.port);
        let mut args = vec!["-sS", "-G", &url];
        let param = format!("query={query}");
        if !query.is_empty() {
            args.extend(["--data-urlencode", &param]);
        }
        let out = local("curl", &args).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path} {query}: {e}: {out}"))
    }

    pub async fn query(&self, expr: &str) -> serde_json::Value {
        self.api("query", expr).await
    }

    /// The claims (`persistentvolumeclaim` label) of namespace `ns` for which `alert` fires.
    pub async fn firing(&self, alert: &str, ns: &str) -> Vec<String> {
        let expr =
            format!("ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",namespace=\"{ns}\"}}");
        let r = self.query(&expr).await;
        let mut claims: Vec<String> = r["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                s["metric"]["persistentvolumeclaim"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        claims.sort();
        claims
    }
}
