//! The leader's write path: many client writes share one Raft entry.
//!
//! Every write on the leader (an HTTP enqueue, a forwarded write, a lease, a
//! heartbeat, a completion) goes through one channel. A loop takes whatever
//! has queued up, up to a size bound, stamps it with the leader's clock,
//! and proposes it as one `Command::Batch`; several batches are in flight at
//! once, so while one entry is being replicated and fsynced the next one
//! fills. Under load this turns thousands of small writes per second into a
//! few hundred entries; when idle a lone write goes out at once.

use std::sync::Arc;

use skein_raft::config::Raft;
use skein_raft::fsm::{Command, Response, Stamped};
use skein_transport::NodeError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::clock::now_ms;

/// Proposals in flight at once.
const IN_FLIGHT: usize = 4;
/// A batch stops growing past this many estimated bytes (keeps entries,
/// and so replication frames, bounded).
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// ...or this many commands.
const MAX_BATCH_COMMANDS: usize = 2_048;

type Reply = oneshot::Sender<Result<Response, NodeError>>;

/// A handle to the proposer loop.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<(Command, Reply)>,
    /// One permit per batch in flight; [`Proposer::hold`] takes them all.
    permits: Arc<Semaphore>,
}

impl Proposer {
    /// Starts the loop on `tasks`; it ends when `shutdown` is cancelled.
    pub fn spawn(log: impl Log, shutdown: CancellationToken, tasks: &TaskTracker) -> Proposer {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        tasks.spawn(run(log, rx, permits.clone(), shutdown, tasks.clone()));
        Proposer { tx, permits }
    }

    /// Stops proposing (a leader handing over, see [`crate::cluster::handover`]):
    /// waits until every batch in flight has been answered, then keeps new
    /// writes queued, unproposed, until the returned guard is dropped. They
    /// are proposed then; on a node that no longer leads they fail with
    /// `NotLeader`, which sends them on to the new leader.
    pub async fn hold(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().acquire_many_owned(IN_FLIGHT as u32).await.ok()
    }

    /// Writes waiting in the queue, not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Proposes `command` (batched with others) and waits for its response.
    /// Fails with `NotLeader` when this node does not lead.
    pub async fn propose(&self, command: Command) -> Result<Response, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((command, tx)).await.map_err(|_| NodeError::Unavailable("node is shutting down".into()))?;
        // Taken into a batch, then dropped unanswered: it may have been
        // proposed.
        rx.await.map_err(|_| NodeError::OutcomeUnknown("node is shutting down".into()))?
    }
}

/// Where the proposer's batches go: Raft, or a fake in tests.
pub trait Log: Clone + Send + Sync + 'static {
    /// Appends one stamped command through consensus and answers its
    /// response once applied.
    fn write(&self, command: Stamped) -> impl std::future::Future<Output = Result<Response, NodeError>> + Send;
}

impl Log for Raft {
    async fn write(&self, command: Stamped) -> Result<Response, NodeError> {
        self.client_write(command).await.map(|r| r.data).map_err(|e| match NodeError::from(e) {
            // Raft stopped with the entry perhaps appended.
            NodeError::Unavailable(m) => NodeError::OutcomeUnknown(m),
            other => other,
        })
    }
}

async fn run<L: Log>(
    log: L,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        // The first write, then a free slot (what a hold takes away): the
        // loop holds no permit while it waits for work, so a hold never
        // waits for a write to arrive.
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = rx.recv() => match item { Some(item) => item, None => return },
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let batch = fill_batch(first, |(c, _)| estimate(c), || rx.try_recv().ok(), Bounds::DEFAULT);
        let log = log.clone();
        tasks.spawn(async move {
            propose_batch(&log, batch).await;
            drop(permit);
        });
    }
}

/// How big a batch may grow.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub commands: usize,
    pub bytes: usize,
}

impl Bounds {
    pub const DEFAULT: Bounds = Bounds { commands: MAX_BATCH_COMMANDS, bytes: MAX_BATCH_BYTES };
}

