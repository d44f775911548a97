//! The replicated state machine: pure and deterministic.
//!
//! `apply(state, stamped command) -> response` reads no clock, no randomness,
//! no environment and no I/O; time comes in as the `now_ms` the leader stamped
//! on the command. Same log, same state, on every replica. Only std and serde
//! are used here, so this module and its tests build in seconds.
//!
//! - [`types`]: tasks, queues, nodes, leases, history events;
//! - [`command`]: the commands the log carries, their responses and rejections;
//! - [`state`]: the replicated core and the indexes derived from it;
//! - [`apply`](self::apply): what each command does;
//! - [`query`]: read-only views for the API and the scheduler;
//! - [`cold`]: where payloads, results and history go (not memory);
//! - [`auth`]: tokens, roles, owners and the audit trail;
//! - [`policy`]: the programs `exec` may run and the data roots plans may touch;
//! - [`catalog`]: the plan catalog (Backstage entities) and running plans;
//! - `taskmap`: the tasks by id, in a dense chunked table.

mod apply;
pub mod auth;
pub mod catalog;
pub mod cold;
pub mod command;
pub mod policy;
pub mod query;
pub(crate) mod state;
pub(crate) mod taskmap;
pub mod types;

#[cfg(test)]
mod tests;

pub use apply::{NewEpoch, EPOCH_SHIFT};
pub use auth::{AuditRecord, Caller, NewToken, Role, TokenRecord};
pub use catalog::{AppliedEntity, CatalogEntry, NewEntity, PlanRun};
pub use cold::{ColdSink, DiscardCold, MemCold};
pub use command::{
    Command, Completion, Enqueued, Granted, HeartbeatAck, HeldLease, NewTask, Outcome, Rejection, ReportedProgress,
    Response, Stamped, TaskRef,
};
pub use query::{QueueStats, SilentNode, StuckReason, StuckReport, StuckTask, TaskPage};
pub use state::StateMachine;
pub use types::{
    Event, EventKind, FencingToken, Lease, Limits, NodeId, NodeInfo, Progress, Queue, QueueConfig, QueuePatch, Task,
    TaskId, TaskStatus,
};
