//! Mounts follow the pool: a CSI PV's `servers` are frozen when it is made and a `glusterfs`
//! PV's Endpoints were written then, but `evacuate` may move every brick of its volume to other
//! nodes, and the old ones be retired. From the health sweep's looks (each volume's bricks, and
//! that it records the PV's claim) the leader keeps:
//!
//! - a ConfigMap in the node plugin's namespace (`config::csi::CurrentServers`) naming, for each
//!   CSI PV whose volume's brick hosts are not the servers it lists, the volume's servers now.
//!   The node plugin reads nothing from the API server: the kubelet brings it the ConfigMap,
//!   and only the provisioner and admins write it, never a namespace user. Provisioners of
//!   other names share it (the node plugin mounts one): each decides the entries of its own
//!   PVs' volumes and keeps the others';
//! - the addresses of a `glusterfs` PV's Endpoints (those made for its claim only).
//!
//! A failed write is a warning, tried again at the next tick; the sweep goes on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;

use super::Context;
use super::endpoints::{AddressRepair, FIELD_MANAGER};
use crate::Result;
use crate::config::csi::{CurrentServers, SERVERS_KEY, is_server};
use crate::gluster::heal::VolumeHealth;
use crate::gluster::naming;
use crate::k8s::cached::CachedPv;
use crate::k8s::objects::{self, Owner};

/// Endpoints looked at at once (each a GET, and a write when they list others).
const AT_ONCE: usize = 8;

/// What the looks found, and which volumes are this provisioner's to list.
#[derive(Default)]
pub(super) struct Servers {
    /// Per watched PV: its volume's brick hosts as the last look found them; `None` when that
    /// look found no volume recording the PV's claim.
    seen: HashMap<String, Option<Vec<String>>>,
    /// PVs whose Endpoints are to be checked: after each look, until a check went through.
    endpoints_due: HashSet<String>,
    /// The volumes of the CSI PVs watched when the ConfigMap was last found right: one no
    /// longer watched (its PV gone, or not Bound) drops out.
    mine: HashSet<String>,
}

impl Servers {
    /// A look at the volume of `pv`: `health` when the volume records the PV's claim, `None`
    /// when it does not or is gone.
    pub(super) fn saw(&mut self, pv: &str, health: Option<&VolumeHealth>) {
        self.seen.insert(pv.to_string(), health.map(brick_hosts));
        self.endpoints_due.insert(pv.to_string());
    }

    /// After the looks: the Endpoints and the ConfigMap of the `watched` PVs (by name) follow
    /// their volumes' servers; PVs no longer watched drop out.
    pub(super) async fn publish(&mut self, ctx: &Context, watched: &HashSet<String>) {
        self.seen.retain(|pv, _| watched.contains(pv));
        self.endpoints_due.retain(|pv| watched.contains(pv));
        let pvs: Vec<Arc<CachedPv>> = watched
            .iter()
            .filter_map(|name| ctx.volumes.get(&ObjectRef::new(name)))
            .collect();
        self.follow_endpoints(ctx, &pvs).await;
        self.keep_config_map(ctx, &pvs).await;
    }

    async fn follow_endpoints(&mut self, ctx: &Context, pvs: &[Arc<CachedPv>]) {
        let due = pvs.iter().filter_map(|pv| {
            let name = pv.name_any();
            let hosts = self.seen.get(&name)?;
            self.endpoints_due
                .contains(&name)
                .then_some((pv, name, hosts))
        });
        let checked: Vec<String> = futures::stream::iter(due)
            .map(|(pv, name, hosts)| async move {
                let Some(hosts) = hosts else { return Some(name) };
                match follow(ctx, pv, hosts).await {
                    Ok(()) => Some(name),
                    Err(error) => {
                        tracing::warn!(pv = name, %error, "cannot point the PV's Endpoints at its volume's servers");
                        None
                    }
                }
            })
            .buffer_unordered(AT_ONCE)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        for pv in checked {
            self.endpoints_due.remove(&pv);
        }
    }

