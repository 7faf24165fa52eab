//! A test's own corner of the environment: a namespace, the provisioner serving it (a process
//! with its own name, or the Deployment), its StorageClasses and claims, and views of the
//! gluster side to check against.

use std::collections::BTreeMap;
use std::time::Duration;

use glusterfs_provisioner::config::Node;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::support::{Provisioner, admin_client, env, eventually, local, ssh, unique};

pub const BIND_WAIT: Duration = Duration::from_secs(180);

pub fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// A namespace of a test's own, and the provisioner name its classes use.
pub struct Space {
    pub client: Client,
    pub ns: String,
    pub provisioner_name: String,
    pub claims: Api<PersistentVolumeClaim>,
    pub pvs: Api<PersistentVolume>,
}

/// A space served by a provisioner process of the test's own.
pub struct Scenario {
    pub space: Space,
    pub provisioner: Provisioner,
}

impl std::ops::Deref for Scenario {
    type Target = Space;
    fn deref(&self) -> &Space {
        &self.space
    }
}

impl Scenario {
    pub async fn new(tag: &str) -> Self {
        Self::with_env(tag, &[]).await
    }

    pub async fn with_env(tag: &str, vars: &[(&str, &str)]) -> Self {
        let ns = unique(tag);
        let name = format!("e2e.gluster.org/{ns}");
        let space = Space::create(ns, &name).await;
        let provisioner = Provisioner::start_with(&name, vars).await;
        Scenario { space, provisioner }
    }
}

impl Space {
    /// The namespace `ns`, its classes served by the provisioner named `provisioner`.
    pub async fn create(ns: String, provisioner: &str) -> Self {
        let client = admin_client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": ns}})),
            )
            .await
            .unwrap();
        Space {
            claims: Api::namespaced(client.clone(), &ns),
            pvs: Api::all(client.clone()),
            client,
            ns,
            provisioner_name: provisioner.into(),
        }
    }

    /// A StorageClass for this scenario's provisioner; returns its name.
    pub async fn class(&self, params: Value, reclaim: &str) -> String {
        self.class_with(params, reclaim, json!({})).await
    }

    /// The same with more fields (`allowVolumeExpansion`, ...).
    pub async fn class_with(&self, params: Value, reclaim: &str, extra: Value) -> String {
        let name = unique(&format!("{}-sc", &self.ns[..self.ns.len().min(20)]));
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        let mut class = json!({
            "metadata": {"name": name},
            "provisioner": self.provisioner_name,
            "reclaimPolicy": reclaim,
            "parameters": params,
        });
        class
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        classes
            .create(&PostParams::default(), &from_json(class))
            .await
            .unwrap();
        name
    }

    pub async fn claim(
        &self,
        name: &str,
        class: &str,
        size: &str,
        mode: &str,
    ) -> PersistentVolumeClaim {
        self.claim_with(
            name,
            json!({
                "storageClassName": class,
                "accessModes": [mode],
                "resources": {"requests": {"storage": size}},
            }),
        )
        .await
    }

    pub async fn claim_with(&self, name: &str, spec: Value) -> PersistentVolumeClaim {
        self.claims
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": name}, "spec": spec})),
            )
            .await
            .unwrap()
    }

    /// Waits for the claim to be Bound and returns its PV.
    pub async fn bound_pv(&self, claim: &str) -> PersistentVolume {
        let pv_name = eventually(BIND_WAIT, &format!("claim {claim} Bound"), || async {
            let pvc = self.claims.get(claim).await.unwrap();
            let bound = pvc.status.as_ref()?.phase.as_deref() == Some("Bound");
            bound.then(|| pvc.spec?.volume_name).flatten()
        })
        .await;
        self.pvs.get(&pv_name).await.unwrap()
    }

    /// Waits for an event with `reason` from this scenario's provisioner on the claim and
    /// returns its note.
    pub async fn event(&self, claim: &PersistentVolumeClaim, reason: &str) -> String {
        self.event_from(claim, reason, &self.provisioner_name).await
    }

    /// The same for events reported by the provisioner named `reporter`: the controller-manager
    /// reports under the same reasons, and only the provisioner's count.
    pub async fn event_from(
        &self,
        claim: &PersistentVolumeClaim,
        reason: &str,
        reporter: &str,
    ) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let uid = claim.uid();
        let what = format!("{reason} event on {}", claim.name_any());
        wait_event(&events, &what, |e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some(reporter)
                && e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid
        })
        .await
    }

    /// Asks for `size` on the bound claim `name` and waits until its status reports it.
    pub async fn grow_claim(&self, name: &str, size: &str) {
        let bigger = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        self.claims
            .patch(name, &PatchParams::default(), &Patch::Merge(&bigger))
            .await
            .unwrap();
        eventually(
            BIND_WAIT,
            &format!("claim {name} reports {size}"),
            || async {
                let claim = self.claims.get(name).await.unwrap();
                let capacity = claim.status?.capacity?.get("storage")?.0.clone();
                (capacity == size).then_some(())
            },
        )
        .await;
    }

    pub async fn delete_claim(&self, name: &str) {
        self.claims
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    pub async fn wait_released(&self, pv: &str) {
        eventually(BIND_WAIT, &format!("PV {pv} Released"), || async {
            let pv = self.pvs.get(pv).await.unwrap();
            (pv.status?.phase.as_deref() == Some("Released")).then_some(())
        })
        .await;
    }

    /// Deletes a PV by hand, as an administrator might.
    pub async fn delete_pv(&self, pv: &str) {
        self.pvs.delete(pv, &DeleteParams::default()).await.unwrap();
    }

    pub async fn wait_pv_gone(&self, pv: &str) {
        eventually(BIND_WAIT, &format!("PV {pv} deleted"), || async {
            self.pvs.get_opt(pv).await.unwrap().is_none().then_some(())
        })
        .await;
    }

    /// Removes a test's PV, held by the provisioner's finalizer.
    pub async fn discard_pv(&self, pv: &str) {
        self.pvs.delete(pv, &DeleteParams::default()).await.ok();
        let unfinalized = json!({"metadata": {"finalizers": null}});
        self.pvs
            .patch(pv, &PatchParams::default(), &Patch::Merge(unfinalized))
            .await
            .ok();
        self.wait_pv_gone(pv).await;
    }

    pub async fn endpoints(&self, name: &str) -> Option<Endpoints> {
        Api::<Endpoints>::namespaced(self.client.clone(), &self.ns)
            .get_opt(name)
            .await
            .unwrap()
    }
}

