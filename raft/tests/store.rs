//! The RocksDB stores: openraft's conformance suite, restart from a snapshot
//! plus log replay, snapshot transfer between stores, and damaged snapshots.

use std::collections::BTreeSet;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageIOError};
use skein_raft::config::{Entry, LogId, StorageError, StoredMembership, TypeConfig, Vote};
use skein_raft::fsm::{Command, Completion, NewTask, Outcome, Response, Stamped, TaskId, TaskStatus};
use skein_raft::store::{open, LogStore, StateMachineStore, StoreHandle};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ------------------------------------------------------------ conformance

struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) = open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        // The guard comes first so that it outlives the stores it holds the files of.
        Ok((dir, log, sm))
    }
}

/// openraft's storage conformance suite, every case.
#[test]
fn openraft_storage_suite() -> Result<(), Box<StorageError>> {
    Suite::test_all(TempStores).map_err(Box::new)
}

// ------------------------------------------------------------ a workload

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn normal(index: u64, now_ms: u64, command: Command) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Stamped { now_ms, command }) }
}

fn membership(index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    Entry { log_id: log_id(index), payload: EntryPayload::Membership(Membership::new(vec![voters], None)) }
}

/// A 1 KiB JSON payload that names its task.
fn payload(n: usize) -> String {
    let pad = "x".repeat(1000);
    format!(r#"{{"n":{n},"pad":"{pad}"}}"#)
}

/// Builds entries from the responses to earlier ones (a lease's tokens feed
/// the completions), applying each to `sm` and appending it to `log`.
struct Workload {
    next_index: u64,
    now_ms: u64,
    entries: Vec<Entry>,
}

impl Workload {
    fn new() -> Self {
        Workload { next_index: 1, now_ms: 1_000, entries: Vec::new() }
    }

    async fn push(
        &mut self,
        log: &mut LogStore,
        sm: &mut StateMachineStore,
        entry: Entry,
    ) -> Result<Response, StorageError> {
        log.append_entries([entry.clone()]).await.map_err(|e| StorageIOError::write(&e))?;
        self.entries.push(entry.clone());
        self.next_index += 1;
        let mut responses = sm.apply([entry]).await?;
        assert_eq!(responses.len(), 1);
        Ok(responses.remove(0))
    }

    async fn command(
        &mut self,
        log: &mut LogStore,
        sm: &mut StateMachineStore,
        command: Command,
    ) -> Result<Response, StorageError> {
        self.now_ms += 100;
        let entry = normal(self.next_index, self.now_ms, command);
        self.push(log, sm, entry).await
    }

    async fn enqueue(
        &mut self,
        log: &mut LogStore,
        sm: &mut StateMachineStore,
        from: usize,
        n: usize,
    ) -> Result<Vec<TaskId>, StorageError> {
        let tasks = (from..from + n).map(|i| NewTask::new("migrate", "noop", &payload(i))).collect();
        match self.command(log, sm, Command::Enqueue { tasks }).await? {
            Response::Enqueued(e) => Ok(e.into_iter().map(|e| e.id).collect()),
            other => panic!("enqueue answered {other:?}"),
        }
    }

    /// Leases `max` tasks to node 1 and completes them: all but the last
    /// succeed (with a result), the last fails retryably.
    async fn lease_and_complete(
        &mut self,
        log: &mut LogStore,
        sm: &mut StateMachineStore,
        max: u32,
    ) -> Result<(), StorageError> {
        let granted = match self.command(log, sm, Command::Lease { node: 1, queues: vec![], max }).await? {
            Response::Leased(g) => g,
            other => panic!("lease answered {other:?}"),
        };
        assert_eq!(granted.len(), max as usize);
        let last = granted.len() - 1;
        let completions = granted
            .iter()
            .enumerate()
            .map(|(i, g)| Completion {
                task: g.task,
                token: g.token,
                outcome: if i == last {
                    Outcome::Retryable { error: "disk full".into() }
                } else {
                    Outcome::Succeeded { result: format!(r#"{{"rows":{}}}"#, g.task.0 * 10) }
                },
            })
            .collect();
        match self.command(log, sm, Command::Complete { node: 1, completions }).await? {
            Response::Completed(results) => assert!(results.iter().all(|r| r.is_ok()), "{results:?}"),
            other => panic!("complete answered {other:?}"),
        }
        Ok(())
    }
}

async fn snapshot(sm: &mut StateMachineStore) -> Result<openraft::Snapshot<TypeConfig>, StorageError> {
    sm.get_snapshot_builder().await.build_snapshot().await
}

/// Everything a reader sees of tasks `ids`: payload, result, history.
fn cold_view(h: &StoreHandle, ids: &[TaskId]) -> Vec<(Option<String>, Option<String>, usize)> {
    ids.iter()
        .map(|id| {
            (
                h.payload(*id).expect("payload read"),
                h.result(*id).expect("result read"),
                h.history(*id).expect("history read").len(),
            )
        })
        .collect()
}

// ------------------------------------------------------------ restart

/// Apply, snapshot, apply more, restart: the state comes back as the
/// snapshot's, and replaying the log after it gives the same state again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loads_the_snapshot_and_replays_the_log() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, mut sm) = open(dir.path())?;
    let h = sm.handle();
    let mut w = Workload::new();

    log.save_vote(&Vote::new(1, 1)).await?;
    w.push(&mut log, &mut sm, membership(1, &[1])).await?;
    let first = w.enqueue(&mut log, &mut sm, 0, 20).await?;
    w.lease_and_complete(&mut log, &mut sm, 5).await?;

    let snap = snapshot(&mut sm).await?;
    let snap_index = w.next_index - 1;
    assert_eq!(snap.meta.last_log_id, Some(log_id(snap_index)));
    let digest_at_snapshot = h.digest()?;

    let second = w.enqueue(&mut log, &mut sm, 20, 10).await?;
    w.lease_and_complete(&mut log, &mut sm, 8).await?;
    match w.command(&mut log, &mut sm, Command::Cancel { task: second[9], reason: "not needed".into() }).await? {
        Response::Task { status: TaskStatus::Cancelled, .. } => {}
        other => panic!("cancel answered {other:?}"),
    }
    let last_index = w.next_index - 1;
    let digest_at_end = h.digest()?;
    assert_ne!(digest_at_snapshot, digest_at_end);
    let all: Vec<TaskId> = first.iter().chain(&second).copied().collect();
    let cold_before = cold_view(&h, &all);
    assert!(cold_before.iter().all(|(p, _, hist)| p.is_some() && *hist > 0));
    assert!(cold_before.iter().filter(|(_, r, _)| r.is_some()).count() >= 4 + 7);

    let snap_meta = snap.meta.clone();
    drop((log, sm, h, snap));
    let (mut log, mut sm) = open(dir.path())?;
    let h = sm.handle();

    // The state is the snapshot's, never anything newer...
    let (applied, members) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(snap_index)));
    assert_eq!(members, StoredMembership::new(Some(log_id(1)), Membership::new(vec![BTreeSet::from([1])], None)));
    assert_eq!(h.last_applied(), Some(log_id(snap_index)));
    assert_eq!(h.digest()?, digest_at_snapshot);
    // ...the log and the vote are all there...
    assert_eq!(log.read_vote().await?, Some(Vote::new(1, 1)));
    assert_eq!(log.get_log_state().await?.last_log_id, Some(log_id(last_index)));
    let current = sm.get_current_snapshot().await?.expect("a snapshot after restart");
    assert_eq!(current.meta, snap_meta);

    // ...and replaying the entries after the snapshot, as openraft does,
    // gives the same state as before the restart.
    let replay = log.try_get_log_entries(snap_index + 1..).await?;
    assert_eq!(replay, w.entries[snap_index as usize..].to_vec());
    sm.apply(replay).await?;
    assert_eq!(h.last_applied(), Some(log_id(last_index)));
    assert_eq!(h.digest()?, digest_at_end);
    assert_eq!(cold_view(&h, &all), cold_before);
    let history = h.history(first[0])?;
    assert!(matches!(history.first().map(|e| &e.what), Some(skein_raft::fsm::EventKind::Enqueued { .. })));
    h.state().check_invariants()?;
    Ok(())
}

