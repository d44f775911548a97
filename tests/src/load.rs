//! A background enqueuer: load for the chaos tests, and the list of every
//! task the cluster acknowledged, which is what "nothing is lost" is
//! checked against. A failed or timed-out request acknowledged nothing (its
//! tasks may or may not exist); only ids in an answer count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
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
}

/// Enqueues a batch of `spec` every interval, to the target nodes in turn,
/// until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<String>>>,
    acked: Arc<AtomicUsize>,
    handle: JoinHandle<LoadReport>,
}

impl Load {
    /// Starts sending `batch` copies of `spec` every `every` to `targets`
    /// (HTTP addresses), round robin.
    pub fn start(api: Api, targets: Vec<String>, spec: Value, batch: usize, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(targets));
        let acked = Arc::new(AtomicUsize::new(0));
        let handle = tokio::spawn(run(api, targets.clone(), spec, batch, every, stop.clone(), acked.clone()));
        Load { stop, targets, acked, handle }
    }

    /// Changes the nodes the load goes to (one was killed or removed).
    pub fn set_targets(&self, targets: Vec<String>) {
        *self.targets.lock().unwrap_or_else(PoisonError::into_inner) = targets;
    }

    /// Tasks acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops after the request in flight (if any) and reports.
    pub async fn stop(self) -> anyhow::Result<LoadReport> {
        self.stop.store(true, Ordering::Relaxed);
        // A request in flight ends within the client's timeout.
        tokio::time::timeout(crate::api::REQUEST_TIMEOUT + Duration::from_secs(5), self.handle)
            .await
            .context("the load did not stop")?
            .context("the load task panicked")
    }
}

async fn run(
    api: Api,
    targets: Arc<Mutex<Vec<String>>>,
    spec: Value,
    batch: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> LoadReport {
    let specs = vec![spec; batch];
    let mut report = LoadReport::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let target = {
            let t = targets.lock().unwrap_or_else(PoisonError::into_inner);
            if t.is_empty() {
                continue;
            }
            t[turn % t.len()].clone()
        };
        turn += 1;
        report.batches += 1;
        match api.enqueue(&target, &specs).await {
            Ok(ids) => {
                acked.fetch_add(ids.len(), Ordering::Relaxed);
                report.acked.extend(ids);
            }
            Err(e) => report.errors.push(format!("{target}: {e:#}")),
        }
    }
    report
}
