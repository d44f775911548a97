//! Format 1 (release 0.1.0), frozen: the shapes of the state a version-3
//! snapshot holds, and of the history events the cold store keeps.
//!
//! Nothing here may change, ever: these structs are what 0.1.0 wrote, field
//! for field, in bincode's positional encoding. The fixtures in
//! `raft/tests/fixtures/0.1.0/` prove it. The state machine's own types
//! (`crate::fsm`) are free to change; when one does, its conversion below
//! changes with it (an added field gets its default on the way in, and is
//! left out on the way out until the cluster finalizes a format that stores
//! it).
//!
//! Each struct borrows from the state machine when encoding (`Cow::Borrowed`,
//! so a snapshot of a million tasks copies no strings) and owns what it
//! decodes. Ids (`TaskId`, `FencingToken`, `NodeId`) are shared with the
//! state machine: they are bare integers on the wire, and always will be.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fsm::catalog as domain_catalog;
use crate::fsm::state::Core;
use crate::fsm::taskmap::TaskMap;
use crate::fsm::types as domain;
use crate::fsm::types::{FencingToken, NodeId, TaskId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    Pending,
    Blocked,
    Leased,
    Succeeded,
    Dead,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: NodeId,
    pub token: FencingToken,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress<'a> {
    pub fraction: f32,
    pub message: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task<'a> {
    pub id: TaskId,
    pub queue: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub priority: i32,
    pub status: TaskStatus,
    pub attempt: u32,
    pub max_attempts: u32,
    pub not_before_ms: u64,
    pub idempotency_key: Option<Cow<'a, str>>,
    pub depends_on: Cow<'a, [TaskId]>,
    pub lease: Option<Lease>,
    pub last_node: Option<NodeId>,
    pub progress: Option<Progress<'a>>,
    pub last_error: Option<Cow<'a, str>>,
    pub expiry_streak: u32,
    pub payload_bytes: u32,
    pub created_ms: u64,
    pub first_started_ms: Option<u64>,
    pub last_started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub history_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub lease_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub concurrency: u32,
    pub max_depth: u64,
    pub retention_ms: u64,
    pub stuck_expiries: u32,
    pub stuck_run_ms: u64,
    pub stuck_factor: u32,
    pub stuck_silence_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue<'a> {
    pub name: Cow<'a, str>,
    pub config: QueueConfig,
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub slots: u32,
    pub draining: bool,
    pub last_heartbeat_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_payload_bytes: u32,
    pub max_batch: u32,
    pub max_history_per_task: u32,
    pub max_error_bytes: u32,
    pub max_name_bytes: u32,
    pub max_queues: u32,
    pub max_depends_on: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEntity<'a> {
    pub entity_ref: Cow<'a, str>,
    pub is_plan: bool,
    pub queue: Option<Cow<'a, str>>,
    pub owner: Option<Cow<'a, str>>,
    pub labels: Cow<'a, BTreeMap<String, String>>,
    pub depends_on: Cow<'a, [String]>,
    pub document: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry<'a> {
    pub entity: NewEntity<'a>,
    pub revision: u64,
    pub generation: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<'a> {
    pub at_ms: u64,
    pub node: Option<NodeId>,
    pub token: Option<FencingToken>,
    pub what: EventKind<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind<'a> {
    Enqueued {
        status: TaskStatus,
    },
    Unblocked,
    Leased {
        attempt: u32,
    },
    Succeeded,
    Failed {
        error: Cow<'a, str>,
        retry_at_ms: u64,
    },
    Expired {
        retry_at_ms: u64,
    },
    Dead {
        error: Cow<'a, str>,
    },
    Cancelled {
        reason: Cow<'a, str>,
    },
    Retried,
    Released {
        retry_at_ms: u64,
    },
    /// Appended by format 3 (0.3.0), which alone writes it: formats 1 and 2
    /// never did, so their records decode unchanged.
    Requested {
        by: Cow<'a, str>,
        action: Cow<'a, str>,
    },
}

// ---- the state machine's core: a version-3 snapshot's state ----

/// Encodes the core as format 1 wrote it, borrowing every string.
pub(crate) struct CoreOut<'a>(pub &'a Core);

/// Serializes a map's entries through a conversion, without building the
/// converted map.
struct MapOf<'a, K, V, F>(&'a BTreeMap<K, V>, F);

impl<'a, K: Serialize, V, W: Serialize, F: Fn(&'a V) -> W> Serialize for MapOf<'a, K, V, F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &(self.1)(v))?;
        }
        map.end()
    }
}

struct TasksOut<'a>(&'a TaskMap);

