//! Compatibility fixtures of what nodes send each other: the bytes skein
//! 0.1.0 (commit 65601e1, the first release) puts on the wire for every RPC
//! request and response, in `tests/fixtures/0.1.0/`. A node of a later
//! version must read them (a rolling upgrade runs old and new nodes side by
//! side) and, until the upgrade is finalized, send exactly these bytes.
//!
//! Each fixture is one tarpc message body (`SkeinRpcRequest` or
//! `SkeinRpcResponse`) in the wire codec ([`skein_transport::codec`]). The
//! generated enums have no `PartialEq`, so each is checked by bytes: the
//! value built here encodes to the file, and the file decodes and encodes
//! back to itself. `SKEIN_WRITE_FIXTURES=1` writes the missing ones (never
//! one that exists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skein_raft::config::{Entry, SkeinNode};
use skein_raft::fsm::{
    Command, Completion, Enqueued, FencingToken, Granted, HeartbeatAck, HeldLease, NewTask, Outcome, Rejection,
    Response, Stamped, TaskId, TaskStatus,
};
use skein_transport::codec::{decode, encode};
use skein_transport::rpc::{SkeinRpcRequest, SkeinRpcResponse};
use skein_transport::{CompleteRequest, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask, NodeError};

fn fixtures(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version)
}

fn check<T: Serialize + DeserializeOwned>(name: &str, value: &T) -> Option<String> {
    check_in("0.1.0", name, value)
}

fn check_in<T: Serialize + DeserializeOwned>(version: &str, name: &str, value: &T) -> Option<String> {
    let path = fixtures(version).join(format!("{name}.bin"));
    let now = encode(value).expect("encoding a fixture value");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(_) if std::env::var_os("SKEIN_WRITE_FIXTURES").is_some() => {
            std::fs::create_dir_all(path.parent().expect("a fixture path has a parent")).expect("creating fixtures");
            std::fs::write(&path, &now).expect("writing a fixture");
            eprintln!("wrote {}", path.display());
            return None;
        }
        Err(e) => return Some(format!("{}: {e} (SKEIN_WRITE_FIXTURES=1 writes missing fixtures)", path.display())),
    };
    let advice = "what nodes send each other is forever: never change the shape of an RPC type; add a new RPC \
                  (or a new variant at the end) and keep answering this one (ARCHITECTURE.md, \"Adding a command\")";
    match decode::<T>(&bytes) {
        Err(e) => Some(format!("{name} ({version}) no longer decodes: {e}; {advice}")),
        Ok(decoded) if encode(&decoded).ok().as_ref() != Some(&bytes) => {
            Some(format!("{name} ({version}) decodes to another value; {advice}"))
        }
        Ok(_) if now != bytes => {
            Some(format!("{name} ({version}) is encoded differently now: a {version} node could not read it; {advice}"))
        }
        Ok(_) => None,
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn skein_node(i: u64) -> SkeinNode {
    SkeinNode { rpc_addr: format!("127.0.0.1:78{i:02}"), http_addr: format!("127.0.0.1:77{i:02}") }
}

fn membership() -> Membership<u64, SkeinNode> {
    let nodes = (1..=3).map(|i| (i, skein_node(i))).collect::<BTreeMap<_, _>>();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn granted() -> Granted {
    Granted {
        task: TaskId(7),
        queue: "etl".into(),
        kind: "exec".into(),
        attempt: 2,
        token: FencingToken(19),
        expires_ms: 1_764_000_030_000,
    }
}

fn requests() -> Vec<(&'static str, SkeinRpcRequest)> {
    let entries = vec![
        Entry { log_id: log_id(2, 10), payload: EntryPayload::Blank },
        Entry { log_id: log_id(2, 11), payload: EntryPayload::Membership(membership()) },
        Entry {
            log_id: log_id(2, 12),
            payload: EntryPayload::Normal(Stamped {
                now_ms: 1_764_000_000_000,
                command: Command::Enqueue { tasks: vec![NewTask::new("etl", "noop", "{}")] },
            }),
        },
    ];
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 9)),
        last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
        snapshot_id: "2-1-9-4".into(),
    };
    vec![
        (
            "request/append_entries",
            SkeinRpcRequest::AppendEntries {
                req: AppendEntriesRequest {
                    vote: Vote::new_committed(2, 1),
                    prev_log_id: Some(log_id(2, 9)),
                    entries,
                    leader_commit: Some(log_id(2, 9)),
                },
            },
        ),
        (
            "request/vote",
            SkeinRpcRequest::Vote { req: VoteRequest { vote: Vote::new(3, 2), last_log_id: Some(log_id(2, 12)) } },
        ),
        (
            "request/install_snapshot",
            SkeinRpcRequest::InstallSnapshot {
                req: InstallSnapshotRequest {
                    vote: Vote::new_committed(2, 1),
                    meta,
                    offset: 4096,
                    data: b"SKEINSNP".to_vec(),
                    done: false,
                },
            },
        ),
        (
            "request/write",
            SkeinRpcRequest::Write { command: Command::Cancel { task: TaskId(5), reason: "not needed".into() } },
        ),
        (
            "request/lease",
            SkeinRpcRequest::Lease {
                req: LeaseRequest { node: 2, queues: vec!["etl".into()], max: 4, wait_ms: 1_000 },
            },
        ),
        (
            "request/heartbeat",
            SkeinRpcRequest::Heartbeat {
                req: HeartbeatRequest {
                    node: 2,
                    slots: 4,
                    held: vec![HeldLease { task: TaskId(7), token: FencingToken(19), progress: None }],
                },
            },
        ),
        (
            "request/complete",
            SkeinRpcRequest::Complete {
                req: CompleteRequest {
                    node: 2,
                    completions: vec![Completion {
                        task: TaskId(7),
                        token: FencingToken(19),
                        outcome: Outcome::Succeeded { result: r#"{"rows":3}"#.into() },
                    }],
                },
            },
        ),
        ("request/read_index", SkeinRpcRequest::ReadIndex {}),
        ("request/join", SkeinRpcRequest::Join { req: JoinRequest { id: 4, node: skein_node(4) } }),
        ("request/leave", SkeinRpcRequest::Leave { id: 4 }),
    ]
}

