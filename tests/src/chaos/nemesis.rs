//! The nemesis: injects one fault at a time from a seeded schedule, holds
//! it, heals it, waits a little, and again, until the run's time is up.
//!
//! The first five faults are the five kinds in a seeded order, so even a
//! short run has each of them; after that each kind is drawn by weight.
//! Which node a fault hits is drawn too, except "the leader", which is
//! whoever leads at that moment. One fault at a time keeps every fault a
//! minority failure: a majority always remains to make progress.
//!
//! Worker nodes (outside Raft; [`super::is_worker`]) are drawn like any
//! node: killed and restarted (they register again), paused, their
//! outbound traffic cut. A minority isolated is a minority of the members
//! plus some of the workers, so that the cut side holds workers too and
//! the members keep their majority.

use std::time::Duration;

use tokio::time::Instant;

use super::history::{Fault, FaultKind};
use super::rng::Rng;
use crate::checks::say;
use crate::proxy::Net;
use skein_testkit::now_ms;
use skein_testkit::Cluster;

/// How long a restarted node may take to be ready again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// A fault as drawn, before it meets the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub kind: FaultKind,
    /// Hit whoever leads (else a node drawn by `pick`).
    pub at_leader: bool,
    pub pick: u64,
    pub hold: Duration,
    /// The quiet time after the heal.
    pub gap: Duration,
}

/// The `n`th fault of the schedule.
pub fn plan(rng: &mut Rng, n: usize, first_kinds: &[FaultKind]) -> Planned {
    let kind = match first_kinds.get(n) {
        Some(&k) => k,
        None => {
            let roll = rng.range(0, 99);
            match roll {
                0..=29 => FaultKind::Kill,
                30..=49 => FaultKind::Pause,
                50..=64 => FaultKind::PartitionLeader,
                65..=84 => FaultKind::IsolateMinority,
                _ => FaultKind::OneWayCut,
            }
        }
    };
    let at_leader = kind == FaultKind::PartitionLeader || rng.chance(50);
    let pick = rng.next_u64();
    let hold_ms = match kind {
        FaultKind::Kill => rng.range(1_000, 4_000),
        // Sometimes past the chaos queue's 3 s lease, sometimes not.
        FaultKind::Pause => rng.range(1_500, 6_000),
        _ => rng.range(2_000, 5_000),
    };
    Planned {
        kind,
        at_leader,
        pick,
        hold: Duration::from_millis(hold_ms),
        gap: Duration::from_millis(rng.range(1_000, 2_500)),
    }
}

/// The five kinds in an order drawn from `rng`.
fn shuffled_kinds(rng: &mut Rng) -> Vec<FaultKind> {
    let mut kinds = FaultKind::ALL.to_vec();
    for i in (1..kinds.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        kinds.swap(i, j);
    }
    kinds
}

/// Injects faults until `duration` has passed; each one is healed before
/// the next, and the last before returning.
pub async fn run(c: &mut Cluster, net: &Net, mut rng: Rng, duration: Duration) -> anyhow::Result<Vec<Fault>> {
    let end = Instant::now() + duration;
    let first = shuffled_kinds(&mut rng);
    let mut faults = Vec::new();
    // A short settling time before the first fault.
    tokio::time::sleep(Duration::from_secs(2).min(duration)).await;
    while Instant::now() < end {
        let p = plan(&mut rng, faults.len(), &first);
        let fault = inject(c, net, &p, faults.len() + 1).await?;
        faults.push(fault);
        let gap = p.gap.min(end.saturating_duration_since(Instant::now()));
        tokio::time::sleep(gap).await;
    }
    Ok(faults)
}

