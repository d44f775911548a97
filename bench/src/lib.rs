//! skein-bench: how fast skein is, how it scales and how it compares, in
//! one run on one machine (issue 7). It starts its own local clusters of the
//! real `skein-node` binary (loopback, free ports, directories under one
//! work directory, every process killed on exit, panic or Ctrl-C), runs the
//! selected scenarios, prints a table and writes JSON.
//!
//! - [`args`]: the flags, and what `--quick` changes;
//! - [`scenarios`]: lifecycle, latency, failover, depth, scale-out, and the
//!   comparison with NATS JetStream;
//! - [`fleet`]: 3 members and a fleet of simulated workers outside Raft;
//! - [`nats`]: a 3-node JetStream cluster and its workload;
//! - [`logs`]: task timestamps from node logs;
//! - [`stats`], [`report`]: figures, targets, the table and the JSON;
//! - [`procs`]: /proc figures (memory, disk, load).
//!
//! The skein clusters, their processes (killed with the bench), the HTTP
//! client and the failover's steady load are `skein-testkit`'s, the same
//! harness the tests use: every request carries the harness's admin token,
//! and with `--tls` every cluster runs mutual TLS with HTTPS
//! (`Spec::with_tls`) and those clients trust its CA.
//!
//! Timing is reported, never asserted: the smoke test runs `--quick` and
//! checks only that the harness works.

pub mod args;
pub mod fleet;
pub mod logs;
pub mod nats;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub use args::Args;

static KEEP_DIRS: AtomicBool = AtomicBool::new(false);

/// Whether to keep the clusters' directories (`--keep`) for a look.
pub fn keep_dirs() -> bool {
    KEEP_DIRS.load(Ordering::Relaxed)
}

pub(crate) fn set_keep_dirs(keep: bool) {
    KEEP_DIRS.store(keep, Ordering::Relaxed);
}

static ROOT: OnceLock<PathBuf> = OnceLock::new();

pub(crate) fn set_root(root: PathBuf) {
    let _ = ROOT.set(root);
}

/// Kills every child process and removes the work directory (unless
/// `--keep`): what Ctrl-C and SIGTERM do before the bench exits.
pub fn cleanup() {
    skein_testkit::process::kill_all();
    if let (Some(root), false) = (ROOT.get(), keep_dirs()) {
        let _ = std::fs::remove_dir_all(root);
    }
}

/// The bench's work directory, removed at the end (and by the signal
/// handler) unless `--keep`.
pub fn work_root(base: &std::path::Path) -> std::io::Result<PathBuf> {
    let dir = base.join(format!("skein-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
