//! Fuzzing the stored-format decoders (issue 15, items 4 and 6): mutated
//! valid bytes and random bytes give an error, never a panic, and never an
//! allocation sized by a length field beyond the input.
//!
//! Deterministic (fixed seeds, a tiny PRNG of our own). CI-sized by default;
//! `SKEIN_FUZZ_CASES=<n>` runs `n` cases of the in-memory decoders and
//! `SKEIN_FUZZ_FILE_CASES=<m>` `m` of the snapshot-file targets (a RocksDB
//! open each) instead (`scripts/fuzz.sh` sets both). The valid bytes are the compatibility
//! fixtures (`tests/fixtures/*/`, see `compat.rs`).
//!
//! # Which decoders bound their allocations
//!
//! - Snapshot files (`store/snapshot.rs`, `SnapReader`): every section and
//!   record length is checked against the file's size before a buffer is
//!   sized (`bytes_into`), and nothing is bincode-decoded before the header
//!   checksum matched.
//! - Every bincode value the store reads (`store::decode`: log entries, meta
//!   values, snapshot metas and states, history and audit records) is
//!   decoded with bincode's limit at `store::decode_limit(len)`, the smallest
//!   limit (4 KiB, 64 KiB, ..., steps of 16) at or above 16 times the input's length: bincode 2.0.1
//!   claims at most 16 bytes of its limit per byte it reads, so a legal value
//!   always fits, and a length field (an owned `String` is `vec![0u8; len]`
//!   before its bytes are read) can claim no more than under 256 times the
//!   input. This was the finding of issue 15: the store's configuration had
//!   no limit, and a snapshot with valid checksums (an FNV-1a, which whoever
//!   writes the file computes) could make `open` allocate 2^40 bytes and
//!   abort (`codec_refuses_a_checksummed_snapshot_with_a_huge_string_length`).
//!
//! Targets:
//! - `fuzz_state_and_value_decoders`: `StateV3` to `StateV6` on the
//!   state sections of the v3 to v6 fixture snapshots, `SnapshotMeta` on
//!   their meta sections, log `Entry` (and `Stamped`), the meta values
//!   (`Vote`, `Option<LogId>`, `LogId`), history `v1::Event` and
//!   `v3::Audit` records: mutated and random, through `store::decode`.
//! - `fuzz_snapshot_files_through_open`: mutated copies of the fixture
//!   snapshots as `snapshots/current.snap` of a fresh data dir, then
//!   `store::open` (checksums left as they are: the damage a disk does).
//! - `fuzz_checksummed_snapshots_through_open`: the same, but with the
//!   header checksum recomputed after mutating the meta or state section,
//!   so the decoders behind the checksum run on the damage, including
//!   length fields that claim more than the input holds.
//! - `fuzz_backups_through_restore`: mutated backups into `store::restore`.

#![cfg(feature = "storage")]

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use skein_raft::config::{Entry, LogId, SnapshotMeta};
use skein_raft::format::{v1, v3, StateV3, StateV4, StateV5, StateV6};
use skein_raft::fsm::Stamped;
use skein_raft::store::{self, Fnv64};

// ---------------------------------------------------------------- cases and randomness

/// Cases per target: `SKEIN_FUZZ_CASES`, or `ci` by default.
fn cases(ci: usize) -> usize {
    std::env::var("SKEIN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(ci)
}

/// Cases of the snapshot-file targets (a RocksDB open each):
/// `SKEIN_FUZZ_FILE_CASES`, or `ci` by default.
fn file_cases(ci: usize) -> usize {
    std::env::var("SKEIN_FUZZ_FILE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(ci)
}

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A bincode varint (standard config) of `v`.
fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xFFFF => [&[251u8][..], &(v as u16).to_le_bytes()].concat(),
        0x1_0000..=0xFFFF_FFFF => [&[252u8][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &v.to_le_bytes()].concat(),
    }
}

/// One to three mutations: bit flips, byte sets, truncation, deletions,
/// random insertions, splices of other valid bytes, varint length edits.
fn mutate(rng: &mut Rng, valid: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
        match rng.below(8) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            1 if !b.is_empty() => b[at] = rng.next() as u8,
            2 => b.truncate(at),
            3 if !b.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            4 => {
                let n = 1 + rng.below(8);
                let junk = rng.bytes(n);
                b.splice(at..at, junk);
            }
            5 => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = (from + 1 + rng.below(32)).min(other.len());
                    b.splice(at..at, other[from..to].iter().copied());
                }
            }
            _ => {
                let v = match rng.below(5) {
                    0 => u64::MAX,
                    1 => u64::from(u32::MAX),
                    2 => 1 << 40,
                    3 => b.len() as u64 + 1,
                    _ => rng.below(1 << 16) as u64,
                };
                let end = (at + 1 + rng.below(9)).min(b.len());
                b.splice(at..end, varint(v));
            }
        }
    }
    b
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The process's peak virtual memory in bytes (Linux).
fn vm_peak() -> Option<u64> {
    let mut s = String::new();
    std::fs::File::open("/proc/self/status").ok()?.read_to_string(&mut s).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmPeak:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

// ---------------------------------------------------------------- the store's decoder

/// Decodes the whole of `bytes` as the store does (`store::decode`, bounded
/// by the input's length).
fn decode_limited<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    store::decode::<T>(bytes).map_err(|e| e.to_string())
}

