//! The wall clock. Only the leader's reading enters the log (stamped into
//! each batch by the proposer); the state machine never reads a clock.
//! Everything else here that decides by time takes `now` as an argument,
//! so tests pass whatever time they need.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
