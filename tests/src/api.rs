//! Calls to a node's HTTP API. Typed calls decode the bodies of
//! `skein_raft::api` and fail on any non-2xx answer (with its status and
//! body in the error); [`Api::raw`] returns whatever came back, for the tests
//! that check error answers. Every request has a timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skein_raft::api::{ClusterStatus, EnqueueReply, QueueList, TaskDetail, TaskList};
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
    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }
}

/// An HTTP client for any node; `addr` is always `host:port`.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
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

    pub fn with_timeout(timeout: Duration) -> Api {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            // Only fails when the TLS backend or resolver cannot start; we use neither.
            .expect("building an HTTP client");
        Api { client }
    }

    /// Sends a request and returns the answer whatever its status.
    pub async fn raw(&self, method: Method, addr: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Reply> {
        let url = format!("http://{addr}{path}");
        let mut req = self.client.request(method.clone(), &url);
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
