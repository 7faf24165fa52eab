//! Pods on the worker node's real kubelet (v1.20, its own `glusterfs` volume plugin) mount the
//! volumes that the provisioner deployed from `manifests/` makes, and write to them.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::scenario::{Space, annotations, from_json, gluster_volumes};
use crate::support::{Prometheus, env, eventually, unique};

/// The provisioner name of the Deployment (`manifests/`), and its namespace.
pub const DEPLOYED: &str = "gluster.org/glusterfs";
pub const DEPLOYED_NS: &str = "glusterfs-provisioner";
/// The CSI node plugin's namespace (the `privileged` Pod Security level).
pub const CSI_NS: &str = "glusterfs-csi";
pub const POD_WAIT: Duration = Duration::from_secs(240);

pub fn shell_image() -> String {
    std::env::var("GP_SHELL_IMAGE").unwrap_or("localhost/gp-e2e/shell:2".into())
}

/// Runs the environment's kubectl as the admin, with `stdin`; returns (success, stdout, stderr).
pub async fn kubectl(args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let program = std::env::var("GP_KUBECTL").expect("GP_KUBECTL (source the env.sh of e2e/env)");
    let mut child = tokio::process::Command::new(program)
        .arg("--kubeconfig")
        .arg(env().state_dir.join("admin.kubeconfig"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Space {
    /// A space whose classes the deployed provisioner serves.
    pub async fn deployed(tag: &str) -> Space {
        Space::create(unique(tag), DEPLOYED).await
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A shell pod that mounts `claim` at /data, with the pod `security` context given.
    pub async fn pod(&self, name: &str, claim: &str, security: Value) -> Pod {
        self.pod_running(name, claim, security, "sleep 100000")
            .await
    }

    /// The same, running `script` (`sh -c`).
    pub async fn pod_running(&self, name: &str, claim: &str, security: Value, script: &str) -> Pod {
        let pod = json!({
            "metadata": {"name": name},
            "spec": {
                "securityContext": security,
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "shell", "image": shell_image(), "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            }
        });
        self.pods()
            .create(&PostParams::default(), &from_json(pod))
            .await
            .unwrap()
    }

    /// Waits until the pod named `name` (with a UID other than `not_uid`) is Running and Ready.
    pub async fn running(&self, name: &str, not_uid: Option<&str>) -> Pod {
        eventually(POD_WAIT, &format!("pod {name} Running"), || async {
            let pod = self.pods().get_opt(name).await.unwrap()?;
            let ready = pod
                .status
                .as_ref()?
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && pod.uid().as_deref() != not_uid).then_some(pod)
        })
        .await
    }

    /// `sh -c script` in the pod's first container; returns (success, stdout + stderr).
    pub async fn exec(&self, pod: &str, script: &str) -> (bool, String) {
        let (ok, out, err) =
            kubectl(&["-n", &self.ns, "exec", pod, "--", "sh", "-c", script], "").await;
        (ok, format!("{out}{err}"))
    }

    pub async fn exec_ok(&self, pod: &str, script: &str) -> String {
        let (ok, out) = self.exec(pod, script).await;
        assert!(ok, "{pod}: {script}: {out}");
        out
    }

    /// Deletes the pod and waits until it is gone.
    pub async fn delete_pod(&self, pod: &str) {
        self.pods()
            .delete(pod, &DeleteParams::default())
            .await
            .unwrap();
        eventually(POD_WAIT, &format!("pod {pod} gone"), || async {
            let gone = self.pods().get_opt(pod).await.unwrap().is_none();
            gone.then_some(())
        })
        .await;
    }

    /// Deletes the namespace and waits until the PVs of its claims and their gluster volumes
    /// are gone (the classes here all delete).
    pub async fn delete_all(self, pvs: &[String]) {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.ns, &DeleteParams::default())
            .await
            .unwrap();
        for pv in pvs {
            self.wait_pv_gone(pv).await;
        }
        let volumes = gluster_volumes().await;
        for pv in pvs {
            let suffix = pv.trim_start_matches("pvc-").replace('-', "");
            assert!(
                !volumes.iter().any(|v| v.ends_with(&suffix)),
                "volume of {pv} left: {volumes:?}"
            );
        }
    }
}

/// `examples/storageclass.yaml`, applied as a user would (other tests may have applied it).
pub async fn example_class() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/storageclass.yaml");
    let (mut ok, _, mut err) = kubectl(&["apply", "-f", path], "").await;
    // Two tests applying it at once: one creates it, the other's create is refused, and a
    // second apply finds it there.
    if !ok && err.contains("AlreadyExists") {
        (ok, _, err) = kubectl(&["apply", "-f", path], "").await;
    }
    assert!(ok, "{err}");
    "glusterfs-replicated".into()
}

#[tokio::test]
async fn statefulset_example_pods_write_and_keep_their_data() {
    let class = example_class().await;
    statefulset_case(Space::deployed("sts").await, &class).await;
}

/// The StatefulSet example on `class`: its pods write, and a recreated pod finds its data.
/// Returns the names of its (deleted) PVs.
pub async fn statefulset_case(space: Space, class: &str) -> Vec<String> {
    // The example's nginx comes from a registry this environment has not got; busybox's httpd
    // serves the same directory.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/statefulset.yaml"
    ))
    .unwrap();
    let local_image = format!(
        "image: {}\n          imagePullPolicy: Never\n          \
         command: [httpd, -f, -p, \"80\", -h, /usr/share/nginx/html]\n",
        shell_image()
    );
    assert!(example.contains("image: nginx\n"));
    let manifest = example.replace("image: nginx\n", &local_image).replace(
        "storageClassName: glusterfs-replicated",
        &format!("storageClassName: {class}"),
    );
    let (ok, _, err) = kubectl(&["-n", &space.ns, "apply", "-f", "-"], &manifest).await;
    assert!(ok, "{err}");

    let pods = ["web-0", "web-1", "web-2"];
    for pod in pods {
        space.running(pod, None).await;
        let out = space
            .exec_ok(
                pod,
                "cd /usr/share/nginx/html && echo \"written by $(hostname)\" >index.html && \
                 cat index.html && wget -qO- http://127.0.0.1/index.html && \
                 grep ' /usr/share/nginx/html ' /proc/mounts",
            )
            .await;
        assert_eq!(
            out.matches(&format!("written by {pod}")).count(),
            2,
            "read back from the file and over HTTP: {out}"
        );
        assert!(out.contains("fuse.glusterfs"), "a GlusterFS mount: {out}");
    }

    // The StatefulSet recreates a deleted pod on the same claim; the data is there.
    let old = space.running("web-1", None).await.uid().unwrap();
    space
        .pods()
        .delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    space.running("web-1", Some(&old)).await;
    let out = space
        .exec_ok("web-1", "cat /usr/share/nginx/html/index.html")
        .await;
    assert_eq!(out.trim(), "written by web-1");

    let mut pvs = Vec::new();
    for pod in pods {
        pvs.push(space.bound_pv(&format!("data-{pod}")).await.name_any());
    }
    space.delete_all(&pvs).await;
    pvs
}