/// A batch: `first`, then whatever `next` has ready at once, until either
/// bound is reached (the one write that crosses the byte bound is still
/// taken: a batch is never empty, and a write bigger than the bound goes
/// out alone).
pub fn fill_batch<T>(
    first: T,
    size: impl Fn(&T) -> usize,
    mut next: impl FnMut() -> Option<T>,
    bounds: Bounds,
) -> Vec<T> {
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < bounds.commands && bytes < bounds.bytes {
        match next() {
            Some(item) => {
                bytes += size(&item);
                batch.push(item);
            }
            None => break,
        }
    }
    batch
}

/// The one command a batch of `commands` is proposed as: itself alone, or
/// a `Command::Batch`.
pub fn batch_command(mut commands: Vec<Command>) -> Command {
    if commands.len() == 1 {
        commands.swap_remove(0)
    } else {
        Command::Batch(commands)
    }
}

/// Each write's answer, from the answer to the batch of `n` writes.
pub fn split_answer(n: usize, answer: Result<Response, NodeError>) -> Vec<Result<Response, NodeError>> {
    match (n, answer) {
        (1, r) => vec![r],
        (_, Ok(Response::Batch(rs))) if rs.len() == n => rs.into_iter().map(Ok).collect(),
        (_, Ok(other)) => {
            let err = NodeError::Internal(format!("batch of {n} answered with {other:?}"));
            vec![Err(err); n]
        }
        (_, Err(e)) => vec![Err(e); n],
    }
}

async fn propose_batch<L: Log>(log: &L, batch: Vec<(Command, Reply)>) {
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let n = commands.len();
    debug!(commands = n, "proposing");
    let stamped = Stamped { now_ms: now_ms(), command: batch_command(commands) };
    let answers = split_answer(n, log.write(stamped).await);
    for (reply, answer) in replies.into_iter().zip(answers) {
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(answer);
    }
}

