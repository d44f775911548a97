//! Who may write, decided where writes are applied: API tokens with a role
//! and optional owners, the cluster's auth mode, task owners, and the audit
//! trail (format 3, release 0.3.0).
//!
//! The node checks a bearer token against [`StateMachine::token`] before it
//! proposes anything (a fast refusal, and the only check reads get), but the
//! check that counts is here: a client write reaches the log as
//! [`Command::AsCaller`], and applying it looks the token up again in the
//! state *at that log position*. A token revoked at index `i` therefore
//! writes nothing at any index after `i`, whichever node accepted the
//! request and however long it sat in a queue.
//!
//! Only hashes are replicated: the node hashes the token's secret, the state
//! machine compares nothing secret and needs no cryptography.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalog::PlanRun;
use super::cold::ColdSink;
use super::command::{Command, Rejection, Response};
use super::state::StateMachine;
use super::types::{EventKind, TaskId};

/// How long audit records are kept unless an admin says otherwise.
pub const DEFAULT_AUDIT_RETENTION_MS: u64 = 90 * 24 * 3600 * 1000;
/// Audit records are dropped an hour at a time: the state keeps the first
/// record of each hour, not the time of every record.
const AUDIT_BUCKET_MS: u64 = 3600 * 1000;
/// At most this many tokens (each is in memory on every node).
pub const MAX_TOKENS: usize = 10_000;
/// At most this many owners on one token.
pub const MAX_OWNERS: usize = 64;

/// What a token may do; each role includes the ones before it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every read: tasks, queues, plans, cluster status, metrics.
    Read,
    /// Enqueue, cancel and retry tasks; apply and run plans.
    Submit,
    /// Queues (pause, settings, redrive), nodes (drain, join, remove), the
    /// cluster's format, the audit log.
    Operate,
    /// Tokens and the auth mode.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Read, Role::Submit, Role::Operate, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token to store. The node makes the id and the secret, and sends only
/// the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub id: u64,
    pub name: String,
    pub role: Role,
    /// Canonical group references (see [`canonical_owner`]); empty: any owner.
    pub owners: Vec<String>,
    /// SHA-256 of the secret.
    pub hash: Vec<u8>,
    /// `None`: never expires.
    pub expires_ms: Option<u64>,
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: u64,
    pub name: String,
    pub role: Role,
    pub owners: Vec<String>,
    #[serde(skip)]
    pub hash: Vec<u8>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    /// Reported by the nodes every few seconds (`TouchTokens`), not per call.
    pub last_used_ms: Option<u64>,
    /// Who made it: a token's name, or `bootstrap`.
    pub created_by: String,
}

impl TokenRecord {
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }

    /// Whether this token may act for `owner` (always, for a token without owners).
    pub fn may_own(&self, owner: Option<&str>) -> bool {
        if self.owners.is_empty() {
            return true;
        }
        owner.is_some_and(|o| {
            let o = canonical_owner(o);
            self.owners.iter().any(|mine| *mine == o)
        })
    }
}

/// Who sent a client write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// No token: applied only while the cluster is in `warn` mode.
    Anonymous,
    /// The token with this id.
    Token(u64),
}

/// One audited request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// The token's name, or `anonymous`.
    pub principal: String,
    /// The command's name (`enqueue`, `cancel`, `create token`, ...).
    pub action: String,
    /// What it named: a queue, a task, a plan, a token, a node.
    pub target: String,
    /// `ok`, or `refused: <why>`.
    pub outcome: String,
}

/// The auth part of the replicated core.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuthState {
    pub tokens: BTreeMap<u64, TokenRecord>,
    /// `false` (`warn`): calls without a token are served and counted.
    /// New clusters start enforcing; upgraded ones start in `warn`.
    pub enforce: bool,
    pub audit_retention_ms: u64,
    /// The owner a task was enqueued for (plan runs: the plan's owner).
    pub task_owners: BTreeMap<TaskId, Arc<str>>,
    /// The next audit record's sequence number.
    pub next_audit: u64,
    /// The first audit record of each hour that still has records, by hour
    /// (`at_ms / AUDIT_BUCKET_MS`).
    pub audit_hours: BTreeMap<u64, u64>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            tokens: BTreeMap::new(),
            enforce: false,
            audit_retention_ms: DEFAULT_AUDIT_RETENTION_MS,
            task_owners: BTreeMap::new(),
            next_audit: 0,
            audit_hours: BTreeMap::new(),
        }
    }
}