#[tokio::test]
async fn a_non_root_pod_writes_through_the_pv_gid() {
    let class = example_class().await;
    non_root_case(Space::deployed("nonroot").await, &class).await;
}

pub async fn non_root_case(space: Space, class: &str) {
    space.claim("data", class, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("data").await;
    let gid = annotations(&pv)["pv.beta.kubernetes.io/gid"].clone();
    // No fsGroup: only the kubelet's reading of the PV's GID lets this user in.
    space
        .pod(
            "writer",
            "data",
            json!({"runAsUser": 1001, "runAsGroup": 1001}),
        )
        .await;
    space.running("writer", None).await;
    let out = space
        .exec_ok(
            "writer",
            "id -G; echo hello >/data/by-1001 && stat -c '%u %g' /data/by-1001 /data",
        )
        .await;
    let mut lines = out.lines();
    let groups: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert!(
        groups.contains(&gid.as_str()),
        "supplemental group {gid}: {out}"
    );
    assert!(
        lines.next().unwrap().starts_with("1001 "),
        "owned by 1001: {out}"
    );
    assert_eq!(
        lines.next(),
        Some(format!("0 {gid}").as_str()),
        "volume root: {out}"
    );
    space.delete_all(&[pv.name_any()]).await;
}

#[tokio::test]
async fn two_pods_share_a_read_write_many_claim() {
    let class = example_class().await;
    rwx_case(Space::deployed("rwx").await, &class).await;
}

pub async fn rwx_case(space: Space, class: &str) {
    space.claim("shared", class, "1Gi", "ReadWriteMany").await;
    let pv = space.bound_pv("shared").await;
    space.pod("a", "shared", json!({})).await;
    space.pod("b", "shared", json!({})).await;
    space.running("a", None).await;
    space.running("b", None).await;
    space.exec_ok("a", "echo from-a >/data/a").await;
    assert_eq!(space.exec_ok("b", "cat /data/a").await.trim(), "from-a");
    space.exec_ok("b", "echo from-b >/data/b").await;
    assert_eq!(space.exec_ok("a", "cat /data/b").await.trim(), "from-b");
    space.delete_all(&[pv.name_any()]).await;
}

#[tokio::test]
async fn a_full_claim_fails_the_writer_only() {
    let space = Space::deployed("full").await;
    let class = space.class(json!({"volumetype": "none"}), "Delete").await;
    space.claim("small", &class, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("small").await;
    space.pod("filler", "small", json!({})).await;
    space.running("filler", None).await;
    // Quota enforcement is eventual: keep writing well past the size.
    let (ok, out) = space
        .exec(
            "filler",
            "dd if=/dev/zero of=/data/fill bs=1M count=1400 conv=fsync",
        )
        .await;
    assert!(!ok, "writing 1400 MiB into 1 GiB must fail: {out}");
    assert!(
        out.contains("Disk quota exceeded") || out.contains("No space left on device"),
        "EDQUOT or ENOSPC in the pod: {out}"
    );
    // The pod, its mount and the claim go on: free the space and write again. The brick
    // learns that space came back on its next free-space check (every few seconds), so
    // the write is retried until it passes.
    space.exec_ok("filler", "rm /data/fill").await;
    let out = eventually(
        Duration::from_secs(60),
        "a write after freeing space",
        || async {
            let (ok, out) = space
                .exec("filler", "echo again >/data/after && cat /data/after")
                .await;
            ok.then_some(out)
        },
    )
    .await;
    assert_eq!(out.trim(), "again");
    let pod = space.running("filler", None).await;
    let restarts: i32 = pod
        .status
        .unwrap()
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0);
    space.delete_all(&[pv.name_any()]).await;
}

/// The Deployment's pods, by name: (Ready, pod IP).
pub(crate) async fn provisioner_pods(client: &kube::Client) -> Vec<(String, bool, Option<String>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), DEPLOYED_NS);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=glusterfs-provisioner"))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (p.name_any(), ready, status.pod_ip)
        })
        .collect()
}

