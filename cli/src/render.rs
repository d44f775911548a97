//! Tables and time formatting for `-o table`. Every function here is pure:
//! typed API bodies (and the caller's `now_ms`) in, text out, so the tests
//! below pin the exact output.

use std::collections::BTreeMap;

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use serde::Serialize;
use serde_json::Value;
use skein_raft::api::{ClusterStatus, EnqueueReply, StuckList, TaskDetail};
use skein_raft::fsm::types::{SettingUnit, QUEUE_SETTINGS};
use skein_raft::fsm::{Event, EventKind, QueueStats, Task, TaskStatus};

// ---------------------------------------------------------------- time

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`. Exact for every day of an i64 range
/// that matters here.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Milliseconds since the Unix epoch as `2026-11-24 06:12:03` (UTC).
pub fn fmt_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// [`fmt_time`], or `-` when there is no time.
pub fn fmt_opt_time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), fmt_time)
}

/// A span as people read it: `850ms`, `42s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `3s ago` or `in 12s`, relative to `now_ms`.
pub fn fmt_relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms <= now_ms {
        format!("{} ago", fmt_duration(now_ms - at_ms))
    } else {
        format!("in {}", fmt_duration(at_ms - now_ms))
    }
}

// ---------------------------------------------------------------- helpers

/// A borderless table with aligned columns, like `kubectl get`: easy to read
/// and to cut with awk.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(header.to_vec());
    t
}

/// Renders a table without trailing blanks, columns two spaces apart.
pub(crate) fn finish(mut t: Table, right_aligned: &[usize]) -> String {
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, 2));
        if right_aligned.contains(&i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.trim_fmt()
}

/// One line, at most `max` characters (an ellipsis marks the cut).
pub(crate) fn short(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------- tasks

/// `skein enqueue`: one row per task.
pub fn enqueued(reply: &EnqueueReply) -> String {
    let mut t = table(&["ID", "CREATED", "STATUS"]);
    for task in &reply.tasks {
        let created = if task.created { "yes" } else { "no (existing task with this key)" };
        t.add_row(vec![task.id.to_string(), created.to_string(), task.status.to_string()]);
    }
    finish(t, &[0])
}

/// `skein tasks list`.
pub fn task_list(tasks: &[Task]) -> String {
    if tasks.is_empty() {
        return "no tasks".to_string();
    }
    let mut t = table(&["ID", "QUEUE", "KIND", "STATUS", "ATTEMPT", "PRIORITY", "NODE", "CREATED", "LAST ERROR"]);
    for task in tasks {
        t.add_row(vec![
            task.id.to_string(),
            task.queue.to_string(),
            task.kind.to_string(),
            task.status.to_string(),
            format!("{}/{}", task.attempt, task.max_attempts),
            task.priority.to_string(),
            dash(task.lease.as_ref().map(|l| l.node)),
            fmt_time(task.created_ms),
            task.last_error.as_deref().map_or_else(|| "-".to_string(), |e| short(e, 60)),
        ]);
    }
    finish(t, &[0, 4, 5])
}

/// `skein tasks show`: the fields, the payload, the result, the history.
pub fn task_detail(d: &TaskDetail, now_ms: u64) -> String {
    let task = &d.task;
    let mut fields: Vec<(&str, String)> = vec![
        ("id", task.id.to_string()),
        ("queue", task.queue.to_string()),
        ("kind", task.kind.to_string()),
        ("status", task.status.to_string()),
        ("attempt", format!("{} of {}", task.attempt, task.max_attempts)),
        ("priority", task.priority.to_string()),
        ("key", dash(task.idempotency_key.as_deref())),
        (
            "depends on",
            if task.depends_on.is_empty() {
                "-".to_string()
            } else {
                task.depends_on.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
            },
        ),
    ];
    if let Some(lease) = &task.lease {
        fields.push((
            "lease",
            format!(
                "node {}, token {}, expires {} ({})",
                lease.node,
                lease.token,
                fmt_time(lease.expires_ms),
                fmt_relative(lease.expires_ms, now_ms)
            ),
        ));
    }
    if let Some(p) = &task.progress {
        fields.push(("progress", format!("{:.0}% {}", p.fraction * 100.0, p.message).trim_end().to_string()));
    }
    if let Some(e) = &task.last_error {
        fields.push(("last error", e.clone()));
    }
    if task.expiry_streak > 0 {
        fields.push((
            "expired leases",
            format!("{} in a row (does the task crash or hang its worker?)", task.expiry_streak),
        ));
    }
    fields.push(("created", fmt_time(task.created_ms)));
    if task.not_before_ms > task.created_ms && !task.status.is_terminal() {
        fields.push((
            "not before",
            format!("{} ({})", fmt_time(task.not_before_ms), fmt_relative(task.not_before_ms, now_ms)),
        ));
    }
    fields.push(("first started", fmt_opt_time(task.first_started_ms)));
    fields.push(("last started", fmt_opt_time(task.last_started_ms)));
    fields.push(("finished", fmt_opt_time(task.finished_ms)));
    fields.push(("payload size", format!("{} bytes", task.payload_bytes)));

    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).force_no_tty();
    for (k, v) in fields {
        t.add_row(vec![k.to_string(), v]);
    }
    let mut out = finish(t, &[]);

    out.push_str("\n\npayload:\n");
    out.push_str(&d.payload.as_ref().map_or_else(|| "  -".to_string(), |p| indent(&pretty(p))));
    out.push_str("\n\nresult:\n");
    out.push_str(&d.result.as_ref().map_or_else(|| "  -".to_string(), |r| indent(&pretty(r))));

    let kept = d.history.len();
    out.push_str(&format!("\n\nhistory ({kept} events"));
    if (task.history_len as usize) > kept {
        out.push_str(&format!(", the {} oldest no longer kept", task.history_len as usize - kept));
    }
    out.push_str("):\n");
    out.push_str(&indent(&history(&d.history)));
    out
}

