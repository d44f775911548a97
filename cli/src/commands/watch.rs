//! `skein watch`: live progress bars (indicatif) per queue or per plan, with
//! rate and ETA, until nothing is left to run or Ctrl-C.
//!
//! One request per refresh: `GET /api/v1/overview?stuck=false&limit=..`.
//! Without a terminal (a pipe, a test) the bars are hidden and a line is
//! printed whenever a bar's numbers change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skein_raft::api::{Overview, PlanProgress};
use skein_raft::fsm::TaskStatus;

use super::{typed, Ctx};
use crate::args::{Output, WatchArgs};

/// One bar: a queue, a plan, or the tasks of an entity.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    key: String,
    total: u64,
    done: u64,
    /// Nothing of it is left to run.
    finished: bool,
    msg: String,
}

pub async fn run(ctx: &mut Ctx<'_>, args: WatchArgs) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal() && ctx.output == Output::Table;
    let target = if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let multi = MultiProgress::with_draw_target(target);
    let style = ProgressStyle::with_template(
        "{prefix:32} [{bar:36.green/white}] {pos:>6}/{len:<6} {percent:>3}% {per_sec:>11} eta {eta:<5} {msg}",
    )?
    .progress_chars("=> ");
    let plan = args.plan.as_deref().map(canonical_ref);
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut printed: BTreeMap<String, Item> = BTreeMap::new();
    let started = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let mut query = vec![("stuck", "false".to_string()), ("limit", "1000".to_string())];
        if let Some(q) = &args.queue {
            query.push(("queue", q.clone()));
        }
        if let Some(p) = &plan {
            query.push(("plan", p.clone()));
        }
        let overview: Overview = typed(ctx.client.get("/api/v1/overview", &query).await?, "overview")?;
        let items = match (&args.queue, &plan) {
            (_, Some(p)) => plan_items(&overview, p)?,
            (Some(q), None) => {
                let items = queue_items(&overview, Some(q));
                if items.is_empty() {
                    bail!("queue {q:?} has no tasks (see `skein queue list`)");
                }
                items
            }
            (None, None) => queue_items(&overview, None),
        };
        for item in &items {
            let bar = bars.entry(item.key.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(item.total).with_style(style.clone()));
                bar.set_prefix(item.key.clone());
                bar
            });
            bar.set_length(item.total);
            bar.set_position(item.done);
            bar.set_message(item.msg.clone());
            if !tty && printed.get(&item.key) != Some(item) {
                ctx.line(&format!("{}: {}/{} done{}", item.key, item.done, item.total, suffix(&item.msg)))?;
                printed.insert(item.key.clone(), item.clone());
            }
        }
        if !items.is_empty() && items.iter().all(|i| i.finished) {
            for bar in bars.values() {
                bar.finish();
            }
            ctx.line(&format!("done in {:.1}s", started.elapsed().as_secs_f64()))?;
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.interval_ms)) => {}
            _ = &mut ctrl_c => {
                for bar in bars.values() {
                    bar.abandon();
                }
                ctx.line("interrupted; the work goes on in the cluster")?;
                return Ok(());
            }
        }
    }
}

fn suffix(msg: &str) -> String {
    if msg.is_empty() {
        String::new()
    } else {
        format!(" ({msg})")
    }
}

/// A bar per queue (or for one): tasks ended of all tasks.
fn queue_items(o: &Overview, only: Option<&str>) -> Vec<Item> {
    o.queues
        .iter()
        .filter(|q| only.is_none_or(|name| q.name == name))
        .filter(|q| q.counts.values().sum::<u64>() > 0)
        .map(|q| {
            let n = |s: TaskStatus| q.counts.get(&s).copied().unwrap_or(0);
            let done = n(TaskStatus::Succeeded) + n(TaskStatus::Dead) + n(TaskStatus::Cancelled);
            let total: u64 = q.counts.values().sum();
            let open = n(TaskStatus::Pending) + n(TaskStatus::Blocked) + n(TaskStatus::Leased);
            Item { key: q.name.clone(), total, done, finished: open == 0, msg: describe(&q.counts, q.paused) }
        })
        .collect()
}

/// `3 running, 12 pending, 1 dead`: what is not plain success.
fn describe(counts: &BTreeMap<TaskStatus, u64>, paused: bool) -> String {
    let mut parts: Vec<String> = [
        (TaskStatus::Leased, "running"),
        (TaskStatus::Pending, "pending"),
        (TaskStatus::Blocked, "blocked"),
        (TaskStatus::Dead, "dead"),
        (TaskStatus::Cancelled, "cancelled"),
    ]
    .iter()
    .filter_map(|(s, word)| counts.get(s).filter(|n| **n > 0).map(|n| format!("{n} {word}")))
    .collect();
    if paused {
        parts.push("paused".into());
    }
    parts.join(", ")
}