async fn inject(c: &mut Cluster, net: &Net, p: &Planned, n: usize) -> anyhow::Result<Fault> {
    let ids = c.ids();
    let leader = c.leader().await.ok();
    let drawn = ids[(p.pick % ids.len() as u64) as usize];
    let target = if p.at_leader { leader.unwrap_or(drawn) } else { drawn };
    let start_ms = now_ms();
    let hold_ms = p.hold.as_millis();
    let nodes = match p.kind {
        FaultKind::Kill => {
            say(format!(
                "fault {n}: kill -9 node {target}{} for {hold_ms} ms, then restart",
                leader_mark(target, leader)
            ));
            c.kill9(target)?;
            tokio::time::sleep(p.hold).await;
            c.restart(target)?;
            c.wait_ready(target, RESTART_TIMEOUT).await?;
            vec![target]
        }
        FaultKind::Pause => {
            say(format!("fault {n}: SIGSTOP node {target}{} for {hold_ms} ms", leader_mark(target, leader)));
            c.sigstop(target)?;
            tokio::time::sleep(p.hold).await;
            c.sigcont(target)?;
            vec![target]
        }
        FaultKind::PartitionLeader | FaultKind::IsolateMinority => {
            let side = if p.kind == FaultKind::PartitionLeader { vec![target] } else { isolated(&ids, p.pick) };
            let rest: Vec<u64> = ids.iter().copied().filter(|id| !side.contains(id)).collect();
            say(format!("fault {n}: partition {side:?} | {rest:?} (leader {leader:?}) for {hold_ms} ms"));
            net.partition(&side, &rest);
            tokio::time::sleep(p.hold).await;
            net.heal();
            side
        }
        FaultKind::OneWayCut => {
            say(format!(
                "fault {n}: drop everything node {target}{} sends, for {hold_ms} ms",
                leader_mark(target, leader)
            ));
            net.cut_outbound(target);
            tokio::time::sleep(p.hold).await;
            net.heal();
            vec![target]
        }
        FaultKind::Upgrade => anyhow::bail!("the nemesis does not upgrade nodes (chaos::upgrade does)"),
    };
    let leader_hit = leader.is_some_and(|l| nodes.contains(&l));
    Ok(Fault { kind: p.kind, nodes, leader_hit, start_ms, end_ms: now_ms() })
}

/// The side a minority isolation cuts off: a minority of the members
/// ([`minority`]) and, in a run with workers, between one and half of the
/// workers, drawn by `pick` too (a run without workers draws exactly what
/// it always did).
fn isolated(ids: &[u64], pick: u64) -> Vec<u64> {
    let members = super::members(ids);
    let workers: Vec<u64> = ids.iter().copied().filter(|&id| super::is_worker(id)).collect();
    let mut side = minority(&members, pick);
    if !workers.is_empty() {
        let mut rng = Rng::new(pick ^ 0x5eed_0f_c0ff_ee);
        let n = rng.range(1, (workers.len() as u64 / 2).max(1)) as usize;
        let mut pool = workers;
        for _ in 0..n {
            let i = rng.range(0, pool.len() as u64 - 1) as usize;
            side.push(pool.swap_remove(i));
        }
        side.sort_unstable();
    }
    side
}

/// A minority of `ids` (the largest one: `(n - 1) / 2` nodes) drawn by `pick`.
fn minority(ids: &[u64], pick: u64) -> Vec<u64> {
    let size = ((ids.len() - 1) / 2).max(1);
    let mut rng = Rng::new(pick);
    let mut pool = ids.to_vec();
    let mut side = Vec::new();
    while side.len() < size && !pool.is_empty() {
        let i = rng.range(0, pool.len() as u64 - 1) as usize;
        side.push(pool.swap_remove(i));
    }
    side.sort_unstable();
    side
}

fn leader_mark(target: u64, leader: Option<u64>) -> &'static str {
    if leader == Some(target) {
        " (the leader)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_schedule_with_every_kind_first() {
        let schedule = |seed| {
            let mut rng = Rng::new(seed);
            let first = shuffled_kinds(&mut rng);
            (0..12).map(|n| plan(&mut rng, n, &first)).collect::<Vec<_>>()
        };
        let a = schedule(42);
        assert_eq!(a, schedule(42));
        assert_ne!(a, schedule(43));
        let mut kinds: Vec<FaultKind> = a[..5].iter().map(|p| p.kind).collect();
        kinds.sort();
        assert_eq!(kinds, FaultKind::ALL.to_vec());
        assert!(a.iter().all(|p| p.hold >= Duration::from_secs(1) && p.hold <= Duration::from_secs(6)));
    }

    #[test]
    fn an_isolated_side_keeps_the_members_majority_and_holds_workers() {
        assert_eq!(isolated(&[1, 2, 3], 5), minority(&[1, 2, 3], 5));
        let ids = [1, 2, 3, 101, 102, 103, 104];
        for pick in 0..200 {
            let side = isolated(&ids, pick);
            let (workers, members): (Vec<u64>, Vec<u64>) = side.iter().partition(|&&id| crate::chaos::is_worker(id));
            assert_eq!(members.len(), 1, "{side:?}");
            assert!((1..=2).contains(&workers.len()), "{side:?}");
        }
    }

    #[test]
    fn a_minority_is_less_than_half() {
        assert_eq!(minority(&[1, 2, 3], 5).len(), 1);
        let m = minority(&[1, 2, 3, 4, 5], 9);
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|id| (1..=5).contains(id)));
    }
}