/// `team-infra`, `default/team-infra` and `group:default/team-infra` are one
/// owner; compared lower case. Unlike the catalog's lenient matching of plan
/// owners, two namespaces never match here.
pub fn canonical_owner(owner: &str) -> String {
    let owner = owner.trim().to_ascii_lowercase();
    let (kind, rest) = owner.split_once(':').unwrap_or(("group", &owner));
    let (ns, name) = rest.split_once('/').unwrap_or(("default", rest));
    format!("{kind}:{ns}/{name}")
}

/// The role a client write needs, or `None` for a command no client may
/// send (the nodes' own: lease, heartbeat, garbage collection, ...).
pub fn required_role(command: &Command) -> Option<Role> {
    Some(match command {
        Command::Enqueue { .. }
        | Command::EnqueueOwned { .. }
        | Command::Cancel { .. }
        | Command::Retry { .. }
        | Command::ApplyPlans { .. }
        | Command::RunPlans { .. } => Role::Submit,
        Command::SetQueuePaused { .. }
        | Command::ConfigureQueue { .. }
        | Command::DrainNode { .. }
        | Command::RedriveQueue { .. }
        | Command::SetFormat { .. }
        | Command::Record { .. } => Role::Operate,
        Command::CreateToken { .. }
        | Command::RevokeToken { .. }
        | Command::RotateToken { .. }
        | Command::ConfigureAuth { .. }
        | Command::AllowExec { .. }
        | Command::DenyExec { .. }
        | Command::AllowRoot { .. }
        | Command::DenyRoot { .. }
        | Command::ConfigurePolicy { .. } => Role::Admin,
        Command::Batch(commands) => {
            let mut most = Role::Read;
            for c in commands {
                most = most.max(required_role(c)?);
            }
            most
        }
        Command::Lease { .. }
        | Command::Heartbeat { .. }
        | Command::Complete { .. }
        | Command::ExpireLeases
        | Command::ReleaseNode { .. }
        | Command::CollectGarbage
        | Command::RemoveNode { .. }
        | Command::AdmitNode { .. }
        | Command::AsCaller { .. }
        | Command::TouchTokens { .. }
        | Command::EnqueueChildren { .. } => return None,
    })
}

/// A client command outside `AsCaller` (not a batch, whose items are judged
/// one by one; not `SetFormat`, which the nodes propose themselves once
/// every member runs a release that writes the new format).
pub(crate) fn is_bare_client_write(command: &Command) -> bool {
    !matches!(command, Command::Batch(_) | Command::SetFormat { .. }) && required_role(command).is_some()
}

