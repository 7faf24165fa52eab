//! Phase 4: claims on an empty cluster, then at scale (PVs and claims preloaded).

use super::*;

/// `n` bound claims with PVs of ours (GIDs from `SCALE_GID_MIN`), Endpoints and Services, as the
/// provisioner and the PV controller would have left them (the bind written here, so the
/// controller has nothing to do); Retain, so nothing could ever delete a real volume. Each
/// node's bricks are recorded under `root(node)`.
pub(crate) async fn preload(
    client: &Client,
    provisioner: &str,
    cluster: &Cluster,
    n: usize,
    root: fn(&Node) -> PathBuf,
) -> Preloaded {
    let params = json!({"gidMin": SCALE_GID_MIN.to_string(),
                        "gidMax": (SCALE_GID_MIN + n as u32).to_string()});
    let (ns, class) = namespace_and_class(client, "scale", provisioner, "Retain", params).await;
    let class_name = class.name_any();
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let eps = Api::<Endpoints>::namespaced(client.clone(), &ns);
    let svcs = Api::<Service>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let volumes = stream::iter(0..n)
        .map(|i| {
            let (class, class_name) = (&class, &class_name);
            let (claims, pvs, eps, svcs, ns) = (&claims, &pvs, &eps, &svcs, &ns);
            async move {
                let name = format!("data-{i}");
                // A UID of our own, so the PV can be named before the claim exists.
                let pv_name = objects::pv_name(&uuid::Uuid::new_v4().to_string());
                let claim: PersistentVolumeClaim = from_json(json!({
                    "metadata": {"name": name,
                                 "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                    "spec": {"storageClassName": class_name, "accessModes": ["ReadWriteMany"],
                             "volumeName": pv_name,
                             "resources": {"requests": {"storage": "1Gi"}}},
                }));
                let claim = claims.create(&PostParams::default(), &claim).await.unwrap();
                let status = json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteMany"],
                                               "capacity": {"storage": "1Gi"}}});
                claims
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                let uid = claim.uid().unwrap();
                let volume = naming::volume_name(None, ns, &name, &uid);
                let bricks: Vec<Brick> = cluster
                    .nodes
                    .iter()
                    .map(|node| Brick::new(node, &root(node).into(), &volume))
                    .collect();
                let ep_name = objects::endpoints_name("glusterfs-dynamic", &uid);
                let recorded = BTreeMap::from([
                    (objects::ANN_CLUSTER.to_string(), cluster.name.clone()),
                    (
                        objects::ANN_BRICKS.to_string(),
                        objects::brick_record(&bricks),
                    ),
                ]);
                let mut pv = objects::persistent_volume(
                    &claim,
                    class,
                    &objects::VolumeFacts {
                        provisioner,
                        volume: &volume,
                        annotations: &recorded,
                        mounter: objects::Mounter::Glusterfs {
                            endpoints: &ep_name,
                        },
                        gid: SCALE_GID_MIN + i as u32,
                        size_gib: 1,
                    },
                );
                pv.metadata.name = Some(pv_name.clone());
                pvs.create(&PostParams::default(), &pv).await.unwrap();
                let status = json!({"status": {"phase": "Bound"}});
                pvs.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                let addresses = place::storage_addresses(&bricks);
                let ep = objects::endpoints(&ep_name, ns, &name, &uid, &addresses);
                eps.create(&PostParams::default(), &ep).await.unwrap();
                let svc = objects::service(&ep_name, ns, &name, &uid);
                svcs.create(&PostParams::default(), &svc).await.unwrap();
                (volume, bricks)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    log(format!(
        "preloaded {n} claims, PVs, Endpoints and Services in {:.0} s",
        secs(started.elapsed())
    ));
    // A claim the PV controller saw before its PV existed is Lost until its next sync.
    eventually(TIMEOUT, "preloaded claims Bound", || async {
        let list = claims.list(&ListParams::default()).await.unwrap();
        let bound = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        if bound < n {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        (bound == n).then_some(())
    })
    .await;
    Preloaded {
        class: class_name,
        ns,
        volumes,
    }
}

/// What [`preload`] made: the class and namespace of the claims, each volume and its bricks.
pub(crate) struct Preloaded {
    pub(crate) class: String,
    pub(crate) ns: String,
    pub(crate) volumes: Vec<(String, Vec<Brick>)>,
}

/// Phase 4: 10 claims on an empty cluster; then `--scale` PVs and claims preloaded, the
/// provisioner started on them (ready, memory, idle CPU) and 10 claims again.
pub(crate) async fn scale(
    o: &Options,
    client: &Client,
    cluster: &Cluster,
    burst: &Burst,
    name: &str,
) -> (Vec<Row>, Value) {
    let (mut provisioner, _, ready_small) = start_provisioner(name, &burst.class, &[]).await;
    log("4. 10 claims at once on an empty cluster, the better of two");
    let empty = best_of_two(burst, "empty").await;
    provisioner.stop().await;

    log(format!("5. scale: {} PVs and bound claims", o.scale));
    // A root outside the topology: these volumes hold no real space, so they must not fill the
    // real roots' promises.
    let scale_class = preload(client, name, cluster, o.scale, |_| PRELOADED_ROOT.into()).await;
    let (mut provisioner, _, ready_scale) = start_provisioner(name, &scale_class.class, &[]).await;
    let pid = provisioner.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_steady, _) = memory(pid);
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle_cpu = cpu_seconds(pid) - cpu_before;
    let at_scale = best_of_two(burst, "scale").await;
    let (_, rss_peak) = memory(pid);
    provisioner.kill().await;

    let (e50, _, _) = percentiles(&empty.to_bound);
    let (s50, _, _) = percentiles(&at_scale.to_bound);
    let (empty_total, scale_total) = (empty.all_bound, at_scale.all_bound);
    let scale_ratio = scale_total / empty_total;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let rows = vec![
        row(
            "ready, empty cluster (s)",
            format!("{ready_small:.2}"),
            String::new(),
        ),
        row(
            format!("scale: ready with {0} PVs + {0} claims (s)", o.scale),
            format!("{ready_scale:.2}"),
            format!("< 3: {}", verdict(ready_scale < 3.0)),
        ),
        row(
            "scale: RSS steady / peak (MiB)",
            format!("{:.1} / {:.1}", mib(rss_steady), mib(rss_peak)),
            format!("< 80 MB: {}", verdict(rss_peak < 80_000_000)),
        ),
        row(
            "scale: CPU over 60 idle s (s)",
            format!("{idle_cpu:.3}"),
            String::new(),
        ),
        row(
            "10 claims: all Bound empty / at scale (s)",
            format!("{empty_total:.2} / {scale_total:.2} (p50 {e50:.2} / {s50:.2})"),
            format!("<= 1.10x: {}", verdict(scale_ratio <= 1.10)),
        ),
    ];
    let results = json!({
        "ready_seconds_empty": ready_small,
        "empty_10": {"latencies": empty.to_bound, "total_seconds": empty_total},
        "scale": {"pvs": o.scale, "claims": o.scale, "ready_seconds": ready_scale,
                  "rss_steady_bytes": rss_steady, "rss_peak_bytes": rss_peak,
                  "idle_cpu_seconds_per_60s": idle_cpu, "latencies": at_scale.to_bound,
                  "total_seconds": scale_total},
    });
    (rows, results)
}
