//! The bench's flags. Every size has a full-run default and a `--quick`
//! default (a smoke run of well under two minutes); a flag given explicitly
//! wins over both.

use std::path::PathBuf;

use clap::Parser;

/// Benchmarks a local skein cluster (real skein-node processes) and compares
/// it with NATS JetStream. Prints a table and writes JSON.
///
/// Scenarios: lifecycle (enqueue → lease → complete throughput, batches of
/// 1 and 100), latency (one task at a time: p50/p99), failover (a planned
/// restart, SIGTERM, then kill -9 of the leader under load), depth (1M queued 1 KiB tasks: rates, memory,
/// disk, restart, join), scale (1/3/5/7 nodes with 10 ms tasks), compare
/// (the lifecycle and latency workload on a 3-node JetStream cluster, with
/// its default sync and with sync_interval: always), fleet (3 members with
/// no slots and 10/100/1,000 workers outside Raft, up to 10 real processes
/// and the rest simulated, at one offered rate: tasks/s, the leader's CPU per 1,000 tasks, heartbeat bytes/s, a new
/// worker's time to its first task, the share of busy workers).
#[derive(Debug, Clone, Parser)]
#[command(name = "skein-bench", after_help = EXAMPLES)]
pub struct Args {
    /// A small run of every scenario (under 2 minutes): the smoke test.
    #[arg(long)]
    pub quick: bool,

    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_parser = ["lifecycle", "latency", "failover", "depth", "scale", "compare", "fleet"])]
    pub scenarios: Vec<String>,

    /// Tasks per lifecycle run with batches [default: 100000; quick 2000];
    /// runs with batches of 1 send a fifth of them.
    #[arg(long)]
    pub tasks: Option<usize>,

    /// Batch sizes of the lifecycle runs (tasks per enqueue request).
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    pub batches: Vec<usize>,

    /// Concurrent enqueuing clients [default: 32; quick 8].
    #[arg(long)]
    pub clients: Option<usize>,

    /// Worker slots per node for the noop scenarios (lifecycle, latency,
    /// failover, compare) [default: 64].
    #[arg(long, default_value_t = 64)]
    pub slots: u32,

    /// JetStream pull consumers (the analogue of skein's workers) [default: 4].
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,

    /// Samples of the latency scenario [default: 500; quick 30].
    #[arg(long)]
    pub samples: Option<usize>,

    /// Tasks queued by the depth scenario [default: 1000000; quick 10000].
    #[arg(long)]
    pub depth_tasks: Option<usize>,

    /// Cluster sizes of the scale-out scenario [default: 1,3,5,7; quick 1,3].
    #[arg(long, value_delimiter = ',')]
    pub scale_nodes: Vec<usize>,

    /// Worker slots per node in the scale-out scenario [default: 4].
    #[arg(long, default_value_t = 4)]
    pub scale_slots: u32,

    /// Seconds of work per scale-out run at full speed [default: 5; quick 1].
    #[arg(long)]
    pub scale_secs: Option<f64>,

    /// Workers of each fleet run, outside Raft: up to --fleet-real real
    /// processes, the rest simulated in this process, each on a connection
    /// of its own [default: 10,100,1000; quick 10,100].
    #[arg(long, value_delimiter = ',')]
    pub fleet_workers: Vec<usize>,

    /// Workers of each batched fleet run that are real `skein-node --role
    /// worker` processes (the rest are simulated in this process; the
    /// separate-calls runs are all simulated) [default: 10; quick 2].
    #[arg(long)]
    pub fleet_real: Option<usize>,

    /// Slots (concurrent tasks) of each worker.
    #[arg(long, default_value_t = 1)]
    pub fleet_slots: u32,

    /// Tasks/s offered to every fleet size: a task is held
    /// workers × slots / rate seconds, so every worker stays busy and only
    /// the fleet's own cost grows with it.
    #[arg(long, default_value_t = 200.0)]
    pub fleet_rate: f64,

    /// Seconds each fleet run is measured, after its warm-up [default: 30; quick 3].
    #[arg(long)]
    pub fleet_secs: Option<f64>,

    /// The worker protocols to run each fleet size with: batched (the
    /// `exchange` call of 0.6.0) and separate (0.5.0's lease, heartbeat
    /// and complete calls) [default: batched,separate; quick batched].
    #[arg(long, value_delimiter = ',')]
    pub fleet_protocols: Vec<crate::fleet::Protocol>,

    /// Workers that join during each fleet run's window (each one's time to
    /// its first task is reported).
    #[arg(long, default_value_t = 3)]
    pub fleet_joiners: usize,

    /// The skein-node binary [default: next to this binary, or in $SKEIN_BIN_DIR].
    #[arg(long)]
    pub node_bin: Option<PathBuf>,

    /// The nats-server binary [default: $NATS_SERVER, then PATH].
    #[arg(long)]
    pub nats_server: Option<PathBuf>,

    /// Where clusters keep their data; should be the disk a node would use
    /// (not a tmpfs) [default: the system temp directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,

    /// Where to write the JSON results.
    #[arg(long, default_value = "skein-bench.json")]
    pub json: PathBuf,

    /// An extra flag for every skein-node (repeatable), e.g.
    /// `--node-arg=--leases-in-flight=1` to compare settings.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,

    /// Keep every cluster's directory and logs.
    #[arg(long)]
    pub keep: bool,

    /// Start every skein cluster with mutual TLS between the nodes and
    /// HTTPS on their APIs (a CA and node certificates made for each
    /// cluster, in its directory); the bench's clients then speak HTTPS,
    /// trusting only that CA (with the admin token, as always). Off by
    /// default: plain HTTP on loopback. JetStream is unaffected.
    #[arg(long)]
    pub tls: bool,
}

