//! Encodings shared by the stores: keys, bincode values, and the FNV-1a hash
//! used for snapshot checksums and replica digests.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;
use crate::format::{self, v1};
use crate::fsm::{AuditRecord, Event, StateMachine, TaskId};

/// bincode 2 in its standard configuration (varint integers, little
/// endian) for every value this module stores. Encoding uses it as it is;
/// decoding adds a limit ([`decode`]), which changes nothing of the bytes.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

// ---------------------------------------------------------------- bounded decoding
//
// Without a limit, bincode 2 allocates whatever a length field claims before
// it reads the bytes: an owned `String` (or `Cow<str>`, `Vec<u8>`) of length
// `n` is `vec![0u8; n]`, then filled. Checksums do not stop a crafted value
// (a snapshot's FNV-1a is computed by whoever wrote it, a peer's included),
// so a few bytes claiming 2^40 aborted the process. Every decode here runs
// with bincode's limit, sized by the input: what a value can legally claim
// is bounded by its own length, so no per-type maximum (which a large but
// legal snapshot, millions of tasks, could exceed) is needed.
//
// bincode 2.0.1's limit (`claim_bytes_read`, in `de/decoder.rs` and
// `de/impls.rs`) counts claims, not bytes read, and in serde mode never gives
// any back: each integer claims its in-memory size however few varint bytes
// it took (a u64 claims 8 for 1 byte, a u128 16), a string or byte buffer
// claims its length (then reads that many bytes), an `Option` or `bool` 1,
// an enum variant 4, a sequence's or map's length 8 (serde then caps its
// preallocation at 1 MiB and grows by elements read). Every claim is made for
// at least one byte read, and at most 16 for each, so a legal value of `len`
// bytes claims at most `16 * len`: with a limit at or above that it always
// decodes, and a length field can make it allocate no more than the limit.

/// The most bincode 2.0.1 counts against its limit for each byte it reads
/// (a u128 in a one-byte varint; a u64 or a length is 8).
const CLAIM_PER_INPUT_BYTE: usize = 16;

/// The smallest limit: a meta value or a history record of a few bytes may
/// claim this much (a few KiB, nothing to a node).
const MIN_DECODE_LIMIT: usize = 1 << MIN_LIMIT_LOG2;
const MIN_LIMIT_LOG2: u32 = 12;

/// The largest limit, 1 TiB (2^40).
const MAX_LIMIT_LOG2: u32 = 40;

/// The largest value decoded, 64 GiB (the largest limit over
/// [`CLAIM_PER_INPUT_BYTE`]): far beyond any state a node holds in memory
/// (a snapshot's whole state section is read into memory, then decoded).
pub const MAX_DECODE_INPUT: usize = (1 << MAX_LIMIT_LOG2) / CLAIM_PER_INPUT_BYTE;

/// The limit [`decode`] gives `len` bytes: the smallest power of 16 times
/// [`MIN_DECODE_LIMIT`] at or above `CLAIM_PER_INPUT_BYTE * len`; so under
/// `16 * 16 = 256` times the input, never what a length field says. Steps
/// of 16 (not 2) keep the decoder's copies to 8 per type (`with_limit`
/// takes a constant), which the crate's build time pays for.
pub fn decode_limit(len: usize) -> usize {
    let need = len.saturating_mul(CLAIM_PER_INPUT_BYTE).max(MIN_DECODE_LIMIT);
    let mut limit = MIN_DECODE_LIMIT;
    while limit < need && limit < (1 << MAX_LIMIT_LOG2) {
        limit <<= 4;
    }
    limit
}

/// Decodes a whole value, with bincode's limit at [`decode_limit`] of its
/// length; trailing bytes mean the value is not what we wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    if bytes.len() > MAX_DECODE_INPUT {
        return Err(StoreError::Corrupt(format!(
            "a value of {} bytes, more than the {MAX_DECODE_INPUT} this build decodes",
            bytes.len()
        )));
    }
    let limit = decode_limit(bytes.len());
    // `with_limit` takes a constant: one instance per power of two.
    macro_rules! with_limit {
        ($($log2:literal)*) => {
            match limit.trailing_zeros() {
                $($log2 => decode_with::<T, { 1 << $log2 }>(bytes),)*
                _ => unreachable!("decode_limit gives 2^12, 2^16, ... or 2^40"),
            }
        };
    }
    const _: () = assert!(MIN_LIMIT_LOG2 == 12 && MAX_LIMIT_LOG2 == 40, "the arms below list 12, 16, ..., 40");
    let (value, used) = with_limit!(12 16 20 24 28 32 36 40).map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => StoreError::Corrupt(format!(
            "a length in a value of {} bytes claims more than it holds (over the {limit}-byte limit of its size)",
            bytes.len()
        )),
        e => StoreError::Decode(e),
    })?;
    if used != bytes.len() {
        return Err(StoreError::Corrupt(format!("{} trailing bytes after a value", bytes.len() - used)));
    }
    Ok(value)
}

