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
/// its default sync and with sync_interval: always).
#[derive(Debug, Clone, Parser)]
#[command(name = "skein-bench", after_help = EXAMPLES)]
pub struct Args {
    /// A small run of every scenario (under 2 minutes): the smoke test.
    #[arg(long)]
    pub quick: bool,

    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_parser = ["lifecycle", "latency", "failover", "depth", "scale", "compare"])]
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
  skein-bench --scenarios lifecycle --tls # over mutual TLS and HTTPS";

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

    pub fn scale_secs(&self) -> f64 {
        self.pick(self.scale_secs, 5.0, 1.0)
    }
}
