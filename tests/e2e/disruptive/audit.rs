//! `audit` judges the whole pool and, with `--apply`, removes from it: it runs alone, so no
//! other test's volumes are in flight. Each kind of leftover is made by hand; the audit lists
//! each, and `--apply` removes exactly the orphans of ours, past the grace period.

use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::pods::{DEPLOYED_NS, POD_WAIT, kubectl};
use crate::scenario::*;
use crate::support::{env, eventually, ssh, unique};

/// `glusterfs-provisioner audit ARGS` as the cluster admin: (success, standard output).
async fn audit(args: &[&str]) -> (bool, String) {
    let control = env().state_dir.join("test-ssh").join(unique("audit"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_glusterfs-provisioner"))
        .arg("audit")
        .arg("--topology")
        .arg(env().state_dir.join("topology.json"))
        .arg("--ssh-control-dir")
        .arg(control)
        .arg("--kubeconfig")
        .arg(env().state_dir.join("admin.kubeconfig"))
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

/// One run of `examples/audit-cronjob.yaml` (as `kubectl create job --from` starts one, its
/// schedule suspended): whether it succeeded, and its log.
async fn cron_job_run() -> (bool, String) {
    let example = include_str!("../../../examples/audit-cronjob.yaml");
    let manifest = example
        // This environment's Kubernetes (1.20) serves CronJobs as batch/v1beta1, same fields.
        .replace(
            "apiVersion: batch/v1\nkind: CronJob",
            "apiVersion: batch/v1beta1\nkind: CronJob",
        )
        .replace(
            "  concurrencyPolicy:",
            "  suspend: true\n  concurrencyPolicy:",
        )
        .replace(
            "image: ghcr.io/gluster/glusterfs-provisioner:0.1.0\n",
            "image: localhost/glusterfs-provisioner:e2e\n              imagePullPolicy: Never\n",
        );
    assert!(manifest.contains("suspend: true") && manifest.contains("localhost/"));
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], &manifest).await;
    assert!(ok, "{err}");
    let job = unique("audit");
    let from = "--from=cronjob/glusterfs-provisioner-audit";
    let (ok, _, err) = kubectl(&["-n", DEPLOYED_NS, "create", "job", &job, from], "").await;
    assert!(ok, "{err}");
    let status = "jsonpath={.status.succeeded}/{.status.failed}";
    let done = eventually(POD_WAIT, &format!("Job {job} done"), || async {
        let (_, out, _) = kubectl(&["-n", DEPLOYED_NS, "get", "job", &job, "-o", status], "").await;
        match out.trim() {
            "1/" => Some(true),
            "/1" => Some(false),
            _ => None,
        }
    })
    .await;
    let (_, log, _) = kubectl(&["-n", DEPLOYED_NS, "logs", &format!("job/{job}")], "").await;
    kubectl(&["-n", DEPLOYED_NS, "delete", "job", &job], "").await;
    (done, log)
}

/// A name as this provisioner gives a claim's volume, for a claim that does not exist.
fn volume_like_ours() -> String {
    format!("vol_{}", uuid::Uuid::new_v4().simple())
}

/// Runs `sh -c SCRIPT` on every node, with `args`.
async fn on_every_node(script: &str, args: &[&str]) {
    for node in nodes() {
        let mut all = vec!["-c".to_string(), script.to_string(), "sh".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        ssh().run_ok(&node.ssh_address, "sh", &all).await.unwrap();
    }
}

/// A replica-3 volume made with gluster's CLI, its bricks at `<dir>/<name>/brick` on each node.
async fn make_volume(name: &str, dir: &str) {
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

fn line_of<'a>(report: &'a str, needle: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{report}"))
}

#[tokio::test]
async fn audit_lists_each_leftover_and_apply_removes_only_provable_orphans() {
    let space = Space::deployed("audit").await;
    let class = space.class(json!({}), "Delete").await;
    for claim in ["kept", "gone"] {
        space.claim(claim, &class, "1Gi", "ReadWriteOnce").await;
    }
    let kept = glusterfs_path(&space.bound_pv("kept").await);
    let gone_pv = space.bound_pv("gone").await;
    let gone = glusterfs_path(&gone_pv);
    let root = nodes()[0].brick_roots[1].path.display().to_string();

    // A PV whose volume was deleted with the gluster CLI.
    gluster_cli(&["volume", "stop", &gone]).await;
    gluster_cli(&["volume", "delete", &gone]).await;
    // A volume as a provisioner killed mid-way leaves it, its claim deleted since.
    let orphan = volume_like_ours();
    make_volume(&orphan, &root).await;
    // A brick directory of no volume, on one node.
    let stray = volume_like_ours();
    let node1 = &nodes()[0];
    let args = ["-p".to_string(), format!("{root}/{stray}/brick")];
    ssh()
        .run_ok(&node1.ssh_address, "mkdir", &args)
        .await
        .unwrap();
    // A volume named like ours, its bricks where this provisioner never puts them (each node's
    // brick root is its own file system; the directory above is the machine's).
    let foreign = volume_like_ours();
    let elsewhere = format!("{root}/foreign");
    make_volume(&foreign, &elsewhere).await;
    // Endpoints labelled as ours, for a PV that never existed.
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(space.client.clone(), &space.ns);
    let stale = from_json(json!({
        "metadata": {"name": "glusterfs-dynamic-stale", "labels": {"gluster.org/pv": "pvc-never"}},
        "subsets": [{"addresses": [{"ip": nodes()[0].storage_address.to_string()}],
                     "ports": [{"port": 1}]}],
    }));
    endpoints
        .create(&PostParams::default(), &stale)
        .await
        .unwrap();

    let (ok, report) = audit(&[]).await;
    assert!(!ok, "leftovers make audit fail:\n{report}");
    let (ok, log) = cron_job_run().await;
    assert!(
        !ok && log.contains(&orphan),
        "the CronJob's run fails and says why:\n{log}"
    );
    assert!(
        line_of(&report, &orphan).contains("orphan volume"),
        "{report}"
    );
    let stray_line = line_of(&report, &format!("gp-node1:{root}/{stray}"));
    assert!(stray_line.contains("stray brick"), "{report}");
    let missing = line_of(&report, &format!("PV {}: ", gone_pv.name_any()));
    assert!(missing.contains("volume missing"), "{report}");
    assert!(line_of(&report, &foreign).contains("not ours"), "{report}");
    let ep = line_of(&report, "glusterfs-dynamic-stale");
    assert!(ep.contains("pvc-never"), "{report}");
    assert!(
        !report.contains(&kept),
        "a volume with its PV is fine:\n{report}"
    );

    // Everything is younger than the default grace period: nothing is removed.
    let (_, young) = audit(&["--apply"]).await;
    assert!(!young.contains("[removed]"), "{young}");
    assert!(volume_started(&orphan).await);

    let (ok, applied) = audit(&["--apply", "--grace-seconds", "0"]).await;
    assert!(!ok, "what it may not remove is left:\n{applied}");
    for removed in [orphan.as_str(), &stray, "glusterfs-dynamic-stale"] {
        assert!(
            line_of(&applied, removed).contains("[removed]"),
            "{applied}"
        );
    }
    for kept in [foreign.as_str(), &format!("PV {}: ", gone_pv.name_any())] {
        assert!(!line_of(&applied, kept).contains("[removed]"), "{applied}");
    }
    let volumes = gluster_volumes().await;
    assert!(!volumes.contains(&orphan), "{volumes:?}");
    assert!(
        volumes.contains(&foreign) && volumes.contains(&kept),
        "{volumes:?}"
    );
    let dirs = brick_dirs().await;
    assert!(
        !dirs
            .iter()
            .any(|d| d.ends_with(&orphan) || d.ends_with(&stray)),
        "{dirs:?}"
    );
    assert!(
        endpoints
            .get_opt("glusterfs-dynamic-stale")
            .await
            .unwrap()
            .is_none()
    );

    // The foreign volume is its owner's to remove; the rest goes with the namespace.
    gluster_cli(&["volume", "stop", &foreign]).await;
    gluster_cli(&["volume", "delete", &foreign]).await;
    on_every_node("rm -rf \"$1\"", &[&elsewhere]).await;
    let pvs = [space.bound_pv("kept").await.name_any(), gone_pv.name_any()];
    space.delete_all(&pvs).await;
    let (ok, after) = audit(&[]).await;
    assert!(ok, "nothing left:\n{after}");
    let (ok, log) = cron_job_run().await;
    assert!(ok, "{log}");
    kubectl(
        &[
            "-n",
            DEPLOYED_NS,
            "delete",
            "cronjob",
            "glusterfs-provisioner-audit",
        ],
        "",
    )
    .await;
}
