//! skein-tests: the integration and chaos tests of real `skein-node`
//! processes (in `tests/`), on the shared harness of `skein-testkit`
//! (clusters, processes, the HTTP client, polling, background load).
//!
//! What is the tests' own:
//!
//! - [`bounded`]: a test body on a fresh cluster, bounded in time;
//! - [`checks`]: assertions over tasks and histories (settled queues,
//!   one fenced success per task, leases per node, replicas that agree);
//! - [`proxy`]: [`proxy::Net`], a fault-injecting TCP proxy on every
//!   node-to-node link (partitions, one-way cuts). It lives here, not in the
//!   testkit, so that it never ships in the `skein` binary, which links the
//!   testkit for `skein demo`;
//! - [`moto`]: moto's S3 server on loopback, for migrations on S3;
//! - [`chaos`]: the chaos harness (`skein-chaos`): workload, nemesis,
//!   history and checker, and the rolling upgrade under load.
//!
//! The binaries are not built by the tests: run
//! `cargo build --workspace --bins` first (see
//! `skein_testkit::process::Binaries`).

pub mod bounded;
pub mod chaos;
pub mod checks;
pub mod moto;
pub mod proxy;
