//! `skein plan apply|list|show|import|run`: the plan catalog.
//!
//! Plans are read and checked here with `skein-plan` (so errors name the
//! file) against the catalog the node has, then sent as JSON documents; the
//! node checks them again and stores them through Raft.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use skein_plan::{Catalog, Entity, EntityRef, PlanErrors};
use skein_raft::api::{ApplyPlansReply, ErrorCode, PlanDetail, PlanList, PlanSummary, RunPlansReply};
use skein_raft::fsm::TaskStatus;

use super::{typed, Ctx};
use crate::args::Output;
use crate::client::{Client, ClientError};
use crate::plan_args::{ApplyArgs, ImportArgs, PlanCommand, PlanListArgs, RunArgs};
use crate::render::{finish, fmt_opt_time, short, table};

pub async fn run(ctx: &mut Ctx<'_>, cmd: PlanCommand) -> anyhow::Result<()> {
    match cmd {
        PlanCommand::Apply(a) => apply(ctx, a).await,
        PlanCommand::List(a) => list(ctx, a).await,
        PlanCommand::Show { entity_ref } => show(ctx, &entity_ref).await,
        PlanCommand::Import(a) => import(ctx, a).await,
        PlanCommand::Run(a) => run_plans(ctx, a).await,
    }
}

// ----- apply ---------------------------------------------------------------

async fn apply(ctx: &mut Ctx<'_>, a: ApplyArgs) -> anyhow::Result<()> {
    let entities = read_entities(&a.paths)?;
    apply_entities(ctx, entities, a.dry_run).await
}

/// Reads every entity of `paths` (files, folders, `-`), reporting every
/// problem of every file at once.
pub fn read_entities(paths: &[PathBuf]) -> anyhow::Result<Vec<Entity>> {
    let mut entities = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading plans from standard input")?;
            match skein_plan::parse_text(&text, "-") {
                Ok(mut v) => {
                    let cwd = std::env::current_dir().unwrap_or_default();
                    v.iter_mut().for_each(|e| e.absolutize_paths(&cwd));
                    entities.extend(v);
                }
                Err(e) => errors.extend(e.0),
            }
            continue;
        }
        if !path.exists() {
            bail!("{}: no such file or folder", path.display());
        }
        let files = skein_plan::plan_files(path).with_context(|| format!("listing {}", path.display()))?;
        if files.is_empty() {
            bail!("{}: no .yaml, .yml or .json files in it", path.display());
        }
        for f in files {
            match skein_plan::read_file(&f) {
                Ok(v) => entities.extend(v),
                Err(e) => errors.extend(e.0),
            }
        }
    }
    if !errors.is_empty() {
        return Err(problems(PlanErrors(errors)));
    }
    if entities.is_empty() {
        bail!("no entities found in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(entities)
}

fn problems(e: PlanErrors) -> anyhow::Error {
    let n = e.0.len();
    anyhow!("{n} problem{} found; nothing was stored:\n{e}", if n == 1 { "" } else { "s" })
}

/// Checks `entities` against the cluster's catalog and stores them.
pub async fn apply_entities(ctx: &mut Ctx<'_>, entities: Vec<Entity>, dry_run: bool) -> anyhow::Result<()> {
    let catalog = catalog_graph(&ctx.client).await?;
    skein_plan::validate_set(&entities, &catalog).map_err(problems)?;
    let plans = entities.iter().filter(|e| e.is_plan()).count();
    if dry_run {
        return ctx.line(&format!(
            "{} entities are valid ({plans} plans, {} other); nothing stored (--dry-run)",
            entities.len(),
            entities.len() - plans
        ));
    }
    let body = json!({"entities": entities.iter().map(|e| e.document().clone()).collect::<Vec<_>>()});
    let reply = ctx.client.post("/api/v1/plans", Some(body)).await?;
    ctx.show(reply, "plan apply", |r: &ApplyPlansReply| {
        let mut t = table(&["ENTITY", "CHANGE", "REVISION"]);
        let (mut created, mut changed) = (0, 0);
        for e in &r.entities {
            let what = if e.created {
                created += 1;
                "created"
            } else if e.changed {
                changed += 1;
                "updated"
            } else {
                "unchanged"
            };
            t.add_row(vec![e.entity_ref.clone(), what.to_string(), e.revision.to_string()]);
        }
        let n = r.entities.len();
        format!(
            "{}\n\n{n} entities: {created} created, {changed} updated, {} unchanged",
            finish(t, &[2]),
            n - created - changed
        )
    })
}

/// The catalog's dependency graph, as the node answers it.
async fn catalog_graph(client: &Client) -> anyhow::Result<Catalog> {
    let list: PlanList = typed(client.get("/api/v1/plans", &[]).await?, "plan list")?;
    Ok(list
        .plans
        .iter()
        .filter_map(|p| {
            let r: EntityRef = p.entity_ref.parse().ok()?;
            Some((r, p.depends_on.iter().filter_map(|d| d.parse().ok()).collect()))
        })
        .collect::<BTreeMap<_, _>>())
}

// ----- list and show -------------------------------------------------------

async fn list(ctx: &mut Ctx<'_>, a: PlanListArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(o) = a.owner {
        query.push(("owner", o));
    }
    if !a.label.is_empty() {
        query.push(("label", a.label.join(",")));
    }
    if a.plans_only {
        query.push(("plans_only", "true".into()));
    }
    let reply = ctx.client.get("/api/v1/plans", &query).await?;
    ctx.show(reply, "plan list", |l: &PlanList| plan_table(&l.plans))
}

