//! The values the state machine keeps: tasks, queues, nodes, leases and the
//! events of a task's history.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A task's identifier, assigned by the state machine in enqueue order, so a
/// smaller id is an older task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A cluster member's identifier (the openraft node id).
pub type NodeId = u64;

/// The fencing token of one lease. Tokens only grow: every lease the state
/// machine grants takes the next one, so a token names one lease of one
/// task for ever, and any token older than a task's current lease is stale.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a task is in its life. See ARCHITECTURE.md for the transitions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be leased (possibly not before `not_before_ms`, after a
    /// delay or a backoff).
    Pending,
    /// Waiting for its dependencies to succeed.
    Blocked,
    /// Held by a node under a fenced lease.
    Leased,
    /// Done; its result is stored.
    Succeeded,
    /// Failed permanently or ran out of attempts.
    Dead,
    /// Cancelled by request, or because a dependency ended without success.
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Blocked,
        TaskStatus::Leased,
        TaskStatus::Succeeded,
        TaskStatus::Dead,
        TaskStatus::Cancelled,
    ];

    /// A terminal task no longer changes unless a user retries it.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Leased => "leased",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!("unknown status {s:?} (one of pending, blocked, leased, succeeded, dead, cancelled)")
        })
    }
}

/// A live lease: which node holds the task, under which token, until when.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: NodeId,
    pub token: FencingToken,
    pub expires_ms: u64,
}

/// The last progress a worker reported for a leased task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Fraction done, 0.0 to 1.0 (clamped on the way in).
    pub fraction: f32,
    pub message: String,
}

/// Everything scheduling needs to know about a task. The payload, the result
/// and the history are kept out of memory (see [`crate::fsm::ColdSink`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    /// Shared with the queue's own name: one allocation per queue, not per task.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub queue: Arc<str>,
    /// The transform to run (`noop`, `sleep`, `exec`, `migration`, ...).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: Arc<str>,
    /// Higher runs first.
    pub priority: i32,
    pub status: TaskStatus,
    /// How many times the task has been leased (started).
    pub attempt: u32,
    pub max_attempts: u32,
    /// Not leased before this time (delay on enqueue, backoff after failure).
    pub not_before_ms: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub idempotency_key: Option<Arc<str>>,
    pub depends_on: Vec<TaskId>,
    pub lease: Option<Lease>,
    /// The node that last leased the task (still set once it ended), so a
    /// status table can say where each dataset ran.
    pub last_node: Option<NodeId>,
    pub progress: Option<Progress>,
    /// The last error, shortened to [`Limits::max_error_bytes`]; the whole
    /// message is in the history.
    pub last_error: Option<String>,
    /// Leases that expired one after another, with no completion between:
    /// the sign of a task that kills or hangs its workers.
    pub expiry_streak: u32,
    pub payload_bytes: u32,
    pub created_ms: u64,
    pub first_started_ms: Option<u64>,
    pub last_started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Number of history events ever written; the newest has `history_len - 1`.
    pub history_len: u32,
}