/// A rough size of a command in a log entry, for bounding batches.
fn estimate(command: &Command) -> usize {
    match command {
        Command::Enqueue { tasks } | Command::EnqueueOwned { tasks, .. } => {
            tasks.iter().map(|t| 128 + t.payload.len()).sum()
        }
        Command::AsCaller { command, .. } => 16 + estimate(command),
        Command::Complete { completions, .. } => completions
            .iter()
            .map(|c| {
                64 + match &c.outcome {
                    skein_raft::fsm::Outcome::Succeeded { result } => result.len(),
                    skein_raft::fsm::Outcome::Retryable { error } | skein_raft::fsm::Outcome::Permanent { error } => {
                        error.len()
                    }
                }
            })
            .sum(),
        Command::Heartbeat { held, .. } => 64 + held.len() * 48,
        Command::Batch(cs) => cs.iter().map(estimate).sum(),
        _ => 64,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use skein_raft::fsm::{NewTask, Rejection, TaskId};

    use super::*;

    fn enqueue(payload_bytes: usize) -> Command {
        Command::Enqueue { tasks: vec![NewTask::new("q", "noop", &"x".repeat(payload_bytes))] }
    }

    #[test]
    fn batches_fill_up_to_either_bound() {
        let bounds = Bounds { commands: 4, bytes: 100 };
        // (sizes waiting, the first's size, expected batch length)
        let cases: &[(&[usize], usize, usize)] = &[
            (&[], 10, 1),                   // a lone write goes out at once
            (&[10, 10], 10, 3),             // everything ready, under both bounds
            (&[10, 10, 10, 10, 10], 10, 4), // the command bound
            (&[50, 50, 50], 10, 3),         // 10+50+50 crosses 100: taken, then stop
            (&[10], 500, 1),                // a write bigger than the bound, alone
        ];
        for (waiting, first, want) in cases {
            let mut queue = waiting.iter().copied();
            let batch = fill_batch(*first, |s| *s, || queue.next(), bounds);
            assert_eq!(batch.len(), *want, "first {first}, waiting {waiting:?}");
            assert_eq!(batch[0], *first);
        }
    }

    #[test]
    fn a_batch_of_one_is_the_command_itself() {
        assert_eq!(batch_command(vec![Command::ExpireLeases]), Command::ExpireLeases);
        let two = batch_command(vec![Command::ExpireLeases, Command::CollectGarbage]);
        assert_eq!(two, Command::Batch(vec![Command::ExpireLeases, Command::CollectGarbage]));
    }

    #[test]
    fn answers_split_one_per_write() {
        let rejected = Response::Rejected(Rejection::UnknownTask(TaskId(1)));
        // One write: its answer whatever it is.
        assert_eq!(split_answer(1, Ok(Response::Done)), vec![Ok(Response::Done)]);
        assert_eq!(split_answer(1, Ok(Response::Batch(vec![]))), vec![Ok(Response::Batch(vec![]))]);
        // A batch: each its own, in order.
        assert_eq!(
            split_answer(2, Ok(Response::Batch(vec![Response::Done, rejected.clone()]))),
            vec![Ok(Response::Done), Ok(rejected)]
        );
        // A batch answered wrongly, or refused whole: every write hears it.
        let wrong = split_answer(3, Ok(Response::Batch(vec![Response::Done])));
        assert!(wrong.iter().all(|r| matches!(r, Err(NodeError::Internal(_)))), "{wrong:?}");
        let not_leader = NodeError::NotLeader { leader_id: Some(2), leader: None };
        assert_eq!(split_answer(2, Err(not_leader.clone())), vec![Err(not_leader.clone()), Err(not_leader)]);
    }

    #[test]
    fn sizes_follow_the_payloads() {
        assert!(estimate(&enqueue(10_000)) > 10_000);
        let batch = Command::Batch(vec![enqueue(1_000), enqueue(2_000)]);
        assert!(estimate(&batch) >= 3_000);
        assert_eq!(estimate(&Command::ExpireLeases), 64);
    }

    /// A log that takes 10 ms (of tokio's clock) per entry and records each
    /// entry's size and how many were in flight at its start.
    #[derive(Clone, Default)]
    struct FakeLog {
        entries: Arc<Mutex<Vec<(usize, usize)>>>,
        in_flight: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Log for FakeLog {
        async fn write(&self, stamped: Stamped) -> Result<Response, NodeError> {
            use std::sync::atomic::Ordering::SeqCst;
            let flying = self.in_flight.fetch_add(1, SeqCst) + 1;
            let n = match &stamped.command {
                Command::Batch(cs) => cs.len(),
                _ => 1,
            };
            self.entries.lock().unwrap().push((n, flying));
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.in_flight.fetch_sub(1, SeqCst);
            Ok(if n == 1 { Response::Done } else { Response::Batch(vec![Response::Done; n]) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn writes_share_entries_with_a_bounded_number_in_flight() {
        let log = FakeLog::default();
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let proposer = Proposer::spawn(log.clone(), stop.clone(), &tasks);
        let start = tokio::time::Instant::now();
        let writes: Vec<_> = (0..1_000).map(|_| proposer.propose(Command::ExpireLeases)).collect();
        let answers = futures::future::join_all(writes).await;
        assert!(answers.iter().all(|a| a == &Ok(Response::Done)));
        let entries = log.entries.lock().unwrap().clone();
        assert_eq!(entries.iter().map(|(n, _)| n).sum::<usize>(), 1_000);
        assert!(entries.len() < 20, "1,000 writes made {} entries", entries.len());
        assert!(entries.iter().all(|(_, flying)| *flying <= IN_FLIGHT), "{entries:?}");
        // Each entry takes 10 ms and up to IN_FLIGHT run at once.
        assert!(start.elapsed() <= Duration::from_millis(10 * entries.len() as u64));
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_waits_for_the_entries_in_flight_and_keeps_new_writes_queued() {
        let log = FakeLog::default();
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let proposer = Proposer::spawn(log.clone(), stop.clone(), &tasks);
        let first = tokio::spawn({
            let p = proposer.clone();
            async move { p.propose(Command::ExpireLeases).await }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(log.in_flight.load(std::sync::atomic::Ordering::SeqCst), 1);
        let held_at = tokio::time::Instant::now();
        let hold = proposer.hold().await.expect("the proposer runs");
        // The hold came once the entry in flight was answered.
        assert!(held_at.elapsed() >= Duration::from_millis(9));
        assert_eq!(first.await.unwrap(), Ok(Response::Done));
        // A write now waits in the queue, unproposed.
        let second = tokio::spawn({
            let p = proposer.clone();
            async move { p.propose(Command::CollectGarbage).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(log.entries.lock().unwrap().len(), 1);
        assert!(!second.is_finished());
        drop(hold);
        assert_eq!(second.await.unwrap(), Ok(Response::Done));
        assert_eq!(log.entries.lock().unwrap().len(), 2);
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