/// `skein plan list`: one row per entity.
pub fn plan_table(plans: &[PlanSummary]) -> String {
    if plans.is_empty() {
        return "the catalog is empty (store plans with `skein plan apply`)".into();
    }
    let mut t = table(&["ENTITY", "TYPE", "OWNER", "QUEUE", "DEPENDS ON", "RUN", "STATUS", "COMPLETED"]);
    for p in plans {
        let (run, status, done) = match (&p.task, p.is_plan) {
            (Some(task), _) => (
                format!("#{} (task {})", p.generation, task.id),
                task.status.to_string(),
                fmt_opt_time(task.finished_ms),
            ),
            (None, true) if p.generation > 0 => (format!("#{}", p.generation), "forgotten".into(), "-".into()),
            (None, true) => ("-".into(), "never run".into(), "-".into()),
            (None, false) => ("-".into(), "-".into(), "-".into()),
        };
        t.add_row(vec![
            p.entity_ref.clone(),
            if p.is_plan { "plan" } else { "entity" }.to_string(),
            p.owner.clone().unwrap_or_else(|| "-".into()),
            p.queue.clone().unwrap_or_else(|| "-".into()),
            if p.depends_on.is_empty() { "-".into() } else { short(&p.depends_on.join(", "), 60) },
            run,
            status,
            done,
        ]);
    }
    let plans_n = plans.iter().filter(|p| p.is_plan).count();
    format!("{}\n\n{} entities: {plans_n} plans, {} other", finish(t, &[]), plans.len(), plans.len() - plans_n)
}

async fn show(ctx: &mut Ctx<'_>, raw: &str) -> anyhow::Result<()> {
    let r = EntityRef::parse(raw, Some("component"))?;
    let path = format!("/api/v1/plans/{}/{}/{}", r.kind, r.namespace, r.name);
    let reply = ctx.client.get(&path, &[]).await?;
    ctx.show(reply, "plan show", |d: &PlanDetail| {
        let s = &d.summary;
        let mut out = vec![
            format!("entity:      {}", s.entity_ref),
            format!("type:        {}", if s.is_plan { "migration plan" } else { "entity (not a plan)" }),
            format!("owner:       {}", s.owner.as_deref().unwrap_or("-")),
            format!("queue:       {}", s.queue.as_deref().unwrap_or("- (the run's default)")),
            format!(
                "labels:      {}",
                if s.labels.is_empty() {
                    "-".into()
                } else {
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
                }
            ),
            format!("depends on:  {}", if s.depends_on.is_empty() { "-".into() } else { s.depends_on.join(", ") }),
            format!("revision:    {}", s.revision),
        ];
        match &s.task {
            Some(t) => {
                out.push(format!(
                    "run:         #{} = task {} ({}), attempt {}/{}",
                    s.generation, t.id, t.status, t.attempt, t.max_attempts
                ));
                out.push(format!("started:     {}", fmt_opt_time(t.first_started_ms)));
                out.push(format!("completed:   {}", fmt_opt_time(t.finished_ms)));
                if let Some(p) = &t.progress {
                    out.push(format!("progress:    {:.0}% {}", p.fraction * 100.0, p.message));
                }
                if let Some(e) = &t.last_error {
                    out.push(format!("last error:  {e}"));
                }
            }
            None => out.push(format!(
                "run:         {}",
                if s.generation == 0 { "never run" } else { "forgotten (retention)" }
            )),
        }
        if let Some(p) = &s.partitions {
            out.push(format!(
                "partitions:  {} ({}): {} succeeded, {} running, {} pending, {} failed, {} cancelled",
                p.total, p.status, p.succeeded, p.running, p.pending, p.failed, p.cancelled
            ));
            if let Some(rows) = p.rows {
                out.push(format!("rows:        {rows} written by the partitions done"));
            }
            if let Some(eta) = p.eta_ms {
                out.push(format!("time left:   about {}s", eta.div_ceil(1000)));
            }
            out.push(format!("commit:      task {} ({})", p.commit_task, p.commit_status));
            if !p.failed_partitions.is_empty() {
                let list: Vec<String> = p.failed_partitions.iter().map(u32::to_string).collect();
                out.push(format!(
                    "failed:      partitions {} (run one again: skein plan run {} --partition {})",
                    list.join(", "),
                    s.entity_ref,
                    p.failed_partitions[0]
                ));
            }
        }
        let doc = serde_json::to_string_pretty(&d.entity).unwrap_or_default();
        out.push(String::new());
        out.push(doc);
        out.join("\n")
    })
}

