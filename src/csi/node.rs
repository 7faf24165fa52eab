//! The CSI Node service: one FUSE mount per volume and node at the staging path, bind mounts
//! of it into pods, usage and condition from the mount. Every call is idempotent, and a mount
//! whose FUSE client died is found and replaced, never left behind.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tonic::{Request, Response, Status};

use super::Error;
use super::fuse::{self, FuseCgroups};
use super::liveness::{Checks, Health};
use super::mounts;
use super::proto::node_server::Node;
use super::proto::node_service_capability::{Rpc, Type as CapabilityType, rpc::Type as RpcType};
use super::proto::volume_capability::access_mode::Mode;
use super::proto::volume_capability::{AccessType, MountVolume};
use super::proto::volume_usage::Unit;
use super::proto::*;
use crate::config::csi::{ATTR_SERVERS, ATTR_VOLUME, CurrentServers, is_server};
use crate::gluster::naming::is_volume_name;

const FUSE_TYPE: &str = "fuse.glusterfs";

pub struct NodeService {
    pub node_id: String,
    /// Where each volume's FUSE client writes its log (`<volume>.log`).
    pub log_dir: PathBuf,
    /// The cgroups the FUSE clients join.
    pub fuse_cgroups: FuseCgroups,
    /// Looks at mounts (`statvfs`), one at a time per path.
    pub checks: Checks,
    /// Where the provisioner's [`CurrentServers`] are mounted, if anywhere.
    servers_file: Option<PathBuf>,
    /// Volumes with a call in progress: the kubelet retries calls that take long, and two
    /// calls must not mount the same path at once.
    busy: Mutex<HashSet<String>>,
}

/// Marks a volume busy until dropped.
struct Busy<'a> {
    set: &'a Mutex<HashSet<String>>,
    volume: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("not poisoned").remove(&self.volume);
    }
}

/// A volume's mount source, validated: nothing from the PV reaches `mount` unchecked.
struct Source {
    volume: String,
    servers: Vec<String>,
}

impl Source {
    fn from_context(volume_id: &str, context: &HashMap<String, String>) -> Result<Source, Error> {
        let volume = context.get(ATTR_VOLUME).map_or(volume_id, String::as_str);
        if !is_volume_name(volume) {
            return Err(Error::InvalidArgument(format!(
                "volume attribute {ATTR_VOLUME:?}: {volume:?} is not a gluster volume name"
            )));
        }
        let servers: Vec<String> = context
            .get(ATTR_SERVERS)
            .map(|s| s.split(',').map(str::trim).map(String::from).collect())
            .unwrap_or_default();
        if servers.is_empty() || servers.iter().any(|s| !is_server(s)) {
            return Err(Error::InvalidArgument(format!(
                "volume attribute {ATTR_SERVERS:?} must list server addresses, got {:?}",
                context.get(ATTR_SERVERS)
            )));
        }
        Ok(Source {
            volume: volume.into(),
            servers,
        })
    }

    /// Mounted from the volume's `current` servers first (bricks move, a PV's list stays as it
    /// was made), then from those the PV lists that are not among them. Each of `current`
    /// passes the same check as the PV's: an address that is not one is left out.
    fn following(mut self, current: Vec<String>) -> Source {
        let mut servers: Vec<String> = Vec::new();
        for server in current.into_iter().chain(std::mem::take(&mut self.servers)) {
            if !is_server(&server) {
                tracing::warn!(volume = self.volume, server = ?server, "servers file: not a server address; left out");
            } else if !servers.contains(&server) {
                servers.push(server);
            }
        }
        self.servers = servers;
        self
    }
}

/// The servers `file` gives `volume`; none when it has none, or is absent or unreadable (the
/// PV's servers then, as without it).
fn current_servers(file: &Path, volume: &str) -> Vec<String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        // Nothing moved yet, or no provisioner writes it (a CSI-only node plugin).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "servers file unreadable: mounting from the PV's servers");
            return Vec::new();
        }
    };
    match serde_json::from_str::<CurrentServers>(&text) {
        Ok(mut current) => current.volumes.remove(volume).unwrap_or_default(),
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "servers file unparsable: mounting from the PV's servers");
            Vec::new()
        }
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    Ok(value)
}

/// What a mount capability asks for.
struct Capability {
    read_only: bool,
    /// The PV's `mountOptions`, added to the FUSE mount's options.
    flags: Vec<String>,
}