const EXAMPLES: &str = "\
Examples:
  scripts/bench.sh                       # builds (release) and runs everything
  skein-bench --quick                    # the smoke run
  skein-bench --scenarios lifecycle,compare --tasks 50000
  skein-bench --scenarios lifecycle --tls # over mutual TLS and HTTPS
  skein-bench --scenarios fleet --fleet-workers 10,100,1000 --fleet-protocols batched";

impl Args {
    pub fn selected(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }

    fn pick<T: Copy>(&self, explicit: Option<T>, full: T, quick: T) -> T {
        explicit.unwrap_or(if self.quick { quick } else { full })
    }

    pub fn tasks(&self) -> usize {
        self.pick(self.tasks, 100_000, 2_000)
    }

    /// Tasks of a lifecycle run with batches of `batch`: a fifth of
    /// `tasks()` for single-task requests (one request, one Raft or stream
    /// commit per task at most: a rate, measured in a shorter run).
    pub fn tasks_for(&self, batch: usize) -> usize {
        if batch == 1 {
            (self.tasks() / 5).max(1)
        } else {
            self.tasks()
        }
    }

    pub fn clients(&self) -> usize {
        self.pick(self.clients, 32, 8)
    }

    pub fn samples(&self) -> usize {
        self.pick(self.samples, 500, 30)
    }

    pub fn depth_tasks(&self) -> usize {
        self.pick(self.depth_tasks, 1_000_000, 10_000)
    }

    pub fn scale_nodes(&self) -> Vec<usize> {
        if !self.scale_nodes.is_empty() {
            return self.scale_nodes.clone();
        }
        if self.quick {
            vec![1, 3]
        } else {
            vec![1, 3, 5, 7]
        }
    }

    pub fn fleet_workers(&self) -> Vec<usize> {
        if !self.fleet_workers.is_empty() {
            return self.fleet_workers.clone();
        }
        if self.quick {
            vec![10, 100]
        } else {
            vec![10, 100, 1000]
        }
    }

    pub fn fleet_real(&self) -> usize {
        self.pick(self.fleet_real, 10, 2)
    }

    pub fn fleet_secs(&self) -> f64 {
        self.pick(self.fleet_secs, 30.0, 3.0)
    }

    pub fn fleet_protocols(&self) -> Vec<crate::fleet::Protocol> {
        use crate::fleet::Protocol::{Batched, Separate};
        if !self.fleet_protocols.is_empty() {
            return self.fleet_protocols.clone();
        }
        if self.quick {
            vec![Batched]
        } else {
            vec![Batched, Separate]
        }
    }

    pub fn scale_secs(&self) -> f64 {
        self.pick(self.scale_secs, 5.0, 1.0)
    }
}
