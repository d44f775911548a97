//! Compatibility fixtures: the bytes skein 0.1.0 (commit 65601e1, the first
//! release) writes into the Raft log, the `meta` column family and the
//! `history` column family, kept in `tests/fixtures/0.1.0/`. Stored bytes are
//! forever (DESIGN.md, rule 7): every later version must decode them to the
//! same values, and, until an operator finalizes an upgrade, still write
//! exactly these bytes so that 0.1.0 can read what it writes.
//!
//! Each fixture is one value, encoded as the stores encode it (bincode 2,
//! standard configuration: `store/codec.rs`). For each, the test checks both
//! ways: the file decodes to the value built here, and the value encodes to
//! the file. A failure means a stored type changed shape; the message says
//! what to do instead.
//!
//! The files were written by 0.1.0's own code: `SKEIN_WRITE_FIXTURES=1`
//! writes the fixtures that are missing (never one that exists), which is how
//! a new version adds its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use skein_raft::config::{Entry, SkeinNode};
use skein_raft::fsm::catalog::NewEntity;
use skein_raft::fsm::policy::{Credentials, NewRoot};
use skein_raft::fsm::{
    AuditRecord, Caller, Command, Completion, Event, EventKind, FencingToken, HeldLease, NewTask, NewToken, Outcome,
    QueuePatch, ReportedProgress, Role, Stamped, TaskId, TaskRef, TaskStatus,
};

fn dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encoding a fixture value")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(value)
}

/// Checks one fixture both ways; returns a problem to report, if any.
fn check<T>(version: &str, name: &str, value: &T) -> Option<String>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let path = dir(version).join(format!("{name}.bin"));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(_) if std::env::var_os("SKEIN_WRITE_FIXTURES").is_some() => {
            std::fs::create_dir_all(path.parent().expect("a fixture path has a parent")).expect("creating fixtures");
            std::fs::write(&path, encode(value)).expect("writing a fixture");
            eprintln!("wrote {}", path.display());
            return None;
        }
        Err(e) => return Some(format!("{}: {e} (SKEIN_WRITE_FIXTURES=1 writes missing fixtures)", path.display())),
    };
    let advice = "stored bytes are forever: never change the shape of a stored type; add a new variant at the \
                  end of its enum (or a new versioned type) and keep decoding this one (ARCHITECTURE.md, \
                  \"Adding a command\")";
    match decode::<T>(&bytes) {
        Err(e) => return Some(format!("{name} ({version}) no longer decodes: {e}; {advice}")),
        Ok(decoded) if &decoded != value => {
            return Some(format!(
                "{name} ({version}) decodes to another value:\n  now:      {decoded:?}\n  expected: {value:?}\n{advice}"
            ))
        }
        Ok(_) => {}
    }
    if encode(value) != bytes {
        return Some(format!(
            "{name} ({version}) is encoded differently now: a node would write bytes that {version} cannot read; {advice}"
        ));
    }
    None
}

fn new_task_full() -> NewTask {
    NewTask {
        queue: "etl".into(),
        kind: "exec".into(),
        payload: r#"{"command":["/bin/true"],"dataset":"orders"}"#.into(),
        priority: -3,
        max_attempts: Some(7),
        delay_ms: 1_500,
        idempotency_key: Some("orders-v2".into()),
        depends_on: vec![TaskRef::Id(TaskId(41)), TaskRef::Key("customers-v2".into())],
    }
}

fn queue_patch_full() -> QueuePatch {
    QueuePatch {
        lease_ms: Some(30_000),
        max_attempts: Some(5),
        backoff_base_ms: Some(1_000),
        backoff_cap_ms: Some(300_000),
        concurrency: Some(8),
        max_depth: Some(1_000_000),
        retention_ms: Some(86_400_000),
        stuck_expiries: Some(3),
        stuck_run_ms: Some(3_600_000),
        stuck_factor: Some(4),
        stuck_silence_ms: Some(60_000),
    }
}

fn entity() -> NewEntity {
    NewEntity {
        entity_ref: "component:default/orders-v2".into(),
        is_plan: true,
        queue: Some("dataset-migrations".into()),
        owner: Some("group:default/team-data".into()),
        labels: BTreeMap::from([("tier".to_string(), "gold".to_string())]),
        depends_on: vec!["component:default/customers-v2".into()],
        document: r#"{"apiVersion":"backstage.io/v1alpha1","kind":"Component"}"#.into(),
    }
}

