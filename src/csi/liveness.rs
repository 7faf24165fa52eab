//! Telling a live FUSE mount from a dead or hung one, and what a live one holds: one `statvfs`
//! at a time per mount, as a hung client holds it forever.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

/// A mount's usage, in the units CSI reports, and the bricks its client cannot reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub bytes_total: i64,
    pub bytes_available: i64,
    pub bytes_used: i64,
    pub inodes_total: i64,
    pub inodes_available: i64,
    pub inodes_used: i64,
    /// `host:/path` of each brick the GlusterFS client is not connected to: the volume is
    /// served by its other copies, and will need healing.
    pub unreachable: Vec<String>,
}

impl From<&libc::statvfs> for Usage {
    fn from(s: &libc::statvfs) -> Self {
        let block = s.f_frsize as i64;
        Usage {
            bytes_total: s.f_blocks as i64 * block,
            bytes_available: s.f_bavail as i64 * block,
            bytes_used: (s.f_blocks - s.f_bfree) as i64 * block,
            inodes_total: s.f_files as i64,
            inodes_available: s.f_favail as i64,
            inodes_used: (s.f_files - s.f_ffree) as i64,
            unreachable: Vec::new(),
        }
    }
}

/// The bricks the GlusterFS client of the mount at `root` is not connected to, as the client
/// itself says in its `.meta` tree (answered inside the client, no network); none when there
/// is no such tree (another file system).
pub fn unreachable_bricks(root: &Path) -> Vec<String> {
    let Ok(graph) = std::fs::read_dir(root.join(".meta/graphs/active")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = graph
        .flatten()
        .filter_map(|translator| {
            let dir = translator.path();
            let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            if read("type").trim() != "protocol/client" {
                return None;
            }
            let connected = read("private")
                .lines()
                .any(|l| l.split_whitespace().collect::<String>() == "connected=1");
            let brick = || {
                let host = read("options/remote-host");
                format!(
                    "{}:{}",
                    host.trim(),
                    read("options/remote-subvolume").trim()
                )
            };
            (!connected).then(brick)
        })
        .collect();
    out.sort();
    out
}

/// What a mount point answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Alive(Usage),
    /// An error at once: its FUSE client is gone ("Transport endpoint is not connected",
    /// "Software caused connection abort") or the path is.
    Dead(String),
    /// No answer yet from the look that has been running this long. A live client holds its
    /// answer until gluster's `network.ping-timeout` (42 s) gives up on a brick that went down.
    Unknown(Duration),
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Alive(u) if u.unreachable.is_empty() => write!(f, "mounted"),
            Health::Alive(u) => write!(
                f,
                "mounted, but its GlusterFS client cannot reach {}: the other copies serve the \
                 volume, and it will need healing",
                u.unreachable.join(", ")
            ),
            Health::Dead(why) => write!(f, "the GlusterFS client of this mount is gone: {why}"),
            Health::Unknown(waited) => write!(
                f,
                "no answer yet: a check of this mount has been running for {} s \
                 (a GlusterFS client waits out network.ping-timeout for a brick that went down)",
                waited.as_secs()
            ),
        }
    }
}

/// A look's answer: the usage, or why there is none.
type Answer = Result<Usage, String>;
/// How a mount is looked at; only tests pass another than [`statvfs_probe`].
type Probe = Arc<dyn Fn(PathBuf) -> BoxFuture<'static, Answer> + Send + Sync>;

