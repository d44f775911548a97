//! One child process that cannot outlive its owner, where the binaries
//! are, free ports and log tails.
//!
//! Every child is registered while it runs: dropping its [`Process`] kills
//! and reaps it (so a panic unwinding through a test or a bench scenario
//! kills its cluster), and [`kill_all`] kills whatever is left, which a
//! Ctrl-C/SIGTERM handler calls before the program exits.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::wait::{wait_for_every, POLL};

/// The `skein-node` and `skein` binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub node: PathBuf,
    pub cli: PathBuf,
}

impl Binaries {
    /// Finds the built binaries next to this executable (`skein-chaos` in
    /// `target/<profile>/`) or one folder above it (a test in
    /// `target/<profile>/deps/`), or in `$SKEIN_BIN_DIR`. Warns when
    /// `skein-node` is older than its sources: the tests would run
    /// yesterday's code.
    pub fn locate() -> anyhow::Result<Binaries> {
        let dir = match std::env::var_os("SKEIN_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let exe = std::env::current_exe().context("locating the test executable")?;
                let here = exe.parent().with_context(|| format!("no folder above {}", exe.display()))?;
                if here.join("skein-node").is_file() {
                    here.to_path_buf()
                } else {
                    here.parent()
                        .map(Path::to_path_buf)
                        .with_context(|| format!("no target directory above {}", exe.display()))?
                }
            }
        };
        let bins = Binaries { node: dir.join("skein-node"), cli: dir.join("skein") };
        for bin in [&bins.node, &bins.cli] {
            if !bin.is_file() {
                bail!(
                    "no {} : build the binaries first: cargo build --workspace --bins \
                     (with the same CARGO_TARGET_DIR as the tests), or set SKEIN_BIN_DIR",
                    bin.display()
                );
            }
        }
        warn_if_stale(&bins.node);
        Ok(bins)
    }

    /// A given `skein-node`, and the `skein` in the same folder (checked
    /// only when [`crate::Cluster::cli`] runs it).
    pub fn beside(node: PathBuf) -> Binaries {
        let cli = node.with_file_name("skein");
        Binaries { node, cli }
    }
}