/// One command of every variant (and of every variant inside one), as
/// 0.1.0 stamps them into log entries.
fn commands() -> Vec<(&'static str, Command)> {
    let progress = ReportedProgress { fraction: 0.25, message: "1000 of 4000 rows".into() };
    vec![
        ("enqueue", Command::Enqueue { tasks: vec![new_task_full(), NewTask::new("default", "noop", "{}")] }),
        ("lease", Command::Lease { node: 2, queues: vec!["etl".into()], max: 16 }),
        (
            "heartbeat",
            Command::Heartbeat {
                node: 3,
                slots: 4,
                held: vec![
                    HeldLease { task: TaskId(7), token: FencingToken(19), progress: Some(progress) },
                    HeldLease { task: TaskId(8), token: FencingToken(20), progress: None },
                ],
            },
        ),
        (
            "complete",
            Command::Complete {
                node: 2,
                completions: vec![
                    Completion {
                        task: TaskId(7),
                        token: FencingToken(19),
                        outcome: Outcome::Succeeded { result: r#"{"rows":4000}"#.into() },
                    },
                    Completion {
                        task: TaskId(8),
                        token: FencingToken(20),
                        outcome: Outcome::Retryable { error: "connection reset".into() },
                    },
                    Completion {
                        task: TaskId(9),
                        token: FencingToken(21),
                        outcome: Outcome::Permanent { error: "row count: source has 10 rows, target 2".into() },
                    },
                ],
            },
        ),
        ("expire_leases", Command::ExpireLeases),
        ("cancel", Command::Cancel { task: TaskId(5), reason: "not needed".into() }),
        ("retry", Command::Retry { task: TaskId(6) }),
        ("set_queue_paused", Command::SetQueuePaused { queue: "later".into(), paused: true }),
        ("configure_queue", Command::ConfigureQueue { queue: "etl".into(), patch: queue_patch_full() }),
        ("configure_queue_empty", Command::ConfigureQueue { queue: "etl".into(), patch: QueuePatch::default() }),
        ("drain_node", Command::DrainNode { node: 3, draining: true }),
        ("release_node", Command::ReleaseNode { node: 3, forget: false }),
        ("collect_garbage", Command::CollectGarbage),
        (
            "batch",
            Command::Batch(vec![
                Command::Enqueue { tasks: vec![NewTask::new("a", "sleep", r#"{"ms":10}"#)] },
                Command::ExpireLeases,
            ]),
        ),
        ("apply_plans", Command::ApplyPlans { entities: vec![entity()] }),
        (
            "run_plans",
            Command::RunPlans {
                refs: vec!["component:default/orders-v2".into()],
                force: true,
                default_queue: "default".into(),
                priority: 2,
            },
        ),
        ("remove_node", Command::RemoveNode { node: 4 }),
        ("admit_node", Command::AdmitNode { node: 4 }),
    ]
}

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn membership() -> Membership<u64, SkeinNode> {
    let node = |i: u64| SkeinNode { rpc_addr: format!("127.0.0.1:78{i:02}"), http_addr: format!("127.0.0.1:77{i:02}") };
    let voters = BTreeSet::from([1, 2, 3]);
    let nodes = (1..=4).map(|i| (i, node(i))).collect::<BTreeMap<_, _>>();
    Membership::new(vec![voters], nodes)
}

fn history_events() -> Vec<(&'static str, Event)> {
    let at = |what| Event { at_ms: 1_764_000_000_000, node: Some(2), token: Some(FencingToken(19)), what };
    vec![
        ("enqueued", Event { node: None, token: None, ..at(EventKind::Enqueued { status: TaskStatus::Blocked }) }),
        ("unblocked", at(EventKind::Unblocked)),
        ("leased", at(EventKind::Leased { attempt: 2 })),
        ("succeeded", at(EventKind::Succeeded)),
        ("failed", at(EventKind::Failed { error: "timeout".into(), retry_at_ms: 1_764_000_002_000 })),
        ("expired", at(EventKind::Expired { retry_at_ms: 1_764_000_004_000 })),
        ("dead", at(EventKind::Dead { error: "exit status 1".into() })),
        ("cancelled", at(EventKind::Cancelled { reason: "dependency 4 is dead".into() })),
        ("retried", at(EventKind::Retried)),
        ("released", at(EventKind::Released { retry_at_ms: 1_764_000_000_000 })),
    ]
}

#[test]
fn fixtures_of_0_1_0_decode_and_encode_alike() {
    const V: &str = "0.1.0";
    let mut problems = Vec::new();

    // The `log` CF: one `Entry` per command variant, plus the blank and
    // membership entries openraft writes itself.
    for (i, (name, command)) in commands().into_iter().enumerate() {
        let entry = Entry {
            log_id: log_id(3, 1, 100 + i as u64),
            payload: EntryPayload::Normal(Stamped { now_ms: 1_764_000_000_000 + i as u64, command }),
        };
        problems.extend(check(V, &format!("log/{name}"), &entry));
    }
    problems.extend(check(V, "log/blank", &Entry { log_id: log_id(3, 1, 99), payload: EntryPayload::Blank }));
    let membership_entry = Entry { log_id: log_id(1, 1, 1), payload: EntryPayload::Membership(membership()) };
    problems.extend(check(V, "log/membership", &membership_entry));

    // The `meta` CF: the vote, the committed and the last purged log ids.
    problems.extend(check(V, "meta/vote", &Vote::new_committed(3, 1)));
    problems.extend(check(V, "meta/committed", &Some(log_id(3, 1, 120))));
    problems.extend(check(V, "meta/last_purged", &log_id(2, 2, 80)));

    // The `history` CF: one event of every kind, in its stored shape.
    for (name, event) in history_events() {
        problems.extend(check(V, &format!("history/{name}"), &skein_raft::format::v1::Event::from(&event)));
    }

    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}

/// The variant's name. A new `Command` variant fails to compile here until
/// it is named, and then `every_command_variant_has_a_fixture` fails until
/// `commands()` has one of it (whose bytes SKEIN_WRITE_FIXTURES=1 writes once).
fn variant(command: &Command) -> &'static str {
    match command {
        Command::Enqueue { .. } => "Enqueue",
        Command::Lease { .. } => "Lease",
        Command::Heartbeat { .. } => "Heartbeat",
        Command::Complete { .. } => "Complete",
        Command::ExpireLeases => "ExpireLeases",
        Command::Cancel { .. } => "Cancel",
        Command::Retry { .. } => "Retry",
        Command::SetQueuePaused { .. } => "SetQueuePaused",
        Command::ConfigureQueue { .. } => "ConfigureQueue",
        Command::DrainNode { .. } => "DrainNode",
        Command::ReleaseNode { .. } => "ReleaseNode",
        Command::CollectGarbage => "CollectGarbage",
        Command::Batch(_) => "Batch",
        Command::ApplyPlans { .. } => "ApplyPlans",
        Command::RunPlans { .. } => "RunPlans",
        Command::RemoveNode { .. } => "RemoveNode",
        Command::AdmitNode { .. } => "AdmitNode",
        Command::SetFormat { .. } => "SetFormat",
        Command::RedriveQueue { .. } => "RedriveQueue",
        Command::AsCaller { .. } => "AsCaller",
        Command::EnqueueOwned { .. } => "EnqueueOwned",
        Command::CreateToken { .. } => "CreateToken",
        Command::RevokeToken { .. } => "RevokeToken",
        Command::RotateToken { .. } => "RotateToken",
        Command::TouchTokens { .. } => "TouchTokens",
        Command::ConfigureAuth { .. } => "ConfigureAuth",
        Command::Record { .. } => "Record",
        Command::AllowExec { .. } => "AllowExec",
        Command::DenyExec { .. } => "DenyExec",
        Command::AllowRoot { .. } => "AllowRoot",
        Command::DenyRoot { .. } => "DenyRoot",
        Command::ConfigurePolicy { .. } => "ConfigurePolicy",
        Command::EnqueueChildren { .. } => "EnqueueChildren",
    }
}

/// The commands format 2 (0.2.0) added, logged only once a cluster has
/// finalized it.
fn commands_of_format_2() -> Vec<(&'static str, Command)> {
    vec![
        ("set_format", Command::SetFormat { format: 2 }),
        ("redrive_queue", Command::RedriveQueue { queue: "etl".into(), max: 10_000 }),
    ]
}

#[test]
fn fixtures_of_0_2_0_decode_and_encode_alike() {
    const V: &str = "0.2.0";
    let mut problems = Vec::new();
    for (i, (name, command)) in commands_of_format_2().into_iter().enumerate() {
        assert_eq!(command.format(), 2, "{name} is a format 2 command");
        let entry = Entry {
            log_id: log_id(5, 2, 300 + i as u64),
            payload: EntryPayload::Normal(Stamped { now_ms: 1_790_000_000_000 + i as u64, command }),
        };
        problems.extend(check(V, &format!("log/{name}"), &entry));
    }
    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}

fn new_token(id: u64, name: &str, role: Role, owners: &[&str], expires_ms: Option<u64>) -> NewToken {
    NewToken {
        id,
        name: name.into(),
        role,
        owners: owners.iter().map(|o| o.to_string()).collect(),
        hash: (0..32).map(|i| (i as u8).wrapping_mul(7) ^ id as u8).collect(),
        expires_ms,
    }
}

/// The commands format 3 (0.3.0) added, logged only once a cluster has
/// finalized it: each variant once, `AsCaller` with each kind of caller,
/// and every role.
fn commands_of_format_3() -> Vec<(&'static str, Command)> {
    let as_token =
        |id: u64, command: Command| Command::AsCaller { caller: Caller::Token(id), command: Box::new(command) };
    vec![
        ("as_caller_token", as_token(0x1234_5678_9abc_def0, Command::Enqueue { tasks: vec![new_task_full()] })),
        (
            "as_caller_anonymous",
            Command::AsCaller {
                caller: Caller::Anonymous,
                command: Box::new(Command::Cancel { task: TaskId(5), reason: "not needed".into() }),
            },
        ),
        (
            "enqueue_owned",
            Command::EnqueueOwned {
                tasks: vec![new_task_full(), NewTask::new("default", "noop", "{}")],
                owner: Some("group:default/team-data".into()),
            },
        ),
        (
            "enqueue_owned_none",
            Command::EnqueueOwned { tasks: vec![NewTask::new("default", "noop", "{}")], owner: None },
        ),
        (
            "create_token",
            Command::CreateToken {
                token: new_token(
                    0xfeed,
                    "ci-data",
                    Role::Submit,
                    &["group:default/team-data", "team-ml"],
                    Some(1_800_000_000_000),
                ),
            },
        ),
        ("create_token_read", Command::CreateToken { token: new_token(7, "dashboards", Role::Read, &[], None) }),
        ("create_token_operate", Command::CreateToken { token: new_token(8, "oncall", Role::Operate, &[], None) }),
        (
            "create_token_admin_as_caller",
            as_token(1, Command::CreateToken { token: new_token(9, "root", Role::Admin, &[], None) }),
        ),
        ("revoke_token", Command::RevokeToken { id: 0xfeed }),
        (
            "rotate_token",
            Command::RotateToken { old: 0xfeed, new: new_token(0xbeef, "ci-data", Role::Submit, &[], None) },
        ),
        ("touch_tokens", Command::TouchTokens { used: vec![(0xfeed, 1_790_000_000_500), (7, 1_790_000_001_000)] }),
        ("configure_auth", Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: Some(30 * 86_400_000) }),
        ("configure_auth_none", Command::ConfigureAuth { enforce: None, audit_retention_ms: None }),
        ("record", Command::Record { action: "add node".into(), target: "node 4 (10.0.0.4:7804)".into() }),
    ]
}

fn audit_record() -> AuditRecord {
    AuditRecord {
        at_ms: 1_790_000_000_000,
        principal: "ci-data".into(),
        action: "enqueue".into(),
        target: "2 task(s) in etl,default".into(),
        outcome: "refused: forbidden: token ci-data acts only for group:default/team-data, not team-ml".into(),
    }
}

#[test]
fn fixtures_of_0_3_0_decode_and_encode_alike() {
    const V: &str = "0.3.0";
    let mut problems = Vec::new();
    for (i, (name, command)) in commands_of_format_3().into_iter().enumerate() {
        assert_eq!(command.format(), 3, "{name} is a format 3 command");
        let entry = Entry {
            log_id: log_id(7, 3, 500 + i as u64),
            payload: EntryPayload::Normal(Stamped { now_ms: 1_800_000_000_000 + i as u64, command }),
        };
        problems.extend(check(V, &format!("log/{name}"), &entry));
    }
    // The `history` CF: the event format 3 added, and an audit record (kept
    // in the same CF under its own prefix), in their stored shapes.
    let requested = Event {
        at_ms: 1_790_000_000_000,
        node: None,
        token: None,
        what: EventKind::Requested { by: "ci-data".into(), action: "run plans".into() },
    };
    problems.extend(check(V, "history/requested", &skein_raft::format::v1::Event::from(&requested)));
    let record = audit_record();
    problems.extend(check(V, "history/audit", &skein_raft::format::v3::Audit::from(&record)));
    let bytes = std::fs::read(dir(V).join("history/audit.bin")).expect("the audit fixture");
    assert_eq!(
        skein_raft::fsm::AuditRecord::from(decode::<skein_raft::format::v3::Audit>(&bytes).expect("decodes")),
        record
    );
    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}

/// An object-store root with every field set.
fn s3_root() -> NewRoot {
    NewRoot {
        url: "s3://lake/raw/".into(),
        endpoint: Some("http://127.0.0.1:9000".into()),
        region: Some("eu-west-1".into()),
        credentials: Credentials::File("/etc/skein/s3.creds".into()),
        allow_http: true,
    }
}

/// The commands format 4 (0.4.0) added: each variant, each kind of credentials.
fn commands_of_format_4() -> Vec<(&'static str, Command)> {
    let root = |url: &str, credentials: Credentials| NewRoot {
        url: url.into(),
        endpoint: Some("https://s3.eu-west-1.amazonaws.com".into()),
        region: None,
        credentials,
        allow_http: false,
    };
    vec![
        (
            "allow_exec",
            Command::AllowExec { program: "/usr/bin/python3".into(), args: vec!["/opt/t/convert.py".into()] },
        ),
        ("allow_exec_bare", Command::AllowExec { program: "/usr/bin/true".into(), args: vec![] }),
        ("deny_exec", Command::DenyExec { program: "/usr/bin/python3".into(), args: Some(vec!["-c".into()]) }),
        ("deny_exec_all", Command::DenyExec { program: "/usr/bin/python3".into(), args: None }),
        (
            "allow_root_local",
            Command::AllowRoot {
                root: NewRoot {
                    url: "file:///data/".into(),
                    endpoint: None,
                    region: None,
                    credentials: Credentials::None,
                    allow_http: false,
                },
            },
        ),
        ("allow_root_file", Command::AllowRoot { root: s3_root() }),
        ("allow_root_env", Command::AllowRoot { root: root("s3://lake/curated/", Credentials::Env) }),
        ("allow_root_anonymous", Command::AllowRoot { root: root("s3://public/", Credentials::Anonymous) }),
        ("deny_root", Command::DenyRoot { url: "s3://lake/raw/".into() }),
        ("configure_policy", Command::ConfigurePolicy { enforce: true }),
        (
            "as_caller_allow_exec",
            Command::AsCaller {
                caller: Caller::Token(1),
                command: Box::new(Command::AllowExec { program: "/bin/sh".into(), args: vec![] }),
            },
        ),
        (
            "enqueue_children",
            Command::EnqueueChildren {
                parent: TaskId(41),
                token: FencingToken(977),
                tasks: vec![
                    NewTask {
                        idempotency_key: Some("plan:component:default/events#3/part-0".into()),
                        ..NewTask::new(
                            "dataset-migrations",
                            "migration",
                            r#"{"entity_ref":"component:default/events","generation":3,"partition":{"index":0,"files":["file:///data/events/a.parquet"],"bytes":1024}}"#,
                        )
                    },
                    NewTask {
                        idempotency_key: Some("plan:component:default/events#3/commit".into()),
                        depends_on: vec![
                            TaskRef::Key("plan:component:default/events#3/part-0".into()),
                            TaskRef::Id(TaskId(40)),
                        ],
                        ..NewTask::new(
                            "dataset-migrations",
                            "migration",
                            r#"{"entity_ref":"component:default/events","generation":3,"commit":{"partitions":1}}"#,
                        )
                    },
                ],
            },
        ),
    ]
}

#[test]
fn fixtures_of_0_4_0_decode_and_encode_alike() {
    const V: &str = "0.4.0";
    let mut problems = Vec::new();
    for (i, (name, command)) in commands_of_format_4().into_iter().enumerate() {
        assert_eq!(command.format(), 4, "{name} is a format 4 command");
        let entry = Entry {
            log_id: log_id(8, 2, 900 + i as u64),
            payload: EntryPayload::Normal(Stamped { now_ms: 1_810_000_000_000 + i as u64, command }),
        };
        problems.extend(check(V, &format!("log/{name}"), &entry));
    }
    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn format_1_commands_are_format_1() {
    for (name, command) in commands() {
        assert_eq!(command.format(), 1, "{name}: a 0.1.0 command must stay loggable in a format 1 cluster");
    }
}

#[test]
fn every_command_variant_has_a_fixture() {
    const ALL: [&str; 32] = [
        "Enqueue",
        "Lease",
        "Heartbeat",
        "Complete",
        "ExpireLeases",
        "Cancel",
        "Retry",
        "SetQueuePaused",
        "ConfigureQueue",
        "DrainNode",
        "ReleaseNode",
        "CollectGarbage",
        "Batch",
        "ApplyPlans",
        "RunPlans",
        "RemoveNode",
        "AdmitNode",
        "SetFormat",
        "RedriveQueue",
        "AsCaller",
        "EnqueueOwned",
        "CreateToken",
        "RevokeToken",
        "RotateToken",
        "TouchTokens",
        "ConfigureAuth",
        "Record",
        "AllowExec",
        "DenyExec",
        "AllowRoot",
        "DenyRoot",
        "ConfigurePolicy",
    ];
    let covered: BTreeSet<&str> = commands()
        .iter()
        .chain(&commands_of_format_2())
        .chain(&commands_of_format_3())
        .chain(&commands_of_format_4())
        .map(|(_, c)| variant(c))
        .collect();
    let missing: Vec<&str> = ALL.iter().copied().filter(|v| !covered.contains(v)).collect();
    assert!(missing.is_empty(), "commands without a compatibility fixture: {missing:?}");
}

/// The snapshot 0.1.0 took of the data-directory fixture
/// (`tests/fixtures/datadir-0.1.0.tar.gz` at the workspace root, made by
/// `scripts/make-datadir-fixture.py`; snapshot format version 3): a restart
/// loads it (header and hot state), and a fresh store installs it whole
/// (every record checked, cold data included), giving the state 0.1.0 had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_0_1_0_snapshot_loads_and_installs() -> Result<(), Box<dyn std::error::Error>> {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use tokio::io::AsyncWriteExt;

    let bytes = std::fs::read(dir("0.1.0").join("snapshot-v3.snap"))?;
    assert_eq!(&bytes[..8], b"SKEINSNP");
    assert_eq!(u32::from_be_bytes(bytes[8..12].try_into()?), 3, "the fixture is a version 3 snapshot");

    // A restart on a directory holding it.
    let restarted = tempfile::tempdir()?;
    std::fs::create_dir_all(restarted.path().join("snapshots"))?;
    std::fs::write(restarted.path().join("snapshots/current.snap"), &bytes)?;
    let (_log, mut sm) = skein_raft::store::open(restarted.path())?;
    let meta = sm.get_current_snapshot().await?.ok_or("no snapshot after a restart")?.meta;
    let loaded = sm.handle();

    // A fresh store receives and installs it.
    let fresh = tempfile::tempdir()?;
    let (_log2, mut sm2) = skein_raft::store::open(fresh.path())?;
    let mut file = sm2.begin_receiving_snapshot().await?;
    file.write_all(&bytes).await?;
    file.shutdown().await?;
    sm2.install_snapshot(&meta, file).await?;
    let installed = sm2.handle();
    assert_eq!(installed.digest()?, loaded.digest()?, "restart and install give one state");

    let state = installed.state();
    assert_eq!(state.last_applied().map(|l| l.index), meta.last_log_id.map(|l| l.index));
    let by_status = state.total_counts();
    let count = |s: TaskStatus| by_status.get(&s).copied().unwrap_or(0);
    assert_eq!(state.task_count(), 14, "tasks in 0.1.0's snapshot");
    assert_eq!(
        [count(TaskStatus::Succeeded), count(TaskStatus::Dead), count(TaskStatus::Cancelled)],
        [8, 1, 2],
        "succeeded, dead, cancelled: {by_status:?}"
    );
    assert_eq!([count(TaskStatus::Pending), count(TaskStatus::Blocked)], [2, 1], "pending, blocked: {by_status:?}");
    let queues: Vec<&str> = ["dataset-migrations", "etl", "later", "scratch"].into_iter().collect();
    for q in &queues {
        assert!(state.queue(q).is_some(), "queue {q} is missing");
    }
    assert!(state.queue("later").is_some_and(|q| q.paused), "the queue `later` was paused");
    let etl = state.queue("etl").ok_or("no etl")?;
    assert_eq!((etl.config.max_attempts, etl.config.stuck_factor, etl.config.concurrency), (2, 5, 3));
    let plan = state.catalog_entry("component:default/customers-v2").ok_or("the plan is missing")?;
    assert_eq!((plan.generation, plan.entity.owner.as_deref()), (1, Some("team-data")));
    assert_eq!(state.catalog_len(), 2);

    // The task that failed, died, was retried and died again: its payload
    // and every one of its ten history events came through the snapshot.
    let dead = state.task_by_key("always-fails").ok_or("the task keyed always-fails is missing")?.id;
    drop(state);
    assert!(installed.payload(dead)?.is_some_and(|p| p.contains("exit 75")));
    let history = installed.history(dead)?;
    assert_eq!(history.len(), 10);
    assert!(matches!(history[2].what, EventKind::Failed { .. }));
    assert!(matches!(history[5].what, EventKind::Retried));
    let tokens: Vec<u64> = history.iter().filter_map(|e| e.token).map(|t| t.0).collect();
    // Each lease's token is on its `leased` event and on the outcome under it.
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "tokens only grow: {tokens:?}");
    assert_eq!(tokens.iter().collect::<BTreeSet<_>>().len(), 4, "four leases, four tokens: {tokens:?}");

    // Snapshotted again before a finalize, it is written as 0.1.0 wrote it:
    // version 3, the state byte for byte the same (so 0.1.0 can read it).
    let again = sm2.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(again.meta.last_log_id, meta.last_log_id);
    let rewritten = std::fs::read(fresh.path().join("snapshots/current.snap"))?;
    assert_eq!(u32::from_be_bytes(rewritten[8..12].try_into()?), 3, "a format 1 state is written as version 3");
    assert_eq!(hot_state(&rewritten), hot_state(&bytes), "the state section is 0.1.0's, byte for byte");
    Ok(())
}

/// The encoded state section of a snapshot file (after its meta).
fn hot_state(file: &[u8]) -> &[u8] {
    let len = |at: usize| u64::from_be_bytes(file[at..at + 8].try_into().expect("8 bytes")) as usize;
    let meta_len = len(12);
    let at = 12 + 8 + meta_len;
    &file[at + 8..at + 8 + len(at)]
}

/// A version 4 snapshot (format 2): 0.1.0's snapshot state after
/// `SetFormat { format: 2 }`, written once by `SKEIN_WRITE_FIXTURES=1` and
/// then kept: it loads, says format 2, and has the same tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_format_2_snapshot_loads() -> Result<(), Box<dyn std::error::Error>> {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    let path = dir("0.2.0").join("snapshot-v4.snap");
    if !path.exists() && std::env::var_os("SKEIN_WRITE_FIXTURES").is_some() {
        let v3 = std::fs::read(dir("0.1.0").join("snapshot-v3.snap"))?;
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir_all(tmp.path().join("snapshots"))?;
        std::fs::write(tmp.path().join("snapshots/current.snap"), &v3)?;
        let (_log, mut sm) = skein_raft::store::open(tmp.path())?;
        let last = sm.get_current_snapshot().await?.ok_or("no snapshot")?.meta.last_log_id.ok_or("no log id")?;
        let entry = Entry {
            log_id: log_id(last.leader_id.term, last.leader_id.node_id, last.index + 1),
            payload: EntryPayload::Normal(Stamped {
                now_ms: 1_790_000_000_000,
                command: Command::SetFormat { format: 2 },
            }),
        };
        sm.apply(vec![entry]).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        std::fs::create_dir_all(dir("0.2.0"))?;
        std::fs::copy(tmp.path().join("snapshots/current.snap"), &path)?;
        eprintln!("wrote {}", path.display());
    }
    let bytes =
        std::fs::read(&path).map_err(|e| format!("{}: {e} (SKEIN_WRITE_FIXTURES=1 writes it)", path.display()))?;
    assert_eq!(u32::from_be_bytes(bytes[8..12].try_into()?), 4, "the fixture is a version 4 snapshot");

    let fresh = tempfile::tempdir()?;
    std::fs::create_dir_all(fresh.path().join("snapshots"))?;
    std::fs::write(fresh.path().join("snapshots/current.snap"), &bytes)?;
    let (_log, mut sm) = skein_raft::store::open(fresh.path())?;
    let state = sm.handle();
    {
        let state = state.state();
        assert_eq!(state.format(), 2);
        assert_eq!(state.task_count(), 14);
        assert!(state.task_by_key("always-fails").is_some());
    }
    // A format 2 state is written as version 4 again.
    sm.get_snapshot_builder().await.build_snapshot().await?;
    let rewritten = std::fs::read(fresh.path().join("snapshots/current.snap"))?;
    assert_eq!(u32::from_be_bytes(rewritten[8..12].try_into()?), 4);
    assert_eq!(hot_state(&rewritten), hot_state(&bytes));
    Ok(())
}