/// Declares every queue setting once: [`QueueConfig`] (the settings),
/// its defaults, [`QueuePatch`] (a change to some of them), the validation
/// ([`QueueConfig::validate`], [`QueueConfig::patch`]) and [`QUEUE_SETTINGS`],
/// the table the CLI builds its `skein queue set` flags and its `skein queue
/// show` rendering from. The node's `PATCH /api/v1/queues/{name}` body is a
/// [`QueuePatch`] as JSON.
///
/// Each entry: the field's doc comment (for the code), its name (the field,
/// the JSON key, and the flag with `-` for `_`), its type (`u32` or `u64`:
/// see [`SettingValue`]), then its default, its unit, the flag's value name
/// and help text, and optionally a check on the whole patched configuration
/// (checks run in declaration order; the first that fails rejects the
/// change with its message).
///
/// **A new setting is a stored-format change.** [`QueuePatch`] is also what
/// the log's `Command::ConfigureQueue` carries (positional bincode, format 1:
/// these eleven fields in this order), and snapshots store a queue's settings
/// through the frozen `format::v1::QueueConfig`. So adding an entry here
/// breaks the 0.1.0 fixtures in `raft/tests/compat.rs`, as it should; see
/// ARCHITECTURE.md, "Adding a field": the log needs a new command variant
/// (with this shape frozen for the old one) and the snapshot a new format.
/// Never reorder, rename or remove an entry.
macro_rules! queue_settings {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty {
            default: $default:expr,
            unit: $unit:ident,
            value_name: $value_name:literal,
            help: $help:literal,
            $(check: |$c:ident| $ok:expr => $msg:literal,)?
        }
    )*) => {
        /// A queue's settings. Every queue is created on first use with the
        /// defaults. Declared by `queue_settings!`.
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct QueueConfig {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for QueueConfig {
            fn default() -> Self {
                QueueConfig { $( $name: $default, )* }
            }
        }

        /// A change to some of a queue's settings; `None` leaves one as it is.
        /// The body of `PATCH /api/v1/queues/{name}` (unknown keys refused),
        /// and what the log's `Command::ConfigureQueue` carries.
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct QueuePatch {
            $( $(#[doc = $doc])* pub $name: Option<$ty>, )*
        }

        /// Every queue setting, in declaration order.
        pub const QUEUE_SETTINGS: &[QueueSetting] = &[
            $(
                QueueSetting {
                    name: stringify!($name),
                    ty: <$ty as SettingValue>::TYPE,
                    unit: SettingUnit::$unit,
                    default: {
                        let v: $ty = $default;
                        v as u64
                    },
                    value_name: $value_name,
                    help: $help,
                },
            )*
        ];

        impl QueueConfig {
            /// Checks the settings together: the first failed check's message.
            pub fn validate(&self) -> Result<(), String> {
                $($(
                    let $c = self;
                    if !($ok) {
                        return Err($msg.to_string());
                    }
                )?)*
                Ok(())
            }

            /// Applies `patch` and validates the result; on an error the
            /// settings are left as they were.
            pub fn patch(&mut self, patch: &QueuePatch) -> Result<(), String> {
                let mut next = self.clone();
                $(
                    if let Some(v) = patch.$name {
                        next.$name = v;
                    }
                )*
                next.validate()?;
                *self = next;
                Ok(())
            }

            /// The value of the setting named `name` (see [`QUEUE_SETTINGS`]).
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $( stringify!($name) => Some(u64::from(self.$name)), )*
                    _ => None,
                }
            }
        }

        impl QueuePatch {
            /// Sets the setting named `name`; refuses an unknown name or a
            /// value its type cannot hold.
            pub fn set(&mut self, name: &str, value: u64) -> Result<(), String> {
                match name {
                    $(
                        stringify!($name) => {
                            let v = <$ty>::try_from(value)
                                .map_err(|_| format!("{value} is too large for the queue setting {name}"))?;
                            self.$name = Some(v);
                        }
                    )*
                    _ => return Err(format!("unknown queue setting {name:?}")),
                }
                Ok(())
            }

            /// True when it changes nothing.
            pub fn is_empty(&self) -> bool {
                true $( && self.$name.is_none() )*
            }
        }
    };
}

