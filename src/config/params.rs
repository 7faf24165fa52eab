//! StorageClass parameters, with the keys, defaults and validation users of
//! `kubernetes.io/glusterfs` already rely on. Everything is checked here, before anything is
//! created anywhere.

use std::collections::BTreeMap;

use super::heketi::{HeketiParams, SecretRef, parse_cluster_ids, parse_snap_factor, parse_url};
use super::values::*;
use crate::config::SizeLimit;
use crate::{Error, Result};

const EP_PREFIX_DEFAULT: &str = "glusterfs-dynamic";

/// A StorageClass's parameters, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassParams {
    pub durability: Durability,
    pub gid_min: u32,
    pub gid_max: u32,
    /// Gluster volume options as `(key, value)`.
    pub volume_options: Vec<(String, String)>,
    pub volume_name_prefix: Option<String>,
    pub endpoint_prefix: String,
    pub backend: BackendParams,
    /// `pvtype`: which kind of PV the class gets; none for the provisioner's default.
    pub pv_type: Option<PvType>,
}

/// How pods mount a PV: the kubelet's own `glusterfs` plugin (Kubernetes <= 1.25, with
/// Endpoints and a Service), or this project's CSI node plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvType {
    Glusterfs,
    Csi,
}

impl std::str::FromStr for PvType {
    type Err = Error;
    fn from_str(value: &str) -> Result<Self> {
        match value.to_ascii_lowercase().as_str() {
            "glusterfs" => Ok(PvType::Glusterfs),
            "csi" => Ok(PvType::Csi),
            _ => Err(invalid(format!(
                "pvtype {value:?} must be \"csi\" or \"glusterfs\""
            ))),
        }
    }
}

/// Which backend makes the class's volumes: a class with `resturl` is served by Heketi.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendParams {
    /// Topology cluster; `None` means the first one.
    Ssh {
        cluster: Option<String>,
        size_limit: SizeLimitChoice,
    },
    Heketi(HeketiParams),
}

/// `sizeLimit` (SSH backend): `image`, `quota` or `strict-quota`. Unset, a volume is kept to
/// its size as its cluster's brick roots do: by its bricks when any root can, else by quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeLimitChoice {
    pub kind: Option<SizeLimit>,
    /// Quota usage re-read on every write (gluster's timeouts at 0): writes stop at the limit,
    /// at a third of gluster's speed. At the default timeouts usage is re-read every 5 s past
    /// the soft limit (80%), so a writer may overshoot by what it writes in those seconds.
    pub strict: bool,
}

impl std::str::FromStr for SizeLimitChoice {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        let (kind, strict) = match value {
            "image" => (SizeLimit::Image, false),
            "quota" => (SizeLimit::Quota, false),
            "strict-quota" => (SizeLimit::Quota, true),
            _ => {
                return Err(invalid(format!(
                    "sizeLimit {value:?}: expected image, quota or strict-quota"
                )));
            }
        };
        Ok(SizeLimitChoice {
            kind: Some(kind),
            strict,
        })
    }
}

/// Keys that only mean something with Heketi, and only with the SSH backend.
const HEKETI_KEYS: &[&str] = &[
    "resturl",
    "restuser",
    "restuserkey",
    "secretnamespace",
    "secretname",
    "restauthenabled",
    "clusterid",
    "snapfactor",
];
const SSH_KEYS: &[&str] = &["cluster", "sizelimit"];