/// A version 5 snapshot (format 3): the format 2 snapshot after
/// `SetFormat { format: 3 }`, two tokens, an owned task enqueued by a token
/// (its `Requested` event), a refused anonymous request, and the audit
/// records of each request (snapshot records of tag 4). Written once by
/// `SKEIN_WRITE_FIXTURES=1` and then kept: it loads, installs, says format 3,
/// and is written again byte for byte alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_format_3_snapshot_loads_and_installs() -> Result<(), Box<dyn std::error::Error>> {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use tokio::io::AsyncWriteExt;

    const KEY: &str = "owned-by-team-data";
    let path = dir("0.3.0").join("snapshot-v5.snap");
    if !path.exists() && std::env::var_os("SKEIN_WRITE_FIXTURES").is_some() {
        // Installed (not restarted from), so that its cold records come along.
        let v4 = std::fs::read(dir("0.2.0").join("snapshot-v4.snap"))?;
        let from = tempfile::tempdir()?;
        std::fs::create_dir_all(from.path().join("snapshots"))?;
        std::fs::write(from.path().join("snapshots/current.snap"), &v4)?;
        let v4_meta = {
            let (_log, mut sm) = skein_raft::store::open(from.path())?;
            sm.get_current_snapshot().await?.ok_or("no snapshot")?.meta
        };
        let tmp = tempfile::tempdir()?;
        let (_log, mut sm) = skein_raft::store::open(tmp.path())?;
        let mut file = sm.begin_receiving_snapshot().await?;
        file.write_all(&v4).await?;
        file.shutdown().await?;
        sm.install_snapshot(&v4_meta, file).await?;
        let last = v4_meta.last_log_id.ok_or("no log id")?;
        let as_caller = |caller, command| Command::AsCaller { caller, command: Box::new(command) };
        let mut owned = NewTask::new("etl", "noop", r#"{"rows":12}"#);
        owned.idempotency_key = Some(KEY.into());
        let commands = vec![
            Command::SetFormat { format: 3 },
            Command::CreateToken { token: new_token(1, "admin", Role::Admin, &[], None) },
            as_caller(
                Caller::Token(1),
                Command::CreateToken {
                    token: new_token(2, "ci-data", Role::Submit, &["team-data"], Some(1_900_000_000_000)),
                },
            ),
            as_caller(
                Caller::Token(2),
                Command::EnqueueOwned { tasks: vec![owned], owner: Some("group:default/team-data".into()) },
            ),
            as_caller(Caller::Anonymous, Command::Record { action: "add node".into(), target: "node 4".into() }),
            as_caller(Caller::Token(1), Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: None }),
            Command::TouchTokens { used: vec![(2, 1_800_000_000_003)] },
            as_caller(Caller::Anonymous, Command::Enqueue { tasks: vec![NewTask::new("etl", "noop", "{}")] }),
        ];
        let entries: Vec<Entry> = commands
            .into_iter()
            .enumerate()
            .map(|(i, command)| Entry {
                log_id: log_id(last.leader_id.term, last.leader_id.node_id, last.index + 1 + i as u64),
                payload: EntryPayload::Normal(Stamped { now_ms: 1_800_000_000_000 + i as u64, command }),
            })
            .collect();
        sm.apply(entries).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        std::fs::create_dir_all(dir("0.3.0"))?;
        std::fs::copy(tmp.path().join("snapshots/current.snap"), &path)?;
        eprintln!("wrote {}", path.display());
    }
    let bytes =
        std::fs::read(&path).map_err(|e| format!("{}: {e} (SKEIN_WRITE_FIXTURES=1 writes it)", path.display()))?;
    assert_eq!(u32::from_be_bytes(bytes[8..12].try_into()?), 5, "the fixture is a version 5 snapshot");

    // A restart on a directory holding it.
    let restarted = tempfile::tempdir()?;
    std::fs::create_dir_all(restarted.path().join("snapshots"))?;
    std::fs::write(restarted.path().join("snapshots/current.snap"), &bytes)?;
    let (_log, mut sm) = skein_raft::store::open(restarted.path())?;
    let meta = sm.get_current_snapshot().await?.ok_or("no snapshot after a restart")?.meta;
    let loaded = sm.handle();

    // A fresh store receives and installs it (the audit records too).
    let fresh = tempfile::tempdir()?;
    let (_log2, mut sm2) = skein_raft::store::open(fresh.path())?;
    let mut file = sm2.begin_receiving_snapshot().await?;
    file.write_all(&bytes).await?;
    file.shutdown().await?;
    sm2.install_snapshot(&meta, file).await?;
    let installed = sm2.handle();
    assert_eq!(installed.digest()?, loaded.digest()?, "restart and install give one state");

    let owned = {
        let state = installed.state();
        assert_eq!(state.format(), 3);
        assert_eq!(state.task_count(), 15, "0.1.0's 14 tasks and the owned one");
        assert!(state.task_by_key("always-fails").is_some());
        assert!(state.auth_enforced());
        let tokens: Vec<(u64, &str, Role, &str)> =
            state.tokens().map(|t| (t.id, t.name.as_str(), t.role, t.created_by.as_str())).collect();
        assert_eq!(tokens, vec![(1, "admin", Role::Admin, "bootstrap"), (2, "ci-data", Role::Submit, "admin")]);
        let ci = state.token(2).ok_or("no token 2")?;
        assert_eq!(ci.owners, vec!["group:default/team-data".to_string()]);
        assert_eq!((ci.expires_ms, ci.last_used_ms), (Some(1_900_000_000_000), Some(1_800_000_000_003)));
        assert_eq!(ci.hash, new_token(2, "", Role::Read, &[], None).hash, "the hash survives");
        let owned = state.task_by_key(KEY).ok_or("the owned task is missing")?.id;
        assert_eq!(state.task_owner(owned), Some("group:default/team-data"));
        assert_eq!(state.audit_range(0), (0, 5));
        owned
    };
    // The cold records (history, audit) come with an install; a restart
    // finds them in RocksDB, not in the snapshot file.
    {
        let handle = &installed;
        let history = handle.history(owned)?;
        assert_eq!(
            history.last().map(|e| &e.what),
            Some(&EventKind::Requested { by: "ci-data".into(), action: "enqueue".into() })
        );
        let audit = handle.audit(0, 100)?;
        let summary: Vec<(u64, &str, &str, &str)> =
            audit.iter().map(|(s, r)| (*s, r.principal.as_str(), r.action.as_str(), r.outcome.as_str())).collect();
        assert_eq!(
            summary,
            vec![
                (0, "admin", "create token", "ok"),
                (1, "ci-data", "enqueue", "ok"),
                (2, "anonymous", "add node", "ok"),
                (3, "admin", "configure auth", "ok"),
                (4, "anonymous", "enqueue", "refused: unauthenticated: a token is required"),
            ]
        );
        assert_eq!(handle.audit(3, 1)?.len(), 1, "from a sequence number, at most limit");
    }

    // A format 3 state is written as version 5 again, byte for byte alike.
    sm2.get_snapshot_builder().await.build_snapshot().await?;
    let rewritten = std::fs::read(fresh.path().join("snapshots/current.snap"))?;
    assert_eq!(u32::from_be_bytes(rewritten[8..12].try_into()?), 5);
    assert_eq!(hot_state(&rewritten), hot_state(&bytes));
    Ok(())
}

