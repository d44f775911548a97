//! `skein-chaos`: one chaos run against real `skein-node` processes; prints
//! the fault schedule as it goes and the summary table at the end, and
//! exits 1 when the checker found a violation. See `scripts/chaos.sh`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use skein_tests::chaos::{self, RunConfig};

/// Runs a cluster under load while killing, pausing and partitioning its
/// nodes, then checks that nothing acknowledged was lost, no task succeeded
/// twice or under a stale lease, no idempotency key made two tasks, and
/// every node ended with the same state.
///
/// Needs the binaries: `cargo build --workspace --bins` (they are found next
/// to this one, or in $SKEIN_BIN_DIR).
#[derive(Parser)]
#[command(
    name = "skein-chaos",
    after_help = "Example:\n  skein-chaos --nodes 5 --minutes 30 --seed 7 --out /tmp/chaos-7"
)]
struct Args {
    /// Names the run: the same seed draws the same fault schedule and
    /// workload choices (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size: 3 or 5 (all voters), or more (5 voters, the rest learners).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Minutes of load and faults.
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<u64>,
    /// Seconds of load and faults (default 60).
    #[arg(long)]
    seconds: Option<u64>,
    /// Concurrent enqueuing clients.
    #[arg(long, default_value_t = 3)]
    clients: u32,
    /// Where to write the evidence (operations, faults, journals, final
    /// state) and report.json (default: a new folder under /tmp).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.nodes >= 3, "--nodes must be at least 3 (a minority must be able to fail)");
    let seed = args.seed.unwrap_or_else(|| skein_tests::now_ms() % 1_000_000);
    let secs = args.minutes.map(|m| m * 60).or(args.seconds).unwrap_or(60);
    let out =
        args.out.unwrap_or_else(|| std::env::temp_dir().join(format!("skein-chaos-{seed}-{}", std::process::id())));
    let mut cfg = RunConfig::new(seed, args.nodes, Duration::from_secs(secs), &out);
    cfg.clients = args.clients;
    let (_, report) = chaos::run(&cfg).await?;
    if !report.ok() {
        eprintln!(
            "chaos: {} violations; evidence in {}; replay with: {}",
            report.violations.len(),
            out.display(),
            cfg.replay()
        );
        std::process::exit(1);
    }
    println!("chaos: no violations (seed {seed}); evidence in {}", out.display());
    Ok(())
}