// ------------------------------------------------------------ transfer

/// Fills a store with some state and builds a snapshot of it.
async fn store_with_snapshot(
    dir: &TempDir,
) -> Result<(LogStore, StateMachineStore, Vec<TaskId>, openraft::Snapshot<TypeConfig>), Box<dyn std::error::Error>> {
    let (mut log, mut sm) = open(dir.path())?;
    let mut w = Workload::new();
    w.push(&mut log, &mut sm, membership(1, &[1, 2, 3])).await?;
    let mut ids = w.enqueue(&mut log, &mut sm, 0, 50).await?;
    w.lease_and_complete(&mut log, &mut sm, 10).await?;
    ids.extend(w.enqueue(&mut log, &mut sm, 50, 5).await?);
    let snap = snapshot(&mut sm).await?;
    Ok((log, sm, ids, snap))
}

/// Streams `bytes` into a fresh receiving file of `sm`, the way openraft
/// writes the chunks a leader sends.
async fn receive(sm: &mut StateMachineStore, bytes: &[u8]) -> Result<Box<tokio::fs::File>, Box<dyn std::error::Error>> {
    let mut file = sm.begin_receiving_snapshot().await?;
    for chunk in bytes.chunks(64 * 1024) {
        file.write_all(chunk).await?;
    }
    file.shutdown().await?;
    Ok(file)
}

