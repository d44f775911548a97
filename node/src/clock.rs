//! The wall clock (one definition for the workspace, in `skein_raft`).
//! Only the leader's reading enters the log (stamped into each batch by the
//! proposer); everything else here that decides by time takes `now` as an
//! argument, so tests pass whatever time they need.

pub use skein_raft::clock::now_ms;
