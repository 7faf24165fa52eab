//! The values of the parameters every class may have: checked here, before anything is made.

use std::fmt;

use crate::{Error, Result};

pub const GID_MIN_DEFAULT: u32 = 2000;
pub const GID_MAX_DEFAULT: u32 = 2_147_483_647;
pub(super) const EP_PREFIX_MAX: usize = 26;
pub(super) const VOLUME_PREFIX_MAX: usize = 32;

/// A class's parameter that cannot be used, and why.
pub(super) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidParameter(msg.into())
}

/// How the bricks of a volume protect the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// One brick, no redundancy.
    None,
    Replicate(u32),
    Disperse {
        data: u32,
        redundancy: u32,
    },
    /// `replica 3 arbiter 1`: two bricks hold the data, the third only names and metadata,
    /// sized for files of `average_file_kib` on average (see `place::arbiter_bytes`).
    Arbiter {
        average_file_kib: u32,
    },
}

impl Durability {
    /// Over how many bricks the volume's data is spread: each brick of a disperse volume
    /// holds its share.
    pub fn data_bricks(self) -> u32 {
        match self {
            Durability::None | Durability::Replicate(_) | Durability::Arbiter { .. } => 1,
            Durability::Disperse { data, .. } => data,
        }
    }

    /// How many bricks, each on its own node, the volume needs.
    pub fn bricks(self) -> u32 {
        match self {
            Durability::None => 1,
            Durability::Replicate(n) => n,
            Durability::Disperse { data, redundancy } => data + redundancy,
            Durability::Arbiter { .. } => 3,
        }
    }

    /// How many of its bricks are arbiters.
    pub fn arbiters(self) -> u32 {
        u32::from(matches!(self, Durability::Arbiter { .. }))
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::None => f.write_str("none"),
            Durability::Replicate(n) => write!(f, "replicate:{n}"),
            Durability::Disperse { data, redundancy } => write!(f, "disperse:{data}:{redundancy}"),
            Durability::Arbiter { .. } => f.write_str("arbiter"),
        }
    }
}

/// Heketi's default for `user.heketi.average-file-size`.
pub const AVERAGE_FILE_KIB_DEFAULT: u32 = 64;

/// The options of Heketi's own that the SSH backend builds as Heketi did. Gluster takes any
/// `user.*` option as a plain note, so any other would be accepted and silently mean nothing.
const HEKETI_OPTIONS: &[&str] = &["user.heketi.arbiter", "user.heketi.average-file-size"];

/// The durability Heketi's options in `volumeoptions` ask for (SSH backend): an arbiter volume
/// for `user.heketi.arbiter true`; any `user.heketi.*` option not built is refused by name.
pub(super) fn heketi_options(
    durability: Durability,
    options: &[(String, String)],
) -> Result<Durability> {
    let (mut arbiter, mut average) = (None, AVERAGE_FILE_KIB_DEFAULT);
    for (key, value) in options {
        match key.to_ascii_lowercase().as_str() {
            "user.heketi.arbiter" => {
                arbiter = match value.to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => return Err(invalid(format!("{key} {value:?}: expected true or false"))),
                }
            }
            "user.heketi.average-file-size" => {
                average = value
                    .parse::<u32>()
                    .ok()
                    .filter(|kib| (1..=1 << 20).contains(kib))
                    .ok_or_else(|| {
                        invalid(format!(
                            "{key} {value:?}: expected a size in KiB from 1 to 1048576"
                        ))
                    })?
            }
            k if k.starts_with("user.heketi.") => {
                return Err(invalid(format!(
                    "volumeoptions {key:?}: a Heketi option the SSH backend does not implement \
                     (it implements {})",
                    HEKETI_OPTIONS.join(", ")
                )));
            }
            _ => {}
        }
    }
    let arbiter_volume = Durability::Arbiter {
        average_file_kib: average,
    };
    match (durability, arbiter) {
        (Durability::Arbiter { .. }, Some(false)) => Err(invalid(
            "volumetype arbiter contradicts user.heketi.arbiter false",
        )),
        (Durability::Arbiter { .. }, _) | (Durability::Replicate(3), Some(true)) => {
            Ok(arbiter_volume)
        }
        (other, Some(true)) => Err(invalid(format!(
            "user.heketi.arbiter true needs volumetype replicate:3 (the default), not {other}"
        ))),
        (other, _) => Ok(other),
    }
}