/// A mount capability, checked: a block capability is refused (these are file volumes), and so
/// is a mount flag that could smuggle in another option.
fn capability(capability: Option<&VolumeCapability>) -> Result<Capability, Error> {
    let invalid = |m: &str| Error::InvalidArgument(m.into());
    let capability = capability.ok_or_else(|| invalid("volume_capability is required"))?;
    let flags = match &capability.access_type {
        Some(AccessType::Mount(MountVolume { mount_flags, .. })) => mount_flags.clone(),
        Some(AccessType::Block(_)) => {
            return Err(invalid(
                "block access is not supported: GlusterFS volumes are file systems",
            ));
        }
        None => return Err(invalid("volume_capability.access_type is required")),
    };
    if let Some(bad) = flags.iter().find(|f| {
        f.is_empty()
            || !f
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='))
    }) {
        return Err(Error::InvalidArgument(format!(
            "mount option {bad:?} is not allowed"
        )));
    }
    let mode = capability
        .access_mode
        .as_ref()
        .map(|m| m.mode())
        .ok_or_else(|| invalid("volume_capability.access_mode is required"))?;
    if mode == Mode::Unknown {
        return Err(invalid("volume_capability.access_mode is UNKNOWN"));
    }
    Ok(Capability {
        read_only: matches!(mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly),
        flags,
    })
}

fn create_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::Io {
        what: format!("creating {}", path.display()),
        source,
    })
}

