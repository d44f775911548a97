//! skein-raft: the replicated task queue at the heart of skein.
//!
//! - [`fsm`]: the pure, deterministic state machine (std + serde only);
//! - [`format`]: the stored formats (log, snapshots, cold records), apart
//!   from the state machine's and the API's types, and their versions;
//! - `api` (feature `api`): the HTTP API's JSON bodies, shared with the CLI;
//! - `config` (feature `storage`): openraft's type configuration for skein;
//! - `store` (feature `storage`): the RocksDB Raft log and state-machine
//!   stores, with snapshots and log purge.

pub mod clock;
pub mod format;
pub mod fsm;

#[cfg(feature = "api")]
pub mod api;

#[cfg(feature = "storage")]
pub mod config;
#[cfg(feature = "storage")]
pub mod store;