#[tokio::test]
async fn deployed_provisioner_is_ready_scraped_and_fails_over() {
    let space = Space::deployed("deploy").await;
    let client = space.client.clone();
    let ready = eventually(POD_WAIT, "two Ready provisioner pods", || async {
        let pods = provisioner_pods(&client).await;
        (pods.len() == 2 && pods.iter().all(|p| p.1)).then_some(pods)
    })
    .await;

    // Prometheus scrapes the pods at their addresses. Debian's Prometheus is built without
    // Kubernetes discovery, so the test lists the pods as file discovery would.
    let targets: Vec<String> = ready
        .iter()
        .map(|(_, _, ip)| format!("'{}:8080'", ip.as_deref().unwrap()))
        .collect();
    let prometheus = Prometheus::start(
        19093,
        &format!(
            "  - job_name: glusterfs-provisioner\n    static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        ),
    )
    .await;
    let scraped = eventually(
        Duration::from_secs(90),
        "Prometheus scraping both pods",
        || async {
            let r = prometheus
                .query("up{job=\"glusterfs-provisioner\"} == 1")
                .await;
            let targets: Vec<String> = r["data"]["result"]
                .as_array()?
                .iter()
                .map(|s| s["metric"]["instance"].as_str().unwrap_or_default().into())
                .collect();
            (targets.len() == 2).then_some(targets)
        },
    )
    .await;
    for (name, _, ip) in &ready {
        let ip = ip.as_deref().unwrap();
        assert!(
            scraped.iter().any(|t| t == &format!("{ip}:8080")),
            "{name} at {ip}: {scraped:?}"
        );
    }
    let leaders = eventually(Duration::from_secs(60), "one leader", || async {
        let r = prometheus.query("sum(glusterfs_provisioner_leader)").await;
        r["data"]["result"][0]["value"][1]
            .as_str()
            .map(String::from)
    })
    .await;
    assert_eq!(leaders, "1", "exactly one of the two replicas leads");

    // Deleting the leader's pod hands the lease to the other replica; claims keep binding.
    let leases: Api<Lease> = Api::namespaced(client.clone(), DEPLOYED_NS);
    let holder = || async {
        leases
            .get_opt("glusterfs-provisioner")
            .await
            .unwrap()?
            .spec?
            .holder_identity
    };
    let leader = eventually(Duration::from_secs(60), "a lease holder", holder).await;
    assert!(
        ready.iter().any(|p| p.0 == leader),
        "{leader} leads: {ready:?}"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), DEPLOYED_NS);
    pods.delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let new_leader = eventually(Duration::from_secs(60), "another lease holder", || async {
        holder().await.filter(|h| h != &leader)
    })
    .await;
    // The standby or the pod that replaces the deleted one, whichever asks first: the leader
    // released the lease on SIGTERM.
    let current = provisioner_pods(&client).await;
    assert!(
        current.iter().any(|p| p.0 == new_leader),
        "a replica of the Deployment ({new_leader}) takes over: {current:?}"
    );
    let class = example_class().await;
    space.claim("after", &class, "1Gi", "ReadWriteOnce").await;
    let pv = space.bound_pv("after").await;
    eventually(
        POD_WAIT,
        "the Deployment back at two Ready pods",
        || async {
            let pods = provisioner_pods(&client).await;
            (pods.len() == 2 && pods.iter().all(|p| p.1)).then_some(())
        },
    )
    .await;
    space.delete_all(&[pv.name_any()]).await;
}