// ----- import --------------------------------------------------------------

async fn import(ctx: &mut Ctx<'_>, a: ImportArgs) -> anyhow::Result<()> {
    let bs = Backstage::new(&a.backstage, a.token.clone())?;
    let mut docs = bs.query(&a.filter, a.page_size.max(1)).await?;
    if docs.is_empty() {
        bail!("Backstage at {} has no entity matching {}", a.backstage, a.filter.join(" OR "));
    }
    let origin = format!("{}/api/catalog/entities/by-query", bs.base);
    let mut entities =
        skein_plan::entities_from_value(Value::Array(std::mem::take(&mut docs)), &origin).map_err(problems)?;
    // Fetch what they depend on that neither the answer nor skein's catalog has.
    let known = catalog_graph(&ctx.client).await?;
    let mut have: BTreeSet<EntityRef> = entities.iter().map(Entity::entity_ref).collect();
    let mut queue: Vec<EntityRef> = entities.iter().flat_map(|e| e.depends_on().unwrap_or_default()).collect();
    while let Some(dep) = queue.pop() {
        if have.contains(&dep) || known.contains_key(&dep) {
            continue;
        }
        let doc = bs.by_name(&dep).await?;
        let e = Entity::from_value(
            doc,
            &format!("{}/api/catalog/entities/by-name/{}/{}/{}", bs.base, dep.kind, dep.namespace, dep.name),
        )
        .map_err(|e| problems(e.into()))?;
        queue.extend(e.depends_on().unwrap_or_default());
        have.insert(dep);
        entities.push(e);
    }
    apply_entities(ctx, entities, a.dry_run).await
}

/// A client of Backstage's catalog REST API.
struct Backstage {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Backstage {
    fn new(base: &str, token: Option<String>) -> anyhow::Result<Backstage> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--backstage must be an http:// or https:// URL, not {base:?}");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Backstage { base, token, http })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Option<Value>> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .with_context(|| format!("{}{path} is not a valid URL", self.base))?;
        let mut req = self.http.get(url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("asking Backstage: GET {url}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = resp.text().await.with_context(|| format!("reading Backstage's answer to GET {url}"))?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            bail!("Backstage refused GET {url} ({status}): give a valid token with --token or BACKSTAGE_TOKEN");
        }
        if !status.is_success() {
            bail!("Backstage answered GET {url} with {status}: {}", short(&text, 300));
        }
        let v = serde_json::from_str(&text).with_context(|| format!("Backstage's answer to GET {url} is not JSON"))?;
        Ok(Some(v))
    }

    /// Every entity matching any of `filters`, following `pageInfo.nextCursor`.
    async fn query(&self, filters: &[String], page: u32) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100_000 {
            let mut q: Vec<(&str, String)> = vec![("limit", page.to_string())];
            match &cursor {
                // The cursor carries the filters of the first request.
                Some(c) => q.push(("cursor", c.clone())),
                None => q.extend(filters.iter().map(|f| ("filter", f.clone()))),
            }
            let Some(v) = self.get("/api/catalog/entities/by-query", &q).await? else {
                bail!("{}/api/catalog/entities/by-query was not found: is this a Backstage backend URL?", self.base);
            };
            let items = v.get("items").and_then(Value::as_array).ok_or_else(|| {
                anyhow!("Backstage's by-query answer has no `items` list (is {} a Backstage backend?)", self.base)
            })?;
            out.extend(items.iter().cloned());
            match v.pointer("/pageInfo/nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && !items.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(out),
            }
        }
        bail!("Backstage kept answering with more pages; stopped after 100000")
    }