/// Prints a warning when a source file of the node is newer than its binary.
fn warn_if_stale(bin: &Path) {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest = ["node/src", "raft/src", "transport/src", "migrate/src", "plan/src"]
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    if newest.is_some_and(|n| n > built) {
        eprintln!(
            "warning: {} is older than its sources; run `cargo build --workspace --bins` to test the current code",
            bin.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() { newest_mtime(&path) } else { entry.metadata().and_then(|m| m.modified()).ok() };
        newest = newest.max(t);
    }
    newest
}

/// A loopback port that was free a moment ago (bound, then dropped).
///
/// Taken below the kernel's ephemeral range (32768-60999 by default), in a
/// pseudo-random order: the kernel never hands those out for an outgoing
/// connection or a bind to port 0, so a port found free stays free unless
/// another test picks the very same one (the connection floods of the
/// limits test use tens of thousands of ephemeral ports, and a port from
/// `bind(0)` was once taken by one before its node bound it). Another
/// process may still take it; [`crate::Cluster`] retries a node whose bind
/// failed when its address is not fixed.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // 7919 is prime and does not divide SPAN: every port is visited.
        let port = (LOW + seed.wrapping_add(n.wrapping_mul(7_919)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("reading a bound port")?.port())
}

/// The last `lines` lines of a file (a node's log).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Pids of the children alive now (not yet reaped, not detached).
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SIGKILLs every registered child: a signal handler's last act before the
/// program exits (drops do not run then).
pub fn kill_all() {
    let pids: Vec<u32> = live().iter().copied().collect();
    for pid in pids {
        // `kill(2)` needs `unsafe`, which the workspace forbids; kill(1) does it.
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}

/// A child process, its stdout and stderr appended to a log file, killed
/// (SIGKILL) and reaped when dropped unless it already exited or was
/// [detached](Process::detach).
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// What [`Process::wait_exit`] or [`Process::kill9`] saw, once reaped.
    exited: Option<ExitStatus>,
    /// Left running when dropped.
    detached: bool,
    pub log: PathBuf,
}

impl Process {
    /// Starts `bin args...`, appending its output to `log` after a header line.
    pub fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Process> {
        Process::spawn_with_env(bin, args, log, &[])
    }

    /// [`Process::spawn`] with extra environment variables (e.g. the AWS
    /// settings of an S3 endpoint). The caller's own `SKEIN_*` variables are
    /// not passed on: a node must take its settings from its flags only.
    pub fn spawn_with_env(
        bin: &Path,
        args: &[String],
        log: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Process> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        writeln!(file, "==== harness: {} {}", bin.display(), args.join(" ")).context("writing the log header")?;
        let err = file.try_clone().context("cloning the log file handle")?;
        let mut cmd = Command::new(bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SKEIN_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(file).stderr(err);
        // Hold the registry lock across the spawn so that a Ctrl-C handler
        // running now either sees this child or runs before it exists.
        let mut live = live();
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        live.insert(child.id());
        Ok(Process { child, exited: None, detached: false, log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, ...) with kill(1):
    /// the workspace forbids `unsafe`, which `libc::kill` needs.
    pub fn signal(&mut self, name: &str) -> anyhow::Result<()> {
        if self.exit_status()?.is_some() {
            bail!("process {} already exited; cannot send SIG{name}", self.pid());
        }
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .with_context(|| format!("running kill -{name} {}", self.pid()))?;
        if !status.success() {
            bail!("kill -{name} {} failed: {status}", self.pid());
        }
        Ok(())
    }

    /// SIGTERM: a planned stop (a node drains, hands leadership over if it
    /// leads, and exits by itself); see [`Process::wait_exit`].
    pub fn term(&mut self) -> anyhow::Result<()> {
        self.signal("TERM")
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit_status()? {
            return Ok(status);
        }
        self.child.kill().with_context(|| format!("killing process {}", self.pid()))?;
        let status = self.child.wait().with_context(|| format!("reaping process {}", self.pid()))?;
        self.reaped(status);
        Ok(status)
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.exited = Some(status);
        live().remove(&self.child.id());
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            if let Some(status) = self.child.try_wait().with_context(|| format!("checking process {}", self.pid()))? {
                self.reaped(status);
            }
        }
        Ok(self.exited)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.exit_status(), Ok(None))
    }

    /// Waits for the process to exit by itself, for at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.wait_exit_every(timeout, POLL).await
    }

    /// [`Process::wait_exit`], checking every `poll`.
    pub async fn wait_exit_every(&mut self, timeout: Duration, poll: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.pid();
        wait_for_every(timeout, poll, &format!("process {pid} to exit"), async || self.exit_status()).await
    }

    /// Leaves the process running when this is dropped (and [`kill_all`]
    /// no longer knows it): `skein demo --keep`.
    pub fn detach(&mut self) {
        self.detached = true;
        live().remove(&self.child.id());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited.is_none() && !self.detached {
            let _ = self.child.kill();
            let _ = self.child.wait();
            live().remove(&self.child.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, log: &Path) -> Process {
        Process::spawn(Path::new("/bin/sh"), &["-c".to_string(), script.to_string()], log).expect("spawning sh")
    }

    #[tokio::test]
    async fn a_child_logs_takes_signals_and_dies_with_its_handle() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("child.log");
        let mut p = sh("echo started; exec sleep 30", &log);
        let pid = p.pid();
        assert!(live().contains(&pid));
        p.signal("STOP").expect("SIGSTOP");
        p.signal("CONT").expect("SIGCONT");
        assert!(p.is_running());
        crate::wait_until(Duration::from_secs(5), "the child's output", async || {
            Ok(log_tail(&log, 5).contains("started"))
        })
        .await
        .expect("output in the log");
        assert!(log_tail(&log, 5).starts_with("==== harness: /bin/sh -c"), "{}", log_tail(&log, 5));
        drop(p);
        assert!(!live().contains(&pid), "a dropped child stays registered");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a dropped child was not killed and reaped");

        // One that exits by itself is reaped by wait_exit.
        let mut q = sh("exit 3", &log);
        let status = q.wait_exit(Duration::from_secs(5)).await.expect("exits");
        assert_eq!(status.code(), Some(3));
        assert!(q.signal("TERM").is_err(), "a signal to an exited process must fail");
        assert!(!live().contains(&q.pid()));
    }
}