/// Waits for an event that `matches` and returns its note.
pub async fn wait_event(
    events: &Api<Event>,
    what: &str,
    matches: impl Fn(&Event) -> bool,
) -> String {
    eventually(Duration::from_secs(60), what, || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .find(|e| matches(e))
            .map(|e| e.note.unwrap_or_default())
    })
    .await
}

pub fn nodes() -> &'static [Node] {
    &env().topology.clusters[0].nodes
}

pub fn node_by_name(name: &str) -> &'static Node {
    nodes().iter().find(|n| n.name == name).unwrap()
}

/// The gluster CLI on the first node, in script mode: its standard output.
pub async fn gluster_cli(args: &[&str]) -> String {
    gluster_cli_on(&nodes()[0], args).await
}

/// The gluster CLI on `node`, in script mode: its standard output. glusterd refuses a command
/// while another holds the volume's lock (the provisioner's health sweep looks at a new volume
/// at once); like an operator, this tries again.
pub async fn gluster_cli_on(node: &Node, args: &[&str]) -> String {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push("--mode=script".into());
    let what = format!("gluster {} while the volume is locked", args.join(" "));
    eventually(Duration::from_secs(60), &what, || async {
        match ssh().run_ok(&node.ssh_address, "gluster", &args).await {
            // With --xml the refusal is the answer's opErrstr, not an exit status.
            Ok(out) if out.contains("Another transaction is in progress") => None,
            Ok(out) => Some(out),
            Err(glusterfs_provisioner::Error::RemoteCommand { stderr, .. })
                if stderr.contains("Another transaction is in progress") =>
            {
                None
            }
            Err(e) => panic!("gluster {}: {e}", args.join(" ")),
        }
    })
    .await
}

