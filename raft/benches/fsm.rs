//! How fast the bare state machine applies commands: an enqueue -> lease ->
//! complete cycle, with batches of 1 and of 100 tasks per command. No
//! storage, no Raft: the ceiling the rest of the system works under.
//!
//! Run: `cargo bench -p skein-raft --no-default-features --bench fsm`
//! (the pure part only: no RocksDB build). Prints figures; asserts nothing
//! about time.

use std::time::Instant;

use skein_raft::fsm::{Command, Completion, DiscardCold, MemCold, NewTask, Outcome, Response, Stamped, StateMachine};

fn cycle(
    sm: &mut StateMachine,
    cold: &mut dyn skein_raft::fsm::ColdSink,
    now: &mut u64,
    batch: usize,
    payload: &str,
) -> usize {
    let mut apply = |sm: &mut StateMachine, command: Command| {
        *now += 1;
        sm.apply(&Stamped { now_ms: *now, command }, cold)
    };
    let tasks = (0..batch).map(|_| NewTask::new("bench", "noop", payload)).collect();
    apply(sm, Command::Enqueue { tasks });
    let Response::Leased(grants) = apply(sm, Command::Lease { node: 1, queues: vec![], max: batch as u32 }) else {
        panic!("lease failed")
    };
    let completions = grants
        .iter()
        .map(|g| Completion { task: g.task, token: g.token, outcome: Outcome::Succeeded { result: "null".into() } })
        .collect();
    apply(sm, Command::Complete { node: 1, completions });
    grants.len()
}

fn run(label: &str, batch: usize, tasks: usize, keep_cold: bool) {
    let mut sm = StateMachine::new();
    let mut mem = MemCold::default();
    let mut discard = DiscardCold;
    let payload = "x".repeat(64);
    let mut now = 0;
    let start = Instant::now();
    let mut done = 0;
    let mut commands = 0;
    while done < tasks {
        let cold: &mut dyn skein_raft::fsm::ColdSink = if keep_cold { &mut mem } else { &mut discard };
        done += cycle(&mut sm, cold, &mut now, batch, &payload);
        commands += 3;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label:<40} batch {batch:>4}: {:>10.0} commands/s {:>10.0} task lifecycles/s ({done} tasks, {secs:.2} s)",
        commands as f64 / secs,
        done as f64 / secs
    );
}

/// Resident memory of this process, from /proc (Linux), in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Memory of a deep queue: a million pending tasks whose 1 KiB payloads go
/// to the cold store (discarded here, on disk in a node).
fn depth(tasks: usize) {
    let before = rss_mib();
    let mut sm = StateMachine::new();
    let payload = "x".repeat(1024);
    let start = Instant::now();
    for chunk in 0..tasks / 1000 {
        let tasks = (0..1000).map(|_| NewTask::new("deep", "noop", &payload)).collect();
        sm.apply(&Stamped { now_ms: chunk as u64, command: Command::Enqueue { tasks } }, &mut DiscardCold);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = rss_mib();
    println!(
        "{tasks} pending tasks (1 KiB payloads kept cold): +{:.0} MiB resident, {:.0} bytes/task, enqueued at {:.0}/s",
        after - before,
        (after - before) * 1024.0 * 1024.0 / tasks as f64,
        tasks as f64 / secs
    );
}

fn main() {
    depth(1_000_000);
    println!("bare state machine, enqueue -> lease -> complete (3 commands per cycle)");
    for keep_cold in [false, true] {
        let label = if keep_cold { "with in-memory cold store" } else { "cold writes discarded" };
        run(label, 1, 200_000, keep_cold);
        run(label, 100, 1_000_000, keep_cold);
    }
}
