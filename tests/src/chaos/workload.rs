//! The chaos workload: clients that enqueue (single tasks, batches, and
//! keyed tasks retried under the same key when the answer is unknown) and
//! a reader, each sending to any node, recording every operation with its
//! invocation and completion time and what came back.
//!
//! The tasks are `sleep` (20-300 ms) and `exec` (a shell that sleeps a
//! little and prints a result): short enough that many finish between
//! faults, long enough that kills and pauses catch them mid-run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skein_raft::api::ErrorCode;
use skein_testkit::api::never_sent;
use skein_testkit::Api;

use super::history::{Op, OpKind, Outcome};
use super::rng::Rng;
use skein_testkit::now_ms;

/// The queue every chaos task goes to.
pub const QUEUE: &str = "chaos";
/// How long a client waits for any answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one idempotency key before the client gives up on it.
const KEY_TRIES: u32 = 4;

/// The operations recorded so far, shared by every client.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Op>>>);

impl Recorder {
    fn push(&self, op: Op) {
        if let Ok(mut ops) = self.0.lock() {
            ops.push(op);
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.0.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Task ids acknowledged so far.
    fn acked(&self) -> Vec<u64> {
        self.0
            .lock()
            .map(|o| {
                o.iter().filter(|o| o.is_write() && o.outcome == Outcome::Ok).flat_map(|o| o.ids.clone()).collect()
            })
            .unwrap_or_default()
    }
}

/// Running clients; [`Workload::stop`] ends them and returns the history.
pub struct Workload {
    stop: Arc<AtomicBool>,
    recorder: Recorder,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts `clients` enqueuers and one reader against `nodes` (id → HTTP
    /// address).
    pub fn start(nodes: Vec<(u64, String)>, clients: u32, rng: &Rng) -> Workload {
        let http = Api::with_timeouts(Duration::from_secs(1), CLIENT_TIMEOUT);
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = Recorder::default();
        let mut handles = Vec::new();
        for c in 0..clients {
            let client = Client {
                id: c,
                http: http.clone(),
                nodes: nodes.clone(),
                rng: rng.fork(u64::from(c) + 1),
                recorder: recorder.clone(),
            };
            handles.push(tokio::spawn(client.enqueue_loop(stop.clone())));
        }
        let reader =
            Client { id: clients, http, nodes, rng: rng.fork(u64::from(clients) + 1), recorder: recorder.clone() };
        handles.push(tokio::spawn(reader.read_loop(stop.clone())));
        Workload { stop, recorder, handles }
    }

    /// Operations recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.recorder.ops()
    }

    /// Stops every client (an operation in flight finishes or times out)
    /// and returns the whole history.
    pub async fn stop(self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.await;
        }
        self.recorder.ops()
    }
}

struct Client {
    id: u32,
    http: Api,
    nodes: Vec<(u64, String)>,
    rng: Rng,
    recorder: Recorder,
}

/// What a request came back with.
struct Answer {
    outcome: Outcome,
    body: Value,
    error: Option<String>,
}

impl Client {
    async fn enqueue_loop(mut self, stop: Arc<AtomicBool>) {
        let mut keys = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let roll = self.rng.range(0, 99);
            if roll < 40 {
                let spec = self.spec(None);
                self.enqueue(vec![spec], None, 1).await;
            } else if roll < 70 {
                let n = self.rng.range(2, 8);
                let specs = (0..n).map(|_| self.spec(None)).collect();
                self.enqueue(specs, None, 1).await;
            } else {
                keys += 1;
                let key = format!("c{}-{keys}", self.id);
                for try_no in 1..=KEY_TRIES {
                    let spec = self.spec(Some(&key));
                    if self.enqueue(vec![spec], Some(&key), try_no).await == Outcome::Ok {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let pause = self.rng.range(50, 200);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    async fn read_loop(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let (node, addr) = self.nodes[self.rng.range(0, self.nodes.len() as u64 - 1) as usize].clone();
            let invoke_ms = now_ms();
            let a = self
                .send(Method::GET, &addr, &format!("/api/v1/tasks?queue={QUEUE}&status=leased&limit=1000"), None)
                .await;
            self.record(node, OpKind::ListLeased, invoke_ms, &a, Vec::new());
            let acked = self.recorder.acked();
            if !acked.is_empty() {
                let task = acked[self.rng.range(0, acked.len() as u64 - 1) as usize];
                let invoke_ms = now_ms();
                let a = self.send(Method::GET, &addr, &format!("/api/v1/tasks/{task}"), None).await;
                self.record(node, OpKind::Read { task }, invoke_ms, &a, Vec::new());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A `sleep` or `exec` task for the chaos queue.
    fn spec(&mut self, key: Option<&str>) -> Value {
        let mut spec = if self.rng.chance(70) {
            json!({"queue": QUEUE, "kind": "sleep", "payload": {"ms": self.rng.range(20, 300)}})
        } else {
            let script = format!("sleep 0.{:02}; echo '{{\"ok\": true}}'", self.rng.range(1, 20));
            json!({"queue": QUEUE, "kind": "exec", "payload": {"command": ["sh", "-c", script]}})
        };
        if let Some(key) = key {
            spec["idempotency_key"] = json!(key);
        }
        spec
    }

    /// Sends one enqueue to a random node and records it.
    async fn enqueue(&mut self, specs: Vec<Value>, key: Option<&str>, try_no: u32) -> Outcome {
        let (node, addr) = self.nodes[self.rng.range(0, self.nodes.len() as u64 - 1) as usize].clone();
        let count = specs.len();
        let invoke_ms = now_ms();
        let mut a = self.send(Method::POST, &addr, "/api/v1/tasks", Some(json!({"tasks": specs}))).await;
        let ids: Vec<u64> = a
            .body
            .get("tasks")
            .and_then(Value::as_array)
            .map(|ts| ts.iter().filter_map(|t| t.get("id").and_then(Value::as_u64)).collect())
            .unwrap_or_default();
        if a.outcome == Outcome::Ok && ids.len() != count {
            // A 2xx that does not list every task is a broken answer.
            a.outcome = Outcome::Unknown;
            a.error = Some(format!("answer lists {} ids for {count} tasks: {}", ids.len(), a.body));
        }
        let kind = OpKind::Enqueue { count, key: key.map(String::from), try_no };
        self.record(node, kind, invoke_ms, &a, if a.outcome == Outcome::Ok { ids } else { Vec::new() });
        a.outcome
    }

    fn record(&self, node: u64, kind: OpKind, invoke_ms: u64, a: &Answer, ids: Vec<u64>) {
        self.recorder.push(Op {
            client: self.id,
            node,
            kind,
            invoke_ms,
            complete_ms: now_ms(),
            outcome: a.outcome,
            ids,
            error: a.error.clone(),
        });
    }

    /// Sends a request; classifies what came back (see [`Outcome`]).
    async fn send(&self, method: Method, addr: &str, path: &str, body: Option<Value>) -> Answer {
        match self.http.raw(method, addr, path, body.map(|b| b.to_string().into_bytes())).await {
            Ok(reply) => {
                let status = reply.status;
                let outcome = if status.is_success() {
                    Outcome::Ok
                } else if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
                    Outcome::Failed
                } else if reply.error_code().is_some_and(ErrorCode::not_carried_out) {
                    // 503 `unavailable`: the node says nothing was carried
                    // out. The checker holds it to that: a task of a write
                    // answered so must never appear.
                    Outcome::Failed
                } else {
                    // 503 `outcome_unknown`, or any other 5xx: it may or
                    // may not have been committed.
                    Outcome::Unknown
                };
                let error = (!status.is_success()).then(|| format!("{status}: {}", reply.body));
                Answer { outcome, body: reply.body, error }
            }
            // Refused before anything was sent: certainly not applied.
            Err(e) if never_sent(&e) => {
                Answer { outcome: Outcome::Failed, body: Value::Null, error: Some(format!("{e:#}")) }
            }
            Err(e) => Answer { outcome: Outcome::Unknown, body: Value::Null, error: Some(format!("{e:#}")) },
        }
    }
}