/// What a command names, for the audit log.
fn target_of(command: &Command) -> String {
    match command {
        Command::Enqueue { tasks } | Command::EnqueueOwned { tasks, .. } => {
            let mut queues: Vec<&str> = tasks.iter().map(|t| t.queue.as_str()).collect();
            queues.dedup();
            format!("{} task(s) in {}", tasks.len(), queues.join(","))
        }
        Command::Cancel { task, .. } | Command::Retry { task } => format!("task {task}"),
        Command::SetQueuePaused { queue, paused } => format!("queue {queue} paused={paused}"),
        Command::ConfigureQueue { queue, .. } | Command::RedriveQueue { queue, .. } => format!("queue {queue}"),
        Command::DrainNode { node, draining } => format!("node {node} draining={draining}"),
        Command::ApplyPlans { entities } => {
            entities.iter().map(|e| e.entity_ref.as_str()).collect::<Vec<_>>().join(",")
        }
        Command::RunPlans { refs, .. } => refs.join(","),
        Command::SetFormat { format } => format!("format {format}"),
        Command::CreateToken { token } => format!("token {} ({}, role {})", token.name, hex_id(token.id), token.role),
        Command::RevokeToken { id } => format!("token {}", hex_id(*id)),
        Command::RotateToken { old, new } => format!("token {} -> {}", hex_id(*old), hex_id(new.id)),
        Command::ConfigureAuth { enforce, audit_retention_ms } => {
            let mut parts = Vec::new();
            if let Some(e) = enforce {
                parts.push(format!("mode {}", if *e { "enforce" } else { "warn" }));
            }
            if let Some(r) = audit_retention_ms {
                parts.push(format!("audit retention {r} ms"));
            }
            parts.join(", ")
        }
        Command::Record { target, .. } => target.clone(),
        Command::AllowExec { program, args } | Command::DenyExec { program, args: Some(args) } => {
            std::iter::once(program.as_str()).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
        }
        Command::DenyExec { program, args: None } => program.clone(),
        Command::AllowRoot { root } => format!(
            "{} (endpoint {}, credentials {})",
            root.url,
            root.endpoint.as_deref().unwrap_or("none"),
            root.credentials
        ),
        Command::DenyRoot { url } => url.clone(),
        Command::ConfigurePolicy { enforce } => format!("policy {}", if *enforce { "enforce" } else { "open" }),
        Command::Batch(commands) => commands.iter().map(target_of).collect::<Vec<_>>().join("; "),
        _ => String::new(),
    }
}

/// A token id as the API and the CLI show it.
pub fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

fn action_of(command: &Command) -> String {
    match command {
        Command::Record { action, .. } => action.clone(),
        Command::EnqueueOwned { .. } => "enqueue".to_string(),
        other => other.name().to_string(),
    }
}

impl StateMachine {
    /// A stored token by id.
    pub fn token(&self, id: u64) -> Option<&TokenRecord> {
        self.core.auth.tokens.get(&id)
    }

