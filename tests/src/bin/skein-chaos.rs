//! `skein-chaos`: one chaos run against real `skein-node` processes; prints
//! the fault schedule as it goes and the summary table at the end, and
//! exits 1 when the checker found a violation. See `scripts/chaos.sh`.
//! With `--upgrade-from OLD --upgrade-to NEW` it runs a rolling upgrade
//! instead of the faults (`chaos::upgrade`; `scripts/upgrade-test.sh`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use skein_tests::chaos::{self, RunConfig};

/// Runs a cluster under load while killing, pausing and partitioning its
/// nodes, then checks that nothing acknowledged was lost, no task succeeded
/// twice or under a stale lease, no idempotency key made two tasks, and
/// every node ended with the same state.
///
/// With --upgrade-from and --upgrade-to there are no faults: the cluster
/// starts on the older skein-node, and under the same load and checks its
/// nodes are replaced one at a time (SIGTERM, which drains the node; then
/// the newer binary on the same data directory), followers first and the
/// leader last; then the cluster is finalized (or, with --back, every node
/// goes back to the older binary the same way, never finalizing).
///
/// Needs the binaries: `cargo build --workspace --bins` (they are found next
/// to this one, or in $SKEIN_BIN_DIR).
#[derive(Parser)]
#[command(
    name = "skein-chaos",
    after_help = "Examples:\n  skein-chaos --nodes 5 --minutes 30 --seed 7 --out /tmp/chaos-7\n  \
                  skein-chaos --upgrade-from /var/tmp/skein-0.1.0/bin --upgrade-to /var/tmp/skein-target/debug [--back]"
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
    /// A rolling upgrade instead of faults: the folder holding the older
    /// `skein-node` that the cluster starts on (e.g. a build of 0.1.0).
    #[arg(long, value_name = "OLD_BIN_DIR", requires = "upgrade_to")]
    upgrade_from: Option<PathBuf>,
    /// The folder holding the `skein-node` every node is upgraded to.
    #[arg(long, value_name = "NEW_BIN_DIR", requires = "upgrade_from")]
    upgrade_to: Option<PathBuf>,
    /// With the upgrade: after every node runs the newer binary, replace
    /// them all back with the older one (followers first, the leader last)
    /// instead of finalizing.
    #[arg(long, requires = "upgrade_from")]
    back: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.nodes >= 3, "--nodes must be at least 3 (a minority must be able to fail)");
    let seed = args.seed.unwrap_or_else(|| skein_testkit::now_ms() % 1_000_000);
    let secs = args.minutes.map(|m| m * 60).or(args.seconds).unwrap_or(60);
    let out =
        args.out.unwrap_or_else(|| std::env::temp_dir().join(format!("skein-chaos-{seed}-{}", std::process::id())));
    let mut cfg = RunConfig::new(seed, args.nodes, Duration::from_secs(secs), &out);
    cfg.clients = args.clients;
    let (report, replay) = match (args.upgrade_from, args.upgrade_to) {
        (Some(from), Some(to)) => {
            let (old, new) = (node_binary(&from)?, node_binary(&to)?);
            let replay = chaos::upgrade::replay(&cfg, &old, &new, args.back);
            (chaos::upgrade::run(&cfg, old, new, args.back).await?.1, replay)
        }
        _ => (chaos::run(&cfg).await?.1, cfg.replay()),
    };
    if !report.ok() {
        eprintln!(
            "chaos: {} violations; evidence in {}; replay with: {replay}",
            report.violations.len(),
            out.display()
        );
        std::process::exit(1);
    }
    println!("chaos: no violations (seed {seed}); evidence in {}", out.display());
    Ok(())
}

/// `dir/skein-node`, which must exist.
fn node_binary(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let bin = dir.join("skein-node");
    anyhow::ensure!(bin.is_file(), "no skein-node in {}", dir.display());
    Ok(bin)
}
