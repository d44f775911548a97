//! What /proc says of the bench's processes and machine: a node's memory,
//! its disk use, the load average, whether the work directory is a tmpfs.
//! (The processes themselves are `skein_testkit::Process`es: killed on
//! drop and by `skein_testkit::process::kill_all` on Ctrl-C.)

use std::path::Path;

use skein_testkit::Cluster;

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

/// Node `id`'s resident memory now and at its peak, while it runs.
pub fn node_memory(c: &Cluster, id: u64) -> Option<Memory> {
    memory_of(c.node(id).pid()?)
}

/// Bytes under node `id`'s data directory.
pub fn node_disk_bytes(c: &Cluster, id: u64) -> u64 {
    disk_bytes(&c.node(id).data_dir())
}

/// CPU seconds (user + system) a process has used so far: fields 14 and 15
/// of `/proc/<pid>/stat`, in clock ticks of 1/100 s (Linux's `USER_HZ` on
/// every architecture it runs on).
pub fn cpu_secs_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count from its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_used_some_cpu() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        let secs = super::cpu_secs_of(std::process::id()).expect("reading /proc/self/stat");
        assert!(secs > 0.0, "{secs}");
    }
}