/// `statvfs` on a blocking thread: on a hung FUSE client it never returns.
fn statvfs_probe(path: PathBuf) -> BoxFuture<'static, Answer> {
    Box::pin(async move {
        let shown = path.display().to_string();
        let call = tokio::task::spawn_blocking(move || {
            let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
            let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: `c` is a valid C string and `out` a writable statvfs.
            match unsafe { libc::statvfs(c.as_ptr(), &mut out) } {
                0 => Ok(Usage {
                    unreachable: unreachable_bricks(&path),
                    ..Usage::from(&out)
                }),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        match call.await {
            Ok(Ok(usage)) => Ok(usage),
            Ok(Err(e)) => Err(format!("{shown}: {e}")),
            Err(e) => Err(format!("{shown}: {e}")),
        }
    })
}

/// A look that has not answered yet.
struct InFlight {
    id: u64,
    started: Instant,
    answer: watch::Receiver<Option<Answer>>,
}

/// Looks at mounts, at most one look per path at a time: the `statvfs` of a hung FUSE client
/// holds a blocking thread forever, and one per call would use up tokio's blocking pool (after
/// which every mount looks dead). Later callers wait for the look already running.
pub struct Checks {
    /// Longest a caller waits for an answer before it hears [`Health::Unknown`].
    timeout: Duration,
    /// How long a mount may go without an answer before it counts as hung (replaceable).
    hung: Duration,
    probe: Probe,
    in_flight: Arc<Mutex<HashMap<PathBuf, InFlight>>>,
    next_id: AtomicU64,
}

impl Checks {
    pub fn new(timeout: Duration, hung: Duration) -> Self {
        Self::with_probe(timeout, hung, Arc::new(statvfs_probe))
    }

    fn with_probe(timeout: Duration, hung: Duration, probe: Probe) -> Self {
        Checks {
            timeout,
            hung,
            probe,
            in_flight: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn hung(&self) -> Duration {
        self.hung
    }

    /// What the mount at `path` answers within the timeout.
    pub async fn health(&self, path: &Path) -> Health {
        let (started, mut answer) = self.look(path);
        match tokio::time::timeout(self.timeout, answer.wait_for(Option::is_some)).await {
            Ok(Ok(answer)) => match answer.clone().expect("waited for an answer") {
                Ok(usage) => Health::Alive(usage),
                Err(why) => Health::Dead(why),
            },
            // Err from wait_for: the look's task was dropped unanswered (the runtime stops).
            Ok(Err(_)) | Err(_) => Health::Unknown(started.elapsed()),
        }
    }

    /// The look running at `path`, started if there is none.
    fn look(&self, path: &Path) -> (Instant, watch::Receiver<Option<Answer>>) {
        let mut in_flight = self.in_flight.lock().expect("not poisoned");
        if let Some(look) = in_flight.get(path) {
            return (look.started, look.answer.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (tell, answer) = watch::channel(None);
        let look = InFlight {
            id,
            started,
            answer: answer.clone(),
        };
        in_flight.insert(path.to_path_buf(), look);
        let probe = (self.probe)(path.to_path_buf());
        let (table, path) = (self.in_flight.clone(), path.to_path_buf());
        tokio::spawn(async move {
            let got = probe.await;
            let mut in_flight = table.lock().expect("not poisoned");
            // After `forget`, the path may have a newer look of its own.
            if in_flight.get(&path).is_some_and(|l| l.id == id) {
                in_flight.remove(&path);
            }
            drop(in_flight);
            tell.send_replace(Some(got));
        });
        (started, answer)
    }

    /// Whether a mount that answered `health` may be replaced: its client is gone, or has
    /// gone without an answer for longer than a live client waits for a brick.
    pub fn replaceable(&self, health: &Health) -> bool {
        match health {
            Health::Alive(_) => false,
            Health::Dead(_) => true,
            Health::Unknown(waited) => *waited >= self.hung,
        }
    }

    /// Drops the look running at `path` (its mount was unmounted): the next mount there gets a
    /// look of its own instead of the old one's "no answer".
    pub fn forget(&self, path: &Path) {
        self.in_flight.lock().expect("not poisoned").remove(path);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_path_is_reported_dead_not_hung() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let checks = Checks::new(Duration::from_secs(5), Duration::from_secs(45));
        match checks.health(&gone).await {
            Health::Dead(why) => assert!(why.contains("No such file"), "{why}"),
            other => panic!("a missing path is dead, not {other:?}"),
        }
        assert!(matches!(checks.health(dir.path()).await, Health::Alive(_)));
    }

    #[test]
    fn bricks_the_client_is_not_connected_to_are_read_from_its_meta_tree() {
        let root = tempfile::tempdir().unwrap();
        let graph = root.path().join(".meta/graphs/active");
        let client = |name: &str, host: &str, connected: u8| {
            let dir = graph.join(name);
            std::fs::create_dir_all(dir.join("options")).unwrap();
            std::fs::write(dir.join("type"), "protocol/client\n").unwrap();
            let private =
                format!("[xlator.protocol.client.{name}.priv]\nconnected = {connected}\n");
            std::fs::write(dir.join("private"), private).unwrap();
            std::fs::write(dir.join("options/remote-host"), format!("{host}\n")).unwrap();
            std::fs::write(dir.join("options/remote-subvolume"), "/srv/b/v/brick\n").unwrap();
        };
        assert!(
            unreachable_bricks(root.path()).is_empty(),
            "no tree, nothing to say"
        );
        client("v-client-0", "10.0.0.1", 1);
        client("v-client-1", "10.0.0.2", 0);
        client("v-client-2", "10.0.0.3", 0);
        std::fs::create_dir_all(graph.join("v-replicate-0")).unwrap();
        std::fs::write(graph.join("v-replicate-0/type"), "cluster/replicate\n").unwrap();
        assert_eq!(
            unreachable_bricks(root.path()),
            ["10.0.0.2:/srv/b/v/brick", "10.0.0.3:/srv/b/v/brick"]
        );
    }

    pub const USAGE: Usage = Usage {
        bytes_total: 100,
        bytes_available: 60,
        bytes_used: 40,
        inodes_total: 10,
        inodes_available: 7,
        inodes_used: 3,
        unreachable: Vec::new(),
    };

    /// Checks (timeout 10 s, hung after 45 s) whose looks hang, as on a hung FUSE client,
    /// until the returned sender gives them an answer; the counter counts the looks started.
    pub fn hanging_checks() -> (Checks, Arc<AtomicU64>, watch::Sender<Option<Answer>>) {
        let calls = Arc::new(AtomicU64::new(0));
        let (client, answer) = watch::channel(None);
        let counted = calls.clone();
        let probe: Probe = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut answer = answer.clone();
            Box::pin(async move {
                let got = answer.wait_for(Option::is_some).await.expect("client kept");
                got.clone().expect("an answer")
            })
        });
        let checks = Checks::with_probe(Duration::from_secs(10), Duration::from_secs(45), probe);
        (checks, calls, client)
    }

    fn waited(health: &Health) -> u64 {
        match health {
            Health::Unknown(waited) => waited.as_secs(),
            other => panic!("expected no answer, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn looks_at_a_hung_mount_share_one_probe_and_answer_unknown() {
        let (checks, calls, client) = hanging_checks();
        let path = Path::new("/mnt/hung");
        let all = futures::future::join_all((0..8).map(|_| checks.health(path))).await;
        assert!(all.iter().all(|h| waited(h) == 10), "{all:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A later caller waits on the same look, which has now run for 20 s.
        assert_eq!(waited(&checks.health(path).await), 20);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Once it answers, the callers hear it, and the next look is a new one.
        client.send_replace(Some(Ok(USAGE)));
        assert_eq!(checks.health(path).await, Health::Alive(USAGE));
        while checks.in_flight.lock().unwrap().contains_key(path) {
            tokio::task::yield_now().await;
        }
        assert_eq!(checks.health(path).await, Health::Alive(USAGE));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mount_without_an_answer_is_replaceable_only_once_hung() {
        let (checks, calls, _client) = hanging_checks();
        let path = Path::new("/mnt/slow");
        for want in [10, 20, 30, 40] {
            let health = checks.health(path).await;
            assert_eq!(waited(&health), want);
            assert!(!checks.replaceable(&health), "replaceable after {want} s");
        }
        let health = checks.health(path).await;
        assert_eq!(waited(&health), 50);
        assert!(checks.replaceable(&health));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(checks.replaceable(&Health::Dead("gone".into())));
        assert!(!checks.replaceable(&Health::Alive(USAGE)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_look_leaves_the_path_to_a_new_one() {
        let (checks, calls, _client) = hanging_checks();
        let path = Path::new("/mnt/replaced");
        assert_eq!(waited(&checks.health(path).await), 10);
        checks.forget(path);
        assert_eq!(waited(&checks.health(path).await), 10);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
