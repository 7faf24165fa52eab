//! Bricks that keep to their own size ([`SizeLimit::Image`]): the steps on the node live in
//! `brick_image.sh`, run over SSH as `sh -c SCRIPT` with every argument passed on its own.
//!
//! [`SizeLimit::Image`]: crate::config::SizeLimit::Image

use super::place::Brick;
use crate::config::BrickRoot;

const SCRIPT: &str = include_str!("brick_image.sh");

/// XFS's log, which the image holds besides the volume's size (the script makes it this big),
/// so that `df` in a pod shows the size asked for.
const LOG_BYTES: u64 = 64 << 20;

/// The image of one brick of a volume of `size_gib` whose data is spread over `data_bricks`:
/// its share, in whole 4 KiB blocks, and the log.
pub fn image_bytes(size_gib: u64, data_bricks: u32) -> u64 {
    let share = (size_gib << 30).div_ceil(u64::from(data_bricks.max(1)));
    share.next_multiple_of(4096) + LOG_BYTES
}

/// The image of an arbiter brick: [`arbiter_bytes`] and the log.
///
/// [`arbiter_bytes`]: super::place::arbiter_bytes
pub fn arbiter_image_bytes(size_gib: u64, average_file_kib: u32) -> u64 {
    super::place::arbiter_bytes(size_gib << 30, average_file_kib).next_multiple_of(4096) + LOG_BYTES
}

fn args<'a>(action: &'a str, rest: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    ["-c", SCRIPT, "brick-image", action]
        .into_iter()
        .chain(rest)
        .map(String::from)
        .collect()
}

fn dir(brick: &Brick) -> &str {
    brick
        .volume_dir()
        .to_str()
        .expect("topology paths are ASCII")
}

/// Makes (or finds) the brick's image of `bytes` ([`image_bytes`]), lists it in the node's
/// fstab, mounts it, and makes the brick directory on it for the volume's `gid`.
pub fn create_args(brick: &Brick, bytes: u64, gid: u32) -> Vec<String> {
    args("create", [dir(brick), &bytes.to_string(), &gid.to_string()])
}

/// Grows the image to `bytes` and its file system, mounted; prints `none` when the brick has
/// no image.
pub fn grow_args(brick: &Brick, bytes: u64) -> Vec<String> {
    args("grow", [dir(brick), &bytes.to_string()])
}

/// Unmounts the image, takes it out of the fstab and removes it, then the volume's directory
/// (a brick without an image too); nothing there is done.
pub fn remove_args(brick: &Brick) -> Vec<String> {
    args("remove", [dir(brick)])
}

/// Whether the node can make image bricks, and whether each image under `roots` is listed in
/// its fstab and mounted.
pub fn check_args(roots: &[BrickRoot]) -> Vec<String> {
    args(
        "check",
        roots
            .iter()
            .map(|r| r.path.to_str().expect("topology paths are ASCII")),
    )
}

