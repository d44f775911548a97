//! Where a leader-only call goes, and whether a failed one is tried again:
//! the decisions, apart from the calls themselves.
//!
//! A call goes to this node's own proposer when it leads, to the leader over
//! RPC when another node leads, nowhere when no leader is known. It is
//! tried again (after a short pause, until a deadline) only when it
//! provably did not take effect: no leader, "not the leader", or a leader
//! that could not be reached at all. A call whose outcome is unknown (sent,
//! then a timeout or a lost connection) is never tried again here; the
//! caller hears it, and an idempotency key makes the caller's own retry
//! safe.

use std::future::Future;
use std::time::Duration;

use skein_raft::config::SkeinNode;
use skein_transport::{CallError, NodeError};
use tokio::time::Instant;

/// Where a leader-only call goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    Remote(SkeinNode),
    NoLeader,
}

/// The route from this node (`me`), given the leader it knows of.
pub fn route(me: u64, leader: Option<(u64, SkeinNode)>) -> Route {
    match leader {
        Some((id, _)) if id == me => Route::Local,
        Some((_, node)) => Route::Remote(node),
        None => Route::NoLeader,
    }
}

/// The error a call to nowhere (no leader known) answers: it was not sent.
pub fn no_leader() -> NodeError {
    NodeError::NotLeader { leader_id: None, leader: None }
}

/// A failed RPC to the leader, as the node reports it: the remote node's own
/// answer; "not the leader" when the peer could not be reached at all
/// (nothing was sent, so trying elsewhere is safe); "outcome unknown" when
/// it was sent and no answer came back, or the leader answered that it was
/// unavailable (it had the call: whether it proposed it, this node cannot
/// tell).
pub fn from_transport(e: CallError) -> NodeError {
    match e {
        CallError::Remote { error: NodeError::Unavailable(m), .. } => {
            NodeError::OutcomeUnknown(format!("the leader took the call, then answered: {m}"))
        }
        CallError::Remote { error, .. } => error,
        CallError::Unreachable { .. } => no_leader(),
        // Not sent, and it would not fit next time either.
        e @ CallError::TooLarge { .. } => NodeError::Invalid(e.to_string()),
        other => NodeError::OutcomeUnknown(format!("sent to the leader, then: {other}")),
    }
}

/// How long a call keeps looking for a leader, and how long it pauses
/// between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub deadline: Duration,
    pub pause: Duration,
}

impl RetryPolicy {
    /// After `error`, at `now`, for a call that must end by `deadline`: the
    /// pause before trying again, or `None` to answer the error.
    pub fn after(&self, error: &NodeError, now: Instant, deadline: Instant) -> Option<Duration> {
        let safe = matches!(error, NodeError::NotLeader { .. });
        (safe && now < deadline).then_some(self.pause)
    }

    /// Runs `call` until it answers something other than a retryable
    /// error, or the deadline passes.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, NodeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, NodeError>>,
    {
        let deadline = Instant::now() + self.deadline;
        loop {
            match call().await {
                Err(e) => match self.after(&e, Instant::now(), deadline) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(e),
                },
                ok => return ok,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn node(n: u16) -> SkeinNode {
        SkeinNode { rpc_addr: format!("127.0.0.1:{n}"), http_addr: format!("127.0.0.1:{}", n + 1) }
    }

    const POLICY: RetryPolicy = RetryPolicy { deadline: Duration::from_secs(5), pause: Duration::from_millis(50) };

    #[test]
    fn calls_go_to_the_leader_this_node_knows() {
        assert_eq!(route(1, Some((1, node(10)))), Route::Local);
        assert_eq!(route(1, Some((2, node(20)))), Route::Remote(node(20)));
        assert_eq!(route(1, None), Route::NoLeader);
    }

    #[test]
    fn only_calls_that_did_not_take_effect_are_retried() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let leader = Some(node(20));
        let cases: Vec<(NodeError, Instant, Option<Duration>)> = vec![
            (no_leader(), now, Some(POLICY.pause)),
            (NodeError::NotLeader { leader_id: Some(2), leader }, now, Some(POLICY.pause)),
            // Past the deadline: answer.
            (no_leader(), later + Duration::from_secs(1), None),
            // Sent, outcome unknown; refused; the node's own failure: answer.
            (NodeError::OutcomeUnknown("timed out".into()), now, None),
            (NodeError::Unavailable("shutting down".into()), now, None),
            (NodeError::Invalid("bad".into()), now, None),
            (NodeError::Internal("disk".into()), now, None),
            (NodeError::Removed(3), now, None),
        ];
        for (error, at, want) in cases {
            assert_eq!(POLICY.after(&error, at, later), want, "{error:?}");
        }
    }

    #[test]
    fn transport_failures_say_whether_anything_was_sent() {
        let unreachable = CallError::Unreachable { peer: "p".into(), reason: "refused".into() };
        assert_eq!(from_transport(unreachable), no_leader());
        let remote = CallError::Remote { peer: "p".into(), error: NodeError::Invalid("x".into()) };
        assert_eq!(from_transport(remote), NodeError::Invalid("x".into()));
        let big = CallError::TooLarge { peer: "p".into(), reason: "frame of 70 MiB".into() };
        assert!(matches!(from_transport(big), NodeError::Invalid(_)));
        let lost = CallError::Timeout { peer: "p".into(), after: Duration::from_secs(3) };
        assert!(matches!(from_transport(lost), NodeError::OutcomeUnknown(_)));
        let busy = CallError::Remote { peer: "p".into(), error: NodeError::Unavailable("no majority".into()) };
        assert!(matches!(from_transport(busy), NodeError::OutcomeUnknown(m) if m.ends_with("no majority")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_follows_the_election_until_a_leader_answers() {
        let tries = AtomicUsize::new(0);
        let start = Instant::now();
        let answer = POLICY
            .run(|| async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err(no_leader()),
                    _ => Ok("done"),
                }
            })
            .await;
        assert_eq!(answer, Ok("done"));
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        assert_eq!(start.elapsed(), 3 * POLICY.pause);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_gives_up_at_its_deadline_and_never_repeats_an_unknown_outcome() {
        let start = Instant::now();
        let answer: Result<(), _> = POLICY.run(|| async { Err(no_leader()) }).await;
        assert_eq!(answer, Err(no_leader()));
        assert!(start.elapsed() >= POLICY.deadline && start.elapsed() < POLICY.deadline + 2 * POLICY.pause);

        let tries = AtomicUsize::new(0);
        let answer: Result<(), _> = POLICY
            .run(|| async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(NodeError::OutcomeUnknown("timed out".into()))
            })
            .await;
        assert!(answer.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