impl ClassParams {
    pub fn parse(params: &BTreeMap<String, String>) -> Result<Self> {
        let heketi = params.keys().any(|k| k.eq_ignore_ascii_case("resturl"));
        let mut out = ClassParams {
            durability: Durability::Replicate(3),
            gid_min: GID_MIN_DEFAULT,
            gid_max: GID_MAX_DEFAULT,
            volume_options: Vec::new(),
            volume_name_prefix: None,
            endpoint_prefix: EP_PREFIX_DEFAULT.into(),
            backend: BackendParams::Ssh {
                cluster: None,
                size_limit: SizeLimitChoice::default(),
            },
            pv_type: None,
        };
        let mut rest = HeketiParams {
            url: String::new(),
            user: String::new(),
            user_key: None,
            secret: None,
            clusters: Vec::new(),
            snap_factor: 1.0,
        };
        let (mut auth, mut secret_namespace, mut secret_name) = (true, None, None);
        for (key, value) in params {
            let lower = key.to_ascii_lowercase();
            if heketi && SSH_KEYS.contains(&lower.as_str()) {
                return Err(invalid(format!(
                    "{key:?} is for the SSH backend; with resturl (Heketi) use clusterid"
                )));
            }
            if !heketi && HEKETI_KEYS.contains(&lower.as_str()) {
                return Err(invalid(format!(
                    "{key:?} is a Heketi parameter and needs resturl; without resturl the class \
                     uses the SSH backend"
                )));
            }
            match lower.as_str() {
                "volumetype" => out.durability = parse_durability(value)?,
                "gidmin" => out.gid_min = parse_gid(key, value)?,
                "gidmax" => out.gid_max = parse_gid(key, value)?,
                "volumeoptions" => out.volume_options = parse_volume_options(value)?,
                "volumenameprefix" => out.volume_name_prefix = Some(parse_volume_prefix(value)?),
                "customepnameprefix" => out.endpoint_prefix = parse_endpoint_prefix(value)?,
                "pvtype" => out.pv_type = Some(value.parse()?),
                "cluster" => {
                    if value.is_empty() {
                        return Err(invalid("cluster must not be empty"));
                    }
                    if let BackendParams::Ssh { cluster, .. } = &mut out.backend {
                        *cluster = Some(value.clone());
                    }
                }
                "sizelimit" => {
                    if let BackendParams::Ssh { size_limit, .. } = &mut out.backend {
                        *size_limit = value.parse()?;
                    }
                }
                "resturl" => rest.url = parse_url(value)?,
                "restuser" => rest.user = value.clone(),
                "restuserkey" => rest.user_key = Some(value.clone()).filter(|k| !k.is_empty()),
                "secretnamespace" => {
                    secret_namespace = Some(value.clone()).filter(|v| !v.is_empty())
                }
                "secretname" => secret_name = Some(value.clone()).filter(|v| !v.is_empty()),
                // Deprecated in-tree: anything but "true" turns authentication off.
                "restauthenabled" => auth = value.eq_ignore_ascii_case("true"),
                "clusterid" => rest.clusters = parse_cluster_ids(value)?,
                "snapfactor" => rest.snap_factor = parse_snap_factor(value)?,
                _ => return Err(invalid(format!("unknown parameter {key:?}"))),
            }
        }
        if out.gid_min > out.gid_max {
            return Err(invalid(format!(
                "gidMin ({}) must not be greater than gidMax ({})",
                out.gid_min, out.gid_max
            )));
        }
        if heketi {
            rest.secret = match (secret_namespace, secret_name) {
                (Some(namespace), Some(name)) => Some(SecretRef { namespace, name }),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "secretNamespace and secretName must be set both or neither",
                    ));
                }
            };
            if !auth {
                rest.user.clear();
                rest.user_key = None;
                rest.secret = None;
            }
            out.backend = BackendParams::Heketi(rest);
        } else {
            out.durability = heketi_options(out.durability, &out.volume_options)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ClassParams> {
        ClassParams::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults() {
        let p = parse(&[]).unwrap();
        assert_eq!(p.durability, Durability::Replicate(3));
        assert_eq!((p.gid_min, p.gid_max), (2000, 2_147_483_647));
        assert_eq!(p.endpoint_prefix, "glusterfs-dynamic");
        assert!(p.volume_options.is_empty());
        assert_eq!(
            p.backend,
            BackendParams::Ssh {
                cluster: None,
                size_limit: SizeLimitChoice::default()
            }
        );
    }

    #[test]
    fn keys_are_case_insensitive() {
        let p = parse(&[
            ("volumeType", "disperse:4:2"),
            ("GIDMIN", "40000"),
            ("gidMax", "50000"),
            (
                "volumeOptions",
                "performance.quick-read off, cluster.lookup-optimize on",
            ),
            ("volumeNamePrefix", "dept-a"),
            ("customEpNamePrefix", "myep"),
            ("Cluster", "east"),
            ("sizeLimit", "strict-quota"),
        ])
        .unwrap();
        assert_eq!(
            p.durability,
            Durability::Disperse {
                data: 4,
                redundancy: 2
            }
        );
        assert_eq!(p.durability.bricks(), 6);
        assert_eq!((p.gid_min, p.gid_max), (40000, 50000));
        assert_eq!(
            p.volume_options,
            [
                ("performance.quick-read".into(), "off".into()),
                ("cluster.lookup-optimize".into(), "on".into())
            ]
        );
        assert_eq!(p.volume_name_prefix.as_deref(), Some("dept-a"));
        assert_eq!(p.endpoint_prefix, "myep");
        assert_eq!(
            p.backend,
            BackendParams::Ssh {
                cluster: Some("east".into()),
                size_limit: SizeLimitChoice {
                    kind: Some(SizeLimit::Quota),
                    strict: true
                }
            }
        );
    }

    /// A class as the Heketi guides write it.
    #[test]
    fn heketi_classes() {
        let p = parse(&[
            ("resturl", "http://heketi.storage.svc:8080/"),
            ("restuser", "admin"),
            ("secretNamespace", "default"),
            ("secretName", "heketi-secret"),
            ("restuserkey", "ignored-when-a-secret-is-named"),
            ("clusterid", "630372ccdc720a92c681fb928f27b53f,aa"),
            ("gidMin", "40000"),
            ("gidMax", "50000"),
            ("volumetype", "replicate:3"),
            ("snapfactor", "1.5"),
        ])
        .unwrap();
        let BackendParams::Heketi(h) = p.backend else {
            panic!("not Heketi")
        };
        assert_eq!(h.url, "http://heketi.storage.svc:8080");
        assert_eq!(h.user, "admin");
        assert_eq!(
            h.secret,
            Some(SecretRef {
                namespace: "default".into(),
                name: "heketi-secret".into()
            })
        );
        assert_eq!(h.clusters, ["630372ccdc720a92c681fb928f27b53f", "aa"]);
        assert_eq!(h.snap_factor, 1.5);
        let open = parse(&[
            ("resturl", "https://h"),
            ("restuser", "admin"),
            ("restuserkey", "k"),
            ("restauthenabled", "false"),
        ])
        .unwrap();
        let BackendParams::Heketi(h) = open.backend else {
            panic!("not Heketi")
        };
        assert!(h.user.is_empty() && h.user_key.is_none() && h.secret.is_none());
        assert_eq!(h.snap_factor, 1.0);
    }

    /// What OpenShift Container Storage's helpers write for arbiter classes.
    #[test]
    fn heketi_arbiter_options_build_an_arbiter_or_are_refused() {
        let arbiter = |kib| Durability::Arbiter {
            average_file_kib: kib,
        };
        let options = "user.heketi.arbiter true,user.heketi.average-file-size 64";
        let p = parse(&[("volumeoptions", options)]).unwrap();
        assert_eq!(p.durability, arbiter(64));
        let p = parse(&[("volumetype", "arbiter")]).unwrap();
        assert_eq!(p.durability, arbiter(64));
        let small = "user.heketi.arbiter true, user.heketi.average-file-size 16";
        let p = parse(&[("volumetype", "replicate:3"), ("volumeoptions", small)]);
        assert_eq!(p.unwrap().durability, arbiter(16));
        let plain = parse(&[("volumeoptions", "user.heketi.arbiter false")]).unwrap();
        assert_eq!(plain.durability, Durability::Replicate(3));
        for (pairs, want) in [
            (
                &[("volumeoptions", "user.heketi.zone-checking strict")][..],
                "\"user.heketi.zone-checking\": a Heketi option the SSH backend does not implement",
            ),
            (
                &[("volumetype", "replicate:2"), ("volumeoptions", options)],
                "needs volumetype replicate:3",
            ),
            (
                &[
                    ("volumetype", "arbiter"),
                    ("volumeoptions", "user.heketi.arbiter false"),
                ],
                "contradicts",
            ),
            (
                &[("volumeoptions", "user.heketi.arbiter yes")],
                "expected true or false",
            ),
            (
                &[("volumeoptions", "user.heketi.average-file-size 0")],
                "expected a size in KiB",
            ),
        ] {
            let err = parse(pairs).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
        // Heketi builds its own options.
        let heketi = [
            ("resturl", "http://h"),
            ("volumeoptions", "user.heketi.zone-checking strict"),
        ];
        assert!(parse(&heketi).is_ok());
    }

    #[test]
    fn volume_types() {
        for (text, want) in [
            ("none", Durability::None),
            ("replicate:2", Durability::Replicate(2)),
            ("replicate:3", Durability::Replicate(3)),
            (
                "disperse:2:1",
                Durability::Disperse {
                    data: 2,
                    redundancy: 1,
                },
            ),
            (
                "arbiter",
                Durability::Arbiter {
                    average_file_kib: 64,
                },
            ),
        ] {
            assert_eq!(parse(&[("volumetype", text)]).unwrap().durability, want);
            assert_eq!(want.to_string(), text);
        }
        // What the in-tree plugin's classes say for three replicas.
        assert_eq!(
            parse(&[("volumetype", "replicate")]).unwrap().durability,
            Durability::Replicate(3)
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let p = parse(&[
            ("resturl", "http://h"),
            ("restuser", "admin"),
            ("restuserkey", "s3cr3t-key"),
        ])
        .unwrap();
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("s3cr3t-key") && shown.contains("<redacted>"),
            "{shown}"
        );
        let credentials = crate::heketi::Credentials {
            user: "admin".into(),
            key: Some("s3cr3t-key".into()),
        };
        assert!(!format!("{credentials:?}").contains("s3cr3t-key"));
    }

    #[test]
    fn pv_type_is_optional_and_either_kind() {
        assert_eq!(parse(&[]).unwrap().pv_type, None);
        assert_eq!(
            parse(&[("pvType", "CSI")]).unwrap().pv_type,
            Some(PvType::Csi)
        );
        assert_eq!(
            parse(&[("pvtype", "glusterfs")]).unwrap().pv_type,
            Some(PvType::Glusterfs)
        );
    }

    #[test]
    fn bad_values_name_the_problem() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("foo", "bar")], "unknown parameter \"foo\""),
            (&[("pvtype", "nfs")], "pvtype \"nfs\" must be"),
            (
                &[("volumeoptions", "group ../../../etc/x")],
                "volumeoptions entry",
            ),
            (&[("restuser", "admin")], "needs resturl"),
            (&[("snapfactor", "2")], "needs resturl"),
            (&[("resturl", "")], "resturl \"\""),
            (&[("resturl", "heketi:8080")], "resturl"),
            (&[("resturl", "ftp://h")], "resturl"),
            (
                &[("resturl", "http://admin:secret@heketi:8080")],
                "must not carry credentials",
            ),
            (&[("resturl", "http://h"), ("cluster", "a")], "SSH backend"),
            (
                &[("resturl", "http://h"), ("sizeLimit", "image")],
                "SSH backend",
            ),
            (
                &[("sizeLimit", "xfs")],
                "sizeLimit \"xfs\": expected image, quota or strict-quota",
            ),
            (
                &[("resturl", "http://h"), ("secretName", "s")],
                "secretNamespace and secretName",
            ),
            (
                &[("resturl", "http://h"), ("snapfactor", "0.5")],
                "snapfactor",
            ),
            (
                &[("resturl", "http://h"), ("snapfactor", "x")],
                "snapfactor",
            ),
            (
                &[("resturl", "http://h"), ("clusterid", "a,,b")],
                "clusterid",
            ),
            (&[("volumetype", "mirror:3")], "volumetype \"mirror:3\""),
            (&[("volumetype", "replicate:0")], "volumetype"),
            (&[("volumetype", "replicate:x")], "volumetype"),
            (&[("volumetype", "disperse:1:1")], "outnumber"),
            (&[("gidMin", "100")], "gidMin \"100\""),
            (&[("gidMax", "abc")], "gidMax \"abc\""),
            (
                &[("gidMin", "5000"), ("gidMax", "4000")],
                "gidMin (5000) must not be greater",
            ),
            (&[("volumeoptions", "a")], "volumeoptions entry \"a\""),
            (&[("volumeoptions", "a b c")], "volumeoptions entry"),
            (&[("volumeoptions", "k $(reboot)")], "volumeoptions entry"),
            (&[("volumeoptions", "k;rm -rf / x")], "volumeoptions entry"),
            (&[("volumeoptions", "k `id`")], "volumeoptions entry"),
            (&[("volumeoptions", "--mode script")], "volumeoptions entry"),
            (&[("volumenameprefix", "a_b")], "volumenameprefix \"a_b\""),
            (&[("volumenameprefix", "a b;")], "volumenameprefix"),
            (
                &[("customepnameprefix", "this-prefix-is-much-too-long-for-us")],
                "customepnameprefix",
            ),
            (&[("customepnameprefix", "Upper")], "customepnameprefix"),
            (&[("cluster", "")], "cluster must not be empty"),
        ];
        for (pairs, want) in cases {
            let err = parse(pairs).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{pairs:?}: {err:?} should contain {want:?}"
            );
        }
    }
}
