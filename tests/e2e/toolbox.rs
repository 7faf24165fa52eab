//! The operator's commands as an operator's shell runs them: through kubectl as the `gluster`
//! plugin, `RUST_BACKTRACE=1` set, stdout read by a script (`-o json`) and the exit code
//! telling how it went (README: "The operator's toolbox").

use std::path::PathBuf;
use std::process::Output;

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::scenario::*;
use crate::support::{env, unique};

/// What a command left: its exit code, stdout and stderr.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Ran {
    /// Stdout as the JSON document of `kind`.
    fn document(&self, kind: &str) -> Value {
        let doc: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout));
        assert_eq!(doc["apiVersion"], "glusterfs-provisioner/v1", "{doc}");
        assert_eq!(doc["kind"], kind, "{doc}");
        doc
    }

    /// What stderr says besides the log, which holds warnings and errors only.
    fn said(&self) -> Vec<&str> {
        let mut said = Vec::new();
        for line in self.stderr.lines() {
            let mut words = line.split_whitespace();
            let stamp = words.next().unwrap_or_default();
            let logged = stamp.ends_with('Z') && stamp.contains('T');
            if !logged {
                said.push(line);
                continue;
            }
            let level = words.next().unwrap_or_default();
            assert!(["WARN", "ERROR"].contains(&level), "{}", self.stderr);
        }
        said
    }

    /// Exit 0 saying nothing when `problems` is 0; else exit 1 and one line, no backtrace.
    fn ended_as(&self, problems: u64) {
        let said = self.said();
        if problems == 0 {
            assert_eq!((self.code, said), (0, vec![]), "{}", self.stdout);
        } else {
            assert_eq!((self.code, said.len()), (1, 1), "{}", self.stderr);
        }
    }
}

/// A directory holding `kubectl-gluster`, a link to the binary as the README installs it.
fn plugin_dir() -> PathBuf {
    let dir = env().state_dir.join(unique("plugin"));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = env!("CARGO_BIN_EXE_glusterfs-provisioner");
    std::os::unix::fs::symlink(binary, dir.join("kubectl-gluster")).unwrap();
    dir
}

/// `kubectl gluster ARGS`, with the plugin on PATH, the admin's KUBECONFIG, RUST_BACKTRACE=1
/// and no RUST_LOG, as in an operator's shell.
async fn kubectl_gluster(args: &[&str]) -> Ran {
    let kubectl = std::env::var("GP_KUBECTL").expect("GP_KUBECTL (source the env.sh of e2e/env)");
    let path = format!(
        "{}:{}",
        plugin_dir().display(),
        std::env::var("PATH").unwrap()
    );
    tokio::process::Command::new(kubectl)
        .arg("gluster")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", env().state_dir.join("admin.kubeconfig"))
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
        .into()
}

/// `--topology` and SSH sockets of the command's own.
fn topology_args(topology: &std::path::Path) -> Vec<String> {
    let control = env().state_dir.join("test-ssh").join(unique("toolbox"));
    let args = [
        topology.as_os_str(),
        "--ssh-control-dir".as_ref(),
        control.as_os_str(),
    ];
    let mut out = vec!["--topology".to_string()];
    out.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
    out
}

async fn run(command: &str, topology: &std::path::Path, extra: &[&str]) -> Ran {
    let mut args = vec![command.to_string()];
    args.extend(topology_args(topology));
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl_gluster(&args).await
}

fn env_topology() -> PathBuf {
    env().state_dir.join("topology.json")
}

