//! The node's mounts: reading the mount table, FUSE mounts of gluster volumes that outlive the
//! plugin, bind mounts, unmounts, and telling a live FUSE mount from a dead one.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Error;

/// The cgroup FUSE clients are moved to, in each hierarchy, so that the container runtime's
/// "kill every process of the plugin's container" (what it does when a container without its own
/// PID namespace stops) spares them: the mounts of running pods outlive a plugin restart.
const FUSE_CGROUP: &str = "glusterfs-csi-fuse";

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Undoes the kernel's octal escapes (`\040` for a space) in mountinfo paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text: `id parent dev root mount-point options [optional...] - type source super`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?;
            let source = right.next()?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: fs_type.into(),
                source: unescape(source),
            })
        })
        .collect()
}

pub fn mount_table() -> Result<Vec<MountEntry>, Error> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Io {
        what: "reading /proc/self/mountinfo".into(),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn mounted_at(path: &Path) -> Result<Option<MountEntry>, Error> {
    Ok(mount_table()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path))
}

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

/// The cgroups FUSE clients are started in, made under `root` (the host's `/sys/fs/cgroup`,
/// mounted into the plugin's container): one per hierarchy for cgroup v1, one for v2.
pub fn fuse_cgroups(root: &Path) -> Result<Vec<CString>, Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    let mut hierarchies = Vec::new();
    if root.join("cgroup.procs").exists() {
        hierarchies.push(root.to_path_buf());
    } else {
        for entry in std::fs::read_dir(root).map_err(io(format!("reading {}", root.display())))? {
            let entry = entry.map_err(io(format!("reading {}", root.display())))?;
            let path = entry.path();
            // cgroup v1 links `cpu` and `cpuacct` to `cpu,cpuacct`: one directory each.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && path.join("cgroup.procs").exists() {
                hierarchies.push(path);
            }
        }
    }
    let mut procs = Vec::new();
    for hierarchy in hierarchies {
        let dir = hierarchy.join(FUSE_CGROUP);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        // A v1 cpuset cgroup takes no process before it has CPUs and memory nodes.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            if own.exists()
                && std::fs::read_to_string(&own)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
            {
                let parent = std::fs::read_to_string(hierarchy.join(file))
                    .map_err(io(format!("reading {}", hierarchy.join(file).display())))?;
                std::fs::write(&own, parent.trim())
                    .map_err(io(format!("writing {}", own.display())))?;
            }
        }
        let file = dir.join("cgroup.procs");
        procs.push(
            CString::new(file.as_os_str().as_bytes())
                .map_err(std::io::Error::other)
                .map_err(io(format!("{}", file.display())))?,
        );
    }
    Ok(procs)
}

/// Where FUSE clients go: the `cgroup.procs` files they join (see [`fuse_cgroups`]), and the
/// count of mounts whose client failed to join one, and so dies with the plugin's container.
pub struct FuseCgroups {
    pub procs: Vec<CString>,
    pub join_failures: IntCounter,
}

/// A `cgroup.procs` a process failed to join: its index in the list, and the errno.
#[derive(Debug, PartialEq, Eq)]
struct Missed {
    index: usize,
    errno: i32,
}

/// Spawns `cmd`, whose process first joins `cgroups` (writing "0" to cgroup.procs moves the
/// writer). It cannot log between fork and exec: it reports each failure on a pipe instead,
/// read once `spawn` returns, which is after the exec closed the child's end.
fn spawn_in(
    mut cmd: std::process::Command,
    cgroups: &[CString],
) -> std::io::Result<(tokio::process::Child, Vec<Missed>)> {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just opened both, and nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let report = write.as_raw_fd();
    let cgroups = cgroups.to_vec();
    // SAFETY: between fork and exec only open/write/close run: async-signal-safe calls on
    // strings and buffers prepared before the fork (errno is read, not allocated).
    unsafe {
        cmd.pre_exec(move || {
            for (index, procs) in cgroups.iter().enumerate() {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                let joined = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if fd >= 0 {
                    libc::close(fd);
                }
                if !joined {
                    let mut record = [0u8; 8];
                    record[..4].copy_from_slice(&(index as u32).to_ne_bytes());
                    record[4..].copy_from_slice(&errno.to_ne_bytes());
                    libc::write(report, record.as_ptr().cast(), record.len());
                }
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd).spawn();
    drop(write);
    let child = child?;
    let mut reported = Vec::new();
    std::fs::File::from(read).read_to_end(&mut reported)?;
    let missed = reported
        .chunks_exact(8)
        .map(|r| Missed {
            index: u32::from_ne_bytes(r[..4].try_into().expect("4 bytes")) as usize,
            errno: i32::from_ne_bytes(r[4..].try_into().expect("4 bytes")),
        })
        .collect();
    Ok((child, missed))
}

/// Runs `mount` with `args`. Its processes (and so the FUSE client `mount.glusterfs` starts)
/// first join the FUSE cgroups; a failure to is logged and counted, not fatal: the mount
/// works, it just dies with the plugin.
pub async fn run_mount(args: &[String], fuse: &FuseCgroups) -> Result<(), Error> {
    let mut cmd = std::process::Command::new("mount");
    // Its stderr says why a mount failed: it goes into the error the kubelet shows the user.
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let io = |source| Error::Io {
        what: "running mount".into(),
        source,
    };
    let (child, missed) = spawn_in(cmd, &fuse.procs).map_err(io)?;
    for m in &missed {
        tracing::warn!(
            cgroup = %fuse.procs[m.index].to_string_lossy(),
            error = %std::io::Error::from_raw_os_error(m.errno),
            mount = args.join(" "),
            "the FUSE client could not join its cgroup: it stays in the plugin's and dies with it"
        );
    }
    if !missed.is_empty() {
        fuse.join_failures.inc();
    }
    let out = child.wait_with_output().await.map_err(io)?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Mount(format!(
        "mount {}: {}",
        args.join(" "),
        tail(&out.stderr)
    )))
}

/// The most of a program's error output an error message carries (it ends up in a gRPC
/// status, a header, and in an event).
const MESSAGE_MAX: usize = 1024;

/// `stderr` trimmed, as one line, and at most [`MESSAGE_MAX`] bytes of its end (where a
/// program says what failed last).
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() <= MESSAGE_MAX {
        return text;
    }
    let mut start = text.len() - MESSAGE_MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {path:?}")))
}

/// `mount --bind source target`, read-only if asked.
pub fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<(), Error> {
    let (src, dst) = (c_path(source)?, c_path(target)?);
    let made = if read_only {
        bind_read_only(&src, &dst)
    } else {
        // SAFETY: valid C strings; a null fs type and data are allowed for bind mounts.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    made.map_err(|source_err| Error::Io {
        what: format!("bind mount of {} at {}", source.display(), target.display()),
        source: source_err,
    })
}