/// What the store says of a value whose length field claims more than the
/// value holds.
const CLAIMS_TOO_MUCH: &str = "claims more than it holds";

/// Whether the store refused `bytes` for claiming more than they hold.
fn claims_beyond_input<T: DeserializeOwned>(bytes: &[u8]) -> bool {
    matches!(decode_limited::<T>(bytes), Err(e) if e.contains(CLAIMS_TOO_MUCH))
}

/// Decodes `bytes` as `T` as the store does; a panic fails the test, with
/// the input. Returns whether it decoded.
fn decodes<T: DeserializeOwned>(bytes: &[u8], what: &str) -> bool {
    match catch_unwind(AssertUnwindSafe(|| decode_limited::<T>(bytes).is_ok())) {
        Ok(ok) => ok,
        Err(p) => panic!("decoding {what} panicked ({}) on input {bytes:02x?}", panic_message(&*p)),
    }
}

// ---------------------------------------------------------------- fixtures

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap_or_else(|e| panic!("reading fixture {rel}: {e}"))
}

/// Every `*.bin` under `tests/fixtures/<version>/<dir>/`.
fn bins(dir: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for version in ["0.1.0", "0.2.0", "0.3.0", "0.4.0"] {
        let Ok(entries) = std::fs::read_dir(fixtures().join(version).join(dir)) else { continue };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("listing fixtures").path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "bin") && !p.ends_with("audit.bin") {
                out.push(std::fs::read(&p).expect("reading a fixture"));
            }
        }
    }
    out
}

/// The fixture snapshots: (file version, bytes).
fn snapshots() -> Vec<(u32, Vec<u8>)> {
    vec![
        (3, read("0.1.0/snapshot-v3.snap")),
        (4, read("0.2.0/snapshot-v4.snap")),
        (5, read("0.3.0/snapshot-v5.snap")),
        (6, read("0.4.0/snapshot-v6.snap")),
    ]
}

/// A snapshot file's sections: the meta, the state, and everything after the
/// header checksum (the cold records, the count, the file checksum).
struct Sections {
    version: u32,
    meta: Vec<u8>,
    state: Vec<u8>,
    records: Vec<u8>,
}

impl Sections {
    fn parse(file: &[u8]) -> Sections {
        let u64_at = |at: usize| u64::from_be_bytes(file[at..at + 8].try_into().expect("8 bytes")) as usize;
        assert_eq!(&file[..8], b"SKEINSNP");
        let version = u32::from_be_bytes(file[8..12].try_into().expect("4 bytes"));
        let meta_len = u64_at(12);
        let meta = file[20..20 + meta_len].to_vec();
        let at = 20 + meta_len;
        let state_len = u64_at(at);
        let state = file[at + 8..at + 8 + state_len].to_vec();
        let after = at + 8 + state_len + 8;
        // Without the trailing file checksum, recomputed by `build`.
        let records = file[after..file.len() - 8].to_vec();
        Sections { version, meta, state, records }
    }

    /// The file, with both checksums computed afresh.
    fn build(&self) -> Vec<u8> {
        let mut f = b"SKEINSNP".to_vec();
        f.extend(self.version.to_be_bytes());
        f.extend((self.meta.len() as u64).to_be_bytes());
        f.extend(&self.meta);
        f.extend((self.state.len() as u64).to_be_bytes());
        f.extend(&self.state);
        f.extend(Fnv64::hash(&f).to_be_bytes());
        f.extend(&self.records);
        f.extend(Fnv64::hash(&f).to_be_bytes());
        f
    }
}

/// Decodes a state section as the store would for `version`, with the limit.
fn decode_state_limited(version: u32, bytes: &[u8]) -> Result<(), String> {
    match version {
        3 => decode_limited::<StateV3>(bytes).map(drop),
        4 => decode_limited::<StateV4>(bytes).map(drop),
        5 => decode_limited::<StateV5>(bytes).map(drop),
        _ => decode_limited::<StateV6>(bytes).map(drop),
    }
}

