//! Calls to a node's HTTP API. Typed calls decode the bodies of
//! `skein_raft::api` and fail on any non-2xx answer (with its status and
//! body in the error); [`Api::raw`] returns whatever came back, for the tests
//! that check error answers; [`Api::enqueue_raw`] sends a body prepared
//! once ([`enqueue_body`]) and decodes the answer only when asked, so that a
//! load generator spends its CPU on sending. Every request has a timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skein_raft::api::{ClusterStatus, EnqueueReply, ErrorCode, QueueList, TaskDetail, TaskList};
use skein_raft::fsm::{QueueStats, Task, TaskStatus};

/// The longest any one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A node's answer, as it came.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// The body as JSON (`Value::String` of the text when it is not JSON).
    pub body: Value,
    pub elapsed: Duration,
}

impl Reply {
    /// `error.code` of an error answer.
    pub fn error_code(&self) -> Option<ErrorCode> {
        serde_json::from_value(self.body.pointer("/error/code")?.clone()).ok()
    }
}

/// Whether a failed request was refused before anything was sent (no
/// connection): then it certainly took no effect. Any other failure (a
/// timeout, a connection lost mid-answer) leaves the outcome unknown.
pub fn never_sent(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_connect))
}

/// An HTTP client for any node; `addr` is always `host:port`. Clones share
/// one connection pool.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    timeout: Duration,
    /// Sent as `Authorization: Bearer`; [`crate::auth::admin_token`] by default.
    token: Option<String>,
    /// `https` with [`Api::with_ca`].
    scheme: &'static str,
}

impl Default for Api {
    fn default() -> Self {
        Api::new()
    }
}

impl Api {
    pub fn new() -> Api {
        Api::with_timeout(REQUEST_TIMEOUT)
    }

    /// A client whose requests may each take `timeout` at most.
    pub fn with_timeout(timeout: Duration) -> Api {
        Api::with_timeouts(Duration::from_secs(2), timeout)
    }