/// A version 6 snapshot (format 4): the format 3 snapshot after
/// `SetFormat { format: 4 }`, two exec rules, a local and an object-store
/// root and `ConfigurePolicy`, all sent by the admin token, and a bare
/// `AllowExec` that is refused. Written
/// once by `SKEIN_WRITE_FIXTURES=1` and then kept: it loads, installs, says
/// format 4 with its policy, and is written again byte for byte alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_format_4_snapshot_loads_and_installs() -> Result<(), Box<dyn std::error::Error>> {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use tokio::io::AsyncWriteExt;

    let path = dir("0.4.0").join("snapshot-v6.snap");
    if !path.exists() && std::env::var_os("SKEIN_WRITE_FIXTURES").is_some() {
        let v5 = std::fs::read(dir("0.3.0").join("snapshot-v5.snap"))?;
        let from = tempfile::tempdir()?;
        std::fs::create_dir_all(from.path().join("snapshots"))?;
        std::fs::write(from.path().join("snapshots/current.snap"), &v5)?;
        let v5_meta = {
            let (_log, mut sm) = skein_raft::store::open(from.path())?;
            sm.get_current_snapshot().await?.ok_or("no snapshot")?.meta
        };
        let tmp = tempfile::tempdir()?;
        let (_log, mut sm) = skein_raft::store::open(tmp.path())?;
        let mut file = sm.begin_receiving_snapshot().await?;
        file.write_all(&v5).await?;
        file.shutdown().await?;
        sm.install_snapshot(&v5_meta, file).await?;
        let last = v5_meta.last_log_id.ok_or("no log id")?;
        // The cluster enforces auth: the admin token (1) sends them.
        let admin = |command| Command::AsCaller { caller: Caller::Token(1), command: Box::new(command) };
        let commands = vec![
            Command::SetFormat { format: 4 },
            admin(Command::AllowExec { program: "/usr/bin/true".into(), args: vec![] }),
            admin(Command::AllowExec { program: "/usr/bin/python3".into(), args: vec!["/opt/t/convert.py".into()] }),
            admin(Command::AllowRoot {
                root: NewRoot {
                    url: "/data".into(),
                    endpoint: None,
                    region: None,
                    credentials: Credentials::None,
                    allow_http: false,
                },
            }),
            admin(Command::AllowRoot { root: s3_root() }),
            admin(Command::ConfigurePolicy { enforce: true }),
            // Refused: a bare client write while enforcing.
            Command::AllowExec { program: "/bin/sh".into(), args: vec![] },
        ];
        let entries: Vec<Entry> = commands
            .into_iter()
            .enumerate()
            .map(|(i, command)| Entry {
                log_id: log_id(last.leader_id.term, last.leader_id.node_id, last.index + 1 + i as u64),
                payload: EntryPayload::Normal(Stamped { now_ms: 1_810_000_000_000 + i as u64, command }),
            })
            .collect();
        sm.apply(entries).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        std::fs::create_dir_all(dir("0.4.0"))?;
        std::fs::copy(tmp.path().join("snapshots/current.snap"), &path)?;
        eprintln!("wrote {}", path.display());
    }
    let bytes =
        std::fs::read(&path).map_err(|e| format!("{}: {e} (SKEIN_WRITE_FIXTURES=1 writes it)", path.display()))?;
    assert_eq!(u32::from_be_bytes(bytes[8..12].try_into()?), 6, "the fixture is a version 6 snapshot");

    let restarted = tempfile::tempdir()?;
    std::fs::create_dir_all(restarted.path().join("snapshots"))?;
    std::fs::write(restarted.path().join("snapshots/current.snap"), &bytes)?;
    let (_log, mut sm) = skein_raft::store::open(restarted.path())?;
    let meta = sm.get_current_snapshot().await?.ok_or("no snapshot after a restart")?.meta;
    let loaded = sm.handle();

    let fresh = tempfile::tempdir()?;
    let (_log2, mut sm2) = skein_raft::store::open(fresh.path())?;
    let mut file = sm2.begin_receiving_snapshot().await?;
    file.write_all(&bytes).await?;
    file.shutdown().await?;
    sm2.install_snapshot(&meta, file).await?;
    let installed = sm2.handle();
    assert_eq!(installed.digest()?, loaded.digest()?, "restart and install give one state");
    {
        let state = installed.state();
        assert_eq!(state.format(), 4);
        assert_eq!(state.task_count(), 15, "format 3's tasks");
        assert!(state.auth_enforced(), "format 3's auth section");
        let policy = state.policy();
        assert!(policy.enforce);
        let rules: Vec<(&str, &[String], &str)> =
            policy.programs.iter().map(|r| (r.program.as_str(), r.args.as_slice(), r.created_by.as_str())).collect();
        assert_eq!(
            rules,
            vec![
                ("/usr/bin/true", &[][..], "admin"),
                ("/usr/bin/python3", &["/opt/t/convert.py".to_string()][..], "admin"),
            ]
        );
        let roots: Vec<&str> = policy.roots.keys().map(String::as_str).collect();
        assert_eq!(roots, vec!["file:///data/", "s3://lake/raw/"]);
        assert_eq!(policy.roots["s3://lake/raw/"].root, s3_root());
        assert!(policy.check_exec(&["/usr/bin/python3".into(), "/opt/t/convert.py".into()]).is_ok());
        assert!(policy.root_of("/data/x.csv")?.is_some());
    }
    sm2.get_snapshot_builder().await.build_snapshot().await?;
    let rewritten = std::fs::read(fresh.path().join("snapshots/current.snap"))?;
    assert_eq!(u32::from_be_bytes(rewritten[8..12].try_into()?), 6);
    assert_eq!(hot_state(&rewritten), hot_state(&bytes));
    Ok(())
}
