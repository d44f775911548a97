//! When a task started and when its success was recorded, from the nodes'
//! JSON logs: the worker logs `task started` once its lease is granted and
//! `task succeeded` once the leader has committed the outcome, each with a
//! microsecond timestamp of this machine's clock (the bench's clock too).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Microseconds since the Unix epoch of a task's events, as logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskTimes {
    pub started_us: Option<i64>,
    pub succeeded_us: Option<i64>,
}

/// Reads every log and collects the times of the tasks `wanted` accepts.
pub fn task_times(logs: &[PathBuf], wanted: impl Fn(u64) -> bool) -> BTreeMap<u64, TaskTimes> {
    let mut out: BTreeMap<u64, TaskTimes> = BTreeMap::new();
    for path in logs {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        for line in text.lines() {
            // Cheap filter before parsing JSON.
            if !line.contains("\"task s") {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let Some(fields) = v.get("fields") else { continue };
            let msg = fields.get("message").and_then(|m| m.as_str()).unwrap_or("");
            let Some(id) = fields.get("task_id").and_then(|t| t.as_u64()) else { continue };
            if !wanted(id) {
                continue;
            }
            let Some(ts) = v.get("timestamp").and_then(|t| t.as_str()).and_then(parse_rfc3339_us) else { continue };
            let e = out.entry(id).or_default();
            match msg {
                // A task may start more than once (a retry): keep the first start.
                "task started" => e.started_us = Some(e.started_us.map_or(ts, |s| s.min(ts))),
                "task succeeded" => e.succeeded_us = Some(ts),
                _ => {}
            }
        }
    }
    out
}

/// Follows growing log files: each [`LogTail::succeeded`] call reads only
/// what was appended since the last one. Lets the latency scenario wait for
/// a task's completion without polling the cluster.
pub struct LogTail {
    files: Vec<(PathBuf, u64, String)>,
}

impl LogTail {
    pub fn new(paths: Vec<PathBuf>) -> LogTail {
        let files = paths
            .into_iter()
            .map(|p| {
                let len = std::fs::metadata(&p).map_or(0, |m| m.len());
                (p, len, String::new())
            })
            .collect();
        LogTail { files }
    }

    /// Ids of the tasks whose success was logged since the last call.
    pub fn succeeded(&mut self) -> Vec<u64> {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Vec::new();
        for (path, offset, partial) in &mut self.files {
            let Ok(mut f) = std::fs::File::open(&*path) else { continue };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = String::new();
            let Ok(n) = f.read_to_string(&mut buf) else { continue };
            *offset += n as u64;
            partial.push_str(&buf);
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                if !line.contains("\"task succeeded\"") {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if let Some(id) = v.pointer("/fields/task_id").and_then(|t| t.as_u64()) {
                    out.push(id);
                }
            }
        }
        out
    }
}

/// `2026-11-24T06:23:31.123456Z` (UTC, any number of fraction digits) as
/// microseconds since the Unix epoch.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let digits: String = frac.chars().take(6).collect();
    let micros = format!("{digits:0<6}").parse::<i64>().ok()?;
    let days = days_from_civil(y, m, day);
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Now, in microseconds since the Unix epoch (the clock the logs use).
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timestamps() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        // date -d 2026-11-24T06:23:31Z +%s = 1795501411
        assert_eq!(parse_rfc3339_us("2026-11-24T06:23:31.123456Z"), Some(1_795_501_411_123_456));
        assert_eq!(parse_rfc3339_us("nonsense"), None);
    }
}
