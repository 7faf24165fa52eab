//! A Heketi REST client: every request signed anew (queue polls and redirects too), long
//! operations followed through `/queue/<id>`, "server busy" retried with backoff.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use super::api::{ClusterInfo, CreateVolume, ExpandVolume, NodeInfo, VolumeInfo, VolumeList};
use super::jwt;
use crate::config::topology::NO_IPV6;
use crate::{Error, Result};

/// One request, including a slow Heketi's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a queued operation is polled: from the first to the last delay, doubling.
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_LAST: Duration = Duration::from_secs(2);
/// Volume lookups by name run this many requests at once, below Heketi's busy limit.
const LOOKUP_PARALLELISM: usize = 4;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP(S) connection pool all Heketi clients share. Made on first use: loading the
/// system's CA certificates costs memory a provisioner without Heketi classes never needs.
#[derive(Clone)]
pub struct HeketiHttp {
    client: Arc<OnceLock<HttpsClient>>,
    /// How long a queued operation (create, delete, expand) may take.
    operation_timeout: Duration,
}

impl HeketiHttp {
    pub fn new(operation_timeout: Duration) -> Self {
        Self {
            client: Arc::default(),
            operation_timeout,
        }
    }

    fn client(&self) -> Result<&HttpsClient> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| Error::HeketiTls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(self
            .client
            .get_or_init(|| Client::builder(TokioExecutor::new()).build(https)))
    }
}

/// The largest answer read from Heketi; its largest, the volume list, is ids only (about 40
/// bytes a volume).
const MAX_BODY: usize = 16 << 20;

/// Who we are to Heketi. Without a key no token is sent (Heketi running without auth).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub user: String,
    pub key: Option<String>,
}

/// Logs and errors may show `{:?}` of anything: never the key.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("key", &crate::config::redacted(&self.key))
            .finish()
    }
}

/// One Heketi server, as one user.
pub struct HeketiClient {
    http: HeketiHttp,
    url: String,
    credentials: Credentials,
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    pending: bool,
    body: Bytes,
}