    async fn by_name(&self, r: &EntityRef) -> anyhow::Result<Value> {
        let path = format!("/api/catalog/entities/by-name/{}/{}/{}", r.kind, r.namespace, r.name);
        self.get(&path, &[])
            .await?
            .ok_or_else(|| anyhow!("a plan depends on {r}, which Backstage does not have ({}{path}: 404)", self.base))
    }
}

// ----- run -----------------------------------------------------------------

async fn run_plans(ctx: &mut Ctx<'_>, a: RunArgs) -> anyhow::Result<()> {
    let mut body = json!({"force": a.force, "queue": a.queue, "priority": a.priority});
    if let Some(p) = a.partition {
        if a.refs.len() != 1 {
            bail!("--partition runs a partition of one plan: give exactly one REF");
        }
        body["partition"] = json!(p);
    }
    if a.all {
        body["all"] = json!(true);
    } else if let Some(sel) = &a.selector {
        body["selector"] = parse_selector(sel)?;
    } else {
        body["refs"] = json!(a.refs);
    }
    let reply = ctx.client.post("/api/v1/plans/run", Some(body)).await?;
    let runs: RunPlansReply = typed(reply.clone(), "plan run")?;
    if !a.wait {
        return ctx.show(reply, "plan run", runs_table);
    }
    if ctx.output == Output::Table {
        ctx.line(&runs_table(&runs))?;
        ctx.line("")?;
    }
    let ids: Vec<u64> = runs.runs.iter().map(|r| r.task.0).collect();
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let ended = wait_for_tasks(&ctx.client, &ids, Duration::from_secs(a.timeout)).await?;
    // A partitioned run's task only plans it: wait for its partitions and commit.
    let refs: Vec<(String, u64)> = runs.runs.iter().map(|r| (r.entity_ref.clone(), r.generation)).collect();
    let partitioned = wait_for_partitions(&ctx.client, &refs, deadline).await?;
    if !partitioned.is_empty() {
        if ctx.output == Output::Json {
            return ctx.json(&json!({"runs": runs.runs, "tasks": ended, "partitioned": partitioned}));
        }
        for (r, p) in &partitioned {
            ctx.line(&format!(
                "{r}: partitioned run {}: {}/{} partitions succeeded, {} failed{}",
                p["status"].as_str().unwrap_or("?"),
                p["succeeded"],
                p["total"],
                p["failed"],
                p["rows"].as_u64().map(|n| format!(", {n} rows")).unwrap_or_default()
            ))?;
        }
    }
    match ctx.output {
        Output::Json => ctx.json(&json!({"runs": runs.runs, "tasks": ended})),
        Output::Table => {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for t in &ended {
                *counts.entry(t["status"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            }
            let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            ctx.line(&format!("{} runs ended: {}", ended.len(), parts.join(", ")))?;
            for t in ended.iter().filter(|t| t["status"] != "succeeded") {
                ctx.line(&format!(
                    "  task {} {}: {}",
                    t["id"],
                    t["status"].as_str().unwrap_or("?"),
                    t["last_error"].as_str().unwrap_or("-")
                ))?;
            }
            Ok(())
        }
    }
}

/// Waits until every partitioned run among `refs` (plan, generation) ended (published,
/// failed or cancelled); answers each one's partitions as the plan's detail
/// shows them. Plans that are not partitioned are left out.
pub async fn wait_for_partitions(
    client: &crate::client::Client,
    refs: &[(String, u64)],
    deadline: Instant,
) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for (r, generation) in refs {
        let r2 = EntityRef::parse(r, Some("component"))?;
        let path = format!("/api/v1/plans/{}/{}/{}", r2.kind, r2.namespace, r2.name);
        loop {
            let detail = client.get(&path, &[]).await?;
            if detail["generation"].as_u64().is_some_and(|g| g < *generation) {
                // This node has not applied the run yet.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let Some(p) = detail.get("partitions").filter(|p| !p.is_null()).cloned() else { break };
            if matches!(p["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                out.push((r.clone(), p));
                break;
            }
            if Instant::now() >= deadline {
                bail!("{r}: the partitioned run has not ended yet ({}); see `skein plan status {r}`", p["status"]);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(out)
}

/// `owner=team-infra,tier=gold` → `{"owner": "team-infra", "labels": {"tier": "gold"}}`.
pub fn parse_selector(s: &str) -> anyhow::Result<Value> {
    let mut owner = None;
    let mut labels = serde_json::Map::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| anyhow!("selector part {part:?} must be key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        match k {
            "owner" | "spec.owner" => owner = Some(v.to_string()),
            _ => {
                let k = k
                    .strip_prefix("label.")
                    .or_else(|| k.strip_prefix("labels."))
                    .or_else(|| k.strip_prefix("metadata.labels."))
                    .unwrap_or(k);
                labels.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    if owner.is_none() && labels.is_empty() {
        bail!("the selector {s:?} selects nothing: give owner=... and/or label keys");
    }
    Ok(json!({"owner": owner, "labels": labels}))
}

fn runs_table(r: &RunPlansReply) -> String {
    let mut t = table(&["PLAN", "RUN", "TASK", "STATUS", "NOTE"]);
    for run in &r.runs {
        let note = match (run.created, run.requested) {
            (true, true) => "enqueued",
            (true, false) => "enqueued (a dependency)",
            (false, true) => "already pending, running or done (--force runs it again)",
            (false, false) => "dependency already pending, running or done",
        };
        t.add_row(vec![
            run.entity_ref.clone(),
            format!("#{}", run.generation),
            run.task.to_string(),
            run.status.to_string(),
            note.into(),
        ]);
    }
    let created = r.runs.iter().filter(|x| x.created).count();
    format!(
        "{}\n\n{} plans: {created} enqueued, {} already there",
        finish(t, &[2]),
        r.runs.len(),
        r.runs.len() - created
    )
}

/// Polls the task list until each of `ids` has ended; returns them as the
/// node lists them.
///
/// The node asked may be a follower that has not applied the write that
/// created them yet (it was committed through the leader a moment ago): an
/// id it does not list is asked for on its own (`GET /api/v1/tasks/{id}`),
/// which the node answers only after catching up with the leader. Only a
/// task that is unknown even then was forgotten after its retention (it
/// ended long ago); one the node cannot answer for yet (no leader) is
/// waited for, within `timeout`.
pub async fn wait_for_tasks(client: &Client, ids: &[u64], timeout: Duration) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    let wanted: BTreeSet<u64> = ids.iter().copied().collect();
    let first = wanted.first().copied().unwrap_or(0);
    let mut forgotten: BTreeSet<u64> = BTreeSet::new();
    loop {
        let mut found: BTreeMap<u64, Value> = BTreeMap::new();
        let mut cursor = first.checked_sub(1);
        loop {
            let mut q: Vec<(&str, String)> = vec![("limit", "5000".into())];
            if let Some(c) = cursor {
                q.push(("cursor", c.to_string()));
            }
            let page = client.get("/api/v1/tasks", &q).await?;
            for t in page["tasks"].as_array().into_iter().flatten() {
                if let Some(id) = t["id"].as_u64().filter(|id| wanted.contains(id)) {
                    found.insert(id, t.clone());
                }
            }
            match page["next_cursor"].as_u64() {
                Some(next) if found.len() < wanted.len() => cursor = Some(next),
                _ => break,
            }
        }
        // Not listed: not applied here yet, or forgotten. Ask for each.
        let mut unknown = 0;
        let missing: Vec<u64> =
            wanted.iter().copied().filter(|id| !found.contains_key(id) && !forgotten.contains(id)).collect();
        for id in missing {
            match client.get(&format!("/api/v1/tasks/{id}"), &[]).await {
                Ok(mut detail) => {
                    // As the list shows it: the task without its payload,
                    // result and history.
                    if let Some(d) = detail.as_object_mut() {
                        for field in ["payload", "result", "history"] {
                            d.remove(field);
                        }
                    }
                    found.insert(id, detail);
                }
                // Unknown after the node caught up: forgotten after its
                // retention, so it ended long ago.
                Err(ClientError::Api { code: ErrorCode::NotFound, .. }) => {
                    forgotten.insert(id);
                }
                // The node cannot catch up now (no leader): wait.
                Err(ClientError::Api { code: ErrorCode::Unavailable | ErrorCode::NotLeader, .. }) => unknown += 1,
                Err(e) => return Err(e.into()),
            }
        }
        let ended: Vec<Value> = found
            .values()
            .filter(|t| serde_json::from_value::<TaskStatus>(t["status"].clone()).is_ok_and(TaskStatus::is_terminal))
            .cloned()
            .collect();
        let left = found.len() - ended.len() + unknown;
        if left == 0 {
            return Ok(ended);
        }
        if Instant::now() >= deadline {
            bail!(
                "{left} of {} migrations still running after {} s (see `skein status`)",
                ids.len(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