/// A fresh data dir with `file` as its current snapshot, opened.
fn open_with(file: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("snapshots")).expect("mkdir");
    std::fs::write(dir.path().join("snapshots/current.snap"), file).expect("write");
    store::open(dir.path()).map(drop).map_err(|e| e.to_string())
}

fn open_no_panic(file: &[u8], what: &str) -> bool {
    match catch_unwind(AssertUnwindSafe(|| open_with(file).is_ok())) {
        Ok(ok) => ok,
        Err(p) => panic!("store::open of {what} panicked ({}); file {file:02x?}", panic_message(&*p)),
    }
}

// ---------------------------------------------------------------- the fuzz targets

#[test]
fn fuzz_state_and_value_decoders() {
    let snaps: Vec<Sections> = snapshots().iter().map(|(_, f)| Sections::parse(f)).collect();
    let entries = bins("log");
    let events = bins("history");
    let audit = [read("0.3.0/history/audit.bin")];
    let metas = [read("0.1.0/meta/vote.bin"), read("0.1.0/meta/committed.bin"), read("0.1.0/meta/last_purged.bin")];

    // The fixtures decode (with the limit at their size), and encode back to
    // the same bytes: the limit is a decoding matter only.
    for s in &snaps {
        decode_state_limited(s.version, &s.state).expect("a fixture state decodes");
        store::decode_state(s.version, &s.state).expect("a fixture state decodes to a state machine");
        let meta: SnapshotMeta = decode_limited(&s.meta).expect("a fixture meta decodes");
        assert_eq!(bincode::serde::encode_to_vec(&meta, bincode::config::standard()).expect("encode"), s.meta);
    }
    for e in &entries {
        let entry: Entry = decode_limited(e).expect("a fixture entry decodes");
        assert_eq!(&bincode::serde::encode_to_vec(&entry, bincode::config::standard()).expect("encode"), e);
    }
    for e in &events {
        decode_limited::<v1::Event<'static>>(e).expect("a fixture event decodes");
    }
    decode_limited::<v3::Audit<'static>>(&audit[0]).expect("the audit fixture decodes");

    let mut pool: Vec<Vec<u8>> = snaps.iter().flat_map(|s| [s.meta.clone(), s.state.clone()]).collect();
    pool.extend(entries.iter().cloned());
    pool.extend(events.iter().cloned());
    pool.extend(audit.iter().cloned());
    pool.extend(metas.iter().cloned());

    let before = vm_peak();
    let n = cases(3000);
    let mut rng = Rng(0x5eed_dec0_0001);
    let mut decoded = 0usize;
    let mut total = 0usize;
    for case in 0..n {
        let random = |rng: &mut Rng| {
            let len = rng.below(512);
            rng.bytes(len)
        };
        // States: each fixture's state mutated, decoded as every version.
        for s in &snaps {
            let input = if case % 16 == 0 { random(&mut rng) } else { mutate(&mut rng, &s.state, &pool) };
            decoded += usize::from(decodes::<StateV3>(&input, "StateV3"));
            decoded += usize::from(decodes::<StateV4>(&input, "StateV4"));
            decoded += usize::from(decodes::<StateV5>(&input, "StateV5"));
            decoded += usize::from(decodes::<StateV6>(&input, "StateV6"));
            let input = mutate(&mut rng, &s.meta, &pool);
            decoded += usize::from(decodes::<SnapshotMeta>(&input, "SnapshotMeta"));
            total += 5;
        }
        // Log entries (a few per case), and their payloads alone.
        for _ in 0..4 {
            let e = &entries[rng.below(entries.len())];
            let input = mutate(&mut rng, e, &pool);
            decoded += usize::from(decodes::<Entry>(&input, "Entry"));
            decoded += usize::from(decodes::<Stamped>(&input, "Stamped"));
            total += 2;
        }
        // History events and audit records.
        for _ in 0..2 {
            let e = &events[rng.below(events.len())];
            let input = mutate(&mut rng, e, &pool);
            decoded += usize::from(decodes::<v1::Event<'static>>(&input, "v1::Event"));
            decoded += usize::from(decodes::<v3::Audit<'static>>(&input, "v3::Audit"));
            total += 2;
        }
        let input = mutate(&mut rng, &audit[0], &pool);
        decoded += usize::from(decodes::<v3::Audit<'static>>(&input, "v3::Audit"));
        // The meta CF's values.
        let m = &metas[rng.below(metas.len())];
        let input = mutate(&mut rng, m, &pool);
        decoded += usize::from(decodes::<openraft::Vote<u64>>(&input, "Vote"));
        decoded += usize::from(decodes::<Option<LogId>>(&input, "Option<LogId>"));
        decoded += usize::from(decodes::<LogId>(&input, "LogId"));
        total += 4;
    }
    eprintln!("fuzz_state_and_value_decoders: {total} inputs, {decoded} decoded to a value");
    if let (Some(a), Some(b)) = (before, vm_peak()) {
        assert!(b - a < 256 << 20, "peak virtual memory grew by {} MiB", (b - a) >> 20);
    }
}

/// Damage as a disk does it: the checksums stay as they were, so every
/// mutation of the header must be refused by them; mutations of the cold
/// records are not read on open (they are on install and restore).
#[test]
fn fuzz_snapshot_files_through_open() {
    let snaps = snapshots();
    let pool: Vec<Vec<u8>> = snaps.iter().map(|(_, f)| f.clone()).collect();
    let n = file_cases(30);
    let mut rng = Rng(0x5eed_0be4_0002);
    let (mut opened, mut total) = (0usize, 0usize);
    for _ in 0..n {
        for (_, file) in &snaps {
            let input = mutate(&mut rng, file, &pool);
            opened += usize::from(open_no_panic(&input, "a mutated snapshot"));
            total += 1;
        }
    }
    eprintln!("fuzz_snapshot_files_through_open: {total} files, {opened} opened");
}

/// The meta or state section mutated and both checksums recomputed, so the
/// decoders behind the checksum run on the damage, all of it through
/// `open`, also what claims more than it holds (counted: the store refuses
/// it before allocating the claim).
#[test]
fn fuzz_checksummed_snapshots_through_open() {
    let snaps: Vec<Sections> = snapshots().iter().map(|(_, f)| Sections::parse(f)).collect();
    let pool: Vec<Vec<u8>> = snaps.iter().flat_map(|s| [s.meta.clone(), s.state.clone()]).collect();
    let n = file_cases(30);
    let mut rng = Rng(0x5eed_c4ec_0003);
    let (mut opened, mut claimed, mut total) = (0usize, 0usize, 0usize);
    for _ in 0..n {
        for s in &snaps {
            let mut m = Sections {
                version: s.version,
                meta: s.meta.clone(),
                state: s.state.clone(),
                records: s.records.clone(),
            };
            if rng.below(2) == 0 {
                m.meta = mutate(&mut rng, &s.meta, &pool);
            } else {
                m.state = mutate(&mut rng, &s.state, &pool);
            }
            total += 1;
            if claims_beyond_input::<SnapshotMeta>(&m.meta)
                || matches!(decode_state_limited(m.version, &m.state), Err(e) if e.contains(CLAIMS_TOO_MUCH))
            {
                claimed += 1;
            }
            opened += usize::from(open_no_panic(&m.build(), "a checksummed mutated snapshot"));
        }
    }
    eprintln!(
        "fuzz_checksummed_snapshots_through_open: {total} files, {opened} opened, {claimed} claimed more than \
         they hold (refused by open)"
    );
}

/// Backups: `store::restore` checks the whole file first.
#[test]
fn fuzz_backups_through_restore() {
    let snaps = snapshots();
    let pool: Vec<Vec<u8>> = snaps.iter().map(|(_, f)| f.clone()).collect();
    // The fixtures themselves restore.
    for (_, file) in &snaps {
        restore_no_panic(file, "a fixture").expect("a fixture backup restores");
    }
    let n = file_cases(30);
    let mut rng = Rng(0x5eed_bac0_0004);
    let (mut restored, mut total) = (0usize, 0usize);
    for _ in 0..n {
        for (_, file) in &snaps {
            let input = mutate(&mut rng, file, &pool);
            restored += usize::from(restore_no_panic(&input, "a mutated backup").is_ok());
            total += 1;
        }
    }
    eprintln!("fuzz_backups_through_restore: {total} backups, {restored} restored");
}

fn restore_no_panic(file: &[u8], what: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("backup.snap");
    std::fs::write(&backup, file).expect("write");
    let data = dir.path().join("data");
    match catch_unwind(AssertUnwindSafe(|| store::restore(&data, &backup).map(drop).map_err(|e| e.to_string()))) {
        Ok(r) => r,
        Err(p) => panic!("store::restore of {what} panicked ({}); file {file:02x?}", panic_message(&*p)),
    }
}

// ---------------------------------------------------------------- the fixed finding

/// The v3 fixture with its meta's `snapshot_id` length set to `claim`, and
/// the header checksum recomputed: a crafted (or buggy-writer) file the
/// checksum does not catch.
fn huge_snapshot_id(claim: u64) -> Vec<u8> {
    let mut s = Sections::parse(&read("0.1.0/snapshot-v3.snap"));
    let meta: SnapshotMeta = decode_limited(&s.meta).expect("the fixture meta decodes");
    let id = meta.snapshot_id.as_bytes();
    // `snapshot_id` is the meta's last field: its length, then its bytes.
    let id_at = s.meta.len() - id.len();
    let len_len = varint(id.len() as u64).len();
    assert_eq!(&s.meta[id_at - len_len..id_at], varint(id.len() as u64).as_slice());
    let mut meta_bytes = s.meta[..id_at - len_len].to_vec();
    meta_bytes.extend(varint(claim));
    meta_bytes.extend(id);
    s.meta = meta_bytes;
    s.build()
}

/// The fixed finding of issue 15: `store::open` of a snapshot with valid
/// checksums whose meta claims a string of `claim` bytes refuses it with a
/// decode error, without allocating the claim. Each claim runs in a child
/// process (a failed allocation aborts the process, which `catch_unwind`
/// cannot contain; with the store's former unlimited configuration, 2^40
/// did).
#[test]
fn codec_refuses_a_checksummed_snapshot_with_a_huge_string_length() {
    if let Ok(claim) = std::env::var("SKEIN_FUZZ_CHILD_CLAIM") {
        let claim: u64 = claim.parse().expect("a claim");
        // RocksDB's own memory first (its threads and arenas move VmPeak by
        // a few hundred MiB on the first open), so that what is measured
        // below is the decoding of the crafted meta.
        open_with(&read("0.1.0/snapshot-v3.snap")).expect("the fixture opens");
        let before = vm_peak().unwrap_or(0);
        let outcome = catch_unwind(|| open_with(&huge_snapshot_id(claim)));
        let grew = vm_peak().unwrap_or(0).saturating_sub(before);
        match &outcome {
            Ok(r) => println!("CHILD-RESULT open -> {r:?}; VmPeak grew {} MiB", grew >> 20),
            Err(p) => println!("CHILD-RESULT open panicked: {}", panic_message(&**p)),
        }
        // A claim the limit allows fails as a short read (having allocated
        // at most the limit); one at or over it, before allocating.
        let meta_len = Sections::parse(&read("0.1.0/snapshot-v3.snap")).meta.len();
        let over = claim >= store::decode_limit(meta_len) as u64;
        match outcome {
            Ok(Err(e)) => assert!(
                e.contains("meta") && (!over || e.contains(CLAIMS_TOO_MUCH)),
                "open failed otherwise for a claim of {claim}: {e}"
            ),
            Ok(Ok(())) => panic!("open accepted a meta that claims {claim} bytes"),
            Err(_) => panic!("open panicked"),
        }
        // The claim is refused at the limit (4 KiB here, the error above
        // says so); VmPeak moves in glibc arenas of 64 MiB, so it can only
        // show that nothing of the claims of GiBs below was allocated.
        assert!(
            grew < 512 << 20,
            "open allocated {} MiB for a {}-byte file",
            grew >> 20,
            huge_snapshot_id(claim).len()
        );
        return;
    }
    let mut failures = Vec::new();
    // Just past what the meta holds, the limit, 4 GiB, 1 TiB (what aborted)
    // and u64::MAX.
    let meta_len = Sections::parse(&read("0.1.0/snapshot-v3.snap")).meta.len() as u64;
    let limit = store::decode_limit(meta_len as usize) as u64;
    for claim in [meta_len + 1, limit, limit + 1, 1u64 << 32, 1 << 40, u64::MAX] {
        let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .args(["--exact", "codec_refuses_a_checksummed_snapshot_with_a_huge_string_length", "--nocapture"])
            .env("SKEIN_FUZZ_CHILD_CLAIM", claim.to_string())
            .output()
            .expect("running the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| l.contains("CHILD-RESULT") || l.contains("memory allocation") || l.contains("panicked"))
            .collect();
        eprintln!("claim {claim}: exit {:?}; {said:?}", out.status);
        if !out.status.success() || !stdout.contains("CHILD-RESULT open -> Err") {
            failures.push(format!("claim {claim}: {:?} {said:?}", out.status));
        }
    }
    assert!(failures.is_empty(), "store::open of a checksummed snapshot with a huge string length: {failures:#?}");
}
