//! What a chaos run records, and what its checker reads: every client
//! operation with its invocation and completion times and its result, every
//! fault injected, every node's worker journal, and the final state.
//!
//! All of it is plain data (serde), written to the run's folder as JSON
//! lines, so a failed run can be re-checked and read by a person.

use serde::{Deserialize, Serialize};
use skein_raft::fsm::{Event, TaskStatus};

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer: it took effect.
    Ok,
    /// It certainly did not take effect (refused before sending, a 4xx).
    Failed,
    /// It may or may not have (a timeout, a 503, a broken connection).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum OpKind {
    /// `POST /api/v1/tasks` of `count` tasks; `key` for a single task with
    /// an idempotency key (`try_no` counts the tries of that key).
    Enqueue { count: usize, key: Option<String>, try_no: u32 },
    /// `GET /api/v1/tasks?queue=..&status=leased`.
    ListLeased,
    /// `GET /api/v1/tasks/{id}` of an acknowledged task.
    Read { task: u64 },
}

/// One client operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    /// The node it was sent to.
    pub node: u64,
    #[serde(flatten)]
    pub kind: OpKind,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// The task ids an enqueue was answered with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    pub fn is_write(&self) -> bool {
        matches!(self.kind, OpKind::Enqueue { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9, then a restart on the same data directory.
    Kill,
    /// SIGSTOP, then SIGCONT (a long GC-like stall).
    Pause,
    /// The leader cut from every other node, both ways.
    PartitionLeader,
    /// A minority cut from the majority, both ways.
    IsolateMinority,
    /// Everything one node sends is dropped; it still hears the others.
    OneWayCut,
    /// Not the nemesis's: a graceful stop (SIGTERM: the node drains), then
    /// a restart on the same data directory with another release's binary
    /// (`chaos::upgrade`; an upgrade or, going back, a downgrade).
    Upgrade,
}

impl FaultKind {
    /// The nemesis's kinds (every one of them happens in a chaos run).
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::PartitionLeader,
        FaultKind::IsolateMinority,
        FaultKind::OneWayCut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9 + restart",
            FaultKind::Pause => "SIGSTOP/SIGCONT",
            FaultKind::PartitionLeader => "partition: leader cut off",
            FaultKind::IsolateMinority => "partition: minority isolated",
            FaultKind::OneWayCut => "one-way cut",
            FaultKind::Upgrade => "upgrade: SIGTERM + another binary",
        }
    }
}

/// One fault, from injection to heal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// The nodes it hit (killed, paused, or on the cut-off side).
    pub nodes: Vec<u64>,
    /// The leader (as the harness saw it just before) was among them.
    pub leader_hit: bool,
    pub start_ms: u64,
    /// When it was healed (restart, SIGCONT, links restored).
    pub end_ms: u64,
}

/// One line of a node's worker journal (see `node/src/journal.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalLine {
    pub ev: String,
    pub node: u64,
    pub task: u64,
    pub token: u64,
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub ms: u64,
}

impl JournalLine {
    /// The node's worker was told its success was recorded.
    pub fn is_commit(&self) -> bool {
        self.ev == "accepted" && self.outcome.as_deref() == Some("succeeded")
    }
}

/// A task as the cluster ended up with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalTask {
    pub id: u64,
    pub status: TaskStatus,
    pub key: Option<String>,
    /// Its recorded history (each event stamped by the leader's clock).
    pub history: Vec<Event>,
}

/// One node's state-machine digest at an applied index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDigest {
    pub node: u64,
    pub applied_index: Option<u64>,
    pub digest: String,
}

/// Everything the checker reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// The worker nodes (outside Raft) of the run, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<u64>,
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    pub journal: Vec<JournalLine>,
    pub tasks: Vec<FinalTask>,
    /// The final digests, one per node.
    pub digests: Vec<NodeDigest>,
    /// The chaos queue's lease time.
    pub lease_ms: u64,
    /// How long past its lease time a dead node's lease may still stand
    /// (the sweep's tick, an election, a restart's hand-back).
    pub dead_lease_slack_ms: u64,
    /// When the workload started and stopped (harness clock).
    pub workload_start_ms: u64,
    pub workload_end_ms: u64,
}
