//! Runs programs on gluster nodes over SSH: multiplexed connections per node, opened as
//! concurrent commands need them, shared by them, reopened when they break.

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

/// A host's connections, opened as commands need them: sshd's `MaxSessions` bounds the
/// commands over one connection, so a burst opens more connections instead of queueing here
/// while glusterd is slow to answer.
struct Host {
    /// Free sessions over all the connections the host may have.
    sessions: Semaphore,
    connections: Vec<Connection>,
    per_connection: usize,
    /// Commands running over each connection.
    busy: std::sync::Mutex<Vec<usize>>,
}

/// Empty until first use or after it broke.
#[derive(Default)]
struct Connection(Mutex<Option<Arc<Session>>>);

/// A command's session on one connection of a host, given back on drop.
struct Seat<'h> {
    host: &'h Host,
    connection: usize,
    _permit: tokio::sync::SemaphorePermit<'h>,
}

impl Host {
    fn new(per_connection: usize, connections: usize) -> Self {
        Self {
            sessions: Semaphore::new(per_connection * connections),
            connections: (0..connections).map(|_| Connection::default()).collect(),
            per_connection,
            busy: std::sync::Mutex::new(vec![0; connections]),
        }
    }

    /// Waits for a free session, on the first connection with room: a second connection is
    /// opened only while the first is full.
    async fn seat(&self) -> Seat<'_> {
        let permit = self.sessions.acquire().await.expect("never closed");
        let mut busy = self.busy.lock().expect("ssh busy lock");
        // The permits never exceed the room of all connections, so one has room.
        let connection = busy
            .iter()
            .position(|n| *n < self.per_connection)
            .expect("a connection with room");
        busy[connection] += 1;
        Seat {
            host: self,
            connection,
            _permit: permit,
        }
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.host.busy.lock().expect("ssh busy lock")[self.connection] -= 1;
    }
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
        self.run_within(host, program, args, self.settings.command_timeout())
            .await
    }

    /// Like [`run`](Self::run), for a command that may take longer than the topology's
    /// command timeout (a copy of a volume's files): at most `limit`.
    pub async fn run_within(
        &self,
        host: &str,
        program: &str,
        args: &[String],
        limit: std::time::Duration,
    ) -> Result<RemoteOutput> {
        let slot = self.host(host).await;
        let seat = slot.seat().await;
        let connection = &slot.connections[seat.connection];
        let attempt = || async {
            let session = self.session(host, connection).await?;
            match exec(&session, program, args, limit).await {
                Ok(out) => Ok(out),
                Err(source) if session.check().await.is_err() => {
                    tracing::warn!(host, error = %source, "SSH connection broken, reconnecting");
                    self.report(host, false);
                    self.forget(connection, &session).await;
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
        let limit = self.settings.command_timeout();
        self.run_ok_within(host, program, args, limit).await
    }

    /// [`run_ok`](Self::run_ok) within `limit`, as [`run_within`](Self::run_within).
    pub async fn run_ok_within(
        &self,
        host: &str,
        program: &str,
        args: &[String],
        limit: std::time::Duration,
    ) -> Result<String> {
        let out = self.run_within(host, program, args, limit).await?;
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
        let per_connection = self.settings.sessions_per_connection.max(1);
        let connections = self.settings.connections_per_node.max(1);
        self.hosts
            .lock()
            .await
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Host::new(per_connection, connections)))
            .clone()
    }

    async fn session(&self, host: &str, connection: &Connection) -> Result<Arc<Session>> {
        let mut slot = connection.0.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(session.clone());
        }
        let connected = self.connect(host).await;
        self.report(host, connected.is_ok());
        let session = Arc::new(connected?);
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn forget(&self, connection: &Connection, broken: &Arc<Session>) {
        let mut slot = connection.0.lock().await;
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
            // ssh says the same when it cannot read the file at all (a Secret's file in a pod
            // without the fsGroup that may read it): that is no changed key.
            if let Err(source) = std::fs::File::open(&s.known_hosts) {
                return Err(Error::SshFileUnreadable {
                    path: s.known_hosts.clone(),
                    source,
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_fills_before_the_next_is_used() {
        let host = Host::new(2, 3);
        let mut seats = Vec::new();
        for _ in 0..5 {
            seats.push(host.seat().await);
        }
        let on: Vec<usize> = seats.iter().map(|s| s.connection).collect();
        assert_eq!(on, [0, 0, 1, 1, 2]);
        // A seat given back on the first connection is the next one taken.
        seats.remove(1);
        seats.push(host.seat().await);
        assert_eq!(seats.last().unwrap().connection, 0);
        seats.push(host.seat().await);
        assert_eq!(seats.last().unwrap().connection, 2);
        // Every session of every connection is out: the next caller waits.
        let full = tokio::time::timeout(std::time::Duration::from_millis(20), host.seat());
        assert!(full.await.is_err());
        drop(seats);
        assert_eq!(*host.busy.lock().unwrap(), [0, 0, 0]);
    }
}
