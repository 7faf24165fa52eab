//! The node's mounts: reading the mount table, bind mounts, and unmounts (lazy for a FUSE
//! client that no longer answers).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::Error;
use super::liveness::{Checks, Health};

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
}