/// A bar per plan: `wanted` and the plans it depends on, transitively,
/// each 0 to 100 (%). Without a catalog entry, one bar over the tasks
/// whose payload names the entity.
fn plan_items(o: &Overview, wanted: &str) -> anyhow::Result<Vec<Item>> {
    let by_ref: BTreeMap<&str, &PlanProgress> = o.plans.iter().map(|p| (p.entity_ref.as_str(), p)).collect();
    if by_ref.contains_key(wanted) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![wanted.to_string()];
        while let Some(r) = stack.pop() {
            if !seen.insert(r.clone()) {
                continue;
            }
            if let Some(p) = by_ref.get(r.as_str()) {
                order.push(*p);
                stack.extend(p.depends_on.iter().rev().cloned());
            }
        }
        return Ok(order
            .into_iter()
            .map(|p| {
                let ended = matches!(p.status.as_str(), "succeeded" | "dead" | "cancelled");
                Item {
                    key: p.entity_ref.clone(),
                    total: 100,
                    done: (p.fraction.clamp(0.0, 1.0) * 100.0).round() as u64,
                    finished: ended,
                    msg: match &p.message {
                        Some(m) if !ended => format!("{}: {m}", p.status),
                        _ => p.status.clone(),
                    },
                }
            })
            .collect());
    }
    if o.tasks.is_empty() {
        bail!("no plan {wanted} in the catalog and no task migrating it (see `skein plan list`)");
    }
    let mut counts: BTreeMap<TaskStatus, u64> = BTreeMap::new();
    for t in &o.tasks {
        *counts.entry(t.status).or_default() += 1;
    }
    let n = |s: TaskStatus| counts.get(&s).copied().unwrap_or(0);
    let done = n(TaskStatus::Succeeded) + n(TaskStatus::Dead) + n(TaskStatus::Cancelled);
    Ok(vec![Item {
        key: wanted.to_string(),
        total: o.tasks.len() as u64,
        done,
        finished: done == o.tasks.len() as u64,
        msg: describe(&counts, false),
    }])
}

/// `[kind:][namespace/]name` as Backstage writes it, in its canonical form:
/// `component:default/name`, lower case.
pub fn canonical_ref(r: &str) -> String {
    let r = r.trim().to_ascii_lowercase();
    let (kind, rest) = r.split_once(':').unwrap_or(("component", r.as_str()));
    let (ns, name) = rest.split_once('/').unwrap_or(("default", rest));
    format!("{kind}:{ns}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_raft::fsm::{QueueConfig, QueueStats};

    #[test]
    fn refs_are_canonical() {
        assert_eq!(canonical_ref("Orders-V2"), "component:default/orders-v2");
        assert_eq!(canonical_ref("team/orders"), "component:team/orders");
        assert_eq!(canonical_ref("Component:default/x"), "component:default/x");
    }

    fn overview(queues: Vec<QueueStats>, plans: Vec<PlanProgress>) -> Overview {
        Overview {
            node_id: 1,
            now_ms: 0,
            leader: Some(1),
            term: 1,
            commit_index: None,
            applied_index: None,
            nodes: vec![],
            queues,
            totals: BTreeMap::new(),
            tasks: vec![],
            tasks_total: 0,
            truncated: false,
            plans,
            owners: vec![],
            stuck: None,
        }
    }

    #[test]
    fn queue_bars_count_ended_tasks() {
        let counts = BTreeMap::from([(TaskStatus::Succeeded, 7), (TaskStatus::Dead, 1), (TaskStatus::Leased, 2)]);
        let q = QueueStats {
            name: "q".into(),
            paused: false,
            config: QueueConfig::default(),
            counts,
            oldest_pending_age_ms: None,
        };
        let items = queue_items(&overview(vec![q], vec![]), None);
        assert_eq!(
            items,
            vec![Item { key: "q".into(), total: 10, done: 8, finished: false, msg: "2 running, 1 dead".into() }]
        );
    }

    #[test]
    fn plan_bars_follow_dependencies() {
        let plan = |r: &str, deps: &[&str], status: &str, fraction: f32| PlanProgress {
            entity_ref: r.into(),
            owner: None,
            queue: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            task: None,
            status: status.into(),
            fraction,
            message: None,
            node: None,
            partitions: None,
        };
        let o = overview(
            vec![],
            vec![
                plan("component:default/a", &["component:default/b"], "blocked", 0.0),
                plan("component:default/b", &[], "leased", 0.5),
                plan("component:default/c", &[], "succeeded", 1.0),
            ],
        );
        let items = plan_items(&o, "component:default/a").expect("found");
        let keys: Vec<(&str, u64, bool)> = items.iter().map(|i| (i.key.as_str(), i.done, i.finished)).collect();
        assert_eq!(keys, vec![("component:default/a", 0, false), ("component:default/b", 50, false)]);
        assert!(plan_items(&o, "component:default/zzz").is_err());
    }
}
