//! Phases 2 and 3: bursts of claims and their deletes, claims one at a time.

use super::*;

/// When each object `key` names (a claim) was first seen as `key` picks, as a watch on `api`
/// shows it; filled in by a task, listed before this returns.
pub(crate) type Seen = Arc<Mutex<HashMap<String, Instant>>>;

pub(crate) async fn first_seen<K>(api: Api<K>, key: fn(K) -> Option<String>) -> Seen
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen = Seen::default();
    let record = seen.clone();
    let (listed, watching) = tokio::sync::oneshot::channel();
    let mut watch = watcher(api, watcher::Config::default()).boxed();
    tokio::spawn(async move {
        let mut listed = Some(listed);
        while let Some(Ok(event)) = watch.next().await {
            let object = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                watcher::Event::InitDone => {
                    listed.take().map(|l| l.send(()));
                    continue;
                }
                _ => continue,
            };
            if let Some(name) = key(object) {
                record
                    .lock()
                    .unwrap()
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });
    watching.await.unwrap();
    seen
}

/// A burst's claims: when each was asked for, its PV made (the provisioner's part), and it
/// was Bound (the PV controller's part added); seconds from the start.
pub(crate) struct Claims {
    pub(crate) made: Vec<PersistentVolumeClaim>,
    /// Per claim, from its creation.
    pub(crate) to_pv: Vec<f64>,
    pub(crate) to_bound: Vec<f64>,
    /// From the first creation to the last PV, and to the last claim Bound.
    pub(crate) all_pvs: f64,
    pub(crate) all_bound: f64,
}

/// A namespace, a Delete class of the bench provisioner whose volumes keep to their size as
/// `size_limit` says (`sizeLimit`), and watches on its claims and PVs.
pub(crate) struct Burst {
    pub(crate) client: Client,
    pub(crate) claims: Api<PersistentVolumeClaim>,
    pub(crate) class: String,
    pub(crate) bound: Seen,
    pub(crate) pvs: Seen,
}

impl Burst {
    pub(crate) async fn new(client: &Client, provisioner: &str, size_limit: &str) -> Self {
        let params = json!({"volumetype": "replicate:3", "gidMin": "40000", "gidMax": "50000",
                            "sizeLimit": size_limit});
        let (ns, class) = namespace_and_class(client, "bench", provisioner, "Delete", params).await;
        let class = class.name_any();
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
        let bound = first_seen(claims.clone(), |pvc| {
            let bound = pvc.status?.phase? == "Bound";
            bound.then_some(pvc.metadata.name?)
        })
        .await;
        // PVs of any class: only the burst's claim names are looked up.
        let pvs = first_seen(Api::<PersistentVolume>::all(client.clone()), |pv| {
            pv.spec?.claim_ref?.name
        })
        .await;
        Burst {
            client: client.clone(),
            claims,
            class,
            bound,
            pvs,
        }
    }

    /// Creates `n` claims at once and waits until all are Bound.
    pub(crate) async fn provision(&self, n: usize, prefix: &str) -> Claims {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let start = Instant::now();
        let made: Vec<(PersistentVolumeClaim, Instant)> =
            futures::future::join_all(names.iter().map(|name| async move {
                let asked = Instant::now();
                let pvc: PersistentVolumeClaim = from_json(json!({
                    "metadata": {"name": name},
                    "spec": {"storageClassName": self.class, "accessModes": ["ReadWriteMany"],
                             "resources": {"requests": {"storage": "1Gi"}}},
                }));
                let pvc = self
                    .claims
                    .create(&PostParams::default(), &pvc)
                    .await
                    .unwrap();
                (pvc, asked)
            }))
            .await;
        let when = |seen: &Seen| {
            let seen = seen.lock().unwrap();
            names
                .iter()
                .map(|n| seen.get(n).copied())
                .collect::<Option<Vec<Instant>>>()
        };
        let bound = eventually(TIMEOUT, &format!("{n} claims Bound"), || async {
            when(&self.bound)
        })
        .await;
        let pvs = when(&self.pvs).expect("a bound claim's PV was seen");
        let since = |at: &[Instant]| -> Vec<f64> {
            made.iter()
                .zip(at)
                .map(|((_, asked), at)| secs(*at - *asked))
                .collect()
        };
        let last = |at: &[Instant]| secs(*at.iter().max().unwrap() - start);
        Claims {
            to_pv: since(&pvs),
            to_bound: since(&bound),
            all_pvs: last(&pvs),
            all_bound: last(&bound),
            made: made.into_iter().map(|(c, _)| c).collect(),
        }
    }

