//! The provisioner against the real environment: claims in, replicated volumes, Endpoints,
//! Services and PVs out; deletion cleans up; failures leave nothing behind.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolume, PersistentVolumeClaim, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::scenario::*;
use crate::support::{Provisioner, eventually, local, ssh};

fn gid_of(pv: &PersistentVolume) -> u32 {
    annotations(pv)["pv.beta.kubernetes.io/gid"]
        .parse()
        .unwrap()
}

async fn assert_volume_gone(suffix: &str) {
    eventually(
        BIND_WAIT,
        &format!("volume and bricks of *{suffix} gone"),
        || async {
            let left = gluster_volumes()
                .await
                .into_iter()
                .any(|v| v.ends_with(suffix))
                || brick_dirs().await.iter().any(|d| d.ends_with(suffix));
            (!left).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn statefulset_claims_bind_mount_and_clean_up() {
    let s = Scenario::new("sts").await;
    let class = s
        .class(
            json!({"volumetype": "replicate:3", "gidMin": "40000", "gidMax": "50000",
                   "volumeoptions": "performance.quick-read off"}),
            "Delete",
        )
        .await;
    let shapes = [
        ("ReadWriteMany", "1Gi"),
        ("ReadWriteOnce", "2Gi"),
        ("ReadWriteMany", "2Gi"),
        ("ReadWriteOnce", "1Gi"),
        ("ReadWriteMany", "1Gi"),
    ];
    let mut claims = Vec::new();
    for (i, (mode, size)) in shapes.iter().enumerate() {
        claims.push(s.claim(&format!("data-web-{i}"), &class, size, mode).await);
    }
    let names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
    let pvs = join_all(names.iter().map(|n| s.bound_pv(n))).await;

    let ssh = ssh();
    let mut gids = HashSet::new();
    for ((claim, pv), (mode, size)) in claims.iter().zip(&pvs).zip(shapes) {
        let uid = claim.uid().unwrap();
        assert_eq!(pv.name_any(), format!("pvc-{uid}"));
        let ann = annotations(pv);
        assert_eq!(ann["pv.kubernetes.io/provisioned-by"], s.provisioner.name);
        assert_eq!(ann["gluster.org/type"], "file");
        assert_eq!(
            ann["Description"],
            "Gluster-Internal: Dynamically provisioned PV"
        );
        assert!(ann.contains_key("kubernetes.io/createdby"));
        let gid = gid_of(pv);
        assert!(
            (40000..=50000).contains(&gid) && gids.insert(gid),
            "gid {gid}"
        );
        let spec = pv.spec.as_ref().unwrap();
        assert_eq!(spec.capacity.as_ref().unwrap()["storage"].0, size);
        assert_eq!(spec.access_modes.as_deref(), Some(&[mode.to_string()][..]));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
        let source = spec.glusterfs.as_ref().unwrap();
        assert_eq!(source.endpoints, format!("glusterfs-dynamic-{uid}"));
        assert_eq!(source.endpoints_namespace.as_deref(), Some(s.ns.as_str()));
        assert_eq!(source.path, format!("vol_{}", uid_suffix(claim)));

        let ep = s.endpoints(&source.endpoints).await.unwrap();
        assert_eq!(
            ep.labels()["gluster.kubernetes.io/provisioned-for-pvc"],
            claim.name_any()
        );
        let addrs: HashSet<String> = endpoint_ips(&ep).into_iter().collect();
        assert_eq!(addrs.len(), 3, "three storage addresses");
        let svc = Api::<Service>::namespaced(s.client.clone(), &s.ns)
            .get(&source.endpoints)
            .await
            .unwrap();
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 1);

        // Mounted as a kubelet would: data lands in bricks on three different nodes.
        let mount = Mount::of(&s, pv).await;
        let content = format!("hello from {}\n", claim.name_any());
        std::fs::write(mount.path().join("hello.txt"), &content).unwrap();
        let root = std::fs::metadata(mount.path()).unwrap();
        assert_eq!(root.gid(), gid, "mount root group is the PV's GID");
        let df = local(
            "df",
            &["-B1", "--output=size", mount.path().to_str().unwrap()],
        )
        .await;
        let bytes: u64 = df.lines().nth(1).unwrap().trim().parse().unwrap();
        let gib: u64 = size.trim_end_matches("Gi").parse().unwrap();
        assert_eq!(bytes, gib << 30, "df shows the requested size");
        let bricks = pv_bricks(pv);
        let brick_nodes: HashSet<_> = bricks.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(brick_nodes.len(), 3);
        for (node, path) in &bricks {
            let on_brick = ssh
                .run_ok(
                    &node_by_name(node).ssh_address,
                    "cat",
                    &[format!("{path}/hello.txt")],
                )
                .await
                .unwrap();
            assert_eq!(on_brick, content);
            let group = ssh
                .run_ok(
                    &node_by_name(node).ssh_address,
                    "stat",
                    &["-c".into(), "%g %A".into(), path.clone()],
                )
                .await
                .unwrap();
            assert_eq!(
                group.trim(),
                format!("{gid} drwxrwsr-x"),
                "brick dir group-owned by the GID, setgid"
            );
        }
        mount.unmount().await;
    }

    // The size is enforced: writing past 1 GiB fails.
    let small = Mount::of(&s, &pvs[0]).await;
    let big = small.path().join("big");
    let out = tokio::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", big.display()),
            "bs=4M",
            "count=400",
            "conv=fsync",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "writing 1.2 GiB into a 1 GiB volume must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quota") || err.contains("space"), "dd: {err}");
    std::fs::remove_file(&big).ok();
    small.unmount().await;

    let out = gluster_cli(&["volume", "info", &glusterfs_path(&pvs[0])]).await;
    assert!(
        out.contains("performance.quick-read: off"),
        "user option applied: {out}"
    );

    for claim in &claims {
        s.delete_claim(&claim.name_any()).await;
    }
    for (claim, pv) in claims.iter().zip(&pvs) {
        s.wait_pv_gone(&pv.name_any()).await;
        assert_volume_gone(&uid_suffix(claim)).await;
        let ep_name = format!("glusterfs-dynamic-{}", claim.uid().unwrap());
        eventually(BIND_WAIT, "Endpoints and Service deleted", || async {
            let svc = Api::<Service>::namespaced(s.client.clone(), &s.ns)
                .get_opt(&ep_name)
                .await
                .unwrap();
            (s.endpoints(&ep_name).await.is_none() && svc.is_none()).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn placement_follows_zones_and_volume_types() {
    let s = Scenario::new("place").await;
    let two = s
        .class(json!({"volumetype": "replicate:2"}), "Delete")
        .await;
    let one = s.class(json!({"volumetype": "none"}), "Delete").await;
    let four = s
        .class(json!({"volumetype": "replicate:4"}), "Delete")
        .await;
    s.claim("two", &two, "1Gi", "ReadWriteMany").await;
    s.claim("one", &one, "1Gi", "ReadWriteOnce").await;
    let too_many = s.claim("four", &four, "1Gi", "ReadWriteMany").await;

    let pv = s.bound_pv("two").await;
    let zones: HashSet<_> = pv_bricks(&pv)
        .iter()
        .map(|(n, _)| node_by_name(n).zone.clone())
        .collect();
    assert_eq!(zones.len(), 2, "replicate:2 spans both zones");
    let pv1 = s.bound_pv("one").await;
    assert_eq!(pv_bricks(&pv1).len(), 1);
    let m = Mount::of(&s, &pv1).await;
    std::fs::write(m.path().join("x"), "x").unwrap();
    m.unmount().await;

    let note = s.event(&too_many, "ProvisioningFailed").await;
    assert!(
        note.contains("replicate:4 needs 4 bricks on distinct nodes"),
        "{note}"
    );
    assert_volume_gone(&uid_suffix(&too_many)).await;
    for c in ["two", "one"] {
        s.delete_claim(c).await;
    }
    s.wait_pv_gone(&pv.name_any()).await;
    s.wait_pv_gone(&pv1.name_any()).await;
}

#[tokio::test]
async fn retain_keeps_volume_bricks_and_pv() {
    let s = Scenario::new("retain").await;
    let class = s
        .class(json!({"volumetype": "replicate:3"}), "Retain")
        .await;
    let claim = s.claim("keep", &class, "1Gi", "ReadWriteMany").await;
    let pv = s.bound_pv("keep").await;
    let m = Mount::of(&s, &pv).await;
    std::fs::write(m.path().join("precious"), "data").unwrap();
    m.unmount().await;
    s.delete_claim("keep").await;
    s.wait_released(&pv.name_any()).await;
    // Deleted by hand too: the provisioner lets the object go (removing its finalizer is the
    // sign it handled the PV, after the Released state it saw first) and keeps the volume.
    s.delete_pv(&pv.name_any()).await;
    s.wait_pv_gone(&pv.name_any()).await;
    let volume = format!("vol_{}", uid_suffix(&claim));
    assert!(gluster_volumes().await.contains(&volume));
    assert_eq!(
        brick_dirs()
            .await
            .iter()
            .filter(|d| d.ends_with(&volume))
            .count(),
        3
    );
    let (node, path) = &pv_bricks(&pv)[0];
    let data = ssh()
        .run_ok(
            &node_by_name(node).ssh_address,
            "cat",
            &[format!("{path}/precious")],
        )
        .await
        .unwrap();
    assert_eq!(data, "data");
}

/// Fault: a Released PV with policy Delete is deleted by hand while the provisioner is down.
#[tokio::test]
async fn a_pv_deleted_by_hand_still_takes_its_volume_with_it() {
    let mut s = Scenario::new("handdel").await;
    let class = s
        .class(json!({"volumetype": "replicate:2"}), "Delete")
        .await;
    let claim = s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("c").await;
    let volume = format!("vol_{}", uid_suffix(&claim));
    s.provisioner.kill().await;
    s.delete_claim("c").await;
    s.wait_released(&pv.name_any()).await;
    s.delete_pv(&pv.name_any()).await;
    // Held by the finalizer: the object waits for its volume to go.
    let held = s.pvs.get(&pv.name_any()).await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(gluster_volumes().await.contains(&volume));
    s.provisioner = Provisioner::start(&s.provisioner.name).await;
    s.wait_pv_gone(&pv.name_any()).await;
    assert!(!gluster_volumes().await.contains(&volume));
    let left: Vec<_> = brick_dirs()
        .await
        .into_iter()
        .filter(|d| d.ends_with(&volume))
        .collect();
    assert!(left.is_empty(), "brick directories left: {left:?}");
    let ep = endpoints_name(&pv);
    assert!(s.endpoints(&ep).await.is_none());
}

#[tokio::test]
async fn deleted_endpoints_and_service_come_back() {
    let s = Scenario::new("ep").await;
    let class = s
        .class(
            json!({"volumetype": "none", "customepnameprefix": "myep"}),
            "Delete",
        )
        .await;
    let claim = s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    s.bound_pv("c").await;
    let name = format!("myep-{}", claim.uid().unwrap());
    let eps = Api::<Endpoints>::namespaced(s.client.clone(), &s.ns);
    let svcs = Api::<Service>::namespaced(s.client.clone(), &s.ns);
    svcs.delete(&name, &DeleteParams::default()).await.unwrap();
    eps.delete(&name, &DeleteParams::default()).await.ok();
    eventually(
        Duration::from_secs(60),
        "Endpoints and Service recreated",
        || async {
            let ep = eps.get_opt(&name).await.unwrap()?;
            svcs.get_opt(&name).await.unwrap()?;
            let n = ep.subsets?.first()?.addresses.as_ref()?.len();
            (n == 1).then_some(())
        },
    )
    .await;
    s.delete_claim("c").await;
}

/// Fault: the reply to the PV's creation is lost (an error after the API server stored it).
#[tokio::test]
async fn a_pv_saved_before_an_error_keeps_its_volume() {
    let lost = [("GLUSTERFS_PROVISIONER_FAIL_AT", "after-pv-create")];
    let s = Scenario::with_env("lostpv", &lost).await;
    let class = s
        .class(json!({"volumetype": "replicate:2"}), "Delete")
        .await;
    let claim = s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("c").await;
    let suffix = uid_suffix(&claim);
    let volumes = gluster_volumes().await;
    assert_eq!(
        volumes.iter().filter(|v| v.ends_with(&suffix)).count(),
        1,
        "the volume the PV names exists, once: {volumes:?}"
    );
    // And it serves: a mount through the PV reads and writes.
    let mount = Mount::of(&s, &pv).await;
    std::fs::write(mount.path().join("f"), "x").unwrap();
    mount.unmount().await;
    s.delete_claim("c").await;
    s.wait_pv_gone(&pv.name_any()).await;
}

#[tokio::test]
async fn crash_mid_provision_and_mid_delete_leaves_one_volume_and_no_orphans() {
    let crash = [("GLUSTERFS_PROVISIONER_CRASH_AT", "after-volume-create")];
    let mut s = Scenario::with_env("crash", &crash).await;
    let class = s
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    let claim = s.claim("c", &class, "1Gi", "ReadWriteMany").await;
    s.provisioner.wait_exit(Duration::from_secs(300)).await;
    let suffix = uid_suffix(&claim);
    let volume = format!("vol_{suffix}");
    assert!(
        gluster_volumes().await.contains(&volume),
        "volume made before the crash"
    );
    let pv_name = format!("pvc-{}", claim.uid().unwrap());
    assert!(
        s.pvs.get_opt(&pv_name).await.unwrap().is_none(),
        "no PV before the crash"
    );

    s.provisioner = Provisioner::start(&s.provisioner.name).await;
    let pv = s.bound_pv("c").await;
    assert_eq!(
        gluster_volumes()
            .await
            .iter()
            .filter(|v| v.ends_with(&suffix))
            .count(),
        1
    );
    assert_eq!(
        brick_dirs()
            .await
            .iter()
            .filter(|d| d.ends_with(&suffix))
            .count(),
        3,
        "no orphan bricks"
    );
    assert_eq!(pv_bricks(&pv).len(), 3);

    s.provisioner.kill().await;
    let crash = [("GLUSTERFS_PROVISIONER_CRASH_AT", "after-volume-delete")];
    s.provisioner = Provisioner::start_with(&s.provisioner.name, &crash).await;
    s.delete_claim("c").await;
    s.provisioner.wait_exit(Duration::from_secs(300)).await;
    assert!(
        s.pvs.get_opt(&pv_name).await.unwrap().is_some(),
        "PV still there after the crash"
    );
    s.provisioner = Provisioner::start(&s.provisioner.name).await;
    s.wait_pv_gone(&pv_name).await;
    assert_volume_gone(&suffix).await;
}

/// Fault: the provisioner is killed (crash point) once the volume is made, and the claim is
/// deleted before it comes back. The claim waits for it, then takes its volume and bricks
/// along, whatever the reclaim policy: no PV ever named them.
#[tokio::test]
async fn a_claim_deleted_before_its_pv_takes_its_volume_with_it() {
    let crash = [("GLUSTERFS_PROVISIONER_CRASH_AT", "after-volume-create")];
    let mut s = Scenario::with_env("abandon", &crash).await;
    let class = s
        .class(json!({"volumetype": "replicate:3"}), "Retain")
        .await;
    let claim = s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    s.provisioner.wait_exit(Duration::from_secs(300)).await;
    let suffix = uid_suffix(&claim);
    assert!(gluster_volumes().await.contains(&format!("vol_{suffix}")));
    s.delete_claim("c").await;
    let held = s.claims.get_opt("c").await.unwrap();
    assert!(
        held.is_some_and(|c| c.metadata.deletion_timestamp.is_some()),
        "the deleted claim waits for the provisioner"
    );
    s.provisioner = Provisioner::start(&s.provisioner.name).await;
    eventually(BIND_WAIT, "claim c gone", || async {
        s.claims.get_opt("c").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_volume_gone(&suffix).await;
    let pv = format!("pvc-{}", claim.uid().unwrap());
    assert!(s.pvs.get_opt(&pv).await.unwrap().is_none());
}

/// Fault: a burst that would fill the brick roots. Volumes are empty when placed, so free bytes
/// alone would let every claim in; placement counts what each root's volumes are promised (their
/// enforced sizes), so the burst gets what the disks hold, the claim too many fails naming the
/// roots and their room, and binds once room is freed.
#[tokio::test]
async fn a_burst_never_overcommits_a_brick_root() {
    let s = Scenario::new("full").await;
    let class = s
        .class(json!({"volumetype": "replicate:3"}), "Delete")
        .await;
    // Every node has an image brick root of 10 GiB (and a quota one of 8, which this class's
    // image bricks do not use): room for one 6 GiB brick.
    let names: Vec<String> = (0..2).map(|i| format!("big-{i}")).collect();
    let claims = join_all(
        names
            .iter()
            .map(|n| s.claim(n, &class, "6Gi", "ReadWriteOnce")),
    )
    .await;
    let phase = |c: &PersistentVolumeClaim| {
        c.status
            .as_ref()
            .and_then(|st| st.phase.clone())
            .unwrap_or_default()
    };
    let (bound, left) = eventually(BIND_WAIT, "one claim Bound, one left", || async {
        let mut bound = Vec::new();
        let mut left = Vec::new();
        for name in &names {
            let c = s.claims.get(name).await.unwrap();
            if phase(&c) == "Bound" {
                bound.push(c);
            } else {
                left.push(c);
            }
        }
        (bound.len() == 1).then_some((bound, left))
    })
    .await;
    let left = &left[0];
    let note = s.event(left, "ProvisioningFailed").await;
    assert!(
        note.contains("room by brick root")
            && note.contains(&format!("{}:/srv/gluster/brick1", nodes()[0].name)),
        "{note:?}"
    );
    assert_eq!(
        phase(&s.claims.get(&left.name_any()).await.unwrap()),
        "Pending"
    );

    let freed = s.bound_pv(&bound[0].name_any()).await;
    s.delete_claim(&bound[0].name_any()).await;
    s.wait_pv_gone(&freed.name_any()).await;
    let last = s.bound_pv(&left.name_any()).await;
    s.delete_claim(&left.name_any()).await;
    s.wait_pv_gone(&last.name_any()).await;
    drop(claims);
}

/// Ten claims created at once, alternating between classes `a` (0) and `b` (1).
async fn ten_claims(
    s: &Scenario,
    a: &str,
    b: &str,
    round: usize,
) -> Vec<(PersistentVolumeClaim, usize)> {
    let claims = (0..10).map(|i| {
        let class = if i % 2 == 0 { a } else { b };
        async move {
            (
                s.claim(&format!("r{round}-{i}"), class, "1Gi", "ReadWriteOnce")
                    .await,
                i % 2,
            )
        }
    });
    join_all(claims).await
}

#[tokio::test]
async fn gids_stay_unique_across_classes_and_restarts() {
    let mut s = Scenario::new("gid").await;
    // Overlapping, and roomy enough for ten claims each whatever the order of allocation.
    let ranges = [(3000u32, 3019u32), (3010, 3040)];
    let a = s
        .class(
            json!({"volumetype": "none", "gidMin": "3000", "gidMax": "3019"}),
            "Delete",
        )
        .await;
    let b = s
        .class(
            json!({"volumetype": "none", "gidMin": "3010", "gidMax": "3040"}),
            "Delete",
        )
        .await;
    let mut claims = ten_claims(&s, &a, &b, 0).await;
    let names: Vec<String> = claims.iter().map(|(c, _)| c.name_any()).collect();
    join_all(names.iter().map(|n| s.bound_pv(n))).await;
    s.provisioner.kill().await;
    s.provisioner = Provisioner::start(&s.provisioner.name).await;
    claims.extend(ten_claims(&s, &a, &b, 1).await);
    let names: Vec<String> = claims.iter().map(|(c, _)| c.name_any()).collect();
    let pvs = join_all(names.iter().map(|n| s.bound_pv(n))).await;
    let mut seen = HashSet::new();
    for (pv, (_, class)) in pvs.iter().zip(&claims) {
        let gid = gid_of(pv);
        let (min, max) = ranges[*class];
        assert!((min..=max).contains(&gid), "{gid} outside {min}-{max}");
        assert!(seen.insert(gid), "GID {gid} given twice");
    }
    assert_eq!(seen.len(), 20);
    for (c, _) in &claims {
        s.delete_claim(&c.name_any()).await;
    }
    for pv in &pvs {
        s.wait_pv_gone(&pv.name_any()).await;
    }
}

#[tokio::test]
async fn bad_input_fails_with_a_clear_event_and_leaves_nothing() {
    let s = Scenario::new("bad").await;
    let class_cases = [
        (json!({"foo": "bar"}), "unknown parameter \"foo\""),
        (
            json!({"gidMin": "6000", "gidMax": "5000"}),
            "gidMin (6000) must not be greater than gidMax (5000)",
        ),
        (json!({"gidMin": "abc"}), "gidMin \"abc\""),
        (
            json!({"gidMax": "100"}),
            "gidMax \"100\": must be an integer from 2000",
        ),
        (json!({"volumetype": "mirror:3"}), "volumetype \"mirror:3\""),
        (
            json!({"volumetype": "replicate:0"}),
            "volumetype \"replicate:0\"",
        ),
        (
            json!({"volumetype": "disperse:1:1"}),
            "data bricks must outnumber",
        ),
        (
            json!({"volumetype": "replicate:4"}),
            "needs 4 bricks on distinct nodes",
        ),
        (
            json!({"volumeoptions": "performance.quick-read $(reboot)"}),
            "volumeoptions entry",
        ),
        (
            json!({"volumeoptions": "a;touch /tmp/pwned b"}),
            "volumeoptions entry",
        ),
        (
            json!({"volumeoptions": "single"}),
            "volumeoptions entry \"single\"",
        ),
        (
            json!({"volumenameprefix": "bad_prefix"}),
            "volumenameprefix \"bad_prefix\"",
        ),
        (json!({"volumenameprefix": "x`id`"}), "volumenameprefix"),
        (
            json!({"customepnameprefix": "a-prefix-much-longer-than-26-chars"}),
            "customepnameprefix",
        ),
        (json!({"cluster": "nope"}), "unknown cluster \"nope\""),
        (
            json!({"restuser": "admin"}),
            "is a Heketi parameter and needs resturl",
        ),
        (
            json!({"resturl": "http://127.0.0.1:1", "cluster": "a"}),
            "is for the SSH backend",
        ),
        (json!({"resturl": "127.0.0.1:1"}), "resturl \"127.0.0.1:1\""),
        (
            json!({"resturl": "http://127.0.0.1:1", "snapfactor": "200"}),
            "snapfactor \"200\"",
        ),
        (
            json!({"resturl": "http://127.0.0.1:1", "secretName": "s"}),
            "secretNamespace and secretName must be set both or neither",
        ),
    ];
    let mut claims = Vec::new();
    for (i, (params, want)) in class_cases.iter().enumerate() {
        let class = s.class(params.clone(), "Delete").await;
        claims.push((
            s.claim(&format!("bad-{i}"), &class, "1Gi", "ReadWriteOnce")
                .await,
            *want,
        ));
    }
    let good = s.class(json!({"volumetype": "none"}), "Delete").await;
    let claim_cases = [
        (
            json!({"volumeMode": "Block"}),
            "volumeMode Block is not supported",
        ),
        (
            json!({"selector": {"matchLabels": {"disk": "fast"}}}),
            "selector",
        ),
        (
            json!({"dataSource": {"kind": "VolumeSnapshot", "name": "s",
                                  "apiGroup": "snapshot.storage.k8s.io"}}),
            "dataSource VolumeSnapshot",
        ),
    ];
    for (i, (extra, want)) in claim_cases.iter().enumerate() {
        let mut spec = json!({"storageClassName": good, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims.push((s.claim_with(&format!("badclaim-{i}"), spec).await, *want));
    }
    let notes = join_all(claims.iter().map(|(c, _)| s.event(c, "ProvisioningFailed"))).await;
    for ((claim, want), note) in claims.iter().zip(notes) {
        assert!(
            note.contains(want),
            "{}: event {note:?} should say {want:?}",
            claim.name_any()
        );
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    let volumes = gluster_volumes().await;
    let dirs = brick_dirs().await;
    for (claim, _) in &claims {
        let suffix = uid_suffix(claim);
        assert!(
            !volumes.iter().any(|v| v.ends_with(&suffix)),
            "volume made for {}",
            claim.name_any()
        );
        assert!(
            !dirs.iter().any(|d| d.ends_with(&suffix)),
            "brick dir made for {}",
            claim.name_any()
        );
        assert!(
            s.pvs
                .get_opt(&format!("pvc-{}", claim.uid().unwrap()))
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// A claim made before its class: nothing polls; the class's arrival brings it back.
#[tokio::test]
async fn a_claim_made_before_its_class_binds_once_the_class_exists() {
    let s = Scenario::new("lateclass").await;
    let class = format!("{}-late", s.ns);
    s.claim("early", &class, "1Gi", "ReadWriteOnce").await;
    // Another claim of an existing class binds: the provisioner has seen the early one.
    let existing = s.class(json!({"volumetype": "none"}), "Delete").await;
    s.claim("sign", &existing, "1Gi", "ReadWriteOnce").await;
    let sign = s.bound_pv("sign").await;
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(s.client.clone());
    classes
        .create(
            &Default::default(),
            &from_json(json!({
                "metadata": {"name": class}, "provisioner": s.provisioner_name,
                "reclaimPolicy": "Delete", "parameters": {"volumetype": "none"},
            })),
        )
        .await
        .unwrap();
    let pv = s.bound_pv("early").await;
    for (claim, pv) in [("early", pv), ("sign", sign)] {
        s.delete_claim(claim).await;
        s.wait_pv_gone(&pv.name_any()).await;
    }
}

/// OpenShift's documented class: gluster option profiles beside a plain option.
#[tokio::test]
async fn option_profiles_from_the_guides_apply() {
    let s = Scenario::new("profiles").await;
    let class = s
        .class(
            json!({"volumetype": "none", "volumeoptions": "group metadata-cache, nl-cache on"}),
            "Delete",
        )
        .await;
    s.claim("c", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("c").await;
    let info = gluster_cli(&["volume", "get", &glusterfs_path(&pv), "all"]).await;
    let value = |key: &str| {
        info.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    // From the metadata-cache profile, and the plain option.
    assert_eq!(
        value("features.cache-invalidation").as_deref(),
        Some("on"),
        "{info}"
    );
    assert_eq!(
        value("performance.nl-cache").as_deref(),
        Some("on"),
        "{info}"
    );
    s.delete_claim("c").await;
    s.wait_pv_gone(&pv.name_any()).await;
}
