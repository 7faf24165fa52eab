//! What the provisioner writes on a node stays whole: `brick_image.sh` on a gluster node, over
//! SSH as the provisioner runs it, with the node's `/etc` replaced by a small file system (full
//! or not) in a mount namespace of the test's own, so the node's real fstab is never touched.

use glusterfs_provisioner::config::BrickRoot;
use glusterfs_provisioner::gluster::{Brick, image};

use crate::scenario::nodes;
use crate::support::{ssh, unique};

/// Run by `unshare -m` on the node: a 64 KiB tmpfs on /etc holding FSTAB (then filled up when
/// FILL is `full`), a tmpfs on /mnt holding the empty images IMAGES (one a line), then each
/// GROUP arguments of the rest as one `sh` command, all at once. Prints each command's exit
/// status, what /etc and /mnt hold, and each fstab file as `=NAME LENGTH` and its bytes.
const HARNESS: &str = r#"set -u
die() { echo "harness: $*" >&2; exit 100; }
fstab=$1 fill=$2 images=$3 group=$4
shift 4
mount -t tmpfs -o size=64k,mode=755 gp-test-etc /etc || die "no tmpfs on /etc"
mount -t tmpfs gp-test-bricks /mnt || die "no tmpfs on /mnt"
printf '%s' "$fstab" >/etc/fstab || die "cannot write /etc/fstab"
while IFS= read -r img; do
	[ -z "$img" ] || : >"$img" || die "cannot make $img"
done <<<"$images"
if [ "$fill" = full ]; then
	dd if=/dev/zero of=/etc/filler bs=4k 2>/dev/null
	[ "$(stat -f -c %a /etc)" -eq 0 ] || die "/etc is not full"
