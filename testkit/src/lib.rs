//! skein-testkit: the one harness for running real `skein-node` processes,
//! shared by the integration and chaos tests (`tests/`), the benchmark
//! (`bench/`) and `skein demo` (`cli/`).
//!
//! - [`process`]: [`Process`], a child process whose output goes to a log
//!   file, killed and reaped on drop (also when a test panics), with
//!   signals by name (SIGTERM, SIGSTOP/SIGCONT, SIGKILL); every live child
//!   is registered so that [`process::kill_all`] can end them from a
//!   Ctrl-C handler. Also where the binaries are ([`process::Binaries`]),
//!   free ports and log tails;
//! - [`cluster`]: [`Cluster`], N nodes on loopback (node 1 bootstraps, the
//!   others join), started from a [`Spec`] (ports free or fixed, temporary
//!   or given directories, slots, flags, environment, the binary per node,
//!   timeouts); kill -9, pause, stop, restart on the same data, add a node,
//!   find the leader, wait for membership. Dropping it kills every node, and
//!   a panicking test prints the tail of each node's log;
//! - [`api`]: [`Api`], typed calls to a node's HTTP API (and raw ones, for
//!   tests that send bad input), on one connection pool per client;
//! - [`load`]: [`Load`], a background enqueuer that remembers every task id
//!   the cluster acknowledged and when each answer came;
//! - [`wait`]: [`wait_for`] and [`wait_until`], polling with a deadline;
//! - [`auth`]: the admin token of every cluster this process starts (made
//!   here, given to the bootstrap with `--admin-token-file`), which every
//!   [`Api`] sends unless told otherwise, so tests, the bench and the demo
//!   need no extra step.
//!
//! What is *not* here: the chaos tests' fault-injecting TCP proxy. It lives
//! in skein-tests, so that it never ships in the `skein` binary, which links
//! this crate for `skein demo` (no cargo feature either: features unify
//! across the workspace build, so the proxy would ship anyway).

pub mod api;
pub mod auth;
pub mod cluster;
pub mod load;
pub mod process;
pub mod wait;

pub use api::Api;
pub use cluster::{Cluster, Dirs, Spec};
pub use load::{Load, LoadReport};
pub use process::Process;
pub use wait::{wait_for, wait_until};

/// Milliseconds since the Unix epoch: the clock the nodes stamp into the log
/// (they run on this machine, so the two compare).
pub use skein_raft::clock::now_ms;

/// Prints a line prefixed with the seconds since the first call: the
/// tests' running commentary (shown by `cargo nextest run --no-capture`).
pub fn say(msg: impl AsRef<str>) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    eprintln!("[{:>7.3}s] {}", start.elapsed().as_secs_f64(), msg.as_ref());
}
