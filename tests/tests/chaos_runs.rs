//! Short chaos runs with fixed seeds, part of the normal tests: a 3-node
//! and a 5-node cluster under load while the nemesis kills, pauses and
//! partitions nodes, and 3 members with 4 worker nodes (outside Raft) that
//! do all the work while the nemesis hits them too; the checker must find
//! no violation, and every kind of fault must really have happened. The
//! long run is `scripts/chaos.sh`.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use skein_tests::chaos::checker::Report;
use skein_tests::chaos::history::{Evidence, FaultKind};
use skein_tests::chaos::{self, is_worker, RunConfig};

/// Runs `cfg`; fails on a harness error or a violation, and unless every
/// kind of fault happened under enough load.
async fn run_checked(cfg: &RunConfig, dir: tempfile::TempDir) -> (Evidence, Report) {
    let (evidence, report) = match chaos::run(cfg).await {
        Ok(r) => r,
        Err(e) => panic!("the chaos run (replay: {}) failed: {e:?}", cfg.replay()),
    };
    let keep = || {
        let kept = dir.keep();
        format!("evidence kept in {}; replay: {}", kept.display(), cfg.replay())
    };
    if !report.ok() {
        panic!("{}\n{}", chaos::summary(cfg, &report), keep());
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
    (evidence, report)
}

async fn short_run(seed: u64, nodes: usize) {
    let dir = tempfile::Builder::new().prefix(&format!("skein-chaos-{seed}-")).tempdir().expect("a temporary folder");
    let cfg = RunConfig::new(seed, nodes, Duration::from_secs(40), dir.path());
    run_checked(&cfg, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_3_nodes_seed_1() {
    short_run(1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_5_nodes_seed_2() {
    short_run(2, 5).await;
}

/// 3 members that run nothing (`--slots 0`) and 4 workers of 3 slots each
/// (`--role worker`, their links to the members through the proxies): the
/// seed's schedule kills a worker, pauses one past its lease and cuts one's
/// outbound traffic (an isolated minority always holds workers too),
/// besides the members' faults.
/// No violation, every success a worker's, and the faults really hit
/// workers: kill -9, SIGSTOP and a partition each at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_3_members_4_workers_seed_14() {
    let seed = 14;
    let dir = tempfile::Builder::new().prefix(&format!("skein-chaos-w{seed}-")).tempdir().expect("a temporary folder");
    let cfg = RunConfig::new(seed, 3, Duration::from_secs(40), dir.path()).with_workers(4, 3);
    let (evidence, report) = run_checked(&cfg, dir).await;
    let on_workers = |kinds: &[FaultKind]| {
        evidence.faults.iter().filter(|f| kinds.contains(&f.kind) && f.nodes.iter().any(|&n| is_worker(n))).count()
    };
    let faults = &evidence.faults;
    assert!(on_workers(&[FaultKind::Kill]) > 0, "no worker was killed: {faults:?}");
    assert!(on_workers(&[FaultKind::Pause]) > 0, "no worker was paused: {faults:?}");
    assert!(
        on_workers(&[FaultKind::IsolateMinority, FaultKind::OneWayCut, FaultKind::PartitionLeader]) > 0,
        "no worker was cut off: {faults:?}"
    );
    let s = &report.stats;
    assert_eq!(s.member_successes, 0, "members with no slots ran tasks: {s:?}");
    assert!(s.worker_successes > 100, "too few successes by workers: {s:?}");
}