/// Whether the volume `name` exists and is started.
pub async fn volume_started(name: &str) -> bool {
    let out = gluster_cli(&["volume", "info", name, "--xml"]).await;
    glusterfs_provisioner::gluster::xml::parse_volume_info(&out)
        .unwrap()
        .iter()
        .any(|v| v.name == name && v.is_started())
}

/// The Warning the provisioner named `reporter` raises on a PV, by reason: its note.
pub async fn pv_warning(client: &Client, reporter: &str, pv: &str, reason: &str) -> String {
    let events: Api<Event> = Api::all(client.clone());
    wait_event(&events, &format!("{reason} on PV {pv}"), |e| {
        e.reason.as_deref() == Some(reason)
            && e.type_.as_deref() == Some("Warning")
            && e.reporting_controller.as_deref() == Some(reporter)
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pv)
    })
    .await
}

/// Gluster volume names as the pool lists them.
pub async fn gluster_volumes() -> Vec<String> {
    let out = ssh()
        .run_ok(
            &nodes()[0].ssh_address,
            "gluster",
            &["volume".into(), "list".into()],
        )
        .await
        .unwrap();
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty() && l != "No volumes present in cluster")
        .collect()
}

/// Volumes with a directory or a brick image (`volume.img`) under a brick root, as
/// `node:/root/volume`, once each.
pub async fn brick_dirs() -> Vec<String> {
    let ssh = ssh();
    let mut out = Vec::new();
    for node in nodes() {
        let mut args: Vec<String> = vec![];
        args.extend(
            node.brick_roots
                .iter()
                .map(|r| r.path.display().to_string()),
        );
        // A volume being removed meanwhile is not an error: it is found or not.
        let kinds = [
            "-ignore_readdir_race",
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "(",
            "-type",
            "d",
            "-o",
        ];
        args.extend(
            kinds
                .into_iter()
                .chain(["-name", "*.img", ")"])
                .map(String::from),
        );
        let found = ssh.run(&node.ssh_address, "find", &args).await.unwrap();
        // find still says so of a directory removed as it reads it; it lists the rest.
        let mut errors = found.stderr.lines().peekable();
        let raced =
            errors.peek().is_some() && errors.all(|l| l.ends_with(": No such file or directory"));
        assert!(found.success || raced, "find: {}", found.stderr);
        let volumes = found.stdout.lines().map(|l| l.trim_end_matches(".img"));
        out.extend(volumes.map(|l| format!("{}:{l}", node.name)));
    }
    out.sort();
    out.dedup();
    out
}

/// The gluster volume a `glusterfs` PV names.
pub fn glusterfs_path(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .unwrap()
        .glusterfs
        .as_ref()
        .unwrap()
        .path
        .clone()
}

/// The Endpoints a `glusterfs` PV mounts through.
pub fn endpoints_name(pv: &PersistentVolume) -> String {
    let spec = pv.spec.as_ref().unwrap();
    spec.glusterfs.as_ref().unwrap().endpoints.clone()
}

/// The volume name suffix every volume of this claim carries.
pub fn uid_suffix(claim: &PersistentVolumeClaim) -> String {
    claim.uid().unwrap().replace('-', "")
}

/// Bricks recorded on a PV: `(node, path)`.
pub fn pv_bricks(pv: &PersistentVolume) -> Vec<(String, String)> {
    pv.annotations()["gluster.org/bricks"]
        .split(',')
        .map(|b| {
            let (n, p) = b.split_once(':').unwrap();
            (n.to_string(), p.to_string())
        })
        .collect()
}

pub fn annotations(pv: &PersistentVolume) -> &BTreeMap<String, String> {
    pv.metadata.annotations.as_ref().unwrap()
}

/// The addresses an Endpoints object lists.
pub fn endpoint_ips(ep: &Endpoints) -> Vec<String> {
    ep.subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect()
}

/// A FUSE mount from the host, the way the kubelet makes one: the first server, the others as
/// backup volfile servers.
async fn mount_fuse(ips: &[String], path: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = "log-level=WARNING".to_string();
    if ips.len() > 1 {
        opts.push_str(&format!(",backup-volfile-servers={}", ips[1..].join(":")));
    }
    let src = format!("{}:/{}", ips[0], path);
    let target = dir.path().to_str().unwrap();
    local("mount", &["-t", "glusterfs", "-o", &opts, &src, target]).await;
    dir
}

