//! A Heketi stand-in for the tests (Heketi itself cannot be built here). It follows the REST
//! contract of `../shared/COMPAT.md`: JWT with `qsh` checked for `admin` and `user`, async
//! operations through a read-once `/queue/<id>` ending in 303 or 204, plain-text errors, 429
//! above 8 operations in flight. Volumes are real: made on the test pool over SSH.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use glusterfs_provisioner::config::{Cluster, Durability};
use glusterfs_provisioner::gluster::{Brick, SshBackend};
use glusterfs_provisioner::identity::{Identity, Policy};
use glusterfs_provisioner::metrics::Metrics;
use glusterfs_provisioner::volumes::{Fenced, Promised, VolumeRequest};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{env, ssh};

const MAX_IN_FLIGHT: usize = 8;
pub const ADMIN_KEY: &str = "My Secret";
const USER_KEY: &str = "user secret";

struct StoredVolume {
    name: String,
    size: u64,
    gid: u32,
    bricks: Vec<Brick>,
}

enum QueueEntry {
    Pending,
    Done(Option<String>),
    Failed(String),
}

/// Faults a test switches on; each is used up as it happens.
#[derive(Default)]
pub struct Faults {
    /// The next creates fail with this message before making anything.
    pub fail_creates: usize,
    pub fail_message: String,
    /// The next create makes the volume, then reports a failure (its reply is lost).
    pub lose_create_replies: usize,
    /// The next requests are answered 429.
    pub busy_requests: usize,
}

pub struct State {
    backend: SshBackend,
    cluster: Cluster,
    auth: bool,
    volumes: Mutex<HashMap<String, StoredVolume>>,
    queue: Mutex<HashMap<String, QueueEntry>>,
    in_flight: AtomicUsize,
    pub faults: Mutex<Faults>,
    /// Requests by `METHOD /path-shape`, for the tests' checks.
    pub requests: Mutex<Vec<String>>,
}

