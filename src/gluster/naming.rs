//! Volume names: derived from the claim's UID, so that a retry or a restart finds the volume it
//! made before; and what a name, or a PV's path, says of its claim.

/// Gluster accepts longer names, but brick paths and client log file names embed the name.
const VOLUME_NAME_MAX: usize = 108;

/// The volume name for a claim. Derived from the claim's UID so a retry, or a restart after a
/// crash at any step, finds the volume it made before instead of making another.
pub fn volume_name(prefix: Option<&str>, namespace: &str, claim: &str, uid: &str) -> String {
    let suffix: String = uid.chars().filter(char::is_ascii_alphanumeric).collect();
    let Some(prefix) = prefix else {
        return format!("vol_{suffix}");
    };
    // Namespace and claim names are DNS names; '.' is not allowed in volume names.
    let clean = |s: &str| s.replace('.', "-");
    let budget = VOLUME_NAME_MAX - prefix.len() - suffix.len() - 3;
    let (mut ns, mut claim) = (clean(namespace), clean(claim));
    ns.truncate(budget / 2);
    claim.truncate(budget - ns.len());
    format!("{prefix}_{ns}_{claim}_{suffix}")
}

/// Whether `name` is what [`volume_name`] gives for the claim `uid`, whatever the prefix: a
/// PV's path is editable, and only the claim's own volume may be deleted through its PV.
pub fn derives_from(name: &str, uid: &str) -> bool {
    let suffix: String = uid.chars().filter(char::is_ascii_alphanumeric).collect();
    !suffix.is_empty()
        && is_volume_name(name)
        && name
            .strip_suffix(&suffix)
            .is_some_and(|head| head == "vol_" || head.ends_with('_'))
}

/// The claim UID (without dashes) a name as [`volume_name`] gives ends with, for any prefix.
pub fn uid_suffix(name: &str) -> Option<&str> {
    let suffix = name.rsplit('_').next()?;
    let hex = suffix.len() == 32 && suffix.chars().all(|c| c.is_ascii_hexdigit());
    (hex && is_volume_name(name) && name.len() > suffix.len()).then_some(suffix)
}

/// Names this provisioner made or accepts: gluster's own rule, kept to what is safe in a path.
pub fn is_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= VOLUME_NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// The volume a mount source's path names: gluster mounts `vol`, `/vol` and a subdirectory
/// `vol/sub` alike, so a PV naming any of them uses the volume.
pub fn volume_in_path(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    path.split('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_path_names_its_volume_in_any_form() {
        for path in ["vol_x", "/vol_x", "vol_x/sub", "/vol_x/sub/deeper"] {
            assert_eq!(volume_in_path(path), "vol_x", "{path}");
        }
    }

    #[test]
    fn names_come_from_the_uid() {
        let uid = "0f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f";
        assert_eq!(
            volume_name(None, "ns", "data", uid),
            "vol_0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f"
        );
        let n = volume_name(Some("dept"), "my.ns", "data-web-0", uid);
        assert_eq!(n, "dept_my-ns_data-web-0_0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f");
        assert!(is_volume_name(&n));
        assert!(derives_from(&n, uid) && derives_from(&volume_name(None, "a", "b", uid), uid));
        let other = "1f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f";
        assert!(!derives_from(&n, other), "another claim's volume");
        assert!(!derives_from("gluster_shared_storage", uid));
        assert_eq!(uid_suffix(&n), Some("0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f"));
        assert_eq!(uid_suffix("gluster_shared_storage"), None);
        assert!(!derives_from(
            &format!("x{}", n.rsplit('_').next().unwrap()),
            uid
        ));
        let long = volume_name(Some("p"), &"n".repeat(63), &"c".repeat(253), uid);
        assert!(
            long.len() <= VOLUME_NAME_MAX && is_volume_name(&long),
            "{long}"
        );
        assert!(long.ends_with("_0f5c2d9e1b7a4c3e9d2f8a6b5c4d3e2f"));
        for bad in ["", "a b", "a;b", "-x", "a/b", "a.b", &"x".repeat(200)] {
            assert!(!is_volume_name(bad), "{bad:?}");
        }
    }
}
