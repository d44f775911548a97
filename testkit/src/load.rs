//! A background enqueuer: steady load for the chaos tests and the bench's
//! failover scenario, and the list of every task the cluster acknowledged,
//! which is what "nothing is lost" is checked against. A failed or
//! timed-out request acknowledged nothing (its tasks may or may not exist);
//! only ids in an answer count. It also notes when each answer came, for
//! the longest gap between acknowledged writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::api::Api;

/// What a [`Load`] did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Every task id an enqueue answer carried, in order.
    pub acked: Vec<u64>,
    /// Requests that failed (not acknowledged), with their errors.
    pub errors: Vec<String>,
    pub batches: usize,
    /// When each acknowledged request was answered, since [`Load::started`].
    pub acked_at: Vec<Duration>,
    /// When each failed request ended, since [`Load::started`].
    pub failed_at: Vec<Duration>,
}

/// Enqueues a batch of `spec` every interval, to the target nodes in turn,
/// until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<String>>>,
    report: Arc<Mutex<LoadReport>>,
    started: Instant,
    /// The longest a request may take.
    request_timeout: Duration,
    handle: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Load {
    /// Starts sending `batch` copies of `spec` (one task's JSON) as one
    /// request every `every` to `targets` (HTTP addresses), round robin.
    pub fn start(api: Api, targets: Vec<String>, spec: Value, batch: usize, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(targets));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let started = Instant::now();
        let request_timeout = api.timeout();
        let body = json!({ "tasks": vec![spec; batch] }).to_string().into_bytes();
        let run = Run { api, targets: targets.clone(), body, batch, every, stop: stop.clone(), report: report.clone() };
        let handle = tokio::spawn(run.run(started));
        Load { stop, targets, report, started, request_timeout, handle }
    }

    /// Changes the nodes the load goes to (one was killed or removed).
    pub fn set_targets(&self, targets: Vec<String>) {
        *lock(&self.targets) = targets;
    }

    /// Tasks acknowledged so far.
    pub fn acked(&self) -> usize {
        lock(&self.report).acked.len()
    }

    /// When the load started: the origin of the report's times.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// What it did so far.
    pub fn report(&self) -> LoadReport {
        lock(&self.report).clone()
    }

    /// Stops after the request in flight (if any) and reports.
    pub async fn stop(self) -> anyhow::Result<LoadReport> {
        self.stop.store(true, Ordering::Relaxed);
        // A request in flight ends within the client's timeout.
        tokio::time::timeout(self.request_timeout + Duration::from_secs(5), self.handle)
            .await
            .context("the load did not stop")?
            .context("the load task panicked")?;
        Ok(std::mem::take(&mut *lock(&self.report)))
    }
}

/// The load's task.
struct Run {
    api: Api,
    targets: Arc<Mutex<Vec<String>>>,
    body: Vec<u8>,
    batch: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
}

impl Run {
    async fn run(self, started: Instant) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut turn = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let target = {
                let t = lock(&self.targets);
                if t.is_empty() {
                    continue;
                }
                t[turn % t.len()].clone()
            };
            turn += 1;
            let outcome = self.send(&target).await;
            let at = started.elapsed();
            let mut report = lock(&self.report);
            report.batches += 1;
            match outcome {
                Ok(ids) => {
                    report.acked.extend(ids);
                    report.acked_at.push(at);
                }
                Err(e) => {
                    report.errors.push(format!("{target}: {e:#}"));
                    report.failed_at.push(at);
                }
            }
        }
    }

    async fn send(&self, target: &str) -> anyhow::Result<Vec<u64>> {
        let ids = self.api.enqueue_raw(target, self.body.clone(), true).await?;
        if ids.len() != self.batch {
            bail!("enqueued {} specs, the answer lists {} tasks", self.batch, ids.len());
        }
        Ok(ids)
    }
}