impl Serialize for TasksOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, t) in self.0.iter() {
            map.serialize_entry(id, &Task::from(t))?;
        }
        map.end()
    }
}

impl Serialize for CoreOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut st = s.serialize_struct("Core", 10)?;
        st.serialize_field("clock_ms", &c.clock_ms)?;
        st.serialize_field("next_task_id", &c.next_task_id)?;
        st.serialize_field("next_token", &c.next_token)?;
        st.serialize_field("limits", &Limits::from(&c.limits))?;
        st.serialize_field("queues", &MapOf(&c.queues, Queue::from))?;
        st.serialize_field("nodes", &MapOf(&c.nodes, NodeInfo::from))?;
        st.serialize_field("tasks", &TasksOut(&c.tasks))?;
        st.serialize_field("keys", &c.keys)?;
        st.serialize_field("catalog", &MapOf(&c.catalog, CatalogEntry::from))?;
        st.serialize_field("removed", &c.removed)?;
        st.end()
    }
}

/// Decodes a core as format 1 wrote it. Tasks are converted one by one as
/// they are read, so loading a large snapshot holds one copy of them.
#[derive(Deserialize)]
pub(crate) struct CoreIn {
    clock_ms: u64,
    next_task_id: u64,
    next_token: u64,
    limits: Limits,
    queues: BTreeMap<String, Queue<'static>>,
    nodes: BTreeMap<NodeId, NodeInfo>,
    tasks: TasksIn,
    keys: BTreeMap<Arc<str>, TaskId>,
    catalog: BTreeMap<String, CatalogEntry<'static>>,
    removed: BTreeSet<NodeId>,
}

struct TasksIn(TaskMap);

impl<'de> Deserialize<'de> for TasksIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TasksIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of task id to task")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<TasksIn, A::Error> {
                let mut map = TaskMap::new();
                while let Some((id, task)) = access.next_entry::<TaskId, Task<'static>>()? {
                    let mut task = domain::Task::from(task);
                    // The key is the truth.
                    task.id = id;
                    map.insert(id, task);
                }
                Ok(TasksIn(map))
            }
        }
        d.deserialize_map(V)
    }
}

impl CoreIn {
    /// The state machine's core; its format is 1 (format 1 has no field
    /// for it: a version-3 snapshot is always format 1).
    pub(crate) fn into_core(self) -> Core {
        Core {
            clock_ms: self.clock_ms,
            next_task_id: self.next_task_id,
            next_token: self.next_token,
            limits: self.limits.into(),
            queues: self.queues.into_iter().map(|(name, q)| (Arc::from(name), q.into())).collect(),
            nodes: self.nodes.into_iter().map(|(id, n)| (id, n.into())).collect(),
            tasks: self.tasks.0,
            keys: self.keys,
            catalog: self.catalog.into_iter().map(|(r, e)| (r, e.into())).collect(),
            removed: self.removed,
            format: Default::default(),
            auth: Default::default(),
            policy: Default::default(),
        }
    }
}

// ---- conversions: state machine -> format 1 (borrowing) ----

impl From<domain::TaskStatus> for TaskStatus {
    fn from(s: domain::TaskStatus) -> Self {
        match s {
            domain::TaskStatus::Pending => TaskStatus::Pending,
            domain::TaskStatus::Blocked => TaskStatus::Blocked,
            domain::TaskStatus::Leased => TaskStatus::Leased,
            domain::TaskStatus::Succeeded => TaskStatus::Succeeded,
            domain::TaskStatus::Dead => TaskStatus::Dead,
            domain::TaskStatus::Cancelled => TaskStatus::Cancelled,
        }
    }
}

impl From<&domain::Lease> for Lease {
    fn from(l: &domain::Lease) -> Self {
        Lease { node: l.node, token: l.token, expires_ms: l.expires_ms }
    }
}

impl<'a> From<&'a domain::Task> for Task<'a> {
    fn from(t: &'a domain::Task) -> Self {
        Task {
            id: t.id,
            queue: Cow::Borrowed(&t.queue),
            kind: Cow::Borrowed(&t.kind),
            priority: t.priority,
            status: t.status.into(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            not_before_ms: t.not_before_ms,
            idempotency_key: t.idempotency_key.as_deref().map(Cow::Borrowed),
            depends_on: Cow::Borrowed(&t.depends_on),
            lease: t.lease.as_ref().map(Lease::from),
            last_node: t.last_node,
            progress: t
                .progress
                .as_ref()
                .map(|p| Progress { fraction: p.fraction, message: Cow::Borrowed(&p.message) }),
            last_error: t.last_error.as_deref().map(Cow::Borrowed),
            expiry_streak: t.expiry_streak,
            payload_bytes: t.payload_bytes,
            created_ms: t.created_ms,
            first_started_ms: t.first_started_ms,
            last_started_ms: t.last_started_ms,
            finished_ms: t.finished_ms,
            history_len: t.history_len,
        }
    }
}