/// What the check found, one problem a line, in words.
pub fn check_findings(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|line| {
            let (what, path) = line.split_once(' ')?;
            Some(match what {
                "missing" => format!(
                    "{path} missing (image bricks need xfsprogs, util-linux and loop devices)"
                ),
                "unlisted" => format!("{path} not in /etc/fstab (not mounted after a reboot)"),
                "unmounted" => format!("{path} not mounted (its brick cannot start)"),
                "stale" => format!("/etc/fstab lists {path}, which does not exist"),
                _ => line.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Node;
    use std::path::Path;

    fn node(root: &str) -> Node {
        Node {
            name: "n1".into(),
            ssh_address: "10.0.0.1".into(),
            storage_address: "10.0.0.1".parse().unwrap(),
            zone: String::new(),
            brick_roots: vec![root.into()],
            state: Default::default(),
        }
    }

    /// Runs the script here as a node's shell would, each argument on its own, in `dir`.
    fn run(args: &[String], dir: &Path) -> std::process::Output {
        std::process::Command::new("sh")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    }

    /// Every name in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Names a shell would split, quote, expand or run, or `rm` would read as options.
    const HOSTILE: [&str; 9] = [
        "a b",
        "it's",
        "say \"x\"",
        "$(touch pwned)",
        "`touch pwned`",
        "x; touch pwned",
        "x\ntouch pwned",
        "x\ttab",
        "..",
    ];

    #[test]
    fn hostile_names_arrive_verbatim_and_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_str().unwrap();
        let node = node(root);
        for name in HOSTILE {
            let brick = Brick::new(&node, &node.brick_roots[0], name);
            let dir = format!("{root}/{name}");
            std::fs::write(format!("{dir}.img"), "data").unwrap();
            for args in [
                remove_args(&brick),
                create_args(&brick, 1 << 30, 2000),
                grow_args(&brick, 1 << 30),
                check_args(&[dir.as_str().into()]),
            ] {
                let out = run(&args, tmp.path());
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{:?}: {stderr}", &args[2..]);
                // The path as given, not split, unquoted or expanded.
                assert!(
                    stderr.contains(&format!("refused: {dir} is not")),
                    "{:?}: {stderr}",
                    &args[3..]
                );
            }
            let img = format!("{name}.img");
            assert!(names(tmp.path()).contains(&img), "{img} left alone");
        }
        // Nothing ran: `pwned` would be made in the working directory, the root.
        assert!(
            !tmp.path().join("pwned").exists(),
            "{:?}",
            names(tmp.path())
        );
    }

    #[test]
    fn a_path_of_the_topology_kind_is_used_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_str().unwrap();
        let node = node(root);
        // A volume named like options: the path starts with the root, never with a dash.
        let brick = Brick::new(&node, &node.brick_roots[0], "-rf");
        for name in ["-rf.img", "-rf.img.new", "keep.img"] {
            std::fs::write(tmp.path().join(name), "x").unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("-rf/brick")).unwrap();
        let grow = run(&grow_args(&brick, 1 << 30), tmp.path());
        let stderr = String::from_utf8_lossy(&grow.stderr);
        assert!(
            stderr.contains(&format!("{root}/-rf.img is not mounted on {root}/-rf")),
            "{stderr}"
        );
        let out = run(&remove_args(&brick), tmp.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The volume's image and directory go, and nothing else.
        assert_eq!(names(tmp.path()), ["keep.img"]);
    }

    #[test]
    fn sizes_are_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = grow_args(&Brick::new(&node("/b1"), &"/b1".into(), "v"), 1);
        for bytes in ["", "1;touch pwned", "$(touch pwned)", "-1"] {
            *args.last_mut().unwrap() = bytes.into();
            let out = run(&args, tmp.path());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bytes:?}: {stderr}");
            assert!(stderr.contains(&format!("refused: {bytes} is not a number")));
        }
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn arguments_are_passed_apart_from_the_script() {
        let node = node("/b1");
        let brick = Brick::new(&node, &node.brick_roots[0], "vol_x");
        let create = create_args(&brick, image_bytes(1, 1), 2000);
        assert_eq!(create[0], "-c");
        assert_eq!(create[1], SCRIPT);
        assert_eq!(
            create[2..],
            ["brick-image", "create", "/b1/vol_x", "1140850688", "2000"]
        );
        assert_eq!(
            remove_args(&brick)[2..],
            ["brick-image", "remove", "/b1/vol_x"]
        );
        assert_eq!(grow_args(&brick, image_bytes(2, 1))[4], "/b1/vol_x");
        assert_eq!(
            check_args(&node.brick_roots)[2..],
            ["brick-image", "check", "/b1"]
        );
    }

    #[test]
    fn a_disperse_brick_holds_its_share() {
        let log = 64 << 20;
        assert_eq!(image_bytes(1, 1), (1 << 30) + log);
        assert_eq!(image_bytes(1, 4), (256 << 20) + log);
        // A third of 1 GiB, in whole blocks: the volume holds at least the size.
        let third = image_bytes(1, 3) - log;
        assert_eq!(third % 4096, 0);
        assert!(3 * third >= 1 << 30 && 3 * third < (1 << 30) + 3 * 4096);
    }

    #[test]
    fn findings_say_what_a_reboot_would_do() {
        let found = check_findings("unlisted /b1/v.img\nunmounted /b1/w.img\n");
        assert_eq!(
            found,
            [
                "/b1/v.img not in /etc/fstab (not mounted after a reboot)",
                "/b1/w.img not mounted (its brick cannot start)"
            ]
        );
    }
}