    /// Every token, by id.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.core.auth.tokens.values()
    }

    /// Whether calls without a token are refused. Always `false` below
    /// format 3 (no tokens can exist there yet).
    pub fn auth_enforced(&self) -> bool {
        self.core.auth.enforce
    }

    pub fn audit_retention_ms(&self) -> u64 {
        self.core.auth.audit_retention_ms
    }

    /// The owner a task was enqueued for (a plan run's: the plan's owner).
    pub fn task_owner(&self, id: TaskId) -> Option<&str> {
        self.core.auth.task_owners.get(&id).map(|o| &**o)
    }

    /// The first audit sequence number that may hold a record at or after
    /// `since_ms`, and the next one to be written.
    pub fn audit_range(&self, since_ms: u64) -> (u64, u64) {
        let hour = since_ms / AUDIT_BUCKET_MS;
        let from = self
            .core
            .auth
            .audit_hours
            .range(..=hour)
            .next_back()
            .or_else(|| self.core.auth.audit_hours.range(hour..).next())
            .map_or(self.core.auth.next_audit, |(_, seq)| *seq);
        (from, self.core.auth.next_audit)
    }

    /// `AsCaller`: checks the caller against the state at this log
    /// position, applies the command, and audits the request.
    pub(super) fn apply_as_caller(&mut self, caller: Caller, command: &Command, cold: &mut dyn ColdSink) -> Response {
        let (principal, response) = match self.authorize(caller, command) {
            Ok(principal) => {
                self.in_caller = true;
                let response = self.apply_authorized(command, &principal, cold);
                self.in_caller = false;
                (principal, response)
            }
            Err((name, rejection)) => (Principal { name }, Response::Rejected(rejection)),
        };
        let outcome = match &response {
            Response::Rejected(r) => format!("refused: {r}"),
            Response::Batch(rs) => match rs.iter().find_map(|r| match r {
                Response::Rejected(r) => Some(r),
                _ => None,
            }) {
                Some(r) => format!("refused in part: {r}"),
                None => "ok".to_string(),
            },
            _ => "ok".to_string(),
        };
        self.audit(AuditRecord::new(self.core.clock_ms, principal.name, command, outcome), cold);
        response
    }

    fn authorize(&self, caller: Caller, command: &Command) -> Result<Principal, (String, Rejection)> {
        let Some(needed) = required_role(command) else {
            let name = match caller {
                Caller::Anonymous => "anonymous".to_string(),
                Caller::Token(id) => self.token(id).map_or_else(|| hex_id(id), |t| t.name.clone()),
            };
            return Err((name, Rejection::Forbidden(format!("{} is not a client command", command.name()))));
        };
        let token = match caller {
            Caller::Anonymous if self.core.auth.enforce => {
                return Err(("anonymous".into(), Rejection::Unauthenticated("a token is required".into())));
            }
            Caller::Anonymous => return Ok(Principal { name: "anonymous".into() }),
            Caller::Token(id) => match self.token(id) {
                None => {
                    return Err((
                        hex_id(id),
                        Rejection::Unauthenticated("the token was revoked or never existed".into()),
                    ))
                }
                Some(t) if t.expired_at(self.core.clock_ms) => {
                    return Err((t.name.clone(), Rejection::Unauthenticated(format!("token {} has expired", t.name))))
                }
                Some(t) => t,
            },
        };
        if token.role < needed {
            return Err((
                token.name.clone(),
                Rejection::Forbidden(format!(
                    "{} needs role {needed}; token {} has role {}",
                    command.name(),
                    token.name,
                    token.role
                )),
            ));
        }
        if let Err(why) = self.check_owners(token, command) {
            return Err((token.name.clone(), Rejection::Forbidden(why)));
        }
        Ok(Principal { name: token.name.clone() })
    }

    /// An owner-scoped token may touch only tasks and plans of its owners.
    fn check_owners(&self, token: &TokenRecord, command: &Command) -> Result<(), String> {
        if token.owners.is_empty() {
            return Ok(());
        }
        let scope = || format!("token {} acts only for {}", token.name, token.owners.join(", "));
        match command {
            Command::Enqueue { .. } => Err(format!("{}: enqueue with one of them as the owner", scope())),
            Command::EnqueueOwned { owner, .. } if !token.may_own(owner.as_deref()) => {
                Err(format!("{}, not {}", scope(), owner.as_deref().unwrap_or("no owner")))
            }
            Command::Cancel { task, .. } | Command::Retry { task } => {
                let owner = self.task_owner(*task);
                if token.may_own(owner) {
                    Ok(())
                } else {
                    Err(format!("{}; task {task} belongs to {}", scope(), owner.unwrap_or("no owner")))
                }
            }
            Command::RunPlans { refs, .. } => {
                for r in refs {
                    let owner = self.catalog_entry(r).and_then(|e| e.entity.owner.clone());
                    if !token.may_own(owner.as_deref()) {
                        return Err(format!(
                            "{}; plan {r} belongs to {}",
                            scope(),
                            owner.as_deref().unwrap_or("no owner")
                        ));
                    }
                }
                Ok(())
            }
            Command::ApplyPlans { entities } => {
                // Both the entity as sent and the one it replaces must be theirs.
                for e in entities {
                    let old = self.catalog_entry(&e.entity_ref).map(|c| c.entity.owner.clone());
                    for owner in std::iter::once(e.owner.clone()).chain(old) {
                        if !token.may_own(owner.as_deref()) {
                            let owner = owner.as_deref().unwrap_or("no owner");
                            return Err(format!("{}; {} belongs to {owner}", scope(), e.entity_ref));
                        }
                    }
                }
                Ok(())
            }
            // Every owner's dead tasks: not for a token that acts for some.
            Command::RedriveQueue { queue, .. } => Err(format!(
                "{}; a redrive of {queue} retries every owner's tasks: use a token without owners",
                scope()
            )),
            Command::Batch(commands) => commands.iter().try_for_each(|c| self.check_owners(token, c)),
            _ => Ok(()),
        }
    }

    fn apply_authorized(&mut self, command: &Command, principal: &Principal, cold: &mut dyn ColdSink) -> Response {
        let response = match command {
            Command::CreateToken { token } => self.create_token(token, &principal.name),
            Command::RotateToken { old, new } => self.rotate_token(*old, new, &principal.name),
            Command::AllowExec { program, args } => self.allow_exec(program, args, &principal.name),
            Command::AllowRoot { root } => self.allow_root(root, &principal.name),
            // Each item as if sent alone by the same caller (its events, owners, creator).
            Command::Batch(commands) => {
                return Response::Batch(commands.iter().map(|c| self.apply_authorized(c, principal, cold)).collect())
            }
            _ => self.apply_command(command, cold),
        };
        // Say who asked in each task's history.
        let by = |sm: &mut StateMachine, id: TaskId, cold: &mut dyn ColdSink| {
            sm.record_request(id, &principal.name, &action_of(command), cold)
        };
        match (command, &response) {
            (Command::Enqueue { .. } | Command::EnqueueOwned { .. }, Response::Enqueued(made)) => {
                for e in made.iter().filter(|e| e.created) {
                    by(self, e.id, cold);
                }
            }
            (Command::Cancel { task, .. } | Command::Retry { task }, Response::Task { .. }) => by(self, *task, cold),
            (Command::RunPlans { .. }, Response::PlansRun(runs)) => {
                for run in runs.iter().filter(|r| r.created) {
                    self.own_plan_task(run);
                    by(self, run.task, cold);
                }
            }
            _ => {}
        }
        response
    }

    /// A plan run's task belongs to the plan's owner.
    fn own_plan_task(&mut self, run: &PlanRun) {
        if let Some(owner) = self.catalog_entry(&run.entity_ref).and_then(|e| e.entity.owner.clone()) {
            self.core.auth.task_owners.insert(run.task, canonical_owner(&owner).into());
        }
    }

    /// `EnqueueOwned`: an enqueue whose new tasks belong to `owner`.
    pub(super) fn enqueue_owned(
        &mut self,
        tasks: &[super::command::NewTask],
        owner: Option<&str>,
        cold: &mut dyn ColdSink,
    ) -> Response {
        let response = self.enqueue(tasks, cold);
        if let (Response::Enqueued(made), Some(owner)) = (&response, owner) {
            let owner: Arc<str> = canonical_owner(owner).into();
            for e in made.iter().filter(|e| e.created) {
                self.core.auth.task_owners.insert(e.id, owner.clone());
            }
        }
        response
    }

    pub(super) fn create_token(&mut self, token: &super::auth::NewToken, created_by: &str) -> Response {
        if let Err(r) = self.check_new_token(token) {
            return Response::Rejected(r);
        }
        let record = TokenRecord {
            id: token.id,
            name: token.name.clone(),
            role: token.role,
            owners: token.owners.iter().map(|o| canonical_owner(o)).collect(),
            hash: token.hash.clone(),
            created_ms: self.core.clock_ms,
            expires_ms: token.expires_ms,
            last_used_ms: None,
            created_by: created_by.to_string(),
        };
        self.core.auth.tokens.insert(token.id, record);
        Response::Done
    }

    fn check_new_token(&self, token: &NewToken) -> Result<(), Rejection> {
        let invalid = |reason: String| Rejection::InvalidToken(reason);
        if self.core.auth.tokens.contains_key(&token.id) {
            return Err(invalid(format!("token id {} is taken", hex_id(token.id))));
        }
        if self.core.auth.tokens.len() >= MAX_TOKENS {
            return Err(invalid(format!("the cluster holds {MAX_TOKENS} tokens, the limit")));
        }
        let max_name = self.core.limits.max_name_bytes as usize;
        if token.name.is_empty() || token.name.len() > max_name {
            return Err(invalid(format!("a token's name must be 1 to {max_name} bytes")));
        }
        if token.hash.len() != 32 {
            return Err(invalid("the hash must be 32 bytes (SHA-256)".into()));
        }
        if token.owners.len() > MAX_OWNERS || token.owners.iter().any(|o| o.is_empty() || o.len() > max_name) {
            return Err(invalid(format!("at most {MAX_OWNERS} owners of 1 to {max_name} bytes")));
        }
        Ok(())
    }

    pub(super) fn revoke_token(&mut self, id: u64) -> Response {
        match self.core.auth.tokens.remove(&id) {
            Some(_) => Response::Done,
            None => Response::Rejected(Rejection::InvalidToken(format!("no token {}", hex_id(id)))),
        }
    }

    /// Replaces a token by a new secret with the same name, role, owners
    /// and lifetime, in one step: the old one writes nothing after this.
    pub(super) fn rotate_token(&mut self, old: u64, new: &NewToken, created_by: &str) -> Response {
        // Checked without the old token, which the new one replaces (at the
        // token limit too), but never under the old one's id.
        let Some(previous) = self.core.auth.tokens.remove(&old) else {
            return Response::Rejected(Rejection::InvalidToken(format!("no token {}", hex_id(old))));
        };
        let lifetime = previous.expires_ms.map(|e| e.saturating_sub(previous.created_ms));
        let replacement = NewToken {
            id: new.id,
            name: previous.name.clone(),
            role: previous.role,
            owners: previous.owners.clone(),
            hash: new.hash.clone(),
            expires_ms: lifetime.map(|l| self.core.clock_ms.saturating_add(l)),
        };
        let checked = if new.id == old {
            Err(Rejection::InvalidToken(format!("token id {} is taken", hex_id(old))))
        } else {
            self.check_new_token(&replacement)
        };
        if let Err(r) = checked {
            self.core.auth.tokens.insert(old, previous);
            return Response::Rejected(r);
        }
        self.create_token(&replacement, created_by)
    }

    pub(super) fn touch_tokens(&mut self, used: &[(u64, u64)]) -> Response {
        for (id, at) in used {
            if let Some(t) = self.core.auth.tokens.get_mut(id) {
                t.last_used_ms = Some(t.last_used_ms.unwrap_or(0).max(*at));
            }
        }
        Response::Done
    }

    pub(super) fn configure_auth(&mut self, enforce: Option<bool>, retention_ms: Option<u64>) -> Response {
        if retention_ms == Some(0) {
            return Response::Rejected(Rejection::InvalidConfig("the audit retention must be above zero".into()));
        }
        if let Some(e) = enforce {
            self.core.auth.enforce = e;
        }
        if let Some(r) = retention_ms {
            self.core.auth.audit_retention_ms = r;
        }
        Response::Done
    }

    /// Writes one audit record to the cold store.
    fn audit(&mut self, record: AuditRecord, cold: &mut dyn ColdSink) {
        let seq = self.core.auth.next_audit;
        self.core.auth.next_audit += 1;
        self.core.auth.audit_hours.entry(record.at_ms / AUDIT_BUCKET_MS).or_insert(seq);
        cold.put_audit(seq, &record);
    }

    /// Drops the audit records of every hour older than the retention.
    pub(super) fn collect_audit(&mut self, cold: &mut dyn ColdSink) {
        let now = self.core.clock_ms;
        let retention = self.core.auth.audit_retention_ms;
        loop {
            let mut hours = self.core.auth.audit_hours.iter();
            let Some((&hour, &from)) = hours.next() else { return };
            if (hour + 1).saturating_mul(AUDIT_BUCKET_MS).saturating_add(retention) > now {
                return;
            }
            let to = hours.next().map_or(self.core.auth.next_audit, |(_, s)| *s);
            cold.delete_audit(from, to);
            self.core.auth.audit_hours.remove(&hour);
        }
    }

    /// A task was forgotten: so is its owner.
    pub(super) fn forget_owner(&mut self, id: TaskId) {
        self.core.auth.task_owners.remove(&id);
    }

    fn record_request(&mut self, id: TaskId, principal: &str, action: &str, cold: &mut dyn ColdSink) {
        self.record(
            id,
            None,
            None,
            EventKind::Requested { by: principal.to_string(), action: action.to_string() },
            cold,
        );
    }
}

/// The caller a write was authorized for.
struct Principal {
    name: String,
}

impl AuditRecord {
    fn new(at_ms: u64, principal: String, command: &Command, outcome: String) -> Self {
        AuditRecord { at_ms, principal, action: action_of(command), target: target_of(command), outcome }
    }
}