/// A task's history, oldest first.
pub fn history(events: &[Event]) -> String {
    let mut t = table(&["TIME", "EVENT", "NODE", "TOKEN", "DETAIL"]);
    for e in events {
        let (what, detail) = event_text(&e.what);
        t.add_row(vec![fmt_time(e.at_ms), what.to_string(), dash(e.node), dash(e.token), detail]);
    }
    finish(t, &[])
}

fn event_text(kind: &EventKind) -> (&'static str, String) {
    let retry = |at: &u64| format!("retry at {}", fmt_time(*at));
    match kind {
        EventKind::Enqueued { status } => ("enqueued", format!("as {status}")),
        EventKind::Unblocked => ("unblocked", "dependencies succeeded".into()),
        EventKind::Leased { attempt } => ("leased", format!("attempt {attempt}")),
        EventKind::Succeeded => ("succeeded", String::new()),
        EventKind::Failed { error, retry_at_ms } => {
            ("failed", format!("{}; {}", short(error, 100), retry(retry_at_ms)))
        }
        EventKind::Expired { retry_at_ms } => ("lease expired", retry(retry_at_ms)),
        EventKind::Dead { error } => ("dead", short(error, 100)),
        EventKind::Cancelled { reason } => ("cancelled", short(reason, 100)),
        EventKind::Retried => ("retried", "by request".into()),
        EventKind::Released { retry_at_ms } => ("released", format!("handed back; {}", retry(retry_at_ms))),
        EventKind::Requested { by, action } => ("requested", format!("{action} by {by}")),
    }
}

// ---------------------------------------------------------------- access

/// `skein token list`.
pub fn tokens(tokens: &[skein_raft::api::TokenInfo], now_ms: u64) -> String {
    if tokens.is_empty() {
        return "no tokens".to_string();
    }
    let mut t = table(&["ID", "NAME", "ROLE", "OWNERS", "CREATED", "EXPIRES", "LAST USED", "BY"]);
    for k in tokens {
        t.add_row(vec![
            k.id.clone(),
            k.name.clone(),
            k.role.to_string(),
            if k.owners.is_empty() { "any".to_string() } else { k.owners.join(", ") },
            fmt_time(k.created_ms),
            k.expires_ms.map_or_else(|| "never".to_string(), fmt_time),
            k.last_used_ms.map_or_else(|| "-".to_string(), |at| fmt_relative(at, now_ms)),
            k.created_by.clone(),
        ]);
    }
    finish(t, &[])
}

/// The policy's mode, as a first line.
fn policy_mode(p: &skein_raft::api::policy::PolicyView) -> String {
    match p.mode.as_str() {
        "open" => "policy: open (any program, any location; `skein policy enforce` applies the lists below)".into(),
        other => format!("policy: {other}"),
    }
}

