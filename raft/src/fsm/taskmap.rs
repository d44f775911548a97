//! [`TaskMap`]: the tasks by id, in a dense chunked table.
//!
//! Task ids are handed out in order (`next_task_id`), so the tasks of a
//! queue that is mostly full of recent work sit next to each other. A
//! `BTreeMap<TaskId, Task>` pays for that order twice: nodes at half to two
//! thirds full after sequential inserts, plus the key and node headers. Here
//! a task lives in slot `id % CHUNK` of chunk `id / CHUNK`; a chunk is
//! allocated with its first task and freed with its last (garbage
//! collection forgets ended tasks roughly in id order, so chunks drain).
//! That is about 60% of the B-tree's memory per task for a deep queue.
//!
//! It offers the part of `BTreeMap`'s API the state machine uses, iterates
//! in id order like it, and serializes exactly as a `BTreeMap<TaskId, Task>`
//! does (a map of id to task), so snapshots are unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Bound, RangeBounds};

use super::types::{Task, TaskId};

/// Tasks per chunk. A chunk is `CHUNK * size_of::<Task>()` bytes (~75 KiB).
const CHUNK: u64 = 256;

/// The tasks by id. Invariant: the task in the slot of id `i` has `id == i`.
#[derive(Clone, Default, PartialEq)]
pub struct TaskMap {
    chunks: BTreeMap<u64, Chunk>,
    len: usize,
}

#[derive(Clone, PartialEq)]
struct Chunk {
    /// Occupied slots.
    live: u32,
    slots: Box<[Option<Task>]>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk { live: 0, slots: (0..CHUNK).map(|_| None).collect() }
    }
}

fn split(id: TaskId) -> (u64, usize) {
    (id.0 / CHUNK, (id.0 % CHUNK) as usize)
}

impl TaskMap {
    pub fn new() -> TaskMap {
        TaskMap::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[allow(dead_code)] // BTreeMap's API; the tests use it
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        let (c, s) = split(*id);
        self.chunks.get(&c)?.slots[s].as_ref()
    }

    pub fn get_mut(&mut self, id: &TaskId) -> Option<&mut Task> {
        let (c, s) = split(*id);
        self.chunks.get_mut(&c)?.slots[s].as_mut()
    }

    /// Inserts `task` under `id` (which must be `task.id`); returns the task
    /// it replaced.
    pub fn insert(&mut self, id: TaskId, task: Task) -> Option<Task> {
        debug_assert_eq!(id, task.id, "a task is stored under its own id");
        let (c, s) = split(id);
        let chunk = self.chunks.entry(c).or_insert_with(Chunk::new);
        let old = chunk.slots[s].replace(task);
        if old.is_none() {
            chunk.live += 1;
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, id: &TaskId) -> Option<Task> {
        let (c, s) = split(*id);
        let chunk = self.chunks.get_mut(&c)?;
        let old = chunk.slots[s].take()?;
        chunk.live -= 1;
        self.len -= 1;
        if chunk.live == 0 {
            self.chunks.remove(&c);
        }
        Some(old)
    }

    /// Tasks in id order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Task> + '_ {
        self.chunks.values().flat_map(|c| c.slots.iter().flatten())
    }

    /// Tasks in id order, mutable. Changing a task's `id` breaks the map.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Task> + '_ {
        self.chunks.values_mut().flat_map(|c| c.slots.iter_mut().flatten())
    }

    /// Ids in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &TaskId> + '_ {
        self.values().map(|t| &t.id)
    }

    /// `(id, task)` in id order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&TaskId, &Task)> + '_ {
        self.values().map(|t| (&t.id, t))
    }

    /// `(id, task)` for the ids in `range`, in order.
    pub fn range<R: RangeBounds<TaskId>>(&self, range: R) -> impl DoubleEndedIterator<Item = (&TaskId, &Task)> + '_ {
        let lo = match range.start_bound() {
            Bound::Included(id) => Bound::Included(id.0),
            Bound::Excluded(id) => Bound::Excluded(id.0),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match range.end_bound() {
            Bound::Included(id) => Bound::Included(id.0),
            Bound::Excluded(id) => Bound::Excluded(id.0),
            Bound::Unbounded => Bound::Unbounded,
        };
        let first_chunk = match lo {
            Bound::Included(i) | Bound::Excluded(i) => i / CHUNK,
            Bound::Unbounded => 0,
        };
        let last_chunk = match hi {
            Bound::Included(i) | Bound::Excluded(i) => i / CHUNK,
            Bound::Unbounded => u64::MAX,
        };
        self.chunks
            .range(first_chunk..=last_chunk)
            .flat_map(|(_, c)| c.slots.iter().flatten())
            .filter(move |t| (lo, hi).contains(&t.id.0))
            .map(|t| (&t.id, t))
    }
}

impl fmt::Debug for TaskMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::types::TaskStatus;
    use std::sync::Arc;

    fn task(id: u64) -> Task {
        Task {
            id: TaskId(id),
            queue: Arc::from("q"),
            kind: Arc::from("noop"),
            priority: 0,
            status: TaskStatus::Pending,
            attempt: 0,
            max_attempts: 1,
            not_before_ms: 0,
            idempotency_key: None,
            depends_on: Vec::new(),
            lease: None,
            last_node: None,
            progress: None,
            last_error: None,
            expiry_streak: 0,
            payload_bytes: 0,
            created_ms: 0,
            first_started_ms: None,
            last_started_ms: None,
            finished_ms: None,
            history_len: 0,
        }
    }

    /// Random inserts and removes against a `BTreeMap`: same contents, same
    /// order, same ranges, same serialization.
    #[test]
    fn behaves_like_a_btreemap() {
        let mut mine = TaskMap::new();
        let mut model: BTreeMap<TaskId, Task> = BTreeMap::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = TaskId(x % 2_000);
            if step % 3 == 0 {
                assert_eq!(mine.remove(&id), model.remove(&id));
            } else {
                assert_eq!(mine.insert(id, task(id.0)), model.insert(id, task(id.0)));
            }
            assert_eq!(mine.len(), model.len());
        }
        assert!(mine.iter().eq(model.iter()));
        assert!(mine.keys().eq(model.keys()));
        assert!(mine.values().rev().eq(model.values().rev()));
        for (lo, hi) in [(0, 10), (255, 257), (300, 1_999), (1_500, 5_000)] {
            assert!(mine.range(TaskId(lo)..TaskId(hi)).eq(model.range(TaskId(lo)..TaskId(hi))));
            assert!(mine.range(TaskId(lo)..=TaskId(hi)).eq(model.range(TaskId(lo)..=TaskId(hi))));
            assert!(mine.range(TaskId(lo)..).eq(model.range(TaskId(lo)..)));
        }
    }

    #[test]
    fn empty_chunks_are_freed() {
        let mut m = TaskMap::new();
        for i in 0..1_000 {
            m.insert(TaskId(i), task(i));
        }
        for i in 0..1_000 {
            m.remove(&TaskId(i));
        }
        assert!(m.is_empty());
        assert!(m.chunks.is_empty());
    }
}