async fn read_all(mut snapshot: Box<tokio::fs::File>) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    snapshot.seek(std::io::SeekFrom::Start(0)).await?;
    snapshot.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// A snapshot built on A and installed on a fresh B gives B the same state,
/// cold data included, and B keeps it across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_installs_into_a_fresh_store() -> TestResult {
    let dir_a = TempDir::new()?;
    let (_log_a, mut sm_a, ids, snap) = store_with_snapshot(&dir_a).await?;
    let a = sm_a.handle();
    let bytes = read_all(sm_a.get_current_snapshot().await?.expect("A has a snapshot").snapshot).await?;

    let dir_b = TempDir::new()?;
    let (_log_b, mut sm_b) = open(dir_b.path())?;
    let b = sm_b.handle();
    let file = receive(&mut sm_b, &bytes).await?;
    sm_b.install_snapshot(&snap.meta, file).await?;

    assert_eq!(sm_b.applied_state().await?, sm_a.applied_state().await?);
    assert_eq!(b.digest()?, a.digest()?);
    assert_eq!(cold_view(&b, &ids), cold_view(&a, &ids));
    assert!(cold_view(&b, &ids).iter().all(|(p, _, _)| p.is_some()));
    let current = sm_b.get_current_snapshot().await?.expect("B keeps the installed snapshot");
    assert_eq!(current.meta, snap.meta);
    assert_eq!(read_all(current.snapshot).await?, bytes);
    // No temp file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir_b.path().join("snapshots"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, vec!["current.snap".to_string()]);

    let digest = b.digest()?;
    drop((_log_b, sm_b, b));
    let (_log_b, mut sm_b) = open(dir_b.path())?;
    let b = sm_b.handle();
    assert_eq!(sm_b.applied_state().await?.0, snap.meta.last_log_id);
    assert_eq!(b.digest()?, digest);
    assert_eq!(cold_view(&b, &ids), cold_view(&a, &ids));
    Ok(())
}

/// A damaged or truncated snapshot is refused with an error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshots_are_refused() -> TestResult {
    let dir_a = TempDir::new()?;
    let (_log_a, mut sm_a, _ids, snap) = store_with_snapshot(&dir_a).await?;
    let bytes = read_all(sm_a.get_current_snapshot().await?.expect("a snapshot").snapshot).await?;

    let dir_b = TempDir::new()?;
    let (_log_b, mut sm_b) = open(dir_b.path())?;
    let b = sm_b.handle();
    let empty = b.digest()?;

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let truncated = &bytes[..bytes.len() - 100];
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    for damaged in [&flipped[..], truncated, &wrong_magic[..], &[][..]] {
        let file = receive(&mut sm_b, damaged).await?;
        let err = sm_b.install_snapshot(&snap.meta, file).await;
        assert!(err.is_err(), "a damaged snapshot of {} bytes was installed", damaged.len());
        assert_eq!(b.digest()?, empty);
        assert_eq!(sm_b.applied_state().await?.0, None);
        assert!(sm_b.get_current_snapshot().await?.is_none());
    }
    // The intact file still installs.
    let file = receive(&mut sm_b, &bytes).await?;
    sm_b.install_snapshot(&snap.meta, file).await?;
    assert_eq!(sm_b.applied_state().await?.0, snap.meta.last_log_id);
    Ok(())
}

/// The builder captures the state when openraft asks for it: entries applied
/// while the file is being written are not in it (hot or cold), and a
/// snapshot that finishes after a newer one does not replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_the_state_at_capture_time() -> TestResult {
    let dir_a = TempDir::new()?;
    let (mut log, mut sm) = open(dir_a.path())?;
    let a = sm.handle();
    let mut w = Workload::new();
    w.push(&mut log, &mut sm, membership(1, &[1])).await?;
    let early = w.enqueue(&mut log, &mut sm, 0, 10).await?;
    let captured_at = a.last_applied();
    let digest_at_capture = a.digest()?;
    let mut builder = sm.get_snapshot_builder().await;

    // Applying goes on while the builder waits.
    let late = w.enqueue(&mut log, &mut sm, 10, 10).await?;
    w.lease_and_complete(&mut log, &mut sm, 3).await?;
    let newer = snapshot(&mut sm).await?;
    assert_eq!(newer.meta.last_log_id, a.last_applied());

    let older = builder.build_snapshot().await?;
    assert_eq!(older.meta.last_log_id, captured_at);
    // The newer snapshot stays the current one.
    let current = sm.get_current_snapshot().await?.expect("a current snapshot");
    assert_eq!(current.meta, newer.meta);

    // The older snapshot holds exactly the state at capture time.
    let dir_b = TempDir::new()?;
    let (_log_b, mut sm_b) = open(dir_b.path())?;
    let b = sm_b.handle();
    let bytes = read_all(older.snapshot).await?;
    let file = receive(&mut sm_b, &bytes).await?;
    sm_b.install_snapshot(&older.meta, file).await?;
    assert_eq!(b.digest()?, digest_at_capture);
    assert!(early.iter().all(|id| b.payload(*id).ok().flatten().is_some()));
    assert!(late.iter().all(|id| b.payload(*id).ok().flatten().is_none()));
    assert!(early.iter().all(|id| b.result(*id).ok().flatten().is_none()));
    Ok(())
}