impl From<&domain::QueueConfig> for QueueConfig {
    fn from(c: &domain::QueueConfig) -> Self {
        QueueConfig {
            lease_ms: c.lease_ms,
            max_attempts: c.max_attempts,
            backoff_base_ms: c.backoff_base_ms,
            backoff_cap_ms: c.backoff_cap_ms,
            concurrency: c.concurrency,
            max_depth: c.max_depth,
            retention_ms: c.retention_ms,
            stuck_expiries: c.stuck_expiries,
            stuck_run_ms: c.stuck_run_ms,
            stuck_factor: c.stuck_factor,
            stuck_silence_ms: c.stuck_silence_ms,
        }
    }
}

impl<'a> From<&'a domain::Queue> for Queue<'a> {
    fn from(q: &'a domain::Queue) -> Self {
        Queue { name: Cow::Borrowed(&q.name), config: (&q.config).into(), paused: q.paused }
    }
}

impl From<&domain::NodeInfo> for NodeInfo {
    fn from(n: &domain::NodeInfo) -> Self {
        NodeInfo { id: n.id, slots: n.slots, draining: n.draining, last_heartbeat_ms: n.last_heartbeat_ms }
    }
}

impl From<&domain::Limits> for Limits {
    fn from(l: &domain::Limits) -> Self {
        Limits {
            max_payload_bytes: l.max_payload_bytes,
            max_batch: l.max_batch,
            max_history_per_task: l.max_history_per_task,
            max_error_bytes: l.max_error_bytes,
            max_name_bytes: l.max_name_bytes,
            max_queues: l.max_queues,
            max_depends_on: l.max_depends_on,
        }
    }
}

impl<'a> From<&'a domain_catalog::CatalogEntry> for CatalogEntry<'a> {
    fn from(e: &'a domain_catalog::CatalogEntry) -> Self {
        let n = &e.entity;
        CatalogEntry {
            entity: NewEntity {
                entity_ref: Cow::Borrowed(&n.entity_ref),
                is_plan: n.is_plan,
                queue: n.queue.as_deref().map(Cow::Borrowed),
                owner: n.owner.as_deref().map(Cow::Borrowed),
                labels: Cow::Borrowed(&n.labels),
                depends_on: Cow::Borrowed(&n.depends_on),
                document: Cow::Borrowed(&n.document),
            },
            revision: e.revision,
            generation: e.generation,
            created_ms: e.created_ms,
            updated_ms: e.updated_ms,
        }
    }
}

impl<'a> From<&'a domain::Event> for Event<'a> {
    fn from(e: &'a domain::Event) -> Self {
        use domain::EventKind as K;
        let what = match &e.what {
            K::Enqueued { status } => EventKind::Enqueued { status: (*status).into() },
            K::Unblocked => EventKind::Unblocked,
            K::Leased { attempt } => EventKind::Leased { attempt: *attempt },
            K::Succeeded => EventKind::Succeeded,
            K::Failed { error, retry_at_ms } => {
                EventKind::Failed { error: Cow::Borrowed(error), retry_at_ms: *retry_at_ms }
            }
            K::Expired { retry_at_ms } => EventKind::Expired { retry_at_ms: *retry_at_ms },
            K::Dead { error } => EventKind::Dead { error: Cow::Borrowed(error) },
            K::Cancelled { reason } => EventKind::Cancelled { reason: Cow::Borrowed(reason) },
            K::Retried => EventKind::Retried,
            K::Released { retry_at_ms } => EventKind::Released { retry_at_ms: *retry_at_ms },
            K::Requested { by, action } => {
                EventKind::Requested { by: Cow::Borrowed(by), action: Cow::Borrowed(action) }
            }
        };
        Event { at_ms: e.at_ms, node: e.node, token: e.token, what }
    }
}

// ---- conversions: format 1 -> state machine (owning) ----

impl From<TaskStatus> for domain::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Pending => domain::TaskStatus::Pending,
            TaskStatus::Blocked => domain::TaskStatus::Blocked,
            TaskStatus::Leased => domain::TaskStatus::Leased,
            TaskStatus::Succeeded => domain::TaskStatus::Succeeded,
            TaskStatus::Dead => domain::TaskStatus::Dead,
            TaskStatus::Cancelled => domain::TaskStatus::Cancelled,
        }
    }
}

