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
use std::time::{SystemTime, UNIX_EPOCH};

use skein_raft::config::Raft;
use skein_raft::fsm::{Command, Response, Stamped};
use skein_transport::NodeError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

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
    /// Starts the loop; it ends when `shutdown` is cancelled.
    pub fn spawn(raft: Raft, shutdown: CancellationToken) -> Proposer {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(run(raft, rx, permits.clone(), shutdown));
        Proposer { tx, permits }
    }

    /// Stops proposing (a leader handing over, see [`crate::handover`]):
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
        rx.await.map_err(|_| NodeError::Unavailable("node is shutting down".into()))?
    }
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
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
        let mut bytes = estimate(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(item) => {
                    bytes += estimate(&item.0);
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_batch(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn propose_batch(raft: &Raft, batch: Vec<(Command, Reply)>) {
    let (mut commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let n = commands.len();
    // `run` never makes an empty batch, so a batch of one has an element 0.
    let command = if n == 1 { commands.swap_remove(0) } else { Command::Batch(commands) };
    debug!(commands = n, "proposing");
    let stamped = Stamped { now_ms: now_ms(), command };
    match raft.client_write(stamped).await {
        Ok(resp) => match (n, resp.data) {
            (1, r) => send_all(replies, vec![Ok(r)]),
            (_, Response::Batch(rs)) if rs.len() == n => send_all(replies, rs.into_iter().map(Ok).collect()),
            (_, other) => {
                let err = NodeError::Internal(format!("batch of {n} answered with {other:?}"));
                send_all(replies, (0..n).map(|_| Err(err.clone())).collect());
            }
        },
        Err(e) => {
            let err = NodeError::from(e);
            send_all(replies, (0..n).map(|_| Err(err.clone())).collect());
        }
    }
}

fn send_all(replies: Vec<Reply>, results: Vec<Result<Response, NodeError>>) {
    for (reply, result) in replies.into_iter().zip(results) {
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(result);
    }
}

/// A rough size of a command in a log entry, for bounding batches.
fn estimate(command: &Command) -> usize {
    match command {
        Command::Enqueue { tasks } => tasks.iter().map(|t| 128 + t.payload.len()).sum(),
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

/// The leader's wall clock, the only clock that enters the log.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
