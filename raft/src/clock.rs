//! The wall clock, for everything around the state machine: the leader
//! stamps each entry with it (the only reading that enters the log), the
//! CLI shows ages, tests wait. The state machine itself never reads a clock
//! (DESIGN.md, rule 1): its time is the `now_ms` of the entry it applies. A
//! test below keeps it that way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_state_machine_reads_no_clock() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fsm");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).expect("src/fsm") {
            let path = entry.expect("an entry").path();
            let text = std::fs::read_to_string(&path).expect("a source file");
            for clock in ["SystemTime", "Instant::now", "clock::now_ms", "chrono::"] {
                assert!(
                    !text.contains(clock),
                    "{} reads a clock ({clock}): time enters as the entry's now_ms",
                    path.display()
                );
            }
            read += 1;
        }
        assert!(read >= 5, "read {read} files of {}", dir.display());
    }
}
