//! Short chaos runs with fixed seeds, part of the normal tests: a 3-node
//! and a 5-node cluster under load while the nemesis kills, pauses and
//! partitions nodes; the checker must find no violation, and every kind of
//! fault must really have happened. The long run is `scripts/chaos.sh`.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use skein_tests::chaos::history::FaultKind;
use skein_tests::chaos::{self, RunConfig};

async fn short_run(seed: u64, nodes: usize) {
    let dir = tempfile::Builder::new().prefix(&format!("skein-chaos-{seed}-")).tempdir().expect("a temporary folder");
    let cfg = RunConfig::new(seed, nodes, Duration::from_secs(40), dir.path());
    let (evidence, report) = match chaos::run(&cfg).await {
        Ok(r) => r,
        Err(e) => panic!("the chaos run (replay: {}) failed: {e:?}", cfg.replay()),
    };
    let keep = || {
        let kept = dir.keep();
        format!("evidence kept in {}; replay: {}", kept.display(), cfg.replay())
    };
    if !report.ok() {
        panic!("{}\n{}", chaos::summary(&cfg, &report), keep());
    }
    for kind in FaultKind::ALL {
        assert!(
            evidence.faults.iter().any(|f| f.kind == kind),
            "no {} fault happened: {:?}",
            kind.name(),
            evidence.faults
        );
    }
    assert!(report.stats.tasks_acknowledged > 100, "too little load: {:?}", report.stats);
    assert!(report.stats.journal_commits > 100, "too few successes seen by workers: {:?}", report.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_3_nodes_seed_1() {
    short_run(1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_5_nodes_seed_2() {
    short_run(2, 5).await;
}