/// `skein exec list`.
pub fn exec_rules(p: &skein_raft::api::policy::PolicyView) -> String {
    if p.programs.is_empty() {
        return format!(
            "{}
no programs allowed (skein exec allow /abs/path)",
            policy_mode(p)
        );
    }
    let mut t = table(&["PROGRAM", "LEADING ARGS", "NOTE", "ALLOWED", "BY"]);
    for r in &p.programs {
        let note = if r.interpreter && r.args.is_empty() { "runs anything" } else { "" };
        t.add_row(vec![
            r.program.clone(),
            if r.args.is_empty() { "(any)".to_string() } else { r.args.join(" ") },
            note.to_string(),
            fmt_time(r.created_ms),
            r.created_by.clone(),
        ]);
    }
    format!(
        "{}
{}",
        policy_mode(p),
        finish(t, &[])
    )
}

/// `skein roots list`.
pub fn data_roots(p: &skein_raft::api::policy::PolicyView) -> String {
    if p.roots.is_empty() {
        return format!(
            "{}
no data roots allowed (skein roots allow file:///data/)",
            policy_mode(p)
        );
    }
    let mut t = table(&["ROOT", "ENDPOINT", "REGION", "CREDENTIALS", "ALLOWED", "BY"]);
    for r in &p.roots {
        t.add_row(vec![
            r.url.clone(),
            r.endpoint.clone().unwrap_or_else(|| "-".into()),
            r.region.clone().unwrap_or_else(|| "-".into()),
            r.credentials.clone(),
            fmt_time(r.created_ms),
            r.created_by.clone(),
        ]);
    }
    format!(
        "{}
{}",
        policy_mode(p),
        finish(t, &[])
    )
}

/// `skein audit`.
pub fn audit(records: &[skein_raft::api::AuditEntry]) -> String {
    if records.is_empty() {
        return "no audit records".to_string();
    }
    let mut t = table(&["SEQ", "TIME", "PRINCIPAL", "ACTION", "TARGET", "OUTCOME"]);
    for r in records {
        t.add_row(vec![
            r.seq.to_string(),
            fmt_time(r.record.at_ms),
            r.record.principal.clone(),
            r.record.action.clone(),
            short(&r.record.target, 60),
            short(&r.record.outcome, 60),
        ]);
    }
    finish(t, &[0])
}

// ---------------------------------------------------------------- status

/// One dataset's row of `skein status`; also its JSON form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRow {
    pub id: u64,
    pub queue: String,
    pub kind: String,
    /// The payload's `entity_ref`, else its `dataset`, else `kind#id`.
    pub name: String,
    pub status: TaskStatus,
    /// The node holding the lease, while leased.
    pub node: Option<u64>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Progress, the last error, or expiring leases; empty when all is well.
    pub note: String,
}

/// The name a person knows a task by: the payload's `entity_ref` (a catalog
/// entity), else its `dataset`, else `kind#id`.
pub fn task_name(task: &Task, payload: Option<&Value>) -> String {
    for field in ["entity_ref", "dataset"] {
        match payload.and_then(|p| p.get(field)) {
            Some(Value::String(s)) if !s.is_empty() => return s.clone(),
            Some(Value::Null) | None => {}
            Some(Value::String(_)) => {}
            Some(other) => return other.to_string(),
        }
    }
    format!("{}#{}", task.kind, task.id)
}

pub fn status_row(task: &Task, payload: Option<&Value>) -> StatusRow {
    let mut notes = Vec::new();
    if task.status == TaskStatus::Leased {
        if let Some(p) = &task.progress {
            notes.push(format!("{:.0}% {}", p.fraction * 100.0, p.message).trim_end().to_string());
        }
    }
    if task.status == TaskStatus::Blocked && !task.depends_on.is_empty() {
        let ids: Vec<String> = task.depends_on.iter().map(|id| id.to_string()).collect();
        notes.push(format!("waits for {}", ids.join(", ")));
    }
    if task.expiry_streak > 0 {
        notes.push(format!("stuck? lease expired {}× in a row", task.expiry_streak));
    }
    if task.status != TaskStatus::Succeeded {
        if let Some(e) = &task.last_error {
            notes.push(short(e, 60));
        }
    }
    StatusRow {
        id: task.id.0,
        queue: task.queue.to_string(),
        kind: task.kind.to_string(),
        name: task_name(task, payload),
        status: task.status,
        node: task.lease.as_ref().map(|l| l.node).or(task.last_node),
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        started_ms: task.first_started_ms,
        finished_ms: task.finished_ms,
        note: notes.join("; "),
    }
}

/// Tasks per status, every status present.
pub fn status_counts(rows: &[StatusRow]) -> BTreeMap<TaskStatus, u64> {
    let mut counts: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for r in rows {
        *counts.entry(r.status).or_default() += 1;
    }
    counts
}