fi
while [ $# -gt 0 ]; do
	(sh "${@:1:group}"; echo "exit $?") &
	shift "$group"
done
wait
echo "=etc $(ls -A /etc | tr '\n' ' ')"
echo "=bricks $(ls -A /mnt | tr '\n' ' ')"
for f in fstab fstab.gp-bak; do
	[ ! -e "/etc/$f" ] || { echo "=$f $(wc -c <"/etc/$f")"; cat "/etc/$f"; }
done
exit 0
"#;

/// What a run of the harness left.
struct Outcome {
    exits: Vec<i32>,
    etc: Vec<String>,
    bricks: Vec<String>,
    fstab: Option<String>,
    backup: Option<String>,
    stderr: String,
}

/// Each of `jobs` (argument lists of one length) run at once by `sh` on the first node, with
/// `fstab` as its fstab and `images` made.
async fn on_a_small_etc(
    full: bool,
    fstab: &str,
    images: &[String],
    jobs: &[Vec<String>],
) -> Outcome {
    let group = jobs[0].len();
    let mut args: Vec<String> = [
        "-m",
        "--propagation",
        "private",
        "bash",
        "-c",
        HARNESS,
        "harness",
    ]
    .map(String::from)
    .into();
    args.extend([
        fstab.to_string(),
        if full { "full" } else { "room" }.into(),
        images.join("\n"),
        group.to_string(),
    ]);
    for job in jobs {
        assert_eq!(job.len(), group, "jobs of one length");
        args.extend(job.iter().cloned());
    }
    let out = ssh()
        .run(&nodes()[0].ssh_address, "unshare", &args)
        .await
        .unwrap();
    assert!(out.success, "harness {}: {}", out.status, out.stderr);
    let stdout = format!("\n{}", out.stdout);
    let listing = |name: &str| -> Vec<String> {
        let start = stdout.find(&format!("\n={name} ")).unwrap() + name.len() + 3;
        let line = stdout[start..].lines().next().unwrap_or_default();
        let mut names: Vec<String> = line.split_whitespace().map(String::from).collect();
        names.sort();
        names
    };
    let file = |name: &str| -> Option<String> {
        let start = stdout.find(&format!("\n={name} "))? + name.len() + 3;
        let (len, rest) = stdout[start..].split_once('\n')?;
        Some(rest[..len.parse::<usize>().unwrap()].to_string())
    };
    Outcome {
        exits: stdout
            .lines()
            .filter_map(|l| l.strip_prefix("exit ")?.parse().ok())
            .collect(),
        etc: listing("etc"),
        bricks: listing("bricks"),
        fstab: file("fstab"),
        backup: file("fstab.gp-bak"),
        stderr: out.stderr,
    }
}

/// A brick of volume `volume` under the harness's /mnt.
fn brick(volume: &str) -> Brick {
    Brick::new(&nodes()[0], &BrickRoot::from("/mnt"), volume)
}

/// The fstab line `brick_image.sh` writes for `volume`.
fn entry(volume: &str) -> String {
    format!("/mnt/{volume}.img /mnt/{volume} xfs loop,noatime,inode64,nofail 0 0")
}

/// A node's fstab listing the images of `volumes` among its own lines; the last line has no
/// newline, as a hand-edited file may end.
fn fstab_with(volumes: &[&str]) -> String {
    let mut lines = vec![
        "# /etc/fstab: static file system information.".to_string(),
        "UUID=0a1b2c3d / ext4 errors=remount-ro 0 1".into(),
    ];
    lines.extend(volumes.iter().map(|v| entry(v)));
    lines.push("/swapfile none swap sw 0 0".into());
    lines.push("proc /proc proc defaults 0 0".into());
    lines.join("\n")
}

/// `fstab` without the lines of `gone`, as whole lines.
fn without(fstab: &str, gone: &[String]) -> String {
    fstab
        .lines()
        .filter(|l| !gone.iter().any(|g| g == l))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test]
async fn a_full_file_system_leaves_the_fstab_as_it_was() {
    let before = fstab_with(&["vol_listed"]);
    let images = ["/mnt/vol_listed.img", "/mnt/vol_new.img"].map(String::from);
    // Removing a listed image, and listing one whose image is made (create's edit, after it
    // made the directory to mount on).
    let images_only = ["vol_listed.img", "vol_new.img"];
    let with_dir = ["vol_listed.img", "vol_new", "vol_new.img"];
    for (what, job, left) in [
        (
            "remove",
            image::remove_args(&brick("vol_listed")),
            &images_only[..],
        ),
        (
            "create",
            image::create_args(&brick("vol_new"), 1 << 30, 2000),
            &with_dir[..],
        ),
    ] {
        let out = on_a_small_etc(true, &before, &images, &[job]).await;
        assert_eq!(
            out.fstab.as_deref(),
            Some(before.as_str()),
            "{what}: fstab as it was"
        );
        assert!(
            out.exits.len() == 1 && out.exits[0] != 0,
            "{what} on a full /etc must fail: {:?}, {}",
            out.exits,
            out.stderr
        );
        assert!(
            out.stderr.contains("/etc/fstab left unchanged")
                && out.stderr.contains("No space left on device"),
            "{what} says what and why: {}",
            out.stderr
        );
        assert_eq!(out.etc, ["filler", "fstab"], "{what}: no copy left in /etc");
        // The images stay as they were: a retry starts from where this one stopped.
        assert_eq!(out.bricks, left, "{what}");
    }
}

#[tokio::test]
async fn fstab_edits_at_once_all_land_and_keep_the_old_table() {
    let volumes = ["vol_0", "vol_1", "vol_2", "vol_3"];
    let before = fstab_with(&volumes);
    let images: Vec<String> = volumes.iter().map(|v| format!("/mnt/{v}.img")).collect();
    let jobs: Vec<_> = volumes
        .iter()
        .map(|v| image::remove_args(&brick(v)))
        .collect();
    let out = on_a_small_etc(false, &before, &images, &jobs).await;
    assert_eq!(out.exits, [0; 4], "{}", out.stderr);
    let entries: Vec<String> = volumes.iter().map(|v| entry(v)).collect();
    assert_eq!(
        out.fstab.as_deref(),
        Some(without(&before, &entries).as_str()),
        "every edit landed, nothing else changed"
    );
    // The table as the last edit found it: one of the entries still in it.
    let backups: Vec<String> = (0..entries.len())
        .map(|kept| {
            let mut gone = entries.clone();
            gone.remove(kept);
            without(&before, &gone)
        })
        .collect();
    let backup = out.backup.expect("the old table kept as fstab.gp-bak");
    assert!(backups.contains(&backup), "backup {backup:?}");
    assert_eq!(out.etc, ["fstab", "fstab.gp-bak"], "no copy left in /etc");
    assert!(out.bricks.is_empty(), "images removed: {:?}", out.bricks);
}

/// Through the real SSH executor and the node's login shell: names a shell would split or run
/// reach the script verbatim and are refused before anything is done.
#[tokio::test]
async fn hostile_brick_paths_over_ssh_are_refused_verbatim() {
    let node = &nodes()[0];
    let marker = format!("/tmp/{}", unique("gp-pwned"));
    let names = [
        format!("x; touch {marker}"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("x' ; touch {marker}; '"),
        format!("x\ntouch {marker}"),
        "a b".into(),
    ];
    let ssh = ssh();
    for name in &names {
        let brick = Brick::new(node, &node.brick_roots[0], name);
        let dir = brick.volume_dir().to_str().unwrap().to_string();
        for args in [
            image::remove_args(&brick),
            image::check_args(&[dir.as_str().into()]),
        ] {
            let out = ssh.run(&node.ssh_address, "sh", &args).await.unwrap();
            assert!(
                !out.success && out.stderr.contains(&format!("refused: {dir} is not")),
                "{:?} refused verbatim: {} {}",
                &args[2..],
                out.status,
                out.stderr
            );
        }
    }
    let test = ssh
        .run(&node.ssh_address, "test", &["-e".into(), marker.clone()])
        .await
        .unwrap();
    assert!(!test.success, "{marker} made on {}: a name ran", node.name);
}