    /// Deletes the claims at once; seconds until their volumes and brick directories are gone
    /// (the gluster side, the baseline's measure), and until their PVs are gone too.
    pub(crate) async fn delete(&self, claims: &[PersistentVolumeClaim]) -> Deleted {
        let start = Instant::now();
        let dp = DeleteParams::default();
        let names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
        futures::future::join_all(names.iter().map(|n| self.claims.delete(n, &dp))).await;
        let pvs = Api::<PersistentVolume>::all(self.client.clone());
        let names: Vec<String> = claims
            .iter()
            .map(|c| objects::pv_name(&c.uid().unwrap()))
            .collect();
        let suffixes: Vec<String> = claims
            .iter()
            .map(|c| c.uid().unwrap().replace('-', ""))
            .collect();
        let pvs_gone = eventually(TIMEOUT, "PVs deleted", || async {
            let left = pvs.list_metadata(&ListParams::default()).await.unwrap();
            let gone = !left.items.iter().any(|pv| names.contains(&pv.name_any()));
            gone.then(|| secs(start.elapsed()))
        });
        let ours = |left: Vec<String>| left.iter().any(|v| suffixes.iter().any(|s| v.ends_with(s)));
        // A volume's brick directories go after it, so its bricks are watched and `volume list`
        // is asked only once they are gone: a gluster process every 250 ms would load the nodes
        // whose deletion it times, while the run by hand is timed by its own end (measured: the
        // ratio did not move either way).
        let gluster_gone = eventually(TIMEOUT, "volumes and bricks removed", || async {
            let gone = !ours(brick_dirs().await) && !ours(gluster_volumes().await);
            gone.then(|| secs(start.elapsed()))
        });
        let (pvs, gluster) = futures::future::join(pvs_gone, gluster_gone).await;
        Deleted {
            gluster,
            all: pvs.max(gluster),
        }
    }
}

/// Seconds from a burst's deletion until its volumes and bricks were gone, and everything.
pub(crate) struct Deleted {
    pub(crate) gluster: f64,
    pub(crate) all: f64,
}

/// A new namespace, and a class of `provisioner` with `reclaim` and `params`.
pub(crate) async fn namespace_and_class(
    client: &Client,
    tag: &str,
    provisioner: &str,
    reclaim: &str,
    params: Value,
) -> (String, StorageClass) {
    let ns = unique(tag);
    let namespace: Namespace = from_json(json!({"metadata": {"name": ns}}));
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let class: StorageClass = from_json(json!({
        "metadata": {"name": unique(&format!("{tag}-sc"))}, "provisioner": provisioner,
        "reclaimPolicy": reclaim, "parameters": params,
    }));
    let class = Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    (ns, class)
}

/// A burst at one setting and its delete.
pub(crate) struct BurstRun {
    pub(crate) commands: Option<u16>,
    pub(crate) claims: Claims,
    pub(crate) delete: Deleted,
}

impl BurstRun {
    pub(crate) fn median_share(&self) -> f64 {
        percentiles(&self.claims.to_bound).0 / self.claims.all_bound
    }

    pub(crate) fn setting(&self) -> String {
        match self.commands {
            Some(k) => format!("GLUSTER_COMMANDS={k}"),
            None => "default".into(),
        }
    }

    pub(crate) fn json(&self) -> Value {
        let c = &self.claims;
        json!({"setting": self.setting(), "total_seconds": c.all_bound,
               "all_pvs_seconds": c.all_pvs, "latencies": c.to_bound, "to_pv": c.to_pv,
               "median_share": self.median_share(), "delete_seconds": self.delete.all,
               "delete_gluster_seconds": self.delete.gluster})
    }
}

