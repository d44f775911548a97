//! A crash loop for the RocksDB store, in the style of sled's crash tests.
//!
//! `crash_loop` re-executes this test binary as a child (`crash_child`,
//! selected by `SKEIN_CRASH_CHILD=<dir>`) that opens the store in `<dir>`,
//! recovers as openraft would (snapshot, then the log after it re-applied),
//! and then writes for ever, as openraft drives the stores: entries appended
//! (synced) and applied, now and then a conflicting uncommitted suffix
//! truncated and replaced under a new vote, snapshots built (some while more
//! entries are applied between capture and build, some then installed as a
//! follower receives one), the log purged behind them. Before the store sees an entry, the child writes it to a journal
//! file beside the store, and it prints what was acknowledged (appended,
//! committed, voted, snapshotted, purged).
//!
//! The parent kills the child with SIGKILL at a random moment (a delay from
//! a seeded RNG, sometimes before the child even finished recovering), then
//! opens the store itself and checks:
//! - everything acknowledged is there: the log reaches the last appended or
//!   committed entry, the vote, the purge point and the snapshot are at least
//!   what was acknowledged;
//! - the log is contiguous from the purge point to its end, every entry is the
//!   journal's, and the snapshot is at or past the purge point (no hole);
//! - the vote and committed meta are readable;
//! - the snapshot plus the log after it, applied, gives the digest (and
//!   membership, and cold data: payloads, results, histories) of a fresh
//!   in-memory state machine fed the journal's entries up to the log's end.
//!
//! Then it starts the next child on the same directory, so each kill lands
//! on a store that survived the earlier ones. About 50 kills in about 20 s.
//!
//! `SKEIN_CRASH_SEED` sets the seed (printed at the start and on failure);
//! `SKEIN_CRASH_KILLS` and `SKEIN_CRASH_SECS` change the kill count and the
//! time budget.
#![cfg(feature = "storage")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use skein_raft::config::{Entry, LogId, StoredMembership, Vote};
use skein_raft::fsm::catalog::NewEntity;
use skein_raft::fsm::*;
use skein_raft::store::{digest_of, open, LogStore, StateMachineStore, StoreHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHILD_ENV: &str = "SKEIN_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "SKEIN_CRASH_CHILD_SEED";
const SEED_ENV: &str = "SKEIN_CRASH_SEED";
const KILLS_ENV: &str = "SKEIN_CRASH_KILLS";
const SECS_ENV: &str = "SKEIN_CRASH_SECS";
/// Lines of the child's stdout that the parent reads start with this.
const TAG: &str = "@crash ";
/// A child left alone (its parent gone) stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ shared

/// SplitMix64: a seed means the same sequence whatever crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("journal")
}

/// One journal record: u32 length (big-endian), the bincode entry, then the
/// FNV-1a of those bytes. A record cut short by a kill fails its checksum.
fn journal_record(entry: &Entry) -> Vec<u8> {
    let bytes = bincode::serde::encode_to_vec(entry, bincode::config::standard()).expect("an entry encodes");
    let mut out = Vec::with_capacity(bytes.len() + 12);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&skein_raft::store::Fnv64::hash(&bytes).to_be_bytes());
    out
}

/// The whole records of `bytes`, with the end offset of each.
fn parse_journal(bytes: &[u8]) -> Vec<(Entry, usize)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let end = pos + 4 + len + 8;
        if end > bytes.len() {
            break;
        }
        let body = &bytes[pos + 4..pos + 4 + len];
        let sum = u64::from_be_bytes(bytes[pos + 4 + len..end].try_into().expect("8 bytes"));
        if sum != skein_raft::store::Fnv64::hash(body) {
            break;
        }
        let Ok((entry, _)) = bincode::serde::decode_from_slice::<Entry, _>(body, bincode::config::standard()) else {
            break;
        };
        out.push((entry, end));
        pos = end;
    }
    out
}

// ------------------------------------------------------------------ the child

/// The child process: see the module docs. A no-op unless run by `crash_loop`.
#[test]
#[ignore = "the crash loop's child process: crash_loop runs it"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let seed = std::env::var(CHILD_SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(Writer::run(PathBuf::from(dir), seed));
}

fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{TAG}{line}");
    let _ = out.flush();
}

