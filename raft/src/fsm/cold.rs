//! The part of a task that scheduling never reads: its payload, its result and
//! its history. Applying a command *writes* these through a [`ColdSink`] and
//! never reads them back, so `apply` stays a pure function of the in-memory
//! state and the command; the storage layer puts them on disk (RocksDB) in
//! the same write as the applied index, and a test keeps them in a map.

use std::collections::BTreeMap;

use super::auth::AuditRecord;
use super::types::{Event, TaskId};

/// Where `apply` puts what it does not keep in memory. Every write is a pure
/// function of the command and the state, so replaying a log entry writes
/// the same values again: the writes are idempotent.
pub trait ColdSink {
    fn put_payload(&mut self, task: TaskId, payload: &str);
    fn put_result(&mut self, task: TaskId, result: &str);
    fn put_event(&mut self, task: TaskId, seq: u32, event: &Event);
    fn delete_event(&mut self, task: TaskId, seq: u32);
    /// The task was forgotten (garbage-collected): drop all it left.
    fn forget_task(&mut self, task: TaskId, history_len: u32);
    /// Format 3: one audit record, by sequence number.
    fn put_audit(&mut self, seq: u64, record: &AuditRecord);
    /// Drops the audit records `from..to` (retention).
    fn delete_audit(&mut self, from: u64, to: u64);
}

/// A sink that drops everything, for callers that only need the state.
pub struct DiscardCold;

impl ColdSink for DiscardCold {
    fn put_payload(&mut self, _: TaskId, _: &str) {}
    fn put_result(&mut self, _: TaskId, _: &str) {}
    fn put_event(&mut self, _: TaskId, _: u32, _: &Event) {}
    fn delete_event(&mut self, _: TaskId, _: u32) {}
    fn forget_task(&mut self, _: TaskId, _: u32) {}
    fn put_audit(&mut self, _: u64, _: &AuditRecord) {}
    fn delete_audit(&mut self, _: u64, _: u64) {}
}

/// An in-memory cold store, for tests and the reference model.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemCold {
    pub payloads: BTreeMap<TaskId, String>,
    pub results: BTreeMap<TaskId, String>,
    pub events: BTreeMap<(TaskId, u32), Event>,
    pub audit: BTreeMap<u64, AuditRecord>,
}

impl MemCold {
    /// A task's history, oldest first.
    pub fn history(&self, task: TaskId) -> Vec<Event> {
        self.events.range((task, 0)..=(task, u32::MAX)).map(|(_, e)| e.clone()).collect()
    }
}

impl ColdSink for MemCold {
    fn put_payload(&mut self, task: TaskId, payload: &str) {
        self.payloads.insert(task, payload.to_string());
    }
    fn put_result(&mut self, task: TaskId, result: &str) {
        self.results.insert(task, result.to_string());
    }
    fn put_event(&mut self, task: TaskId, seq: u32, event: &Event) {
        self.events.insert((task, seq), event.clone());
    }
    fn delete_event(&mut self, task: TaskId, seq: u32) {
        self.events.remove(&(task, seq));
    }
    fn forget_task(&mut self, task: TaskId, _history_len: u32) {
        self.payloads.remove(&task);
        self.results.remove(&task);
        self.events.retain(|(t, _), _| *t != task);
    }
    fn put_audit(&mut self, seq: u64, record: &AuditRecord) {
        self.audit.insert(seq, record.clone());
    }
    fn delete_audit(&mut self, from: u64, to: u64) {
        self.audit.retain(|seq, _| !(from..to).contains(seq));
    }
}
