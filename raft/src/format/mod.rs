//! Stored formats: what skein writes to the Raft log, to snapshots and to
//! RocksDB, and sends between nodes, kept apart from the types the HTTP API
//! serves (`crate::api`) and the state machine's in-memory shapes.
//!
//! # Format versions
//!
//! A *format* is the set of encodings one release writes. Format 1 is
//! release 0.1.0's, the first frozen one; every later format adds to it and
//! never changes what an older format wrote:
//!
//! | format | release | adds |
//! |--------|---------|------|
//! | 1      | 0.1.0   | log entries (`Stamped`), snapshot file version 3, cold records, RPCs |
//! | 2      | 0.2.0   | `Command::SetFormat`, `Command::RedriveQueue`, snapshot file version 4 (carries the cluster's format) |
//! | 3      | 0.3.0   | tokens, owners and the audit trail: `Command::AsCaller` and the token commands, `EventKind::Requested`, audit records in the cold store, snapshot file version 5 (version 4, then the auth section of [`v3`]) |
//! | 4      | 0.4.0   | the exec allow list and data roots: `Command::AllowExec`, `DenyExec`, `AllowRoot`, `DenyRoot`, `ConfigurePolicy`; `Command::EnqueueChildren` (a leased task's follow-up tasks, fenced by its lease: a partitioned run's partitions and commit); snapshot file version 6 (version 5, then the policy section of [`v4`]) |
//!
//! A node reads every format up to [`LATEST`]. What it *writes* is capped by
//! the cluster's format (`StateMachine::format`): until an operator runs
//! `skein cluster finalize`, a cluster upgraded from 0.1.0 stays at format 1,
//! so its log, snapshots and RPCs stay readable by 0.1.0 binaries and the
//! upgrade can be rolled back. Finalizing is one replicated command
//! (`SetFormat`), proposed only when every member reports a release that
//! knows the new format; from then on new commands and snapshot version 4
//! appear, and there is no way back.
//!
//! A log command's format is implied by its variant: variants are only ever
//! appended, an old one never changes shape (a changed shape is a new
//! variant). [`Command::format`](crate::fsm::Command::format) says which
//! format introduced each, and the leader refuses (409) a command newer than
//! the cluster's format. Snapshots carry their file version in their
//! header; [`v1`] holds the frozen shapes of the state a version-3 (format 1)
//! snapshot holds, and of the history events the cold store keeps.

pub mod v1;
pub mod v3;
pub mod v4;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fsm::state::ClusterFormat;
use crate::fsm::StateMachine;

/// Release 0.1.0's formats.
pub const FORMAT_0_1_0: u32 = 1;
/// The newest format this build reads and writes.
pub const LATEST: u32 = 4;
/// This build's release.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The first release that writes `format` (for messages telling an operator
/// what to upgrade to).
pub fn release_of(format: u32) -> &'static str {
    match format {
        0 | 1 => "0.1.0",
        2 => "0.2.0",
        3 => "0.3.0",
        4 => "0.4.0",
        _ => "a newer release",
    }
}

/// The snapshot file version that holds a state of cluster format `format`:
/// 3 (release 0.1.0's) for format 1, 4 for format 2, 5 for format 3, 6
/// for format 4.
pub fn snapshot_version_of(format: u32) -> u32 {
    match format {
        0 | 1 => 3,
        2 => 4,
        3 => 5,
        _ => 6,
    }
}

/// The snapshot file versions this build reads.
pub const SNAPSHOT_VERSIONS: std::ops::RangeInclusive<u32> = 3..=6;

/// The state machine's replicated core as a snapshot stores it, in the
/// shapes its cluster format calls for: version 3 is format 1's core;
/// version 4 is the same, then the cluster's format (a `u32`). Replica
/// digests hash these bytes too, so nodes of two releases agree on them.
pub struct StoredState<'a>(pub &'a StateMachine);

impl StoredState<'_> {
    /// The snapshot file version these bytes are.
    pub fn snapshot_version(&self) -> u32 {
        snapshot_version_of(self.0.format())
    }
}

impl Serialize for StoredState<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let core = v1::CoreOut(&self.0.core);
        match self.snapshot_version() {
            3 => core.serialize(s),
            4 => (core, self.0.format()).serialize(s),
            5 => (core, self.0.format(), v3::Auth::of(&self.0.core.auth)).serialize(s),
            _ => (core, self.0.format(), v3::Auth::of(&self.0.core.auth), v4::Policy::of(&self.0.core.policy))
                .serialize(s),
        }
    }
}

/// Decodes a version 3 snapshot's state (format 1).
pub struct StateV3(pub StateMachine);

impl<'de> Deserialize<'de> for StateV3 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(StateV3(StateMachine::from_core(v1::CoreIn::deserialize(d)?.into_core())))
    }
}

/// Decodes a version 4 snapshot's state (format 2 or later).
pub struct StateV4(pub StateMachine);

impl<'de> Deserialize<'de> for StateV4 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (core, format) = <(v1::CoreIn, u32)>::deserialize(d)?;
        if format > LATEST {
            return Err(serde::de::Error::custom(newer_format(format)));
        }
        let mut core = core.into_core();
        core.format = ClusterFormat(format);
        Ok(StateV4(StateMachine::from_core(core)))
    }
}

/// Decodes a version 5 snapshot's state (format 3 or later).
pub struct StateV5(pub StateMachine);

impl<'de> Deserialize<'de> for StateV5 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (core, format, auth) = <(v1::CoreIn, u32, v3::Auth<'static>)>::deserialize(d)?;
        if format > LATEST {
            return Err(serde::de::Error::custom(newer_format(format)));
        }
        let mut core = core.into_core();
        core.format = ClusterFormat(format);
        core.auth = auth.into_state();
        Ok(StateV5(StateMachine::from_core(core)))
    }
}

/// Decodes a version 6 snapshot's state (format 4 or later).
pub struct StateV6(pub StateMachine);

impl<'de> Deserialize<'de> for StateV6 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (core, format, auth, policy) = <(v1::CoreIn, u32, v3::Auth<'static>, v4::Policy<'static>)>::deserialize(d)?;
        if format > LATEST {
            return Err(serde::de::Error::custom(newer_format(format)));
        }
        let mut core = core.into_core();
        core.format = ClusterFormat(format);
        core.auth = auth.into_state();
        core.policy = policy.into_state();
        Ok(StateV6(StateMachine::from_core(core)))
    }
}

/// Why data of `format` cannot be read by this build.
pub fn newer_format(format: u32) -> String {
    format!(
        "stored format {format} was written by skein {} or later; this build ({RELEASE}) reads formats up to \
         {LATEST}: run a newer release",
        release_of(format)
    )
}
