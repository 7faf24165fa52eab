//! The node's mounts: reading the mount table, FUSE mounts of gluster volumes that outlive the
//! plugin, bind mounts, unmounts, and telling a live FUSE mount from a dead one.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// What a mount point answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Alive,
    /// Its FUSE client is gone ("Transport endpoint is not connected") or does not answer.
    Dead(String),
}

/// `statvfs` of `path`, off the async threads and bounded by `timeout`: a hung FUSE client
/// blocks the caller forever.
pub async fn statvfs(path: &Path, timeout: Duration) -> Result<libc::statvfs, String> {
    let owned = path.to_path_buf();
    let call = tokio::task::spawn_blocking(move || {
        let c = CString::new(owned.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid C string and `out` a writable statvfs.
        match unsafe { libc::statvfs(c.as_ptr(), &mut out) } {
            0 => Ok(out),
            _ => Err(std::io::Error::last_os_error()),
        }
    });
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(Ok(stats))) => Ok(stats),
        Ok(Ok(Err(e))) => Err(format!("{}: {e}", path.display())),
        Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
        Err(_) => Err(format!("{}: no answer within {timeout:?}", path.display())),
    }
}

pub async fn health(path: &Path, timeout: Duration) -> Health {
    match statvfs(path, timeout).await {
        Ok(_) => Health::Alive,
        Err(why) => Health::Dead(why),
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

/// Runs `mount` with `args`. Its processes (and so the FUSE client `mount.glusterfs` starts)
/// first join `cgroups`.
pub async fn run_mount(args: &[String], cgroups: &[CString]) -> Result<(), Error> {
    let mut cmd = std::process::Command::new("mount");
    cmd.args(args);
    let cgroups = cgroups.to_vec();
    // SAFETY: between fork and exec only open/write/close run: async-signal-safe calls on
    // strings prepared before the fork. Writing "0" to cgroup.procs moves the writer.
    unsafe {
        cmd.pre_exec(move || {
            for procs in &cgroups {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|source| Error::Io {
            what: "running mount".into(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Mount(format!(
        "mount {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
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

/// Unmounts every mount stacked at `path`, lazily when its client is dead.
pub async fn unmount_all(path: &Path, timeout: Duration) -> Result<(), Error> {
    // Bounded: a mount the table lists but umount2 calls "not a mount point" must not spin.
    for _ in 0..16 {
        if mounted_at(path)?.is_none() {
            return Ok(());
        }
        let lazy = health(path, timeout).await != Health::Alive;
        unmount(path, lazy)?;
    }
    Err(Error::Mount(format!(
        "{} stays mounted after 16 unmounts",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
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
    async fn a_missing_path_is_reported_dead_not_hung() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        match health(&gone, Duration::from_secs(5)).await {
            Health::Dead(why) => assert!(why.contains("No such file"), "{why}"),
            Health::Alive => panic!("a missing path is not alive"),
        }
        assert_eq!(
            health(dir.path(), Duration::from_secs(5)).await,
            Health::Alive
        );
    }
}
