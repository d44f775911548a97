//! Read models: what the API, the dashboard and `/metrics` show, built from
//! this node's applied state (and its Raft metrics) and nothing else. They
//! take `now` as an argument, write nothing and call no one, so they are
//! tested with plain values.

pub mod cluster;
pub mod runs;
pub mod scale;
pub mod tasks;