/// `16 tasks: 3 pending, 2 leased, 10 succeeded, 1 dead`.
pub fn counts_line(counts: &BTreeMap<TaskStatus, u64>) -> String {
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts.iter().filter(|(_, n)| **n > 0).map(|(s, n)| format!("{n} {s}")).collect();
    let noun = if total == 1 { "task" } else { "tasks" };
    if parts.is_empty() {
        format!("{total} {noun}")
    } else {
        format!("{total} {noun}: {}", parts.join(", "))
    }
}

/// `skein status`: one row per dataset, then the counts.
pub fn status(rows: &[StatusRow]) -> String {
    let counts = counts_line(&status_counts(rows));
    if rows.is_empty() {
        return counts;
    }
    let mut t = table(&["DATASET/TASK", "STATUS", "NODE", "ATTEMPTS", "STARTED", "COMPLETED", "NOTE"]);
    for r in rows {
        t.add_row(vec![
            r.name.clone(),
            r.status.to_string(),
            dash(r.node),
            format!("{}/{}", r.attempt, r.max_attempts),
            fmt_opt_time(r.started_ms),
            fmt_opt_time(r.finished_ms),
            if r.note.is_empty() { "-".to_string() } else { r.note.clone() },
        ]);
    }
    format!("{}\n\n{counts}", finish(t, &[3]))
}

// ---------------------------------------------------------------- queues

/// `skein queue list`.
pub fn queues(queues: &[QueueStats]) -> String {
    if queues.is_empty() {
        return "no queues (a queue is created by its first enqueue)".to_string();
    }
    let mut t = table(&[
        "QUEUE",
        "STATE",
        "PENDING",
        "BLOCKED",
        "LEASED",
        "SUCCEEDED",
        "DEAD",
        "CANCELLED",
        "OLDEST PENDING",
        "LEASE",
        "ATTEMPTS",
        "CONCURRENCY",
    ]);
    for q in queues {
        let n = |s: TaskStatus| q.counts.get(&s).copied().unwrap_or(0).to_string();
        t.add_row(vec![
            q.name.clone(),
            if q.paused { "paused" } else { "active" }.to_string(),
            n(TaskStatus::Pending),
            n(TaskStatus::Blocked),
            n(TaskStatus::Leased),
            n(TaskStatus::Succeeded),
            n(TaskStatus::Dead),
            n(TaskStatus::Cancelled),
            q.oldest_pending_age_ms.map_or_else(|| "-".to_string(), fmt_duration),
            fmt_duration(q.config.lease_ms),
            q.config.max_attempts.to_string(),
            if q.config.concurrency == 0 { "unlimited".to_string() } else { q.config.concurrency.to_string() },
        ]);
    }
    finish(t, &[2, 3, 4, 5, 6, 7, 10])
}

/// `skein queue show`: the queue's state and counts, then every queue
/// setting (the rows of [`QUEUE_SETTINGS`], in their order) with its default.
pub fn queue_detail(q: &QueueStats) -> String {
    let mut head = Table::new();
    head.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).force_no_tty();
    for (k, v) in [
        ("queue", q.name.clone()),
        ("state", if q.paused { "paused" } else { "active" }.to_string()),
        ("tasks", counts_line(&q.counts)),
        ("oldest pending", q.oldest_pending_age_ms.map_or_else(|| "-".to_string(), fmt_duration)),
    ] {
        head.add_row(vec![k.to_string(), v]);
    }
    let mut t = table(&["SETTING", "VALUE", "DEFAULT"]);
    for s in QUEUE_SETTINGS {
        let value = q.config.get(s.name).map_or_else(|| "?".to_string(), |v| setting_value(s.unit, v));
        t.add_row(vec![s.name.to_string(), value, setting_value(s.unit, s.default)]);
    }
    format!("{}\n\n{}", finish(head, &[]), finish(t, &[]))
}

/// A setting's value: milliseconds also as people read them (`60000 (1m 0s)`).
fn setting_value(unit: SettingUnit, v: u64) -> String {
    match unit {
        SettingUnit::Millis if v >= 1000 => format!("{v} ({})", fmt_duration(v)),
        SettingUnit::Millis | SettingUnit::Count => v.to_string(),
    }
}

// ---------------------------------------------------------------- cluster

