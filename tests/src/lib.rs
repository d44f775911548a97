//! skein-tests: a harness that runs clusters of real `skein-node` processes,
//! and the integration and chaos tests built on it (in `tests/`).
//!
//! - [`cluster`]: [`Cluster`], N nodes on free loopback ports, each with its
//!   own temporary data directory and log file; start, join, kill -9,
//!   SIGSTOP/SIGCONT, SIGTERM, restart on the same data, add a node. Every
//!   process dies with the `Cluster` (also when a test panics), and a failing
//!   test prints the tail of each node's log (and keeps the directories
//!   with `SKEIN_TEST_KEEP=1`);
//! - [`process`]: one child process that is killed on drop, the binaries'
//!   location, free ports, log tails;
//! - [`checks`]: assertions over tasks and histories (settled queues,
//!   one fenced success per task, leases per node, replicas that agree);
//! - [`api`]: [`Api`], typed calls to a node's HTTP API, and raw ones for
//!   the tests that send bad input;
//! - [`load`]: [`Load`], a background enqueuer that remembers every task id
//!   the API acknowledged;
//! - [`wait`]: [`wait_until`] and [`wait_for`], polling with a deadline: the
//!   only way the tests synchronise with the cluster (never a bare sleep).
//!
//! The binaries are not built by the tests: run
//! `cargo build --workspace --bins` first (see [`process::Binaries`]).

pub mod api;
pub mod chaos;
pub mod checks;
pub mod cluster;
pub mod load;
pub mod process;
pub mod proxy;
pub mod wait;

pub use api::Api;
pub use cluster::Cluster;
pub use load::{Load, LoadReport};
pub use wait::{wait_for, wait_until};

/// Milliseconds since the Unix epoch: the clock the nodes stamp into the log
/// (they run on this machine, so the two compare).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