/// A bind mount made read-only before it is attached (Linux 5.12 mount API). A remount to
/// read-only would change this namespace's mount only: flags set by a remount do not reach
/// the copies mount propagation made, and the kubelet hands the pod its copy.
fn bind_read_only(src: &CString, dst: &CString) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let check = |rc: libc::c_long| {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // SAFETY: the syscalls get valid C strings, a live fd and a correctly sized mount_attr.
    unsafe {
        let fd = check(libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        ))?;
        let tree = OwnedFd::from_raw_fd(fd as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        check(libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ))?;
        check(libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ))?;
    }
    Ok(())
}

/// Unmounts `path`; `lazy` detaches it even when its FUSE client is dead or busy.
pub fn unmount(path: &Path, lazy: bool) -> Result<(), Error> {
    let c = c_path(path)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let source = std::io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::EINVAL) {
        return Ok(()); // not a mount point (any more)
    }
    Err(Error::Io {
        what: format!("unmounting {}", path.display()),
        source,
    })
}

/// Unmounts every mount stacked at `path`, lazily unless its client answers.
pub async fn unmount_all(path: &Path, checks: &Checks) -> Result<(), Error> {
    // Bounded: a mount the table lists but umount2 calls "not a mount point" must not spin.
    for _ in 0..16 {
        if mounted_at(path)?.is_none() {
            return Ok(());
        }
        let lazy = !matches!(checks.health(path).await, Health::Alive(_));
        unmount(path, lazy)?;
        checks.forget(path);
    }
    Err(Error::Mount(format!(
        "{} stays mounted after 16 unmounts",
        path.display()
    )))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_point_type_and_source() {
        let text = "\
36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
812 29 0:77 / /var/lib/kubelet/plugins/kubernetes.io/csi/pv/pvc-1/globalmount rw,relatime shared:400 - fuse.glusterfs 10.0.0.1:vol_a rw,user_id=0
813 29 0:78 / /tmp/with\\040space rw - tmpfs tmp\\134x rw";
        let table = parse_mountinfo(text);
        assert_eq!(table.len(), 3);
        assert_eq!(table[1].fs_type, "fuse.glusterfs");
        assert_eq!(table[1].source, "10.0.0.1:vol_a");
        assert_eq!(
            table[1].mount_point,
            Path::new("/var/lib/kubelet/plugins/kubernetes.io/csi/pv/pvc-1/globalmount")
        );
        assert_eq!(table[2].mount_point, Path::new("/tmp/with space"));
        assert_eq!(table[2].source, "tmp\\x");
    }

    #[tokio::test]
    async fn a_cgroup_the_child_cannot_join_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let joinable = dir.path().join("cgroup.procs");
        std::fs::write(&joinable, "").unwrap();
        let cgroups: Vec<CString> = [joinable.clone(), dir.path().join("gone/cgroup.procs")]
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
            .collect();
        let (child, missed) = spawn_in(std::process::Command::new("true"), &cgroups).unwrap();
        assert!(child.wait_with_output().await.unwrap().status.success());
        assert_eq!(
            missed,
            [Missed {
                index: 1,
                errno: libc::ENOENT
            }]
        );
        assert_eq!(std::fs::read_to_string(&joinable).unwrap(), "0");
    }

    /// Through the real `mount`: what it prints on failing is the error's message.
    #[tokio::test]
    async fn a_failed_mount_says_what_mount_said() {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "--bind".to_string(),
            dir.path().join("gone").display().to_string(),
            dir.path().join("missing").display().to_string(),
        ];
        let said = std::process::Command::new("mount")
            .args(&args)
            .output()
            .unwrap();
        assert!(!said.status.success());
        let said = tail(&said.stderr);
        assert!(!said.is_empty(), "mount says why it failed");
        let fuse = FuseCgroups {
            procs: Vec::new(),
            join_failures: IntCounter::new("t", "t").unwrap(),
        };
        let err = run_mount(&args, &fuse).await.unwrap_err().to_string();
        assert!(err.ends_with(&said), "{err:?} lacks {said:?}");
    }

    #[test]
    fn error_output_is_one_line_of_bounded_length_keeping_its_end() {
        assert_eq!(
            tail(b"  WARNING: x\nMount failed. See log\n"),
            "WARNING: x Mount failed. See log"
        );
        let long = format!("{}\nthe reason é", "é".repeat(2 * MESSAGE_MAX));
        let bounded = tail(long.as_bytes());
        assert!(bounded.len() <= MESSAGE_MAX + 3, "{}", bounded.len());
        assert!(bounded.starts_with("...") && bounded.ends_with(" the reason é"));
    }

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