    /// Read at each tick (one small GET): provisioners of other names share the ConfigMap (the
    /// node plugin mounts one), and admins may write it; their entries are kept.
    async fn keep_config_map(&mut self, ctx: &Context, pvs: &[Arc<CachedPv>]) {
        let settings = &ctx.settings;
        let (namespace, name) = (&settings.servers_namespace, &settings.servers_config_map);
        let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
        let before = match read(&api, name).await {
            Ok(before) => before,
            Err(error) => {
                tracing::warn!(namespace, name, %error, "cannot read the servers ConfigMap");
                return;
            }
        };
        let held = before.clone().unwrap_or_default();
        let driver = &settings.csi_driver;
        let csi: Vec<CsiPv> = pvs
            .iter()
            .filter_map(|pv| {
                let source = pv.spec.csi.as_ref().filter(|c| c.driver == *driver)?;
                let attributes = source.volume_attributes.as_ref();
                Some(CsiPv {
                    volume: pv.spec.gluster_volume(driver)?,
                    listed: attributes
                        .and_then(|a| a.servers.as_deref())
                        .unwrap_or_default(),
                    seen: self.seen.get(&pv.name_any()),
                })
            })
            .collect();
        let mine: HashSet<String> = csi.iter().map(|pv| pv.volume.to_string()).collect();
        let ours = content(csi, &held);
        let mut wanted = merged(ours, &held, |volume| {
            mine.contains(volume) || self.mine.contains(volume) || serves_pv_of(ctx, volume)
        });
        if before.as_ref() == Some(&wanted) {
            self.mine = mine;
            return;
        }
        drop_gone(ctx, &mut wanted, &mine).await;
        let written = async {
            ctx.fenced().await?;
            write(&api, name, &wanted).await
        };
        match written.await {
            Ok(()) => {
                let volumes: Vec<&String> = wanted.volumes.keys().collect();
                tracing::info!(
                    namespace,
                    name,
                    ?volumes,
                    "servers of moved volumes written for the node plugin"
                );
                self.mine = mine;
            }
            Err(error) => {
                tracing::warn!(namespace, name, %error, "cannot write the servers ConfigMap");
                // Those that left still drop out at the next try.
                self.mine.extend(mine);
            }
        }
    }
}

/// The hosts of the volume's bricks as gluster names them (for volumes made here, the nodes'
/// storage addresses), in brick order, each once.
fn brick_hosts(health: &VolumeHealth) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for (brick, _) in &health.bricks {
        let host = brick.split_once(':').map_or(brick.as_str(), |(h, _)| h);
        if !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
    }
    hosts
}

/// A watched CSI PV: its volume, the servers it lists (comma-separated), and what the last
/// look at its volume found (`None`: not looked at yet).
struct CsiPv<'a> {
    volume: &'a str,
    listed: &'a str,
    seen: Option<&'a Option<Vec<String>>>,
}

/// This provisioner's part of the ConfigMap: each volume whose hosts are not the servers its PV
/// lists, with its hosts. A volume not looked at yet (since the provisioner started, or its look
/// failed) keeps what `before` says of it.
fn content<'a>(
    pvs: impl IntoIterator<Item = CsiPv<'a>>,
    before: &CurrentServers,
) -> CurrentServers {
    let volumes = pvs
        .into_iter()
        .filter_map(|pv| {
            let servers = match pv.seen {
                None => before.volumes.get(pv.volume).cloned(),
                Some(None) => None,
                Some(Some(hosts)) => moved(pv.listed, hosts),
            }?;
            Some((pv.volume.to_string(), servers))
        })
        .collect::<BTreeMap<_, _>>();
    CurrentServers { volumes }
}

/// The volume's servers, when they are not those its PV lists (in whatever order); only the
/// hosts a mount option can hold (the node plugin refuses others too).
fn moved(listed: &str, hosts: &[String]) -> Option<Vec<String>> {
    let listed: HashSet<&str> = listed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let servers: Vec<String> = hosts.iter().filter(|h| is_server(h)).cloned().collect();
    let same = servers.len() == listed.len() && servers.iter().all(|s| listed.contains(&**s));
    (!same && !servers.is_empty()).then_some(servers)
}

/// `ours`, and the entries of `held` that are not `decided` here: another provisioner's (its
/// PV is not ours), an admin's. One of ours no longer watched is decided, and so drops out.
fn merged(
    mut ours: CurrentServers,
    held: &CurrentServers,
    decided: impl Fn(&str) -> bool,
) -> CurrentServers {
    for (volume, servers) in &held.volumes {
        if !decided(volume) {
            let entry = ours.volumes.entry(volume.clone());
            entry.or_insert_with(|| servers.clone());
        }
    }
    ours
}

/// The PV of a volume named after its claim's UID (whatever the prefix): `pvc-<UID>`.
fn pv_of_volume(volume: &str) -> Option<String> {
    let h = naming::uid_suffix(volume)?;
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    Some(objects::pv_name(&uid))
}

