//! Runs programs on gluster nodes over SSH: one multiplexed connection per node, opened on
//! first use, shared by concurrent commands, reopened when it breaks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use backon::{ExponentialBuilder, Retryable};
use openssh::{KnownHosts, Session, SessionBuilder};
use tokio::sync::{Mutex, Semaphore};

use crate::config::SshSettings;
use crate::error::with_causes;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// What a remote program printed and how it exited.
#[derive(Debug)]
pub struct RemoteOutput {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// A host's connection, empty until first use or after it broke, and the sessions it may run.
struct Host {
    connection: Mutex<Option<Arc<Session>>>,
    sessions: Semaphore,
}

pub struct SshExecutor {
    settings: SshSettings,
    control_dir: PathBuf,
    /// Its connection lock is held only while connecting, not while commands run.
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    metrics: Option<Arc<Metrics>>,
}

impl SshExecutor {
    /// `control_dir` holds the multiplexing sockets; it must be writable.
    pub fn new(settings: SshSettings, control_dir: PathBuf) -> Self {
        Self {
            settings,
            control_dir,
            hosts: Mutex::default(),
            metrics: None,
        }
    }

    /// Reports connection state per node in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn report(&self, host: &str, up: bool) {
        if let Some(m) = &self.metrics {
            m.ssh_up.with_label_values(&[host]).set(up.into());
        }
    }

    /// Runs `program` with `args` on `host`. Every argument is shell-quoted by `openssh`, so
    /// no argument can change the shell command line the remote side runs. A connection that
    /// is refused or breaks (sshd restarting) is reopened and the command run again, with
    /// backoff: every remote step is idempotent. A connection attempt that times out is not
    /// repeated here; the caller's own retries come back to an unreachable node later.
    pub async fn run(&self, host: &str, program: &str, args: &[String]) -> Result<RemoteOutput> {
        let slot = self.host(host).await;
        let _session_permit = slot.sessions.acquire().await.expect("never closed");
        let limit = self.settings.command_timeout();
        let attempt = || async {
            let session = self.session(host, &slot).await?;
            match exec(&session, program, args, limit).await {
                Ok(out) => Ok(out),
                Err(source) if session.check().await.is_err() => {
                    tracing::warn!(host, error = %source, "SSH connection broken, reconnecting");
                    self.report(host, false);
                    self.forget(&slot, &session).await;
                    Err(Error::SshConnect {
                        host: host.into(),
                        source,
                    })
                }
                Err(source) => Err(Error::SshCommand {
                    host: host.into(),
                    source,
                }),
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(std::time::Duration::from_millis(500))
                    .with_max_delay(std::time::Duration::from_secs(4))
                    .with_max_times(5)
                    .with_jitter(),
            )
            .when(
                |e| matches!(e, Error::SshConnect { source, .. } if !timed_out_connecting(source)),
            )
            .notify(|e, after| tracing::info!(host, error = %e, ?after, "SSH retry"))
            .await
    }

    /// Like [`run`](Self::run), but a non-zero exit is an error carrying stderr.
    pub async fn run_ok(&self, host: &str, program: &str, args: &[String]) -> Result<String> {
        let out = self.run(host, program, args).await?;
        if out.success {
            return Ok(out.stdout);
        }
        Err(Error::RemoteCommand {
            host: host.into(),
            command: program.into(),
            status: out.status,
            stderr: out.stderr.trim().to_string(),
        })
    }

    async fn host(&self, host: &str) -> Arc<Host> {
        let permits = self.settings.sessions_per_node.max(1);
        self.hosts
            .lock()
            .await
            .entry(host.to_string())
            .or_insert_with(|| {
                Arc::new(Host {
                    connection: Mutex::default(),
                    sessions: Semaphore::new(permits),
                })
            })
            .clone()
    }

    async fn session(&self, host: &str, slot: &Host) -> Result<Arc<Session>> {
        let mut slot = slot.connection.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(session.clone());
        }
        let connected = self.connect(host).await;
        self.report(host, connected.is_ok());
        let session = Arc::new(connected?);
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn forget(&self, slot: &Host, broken: &Arc<Session>) {
        let mut slot = slot.connection.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, broken)) {
            *slot = None;
        }
    }

    async fn connect(&self, host: &str) -> Result<Session> {
        let s = &self.settings;
        let mut builder = SessionBuilder::default();
        builder
            .user(s.user.clone())
            .port(s.port)
            .keyfile(&s.private_key)
            .user_known_hosts_file(&s.known_hosts)
            .known_hosts_check(if s.strict_host_key_checking {
                KnownHosts::Strict
            } else {
                KnownHosts::Add
            })
            .connect_timeout(s.connect_timeout())
            .server_alive_interval(std::time::Duration::from_secs(15))
            .control_directory(&self.control_dir);
        tracing::debug!(host, "opening SSH connection");
        // Authentication, not only the TCP connect, must finish in time.
        let limit = s.connect_timeout() * 2;
        let connected = tokio::time::timeout(limit, builder.connect_mux(host))
            .await
            .unwrap_or_else(|_| Err(timed_out("connecting", limit)));
        tracing::debug!(host, ok = connected.is_ok(), "SSH connection attempt done");
        let rejected =
            matches!(&connected, Err(e) if with_causes(e).contains("Host key verification failed"));
        if let Some(m) = &self.metrics {
            m.ssh_host_key_rejected
                .with_label_values(&[host])
                .set(rejected.into());
        }
        if rejected {
            // Never trusted silently: a changed key is a reinstalled node or an impostor.
            return Err(Error::SshHostKey {
                host: host.into(),
                known_hosts: s.known_hosts.display().to_string(),
            });
        }
        connected.map_err(|source| Error::SshConnect {
            host: host.into(),
            source,
        })
    }
}

fn timed_out_connecting(e: &openssh::Error) -> bool {
    matches!(e, openssh::Error::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

fn timed_out(what: &str, limit: std::time::Duration) -> openssh::Error {
    let e = std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out after {limit:?}"),
    );
    openssh::Error::Connect(e)
}

/// Runs the command, again when sshd refuses the session: it frees a session slot only once
/// the channel has closed on its side, which under a burst of gluster commands can take seconds.
async fn exec(
    session: &Session,
    program: &str,
    args: &[String],
    limit: std::time::Duration,
) -> std::result::Result<RemoteOutput, openssh::Error> {
    let refused = |e: &openssh::Error| e.to_string().contains("Session open refused");
    (|| exec_once(session, program, args, limit))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(50))
                .with_max_delay(std::time::Duration::from_secs(1))
                .with_max_times(60)
                .with_jitter(),
        )
        .when(refused)
        .await
}

async fn exec_once(
    session: &Session,
    program: &str,
    args: &[String],
    limit: std::time::Duration,
) -> std::result::Result<RemoteOutput, openssh::Error> {
    let mut command = session.command(program);
    command.args(args);
    let out = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| Err(timed_out(program, limit)))?;
    Ok(RemoteOutput {
        success: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
