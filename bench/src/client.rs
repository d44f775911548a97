//! The bench's calls to a node's HTTP API (what any skein user would send).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use skein_raft::api::{ClusterStatus, EnqueueReply, TaskDetail, TaskList};
use skein_raft::fsm::TaskStatus;

/// An HTTP client for any node; `addr` is `host:port`. Clones share one
/// connection pool.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
}

impl Api {
    pub fn new(timeout: Duration) -> Api {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .pool_max_idle_per_host(1024)
            .build()
            // Fails only when no TLS backend or resolver can start; we use neither.
            .expect("building an HTTP client");
        Api { client }
    }

    /// POSTs a prepared `POST /api/v1/tasks` body; returns the new ids when
    /// `want_ids`, else an empty list (saves the bench's CPU for the nodes).
    pub async fn enqueue_raw(&self, addr: &str, body: Vec<u8>, want_ids: bool) -> anyhow::Result<Vec<u64>> {
        let resp = self
            .client
            .post(format!("http://{addr}/api/v1/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("enqueue answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        if !want_ids {
            return Ok(Vec::new());
        }
        let reply: EnqueueReply = serde_json::from_slice(&bytes).context("decoding an enqueue answer")?;
        Ok(reply.tasks.iter().map(|t| t.id.0).collect())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, addr: &str, path: &str) -> anyhow::Result<T> {
        let url = format!("http://{addr}{path}");
        let resp = self.client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("GET {url} answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("decoding the answer of GET {url}"))
    }

    async fn post_empty(&self, addr: &str, path: &str) -> anyhow::Result<()> {
        let url = format!("http://{addr}{path}");
        let resp = self.client.post(&url).send().await.with_context(|| format!("POST {url}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("POST {url} answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    pub async fn ready(&self, addr: &str) -> bool {
        matches!(self.client.get(format!("http://{addr}/readyz")).send().await.map(|r| r.status()), Ok(StatusCode::OK))
    }

    pub async fn cluster(&self, addr: &str) -> anyhow::Result<ClusterStatus> {
        self.get(addr, "/api/v1/cluster").await
    }

    /// A queue's tasks by status (all zero for a queue not yet made).
    pub async fn counts(&self, addr: &str, queue: &str) -> anyhow::Result<BTreeMap<TaskStatus, u64>> {
        // Only the counts are decoded, so that a node of another version
        // (other queue settings) still answers.
        let list: serde_json::Value = self.get(addr, "/api/v1/queues").await?;
        let counts = list["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["name"] == queue))
            .map(|q| q["counts"].clone())
            .unwrap_or_default();
        Ok(serde_json::from_value(counts).unwrap_or_default())
    }

    pub async fn pause(&self, addr: &str, queue: &str) -> anyhow::Result<()> {
        self.post_empty(addr, &format!("/api/v1/queues/{queue}/pause")).await
    }

    pub async fn resume(&self, addr: &str, queue: &str) -> anyhow::Result<()> {
        self.post_empty(addr, &format!("/api/v1/queues/{queue}/resume")).await
    }

    pub async fn task(&self, addr: &str, id: u64) -> anyhow::Result<TaskDetail> {
        self.get(addr, &format!("/api/v1/tasks/{id}")).await
    }

    /// Ids of every task of `queue` in `status`, following the cursors.
    pub async fn task_ids(&self, addr: &str, queue: &str, status: TaskStatus) -> anyhow::Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let mut path = format!("/api/v1/tasks?limit=1000&queue={queue}&status={status}");
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: TaskList = self.get(addr, &path).await?;
            ids.extend(page.tasks.iter().map(|t| t.id.0));
            match page.next_cursor {
                Some(next) if Some(next.0) != cursor => cursor = Some(next.0),
                _ => return Ok(ids),
            }
        }
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