pub(crate) async fn burst_and_delete(
    burst: &Burst,
    n: usize,
    prefix: &str,
    commands: Option<u16>,
) -> BurstRun {
    let claims = burst.provision(n, prefix).await;
    log(format!(
        "{n} claims: PVs made in {:.1} s, Bound in {:.1} s",
        claims.all_pvs, claims.all_bound
    ));
    let delete = burst.delete(&claims.made).await;
    log(format!(
        "{n} deleted: volumes and bricks in {:.1} s, PVs too in {:.1} s",
        delete.gluster, delete.all
    ));
    BurstRun {
        commands,
        claims,
        delete,
    }
}

/// `n` claims, each made once the one before is Bound: an `OrderedReady` StatefulSet. One
/// claim before them, not counted, opens the provisioner's SSH connections (the baseline's
/// are open before its clock starts).
pub(crate) async fn one_by_one(burst: &Burst, n: usize, prefix: &str) -> Vec<f64> {
    let mut claims = burst.provision(1, &format!("{prefix}-warm")).await.made;
    let mut latencies = Vec::new();
    for i in 0..n {
        let one = burst.provision(1, &format!("{prefix}{i}")).await;
        latencies.extend(one.to_bound);
        claims.extend(one.made);
    }
    burst.delete(&claims).await;
    latencies
}

/// 10 claims at once, twice: the faster run (glusterd's pace varies by a few seconds from run
/// to run).
pub(crate) async fn best_of_two(burst: &Burst, prefix: &str) -> Claims {
    let one = burst_and_delete(burst, 10, &format!("{prefix}a"), None).await;
    let two = burst_and_delete(burst, 10, &format!("{prefix}b"), None).await;
    [one, two]
        .into_iter()
        .map(|r| r.claims)
        .min_by(|a, b| a.all_bound.total_cmp(&b.all_bound))
        .unwrap()
}

