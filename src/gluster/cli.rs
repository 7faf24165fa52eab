//! The gluster CLI's argument lists that make, change and remove volumes, each argument apart:
//! never a shell string.

use super::place::Brick;
use crate::config::{Durability, SizeLimit};

fn args<const N: usize>(words: [&str; N]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// `gluster volume create` for the bricks in placement order.
pub fn create_args(volume: &str, durability: Durability, bricks: &[Brick]) -> Vec<String> {
    let mut out = args(["volume", "create", volume]);
    match durability {
        Durability::None => {}
        Durability::Replicate(n) => out.extend(args(["replica", &n.to_string()])),
        // Gluster makes the last brick of each set of three the arbiter.
        Durability::Arbiter { .. } => out.extend(args(["replica", "3", "arbiter", "1"])),
        Durability::Disperse { data, redundancy } => out.extend(args([
            "disperse",
            &(data + redundancy).to_string(),
            "redundancy",
            &redundancy.to_string(),
        ])),
    }
    out.extend(bricks.iter().map(Brick::spec));
    out
}

/// The options a volume's way of keeping to its size needs, as `key value ...`.
pub fn limit_options(size_limit: SizeLimit, strict_quota: bool) -> &'static [&'static str] {
    match (size_limit, strict_quota) {
        // With its own file system full, a brick fails gluster's health check (a file it
        // writes on the brick every 30 s) and stops itself: every replica at once, as they
        // fill together. Gluster's reserve stays: writes are refused below 1% free (checked
        // every 5 s), which leaves the replication's own metadata room unless a writer fills
        // that 1% within the 5 s.
        (SizeLimit::Image, _) => &["storage.health-check-interval", "0"],
        // Usage re-read on every write: the limit holds exactly, at a third of the speed.
        (SizeLimit::Quota, true) => &["features.soft-timeout", "0", "features.hard-timeout", "0"],
        (SizeLimit::Quota, false) => &[],
    }
}

/// The `volume set` commands of a new volume: each option profile (`group NAME` in
/// `volumeoptions`, the files in gluster's `groups` directory) alone, as gluster takes no other
/// option with one; then one command for the group the volume root belongs to, the options of
/// its size limit ([`limit_options`]), the class's other options, which so win over a
/// profile's, and the volume's identity ([`crate::identity`]), recorded before it is started.
pub fn options_args(
    volume: &str,
    gid: u32,
    options: &[(String, String)],
    limit: &[&str],
    identity: &[(String, String)],
) -> Vec<Vec<String>> {
    let (profiles, plain): (Vec<_>, Vec<_>) = options.iter().partition(|(k, _)| k == "group");
    let mut out: Vec<Vec<String>> = profiles
        .into_iter()
        .map(|(_, name)| args(["volume", "set", volume, "group", name]))
        .collect();
    let mut set = args([
        "volume",
        "set",
        volume,
        "storage.owner-gid",
        &gid.to_string(),
    ]);
    set.extend(limit.iter().map(|w| w.to_string()));
    for (key, value) in plain.into_iter().chain(identity) {
        set.extend([key.clone(), value.clone()]);
    }
    out.push(set);
    out
}

/// One `volume set` of several options (an identity's, say).
pub fn set_args(volume: &str, options: &[(String, String)]) -> Vec<String> {
    let mut set = args(["volume", "set", volume]);
    for (key, value) in options {
        set.extend([key.clone(), value.clone()]);
    }
    set
}

/// An option of the whole pool (`cluster.brick-multiplex`, say).
pub fn pool_option_args(option: &str) -> Vec<String> {
    args(["volume", "get", "all", option])
}

pub fn list_args() -> Vec<String> {
    args(["volume", "list"])
}

pub fn info_args(volume: &str) -> Vec<String> {
    args(["volume", "info", volume])
}

pub fn status_args(volume: &str) -> Vec<String> {
    args(["volume", "status", volume])
}

/// `old` swapped for `new` at once: the volume holds one copy less until `new` is healed.
pub fn replace_brick_args(volume: &str, old: &str, new: &Brick) -> Vec<String> {
    let new = new.spec();
    args([
        "volume",
        "replace-brick",
        volume,
        old,
        &new,
        "commit",
        "force",
    ])
}

