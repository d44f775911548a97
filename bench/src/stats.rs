//! The figures a scenario measures: throughput of a lifecycle run and
//! latency percentiles.

use std::time::Duration;

use serde::Serialize;

/// N tasks through enqueue → lease → complete.
#[derive(Debug, Clone, Serialize)]
pub struct Lifecycle {
    pub tasks: usize,
    pub clients: usize,
    pub batch: usize,
    /// From the first send to the last enqueue acknowledged.
    pub enqueue_secs: f64,
    /// From the first send until every task has completed.
    pub lifecycle_secs: f64,
    pub enqueue_per_sec: f64,
    pub lifecycle_per_sec: f64,
    /// Requests that failed and were sent again.
    pub errors: usize,
}

impl Lifecycle {
    pub fn new(
        tasks: usize,
        clients: usize,
        batch: usize,
        enqueue: Duration,
        lifecycle: Duration,
        errors: usize,
    ) -> Self {
        let (e, l) = (enqueue.as_secs_f64(), lifecycle.as_secs_f64());
        Lifecycle {
            tasks,
            clients,
            batch,
            enqueue_secs: e,
            lifecycle_secs: l,
            enqueue_per_sec: tasks as f64 / e.max(1e-9),
            lifecycle_per_sec: tasks as f64 / l.max(1e-9),
            errors,
        }
    }
}

/// Samples of one task at a time, in microseconds from its first send.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub ack_us: Vec<i64>,
    pub lease_us: Vec<i64>,
    pub done_us: Vec<i64>,
}

impl Latency {
    pub fn add(&mut self, ack: i64, lease: i64, done: i64) {
        self.ack_us.push(ack);
        self.lease_us.push(lease);
        self.done_us.push(done);
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            samples: self.done_us.len(),
            enqueue_ack: Percentiles::of(&self.ack_us),
            enqueue_to_lease: Percentiles::of(&self.lease_us),
            enqueue_to_completed: Percentiles::of(&self.done_us),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub enqueue_ack: Percentiles,
    pub enqueue_to_lease: Percentiles,
    pub enqueue_to_completed: Percentiles,
}

/// Milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(us: &[i64]) -> Percentiles {
        if us.is_empty() {
            return Percentiles::default();
        }
        let mut v = us.to_vec();
        v.sort_unstable();
        let at = |q: f64| {
            // Nearest rank.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        Percentiles { p50_ms: at(0.50), p99_ms: at(0.99), max_ms: v[v.len() - 1] as f64 / 1000.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=100).map(|x| x * 1000).collect();
        let p = Percentiles::of(&v);
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&[]).p50_ms, 0.0);
    }
}