queue_settings! {
    /// How long a lease lasts without a heartbeat.
    lease_ms: u64 {
        default: 30_000,
        unit: Millis,
        value_name: "MS",
        help: "How long a lease lasts without a heartbeat, in milliseconds",
        check: |c| c.lease_ms >= 100 => "lease_ms must be at least 100",
    }
    /// Attempts before a failing task is dead (a task's own `max_attempts`
    /// overrides it).
    max_attempts: u32 {
        default: 5,
        unit: Count,
        value_name: "N",
        help: "Attempts before a failing task is dead",
        check: |c| c.max_attempts >= 1 => "max_attempts must be at least 1",
    }
    /// Backoff after the n-th failure: `min(cap, base * 2^(n-1))`.
    backoff_base_ms: u64 {
        default: 1_000,
        unit: Millis,
        value_name: "MS",
        help: "Backoff after the n-th failure is min(cap, base * 2^(n-1)): the base, in ms",
        check: |c| c.backoff_base_ms <= c.backoff_cap_ms => "backoff_base_ms must not exceed backoff_cap_ms",
    }
    /// The backoff's cap.
    backoff_cap_ms: u64 {
        default: 300_000,
        unit: Millis,
        value_name: "MS",
        help: "The backoff's cap, in milliseconds",
    }
    /// At most this many tasks of the queue leased at once (0: no cap).
    concurrency: u32 {
        default: 0,
        unit: Count,
        value_name: "N",
        help: "At most this many of the queue's tasks leased at once (0: no cap)",
    }
    /// At most this many tasks not yet ended (pending, blocked, leased).
    max_depth: u64 {
        default: 5_000_000,
        unit: Count,
        value_name: "N",
        help: "At most this many tasks not yet ended; enqueue beyond it is refused",
    }
    /// Ended tasks are forgotten this long after they ended (0: kept).
    retention_ms: u64 {
        default: 7 * 24 * 3600 * 1000,
        unit: Millis,
        value_name: "MS",
        help: "Forget ended tasks this long after they ended, in ms (0: keep them)",
    }
    /// Stuck: a task whose lease expired this many times in a row (0: never).
    stuck_expiries: u32 {
        default: 3,
        unit: Count,
        value_name: "K",
        help: "Stuck: leases that expired this many times in a row (0: off) [default: 3]",
    }
    /// Stuck: a task whose current attempt has run longer than this (0: no
    /// fixed limit).
    stuck_run_ms: u64 {
        default: 0,
        unit: Millis,
        value_name: "MS",
        help: "Stuck: an attempt running longer than this, in ms (0: no limit) [default: 0]",
    }
    /// Stuck: a task whose current attempt has run more than this many times
    /// the queue's typical (median) duration (0: off). See `StateMachine::stuck`.
    stuck_factor: u32 {
        default: 10,
        unit: Count,
        value_name: "N",
        help: "Stuck: an attempt running over this many times the queue's median success \
               (and at least a minute) (0: off) [default: 10]",
    }
    /// Stuck: a task leased to a node that has sent no heartbeat for this
    /// long (0: off).
    stuck_silence_ms: u64 {
        default: 10_000,
        unit: Millis,
        value_name: "MS",
        help: "Stuck: a lease whose node sent no heartbeat for this long, in ms (0: off) [default: 10000]",
    }
}

/// One row of [`QUEUE_SETTINGS`]: what a client needs to offer, parse and
/// show a queue setting without naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSetting {
    /// The field of [`QueueConfig`] and [`QueuePatch`], the key in their
    /// JSON, and (with `-` for `_`) the flag of `skein queue set`.
    pub name: &'static str,
    /// The value's type.
    pub ty: SettingType,
    /// How to read the value.
    pub unit: SettingUnit,
    /// [`QueueConfig::default`]'s value.
    pub default: u64,
    /// The flag's value name (`MS`, `N`, `K`).
    pub value_name: &'static str,
    /// The flag's help text (one line, no final period).
    pub help: &'static str,
}

/// The type of a setting's value (every setting is an unsigned integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingType {
    U32,
    U64,
}

/// What a setting's number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingUnit {
    /// A duration in milliseconds.
    Millis,
    /// A count (of attempts, tasks, expiries; or a factor).
    Count,
}

/// A type a queue setting may have.
pub trait SettingValue: Copy + Into<u64> + TryFrom<u64> {
    const TYPE: SettingType;
}

impl SettingValue for u32 {
    const TYPE: SettingType = SettingType::U32;
}

impl SettingValue for u64 {
    const TYPE: SettingType = SettingType::U64;
}

/// A queue: its settings and whether it is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub name: Arc<str>,
    pub config: QueueConfig,
    pub paused: bool,
}

/// What the scheduler knows of a node that works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Concurrent transforms the node runs, as it last said.
    pub slots: u32,
    /// A draining node is leased nothing new.
    pub draining: bool,
    pub last_heartbeat_ms: u64,
}

/// Limits every replica enforces alike. They are part of the replicated
/// state so that changing one is itself a logged command.
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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
            max_batch: 10_000,
            max_history_per_task: 64,
            max_error_bytes: 1024,
            max_name_bytes: 200,
            max_queues: 10_000,
            max_depends_on: 1_000,
        }
    }
}

/// One transition in a task's history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub node: Option<NodeId>,
    pub token: Option<FencingToken>,
    pub what: EventKind,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Enqueued {
        status: TaskStatus,
    },
    Unblocked,
    Leased {
        attempt: u32,
    },
    Succeeded,
    /// A retryable failure (or an expired lease): pending again after `retry_at_ms`.
    Failed {
        error: String,
        retry_at_ms: u64,
    },
    Expired {
        retry_at_ms: u64,
    },
    Dead {
        error: String,
    },
    Cancelled {
        reason: String,
    },
    Retried,
    Released {
        retry_at_ms: u64,
    },
    /// Format 3: a client asked for what the next events show (enqueue,
    /// cancel, retry, run); `by` is its token's name or `anonymous`.
    Requested {
        by: String,
        action: String,
    },
}
