//! Typed views of `gluster ... --xml` output. The CLI's text output changes between releases;
//! its XML (`<cliOutput>`) is the stable interface.

use serde::Deserialize;

use crate::config::AVERAGE_FILE_KIB_DEFAULT;
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
struct CliOutput {
    #[serde(rename = "opRet")]
    op_ret: i32,
    #[serde(rename = "opErrstr", default)]
    op_errstr: Option<String>,
    #[serde(rename = "peerStatus", default)]
    peer_status: Option<PeerStatus>,
    #[serde(rename = "volInfo", default)]
    vol_info: Option<VolInfo>,
    #[serde(rename = "volList", default)]
    vol_list: Option<VolList>,
    #[serde(rename = "volStatus", default)]
    vol_status: Option<VolStatus>,
    #[serde(rename = "healInfo", default)]
    heal_info: Option<HealInfo>,
    #[serde(rename = "volGetopts", default)]
    vol_getopts: Option<VolGetopts>,
}

#[derive(Debug, Default, Deserialize)]
struct VolGetopts {
    #[serde(rename = "Opt", default)]
    opts: Vec<Opt>,
}

#[derive(Debug, Deserialize)]
struct Opt {
    #[serde(rename = "Option")]
    name: String,
    #[serde(rename = "Value", default)]
    value: String,
}

#[derive(Debug, Default, Deserialize)]
struct VolStatus {
    #[serde(default)]
    volumes: StatusVolumes,
}

#[derive(Debug, Default, Deserialize)]
struct StatusVolumes {
    #[serde(rename = "volume", default)]
    volumes: Vec<StatusVolume>,
}

#[derive(Debug, Default, Deserialize)]
struct StatusVolume {
    #[serde(rename = "node", default)]
    processes: Vec<BrickProcess>,
}

/// A process `volume status` lists: a brick (`path` is its directory) or a daemon such as the
/// self-heal daemon (`path` is a host).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BrickProcess {
    pub hostname: String,
    pub path: String,
    /// 1 when the process is running.
    pub status: u8,
    /// -1 when it is not.
    pub pid: i64,
}

impl BrickProcess {
    /// `host:/path`, as `volume info` names bricks.
    pub fn brick(&self) -> Option<String> {
        self.path
            .starts_with('/')
            .then(|| format!("{}:{}", self.hostname, self.path))
    }
}

#[derive(Debug, Default, Deserialize)]
struct HealInfo {
    #[serde(default)]
    bricks: HealBricks,
}

#[derive(Debug, Default, Deserialize)]
struct HealBricks {
    #[serde(rename = "brick", default)]
    bricks: Vec<HealBrick>,
}

