//! Child processes that cannot outlive the bench, and what /proc says of them.
//!
//! Every child is registered while it runs: dropping its [`Child`] kills it
//! (so a panic unwinding through a scenario kills its cluster), and
//! [`kill_all`] kills whatever is left, which the Ctrl-C/SIGTERM handler in
//! `main` calls before it exits.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;

/// Pids of the children alive now.
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A child process whose output goes to a log file; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    pub log: PathBuf,
    reaped: bool,
}

impl Child {
    /// Starts `bin args...`, appending stdout and stderr to `log`. The
    /// bench's own `SKEIN_*` variables are not passed on.
    pub fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        writeln!(file, "==== skein-bench: {} {}", bin.display(), args.join(" ")).context("writing a log header")?;
        let err = file.try_clone().context("cloning a log file handle")?;
        let mut cmd = Command::new(bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SKEIN_") {
                cmd.env_remove(key);
            }
        }
        // Hold the registry lock across the spawn so that a Ctrl-C handler
        // running now either sees this child or runs before it exists.
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        live.insert(child.id());
        Ok(Child { child, log: log.to_path_buf(), reaped: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
            LIVE.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.child.id());
        }
    }

    /// SIGTERM (a planned stop: the node drains and exits by itself).
    pub fn term(&self) -> anyhow::Result<()> {
        if self.reaped {
            anyhow::bail!("process {} has exited", self.pid());
        }
        // `kill(2)` needs `unsafe`, which the workspace forbids; kill(1) does it.
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().context("running kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed: {status}", self.pid());
        Ok(())
    }

    /// Whether it still runs (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            _ => {
                self.reaped = true;
                LIVE.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.child.id());
                false
            }
        }
    }

    /// Its resident memory now and at its peak, from /proc.
    pub fn memory(&self) -> Option<Memory> {
        if self.reaped {
            return None;
        }
        memory_of(self.pid())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills every registered child (the signal handler's last act).
pub fn kill_all() {
    let pids: Vec<u32> = LIVE.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect();
    for pid in pids {
        // `kill(2)` needs `unsafe`, which the workspace forbids; kill(1) does it.
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}

/// Resident set size of a process, in bytes: now (`VmRSS`) and its peak so
/// far (`VmHWM`, the high-water mark the kernel keeps).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(Memory { rss_bytes: field("VmRSS:")?, peak_rss_bytes: field("VmHWM:")? })
}

/// Bytes of the files under `dir` (what `du -sb` says, near enough).
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The 1-minute load average, for the record of each run.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Whether `path` is on a tmpfs (where an fsync costs nothing and durable
/// figures mean little).
pub fn on_tmpfs(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return false };
    let Ok(path) = path.canonicalize() else { return false };
    let mut best: Option<(usize, bool)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mount), Some(fstype)) = (f.next(), f.next(), f.next()) else { continue };
        if path.starts_with(mount) && best.is_none_or(|(len, _)| mount.len() > len) {
            best = Some((mount.len(), fstype == "tmpfs"));
        }
    }
    best.is_some_and(|(_, tmpfs)| tmpfs)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr().context("reading a bound port")?.port())
}

/// The last `lines` lines of a log file, for error messages.
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
