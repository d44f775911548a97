//! Polling with a deadline. A test waits for a condition of the cluster,
//! never for a fixed time: the condition is checked every [`POLL`] until it
//! holds or the deadline passes, and the timeout error says what was awaited
//! and what the last check saw.

use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// The pause between two checks.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it answers `Some(value)`, for at most `timeout`.
/// A check that fails (`Err`, e.g. a node that is restarting) counts as "not
/// yet"; its error is kept for the timeout message. A check that itself
/// hangs is cut at the deadline.
pub async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    wait_for_every(timeout, POLL, what, check).await
}

/// [`wait_for`], checking every `poll` instead of every [`POLL`] (the bench
/// polls faster, since it reports how long things took).
pub async fn wait_for_every<T>(
    timeout: Duration,
    poll: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let last = match tokio::time::timeout(left, check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => "condition not met".to_string(),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "the check itself did not answer".to_string(),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last check: {last})");
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls `check` until it answers `true`, for at most `timeout`; see [`wait_for`].
pub async fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    wait_for(timeout, what, async || Ok(check().await?.then_some(()))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = wait_for(Duration::from_secs(5), "n to reach 3", async || {
            n += 1;
            Ok((n >= 3).then_some(n))
        })
        .await
        .expect("reaches 3");
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_error() {
        let e = wait_until(Duration::from_millis(120), "the impossible", async || anyhow::bail!("nope"))
            .await
            .expect_err("cannot hold");
        let msg = format!("{e:#}");
        assert!(msg.contains("the impossible") && msg.contains("nope"), "{msg}");
    }
}