pub struct HeketiStandIn {
    pub url: String,
    pub state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HeketiStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Heketi ids: 32 hex digits.
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn cluster_id(cluster: &Cluster) -> String {
    format!("{:0>32}", hex(cluster.name.as_bytes()))
}

fn node_id(name: &str) -> String {
    format!("{:0>32}", hex(name.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl HeketiStandIn {
    /// A stand-in with authentication on (`admin` / [`ADMIN_KEY`]) or off.
    pub async fn start(auth: bool) -> Self {
        let env = env();
        let backend = SshBackend::new(env.topology.clone(), ssh(), Arc::new(Metrics::new()), 4);
        let state = Arc::new(State {
            cluster: env.topology.clusters[0].clone(),
            backend,
            auth,
            volumes: Mutex::default(),
            queue: Mutex::default(),
            in_flight: AtomicUsize::default(),
            faults: Mutex::default(),
            requests: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HeketiStandIn { url, state, server }
    }

    pub fn cluster_id(&self) -> String {
        cluster_id(&self.state.cluster)
    }

    /// Names of the volumes it holds.
    pub fn volume_names(&self) -> Vec<String> {
        let volumes = self.state.volumes.lock().unwrap();
        volumes.values().map(|v| v.name.clone()).collect()
    }

    pub fn volume_id(&self, name: &str) -> Option<String> {
        let volumes = self.state.volumes.lock().unwrap();
        volumes
            .iter()
            .find(|(_, v)| v.name == name)
            .map(|(id, _)| id.clone())
    }

    pub fn volume_gid(&self, name: &str) -> Option<u32> {
        let volumes = self.state.volumes.lock().unwrap();
        volumes.values().find(|v| v.name == name).map(|v| v.gid)
    }

    pub fn volume_size(&self, name: &str) -> Option<u64> {
        let volumes = self.state.volumes.lock().unwrap();
        volumes.values().find(|v| v.name == name).map(|v| v.size)
    }

    /// Makes a volume as Heketi names it (`vol_<id>`), as if an earlier provisioner asked.
    pub async fn make_volume(&self, size: u64, gid: u32) -> (String, String) {
        let id = new_id();
        let name = format!("vol_{id}");
        make(
            &self.state,
            &id,
            &name,
            Durability::Replicate(3),
            size,
            gid,
            &[],
        )
        .await
        .unwrap();
        (id, name)
    }

    /// Removes a volume as its owner would, outside Kubernetes.
    pub async fn remove_volume(&self, id: &str) {
        let stored = self.state.volumes.lock().unwrap().remove(id).unwrap();
        let cluster = &self.state.cluster.name;
        let identity = identity(&stored.name);
        let removed =
            self.state
                .backend
                .remove(cluster, &stored.name, &stored.bricks, identity.no_pv());
        removed.await.unwrap();
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap()
    }
}

/// What the stand-in records on the volumes it makes, as Heketi would keep its own record: a
/// Kubernetes cluster of its own, so no provisioner takes them for its cluster's.
fn identity(name: &str) -> Identity {
    Identity {
        kube_cluster: "heketi-stand-in".into(),
        claim_uid: name.into(),
        pv: name.into(),
        policy: Policy::Delete,
        provisioner: "heketi".into(),
    }
}

async fn make(
    state: &State,
    id: &str,
    name: &str,
    durability: Durability,
    size: u64,
    gid: u32,
    options: &[(String, String)],
) -> Result<(), String> {
    let identity = identity(name);
    let req = VolumeRequest {
        identity: &identity,
        name,
        cluster: Some(&state.cluster.name),
        durability,
        size_gib: size,
        gid,
        options,
        size_limit: Default::default(),
        promised: Promised(&|_| {}),
        fence: Fenced::none(),
    };
    let made = state.backend.make(&req).await.map_err(|e| e.to_string())?;
    state.volumes.lock().unwrap().insert(
        id.to_string(),
        StoredVolume {
            name: name.to_string(),
            size,
            gid,
            bricks: made.bricks,
        },
    );
    Ok(())
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .unwrap()
}

fn json_reply(value: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

fn redirect(status: StatusCode, location: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Location", location)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Checks the bearer token as Heketi does; the issuer it names.
fn authenticate(req: &Request<Incoming>) -> Result<String, String> {
    let header = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("Invalid JWT token: missing token")?;
    let token = header
        .strip_prefix("bearer ")
        .or_else(|| header.strip_prefix("Bearer "))
        .ok_or("Invalid JWT token: not a bearer token")?;
    let parts: Vec<&str> = token.split('.').collect();
    let [head, claims, signature] = parts[..] else {
        return Err("Invalid JWT token: malformed".into());
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("Invalid JWT token: {e}"))
    };
    let header: Value = serde_json::from_slice(&decode(head)?).map_err(|e| e.to_string())?;
    if header["alg"] != "HS256" {
        return Err("Invalid JWT token: unexpected signing method".into());
    }
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let issuer = claims["iss"].as_str().unwrap_or_default().to_string();
    let key = match issuer.as_str() {
        "admin" => ADMIN_KEY,
        "user" => USER_KEY,
        _ => return Err("Invalid JWT token: Unknown user".into()),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{head}.{}", parts[1]).as_bytes());
    mac.verify_slice(&decode(signature)?)
        .map_err(|_| "Invalid JWT token: signature is invalid")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims["exp"].as_u64().unwrap_or(0) < now {
        return Err("Invalid JWT token: token is expired".into());
    }
    let qsh = hex(&Sha256::digest(
        format!("{}&{}", req.method(), req.uri().path()).as_bytes(),
    ));
    if claims["qsh"].as_str() != Some(qsh.as_str()) {
        return Err("Invalid JWT token: Invalid qsh claim in token".into());
    }
    Ok(issuer)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(String::from)
        .collect();
    let shape = match segments.as_slice() {
        [first, _, rest @ ..] => format!(
            "{method} /{first}/<id>{}",
            rest.iter().map(|r| format!("/{r}")).collect::<String>()
        ),
        _ => format!("{method} {path}"),
    };
    state.requests.lock().unwrap().push(shape);
    if state.auth {
        match authenticate(&req) {
            Ok(issuer) if issuer == "user" && !(method == Method::POST && path == "/volumes") => {
                return text(StatusCode::UNAUTHORIZED, "Administrator access required");
            }
            Ok(_) => {}
            Err(e) => return text(StatusCode::UNAUTHORIZED, &e),
        }
    }
    {
        let mut faults = state.faults.lock().unwrap();
        if faults.busy_requests > 0 && !path.starts_with("/queue/") {
            faults.busy_requests -= 1;
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                "Server busy. Retry operation later.",
            );
        }
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["queue", id]) => queue_status(&state, id),
        (Method::GET, ["volumes"]) => {
            let ids: Vec<String> = state.volumes.lock().unwrap().keys().cloned().collect();
            json_reply(json!({"volumes": ids}))
        }
        (Method::GET, ["volumes", id]) => match volume_json(&state, id) {
            Some(v) => json_reply(v),
            None => text(StatusCode::NOT_FOUND, "Id not found"),
        },
        (Method::GET, ["clusters"]) => {
            json_reply(json!({"clusters": [cluster_id(&state.cluster)]}))
        }
        (Method::GET, ["clusters", id]) if *id == cluster_id(&state.cluster) => {
            let nodes: Vec<String> = state
                .cluster
                .nodes
                .iter()
                .map(|n| node_id(&n.name))
                .collect();
            let volumes: Vec<String> = state.volumes.lock().unwrap().keys().cloned().collect();
            json_reply(
                json!({"id": id, "nodes": nodes, "volumes": volumes, "block": true, "file": true}),
            )
        }
        (Method::GET, ["nodes", id]) => {
            match state.cluster.nodes.iter().find(|n| node_id(&n.name) == *id) {
                Some(n) => json_reply(json!({
                    "id": id, "cluster": cluster_id(&state.cluster), "zone": 1, "state": "online",
                    "hostnames": {"manage": [n.ssh_address], "storage": [n.storage_address.to_string()]},
                })),
                None => text(StatusCode::NOT_FOUND, "Id not found"),
            }
        }
        (Method::POST, ["volumes"]) => create(state, &body),
        (Method::DELETE, ["volumes", id]) => delete(state, id),
        (Method::POST, ["volumes", id, "expand"]) => expand(state, id, &body),
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn queue_status(state: &State, id: &str) -> Response<Full<Bytes>> {
    let mut queue = state.queue.lock().unwrap();
    match queue.get(id) {
        None => text(StatusCode::NOT_FOUND, "Id not found"),
        Some(QueueEntry::Pending) => Response::builder()
            .status(StatusCode::OK)
            .header("X-Pending", "true")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        // A finished entry is read once.
        Some(_) => match queue.remove(id).unwrap() {
            QueueEntry::Done(Some(location)) => redirect(StatusCode::SEE_OTHER, &location),
            QueueEntry::Done(None) => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .unwrap(),
            QueueEntry::Failed(message) => text(StatusCode::INTERNAL_SERVER_ERROR, &message),
            QueueEntry::Pending => unreachable!(),
        },
    }
}

fn volume_json(state: &State, id: &str) -> Option<Value> {
    let volumes = state.volumes.lock().unwrap();
    let v = volumes.get(id)?;
    let hosts: Vec<String> = v
        .bricks
        .iter()
        .map(|b| b.storage_address.to_string())
        .collect();
    Some(json!({
        "id": id, "name": v.name, "cluster": cluster_id(&state.cluster), "size": v.size,
        "gid": v.gid, "durability": {"type": "replicate", "replicate": {"replica": v.bricks.len()}},
        "mount": {"glusterfs": {"hosts": hosts, "device": format!("{}:{}", hosts[0], v.name),
                                "options": {"backup-volfile-servers": hosts[1..].join(",")}}},
        "bricks": v.bricks.iter().map(|b| json!({"path": b.path, "node": node_id(&b.node),
                                                  "volume": id, "size": v.size << 20})).collect::<Vec<_>>(),
    }))
}

/// Runs `work` as a queued operation: 202 now, its outcome at `/queue/<id>` later.
fn enqueue<F>(state: Arc<State>, work: F) -> Response<Full<Bytes>>
where
    F: Future<Output = Result<Option<String>, String>> + Send + 'static,
{
    if state.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "Server busy. Retry operation later.",
        );
    }
    let qid = new_id();
    state
        .queue
        .lock()
        .unwrap()
        .insert(qid.clone(), QueueEntry::Pending);
    let queue_id = qid.clone();
    tokio::spawn(async move {
        let outcome = match work.await {
            Ok(location) => QueueEntry::Done(location),
            Err(message) => QueueEntry::Failed(message),
        };
        state.queue.lock().unwrap().insert(queue_id, outcome);
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    });
    redirect(StatusCode::ACCEPTED, &format!("/queue/{qid}"))
}

fn create(state: Arc<State>, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return text(StatusCode::BAD_REQUEST, "request unable to be parsed");
    };
    let durability = match req["durability"]["type"].as_str() {
        Some("none") => Durability::None,
        Some("disperse") => Durability::Disperse {
            data: req["durability"]["disperse"]["data"].as_u64().unwrap_or(4) as u32,
            redundancy: req["durability"]["disperse"]["redundancy"]
                .as_u64()
                .unwrap_or(2) as u32,
        },
        _ => Durability::Replicate(
            req["durability"]["replicate"]["replica"]
                .as_u64()
                .unwrap_or(3) as u32,
        ),
    };
    let cluster = cluster_id(&state.cluster);
    if let Some(wanted) = req["clusters"].as_array()
        && !wanted.iter().any(|c| c.as_str() == Some(cluster.as_str()))
    {
        return text(StatusCode::BAD_REQUEST, "Cluster id not found");
    }
    let size = req["size"].as_u64().unwrap_or(0);
    if size == 0 {
        return text(StatusCode::BAD_REQUEST, "Invalid volume size");
    }
    let id = new_id();
    let name = req["name"]
        .as_str()
        .map(String::from)
        .unwrap_or(format!("vol_{id}"));
    let gid = req["gid"].as_u64().unwrap_or(0) as u32;
    let options: Vec<(String, String)> = req["glustervolumeoptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let (k, v) = o.as_str()?.split_once(' ')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let fail = {
        let mut faults = state.faults.lock().unwrap();
        if faults.fail_creates > 0 {
            faults.fail_creates -= 1;
            Some(faults.fail_message.clone())
        } else {
            None
        }
    };
    let lose = {
        let mut faults = state.faults.lock().unwrap();
        let lose = faults.lose_create_replies > 0;
        faults.lose_create_replies = faults.lose_create_replies.saturating_sub(1);
        lose
    };
    let worker = state.clone();
    enqueue(state, async move {
        if let Some(message) = fail {
            return Err(message);
        }
        make(&worker, &id, &name, durability, size, gid, &options).await?;
        if lose {
            return Err("connection to the database lost".into());
        }
        Ok(Some(format!("/volumes/{id}")))
    })
}

fn delete(state: Arc<State>, id: &str) -> Response<Full<Bytes>> {
    let known = state.volumes.lock().unwrap().contains_key(id);
    if !known {
        return text(StatusCode::NOT_FOUND, "Id not found");
    }
    let (worker, id) = (state.clone(), id.to_string());
    enqueue(state, async move {
        let (name, bricks) = {
            let volumes = worker.volumes.lock().unwrap();
            let v = &volumes[&id];
            (v.name.clone(), v.bricks.clone())
        };
        let identity = identity(&name);
        worker
            .backend
            .remove(&worker.cluster.name, &name, &bricks, identity.no_pv())
            .await
            .map_err(|e| e.to_string())?;
        worker.volumes.lock().unwrap().remove(&id);
        Ok(None)
    })
}

fn expand(state: Arc<State>, id: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let by = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["expand_size"].as_u64())
        .filter(|s| *s > 0);
    let Some(by) = by else {
        return text(StatusCode::BAD_REQUEST, "Invalid volume expansion size");
    };
    let known = state
        .volumes
        .lock()
        .unwrap()
        .get(id)
        .map(|v| (v.name.clone(), v.size));
    let Some((name, size)) = known else {
        return text(StatusCode::NOT_FOUND, "Id not found");
    };
    let (worker, id) = (state.clone(), id.to_string());
    enqueue(state, async move {
        worker
            .backend
            .resize(&worker.cluster.name, &name, size + by)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(v) = worker.volumes.lock().unwrap().get_mut(&id) {
            v.size = size + by;
        }
        Ok(Some(format!("/volumes/{id}")))
    })
}