#[tokio::test]
async fn wait_for_first_consumer_provisions_once_the_pod_has_a_node() {
    let s = crate::scenario::Scenario::new("wffc").await;
    let delayed = s
        .class_with(
            json!({"volumetype": "none"}),
            "Delete",
            json!({"volumeBindingMode": "WaitForFirstConsumer"}),
        )
        .await;
    let immediate = s.class(json!({"volumetype": "none"}), "Delete").await;
    let waiting = s.claim("waiting", &delayed, "1Gi", "ReadWriteOnce").await;
    // A claim made after it binds: the provisioner has gone past the waiting claim.
    s.claim("sign", &immediate, "1Gi", "ReadWriteOnce").await;
    let sign = s.bound_pv("sign").await;
    let pv = format!("pvc-{}", waiting.uid().unwrap());
    assert!(
        s.pvs.get_opt(&pv).await.unwrap().is_none(),
        "no volume before a pod needs it"
    );
    // A pod: the scheduler picks the node and says so on the claim; then it is provisioned.
    s.pod("consumer", "waiting", json!({})).await;
    let pod = s.running("consumer", None).await;
    let claim = s.claims.get("waiting").await.unwrap();
    let node = pod.spec.unwrap().node_name.unwrap();
    assert_eq!(
        claim
            .annotations()
            .get("volume.kubernetes.io/selected-node"),
        Some(&node)
    );
    assert_eq!(
        claim.spec.unwrap().volume_name.as_deref(),
        Some(pv.as_str())
    );
    s.exec_ok("consumer", "echo ok >/data/f").await;
    s.pods()
        .delete("consumer", &DeleteParams::default())
        .await
        .unwrap();
    s.delete_claim("sign").await;
    s.delete_claim("waiting").await;
    s.wait_pv_gone(&sign.name_any()).await;
    s.wait_pv_gone(&pv).await;
}
