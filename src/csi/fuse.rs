//! FUSE mounts of gluster volumes that outlive the plugin: `mount` runs with its FUSE client
//! in cgroups of their own, which the container runtime does not kill with the plugin.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use prometheus::IntCounter;

use super::Error;

/// The cgroup FUSE clients are moved to, in each hierarchy, so that the container runtime's
/// "kill every process of the plugin's container" (what it does when a container without its own
/// PID namespace stops) spares them: the mounts of running pods outlive a plugin restart.
const FUSE_CGROUP: &str = "glusterfs-csi-fuse";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