/// The child's stores and what it writes next.
struct Writer {
    rng: Rng,
    log: LogStore,
    sm: StateMachineStore,
    h: StoreHandle,
    journal: File,
    /// Byte length of the journal (where the next record goes).
    journal_len: u64,
    /// The next log index and the term entries are written in.
    next: u64,
    term: u64,
    now: u64,
    counter: u64,
}

impl Writer {
    async fn run(dir: PathBuf, seed: u64) {
        let deadline = Instant::now() + CHILD_LIFETIME;
        let (mut log, mut sm) = open(&store_dir(&dir)).expect("opening the store");
        say("opened");
        // Recover as openraft does: the snapshot is loaded; the log after it is
        // applied again (every entry in a one-node log is committed).
        let state = log.get_log_state().await.expect("log state");
        let (applied, _) = sm.applied_state().await.expect("applied state");
        let last = state.last_log_id;
        let from = applied.map_or(1, |l| l.index + 1);
        let to = last.map_or(0, |l| l.index);
        let entries = log.try_get_log_entries(from..=to).await.expect("reading the log");
        sm.apply(entries).await.expect("replaying the log");
        let vote = log.read_vote().await.expect("reading the vote");
        let term = vote.map_or(1, |v| v.leader_id().term).max(last.map_or(1, |l| l.leader_id.term));
        let h = sm.handle();
        let now = h.state().clock_ms() + 1;
        let journal = OpenOptions::new().create(true).append(true).open(journal_path(&dir)).expect("the journal");
        let journal_len = journal.metadata().expect("journal metadata").len();
        say(format!("ready {to}"));
        let mut child = Writer {
            rng: Rng(seed),
            log,
            sm,
            h,
            journal,
            journal_len,
            next: to + 1,
            term,
            now,
            counter: seed % 1_000_000 * 1_000,
        };
        while Instant::now() < deadline {
            child.round().await;
            if child.rng.chance(12) {
                child.snapshot().await;
            }
            if child.rng.chance(4) {
                child.vote().await;
            }
        }
        say("lifetime over");
    }

    async fn vote(&mut self) {
        self.term += 1;
        self.log.save_vote(&Vote::new(self.term, 1)).await.expect("saving the vote");
        say(format!("vote {}", self.term));
    }

    fn journal_append(&mut self, entries: &[Entry]) {
        let mut bytes = Vec::new();
        for e in entries {
            bytes.extend(journal_record(e));
        }
        self.journal.write_all(&bytes).expect("writing the journal");
        self.journal_len += bytes.len() as u64;
    }

    /// Appends 1 to 4 entries, sometimes replaces a suffix of them (a
    /// conflict, under a new vote), then commits and applies them.
    async fn round(&mut self) {
        let first = self.next;
        let k = 1 + self.rng.below(4);
        let mut offsets = Vec::new();
        let mut entries = Vec::new();
        for i in 0..k {
            entries.push(self.entry(first + i));
        }
        for e in &entries {
            offsets.push(self.journal_len);
            self.journal_append(std::slice::from_ref(e));
        }
        self.log.append_entries(entries.clone()).await.expect("appending");
        say(format!("appended {}", first + k - 1));
        if k > 1 && self.rng.chance(15) {
            // A new leader's log wins over our uncommitted suffix.
            let keep = self.rng.below(k);
            let at = first + keep;
            self.vote().await;
            say(format!("truncating {at}"));
            self.log.truncate(log_id(self.term, at)).await.expect("truncating");
            self.journal.set_len(offsets[keep as usize]).expect("truncating the journal");
            self.journal_len = offsets[keep as usize];
            entries.truncate(keep as usize);
            let extra: Vec<Entry> = (0..1 + self.rng.below(3)).map(|i| self.entry(at + i)).collect();
            self.journal_append(&extra);
            self.log.append_entries(extra.clone()).await.expect("appending");
            entries.extend(extra);
            say(format!("appended {}", first + entries.len() as u64 - 1));
        }
        let last = entries.last().expect("entries").log_id;
        self.log.save_committed(Some(last)).await.expect("saving committed");
        self.sm.apply(entries).await.expect("applying");
        self.next = last.index + 1;
        say(format!("committed {}", last.index));
    }

