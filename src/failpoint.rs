//! Crash points for the crash-safety tests. With `GLUSTERFS_PROVISIONER_CRASH_AT=<name>` the
//! process aborts at that point, leaving everything as a `kill -9` there would.

pub const ENV: &str = "GLUSTERFS_PROVISIONER_CRASH_AT";

pub fn crash_point(name: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == name) {
        tracing::error!(name, "crash point reached, aborting");
        std::process::abort();
    }
}