/// One brick's part of `volume heal V info summary`: the entries it holds that its copies
/// lack. A brick that is down has no counts.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct HealBrick {
    pub name: String,
    #[serde(rename = "numberOfEntriesInHealPending")]
    pub pending: Option<u64>,
    #[serde(rename = "numberOfEntriesInSplitBrain")]
    pub split_brain: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct VolList {
    #[serde(rename = "volume", default)]
    names: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PeerStatus {
    #[serde(rename = "peer", default)]
    peers: Vec<Peer>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Peer {
    pub uuid: String,
    /// The name it was first probed by.
    pub hostname: String,
    /// Every name and address the pool knows it by (a later probe by another name adds one).
    #[serde(default)]
    pub hostnames: Hostnames,
    /// 1 when glusterd on this node holds a live connection to the peer.
    pub connected: u8,
    #[serde(rename = "stateStr")]
    pub state: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Hostnames {
    #[serde(rename = "hostname", default)]
    pub names: Vec<String>,
}

impl Peer {
    pub fn is_connected(&self) -> bool {
        self.connected == 1
    }

    /// Its first name and all the others.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hostname.as_str())
            .chain(self.hostnames.names.iter().map(String::as_str))
    }
}

#[derive(Debug, Default, Deserialize)]
struct VolInfo {
    #[serde(default)]
    volumes: Volumes,
}

#[derive(Debug, Default, Deserialize)]
struct Volumes {
    #[serde(rename = "volume", default)]
    volumes: Vec<Volume>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Volume {
    pub name: String,
    pub id: String,
    /// `Created`, `Started` or `Stopped`.
    #[serde(rename = "statusStr")]
    pub status: String,
    #[serde(rename = "typeStr")]
    pub kind: String,
    #[serde(rename = "brickCount")]
    pub brick_count: u32,
    #[serde(rename = "replicaCount", default)]
    pub replica_count: u32,
    #[serde(rename = "disperseCount", default)]
    pub disperse_count: u32,
    #[serde(rename = "redundancyCount", default)]
    pub redundancy_count: u32,
    #[serde(default)]
    pub bricks: Bricks,
    #[serde(default)]
    pub options: Options,
}

#[cfg(test)]
impl Volume {
    /// A started replica volume `vol_x` of `bricks` (`host:/path`, whether the arbiter) with
    /// `options`, as `volume info` would give it: the tests' volume.
    pub fn example(bricks: &[(String, bool)], options: Vec<(String, String)>) -> Volume {
        let count = bricks.len() as u32;
        Volume {
            name: "vol_x".into(),
            id: "id".into(),
            status: "Started".into(),
            kind: "Replicate".into(),
            brick_count: count,
            replica_count: count,
            disperse_count: 0,
            redundancy_count: 0,
            bricks: Bricks {
                bricks: bricks
                    .iter()
                    .map(|(name, arbiter)| Brick {
                        name: name.clone(),
                        is_arbiter: (*arbiter).into(),
                    })
                    .collect(),
            },
            options: Options {
                options: options
                    .into_iter()
                    .map(|(name, value)| VolumeOption { name, value })
                    .collect(),
            },
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Bricks {
    #[serde(rename = "brick", default)]
    pub bricks: Vec<Brick>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Brick {
    /// `host:/path`.
    pub name: String,
    #[serde(rename = "isArbiter", default)]
    pub is_arbiter: u8,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Options {
    #[serde(rename = "option", default)]
    pub options: Vec<VolumeOption>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VolumeOption {
    pub name: String,
    pub value: String,
}

impl Volume {
    pub fn is_started(&self) -> bool {
        self.status == "Started"
    }

    /// Over how many bricks the data is spread: a disperse volume's data bricks, else one.
    pub fn data_bricks(&self) -> u32 {
        match self.disperse_count {
            0 => 1,
            n => n.saturating_sub(self.redundancy_count).max(1),
        }
    }

    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .options
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.value.as_str())
    }

    /// Whether the brick `host:/path` is an arbiter.
    pub fn is_arbiter(&self, brick: &str) -> bool {
        let bricks = &self.bricks.bricks;
        bricks.iter().any(|b| b.name == brick && b.is_arbiter == 1)
    }

    /// The average file size (KiB) an arbiter volume's arbiter brick is sized for: its own
    /// option, as Heketi set it, else Heketi's default.
    pub fn average_file_kib(&self) -> u32 {
        let option = self.option("user.heketi.average-file-size");
        option
            .and_then(|v| v.parse().ok())
            .unwrap_or(AVERAGE_FILE_KIB_DEFAULT)
    }

    /// Bricks as `(host, path)`.
    pub fn bricks(&self) -> impl Iterator<Item = (&str, &str)> {
        self.bricks
            .bricks
            .iter()
            .filter_map(|b| b.name.split_once(':'))
    }
}

fn parse(command: &str, xml: &str) -> Result<CliOutput> {
    let out: CliOutput = quick_xml::de::from_str(xml).map_err(|source| Error::GlusterXml {
        command: command.into(),
        source,
    })?;
    if out.op_ret != 0 {
        return Err(Error::Gluster {
            command: command.into(),
            message: out
                .op_errstr
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("opRet {}", out.op_ret)),
        });
    }
    Ok(out)
}

/// Checks the result of a command whose XML carries nothing but its status.
pub fn parse_status(command: &str, xml: &str) -> Result<()> {
    parse(command, xml).map(drop)
}

/// `gluster peer status --xml`: the node's view of the other peers.
pub fn parse_peer_status(xml: &str) -> Result<Vec<Peer>> {
    Ok(parse("peer status", xml)?
        .peer_status
        .unwrap_or_default()
        .peers)
}

/// `gluster volume info [NAME] --xml`.
pub fn parse_volume_info(xml: &str) -> Result<Vec<Volume>> {
    Ok(parse("volume info", xml)?
        .vol_info
        .unwrap_or_default()
        .volumes
        .volumes)
}

/// `gluster volume list --xml`: the names of all volumes.
/// The processes of the volume `volume status V` asked about.
pub fn parse_volume_status(xml: &str) -> Result<Vec<BrickProcess>> {
    let volumes = parse("volume status", xml)?.vol_status.unwrap_or_default();
    Ok(volumes
        .volumes
        .volumes
        .into_iter()
        .flat_map(|v| v.processes)
        .collect())
}

pub fn parse_heal_summary(xml: &str) -> Result<Vec<HealBrick>> {
    let heal = parse("volume heal info summary", xml)?.heal_info;
    Ok(heal.unwrap_or_default().bricks.bricks)
}

pub fn parse_volume_list(xml: &str) -> Result<Vec<String>> {
    Ok(parse("volume list", xml)?
        .vol_list
        .unwrap_or_default()
        .names)
}

/// The value `volume get VOLUME|all OPTION` shows for `option`, without gluster's
/// ` (DEFAULT)` mark.
pub fn parse_volume_get(xml: &str, option: &str) -> Result<Option<String>> {
    let opts = parse("volume get", xml)?
        .vol_getopts
        .unwrap_or_default()
        .opts;
    Ok(opts.into_iter().find(|o| o.name == option).map(|o| {
        let value = o.value.trim();
        value
            .strip_suffix(" (DEFAULT)")
            .unwrap_or(value)
            .to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_get_values_lose_the_default_mark() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <volGetopts>
    <count>1</count>
    <Opt>
      <Option>cluster.brick-multiplex</Option>
      <Value>disable (DEFAULT)</Value>
    </Opt>
  </volGetopts>
</cliOutput>"#;
        let value = parse_volume_get(xml, "cluster.brick-multiplex").unwrap();
        assert_eq!(value.as_deref(), Some("disable"));
        assert_eq!(parse_volume_get(xml, "other").unwrap(), None);
    }

    // Shapes as printed by glusterfs 10.3.
    const PEERS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <peerStatus>
    <peer>
      <uuid>d046d2f5-0150-44a2-bfa3-3b34b491206a</uuid>
      <hostname>10.213.7.11</hostname>
      <hostnames>
        <hostname>10.213.7.11</hostname>
      </hostnames>
      <connected>1</connected>
      <state>3</state>
      <stateStr>Peer in Cluster</stateStr>
    </peer>
    <peer>
      <uuid>09b1479b-a10c-44ca-927d-0d0bcdd6c3d3</uuid>
      <hostname>10.213.7.13</hostname>
      <hostnames>
        <hostname>10.213.7.13</hostname>
      </hostnames>
      <connected>0</connected>
      <state>3</state>
      <stateStr>Peer in Cluster</stateStr>
    </peer>
  </peerStatus>
</cliOutput>"#;

    #[test]
    fn peers() {
        let peers = parse_peer_status(PEERS).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].hostname, "10.213.7.11");
        assert!(peers[0].is_connected());
        assert!(!peers[1].is_connected());
        assert_eq!(peers[1].state, "Peer in Cluster");
        assert_eq!(peers[0].hostnames.names, ["10.213.7.11"]);
    }

    #[test]
    fn peer_known_by_several_names() {
        // Probed by its DNS name, then by its storage address: both are listed.
        let xml = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <peerStatus>
    <peer>
      <uuid>34486b83-52b1-4b8e-9f0e-5b0b0c3e7a21</uuid>
      <hostname>gluster2.example.com</hostname>
      <hostnames>
        <hostname>gluster2.example.com</hostname>
        <hostname>10.213.7.12</hostname>
      </hostnames>
      <connected>1</connected>
      <state>3</state>
      <stateStr>Peer in Cluster</stateStr>
    </peer>
  </peerStatus>
</cliOutput>"#;
        let peers = parse_peer_status(xml).unwrap();
        assert_eq!(peers[0].hostname, "gluster2.example.com");
        let names: Vec<&str> = peers[0].names().collect();
        assert_eq!(
            names,
            [
                "gluster2.example.com",
                "gluster2.example.com",
                "10.213.7.12"
            ]
        );
    }

    #[test]
    fn volume_status_and_heal_summary_with_a_brick_down() {
        // GlusterFS 10.3, a replica 3 volume whose third brick process was killed.
        let status = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/><volStatus><volumes><volume>
  <volName>hv</volName><nodeCount>4</nodeCount>
  <node><hostname>10.213.7.11</hostname><path>/srv/gluster/brick1/hv/brick</path><peerid>8785</peerid><status>1</status><port>56896</port><ports><tcp>56896</tcp><rdma>N/A</rdma></ports><pid>30143</pid></node>
  <node><hostname>10.213.7.13</hostname><path>/srv/gluster/brick1/hv/brick</path><peerid>05c3</peerid><status>0</status><port>N/A</port><ports><tcp>N/A</tcp><rdma>N/A</rdma></ports><pid>-1</pid></node>
  <node><hostname>Self-heal Daemon</hostname><path>localhost</path><peerid>8785</peerid><status>1</status><port>N/A</port><ports><tcp>N/A</tcp><rdma>N/A</rdma></ports><pid>30160</pid></node>
  <tasks/></volume></volumes></volStatus></cliOutput>"#;
        let processes = parse_volume_status(status).unwrap();
        let bricks: Vec<(Option<String>, u8)> =
            processes.iter().map(|p| (p.brick(), p.status)).collect();
        assert_eq!(
            bricks,
            [
                (Some("10.213.7.11:/srv/gluster/brick1/hv/brick".into()), 1),
                (Some("10.213.7.13:/srv/gluster/brick1/hv/brick".into()), 0),
                (None, 1)
            ]
        );
        let heal = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><healInfo><bricks>
  <brick hostUuid="8785"><name>10.213.7.11:/srv/gluster/brick1/hv/brick</name><status>Connected</status><totalNumberOfEntries>21</totalNumberOfEntries><numberOfEntriesInHealPending>21</numberOfEntriesInHealPending><numberOfEntriesInSplitBrain>0</numberOfEntriesInSplitBrain><numberOfEntriesPossiblyHealing>0</numberOfEntriesPossiblyHealing></brick>
  <brick hostUuid="05c3"><name>10.213.7.13:/srv/gluster/brick1/hv/brick</name><status>Failed to process entries completely. (Transport endpoint is not connected)totalNumberOfEntries0</status></brick>
</bricks></healInfo><opRet>0</opRet><opErrno>0</opErrno><opErrstr/></cliOutput>"#;
        let bricks = parse_heal_summary(heal).unwrap();
        assert_eq!(
            (bricks[0].pending, bricks[0].split_brain, bricks[1].pending),
            (Some(21), Some(0), None)
        );
    }

    #[test]
    fn failure_carries_gluster_message() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><opRet>-1</opRet><opErrno>30800</opErrno><opErrstr>Volume nope does not exist</opErrstr></cliOutput>"#;
        let err = parse_volume_info(xml).unwrap_err();
        assert_eq!(
            err.to_string(),
            "gluster `volume info` failed: Volume nope does not exist"
        );
        let err = parse_status("volume stop", "not xml at all").unwrap_err();
        assert!(matches!(err, Error::GlusterXml { .. }), "{err:?}");
    }

    #[test]
    fn volume_info() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <volInfo>
    <volumes>
      <volume>
        <name>vol_abc</name>
        <id>9e1d2a43-6c4f-4d2b-a0a5-2d9bcb6f7e10</id>
        <status>1</status>
        <statusStr>Started</statusStr>
        <snapshotCount>0</snapshotCount>
        <brickCount>3</brickCount>
        <distCount>1</distCount>
        <replicaCount>3</replicaCount>
        <type>2</type>
        <typeStr>Replicate</typeStr>
        <transport>0</transport>
        <bricks>
          <brick uuid="d046d2f5">10.213.7.11:/srv/gluster/brick1/vol_abc/brick<name>10.213.7.11:/srv/gluster/brick1/vol_abc/brick</name><hostUuid>d046d2f5</hostUuid><isArbiter>0</isArbiter></brick>
          <brick uuid="34486b83">10.213.7.12:/srv/gluster/brick2/vol_abc/brick<name>10.213.7.12:/srv/gluster/brick2/vol_abc/brick</name><hostUuid>34486b83</hostUuid><isArbiter>0</isArbiter></brick>
          <brick uuid="5a6b7c8d">10.213.7.13:/srv/gluster/brick1/vol_abc/brick<name>10.213.7.13:/srv/gluster/brick1/vol_abc/brick</name><hostUuid>5a6b7c8d</hostUuid><isArbiter>1</isArbiter></brick>
        </bricks>
        <optCount>2</optCount>
        <options>
          <option><name>storage.owner-gid</name><value>40000</value></option>
          <option><name>features.quota</name><value>on</value></option>
        </options>
      </volume>
      <count>1</count>
    </volumes>
  </volInfo>
</cliOutput>"#;
        let vols = parse_volume_info(xml).unwrap();
        assert_eq!(vols.len(), 1);
        let v = &vols[0];
        assert_eq!(v.name, "vol_abc");
        assert!(v.is_started());
        assert_eq!(v.kind, "Replicate");
        assert_eq!(v.brick_count, 3);
        assert_eq!(v.option("storage.owner-gid"), Some("40000"));
        assert_eq!(v.option("nope"), None);
        let bricks: Vec<_> = v.bricks().collect();
        assert_eq!(
            bricks,
            [
                ("10.213.7.11", "/srv/gluster/brick1/vol_abc/brick"),
                ("10.213.7.12", "/srv/gluster/brick2/vol_abc/brick"),
                ("10.213.7.13", "/srv/gluster/brick1/vol_abc/brick")
            ]
        );
        assert!(v.is_arbiter("10.213.7.13:/srv/gluster/brick1/vol_abc/brick"));
        assert!(!v.is_arbiter("10.213.7.11:/srv/gluster/brick1/vol_abc/brick"));
        assert_eq!(v.average_file_kib(), 64, "Heketi's default");
    }

    #[test]
    fn volume_list() {
        let list = |body: &str| {
            format!(
                "<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/>\
                 <volList>{body}</volList></cliOutput>"
            )
        };
        let two = list("<count>2</count><volume>tmpv</volume><volume>tmpw</volume>");
        assert_eq!(parse_volume_list(&two).unwrap(), ["tmpv", "tmpw"]);
        assert!(
            parse_volume_list(&list("<count>0</count>"))
                .unwrap()
                .is_empty()
        );
    }
}