    /// Builds a snapshot (sometimes applying a round between capture and
    /// build, as openraft lets `apply` go on), sometimes installs it as a
    /// follower would receive it, and purges the log behind it.
    async fn snapshot(&mut self) {
        let mut builder = self.sm.get_snapshot_builder().await;
        let behind = self.rng.chance(30);
        if behind {
            self.round().await;
        }
        let mut snap = builder.build_snapshot().await.expect("building a snapshot");
        let Some(at) = snap.meta.last_log_id else { return };
        say(format!("snapshot {}", at.index));
        // Installing is only right for a snapshot of the applied state
        // (openraft never installs one older than what is applied).
        if !behind && self.rng.chance(25) {
            let mut bytes = Vec::new();
            snap.snapshot.read_to_end(&mut bytes).await.expect("reading the snapshot");
            let mut file = self.sm.begin_receiving_snapshot().await.expect("receiving a snapshot");
            file.write_all(&bytes).await.expect("writing the received snapshot");
            file.flush().await.expect("writing the received snapshot");
            say(format!("installing {}", at.index));
            self.sm.install_snapshot(&snap.meta, file).await.expect("installing a snapshot");
            say(format!("installed {}", at.index));
        }
        let keep = self.rng.below(4);
        if at.index > keep {
            let p = at.index - keep;
            let entry = self.log.try_get_log_entries(p..=p).await.expect("reading the log");
            if let Some(e) = entry.first() {
                self.log.purge(e.log_id).await.expect("purging");
                say(format!("purged {p}"));
            }
        }
    }

    fn entry(&mut self, index: u64) -> Entry {
        self.now += self.rng.below(1_500);
        let payload = match self.rng.below(100) {
            0..=2 => EntryPayload::Blank,
            3..=4 => {
                let voters: BTreeSet<u64> = if self.rng.chance(50) { [1].into() } else { [1, 2].into() };
                EntryPayload::Membership(Membership::new(vec![voters], None))
            }
            _ => {
                let command = self.command(true);
                EntryPayload::Normal(Stamped { now_ms: self.now, command })
            }
        };
        Entry { log_id: log_id(self.term, index), payload }
    }