/// Removes an emptied mount point; one already gone is fine.
fn remove_dir(path: &Path) -> Result<(), Error> {
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: format!("removing {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

impl NodeService {
    pub fn new(
        node_id: String,
        log_dir: PathBuf,
        fuse_cgroups: FuseCgroups,
        checks: Checks,
        servers_file: Option<PathBuf>,
    ) -> Self {
        Self {
            node_id,
            log_dir,
            fuse_cgroups,
            checks,
            servers_file,
            busy: Mutex::default(),
        }
    }

    /// The volume's mount source, its servers as they are now: the servers file is read at
    /// each call (it is small), so a volume moved since the PV was made mounts all the same.
    fn source(&self, volume_id: &str, context: &HashMap<String, String>) -> Result<Source, Error> {
        let source = Source::from_context(volume_id, context)?;
        let current = match &self.servers_file {
            Some(file) => current_servers(file, &source.volume),
            None => Vec::new(),
        };
        Ok(source.following(current))
    }

    fn busy(&self, volume: &str) -> Result<Busy<'_>, Error> {
        if !self
            .busy
            .lock()
            .expect("not poisoned")
            .insert(volume.into())
        {
            return Err(Error::Busy(volume.into()));
        }
        Ok(Busy {
            set: &self.busy,
            volume: volume.into(),
        })
    }

    /// A live FUSE mount of `source` at `staging`: kept if there is one (a restarted plugin
    /// adopts it), replaced if its client died, made otherwise.
    async fn ensure_staged(
        &self,
        staging: &Path,
        source: &Source,
        capability: &Capability,
    ) -> Result<(), Error> {
        if let Some(entry) = mounts::mounted_at(staging)?
            && self.answers_or_unmounted(staging).await?
        {
            if entry.fs_type == FUSE_TYPE {
                return Ok(());
            }
            return Err(Error::Mount(format!(
                "{} is already a {} mount of {}",
                staging.display(),
                entry.fs_type,
                entry.source
            )));
        }
        create_dir(staging)?;
        let log = self.log_dir.join(format!("{}.log", source.volume));
        let mut options = format!("log-file={}", log.display());
        // mount.glusterfs refuses a backup list that repeats the primary.
        if source.servers.len() > 1 {
            options.push_str(",backup-volfile-servers=");
            options.push_str(&source.servers[1..].join(":"));
        }
        if capability.read_only {
            options.push_str(",ro");
        }
        for flag in &capability.flags {
            options.push(',');
            options.push_str(flag);
        }
        let args = [
            "-t".to_string(),
            "glusterfs".into(),
            "-o".into(),
            options,
            format!("{}:/{}", source.servers[0], source.volume),
            staging.display().to_string(),
        ];
        let ran = fuse::run_mount(&args, &self.fuse_cgroups).await;
        // mount.glusterfs can exit 0 without a mount: only the mount table says. A failed exit
        // is a failure even with a mount there: a client that found no volfile on the first
        // server stays mounted while it asks the backups, and dies once they refuse too.
        if ran.is_ok() && mounts::mounted_at(staging)?.is_some_and(|m| m.fs_type == FUSE_TYPE) {
            match self.checks.health(staging).await {
                Health::Alive(_) => {
                    tracing::info!(volume = source.volume, staging = %staging.display(), "staged");
                    return Ok(());
                }
                // Left mounted: the next call looks again, and replaces it once hung.
                health @ Health::Unknown(_) => {
                    return Err(Error::Unavailable(format!(
                        "volume {} is mounted at {}, but {health}",
                        source.volume,
                        staging.display()
                    )));
                }
                Health::Dead(_) => {}
            }
        }
        mounts::unmount_all(staging, &self.checks).await.ok();
        let why = match ran {
            Err(e) => e.to_string(),
            Ok(()) => "mount.glusterfs exited 0 but nothing is mounted".into(),
        };
        Err(Error::Mount(format!(
            "mounting volume {} from {}: {why}{}",
            source.volume,
            source.servers.join(","),
            log_errors(&log)
        )))
    }

    /// Whether the mount at `path` answers. One whose client is gone, or hung for longer than
    /// a live client waits for a brick, is unmounted (false); one that may still be waiting is
    /// left alone, and the call fails for the kubelet to retry.
    async fn answers_or_unmounted(&self, path: &Path) -> Result<bool, Error> {
        let health = self.checks.health(path).await;
        if let Health::Alive(_) = health {
            return Ok(true);
        }
        if !self.checks.replaceable(&health) {
            return Err(Error::Unavailable(format!(
                "{}: {health}; it is replaced after {} s without one",
                path.display(),
                self.checks.hung().as_secs()
            )));
        }
        tracing::warn!(path = %path.display(), %health, "replacing a mount whose client is gone or hung");
        mounts::unmount_all(path, &self.checks).await?;
        Ok(false)
    }
}

/// The last error lines of a FUSE client log, for the event the kubelet reports.
fn log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("] E [")).collect();
    match errors.len() {
        0 => String::new(),
        n => format!(
            "; {}: {}",
            log.display(),
            errors[n.saturating_sub(3)..].join(" | ")
        ),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = request.into_inner();
        let volume_id = required(&r.volume_id, "volume_id")?;
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let capability = capability(r.volume_capability.as_ref())?;
        let source = self.source(volume_id, &r.volume_context)?;
        let _busy = self.busy(volume_id)?;
        self.ensure_staged(&staging, &source, &capability).await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        let volume_id = required(&r.volume_id, "volume_id")?;
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let _busy = self.busy(volume_id)?;
        mounts::unmount_all(&staging, &self.checks).await?;
        remove_dir(&staging)?;
        tracing::info!(volume_id, staging = %staging.display(), "unstaged");
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let volume_id = required(&r.volume_id, "volume_id")?;
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let target = PathBuf::from(required(&r.target_path, "target_path")?);
        let capability = capability(r.volume_capability.as_ref())?;
        let source = self.source(volume_id, &r.volume_context)?;
        let _busy = self.busy(volume_id)?;
        // The kubelet stages once per node; a stage whose client died since is made again here.
        self.ensure_staged(&staging, &source, &capability).await?;
        if mounts::mounted_at(&target)?.is_some() && self.answers_or_unmounted(&target).await? {
            return Ok(Response::new(NodePublishVolumeResponse {}));
        }
        create_dir(&target)?;
        mounts::bind_mount(&staging, &target, r.readonly || capability.read_only)?;
        tracing::info!(volume_id, target = %target.display(), readonly = r.readonly, "published");
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let volume_id = required(&r.volume_id, "volume_id")?;
        let target = PathBuf::from(required(&r.target_path, "target_path")?);
        let _busy = self.busy(volume_id)?;
        mounts::unmount_all(&target, &self.checks).await?;
        remove_dir(&target)?;
        tracing::info!(volume_id, target = %target.display(), "unpublished");
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        let path = PathBuf::from(required(&r.volume_path, "volume_path")?);
        if mounts::mounted_at(&path)?.is_none() {
            return Err(Error::NotFound(format!(
                "volume {} is not mounted at {}",
                r.volume_id,
                path.display()
            ))
            .into());
        }
        // A mount without an answer yet is reported, not failed: an error would tell the
        // kubelet nothing more, and a second look would only hold another thread.
        let health = self.checks.health(&path).await;
        let usage = match &health {
            Health::Alive(u) => vec![
                VolumeUsage {
                    total: u.bytes_total,
                    available: u.bytes_available,
                    used: u.bytes_used,
                    unit: Unit::Bytes.into(),
                },
                VolumeUsage {
                    total: u.inodes_total,
                    available: u.inodes_available,
                    used: u.inodes_used,
                    unit: Unit::Inodes.into(),
                },
            ],
            _ => vec![],
        };
        let response = NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(VolumeCondition {
                abnormal: !matches!(&health, Health::Alive(u) if u.unreachable.is_empty()),
                message: health.to_string(),
            }),
        };
        Ok(Response::new(response))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        // The provisioner grows the volume; a FUSE mount sees the new size by itself.
        Err(Status::unimplemented(
            "a FUSE mount needs no node expansion",
        ))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [
            RpcType::StageUnstageVolume,
            RpcType::GetVolumeStats,
            RpcType::VolumeCondition,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability {
            r#type: Some(CapabilityType::Rpc(Rpc { r#type: t.into() })),
        })
        .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::csi::liveness::tests::hanging_checks;

    #[tokio::test(start_paused = true)]
    async fn stats_of_a_hung_mount_say_the_check_is_running_and_start_no_second_one() {
        let (checks, calls, _client) = hanging_checks();
        let fuse = FuseCgroups {
            procs: vec![],
            join_failures: prometheus::IntCounter::new("failures", "unused").unwrap(),
        };
        let node = NodeService::new("n1".into(), "/tmp".into(), fuse, checks, None);
        // Any mount point will do: the looks at it hang whatever it is.
        let request = || {
            Request::new(NodeGetVolumeStatsRequest {
                volume_id: "vol_1".into(),
                volume_path: "/proc".into(),
                ..Default::default()
            })
        };
        let answers =
            futures::future::join_all((0..4).map(|_| node.node_get_volume_stats(request()))).await;
        for answer in answers {
            let stats = answer.expect("an answer, not an error").into_inner();
            assert!(stats.usage.is_empty());
            let condition = stats.volume_condition.expect("a condition");
            assert!(condition.abnormal);
            assert!(
                condition
                    .message
                    .contains("check of this mount has been running for 10 s"),
                "{}",
                condition.message
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    fn listing(servers: &str) -> HashMap<String, String> {
        HashMap::from([(ATTR_SERVERS.to_string(), servers.to_string())])
    }

    #[test]
    fn current_servers_come_first_then_the_pvs_not_among_them() {
        let source = Source::from_context("vol_1", &listing("10.0.0.1, 10.0.0.2,10.0.0.3"))
            .unwrap()
            .following(vec![
                "10.0.0.4".into(),
                "10.0.0.2".into(),
                "10.0.0.4".into(),
            ]);
        assert_eq!(
            source.servers,
            ["10.0.0.4", "10.0.0.2", "10.0.0.1", "10.0.0.3"]
        );
        // Without an entry: the PV's, as they were.
        let source = Source::from_context("vol_1", &listing("10.0.0.1,10.0.0.2"))
            .unwrap()
            .following(vec![]);
        assert_eq!(source.servers, ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn hostile_addresses_in_the_file_are_left_out() {
        let hostile = ["a,acl", "x:y", "$(id)", "fe80::1", "", "-o", "10.0.0.9 ro"];
        let mut current: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
        current.push("gluster-4.example.com".into());
        let source = Source::from_context("vol_1", &listing("10.0.0.1"))
            .unwrap()
            .following(current);
        assert_eq!(source.servers, ["gluster-4.example.com", "10.0.0.1"]);
    }

    #[test]
    fn the_file_is_read_at_each_call_and_an_absent_or_bad_one_is_no_entry() {
        let dir = std::env::temp_dir().join(format!("servers-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("servers.json");
        assert!(current_servers(&file, "vol_1").is_empty());
        std::fs::write(&file, "{not json").unwrap();
        assert!(current_servers(&file, "vol_1").is_empty());
        let doc = r#"{"volumes": {"vol_1": ["10.0.0.4", "10.0.0.5"], "vol_2": ["10.0.0.6"]}}"#;
        std::fs::write(&file, doc).unwrap();
        assert_eq!(current_servers(&file, "vol_1"), ["10.0.0.4", "10.0.0.5"]);
        assert!(current_servers(&file, "vol_3").is_empty());

        let fuse = FuseCgroups {
            procs: vec![],
            join_failures: prometheus::IntCounter::new("failures", "unused").unwrap(),
        };
        let (checks, _, _client) = hanging_checks();
        let node = NodeService::new("n1".into(), "/tmp".into(), fuse, checks, Some(file));
        let source = node.source("vol_1", &listing("10.0.0.1")).unwrap();
        assert_eq!(source.servers, ["10.0.0.4", "10.0.0.5", "10.0.0.1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