impl HeketiClient {
    pub fn new(http: HeketiHttp, url: &str, credentials: Credentials) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_string(),
            credentials,
        }
    }

    pub async fn create_volume(&self, req: &CreateVolume) -> Result<VolumeInfo> {
        let body = serde_json::to_vec(req).expect("request serializes");
        let reply = self.operation(Method::POST, "/volumes", Some(body)).await?;
        self.json("POST /volumes", &reply)
    }

    /// The volume, or `None` when Heketi does not know the id.
    pub async fn volume(&self, id: &str) -> Result<Option<VolumeInfo>> {
        let path = format!("/volumes/{id}");
        match self.get(&path).await {
            Err(e) if e.is_heketi_not_found() => Ok(None),
            other => other.map(Some),
        }
    }

    /// Finds a volume by name: a create that failed after Heketi made the volume, or that a
    /// restart interrupted, is then picked up instead of made twice.
    pub async fn find_volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        let list: VolumeList = self.get("/volumes").await?;
        let found = futures::stream::iter(list.volumes)
            .map(|id| async move { self.volume(&id).await })
            .buffer_unordered(LOOKUP_PARALLELISM)
            .try_filter_map(|v| async move { Ok(v.filter(|v| v.name == name)) })
            .boxed()
            .try_next()
            .await?;
        Ok(found)
    }

    /// Deletes a volume; one Heketi does not know is deleted already.
    pub async fn delete_volume(&self, id: &str) -> Result<()> {
        let path = format!("/volumes/{id}");
        match self.operation(Method::DELETE, &path, None).await {
            Err(e) if e.is_heketi_not_found() => Ok(()),
            other => other.map(drop),
        }
    }

    pub async fn expand_volume(&self, id: &str, by_gib: u64) -> Result<VolumeInfo> {
        let path = format!("/volumes/{id}/expand");
        let body = serde_json::to_vec(&ExpandVolume {
            expand_size: by_gib,
        })
        .expect("request serializes");
        let reply = self.operation(Method::POST, &path, Some(body)).await?;
        self.json(&format!("POST {path}"), &reply)
    }

    /// The storage addresses of a cluster's nodes, which clients mount through.
    pub async fn storage_addresses(&self, cluster: &str) -> Result<Vec<IpAddr>> {
        let info: ClusterInfo = self.get(&format!("/clusters/{cluster}")).await?;
        let mut out = Vec::new();
        for node in &info.nodes {
            let node: NodeInfo = self.get(&format!("/nodes/{node}")).await?;
            out.push(storage_address(&node)?);
        }
        Ok(out)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let reply = self.request(Method::GET, path, None).await?;
        let request = format!("GET {path}");
        if !reply.status.is_success() {
            return Err(self.failure(&request, &reply));
        }
        self.json(&request, &reply)
    }

    fn json<T: DeserializeOwned>(&self, request: &str, reply: &Reply) -> Result<T> {
        serde_json::from_slice(&reply.body).map_err(|e| Error::Heketi {
            request: request.to_string(),
            status: reply.status.as_u16(),
            message: format!("unexpected reply: {e}"),
        })
    }

    fn failure(&self, request: &str, reply: &Reply) -> Error {
        Error::Heketi {
            request: request.to_string(),
            status: reply.status.as_u16(),
            message: String::from_utf8_lossy(&reply.body).trim().to_string(),
        }
    }

    /// A request Heketi may queue: 202 and a queue location, polled until it redirects to the
    /// result (303), finishes without one (204) or fails (plain-text error).
    async fn operation(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        let request = format!("{method} {path}");
        let reply = self.request(method, path, body).await?;
        if reply.status != StatusCode::ACCEPTED {
            return if reply.status.is_success() {
                Ok(reply)
            } else {
                Err(self.failure(&request, &reply))
            };
        }
        let queue = reply.location.ok_or_else(|| Error::Heketi {
            request: request.clone(),
            status: 202,
            message: "no Location to poll".into(),
        })?;
        let deadline = tokio::time::Instant::now() + self.http.operation_timeout;
        let mut delay = POLL_FIRST;
        loop {
            let reply = self.request(Method::GET, &queue, None).await?;
            match reply.status {
                StatusCode::OK if reply.pending => {}
                StatusCode::SEE_OTHER => {
                    let target = reply.location.clone().unwrap_or_default();
                    let result = self.request(Method::GET, &target, None).await?;
                    if !result.status.is_success() {
                        return Err(self.failure(&format!("GET {target}"), &result));
                    }
                    return Ok(result);
                }
                s if s.is_success() => return Ok(reply),
                _ => return Err(self.failure(&request, &reply)),
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(Error::HeketiTimeout {
                    request,
                    seconds: self.http.operation_timeout.as_secs(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(POLL_LAST);
        }
    }

    /// One signed request; "server busy" (429) is retried with backoff.
    async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        // Heketi answers with absolute or relative locations; only the path is signed.
        let path = path.strip_prefix(&self.url).unwrap_or(path);
        let once = || self.send(method.clone(), path, body.clone());
        once.retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(250))
                .with_max_delay(Duration::from_secs(4))
                .with_max_times(8)
                .with_jitter(),
        )
        .when(Error::is_heketi_busy)
        .await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        let request = format!("{method} {path}");
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.url));
        if let Some(key) = &self.credentials.key {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let token = jwt::token(&self.credentials.user, key, method.as_str(), path, now);
            builder = builder.header(AUTHORIZATION, format!("bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.unreachable(&request, e))?;
        let exchange = async {
            let resp = self
                .http
                .client()?
                .request(req)
                .await
                .map_err(|e| self.unreachable(&request, e))?;
            let status = resp.status();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let location = header(LOCATION.as_str());
            let pending = header("X-Pending").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            // A server's answer never gets to fill our memory.
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Error::Heketi {
                    request: request.clone(),
                    status: status.as_u16(),
                    message: format!("reading the answer (at most {MAX_BODY} bytes): {e}"),
                })?
                .to_bytes();
            Ok::<_, Error>(Reply {
                status,
                location,
                pending,
                body,
            })
        };
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::HeketiTimeout {
                request: request.clone(),
                seconds: REQUEST_TIMEOUT.as_secs(),
            })??;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(self.failure(&request, &reply));
        }
        Ok(reply)
    }

    fn unreachable(&self, request: &str, e: impl std::error::Error) -> Error {
        // hyper's errors say little at the top ("client error (Connect)"): keep the chain.
        let mut cause = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            cause.push_str(": ");
            cause.push_str(&s.to_string());
            source = s.source();
        }
        Error::HeketiUnreachable {
            url: self.url.clone(),
            request: request.to_string(),
            cause,
        }
    }
}

/// The address clients mount a node's bricks through: its first storage hostname, which must be
/// an IPv4 address (Endpoints need an IP; the node plugin mounts over IPv4 only).
fn storage_address(node: &NodeInfo) -> Result<IpAddr> {
    let host = node.hostnames.storage.first().map_or("", String::as_str);
    let refuse = |why: String| Error::Heketi {
        request: format!("GET /nodes/{}", node.id),
        status: 200,
        message: format!("storage hostname {host:?} {why}"),
    };
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv6() => Err(refuse(format!("is refused: {NO_IPV6}"))),
        Ok(ip) => Ok(ip),
        Err(_) => Err(refuse("is not an IP address".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn storage_addresses_are_ipv4_only() {
        let node = |host: &str| NodeInfo {
            id: "n1".into(),
            hostnames: crate::heketi::api::Hostnames {
                manage: vec![],
                storage: vec![host.into()],
            },
        };
        assert_eq!(
            storage_address(&node("10.0.0.1")).unwrap(),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        let v6 = storage_address(&node("fd00::1")).unwrap_err().to_string();
        assert!(
            v6.contains("GET /nodes/n1") && v6.contains("\"fd00::1\" is refused: IPv6"),
            "{v6}"
        );
        let name = storage_address(&node("gluster1")).unwrap_err().to_string();
        assert!(name.contains("is not an IP address"), "{name}");
    }

    /// A server that answers every request with `len` bytes of body.
    async fn server(len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                    let _ = conn.write_all(head.as_bytes()).await;
                    let chunk = vec![b' '; 1 << 20];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if conn.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_not_read() {
        let url = server(MAX_BODY + 1).await;
        let client = HeketiClient::new(
            HeketiHttp::new(Duration::from_secs(10)),
            &url,
            Credentials::default(),
        );
        let err = client.volume("abc").await.unwrap_err().to_string();
        assert!(err.contains("at most 16777216 bytes"), "{err}");
    }
}