/// Whether the volume's PV is one this provisioner made (it decides that entry).
fn serves_pv_of(ctx: &Context, volume: &str) -> bool {
    let pv = pv_of_volume(volume).and_then(|pv| ctx.volumes.get(&ObjectRef::new(&pv)));
    pv.is_some_and(|pv| ctx.made_here(&pv))
}

/// Takes out the entries, not of `mine`, whose PV is gone (its provisioner was not running
/// when it went): only before a write, as each is a GET.
async fn drop_gone(ctx: &Context, wanted: &mut CurrentServers, mine: &HashSet<String>) {
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    let mut gone = Vec::new();
    for volume in wanted.volumes.keys().filter(|v| !mine.contains(*v)) {
        let Some(pv) = pv_of_volume(volume) else {
            continue;
        };
        if let Ok(None) = pvs.get_metadata_opt(&pv).await {
            gone.push(volume.clone());
        }
    }
    for volume in gone {
        wanted.volumes.remove(&volume);
    }
}

/// The ConfigMap's content: absent is empty; `None` when it holds something unparsable.
async fn read(api: &Api<ConfigMap>, name: &str) -> Result<Option<CurrentServers>> {
    let Some(map) = api.get_opt(name).await? else {
        return Ok(Some(CurrentServers::default()));
    };
    let text = map.data.as_ref().and_then(|d| d.get(SERVERS_KEY));
    Ok(match text {
        Some(text) => serde_json::from_str(text).ok(),
        None => Some(CurrentServers::default()),
    })
}

async fn write(api: &Api<ConfigMap>, name: &str, content: &CurrentServers) -> Result<()> {
    let json = serde_json::to_string_pretty(content).expect("a map of strings serializes");
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(SERVERS_KEY.to_string(), json)])),
        ..Default::default()
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(&map)).await?;
    Ok(())
}