fn responses() -> Vec<(&'static str, SkeinRpcResponse)> {
    let not_leader = NodeError::NotLeader { leader_id: Some(1), leader: Some(skein_node(1)) };
    vec![
        ("response/append_entries", SkeinRpcResponse::AppendEntries(Ok(AppendEntriesResponse::Success))),
        (
            "response/append_entries_conflict",
            SkeinRpcResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(Vote::new(4, 3)))),
        ),
        (
            "response/vote",
            SkeinRpcResponse::Vote(Ok(VoteResponse {
                vote: Vote::new(3, 2),
                vote_granted: true,
                last_log_id: Some(log_id(2, 12)),
            })),
        ),
        (
            "response/install_snapshot",
            SkeinRpcResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote: Vote::new_committed(2, 1) })),
        ),
        (
            "response/write",
            SkeinRpcResponse::Write(Ok(Response::Enqueued(vec![Enqueued {
                id: TaskId(12),
                created: true,
                status: TaskStatus::Pending,
            }]))),
        ),
        ("response/write_not_leader", SkeinRpcResponse::Write(Err(not_leader))),
        (
            "response/write_rejected",
            SkeinRpcResponse::Write(Ok(Response::Rejected(Rejection::StaleToken {
                task: TaskId(7),
                token: FencingToken(18),
                current: Some(FencingToken(19)),
            }))),
        ),
        (
            "response/lease",
            SkeinRpcResponse::Lease(Ok(vec![LeasedTask { grant: granted(), payload: r#"{"ms":10}"#.into() }])),
        ),
        (
            "response/heartbeat",
            SkeinRpcResponse::Heartbeat(Ok(HeartbeatAck {
                renewed: vec![(TaskId(7), 1_764_000_060_000)],
                revoked: vec![(TaskId(8), FencingToken(20))],
                draining: false,
            })),
        ),
        (
            "response/complete",
            SkeinRpcResponse::Complete(Ok(vec![
                Ok(TaskStatus::Succeeded),
                Err(Rejection::StaleToken { task: TaskId(9), token: FencingToken(3), current: None }),
            ])),
        ),
        ("response/read_index", SkeinRpcResponse::ReadIndex(Ok(12))),
        ("response/join", SkeinRpcResponse::Join(Err(NodeError::Unavailable("membership change in progress".into())))),
        ("response/leave", SkeinRpcResponse::Leave(Err(NodeError::Invalid("no node 9".into())))),
        ("response/removed", SkeinRpcResponse::Heartbeat(Err(NodeError::Removed(4)))),
        ("response/internal", SkeinRpcResponse::Complete(Err(NodeError::Internal("rocksdb: io error".into())))),
    ]
}

#[test]
fn rpc_fixtures_of_0_1_0_decode_and_encode_alike() {
    let mut problems = Vec::new();
    for (name, request) in requests() {
        problems.extend(check(name, &request));
    }
    for (name, response) in responses() {
        problems.extend(check(name, &response));
    }
    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn every_rpc_has_a_fixture() {
    // A new RPC fails to compile here until it is named, and then this test
    // fails until `requests()` has a fixture of it.
    fn rpc(r: &SkeinRpcRequest) -> &'static str {
        match r {
            SkeinRpcRequest::AppendEntries { .. } => "append_entries",
            SkeinRpcRequest::Vote { .. } => "vote",
            SkeinRpcRequest::InstallSnapshot { .. } => "install_snapshot",
            SkeinRpcRequest::Write { .. } => "write",
            SkeinRpcRequest::Lease { .. } => "lease",
            SkeinRpcRequest::Heartbeat { .. } => "heartbeat",
            SkeinRpcRequest::Complete { .. } => "complete",
            SkeinRpcRequest::ReadIndex { .. } => "read_index",
            SkeinRpcRequest::Join { .. } => "join",
            SkeinRpcRequest::Leave { .. } => "leave",
            SkeinRpcRequest::NodeVersion { .. } => "node_version",
            SkeinRpcRequest::Campaign { .. } => "campaign",
            SkeinRpcRequest::WorkerRead { .. } => "worker_read",
            SkeinRpcRequest::Exchange { .. } => "exchange",
        }
    }
    let covered: BTreeSet<&str> = requests()
        .iter()
        .chain(&requests_of_0_2_0())
        .chain(&requests_of_0_5_0())
        .chain(&requests_of_0_6_0())
        .map(|(_, r)| rpc(r))
        .collect();
    assert_eq!(covered.len(), 14, "every RPC needs a request fixture; covered: {covered:?}");
}

/// The RPCs 0.2.0 added. A 0.1.0 node cannot decode them (it drops the
/// connection), which is how the leader tells a 0.1.0 member.
fn requests_of_0_2_0() -> Vec<(&'static str, SkeinRpcRequest)> {
    vec![("request/node_version", SkeinRpcRequest::NodeVersion {}), ("request/campaign", SkeinRpcRequest::Campaign {})]
}

#[test]
fn rpc_fixtures_of_0_2_0_decode_and_encode_alike() {
    let responses = vec![
        (
            "response/node_version",
            SkeinRpcResponse::NodeVersion(skein_transport::NodeVersion { release: "0.2.0".into(), format: 2 }),
        ),
        ("response/campaign", SkeinRpcResponse::Campaign(Ok(()))),
    ];
    let mut problems = Vec::new();
    for (name, request) in requests_of_0_2_0() {
        problems.extend(check_in("0.2.0", name, &request));
    }
    for (name, response) in responses {
        problems.extend(check_in("0.2.0", name, &response));
    }
    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}

/// The RPC 0.5.0 added: a worker node's reads. A 0.4.0 member cannot decode
/// it (it drops the connection): workers need members of 0.5.0 or later.
fn requests_of_0_5_0() -> Vec<(&'static str, SkeinRpcRequest)> {
    use skein_transport::{WorkerRead, WorkerReadRequest};
    let read = |read| SkeinRpcRequest::WorkerRead { req: WorkerReadRequest { node: 101, read } };
    vec![
        ("request/worker_read_plan", read(WorkerRead::Plan { entity_ref: "component:default/orders".into() })),
        ("request/worker_read_policy", read(WorkerRead::Policy)),
        ("request/worker_read_run", read(WorkerRead::Run { task: TaskId(7) })),
        ("request/worker_read_results", read(WorkerRead::Results { commit: TaskId(9) })),
    ]
}

#[test]
fn rpc_fixtures_of_0_5_0_decode_and_encode_alike() {
    use std::borrow::Cow;

    use skein_raft::format::v4;
    use skein_transport::{PartitionResult, RunInfo, WorkerAnswer};
    let policy = v4::Policy {
        enforce: true,
        programs: vec![v4::Rule {
            program: Cow::Borrowed("/usr/bin/python3"),
            args: Cow::Owned(vec!["/opt/migrate.py".into()]),
            created_ms: 1_764_000_000_000,
            created_by: Cow::Borrowed("admin"),
        }],
        roots: vec![v4::Root {
            url: Cow::Borrowed("file:///data/"),
            endpoint: None,
            region: None,
            credentials: v4::StoredCredentials::None,
            allow_http: false,
            created_ms: 1_764_000_000_000,
            created_by: Cow::Borrowed("admin"),
        }],
    };
    let responses = vec![
        (
            "response/worker_read_plan",
            SkeinRpcResponse::WorkerRead(Ok(WorkerAnswer::Plan {
                document: Some(r#"{"kind":"Component"}"#.into()),
                policy: policy.clone(),
            })),
        ),
        ("response/worker_read_policy", SkeinRpcResponse::WorkerRead(Ok(WorkerAnswer::Policy(policy)))),
        (
            "response/worker_read_run",
            SkeinRpcResponse::WorkerRead(Ok(WorkerAnswer::Run(RunInfo {
                key: Some("plan:component:default/orders#3".into()),
                priority: 0,
                max_batch: 10_000,
                max_depends_on: 1_000,
                planned: Some((200, 812)),
            }))),
        ),
        (
            "response/worker_read_results",
            SkeinRpcResponse::WorkerRead(Ok(WorkerAnswer::Results(vec![PartitionResult {
                task: TaskId(8),
                status: TaskStatus::Succeeded,
                result: Some(r#"{"partition":{}}"#.into()),
            }]))),
        ),
        ("response/worker_read_removed", SkeinRpcResponse::WorkerRead(Err(NodeError::Removed(101)))),
    ];
    let mut problems = Vec::new();
    for (name, request) in requests_of_0_5_0() {
        problems.extend(check_in("0.5.0", name, &request));
    }
    for (name, response) in responses {
        problems.extend(check_in("0.5.0", name, &response));
    }
    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}

/// The RPC 0.6.0 added: a worker's round (outcomes, renewals and its next
/// lease in one call). A 0.5.0 member drops the connection, and the worker
/// goes back to the separate calls.
fn requests_of_0_6_0() -> Vec<(&'static str, SkeinRpcRequest)> {
    use skein_transport::ExchangeRequest;
    let round = |held, max| ExchangeRequest {
        node: 101,
        slots: 4,
        completions: vec![Completion {
            task: TaskId(7),
            token: FencingToken(40),
            outcome: Outcome::Succeeded { result: r#"{"rows":10}"#.into() },
        }],
        held,
        queues: vec!["migrations".into()],
        max,
        wait_ms: 0,
    };
    vec![
        ("request/exchange", SkeinRpcRequest::Exchange { req: round(None, 1) }),
        (
            "request/exchange_renewing",
            SkeinRpcRequest::Exchange {
                req: round(Some(vec![HeldLease { task: TaskId(8), token: FencingToken(41), progress: None }]), 0),
            },
        ),
    ]
}

#[test]
fn rpc_fixtures_of_0_6_0_decode_and_encode_alike() {
    use skein_transport::ExchangeReply;
    let granted = Granted {
        task: TaskId(9),
        queue: "migrations".into(),
        kind: "migrate".into(),
        attempt: 1,
        token: FencingToken(42),
        expires_ms: 1_764_000_030_000,
    };
    let responses = vec![
        (
            "response/exchange",
            SkeinRpcResponse::Exchange(Ok(ExchangeReply {
                completed: Ok(vec![Ok(TaskStatus::Succeeded), Err(Rejection::UnknownTask(TaskId(3)))]),
                heartbeat: Some(Ok(HeartbeatAck {
                    renewed: vec![(TaskId(8), 1_764_000_030_000)],
                    revoked: vec![(TaskId(5), FencingToken(12))],
                    draining: false,
                })),
                leased: Ok(vec![LeasedTask {
                    grant: granted,
                    payload: r#"{"entity_ref":"component:default/orders"}"#.into(),
                }]),
            })),
        ),
        (
            "response/exchange_parts_failed",
            SkeinRpcResponse::Exchange(Ok(ExchangeReply {
                completed: Err(NodeError::Unavailable("no majority answered in time".into())),
                heartbeat: None,
                leased: Err(NodeError::Removed(101)),
            })),
        ),
    ];
    let mut problems = Vec::new();
    for (name, request) in requests_of_0_6_0() {
        problems.extend(check_in("0.6.0", name, &request));
    }
    for (name, response) in responses {
        problems.extend(check_in("0.6.0", name, &response));
    }
    assert!(problems.is_empty(), "{} compatibility problems:\n{}", problems.len(), problems.join("\n"));
}