impl From<Lease> for domain::Lease {
    fn from(l: Lease) -> Self {
        domain::Lease { node: l.node, token: l.token, expires_ms: l.expires_ms }
    }
}

impl From<Task<'_>> for domain::Task {
    fn from(t: Task<'_>) -> Self {
        domain::Task {
            id: t.id,
            queue: Arc::from(t.queue),
            kind: Arc::from(t.kind),
            priority: t.priority,
            status: t.status.into(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            not_before_ms: t.not_before_ms,
            idempotency_key: t.idempotency_key.map(Arc::from),
            depends_on: t.depends_on.into_owned(),
            lease: t.lease.map(Into::into),
            last_node: t.last_node,
            progress: t.progress.map(|p| domain::Progress { fraction: p.fraction, message: p.message.into_owned() }),
            last_error: t.last_error.map(Cow::into_owned),
            expiry_streak: t.expiry_streak,
            payload_bytes: t.payload_bytes,
            created_ms: t.created_ms,
            first_started_ms: t.first_started_ms,
            last_started_ms: t.last_started_ms,
            finished_ms: t.finished_ms,
            history_len: t.history_len,
        }
    }
}

impl From<QueueConfig> for domain::QueueConfig {
    fn from(c: QueueConfig) -> Self {
        domain::QueueConfig {
            lease_ms: c.lease_ms,
            max_attempts: c.max_attempts,
            backoff_base_ms: c.backoff_base_ms,
            backoff_cap_ms: c.backoff_cap_ms,
            concurrency: c.concurrency,
            max_depth: c.max_depth,
            retention_ms: c.retention_ms,
            stuck_expiries: c.stuck_expiries,
            stuck_run_ms: c.stuck_run_ms,
            stuck_factor: c.stuck_factor,
            stuck_silence_ms: c.stuck_silence_ms,
        }
    }
}

impl From<Queue<'_>> for domain::Queue {
    fn from(q: Queue<'_>) -> Self {
        domain::Queue { name: Arc::from(q.name), config: q.config.into(), paused: q.paused }
    }
}

impl From<NodeInfo> for domain::NodeInfo {
    fn from(n: NodeInfo) -> Self {
        domain::NodeInfo { id: n.id, slots: n.slots, draining: n.draining, last_heartbeat_ms: n.last_heartbeat_ms }
    }
}

impl From<Limits> for domain::Limits {
    fn from(l: Limits) -> Self {
        domain::Limits {
            max_payload_bytes: l.max_payload_bytes,
            max_batch: l.max_batch,
            max_history_per_task: l.max_history_per_task,
            max_error_bytes: l.max_error_bytes,
            max_name_bytes: l.max_name_bytes,
            max_queues: l.max_queues,
            max_depends_on: l.max_depends_on,
        }
    }
}

impl From<CatalogEntry<'_>> for domain_catalog::CatalogEntry {
    fn from(e: CatalogEntry<'_>) -> Self {
        let n = e.entity;
        domain_catalog::CatalogEntry {
            entity: domain_catalog::NewEntity {
                entity_ref: n.entity_ref.into_owned(),
                is_plan: n.is_plan,
                queue: n.queue.map(Cow::into_owned),
                owner: n.owner.map(Cow::into_owned),
                labels: n.labels.into_owned(),
                depends_on: n.depends_on.into_owned(),
                document: n.document.into_owned(),
            },
            revision: e.revision,
            generation: e.generation,
            created_ms: e.created_ms,
            updated_ms: e.updated_ms,
        }
    }
}

impl From<Event<'_>> for domain::Event {
    fn from(e: Event<'_>) -> Self {
        use domain::EventKind as K;
        let what = match e.what {
            EventKind::Enqueued { status } => K::Enqueued { status: status.into() },
            EventKind::Unblocked => K::Unblocked,
            EventKind::Leased { attempt } => K::Leased { attempt },
            EventKind::Succeeded => K::Succeeded,
            EventKind::Failed { error, retry_at_ms } => K::Failed { error: error.into_owned(), retry_at_ms },
            EventKind::Expired { retry_at_ms } => K::Expired { retry_at_ms },
            EventKind::Dead { error } => K::Dead { error: error.into_owned() },
            EventKind::Cancelled { reason } => K::Cancelled { reason: reason.into_owned() },
            EventKind::Retried => K::Retried,
            EventKind::Released { retry_at_ms } => K::Released { retry_at_ms },
            EventKind::Requested { by, action } => K::Requested { by: by.into_owned(), action: action.into_owned() },
        };
        domain::Event { at_ms: e.at_ms, node: e.node, token: e.token, what }
    }
}