/// Points a `glusterfs` PV's Endpoints at its volume's `hosts`: those in its claim's namespace
/// only, and only when every host is an address (Endpoints hold IPs).
async fn follow(ctx: &Context, pv: &CachedPv, hosts: &[String]) -> Result<()> {
    let (Some(source), Some(claim)) = (&pv.spec.glusterfs, &pv.spec.claim_ref) else {
        return Ok(());
    };
    let owner = Owner {
        pv: pv.metadata.name.as_deref().unwrap_or_default(),
        claim_namespace: claim.namespace.as_deref().unwrap_or_default(),
        claim_name: claim.name.as_deref().unwrap_or_default(),
        claim_uid: claim.uid.as_deref().unwrap_or_default(),
    };
    if source.endpoints_namespace.as_deref() != Some(owner.claim_namespace) {
        tracing::debug!(
            pv = owner.pv,
            "its Endpoints are not in its claim's namespace: left alone"
        );
        return Ok(());
    }
    let Ok(addresses) = hosts
        .iter()
        .map(|h| h.parse())
        .collect::<std::result::Result<Vec<IpAddr>, _>>()
    else {
        tracing::debug!(
            pv = owner.pv,
            ?hosts,
            "a brick host is not an address: Endpoints left alone"
        );
        return Ok(());
    };
    match ctx
        .follow_servers(&source.endpoints, owner, &addresses)
        .await?
    {
        AddressRepair::Write => tracing::info!(
            pv = owner.pv,
            endpoints = source.endpoints,
            ?hosts,
            "Endpoints now list the volume's servers"
        ),
        AddressRepair::NotOurs => tracing::warn!(
            pv = owner.pv,
            endpoints = source.endpoints,
            "Endpoints not made for the PV's claim: left alone, though they may not list the volume's servers"
        ),
        AddressRepair::Absent | AddressRepair::Unchanged => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn health(bricks: &[&str]) -> VolumeHealth {
        VolumeHealth {
            volume: "v".into(),
            bricks: bricks.iter().map(|b| (b.to_string(), true)).collect(),
            heal_pending: None,
            split_brain: None,
            quorum: 2,
            copies: true,
            identity: None,
        }
    }

    #[test]
    fn brick_hosts_keep_brick_order_once_each() {
        let h = health(&[
            "10.0.0.4:/b1/v/brick",
            "10.0.0.2:/b1/v/brick",
            "10.0.0.4:/b2/v/brick",
            "10.0.0.3:/b1/v/brick",
        ]);
        assert_eq!(brick_hosts(&h), ["10.0.0.4", "10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn only_volumes_moved_off_their_pvs_servers_are_listed() {
        let moved_hosts = Some(strings(&["10.0.0.4", "10.0.0.5", "10.0.0.6"]));
        let same_hosts = Some(strings(&["10.0.0.3", "10.0.0.1", "10.0.0.2"]));
        let one_moved = Some(strings(&["10.0.0.1", "10.0.0.4", "10.0.0.3"]));
        let listed = "10.0.0.1,10.0.0.2,10.0.0.3";
        let pvs = [
            CsiPv {
                volume: "vol_a",
                listed,
                seen: Some(&moved_hosts),
            },
            // The same servers in another order: nothing to tell.
            CsiPv {
                volume: "vol_b",
                listed,
                seen: Some(&same_hosts),
            },
            CsiPv {
                volume: "vol_c",
                listed,
                seen: Some(&one_moved),
            },
        ];
        let c = content(pvs, &CurrentServers::default());
        assert_eq!(
            c.volumes,
            BTreeMap::from([
                (
                    "vol_a".to_string(),
                    strings(&["10.0.0.4", "10.0.0.5", "10.0.0.6"])
                ),
                (
                    "vol_c".to_string(),
                    strings(&["10.0.0.1", "10.0.0.4", "10.0.0.3"])
                ),
            ])
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["volumes"]["vol_a"][0], "10.0.0.4");
    }

    #[test]
    fn unlooked_volumes_keep_their_entry_and_foreign_or_moved_back_ones_drop_out() {
        let before = CurrentServers {
            volumes: BTreeMap::from([
                ("vol_kept".to_string(), strings(&["10.0.0.4"])),
                ("vol_foreign".to_string(), strings(&["10.0.0.4"])),
                ("vol_back".to_string(), strings(&["10.0.0.4"])),
            ]),
        };
        let back = Some(strings(&["10.0.0.1"]));
        let pvs = [
            // Not looked at since the start, or its look failed.
            CsiPv {
                volume: "vol_kept",
                listed: "10.0.0.1",
                seen: None,
            },
            // Its volume does not record its claim (or is gone).
            CsiPv {
                volume: "vol_foreign",
                listed: "10.0.0.1",
                seen: Some(&None),
            },
            // Moved back onto the PV's servers.
            CsiPv {
                volume: "vol_back",
                listed: "10.0.0.1",
                seen: Some(&back),
            },
        ];
        let c = content(pvs, &before);
        assert_eq!(
            c.volumes,
            BTreeMap::from([("vol_kept".to_string(), strings(&["10.0.0.4"]))])
        );
    }

    #[test]
    fn entries_of_others_stay_and_ours_no_longer_watched_go() {
        let held = CurrentServers {
            volumes: BTreeMap::from([
                ("vol_theirs".to_string(), strings(&["10.0.0.7"])),
                ("vol_gone".to_string(), strings(&["10.0.0.4"])),
                ("vol_mine".to_string(), strings(&["10.0.0.4"])),
            ]),
        };
        let ours = CurrentServers {
            volumes: BTreeMap::from([("vol_new".to_string(), strings(&["10.0.0.5"]))]),
        };
        // vol_mine is watched (and its entry not wanted any more), vol_gone was last tick.
        let decided = |v: &str| ["vol_mine", "vol_new", "vol_gone"].contains(&v);
        assert_eq!(
            merged(ours, &held, decided).volumes,
            BTreeMap::from([
                ("vol_new".to_string(), strings(&["10.0.0.5"])),
                ("vol_theirs".to_string(), strings(&["10.0.0.7"])),
            ])
        );
    }

    #[test]
    fn a_volume_named_after_its_claim_gives_its_pv() {
        let uid = "0f5c2d9e-1b7a-4c3e-9d2f-8a6b5c4d3e2f";
        for prefix in [None, Some("app")] {
            let volume = naming::volume_name(prefix, "ns", "data", uid);
            assert_eq!(pv_of_volume(&volume), Some(objects::pv_name(uid)));
        }
        assert_eq!(pv_of_volume("gluster_shared_storage"), None);
    }

    #[test]
    fn hosts_no_mount_option_can_hold_are_left_out() {
        let hosts = strings(&["10.0.0.4", "fe80::1", "a,b"]);
        assert_eq!(moved("10.0.0.1", &hosts), Some(strings(&["10.0.0.4"])));
        assert_eq!(moved("10.0.0.4", &hosts), None);
        assert_eq!(moved("10.0.0.1", &strings(&["fe80::1"])), None);
    }
}