fn decode_with<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
}

/// The state machine's core as a snapshot stores it
/// ([`format::StoredState`]), with its snapshot file version.
pub(crate) fn encode_state(sm: &StateMachine) -> Result<(u32, Vec<u8>), StoreError> {
    let state = format::StoredState(sm);
    Ok((state.snapshot_version(), encode(&state)?))
}

/// The inverse of [`encode_state`]: any snapshot version this build reads.
pub fn decode_state(version: u32, bytes: &[u8]) -> Result<StateMachine, StoreError> {
    match version {
        3 => Ok(decode::<format::StateV3>(bytes)?.0),
        4 => Ok(decode::<format::StateV4>(bytes)?.0),
        5 => Ok(decode::<format::StateV5>(bytes)?.0),
        6 => Ok(decode::<format::StateV6>(bytes)?.0),
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

    /// A bincode varint (standard config) of `v`.
    fn varint(v: u64) -> Vec<u8> {
        encode(&v).expect("encode")
    }

    #[test]
    fn decode_limits_follow_the_input() {
        assert_eq!(decode_limit(0), 4096);
        assert_eq!(decode_limit(256), 4096);
        assert_eq!(decode_limit(257), 1 << 16);
        assert_eq!(decode_limit(3 << 20), 1 << 28);
        assert_eq!(decode_limit(MAX_DECODE_INPUT), 1 << 40);
        for len in [1usize, 100, 4097, 1 << 20, (1 << 30) + 1] {
            let limit = decode_limit(len);
            assert!(limit >= CLAIM_PER_INPUT_BYTE * len && limit < 16 * CLAIM_PER_INPUT_BYTE * len.max(256));
            assert_eq!(limit.trailing_zeros() % 4, 0, "2^12, 2^16, ...");
        }
    }

    #[test]
    fn the_worst_claims_per_byte_still_decode() {
        // Each u128 of 1 takes one varint byte and claims 16; each u64 and
        // each length claims 8; empty strings claim 8 for one byte.
        let u128s = vec![1u128; 10_000];
        assert_eq!(decode::<Vec<u128>>(&encode(&u128s).expect("encode")).expect("decode"), u128s);
        let lengths = vec![String::new(); 10_000];
        assert_eq!(decode::<Vec<String>>(&encode(&lengths).expect("encode")).expect("decode"), lengths);
        let mixed = (vec![Some(0u64); 5_000], vec![true; 100], "x".repeat(1 << 20), vec![vec![0u32; 3]; 1_000]);
        assert_eq!(
            decode::<(Vec<Option<u64>>, Vec<bool>, String, Vec<Vec<u32>>)>(&encode(&mixed).expect("e")).expect("d"),
            mixed
        );
    }

    #[test]
    fn lengths_beyond_the_input_are_refused_before_allocating() {
        for claim in [5u64, 4096, 1 << 20, 1 << 32, 1 << 40, u64::MAX] {
            let mut bytes = varint(claim);
            bytes.extend(b"abcd");
            let e = decode::<String>(&bytes).expect_err("a string longer than its input");
            if claim > 4096 {
                assert!(e.to_string().contains("claims more than it holds"), "{claim}: {e}");
            }
            assert!(decode::<Vec<u8>>(&bytes).is_err());
            assert!(decode::<(u64, String)>(&[[7u8].as_slice(), &bytes].concat()).is_err());
        }
    }

    #[test]
    fn the_limit_changes_no_encoding() {
        let value = (vec![1u128, 2, 3], "payload".to_string(), Some(-5i64), vec![(9u64, 0.5f64)]);
        let bytes = encode(&value).expect("encode");
        let limited = bincode::serde::encode_to_vec(&value, config().with_limit::<4096>()).expect("encode");
        assert_eq!(bytes, limited);
        let back: (Vec<u128>, String, Option<i64>, Vec<(u64, f64)>) = decode(&bytes).expect("decode");
        assert_eq!(encode(&back).expect("encode"), bytes);
    }

    #[test]
    fn keys_sort_like_numbers() {
        assert!(index_key(255) < index_key(256));
        assert!(event_key(TaskId(1), u32::MAX) < event_key(TaskId(2), 0));
        assert!(event_key(TaskId(u64::MAX), u32::MAX).as_slice() < KEY_END.as_slice());
        assert_eq!(key_index(&index_key(42)).ok(), Some(42));
    }
}