/// `skein cluster status`: the members, then leader, term and indexes.
pub fn cluster(c: &ClusterStatus, now_ms: u64) -> String {
    let mut t =
        table(&["ID", "ROLE", "RELEASE", "RPC", "HTTP", "MATCHED", "SLOTS", "LEASES", "DRAINING", "LAST HEARTBEAT"]);
    for n in &c.nodes {
        t.add_row(vec![
            n.id.to_string(),
            n.role.clone(),
            // A 0.1.0 node reports no releases, its own included.
            n.release
                .clone()
                .or_else(|| (c.release.is_none() && n.id == c.node_id).then(|| "0.1.0".into()))
                .unwrap_or_else(|| "?".into()),
            n.rpc_addr.clone(),
            n.http_addr.clone(),
            dash(n.matched_index),
            dash(n.slots),
            n.leases_held.to_string(),
            if n.draining { "yes" } else { "no" }.to_string(),
            n.last_heartbeat_ms
                .map_or_else(|| "-".to_string(), |at| format!("{} ({})", fmt_time(at), fmt_relative(at, now_ms))),
        ]);
    }
    let leader = c.leader.map_or_else(|| "none (an election may be under way)".to_string(), |l| format!("node {l}"));
    let format = match (c.format, &c.release) {
        (Some(f), _) => format!("stored format: {f}{}", finalize_hint(c, f)),
        (None, _) => "stored format: 1 (the answering node runs skein 0.1.0, which does not report versions)".into(),
    };
    let summary = format!(
        "leader: {leader}   term: {}   commit: {}   applied: {}   (answered by node {})\n{format}",
        c.term,
        dash(c.commit_index),
        dash(c.applied_index),
        c.node_id
    );
    if c.nodes.is_empty() {
        return summary;
    }
    format!("{}\n\n{summary}", finish(t, &[0, 5, 6, 7]))
}

/// After the format: what an operator mid-upgrade should do next.
fn finalize_hint(c: &ClusterStatus, format: u32) -> String {
    let newest = c.nodes.iter().filter_map(|n| n.format).max().unwrap_or(format);
    if newest <= format {
        return String::new();
    }
    let behind: Vec<String> =
        c.nodes.iter().filter(|n| n.format.is_none_or(|f| f < newest)).map(|n| n.id.to_string()).collect();
    if behind.is_empty() {
        format!(" (every node reads format {newest}: `skein cluster finalize` to use it; no way back after)")
    } else {
        format!(" (node {} still to upgrade before `skein cluster finalize`)", behind.join(", "))
    }
}

/// `skein queue redrive`: what was retried, and what stays dead.
pub fn redrive(queue: &str, r: &skein_raft::api::RedriveReply) -> String {
    let mut out = if r.tasks.is_empty() {
        format!("queue {queue:?} has no dead tasks to retry")
    } else {
        let ids: Vec<String> = r.tasks.iter().map(|t| t.id.to_string()).collect();
        format!("queue {queue:?}: {} dead tasks retried: {}", r.tasks.len(), ids.join(", "))
    };
    for why in &r.refused {
        out.push_str(&format!("\nstays dead: {why}"));
    }
    out
}

// ---------------------------------------------------------------- stuck