    /// A command made from the state as it is (earlier entries of the round
    /// are not applied yet, so some are stale or refused: as in life).
    fn command(&mut self, batch: bool) -> Command {
        let state = self.h.state();
        let node = 1 + self.rng.below(3);
        let ids = |status: TaskStatus| -> Vec<TaskId> {
            state.tasks(None, Some(status), None, 64).tasks.iter().map(|t| t.id).collect()
        };
        let rng = &mut self.rng;
        let pick = |rng: &mut Rng, v: &[TaskId]| v.get(rng.below(v.len() as u64) as usize).copied();
        let queue = |rng: &mut Rng| format!("q{}", rng.below(2));
        match rng.below(100) {
            0..=24 => {
                let dep = if rng.chance(20) { pick(rng, &ids(TaskStatus::Pending)) } else { None };
                let key = rng.chance(20).then(|| format!("k{}", rng.below(50)));
                let n = 1 + rng.below(4);
                let tasks = (0..n)
                    .map(|_| {
                        self.counter += 1;
                        let mut t = NewTask::new(
                            &queue(rng),
                            "noop",
                            &format!(r#"{{"n":{},"pad":"{}"}}"#, self.counter, "x".repeat(rng.below(200) as usize)),
                        );
                        t.idempotency_key = key.clone();
                        t.depends_on = dep.map(TaskRef::Id).into_iter().collect();
                        t.priority = rng.below(3) as i32 - 1;
                        t
                    })
                    .collect();
                Command::Enqueue { tasks }
            }
            25..=39 => Command::Lease { node, queues: Vec::new(), max: 1 + rng.below(3) as u32 },
            40..=59 => {
                let held: Vec<(TaskId, FencingToken)> = state
                    .leases_of(node)
                    .iter()
                    .filter_map(|t| t.lease.as_ref().map(|l| (t.id, l.token)))
                    .take(1 + rng.below(2) as usize)
                    .collect();
                if held.is_empty() {
                    return Command::ExpireLeases;
                }
                let completions = held
                    .into_iter()
                    .map(|(task, token)| Completion {
                        task,
                        token: if rng.chance(10) { FencingToken(token.0.wrapping_sub(1)) } else { token },
                        outcome: match rng.below(10) {
                            0..=5 => Outcome::Succeeded { result: format!(r#"{{"task":{task}}}"#) },
                            6..=8 => Outcome::Retryable { error: "try again".into() },
                            _ => Outcome::Permanent { error: "broken".into() },
                        },
                    })
                    .collect();
                Command::Complete { node, completions }
            }
            60..=64 => {
                let held = state
                    .leases_of(node)
                    .iter()
                    .filter_map(|t| t.lease.as_ref().map(|l| (t.id, l.token)))
                    .map(|(task, token)| HeldLease {
                        task,
                        token,
                        progress: Some(ReportedProgress { fraction: 0.5, message: "half way".into() }),
                    })
                    .collect();
                Command::Heartbeat { node, slots: 4, held }
            }
            65..=69 => Command::ExpireLeases,
            70..=72 => match pick(rng, &ids(TaskStatus::Pending)) {
                Some(task) => Command::Cancel { task, reason: "not needed".into() },
                None => Command::CollectGarbage,
            },
            73..=75 => match pick(rng, &ids(TaskStatus::Dead)).or_else(|| pick(rng, &ids(TaskStatus::Cancelled))) {
                Some(task) => Command::Retry { task },
                None => Command::ExpireLeases,
            },
            76..=78 => Command::ConfigureQueue {
                queue: queue(rng),
                patch: QueuePatch {
                    lease_ms: Some(500 + rng.below(3_000)),
                    max_attempts: Some(1 + rng.below(3) as u32),
                    retention_ms: Some(1_000 + rng.below(10_000)),
                    ..QueuePatch::default()
                },
            },
            79..=82 => Command::CollectGarbage,
            83..=84 => Command::DrainNode { node, draining: rng.chance(30) },
            85..=86 => Command::ReleaseNode { node, forget: rng.chance(20) },
            87..=88 => {
                let doc = rng.below(3);
                let entity = |name: &str, is_plan: bool, deps: &[&str]| NewEntity {
                    entity_ref: format!("component:default/{name}"),
                    is_plan,
                    queue: is_plan.then(|| "q1".to_string()),
                    owner: Some("team-infra".into()),
                    labels: BTreeMap::new(),
                    depends_on: deps.iter().map(|d| format!("component:default/{d}")).collect(),
                    document: format!(r#"{{"name":"{name}","doc":{doc}}}"#),
                };
                Command::ApplyPlans {
                    entities: vec![
                        entity("orders", false, &[]),
                        entity("p0", true, &["orders"]),
                        entity("p1", true, &["p0"]),
                        entity("p2", true, &["p1", "p0"]),
                    ],
                }
            }
            89..=90 => Command::RunPlans {
                refs: vec![format!("component:default/p{}", rng.below(3))],
                force: rng.chance(20),
                default_queue: "q0".into(),
                priority: 0,
            },
            91 => Command::SetFormat { format: 2 },
            92..=93 => Command::RedriveQueue { queue: queue(rng), max: 1 + rng.below(5) as u32 },
            _ if batch => {
                drop(state);
                let n = 2 + self.rng.below(3);
                Command::Batch((0..n).map(|_| self.command(false)).collect())
            }
            _ => Command::ExpireLeases,
        }
    }
}

// ------------------------------------------------------------------ the parent

/// Kills and reaps the child however the parent leaves (a failed check panics).
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child")
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the child said it had made durable, from its stdout.
#[derive(Debug, Default, Clone)]
struct Acked {
    ready: bool,
    /// The log must reach this index.
    log_floor: u64,
    committed: u64,
    vote: u64,
    snapshot: u64,
    purged: u64,
    lines: usize,
    truncations: usize,
    snapshots: usize,
    installs: usize,
}

impl Acked {
    fn read(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix(TAG) else { return };
        self.lines += 1;
        let mut words = rest.split_whitespace();
        let what = words.next().unwrap_or("");
        let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        match what {
            "ready" => {
                self.ready = true;
                self.committed = self.committed.max(n);
                self.log_floor = self.log_floor.max(n);
            }
            "appended" => self.log_floor = n,
            "truncating" => {
                self.truncations += 1;
                self.log_floor = self.log_floor.min(n - 1);
            }
            "committed" => {
                self.committed = self.committed.max(n);
                self.log_floor = self.log_floor.max(n);
            }
            "vote" => self.vote = self.vote.max(n),
            "snapshot" => {
                self.snapshots += 1;
                self.snapshot = self.snapshot.max(n);
            }
            "purged" => self.purged = self.purged.max(n),
            "installing" => self.installs += 1,
            _ => {}
        }
    }

    fn floor(&self) -> u64 {
        self.log_floor.max(self.committed)
    }
}

/// A fresh in-memory state machine fed the journal's entries: what the
/// store must hold.
struct Reference {
    sm: StateMachine,
    cold: MemCold,
    last: Option<LogId>,
    membership: StoredMembership,
}

impl Reference {
    fn apply(&mut self, entry: &Entry) {
        match &entry.payload {
            EntryPayload::Normal(stamped) => {
                self.sm.apply(stamped, &mut self.cold);
            }
            EntryPayload::Membership(m) => self.membership = StoredMembership::new(Some(entry.log_id), m.clone()),
            EntryPayload::Blank => {}
        }
        self.last = Some(entry.log_id);
    }
}

#[derive(Debug, Default)]
struct Stats {
    kills: usize,
    early_kills: usize,
    entries: u64,
    snapshots: usize,
    installs: usize,
    truncations: usize,
    max_log: u64,
    purged: u64,
}

struct Parent {
    dir: PathBuf,
    rng: Rng,
    /// The journal's verified entries (index i + 1 at i) and its byte length.
    journal: Vec<Entry>,
    journal_bytes: u64,
    reference: Reference,
    /// Floors that hold across children (a later child never lowers them).
    acked: Acked,
    stats: Stats,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Kills the store's writer over and over; see the module docs.
#[test]
fn crash_loop() {
    let seed = env_u64(SEED_ENV).unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let kills = env_u64(KILLS_ENV).unwrap_or(50) as usize;
    let budget = Duration::from_secs(env_u64(SECS_ENV).unwrap_or(20));
    eprintln!("crash loop: seed {seed} ({SEED_ENV}={seed} repeats it), {kills} kills, {budget:?} at most");
    let tmp = tempfile::TempDir::new().expect("a temp dir");
    let mut parent = Parent {
        dir: tmp.path().to_path_buf(),
        rng: Rng(seed),
        journal: Vec::new(),
        journal_bytes: 0,
        reference: Reference {
            sm: StateMachine::new(),
            cold: MemCold::default(),
            last: None,
            membership: StoredMembership::default(),
        },
        acked: Acked::default(),
        stats: Stats::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let started = Instant::now();
    while parent.stats.kills < kills && started.elapsed() < budget {
        if let Err(e) = parent.once(&rt) {
            panic!(
                "crash loop failed at kill #{} ({SEED_ENV}={seed} repeats the schedule; timing may differ): {e}",
                parent.stats.kills
            );
        }
    }
    let s = &parent.stats;
    eprintln!(
        "crash loop: seed {seed}: {} kills ({} before the child was ready) in {:.1?}; {} entries, {} snapshots \
         ({} installed), {} truncated suffixes, longest log {} entries, purged up to {}",
        s.kills,
        s.early_kills,
        started.elapsed(),
        s.entries,
        s.snapshots,
        s.installs,
        s.truncations,
        s.max_log,
        s.purged
    );
    assert!(s.kills >= kills.min(10), "only {} kills in {budget:?} ({SEED_ENV}={seed})", s.kills);
    assert!(s.entries > 0, "the children wrote nothing ({SEED_ENV}={seed})");
}

impl Parent {
    /// One child: started, killed at a random moment, the store checked.
    fn once(&mut self, rt: &tokio::runtime::Runtime) -> Result<(), String> {
        let child_seed = self.rng.next();
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let child = Process::new(exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &self.dir)
            .env(CHILD_SEED_ENV, child_seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the child: {e}"))?;
        let mut guard = ChildGuard(Some(child));
        let lines = pipe_lines(guard.child().stdout.take().expect("piped stdout"));
        let stderr = guard.child().stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });

        let mut acked = self.acked.clone();
        acked.ready = false;
        // Mostly a while after the child is ready; sometimes during its start
        // and recovery.
        let early = self.rng.chance(15);
        let delay = Duration::from_millis(if early { self.rng.below(80) } else { self.rng.below(250) });
        let mut died = None;
        if !early {
            let until = Instant::now() + Duration::from_secs(30);
            while !acked.ready {
                match lines.recv_timeout(Duration::from_millis(20)) {
                    Ok(line) => acked.read(&line),
                    Err(RecvTimeoutError::Timeout) if Instant::now() < until => {
                        if let Ok(Some(status)) = guard.child().try_wait() {
                            died = Some(status);
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => return Err("the child was not ready in 30 s".into()),
                    Err(RecvTimeoutError::Disconnected) => {
                        died = guard.child().wait().ok();
                        break;
                    }
                }
            }
        }
        let kill_at = Instant::now() + delay;
        while died.is_none() && Instant::now() < kill_at {
            match lines.recv_timeout(kill_at.saturating_duration_since(Instant::now())) {
                Ok(line) => acked.read(&line),
                Err(_) => {
                    if let Ok(Some(status)) = guard.child().try_wait() {
                        died = Some(status);
                    }
                }
            }
        }
        if died.is_none() {
            died = guard.child().try_wait().ok().flatten();
        }
        guard.kill();
        for line in lines.iter() {
            acked.read(&line);
        }
        let stderr = stderr.join().unwrap_or_default();
        if let Some(status) = died {
            return Err(format!("the child exited by itself ({status}); its stderr:\n{stderr}"));
        }
        self.stats.kills += 1;
        if !acked.ready {
            self.stats.early_kills += 1;
        }
        self.stats.truncations += acked.truncations - self.acked.truncations;
        self.stats.snapshots += acked.snapshots - self.acked.snapshots;
        self.stats.installs += acked.installs - self.acked.installs;
        rt.block_on(self.verify(&acked)).map_err(|e| format!("{e}\nthe child's stderr:\n{stderr}"))?;
        self.acked = acked;
        Ok(())
    }

    /// Opens the store the child left and checks it against the journal.
    async fn verify(&mut self, acked: &Acked) -> Result<(), String> {
        // The journal's new records (a torn last one is ignored).
        // (None yet if the first child was killed before it made one.)
        let bytes = match std::fs::read(journal_path(&self.dir)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("reading the journal: {e}")),
        };
        let tail = bytes.get(self.journal_bytes as usize..).unwrap_or(&[]);
        let journal: Vec<(Entry, u64)> =
            parse_journal(tail).into_iter().map(|(e, end)| (e, self.journal_bytes + end as u64)).collect();
        for (i, (e, _)) in journal.iter().enumerate() {
            let want = self.journal.len() as u64 + i as u64 + 1;
            if e.log_id.index != want {
                return Err(format!("journal record {want} holds entry {}", e.log_id));
            }
        }

        let (mut log, mut sm) = open(&store_dir(&self.dir)).map_err(|e| format!("reopening the store: {e}"))?;
        let h = sm.handle();
        let state = log.get_log_state().await.map_err(|e| format!("log state: {e}"))?;
        let vote = log.read_vote().await.map_err(|e| format!("the vote is unreadable: {e}"))?;
        let committed = log.read_committed().await.map_err(|e| format!("committed is unreadable: {e}"))?;
        let purged = state.last_purged_log_id.map_or(0, |l| l.index);
        let last = state.last_log_id.map_or(0, |l| l.index);

        // Everything acknowledged is there.
        if last < acked.floor() || last < self.journal.len() as u64 {
            return Err(format!(
                "the log ends at {last}, but entries up to {} were acknowledged ({} verified before)",
                acked.floor(),
                self.journal.len()
            ));
        }
        let voted = vote.map_or(0, |v| v.leader_id().term);
        if voted < acked.vote {
            return Err(format!("the vote is term {voted}, but term {} was saved", acked.vote));
        }
        if purged < acked.purged {
            return Err(format!("purged up to {purged}, but a purge up to {} returned", acked.purged));
        }
        if let Some(c) = committed {
            if c.index > last {
                return Err(format!("committed {c} is past the log's end {last}"));
            }
        }

        // The log: contiguous from the purge point, and the journal's.
        let entries = log.try_get_log_entries(purged + 1..=last).await.map_err(|e| format!("reading the log: {e}"))?;
        if entries.len() as u64 != last - purged {
            let have: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
            return Err(format!("the log between {purged} and {last} has holes: it holds {have:?}"));
        }
        let verified = self.journal.len() as u64;
        if verified + (journal.len() as u64) < last {
            return Err(format!("the log ends at {last}, past the journal's {}", verified + journal.len() as u64));
        }
        for (i, e) in entries.iter().enumerate() {
            let index = purged + 1 + i as u64;
            let want = if index <= verified {
                &self.journal[index as usize - 1]
            } else {
                &journal[(index - verified - 1) as usize].0
            };
            if e.log_id.index != index || e != want {
                return Err(format!("log entry {index} is {e:?}, but the journal has {want:?}"));
            }
        }

        // The snapshot, and the log after it, replayed.
        let (applied, _) = sm.applied_state().await.map_err(|e| format!("applied state: {e}"))?;
        let at = applied.map_or(0, |l| l.index);
        if at < purged {
            return Err(format!("the snapshot is at {at} but the log is purged up to {purged}: entries lost"));
        }
        if at > last {
            return Err(format!("the snapshot is at {at}, past the log's end {last}"));
        }
        if at < acked.snapshot {
            return Err(format!("the snapshot is at {at}, but one at {} was built", acked.snapshot));
        }
        let current = sm.get_current_snapshot().await.map_err(|e| format!("current snapshot: {e}"))?;
        if current.as_ref().map(|s| s.meta.last_log_id) != applied.map(Some) {
            let meta = current.map(|s| s.meta);
            return Err(format!("the loaded state is at {applied:?} but the current snapshot is {meta:?}"));
        }
        let names: Vec<String> = std::fs::read_dir(store_dir(&self.dir).join("snapshots"))
            .map_err(|e| format!("listing snapshots: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if names.iter().any(|n| n != "current.snap") {
            return Err(format!("files left in snapshots/ after open: {names:?}"));
        }
        let replay: Vec<Entry> = entries.iter().filter(|e| e.log_id.index > at).cloned().collect();
        sm.apply(replay).await.map_err(|e| format!("replaying the log: {e}"))?;

        // The reference, fed the journal up to the log's end.
        for (e, _) in journal.iter().take((last - verified) as usize) {
            self.reference.apply(e);
        }
        let want = digest_of(&self.reference.sm, self.reference.last).map_err(|e| format!("digest: {e}"))?;
        let got = h.digest().map_err(|e| format!("digest: {e}"))?;
        if got != want || h.last_applied() != self.reference.last {
            return Err(format!(
                "replayed state differs from a fresh state machine fed the same {last} entries \
                 (snapshot at {at}, log {purged}..={last}): digest {got:#x} at {:?}, want {want:#x} at {:?}",
                h.last_applied(),
                self.reference.last
            ));
        }
        let (_, membership) = sm.applied_state().await.map_err(|e| format!("applied state: {e}"))?;
        if membership != self.reference.membership {
            return Err(format!("membership {membership:?}, want {:?}", self.reference.membership));
        }
        h.state().check_invariants().map_err(|e| format!("invariants after replay: {e}"))?;
        for t in self.reference.sm.tasks(None, None, None, usize::MAX).tasks {
            let id = t.id;
            let payload = h.payload(id).map_err(|e| format!("payload of {id}: {e}"))?;
            let result = h.result(id).map_err(|e| format!("result of {id}: {e}"))?;
            let history = h.history(id).map_err(|e| format!("history of {id}: {e}"))?;
            let cold = &self.reference.cold;
            if payload.as_ref() != cold.payloads.get(&id)
                || result.as_ref() != cold.results.get(&id)
                || history != cold.history(id)
            {
                return Err(format!(
                    "cold data of task {id} differs: payload {payload:?} result {result:?} {} events; want {:?} {:?} \
                     {} events",
                    history.len(),
                    cold.payloads.get(&id),
                    cold.results.get(&id),
                    cold.history(id).len()
                ));
            }
        }
        drop((log, sm, h));

        // Keep the journal up to the log's end: the rest never reached the
        // store, and the next child appends after it.
        let keep = (last - verified) as usize;
        let end = if keep == 0 { self.journal_bytes } else { journal[keep - 1].1 };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(journal_path(&self.dir))
            .map_err(|e| format!("journal: {e}"))?;
        file.set_len(end).map_err(|e| format!("truncating the journal: {e}"))?;
        self.journal.extend(journal.into_iter().take(keep).map(|(e, _)| e));
        self.journal_bytes = end;
        self.stats.entries = last;
        self.stats.max_log = self.stats.max_log.max(last - purged);
        self.stats.purged = purged;
        Ok(())
    }
}

/// The lines of a pipe, from a thread, until it closes.
fn pipe_lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
