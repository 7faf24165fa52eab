//! Fault points for the fault tests. With `GLUSTERFS_PROVISIONER_CRASH_AT=<name>` the process
//! aborts at that point, leaving everything as a `kill -9` there would; with
//! `GLUSTERFS_PROVISIONER_FAIL_AT=<name>` the step before it fails as a lost reply would.

pub const ENV: &str = "GLUSTERFS_PROVISIONER_CRASH_AT";
pub const FAIL_ENV: &str = "GLUSTERFS_PROVISIONER_FAIL_AT";

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