/// `skein stuck`: one row per stuck task with every reason, then the silent nodes.
pub fn stuck(list: &StuckList) -> String {
    let silent: Vec<String> = list
        .silent_nodes
        .iter()
        .map(|n| format!("node {} (no heartbeat for {}, {} leases)", n.node, fmt_duration(n.silent_ms), n.leases))
        .collect();
    let silent = if silent.is_empty() { String::new() } else { format!("\nsilent nodes: {}", silent.join(", ")) };
    if list.tasks.is_empty() {
        return format!("nothing is stuck{silent}");
    }
    let mut t = table(&["ID", "DATASET/TASK", "QUEUE", "STATUS", "NODE", "ATTEMPTS", "WHY"]);
    for s in &list.tasks {
        let r = &s.row;
        t.add_row(vec![
            r.id.to_string(),
            r.name.clone(),
            r.queue.clone(),
            r.status.to_string(),
            dash(r.node),
            format!("{}/{}", r.attempt, r.max_attempts),
            s.why.join("; "),
        ]);
    }
    let noun = if list.tasks.len() == 1 { "task" } else { "tasks" };
    format!("{}\n\n{} stuck {noun}{silent}", finish(t, &[0, 4, 5]), list.tasks.len())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use skein_raft::api::{ClusterNode, EnqueuedTask};
    use skein_raft::fsm::{FencingToken, Lease, Progress, QueueConfig, TaskId};

    use super::*;

    const T0: u64 = 1_795_500_723_000; // 2026-11-24 06:12:03 UTC

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1)); // 2100 is not a leap year
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
    }

    #[test]
    fn civil_dates_count_every_day() {
        // Walk 1970..2400 day by day: each date follows the previous one.
        let mut prev = civil_from_days(0);
        for days in 1..(430 * 366) {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = prev;
            let next_day = (y, m, d) == (py, pm, pd + 1);
            let next_month = d == 1 && ((y, m) == (py, pm + 1) || (y, m, pm) == (py + 1, 1, 12));
            assert!(next_day || next_month, "{prev:?} -> {:?}", (y, m, d));
            prev = (y, m, d);
        }
    }

    #[test]
    fn times() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_time(T0), "2026-11-24 06:12:03");
        assert_eq!(fmt_time(T0 + 999), "2026-11-24 06:12:03");
        assert_eq!(fmt_time(951_868_799_000), "2000-02-29 23:59:59");
        assert_eq!(fmt_time(4_107_542_400_000), "2100-03-01 00:00:00");
        assert_eq!(fmt_opt_time(None), "-");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(0), "0ms");
        assert_eq!(fmt_duration(850), "850ms");
        assert_eq!(fmt_duration(42_000), "42s");
        assert_eq!(fmt_duration(192_000), "3m 12s");
        assert_eq!(fmt_duration(7_500_000), "2h 5m");
        assert_eq!(fmt_duration(4 * 86_400_000 + 3_600_000), "4d 1h");
        assert_eq!(fmt_relative(T0, T0 + 3_000), "3s ago");
        assert_eq!(fmt_relative(T0 + 12_000, T0), "in 12s");
    }

    fn task(id: u64, status: TaskStatus) -> Task {
        Task {
            id: TaskId(id),
            queue: Arc::from("migrations"),
            kind: Arc::from("migration"),
            priority: 0,
            status,
            attempt: 1,
            max_attempts: 5,
            not_before_ms: T0,
            idempotency_key: None,
            depends_on: vec![],
            lease: None,
            last_node: None,
            progress: None,
            last_error: None,
            expiry_streak: 0,
            payload_bytes: 40,
            created_ms: T0,
            first_started_ms: None,
            last_started_ms: None,
            finished_ms: None,
            history_len: 0,
        }
    }

    #[test]
    fn enqueued_table() {
        let reply = EnqueueReply {
            tasks: vec![
                EnqueuedTask { id: TaskId(7), created: true, status: TaskStatus::Pending },
                EnqueuedTask { id: TaskId(12), created: false, status: TaskStatus::Blocked },
            ],
        };
        assert_eq!(
            enqueued(&reply),
            "ID  CREATED                           STATUS\n \
             7  yes                               pending\n\
             12  no (existing task with this key)  blocked"
        );
    }

    #[test]
    fn list_table() {
        let mut t = task(3, TaskStatus::Leased);
        t.lease = Some(Lease { node: 2, token: FencingToken(99), expires_ms: T0 + 30_000 });
        t.last_error = Some("disk\nfull".into());
        let out = task_list(&[t]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  QUEUE       KIND       STATUS  ATTEMPT  PRIORITY  NODE  CREATED"), "{out}");
        assert!(lines[1].contains("migrations  migration  leased"), "{out}");
        assert!(lines[1].contains("1/5"), "{out}");
        assert!(lines[1].contains("2026-11-24 06:12:03  disk full"), "{out}");
        assert_eq!(task_list(&[]), "no tasks");
    }

    #[test]
    fn names_come_from_the_payload() {
        let t = task(9, TaskStatus::Pending);
        assert_eq!(
            task_name(&t, Some(&json!({"entity_ref": "component:default/orders", "dataset": "x"}))),
            "component:default/orders"
        );
        assert_eq!(task_name(&t, Some(&json!({"dataset": "orders"}))), "orders");
        assert_eq!(task_name(&t, Some(&json!({"entity_ref": "", "dataset": "orders"}))), "orders");
        assert_eq!(task_name(&t, Some(&json!({"other": 1}))), "migration#9");
        assert_eq!(task_name(&t, Some(&json!([1, 2]))), "migration#9");
        assert_eq!(task_name(&t, None), "migration#9");
    }

    #[test]
    fn status_table_and_counts() {
        let mut a = task(1, TaskStatus::Succeeded);
        a.first_started_ms = Some(T0 + 1_000);
        a.finished_ms = Some(T0 + 61_000);
        a.last_error = Some("old failure".into());
        let mut b = task(2, TaskStatus::Leased);
        b.lease = Some(Lease { node: 3, token: FencingToken(5), expires_ms: T0 });
        b.progress = Some(Progress { fraction: 0.42, message: "copying".into() });
        b.expiry_streak = 2;
        b.attempt = 3;
        let rows = vec![
            status_row(&a, Some(&json!({"entity_ref": "component:default/orders"}))),
            status_row(&b, Some(&json!({"dataset": "customers"}))),
        ];
        assert_eq!(rows[0].note, "", "a succeeded task shows no old error");
        assert_eq!(rows[1].note, "42% copying; stuck? lease expired 2× in a row");
        assert_eq!(
            status(&rows),
            "DATASET/TASK              STATUS     NODE  ATTEMPTS  STARTED              COMPLETED            NOTE\n\
             component:default/orders  succeeded  -          1/5  2026-11-24 06:12:04  2026-11-24 06:13:04  -\n\
             customers                 leased     3          3/5  -                    -                    42% copying; stuck? lease expired 2× in a row\n\
             \n\
             2 tasks: 1 leased, 1 succeeded"
        );
        assert_eq!(status(&[]), "0 tasks");
    }

    #[test]
    fn detail_shows_fields_payload_result_history() {
        let mut t = task(42, TaskStatus::Succeeded);
        t.idempotency_key = Some(Arc::from("orders-v2"));
        t.depends_on = vec![TaskId(40), TaskId(41)];
        t.first_started_ms = Some(T0 + 1_000);
        t.last_started_ms = Some(T0 + 1_000);
        t.finished_ms = Some(T0 + 5_000);
        t.history_len = 5;
        let d = TaskDetail {
            task: t,
            payload: Some(json!({"dataset": "orders"})),
            result: Some(json!({"rows": 10})),
            history: vec![
                Event {
                    at_ms: T0 + 1_000,
                    node: Some(2),
                    token: Some(FencingToken(17)),
                    what: EventKind::Leased { attempt: 1 },
                },
                Event { at_ms: T0 + 5_000, node: Some(2), token: Some(FencingToken(17)), what: EventKind::Succeeded },
            ],
        };
        let out = task_detail(&d, T0 + 10_000);
        for want in [
            "id             42",
            "status         succeeded",
            "key            orders-v2",
            "depends on     40, 41",
            "finished       2026-11-24 06:12:08",
            "payload:\n  {\n    \"dataset\": \"orders\"\n  }",
            "result:\n  {\n    \"rows\": 10\n  }",
            "history (2 events, the 3 oldest no longer kept):",
            "  2026-11-24 06:12:04  leased     2     17     attempt 1",
            "  2026-11-24 06:12:08  succeeded  2     17",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }

    #[test]
    fn queue_table() {
        let q = QueueStats {
            name: "demo".into(),
            paused: true,
            config: QueueConfig::default(),
            counts: [(TaskStatus::Pending, 12), (TaskStatus::Dead, 1)].into_iter().collect(),
            oldest_pending_age_ms: Some(192_000),
        };
        let out = queues(&[q]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["demo", "paused", "12", "0", "0", "0", "1", "0", "3m", "12s", "30s", "5", "unlimited"]);
        assert!(queues(&[]).starts_with("no queues"));
    }

    #[test]
    fn queue_detail_shows_every_setting() {
        let q = QueueStats {
            name: "demo".into(),
            paused: false,
            config: QueueConfig { lease_ms: 60_000, concurrency: 4, stuck_run_ms: 0, ..QueueConfig::default() },
            counts: [(TaskStatus::Pending, 12), (TaskStatus::Dead, 1)].into_iter().collect(),
            oldest_pending_age_ms: None,
        };
        let out = queue_detail(&q);
        for want in [
            "queue           demo\n",
            "state           active\n",
            "tasks           13 tasks: 12 pending, 1 dead\n",
            "oldest pending  -\n\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        // The settings: cells two spaces apart or more, one row per setting.
        let rows: Vec<Vec<&str>> = out
            .split("\n\n")
            .nth(1)
            .expect("a settings table")
            .lines()
            .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
            .collect();
        assert_eq!(rows[0], ["SETTING", "VALUE", "DEFAULT"]);
        let row = |name: &str| rows.iter().find(|r| r[0] == name).unwrap_or_else(|| panic!("no {name} in\n{out}"));
        assert_eq!(row("lease_ms"), &["lease_ms", "60000 (1m 0s)", "30000 (30s)"]);
        assert_eq!(row("max_attempts"), &["max_attempts", "5", "5"]);
        assert_eq!(row("concurrency"), &["concurrency", "4", "0"]);
        assert_eq!(row("retention_ms"), &["retention_ms", "604800000 (7d 0h)", "604800000 (7d 0h)"]);
        assert_eq!(row("stuck_run_ms"), &["stuck_run_ms", "0", "0"]);
        assert_eq!(row("stuck_silence_ms"), &["stuck_silence_ms", "10000 (10s)", "10000 (10s)"]);
        let names: Vec<&str> = rows[1..].iter().map(|r| r[0]).collect();
        assert_eq!(names, QUEUE_SETTINGS.iter().map(|s| s.name).collect::<Vec<_>>());
        assert_eq!(out.lines().count(), 4 + 1 + 1 + QUEUE_SETTINGS.len(), "{out}");
    }

    #[test]
    fn cluster_table() {
        let c = ClusterStatus {
            node_id: 2,
            leader: Some(1),
            term: 3,
            commit_index: Some(1234),
            applied_index: Some(1230),
            nodes: vec![
                ClusterNode {
                    id: 1,
                    rpc_addr: "127.0.0.1:7801".into(),
                    http_addr: "127.0.0.1:7701".into(),
                    role: "leader".into(),
                    matched_index: Some(1234),
                    slots: Some(4),
                    leases_held: 2,
                    draining: false,
                    last_heartbeat_ms: Some(T0),
                    release: Some("0.2.0".into()),
                    format: Some(2),
                },
                ClusterNode {
                    id: 2,
                    rpc_addr: "127.0.0.1:7802".into(),
                    http_addr: "127.0.0.1:7702".into(),
                    role: "learner".into(),
                    matched_index: None,
                    slots: None,
                    leases_held: 0,
                    draining: true,
                    last_heartbeat_ms: None,
                    release: Some("0.1.0".into()),
                    format: Some(1),
                },
            ],
            format: Some(1),
            release: Some("0.2.0".into()),
        };
        let out = cluster(&c, T0 + 2_000);
        assert_eq!(
            out,
            "ID  ROLE     RELEASE  RPC             HTTP            MATCHED  SLOTS  LEASES  DRAINING  LAST HEARTBEAT\n \
             1  leader   0.2.0    127.0.0.1:7801  127.0.0.1:7701     1234      4       2  no        2026-11-24 06:12:03 (2s ago)\n \
             2  learner  0.1.0    127.0.0.1:7802  127.0.0.1:7702        -      -       0  yes       -\n\
             \n\
             leader: node 1   term: 3   commit: 1234   applied: 1230   (answered by node 2)\n\
             stored format: 1 (node 2 still to upgrade before `skein cluster finalize`)"
        );
    }

    #[test]
    fn stuck_table_lists_every_reason_and_silent_nodes() {
        use skein_raft::api::{StuckRow, TaskRow};
        use skein_raft::fsm::{SilentNode, StuckReason};
        let mut t = task(7, TaskStatus::Leased);
        t.attempt = 2;
        t.lease = Some(Lease { node: 3, token: FencingToken(40), expires_ms: T0 });
        let payload = json!({"dataset": "orders"});
        let reasons = vec![
            StuckReason::RunningTooLong { running_ms: 7_000, limit_ms: 5_000 },
            StuckReason::NodeSilent { node: 3, silent_ms: 12_000, limit_ms: 10_000 },
        ];
        let list = StuckList {
            now_ms: T0,
            tasks: vec![StuckRow {
                row: TaskRow::new(&t, Some(&payload), T0),
                why: reasons.iter().map(ToString::to_string).collect(),
                reasons,
            }],
            silent_nodes: vec![SilentNode { node: 3, silent_ms: 12_000, leases: 1 }],
        };
        let out = stuck(&list);
        let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["ID", "DATASET/TASK", "QUEUE", "STATUS", "NODE", "ATTEMPTS", "WHY"], "{out}");
        let row: Vec<&str> = out.lines().nth(1).unwrap_or_default().split_whitespace().take(6).collect();
        assert_eq!(row, ["7", "orders", "migrations", "leased", "3", "2/5"], "{out}");
        assert!(
            out.contains("running for 7.0s, longer than the limit of 5.0s; node 3 holds the lease but sent no heartbeat for 12.0s"),
            "{out}"
        );
        assert!(out.ends_with("1 stuck task\nsilent nodes: node 3 (no heartbeat for 12s, 1 leases)"), "{out}");
        let empty = StuckList { now_ms: T0, tasks: vec![], silent_nodes: vec![] };
        assert_eq!(stuck(&empty), "nothing is stuck");
    }
}
