//! Fault points for the fault tests. With `GLUSTERFS_PROVISIONER_CRASH_AT=<name>` the process
//! aborts at that point, leaving everything as a `kill -9` there would; with
//! `GLUSTERFS_PROVISIONER_FAIL_AT=<name>` the step before it fails as a lost reply would; with
//! `GLUSTERFS_PROVISIONER_PAUSE_AT=<name>` the whole process stops there (SIGSTOP, once), as a
//! frozen VM would, until it gets SIGCONT.

use std::sync::atomic::{AtomicBool, Ordering};

pub const ENV: &str = "GLUSTERFS_PROVISIONER_CRASH_AT";
pub const FAIL_ENV: &str = "GLUSTERFS_PROVISIONER_FAIL_AT";
pub const PAUSE_ENV: &str = "GLUSTERFS_PROVISIONER_PAUSE_AT";

pub fn pause_point(name: &str) {
    static PAUSED: AtomicBool = AtomicBool::new(false);
    if std::env::var(PAUSE_ENV).is_ok_and(|v| v == name) && !PAUSED.swap(true, Ordering::SeqCst) {
        tracing::error!(name, "pause point reached, stopping the process");
        // SAFETY: raise only sends a signal to this process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

pub fn crash_point(name: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == name) {
        tracing::error!(name, "crash point reached, aborting");
        std::process::abort();
    }
}

/// An error as if the connection broke after the API server took the request.
pub fn fail_point(name: &str) -> Result<(), kube::Error> {
    if std::env::var(FAIL_ENV).is_ok_and(|v| v == name) {
        tracing::error!(name, "fail point reached, reporting a lost reply");
        return Err(kube::Error::Service(
            format!("connection reset after the request (fail point {name})").into(),
        ));
    }
    Ok(())
}