// ------------------------------------------------------------ backup and restore

/// A backup (the snapshot file) restored into an empty directory: the same
/// tasks, payloads, results and histories; every lease handed back; tokens
/// in the next epoch; no log position and no membership (the node
/// bootstraps a new cluster on it). Damaged backups and non-empty
/// directories are refused, and nothing is created for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_an_empty_directory_only() -> TestResult {
    let dir_a = TempDir::new()?;
    let (mut log_a, mut sm_a, ids, _) = store_with_snapshot(&dir_a).await?;
    // Leases still held when the backup is taken.
    let mut w = Workload { next_index: 100, now_ms: 50_000, entries: Vec::new() };
    let held = match w.command(&mut log_a, &mut sm_a, Command::Lease { node: 2, queues: vec![], max: 3 }).await? {
        Response::Leased(g) => g,
        other => panic!("lease answered {other:?}"),
    };
    let old_max = held.iter().map(|g| g.token.0).max().expect("three leases");
    snapshot(&mut sm_a).await?;
    let a = sm_a.handle();
    let backup = dir_a.path().join("snapshots/current.snap");

    // Refused: damaged, truncated, not a snapshot, a directory in use.
    let bytes = std::fs::read(&backup)?;
    let bad = TempDir::new()?;
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    for (name, content) in
        [("flipped", flipped), ("truncated", bytes[..bytes.len() - 100].to_vec()), ("text", b"hello".to_vec())]
    {
        let path = bad.path().join(name);
        std::fs::write(&path, content)?;
        let target = bad.path().join(format!("{name}-data"));
        let err = skein_raft::store::restore(&target, &path).expect_err(name).to_string();
        assert!(err.contains("corrupt snapshot") || err.contains("shorter"), "{name}: {err}");
        assert!(!target.exists(), "{name}: a refused restore created {}", target.display());
    }
    let err = skein_raft::store::restore(dir_a.path(), &backup).expect_err("non-empty").to_string();
    assert!(err.contains("not empty"), "{err}");

    // Restored.
    let dir_b = TempDir::new()?;
    let report = skein_raft::store::restore(&dir_b.path().join("data"), &backup)?;
    assert_eq!(report.epoch.epoch, 1);
    assert_eq!(report.epoch.released.len(), 3);
    assert_eq!(report.tasks, a.state().task_count());
    let (_log_b, mut sm_b) = open(&dir_b.path().join("data"))?;
    let b = sm_b.handle();
    assert_eq!(sm_b.applied_state().await?.0, None, "a restored directory has no log position");
    assert!(b.state().membership().membership().voter_ids().next().is_none(), "and no membership");
    assert_eq!(b.state().lease_count(2), 0);
    assert!(b.state().nodes().is_empty());
    for id in &ids {
        let (old, new) = (a.state().task(*id).cloned(), b.state().task(*id).cloned());
        let (old, new) = (old.expect("old task"), new.expect("restored task"));
        if held.iter().any(|g| g.task == *id) {
            assert_eq!(new.status, TaskStatus::Pending, "a leased task is pending again");
            assert_eq!(b.history(*id)?.len(), a.history(*id)?.len() + 1, "with a `released` event");
        } else {
            assert_eq!(new, old);
            assert_eq!(b.history(*id)?, a.history(*id)?);
        }
        assert_eq!(b.payload(*id)?, a.payload(*id)?);
        assert_eq!(b.result(*id)?, a.result(*id)?);
    }
    // The next token is the new epoch's first, past every old one.
    let mut w = Workload { next_index: 1, now_ms: 60_000, entries: Vec::new() };
    let (mut log_b, _) = (_log_b, ());
    let granted = match w.command(&mut log_b, &mut sm_b, Command::Lease { node: 5, queues: vec![], max: 1 }).await? {
        Response::Leased(g) => g,
        other => panic!("lease answered {other:?}"),
    };
    assert_eq!(granted[0].token.0, 1 << skein_raft::fsm::EPOCH_SHIFT);
    assert!(granted[0].token.0 > old_max);
    Ok(())
}