    /// A client that gives up connecting after `connect` and on any request
    /// after `timeout`.
    pub fn with_timeouts(connect: Duration, timeout: Duration) -> Api {
        // reqwest's rustls needs a crypto provider before any client is built.
        skein_tls::install_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(5))
            // Many concurrent clients of one bench share the pool.
            .pool_max_idle_per_host(1024)
            .build()
            // Only fails when the TLS backend or resolver cannot start; we use neither.
            .expect("building an HTTP client");
        Api { client, timeout, token: Some(crate::auth::admin_token().to_string()), scheme: "http" }
    }

    /// The same client sending no token.
    pub fn without_token(mut self) -> Api {
        self.token = None;
        self
    }

    /// The same client sending `token`.
    pub fn with_token(mut self, token: &str) -> Api {
        self.token = Some(token.to_string());
        self
    }

    /// A client that speaks HTTPS and trusts only the CA in `ca_pem`.
    pub fn with_ca(mut self, ca_pem: &std::path::Path) -> anyhow::Result<Api> {
        let tls = skein_tls::client_trusting(ca_pem)?;
        self.client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.timeout)
            .use_preconfigured_tls(tls)
            .build()
            .context("building an HTTPS client")?;
        self.scheme = "https";
        Ok(self)
    }

    /// The longest one request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and returns the answer whatever its status.
    pub async fn raw(&self, method: Method, addr: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Reply> {
        let url = format!("{}://{addr}{path}", self.scheme);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let started = Instant::now();
        let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.with_context(|| format!("reading the answer of {method} {url}"))?;
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok(Reply { status, body, elapsed: started.elapsed() })
    }

    /// Sends a request with a JSON body and decodes a 2xx answer.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let reply = self.raw(method.clone(), addr, path, bytes).await?;
        if !reply.status.is_success() {
            bail!("{method} {addr}{path} answered {}: {}", reply.status, reply.body);
        }
        serde_json::from_value(reply.body.clone())
            .with_context(|| format!("decoding the answer of {method} {addr}{path}: {}", reply.body))
    }

    /// Enqueues task specs (`{"queue", "kind", "payload", ...}`) as one batch;
    /// returns their ids, in order.
    pub async fn enqueue(&self, addr: &str, specs: &[Value]) -> anyhow::Result<Vec<u64>> {
        let reply: EnqueueReply =
            self.call(Method::POST, addr, "/api/v1/tasks", Some(&json!({ "tasks": specs }))).await?;
        if reply.tasks.len() != specs.len() {
            bail!("enqueued {} specs, the answer lists {} tasks", specs.len(), reply.tasks.len());
        }
        Ok(reply.tasks.iter().map(|t| t.id.0).collect())
    }

    /// POSTs a prepared `POST /api/v1/tasks` body (see [`enqueue_body`]);
    /// returns the new ids when `want_ids`, else an empty list (decoding
    /// nothing).
    pub async fn enqueue_raw(&self, addr: &str, body: Vec<u8>, want_ids: bool) -> anyhow::Result<Vec<u64>> {
        let url = format!("{}://{addr}/api/v1/tasks", self.scheme);
        let mut req = self.client.post(&url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.with_context(|| format!("reading the answer of POST {url}"))?;
        if !status.is_success() {
            bail!("POST {url} answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        if !want_ids {
            return Ok(Vec::new());
        }
        let reply: EnqueueReply = serde_json::from_slice(&bytes).context("decoding an enqueue answer")?;
        Ok(reply.tasks.iter().map(|t| t.id.0).collect())
    }

    /// One task with its payload, result and history.
    pub async fn task(&self, addr: &str, id: u64) -> anyhow::Result<TaskDetail> {
        self.call(Method::GET, addr, &format!("/api/v1/tasks/{id}"), None).await
    }

    /// Every task (of `queue`, in `status`), following the cursors.
    pub async fn tasks(
        &self,
        addr: &str,
        queue: Option<&str>,
        status: Option<TaskStatus>,
    ) -> anyhow::Result<Vec<Task>> {
        let mut all = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let mut path = String::from("/api/v1/tasks?limit=1000");
            if let Some(q) = queue {
                path.push_str(&format!("&queue={q}"));
            }
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: TaskList = self.call(Method::GET, addr, &path, None).await?;
            all.extend(page.tasks);
            match page.next_cursor {
                Some(next) if Some(next.0) != cursor => cursor = Some(next.0),
                Some(_) => bail!("the cursor did not move past task {cursor:?}"),
                None => return Ok(all),
            }
        }
    }

    /// Ids of every task of `queue` in `status`, following the cursors.
    pub async fn task_ids(&self, addr: &str, queue: &str, status: TaskStatus) -> anyhow::Result<Vec<u64>> {
        Ok(self.tasks(addr, Some(queue), Some(status)).await?.iter().map(|t| t.id.0).collect())
    }

    pub async fn queues(&self, addr: &str) -> anyhow::Result<Vec<QueueStats>> {
        let list: QueueList = self.call(Method::GET, addr, "/api/v1/queues", None).await?;
        Ok(list.queues)
    }

    /// Every queue's task counts by status. Decodes only the name and the
    /// counts, so that polls keep working across additions to the queue
    /// stats (a node binary a little older or newer than these tests).
    pub async fn all_counts(&self, addr: &str) -> anyhow::Result<BTreeMap<String, BTreeMap<TaskStatus, u64>>> {
        #[derive(serde::Deserialize)]
        struct Counts {
            name: String,
            counts: BTreeMap<TaskStatus, u64>,
        }
        #[derive(serde::Deserialize)]
        struct List {
            queues: Vec<Counts>,
        }
        let list: List = self.call(Method::GET, addr, "/api/v1/queues", None).await?;
        Ok(list.queues.into_iter().map(|q| (q.name, q.counts)).collect())
    }

    /// A queue's task counts by status (all zero for a queue not seen yet).
    pub async fn counts(&self, addr: &str, queue: &str) -> anyhow::Result<BTreeMap<TaskStatus, u64>> {
        let mut counts: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect();
        if let Some(q) = self.all_counts(addr).await?.remove(queue) {
            counts.extend(q);
        }
        Ok(counts)
    }

    pub async fn cluster(&self, addr: &str) -> anyhow::Result<ClusterStatus> {
        self.call(Method::GET, addr, "/api/v1/cluster", None).await
    }

    /// `PATCH /api/v1/queues/{name}` with some of the queue's settings.
    pub async fn configure_queue(&self, addr: &str, queue: &str, patch: Value) -> anyhow::Result<()> {
        let _: Value = self.call(Method::PATCH, addr, &format!("/api/v1/queues/{queue}"), Some(&patch)).await?;
        Ok(())
    }

    /// `POST /api/v1/queues/{name}/pause`: workers stop leasing its tasks.
    pub async fn pause(&self, addr: &str, queue: &str) -> anyhow::Result<()> {
        let _: Value = self.call(Method::POST, addr, &format!("/api/v1/queues/{queue}/pause"), None).await?;
        Ok(())
    }

    pub async fn resume(&self, addr: &str, queue: &str) -> anyhow::Result<()> {
        let _: Value = self.call(Method::POST, addr, &format!("/api/v1/queues/{queue}/resume"), None).await?;
        Ok(())
    }

    pub async fn drain(&self, addr: &str, node: u64) -> anyhow::Result<()> {
        let _: Value = self.call(Method::POST, addr, &format!("/api/v1/cluster/nodes/{node}/drain"), None).await?;
        Ok(())
    }

    pub async fn remove(&self, addr: &str, node: u64) -> anyhow::Result<()> {
        let _: Value = self.call(Method::DELETE, addr, &format!("/api/v1/cluster/nodes/{node}"), None).await?;
        Ok(())
    }

    pub async fn cancel(&self, addr: &str, id: u64) -> anyhow::Result<()> {
        let _: Value = self.call(Method::POST, addr, &format!("/api/v1/tasks/{id}/cancel"), None).await?;
        Ok(())
    }

    /// `GET /healthz` answered 200.
    pub async fn healthy(&self, addr: &str) -> anyhow::Result<bool> {
        Ok(self.raw(Method::GET, addr, "/healthz", None).await?.status == StatusCode::OK)
    }

    /// `GET /readyz` answered 200 (a leader is known and something applied).
    pub async fn ready(&self, addr: &str) -> anyhow::Result<bool> {
        Ok(self.raw(Method::GET, addr, "/readyz", None).await?.status == StatusCode::OK)
    }

    /// `(applied_index, digest)` of the node's state machine.
    pub async fn digest(&self, addr: &str) -> anyhow::Result<(Option<u64>, String)> {
        let v: Value = self.call(Method::GET, addr, "/api/v1/admin/digest", None).await?;
        let digest = v.get("digest").and_then(Value::as_str).context("no digest in the answer")?.to_string();
        Ok((v.get("applied_index").and_then(Value::as_u64), digest))
    }
}

/// A `POST /api/v1/tasks` body of `n` tasks of `kind` with `payload` (JSON
/// text), as bytes ready to send: one task alone when `n == 1`, the batch
/// form otherwise (what a client batching its writes sends).
pub fn enqueue_body(queue: &str, kind: &str, payload: &str, n: usize) -> Vec<u8> {
    let one = format!(r#"{{"queue":"{queue}","kind":"{kind}","payload":{payload}}}"#);
    if n == 1 {
        return one.into_bytes();
    }
    let mut body = String::with_capacity(12 + n * (one.len() + 1));
    body.push_str(r#"{"tasks":["#);
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&one);
    }
    body.push_str("]}");
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_bodies_are_json() {
        let one: Value = serde_json::from_slice(&enqueue_body("q", "noop", r#"{"n":1}"#, 1)).expect("json");
        assert_eq!(one, json!({"queue": "q", "kind": "noop", "payload": {"n": 1}}));
        let many: Value = serde_json::from_slice(&enqueue_body("q", "noop", "null", 3)).expect("json");
        assert_eq!(many["tasks"].as_array().map(Vec::len), Some(3));
    }
}