/// A FUSE mount of a PV made the way the kubelet does it: servers from the PV's Endpoints.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub async fn of(scenario: &Scenario, pv: &PersistentVolume) -> Mount {
        let source = pv.spec.as_ref().unwrap().glusterfs.as_ref().unwrap();
        let ep = scenario
            .endpoints(&source.endpoints)
            .await
            .expect("Endpoints of the PV");
        Mount {
            dir: mount_fuse(&endpoint_ips(&ep), &source.path).await,
        }
    }

    /// The volume `name`, mounted through the pool's nodes.
    pub async fn volume(name: &str) -> Mount {
        let ips: Vec<String> = nodes()
            .iter()
            .map(|n| n.storage_address.to_string())
            .collect();
        Mount {
            dir: mount_fuse(&ips, name).await,
        }
    }

    pub async fn write(&self, file: &str, text: &str) {
        tokio::fs::write(self.path().join(file), text)
            .await
            .unwrap();
    }

    pub async fn read(&self, file: &str) -> String {
        tokio::fs::read_to_string(self.path().join(file))
            .await
            .unwrap()
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub async fn unmount(self) {
        local("umount", &[self.dir.path().to_str().unwrap()]).await;
    }
}

/// Runs `sh -c SCRIPT` on every node, with `args`.
pub async fn on_every_node(script: &str, args: &[&str]) {
    for node in nodes() {
        let mut all = vec!["-c".to_string(), script.to_string(), "sh".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        ssh().run_ok(&node.ssh_address, "sh", &all).await.unwrap();
    }
}

/// A replica-3 volume made with gluster's CLI, its bricks at `<dir>/<name>/brick` on each node.
pub async fn make_volume(name: &str, dir: &str) {
    on_every_node("mkdir -p \"$1/$2/brick\"", &[dir, name]).await;
    let mut args = vec!["volume", "create", name, "replica", "3"];
    let bricks: Vec<String> = nodes()
        .iter()
        .map(|n| format!("{}:{dir}/{name}/brick", n.storage_address))
        .collect();
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    gluster_cli(&args).await;
    gluster_cli(&["volume", "start", name]).await;
}

/// Records an identity on `volume` by hand, as a provisioner of the Kubernetes cluster
/// `kube_cluster` would have for the claim `claim_uid`.
pub async fn set_identity(volume: &str, kube_cluster: &str, claim_uid: &str, policy: &str) {
    let pv = format!("pvc-{claim_uid}");
    gluster_cli(&[
        "volume",
        "set",
        volume,
        "user.glusterfs-provisioner.kube-cluster",
        kube_cluster,
        "user.glusterfs-provisioner.claim-uid",
        claim_uid,
        "user.glusterfs-provisioner.pv",
        &pv,
        "user.glusterfs-provisioner.reclaim-policy",
        policy,
        "user.glusterfs-provisioner.provisioner",
        "gluster.org/glusterfs",
    ])
    .await;
}

/// This Kubernetes cluster's id: its kube-system namespace's UID.
pub async fn kube_cluster_id(client: &Client) -> String {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.get("kube-system").await.unwrap().uid().unwrap()
}

/// `glusterfs-provisioner COMMAND --topology … ARGS` as the cluster admin, with SSH sockets of
/// its own: (success, standard output).
pub async fn operator_command(command: &str, args: &[&str]) -> (bool, String) {
    let kubeconfig = env().state_dir.join("admin.kubeconfig");
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend(args);
    pool_command(command, &all).await
}

/// The same without `--kubeconfig`, for `topology`, which asks only the nodes.
pub async fn pool_command(command: &str, args: &[&str]) -> (bool, String) {
    let control = env().state_dir.join("test-ssh").join(unique(command));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"))
        .arg(command)
        .arg("--topology")
        .arg(env().state_dir.join("topology.json"))
        .arg("--ssh-control-dir")
        .arg(control)
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

/// Waits until `topology` passes on the environment's topology file (a probed node takes a
/// while to be known to every peer): its table.
pub async fn topology_checks() -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, table) = pool_command("topology", &[]).await;
        if ok {
            return table;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "topology fails:\n{table}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