pub(super) fn parse_durability(value: &str) -> Result<Durability> {
    let bad = || {
        invalid(format!(
            "volumetype {value:?}: expected replicate:N, disperse:D:R, arbiter or none"
        ))
    };
    let count = |s: &str| s.parse::<u32>().ok().filter(|n| (1..=16).contains(n));
    let parts: Vec<&str> = value.split(':').collect();
    match parts.as_slice() {
        ["none"] => Ok(Durability::None),
        // The in-tree plugin read a bare "replicate" as three replicas; classes rely on it.
        ["replicate"] => Ok(Durability::Replicate(3)),
        ["replicate", n] => count(n).map(Durability::Replicate).ok_or_else(bad),
        ["arbiter"] => Ok(Durability::Arbiter {
            average_file_kib: AVERAGE_FILE_KIB_DEFAULT,
        }),
        ["disperse", d, r] => {
            let (data, redundancy) = (count(d).ok_or_else(bad)?, count(r).ok_or_else(bad)?);
            // Gluster needs more data bricks than twice the redundancy.
            if data <= redundancy {
                return Err(invalid(format!(
                    "volumetype {value:?}: data bricks must outnumber redundancy bricks"
                )));
            }
            Ok(Durability::Disperse { data, redundancy })
        }
        _ => Err(bad()),
    }
}

pub(super) fn parse_gid(key: &str, value: &str) -> Result<u32> {
    value
        .parse::<u32>()
        .ok()
        .filter(|g| (GID_MIN_DEFAULT..=GID_MAX_DEFAULT).contains(g))
        .ok_or_else(|| {
            invalid(format!(
                "{key} {value:?}: must be an integer from {GID_MIN_DEFAULT} to {GID_MAX_DEFAULT}"
            ))
        })
}

fn is_option_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn is_option_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | '*'))
}

/// `"key value, key value"`. Keys and values are restricted to the characters gluster options
/// use, so nothing a user writes here reaches the gluster CLI as anything but one option.
pub(super) fn parse_volume_options(value: &str) -> Result<Vec<(String, String)>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|option| {
            let mut words = option.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                // A profile names a file in gluster's groups directory: a plain name only.
                (Some("group"), Some(v), None)
                    if v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) =>
                {
                    Ok(("group".to_string(), v.to_string()))
                }
                // The provisioner's own options record whose a volume is: never a class's.
                (Some(k), Some(_), None) if k.starts_with(crate::identity::PREFIX) => {
                    Err(invalid(format!(
                        "volumeoptions {k:?}: options under {} are the provisioner's own record \
                         of who made a volume",
                        crate::identity::PREFIX
                    )))
                }
                (Some(k), Some(v), None)
                    if k != "group" && is_option_key(k) && is_option_value(v) =>
                {
                    Ok((k.to_string(), v.to_string()))
                }
                _ => Err(invalid(format!(
                    "volumeoptions entry {option:?}: expected \"key value\" with a gluster option \
                     name and a plain value"
                ))),
            }
        })
        .collect()
}

pub(super) fn parse_volume_prefix(value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= VOLUME_PREFIX_MAX
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        return Err(invalid(format!(
            "volumenameprefix {value:?}: use up to {VOLUME_PREFIX_MAX} letters, digits and '-' \
             (no '_'), starting with a letter or digit"
        )));
    }
    Ok(value.to_string())
}

/// The prefix becomes part of Service and Endpoints names, so it must be a DNS label start.
pub(super) fn parse_endpoint_prefix(value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= EP_PREFIX_MAX
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(invalid(format!(
            "customepnameprefix {value:?}: use up to {EP_PREFIX_MAX} lowercase letters, digits \
             and '-', starting with a letter"
        )));
    }
    Ok(value.to_string())
}