/// `kubectl gluster status`, `topology`, `audit` and `adopt`: the table alone on stdout, the
/// same as one JSON document with `-o json`, and the exit code its summary implies. Others'
/// tests make volumes meanwhile, so each document is checked against itself, and this test's
/// own claim against what gluster has.
#[tokio::test]
async fn kubectl_gluster_prints_tables_and_json_for_scripts() {
    let s = Scenario::new("toolbox").await;
    let class = s.class(json!({"volumetype": "none"}), "Delete").await;
    s.claim("data", &class, "1Gi", "ReadWriteOnce").await;
    let pv = s.bound_pv("data").await;
    let volume = glusterfs_path(&pv);
    let claim = format!("{}/data", s.ns);

    let help = kubectl_gluster(&["--help"]).await;
    assert!(help.stdout.contains("kubectl gluster"), "{}", help.stdout);

    let table = run("status", &env_topology(), &[]).await;
    let mut lines = table.stdout.lines();
    assert!(
        lines.next().unwrap().starts_with("CLAIM "),
        "{}",
        table.stdout
    );
    let row = lines.find(|l| l.contains(&volume)).unwrap();
    assert!(row.starts_with(&claim) && row.ends_with(" whole"), "{row}");
    // Every line is the table's: rows, then one line per node.
    let nodes = nodes().len();
    let node_lines = table.stdout.lines().filter(|l| l.starts_with("node "));
    assert_eq!(node_lines.count(), nodes, "{}", table.stdout);

    let status = run("status", &env_topology(), &["-o", "json"]).await;
    let doc = status.document("VolumeStatus");
    let volumes = doc["volumes"].as_array().unwrap();
    let mine = volumes.iter().find(|v| v["volume"] == volume.as_str());
    let mine = mine.unwrap_or_else(|| panic!("{volume} in {doc}"));
    assert_eq!(mine["claim"], claim.as_str());
    assert_eq!(mine["pv"], pv.name_any().as_str());
    assert_eq!((&mine["bricksUp"], &mine["bricks"]), (&json!(1), &json!(1)));
    assert_eq!(
        (&mine["whole"], &mine["status"]),
        (&json!(true), &json!("whole"))
    );
    let not_whole = volumes.iter().filter(|v| v["whole"] == false).count();
    assert_eq!(doc["summary"]["notWhole"], not_whole, "{doc}");
    assert_eq!(doc["summary"]["volumes"], volumes.len(), "{doc}");
    assert_eq!(doc["nodes"].as_array().unwrap().len(), nodes, "{doc}");
    status.ended_as(not_whole as u64);

    let topology = run("topology", &env_topology(), &["-o", "json"]).await;
    let doc = topology.document("TopologyCheck");
    let rows = doc["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), nodes, "{doc}");
    for row in rows {
        assert_eq!(row["ok"], row["problems"] == json!([]), "{row}");
        assert_eq!(row["brickRoots"].as_array().unwrap().len(), 2, "{row}");
    }
    topology.ended_as(doc["summary"]["problems"].as_u64().unwrap());

    // Read-only: without --apply neither changes anything.
    let audit = run("audit", &env_topology(), &["-o", "json"]).await;
    let doc = audit.document("Audit");
    let findings = doc["findings"].as_array().unwrap();
    let problems = findings.iter().filter(|f| f["problem"] == true).count();
    assert_eq!(doc["summary"]["problemsLeft"], problems, "{doc}");
    assert!(findings.iter().all(|f| f["action"] != "removed"), "{doc}");
    audit.ended_as(problems as u64);
    let adopt = run("adopt", &env_topology(), &["-o", "json"]).await;
    let doc = adopt.document("Adopt");
    let listed = doc["volumes"].as_array().unwrap().len();
    assert_eq!(doc["summary"]["left"], listed, "{doc}");
    adopt.ended_as(0);

    s.delete_claim("data").await;
    s.wait_pv_gone(&pv.name_any()).await;
}

/// A command that finds problems exits 1 with one line on stderr, and one that cannot run
/// exits 2 saying what failed in one line: never a backtrace, though RUST_BACKTRACE=1.
#[tokio::test]
async fn problems_exit_1_and_errors_exit_2_in_one_line_without_a_backtrace() {
    let dir = env().state_dir.join(unique("toolbox"));
    std::fs::create_dir_all(&dir).unwrap();
    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(env_topology()).unwrap()).unwrap();
    // Host keys nobody knows: every node fails its row.
    let unknown_keys = dir.join("known_hosts");
    std::fs::write(&unknown_keys, "").unwrap();
    let mut strangers = original;
    strangers["ssh"]["known_hosts"] = json!(unknown_keys);
    let topology = dir.join("strangers.json");
    std::fs::write(&topology, strangers.to_string()).unwrap();

    let table = run("topology", &topology, &[]).await;
    let failing = table.stdout.lines().filter(|l| l.contains("gp-node"));
    assert!(
        failing.clone().all(|l| !l.ends_with(" ok")),
        "{}",
        table.stdout
    );
    assert_eq!(failing.count(), nodes().len(), "{}", table.stdout);
    table.ended_as(nodes().len() as u64);
    assert!(table.said()[0].contains("problem(s)"), "{}", table.stderr);

    let json = run("topology", &topology, &["-o", "json"]).await;
    let doc = json.document("TopologyCheck");
    let rows = doc["nodes"].as_array().unwrap();
    assert!(
        rows.iter()
            .all(|r| r["ok"] == false && r["peers"].is_null()),
        "{doc}"
    );
    json.ended_as(doc["summary"]["problems"].as_u64().unwrap());

    // An API server nobody answers at.
    let text = std::fs::read_to_string(env().state_dir.join("admin.kubeconfig")).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    for cluster in config["clusters"].as_array_mut().unwrap() {
        cluster["cluster"]["server"] = json!("https://127.0.0.1:9");
    }
    let kubeconfig = dir.join("nobody.kubeconfig");
    std::fs::write(&kubeconfig, config.to_string()).unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap();
    for format in ["table", "json"] {
        let ran = run(
            "status",
            &env_topology(),
            &["--kubeconfig", kubeconfig, "-o", format],
        )
        .await;
        assert_eq!((ran.code, ran.stdout.as_str()), (2, ""), "{}", ran.stderr);
        let said = ran.said();
        assert_eq!(said.len(), 1, "{}", ran.stderr);
        assert!(said[0].starts_with("error: "), "{}", ran.stderr);
    }
}
