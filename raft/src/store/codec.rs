//! Encodings shared by the stores: keys, bincode values, and the FNV-1a hash
//! used for snapshot checksums and replica digests.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;
use crate::format::{self, v1};
use crate::fsm::{AuditRecord, Event, StateMachine, TaskId};

/// bincode 2 in its standard configuration (varint integers, no limit) for
/// every value this module stores.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a whole value; trailing bytes mean the value is not what we wrote.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(StoreError::Corrupt(format!("{} trailing bytes after a value", bytes.len() - used)));
    }
    Ok(value)
}

/// The state machine's core as a snapshot stores it
/// ([`format::StoredState`]), with its snapshot file version.
pub(crate) fn encode_state(sm: &StateMachine) -> Result<(u32, Vec<u8>), StoreError> {
    let state = format::StoredState(sm);
    Ok((state.snapshot_version(), encode(&state)?))
}

/// The inverse of [`encode_state`]: any snapshot version this build reads.
pub(crate) fn decode_state(version: u32, bytes: &[u8]) -> Result<StateMachine, StoreError> {
    match version {
        3 => Ok(decode::<format::StateV3>(bytes)?.0),
        4 => Ok(decode::<format::StateV4>(bytes)?.0),
        5 => Ok(decode::<format::StateV5>(bytes)?.0),
        v => Err(StoreError::Corrupt(unreadable_snapshot_version(v))),
    }
}

/// Why a snapshot file of `version` cannot be read.
pub(crate) fn unreadable_snapshot_version(version: u32) -> String {
    format!(
        "snapshot file version {version}; this build ({}) reads versions {} to {}{}",
        format::RELEASE,
        format::SNAPSHOT_VERSIONS.start(),
        format::SNAPSHOT_VERSIONS.end(),
        if version > *format::SNAPSHOT_VERSIONS.end() { ": it was written by a newer release" } else { "" }
    )
}

/// A history event, stored in format 1's shape.
pub(crate) fn encode_event(event: &Event) -> Result<Vec<u8>, StoreError> {
    encode(&v1::Event::from(event))
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    Ok(decode::<v1::Event<'static>>(bytes)?.into())
}

/// An audit record, stored in format 3's shape.
pub(crate) fn encode_audit(record: &AuditRecord) -> Result<Vec<u8>, StoreError> {
    encode(&format::v3::Audit::from(record))
}

pub(crate) fn decode_audit(bytes: &[u8]) -> Result<AuditRecord, StoreError> {
    Ok(decode::<format::v3::Audit<'static>>(bytes)?.into())
}

/// Audit records share the history CF (a new CF would make the data
/// directory unreadable to the release an upgrade may roll back to): under
/// this prefix, which no task id reaches, with 16-byte keys where events
/// have 12.
pub(crate) const AUDIT_PREFIX: [u8; 8] = [0xFF; 8];

/// An audit key: the prefix, then the record's sequence number, big-endian.
pub(crate) fn audit_key(seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&AUDIT_PREFIX);
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// A log index as a key: big-endian, so RocksDB's byte order is log order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The inverse of [`index_key`].
pub(crate) fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| StoreError::Corrupt(format!("log key of {} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A key greater than every 8-, 12- or 16-byte key: the exclusive end of a
/// range that covers a whole column family (RocksDB's `delete_range`
/// excludes its end).
pub(crate) const KEY_END: [u8; 17] = [0xFF; 17];

pub(crate) fn task_key(task: TaskId) -> [u8; 8] {
    task.0.to_be_bytes()
}

/// A history key: the task, then the event's sequence number, both
/// big-endian, so a task's events are contiguous and in order.
pub(crate) fn event_key(task: TaskId, seq: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&task.0.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// 64-bit FNV-1a: tiny, dependency-free, and plenty to detect a damaged file
/// or tell two replicas' states apart (it is not a defence against tampering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Fnv64(Self::OFFSET)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash of one byte string.
    pub fn hash(bytes: &[u8]) -> u64 {
        let mut h = Self::new();
        h.update(bytes);
        h.finish()
    }
}

/// A writer that hashes what goes through it.
pub(crate) struct HashWriter<W> {
    pub(crate) inner: W,
    pub(crate) hash: Fnv64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter { inner, hash: Fnv64::new() }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what comes through it.
pub(crate) struct HashReader<R> {
    pub(crate) inner: R,
    pub(crate) hash: Fnv64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader { inner, hash: Fnv64::new() }
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(Fnv64::hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv64::hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv64::hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_sort_like_numbers() {
        assert!(index_key(255) < index_key(256));
        assert!(event_key(TaskId(1), u32::MAX) < event_key(TaskId(2), 0));
        assert!(event_key(TaskId(u64::MAX), u32::MAX).as_slice() < KEY_END.as_slice());
        assert_eq!(key_index(&index_key(42)).ok(), Some(42));
    }
}