/// Phases 1 to 3: the baseline, a burst at each `--commands` setting and at the defaults with
/// their deletes, and claims one at a time.
pub(crate) async fn bursts(
    o: &Options,
    cli: &Cli,
    cluster: &Cluster,
    burst: &Burst,
    name: &str,
) -> (Vec<Row>, Value, Vec<Series>) {
    let n = o.claims;
    log(format!(
        "1. baseline: {n} volumes made by gluster's CLI over ssh"
    ));
    let serial = baseline(cli, cluster, n, 1).await;
    let mut parallel = Vec::new();
    for p in [8, n] {
        parallel.push(baseline(cli, cluster, n, p).await);
    }
    let best = parallel
        .iter()
        .min_by(|a, b| a.create.total_cmp(&b.create))
        .unwrap();
    let best_delete = parallel
        .iter()
        .map(|b| b.delete)
        .fold(serial.delete, f64::min);
    let (alone, _, _) = percentiles(&serial.each);

    let mut runs = Vec::new();
    for k in o.commands.iter().copied() {
        log(format!(
            "2. burst of {n} with GLUSTER_COMMANDS={k}, then its delete"
        ));
        let k_var = k.to_string();
        let vars = [("GLUSTER_COMMANDS", k_var.as_str())];
        let (mut provisioner, _, _) = start_provisioner(name, &burst.class, &vars).await;
        runs.push(burst_and_delete(burst, n, &format!("k{k}"), Some(k)).await);
        // Stopped as a pod is, so the next start does not wait out a dead leader's lease.
        provisioner.stop().await;
    }
    let (mut provisioner, _, _) = start_provisioner(name, &burst.class, &[]).await;
    log(format!("3. {} claims one at a time", o.one_by_one));
    let single = one_by_one(burst, o.one_by_one, "one").await;
    log(format!("2. burst of {n} at the defaults, then its delete"));
    let main = burst_and_delete(burst, n, "burst", None).await;
    provisioner.stop().await;

    let (p50, p95, max) = percentiles(&main.claims.to_bound);
    let (o50, _, omax) = percentiles(&single);
    let ratio = main.claims.all_bound / best.create;
    let delete_ratio = main.delete.all / best_delete;
    let mut rows = vec![
        row(
            "baseline serial: create / delete (s)",
            format!("{:.2} / {:.2}", serial.create, serial.delete),
            String::new(),
        ),
        row(
            "baseline parallel: create / delete (s)",
            parallel
                .iter()
                .map(|b| format!("x{}: {:.2} / {:.2}", b.parallel, b.create, b.delete))
                .collect::<Vec<_>>()
                .join(", "),
            String::new(),
        ),
        row(
            "baseline: one volume alone, p50 (s)",
            format!("{alone:.2}"),
            String::new(),
        ),
        row(
            format!("burst of {n}: all Bound (s), / best baseline"),
            format!("{:.2}, {ratio:.2}", main.claims.all_bound),
            format!("<= 1.05: {}", verdict(ratio <= 1.05)),
        ),
        row(
            "burst: all PVs made (s), / best baseline",
            format!(
                "{:.2}, {:.2}",
                main.claims.all_pvs,
                main.claims.all_pvs / best.create
            ),
            "(the provisioner's part)".into(),
        ),
        row(
            "burst: per-claim p50 / p95 / max (s)",
            format!("{p50:.2} / {p95:.2} / {max:.2}"),
            String::new(),
        ),
        row(
            "burst: p50 / all Bound",
            format!("{:.2}", main.median_share()),
            format!("<= 0.60: {}", verdict(main.median_share() <= 0.6)),
        ),
    ];
    for run in &runs {
        rows.push(row(
            format!("burst at {}: all Bound, p50 / all (s)", run.setting()),
            format!(
                "{:.2} ({:.2}x best), {:.2}; delete {:.2}",
                run.claims.all_bound,
                run.claims.all_bound / best.create,
                run.median_share(),
                run.delete.all
            ),
            String::new(),
        ));
    }
    rows.extend([
        row(
            "burst delete: all gone (s), / best baseline",
            format!("{:.2}, {delete_ratio:.2}", main.delete.all),
            format!("<= 1.10: {}", verdict(delete_ratio <= 1.10)),
        ),
        row(
            "burst delete: volumes and bricks gone (s), / best",
            format!(
                "{:.2}, {:.2}",
                main.delete.gluster,
                main.delete.gluster / best_delete
            ),
            "(the gluster side)".into(),
        ),
        row(
            format!("{} one at a time: p50 / max (s)", o.one_by_one),
            format!("{o50:.2} / {omax:.2}"),
            format!(
                "max <= {:.2}: {}",
                alone + 1.0,
                verdict(omax <= alone + 1.0)
            ),
        ),
    ]);
    let results = json!({
        "claims": n,
        "burst": main.json(),
        "settings": runs.iter().map(BurstRun::json).collect::<Vec<_>>(),
        "baseline": {
            "serial": {"create_seconds": serial.create, "delete_seconds": serial.delete,
                       "ready": serial.ready, "each": serial.each},
            "parallel": parallel.iter().map(|b| json!({"parallelism": b.parallel,
                "create_seconds": b.create, "delete_seconds": b.delete, "ready": b.ready})).collect::<Vec<_>>(),
        },
        "ratio_burst_to_best_baseline": ratio,
        "ratio_delete_to_best_baseline": delete_ratio,
        "one_by_one": {"latencies": single, "baseline_alone_p50": alone},
    });
    let mut series = vec![
        (
            format!("provisioner, burst of {n}: created → Bound"),
            main.claims.to_bound.clone(),
        ),
        (
            format!("gluster CLI x{}: volume ready", best.parallel),
            best.ready.clone(),
        ),
        (
            "gluster CLI, serial: volume ready".into(),
            serial.ready.clone(),
        ),
    ];
    series.extend(runs.iter().map(|r| {
        (
            format!("provisioner, {}", r.setting()),
            r.claims.to_bound.clone(),
        )
    }));
    (rows, results, series)
}
