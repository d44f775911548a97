//! A test body on a fresh cluster of real nodes, bounded in time: its own
//! temporary folder for datasets (kept, and named, when the test fails),
//! and every node stopped at the end, pass or fail.

use std::path::Path;
use std::time::Duration;

use skein_testkit::{Cluster, Spec};

/// Runs `body` against a fresh `n`-node cluster (with `env` in every
/// node's environment) and a temporary folder prefixed `prefix`, for at
/// most `timeout`, cluster start excluded.
pub async fn with_cluster<F>(prefix: &str, n: usize, env: Vec<(String, String)>, timeout: Duration, body: F)
where
    F: AsyncFnOnce(&mut Cluster, &Path) -> anyhow::Result<()>,
{
    with_spec(prefix, Spec { env, ..Spec::new(n) }, timeout, body).await
}

/// [`with_cluster`] on a cluster started from `spec` (its slots, flags...).
pub async fn with_spec<F>(prefix: &str, spec: Spec, timeout: Duration, body: F)
where
    F: AsyncFnOnce(&mut Cluster, &Path) -> anyhow::Result<()>,
{
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("a temp dir");
    skein_testkit::say(format!("starting a cluster of {} nodes", spec.nodes));
    let mut c = spec.start().await.expect("starting the cluster");
    let result = match tokio::time::timeout(timeout, body(&mut c, dir.path())).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the test did not finish within {timeout:?}")),
    };
    if result.is_err() {
        // Keep the datasets for a look, like the harness keeps the node dirs.
        let kept = dir.keep();
        eprintln!("datasets kept in {}", kept.display());
    }
    c.finish(result);
}