/// `new` added as one more replica of a single-subvolume replicate volume of `replica` copies.
pub fn add_replica_args(volume: &str, replica: u32, new: &Brick) -> Vec<String> {
    let (count, new) = ((replica + 1).to_string(), new.spec());
    args(["volume", "add-brick", volume, "replica", &count, &new])
}

/// `old` taken out of a volume of `replica` copies, leaving one fewer.
pub fn remove_replica_args(volume: &str, replica: u32, old: &str) -> Vec<String> {
    let count = (replica - 1).to_string();
    args([
        "volume",
        "remove-brick",
        volume,
        "replica",
        &count,
        old,
        "force",
    ])
}

/// Every file compared between the copies, not only those the index lists: a new replica
/// starts empty.
pub fn heal_full_args(volume: &str) -> Vec<String> {
    args(["volume", "heal", volume, "full"])
}

/// Counts only: `info` alone lists every entry, and runs as long as there are many.
pub fn heal_summary_args(volume: &str) -> Vec<String> {
    args(["volume", "heal", volume, "info", "summary"])
}

/// `force` also starts the bricks of a volume whose earlier start failed on some node, so a
/// retry completes a half-started volume instead of being told it is started.
pub fn start_args(volume: &str) -> Vec<String> {
    args(["volume", "start", volume, "force"])
}

pub fn stop_args(volume: &str) -> Vec<String> {
    args(["volume", "stop", volume, "force"])
}

pub fn delete_args(volume: &str) -> Vec<String> {
    args(["volume", "delete", volume])
}

pub fn quota_enable_args(volume: &str) -> Vec<String> {
    args(["volume", "quota", volume, "enable"])
}

/// Gluster's `GB` is 2^30 bytes, matching the GiB the claim was rounded up to.
pub fn quota_limit_args(volume: &str, size_gib: u64) -> Vec<String> {
    args([
        "volume",
        "quota",
        volume,
        "limit-usage",
        "/",
        &format!("{size_gib}GB"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brick(ip: u8) -> Brick {
        Brick {
            node: format!("n{ip}"),
            ssh_address: format!("10.0.0.{ip}"),
            storage_address: format!("10.0.0.{ip}").parse().unwrap(),
            path: "/b1/v/brick".into(),
            size_limit: SizeLimit::Image,
            arbiter: false,
        }
    }

    #[test]
    fn commands() {
        let bricks = [brick(1), brick(2), brick(3)];
        assert_eq!(
            create_args("v", Durability::Replicate(3), &bricks).join(" "),
            "volume create v replica 3 10.0.0.1:/b1/v/brick 10.0.0.2:/b1/v/brick 10.0.0.3:/b1/v/brick"
        );
        assert_eq!(
            create_args(
                "v",
                Durability::Disperse {
                    data: 2,
                    redundancy: 1
                },
                &bricks
            )
            .join(" "),
            "volume create v disperse 3 redundancy 1 10.0.0.1:/b1/v/brick 10.0.0.2:/b1/v/brick 10.0.0.3:/b1/v/brick"
        );
        assert_eq!(
            create_args("v", Durability::None, &bricks[..1]).join(" "),
            "volume create v 10.0.0.1:/b1/v/brick"
        );
        assert_eq!(
            quota_limit_args("v", 2).join(" "),
            "volume quota v limit-usage / 2GB"
        );
        let options = [
            ("group".to_string(), "metadata-cache".to_string()),
            ("performance.quick-read".to_string(), "off".to_string()),
            ("group".to_string(), "nl-cache".to_string()),
        ];
        let commands = |strict| -> Vec<String> {
            options_args(
                "v",
                2000,
                &options,
                limit_options(SizeLimit::Quota, strict),
                &[],
            )
            .iter()
            .map(|c| c.join(" "))
            .collect()
        };
        assert_eq!(
            commands(true),
            [
                "volume set v group metadata-cache",
                "volume set v group nl-cache",
                "volume set v storage.owner-gid 2000 features.soft-timeout 0 \
                 features.hard-timeout 0 performance.quick-read off",
            ]
        );
        assert_eq!(
            commands(false)[2],
            "volume set v storage.owner-gid 2000 performance.quick-read off"
        );
        assert_eq!(
            options_args("v", 2000, &[], limit_options(SizeLimit::Image, false), &[])[0].join(" "),
            "volume set v storage.owner-gid 2000 storage.health-check-interval 0"
        );
    }
}
