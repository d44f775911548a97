//! skein-raft: the replicated task queue at the heart of skein.
//!
//! - [`fsm`]: the pure, deterministic state machine (std + serde only);
//! - `config` (feature `storage`): openraft's type configuration for skein;
//! - `store` (feature `storage`): the RocksDB Raft log and state-machine
//!   stores, with snapshots and log purge.

pub mod fsm;

#[cfg(feature = "storage")]
pub mod config;
#[cfg(feature = "storage")]
pub mod store;
